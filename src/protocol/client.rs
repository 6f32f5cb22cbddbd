//! HTTP calls to Keep services (docs/protocol.md, "Keepstore HTTP API"): index, block GET, HEAD and PUT.
//!
//! Each call answers with the data or a classified [`Failure`]: the copy
//! pipeline decides what to do next (retry the same service, move to the next
//! holder or the next service in probe order, or give up) from the class
//! alone. Block bodies are verified by the copy pipeline as they stream
//! (`copy::relay`). URLs with signed locators never appear in a failure's
//! text.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use reqwest::StatusCode;

use std::sync::atomic::{AtomicBool, Ordering};

use super::index::{BodyError, BodyParser, Entry};
use super::locator::BlockHash;
use super::{
    auth_header, HDR_DESIRED_REPLICAS, HDR_REPLICAS_STORED, HDR_STORAGE_CLASSES,
    HDR_STORAGE_CLASSES_CONFIRMED,
};

/// What kind of failure a request met, which decides what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection error, timeout, 408, 429, 5xx other than 507: retry with
    /// backoff, then move on.
    Transient,
    /// Could not connect at all (refused, connect timeout): retried like
    /// `Transient`; when it persists, the service is taken for dead.
    Unreachable,
    /// 404/410: this service does not have it; move on, no retry.
    NotFound,
    /// 401/403: token or signature refused; move on, no retry.
    Denied,
    /// 507: this service is full; move on, no retry.
    Full,
    /// The body was short, long, or did not match its hash: fetch again,
    /// preferably elsewhere.
    BadData,
    /// Any other refusal (400, 405, 413 …): move on, no retry.
    Rejected,
    /// An index line that is not `HASH+SIZE MTIME`: the service is not what
    /// the services list says it is. No retry; the run stops.
    Malformed,
    /// A write given up because the block's read failed under it: nothing
    /// was stored, and it says nothing about the service. No retry.
    Abandoned,
}

/// A failed request: its class and a short, secret-free explanation.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
    /// The HTTP status the service answered with, when the failure is one
    /// (`None`: no answer, or a body that broke or failed verification).
    pub status: Option<u16>,
    /// Retried at most this many times, whatever `--retries` says (an S3
    /// `BadDigest`: the bytes were verified before they were sent, so one
    /// more try tells a damaged transfer from a broken path).
    pub max_retries: Option<u32>,
}

/// An answer's body as one short line for a message: an HTML page (a proxy's
/// error page) is reduced to its text, whitespace runs and control
/// characters to one space, and the whole to 200 characters.
fn one_line(body: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let html = body.trim_start().starts_with('<');
    for c in body.chars() {
        match c {
            '<' if html => in_tag = true,
            '>' if html && in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            c if c.is_whitespace() || c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    words.join(" ").chars().take(200).collect()
}

impl Failure {
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: redact_query_secrets(&super::redact_signatures(&detail.into())),
            status: None,
            max_retries: None,
        }
    }
    /// A request that got no (complete) answer.
    pub fn from_http(e: &reqwest::Error) -> Failure {
        let detail = describe_http_error(e);
        if e.is_connect() && is_certificate_error(&detail) {
            // Retrying cannot help: the certificate is what it is.
            return Failure::new(
                FailureKind::Rejected,
                format!(
                    "{detail}: the server's TLS certificate is not trusted here (not retried); \
                     if a private CA signed it, give that CA in SSL_CERT_FILE (or SSL_CERT_DIR), \
                     which then replaces the system's certificates; a self-signed certificate \
                     must be an end-entity one (basicConstraints CA:FALSE) with the host's name"
                ),
            );
        }
        let kind = if e.is_connect() {
            FailureKind::Unreachable
        } else {
            FailureKind::Transient
        };
        Failure::new(kind, detail)
    }
    /// An answer with a status other than success; `body_hint` is (the
    /// start of) its body.
    pub fn from_status(status: StatusCode, body_hint: &str) -> Failure {
        let kind = match status.as_u16() {
            404 | 410 => FailureKind::NotFound,
            401 | 403 => FailureKind::Denied,
            507 => FailureKind::Full,
            408 | 409 | 423 | 429 => FailureKind::Transient,
            s if s >= 500 => FailureKind::Transient,
            _ => FailureKind::Rejected,
        };
        let hint = one_line(body_hint);
        let detail = if hint.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {hint}")
        };
        Failure {
            status: Some(status.as_u16()),
            ..Failure::new(kind, detail)
        }
    }
    /// Worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, FailureKind::Transient | FailureKind::Unreachable)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Exponential backoff with jitter: attempt k waits a random time in
