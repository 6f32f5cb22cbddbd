//! The cluster config.yml files of testdata/cluster-config/ (its README.md
//! lists them), as an admin writes them: the good ones load with the values
//! Arvados gives them (uuids from `Rendezvous` or the md5 of the URL key,
//! read-only keepstores from `AccessViaHosts`, Arvados' defaults when a key
//! is absent); the broken ones are exit 2 from both programs, one line naming
//! the file and the key path; no secret of any file ever shows. Then the
//! keepproxy route end to end (`--dst-via keepproxy`, `--src-via keepproxy`)
//! against keepstore-sim clusters of proxies, and the Slurm and Kubernetes
//! recipes of scripts/ run with config files alone.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use keep_rsync::cluster_config::{self, ClusterConfig as Loaded, Via, DEFAULT_TTL};
use keep_rsync::protocol::BlockHash;
use keepstore_sim::{Cluster, ClusterConfig as SimConfig};
use md5::{Digest, Md5};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("testdata/cluster-config").join(name)
}

/// A copy of a fixture in `dir` with mode 600 (git keeps no modes), so that
/// the loose-permissions warning adds no line to the output.
fn private_copy(dir: &Path, name: &str) -> String {
    let dst = dir.join(name);
    write_private(&dst, &std::fs::read_to_string(fixture(name)).unwrap());
    dst.display().to_string()
}

/// The secret values of a fixture: every `Key: value` whose key ends as
/// Arvados' secret names do (`SystemRootToken`, `BlobSigningKey`,
/// `AccessKeyID`, `SecretAccessKey`, `password`, ...).
fn secrets(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let found: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| {
            let k = k.trim().to_ascii_lowercase();
            ["token", "key", "keyid", "secret", "password"]
                .iter()
                .any(|end| k.ends_with(end))
        })
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| v.len() >= 16)
        .collect();
    assert!(!found.is_empty(), "{name} holds no secret to look for");
    found
}

fn assert_no_secret(name: &str, text: &str) {
    for s in secrets(name) {
        assert!(!text.contains(&s), "a secret of {name} shown:\n{text}");
    }
}

fn load(name: &str, cluster: Option<&str>) -> keep_rsync::error::Result<Loaded> {
    cluster_config::load(
        &fixture(name),
        cluster,
        "-src-cluster-config",
        "--src-cluster",
    )
}

/// The uuid the API server derives: `ID-bi6l4-` + the first 16 hex digits
/// of md5(`of`), `of` the Rendezvous value or the URL key with its slash.
fn derived(id: &str, of: &str) -> String {
    format!(
        "{id}-bi6l4-{}",
        &format!("{:x}", Md5::digest(of.as_bytes()))[..16]
    )
}

/// Each keepstore by host: (uuid, port, ssl, read_only).
fn by_host(c: &Loaded) -> BTreeMap<String, (String, u16, bool, bool)> {
    c.keepstores
        .iter()
        .map(|s| {
            assert_eq!(s.service_type, "disk", "{s:?}");
            (s.host.clone(), (s.uuid.clone(), s.port, s.ssl, s.read_only))
        })
        .collect()
}

/// What every loaded fixture must not show: its secrets, in `Debug` and in
/// its warnings.
fn assert_quiet(name: &str, c: &Loaded) {
    assert_no_secret(name, &format!("{c:?}"));
    assert_no_secret(name, &c.settings.warnings.join("\n"));
}

