//! Where blocks live: the one seam between the stages and the kinds of Keep
//! store (docs/design.md, "Stores").
//!
//! A [`Store`] is a Keep service (a keepstore or keepproxy over HTTP,
//! [`keep`]), a keepstore Directory volume ([`dir`]), a keepstore S3 volume
//! ([`s3`]) or a keepstore Azure Blob volume ([`azure`]). Each lists the blocks under a prefix, answers whether it holds
//! one, reads one as a byte stream (unverified: the copy pipeline checks
//! length and MD5 as the bytes arrive, the same way for every store), and
//! writes one from a [`Body`] that must not become visible under the block's
//! name unless it ended whole and verified. Besides that a store says what it
//! can do ([`Store::readable`], [`Store::writable`], [`Store::credit`]) and
//! how rendezvous order weighs it. Index, plan, copy and keep-block-check call
//! these and never ask which kind they hold.
//!
//! A closed enum rather than a trait object: four kinds, all known here,
//! async methods without boxing, and `match` arms that the compiler checks
//! when a fifth kind comes.

pub mod aws_credentials;
pub mod azure;
pub mod dir;
pub mod keep;
pub mod probe;
pub mod s3;
pub mod servers;

use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::protocol::client::{Failure, FailureKind, PutOk};
use crate::protocol::index::Entry;
use crate::protocol::BlockHash;
use crate::role::Role;

pub use azure::AzureVolume;
pub use dir::DirVolume;
pub use keep::{KeepStore, Signer, TokenSource};
pub use s3::S3Volume;

/// A block's bytes as a store sends them: not yet verified.
pub type BlockStream = BoxStream<'static, Result<Bytes, Failure>>;

/// The read under a write failed: the write must not complete.
#[derive(Debug, Clone, Copy)]
pub struct ReadFailed;

impl std::fmt::Display for ReadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the source read failed: write abandoned before its last byte")
    }
}

impl std::error::Error for ReadFailed {}

/// The bytes of a block to write: either whole and verified, or following a
/// read that holds back its last bytes until the block is verified (and
/// ends in [`ReadFailed`] otherwise). A store may make the block visible
/// only after the stream ended without error and gave exactly the block's
/// size.
pub enum Body {
    Whole(Vec<Bytes>),
    Follow(BoxStream<'static, Result<Bytes, ReadFailed>>),
}

impl Body {
    /// As an HTTP request body (Keep services, S3).
    pub fn into_reqwest(self) -> reqwest::Body {
        match self {
            Body::Whole(chunks) => match <[Bytes; 1]>::try_from(chunks) {
                Ok([one]) => reqwest::Body::from(one),
                Err(chunks) => {
                    let owned: Vec<Result<Bytes, std::convert::Infallible>> =
                        chunks.into_iter().map(Ok).collect();
                    reqwest::Body::wrap_stream(futures::stream::iter(owned))
                }
            },
            Body::Follow(s) => reqwest::Body::wrap_stream(s),
        }
    }

    /// As a stream of chunks (directory volumes).
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, ReadFailed>> {
        match self {
            Body::Whole(chunks) => futures::stream::iter(chunks.into_iter().map(Ok)).boxed(),
            Body::Follow(s) => s,
        }
    }
}

/// A place blocks are listed, read and written.
#[derive(Debug)]
pub enum Store {
    Keep(KeepStore),
    Dir(DirVolume),
    S3(S3Volume),
    Azure(AzureVolume),
}

/// How rendezvous order ranks the stores of one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Keep services: descending `md5(HASH + uuid[12:])`, the whole uuid when it
    /// is not 27 characters (the Go SDK's probe order).
    Services,
    /// Volumes: as a keepstore orders its mounts: storage-class priority,
    /// then ascending `md5(HASH + uuid[12:])`.
    Mounts,
}