/// `[d/2, d]` where `d = min(base · 2^k, max)`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        if d.is_zero() {
            return d;
        }
        let nanos = d.as_nanos() as u64;
        Duration::from_nanos(rand::thread_rng().gen_range(nanos / 2..=nanos))
    }
}

/// The operations keep-rsync asks of a service, as diagnostics and metrics
/// name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET /index/PREFIX` (or a volume scan).
    Index,
    /// A block read.
    Get,
    /// A block write.
    Put,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Index, Op::Get, Op::Put];

    /// `index`, `get` or `put`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Index => "index",
            Op::Get => "get",
            Op::Put => "put",
        }
    }
}

/// Told about each retry [`with_retries`] is about to make (diagnostics,
/// metrics); `()` ignores them.
pub trait OnRetry: Sync {
    /// Attempt `attempt` (1 = the first) of at most `attempts` failed with
    /// `failure`; the next one starts after `delay`.
    fn retrying(&self, failure: &Failure, attempt: u32, attempts: u32, delay: Duration);
}

impl OnRetry for () {
    fn retrying(&self, _: &Failure, _: u32, _: u32, _: Duration) {}
}

/// Run `op` until it succeeds, fails for a non-transient reason, or has been
/// retried `retries` times; `watch` hears of each retry. `op` gets the
/// attempt number (0 first).
pub async fn with_retries<T, F, Fut>(
    backoff: Backoff,
    retries: u32,
    watch: &dyn OnRetry,
    mut op: F,
) -> Result<T, (Failure, u32)>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut attempt = 0;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(f)
                if f.is_transient() && attempt < retries.min(f.max_retries.unwrap_or(u32::MAX)) =>
            {
                // A 503 or 429 says "slow down", not "broken": the service's
                // limit has just been cut for it (the adaptive limiter), and that
                // lower limit paces the retry, so it need not wait as long.
                let delay = if matches!(f.status, Some(503) | Some(429)) {
                    backoff.delay(attempt) / 8
                } else {
                    backoff.delay(attempt)
                };
                watch.retrying(&f, attempt + 1, retries + 1, delay);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(f) => return Err((f, attempt + 1)),
        }
    }
}

/// Connection settings for one side's Keep services.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// A response that sends nothing for this long is abandoned.
    pub stall_timeout: Duration,
    /// Accept self-signed certificates (`ARVADOS_API_HOST_INSECURE`).
    pub insecure: bool,
    /// Idle keep-alive connections kept per service.
    pub pool_per_host: usize,
}

/// What a successful PUT reported.
#[derive(Debug, Clone)]
pub struct PutOk {
    /// `X-Keep-Replicas-Stored` (1 when absent).
    pub replicas: u32,
    /// `X-Keep-Storage-Classes-Confirmed`, when sent.
    pub classes_confirmed: Option<String>,
}

/// A pooled HTTP/1.1 client with the side's timeouts and no credentials of
/// its own (S3 volumes sign each URL; [`KeepClient`] adds the token).
pub fn plain_client(opts: &ClientOptions) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(opts.insecure)
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.stall_timeout)
        .pool_max_idle_per_host(opts.pool_per_host)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// A pooled HTTP client speaking to one side's Keep services with its token.
#[derive(Clone)]
pub struct KeepClient {
    http: reqwest::Client,
    auth: Arc<str>,
}

impl KeepClient {
    pub fn new(token: &str, opts: &ClientOptions) -> Result<KeepClient, String> {
        let http = plain_client(opts)?;
        Ok(KeepClient {
            http,
            auth: auth_header(token).into(),
        })
    }

