//! Keep services (docs/protocol.md, "Keep services" and "API server discovery"): which keepstores (or keepproxies) make up
//! each side, from a services list the admin gave (file, literal JSON or
//! stdin) or from the API server, plus the discovery-document defaults.
//!
//! Everything is validated here, before any index is requested: a list with
//! no services, a bad port or duplicate uuids is a configuration error (exit
//! 2); an API server that does not answer is an unreadable service (exit 3).

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::endpoint::Endpoint;
use crate::role::Role;

use crate::error::{Error, Result};
use crate::protocol::client::describe_http_error;
use crate::protocol::uuid_weight_suffix;
use crate::settings::Settings;

/// One Keep service, as listed in `keep_services/accessible`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepService {
    pub uuid: String,
    pub host: String,
    pub port: u16,
    pub ssl: bool,
    /// `disk`, `proxy`, or `gateway:…`.
    pub service_type: String,
    pub read_only: bool,
}

impl KeepService {
    /// Root URL: `http|https://HOST:PORT`, IPv6 hosts in brackets.
    pub fn url(&self) -> String {
        let scheme = if self.ssl { "https" } else { "http" };
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// The part of the uuid that rendezvous hashing weighs.
    pub fn weight_suffix(&self) -> &str {
        uuid_weight_suffix(&self.uuid).unwrap_or(&self.uuid)
    }

    /// A keepproxy stores several replicas per write and lists several
    /// keepstores' blocks in its index.
    pub fn is_proxy(&self) -> bool {
        self.service_type == "proxy"
    }

    /// Gateways are only used when a locator names them: never indexed,
    /// never written.
    pub fn is_gateway(&self) -> bool {
        self.service_type.starts_with("gateway")
    }

    /// Whether blocks may be written here.
    pub fn writable(&self) -> bool {
        !self.read_only && !self.is_gateway()
    }

    /// `uuid (url)`, the way messages name a service.
    pub fn label(&self) -> String {
        format!("{} ({})", self.uuid, self.url())
    }
}

/// Read the value of a `-*-keep-services-json` flag: JSON text when it starts
/// with `{`, stdin for `-`, otherwise a file path. Returns the text and a
/// description of where it came from, for messages.
pub fn read_services_arg(arg: &str, flag: &str) -> Result<(String, String)> {
    let trimmed = arg.trim_start();
    if trimmed.starts_with('{') {
        return Ok((arg.to_string(), format!("the JSON given to {flag}")));
    }
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| {
            Error::config(format!(
                "cannot read the services list for {flag} from stdin: {e}"
            ))
        })?;
        return Ok((s, format!("the JSON read from stdin for {flag}")));
    }
    let text = std::fs::read_to_string(arg).map_err(|e| {
        Error::config(format!(
            "cannot read the services list file {arg} given to {flag}: {e}. Pass a file \
             written by `arv --json keep_services accessible`, the JSON text itself, or - for \
             stdin."
        ))
    })?;
    Ok((text, format!("{arg} (from {flag})")))
}

/// Parse and validate a services list (docs/protocol.md, "Keep services"). `origin` names it
/// in messages.
pub fn parse_services(text: &str, origin: &str, role: Role) -> Result<Vec<KeepService>> {
    let bad = |why: String| Error::config(format!("the {role} services list in {origin} {why}"));
    let v: Value = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "is not valid JSON ({e}). It should look like {{\"items\": [{{\"uuid\": …, \
             \"service_host\": …, \"service_port\": …, \"service_ssl_flag\": false, \
             \"service_type\": \"disk\"}}]}}, as `arv --json keep_services accessible` prints."
        ))
    })?;
    let items = v.get("items").and_then(Value::as_array).ok_or_else(|| {
        bad("has no \"items\" array: it must be a keep service list as `arv --json keep_services accessible` prints.".into())
    })?;
    let mut out: Vec<KeepService> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| item.get(name);
        let uuid = field("uuid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let at = if uuid.is_empty() {
            format!("item {i}")
        } else {
            format!("item {i} ({uuid})")
        };
        if uuid.is_empty() {
            return Err(bad(format!("has {at} without a \"uuid\".")));
        }
        if uuid_weight_suffix(&uuid).is_none() {
            return Err(bad(format!(
                "has {at} whose uuid is not 27 characters (like zzzzz-bi6l4-000000000000000): \
                 rendezvous order would differ between Arvados clients, so fix the uuid."
            )));
        }
        let host = field("service_host")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if host.is_empty() {
            return Err(bad(format!("has {at} without a \"service_host\".")));
        }
        let port = match field("service_port") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            _ => None,
        };
        let port = match port {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            _ => {
                return Err(bad(format!(
                    "has {at} with a bad \"service_port\" ({}): it must be a number from 1 to \
                     65535.",
                    field("service_port")
                        .map(|p| p.to_string())
                        .unwrap_or("missing".into())
                )))
            }
        };
        let ssl = field("service_ssl_flag")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let service_type = field("service_type")
            .and_then(Value::as_str)
            .unwrap_or("disk")
            .to_string();
        let read_only = field("read_only").and_then(Value::as_bool).unwrap_or(false);
        let svc = KeepService {
            uuid,
            host,
            port,
            ssl,
            service_type,
            read_only,
        };
        if let Some(prev) = out.iter().find(|s| s.uuid == svc.uuid) {
            return Err(bad(format!(
                "lists uuid {} twice ({} and {}): each service needs its own uuid.",
                svc.uuid,
                prev.url(),
                svc.url()
            )));
        }
        // Two items with the same URL are one service (docs/protocol.md, "Keep services").
        if out.iter().any(|s| s.url() == svc.url()) {
            continue;
        }
        out.push(svc);
    }
    if !out.iter().any(|s| !s.is_gateway()) {
        return Err(bad(
            "lists no keepstore or keepproxy services: check that it is the right cluster's list."
                .into(),
        ));
    }
    Ok(out)
}

