//! A real S3 server for tests: versitygw (Apache-2.0, an S3 gateway nobody
//! here wrote) with its posix backend in a temp dir, on 127.0.0.1 only.
//! scripts/install-test-deps.sh builds it into `.tools/bin`.
//!
//! It checks SigV4 signatures (bad one: 403 SignatureDoesNotMatch; unknown
//! access key: 404 XAdminUserNotFound), `x-amz-content-sha256` (required on
//! every signed request) and Content-MD5 (400 BadDigest).
//!
//! The posix layout: a directory `root/<bucket>` is a bucket (a plain mkdir
//! is enough, see [`S3Server::create_bucket`]); object `a/b/c` is the file
//! `root/<bucket>/a/b/c`, with its ETag, content type and checksums in
//! `user.*` xattrs. A file written there directly is listed and served (no
//! ETag); one changed in place keeps its old ETag, so a test can corrupt an
//! object behind the server's back ([`S3Server::corrupt_object`]).
//!
//! Path style (`http://127.0.0.1:PORT/bucket/key`) always works. Virtual-host
//! style (`http://bucket.localhost:PORT/key`) works too (the server runs with
//! `--virtual-domain localhost`), but glibc does not resolve `*.localhost`:
//! a client needs its own resolver override (reqwest's
//! `ClientBuilder::resolve`) or `/etc/hosts` entries. curl resolves it itself.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS: &str = "AKIAKEEPRSYNCTEST01";
pub const SECRET: &str = "keeprsynctestsecret5Xq2Wm8Zr4Tn7Yb1Vc6Hd3Jf";
pub const REGION: &str = "us-east-1";

/// Waiting for the server to answer: it takes about 0.1 s.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A running versitygw; killed on drop, its files removed.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access: String,
    pub secret: String,
    pub region: String,
    pub port: u16,
    /// The posix backend's directory: one subdirectory per bucket.
    pub root: PathBuf,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The versitygw to run: `$VERSITYGW`, else `<repo>/.tools/bin/versitygw`,
/// else `versitygw` on PATH; Err says why there is none that runs.
pub fn versitygw() -> Result<PathBuf, String> {
    let candidate = if let Some(p) = std::env::var_os("VERSITYGW").filter(|p| !p.is_empty()) {
        PathBuf::from(p)
    } else {
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/versitygw");
        if local.is_file() {
            local
        } else {
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join("versitygw"))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    format!(
                        "versitygw is not installed (not in {} nor on PATH, VERSITYGW unset): \
                         run scripts/install-test-deps.sh",
                        local.display()
                    )
                })?
        }
    };
    match Command::new(&candidate)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(candidate),
        Ok(o) => Err(format!(
            "{} --version failed: {}",
            candidate.display(),
            o.status
        )),
        Err(e) => Err(format!("{} cannot be run: {e}", candidate.display())),
    }
}

/// Why versitygw cannot be run, if it cannot: the caller then calls `skip`.
pub fn versitygw_missing() -> Option<String> {
    versitygw().err()
}

/// A free port on 127.0.0.1 (free when asked: another process may take it
/// before versitygw binds it, so [`S3Server::start`] retries on another).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The status line of `GET /health`, if the server answered at all.
fn health(port: u16) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    Some(text.lines().next().unwrap_or("").to_string())
}

/// S3's bucket-name rules, as versitygw enforces them (InvalidBucketName).
fn valid_bucket(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.parse::<Ipv4Addr>().is_err()
}

impl S3Server {
    /// Start versitygw, or `None` after `skip(test_name, why)` when it is
    /// not installed (under CI that skip panics). Panics, with the server's
    /// output, when it does not answer within 20 s.
    pub fn start(test_name: &str) -> Option<S3Server> {
        Self::start_with(test_name, &[])
    }

