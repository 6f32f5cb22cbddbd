//! keepstore-sim: a faithful Arvados keepstore simulator for tests, demos and
//! benchmarks of keep-rsync (docs/protocol.md: Keep services through API server
//! discovery, volume layouts, and the Python SDK as a reference client).
//!
//! A [`Cluster`] is N keepstores on 127.0.0.1 (each its own port and store,
//! in memory or in a keepstore-style directory), with optional fault
//! injection ([`Faults`]), an optional HTTPS API-server stub, a synthetic
//! index mode for 10^7–10^8 blocks ([`SyntheticIndex`]), and direct helpers
//! (put/get/corrupt blocks, counters, stop/restart a service) for tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use keepstore_sim::{Cluster, ClusterConfig};
//! let cluster = Cluster::start(ClusterConfig::new(4, "roottoken")).await?;
//! let h = cluster.put_block(cluster.probe_order(&keep_protocol::BlockHash::of(b"foo"))[0], b"foo");
//! println!("{} {}", cluster.url(0), h);
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Files: `server.rs` (Keep API handlers, listener life cycle), `store.rs`
//! (memory and directory volumes), `faults.rs` (knobs and the deterministic
//! decision rule), `load.rs` (the request limiter and in-flight count
//! behind `max_concurrent` and `queue_latency_us`), `api.rs` (HTTPS API stub), `synthetic.rs` (synthetic
//! index), `seed.rs` (random blocks and placement), `cli.rs` (the binary).

pub mod api;
pub mod cli;
pub mod faults;
pub mod lag;
mod load;
pub mod rawcopy;
pub mod seed;
pub mod server;
pub mod store;
pub mod synthetic;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use faults::{FaultDecision, FaultOp, Faults};
pub use seed::SizeRange;
pub use synthetic::SyntheticIndex;

use keep_protocol::{probe_order, uuid_weight_suffix, BlockHash};
use server::{Shared, Svc};
use store::Data;

/// How to build a cluster. `ClusterConfig::new(services, root_token)` gives
/// the usual test setup; everything else has a sensible default.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of keepstores.
    pub services: usize,
    /// Cluster id in the service uuids (`<prefix>-bi6l4-%015x`), 5 characters.
    pub uuid_prefix: String,
    /// Give the services the 28-character uuids a stock API server derives
    /// from its config when keepstores have no `Rendezvous`:
    /// `<prefix>-bi6l4-` + 16 hex digits of md5(`http://HOST:PORT/`)
    /// (`keep_protocol::config_service_uuid`), weighed whole in rendezvous
    /// order. Without fixed `ports` they change from run to run.
    pub rails_uuids: bool,
    /// The system root ("data manager") token: needed for /index.
    pub root_token: String,
    /// Blob signing key: PUT answers are signed with it when set.
    pub signing_key: Option<String>,
    /// Refuse GET/HEAD without a valid signature (needs `signing_key`).
    pub enforce_signatures: bool,
    /// Blob signature TTL in seconds (also in the discovery document).
    pub blob_signature_ttl: u64,
    /// `None`: memory. `Some(dir)`: `dir/<uuid>/XYZ/HASH` per service.
    pub data_dir: Option<PathBuf>,
    /// Indices of read-only services (listed `read_only: true`; PUT → 507).
    pub read_only: Vec<usize>,
    /// Address to listen on.
    pub listen: IpAddr,
    /// Fixed ports, one per service; empty = ephemeral.
    pub ports: Vec<u16>,
    /// Initial faults of every service.
    pub faults: Faults,
    /// Also start the HTTPS API-server stub.
    pub api_server: bool,
    /// `defaultCollectionReplication` of the discovery document.
    pub default_replication: u32,
    /// Synthetic index entries served by every service.
    pub synthetic: Option<SyntheticIndex>,
    /// Storage classes the services offer (confirmed on PUT when requested).
    pub storage_classes: Vec<String>,
    /// Per service, classes instead of `storage_classes` (a keepstore whose
    /// volumes are of other classes); services past its end take those.
    pub service_classes: Vec<Vec<String>>,
    /// `disk` (keepstores, the default) or `proxy`: a keepproxy answers a
    /// PUT with as many replicas stored as were desired.
    pub service_type: String,
    /// Benchmarks with many big blocks: seeded blocks share all their bytes
    /// but a short tail (all must have the same size), so N blocks of 64 MiB
    /// take the memory of one.
    pub shared_data: bool,
    /// Benchmarks: blocks written over HTTP are verified, then only their
    /// size is kept (listed in the index; GET answers 404).
    pub discard_data: bool,
    /// Per service, the volumes it mounts (each its own store, classes and
    /// replication); services past its end, or given none, mount one volume
    /// of their classes. `GET /mounts` lists them.
    pub mounts: Vec<Vec<MountSpec>>,
    /// Serve `/mounts` and `/mounts/UUID/blocks` (`false`: a keepstore from
    /// before them, answering 404).
    pub serve_mounts: bool,
}

