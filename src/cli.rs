//! Flags: the Go keep-rsync's flags, same names, meanings and syntaxes
//! (`-flag value`, `-flag=value`, `--flag value`, `--flag=value`), plus new
//! ones in rclone's convention. [`parse`] turns argv into a validated
//! [`Config`]; no other module looks at argv.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};

use crate::error::{Error, Result};
pub use crate::protocol::units::parse_go_duration;

/// `--max-per-service` by default: the ceiling of each service's adaptive
/// limit. At 100 ms of round trip a service needs several hundred requests
/// in flight to be busy (docs/benchmarks.md, scenarios 9 and 14); the
/// adaptive limit stops short of it when the service queues or answers 503.
pub const DEFAULT_MAX_PER_SERVICE: usize = 512;

/// keep-block-check's default `--transfers` (probes in flight). keep-rsync
/// has none: without `--transfers` its blocks in flight are set by the byte
/// budget and the services' limits (`copy::admission`).
pub const DEFAULT_TRANSFERS: usize = 128;

/// Default `--buffer-memory`: four 64 MiB blocks (docs/benchmarks.md, "Memory").
pub const DEFAULT_BUFFER_MEMORY: u64 = 256 << 20;

/// Default `--index-budget`, in lines: about 100 MiB of index entries.
pub const DEFAULT_INDEX_BUDGET: u64 = 4_000_000;

const EXIT_CODES: &str = "\
Exit codes:
  0    complete: every planned block is at the destination with the wanted replicas
  1    finished, but some blocks failed or a service could not be read (listed at
       the end; rerun to retry them); in a dry run: the plan misses a service;
       with --blocks-from: listed blocks are on no source or destination (lost)
  2    usage or configuration error (flags, settings file, services list, block list)
  3    a service, the API server or an index could not be read: nothing was planned
  8    stopped at --max-duration or --max-transfer with blocks left: the window
       ended; rerun to continue (the destination index is the checkpoint)
  130  interrupted (SIGINT/SIGTERM); rerun to finish: the destination index is the checkpoint

Memory: block data in flight is bounded by --buffer-memory (256M): a block reserves
its size before it is read and frees it after its last replica is written, so
64 MiB blocks run four at a time and small blocks as many as the services take. Indexes
are processed in hash sub-prefix passes of at most --index-budget lines (about 40
bytes each; a planned block counts as 2 lines), freed before the pass's copies
start. Peak RSS <= 32 MiB + max(40 B x index budget, buffer memory + 20 B x index
budget): about 370 MiB at the defaults, under 300 MiB unless a pass plans millions
of blocks. --max-memory SIZE sets both budgets to fit SIZE.

Settings files hold KEY=VALUE lines: ARVADOS_API_HOST, ARVADOS_API_TOKEN (the
cluster's system root token), ARVADOS_API_HOST_INSECURE, ARVADOS_BLOB_SIGNING_KEY.";

/// How log and progress output is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Bars on a terminal, Go-style timestamped lines otherwise.
    Text,
    /// One JSON object per event on stderr.
    Json,
}

