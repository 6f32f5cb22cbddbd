//! The volumes file of `--src-volumes FILE` / `--dst-volumes FILE` (and
//! keep-block-check's `--volumes FILE`): which keepstore volumes a side has,
//! read from a YAML or JSON file in the syntax of an Arvados cluster config's
//! `Volumes` section, or from a whole cluster config file.
//!
//! This module owns reading and validating that file, and nothing else (what
//! the volumes are used for is decided elsewhere). Its rules are Arvados' own
//! (sdk/go/arvados/config.go, services/keepstore/keepstore.go, s3_volume.go,
//! unix_volume.go, lib/config/deprecated.go), so that a file keepstore
//! accepts means the same here: keys match exactly, a near miss in case
//! ignored with a warning (lib/config/load.go; `config_tree::Keys`), null
//! is the same as absent, `Replication` < 1 is 1, no
//! `StorageClasses` is `default`, the mount priority is keepstore's, and an S3
//! volume gets keepstore's defaults and checks.
//!
//! The file may be a whole cluster config, holding every secret of the
//! cluster: no value of a secret key (`SecretAccessKey`, `AccessKeyID`,
//! `SystemRootToken`, `BlobSigningKey`, `ManagementToken`, any `…Key`,
//! `…Token`, `…Secret`, `…Password`) ever reaches a message or `Debug`
//! output. Messages name keys, not values; the few values they show
//! (`Driver`, `Root`, `Endpoint`, numbers) are scrubbed of secrets anyway.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config_tree::{self, join, kind, pick_cluster, shown, Document, Node, Obj};
use crate::error::Result;

/// One volume of a --*-volumes file, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The map key, e.g. `zzzzz-nyw5e-000000000000000`.
    pub uuid: String,
    pub driver: Driver,
    /// Replicas one copy here counts for: `Replication` (< 1 or absent → 1,
    /// as keepstore).
    pub replication: u32,
    pub read_only: bool,
    /// Sorted class names whose value is true; empty/absent → ["default"]
    /// (keepstore.go does this). A map whose classes are all false gives no
    /// class at all, as in keepstore.
    pub storage_classes: Vec<String>,
    /// keepstore's mount priority: the max `StorageClasses.<class>.Priority`
    /// (cluster-level map) over the classes the volume lists as true in its
    /// *own* StorageClasses (0 when none, or when the volume lists no
    /// classes) — exactly keepstore.go setupMounts.
    pub priority: i64,
    /// A Directory volume's `DriverParameters.Serialize`: one read or write
    /// at a time (keepstore holds one lock around each).
    pub serialize: bool,
    /// The keepstore servers that mount it ([`attach_servers`]).
    pub servers: Vec<ServerMount>,
}

/// One keepstore server mounting a volume (`AccessViaHosts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMount {
    /// The uuid the API server gives the keepstore (its `Rendezvous`, or
    /// the md5 of its URL: `keep_protocol::config_service_uuid`).
    pub uuid: String,
    /// The URL as Arvados normalises it, for messages.
    pub url: String,
    /// `AccessViaHosts.URL.ReadOnly`: the volume is read-only through it.
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Driver {
    Directory { root: PathBuf },
    S3(S3Params),
    Azure(AzureParams),
}

/// An Azure Blob volume's `DriverParameters`, with keepstore's defaults
/// (azure_blob_volume.go: those in its code, not the SAMPLE entry of
/// config.default.yml, which Arvados drops). `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct AzureParams {
    pub account_name: String,
    /// `StorageAccountKey`, base64 (checked when the volume is set up).
    pub account_key: String,
    /// `StorageBaseURL`: the host is `ACCOUNT.blob.BASE` (default
    /// `core.windows.net`; may end in `:PORT`).
    pub base_url: String,
    pub container: String,
    /// `RequestTimeout` (default 10m; 0: none).
    pub request_timeout: std::time::Duration,
    /// `ListBlobsRetryDelay` (0 or absent: 10s).
    pub list_retry_delay: std::time::Duration,
    /// `ListBlobsMaxAttempts` (0 or absent: 12).
    pub list_max_attempts: u32,
    /// `WriteRaceInterval` (default 15s): an empty blob younger than this
    /// is a write still under way, not listed.
    pub write_race_interval: std::time::Duration,
}

impl fmt::Debug for AzureParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureParams")
            .field("account_name", &self.account_name)
            .field("account_key", &Bare("<redacted>"))
            .field("base_url", &self.base_url)
            .field("container", &self.container)
            .field("request_timeout", &self.request_timeout)
            .field("list_retry_delay", &self.list_retry_delay)
            .field("list_max_attempts", &self.list_max_attempts)
            .field("write_race_interval", &self.write_race_interval)
            .finish()
    }
}

/// An S3 volume's `DriverParameters`. `Debug` shows whether credentials are
/// set, never their values.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Params {
    pub bucket: String,
    /// Region; when absent and an Endpoint is set, "us-east-1" (keepstore
    /// does this). Absent and no Endpoint → error (keepstore requires one of
    /// them).
    pub region: String,
    /// Custom endpoint URL (http or https); None = AWS's endpoint for the
    /// region.
    pub endpoint: Option<String>,
    /// UsePathStyle (default false). Note: with a custom Endpoint keepstore
    /// always uses path style; this is the raw flag, the caller decides.
    pub use_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// PrefixLength (default 0; must be 0..=30).
    pub prefix_length: usize,
    /// IndexPageSize (default 1000; 0 → 1000).
    pub index_page_size: u32,
}

impl fmt::Debug for S3Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Params")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("use_path_style", &self.use_path_style)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| Bare("<set>")),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| Bare("<redacted>")),
            )
            .field("prefix_length", &self.prefix_length)
            .field("index_page_size", &self.index_page_size)
            .finish()
    }
}

