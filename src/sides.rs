//! Both sides of a run, ready to use: settings files → stores (keep services
//! from a services list or the API server, or volumes: `--*-volume-dir`
//! directories and `--*-volumes` files) → the discovery defaults that are
//! needed → a [`Side`] each, its stores built with the side's pooled clients. Everything that
//! can be wrong with the configuration is found here, before any index is
//! fetched (exit 2), or the API server that should answer does not (exit 3).
//!
//! keep-block-check's one side ([`prepare_cluster`]) is built by the same
//! steps: settings file, services list or API server, discovery only when a
//! default is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::Config;
use crate::cluster_config::{ClusterConfig, DEFAULT_TTL};
use crate::error::{Error, Result};
use crate::progress::{Level, Reporter};
use crate::protocol::client::{ClientOptions, KeepClient};
use crate::role::Role;
use crate::services::{self, Discovery, KeepService, Service, Side};
use crate::settings::{self, Settings};
use crate::store::{
    AzureVolume, DirVolume, KeepStore, Ranking, S3Volume, Signer, Store, TokenSource, VolumeTraits,
};
use crate::volumes_file::{self, Driver, VolumeSpec};

/// How a side's clients connect, from either program's flags.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    pub connect_timeout: std::time::Duration,
    pub stall_timeout: std::time::Duration,
    /// `--max-per-service`.
    pub max_per_service: usize,
    /// Adapt each service's limit (not `--fixed-concurrency`).
    pub adaptive: bool,
    /// `--checkers`.
    pub checkers: usize,
    /// `--retries` and its backoff, for the `GET /mounts` asked while the
    /// side is prepared.
    pub retries: u32,
    pub backoff: crate::protocol::client::Backoff,
}

impl Connection {
    fn mounts_ask(&self) -> services::MountsAsk {
        services::MountsAsk {
            checkers: self.checkers,
            retries: self.retries,
            backoff: self.backoff,
        }
    }

    fn of(cfg: &Config) -> Connection {
        Connection {
            connect_timeout: cfg.net.connect_timeout,
            stall_timeout: cfg.net.stall_timeout,
            max_per_service: cfg.conc.max_per_service,
            adaptive: !cfg.conc.fixed_concurrency,
            checkers: cfg.conc.checkers,
            retries: cfg.net.retries,
            backoff: cfg.net.backoff(),
        }
    }
}

/// Both sides, and the replicas wanted at the destination.
pub struct Sides {
    pub src: Side,
    pub dst: Side,
    pub want: u32,
    /// What each destination store's listing counts for.
    pub dst_credits: Vec<u32>,
}

/// A side's stores before its clients exist: Keep services, or volumes
/// (with the `Collections.DefaultReplication` of their file when it is a
/// whole cluster config).
enum Stores {
    Keep(Vec<KeepService>),
    Volumes(Vec<VolumeSpec>, Option<u32>),
}

impl Stores {
    fn is_keep(&self) -> bool {
        matches!(self, Stores::Keep(_))
    }

    /// Locations and ids, for [`check_distinct`].
    fn names(&self) -> Vec<(String, String)> {
        match self {
            Stores::Keep(l) => l.iter().map(|s| (s.uuid.clone(), s.url())).collect(),
            Stores::Volumes(l, _) => l
                .iter()
                .map(|v| {
                    let loc = match &v.driver {
                        Driver::Directory { root } => format!("file://{}", root.display()),
                        Driver::S3(p) => format!(
                            "s3://{}/{}",
                            p.endpoint.as_deref().unwrap_or(&p.region),
                            p.bucket
                        ),
                        Driver::Azure(p) => {
                            format!("azure://{}/{}/{}", p.base_url, p.account_name, p.container)
                        }
                    };
                    (v.uuid.clone(), loc)
                })
                .collect(),
        }
    }
}

