//! Where blocks are listed and read: a Keep service (a keepstore or
//! keepproxy, over HTTP) or a raw keepstore directory volume
//! (`--src-volume-dir`). The index and copy stages (and keep-block-check)
//! hold `Endpoint`s and call [`Endpoint::list`], [`Endpoint::open`] and
//! [`Endpoint::head`]; only this module knows which kind it holds.

use std::sync::atomic::AtomicBool;

use bytes::Bytes;

use crate::protocol::client::{Failure, FailureKind, KeepClient, PutOk};
use crate::protocol::index::Entry;
use crate::protocol::BlockHash;
use crate::protocol::KeepService;
use crate::volume::Volume;

/// A place blocks can be listed and read from.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Keep(KeepService),
    Volume(Volume),
}

/// A read whose first answer says the block is coming.
pub enum Opened {
    /// A GET response with status 200 and the right length; the body is
    /// still to be read and verified.
    Body(reqwest::Response),
    /// A whole volume file, already verified against its name.
    File(Bytes),
}

impl Endpoint {
    /// The uuid of a Keep service, `volume-N` for a volume.
    pub fn id(&self) -> &str {
        match self {
            Endpoint::Keep(s) => &s.uuid,
            Endpoint::Volume(v) => &v.id,
        }
    }

    /// `http(s)://host:port`, or `file://ROOT` for a volume.
    pub fn url(&self) -> String {
        match self {
            Endpoint::Keep(s) => s.url(),
            Endpoint::Volume(v) => format!("file://{}", v.root.display()),
        }
    }

    /// `id (url)`, the way messages name it.
    pub fn label(&self) -> String {
        format!("{} ({})", self.id(), self.url())
    }

    /// The part of the id rendezvous hashing weighs.
    pub fn weight_suffix(&self) -> &str {
        match self {
            Endpoint::Keep(s) => s.weight_suffix(),
            Endpoint::Volume(v) => &v.id,
        }
    }

    /// `disk`, `proxy`, `gateway:…`, or `volume`.
    pub fn service_type(&self) -> &str {
        match self {
            Endpoint::Keep(s) => &s.service_type,
            Endpoint::Volume(_) => "volume",
        }
    }

    pub fn read_only(&self) -> bool {
        match self {
            Endpoint::Keep(s) => s.read_only,
            Endpoint::Volume(_) => true,
        }
    }

    /// A keepproxy: one write stores several replicas.
    pub fn is_proxy(&self) -> bool {
        matches!(self, Endpoint::Keep(s) if s.is_proxy())
    }

    /// Gateways are never indexed nor written.
    pub fn is_gateway(&self) -> bool {
        matches!(self, Endpoint::Keep(s) if s.is_gateway())
    }

    /// Whether blocks may be written here.
    pub fn writable(&self) -> bool {
        matches!(self, Endpoint::Keep(s) if s.writable())
    }

    /// Every block whose hash starts with `prefix`, as listed (unsorted,
    /// possibly with duplicates), and the number of lines. `answered` is set
    /// once a service has started sending a complete-looking answer (from
    /// then on a failure means a broken index, not a service down);
    /// `on_bytes` counts index bytes; entries are added to `into` (an empty
    /// vector, perhaps with room from an earlier pass).
    pub async fn list(
        &self,
        client: &KeepClient,
        prefix: &str,
        answered: &AtomicBool,
        on_bytes: &(dyn Fn(u64) + Sync),
        into: Vec<Entry>,
    ) -> Result<(Vec<Entry>, u64), Failure> {
        match self {
            Endpoint::Keep(s) => {
                let url = s.url();
                crate::protocol::client::list_index(client, &url, prefix, answered, on_bytes, into)
                    .await
            }
            Endpoint::Volume(v) => {
                let (root, prefix) = (v.root.clone(), prefix.to_string());
                tokio::task::spawn_blocking(move || crate::volume::index(&root, &prefix))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Failure::new(
                            FailureKind::Rejected,
                            format!("volume scan failed: {e}"),
                        ))
                    })
            }
        }
    }

    /// `PUT /HASH` with a body of `len` bytes (a volume is only ever a
    /// source: refused).
    pub async fn put(
        &self,
        client: &KeepClient,
        hash: &BlockHash,
        len: u64,
        body: reqwest::Body,
        desired: u32,
        classes: Option<&str>,
    ) -> Result<PutOk, Failure> {
        match self {
            Endpoint::Keep(s) => {
                client
                    .put_block(&s.url(), hash, len, body, desired, classes)
                    .await
            }
            Endpoint::Volume(v) => Err(Failure::new(
                FailureKind::Rejected,
                format!("{} is a source volume: nothing is written there", v.id),
            )),
        }
    }

    /// Ask whether the block is here without reading it: a `HEAD` of
    /// `locator` (signed by the caller), or a volume file's size. `Ok` with
    /// its size when known.
    pub async fn head(
        &self,
        client: &KeepClient,
        locator: &str,
        hash: &BlockHash,
    ) -> Result<Option<u64>, Failure> {
        match self {
            Endpoint::Keep(s) => client.head_block(&s.url(), locator).await,
            Endpoint::Volume(v) => crate::volume::block_size(&v.root, hash).map(Some),
        }
    }

    /// Start reading a block: a GET of `locator` (signed by the caller) up to
    /// its headers, or a volume file read whole and checked.
    pub async fn open(
        &self,
        client: &KeepClient,
        locator: &str,
        hash: &BlockHash,
        size: u64,
    ) -> Result<Opened, Failure> {
        match self {
            Endpoint::Keep(s) => client
                .open_block(&s.url(), locator, size)
                .await
                .map(Opened::Body),
            Endpoint::Volume(v) => {
                let (root, hash) = (v.root.clone(), *hash);
                tokio::task::spawn_blocking(move || crate::volume::read_block(&root, &hash, size))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Failure::new(
                            FailureKind::Rejected,
                            format!("read failed: {e}"),
                        ))
                    })
                    .map(Opened::File)
            }
        }
    }
}
