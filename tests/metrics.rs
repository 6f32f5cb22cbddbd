//! Prometheus metrics (issue 12): `--metrics-textfile` (node_exporter's
//! textfile collector) and `--metrics-addr` (`GET /metrics` while the run
//! lasts). `promtool check metrics` (Debian package `prometheus`, installed
//! by scripts/install-test-deps.sh) accepts what a real run writes and
//! serves; the counters say what the report says; a scrape during a slowed
//! copy sees them rise; the last success survives a failed run; and
//! keep-rsync links no HTTP server code for it.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use keepstore_sim::SizeRange;
use tokio::io::{AsyncBufReadExt, BufReader};

/// `promtool check metrics` accepts `text`.
fn assert_promtool_accepts(what: &str, text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

fn must(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_textfile_of_a_real_run_passes_promtool_and_carries_the_last_success() {
    let promtool = promtool_missing();
    if let Some(why) = &promtool {
        skip(
            "the_textfile_of_a_real_run_passes_promtool_and_carries_the_last_success (its \
             promtool checks)",
            why,
        );
    }
    let p = Pair::start().await;
    // One replica each on the source: the blocks of service 0 come corrupt
    // (they fail); service 1 answers 503 now and then (retries); destination
    // service 3 is gone (down).
    let blocks = p.src.seed_blocks(40, &small(), 1, 161);
    p.src.set_faults(0, faults(|f| f.corrupt_rate = 1.0));
    p.src.set_faults(
        1,
        faults(|f| {
            f.fail_rate = 0.3;
            f.seed = 3;
        }),
    );
    p.dst.stop_service(3);
    let prom = p.path("keep-rsync.prom");
    let report = p.path("r.json");
    let args = [
        "-replications",
        "2",
        "--retries",
        "2",
        "--metrics-textfile",
        prom.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    let r = p.rsync(&args).await;
    r.expect(1);
    let text = std::fs::read_to_string(&prom).unwrap();
    if promtool.is_none() {
        assert_promtool_accepts("failing run", &text);
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter must be able to read it");
    let rep = read_json(&report);
    let pre = [("prefix", "")];
    for outcome in ["copied", "failed", "topped_up"] {
        let labels = [("prefix", ""), ("outcome", outcome)];
        assert_eq!(
            must(&text, "keep_rsync_blocks_total", &labels),
            rep[outcome].as_f64().unwrap(),
            "{outcome}"
        );
        let bytes_field = format!("{outcome}_bytes");
        assert_eq!(
            must(&text, "keep_rsync_block_bytes_total", &labels),
            rep[&bytes_field].as_f64().unwrap(),
            "{outcome} bytes"
        );
    }
    assert!(rep["failed"].as_u64().unwrap() > 0, "{rep}");
    assert_eq!(
        must(&text, "keep_rsync_blocks_total", &[("outcome", "planned")]),
        blocks.len() as f64
    );
    assert_eq!(
        must(&text, "keep_rsync_replicas_written_total", &pre),
        rep["replicas_written"].as_f64().unwrap()
    );
    assert!(must(&text, "keep_rsync_read_bytes_total", &pre) > 0.0);
    let src1 = p.src.uuid(1);
    assert!(
        must(
            &text,
            "keep_rsync_retries_total",
            &[("side", "source"), ("service", &src1), ("operation", "get")]
        ) > 0.0,
        "{text}"
    );
    assert!(
        must(
            &text,
            "keep_rsync_requests_total",
            &[
                ("side", "source"),
                ("service", &src1),
                ("operation", "get"),
                ("status_class", "5xx")
            ]
        ) > 0.0,
        "{text}"
    );
    let src0 = p.src.uuid(0);
    assert!(
        must(
            &text,
            "keep_rsync_requests_total",
            &[
                ("service", &src0),
                ("operation", "get"),
                ("status_class", "error")
            ]
        ) > 0.0,
        "corrupt bodies are errors: {text}"
    );
    let dst3 = p.dst.uuid(3);
    assert_eq!(
        must(
            &text,
            "keep_rsync_service_up",
            &[("side", "destination"), ("service", &dst3)]
        ),
        0.0
    );
    assert_eq!(
        must(&text, "keep_rsync_service_up", &[("service", &src1)]),
        1.0
    );
    assert_eq!(must(&text, "keep_rsync_running", &pre), 0.0);
    assert_eq!(must(&text, "keep_rsync_last_run_exit_code", &pre), 1.0);
    assert_eq!(must(&text, "keep_rsync_passes", &pre), 1.0);
    assert_eq!(must(&text, "keep_rsync_pass", &pre), 1.0);
    let start = must(&text, "keep_rsync_last_run_start_timestamp_seconds", &pre);
    assert!(must(&text, "keep_rsync_last_run_end_timestamp_seconds", &pre) >= start);
    assert!(
        sample(&text, "keep_rsync_last_success_timestamp_seconds", &[]).is_none(),
        "no run succeeded yet: {text}"
    );

    // Faults gone, the run succeeds: the success is recorded...
    clear_all(&p.src);
    p.dst.restart_service(3).await.unwrap();
    p.rsync(&args).await.expect(0);
    let text = std::fs::read_to_string(&prom).unwrap();
    let success = must(&text, "keep_rsync_last_success_timestamp_seconds", &pre);
    assert_eq!(must(&text, "keep_rsync_last_run_exit_code", &pre), 0.0);
    if promtool.is_none() {
        assert_promtool_accepts("successful run", &text);
    }
    // ... and survives the next run, which fails.
    p.dst.stop_service(2);
    p.rsync(&args).await.expect(1);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(must(&text, "keep_rsync_last_run_exit_code", &pre), 1.0);
    assert_eq!(
        must(&text, "keep_rsync_last_success_timestamp_seconds", &pre),
        success
    );
}

/// keep-rsync, running with its stderr read line by line.
struct Running {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    seen: String,
}

impl Running {
    fn spawn(p: &Pair, extra: &[&str]) -> Running {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(p.base_args())
            .args(extra)
            .args(["--retry-backoff", "5ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("keep-rsync starts");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Running {
            child,
            lines,
            seen: String::new(),
        }
    }

    /// The first stderr line containing `needle`.
    async fn line_with(&mut self, needle: &str) -> String {
        let wait = async {
            while let Some(l) = self.lines.next_line().await.expect("stderr") {
                self.seen.push_str(&l);
                self.seen.push('\n');
                if l.contains(needle) {
                    return l;
                }
            }
            panic!("no line with {needle:?}:\n{}", self.seen)
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("the line came within 60 s")
    }

    /// SIGINT, then the exit code (the rest of stderr is read).
    async fn interrupt(mut self) -> (i32, String) {
        let pid = self.child.id().unwrap();
        let ok = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        while let Ok(Some(l)) = self.lines.next_line().await {
            self.seen.push_str(&l);
            self.seen.push('\n');
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("exited within 60 s")
            .unwrap();
        (status.code().unwrap_or(-1), self.seen)
    }
}

async fn scrape(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("scrape");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_addr_serves_counters_that_rise_during_a_slow_copy() {
    let promtool = promtool_missing();
    if let Some(why) = &promtool {
        skip(
            "metrics_addr_serves_counters_that_rise_during_a_slow_copy (its promtool checks)",
            why,
        );
    }
    let p = Pair::start().await;
    // Enough blocks that the copy outlasts a slow test side by far (it is
    // interrupted anyway).
    let blocks = p.src.seed_blocks(
        90,
        &[SizeRange {
            min: 64 << 10,
            max: 64 << 10,
        }],
        2,
        162,
    );
    assert!(!blocks.is_empty());
    // Each GET body trickles at 32 KiB/s: two seconds a block.
    set_all(&p.src, &faults(|f| f.link_rate = 32 << 10));
    let prom = p.path("m.prom");
    let mut run = Running::spawn(
        &p,
        &[
            "-replications",
            "2",
            "--transfers",
            "4",
            "--metrics-addr",
            "127.0.0.1:0",
            "--metrics-textfile",
            prom.to_str().unwrap(),
            "--metrics-interval",
            "100ms",
        ],
    );
    // keep-rsync says where it listens: port 0 picks a free one.
    let line = run.line_with("serving metrics on http://").await;
    let url = line[line.find("http://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(url.ends_with("/metrics") && !url.contains(":0/"), "{line}");

    let read = |t: &str| must(t, "keep_rsync_read_bytes_total", &[("prefix", "")]);
    let t0 = Instant::now();
    let first = loop {
        let (status, text) = scrape(&url).await;
        assert_eq!(status, 200);
        if read(&text) > 0.0 {
            break text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing read:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The simulator paces bodies in 64 KiB frames, so a 64 KiB block arrives
    // in one piece after 2 s and the four in flight together: the counter
    // rises in steps, about every 2 s. Scrape until the next step.
    let t1 = Instant::now();
    let second = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, text) = scrape(&url).await;
        assert_eq!(status, 200);
        if read(&text) > read(&first) {
            break text;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "read bytes did not rise from {}:\n{text}",
            read(&first)
        );
    };
    for t in [&first, &second] {
        assert_eq!(must(t, "keep_rsync_running", &[]), 1.0);
        assert_eq!(must(t, "keep_rsync_pass", &[]), 1.0);
        assert!(sample(t, "keep_rsync_last_run_exit_code", &[]).is_none());
        if promtool.is_none() {
            assert_promtool_accepts("scrape", t);
        }
    }
    // Any other path: 404.
    let other = url.replace("/metrics", "/other");
    assert_eq!(scrape(&other).await.0, 404);
    // The textfile is rewritten while the run lasts.
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&prom).unwrap_or_default();
        if sample(&text, "keep_rsync_read_bytes_total", &[]).is_some_and(|n| n > 0.0) {
            assert_eq!(must(&text, "keep_rsync_running", &[]), 1.0);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "textfile not rewritten:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (code, stderr) = run.interrupt().await;
    assert_eq!(code, 130, "{stderr}");
    // The server is gone with the run; the textfile has the end.
    assert!(
        reqwest::get(&url).await.is_err(),
        "still serving after exit"
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(must(&text, "keep_rsync_last_run_exit_code", &[]), 130.0);
    assert_eq!(must(&text, "keep_rsync_running", &[]), 0.0);
    if promtool.is_none() {
        assert_promtool_accepts("interrupted run", &text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefix_is_a_label_and_bad_metrics_flags_are_config_errors() {
    let p = Pair::start().await;
    p.src.seed_blocks(40, &small(), 1, 163);
    let prom = p.path("7.prom");
    let r = p
        .rsync(&[
            "-replications",
            "1",
            "-prefix",
            "7",
            "--metrics-textfile",
            prom.to_str().unwrap(),
        ])
        .await;
    r.expect(0);
    let text = std::fs::read_to_string(&prom).unwrap();
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!samples.is_empty());
    for s in samples {
        assert!(s.contains("{prefix=\"7\""), "{s}");
    }

    // A directory that does not exist: exit 2 before anything, naming the flag.
    let puts = p.total_dst_puts();
    let bad = p.path("no/such/dir/m.prom");
    let r = p
        .rsync(&[
            "-replications",
            "1",
            "--metrics-textfile",
            bad.to_str().unwrap(),
        ])
        .await;
    r.expect(2);
    assert!(r.stderr.contains("--metrics-textfile"), "{}", r.stderr);
    assert!(r.stderr.contains("no/such/dir/m.prom"), "{}", r.stderr);
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = p
        .rsync(&["-replications", "1", "--metrics-addr", &addr])
        .await;
    r.expect(2);
    assert!(
        r.stderr.contains(&format!("--metrics-addr {addr}")),
        "{}",
        r.stderr
    );
    // Not HOST:PORT.
    let r = p.rsync(&["--metrics-addr", "9150"]).await;
    r.expect(2);
    assert!(r.stderr.contains("HOST:PORT"), "{}", r.stderr);
    assert_eq!(
        p.total_dst_puts(),
        puts,
        "nothing written by the failed runs"
    );
}

#[test]
fn keep_rsync_links_no_http_server_code() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal,features",
            "-p",
            "keep-rsync",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("prometheus-client"), "{tree}");
    for feature in ["hyper feature \"server\"", "hyper-util feature \"server\""] {
        assert!(!tree.contains(feature), "keep-rsync enables {feature}");
    }
    for server in ["axum", "warp", "tiny_http", "actix-web", "rcgen"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{server} v"))),
            "keep-rsync links {server}"
        );
    }
}