/// keep-rsync: copy Keep blocks from one Arvados cluster to another.
///
/// Fetches the block index of every source and destination keepstore (optionally
/// only blocks whose hash starts with -prefix), and copies each block the
/// destination lacks, or holds with too few replicas, once: read from a source
/// service holding it, verified (MD5 and length), written to the destination in
/// rendezvous order. Rerunning copies only what is still missing.
///
/// A drop-in for the Go keep-rsync: flags work Go-style (-src FILE, -prefix=0a,
/// -version) as well as GNU-style (--src FILE, --prefix=0a).
//
// Every value is parsed and checked here, by clap's value parsers (each
// error names its flag, in one paragraph); `parse` adds the checks that
// involve two flags.
#[derive(Parser, Debug, Clone)]
#[command(name = "keep-rsync", version = crate::VERSION, args_override_self = true, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Config {
    /// Source settings: a file path, or NAME for $HOME/.config/arvados/NAME.conf.
    /// Not needed when the source is volumes.
    #[arg(
        long,
        value_name = "FILE|NAME",
        default_value = "",
        hide_default_value = true,
        allow_hyphen_values = true
    )]
    pub src: String,

    /// Destination settings: a file path, or NAME for $HOME/.config/arvados/NAME.conf.
    /// Not needed when the destination is volumes.
    #[arg(
        long,
        value_name = "FILE|NAME",
        default_value = "",
        hide_default_value = true,
        allow_hyphen_values = true
    )]
    pub dst: String,

    /// Source cluster's config.yml: token, signing key and TTL, keepstores (or keepproxy, --src-via) and defaults, instead of -src, a services list and TTL flags. Explicit flags win.
    #[arg(long = "src-cluster-config", value_name = "FILE")]
    pub src_cluster_config: Option<PathBuf>,

    /// Destination cluster's config.yml: as -src-cluster-config; also the default -replications (Collections.DefaultReplication).
    #[arg(long = "dst-cluster-config", value_name = "FILE")]
    pub dst_cluster_config: Option<PathBuf>,

    /// With -src-cluster-config: reach the source's keepstores (InternalURLs, the default) or its keepproxy (ExternalURL).
    #[arg(long = "src-via", value_name = "SERVICE", value_enum, default_value_t)]
    pub src_via: crate::cluster_config::Via,

    /// With -dst-cluster-config: reach the destination's keepstores (the default) or its keepproxy.
    #[arg(long = "dst-via", value_name = "SERVICE", value_enum, default_value_t)]
    pub dst_via: crate::cluster_config::Via,

    /// Source keep services list (JSON text, a file, or - for stdin); skips API discovery.
    #[arg(
        long = "src-keep-services-json",
        value_name = "JSON|FILE|-",
        allow_hyphen_values = true
    )]
    pub src_services_json: Option<String>,

    /// Destination keep services list (JSON text, a file, or - for stdin).
    #[arg(
        long = "dst-keep-services-json",
        value_name = "JSON|FILE|-",
        allow_hyphen_values = true
    )]
    pub dst_services_json: Option<String>,

    /// Replicas to write (0 = the destination's defaultCollectionReplication).
    #[arg(
        long,
        default_value = "0",
        allow_negative_numbers = true,
        value_name = "N",
        value_parser = parse_replications
    )]
    pub replications: u32,

    /// Only blocks whose hash starts with these hex digits.
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        value_name = "HEX",
        value_parser = parse_prefix
    )]
    pub prefix: String,

    /// Source blob signature TTL, a Go duration (336h, 1209600s); 0 = from the source's discovery document.
    #[arg(
        long = "src-blob-signature-ttl",
        default_value = "0",
        value_name = "DURATION",
        value_parser = seconds("src-blob-signature-ttl")
    )]
    pub src_ttl: u64,

    /// Destination blob signature TTL (for --verify-existing reads); 0 = from discovery.
    #[arg(
        long = "dst-blob-signature-ttl",
        default_value = "0",
        value_name = "DURATION",
        value_parser = seconds("dst-blob-signature-ttl")
    )]
    pub dst_ttl: u64,

    /// Concurrency and pass size (shared with keep-block-check).
    #[command(flatten)]
    pub conc: Concurrency,

    /// Cap on the block data read from sources, bytes/s shared by all transfers (50M, 1G; K/M/G = KiB/MiB/GiB; 0 or off: none).
    #[arg(long, value_name = "RATE", value_parser = parse_bwlimit, help_heading = "Performance")]
    pub bwlimit: Option<u64>,

    /// Block data held in memory at once, over all transfers (K/M/G; default
    /// 256M). A block reserves its size before its read and frees it after its
    /// last write: this, not --transfers, bounds the copy's memory. A block
    /// bigger than the budget runs alone.
    #[arg(
        long = "buffer-memory",
        value_name = "SIZE",
        value_parser = parse_buffer_memory,
        help_heading = "Performance"
    )]
    pub buffer_memory: Option<u64>,

    /// Memory for the whole run (K/M/G): sets --buffer-memory and
    /// --index-budget so that peak RSS stays under SIZE (3/4 of it for block
    /// data; see docs/scale-out.md). Flags given explicitly win.
    #[arg(
        long = "max-memory",
        value_name = "SIZE",
        value_parser = parse_max_memory,
        help_heading = "Performance"
    )]
    pub max_memory: Option<crate::memory::Budgets>,

    /// Write replicas only once the whole block is read and verified (default:
    /// writes follow the read and get its last bytes only once MD5 and length
    /// are verified).
    #[arg(long = "no-streaming", help_heading = "Performance")]
    pub no_streaming: bool,

    /// Retries and timeouts (shared with keep-block-check).
    #[command(flatten)]
    pub net: Networking,

    /// Plan only: fetch indexes, print counts and bytes (per source service and per first hex digit), write nothing.
    #[arg(short = 'n', long = "dry-run", help_heading = "Copy")]
    pub dry_run: bool,

    /// Skip the write probe: an empty object under keep-rsync-probe/ that each
    /// writable destination S3 volume takes (and has deleted) before anything
    /// is listed, so that a read-only credential stops the run at once (exit 3).
    #[arg(long = "no-write-probe", help_heading = "Copy")]
    pub no_write_probe: bool,

    /// Read back blocks the destination already lists, check their MD5, and rewrite bad or missing copies.
    #[arg(long = "verify-existing", help_heading = "Copy")]
    pub verify_existing: bool,

    /// Only the blocks listed in FILE (- for stdin): one locator or hash per
    /// line, manifest text (every locator in it), or collection records (CSV
    /// with a manifest_text column as psql writes it, or JSON lines: each
    /// block gets the replication and storage classes its collections
    /// want). Listed blocks on no source and no destination service are
    /// reported as lost (exit 1). With --dry-run: a migration check that
    /// writes nothing.
    #[arg(
        long = "blocks-from",
        value_name = "FILE|-",
        allow_hyphen_values = true,
        help_heading = "Copy"
    )]
    pub blocks_from: Option<String>,

    /// Read source blocks straight from a keepstore Directory volume (ROOT/xyz/HASH) instead of source services; repeatable. -src is then not needed.
    #[arg(long = "src-volume-dir", value_name = "PATH", help_heading = "Volumes")]
    pub src_volume_dirs: Vec<PathBuf>,

    /// Write blocks straight into a keepstore Directory volume (ROOT/xyz/HASH, written as keepstore does) instead of destination services; repeatable. -dst is then not needed.
    #[arg(long = "dst-volume-dir", value_name = "PATH", help_heading = "Volumes")]
    pub dst_volume_dirs: Vec<PathBuf>,

    /// Source volumes (Directory or S3) from FILE: an Arvados cluster config's Volumes section, YAML or JSON, or a whole config.yml. -src is then not needed.
    #[arg(long = "src-volumes", value_name = "FILE", help_heading = "Volumes")]
    pub src_volumes: Option<PathBuf>,

    /// Destination volumes (Directory or S3) from FILE, as --src-volumes; filled in keepstore's mount order until -replications is met (default 1, or the Collections.DefaultReplication of a whole cluster config). -dst is then not needed.
    #[arg(long = "dst-volumes", value_name = "FILE", help_heading = "Volumes")]
    pub dst_volumes: Option<PathBuf>,

    /// The cluster of -src-cluster-config or --src-volumes to use when its file defines several.
    #[arg(long = "src-cluster", value_name = "ID", help_heading = "Volumes")]
    pub src_cluster: Option<String>,

    /// The cluster of -dst-cluster-config or --dst-volumes to use when its file defines several.
    #[arg(long = "dst-cluster", value_name = "ID", help_heading = "Volumes")]
    pub dst_cluster: Option<String>,

    /// Storage classes to write (sent as X-Keep-Storage-Classes; each must be confirmed).
    #[arg(long = "storage-classes", value_name = "A,B", value_parser = parse_storage_classes, help_heading = "Copy")]
    pub storage_classes: Option<String>,

    /// Write a JSON report of the run to FILE (schema: docs/report-schema.md).
    #[arg(long, value_name = "FILE", help_heading = "Logging")]
    pub report: Option<PathBuf>,

    /// Log and progress format on stderr.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,

    /// No per-block lines (plain output): only index, plan, errors and the summary.
    #[arg(short, long, help_heading = "Logging")]
    pub quiet: bool,

    /// Diagnostics on stderr: -v for every retry, failover, service marked
    /// down, pass and index timing; -vv adds one line per block request.
    /// RUST_LOG (e.g. keep_rsync::copy=debug), when set, replaces what -v
    /// selects. JSON lines with --log-format json.
    #[arg(short, long, action = clap::ArgAction::Count, help_heading = "Logging")]
    pub verbose: u8,

    /// Start no new block once DURATION (a Go duration: 5h30m, 45m) has
    /// passed since the start; blocks in flight finish, the summary and
    /// --report follow, and the run exits 8. Indexing in progress stops at
    /// once. 0: no limit.
    #[arg(long = "max-duration", value_name = "DURATION", value_parser = parse_max_duration, help_heading = "Cron windows")]
    pub max_duration: Option<Duration>,

    /// Start no new block once the blocks started add up to SIZE bytes (K/M/G
    /// = KiB/MiB/GiB; 0 or off: no limit): about SIZE is read, at most one
    /// block more. Blocks in flight finish; exit 8.
    #[arg(long = "max-transfer", value_name = "SIZE", value_parser = parse_max_transfer, help_heading = "Cron windows")]
    pub max_transfer: Option<u64>,

    /// Write Prometheus metrics to PATH (node_exporter's textfile collector:
    /// e.g. /var/lib/prometheus/node-exporter/keep-rsync.prom), atomically,
    /// at the start, every --metrics-interval and at exit (docs/operations.md).
    #[arg(
        long = "metrics-textfile",
        value_name = "PATH",
        help_heading = "Monitoring"
    )]
    pub metrics_textfile: Option<PathBuf>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics while the run
    /// lasts (port 0: any free port; the address is logged).
    #[arg(long = "metrics-addr", value_name = "HOST:PORT", value_parser = parse_metrics_addr, help_heading = "Monitoring")]
    pub metrics_addr: Option<String>,

    /// How often --metrics-textfile is rewritten (a Go duration).
    #[arg(long = "metrics-interval", value_name = "DURATION", default_value = "15s", value_parser = parse_metrics_interval, help_heading = "Monitoring")]
    pub metrics_interval: Duration,
}

