//! A keepstore Azure Blob volume as a store (`Driver: Azure` in a
//! `--*-volumes` file or cluster config): the container in keepstore's own
//! layout (services/keepstore/azure_blob_volume.go; docs/protocol.md,
//! "Azure Blob volumes"), so that a keepstore can mount what keep-rsync
//! wrote, and keep-rsync can read what a keepstore wrote.
//!
//! A block is the block blob named by its hash, at the container's top.
//! The index is the container's List Blobs by prefix with metadata, paged
//! by marker; blobs whose metadata has `expires_at` are keepstore's trash:
//! not listed, not read, and overwritten (blob and metadata) by a write. A
//! write is one Put Blob of the whole block with `Content-MD5` (the
//! locator's hash, known before the first byte), so the service refuses a
//! body damaged on its way. The block's timestamp is the blob's
//! Last-Modified, which the Put sets.
//!
//! Requests go to `https://ACCOUNT.blob.STORAGEBASEURL/CONTAINER`, exactly
//! as keepstore's, through our own reqwest client (retries,
//! `--max-per-service`, `--bwlimit`, metrics and `-v` work as for every
//! store), signed with the account key by [`shared_key`]. Failures are
//! classified by Azure's error code ([`classify`]), never showing the key.

pub mod shared_key;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::StreamExt;

use super::{BlockStream, Body, VolumeTraits};
use crate::protocol::client::{
    body_chunks, describe_http_error, read_capped, Failure, FailureKind, PutOk,
};
use crate::protocol::index::Entry;
use crate::protocol::{BlockHash, MAX_BLOCK_SIZE};
use crate::volumes_file::AzureParams;
use shared_key::{SharedKey, Signed};

/// The REST API version asked for (`x-ms-version`): one every Azure
/// service and Azurite serve, with the List Blobs and Put Blob used here.
pub const API_VERSION: &str = "2021-12-02";

/// The metadata key of keepstore's trash mark (a Unix time).
const EXPIRES_AT: &str = "expires_at";

/// One Azure Blob volume.
pub struct AzureVolume {
    pub id: String,
    key: SharedKey,
    container: String,
    /// `https://ACCOUNT.blob.BASE/CONTAINER`
    base: url::Url,
    http: reqwest::Client,
    request_timeout: Duration,
    list_retry_delay: Duration,
    list_max_attempts: u32,
    write_race_interval: Duration,
    /// Next-digit sub-listings run at once ([`AzureVolume::with_fanout`]).
    fanout: usize,
    /// `azure://BASE/ACCOUNT/CONTAINER`, keepstore's DeviceID of the volume.
    location: String,
    pub traits: VolumeTraits,
}

impl std::fmt::Debug for AzureVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureVolume")
            .field("id", &self.id)
            .field("location", &self.location)
            .finish()
    }
}

impl AzureVolume {
    /// Set up the volume. `Err` names what is wrong, never the key.
    pub fn new(
        id: String,
        p: &AzureParams,
        traits: VolumeTraits,
        http: reqwest::Client,
    ) -> Result<AzureVolume, String> {
        let key = SharedKey::new(&p.account_name, &p.account_key)?;
        let text = format!(
            "https://{}.blob.{}/{}",
            p.account_name, p.base_url, p.container
        );
        let base: url::Url = text.parse().map_err(|e| {
            format!(
                "https://{}.blob.{}/{} is not a URL ({e}): check StorageAccountName, \
                 StorageBaseURL and ContainerName",
                p.account_name, p.base_url, p.container
            )
        })?;
        Ok(AzureVolume {
            id,
            key,
            container: p.container.clone(),
            base,
            http,
            request_timeout: p.request_timeout,
            list_retry_delay: p.list_retry_delay,
            list_max_attempts: p.list_max_attempts.max(1),
            write_race_interval: p.write_race_interval,
            fanout: 1,
            location: format!("azure://{}/{}/{}", p.base_url, p.account_name, p.container),
            traits,
        })
    }

    /// List by next hex digit, up to `n` sub-listings at once (as an S3
    /// volume does): a container listing is a chain of pages, and the 16
    /// chains of `PREFIX0` … `PREFIXf` can run side by side.
    pub fn with_fanout(mut self, n: usize) -> AzureVolume {
        self.fanout = n.max(1);
        self
    }

