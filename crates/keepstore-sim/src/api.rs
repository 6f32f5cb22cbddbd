//! A minimal HTTPS stand-in for the Arvados API server (docs/protocol.md, "Keep services" and
//! "API server discovery"), for
//! clients that discover Keep services and the discovery document the way
//! real tools do: `GET /arvados/v1/keep_services/accessible` and
//! `GET /discovery/v1/apis/arvados/v1/rest`, over TLS with a self-signed
//! certificate generated at start (SAN 127.0.0.1 and localhost).
//!
//! Requests to both endpoints are counted, so tests can check that a client
//! fetches the discovery document only when it needs it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use keep_protocol::token_from_auth_header;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// What the stub serves.
pub(crate) struct ApiState {
    pub root_token: String,
    pub services_json: serde_json::Value,
    pub discovery: serde_json::Value,
    pub accessible_requests: AtomicU64,
    pub discovery_requests: AtomicU64,
}

/// A running stub; dropping it does not stop it, `stop` does.
pub(crate) struct ApiServer {
    pub addr: SocketAddr,
    pub state: Arc<ApiState>,
    token: CancellationToken,
}

/// The discovery document: the fields clients read plus a realistic frame.
pub(crate) fn discovery_doc(
    host: &str,
    uuid_prefix: &str,
    replication: u32,
    ttl: u64,
) -> serde_json::Value {
    serde_json::json!({
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "arvados:v1",
        "name": "arvados",
        "version": "v1",
        "revision": "20240101",
        "title": "Arvados API (keepstore-sim stub)",
        "protocol": "rest",
        "rootUrl": format!("https://{host}/"),
        "servicePath": "arvados/v1/",
        "basePath": "/arvados/v1/",
        "batchPath": "batch",
        "uuidPrefix": uuid_prefix,
        "defaultCollectionReplication": replication,
        "blobSignatureTtl": ttl,
        "maxRequestSize": 134217728,
        "parameters": {},
        "resources": {},
        "schemas": {},
    })
}

fn tls_acceptor() -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(std::io::Error::other)?;
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.key_pair.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(std::io::Error::other)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

impl ApiServer {
    /// Bind `listen:0` and serve until `stop`. `make_state` gets the bound
    /// address (for `rootUrl`).
    pub async fn start(
        listen: std::net::IpAddr,
        make_state: impl FnOnce(SocketAddr) -> ApiState,
    ) -> std::io::Result<ApiServer> {
        let acceptor = tls_acceptor()?;
        let listener = TcpListener::bind((listen, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(make_state(addr));
        let token = CancellationToken::new();
        let (st, tk) = (state.clone(), token.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = tk.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                };
                let (acceptor, st, tk) = (acceptor.clone(), st.clone(), tk.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(route(&st, req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = tk.cancelled() => {}
                    }
                });
            }
        });
        Ok(ApiServer { addr, state, token })
    }

    pub fn stop(&self) {
        self.token.cancel();
    }
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "errors": [msg], "error_token": "keepstore-sim" }),
    )
}

fn route(st: &ApiState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if req.method() != hyper::Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match path {
        "/discovery/v1/apis/arvados/v1/rest" => {
            st.discovery_requests.fetch_add(1, Ordering::Relaxed);
            json(StatusCode::OK, &st.discovery)
        }
        "/arvados/v1/keep_services/accessible" => {
            st.accessible_requests.fetch_add(1, Ordering::Relaxed);
            let token = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(token_from_auth_header);
            match token {
                None => error(StatusCode::UNAUTHORIZED, "Not logged in"),
                Some(t) if t == st.root_token => json(StatusCode::OK, &st.services_json),
                Some(_) => error(StatusCode::UNAUTHORIZED, "Not logged in (invalid token)"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Path not found"),
    }
}
