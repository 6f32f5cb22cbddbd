//! The `keepstore-sim` command line: serve a cluster until SIGINT/SIGTERM,
//! or act on a running one (`seed`, `counters`, `probe-order`, and the
//! benchmark helpers `rawcopy`, `md5-speed` and `lag`).
//!
//! Scripts rely on the flag names and on one behaviour: the services file
//! (and `--settings-file`) appears, whole (a temporary file renamed into
//! place), only once every service is listening. Secrets are never printed except into the settings
//! file the caller asked for.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use super::seed::{self, SizeRange};
use super::{Cluster, ClusterConfig, Faults, SyntheticIndex};
use keep_protocol::{BlockHash, KeepService};

/// A faithful Arvados keepstore simulator (Keep API on 127.0.0.1, optional
/// faults, HTTPS API-server stub, synthetic indexes).
#[derive(Parser, Debug)]
#[command(
    name = "keepstore-sim",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Seed a running cluster over HTTP PUT: each block goes to the first R
    /// writable services of its probe order. Prints `HASH+SIZE` lines.
    Seed(SeedArgs),
    /// Print each service's request counters as JSON.
    Counters(CountersArgs),
    /// Print, for each HASH, the service uuids in rendezvous probe order.
    ProbeOrder(ProbeOrderArgs),
    /// Benchmark limit: copy blocks with plain GETs and PUTs (no planning,
    /// no verification, no retries); prints bytes/s as JSON.
    Rawcopy(RawcopyArgs),
    /// Benchmark: MD5 speed of one core (the md-5 crate keep-rsync uses), JSON.
    Md5Speed(Md5SpeedArgs),
    /// Benchmark: a TCP proxy adding a round trip to each target (a delay
    /// line, never a throttle). Prints `PORT TARGET` lines once listening.
    Lag(LagArgs),
}

/// Serving a cluster (the default mode).
#[derive(Args, Debug)]
struct ServeArgs {
    /// Number of keepstore services.
    #[arg(long)]
    services: Option<usize>,
    /// System root token (needed for /index and the private endpoints).
    #[arg(long)]
    root_token: Option<String>,
    /// Write the keep_services JSON here once listening (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    services_json: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen: std::net::IpAddr,
    /// Fixed ports, one per service (default: ephemeral).
    #[arg(long, value_delimiter = ',', value_name = "P,P,...")]
    ports: Vec<u16>,
    /// Blob signing key: PUT answers carry signed locators.
    #[arg(long, value_name = "KEY")]
    signing_key: Option<String>,
    /// Refuse GET/HEAD without a valid permission signature.
    #[arg(long)]
    enforce_signatures: bool,
    /// Blob signature TTL in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1_209_600)]
    ttl: u64,
    /// Keep blocks in DIR/<uuid>/XYZ/HASH (default: memory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Cluster id used in service uuids.
    #[arg(long, default_value = "zzzzz")]
    uuid_prefix: String,
    /// Serve the 28-character uuids a stock API server derives from URLs
    /// (PREFIX-bi6l4- + 16 hex digits of md5(http://HOST:PORT/)).
    #[arg(long)]
    rails_uuids: bool,
    /// Read-only services (indices): listed read_only, PUT answers 507.
    #[arg(long, value_delimiter = ',', value_name = "I,J")]
    read_only: Vec<usize>,
    /// Delay before every Keep API answer.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of Keep requests answered 500/503.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fail_rate: f64,
    /// Fraction of connections closed without an answer.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    drop_rate: f64,
    /// Fraction of GET bodies cut short (then the connection is closed).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    truncate_rate: f64,
    /// Fraction of GET bodies with one flipped byte.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    corrupt_rate: f64,
    /// GET bodies stall half-way for this long.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    stall_ms: u64,
    /// Keep requests each service handles at once (0 = unlimited), like
    /// keepstore's API.MaxConcurrentRequests: more are queued
    /// (--max-queued-requests) or answered 503.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_concurrent_requests: usize,
    /// Requests each service lets wait for a slot, oldest first (0 = none:
    /// 503 at once), like API.MaxQueuedRequests.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_queued_requests: usize,
    /// A queued request still waiting after this long is answered 503
    /// (0 = it waits as long as it takes).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    queue_timeout_ms: u64,
    /// Added to each answer's delay per request in flight at the service
    /// (itself included): a disk that slows as requests pile up.
    #[arg(long, value_name = "US", default_value_t = 0)]
    queue_latency_us: u64,
    /// Seeded blocks share all their bytes but a short tail, so many big
    /// blocks fit in the memory of one (benchmarks; needs one --seed-sizes).
    #[arg(long)]
    seed_shared_data: bool,
    /// Keep only the size of blocks written over HTTP, after checking them
    /// (benchmarks: a destination that does not fill the RAM; GET answers 404).
    #[arg(long)]
    discard_data: bool,
    /// Send each GET body and read each PUT body at most this fast (per
    /// request; K/M/G = KiB/MiB/GiB per second): a long link or a disk.
    #[arg(long, value_name = "RATE", value_parser = keep_protocol::units::parse_size, default_value = "0")]
    link_rate: u64,
    /// Services (indices) that are full: PUT answers 507.
    #[arg(long, value_delimiter = ',', value_name = "I,J")]
    full: Vec<usize>,
    /// Services (indices) whose index lacks the terminating blank line.
    #[arg(long, value_delimiter = ',', value_name = "I,J")]
    index_incomplete: Vec<usize>,
    /// Services (indices) whose index includes a malformed line.
    #[arg(long, value_delimiter = ',', value_name = "I,J")]
    index_malformed: Vec<usize>,
    /// Seed of every fault decision.
    #[arg(long, value_name = "S", default_value_t = 0)]
    fault_seed: u64,
    /// Also serve an HTTPS API-server stub (self-signed certificate).
    #[arg(long)]
    api_server: bool,
    /// defaultCollectionReplication in the discovery document.
    #[arg(long, value_name = "N", default_value_t = 2)]
    default_replication: u32,