    pub(super) fn location(&self) -> String {
        self.location.clone()
    }

    /// What to fix when the service refuses a request (`f`): the account
    /// and its key, named by their keys in the volumes file.
    pub(super) fn refused_advice(&self, role: crate::role::Role, f: &Failure) -> String {
        format!(
            "the {role} Azure volume {} ({}) refuses our requests ({f}): check its \
             StorageAccountName and StorageAccountKey in the volumes file (the key is one of \
             the storage account's access keys), and that the account may read (and, on the \
             destination, write) container {:?}.",
            self.id, self.location, self.container
        )
    }

    fn blob_url(&self, hash: &BlockHash) -> url::Url {
        let mut u = self.base.clone();
        u.set_path(&format!("{}/{hash}", self.base.path()));
        u
    }

    /// A signed request: `x-ms-date`, `x-ms-version`, `extra` x-ms headers,
    /// and the length and MD5 of its body when it has one.
    fn request(
        &self,
        method: reqwest::Method,
        url: url::Url,
        extra: &[(&str, &str)],
        body: Option<(u64, &str)>,
    ) -> reqwest::RequestBuilder {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let mut ms: Vec<(&str, &str)> =
            vec![("x-ms-date", date.as_str()), ("x-ms-version", API_VERSION)];
        ms.extend_from_slice(extra);
        let auth = self.key.authorization(
            method.as_str(),
            &url,
            &Signed {
                content_length: body.map(|b| b.0),
                content_md5: body.map(|b| b.1),
                ms_headers: &ms,
            },
        );
        let mut req = self.http.request(method, url);
        for (k, v) in &ms {
            req = req.header(*k, *v);
        }
        if let Some((len, md5)) = body {
            req = req
                .header(reqwest::header::CONTENT_LENGTH, len)
                .header("content-md5", md5);
        }
        req.header(reqwest::header::AUTHORIZATION, auth)
    }

