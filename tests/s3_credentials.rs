//! End-to-end tests of the S3 credential chain (src/store/aws_credentials.rs)
//! against a real MinIO whose STS gives temporary credentials and which
//! refuses their keys without their session token (tests/common/minio.rs):
//! an instance role served by a test IMDSv2 endpoint (refreshed before its
//! Expiration; a refused token refreshed and the copy going on), a profile
//! of a shared credentials file, container credentials and web identity
//! served the same way, and a chain that finds nothing (exit 2, naming each
//! source tried). No key, secret, session token or IMDS token appears in
//! any output.
//!
//! The IMDS, container and STS endpoints here are a few lines of test code
//! on 127.0.0.1 speaking those services' documented exchanges, reached
//! through the variables the AWS SDKs honour; the credentials they hand out
//! are MinIO's own, so every copy is judged by a real S3 server.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::minio::{Minio, TempCreds};
use common::{write_private, Run};
use keep_rsync::protocol::BlockHash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKET: &str = "keep-creds";
const VOL: &str = "zzzzz-nyw5e-000000000000301";
const IMDS_TOKEN: &str = "imdsSessionTokenQz8Xc4Vb6Nm2";
const ECS_AUTH: &str = "ecsAuthorizationTokenLk3Jh5Gf7";
const WEB_TOKEN: &str = "webIdentityJwtPo9Iu8Yt7Rr6";
const ROLE: &str = "keep-rsync-role";

type Block = (BlockHash, Vec<u8>);

/// `n` small blocks, the same for the same `seed`.
fn blocks(n: usize, seed: u8) -> Vec<Block> {
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..(100 + i * 37))
                .map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8))
                .collect();
            (BlockHash::of(&data), data)
        })
        .collect()
}

/// A Directory volume holding `blocks` (keepstore's layout).
fn source_dir(root: &Path, blocks: &[Block]) {
    for (h, data) in blocks {
        let hex = h.to_string();
        let d = root.join(&hex[..3]);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(&hex), data).unwrap();
    }
}

/// The blocks of a Directory volume, sorted.
fn dir_blocks(root: &Path) -> Vec<Block> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(root).unwrap() {
        let d = d.unwrap().path();
        if d.is_dir() {
            for f in std::fs::read_dir(&d).unwrap() {
                let f = f.unwrap().path();
                let data = std::fs::read(&f).unwrap();
                out.push((BlockHash::of(&data), data));
            }
        }
    }
    out.sort();
    out
}

/// A volumes file with the MinIO bucket as one S3 volume; `keys` are
/// written into it when given (else the credential chain finds them).
fn volumes_file(dir: &Path, name: &str, minio: &Minio, keys: Option<(&str, &str)>) -> String {
    let keys = keys
        .map(|(a, s)| format!("    AccessKeyID: {a}\n    SecretAccessKey: {s}\n"))
        .unwrap_or_default();
    let path = dir.join(name);
    write_private(
        &path,
        &format!(
            "{VOL}:\n  Driver: S3\n  DriverParameters:\n    Bucket: {BUCKET}\n    \
             Endpoint: {}\n    Region: {}\n{keys}    PrefixLength: 0\n  Replication: 1\n",
            minio.endpoint,
            common::minio::REGION
        ),
    );
    path.to_string_lossy().into_owned()
}

/// Run keep-rsync with `args` in an environment of no AWS settings but
/// `env`: HOME is `home` (no ~/.aws of the host's), and IMDS is a closed
/// port unless `env` says otherwise (never a real 169.254.169.254).
async fn run(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(common::bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", closed_port())
        .args(args)
        .args(["--retry-backoff", "5ms"])
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("keep-rsync finished within 120 s")
        .expect("keep-rsync ran");
    Run::from(out)
}

/// `http://127.0.0.1:PORT` where nothing listens.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// Copy `want` from a Directory volume into the bucket with the chain's
/// credentials (`env`, `-v`, a report): the run and the report's text.
async fn copy_in(dir: &Path, minio: &Minio, want: &[Block], env: &[(&str, &str)]) -> (Run, String) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    source_dir(&src, want);
    let vols = volumes_file(dir, "dst.yml", minio, None);
    let report = dir.join("report.json");
    let r = run(
        dir,
        &[
            "--src-volume-dir",
            src.to_str().unwrap(),
            "--dst-volumes",
            &vols,
            "--report",
            report.to_str().unwrap(),
            "-v",
        ],
        env,
    )
    .await;
    let report = std::fs::read_to_string(&report).unwrap_or_default();
    (r, report)
}

