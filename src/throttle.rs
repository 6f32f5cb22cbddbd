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

/// Parse a rate like `50M`, `1.5G`, `800k`, `1000000` (bytes per second;
/// K/M/G/T are powers of 1024, as rclone's `--bwlimit`). `0` or `off` = none.
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") || t == "0" {
        return Ok(None);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown unit in rate {s:?}: use K, M, G or T")),
            };
            (&t[..t.len() - 1], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate: write e.g. 50M for 50 MiB/s"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("rate {s:?} must be positive"));
    }
    Ok(Some((n * mult as f64) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50M").unwrap(), Some(50 << 20));
        assert_eq!(parse_rate("1.5k").unwrap(), Some(1536));
        assert_eq!(parse_rate("1000").unwrap(), Some(1000));
        assert_eq!(parse_rate("off").unwrap(), None);
        assert_eq!(parse_rate("10MB/s").unwrap(), Some(10 << 20));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-5M").is_err());
    }

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