/// Settings, stores and defaults for both sides.
pub async fn prepare(cfg: &Config, reporter: &dyn Reporter) -> Result<Sides> {
    let src_config = cluster_config(cfg, Role::Source)?;
    let dst_config = cluster_config(cfg, Role::Destination)?;
    let (src_settings, dst_settings) = load_settings(cfg, reporter, &src_config, &dst_config)?;
    let src = side_stores(cfg, &src_settings, &src_config, Role::Source, reporter).await?;
    let dst = side_stores(cfg, &dst_settings, &dst_config, Role::Destination, reporter).await?;
    check_distinct(&src, &dst)?;
    let defaults = Defaults::fetch(
        cfg,
        (&src_settings, &src, src_config.as_ref()),
        (&dst_settings, &dst, dst_config.as_ref()),
    )
    .await?;
    let conn = Connection::of(cfg);
    let src = make_side(Role::Source, src_settings, src, defaults.src_ttl, &conn)?;
    let mut dst = make_side(
        Role::Destination,
        dst_settings,
        dst,
        defaults.dst_ttl,
        &conn,
    )?;
    services::discover_mounts(&mut dst, conn.mounts_ask()).await;
    check_writable(&dst, defaults.want, cfg.storage_classes.as_deref())?;
    if !cfg.dry_run && !cfg.no_write_probe {
        let stores: Vec<&Store> = dst.services.iter().map(|s| &s.store).collect();
        crate::store::probe::probe_writes(&stores, reporter).await?;
    }
    warn_uuid_order(&src, reporter);
    warn_uuid_order(&dst, reporter);
    Ok(Sides {
        dst_credits: dst.credits(defaults.want),
        src,
        dst,
        want: defaults.want,
    })
}

/// keep-block-check's flags for its one cluster.
pub struct ClusterFlags<'a> {
    /// `-config FILE|NAME`.
    pub config: &'a str,
    /// `-keep-services-json JSON|FILE|-`.
    pub services_json: Option<&'a str>,
    /// `-cluster-config FILE` and `--via`.
    pub cluster_config: Option<&'a Path>,
    pub via: crate::cluster_config::Via,
    /// `--volume-dir PATH`, `--volumes FILE`, `--cluster ID`: volumes
    /// instead of keep services.
    pub volume_dirs: &'a [PathBuf],
    pub volumes: Option<&'a Path>,
    pub cluster: Option<&'a str>,
    /// `-blob-signature-ttl`, seconds; 0 = the discovery document's.
    pub ttl: u64,
    /// Whether blocks will be asked for by locator (signed when the
    /// settings hold a key): only then is a TTL needed.
    pub signs: bool,
    pub conn: Connection,
}

/// keep-block-check's cluster: settings, services, and (only when it signs
/// and no TTL was given) the discovery document's TTL.
pub async fn prepare_cluster(f: &ClusterFlags<'_>, reporter: &dyn Reporter) -> Result<Side> {
    prepare_cluster_with_default(f, reporter)
        .await
        .map(|(side, _)| side)
}

/// Where a cluster's default replication comes from, asked only when
/// needed (collection records with a null `replication_desired`).
pub enum ClusterDefault {
    /// Its config's `DefaultReplication`; 1 for volumes.
    Known(u32),
    /// The API server's `defaultCollectionReplication`.
    Api(Settings, std::time::Duration),
}

impl ClusterDefault {
    pub async fn resolve(self) -> Result<u32> {
        match self {
            ClusterDefault::Known(n) => Ok(n),
            ClusterDefault::Api(s, timeout) => {
                let flag =
                    "-replications N (the copies each block of the collection records should have)";
                let doc = discovery(&s, Role::Cluster, flag, timeout).await?;
                doc.default_replication.filter(|&n| n > 0).ok_or_else(|| {
                    Error::unreadable(format!(
                        "the API server ({}) gave no defaultCollectionReplication for the \
                         collection records with a null replication_desired: pass -replications N.",
                        s.api_host
                    ))
                })
            }
        }
    }
}