/// What the bucket holds, read back with the root user's keys: every block
/// of `want`, whole.
async fn assert_bucket_holds(dir: &Path, minio: &Minio, want: &[Block]) {
    let back = dir.join("back");
    std::fs::create_dir_all(&back).unwrap();
    let vols = volumes_file(
        dir,
        "root.yml",
        minio,
        Some((common::minio::ROOT_USER, common::minio::ROOT_PASSWORD)),
    );
    run(
        dir,
        &[
            "--src-volumes",
            &vols,
            "--dst-volume-dir",
            back.to_str().unwrap(),
        ],
        &[],
    )
    .await
    .expect(0);
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(dir_blocks(&back), want, "the bucket's blocks");
}

/// No secret of `creds` nor a test token in `texts`.
fn assert_no_secrets(creds: &[TempCreds], texts: &[&str]) {
    for t in texts {
        for c in creds {
            assert!(!t.contains(&c.secret), "a secret key in:\n{t}");
            assert!(!t.contains(&c.token), "a session token in:\n{t}");
        }
        for s in [
            IMDS_TOKEN,
            ECS_AUTH,
            WEB_TOKEN,
            common::minio::ROOT_PASSWORD,
        ] {
            assert!(!t.contains(s), "{s} in:\n{t}");
        }
    }
}

/// Credentials one of the test services hands out.
#[derive(Clone)]
struct Served {
    creds: TempCreds,
    expires: SystemTime,
}

/// A test IMDSv2 + container-credentials + STS endpoint on 127.0.0.1:
/// each credentials answer is the next of its script (the last repeats).
struct CredServer {
    url: String,
    /// Credentials answers given (IMDS role GETs, container GETs, STS
    /// calls), and IMDS token PUTs.
    fetches: Arc<AtomicUsize>,
    token_puts: Arc<AtomicUsize>,
}

impl CredServer {
    async fn start(script: Vec<Served>) -> CredServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let token_puts = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (f, t) = (fetches.clone(), token_puts.clone());
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let (f, t, script) = (f.clone(), t.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve(c, &f, &t, &script).await;
                });
            }
        });
        CredServer {
            url,
            fetches,
            token_puts,
        }
    }
}

/// One request: read it, answer it, close.
async fn serve(
    mut c: tokio::net::TcpStream,
    fetches: &AtomicUsize,
    token_puts: &AtomicUsize,
    script: &Mutex<VecDeque<Served>>,
) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 8192];
    let (head, body) = loop {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&req).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if req.len() >= end + 4 + len {
                break (head, text[end + 4..].to_string());
            }
        }
    };
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let line = head.lines().next().unwrap_or("").to_string();
    let next = || {
        fetches.fetch_add(1, Ordering::SeqCst);
        let mut s = script.lock().unwrap();
        if s.len() > 1 {
            s.pop_front().unwrap()
        } else {
            s.front().cloned().expect("a script")
        }
    };
    let json = |s: Served| {
        format!(
            "{{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"{}\",\
             \"SecretAccessKey\":\"{}\",\"Token\":\"{}\",\"Expiration\":\"{}\"}}",
            s.creds.access,
            s.creds.secret,
            s.creds.token,
            humantime::format_rfc3339_seconds(s.expires)
        )
    };
    let imds_ok = header("x-aws-ec2-metadata-token").as_deref() == Some(IMDS_TOKEN);
    const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
    let (status, answer) = match line.split(' ').take(2).collect::<Vec<_>>()[..] {
        ["PUT", "/latest/api/token"] => {
            token_puts.fetch_add(1, Ordering::SeqCst);
            match header("x-aws-ec2-metadata-token-ttl-seconds") {
                Some(_) => (200, IMDS_TOKEN.to_string()),
                None => (400, String::new()),
            }
        }
        ["GET", _] if !imds_ok && line.contains(ROLES) => (401, String::new()),
        ["GET", p] if p == ROLES => (200, format!("{ROLE}\n")),
        ["GET", p] if p == format!("{ROLES}{ROLE}") => (200, json(next())),
        ["GET", "/ecs/creds"] => match header("authorization").as_deref() {
            Some(ECS_AUTH) => (200, json(next())),
            _ => (401, String::new()),
        },
        ["POST", "/sts/"]
            if body.contains("Action=AssumeRoleWithWebIdentity")
                && body.contains(&format!("WebIdentityToken={WEB_TOKEN}"))
                && body.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fkeep") =>
        {
            let s = next();
            (
                200,
                format!(
                    "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>\
                     <Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}\
                     </SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}\
                     </Expiration></Credentials></AssumeRoleWithWebIdentityResult>\
                     </AssumeRoleWithWebIdentityResponse>",
                    s.creds.access,
                    s.creds.secret,
                    s.creds.token,
                    humantime::format_rfc3339_seconds(s.expires)
                ),
            )
        }
        _ => (404, String::new()),
    };
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    c.write_all(resp.as_bytes()).await?;
    c.shutdown().await
}

