//! Finishing: the durable rest of a block's writes, and its outcome told
//! and counted in the run's stats (a failed block is listed with its
//! reason, never fatal).
//!
//! A store's write ends in two parts ([`crate::store::Staged`]): the bytes
//! taken, then a *finish* (a directory's fsync, rename and directory
//! fsync; a bucket's `recent/` marker). The finishes of a block's writes
//! wait here, in [`Finishing`], while its byte budget reservation and
//! buffers are given back; admission then runs them, a bounded number at
//! once, and only when they have all ended does the block count as stored.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{BlockError, Copier};
use crate::plan::{Action, Job};
use crate::protocol::BlockHash;
use crate::report::FailedBlock;

/// One replica write's finish, as the copy runs it: the store's own, then
/// the replicas it stored counted.
pub(super) type Finish<'a> = BoxFuture<'a, Result<(), BlockError>>;

/// What one write's finish does, which decides what it holds while it runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// A local fsync and rename.
    Local,
    /// A request to the service (a bucket's `recent/` marker PUT).
    Request,
}

/// The finishes a block's writes left, as [`Finishing::take`] answers them.
#[derive(Default)]
pub(super) struct Pending<'a> {
    pub finishes: Vec<Finish<'a>>,
    /// Some finish is a local fsync and rename: it takes a finishing slot.
    pub local: bool,
    /// Some finish is a request to a service (a bucket's marker PUT): the
    /// block stays one of the blocks in flight until it ends, as the
    /// service's limit counts it.
    pub request: bool,
}

/// The finishes of blocks whose bytes are written, by block.
#[derive(Default)]
pub struct Finishing<'a> {
    by_block: Mutex<HashMap<BlockHash, Pending<'a>>>,
}

impl<'a> Finishing<'a> {
    /// `f` is left by a write of `hash`, doing `kind`.
    pub(super) fn add(&self, hash: BlockHash, f: Finish<'a>, kind: Kind) {
        let mut m = self.by_block.lock().unwrap_or_else(|e| e.into_inner());
        let p = m.entry(hash).or_default();
        p.finishes.push(f);
        p.local |= kind == Kind::Local;
        p.request |= kind == Kind::Request;
    }

    /// The finishes `hash`'s writes left, now to be run.
    pub(super) fn take(&self, hash: &BlockHash) -> Pending<'a> {
        let mut m = self.by_block.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(hash).unwrap_or_default()
    }
}

/// Run `finishes` together; the first failure is the block's.
pub(super) async fn run_all(finishes: Vec<Finish<'_>>) -> Result<(), BlockError> {
    let results = futures::future::join_all(finishes).await;
    results.into_iter().collect()
}

impl<'a> Copier<'a> {
    /// `--verify-existing` repairs: wait for the finishes of `job`'s
    /// writes so far, before counting the repair.
    pub(super) async fn settle(&self, job: &Job) -> Result<(), BlockError> {
        run_all(self.finishing.take(&job.hash).finishes).await
    }

    /// `job`'s writes are all durable: count the block as copied or topped up.
    pub(super) fn stored(&self, job: &Job) {
        let size = job.size as u64;
        match job.action {
            Action::Copy => {
                self.stats.copied.fetch_add(1, Relaxed);
                self.stats.copied_bytes.fetch_add(size, Relaxed);
            }
            Action::TopUp => {
                self.stats.topped_up.fetch_add(1, Relaxed);
                self.stats.topped_up_bytes.fetch_add(size, Relaxed);
            }
            Action::Verify => {}
        }
    }

    /// `job` has ended, its finishes too: count it and tell it.
    pub(super) fn ended(&self, job: &Job, r: Result<(), BlockError>) {
        if r.is_ok() {
            self.stored(job);
        }
        self.stats.blocks_done.fetch_add(1, Relaxed);
        self.finished(job, r);
    }

    /// Record the end of `job`.
    pub(super) fn finished(&self, job: &Job, r: Result<(), BlockError>) {
        match r {
            Ok(()) => self.reporter.block_finished(job, None),
            Err(e) => {
                self.reporter.block_finished(job, Some(&e.reason));
                self.stats.fail(
                    job.hash,
                    FailedBlock {
                        locator: format!("{}+{}", job.hash, job.size),
                        action: job.action,
                        service: e.service,
                        reason: e.reason,
                    },
                    job.size as u64,
                );
            }
        }
    }
}