/// One index request's worth of a store ([`Store::parts`]): the whole
/// store, or one mount of a keepstore, with what a copy listed there counts
/// for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The keepstore mount asked (`GET /mounts/UUID/blocks`); `None`: the
    /// whole store.
    pub mount: Option<String>,
    /// Copies one listed block stands for: a mount's or volume's
    /// `Replication`; 1 for a whole keepstore (see [`Store::credit`]).
    pub replicas: u32,
    /// The classes a listed copy is in; `None`: not known.
    pub classes: Option<Vec<String>>,
    /// Blocks may be written there (the mount, or the whole store).
    pub writable: bool,
}

/// What [`Store::describe`] tells about a volume.
#[derive(Clone, Debug, Default)]
pub struct VolumeTraits {
    pub replication: u32,
    pub read_only: bool,
    pub classes: Vec<String>,
    pub priority: i64,
    /// The keepstore servers that mount it (a volumes file's
    /// `AccessViaHosts`), for [`Ranking`]; empty for a `--*-volume-dir`.
    pub servers: Vec<servers::Mount>,
}

impl Store {
    /// The uuid of a Keep service or a volume.
    pub fn id(&self) -> &str {
        match self {
            Store::Keep(s) => &s.service.uuid,
            Store::Dir(v) => &v.id,
            Store::S3(v) => &v.id,
            Store::Azure(v) => &v.id,
        }
    }

    /// `http(s)://host:port`, `file://ROOT`, `s3://ENDPOINT/BUCKET` or
    /// `azure://BASE/ACCOUNT/CONTAINER`: never a secret.
    pub fn location(&self) -> String {
        match self {
            Store::Keep(s) => s.service.url(),
            Store::Dir(v) => format!("file://{}", v.root.display()),
            Store::S3(v) => v.location(),
            Store::Azure(v) => v.location(),
        }
    }

    /// `id (location)`, the way messages name it.
    pub fn label(&self) -> String {
        format!("{} ({})", self.id(), self.location())
    }