    /// `GET /index/PREFIX`, or with `mount` that mount's own index
    /// (`GET /mounts/UUID/blocks?prefix=PREFIX`): the response, once its
    /// status is 200. The caller streams and checks the body.
    pub async fn index(
        &self,
        base: &str,
        prefix: &str,
        mount: Option<&str>,
    ) -> Result<reqwest::Response, Failure> {
        let path = match mount {
            Some(uuid) => crate::protocol::mounts::mount_index_path(uuid, prefix),
            None => format!("/index/{prefix}"),
        };
        let resp = self
            .http
            .get(format!("{base}{path}"))
            .header("Authorization", &*self.auth)
            .send()
            .await
            .map_err(|e| Failure::from_http(&e))?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = read_capped(resp, ERROR_BODY_MAX).await;
            return Err(Failure::from_status(status, &body));
        }
        Ok(resp)
    }

    /// `GET /mounts`: the keepstore's volumes, or `None` when it answers 404
    /// (a keepstore from before `/mounts`, or not a keepstore at all).
    pub async fn mounts(&self, base: &str) -> Result<Option<Vec<crate::protocol::Mount>>, Failure> {
        let resp = self
            .http
            .get(format!("{base}/mounts"))
            .header("Authorization", &*self.auth)
            .send()
            .await
            .map_err(|e| Failure::from_http(&e))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            let body = read_capped(resp, ERROR_BODY_MAX).await;
            return Err(Failure::from_status(status, &body));
        }
        // A mounts list is a few hundred bytes per volume.
        let text = read_capped(resp, MOUNTS_MAX).await;
        if text.len() >= MOUNTS_MAX {
            return Err(Failure::new(
                FailureKind::Malformed,
                format!("mounts list longer than {MOUNTS_MAX} bytes"),
            ));
        }
        crate::protocol::mounts::parse_mounts(&text)
            .map(Some)
            .map_err(|why| Failure::new(FailureKind::Malformed, format!("mounts list that {why}")))
    }

    /// `GET /LOCATOR`: the response once its status is 200 and its
    /// `Content-Length` (when sent) is the locator's size. The caller reads
    /// the body with [`body_chunks`] and verifies it (copy::relay): length
    /// and MD5 are checked there, as the bytes arrive.
    pub async fn open_block(
        &self,
        base: &str,
        locator: &str,
        size: u64,
    ) -> Result<reqwest::Response, Failure> {
        let resp = self.ask_block(reqwest::Method::GET, base, locator).await?;
        if let Some(len) = resp.content_length() {
            if len != size {
                return Err(Failure::new(
                    FailureKind::BadData,
                    format!("Content-Length {len} differs from the locator's size {size}"),
                ));
            }
        }
        Ok(resp)
    }

    /// `GET` or `HEAD /LOCATOR` with the token: the response when it is 200,
    /// otherwise the answer (or the lack of one) as a classified failure.
    async fn ask_block(
        &self,
        method: reqwest::Method,
        base: &str,
        locator: &str,
    ) -> Result<reqwest::Response, Failure> {
        let resp = self
            .http
            .request(method, format!("{base}/{locator}"))
            .header("Authorization", &*self.auth)
            .send()
            .await
            .map_err(|e| Failure::from_http(&e))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = read_capped(resp, ERROR_BODY_MAX).await;
            return Err(Failure::from_status(status, &body));
        }
        Ok(resp)
    }

    /// `HEAD /LOCATOR` (signed by the caller when the cluster wants it): the
    /// block's `Content-Length` when the service has it (200), `None` if the
    /// answer had none. Any other answer is a classified failure (404 =
    /// `NotFound`, 403 = `Denied`, …), as for a GET.
    pub async fn head_block(&self, base: &str, locator: &str) -> Result<Option<u64>, Failure> {
        let resp = self.ask_block(reqwest::Method::HEAD, base, locator).await?;
        // The header itself: a HEAD response has no body to measure.
        Ok(resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()))
    }

    /// `PUT /HASH` with a body of `len` bytes; `Content-Length` is always
    /// sent, so a body that ends early is an aborted request, never a short
    /// block.
    pub async fn put_block(
        &self,
        base: &str,
        hash: &BlockHash,
        len: u64,
        body: reqwest::Body,
        desired: u32,
        classes: Option<&str>,
    ) -> Result<PutOk, Failure> {
        let mut req = self
            .http
            .put(format!("{base}/{hash}"))
            .header("Authorization", &*self.auth)
            .header("Content-Length", len)
            .header(HDR_DESIRED_REPLICAS, desired)
            .body(body);
        if let Some(c) = classes {
            req = req.header(HDR_STORAGE_CLASSES, c);
        }
        let resp = req.send().await.map_err(|e| Failure::from_http(&e))?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let replicas = header(HDR_REPLICAS_STORED)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(1);
        let classes_confirmed = header(HDR_STORAGE_CLASSES_CONFIRMED);
        let body = read_capped(resp, ERROR_BODY_MAX).await;
        if status != StatusCode::OK {
            return Err(Failure::from_status(status, &body));
        }
        // The answer names the stored block: a service that stored something
        // else (or nothing) has not stored ours.
        let answered = body.trim().split('+').next().unwrap_or("");
        if answered != hash.to_string() {
            return Err(Failure::new(
                FailureKind::Rejected,
                "PUT answered 200 without the block's locator",
            ));
        }
        Ok(PutOk {
            replicas,
            classes_confirmed,
        })
    }
}

