//! S3's error codes as keep-rsync meets them (issue 30; docs/operations.md,
//! "What each S3 error does"): a fault proxy in front of a real S3 server
//! (versitygw, tests/common/s3.rs) answers chosen requests with an S3 error
//! document, or damages a PUT's body on its way so that the server itself
//! answers `BadDigest`, then passes the rest through byte for byte. Each
//! case copies blocks from a Directory volume into a bucket behind the
//! proxy and checks the exit code, the message, and the bucket: every
//! object there is byte-identical to its block, and a block that failed is
//! not there at all.
//!
//! Without versitygw (scripts/install-test-deps.sh) the tests are skipped
//! (`SKIPPED …` on stderr; a failure under CI).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::s3::S3Server;
use common::*;
use keep_rsync::protocol::BlockHash;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const S3VOL: &str = "zzzzz-nyw5e-000000000000020";

/// Which requests the proxy spoils.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// PUTs of data objects (`/BUCKET/HASH`), not `recent/` markers nor
    /// the write probe.
    DataPut,
    /// ListObjectsV2 pages.
    Listing,
}

/// What the proxy does to a spoiled request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answer with this status and S3 error code (the server never sees
    /// the request).
    Code(u16, &'static str),
    /// Flip a byte of the body on its way: the server's Content-MD5 check
    /// answers 400 BadDigest.
    Damage,
}

/// The fault proxy: the first `times` requests of each key that match
/// `target` get `fault`; every other request is forwarded unchanged over a
/// new connection to the server (presigned URLs sign the Host the client
/// used, the proxy's, so signatures stay valid).
struct FaultProxy {
    endpoint: String,
    /// Matching requests, by request path (and a listing page's prefix and
    /// token): the first `times` of each got the fault.
    dealt: Arc<Mutex<HashMap<String, u32>>>,
    times: u32,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A body by Content-Length or chunked (decoded); none for HEAD answers.
async fn read_body<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    head: &str,
    no_body: bool,
) -> std::io::Result<Vec<u8>> {
    if no_body {
        return Ok(Vec::new());
    }
    if let Some(n) = header(head, "content-length") {
        let mut body = vec![0u8; n.parse().unwrap()];
        r.read_exact(&mut body).await?;
        return Ok(body);
    }
    if header(head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).await?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(Vec::new())
}

/// `head` with Content-Length `n` and no Transfer-Encoding.
fn with_length(head: &str, n: usize) -> String {
    let mut out = String::new();
    for (i, l) in head.split("\r\n").enumerate() {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if i > 0 && (name == "content-length" || name == "transfer-encoding") {
            continue;
        }
        if l.is_empty() {
            out.push_str(&format!("Content-Length: {n}\r\n\r\n"));
            break;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out
}

impl FaultProxy {
    async fn start(upstream: u16, target: Target, fault: Fault, times: u32) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let dealt = Arc::new(Mutex::new(HashMap::new()));
        let d = dealt.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let d = d.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, target, fault, times, &d).await;
                });
            }
        });
        FaultProxy {
            endpoint,
            dealt,
            times,
            task,
        }
    }

    fn dealt(&self) -> u32 {
        (self.dealt.lock().unwrap().values())
            .map(|&n| n.min(self.times))
            .sum()
    }
}