/// [`prepare_cluster`], and where its default replication comes from.
pub async fn prepare_cluster_with_default(
    f: &ClusterFlags<'_>,
    reporter: &dyn Reporter,
) -> Result<(Side, ClusterDefault)> {
    let role = Role::Cluster;
    let v = VolumeFlags {
        dirs: f.volume_dirs,
        file: f.volumes,
        cluster: f.cluster,
    };
    if let Some((specs, replication)) = volumes(role, &v, reporter)? {
        let side = make_side(
            role,
            Settings::default(),
            Stores::Volumes(specs, replication),
            DEFAULT_TTL,
            &f.conn,
        )?;
        return Ok((side, ClusterDefault::Known(replication.unwrap_or(1))));
    }
    let config = f
        .cluster_config
        .map(|p| crate::cluster_config::load(p, f.cluster, "-cluster-config", "--cluster"))
        .transpose()?;
    let s = match &config {
        Some(c) => c.settings.clone(),
        None => settings::load(f.config, role)?,
    };
    for w in &s.warnings {
        reporter.log(Level::Warn, w);
    }
    let stores = match (&config, f.services_json) {
        (Some(c), None) => Stores::Keep(c.services(f.via)?),
        _ => Stores::Keep(keep_services(f.conn.connect_timeout, &s, role, f.services_json).await?),
    };
    let ttl = if f.ttl > 0 {
        f.ttl
    } else if let Some(c) = &config {
        c.ttl
    } else if f.signs && s.blob_signing_key.is_some() {
        let flag = "-blob-signature-ttl DURATION (the cluster's blobSignatureTtl, needed to sign locators)";
        discovery(&s, role, flag, f.conn.connect_timeout)
            .await?
            .blob_signature_ttl
            .unwrap_or(DEFAULT_TTL)
    } else {
        DEFAULT_TTL
    };
    let default = match &config {
        Some(c) => ClusterDefault::Known(c.default_replication),
        None => ClusterDefault::Api(s.clone(), f.conn.connect_timeout),
    };
    let mut side = make_side(role, s, stores, ttl, &f.conn)?;
    services::discover_mounts(&mut side, f.conn.mounts_ask()).await;
    warn_uuid_order(&side, reporter);
    Ok((side, default))
}

/// A side's one warning when its keep services have uuids that Python SDK
/// clients weigh otherwise (said once the side is known to be usable, so a
/// configuration error stays one paragraph).
fn warn_uuid_order(side: &Side, reporter: &dyn Reporter) {
    let keep = side.services.iter().filter_map(|s| match &s.store {
        Store::Keep(k) => Some(&k.service),
        _ => None,
    });
    if let Some(w) = services::uuid_order_warning(side.role, keep) {
        reporter.log(Level::Warn, &w);
    }
}

/// A side's `-*-cluster-config`, read (its `--*-cluster` picks the cluster).
fn cluster_config(cfg: &Config, role: Role) -> Result<Option<ClusterConfig>> {
    let (path, cluster, flag, cluster_flag) = match role {
        Role::Destination => (
            &cfg.dst_cluster_config,
            cfg.dst_cluster.as_deref(),
            "-dst-cluster-config",
            "--dst-cluster",
        ),
        _ => (
            &cfg.src_cluster_config,
            cfg.src_cluster.as_deref(),
            "-src-cluster-config",
            "--src-cluster",
        ),
    };
    path.as_deref()
        .map(|p| crate::cluster_config::load(p, cluster, flag, cluster_flag))
        .transpose()
}

/// Both settings files (or what the cluster configs say in their place); a
/// side given as volumes has none.
fn load_settings(
    cfg: &Config,
    reporter: &dyn Reporter,
    src_config: &Option<ClusterConfig>,
    dst_config: &Option<ClusterConfig>,
) -> Result<(Settings, Settings)> {
    let load = |name: &str, config: &Option<ClusterConfig>, role| match config {
        Some(c) => Ok(c.settings.clone()),
        None if name.is_empty() => Ok(Settings::default()),
        None => settings::load(name, role),
    };
    let src = load(&cfg.src, src_config, Role::Source)?;
    let dst = load(&cfg.dst, dst_config, Role::Destination)?;
    for w in src.warnings.iter().chain(&dst.warnings) {
        reporter.log(Level::Warn, w);
    }
    Ok((src, dst))
}

