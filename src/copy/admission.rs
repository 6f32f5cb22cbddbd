//! Admission: which blocks start, and when.

use std::sync::atomic::Ordering::Relaxed;

use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use super::Copier;
use crate::plan::Plan;

impl<'a> Copier<'a> {
    /// Copy the plan's jobs, `--transfers` at a time within the byte budget,
    /// until done or `soft` is cancelled (a signal, or a cron-window limit:
    /// `--max-transfer` admits each block here). Jobs left unstarted are
    /// told to the limits, so that the run says it stopped short.
    pub async fn run(&self, plan: &Plan, soft: &CancellationToken) {
        let started = std::sync::atomic::AtomicUsize::new(0);
        let started = &started;
        stream::iter(&plan.jobs)
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
                drop(reserved);
                self.stats.blocks_done.fetch_add(1, Relaxed);
                Some((job, r))
            })
            .buffer_unordered(self.opts.transfers.max(1))
            .for_each(|done| async move {
                if let Some((job, r)) = done {
                    self.finished(job, r);
                }
            })
            .await;
        // The index phase that follows gets the buffers' memory back.
        self.pool.clear();
        if started.load(Relaxed) < plan.jobs.len() {
            self.limits.cut_short();
        }
    }
}
