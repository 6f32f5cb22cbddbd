//! A keepstore S3 volume as a store (`Driver: S3` in a `--*-volumes` file):
//! the bucket in keepstore's own layout (`keep_protocol::layout::s3`: the
//! data object `[XYZ/]HASH`, then the empty `recent/KEY` marker), so that a
//! keepstore can mount what keep-rsync wrote, and keep-rsync can read what a
//! keepstore wrote (docs/protocol.md, "S3 volumes").
//!
//! Requests are signed with SigV4 by rusty-s3, which only builds URLs: every
//! request goes through our own reqwest client, so retries,
//! `--max-per-service`, `--bwlimit`, metrics and `-v` work as for Keep
//! services. URLs are presigned (credentials in the query string) just
//! before each attempt, with a short expiry, and never appear in messages
//! (reqwest errors are rendered without their URL). A block is written with
//! one PUT carrying `Content-MD5` (the locator's hash, known before the first
//! byte): the server refuses a body that does not match, so a block streams
//! from its source to the bucket and is still checked twice. Its `recent/`
//! marker is the write's *finish* ([`super::Staged`]), sent after the data
//! object once the block's buffer and transfer slot are given back.
//!
//! The index is one ListObjectsV2 listing of the data keys under the prefix,
//! paged by `IndexPageSize`, stopping where data keys end (`recent/` and
//! `trash/` sort after them). keepstore's own index also lists `recent/` to
//! take the block timestamps from it; keep-rsync's index carries no
//! timestamps, so it does not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::{FutureExt, StreamExt};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::aws_credentials::Provider;
use super::{BlockStream, Body, Staged, VolumeTraits};
use crate::protocol::client::{
    body_chunks, describe_http_error, read_bounded, read_capped, redact_query_secrets, Failure,
    FailureKind, Unbounded,
};
use crate::protocol::index::Entry;
use crate::protocol::layout::s3 as layout;
use crate::protocol::{BlockHash, MAX_BLOCK_SIZE};
use crate::volumes_file::S3Params;

/// How long a presigned URL is good for: each is signed just before its
/// request is sent, and S3 checks it when the request arrives.
const EXPIRY: Duration = Duration::from_secs(15 * 60);

/// Retries of one listing page, and of a `recent/` marker, before the
/// failure goes to the caller (which retries the whole listing or block).
const PAGE_RETRIES: u32 = 4;
const MARKER_RETRIES: u32 = 4;
/// The first pause of those retries, doubled each time (0.2 s to 3.2 s).
const PAGE_BACKOFF: Duration = Duration::from_millis(100);

/// The most keys S3 returns in one ListObjectsV2 page (and the most
/// rusty-s3 parses as `MaxKeys`).
const MAX_PAGE: u32 = 1000;

/// The most of one listing page that is read: a page of 1000 keys is about
/// 300 KiB of XML (1000 of the longest keys, 1 KiB each, with their
/// ETags, 1.3 MiB); a longer answer is not a listing.
const PAGE_MAX: usize = 4 << 20;

/// One S3 volume.
pub struct S3Volume {
    pub id: String,
    bucket: Bucket,
    /// Shared by every request (and every volume on the default chain),
    /// refreshed before it expires (`aws_credentials`).
    creds: Arc<Provider>,
    http: reqwest::Client,
    prefix_length: usize,
    page_size: u32,
    /// Next-digit sub-listings run at once ([`S3Volume::with_fanout`]).
    fanout: usize,
    /// `s3://ENDPOINT/BUCKET`, keepstore's DeviceID of the volume.
    location: String,
    pub traits: VolumeTraits,
}

impl std::fmt::Debug for S3Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Volume")
            .field("id", &self.id)
            .field("location", &self.location)
            .field("prefix_length", &self.prefix_length)
            .finish()
    }
}

impl S3Volume {
    /// Set up the volume: its endpoint, addressing style and credentials
    /// (the volume's keys, else the AWS credential chain, run now so that
    /// none found is a setup error). `Err` is a message naming what is
    /// wrong, never a secret.
    pub fn new(
        id: String,
        o: &S3Params,
        traits: VolumeTraits,
        http: reqwest::Client,
    ) -> Result<S3Volume, String> {
        let (endpoint, style) = match &o.endpoint {
            Some(e) => (e.trim_end_matches('/').to_string(), UrlStyle::Path),
            None => (
                aws_endpoint(&o.region),
                // A bucket name with a dot is not one DNS label: the
                // `*.s3.REGION.amazonaws.com` certificate does not cover
                // `a.b.s3…`, so it is addressed by path (as the AWS SDKs do).
                if o.use_path_style || !virtual_hostable(&o.bucket) {
                    UrlStyle::Path
                } else {
                    UrlStyle::VirtualHost
                },
            ),
        };
        let url: reqwest::Url = endpoint
            .parse()
            .map_err(|e| format!("its Endpoint is not a URL ({e})"))?;
        let bucket = Bucket::new(url.clone(), style, o.bucket.clone(), o.region.clone())
            .map_err(|e| format!("bucket {:?} at {endpoint}: {e}", o.bucket))?;
        let creds = Provider::for_volume(
            (o.access_key_id.as_deref(), o.secret_access_key.as_deref()),
            &o.region,
        )?;
        tracing::info!(
            event = "credentials",
            volume = id.as_str(),
            "S3 volume {id} signs with credentials {}",
            creds.from()
        );
        Ok(S3Volume {
            id,
            location: format!(
                "s3://{}{}{}/{}",
                url.host_str().unwrap_or_default(),
                url.port().map(|p| format!(":{p}")).unwrap_or_default(),
                url.path().trim_end_matches('/'),
                o.bucket
            ),
            bucket,
            creds,
            http,
            prefix_length: o.prefix_length,
            page_size: o.index_page_size.clamp(1, MAX_PAGE),
            fanout: 1,
            traits,
        })
    }

