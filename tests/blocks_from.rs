//! `--blocks-from` (issue 13): a list restricts the plan to its blocks, in
//! every accepted form (locators, bare hashes, manifest text, stdin), with
//! and without `-prefix`, in one pass or many; listed blocks on no service
//! are lost (summary, report, exit 1); a dry run is a migration check that
//! writes nothing. Against keepstore-sim clusters.

mod common;

use std::collections::BTreeSet;

use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::{ClusterConfig, SyntheticIndex};
use serde_json::Value;

/// A source and a destination with blocks of every kind a list can name.
struct Scene {
    p: Pair,
    /// On both sides, with the 2 replicas wanted.
    present: Vec<(BlockHash, u64)>,
    /// On the source only: to copy.
    missing: Vec<(BlockHash, u64)>,
    /// On the destination only (1 replica): present, nothing to copy.
    dst_only: Vec<(BlockHash, u64)>,
    /// Nowhere.
    lost: Vec<(BlockHash, u64)>,
    /// On the source, not listed: never copied.
    unlisted: Vec<(BlockHash, u64)>,
}

const SIG: &str = "+A89118b78732c33104a4d6231e8b5a5fa1e4301e3@7fffffff";

impl Scene {
    async fn start() -> Scene {
        let p = Pair::start().await;
        let blocks = p.src.seed_blocks(40, &small(), 2, 13);
        let (present, rest) = blocks.split_at(10);
        let (missing, unlisted) = rest.split_at(10);
        for (h, _) in present {
            let data = source_copy(&p, h);
            for &i in p.dst.probe_order(h).iter().take(2) {
                p.dst.put_block(i, &data);
            }
        }
        let dst_only: Vec<(BlockHash, u64)> = (0..3)
            .map(|n| {
                let data = format!("only at the destination {n}").into_bytes();
                let h = BlockHash::of(&data);
                p.dst.put_block(p.dst.probe_order(&h)[0], &data);
                (h, data.len() as u64)
            })
            .collect();
        let lost = (0..3)
            .map(|n| {
                let data = format!("a block nobody has {n}");
                (BlockHash::of(data.as_bytes()), data.len() as u64)
            })
            .collect();
        Scene {
            present: present.to_vec(),
            missing: missing.to_vec(),
            unlisted: unlisted.to_vec(),
            dst_only,
            lost,
            p,
        }
    }

    /// Every listed block, with duplicates, out of order.
    fn listed(&self) -> Vec<(BlockHash, u64)> {
        let mut v: Vec<(BlockHash, u64)> = (self.present.iter())
            .chain(&self.missing)
            .chain(&self.dst_only)
            .chain(&self.lost)
            .copied()
            .collect();
        v.reverse();
        v.extend_from_slice(&self.missing[..3]);
        v
    }

    fn locators(&self) -> String {
        self.listed()
            .iter()
            .map(|(h, s)| format!("{h}+{s}\n"))
            .collect()
    }

    /// A keepstore index: `HASH+SIZE UNIXNANO` lines.
    fn index(&self) -> String {
        self.listed()
            .iter()
            .map(|(h, s)| format!("{h}+{s} 1611413425003139053\n"))
            .collect()
    }

    fn hashes(&self) -> String {
        self.listed()
            .iter()
            .map(|(h, _)| format!("{h}\n"))
            .collect()
    }

