//! Adaptive per-service concurrency against a keepstore that refuses
//! requests beyond its `MaxConcurrentRequests` with 503 (keepstore-sim's
//! `max_concurrent`, no queue): the adaptive limit finds the knee and backs
//! off, where a fixed limit far above it keeps hitting the wall.

mod common;

use common::*;
use keepstore_sim::ClusterConfig;

/// A destination of one small keepstore: 8 requests at a time, no queue,
/// latency growing with its load.
async fn small_destination() -> Pair {
    let p = Pair::with(
        signed(2, SRC_TOKEN, SRC_KEY),
        ClusterConfig::new(1, DST_TOKEN),
    )
    .await;
    set_all(
        &p.dst,
        &faults(|f| {
            f.max_concurrent = 8;
            f.max_queued = 0;
            f.latency_ms = 2;
            f.queue_latency_us = 300;
        }),
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limit_backs_off_where_a_fixed_one_keeps_hitting_the_wall() {
    // Adaptive (the default): a few 503s while it finds the knee, then few.
    let p = small_destination().await;
    let blocks = p.src.seed_blocks(400, &small(), 1, 91);
    let r = p
        .rsync(&["-replications", "1", "--retry-backoff", "5ms", "-v"])
        .await;
    r.expect(0);
    p.assert_placed(&blocks, 1);
    let adaptive = p.dst.counters(0);
    // A fixed limit of 64 (the keepstore takes 8): refused again and again.
    let q = small_destination().await;
    let blocks = q.src.seed_blocks(400, &small(), 1, 91);
    let r2 = q
        .rsync(&[
            "-replications",
            "1",
            "--retry-backoff",
            "5ms",
            "--fixed-concurrency",
            "--max-per-service",
            "64",
            "--retries",
            "30",
        ])
        .await;
    r2.expect(0);
    q.assert_placed(&blocks, 1);
    let fixed = q.dst.counters(0);
    eprintln!(
        "refused: adaptive {} of {} PUTs, fixed 64 {} of {}",
        adaptive.refused, adaptive.puts, fixed.refused, fixed.puts
    );
    assert!(
        adaptive.refused * 4 < fixed.refused.max(1),
        "adaptive refused {} of {} PUTs, fixed 64 refused {} of {}\n{}",
        adaptive.refused,
        adaptive.puts,
        fixed.refused,
        fixed.puts,
        r.stderr
    );
    // Said at -v: the limit came down.
    assert!(r.stderr.contains("concurrency limit"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_service_sees_more_than_max_per_service_requests_at_once() {
    // Keepstores with no limit of their own: what they have in flight is
    // what keep-rsync sends them, adaptive or fixed, at most the ceiling
    // (128 transfers would send far more).
    for fixed in [false, true] {
        let p = Pair::with(
            signed(2, SRC_TOKEN, SRC_KEY),
            ClusterConfig::new(2, DST_TOKEN),
        )
        .await;
        let slow = faults(|f| f.latency_ms = 3);
        set_all(&p.src, &slow);
        set_all(&p.dst, &slow);
        let blocks = p.src.seed_blocks(300, &small(), 1, 92);
        let mut args = vec!["-replications", "2", "--max-per-service", "3"];
        if fixed {
            args.push("--fixed-concurrency");
        }
        let r = p.rsync(&args).await;
        r.expect(0);
        p.assert_placed(&blocks, 2);
        for (side, c) in [("source", &p.src), ("destination", &p.dst)] {
            for i in 0..2 {
                let peak = c.counters(i).max_in_flight;
                assert!(
                    peak <= 3,
                    "{side} service {i} had {peak} requests in flight (fixed: {fixed})"
                );
                if fixed || side == "destination" {
                    assert!(peak >= 2, "{side} service {i}: the limit was never used");
                }
            }
        }
    }
}

/// `jobs` keep-rsync processes at once, `-prefix 0`, `-prefix 1`, ..., with
/// default flags (the default `--retry-backoff` too): prefix jobs sharing a
/// destination, as docs/scale-out.md runs them.
async fn prefix_jobs(p: &Pair, jobs: usize) -> Vec<Run> {
    let runs = (0..jobs).map(|i| {
        let mut args = p.base_args();
        args.extend(
            ["-replications", "1", "-prefix", &format!("{i:x}")]
                .iter()
                .map(|s| s.to_string()),
        );
        async move {
            let out = tokio::process::Command::new(bin())
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output();
            let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
                .await
                .expect("keep-rsync finished within 120 s")
                .expect("keep-rsync ran");
            Run::from(out)
        }
    });
    futures::future::join_all(runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_jobs_sharing_a_small_keepstore_are_rarely_refused() {
    // Four jobs into a keepstore that takes 8 requests: each one's fair
    // share is 2. With TCP's growth of one request per round trip each,
    // together they found its limit again within a round trip of every
    // cut, and about 30 % of the PUTs were refused; each job's growth now
    // shrinks with the refusals it meets (src/limiter.rs, "Sharing").
    let p = small_destination().await;
    let blocks = p.src.seed_blocks(4000, &small(), 1, 92);
    let runs = prefix_jobs(&p, 4).await;
    for r in &runs {
        r.expect(0);
    }
    let copied: Vec<_> = blocks
        .iter()
        .filter(|(h, _)| u8::from_str_radix(&h.to_string()[..1], 16).is_ok_and(|d| d < 4))
        .cloned()
        .collect();
    assert!(
        copied.len() > 800,
        "{} blocks in prefixes 0-3",
        copied.len()
    );
    p.assert_placed(&copied, 1);
    let c = p.dst.counters(0);
    assert!(c.max_in_flight <= 8);
    let share = c.refused as f64 / c.puts.max(1) as f64;
    eprintln!(
        "4 prefix jobs into a keepstore of 8: {} of {} PUTs refused ({:.1} %)",
        c.refused,
        c.puts,
        share * 100.0
    );
    assert!(
        share < 0.15,
        "{} of {} PUTs refused ({:.1} %)",
        c.refused,
        c.puts,
        share * 100.0
    );
}