    /// List by next hex digit, up to `n` sub-listings at once (`--checkers`
    /// within `--max-per-service`): a bucket listing is a chain of pages,
    /// one request after another, and the keys are hex, so the 16 chains
    /// of `PREFIX0` … `PREFIXf` can run side by side (with PrefixLength ≥ 1
    /// they are the bucket's own directories).
    pub fn with_fanout(mut self, n: usize) -> S3Volume {
        self.fanout = n.max(1);
        self
    }

    /// What to fix when the S3 server refuses a request (`f`): the
    /// volume's credentials and Region, never an Arvados token.
    pub(super) fn refused_advice(&self, role: crate::role::Role, f: &Failure) -> String {
        format!(
            "the {role} S3 volume {} ({}) refuses our requests ({f}): its credentials came {}; \
             check them (AccessKeyID/SecretAccessKey in the volumes file, or the AWS credential \
             chain's source) and Region, and that those credentials may read (and, on the \
             destination, write) the bucket.",
            self.id,
            self.location,
            self.creds.from()
        )
    }

    pub(super) fn location(&self) -> String {
        self.location.clone()
    }

    /// A failed answer as a failure, classified by S3's error code rather
    /// than its status alone ([`classify`]), and whether S3 refused the
    /// session token ([`TOKEN_CODES`]).
    async fn refused(&self, resp: reqwest::Response) -> (Failure, bool) {
        let status = resp.status();
        // A proxy's error page may echo the presigned URL: its X-Amz-*
        // parameters go before any of it is looked at.
        let body = redact_query_secrets(&read_capped(resp, 4096).await);
        let token = xml_field(&body, "Code").is_some_and(|c| TOKEN_CODES.contains(&c.as_str()));
        let f = classify(
            status,
            &body,
            self.bucket.name(),
            std::time::SystemTime::now(),
        );
        (f, token)
    }

    /// Send the request `build` makes with the current credentials. S3
    /// refusing their session token refreshes them (once for all the
    /// requests that used them) and the request is sent again, once; when
    /// `build` cannot make it again (its body was a stream, now spent) the
    /// failure is retried once by the caller, which reads the block again.
    async fn send<F>(&self, mut build: F) -> Result<reqwest::Response, Failure>
    where
        F: FnMut(&Credentials) -> Option<reqwest::RequestBuilder>,
    {
        let mut lease = self.creds.get().await?;
        let mut req = build(lease.credentials());
        let mut refreshed = false;
        loop {
            let Some(r) = req else {
                return Err(Failure::new(FailureKind::Transient, "request not built"));
            };
            let resp = r.send().await.map_err(|e| Failure::from_http(&e))?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            let (mut f, token) = self.refused(resp).await;
            if !token {
                return Err(f);
            }
            if !refreshed {
                if let Some(fresh) = self.creds.refresh_after(&lease).await? {
                    tracing::info!(
                        event = "credentials",
                        volume = self.id.as_str(),
                        "S3 volume {} refused the session token ({}): credentials refreshed \
                         {}, request sent again",
                        self.id,
                        f.detail,
                        fresh.from
                    );
                    lease = fresh;
                    refreshed = true;
                    req = build(lease.credentials());
                    if req.is_none() {
                        // A streamed body, spent: the caller reads the
                        // block again, once.
                        f.kind = FailureKind::Transient;
                        f.max_retries = Some(1);
                        f.detail = format!(
                            "{}: credentials refreshed {}, the block is sent again",
                            f.detail, lease.from
                        );
                        return Err(f);
                    }
                    continue;
                }
            }
            f.detail = format!("{}: {}", f.detail, self.creds.token_advice());
            return Err(f);
        }
    }

    /// A request with no body, signed anew with each credentials.
    async fn send_signed(
        &self,
        method: reqwest::Method,
        sign: impl Fn(&Credentials) -> reqwest::Url,
    ) -> Result<reqwest::Response, Failure> {
        self.send(|c| Some(self.http.request(method.clone(), sign(c))))
            .await
    }