/// A side's volumes flags: `--*-volume-dir` directories, `--*-volumes` file
/// and `--*-cluster`.
struct VolumeFlags<'a> {
    dirs: &'a [PathBuf],
    file: Option<&'a Path>,
    cluster: Option<&'a str>,
}

fn volume_flags(cfg: &Config, role: Role) -> VolumeFlags<'_> {
    match role {
        Role::Destination => VolumeFlags {
            dirs: &cfg.dst_volume_dirs,
            file: cfg.dst_volumes.as_deref(),
            cluster: cfg.dst_cluster.as_deref(),
        },
        _ => VolumeFlags {
            dirs: &cfg.src_volume_dirs,
            file: cfg.src_volumes.as_deref(),
            cluster: cfg.src_cluster.as_deref(),
        },
    }
}

/// A side's stores: its volumes when given, else its keep services.
async fn side_stores(
    cfg: &Config,
    s: &Settings,
    config: &Option<ClusterConfig>,
    role: Role,
    reporter: &dyn Reporter,
) -> Result<Stores> {
    let v = volume_flags(cfg, role);
    if let Some((specs, replication)) = volumes(role, &v, reporter)? {
        return Ok(Stores::Volumes(specs, replication));
    }
    let (json, via) = match role {
        Role::Destination => (cfg.dst_services_json.as_deref(), cfg.dst_via),
        _ => (cfg.src_services_json.as_deref(), cfg.src_via),
    };
    match (json, config) {
        (None, Some(c)) => c.services(via).map(Stores::Keep),
        _ => keep_services(cfg.net.connect_timeout, s, role, json)
            .await
            .map(Stores::Keep),
    }
}

/// The flag names of a side's volumes (for messages).
fn volume_flag_names(role: Role) -> (&'static str, &'static str, &'static str) {
    match role {
        Role::Destination => ("--dst-volume-dir", "--dst-volumes", "--dst-cluster"),
        Role::Cluster => ("--volume-dir", "--volumes", "--cluster"),
        Role::Source => ("--src-volume-dir", "--src-volumes", "--src-cluster"),
    }
}

/// A side's volumes, if it is given as volumes: checked (exit 2) before
/// anything is listed; with the default replication of a volumes file that
/// is a whole cluster config. The file's warnings go to `reporter`.
fn volumes(
    role: Role,
    v: &VolumeFlags<'_>,
    reporter: &dyn Reporter,
) -> Result<Option<(Vec<VolumeSpec>, Option<u32>)>> {
    let (dir_flag, file_flag, cluster_flag) = volume_flag_names(role);
    let mut replication = None;
    let specs = if let Some(path) = v.file {
        let file = volumes_file::load(path, v.cluster, file_flag, cluster_flag)?;
        for w in &file.warnings {
            reporter.log(Level::Warn, w);
        }
        replication = file.default_replication;
        file.volumes
    } else if !v.dirs.is_empty() {
        if v.cluster.is_some() {
            return Err(Error::config(format!(
                "{cluster_flag} picks a cluster of a {file_flag} file; it means nothing with \
                 {dir_flag}."
            )));
        }
        v.dirs
            .iter()
            .enumerate()
            .map(|(i, d)| VolumeSpec {
                uuid: format!("volume-{i}"),
                driver: Driver::Directory { root: d.clone() },
                replication: 1,
                read_only: role == Role::Source,
                storage_classes: vec!["default".into()],
                priority: 0,
                serialize: false,
                servers: Vec::new(),
            })
            .collect()
    } else {
        return Ok(None);
    };
    for spec in &specs {
        if let Driver::Directory { root } = &spec.driver {
            let flag = if v.file.is_some() {
                file_flag
            } else {
                dir_flag
            };
            check_dir(root, &spec.uuid, flag, role, spec.read_only)?;
        }
    }
    Ok(Some((specs, replication)))
}

