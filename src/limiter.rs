//! How many requests one store takes at a time: a limit that adapts to the
//! store (docs/design.md, "Adaptive concurrency"), between a floor and
//! `--max-per-service`, or a fixed one (`--fixed-concurrency`).
//!
//! The controller is TCP's congestion control applied to requests in flight
//! (AIMD, RFC 5681, with a delay signal in the spirit of TCP Vegas):
//!
//! - **Slow start**: the limit starts at [`INITIAL`] and grows by one for each
//!   request that succeeds while the limit was reached (so it doubles every
//!   round trip) until the first sign of overload.
//! - **Congestion avoidance**: then it grows by `gain/limit` per such
//!   success (`gain` per round trip), except in the round trip after a cut,
//!   whose answers were asked for before it.
//! - **Sharing**: `gain` starts at 1 (TCP's one request per round trip),
//!   each refusal halves it and each success regrows it a little, so that
//!   it settles where [`TARGET_REFUSED`] of the answers are refusals, or at
//!   [`GAIN_MIN`]. One client alone keeps a gain near 1. N clients sharing
//!   a store (16 prefix jobs) each keep about 1/N of it: their growth adds
//!   up, and with a gain of 1 each they would find the store's limit again
//!   within a round trip of every cut (a third of the requests refused).
//! - **Overload** is an answer that says "slow down": 503 (keepstore's
//!   answer once `MaxConcurrentRequests` are in flight; S3's SlowDown) or
//!   429. The limit is multiplied by [`DECREASE`] for the first in a round
//!   trip (the smoothed time of the store's requests, RFC 6298's SRTT) and
//!   by [`DECREASE_EACH`] for each further one: a refusal is answered at
//!   once and frees its slot, so one per round trip would let a queue of
//!   requests run into the wall one after the other.
//! - **Queueing**: a block request's time to its first answer, compared
//!   with the smallest seen (the store's round trip when idle): past
//!   [`QUEUE_FACTOR`] times that, the store is queueing requests, and the
//!   limit stops growing (and leaves slow start); past twice that, it is
//!   cut as for an overload.
//!
//! The limit only grows while there is demand for it, so a store that few
//! requests go to keeps a small limit. A change of a quarter or more is a
//! `-v` event (`concurrency`), and the current limit is the metric
//! `keep_rsync_service_concurrency_limit`.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Where an adaptive limit starts.
pub const INITIAL: f64 = 8.0;
/// The smallest adaptive limit: one request, so that many jobs sharing a
/// small keepstore can together stay under what it takes.
pub const FLOOR: f64 = 1.0;
/// What an overload multiplies the limit by, once per round trip.
pub const DECREASE: f64 = 0.7;
/// What each further overload answer multiplies it by: a refusal comes back
/// at once and frees its slot, so a burst of them is a burst of requests
/// the service could not take, each of which must count.
pub const DECREASE_EACH: f64 = 0.9;
/// The share of requests refused that the growth rate steers to (see
/// [`State::gain`]).
pub const TARGET_REFUSED: f64 = 0.005;
/// The smallest growth rate, in requests per round trip. Sixteen prefix
/// jobs into a keepstore taking 32 requests (bench scenario 9 c), after
/// their first 2 s: 1/32 left 1.3 % of the PUTs refused, 1/64 0.75 %, 1/128
/// 0.36 % but with the last jobs slower to take up what finished jobs left.
pub const GAIN_MIN: f64 = 1.0 / 64.0;
/// What each refusal multiplies the growth rate by.
const GAIN_DOWN: f64 = 0.5;
/// What each success multiplies the growth rate by: chosen so that rate
/// holds still when [`TARGET_REFUSED`] of the answers are refusals
/// (`(1 - t) ln(1 + up) + t ln(GAIN_DOWN) = 0`).
const GAIN_UP: f64 = std::f64::consts::LN_2 * TARGET_REFUSED / (1.0 - TARGET_REFUSED);
/// A first answer slower than this many times the idle round trip means
/// the store is queueing.
pub const QUEUE_FACTOR: f64 = 2.0;
/// Added to the idle round trip before comparing (timer noise, scheduling).
const SLACK: Duration = Duration::from_millis(5);

/// One store's limit on requests in flight.
pub struct Limiter {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    notify: Notify,
    ceiling: f64,
    adaptive: bool,
    /// `side service`, for the `-v` event.
    name: String,
}