    /// One ListObjectsV2 page, retried on its own (its continuation token
    /// kept) when it fails transiently: a listing of 10^8 objects is 10^5
    /// pages, and starting again from the first costs hours.
    async fn page(
        &self,
        sign: &(dyn Fn(&Credentials) -> reqwest::Url + Sync),
        keys: u64,
    ) -> Result<String, Failure> {
        let mut attempt = 0;
        loop {
            let r = match self.send_signed(reqwest::Method::GET, sign).await {
                Ok(resp) => match read_bounded(resp, PAGE_MAX).await {
                    Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                    Err(Unbounded::Broke(e)) => Err(Failure::new(
                        FailureKind::Transient,
                        format!(
                            "listing broke after {keys} keys: {}",
                            describe_http_error(&e)
                        ),
                    )),
                    Err(Unbounded::TooLong) => Err(Failure::new(
                        FailureKind::Malformed,
                        format!(
                            "bucket listing page after {keys} keys longer than {} MiB (a page of \
                             {MAX_PAGE} keys is well under 2 MiB): the server is not S3, or a \
                             proxy answers in its place",
                            PAGE_MAX >> 20
                        ),
                    )),
                },
                Err(f) => Err(f),
            };
            match r {
                Err(f) if f.is_transient() && attempt < PAGE_RETRIES => {
                    attempt += 1;
                    tracing::info!(
                        event = "retry",
                        op = "index",
                        service = self.id.as_str(),
                        attempt,
                        error = %f,
                        "listing page after {keys} keys of S3 volume {}: {f}; retrying that page",
                        self.id
                    );
                    tokio::time::sleep(PAGE_BACKOFF * (1 << attempt)).await;
                }
                r => return r,
            }
        }
    }

    /// Every block under `prefix`: one chain of pages, or (with a fan-out
    /// and room in the prefix) the 16 next-digit chains, `fanout` at once,
    /// concatenated (the index sorts them).
    pub(super) async fn list(
        &self,
        prefix: &str,
        answered: &AtomicBool,
        on_bytes: &(dyn Fn(u64) + Sync),
        into: Vec<Entry>,
    ) -> Result<(Vec<Entry>, u64), Failure> {
        super::fan_out(prefix, self.fanout, into, |p, into| async move {
            self.list_chain(&p, answered, on_bytes, into).await
        })
        .await
    }

    /// One chain of ListObjectsV2 pages under `prefix`.
    async fn list_chain(
        &self,
        prefix: &str,
        answered: &AtomicBool,
        on_bytes: &(dyn Fn(u64) + Sync),
        mut into: Vec<Entry>,
    ) -> Result<(Vec<Entry>, u64), Failure> {
        let list_prefix = layout::list_prefix(prefix, self.prefix_length);
        let mut token: Option<String> = None;
        let mut last = String::new();
        let mut keys = 0u64;
        let malformed = |why: String| Failure::new(FailureKind::Malformed, why);
        loop {
            let sign = |c: &Credentials| {
                let mut action = self.bucket.list_objects_v2(Some(c));
                action.with_prefix(list_prefix.as_str());
                action.with_max_keys(self.page_size as usize);
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                action.sign(EXPIRY)
            };
            let text = self.page(&sign, keys).await?;
            answered.store(true, Ordering::Relaxed);
            on_bytes(text.len() as u64);
            // A document cut short may still parse: instant-xml takes a text
            // ended by the end of the input (a half key) and leaves the
            // elements never closed, so a page whose token came before its
            // keys would silently lose its last ones. A whole answer ends
            // with its root element's end tag.
            if !text.trim_end().ends_with("ListBucketResult>") {
                return Err(malformed(format!(
                    "bucket listing after {keys} keys that ends before its </ListBucketResult> \
                     ({} bytes): the listing was cut short",
                    text.len()
                )));
            }
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(|e| {
                malformed(format!(
                    "bucket listing that is not a ListObjectsV2 answer after {keys} keys ({e}): \
                     the listing was cut short or the server is not S3"
                ))
            })?;
            for o in page.contents {
                if o.key.as_str() >= layout::PAST_DATA {
                    // recent/, trash/: no data keys after these.
                    return Ok((into, keys));
                }
                if !o.key.starts_with(&list_prefix) || (keys > 0 && o.key <= last) {
                    return Err(malformed(format!(
                        "bucket listing that is not what was asked for: key {:?} after {:?} \
                         under prefix {list_prefix:?} (keys must come in order, under the prefix)",
                        o.key, last
                    )));
                }
                keys += 1;
                if let Some(hash) = layout::block_of(&o.key, self.prefix_length) {
                    // A listed object without a size is a broken listing,
                    // not an empty block.
                    let Some(size) = o.size else {
                        return Err(malformed(format!(
                            "bucket listing whose entry for {:?} has no <Size>",
                            o.key
                        )));
                    };
                    if hash.has_prefix(prefix) && size <= MAX_BLOCK_SIZE {
                        into.push(Entry {
                            hash,
                            size: size as u32,
                        });
                    }
                }
                last = o.key;
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok((into, keys)),
            }
        }
    }

    pub(super) async fn head(&self, hash: &BlockHash) -> Result<Option<u64>, Failure> {
        let key = layout::key(hash, self.prefix_length);
        let resp = self
            .send_signed(reqwest::Method::HEAD, |c| {
                self.bucket.head_object(Some(c), &key).sign(EXPIRY)
            })
            .await?;
        Ok(resp.content_length().or_else(|| {
            resp.headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        }))
    }