/// Parse argv into a [`Config`]. `Err(clap::Error)` covers --help/--version
/// (printed by the caller with exit 0) and clap's own usage errors (exit 2).
pub fn parse<I, T>(argv: I) -> std::result::Result<Result<Config>, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv = normalize_go_flags(argv.into_iter().map(Into::into).collect());
    let cfg = Config::try_parse_from(argv)?;
    Ok(cfg.checked())
}

/// Whether argv asks for `--log-format json` (in any of the Go and GNU
/// spellings), so that even an error about the other flags is a JSON line.
pub fn asks_for_json_logs(argv: &[OsString]) -> bool {
    let argv = normalize_go_flags(argv.to_vec());
    let mut json = false;
    let mut iter = argv.iter().skip(1).map(|a| a.to_str().unwrap_or(""));
    while let Some(a) = iter.next() {
        match a {
            "--" => break,
            "--log-format" => json = iter.next() == Some("json"),
            _ => {
                if let Some(v) = a.strip_prefix("--log-format=") {
                    json = v == "json";
                }
            }
        }
    }
    json
}

/// Rewrite Go-style single-dash long flags (`-src x`, `-prefix=ab`,
/// `-version`) to clap's `--` form. Only known long names are rewritten,
/// never a value following a flag that takes one, and nothing after `--`.
pub fn normalize_go_flags(argv: Vec<OsString>) -> Vec<OsString> {
    normalize_go_flags_for(&Config::command(), argv)
}

