//! The Keep API of one simulated keepstore (docs/protocol.md, "Keepstore HTTP API"), served with hyper:
//! `GET/HEAD /LOCATOR`, `PUT /HASH`, `GET /index[/PREFIX]`, plus the private
//! `/_sim/...` endpoints, with faults injected as `faults.rs` decides.
//!
//! It also owns the listener life cycle: a service can be stopped (listener
//! and connections closed: "connection refused" from then on) and restarted
//! on the same port with the same store.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use super::faults::{FaultDecision, FaultOp, Faults};
use super::load::{hold, Admission, Limiter};
use super::store::{now_ns, Store};
use super::synthetic::SyntheticIndex;
use super::{CounterSnapshot, HashCounters};
use keep_protocol::{
    self as protocol, sign_locator, token_from_auth_header, verify_signature, BlockHash, Locator,
    SignatureError, EMPTY_BLOCK_HASH, MAX_BLOCK_SIZE,
};

/// Response body type: whole buffers, or streams that may fail mid-way.
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Returned by the service to make hyper close the connection unanswered.
#[derive(Debug)]
pub(crate) struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for Dropped {}

/// Settings every service of a cluster shares.
pub(crate) struct Shared {
    pub root_token: String,
    pub signing_key: Option<String>,
    pub enforce_signatures: bool,
    pub ttl: u64,
    pub n: usize,
    pub synthetic: Option<SyntheticIndex>,
    /// Storage classes every service of the cluster offers.
    pub storage_classes: Vec<String>,
    /// The services are keepproxies: a PUT reports the desired replicas.
    pub proxy: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    gets: AtomicU64,
    heads: AtomicU64,
    puts: AtomicU64,
    puts_stored: AtomicU64,
    puts_aborted: AtomicU64,
    index_requests: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    faults_injected: AtomicU64,
    refused: AtomicU64,
    queued: AtomicU64,
    per_hash: Mutex<BTreeMap<BlockHash, HashCounters>>,
}

/// A running listener: the slot the accept loop polls, and the token that
/// ends the accept loop and every connection.
struct Running {
    slot: Arc<Mutex<Option<TcpListener>>>,
    token: CancellationToken,
}

/// One simulated keepstore.
pub(crate) struct Svc {
    pub index: usize,
    pub uuid: String,
    pub read_only: bool,
    /// The storage classes this keepstore confirms (its volumes' classes).
    pub classes: Vec<String>,
    pub addr: SocketAddr,
    /// Mount 0's store (where the helpers that name no mount put blocks).
    pub store: Arc<Store>,
    /// The volumes it mounts, mount 0 first (`GET /mounts`).
    pub mounts: Vec<SimMount>,
    /// Serve `/mounts` (a keepstore from before it answers 404).
    pub serve_mounts: bool,
    pub shared: Arc<Shared>,
    faults: Mutex<Faults>,
    attempts: Mutex<HashMap<(FaultOp, BlockHash), u64>>,
    counters: Counters,
    /// `max_concurrent` and friends; counts the requests in flight.
    limiter: Arc<Limiter>,
    run: Mutex<Option<Running>>,
    /// While paused: the port, bound but not listening (see `pause`).
    parked: Mutex<Option<TcpSocket>>,
}

