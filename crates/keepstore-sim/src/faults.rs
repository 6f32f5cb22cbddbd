//! Fault injection: the knobs ([`Faults`]) and the rule that turns them into a
//! decision for one request ([`Faults::decide`]).
//!
//! Decisions are *seeded and reproducible regardless of concurrency*: each is
//! a pure function of (fault seed, service index, operation, block hash,
//! attempt number), where the attempt number counts the requests for that
//! (service, operation, hash) since the faults were last set. There is no
//! shared random stream, so the order in which concurrent requests arrive
//! cannot change which of them fail: the 1st GET of a hash on service 2 fails
//! or not the same way on every run, and the 2nd attempt draws again.

use serde::{Deserialize, Serialize};

use keep_protocol::BlockHash;

/// Fault knobs for one service. All rates are fractions in 0.0..=1.0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Added before every Keep API answer, in milliseconds.
    pub latency_ms: u64,
    /// Fraction of Keep requests (GET, HEAD, PUT, index) answered 500 or 503.
    pub fail_rate: f64,
    /// Fraction of connections closed without an answer.
    pub drop_rate: f64,
    /// Fraction of GET bodies cut short after the headers promised the full
    /// `Content-Length` (the connection is then closed).
    pub truncate_rate: f64,
    /// Fraction of GET bodies sent at full length with one byte flipped.
    pub corrupt_rate: f64,
    /// PUT answers 507 (this service is full).
    pub full: bool,
    /// Index responses lack the terminating blank line.
    pub index_incomplete: bool,
    /// Index responses include a malformed line.
    pub index_malformed: bool,
    /// Index responses list every block, whatever prefix was asked for (a
    /// service, or a proxy in front of one, that drops the prefix).
    pub index_ignores_prefix: bool,
    /// Every GET body stalls this long half-way through (0 = never).
    pub stall_ms: u64,
    /// Bytes per second at which each GET body is sent and each PUT body
    /// read (0 = as fast as possible): one request's share of a long link,
    /// or a disk. Blocks then take time in proportion to their size.
    pub link_rate: u64,
    /// Seed of every fault decision.
    pub seed: u64,
    /// Keep requests handled at once (0 = unlimited), like keepstore's
    /// `API.MaxConcurrentRequests`: beyond it a request waits in the queue
    /// (`max_queued`) or is answered 503, empty body, counted in `refused`.
    pub max_concurrent: usize,
    /// Requests that may wait for a `max_concurrent` slot, oldest served
    /// first (0 = none: answer 503 at once), like `API.MaxQueuedRequests`.
    /// When the queue is full the newcomer is answered 503.
    pub max_queued: usize,
    /// A queued request still waiting after this long is answered 503
    /// (0 = it waits as long as it takes), like keepstore's
    /// `API.RequestTimeout` ending a wait in its queue.
    pub queue_timeout_ms: u64,
    /// Added to `latency_ms` for each request in flight at this service
    /// (itself included, counted when it was admitted), in microseconds:
    /// a disk or CPU that serves requests in parallel but slows as they
    /// pile up.
    pub queue_latency_us: u64,
}

/// The operation a fault decision is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultOp {
    Get = 1,
    Head = 2,
    Put = 3,
    Index = 4,
}

/// What the faults say about one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultDecision {
    /// Close the connection without answering.
    pub drop: bool,
    /// Answer with this status (500 or 503) instead of serving.
    pub fail: Option<u16>,
    /// GET: cut the body short (at `cut_at` permille of its length).
    pub truncate: bool,
    /// GET: flip one byte (at `corrupt_at` permille of its length).
    pub corrupt: bool,
    /// Where a truncation or corruption happens, in permille of the body.
    pub position_permille: u32,
}

impl FaultDecision {
    /// Whether any fault fires.
    pub fn any(&self) -> bool {
        self.drop || self.fail.is_some() || self.truncate || self.corrupt
    }
}