/// A Directory volume's root must be a directory; a destination one must
/// take files (a temp file is made and removed), so that a read-only mount
/// or a full disk is found before anything is listed.
fn check_dir(root: &Path, uuid: &str, flag: &str, role: Role, read_only: bool) -> Result<()> {
    let named = format!("{flag}: {role} volume {uuid} ({})", root.display());
    let meta = std::fs::metadata(root).map_err(|e| {
        Error::config(format!(
            "{named}: {e}. Give the root of a keepstore Directory volume (the directory \
             holding the 3-hex-digit subdirectories){}.",
            if role == Role::Destination {
                "; create it first for a new volume"
            } else {
                ""
            }
        ))
    })?;
    if !meta.is_dir() {
        return Err(Error::config(format!(
            "{named} is not a directory: give the root of a keepstore Directory volume."
        )));
    }
    if role == Role::Destination && !read_only {
        tempfile::Builder::new()
            .prefix(".keep-rsync-probe")
            .tempfile_in(root)
            .map_err(|e| {
                Error::config(format!(
                    "{named} cannot take new files ({e}): blocks could not be written there. \
                     Check that it is mounted read-write and that this user may write it, or \
                     mark the volume ReadOnly."
                ))
            })?;
    }
    Ok(())
}

/// A side's keep services: from its services flag (JSON, file or stdin), or
/// from its API server.
async fn keep_services(
    connect_timeout: std::time::Duration,
    s: &Settings,
    role: Role,
    json: Option<&str>,
) -> Result<Vec<KeepService>> {
    match json {
        Some(arg) => {
            // stdin or a file (on a slow mount): not on an async worker,
            // where the other side's discovery runs meanwhile.
            let (arg, flag) = (arg.to_string(), role.services_flag());
            let (text, origin) =
                tokio::task::spawn_blocking(move || services::read_services_arg(&arg, flag))
                    .await
                    .map_err(|e| Error::config(format!("reading {flag} failed: {e}")))??;
            services::parse_services(&text, &origin, role)
        }
        None => {
            services::fetch_accessible(&services::api_client(s, connect_timeout)?, s, role).await
        }
    }
}

/// Copying a cluster onto itself does nothing useful.
fn check_distinct(src: &Stores, dst: &Stores) -> Result<()> {
    let (s, d) = (src.names(), dst.names());
    match s.iter().find(|(id, loc)| {
        d.iter()
            .any(|(did, dloc)| dloc == loc || (did == id && src.is_keep()))
    }) {
        Some((id, loc)) => Err(Error::config(format!(
            "the source and destination both list {id} ({loc}): copying a store onto itself \
             does nothing useful. Check -src/-dst, the services lists and the volumes."
        ))),
        None => Ok(()),
    }
}

/// The destination must be able to hold the wanted replicas: each needs its
/// own writable keepstore (a keepproxy stores them all), or writable volumes
/// whose `Replication` adds up to them.
fn check_writable(dst: &Side, want: u32, classes: Option<&str>) -> Result<()> {
    let writable: Vec<&Store> = (dst.services.iter())
        .map(|s| &s.store)
        .filter(|s| s.writable() && s.may_confirm(classes))
        .collect();
    let what = if dst.is_volumes() {
        "volume"
    } else {
        "keep service"
    };
    if writable.is_empty() {
        let why = match (dst.is_volumes(), classes.is_some()) {
            (true, true) => "all are read-only, or lack a storage class of --storage-classes",
            (true, false) => "all are read-only",
            (false, true) => {
                "all are read-only or gateways, or mount no writable volume of a storage class \
                 of --storage-classes (as their GET /mounts or the cluster config says)"
            }
            (false, false) => "all are read-only or gateways",
        };
        let all: Vec<String> = dst.services.iter().map(|s| s.store.label()).collect();
        return Err(Error::config(format!(
            "the destination has no writable {what} ({why}): nothing can be copied there. Its \
             {what}s: {}.",
            all.join(", ")
        )));
    }
    let room: u32 = writable.iter().map(|s| s.credit(want)).sum();
    if writable.iter().any(|s| s.is_proxy()) || want <= room {
        return Ok(());
    }
    Err(Error::config(if dst.is_volumes() {
        format!(
            "-replications {want} is more than the {room} replicas the {} writable destination \
             volumes count for (each volume counts for its Replication): lower -replications or \
             add volumes.",
            writable.len()
        )
    } else {
        format!(
            "-replications {want} is more than the {} writable destination services: each replica \
             needs its own keepstore. Lower -replications or add services.",
            writable.len()
        )
    }))
}