    /// Manifest text as the database holds it: signed locators, stream
    /// names, file tokens, several streams per collection.
    fn manifest(&self) -> String {
        let mut out = String::new();
        for (k, chunk) in self.listed().chunks(4).enumerate() {
            let stream = if k == 0 {
                ".".to_string()
            } else {
                format!("./dir\\040{k}")
            };
            out.push_str(&stream);
            let mut pos = 0;
            for (h, s) in chunk {
                out.push_str(&format!(" {h}+{s}{SIG}"));
                pos += s;
            }
            out.push_str(&format!(" 0:{pos}:file\\040{k}.txt {pos}:0:empty\n"));
        }
        out
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = self.p.base_args();
        a.extend(["-replications", "2"].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
}

fn source_copy(p: &Pair, h: &BlockHash) -> bytes::Bytes {
    (0..p.src.len())
        .find_map(|i| p.src.get_block(i, h))
        .expect("source copy")
}

fn count(v: &[(BlockHash, u64)], prefix: &str) -> u64 {
    v.iter().filter(|(h, _)| h.has_prefix(prefix)).count() as u64
}

fn lost_names(v: &[(BlockHash, u64)], prefix: &str, sizes: bool) -> Vec<String> {
    let mut out: Vec<(BlockHash, String)> = v
        .iter()
        .filter(|(h, _)| h.has_prefix(prefix))
        .map(|(h, s)| {
            (
                *h,
                if sizes {
                    format!("{h}+{s}")
                } else {
                    h.to_string()
                },
            )
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

/// Run a dry run with the list, return its report.
async fn dry(
    s: &Scene,
    list: &str,
    extra: &[&str],
    name: &str,
    stdin: Option<&[u8]>,
) -> (Run, Value) {
    let report = s.p.path(name);
    let mut args = vec![
        "--dry-run",
        "--blocks-from",
        list,
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = run_with_stdin(bin(), &s.args(&args), stdin).await;
    let v = read_json(&report);
    (r, v)
}

fn check_plan(s: &Scene, v: &Value, prefix: &str, sizes: bool, what: &str) {
    let plan = &v["plan"];
    let want = |k: &str, n: u64| assert_eq!(plan[k], n, "{what}: plan.{k} in {plan}");
    let distinct: Vec<(BlockHash, u64)> = s
        .listed()
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    want("listed", count(&distinct, prefix));
    want(
        "present",
        count(&s.present, prefix) + count(&s.dst_only, prefix),
    );
    want("to_copy", count(&s.missing, prefix));
    want("to_top_up", 0);
    want("lost", count(&s.lost, prefix));
    // The index totals are the indexes', not the list's.
    let all_src =
        count(&s.present, prefix) + count(&s.missing, prefix) + count(&s.unlisted, prefix);
    want("src_blocks", all_src);
    assert_eq!(
        v["lost_blocks"],
        serde_json::json!(lost_names(&s.lost, prefix, sizes)),
        "{what}"
    );
    assert_eq!(v["lost_omitted"], 0, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_plans_the_same_and_finds_the_lost_blocks() {
    let s = Scene::start().await;
    std::fs::write(s.p.path("locators.txt"), s.locators()).unwrap();
    std::fs::write(s.p.path("hashes.txt"), s.hashes()).unwrap();
    std::fs::write(s.p.path("manifests.txt"), s.manifest()).unwrap();
    std::fs::write(s.p.path("index.txt"), s.index()).unwrap();
    let forms: [(&str, &str, bool, Option<Vec<u8>>); 5] = [
        ("locators", "locators.txt", true, None),
        ("index lines", "index.txt", true, None),
        ("hashes", "hashes.txt", false, None),
        ("manifest text", "manifests.txt", true, None),
        ("stdin", "-", true, Some(s.manifest().into_bytes())),
    ];
    for (what, file, sizes, stdin) in forms {
        let list = if file == "-" {
            "-".to_string()
        } else {
            s.p.path(file).display().to_string()
        };
        let (r, v) = dry(&s, &list, &[], &format!("{what}.json"), stdin.as_deref()).await;
        r.expect(1);
        assert_eq!(v["status"], "incomplete", "{what}");
        assert_eq!(v["blocks_from"], list.as_str(), "{what}");
        check_plan(&s, &v, "", sizes, what);
        // The summary names the lost blocks; no signature anywhere.
        assert!(r.stderr.contains("lost: 3"), "{what}: {}", r.stderr);
        for (h, _) in &s.lost {
            assert!(
                r.stderr.contains(&h.to_string()),
                "{what}: {h} not in\n{}",
                r.stderr
            );
        }
        let report_text = std::fs::read_to_string(s.p.path(&format!("{what}.json"))).unwrap();
        for text in [r.all(), report_text] {
            assert!(!text.contains(&SIG[2..20]), "{what}: a signature leaked");
        }
    }
    // A dry run wrote nothing.
    assert_eq!(s.p.total_dst_puts(), 0);
    assert_eq!(s.p.total_src_gets(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_count_lost_blocks_and_leave_the_list_to_the_report() {
    let s = Scene::start().await;
    std::fs::write(s.p.path("locators.txt"), s.locators()).unwrap();
    let list = s.p.path("locators.txt").display().to_string();
    let (r, v) = dry(&s, &list, &["--log-format", "json"], "json.json", None).await;
    r.expect(1);
    let events: Vec<Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary event");
    assert_eq!(summary["plan"]["lost"], 3);
    assert_eq!(summary["status"], "incomplete");
    // The list itself (unbounded: it may come back from a spill file) is
    // the report's, as the failure list is.
    assert!(summary.get("lost_blocks").is_none(), "{summary}");
    assert!(summary.get("failures").is_none(), "{summary}");
    assert_eq!(v["lost_blocks"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_and_sub_prefix_passes_see_the_same_list() {
    let s = Scene::start().await;
    // Plus 1200 lost bare hashes, so that the list alone outgrows a small
    // --index-budget and the run splits into passes.
    let extra: Vec<(BlockHash, u64)> = (0..1200u32)
        .map(|n| (BlockHash::of(&n.to_le_bytes()), 0))
        .collect();
    let mut text = s.locators();
    for (h, _) in &extra {
        text.push_str(&format!("{h}\n"));
    }
    let list = s.p.path("big.txt");
    std::fs::write(&list, text).unwrap();
    let list = list.display().to_string();
    let (r, one) = dry(&s, &list, &[], "one.json", None).await;
    r.expect(1);
    let (r, many) = dry(&s, &list, &["--index-budget", "1000"], "many.json", None).await;
    r.expect(1);
    assert_eq!(one["passes"], 1);
    assert_eq!(
        many["passes"], 16,
        "1,226 listed blocks against a budget of 1,000 lines"
    );
    assert_eq!(one["plan"], many["plan"]);
    assert_eq!(one["lost_blocks"], many["lost_blocks"]);
    assert_eq!(one["plan"]["lost"], 1203);
    let lost = one["lost_blocks"].as_array().unwrap();
    assert!(
        lost.windows(2).all(|w| w[0].as_str() < w[1].as_str()),
        "sorted"
    );

    // Each -prefix shard plans its share; the shards add up to the whole.
    let mut sum = [0u64; 4];
    for d in 0..16 {
        let p = format!("{d:x}");
        let (r, v) = dry(&s, &list, &["-prefix", &p], &format!("p{p}.json"), None).await;
        let lost_here = count(&s.lost, &p) + count(&extra, &p);
        r.expect(if lost_here > 0 { 1 } else { 0 });
        assert_eq!(v["plan"]["to_copy"], count(&s.missing, &p), "prefix {p}");
        assert_eq!(v["plan"]["lost"], lost_here, "prefix {p}");
        for (k, key) in ["listed", "present", "to_copy", "lost"].iter().enumerate() {
            sum[k] += v["plan"][key].as_u64().unwrap();
        }
        let names: Vec<&str> = v["lost_blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(names.len() as u64, lost_here, "prefix {p}");
        assert!(
            names.iter().all(|n| n.starts_with(&p)),
            "prefix {p}: {names:?}"
        );
    }
    let whole = ["listed", "present", "to_copy", "lost"].map(|k| one["plan"][k].as_u64().unwrap());
    assert_eq!(sum, whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_copies_only_listed_blocks_and_exits_1_while_any_is_lost() {
    let s = Scene::start().await;
    let list = s.p.path("list.txt");
    std::fs::write(&list, s.manifest()).unwrap();
    let list = list.display().to_string();
    let report = s.p.path("run.json");
    let r =
        run_rsync(&s.args(&["--blocks-from", &list, "--report", report.to_str().unwrap()])).await;
    r.expect(1);
    let v = read_json(&report);
    assert_eq!(
        (v["copied"].as_u64(), v["failed"].as_u64()),
        (Some(10), Some(0))
    );
    assert_eq!(v["plan"]["lost"], 3);
    s.p.assert_placed(&s.missing, 2);
    for (h, _) in &s.unlisted {
        assert!(s.p.dst_holders(h).is_empty(), "unlisted {h} was copied");
    }
    assert_eq!(s.p.total_dst_puts(), 20, "10 blocks, 2 replicas each");

    // The check again: nothing to copy, still lost.
    let (r, v) = dry(&s, &list, &[], "again.json", None).await;
    r.expect(1);
    assert_eq!(v["plan"]["to_copy"], 0);
    assert_eq!(v["plan"]["present"], 23);
    // A list of what the clusters do hold passes: exit 0.
    let held: String = (s.present.iter().chain(&s.missing).chain(&s.dst_only))
        .map(|(h, n)| format!("{h}+{n}\n"))
        .collect();
    std::fs::write(s.p.path("held.txt"), held).unwrap();
    let (r, v) = dry(
        &s,
        s.p.path("held.txt").to_str().unwrap(),
        &[],
        "held.json",
        None,
    )
    .await;
    r.expect(0);
    assert_eq!(v["status"], "dry_run");
    assert_eq!(
        (v["plan"]["listed"].as_u64(), v["plan"]["lost"].as_u64()),
        (Some(23), Some(0))
    );
}

/// At index scale: a list of every third block of a 200,000-block synthetic
/// cluster, plus blocks nobody has, planned in one pass and in 256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_clusters_in_one_pass_and_in_many() {
    let syn = |fraction| SyntheticIndex {
        blocks: 200_000,
        seed: 42,
        replicas: 2,
        fraction,
    };
    let cfg = |token: &str, fraction| {
        let mut c = ClusterConfig::new(4, token);
        c.synthetic = Some(syn(fraction));
        c
    };
    let p = Pair::with(cfg(SRC_TOKEN, 1.0), cfg(DST_TOKEN, 0.9)).await;
    let (src, dst) = (syn(1.0), syn(0.9));
    let mut text = String::new();
    let (mut listed, mut at_dst) = (0u64, 0u64);
    for i in (0..200_000).step_by(3) {
        text.push_str(&format!("{}+{}\n", src.hash(i), src.size(i)));
        listed += 1;
        at_dst += dst.present(i) as u64;
    }
    for n in 0..500u32 {
        text.push_str(&format!("{}\n", BlockHash::of(&n.to_be_bytes())));
    }
    std::fs::write(p.path("list.txt"), text).unwrap();
    let list = p.path("list.txt").display().to_string();
    let mut reports = Vec::new();
    for budget in ["100000000", "10000"] {
        let report = p.path(&format!("{budget}.json"));
        let r = p
            .rsync(&[
                "-replications",
                "2",
                "--dry-run",
                "--blocks-from",
                &list,
                "--index-budget",
                budget,
                "--report",
                report.to_str().unwrap(),
            ])
            .await;
        r.expect(1);
        reports.push(read_json(&report));
    }
    let (one, many) = (&reports[0], &reports[1]);
    assert_eq!(one["passes"], 1);
    assert_eq!(many["passes"], 256);
    assert_eq!(one["plan"], many["plan"]);
    assert_eq!(one["lost_blocks"], many["lost_blocks"]);
    let plan = &one["plan"];
    assert_eq!(plan["listed"], listed + 500);
    assert_eq!(plan["present"], at_dst);
    assert_eq!(plan["to_copy"], listed - at_dst);
    assert_eq!(plan["lost"], 500);
    assert_eq!(plan["src_blocks"], 200_000);
}