/// splitmix64: a stable 64-bit mixer (also used by the synthetic index).
#[inline]
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform fraction in [0, 1) from 64 random bits.
#[inline]
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    /// Whether any knob is set (latency, stalls and index faults included).
    pub fn is_active(&self) -> bool {
        self.latency_ms > 0
            || self.fail_rate > 0.0
            || self.drop_rate > 0.0
            || self.truncate_rate > 0.0
            || self.corrupt_rate > 0.0
            || self.full
            || self.index_incomplete
            || self.index_malformed
            || self.index_ignores_prefix
            || self.stall_ms > 0
            || self.max_concurrent > 0
            || self.queue_latency_us > 0
    }

    /// The delay before an answer when `in_flight` requests are in flight
    /// (this one included; 0 for a refusal): `latency_ms` plus
    /// `queue_latency_us` per request.
    pub fn delay(&self, in_flight: usize) -> std::time::Duration {
        std::time::Duration::from_millis(self.latency_ms).saturating_add(
            std::time::Duration::from_micros(
                self.queue_latency_us.saturating_mul(in_flight as u64),
            ),
        )
    }

    /// The decision for attempt `attempt` (0-based) of `op` on `hash` at
    /// service `service`: a pure function of its arguments and the knobs.
    /// Index requests use the MD5 of their prefix as `hash`.
    pub fn decide(
        &self,
        service: usize,
        op: FaultOp,
        hash: &BlockHash,
        attempt: u64,
    ) -> FaultDecision {
        let base = {
            let mut x = splitmix64(self.seed ^ 0xA076_1D64_78BD_642F);
            x = splitmix64(x ^ service as u64);
            x = splitmix64(x ^ op as u64);
            let (hi, lo) = hash.0.split_at(8);
            let hi = u64::from_be_bytes(hi.try_into().unwrap_or([0; 8]));
            let lo = u64::from_be_bytes(lo.try_into().unwrap_or([0; 8]));
            x = splitmix64(x ^ hi);
            x = splitmix64(x ^ lo);
            splitmix64(x ^ attempt)
        };
        let draw = |salt: u64| unit(splitmix64(base ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93)));
        let mut d = FaultDecision::default();
        if draw(1) < self.drop_rate {
            d.drop = true;
            return d;
        }
        if draw(2) < self.fail_rate {
            d.fail = Some(if draw(3) < 0.5 { 500 } else { 503 });
            return d;
        }
        if op == FaultOp::Get {
            d.truncate = draw(4) < self.truncate_rate;
            d.corrupt = !d.truncate && draw(5) < self.corrupt_rate;
            d.position_permille = (draw(6) * 1000.0) as u32;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_pure_and_attempts_differ() {
        let f = Faults {
            fail_rate: 0.5,
            seed: 7,
            ..Faults::default()
        };
        let h = BlockHash::of(b"foo");
        let a: Vec<_> = (0..64).map(|n| f.decide(2, FaultOp::Get, &h, n)).collect();
        let b: Vec<_> = (0..64).map(|n| f.decide(2, FaultOp::Get, &h, n)).collect();
        assert_eq!(a, b);
        let fails = a.iter().filter(|d| d.fail.is_some()).count();
        assert!(fails > 10 && fails < 54, "{fails}");
        let other = Faults {
            seed: 8,
            ..f.clone()
        };
        let c: Vec<_> = (0..64)
            .map(|n| other.decide(2, FaultOp::Get, &h, n))
            .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn zero_rates_never_fire() {
        let f = Faults::default();
        let h = BlockHash::of(b"x");
        assert!((0..1000).all(|n| !f.decide(0, FaultOp::Put, &h, n).any()));
        let all = Faults {
            fail_rate: 1.0,
            ..Faults::default()
        };
        assert!((0..100).all(|n| all.decide(0, FaultOp::Put, &h, n).fail.is_some()));
    }
}
