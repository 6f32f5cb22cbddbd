//! Soak (issue 5): 5000 blocks against servers that fail all the time. 10 %
//! of requests on every service answer 500/503, 2 % of source bodies arrive
//! truncated and 2 % corrupt. Repeated runs must converge to a complete
//! destination: every block on exactly the first N=2 writable services of
//! its probe order, byte-identical to its source.

mod common;

use std::time::Instant;

use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::{Faults, SizeRange};

const BLOCKS: usize = 5000;
const MAX_RUNS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_5000_blocks_with_faults_converges() {
    let t = Instant::now();
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(
        BLOCKS,
        &[SizeRange {
            min: 1024,
            max: 8192,
        }],
        2,
        5000,
    );
    for i in 0..p.src.len() {
        p.src.set_faults(
            i,
            Faults {
                fail_rate: 0.10,
                truncate_rate: 0.02,
                corrupt_rate: 0.02,
                seed: 100 + i as u64,
                ..Faults::default()
            },
        );
    }
    for i in 0..p.dst.len() {
        p.dst.set_faults(
            i,
            Faults {
                fail_rate: 0.10,
                seed: 200 + i as u64,
                ..Faults::default()
            },
        );
    }
    let seeded = t.elapsed();
    let mut runs = 0;
    loop {
        runs += 1;
        let r = p
            .rsync(&["-replications", "2", "-q", "--transfers", "16"])
            .await;
        // Never "success" with blocks missing, never a hard stop: either
        // complete (0) or some blocks left for the next run (1).
        assert!(r.code == 0 || r.code == 1, "run {runs}: {}", r.stderr);
        assert!(!r.all().contains("panicked"), "{}", r.all());
        if r.code == 0 {
            break;
        }
        assert!(
            runs < MAX_RUNS,
            "not converged after {runs} runs:\n{}",
            r.stderr
        );
    }
    let injected: u64 = (0..p.src.len())
        .chain(0..p.dst.len())
        .enumerate()
        .map(|(k, i)| {
            if k < p.src.len() {
                p.src.counters(i).faults_injected
            } else {
                p.dst.counters(i).faults_injected
            }
        })
        .sum();
    p.assert_placed(&blocks, 2);
    // Nothing corrupt anywhere on the destination, and nothing extra.
    let mut copies = 0;
    for i in 0..p.dst.len() {
        for (h, _) in p.dst.blocks(i) {
            let data = p.dst.get_block(i, &h).unwrap();
            assert_eq!(BlockHash::of(&data), h, "corrupt {h} on dst {i}");
            copies += 1;
        }
    }
    assert_eq!(copies, 2 * BLOCKS);
    assert!(injected > 1000, "only {injected} faults injected");
    // Converged means converged: one more run (faults still on) moves
    // nothing at all.
    p.src.reset_counters();
    p.dst.reset_counters();
    let r = p
        .rsync(&["-replications", "2", "-q", "--transfers", "16"])
        .await;
    r.expect(0);
    assert_eq!(p.total_src_gets(), 0, "{}", r.stderr);
    assert_eq!(p.total_dst_puts(), 0, "{}", r.stderr);
    eprintln!(
        "soak: {BLOCKS} blocks, {injected} faults injected, converged after {runs} run(s); \
         seeding {seeded:.1?}, total {:.1?}",
        t.elapsed()
    );
}
