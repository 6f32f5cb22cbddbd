//! A Keep service as a store: a keepstore or keepproxy over its HTTP API
//! (docs/protocol.md, "Keepstore HTTP API"), with its side's pooled client
//! and the side's blob signing key, so that reads are signed here and no
//! other stage handles a signed locator.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures::StreamExt;

use super::{BlockStream, Body, Part};
use crate::protocol::client::{body_chunks, list_index, Failure, KeepClient, PutOk};
use crate::protocol::index::Entry;
use crate::protocol::{BlockHash, KeepService, Locator, Mount};
use crate::role::Role;

/// How a side signs the locators it asks for (`+A…@…`): never printed.
pub struct Signer {
    pub key: Option<String>,
    pub token: String,
    /// The cluster's blob signature TTL, part of the signature.
    pub ttl: u64,
    /// Where the token, key and TTL were read from, for advice.
    pub source: TokenSource,
}

/// The file a side's token came from: a settings file (`ARVADOS_API_TOKEN`)
/// or a cluster config (`SystemRootToken`).
#[derive(Clone, Debug, Default)]
pub struct TokenSource {
    pub path: PathBuf,
    pub cluster_config: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("ttl", &self.ttl)
            .field("source", &self.source)
            .finish()
    }
}

impl Signer {
    /// The locator to ask for a block with: signed when there is a key
    /// (expiry one day from now, as the Go tool does).
    pub fn locator(&self, hash: &BlockHash, size: Option<u64>) -> String {
        let loc = Locator {
            hash: *hash,
            size,
            hints: Vec::new(),
        };
        match &self.key {
            Some(key) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                crate::protocol::sign_locator(&loc, key, &self.token, now + 86400, self.ttl)
            }
            None => loc.unsigned(),
        }
    }
}

/// One Keep service of a side.
pub struct KeepStore {
    pub service: KeepService,
    client: KeepClient,
    signer: Arc<Signer>,
    url: String,
    /// The union of its writable mounts' classes, when its mounts are known.
    write_classes: Option<Vec<String>>,
}

impl std::fmt::Debug for KeepStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepStore")
            .field("service", &self.service)
            .finish()
    }
}

impl KeepStore {
    pub fn new(service: KeepService, client: KeepClient, signer: Arc<Signer>) -> KeepStore {
        let url = service.url();
        let mut k = KeepStore {
            service,
            client,
            signer,
            url,
            write_classes: None,
        };
        k.write_classes = k.union_of_writable();
        k
    }

