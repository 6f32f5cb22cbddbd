//! Keep services (docs/protocol.md, "Keep services" and "API server discovery"): which keepstores (or keepproxies) make up
//! each side, from a services list the admin gave (file, literal JSON or
//! stdin) or from the API server, plus the discovery-document defaults.
//!
//! Everything is validated here, before any index is requested: a list with
//! no services, a bad port or duplicate uuids is a configuration error (exit
//! 2); an API server that does not answer is an unreadable service (exit 3).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::Value;

use crate::role::Role;
use crate::store::{Ranking, Store};

use crate::error::{Error, Result};
use crate::protocol::client::{describe_http_error, Failure, OnRetry, Op};
use crate::settings::Settings;

pub use crate::protocol::KeepService;

/// Read the value of a `-*-keep-services-json` flag: JSON text when it starts
/// with `{`, stdin for `-`, otherwise a file path. Returns the text and a
/// description of where it came from, for messages.
pub fn read_services_arg(arg: &str, flag: &str) -> Result<(String, String)> {
    use crate::protocol::services::ServicesSource;
    match crate::protocol::services::read_services_arg(arg) {
        Ok((text, ServicesSource::Literal)) => Ok((text, format!("the JSON given to {flag}"))),
        Ok((text, ServicesSource::Stdin)) => {
            Ok((text, format!("the JSON read from stdin for {flag}")))
        }
        Ok((text, ServicesSource::File(path))) => Ok((text, format!("{path} (from {flag})"))),
        Err(e) if arg == "-" => Err(Error::config(format!(
            "cannot read the services list for {flag} from stdin: {e}"
        ))),
        Err(e) => Err(Error::config(format!(
            "cannot read the services list file {arg} given to {flag}: {e}. Pass a file \
             written by `arv --json keep_services accessible`, the JSON text itself, or - for \
             stdin."
        ))),
    }
}

/// Parse and validate a side's services list; `origin` names it in messages.
pub fn parse_services(text: &str, origin: &str, role: Role) -> Result<Vec<KeepService>> {
    crate::protocol::services::parse_services(text)
        .map_err(|why| Error::config(format!("the {role} services list in {origin} {why}")))
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
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Error::unreadable(format!(
            "the {role} API server at {url} refused the token in {} (HTTP {status}): put the \
             cluster's system root token there as ARVADOS_API_TOKEN, or {instead} so that the \
             API server is not needed.",
            settings.path.display(),
        )));
    }
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

/// Request accounting of one service, for the report and the metrics.
#[derive(Default)]
pub struct ServiceStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
    /// Every attempt by operation ([`Op`] order) and outcome class
    /// ([`STATUS_CLASSES`] order): `keep_rsync_requests_total`.
    pub answers: [[AtomicU64; STATUS_CLASSES.len()]; Op::ALL.len()],
    /// Retries by operation: `keep_rsync_retries_total`.
    pub retries: [AtomicU64; Op::ALL.len()],
}

/// How a request ended, as the metrics label it: the HTTP status class of
/// the answer, or `error` when there was no (complete) answer: refused,
/// timed out, a body that broke or failed verification.
pub const STATUS_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

fn status_class(outcome: Option<&Failure>) -> usize {
    match outcome.map(|f| f.status) {
        None => 0,
        Some(Some(300..=399)) => 1,
        Some(Some(400..=499)) => 2,
        Some(Some(500..)) => 3,
        Some(_) => 4,
    }
}

impl ServiceStats {
    /// Count one block request and its outcome (`bytes` moved when it
    /// succeeded).
    pub fn count<T>(&self, op: Op, r: &Result<T, Failure>, bytes: u64) {
        self.requests.fetch_add(1, Relaxed);
        match r {
            Ok(_) => self.bytes.fetch_add(bytes, Relaxed),
            Err(_) => self.errors.fetch_add(1, Relaxed),
        };
        self.answered(op, r.as_ref().err());
    }

    /// One attempt of `op` ended (`None`: it succeeded), for the metrics.
    pub fn answered(&self, op: Op, failure: Option<&Failure>) {
        self.answers[op as usize][status_class(failure)].fetch_add(1, Relaxed);
    }
}

/// One store of a side (a Keep service or a volume), with its state for the
/// run.
pub struct Service {
    pub store: Store,
    /// Requests in flight to it: adaptive up to `--max-per-service`, or that
    /// many with `--fixed-concurrency`.
    pub limit: Arc<crate::limiter::Limiter>,
    /// Found unreachable (while indexing, or dead mid-run): never asked
    /// again for the rest of the run.
    down: AtomicBool,
    /// Answered a PUT with 507 (all its volumes full): no more blocks are
    /// written to it for the rest of the run (it is still read from).
    full: AtomicBool,
    pub stats: ServiceStats,
}

