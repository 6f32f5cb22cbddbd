//! A real MinIO for tests that need temporary credentials: its STS answers
//! `AssumeRole` signed with the root user's keys with an access key, secret
//! and session token, and it refuses a request that carries those keys
//! without their token (403 `InvalidTokenId`): so a request that succeeds
//! proves the token was sent. versitygw has no STS.
//!
//! MinIO (AGPL, test-only, never linked) is built by
//! scripts/install-test-deps.sh into `.tools/bin` (`$MINIO` overrides). The
//! STS calls and bucket creation go through boto3 in `.venv` (the AWS SDK
//! for Python, a SigV4 STS client nobody here wrote), so a test also skips
//! without it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ROOT_USER: &str = "keeprsyncminioroot";
pub const ROOT_PASSWORD: &str = "keeprsyncMinioRootSecret7Qw3";
pub const REGION: &str = "us-east-1";

const READY_WITHIN: Duration = Duration::from_secs(30);

/// Temporary credentials from MinIO's STS.
#[derive(Clone, Debug)]
pub struct TempCreds {
    pub access: String,
    pub secret: String,
    pub token: String,
}

/// A running MinIO; killed on drop, its files removed.
pub struct Minio {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The MinIO to run, or why there is none.
fn minio_bin() -> Result<PathBuf, String> {
    let bin = match std::env::var_os("MINIO").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => repo(".tools/bin/minio"),
    };
    match Command::new(&bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(bin),
        Ok(o) => Err(format!("{} --version failed: {}", bin.display(), o.status)),
        Err(e) => Err(format!(
            "MinIO is not installed ({} cannot be run: {e}): run scripts/install-test-deps.sh",
            bin.display()
        )),
    }
}

/// The venv's python with boto3, or why there is none.
fn boto3_python() -> Result<PathBuf, String> {
    let py = repo(".venv/bin/python");
    match Command::new(&py)
        .args(["-c", "import boto3"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(py),
        _ => Err(format!(
            "{} cannot import boto3: run scripts/install-test-deps.sh",
            py.display()
        )),
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn live(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /minio/health/live HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .is_some_and(|l| l.contains(" 200 "))
}

const STS_SCRIPT: &str = r#"
import json, sys, boto3
ep, user, password, bucket, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
kw = dict(endpoint_url=ep, aws_access_key_id=user, aws_secret_access_key=password, region_name="us-east-1")
if bucket:
    boto3.client("s3", **kw).create_bucket(Bucket=bucket)
sts = boto3.client("sts", **kw)
out = []
for i in range(n):
    c = sts.assume_role(RoleArn="arn:minio:iam:::role/keep-rsync-test", RoleSessionName="keep-rsync-test", DurationSeconds=3600)["Credentials"]
    out.append([c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]])
print(json.dumps(out))
"#;

impl Minio {
    /// Start MinIO, or `None` after `skip(test_name, why)` when it (or
    /// boto3) is not installed.
    pub fn start(test_name: &str) -> Option<Minio> {
        let (bin, _) = match minio_bin().and_then(|b| boto3_python().map(|p| (b, p))) {
            Ok(v) => v,
            Err(why) => {
                super::skip(test_name, &why);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let log = dir.path().join("minio.log");
        let mut last = String::new();
        for _attempt in 0..3 {
            let (port, console) = (free_port(), free_port());
            let out = std::fs::File::create(&log).unwrap();
            let err = out.try_clone().unwrap();
            let mut cmd = Command::new(&bin);
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("MINIO_") || k.starts_with("AWS_") {
                    cmd.env_remove(&*k);
                }
            }
            let mut child = cmd
                .env("MINIO_ROOT_USER", ROOT_USER)
                .env("MINIO_ROOT_PASSWORD", ROOT_PASSWORD)
                .env("MINIO_BROWSER", "off")
                .env("MINIO_UPDATE", "off")
                .env("HOME", dir.path())
                .arg("server")
                .arg("--quiet")
                .arg("--address")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--console-address")
                .arg(format!("127.0.0.1:{console}"))
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let t0 = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last = std::fs::read_to_string(&log).unwrap_or_default();
                    if last.contains("already in use") {
                        break;
                    }
                    panic!("minio exited ({status}) before answering:\n{last}");
                }
                if live(port) {
                    return Some(Minio {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        child,
                        log,
                        _dir: dir,
                    });
                }
                if t0.elapsed() > READY_WITHIN {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "minio did not answer within {READY_WITHIN:?}:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("minio found no free port in 3 tries:\n{last}");
    }

    /// Create `bucket` (when not empty) and ask STS for `n` sets of
    /// temporary credentials (an hour each; each set is a session of its
    /// own).
    pub fn assume_roles(&self, bucket: &str, n: usize) -> Vec<TempCreds> {
        let py = boto3_python().expect("boto3 (checked at start)");
        let out = Command::new(py)
            .args([
                "-c",
                STS_SCRIPT,
                &self.endpoint,
                ROOT_USER,
                ROOT_PASSWORD,
                bucket,
            ])
            .arg(n.to_string())
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_CONFIG_FILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .stdin(Stdio::null())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "boto3 AssumeRole against MinIO failed:\n{}\n--- minio:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.output()
        );
        let v: Vec<[String; 3]> = serde_json::from_slice(&out.stdout).expect("STS JSON");
        v.into_iter()
            .map(|[access, secret, token]| TempCreds {
                access,
                secret,
                token,
            })
            .collect()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