struct State {
    limit: f64,
    slow_start: bool,
    /// The smallest time to a first answer seen: the idle round trip.
    base: Option<Duration>,
    /// Smoothed request time (RFC 6298's SRTT, of every request that
    /// succeeded): one "round trip" for the once-per-round-trip cut.
    srtt: Option<Duration>,
    last_cut: Option<Instant>,
    /// The limit when this round trip's first cut came: its further cuts
    /// go no lower than half of it.
    cut_from: f64,
    /// The limit last told in a `concurrency` event.
    said: f64,
    /// Congestion avoidance's growth, in requests per round trip: 1 as in
    /// TCP while the store refuses nothing, halved by each refusal and
    /// regrown a little by each success, so that it settles where
    /// [`TARGET_REFUSED`] of the answers are refusals. With one client that
    /// stays near 1; with N clients sharing a store, each refusal is one
    /// client's overshoot and every client's growth adds up, so each one's
    /// must shrink about N-fold to keep the store's refusals as rare.
    gain: f64,
}

/// A slot of the limit, given back when dropped.
pub struct Permit {
    limiter: Arc<Limiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Relaxed);
        self.limiter.notify.notify_one();
    }
}

/// What a request's answer says about the store's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// It succeeded after `took`; `headers` when that is the time to the
    /// first answer, which measures the store's queue (a GET's headers), not
    /// a body's transfer (a PUT).
    Ok { took: Duration, headers: bool },
    /// 503 or 429: slow down.
    Overload,
    /// Anything else: says nothing about load.
    Neutral,
}

