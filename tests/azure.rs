//! End-to-end tests of Azure Blob volumes (`Driver: Azure`) against a real
//! Azurite over HTTPS (tests/common/azure.rs), addressed as keepstore
//! addresses them (`https://ACCOUNT.blob.STORAGEBASEURL/CONTAINER`): as
//! either side of a copy with keepstore-sim clusters, Directory volumes and
//! a versitygw bucket, listings of more than 10^4 blobs over several pages,
//! keepstore's trash (`expires_at` metadata), corrupt blobs, refused keys,
//! missing containers, and keep-block-check's modes. No run may print the
//! account key.
//!
//! Without Azurite (scripts/install-test-deps.sh) or root (the host-name
//! mapping) the tests are skipped (`SKIPPED …` on stderr; a failure under CI).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::azure::{Azurite, KEY};
use common::s3::S3Server;
use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::{Cluster, ClusterConfig};

const AZVOL: &str = "zzzzz-nyw5e-000000000000020";
const AZVOL2: &str = "zzzzz-nyw5e-000000000000021";
const S3VOL: &str = "zzzzz-nyw5e-000000000000010";
const CONTAINER: &str = "keep-blocks";

type Block = (BlockHash, Vec<u8>);

/// `n` blocks of `min`..`min + spread` bytes, the same for the same `seed`.
fn blocks_sized(n: usize, seed: u64, min: usize, spread: usize) -> Vec<Block> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v: Vec<Block> = (0..n)
        .map(|_| {
            let size = min + (next() % spread as u64) as usize;
            let data: Vec<u8> = (0..size).map(|_| next() as u8).collect();
            (BlockHash::of(&data), data)
        })
        .collect();
    v.sort();
    v.dedup_by_key(|b| b.0);
    v
}

/// Small blocks and a few of 100–300 KiB.
fn blocks(n: usize, seed: u64) -> Vec<Block> {
    let mut v = blocks_sized(n, seed, 1, 8192);
    v.extend(blocks_sized(n / 5, seed + 1000, 100 << 10, 200 << 10));
    v.sort();
    v
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

macro_rules! azurite_or_skip {
    ($name:expr) => {
        match Azurite::start($name).await {
            Some(a) => a,
            None => return,
        }
    };
}

/// Write `blocks` into a Directory volume as keepstore does (`ROOT/XYZ/HASH`).
fn fill_dir(root: &Path, blocks: &[Block]) {
    for (h, data) in blocks {
        let hex = h.to_string();
        let dir = root.join(&hex[..3]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&hex), data).unwrap();
    }
}

