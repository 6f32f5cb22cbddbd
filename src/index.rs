//! Indexes: `GET /index/PREFIX`, a directory scan or a bucket listing from every store of both
//! sides, parsed as the body streams in, into 20 bytes per line; retried,
//! sorted, deduplicated, and classified: complete, service down, or broken.
//!
//! An index is the truth only when complete: it must end with the blank line
//! keepstore sends last (docs/protocol.md, "Index"), and every line must be `HASH+SIZE
//! MTIME`. A cut-short index is retried like any transient failure; if it
//! stays incomplete, or a line is malformed, the run stops with exit 3 before
//! planning anything, naming the service and the line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt};

use crate::error::{Error, Result};
use crate::protocol::client::{with_retries, Backoff, Failure, FailureKind, Op};
pub use crate::protocol::index::Entry;
use crate::role::Role;
use crate::services::{Asking, Service};

/// One service's index for one prefix: sorted, deduplicated entries.
#[derive(Default)]
pub struct ServiceIndex {
    pub entries: Vec<Entry>,
    /// Lines received (before deduplication), for the report.
    pub lines: u64,
}

/// What the index stage needs to know.
#[derive(Clone)]
pub struct FetchOptions {
    pub checkers: usize,
    pub retries: u32,
    pub backoff: Backoff,
    /// Entry vectors handed back by the previous pass.
    pub recycle: Recycler,
}

/// Entry vectors kept from one pass for the next, so that a pass parses into
/// memory that is already mapped. Fresh vectors cost a page fault per 4 KiB
/// and copies as they grow: about 10 % of a `--dry-run`'s CPU. Only what
/// one pass held is kept, and only between passes that copy nothing (the
/// caller empties it before a copy, so copies have the memory back).
#[derive(Clone, Default)]
pub struct Recycler(Arc<Mutex<Vec<Vec<Entry>>>>);

impl Recycler {
    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Entry>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty vector, with room if one was handed back.
    fn take(&self) -> Vec<Entry> {
        self.pool().pop().unwrap_or_default()
    }

    /// Keep the vectors of these indexes for the next pass.
    pub fn give(&self, lists: Vec<ServiceIndex>) {
        let mut pool = self.pool();
        for l in lists {
            let mut v = l.entries;
            if v.capacity() > 0 {
                v.clear();
                pool.push(v);
            }
        }
    }

    /// Free everything kept.
    pub fn clear(&self) {
        *self.pool() = Vec::new();
    }
}

/// Which side, service and (for a keepstore that serves `/mounts`) mount
/// an index request is for.
#[derive(Clone)]
pub struct Target<'a> {
    pub role: Role,
    pub service: &'a Service,
    pub mount: Option<&'a str>,
}

/// The outcome of one service's index request.
pub enum Fetched {
    /// The complete index.
    Index(ServiceIndex),
    /// The service could not be reached (refused, timed out, 5xx) after
    /// retries. The run goes on without it and reports it; no partial data
    /// from it is used.
    Down(String),
}

