//! `--metrics-addr`: a minimal HTTP/1 responder for `GET /metrics` on a
//! tokio `TcpListener`.
//!
//! Hand-written on purpose: keep-rsync links no HTTP server code (hyper's
//! and hyper-util's `server` features stay off in `cargo tree -e
//! normal,features -p keep-rsync`; only the simulator crate, a
//! dev-dependency, has them), and a scrape endpoint needs little: read the
//! request head (at most 8 KiB, within 10 s), answer `GET` or `HEAD` of
//! `/metrics` with 200 and the metrics, any other path with 404 and any
//! other method with 405, then close the connection. No keep-alive, no
//! request body, no chunked encoding: Prometheus scrapes work with exactly
//! this.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head read.
const MAX_HEAD: usize = 8192;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a scrape gets: the metrics text, rendered per request.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Answer connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, render: Render) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let render = render.clone();
                tokio::spawn(async move { respond(sock, &render).await });
            }
            // Out of file descriptors, say: wait a little, go on.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn respond(mut sock: TcpStream, render: &Render) {
    let Ok(Some(head)) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut sock))
        .await
        .unwrap_or(Ok(None))
    else {
        return;
    };
    let response = answer(&head, &**render);
    let _ = sock.write_all(&response).await;
    let _ = sock.shutdown().await;
}

/// Read up to the blank line that ends a request head; `None` when the
/// client closed first or sent more than [`MAX_HEAD`] bytes.
async fn read_head(sock: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// The whole response to a request head.
pub fn answer(head: &[u8], render: &dyn Fn() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            // The Prometheus text format (see `to_prometheus_text`).
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        ),
        (_, "/metrics") => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_string(),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "keep-rsync serves its metrics at /metrics\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        }
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(head: &str) -> String {
        String::from_utf8(answer(head.as_bytes(), &|| "m_total 1\n".to_string())).unwrap()
    }

    #[test]
    fn answers_metrics_404_and_405() {
        let ok = text("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 10\r\n"), "{ok}");
        assert!(ok.contains("version=0.0.4"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nm_total 1\n"), "{ok}");
        let q = text("GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(q.starts_with("HTTP/1.1 200"), "{q}");
        let head = text("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(text("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(text("GET /metricsx HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let post = text("POST /metrics HTTP/1.1\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"),
            "{post}"
        );
        assert!(text("garbage").starts_with("HTTP/1.1 404"));
        assert!(text("").starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn serves_over_tcp_and_drops_oversized_heads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(|| "m_total 2\n".to_string())));
        let ask = |req: Vec<u8>| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&req).await;
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap_or_default();
            out
        };
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()).await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("m_total 2\n"),
            "{ok}"
        );
        let missing = ask(b"GET /other HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 3 * MAX_HEAD));
        assert_eq!(ask(huge).await, "", "an oversized head is not answered");
        server.abort();
    }
}
