//! `--bwlimit`: one token bucket shared by every transfer, so the whole run,
//! not each block, stays under the rate. Bytes are accounted as they arrive
//! from the source; a chunk larger than the bucket simply waits longer.

use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;

/// A token bucket: `rate` bytes per second, bursts of up to one second.
pub struct Throttle {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Throttle {
        let rate = bytes_per_sec.max(1) as f64;
        Throttle {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Wait until `n` bytes may pass.
    pub async fn take(&self, n: u64) {
        let wait = {
            let mut st = self.state.lock().await;
            let now = Instant::now();
            let (tokens, last) = *st;
            let tokens =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
            let left = tokens - n as f64;
            *st = (left, now);
            if left < 0.0 {
                Duration::from_secs_f64(-left / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces() {
        let t = Throttle::new(1000);
        let start = tokio::time::Instant::now();
        t.take(1000).await; // the initial burst
        t.take(2000).await; // two more seconds
        let el = start.elapsed();
        assert!(el >= Duration::from_millis(1900), "{el:?}");
    }
}
