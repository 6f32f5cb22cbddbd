//! keep-block-check's flags: the Go tool's (`-config`, `-keep-services-json`,
//! `-block-hash-file`, `-prefix`, `-blob-signature-ttl`, `-v`, `-version`)
//! in the same four syntaxes as keep-rsync (`cli::normalize_go_flags_for`),
//! with the same value parsers, plus the mode (`--probe`, `--read`) and
//! keep-rsync's performance, networking and report flags.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::cli::{parse_prefix, seconds, Concurrency, Networking};
use crate::error::{Error, Result};

const AFTER_HELP: &str = "\
Modes:
  (default)  one index request per keep service (in hash sub-prefix passes of at most
             --index-budget lines), instead of one request per block
  --probe    a signed HEAD per block, through its probe order, --transfers at a time
             (the Go tool asks the same way, one block at a time)
  --read     a signed GET per block, its length and MD5 checked; a corrupt copy is
             reported and the next copy tried

Exit codes:
  0    every listed block (with the -prefix) was found
  1    some were not (each is logged: \"Error verifying block HASH: why\")
  2    usage or configuration error (flags, settings file, services list, block list)
  3    a keep service, the API server or an index could not be read
  130  interrupted
The Go tool exits 1 for all of these.

The block list (-block-hash-file, - for stdin) holds one locator or hash per line, or
manifest text: every word that is a locator is taken, its hints dropped.";

/// Check that the blocks listed in a file are in a Keep cluster.
///
/// A drop-in for Arvados' keep-block-check: same flags (Go-style -flag value,
/// -flag=value, or --flag value), settings files and log lines. By default it
/// answers from the keep services' indexes; --probe and --read ask for each
/// block.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "keep-block-check",
    version = crate::VERSION,
    args_override_self = true,
    after_help = AFTER_HELP,
    after_long_help = AFTER_HELP
)]
pub struct CheckConfig {
    /// Settings of the cluster to check: a file path, or NAME for
    /// $HOME/.config/arvados/NAME.conf (ARVADOS_API_HOST, ARVADOS_API_TOKEN,
    /// ARVADOS_API_HOST_INSECURE, ARVADOS_BLOB_SIGNING_KEY).
    #[arg(
        long,
        value_name = "FILE|NAME",
        default_value = "",
        hide_default_value = true,
        allow_hyphen_values = true
    )]
    pub config: String,

    /// The cluster's config.yml: token, signing key and TTL, and its keepstores (or keepproxy, --via), instead of -config, a services list and -blob-signature-ttl. Explicit flags win.
    #[arg(long = "cluster-config", value_name = "FILE")]
    pub cluster_config: Option<std::path::PathBuf>,

    /// With -cluster-config: ask the keepstores (InternalURLs, the default) or the keepproxy (ExternalURL).
    #[arg(long = "via", value_name = "SERVICE", value_enum, default_value_t)]
    pub via: crate::cluster_config::Via,

    /// Keep services list (JSON text, a file, or - for stdin); otherwise from the API server.
    #[arg(
        long = "keep-services-json",
        value_name = "JSON|FILE|-",
        allow_hyphen_values = true
    )]
    pub services_json: Option<String>,

    /// Check keepstore Directory volumes directly (ROOT/xyz/HASH) instead of keep services; repeatable. -config is then not needed.
    #[arg(long = "volume-dir", value_name = "PATH", help_heading = "Volumes")]
    pub volume_dirs: Vec<std::path::PathBuf>,

    /// Check the volumes (Directory or S3) of FILE directly: an Arvados cluster config's Volumes section, YAML or JSON, or a whole config.yml. -config is then not needed.
    #[arg(long = "volumes", value_name = "FILE", help_heading = "Volumes")]
    pub volumes: Option<std::path::PathBuf>,

    /// The cluster of -cluster-config or --volumes to use when its file defines several.
    #[arg(long = "cluster", value_name = "ID", help_heading = "Volumes")]
    pub cluster: Option<String>,

    /// The blocks to check (required; - for stdin): one locator or hash per
    /// line, manifest text, or collection records (CSV with a manifest_text
    /// column, or JSON lines: blocks with fewer copies than their
    /// collections want count as errors too). Duplicates and any order are fine.
    #[arg(
        long = "block-hash-file",
        value_name = "FILE|-",
        default_value = "",
        hide_default_value = true,
        allow_hyphen_values = true
    )]
    pub block_hash_file: String,

    /// Only listed hashes starting with these hex digits.
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        value_name = "HEX",
        value_parser = parse_prefix
    )]
    pub prefix: String,

    /// Collection records: the copies every block should have in each of its
    /// storage classes (0 = what its collections want; null ones the
    /// cluster's DefaultReplication or defaultCollectionReplication).
    #[arg(long = "replications", default_value_t = 0, value_name = "N")]
    pub replications: u32,

    /// Blob signature TTL, a Go duration (336h); 0 = the API server's
    /// discovery document (asked only when --probe or --read sign locators).
    #[arg(
        long = "blob-signature-ttl",
        default_value = "0",
        value_name = "DURATION",
        value_parser = seconds("blob-signature-ttl")
    )]
    pub ttl: u64,

    /// Log each block as it is checked: "Verifying block N of M: HASH".
    #[arg(short = 'v', long = "v")]
    pub verbose: bool,

    /// Ask each block with a signed HEAD, --transfers at a time, instead of
    /// reading indexes.
    #[arg(long, conflicts_with = "read", help_heading = "Mode")]
    pub probe: bool,

    /// Read each block (signed GET) and check its length and MD5.
    #[arg(long, help_heading = "Mode")]
    pub read: bool,

    /// Concurrency and pass size (the same flags as keep-rsync's).
    #[command(flatten)]
    pub conc: Concurrency,

    /// Retries and timeouts (the same flags as keep-rsync's).
    #[command(flatten)]
    pub net: Networking,

    /// Write a JSON report to FILE (docs/report-schema.md, "keep-block-check").
    #[arg(long, value_name = "FILE", help_heading = "Logging")]
    pub report: Option<PathBuf>,
}

