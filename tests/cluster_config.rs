//! End to end with the clusters' own config.yml files alone: no settings
//! files, no services lists, no TTL or replication flags (issue 18). The
//! config files are the ones keepstore-sim writes for the clusters it runs,
//! as an admin's /etc/arvados/config.yml.

mod common;

use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::Cluster;

/// Both clusters (signatures enforced, different keys, API server stubs
/// that must never be asked), with their config.yml written beside.
async fn pair(dst_replication: u32) -> Pair {
    let mut src = signed(3, SRC_TOKEN, SRC_KEY);
    src.api_server = true;
    let mut dst = signed(4, DST_TOKEN, DST_KEY);
    dst.api_server = true;
    dst.default_replication = dst_replication;
    let p = Pair::with(src, dst).await;
    write_private(&p.path("src.yml"), &p.src.cluster_config_text());
    write_private(&p.path("dst.yml"), &p.dst.cluster_config_text());
    p
}

fn config_args(p: &Pair, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "-src-cluster-config".to_string(),
        p.path("src.yml").display().to_string(),
        "-dst-cluster-config".into(),
        p.path("dst.yml").display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn seed(c: &Cluster, n: usize) -> Vec<(BlockHash, u64)> {
    (0..n)
        .map(|i| {
            let data = format!("cluster-config block {i} {}", "x".repeat(i * 37));
            let h = c.put_block(i % c.len(), data.as_bytes());
            (h, data.len() as u64)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_files_alone_copy_rerun_prefix_and_dry_run() {
    let p = pair(3).await;
    let blocks = seed(&p.src, 40);
    // --dry-run plans from the configs and writes nothing.
    let r = run_rsync(&config_args(&p, &["--dry-run"])).await;
    r.expect(0);
    assert_eq!(p.total_dst_puts(), 0);
    // -prefix: only that share.
    let prefix = blocks[0].0.to_string()[..1].to_string();
    run_rsync(&config_args(&p, &["-prefix", &prefix, "-q"]))
        .await
        .expect(0);
    for (h, _) in &blocks {
        let on_dst = !p.dst_holders(h).is_empty();
        assert_eq!(on_dst, h.to_string().starts_with(&prefix), "{h}");
    }
    // All of it: the destination's DefaultReplication (3), signed reads with
    // the source's key and TTL (signatures are enforced), in rendezvous
    // order of the uuids the configs give.
    let report = p.path("r.json").display().to_string();
    let r = run_rsync(&config_args(&p, &["--report", &report])).await;
    r.expect(0);
    p.assert_placed(&blocks, 3);
    // Rerun: nothing moves.
    p.dst.reset_counters();
    let r = run_rsync(&config_args(&p, &[])).await;
    r.expect(0);
    assert_eq!(p.total_dst_puts(), 0, "{}", r.stderr);
    // The API servers were never asked.
    assert_eq!(p.src.api_requests(), (0, 0));
    assert_eq!(p.dst.api_requests(), (0, 0));
    // Explicit flags still win over the file.
    let more = seed(&p.src, 45)[40..].to_vec();
    run_rsync(&config_args(&p, &["-replications", "1", "-q"]))
        .await
        .expect(0);
    p.assert_placed(&more, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_block_check_with_a_cluster_config() {
    let p = pair(2).await;
    let blocks = seed(&p.dst, 10);
    let list = p.path("list.txt");
    let mut text: String = blocks.iter().map(|(h, s)| format!("{h}+{s}\n")).collect();
    std::fs::write(&list, &text).unwrap();
    for mode in [None, Some("--probe"), Some("--read")] {
        let mut args = vec![
            "-cluster-config".to_string(),
            p.path("dst.yml").display().to_string(),
            "-block-hash-file".into(),
            list.display().to_string(),
        ];
        args.extend(mode.map(str::to_string));
        let r = run_with_stdin(check_bin(), &args, None).await;
        r.expect(0);
        assert!(
            r.stderr.contains("10 successes, 0 errors"),
            "{mode:?}: {}",
            r.stderr
        );
    }
    text.push_str(&format!("{}+3\n", BlockHash::of(b"nowhere")));
    std::fs::write(&list, &text).unwrap();
    let args = vec![
        "-cluster-config".to_string(),
        p.path("dst.yml").display().to_string(),
        "-block-hash-file".into(),
        list.display().to_string(),
        "--probe".into(),
    ];
    let r = run_with_stdin(check_bin(), &args, None).await;
    r.expect(1);
    assert!(r.stderr.contains("1 errors"), "{}", r.stderr);
    assert_eq!(p.dst.api_requests(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_config_file_for_services_and_its_volumes() {
    // A cluster whose keepstores are gone: its config.yml names Directory
    // volumes; -src-cluster-config and --src-volumes take the same file.
    let p = pair(2).await;
    let vol = tempfile::tempdir().unwrap();
    let data = b"a block on an old disk";
    let h = BlockHash::of(data);
    let hex = h.to_string();
    std::fs::create_dir_all(vol.path().join(&hex[..3])).unwrap();
    std::fs::write(vol.path().join(&hex[..3]).join(&hex), data).unwrap();
    let text = p.src.cluster_config_text();
    let mut text = text.replace("/var/lib/arvados/keep0", &vol.path().display().to_string());
    for i in 1..3 {
        // Only the first keepstore's volume survived.
        let dead = tempfile::tempdir().unwrap().path().join("gone");
        text = text.replace(
            &format!("/var/lib/arvados/keep{i}"),
            &dead.display().to_string(),
        );
    }
    // Keep only the first volume.
    let cut = text.find("      aaaaa-nyw5e-000000000000001:").unwrap();
    let text = text[..cut].to_string();
    write_private(&p.path("old.yml"), &text);
    let old = p.path("old.yml").display().to_string();
    let r = run_rsync(&[
        "-src-cluster-config".into(),
        old.clone(),
        "--src-volumes".into(),
        old,
        "-dst-cluster-config".into(),
        p.path("dst.yml").display().to_string(),
    ])
    .await;
    r.expect(0);
    assert_eq!(p.dst_holders(&h).len(), 2, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_of_the_config_reaches_stderr_or_the_report() {
    let p = pair(2).await;
    seed(&p.src, 5);
    // Readable by others: a warning, naming the file, never its values.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path("src.yml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = p.path("r.json").display().to_string();
    let r = run_rsync(&config_args(&p, &["-vv", "--report", &report])).await;
    r.expect(0);
    assert!(
        r.stderr.contains("readable by group or others"),
        "{}",
        r.stderr
    );
    let report = std::fs::read_to_string(&report).unwrap();
    for secret in [SRC_TOKEN, SRC_KEY, DST_TOKEN, DST_KEY] {
        assert!(!r.all().contains(secret), "{secret} in the output");
        assert!(!report.contains(secret), "{secret} in the report");
    }
    // A broken file: exit 2 naming file, cluster and key path, no values.
    let text = p.dst.cluster_config_text();
    let broken: String = text
        .lines()
        .filter(|l| !l.contains("SystemRootToken"))
        .map(|l| format!("{l}\n"))
        .collect();
    write_private(&p.path("broken.yml"), &broken);
    let r = run_rsync(&[
        "-src-cluster-config".into(),
        p.path("src.yml").display().to_string(),
        "-dst-cluster-config".into(),
        p.path("broken.yml").display().to_string(),
    ])
    .await;
    r.expect(2);
    assert!(
        r.stderr
            .contains("Clusters.bbbbb.SystemRootToken is missing"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("broken.yml"), "{}", r.stderr);
    // A YAML error: file, line and column.
    write_private(
        &p.path("bad.yml"),
        &text.replace("Collections:", "Collections: ["),
    );
    let r = run_rsync(&[
        "-src-cluster-config".into(),
        p.path("src.yml").display().to_string(),
        "-dst-cluster-config".into(),
        p.path("bad.yml").display().to_string(),
    ])
    .await;
    r.expect(2);
    assert!(
        r.stderr.contains("line") && r.stderr.contains("column"),
        "{}",
        r.stderr
    );
    for secret in [DST_TOKEN, DST_KEY] {
        assert!(!r.all().contains(secret), "{secret} in a YAML error");
    }
    // Both a settings file and a cluster config for one side.
    let mut args = config_args(&p, &[]);
    args.extend(["-src".into(), p.path("src.conf").display().to_string()]);
    run_rsync(&args).await.expect(2);
}
