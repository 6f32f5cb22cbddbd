//! A block on its way from one source read to its replica writes.
//!
//! The GET body is hashed as it arrives and packed into reused 1 MiB
//! buffers (`copy::pool`: one memcpy, no page faults; hyper's read buffer is
//! free at once, so memory is the block's size, however the bytes trickle
//! in). Replica PUTs may start before the read ends (streaming): each PUT
//! body replays the buffers filled so far, then follows the read.
//!
//! The one rule that makes this safe: **the chunk that completes the block is
//! released only after the whole block's length and MD5 are verified.** If the
//! read breaks or the block turns out corrupt, every PUT body fails instead,
//! the request is aborted before its last byte, and the keepstore, which reads
//! a whole body and checks it against the hash before storing anything
//! (docs/protocol.md, "PUT"), stores nothing. A PUT that fails and is retried,
//! or moved to the next service, replays the block from its first chunk, so
//! failover never needs a second read.
//!
//! Memory: a relay holds its block until the last PUT body is dropped; the
//! copy pipeline reserves the block's size in the byte budget for that long.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use tokio::sync::watch;

use std::sync::Arc;

use super::pool::{BufferPool, SIZE};
use crate::protocol::client::{Failure, FailureKind};
use crate::protocol::BlockHash;
use crate::store::Body;
pub use crate::store::ReadFailed;
use crate::throttle::Throttle;

/// Writes following a read are woken when this many new bytes have arrived
/// (and at the read's end).
const WAKE_EVERY: usize = 256 << 10;

/// How far the read has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Bytes are still arriving.
    Open,
    /// Every byte arrived, with the right length and MD5.
    Verified,
    /// The read broke or the data is wrong: no PUT may complete.
    Failed,
}

struct State {
    chunks: Vec<Bytes>,
    end: End,
}

/// One block, filled by one read and shared by its replica writes.
pub struct Relay {
    tx: watch::Sender<State>,
    size: u64,
    /// Where the block's buffers come from (and go back to).
    pool: Arc<BufferPool>,
    /// When the block was verified: its last byte released to the writes.
    released: std::sync::OnceLock<std::time::Instant>,
}