    /// List the services as keepproxies (service_type "proxy"): a PUT answers
    /// X-Keep-Replicas-Stored with the desired replicas
    #[arg(long)]
    proxy: bool,

    /// Storage classes the services offer, confirmed on PUT when requested
    #[arg(
        long = "storage-classes",
        value_name = "A,B",
        default_value = "default"
    )]
    storage_classes: String,
    /// The volumes every keepstore mounts, `;`-separated, each
    /// `CLASS[+CLASS][:REPLICATION][:ro]` (e.g. `default;archive:2`), listed
    /// by `GET /mounts`; default: one volume of --storage-classes
    #[arg(long, value_name = "SPEC")]
    mounts: Option<String>,
    /// Answer 404 to `/mounts`, as a keepstore from before it
    #[arg(long)]
    no_mounts_api: bool,
    /// Write an arv-copy style settings file (contains the token and key).
    #[arg(long, value_name = "FILE")]
    settings_file: Option<String>,
    /// Write the cluster's config.yml, as an Arvados admin writes it
    /// (contains the token and key): keep-rsync -src-cluster-config.
    #[arg(long, value_name = "FILE")]
    cluster_config: Option<String>,
    /// Synthetic index: size of the block universe (no data).
    #[arg(long, value_name = "N")]
    synthetic_blocks: Option<u64>,
    /// Synthetic index: seed of the universe.
    #[arg(long, value_name = "S", default_value_t = 0)]
    synthetic_seed: u64,
    /// Synthetic index: services holding each block.
    #[arg(long, value_name = "R", default_value_t = 2)]
    synthetic_replicas: usize,
    /// Synthetic index: fraction of the universe present in this cluster.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    synthetic_fraction: f64,
    /// Seed N random blocks at start (placed on the first R writable
    /// services of their probe order).
    #[arg(long, value_name = "N")]
    seed_blocks: Option<usize>,
    /// Sizes of seeded blocks, e.g. 1K-16K,3M (K/M/G = KiB/MiB/GiB).
    #[arg(long, value_name = "RANGES", default_value = "1K-64K")]
    seed_sizes: String,
    /// Replicas of each seeded block.
    #[arg(long, value_name = "R", default_value_t = 2)]
    seed_replicas: usize,
    /// Random seed of seeded blocks.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