async fn serve(
    conn: TcpStream,
    upstream: u16,
    target: Target,
    fault: Fault,
    times: u32,
    dealt: &Mutex<HashMap<String, u32>>,
) -> std::io::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    while let Some(head) = read_head(&mut r).await? {
        let mut body = read_body(&mut r, &head, false).await?;
        let line = head.lines().next().unwrap_or("").to_string();
        let path = line.split(' ').nth(1).unwrap_or("");
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let last = path.rsplit('/').next().unwrap_or("");
        let matches = match target {
            Target::DataPut => {
                line.starts_with("PUT ")
                    && !path.contains("/recent/")
                    && last.len() == 32
                    && last.bytes().all(|c| c.is_ascii_hexdigit())
            }
            Target::Listing => line.starts_with("GET ") && query.contains("list-type=2"),
        };
        let deal = matches && {
            let mut d = dealt.lock().unwrap();
            let n = d.entry(format!("{path}?{}", page_of(query))).or_insert(0);
            *n += 1;
            *n <= times
        };
        if deal {
            if let Fault::Code(status, code) = fault {
                let doc = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                     <Message>injected by the test's fault proxy</Message>\
                     <ServerTime>2026-12-07T10:00:00Z</ServerTime></Error>"
                );
                let resp = format!(
                    "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\n\r\n{doc}",
                    doc.len()
                );
                w.write_all(resp.as_bytes()).await?;
                w.flush().await?;
                continue;
            }
            if let Some(b) = body.first_mut() {
                *b ^= 0xff;
            }
        }
        let up = TcpStream::connect(("127.0.0.1", upstream)).await?;
        let (ur, mut uw) = up.into_split();
        let fwd = if body.is_empty() {
            head.clone()
        } else {
            with_length(&head, body.len())
        };
        uw.write_all(fwd.as_bytes()).await?;
        uw.write_all(&body).await?;
        let mut ur = BufReader::new(ur);
        let rhead = read_head(&mut ur).await?.expect("an answer");
        let rbody = read_body(&mut ur, &rhead, line.starts_with("HEAD ")).await?;
        let rhead = if rbody.is_empty() || header(&rhead, "content-length").is_some() {
            rhead
        } else {
            with_length(&rhead, rbody.len())
        };
        w.write_all(rhead.as_bytes()).await?;
        w.write_all(&rbody).await?;
        w.flush().await?;
    }
    Ok(())
}

/// A listing page's identity: its prefix and continuation token (the
/// signature parts of the query change with every attempt).
fn page_of(query: &str) -> String {
    let mut parts: Vec<&str> = (query.split('&'))
        .filter(|p| p.starts_with("prefix=") || p.starts_with("continuation-token="))
        .collect();
    parts.sort();
    parts.join("&")
}

/// `n` blocks of a few KiB, the same for the same `seed`.
fn blocks(n: usize, seed: u8) -> Vec<(BlockHash, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..3000 + i * 97)
                .map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8))
                .collect();
            (BlockHash::of(&data), data)
        })
        .collect()
}

/// A Directory volume holding `blocks` in keepstore's layout.
fn dir_volume(root: &Path, blocks: &[(BlockHash, Vec<u8>)]) {
    for (h, data) in blocks {
        let hex = h.to_string();
        let d = root.join(&hex[..3]);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(&hex), data).unwrap();
    }
}

/// The outcome of one case: the run, and which blocks the bucket holds
/// (each checked byte for byte: a corrupt object fails the test).
struct Outcome {
    run: Run,
    stored: Vec<BlockHash>,
    dealt: u32,
}