/// Fetch `prefix` from every target, at most `checkers` at a time. Returns
/// the outcomes in target order, or the first fatal error (an index that
/// arrived incomplete or malformed, or was refused). `done` is called after
/// each index arrives with the number still outstanding.
pub async fn fetch_all(
    targets: &[Target<'_>],
    prefix: &str,
    opts: &FetchOptions,
    stats_bytes: &AtomicU64,
    done: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Fetched>> {
    let total = targets.len();
    let mut results: Vec<Option<Fetched>> = (0..total).map(|_| None).collect();
    let mut remaining = total;
    let mut s = stream::iter(targets.iter().enumerate())
        .map(|(i, t)| async move { (i, fetch_one(t, prefix, opts, stats_bytes).await) })
        .buffer_unordered(opts.checkers.max(1));
    while let Some((i, r)) = s.next().await {
        results[i] = Some(r?);
        remaining -= 1;
        done(remaining);
    }
    Ok(results.into_iter().flatten().collect())
}

/// Fetch and parse one service's index, retrying transient failures and
/// cut-short bodies (a malformed line is not retried).
pub async fn fetch_one(
    t: &Target<'_>,
    prefix: &str,
    opts: &FetchOptions,
    bytes: &AtomicU64,
) -> Result<Fetched> {
    // Set once any attempt got a 200 and started a body: from then on a
    // failure means a broken index, not an unreachable service.
    let answered = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let mut tries = 0;
    let asking = Asking {
        role: t.role,
        service: t.service,
        op: Op::Index,
        block: None,
    };
    let r = with_retries(opts.backoff, opts.retries, &asking, |a| {
        tries = a + 1;
        attempt(t, prefix, bytes, &answered, &opts.recycle)
    })
    .await;
    let what = match t.mount {
        Some(m) => format!(
            "the {} index of mount {m} of {} for prefix {:?}",
            t.role,
            t.service.store.label(),
            prefix
        ),
        None => format!(
            "the {} index of {} for prefix {:?}",
            t.role,
            t.service.store.label(),
            prefix
        ),
    };
    match r {
        Ok(mut idx) => {
            // No shrink_to_fit: an index lives only until its pass is
            // planned, and a recycled vector keeps its room for the next.
            sort_dedup(&mut idx.entries);
            tracing::info!(
                event = "index",
                side = t.role.as_str(),
                service = t.service.store.id(),
                mount = t.mount,
                prefix,
                lines = idx.lines,
                blocks = idx.entries.len(),
                attempts = tries,
                seconds = started.elapsed().as_secs_f64(),
                "{} index of {} for prefix {prefix:?}: {} {} listed, {} blocks in {:.3}s",
                t.role,
                t.service.store.id(),
                idx.lines,
                t.service.store.listed_unit(),
                idx.entries.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(Fetched::Index(idx))
        }
        Err((f, _)) if f.kind == FailureKind::Malformed => Err(Error::unreadable(format!(
            "{what} has a {}. {}. {}",
            f.detail,
            t.role.nothing_done(),
            t.service.store.what_to_check()
        ))),
        Err((f, attempts)) if f.is_transient() && !answered.load(Ordering::Relaxed) => {
            tracing::info!(
                event = "index",
                side = t.role.as_str(),
                service = t.service.store.id(),
                prefix,
                attempts,
                seconds = started.elapsed().as_secs_f64(),
                error = %f,
                "{} index of {} for prefix {prefix:?}: unreachable after {attempts} attempts in {:.3}s",
                t.role,
                t.service.store.id(),
                started.elapsed().as_secs_f64()
            );
            Ok(Fetched::Down(format!(
                "index unreachable after {attempts} attempt{}: {f}",
                if attempts == 1 { "" } else { "s" }
            )))
        }
        Err((f, attempts)) => Err(Error::unreadable(format!(
            "could not read {what} after {attempts} attempt{}: {f}. {}: an incomplete index is \
             never taken as the whole truth. {}",
            if attempts == 1 { "" } else { "s" },
            t.role.nothing_done(),
            t.service.store.index_advice(f.kind)
        ))),
    }
}

async fn attempt(
    t: &Target<'_>,
    prefix: &str,
    bytes: &AtomicU64,
    answered: &AtomicBool,
    recycle: &Recycler,
) -> Result<ServiceIndex, Failure> {
    let on_bytes = |n: u64| {
        bytes.fetch_add(n, Ordering::Relaxed);
    };
    let r = t
        .service
        .store
        .list(prefix, t.mount, answered, &on_bytes, recycle.take())
        .await;
    t.service.stats.answered(Op::Index, r.as_ref().err());
    let (entries, lines) = r?;
    // A store that ignores the prefix would break the index budget and make
    // prefix shards overlap: its listing is not what was asked for.
    if !prefix.is_empty() {
        if let Some(e) = entries.iter().find(|e| !e.hash.has_prefix(prefix)) {
            return Err(Failure::new(
                FailureKind::Malformed,
                format!("listing that names {} outside the prefix asked for", e.hash),
            ));
        }
    }
    Ok(ServiceIndex { entries, lines })
}

/// Sort by hash and keep one entry per hash (the smallest size, as a plain
/// sort then dedup does). Keepstore lists each volume in turn, so an index
/// is usually not sorted; the simulator's synthetic ones are, and then a
/// check, a fraction of a sort's cost, is all it takes.
fn sort_dedup(entries: &mut Vec<Entry>) {
    let key = |e: &Entry| u128::from_be_bytes(e.hash.0);
    if !entries.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BlockHash;

    #[test]
    fn sorted_and_deduplicated() {
        let e = |h: u8, size: u32| Entry {
            hash: BlockHash([h; 16]),
            size,
        };
        let mut v = vec![e(3, 1), e(1, 9), e(3, 0), e(2, 2), e(1, 4)];
        sort_dedup(&mut v);
        assert_eq!(v, vec![e(1, 4), e(2, 2), e(3, 0)]);
        let mut v = vec![e(1, 5), e(1, 4)];
        sort_dedup(&mut v);
        assert_eq!(v, vec![e(1, 4)]);
        let sorted = vec![e(0, 1), e(7, 1), e(0xff, 2)];
        let mut v = sorted.clone();
        sort_dedup(&mut v);
        assert_eq!(v, sorted);
    }

    #[test]
    fn recycled_vectors_come_back_empty_with_room() {
        let r = Recycler::default();
        assert_eq!(r.take().capacity(), 0);
        let entries: Vec<Entry> = (0..100u8)
            .map(|n| Entry {
                hash: BlockHash([n; 16]),
                size: 1,
            })
            .collect();
        let empty = ServiceIndex {
            entries: Vec::new(),
            lines: 0,
        };
        r.give(vec![
            ServiceIndex {
                entries,
                lines: 100,
            },
            empty,
        ]);
        let v = r.take();
        assert!(v.is_empty() && v.capacity() >= 100);
        assert_eq!(r.take().capacity(), 0, "empty vectors are not kept");
        r.give(vec![ServiceIndex {
            entries: v,
            lines: 0,
        }]);
        r.clear();
        assert_eq!(r.take().capacity(), 0);
    }
}