/// One volume of a simulated keepstore: its own store, classes and
/// replication, as keepstore's `GET /mounts` lists them.
pub(crate) struct SimMount {
    pub uuid: String,
    pub store: Arc<Store>,
    pub classes: Vec<String>,
    pub replication: u32,
    pub writable: bool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Svc {
    pub fn new(
        index: usize,
        uuid: String,
        read_only: bool,
        addr: SocketAddr,
        store: Store,
        shared: Arc<Shared>,
        faults: Faults,
    ) -> Svc {
        let limiter = Arc::new(Limiter::default());
        limiter.configure(faults.max_concurrent, faults.max_queued);
        let store = Arc::new(store);
        Svc {
            index,
            uuid,
            read_only,
            classes: shared.storage_classes.clone(),
            addr,
            mounts: vec![SimMount {
                uuid: String::new(),
                store: store.clone(),
                classes: shared.storage_classes.clone(),
                replication: 1,
                writable: !read_only,
            }],
            serve_mounts: true,
            store,
            shared,
            faults: Mutex::new(faults),
            attempts: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            limiter,
            run: Mutex::new(None),
            parked: Mutex::new(None),
        }
    }

    /// The mount holding `h` (the first in mount order), if any.
    pub fn mount_with(&self, h: &BlockHash) -> Option<&SimMount> {
        self.mount_order(h, false)
            .into_iter()
            .map(|m| &self.mounts[m])
            .find(|m| m.store.contains(h))
    }

    /// Mount indices in keepstore's order for `h` (ascending
    /// `md5(HASH + uuid suffix)`); only the writable ones with `writable`.
    pub fn mount_order(&self, h: &BlockHash, writable: bool) -> Vec<usize> {
        let suffixes: Vec<&str> = (self.mounts.iter())
            .map(|m| protocol::mount_weight_suffix(&m.uuid))
            .collect();
        let among: Vec<u16> = (0..self.mounts.len() as u16)
            .filter(|&m| !writable || self.mounts[m as usize].writable)
            .collect();
        let mut out = Vec::new();
        protocol::mount_order_among(h, &suffixes, &[], &among, &mut out);
        out.into_iter().map(usize::from).collect()
    }

    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Replace the faults; attempt numbers start again from 0.
    pub fn set_faults(&self, f: Faults) {
        self.limiter.configure(f.max_concurrent, f.max_queued);
        *lock(&self.faults) = f;
        lock(&self.attempts).clear();
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let c = &self.counters;
        CounterSnapshot {
            gets: c.gets.load(Ordering::Relaxed),
            heads: c.heads.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            puts_stored: c.puts_stored.load(Ordering::Relaxed),
            puts_aborted: c.puts_aborted.load(Ordering::Relaxed),
            index_requests: c.index_requests.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            faults_injected: c.faults_injected.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            in_flight: self.limiter.in_flight() as u64,
            waiting: self.limiter.waiting() as u64,
            max_in_flight: self.limiter.peak() as u64,
            per_hash: lock(&c.per_hash).clone(),
        }
    }

    pub fn reset_counters(&self) {
        let c = &self.counters;
        for a in [
            &c.gets,
            &c.heads,
            &c.puts,
            &c.puts_stored,
            &c.puts_aborted,
            &c.index_requests,
            &c.bytes_sent,
            &c.bytes_received,
            &c.faults_injected,
            &c.refused,
            &c.queued,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        self.limiter.reset_peak();
        lock(&c.per_hash).clear();
    }

    pub fn hash_counters(&self, h: &BlockHash) -> HashCounters {
        lock(&self.counters.per_hash)
            .get(h)
            .cloned()
            .unwrap_or_default()
    }

    /// Start answering a Keep request: decide its faults (from this
    /// request's attempt number), wait the added latency (PUTs wait it
    /// later, once their body is in: see `write_block`), and drop the
    /// connection if that is the decision. `in_flight`: requests in flight
    /// when this one was admitted (for `queue_latency_us`).
    async fn begin(
        &self,
        faults: &Faults,
        op: FaultOp,
        h: &BlockHash,
        in_flight: usize,
    ) -> Result<FaultDecision, Dropped> {
        let d = faults.decide(self.index, op, h, self.next_attempt(op, h));
        if op != FaultOp::Put {
            latency(faults, in_flight).await;
        }
        if d.drop {
            self.injected();
            return Err(Dropped);
        }
        Ok(d)
    }

    fn next_attempt(&self, op: FaultOp, h: &BlockHash) -> u64 {
        let mut a = lock(&self.attempts);
        let n = a.entry((op, *h)).or_insert(0);
        let cur = *n;
        *n += 1;
        cur
    }

    /// Count a GET (`get`) or HEAD of `h`.
    fn count_read(&self, get: bool, h: &BlockHash) {
        if get {
            self.counters.gets.fetch_add(1, Ordering::Relaxed);
            self.count_hash(h, false);
        } else {
            self.counters.heads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count a PUT of `h`.
    fn count_put(&self, h: &BlockHash) {
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.count_hash(h, true);
    }

    fn count_hash(&self, h: &BlockHash, put: bool) {
        let mut m = lock(&self.counters.per_hash);
        let e = m.entry(*h).or_default();
        if put {
            e.puts += 1;
        } else {
            e.gets += 1;
        }
    }

    fn injected(&self) {
        self.counters
            .faults_injected
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Start serving on `listener` (replacing nothing: call `stop` first).
    pub fn serve(self: &Arc<Self>, listener: TcpListener) {
        let slot = Arc::new(Mutex::new(Some(listener)));
        let token = CancellationToken::new();
        *lock(&self.run) = Some(Running {
            slot: slot.clone(),
            token: token.clone(),
        });
        tokio::spawn(accept_loop(self.clone(), slot, token));
    }

    /// Close the listener now (synchronously: new connections are refused
    /// as soon as this returns) and end every open connection.
    pub fn stop(&self) {
        if let Some(run) = lock(&self.run).take() {
            run.token.cancel();
            drop(lock(&run.slot).take());
        }
    }

    /// `stop`, but keep the port: bind it again at once without listening,
    /// so that connecting is still refused, yet no other socket (another
    /// test's `bind(0)`, an outgoing connection) can take the port before
    /// `resume` listens on it again. Best effort: if the bind fails,
    /// `resume` binds anew.
    pub fn pause(&self) {
        self.stop();
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let parked = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(self.addr)?;
            Ok(s)
        });
        *lock(&self.parked) = parked.ok();
    }

    /// Serve again on the same address: listen on the socket `pause` kept,
    /// or bind the address anew.
    pub async fn resume(self: &Arc<Self>) -> std::io::Result<()> {
        let parked = lock(&self.parked).take();
        self.stop();
        let listener = match parked {
            Some(s) => s.listen(1024)?,
            None => TcpListener::bind(self.addr).await?,
        };
        self.serve(listener);
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        lock(&self.run).is_some()
    }
}

async fn accept_loop(
    svc: Arc<Svc>,
    slot: Arc<Mutex<Option<TcpListener>>>,
    token: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => break,
            r = poll_fn(|cx| match lock(&slot).as_ref() {
                None => Poll::Ready(None),
                Some(l) => l.poll_accept(cx).map(Some),
            }) => r,
        };
        let stream = match accepted {
            None => break,
            Some(Ok((stream, _))) => stream,
            Some(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let s2 = svc.clone();
            let service = hyper::service::service_fn(move |req| handle(s2.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = token.cancelled() => {}
            }
        });
    }
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn status_text(code: u16) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let msg = match code {
        503 => "volume unavailable (injected fault)",
        _ => "internal error (injected fault)",
    };
    text(status, msg)
}

fn request_token(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token_from_auth_header)
        .map(str::to_string)
}

fn unix_now() -> u64 {
    now_ns() / 1_000_000_000
}

/// What a Keep request asks for (from its method and path).
enum Route {
    /// `GET|HEAD /index[/PREFIX]`: the part after `/index`.
    Index(String),
    /// `GET /mounts`.
    Mounts,
    /// `GET /mounts/UUID/blocks[/PREFIX]`: the uuid and the part after
    /// `/blocks`.
    MountIndex(String, String),
    /// `GET|HEAD /LOCATOR` (also `//LOCATOR`).
    Read {
        loc: String,
        get: bool,
    },
    /// `PUT /LOCATOR`.
    Write(String),
    Options,
    Other,
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        if method == Method::OPTIONS {
            return Route::Options;
        }
        let is_read = method == Method::GET || method == Method::HEAD;
        if is_read && (path == "/index" || path.starts_with("/index/")) {
            return Route::Index(path.strip_prefix("/index").unwrap_or("").to_string());
        }
        if is_read && path == "/mounts" {
            return Route::Mounts;
        }
        if let Some(rest) = path.strip_prefix("/mounts/").filter(|_| is_read) {
            if let Some((uuid, tail)) = rest.split_once("/blocks") {
                return Route::MountIndex(uuid.to_string(), tail.to_string());
            }
            return Route::Other;
        }
        // keepstore also accepts `//LOCATOR` on reads.
        let loc = path
            .strip_prefix("//")
            .or_else(|| path.strip_prefix('/'))
            .unwrap_or("")
            .to_string();
        if is_read {
            Route::Read {
                loc,
                get: method == Method::GET,
            }
        } else if method == Method::PUT {
            Route::Write(loc)
        } else {
            Route::Other
        }
    }
}

