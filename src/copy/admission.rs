//! Admission: which blocks start, and when; and the finishing of blocks
//! whose bytes are written, outside the byte budget and the blocks in
//! flight.
//!
//! Blocks start in plan order, one admission at a time, each once three
//! things allow it:
//!
//! - **the services** (no `--transfers`, the default): fewer blocks are in
//!   flight than the sum of every source and destination service's current
//!   adaptive limit ([`Copier::allowance`]), so each request slot of each
//!   service could be filled by a different block, and the limiters, which
//!   only grow while demand reaches them, always see demand. As a limit
//!   grows (slow start, round trip by round trip) more blocks start; when a
//!   service answers 503 or queues, its limit and so the admissions shrink.
//!   `--transfers N` replaces this with a fixed count (`--transfers 1`: one
//!   block at a time, as the Go tool does);
//! - **the byte budget** (`--buffer-memory`): the block's size is reserved
//!   before its read, so memory stays bounded whatever is admitted;
//! - **the cron window** (`--max-transfer`).
//!
//! A block holds an admission [`Slot`] and its budget reservation while its
//! bytes are in flight; both are values the block may drop as soon as its
//! bytes are written, so that blocks only *finishing* (an fsync, a marker)
//! do not hold back new ones. [`SAFETY_CAP`] bounds the futures alive at
//! once, so a plan of 10^7 small blocks never spawns 10^7 of them.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::finish::run_all;
use super::Copier;
use crate::plan::Plan;

/// Blocks whose local finishes (fsync, rename and directory fsync) run at
/// once, outside the byte budget and the blocks in flight: a block whose
/// bytes are written waits for one of these slots, without its buffer
/// (docs/design.md, "Durable writes without waiting"). A bucket's
/// `recent/` marker needs none: its service's limit bounds it.
pub const FINISHING: usize = 32;

/// The most blocks in flight at once when the services decide: far above
/// what any cluster's limits add up to (hundreds of services at
/// `--max-per-service`), low enough that the waiting futures cost little.
pub const SAFETY_CAP: usize = 16_384;

/// How often a waiting admission looks at the limits again (they grow on
/// answers, not only when a block ends).
const RECHECK: Duration = Duration::from_millis(2);

/// Blocks in flight, counted by the [`Slot`]s alive.
#[derive(Default)]
pub struct Gate {
    in_flight: AtomicUsize,
    left: Notify,
}

/// One admitted block's place in the [`Gate`], given back when dropped.
pub struct Slot {
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Relaxed);
        self.gate.left.notify_one();
    }
}

impl Gate {
    /// Blocks holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// A slot at once, whatever is in flight (`--transfers` caps instead).
    fn take(self: &Arc<Self>) -> Slot {
        self.in_flight.fetch_add(1, Relaxed);
        Slot { gate: self.clone() }
    }

