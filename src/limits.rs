//! Cron windows, as rclone users know them: `--max-duration DUR` and
//! `--max-transfer SIZE`.
//!
//! Once DUR has passed since the run started, or once the blocks started add
//! up to SIZE bytes, no new block starts: the blocks in flight finish, the
//! summary and `--report` follow as usual, and the run exits 8
//! ([`exit::STOPPED_AT_LIMIT`](crate::error::exit::STOPPED_AT_LIMIT)) with
//! report status `stopped_at_limit` and `limit_reached` naming the flag. A
//! rerun continues where it stopped: the destination index is the
//! checkpoint. A limit that comes only after the last block started stops
//! nothing, and the run ends as it would have (exit 0 when complete).
//!
//! `--max-transfer` counts block sizes as blocks start (a block's size is
//! known from its locator before it is read), so a run reads about SIZE: at
//! most one block more, and again what bad data made it re-read. It does
//! not count index bytes. A block bigger than SIZE still starts when it is
//! the first: every window makes progress.
//!
//! When `--max-duration` ends while indexes are being fetched, the fetch is
//! abandoned at once (as on SIGINT) and no further pass is planned: exit 8.
//!
//! This module owns the token the stages watch for "start no new work"
//! ([`Limits::stop`]): a child of the signal token, so SIGINT/SIGTERM stop
//! the stages the same way, and [`Limits::signalled`] tells the two apart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::console::{human_bytes, human_duration};
use crate::progress::{Level, Reporter};
pub use crate::report::Limit;

/// The run's limits and its "start no new work" token.
pub struct Limits {
    inner: Arc<Inner>,
    /// The `--max-duration` timer, stopped when the run ends.
    timer: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    /// SIGINT/SIGTERM (the parent of `stop`).
    signal: CancellationToken,
    /// Cancelled by a signal or a limit: the stages start no new work.
    stop: CancellationToken,
    reached: OnceLock<Limit>,
    /// Some work was not started because `stop` was cancelled.
    cut_short: AtomicBool,
    max_duration: Option<Duration>,
    max_transfer: Option<u64>,
    /// Sizes of the blocks admitted so far (`--max-transfer`).
    started_bytes: AtomicU64,
    reporter: Arc<dyn Reporter>,
}

impl Limits {
    /// Limits for a run starting now (zero durations and sizes mean none),
    /// under `signal`. Starts the `--max-duration` clock; needs a runtime
    /// when a duration is given.
    pub fn start(
        max_duration: Option<Duration>,
        max_transfer: Option<u64>,
        signal: &CancellationToken,
        reporter: Arc<dyn Reporter>,
    ) -> Limits {
        let inner = Arc::new(Inner {
            signal: signal.clone(),
            stop: signal.child_token(),
            reached: OnceLock::new(),
            cut_short: AtomicBool::new(false),
            max_duration: max_duration.filter(|d| !d.is_zero()),
            max_transfer: max_transfer.filter(|&n| n > 0),
            started_bytes: AtomicU64::new(0),
            reporter,
        });
        let timer = inner.max_duration.map(|d| {
            let inner = inner.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(d) => inner.reach(Limit::MaxDuration),
                    _ = inner.stop.cancelled() => {}
                }
            })
        });
        Limits { inner, timer }
    }

    /// Cancelled once no new work may start (a signal or a limit).
    pub fn stop(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// Whether SIGINT/SIGTERM stopped the run.
    pub fn signalled(&self) -> bool {
        self.inner.signal.is_cancelled()
    }

    /// May a block of `size` bytes start? No once `--max-transfer` is used
    /// up: then the limit is reached and `stop` cancelled.
    pub fn admit(&self, size: u64) -> bool {
        let Some(max) = self.inner.max_transfer else {
            return true;
        };
        if self.inner.started_bytes.fetch_add(size, Relaxed) < max {
            return true;
        }
        self.inner.reach(Limit::MaxTransfer);
        self.cut_short();
        false
    }

    /// May the next sub-prefix pass start? No once `stop` is cancelled or
    /// `--max-transfer` is used up (its blocks could not start anyway).
    pub fn before_pass(&self) -> bool {
        if let Some(max) = self.inner.max_transfer {
            if self.inner.started_bytes.load(Relaxed) >= max {
                self.inner.reach(Limit::MaxTransfer);
            }
        }
        if self.inner.stop.is_cancelled() {
            self.cut_short();
            return false;
        }
        true
    }

    /// Work was left unstarted because `stop` was cancelled.
    pub fn cut_short(&self) {
        self.inner.cut_short.store(true, Relaxed);
    }

    /// The limit that stopped the run: reached, with work left for a rerun,
    /// and no signal (a signal says more: exit 130).
    pub fn stopped_by(&self) -> Option<Limit> {
        let i = &self.inner;
        match i.reached.get() {
            Some(&l) if i.cut_short.load(Relaxed) && !self.signalled() => Some(l),
            _ => None,
        }
    }

    /// Whether a limit was reached (whether or not it left work undone).
    pub fn reached(&self) -> Option<Limit> {
        self.inner.reached.get().copied()
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        if let Some(t) = &self.timer {
            t.abort();
        }
    }
}

