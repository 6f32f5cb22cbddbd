//! A real Azure Blob service for tests: Azurite (Microsoft's emulator, npm
//! `azurite`, installed by scripts/install-test-deps.sh into
//! `.tools/azurite`) over HTTPS with a certificate made here, on an ephemeral
//! port of 127.0.0.1, with an account and key of its own (`AZURITE_ACCOUNTS`).
//! It checks SharedKey signatures and Content-MD5.
//!
//! keep-rsync is given the volume as keepstore is, with no endpoint of its
//! own: `https://ACCOUNT.blob.azurite.test:PORT/CONTAINER`
//! (`StorageBaseURL: azurite.test:PORT`). That name reaches Azurite only for
//! the programs run by [`Azurite::run`]: they run in a private mount
//! namespace (`unshare -m`, as root, which CI is) where `/etc/hosts` is a
//! copy with `127.0.0.1 ACCOUNT.blob.azurite.test`, and with the
//! certificate in `SSL_CERT_FILE`. The test's own client ([`Azurite::put_blob`]
//! and the rest) resolves the name itself.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keep_rsync::store::azure::shared_key::{SharedKey, Signed};

pub const ACCOUNT: &str = "keeprsynctest";
/// Base64 of 48 bytes nobody uses elsewhere.
pub const KEY: &str = "a2VlcC1yc3luYy1henVyaXRlLXRlc3Qta2V5LW5vdC1hLXJlYWwtb25lLTAxMjM0NTY3";
pub const BASE: &str = "azurite.test";

const READY_WITHIN: Duration = Duration::from_secs(30);

/// The azurite-blob to run: `$AZURITE_BLOB`, else
/// `<repo>/.tools/azurite/node_modules/.bin/azurite-blob`.
pub fn azurite_blob() -> Result<PathBuf, String> {
    let p = match std::env::var_os("AZURITE_BLOB").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".tools/azurite/node_modules/.bin/azurite-blob"),
    };
    if !p.is_file() {
        return Err(format!(
            "Azurite is not installed ({} is missing, AZURITE_BLOB unset): run \
             scripts/install-test-deps.sh",
            p.display()
        ));
    }
    Ok(p)
}

