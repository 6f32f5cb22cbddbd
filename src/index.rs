//! Indexes: `GET /index/PREFIX` (or a volume scan) from every service of both
//! sides, parsed as the body streams in, into 20 bytes per line; retried,
//! sorted, deduplicated, and classified: complete, service down, or broken.
//!
//! An index is the truth only when complete: it must end with the blank line
//! keepstore sends last (protocol §5), and every line must be `HASH+SIZE
//! MTIME`. A cut-short index is retried like any transient failure; if it
//! stays incomplete, or a line is malformed, the run stops with exit 3 before
//! planning anything, naming the service and the line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::stream::{self, StreamExt};

use crate::error::{Error, Result};
use crate::protocol::client::{with_retries, Backoff, Failure, FailureKind, KeepClient};
pub use crate::protocol::index::Entry;
use crate::role::Role;
use crate::services::Service;

/// One service's index for one prefix: sorted, deduplicated entries.
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
}

/// Which side and service an index request is for.
#[derive(Clone)]
pub struct Target<'a> {
    pub role: Role,
    pub service: &'a Service,
    pub client: &'a KeepClient,
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
    let r = with_retries(opts.backoff, opts.retries, |_| {
        attempt(t, prefix, bytes, &answered)
    })
    .await;
    let what = format!(
        "the {} index of {} for prefix {:?}",
        t.role,
        t.service.endpoint.label(),
        prefix
    );
    match r {
        Ok(mut idx) => {
            idx.entries.sort_unstable();
            idx.entries.dedup_by_key(|e| e.hash);
            idx.entries.shrink_to_fit();
            Ok(Fetched::Index(idx))
        }
        Err((f, _)) if f.kind == FailureKind::Malformed => Err(Error::unreadable(format!(
            "{what} has a {}. Nothing was copied. Check that the URL points at a keepstore \
                 or keepproxy, and that the token is the cluster's system root token.",
            f.detail
        ))),
        Err((f, attempts)) if f.is_transient() && !answered.load(Ordering::Relaxed) => Ok(
            Fetched::Down(format!("index unreachable after {attempts} attempts: {f}")),
        ),
        Err((f, attempts)) => Err(Error::unreadable(format!(
            "could not read {what} after {attempts} attempt{}: {f}. Nothing was copied: an \
             incomplete index is never taken as the whole truth. {}",
            if attempts == 1 { "" } else { "s" },
            hint_for(&f)
        ))),
    }
}

async fn attempt(
    t: &Target<'_>,
    prefix: &str,
    bytes: &AtomicU64,
    answered: &AtomicBool,
) -> Result<ServiceIndex, Failure> {
    let on_bytes = |n: u64| {
        bytes.fetch_add(n, Ordering::Relaxed);
    };
    let (entries, lines) = t
        .service
        .endpoint
        .list(t.client, prefix, answered, &on_bytes)
        .await?;
    Ok(ServiceIndex { entries, lines })
}

fn hint_for(f: &Failure) -> &'static str {
    match f.kind {
        FailureKind::Denied => "Indexes are served only to the cluster's system root token: check ARVADOS_API_TOKEN in the settings file.",
        FailureKind::NotFound | FailureKind::Rejected | FailureKind::Malformed => "Check that the services list points at keepstore or keepproxy services.",
        _ => "Check that the service is up and reachable from here, then rerun.",
    }
}