impl Inner {
    /// `limit` is reached: say so once, and stop starting work.
    fn reach(&self, limit: Limit) {
        if self.reached.set(limit).is_ok() && !self.signal.is_cancelled() {
            let value = match limit {
                Limit::MaxDuration => {
                    human_duration(self.max_duration.unwrap_or_default().as_secs_f64())
                }
                Limit::MaxTransfer => human_bytes(self.max_transfer.unwrap_or_default()),
            };
            self.reporter.log(
                Level::Warn,
                &format!(
                    "{} {value} reached: no new block starts; the blocks in flight finish. Rerun \
                     the same command to continue: the destination index is the checkpoint.",
                    limit.flag()
                ),
            );
        }
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl Reporter for Quiet {
        fn log(&self, _: Level, _: &str) {}
        fn indexes(&self, _: usize, _: usize) {}
        fn planned(&self, _: &crate::plan::PlanCounts, _: usize, _: usize) {}
        fn block_started(&self, _: u64, _: u64, _: &crate::plan::Job) {}
        fn block_finished(&self, _: &crate::plan::Job, _: Option<&str>) {}
    }

    #[test]
    fn max_transfer_admits_blocks_until_their_sizes_reach_it() {
        let signal = CancellationToken::new();
        let l = Limits::start(None, Some(100), &signal, Arc::new(Quiet));
        assert!(l.admit(60));
        assert!(l.admit(60), "the block that crosses the limit starts");
        assert!(!l.before_pass(), "no further pass: the limit is used up");
        assert!(!l.admit(1));
        assert!(l.stop().is_cancelled());
        assert_eq!(l.stopped_by(), Some(Limit::MaxTransfer));
        assert!(!signal.is_cancelled(), "a limit is not a signal");
        // A first block bigger than the limit still starts.
        let l = Limits::start(None, Some(10), &signal, Arc::new(Quiet));
        assert!(l.admit(1000));
        assert!(!l.admit(1));
    }

    #[test]
    fn a_limit_that_left_nothing_undone_stopped_nothing() {
        let signal = CancellationToken::new();
        let l = Limits::start(None, Some(100), &signal, Arc::new(Quiet));
        assert!(l.admit(100));
        // The last pass: nothing else wants to start.
        assert_eq!(l.stopped_by(), None);
        assert!(!l.before_pass(), "a further pass would not start");
        assert_eq!(l.stopped_by(), Some(Limit::MaxTransfer));
    }

    #[test]
    fn no_limits_admit_everything_and_a_signal_is_not_a_limit() {
        let signal = CancellationToken::new();
        let l = Limits::start(Some(Duration::ZERO), Some(0), &signal, Arc::new(Quiet));
        assert!(l.admit(u64::MAX / 2) && l.admit(u64::MAX / 2));
        assert!(l.before_pass());
        signal.cancel();
        assert!(l.stop().is_cancelled());
        assert!(!l.before_pass());
        assert!(l.signalled());
        assert_eq!(l.stopped_by(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn max_duration_stops_new_work_when_it_elapses() {
        let signal = CancellationToken::new();
        let l = Limits::start(
            Some(Duration::from_secs(3600)),
            None,
            &signal,
            Arc::new(Quiet),
        );
        tokio::time::sleep(Duration::from_secs(3599)).await;
        assert!(l.before_pass());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(l.stop().is_cancelled());
        assert_eq!(l.reached(), Some(Limit::MaxDuration));
        assert!(!l.before_pass());
        assert_eq!(l.stopped_by(), Some(Limit::MaxDuration));
    }
}