/// The blocks of a Directory volume.
fn dir_blocks(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in std::fs::read_dir(root).unwrap() {
        let sub = sub.unwrap().path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub).unwrap() {
            let p = f.unwrap().path();
            out.insert(s(p.file_name().unwrap()), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn assert_dir(root: &Path, want: &[Block]) {
    let got = dir_blocks(root);
    let want: BTreeMap<String, Vec<u8>> = want
        .iter()
        .map(|(h, d)| (h.to_string(), d.clone()))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the blocks of {}",
        root.display()
    );
    assert!(got == want, "{} holds other bytes", root.display());
}

/// The container holds exactly `want`, each block the blob named by its
/// hash, byte-identical, not trashed.
async fn assert_container(az: &Azurite, container: &str, want: &[Block]) {
    let (names, _) = az.list_names(container).await;
    let want_names: Vec<String> = want.iter().map(|(h, _)| h.to_string()).collect();
    assert_eq!(names, want_names, "the blobs of {container}");
    for (h, data) in want {
        let (got, meta) = az.get_blob(container, &h.to_string()).await.unwrap();
        assert!(got == *data, "blob {h} holds other bytes");
        assert!(
            !meta.iter().any(|(k, _)| k == "x-ms-meta-expires_at"),
            "{h}: {meta:?}"
        );
    }
}

/// Put `blocks` into the container as keepstore does: blob = hash.
async fn fill_container(az: &Azurite, container: &str, blocks: &[Block]) {
    for (h, data) in blocks {
        az.put_blob(container, &h.to_string(), data).await;
    }
}

fn vols_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    write_private(&path, text);
    s(path)
}

fn dir_entry(uuid: &str, root: &Path) -> String {
    format!(
        "{uuid}:\n  Driver: Directory\n  DriverParameters:\n    Root: {}\n",
        root.display()
    )
}

/// A keepstore-sim cluster (signatures enforced) with its settings and
/// services files in `dir` as `NAME.conf`, `NAME.json`.
async fn cluster(services: usize, prefix: &str, dir: &Path, name: &str) -> Cluster {
    let (token, key) = if name == "src" {
        (SRC_TOKEN, SRC_KEY)
    } else {
        (DST_TOKEN, DST_KEY)
    };
    let mut cfg: ClusterConfig = signed(services, token, key);
    cfg.uuid_prefix = prefix.into();
    let c = Cluster::start(cfg).await.expect("cluster");
    write_private(&dir.join(format!("{name}.conf")), &c.settings_text());
    std::fs::write(
        dir.join(format!("{name}.json")),
        c.services_json().to_string(),
    )
    .unwrap();
    c
}

fn keep_side(dir: &Path, name: &str) -> Vec<String> {
    let mut v = vec![
        format!("-{name}"),
        s(dir.join(format!("{name}.conf"))),
        format!("-{name}-keep-services-json"),
        s(dir.join(format!("{name}.json"))),
    ];
    if name == "src" {
        v.extend(args(&["-src-blob-signature-ttl", "336h"]));
    }
    v
}

fn cluster_blocks(c: &Cluster) -> Vec<Block> {
    let mut v: Vec<Block> = (0..c.len())
        .flat_map(|i| {
            c.blocks(i)
                .into_iter()
                .map(move |(h, _)| (h, c.get_block(i, &h).unwrap().to_vec()))
        })
        .collect();
    v.sort();
    v.dedup_by_key(|b| b.0);
    v
}

/// keep-rsync through [`Azurite::run`], the key never in its output.
async fn rsync(az: &Azurite, parts: &[Vec<String>]) -> Run {
    let r = az.run(bin(), &parts.concat(), None).await;
    assert!(
        !r.all().contains(KEY),
        "the account key in the output:\n{}",
        r.all()
    );
    r
}

fn copied(r: &Run, n: usize) {
    assert!(
        r.stderr.contains(&format!("copied: {n}")),
        "copied: {n} not in\n{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------

/// A cluster backed up into a container, then restored from it into
/// another cluster; reruns of both copy nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_to_container_to_cluster() {
    let az = azurite_or_skip!("cluster_to_container_to_cluster");
    az.create_container(CONTAINER).await;
    let dir = tempfile::tempdir().unwrap();
    let src = cluster(3, "aaaaa", dir.path(), "src").await;
    for (h, data) in blocks(25, 1) {
        src.put_block(src.probe_order(&h)[0], &data);
    }
    src.put_block(0, b"");
    let want = cluster_blocks(&src);
    let vols = vols_file(dir.path(), "az.yml", &az.volume_entry(AZVOL, CONTAINER, ""));
    let report = s(dir.path().join("r1.json"));
    let dst = args(&["--dst-volumes", &vols, "--report", &report]);
    let r = rsync(&az, &[keep_side(dir.path(), "src"), dst.clone()]).await;
    r.expect(0);
    copied(&r, want.len());
    assert_container(&az, CONTAINER, &want).await;
    let j = read_json(Path::new(&report));
    assert_eq!(j["destination"][0]["uuid"], AZVOL);
    assert!(!std::fs::read_to_string(&report).unwrap().contains(KEY));

    // A rerun lists the container and reads nothing from the source.
    src.reset_counters();
    let r = rsync(&az, &[keep_side(dir.path(), "src"), dst]).await;
    r.expect(0);
    copied(&r, 0);
    let gets: u64 = (0..src.len()).map(|i| src.counters(i).gets).sum();
    assert_eq!(gets, 0);

    // Restore: the container is the source, a new cluster the destination.
    let dstc = cluster(3, "bbbbb", dir.path(), "dst").await;
    let src_vols = args(&["--src-volumes", &vols, "--replications", "1"]);
    let r = rsync(&az, &[src_vols.clone(), keep_side(dir.path(), "dst")]).await;
    r.expect(0);
    copied(&r, want.len());
    assert_eq!(cluster_blocks(&dstc), want);
    let r = rsync(&az, &[src_vols, keep_side(dir.path(), "dst")]).await;
    r.expect(0);
    copied(&r, 0);
}

/// Directory volume → container → S3 bucket, the container read as a
/// source while it is also a cluster config's volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_to_container_to_bucket() {
    let az = azurite_or_skip!("directory_to_container_to_bucket");
    let Some(s3) = S3Server::start("directory_to_container_to_bucket") else {
        return;
    };
    az.create_container(CONTAINER).await;
    s3.create_bucket("keep-s3");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut want = blocks(20, 7);
    // One block of 8 MiB: one Put Blob, one Get Blob.
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + i / 4093) as u8).collect();
    want.push((BlockHash::of(&big), big));
    want.sort();
    fill_dir(&src, &want);
    let vols = vols_file(
        dir.path(),
        "src.yml",
        &dir_entry("zzzzz-nyw5e-000000000000001", &src),
    );
    // The container as a whole cluster config's volume.
    let cfg = format!(
        "Clusters:\n  zzzzz:\n    Volumes:\n{}",
        az.volume_entry(AZVOL, CONTAINER, "")
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    );
    let azcfg = vols_file(dir.path(), "config.yml", &cfg);
    let r = rsync(
        &az,
        &[
            args(&["--src-volumes", &vols, "--dst-volumes", &azcfg]),
            args(&["--replications", "1"]),
        ],
    )
    .await;
    r.expect(0);
    copied(&r, want.len());
    assert_container(&az, CONTAINER, &want).await;

    let s3vols = vols_file(
        dir.path(),
        "s3.yml",
        &format!(
            "{S3VOL}:\n  Driver: S3\n  DriverParameters:\n    Bucket: keep-s3\n    \
             Endpoint: {}\n    AccessKeyID: {}\n    SecretAccessKey: {}\n",
            s3.endpoint, s3.access, s3.secret
        ),
    );
    let to_s3 = [args(&["--src-volumes", &azcfg, "--dst-volumes", &s3vols])];
    let r = rsync(&az, &to_s3).await;
    r.expect(0);
    copied(&r, want.len());
    for (h, data) in &want {
        let got = std::fs::read(s3.object_path("keep-s3", &h.to_string())).unwrap();
        assert!(got == *data, "object {h}");
    }
    let r = rsync(&az, &to_s3).await;
    r.expect(0);
    copied(&r, 0);
    assert!(!r.all().contains(&s3.secret));
}