/// [`normalize_go_flags`] for any clap command (keep-block-check's too).
pub fn normalize_go_flags_for(cmd: &clap::Command, argv: Vec<OsString>) -> Vec<OsString> {
    let mut longs: Vec<(String, bool)> = cmd
        .get_arguments()
        .filter_map(|a| Some((a.get_long()?.to_string(), a.get_action().takes_values())))
        .collect();
    longs.push(("help".into(), false));
    longs.push(("version".into(), false));
    let takes_value = |name: &str| longs.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let shorts: Vec<char> = cmd.get_arguments().filter_map(|a| a.get_short()).collect();
    let mut out = Vec::with_capacity(argv.len());
    let mut iter = argv.into_iter();
    if let Some(prog) = iter.next() {
        out.push(prog);
    }
    let mut expect_value = false;
    let mut rest_verbatim = false;
    for arg in iter {
        if rest_verbatim || expect_value {
            expect_value = false;
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest_verbatim = true;
            out.push(arg);
            continue;
        }
        let body = if let Some(b) = s.strip_prefix("--") {
            Some(b)
        } else if s.len() > 2 && s.starts_with('-') {
            Some(&s[1..])
        } else {
            None
        };
        if let Some(body) = body {
            let (name, has_eq) = match body.split_once('=') {
                Some((n, _)) => (n, true),
                None => (body, false),
            };
            if let Some(tv) = takes_value(name) {
                expect_value = tv && !has_eq;
                out.push(OsString::from(format!("--{body}")));
                continue;
            }
            // An unknown Go-style `-word` (a typo): as `--word`, so that the
            // error names it (and suggests the flag meant) instead of its
            // first letter. Bundled short flags (`-vv`) stay as they are.
            let bundled = body.chars().all(|c| shorts.contains(&c));
            if !s.starts_with("--")
                && !bundled
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
            {
                out.push(OsString::from(format!("-{s}")));
                continue;
            }
        }
        out.push(arg);
    }
    out
}

/// The concurrency flags keep-rsync and keep-block-check share, declared
/// once so that names, defaults, checks and help cannot drift apart.
#[derive(clap::Args, Debug, Clone)]
pub struct Concurrency {
    /// Blocks in flight at once (1 does one at a time, like the Go tools). keep-rsync by default starts blocks while --buffer-memory has room and the services' adaptive limits take more requests; keep-block-check's --probe and --read ask 128 at a time. keep-rsync's memory is bounded by --buffer-memory, not by this.
    #[arg(long, value_name = "N", value_parser = at_least_one("transfers"), help_heading = "Performance")]
    pub transfers: Option<usize>,

    /// Index requests in flight.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = at_least_one("checkers"), help_heading = "Performance")]
    pub checkers: usize,