    /// [`S3Server::start`] with more versitygw flags before the backend
    /// (e.g. `--readonly`: every write refused with 403 AccessDenied).
    pub fn start_with(test_name: &str, flags: &[&str]) -> Option<S3Server> {
        let bin = match versitygw() {
            Ok(b) => b,
            Err(why) => {
                super::skip(test_name, &why);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("create the posix root");
        let log = dir.path().join("versitygw.log");
        let mut last = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let out = std::fs::File::create(&log).expect("create versitygw.log");
            let err = out.try_clone().expect("dup versitygw.log");
            let mut cmd = Command::new(&bin);
            // Settings come from flags only, not from a stray environment.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("VGW_")
                    || k.starts_with("ROOT_ACCESS_")
                    || k.starts_with("ROOT_SECRET_")
                {
                    cmd.env_remove(&*k);
                }
            }
            cmd.arg("--access")
                .arg(ACCESS)
                .arg("--secret")
                .arg(SECRET)
                .arg("--region")
                .arg(REGION)
                .arg("--port")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--virtual-domain")
                .arg("localhost")
                .arg("--health")
                .arg("/health")
                // Without it every response says `Connection: close`.
                .arg("--keep-alive")
                .arg("--quiet")
                .args(flags)
                .arg("posix")
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let t0 = Instant::now();
            loop {
                if let Some(status) = child.try_wait().expect("wait for versitygw") {
                    last = std::fs::read_to_string(&log).unwrap_or_default();
                    if last.contains("address already in use") {
                        break; // the port was taken meanwhile: another one
                    }
                    panic!("versitygw exited ({status}) before answering:\n{last}");
                }
                match health(port) {
                    Some(line) if line.contains(" 200 ") => {
                        return Some(S3Server {
                            endpoint: format!("http://127.0.0.1:{port}"),
                            access: ACCESS.to_string(),
                            secret: SECRET.to_string(),
                            region: REGION.to_string(),
                            port,
                            root,
                            child,
                            log,
                            _dir: dir,
                        });
                    }
                    _ if t0.elapsed() > READY_WITHIN => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "versitygw did not answer GET /health on 127.0.0.1:{port} within \
                             {READY_WITHIN:?}:\n{}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        panic!("versitygw found no free port in 3 tries:\n{last}");
    }

    /// Create bucket `name`: a directory in the posix root is a bucket
    /// (single-account mode needs no ACL on it). `name` must follow S3's
    /// rules (3 to 63 of a-z 0-9 . -), or the server refuses every request.
    pub fn create_bucket(&self, name: &str) {
        assert!(
            valid_bucket(name),
            "{name:?} is not a valid S3 bucket name (3-63 of a-z 0-9 . -, alphanumeric at both \
             ends): versitygw would answer InvalidBucketName"
        );
        let path = self.root.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    }

    /// The file that holds object `key` of `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        assert!(
            !key.is_empty()
                && key
                    .split('/')
                    .all(|seg| !seg.is_empty() && seg != "." && seg != ".."),
            "object key {key:?} has no plain file path (empty, `.` or `..` segment)"
        );
        let mut p = self.root.join(bucket);
        p.extend(key.split('/'));
        p
    }

    /// Write object `key` straight to disk, behind the server's back: it is
    /// listed and served like any other, but has no ETag.
    pub fn write_direct(&self, bucket: &str, key: &str, data: &[u8]) {
        let path = self.object_path(bucket, key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create object's directories");
        }
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Flip the first byte of object `key` in place: same size, same (now
    /// wrong) ETag, different content.
    pub fn corrupt_object(&self, bucket: &str, key: &str) {
        use std::io::{Seek, SeekFrom};
        let path = self.object_path(bucket, key);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut b = [0u8; 1];
        f.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
    }

    /// Virtual-host style endpoint of `bucket`: `http://BUCKET.localhost:PORT`
    /// (the client must resolve it to 127.0.0.1 itself, see the module doc).
    pub fn vhost_endpoint(&self, bucket: &str) -> String {
        format!("http://{bucket}.localhost:{}", self.port)
    }

    /// An rclone remote `[name]` for this server (path style), for an rclone
    /// config file. Run rclone without AWS_CA_BUNDLE in its environment:
    /// rclone 1.60 (Debian 12) then fails every S3 request.
    pub fn rclone_remote(&self, name: &str) -> String {
        format!(
            "[{name}]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = {}\n\
             secret_access_key = {}\nregion = {}\nendpoint = {}\nforce_path_style = true\n",
            self.access, self.secret, self.region, self.endpoint
        )
    }

    /// What the server printed so far (little: it runs with --quiet).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
