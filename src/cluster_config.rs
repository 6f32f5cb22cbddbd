//! A cluster's own config.yml (`-src-cluster-config`, `-dst-cluster-config`,
//! keep-block-check's `-cluster-config`): everything keep-rsync needs about a
//! side, read from the file every Arvados 2.x/3.x service reads, so that no
//! settings file, services list, TTL or replication flag has to be copied out
//! of it by hand (docs/protocol.md, "Cluster config files").
//!
//! From `Clusters.ID`: `SystemRootToken` (the token), `Collections.
//! BlobSigningKey`, `Collections.BlobSigningTTL` (default 336h),
//! `Collections.DefaultReplication` (default 2), `TLS.Insecure`, the
//! keepstores of `Services.Keepstore.InternalURLs` with the uuids the API
//! server gives them (`Rendezvous`), read-only when none of the volumes they
//! mount (`Volumes.*.AccessViaHosts`) is writable through them, and the
//! keepproxy of `Services.Keepproxy.ExternalURL`. Defaults the file leaves
//! out are Arvados' own (lib/config/config.default.yml). The API server is
//! never asked.
//!
//! The file holds every secret of the cluster: no value of it is ever shown
//! (messages name key paths), a file readable by others draws a warning, and
//! the `Debug` of what is read shows no secret.

use std::path::{Path, PathBuf};

use crate::config_tree::{join, pick_cluster, shown, Document, Node, Obj};
use crate::error::{Error, Result};
use crate::protocol::KeepService;
use crate::settings::Settings;

/// Arvados' default `Collections.BlobSigningTTL` (336h, two weeks): the TTL
/// of a side whose cluster config or discovery document gives none.
pub const DEFAULT_TTL: u64 = 336 * 3600;
/// Arvados' default `Collections.DefaultReplication`.
pub const DEFAULT_REPLICATION: u32 = 2;

/// Which services of the cluster keep-rsync talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// The keepstores (`Services.Keepstore.InternalURLs`), as keep-balance
    /// does: from inside the cluster's network.
    #[default]
    Keepstore,
    /// The keepproxy (`Services.Keepproxy.ExternalURL`), from outside.
    Keepproxy,
}

/// What one cluster's config says, for one side.
#[derive(Clone)]
pub struct ClusterConfig {
    pub path: PathBuf,
    /// The flag that named the file, and the one that picks the service
    /// kind (`--src-via`), for messages.
    pub flag: String,
    pub via_flag: String,
    pub id: String,
    /// The token, key and insecure flag as a settings file would give them
    /// (`api_host` is the controller's external host, for messages only).
    pub settings: Settings,
    /// `Collections.BlobSigningTTL` in seconds.
    pub ttl: u64,
    /// `Collections.DefaultReplication`.
    pub default_replication: u32,
    /// The keepstores, in the order of the file's keys (sorted).
    pub keepstores: Vec<KeepService>,
    pub keepproxy: Option<KeepService>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("settings", &self.settings)
            .field("ttl", &self.ttl)
            .field("default_replication", &self.default_replication)
            .field("keepstores", &self.keepstores)
            .field("keepproxy", &self.keepproxy)
            .finish()
    }
}

impl ClusterConfig {
    /// The services to use.
    pub fn services(&self, via: Via) -> Result<Vec<KeepService>> {
        match via {
            Via::Keepstore if !self.keepstores.is_empty() => Ok(self.keepstores.clone()),
            Via::Keepstore => Err(Error::config(format!(
                "{} {}: Clusters.{}.Services.Keepstore.InternalURLs lists no keepstore: there is \
                 nothing to index. {}",
                self.flag,
                self.path.display(),
                self.id,
                if self.keepproxy.is_some() {
                    format!(
                        "Add the keepstores, or go through the keepproxy ({} keepproxy).",
                        self.via_flag
                    )
                } else {
                    "Add the keepstores (or a Services.Keepproxy.ExternalURL to go through)."
                        .to_string()
                }
            ))),
            Via::Keepproxy => self.keepproxy.clone().map(|p| vec![p]).ok_or_else(|| {
                Error::config(format!(
                    "{} {}: Clusters.{}.Services.Keepproxy.ExternalURL is not set: there is no \
                     keepproxy to go through. Set it, or reach the keepstores directly ({} \
                     keepstore).",
                    self.flag,
                    self.path.display(),
                    self.id,
                    self.via_flag
                ))
            }),
        }
    }
}