/// How blocks are asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Index,
    Probe,
    Read,
}

impl CheckConfig {
    pub fn mode(&self) -> Mode {
        if self.read {
            Mode::Read
        } else if self.probe {
            Mode::Probe
        } else {
            Mode::Index
        }
    }

    pub fn index_budget(&self) -> u64 {
        self.conc
            .index_budget
            .unwrap_or(crate::cli::DEFAULT_INDEX_BUDGET)
    }

    fn checked(self) -> Result<CheckConfig> {
        let volumes = !self.volume_dirs.is_empty() || self.volumes.is_some();
        if !self.volume_dirs.is_empty() && self.volumes.is_some() {
            return Err(Error::config(
                "--volume-dir and --volumes both name volumes: give them all in one way (a \
                 volumes file can hold Directory volumes too).",
            ));
        }
        if volumes && (!self.config.is_empty() || self.services_json.is_some()) {
            return Err(Error::config(
                "the cluster is given both as keep services (-config or -keep-services-json) and \
                 as volumes (--volume-dir or --volumes): check one or the other.",
            ));
        }
        if self.cluster_config.is_some() && !self.config.is_empty() {
            return Err(Error::config(
                "-config and -cluster-config both describe the cluster: give one (the cluster \
                 config holds the token and signing key a settings file would).",
            ));
        }
        if self.via != crate::cluster_config::Via::default()
            && (self.cluster_config.is_none() || self.services_json.is_some())
        {
            return Err(Error::config(
                "--via keepproxy picks the keepproxy of a -cluster-config file; it means nothing \
                 without one, or with -keep-services-json (which names the services itself).",
            ));
        }
        if self.config.is_empty() && !volumes && self.cluster_config.is_none() {
            return Err(Error::config(
                "-config is required: name the settings file of the cluster to check, e.g. \
                 keep-block-check -config new-cluster -block-hash-file blocks.txt (see --help), \
                 its config.yml (-cluster-config FILE), or its volumes (--volume-dir PATH, \
                 --volumes FILE).",
            ));
        }
        if self.block_hash_file.is_empty() {
            return Err(Error::config(
                "-block-hash-file is required: give the file of block locators or hashes to \
                 check (one per line, or manifest text), or - for stdin.",
            ));
        }
        if self.block_hash_file == "-" && self.services_json.as_deref() == Some("-") {
            return Err(Error::config(
                "-block-hash-file - and -keep-services-json - cannot both read stdin: give one \
                 of them as a file.",
            ));
        }
        Ok(self)
    }
}

