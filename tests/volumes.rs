//! End-to-end tests of volume stores: keepstore Directory volumes and S3
//! buckets (a real versitygw on 127.0.0.1, tests/common/s3.rs) as either
//! side of a copy, and as keep-block-check's cluster. Each test checks the
//! bytes on disk in keepstore's own layouts (`ROOT/XYZ/HASH`; the data object
//! `[XYZ/]HASH` then its empty `recent/` marker), fresh block timestamps, no
//! temp files, rendezvous and mount order, and the exit codes and messages of
//! what goes wrong: corrupt objects, listings cut short or lying (through a
//! tampering proxy), missing buckets, refused credentials, unwritable
//! volumes and configuration errors.
//!
//! Without versitygw (scripts/install-test-deps.sh) the S3 tests are skipped
//! (`SKIPPED …` on stderr; a failure under CI).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::s3::S3Server;
use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::{Cluster, ClusterConfig};
use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const VOL0: &str = "zzzzz-nyw5e-000000000000000";
const VOL1: &str = "zzzzz-nyw5e-000000000000001";
const S3VOL: &str = "zzzzz-nyw5e-000000000000010";
const BUCKET: &str = "keep-blocks";

// ---------------------------------------------------------------------------
// Blocks, files and buckets.

/// A block: its hash and bytes.
type Block = (BlockHash, Vec<u8>);

/// `n` blocks of 1 B to 8 KiB (every fifth 100–300 KiB), the same for the
/// same `seed`.
fn blocks(n: usize, seed: u64) -> Vec<Block> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let size = if i % 5 == 4 {
                (100 << 10) + (next() % (200 << 10)) as usize
            } else {
                1 + (next() % 8192) as usize
            };
            let data: Vec<u8> = (0..size).map(|_| next() as u8).collect();
            (BlockHash::of(&data), data)
        })
        .collect()
}

fn sorted(mut v: Vec<Block>) -> Vec<Block> {
    v.sort();
    v
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The data object's key of a block (keepstore's s3_volume.go).
fn key(h: &BlockHash, prefix_length: usize) -> String {
    let hex = h.to_string();
    if prefix_length > 0 {
        format!("{}/{hex}", &hex[..prefix_length])
    } else {
        hex
    }
}