#[test]
fn minimal_yml_loads_with_arvados_defaults() {
    let c = load("minimal.yml", None).unwrap();
    assert_quiet("minimal.yml", &c);
    assert_eq!(c.id, "tordo");
    assert_eq!(c.ttl, 336 * 3600);
    assert_eq!(c.ttl, DEFAULT_TTL);
    assert_eq!(c.default_replication, 2);
    assert!(!c.settings.insecure);
    assert_eq!(c.settings.api_host, "tordo.example.org");
    assert_eq!(
        c.settings.api_token,
        "bd5ysvwigkguc5culmkmblus7gzmdoyo8nb44y3atpzh9tj0kn"
    );
    assert_eq!(
        c.settings.blob_signing_key.as_deref(),
        Some("t3gs7inadxjzgo9boytpbqcv8igptp2qtzcwl8pldr9n45u4j6")
    );
    let hosts = by_host(&c);
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    // A 15-character Rendezvous is the uuid's suffix verbatim.
    assert_eq!(
        hosts["keep0.tordo.example.org"],
        ("tordo-bi6l4-2q2w6kc3cr6v9k5".into(), 25107, false, false)
    );
    // None: the md5 of the URL key normalised with a trailing slash.
    let k1 = derived("tordo", "http://keep1.tordo.example.org:25107/");
    assert_eq!(k1.len(), 28);
    assert_eq!(hosts["keep1.tordo.example.org"], (k1, 25107, false, false));
    // No keepproxy in the file.
    assert!(c.keepproxy.is_none());
    let e = c.services(Via::Keepproxy).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains("Clusters.tordo.Services.Keepproxy.ExternalURL is not set"),
        "{e}"
    );
    assert_eq!(c.services(Via::Keepstore).unwrap().len(), 2);
}

#[test]
fn keepproxy_yml_gives_keepstores_and_the_keepproxy() {
    let c = load("keepproxy.yml", None).unwrap();
    assert_quiet("keepproxy.yml", &c);
    assert_eq!(c.id, "pirca");
    assert_eq!((c.ttl, c.default_replication), (336 * 3600, 2));
    let hosts = by_host(&c);
    assert_eq!(
        hosts["keep0.pirca.internal"],
        ("pirca-bi6l4-0pircakeep00000".into(), 25107, false, false)
    );
    assert_eq!(
        hosts["keep1.pirca.internal"],
        ("pirca-bi6l4-1pircakeep00000".into(), 25107, false, false)
    );
    let stores = c.services(Via::Keepstore).unwrap();
    assert_eq!(stores.len(), 2);
    assert!(stores.iter().all(|s| s.service_type == "disk"));
    let proxy = c.services(Via::Keepproxy).unwrap();
    assert_eq!(proxy.len(), 1);
    let p = &proxy[0];
    assert_eq!(
        (
            p.uuid.as_str(),
            p.host.as_str(),
            p.port,
            p.ssl,
            p.service_type.as_str(),
            p.read_only
        ),
        (
            derived("pirca", "https://keep.pirca.example.org/").as_str(),
            "keep.pirca.example.org",
            443,
            true,
            "proxy",
            false
        )
    );
}

#[test]
fn volumes_yml_marks_keepstores_read_only_through_access_via_hosts() {
    let c = load("volumes.yml", None).unwrap();
    assert_quiet("volumes.yml", &c);
    assert_eq!(c.id, "jutro");
    assert_eq!(c.ttl, 24 * 3600);
    assert_eq!(c.default_replication, 3);
    assert!(c.settings.insecure);
    let hosts = by_host(&c);
    let ks = |n: u32| hosts[&format!("keep{n}.jutro.internal")].clone();
    // keep0: a writable Directory volume.
    assert_eq!(
        ks(0),
        ("jutro-bi6l4-0000000000000k0".into(), 25107, true, false)
    );
    // keep1: its one volume is ReadOnly through it.
    assert_eq!(
        ks(1),
        ("jutro-bi6l4-0000000000000k1".into(), 25107, true, true)
    );
    // keep2: the same volume, writable through it (its AccessViaHosts key
    // has the trailing slash, the InternalURLs key not: the same URL); its
    // 11-character Rendezvous is hashed.
    assert_eq!(ks(2), (derived("jutro", "keep2.jutro"), 25107, true, false));
    // keep3: its one volume is ReadOnly itself.
    assert_eq!(
        ks(3),
        ("jutro-bi6l4-0000000000000k3".into(), 25107, true, true)
    );

    // The same file as --dst-volumes: its volumes, classes and priorities.
    let v = keep_rsync::volumes_file::load(
        &fixture("volumes.yml"),
        None,
        "--dst-volumes",
        "--dst-cluster",
    )
    .unwrap();
    let vols: BTreeMap<&str, (u32, bool, Vec<String>, i64)> = v
        .volumes
        .iter()
        .map(|s| {
            (
                s.uuid.as_str(),
                (
                    s.replication,
                    s.read_only,
                    s.storage_classes.clone(),
                    s.priority,
                ),
            )
        })
        .collect();
    assert_eq!(
        vols["jutro-nyw5e-000000000000000"],
        (1, false, vec!["default".to_string()], 10)
    );
    assert_eq!(
        vols["jutro-nyw5e-000000000000001"],
        (2, false, vec!["archive".to_string()], 50)
    );
    assert_eq!(
        vols["jutro-nyw5e-000000000000002"],
        (1, true, vec!["default".to_string()], 0)
    );
    assert_no_secret("volumes.yml", &format!("{v:?}"));
}