/// Parse argv (Go or GNU syntax). `Err(clap::Error)`: --help, --version or
/// a usage error, for the caller to print.
pub fn parse<I, T>(argv: I) -> std::result::Result<Result<CheckConfig>, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv = crate::cli::normalize_go_flags_for(
        &CheckConfig::command(),
        argv.into_iter().map(Into::into).collect(),
    );
    let cfg = CheckConfig::try_parse_from(argv)?;
    Ok(cfg.checked())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<CheckConfig> {
        let mut v = vec!["keep-block-check"];
        v.extend_from_slice(args);
        parse(v).expect("clap accepts")
    }

    #[test]
    fn four_syntaxes_agree() {
        for form in [
            vec![
                "-config",
                "a",
                "-block-hash-file",
                "f",
                "-prefix",
                "0a",
                "-v",
                "-blob-signature-ttl",
                "2h",
            ],
            vec![
                "-config=a",
                "-block-hash-file=f",
                "-prefix=0a",
                "-v",
                "-blob-signature-ttl=2h",
            ],
            vec![
                "--config",
                "a",
                "--block-hash-file",
                "f",
                "--prefix",
                "0a",
                "--v",
                "--blob-signature-ttl",
                "2h",
            ],
            vec![
                "--config=a",
                "--block-hash-file=f",
                "--prefix=0a",
                "--v",
                "--blob-signature-ttl=2h",
            ],
        ] {
            let c = cfg(&form).unwrap();
            assert_eq!(
                (
                    c.config.as_str(),
                    c.block_hash_file.as_str(),
                    c.prefix.as_str(),
                    c.verbose,
                    c.ttl
                ),
                ("a", "f", "0a", true, 7200),
                "{form:?}"
            );
            assert_eq!(c.mode(), Mode::Index);
        }
        let c = cfg(&[
            "-config",
            "a",
            "-block-hash-file",
            "-",
            "-keep-services-json",
            "{}",
            "--probe",
        ])
        .unwrap();
        assert_eq!((c.block_hash_file.as_str(), c.mode()), ("-", Mode::Probe));
        assert_eq!(
            cfg(&["-config", "a", "-block-hash-file", "f", "--read"])
                .unwrap()
                .mode(),
            Mode::Read
        );
    }

    #[test]
    fn required_and_bad_values() {
        for args in [
            vec!["-block-hash-file", "f"],
            vec!["-config", "a"],
            vec![
                "-config",
                "a",
                "-block-hash-file",
                "-",
                "-keep-services-json",
                "-",
            ],
        ] {
            let e = cfg(&args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(e.exit_code(), 2);
        }
        let bad = parse([
            "keep-block-check",
            "-config",
            "a",
            "-block-hash-file",
            "f",
            "-prefix",
            "XY",
        ])
        .err()
        .unwrap();
        let msg = crate::cli::describe_clap_error(&bad).unwrap();
        assert!(
            msg.starts_with("-prefix \"XY\" is not a hash prefix"),
            "{msg}"
        );
        assert!(parse([
            "keep-block-check",
            "-config",
            "a",
            "-block-hash-file",
            "f",
            "--probe",
            "--read"
        ])
        .is_err());
        for f in ["-version", "--version", "-help"] {
            assert!(parse(["keep-block-check", f]).is_err(), "{f}");
        }
    }
}