/// The API server's answers that keep-rsync uses.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub default_replication: Option<u32>,
    pub blob_signature_ttl: Option<u64>,
}

/// An HTTPS client for one side's API server.
pub fn api_client(
    settings: &Settings,
    connect_timeout: std::time::Duration,
) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(settings.insecure)
        .connect_timeout(connect_timeout)
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(|e| Error::config(format!("cannot set up an HTTPS client: {e}")))
}

async fn api_get(
    http: &reqwest::Client,
    settings: &Settings,
    role: Role,
    path: &str,
    instead: &str,
) -> Result<Value> {
    let url = format!("https://{}{}", settings.api_host, path);
    let unreadable = |why: String| {
        let hint = if why.contains("certificate") || why.contains("Certificate") {
            " If the API server uses a self-signed certificate, set ARVADOS_API_HOST_INSECURE=1 in the settings file."
        } else {
            ""
        };
        Error::unreadable(format!(
            "cannot read {url} (the {role} API server named in {}): {why}.{hint} Check \
             ARVADOS_API_HOST, or {instead} so that the API server is not needed.",
            settings.path.display(),
        ))
    };
    let resp = http
        .get(&url)
        .header(
            "Authorization",
            crate::protocol::auth_header(&settings.api_token),
        )
        .send()
        .await
        .map_err(|e| unreadable(describe_http_error(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(unreadable(format!("HTTP {status}")));
    }
    let text = resp
        .text()
        .await
        .map_err(|e| unreadable(describe_http_error(&e)))?;
    serde_json::from_str::<Value>(&text)
        .map_err(|e| unreadable(format!("the answer is not JSON ({e})")))
}

/// `GET /arvados/v1/keep_services/accessible` on the side's API server.
pub async fn fetch_accessible(
    http: &reqwest::Client,
    settings: &Settings,
    role: Role,
) -> Result<Vec<KeepService>> {
    let instead = format!("give the {role} services with {}", role.services_flag());
    let v = api_get(
        http,
        settings,
        role,
        "/arvados/v1/keep_services/accessible",
        &instead,
    )
    .await?;
    let origin = format!(
        "https://{}/arvados/v1/keep_services/accessible",
        settings.api_host
    );
    parse_services(&v.to_string(), &origin, role)
}

/// The discovery document's `defaultCollectionReplication` and `blobSignatureTtl`.
/// `needed_for` names the flag that would make the document unnecessary.
pub async fn fetch_discovery(
    http: &reqwest::Client,
    settings: &Settings,
    role: Role,
    needed_for: &str,
) -> Result<Discovery> {
    let instead = format!("pass {needed_for}");
    let v = api_get(
        http,
        settings,
        role,
        "/discovery/v1/apis/arvados/v1/rest",
        &instead,
    )
    .await?;
    Ok(Discovery {
        default_replication: v
            .get("defaultCollectionReplication")
            .and_then(Value::as_u64)
            .map(|n| n as u32),
        blob_signature_ttl: v.get("blobSignatureTtl").and_then(Value::as_u64),
    })
}

/// Request accounting of one service, for the report.
#[derive(Default)]
pub struct ServiceStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
}

impl ServiceStats {
    /// Count one request and its outcome (`bytes` moved when it succeeded).
    pub fn count<T, E>(&self, r: &Result<T, E>, bytes: u64) {
        self.requests.fetch_add(1, Relaxed);
        match r {
            Ok(_) => self.bytes.fetch_add(bytes, Relaxed),
            Err(_) => self.errors.fetch_add(1, Relaxed),
        };
    }
}

/// One service of a side, with its state for the run.
pub struct Service {
    pub endpoint: Endpoint,
    /// `--max-per-service` requests in flight to it.
    pub limit: Arc<Semaphore>,
    /// Found unreachable (while indexing, or dead mid-run): never asked
    /// again for the rest of the run.
    down: AtomicBool,
    pub stats: ServiceStats,
}

impl Service {
    pub fn new(endpoint: Endpoint, max_requests: usize) -> Service {
        Service {
            endpoint,
            limit: Arc::new(Semaphore::new(max_requests.max(1))),
            down: AtomicBool::new(false),
            stats: ServiceStats::default(),
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    /// Mark it down; `true` the first time (so it is said once).
    pub fn mark_down(&self) -> bool {
        !self.down.swap(true, Relaxed)
    }
}

/// One side of the copy, ready to use: its services, credentials and pooled
/// client.
pub struct Side {
    pub role: Role,
    pub settings: Settings,
    pub services: Vec<Service>,
    pub client: crate::protocol::client::KeepClient,
    /// Blob signature TTL used when signing locators for this side.
    pub ttl: u64,
}

impl Side {
    /// The locator to GET a block with: signed with this side's blob signing
    /// key when it has one (expiry one day from now, as the Go tool does).
    pub fn get_locator(&self, hash: &crate::protocol::BlockHash, size: u64) -> String {
        let loc = crate::protocol::Locator::new(*hash, size);
        match &self.settings.blob_signing_key {
            Some(key) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let expiry = now + 86400;
                crate::protocol::sign_locator(&loc, key, &self.settings.api_token, expiry, self.ttl)
            }
            None => loc.unsigned(),
        }
    }

    /// Weighed id parts, in service order, for probe orders.
    pub fn suffixes(&self) -> Vec<&str> {
        self.services
            .iter()
            .map(|s| s.endpoint.weight_suffix())
            .collect()
    }

    /// `id (url)` of service `i`.
    pub fn label(&self, i: usize) -> String {
        self.services[i].endpoint.label()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(uuid: &str, port: &str) -> String {
        format!(
            r#"{{"uuid":"{uuid}","service_host":"127.0.0.1","service_port":{port},"service_ssl_flag":false,"service_type":"disk","read_only":false,"href":"/x"}}"#
        )
    }

    #[test]
    fn parses_and_ignores_extras() {
        let t = format!(
            r#"{{"kind":"arvados#keepServiceList","items":[{},{}]}}"#,
            item("zzzzz-bi6l4-000000000000000", "25107"),
            item("zzzzz-bi6l4-000000000000001", "25108")
        );
        let s = parse_services(&t, "t", Role::Source).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].url(), "http://127.0.0.1:25108");
        assert_eq!(s[0].weight_suffix(), "000000000000000");
    }

    #[test]
    fn rejects_bad_lists() {
        let cases = [
            ("not json", "not valid JSON"),
            (r#"{"items":[]}"#, "no keepstore"),
            (r#"{"kind":"x"}"#, "no \"items\""),
            (
                &format!(
                    r#"{{"items":[{}]}}"#,
                    item("zzzzz-bi6l4-000000000000000", "0")
                ),
                "service_port",
            ),
            (
                &format!(
                    r#"{{"items":[{}]}}"#,
                    item("zzzzz-bi6l4-000000000000000", "70000")
                ),
                "service_port",
            ),
            (
                &format!(
                    r#"{{"items":[{},{}]}}"#,
                    item("zzzzz-bi6l4-000000000000000", "1"),
                    item("zzzzz-bi6l4-000000000000000", "2")
                ),
                "twice",
            ),
            (
                &format!(r#"{{"items":[{}]}}"#, item("zzzzz-bi6l4-0", "1")),
                "27 characters",
            ),
        ];
        for (text, want) in cases {
            let e = parse_services(text, "f.json", Role::Source).err().unwrap();
            assert!(e.to_string().contains(want), "{text}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn ipv6_url() {
        let s = KeepService {
            uuid: "u".into(),
            host: "::1".into(),
            port: 1,
            ssl: true,
            service_type: "disk".into(),
            read_only: false,
        };
        assert_eq!(s.url(), "https://[::1]:1");
    }
}