/// Debug-prints as the text itself, without quotes.
struct Bare(&'static str);

impl fmt::Debug for Bare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Where the volumes came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumesFile {
    pub path: PathBuf,
    /// The cluster ID under `Clusters` the volumes were taken from; None
    /// when the file is a bare `Volumes` map.
    pub cluster: Option<String>,
    /// Sorted by uuid.
    pub volumes: Vec<VolumeSpec>,
    /// The cluster's `Collections.DefaultReplication` (Arvados' default,
    /// 2, when it is not set) when the file is a whole cluster config;
    /// None for a bare `Volumes` map.
    pub default_replication: Option<u32>,
    /// Keys ignored because their case is wrong, one paragraph each (see
    /// [`Document::drop_near_misses`]): the caller shows them.
    pub warnings: Vec<String>,
}

/// Read and validate `path`. `flag` is the flag name for messages (e.g.
/// "--dst-volumes"), `cluster_flag` e.g. "--dst-cluster".
pub fn load(
    path: &Path,
    cluster: Option<&str>,
    flag: &str,
    cluster_flag: &str,
) -> Result<VolumesFile> {
    let origin = path.display().to_string();
    let text = crate::config_tree::read_text(
        path,
        flag,
        "volumes file",
        "Pass the path of a YAML or JSON file holding the Volumes section of the cluster \
         config, or the whole cluster config.",
        "YAML or JSON",
    )?;
    let mut file = parse(&text, &origin, cluster, flag, cluster_flag)?;
    file.path = path.to_path_buf();
    Ok(file)
}

/// Same on text already read (for tests); `origin` names it in messages.
pub fn parse(
    text: &str,
    origin: &str,
    cluster: Option<&str>,
    flag: &str,
    cluster_flag: &str,
) -> Result<VolumesFile> {
    let mut doc = Document::parse(text, origin, flag)?;
    let whole = match &doc.root {
        Node::Map(e) => e.iter().any(|(k, _)| k == "Clusters" || k == "Volumes"),
        _ => false,
    };
    if whole {
        doc.drop_near_misses(&config_tree::FILE);
    } else {
        config_tree::misspelled_top(&doc.root, &["Clusters", "Volumes"])
            .map_err(|m| doc.error(m))?;
        doc.drop_near_misses(&config_tree::VOLUMES);
    }
    let (cluster, volumes, default_replication) =
        select(&doc.root, cluster, cluster_flag).map_err(|m| doc.error(m))?;
    Ok(VolumesFile {
        path: PathBuf::from(origin),
        cluster,
        volumes,
        default_replication,
        warnings: doc.warnings,
    })
}

/// What the file may hold, for messages about its overall shape.
const SHAPES: &str = "a volumes file holds the Volumes section of an Arvados cluster \
     config (UUID: {Driver: Directory or S3, DriverParameters: {...}}), the same under a \
     Volumes key, or a whole cluster config (Clusters: {ID: {Volumes: ...}})";

// ---------------------------------------------------------------------------
// The file's shape, then each volume.

/// The cluster-level `StorageClasses`: each class's Priority.
type Priorities = BTreeMap<String, i64>;

/// What [`select`] finds: the cluster's ID, its volumes and its default
/// replication (when the file is a whole cluster config).
type Selected = (Option<String>, Vec<VolumeSpec>, Option<u32>);

/// Find the Volumes map (shape 1, 2 or 3) and validate every volume.
fn select(root: &Node, cluster: Option<&str>, cluster_flag: &str) -> Result<Selected, String> {
    let top = match root {
        Node::Map(entries) => Obj::new(entries, String::new()),
        Node::Null => return Err(format!("the file is empty: {SHAPES}.")),
        other => {
            return Err(format!(
                "the file holds {}, not a map: {SHAPES}.",
                kind(other)
            ))
        }
    };
    if let Some((id, cobj)) = pick_cluster(&top, cluster, cluster_flag, "Volumes")? {
        let id = id.as_str();
        let priorities = priorities(cobj.object("StorageClasses")?)?;
        let Some((vkey, vnode)) = cobj.entry("Volumes") else {
            return Err(format!(
                "{} is missing: cluster {id} lists no volumes. Add its Volumes section, or \
                 give a file that has it.",
                cobj.key("Volumes")
            ));
        };
        let vpath = join(&cobj.path, vkey);
        let mut volumes = volumes(vnode, &vpath, &priorities)?;
        let keepstores = keepstore_urls(&cobj)?;
        attach_servers(&mut volumes, vnode, &vpath, id, &keepstores)?;
        let replication = crate::cluster_config::default_replication(&cobj)?;
        return Ok((Some(id.to_string()), volumes, Some(replication)));
    }
    if let Some((vkey, vnode)) = top.entry("Volumes") {
        // A cluster's section without the Clusters wrapper may carry the
        // cluster's StorageClasses beside its Volumes: they give priorities.
        let priorities = priorities(top.object("StorageClasses")?)?;
        let mut v = volumes(vnode, vkey, &priorities)?;
        let cluster = cluster_of(&v);
        attach_servers(&mut v, vnode, vkey, &cluster, &BTreeMap::new())?;
        return Ok((None, v, None));
    }
    let mut v = volumes(root, "", &Priorities::new())?;
    let cluster = cluster_of(&v);
    attach_servers(&mut v, root, "", &cluster, &BTreeMap::new())?;
    Ok((None, v, None))
}

/// The cluster ID of a bare Volumes map: its volume uuids' first five
/// characters (`ID-nyw5e-…`) when they all agree, else `zzzzz` (only a
/// keepstore uuid weighed whole, one without a 15-character Rendezvous,
/// depends on it).
fn cluster_of(volumes: &[VolumeSpec]) -> String {
    let ids: std::collections::BTreeSet<&str> = volumes
        .iter()
        .filter(|v| v.uuid.len() == 27 && v.uuid.is_ascii() && &v.uuid[5..12] == "-nyw5e-")
        .map(|v| &v.uuid[..5])
        .collect();
    match (ids.len(), ids.first()) {
        (1, Some(id)) => id.to_string(),
        _ => "zzzzz".to_string(),
    }
}

/// A cluster's `Services.Keepstore.InternalURLs`: normalised URL → its
/// `Rendezvous`.
fn keepstore_urls(c: &Obj<'_>) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut out = BTreeMap::new();
    let Some(urls) = c
        .object("Services")?
        .map(|s| s.object("Keepstore"))
        .transpose()?
        .flatten()
        .map(|k| k.object("InternalURLs"))
        .transpose()?
        .flatten()
    else {
        return Ok(out);
    };
    for (url, info) in urls.entries {
        let Ok(norm) = crate::cluster_config::normalize_url(url) else {
            continue;
        };
        let rvz = match info {
            Node::Map(e) => Obj::new(e, urls.key(url))
                .string("Rendezvous")?
                .map(str::to_string),
            _ => None,
        };
        out.insert(norm, rvz);
    }
    Ok(out)
}

/// Each volume's servers: its `AccessViaHosts` keepstores, or, when it
/// names none, every keepstore (keepstore's rule), i.e. those of
/// `keepstores` (a cluster config's InternalURLs) and of every volume's
/// `AccessViaHosts`. Each gets the uuid the API server gives it.
fn attach_servers(
    volumes: &mut [VolumeSpec],
    node: &Node,
    path: &str,
    cluster: &str,
    keepstores: &BTreeMap<String, Option<String>>,
) -> Result<(), String> {
    let Node::Map(entries) = node else {
        return Ok(());
    };
    let map = Obj::new(entries, path.to_string());
    let mut own: BTreeMap<&str, Vec<(String, bool)>> = BTreeMap::new();
    let mut every: std::collections::BTreeSet<String> = keepstores.keys().cloned().collect();
    for v in volumes.iter() {
        let Some(Node::Map(e)) = map.get(&v.uuid) else {
            continue;
        };
        let Some(hosts) = Obj::new(e, map.key(&v.uuid)).object("AccessViaHosts")? else {
            continue;
        };
        let mut list = Vec::new();
        for (url, h) in hosts.entries {
            let norm = crate::cluster_config::normalize_url(url).map_err(|why| {
                format!(
                    "{} has a key that {why}: each key is a keepstore's URL, as in \
                     Services.Keepstore.InternalURLs.",
                    hosts.path
                )
            })?;
            let read_only = match h {
                Node::Map(e) => Obj::new(e, hosts.key(url)).boolean("ReadOnly")?,
                _ => false,
            };
            every.insert(norm.clone());
            list.push((norm, read_only));
        }
        own.insert(&v.uuid, list);
    }
    let own: BTreeMap<String, Vec<(String, bool)>> =
        own.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for v in volumes.iter_mut() {
        let hosts = match own.get(&v.uuid) {
            Some(list) if !list.is_empty() => list.clone(),
            _ => every.iter().map(|u| (u.clone(), false)).collect(),
        };
        v.servers = hosts
            .into_iter()
            .map(|(url, read_only)| ServerMount {
                uuid: crate::protocol::config_service_uuid(
                    cluster,
                    &url,
                    keepstores.get(&url).and_then(|r| r.as_deref()),
                ),
                url,
                read_only,
            })
            .collect();
    }
    Ok(())
}

/// The cluster-level `StorageClasses: {name: {Default: bool, Priority: N}}`.
fn priorities(classes: Option<Obj<'_>>) -> Result<Priorities, String> {
    let mut out = Priorities::new();
    let Some(classes) = classes else {
        return Ok(out);
    };
    for (name, node) in classes.entries {
        let path = join(&classes.path, name);
        let priority = match node {
            Node::Null => 0,
            Node::Map(entries) => {
                let class = Obj::new(entries, path);
                class.boolean("Default")?;
                match class.integer("Priority")? {
                    None => 0,
                    Some(p) => i64::try_from(p).map_err(|_| {
                        format!("{} is {p}: it is too large.", class.key("Priority"))
                    })?,
                }
            }
            other => {
                return Err(format!(
                    "{path} must be a map (Default: true/false, Priority: N), not {}.",
                    kind(other)
                ))
            }
        };
        out.insert(name.clone(), priority);
    }
    Ok(out)
}

/// The Volumes map at `path` ("" for the whole file), sorted by UUID.
fn volumes(node: &Node, path: &str, priorities: &Priorities) -> Result<Vec<VolumeSpec>, String> {
    let bare = path.is_empty();
    let what = if bare { "the file" } else { path };
    let entries = match node {
        Node::Map(entries) if !entries.is_empty() => entries,
        Node::Map(_) | Node::Null => {
            return Err(format!(
                "{what} lists no volumes: add at least one \
                 (UUID: {{Driver: Directory or S3, DriverParameters: {{...}}}})."
            ))
        }
        other => {
            return Err(format!(
                "{what} must be a map of volume UUIDs to volumes, not {}.",
                kind(other)
            ))
        }
    };
    let mut sorted: Vec<&(String, Node)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(sorted.len());
    for (uuid, vnode) in sorted {
        if uuid.is_empty() {
            return Err(format!(
                "{what} has a volume whose UUID (its key) is empty: key each volume by its \
                 UUID."
            ));
        }
        let vpath = join(path, uuid);
        let volume = match vnode {
            Node::Map(entries) => Obj::new(entries, vpath),
            other => {
                let hint = if bare {
                    " (the file has no Clusters or Volumes key, so each of its top-level keys \
                     is read as a volume UUID)"
                } else {
                    ""
                };
                return Err(format!(
                    "{vpath} must be a volume (a map with Driver and DriverParameters), not \
                     {}{hint}.",
                    kind(other)
                ));
            }
        };
        out.push(volume_spec(uuid, &volume, priorities)?);
    }
    Ok(out)
}

fn volume_spec(uuid: &str, v: &Obj<'_>, priorities: &Priorities) -> Result<VolumeSpec, String> {
    let Some(name) = v.string("Driver")? else {
        return Err(format!(
            "{} is missing: set the driver of volume {uuid} to Directory or S3.",
            v.key("Driver")
        ));
    };
    let params = v.object("DriverParameters")?;
    let driver = match name {
        "Directory" => directory(params, v)?,
        "S3" => Driver::S3(s3(params, v)?),
        "Azure" => Driver::Azure(azure(params, v)?),
        other => {
            let case = ["Directory", "S3", "Azure"]
                .into_iter()
                .find(|d| d.eq_ignore_ascii_case(other))
                .map(|d| format!(" Driver names are case-sensitive (as in keepstore): write {d}."))
                .unwrap_or_else(|| {
                    " Give a volumes file that lists only the Directory, S3 and Azure volumes."
                        .to_string()
                });
            return Err(format!(
                "{}: volume {uuid}'s driver {} is not supported by keep-rsync (Directory, S3 \
                 and Azure are).{case}",
                v.key("Driver"),
                shown(other)
            ));
        }
    };
    let replication = match v.integer("Replication")? {
        None => 1,
        Some(n) if n < 1 => 1,
        Some(n) => u32::try_from(n)
            .map_err(|_| format!("{} is {n}: it is too large.", v.key("Replication")))?,
    };
    let read_only = v.boolean("ReadOnly")?;
    let (storage_classes, priority) = classes(v.object("StorageClasses")?, priorities)?;
    let serialize = match (&driver, v.object("DriverParameters")?) {
        (Driver::Directory { .. }, Some(p)) => p.boolean("Serialize")?,
        _ => false,
    };
    Ok(VolumeSpec {
        uuid: uuid.to_string(),
        driver,
        replication,
        read_only,
        storage_classes,
        priority,
        serialize,
        servers: Vec::new(),
    })
}

/// The volume's own `StorageClasses: {name: true|false}` and its priority,
/// as keepstore.go setupMounts.
fn classes(sc: Option<Obj<'_>>, priorities: &Priorities) -> Result<(Vec<String>, i64), String> {
    let Some(sc) = sc.filter(|sc| !sc.entries.is_empty()) else {
        return Ok((vec!["default".to_string()], 0));
    };
    let mut names = Vec::new();
    for (name, node) in sc.entries {
        match node {
            Node::Bool(true) => names.push(name.clone()),
            Node::Bool(false) | Node::Null => {}
            other => {
                return Err(format!(
                    "{} must be true or false, not {}.",
                    join(&sc.path, name),
                    kind(other)
                ))
            }
        }
    }
    names.sort();
    let priority = names
        .iter()
        .map(|n| priorities.get(n).copied().unwrap_or(0))
        .fold(0, i64::max);
    Ok((names, priority))
}

fn directory(params: Option<Obj<'_>>, v: &Obj<'_>) -> Result<Driver, String> {
    let Some(p) = params else {
        return Err(format!(
            "{} is missing: a Directory volume needs DriverParameters.Root, the absolute path \
             of its directory.",
            v.key("DriverParameters")
        ));
    };
    let Some(root) = p.string("Root")? else {
        return Err(format!(
            "{} is missing: a Directory volume needs the absolute path of its directory.",
            p.key("Root")
        ));
    };
    if !root.starts_with('/') {
        return Err(format!(
            "{} is {}: it must be an absolute path (starting with /), as keepstore requires.",
            p.key("Root"),
            shown(root)
        ));
    }
    Ok(Driver::Directory {
        root: PathBuf::from(root),
    })
}

fn s3(params: Option<Obj<'_>>, v: &Obj<'_>) -> Result<S3Params, String> {
    let Some(p) = params else {
        return Err(format!(
            "{} is missing: an S3 volume needs DriverParameters with at least Bucket, and \
             Region or Endpoint.",
            v.key("DriverParameters")
        ));
    };
    let Some(bucket) = p.string("Bucket")? else {
        return Err(format!(
            "{} is missing: an S3 volume needs the name of its bucket.",
            p.key("Bucket")
        ));
    };
    if p.boolean("V2Signature")? {
        return Err(format!(
            "{} is true: S3 V2 signatures are not supported (nor are they by keepstore). \
             Remove it or set it to false.",
            p.key("V2Signature")
        ));
    }
    let endpoint = p.string("Endpoint")?;
    if let Some(e) = endpoint {
        check_endpoint(e).map_err(|why| format!("{} {why}", p.key("Endpoint")))?;
    }
    let region = match (p.string("Region")?, endpoint) {
        (Some(r), _) => r,
        (None, Some(_)) => "us-east-1",
        (None, None) => {
            return Err(format!(
                "{} has neither Region nor Endpoint: set Region (e.g. us-east-1) for AWS S3, \
                 or Endpoint (http(s)://host:port) for another S3 service, as keepstore \
                 requires one of them.",
                p.path
            ))
        }
    };
    let use_path_style = p.boolean("UsePathStyle")?;
    // lib/config/deprecated.go: AccessKey/SecretKey are the old names of
    // AccessKeyID/SecretAccessKey, and the two pairs cannot be mixed.
    let (id, secret) = (p.string("AccessKeyID")?, p.string("SecretAccessKey")?);
    let (old_id, old_secret) = (
        p.string_any_case("AccessKey")?,
        p.string_any_case("SecretKey")?,
    );
    let (access_key_id, secret_access_key) = if old_id.is_some() || old_secret.is_some() {
        if id.is_some() || secret.is_some() {
            return Err(format!(
                "{} uses both the old keys (AccessKey/SecretKey) and the new ones \
                 (AccessKeyID/SecretAccessKey): remove the old ones, as Arvados requires.",
                p.path
            ));
        }
        (old_id, old_secret)
    } else {
        (id, secret)
    };
    let prefix_length = match p.integer("PrefixLength")? {
        None => 0,
        Some(n @ 0..=30) => n as usize,
        Some(n) => {
            return Err(format!(
                "{} is {n}: it must be between 0 and 30 (the number of hex digits of the \
                 block hash that make the key's directory).",
                p.key("PrefixLength")
            ))
        }
    };
    let index_page_size = match p.integer("IndexPageSize")? {
        None | Some(0) => 1000,
        Some(n) => u32::try_from(n).map_err(|_| {
            format!(
                "{} is {n}: it must be a positive number of keys per listing (0 or absent \
                 means 1000).",
                p.key("IndexPageSize")
            )
        })?,
    };
    Ok(S3Params {
        bucket: bucket.to_string(),
        region: region.to_string(),
        endpoint: endpoint.map(str::to_string),
        use_path_style,
        access_key_id: access_key_id.map(str::to_string),
        secret_access_key: secret_access_key.map(str::to_string),
        prefix_length,
        index_page_size,
    })
}

fn azure(params: Option<Obj<'_>>, v: &Obj<'_>) -> Result<AzureParams, String> {
    use std::time::Duration;
    let need = "an Azure volume needs DriverParameters with StorageAccountName, \
                StorageAccountKey and ContainerName, as keepstore does";
    let Some(p) = params else {
        return Err(format!("{} is missing: {need}.", v.key("DriverParameters")));
    };
    let required = |name: &str| -> Result<String, String> {
        match p.string(name)? {
            Some(s) => Ok(s.to_string()),
            None => Err(format!("{} is missing: {need}.", p.key(name))),
        }
    };
    let account_name = required("StorageAccountName")?;
    let account_key = required("StorageAccountKey")?;
    let container = required("ContainerName")?;
    let base_url = p
        .string("StorageBaseURL")?
        .unwrap_or("core.windows.net")
        .to_string();
    if base_url.contains(['/', '@', ' ']) || base_url.starts_with('.') {
        return Err(format!(
            "{} is {}: it must be a host name (and :PORT), e.g. core.windows.net, without \
             scheme or path: keepstore reaches https://ACCOUNT.blob.STORAGEBASEURL.",
            p.key("StorageBaseURL"),
            shown(&authority_redacted(&base_url))
        ));
    }
    let duration = |name: &str| -> Result<Option<Duration>, String> {
        match p.get(name) {
            None | Some(Node::Null) => Ok(None),
            Some(Node::Int(0)) => Ok(Some(Duration::ZERO)),
            Some(Node::Str(s)) => crate::protocol::units::parse_go_duration(s)
                .map(Some)
                .map_err(|why| format!("{}: {why}", p.key(name))),
            Some(_) => Err(format!(
                "{} must be a Go duration such as 30s or 10m.",
                p.key(name)
            )),
        }
    };
    let list_max_attempts = match p.integer("ListBlobsMaxAttempts")? {
        None | Some(0) => 12,
        Some(n) => u32::try_from(n).map_err(|_| {
            format!(
                "{} is {n}: it must be a positive number of attempts (0 or absent means 12).",
                p.key("ListBlobsMaxAttempts")
            )
        })?,
    };
    Ok(AzureParams {
        account_name,
        account_key,
        base_url,
        container,
        request_timeout: duration("RequestTimeout")?.unwrap_or(Duration::from_secs(600)),
        list_retry_delay: duration("ListBlobsRetryDelay")?
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(10)),
        list_max_attempts,
        write_race_interval: duration("WriteRaceInterval")?.unwrap_or(Duration::from_secs(15)),
    })
}