/// Read `path`; `flag` names it in messages, `cluster` (from
/// `cluster_flag`) picks a cluster of several.
pub fn load(
    path: &Path,
    cluster: Option<&str>,
    flag: &str,
    cluster_flag: &str,
) -> Result<ClusterConfig> {
    let origin = path.display().to_string();
    let text = crate::config_tree::read_text(
        path,
        flag,
        "cluster config",
        "Pass the path of the cluster's config.yml (/etc/arvados/config.yml on its servers).",
        "YAML",
    )?;
    let mut c = parse(&text, &origin, cluster, flag, cluster_flag)?;
    c.path = path.to_path_buf();
    c.settings.path = path.to_path_buf();
    check_permissions(path, &mut c.settings);
    Ok(c)
}

/// [`load`] on text already read; `origin` names it in messages.
pub fn parse(
    text: &str,
    origin: &str,
    cluster: Option<&str>,
    flag: &str,
    cluster_flag: &str,
) -> Result<ClusterConfig> {
    let mut doc = Document::parse(text, origin, flag)?;
    crate::config_tree::misspelled_top(&doc.root, &["Clusters"]).map_err(|m| doc.error(m))?;
    doc.drop_near_misses(&crate::config_tree::FILE);
    let top = match &doc.root {
        Node::Map(entries) => Obj::new(entries, String::new()),
        _ => {
            return Err(doc
                .error("the file is not a cluster config: it holds Clusters: {ID: {...}}".into()))
        }
    };
    let (id, c) =
        match pick_cluster(&top, cluster, cluster_flag, "SystemRootToken") {
            Ok(Some(found)) => found,
            Ok(None) => return Err(doc.error(
                "Clusters is missing: a cluster config is Clusters: {ID: {SystemRootToken: ..., \
                 Collections: ..., Services: ...}} (the cluster's /etc/arvados/config.yml)"
                    .into(),
            )),
            Err(m) => return Err(doc.error(m)),
        };
    let mut found = read_cluster(&id, &c, origin).map_err(|m| doc.error(m))?;
    found.settings.warnings.extend(doc.warnings.iter().cloned());
    found.flag = flag.to_string();
    found.via_flag = match flag.strip_suffix("-cluster-config") {
        Some(side) if !side.is_empty() => format!("-{side}-via"),
        _ => "--via".to_string(),
    };
    Ok(found)
}