struct SeedArgs {
    /// The running cluster's keep_services JSON (file, or JSON text).
    #[arg(long, value_name = "FILE")]
    services_json: String,
    /// Root token of that cluster.
    #[arg(long)]
    root_token: String,
    /// Number of blocks.
    #[arg(long, value_name = "N")]
    blocks: usize,
    /// Block sizes, e.g. 1K-16K,3M.
    #[arg(long, value_name = "RANGES")]
    sizes: String,
    /// Replicas of each block.
    #[arg(long, value_name = "R", default_value_t = 2)]
    replicas: usize,
    /// Random seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Print only the number of blocks stored.
    #[arg(long)]
    count: bool,
}

#[derive(Args, Debug)]
struct CountersArgs {
    /// The running cluster's keep_services JSON (file, or JSON text).
    #[arg(long, value_name = "FILE")]
    services_json: String,
    /// Root token of that cluster.
    #[arg(long)]
    root_token: String,
}

#[derive(Args, Debug)]
struct ProbeOrderArgs {
    /// A keep_services JSON (file, or JSON text).
    #[arg(long, value_name = "FILE")]
    services_json: String,
    /// Block hashes (32 lowercase hex digits; a locator's size and hints
    /// are ignored).
    #[arg(value_name = "HASH")]
    hashes: Vec<String>,
}

#[derive(Args, Debug)]
struct RawcopyArgs {
    /// Source keep_services JSON (file, or JSON text).
    #[arg(long, value_name = "FILE")]
    src_services_json: String,
    /// Destination keep_services JSON (file, or JSON text).
    #[arg(long, value_name = "FILE")]
    dst_services_json: String,
    /// Source token (root token: the index is listed with it).
    #[arg(long)]
    src_token: String,
    /// Destination token.
    #[arg(long)]
    dst_token: String,
    /// Replicas written per block (first writable services of the probe order).
    #[arg(long, value_name = "R", default_value_t = 2)]
    replicas: usize,
    /// Blocks in flight (scripts/bench.sh passes keep-rsync's --transfers).
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,
    /// `HASH+SIZE` lines to copy instead of listing the source indexes
    /// (each read from the first service of its source probe order).
    #[arg(long, value_name = "FILE")]
    blocks_file: Option<String>,
}

#[derive(Args, Debug)]
struct LagArgs {
    /// Round trip added, half each way.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    rtt_ms: u64,
    /// Address to listen on (one ephemeral port per target).
    #[arg(long, default_value = "127.0.0.1")]
    listen: std::net::IpAddr,
    /// Where to forward, HOST:PORT each.
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<std::net::SocketAddr>,
}

#[derive(Args, Debug)]
struct Md5SpeedArgs {
    /// Times a 64 MiB buffer is hashed.
    #[arg(long, value_name = "N", default_value_t = 16)]
    rounds: usize,
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("keepstore-sim: error: {msg}");
    ExitCode::from(code)
}

/// Entry point of the `keepstore-sim` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("starting the runtime: {e}")),
    };
    rt.block_on(async move {
        match cli.cmd {
            None => serve(cli.serve).await,
            Some(Cmd::Seed(a)) => seed_cmd(a).await,
            Some(Cmd::Counters(a)) => counters_cmd(a).await,
            Some(Cmd::ProbeOrder(a)) => probe_order_cmd(a),
            Some(Cmd::Rawcopy(a)) => rawcopy_cmd(a).await,
            Some(Cmd::Lag(a)) => {
                let rtt = std::time::Duration::from_millis(a.rtt_ms);
                match super::lag::run(a.listen, a.targets, rtt).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(1, format!("lag proxy: {e}")),
                }
            }
            Some(Cmd::Md5Speed(a)) => {
                println!("{}", super::rawcopy::md5_speed(a.rounds));
                ExitCode::SUCCESS
            }
        }
    })
}