/// Entry point for every request on a Keep service.
///
/// Every Keep request (not `/_sim/...`) passes the service's limiter first,
/// as every keepstore request passes `httpserver.RequestLimiter`, and holds
/// its slot until its answer's body is sent.
pub(crate) async fn handle(
    svc: Arc<Svc>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        let rest = rest.to_string();
        return Ok(private(&svc, req, &rest).await);
    }
    let route = Route::of(req.method(), &path);
    let queue_timeout = Duration::from_millis(svc.faults().queue_timeout_ms);
    let permit = match svc.limiter.admit(queue_timeout).await {
        Admission::Admitted { permit, queued } => {
            if queued {
                svc.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            permit
        }
        Admission::Refused => return refuse(&svc, req, route).await,
    };
    let n = permit.in_flight();
    let resp = match route {
        Route::Options => text(StatusCode::OK, ""),
        Route::Index(tail) => index(svc, req, None, tail, n).await?,
        Route::MountIndex(uuid, tail) => index(svc, req, Some(uuid), tail, n).await?,
        Route::Mounts => mounts(&svc, &req),
        Route::Read { loc, .. } => read_block(svc, req, loc, n).await?,
        Route::Write(loc) => write_block(svc, req, loc, n).await?,
        Route::Other => text(StatusCode::BAD_REQUEST, "Bad Request"),
    };
    Ok(resp.map(|body| hold(body, permit)))
}

