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
use crate::store::{Part, Ranking, Store};

use crate::error::{Error, Result};
use crate::protocol::client::{describe_http_error, Failure, OnRetry, Op};
use crate::settings::Settings;

pub use crate::protocol::KeepService;

/// The longest services list read (a file, stdin, or an API server's
/// answer), in bytes: 16 MiB. A list is held whole while it is parsed, so
/// an endless or runaway input must not take all memory; a real list is a
/// few hundred bytes per keep service (`arv --json keep_services
/// accessible` of a cluster with 1000 keepstores is under 1 MiB), and the
/// discovery document, read the same way, is far smaller than 16 MiB.
pub const SERVICES_MAX: usize = 16 << 20;

/// Read the value of a `-*-keep-services-json` flag: JSON text when it starts
/// with `{`, stdin for `-`, otherwise a file path. Returns the text and a
/// description of where it came from, for messages.
pub fn read_services_arg(arg: &str, flag: &str) -> Result<(String, String)> {
    read_services_arg_capped(arg, flag, SERVICES_MAX)
}

/// [`read_services_arg`] reading at most `max` bytes of a file or stdin
/// (more is exit 2, naming the file and the line where it passed `max`).
fn read_services_arg_capped(arg: &str, flag: &str, max: usize) -> Result<(String, String)> {
    use std::io::Read;
    if arg.trim_start().starts_with('{') {
        return Ok((arg.to_string(), format!("the JSON given to {flag}")));
    }
    let (origin, read) = if arg == "-" {
        let mut buf = Vec::new();
        let r = std::io::stdin()
            .lock()
            .take(max as u64 + 1)
            .read_to_end(&mut buf);
        (
            format!("the JSON read from stdin for {flag}"),
            r.map(|_| buf),
        )
    } else {
        let mut buf = Vec::new();
        let r = std::fs::File::open(arg).and_then(|f| f.take(max as u64 + 1).read_to_end(&mut buf));
        (format!("{arg} (from {flag})"), r.map(|_| buf))
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) if arg == "-" => {
            return Err(Error::config(format!(
                "cannot read the services list for {flag} from stdin: {e}"
            )))
        }
        Err(e) => {
            return Err(Error::config(format!(
                "cannot read the services list file {arg} given to {flag}: {e}. Pass a file \
                 written by `arv --json keep_services accessible`, the JSON text itself, or - \
                 for stdin."
            )))
        }
    };
    if bytes.len() > max {
        let line = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(Error::config(format!(
            "the services list in {origin} is longer than {} (line {line} is past it): a \
             services list is a few hundred bytes per keep service. Pass the file written by \
             `arv --json keep_services accessible`.",
            crate::console::human_bytes(max as u64)
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::config(format!(
            "the services list in {origin} is not UTF-8 text (at byte {}): it must be JSON.",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok((text, origin))
}

/// An HTTP answer's body, at most `max` bytes (`Err` says why not, for a
/// message naming the server).
async fn body_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> std::result::Result<Vec<u8>, String> {
    let over = || {
        format!(
            "the answer is longer than {}, more than any services list or discovery document",
            crate::console::human_bytes(max as u64)
        )
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(over());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe_http_error(&e))? {
        if body.len() + chunk.len() > max {
            return Err(over());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parse and validate a side's services list; `origin` names it in messages.
pub fn parse_services(text: &str, origin: &str, role: Role) -> Result<Vec<KeepService>> {
    crate::protocol::services::parse_services(text)
        .map_err(|why| Error::config(format!("the {role} services list in {origin} {why}")))
}

/// The warning for a side whose keep services have uuids the Python SDK
/// weighs otherwise than keep-rsync and the Go SDK (not 27 characters, as an
/// API server derives them from a URL; docs/protocol.md, "Rendezvous
/// order"), naming one of them; `None` when every client agrees.
pub fn uuid_order_warning<'a>(
    role: Role,
    services: impl IntoIterator<Item = &'a KeepService>,
) -> Option<String> {
    let services: Vec<&KeepService> = services.into_iter().collect();
    let odd: Vec<&&KeepService> = (services.iter())
        .filter(|s| !crate::protocol::python_sdk_agrees(&s.uuid))
        .collect();
    let first = odd.first()?;
    let count = match (odd.len(), services.len()) {
        (1, 1) => "its service has".to_string(),
        (n, all) if n == all => format!("all {n} of its services have"),
        (1, all) => format!("1 of its {all} services has"),
        (n, all) => format!("{n} of its {all} services have"),
    };
    Some(format!(
        "the {} ({count} a uuid that is not 27 characters long, e.g. {}): keep-rsync \
         and Go clients weigh such a uuid whole in rendezvous order, but Python SDK \
         clients weigh its last 15 characters, so they probe in another order (extra \
         requests to find blocks, no data lost). A 15-character Rendezvous on each \
         keepstore in the cluster config (Services.Keepstore.InternalURLs) makes them \
         agree; setting it moves where keep-balance wants blocks.",
        role.cluster(),
        first.label()
    ))
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
    let body = body_capped(resp, SERVICES_MAX).await.map_err(unreadable)?;
    serde_json::from_slice::<Value>(&body)
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
    /// What its indexes listed (index lines, directory entries, or bucket
    /// keys, those that are not blocks included) and the blocks those
    /// gave, over every pass.
    pub index_listed: AtomicU64,
    pub index_blocks: AtomicU64,
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
    /// What is indexed: each store whole, or each mount of a keepstore that
    /// serves `/mounts` ([`Side::plan_listings`]). Plans and the copy count
    /// destination copies per listing.
    pub listings: Vec<Listing>,
}

/// One index listing of a side: a store's [`Part`] (the whole store, or one
/// mount), asked of service `service`.
#[derive(Clone, Debug)]
pub struct Listing {
    pub service: u16,
    pub part: Part,
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

    /// Replicas each listing counts for ([`Store::part_credit`]).
    pub fn credits(&self, want: u32) -> Vec<u32> {
        (self.listings.iter())
            .map(|l| {
                self.services[l.service as usize]
                    .store
                    .part_credit(&l.part, want)
            })
            .collect()
    }

    /// Copies each listing stands for, read-only or not (keep-block-check).
    pub fn replicas_held(&self) -> Vec<u32> {
        (self.listings.iter())
            .map(|l| self.services[l.service as usize].store.part_held(&l.part))
            .collect()
    }

    /// The classes of the copies each listing lists (`None`: not known).
    pub fn listing_classes(&self) -> impl Iterator<Item = Option<&[String]>> {
        self.listings.iter().map(|l| l.part.classes.as_deref())
    }

    /// (Re)build [`Side::listings`] from its stores' parts. A volume that
    /// several keepstores mount (the same mount uuid) is listed once, through
    /// a keepstore that can write it when there is one, so its copies count
    /// once, as keep-balance counts them.
    pub fn plan_listings(&mut self) {
        let mut out: Vec<Listing> = Vec::new();
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        for (i, s) in self.services.iter().enumerate() {
            for part in s.store.parts() {
                if let Some(m) = &part.mount {
                    if let Some(&k) = seen.get(m) {
                        if !out[k].part.writable && part.writable {
                            out[k] = Listing {
                                service: i as u16,
                                part,
                            };
                        }
                        continue;
                    }
                    seen.insert(m.clone(), out.len());
                }
                out.push(Listing {
                    service: i as u16,
                    part,
                });
            }
        }
        self.listings = out;
    }

    /// The services of `listings` (indices into [`Side::listings`]),
    /// ascending, each once.
    pub fn services_of(&self, listings: &[u16]) -> Vec<u16> {
        let mut v: Vec<u16> = (listings.iter())
            .map(|&l| self.listings[l as usize].service)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
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

/// How [`discover_mounts`] asks: `--checkers` at a time, with `--retries`.
#[derive(Clone, Copy)]
pub struct MountsAsk {
    pub checkers: usize,
    pub retries: u32,
    pub backoff: crate::protocol::client::Backoff,
}

/// Ask each keepstore of `side` what it mounts (`GET /mounts`, with the
/// side's token, `--checkers` at a time), so that its index is read one
/// mount at a time and each copy counts in its own volume's classes and
/// `Replication`, and a write here may confirm any class one of its writable
/// mounts has. A keepstore that answers 404 predates `/mounts`: its whole
/// index is read, with the classes a cluster config gave it. Any other
/// failure leaves it to the index requests, which tell it properly (a
/// refused token, a service down).
pub async fn discover_mounts(side: &mut Side, ask: MountsAsk) {
    use futures::StreamExt;
    let asks: Vec<usize> = (side.services.iter().enumerate())
        .filter(|(_, s)| {
            matches!(&s.store, Store::Keep(k) if !k.service.is_proxy() && !k.service.is_gateway())
        })
        .map(|(i, _)| i)
        .collect();
    if asks.is_empty() {
        return;
    }
    let role = side.role;
    let answers: Vec<(usize, Option<Vec<crate::protocol::Mount>>)> = {
        let services = &side.services;
        futures::stream::iter(asks)
            .map(|i| async move {
                let svc = &services[i];
                let Store::Keep(k) = &svc.store else {
                    return (i, None);
                };
                let asking = Asking {
                    role,
                    service: svc,
                    op: Op::Index,
                    block: None,
                };
                let r = crate::protocol::client::with_retries(
                    ask.backoff,
                    ask.retries,
                    &asking,
                    |_| k.fetch_mounts(),
                )
                .await;
                let mounts = match r {
                    // A keepstore with no volume does not start; an empty
                    // list says nothing to go by.
                    Ok(Some(m)) if !m.is_empty() => Some(m),
                    Ok(Some(_)) => None,
                    Ok(None) => {
                        tracing::info!(
                            event = "mounts",
                            side = role.as_str(),
                            service = svc.store.id(),
                            "{role} service {} has no /mounts (404): its whole index is read",
                            svc.store.label()
                        );
                        None
                    }
                    Err((f, _)) => {
                        tracing::info!(
                            event = "mounts",
                            side = role.as_str(),
                            service = svc.store.id(),
                            error = %f,
                            "{role} service {}: GET /mounts failed ({f}): its whole index is read",
                            svc.store.label()
                        );
                        None
                    }
                };
                (i, mounts)
            })
            .buffer_unordered(ask.checkers.max(1))
            .collect()
            .await
    };
    for (i, mounts) in answers {
        if let (Some(m), Store::Keep(k)) = (mounts, &mut side.services[i].store) {
            tracing::info!(
                event = "mounts",
                side = role.as_str(),
                service = k.service.uuid.as_str(),
                mounts = m.len(),
                "{role} service {}: {} mounts",
                k.service.uuid,
                m.len()
            );
            k.set_mounts(m);
        }
    }
    side.plan_listings();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A destination side of keepstores on ports 1.. mounting `mounts[i]`
    /// (as their `GET /mounts` said: `served`, or a cluster config's view).
    fn keep_side(mounts: Vec<Vec<crate::protocol::Mount>>, served: bool) -> Side {
        use crate::store::{KeepStore, Signer};
        let opts = crate::protocol::client::ClientOptions {
            connect_timeout: std::time::Duration::from_secs(1),
            stall_timeout: std::time::Duration::from_secs(1),
            insecure: false,
            pool_per_host: 1,
        };
        let client = crate::protocol::client::KeepClient::new("t", &opts).unwrap();
        let signer = Arc::new(Signer {
            key: None,
            token: "t".into(),
            ttl: 1,
            source: crate::store::keep::TokenSource {
                path: "/etc/arvados/config.yml".into(),
                cluster_config: true,
            },
        });
        let services: Vec<Service> = (mounts.into_iter().enumerate())
            .map(|(i, m)| {
                let svc = KeepService {
                    uuid: format!("zzzzz-bi6l4-{i:015x}"),
                    host: "127.0.0.1".into(),
                    port: 1 + i as u16,
                    ssl: false,
                    service_type: "disk".into(),
                    read_only: false,
                    mounts: None,
                    mounts_served: false,
                };
                let mut k = KeepStore::new(svc, client.clone(), signer.clone());
                if served {
                    k.set_mounts(m);
                } else {
                    k.service.mounts = Some(m);
                    k = KeepStore::new(k.service.clone(), client.clone(), signer.clone());
                }
                Service::new(Store::Keep(k), 8, false, Role::Destination)
            })
            .collect();
        let mut side = Side {
            role: Role::Destination,
            settings: Settings::default(),
            rank: Ranking::new(services.iter().map(|s| &s.store)),
            services,
            ttl: 1,
            refused_said: Default::default(),
            listings: Vec::new(),
        };
        side.plan_listings();
        side
    }

    fn mount(
        uuid: &str,
        writable: bool,
        replication: u32,
        classes: &[&str],
    ) -> crate::protocol::Mount {
        crate::protocol::Mount {
            uuid: uuid.into(),
            writable,
            replication,
            classes: classes.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// Served mounts: one listing each, with its own classes and
    /// replication; a volume two keepstores mount is listed once, through
    /// the keepstore that can write it; a keepstore with no writable mount
    /// is read-only and its copies count for nothing.
    #[test]
    fn listings_per_mount() {
        let side = keep_side(
            vec![
                vec![
                    mount("zzzzz-nyw5e-a", true, 1, &["default"]),
                    mount("zzzzz-nyw5e-shared", false, 2, &["archive"]),
                ],
                vec![mount("zzzzz-nyw5e-shared", true, 2, &["archive"])],
                vec![mount("zzzzz-nyw5e-old", false, 3, &["default"])],
            ],
            true,
        );
        let got: Vec<(u16, Option<&str>)> = (side.listings.iter())
            .map(|l| (l.service, l.part.mount.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (0, Some("zzzzz-nyw5e-a")),
                (1, Some("zzzzz-nyw5e-shared")),
                (2, Some("zzzzz-nyw5e-old"))
            ]
        );
        assert_eq!(side.credits(2), [1, 2, 0]);
        assert_eq!(side.replicas_held(), [1, 2, 3]);
        assert!(side.services[2].store.read_only());
        let classes: Vec<Option<&[String]>> = side.listing_classes().collect();
        assert_eq!(classes[1].unwrap(), ["archive"]);
        assert_eq!(side.services_of(&[2, 0, 0]), [0, 2]);
        // Keepstore 0 may confirm archive only through keepstore 1's
        // writable mount, not its own read-only one.
        assert!(side.services[0].store.may_confirm(Some("default")));
        assert!(!side.services[0].store.may_confirm(Some("archive")));
        assert!(side.services[1].store.may_confirm(Some("archive")));
    }

    /// A cluster config's view (no /mounts): one whole listing per
    /// keepstore, its copies in the classes every volume has; writes may
    /// confirm any class of a writable volume.
    #[test]
    fn config_mounts_list_whole() {
        let side = keep_side(
            vec![vec![
                mount("zzzzz-nyw5e-a", true, 1, &["default", "fast"]),
                mount("zzzzz-nyw5e-b", true, 2, &["default", "archive"]),
            ]],
            false,
        );
        assert_eq!(side.listings.len(), 1);
        assert_eq!(side.listings[0].part.mount, None);
        assert_eq!(
            side.listings[0].part.classes.as_deref().unwrap(),
            ["default"]
        );
        assert_eq!(side.credits(2), [1]);
        assert!(side.services[0].store.may_confirm(Some("archive,fast")));
        assert!(!side.services[0].store.may_confirm(Some("cold")));
    }

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

    /// A services file or API answer over the cap is refused (with a cap
    /// of 1000 B here; [`SERVICES_MAX`] in use): the file by name and line
    /// (exit 2), the answer before more of it is read.
    #[tokio::test]
    async fn services_lists_longer_than_the_cap_are_refused() {
        let list = format!(
            "{{\"items\": [\n{}\n]}}\n",
            vec![item("zzzzz-bi6l4-000000000000000", "25107"); 20].join(",\n")
        );
        assert!(list.len() > 1000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, &list).unwrap();
        let arg = path.display().to_string();
        let (text, _) = read_services_arg_capped(&arg, "-src-keep-services-json", 1 << 20).unwrap();
        assert_eq!(text, list);
        let e = read_services_arg_capped(&arg, "-src-keep-services-json", 1000).unwrap_err();
        let m = e.to_string();
        assert_eq!(e.exit_code(), 2);
        let line = list[..1001].matches('\n').count() + 1;
        assert!(
            m.contains(&format!(
                "{arg} (from -src-keep-services-json) is longer than 1000 B (line {line} is past \
                 it)"
            )),
            "{m}"
        );

        // An answer of 64 KiB, chunked (no Content-Length), then one with
        // a Content-Length.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for chunked in [true, false, true] {
                let (mut c, _) = l.accept().await.unwrap();
                let mut req = [0u8; 4096];
                let _ = c.read(&mut req).await;
                let body = vec![b' '; 64 << 10];
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
                } else {
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                };
                let _ = c.write_all(head.as_bytes()).await;
                if chunked {
                    for part in body.chunks(4096) {
                        let _ = c
                            .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                            .await;
                        let _ = c.write_all(part).await;
                        let _ = c.write_all(b"\r\n").await;
                    }
                    let _ = c.write_all(b"0\r\n\r\n").await;
                } else {
                    let _ = c.write_all(&body).await;
                }
            }
        });
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/");
        for _ in 0..2 {
            let resp = http.get(&url).send().await.unwrap();
            let why = body_capped(resp, 1000).await.unwrap_err();
            assert!(why.contains("longer than 1000 B"), "{why}");
        }
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(body_capped(resp, 1 << 20).await.unwrap().len(), 64 << 10);
    }

    /// Any uuid is taken; one the Python SDK weighs otherwise (not 27
    /// characters) draws the side's one warning, naming it.
    #[test]
    fn other_uuid_lengths_weighed_whole_with_a_warning() {
        let rails = "zzzzz-bi6l4-d57e530a86591bfe";
        let t = format!(
            r#"{{"items":[{},{},{}]}}"#,
            item("zzzzz-bi6l4-000000000000000", "1"),
            item(rails, "2"),
            item("zzzzz-bi6l4-0123456789abcdef", "3")
        );
        let s = parse_services(&t, "t", Role::Destination).unwrap();
        assert_eq!(s[1].weight_suffix(), rails);
        let w = uuid_order_warning(Role::Destination, &s).unwrap();
        assert!(
            w.starts_with("the destination cluster (2 of its 3 services have"),
            "{w}"
        );
        assert!(w.contains(&format!("{rails} (http://127.0.0.1:2)")), "{w}");
        assert!(
            w.contains("last 15 characters") && w.contains("Rendezvous"),
            "{w}"
        );
        assert!(!w.contains("  ") && !w.contains('\n'), "{w}");
        assert_eq!(uuid_order_warning(Role::Destination, &s[..1]), None);
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
                &format!(r#"{{"items":[{}]}}"#, item("", "1")),
                "item 0 without a \"uuid\"",
            ),
        ];
        for (text, want) in cases {
            let e = parse_services(text, "f.json", Role::Source).err().unwrap();
            assert!(e.to_string().contains(want), "{text}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
    }
}