fn write_atomically(path: &str, text: &str) -> std::io::Result<()> {
    if path == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        return out.flush();
    }
    use std::io::Write;
    let path = std::path::Path::new(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn check_rate(name: &str, v: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("--{name} must be between 0 and 1, not {v}"))
    }
}

fn build_config(a: &ServeArgs) -> Result<ClusterConfig, String> {
    let services = a.services.ok_or("--services N is required")?;
    if services == 0 {
        return Err("--services must be at least 1".into());
    }
    let root_token = a
        .root_token
        .clone()
        .ok_or("--root-token TOKEN is required")?;
    if root_token.is_empty() {
        return Err("--root-token must not be empty".into());
    }
    if a.services_json.is_none() {
        return Err("--services-json FILE is required".into());
    }
    if a.enforce_signatures && a.signing_key.is_none() {
        return Err("--enforce-signatures needs --signing-key".into());
    }
    if !a.ports.is_empty() && a.ports.len() != services {
        return Err(format!(
            "--ports lists {} ports for {services} services",
            a.ports.len()
        ));
    }
    for (name, v) in [
        ("fail-rate", a.fail_rate),
        ("drop-rate", a.drop_rate),
        ("truncate-rate", a.truncate_rate),
        ("corrupt-rate", a.corrupt_rate),
        ("synthetic-fraction", a.synthetic_fraction),
    ] {
        check_rate(name, v)?;
    }
    for (name, list) in [
        ("read-only", &a.read_only),
        ("full", &a.full),
        ("index-incomplete", &a.index_incomplete),
        ("index-malformed", &a.index_malformed),
    ] {
        if let Some(i) = list.iter().find(|&&i| i >= services) {
            return Err(format!(
                "--{name}: there is no service {i} (services are 0..{})",
                services - 1
            ));
        }
    }
    if a.uuid_prefix.len() != 5
        || !a
            .uuid_prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err("--uuid-prefix must be 5 lowercase letters or digits".into());
    }
    Ok(ClusterConfig {
        services,
        uuid_prefix: a.uuid_prefix.clone(),
        rails_uuids: a.rails_uuids,
        root_token,
        signing_key: a.signing_key.clone(),
        enforce_signatures: a.enforce_signatures,
        blob_signature_ttl: a.ttl,
        data_dir: a.data_dir.clone(),
        read_only: a.read_only.clone(),
        listen: a.listen,
        ports: a.ports.clone(),
        faults: Faults {
            latency_ms: a.latency_ms,
            fail_rate: a.fail_rate,
            drop_rate: a.drop_rate,
            truncate_rate: a.truncate_rate,
            corrupt_rate: a.corrupt_rate,
            stall_ms: a.stall_ms,
            link_rate: a.link_rate,
            seed: a.fault_seed,
            max_concurrent: a.max_concurrent_requests,
            max_queued: a.max_queued_requests,
            queue_timeout_ms: a.queue_timeout_ms,
            queue_latency_us: a.queue_latency_us,
            ..Faults::default()
        },
        api_server: a.api_server,
        default_replication: a.default_replication,
        shared_data: a.seed_shared_data,
        discard_data: a.discard_data,
        service_type: if a.proxy {
            "proxy".into()
        } else {
            "disk".into()
        },
        storage_classes: a
            .storage_classes
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect(),
        service_classes: Vec::new(),
        mounts: match &a.mounts {
            Some(spec) => vec![parse_mounts(spec)?; services],
            None => Vec::new(),
        },
        serve_mounts: !a.no_mounts_api,
        synthetic: a.synthetic_blocks.map(|blocks| SyntheticIndex {
            blocks,
            seed: a.synthetic_seed,
            replicas: a.synthetic_replicas,
            fraction: a.synthetic_fraction,
        }),
    })
}