/// Why `ACCOUNT.blob.azurite.test` cannot be mapped to 127.0.0.1 for a
/// child process, if it cannot (not root, no `unshare`).
fn hosts_mapping_missing(dir: &Path) -> Option<String> {
    let hosts = dir.join("probe-hosts");
    std::fs::write(&hosts, "127.0.0.1 probe.azurite.test\n").ok()?;
    let out = Command::new("unshare")
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg("mount --bind \"$0\" /etc/hosts && getent hosts probe.azurite.test")
        .arg(&hosts)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("127.0.0.1") => {
            None
        }
        Ok(o) => Some(format!(
            "cannot map a host name to 127.0.0.1 in a private mount namespace (unshare -m + \
             mount --bind over /etc/hosts needs root): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("unshare cannot be run: {e}")),
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A running Azurite; killed on drop, its files removed.
pub struct Azurite {
    pub port: u16,
    /// `StorageBaseURL` of its volumes: `azurite.test:PORT`.
    pub base_url: String,
    /// The certificate, for `SSL_CERT_FILE`.
    pub cert: PathBuf,
    /// The `/etc/hosts` of [`Azurite::run`].
    pub hosts: PathBuf,
    pub dir: PathBuf,
    http: reqwest::Client,
    key: SharedKey,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Azurite {
    /// Start Azurite, or `None` after `skip(test, why)` when it (or the
    /// host-name mapping) is missing; under CI that skip panics.
    pub async fn start(test: &str) -> Option<Azurite> {
        let bin = match azurite_blob() {
            Ok(b) => b,
            Err(why) => {
                super::skip(test, &why);
                return None;
            }
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        if let Some(why) = hosts_mapping_missing(&dir) {
            super::skip(test, &why);
            return None;
        }
        let host = format!("{ACCOUNT}.blob.{BASE}");
        let cert = rcgen::generate_simple_self_signed(vec![host.clone(), "127.0.0.1".into()])
            .expect("self-signed certificate");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
        let hosts = dir.join("hosts");
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        text.push_str(&format!("\n127.0.0.1 {host}\n"));
        std::fs::write(&hosts, text).unwrap();
        let log = dir.join("azurite.log");
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let out = std::fs::File::create(&log).unwrap();
            let err = out.try_clone().unwrap();
            let mut child = Command::new(&bin)
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .current_dir(&data)
                .arg("--cert")
                .arg(&cert_path)
                .arg("--key")
                .arg(&key_path)
                .args([
                    "--skipApiVersionCheck",
                    "--loose",
                    "--silent",
                    "--inMemoryPersistence",
                    "--disableTelemetry",
                ])
                .env("AZURITE_ACCOUNTS", format!("{ACCOUNT}:{KEY}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let t0 = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last = std::fs::read_to_string(&log).unwrap_or_default();
                    if last.contains("EADDRINUSE") {
                        break;
                    }
                    panic!("Azurite exited ({status}) before answering:\n{last}");
                }
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    let http = reqwest::Client::builder()
                        .add_root_certificate(
                            reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap(),
                        )
                        .resolve(&host, addr)
                        .build()
                        .unwrap();
                    return Some(Azurite {
                        port,
                        base_url: format!("{BASE}:{port}"),
                        cert: cert_path,
                        hosts,
                        dir,
                        http,
                        key: SharedKey::new(ACCOUNT, KEY).unwrap(),
                        child,
                        log,
                        _dir: tmp,
                    });
                }
                if t0.elapsed() > READY_WITHIN {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "Azurite did not listen on 127.0.0.1:{port} within {READY_WITHIN:?}:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("Azurite found no free port in 3 tries:\n{last}");
    }

    pub fn url(&self, path: &str) -> url::Url {
        format!("https://{ACCOUNT}.blob.{}/{path}", self.base_url)
            .parse()
            .unwrap()
    }

    /// A signed request of the test's own.
    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        ms: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> reqwest::Response {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut headers = vec![("x-ms-date", date.as_str()), ("x-ms-version", "2021-12-02")];
        headers.extend_from_slice(ms);
        let auth = self.key.authorization(
            method.as_str(),
            &url,
            &Signed {
                content_length: body.map(|b| b.len() as u64),
                content_md5: None,
                ms_headers: &headers,
            },
        );
        let mut req = self.http.request(method, url);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        req.header("authorization", auth)
            .send()
            .await
            .expect("request to Azurite")
    }

    pub async fn create_container(&self, name: &str) {
        let mut u = self.url(name);
        u.set_query(Some("restype=container"));
        let r = self.send(reqwest::Method::PUT, u, &[], Some(b"")).await;
        assert_eq!(
            r.status(),
            201,
            "create container {name}: {:?}",
            r.text().await
        );
    }

    /// Put `data` as block blob `name`, without Content-MD5 (so that a blob
    /// whose bytes are not its name's can be made).
    pub async fn put_blob(&self, container: &str, name: &str, data: &[u8]) {
        let r = self
            .send(
                reqwest::Method::PUT,
                self.url(&format!("{container}/{name}")),
                &[("x-ms-blob-type", "BlockBlob")],
                Some(data),
            )
            .await;
        assert_eq!(r.status(), 201, "put {name}: {:?}", r.text().await);
    }

    /// Replace blob `name`'s metadata with `meta` (keepstore trashes a
    /// block by setting `expires_at`).
    pub async fn set_metadata(&self, container: &str, name: &str, meta: &[(&str, &str)]) {
        let mut u = self.url(&format!("{container}/{name}"));
        u.set_query(Some("comp=metadata"));
        let names: Vec<String> = meta.iter().map(|(k, _)| format!("x-ms-meta-{k}")).collect();
        let ms: Vec<(&str, &str)> = names
            .iter()
            .zip(meta)
            .map(|(n, (_, v))| (n.as_str(), *v))
            .collect();
        let r = self.send(reqwest::Method::PUT, u, &ms, Some(b"")).await;
        assert_eq!(
            r.status(),
            200,
            "set metadata of {name}: {:?}",
            r.text().await
        );
    }

    /// Blob `name`'s bytes and `x-ms-meta-*` headers, or `None` (404).
    pub async fn get_blob(
        &self,
        container: &str,
        name: &str,
    ) -> Option<(Vec<u8>, Vec<(String, String)>)> {
        let r = self
            .send(
                reqwest::Method::GET,
                self.url(&format!("{container}/{name}")),
                &[],
                None,
            )
            .await;
        if r.status() == 404 {
            return None;
        }
        assert_eq!(r.status(), 200, "get {name}");
        let meta = r
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-ms-meta-"))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Some((r.bytes().await.unwrap().to_vec(), meta))
    }

    /// Blob `name`'s Last-Modified.
    pub async fn last_modified(&self, container: &str, name: &str) -> std::time::SystemTime {
        let r = self
            .send(
                reqwest::Method::HEAD,
                self.url(&format!("{container}/{name}")),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status(), 200, "head {name}");
        let v = r.headers()["last-modified"].to_str().unwrap().to_string();
        httpdate::parse_http_date(&v).unwrap()
    }

    /// Every blob name of `container`, in order, and the number of List
    /// Blobs pages that took.
    pub async fn list_names(&self, container: &str) -> (Vec<String>, usize) {
        let mut names = Vec::new();
        let mut marker = String::new();
        let mut pages = 0;
        loop {
            let mut u = self.url(container);
            u.query_pairs_mut()
                .append_pair("restype", "container")
                .append_pair("comp", "list");
            if !marker.is_empty() {
                u.query_pairs_mut().append_pair("marker", &marker);
            }
            let r = self.send(reqwest::Method::GET, u, &[], None).await;
            assert_eq!(r.status(), 200, "list {container}");
            let text = r.text().await.unwrap();
            pages += 1;
            names.extend(between_all(&text, "<Name>", "</Name>"));
            marker = between_all(&text, "<NextMarker>", "</NextMarker>")
                .pop()
                .unwrap_or_default();
            if marker.is_empty() {
                return (names, pages);
            }
        }
    }

    /// Run `bin` with `args` as keepstore would see the service: in a
    /// private mount namespace whose /etc/hosts maps the account's host name
    /// to 127.0.0.1, trusting the certificate (`SSL_CERT_FILE`), with fast
    /// retries; `stdin` fed when given.
    pub async fn run(&self, bin: &str, args: &[String], stdin: Option<&[u8]>) -> super::Run {
        self.run_trusting(bin, args, stdin, &self.cert).await
    }

    /// [`Azurite::run`] with `cert_file` as `SSL_CERT_FILE` (another
    /// certificate: Azurite's is then not trusted).
    pub async fn run_trusting(
        &self,
        bin: &str,
        args: &[String],
        stdin: Option<&[u8]>,
        cert_file: &Path,
    ) -> super::Run {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.arg("-m")
            .arg("sh")
            .arg("-c")
            .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
            .arg(&self.hosts)
            .arg(bin)
            .args(args)
            .arg("--retry-backoff")
            .arg("5ms")
            .env("SSL_CERT_FILE", cert_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("spawn unshare");
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            let data = data.to_vec();
            tokio::spawn(async move {
                let _ = w.write_all(&data).await;
            });
        }
        let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("finished within 300 s")
            .expect("ran");
        super::Run::from(out)
    }

    /// One Azure volume entry of a volumes file (YAML) for `container`,
    /// with `extra` lines (indented two spaces, e.g. `  ReadOnly: true\n`).
    pub fn volume_entry(&self, uuid: &str, container: &str, extra: &str) -> String {
        format!(
            "{uuid}:\n  Driver: Azure\n  DriverParameters:\n    StorageAccountName: {ACCOUNT}\n    \
             StorageAccountKey: {KEY}\n    StorageBaseURL: {}\n    ContainerName: {container}\n    \
             ListBlobsRetryDelay: 10ms\n  Replication: 1\n{extra}",
            self.base_url
        )
    }

    /// What Azurite printed (little: it runs with --silent).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(close) else { break };
        out.push(rest[..j].to_string());
        rest = &rest[j + close.len()..];
    }
    out
}
