//! Both sides of a run, ready to use: settings files → keep services (a
//! services list, the API server, or raw volumes) → the discovery defaults
//! that are needed → a [`Side`] each, with its pooled client. Everything that
//! can be wrong with the configuration is found here, before any index is
//! fetched (exit 2), or the API server that should answer does not (exit 3).
//!
//! keep-block-check's one side ([`prepare_cluster`]) is built by the same
//! steps: settings file, services list or API server, discovery only when a
//! default is needed.

use crate::cli::Config;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::progress::{Level, Reporter};
use crate::protocol::client::{ClientOptions, KeepClient};
use crate::role::Role;
use crate::services::{self, Discovery, Service, Side};
use crate::settings::{self, Settings};

/// How a side's clients connect, from either program's flags.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    pub connect_timeout: std::time::Duration,
    pub stall_timeout: std::time::Duration,
    /// `--max-per-service`.
    pub max_per_service: usize,
    /// `--checkers`.
    pub checkers: usize,
}

impl Connection {
    fn of(cfg: &Config) -> Connection {
        Connection {
            connect_timeout: cfg.net.connect_timeout,
            stall_timeout: cfg.net.stall_timeout,
            max_per_service: cfg.max_per_service,
            checkers: cfg.checkers,
        }
    }
}

/// The default blob signature TTL of Arvados (two weeks).
pub const DEFAULT_TTL: u64 = 1_209_600;

/// Both sides, and the replicas wanted at the destination.
pub struct Sides {
    pub src: Side,
    pub dst: Side,
    pub want: u32,
}

/// Settings, services and defaults for both sides.
pub async fn prepare(cfg: &Config, reporter: &dyn Reporter) -> Result<Sides> {
    let (src_settings, dst_settings) = load_settings(cfg, reporter)?;
    let src = source_endpoints(cfg, &src_settings).await?;
    let dst = keep_endpoints(
        cfg.net.connect_timeout,
        &dst_settings,
        Role::Destination,
        cfg.dst_services_json.as_deref(),
    )
    .await?;
    check_distinct(&src, &dst)?;
    let defaults = Defaults::fetch(cfg, &src_settings, &dst_settings).await?;
    check_writable(&dst, defaults.want)?;
    let conn = Connection::of(cfg);
    Ok(Sides {
        src: make_side(Role::Source, src_settings, src, defaults.src_ttl, &conn)?,
        dst: make_side(
            Role::Destination,
            dst_settings,
            dst,
            defaults.dst_ttl,
            &conn,
        )?,
        want: defaults.want,
    })
}

/// keep-block-check's flags for its one cluster.
pub struct ClusterFlags<'a> {
    /// `-config FILE|NAME`.
    pub config: &'a str,
    /// `-keep-services-json JSON|FILE|-`.
    pub services_json: Option<&'a str>,
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
    let role = Role::Cluster;
    let s = settings::load(f.config, role)?;
    for w in &s.warnings {
        reporter.log(Level::Warn, w);
    }
    let endpoints = keep_endpoints(f.conn.connect_timeout, &s, role, f.services_json).await?;
    let ttl = if f.ttl > 0 {
        f.ttl
    } else if f.signs && s.blob_signing_key.is_some() {
        let flag = "-blob-signature-ttl DURATION (the cluster's blobSignatureTtl, needed to sign locators)";
        discovery(&s, role, flag, f.conn.connect_timeout)
            .await?
            .blob_signature_ttl
            .unwrap_or(DEFAULT_TTL)
    } else {
        DEFAULT_TTL
    };
    make_side(role, s, endpoints, ttl, &f.conn)
}

/// Both settings files; with raw volumes as the source and no `-src`, the
/// source cluster need not exist.
fn load_settings(cfg: &Config, reporter: &dyn Reporter) -> Result<(Settings, Settings)> {
    let src = if !cfg.src_volume_dirs.is_empty() && cfg.src.is_empty() {
        Settings::default()
    } else {
        settings::load(&cfg.src, Role::Source)?
    };
    let dst = settings::load(&cfg.dst, Role::Destination)?;
    for w in src.warnings.iter().chain(&dst.warnings) {
        reporter.log(Level::Warn, w);
    }
    Ok((src, dst))
}