    pub(super) async fn read(&self, hash: &BlockHash, size: u64) -> Result<BlockStream, Failure> {
        let key = layout::key(hash, self.prefix_length);
        let resp = self
            .send_signed(reqwest::Method::GET, |c| {
                self.bucket.get_object(Some(c), &key).sign(EXPIRY)
            })
            .await?;
        if let Some(len) = resp.content_length() {
            if len != size {
                return Err(Failure::new(
                    FailureKind::BadData,
                    format!(
                        "object {key} is {len} bytes where its locator says {size} (not copied)"
                    ),
                ));
            }
        }
        Ok(body_chunks(resp).boxed())
    }

    async fn put(&self, key: &str, size: u64, md5: &[u8], body: Body) -> Result<(), Failure> {
        // A body in memory can be sent again (after a refresh); a stream
        // cannot: `send` then leaves the retry to the caller.
        let (whole, mut stream) = match body {
            Body::Whole(chunks) => (Some(chunks), None),
            follow => (None, Some(follow)),
        };
        self.send(|c| {
            let b = match &whole {
                Some(chunks) => Body::Whole(chunks.clone()).into_reqwest(),
                None => stream.take()?.into_reqwest(),
            };
            let url = self.bucket.put_object(Some(c), key).sign(EXPIRY);
            Some(
                self.http
                    .put(url)
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .header(
                        "content-md5",
                        base64::engine::general_purpose::STANDARD.encode(md5),
                    )
                    .body(b),
            )
        })
        .await
        .map(drop)
    }

    /// A whole write, its finish awaited (tests).
    #[cfg(test)]
    pub(super) async fn write(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
    ) -> Result<crate::protocol::client::PutOk, Failure> {
        self.write_staged(hash, size, body).await?.wait().await
    }

    /// PUT the data object; the answer's finish PUTs its `recent/` marker.
    /// The marker after the data, as keepstore writes it: its time is the
    /// block's timestamp. A block left without one (the marker PUT failed)
    /// is still safe: keepstore creates the marker when it first needs the
    /// block's time.
    pub(super) async fn write_staged(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
    ) -> Result<Staged<'_>, Failure> {
        let key = layout::key(hash, self.prefix_length);
        self.put(&key, size, &hash.0, body).await?;
        let hash = *hash;
        Ok(Staged {
            ok: super::volume_put_ok(&self.traits),
            finish: Some(async move { self.put_marker(&hash, &key).await }.boxed()),
            request: true,
        })
    }

    /// The marker of the data object `key`, retried on its own (an empty
    /// PUT): the data object is not sent again for it.
    async fn put_marker(&self, hash: &BlockHash, key: &str) -> Result<(), Failure> {
        let empty = BlockHash::of(b"");
        let marker = layout::recent_key(hash, self.prefix_length);
        let mut attempt = 0;
        loop {
            match self
                .put(&marker, 0, &empty.0, Body::Whole(vec![bytes::Bytes::new()]))
                .await
            {
                Ok(()) => return Ok(()),
                Err(f) if f.is_transient() && attempt < MARKER_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(PAGE_BACKOFF * (1 << attempt)).await;
                }
                Err(f) => {
                    return Err(Failure {
                        detail: format!(
                            "{key} stored, but its recent/ marker was not: {}",
                            f.detail
                        ),
                        ..f
                    })
                }
            }
        }
    }
}

/// The write probe ([`crate::store::probe`]): an empty object under
/// [`PROBE_PREFIX`], written and deleted before anything is listed.
impl S3Volume {
    /// Write the probe object and delete it. `Ok(None)`: the write and the
    /// delete worked; `Ok(Some(f))`: the write worked, the delete did not
    /// (`f`), and the key is left behind; `Err`: the write failed, after
    /// retries when it failed transiently.
    pub(super) async fn probe_write(&self, key: &str) -> Result<Option<Failure>, Failure> {
        let empty = BlockHash::of(b"");
        let mut attempt = 0;
        loop {
            match self.put(key, 0, &empty.0, Body::Whole(Vec::new())).await {
                Ok(()) => break,
                Err(f) if f.is_transient() && attempt < PAGE_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(PAGE_BACKOFF * (1 << attempt)).await;
                }
                Err(f) => return Err(f),
            }
        }
        Ok(self
            .send_signed(reqwest::Method::DELETE, |c| {
                self.bucket.delete_object(Some(c), key).sign(EXPIRY)
            })
            .await
            .err())
    }
}

/// Where the write probe's object goes: not hex, so neither keepstore's
/// index (which takes only `[XYZ/]HASH` keys) nor its trash and `recent/`
/// handling (`trash/HASH`, `recent/HASH`) ever takes it for a block, and
/// past the data keys, where keep-rsync's own listing stops.
pub const PROBE_PREFIX: &str = "keep-rsync-probe/";

/// AWS's S3 endpoint for `region`, by partition as the AWS SDKs' endpoint
/// rules give it: China (`cn-*`: `amazonaws.com.cn`), the ISO partitions,
/// and the rest (GovCloud `us-gov-*` included) under `amazonaws.com`.
fn aws_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-isob-") {
        "sc2s.sgov.gov"
    } else if region.starts_with("us-isof-") {
        "csp.hci.ic.gov"
    } else if region.starts_with("us-iso-") {
        "c2s.ic.gov"
    } else if region.starts_with("eu-isoe-") {
        "cloud.adc-e.uk"
    } else {
        "amazonaws.com"
    };
    format!("https://s3.{region}.{domain}")
}

