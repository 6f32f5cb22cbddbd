//! Keepstores as Arvados deploys them: several volumes per keepstore, each
//! with its own storage classes and `Replication`, told by `GET /mounts`
//! and indexed one mount at a time (`GET /mounts/UUID/blocks`), as
//! keep-balance reads them (docs/protocol.md, "Mounts"). Every test runs
//! from services lists (no cluster config): the classes come from the
//! keepstores themselves.

mod common;

use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::{ClusterConfig, MountSpec};

/// `n` destination keepstores, each mounting these volumes.
fn dst_with(n: usize, mounts: Vec<MountSpec>) -> ClusterConfig {
    let mut dst = signed(n, DST_TOKEN, DST_KEY);
    dst.mounts = vec![mounts; n];
    dst
}

/// Mounts of destination keepstore `i` that hold `h`.
fn mounts_holding(p: &Pair, i: usize, h: &BlockHash) -> Vec<usize> {
    (0..p.dst.mount_count(i))
        .filter(|&m| p.dst.mount_has_block(i, m, h))
        .collect()
}

/// Both clusters' config.yml files (each keepstore's volumes in `Volumes`).
fn config_args(p: &Pair, extra: &[&str]) -> Vec<String> {
    write_private(&p.path("src.yml"), &p.src.cluster_config_text());
    write_private(&p.path("dst.yml"), &p.dst.cluster_config_text());
    let mut v: Vec<String> = vec![
        "-src-cluster-config".into(),
        p.path("src.yml").display().to_string(),
        "-dst-cluster-config".into(),
        p.path("dst.yml").display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Arvados' usual layout: one volume per class, every keepstore mounting
/// all of them, from services lists and from cluster configs alike.
/// `--storage-classes archive` can be confirmed (the union of a keepstore's
/// writable mounts; the config's intersection of them was empty, exit 2),
/// blocks land on the archive volumes of the first keepstores in probe
/// order, and a rerun writes nothing: each listed copy counts in its own
/// mount's class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_keepstore_mounts_each_class() {
    for from_config in [false, true] {
        let dst = dst_with(
            3,
            vec![MountSpec::of(&["default"]), MountSpec::of(&["archive"])],
        );
        let p = Pair::with(signed(2, SRC_TOKEN, SRC_KEY), dst).await;
        let blocks = p.src.seed_blocks(10, &small(), 1, 71);
        let flags = ["-replications", "2", "--storage-classes", "archive"];
        let r = if from_config {
            run_rsync(&config_args(&p, &flags)).await
        } else {
            p.rsync(&flags).await
        };
        r.expect(0);
        p.assert_placed(&blocks, 2);
        for (h, _) in &blocks {
            for i in p.dst_holders(h) {
                assert_eq!(
                    mounts_holding(&p, i, h),
                    [1],
                    "{h} on the archive mount of {i}"
                );
            }
        }
        let puts = p.total_dst_puts();
        let r = p.rsync(&["-replications", "2"]).await;
        r.expect(0);
        assert_eq!(
            p.total_dst_puts(),
            puts,
            "a rerun wrote again:\n{}",
            r.stderr
        );
        // Each mount's index was asked, never the whole keepstore's.
        for i in 0..p.dst.len() {
            assert!(p.dst.counters(i).index_requests >= 2);
        }
    }
}

/// Collection records wanting both classes, the destination from its
/// config.yml: a PUT asking for `default, archive` stores one copy on each
/// mount of a keepstore, and the rerun counts them per class (before, a
/// keepstore of both counted for no class and every rerun wrote every
/// block again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_classes_counted_per_mount() {
    let dst = dst_with(
        3,
        vec![MountSpec::of(&["default"]), MountSpec::of(&["archive"])],
    );
    let p = Pair::with(signed(2, SRC_TOKEN, SRC_KEY), dst).await;
    let blocks = p.src.seed_blocks(6, &small(), 1, 72);
    let locs: Vec<String> = blocks.iter().map(|(h, n)| format!("{h}+{n}")).collect();
    let total: u64 = blocks.iter().map(|b| b.1).sum();
    let list = p.path("collections.jsonl");
    std::fs::write(
        &list,
        serde_json::json!({
            "uuid": "zzzzz-4zz18-000000000000001",
            "replication_desired": 2,
            "storage_classes_desired": ["default", "archive"],
            "manifest_text": format!(". {} 0:{total}:f\n", locs.join(" ")),
        })
        .to_string()
            + "\n",
    )
    .unwrap();
    let list = list.display().to_string();
    let args = config_args(&p, &["--blocks-from", &list]);
    run_rsync(&args).await.expect(0);
    for (h, _) in &blocks {
        let holders = p.dst_holders(h);
        assert_eq!(holders.len(), 2, "{h}: {holders:?}");
        for i in holders {
            assert_eq!(
                mounts_holding(&p, i, h),
                [0, 1],
                "{h} on both mounts of {i}"
            );
        }
    }
    let puts = p.total_dst_puts();
    assert_eq!(puts, 12, "one PUT per block and keepstore");
    run_rsync(&args).await.expect(0);
    assert_eq!(p.total_dst_puts(), puts, "a rerun wrote again");
}

