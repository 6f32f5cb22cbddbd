//! Collection records in `--blocks-from` (issue 21): each block is written
//! with the replication and storage classes its collections want, as
//! keep-balance computes them (per class, the largest replication of the
//! collections naming it; null = the destination's default). psql-style
//! CSV and JSON lines; placement and classes checked on keepstore-sim
//! clusters whose keepstores are of different classes, run from the
//! clusters' config.yml files as an admin would; reruns move nothing;
//! broken records are exit 2 naming line and collection; keep-block-check
//! reports under-replicated blocks.

mod common;

use common::*;
use keep_rsync::protocol::BlockHash;
use serde_json::{json, Value};

/// Destination keepstores 0–2 are `default`, 3–5 `archive`.
const DST_CLASSES: [&str; 6] = [
    "default", "default", "default", "archive", "archive", "archive",
];

struct Scene {
    p: Pair,
    /// In all three collections: wants default 3 (c2), archive 2 (c3's
    /// null, over c1's 1).
    shared: (BlockHash, u64),
    /// Only in c1: archive 1.
    archive_only: (BlockHash, u64),
    /// Only in c3: default 2 and archive 2 (null replication).
    both: (BlockHash, u64),
    /// Only in c2, already on one `default` keepstore: topped up to 3.
    top_up: (BlockHash, u64),
}

impl Scene {
    async fn start() -> Scene {
        Scene::start_with(true).await
    }

    /// `serve_mounts`: the destination's keepstores answer `GET /mounts`.
    async fn start_with(serve_mounts: bool) -> Scene {
        let src = signed(2, SRC_TOKEN, SRC_KEY);
        let mut dst = signed(6, DST_TOKEN, DST_KEY);
        dst.serve_mounts = serve_mounts;
        dst.default_replication = 2;
        // Runs from services lists ask it for defaultCollectionReplication.
        dst.api_server = true;
        dst.service_classes = DST_CLASSES.iter().map(|c| vec![c.to_string()]).collect();
        let p = Pair::with(src, dst).await;
        write_private(&p.path("src.yml"), &p.src.cluster_config_text());
        write_private(&p.path("dst.yml"), &p.dst.cluster_config_text());
        let put = |n: usize, text: &str| {
            let data = format!("{text} {}", "z".repeat(n * 101)).into_bytes();
            (p.src.put_block(n % 2, &data), data.len() as u64)
        };
        let shared = put(0, "shared by three collections");
        let archive_only = put(1, "archive only");
        let both = put(2, "both classes, default replication");
        let top_up = put(3, "already once at the destination");
        let data = source_copy(&p, &top_up.0);
        let first_default = p
            .dst
            .probe_order(&top_up.0)
            .into_iter()
            .find(|&i| i < 3)
            .unwrap();
        p.dst.put_block(first_default, &data);
        Scene {
            p,
            shared,
            archive_only,
            both,
            top_up,
        }
    }

    fn loc(b: &(BlockHash, u64)) -> String {
        format!("{}+{}", b.0, b.1)
    }

    /// The three collections: (uuid, replication_desired, classes, manifest).
    fn collections(&self) -> Vec<(String, Option<u32>, Vec<&'static str>, String)> {
        let m = |blocks: &[&(BlockHash, u64)]| {
            let locs: Vec<String> = blocks.iter().map(|b| Self::loc(b)).collect();
            let total: u64 = blocks.iter().map(|b| b.1).sum();
            format!(". {} 0:{total}:file\\040name\n", locs.join(" "))
        };
        vec![
            (
                "zzzzz-4zz18-000000000000001".into(),
                Some(1),
                vec!["archive"],
                m(&[&self.shared, &self.archive_only]),
            ),
            (
                "zzzzz-4zz18-000000000000002".into(),
                Some(3),
                vec!["default"],
                // Two streams: the manifest field has a newline inside.
                format!(
                    "{}./sub {} 0:{}:f\n",
                    m(&[&self.shared]),
                    Self::loc(&self.top_up),
                    self.top_up.1
                ),
            ),
            (
                "zzzzz-4zz18-000000000000003".into(),
                None,
                vec!["default", "archive"],
                m(&[&self.both, &self.shared]),
            ),
        ]
    }

