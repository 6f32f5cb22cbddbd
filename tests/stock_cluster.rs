//! End to end against clusters that look like a stock Arvados >= 2.0 API
//! server's (issue 29): keepstores without a `Rendezvous`, so
//! `keep_services/accessible` lists 28-character uuids (`ID-bi6l4-` + 16 hex
//! digits of md5(URL)). keep-rsync must take them from API discovery, from
//! services lists and from the clusters' own config.yml, place replicas in
//! the Go SDK's order (the whole uuid weighed) and warn once per side that
//! Python clients order them otherwise.

mod common;

use common::*;
use keep_rsync::protocol::BlockHash;
use md5::{Digest, Md5};

/// Both sides with Rails-style uuids and API server stubs.
async fn stock_pair() -> Pair {
    let mut src = signed(3, SRC_TOKEN, SRC_KEY);
    src.api_server = true;
    src.rails_uuids = true;
    let mut dst = signed(4, DST_TOKEN, DST_KEY);
    dst.api_server = true;
    dst.rails_uuids = true;
    dst.default_replication = 2;
    Pair::with(src, dst).await
}

/// The destination services a Go client tries first for `h`, computed here
/// from scratch: descending md5(HASH_HEX + the whole uuid), the first `n`.
fn go_first(p: &Pair, h: &BlockHash, n: usize) -> Vec<usize> {
    let mut w: Vec<(String, usize)> = (0..p.dst.len())
        .map(|i| {
            let uuid = p.dst.uuid(i);
            assert_eq!(uuid.len(), 28, "{uuid}");
            (format!("{:x}", Md5::digest(format!("{h}{uuid}"))), i)
        })
        .collect();
    w.sort_by(|a, b| b.0.cmp(&a.0));
    let mut first: Vec<usize> = w.into_iter().take(n).map(|(_, i)| i).collect();
    first.sort();
    first
}

/// Exactly one uuid warning per side, naming one of that side's uuids.
fn assert_warned_once_per_side(p: &Pair, stderr: &str) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Python SDK clients weigh"))
        .collect();
    assert_eq!(lines.len(), 2, "one warning per side expected:\n{stderr}");
    for (side, c) in [
        ("the source cluster (", &p.src),
        ("the destination cluster (", &p.dst),
    ] {
        let said: Vec<&&str> = lines.iter().filter(|l| l.contains(side)).collect();
        assert_eq!(said.len(), 1, "{side}…:\n{stderr}");
        assert!(
            (0..c.len()).any(|i| said[0].contains(&c.uuid(i))),
            "no uuid of the side in {}",
            said[0]
        );
        assert!(said[0].contains("Rendezvous"), "{}", said[0]);
        assert!(said[0].contains("all "), "{}", said[0]);
    }
    for secret in [SRC_TOKEN, DST_TOKEN, SRC_KEY, DST_KEY] {
        assert!(!stderr.contains(secret), "a secret in\n{stderr}");
    }
}

fn seed(p: &Pair) -> Vec<(BlockHash, u64)> {
    (0..8)
        .map(|i| {
            let data = format!("stock cluster block {i} {}", "y".repeat(i * 53));
            let h = p.src.put_block(i % p.src.len(), data.as_bytes());
            (h, data.len() as u64)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rails_uuids_from_discovery_and_lists_placed_in_go_order_with_one_warning_per_side() {
    let p = stock_pair().await;
    let blocks = seed(&p);
    let settings = [
        "-src".to_string(),
        p.path("src.conf").display().to_string(),
        "-dst".into(),
        p.path("dst.conf").display().to_string(),
    ];
    // API discovery: services, TTL and replication from the API servers.
    let r = run_rsync(&settings).await;
    r.expect(0);
    assert_warned_once_per_side(&p, &r.stderr);
    let check = |p: &Pair| {
        for (h, size) in &blocks {
            assert_eq!(
                p.dst_holders(h),
                go_first(p, h, 2),
                "placement of {h}+{size}"
            );
        }
    };
    check(&p);
    assert!(p.src.api_requests().0 >= 1 && p.dst.api_requests().0 >= 1);

    // The same clusters from services lists (JSON files), the destination
    // emptied first.
    for (h, _) in &blocks {
        for i in 0..p.dst.len() {
            p.dst.remove_block(i, h);
        }
    }
    let mut args = settings.to_vec();
    args.extend(
        [
            "-src-keep-services-json",
            &p.path("src.json").display().to_string(),
            "-dst-keep-services-json",
            &p.path("dst.json").display().to_string(),
            "-replications",
            "2",
            "-src-blob-signature-ttl",
            "336h",
        ]
        .map(String::from),
    );
    let accessible = (p.src.api_requests().0, p.dst.api_requests().0);
    let r = run_rsync(&args).await;
    r.expect(0);
    assert_warned_once_per_side(&p, &r.stderr);
    check(&p);
    assert_eq!(
        (p.src.api_requests().0, p.dst.api_requests().0),
        accessible,
        "the lists, not the API servers"
    );

    // The clusters' own config.yml, keepstores without a Rendezvous: the
    // same uuids derived, the same order and warnings.
    for (h, _) in &blocks {
        for i in 0..p.dst.len() {
            p.dst.remove_block(i, h);
        }
    }
    write_private(&p.path("src.yml"), &p.src.cluster_config_text());
    write_private(&p.path("dst.yml"), &p.dst.cluster_config_text());
    let r = run_rsync(&[
        "-src-cluster-config".into(),
        p.path("src.yml").display().to_string(),
        "-dst-cluster-config".into(),
        p.path("dst.yml").display().to_string(),
    ])
    .await;
    r.expect(0);
    assert_warned_once_per_side(&p, &r.stderr);
    check(&p);
}