/// A custom S3 endpoint must be an http(s) URL with a host. The reason
/// returned follows the key path in the message; the value is shown only
/// when it holds no user name or password.
fn check_endpoint(e: &str) -> Result<(), String> {
    let lower = e.to_ascii_lowercase();
    let Some(scheme_len) = ["http://", "https://"]
        .into_iter()
        .find(|s| lower.starts_with(s))
        .map(str::len)
    else {
        return Err(format!(
            "is {}: it must be an http:// or https:// URL, e.g. http://127.0.0.1:9000.",
            shown(&authority_redacted(e))
        ));
    };
    let rest = &e[scheme_len..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err(
            "holds a user name or password: remove them (S3 requests are signed \
                    with AccessKeyID and SecretAccessKey)."
                .to_string(),
        );
    }
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "is {}: a URL cannot hold spaces or control characters.",
            shown(e)
        ));
    }
    let no_host = || {
        format!(
            "is {}: it has no host name (write e.g. http://127.0.0.1:9000).",
            shown(e)
        )
    };
    // `url` reads `http:///h` as host `h`: an empty authority has no host.
    match url::Url::parse(e) {
        Ok(u) if !authority.is_empty() && u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) | Err(url::ParseError::EmptyHost) => Err(no_host()),
        Err(url::ParseError::InvalidPort) => Err(format!(
            "is {}: its port must be a number from 0 to 65535.",
            shown(e)
        )),
        Err(why) => Err(format!("is {}: it is not a valid URL ({why}).", shown(e))),
    }
}