    /// At most this many requests in flight to one service: the ceiling of its adaptive limit, which backs off when the service answers 503 or queues (protects it when many jobs run).
    #[arg(long = "max-per-service", default_value_t = DEFAULT_MAX_PER_SERVICE, value_name = "N", value_parser = at_least_one("max-per-service"), help_heading = "Performance")]
    pub max_per_service: usize,

    /// Keep each service's limit at --max-per-service instead of adapting it (between 1 and --max-per-service, by the service's 503s and round trips).
    #[arg(long = "fixed-concurrency", help_heading = "Performance")]
    pub fixed_concurrency: bool,

    /// Index lines (and planned or listed blocks) held in memory per pass
    /// before the work is split by hash sub-prefix; also the sort buffer of
    /// a block list, in blocks (default 4000000).
    #[arg(
        long = "index-budget",
        value_name = "LINES",
        value_parser = clap::value_parser!(u64).range(1000..),
        help_heading = "Performance"
    )]
    pub index_budget: Option<u64>,
}

/// The networking flags keep-rsync and keep-block-check share: retries of
/// transient failures and the two timeouts.
#[derive(clap::Args, Debug, Clone)]
pub struct Networking {
    /// Retries of each request on transient errors (5xx, 408, 429, timeouts, dropped connections).
    #[arg(
        long,
        default_value_t = 5,
        value_name = "N",
        help_heading = "Networking"
    )]
    pub retries: u32,

    /// First retry delay; doubles on each retry (with jitter), up to 30 times it.
    #[arg(
        long = "retry-backoff",
        default_value = "1s",
        value_name = "DURATION",
        value_parser = duration("retry-backoff"),
        help_heading = "Networking"
    )]
    pub retry_backoff: Duration,

    /// Connect timeout.
    #[arg(
        long = "contimeout",
        default_value = "10s",
        value_name = "DURATION",
        value_parser = timeout("contimeout"),
        help_heading = "Networking"
    )]
    pub connect_timeout: Duration,

    /// Give up on a response that sends nothing for this long.
    #[arg(
        long = "timeout",
        default_value = "5m",
        value_name = "DURATION",
        value_parser = timeout("timeout"),
        help_heading = "Networking"
    )]
    pub stall_timeout: Duration,
}

impl Networking {
    /// The retry delays: `--retry-backoff`, doubling up to 30 times it.
    pub fn backoff(&self) -> crate::protocol::client::Backoff {
        crate::protocol::client::Backoff {
            base: self.retry_backoff,
            max: self.retry_backoff.saturating_mul(30),
        }
    }
}

impl Config {
    /// The checks that involve more than one flag.
    fn checked(self) -> Result<Config> {
        for (role, settings, config, json, dirs, file, flags) in [
            (
                "source",
                &self.src,
                &self.src_cluster_config,
                &self.src_services_json,
                &self.src_volume_dirs,
                &self.src_volumes,
                (
                    "-src",
                    "--src-volume-dir",
                    "--src-volumes",
                    "-src-keep-services-json",
                    "-src-cluster-config",
                ),
            ),
            (
                "destination",
                &self.dst,
                &self.dst_cluster_config,
                &self.dst_services_json,
                &self.dst_volume_dirs,
                &self.dst_volumes,
                (
                    "-dst",
                    "--dst-volume-dir",
                    "--dst-volumes",
                    "-dst-keep-services-json",
                    "-dst-cluster-config",
                ),
            ),
        ] {
            let volumes = !dirs.is_empty() || file.is_some();
            let (settings_flag, dir_flag, file_flag, json_flag, config_flag) = flags;
            if !dirs.is_empty() && file.is_some() {
                return Err(Error::config(format!(
                    "{dir_flag} and {file_flag} both name {role} volumes: give them all in one \
                     way (a volumes file can hold Directory volumes too)."
                )));
            }
            if config.is_some() && !settings.is_empty() {
                return Err(Error::config(format!(
                    "{settings_flag} and {config_flag} both describe the {role} cluster: give \
                     one (the cluster config holds the token and signing key a settings file \
                     would)."
                )));
            }
            if volumes && (!settings.is_empty() || json.is_some()) {
                let given = if settings.is_empty() {
                    json_flag
                } else {
                    settings_flag
                };
                return Err(Error::config(format!(
                    "the {role} is given both as keep services ({given}) and as volumes \
                     ({}): a side is one or the other. Drop {given} to copy the volumes \
                     directly, or the volumes to go through the keep services.",
                    if dirs.is_empty() { file_flag } else { dir_flag }
                )));
            }
            if !volumes && settings.is_empty() && config.is_none() {
                return Err(Error::config(format!(
                    "{settings_flag} is required: name the {role} cluster's config.yml \
                     ({config_flag} FILE) or settings file ({settings_flag} FILE|NAME), or its \
                     volumes ({dir_flag} PATH, {file_flag} FILE), e.g. keep-rsync -src \
                     old-cluster -dst new-cluster (see --help)."
                )));
            }
        }
        for (via, config, json, flag, config_flag, json_flag) in [
            (
                self.src_via,
                &self.src_cluster_config,
                &self.src_services_json,
                "--src-via",
                "-src-cluster-config",
                "-src-keep-services-json",
            ),
            (
                self.dst_via,
                &self.dst_cluster_config,
                &self.dst_services_json,
                "--dst-via",
                "-dst-cluster-config",
                "-dst-keep-services-json",
            ),
        ] {
            if via != crate::cluster_config::Via::default() && (config.is_none() || json.is_some())
            {
                return Err(Error::config(format!(
                    "{flag} keepproxy picks the keepproxy of a {config_flag} file; it means \
                     nothing {}.",
                    if config.is_none() {
                        format!("without {config_flag}")
                    } else {
                        format!("with {json_flag}, which names the services itself")
                    }
                )));
            }
        }
        let stdin_services = [&self.src_services_json, &self.dst_services_json]
            .iter()
            .any(|j| j.as_deref() == Some("-"));
        if self.blocks_from.as_deref() == Some("-") && stdin_services {
            return Err(Error::config(
                "--blocks-from - and a services list from stdin (-src- or -dst-keep-services-json \
                 -) cannot both read stdin: give one of them as a file.",
            ));
        }
        Ok(self)
    }