    /// Send `req`; `Ok` when the answer is a success. `whole`: the
    /// RequestTimeout covers the whole exchange (not a read's body, which
    /// streams at the copy's pace, under the client's stall timeout).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        whole: bool,
    ) -> Result<reqwest::Response, Failure> {
        let req = if whole && !self.request_timeout.is_zero() {
            req.timeout(self.request_timeout)
        } else {
            req
        };
        let sent = req.send();
        let resp = if self.request_timeout.is_zero() {
            sent.await
        } else {
            match tokio::time::timeout(self.request_timeout, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Failure::new(
                        FailureKind::Transient,
                        format!(
                            "no answer within the volume's RequestTimeout ({})",
                            humantime::format_duration(self.request_timeout)
                        ),
                    ))
                }
            }
        }
        .map_err(|e| Failure::from_http(&e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status();
            let code = resp
                .headers()
                .get("x-ms-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = read_capped(resp, 4096).await;
            Err(classify(
                status,
                code.as_deref(),
                &body,
                self.key.account(),
                &self.container,
            ))
        }
    }

    /// One List Blobs page, retried on its own (its marker kept) up to
    /// `ListBlobsMaxAttempts` attempts `ListBlobsRetryDelay` apart when it
    /// fails transiently, as keepstore retries its pages.
    async fn page(&self, url: url::Url, keys: u64) -> Result<String, Failure> {
        let mut attempt = 1;
        loop {
            let r = match self
                .send(
                    self.request(reqwest::Method::GET, url.clone(), &[], None),
                    true,
                )
                .await
            {
                Ok(resp) => resp.text().await.map_err(|e| {
                    Failure::new(
                        FailureKind::Transient,
                        format!(
                            "listing broke after {keys} blobs: {}",
                            describe_http_error(&e)
                        ),
                    )
                }),
                Err(f) => Err(f),
            };
            match r {
                Err(f) if f.is_transient() && attempt < self.list_max_attempts => {
                    tracing::info!(
                        event = "retry",
                        op = "index",
                        service = self.id.as_str(),
                        attempt,
                        error = %f,
                        "listing page after {keys} blobs of Azure volume {}: {f}; retrying that \
                         page in {}",
                        self.id,
                        humantime::format_duration(self.list_retry_delay)
                    );
                    attempt += 1;
                    tokio::time::sleep(self.list_retry_delay).await;
                }
                r => return r,
            }
        }
    }

    /// Every block under `prefix`: one chain of pages, or (with a fan-out
    /// and room in the prefix) the 16 next-digit chains, `fanout` at once.
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

    /// One chain of List Blobs pages under `prefix`.
    async fn list_chain(
        &self,
        prefix: &str,
        answered: &AtomicBool,
        on_bytes: &(dyn Fn(u64) + Sync),
        mut into: Vec<Entry>,
    ) -> Result<(Vec<Entry>, u64), Failure> {
        let mut marker: Option<String> = None;
        let mut last = String::new();
        let mut keys = 0u64;
        let malformed = |why: String| Failure::new(FailureKind::Malformed, why);
        let now = SystemTime::now();
        loop {
            let mut url = self.base.clone();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("restype", "container")
                    .append_pair("comp", "list")
                    .append_pair("include", "metadata")
                    .append_pair("prefix", prefix);
                if let Some(m) = &marker {
                    q.append_pair("marker", m);
                }
            }
            let text = self.page(url, keys).await?;
            answered.store(true, Ordering::Relaxed);
            on_bytes(text.len() as u64);
            let page = parse_listing(&text).map_err(|why| {
                malformed(format!(
                    "container listing after {keys} blobs that is not a List Blobs answer \
                     ({why}): the listing was cut short or the server is not Azure Blob \
                     Storage"
                ))
            })?;
            for b in page.blobs {
                if !b.name.starts_with(prefix) || (keys > 0 && b.name <= last) {
                    return Err(malformed(format!(
                        "container listing that is not what was asked for: blob {:?} after \
                         {last:?} under prefix {prefix:?} (blobs must come in order, under \
                         the prefix)",
                        b.name
                    )));
                }
                keys += 1;
                if let Some(hash) = block_of(&b.name) {
                    let Some(size) = b.size else {
                        return Err(malformed(format!(
                            "container listing whose entry for {:?} has no <Content-Length>",
                            b.name
                        )));
                    };
                    // An empty blob younger than WriteRaceInterval is a
                    // write under way (keepstore does not list it either),
                    // unless it is the empty block, whole when empty.
                    let racing = size == 0
                        && hash.to_string() != crate::protocol::EMPTY_BLOCK_HASH
                        && b.last_modified
                            .is_some_and(|t| t + self.write_race_interval > now);
                    if !b.trashed && !racing && size <= MAX_BLOCK_SIZE {
                        into.push(Entry {
                            hash,
                            size: size as u32,
                        });
                    }
                }
                last = b.name;
            }
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => return Ok((into, keys)),
            }
        }
    }

    /// A trashed blob is not there, as for keepstore.
    fn trashed(resp: &reqwest::Response) -> bool {
        resp.headers()
            .iter()
            .any(|(k, v)| k.as_str() == "x-ms-meta-expires_at" && !v.as_bytes().is_empty())
    }

    fn gone(hash: &BlockHash) -> Failure {
        Failure::new(
            FailureKind::NotFound,
            format!("blob {hash} is in keepstore's trash (its metadata has {EXPIRES_AT})"),
        )
    }

    /// Get Blob Properties: the blob's size, unless it is missing or
    /// trashed.
    pub(super) async fn head(&self, hash: &BlockHash) -> Result<Option<u64>, Failure> {
        let req = self.request(reqwest::Method::HEAD, self.blob_url(hash), &[], None);
        let resp = self.send(req, true).await?;
        if Self::trashed(&resp) {
            return Err(Self::gone(hash));
        }
        Ok(resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok()))
    }

    /// Get Blob: its bytes, once the service answered with a blob of the
    /// locator's size that is not trashed.
    pub(super) async fn read(&self, hash: &BlockHash, size: u64) -> Result<BlockStream, Failure> {
        let req = self.request(reqwest::Method::GET, self.blob_url(hash), &[], None);
        let resp = self.send(req, false).await?;
        if Self::trashed(&resp) {
            return Err(Self::gone(hash));
        }
        if let Some(len) = resp.content_length() {
            if len != size {
                return Err(Failure::new(
                    FailureKind::BadData,
                    format!(
                        "blob {hash} is {len} bytes where its locator says {size} (not copied)"
                    ),
                ));
            }
        }
        Ok(body_chunks(resp).boxed())
    }

    /// One Put Blob (BlockBlob) of the whole block, with its Content-MD5:
    /// it replaces any blob of that name and its metadata (a trashed copy
    /// comes back as new).
    pub(super) async fn write(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
    ) -> Result<PutOk, Failure> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(hash.0);
        let req = self
            .request(
                reqwest::Method::PUT,
                self.blob_url(hash),
                &[("x-ms-blob-type", "BlockBlob")],
                Some((size, &md5)),
            )
            .body(body.into_reqwest());
        self.send(req, true).await?;
        Ok(super::volume_put_ok(&self.traits))
    }
}