/// Whether `bucket` can be a host name's first label under TLS: lower-case
/// letters, digits and hyphens, no dot.
fn virtual_hostable(bucket: &str) -> bool {
    !bucket.is_empty()
        && bucket.len() <= 63
        && (bucket.bytes()).all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-')
}

/// S3 error codes that say "try again": the server timed out an idle
/// upload (a streamed PUT from a slow source provokes `RequestTimeout`), the
/// body arrived short, or the service is busy or broken for a moment.
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "IncompleteBody",
    "InternalError",
    "SlowDown",
    "ServiceUnavailable",
    "OperationAborted",
];

/// S3 error codes that refuse a request's session token: expired
/// (`ExpiredToken`; AWS asks for new ones with `TokenRefreshRequired`), or
/// not one S3 knows (`InvalidToken`; MinIO says `InvalidTokenId`, also for
/// temporary keys sent without their token). The credentials are refreshed
/// and the request sent again, once (`S3Volume::send`).
const TOKEN_CODES: &[&str] = &[
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidTokenId",
];

/// An S3 error answer as a failure. S3 says why in its error document's
/// `Code`, often under a 400 or 403 that alone would read "rejected":
/// transient codes are retried; `BadDigest` (the body did not match its
/// `Content-MD5`, though its bytes were verified before they were sent: it
/// was damaged on the wire) once; an expired token, a skewed clock or an
/// expired presigned URL say what to fix; a missing bucket names it.
fn classify(
    status: reqwest::StatusCode,
    body: &str,
    bucket: &str,
    now: std::time::SystemTime,
) -> Failure {
    let code = xml_field(body, "Code").unwrap_or_default();
    let msg = xml_field(body, "Message").unwrap_or_default();
    let mut f = Failure::from_status(status, body);
    let with = |kind: FailureKind, detail: String| Failure {
        kind,
        detail,
        ..f.clone()
    };
    if TRANSIENT_CODES.contains(&code.as_str()) {
        return with(
            FailureKind::Transient,
            format!("HTTP {status} {code}: {msg}"),
        );
    }
    match code.as_str() {
        "BadDigest" => {
            f = with(
                FailureKind::Transient,
                format!(
                    "HTTP {status} BadDigest: the object's bytes did not match their \
                     Content-MD5 on arrival (they were verified before they were sent, so they \
                     were damaged on the way)"
                ),
            );
            f.max_retries = Some(1);
            f
        }
        "NoSuchBucket" => with(
            f.kind,
            format!(
                "bucket {bucket:?} does not exist (HTTP {status} NoSuchBucket): check Bucket and \
                 Endpoint in the volumes file"
            ),
        ),
        c if TOKEN_CODES.contains(&c) => with(
            FailureKind::Denied,
            format!("HTTP {status} {code}: the S3 server refused the session token ({msg})"),
        ),
        "RequestTimeTooSkewed" => with(
            FailureKind::Denied,
            format!(
                "HTTP {status} RequestTimeTooSkewed: this host's clock {} (S3 refuses \
                 requests more than 15 minutes off): set the clock (NTP) and rerun",
                skew(body, now)
            ),
        ),
        "AccessDenied" if msg.to_ascii_lowercase().contains("expired") => with(
            FailureKind::Denied,
            format!(
                "HTTP {status} AccessDenied ({msg}): a URL signed just before it was sent \
                 was already expired, so this host's clock {}: set the clock (NTP) and rerun",
                skew(body, now)
            ),
        ),
        _ if matches!(status.as_u16(), 401 | 403) => with(
            f.kind,
            format!(
                "HTTP {status} {code}: the S3 server refused the credentials or the request's \
                 signature: check AccessKeyID/SecretAccessKey (or AWS_ACCESS_KEY_ID/\
                 AWS_SECRET_ACCESS_KEY) and Region"
            ),
        ),
        "" => f,
        _ => with(f.kind, format!("HTTP {status} {code}: {msg}")),
    }
}

/// How far this host's clock is from the S3 server's, from an error
/// document's `ServerTime` (or `RequestTime` and `ServerTime`), in words.
fn skew(body: &str, now: std::time::SystemTime) -> String {
    let server = xml_field(body, "ServerTime").and_then(|t| s3_time(&t));
    let ours = xml_field(body, "RequestTime")
        .and_then(|t| s3_time(&t))
        .unwrap_or(now);
    let Some(server) = server else {
        return "is off from the S3 server's".into();
    };
    let (secs, way) = match ours.duration_since(server) {
        Ok(d) => (d.as_secs(), "ahead of"),
        Err(e) => (e.duration().as_secs(), "behind"),
    };
    format!("is {secs} s {way} the S3 server's")
}

/// An S3 timestamp: RFC 3339 (`2026-12-07T10:00:00Z`, `ServerTime`) or the
/// SigV4 basic form (`20261207T100000Z`, `RequestTime`).
fn s3_time(t: &str) -> Option<std::time::SystemTime> {
    let t = t.trim();
    if let Ok(v) = humantime::parse_rfc3339_weak(t.trim_end_matches('Z')) {
        return Some(v);
    }
    let b = t.as_bytes();
    if b.len() == 16 && b[8] == b'T' && b[15] == b'Z' {
        let ext = format!(
            "{}-{}-{}T{}:{}:{}",
            &t[0..4],
            &t[4..6],
            &t[6..8],
            &t[9..11],
            &t[11..13],
            &t[13..15]
        );
        return humantime::parse_rfc3339_weak(&ext).ok();
    }
    None
}

