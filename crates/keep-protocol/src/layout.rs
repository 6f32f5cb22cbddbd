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

    /// Every live block of the volume at `root` whose hash starts with
    /// `prefix`, in no particular order, given to `found`. Regular files
    /// only, at most 64 MiB; a subdirectory that vanishes mid-scan is
    /// skipped. An unreadable ROOT or subdirectory is an error, naming it.
    pub fn scan(root: &Path, prefix: &str, found: &mut dyn FnMut(Found)) -> io::Result<()> {
        let named =
            |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
        let subdirs: Vec<String> = if prefix.len() >= 3 {
            vec![prefix[..3].to_string()]
        } else {
            let mut v = Vec::new();
            for d in fs::read_dir(root).map_err(|e| named(e, root))? {
                let d = d.map_err(|e| named(e, root))?;
                if let Some(name) = d.file_name().to_str() {
                    if subdir_may_hold(name, prefix) {
                        v.push(name.to_string());
                    }
                }
            }
            v
        };
        for sub in subdirs {
            let dir = root.join(&sub);
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // A file named like a subdirectory: not ours to read.
                Err(_) if !dir.is_dir() => continue,
                Err(e) => return Err(named(e, &dir)),
            };
            for f in rd {
                let f = f.map_err(|e| named(e, &dir))?;
                let name = f.file_name();
                let Some(hash) = name.to_str().and_then(|n| block_of(&sub, n)) else {
                    continue;
                };
                if !hash.has_prefix(prefix) {
                    continue;
                }
                let md = match f.metadata() {
                    Ok(md) => md,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(named(e, &f.path())),
                };
                if !md.is_file() || md.len() > MAX_BLOCK_SIZE {
                    continue;
                }
                found(Found {
                    hash,
                    size: md.len(),
                    mtime_ns: mtime_ns(&md),
                });
            }
        }
        Ok(())
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