/// One volume a simulated keepstore mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// Its storage classes (`default` when empty).
    pub classes: Vec<String>,
    /// Copies one block stored here stands for (at least 1).
    pub replication: u32,
    pub read_only: bool,
}

impl MountSpec {
    /// A writable volume of `classes`, replication 1.
    pub fn of(classes: &[&str]) -> MountSpec {
        MountSpec {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            replication: 1,
            read_only: false,
        }
    }
}

/// The uuid of mount `m` of service `i` (`PREFIX-nyw5e-…`): mount 0 is
/// `%015x` of `i`, as the cluster config's volumes always were.
pub fn mount_uuid(prefix: &str, i: usize, m: usize) -> String {
    format!("{prefix}-nyw5e-{:015x}", (i as u64) | ((m as u64) << 32))
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            services: 1,
            uuid_prefix: "zzzzz".into(),
            rails_uuids: false,
            root_token: String::new(),
            signing_key: None,
            enforce_signatures: false,
            blob_signature_ttl: 1_209_600,
            data_dir: None,
            read_only: Vec::new(),
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Vec::new(),
            faults: Faults::default(),
            api_server: false,
            default_replication: 2,
            synthetic: None,
            storage_classes: vec!["default".into()],
            service_classes: Vec::new(),
            service_type: "disk".into(),
            shared_data: false,
            discard_data: false,
            mounts: Vec::new(),
            serve_mounts: true,
        }
    }
}

impl ClusterConfig {
    /// `services` keepstores in memory with root token `root_token`.
    pub fn new(services: usize, root_token: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            services,
            root_token: root_token.into(),
            ..ClusterConfig::default()
        }
    }
}

/// Requests for one block hash on one service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashCounters {
    pub gets: u64,
    pub puts: u64,
}

/// Request counters of one service (see `/_sim/counters`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub gets: u64,
    pub heads: u64,
    /// PUT requests received (whatever came of them).
    pub puts: u64,
    /// PUTs that stored their block.
    pub puts_stored: u64,
    /// PUTs whose body broke off before its `Content-Length` (nothing stored).
    pub puts_aborted: u64,
    pub index_requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub faults_injected: u64,
    /// Requests answered 503 by the `max_concurrent` limit (queue full, or
    /// waited `queue_timeout_ms`). Also counted as the GET, HEAD, PUT or
    /// index request each was, but not in `faults_injected`.
    #[serde(default)]
    pub refused: u64,
    /// Requests that got their slot after waiting in the `max_queued` queue
    /// (those that waited in vain are in `refused`).
    #[serde(default)]
    pub queued: u64,
    /// Keep requests in flight when the snapshot was taken (a gauge, not
    /// zeroed by `reset_counters`).
    #[serde(default)]
    pub in_flight: u64,
    /// Keep requests waiting in the `max_queued` queue at the snapshot (a
    /// gauge).
    #[serde(default)]
    pub waiting: u64,
    /// Most Keep requests in flight at once since the counters were last
    /// reset (then it restarts from `in_flight`).
    #[serde(default)]
    pub max_in_flight: u64,
    /// Per block hash; serialized as a map from hex hash to counters.
    #[serde(with = "hex_map")]
    pub per_hash: BTreeMap<BlockHash, HashCounters>,
}