    /// The memory budgets in effect: given explicitly, else derived from
    /// `--max-memory`, else the defaults.
    pub fn budgets(&self) -> crate::memory::Budgets {
        crate::memory::Budgets {
            buffer_memory: self
                .buffer_memory
                .or(self.max_memory.map(|d| d.buffer_memory))
                .unwrap_or(DEFAULT_BUFFER_MEMORY),
            index_budget: self
                .conc
                .index_budget
                .or(self.max_memory.map(|d| d.index_budget))
                .unwrap_or(DEFAULT_INDEX_BUDGET),
        }
    }

    /// Writes follow the read (see copy::Relay).
    pub fn streaming(&self) -> bool {
        !self.no_streaming
    }
}

/// How a bad value is reported: one paragraph, naming the flag (Go style).
pub(crate) type ValueError = String;

fn parse_replications(v: &str) -> Result<u32, ValueError> {
    match v.trim().parse::<i64>() {
        Ok(n) if n < 0 => Err(format!(
            "-replications {n} is negative: give the number of replicas to write, or 0 for the \
             destination's defaultCollectionReplication."
        )),
        Ok(n) if n > 1000 => Err(format!(
            "-replications {n} is not a sensible replica count."
        )),
        Ok(n) => Ok(n as u32),
        Err(_) => Err(format!("-replications {v:?} is not a number.")),
    }
}

pub(crate) fn parse_prefix(v: &str) -> Result<String, ValueError> {
    if crate::protocol::is_valid_prefix(v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "-prefix {v:?} is not a hash prefix: use 0 to 32 lowercase hex digits (0-9, a-f), \
             e.g. -prefix 0 … -prefix f for 16 parallel jobs."
        ))
    }
}

/// A Go duration for `flag`.
pub(crate) fn duration(
    flag: &'static str,
) -> impl Fn(&str) -> Result<Duration, ValueError> + Clone {
    move |v| parse_go_duration(v).map_err(|e| format!("bad value for -{flag}: {e}."))
}

/// A Go duration for `flag`, in whole seconds.
pub(crate) fn seconds(flag: &'static str) -> impl Fn(&str) -> Result<u64, ValueError> + Clone {
    move |v| duration(flag)(v).map(|d| d.as_secs())
}

/// A timeout: a Go duration for `flag`, at least a millisecond.
pub(crate) fn timeout(flag: &'static str) -> impl Fn(&str) -> Result<Duration, ValueError> + Clone {
    move |v| duration(flag)(v).map(|d| d.max(Duration::from_millis(1)))
}

/// A count of at least 1 for `flag`.
pub(crate) fn at_least_one(
    flag: &'static str,
) -> impl Fn(&str) -> Result<usize, ValueError> + Clone {
    move |v| match v.trim().parse::<usize>() {
        Ok(0) => Err(format!("--{flag} must be at least 1.")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("--{flag} {v:?} is not a number.")),
    }
}

/// `--bwlimit`: bytes per second; 0 means no limit.
fn parse_bwlimit(v: &str) -> Result<u64, ValueError> {
    crate::protocol::units::parse_rate(v)
        .map(|r| r.unwrap_or(0))
        .map_err(|e| format!("bad --bwlimit: {e}."))
}

/// `--max-duration`: a Go duration; 0 means no limit.
fn parse_max_duration(v: &str) -> Result<Duration, ValueError> {
    parse_go_duration(v).map_err(|e| format!("bad value for --max-duration: {e}."))
}