/// More than 10^4 blobs: Azure pages a listing at 5000 blobs, so the
/// index takes several pages (one chain of them with --checkers 1, the 16
/// next-digit chains side by side otherwise). Uploaded by keep-rsync
/// itself from a Directory volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_of_more_than_ten_thousand_blobs_over_pages() {
    let az = azurite_or_skip!("a_listing_of_more_than_ten_thousand_blobs_over_pages");
    az.create_container(CONTAINER).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let want = blocks_sized(10_500, 3, 8, 64);
    assert!(want.len() > 10_400);
    fill_dir(&a, &want);
    let avols = vols_file(
        dir.path(),
        "a.yml",
        &dir_entry("zzzzz-nyw5e-000000000000001", &a),
    );
    let bvols = vols_file(
        dir.path(),
        "b.yml",
        &dir_entry("zzzzz-nyw5e-000000000000002", &b),
    );
    let azvols = vols_file(dir.path(), "az.yml", &az.volume_entry(AZVOL, CONTAINER, ""));
    let up = [args(&[
        "--src-volumes",
        &avols,
        "--dst-volumes",
        &azvols,
        "--transfers",
        "32",
    ])];
    let r = rsync(&az, &up).await;
    r.expect(0);
    copied(&r, want.len());
    let (names, pages) = az.list_names(CONTAINER).await;
    assert_eq!(names.len(), want.len());
    assert!(pages >= 3, "{pages} pages");
    // Down again, the listing one chain of pages.
    let down = [args(&[
        "--src-volumes",
        &azvols,
        "--dst-volumes",
        &bvols,
        "--checkers",
        "1",
        "--transfers",
        "32",
    ])];
    let r = rsync(&az, &down).await;
    r.expect(0);
    copied(&r, want.len());
    assert_dir(&b, &want);
    // Reruns, with the default fan-out: nothing to do either way.
    let r = rsync(&az, &up).await;
    r.expect(0);
    copied(&r, 0);
    let r = rsync(
        &az,
        &[args(&["--src-volumes", &azvols, "--dst-volumes", &bvols])],
    )
    .await;
    r.expect(0);
    copied(&r, 0);
}