impl Relay {
    /// An empty relay for a block of `size` bytes (the locator's size),
    /// filling buffers from `pool`.
    pub fn new(size: u64, pool: &Arc<BufferPool>) -> Relay {
        let (tx, _) = watch::channel(State {
            chunks: Vec::new(),
            end: End::Open,
        });
        Relay {
            tx,
            size,
            pool: pool.clone(),
            released: std::sync::OnceLock::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_verified(&self) -> bool {
        self.tx.borrow().end == End::Verified
    }

    /// When the block's last byte was released to the writes (once it was
    /// verified): a write's own time runs from then, not from before a
    /// slow source's bytes arrived.
    pub fn released_at(&self) -> Option<std::time::Instant> {
        self.released.get().copied()
    }

    /// Whether the read failed (a PUT that broke may blame the source).
    pub fn is_failed(&self) -> bool {
        self.tx.borrow().end == End::Failed
    }

    /// Wait until the read has ended; `true` when the block is verified.
    pub async fn wait_end(&self) -> bool {
        let mut rx = self.tx.subscribe();
        let verified = rx
            .wait_for(|s| s.end != End::Open)
            .await
            .map(|s| s.end == End::Verified);
        verified.unwrap_or(false)
    }

    fn fail(&self) {
        self.tx.send_modify(|s| s.end = End::Failed);
    }

    /// Read `body` into the relay, checking it against `hash` and the size:
    /// `Ok` once the block is verified (and released to the PUTs), otherwise
    /// the relay fails and so does every PUT body reading from it. `on_bytes`
    /// is told of each chunk as it arrives (progress, counters); `throttle`
    /// paces the read (`--bwlimit`).
    pub async fn fill<S>(
        &self,
        body: S,
        hash: &BlockHash,
        throttle: Option<&Throttle>,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(), Failure>
    where
        S: Stream<Item = Result<Bytes, Failure>>,
    {
        let r = self.fill_inner(body, hash, throttle, on_bytes).await;
        match &r {
            Ok(()) => {
                let _ = self.released.set(std::time::Instant::now());
                self.tx.send_modify(|s| s.end = End::Verified)
            }
            Err(_) => self.fail(),
        }
        r
    }

    async fn fill_inner<S>(
        &self,
        body: S,
        hash: &BlockHash,
        throttle: Option<&Throttle>,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(), Failure>
    where
        S: Stream<Item = Result<Bytes, Failure>>,
    {
        let size = self.size;
        let mut got: u64 = 0;
        let mut unannounced = 0usize;
        let mut dense = self.pool.take(0);
        let r = verify_body(body, hash, size, throttle, on_bytes, |chunk| {
            got += chunk.len() as u64;
            // Copied into dense, reusable buffers (see copy::pool): hyper's
            // read buffer is free at once.
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                if dense.room() == 0 {
                    let left = (size - got) as usize + rest.len();
                    let full = std::mem::replace(&mut dense, self.pool.take(left.min(SIZE)));
                    self.push(full.freeze(), &mut unannounced);
                }
                rest = dense.fill(rest);
            }
        })
        .await;
        if r.is_ok() && !dense.is_empty() {
            self.push(dense.freeze(), &mut unannounced);
        }
        r
    }

    /// Hand a chunk to the writes, waking them once per `WAKE_EVERY` bytes
    /// rather than per chunk: each wake-up costs a task switch and a small
    /// socket write.
    fn push(&self, chunk: Bytes, unannounced: &mut usize) {
        if chunk.is_empty() {
            return;
        }
        *unannounced += chunk.len();
        let wake = *unannounced >= WAKE_EVERY;
        if wake {
            *unannounced = 0;
        }
        self.tx.send_if_modified(|s| {
            s.chunks.push(chunk);
            wake
        });
    }

    /// A write's body for this block. Once the block is verified the body
    /// is the chunks as they are; before that, it follows the read and holds
    /// back the completing chunk until verification (or fails with the read).
    pub fn body(&self) -> Body {
        {
            let s = self.tx.borrow();
            if s.end == End::Verified {
                return Body::Whole(s.chunks.clone());
            }
        }
        Body::Follow(self.follow().boxed())
    }

    /// The chunks, in order, as they become releasable.
    pub fn follow(&self) -> impl Stream<Item = Result<Bytes, ReadFailed>> + Send + 'static {
        let rx = self.tx.subscribe();
        let size = self.size;
        futures::stream::unfold(
            (rx, 0usize, 0u64, false),
            move |(mut rx, next, sent, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let step = {
                        let s = rx.borrow_and_update();
                        match s.chunks.get(next) {
                            _ if s.end == End::Failed => Step::Fail,
                            // The completing chunk waits for the verdict.
                            Some(c) if sent + c.len() as u64 >= size && s.end != End::Verified => {
                                Step::Wait
                            }
                            Some(c) => Step::Send(c.clone()),
                            None if s.end == End::Verified => Step::End,
                            None => Step::Wait,
                        }
                    };
                    match step {
                        Step::Fail => return Some((Err(ReadFailed), (rx, next, sent, true))),
                        Step::End => return None,
                        Step::Send(c) => {
                            let sent = sent + c.len() as u64;
                            return Some((Ok(c), (rx, next + 1, sent, false)));
                        }
                        Step::Wait => {
                            // A relay dropped before its verdict is a failed read.
                            if rx.changed().await.is_err() && rx.borrow().end != End::Verified {
                                return Some((Err(ReadFailed), (rx, next, sent, true)));
                            }
                        }
                    }
                }
            },
        )
    }
}

/// Read a block's body, checking it against `hash` and `size` as it
/// arrives: `Ok` once every byte is there with the right length and MD5.
/// Each chunk goes to `keep` as soon as it is counted (the relay packs them
/// for its writes; keep-block-check's `--read` drops them, holding no
/// block). A body that breaks, runs long or short, or has the wrong MD5 is
/// `BadData`.
pub async fn verify_body<S>(
    body: S,
    hash: &BlockHash,
    size: u64,
    throttle: Option<&Throttle>,
    on_bytes: &(dyn Fn(u64) + Sync),
    mut keep: impl FnMut(Bytes),
) -> Result<(), Failure>
where
    S: Stream<Item = Result<Bytes, Failure>>,
{
    let mut md5 = Md5::new();
    let mut got: u64 = 0;
    futures::pin_mut!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|f| {
            Failure::new(
                FailureKind::BadData,
                format!("body cut short after {got} of {size} bytes ({f})"),
            )
        })?;
        if got + chunk.len() as u64 > size {
            return Err(Failure::new(
                FailureKind::BadData,
                format!("body longer than the locator's size {size}"),
            ));
        }
        if let Some(t) = throttle {
            t.take(chunk.len() as u64).await;
        }
        md5.update(&chunk);
        got += chunk.len() as u64;
        on_bytes(chunk.len() as u64);
        keep(chunk);
    }
    if got != size {
        return Err(Failure::new(
            FailureKind::BadData,
            format!("body cut short: {got} of {size} bytes"),
        ));
    }
    let sum = BlockHash(md5.finalize().into());
    if sum != *hash {
        return Err(Failure::new(
            FailureKind::BadData,
            format!("body MD5 is {sum}, not {hash}: corrupt copy"),
        ));
    }
    Ok(())
}

