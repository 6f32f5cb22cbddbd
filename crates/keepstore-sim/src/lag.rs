//! `keepstore-sim lag`: a TCP proxy that adds a round trip and nothing
//! else, for latency benchmarks against servers without a delay option of
//! their own (real keepstores: bench scenario 14).
//!
//! Each listener forwards to one target. Every chunk read from either side
//! is stamped and written to the other side half the round trip later by a
//! task of its own, so the delay is a delay line, not a throttle: bytes keep
//! flowing at the link's full speed however long the lag, and the proxy's
//! own cost is one read and one write per chunk (at 0 ms it copies
//! straight). Prints `LISTEN_PORT TARGET` lines once listening.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes read at a time.
const CHUNK: usize = 256 << 10;

/// Listen on `listen` (port 0: ephemeral) once per target; forward each
/// connection with `rtt` added (half each way). Runs until killed.
pub async fn run(
    listen: std::net::IpAddr,
    targets: Vec<SocketAddr>,
    rtt: Duration,
) -> std::io::Result<()> {
    let one_way = rtt / 2;
    let mut tasks = Vec::new();
    let mut lines = String::new();
    for to in targets {
        let l = TcpListener::bind(SocketAddr::new(listen, 0)).await?;
        lines.push_str(&format!("{} {to}\n", l.local_addr()?.port()));
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((client, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(to).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        pipe(client, server, one_way).await;
                    }
                });
            }
        }));
    }
    print!("{lines}");
    use std::io::Write;
    std::io::stdout().flush()?;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn pipe(a: TcpStream, b: TcpStream, delay: Duration) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::join!(direction(ar, bw, delay), direction(br, aw, delay));
}

/// One direction: a reader stamps chunks, a writer sends each once its time
/// has come; the end of the stream (or an error) is passed on as a shutdown.
async fn direction<R, W>(mut r: R, mut w: W, delay: Duration)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    if delay.is_zero() {
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((Instant::now() + delay, buf)).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer after the last chunk.
    };
    let writer = async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = tokio::time::sleep_until(Instant::now() + delay).await;
        let _ = w.shutdown().await;
    };
    tokio::join!(reader, writer);
}
