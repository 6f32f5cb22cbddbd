//! The copy pipeline: for each planned block, read it once from a source
//! service that holds it, verify length and MD5, and write it to the
//! destination in rendezvous order until the wanted replicas are confirmed.
//!
//! - **Memory is a byte budget** (`--buffer-memory`, [`Budget`]): a block
//!   reserves its size before its read and releases it when its last write
//!   has taken its bytes, so 64 MiB blocks run a few at a time and small
//!   ones as many as the services' limits take (or `--transfers`, when
//!   given). Each service takes at most its adaptive limit of requests at a
//!   time (up to `--max-per-service`).
//! - **Finishes** (a directory's fsync and rename, a bucket's `recent/`
//!   marker) run after that, outside the budget and the blocks in flight,
//!   [`admission::FINISHING`] at once; the block counts as stored when they
//!   end, and fails if one fails.
//! - **Reads** try holders in source probe order. Transient failures are
//!   retried with backoff on the same holder, then the next holder is tried;
//!   a 404 or refusal moves on at once; a short or corrupt body is fetched
//!   again, preferably from another holder. For a top-up, destination copies
//!   are a last resort when no source copy can be read.
//! - **Writes** go to the first writable services of the destination probe
//!   order that do not list the block yet, replicas in parallel; a failed
//!   service (after retries; 507 at once) is replaced by the next one in
//!   order. With streaming (the default) they start as soon as the read's
//!   headers arrive and follow its body through a [`Relay`], which releases
//!   the block's last bytes only once its MD5 and length are verified; a
//!   failed read abandons them before their last byte, and the next holder's
//!   read starts them afresh.
//! - A failed block never stops the run: it is recorded with its reason.
//! - This module owns graceful cancellation: once `soft` is cancelled no new
//!   block starts (not even one waiting for budget) and the blocks in flight
//!   finish.
//!
//! The parts, in the order a block meets them: `admission` (which blocks
//! start, and when), `block` (one block's course: copy, top-up, verify),
//! `read` (source candidates, retries, the read into a [`Relay`]), `write`
//! (replica PUTs in rendezvous order, failover), `finish` (the outcome told
//! and counted); `budget`, `pool` and `relay` hold the block's bytes.

mod admission;
mod block;
mod budget;
mod finish;
mod pool;
mod read;
mod relay;
mod write;

pub use budget::Budget;
pub use finish::Finishing;
pub use pool::BufferPool;
pub use relay::{verify_body, Relay};
pub use write::{classes_confirmed, confirmed_counts};

use std::sync::atomic::AtomicU64;

use crate::plan::{Job, PerBlock};
use crate::progress::Reporter;
use crate::protocol::client::{Backoff, Failure, FailureKind, Op};
use crate::report::Stats;
use crate::services::{Asking, Service, Side};
use crate::throttle::Throttle;

/// How blocks are copied.
pub struct CopyOptions {
    pub want: u32,
    /// `--transfers`: at most this many blocks in flight; `None` lets the
    /// budget and the services' limits decide (`admission`).
    pub transfers: Option<usize>,
    pub retries: u32,
    pub backoff: Backoff,
    /// `--storage-classes`, as sent in `X-Keep-Storage-Classes`.
    pub storage_classes: Option<String>,
    pub throttle: Option<Throttle>,
    /// Bytes of block data in flight (`--buffer-memory`).
    pub budget: Budget,
    /// Start the replica writes while the read arrives (see [`Relay`]);
    /// `false` writes only once the whole block is verified.
    pub stream: bool,
}

/// Everything a block copy needs, shared by all transfers.
pub struct Copier<'a> {
    pub src: &'a Side,
    pub dst: &'a Side,
    pub opts: &'a CopyOptions,
    pub stats: &'a Stats,
    pub reporter: &'a dyn Reporter,
    /// `--max-transfer` admits each block before it starts.
    pub limits: &'a crate::limits::Limits,
    /// Blocks started so far over all passes, and the planned total.
    pub ordinal: AtomicU64,
    pub total: AtomicU64,
    /// The buffers block data is copied into (emptied after each pass).
    pub pool: std::sync::Arc<BufferPool>,
    /// Collection records: what each block's collections want.
    pub per_block: Option<PerBlock<'a>>,
    /// Blocks' writes whose bytes are taken, their durable rest to run.
    pub finishing: Finishing<'a>,
}

/// What a block's writes must still achieve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The run's own want: this many more replicas, each PUT confirming
    /// every `--storage-classes` class.
    Replicas(u32),
    /// Collection records: replicas still missing per storage class. A PUT
    /// asks for the classes still short and counts for those it confirms
    /// (as the Arvados SDK's block writer does).
    Classes(Vec<(String, u32)>),
}

