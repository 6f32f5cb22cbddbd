//! Index scale (issue 4): a plan made in hash sub-prefix passes, as large
//! clusters are planned to bound memory, equals the plan made in one pass.
//! Runs against synthetic-index keepstore-sim clusters (no block data).

mod common;

use common::*;
use keepstore_sim::{ClusterConfig, SyntheticIndex};
use serde_json::Value;

fn synthetic(token: &str, fraction: f64) -> ClusterConfig {
    let mut c = ClusterConfig::new(4, token);
    c.synthetic = Some(SyntheticIndex {
        blocks: 200_000,
        seed: 42,
        replicas: 2,
        fraction,
    });
    c
}

async fn dry_run(p: &Pair, budget: &str, name: &str) -> Value {
    let report = p.path(name);
    p.rsync(&[
        "-replications",
        "2",
        "--dry-run",
        "--index-budget",
        budget,
        "--report",
        report.to_str().unwrap(),
    ])
    .await
    .expect(0);
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

fn index_requests(p: &Pair) -> u64 {
    (0..p.src.len())
        .map(|i| p.src.counters(i).index_requests)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_prefix_passes_plan_exactly_what_one_pass_plans() {
    // 200,000 blocks on 2 of 4 source services; 90 % of them at the destination.
    let p = Pair::with(synthetic(SRC_TOKEN, 1.0), synthetic(DST_TOKEN, 0.9)).await;
    let one = dry_run(&p, "100000000", "one.json").await;
    let single_pass_requests = index_requests(&p);
    p.src.reset_counters();
    // ~760,000 index lines (400k source, 360k destination) against a budget
    // of 10,000 lines per pass: 16 passes would hold ~47,500; 256 hold ~3,000.
    let many = dry_run(&p, "10000", "many.json").await;
    let multi_pass_requests = index_requests(&p);
    // The probe plus one request per service per pass.
    assert_eq!(single_pass_requests, 2 * 4);
    assert_eq!(multi_pass_requests, 4 + 256 * 4);
    assert_eq!(
        one["plan"], many["plan"],
        "same plan in one pass and in 256"
    );
    assert_eq!(one["plan"]["src_blocks"], 200_000);
    let to_copy = one["plan"]["to_copy"].as_u64().unwrap();
    assert!(
        (15_000..25_000).contains(&to_copy),
        "about 10 % missing: {to_copy}"
    );
    assert_eq!(one["index_lines"], many["index_lines"]);
}
