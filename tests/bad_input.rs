//! Bad input (issue 5): every case exits 2 within seconds with one clear
//! paragraph naming the file, line or flag at fault, never a panic, and writes
//! nothing. The files live in testdata/ (see testdata/README.md). Also feeds
//! the index fixtures of testdata/index/ to the index body parser.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use keep_rsync::protocol::index::{BodyError, BodyParser, Entry};
use keepstore_sim::{ClusterConfig, SizeRange};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// One bad-input case: the arguments after the base ones (or a rewrite of
/// them) and the words the error must contain.
struct Case {
    name: &'static str,
    args: Vec<String>,
    needles: Vec<String>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Replace the value of `flag` in `args` (or append flag + value).
fn with(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    match out.iter().position(|a| a == flag) {
        Some(i) => out[i + 1] = value.to_string(),
        None => out.extend([flag.to_string(), value.to_string()]),
    }
    out
}

fn without(args: &[String], flag: &str) -> Vec<String> {
    let mut out = args.to_vec();
    if let Some(i) = out.iter().position(|a| a == flag) {
        out.drain(i..i + 2);
    }
    out
}

/// Copy a testdata settings file into `dir` with mode 600, so that the
/// loose-permissions warning does not add a line to the output.
fn private_copy(dir: &Path, rel: &str) -> String {
    let dst = dir.join(Path::new(rel).file_name().unwrap());
    let bytes = std::fs::read(testdata(rel)).unwrap();
    std::fs::write(&dst, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    dst.display().to_string()
}

fn assert_one_paragraph(case: &str, r: &Run, needles: &[String]) {
    let all = r.all();
    assert_eq!(r.code, 2, "{case}: exit code\n{all}");
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!all.contains(bad), "{case}: {bad} in\n{all}");
    }
    let text = r.stderr.trim();
    assert!(!text.is_empty(), "{case}: no message");
    assert!(r.stdout.trim().is_empty(), "{case}: stdout {:?}", r.stdout);
    assert_eq!(
        text.lines().count(),
        1,
        "{case}: one paragraph expected, got\n{text}"
    );
    assert!(text.len() < 800, "{case}: message too long:\n{text}");
    for n in needles {
        assert!(text.contains(n.as_str()), "{case}: {n:?} not in\n{text}");
    }
}

