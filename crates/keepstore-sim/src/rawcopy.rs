//! `keepstore-sim rawcopy`: the raw limit for copy benchmarks.
//!
//! The same GETs and PUTs keep-rsync makes for a plain copy, done as simply
//! as possible over the same HTTP stack (reqwest, HTTP/1.1, pooled, no
//! delay): list the source indexes once (or read `HASH+SIZE` lines from a
//! file), then for each block GET it from its first source holder in probe
//! order and PUT it to the first `replicas` writable destination services of
//! its probe order, `concurrency` blocks at a time. No planning against the
//! destination, no MD5 or length check, no retries, no per-service limits:
//! whatever keep-rsync adds on top is its overhead. The block is read into
//! one buffer and the replica PUTs share it, as in keep-rsync.
//!
//! Signatures are not computed: run it against a source that does not
//! enforce them (the benchmarks do).

use std::collections::HashMap;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::seed::remote_probe_order;
use keep_protocol::index::{BodyParser, Entry};
use keep_protocol::BlockHash;
use keep_protocol::KeepService;

/// What to copy and how.
pub struct RawCopy<'a> {
    pub src: &'a [KeepService],
    pub dst: &'a [KeepService],
    pub src_token: &'a str,
    pub dst_token: &'a str,
    pub replicas: usize,
    pub concurrency: usize,
    /// `HASH+SIZE` per block; `None`: list the source indexes.
    pub blocks: Option<Vec<Entry>>,
}

/// The result, printed as JSON.
#[derive(Debug, Serialize)]
pub struct RawCopyResult {
    pub blocks: u64,
    /// Block bytes read from the source (each block once).
    pub bytes: u64,
    pub replicas_written: u64,
    pub errors: u64,
    /// Listing the source indexes (0 with a blocks file).
    pub list_seconds: f64,
    /// GETs and PUTs.
    pub copy_seconds: f64,
    /// `bytes / copy_seconds`.
    pub bytes_per_second: f64,
    pub concurrency: usize,
}

fn http_client(pool: usize) -> Result<reqwest::Client, String> {
    // The same settings as keep-rsync's KeepClient (protocol/client.rs).
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .build()
        .map_err(|e| e.to_string())
}

/// Parse `HASH+SIZE[...]` lines (the output of `keepstore-sim seed`).
pub fn parse_blocks(text: &str) -> Result<Vec<Entry>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.split('+');
            let hash: BlockHash = parts
                .next()
                .unwrap_or("")
                .parse()
                .map_err(|_| format!("{l:?}: not HASH+SIZE"))?;
            let size: u32 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{l:?}: not HASH+SIZE"))?;
            Ok(Entry { hash, size })
        })
        .collect()
}

