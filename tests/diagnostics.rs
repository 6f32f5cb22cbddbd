//! Diagnostics (issue 12): `-v` says why a run is slow while it runs: every
//! retry (service, status or error, attempt, backoff), failover to the next
//! holder or destination service, a service marked down, pass boundaries
//! and per-service index timings; `-vv` adds one line per block request;
//! `RUST_LOG` selects finer; `--log-format json` makes them JSON lines like
//! the rest. Without `-v` there are none.

mod common;

use common::*;
use keepstore_sim::{ClusterConfig, SyntheticIndex};
use serde_json::Value;

/// A pair where everything that `-v` reports happens: 503s on source
/// service 1 (retries), corrupt bodies on source service 0 (failover to the
/// next holder), a full destination service 0 (failover to the next
/// service), and source service 3 gone (marked down).
async fn eventful() -> Pair {
    let p = Pair::start().await;
    p.src.seed_blocks(40, &small(), 2, 141);
    p.src.set_faults(
        1,
        faults(|f| {
            f.fail_rate = 0.4;
            f.seed = 5;
        }),
    );
    p.src.set_faults(0, faults(|f| f.corrupt_rate = 1.0));
    p.dst.set_faults(0, faults(|f| f.full = true));
    p.src.stop_service(3);
    p
}