fn read_cluster(id: &str, c: &Obj<'_>, origin: &str) -> Result<ClusterConfig, String> {
    let token = c.string("SystemRootToken")?.ok_or_else(|| {
        format!(
            "{} is missing: keep-rsync needs the cluster's system root token (keepstores serve \
             indexes to it alone). Set it in the file, or use a settings file instead.",
            c.key("SystemRootToken")
        )
    })?;
    let coll = c.object("Collections")?;
    let key = match &coll {
        Some(o) => o.string("BlobSigningKey")?,
        None => None,
    };
    let ttl = match coll
        .as_ref()
        .map(|o| duration(o, "BlobSigningTTL"))
        .transpose()?
    {
        Some(Some(t)) if t > 0 => t,
        Some(Some(_)) => {
            return Err(format!(
                "{} is 0: keepstore could check no signature with it. Give the cluster's TTL \
                 (Arvados' default is 336h).",
                coll.as_ref()
                    .map(|o| o.key("BlobSigningTTL"))
                    .unwrap_or_default()
            ))
        }
        _ => DEFAULT_TTL,
    };
    let replication = default_replication(c)?;
    let insecure = match c.object("TLS")? {
        Some(t) => t.boolean("Insecure")?,
        None => false,
    };
    let services = c.object("Services")?;
    let controller = match &services {
        Some(s) => match s.object("Controller")? {
            Some(ctl) => ctl.string("ExternalURL")?.map(str::to_string),
            None => None,
        },
        None => None,
    };
    let volumes = c.object("Volumes")?;
    let mut keepstores = Vec::new();
    let mut keepproxy = None;
    if let Some(s) = &services {
        if let Some(ks) = s.object("Keepstore")? {
            if let Some(urls) = ks.object("InternalURLs")? {
                for (url, info) in urls.entries {
                    let path = join(&urls.path, &url_shown(url));
                    let rvz = match info {
                        Node::Map(e) => Obj::new(e, path.clone()).string("Rendezvous")?,
                        Node::Null => None,
                        _ => {
                            return Err(format!(
                                "{path} must be a map (Rendezvous: ..., ListenURL: ...)."
                            ))
                        }
                    };
                    let norm = normalize_url(url).map_err(|why| format!("{path}: {why}"))?;
                    let mounts = match &volumes {
                        Some(v) => Some(mounts_through(v, &norm)?),
                        None => None,
                    };
                    // A keepstore with no volume in the file counts as
                    // writable; otherwise it is when one of its mounts is.
                    let read_only = mounts
                        .as_ref()
                        .is_some_and(|m| !m.is_empty() && !m.iter().any(|m| m.writable));
                    let mut svc = service(id, &norm, rvz, "disk", read_only, &path)?;
                    svc.mounts = mounts.filter(|m| !m.is_empty());
                    keepstores.push(svc);
                }
            }
        }
        if let Some(kp) = s.object("Keepproxy")? {
            if let Some(url) = kp.string("ExternalURL")? {
                let path = kp.key("ExternalURL");
                let url = &url_shown_checked(url, &path)?;
                let norm = normalize_url(url).map_err(|why| format!("{path}: {why}"))?;
                keepproxy = Some(service(id, &norm, None, "proxy", false, &path)?);
            }
        }
    }
    keepstores.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    if let Some(dup) = keepstores.windows(2).find(|w| w[0].uuid == w[1].uuid) {
        return Err(format!(
            "two keepstores of Services.Keepstore.InternalURLs get the uuid {}: give each its \
             own Rendezvous.",
            dup[0].uuid
        ));
    }
    let api_host = controller
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| Some(host_port(u.host_str()?, u.port())))
        .unwrap_or_default();
    Ok(ClusterConfig {
        path: PathBuf::from(origin),
        flag: String::new(),
        via_flag: String::new(),
        id: id.to_string(),
        settings: Settings {
            path: PathBuf::from(origin),
            api_host,
            api_token: token.to_string(),
            insecure,
            blob_signing_key: key.map(str::to_string),
            warnings: Vec::new(),
            from_cluster_config: true,
        },
        ttl,
        default_replication: replication,
        keepstores,
        keepproxy,
    })
}

/// A cluster's `Collections.DefaultReplication` (`c` is `Clusters.ID`),
/// Arvados' default when it is not set.
pub(crate) fn default_replication(c: &Obj<'_>) -> Result<u32, String> {
    let Some(coll) = c.object("Collections")? else {
        return Ok(DEFAULT_REPLICATION);
    };
    match coll.integer("DefaultReplication")? {
        None => Ok(DEFAULT_REPLICATION),
        Some(n) if (1..=1000).contains(&n) => Ok(n as u32),
        Some(n) => Err(format!(
            "{} is {n}: it must be a replica count from 1 up.",
            coll.key("DefaultReplication")
        )),
    }
}

