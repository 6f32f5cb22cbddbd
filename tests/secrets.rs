//! Secrets (issue 5): tokens, signing keys and signatures never appear in
//! stdout, stderr, `--log-format json` lines or the `--report` JSON, in
//! success, failure, fault and bad-input runs, nor in the diagnostics
//! (issue 12: `-vv`, and `RUST_LOG=trace`, which shows the HTTP stack's own
//! events too). Loose settings-file permissions draw a warning; TLS
//! certificates are verified unless the settings file says
//! ARVADOS_API_HOST_INSECURE.

mod common;

use common::*;
use keepstore_sim::Faults;

/// Fail if `text` holds a secret: a token, a key, a `+A` hint, or a run of
/// 40 hex digits (a full HMAC-SHA1 signature).
fn assert_no_secrets(what: &str, text: &str) {
    for s in [SRC_TOKEN, DST_TOKEN, SRC_KEY, DST_KEY] {
        assert!(!text.contains(s), "{what}: secret {s:.6}… in\n{text}");
    }
    assert!(!text.contains("+A"), "{what}: signature hint in\n{text}");
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        assert!(run < 40, "{what}: 40 hex digits (a signature?) in\n{text}");
    }
}

/// Run with a report, plain and with JSON logs, each without and with
/// diagnostics (`-vv`; `-vv` and `RUST_LOG=trace`); check every output.
async fn check_run(p: &Pair, what: &str, args: &[&str], code: i32) {
    // The first run does the copying (later ones of a successful run find
    // nothing to do): it logs the most.
    for (n, (json, verbose, rust_log)) in [
        (false, true, Some("trace")),
        (true, true, Some("trace")),
        (false, true, None),
        (false, false, None),
        (true, false, None),
    ]
    .into_iter()
    .enumerate()
    {
        let report = p.path("report.json");
        let _ = std::fs::remove_file(&report);
        let rp = report.display().to_string();
        let mut a: Vec<String> = p.base_args();
        a.extend(args.iter().map(|s| s.to_string()));
        a.extend(["--report".into(), rp]);
        if json {
            a.extend(["--log-format".into(), "json".into()]);
        }
        if verbose {
            a.push("-vv".into());
        }
        let env: Vec<(&str, &str)> = rust_log.map(|l| ("RUST_LOG", l)).into_iter().collect();
        let r = run_rsync_env(&a, &env).await;
        r.expect(code);
        let what = format!("{what} (json logs: {json}, -vv: {verbose}, RUST_LOG: {rust_log:?})");
        assert_no_secrets(&format!("{what}: stdout"), &r.stdout);
        assert_no_secrets(&format!("{what}: stderr"), &r.stderr);
        if n == 0 && code != 2 && code != 3 {
            // The diagnostics ran: requests were logged (and scanned).
            let needle = if json {
                "\"event\":\"request\""
            } else {
                "event=\"request\""
            };
            assert!(r.stderr.contains(needle), "{what}: {}", r.stderr);
        }
        if json {
            // Every line is a JSON object.
            for l in r.stderr.lines() {
                assert!(
                    serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.is_object()),
                    "{what}: not a JSON object: {l}"
                );
            }
        }
        if let Ok(text) = std::fs::read_to_string(&report) {
            assert_no_secrets(&format!("{what}: report"), &text);
        } else {
            assert_eq!(code, 2, "{what}: no report");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output() {
    // Success.
    let p = Pair::start().await;
    p.src.seed_blocks(30, &small(), 2, 31);
    check_run(&p, "success", &["-replications", "2"], 0).await;

    // Failure: a wrong TTL makes every signature invalid (403 on each GET).
    let q = Pair::start().await;
    q.src.seed_blocks(10, &small(), 1, 32);
    check_run(
        &q,
        "403 failures",
        &["-replications", "2", "-src-blob-signature-ttl", "1h"],
        1,
    )
    .await;

    // Faults: errors, corrupt bodies, a full and a dead service.
    let f = Pair::start().await;
    f.src.seed_blocks(30, &small(), 1, 33);
    for i in 0..4 {
        f.src.set_faults(
            i,
            Faults {
                fail_rate: 0.3,
                corrupt_rate: 0.5,
                truncate_rate: 0.2,
                seed: i as u64,
                ..Faults::default()
            },
        );
    }
    f.dst.set_faults(
        0,
        Faults {
            full: true,
            ..Faults::default()
        },
    );
    f.src.stop_service(3);
    check_run(&f, "faults", &["-replications", "2", "--retries", "1"], 1).await;

    // A malformed index: exit 3, the line is quoted but nothing secret.
    let m = Pair::start().await;
    m.src.seed_blocks(5, &small(), 1, 34);
    m.dst.set_faults(
        2,
        Faults {
            index_malformed: true,
            ..Faults::default()
        },
    );
    check_run(&m, "malformed index", &["-replications", "2"], 3).await;

    // Bad input: the token sits on the line that has no '='.
    let b = Pair::start().await;
    write_private(
        &b.path("src.conf"),
        &format!("ARVADOS_API_HOST=127.0.0.1:1\nARVADOS_API_TOKEN {SRC_TOKEN}\n"),
    );
    check_run(&b, "bad settings", &["-replications", "2"], 2).await;
    // And a services list whose bad field is quoted in the message.
    std::fs::write(b.path("src.json"), format!("{{\"items\": \"{SRC_KEY}\"}}")).unwrap();
    write_private(&b.path("src.conf"), &b.src.settings_text());
    check_run(&b, "bad services list", &["-replications", "2"], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loose_settings_permissions_draw_a_warning() {
    let p = Pair::start().await;
    p.src.seed_blocks(3, &small(), 1, 35);
    let r = p.rsync(&["-replications", "1"]).await;
    r.expect(0);
    assert!(
        !r.stderr.contains("readable by group or others"),
        "{}",
        r.stderr
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path("dst.conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = p.rsync(&["-replications", "1"]).await;
    r.expect(0);
    let conf = p.path("dst.conf").display().to_string();
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("readable by group or others"))
        .unwrap_or_else(|| panic!("no warning:\n{}", r.stderr));
    assert!(line.contains(&conf) && line.contains("chmod 600"), "{line}");
    assert!(line.contains("644"), "{line}");
    assert_no_secrets("permission warning", &r.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_are_verified_unless_insecure() {
    let mut dst = signed(3, DST_TOKEN, DST_KEY);
    dst.api_server = true;
    let p = Pair::with(signed(3, SRC_TOKEN, SRC_KEY), dst).await;
    let blocks = p.src.seed_blocks(10, &small(), 1, 36);
    let host = p.dst.api_host().unwrap();
    let args = |conf: &str| -> Vec<String> {
        vec![
            "-src".into(),
            p.path("src.conf").display().to_string(),
            "-dst".into(),
            p.path(conf).display().to_string(),
            "-src-keep-services-json".into(),
            p.path("src.json").display().to_string(),
            "-src-blob-signature-ttl".into(),
            "336h".into(),
            "-replications".into(),
            "2".into(),
        ]
    };
    for (name, extra) in [
        ("absent.conf", ""),
        ("zero.conf", "ARVADOS_API_HOST_INSECURE=0\n"),
        ("no.conf", "ARVADOS_API_HOST_INSECURE=no\n"),
    ] {
        write_private(
            &p.path(name),
            &format!("ARVADOS_API_HOST={host}\nARVADOS_API_TOKEN={DST_TOKEN}\n{extra}"),
        );
        let r = run_rsync(&args(name)).await;
        r.expect(3);
        assert!(r.stderr.contains("certificate"), "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("ARVADOS_API_HOST_INSECURE=1"),
            "{name}: {}",
            r.stderr
        );
        assert!(r.stderr.contains(name), "{name}: {}", r.stderr);
        assert_no_secrets(name, &r.all());
        assert_eq!(p.total_dst_puts(), 0);
    }
    write_private(
        &p.path("insecure.conf"),
        &format!(
            "ARVADOS_API_HOST={host}\nARVADOS_API_TOKEN={DST_TOKEN}\nARVADOS_API_HOST_INSECURE=1\n"
        ),
    );
    let r = run_rsync(&args("insecure.conf")).await;
    r.expect(0);
    assert_no_secrets("insecure", &r.all());
    p.assert_placed(&blocks, 2);
}