/// What the flags leave to the clusters' discovery documents.
struct Defaults {
    want: u32,
    src_ttl: u64,
    dst_ttl: u64,
}

impl Defaults {
    /// Flags first; a discovery document is read only when a default is
    /// needed (replicas, or the TTL of a side of keep services that signs).
    /// A volumes destination wants 1 replica unless -replications says more,
    /// or its volumes file is a whole cluster config: then it wants that
    /// config's `Collections.DefaultReplication`, as `-dst-cluster-config`.
    async fn fetch(
        cfg: &Config,
        (src, src_stores, src_config): (&Settings, &Stores, Option<&ClusterConfig>),
        (dst, dst_stores, dst_config): (&Settings, &Stores, Option<&ClusterConfig>),
    ) -> Result<Defaults> {
        let dst_keep = dst_stores.is_keep();
        let dst_ttl_needed = dst_keep
            && cfg.verify_existing
            && dst.blob_signing_key.is_some()
            && cfg.dst_ttl == 0
            && dst_config.is_none();
        let need_dst_doc =
            dst_keep && dst_config.is_none() && (cfg.replications == 0 || dst_ttl_needed);
        let need_src_doc = src_stores.is_keep()
            && src_config.is_none()
            && src.blob_signing_key.is_some()
            && cfg.src_ttl == 0;
        let dst_doc = if need_dst_doc {
            let flag = match (cfg.replications == 0, dst_ttl_needed) {
                (true, true) => "-replications N and -dst-blob-signature-ttl DURATION",
                (true, false) => "-replications N",
                (false, _) => "-dst-blob-signature-ttl DURATION",
            };
            discovery(dst, Role::Destination, flag, cfg.net.connect_timeout).await?
        } else {
            Discovery::default()
        };
        let src_doc = if need_src_doc {
            let flag = "-src-blob-signature-ttl DURATION (the source's blobSignatureTtl, needed to sign locators)";
            discovery(src, Role::Source, flag, cfg.net.connect_timeout).await?
        } else {
            Discovery::default()
        };
        // The cluster configs stand in for the discovery documents.
        let from_config = |c: Option<&ClusterConfig>, doc: Discovery| match c {
            Some(c) => Discovery {
                default_replication: Some(c.default_replication),
                blob_signature_ttl: Some(c.ttl),
            },
            None => doc,
        };
        let (src_doc, dst_doc) = (
            from_config(src_config, src_doc),
            from_config(dst_config, dst_doc),
        );
        let want = if cfg.replications > 0 {
            cfg.replications
        } else if let Some(c) = dst_config {
            c.default_replication
        } else if let Stores::Volumes(_, file_default) = dst_stores {
            file_default.unwrap_or(1)
        } else {
            dst_doc.default_replication.filter(|&n| n > 0).ok_or_else(|| {
                Error::unreadable(format!(
                    "the destination API server ({}) gave no defaultCollectionReplication: pass -replications N.",
                    dst.api_host
                ))
            })?
        };
        let ttl = |flag: u64, doc: &Discovery| {
            if flag > 0 {
                flag
            } else {
                doc.blob_signature_ttl.unwrap_or(DEFAULT_TTL)
            }
        };
        Ok(Defaults {
            want,
            src_ttl: ttl(cfg.src_ttl, &src_doc),
            dst_ttl: ttl(cfg.dst_ttl, &dst_doc),
        })
    }
}