/// `HOST[:PORT]` (IPv6 in brackets), as `ARVADOS_API_HOST` is written.
fn host_port(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// A Go duration field (`336h`, `1209600s`, or a bare `0`), in seconds.
fn duration(o: &Obj<'_>, name: &str) -> Result<Option<u64>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(Node::Int(0)) => Ok(Some(0)),
        Some(Node::Str(s)) => crate::protocol::units::parse_go_duration(s)
            .map(|d| Some(d.as_secs()))
            .map_err(|why| format!("{}: {why}", o.key(name))),
        Some(_) => Err(format!(
            "{} must be a Go duration such as 336h.",
            o.key(name)
        )),
    }
}

/// A service URL as Arvados normalises map keys: scheme and host, a
/// trailing `/` when the path is empty (sdk/go/arvados/config.go). `Err`
/// names what is wrong, without the URL (it may hold credentials).
pub(crate) fn normalize_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "is not an http:// or https:// URL".to_string())?;
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.contains('@') {
        return Err("has a user name or password in it: keep services take none".into());
    }
    let scheme = scheme.to_ascii_lowercase();
    let url = format!("{scheme}://{rest}");
    let url = url.as_str();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "has scheme {}: only http and https are keep services",
            shown(&scheme)
        ));
    }
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host".into());
    }
    if rest.contains('/') {
        Ok(url.to_string())
    } else {
        Ok(format!("{url}/"))
    }
}

/// A URL as messages may show it: any user name and password replaced.
fn url_shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://<redacted>@{host}{path}"),
                None => url.to_string(),
            }
        }
        None if url.contains('@') => "<redacted>".to_string(),
        None => url.to_string(),
    }
}

/// A URL value refused when it carries credentials (named by `path`).
fn url_shown_checked(url: &str, path: &str) -> Result<String, String> {
    if url_shown(url) != url {
        return Err(format!(
            "{path} has a user name or password in it: keep services take none."
        ));
    }
    Ok(url.to_string())
}

/// The volumes the keepstore at `url` mounts (`AccessViaHosts` empty =
/// mounted by every keepstore), each writable unless it or its host entry
/// says `ReadOnly`, with its `Replication` (at least 1) and storage classes:
/// what the keepstore's `GET /mounts` would answer.
fn mounts_through(volumes: &Obj<'_>, url: &str) -> Result<Vec<crate::protocol::Mount>, String> {
    let mut out = Vec::new();
    for (uuid, v) in volumes.entries {
        let Node::Map(e) = v else { continue };
        let v = Obj::new(e, volumes.key(uuid));
        let via = v.object("AccessViaHosts")?;
        let host_ro = match &via {
            None => Some(false),
            Some(h) if h.entries.is_empty() => Some(false),
            Some(h) => {
                let entry = h
                    .entries
                    .iter()
                    .find(|(k, _)| normalize_url(k).as_deref() == Ok(url));
                match entry {
                    None => None,
                    Some((k, Node::Map(e))) => Some(Obj::new(e, h.key(k)).boolean("ReadOnly")?),
                    Some(_) => Some(false),
                }
            }
        };
        let Some(host_ro) = host_ro else { continue };
        let mut classes = volume_classes(&v)?;
        classes.sort();
        out.push(crate::protocol::Mount {
            uuid: uuid.to_string(),
            writable: !host_ro && !v.boolean("ReadOnly")?,
            replication: v
                .integer("Replication")?
                .unwrap_or(1)
                .clamp(1, u32::MAX as i128) as u32,
            classes,
        });
    }
    out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    Ok(out)
}

/// A volume's storage classes: those its `StorageClasses` sets true, or
/// `default` when it names none (keepstore's rule).
fn volume_classes(v: &Obj<'_>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    if let Some(sc) = v.object("StorageClasses")? {
        for (name, _) in sc.entries {
            if sc.boolean(name)? {
                out.push(name.to_string());
            }
        }
        if sc.entries.is_empty() {
            out.push("default".into());
        }
    } else {
        out.push("default".into());
    }
    Ok(out)
}