    /// What its listing is made of, as the index stage counts it apart
    /// from the blocks it gives: index lines, directory entries, or bucket
    /// keys (keys that are not blocks' included: a stray object, one too
    /// big to be a block).
    pub fn listed_unit(&self) -> &'static str {
        match self {
            Store::Keep(_) => "lines",
            Store::Dir(_) => "entries",
            Store::S3(_) => "keys",
            Store::Azure(_) => "blobs",
        }
    }

    /// `disk`, `proxy`, `gateway:…` (Keep services), `directory`, `s3` or
    /// `azure`.
    pub fn kind(&self) -> &str {
        match self {
            Store::Keep(s) => &s.service.service_type,
            Store::Dir(_) => "directory",
            Store::S3(_) => "s3",
            Store::Azure(_) => "azure",
        }
    }

    /// How this side's stores are ranked for a block.
    pub fn order(&self) -> Order {
        match self {
            Store::Keep(_) => Order::Services,
            Store::Dir(_) | Store::S3(_) | Store::Azure(_) => Order::Mounts,
        }
    }

    /// The part of the id rendezvous hashing weighs.
    pub fn weight_suffix(&self) -> &str {
        match self {
            Store::Keep(s) => s.service.weight_suffix(),
            Store::Dir(v) => crate::protocol::mount_weight_suffix(&v.id),
            Store::S3(v) => crate::protocol::mount_weight_suffix(&v.id),
            Store::Azure(v) => crate::protocol::mount_weight_suffix(&v.id),
        }
    }

    /// A volume's mount priority (the highest priority of its storage
    /// classes); 0 for services.
    pub fn priority(&self) -> i64 {
        self.volume().map_or(0, |t| t.priority)
    }

    fn volume(&self) -> Option<&VolumeTraits> {
        match self {
            Store::Keep(_) => None,
            Store::Dir(v) => Some(&v.traits),
            Store::S3(v) => Some(&v.traits),
            Store::Azure(v) => Some(&v.traits),
        }
    }

    /// The storage classes a write here can store: a volume's own; a
    /// keepstore's writable mounts' (the union: keepstore writes each class
    /// asked to a mount of it) when its mounts are known; otherwise `None`
    /// (not known: a keepproxy, a keepstore of a services list that does not
    /// serve `/mounts`).
    pub fn write_classes(&self) -> Option<&[String]> {
        match self {
            Store::Keep(s) => s.write_classes(),
            _ => self.volume().map(|t| &t.classes[..]),
        }
    }

    /// How its index is asked: one [`Part`] for the whole store, or one per
    /// mount of a keepstore that serves `GET /mounts` (as keep-balance asks
    /// it), each with what a copy listed there counts for.
    pub fn parts(&self) -> Vec<Part> {
        match self {
            Store::Keep(s) => s.parts(),
            _ => {
                let t = self.volume().cloned().unwrap_or_default();
                vec![Part {
                    mount: None,
                    replicas: t.replication.max(1),
                    classes: Some(t.classes),
                    writable: !t.read_only,
                }]
            }
        }
    }

    pub fn read_only(&self) -> bool {
        match self {
            Store::Keep(s) => s.service.read_only,
            _ => self.volume().is_some_and(|t| t.read_only),
        }
    }

    /// Whether its index is asked for and blocks are read from it
    /// (gateways are neither).
    pub fn readable(&self) -> bool {
        !matches!(self, Store::Keep(s) if s.service.is_gateway())
    }

    /// Whether blocks may be written here.
    pub fn writable(&self) -> bool {
        match self {
            Store::Keep(s) => s.service.writable(),
            _ => !self.read_only(),
        }
    }

    /// Replicas one listing here counts for at the destination: 0 where
    /// nothing is written (its copies are not the destination's to count), a
    /// keepproxy `want` (it hides its keepstores), a keepstore 1, a volume its
    /// `Replication`.
    pub fn credit(&self, want: u32) -> u32 {
        if !self.writable() {
            return 0;
        }
        match self {
            Store::Keep(s) if s.service.is_proxy() => want,
            Store::Keep(_) => 1,
            _ => self.volume().map_or(1, |t| t.replication.max(1)),
        }
    }

    /// What a copy listed in `part` (one of [`Self::parts`]) counts for at
    /// the destination: nothing where nothing is written, a keepproxy's
    /// `want`, else the part's replicas (a mount's or volume's
    /// `Replication`, read-only mount or not: the copy is there; a whole
    /// keepstore 1).
    pub fn part_credit(&self, part: &Part, want: u32) -> u32 {
        match () {
            _ if !self.writable() => 0,
            _ if self.is_proxy() => want,
            _ => part.replicas,
        }
    }

    /// Copies `part` stands for, read-only or not (keep-block-check): a
    /// keepproxy as many as are asked of it, else the part's replicas.
    pub fn part_held(&self, part: &Part) -> u32 {
        if self.is_proxy() {
            crate::wants::MAX_REPLICATION
        } else {
            part.replicas
        }
    }

    /// Replicas one write of `hash` here is expected to store: a volume its
    /// `Replication`; a keepstore the `Replication` of the first writable
    /// mount (of a class of `classes`) in its mount order, as keepstore
    /// writes to it (1 when its mounts are not known).
    pub fn expected_replicas(&self, hash: &BlockHash, classes: Option<&str>) -> u32 {
        match self {
            Store::Keep(s) => s.expected_replicas(hash, classes),
            _ => self.volume().map_or(1, |t| t.replication.max(1)),
        }
    }

    /// Whether a write here stores several replicas at once (a keepproxy).
    pub fn is_proxy(&self) -> bool {
        matches!(self, Store::Keep(s) if s.service.is_proxy())
    }

    /// Whether a block that read back wrong from here will read back the same
    /// way again (a file or an object at rest), rather than having been
    /// damaged on its way (a keepstore that re-reads its disk, a proxy).
    pub fn bad_data_is_final(&self) -> bool {
        !matches!(self, Store::Keep(_))
    }

    /// Whether a write here can confirm every one of `classes` (a
    /// comma-separated `--storage-classes`): a volume, or a keepstore whose
    /// mounts are known, only with each class among [`Self::write_classes`];
    /// any other keepstore decides for itself.
    pub fn may_confirm(&self, classes: Option<&str>) -> bool {
        match (self.write_classes(), classes) {
            (Some(held), Some(want)) => want
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .all(|c| held.iter().any(|k| k == c)),
            _ => true,
        }
    }

    /// What to check when its listing is refused or makes no sense.
    pub fn what_to_check(&self) -> &'static str {
        match self {
            Store::Keep(_) => {
                "Check that the services list points at keepstore or keepproxy services, and that \
                 the token is the cluster's system root token."
            }
            Store::Dir(_) => {
                "Check that the path is the root of a keepstore Directory volume (the directory \
                 holding the 3-hex-digit subdirectories) and readable by this user."
            }
            Store::S3(_) => {
                "Check the volume's Bucket, Endpoint and Region, and its credentials \
                 (AccessKeyID/SecretAccessKey, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); a \
                 listing cut short or out of order comes from the S3 server or a proxy in \
                 front of it, and is never taken for the bucket's contents."
            }
            Store::Azure(_) => {
                "Check the volume's StorageAccountName, StorageBaseURL and ContainerName, and \
                 its StorageAccountKey; a listing cut short or out of order comes from the \
                 service or a proxy in front of it, and is never taken for the container's \
                 contents."
            }
        }
    }

    /// What to do about a listing that failed with `kind`, in this kind of
    /// store's terms (a Keep service's token, a volume's credentials or
    /// files): the advice an index error ends with.
    pub fn index_advice(&self, kind: FailureKind) -> String {
        match (self, kind) {
            (Store::Keep(s), FailureKind::Denied) => s.index_refused_advice(),
            (
                _,
                FailureKind::Denied
                | FailureKind::NotFound
                | FailureKind::Rejected
                | FailureKind::Malformed,
            ) => self.what_to_check().to_string(),
            (Store::Keep(_), _) => {
                "Check that the service is up and reachable from here, then rerun.".into()
            }
            (Store::Dir(_), _) => {
                "Check that the volume's filesystem is mounted and answering, then rerun.".into()
            }
            (Store::S3(_), _) => {
                "Check that the S3 endpoint is up and reachable from here, then rerun.".into()
            }
            (Store::Azure(_), _) => {
                "Check that the Azure Blob endpoint (https://ACCOUNT.blob.STORAGEBASEURL) is up \
                 and reachable from here, then rerun."
                    .into()
            }
        }
    }

    /// What to fix when this store refused a request of the `role` side
    /// (HTTP 401/403, `f`), naming what this kind of store is given: the
    /// token, signing key and TTL of a Keep service (and the file they came
    /// from), an S3 volume's credentials, a Directory volume's permissions.
    pub fn refused_advice(&self, role: Role, f: &Failure) -> String {
        match self {
            Store::Keep(s) => s.refused_advice(role, f),
            Store::Dir(v) => v.refused_advice(role, f),
            Store::S3(v) => v.refused_advice(role, f),
            Store::Azure(v) => v.refused_advice(role, f),
        }
    }

    /// Every block whose hash starts with `prefix` (on one `mount` of a
    /// keepstore, from [`Self::parts`]), as listed (unsorted,
    /// possibly with duplicates), and the number of lines or keys. `answered`
    /// is set once the store has started a complete-looking answer (from then
    /// on a failure means a broken listing, not a store down); `on_bytes`
    /// counts listing bytes; entries are added to `into`.
    pub async fn list(
        &self,
        prefix: &str,
        mount: Option<&str>,
        answered: &AtomicBool,
        on_bytes: &(dyn Fn(u64) + Sync),
        into: Vec<Entry>,
    ) -> Result<(Vec<Entry>, u64), Failure> {
        match self {
            Store::Keep(s) => s.list(prefix, mount, answered, on_bytes, into).await,
            Store::Dir(v) => v.list(prefix, answered, into).await,
            Store::S3(v) => v.list(prefix, answered, on_bytes, into).await,
            Store::Azure(v) => v.list(prefix, answered, on_bytes, into).await,
        }
    }

    /// Whether the block is here, without reading it: its size when known.
    pub async fn head(&self, hash: &BlockHash, size: Option<u64>) -> Result<Option<u64>, Failure> {
        match self {
            Store::Keep(s) => s.head(hash, size).await,
            Store::Dir(v) => v.head(hash).await.map(Some),
            Store::S3(v) => v.head(hash).await,
            Store::Azure(v) => v.head(hash).await,
        }
    }

    /// Start reading a block of `size` bytes: `Ok` once the store said it is
    /// coming; the stream is checked by the caller.
    pub async fn read(&self, hash: &BlockHash, size: u64) -> Result<BlockStream, Failure> {
        match self {
            Store::Keep(s) => s.read(hash, size).await,
            Store::Dir(v) => v.read(hash, size).await,
            Store::S3(v) => v.read(hash, size).await,
            Store::Azure(v) => v.read(hash, size).await,
        }
    }

    /// Write a block of `size` bytes from `body`; `desired` and `classes` are
    /// what a keepstore is asked for (`X-Keep-Desired-Replicas`,
    /// `X-Keep-Storage-Classes`). Answers the replicas stored and the classes
    /// confirmed.
    pub async fn write(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
        desired: u32,
        classes: Option<&str>,
    ) -> Result<PutOk, Failure> {
        self.write_staged(hash, size, body, desired, classes)
            .await?
            .wait()
            .await
    }

    /// [`Self::write`] in two parts: this future ends once `body` has been
    /// taken whole (its buffers may be freed); the [`Staged::finish`] it
    /// answers is what is left before the block counts as stored (a
    /// directory's fsync, rename and directory fsync; a bucket's `recent/`
    /// marker). Until it ends the block is absent or whole, never partial.
    pub async fn write_staged(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
        desired: u32,
        classes: Option<&str>,
    ) -> Result<Staged<'_>, Failure> {
        if self.volume().is_some_and(|t| t.read_only) {
            return Err(Failure::new(
                crate::protocol::client::FailureKind::Rejected,
                "the volume is read-only: nothing is written there",
            ));
        }
        match self {
            Store::Keep(s) => Ok(Staged::done(
                s.write(hash, size, body, desired, classes).await?,
            )),
            Store::Dir(v) => v.write_staged(hash, size, body).await,
            Store::S3(v) => v.write_staged(hash, size, body).await,
            Store::Azure(v) => Ok(Staged::done(v.write(hash, size, body).await?)),
        }
    }
}