#[test]
fn two_clusters_yml_needs_the_cluster_flag() {
    let e = load("two-clusters.yml", None).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let m = e.to_string();
    assert!(m.contains("several clusters (ce8i5, z1vx9)"), "{m}");
    assert!(m.contains("--src-cluster ID"), "{m}");
    assert_no_secret("two-clusters.yml", &m);

    let a = load("two-clusters.yml", Some("ce8i5")).unwrap();
    assert_quiet("two-clusters.yml", &a);
    assert_eq!(
        (a.id.as_str(), a.ttl, a.default_replication),
        ("ce8i5", 168 * 3600, 2)
    );
    assert_eq!(
        a.settings.api_token,
        "fnn55ipthjo6jp6zq4o5lfi4itxfp2xhebsnwa7z1e0jhwk0ed"
    );
    let uuids: Vec<&str> = a.keepstores.iter().map(|s| s.uuid.as_str()).collect();
    assert_eq!(
        uuids,
        ["ce8i5-bi6l4-ce8i5keep000000", "ce8i5-bi6l4-ce8i5keep000001"]
    );
    // No Controller: no API host (messages only).
    assert_eq!(a.settings.api_host, "");

    let b = load("two-clusters.yml", Some("z1vx9")).unwrap();
    assert_eq!(
        (b.id.as_str(), b.ttl, b.default_replication),
        ("z1vx9", DEFAULT_TTL, 1)
    );
    assert_eq!(
        by_host(&b)["keep.z1vx9.example.org"].0,
        derived("z1vx9", "http://keep.z1vx9.example.org:25107/")
    );

    let e = load("two-clusters.yml", Some("nope1")).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains("cluster nope1 (from --src-cluster) is not in the file"),
        "{e}"
    );
}

/// Each broken fixture and what its message must name (besides the file).
const BROKEN: [(&str, &[&str]); 5] = [
    (
        "no-token.yml",
        &["Clusters.tordo.SystemRootToken is missing"],
    ),
    (
        "bad-duration.yml",
        &[
            "Clusters.tordo.Collections.BlobSigningTTL",
            "not a duration",
        ],
    ),
    ("bad-yaml.yml", &["not valid YAML", "line 8 column 17"]),
    (
        "bad-url.yml",
        &[
            "Clusters.tordo.Services.Keepstore.InternalURLs.htps://keep1.tordo.example.org:25107",
            "only http and https",
        ],
    ),
    (
        "no-keepstores.yml",
        &["Clusters.tordo.Services.Keepstore.InternalURLs lists no keepstore"],
    ),
];

