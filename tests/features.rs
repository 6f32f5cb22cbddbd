//! End-to-end tests of what goes beyond the Go tool (issue 6): dry run,
//! JSON report and log, verify-existing, bandwidth limit, storage classes,
//! raw volume sources.

mod common;

use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::{ClusterConfig, SizeRange};
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_everything_and_writes_nothing() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(50, &sizes(), 2, 21);
    let report = p.path("plan.json");
    let r = p
        .rsync(&[
            "-replications",
            "2",
            "--dry-run",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    r.expect(0);
    assert_eq!(p.total_dst_puts(), 0);
    assert_eq!(p.total_src_gets(), 0);
    assert!(r.stderr.contains("dry run"), "{}", r.stderr);
    assert!(r.stderr.contains("per source service"), "{}", r.stderr);
    assert!(r.stderr.contains("per first hex digit"), "{}", r.stderr);
    let j = read_json(&report);
    assert_eq!(j["status"], "dry_run");
    assert_eq!(j["plan"]["to_copy"], 50);
    let bytes: u64 = blocks.iter().map(|b| b.1).sum();
    assert_eq!(j["plan"]["to_copy_bytes"], bytes);
    // Each service got two index requests (the sizing probe and the planning
    // pass) and no block request.
    for side in ["source", "destination"] {
        for svc in j[side].as_array().unwrap() {
            assert_eq!(
                (svc["requests"].as_u64(), svc["errors"].as_u64()),
                (Some(2), Some(0)),
                "{side} {svc}"
            );
        }
    }
    let per_digit: u64 = j["plan"]["per_digit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["blocks"].as_u64().unwrap())
        .sum();
    let per_source: u64 = j["plan"]["per_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["blocks"].as_u64().unwrap())
        .sum();
    assert_eq!((per_digit, per_source), (50, 50));
    let mut want_digits = [0u64; 16];
    for (h, _) in &blocks {
        want_digits[h.first_digit() as usize] += 1;
    }
    for (d, n) in want_digits.iter().enumerate() {
        assert_eq!(j["plan"]["per_digit"][d]["blocks"], *n, "digit {d:x}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_and_json_log_describe_the_run_without_secrets() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(20, &sizes(), 2, 22);
    let report = p.path("report.json");
    let r = p
        .rsync(&[
            "-replications",
            "2",
            "--log-format",
            "json",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    r.expect(0);
    let j = read_json(&report);
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["status"], "complete");
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["copied"], 20);
    assert_eq!(j["replicas_written"], 40);
    assert_eq!(j["copied_bytes"], blocks.iter().map(|b| b.1).sum::<u64>());
    assert_eq!(j["source"].as_array().unwrap().len(), 4);
    assert_eq!(j["destination"][0]["uuid"], p.dst.uuid(0));
    let dst_puts: u64 = j["destination"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    assert!(dst_puts >= 40, "per-service requests counted: {dst_puts}");
    for needle in [SRC_TOKEN, DST_TOKEN, SRC_KEY, DST_KEY, "+A"] {
        assert!(!std::fs::read_to_string(&report).unwrap().contains(needle));
        assert!(!r.all().contains(needle));
    }
    // Every stderr line is one JSON object (tests/json_logs.rs checks each).
    let events: Vec<Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events.iter().any(|e| e["event"] == "plan"));
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "block_done" && e["ok"] == true)
            .count(),
        20
    );
    for e in &events {
        assert!(
            e["time"].is_string() && e["level"].is_string() && e["msg"].is_string(),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_existing_finds_and_repairs_corrupt_copies() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(20, &sizes(), 2, 23);
    p.rsync(&["-replications", "2"]).await.expect(0);
    // Rot one destination copy in place (the index still lists it).
    let (bad, _) = blocks.iter().find(|(_, s)| *s > 0).unwrap();
    let holder = p.dst_holders(bad)[0];
    assert!(p.dst.corrupt_block(holder, bad));
    // A plain rerun trusts the index and does nothing.
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_ne!(BlockHash::of(&p.dst.get_block(holder, bad).unwrap()), *bad);
    let report = p.path("verify.json");
    let r = p
        .rsync(&[
            "-replications",
            "2",
            "--verify-existing",
            "-dst-blob-signature-ttl",
            "336h",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    r.expect(0);
    let j = read_json(&report);
    assert_eq!(
        (
            j["verified"].as_u64(),
            j["verify_bad"].as_u64(),
            j["repaired"].as_u64()
        ),
        (Some(20), Some(1), Some(1)),
        "{}",
        r.stderr
    );
    assert_eq!(
        BlockHash::of(&p.dst.get_block(holder, bad).unwrap()),
        *bad,
        "repaired in place"
    );
    p.assert_placed(&blocks, 2);
}

/// `--bwlimit` copies everything, and at the rate. The token bucket
/// (src/throttle.rs) lets a burst of one second's worth (`rate` bytes)
/// through at once, so reading `B` bytes at `rate` takes at least
/// `(B - rate) / rate` seconds: here 256 KiB at 64 KiB/s, at least 3 s.
/// Asserted with a 30 % margin (2.1 s), and only as a lower bound: a slow
/// machine takes longer, never shorter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bwlimit_copies_everything() {
    const RATE: u64 = 64 << 10;
    const BLOCK: u64 = 32 << 10;
    let p = Pair::start().await;
    let exactly = [SizeRange {
        min: BLOCK,
        max: BLOCK,
    }];
    let blocks = p.src.seed_blocks(8, &exactly, 1, 24);
    let bytes: u64 = blocks.iter().map(|b| b.1).sum();
    assert_eq!(bytes, 256 << 10);
    let floor = Duration::from_secs_f64(0.7 * (bytes - RATE) as f64 / RATE as f64);
    let t = Instant::now();
    p.rsync(&["-replications", "1", "--bwlimit", "64K"])
        .await
        .expect(0);
    let took = t.elapsed();
    p.assert_placed(&blocks, 1);
    // Each block read once: exactly `bytes` went through the throttle.
    assert_eq!(p.total_src_gets(), blocks.len() as u64);
    assert!(
        took >= floor,
        "{bytes} bytes at --bwlimit 64K took {took:?}, under the {floor:?} \
         that pacing at 64 KiB/s needs: the limit was not applied"
    );
    eprintln!("bwlimit: {bytes} bytes at 64 KiB/s took {took:.2?} (floor {floor:.2?})");

    let r = p.rsync(&["-replications", "1", "--bwlimit", "fast"]).await;
    r.expect(2);
    assert!(r.stderr.contains("--bwlimit"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_classes_are_requested_and_must_be_confirmed() {
    let mut dst = signed(3, DST_TOKEN, DST_KEY);
    dst.storage_classes = vec!["default".into(), "archive".into()];
    let p = Pair::with(signed(2, SRC_TOKEN, SRC_KEY), dst).await;
    let blocks = p.src.seed_blocks(8, &sizes(), 1, 25);
    p.rsync(&["-replications", "1", "--storage-classes", "archive"])
        .await
        .expect(0);
    p.assert_placed(&blocks, 1);

    // Keepstores that say (GET /mounts) they mount no `archive` volume:
    // refused before anything is listed, naming them.
    let q = Pair::with(signed(2, SRC_TOKEN, SRC_KEY), signed(2, DST_TOKEN, DST_KEY)).await;
    q.src.seed_blocks(3, &sizes(), 1, 26);
    let r = q
        .rsync(&["-replications", "1", "--storage-classes", "archive"])
        .await;
    r.expect(2);
    assert!(
        r.stderr
            .contains("mount no writable volume of a storage class"),
        "{}",
        r.stderr
    );
    // Keepstores from before /mounts: their classes are not known, so each
    // PUT finds out.
    let mut old = signed(2, DST_TOKEN, DST_KEY);
    old.serve_mounts = false;
    let q = Pair::with(signed(2, SRC_TOKEN, SRC_KEY), old).await;
    q.src.seed_blocks(3, &sizes(), 1, 26);
    let r = q
        .rsync(&["-replications", "1", "--storage-classes", "archive"])
        .await;
    r.expect(1);
    // keepstore answers 507 when no volume of a class asked is writable:
    // said as such, and the service is not taken for full.
    assert!(
        r.stderr
            .contains("for storage classes \"archive\": no writable volume of them there"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("no more blocks are written to it"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_volume_source_copies_good_blocks_and_reports_corrupt_files() {
    let dst = Pair::with(
        ClusterConfig::new(1, "unused-src-token"),
        signed(3, DST_TOKEN, DST_KEY),
    )
    .await;
    let vol = tempfile::tempdir().unwrap();
    let mut good = Vec::new();
    let put = |data: &[u8]| -> BlockHash {
        let h = BlockHash::of(data);
        let name = h.to_string();
        std::fs::create_dir_all(vol.path().join(&name[..3])).unwrap();
        std::fs::write(vol.path().join(&name[..3]).join(&name), data).unwrap();
        h
    };
    for i in 0..12u32 {
        let data = format!("block {i} ").repeat(100 + i as usize);
        good.push((put(data.as_bytes()), data.len() as u64));
    }
    // A rotten file, and trash that is not a live block.
    let rotten = put(b"this block will rot");
    let name = rotten.to_string();
    std::fs::write(
        vol.path().join(&name[..3]).join(&name),
        b"this block has rot!",
    )
    .unwrap();
    let trash = BlockHash::of(b"trashed");
    let tname = trash.to_string();
    std::fs::create_dir_all(vol.path().join(&tname[..3])).unwrap();
    std::fs::write(
        vol.path()
            .join(&tname[..3])
            .join(format!("{tname}.trash.1700000000")),
        b"trashed",
    )
    .unwrap();

    let r = run_rsync(&[
        "--src-volume-dir".into(),
        vol.path().display().to_string(),
        "-dst".into(),
        dst.path("dst.conf").display().to_string(),
        "-dst-keep-services-json".into(),
        dst.path("dst.json").display().to_string(),
        "-replications".into(),
        "2".into(),
    ])
    .await;
    r.expect(1);
    assert!(r.stderr.contains("corrupt"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{rotten}+19")), "{}", r.stderr);
    for (h, _) in &good {
        let mut want: Vec<usize> = dst.dst.probe_order(h).into_iter().take(2).collect();
        want.sort();
        assert_eq!(dst.dst_holders(h), want, "{h}");
    }
    assert!(
        dst.dst_holders(&rotten).is_empty(),
        "corrupt data never copied"
    );
    assert!(dst.dst_holders(&trash).is_empty(), "trash is not a block");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_is_left_even_when_nothing_could_be_planned() {
    let p = Pair::start().await;
    // A configuration error (exit 2): a prefix is fine, a replication count is not.
    let report = p.path("bad.json");
    let r = p
        .rsync(&["-replications", "9", "--report", report.to_str().unwrap()])
        .await;
    r.expect(2);
    let j = read_json(&report);
    assert_eq!(
        (j["status"].as_str(), j["exit_code"].as_u64()),
        (Some("config_error"), Some(2))
    );
    assert!(
        j["error"].as_str().unwrap().contains("-replications 9"),
        "{j}"
    );
    // An unreadable index (exit 3).
    p.src.set_faults(
        1,
        keepstore_sim::Faults {
            index_incomplete: true,
            ..Default::default()
        },
    );
    let report = p.path("unreadable.json");
    let r = p
        .rsync(&[
            "-replications",
            "2",
            "--retries",
            "1",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    r.expect(3);
    let j = read_json(&report);
    assert_eq!(
        (j["status"].as_str(), j["exit_code"].as_u64()),
        (Some("unreadable"), Some(3))
    );
    assert!(j["error"].as_str().unwrap().contains(&p.src.uuid(1)), "{j}");
    for needle in [SRC_TOKEN, DST_TOKEN, SRC_KEY, DST_KEY] {
        assert!(!j.to_string().contains(needle));
    }
}