mod hex_map {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<BlockHash, HashCounters>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k.to_hex(), v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<BlockHash, HashCounters>, D::Error> {
        let raw = BTreeMap::<String, HashCounters>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                k.parse::<BlockHash>()
                    .map(|h| (h, v))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// A running simulated cluster. Dropping it stops every service.
pub struct Cluster {
    cfg: ClusterConfig,
    svcs: Vec<Arc<Svc>>,
    api: Option<api::ApiServer>,
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg.into())
}

impl Cluster {
    /// Bind every service (and the API stub) and start serving.
    pub async fn start(cfg: ClusterConfig) -> std::io::Result<Cluster> {
        if cfg.services == 0 {
            return Err(invalid("a cluster needs at least one service"));
        }
        if cfg.uuid_prefix.len() != 5 || !cfg.uuid_prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(invalid("uuid prefix must be 5 letters or digits"));
        }
        if !cfg.ports.is_empty() && cfg.ports.len() != cfg.services {
            return Err(invalid("give one port per service, or none"));
        }
        if cfg.enforce_signatures && cfg.signing_key.is_none() {
            return Err(invalid("enforcing signatures needs a signing key"));
        }
        if cfg.root_token.is_empty() {
            return Err(invalid("the root token must not be empty"));
        }
        if let Some(&i) = cfg.read_only.iter().find(|&&i| i >= cfg.services) {
            return Err(invalid(format!("read-only service {i} does not exist")));
        }
        let shared = Arc::new(Shared {
            root_token: cfg.root_token.clone(),
            signing_key: cfg.signing_key.clone(),
            enforce_signatures: cfg.enforce_signatures,
            ttl: cfg.blob_signature_ttl,
            n: cfg.services,
            synthetic: cfg.synthetic.clone(),
            storage_classes: cfg.storage_classes.clone(),
            proxy: cfg.service_type == "proxy",
        });
        let mut svcs = Vec::with_capacity(cfg.services);
        for i in 0..cfg.services {
            let port = cfg.ports.get(i).copied().unwrap_or(0);
            let listener = TcpListener::bind((cfg.listen, port)).await?;
            let addr = listener.local_addr()?;
            let uuid = if cfg.rails_uuids {
                let url = format!("http://{}/", host_port(addr));
                keep_protocol::config_service_uuid(&cfg.uuid_prefix, &url, None)
            } else {
                format!("{}-bi6l4-{:015x}", cfg.uuid_prefix, i)
            };
            let store = store::Store::open(
                cfg.data_dir.as_ref().map(|d| d.join(&uuid)),
                cfg.discard_data,
            )?;
            let mut svc = Svc::new(
                i,
                uuid,
                cfg.read_only.contains(&i),
                addr,
                store,
                shared.clone(),
                cfg.faults.clone(),
            );
            if let Some(c) = cfg.service_classes.get(i) {
                svc.classes = c.clone();
            }
            mount_volumes(&mut svc, &cfg, i)?;
            let svc = Arc::new(svc);
            svc.serve(listener);
            svcs.push(svc);
        }
        let mut cluster = Cluster {
            cfg,
            svcs,
            api: None,
        };
        if cluster.cfg.api_server {
            let services_json = cluster.services_json();
            let (root_token, prefix) = (
                cluster.cfg.root_token.clone(),
                cluster.cfg.uuid_prefix.clone(),
            );
            let (repl, ttl) = (
                cluster.cfg.default_replication,
                cluster.cfg.blob_signature_ttl,
            );
            let api = api::ApiServer::start(cluster.cfg.listen, move |addr| api::ApiState {
                root_token,
                services_json,
                discovery: api::discovery_doc(&host_port(addr), &prefix, repl, ttl),
                accessible_requests: Default::default(),
                discovery_requests: Default::default(),
            })
            .await?;
            cluster.api = Some(api);
        }
        Ok(cluster)
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.svcs.len()
    }