/// The source: raw volumes when given, else its keep services.
async fn source_endpoints(cfg: &Config, s: &Settings) -> Result<Vec<Endpoint>> {
    if cfg.src_volume_dirs.is_empty() {
        keep_endpoints(
            cfg.net.connect_timeout,
            s,
            Role::Source,
            cfg.src_services_json.as_deref(),
        )
        .await
    } else {
        Ok(crate::volume::open_all(&cfg.src_volume_dirs)?
            .into_iter()
            .map(Endpoint::Volume)
            .collect())
    }
}

/// A side's keep services: from its services flag (JSON, file or stdin), or
/// from its API server.
async fn keep_endpoints(
    connect_timeout: std::time::Duration,
    s: &Settings,
    role: Role,
    json: Option<&str>,
) -> Result<Vec<Endpoint>> {
    let list = match json {
        Some(arg) => {
            let (text, origin) = services::read_services_arg(arg, role.services_flag())?;
            services::parse_services(&text, &origin, role)?
        }
        None => {
            services::fetch_accessible(&services::api_client(s, connect_timeout)?, s, role).await?
        }
    };
    Ok(list.into_iter().map(Endpoint::Keep).collect())
}

/// Copying a cluster onto itself does nothing useful.
fn check_distinct(src: &[Endpoint], dst: &[Endpoint]) -> Result<()> {
    match src
        .iter()
        .find(|s| dst.iter().any(|d| d.url() == s.url() || d.id() == s.id()))
    {
        Some(s) => Err(Error::config(format!(
            "the source and destination both list {}: copying a cluster onto itself does nothing \
             useful. Check -src/-dst and the services lists.",
            s.label()
        ))),
        None => Ok(()),
    }
}

/// Each replica needs its own writable keepstore (a keepproxy stores them all).
fn check_writable(dst: &[Endpoint], want: u32) -> Result<()> {
    let writable: Vec<&Endpoint> = dst.iter().filter(|s| s.writable()).collect();
    if writable.is_empty() {
        return Err(Error::config(
            "the destination has no writable keep service (all are read-only or gateways): \
             nothing can be copied there.",
        ));
    }
    if !writable.iter().any(|s| s.is_proxy()) && want as usize > writable.len() {
        return Err(Error::config(format!(
            "-replications {want} is more than the {} writable destination services: each replica \
             needs its own keepstore. Lower -replications or add services.",
            writable.len()
        )));
    }
    Ok(())
}

/// What the flags leave to the clusters' discovery documents.
struct Defaults {
    want: u32,
    src_ttl: u64,
    dst_ttl: u64,
}

impl Defaults {
    /// Flags first; a discovery document is read only when a default is
    /// needed (replicas, or the TTL of a side that signs).
    async fn fetch(cfg: &Config, src: &Settings, dst: &Settings) -> Result<Defaults> {
        let need_dst_doc = cfg.replications == 0
            || (cfg.verify_existing && dst.blob_signing_key.is_some() && cfg.dst_ttl == 0);
        let need_src_doc =
            src.blob_signing_key.is_some() && cfg.src_ttl == 0 && cfg.src_volume_dirs.is_empty();
        let dst_doc = if need_dst_doc {
            let ttl_too = cfg.verify_existing && dst.blob_signing_key.is_some() && cfg.dst_ttl == 0;
            let flag = match (cfg.replications == 0, ttl_too) {
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
        let want = if cfg.replications > 0 {
            cfg.replications
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

fn make_side(
    role: Role,
    settings: Settings,
    endpoints: Vec<Endpoint>,
    ttl: u64,
    conn: &Connection,
) -> Result<Side> {
    let opts = ClientOptions {
        connect_timeout: conn.connect_timeout,
        stall_timeout: conn.stall_timeout,
        insecure: settings.insecure,
        pool_per_host: conn.max_per_service.max(conn.checkers),
    };
    let client = KeepClient::new(&settings.api_token, &opts).map_err(Error::config)?;
    Ok(Side {
        role,
        settings,
        services: endpoints
            .into_iter()
            .map(|e| Service::new(e, conn.max_per_service))
            .collect(),
        client,
        ttl,
        refused_said: Default::default(),
    })
}