/// A keep service as clients see it in `keep_services/accessible` when the
/// cluster has no keep_services rows (Rails' `KeepService.from_config`, which
/// the controller proxies): uuid `ID-bi6l4-` + the Rendezvous value when it
/// is exactly 15 ASCII letters and digits, else the first **16** hex digits
/// of md5(Rendezvous, or the normalised URL with its trailing slash): a
/// 28-character uuid, weighed whole in rendezvous order as the Go SDK and
/// keep-balance weigh it (`keep_protocol::config_service_uuid`). (Go
/// services reading the config derive 15 digits instead; docs/protocol.md,
/// "Cluster config files", says why a 15-character Rendezvous is the cure.)
fn service(
    id: &str,
    url: &str,
    rvz: Option<&str>,
    service_type: &str,
    read_only: bool,
    path: &str,
) -> Result<KeepService, String> {
    let no_host = || format!("{path}: the URL has no host");
    let bad_port = || format!("{path}: the port is not a number from 1 to 65535");
    let parsed = url::Url::parse(url).map_err(|e| match e {
        url::ParseError::InvalidPort => bad_port(),
        url::ParseError::EmptyHost => no_host(),
        e => format!("{path}: the URL is not valid ({e})"),
    })?;
    let ssl = parsed.scheme() == "https";
    let host = match parsed.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    if host.is_empty() {
        return Err(no_host());
    }
    let port = parsed
        .port_or_known_default()
        .filter(|&p| p > 0)
        .ok_or_else(bad_port)?;
    Ok(KeepService {
        uuid: crate::protocol::config_service_uuid(id, url, rvz),
        host,
        port,
        ssl,
        service_type: service_type.to_string(),
        read_only,
        mounts: None,
        mounts_served: false,
    })
}

