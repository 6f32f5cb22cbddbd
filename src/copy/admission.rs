//! Admission: which blocks start, and when; and the finishing of blocks
//! whose bytes are written, outside the byte budget.

use std::sync::atomic::Ordering::Relaxed;

use futures::stream::{self, FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::finish::run_all;
use super::Copier;
use crate::plan::Plan;

/// Blocks whose writes finish at once (fsync, rename and directory fsync;
/// a bucket's `recent/` marker), outside the byte budget: a block whose
/// bytes are written waits for one of these slots, without its buffer
/// (docs/design.md, "Durable writes without waiting").
pub const FINISHING: usize = 32;

impl<'a> Copier<'a> {
    /// Copy the plan's jobs, `--transfers` at a time within the byte budget,
    /// until done or `soft` is cancelled (a signal, or a cron-window limit:
    /// `--max-transfer` admits each block here). A block gives its bytes
    /// back once its writes have taken them, then waits for a finishing
    /// slot; a block finishing is no longer one of the `--transfers`. Jobs
    /// left unstarted are told to the limits, so that the run says it
    /// stopped short. Returns once every started block has finished.
    pub async fn run(&self, plan: &Plan, soft: &CancellationToken) {
        let started = std::sync::atomic::AtomicUsize::new(0);
        let started = &started;
        let slots = tokio::sync::Semaphore::new(FINISHING);
        let slots = &slots;
        let blocks = stream::iter(&plan.jobs)
            .take_until(soft.cancelled())
            .map(|job| async move {
                // The block's bytes first; a stop while waiting for them
                // means the block never starts.
                let reserved = tokio::select! {
                    biased;
                    _ = soft.cancelled() => return None,
                    r = self.opts.budget.reserve(job.size as u64) => r,
                };
                if !self.limits.admit(job.size as u64) {
                    return None;
                }
                started.fetch_add(1, Relaxed);
                let n = self.ordinal.fetch_add(1, Relaxed) + 1;
                self.reporter
                    .block_started(n, self.total.load(Relaxed), job);
                let r = self.copy_one(plan, job).await;
                // Written (or failed): the buffer is given back before the
                // finishes run.
                drop(reserved);
                let finishes = self.finishing.take(&job.hash);
                let slot = match finishes.is_empty() {
                    true => None,
                    false => Some(slots.acquire().await.expect("never closed")),
                };
                Some((job, r, finishes, slot))
            })
            .buffer_unordered(self.opts.transfers.max(1));
        let mut blocks = std::pin::pin!(blocks);
        let mut finishing = FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(done) = blocks.next() => {
                    let Some((job, r, finishes, slot)) = done else { continue };
                    finishing.push(async move {
                        // A failed block's replicas that were written still
                        // finish; its failure is the one it had.
                        let f = run_all(finishes).await;
                        drop(slot);
                        (job, r.and(f))
                    });
                }
                Some((job, r)) = finishing.next() => {
                    if r.is_ok() {
                        self.stored(job);
                    }
                    self.stats.blocks_done.fetch_add(1, Relaxed);
                    self.finished(job, r);
                }
                else => break,
            }
        }
        // The index phase that follows gets the buffers' memory back.
        self.pool.clear();
        if started.load(Relaxed) < plan.jobs.len() {
            self.limits.cut_short();
        }
    }
}