/// Every file under `root`, by its path relative to it (`/`-separated).
fn files_under(root: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap();
                let key: Vec<String> = rel.iter().map(s).collect();
                out.insert(key.join("/"), p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The bucket holds exactly `want`, in keepstore's layout: each data object
/// byte-identical at its key, its empty `recent/` marker, and no other key.
fn assert_bucket(s3: &S3Server, bucket: &str, prefix_length: usize, want: &[Block]) {
    let got = files_under(&s3.root.join(bucket));
    let mut keys: Vec<String> = Vec::new();
    for (h, data) in want {
        let k = key(h, prefix_length);
        let path = got
            .get(&k)
            .unwrap_or_else(|| panic!("{h}+{} is not at key {k}: {:?}", data.len(), got.keys()));
        assert!(
            std::fs::read(path).unwrap() == *data,
            "object {k} holds other bytes"
        );
        let marker = format!("recent/{k}");
        let mpath = got
            .get(&marker)
            .unwrap_or_else(|| panic!("{h}: no marker {marker}: {:?}", got.keys()));
        assert_eq!(std::fs::metadata(mpath).unwrap().len(), 0, "{marker}");
        keys.push(k);
        keys.push(marker);
    }
    keys.sort();
    keys.dedup();
    let all: Vec<&String> = got.keys().collect();
    assert_eq!(
        all,
        keys.iter().collect::<Vec<_>>(),
        "the bucket holds other keys"
    );
}

/// The directory volume at `root` holds exactly `want` as `ROOT/XYZ/HASH`,
/// byte-identical, stamped within the last minute, and nothing else (no
/// temp file).
fn assert_dir(root: &Path, want: &[Block]) {
    let got = files_under(root);
    let mut names = Vec::new();
    for (h, data) in want {
        let hex = h.to_string();
        let name = format!("{}/{hex}", &hex[..3]);
        let path = got
            .get(&name)
            .unwrap_or_else(|| panic!("{h} is not at {name}: {:?}", got.keys()));
        assert!(
            std::fs::read(path).unwrap() == *data,
            "{name} holds other bytes"
        );
        let age = SystemTime::now()
            .duration_since(std::fs::metadata(path).unwrap().modified().unwrap())
            .unwrap_or_default();
        assert!(
            age < Duration::from_secs(60),
            "{name} is stamped {age:?} ago: a copy's timestamp is the time it was written"
        );
        names.push(name);
    }
    names.sort();
    names.dedup();
    let all: Vec<&String> = got.keys().collect();
    assert_eq!(
        all,
        names.iter().collect::<Vec<_>>(),
        "the volume holds other files (temp files?)"
    );
}

/// Write `blocks` into a Directory volume as keepstore does, stamped a year
/// ago.
fn fill_dir(root: &Path, blocks: &[Block]) {
    let old = SystemTime::now() - Duration::from_secs(365 * 86400);
    for (h, data) in blocks {
        let hex = h.to_string();
        let dir = root.join(&hex[..3]);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(&hex);
        std::fs::write(&path, data).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

/// Write `blocks` straight into the bucket in keepstore's layout (data
/// object, then marker).
fn fill_bucket(s3: &S3Server, bucket: &str, prefix_length: usize, blocks: &[Block]) {
    for (h, data) in blocks {
        let k = key(h, prefix_length);
        s3.write_direct(bucket, &k, data);
        s3.write_direct(bucket, &format!("recent/{k}"), b"");
    }
}

/// One S3 volume entry of a volumes file (YAML), on `endpoint`.
fn s3_entry(
    uuid: &str,
    endpoint: &str,
    bucket: &str,
    prefix_length: usize,
    secret: &str,
) -> String {
    format!(
        "{uuid}:\n  Driver: S3\n  DriverParameters:\n    Bucket: {bucket}\n    \
         Endpoint: {endpoint}\n    Region: {}\n    AccessKeyID: {}\n    \
         SecretAccessKey: {secret}\n    PrefixLength: {prefix_length}\n    \
         IndexPageSize: 7\n  Replication: 1\n",
        common::s3::REGION,
        common::s3::ACCESS,
    )
}

/// Two empty Directory volumes `VOL0` and `VOL1` under `dir` (roots
/// `TAG0`, `TAG1`), the second with `extra` lines, in volumes file
/// `TAG.yml`: the roots and the file's path.
fn two_volumes(dir: &Path, tag: &str, extra: &str) -> ([PathBuf; 2], String) {
    let roots = [dir.join(format!("{tag}0")), dir.join(format!("{tag}1"))];
    for r in &roots {
        std::fs::create_dir(r).unwrap();
    }
    let text = format!(
        "{}{}",
        dir_entry(VOL0, &roots[0], ""),
        dir_entry(VOL1, &roots[1], extra)
    );
    let vols = vols_file(dir, &format!("{tag}.yml"), &text);
    (roots, vols)
}

/// One Directory volume entry of a volumes file (YAML).
fn dir_entry(uuid: &str, root: &Path, extra: &str) -> String {
    format!(
        "{uuid}:\n  Driver: Directory\n  DriverParameters:\n    Root: {}\n{extra}",
        root.display()
    )
}

/// A temp dir with a volumes file `name` of `text` in it; its path.
fn vols_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    write_private(&path, text);
    s(path)
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

/// `-src`/`-dst` arguments of a cluster written by [`cluster`].
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

async fn rsync(parts: &[Vec<String>]) -> Run {
    run_rsync(&parts.concat()).await
}

/// The data of every block of a cluster, as [`Block`]s.
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

/// Seed `blocks` on the first service of their probe order.
fn seed(c: &Cluster, blocks: &[Block]) {
    for (h, data) in blocks {
        c.put_block(c.probe_order(h)[0], data);
    }
}

macro_rules! s3_or_skip {
    ($name:expr) => {
        match S3Server::start($name) {
            Some(s3) => s3,
            None => return,
        }
    };
}

// ---------------------------------------------------------------------------
// 1. keep services → S3 bucket.

async fn cluster_to_bucket(test: &str, prefix_length: usize) {
    let s3 = s3_or_skip!(test);
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let src = cluster(3, "aaaaa", dir.path(), "src").await;
    let want = sorted(blocks(30, 1 + prefix_length as u64));
    seed(&src, &want);
    // The empty block too: real clusters hold it.
    src.put_block(0, b"");
    let want = cluster_blocks(&src);
    let vols = vols_file(
        dir.path(),
        "vols.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, prefix_length, &s3.secret),
    );
    let report = s(dir.path().join("r1.json"));
    let dst = args(&["--dst-volumes", &vols, "--report", &report]);
    let r = rsync(&[keep_side(dir.path(), "src"), dst]).await;
    r.expect(0);
    assert!(
        r.stderr.contains(&format!("copied: {}", want.len())),
        "{}",
        r.stderr
    );
    assert_bucket(&s3, BUCKET, prefix_length, &want);
    let j = read_json(Path::new(&report));
    assert_eq!(j["copied"], want.len());
    assert_eq!(j["replicas_written"], want.len());
    assert_eq!(j["destination"][0]["uuid"], S3VOL);
    assert!(!std::fs::read_to_string(&report)
        .unwrap()
        .contains(&s3.secret));

    // A rerun lists the bucket and copies nothing.
    src.reset_counters();
    let report = s(dir.path().join("r2.json"));
    let dst = args(&["--dst-volumes", &vols, "--report", &report]);
    let r = rsync(&[keep_side(dir.path(), "src"), dst]).await;
    r.expect(0);
    assert!(r.stderr.contains("copied: 0"), "{}", r.stderr);
    let j = read_json(Path::new(&report));
    assert_eq!(j["copied"], 0);
    assert_eq!(j["plan"]["present"], want.len());
    assert_eq!(j["plan"]["to_copy"], 0);
    let gets: u64 = (0..src.len()).map(|i| src.counters(i).gets).sum();
    assert_eq!(gets, 0, "nothing read from the source on a rerun");
    assert_bucket(&s3, BUCKET, prefix_length, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_to_bucket_flat_keys() {
    cluster_to_bucket("cluster_to_bucket_flat_keys", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_to_bucket_prefix_length_3() {
    cluster_to_bucket("cluster_to_bucket_prefix_length_3", 3).await;
}

// ---------------------------------------------------------------------------
// 2. S3 bucket → keep services.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_to_cluster_in_rendezvous_order() {
    let s3 = s3_or_skip!("bucket_to_cluster_in_rendezvous_order");
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let dst = cluster(4, "bbbbb", dir.path(), "dst").await;
    let want = sorted(blocks(25, 7));
    fill_bucket(&s3, BUCKET, 3, &want);
    // Not blocks: a stray key, a misplaced flat key under PrefixLength 3,
    // trash. None is copied.
    s3.write_direct(BUCKET, "README", b"not a block");
    let flat = BlockHash::of(b"flat key");
    s3.write_direct(BUCKET, &flat.to_string(), b"flat key");
    let trashed = BlockHash::of(b"trashed");
    s3.write_direct(BUCKET, &format!("trash/{}", key(&trashed, 3)), b"trashed");
    let vols = vols_file(
        dir.path(),
        "vols.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, 3, &s3.secret),
    );
    let report = s(dir.path().join("report.json"));
    let r = rsync(&[
        args(&["--src-volumes", &vols, "-replications", "2"]),
        args(&["--report", &report]),
        keep_side(dir.path(), "dst"),
    ])
    .await;
    r.expect(0);
    // Keys and blocks are counted apart: the flat key (and, without a
    // fan-out, README) is listed but is no block.
    let j = read_json(Path::new(&report));
    let vol = &j["source"][0];
    let listed = vol["index_listed"].as_u64().unwrap();
    assert!((26..=27).contains(&listed), "{vol}");
    assert_eq!(vol["index_blocks"].as_u64(), Some(25), "{vol}");
    for (h, data) in &want {
        let mut first: Vec<usize> = dst.probe_order(h).into_iter().take(2).collect();
        first.sort();
        let holders: Vec<usize> = (0..dst.len()).filter(|&i| dst.has_block(i, h)).collect();
        assert_eq!(holders, first, "placement of {h}");
        for i in first {
            assert_eq!(
                dst.get_block(i, h).as_deref(),
                Some(&data[..]),
                "{h} on {i}"
            );
        }
        assert_eq!(dst.total_puts(h), 2, "PUTs of {h}");
    }
    for h in [flat, trashed] {
        assert_eq!(dst.total_puts(&h), 0, "{h} is not a block of the volume");
    }
    let total: usize = (0..dst.len()).map(|i| dst.blocks(i).len()).sum();
    assert_eq!(total, 2 * want.len());
    // A source is only read: nothing was written to the bucket.
    let keys = files_under(&s3.root.join(BUCKET));
    assert_eq!(keys.len(), 2 * want.len() + 3);

    dst.reset_counters();
    let r = rsync(&[
        args(&["--src-volumes", &vols, "-replications", "2"]),
        keep_side(dir.path(), "dst"),
    ])
    .await;
    r.expect(0);
    assert!(r.stderr.contains("copied: 0"), "{}", r.stderr);
    assert_eq!((0..dst.len()).map(|i| dst.counters(i).puts).sum::<u64>(), 0);
}

// ---------------------------------------------------------------------------
// 3. Directory volume → bucket → Directory volume.

/// Stamp every file under `root` a year ago.
fn age_files(root: &Path) {
    let old = SystemTime::now() - Duration::from_secs(365 * 86400);
    for path in files_under(root).values() {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

async fn dir_bucket_dir(test: &str, prefix_length: usize, big: bool) {
    let s3 = s3_or_skip!(test);
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut want = blocks(20, 11 + prefix_length as u64);
    if big {
        // 8 MiB: read in 1 MiB chunks, streamed into one PUT.
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + i / 4093) as u8).collect();
        want.push((BlockHash::of(&data), data));
    }
    let want = sorted(want);
    fill_dir(&a, &want);
    // Not blocks: a temp file of an interrupted write, trash, a stray file.
    let h0 = want[0].0.to_string();
    std::fs::write(a.join(&h0[..3]).join(format!("tmp{h0}77")), b"partial").unwrap();
    std::fs::write(
        a.join(&h0[..3]).join(format!("{h0}.trash.1700000000")),
        b"x",
    )
    .unwrap();
    std::fs::write(a.join("lost+found"), b"").unwrap();
    let vols = vols_file(
        dir.path(),
        "vols.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, prefix_length, &s3.secret),
    );

    let to_bucket = args(&["--src-volume-dir", &s(&a), "--dst-volumes", &vols]);
    let r = run_rsync(&to_bucket).await;
    r.expect(0);
    assert!(
        r.stderr.contains(&format!("copied: {}", want.len())),
        "{}",
        r.stderr
    );
    assert_bucket(&s3, BUCKET, prefix_length, &want);
    // The source volume is untouched.
    assert_eq!(files_under(&a).len(), want.len() + 3);
    let r = run_rsync(&to_bucket).await;
    r.expect(0);
    assert!(r.stderr.contains("copied: 0"), "{}", r.stderr);

    // The bucket's objects are a year old too: the copies must not be.
    age_files(&s3.root.join(BUCKET));
    let from_bucket = args(&["--src-volumes", &vols, "--dst-volume-dir", &s(&b)]);
    let r = run_rsync(&from_bucket).await;
    r.expect(0);
    assert!(
        r.stderr.contains(&format!("copied: {}", want.len())),
        "{}",
        r.stderr
    );
    assert_dir(&b, &want);
    let report = s(dir.path().join("rerun.json"));
    let r = run_rsync(&[from_bucket, args(&["--report", &report])].concat()).await;
    r.expect(0);
    assert!(r.stderr.contains("copied: 0"), "{}", r.stderr);
    let j = read_json(Path::new(&report));
    assert_eq!(
        (j["copied"].as_u64(), j["plan"]["present"].as_u64()),
        (Some(0), Some(want.len() as u64))
    );
    assert_dir(&b, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_to_bucket_to_directory_flat_keys() {
    dir_bucket_dir("directory_to_bucket_to_directory_flat_keys", 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_to_bucket_to_directory_prefix_length_3_with_an_8_mib_block() {
    dir_bucket_dir(
        "directory_to_bucket_to_directory_prefix_length_3_with_an_8_mib_block",
        3,
        true,
    )
    .await;
}

// ---------------------------------------------------------------------------
// 4. A corrupt object.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_refused_and_the_rest_copied() {
    let s3 = s3_or_skip!("a_corrupt_object_is_refused_and_the_rest_copied");
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let all = sorted(blocks(15, 21));
    fill_bucket(&s3, BUCKET, 3, &all);
    // The object behind the server's back: same size, other bytes.
    let (bad, bad_data) = all.iter().find(|(_, d)| d.len() > 1000).unwrap().clone();
    s3.corrupt_object(BUCKET, &key(&bad, 3));
    let vols = vols_file(
        dir.path(),
        "vols.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, 3, &s3.secret),
    );
    let report = s(dir.path().join("r.json"));
    let r = run_rsync(&args(&[
        "--src-volumes",
        &vols,
        "--dst-volume-dir",
        &s(&dst),
        "--report",
        &report,
    ]))
    .await;
    r.expect(1);
    let named = format!("{bad}+{}", bad_data.len());
    assert!(r.stderr.contains(&named), "{named} not in\n{}", r.stderr);
    let good: Vec<Block> = all.iter().filter(|b| b.0 != bad).cloned().collect();
    assert_dir(&dst, &good);
    let j = read_json(Path::new(&report));
    assert_eq!(
        (j["copied"].as_u64(), j["failed"].as_u64()),
        (Some(good.len() as u64), Some(1))
    );
    assert_eq!(j["status"], "incomplete");
    // Still refused on a rerun (it reads back the same), nothing else to do.
    let r = run_rsync(&args(&[
        "--src-volumes",
        &vols,
        "--dst-volume-dir",
        &s(&dst),
    ]))
    .await;
    r.expect(1);
    assert!(r.stderr.contains(&named), "{}", r.stderr);
    assert_dir(&dst, &good);
}

// ---------------------------------------------------------------------------
// 5. Listings cut short or lying, through a proxy in front of versitygw.

/// What the proxy does to a ListObjectsV2 answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tamper {
    /// Forward it unchanged.
    Nothing,
    /// Send half the body it announces, then close the connection.
    CutShort,
    /// Announce and send half the body: well-formed HTTP, broken XML.
    ShortLength,
    /// Swap the first two keys: out of order.
    Unordered,
    /// Change the first key's first digit: outside the prefix asked for.
    OutsidePrefix,
}

/// A TCP proxy on 127.0.0.1 in front of an S3 server. Requests are
/// forwarded byte for byte (the presigned URLs sign the Host header the
/// client used, the proxy's, and the server checks the Host it receives,
/// so signatures stay valid); answers too, but for ListObjectsV2 answers,
/// which are tampered with as told.
struct Proxy {
    endpoint: String,
    /// Requests forwarded, and ListObjectsV2 answers tampered with.
    requests: Arc<AtomicUsize>,
    tampered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 head (request or status line and headers) up to its empty
/// line; None at a clean end of the stream.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The body that follows `head`: by Content-Length, or chunked (decoded).
async fn read_body<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    head: &str,
    no_body: bool,
) -> std::io::Result<Vec<u8>> {
    if no_body {
        return Ok(Vec::new());
    }
    if let Some(n) = header(head, "content-length") {
        let mut body = vec![0u8; n.parse().unwrap()];
        r.read_exact(&mut body).await?;
        return Ok(body);
    }
    if header(head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).await?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(Vec::new())
}

/// `head` with its Content-Length set to `n` (and no Transfer-Encoding).
fn with_length(head: &str, n: usize) -> String {
    let mut out = String::new();
    for (i, l) in head.split("\r\n").enumerate() {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if i > 0 && (name == "content-length" || name == "transfer-encoding") {
            continue;
        }
        if l.is_empty() {
            out.push_str(&format!("Content-Length: {n}\r\n\r\n"));
            break;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out
}

/// Swap the texts of the first two `<Key>` elements, or change the first
/// key's first character.
fn tamper_keys(body: &str, how: Tamper) -> Option<String> {
    let keys: Vec<(usize, usize)> = body
        .match_indices("<Key>")
        .map(|(i, _)| {
            let start = i + "<Key>".len();
            (start, start + body[start..].find("</Key>").unwrap())
        })
        .collect();
    match how {
        Tamper::Unordered if keys.len() >= 2 => {
            let ((a0, a1), (b0, b1)) = (keys[0], keys[1]);
            Some(format!(
                "{}{}{}{}{}",
                &body[..a0],
                &body[b0..b1],
                &body[a1..b0],
                &body[a0..a1],
                &body[b1..]
            ))
        }
        Tamper::OutsidePrefix if !keys.is_empty() => {
            let (a0, _) = keys[0];
            let first = body.as_bytes()[a0];
            let other = if first == b'0' { '1' } else { '0' };
            Some(format!("{}{other}{}", &body[..a0], &body[a0 + 1..]))
        }
        _ => None,
    }
}

impl Proxy {
    async fn start(upstream: u16, how: Tamper) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let tampered = Arc::new(AtomicUsize::new(0));
        let (rq, tq) = (requests.clone(), tampered.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (rq, tq) = (rq.clone(), tq.clone());
                tokio::spawn(async move {
                    let _ = Proxy::serve(conn, upstream, how, &rq, &tq).await;
                });
            }
        });
        Proxy {
            endpoint,
            requests,
            tampered,
            task,
        }
    }

    /// One client connection: its requests one by one, each over a new
    /// connection to the server.
    async fn serve(
        conn: TcpStream,
        upstream: u16,
        how: Tamper,
        requests: &AtomicUsize,
        tampered: &AtomicUsize,
    ) -> std::io::Result<()> {
        let (r, mut w) = conn.into_split();
        let mut r = BufReader::new(r);
        while let Some(head) = read_head(&mut r).await? {
            let body = read_body(&mut r, &head, false).await?;
            requests.fetch_add(1, Ordering::Relaxed);
            let up = TcpStream::connect(("127.0.0.1", upstream)).await?;
            let (ur, mut uw) = up.into_split();
            uw.write_all(head.as_bytes()).await?;
            uw.write_all(&body).await?;
            let mut ur = BufReader::new(ur);
            let rhead = read_head(&mut ur).await?.expect("an answer");
            let line = head.lines().next().unwrap_or("");
            let status_ok = rhead.starts_with("HTTP/1.1 200");
            let rbody = read_body(&mut ur, &rhead, line.starts_with("HEAD ")).await?;
            // Only pages that list keys: a cut in an empty page (the sizing
            // probe's) is easy to see.
            let listing = line.starts_with("GET ")
                && line.contains("list-type=2")
                && status_ok
                && rbody.windows(10).any(|w| w == b"<Contents>");
            let (rhead, rbody, cut) = match how {
                _ if !listing => (rhead, rbody, false),
                Tamper::Nothing => (rhead, rbody, false),
                Tamper::CutShort => {
                    let half = rbody[..rbody.len() / 2].to_vec();
                    (with_length(&rhead, rbody.len()), half, true)
                }
                Tamper::ShortLength => {
                    let half = rbody[..rbody.len() / 2].to_vec();
                    (with_length(&rhead, half.len()), half, false)
                }
                Tamper::Unordered | Tamper::OutsidePrefix => {
                    match tamper_keys(std::str::from_utf8(&rbody).unwrap(), how) {
                        Some(t) => (with_length(&rhead, t.len()), t.into_bytes(), false),
                        None => (rhead, rbody, false),
                    }
                }
            };
            if listing && how != Tamper::Nothing {
                tampered.fetch_add(1, Ordering::Relaxed);
            }
            let rhead = if rbody.is_empty() || header(&rhead, "content-length").is_some() {
                rhead
            } else {
                with_length(&rhead, rbody.len())
            };
            w.write_all(rhead.as_bytes()).await?;
            w.write_all(&rbody).await?;
            w.flush().await?;
            if cut {
                return Ok(()); // dropping the connection mid-body
            }
        }
        Ok(())
    }
}

/// A copy from a bucket, reached through a [`Proxy`] tampering `how`, to a
/// Directory volume (only blocks under `prefix`, and `-prefix` when given):
/// the run, and the proxy.
async fn tampered_listing(test: &str, how: Tamper, prefix: &str) -> Option<(Run, Proxy)> {
    let s3 = S3Server::start(test)?;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let mut all = blocks(40, 31);
    if !prefix.is_empty() {
        all.retain(|(h, _)| h.has_prefix(prefix));
        assert!(all.len() >= 2, "{prefix}");
    }
    fill_bucket(&s3, BUCKET, 0, &all);
    let proxy = Proxy::start(s3.port, how).await;
    let vols = vols_file(
        dir.path(),
        "vols.yml",
        &s3_entry(S3VOL, &proxy.endpoint, BUCKET, 0, &s3.secret),
    );
    let mut a = args(&[
        "--src-volumes",
        &vols,
        "--dst-volume-dir",
        &s(&dst),
        "--retries",
        "1",
        "--retry-backoff",
        "10ms",
    ]);
    if !prefix.is_empty() {
        a.extend(args(&["-prefix", prefix]));
    }
    let r = run_rsync(&a).await;
    if how == Tamper::Nothing {
        r.expect(0);
        assert_dir(&dst, &sorted(all));
    } else {
        assert!(
            files_under(&dst).is_empty(),
            "{how:?}: a broken listing copies nothing (exit {}):\n{}",
            r.code,
            r.stderr
        );
    }
    assert!(!r.all().contains(&s3.secret));
    Some((r, proxy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untampered_proxy_keeps_signatures_valid() {
    let Some((_, proxy)) = tampered_listing(
        "an_untampered_proxy_keeps_signatures_valid",
        Tamper::Nothing,
        "",
    )
    .await
    else {
        return;
    };
    // Listings (7 keys a page: several pages) and every GET went through it.
    assert!(proxy.requests.load(Ordering::Relaxed) > 40);
    assert_eq!(proxy.tampered.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_cut_short_is_exit_3() {
    for how in [Tamper::CutShort, Tamper::ShortLength] {
        let Some((r, proxy)) = tampered_listing("a_listing_cut_short_is_exit_3", how, "").await
        else {
            return;
        };
        r.expect(3);
        assert!(proxy.tampered.load(Ordering::Relaxed) >= 1, "{how:?}");
        assert!(
            r.stderr.contains(S3VOL),
            "{how:?}: the volume is named:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("Nothing was copied"),
            "{how:?}:\n{}",
            r.stderr
        );
        let why = match how {
            Tamper::CutShort => "unreachable after 2 attempts",
            _ => "the listing was cut short",
        };
        assert!(r.stderr.contains(why), "{how:?}:\n{}", r.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_listing_is_exit_3() {
    // Out of order, and (with -prefix) a key outside the prefix.
    let p = {
        let all = blocks(40, 31);
        let d = all[0].0.to_string()[..1].to_string();
        assert!(all.iter().filter(|(h, _)| h.has_prefix(&d)).count() >= 2);
        d
    };
    for (how, prefix) in [(Tamper::Unordered, ""), (Tamper::OutsidePrefix, p.as_str())] {
        let Some((r, proxy)) = tampered_listing("a_lying_listing_is_exit_3", how, prefix).await
        else {
            return;
        };
        r.expect(3);
        assert!(proxy.tampered.load(Ordering::Relaxed) >= 1, "{how:?}");
        assert!(
            r.stderr.contains(S3VOL),
            "{how:?}: the volume is named:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("not what was asked for"),
            "{how:?}:\n{}",
            r.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// 6. A bucket that does not exist; credentials refused.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_and_refused_credentials_are_named() {
    let s3 = s3_or_skip!("a_missing_bucket_and_refused_credentials_are_named");
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let src = cluster(2, "aaaaa", dir.path(), "src").await;
    seed(&src, &blocks(5, 41));
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();

    // No such bucket, as the destination and as the source.
    let vols = vols_file(
        dir.path(),
        "nobucket.yml",
        &s3_entry(S3VOL, &s3.endpoint, "no-such-bucket", 0, &s3.secret),
    );
    for side in [
        [
            keep_side(dir.path(), "src"),
            args(&["--dst-volumes", &vols]),
        ]
        .concat(),
        args(&["--src-volumes", &vols, "--dst-volume-dir", &s(&out)]),
    ] {
        let r = run_rsync(&[side, args(&["--retries", "1"])].concat()).await;
        assert!(matches!(r.code, 2 | 3), "exit {}:\n{}", r.code, r.stderr);
        assert!(
            r.stderr
                .contains("bucket \"no-such-bucket\" does not exist"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(S3VOL), "{}", r.stderr);
    }
    assert_eq!(src.counters(0).gets + src.counters(1).gets, 0);
    assert!(files_under(&out).is_empty());

    // A wrong secret: refused, and never shown, even with -vv, nor in the
    // report. The right one is in no file, so it cannot show either.
    let wrong = "wrongSecretKeyThatMustNeverShow0042xyz";
    let vols = vols_file(
        dir.path(),
        "wrong.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, 3, wrong),
    );
    fill_bucket(&s3, BUCKET, 3, &blocks(3, 42));
    for (name, side) in [
        (
            "dst",
            [
                keep_side(dir.path(), "src"),
                args(&["--dst-volumes", &vols]),
            ]
            .concat(),
        ),
        (
            "src",
            args(&["--src-volumes", &vols, "--dst-volume-dir", &s(&out)]),
        ),
    ] {
        let report = s(dir.path().join(format!("{name}.json")));
        for log in ["text", "json"] {
            let r = run_rsync(
                &[
                    side.clone(),
                    args(&[
                        "-vv",
                        "--retries",
                        "1",
                        "--report",
                        &report,
                        "--log-format",
                        log,
                    ]),
                ]
                .concat(),
            )
            .await;
            r.expect(3);
            assert!(
                r.stderr.contains("refused the credentials"),
                "{name} {log}:\n{}",
                r.stderr
            );
            assert!(r.stderr.contains(S3VOL), "{name} {log}:\n{}", r.stderr);
            let text = std::fs::read_to_string(&report).unwrap();
            for (what, out) in [("stderr", &r.all()), ("report", &text)] {
                for secret in [
                    wrong,
                    s3.secret.as_str(),
                    "X-Amz-Signature",
                    "X-Amz-Credential",
                ] {
                    assert!(
                        !out.contains(secret),
                        "{name} {log}: {secret} in the {what}:\n{out}"
                    );
                }
            }
            let j = read_json(Path::new(&report));
            assert_eq!(
                (j["status"].as_str(), j["exit_code"].as_u64()),
                (Some("unreadable"), Some(3))
            );
        }
    }
    assert!(files_under(&out).is_empty());
    assert_eq!(
        files_under(&s3.root.join(BUCKET)).len(),
        6,
        "nothing written"
    );
}

// ---------------------------------------------------------------------------
// 7. -prefix one digit longer than PrefixLength; --dry-run; --blocks-from.

/// Blocks whose hashes share their first 4 hex digits (`n4` of them), and
/// blocks that share only the first 3 with those (`n3`).
fn prefixed_blocks(n4: usize, n3: usize) -> (String, Vec<Block>, Vec<Block>) {
    let block = |i: u32| {
        let data = format!("prefixed block {i}").into_bytes();
        (BlockHash::of(&data), data)
    };
    let first = block(0);
    let p4 = first.0.to_string()[..4].to_string();
    let (mut four, mut three) = (vec![first], Vec::new());
    for i in 1.. {
        if four.len() >= n4 && three.len() >= n3 {
            break;
        }
        let b = block(i);
        if b.0.has_prefix(&p4) {
            four.push(b);
        } else if b.0.has_prefix(&p4[..3]) && three.len() < n3 {
            three.push(b);
        }
    }
    (p4, sorted(four), sorted(three))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_longer_than_prefix_length_dry_run_and_blocks_from() {
    let s3 = s3_or_skip!("prefix_longer_than_prefix_length_dry_run_and_blocks_from");
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (p4, four, three) = prefixed_blocks(3, 3);
    let others = blocks(10, 51);
    fill_bucket(
        &s3,
        BUCKET,
        3,
        &[four.clone(), three.clone(), others.clone()].concat(),
    );
    let vols = vols_file(
        dir.path(),
        "vols.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, 3, &s3.secret),
    );
    let base = args(&["--src-volumes", &vols, "--dst-volume-dir", &s(&out)]);

    // A dry run: counts, no write.
    let report = s(dir.path().join("dry.json"));
    let r = run_rsync(
        &[
            base.clone(),
            args(&["-prefix", &p4, "--dry-run", "--report", &report]),
        ]
        .concat(),
    )
    .await;
    r.expect(0);
    assert!(files_under(&out).is_empty(), "a dry run writes nothing");
    let j = read_json(Path::new(&report));
    assert_eq!(j["status"], "dry_run");
    assert_eq!(j["plan"]["src_blocks"], four.len());
    assert_eq!(j["plan"]["to_copy"], four.len());
    let bytes: usize = four.iter().map(|b| b.1.len()).sum();
    assert_eq!(j["plan"]["to_copy_bytes"], bytes);
    assert_eq!(j["copied"], 0);

    // The copy: exactly the blocks under the 4-digit prefix (keepstore's own
    // index lists none of them: it asks for "PREFIX", not "XYZ/PREFIX").
    let r = run_rsync(&[base.clone(), args(&["-prefix", &p4])].concat()).await;
    r.expect(0);
    assert!(
        r.stderr.contains(&format!("copied: {}", four.len())),
        "{}",
        r.stderr
    );
    assert_dir(&out, &four);
    // Its 3-digit prefix takes the siblings too.
    let r = run_rsync(&[base.clone(), args(&["-prefix", &p4[..3]])].concat()).await;
    r.expect(0);
    assert!(
        r.stderr.contains(&format!("copied: {}", three.len())),
        "{}",
        r.stderr
    );
    assert_dir(&out, &sorted([four.clone(), three.clone()].concat()));

    // --blocks-from: one listed block is copied, one present nowhere is lost.
    let lost = BlockHash::of(b"stored nowhere");
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "{}+{}\n{lost}+14\n{}\n",
            others[0].0,
            others[0].1.len(),
            four[0].0
        ),
    )
    .unwrap();
    let report = s(dir.path().join("from.json"));
    let r = run_rsync(
        &[
            base.clone(),
            args(&["--blocks-from", &s(&list), "--report", &report]),
        ]
        .concat(),
    )
    .await;
    r.expect(1);
    assert!(r.stderr.contains("lost: 1"), "{}", r.stderr);
    assert!(r.stderr.contains(&lost.to_string()), "{}", r.stderr);
    let j = read_json(Path::new(&report));
    assert_eq!(j["lost_blocks"], serde_json::json!([format!("{lost}+14")]));
    assert_eq!(
        (j["copied"].as_u64(), j["plan"]["present"].as_u64()),
        (Some(1), Some(1))
    );
    assert_dir(
        &out,
        &sorted([four, three, vec![others[0].clone()]].concat()),
    );
}

// ---------------------------------------------------------------------------
// 8. Several destination volumes: keepstore's mount order.

/// keepstore's mount order of a block over `uuids`: ascending
/// md5(HASH_HEX + uuid[12:]), computed here from scratch.
fn mount_order(h: &BlockHash, uuids: &[&str]) -> Vec<usize> {
    let mut w: Vec<([u8; 16], usize)> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut m = Md5::new();
            m.update(h.to_string().as_bytes());
            m.update(&u.as_bytes()[12..]);
            (m.finalize().into(), i)
        })
        .collect();
    w.sort();
    w.into_iter().map(|(_, i)| i).collect()
}

fn has_file(root: &Path, h: &BlockHash) -> bool {
    let hex = h.to_string();
    root.join(&hex[..3]).join(&hex).is_file()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_volumes_are_filled_in_mount_order() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let want = sorted(blocks(30, 61));
    fill_dir(&src, &want);
    let uuids = [VOL0, VOL1];
    // keep-rsync's own implementation agrees with the one here.
    let suffixes: Vec<&str> = uuids.iter().map(|u| &u[12..]).collect();
    for (h, _) in &want {
        let mut out = Vec::new();
        keep_rsync::protocol::mount_order_among(h, &suffixes, &[0, 0], &[0, 1], &mut out);
        let out: Vec<usize> = out.into_iter().map(usize::from).collect();
        assert_eq!(out, mount_order(h, &uuids), "{h}");
    }
    let firsts: Vec<usize> = want
        .iter()
        .map(|(h, _)| mount_order(h, &uuids)[0])
        .collect();
    assert!(
        firsts.contains(&0) && firsts.contains(&1),
        "both volumes come first for some"
    );

    // -replications 1: each block on the first volume of its order only.
    let (roots, vols) = two_volumes(dir.path(), "v", "");
    let run = args(&[
        "--src-volume-dir",
        &s(&src),
        "--dst-volumes",
        &vols,
        "-replications",
        "1",
    ]);
    let r = run_rsync(&run).await;
    r.expect(0);
    for ((h, _), &first) in want.iter().zip(&firsts) {
        assert!(
            has_file(&roots[first], h),
            "{h} not on its first volume {}",
            uuids[first]
        );
        assert!(
            !has_file(&roots[1 - first], h),
            "{h} on its second volume too"
        );
    }
    for (i, root) in roots.iter().enumerate() {
        let mine: Vec<Block> = want
            .iter()
            .zip(&firsts)
            .filter(|(_, &f)| f == i)
            .map(|(b, _)| b.clone())
            .collect();
        assert_dir(root, &mine);
    }
    let r = run_rsync(&run).await;
    r.expect(0);
    assert!(r.stderr.contains("copied: 0"), "{}", r.stderr);
}

/// A volume counts for its `Replication`, also while its write is in
/// flight: with `-replications 2` a block whose first volume has
/// `Replication: 2` is written there alone, as keepstore would (a write in
/// flight once counted 1, so the next volume got a third replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_with_replication_2_is_written_alone() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let want = sorted(blocks(30, 61));
    fill_dir(&src, &want);
    let uuids = [VOL0, VOL1];
    let firsts: Vec<usize> = want
        .iter()
        .map(|(h, _)| mount_order(h, &uuids)[0])
        .collect();
    assert!(
        firsts.contains(&0) && firsts.contains(&1),
        "both volumes come first for some"
    );

    // VOL1 counts for 2 replicas: -replications 2 writes a block whose first
    // volume it is once; the others go to VOL0, then VOL1.
    let (roots, vols) = two_volumes(dir.path(), "w", "  Replication: 2\n");
    let report = s(dir.path().join("repl.json"));
    let r = run_rsync(&args(&[
        "--src-volume-dir",
        &s(&src),
        "--dst-volumes",
        &vols,
        "-replications",
        "2",
        "--report",
        &report,
    ]))
    .await;
    r.expect(0);
    let mut writes = 0;
    for ((h, _), &first) in want.iter().zip(&firsts) {
        assert!(has_file(&roots[1], h), "{h} not on {VOL1}");
        assert_eq!(
            has_file(&roots[0], h),
            first == 0,
            "{h} on {VOL0}: its first volume is {}",
            uuids[first]
        );
        // VOL0 then VOL1: 1 + 2 replicas; VOL1 alone: 2.
        writes += if first == 0 { 3 } else { 2 };
    }
    let j = read_json(Path::new(&report));
    assert_eq!(j["copied"], want.len());
    // VOL0-first blocks write VOL0 and VOL1 at once; once VOL1's 2 are in,
    // the VOL0 write is no longer waited for (its count may be left out).
    let n = j["replicas_written"].as_u64().unwrap();
    assert!(
        (2 * want.len() as u64..=writes).contains(&n),
        "replicas_written {n}, at most {writes}"
    );
}

// ---------------------------------------------------------------------------
// 9. Destination volumes that cannot be written, or are missing.

fn assert_one_paragraph(case: &str, r: &Run, needles: &[&str]) {
    assert_eq!(r.code, 2, "{case}: exit code\n{}", r.all());
    let text = r.stderr.trim();
    assert!(!text.is_empty(), "{case}: no message");
    assert!(!r.all().contains("panicked"), "{case}:\n{}", r.all());
    assert_eq!(
        text.lines().count(),
        1,
        "{case}: one paragraph expected, got\n{text}"
    );
    for n in needles {
        assert!(text.contains(n), "{case}: {n:?} not in\n{text}");
    }
}

/// Whether `text` says `line N column M`, N and M numbers.
fn names_line_and_column(text: &str) -> bool {
    text.match_indices("line ").any(|(i, _)| {
        let rest = &text[i + 5..];
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        n > 0
            && rest[n..]
                .strip_prefix(" column ")
                .is_some_and(|c| c.starts_with(|ch: char| ch.is_ascii_digit()))
    })
}

/// Whether a file can be created in `dir` by this process.
fn takes_files(dir: &Path) -> bool {
    tempfile::tempfile_in(dir).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_and_missing_destination_volumes_are_exit_2() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fill_dir(&src, &blocks(5, 71));
    let src_arg = args(&["--src-volume-dir", &s(&src)]);

    // A directory that takes no new file: mode 0555, or, as root (whom
    // modes do not stop), a read-only mount such as /sys.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let unwritable = if !takes_files(&ro) {
        Some(ro.clone())
    } else if Path::new("/sys").is_dir() && !takes_files(Path::new("/sys")) {
        Some(PathBuf::from("/sys"))
    } else {
        eprintln!("no directory refuses new files here (root, no read-only mount): part skipped");
        None
    };
    if let Some(u) = &unwritable {
        let r = run_rsync(&[src_arg.clone(), args(&["--dst-volume-dir", &s(u)])].concat()).await;
        assert_one_paragraph(
            "unwritable dir",
            &r,
            &["--dst-volume-dir", &s(u), "cannot take new files"],
        );
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Volumes marked ReadOnly: nothing is writable; each is named.
    let ro2 = dir.path().join("ro2");
    std::fs::create_dir(&ro2).unwrap();
    let text = format!(
        "{}{}",
        dir_entry(VOL0, &ro, "  ReadOnly: true\n"),
        dir_entry(VOL1, &ro2, "  ReadOnly: true\n")
    );
    let vols = vols_file(dir.path(), "ro.yml", &text);
    let r = run_rsync(&[src_arg.clone(), args(&["--dst-volumes", &vols])].concat()).await;
    assert_one_paragraph(
        "read-only volumes",
        &r,
        &["no writable volume (all are read-only)", VOL0, VOL1],
    );
    assert!(files_under(&ro).is_empty() && files_under(&ro2).is_empty());

    // A root that does not exist, given either way.
    let missing = dir.path().join("no-such-volume");
    let r = run_rsync(&[src_arg.clone(), args(&["--dst-volume-dir", &s(&missing)])].concat()).await;
    assert_one_paragraph(
        "missing dir",
        &r,
        &["--dst-volume-dir", &s(&missing), "create it first"],
    );
    let vols = vols_file(dir.path(), "missing.yml", &dir_entry(VOL0, &missing, ""));
    let r = run_rsync(&[src_arg.clone(), args(&["--dst-volumes", &vols])].concat()).await;
    assert_one_paragraph("missing volume", &r, &["--dst-volumes", VOL0, &s(&missing)]);
    assert!(!missing.exists(), "a missing root is not created");
}

// ---------------------------------------------------------------------------
// 10. keep-block-check against a bucket.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_check_reads_a_bucket() {
    let s3 = s3_or_skip!("block_check_reads_a_bucket");
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let all = sorted(blocks(12, 81));
    fill_bucket(&s3, BUCKET, 3, &all);
    let vols = vols_file(
        dir.path(),
        "vols.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, 3, &s3.secret),
    );
    let list = |name: &str, blocks: &[Block]| {
        let text: String = blocks
            .iter()
            .map(|(h, d)| format!("{h}+{}\n", d.len()))
            .collect();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        s(path)
    };
    let check = |list: String, extra: &[&str]| {
        let mut a = args(&["--volumes", &vols, "-block-hash-file", &list]);
        a.extend(args(extra));
        async move { run_with_stdin(check_bin(), &a, None).await }
    };
    let n = all.len();
    for mode in [&[][..], &["--probe"], &["--read"]] {
        let r = check(list("all.txt", &all), mode).await;
        r.expect(0);
        let totals = format!("Verify block totals: {n} attempts, {n} successes, 0 errors");
        assert!(
            r.stderr.contains(&totals),
            "{mode:?}: {totals:?} not in\n{}",
            r.stderr
        );
    }
    // One listed block is not in the bucket.
    let missing = (
        BlockHash::of(b"not in the bucket"),
        b"not in the bucket".to_vec(),
    );
    let with_missing = [all.clone(), vec![missing.clone()]].concat();
    for mode in [&[][..], &["--probe"], &["--read"]] {
        let r = check(list("missing.txt", &with_missing), mode).await;
        r.expect(1);
        let line = format!("Error verifying block {}+17: ", missing.0);
        assert!(r.stderr.contains(&line), "{mode:?}:\n{}", r.stderr);
        let totals = format!(
            "Verify block totals: {} attempts, {n} successes, 1 errors",
            n + 1
        );
        assert!(r.stderr.contains(&totals), "{mode:?}:\n{}", r.stderr);
    }
    // A corrupt object: listed (index and probe find it), read finds it bad.
    let (bad, data) = all[3].clone();
    s3.corrupt_object(BUCKET, &key(&bad, 3));
    let r = check(list("all.txt", &all), &[]).await;
    r.expect(0);
    let report = s(dir.path().join("read.json"));
    let r = check(list("all.txt", &all), &["--read", "--report", &report]).await;
    r.expect(1);
    let line = format!("Error verifying block {bad}+{}: ", data.len());
    assert!(r.stderr.contains(&line), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{n} attempts, {} successes, 1 errors", n - 1)),
        "{}",
        r.stderr
    );
    let j = read_json(Path::new(&report));
    assert_eq!(j["bad_copies"], 1);
    assert_eq!(
        j["missing_blocks"],
        serde_json::json!([format!("{bad}+{}", data.len())])
    );
    assert!(!r.all().contains(&s3.secret));
}

// ---------------------------------------------------------------------------
// 11. Configuration errors.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_configuration_errors_are_one_paragraph() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fill_dir(&src, &blocks(3, 91));
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let vols = vols_file(dir.path(), "one.yml", &dir_entry(VOL0, &out, ""));
    let conf = dir.path().join("dst.conf");
    write_private(&conf, "ARVADOS_API_HOST=127.0.0.1:1\nARVADOS_API_TOKEN=x\n");
    let src_arg = args(&["--src-volume-dir", &s(&src)]);
    let bad_yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/volumes/bad-yaml.yml");
    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "-dst and --dst-volumes",
            args(&["-dst", &s(&conf), "--dst-volumes", &vols]),
            vec![
                "-dst".into(),
                "--dst-volumes".into(),
                "one or the other".into(),
            ],
        ),
        (
            "--dst-volume-dir and --dst-volumes",
            args(&["--dst-volume-dir", &s(&out), "--dst-volumes", &vols]),
            vec!["--dst-volume-dir and --dst-volumes".into()],
        ),
        (
            "a YAML error",
            args(&["--dst-volumes", &s(&bad_yaml)]),
            vec![
                "--dst-volumes".into(),
                s(&bad_yaml),
                "not valid YAML".into(),
            ],
        ),
        (
            "--dst-cluster without a volumes file",
            args(&["--dst-volume-dir", &s(&out), "--dst-cluster", "zzzzz"]),
            vec!["--dst-cluster".into()],
        ),
    ];
    for (case, extra, needles) in cases {
        let r = run_rsync(&[src_arg.clone(), extra].concat()).await;
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_one_paragraph(case, &r, &needles);
        if case == "a YAML error" {
            assert!(names_line_and_column(&r.stderr), "{case}: {}", r.stderr);
        }
        assert!(
            !r.all().contains("FAKEsecretAccessKeyBadYaml0001"),
            "{case}: {}",
            r.all()
        );
    }
    // The same from the source side, and in keep-block-check.
    let r = run_rsync(&args(&[
        "-src",
        &s(&conf),
        "--src-volume-dir",
        &s(&src),
        "--dst-volume-dir",
        &s(&out),
    ]))
    .await;
    assert_one_paragraph(
        "-src and --src-volume-dir",
        &r,
        &["-src", "--src-volume-dir"],
    );
    let list = dir.path().join("l.txt");
    std::fs::write(&list, "").unwrap();
    for (case, a) in [
        (
            "check: --volume-dir and --volumes",
            args(&["--volume-dir", &s(&out), "--volumes", &vols]),
        ),
        (
            "check: -config and --volumes",
            args(&["-config", &s(&conf), "--volumes", &vols]),
        ),
        ("check: a YAML error", args(&["--volumes", &s(&bad_yaml)])),
    ] {
        let r = run_with_stdin(
            check_bin(),
            &[a, args(&["-block-hash-file", &s(&list)])].concat(),
            None,
        )
        .await;
        assert_one_paragraph(case, &r, &[]);
        if case.contains("YAML") {
            assert!(names_line_and_column(&r.stderr), "{case}: {}", r.stderr);
        }
    }
    assert!(files_under(&out).is_empty());
}

// ---------------------------------------------------------------------------
// --verify-existing with a bucket as the destination.

/// A corrupt object in the destination bucket is found by
/// `--verify-existing` (read back and MD5-checked) and rewritten from the
/// source directory in place; a second pass finds nothing to repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_existing_repairs_a_corrupt_object_in_the_destination_bucket() {
    let s3 = s3_or_skip!("verify_existing_repairs_a_corrupt_object_in_the_destination_bucket");
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let all = sorted(blocks(12, 44));
    fill_dir(&src, &all);
    let vols = vols_file(
        dir.path(),
        "vols.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, 0, &s3.secret),
    );
    let copy = |extra: &'static [&'static str]| {
        let mut a = args(&["--src-volume-dir", &s(&src), "--dst-volumes", &vols]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    run_rsync(&copy(&[])).await.expect(0);
    let (bad, _) = all.iter().find(|(_, d)| d.len() > 1000).unwrap().clone();
    s3.corrupt_object(BUCKET, &key(&bad, 0));
    let report = s(dir.path().join("v.json"));
    let mut a = copy(&["--verify-existing"]);
    a.extend(["--report".to_string(), report.clone()]);
    let r = run_rsync(&a).await;
    r.expect(0);
    let j = read_json(Path::new(&report));
    assert_eq!(j["verified"].as_u64(), Some(all.len() as u64), "{j}");
    assert_eq!(j["verify_bad"].as_u64(), Some(1), "{j}");
    assert_eq!(j["repaired"].as_u64(), Some(1), "{j}");
    assert_bucket(&s3, BUCKET, 0, &all);
    let mut a = copy(&["--verify-existing"]);
    a.extend(["--report".to_string(), report.clone()]);
    run_rsync(&a).await.expect(0);
    let j = read_json(Path::new(&report));
    assert_eq!(j["verify_bad"].as_u64(), Some(0), "{j}");
}

// ---------------------------------------------------------------------------
// Keys matched exactly (issue 29), and a whole cluster config's default.

/// Blocks of `want` on both of `roots`.
fn assert_on_both(roots: &[PathBuf; 2], want: &[Block]) {
    for (h, _) in want {
        assert!(
            has_file(&roots[0], h) && has_file(&roots[1], h),
            "{h} not on both volumes"
        );
    }
}

/// `replication: 2` is not Arvados' key: keepstore ignores it (its loader
/// drops a key that differs from a known one only in case), so keep-rsync
/// does too, says so naming the file and key path, and counts the volume
/// for 1 replica: with `-replications 2` every block is on both volumes
/// (read as `Replication: 2`, a block whose first volume is VOL1 went there
/// alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_cased_key_in_a_volumes_file_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let want = sorted(blocks(20, 67));
    fill_dir(&src, &want);
    assert!(
        want.iter()
            .any(|(h, _)| mount_order(h, &[VOL0, VOL1])[0] == 1),
        "VOL1 comes first for some"
    );
    let (roots, vols) = two_volumes(dir.path(), "c", "  replication: 2\n");
    let r = run_rsync(&args(&[
        "--src-volume-dir",
        &s(&src),
        "--dst-volumes",
        &vols,
        "-replications",
        "2",
    ]))
    .await;
    r.expect(0);
    let warning = format!(
        "--dst-volumes {vols}: ignoring the config entry {VOL1}.replication (perhaps you meant \
         Replication?)"
    );
    assert_on_both(&roots, &want);
    assert!(r.stderr.contains(&warning), "{}", r.stderr);
}

/// `--dst-volumes` given a whole cluster config wants the config's
/// `Collections.DefaultReplication`, as `-dst-cluster-config` does;
/// `-replications` still wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_config_as_volumes_file_wants_its_default_replication() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let want = sorted(blocks(20, 71));
    fill_dir(&src, &want);
    let roots = [dir.path().join("d0"), dir.path().join("d1")];
    for r in &roots {
        std::fs::create_dir(r).unwrap();
    }
    let indent = |t: String| t.replace('\n', "\n      ");
    let text = format!(
        "Clusters:\n  zzzzz:\n    Collections:\n      DefaultReplication: 2\n    Volumes:\n      \
         {}{}\n",
        indent(dir_entry(VOL0, &roots[0], "")),
        indent(dir_entry(VOL1, &roots[1], ""))
    );
    let vols = vols_file(dir.path(), "config.yml", &text);
    let run = args(&["--src-volume-dir", &s(&src), "--dst-volumes", &vols]);
    let r = run_rsync(&[run.clone(), args(&["-replications", "1"])].concat()).await;
    r.expect(0);
    for (h, _) in &want {
        let first = mount_order(h, &[VOL0, VOL1])[0];
        assert!(has_file(&roots[first], h), "{h} not on its first volume");
        assert!(!has_file(&roots[1 - first], h), "{h} on both volumes");
    }
    let r = run_rsync(&run).await;
    r.expect(0);
    assert_on_both(&roots, &want);
}

// ---------------------------------------------------------------------------
// Directory volumes as keepstore treats them (issue 29).

/// The uuid the API server gives a keepstore with no Rendezvous: cluster,
/// `-bi6l4-`, the first 16 hex digits of md5 of its normalised URL.
fn keepstore_uuid(url: &str) -> String {
    let mut m = Md5::new();
    m.update(format!("{url}/").as_bytes());
    let hex: String = m.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("zzzzz-bi6l4-{}", &hex[..16])
}

/// Servers in the clients' probe order: descending md5(HASH + uuid), the
/// whole uuid for one that is not 27 characters.
fn server_order(h: &BlockHash, uuids: &[String]) -> Vec<usize> {
    let mut w: Vec<([u8; 16], usize)> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut m = Md5::new();
            m.update(h.to_string().as_bytes());
            m.update(if u.len() == 27 { &u[12..] } else { &u[..] }.as_bytes());
            (m.finalize().into(), i)
        })
        .collect();
    w.sort();
    w.reverse();
    w.into_iter().map(|(_, i)| i).collect()
}

/// Volumes from two keepstore servers, two each, `-replications 2`: each
/// block's replicas go to the best volume (keepstore's mount order) of each
/// of its two servers (clients' probe order), never two on one server, as
/// keep-balance places them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_go_to_distinct_servers_in_probe_order() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let want = sorted(blocks(24, 71));
    fill_dir(&src, &want);
    let urls = [
        "http://keep0.zzzzz.example:25107",
        "http://keep1.zzzzz.example:25107",
    ];
    let servers: Vec<String> = urls.iter().map(|u| keepstore_uuid(u)).collect();
    let vols = [
        ("zzzzz-nyw5e-000000000000000", 0),
        ("zzzzz-nyw5e-000000000000001", 0),
        ("zzzzz-nyw5e-000000000000002", 1),
        ("zzzzz-nyw5e-000000000000003", 1),
    ];
    let roots: Vec<PathBuf> = (0..4).map(|i| dir.path().join(format!("v{i}"))).collect();
    let mut text = String::new();
    for (i, (uuid, server)) in vols.iter().enumerate() {
        std::fs::create_dir(&roots[i]).unwrap();
        text += &dir_entry(
            uuid,
            &roots[i],
            &format!("  AccessViaHosts:\n    {}: {{}}\n", urls[*server]),
        );
    }
    let file = vols_file(dir.path(), "servers.yml", &text);
    let r = run_rsync(&args(&[
        "--src-volume-dir",
        &s(&src),
        "--dst-volumes",
        &file,
        "-replications",
        "2",
    ]))
    .await;
    r.expect(0);
    let mut seconds_differ = 0;
    for (h, _) in &want {
        let order = server_order(h, &servers);
        let expected: Vec<usize> = order
            .iter()
            .map(|&srv| {
                let mine: Vec<usize> = (0..4).filter(|&v| vols[v].1 == srv).collect();
                let uuids: Vec<&str> = mine.iter().map(|&v| vols[v].0).collect();
                mine[mount_order(h, &uuids)[0]]
            })
            .collect();
        let got: Vec<usize> = (0..4).filter(|&v| has_file(&roots[v], h)).collect();
        let mut sorted_expected = expected.clone();
        sorted_expected.sort();
        assert_eq!(got, sorted_expected, "{h}: servers {order:?}");
        // The mount order alone would often put both on one server.
        let all: Vec<&str> = vols.iter().map(|v| v.0).collect();
        let by_mount = mount_order(h, &all);
        if vols[by_mount[0]].1 == vols[by_mount[1]].1 {
            seconds_differ += 1;
        }
    }
    assert!(seconds_differ > 0, "no block tells the orders apart");
}

/// A volume with a `full` marker under an hour old is skipped: its blocks
/// go to the next volume; a marker older than an hour is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_full_marker_sends_blocks_to_the_next_volume() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let want = sorted(blocks(12, 73));
    fill_dir(&src, &want);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (age, all_on_1) in [(120, true), (7200, false)] {
        let roots = [
            dir.path().join(format!("a{age}")),
            dir.path().join(format!("b{age}")),
        ];
        for r in &roots {
            std::fs::create_dir(r).unwrap();
        }
        std::os::unix::fs::symlink((now - age).to_string(), roots[0].join("full")).unwrap();
        let text = format!(
            "{}{}",
            dir_entry(VOL0, &roots[0], ""),
            dir_entry(VOL1, &roots[1], "")
        );
        let file = vols_file(dir.path(), &format!("full{age}.yml"), &text);
        let r = run_rsync(&args(&[
            "--src-volume-dir",
            &s(&src),
            "--dst-volumes",
            &file,
            "-replications",
            "1",
        ]))
        .await;
        r.expect(0);
        for (h, _) in &want {
            let first = mount_order(h, &[VOL0, VOL1])[0];
            let on = if all_on_1 { 1 } else { first };
            assert!(
                has_file(&roots[on], h),
                "marker {age}s old: {h} not on volume {on}"
            );
            assert!(
                !has_file(&roots[1 - on], h),
                "marker {age}s old: {h} on both"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// A bucket that refuses every write (versitygw --readonly): the refusal's
// advice is the volume's (its credentials), never a Keep token's.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_s3_write_gives_the_volumes_advice_not_a_keep_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let src = cluster(1, "aaaaa", dir.path(), "src").await;
    seed(&src, &blocks(3, 43));
    let Some(s3) = S3Server::start_with(
        "a_refused_s3_write_gives_the_volumes_advice",
        &["--readonly"],
    ) else {
        return;
    };
    s3.create_bucket(BUCKET);
    let vols = vols_file(
        dir.path(),
        "refusing.yml",
        &s3_entry(S3VOL, &s3.endpoint, BUCKET, 0, &s3.secret),
    );
    // The write probe finds it before anything is listed: one paragraph,
    // exit 3, and a dry run (which writes nothing) does not probe.
    let probed = rsync(&[
        keep_side(dir.path(), "src"),
        args(&["--dst-volumes", &vols, "--retries", "1"]),
    ])
    .await;
    probed.expect(3);
    let lines: Vec<&str> = (probed.stderr.lines())
        .filter(|l| l.contains("refused the write probe"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", probed.stderr);
    for want in [
        S3VOL,
        "keep-rsync-probe/",
        "403",
        "PutObject",
        "--no-write-probe",
    ] {
        assert!(lines[0].contains(want), "{want} not in {}", lines[0]);
    }
    assert!(
        !probed.stderr.contains("refuses our requests"),
        "{}",
        probed.stderr
    );
    assert!(!probed.all().contains(&s3.secret));
    rsync(&[
        keep_side(dir.path(), "src"),
        args(&["--dst-volumes", &vols, "--dry-run"]),
    ])
    .await
    .expect(0);
    // Without the probe, the block writes meet the refusal: said once.
    let r = rsync(&[
        keep_side(dir.path(), "src"),
        args(&["--dst-volumes", &vols, "--retries", "1", "--no-write-probe"]),
    ])
    .await;
    r.expect(1);
    let refused: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("refuses our requests"))
        .collect();
    assert_eq!(refused.len(), 1, "{}", r.stderr);
    for want in [S3VOL, "AccessKeyID/SecretAccessKey", "Region", "403"] {
        assert!(refused[0].contains(want), "{want} not in {}", refused[0]);
    }
    for keep_words in [
        "ARVADOS_API_TOKEN",
        "SystemRootToken",
        "keep services",
        &s3.secret,
    ] {
        assert!(
            !r.stderr.contains(keep_words),
            "{keep_words} in:\n{}",
            r.stderr
        );
    }
}