/// A blob keepstore trashed (`expires_at` in its metadata) is not a copy:
/// not listed nor read as a source, and written over (blob and metadata)
/// as a destination. Blobs not named by a block hash are not blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trashed_blob_is_absent_and_written_over() {
    let az = azurite_or_skip!("a_trashed_blob_is_absent_and_written_over");
    az.create_container(CONTAINER).await;
    let dir = tempfile::tempdir().unwrap();
    let all = blocks(10, 5);
    fill_container(&az, CONTAINER, &all).await;
    let (trashed, tdata) = all[2].clone();
    az.set_metadata(
        CONTAINER,
        &trashed.to_string(),
        &[("expires_at", "1900000000")],
    )
    .await;
    az.put_blob(CONTAINER, "README", b"not a block").await;
    az.put_blob(CONTAINER, &trashed.to_string().to_uppercase(), &tdata)
        .await;
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let azvols = vols_file(dir.path(), "az.yml", &az.volume_entry(AZVOL, CONTAINER, ""));
    let outvols = vols_file(
        dir.path(),
        "out.yml",
        &dir_entry("zzzzz-nyw5e-000000000000001", &out),
    );
    let r = rsync(
        &az,
        &[args(&["--src-volumes", &azvols, "--dst-volumes", &outvols])],
    )
    .await;
    r.expect(0);
    let live: Vec<Block> = all.iter().filter(|b| b.0 != trashed).cloned().collect();
    copied(&r, live.len());
    assert_dir(&out, &live);
    // Asked for by name (--blocks-from), the trashed block is missing.
    let list = dir.path().join("list.txt");
    std::fs::write(&list, format!("{trashed}+{}\n", tdata.len())).unwrap();
    let r = rsync(
        &az,
        &[args(&[
            "--src-volumes",
            &azvols,
            "--dst-volumes",
            &outvols,
            "--blocks-from",
            &s(&list),
        ])],
    )
    .await;
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains(&trashed.to_string()), "{}", r.all());
    assert_dir(&out, &live);

    // As a destination: the trashed copy counts for nothing and is written
    // over, its trash mark gone.
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    fill_dir(&src, &all);
    let srcvols = vols_file(
        dir.path(),
        "src.yml",
        &dir_entry("zzzzz-nyw5e-000000000000003", &src),
    );
    let r = rsync(
        &az,
        &[args(&["--src-volumes", &srcvols, "--dst-volumes", &azvols])],
    )
    .await;
    r.expect(0);
    copied(&r, 1);
    let (got, meta) = az.get_blob(CONTAINER, &trashed.to_string()).await.unwrap();
    assert!(got == tdata);
    assert!(
        !meta.iter().any(|(k, _)| k == "x-ms-meta-expires_at"),
        "{meta:?}"
    );
    let (names, _) = az.list_names(CONTAINER).await;
    assert!(names.contains(&"README".to_string()), "{names:?}");
    let r = rsync(
        &az,
        &[args(&["--src-volumes", &srcvols, "--dst-volumes", &azvols])],
    )
    .await;
    r.expect(0);
    copied(&r, 0);
}