/// `--metrics-addr`: HOST:PORT (a name, an IPv4 address, or `[IPv6]`);
/// resolved and bound when the run starts.
fn parse_metrics_addr(v: &str) -> Result<String, ValueError> {
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(v.to_string()),
        _ => Err(format!(
            "--metrics-addr {v:?} is not HOST:PORT: write e.g. 127.0.0.1:9150, [::1]:9150 or 0.0.0.0:0 (port 0: any free port, logged)."
        )),
    }
}

/// `--metrics-interval`: a Go duration of at least 10 ms.
fn parse_metrics_interval(v: &str) -> Result<Duration, ValueError> {
    match parse_go_duration(v) {
        Ok(d) if d >= Duration::from_millis(10) => Ok(d),
        Ok(_) => Err(format!(
            "--metrics-interval {v:?} is too short: give at least 10ms."
        )),
        Err(e) => Err(format!("bad value for --metrics-interval: {e}.")),
    }
}

/// `--max-transfer`: bytes; 0 or off means no limit.
fn parse_max_transfer(v: &str) -> Result<u64, ValueError> {
    if v.trim().eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    crate::protocol::units::parse_size(v).map_err(|e| format!("bad --max-transfer: {e}."))
}

fn parse_buffer_memory(v: &str) -> Result<u64, ValueError> {
    crate::protocol::units::parse_budget(v).map_err(|e| format!("bad --buffer-memory: {e}."))
}

fn parse_max_memory(v: &str) -> Result<crate::memory::Budgets, ValueError> {
    crate::protocol::units::parse_size(v)
        .and_then(crate::memory::Budgets::from_total)
        .map_err(|e| format!("bad --max-memory: {e}."))
}

fn parse_storage_classes(v: &str) -> Result<String, ValueError> {
    if v.split(',')
        .map(str::trim)
        .any(|x| x.is_empty() || x.contains(['=', ' ']))
    {
        return Err(format!(
            "--storage-classes {v:?} must be a comma-separated list of class names, e.g. default,archive."
        ));
    }
    Ok(v.to_string())
}