async fn list(
    client: &reqwest::Client,
    svc: &KeepService,
    token: &str,
) -> Result<Vec<Entry>, String> {
    let resp = client
        .get(format!("{}/index", svc.url()))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{}: {e}", svc.url()))?;
    if !resp.status().is_success() {
        return Err(format!("{}: index: HTTP {}", svc.url(), resp.status()));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{}: {e}", svc.url()))?;
    let mut out = Vec::new();
    let mut p = BodyParser::default();
    p.feed(&body, &mut |e| out.push(e))
        .map_err(|e| format!("{}: index: {e:?}", svc.url()))?;
    p.finish()
        .map_err(|e| format!("{}: index: {e:?}", svc.url()))?;
    Ok(out)
}

/// Run the copy and measure it.
pub async fn run(mut rc: RawCopy<'_>) -> Result<RawCopyResult, String> {
    let concurrency = rc.concurrency.max(1);
    let client = http_client(concurrency)?;
    let t0 = Instant::now();
    // (block, source service) pairs.
    let work: Vec<(Entry, usize)> = match rc.blocks.take() {
        Some(blocks) => blocks
            .into_iter()
            .map(|e| (e, remote_probe_order(rc.src, &e.hash)[0]))
            .collect(),
        None => {
            let mut holders: HashMap<BlockHash, (u32, Vec<usize>)> = HashMap::new();
            for (i, s) in rc.src.iter().enumerate() {
                for e in list(&client, s, rc.src_token).await? {
                    holders.entry(e.hash).or_insert((e.size, vec![])).1.push(i);
                }
            }
            let mut w: Vec<(Entry, usize)> = holders
                .into_iter()
                .map(|(hash, (size, on))| {
                    let first = remote_probe_order(rc.src, &hash)
                        .into_iter()
                        .find(|i| on.contains(i))
                        .unwrap_or(on[0]);
                    (Entry { hash, size }, first)
                })
                .collect();
            w.sort_unstable_by_key(|(e, _)| e.hash);
            w
        }
    };
    let list_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let (client, rc) = (&client, &rc);
    let results: Vec<(u64, u64, u64)> = stream::iter(work)
        .map(|(e, s)| async move {
            let src = &rc.src[s];
            let data: Chunks = match client
                .get(format!("{}/{}+{}", src.url(), e.hash, e.size))
                .bearer_auth(rc.src_token)
                .send()
                .await
            {
                // Keep the body as the chunks it arrived in and stream them
                // to the PUTs, exactly as keep-rsync does (minus the MD5),
                // so the limit pays no copy keep-rsync avoids.
                Ok(r) if r.status().is_success() => {
                    let mut chunks = Vec::new();
                    let mut body = r.bytes_stream();
                    while let Some(chunk) = body.next().await {
                        match chunk {
                            Ok(c) => chunks.push(c),
                            Err(_) => return (0, 0, 1),
                        }
                    }
                    Chunks::new(chunks)
                }
                _ => return (0, 0, 1),
            };
            let targets: Vec<usize> = remote_probe_order(rc.dst, &e.hash)
                .into_iter()
                .filter(|&i| !rc.dst[i].read_only)
                .take(rc.replicas)
                .collect();
            let puts = targets.iter().map(|&i| {
                let data = data.clone();
                async move {
                    client
                        .put(format!("{}/{}", rc.dst[i].url(), e.hash))
                        .bearer_auth(rc.dst_token)
                        .header("X-Keep-Desired-Replicas", rc.replicas)
                        .header("Content-Length", data.len())
                        .body(data.body())
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .is_some()
                }
            });
            let ok = futures::future::join_all(puts).await;
            let written = ok.iter().filter(|&&b| b).count() as u64;
            (
                data.len() as u64,
                written,
                (ok.len() as u64 - written).min(1),
            )
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let copy_seconds = t1.elapsed().as_secs_f64();
    let bytes: u64 = results.iter().map(|r| r.0).sum();
    Ok(RawCopyResult {
        blocks: results.len() as u64,
        bytes,
        replicas_written: results.iter().map(|r| r.1).sum(),
        errors: results.iter().map(|r| r.2).sum(),
        list_seconds,
        copy_seconds,
        bytes_per_second: if copy_seconds > 0.0 {
            bytes as f64 / copy_seconds
        } else {
            0.0
        },
        concurrency,
    })
}

/// MD5 throughput of one core, with the implementation keep-rsync uses
/// (the `md-5` crate), over a 64 MiB buffer hashed `rounds` times.
pub fn md5_speed(rounds: usize) -> serde_json::Value {
    use md5::{Digest, Md5};
    let buf: Vec<u8> = (0..64usize << 20).map(|i| (i * 31 + 7) as u8).collect();
    // Warm up (page faults, frequency).
    let _ = Md5::digest(&buf[..8 << 20]);
    let t = Instant::now();
    let mut x = 0u8;
    for _ in 0..rounds.max(1) {
        x ^= Md5::digest(&buf)[0];
    }
    let secs = t.elapsed().as_secs_f64();
    let bytes = (buf.len() * rounds.max(1)) as f64;
    serde_json::json!({
        "bytes": bytes as u64,
        "seconds": secs,
        "mb_per_second": bytes / secs / 1e6,
        "seconds_per_gb": secs / (bytes / 1e9),
        "check": x,
    })
}

/// A block as the chunks its GET body arrived in, streamed unchanged by each
/// replica PUT (no copy), as keep-rsync's relay does.
#[derive(Clone)]
struct Chunks {
    chunks: std::sync::Arc<Vec<bytes::Bytes>>,
    len: usize,
}

impl Chunks {
    fn new(chunks: Vec<bytes::Bytes>) -> Chunks {
        let len = chunks.iter().map(|c| c.len()).sum();
        Chunks {
            chunks: std::sync::Arc::new(chunks),
            len,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn body(&self) -> reqwest::Body {
        let chunks = self.chunks.clone();
        let it =
            (0..chunks.len()).map(move |i| Ok::<_, std::convert::Infallible>(chunks[i].clone()));
        reqwest::Body::wrap_stream(futures::stream::iter(it))
    }
}