/// What a PUT body does next.
enum Step {
    Send(Bytes),
    Wait,
    End,
    Fail,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(data: &[u8], n: usize) -> Vec<Result<Bytes, Failure>> {
        data.chunks(n)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    async fn collect(
        s: impl Stream<Item = Result<Bytes, ReadFailed>>,
    ) -> Result<Vec<u8>, ReadFailed> {
        futures::pin_mut!(s);
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn follower_gets_everything_once_verified() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let h = BlockHash::of(&data);
        let r = Relay::new(data.len() as u64, &BufferPool::new(1 << 30));
        let early = r.follow();
        let (filled, got) = tokio::join!(
            r.fill(futures::stream::iter(chunks(&data, 777)), &h, None, &|_| {}),
            collect(early)
        );
        filled.unwrap();
        assert_eq!(got.unwrap(), data);
        // The release time a write's own time is counted from.
        assert!(r
            .released_at()
            .is_some_and(|t| t <= std::time::Instant::now()));
        // A follower that starts after the end replays the whole block.
        assert_eq!(collect(r.follow()).await.unwrap(), data);
        assert!(r.is_verified());
    }

    /// Bytes a follower received before its stream ended, and whether it
    /// ended complete.
    async fn received(s: impl Stream<Item = Result<Bytes, ReadFailed>>) -> (usize, bool) {
        futures::pin_mut!(s);
        let mut n = 0;
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => n += c.len(),
                Err(_) => return (n, false),
            }
        }
        (n, true)
    }

    #[tokio::test]
    async fn last_chunk_is_held_until_verified_and_never_released_when_corrupt() {
        use crate::copy::pool::SIZE;
        // Two full pooled buffers and a short last one: the full ones may
        // travel on, the one completing the block only after verification.
        let len = 2 * SIZE + 10;
        let data = vec![7u8; len];
        let mut bad = data.clone();
        bad[len - 1] = 8;
        let h = BlockHash::of(&data);
        let r = Relay::new(len as u64, &BufferPool::new(1 << 30));
        let follower = tokio::spawn(received(r.follow()));
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s2 = seen.clone();
        // The body arrives in pieces with a pause between them, so that the
        // follower takes what is released as it goes.
        let body = futures::stream::iter(chunks(&bad, 100_000)).then(|c| async {
            tokio::task::yield_now().await;
            c
        });
        let e = r
            .fill(body, &h, None, &move |n| {
                s2.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::BadData);
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), len as u64);
        let (n, complete) = follower.await.unwrap();
        assert!(!complete, "no complete body from a corrupt read");
        assert!(
            n <= 2 * SIZE,
            "{n} of {len} bytes released: the corrupt end went out"
        );
        assert!(
            n >= SIZE,
            "{n} bytes: full buffers should travel on before the end"
        );
        assert!(r.is_failed());
        assert!(!r.wait_end().await);
        assert_eq!(r.released_at(), None, "a failed read releases nothing");
    }

    #[tokio::test]
    async fn a_stream_of_the_wrong_length_fails() {
        let data = vec![1u8; 100];
        let h = BlockHash::of(&data);
        for (len, chunk) in [(101u64, 100usize), (99, 33)] {
            let r = Relay::new(len, &BufferPool::new(1 << 30));
            let follower = tokio::spawn(collect(r.follow()));
            let src = if len > 100 {
                data.clone()
            } else {
                data[..99].to_vec()
            };
            assert!(r
                .fill(
                    futures::stream::iter(chunks(&src, chunk)),
                    &h,
                    None,
                    &|_| {}
                )
                .await
                .is_err());
            assert!(follower.await.unwrap().is_err());
        }
        // A broken connection mid-body.
        let r = Relay::new(100, &BufferPool::new(1 << 30));
        let follower = tokio::spawn(collect(r.follow()));
        let mut src = chunks(&data, 50);
        src[1] = Err(Failure::new(FailureKind::Transient, "reset"));
        let e = r
            .fill(futures::stream::iter(src), &h, None, &|_| {})
            .await
            .unwrap_err();
        assert!(e.detail.contains("cut short after 50 of 100"), "{e}");
        assert!(follower.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn small_reads_are_packed_into_dense_buffers() {
        // 3 MiB in 3000-byte reads: held as 3 full buffers, not 1049 slices
        // of read buffers.
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        let h = BlockHash::of(&data);
        let r = Relay::new(data.len() as u64, &BufferPool::new(1 << 30));
        r.fill(
            futures::stream::iter(chunks(&data, 3000)),
            &h,
            None,
            &|_| {},
        )
        .await
        .unwrap();
        let s = r.follow();
        futures::pin_mut!(s);
        let mut sizes = Vec::new();
        while let Some(c) = s.next().await {
            sizes.push(c.unwrap().len());
        }
        assert_eq!(sizes, vec![SIZE; 3]);
    }

    #[tokio::test]
    async fn empty_block_waits_for_its_verdict() {
        let h = BlockHash::of(b"");
        let r = Relay::new(0, &BufferPool::new(1 << 30));
        let follower = tokio::spawn(collect(r.follow()));
        tokio::task::yield_now().await;
        assert!(!follower.is_finished());
        r.fill(futures::stream::iter(Vec::new()), &h, None, &|_| {})
            .await
            .unwrap();
        assert_eq!(follower.await.unwrap().unwrap(), Vec::<u8>::new());
    }

    #[tokio::test]
    async fn a_dropped_relay_fails_its_followers() {
        let r = Relay::new(10, &BufferPool::new(1 << 30));
        let f = r.follow();
        drop(r);
        assert!(collect(f).await.is_err());
    }
}
