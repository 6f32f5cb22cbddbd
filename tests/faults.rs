//! Faults (issue 5): every fault class of keepstore-sim against the real
//! binary. Whatever happens, no wrong byte is written, missing blocks are
//! never reported as success, and a rerun completes the job.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::Faults;

/// Each block sits on exactly the first `n` writable destination services of
/// its probe order that are not in `skip`, and every copy hashes to its name.
fn assert_on_first(p: &Pair, blocks: &[(BlockHash, u64)], n: usize, skip: &[usize]) {
    let ro = &p.dst.config().read_only;
    for (h, size) in blocks {
        let mut want: Vec<usize> = p
            .dst
            .probe_order(h)
            .into_iter()
            .filter(|i| !ro.contains(i) && !skip.contains(i))
            .take(n)
            .collect();
        want.sort();
        assert_eq!(p.dst_holders(h), want, "placement of {h}+{size}");
    }
    assert_dst_clean(p);
}

/// Every copy on every destination service hashes to its name: corrupt or
/// truncated data never reached the destination.
fn assert_dst_clean(p: &Pair) {
    for i in 0..p.dst.len() {
        for (h, size) in p.dst.blocks(i) {
            let data = p.dst.get_block(i, &h).unwrap();
            assert_eq!(data.len() as u64, size);
            assert_eq!(BlockHash::of(&data), h, "corrupt copy of {h} on dst {i}");
        }
    }
}

fn injected(c: &keepstore_sim::Cluster) -> u64 {
    (0..c.len()).map(|i| c.counters(i).faults_injected).sum()
}

fn read_report(p: &Pair, name: &str) -> serde_json::Value {
    read_json(&p.path(name))
}