impl Limiter {
    /// An adaptive limit up to `ceiling`, or a fixed one of `ceiling`.
    pub fn new(ceiling: usize, adaptive: bool, name: String) -> Arc<Limiter> {
        let ceiling = ceiling.max(1) as f64;
        let limit = if adaptive {
            INITIAL.min(ceiling)
        } else {
            ceiling
        };
        Arc::new(Limiter {
            state: Mutex::new(State {
                limit,
                slow_start: true,
                base: None,
                srtt: None,
                last_cut: None,
                cut_from: limit,
                said: limit,
                gain: 1.0,
            }),
            in_flight: AtomicUsize::new(0),
            notify: Notify::new(),
            ceiling,
            adaptive,
            name,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current limit (whole requests).
    pub fn limit(&self) -> usize {
        (self.state().limit as usize).max(1)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Wait for a slot.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let limit = self.limit();
            let mut n = self.in_flight.load(Relaxed);
            while n < limit {
                match self
                    .in_flight
                    .compare_exchange_weak(n, n + 1, Relaxed, Relaxed)
                {
                    Ok(_) => {
                        return Permit {
                            limiter: self.clone(),
                        }
                    }
                    Err(now) => n = now,
                }
            }
            notified.await;
        }
    }

    /// Learn from one request's answer.
    pub fn observe(&self, signal: Signal) {
        if !self.adaptive {
            return;
        }
        let grew = {
            let mut s = self.state();
            let before = s.limit;
            match signal {
                Signal::Neutral => {}
                Signal::Overload => {
                    s.gain = (s.gain * GAIN_DOWN).max(GAIN_MIN);
                    self.cut(&mut s)
                }
                Signal::Ok { took, headers } => {
                    s.srtt = Some(match s.srtt {
                        Some(srtt) => srtt.mul_f64(0.875) + took.mul_f64(0.125),
                        None => took,
                    });
                    let queueing = match headers.then_some(took) {
                        Some(t) => {
                            let base = *s.base.get_or_insert(t);
                            if t < base {
                                s.base = Some(t);
                            }
                            let base = s.base.unwrap_or(t).as_secs_f64() + SLACK.as_secs_f64();
                            let t = t.as_secs_f64();
                            if t > 2.0 * QUEUE_FACTOR * base {
                                self.cut(&mut s);
                                true
                            } else {
                                t > QUEUE_FACTOR * base
                            }
                        }
                        None => false,
                    };
                    s.gain = (s.gain * (1.0 + GAIN_UP)).min(1.0);
                    // Answers within a round trip of a cut were asked for
                    // before it: they do not say the lower limit is safe.
                    let recovering = s
                        .last_cut
                        .is_some_and(|t| t.elapsed() < s.srtt.unwrap_or(took));
                    if queueing {
                        s.slow_start = false;
                    } else if !recovering && self.in_flight() + 1 >= s.limit as usize {
                        // Demand reached the limit: grow.
                        let step = if s.slow_start { 1.0 } else { s.gain / s.limit };
                        s.limit = (s.limit + step).min(self.ceiling);
                    }
                }
            }
            self.tell(&mut s);
            s.limit > before
        };
        if grew {
            self.notify.notify_waiters();
        }
    }

    /// Multiply the limit down, once per round trip.
    fn cut(&self, s: &mut State) {
        let window = s
            .srtt
            .unwrap_or(Duration::from_millis(50))
            .max(Duration::from_millis(1));
        let now = Instant::now();
        let cut = if s.last_cut.is_some_and(|t| now.duration_since(t) < window) {
            (s.limit * DECREASE_EACH).max(s.cut_from / 2.0)
        } else {
            s.last_cut = Some(now);
            s.cut_from = s.limit;
            s.limit * DECREASE
        };
        s.slow_start = false;
        s.limit = cut.min(s.limit).max(FLOOR.min(self.ceiling));
    }

    /// A `-v` event when the limit moved by a quarter since the last one.
    fn tell(&self, s: &mut State) {
        let (now, said) = (s.limit.floor(), s.said.floor());
        if (now - said).abs() >= (said / 4.0).max(2.0) {
            tracing::info!(
                event = "concurrency",
                service = self.name.as_str(),
                limit = now as u64,
                before = said as u64,
                "{}: concurrency limit {said} -> {now}",
                self.name
            );
            s.said = s.limit;
        }
    }
}

/// What a request's outcome says about load: 503 and 429 are overload.
pub fn signal_of<T>(
    r: &Result<T, crate::protocol::client::Failure>,
    took: Duration,
    headers: bool,
) -> Signal {
    match r {
        Ok(_) => Signal::Ok { took, headers },
        Err(f) if matches!(f.status, Some(503) | Some(429)) => Signal::Overload,
        Err(_) => Signal::Neutral,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_limits_are_a_semaphore() {
        let l = Limiter::new(3, false, "t".into());
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let _c = l.acquire().await;
        assert_eq!(l.in_flight(), 3);
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        l.observe(Signal::Overload);
        assert_eq!(l.limit(), 3, "a fixed limit does not adapt");
        drop(a);
        let _d = waiter.await.unwrap();
        assert_eq!(l.in_flight(), 3);
    }

    /// Drive the limit as a saturating client would: `limit` requests in
    /// flight each round trip (a finished one replaced at once), those
    /// beyond `capacity` refused with 503.
    fn simulate(l: &Limiter, capacity: usize, rounds: usize) -> Vec<usize> {
        let mut seen = Vec::new();
        for _ in 0..rounds {
            let n = l.limit();
            for i in 0..n {
                l.in_flight.store(l.limit(), Relaxed);
                if i >= capacity {
                    l.observe(Signal::Overload);
                } else {
                    l.observe(Signal::Ok {
                        took: Duration::from_millis(10),
                        headers: true,
                    });
                }
            }
            l.in_flight.store(0, Relaxed);
            seen.push(l.limit());
            // The next round trip: a cut may happen again.
            l.state().last_cut = None;
        }
        seen
    }

    #[test]
    fn slow_start_then_sawtooth_below_the_knee() {
        let l = Limiter::new(512, true, "t".into());
        let seen = simulate(&l, 40, 60);
        // Slow start doubles: 8, 16, 32, 64 (refused) ...
        assert_eq!(&seen[..3], &[16, 32, 64], "{seen:?}");
        // ... then it stays around the knee, never far above it.
        let tail = &seen[10..];
        assert!(tail.iter().all(|&n| (20..=45).contains(&n)), "{seen:?}");
    }

    /// `clients` limiters sharing a store that takes `capacity` requests
    /// at once, each sending its limit every round trip (in turn, one
    /// request each, so the refusals beyond `capacity` fall on whoever
    /// asks last): the share refused over the last half of `rounds`.
    fn simulate_shared(clients: usize, capacity: usize, rounds: usize) -> f64 {
        let ls: Vec<_> = (0..clients)
            .map(|i| Limiter::new(128, true, format!("t{i}")))
            .collect();
        let (mut asked, mut refused) = (0usize, 0usize);
        for round in 0..rounds {
            let wants: Vec<usize> = ls.iter().map(|l| l.limit()).collect();
            let most = *wants.iter().max().unwrap_or(&0);
            let mut admitted = 0;
            // Who asks first rotates, as arrivals do.
            for k in 0..most {
                for j in 0..clients {
                    let i = (j + round) % clients;
                    if k >= wants[i] {
                        continue;
                    }
                    let l = &ls[i];
                    l.in_flight.store(wants[i], Relaxed);
                    let over = admitted >= capacity;
                    admitted += 1;
                    l.observe(if over {
                        Signal::Overload
                    } else {
                        Signal::Ok {
                            took: Duration::from_millis(10),
                            headers: false,
                        }
                    });
                    if round >= rounds / 2 {
                        asked += 1;
                        refused += over as usize;
                    }
                }
            }
            // A round is a round trip: its cut is over by the next one
            // (no time passes here for the limiter's own clock to tell).
            for l in &ls {
                l.in_flight.store(0, Relaxed);
                l.state().last_cut = None;
            }
        }
        refused as f64 / asked.max(1) as f64
    }

    #[test]
    fn clients_sharing_a_store_rarely_find_its_limit() {
        // 16 prefix jobs sharing a keepstore of 32 (bench scenario 9 c):
        // with TCP's growth of one request per round trip each, a third of
        // the requests would be refused.
        let shared = simulate_shared(16, 32, 2000);
        assert!(shared < 0.03, "{:.1} % refused", shared * 100.0);
        // One client alone still probes at about one request per round trip.
        let alone = simulate_shared(1, 32, 2000);
        assert!(alone < 0.01, "{:.1} % refused", alone * 100.0);
    }

    #[test]
    fn no_growth_in_the_round_trip_after_a_cut() {
        let l = Limiter::new(100, true, "t".into());
        let ok = Signal::Ok {
            took: Duration::from_secs(10),
            headers: false,
        };
        l.observe(ok); // the round trip (SRTT) is now 10 s
        l.observe(Signal::Overload);
        let cut = l.state().limit;
        l.in_flight.store(100, Relaxed);
        for _ in 0..50 {
            l.observe(ok);
        }
        assert_eq!(
            l.state().limit,
            cut,
            "grew on answers asked for before the cut"
        );
        // A round trip later, successes at the limit grow it again.
        l.state().last_cut = Instant::now().checked_sub(Duration::from_secs(11));
        l.observe(ok);
        assert!(l.state().limit > cut);
        l.in_flight.store(0, Relaxed);
    }

    #[test]
    fn refusals_slow_the_growth_and_successes_restore_it() {
        let l = Limiter::new(100, true, "t".into());
        for _ in 0..20 {
            l.observe(Signal::Overload);
        }
        assert_eq!(l.state().gain, GAIN_MIN);
        let ok = Signal::Ok {
            took: Duration::from_millis(1),
            headers: false,
        };
        // At TARGET_REFUSED refusals it holds still (within rounding)...
        l.state().gain = 0.25;
        for i in 0..20_000 {
            l.observe(if i % 200 == 0 { Signal::Overload } else { ok });
        }
        let g = l.state().gain;
        assert!((0.1..=0.6).contains(&g), "{g}");
        // ...and without refusals it is back to 1 in a few thousand answers.
        for _ in 0..2_000 {
            l.observe(ok);
        }
        assert_eq!(l.state().gain, 1.0);
    }

    #[test]
    fn grows_to_the_ceiling_without_overload_and_only_with_demand() {
        let l = Limiter::new(100, true, "t".into());
        let seen = simulate(&l, usize::MAX, 20);
        assert_eq!(*seen.last().unwrap(), 100, "{seen:?}");
        let idle = Limiter::new(100, true, "t".into());
        for _ in 0..1000 {
            // One request at a time: the limit is never reached.
            idle.observe(Signal::Ok {
                took: Duration::from_millis(10),
                headers: true,
            });
        }
        assert_eq!(idle.limit(), INITIAL as usize);
    }

    #[test]
    fn queueing_stops_growth_and_heavy_queueing_cuts() {
        let l = Limiter::new(512, true, "t".into());
        l.in_flight.store(8, Relaxed);
        l.observe(Signal::Ok {
            took: Duration::from_millis(10),
            headers: true,
        });
        let n = l.limit();
        // Over twice the idle round trip (plus slack): queueing, no growth.
        l.observe(Signal::Ok {
            took: Duration::from_millis(40),
            headers: true,
        });
        assert_eq!(l.limit(), n);
        // Ten times: cut.
        l.observe(Signal::Ok {
            took: Duration::from_millis(100),
            headers: true,
        });
        assert!(l.limit() < n, "{} !< {n}", l.limit());
        // Never below the floor.
        for _ in 0..50 {
            l.state().last_cut = None;
            l.observe(Signal::Overload);
        }
        assert_eq!(l.limit(), FLOOR as usize);
    }
}