    /// As `psql -c "\copy (select uuid, replication_desired,
    /// storage_classes_desired, manifest_text from collections) to stdout
    /// with csv header"` writes them.
    fn csv(&self) -> String {
        let mut s =
            String::from("uuid,replication_desired,storage_classes_desired,manifest_text\n");
        for (uuid, r, classes, manifest) in self.collections() {
            let classes = serde_json::to_string(&classes)
                .unwrap()
                .replace('"', "\"\"");
            let r = r.map(|n| n.to_string()).unwrap_or_default();
            s.push_str(&format!(
                "{uuid},{r},\"{classes}\",\"{}\"\n",
                manifest.replace('"', "\"\"")
            ));
        }
        s
    }

    /// As `arv collection list | jq -c '.items[]'` writes them.
    fn json_lines(&self) -> String {
        self.collections()
            .into_iter()
            .map(|(uuid, r, classes, manifest)| {
                json!({"uuid": uuid, "replication_desired": r,
                       "storage_classes_desired": classes, "manifest_text": manifest,
                       "portable_data_hash": "d41d8cd98f00b204e9800998ecf8427e+0"})
                .to_string()
                    + "\n"
            })
            .collect()
    }

    fn args(&self, list: &str, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            "-src-cluster-config".to_string(),
            self.p.path("src.yml").display().to_string(),
            "-dst-cluster-config".into(),
            self.p.path("dst.yml").display().to_string(),
            "--blocks-from".into(),
            self.p.path(list).display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// Copies of `b` on `default` and on `archive` keepstores.
    fn placed(&self, b: &(BlockHash, u64)) -> (usize, usize) {
        let h = self.p.dst_holders(&b.0);
        (
            h.iter().filter(|&&i| i < 3).count(),
            h.iter().filter(|&&i| i >= 3).count(),
        )
    }

    fn assert_as_wanted(&self) {
        assert_eq!(
            self.placed(&self.shared),
            (3, 2),
            "shared: default 3, archive 2"
        );
        assert_eq!(
            self.placed(&self.archive_only),
            (0, 1),
            "archive only: archive 1"
        );
        assert_eq!(
            self.placed(&self.both),
            (2, 2),
            "null replication: 2 in each class"
        );
        assert_eq!(self.placed(&self.top_up), (3, 0), "topped up to 3 default");
        // Each class's copies are the first keepstores of that class in the
        // block's probe order, and byte-identical to the source.
        for b in [&self.shared, &self.archive_only, &self.both, &self.top_up] {
            let src = source_copy(&self.p, &b.0);
            for i in self.p.dst_holders(&b.0) {
                assert_eq!(self.p.dst.get_block(i, &b.0).as_deref(), Some(&src[..]));
            }
        }
    }
}

fn source_copy(p: &Pair, h: &BlockHash) -> Vec<u8> {
    (0..p.src.len())
        .find_map(|i| p.src.get_block(i, h))
        .expect("source copy")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_csv_places_each_block_as_its_collections_want() {
    let s = Scene::start().await;
    std::fs::write(s.p.path("collections.csv"), s.csv()).unwrap();

    // A dry run says what the records want, per replication and per class.
    let report = s.p.path("dry.json");
    let r = run_rsync(&s.args(
        "collections.csv",
        &["--dry-run", "--report", &report.display().to_string()],
    ))
    .await;
    r.expect(0);
    assert_eq!(s.p.total_dst_puts(), 0);
    assert!(r.all().contains("per wanted replication"), "{}", r.all());
    assert!(r.all().contains("per wanted storage class"), "{}", r.all());
    let plan = &read_json(&report)["plan"];
    assert_eq!(plan["to_copy"], 3, "{plan}");
    assert_eq!(plan["to_top_up"], 1, "{plan}");
    // Wanted replication: shared 3, archive_only 1, both 2, top_up 3.
    assert_eq!(plan["per_replication"]["1"]["blocks"], 1, "{plan}");
    assert_eq!(plan["per_replication"]["2"]["blocks"], 1, "{plan}");
    assert_eq!(plan["per_replication"]["3"]["blocks"], 2, "{plan}");
    assert_eq!(plan["per_class"]["default"]["blocks"], 3, "{plan}");
    assert_eq!(plan["per_class"]["archive"]["blocks"], 3, "{plan}");

    let report = s.p.path("run.json");
    let r = run_rsync(&s.args(
        "collections.csv",
        &["--report", &report.display().to_string()],
    ))
    .await;
    r.expect(0);
    s.assert_as_wanted();
    let rep = read_json(&report);
    assert_eq!(rep["copied"], 3, "{rep}");
    assert_eq!(rep["topped_up"], 1, "{rep}");
    // 5 + 1 + 4 + 2 copies written, none to the wrong class.
    assert_eq!(rep["replicas_written"], 12, "{rep}");

    // The destination index is the checkpoint: nothing moves again.
    let puts = s.p.total_dst_puts();
    run_rsync(&s.args("collections.csv", &[])).await.expect(0);
    assert_eq!(s.p.total_dst_puts(), puts, "a rerun wrote again");

    // keep-block-check with the same records: all there, as wanted.
    let r = run_with_stdin(check_bin(), &check_args(&s, "collections.csv", &[]), None).await;
    r.expect(0);
    assert!(r.stderr.contains("4 successes, 0 errors"), "{}", r.stderr);
}

fn check_args(s: &Scene, list: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "-cluster-config".to_string(),
        s.p.path("dst.yml").display().to_string(),
        "-block-hash-file".into(),
        s.p.path(list).display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_then_keep_block_check_finds_under_replicated_blocks() {
    let s = Scene::start().await;
    std::fs::write(s.p.path("collections.jsonl"), s.json_lines()).unwrap();
    // -replications 1 overrides every class's count: one copy per class.
    run_rsync(&s.args("collections.jsonl", &["-replications", "1"]))
        .await
        .expect(0);
    assert_eq!(s.placed(&s.shared), (1, 1));
    assert_eq!(s.placed(&s.archive_only), (0, 1));
    assert_eq!(s.placed(&s.both), (1, 1));
    assert_eq!(s.placed(&s.top_up), (1, 0));

    // keep-block-check: three blocks have fewer copies than wanted.
    let report = s.p.path("check.json");
    let r = run_with_stdin(
        check_bin(),
        &check_args(
            &s,
            "collections.jsonl",
            &["--report", &report.display().to_string()],
        ),
        None,
    )
    .await;
    r.expect(1);
    assert!(r.stderr.contains("1 successes, 3 errors"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("Error verifying block {}", Scene::loc(&s.shared))),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("under-replicated: 1 of 2 copies wanted in archive, 1 of 3 in default"),
        "{}",
        r.stderr
    );
    assert_eq!(read_json(&report)["under_replicated"], 3);
    // With -replications 1 it is satisfied.
    let r = run_with_stdin(
        check_bin(),
        &check_args(&s, "collections.jsonl", &["-replications", "1"]),
        None,
    )
    .await;
    r.expect(0);

    // The full run tops up what the collections want; then a rerun is 0.
    run_rsync(&s.args("collections.jsonl", &[])).await.expect(0);
    s.assert_as_wanted();
    let puts = s.p.total_dst_puts();
    run_rsync(&s.args("collections.jsonl", &[])).await.expect(0);
    assert_eq!(s.p.total_dst_puts(), puts);
}

/// Without the destination's config (a services list) and with keepstores
/// from before `/mounts`, their classes are unknown: PUTs still ask for the
/// classes still short and count what each keepstore confirms, so placement
/// is as wanted; a rerun counts every listed copy for every class (nothing
/// known against it) and writes 0. (With `/mounts`, as today's keepstores
/// serve it, the classes are known: tests/mounts.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_unknown_still_counted_by_what_puts_confirm() {
    let s = Scene::start_with(false).await;
    std::fs::write(s.p.path("collections.csv"), s.csv()).unwrap();
    let list = s.p.path("collections.csv").display().to_string();
    s.p.rsync(&["--blocks-from", &list]).await.expect(0);
    // A keepstore asked only for classes it lacks answers 507 (as keepstore
    // does) and the next one is tried: each class got exactly its count.
    assert_eq!(s.placed(&s.shared), (3, 2));
    assert_eq!(s.placed(&s.archive_only), (0, 1));
    assert_eq!(s.placed(&s.both), (2, 2));
    assert_eq!(s.placed(&s.top_up), (3, 0));
    let puts = s.p.total_dst_puts();
    s.p.rsync(&["--blocks-from", &list]).await.expect(0);
    assert_eq!(s.p.total_dst_puts(), puts, "a rerun wrote again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_records_are_exit_2_naming_line_and_collection() {
    let s = Scene::start().await;
    let good = s.csv();
    // A bad replication_desired on the second record: line 4 of the CSV
    // (the first record's manifest has a newline inside its quotes).
    let mut lines: Vec<String> = Vec::new();
    let mut n = 0;
    for rec in good.split_inclusive("\"\n") {
        n += 1;
        lines.push(if n == 2 {
            rec.replacen(",3,", ",three,", 1)
        } else {
            rec.to_string()
        });
    }
    std::fs::write(s.p.path("bad.csv"), lines.concat()).unwrap();
    let r = run_rsync(&s.args("bad.csv", &[])).await;
    r.expect(2);
    assert!(
        r.stderr
            .contains("line 4 (collection zzzzz-4zz18-000000000000002)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("replication_desired \"three\""),
        "{}",
        r.stderr
    );
    assert_eq!(s.p.total_dst_puts(), 0);

    // A broken manifest in JSON lines: the line and the uuid, never the
    // signature of a locator.
    let sig = "+A89118b78732c33104a4d6231e8b5a5fa1e4301e3@7fffffff";
    let mut jl = s.json_lines();
    jl.push_str(
        &(json!({"uuid": "zzzzz-4zz18-brokenmanifest", "replication_desired": 2,
                 "manifest_text": format!(". {}{sig} 0:3:a\n", &s.shared.0.to_string()[..31])})
        .to_string()
            + "\n"),
    );
    std::fs::write(s.p.path("bad.jsonl"), jl).unwrap();
    let r = run_rsync(&s.args("bad.jsonl", &[])).await;
    r.expect(2);
    assert!(
        r.stderr
            .contains("line 4 (collection zzzzz-4zz18-brokenmanifest)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("31 hex digits"), "{}", r.stderr);
    assert!(
        !r.all().contains("89118b78732c"),
        "signature shown: {}",
        r.all()
    );

    // keep-block-check refuses the same list the same way.
    let r = run_with_stdin(check_bin(), &check_args(&s, "bad.jsonl", &[]), None).await;
    r.expect(2);
    assert!(
        r.stderr.contains("zzzzz-4zz18-brokenmanifest"),
        "{}",
        r.stderr
    );

    // A page object per line (`arv collection list` compact) reads too.
    let items: Vec<Value> = s
        .json_lines()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    std::fs::write(
        s.p.path("page.json"),
        json!({"items": items}).to_string() + "\n",
    )
    .unwrap();
    run_rsync(&s.args("page.json", &[])).await.expect(0);
    s.assert_as_wanted();
}

/// testdata/collections/: every good file gives the same wants, every bad
/// one is exit 2 naming the line and the collection (testdata/README.md).
#[test]
fn fixtures_in_testdata() {
    use keep_rsync::listed::{ListSource, ListedBlocks};
    let read = |name: &str| {
        let path = format!("{}/testdata/collections/{name}", env!("CARGO_MANIFEST_DIR"));
        ListedBlocks::read(
            &ListSource {
                path: &path,
                flag: "--blocks-from",
            },
            "",
            2,
            &Default::default(),
        )
    };
    let want_of = |l: &ListedBlocks, data: &[u8]| -> Vec<(String, u32)> {
        let h = BlockHash::of(data);
        let e = l
            .load("")
            .unwrap()
            .into_iter()
            .find(|e| e.hash == h)
            .unwrap();
        let mut v: Vec<(String, u32)> = (l.wants.resolve(e.want, 2, None))
            .map(|(c, n)| (l.wants.names()[c as usize].clone(), n))
            .collect();
        v.sort();
        v
    };
    for good in ["psql.csv", "arv.jsonl", "page.jsonl"] {
        let l = read(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!((l.len(), l.locators), (3, 6), "{good}");
        let s = |c: &str, n| (c.to_string(), n);
        assert_eq!(
            want_of(&l, b"foo"),
            [s("archive", 2), s("default", 3)],
            "{good}"
        );
        assert_eq!(want_of(&l, b"bar"), [s("archive", 1)], "{good}");
        assert_eq!(
            want_of(&l, b"baz"),
            [s("archive", 2), s("default", 3)],
            "{good}"
        );
    }
    for (bad, says) in [
        ("bad-replication.csv", "line 4 (collection zzzzz-4zz18-000000000000002): replication_desired \"-1\""),
        ("bad-classes.csv", "line 2 (collection zzzzz-4zz18-000000000000001): storage_classes_desired"),
        ("short-record.csv", "line 2: a record of 2 fields under a header of 4"),
        ("bad-manifest.jsonl", "line 2 (collection zzzzz-4zz18-00000000000000b): its manifest_text, line 1"),
        ("no-files.jsonl", "line 1 (collection zzzzz-4zz18-00000000000000c): its manifest_text, line 1: a stream with no file segment"),
        ("pretty.json", "line 1: a JSON object that does not end on its line"),
        ("no-manifest.jsonl", "line 1 (collection zzzzz-4zz18-00000000000000d): the record has no manifest_text"),
    ] {
        let e = read(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(e.exit_code(), 2, "{bad}");
        let msg = e.to_string();
        assert!(msg.contains(says) && msg.contains(bad), "{bad}: {msg}");
        assert!(!msg.contains("89118b78732c"), "{bad}: signature shown: {msg}");
        assert!(!msg.contains('\n'), "{bad}: not one paragraph: {msg}");
    }
}

/// Into Directory volumes, whose classes are known: each class gets its
/// copies on its own volumes, in keepstore's mount order, and a rerun
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_of_each_class_get_their_copies() {
    let s = Scene::start().await;
    let root = s.p.path("vols");
    let vol = |i: usize, class: &str| {
        format!(
            "zzzzz-nyw5e-00000000000000{i}:\n  Driver: Directory\n  DriverParameters: {{Root: {}}}\n  StorageClasses: {{{class}: true}}\n",
            root.join(format!("v{i}")).display()
        )
    };
    for i in 0..3 {
        std::fs::create_dir_all(root.join(format!("v{i}"))).unwrap();
    }
    let yml = s.p.path("vols.yml");
    std::fs::write(
        &yml,
        [vol(0, "default"), vol(1, "default"), vol(2, "archive")].concat(),
    )
    .unwrap();
    let (a, b) = (&s.archive_only, &s.both);
    let csv = format!(
        "uuid,replication_desired,storage_classes_desired,manifest_text\n\
         zzzzz-4zz18-00000000000000a,2,\"[\"\"default\"\"]\",\". {} 0:{}:a\n\"\n\
         zzzzz-4zz18-00000000000000b,,\"[\"\"archive\"\"]\",\". {} {} 0:{}:ab\n\"\n",
        Scene::loc(a),
        a.1,
        Scene::loc(a),
        Scene::loc(b),
        a.1 + b.1
    );
    std::fs::write(s.p.path("v.csv"), csv).unwrap();
    let args = |extra: &[&str]| {
        let mut v = vec![
            "-src-cluster-config".to_string(),
            s.p.path("src.yml").display().to_string(),
            "--dst-volumes".into(),
            yml.display().to_string(),
            "--blocks-from".into(),
            s.p.path("v.csv").display().to_string(),
        ];
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    run_rsync(&args(&[])).await.expect(0);
    let on = |h: &BlockHash| -> Vec<usize> {
        let name = h.to_string();
        (0..3)
            .filter(|i| {
                root.join(format!("v{i}"))
                    .join(&name[..3])
                    .join(&name)
                    .exists()
            })
            .collect()
    };
    assert_eq!(
        on(&a.0),
        [0, 1, 2],
        "a: 2 default (null archive = 1 for volumes)"
    );
    assert_eq!(on(&b.0), [2], "b: 1 archive");
    let r = run_rsync(&args(&["--dry-run"])).await;
    r.expect(0);
    assert!(
        r.all().contains("to copy: 0") && r.all().contains("to top up: 0"),
        "{}",
        r.all()
    );
}