/// The text of `<NAME>…</NAME>` in an S3 error document.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</")? + start;
    Some(body[start..end].trim().chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> S3Params {
        S3Params {
            bucket: "keep-data".into(),
            region: "eu-west-1".into(),
            endpoint: None,
            use_path_style: false,
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("SECRETEXAMPLEKEY".into()),
            prefix_length: 3,
            index_page_size: 1000,
        }
    }

    #[test]
    fn addressing_styles() {
        let http = reqwest::Client::new();
        let h: BlockHash = "acbd18db4cc2f85cedef654fccc4a4d8".parse().unwrap();
        let v = S3Volume::new("v".into(), &opts(), VolumeTraits::default(), http.clone()).unwrap();
        let url = v
            .bucket
            .get_object(Some(v.creds.current().credentials()), &layout::key(&h, 3))
            .sign(EXPIRY);
        assert!(
            url.as_str()
                .starts_with("https://keep-data.s3.eu-west-1.amazonaws.com/acb/acbd18db"),
            "{url}"
        );
        assert_eq!(v.location(), "s3://s3.eu-west-1.amazonaws.com/keep-data");
        assert!(!format!("{v:?}").contains("SECRET"));
        let path = S3Params {
            use_path_style: true,
            ..opts()
        };
        let v = S3Volume::new("v".into(), &path, VolumeTraits::default(), http.clone()).unwrap();
        let url = v
            .bucket
            .get_object(Some(v.creds.current().credentials()), "k")
            .sign(EXPIRY);
        assert!(
            url.as_str()
                .starts_with("https://s3.eu-west-1.amazonaws.com/keep-data/k?"),
            "{url}"
        );
        // A custom endpoint is path-style whatever UsePathStyle says (keepstore).
        let custom = S3Params {
            endpoint: Some("http://127.0.0.1:9000/".into()),
            ..opts()
        };
        let v = S3Volume::new("v".into(), &custom, VolumeTraits::default(), http).unwrap();
        let url = v
            .bucket
            .get_object(Some(v.creds.current().credentials()), "k")
            .sign(EXPIRY);
        assert!(
            url.as_str()
                .starts_with("http://127.0.0.1:9000/keep-data/k?"),
            "{url}"
        );
        assert_eq!(v.location(), "s3://127.0.0.1:9000/keep-data");
    }

    /// A dotted bucket is addressed by path even on AWS (its virtual host
    /// would not match the certificate); other partitions have their own
    /// domains.
    #[test]
    fn dotted_buckets_and_partitions() {
        let http = reqwest::Client::new();
        let dotted = S3Params {
            bucket: "keep.data".into(),
            ..opts()
        };
        let v = S3Volume::new("v".into(), &dotted, VolumeTraits::default(), http.clone()).unwrap();
        let url = v
            .bucket
            .get_object(Some(v.creds.current().credentials()), "k")
            .sign(EXPIRY);
        assert!(
            url.as_str()
                .starts_with("https://s3.eu-west-1.amazonaws.com/keep.data/k?"),
            "{url}"
        );
        for (region, host) in [
            ("cn-north-1", "keep-data.s3.cn-north-1.amazonaws.com.cn"),
            ("us-gov-west-1", "keep-data.s3.us-gov-west-1.amazonaws.com"),
            ("us-iso-east-1", "keep-data.s3.us-iso-east-1.c2s.ic.gov"),
            (
                "us-isob-east-1",
                "keep-data.s3.us-isob-east-1.sc2s.sgov.gov",
            ),
        ] {
            let o = S3Params {
                region: region.into(),
                ..opts()
            };
            let v = S3Volume::new("v".into(), &o, VolumeTraits::default(), http.clone()).unwrap();
            let url = v
                .bucket
                .get_object(Some(v.creds.current().credentials()), "k")
                .sign(EXPIRY);
            assert_eq!(url.host_str(), Some(host), "{region}");
        }
        assert!(!virtual_hostable("a.b") && !virtual_hostable("A") && virtual_hostable("a-1"));
    }

    /// An S3 error page from a proxy that echoes the presigned URL is
    /// shown without its secrets.
    #[test]
    fn a_non_xml_error_page_is_redacted() {
        let page = redact_query_secrets(
            "<html>403 GET /b/k?X-Amz-Credential=AKIDEXAMPLE%2Fx&X-Amz-Signature=feed</html>",
        );
        let f = classify(
            reqwest::StatusCode::FORBIDDEN,
            &page,
            "b",
            std::time::SystemTime::now(),
        );
        assert!(
            !f.detail.contains("AKIDEXAMPLE") && !f.detail.contains("feed"),
            "{f}"
        );
    }

    #[test]
    fn a_listing_cut_short_parses_but_is_refused() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult \
                   xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>\
                   <IsTruncated>true</IsTruncated><NextContinuationToken>t\
                   </NextContinuationToken><Contents><Key>acbd18db4cc2f85cedef654fccc4a4d8\
                   </Key><Size>3</Size></Contents><Contents><Key>acbd18";
        // What makes the check in `list` needed: the parser takes it.
        let page = rusty_s3::actions::ListObjectsV2::parse_response(doc).unwrap();
        assert_eq!(page.contents.len(), 2);
        assert!(!doc.trim_end().ends_with("ListBucketResult>"));
    }

    #[test]
    fn error_documents() {
        let doc =
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>gone</Message></Error>";
        assert_eq!(xml_field(doc, "Code").as_deref(), Some("NoSuchKey"));
        assert_eq!(xml_field(doc, "Message").as_deref(), Some("gone"));
        assert_eq!(xml_field(doc, "Nope"), None);
    }

    fn doc(code: &str, extra: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message>{extra}</Error>"
        )
    }

    /// S3's error code decides, not its status.
    #[test]
    fn error_codes_decide() {
        use reqwest::StatusCode as S;
        let now = std::time::SystemTime::now();
        let c = |status: S, code: &str| classify(status, &doc(code, ""), "b", now);
        for code in TRANSIENT_CODES {
            let f = c(S::BAD_REQUEST, code);
            assert!(f.is_transient(), "{code}: {f}");
            assert_eq!(f.max_retries, None);
        }
        let f = c(S::BAD_REQUEST, "BadDigest");
        assert!(f.is_transient() && f.max_retries == Some(1), "{f}");
        assert!(f.detail.contains("damaged on the way"));
        let f = c(S::BAD_REQUEST, "ExpiredToken");
        assert_eq!(f.kind, FailureKind::Denied);
        assert!(f.detail.contains("session token"), "{f}");
        let f = c(S::FORBIDDEN, "InvalidTokenId");
        assert_eq!(f.kind, FailureKind::Denied);
        let f = c(S::FORBIDDEN, "SignatureDoesNotMatch");
        assert_eq!(f.kind, FailureKind::Denied);
        assert!(f.detail.contains("AccessKeyID/SecretAccessKey"), "{f}");
        let f = c(S::NOT_FOUND, "NoSuchBucket");
        assert_eq!(f.kind, FailureKind::NotFound);
        assert!(f.detail.contains("bucket \"b\" does not exist"), "{f}");
        let f = c(S::BAD_REQUEST, "InvalidArgument");
        assert_eq!(f.kind, FailureKind::Rejected);
        // No error document: the status alone.
        let f = classify(S::SERVICE_UNAVAILABLE, "", "b", now);
        assert!(f.is_transient());
        assert_eq!(f.status, Some(503));
    }

    /// A skewed clock is said with how far it is off, from the error
    /// document's times (or this host's clock when it gives only the
    /// server's), and an expired presigned URL too.
    #[test]
    fn skewed_clocks_say_by_how_much() {
        use reqwest::StatusCode as S;
        let now = humantime::parse_rfc3339("2026-12-07T10:30:00Z").unwrap();
        let body = doc(
            "RequestTimeTooSkewed",
            "<RequestTime>20261207T103000Z</RequestTime><ServerTime>2026-12-07T10:00:00Z</ServerTime>",
        );
        let f = classify(S::FORBIDDEN, &body, "b", now);
        assert_eq!(f.kind, FailureKind::Denied);
        assert!(
            f.detail.contains("is 1800 s ahead of the S3 server's"),
            "{f}"
        );
        let body = doc(
            "RequestTimeTooSkewed",
            "<ServerTime>2026-12-07T10:31:40Z</ServerTime>",
        );
        let f = classify(S::FORBIDDEN, &body, "b", now);
        assert!(f.detail.contains("is 100 s behind the S3 server's"), "{f}");
        let body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>\
                    <ServerTime>2026-12-07T10:50:00Z</ServerTime></Error>";
        let f = classify(S::FORBIDDEN, body, "b", now);
        assert!(
            f.detail.contains("already expired") && f.detail.contains("1200 s behind"),
            "{f}"
        );
        let f = classify(S::FORBIDDEN, &doc("RequestTimeTooSkewed", ""), "b", now);
        assert!(f.detail.contains("is off from the S3 server's"), "{f}");
    }

    /// The test volume at `endpoint` (flat keys), with `change` applied.
    fn volume_at(endpoint: Option<String>, change: impl FnOnce(&mut S3Params)) -> S3Volume {
        let mut o = opts();
        o.endpoint = endpoint;
        o.prefix_length = 0;
        change(&mut o);
        S3Volume::new(
            "v".into(),
            &o,
            VolumeTraits::default(),
            reqwest::Client::new(),
        )
        .unwrap()
    }

    /// A ListObjectsV2 page of `keys` (1 byte each), truncated when it
    /// gives a `next` continuation token.
    fn listing(keys: &[&str], next: Option<&str>) -> String {
        let contents: String = (keys.iter())
            .map(|k| format!("<Contents><Key>{k}</Key><Size>1</Size></Contents>"))
            .collect();
        let tail = next
            .map(|t| format!("<NextContinuationToken>{t}</NextContinuationToken>"))
            .unwrap_or_default();
        format!(
            "<?xml version=\"1.0\"?><ListBucketResult \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>keep-data</Name>\
             <KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>{}</IsTruncated>\
             {contents}{tail}</ListBucketResult>",
            keys.len(),
            next.is_some()
        )
    }

    /// A raw HTTP server on 127.0.0.1 that answers each request with the
    /// next of `answers` (status, body) and records its request lines.
    async fn scripted(
        answers: Vec<(u16, String)>,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for (status, body) in answers {
                let (mut c, _) = l.accept().await.unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 65536];
                // Headers, then as many body bytes as Content-Length says.
                loop {
                    let n = c.read(&mut buf).await.unwrap_or(0);
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(line);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            }
        });
        (format!("http://{addr}"), seen)
    }

    /// A `recent/` marker PUT that fails is retried alone: the data object
    /// is sent once.
    #[tokio::test]
    async fn a_failed_marker_is_retried_without_the_data() {
        let err = "<Error><Code>InternalError</Code><Message>x</Message></Error>";
        let answers = [(200, ""), (500, err), (503, ""), (200, "")];
        let (url, seen) = scripted(answers.map(|(c, b)| (c, b.to_string())).into()).await;
        let v = volume_at(Some(url), |_| {});
        let data = bytes::Bytes::from_static(b"marker test block");
        let h = BlockHash::of(&data);
        v.write(&h, data.len() as u64, Body::Whole(vec![data]))
            .await
            .unwrap();
        let lines = seen.lock().unwrap().clone();
        let data_puts = lines
            .iter()
            .filter(|l| l.contains(&format!("/keep-data/{h}")))
            .count();
        let marker_puts = lines
            .iter()
            .filter(|l| l.contains("/keep-data/recent/"))
            .count();
        assert_eq!((data_puts, marker_puts), (1, 3), "{lines:#?}");
    }

    /// A listing page that fails transiently is asked again with its
    /// continuation token: the listing does not start over.
    #[tokio::test]
    async fn a_failed_page_is_asked_again_alone() {
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let busy = "<Error><Code>SlowDown</Code><Message>x</Message></Error>";
        let answers = vec![
            (200, listing(&[a], Some("T2"))),
            (503, busy.to_string()),
            (200, listing(&[b], None)),
        ];
        let (url, seen) = scripted(answers).await;
        let v = volume_at(Some(url), |o| o.index_page_size = 1);
        let answered = AtomicBool::new(false);
        let (entries, keys) = v.list("", &answered, &|_| {}, Vec::new()).await.unwrap();
        assert_eq!((entries.len(), keys), (2, 2));
        let lines = seen.lock().unwrap().clone();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[1].contains("continuation-token=T2")
                && lines[2].contains("continuation-token=T2"),
            "{lines:#?}"
        );
    }

    /// A listing page past the bound is a malformed listing, not read to
    /// its end; an HTML error page echoing the presigned URL is shown
    /// without its X-Amz-* values.
    #[tokio::test]
    async fn long_pages_and_error_pages() {
        let long = format!("{}{}", listing(&[], None), " ".repeat(PAGE_MAX));
        let (url, _) = scripted(vec![(200, long)]).await;
        let v = volume_at(Some(url), |_| {});
        let answered = AtomicBool::new(false);
        let f = v
            .list("", &answered, &|_| {}, Vec::new())
            .await
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Malformed, "{f}");
        assert!(f.detail.contains("longer than 4 MiB"), "{f}");
        let page = "<html><h1>502</h1>upstream failed for /keep-data/?list-type=2&\
                    X-Amz-Credential=AKIDEXAMPLE%2F20261207&X-Amz-Signature=0123feed</html>";
        let (url, _) = scripted(vec![(502, page.to_string()); 5]).await;
        let v = volume_at(Some(url), |_| {});
        let f = v
            .list("", &answered, &|_| {}, Vec::new())
            .await
            .unwrap_err();
        assert!(f.is_transient(), "{f}");
        assert!(f.detail.contains("upstream failed"), "{f}");
        assert!(
            !f.detail.contains("AKIDEXAMPLE") && !f.detail.contains("0123feed"),
            "{f}"
        );
    }

    /// With a fan-out, a listing is the 16 next-digit listings.
    #[tokio::test]
    async fn a_listing_fans_out_by_next_digit() {
        let (url, seen) = scripted(vec![(200, listing(&[], None)); 16]).await;
        let v = volume_at(Some(url), |_| {}).with_fanout(4);
        let answered = AtomicBool::new(false);
        let (entries, keys) = v.list("a", &answered, &|_| {}, Vec::new()).await.unwrap();
        assert_eq!((entries.len(), keys), (0, 0));
        let mut asked: Vec<String> = (seen.lock().unwrap().iter())
            .filter_map(|l| l.split("prefix=").nth(1).map(|p| p[..2].to_string()))
            .collect();
        asked.sort();
        let want: Vec<String> = (0..16).map(|d| format!("a{d:x}")).collect();
        assert_eq!(asked, want);
    }

    /// A page size over S3's 1000 keys is clamped (rusty-s3 parses MaxKeys
    /// as 16 bits).
    #[test]
    fn page_size_is_clamped() {
        let v = volume_at(None, |o| o.index_page_size = 50_000);
        assert_eq!(v.page_size, MAX_PAGE);
    }
}