/// `e` with anything before an `@` in its first part cut out, for a message
/// about a value that is not a URL at all.
fn authority_redacted(e: &str) -> String {
    let first = &e[..e.find(['/', '?', '#']).unwrap_or(e.len())];
    match first.rfind('@') {
        Some(at) => format!("<redacted>{}", &e[at..]),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_ipv6_default_ports_and_trailing_slashes() {
        for ok in [
            "http://[::1]:9000/",
            "http://[::1]",
            "https://s3.example",
            "HTTP://h:9000",
            "http://h:0/",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://[::1]:65536", "port must be a number"),
            ("http://[::1", "not a valid URL"),
            ("http://[]:9000", "not a valid URL"),
            ("https:///b", "no host name"),
        ] {
            let m = check_endpoint(bad).unwrap_err();
            assert!(m.contains(why), "{bad}: {m}");
        }
    }
    use crate::config_tree::{read_tree, secrets_in_text, secrets_in_tree};
    use crate::error::Error;

    const SECRET: &str = "SECRETsecret123";

    fn parse_ok(text: &str) -> VolumesFile {
        match parse(text, "/etc/x.yml", None, "--dst-volumes", "--dst-cluster") {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse_in(text: &str, cluster: Option<&str>) -> Result<VolumesFile> {
        parse(
            text,
            "/etc/x.yml",
            cluster,
            "--dst-volumes",
            "--dst-cluster",
        )
    }

    /// The message of a failed parse, checked to be a config error naming
    /// the flag and file and holding no secret of the test files.
    fn parse_err(text: &str, cluster: Option<&str>) -> String {
        let err = match parse_in(text, cluster) {
            Ok(f) => panic!("accepted: {f:?}"),
            Err(e) => e,
        };
        let msg = match &err {
            Error::Config(msg) => msg.clone(),
            other => panic!("not a config error: {other:?}"),
        };
        assert!(msg.starts_with("--dst-volumes /etc/x.yml: "), "{msg}");
        assert_no_secret(&msg);
        assert!(!msg.contains('\n'), "one paragraph: {msg}");
        msg
    }

    fn assert_no_secret(text: &str) {
        for s in [
            SECRET,
            "AKIDsecret456",
            "ROOTtoken789",
            "BLOBkey000",
            "MGMTtoken111",
        ] {
            assert!(!text.contains(s), "{s} shown in: {text}");
        }
    }

    fn s3(f: &VolumesFile, i: usize) -> &S3Params {
        match &f.volumes[i].driver {
            Driver::S3(p) => p,
            other => panic!("not S3: {other:?}"),
        }
    }

    const BARE: &str = "
zzzzz-nyw5e-000000000000002:
  Driver: S3
  DriverParameters:
    Bucket: blocks
    Region: eu-west-1
    AccessKeyID: AKIDsecret456
    SecretAccessKey: SECRETsecret123
zzzzz-nyw5e-000000000000001:
  Driver: Directory
  DriverParameters:
    Root: /var/lib/keep
    Serialize: true
  Replication: 2
  ReadOnly: true
  AccessViaHosts:
    http://keep0.zzzzz.example:25107: {}
";

    #[test]
    fn bare_volumes_map() {
        let f = parse_ok(BARE);
        assert_eq!(f.path, PathBuf::from("/etc/x.yml"));
        assert_eq!(f.cluster, None);
        assert_eq!(f.volumes.len(), 2);
        let d = &f.volumes[0];
        assert_eq!(d.uuid, "zzzzz-nyw5e-000000000000001");
        assert_eq!(
            d.driver,
            Driver::Directory {
                root: PathBuf::from("/var/lib/keep")
            }
        );
        assert_eq!((d.replication, d.read_only), (2, true));
        assert_eq!(d.storage_classes, ["default"]);
        assert_eq!(d.priority, 0);
        let v = &f.volumes[1];
        assert_eq!(v.uuid, "zzzzz-nyw5e-000000000000002");
        assert_eq!((v.replication, v.read_only), (1, false));
        assert_eq!(
            *s3(&f, 1),
            S3Params {
                bucket: "blocks".into(),
                region: "eu-west-1".into(),
                endpoint: None,
                use_path_style: false,
                access_key_id: Some("AKIDsecret456".into()),
                secret_access_key: Some(SECRET.into()),
                prefix_length: 0,
                index_page_size: 1000,
            }
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let f = parse_ok(BARE);
        let debug = format!("{f:?}");
        assert_no_secret(&debug);
        assert!(debug.contains("access_key_id: Some(<set>)"), "{debug}");
        assert!(
            debug.contains("secret_access_key: Some(<redacted>)"),
            "{debug}"
        );
        assert!(format!("{f:#?}").contains("bucket: \"blocks\""));
        let mut p = s3(&f, 1).clone();
        p.access_key_id = None;
        p.secret_access_key = None;
        let debug = format!("{p:?}");
        assert!(
            debug.contains("access_key_id: None, secret_access_key: None"),
            "{debug}"
        );
    }

    #[test]
    fn volumes_key() {
        let text = format!("Volumes:\n{}", BARE.replace('\n', "\n  "));
        let f = parse_ok(&text);
        assert_eq!(f.cluster, None);
        assert_eq!(f.volumes, parse_ok(BARE).volumes);
        let msg = parse_err(
            "Volumes:\n  v1:\n    Driver: S3\n    DriverParameters: {Region: r}\n",
            None,
        );
        assert!(
            msg.contains(" Volumes.v1.DriverParameters.Bucket is missing"),
            "{msg}"
        );
    }

    #[test]
    fn volumes_key_with_storage_classes_beside() {
        let f = parse_ok(
            "StorageClasses: {archive: {Priority: 5}}
Volumes:
  v1: {Driver: Directory, DriverParameters: {Root: /k}, StorageClasses: {archive: true}}
",
        );
        assert_eq!(f.volumes[0].priority, 5);
    }

    const CLUSTER: &str = "
Clusters:
  zzzzz:
    SystemRootToken: ROOTtoken789
    ManagementToken: MGMTtoken111
    Collections:
      BlobSigningKey: BLOBkey000
    Services:
      Keepstore:
        InternalURLs:
          http://keep0.zzzzz.example:25107: {}
    StorageClasses:
      default: {Default: true, Priority: 10}
      archive: {Priority: 50}
      cold: {Priority: -5}
    Volumes:
      zzzzz-nyw5e-000000000000001:
        Driver: Directory
        DriverParameters: {Root: /var/lib/keep}
        StorageClasses: {default: true, archive: true}
      zzzzz-nyw5e-000000000000002:
        Driver: S3
        DriverParameters:
          Bucket: b
          Endpoint: https://s3.example.com
          SecretAccessKey: SECRETsecret123
        StorageClasses: {archive: false, default: true}
      zzzzz-nyw5e-000000000000003:
        Driver: Directory
        DriverParameters: {Root: /k3}
        StorageClasses: {cold: true, unlisted: true}
      zzzzz-nyw5e-000000000000004:
        Driver: Directory
        DriverParameters: {Root: /k4}
";

    #[test]
    fn whole_cluster_config_and_priorities() {
        let f = parse_ok(CLUSTER);
        assert_eq!(f.cluster.as_deref(), Some("zzzzz"));
        let got: Vec<(&str, Vec<String>, i64)> = f
            .volumes
            .iter()
            .map(|v| (v.uuid.as_str(), v.storage_classes.clone(), v.priority))
            .collect();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                (
                    "zzzzz-nyw5e-000000000000001",
                    s(&["archive", "default"]),
                    50
                ),
                ("zzzzz-nyw5e-000000000000002", s(&["default"]), 10),
                // Negative and unknown classes count as 0, the floor.
                ("zzzzz-nyw5e-000000000000003", s(&["cold", "unlisted"]), 0),
                // No classes listed: "default", but priority 0 (keepstore
                // looks at the volume's own map only).
                ("zzzzz-nyw5e-000000000000004", s(&["default"]), 0),
            ]
        );
        assert_eq!(s3(&f, 1).region, "us-east-1");
        assert_no_secret(&format!("{f:?}"));
        // The right cluster named explicitly is fine.
        assert_eq!(parse_in(CLUSTER, Some("zzzzz")).unwrap(), f);
        // A whole cluster config gives its default replication (Arvados'
        // 2 when unset); a bare Volumes map none.
        assert_eq!(f.default_replication, Some(2));
        let f = parse_ok(&CLUSTER.replace(
            "      BlobSigningKey: BLOBkey000\n",
            "      BlobSigningKey: BLOBkey000\n      DefaultReplication: 3\n",
        ));
        assert_eq!(f.default_replication, Some(3));
        assert_eq!(parse_ok(BARE).default_replication, None);
    }

    #[test]
    fn serialize_and_servers() {
        let f = parse_ok(
            "
Clusters:
  zzzzz:
    Services:
      Keepstore:
        InternalURLs:
          http://keep0.example:25107: {Rendezvous: 0000000000keep0}
          http://keep1.example:25107: {}
    Volumes:
      zzzzz-nyw5e-000000000000000:
        Driver: Directory
        DriverParameters: {Root: /a, Serialize: true}
        AccessViaHosts: {'http://keep0.example:25107': {ReadOnly: true}}
      zzzzz-nyw5e-000000000000001:
        Driver: Directory
        DriverParameters: {Root: /b}
",
        );
        let (a, b) = (&f.volumes[0], &f.volumes[1]);
        assert!(a.serialize && !b.serialize);
        let keep1 =
            crate::protocol::config_service_uuid("zzzzz", "http://keep1.example:25107/", None);
        assert_eq!(
            a.servers,
            [ServerMount {
                uuid: "zzzzz-bi6l4-0000000000keep0".into(),
                url: "http://keep0.example:25107/".into(),
                read_only: true,
            }]
        );
        // No AccessViaHosts: every keepstore.
        let uuids: Vec<&str> = b.servers.iter().map(|m| m.uuid.as_str()).collect();
        assert_eq!(uuids, ["zzzzz-bi6l4-0000000000keep0", keep1.as_str()]);
        assert!(b.servers.iter().all(|m| !m.read_only));
        // A bare map: the servers its volumes name, the cluster from their uuids.
        let f = parse_ok(
            "aaaaa-nyw5e-000000000000000: {Driver: Directory, DriverParameters: {Root: /a}, AccessViaHosts: {'http://k:1': {}}}
aaaaa-nyw5e-000000000000001: {Driver: Directory, DriverParameters: {Root: /b}}
",
        );
        let k = crate::protocol::config_service_uuid("aaaaa", "http://k:1/", None);
        assert_eq!(f.volumes[1].servers[0].uuid, k);
        let msg = parse_err(
            "v: {Driver: Directory, DriverParameters: {Root: /a}, AccessViaHosts: {'http://u:SECRETsecret123@k:1': {}}}",
            None,
        );
        assert!(msg.contains("v.AccessViaHosts has a key that"), "{msg}");
    }

    #[test]
    fn all_false_classes_give_none() {
        let f = parse_ok("v: {Driver: Directory, DriverParameters: {Root: /k}, StorageClasses: {a: false, b: null}}");
        assert!(f.volumes[0].storage_classes.is_empty());
        let f =
            parse_ok("v: {Driver: Directory, DriverParameters: {Root: /k}, StorageClasses: {}}");
        assert_eq!(f.volumes[0].storage_classes, ["default"]);
    }

    const TWO: &str = "
Clusters:
  zzzzz:
    Volumes:
      zzzzz-nyw5e-000000000000001: {Driver: Directory, DriverParameters: {Root: /z}}
  aaaaa:
    SystemRootToken: ROOTtoken789
    Volumes:
      aaaaa-nyw5e-000000000000001: {Driver: Directory, DriverParameters: {Root: /a}}
";

    #[test]
    fn several_clusters() {
        let msg = parse_err(TWO, None);
        assert!(msg.contains("several clusters (aaaaa, zzzzz)"), "{msg}");
        assert!(msg.contains("--dst-cluster ID"), "{msg}");
        let f = parse_in(TWO, Some("aaaaa")).unwrap();
        assert_eq!(f.cluster.as_deref(), Some("aaaaa"));
        assert_eq!(f.volumes[0].uuid, "aaaaa-nyw5e-000000000000001");
        let f = parse_in(TWO, Some("zzzzz")).unwrap();
        assert_eq!(f.volumes[0].uuid, "zzzzz-nyw5e-000000000000001");
        let msg = parse_err(TWO, Some("bbbbb"));
        assert!(
            msg.contains("cluster bbbbb (from --dst-cluster) is not in the file"),
            "{msg}"
        );
        assert!(msg.contains("aaaaa, zzzzz"), "{msg}");
        // Even with one cluster, a different one asked for is an error.
        let msg = parse_err(CLUSTER, Some("xxxxx"));
        assert!(msg.contains("xxxxx") && msg.contains("zzzzz"), "{msg}");
        // Without Clusters, the cluster flag does not apply.
        assert_eq!(parse_in(BARE, Some("zzzzz")).unwrap().cluster, None);
    }

    #[test]
    fn json_forms() {
        let f = parse_ok(
            r#"{"Volumes": {"v2": {"Driver": "S3", "DriverParameters": {"Bucket": "b",
              "Endpoint": "http://127.0.0.1:9000", "PrefixLength": 3, "IndexPageSize": 0,
              "UsePathStyle": true, "SecretAccessKey": "SECRETsecret123"}},
              "v1": {"Driver": "Directory", "DriverParameters": {"Root": "/k"},
              "Replication": 3, "StorageClasses": {"default": true}}}}"#,
        );
        assert_eq!(f.volumes[0].uuid, "v1");
        assert_eq!(f.volumes[0].replication, 3);
        let p = s3(&f, 1);
        assert_eq!(p.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(
            (p.region.as_str(), p.prefix_length, p.index_page_size),
            ("us-east-1", 3, 1000)
        );
        assert!(p.use_path_style);
        assert_eq!(p.access_key_id, None);
        let f = parse_ok(
            r#"{"Clusters": {"zzzzz": {"Volumes": {"v": {"Driver": "Directory", "DriverParameters": {"Root": "/k"}}}}}}"#,
        );
        assert_eq!(f.cluster.as_deref(), Some("zzzzz"));
        // YAML flow style starts like JSON but is not: read as YAML.
        let f = parse_ok("{Volumes: {v: {Driver: Directory, DriverParameters: {Root: /k}}}}");
        assert_eq!(f.volumes[0].uuid, "v");
        // Tabs are fine in JSON.
        let f = parse_ok("{\n\t\"v\": {\n\t\t\"Driver\": \"Directory\", \"DriverParameters\": {\"Root\": \"/k\"}}}");
        assert_eq!(f.volumes[0].uuid, "v");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let msg = parse_err("v:\n  Driver: S3\n  DriverParameters: {Bucket: b\n  SecretAccessKey: SECRETsecret123\n", None);
        assert!(msg.contains("not valid YAML"), "{msg}");
        assert!(msg.contains("line 3 column"), "{msg}");
        let msg = parse_err(
            "v:\n  Driver: S3\n   SecretAccessKey: SECRETsecret123\n  x: y: z\n",
            None,
        );
        assert!(
            msg.contains("not valid YAML") && msg.contains(" at line "),
            "{msg}"
        );
        let msg = parse_err(
            "{\"v\": {\"Driver\": \"S3\",\n \"SecretAccessKey\": \"SECRETsecret123\"\n \"x\": 1}}",
            None,
        );
        assert!(
            msg.contains("not valid JSON") && msg.contains("line 3 column 2"),
            "{msg}"
        );
        let msg = parse_err("{\"v\": {\"Driver\": \"S3\"},\n \"v\": {}}", None);
        assert!(msg.contains("duplicate key \"v\" at line 2"), "{msg}");
        let msg = parse_err("v: {Driver: S3}\nv: {Driver: S3}\n", None);
        assert!(
            msg.contains("duplicate entry with key \"v\" at line "),
            "{msg}"
        );
    }

    #[test]
    fn yaml_merge_keys_and_anchors() {
        let f = parse_ok(
            "
common: &common
  Driver: S3
  DriverParameters: {Bucket: b, Region: r}
Volumes:
  v1: {<<: *common, Replication: 2}
  v2: *common
",
        );
        assert_eq!(f.volumes.len(), 2);
        assert_eq!(f.volumes[0].replication, 2);
        assert_eq!(s3(&f, 1).bucket, "b");
    }

    #[test]
    fn defaults() {
        let f = parse_ok(
            "
v0: {Driver: S3, DriverParameters: {Bucket: b, Region: r}, Replication: 0}
v1: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://h:1', IndexPageSize: 0}, Replication: -3}
v2: {Driver: S3, DriverParameters: {Bucket: b, Region: r, IndexPageSize: 250, PrefixLength: 30, Endpoint: ''}, Replication: 2.0}
v3: {Driver: S3, DriverParameters: {Bucket: b, Region: r, PrefixLength: null, AccessKeyID: ''}, Replication: null, ReadOnly: null}
",
        );
        assert_eq!(
            f.volumes.iter().map(|v| v.replication).collect::<Vec<_>>(),
            [1, 1, 2, 1]
        );
        assert_eq!(s3(&f, 0).index_page_size, 1000);
        assert_eq!(
            (s3(&f, 1).region.as_str(), s3(&f, 1).index_page_size),
            ("us-east-1", 1000)
        );
        assert_eq!(
            (s3(&f, 2).index_page_size, s3(&f, 2).prefix_length),
            (250, 30)
        );
        assert_eq!(s3(&f, 3).prefix_length, 0);
        assert_eq!(s3(&f, 3).access_key_id, None);
        assert!(!f.volumes[3].read_only);
    }

    /// Keys match exactly, as Arvados' loader matches them: one that
    /// differs from a known key only in case is ignored (the default
    /// applies) with a warning naming the file, the key path and the right
    /// spelling, never a value. Keys the user chooses (cluster IDs, volume
    /// UUIDs, URLs, class names) are not checked.
    #[test]
    fn wrongly_cased_keys_are_ignored_with_a_warning() {
        let f = parse_ok(
            "
Clusters:
  zzzzz:
    StorageClasses: {Hot: {priority: 7}}
    Volumes:
      zzzzz-nyw5e-00000000000000A:
        Driver: S3
        DriverParameters: {Bucket: b, Region: r, accessKeyID: AKIDsecret456, usepathstyle: true, prefixLength: 3}
        replication: 4
        ReadONLY: true
        StorageClasses: {Hot: true}
        AccessViaHosts: {'http://keep0:25107': {readOnly: true}}
",
        );
        let v = &f.volumes[0];
        assert_eq!(v.uuid, "zzzzz-nyw5e-00000000000000A");
        assert_eq!((v.replication, v.read_only, v.priority), (1, false, 0));
        assert_eq!(v.storage_classes, ["Hot"]);
        let p = s3(&f, 0);
        assert_eq!((p.prefix_length, p.use_path_style), (0, false));
        assert_eq!(p.access_key_id, None);
        let vol = "/etc/x.yml: ignoring the config entry Clusters.zzzzz.Volumes.zzzzz-nyw5e-00000000000000A";
        let want = [
            "Clusters.zzzzz.StorageClasses.Hot.priority (perhaps you meant Priority?)".to_string(),
            format!("{vol}.DriverParameters.accessKeyID (perhaps you meant AccessKeyID?)"),
            format!("{vol}.DriverParameters.usepathstyle (perhaps you meant UsePathStyle?)"),
            format!("{vol}.DriverParameters.prefixLength (perhaps you meant PrefixLength?)"),
            format!("{vol}.replication (perhaps you meant Replication?)"),
            format!("{vol}.ReadONLY (perhaps you meant ReadOnly?)"),
            format!(
                "{vol}.AccessViaHosts.http://keep0:25107.readOnly (perhaps you meant \
                 ReadOnly?)"
            ),
        ];
        assert_eq!(f.warnings.len(), want.len(), "{:#?}", f.warnings);
        for (w, want) in f.warnings.iter().zip(&want) {
            assert!(w.starts_with("--dst-volumes /etc/x.yml: "), "{w}");
            assert!(w.contains(want.as_str()), "want {want}\ngot  {w}");
            assert!(w.contains("Write ") && !w.contains('\n'), "{w}");
            assert_no_secret(w);
        }
        // A keepstore URL with credentials in it is refused, and never shown.
        let m = parse_err(
            "Clusters:\n  zzzzz:\n    Volumes:\n      zzzzz-nyw5e-00000000000000A:\n        \
             Driver: Directory\n        DriverParameters: {Root: /v}\n        AccessViaHosts: \
             {'http://AKIDsecret456:SECRETsecret123@keep0:25107': {readOnly: true}}\n",
            None,
        );
        assert!(m.contains("user name or password"), "{m}");
        assert!(!m.contains("SECRETsecret123"), "{m}");
        // The exact key wins, and its near miss is dropped with a warning
        // all the same (Arvados drops it before decoding).
        let f = parse_ok(
            "v: {Driver: Directory, driver: S3, DriverParameters: {root: /lower, Root: /exact}}",
        );
        assert_eq!(
            f.volumes[0].driver,
            Driver::Directory {
                root: "/exact".into()
            }
        );
        assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
        assert!(f.warnings[0].contains("v.driver (perhaps you meant Driver?)"));
        assert!(f.warnings[1].contains("v.DriverParameters.root (perhaps you meant Root?)"));
        // A required key in the wrong case is missing.
        let msg = parse_err("v: {Driver: Directory, DriverParameters: {ROOT: /k}}", None);
        assert!(msg.contains("v.DriverParameters.Root is missing"), "{msg}");
        // Unknown keys are kept quietly, and exact keys draw no warning.
        let f =
            parse_ok("v: {Driver: Directory, DriverParameters: {Root: /k, Rooot: /x}, Comment: c}");
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        // A wrongly cased top-level key leaves nothing to read: an error.
        for (text, want) in [
            (
                "volumes: {v: {Driver: Directory, DriverParameters: {Root: /k}}}",
                "volumes is not Volumes",
            ),
            (
                "CLUSTERS: {zzzzz: {Volumes: {}}}",
                "CLUSTERS is not Clusters",
            ),
        ] {
            let msg = parse_err(text, None);
            assert!(msg.contains(want) && msg.contains("Write "), "{msg}");
        }
        // The driver's value is case-sensitive, as keepstore's lookup.
        let msg = parse_err(
            "v: {Driver: s3, DriverParameters: {Bucket: b, Region: r}}",
            None,
        );
        assert!(
            msg.contains("driver s3 is not supported") && msg.contains("write S3"),
            "{msg}"
        );
    }

    #[test]
    fn deprecated_key_names() {
        let f = parse_ok("v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, AccessKey: AKIDsecret456, SecretKey: SECRETsecret123}}");
        let p = s3(&f, 0);
        assert_eq!(p.access_key_id.as_deref(), Some("AKIDsecret456"));
        assert_eq!(p.secret_access_key.as_deref(), Some(SECRET));
        assert_no_secret(&format!("{f:?}"));
        // Arvados' defaults hold no AccessKey: it is read in any case.
        let f = parse_ok(
            "v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, accesskey: AKIDsecret456}}",
        );
        assert_eq!(s3(&f, 0).access_key_id.as_deref(), Some("AKIDsecret456"));
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        let msg = parse_err("v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, AccessKey: AKIDsecret456, SecretAccessKey: SECRETsecret123}}", None);
        assert!(
            msg.contains("v.DriverParameters uses both the old keys"),
            "{msg}"
        );
    }

    /// Every validation error: the key path it must name, on a file that
    /// also holds secrets.
    #[test]
    fn validation_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "the file is empty"),
            ("# nothing\n", "the file is empty"),
            ("- a\n- b\n", "the file holds a list, not a map"),
            ("{}", "the file lists no volumes"),
            ("Volumes: {}\nSecretAccessKey: SECRETsecret123", "Volumes lists no volumes"),
            ("Volumes:\nSystemRootToken: ROOTtoken789", "Volumes lists no volumes"),
            ("Volumes: [a]", "Volumes must be a map of volume UUIDs"),
            ("Clusters: {}", "Clusters is empty"),
            ("Clusters: [zzzzz]", "Clusters must be a map of cluster IDs"),
            ("Clusters: {zzzzz: {SystemRootToken: ROOTtoken789}}", "Clusters.zzzzz.Volumes is missing"),
            ("Clusters: {zzzzz: }", "Clusters.zzzzz is empty"),
            ("Clusters: {zzzzz: {Volumes: {}}}", "Clusters.zzzzz.Volumes lists no volumes"),
            ("Clusters: {zzzzz: {StorageClasses: {a: 1}, Volumes: {v: {}}}}", "Clusters.zzzzz.StorageClasses.a must be a map"),
            ("Clusters: {zzzzz: {StorageClasses: {a: {Priority: high}}, Volumes: {v: {}}}}", "Clusters.zzzzz.StorageClasses.a.Priority must be a whole number, not a string"),
            ("ApiHost: example.com\n", "ApiHost must be a volume (a map with Driver and DriverParameters), not a string (the file has no Clusters or Volumes key"),
            ("'': {Driver: S3}", "the file has a volume whose UUID (its key) is empty"),
            ("v: {DriverParameters: {Root: /k}}", "v.Driver is missing"),
            ("v: {Driver: '', DriverParameters: {Root: /k}}", "v.Driver is missing"),
            ("v: {Driver: 3}", "v.Driver must be a string, not a number"),
            ("v:\n  Driver: Swift\n  DriverParameters: {StorageAccountKey: SECRETsecret123}\n",
             "v.Driver: volume v's driver Swift is not supported by keep-rsync (Directory, S3 and Azure are)"),
            ("v:\n  Driver: Azure\n  DriverParameters: {StorageAccountName: a, ContainerName: c}\n",
             "v.DriverParameters.StorageAccountKey is missing: an Azure volume needs"),
            ("v: {Driver: Azure, DriverParameters: {StorageAccountName: a, StorageAccountKey: SECRETsecret123, ContainerName: c, StorageBaseURL: 'https://x'}}",
             "v.DriverParameters.StorageBaseURL is https://x: it must be a host name"),
            ("v: {Driver: 'Ceph RBD'}", "driver \"Ceph RBD\" is not supported"),
            ("v: {Driver: Directory}", "v.DriverParameters is missing: a Directory volume needs DriverParameters.Root"),
            ("v: {Driver: Directory, DriverParameters: /k}", "v.DriverParameters must be a map, not a string"),
            ("v: {Driver: Directory, DriverParameters: {Serialize: true}}", "v.DriverParameters.Root is missing"),
            ("v: {Driver: Directory, DriverParameters: {Root: keep/data}}", "v.DriverParameters.Root is keep/data: it must be an absolute path"),
            ("v: {Driver: Directory, DriverParameters: {Root: [/a]}}", "v.DriverParameters.Root must be a string, not a list"),
            ("v: {Driver: S3}", "v.DriverParameters is missing: an S3 volume needs"),
            ("v: {Driver: S3, DriverParameters: {Region: r, SecretAccessKey: SECRETsecret123}}", "v.DriverParameters.Bucket is missing"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, SecretAccessKey: SECRETsecret123}}", "v.DriverParameters has neither Region nor Endpoint"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, V2Signature: true}}", "v.DriverParameters.V2Signature is true: S3 V2 signatures are not supported"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'ftp://h'}}", "v.DriverParameters.Endpoint is ftp://h: it must be an http:// or https:// URL"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: '127.0.0.1:9000'}}", "Endpoint is 127.0.0.1:9000: it must be an http:// or https:// URL"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://'}}", "Endpoint is http://: it has no host name"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://:9000/'}}", "it has no host name"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://h:99999'}}", "its port must be a number"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://[::1'}}", "Endpoint is http://[::1: it is not a valid URL"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://[::1]:x/'}}", "its port must be a number"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://h x'}}", "a URL cannot hold spaces"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://AKIDsecret456:SECRETsecret123@h'}}", "v.DriverParameters.Endpoint holds a user name or password"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'AKIDsecret456:SECRETsecret123@h'}}", "Endpoint is <redacted>@h: it must be an http"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, PrefixLength: 31}}", "v.DriverParameters.PrefixLength is 31: it must be between 0 and 30"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, PrefixLength: -1}}", "PrefixLength is -1"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, IndexPageSize: -1}}", "v.DriverParameters.IndexPageSize is -1: it must be a positive number"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, SecretAccessKey: 5}}", "v.DriverParameters.SecretAccessKey must be a string, not a number"),
            ("v: {Driver: S3, DriverParameters: {Bucket: b, Region: r, UsePathStyle: 'yes'}}", "v.DriverParameters.UsePathStyle must be true or false, not a string"),
            ("v: {Driver: Directory, DriverParameters: {Root: /k}, Replication: 1.5}", "v.Replication is 1.5: it must be a whole number"),
            ("v: {Driver: Directory, DriverParameters: {Root: /k}, Replication: '2'}", "v.Replication must be a whole number, not a string"),
            ("v: {Driver: Directory, DriverParameters: {Root: /k}, Replication: 99999999999}", "v.Replication is 99999999999: it is too large"),
            ("v: {Driver: Directory, DriverParameters: {Root: /k}, ReadOnly: 1}", "v.ReadOnly must be true or false, not a number"),
            ("v: {Driver: Directory, DriverParameters: {Root: /k}, StorageClasses: [default]}", "v.StorageClasses must be a map, not a list"),
            ("v: {Driver: Directory, DriverParameters: {Root: /k}, StorageClasses: {default: 'true'}}", "v.StorageClasses.default must be true or false, not a string"),
            ("Clusters:\n  zzzzz:\n    Volumes:\n      zzzzz-nyw5e-000000000000001:\n        Driver: S3\n        DriverParameters:\n          SecretAccessKey: SECRETsecret123\n",
             "Clusters.zzzzz.Volumes.zzzzz-nyw5e-000000000000001.DriverParameters.Bucket is missing: an S3 volume needs the name of its bucket"),
        ];
        for (text, want) in cases {
            let msg = parse_err(text, None);
            assert!(msg.contains(want), "{text:?}\nwant {want:?}\ngot  {msg}");
        }
    }

    #[test]
    fn secret_in_a_shown_value_is_redacted() {
        // Whatever value a message shows, no secret of the file gets through.
        let msg = parse_err(
            "v: {Driver: SECRETsecret123, DriverParameters: {SecretAccessKey: SECRETsecret123}}",
            None,
        );
        assert!(msg.contains("driver <redacted> is not supported"), "{msg}");
        let msg = parse_err(
            "Clusters: {zzzzz: {ManagementToken: MGMTtoken111, Volumes: {v: {Driver: S3, DriverParameters: {Bucket: b, Endpoint: 'http://MGMTtoken111:x'}}}}}",
            None,
        );
        assert!(msg.contains("Endpoint is http://<redacted>"), "{msg}");
        // In a file that does not parse, found by looking at the text.
        let msg = parse_err("x: [\nSystemRootToken: ROOTtoken789\nBlobSigningKey: \"BLOBkey000\" # c\n'ROOTtoken789", None);
        assert!(msg.contains("not valid YAML"), "{msg}");
        assert_eq!(
            secrets_in_text("  SecretAccessKey: 'a b'\n{\"AccessKeyID\": \"k1\", \"x\": 1}\n- ManagementToken: m # c\nKey: |\n"),
            ["a b", "k1", "m"]
        );
    }

    #[test]
    fn load_errors() {
        let dir = std::env::temp_dir().join(format!("vf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.yml");
        let err = load(&missing, None, "--src-volumes", "--src-cluster").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)));
        assert!(
            msg.starts_with(&format!("--src-volumes {}: cannot read", missing.display())),
            "{msg}"
        );
        assert!(msg.contains("it does not exist"), "{msg}");
        let msg = load(&dir, None, "--src-volumes", "--src-cluster")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("cannot read the volumes file: ")
                && msg.contains(&dir.display().to_string()),
            "{msg}"
        );
        let bin = dir.join("bin.yml");
        std::fs::write(&bin, b"v: \xff\xfe\n").unwrap();
        let msg = load(&bin, None, "--volumes", "--cluster")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not UTF-8 text (at byte 3)"), "{msg}");
        let good = dir.join("good.yml");
        std::fs::write(&good, format!("\u{feff}{BARE}")).unwrap();
        let f = load(&good, None, "--volumes", "--cluster").unwrap();
        assert_eq!((f.path.as_path(), f.volumes.len()), (good.as_path(), 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/volumes")).join(name)
    }

    fn load_fixture(name: &str, cluster: Option<&str>) -> Result<VolumesFile> {
        load(&fixture(name), cluster, "--dst-volumes", "--dst-cluster")
    }

    #[test]
    fn fixtures() {
        let f = load_fixture("dir-volumes.yml", None).unwrap();
        assert_eq!(f.volumes.len(), 2);
        assert!(f
            .volumes
            .iter()
            .all(|v| matches!(v.driver, Driver::Directory { .. })));

        let f = load_fixture("s3-volume.yml", None).unwrap();
        let p = s3(&f, 0);
        assert_eq!(p.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((p.region.as_str(), p.prefix_length), ("us-east-1", 3));

        let f = load_fixture("cluster.yml", None).unwrap();
        assert_eq!(f.cluster.as_deref(), Some("zzzzz"));
        assert_eq!(f.volumes.len(), 2);
        assert!(f
            .volumes
            .iter()
            .any(|v| matches!(v.driver, Driver::Directory { .. })));
        assert!(f.volumes.iter().any(|v| matches!(v.driver, Driver::S3(_))));
        assert!(f.volumes.iter().any(|v| v.priority > 0));
        let cluster_text = std::fs::read_to_string(fixture("cluster.yml")).unwrap();
        let mut secrets = Vec::new();
        secrets_in_tree(&read_tree(&cluster_text).unwrap(), &mut secrets);
        assert!(secrets.len() >= 4, "{secrets:?}");
        let debug = format!("{f:?}");
        for s in &secrets {
            assert!(!debug.contains(s.as_str()), "{s} in {debug}");
        }

        let msg = load_fixture("two-clusters.yml", None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("several clusters") && msg.contains("--dst-cluster"),
            "{msg}"
        );
        let a = load_fixture("two-clusters.yml", Some("aaaaa")).unwrap();
        let z = load_fixture("two-clusters.yml", Some("zzzzz")).unwrap();
        assert_ne!(a.volumes, z.volumes);

        let az = load_fixture("azure.yml", None).unwrap();
        match &az.volumes[0].driver {
            Driver::Azure(p) => {
                assert_eq!(
                    (
                        p.account_name.as_str(),
                        p.container.as_str(),
                        p.base_url.as_str()
                    ),
                    ("zzzzzkeep", "keep", "core.windows.net")
                );
                assert_eq!(p.list_max_attempts, 12);
                assert_eq!(p.request_timeout, std::time::Duration::from_secs(600));
                assert!(!format!("{p:?}").contains("FAKEazure"));
            }
            other => panic!("not Azure: {other:?}"),
        }

        let j = load_fixture("volumes.json", None).unwrap();
        assert_eq!(j.volumes.len(), 2);

        for (name, want) in [
            ("bad-yaml.yml", "not valid YAML"),
            ("no-bucket.yml", "DriverParameters.Bucket is missing"),
            ("relative-root.yml", "DriverParameters.Root is"),
        ] {
            let err = load_fixture(name, None).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Config(_)), "{name}: {msg}");
            assert!(msg.contains(want), "{name}: want {want:?}, got {msg}");
            assert!(
                msg.contains(&fixture(name).display().to_string()),
                "{name}: {msg}"
            );
            assert_no_secret(&msg);
            let text = std::fs::read_to_string(fixture(name)).unwrap();
            for s in secrets_in_text(&text) {
                assert!(!msg.contains(&s), "{name}: {s} in {msg}");
            }
        }
    }
}
