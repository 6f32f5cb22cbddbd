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
//! from its source to the bucket and is still checked twice.
//!
//! The index is one ListObjectsV2 listing of the data keys under the prefix,
//! paged by `IndexPageSize`, stopping where data keys end (`recent/` and
//! `trash/` sort after them). keepstore's own index also lists `recent/` to
//! take the block timestamps from it; keep-rsync's index carries no
//! timestamps, so it does not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::{BlockStream, Body, VolumeTraits};
use crate::protocol::client::{
    body_chunks, describe_http_error, read_capped, Failure, FailureKind, PutOk,
};
use crate::protocol::index::Entry;
use crate::protocol::layout::s3 as layout;
use crate::protocol::{BlockHash, MAX_BLOCK_SIZE};
use crate::volumes_file::S3Params;

/// How long a presigned URL is good for: each is signed just before its
/// request is sent, and S3 checks it when the request arrives.
const EXPIRY: Duration = Duration::from_secs(15 * 60);

/// One S3 volume.
pub struct S3Volume {
    pub id: String,
    bucket: Bucket,
    creds: Credentials,
    http: reqwest::Client,
    prefix_length: usize,
    page_size: u32,
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
    /// (the volume's keys, else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN`). `Err` is a message naming what is wrong,
    /// never a secret.
    pub fn new(
        id: String,
        o: &S3Params,
        traits: VolumeTraits,
        http: reqwest::Client,
    ) -> Result<S3Volume, String> {
        let (endpoint, style) = match &o.endpoint {
            Some(e) => (e.trim_end_matches('/').to_string(), UrlStyle::Path),
            None => (
                format!("https://s3.{}.amazonaws.com", o.region),
                if o.use_path_style {
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
        let creds = match (&o.access_key_id, &o.secret_access_key) {
            (Some(k), Some(s)) => Credentials::new(k.clone(), s.clone()),
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "it gives only one of AccessKeyID and SecretAccessKey: give both, or \
                            neither and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        .into(),
                )
            }
            (None, None) => Credentials::from_env().ok_or(
                "it gives no AccessKeyID/SecretAccessKey and AWS_ACCESS_KEY_ID/\
                 AWS_SECRET_ACCESS_KEY are not set (instance roles are not supported): give the \
                 keys in the volume's DriverParameters or in the environment",
            )?,
        };
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
            page_size: o.index_page_size.max(1),
            traits,
        })
    }

    /// What to fix when the S3 server refuses a request (`f`): the
    /// volume's credentials and Region, never an Arvados token.
    pub(super) fn refused_advice(&self, role: crate::role::Role, f: &Failure) -> String {
        format!(
            "the {role} S3 volume {} ({}) refuses our requests ({f}): check its \
             AccessKeyID/SecretAccessKey (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and Region \
             in the volumes file, and that those credentials may read (and, on the destination, \
             write) the bucket.",
            self.id, self.location
        )
    }

    pub(super) fn location(&self) -> String {
        self.location.clone()
    }

    /// A failed answer as a failure; a missing bucket and refused
    /// credentials say what to fix.
    async fn refused(&self, resp: reqwest::Response) -> Failure {
        let status = resp.status();
        let body = read_capped(resp, 4096).await;
        let code = xml_field(&body, "Code").unwrap_or_default();
        let mut f = Failure::from_status(status, &body);
        if code == "NoSuchBucket" {
            f.detail = format!(
                "bucket {:?} does not exist (HTTP {status} NoSuchBucket): check Bucket and \
                 Endpoint in the volumes file",
                self.bucket.name()
            );
        } else if matches!(status.as_u16(), 401 | 403) {
            f.detail = format!(
                "HTTP {status} {code}: the S3 server refused the credentials or the request's \
                 signature: check AccessKeyID/SecretAccessKey (or AWS_ACCESS_KEY_ID/\
                 AWS_SECRET_ACCESS_KEY) and Region"
            );
        } else if !code.is_empty() {
            let msg = xml_field(&body, "Message").unwrap_or_default();
            f.detail = format!("HTTP {status} {code}: {msg}");
        }
        f
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let resp = req.send().await.map_err(|e| Failure::from_http(&e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.refused(resp).await)
        }
    }

    pub(super) async fn list(
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
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            action.with_prefix(list_prefix.as_str());
            action.with_max_keys(self.page_size as usize);
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(EXPIRY);
            let resp = self.send(self.http.get(url)).await?;
            let text = resp.text().await.map_err(|e| {
                Failure::new(
                    FailureKind::Transient,
                    format!(
                        "listing broke after {keys} keys: {}",
                        describe_http_error(&e)
                    ),
                )
            })?;
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
                    let size = o.size.unwrap_or(0);
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
        let url = self
            .bucket
            .head_object(Some(&self.creds), &key)
            .sign(EXPIRY);
        let resp = self.send(self.http.head(url)).await?;
        Ok(resp.content_length().or_else(|| {
            resp.headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        }))
    }

    pub(super) async fn read(&self, hash: &BlockHash, size: u64) -> Result<BlockStream, Failure> {
        let key = layout::key(hash, self.prefix_length);
        let url = self.bucket.get_object(Some(&self.creds), &key).sign(EXPIRY);
        let resp = self.send(self.http.get(url)).await?;
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

    async fn put(
        &self,
        key: &str,
        size: u64,
        md5: &[u8],
        body: reqwest::Body,
    ) -> Result<(), Failure> {
        let url = self.bucket.put_object(Some(&self.creds), key).sign(EXPIRY);
        let req = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(md5),
            )
            .body(body);
        self.send(req).await.map(drop)
    }

    pub(super) async fn write(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
    ) -> Result<PutOk, Failure> {
        let key = layout::key(hash, self.prefix_length);
        self.put(&key, size, &hash.0, body.into_reqwest()).await?;
        // The marker after the data, as keepstore writes it: its time is
        // the block's timestamp. A block left without one (this PUT failed)
        // is still safe: keepstore creates the marker when it first needs
        // the block's time.
        let empty = BlockHash::of(b"");
        let marker = layout::recent_key(hash, self.prefix_length);
        self.put(&marker, 0, &empty.0, reqwest::Body::from(Vec::new()))
            .await
            .map_err(|f| Failure {
                detail: format!("{key} stored, but its recent/ marker was not: {}", f.detail),
                ..f
            })?;
        Ok(super::volume_put_ok(&self.traits))
    }
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
            .get_object(Some(&v.creds), &layout::key(&h, 3))
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
        let url = v.bucket.get_object(Some(&v.creds), "k").sign(EXPIRY);
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
        let url = v.bucket.get_object(Some(&v.creds), "k").sign(EXPIRY);
        assert!(
            url.as_str()
                .starts_with("http://127.0.0.1:9000/keep-data/k?"),
            "{url}"
        );
        assert_eq!(v.location(), "s3://127.0.0.1:9000/keep-data");
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
}