/// `GET /index/PREFIX` from one Keep service, parsed as the body streams in:
/// the entries (unsorted) and the number of lines. A body that ends without
/// its blank line is a transient failure (it is retried); a malformed line
/// is a `Malformed` one (it is not).
#[allow(clippy::too_many_arguments)]
pub async fn list_index(
    client: &KeepClient,
    url: &str,
    prefix: &str,
    mount: Option<&str>,
    answered: &AtomicBool,
    on_bytes: &(dyn Fn(u64) + Sync),
    mut entries: Vec<Entry>,
) -> Result<(Vec<Entry>, u64), Failure> {
    let resp = client.index(url, prefix, mount).await?;
    answered.store(true, Ordering::Relaxed);
    let mut parser = BodyParser::default();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            Failure::new(
                FailureKind::Transient,
                format!(
                    "index body broke after {} lines: {}",
                    parser.lines(),
                    describe_http_error(&e)
                ),
            )
        })?;
        on_bytes(chunk.len() as u64);
        parser
            .feed(&chunk, &mut |e| {
                // A recycled vector that is a little short grows a little,
                // not twice over.
                if entries.len() == entries.capacity() && entries.capacity() > 0 {
                    entries.reserve_exact(entries.capacity() / 8);
                }
                entries.push(e)
            })
            .map_err(|e| match e {
                BodyError::Malformed { line_no, line } => Failure::new(
                    FailureKind::Malformed,
                    format!("malformed line {line_no}: {line:?} (expected \"HASH+SIZE MTIME\")"),
                ),
                BodyError::Incomplete { .. } => Failure::new(FailureKind::Transient, "incomplete"),
            })?;
    }
    match parser.finish() {
        Ok(lines) => Ok((entries, lines)),
        Err(BodyError::Incomplete { lines }) | Err(BodyError::Malformed { line_no: lines, .. }) => {
            Err(Failure::new(
                FailureKind::Transient,
                format!("the index ended after {lines} lines without its terminating blank line"),
            ))
        }
    }
}

/// Render a reqwest error with its causes ("connection refused", "timed
/// out"), without the URL (which may carry a signed locator): callers name the
/// service themselves.
/// Whether a connection failed on the server's certificate (rustls says
/// "invalid peer certificate: …"), which no retry mends.
fn is_certificate_error(detail: &str) -> bool {
    detail.contains("invalid peer certificate")
}

pub fn describe_http_error(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts: Vec<String> = Vec::new();
    if e.is_timeout() {
        parts.push("timed out".into());
    } else if e.is_connect() {
        parts.push("could not connect".into());
    } else if e.is_body() || e.is_decode() {
        parts.push("connection broke while reading the body".into());
    } else if e.is_request() {
        parts.push("request failed".into());
    }
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    if parts.is_empty() {
        parts.push("HTTP error".into());
    }
    super::redact_signatures(&parts.join(": "))
}

/// At most this much of an error (or PUT) answer's body is read: enough for
/// a message, and a service that answers with megabytes costs nothing.
pub const ERROR_BODY_MAX: usize = 4096;

/// The most of a `GET /mounts` answer that is read (thousands of volumes).
const MOUNTS_MAX: usize = 4 << 20;

