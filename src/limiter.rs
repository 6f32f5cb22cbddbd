//! How many requests one store takes at a time: a limit that adapts to the
//! store (docs/design.md, "Adaptive concurrency"), between a floor and
//! `--max-per-service`, or a fixed one (`--fixed-concurrency`).
//!
//! The controller is TCP's congestion control applied to requests in flight
//! (AIMD, RFC 5681, with a delay signal in the spirit of TCP Vegas):
//!
//! - **Slow start**: the limit starts at [`INITIAL`] and grows by one for each
//!   request that succeeds while the limit was reached (so it doubles every
//!   round trip) until the first sign of overload. When the first answer
//!   shows a long idle round trip, it starts higher at once (up to
//!   [`LONG_START_MAX`]): requests on the wire do not load the store, so
//!   `INITIAL` requests' worth of the store's work at a LAN round trip
//!   ([`LAN_RTT`]) is `INITIAL × rtt / LAN_RTT` requests in flight at `rtt`.
//!   A limit lives as long as the run, so later passes start from what the
//!   store took in earlier ones.
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
//! - **Queueing** (TCP Vegas' and BBR's delay signal): the fastest first
//!   answer (a GET's headers, a small PUT from its last byte) of each round
//!   trip, compared with the fastest of the last [`BASE_WINDOW`] (the
//!   store's round trip when idle; a window, so that a path or store that
//!   got slower for good is learned, not held against an old minimum):
//!   past [`QUEUE_FACTOR`] times that, the store is queueing requests, and
//!   the limit stops growing (and leaves slow start) for the next round
//!   trip; past twice that, it is cut as for an overload. A round trip's
//!   fastest answer, not each answer: a single slow answer (S3's and
//!   MinIO's heavy tails, a request behind a big one) says nothing of a
//!   queue that every request would wait in.
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
/// A round trip at which [`INITIAL`] requests in flight are right.
pub const LAN_RTT: Duration = Duration::from_millis(10);
/// The highest start a long first round trip gives: Arvados keepstore's
/// default `API.MaxConcurrentRequests`, what a stock keepstore serves at
/// once without queueing.
pub const LONG_START_MAX: f64 = 64.0;
/// How long the idle round trip is remembered (the window of the minimum).
pub const BASE_WINDOW: Duration = Duration::from_secs(10);
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
    /// The smallest time to a first answer of the last [`BASE_WINDOW`]:
    /// the idle round trip.
    base: MinWindow,
    /// This round trip's fastest first answer, and when the round began.
    round: Option<(Instant, Duration)>,
    /// The last finished round trip's verdict: the store queues.
    queueing: bool,
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
                base: MinWindow::default(),
                round: None,
                queueing: false,
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
        self.observe_at(signal, Instant::now())
    }

    /// [`Limiter::observe`] of an answer that came at `now`.
    fn observe_at(&self, signal: Signal, now: Instant) {
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
                    self.cut(&mut s, now)
                }
                Signal::Ok { took, headers } => {
                    // The round trip so far (before this answer) decides
                    // whether this answer begins a new one.
                    if headers {
                        self.delay(&mut s, took, now);
                    }
                    s.srtt = Some(match s.srtt {
                        Some(srtt) => srtt.mul_f64(0.875) + took.mul_f64(0.125),
                        None => took,
                    });
                    let queueing = s.queueing;
                    s.gain = (s.gain * (1.0 + GAIN_UP)).min(1.0);
                    // Answers within a round trip of a cut were asked for
                    // before it: they do not say the lower limit is safe.
                    let recovering = s
                        .last_cut
                        .is_some_and(|t| now.saturating_duration_since(t) < s.srtt.unwrap_or(took));
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

    /// The delay signal: one first-answer time `took`, at `now`.
    fn delay(&self, s: &mut State, took: Duration, now: Instant) {
        if s.base.get(now).is_none() {
            // The first answer: a long idle round trip starts slow start
            // higher (see the module's doc).
            if s.slow_start {
                let start = INITIAL * took.as_secs_f64() / LAN_RTT.as_secs_f64();
                s.limit = s.limit.max(start.min(LONG_START_MAX).min(self.ceiling));
            }
        }
        s.base.add(took, now);
        let round = s.srtt.unwrap_or(took).max(Duration::from_millis(1));
        match s.round {
            Some((began, fastest)) if now.duration_since(began) < round => {
                s.round = Some((began, fastest.min(took)));
            }
            ended => {
                if let Some((_, fastest)) = ended {
                    let base = s.base.get(now).unwrap_or(fastest) + SLACK;
                    let t = fastest.as_secs_f64();
                    let base = base.as_secs_f64();
                    s.queueing = t > QUEUE_FACTOR * base;
                    if t > 2.0 * QUEUE_FACTOR * base {
                        self.cut(s, now);
                    } else if s.queueing {
                        s.slow_start = false;
                    }
                }
                s.round = Some((now, took));
            }
        }
    }

    /// Multiply the limit down, once per round trip.
    fn cut(&self, s: &mut State, now: Instant) {
        let window = s
            .srtt
            .unwrap_or(Duration::from_millis(50))
            .max(Duration::from_millis(1));
        let cut = if s
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < window)
        {
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

/// The smallest of the samples of about the last [`BASE_WINDOW`], kept as
/// two halves (the current one and the one before it): a sample is
/// forgotten between a half and a whole window after it was seen.
#[derive(Default)]
struct MinWindow {
    /// (when the half began, its minimum), the current half and the one
    /// before.
    now: Option<(Instant, Duration)>,
    before: Option<(Instant, Duration)>,
}

impl MinWindow {
    fn rotate(&mut self, at: Instant) {
        let half = BASE_WINDOW / 2;
        if let Some((began, _)) = self.now {
            if at.duration_since(began) >= half {
                self.before = self.now.take();
            }
        }
        if let Some((began, _)) = self.before {
            if at.duration_since(began) >= BASE_WINDOW {
                self.before = None;
            }
        }
    }

    fn add(&mut self, t: Duration, at: Instant) {
        self.rotate(at);
        self.now = Some(match self.now {
            Some((began, min)) => (began, min.min(t)),
            None => (at, t),
        });
    }

    fn get(&mut self, at: Instant) -> Option<Duration> {
        self.rotate(at);
        match (self.now, self.before) {
            (Some((_, a)), Some((_, b))) => Some(a.min(b)),
            (a, b) => a.or(b).map(|(_, m)| m),
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

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// `n` answers of `took` each, in the round trip starting `at` (the
    /// limit reached: demand), then the clock moves on past the round.
    fn round(l: &Limiter, at: &mut Instant, took: &[Duration]) {
        for &t in took {
            l.in_flight.store(l.limit(), Relaxed);
            l.observe_at(
                Signal::Ok {
                    took: t,
                    headers: true,
                },
                *at,
            );
        }
        l.in_flight.store(0, Relaxed);
        // The next round trip: past the SRTT, and past a cut's round.
        *at += l.state().srtt.unwrap_or(MS(10)) + MS(1);
        l.state().last_cut = None;
    }

    #[test]
    fn a_queue_every_request_waits_in_stops_growth_and_a_deep_one_cuts() {
        let l = Limiter::new(512, true, "t".into());
        let mut at = Instant::now();
        round(&l, &mut at, &[MS(10); 8]);
        round(&l, &mut at, &[MS(10); 16]);
        // Every answer of a round over twice the idle round trip (plus
        // slack): the store queues. The verdict comes with the round's
        // end; from then on, no growth.
        round(&l, &mut at, &[MS(40); 30]);
        round(&l, &mut at, &[MS(40); 30]);
        assert!(!l.state().slow_start);
        let held = l.limit();
        round(&l, &mut at, &[MS(40); 30]);
        assert_eq!(l.limit(), held, "grew while the store queues");
        // Every answer over four times: cut.
        round(&l, &mut at, &[MS(100); 30]);
        round(&l, &mut at, &[MS(100); 2]);
        assert!(l.limit() < held, "{} !< {held}", l.limit());
        // Never below the floor.
        for _ in 0..50 {
            l.state().last_cut = None;
            l.observe(Signal::Overload);
        }
        assert_eq!(l.limit(), FLOOR as usize);
    }

    #[test]
    fn one_slow_answer_in_a_round_trip_does_not_stop_growth() {
        // The single sample against the all-time minimum cut the limit
        // here (200 ms > 4 × (10 + 5) ms) and ended slow start.
        let l = Limiter::new(512, true, "t".into());
        let mut at = Instant::now();
        round(&l, &mut at, &[MS(10); 8]);
        let mut slow = vec![MS(10); 15];
        slow.insert(3, MS(200));
        round(&l, &mut at, &slow);
        let n = l.limit();
        round(&l, &mut at, &[MS(10); 32]);
        assert!(l.state().slow_start, "a heavy tail ended slow start");
        assert!(l.limit() > n, "{} !> {n}", l.limit());
    }

    #[test]
    fn the_idle_round_trip_is_a_window_that_forgets_an_old_minimum() {
        let t0 = Instant::now();
        let mut w = MinWindow::default();
        w.add(MS(10), t0);
        w.add(MS(50), t0 + Duration::from_secs(6));
        assert_eq!(w.get(t0 + Duration::from_secs(9)), Some(MS(10)));
        assert_eq!(w.get(t0 + BASE_WINDOW), Some(MS(50)));
        w.add(MS(60), t0 + Duration::from_secs(12));
        assert_eq!(w.get(t0 + Duration::from_secs(13)), Some(MS(50)));
        assert_eq!(w.get(t0 + Duration::from_secs(30)), None);

        // A store that got slower for good (50 ms instead of 10): queueing
        // at first, learned as its round trip within the window, after
        // which the limit grows again.
        let l = Limiter::new(512, true, "t".into());
        let mut at = t0;
        round(&l, &mut at, &[MS(10); 8]);
        round(&l, &mut at, &[MS(10); 16]);
        at += Duration::from_secs(1);
        for _ in 0..3 {
            round(&l, &mut at, &[MS(50); 32]);
        }
        let held = l.limit();
        round(&l, &mut at, &[MS(50); 32]);
        assert_eq!(l.limit(), held, "50 ms is a queue against 10 ms");
        at += BASE_WINDOW;
        for _ in 0..3 {
            round(&l, &mut at, &[MS(50); 64]);
        }
        assert!(l.limit() > held, "{} !> {held}", l.limit());
    }

    #[test]
    fn a_long_first_round_trip_starts_higher() {
        for (first, start) in [(1, 8), (10, 8), (20, 16), (50, 40), (100, 64), (2000, 64)] {
            let l = Limiter::new(512, true, "t".into());
            l.observe(Signal::Ok {
                took: MS(first),
                headers: true,
            });
            assert_eq!(l.limit(), start, "first answer {first} ms");
        }
        // Never above the ceiling, and not for a fixed limit.
        let l = Limiter::new(30, true, "t".into());
        l.observe(Signal::Ok {
            took: MS(100),
            headers: true,
        });
        assert_eq!(l.limit(), 30);
        // Not once slow start is over (a later pass's long round trip).
        let l = Limiter::new(512, true, "t".into());
        l.observe(Signal::Overload);
        let cut = l.limit();
        l.observe(Signal::Ok {
            took: MS(100),
            headers: true,
        });
        assert_eq!(l.limit(), cut);
    }
}