impl Need {
    fn is_met(&self) -> bool {
        match self {
            Need::Replicas(n) => *n == 0,
            Need::Classes(c) => c.iter().all(|(_, n)| *n == 0),
        }
    }
}

/// Where a read candidate lives.
#[derive(Clone, Copy)]
enum From {
    Src(u16),
    Dst(u16),
}

/// A block-level failure: the service that decided it and why.
struct BlockError {
    service: String,
    reason: String,
}

impl<'a> Copier<'a> {
    /// Diagnostics (`-v`): `op` of `job` on `from` failed with `f`; `to` is
    /// asked next.
    fn failover(&self, op: Op, job: &Job, from: From, to: From, f: &Failure) {
        let (from_side, _) = self.side_of(from);
        let (to_side, _) = self.side_of(to);
        let (from, to) = (
            self.service_of(from).store.id(),
            self.service_of(to).store.id(),
        );
        tracing::info!(
            event = "failover",
            op = op.as_str(),
            object = %format_args!("{}+{}", job.hash, job.size),
            side = from_side.role.as_str(),
            from,
            to,
            to_side = to_side.role.as_str(),
            status = f.status,
            error = %f,
            "{} {}+{}: {} service {from} failed ({f}); trying {} service {to}",
            op.as_str(),
            job.hash,
            job.size,
            from_side.role,
            to_side.role
        );
    }

    fn side_of(&self, c: From) -> (&Side, usize) {
        match c {
            From::Src(i) => (self.src, i as usize),
            From::Dst(i) => (self.dst, i as usize),
        }
    }

    fn service_of(&self, c: From) -> &Service {
        let (side, i) = self.side_of(c);
        &side.services[i]
    }

    /// `op` of `job` on candidate `c`, for its retries' diagnostics.
    fn asking<'s>(&'s self, c: From, op: Op, job: &'s Job) -> Asking<'s> {
        let (side, i) = self.side_of(c);
        Asking {
            role: side.role,
            service: &side.services[i],
            op,
            block: Some((&job.hash, job.size)),
        }
    }

    /// A service that refuses connections after all retries has died mid-run:
    /// mark it down so later blocks skip it at once instead of each paying
    /// the retries, and list it (the run then exits 1; a rerun completes).
    /// A refused request (401/403) says once what to fix ([`Side::refused`]).
    fn note_down(&self, side: &Side, i: usize, f: Failure) -> Failure {
        if let Some(msg) = side.refused(i, &f) {
            self.reporter.log(crate::progress::Level::Warn, &msg);
        }
        let svc = &side.services[i];
        let why = || format!("stopped accepting connections mid-run: {f}");
        if f.kind == FailureKind::Unreachable && svc.mark_down_because(side.role, &why()) {
            let why = why();
            self.reporter.log(
                crate::progress::Level::Warn,
                &format!("{} service {}: {why}", side.role, svc.store.label()),
            );
            self.stats.service_down(side.role, svc, &why);
        }
        f
    }
}

/// Diagnostics at `-vv`: one line per block request (a GET up to its
/// headers, a whole PUT), with its outcome and time.
pub(super) fn request_done<T>(
    side: &Side,
    svc: &Service,
    op: Op,
    job: &Job,
    r: &Result<T, Failure>,
    asked: std::time::Instant,
) {
    tracing::debug!(
        event = "request",
        op = op.as_str(),
        side = side.role.as_str(),
        service = svc.store.id(),
        object = %format_args!("{}+{}", job.hash, job.size),
        ok = r.is_ok(),
        status = r.as_ref().err().and_then(|f| f.status),
        error = r.as_ref().err().map(|f| f.detail.as_str()),
        ms = asked.elapsed().as_millis() as u64,
        "{} {}+{} on {} service {}: {} in {:?}",
        op.as_str(),
        job.hash,
        job.size,
        side.role,
        svc.store.id(),
        match r {
            Ok(_) => "ok".to_string(),
            Err(f) => f.to_string(),
        },
        asked.elapsed()
    );
}

pub(super) fn gone() -> Failure {
    Failure::new(
        FailureKind::Transient,
        "service found unreachable earlier in this run",
    )
}

pub(super) fn summarize(reasons: &[String]) -> String {
    const MAX: usize = 4;
    let mut s = reasons
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if reasons.len() > MAX {
        s.push_str(&format!("; … {} more", reasons.len() - MAX));
    }
    s
}