/// Every stderr line as JSON (they all are).
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn with_event<'a>(evs: &'a [Value], name: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["event"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v_reports_retries_failovers_down_services_passes_and_index_timings() {
    let p = eventful().await;
    let r = p
        .rsync(&["-replications", "2", "-v", "--log-format", "json"])
        .await;
    r.expect(1);
    let evs = json_lines(&r.stderr);

    let retries = with_event(&evs, "retry");
    assert!(!retries.is_empty(), "no retry event:\n{}", r.stderr);
    for e in &retries {
        assert_eq!(e["level"], "info", "{e}");
        assert_eq!(e["side"], "source", "{e}");
        if e["service"] == p.src.uuid(1) {
            // 503s: the status, and the error text.
            assert!(["index", "get"].contains(&e["op"].as_str().unwrap()), "{e}");
            assert!([500, 503].contains(&e["status"].as_u64().unwrap()), "{e}");
            assert!(e["error"].as_str().unwrap().starts_with("HTTP 50"), "{e}");
        } else {
            // The service that is gone: no status, the connection error.
            assert_eq!(e["service"], p.src.uuid(3), "{e}");
            assert_eq!(e["op"], "index", "{e}");
            assert!(e.get("status").is_none(), "{e}");
            assert!(
                e["error"].as_str().unwrap().contains("could not connect"),
                "{e}"
            );
        }
        let (a, n) = (
            e["attempt"].as_u64().unwrap(),
            e["attempts"].as_u64().unwrap(),
        );
        assert!(a >= 1 && a < n && n == 6, "{e}");
        assert!(e["backoff_ms"].is_u64(), "{e}");
        assert!(e["msg"].as_str().unwrap().contains("retrying in"), "{e}");
    }
    assert!(
        retries
            .iter()
            .any(|e| e["op"] == "get" && e["object"].is_string()),
        "{}",
        r.stderr
    );

    let failovers = with_event(&evs, "failover");
    let gets: Vec<_> = failovers.iter().filter(|e| e["op"] == "get").collect();
    let puts: Vec<_> = failovers.iter().filter(|e| e["op"] == "put").collect();
    assert!(!gets.is_empty() && !puts.is_empty(), "{}", r.stderr);
    for e in gets {
        assert_eq!(e["from"], p.src.uuid(0), "{e}");
        assert_ne!(e["to"], p.src.uuid(0), "{e}");
        assert!(e["error"].as_str().unwrap().contains("MD5"), "{e}");
    }
    for e in puts {
        assert_eq!(e["from"], p.dst.uuid(0), "{e}");
        assert_eq!(e["status"], 507, "{e}");
    }

    let down = with_event(&evs, "service_down");
    assert_eq!(down.len(), 1, "{}", r.stderr);
    assert_eq!(down[0]["service"], p.src.uuid(3));
    assert_eq!(down[0]["side"], "source");

    // The probe and the one pass each index the 7 services still up.
    let index = with_event(&evs, "index");
    let timed: Vec<_> = index.iter().filter(|e| e["lines"].is_u64()).collect();
    assert_eq!(timed.len(), 14, "{}", r.stderr);
    for e in &timed {
        assert!(e["seconds"].as_f64().unwrap() >= 0.0, "{e}");
        assert!(e["service"].is_string() && e["side"].is_string(), "{e}");
    }
    // The service that is gone: one timing that says so (the probe found it).
    let unreachable: Vec<_> = index.iter().filter(|e| e["error"].is_string()).collect();
    assert_eq!(unreachable.len(), 1, "{}", r.stderr);
    assert_eq!(unreachable[0]["service"], p.src.uuid(3));

    assert_eq!(with_event(&evs, "passes").len(), 1);
    assert_eq!(with_event(&evs, "pass_start").len(), 1);
    assert_eq!(with_event(&evs, "pass_end").len(), 1);
    // -v is info: no per-request lines.
    assert!(with_event(&evs, "request").is_empty());
    assert!(evs.iter().all(|e| e["level"] != "debug"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_vv_and_rust_log() {
    let p = eventful().await;
    // Without -v: none of it.
    let r = p.rsync(&["-replications", "2", "--retries", "2"]).await;
    r.expect(1);
    for word in ["retrying in", "trying destination service", "marked down"] {
        assert!(!r.stderr.contains(word), "{word}:\n{}", r.stderr);
    }
    // -vv, in text: Go-style timestamps, levels, the event's fields.
    let q = eventful().await;
    let r = q.rsync(&["-replications", "2", "-vv"]).await;
    r.expect(1);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("retrying in") && l.contains("HTTP 50"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    // 2026/11/22 03:42:55  INFO get … on source service …: attempt 1 of 6 failed (HTTP 503 …); retrying in …
    assert_eq!(&line[4..5], "/", "{line}");
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(&q.src.uuid(1)), "{line}");
    assert!(r.stderr.contains(" DEBUG "), "{}", r.stderr);
    assert!(r.stderr.contains("event=\"request\""), "{}", r.stderr);

    // RUST_LOG picks what to show: index timings only.
    let z = eventful().await;
    let mut args = z.base_args();
    args.extend(["-replications", "2", "--log-format", "json"].map(String::from));
    let r = run_rsync_env(&args, &[("RUST_LOG", "keep_rsync::index=info")]).await;
    r.expect(1);
    let evs = json_lines(&r.stderr);
    assert!(!with_event(&evs, "index").is_empty(), "{}", r.stderr);
    assert!(with_event(&evs, "retry").is_empty(), "{}", r.stderr);
    assert!(with_event(&evs, "failover").is_empty(), "{}", r.stderr);
    // A RUST_LOG that is not a filter is said, and -v still applies.
    let r = run_rsync_env(
        &[args.clone(), vec!["-v".into()]].concat(),
        &[("RUST_LOG", "keep_rsync=loud")],
    )
    .await;
    r.expect(1);
    let evs = json_lines(&r.stderr);
    assert!(
        evs.iter()
            .any(|e| e["level"] == "warning" && e["msg"].as_str().unwrap().contains("RUST_LOG")),
        "{}",
        r.stderr
    );
    assert!(!with_event(&evs, "pass_start").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v_marks_each_sub_prefix_pass() {
    let synthetic = |token: &str, fraction: f64| {
        let mut c = ClusterConfig::new(2, token);
        c.synthetic = Some(SyntheticIndex {
            blocks: 40_000,
            seed: 7,
            replicas: 1,
            fraction,
        });
        c
    };
    let p = Pair::with(synthetic(SRC_TOKEN, 1.0), synthetic(DST_TOKEN, 0.5)).await;
    // ~60,000 index lines against 10,000 a pass: 16 passes.
    let r = p
        .rsync(&[
            "-replications",
            "1",
            "--dry-run",
            "--index-budget",
            "10000",
            "-v",
            "--log-format",
            "json",
        ])
        .await;
    r.expect(0);
    let evs = json_lines(&r.stderr);
    let passes = with_event(&evs, "passes");
    assert_eq!(passes.len(), 1);
    assert_eq!(passes[0]["passes"], 16, "{}", passes[0]);
    assert_eq!(passes[0]["index_budget"], 10000);
    let starts = with_event(&evs, "pass_start");
    let ends = with_event(&evs, "pass_end");
    assert_eq!((starts.len(), ends.len()), (16, 16));
    for (k, (s, e)) in starts.iter().zip(&ends).enumerate() {
        let prefix = format!("{k:x}");
        assert_eq!(s["pass"], k as u64 + 1);
        assert_eq!(s["passes"], 16);
        assert_eq!(s["prefix"], prefix.as_str());
        assert_eq!(e["prefix"], prefix.as_str());
    }
    // Each pass indexes the 4 services.
    assert_eq!(with_event(&evs, "index").len(), 4 + 16 * 4);
}