/// Two small clusters, the source holding blocks that a run which wrongly
/// went ahead would copy.
async fn pair_with_blocks() -> Pair {
    let p = Pair::with(
        ClusterConfig::new(2, SRC_TOKEN),
        ClusterConfig::new(2, DST_TOKEN),
    )
    .await;
    p.src
        .seed_blocks(5, &[SizeRange { min: 1, max: 100 }], 1, 1);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_one_paragraph_and_writes_nothing() {
    let p = pair_with_blocks().await;
    let dir = p.dir.path();
    let base = {
        let mut b = p.base_args();
        b.extend(s(&["-replications", "1"]));
        b
    };
    let src_json = p.path("src.json").display().to_string();
    let conf = |rel: &str| private_copy(dir, rel);
    let svc = |rel: &str| testdata(rel).display().to_string();
    let missing = dir.join("does-not-exist.conf").display().to_string();
    let a_dir = format!("{}/", dir.display());

    let mut cases = vec![
        Case {
            name: "settings file missing",
            args: with(&base, "-src", &missing),
            needles: s(&["does-not-exist.conf", "does not exist", "-src"]),
        },
        Case {
            // Unreadable as a file even for root: a directory.
            name: "settings path is a directory",
            args: with(&base, "-dst", &a_dir),
            needles: vec![
                a_dir.clone(),
                "cannot read the destination settings file".into(),
            ],
        },
        Case {
            name: "settings line without =",
            args: with(&base, "-src", &conf("settings/no-equals.conf")),
            needles: s(&["no-equals.conf:3:", "no '='", "line 3"]),
        },
        Case {
            name: "settings without token",
            args: with(&base, "-src", &conf("settings/no-token.conf")),
            needles: s(&["no-token.conf", "no ARVADOS_API_TOKEN", "source"]),
        },
        Case {
            name: "settings with an empty token",
            args: with(&base, "-dst", &conf("settings/empty-token.conf")),
            needles: s(&["empty-token.conf", "no ARVADOS_API_TOKEN", "destination"]),
        },
        Case {
            name: "settings without host",
            args: with(&base, "-dst", &conf("settings/no-host.conf")),
            needles: s(&["no-host.conf", "no ARVADOS_API_HOST", "destination"]),
        },
        Case {
            name: "settings not UTF-8",
            args: with(&base, "-src", &conf("settings/not-utf8.conf")),
            needles: s(&["not-utf8.conf", "UTF-8"]),
        },
        Case {
            name: "no -src at all",
            args: without(&base, "-src"),
            needles: s(&["-src is required"]),
        },
        Case {
            name: "services not JSON",
            args: with(
                &base,
                "-src-keep-services-json",
                &svc("services/not-json.json"),
            ),
            needles: s(&["not-json.json", "-src-keep-services-json", "not valid JSON"]),
        },
        Case {
            name: "services without items",
            args: with(
                &base,
                "-dst-keep-services-json",
                &svc("services/no-items.json"),
            ),
            needles: s(&["no-items.json", "-dst-keep-services-json", "\"items\""]),
        },
        Case {
            name: "services with empty items",
            args: with(
                &base,
                "-src-keep-services-json",
                &svc("services/empty-items.json"),
            ),
            needles: s(&["empty-items.json", "no keepstore or keepproxy"]),
        },
        Case {
            name: "services bad port",
            args: with(
                &base,
                "-src-keep-services-json",
                &svc("services/bad-port.json"),
            ),
            needles: s(&["bad-port.json", "service_port", "70000"]),
        },
        Case {
            name: "services duplicate uuid",
            args: with(
                &base,
                "-dst-keep-services-json",
                &svc("services/dup-uuid.json"),
            ),
            needles: s(&["dup-uuid.json", "zzzzz-bi6l4-000000000000000 twice"]),
        },
        Case {
            name: "services empty uuid",
            args: with(
                &base,
                "-src-keep-services-json",
                &svc("services/no-uuid.json"),
            ),
            needles: s(&["no-uuid.json", "item 0 without a \"uuid\""]),
        },
        Case {
            name: "services file missing",
            args: with(&base, "-src-keep-services-json", &missing),
            needles: s(&["does-not-exist.conf", "-src-keep-services-json"]),
        },
        Case {
            name: "services literal JSON without items",
            args: with(&base, "-dst-keep-services-json", "{\"items\": 3}"),
            needles: s(&["-dst-keep-services-json", "\"items\""]),
        },
        Case {
            name: "prefix not hex",
            args: with(&base, "-prefix", "xyz"),
            needles: s(&["-prefix \"xyz\"", "hex"]),
        },
        Case {
            name: "prefix upper case",
            args: with(&base, "-prefix", "ABC"),
            needles: s(&["-prefix \"ABC\"", "lowercase hex"]),
        },
        Case {
            name: "prefix longer than 32",
            args: with(&base, "-prefix", &"0".repeat(33)),
            needles: s(&["-prefix", "0 to 32"]),
        },
        Case {
            name: "negative replications",
            args: with(&base, "-replications", "-1"),
            needles: s(&["-replications -1", "negative"]),
        },
        Case {
            name: "more replications than writable services",
            args: with(&base, "-replications", "3"),
            needles: s(&["-replications 3", "2 writable destination services"]),
        },
        Case {
            name: "bad duration (no unit)",
            args: with(&base, "--timeout", "10"),
            needles: s(&["-timeout", "\"10\"", "duration"]),
        },
        Case {
            name: "bad duration (word)",
            args: with(&base, "-src-blob-signature-ttl", "forever"),
            needles: s(&["-src-blob-signature-ttl", "\"forever\""]),
        },
        Case {
            name: "bad connect timeout",
            args: with(&base, "--contimeout", "5x"),
            needles: s(&["-contimeout", "\"5x\""]),
        },
        Case {
            name: "zero transfers",
            args: with(&base, "--transfers", "0"),
            needles: s(&["--transfers"]),
        },
        Case {
            name: "source and destination are the same services",
            args: with(&base, "-dst-keep-services-json", &src_json),
            needles: s(&["source and destination both list", "-src/-dst"]),
        },
        Case {
            name: "report in a directory that does not exist",
            args: with(&base, "--report", "/nonexistent-dir/report.json"),
            needles: s(&["/nonexistent-dir/report.json", "--report", "does not exist"]),
        },
    ];

    // chmod 000 only makes a file unreadable for non-root users; as root (CI
    // containers) the read succeeds, so the case is only added when it bites.
    // The directory case above covers "unreadable" for everyone.
    let locked = private_copy(dir, "settings/good.conf");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&locked).is_err() {
        cases.push(Case {
            name: "settings unreadable (mode 000)",
            args: with(&base, "-src", &locked),
            needles: s(&["good.conf", "permission denied"]),
        });
    } else {
        eprintln!("running as root: skipping the mode-000 case (the directory case covers it)");
    }

    let mut timings = Vec::new();
    for c in &cases {
        let t = Instant::now();
        let r = run_rsync(&c.args).await;
        let took = t.elapsed();
        assert_one_paragraph(c.name, &r, &c.needles);
        // "Within seconds": no retries, waits or timeouts on the way to the
        // error. A hang guard rather than a speed test (a case takes a few
        // ms), hence the wide margin.
        assert!(took < Duration::from_secs(20), "{}: took {took:?}", c.name);
        assert_eq!(
            p.total_dst_puts(),
            0,
            "{}: wrote to the destination",
            c.name
        );
        assert_eq!(p.total_src_gets(), 0, "{}: read from the source", c.name);
        for i in 0..p.src.len() {
            assert_eq!(p.src.counters(i).index_requests, 0, "{}: indexed", c.name);
        }
        timings.push((c.name, took));
    }
    for (n, t) in timings {
        eprintln!("{t:>10.2?}  {n}");
    }

    // The good and commented settings files are accepted (the run goes on to
    // copy the blocks).
    for good in ["settings/good.conf", "settings/comments.conf"] {
        let text = std::fs::read_to_string(testdata(good)).unwrap();
        let parsed =
            keep_rsync::settings::parse(&text, Path::new(good), keep_rsync::role::Role::Source)
                .unwrap();
        assert_eq!(parsed.api_host, "127.0.0.1:1", "{good}");
        assert!(parsed.insecure, "{good}");
        assert!(parsed.warnings.is_empty(), "{good}: {:?}", parsed.warnings);
    }
    let good = keep_rsync::services::parse_services(
        &std::fs::read_to_string(testdata("services/good.json")).unwrap(),
        "good.json",
        keep_rsync::role::Role::Source,
    )
    .unwrap();
    assert_eq!(good.len(), 2);
}