/// Copy `n` blocks from a Directory volume into a bucket of `s3` reached
/// through a fault proxy dealing `fault` `times` per request to `target`.
async fn case(
    s3: &S3Server,
    bucket: &str,
    target: Target,
    fault: Fault,
    times: u32,
    extra: &[&str],
) -> (Outcome, Vec<(BlockHash, Vec<u8>)>) {
    s3.create_bucket(bucket);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let want = blocks(6, bucket.len() as u8 | 1);
    dir_volume(&src, &want);
    let proxy = FaultProxy::start(s3.port, target, fault, times).await;
    let vols = dir.path().join("dst.yml");
    write_private(
        &vols,
        &format!(
            "{S3VOL}:\n  Driver: S3\n  DriverParameters:\n    Bucket: {bucket}\n    \
             Endpoint: {}\n    Region: {}\n    AccessKeyID: {}\n    SecretAccessKey: {}\n    \
             PrefixLength: 0\n    IndexPageSize: 2\n  Replication: 1\n",
            proxy.endpoint,
            common::s3::REGION,
            common::s3::ACCESS,
            s3.secret
        ),
    );
    let mut a: Vec<String> = [
        "--src-volume-dir",
        &src.to_string_lossy(),
        "--dst-volumes",
        &vols.to_string_lossy(),
        "--retries",
        "3",
        "--retry-backoff",
        "10ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    let run = run_rsync(&a).await;
    let mut stored = Vec::new();
    for (h, data) in &want {
        let path = s3.object_path(bucket, &h.to_string());
        if let Ok(got) = std::fs::read(&path) {
            assert!(got == *data, "{fault:?}: object {h} holds other bytes");
            stored.push(*h);
        }
    }
    assert!(
        !run.all().contains(&s3.secret),
        "{fault:?}: the secret shown"
    );
    (
        Outcome {
            run,
            stored,
            dealt: proxy.dealt(),
        },
        want,
    )
}

macro_rules! s3_or_skip {
    ($name:expr) => {
        match S3Server::start($name) {
            Some(s3) => s3,
            None => return,
        }
    };
}

/// Transient codes, under a 400 or a 5xx, are retried: every block is
/// copied, whole. `BadDigest` (the body damaged on its way, found by the
/// server's own Content-MD5 check) is retried once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_codes_and_one_bad_digest_are_survived() {
    let s3 = s3_or_skip!("transient_codes_and_one_bad_digest_are_survived");
    let cases = [
        ("request-timeout", Fault::Code(400, "RequestTimeout"), 2),
        ("incomplete-body", Fault::Code(400, "IncompleteBody"), 1),
        ("internal-error", Fault::Code(500, "InternalError"), 2),
        ("slow-down", Fault::Code(503, "SlowDown"), 1),
        (
            "service-unavailable",
            Fault::Code(503, "ServiceUnavailable"),
            1,
        ),
        ("bad-digest-once", Fault::Damage, 1),
    ];
    for (bucket, fault, times) in cases {
        let (o, want) = case(&s3, bucket, Target::DataPut, fault, times, &[]).await;
        o.run.expect(0);
        assert_eq!(o.stored.len(), want.len(), "{fault:?}");
        assert_eq!(o.dealt, times * want.len() as u32, "{fault:?}");
    }
}

/// A transient code on a listing page: that page is asked again and the
/// run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_page_that_slows_down_is_asked_again() {
    let s3 = s3_or_skip!("a_listing_page_that_slows_down_is_asked_again");
    let (o, want) = case(
        &s3,
        "slow-listing",
        Target::Listing,
        Fault::Code(503, "SlowDown"),
        1,
        &["-v"],
    )
    .await;
    o.run.expect(0);
    assert_eq!(o.stored.len(), want.len());
    assert!(o.dealt >= 1);
    assert!(
        o.run.stderr.contains("retrying that page"),
        "{}",
        o.run.stderr
    );
}

/// A body damaged on every try is a failed block after one retry (not
/// `--retries`), and nothing of it is stored; an expired session token and
/// a skewed clock fail every block with what to fix, storing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_refusals_fail_as_the_table_says() {
    let s3 = s3_or_skip!("persistent_refusals_fail_as_the_table_says");
    let (o, want) = case(
        &s3,
        "bad-digest-twice",
        Target::DataPut,
        Fault::Damage,
        9,
        &[],
    )
    .await;
    o.run.expect(1);
    assert!(o.stored.is_empty(), "{:?}", o.stored);
    // The first try and one retry per block.
    assert_eq!(o.dealt, 2 * want.len() as u32, "{}", o.run.stderr);
    assert!(
        o.run.stderr.contains("damaged on the way"),
        "{}",
        o.run.stderr
    );

    let expired = Fault::Code(400, "ExpiredToken");
    let (o, _) = case(&s3, "expired-token", Target::DataPut, expired, 99, &[]).await;
    o.run.expect(1);
    assert!(o.stored.is_empty(), "{:?}", o.stored);
    assert!(o.run.stderr.contains("ExpiredToken"), "{}", o.run.stderr);

    let skewed = Fault::Code(403, "RequestTimeTooSkewed");
    let (o, _) = case(&s3, "skewed-clock", Target::DataPut, skewed, 99, &[]).await;
    o.run.expect(1);
    assert!(o.stored.is_empty(), "{:?}", o.stored);
    assert!(
        o.run.stderr.contains("RequestTimeTooSkewed") && o.run.stderr.contains("clock"),
        "{}",
        o.run.stderr
    );
    // A refusal is not retried: one try per block.
    assert_eq!(o.dealt, 6, "{}", o.run.stderr);
}