    /// Wait until fewer than `allowance()` blocks are in flight. Only one
    /// admission waits at a time (they run in plan order).
    async fn enter(self: &Arc<Self>, allowance: impl Fn() -> usize) -> Slot {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if self.in_flight() < allowance() {
                return self.take();
            }
            tokio::select! {
                _ = left => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}

impl<'a> Copier<'a> {
    /// How many blocks may be in flight when the services decide: the sum
    /// of the current limits of the services not found down, source and
    /// destination, within 1 ..= [`SAFETY_CAP`].
    pub(super) fn allowance(&self) -> usize {
        let sum = |side: &crate::services::Side| -> usize {
            side.services
                .iter()
                .filter(|s| !s.is_down())
                .map(|s| s.limit.limit())
                .sum()
        };
        (sum(self.src) + sum(self.dst)).clamp(1, SAFETY_CAP)
    }

    /// Copy the plan's jobs as admitted (see the module's doc) until done
    /// or `soft` is cancelled (a signal, or a cron-window limit:
    /// `--max-transfer` admits each block here). Jobs left unstarted are
    /// told to the limits, so that the run says it stopped short. A block
    /// gives its bytes and its place in flight back once its writes have
    /// taken them and it holds a finishing slot; returns once every started
    /// block has finished.
    pub async fn run(&self, plan: &Plan, soft: &CancellationToken) {
        let started = AtomicUsize::new(0);
        let started = &started;
        let gate = Arc::new(Gate::default());
        let gate = &gate;
        let cap = self.opts.transfers.map_or(SAFETY_CAP, |n| n.max(1));
        let slots = tokio::sync::Semaphore::new(FINISHING);
        let slots = &slots;
        let blocks = stream::iter(&plan.jobs)
            .take_until(soft.cancelled())
            // One admission at a time, in plan order; the copies it
            // admits run side by side below.
            .then(|job| async move {
                let slot = match self.opts.transfers {
                    Some(_) => gate.take(),
                    None => tokio::select! {
                        biased;
                        _ = soft.cancelled() => return None,
                        s = gate.enter(|| self.allowance()) => s,
                    },
                };
                // The block's bytes next; a stop while waiting for them
                // means the block never starts.
                let reserved = tokio::select! {
                    biased;
                    _ = soft.cancelled() => return None,
                    r = self.opts.budget.reserve(job.size as u64) => r,
                };
                if !self.limits.admit(job.size as u64) {
                    return None;
                }
                Some((job, slot, reserved))
            })
            .map(|admitted| async move {
                let (job, slot, reserved) = admitted?;
                started.fetch_add(1, Relaxed);
                let n = self.ordinal.fetch_add(1, Relaxed) + 1;
                self.reporter
                    .block_started(n, self.total.load(Relaxed), job);
                let r = self.copy_one(plan, job).await;
                // Written (or failed): the buffer is given back before the
                // finishes run.
                drop(reserved);
                let pending = self.finishing.take(&job.hash);
                let local = match pending.local {
                    true => Some(slots.acquire().await.expect("never closed")),
                    false => None,
                };
                // Out of flight once a finishing slot is had (one waiting
                // for it still holds an open temp file, so those are bounded
                // by the blocks in flight); a marker PUT to send keeps the
                // block in flight, as the service's limit counts it.
                let slot = pending.request.then_some(slot);
                Some((job, r, pending.finishes, (local, slot)))
            })
            .buffer_unordered(cap);
        let mut blocks = std::pin::pin!(blocks);
        let mut finishing = FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(done) = blocks.next() => {
                    let Some((job, r, finishes, held)) = done else { continue };
                    // Nothing to finish: the block ends here, before the
                    // next one can start (the reporter's blocks in flight
                    // are the copy's).
                    if finishes.is_empty() {
                        self.ended(job, r);
                        continue;
                    }
                    finishing.push(async move {
                        // A failed block's replicas that were written still
                        // finish; its failure is the one it had.
                        let f = run_all(finishes).await;
                        drop(held);
                        (job, r.and(f))
                    });
                }
                Some((job, r)) = finishing.next() => self.ended(job, r),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_admits_within_the_allowance_and_when_it_grows() {
        let gate = Arc::new(Gate::default());
        let allow = Arc::new(AtomicUsize::new(2));
        let a = gate.enter(|| allow.load(Relaxed)).await;
        let _b = gate.enter(|| allow.load(Relaxed)).await;
        assert_eq!(gate.in_flight(), 2);
        // Full: the third waits until a slot is given back...
        let waiting = {
            let (gate, allow) = (gate.clone(), allow.clone());
            tokio::spawn(async move { gate.enter(|| allow.load(Relaxed)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        let c = waiting.await.unwrap();
        assert_eq!(gate.in_flight(), 2);
        // ...or the allowance grows (a limit rose), without any block ending.
        let waiting = {
            let (gate, allow) = (gate.clone(), allow.clone());
            tokio::spawn(async move { gate.enter(|| allow.load(Relaxed)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        allow.store(3, Relaxed);
        let _d = waiting.await.unwrap();
        assert_eq!(gate.in_flight(), 3);
        drop(c);
        assert_eq!(gate.in_flight(), 2);
    }
}
