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
    assert!(
        adaptive.max_in_flight <= 8,
        "the keepstore never had more than its limit in flight"
    );
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