/// Exit 2, one line on stderr naming `path` and every needle, nothing on
/// stdout, no panic, no secret of the fixture.
fn assert_refused(what: &str, name: &str, path: &str, r: &Run, needles: &[&str]) {
    let all = r.all();
    assert_eq!(r.code, 2, "{what}: exit code\n{all}");
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!all.contains(bad), "{what}: {bad} in\n{all}");
    }
    assert!(r.stdout.trim().is_empty(), "{what}: stdout {:?}", r.stdout);
    let text = r.stderr.trim();
    assert_eq!(
        text.lines().count(),
        1,
        "{what}: one line expected:\n{text}"
    );
    assert!(
        text.contains(path),
        "{what}: the file is not named:\n{text}"
    );
    for n in needles {
        assert!(text.contains(n), "{what}: {n:?} not in\n{text}");
    }
    assert_no_secret(name, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_fixtures_are_exit_2_naming_file_and_key_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blocks.txt");
    std::fs::write(&list, format!("{}+3\n", BlockHash::of(b"foo"))).unwrap();
    for (name, needles) in BROKEN {
        // The library: the same message (no-keepstores.yml loads; it fails
        // when its keepstores are asked for).
        let m = match load(name, None) {
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{name}");
                e.to_string()
            }
            Ok(c) => {
                assert_quiet(name, &c);
                let e = c.services(Via::Keepstore).unwrap_err();
                assert_eq!(e.exit_code(), 2, "{name}");
                e.to_string()
            }
        };
        assert!(m.contains(name), "{name}: {m}");
        for n in needles {
            assert!(m.contains(n), "{name}: {n:?} not in {m}");
        }
        assert_no_secret(name, &m);

        // keep-rsync, the file for both sides.
        let path = private_copy(dir.path(), name);
        let args: Vec<String> = [
            "-src-cluster-config",
            &path,
            "-dst-cluster-config",
            &path,
            "--dry-run",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = run_rsync(&args).await;
        assert_refused(&format!("keep-rsync {name}"), name, &path, &r, needles);
        let r = run_rsync(&[args.clone(), vec!["-vv".into()]].concat()).await;
        assert_eq!(r.code, 2, "keep-rsync -vv {name}\n{}", r.all());
        assert_no_secret(name, &r.all());

        // keep-block-check.
        let args: Vec<String> = [
            "-cluster-config",
            &path,
            "-block-hash-file",
            &list.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = run_with_stdin(check_bin(), &args, None).await;
        assert_refused(
            &format!("keep-block-check {name}"),
            name,
            &path,
            &r,
            needles,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_fixtures_run_until_the_network_and_show_no_secret() {
    // The hosts of the fixtures do not exist: the run gets as far as the
    // indexes (exit 3), naming the services by the uuids the files give.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in [
        "minimal.yml",
        "keepproxy.yml",
        "volumes.yml",
        "two-clusters.yml",
    ] {
        files.push(private_copy(dir.path(), name));
    }
    let runs: [(&[&str], &[&str]); 3] = [
        (
            &[
                "-src-cluster-config",
                &files[0],
                "-dst-cluster-config",
                &files[1],
                "--dst-via",
                "keepproxy",
            ],
            &["tordo-bi6l4-2q2w6kc3cr6v9k5"],
        ),
        (
            &[
                "-src-cluster-config",
                &files[2],
                "-dst-cluster-config",
                &files[3],
                "--dst-cluster",
                "ce8i5",
            ],
            &["jutro-bi6l4-0000000000000k0", "ce8i5-bi6l4-ce8i5keep000000"],
        ),
        (
            &[
                "-src-cluster-config",
                &files[3],
                "--src-cluster",
                "z1vx9",
                "-dst-cluster-config",
                &files[1],
            ],
            &["pirca-bi6l4-0pircakeep00000"],
        ),
    ];
    for (args, needles) in runs {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(
            ["--dry-run", "--retries", "0", "--contimeout", "2s", "-vv"]
                .iter()
                .map(|s| s.to_string()),
        );
        let r = run_rsync(&args).await;
        r.expect(3);
        for n in needles {
            assert!(r.stderr.contains(n), "{n} not in\n{}", r.stderr);
        }
        for name in [
            "minimal.yml",
            "keepproxy.yml",
            "volumes.yml",
            "two-clusters.yml",
        ] {
            assert_no_secret(name, &r.all());
        }
    }
    // Two clusters in one file and no --*-cluster: exit 2 before anything.
    let r = run_rsync(&[
        "-src-cluster-config".into(),
        files[3].clone(),
        "--src-cluster".into(),
        "ce8i5".into(),
        "-dst-cluster-config".into(),
        files[3].clone(),
        "--dry-run".into(),
    ])
    .await;
    assert_refused(
        "two-clusters.yml, no --dst-cluster",
        "two-clusters.yml",
        &files[3],
        &r,
        &["-dst-cluster-config", "--dst-cluster ID"],
    );
}

// ---------------------------------------------------------------------------
// Through a keepproxy, end to end.

/// A cluster of one keepproxy (signatures enforced, API server stub that
/// must never be asked).
fn proxy(token: &str, key: &str) -> SimConfig {
    let mut c = signed(1, token, key);
    c.service_type = "proxy".into();
    c.api_server = true;
    c
}

fn keepstores(n: usize, token: &str, key: &str) -> SimConfig {
    let mut c = signed(n, token, key);
    c.api_server = true;
    c
}

/// Both clusters with their config.yml beside (src.yml, dst.yml).
async fn pair_with_configs(src: SimConfig, dst: SimConfig) -> Pair {
    let p = Pair::with(src, dst).await;
    write_private(&p.path("src.yml"), &p.src.cluster_config_text());
    write_private(&p.path("dst.yml"), &p.dst.cluster_config_text());
    p
}

fn config_args(p: &Pair, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "-src-cluster-config".to_string(),
        p.path("src.yml").display().to_string(),
        "-dst-cluster-config".into(),
        p.path("dst.yml").display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dst_via_keepproxy_copies_through_the_keepproxy_of_the_config() {
    let mut dst = proxy(DST_TOKEN, DST_KEY);
    dst.default_replication = 2;
    let p = pair_with_configs(keepstores(3, SRC_TOKEN, SRC_KEY), dst).await;
    let text = std::fs::read_to_string(p.path("dst.yml")).unwrap();
    assert!(text.contains("Keepproxy:"), "{text}");
    assert!(!text.contains("Keepstore:"), "{text}");
    let blocks = p.src.seed_blocks(12, &sizes(), 1, 31);

    // The default is the keepstores, and this config has none: exit 2.
    for via in [None, Some("keepstore")] {
        let extra: Vec<&str> = via.map(|v| vec!["--dst-via", v]).unwrap_or_default();
        let r = run_rsync(&config_args(&p, &extra)).await;
        r.expect(2);
        assert!(
            r.stderr
                .contains("Clusters.bbbbb.Services.Keepstore.InternalURLs lists no keepstore"),
            "{via:?}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("dst.yml"), "{}", r.stderr);
    }
    assert_eq!(p.total_dst_puts(), 0);

    // Through the keepproxy: the destination's DefaultReplication (2) in one
    // PUT per block, the keepproxy storing both.
    let report = p.path("proxy.json");
    let r = run_rsync(&config_args(
        &p,
        &[
            "--dst-via",
            "keepproxy",
            "--report",
            report.to_str().unwrap(),
        ],
    ))
    .await;
    r.expect(0);
    for (h, _) in &blocks {
        assert!(p.dst.has_block(0, h), "{h}");
        assert_eq!(p.dst.total_puts(h), 1, "one PUT for {h}");
    }
    let j = read_json(&report);
    assert_eq!(j["replicas_written"], 24, "{j}");
    // Rerun: nothing moves.
    p.dst.reset_counters();
    run_rsync(&config_args(&p, &["--dst-via", "keepproxy", "-q"]))
        .await
        .expect(0);
    assert_eq!(p.total_dst_puts(), 0);
    // The API servers were never asked.
    assert_eq!(p.src.api_requests(), (0, 0));
    assert_eq!(p.dst.api_requests(), (0, 0));
    for secret in [SRC_TOKEN, SRC_KEY, DST_TOKEN, DST_KEY] {
        assert!(!r.all().contains(secret), "{secret} in the output");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn src_via_keepproxy_reads_through_the_keepproxy_of_the_config() {
    let p = pair_with_configs(proxy(SRC_TOKEN, SRC_KEY), keepstores(4, DST_TOKEN, DST_KEY)).await;
    let blocks = p.src.seed_blocks(20, &sizes(), 1, 32);
    let r = run_rsync(&config_args(&p, &["--dry-run"])).await;
    r.expect(2);
    assert!(
        r.stderr
            .contains("Clusters.aaaaa.Services.Keepstore.InternalURLs lists no keepstore"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("src.yml"), "{}", r.stderr);
    // Index and signed reads through the keepproxy (signatures enforced:
    // the source's key and TTL from its config), the destination's
    // DefaultReplication (2) on its keepstores.
    run_rsync(&config_args(&p, &["--src-via", "keepproxy"]))
        .await
        .expect(0);
    p.assert_placed(&blocks, 2);
    assert!(p.total_src_gets() >= blocks.len() as u64);
    p.dst.reset_counters();
    run_rsync(&config_args(&p, &["--src-via", "keepproxy", "-q"]))
        .await
        .expect(0);
    assert_eq!(p.total_dst_puts(), 0);
    assert_eq!(p.src.api_requests(), (0, 0));
    assert_eq!(p.dst.api_requests(), (0, 0));
}

// ---------------------------------------------------------------------------
// The Slurm and Kubernetes recipes with config files alone.

/// Run `program args` with `env` (and without `unset`) in `dir`.
async fn run_cmd(program: &str, args: &[String], env: &[(&str, String)], dir: &Path) -> Run {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env_remove("KEEP_RSYNC_SETTINGS_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} finished within 120 s"))
        .unwrap_or_else(|e| panic!("{program} ran: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Both clusters (keepstores) with their config.yml in `etc/` as the
/// recipes expect them: `src-config.yml`, `dst-config.yml`, and nothing
/// else there.
async fn recipe_pair() -> (Pair, PathBuf) {
    let mut dst = keepstores(4, DST_TOKEN, DST_KEY);
    dst.default_replication = 2;
    let p = Pair::with(keepstores(4, SRC_TOKEN, SRC_KEY), dst).await;
    let etc = p.path("etc");
    std::fs::create_dir(&etc).unwrap();
    write_private(&etc.join("src-config.yml"), &p.src.cluster_config_text());
    write_private(&etc.join("dst-config.yml"), &p.dst.cluster_config_text());
    (p, etc)
}

/// All blocks placed with the destination's DefaultReplication, every shard
/// done, its log free of secrets, the API servers never asked.
fn assert_recipe_copied(p: &Pair, blocks: &[(BlockHash, u64)], state: &Path) {
    p.assert_placed(blocks, 2);
    for i in 0..16 {
        assert!(state.join(format!("{i:x}.done")).exists(), "{i:x}.done");
    }
    for e in std::fs::read_dir(state).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        for secret in [SRC_TOKEN, SRC_KEY, DST_TOKEN, DST_KEY] {
            assert!(!text.contains(secret), "{secret} in a shard file");
        }
    }
    assert_eq!(p.src.api_requests(), (0, 0));
    assert_eq!(p.dst.api_requests(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_array_script_takes_the_cluster_configs() {
    let (p, etc) = recipe_pair().await;
    let blocks = p.src.seed_blocks(120, &sizes(), 2, 33);
    let state = p.path("slurm-shards");
    let sbatch = repo()
        .join("scripts/slurm/keep-rsync-array.sbatch")
        .display()
        .to_string();
    let env = |task: u32| {
        vec![
            ("SLURM_ARRAY_TASK_ID", task.to_string()),
            ("SLURM_ARRAY_TASK_MAX", "15".into()),
            ("SLURM_ARRAY_JOB_ID", "4343".into()),
            ("SLURM_SUBMIT_DIR", p.dir.path().display().to_string()),
            ("SLURM_MEM_PER_NODE", "512".into()),
            ("KEEP_RSYNC_STATE_DIR", state.display().to_string()),
            ("KEEP_RSYNC", bin().to_string()),
        ]
    };
    // Neither a settings directory nor a side in the arguments: exit 2.
    let r = run_cmd("bash", std::slice::from_ref(&sbatch), &env(0), p.dir.path()).await;
    r.expect(2);
    assert!(r.stderr.contains("KEEP_RSYNC_SETTINGS_DIR"), "{}", r.all());
    for task in 0..16 {
        // Tasks 0-7: the config files of $KEEP_RSYNC_SETTINGS_DIR, no flag;
        // 8-15: their paths as arguments, no settings directory.
        let (args, env) = if task < 8 {
            let mut e = env(task);
            e.push(("KEEP_RSYNC_SETTINGS_DIR", etc.display().to_string()));
            (vec![sbatch.clone()], e)
        } else {
            let args = vec![
                sbatch.clone(),
                "-src-cluster-config".into(),
                etc.join("src-config.yml").display().to_string(),
                format!(
                    "--dst-cluster-config={}",
                    etc.join("dst-config.yml").display()
                ),
            ];
            (args, env(task))
        };
        let r = run_cmd("bash", &args, &env, p.dir.path()).await;
        r.expect(0);
        assert!(
            r.stdout.contains(&format!("shard {task:x} complete")),
            "{}",
            r.all()
        );
    }
    assert_recipe_copied(&p, &blocks, &state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_prefixes_passes_the_cluster_configs_through() {
    let have_parallel = std::process::Command::new("parallel")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GNU parallel")
        });
    if !have_parallel {
        return skip(
            "parallel_prefixes_passes_the_cluster_configs_through",
            "GNU parallel is not installed: run scripts/install-test-deps.sh (or apt-get install parallel)",
        );
    }
    let (p, etc) = recipe_pair().await;
    let blocks = p.src.seed_blocks(120, &sizes(), 2, 35);
    let state = p.path("shards");
    let args = vec![
        repo()
            .join("scripts/parallel-prefixes.sh")
            .display()
            .to_string(),
        "-j".into(),
        "4".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "--".into(),
        "-src-cluster-config".into(),
        etc.join("src-config.yml").display().to_string(),
        "-dst-cluster-config".into(),
        etc.join("dst-config.yml").display().to_string(),
    ];
    let r = run_cmd(
        "bash",
        &args,
        &[("KEEP_RSYNC", bin().to_string())],
        p.dir.path(),
    )
    .await;
    r.expect(0);
    assert_recipe_copied(&p, &blocks, &state);
}

/// The Kubernetes Job's container command and args, via PyYAML (the .venv's
/// python, else python3); `Err` is why not (a skip reason).
fn k8s_container() -> Result<(Vec<String>, Vec<String>), String> {
    let path = repo()
        .join("scripts/kubernetes/keep-rsync-indexed-job.yaml")
        .display()
        .to_string();
    let code = "import json, sys, yaml\n\
                job = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d['kind'] == 'Job'][0]\n\
                c = job['spec']['template']['spec']['containers'][0]\n\
                json.dump([c['command'], c.get('args') or []], sys.stdout)";
    let venv = repo().join(".venv/bin/python").display().to_string();
    let mut tried = Vec::new();
    for py in [venv.as_str(), "python3"] {
        match std::process::Command::new(py)
            .args(["-c", code, &path])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {
                let (cmd, args): (Vec<String>, Vec<String>) =
                    serde_json::from_slice(&o.stdout).expect("JSON from PyYAML");
                return Ok((cmd, args));
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(err.contains("No module named"), "{py}: {err}");
                tried.push(format!("{py}: no module yaml"));
            }
            Err(e) => tried.push(format!("{py}: {e}")),
        }
    }
    Err(format!(
        "no python with PyYAML ({}): run scripts/install-test-deps.sh \
         (or apt-get install python3-yaml)",
        tried.join("; ")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_indexed_job_takes_the_cluster_configs_of_its_secret() {
    let (command, args) = match k8s_container() {
        Ok(c) => c,
        Err(why) => {
            return skip(
                "kubernetes_indexed_job_takes_the_cluster_configs_of_its_secret",
                &why,
            )
        }
    };
    assert!(args.is_empty(), "no flag needed with the configs: {args:?}");
    let (p, etc) = recipe_pair().await;
    let blocks = p.src.seed_blocks(120, &sizes(), 2, 34);
    let state = p.path("k8s-shards");
    let mut argv = command[1..].to_vec();
    argv.extend(args);
    for i in 0..16 {
        let env = vec![
            ("JOB_COMPLETION_INDEX", i.to_string()),
            ("KEEP_RSYNC_PREFIXES", "16".into()),
            // The Secret's mount.
            ("KEEP_RSYNC_SETTINGS_DIR", etc.display().to_string()),
            ("KEEP_RSYNC_STATE_DIR", state.display().to_string()),
            ("KEEP_RSYNC", bin().to_string()),
            ("KEEP_RSYNC_MEMORY_MIB", "512".into()),
        ];
        let r = run_cmd(&command[0], &argv, &env, p.dir.path()).await;
        r.expect(0);
        assert!(r.stdout.contains("=== keep-rsync -prefix"), "{}", r.all());
    }
    assert_recipe_copied(&p, &blocks, &state);
}

/// The clusters keepstore-sim starts name their keepstores with the uuids
/// keep-rsync derives from the config it writes (else placement would
/// differ from the probe order `assert_placed` checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepstore_sim_config_gives_its_own_uuids() {
    let c = Cluster::start(keepstores(3, SRC_TOKEN, SRC_KEY))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    write_private(&path, &c.cluster_config_text());
    let l = cluster_config::load(&path, None, "-src-cluster-config", "--src-cluster").unwrap();
    let mut want: Vec<String> = c.services_json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["uuid"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    let got: Vec<String> = l.keepstores.iter().map(|s| s.uuid.clone()).collect();
    assert_eq!(got, want);
    assert_eq!(l.ttl, 1_209_600);
    assert!(l.settings.insecure);
}