/// Answer a request the limiter refused: 503 with an empty body, as
/// keepstore's limiter answers. It is counted as its kind of request would
/// be, and in `refused`; it waits `latency_ms` (not the queue latency: it
/// took no slot), a PUT after its body is drained.
async fn refuse(
    svc: &Svc,
    req: Request<Incoming>,
    route: Route,
) -> Result<Response<Body>, Dropped> {
    let faults = svc.faults();
    svc.counters.refused.fetch_add(1, Ordering::Relaxed);
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    match route {
        Route::Index(_) | Route::MountIndex(..) => {
            svc.counters.index_requests.fetch_add(1, Ordering::Relaxed);
        }
        Route::Read { loc, get } => {
            if let Ok(l) = loc.parse::<Locator>() {
                svc.count_read(get, &l.hash);
            }
        }
        Route::Write(loc) => {
            if let Ok(l) = loc.parse::<Locator>() {
                svc.count_put(&l.hash);
            }
            return early_answer(req, resp, &faults, 0).await;
        }
        Route::Options | Route::Mounts | Route::Other => {}
    }
    latency(&faults, 0).await;
    Ok(resp)
}

/// Wait `latency_ms`, plus `queue_latency_us` per request in flight.
async fn latency(f: &Faults, in_flight: usize) {
    let d = f.delay(in_flight);
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

async fn read_block(
    svc: Arc<Svc>,
    req: Request<Incoming>,
    loc_text: String,
    in_flight: usize,
) -> Result<Response<Body>, Dropped> {
    let is_get = req.method() == Method::GET;
    let faults = svc.faults();
    let loc: Locator = match loc_text.parse() {
        Ok(l) => l,
        Err(e) => {
            latency(&faults, in_flight).await;
            return Ok(text(
                StatusCode::BAD_REQUEST,
                &format!("invalid locator: {e}"),
            ));
        }
    };
    let h = loc.hash;
    let op = if is_get { FaultOp::Get } else { FaultOp::Head };
    svc.count_read(is_get, &h);
    let d = svc.begin(&faults, op, &h, in_flight).await?;
    let Some(token) = request_token(&req) else {
        return Ok(text(
            StatusCode::UNAUTHORIZED,
            "no token provided in Authorization header",
        ));
    };
    if let Some(code) = d.fail {
        svc.injected();
        return Ok(status_text(code));
    }
    if is_get && loc.size.is_none() && h.to_hex() != EMPTY_BLOCK_HASH {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed (GET without a size hint)",
        ));
    }
    if svc.shared.enforce_signatures {
        if let Some(key) = &svc.shared.signing_key {
            match verify_signature(&loc, key, &token, svc.shared.ttl, unix_now()) {
                Ok(()) => {}
                Err(SignatureError::Expired) => {
                    return Ok(text(StatusCode::FORBIDDEN, "expired signature"));
                }
                Err(_) => return Ok(text(StatusCode::FORBIDDEN, "invalid signature")),
            }
        }
    }
    let store = svc
        .mount_with(&h)
        .map_or_else(|| svc.store.clone(), |m| m.store.clone());
    let got = if store.is_dir() {
        tokio::task::spawn_blocking(move || store.get_data(&h))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    } else {
        store.get_data(&h)
    };
    let data = match got {
        Ok(Some(d)) => d,
        // A synthetic block has no data, but this service lists it: a HEAD
        // answers as for a stored block (docs/keepstore-sim.md).
        Ok(None) if !is_get => match synthetic_size(&svc, &h) {
            Some(size) => {
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_LENGTH, size)
                    .body(full(Bytes::new()))
                    .unwrap_or_else(|_| text(StatusCode::OK, "")))
            }
            None => return Ok(text(StatusCode::NOT_FOUND, "Not Found")),
        },
        Ok(None) => return Ok(text(StatusCode::NOT_FOUND, "Not Found")),
        Err(e) => {
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("read error: {e}"),
            ))
        }
    };
    let len = data.len() as usize;
    let mut resp_builder = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_LENGTH, len)
        .header(CONTENT_TYPE, "application/octet-stream");
    if let Some(h) = resp_builder.headers_mut() {
        h.insert("vary", HeaderValue::from_static("X-Keep-Signature"));
    }
    if !is_get {
        // hyper sends no body for HEAD but keeps our Content-Length.
        return Ok(resp_builder
            .body(full(Bytes::new()))
            .unwrap_or_else(|_| text(StatusCode::OK, "")));
    }
    let plain = !d.truncate && !d.corrupt && faults.stall_ms == 0 && faults.link_rate == 0;
    let data = match data.chunks() {
        // The bytes as they are held (a shared head and a tail: no copy).
        Some(chunks) if plain => {
            svc.counters
                .bytes_sent
                .fetch_add(len as u64, Ordering::Relaxed);
            let frames = chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Frame::data(c)));
            let body = StreamBody::new(futures::stream::iter(frames)).boxed_unsync();
            return Ok(resp_builder
                .body(body)
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response")));
        }
        _ => match data.to_bytes() {
            Some(b) => b,
            None => return Ok(text(StatusCode::NOT_FOUND, "Not Found (data discarded)")),
        },
    };
    let cut = (len as u64 * d.position_permille as u64 / 1000) as usize;
    let body: Body = if d.truncate && len > 0 {
        svc.injected();
        let cut = cut.min(len - 1);
        svc.counters
            .bytes_sent
            .fetch_add(cut as u64, Ordering::Relaxed);
        // Headers and the first part go out (hyper flushes while the body
        // is pending), then the body fails and hyper closes the connection.
        let first =
            futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(data.slice(..cut)))]);
        let fail = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(std::io::Error::other("body truncated by fault injection"))
        });
        StreamBody::new(first.chain(fail)).boxed_unsync()
    } else {
        let data = if d.corrupt && len > 0 {
            svc.injected();
            let mut v = data.to_vec();
            let i = cut.min(len - 1);
            v[i] ^= 0x01;
            Bytes::from(v)
        } else {
            data
        };
        svc.counters
            .bytes_sent
            .fetch_add(len as u64, Ordering::Relaxed);
        if faults.stall_ms > 0 && len > 1 {
            let stall = Duration::from_millis(faults.stall_ms);
            let (a, b) = (data.slice(..len / 2), data.slice(len / 2..));
            let first = futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(a))]);
            let second = futures::stream::once(async move {
                tokio::time::sleep(stall).await;
                Ok(Frame::data(b))
            });
            StreamBody::new(first.chain(second)).boxed_unsync()
        } else if faults.link_rate > 0 {
            paced(data, faults.link_rate)
        } else {
            full(data)
        }
    };
    Ok(resp_builder
        .body(body)
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response")))
}