/// The durable rest of a write ([`Store::write_staged`]): holds no block
/// buffer, only what it must still do to the store.
pub type Finish<'s> = futures::future::BoxFuture<'s, Result<(), Failure>>;

/// A write whose bytes are all taken: what it stores once `finish` (if
/// any) has ended without error.
pub struct Staged<'s> {
    pub ok: PutOk,
    pub finish: Option<Finish<'s>>,
    /// The finish is a request to the store's service (a bucket's marker
    /// PUT), which its concurrency limit must count; not a local fsync.
    pub request: bool,
}

impl Staged<'_> {
    /// The whole write: its finish (if any) awaited.
    pub async fn wait(self) -> Result<PutOk, Failure> {
        if let Some(finish) = self.finish {
            finish.await?;
        }
        Ok(self.ok)
    }

    /// A write with nothing left to do.
    pub fn done(ok: PutOk) -> Self {
        Staged {
            ok,
            finish: None,
            request: false,
        }
    }
}

/// What a volume write confirms: its replication, and each of its classes
/// at that replication (`class=N, class=M`, as keepstore answers).
fn volume_put_ok(t: &VolumeTraits) -> PutOk {
    let r = t.replication.max(1);
    PutOk {
        replicas: r,
        classes_confirmed: Some(
            t.classes
                .iter()
                .map(|c| format!("{c}={r}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

/// The rendezvous ranking of one side's stores.
#[derive(Clone, Debug)]
pub struct Ranking {
    order: Order,
    suffixes: Vec<String>,
    priorities: Vec<i64>,
    /// Volumes from several keepstore servers: ranked by server first.
    servers: Option<servers::Servers>,
}

impl Ranking {
    pub fn new<'a>(stores: impl IntoIterator<Item = &'a Store>) -> Ranking {
        let mut r = Ranking {
            order: Order::Services,
            suffixes: Vec::new(),
            priorities: Vec::new(),
            servers: None,
        };
        let mut mounts: Vec<(&[servers::Mount], bool)> = Vec::new();
        for (i, s) in stores.into_iter().enumerate() {
            if i == 0 {
                r.order = s.order();
            }
            r.suffixes.push(s.weight_suffix().to_string());
            r.priorities.push(s.priority());
            mounts.push((s.volume().map_or(&[][..], |t| &t.servers[..]), s.writable()));
        }
        if r.order == Order::Mounts {
            r.servers = servers::Servers::of(&mounts);
        }
        r
    }

    /// Services ranked by their uuids, for tests and tools.
    pub fn services(suffixes: Vec<String>) -> Ranking {
        Ranking {
            order: Order::Services,
            priorities: vec![0; suffixes.len()],
            suffixes,
            servers: None,
        }
    }

    pub fn len(&self) -> usize {
        self.suffixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.suffixes.is_empty()
    }

    /// The stores `among` (indices) in the order a block is read from or
    /// written to them, into `out`; `scratch` is reused between calls.
    pub fn order_among(
        &self,
        hash: &BlockHash,
        among: &[u16],
        scratch: &mut Vec<([u8; 16], u16)>,
        out: &mut Vec<u16>,
    ) {
        match self.order {
            Order::Services => {
                crate::protocol::probe_order_among(hash, &self.suffixes, among, scratch, out)
            }
            Order::Mounts if self.servers.is_some() => {
                if let Some(s) = &self.servers {
                    s.order_among(hash, &self.suffixes, &self.priorities, among, out)
                }
            }
            Order::Mounts => crate::protocol::mount_order_among(
                hash,
                &self.suffixes,
                &self.priorities,
                among,
                out,
            ),
        }
    }

    /// Every store in the block's order.
    pub fn order(&self, hash: &BlockHash) -> Vec<u16> {
        let all: Vec<u16> = (0..self.suffixes.len() as u16).collect();
        let mut out = Vec::with_capacity(all.len());
        self.order_among(hash, &all, &mut Vec::new(), &mut out);
        out
    }
}

/// A listing of every block under `prefix`, through `chain` (one chain of
/// pages under a prefix, appending to the `Vec` it is given and returning
/// the keys it listed): one chain, or, with `fanout` > 1 and room in the
/// prefix, the 16 next-hex-digit chains, `fanout` at once, concatenated
/// (the index sorts them). Bucket and container keys are block hashes, so
/// the 16 chains cover the prefix exactly; each runs its own pages one
/// after another, which is what a listing's latency costs.
pub(crate) async fn fan_out<F, Fut>(
    prefix: &str,
    fanout: usize,
    mut into: Vec<Entry>,
    chain: F,
) -> Result<(Vec<Entry>, u64), Failure>
where
    F: Fn(String, Vec<Entry>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Entry>, u64), Failure>>,
{
    if fanout <= 1 || prefix.len() >= 32 {
        return chain(prefix.to_string(), into).await;
    }
    let mut chains = futures::stream::iter((0..16u8).map(|d| format!("{prefix}{d:x}")))
        .map(|p| chain(p, Vec::new()))
        .buffer_unordered(fanout.min(16));
    let mut keys = 0;
    while let Some(r) = chains.next().await {
        let (entries, k) = r?;
        into.extend(entries);
        keys += k;
    }
    Ok((into, keys))
}

#[cfg(test)]
mod advice_tests {
    use super::*;
    use crate::protocol::KeepService;
    use std::sync::Arc;

    const KEEP_TOKEN: &str = "ARVADOS_API_TOKEN";

    fn keep(cluster_config: bool, key: bool) -> Store {
        let opts = crate::protocol::client::ClientOptions {
            connect_timeout: std::time::Duration::from_secs(1),
            stall_timeout: std::time::Duration::from_secs(1),
            insecure: false,
            pool_per_host: 1,
        };
        let service = KeepService {
            uuid: "zzzzz-bi6l4-000000000000000".into(),
            host: "127.0.0.1".into(),
            port: 1,
            ssl: false,
            service_type: "disk".into(),
            read_only: false,
            mounts: None,
            mounts_served: false,
        };
        let path = if cluster_config {
            "/etc/arvados/config.yml"
        } else {
            "/home/a/dst.conf"
        };
        let signer = Signer {
            key: key.then(|| "k".to_string()),
            token: "t".into(),
            ttl: 1,
            source: TokenSource {
                path: path.into(),
                cluster_config,
            },
        };
        let client = crate::protocol::client::KeepClient::new("t", &opts).unwrap();
        Store::Keep(KeepStore::new(service, client, Arc::new(signer)))
    }

    fn dir() -> Store {
        Store::Dir(DirVolume::new(
            "zzzzz-nyw5e-000000000000000".into(),
            "/srv/keep0".into(),
            VolumeTraits::default(),
            false,
        ))
    }

    fn s3() -> Store {
        let p = crate::volumes_file::S3Params {
            bucket: "keep-blocks".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9000/".into()),
            use_path_style: true,
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("SECRETsecret".into()),
            prefix_length: 0,
            index_page_size: 1000,
        };
        let v = S3Volume::new(
            "zzzzz-nyw5e-000000000000010".into(),
            &p,
            VolumeTraits::default(),
            reqwest::Client::new(),
        )
        .unwrap();
        Store::S3(v)
    }

    fn denied() -> Failure {
        Failure::new(FailureKind::Denied, "HTTP 403 Forbidden")
    }

    #[test]
    fn a_refused_keep_service_names_the_token_as_its_file_does() {
        let a = keep(false, false).index_advice(FailureKind::Denied);
        assert!(
            a.contains("system root token") && a.contains("ARVADOS_API_TOKEN in /home/a/dst.conf"),
            "{a}"
        );
        let a = keep(true, true).index_advice(FailureKind::Denied);
        assert!(
            a.contains("SystemRootToken in /etc/arvados/config.yml"),
            "{a}"
        );
        assert!(!a.contains(KEEP_TOKEN), "{a}");

        let r = keep(false, false).refused_advice(Role::Source, &denied());
        assert!(
            r.contains("ARVADOS_API_TOKEN in /home/a/dst.conf")
                && r.contains("add ARVADOS_BLOB_SIGNING_KEY"),
            "{r}"
        );
        assert!(
            r.contains("refuse our requests (HTTP 403 Forbidden)"),
            "{r}"
        );
        let r = keep(false, true).refused_advice(Role::Destination, &denied());
        assert!(
            r.contains("ARVADOS_BLOB_SIGNING_KEY in /home/a/dst.conf")
                && r.contains("-dst-blob-signature-ttl"),
            "{r}"
        );
        let r = keep(true, true).refused_advice(Role::Source, &denied());
        assert!(
            r.contains("SystemRootToken, Collections.BlobSigningKey"),
            "{r}"
        );
        assert!(!r.contains(KEEP_TOKEN), "{r}");
    }

    #[test]
    fn volumes_never_give_keep_token_advice() {
        for (store, wants) in [
            (dir(), ["/srv/keep0", "user keep-rsync runs as"]),
            (s3(), ["AccessKeyID/SecretAccessKey", "Region"]),
        ] {
            let mut all = vec![store.refused_advice(Role::Destination, &denied())];
            for k in [
                FailureKind::Denied,
                FailureKind::NotFound,
                FailureKind::Rejected,
                FailureKind::Malformed,
                FailureKind::Transient,
                FailureKind::Unreachable,
            ] {
                all.push(store.index_advice(k));
            }
            for a in &all {
                for keep_words in [
                    KEEP_TOKEN,
                    "SystemRootToken",
                    "system root token",
                    "keep services",
                ] {
                    assert!(!a.contains(keep_words), "{}: {a}", store.kind());
                }
            }
            for w in wants {
                assert!(all[0].contains(w), "{w} not in {}", all[0]);
            }
            assert!(all[0].contains(store.id()), "{}", all[0]);
            assert!(!all[0].contains("SECRETsecret"), "{}", all[0]);
            assert!(all[1].contains("Check"), "{}", all[1]);
        }
        assert!(s3()
            .index_advice(FailureKind::Transient)
            .contains("S3 endpoint"));
    }
}

#[cfg(test)]
mod fan_out_tests {
    use super::*;
    use crate::protocol::client::FailureKind;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;

    fn entry(prefix: &str) -> Entry {
        let hex = format!("{prefix:0<32}");
        Entry {
            hash: BlockHash::from_hex(hex.as_bytes()).unwrap(),
            size: 1,
        }
    }

    /// Every next-digit chain runs exactly once, at most `fanout` at a
    /// time, after what `into` already held; keys add up.
    #[tokio::test]
    async fn sixteen_chains_each_once_within_the_fanout() {
        let asked = Mutex::new(Vec::new());
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (asked, now, most) = (&asked, &now, &most);
        let (got, keys) = fan_out("a", 4, vec![entry("f")], |p, mut into| async move {
            asked.lock().unwrap().push(p.clone());
            most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
            tokio::task::yield_now().await;
            now.fetch_sub(1, SeqCst);
            into.push(entry(&p));
            Ok((into, 2))
        })
        .await
        .unwrap();
        let mut asked = asked.lock().unwrap().clone();
        asked.sort();
        let want: Vec<String> = (0..16).map(|d| format!("a{d:x}")).collect();
        assert_eq!(asked, want);
        assert!(
            most.load(SeqCst) <= 4,
            "{} chains at once",
            most.load(SeqCst)
        );
        assert_eq!(got.len(), 17);
        assert_eq!(got[0], entry("f"));
        assert_eq!(keys, 32);
    }

    /// No fan-out, or a whole hash as the prefix: one chain, given `into`.
    #[tokio::test]
    async fn one_chain_without_fanout_or_room() {
        let full = "0".repeat(32);
        for (prefix, fanout) in [("a", 1), (full.as_str(), 16)] {
            let asked = Mutex::new(Vec::new());
            let asked = &asked;
            let (got, keys) = fan_out(prefix, fanout, vec![entry("f")], |p, into| async move {
                asked.lock().unwrap().push(p);
                Ok((into, 7))
            })
            .await
            .unwrap();
            assert_eq!(*asked.lock().unwrap(), vec![prefix.to_string()]);
            assert_eq!((got.len(), keys), (1, 7));
        }
    }

    /// One chain's failure is the listing's.
    #[tokio::test]
    async fn a_failed_chain_fails_the_listing() {
        let r = fan_out("", 16, Vec::new(), |p, into| async move {
            if p == "7" {
                Err(Failure::new(FailureKind::Transient, "page 3 of 7: 500"))
            } else {
                Ok((into, 0))
            }
        })
        .await;
        assert!(r.unwrap_err().to_string().contains("page 3 of 7"));
    }
}