fn in_an_hour(creds: &TempCreds) -> Served {
    Served {
        creds: creds.clone(),
        expires: SystemTime::now() + Duration::from_secs(3600),
    }
}

macro_rules! minio_or_skip {
    ($name:expr) => {
        match Minio::start($name) {
            Some(m) => m,
            None => return,
        }
    };
}

/// An instance role whose first credentials are already inside the
/// five-minute margin (still valid): they are replaced before they are
/// relied on, every block reaches the bucket, and IMDS was asked again (but
/// not on every request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_role_is_refreshed_before_it_expires() {
    let minio = minio_or_skip!("an_instance_role_is_refreshed_before_it_expires");
    let creds = minio.assume_roles(BUCKET, 2);
    let imds = CredServer::start(vec![
        Served {
            creds: creds[0].clone(),
            expires: SystemTime::now() + Duration::from_secs(4 * 60 + 50),
        },
        in_an_hour(&creds[1]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let want = blocks(30, 7);
    let (r, report) = copy_in(
        dir.path(),
        &minio,
        &want,
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)],
    )
    .await;
    r.expect(0);
    let fetches = imds.fetches.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&fetches),
        "IMDS credentials asked {fetches} times:\n{}",
        r.stderr
    );
    assert!(imds.token_puts.load(Ordering::SeqCst) >= 2);
    let from = format!("from IMDS role {ROLE} at {}", imds.url);
    assert!(r.stderr.contains(&from), "{}", r.stderr);
    assert!(
        r.stderr.contains("S3 credentials refreshed"),
        "{}",
        r.stderr
    );
    assert_no_secrets(&creds, &[&r.stdout, &r.stderr, &report]);
    assert_bucket_holds(dir.path(), &minio, &want).await;
}

/// IMDS first hands out keys with a session token MinIO does not know
/// (403 InvalidTokenId, as for an expired session): the requests it refuses
/// make one refresh, are sent again with the new credentials, and the copy
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_token_is_refreshed_and_the_copy_goes_on() {
    let minio = minio_or_skip!("a_refused_session_token_is_refreshed_and_the_copy_goes_on");
    let creds = minio.assume_roles(BUCKET, 2);
    let stale = TempCreds {
        token: creds[1].token.clone(), // another session's token
        ..creds[0].clone()
    };
    let imds = CredServer::start(vec![in_an_hour(&stale), in_an_hour(&creds[1])]).await;
    let dir = tempfile::tempdir().unwrap();
    let want = blocks(20, 11);
    let (r, report) = copy_in(
        dir.path(),
        &minio,
        &want,
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)],
    )
    .await;
    r.expect(0);
    assert_eq!(
        imds.fetches.load(Ordering::SeqCst),
        2,
        "one refresh for all the refused requests:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("refused the session token") && r.stderr.contains("InvalidTokenId"),
        "{}",
        r.stderr
    );
    assert_no_secrets(&creds, &[&r.stdout, &r.stderr, &report]);
    assert_bucket_holds(dir.path(), &minio, &want).await;
}

