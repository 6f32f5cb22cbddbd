//! Block storage of one simulated keepstore: in memory, or a keepstore-style
//! directory volume (`ROOT/XYZ/HASH`, protocol §9) that survives a restart.
//!
//! The store knows nothing about HTTP, signatures or faults; the handlers in
//! `server.rs` and the direct test helpers on `Cluster` both use it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::protocol::BlockHash;

/// One index entry: hash, size in bytes, mtime in unix nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub hash: BlockHash,
    pub size: u64,
    pub mtime_ns: u64,
}

/// Where a service keeps its blocks.
pub enum Store {
    Memory(RwLock<BTreeMap<BlockHash, (Bytes, u64)>>),
    Dir(PathBuf),
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// A memory store, or a directory store rooted at `root` (created).
    pub fn open(root: Option<PathBuf>) -> io::Result<Store> {
        match root {
            None => Ok(Store::Memory(RwLock::new(BTreeMap::new()))),
            Some(dir) => {
                fs::create_dir_all(&dir)?;
                Ok(Store::Dir(dir))
            }
        }
    }

    /// Whether operations touch the disk (callers then move them off the
    /// async runtime).
    pub fn is_dir(&self) -> bool {
        matches!(self, Store::Dir(_))
    }

    fn path(root: &Path, h: &BlockHash) -> PathBuf {
        let hex = h.to_hex();
        root.join(&hex[..3]).join(hex)
    }

    /// Store `data` under `h`; an existing block is only touched.
    pub fn put(&self, h: &BlockHash, data: Bytes) -> io::Result<()> {
        match self {
            Store::Memory(m) => {
                let mut m = write(m);
                let now = now_ns();
                // Like keepstore: a copy that still matches its hash is only
                // touched; one that does not (disk corruption) is replaced.
                m.entry(*h)
                    .and_modify(|e| {
                        if BlockHash::of(&e.0) != *h {
                            e.0 = data.clone();
                        }
                        e.1 = now
                    })
                    .or_insert((data, now));
                Ok(())
            }
            Store::Dir(root) => {
                let path = Self::path(root, h);
                if fs::read(&path).is_ok_and(|old| BlockHash::of(&old) == *h) {
                    let f = fs::OpenOptions::new().append(true).open(&path)?;
                    return f.set_modified(SystemTime::now());
                }
                let dir = path.parent().unwrap_or(root);
                fs::create_dir_all(dir)?;
                let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
                let tmp = dir.join(format!(".tmp-{}-{}-{}", h, std::process::id(), seq));
                fs::write(&tmp, &data)?;
                fs::rename(&tmp, &path).inspect_err(|_| {
                    let _ = fs::remove_file(&tmp);
                })
            }
        }
    }

    /// The block's bytes, if held.
    pub fn get(&self, h: &BlockHash) -> io::Result<Option<Bytes>> {
        match self {
            Store::Memory(m) => Ok(read(m).get(h).map(|e| e.0.clone())),
            Store::Dir(root) => match fs::read(Self::path(root, h)) {
                Ok(v) => Ok(Some(Bytes::from(v))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Whether the block is held.
    pub fn contains(&self, h: &BlockHash) -> bool {
        match self {
            Store::Memory(m) => read(m).contains_key(h),
            Store::Dir(root) => Self::path(root, h).is_file(),
        }
    }

    /// Remove the block; whether it was there.
    pub fn remove(&self, h: &BlockHash) -> bool {
        match self {
            Store::Memory(m) => write(m).remove(h).is_some(),
            Store::Dir(root) => fs::remove_file(Self::path(root, h)).is_ok(),
        }
    }

    /// Flip one byte of the stored block (the middle one); whether it was
    /// there and not empty. The mtime is kept as it was.
    pub fn corrupt(&self, h: &BlockHash) -> bool {
        match self {
            Store::Memory(m) => {
                let mut m = write(m);
                match m.get_mut(h) {
                    Some(e) if !e.0.is_empty() => {
                        let mut v = e.0.to_vec();
                        let i = v.len() / 2;
                        v[i] ^= 0x01;
                        e.0 = Bytes::from(v);
                        true
                    }
                    _ => false,
                }
            }
            Store::Dir(root) => {
                let path = Self::path(root, h);
                let Ok(mut v) = fs::read(&path) else {
                    return false;
                };
                if v.is_empty() {
                    return false;
                }
                let i = v.len() / 2;
                v[i] ^= 0x01;
                fs::write(&path, v).is_ok()
            }
        }
    }

    /// Every held block whose hash starts with `prefix`, sorted by hash.
    pub fn list(&self, prefix: &str) -> io::Result<Vec<Entry>> {
        match self {
            Store::Memory(m) => Ok(read(m)
                .iter()
                .filter(|(h, _)| h.has_prefix(prefix))
                .map(|(h, (d, t))| Entry {
                    hash: *h,
                    size: d.len() as u64,
                    mtime_ns: *t,
                })
                .collect()),
            Store::Dir(root) => {
                let mut out = Vec::new();
                let dirs: Vec<PathBuf> = if prefix.len() >= 3 {
                    vec![root.join(&prefix[..3])]
                } else {
                    let mut v = Vec::new();
                    for e in fs::read_dir(root)? {
                        let e = e?;
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        if name.len() == 3
                            && name.starts_with(prefix)
                            && crate::protocol::is_valid_prefix(&name)
                        {
                            v.push(e.path());
                        }
                    }
                    v
                };
                for d in dirs {
                    let rd = match fs::read_dir(&d) {
                        Ok(rd) => rd,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    for e in rd {
                        let e = e?;
                        let name = e.file_name();
                        // Only live blocks: exactly 32 hex digits (skips
                        // `HASH.trash.DEADLINE` and our temp files).
                        let Some(hash) = BlockHash::from_hex(name.as_encoded_bytes()) else {
                            continue;
                        };
                        if !hash.has_prefix(prefix) {
                            continue;
                        }
                        let Ok(md) = e.metadata() else { continue };
                        if !md.is_file() {
                            continue;
                        }
                        let mtime_ns = md
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                            .map(|d| d.as_nanos() as u64)
                            .unwrap_or(0);
                        out.push(Entry {
                            hash,
                            size: md.len(),
                            mtime_ns,
                        });
                    }
                }
                out.sort_unstable_by_key(|e| e.hash);
                Ok(out)
            }
        }
    }
}