/// The block a blob name stands for: keepstore's blobs are named by the
/// 32 lower-case hex digits of the hash; any other name is not a block.
fn block_of(name: &str) -> Option<BlockHash> {
    let ok = name.len() == 32
        && name
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if ok {
        name.parse().ok()
    } else {
        None
    }
}

/// Azure error codes that say "try again".
const TRANSIENT_CODES: &[&str] = &["ServerBusy", "OperationTimedOut", "InternalError"];

/// An Azure error answer as a failure, by its error code (`x-ms-error-code`,
/// else the error document's `Code`) before its status: transient codes are
/// retried; `Md5Mismatch` (the body did not match its Content-MD5, though
/// its bytes were verified before they were sent) once; a refused
/// signature names the account (never the key); a missing container names
/// it.
fn classify(
    status: reqwest::StatusCode,
    header_code: Option<&str>,
    body: &str,
    account: &str,
    container: &str,
) -> Failure {
    let code = header_code
        .map(str::to_string)
        .or_else(|| xml_field(body, "Code"))
        .unwrap_or_default();
    let msg = xml_field(body, "Message")
        .map(|m| m.lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    let mut f = Failure::from_status(status, "");
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
        "Md5Mismatch" => {
            f = with(
                FailureKind::Transient,
                format!(
                    "HTTP {status} Md5Mismatch: the blob's bytes did not match their \
                     Content-MD5 on arrival (they were verified before they were sent, so they \
                     were damaged on the way)"
                ),
            );
            f.max_retries = Some(1);
            f
        }
        "AuthenticationFailed" => with(
            FailureKind::Denied,
            format!(
                "HTTP {status} AuthenticationFailed: the storage account {account:?} refused \
                 the request's SharedKey signature: check StorageAccountName and \
                 StorageAccountKey (one of that account's access keys), and this host's clock"
            ),
        ),
        "ContainerNotFound" => with(
            FailureKind::NotFound,
            format!(
                "container {container:?} does not exist in storage account {account:?} \
                 (HTTP {status} ContainerNotFound): check ContainerName, StorageAccountName and \
                 StorageBaseURL in the volumes file"
            ),
        ),
        _ if matches!(status.as_u16(), 401 | 403) => with(
            FailureKind::Denied,
            format!(
                "HTTP {status} {code}: the storage account {account:?} refused the request: \
                 check StorageAccountName and StorageAccountKey, and the account's permissions \
                 on container {container:?}"
            ),
        ),
        "" => with(f.kind, format!("HTTP {status}")),
        _ => with(f.kind, format!("HTTP {status} {code}: {msg}")),
    }
}

/// The text of `<NAME>…</NAME>` in an error document.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</")? + start;
    Some(body[start..end].trim().chars().take(200).collect())
}

/// One blob of a List Blobs page.
#[derive(Debug, Default, PartialEq)]
struct Listed {
    name: String,
    size: Option<u64>,
    last_modified: Option<SystemTime>,
    /// Its metadata has a non-empty `expires_at`.
    trashed: bool,
}

#[derive(Debug, Default)]
struct Page {
    blobs: Vec<Listed>,
    next_marker: Option<String>,
}