/// A profile of a shared credentials file with a session token: the copy
/// succeeds, so the token was sent. Without it, MinIO refuses every block,
/// and the message names the profile and its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_with_a_session_token() {
    let minio = minio_or_skip!("a_profile_with_a_session_token");
    let creds = minio.assume_roles(BUCKET, 1);
    let c = &creds[0];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aws-credentials");
    let text = |token: bool| {
        format!(
            "[default]\naws_access_key_id = AKIADEFAULTUNUSED\naws_secret_access_key = x\n\n\
             [keep]\naws_access_key_id = {}\naws_secret_access_key = {}\n{}",
            c.access,
            c.secret,
            if token {
                format!("aws_session_token = {}\n", c.token)
            } else {
                String::new()
            }
        )
    };
    write_private(&file, &text(true));
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
        ("AWS_PROFILE", "keep"),
    ];
    let want = blocks(10, 13);
    let (r, report) = copy_in(dir.path(), &minio, &want, &env).await;
    r.expect(0);
    let from = format!("from profile keep in {}", file.display());
    assert!(r.stderr.contains(&from), "{}", r.stderr);
    assert_no_secrets(&creds, &[&r.stdout, &r.stderr, &report]);
    assert_bucket_holds(dir.path(), &minio, &want).await;

    // The same keys without their token.
    write_private(&file, &text(false));
    let dir2 = tempfile::tempdir().unwrap();
    let (r, report) = copy_in(dir2.path(), &minio, &blocks(3, 17), &env).await;
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("InvalidTokenId") && r.stderr.contains(&from),
        "{}",
        r.stderr
    );
    assert_no_secrets(&creds, &[&r.stdout, &r.stderr, &report]);
}

/// Container credentials (ECS's AWS_CONTAINER_CREDENTIALS_FULL_URI, with
/// the authorization token read from its file) and web identity (EKS:
/// STS AssumeRoleWithWebIdentity at AWS_ENDPOINT_URL_STS) give MinIO's
/// temporary credentials, and the copies succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_credentials_and_web_identity() {
    let minio = minio_or_skip!("container_credentials_and_web_identity");
    let creds = minio.assume_roles(BUCKET, 1);
    let server = CredServer::start(vec![in_an_hour(&creds[0])]).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("ecs-token");
    write_private(&auth, &format!("{ECS_AUTH}\n"));
    let full = format!("{}/ecs/creds", server.url);
    let want = blocks(5, 19);
    let (r, report) = copy_in(
        dir.path(),
        &minio,
        &want,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                auth.to_str().unwrap(),
            ),
        ],
    )
    .await;
    r.expect(0);
    assert!(
        r.stderr
            .contains(&format!("from container credentials at {}", server.url)),
        "{}",
        r.stderr
    );
    assert_no_secrets(&creds, &[&r.stdout, &r.stderr, &report]);
    assert_bucket_holds(dir.path(), &minio, &want).await;

    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    write_private(&jwt, WEB_TOKEN);
    let sts = format!("{}/sts", server.url);
    let first = want;
    let want = blocks(5, 23);
    let (r, report) = copy_in(
        dir.path(),
        &minio,
        &want,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", jwt.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/keep"),
            ("AWS_ENDPOINT_URL_STS", &sts),
        ],
    )
    .await;
    r.expect(0);
    assert!(r.stderr.contains("from web identity role"), "{}", r.stderr);
    assert_no_secrets(&creds, &[&r.stdout, &r.stderr, &report]);
    assert_bucket_holds(dir.path(), &minio, &[first, want].concat()).await;
}

/// Nothing configured: no keys, no profile, and IMDS a closed port (or
/// switched off): exit 2 before any listing, naming every source tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_finds_nothing_exits_2_saying_what_it_tried() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let vols = dir.path().join("dst.yml");
    write_private(
        &vols,
        &format!(
            "{VOL}:\n  Driver: S3\n  DriverParameters:\n    Bucket: {BUCKET}\n    \
             Endpoint: {}\n    Region: us-east-1\n",
            closed_port()
        ),
    );
    for env in [
        vec![],
        vec![("AWS_EC2_METADATA_DISABLED", "true")],
        vec![("AWS_ACCESS_KEY_ID", "AKIAONLYTHEKEY")],
    ] {
        let r = run(
            dir.path(),
            &[
                "--src-volume-dir",
                src.to_str().unwrap(),
                "--dst-volumes",
                vols.to_str().unwrap(),
            ],
            &env,
        )
        .await;
        r.expect(2);
        for want in [
            VOL,
            "environment",
            "shared credentials file",
            "web identity",
            "container credentials",
            "IMDS",
        ] {
            assert!(r.stderr.contains(want), "{want}: {env:?}\n{}", r.stderr);
        }
        assert!(!r.stderr.contains("instance roles are not supported"));
    }
}