/// `--mounts`: `CLASS[+CLASS][:REPLICATION][:ro]`, `;`-separated.
pub fn parse_mounts(spec: &str) -> Result<Vec<crate::MountSpec>, String> {
    let mut out = Vec::new();
    for m in spec.split(';').map(str::trim).filter(|m| !m.is_empty()) {
        let mut parts = m.split(':');
        let classes: Vec<String> = (parts.next().unwrap_or("").split('+'))
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        let mut mount = crate::MountSpec {
            classes,
            replication: 1,
            read_only: false,
        };
        for p in parts {
            match p.trim() {
                "ro" => mount.read_only = true,
                n => {
                    mount.replication = n.parse().ok().filter(|&r| r >= 1).ok_or_else(|| {
                        format!("--mounts {m:?}: {n:?} is neither a replication (1 or more) nor ro")
                    })?
                }
            }
        }
        out.push(mount);
    }
    if out.is_empty() {
        return Err("--mounts names no volume".into());
    }
    Ok(out)
}

async fn serve(a: ServeArgs) -> ExitCode {
    let cfg = match build_config(&a) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    let sizes = match a.seed_blocks {
        Some(_) => match seed::parse_size_list(&a.seed_sizes) {
            Ok(s) => Some(s),
            Err(e) => return fail(2, format!("--seed-sizes: {e}")),
        },
        None => None,
    };
    let cluster = match Cluster::start(cfg).await {
        Ok(c) => c,
        Err(e) => return fail(1, format!("starting the cluster: {e}")),
    };
    for i in 0..cluster.len() {
        let mut f = cluster.faults(i);
        f.full = a.full.contains(&i);
        f.index_incomplete = a.index_incomplete.contains(&i);
        f.index_malformed = a.index_malformed.contains(&i);
        cluster.set_faults(i, f);
    }
    if let (Some(n), Some(sizes)) = (a.seed_blocks, sizes) {
        let blocks = cluster.seed_blocks(n, &sizes, a.seed_replicas, a.seed);
        eprintln!("keepstore-sim: seeded {} blocks", blocks.len());
    }
    if let Some(path) = &a.settings_file {
        if let Err(e) = write_atomically(path, &cluster.settings_text()) {
            return fail(1, format!("writing {path}: {e}"));
        }
    }
    if let Some(path) = &a.cluster_config {
        if let Err(e) = write_atomically(path, &cluster.cluster_config_text()) {
            return fail(1, format!("writing {path}: {e}"));
        }
    }
    let services_path = a.services_json.clone().unwrap_or_default();
    let text = serde_json::to_string_pretty(&cluster.services_json()).unwrap_or_default() + "\n";
    if let Err(e) = write_atomically(&services_path, &text) {
        return fail(1, format!("writing {services_path}: {e}"));
    }
    let urls: Vec<String> = (0..cluster.len()).map(|i| cluster.url(i)).collect();
    eprintln!(
        "keepstore-sim: {} services listening: {}",
        cluster.len(),
        urls.join(" ")
    );
    if let Some(h) = cluster.api_host() {
        eprintln!("keepstore-sim: API server stub at https://{h}");
    }
    wait_for_signal().await;
    eprintln!("keepstore-sim: shutting down");
    cluster.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A services argument (JSON text, a file, or `-`), read and parsed as
/// keep-rsync does.
fn load_services(arg: &str) -> Result<Vec<KeepService>, String> {
    let (text, _) = keep_protocol::services::read_services_arg(arg)
        .map_err(|e| format!("reading the services list {arg}: {e}"))?;
    keep_protocol::services::parse_services(&text)
        .map_err(|e| format!("the services list {arg} {e}"))
}

async fn seed_cmd(a: SeedArgs) -> ExitCode {
    let services = match load_services(&a.services_json) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let sizes: Vec<SizeRange> = match seed::parse_size_list(&a.sizes) {
        Ok(s) => s,
        Err(e) => return fail(2, format!("--sizes: {e}")),
    };
    match seed::seed_over_http(
        &services,
        &a.root_token,
        a.blocks,
        &sizes,
        a.replicas,
        a.seed,
    )
    .await
    {
        Ok(blocks) if a.count => {
            println!("{}", blocks.len());
            ExitCode::SUCCESS
        }
        Ok(blocks) => {
            for (h, size, _) in blocks {
                println!("{h}+{size}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

async fn counters_cmd(a: CountersArgs) -> ExitCode {
    let services = match load_services(&a.services_json) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for s in &services {
        let resp = client
            .get(format!("{}/_sim/counters", s.url()))
            .bearer_auth(&a.root_token)
            .send()
            .await;
        let v: serde_json::Value = match resp {
            Ok(r) if r.status().is_success() => match r
                .bytes()
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(v) => v,
                Err(e) => return fail(1, format!("{}: {e}", s.url())),
            },
            Ok(r) => return fail(1, format!("{}: HTTP {}", s.url(), r.status())),
            Err(e) => return fail(1, format!("{}: {e}", s.url())),
        };
        out.push(serde_json::json!({ "uuid": s.uuid, "url": s.url(), "counters": v }));
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    ExitCode::SUCCESS
}

async fn rawcopy_cmd(a: RawcopyArgs) -> ExitCode {
    let (src, dst) = match (
        load_services(&a.src_services_json),
        load_services(&a.dst_services_json),
    ) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return fail(2, e),
    };
    let blocks = match &a.blocks_file {
        None => None,
        Some(f) => match std::fs::read_to_string(f)
            .map_err(|e| format!("reading {f}: {e}"))
            .and_then(|t| super::rawcopy::parse_blocks(&t))
        {
            Ok(b) => Some(b),
            Err(e) => return fail(2, e),
        },
    };
    let r = super::rawcopy::run(super::rawcopy::RawCopy {
        src: &src,
        dst: &dst,
        src_token: &a.src_token,
        dst_token: &a.dst_token,
        replicas: a.replicas,
        concurrency: a.concurrency,
        blocks,
    })
    .await;
    match r {
        Ok(r) => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            if r.errors > 0 {
                return fail(1, format!("{} blocks failed", r.errors));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

fn probe_order_cmd(a: ProbeOrderArgs) -> ExitCode {
    let services = match load_services(&a.services_json) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    for text in &a.hashes {
        let hex = text.split('+').next().unwrap_or("");
        let Ok(h) = hex.parse::<BlockHash>() else {
            return fail(2, format!("{text:?} is not a block hash"));
        };
        let order = seed::remote_probe_order(&services, &h);
        let uuids: Vec<&str> = order.iter().map(|&i| services[i].uuid.as_str()).collect();
        println!("{}", uuids.join(" "));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(extra: &[&str]) -> ClusterConfig {
        let mut args = vec![
            "keepstore-sim",
            "--services",
            "2",
            "--root-token",
            "r",
            "--services-json",
            "-",
        ];
        args.extend_from_slice(extra);
        build_config(&Cli::try_parse_from(args).unwrap().serve).unwrap()
    }

    #[test]
    fn rails_uuids_flag() {
        assert!(!config(&[]).rails_uuids);
        assert!(config(&["--rails-uuids"]).rails_uuids);
    }

    #[test]
    fn load_flags_set_every_services_faults_and_default_off() {
        let f = config(&[]).faults;
        assert_eq!(
            (
                f.max_concurrent,
                f.max_queued,
                f.queue_timeout_ms,
                f.queue_latency_us
            ),
            (0, 0, 0, 0)
        );
        let f = config(&[
            "--max-concurrent-requests",
            "4",
            "--max-queued-requests",
            "8",
            "--queue-timeout-ms",
            "1500",
            "--queue-latency-us",
            "250",
            "--latency-ms",
            "3",
        ])
        .faults;
        assert_eq!(
            (
                f.max_concurrent,
                f.max_queued,
                f.queue_timeout_ms,
                f.queue_latency_us
            ),
            (4, 8, 1500, 250)
        );
        assert_eq!(f.delay(2), std::time::Duration::from_micros(3500));
    }
}