fn check_permissions(path: &Path, s: &mut Settings) {
    let holds = "holds every secret of the cluster";
    let run = "run chmod 600";
    if let Some(w) = crate::settings::loose_permissions(path, holds, run) {
        s.warnings.push(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    const MINIMAL: &str = r#"
Clusters:
  zzzzz:
    SystemRootToken: ROOTTOKENsecret0123456789abcdefghijklmnop
    Collections:
      BlobSigningKey: SIGNINGKEYsecret0123456789abcdefghijklmno
    Services:
      Controller:
        ExternalURL: https://zzzzz.example.com
      Keepstore:
        InternalURLs:
          "http://keep0.internal:25107": {Rendezvous: "0000000000keep0"}
          "http://keep1.internal:25107": {}
      Keepproxy:
        ExternalURL: https://keep.zzzzz.example.com
"#;

    fn parse_ok(text: &str) -> ClusterConfig {
        parse(
            text,
            "config.yml",
            None,
            "-src-cluster-config",
            "--src-cluster",
        )
        .unwrap()
    }

    fn parse_err(text: &str) -> String {
        let e = parse(
            text,
            "config.yml",
            None,
            "-src-cluster-config",
            "--src-cluster",
        )
        .err()
        .unwrap();
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(!m.contains("secret0123"), "a secret in {m}");
        m
    }

    #[test]
    fn minimal_cluster_with_defaults() {
        let c = parse_ok(MINIMAL);
        assert_eq!(c.id, "zzzzz");
        assert_eq!(c.ttl, DEFAULT_TTL);
        assert_eq!(c.default_replication, 2);
        assert!(!c.settings.insecure);
        assert_eq!(c.settings.api_host, "zzzzz.example.com");
        assert!(c.settings.blob_signing_key.is_some());
        let uuids: Vec<&str> = c.keepstores.iter().map(|s| s.uuid.as_str()).collect();
        // Rendezvous verbatim; else md5 of the normalised URL (trailing /).
        let hashed = &format!("{:x}", Md5::digest(b"http://keep1.internal:25107/"))[..16];
        assert!(uuids.contains(&"zzzzz-bi6l4-0000000000keep0"), "{uuids:?}");
        assert!(
            uuids.contains(&format!("zzzzz-bi6l4-{hashed}").as_str()),
            "{uuids:?}"
        );
        // Rails' own example (keep_service.rb, checked by hand).
        let rails = service(
            "zzzzz",
            "http://keep0.zzzzz.example.com:25107/",
            None,
            "disk",
            false,
            "k",
        )
        .unwrap();
        assert_eq!(rails.uuid, "zzzzz-bi6l4-d57e530a86591bfe");
        assert_eq!(rails.weight_suffix(), "zzzzz-bi6l4-d57e530a86591bfe");
        let k0 = c
            .keepstores
            .iter()
            .find(|s| s.uuid.ends_with("keep0"))
            .unwrap();
        assert_eq!(
            (k0.host.as_str(), k0.port, k0.ssl),
            ("keep0.internal", 25107, false)
        );
        let p = c.services(Via::Keepproxy).unwrap();
        assert_eq!(
            (p[0].service_type.as_str(), p[0].port, p[0].ssl),
            ("proxy", 443, true)
        );
        assert!(!format!("{c:?}").contains("secret0123"));
    }

    #[test]
    fn values_and_errors() {
        let c = parse_ok(&MINIMAL.replace(
            "    Collections:\n",
            "    TLS: {Insecure: true}\n    Collections:\n      BlobSigningTTL: 24h\n      DefaultReplication: 3\n",
        ));
        assert_eq!(
            (c.ttl, c.default_replication, c.settings.insecure),
            (86400, 3, true)
        );
        let m = parse_err(&MINIMAL.replace(
            "    SystemRootToken: ROOTTOKENsecret0123456789abcdefghijklmnop\n",
            "",
        ));
        assert!(
            m.contains("Clusters.zzzzz.SystemRootToken is missing"),
            "{m}"
        );
        assert!(m.starts_with("-src-cluster-config config.yml: "), "{m}");
        let m = parse_err(&MINIMAL.replace(
            "BlobSigningKey: SIGNINGKEYsecret0123456789abcdefghijklmno",
            "BlobSigningKey: [SIGNINGKEYsecret0123456789abcdefghijklmno",
        ));
        assert!(m.contains("line"), "{m}");
        let m = parse_err(&MINIMAL.replace(
            "    Collections:\n",
            "    Collections:\n      BlobSigningTTL: 14d\n",
        ));
        assert!(
            m.contains("Clusters.zzzzz.Collections.BlobSigningTTL"),
            "{m}"
        );
        let two = format!("{MINIMAL}  yyyyy:\n    SystemRootToken: x\n");
        let m = parse_err(&two);
        assert!(m.contains("--src-cluster"), "{m}");
        let c = parse(&two, "c", Some("yyyyy"), "-f", "--src-cluster").unwrap();
        assert_eq!(c.id, "yyyyy");
        assert!(c.services(Via::Keepstore).is_err());
    }

    /// `defaultReplication: 3` is not Arvados' key: ignored (the default,
    /// 2) with a warning for the settings' warnings, as Arvados ignores it.
    #[test]
    fn wrongly_cased_keys_are_ignored_with_a_warning() {
        let c = parse_ok(&MINIMAL.replace(
            "    Collections:\n",
            "    Collections:\n      defaultReplication: 3\n      blobSigningTTL: 1h\n",
        ));
        assert_eq!((c.default_replication, c.ttl), (2, DEFAULT_TTL));
        let w = &c.settings.warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with(
                "-src-cluster-config config.yml: ignoring the config entry \
                 Clusters.zzzzz.Collections.defaultReplication (perhaps you meant \
                 DefaultReplication?)"
            ),
            "{w:?}"
        );
        assert!(w.iter().all(|w| !w.contains("secret0123")), "{w:?}");
        let m = parse_err(&MINIMAL.replace("Clusters:", "clusters:"));
        assert!(m.contains("clusters is not Clusters"), "{m}");
        let m = parse_err(&MINIMAL.replace("SystemRootToken:", "systemRootToken:"));
        assert!(
            m.contains("Clusters.zzzzz.SystemRootToken is missing"),
            "{m}"
        );
    }

    #[test]
    fn urls_with_credentials_are_refused_unshown_and_schemes_lowercased() {
        let m = parse_err(&MINIMAL.replace(
            "http://keep1.internal:25107",
            "http://admin:PASSWORDsecret0123@keep1.internal:25107",
        ));
        assert!(m.contains("user name or password"), "{m}");
        assert!(!m.contains("PASSWORD"), "{m}");
        let m = parse_err(&MINIMAL.replace(
            "http://keep1.internal:25107",
            "htps://admin:PASSWORDsecret0123@keep1.internal:25107",
        ));
        assert!(!m.contains("PASSWORD"), "{m}");
        let c = parse_ok(&MINIMAL.replace("http://keep1.internal", "HTTP://keep1.internal"));
        assert_eq!(c.keepstores.len(), 2);
    }

    #[test]
    fn service_urls_ipv6_default_ports_and_trailing_slashes() {
        let svc = |url: &str| service("zzzzz", url, None, "disk", false, "k");
        let hp = |url: &str| {
            let s = svc(url).unwrap();
            (s.host, s.port, s.ssl)
        };
        assert_eq!(hp("http://[::1]:25107/"), ("::1".into(), 25107, false));
        assert_eq!(hp("https://[::1]/"), ("::1".into(), 443, true));
        assert_eq!(hp("http://[fd00::2]/keep/"), ("fd00::2".into(), 80, false));
        assert_eq!(
            svc("http://[::1]:25107/").unwrap().url(),
            "http://[::1]:25107"
        );
        assert_eq!(
            hp("http://keep0.internal/"),
            ("keep0.internal".into(), 80, false)
        );
        assert_eq!(
            hp("https://keep0.internal:443/"),
            ("keep0.internal".into(), 443, true)
        );
        assert_eq!(
            hp("http://10.0.0.1:25107"),
            ("10.0.0.1".into(), 25107, false)
        );
        for bad in ["http://keep0:0/", "http://keep0:99999/", "http://keep0:x/"] {
            let m = svc(bad).unwrap_err();
            assert!(
                m.contains("k: the port is not a number from 1 to 65535"),
                "{bad}: {m}"
            );
        }
        assert!(svc("http:///").unwrap_err().contains("no host"));
        // The controller's URL is ARVADOS_API_HOST's HOST[:PORT].
        let c = parse_ok(&MINIMAL.replace("https://zzzzz.example.com", "https://[::1]:8443/"));
        assert_eq!(c.settings.api_host, "[::1]:8443");
        assert_eq!(parse_ok(MINIMAL).settings.api_host, "zzzzz.example.com");
    }

    #[test]
    fn read_only_keepstores_from_volumes() {
        let text = format!(
            "{MINIMAL}    Volumes:
      zzzzz-nyw5e-000000000000000:
        AccessViaHosts: {{\"http://keep0.internal:25107\": {{ReadOnly: true}}}}
        Driver: Directory
        DriverParameters: {{Root: /k}}
      zzzzz-nyw5e-000000000000001:
        AccessViaHosts: {{\"http://keep1.internal:25107/\": {{}}}}
        Driver: Directory
        DriverParameters: {{Root: /k}}
"
        );
        let c = parse_ok(&text);
        let ro = |suffix: &str| {
            c.keepstores
                .iter()
                .find(|s| s.uuid.ends_with(suffix))
                .unwrap()
                .read_only
        };
        assert!(ro("keep0"));
        let k1 = c
            .keepstores
            .iter()
            .find(|s| !s.uuid.ends_with("keep0"))
            .unwrap();
        assert!(!k1.read_only);
    }
}
