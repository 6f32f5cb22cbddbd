//! Raw keepstore directory volumes as a source (`--src-volume-dir`), for
//! recovering the disks of a dead keepstore or a cluster with no working
//! servers (docs/protocol.md, "Volume layouts").
//!
//! A volume is `ROOT/XYZ/HASH`: XYZ the first three hex digits, the file the
//! raw block. `HASH.trash.DEADLINE` files are trash and temp files are
//! in-progress writes: neither is a live block. A volume is one kind of
//! endpoint (the other is a Keep service), so indexing, planning and copying
//! take the same paths as for keepstores. Every block read from a file is MD5-checked;
//! a corrupt file is reported and never copied.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::protocol::client::{Failure, FailureKind};
use crate::protocol::index::Entry;
use crate::protocol::{BlockHash, MAX_BLOCK_SIZE};

/// A keepstore directory volume read as a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// `volume-N`, N its place on the command line (names it in messages
    /// and weighs it in probe orders).
    pub id: String,
    /// The directory holding the 3-hex-digit subdirectories.
    pub root: PathBuf,
}

/// The volumes given with `--src-volume-dir`. Fails (exit 2) for a path
/// that is not a readable directory.
pub fn open_all(dirs: &[PathBuf]) -> Result<Vec<Volume>> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| {
            let meta = std::fs::metadata(d).map_err(|e| {
                Error::config(format!(
                    "--src-volume-dir {}: {e}. Give the root of a keepstore directory volume \
                     (the directory holding the 3-hex-digit subdirectories).",
                    d.display()
                ))
            })?;
            if !meta.is_dir() {
                return Err(Error::config(format!(
                    "--src-volume-dir {} is not a directory: give the root of a keepstore directory volume.",
                    d.display()
                )));
            }
            Ok(Volume {
                id: format!("volume-{i}"),
                root: d.canonicalize().unwrap_or_else(|_| d.clone()),
            })
        })
        .collect()
}

/// List the live blocks of `root` whose hash starts with `prefix`, and
/// their number.
pub fn index(root: &Path, prefix: &str) -> std::result::Result<(Vec<Entry>, u64), Failure> {
    let io = |e: std::io::Error, p: &Path| {
        Failure::new(
            FailureKind::Rejected,
            format!("cannot read {}: {e}", p.display()),
        )
    };
    let mut entries = Vec::new();
    let mut lines = 0u64;
    let dirs = std::fs::read_dir(root).map_err(|e| io(e, root))?;
    for d in dirs {
        let d = d.map_err(|e| io(e, root))?;
        let name = d.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_xyz =
            name.len() == 3 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        // Only subdirectories that can hold blocks with this prefix.
        let n = prefix.len().min(3);
        if !is_xyz || name[..n] != prefix[..n] || !d.path().is_dir() {
            continue;
        }
        let sub = d.path();
        for f in std::fs::read_dir(&sub).map_err(|e| io(e, &sub))? {
            let f = f.map_err(|e| io(e, &sub))?;
            let fname = f.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            let Some(hash) = BlockHash::from_hex(fname.as_bytes()) else {
                continue;
            };
            if !fname.starts_with(name) || !hash.has_prefix(prefix) {
                continue;
            }
            let meta = f.metadata().map_err(|e| io(e, &f.path()))?;
            if !meta.is_file() || meta.len() > MAX_BLOCK_SIZE {
                continue;
            }
            lines += 1;
            entries.push(Entry {
                hash,
                size: meta.len() as u32,
            });
        }
    }
    Ok((entries, lines))
}

/// The size of a block's file, unread (keep-block-check's `HEAD`).
pub fn block_size(root: &Path, hash: &BlockHash) -> std::result::Result<u64, Failure> {
    let name = hash.to_string();
    let path = root.join(&name[..3]).join(&name);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(m.len()),
        Ok(_) => Err(Failure::new(
            FailureKind::NotFound,
            format!("{} is not a file", path.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::new(
            FailureKind::NotFound,
            format!("no {}", path.display()),
        )),
        Err(e) => Err(Failure::new(
            FailureKind::Rejected,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Read one block file and check it against its hash and size.
pub fn read_block(root: &Path, hash: &BlockHash, size: u64) -> std::result::Result<Bytes, Failure> {
    let name = hash.to_string();
    let path = root.join(&name[..3]).join(&name);
    let data = std::fs::read(&path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            FailureKind::NotFound
        } else {
            FailureKind::Rejected
        };
        Failure::new(kind, format!("cannot read {}: {e}", path.display()))
    })?;
    if data.len() as u64 != size || BlockHash::of(&data) != *hash {
        // A bad file stays bad: not worth reading again.
        return Err(Failure::new(
            FailureKind::Rejected,
            format!(
                "corrupt file {}: its content does not match its name (not copied)",
                path.display()
            ),
        ));
    }
    Ok(Bytes::from(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_live_blocks_and_checks_content() {
        let dir = tempfile::tempdir().unwrap();
        let put = |data: &[u8]| {
            let h = BlockHash::of(data).to_string();
            std::fs::create_dir_all(dir.path().join(&h[..3])).unwrap();
            std::fs::write(dir.path().join(&h[..3]).join(&h), data).unwrap();
            h
        };
        let a = put(b"foo");
        let b = put(b"bar");
        let sub = dir.path().join(&a[..3]);
        std::fs::write(sub.join(format!("{a}.trash.1700000000")), b"foo").unwrap();
        std::fs::write(sub.join(format!("tmp{a}")), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("lost+found")).unwrap();
        let (_, lines) = index(dir.path(), "").unwrap();
        assert_eq!(lines, 2);
        let (only_a, _) = index(dir.path(), &a[..4]).unwrap();
        assert_eq!(only_a.len(), 1);
        assert_eq!(only_a[0].size, 3);
        let ha: BlockHash = a.parse().unwrap();
        assert_eq!(&read_block(dir.path(), &ha, 3).unwrap()[..], b"foo");
        // Corrupt the file: reported, never returned.
        std::fs::write(sub.join(&a), b"fox").unwrap();
        let e = read_block(dir.path(), &ha, 3).unwrap_err();
        assert!(e.detail.contains("corrupt"), "{e}");
        let hb: BlockHash = b.parse().unwrap();
        assert_eq!(
            read_block(dir.path(), &hb, 4).unwrap_err().kind,
            FailureKind::Rejected
        );
    }
}