    /// Whether the cluster has no services (never, once started).
    pub fn is_empty(&self) -> bool {
        self.svcs.is_empty()
    }

    /// Root URL of service `i`, `http://127.0.0.1:PORT`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", host_port(self.svcs[i].addr))
    }

    /// Uuid of service `i`.
    pub fn uuid(&self, i: usize) -> String {
        self.svcs[i].uuid.clone()
    }

    /// The root token.
    pub fn root_token(&self) -> &str {
        &self.cfg.root_token
    }

    /// The configuration the cluster was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The services list, shaped like `keep_services/accessible` (docs/protocol.md, "Keep services").
    pub fn services_json(&self) -> serde_json::Value {
        let owner = format!("{}-tpzed-000000000000000", self.cfg.uuid_prefix);
        let items: Vec<serde_json::Value> = self
            .svcs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "kind": "arvados#keepService",
                    "etag": format!("sim{:x}", s.index),
                    "uuid": s.uuid,
                    "href": format!("/keep_services/{}", s.uuid),
                    "owner_uuid": owner,
                    "created_at": "2024-01-01T00:00:00.000000000Z",
                    "modified_at": "2024-01-01T00:00:00.000000000Z",
                    "modified_by_user_uuid": owner,
                    "modified_by_client_uuid": null,
                    "service_host": s.addr.ip().to_string(),
                    "service_port": s.addr.port(),
                    "service_ssl_flag": false,
                    "service_type": self.cfg.service_type,
                    "read_only": s.read_only,
                })
            })
            .collect();
        serde_json::json!({
            "kind": "arvados#keepServiceList",
            "etag": "",
            "self_link": "",
            "offset": 0,
            "limit": 1000,
            "items_available": items.len(),
            "items": items,
        })
    }

    /// `127.0.0.1:PORT` of the HTTPS API stub, if started.
    pub fn api_host(&self) -> Option<String> {
        self.api.as_ref().map(|a| host_port(a.addr))
    }

    /// Requests to the API stub so far: (keep_services/accessible, discovery).
    pub fn api_requests(&self) -> (u64, u64) {
        match &self.api {
            Some(a) => (
                a.state.accessible_requests.load(Ordering::Relaxed),
                a.state.discovery_requests.load(Ordering::Relaxed),
            ),
            None => (0, 0),
        }
    }

    /// An arv-copy style settings file for this cluster (contains secrets).
    pub fn settings_text(&self) -> String {
        let host = self.api_host().unwrap_or_else(|| "none.invalid".into());
        let mut s = format!(
            "ARVADOS_API_HOST={host}\nARVADOS_API_TOKEN={}\nARVADOS_API_HOST_INSECURE=1\n",
            self.cfg.root_token
        );
        if let Some(k) = &self.cfg.signing_key {
            s.push_str(&format!("ARVADOS_BLOB_SIGNING_KEY={k}\n"));
        }
        s
    }

    /// The cluster's `/etc/arvados/config.yml`, as an Arvados admin writes
    /// it (contains secrets): `SystemRootToken`, `Collections` (signing key,
    /// TTL, default replication), `TLS.Insecure`, the keepstores as
    /// `Services.Keepstore.InternalURLs` with a 15-character `Rendezvous`
    /// (so clients derive this simulator's uuids; none with `rails_uuids`,
    /// whose uuids clients derive from the URL), or the first service as
    /// `Services.Keepproxy.ExternalURL` for a cluster of proxies, and one
    /// Directory volume per keepstore, `ReadOnly` through its host when the
    /// service is read-only.
    pub fn cluster_config_text(&self) -> String {
        let c = &self.cfg;
        let mut y = format!("Clusters:\n  {}:\n", c.uuid_prefix);
        y.push_str(&format!("    SystemRootToken: {:?}\n", c.root_token));
        y.push_str("    Collections:\n");
        if let Some(k) = &c.signing_key {
            y.push_str(&format!("      BlobSigningKey: {k:?}\n"));
        }
        y.push_str(&format!(
            "      BlobSigningTTL: {}s\n",
            c.blob_signature_ttl
        ));
        y.push_str(&format!(
            "      DefaultReplication: {}\n",
            c.default_replication
        ));
        y.push_str("    TLS:\n      Insecure: true\n    Services:\n");
        if let Some(h) = self.api_host() {
            y.push_str(&format!(
                "      Controller:\n        ExternalURL: \"https://{h}\"\n"
            ));
        }
        if c.service_type == "proxy" {
            y.push_str(&format!(
                "      Keepproxy:\n        ExternalURL: \"{}/\"\n",
                self.url(0)
            ));
            return y;
        }
        y.push_str("      Keepstore:\n        InternalURLs:\n");
        for (i, s) in self.svcs.iter().enumerate() {
            if c.rails_uuids {
                y.push_str(&format!("          \"{}/\": {{}}\n", self.url(i)));
            } else {
                y.push_str(&format!(
                    "          \"{}/\": {{Rendezvous: \"{}\"}}\n",
                    self.url(i),
                    &s.uuid[12..]
                ));
            }
        }
        y.push_str("    Volumes:\n");
        for (i, s) in self.svcs.iter().enumerate() {
            let ro = c.read_only.contains(&i);
            for (m, mnt) in s.mounts.iter().enumerate() {
                let classes: Vec<String> =
                    mnt.classes.iter().map(|c| format!("{c:?}: true")).collect();
                y.push_str(&format!(
                    "      {}:\n        AccessViaHosts: {{\"{}/\": {{ReadOnly: {ro}}}}}\n        Driver: Directory\n        DriverParameters: {{Root: /var/lib/arvados/keep{i}{}}}\n        ReadOnly: {}\n        Replication: {}\n        StorageClasses: {{{}}}\n",
                    mnt.uuid,
                    self.url(i),
                    if m == 0 { String::new() } else { format!("-{m}") },
                    !mnt.writable && !ro,
                    mnt.replication,
                    classes.join(", ")
                ));
            }
        }
        y
    }

    /// Rendezvous probe order of `hash` over this cluster's services (the
    /// Go SDK's: `uuid_weight_suffix`).
    pub fn probe_order(&self, hash: &BlockHash) -> Vec<usize> {
        let suffixes: Vec<&str> = (self.svcs.iter())
            .map(|s| uuid_weight_suffix(&s.uuid))
            .collect();
        probe_order(hash, &suffixes)
    }

    /// Store `data` on service `i` directly (no HTTP, not counted; works on
    /// read-only services too).
    pub fn put_block(&self, i: usize, data: &[u8]) -> BlockHash {
        let h = BlockHash::of(data);
        if let Err(e) = self.svcs[i].store.put(&h, Bytes::copy_from_slice(data)) {
            eprintln!("keepstore-sim: put_block on service {i}: {e}");
        }
        h
    }

    /// Store `data` on mount `m` of service `i` directly.
    pub fn put_block_on(&self, i: usize, m: usize, data: &[u8]) -> BlockHash {
        let h = BlockHash::of(data);
        if let Err(e) = self.svcs[i].mounts[m]
            .store
            .put(&h, Bytes::copy_from_slice(data))
        {
            eprintln!("keepstore-sim: put_block_on service {i} mount {m}: {e}");
        }
        h
    }

    /// Store `data` under `h` on mount `m` of service `i`, whatever its hash
    /// (a file a crash cut short, a damaged disk).
    pub fn put_raw(&self, i: usize, m: usize, h: &BlockHash, data: &[u8]) {
        if let Err(e) = self.svcs[i].mounts[m]
            .store
            .put(h, Bytes::copy_from_slice(data))
        {
            eprintln!("keepstore-sim: put_raw on service {i} mount {m}: {e}");
        }
    }

    /// Whether service `i` holds `h` (on any of its mounts).
    pub fn has_block(&self, i: usize, h: &BlockHash) -> bool {
        self.svcs[i].mounts.iter().any(|m| m.store.contains(h))
    }

    /// Whether mount `m` of service `i` holds `h`.
    pub fn mount_has_block(&self, i: usize, m: usize, h: &BlockHash) -> bool {
        self.svcs[i].mounts[m].store.contains(h)
    }

    /// The uuid of mount `m` of service `i`, and how many it has.
    pub fn mount_uuid(&self, i: usize, m: usize) -> String {
        self.svcs[i].mounts[m].uuid.clone()
    }

    pub fn mount_count(&self, i: usize) -> usize {
        self.svcs[i].mounts.len()
    }

    /// The bytes service `i` holds for `h`.
    pub fn get_block(&self, i: usize, h: &BlockHash) -> Option<Bytes> {
        let m = self.svcs[i].mount_with(h)?;
        m.store.get(h).ok().flatten()
    }

    /// Remove `h` from service `i` (every mount); whether it was there.
    pub fn remove_block(&self, i: usize, h: &BlockHash) -> bool {
        (self.svcs[i].mounts.iter()).fold(false, |was, m| m.store.remove(h) | was)
    }

    /// Flip one stored byte of `h` on service `i`; whether it was there.
    pub fn corrupt_block(&self, i: usize, h: &BlockHash) -> bool {
        (self.svcs[i].mount_with(h)).is_some_and(|m| m.store.corrupt(h))
    }

    /// Every block service `i` holds, `(hash, size)`, sorted by hash, once
    /// each however many mounts hold it (synthetic entries excluded).
    pub fn blocks(&self, i: usize) -> Vec<(BlockHash, u64)> {
        let mut all: Vec<(BlockHash, u64)> = (self.svcs[i].mounts.iter())
            .flat_map(|m| m.store.list("").unwrap_or_default())
            .map(|e| (e.hash, e.size))
            .collect();
        all.sort();
        all.dedup_by_key(|e| e.0);
        all
    }

    /// Put `n` random blocks (sizes from `sizes`, round robin) on the first
    /// `replicas` writable services of each one's probe order, each on the
    /// first writable mount of its keepstore's mount order. The same `seed`
    /// gives the same blocks.
    pub fn seed_blocks(
        &self,
        n: usize,
        sizes: &[SizeRange],
        replicas: usize,
        seed: u64,
    ) -> Vec<(BlockHash, u64)> {
        let writable: Vec<bool> = self.svcs.iter().map(|s| !s.read_only).collect();
        let blocks: Box<dyn Iterator<Item = (BlockHash, Data)>> = if self.cfg.shared_data {
            match seed::generate_shared(n, sizes, seed) {
                Ok(it) => Box::new(it),
                Err(e) => {
                    eprintln!("keepstore-sim: {e}");
                    return Vec::new();
                }
            }
        } else {
            Box::new(seed::generate(n, sizes, seed).map(|b| (BlockHash::of(&b), Data::Whole(b))))
        };
        let mut out = Vec::with_capacity(n);
        for (h, data) in blocks {
            for i in seed::placement(&self.probe_order(&h), &writable, replicas) {
                // On the mount keepstore would write it to: its first
                // writable one in mount order.
                let svc = &self.svcs[i];
                let m = svc.mount_order(&h, true).first().copied().unwrap_or(0);
                if let Err(e) = svc.mounts[m].store.put_data(&h, data.clone()) {
                    eprintln!("keepstore-sim: seeding service {i}: {e}");
                }
            }
            out.push((h, data.len()));
        }
        out
    }

    /// Replace the faults of service `i` (attempt numbers restart at 0).
    pub fn set_faults(&self, i: usize, f: Faults) {
        self.svcs[i].set_faults(f);
    }

    /// The faults of service `i`.
    pub fn faults(&self, i: usize) -> Faults {
        self.svcs[i].faults()
    }

    /// Request counters of service `i`.
    pub fn counters(&self, i: usize) -> CounterSnapshot {
        self.svcs[i].snapshot()
    }

    /// Zero every service's counters (fault attempt numbers are kept).
    pub fn reset_counters(&self) {
        self.svcs.iter().for_each(|s| s.reset_counters());
    }

    /// GET requests for `h` over all services, whatever their outcome.
    pub fn total_gets(&self, h: &BlockHash) -> u64 {
        self.svcs.iter().map(|s| s.hash_counters(h).gets).sum()
    }

    /// PUT requests for `h` over all services, whatever their outcome.
    pub fn total_puts(&self, h: &BlockHash) -> u64 {
        self.svcs.iter().map(|s| s.hash_counters(h).puts).sum()
    }

    /// Close service `i`'s listener and connections: from now on connecting
    /// to it is refused. Its store is kept, and so is its port (bound, not
    /// listening), so nothing else can take it before `restart_service`.
    pub fn stop_service(&self, i: usize) {
        self.svcs[i].pause();
    }

    /// Listen again on the same port with the same store.
    pub async fn restart_service(&self, i: usize) -> std::io::Result<()> {
        self.svcs[i].resume().await
    }

    /// Whether service `i` is listening.
    pub fn is_running(&self, i: usize) -> bool {
        self.svcs[i].is_running()
    }

    /// Stop every service and the API stub.
    pub async fn shutdown(self) {
        self.stop_all();
        tokio::task::yield_now().await;
    }

    fn stop_all(&self) {
        self.svcs.iter().for_each(|s| s.stop());
        if let Some(a) = &self.api {
            a.stop();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Give service `i` its volumes from `cfg.mounts` (mount 0 on its own
/// store, the others on new ones beside it); its classes become those of
/// its writable mounts.
fn mount_volumes(svc: &mut Svc, cfg: &ClusterConfig, i: usize) -> std::io::Result<()> {
    let specs = match cfg.mounts.get(i) {
        Some(m) if !m.is_empty() => m.clone(),
        _ => vec![MountSpec {
            classes: svc.classes.clone(),
            replication: 1,
            read_only: false,
        }],
    };
    svc.mounts.clear();
    for (m, spec) in specs.iter().enumerate() {
        let store = if m == 0 {
            svc.store.clone()
        } else {
            Arc::new(store::Store::open(
                cfg.data_dir
                    .as_ref()
                    .map(|d| d.join(format!("{}-{m}", svc.uuid))),
                cfg.discard_data,
            )?)
        };
        let mut classes = spec.classes.clone();
        if classes.is_empty() {
            classes.push("default".into());
        }
        svc.mounts.push(server::SimMount {
            uuid: mount_uuid(&cfg.uuid_prefix, i, m),
            store,
            classes,
            replication: spec.replication.max(1),
            writable: !spec.read_only && !svc.read_only,
        });
    }
    let mut classes: Vec<String> = (svc.mounts.iter().filter(|m| m.writable))
        .flat_map(|m| m.classes.iter().cloned())
        .collect();
    classes.sort();
    classes.dedup();
    if !classes.is_empty() {
        svc.classes = classes;
    }
    svc.serve_mounts = cfg.serve_mounts;
    Ok(())
}

fn host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}
