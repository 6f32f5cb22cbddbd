//! Durable writes without waiting (issue 31, items 3 and 4): a block's
//! buffer is given back once its bytes are in the temp file, its fsync and
//! rename finish outside the byte budget, and it counts as stored only
//! when they end. A finish that fails is that block's failure (exit 1)
//! and leaves no file; a keep-rsync killed mid-copy leaves every block
//! file whole; and into a bucket, every block's `recent/` marker still
//! follows its data object.
//!
//! The first test holds every finish with the debug build's
//! `KEEP_RSYNC_TEST_FINISH_GATE` (src/store/dir.rs) until it has seen
//! more blocks written than the byte budget can hold at once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::s3::S3Server;
use common::*;
use keep_rsync::protocol::BlockHash;

/// A block: its hash and bytes.
type Block = (BlockHash, Vec<u8>);

/// `n` distinct blocks of `size` bytes, the same for the same `seed`.
fn blocks(n: usize, size: usize, seed: u64) -> Vec<Block> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 33) as u8
                })
                .collect();
            (BlockHash::of(&data), data)
        })
        .collect()
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

/// Write `blocks` into a Directory volume at `root` (`ROOT/XYZ/HASH`).
fn fill_dir(root: &Path, blocks: &[Block]) {
    for (h, data) in blocks {
        let hex = h.to_string();
        let dir = root.join(&hex[..3]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&hex), data).unwrap();
    }
}

/// Every file under `root` (relative name, path), recursively.
fn files_under(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let name = p.strip_prefix(root).unwrap().display().to_string();
                out.push((name, p));
            }
        }
    }
    out.sort();
    out
}

/// Temp files (keepstore's `tmpHASHN`) under a Directory volume.
fn temp_files(root: &Path) -> usize {
    files_under(root)
        .iter()
        .filter(|(_, p)| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tmp"))
        })
        .count()
}

/// Every block file under `root` is whole: its bytes' MD5 is its name.
/// Returns how many there are.
fn assert_whole(root: &Path) -> usize {
    let mut n = 0;
    for (name, path) in files_under(root) {
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        if file.starts_with("tmp") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        assert_eq!(
            BlockHash::of(&data).to_string(),
            file,
            "{name} is not whole ({} bytes)",
            data.len()
        );
        n += 1;
    }
    n
}

fn copy_args(src: &Path, dst: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--src-volume-dir".to_string(),
        s(src),
        "--dst-volume-dir".to_string(),
        s(dst),
        "-replications".to_string(),
        "1".to_string(),
        "--retry-backoff".to_string(),
        "5ms".to_string(),
    ];
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// With the byte budget one block big, several blocks are written to
/// their temp files while none has finished: the budget was given back
/// before each finish. Once the finishes go on, every block is stored
/// whole and no temp file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_gives_its_budget_back_before_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, gate) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("gate"),
    );
    std::fs::create_dir(&dst).unwrap();
    let want = blocks(6, 1 << 20, 7);
    fill_dir(&src, &want);
    let mut child = tokio::process::Command::new(bin())
        .args(copy_args(&src, &dst, &["--buffer-memory", "1M", "-q"]))
        .env("KEEP_RSYNC_TEST_FINISH_GATE", &gate)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Every block is written and waits for its finish: 6 MiB of blocks
    // under a 1 MiB budget. (Without the early release the second block
    // never starts, and this times out.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while temp_files(&dst) < want.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {} blocks written while the first finish is held: the budget is \
             not given back before the finish",
            temp_files(&dst),
            want.len()
        );
        if let Some(st) = child.try_wait().unwrap() {
            panic!("keep-rsync ended ({st}) while its finishes were held");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(assert_whole(&dst), 0, "a block counted before its finish");
    std::fs::write(&gate, b"").unwrap();
    let st = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("keep-rsync ends once its finishes may go on")
        .unwrap();
    assert_eq!(st.code(), Some(0));
    assert_eq!(assert_whole(&dst), want.len());
    assert_eq!(temp_files(&dst), 0, "temp files left");
}