/// Feed a fixture in chunks of `chunk` bytes.
fn parse_fixture(rel: &str, chunk: usize) -> (Vec<Entry>, Result<u64, BodyError>) {
    let body = std::fs::read(testdata(rel)).unwrap();
    let mut p = BodyParser::default();
    let mut out = Vec::new();
    for c in body.chunks(chunk.max(1)) {
        if let Err(e) = p.feed(c, &mut |e| out.push(e)) {
            return (out, Err(e));
        }
    }
    (out, p.finish())
}

#[test]
fn index_fixtures() {
    for chunk in [1, 7, 64, 1 << 20] {
        let (e, r) = parse_fixture("index/good.txt", chunk);
        assert_eq!(r, Ok(4), "good, chunk {chunk}");
        assert_eq!(e.len(), 4);
        assert_eq!(e[3].size, 0);

        assert_eq!(parse_fixture("index/empty.txt", chunk).1, Ok(0));

        assert_eq!(
            parse_fixture("index/incomplete.txt", chunk).1,
            Err(BodyError::Incomplete { lines: 2 }),
            "incomplete, chunk {chunk}"
        );
        assert!(
            matches!(
                parse_fixture("index/cut-mid-line.txt", chunk).1,
                Err(BodyError::Incomplete { .. })
            ),
            "cut mid-line, chunk {chunk}"
        );
        match parse_fixture("index/malformed.txt", chunk).1 {
            Err(BodyError::Malformed { line_no: 2, line }) => {
                assert!(line.contains("this-is-not-a-locator"), "{line}")
            }
            other => panic!("malformed, chunk {chunk}: {other:?}"),
        }
        assert!(
            matches!(
                parse_fixture("index/after-terminator.txt", chunk).1,
                Err(BodyError::Malformed { line_no: 3, .. })
            ),
            "after terminator, chunk {chunk}"
        );
    }
}

