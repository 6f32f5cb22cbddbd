//! Pure JSON logs (issue 12): with `--log-format json` every line keep-rsync
//! writes on stderr is one JSON object, in a run that copies everything, in
//! one where blocks fail and a service is down, and in runs that end with
//! exit 2 (a settings error after the flags parsed, a bad value, an unknown
//! flag); the end summary is one `summary` event carrying the report's
//! counts.

mod common;

use common::*;
use serde_json::Value;

/// Every stderr line, parsed: panics on a line that is not one JSON object
/// with `time`, `level`, `msg` and `event`.
fn events(what: &str, stderr: &str) -> Vec<Value> {
    assert!(!stderr.is_empty(), "{what}: no output");
    stderr
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l:?}\n{stderr}"));
            assert!(v.is_object(), "{what}: not an object: {l}");
            for k in ["time", "level", "msg", "event"] {
                assert!(v[k].is_string(), "{what}: no {k:?} in {l}");
            }
            assert!(
                ["info", "warning", "error", "debug", "trace"]
                    .contains(&v["level"].as_str().unwrap()),
                "{what}: level in {l}"
            );
            v
        })
        .collect()
}

/// The `summary` event is the last line and says what the report says.
fn assert_summary_matches_report(what: &str, evs: &[Value], report: &Value) {
    let last = evs.last().expect("events");
    assert_eq!(last["event"], "summary", "{what}: last event {last}");
    assert_eq!(
        evs.iter().filter(|e| e["event"] == "summary").count(),
        1,
        "{what}: one summary"
    );
    let Value::Object(rep) = report else {
        panic!("{what}: report {report}")
    };
    for (k, v) in rep {
        match k.as_str() {
            // The failed blocks were block_done events, the lost ones are
            // counted in plan.lost; timings differ.
            "failures"
            | "lost_blocks"
            | "ended_at"
            | "elapsed_seconds"
            | "rate_bytes_per_second" => {}
            "source" | "destination" => {
                // Request counters may still move between the two.
                assert_eq!(
                    last[k].as_array().map(Vec::len),
                    v.as_array().map(Vec::len),
                    "{what}: {k}"
                );
            }
            _ => assert_eq!(&last[k], v, "{what}: summary {k}"),
        }
    }
    assert!(last.get("failures").is_none(), "{what}: no failure list");
    assert!(last.get("lost_blocks").is_none(), "{what}: no lost list");
    assert!(last["elapsed_seconds"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_logs_only_json_and_ends_with_the_summary_event() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(25, &sizes(), 2, 131);
    // A settings file others can read: its warning is an event too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path("dst.conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = p.path("r.json");
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
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let evs = events("full run", &r.stderr);
    let warning = evs
        .iter()
        .find(|e| e["level"] == "warning")
        .unwrap_or_else(|| panic!("no permission warning: {}", r.stderr));
    assert!(
        warning["msg"].as_str().unwrap().contains("chmod 600"),
        "{warning}"
    );
    assert_eq!(
        evs.iter()
            .filter(|e| e["event"] == "block_done" && e["ok"] == true)
            .count(),
        blocks.len()
    );
    let rep = read_json(&report);
    assert_summary_matches_report("full run", &evs, &rep);
    let sum = evs.last().unwrap();
    assert_eq!(sum["status"], "complete");
    assert_eq!(sum["level"], "info");
    assert_eq!(sum["msg"], "keep-rsync complete");
    assert_eq!(sum["copied"], blocks.len() as u64);
    assert_eq!(sum["plan"]["to_copy"], blocks.len() as u64);

    // -q drops the per-block events, as it drops the per-block lines.
    let more = p.src.seed_blocks(5, &sizes(), 2, 133);
    let r = p
        .rsync(&["-replications", "2", "--log-format", "json", "-q"])
        .await;
    r.expect(0);
    let evs = events("quiet run", &r.stderr);
    assert!(
        !evs.iter()
            .any(|e| e["event"] == "block_start" || e["event"] == "block_done"),
        "{}",
        r.stderr
    );
    let sum = evs.last().unwrap();
    assert_eq!(sum["event"], "summary");
    assert_eq!(sum["copied"], more.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_logs_only_json() {
    let p = Pair::start().await;
    p.src.seed_blocks(12, &small(), 1, 132);
    // A wrong source TTL makes every signature invalid: each GET is refused.
    // And one destination service is gone: a warning, and exit 1.
    p.dst.stop_service(3);
    let report = p.path("r.json");
    let r = p
        .rsync(&[
            "-replications",
            "2",
            "-src-blob-signature-ttl",
            "1h",
            "--retries",
            "1",
            "--log-format",
            "json",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    r.expect(1);
    let evs = events("failing run", &r.stderr);
    assert!(
        evs.iter().any(|e| e["level"] == "warning"
            && e["msg"].as_str().unwrap().contains("destination service")),
        "{}",
        r.stderr
    );
    assert_eq!(
        evs.iter()
            .filter(|e| e["event"] == "block_done" && e["ok"] == false && e["error"].is_string())
            .count(),
        12
    );
    // The refused signatures are explained once, with what to fix.
    let refused: Vec<_> = evs
        .iter()
        .filter(|e| e["msg"].as_str().unwrap().contains("refuse our requests"))
        .collect();
    assert_eq!(refused.len(), 1, "{}", r.stderr);
    let msg = refused[0]["msg"].as_str().unwrap();
    for want in [
        "HTTP 403",
        "ARVADOS_BLOB_SIGNING_KEY",
        "src.conf",
        "-src-blob-signature-ttl",
    ] {
        assert!(msg.contains(want), "{want} not in {msg}");
    }
    let rep = read_json(&report);
    assert_eq!(rep["failures"].as_array().unwrap().len(), 12);
    assert_summary_matches_report("failing run", &evs, &rep);
    let sum = evs.last().unwrap();
    assert_eq!(
        (sum["status"].as_str(), sum["failed"].as_u64()),
        (Some("incomplete"), Some(12))
    );
    assert_eq!(sum["level"], "error");
    assert_eq!(sum["unreachable_services"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_2_runs_log_only_json() {
    let p = Pair::start().await;
    let report = p.path("r.json");
    let rp = report.display().to_string();

    // A settings file that does not exist: the error, then the summary.
    let mut args = p.base_args();
    args[1] = p.path("missing.conf").display().to_string();
    args.extend(["--log-format=json", "--report", &rp].map(String::from));
    let r = run_rsync(&args).await;
    r.expect(2);
    let evs = events("missing settings", &r.stderr);
    assert_eq!(evs.len(), 2, "{}", r.stderr);
    assert_eq!(evs[0]["level"], "error");
    assert!(
        evs[0]["msg"].as_str().unwrap().contains("missing.conf"),
        "{}",
        r.stderr
    );
    assert_summary_matches_report("missing settings", &evs, &read_json(&report));
    assert_eq!(evs[1]["status"], "config_error");
    assert_eq!(evs[1]["exit_code"], 2);

    // Flags that do not parse: one error event with the exit code, Go and
    // GNU spellings alike.
    for (bad, needle) in [
        (
            vec!["-prefix", "XYZ", "-log-format", "json"],
            "-prefix \"XYZ\"",
        ),
        (vec!["--log-format", "json", "--bogus"], "--bogus"),
        (
            vec!["--log-format", "json", "--transfers", "0"],
            "--transfers",
        ),
    ] {
        let mut args = p.base_args();
        args.extend(bad.iter().map(|s| s.to_string()));
        let r = run_rsync(&args).await;
        r.expect(2);
        let evs = events(&format!("{bad:?}"), &r.stderr);
        assert_eq!(evs.len(), 1, "{bad:?}: {}", r.stderr);
        assert_eq!(evs[0]["level"], "error");
        assert_eq!(evs[0]["exit_code"], 2);
        assert!(
            evs[0]["msg"].as_str().unwrap().contains(needle),
            "{}",
            r.stderr
        );
    }
    // A missing -dst, found after clap: the same.
    let r = run_rsync(&["-src", "x", "--log-format", "json"].map(String::from)).await;
    r.expect(2);
    let evs = events("no -dst", &r.stderr);
    assert_eq!(evs.len(), 1, "{}", r.stderr);
    assert!(evs[0]["msg"].as_str().unwrap().contains("-dst is required"));
    // Without JSON logs, the same mistakes are plain lines.
    let r = run_rsync(&["-src", "x"].map(String::from)).await;
    r.expect(2);
    assert!(
        r.stderr.starts_with("keep-rsync: -dst is required"),
        "{}",
        r.stderr
    );
    assert_eq!(p.total_dst_puts(), 0);
}