/// A blob whose bytes are not its name's is refused (exit 1, named) and
/// not copied; the others are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_is_refused_and_the_rest_copied() {
    let az = azurite_or_skip!("a_corrupt_blob_is_refused_and_the_rest_copied");
    az.create_container(CONTAINER).await;
    let dir = tempfile::tempdir().unwrap();
    let all = blocks(12, 9);
    fill_container(&az, CONTAINER, &all).await;
    let (bad, data) = all.iter().find(|(_, d)| d.len() > 1000).unwrap().clone();
    let mut other = data.clone();
    other[0] ^= 0xff;
    az.put_blob(CONTAINER, &bad.to_string(), &other).await;
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let azvols = vols_file(dir.path(), "az.yml", &az.volume_entry(AZVOL, CONTAINER, ""));
    let report = s(dir.path().join("r.json"));
    let run = [args(&[
        "--src-volumes",
        &azvols,
        "--dst-volume-dir",
        &s(&out),
        "--report",
        &report,
    ])];
    let r = rsync(&az, &run).await;
    r.expect(1);
    let named = format!("{bad}+{}", data.len());
    assert!(r.stderr.contains(&named), "{named} not in\n{}", r.stderr);
    let good: Vec<Block> = all.iter().filter(|b| b.0 != bad).cloned().collect();
    assert_dir(&out, &good);
    let j = read_json(Path::new(&report));
    assert_eq!(
        (j["copied"].as_u64(), j["failed"].as_u64()),
        (Some(good.len() as u64), Some(1))
    );
    let r = rsync(&az, &run).await;
    r.expect(1);
    copied(&r, 0);
}

/// A wrong key and a missing container are one clear paragraph each,
/// naming the account or the container, never the key (exit 3: the index
/// cannot be read); a malformed key is a configuration error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_and_a_missing_container_are_named() {
    let az = azurite_or_skip!("a_refused_key_and_a_missing_container_are_named");
    az.create_container(CONTAINER).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let wrong = "d3Jvbmcta2V5LWZvci10aGUta2VlcHJzeW5jdGVzdC1hY2NvdW50";
    let entry = az.volume_entry(AZVOL, CONTAINER, "").replace(KEY, wrong);
    let vols = vols_file(dir.path(), "wrong.yml", &entry);
    let r = rsync(
        &az,
        &[args(&[
            "--src-volumes",
            &vols,
            "--dst-volume-dir",
            &s(&out),
        ])],
    )
    .await;
    r.expect(3);
    assert!(
        // Azure says AuthenticationFailed; Azurite AuthorizationFailure.
        (r.stderr.contains("AuthenticationFailed") || r.stderr.contains("AuthorizationFailure"))
            && r.stderr.contains("\"keeprsynctest\"")
            && r.stderr.contains("StorageAccountKey"),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains(wrong), "{}", r.all());

    let vols = vols_file(
        dir.path(),
        "missing.yml",
        &az.volume_entry(AZVOL, "no-such-container", ""),
    );
    let r = rsync(
        &az,
        &[args(&[
            "--src-volumes",
            &vols,
            "--dst-volume-dir",
            &s(&out),
        ])],
    )
    .await;
    r.expect(3);
    assert!(
        r.stderr
            .contains("container \"no-such-container\" does not exist"),
        "{}",
        r.stderr
    );

    let entry = az
        .volume_entry(AZVOL, CONTAINER, "")
        .replace(KEY, "not!base64");
    let vols = vols_file(dir.path(), "bad.yml", &entry);
    let r = rsync(
        &az,
        &[args(&[
            "--src-volumes",
            &vols,
            "--dst-volume-dir",
            &s(&out),
        ])],
    )
    .await;
    r.expect(2);
    assert!(
        r.stderr.contains("StorageAccountKey is not base64"),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains("not!base64"), "{}", r.all());

    // A certificate this host does not trust: one clear refusal, not a
    // listing retried ListBlobsMaxAttempts times.
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere.test".into()]).unwrap();
    let other_pem = dir.path().join("other.pem");
    std::fs::write(&other_pem, other.cert.pem()).unwrap();
    let vols = vols_file(dir.path(), "ok.yml", &az.volume_entry(AZVOL, CONTAINER, ""));
    let r = az
        .run_trusting(
            bin(),
            &args(&["--src-volumes", &vols, "--dst-volume-dir", &s(&out)]),
            None,
            &other_pem,
        )
        .await;
    r.expect(3);
    assert!(
        r.stderr.contains("TLS certificate is not trusted here")
            && r.stderr.contains("SSL_CERT_FILE"),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains(KEY), "{}", r.all());
}