impl Service {
    pub fn new(store: Store, max_requests: usize, adaptive: bool, role: Role) -> Service {
        let name = format!("{role} service {}", store.id());
        Service {
            store,
            limit: crate::limiter::Limiter::new(max_requests, adaptive, name),
            down: AtomicBool::new(false),
            full: AtomicBool::new(false),
            stats: ServiceStats::default(),
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    pub fn is_full(&self) -> bool {
        self.full.load(Relaxed)
    }

    /// Mark it full (a PUT got 507); `true` the first time (so it is said
    /// once).
    pub fn mark_full(&self) -> bool {
        !self.full.swap(true, Relaxed)
    }

    /// Mark it down; `true` the first time (so it is said once).
    pub fn mark_down(&self) -> bool {
        !self.down.swap(true, Relaxed)
    }

    /// [`mark_down`](Self::mark_down), and say so in the diagnostics (`-v`)
    /// the first time.
    pub fn mark_down_because(&self, role: Role, why: &str) -> bool {
        let first = self.mark_down();
        if first {
            tracing::info!(
                event = "service_down",
                side = role.as_str(),
                service = self.store.id(),
                reason = why,
                "{role} service {} marked down: {why}",
                self.store.label()
            );
        }
        first
    }
}

/// A request to one service as its retries see it (`with_retries`): which
/// side, service and operation, and the block (`HASH+SIZE`) if any. Each
/// retry is an `info` diagnostic (`-v`) with the failure, the attempt and
/// the backoff delay.
pub struct Asking<'a> {
    pub role: Role,
    pub service: &'a Service,
    pub op: Op,
    pub block: Option<(&'a crate::protocol::BlockHash, u32)>,
}

impl OnRetry for Asking<'_> {
    fn retrying(&self, f: &Failure, attempt: u32, attempts: u32, delay: std::time::Duration) {
        self.service.stats.retries[self.op as usize].fetch_add(1, Relaxed);
        let object = self.block.map(|(h, size)| format!("{h}+{size}"));
        tracing::info!(
            event = "retry",
            side = self.role.as_str(),
            service = self.service.store.id(),
            op = self.op.as_str(),
            object = object.as_deref(),
            status = f.status,
            error = %f,
            attempt,
            attempts,
            backoff_ms = delay.as_millis() as u64,
            "{}{} on {} service {}: attempt {attempt} of {attempts} failed ({f}); retrying in {:?}",
            self.op.as_str(),
            object.as_deref().map(|o| format!(" {o}")).unwrap_or_default(),
            self.role,
            self.service.store.id(),
            delay
        );
    }
}

/// One side of the copy, ready to use: its stores (built with the side's
/// pooled clients and credentials) and how they rank.
pub struct Side {
    pub role: Role,
    pub settings: Settings,
    pub services: Vec<Service>,
    /// Blob signature TTL used when signing locators for this side.
    pub ttl: u64,
    /// The rendezvous ranking of its stores.
    pub rank: Ranking,
    /// A refused request (401/403) was explained once ([`Side::refused`]).
    pub refused_said: AtomicBool,
}

impl Side {
    /// A block request to store `i` of this side was refused (HTTP
    /// 401/403): the first time, what to fix ([`Store::refused_advice`]), since a
    /// rerun fails the same way until it is fixed. `None` for any other
    /// failure and after the first time.
    pub fn refused(&self, i: usize, f: &Failure) -> Option<String> {
        if f.kind != crate::protocol::client::FailureKind::Denied
            || self.refused_said.swap(true, Relaxed)
        {
            return None;
        }
        Some(format!(
            "{} Blocks refused this way fail again on every rerun until that is fixed.",
            self.services[i].store.refused_advice(self.role, f)
        ))
    }

    /// Replicas each store's listing counts for (see [`Store::credit`]).
    pub fn credits(&self, want: u32) -> Vec<u32> {
        self.services.iter().map(|s| s.store.credit(want)).collect()
    }

    /// Whether this side is volumes rather than Keep services.
    pub fn is_volumes(&self) -> bool {
        self.services
            .first()
            .is_some_and(|s| s.store.order() == crate::store::Order::Mounts)
    }

    /// `id (url)` of service `i`.
    pub fn label(&self, i: usize) -> String {
        self.services[i].store.label()
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
}