/// A List Blobs answer (`EnumerationResults`). `Err` when it is not
/// well-formed XML or ends before its root element does (a document cut
/// short must never be taken for the container's contents).
fn parse_listing(text: &str) -> Result<Page, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut page = Page::default();
    let mut blob: Option<Listed> = None;
    let mut ended = false;
    let mut text_of = String::new();
    loop {
        match reader.read_event() {
            Err(e) => return Err(format!("not well-formed XML: {e}")),
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if path.is_empty() && name != "EnumerationResults" {
                    return Err(format!("its root element is <{name}>"));
                }
                if path.len() == 2 && path[1] == "Blobs" && name == "Blob" {
                    blob = Some(Listed::default());
                }
                path.push(name);
                text_of.clear();
            }
            Ok(Event::Text(t)) => {
                let s = t
                    .unescape()
                    .map_err(|e| format!("not well-formed XML: {e}"))?;
                text_of.push_str(&s);
            }
            Ok(Event::CData(t)) => text_of.push_str(&String::from_utf8_lossy(&t)),
            Ok(Event::End(_)) => {
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                match p[..] {
                    ["EnumerationResults", "NextMarker"] if !text_of.trim().is_empty() => {
                        page.next_marker = Some(text_of.trim().to_string())
                    }
                    ["EnumerationResults", "Blobs", "Blob", "Name"] => {
                        if let Some(b) = &mut blob {
                            b.name = text_of.clone();
                        }
                    }
                    ["EnumerationResults", "Blobs", "Blob", "Properties", "Content-Length"] => {
                        if let Some(b) = &mut blob {
                            b.size = Some(text_of.trim().parse().map_err(|_| {
                                format!("a <Content-Length> of {:?}", text_of.trim())
                            })?);
                        }
                    }
                    ["EnumerationResults", "Blobs", "Blob", "Properties", "Last-Modified"] => {
                        if let Some(b) = &mut blob {
                            b.last_modified = httpdate::parse_http_date(text_of.trim()).ok();
                        }
                    }
                    ["EnumerationResults", "Blobs", "Blob", "Metadata", key]
                        if key.eq_ignore_ascii_case(EXPIRES_AT) =>
                    {
                        if let Some(b) = &mut blob {
                            b.trashed |= !text_of.trim().is_empty();
                        }
                    }
                    ["EnumerationResults", "Blobs", "Blob"] => {
                        if let Some(b) = blob.take() {
                            page.blobs.push(b);
                        }
                    }
                    ["EnumerationResults"] => ended = true,
                    _ => {}
                }
                path.pop();
                text_of.clear();
            }
            Ok(_) => {}
        }
    }
    if !ended {
        return Err("it ends before its </EnumerationResults>".into());
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> AzureParams {
        AzureParams {
            account_name: "keepacct".into(),
            account_key: "U0VDUkVUc2VjcmV0a2V5".into(),
            base_url: "core.windows.net".into(),
            container: "keep-blocks".into(),
            request_timeout: Duration::from_secs(600),
            list_retry_delay: Duration::from_secs(10),
            list_max_attempts: 12,
            write_race_interval: Duration::from_secs(15),
        }
    }

    #[test]
    fn addressing_is_keepstores() {
        let v = AzureVolume::new(
            "v".into(),
            &params(),
            VolumeTraits::default(),
            reqwest::Client::new(),
        )
        .unwrap();
        let h: BlockHash = "acbd18db4cc2f85cedef654fccc4a4d8".parse().unwrap();
        assert_eq!(
            v.blob_url(&h).as_str(),
            "https://keepacct.blob.core.windows.net/keep-blocks/acbd18db4cc2f85cedef654fccc4a4d8"
        );
        assert_eq!(
            v.location(),
            "azure://core.windows.net/keepacct/keep-blocks"
        );
        let dbg = format!("{v:?}");
        assert!(
            !dbg.contains("U0VDUkVU") && !dbg.contains("SECRET"),
            "{dbg}"
        );
        let p = AzureParams {
            base_url: "azurite.test:10000".into(),
            ..params()
        };
        let v = AzureVolume::new(
            "v".into(),
            &p,
            VolumeTraits::default(),
            reqwest::Client::new(),
        )
        .unwrap();
        assert_eq!(
            v.blob_url(&h).as_str(),
            "https://keepacct.blob.azurite.test:10000/keep-blocks/acbd18db4cc2f85cedef654fccc4a4d8"
        );
    }

    #[test]
    fn only_block_hashes_are_blocks() {
        assert!(block_of("acbd18db4cc2f85cedef654fccc4a4d8").is_some());
        for name in [
            "ACBD18DB4CC2F85CEDEF654FCCC4A4D8",
            "acbd18db4cc2f85cedef654fccc4a4d",
            "acbd18db4cc2f85cedef654fccc4a4d8.tmp",
            "recent/acbd18db4cc2f85cedef654fccc4a4d8",
            "",
        ] {
            assert!(block_of(name).is_none(), "{name}");
        }
    }

    const PAGE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults \
        ServiceEndpoint=\"https://a.blob.core.windows.net/\" ContainerName=\"c\"><Prefix>a</Prefix>\
        <Blobs><Blob><Name>acbd18db4cc2f85cedef654fccc4a4d8</Name><Properties>\
        <Last-Modified>Mon, 07 Dec 2026 10:00:00 GMT</Last-Modified><Content-Length>3</Content-Length>\
        <BlobType>BlockBlob</BlobType></Properties><Metadata /></Blob>\
        <Blob><Name>ad0234829205b9033196ba818f7a872b</Name><Properties>\
        <Content-Length>4</Content-Length></Properties><Metadata><touch>1</touch>\
        <expires_at>1700000000</expires_at></Metadata></Blob></Blobs>\
        <NextMarker>2!72!MDAwMDE4IWFk&amp;</NextMarker></EnumerationResults>";

    #[test]
    fn a_listing_page_is_read_with_its_trash_marks() {
        let p = parse_listing(PAGE).unwrap();
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.blobs[0].name, "acbd18db4cc2f85cedef654fccc4a4d8");
        assert_eq!(p.blobs[0].size, Some(3));
        assert!(p.blobs[0].last_modified.is_some() && !p.blobs[0].trashed);
        assert!(p.blobs[1].trashed);
        assert_eq!(p.next_marker.as_deref(), Some("2!72!MDAwMDE4IWFk&"));
        let last = "<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>";
        let p = parse_listing(last).unwrap();
        assert!(p.blobs.is_empty() && p.next_marker.is_none());
    }

    #[test]
    fn a_listing_cut_short_is_refused() {
        for cut in [PAGE.len() - 25, PAGE.len() / 2, 60] {
            let e = parse_listing(&PAGE[..cut]).unwrap_err();
            assert!(
                e.contains("ends before") || e.contains("not well-formed"),
                "{cut}: {e}"
            );
        }
        assert!(parse_listing("<Error><Code>x</Code></Error>").is_err());
    }

    /// Azure's error code decides, not its status.
    #[test]
    fn error_codes_decide() {
        use reqwest::StatusCode as S;
        let c = |status: S, code: &str| classify(status, Some(code), "", "acct", "keep");
        for code in TRANSIENT_CODES {
            let f = c(S::BAD_REQUEST, code);
            assert!(f.is_transient(), "{code}: {f}");
            assert_eq!(f.max_retries, None);
        }
        let f = c(S::BAD_REQUEST, "Md5Mismatch");
        assert!(f.is_transient() && f.max_retries == Some(1), "{f}");
        let f = c(S::FORBIDDEN, "AuthenticationFailed");
        assert_eq!(f.kind, FailureKind::Denied);
        assert!(
            f.detail.contains("\"acct\"") && f.detail.contains("StorageAccountKey"),
            "{f}"
        );
        let f = c(S::NOT_FOUND, "ContainerNotFound");
        assert_eq!(f.kind, FailureKind::NotFound);
        assert!(
            f.detail.contains("container \"keep\" does not exist"),
            "{f}"
        );
        // The code from the error document when no header gives it.
        let doc = "<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code><Message>busy\nRequestId:1</Message></Error>";
        let f = classify(S::SERVICE_UNAVAILABLE, None, doc, "acct", "keep");
        assert!(
            f.is_transient() && f.detail.contains("ServerBusy: busy"),
            "{f}"
        );
        assert!(!f.detail.contains("RequestId"), "{f}");
        let f = classify(S::BAD_REQUEST, None, "", "acct", "keep");
        assert_eq!(f.kind, FailureKind::Rejected);
    }
}
