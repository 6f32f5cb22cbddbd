//! docs/operations.md stays true (issue 12): the alert rules it quotes are
//! docs/alerts/keep-rsync.rules.yml verbatim, `promtool check rules` accepts
//! that file and `promtool test rules` passes its unit test
//! (docs/alerts/keep-rsync.rules.test.yml), and the metrics table lists
//! exactly the metrics, types and labels a real run writes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::*;

const RULES: &str = "docs/alerts/keep-rsync.rules.yml";
const RULES_TEST: &str = "docs/alerts/keep-rsync.rules.test.yml";
const OPERATIONS: &str = "docs/operations.md";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Run `promtool ARGS` in the repository root; panic with its output when it
/// fails.
fn promtool(args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_test() {
    if let Some(why) = promtool_missing() {
        return skip(
            "the_alert_rules_pass_promtool_check_and_their_unit_test",
            &why,
        );
    }
    promtool(&["check", "rules", RULES]);
    promtool(&["test", "rules", RULES_TEST]);
}

#[test]
fn operations_md_quotes_the_rules_file_verbatim() {
    let rules = read(RULES);
    let doc = read(OPERATIONS);
    assert!(
        doc.contains(&format!("```yaml\n{rules}```\n")),
        "{OPERATIONS} must include {RULES} verbatim, in one ```yaml block"
    );
    // README links this section by its anchor.
    assert!(doc.contains("\n## Reading -v output\n"), "{OPERATIONS}");
}

/// Each metric's type and label names (besides `prefix`), as the metrics
/// table of docs/operations.md lists them.
fn documented_metrics(doc: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out = BTreeMap::new();
    for row in doc.lines().filter(|l| l.starts_with("| `keep_rsync_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // "", metric, type, labels, meaning, ""
        assert!(cells.len() >= 5, "a metrics table row: {row}");
        let name = cells[1].trim_matches('`').to_string();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`'))
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let dup = out.insert(name.clone(), (cells[2].to_string(), labels));
        assert!(dup.is_none(), "{name} twice in the table");
    }
    out
}

/// The same, from metrics text: `# TYPE` lines and the samples' label names.
fn emitted_metrics(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
            out.entry(name.to_string()).or_default().0 = kind.to_string();
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, labels) = match line.split_once('{') {
                Some((name, rest)) => (name, rest.split_once('}').expect("closed labels").0),
                None => (line.split_once(' ').expect("NAME VALUE").0, ""),
            };
            let keys = labels
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
                .collect::<BTreeSet<_>>();
            assert!(keys.contains("prefix"), "every sample has prefix: {line}");
            let entry = out.entry(name.to_string()).or_default();
            entry.1.extend(keys.into_iter().filter(|k| k != "prefix"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_table_lists_what_a_real_run_writes() {
    let p = Pair::start().await;
    p.src.seed_blocks(20, &small(), 2, 171);
    let prom = p.path("keep-rsync-all.prom");
    p.rsync(&[
        "-replications",
        "2",
        "--metrics-textfile",
        prom.to_str().unwrap(),
    ])
    .await
    .expect(0);
    // Exit 0: every metric is there, the last success too.
    let emitted = emitted_metrics(&std::fs::read_to_string(&prom).unwrap());
    let documented = documented_metrics(&read(OPERATIONS));
    assert_eq!(
        documented, emitted,
        "the metrics table of {OPERATIONS} (left) against a real run's textfile (right)"
    );
}
