//! End-to-end copies against keepstore-sim clusters (issue 3): placement,
//! fetch-once, checkpoint/rerun, prefixes, discovery, read-only services,
//! services-flag forms and flag syntaxes.

mod common;

use common::*;
use keepstore_sim::ClusterConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_copy_with_signatures_places_each_block_once_in_rendezvous_order() {
    let p = Pair::start().await;
    let mut blocks = p.src.seed_blocks(60, &sizes(), 2, 1);
    // The empty block too: real clusters hold it.
    let empty = p.src.put_block(0, b"");
    blocks.push((empty, 0));
    let r = p.rsync(&["-replications", "2"]).await;
    r.expect(0);
    p.assert_placed(&blocks, 2);
    // Each block fetched from the source exactly once, although two source
    // services hold most of them, and written exactly twice.
    for (h, _) in &blocks {
        assert_eq!(p.src.total_gets(h), 1, "GETs of {h}");
        assert_eq!(p.dst.total_puts(h), 2, "PUTs of {h}");
    }
    assert!(r.stderr.contains("copied: 61"), "{}", r.stderr);
    // Signatures never show in the output.
    assert!(!r.all().contains("+A"), "{}", r.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_moves_nothing_and_present_blocks_are_neither_fetched_nor_resent() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(40, &sizes(), 2, 2);
    // A quarter is already at the destination, on the right two services.
    let pre: Vec<_> = blocks.iter().step_by(4).cloned().collect();
    for (h, _) in &pre {
        let data = (0..p.src.len())
            .find_map(|i| p.src.get_block(i, h))
            .unwrap();
        for &i in p.dst.probe_order(h).iter().take(2) {
            p.dst.put_block(i, &data);
        }
    }
    p.rsync(&["-replications", "2"]).await.expect(0);
    for (h, _) in &pre {
        assert_eq!(p.src.total_gets(h), 0, "{h} was already there");
        assert_eq!(p.dst.total_puts(h), 0, "{h} was already there");
    }
    p.assert_placed(&blocks, 2);
    p.src.reset_counters();
    p.dst.reset_counters();
    let r = p.rsync(&["-replications", "2"]).await;
    r.expect(0);
    assert_eq!(p.total_src_gets(), 0);
    assert_eq!(p.total_dst_puts(), 0);
    assert!(r.stderr.contains("to copy: 0"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_runs_copy_exactly_the_matching_blocks() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(80, &sizes(), 1, 3);
    let prefix = blocks[0].0.to_string()[..1].to_string();
    p.rsync(&["-replications", "1", "-prefix", &prefix])
        .await
        .expect(0);
    for (h, _) in &blocks {
        let copied = !p.dst_holders(h).is_empty();
        assert_eq!(copied, h.has_prefix(&prefix), "{h} with prefix {prefix}");
    }
    // Every index request carried the prefix in the path.
    for i in 0..p.src.len() {
        assert!(p.src.counters(i).index_requests >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_destination_services_are_never_written() {
    let mut dst = signed(5, DST_TOKEN, DST_KEY);
    dst.read_only = vec![0, 3];
    let p = Pair::with(signed(3, SRC_TOKEN, SRC_KEY), dst).await;
    let blocks = p.src.seed_blocks(40, &sizes(), 1, 4);
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_eq!(p.dst.counters(0).puts, 0);
    assert_eq!(p.dst.counters(3).puts, 0);
    p.assert_placed(&blocks, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_and_ttl_come_from_discovery_only_when_not_given() {
    // Source: API server, a non-default TTL that signatures must use.
    let mut src = signed(3, SRC_TOKEN, SRC_KEY);
    src.api_server = true;
    src.blob_signature_ttl = 7200;
    let mut dst = signed(4, DST_TOKEN, DST_KEY);
    dst.api_server = true;
    dst.default_replication = 3;
    let p = Pair::with(src, dst).await;
    let blocks = p.src.seed_blocks(20, &sizes(), 1, 5);
    // Services and defaults all from the API servers.
    let r = common::run_rsync(&[
        "-src".into(),
        p.path("src.conf").display().to_string(),
        "-dst".into(),
        p.path("dst.conf").display().to_string(),
    ])
    .await;
    r.expect(0);
    p.assert_placed(&blocks, 3);
    let (acc, disc) = p.src.api_requests();
    assert!(
        acc >= 1 && disc >= 1,
        "source API: {acc} accessible, {disc} discovery"
    );
    let (acc, disc) = p.dst.api_requests();
    assert!(
        acc >= 1 && disc >= 1,
        "destination API: {acc} accessible, {disc} discovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_refuses_the_token_says_which_file_holds_it() {
    let mut src = signed(2, SRC_TOKEN, SRC_KEY);
    src.api_server = true;
    let p = Pair::with(src, signed(2, DST_TOKEN, DST_KEY)).await;
    let conf = p.path("src.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let wrong = "v2/zzzzz-gj3su-000000000000000/wrongtokenwrongtokenwrongtoken";
    std::fs::write(&conf, text.replace(SRC_TOKEN, wrong)).unwrap();
    let r = common::run_rsync(&[
        "-src".into(),
        conf.display().to_string(),
        "-dst".into(),
        p.path("dst.conf").display().to_string(),
        "-dst-keep-services-json".into(),
        p.path("dst.json").display().to_string(),
        "-replications".into(),
        "1".into(),
    ])
    .await;
    r.expect(3);
    for want in [
        "refused the token in",
        "src.conf",
        "HTTP 401",
        "-src-keep-services-json",
    ] {
        assert!(r.stderr.contains(want), "{want} not in\n{}", r.stderr);
    }
    assert!(
        !r.all().contains("wrongtoken"),
        "the token leaked:\n{}",
        r.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_server_needed_when_services_and_defaults_are_given() {
    let mut dst = ClusterConfig::new(3, DST_TOKEN);
    dst.api_server = true; // present, but must not be asked
    let p = Pair::with(signed(3, SRC_TOKEN, SRC_KEY), dst).await;
    let blocks = p.src.seed_blocks(10, &sizes(), 1, 6);
    p.rsync(&["-replications", "1", "-src-blob-signature-ttl", "336h"])
        .await
        .expect(0);
    p.assert_placed(&blocks, 1);
    assert_eq!(p.dst.api_requests(), (0, 0));
    // A wrong TTL makes every signature invalid: the blocks fail, exit 1.
    let q = Pair::with(
        signed(2, SRC_TOKEN, SRC_KEY),
        ClusterConfig::new(2, DST_TOKEN),
    )
    .await;
    q.src.seed_blocks(3, &sizes(), 1, 7);
    let r = q
        .rsync(&["-replications", "1", "-src-blob-signature-ttl", "1h"])
        .await;
    r.expect(1);
    assert!(r.stderr.contains("403"), "{}", r.stderr);
    assert!(!r.all().contains(SRC_KEY) && !r.all().contains(SRC_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_flags_take_literal_json_files_and_stdin() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(10, &sizes(), 1, 8);
    let src_json = p.src.services_json().to_string();
    let dst_json = p.dst.services_json().to_string();
    let args: Vec<String> = vec![
        "-src".into(),
        p.path("src.conf").display().to_string(),
        "-dst".into(),
        p.path("dst.conf").display().to_string(),
        format!("-src-keep-services-json={src_json}"),
        "--dst-keep-services-json".into(),
        dst_json.clone(),
        "-replications".into(),
        "1".into(),
        "-src-blob-signature-ttl=1209600s".into(),
    ];
    run_rsync(&args).await.expect(0);
    p.assert_placed(&blocks, 1);

    // stdin form, with GNU syntax for the rest.
    let more = p.src.seed_blocks(5, &sizes(), 1, 9);
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg(format!("--src={}", p.path("src.conf").display()))
        .arg(format!("--dst={}", p.path("dst.conf").display()))
        .args(["--src-keep-services-json", "-"])
        .arg(format!(
            "-dst-keep-services-json={}",
            p.path("dst.json").display()
        ))
        .args([
            "--replications=1",
            "-q",
            "--src-blob-signature-ttl",
            "335h60m",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(src_json.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.assert_placed(&more, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_one_behaves_like_the_go_tool() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(15, &sizes(), 2, 10);
    let r = p.rsync(&["-replications", "2", "--transfers", "1"]).await;
    r.expect(0);
    p.assert_placed(&blocks, 2);
    // Plain (non-terminal) output: Go-style progress lines.
    assert!(r.stderr.contains("getting indexes:"), "{}", r.stderr);
    assert!(
        r.stderr.contains("copying data block 1 of 15 (0.00% done"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("copying data block 15 of 15"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_help() {
    for flag in ["-version", "--version"] {
        let out = std::process::Command::new(bin())
            .arg(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        // The package version and the commit built (build.rs), as the
        // packages' `keep-rsync -version` says them.
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("keep-rsync {} (git {commit})", env!("CARGO_PKG_VERSION"))
        );
    }
    let out = std::process::Command::new(bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "-src",
        "-dst",
        "-src-keep-services-json",
        "-dst-keep-services-json",
        "-replications",
        "-prefix",
        "-src-blob-signature-ttl",
        "--transfers",
        "--checkers",
        "Exit codes",
        "Memory",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_settings_names_resolve_like_arv_copy() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(5, &sizes(), 1, 11);
    // NAME → $HOME/.config/arvados/NAME.conf ...
    let home = p.path("home");
    std::fs::create_dir_all(home.join(".config/arvados")).unwrap();
    write_private(
        &home.join(".config/arvados/old.conf"),
        &p.src.settings_text(),
    );
    // ... unless $XDG_CONFIG_HOME/arvados/NAME.conf exists.
    let xdg = p.path("xdg");
    std::fs::create_dir_all(xdg.join("arvados")).unwrap();
    write_private(&xdg.join("arvados/new.conf"), &p.dst.settings_text());
    let mut args = p.base_args();
    args[1] = "old".into();
    args[3] = "new".into();
    args.extend(["-replications".to_string(), "1".to_string()]);
    let env = [
        ("HOME", home.to_str().unwrap()),
        ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
    ];
    run_rsync_env(&args, &env).await.expect(0);
    p.assert_placed(&blocks, 1);
    // A name that resolves nowhere names the path it tried.
    args[1] = "nosuch".into();
    let r = run_rsync_env(&args, &env).await;
    r.expect(2);
    assert!(
        r.stderr.contains(".config/arvados/nosuch.conf"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepproxy_destination_takes_all_replicas_in_one_put_and_reruns_move_nothing() {
    let mut dst = ClusterConfig::new(1, DST_TOKEN);
    dst.service_type = "proxy".into();
    let p = Pair::with(signed(3, SRC_TOKEN, SRC_KEY), dst).await;
    let blocks = p.src.seed_blocks(12, &sizes(), 1, 12);
    let report = p.path("proxy.json");
    // Two replicas through one keepproxy: allowed, although there is only one
    // writable service, because a proxy stores several replicas per write.
    p.rsync(&["-replications", "2", "--report", report.to_str().unwrap()])
        .await
        .expect(0);
    for (h, _) in &blocks {
        assert_eq!(p.dst.total_puts(h), 1, "one PUT per block for {h}");
        assert!(p.dst.has_block(0, h));
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(j["replicas_written"], 24, "X-Keep-Replicas-Stored counted");
    // The proxy's index hides its keepstores: its listing counts as done.
    p.dst.reset_counters();
    p.rsync(&["-replications", "2"]).await.expect(0);
    assert_eq!(p.total_dst_puts(), 0);
}
