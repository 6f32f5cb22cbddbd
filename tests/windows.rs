//! Cron windows (issue 12): `--max-duration` and `--max-transfer` stop
//! starting blocks, let those in flight finish, write the summary and the
//! report (status `stopped_at_limit`, `limit_reached`), and exit 8; a rerun
//! continues where the run stopped, and a limit that leaves nothing undone
//! stops nothing (exit 0).

mod common;

use common::*;
use keepstore_sim::SizeRange;
use serde_json::Value;

fn fixed(size: u64) -> Vec<SizeRange> {
    vec![SizeRange {
        min: size,
        max: size,
    }]
}

/// Every block has no replica or all `n`: blocks in flight finished whole.
fn assert_none_or_all(p: &Pair, blocks: &[(keep_rsync::protocol::BlockHash, u64)], n: usize) {
    for (h, _) in blocks {
        let holders = p.dst_holders(h).len();
        assert!(holders == 0 || holders == n, "{h}: {holders} replicas");
    }
}

fn copied(p: &Pair, blocks: &[(keep_rsync::protocol::BlockHash, u64)]) -> usize {
    blocks
        .iter()
        .filter(|(h, _)| !p.dst_holders(h).is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_transfer_stops_at_its_size_and_reruns_continue_to_the_end() {
    let p = Pair::start().await;
    // 40 blocks of 10 KiB; a window of 100 KiB takes 10 of them.
    let blocks = p.src.seed_blocks(40, &fixed(10 << 10), 2, 151);
    let report = p.path("r.json");
    let rp = report.display().to_string();
    let args = [
        "-replications",
        "2",
        "--max-transfer",
        "100K",
        "--report",
        &rp,
    ];
    let mut codes = Vec::new();
    for run in 0..6 {
        let r = p.rsync(&args).await;
        codes.push(r.code);
        let rep = read_json(&report);
        if r.code == 0 {
            assert_eq!(rep["status"], "complete", "run {run}");
            assert_eq!(rep["limit_reached"], Value::Null);
            break;
        }
        r.expect(8);
        assert_eq!(rep["status"], "stopped_at_limit", "run {run}");
        assert_eq!(rep["exit_code"], 8);
        assert_eq!(rep["limit_reached"], "max_transfer");
        assert_eq!(rep["copied"], 10, "run {run}");
        assert_eq!(rep["failed"], 0);
        assert!(
            r.stderr.contains("--max-transfer 100.0 KiB reached"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("keep-rsync stopped at --max-transfer (rerun to continue)"),
            "{}",
            r.stderr
        );
        assert_eq!(copied(&p, &blocks), 10 * (run + 1));
        assert_none_or_all(&p, &blocks, 2);
    }
    // Three windows of 10 blocks, then the last 10 fit the window: nothing
    // was left, so the fourth run is complete.
    assert_eq!(codes, [8, 8, 8, 0]);
    p.assert_placed(&blocks, 2);
    for (h, _) in &blocks {
        assert_eq!(p.dst.total_puts(h), 2, "{h} written once per replica");
        assert_eq!(p.src.total_gets(h), 1, "{h} read once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_stops_a_slow_copy_and_the_rerun_completes() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(30, &fixed(8 << 10), 2, 152);
    // Each GET body trickles at 16 KiB/s: half a second per block.
    set_all(&p.src, &faults(|f| f.link_rate = 16 << 10));
    let report = p.path("r.json");
    let r = p
        .rsync(&[
            "-replications",
            "2",
            "--transfers",
            "2",
            "--max-duration",
            "3s",
            "--log-format",
            "json",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    r.expect(8);
    let rep = read_json(&report);
    assert_eq!(rep["status"], "stopped_at_limit");
    assert_eq!(rep["limit_reached"], "max_duration");
    assert_eq!(rep["failed"], 0);
    let done = rep["copied"].as_u64().unwrap() as usize;
    // The copy takes about 7.5 s: the window ends in the middle of it.
    assert!(done > 0 && done < blocks.len(), "{rep}");
    // The blocks in flight when the window ended were finished: every block
    // whose read started was copied.
    assert_eq!(copied(&p, &blocks), done);
    assert_eq!(p.total_src_gets(), done as u64, "reads started");
    assert_none_or_all(&p, &blocks, 2);
    // The JSON log says so, and its summary says what the report says.
    let last: Value = serde_json::from_str(r.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(last["status"], "stopped_at_limit");
    assert_eq!(last["limit_reached"], "max_duration");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("--max-duration 3.0s reached")),
        "{}",
        r.stderr
    );

    clear_all(&p.src);
    p.rsync(&["-replications", "2"]).await.expect(0);
    p.assert_placed(&blocks, 2);
    for (h, _) in &blocks {
        assert_eq!(p.dst.total_puts(h), 2, "{h} written once per replica");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_during_indexing_plans_nothing_and_exits_8() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(10, &small(), 2, 153);
    // Every destination answer takes 5 s: the window ends while the first
    // indexes are being fetched.
    set_all(&p.dst, &faults(|f| f.latency_ms = 5_000));
    let report = p.path("r.json");
    let r = p
        .rsync(&[
            "-replications",
            "2",
            "--max-duration",
            "300ms",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    r.expect(8);
    let rep = read_json(&report);
    assert_eq!(rep["status"], "stopped_at_limit");
    assert_eq!(rep["limit_reached"], "max_duration");
    assert_eq!(rep["passes"], 0, "nothing was planned");
    assert_eq!(rep["plan"]["src_blocks"], 0);
    assert_eq!(p.total_dst_puts() + p.total_src_gets(), 0);
    assert!(!r.stderr.contains("interrupted"), "{}", r.stderr);

    clear_all(&p.dst);
    p.rsync(&["-replications", "2", "--max-duration", "10m"])
        .await
        .expect(0);
    p.assert_placed(&blocks, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_checked_flags() {
    let p = Pair::start().await;
    for (flag, bad) in [("--max-duration", "1d"), ("--max-transfer", "10X")] {
        let r = p.rsync(&[flag, bad]).await;
        r.expect(2);
        assert!(r.stderr.contains(flag), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    // 0 and off: no limit.
    p.src.seed_blocks(5, &small(), 1, 154);
    p.rsync(&[
        "-replications",
        "1",
        "--max-duration",
        "0",
        "--max-transfer",
        "off",
    ])
    .await
    .expect(0);
}
