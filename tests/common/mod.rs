//! Shared harness for end-to-end tests: start keepstore-sim clusters in
//! process, write settings and services files, run the real `keep-rsync`
//! binary against them, and look at what happened on both sides.

#![allow(dead_code)]

pub mod azure;
pub mod minio;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::Output;

use keep_rsync::protocol::BlockHash;
use keepstore_sim::{Cluster, ClusterConfig, Faults, SizeRange};

pub const SRC_TOKEN: &str = "srcroottoken4p2m9x7kq1z8w3v5b6n0c";
pub const DST_TOKEN: &str = "dstroottoken8h3j6k1l0p2o9i4u7y5t";
pub const SRC_KEY: &str = "srcsigningkeyq7w8e9r0t1y2u3i4o5p6a7s8d9f0g1h2j3k4l5";
pub const DST_KEY: &str = "dstsigningkeyz1x2c3v4b5n6m7a8s9d0f1g2h3j4k5l6q7w8e9";

/// Sizes used by most tests: small blocks plus a few of 100–300 KiB.
pub fn sizes() -> Vec<SizeRange> {
    vec![
        SizeRange { min: 1, max: 4096 },
        SizeRange {
            min: 100 << 10,
            max: 300 << 10,
        },
    ]
}

/// Small blocks (2 bytes to 8 KiB) keep fault tests fast.
pub fn small() -> Vec<SizeRange> {
    vec![SizeRange { min: 2, max: 8192 }]
}

/// Faults built by `f` from none.
pub fn faults(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut x = Faults::default();
    f(&mut x);
    x
}

/// The same faults on every service of `c`, each with its own seed.
pub fn set_all(c: &Cluster, f: &Faults) {
    for i in 0..c.len() {
        let mut g = f.clone();
        g.seed = f.seed.wrapping_add(i as u64 * 7919);
        c.set_faults(i, g);
    }
}

pub fn clear_all(c: &Cluster) {
    for i in 0..c.len() {
        c.set_faults(i, Faults::default());
    }
}

/// A JSON file (a report), parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A source and a destination cluster, with their files in a temp dir.
pub struct Pair {
    pub src: Cluster,
    pub dst: Cluster,
    pub dir: tempfile::TempDir,
}

pub fn signed(services: usize, token: &str, key: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new(services, token);
    c.signing_key = Some(key.to_string());
    c.enforce_signatures = true;
    c
}

impl Pair {
    /// Both sides with signatures enforced (different keys), 4 + 4 services.
    pub async fn start() -> Pair {
        Pair::with(signed(4, SRC_TOKEN, SRC_KEY), signed(4, DST_TOKEN, DST_KEY)).await
    }