/// What to print for a clap error, and the exit code: clap's own text for
/// `--help`, `--version` and usage mistakes; for a bad value, our one
/// paragraph naming the flag.
pub fn describe_clap_error(e: &clap::Error) -> Option<String> {
    use std::error::Error as _;
    match e.kind() {
        clap::error::ErrorKind::ValueValidation => e.source().map(|s| s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config> {
        let mut v = vec!["keep-rsync"];
        v.extend_from_slice(args);
        parse(v).expect("clap accepts")
    }

    #[test]
    fn go_and_gnu_syntaxes_agree() {
        for form in [
            vec![
                "-src",
                "a",
                "-dst",
                "b",
                "-prefix",
                "0a",
                "-replications",
                "3",
            ],
            vec!["-src=a", "-dst=b", "-prefix=0a", "-replications=3"],
            vec![
                "--src",
                "a",
                "--dst",
                "b",
                "--prefix",
                "0a",
                "--replications",
                "3",
            ],
            vec!["--src=a", "--dst=b", "--prefix=0a", "--replications=3"],
        ] {
            let c = cfg(&form).unwrap();
            assert_eq!(
                (
                    c.src.as_str(),
                    c.dst.as_str(),
                    c.prefix.as_str(),
                    c.replications
                ),
                ("a", "b", "0a", 3),
                "{form:?}"
            );
        }
    }

    #[test]
    fn values_that_look_like_flags_are_values() {
        let c = cfg(&["-src", "-dst", "-dst", "x", "-src-keep-services-json", "-"]).unwrap();
        assert_eq!(c.src, "-dst");
        assert_eq!(c.dst, "x");
        assert_eq!(c.src_services_json.as_deref(), Some("-"));
    }

    #[test]
    fn an_unknown_go_style_flag_is_named_whole() {
        let norm = |a: &[&str]| -> Vec<String> {
            let argv = std::iter::once("keep-rsync").chain(a.iter().copied());
            normalize_go_flags(argv.map(OsString::from).collect())
                .into_iter()
                .skip(1)
                .map(|s| s.into_string().unwrap())
                .collect()
        };
        assert_eq!(norm(&["-srcc", "x"]), ["--srcc", "x"]);
        assert_eq!(norm(&["-vv", "-q", "-n"]), ["-vv", "-q", "-n"]);
        assert_eq!(norm(&["-replications", "-1"]), ["--replications", "-1"]);
        let e = parse(["keep-rsync", "-src", "a", "-dst", "b", "-bogus"]).unwrap_err();
        assert!(e.to_string().contains("'--bogus'"), "{e}");
    }

    #[test]
    fn durations() {
        let d = |s| parse_go_duration(s).unwrap().as_secs_f64();
        assert_eq!(d("336h"), 1209600.0);
        assert_eq!(d("1209600s"), 1209600.0);
        assert_eq!(d("2h45m"), 9900.0);
        assert_eq!(d("0"), 0.0);
        assert_eq!(d("1.5h"), 5400.0);
        assert_eq!(d("300ms"), 0.3);
        for bad in ["", "10", "1d", "h", "-1s", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        let c = cfg(&["-src", "a", "-dst", "b", "-src-blob-signature-ttl", "2h45m"]).unwrap();
        assert_eq!(c.src_ttl, 9900);
    }

    /// The one-paragraph message for a rejected command line (a bad value
    /// or a missing flag), or `None` when it was accepted.
    fn rejected(args: &[&str]) -> Option<String> {
        let mut v = vec!["keep-rsync"];
        v.extend_from_slice(args);
        match parse(v) {
            Err(e) => Some(describe_clap_error(&e).expect("a bad value, described")),
            Ok(Err(e)) => {
                assert_eq!(e.exit_code(), 2);
                Some(e.to_string())
            }
            Ok(Ok(_)) => None,
        }
    }

    #[test]
    fn bad_values_are_config_errors() {
        for args in [
            vec!["-src", "a", "-dst", "b", "-prefix", "xyz"],
            vec!["-src", "a", "-dst", "b", "-prefix", &"0".repeat(33)],
            vec!["-src", "a", "-dst", "b", "-replications", "-1"],
            vec![
                "-src",
                "a",
                "-dst",
                "b",
                "-src-blob-signature-ttl",
                "forever",
            ],
            vec!["-src", "a", "-dst", "b", "--transfers", "0"],
            vec!["-src", "a", "-dst", "b", "--bwlimit", "fast"],
            vec!["-src", "a", "-dst", "b", "--storage-classes", "a,,b"],
            vec!["-src", "a", "-dst", "b", "--index-budget", "10"],
            vec!["-src", "a", "-dst", "b", "--max-duration", "1d"],
            vec!["-src", "a", "-dst", "b", "--max-transfer", "lots"],
            vec!["-src", "a", "-dst", "b", "--metrics-addr", "9150"],
            vec!["-src", "a", "-dst", "b", "--metrics-addr", "host:port"],
            vec!["-src", "a", "-dst", "b", "--metrics-interval", "0"],
            vec!["-src", "a"],
        ] {
            let msg = rejected(&args).unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
        let msg = rejected(&["-src", "a", "-dst", "b", "-prefix", "xyz"]).unwrap();
        assert!(
            msg.starts_with("-prefix \"xyz\" is not a hash prefix"),
            "{msg}"
        );
    }

    #[test]
    fn max_memory_sets_both_budgets_and_explicit_flags_win() {
        let b = |c: Config| {
            let b = c.budgets();
            (b.buffer_memory, b.index_budget)
        };
        let c = cfg(&["-src", "a", "-dst", "b"]).unwrap();
        assert_eq!(b(c), (256 << 20, 4_000_000));
        let c = cfg(&["-src", "a", "-dst", "b", "--max-memory", "512M"]).unwrap();
        assert_eq!(b(c), (360 << 20, 6_291_456));
        let c = cfg(&[
            "-src",
            "a",
            "-dst",
            "b",
            "--max-memory",
            "512M",
            "--buffer-memory",
            "100M",
        ])
        .unwrap();
        assert_eq!(b(c), (100 << 20, 6_291_456));
        assert!(rejected(&["-src", "a", "-dst", "b", "--max-memory", "64M"]).is_some());
        assert!(parse([
            "keep-rsync",
            "-src",
            "a",
            "-dst",
            "b",
            "--buffer-memory",
            "10K"
        ])
        .is_err());
    }

    #[test]
    fn json_logs_are_spotted_before_the_flags_parse() {
        let asks = |args: &[&str]| {
            let mut v = vec![OsString::from("keep-rsync")];
            v.extend(args.iter().map(OsString::from));
            asks_for_json_logs(&v)
        };
        assert!(asks(&["-log-format", "json", "--bogus"]));
        assert!(asks(&["--log-format=json", "-prefix", "XYZ"]));
        assert!(asks(&["-log-format=json"]));
        assert!(!asks(&["--log-format", "text"]));
        assert!(!asks(&["--log-format=json", "--log-format=text"]));
        assert!(!asks(&["--", "--log-format=json"]));
        assert!(!asks(&[]));
    }

    #[test]
    fn version_and_help_are_clap_exits() {
        for f in ["-version", "--version", "-help", "-h"] {
            assert!(parse(["keep-rsync", f]).is_err(), "{f}");
        }
    }
}