    fn union_of_writable(&self) -> Option<Vec<String>> {
        let mounts = self.service.mounts.as_ref()?;
        let mut all: Vec<String> = (mounts.iter().filter(|m| m.writable))
            .flat_map(|m| m.classes.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        Some(all)
    }

    /// `GET /mounts`: the keepstore's volumes, `None` when it predates
    /// `/mounts` (404).
    pub async fn fetch_mounts(&self) -> Result<Option<Vec<Mount>>, Failure> {
        self.client.mounts(&self.url).await
    }

    /// Take the mounts the keepstore itself listed (they replace a cluster
    /// config's view): from now on its index is asked one mount at a time,
    /// and it is read-only when none of them is writable (as keep-balance
    /// treats it).
    pub fn set_mounts(&mut self, mounts: Vec<Mount>) {
        if !mounts.is_empty() && !mounts.iter().any(|m| m.writable) {
            self.service.read_only = true;
        }
        self.service.mounts = Some(mounts);
        self.service.mounts_served = true;
        self.write_classes = self.union_of_writable();
    }

    pub(super) fn expected_replicas(&self, hash: &BlockHash, classes: Option<&str>) -> u32 {
        let Some(mounts) = &self.service.mounts else {
            return 1;
        };
        let asked: Vec<&str> = (classes.unwrap_or("").split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let among: Vec<u16> = (0..mounts.len() as u16)
            .filter(|&m| {
                let m = &mounts[m as usize];
                m.writable
                    && (asked.is_empty() || m.classes.iter().any(|c| asked.contains(&c.as_str())))
            })
            .collect();
        let suffixes: Vec<&str> = (mounts.iter())
            .map(|m| crate::protocol::mount_weight_suffix(&m.uuid))
            .collect();
        let mut order = Vec::new();
        crate::protocol::mount_order_among(hash, &suffixes, &[], &among, &mut order);
        order
            .first()
            .map_or(1, |&m| mounts[m as usize].replication.max(1))
    }

    pub(super) fn write_classes(&self) -> Option<&[String]> {
        self.write_classes.as_deref()
    }

    /// One part per mount when the keepstore serves `/mounts`; else the
    /// whole index, its copies in the classes every mount a cluster config
    /// gave it has (the only ones a listed copy is surely in).
    pub(super) fn parts(&self) -> Vec<Part> {
        match &self.service.mounts {
            Some(mounts) if self.service.mounts_served => mounts
                .iter()
                .map(|m| Part {
                    mount: Some(m.uuid.clone()),
                    replicas: m.replication.max(1),
                    classes: Some(m.classes.clone()),
                    writable: m.writable && self.service.writable(),
                })
                .collect(),
            Some(mounts) => {
                let mut every: Option<Vec<String>> = None;
                for m in mounts {
                    every = Some(match every {
                        None => m.classes.clone(),
                        Some(c) => c.into_iter().filter(|x| m.classes.contains(x)).collect(),
                    });
                }
                vec![Part {
                    mount: None,
                    replicas: 1,
                    classes: every,
                    writable: self.service.writable(),
                }]
            }
            None => vec![Part {
                mount: None,
                replicas: 1,
                classes: None,
                writable: self.service.writable(),
            }],
        }
    }

    /// What to fix when its index is refused (401/403): the token, named
    /// as the file it came from names it.
    pub(super) fn index_refused_advice(&self) -> String {
        format!(
            "Indexes are served only to the cluster's system root token: check {}.",
            self.token_key()
        )
    }

    /// What to fix when a block request is refused (401/403, `f`): the
    /// token, and the signing key and TTL a signature is made of.
    pub(super) fn refused_advice(&self, role: Role, f: &Failure) -> String {
        let s = &self.signer;
        let path = s.source.path.display();
        let fix = if s.source.cluster_config {
            format!(
                "check SystemRootToken, Collections.BlobSigningKey and \
                 Collections.BlobSigningTTL in {path} (they must be the cluster's own), or \
                 {} if the TTL there is not the one the keepstores use",
                role.ttl_flag()
            )
        } else if s.key.is_some() {
            format!(
                "check ARVADOS_API_TOKEN (the cluster's system root token) and \
                 ARVADOS_BLOB_SIGNING_KEY in {path}, and {} (it must be the cluster's \
                 BlobSigningTTL)",
                role.ttl_flag()
            )
        } else {
            format!(
                "check ARVADOS_API_TOKEN in {path} (the cluster's system root token), and add \
                 ARVADOS_BLOB_SIGNING_KEY if the cluster enforces permission signatures"
            )
        };
        format!(
            "the {}'s keep services refuse our requests ({f}): {fix}.",
            role.cluster()
        )
    }

    /// `SystemRootToken in FILE` or `ARVADOS_API_TOKEN in FILE`.
    fn token_key(&self) -> String {
        let src = &self.signer.source;
        let key = if src.cluster_config {
            "SystemRootToken"
        } else {
            "ARVADOS_API_TOKEN"
        };
        format!("{key} in {}", src.path.display())
    }

    pub(super) async fn list(
        &self,
        prefix: &str,
        mount: Option<&str>,
        answered: &AtomicBool,
        on_bytes: &(dyn Fn(u64) + Sync),
        into: Vec<Entry>,
    ) -> Result<(Vec<Entry>, u64), Failure> {
        list_index(
            &self.client,
            &self.url,
            prefix,
            mount,
            answered,
            on_bytes,
            into,
        )
        .await
    }

    pub(super) async fn head(
        &self,
        hash: &BlockHash,
        size: Option<u64>,
    ) -> Result<Option<u64>, Failure> {
        let loc = self.signer.locator(hash, size);
        self.client.head_block(&self.url, &loc).await
    }

    pub(super) async fn read(&self, hash: &BlockHash, size: u64) -> Result<BlockStream, Failure> {
        let loc = self.signer.locator(hash, Some(size));
        let resp = self.client.open_block(&self.url, &loc, size).await?;
        Ok(body_chunks(resp).boxed())
    }

    pub(super) async fn write(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
        desired: u32,
        classes: Option<&str>,
    ) -> Result<PutOk, Failure> {
        self.client
            .put_block(&self.url, hash, size, body.into_reqwest(), desired, classes)
            .await
    }
}