    pub async fn with(mut src: ClusterConfig, mut dst: ClusterConfig) -> Pair {
        if src.uuid_prefix == dst.uuid_prefix {
            src.uuid_prefix = "aaaaa".into();
            dst.uuid_prefix = "bbbbb".into();
        }
        let src = Cluster::start(src).await.expect("start source cluster");
        let dst = Cluster::start(dst)
            .await
            .expect("start destination cluster");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Pair { src, dst, dir };
        write_private(&p.path("src.conf"), &p.src.settings_text());
        write_private(&p.path("dst.conf"), &p.dst.settings_text());
        std::fs::write(p.path("src.json"), p.src.services_json().to_string()).unwrap();
        std::fs::write(p.path("dst.json"), p.dst.services_json().to_string()).unwrap();
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The usual arguments: settings files and services-list files.
    pub fn base_args(&self) -> Vec<String> {
        vec![
            "-src".into(),
            self.path("src.conf").display().to_string(),
            "-dst".into(),
            self.path("dst.conf").display().to_string(),
            "-src-keep-services-json".into(),
            self.path("src.json").display().to_string(),
            "-dst-keep-services-json".into(),
            self.path("dst.json").display().to_string(),
            "-src-blob-signature-ttl".into(),
            "336h".into(),
        ]
    }

    /// Run keep-rsync with the base arguments plus `extra`.
    pub async fn rsync(&self, extra: &[&str]) -> Run {
        let mut args = self.base_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        run_rsync(&args).await
    }

    /// Every destination holder of `h`, in service order.
    pub fn dst_holders(&self, h: &BlockHash) -> Vec<usize> {
        (0..self.dst.len())
            .filter(|&i| self.dst.has_block(i, h))
            .collect()
    }

    /// Assert each block sits on exactly the first `n` writable destination
    /// services of its probe order, byte-identical to the source.
    pub fn assert_placed(&self, blocks: &[(BlockHash, u64)], n: usize) {
        let ro = &self.dst.config().read_only;
        for (h, size) in blocks {
            let want: Vec<usize> = {
                let mut v: Vec<usize> = self
                    .dst
                    .probe_order(h)
                    .into_iter()
                    .filter(|i| !ro.contains(i))
                    .take(n)
                    .collect();
                v.sort();
                v
            };
            assert_eq!(self.dst_holders(h), want, "placement of {h}+{size}");
            let src_copy = (0..self.src.len())
                .find_map(|i| self.src.get_block(i, h))
                .expect("source copy");
            for &i in &want {
                assert_eq!(
                    self.dst.get_block(i, h).as_deref(),
                    Some(&src_copy[..]),
                    "content of {h} on dst {i}"
                );
            }
        }
    }

    pub fn total_dst_puts(&self) -> u64 {
        (0..self.dst.len()).map(|i| self.dst.counters(i).puts).sum()
    }

    pub fn total_src_gets(&self) -> u64 {
        (0..self.src.len()).map(|i| self.src.counters(i).gets).sum()
    }
}

pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Output of one keep-rsync run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panic with the output when the exit code is not `code`.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Whether this is a CI run: `CI` is `true` or `1` (`.ci/run` sets it).
/// There every test tool is installed, so a test that would skip fails.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Report that `test` did not run because `why` (a tool it needs is
/// missing), after which the caller returns: `return skip("name", &why);`.
///
/// Prints `SKIPPED <test>: <why>` on stderr: into the test's captured output
/// (`--show-output`, `--nocapture`) and, as libtest captures only
/// `print!`/`eprint!`, straight to the terminal on a plain `cargo test` too.
/// Under `CI=true` (or `1`) it panics instead: CI installs every tool with
/// scripts/install-test-deps.sh, so a skip there is a failure.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    if in_ci() {
        panic!(
            "{line}\nCI is set (CI={}), and under CI a skip is a failure: CI must install \
             every test tool (scripts/install-test-deps.sh, as scripts/test.sh runs it, \
             with INSTALL_SLURM=1 for Slurm)",
            std::env::var("CI").unwrap_or_default()
        );
    }
    eprintln!("{line}");
    let nocapture = std::env::args().any(|a| a == "--nocapture")
        || std::env::var("RUST_TEST_NOCAPTURE").is_ok_and(|v| v != "0");
    if !nocapture {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// Why `promtool` (Debian package `prometheus`, installed by
/// scripts/install-test-deps.sh) cannot be run, if it cannot: the caller
/// then calls [`skip`].
pub fn promtool_missing() -> Option<String> {
    match std::process::Command::new("promtool")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("promtool --version failed: {}", o.status)),
        Err(e) => Some(format!(
            "promtool is not installed ({e}): run scripts/install-test-deps.sh (Debian package \
             prometheus)"
        )),
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keep-rsync")
}

/// Run keep-rsync with `args` (fast retries so fault tests stay quick).
pub async fn run_rsync(args: &[String]) -> Run {
    run_rsync_env(args, &[]).await
}

pub async fn run_rsync_env(args: &[String], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .arg("--retry-backoff")
        .arg("5ms")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("keep-rsync finished within 120 s")
        .expect("keep-rsync ran");
    Run::from(out)
}

/// The keep-block-check binary.
pub fn check_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keep-block-check")
}

/// Run `bin` with `args` (fast retries), feeding `stdin` when given.
pub async fn run_with_stdin(bin: &str, args: &[String], stdin: Option<&[u8]>) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .arg("--retry-backoff")
        .arg("5ms")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn");
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        // A child that exits early closes its stdin: not an error here.
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
        });
    }
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("finished within 120 s")
    .expect("ran");
    Run::from(out)
}