/// The first `max` bytes of a response body as text (lossy), without reading
/// the rest; a body that breaks gives what arrived.
pub async fn read_capped(resp: reqwest::Response, max: usize) -> String {
    let mut out: Vec<u8> = Vec::new();
    let mut body = resp.bytes_stream();
    while out.len() < max {
        match body.next().await {
            Some(Ok(chunk)) => {
                let room = max - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why [`read_bounded`] gave no body.
pub enum Unbounded {
    /// The body broke (or timed out) before its end.
    Broke(reqwest::Error),
    /// It was longer than the bound.
    TooLong,
}

/// A whole response body, or [`Unbounded::TooLong`] as soon as it passes
/// `max` bytes (the rest is never read): for answers that must be taken
/// whole, such as a bucket listing's page, and that a broken or hostile
/// server could make endless.
pub async fn read_bounded(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, Unbounded> {
    let mut out: Vec<u8> = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(Unbounded::Broke)?;
        if out.len() + chunk.len() > max {
            return Err(Unbounded::TooLong);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `text` with the value of every `X-Amz-*` parameter or header (a
/// presigned URL's `X-Amz-Signature`, `X-Amz-Credential`,
/// `X-Amz-Security-Token` …) and of SigV2's `Signature` and
/// `AWSAccessKeyId` replaced by `…`: a proxy's error page often echoes the
/// request's URL, presigned query included. Names are matched without
/// regard to case; a value ends at `&`, whitespace, a quote, `<`, `>` or
/// `,`.
pub fn redact_query_secrets(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let starts_word = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-');
        let name_len = if !starts_word {
            0
        } else if b[i..].starts_with(b"x-amz-") {
            6 + b[i + 6..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-')
                .count()
        } else if b[i..].starts_with(b"signature") {
            9
        } else if b[i..].starts_with(b"awsaccesskeyid") {
            14
        } else {
            0
        };
        let mut j = i + name_len;
        if name_len == 0 || j >= b.len() || !matches!(b[j], b'=' | b':') {
            i += 1;
            continue;
        }
        j += 1;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let end = j + b[j..]
            .iter()
            .take_while(|c| !(c.is_ascii_whitespace() || b"&\"'<>,".contains(c)))
            .count();
        if end > j {
            out.push_str(&text[copied..j]);
            out.push('…');
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// A response body as a stream of chunks, transport errors classified.
pub fn body_chunks(resp: reqwest::Response) -> impl futures::Stream<Item = Result<Bytes, Failure>> {
    resp.bytes_stream()
        .map(|c| c.map_err(|e| Failure::new(FailureKind::Transient, describe_http_error(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy's error page echoing a presigned URL shows none of its
    /// secrets.
    #[test]
    fn presigned_query_secrets_are_redacted() {
        let page = "<html><body>502 Bad Gateway: GET http://s3.example/b/k?X-Amz-Algorithm=\
                    AWS4-HMAC-SHA256&X-Amz-Credential=AKIDSECRET%2F20261207%2Fus-east-1%2Fs3\
                    &x-amz-security-token=TOKENSECRET&X-Amz-Signature=abcdef0123456789 \
                    failed; Signature=SIGV2SECRET&AWSAccessKeyId=AKIDV2 X-Amz-Date: 20261207\
                    </body></html>";
        let out = redact_query_secrets(page);
        for secret in [
            "AKIDSECRET",
            "TOKENSECRET",
            "abcdef0123",
            "SIGV2SECRET",
            "AKIDV2",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("X-Amz-Signature=… failed"), "{out}");
        assert!(out.contains("X-Amz-Date: …<"), "{out}");
        let f = Failure::from_status(StatusCode::BAD_GATEWAY, page);
        assert!(!f.detail.contains("TOKENSECRET"), "{f}");
        // Not a parameter: left alone, and no panic on other scripts.
        assert_eq!(
            redact_query_secrets("my-x-amz-signature=1 é x-amz-"),
            "my-x-amz-signature=1 é x-amz-"
        );
        assert_eq!(
            redact_query_secrets("ü X-Amz-Signature=é"),
            "ü X-Amz-Signature=…"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            assert!(b.delay(30) <= Duration::from_secs(1));
        }
        let z = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(z.delay(5), Duration::ZERO);
    }

    #[test]
    fn status_classes() {
        let k = |s: u16| Failure::from_status(StatusCode::from_u16(s).unwrap(), "").kind;
        assert_eq!(k(404), FailureKind::NotFound);
        assert_eq!(k(403), FailureKind::Denied);
        assert_eq!(k(507), FailureKind::Full);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(k(s), FailureKind::Transient, "{s}");
        }
        assert_eq!(k(400), FailureKind::Rejected);
        assert_eq!(k(413), FailureKind::Rejected);
    }

    #[test]
    fn bodies_become_one_short_line() {
        let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n</body></html>\n";
        assert_eq!(one_line(page), "502 Bad Gateway 502 Bad Gateway");
        assert_eq!(one_line("  no such\tblock\n\n"), "no such block");
        assert_eq!(one_line("a < b"), "a < b");
        assert_eq!(one_line(&"x".repeat(500)).len(), 200);
        let f = Failure::from_status(StatusCode::BAD_GATEWAY, page);
        assert!(!f.detail.contains('\n'), "{}", f.detail);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_only() {
        let b = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        let mut calls = 0;
        let r: Result<(), _> = with_retries(b, 3, &(), |_| {
            calls += 1;
            async { Err(Failure::new(FailureKind::Transient, "x")) }
        })
        .await;
        assert_eq!(r.unwrap_err().1, 4);
        assert_eq!(calls, 4);
        let mut calls = 0;
        let r: Result<(), _> = with_retries(b, 3, &(), |_| {
            calls += 1;
            async { Err(Failure::new(FailureKind::NotFound, "x")) }
        })
        .await;
        assert_eq!(r.unwrap_err().1, 1);
        assert_eq!(calls, 1);
        let r = with_retries(b, 3, &(), |a| async move {
            if a < 2 {
                Err(Failure::new(FailureKind::Transient, "x"))
            } else {
                Ok(a)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
    }

    /// A server on 127.0.0.1 that answers every request with `status` and a
    /// body that never ends (64 KiB chunks until the client goes away), and
    /// counts the bytes it managed to send.
    async fn endless_body_server(
        status: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut req = [0u8; 4096];
                    let _ = c.read(&mut req).await;
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n\
                         Transfer-Encoding: chunked\r\n\r\n"
                    );
                    if c.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                    while c.write_all(chunk.as_bytes()).await.is_ok() {
                        counter.fetch_add(0x10000, Relaxed);
                    }
                });
            }
        });
        (base, sent)
    }

    fn test_client() -> KeepClient {
        KeepClient::new(
            "tok",
            &ClientOptions {
                connect_timeout: Duration::from_secs(5),
                stall_timeout: Duration::from_secs(5),
                insecure: false,
                pool_per_host: 1,
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn error_and_put_answers_are_read_up_to_the_cap_only() {
        use std::sync::atomic::Ordering::Relaxed;
        let limit = Duration::from_secs(20);
        // An index request answered 500 with an endless body: the failure
        // comes back, its text one short line from the first 4 KiB.
        let (base, sent) = endless_body_server("500 Internal Server Error").await;
        let c = test_client();
        let f = tokio::time::timeout(limit, c.index(&base, "ab", None))
            .await
            .expect("the error answer was read to its end")
            .unwrap_err();
        assert_eq!(f.status, Some(500));
        assert!(f.detail.len() < 400, "{}", f.detail);
        assert!(
            sent.load(Relaxed) < 64 << 20,
            "{} bytes",
            sent.load(Relaxed)
        );
        // A PUT answered 200 with an endless body instead of a locator.
        let (base, _) = endless_body_server("200 OK").await;
        let block = b"foo".to_vec();
        let hash = BlockHash::of(&block);
        let put = c.put_block(&base, &hash, 3, block.into(), 1, None);
        let f = tokio::time::timeout(limit, put)
            .await
            .expect("the PUT answer was read to its end")
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Rejected);
        // read_capped itself: exactly the cap.
        let (base, _) = endless_body_server("503 Service Unavailable").await;
        let resp = reqwest::get(format!("{base}/x")).await.unwrap();
        let body = tokio::time::timeout(limit, read_capped(resp, ERROR_BODY_MAX))
            .await
            .expect("read_capped stopped at its cap");
        assert_eq!(body.len(), ERROR_BODY_MAX);
    }
}