/// A block whose rename fails (a directory stands at its name) is that
/// block's failure, exit 1, naming it; its temp file is removed; the
/// other blocks are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_finish_is_a_failed_block_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let want = blocks(8, 10_000, 11);
    fill_dir(&src, &want);
    // Not a block file (the index lists files only), but in the way of
    // the rename.
    let bad = &want[3].0;
    let hex = bad.to_string();
    std::fs::create_dir_all(dst.join(&hex[..3]).join(&hex).join("in-the-way")).unwrap();
    let report = dir.path().join("report.json");
    let mut a = copy_args(&src, &dst, &["--report"]);
    a.push(s(&report));
    let r = run_with_stdin(bin(), &a, None).await;
    r.expect(1);
    assert!(r.all().contains(&hex), "{}", r.all());
    let rep = read_json(&report);
    let text = rep.to_string();
    assert!(text.contains(&hex), "{text}");
    assert_eq!(rep["copied"], serde_json::json!(want.len() - 1), "{text}");
    assert_eq!(temp_files(&dst), 0, "the failed block's temp file is left");
    assert_eq!(assert_whole(&dst), want.len() - 1);
}

/// keep-rsync killed (SIGKILL) mid-copy into a directory: every block file
/// there is whole (a block is renamed to its name only after its data is
/// written and fsynced); a rerun completes the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_killed_mid_way_leaves_only_whole_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir(&dst).unwrap();
    let want = blocks(400, 64 << 10, 13);
    fill_dir(&src, &want);
    let mut child = tokio::process::Command::new(bin())
        .args(copy_args(&src, &dst, &["-q", "--transfers", "8"]))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // One scan: files are renamed from temp names while it runs.
        let stored = files_under(&dst)
            .iter()
            .filter(|(_, p)| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("tmp"))
            })
            .count();
        if stored >= 20 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no block stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let n = assert_whole(&dst);
    assert!(n >= 20, "{n} blocks");
    // The temp files a kill leaves are keepstore's `tmp…` names, which no
    // listing takes for blocks: the rerun copies the rest.
    run_with_stdin(bin(), &copy_args(&src, &dst, &["-q"]), None)
        .await
        .expect(0);
    assert_eq!(assert_whole(&dst), want.len());
}

/// Into a bucket: every block has its `recent/` marker, written after its
/// data object (versitygw's files: the marker's mtime is not before the
/// object's), though the marker holds neither the block's buffer nor its
/// transfer slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_marker_follows_its_data_object() {
    let test = "every_marker_follows_its_data_object";
    let Some(s3) = S3Server::start(test) else {
        return;
    };
    let bucket = "keep-blocks";
    s3.create_bucket(bucket);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let want = blocks(300, 4096, 17);
    fill_dir(&src, &want);
    let vols = dir.path().join("vols.yml");
    write_private(
        &vols,
        &format!(
            "zzzzz-nyw5e-000000000000010:\n  Driver: S3\n  DriverParameters:\n    Bucket: \
             {bucket}\n    Endpoint: {}\n    Region: {}\n    AccessKeyID: {}\n    \
             SecretAccessKey: {}\n    PrefixLength: 0\n  Replication: 1\n",
            s3.endpoint,
            common::s3::REGION,
            common::s3::ACCESS,
            common::s3::SECRET
        ),
    );
    let a = vec![
        "--src-volume-dir".to_string(),
        s(&src),
        "--dst-volumes".to_string(),
        s(&vols),
        "-q".to_string(),
    ];
    run_rsync(&a).await.expect(0);
    let root = s3.root.join(bucket);
    let mtime = |p: &Path| -> SystemTime { std::fs::metadata(p).unwrap().modified().unwrap() };
    for (h, data) in &want {
        let k = h.to_string();
        let obj = root.join(&k);
        let marker = root.join("recent").join(&k);
        assert_eq!(std::fs::read(&obj).unwrap(), *data, "{k}");
        assert!(marker.is_file(), "{k}: no recent/ marker");
        assert!(
            mtime(&marker) >= mtime(&obj),
            "{k}: its marker was written before its data object"
        );
    }
}