/// The size of `h` if it is a synthetic block this service's index lists.
fn synthetic_size(svc: &Svc, h: &BlockHash) -> Option<u64> {
    let syn = svc.shared.synthetic.as_ref()?;
    let i = syn.lookup(h)?;
    (syn.present(i) && syn.held_by(i, svc.index, svc.shared.n)).then(|| syn.size(i))
}

/// A body sent at `rate` bytes per second, in 64 KiB frames.
fn paced(data: Bytes, rate: u64) -> Body {
    const FRAME: usize = 64 << 10;
    let start = tokio::time::Instant::now();
    let frames = (0..data.len().div_ceil(FRAME)).map(move |i| {
        let end = ((i + 1) * FRAME).min(data.len());
        (data.slice(i * FRAME..end), end as u64)
    });
    let stream = futures::stream::iter(frames).then(move |(frame, sent)| async move {
        tokio::time::sleep_until(start + Duration::from_secs_f64(sent as f64 / rate as f64)).await;
        Ok::<_, std::io::Error>(Frame::data(frame))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// Read a request body of at most `limit` bytes, at most `rate` bytes per
/// second (0 = unpaced).
async fn read_paced(body: Incoming, limit: usize, rate: u64) -> Result<Bytes, String> {
    if rate == 0 {
        return Limited::new(body, limit)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string());
    }
    let start = tokio::time::Instant::now();
    let mut body = body;
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > limit {
                return Err("length limit exceeded".into());
            }
            let due = Duration::from_secs_f64(out.len() as f64 / rate as f64);
            tokio::time::sleep_until(start + due).await;
        }
    }
    Ok(out.freeze())
}

