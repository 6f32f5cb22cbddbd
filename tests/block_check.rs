//! keep-block-check (issue 13): index, probe and read modes agree with
//! what a keepstore-sim cluster holds (a corrupt copy fails only `--read`),
//! with the Go tool's log lines and exit status, its flags in every syntax,
//! services and TTL from the API server, `-prefix`, sub-prefix passes, and
//! the JSON report.

mod common;

use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::Cluster;
use serde_json::Value;

const TOKEN: &str = "checkroottoken5s8d1f4g7h0j3k6l9z2x";
const KEY: &str = "checksigningkeyw2e4r6t8y0u1i3o5p7a9s1d3f5g7h9j1k3l5z7";

/// One cluster (signatures enforced) and what it holds.
struct Scene {
    c: Cluster,
    dir: tempfile::TempDir,
    /// Readable somewhere (some only on their 3rd probe-order service).
    found: Vec<(BlockHash, u64)>,
    /// Its only copy is corrupt: found by index and probe, not by read.
    corrupt_only: (BlockHash, u64),
    /// Two copies, the first in probe order corrupt: found by all modes.
    corrupt_first: (BlockHash, u64),
    /// Nowhere.
    missing: Vec<(BlockHash, u64)>,
}

impl Scene {
    async fn start(api_server: bool) -> Scene {
        let mut cfg = signed(4, TOKEN, KEY);
        cfg.api_server = api_server;
        let c = Cluster::start(cfg).await.expect("cluster");
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join("c.conf"), &c.settings_text());
        std::fs::write(dir.path().join("c.json"), c.services_json().to_string()).unwrap();
        let mut found = c.seed_blocks(20, &small(), 1, 31);
        // Move a few to the third service of their probe order: a reader
        // (and --probe) must walk the order to find them.
        for (h, _) in &found[..5] {
            let order = c.probe_order(h);
            let data = (0..c.len()).find_map(|i| c.get_block(i, h)).unwrap();
            assert!(c.remove_block(order[0], h), "{h} on its first service");
            c.put_block(order[2], &data);
        }
        let mut two = c.seed_blocks(2, &small(), 2, 32);
        let corrupt_first = two.pop().unwrap();
        let corrupt_only = two.pop().unwrap();
        // corrupt_only keeps one copy, corrupt; corrupt_first has two, the
        // first in probe order corrupt.
        let o = c.probe_order(&corrupt_only.0);
        c.remove_block(o[1], &corrupt_only.0);
        assert!(c.corrupt_block(o[0], &corrupt_only.0));
        assert!(c.corrupt_block(c.probe_order(&corrupt_first.0)[0], &corrupt_first.0));
        let missing = (0..5)
            .map(|n| {
                let d = format!("never stored {n}");
                (BlockHash::of(d.as_bytes()), d.len() as u64)
            })
            .collect();
        found.sort();
        Scene {
            c,
            dir,
            found,
            corrupt_only,
            corrupt_first,
            missing,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn all(&self) -> Vec<(BlockHash, u64)> {
        let mut v = self.found.clone();
        v.extend([self.corrupt_only, self.corrupt_first]);
        v.extend(&self.missing);
        v
    }

    /// A list file of `HASH+SIZE` lines (duplicates included).
    fn list(&self, name: &str, blocks: &[(BlockHash, u64)]) -> String {
        let mut text: String = blocks.iter().map(|(h, s)| format!("{h}+{s}\n")).collect();
        text.push_str(&format!("\n  {}+{}  \n", blocks[0].0, blocks[0].1));
        std::fs::write(self.dir.path().join(name), text).unwrap();
        self.path(name)
    }

    fn args(&self, list: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "-config",
            &self.path("c.conf"),
            "-keep-services-json",
            &self.path("c.json"),
            "-block-hash-file",
            list,
            "-blob-signature-ttl",
            "336h",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    async fn check(&self, list: &str, extra: &[&str]) -> Run {
        run_with_stdin(check_bin(), &self.args(list, extra), None).await
    }

    fn counters(&self) -> (u64, u64, u64) {
        (0..self.c.len()).fold((0, 0, 0), |(i, h, g), k| {
            let c = self.c.counters(k);
            (i + c.index_requests, h + c.heads, g + c.gets)
        })
    }
}

/// The Go tool's lines: one error line per missing block and the totals.
fn assert_go_lines(r: &Run, attempts: usize, bad: &[(BlockHash, u64)]) {
    let errors = bad.len();
    let totals = format!(
        "Verify block totals: {attempts} attempts, {} successes, {errors} errors",
        attempts - errors
    );
    assert!(
        r.stderr.contains(&totals),
        "{totals:?} not in\n{}",
        r.stderr
    );
    let error_lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("Error verifying block "))
        .collect();
    assert_eq!(error_lines.len(), errors, "{}", r.stderr);
    for (h, s) in bad {
        let want = format!("Error verifying block {h}+{s}: ");
        assert!(
            error_lines.iter().any(|l| l.contains(&want)),
            "{want:?} not in\n{}",
            r.stderr
        );
    }
    let failed = format!(
        "Block verification failed for {errors} out of {attempts} blocks with matching prefix."
    );
    assert_eq!(r.stderr.contains(&failed), errors > 0, "{}", r.stderr);
    // Go's log prefix: a date and a time.
    let first = r.stderr.lines().next().unwrap_or("");
    assert!(
        first.len() > 20 && first.as_bytes()[4] == b'/' && first.as_bytes()[13] == b':',
        "{first}"
    );
    r.expect(if errors > 0 { 1 } else { 0 });
    assert!(
        !r.all().contains("+A"),
        "a signed locator in the output:\n{}",
        r.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_probe_and_read_modes_agree_with_the_cluster() {
    let s = Scene::start(false).await;
    let all = s.all();
    let list = s.list("all.txt", &all);
    let n = all.len();

    // Index mode (the default): one index request per service, no HEAD/GET.
    let r = s.check(&list, &["--report", &s.path("index.json")]).await;
    assert_go_lines(&r, n, &s.missing);
    let (idx, heads, gets) = s.counters();
    assert_eq!((heads, gets), (0, 0));
    assert_eq!(idx, 2 * 4, "the sizing probe and one pass, per service");
    let v = read_json(std::path::Path::new(&s.path("index.json")));
    assert_eq!(v["tool"], "keep-block-check");
    assert_eq!(v["mode"], "index");
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(
        (v["attempts"].as_u64(), v["errors"].as_u64()),
        (Some(n as u64), Some(5))
    );
    let mut want: Vec<String> = s.missing.iter().map(|(h, z)| format!("{h}+{z}")).collect();
    want.sort();
    assert_eq!(v["missing_blocks"], serde_json::json!(want));
    assert_eq!(v["services"].as_array().unwrap().len(), 4);

    // --probe: signed HEADs, no GET, the same answer.
    s.c.reset_counters();
    let r = s
        .check(&list, &["--probe", "--report", &s.path("probe.json")])
        .await;
    assert_go_lines(&r, n, &s.missing);
    let (idx, heads, gets) = s.counters();
    assert_eq!((idx, gets), (0, 0));
    assert!(heads >= n as u64, "{heads} HEADs for {n} blocks");
    let v = read_json(std::path::Path::new(&s.path("probe.json")));
    assert_eq!(v["missing_blocks"], serde_json::json!(want));

    // --read: the corrupt-only block fails, the corrupt-first one is read
    // from its second copy; both corrupt copies are counted.
    s.c.reset_counters();
    let r = s
        .check(&list, &["--read", "--report", &s.path("read.json")])
        .await;
    let mut bad = s.missing.clone();
    bad.push(s.corrupt_only);
    assert_go_lines(&r, n, &bad);
    assert!(r.stderr.contains("corrupt copy"), "{}", r.stderr);
    let v = read_json(std::path::Path::new(&s.path("read.json")));
    assert_eq!(v["bad_copies"], 2);
    assert_eq!(v["errors"], 6);
    let (_, _, gets) = s.counters();
    assert!(gets >= (n - 5) as u64);

    // A list of what the cluster holds: exit 0 in every mode.
    let held = s.list("held.txt", &s.found);
    for mode in [&[][..], &["--probe"], &["--read"]] {
        let r = s.check(&held, mode).await;
        assert_go_lines(&r, s.found.len(), &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_prefix_syntaxes_and_bare_hashes() {
    let s = Scene::start(false).await;
    let all = s.all();
    // Bare hashes and manifest text are read as for --blocks-from.
    let text: String = all.iter().map(|(h, _)| format!("{h}\n")).collect();
    std::fs::write(s.dir.path().join("hashes.txt"), text).unwrap();
    let hashes = s.path("hashes.txt");
    let r = s.check(&hashes, &["-v", "--probe"]).await;
    let verifying = r
        .stderr
        .lines()
        .filter(|l| l.contains("Verifying block "))
        .count();
    assert_eq!(verifying, all.len());
    assert!(r
        .stderr
        .contains(&format!("Verifying block 1 of {}: ", all.len())));
    assert!(r.stderr.contains("Block not found"), "{}", r.stderr);
    r.expect(1);

    // -prefix: only the listed hashes under it, in every flag syntax.
    let p = s.missing[0].0.to_string()[..1].to_string();
    let under: Vec<(BlockHash, u64)> = all
        .iter()
        .filter(|(h, _)| h.has_prefix(&p))
        .copied()
        .collect();
    let missing: Vec<(BlockHash, u64)> = s
        .missing
        .iter()
        .filter(|(h, _)| h.has_prefix(&p))
        .copied()
        .collect();
    let list = s.list("all.txt", &all);
    let (conf, json) = (s.path("c.conf"), s.path("c.json"));
    let forms: [Vec<String>; 4] = [
        [
            "-config",
            &conf,
            "-keep-services-json",
            &json,
            "-block-hash-file",
            &list,
            "-prefix",
            &p,
        ]
        .map(String::from)
        .to_vec(),
        vec![
            format!("-config={conf}"),
            format!("-keep-services-json={json}"),
            format!("-block-hash-file={list}"),
            format!("-prefix={p}"),
        ],
        [
            "--config",
            &conf,
            "--keep-services-json",
            &json,
            "--block-hash-file",
            &list,
            "--prefix",
            &p,
        ]
        .map(String::from)
        .to_vec(),
        vec![
            format!("--config={conf}"),
            format!("--keep-services-json={json}"),
            format!("--block-hash-file={list}"),
            format!("--prefix={p}"),
        ],
    ];
    for args in forms {
        let r = run_with_stdin(check_bin(), &args, None).await;
        assert_go_lines(&r, under.len(), &missing);
    }

    // A prefix with nothing listed under it: 0 attempts, exit 0, no request.
    let empty = (0..256)
        .map(|n| format!("{n:02x}"))
        .find(|p| !all.iter().any(|(h, _)| h.has_prefix(p)))
        .unwrap();
    s.c.reset_counters();
    let r = s.check(&list, &["-prefix", &empty]).await;
    assert_go_lines(&r, 0, &[]);
    assert_eq!(s.counters(), (0, 0, 0));

    // The list from stdin.
    let r = run_with_stdin(
        check_bin(),
        &[
            "-config",
            &conf,
            "-keep-services-json",
            &json,
            "-block-hash-file",
            "-",
        ]
        .map(String::from),
        Some(std::fs::read(&list).unwrap().as_slice()),
    )
    .await;
    assert_go_lines(&r, all.len(), &s.missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_ttl_from_the_api_server() {
    let s = Scene::start(true).await;
    let list = s.list("all.txt", &s.all());
    // No services list, no TTL: both from the API server stub; HEADs are
    // signed with the discovery document's TTL, or every one would be 403.
    let args: Vec<String> = [
        "-config",
        &s.path("c.conf"),
        "-block-hash-file",
        &list,
        "--probe",
    ]
    .map(String::from)
    .to_vec();
    let r = run_with_stdin(check_bin(), &args, None).await;
    assert_go_lines(&r, s.all().len(), &s.missing);
    assert_eq!(s.c.api_requests(), (1, 1));
    // Index mode signs nothing: no discovery document.
    let args: Vec<String> = ["-config", &s.path("c.conf"), "-block-hash-file", &list]
        .map(String::from)
        .to_vec();
    let r = run_with_stdin(check_bin(), &args, None).await;
    assert_go_lines(&r, s.all().len(), &s.missing);
    assert_eq!(s.c.api_requests(), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_mode_splits_a_big_list_into_passes() {
    let s = Scene::start(false).await;
    let mut all = s.all();
    let extra: Vec<(BlockHash, u64)> = (0..1500u32)
        .map(|n| (BlockHash::of(&n.to_le_bytes()), 7))
        .collect();
    all.extend(&extra);
    let list = s.list("big.txt", &all);
    let mut missing = s.missing.clone();
    missing.extend(&extra);
    let mut reports: Vec<Value> = Vec::new();
    for budget in ["4000000", "1000"] {
        let report = s.path(&format!("{budget}.json"));
        let r = s
            .check(&list, &["--index-budget", budget, "--report", &report])
            .await;
        assert_go_lines(&r, all.len(), &missing);
        reports.push(read_json(std::path::Path::new(&report)));
    }
    assert_eq!(reports[0]["passes"], 1);
    assert_eq!(reports[1]["passes"], 16);
    assert_eq!(reports[0]["missing_blocks"], reports[1]["missing_blocks"]);
    assert_eq!(reports[1]["missing_blocks"].as_array().unwrap().len(), 1505);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_exits_3() {
    let s = Scene::start(false).await;
    let list = s.list("all.txt", &s.all());
    for i in 0..s.c.len() {
        s.c.stop_service(i);
    }
    let r = s
        .check(&list, &["--retries", "1", "--report", &s.path("r.json")])
        .await;
    r.expect(3);
    assert!(
        r.stderr
            .contains("no keep service of the cluster could be read"),
        "{}",
        r.stderr
    );
    let v = read_json(std::path::Path::new(&s.path("r.json")));
    assert_eq!(v["status"], "unreadable");
    assert_eq!(v["unreachable_services"].as_array().unwrap().len(), 4);

    // A report that could not be written stops the check before it starts.
    let r = s
        .check(&list, &["--report", "/nonexistent-dir/r.json"])
        .await;
    r.expect(2);
    assert!(
        r.stderr.contains("/nonexistent-dir") && r.stderr.contains("does not exist"),
        "{}",
        r.stderr
    );
}