/// A mount's `Replication` is what a copy on it counts for, and a copy on
/// a read-only mount of a writable keepstore still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_replication_and_read_only_mounts_count() {
    let two = MountSpec {
        replication: 2,
        ..MountSpec::of(&["default"])
    };
    let old = MountSpec {
        read_only: true,
        replication: 2,
        ..MountSpec::of(&["default"])
    };
    let dst = dst_with(3, vec![two, old]);
    let p = Pair::with(signed(2, SRC_TOKEN, SRC_KEY), dst).await;
    let blocks = p.src.seed_blocks(8, &small(), 1, 73);
    // One block already on a read-only mount at the destination.
    let (kept, _) = blocks[0];
    let data = (0..2).find_map(|i| p.src.get_block(i, &kept)).unwrap();
    p.dst.put_block_on(0, 1, &data);
    p.rsync(&["-replications", "2"]).await.expect(0);
    // Replication 2 each: one PUT per block; none for the one held.
    assert_eq!(p.total_dst_puts(), 7);
    assert_eq!(p.dst_holders(&kept), [0]);
    for (h, _) in &blocks[1..] {
        assert_eq!(p.dst_holders(h).len(), 1, "{h}");
    }
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_eq!(p.total_dst_puts(), 7, "a rerun wrote again");
}

/// Keepstores from before `/mounts` (404): the whole index, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepstores_without_mounts_fall_back_to_the_whole_index() {
    let mut dst = signed(3, DST_TOKEN, DST_KEY);
    dst.serve_mounts = false;
    let p = Pair::with(signed(2, SRC_TOKEN, SRC_KEY), dst).await;
    let blocks = p.src.seed_blocks(10, &small(), 1, 74);
    p.rsync(&["-replications", "2", "-v"]).await.expect(0);
    p.assert_placed(&blocks, 2);
    let puts = p.total_dst_puts();
    let r = p.rsync(&["-replications", "2", "-v"]).await;
    r.expect(0);
    assert_eq!(p.total_dst_puts(), puts);
    assert!(r.stderr.contains("has no /mounts (404)"), "{}", r.stderr);
}

/// A destination copy of the wrong size (a file a crashed keepstore cut
/// short: keepstore never fsyncs) is not a replica: the block is written
/// again, which replaces it, and the summary and report say how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_wrong_size_is_written_again() {
    let p = Pair::with(signed(2, SRC_TOKEN, SRC_KEY), signed(2, DST_TOKEN, DST_KEY)).await;
    let blocks = p.src.seed_blocks(5, &small(), 1, 75);
    let (cut, size) = blocks.iter().copied().find(|b| b.1 > 10).unwrap();
    let data = (0..2).find_map(|i| p.src.get_block(i, &cut)).unwrap();
    let first = p.dst.probe_order(&cut)[0];
    p.dst.put_raw(first, 0, &cut, &data[..data.len() / 2]);
    let report = p.path("report.json");
    let r = p
        .rsync(&["-replications", "1", "--report", report.to_str().unwrap()])
        .await;
    r.expect(0);
    assert!(
        r.stderr.contains("destination copies of the wrong size") && r.stderr.contains(": 1"),
        "{}",
        r.stderr
    );
    assert_eq!(read_json(&report)["plan"]["dst_wrong_size"], 1);
    p.assert_placed(&blocks, 1);
    assert_eq!(p.dst.get_block(first, &cut).unwrap().len() as u64, size);
    let puts = p.total_dst_puts();
    p.rsync(&["-replications", "1"]).await.expect(0);
    assert_eq!(p.total_dst_puts(), puts);
}

/// keep-block-check counts per mount too: a block wanted twice in
/// `archive` with one archive copy is under-replicated, whatever its
/// `default` copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_check_counts_classes_per_mount() {
    let dst = dst_with(
        3,
        vec![MountSpec::of(&["default"]), MountSpec::of(&["archive"])],
    );
    let p = Pair::with(signed(1, SRC_TOKEN, SRC_KEY), dst).await;
    let a = p.dst.put_block_on(0, 1, b"one archive copy");
    p.dst.put_block_on(1, 0, b"one archive copy");
    p.dst.put_block_on(2, 0, b"one archive copy");
    let b = p.dst.put_block_on(0, 1, b"two archive copies");
    p.dst.put_block_on(1, 1, b"two archive copies");
    let list = p.path("c.jsonl");
    std::fs::write(
        &list,
        serde_json::json!({
            "uuid": "zzzzz-4zz18-000000000000001",
            "replication_desired": 2,
            "storage_classes_desired": ["archive"],
            "manifest_text": format!(". {a}+16 {b}+18 0:34:f\n"),
        })
        .to_string()
            + "\n",
    )
    .unwrap();
    let args: Vec<String> = [
        "-config",
        p.path("dst.conf").to_str().unwrap(),
        "-keep-services-json",
        p.path("dst.json").to_str().unwrap(),
        "-block-hash-file",
        list.to_str().unwrap(),
        "-replications",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = run_with_stdin(check_bin(), &args, None).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all()
            .contains("under-replicated: 1 of 2 copies wanted in archive"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains(&b.to_string()), "{}", r.all());
}