fn failed_locators(report: &serde_json::Value) -> Vec<String> {
    report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["locator"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_and_dropped_connections_are_retried() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(120, &small(), 2, 11);
    let f = faults(|f| {
        f.fail_rate = 0.25;
        f.drop_rate = 0.05;
        f.seed = 1;
    });
    set_all(&p.src, &f);
    set_all(&p.dst, &f);
    p.rsync(&["-replications", "2", "--retries", "10"])
        .await
        .expect(0);
    // Retries on the same service: placement is exactly the probe order.
    assert_on_first(&p, &blocks, 2, &[]);
    assert!(injected(&p.src) > 20, "source faults: {}", injected(&p.src));
    assert!(
        injected(&p.dst) > 20,
        "destination faults: {}",
        injected(&p.dst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_destination_service_is_skipped_without_retry() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(60, &small(), 1, 12);
    p.dst.set_faults(1, faults(|f| f.full = true));
    let report = p.path("full.json").display().to_string();
    let prom = p.path("full.prom").display().to_string();
    // One block at a time, so that "the first 507" is well defined.
    let r = p
        .rsync(&[
            "-replications",
            "2",
            "--retries",
            "5",
            "--transfers",
            "1",
            "--report",
            &report,
            "--metrics-textfile",
            &prom,
        ])
        .await;
    r.expect(0);
    assert_on_first(&p, &blocks, 2, &[1]);
    let metrics = std::fs::read_to_string(&prom).unwrap();
    for i in 0..4 {
        let line = format!(
            "keep_rsync_service_full{{prefix=\"\",side=\"destination\",service=\"{}\"}} {}",
            p.dst.uuid(i),
            u8::from(i == 1)
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    // 507: one PUT, never retried; then the service is full for the rest
    // of the run (said once) and every later block goes straight on to the
    // next service in its order.
    let c = p.dst.counters(1);
    assert_eq!(c.puts, 1, "PUTs on the full service");
    assert!(blocks
        .iter()
        .filter(|(h, _)| p.dst.probe_order(h)[..2].contains(&1))
        .nth(1)
        .is_some());
    assert_eq!(
        r.stderr.matches("no more blocks are written to it").count(),
        1,
        "{}",
        r.stderr
    );
    let v = read_json(std::path::Path::new(&report));
    let full: Vec<bool> = v["destination"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["full"].as_bool().unwrap())
        .collect();
    assert_eq!(full, [false, true, false, false]);
    assert_eq!(v["destination"][1]["errors"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_corrupt_bodies_are_read_again_elsewhere() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(100, &small(), 2, 13);
    set_all(
        &p.src,
        &faults(|f| {
            f.truncate_rate = 0.3;
            f.corrupt_rate = 0.3;
            f.seed = 2;
        }),
    );
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert!(injected(&p.src) > 20, "faults: {}", injected(&p.src));
    assert_on_first(&p, &blocks, 2, &[]);

    // A stored copy that is corrupt on the first holder: read from the
    // second one, the bad bytes never travel on.
    let q = Pair::start().await;
    let blocks = q.src.seed_blocks(20, &small(), 2, 14);
    for (h, _) in &blocks {
        let first = q.src.probe_order(h)[0];
        assert!(q.src.corrupt_block(first, h));
    }
    q.rsync(&["-replications", "2"]).await.expect(0);
    assert_on_first(&q, &blocks, 2, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_with_no_good_copy_fails_the_block_and_writes_nothing() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(20, &small(), 1, 15);
    for (knob, words) in [("corrupt", "not "), ("truncate", "cut short")] {
        set_all(
            &p.src,
            &faults(|f| {
                if knob == "corrupt" {
                    f.corrupt_rate = 1.0
                } else {
                    f.truncate_rate = 1.0
                }
            }),
        );
        let report = p.path(&format!("{knob}.json")).display().to_string();
        let r = p
            .rsync(&["-replications", "2", "--retries", "2", "--report", &report])
            .await;
        r.expect(1);
        assert!(r.stderr.contains(words), "{knob}: {}", r.stderr);
        assert!(r.stderr.contains("failed: 20"), "{knob}: {}", r.stderr);
        // Writes follow the read (streaming), so PUTs may have started; every
        // one was abandoned before its last byte and none stored anything.
        let (stored, aborted): (u64, u64) = (0..p.dst.len())
            .map(|i| p.dst.counters(i))
            .fold((0, 0), |a, c| (a.0 + c.puts_stored, a.1 + c.puts_aborted));
        assert_eq!(stored, 0, "{knob}: something was written");
        assert_eq!(
            aborted,
            p.total_dst_puts(),
            "{knob}: every PUT was abandoned"
        );
        assert!((0..p.dst.len()).all(|i| p.dst.blocks(i).is_empty()));
        let rep = read_report(&p, &format!("{knob}.json"));
        assert_eq!(rep["status"], "incomplete");
        assert_eq!(rep["failed"], 20);
        assert_eq!(failed_locators(&rep).len(), 20);
    }
    clear_all(&p.src);
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_on_first(&p, &blocks, 2, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_services_are_skipped_listed_and_a_rerun_completes() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(80, &small(), 1, 16);
    p.src.stop_service(1);
    p.dst.stop_service(2);
    let report = p.path("r.json").display().to_string();
    let r = p
        .rsync(&["-replications", "2", "--retries", "2", "--report", &report])
        .await;
    r.expect(1);
    let (src1, dst2) = (p.src.uuid(1), p.dst.uuid(2));
    for u in [&src1, &dst2] {
        assert!(r.stderr.contains(&format!("service {u}")), "{}", r.stderr);
    }
    assert!(r.stderr.contains("unreachable"), "{}", r.stderr);
    let rep = read_report(&p, "r.json");
    assert_eq!(rep["exit_code"], 1);
    let down: Vec<&str> = rep["unreachable_services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(down.len(), 2, "{down:?}");
    assert!(down.contains(&src1.as_str()) && down.contains(&dst2.as_str()));
    // The rest was done: blocks on readable sources sit on the first two
    // destination services that are up.
    let (on_src1, rest): (Vec<_>, Vec<_>) = blocks
        .iter()
        .cloned()
        .partition(|(h, _)| p.src.has_block(1, h));
    assert!(!on_src1.is_empty() && !rest.is_empty());
    assert_on_first(&p, &rest, 2, &[2]);
    for (h, _) in &on_src1 {
        assert!(p.dst_holders(h).is_empty());
    }
    assert_eq!(p.dst.counters(2).puts, 0);

    // Back up: a rerun copies what is left, exit 0.
    p.src.restart_service(1).await.unwrap();
    p.dst.restart_service(2).await.unwrap();
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_on_first(&p, &on_src1, 2, &[]);
    for (h, _) in &rest {
        assert_eq!(p.dst_holders(h).len(), 2, "{h}");
    }
}

/// Run keep-rsync while `kill` stops a service once `trigger` PUTs reached
/// the destination.
async fn run_and_stop(p: &Pair, args: &[&str], side_is_src: bool, svc: usize, trigger: u64) -> Run {
    let watcher = async {
        let t = Instant::now();
        while p.total_dst_puts() < trigger && t.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if side_is_src {
            p.src.stop_service(svc);
        } else {
            p.dst.stop_service(svc);
        }
    };
    let (r, _) = tokio::join!(p.rsync(args), watcher);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_service_dying_mid_run() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(80, &small(), 1, 17);
    set_all(&p.src, &faults(|f| f.latency_ms = 15));
    let report = p.path("r.json").display().to_string();
    let args = [
        "-replications",
        "2",
        "--transfers",
        "2",
        "--retries",
        "2",
        "--report",
        &report,
    ];
    let r = run_and_stop(&p, &args, true, 0, 10).await;
    r.expect(1);
    let rep = read_report(&p, "r.json");
    let failed = failed_locators(&rep);
    assert!(!failed.is_empty());
    // Every failure is a block only the dead service holds; everything else
    // was copied, and each failure is listed.
    for (h, size) in &blocks {
        let loc = format!("{h}+{size}");
        if p.dst_holders(h).is_empty() {
            assert!(p.src.has_block(0, h), "{loc} not copied");
            assert!(failed.contains(&loc), "{loc} not listed");
        } else {
            assert!(!failed.contains(&loc));
        }
    }
    assert_dst_clean(&p);
    p.src.restart_service(0).await.unwrap();
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_on_first(&p, &blocks, 2, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_service_dying_mid_run() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(80, &small(), 1, 18);
    set_all(&p.dst, &faults(|f| f.latency_ms = 15));
    let report = p.path("r.json").display().to_string();
    let args = [
        "-replications",
        "2",
        "--transfers",
        "2",
        "--retries",
        "2",
        "--report",
        &report,
    ];
    let r = run_and_stop(&p, &args, false, 3, 10).await;
    // The replicas meant for the dead service went to the next services in
    // order; the dead service is listed, and the run says it was not clean.
    r.expect(1);
    let rep = read_report(&p, "r.json");
    let down = rep["unreachable_services"].as_array().unwrap();
    assert_eq!(down.len(), 1, "{rep}");
    assert_eq!(down[0]["uuid"], p.dst.uuid(3));
    let failed = failed_locators(&rep);
    for (h, size) in &blocks {
        let n = p.dst_holders(h).len();
        assert!(
            n >= 2 || failed.contains(&format!("{h}+{size}")),
            "{h}: {n} replicas and not listed"
        );
    }
    assert_dst_clean(&p);
    p.dst.restart_service(3).await.unwrap();
    set_all(&p.dst, &Faults::default());
    p.rsync(&["-replications", "2"]).await.expect(0);
    for (h, _) in &blocks {
        assert!(p.dst_holders(h).len() >= 2, "{h}");
    }
    assert_dst_clean(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_servers_cannot_hang_the_run() {
    // A source that stalls every body half-way: abandoned after --timeout,
    // the block is read from its other holder. The bound on the time is no
    // speed test: each run takes a few seconds, a run that waited out the
    // 10-minute stall (or latency, below) would take 10 minutes, and 90 s
    // lies far from both.
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(16, &small(), 2, 19);
    p.src.set_faults(0, faults(|f| f.stall_ms = 600_000));
    let t = Instant::now();
    p.rsync(&["-replications", "2", "--timeout", "1s"])
        .await
        .expect(0);
    assert!(t.elapsed() < Duration::from_secs(90), "{:?}", t.elapsed());
    assert_on_first(&p, &blocks, 2, &[]);

    // A destination service that never answers at all (not even its index):
    // it is given up after --timeout and retries, listed, exit 1.
    let q = Pair::start().await;
    let blocks = q.src.seed_blocks(16, &small(), 1, 20);
    q.dst.set_faults(3, faults(|f| f.latency_ms = 600_000));
    let t = Instant::now();
    let report = q.path("r.json").display().to_string();
    let r = q
        .rsync(&[
            "-replications",
            "2",
            "--timeout",
            "1s",
            "--retries",
            "1",
            "--report",
            &report,
        ])
        .await;
    r.expect(1);
    assert!(t.elapsed() < Duration::from_secs(90), "{:?}", t.elapsed());
    assert!(r.stderr.contains(&q.dst.uuid(3)), "{}", r.stderr);
    assert_on_first(&q, &blocks, 2, &[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_or_malformed_index_stops_the_run_before_copying() {
    let p = Pair::start().await;
    p.src.seed_blocks(30, &small(), 1, 21);
    p.src.set_faults(2, faults(|f| f.index_incomplete = true));
    let r = p.rsync(&["-replications", "2", "--retries", "2"]).await;
    r.expect(3);
    assert!(r.stderr.contains(&p.src.uuid(2)), "{}", r.stderr);
    assert!(
        r.stderr.contains("without its terminating blank line"),
        "{}",
        r.stderr
    );
    assert_eq!(p.total_dst_puts(), 0);
    assert_eq!(p.total_src_gets(), 0);
    // Retried like any transient failure before giving up.
    assert_eq!(p.src.counters(2).index_requests, 1 + 2);

    clear_all(&p.src);
    p.dst.set_faults(1, faults(|f| f.index_malformed = true));
    let r = p.rsync(&["-replications", "2", "--retries", "2"]).await;
    r.expect(3);
    assert!(r.stderr.contains(&p.dst.uuid(1)), "{}", r.stderr);
    assert!(r.stderr.contains("malformed line 1"), "{}", r.stderr);
    assert!(r.stderr.contains("this-is-not-a-locator"), "{}", r.stderr);
    assert_eq!(p.total_dst_puts(), 0);
    assert_eq!(p.total_src_gets(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_ignores_the_prefix_is_refused() {
    // A service that answers every index request with all its blocks would
    // break the index budget and make prefix shards overlap: its index is
    // not what was asked for (exit 3, nothing planned).
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(64, &small(), 1, 23);
    let prefix = blocks[0].0.to_string()[..1].to_string();
    assert!(blocks
        .iter()
        .any(|(h, _)| !h.to_string().starts_with(&prefix)));
    p.src
        .set_faults(1, faults(|f| f.index_ignores_prefix = true));
    let r = p.rsync(&["-replications", "2", "-prefix", &prefix]).await;
    r.expect(3);
    assert!(r.stderr.contains(&p.src.uuid(1)), "{}", r.stderr);
    assert!(r.stderr.contains("outside the prefix"), "{}", r.stderr);
    assert_eq!(p.total_dst_puts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_replicated_blocks_are_topped_up_in_probe_order() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(30, &small(), 1, 22);
    // Each block already on one of its first two destination services.
    for (k, (h, _)) in blocks.iter().enumerate() {
        let data = p.src.get_block(p.src.probe_order(h)[0], h).unwrap();
        p.dst.put_block(p.dst.probe_order(h)[k % 2], &data);
    }
    let report = p.path("r.json").display().to_string();
    p.rsync(&["-replications", "2", "--report", &report])
        .await
        .expect(0);
    assert_on_first(&p, &blocks, 2, &[]);
    let rep = read_report(&p, "r.json");
    assert_eq!(rep["topped_up"], 30);
    assert_eq!(rep["copied"], 0);
    assert_eq!(p.total_dst_puts(), 30, "one PUT per block");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_short_leaves_under_replicated_blocks_the_rerun_tops_up() {
    // Two destination services, two replicas: one of them full means every
    // block gets one replica of two and is listed as failed.
    let p = Pair::with(signed(3, SRC_TOKEN, SRC_KEY), signed(2, DST_TOKEN, DST_KEY)).await;
    let blocks = p.src.seed_blocks(25, &small(), 1, 23);
    p.dst.set_faults(0, faults(|f| f.full = true));
    let r = p.rsync(&["-replications", "2"]).await;
    r.expect(1);
    assert!(r.stderr.contains("stored 1 of 2"), "{}", r.stderr);
    for (h, _) in &blocks {
        assert_eq!(p.dst_holders(h), vec![1]);
    }
    clear_all(&p.dst);
    let report = p.path("r.json").display().to_string();
    p.rsync(&["-replications", "2", "--report", &report])
        .await
        .expect(0);
    let rep = read_report(&p, "r.json");
    assert_eq!(rep["plan"]["to_top_up"], 25);
    assert_eq!(rep["topped_up"], 25);
    assert_on_first(&p, &blocks, 2, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_with_no_good_source_copy_reads_a_destination_copy() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(20, &small(), 1, 24);
    for (h, _) in &blocks {
        let data = p.src.get_block(p.src.probe_order(h)[0], h).unwrap();
        p.dst.put_block(p.dst.probe_order(h)[0], &data);
    }
    // Every source read comes back corrupt.
    set_all(&p.src, &faults(|f| f.corrupt_rate = 1.0));
    let report = p.path("r.json").display().to_string();
    p.rsync(&["-replications", "2", "--retries", "1", "--report", &report])
        .await
        .expect(0);
    let rep = read_report(&p, "r.json");
    assert_eq!(rep["topped_up"], 20);
    assert_on_first(&p, &blocks, 2, &[]);
    let dst_gets: u64 = (0..p.dst.len()).map(|i| p.dst.counters(i).gets).sum();
    assert!(dst_gets >= 20, "destination reads: {dst_gets}");
}

fn spawn_rsync(p: &Pair, extra: &[&str]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(p.base_args())
        .args(extra)
        .args(["--retry-backoff", "5ms"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("spawn keep-rsync")
}

fn kill(sig: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn wait_for_puts(p: &Pair, n: u64) {
    let t = Instant::now();
    while p.total_dst_puts() < n {
        assert!(t.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_blocks_in_flight_exits_130_and_the_rerun_completes() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(300, &small(), 1, 25);
    set_all(&p.src, &faults(|f| f.latency_ms = 30));
    let child = spawn_rsync(&p, &["-replications", "2", "--transfers", "2"]);
    let pid = child.id().unwrap();
    wait_for_puts(&p, 10).await;
    kill("-INT", pid);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("stopped within 60 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("keep-rsync interrupted"), "{stderr}");
    assert!(stderr.contains("copied: "), "{stderr}");
    // Blocks in flight were finished: each has all its replicas or none.
    let mut done = 0;
    for (h, _) in &blocks {
        let n = p.dst_holders(h).len();
        assert!(n == 0 || n == 2, "{h}: {n} replicas after SIGINT");
        done += (n == 2) as usize;
    }
    assert!(done > 0 && done < blocks.len(), "{done} copied");
    assert_dst_clean(&p);

    clear_all(&p.src);
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_on_first(&p, &blocks, 2, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_twice_exits_at_once() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(40, &small(), 1, 26);
    // Every source body stalls a minute half-way: blocks in flight take
    // long to finish (index requests are not slowed down).
    set_all(&p.src, &faults(|f| f.stall_ms = 60_000));
    let child = spawn_rsync(&p, &["-replications", "2", "--transfers", "2"]);
    let pid = child.id().unwrap();
    // Wait until blocks are being read (after the index requests).
    let t = Instant::now();
    while p.total_src_gets() == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no block read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill("-TERM", pid);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two signals sent close together may reach the process as one (a
    // loaded machine runs its handler late): the second is sent again every
    // half second until the process is gone, so the test never depends on
    // a gap between them.
    let mut waiting = tokio::spawn(child.wait_with_output());
    let t = Instant::now();
    let out = loop {
        kill("-TERM", pid);
        match tokio::time::timeout(Duration::from_millis(500), &mut waiting).await {
            Ok(out) => break out.unwrap().unwrap(),
            // "At once" means before the blocks in flight are done, which
            // the first signal would wait for: a minute away.
            Err(_) => assert!(
                t.elapsed() < Duration::from_secs(45),
                "not stopped within 45 s of the second signal"
            ),
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "second signal took {:?}",
        t.elapsed()
    );
    assert!(stderr.contains("interrupted again"), "{stderr}");
    assert_dst_clean(&p);
    // Whatever was abandoned half-way, a rerun completes it.
    clear_all(&p.src);
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_on_first(&p, &blocks, 2, &[]);
}
