//! keepstore's volume layouts (docs/protocol.md, "Volume layouts"): where a
//! block lives in a Directory volume and in an S3 bucket, which names are
//! live blocks, and how a block is written so that no partial copy is ever
//! visible under its name. keep-rsync's volume stores and keepstore-sim's
//! directory store both use this one implementation.
//!
//! - **Directory** (keepstore's `unix_volume.go`): `ROOT/XYZ/HASH`, XYZ the
//!   hash's first three hex digits. A write goes to `ROOT/XYZ/tmpHASHN` and
//!   is renamed to its name once complete; trash is `HASH.trash.DEADLINE`.
//! - **S3** (keepstore's `s3_volume.go`): the data object `HASH`, or
//!   `XYZ/HASH` with `PrefixLength` 3; the empty marker `recent/KEY` whose
//!   time is the block's timestamp, written after the data object; trash
//!   under `trash/`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use crate::locator::{BlockHash, MAX_BLOCK_SIZE};

/// Whether `name` is all lowercase hex digits (and not empty).
fn is_hex(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Directory volumes: `ROOT/XYZ/HASH`.
pub mod dir {
    use super::*;

    /// `ROOT/XYZ`, the directory a block's file lives in.
    pub fn block_dir(root: &Path, hash: &BlockHash) -> PathBuf {
        root.join(&hash.to_hex()[..3])
    }

    /// `ROOT/XYZ/HASH`.
    pub fn block_path(root: &Path, hash: &BlockHash) -> PathBuf {
        let hex = hash.to_hex();
        root.join(&hex[..3]).join(&hex)
    }

    /// Whether a subdirectory of ROOT named `name` may hold blocks whose hash
    /// starts with `prefix`: exactly three hex digits, agreeing with the
    /// prefix as far as both go.
    pub fn subdir_may_hold(name: &str, prefix: &str) -> bool {
        let n = prefix.len().min(3);
        name.len() == 3 && is_hex(name) && name[..n] == prefix[..n]
    }

    /// The block a file named `name` in subdirectory `subdir` is, if it is a
    /// live block that keepstore could read: exactly 32 lowercase hex digits
    /// starting with `subdir`. Temp files (`tmp…`), trash
    /// (`HASH.trash.DEADLINE`) and misplaced files are not.
    pub fn block_of(subdir: &str, name: &str) -> Option<BlockHash> {
        let hash = BlockHash::from_hex(name.as_bytes())?;
        name.starts_with(subdir).then_some(hash)
    }

    /// One live block found by [`scan`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Found {
        pub hash: BlockHash,
        pub size: u64,
        /// The file's mtime in nanoseconds since the epoch (the block's
        /// timestamp in keepstore's index).
        pub mtime_ns: u64,
    }

    /// How many times a directory read that failed transiently is
    /// retried before the listing fails: keepstore's own count for NFS's
    /// EBADCOOKIE (unix_volume.go retries it 5 times, at once).
    pub const SCAN_RETRIES: u32 = 5;

    /// Whether an error listing or stat-ing a directory may pass on a
    /// second try: NFS's EBADCOOKIE (errno 523: the server no longer takes
    /// the readdir cookie), EIO, and ESTALE (a stale NFS handle, re-opened
    /// by path). Numbers are Linux's. Also true of the error a scan ends
    /// with when such an error persisted through the retries.
    pub fn is_transient(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(523 | 5 | 116))
            || e.get_ref()
                .and_then(|r| r.downcast_ref::<ScanError>())
                .is_some_and(|s| s.transient)
    }

    /// A scan's error: the path at fault and what went wrong, and whether
    /// it was a transient kind ([`is_transient`]) that persisted.
    #[derive(Debug)]
    struct ScanError {
        message: String,
        transient: bool,
    }

    impl std::fmt::Display for ScanError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl std::error::Error for ScanError {}

    /// The names in a directory, as [`scan`] reads them (`read_dir`, whole).
    pub fn read_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    /// Every live block of the volume at `root` whose hash starts with
    /// `prefix`, in no particular order, given to `found`. Regular files
    /// (or symlinks to them: sizes are `stat`'s, as keepstore reads a
    /// block) of at most 64 MiB; an entry or a subdirectory that vanishes
    /// mid-scan (a racing rename or unlink, as keepstore skips it) is
    /// skipped. A transient error ([`is_transient`]) re-reads the
    /// subdirectory up to [`SCAN_RETRIES`] times; any other error, or one
    /// that persists, fails the scan naming the path (never a partial
    /// listing).
    pub fn scan(root: &Path, prefix: &str, found: &mut dyn FnMut(Found)) -> io::Result<()> {
        scan_with(root, prefix, &mut read_names, found)
    }

    /// [`scan`] reading directories with `read` (a test seam, for errors no
    /// local filesystem gives on demand).
    pub fn scan_with(
        root: &Path,
        prefix: &str,
        read: &mut dyn FnMut(&Path) -> io::Result<Vec<std::ffi::OsString>>,
        found: &mut dyn FnMut(Found),
    ) -> io::Result<()> {
        let subdirs: Vec<String> = if prefix.len() >= 3 {
            vec![prefix[..3].to_string()]
        } else {
            retrying(|| {
                Ok(read(root)
                    .map_err(|e| (e, root.to_path_buf()))?
                    .into_iter()
                    .filter_map(|n| n.into_string().ok())
                    .filter(|n| subdir_may_hold(n, prefix))
                    .collect())
            })?
        };
        for sub in subdirs {
            let dir = root.join(&sub);
            let got = retrying(|| scan_subdir(&dir, &sub, prefix, read));
            let got = match got {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // A file named like a subdirectory: not ours to read.
                Err(_) if !dir.is_dir() => continue,
                Err(e) => return Err(e),
            };
            got.into_iter().for_each(&mut *found);
        }
        Ok(())
    }

    /// `op` retried while its error is transient; its error comes with the
    /// path it is about, and the last one names it (and the retries, when
    /// there were any).
    fn retrying<T>(mut op: impl FnMut() -> Result<T, (io::Error, PathBuf)>) -> io::Result<T> {
        let mut attempt = 0;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err((e, _)) if is_transient(&e) && attempt < SCAN_RETRIES => {
                    // keepstore retries at once; a short pause gives a
                    // busy NFS server a moment.
                    std::thread::sleep(std::time::Duration::from_millis(10 << attempt));
                    attempt += 1;
                }
                Err((e, path)) => {
                    let retries = match attempt {
                        0 => String::new(),
                        n => format!(" (after {n} retries)"),
                    };
                    let err = ScanError {
                        message: format!("{}: {e}{retries}", path.display()),
                        transient: is_transient(&e),
                    };
                    return Err(io::Error::new(e.kind(), err));
                }
            }
        }
    }

    /// The live blocks of one subdirectory: its names read whole, then each
    /// block name `stat`ed (following a symlink). An entry gone by then is
    /// skipped; a subdirectory gone is `NotFound`.
    fn scan_subdir(
        dir: &Path,
        sub: &str,
        prefix: &str,
        read: &mut dyn FnMut(&Path) -> io::Result<Vec<std::ffi::OsString>>,
    ) -> Result<Vec<Found>, (io::Error, PathBuf)> {
        let mut out = Vec::new();
        for name in read(dir).map_err(|e| (e, dir.to_path_buf()))? {
            let Some(hash) = name.to_str().and_then(|n| block_of(sub, n)) else {
                continue;
            };
            if !hash.has_prefix(prefix) {
                continue;
            }
            let path = dir.join(&name);
            let md = match fs::metadata(&path) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err((e, path)),
            };
            if !md.is_file() || md.len() > MAX_BLOCK_SIZE {
                continue;
            }
            out.push(Found {
                hash,
                size: md.len(),
                mtime_ns: mtime_ns(&md),
            });
        }
        Ok(out)
    }

    /// A file's mtime in nanoseconds since the epoch (0 when unknown).
    pub fn mtime_ns(md: &fs::Metadata) -> u64 {
        md.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    static TMP_SEQ: AtomicU32 = AtomicU32::new(0);

    /// A block being written: a temp file beside its final name
    /// (`ROOT/XYZ/tmpHASHN`, keepstore's own pattern, which no reader takes
    /// for a block). [`TempBlock::commit`] makes it the block; dropping it
    /// uncommitted removes it.
    pub struct TempBlock {
        file: Option<fs::File>,
        tmp: PathBuf,
        path: PathBuf,
        written: u64,
    }

    impl TempBlock {
        /// Create the temp file (and `ROOT/XYZ`, mode 0755), mode 0600 as
        /// keepstore's.
        pub fn create(root: &Path, hash: &BlockHash) -> io::Result<TempBlock> {
            let dir = block_dir(root, hash);
            fs::create_dir_all(&dir)?;
            loop {
                let n = std::process::id()
                    .wrapping_mul(1_000_003)
                    .wrapping_add(TMP_SEQ.fetch_add(1, Ordering::Relaxed));
                let tmp = dir.join(format!("tmp{hash}{n}"));
                let mut opts = fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                match opts.open(&tmp) {
                    Ok(file) => {
                        return Ok(TempBlock {
                            file: Some(file),
                            tmp,
                            path: block_path(root, hash),
                            written: 0,
                        })
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
        }

        pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
            let f = self
                .file
                .as_mut()
                .ok_or_else(|| io::Error::other("already committed"))?;
            f.write_all(data)?;
            self.written += data.len() as u64;
            Ok(())
        }

        /// Bytes written so far.
        pub fn written(&self) -> u64 {
            self.written
        }

        /// Make the temp file the block: fsync it, set its times to `mtime`
        /// (the block's timestamp: now, never the source's), rename it over
        /// `ROOT/XYZ/HASH` (atomically replacing any old copy), and fsync the
        /// directory, so that after a crash the block is either whole or
        /// absent.
        pub fn commit(mut self, mtime: SystemTime) -> io::Result<()> {
            let f = self
                .file
                .take()
                .ok_or_else(|| io::Error::other("already committed"))?;
            // The data (fdatasync: the times set next and the rename are
            // made durable by the directory's fsync well enough: after a
            // crash the file's mtime is at worst its creation, also now).
            f.sync_data()?;
            f.set_times(fs::FileTimes::new().set_accessed(mtime).set_modified(mtime))?;
            drop(f);
            fs::rename(&self.tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            self.tmp = PathBuf::new();
            Ok(())
        }
    }

    impl Drop for TempBlock {
        fn drop(&mut self) {
            if !self.tmp.as_os_str().is_empty() {
                let _ = fs::remove_file(&self.tmp);
            }
        }
    }

    /// Write a whole block (keepstore-sim's writes).
    pub fn write_block(root: &Path, hash: &BlockHash, data: &[u8]) -> io::Result<()> {
        let mut t = TempBlock::create(root, hash)?;
        t.write(data)?;
        t.commit(SystemTime::now())
    }
}

/// S3 volumes: `[XYZ/]HASH`, `recent/KEY`, `trash/KEY`.
pub mod s3 {
    use super::*;

    /// The marker prefix: `recent/KEY` is the block's timestamp.
    pub const RECENT: &str = "recent/";
    /// Trashed blocks: `trash/KEY`.
    pub const TRASH: &str = "trash/";

    /// Whether `PrefixLength` puts the hash's first digits in a directory
    /// (keepstore: `0 < PrefixLength < 31`).
    fn split(prefix_length: usize) -> bool {
        prefix_length > 0 && prefix_length < 31
    }

    /// The data object's key of a block.
    pub fn key(hash: &BlockHash, prefix_length: usize) -> String {
        let hex = hash.to_hex();
        if split(prefix_length) {
            format!("{}/{hex}", &hex[..prefix_length])
        } else {
            hex
        }
    }

    /// The key of a block's `recent/` marker.
    pub fn recent_key(hash: &BlockHash, prefix_length: usize) -> String {
        format!("{RECENT}{}", key(hash, prefix_length))
    }

    /// The ListObjectsV2 prefix that lists the data objects of blocks whose
    /// hash starts with `prefix`. For a prefix longer than PrefixLength it is
    /// `XYZ/PREFIX`; keepstore's own index gets this wrong for a prefix of
    /// exactly PrefixLength + 1 digits (it asks for `PREFIX` and lists
    /// nothing), so this is written out rather than derived from [`key`].
    pub fn list_prefix(prefix: &str, prefix_length: usize) -> String {
        if split(prefix_length) && prefix.len() > prefix_length {
            format!("{}/{prefix}", &prefix[..prefix_length])
        } else {
            prefix.to_string()
        }
    }

    /// The block a listed key is, if it is a data object in this layout.
    /// Stricter than keepstore (which also lists a flat key under a
    /// PrefixLength it would never read): only keys keepstore can read.
    pub fn block_of(key: &str, prefix_length: usize) -> Option<BlockHash> {
        let name = if split(prefix_length) {
            let (dir, name) = key.split_at_checked(prefix_length)?;
            let name = name.strip_prefix('/')?;
            if !name.starts_with(dir) {
                return None;
            }
            name
        } else {
            key
        };
        BlockHash::from_hex(name.as_bytes())
    }

    /// Data keys all sort before this: a listing reaching it has left the
    /// data objects (`recent/` and `trash/` follow).
    pub const PAST_DATA: &str = "g";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> BlockHash {
        s.parse().unwrap()
    }

    const A: &str = "acbd18db4cc2f85cedef654fccc4a4d8";

    #[test]
    fn s3_keys() {
        assert_eq!(s3::key(&h(A), 0), A);
        assert_eq!(s3::key(&h(A), 3), format!("acb/{A}"));
        assert_eq!(s3::recent_key(&h(A), 3), format!("recent/acb/{A}"));
        assert_eq!(s3::block_of(A, 0), Some(h(A)));
        assert_eq!(s3::block_of(&format!("acb/{A}"), 3), Some(h(A)));
        assert_eq!(s3::block_of(A, 3), None);
        assert_eq!(s3::block_of(&format!("acd/{A}"), 3), None);
        assert_eq!(s3::block_of(&format!("recent/{A}"), 0), None);
        assert_eq!(s3::list_prefix("", 3), "");
        assert_eq!(s3::list_prefix("ac", 3), "ac");
        assert_eq!(s3::list_prefix("acb", 3), "acb");
        // keepstore's own index lists nothing for this one.
        assert_eq!(s3::list_prefix("acbd", 3), "acb/acbd");
        assert_eq!(s3::list_prefix("acbd1", 0), "acbd1");
    }

    #[test]
    fn dir_names() {
        assert!(dir::subdir_may_hold("acb", ""));
        assert!(dir::subdir_may_hold("acb", "a"));
        assert!(dir::subdir_may_hold("acb", "acbd"));
        assert!(!dir::subdir_may_hold("acc", "acb"));
        assert!(!dir::subdir_may_hold("lost+found", ""));
        assert!(!dir::subdir_may_hold("acbd", ""));
        assert_eq!(dir::block_of("acb", A), Some(h(A)));
        assert_eq!(dir::block_of("acc", A), None);
        assert_eq!(dir::block_of("acb", &format!("{A}.trash.1700000000")), None);
        assert_eq!(dir::block_of("acb", &format!("tmp{A}123")), None);
    }

    /// Blocks of these contents in a fresh volume: the root and hashes.
    fn volume(contents: &[&[u8]]) -> (tempfile::TempDir, Vec<BlockHash>) {
        let root = tempfile::tempdir().unwrap();
        let hashes = contents.iter().map(|c| BlockHash::of(c)).collect();
        for c in contents {
            dir::write_block(root.path(), &BlockHash::of(c), c).unwrap();
        }
        (root, hashes)
    }

    fn listed(root: &std::path::Path, read: ReadFn<'_>) -> io::Result<Vec<BlockHash>> {
        let mut seen = Vec::new();
        dir::scan_with(root, "", read, &mut |f| seen.push(f.hash))?;
        seen.sort();
        Ok(seen)
    }

    type ReadFn<'a> = &'a mut dyn FnMut(&std::path::Path) -> io::Result<Vec<std::ffi::OsString>>;

    #[test]
    fn transient_errors_are_retried_per_subdirectory() {
        let (root, mut hashes) = volume(&[b"foo", b"bar", b"baz"]);
        hashes.sort();
        let flaky = dir::block_dir(root.path(), &hashes[0]);
        // EBADCOOKIE, EIO, ESTALE: a few failures of one subdirectory are
        // retried, and every block is listed once.
        for errno in [523, 5, 116] {
            let mut fails = 3;
            let mut calls = 0;
            let got = listed(root.path(), &mut |d| {
                if d == flaky {
                    calls += 1;
                    if fails > 0 {
                        fails -= 1;
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                }
                dir::read_names(d)
            })
            .unwrap();
            assert_eq!(got, hashes, "errno {errno}");
            assert_eq!(calls, 4, "errno {errno}");
        }
        // One that persists fails the listing, naming the directory, still
        // transient; after keepstore's 5 retries.
        let mut calls = 0;
        let e = listed(root.path(), &mut |d| {
            if d == flaky {
                calls += 1;
                return Err(io::Error::from_raw_os_error(523));
            }
            dir::read_names(d)
        })
        .unwrap_err();
        assert_eq!(calls, 1 + dir::SCAN_RETRIES);
        assert!(dir::is_transient(&e), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&flaky.display().to_string()), "{msg}");
        assert!(msg.contains("after 5 retries"), "{msg}");
        // Anything else is not retried, nor transient.
        let mut calls = 0;
        let e = listed(root.path(), &mut |d| {
            if d == flaky {
                calls += 1;
                return Err(io::Error::from_raw_os_error(13));
            }
            dir::read_names(d)
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(!dir::is_transient(&e), "{e}");
        // The root's own listing is retried too.
        let mut fails = 2;
        let got = listed(root.path(), &mut |d| {
            if d == root.path() && fails > 0 {
                fails -= 1;
                return Err(io::Error::from_raw_os_error(5));
            }
            dir::read_names(d)
        })
        .unwrap();
        assert_eq!(got, hashes);
    }

    /// Two block contents whose hashes share a subdirectory.
    fn neighbours() -> [Vec<u8>; 2] {
        let mut seen = std::collections::HashMap::new();
        for i in 0u32.. {
            let c = i.to_string().into_bytes();
            let sub = BlockHash::of(&c).to_hex()[..3].to_string();
            if let Some(other) = seen.insert(sub, c.clone()) {
                return [other, c];
            }
        }
        unreachable!()
    }

    #[test]
    fn an_entry_gone_between_readdir_and_stat_is_not_listed() {
        let [a, b] = neighbours();
        for unlink in [false, true] {
            let (root, hashes) = volume(&[&a, &b]);
            let gone = dir::block_path(root.path(), &hashes[0]);
            let renamed = root.path().join("elsewhere");
            let got = listed(root.path(), &mut |d| {
                let names = dir::read_names(d)?;
                // Renamed away (as keepstore's trash does) or unlinked
                // after the directory was read, before its entries are
                // looked at.
                if gone.parent() == Some(d) && gone.exists() {
                    if unlink {
                        fs::remove_file(&gone).unwrap();
                    } else {
                        fs::rename(&gone, &renamed).unwrap();
                    }
                }
                Ok(names)
            })
            .unwrap();
            // Its neighbour in the same subdirectory is still listed.
            assert_eq!(got, vec![hashes[1]], "unlink {unlink}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_blocks_are_listed_as_their_targets() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let (h, data) = (BlockHash::of(b"linked"), b"linked");
        let target = elsewhere.path().join("data");
        fs::write(&target, data).unwrap();
        fs::create_dir_all(dir::block_dir(root.path(), &h)).unwrap();
        std::os::unix::fs::symlink(&target, dir::block_path(root.path(), &h)).unwrap();
        // A dangling one is not a block.
        let dangling = BlockHash::of(b"dangling");
        fs::create_dir_all(dir::block_dir(root.path(), &dangling)).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("none"),
            dir::block_path(root.path(), &dangling),
        )
        .unwrap();
        let mut seen = Vec::new();
        dir::scan(root.path(), "", &mut |f| seen.push(f)).unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!((seen[0].hash, seen[0].size), (h, data.len() as u64));
    }

    #[test]
    fn writes_are_whole_or_absent() {
        let root = tempfile::tempdir().unwrap();
        let hash = BlockHash::of(b"foo");
        let mut t = dir::TempBlock::create(root.path(), &hash).unwrap();
        t.write(b"fo").unwrap();
        let mut seen = Vec::new();
        dir::scan(root.path(), "", &mut |f| seen.push(f)).unwrap();
        assert!(seen.is_empty(), "a partial write is listed: {seen:?}");
        drop(t);
        let sub = dir::block_dir(root.path(), &hash);
        assert_eq!(fs::read_dir(&sub).unwrap().count(), 0, "temp file left");
        dir::write_block(root.path(), &hash, b"foo").unwrap();
        dir::scan(root.path(), &hash.to_hex()[..5], &mut |f| seen.push(f)).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].size, 3);
        assert!(seen[0].mtime_ns > 0);
        assert_eq!(
            fs::read(dir::block_path(root.path(), &hash)).unwrap(),
            b"foo"
        );
        seen.clear();
        dir::scan(root.path(), "0000", &mut |f| seen.push(f)).unwrap();
        assert!(seen.is_empty() || hash.has_prefix("0000"));
    }
}