/// keep-block-check against a container: index (default), --probe and
/// --read, with a block missing and a corrupt blob only --read finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_check_reads_a_container() {
    let az = azurite_or_skip!("block_check_reads_a_container");
    az.create_container(CONTAINER).await;
    let dir = tempfile::tempdir().unwrap();
    let all = blocks(10, 81);
    fill_container(&az, CONTAINER, &all).await;
    let vols = vols_file(
        dir.path(),
        "az.yml",
        &az.volume_entry(AZVOL2, CONTAINER, ""),
    );
    let list = |name: &str, blocks: &[Block]| -> PathBuf {
        let text: String = blocks
            .iter()
            .map(|(h, d)| format!("{h}+{}\n", d.len()))
            .collect();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let check = |list: PathBuf, extra: &[&str]| {
        let mut a = args(&["--volumes", &vols, "-block-hash-file", &s(list)]);
        a.extend(args(extra));
        let az = &az;
        async move {
            let r = az.run(check_bin(), &a, None).await;
            assert!(!r.all().contains(KEY), "{}", r.all());
            r
        }
    };
    let n = all.len();
    for mode in [&[][..], &["--probe"], &["--read"]] {
        let r = check(list("all.txt", &all), mode).await;
        r.expect(0);
        let totals = format!("Verify block totals: {n} attempts, {n} successes, 0 errors");
        assert!(r.stderr.contains(&totals), "{mode:?}:\n{}", r.stderr);
    }
    let missing = (
        BlockHash::of(b"not in the container"),
        b"not in the container".to_vec(),
    );
    let with_missing = [all.clone(), vec![missing.clone()]].concat();
    for mode in [&[][..], &["--probe"], &["--read"]] {
        let r = check(list("missing.txt", &with_missing), mode).await;
        r.expect(1);
        let line = format!("Error verifying block {}+20: ", missing.0);
        assert!(r.stderr.contains(&line), "{mode:?}:\n{}", r.stderr);
    }
    // A trashed blob is missing in every mode.
    let (t, tdata) = all[0].clone();
    az.set_metadata(CONTAINER, &t.to_string(), &[("expires_at", "1900000000")])
        .await;
    for mode in [&[][..], &["--probe"], &["--read"]] {
        let r = check(list("all.txt", &all), mode).await;
        r.expect(1);
        let line = format!("Error verifying block {t}+{}: ", tdata.len());
        assert!(r.stderr.contains(&line), "{mode:?}:\n{}", r.stderr);
    }
    az.put_blob(CONTAINER, &t.to_string(), &tdata).await;
    // A corrupt blob: listed and probed, found bad only by reading it.
    let (bad, data) = all[3].clone();
    let mut other = data.clone();
    other[0] ^= 0xff;
    az.put_blob(CONTAINER, &bad.to_string(), &other).await;
    check(list("all.txt", &all), &[]).await.expect(0);
    check(list("all.txt", &all), &["--probe"]).await.expect(0);
    let r = check(list("all.txt", &all), &["--read"]).await;
    r.expect(1);
    let line = format!("Error verifying block {bad}+{}: ", data.len());
    assert!(r.stderr.contains(&line), "{}", r.stderr);
}

/// Block timestamps: a written blob's Last-Modified is the write's time
/// (what keepstore takes for the block's time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_blob_is_stamped_now() {
    let az = azurite_or_skip!("a_written_blob_is_stamped_now");
    az.create_container(CONTAINER).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let want = blocks_sized(3, 77, 10, 10);
    fill_dir(&src, &want);
    let srcvols = vols_file(
        dir.path(),
        "src.yml",
        &dir_entry("zzzzz-nyw5e-000000000000003", &src),
    );
    let azvols = vols_file(dir.path(), "az.yml", &az.volume_entry(AZVOL, CONTAINER, ""));
    let before = SystemTime::now() - Duration::from_secs(2);
    let r = rsync(
        &az,
        &[args(&["--src-volumes", &srcvols, "--dst-volumes", &azvols])],
    )
    .await;
    r.expect(0);
    for (h, _) in &want {
        let t = az.last_modified(CONTAINER, &h.to_string()).await;
        assert!(t >= before, "{h} stamped {t:?}");
    }
}