async fn discovery(
    s: &Settings,
    role: Role,
    needed_for: &str,
    connect_timeout: std::time::Duration,
) -> Result<Discovery> {
    services::fetch_discovery(
        &services::api_client(s, connect_timeout)?,
        s,
        role,
        needed_for,
    )
    .await
}

/// A side's stores, built with its clients: one pooled Keep client (with
/// the side's token) and signer for its services, one plain HTTP client for
/// its S3 volumes.
fn make_side(
    role: Role,
    settings: Settings,
    stores: Stores,
    ttl: u64,
    conn: &Connection,
) -> Result<Side> {
    let opts = ClientOptions {
        connect_timeout: conn.connect_timeout,
        stall_timeout: conn.stall_timeout,
        insecure: settings.insecure,
        pool_per_host: conn.max_per_service.max(conn.checkers),
    };
    let built: Vec<Store> = match stores {
        Stores::Keep(list) => {
            let client = KeepClient::new(&settings.api_token, &opts).map_err(Error::config)?;
            let signer = Arc::new(Signer {
                key: settings.blob_signing_key.clone(),
                token: settings.api_token.clone(),
                ttl,
                source: TokenSource {
                    path: settings.path.clone(),
                    cluster_config: settings.from_cluster_config,
                },
            });
            list.into_iter()
                .map(|s| Store::Keep(KeepStore::new(s, client.clone(), signer.clone())))
                .collect()
        }
        Stores::Volumes(list, _) => {
            let http = crate::protocol::client::plain_client(&opts).map_err(Error::config)?;
            let mut v = Vec::new();
            for spec in list {
                v.push(volume_store(spec, role, &http, conn)?);
            }
            v
        }
    };
    let services: Vec<Service> = built
        .into_iter()
        .map(|e| Service::new(e, conn.max_per_service, conn.adaptive, role))
        .collect();
    let mut side = Side {
        role,
        settings,
        rank: Ranking::new(services.iter().map(|s| &s.store)),
        services,
        ttl,
        refused_said: Default::default(),
        listings: Vec::new(),
    };
    side.plan_listings();
    Ok(side)
}

/// One volume as a store.
fn volume_store(
    spec: VolumeSpec,
    role: Role,
    http: &reqwest::Client,
    conn: &Connection,
) -> Result<Store> {
    let traits = VolumeTraits {
        replication: spec.replication,
        read_only: spec.read_only,
        classes: spec.storage_classes,
        priority: spec.priority,
        servers: (spec.servers.iter())
            .map(|m| crate::store::servers::Mount {
                server: m.uuid.clone(),
                read_only: m.read_only,
            })
            .collect(),
    };
    Ok(match spec.driver {
        Driver::Directory { root } => Store::Dir(DirVolume::new(
            spec.uuid,
            root.canonicalize().unwrap_or(root),
            traits,
            spec.serialize,
        )),
        Driver::S3(p) => {
            let id = spec.uuid;
            Store::S3(
                S3Volume::new(id.clone(), &p, traits, http.clone())
                    .map_err(|why| {
                        Error::config(format!(
                            "{} S3 volume {id} cannot be used: {why}.",
                            role.as_str()
                        ))
                    })?
                    .with_fanout(conn.checkers.min(conn.max_per_service)),
            )
        }
        Driver::Azure(p) => {
            let id = spec.uuid;
            Store::Azure(
                AzureVolume::new(id.clone(), &p, traits, http.clone())
                    .map_err(|why| {
                        Error::config(format!(
                            "{} Azure volume {id} cannot be used: {why}.",
                            role.as_str()
                        ))
                    })?
                    .with_fanout(conn.checkers.min(conn.max_per_service)),
            )
        }
    })
}