/// Read and discard a request body we answer early, so that a client still
/// sending it sees our answer rather than a reset connection. Skipped when
/// the client waits for `100 Continue` (then it has sent nothing).
async fn drain(req: Request<Incoming>) {
    if req.headers().get(EXPECT).is_some() {
        return;
    }
    let _ = Limited::new(req.into_body(), (MAX_BLOCK_SIZE + (16 << 20)) as usize)
        .collect()
        .await;
}

/// Answer a PUT without storing: read its body first, then wait the
/// latency, as for any PUT answer. `in_flight`: see `begin`.
async fn early_answer(
    req: Request<Incoming>,
    resp: Response<Body>,
    faults: &Faults,
    in_flight: usize,
) -> Result<Response<Body>, Dropped> {
    drain(req).await;
    latency(faults, in_flight).await;
    Ok(resp)
}

async fn write_block(
    svc: Arc<Svc>,
    req: Request<Incoming>,
    loc_text: String,
    in_flight: usize,
) -> Result<Response<Body>, Dropped> {
    let faults = svc.faults();
    let loc: Locator = match loc_text.parse() {
        Ok(l) => l,
        Err(e) => {
            latency(&faults, in_flight).await;
            drain(req).await;
            return Ok(text(
                StatusCode::BAD_REQUEST,
                &format!("invalid locator: {e}"),
            ));
        }
    };
    let h = loc.hash;
    svc.count_put(&h);
    let d = svc.begin(&faults, FaultOp::Put, &h, in_flight).await?;
    let Some(token) = request_token(&req) else {
        return early_answer(
            req,
            text(
                StatusCode::UNAUTHORIZED,
                "no token provided in Authorization header",
            ),
            &faults,
            in_flight,
        )
        .await;
    };
    if let Some(code) = d.fail {
        svc.injected();
        return early_answer(req, status_text(code), &faults, in_flight).await;
    }
    let clen = match req
        .headers()
        .get(CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()))
    {
        None => {
            return early_answer(
                req,
                text(StatusCode::LENGTH_REQUIRED, "missing Content-Length"),
                &faults,
                in_flight,
            )
            .await
        }
        Some(None) => {
            return early_answer(
                req,
                text(StatusCode::BAD_REQUEST, "bad Content-Length"),
                &faults,
                in_flight,
            )
            .await
        }
        Some(Some(n)) => n,
    };
    if clen > MAX_BLOCK_SIZE {
        return early_answer(
            req,
            text(StatusCode::PAYLOAD_TOO_LARGE, "request entity too large"),
            &faults,
            in_flight,
        )
        .await;
    }
    // A keepproxy fans a PUT out to its keepstores and reports them all.
    let replicas = if svc.shared.proxy {
        req.headers()
            .get(protocol::HDR_DESIRED_REPLICAS)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok())
            .unwrap_or(2)
            .clamp(1, 16)
    } else {
        1
    };
    let asked: Vec<String> = (req.headers().get(protocol::HDR_STORAGE_CLASSES))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    // keepstore writes only to mounts of a class asked; with none of them
    // writable, no write is tried and it answers as if all were full.
    let writable = svc.mount_order(&h, true);
    let no_class = !asked.is_empty()
        && !writable
            .iter()
            .any(|&m| svc.mounts[m].classes.iter().any(|c| asked.contains(c)));
    if faults.full || svc.read_only || no_class || writable.is_empty() {
        if faults.full {
            svc.injected();
        }
        return early_answer(
            req,
            text(StatusCode::INSUFFICIENT_STORAGE, "insufficient storage"),
            &faults,
            in_flight,
        )
        .await;
    }
    let body = match read_paced(
        req.into_body(),
        MAX_BLOCK_SIZE as usize + 1,
        faults.link_rate,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            // The client gave up mid-body (a streamed write whose read
            // failed): nothing is stored, as keepstore stores nothing of a
            // body it could not read whole.
            svc.counters.puts_aborted.fetch_add(1, Ordering::Relaxed);
            return Ok(text(
                StatusCode::BAD_REQUEST,
                &format!("reading request body: {e}"),
            ));
        }
    };
    svc.counters
        .bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    if body.len() as u64 != clen || loc.size.is_some_and(|s| s != clen) {
        return Ok(text(StatusCode::BAD_REQUEST, "length mismatch in request"));
    }
    if BlockHash::of(&body) != h {
        return Ok(text(StatusCode::BAD_REQUEST, "hash mismatch in request"));
    }
    let mut progress = PutProgress::new(&asked);
    // Copies already there count (keepstore touches them), then writes go
    // to the wanted mounts in order until every class asked has a copy.
    for &m in &writable {
        let mnt = &svc.mounts[m];
        if progress.wants(mnt) && mnt.store.holds_intact(&h) {
            progress.add(mnt);
        }
    }
    for &m in &writable {
        let mnt = &svc.mounts[m];
        if progress.done() {
            break;
        }
        if !progress.wants(mnt) {
            continue;
        }
        let store = mnt.store.clone();
        let data = body.clone();
        let put = if store.is_dir() {
            tokio::task::spawn_blocking(move || store.put(&h, data))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        } else {
            store.put(&h, data)
        };
        if let Err(e) = put {
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("write error: {e}"),
            ));
        }
        progress.add(mnt);
    }
    svc.counters.puts_stored.fetch_add(1, Ordering::Relaxed);
    let replicas = if svc.shared.proxy {
        replicas
    } else {
        progress.total
    };
    let confirmed = progress.confirmed();
    // The answer leaves a latency after the body's last byte arrived: a
    // client cannot hide it by starting the PUT early (streaming), just as
    // over a real network.
    latency(&faults, in_flight).await;
    let plain = Locator::new(h, clen);
    let locator = match &svc.shared.signing_key {
        Some(key) => sign_locator(
            &plain,
            key,
            &token,
            unix_now() + svc.shared.ttl,
            svc.shared.ttl,
        ),
        None => plain.to_string(),
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(protocol::HDR_REPLICAS_STORED, replicas)
        .header(protocol::HDR_STORAGE_CLASSES_CONFIRMED, confirmed)
        .body(full(format!("{locator}\n")))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response")))
}