/// Bad block lists (issue 13), for keep-rsync's --blocks-from and
/// keep-block-check's -block-hash-file alike: not UTF-8, no locator at all,
/// a malformed hash (31 digits, upper case), a missing file. Each exits 2
/// with one paragraph naming the file and the line, shows no signature, and
/// nothing is copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_block_lists_exit_2_with_one_paragraph() {
    let p = pair_with_blocks().await;
    let foo = "acbd18db4cc2f85cedef654fccc4a4d8";
    let sig = "89118b78732c33104a4d6231e8b5a5fa1e4301e3";
    let files: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "not-utf8.txt",
            format!("{foo}+3\n. {foo}+3 0:3:a\n{foo}+3 caf\u{e9}")
                .into_bytes()
                .into_iter()
                .chain(*b" \xff\xfe\n")
                .collect(),
            vec!["not-utf8.txt", "line 3", "not UTF-8"],
        ),
        (
            "no-locator.txt",
            b"manifest_text\n------\n(0 rows)\n".to_vec(),
            vec!["no-locator.txt", "names no block", "3 lines"],
        ),
        (
            "31-digits.txt",
            format!("{foo}+3\n. {}+3 0:3:a\n", &foo[..31]).into_bytes(),
            vec!["31-digits.txt", "line 2", "31 hex digits"],
        ),
        (
            "upper-case.txt",
            format!("\n\n{}\n", foo.to_uppercase()).into_bytes(),
            vec!["upper-case.txt", "line 3", "upper-case"],
        ),
        (
            // A signature with its hint letter lower-cased is not a hint: the
            // line is refused without showing it.
            "bad-hint.txt",
            format!(". {foo}+3+a{sig}@7fffffff 0:3:a\n").into_bytes(),
            vec!["bad-hint.txt", "line 1", "upper-case letter"],
        ),
    ];
    let mut lists: Vec<(String, Vec<String>)> = files
        .into_iter()
        .map(|(name, bytes, needles)| {
            let path = p.path(name);
            std::fs::write(&path, bytes).unwrap();
            (
                path.display().to_string(),
                needles.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    let missing = p.path("no-such-list.txt").display().to_string();
    lists.push((
        missing.clone(),
        vec![missing.clone(), "does not exist".into()],
    ));
    let conf = p.path("dst.conf").display().to_string();
    let json = p.path("dst.json").display().to_string();
    for (list, needles) in &lists {
        let mut rsync = p.base_args();
        rsync.extend(s(&["-replications", "1", "--blocks-from", list]));
        let mut needles_rsync = needles.clone();
        needles_rsync.push("--blocks-from".into());
        let r = run_rsync(&rsync).await;
        assert_one_paragraph(&format!("keep-rsync {list}"), &r, &needles_rsync);
        assert!(!r.all().contains(sig), "a signature in\n{}", r.all());

        let check = s(&[
            "-config",
            &conf,
            "-keep-services-json",
            &json,
            "-block-hash-file",
            list,
        ]);
        let mut needles_check = needles.clone();
        needles_check.push("-block-hash-file".into());
        let r = run_with_stdin(check_bin(), &check, None).await;
        assert_one_paragraph(&format!("keep-block-check {list}"), &r, &needles_check);
        assert!(!r.all().contains(sig), "a signature in\n{}", r.all());
    }
    // A bad list stops both programs before they ask any service anything.
    assert_eq!(p.total_dst_puts(), 0);
    for cluster in [&p.src, &p.dst] {
        let asked: u64 = (0..cluster.len())
            .map(|i| {
                let c = cluster.counters(i);
                c.index_requests + c.gets + c.heads
            })
            .sum();
        assert_eq!(asked, 0, "a service was asked despite a bad list");
    }
    // Both lists from stdin: one of them must be a file.
    let mut both = p.base_args();
    both = with(&both, "-src-keep-services-json", "-");
    both.extend(s(&["-replications", "1", "--blocks-from", "-"]));
    let r = run_rsync(&both).await;
    assert_one_paragraph("two stdins", &r, &s(&["cannot both read stdin"]));
}