/// What a PUT has stored so far, as keepstore's `putProgress` counts it:
/// replicas in all, and per class; done once every class asked (any class
/// when none was) has a copy.
struct PutProgress {
    todo: Vec<String>,
    total: u32,
    per_class: BTreeMap<String, u32>,
    used: Vec<String>,
}

impl PutProgress {
    fn new(asked: &[String]) -> PutProgress {
        PutProgress {
            todo: asked.to_vec(),
            total: 0,
            per_class: BTreeMap::new(),
            used: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.todo.is_empty() && self.total > 0
    }

    fn wants(&self, m: &SimMount) -> bool {
        !self.done()
            && !self.used.contains(&m.uuid)
            && (self.todo.is_empty() || m.classes.iter().any(|c| self.todo.contains(c)))
    }

    fn add(&mut self, m: &SimMount) {
        self.used.push(m.uuid.clone());
        self.total += m.replication;
        for c in &m.classes {
            *self.per_class.entry(c.clone()).or_default() += m.replication;
            self.todo.retain(|t| t != c);
        }
    }

    /// `X-Keep-Storage-Classes-Confirmed`: `class=N, class=M`.
    fn confirmed(&self) -> String {
        (self.per_class.iter())
            .map(|(c, n)| format!("{c}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `GET /mounts` (root token only): the mounts as keepstore lists them.
fn mounts(svc: &Svc, req: &Request<Incoming>) -> Response<Body> {
    if !svc.serve_mounts {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    if let Some(refusal) = require_root(svc, req) {
        return refusal;
    }
    let list: Vec<serde_json::Value> = (svc.mounts.iter())
        .map(|m| {
            let classes: serde_json::Map<String, serde_json::Value> = (m.classes.iter())
                .map(|c| (c.clone(), serde_json::Value::Bool(true)))
                .collect();
            serde_json::json!({
                "uuid": m.uuid,
                "device_id": format!("sim:{}", m.uuid),
                "allow_write": m.writable,
                "allow_trash": m.writable,
                "replication": m.replication,
                "storage_classes": classes,
            })
        })
        .collect();
    json(StatusCode::OK, &list)
}

/// `None` when `req` carries the root token, else the refusal (401 without
/// a token, 403 with another one).
fn require_root(svc: &Svc, req: &Request<Incoming>) -> Option<Response<Body>> {
    match request_token(req) {
        None => Some(text(
            StatusCode::UNAUTHORIZED,
            "no token provided in Authorization header",
        )),
        Some(t) if t == svc.shared.root_token => None,
        Some(_) => Some(text(StatusCode::FORBIDDEN, "Forbidden")),
    }
}

const MALFORMED_LINE: &[u8] = b"this-is-not-a-locator+12 1600000000000000000\n";

async fn index(
    svc: Arc<Svc>,
    req: Request<Incoming>,
    mount: Option<String>,
    tail: String,
    in_flight: usize,
) -> Result<Response<Body>, Dropped> {
    let faults = svc.faults();
    svc.counters.index_requests.fetch_add(1, Ordering::Relaxed);
    let query_prefix = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("prefix="))
            .filter(|p| !p.is_empty())
            .map(str::to_string)
    });
    let prefix = match query_prefix {
        Some(p) => p,
        None => tail.strip_prefix('/').unwrap_or(&tail).to_string(),
    };
    let key = BlockHash::of(prefix.as_bytes());
    let d = svc.begin(&faults, FaultOp::Index, &key, in_flight).await?;
    if let Some(refusal) = require_root(&svc, &req) {
        return Ok(refusal);
    }
    if !tail.is_empty() && !tail.starts_with('/') || !protocol::is_valid_prefix(&prefix) {
        return Ok(text(StatusCode::BAD_REQUEST, "Bad Request"));
    }
    if let Some(code) = d.fail {
        svc.injected();
        return Ok(status_text(code));
    }
    // One mount's index, or every mount's in turn (as keepstore lists them).
    let (stores, first_mount): (Vec<Arc<Store>>, bool) = match &mount {
        None => (svc.mounts.iter().map(|m| m.store.clone()).collect(), true),
        Some(uuid) => match svc.mounts.iter().position(|m| &m.uuid == uuid) {
            Some(k) if svc.serve_mounts => (vec![svc.mounts[k].store.clone()], k == 0),
            _ => return Ok(text(StatusCode::NOT_FOUND, "Not Found")),
        },
    };
    let p2 = if faults.index_ignores_prefix {
        svc.injected();
        String::new()
    } else {
        prefix.clone()
    };
    let list_all = move || -> std::io::Result<Vec<super::store::Entry>> {
        let mut all = Vec::new();
        for st in &stores {
            all.extend(st.list(&p2)?);
        }
        Ok(all)
    };
    let listed = if svc.store.is_dir() {
        tokio::task::spawn_blocking(list_all)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    } else {
        list_all()
    };
    let entries = match listed {
        Ok(e) => e,
        Err(e) => {
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("index error: {e}"),
            ))
        }
    };
    // Stored blocks, in ~64 KiB chunks.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut buf = String::new();
    for e in &entries {
        use std::fmt::Write;
        let _ = writeln!(buf, "{}+{} {}", e.hash, e.size, e.mtime_ns);
        if buf.len() >= 64 << 10 {
            chunks.push(Bytes::from(std::mem::take(&mut buf)));
        }
    }
    if !buf.is_empty() {
        chunks.push(Bytes::from(buf));
    }
    if faults.index_malformed {
        svc.injected();
        chunks.insert(0, Bytes::from_static(MALFORMED_LINE));
    }
    // Synthetic entries are mount 0's.
    let synthetic = (svc.shared.synthetic.as_ref())
        .filter(|_| first_mount)
        .map(|s| s.chunks(svc.index, svc.shared.n, &prefix));
    let tail_chunk = if faults.index_incomplete {
        svc.injected();
        None
    } else {
        Some(Bytes::from_static(b"\n"))
    };
    let counter = svc.clone();
    let stream = futures::stream::iter(
        chunks
            .into_iter()
            .chain(synthetic.into_iter().flatten())
            .chain(tail_chunk),
    )
    .map(move |b| {
        counter
            .counters
            .bytes_sent
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(Frame::data(b))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(StreamBody::new(stream).boxed_unsync())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response")))
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `/_sim/counters` (GET), `/_sim/faults` (GET, PUT), `/_sim/reset-counters`
/// (POST or PUT). All need the root token; none is counted or faulted.
async fn private(svc: &Svc, req: Request<Incoming>, what: &str) -> Response<Body> {
    if let Some(refusal) = require_root(svc, &req) {
        return refusal;
    }
    match (req.method().clone(), what) {
        (Method::GET, "counters") => json(StatusCode::OK, &svc.snapshot()),
        (Method::GET, "faults") => json(StatusCode::OK, &svc.faults()),
        (Method::PUT, "faults") | (Method::POST, "faults") => {
            let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("reading body: {e}")),
            };
            match serde_json::from_slice::<Faults>(&body) {
                Ok(f) => {
                    svc.set_faults(f);
                    json(StatusCode::OK, &svc.faults())
                }
                Err(e) => text(StatusCode::BAD_REQUEST, &format!("bad Faults JSON: {e}")),
            }
        }
        (Method::PUT, "reset-counters") | (Method::POST, "reset-counters") => {
            svc.reset_counters();
            text(StatusCode::OK, "ok")
        }
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}
