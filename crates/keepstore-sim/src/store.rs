//! Block storage of one simulated keepstore: in memory, or a keepstore-style
//! directory volume (`ROOT/XYZ/HASH`, docs/protocol.md, "Volume layouts") that survives a restart,
//! laid out and written by `keep_protocol::layout::dir`, the code keep-rsync's
//! directory volumes use.
//!
//! The store knows nothing about HTTP, signatures or faults; the handlers in
//! `server.rs` and the direct test helpers on `Cluster` both use it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use keep_protocol::BlockHash;

/// One index entry: hash, size in bytes, mtime in unix nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub hash: BlockHash,
    pub size: u64,
    pub mtime_ns: u64,
}

/// A stored block's bytes.
#[derive(Clone, Debug)]
pub enum Data {
    /// The bytes, in one buffer.
    Whole(Bytes),
    /// A head shared by many blocks, then this block's own tail
    /// (`--seed-shared-data`: many 64 MiB blocks in the memory of one).
    Split(Bytes, Bytes),
    /// Only the size (`--discard-data`): listed, never served.
    Dropped(u64),
}

impl Data {
    pub fn len(&self) -> u64 {
        match self {
            Data::Whole(b) => b.len() as u64,
            Data::Split(h, t) => (h.len() + t.len()) as u64,
            Data::Dropped(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in one buffer (a copy for `Split`); `None` when dropped.
    pub fn to_bytes(&self) -> Option<Bytes> {
        match self {
            Data::Whole(b) => Some(b.clone()),
            Data::Split(h, t) => Some(Bytes::from([&h[..], &t[..]].concat())),
            Data::Dropped(_) => None,
        }
    }

    /// The bytes as they are held, without a copy; `None` when dropped.
    pub fn chunks(&self) -> Option<Vec<Bytes>> {
        match self {
            Data::Whole(b) => Some(vec![b.clone()]),
            Data::Split(h, t) => Some(vec![h.clone(), t.clone()]),
            Data::Dropped(_) => None,
        }
    }

    /// Whether the bytes hash to `h` (dropped and shared data is trusted).
    fn intact(&self, h: &BlockHash) -> bool {
        match self {
            Data::Whole(b) => BlockHash::of(b) == *h,
            _ => true,
        }
    }
}

/// Where a service keeps its blocks.
pub enum Store {
    /// In memory; with `discard`, blocks written over HTTP keep only their
    /// size (a benchmark destination that must not fill the machine's RAM).
    Memory {
        blocks: RwLock<BTreeMap<BlockHash, (Data, u64)>>,
        discard: bool,
    },
    Dir(PathBuf),
}

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
    /// A memory store (keeping only sizes with `discard`), or a directory
    /// store rooted at `root` (created).
    pub fn open(root: Option<PathBuf>, discard: bool) -> io::Result<Store> {
        match root {
            None => Ok(Store::Memory {
                blocks: RwLock::new(BTreeMap::new()),
                discard,
            }),
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
        keep_protocol::layout::dir::block_path(root, h)
    }

    /// Store `data` under `h`; an existing block is only touched.
    pub fn put(&self, h: &BlockHash, data: Bytes) -> io::Result<()> {
        self.put_data(h, Data::Whole(data))
    }

    /// Store `data` under `h` (only its size in a discarding store).
    pub fn put_data(&self, h: &BlockHash, data: Data) -> io::Result<()> {
        match self {
            Store::Memory { blocks, discard } => {
                let data = match data {
                    Data::Whole(b) if *discard => Data::Dropped(b.len() as u64),
                    d => d,
                };
                let mut m = write(blocks);
                let now = now_ns();
                // Like keepstore: a copy that still matches its hash is only
                // touched; one that does not (disk corruption) is replaced.
                m.entry(*h)
                    .and_modify(|e| {
                        if !e.0.intact(h) {
                            e.0 = data.clone();
                        }
                        e.1 = now
                    })
                    .or_insert((data, now));
                Ok(())
            }
            Store::Dir(root) => {
                let Some(data) = data.to_bytes() else {
                    return Ok(());
                };
                let path = Self::path(root, h);
                if fs::read(&path).is_ok_and(|old| BlockHash::of(&old) == *h) {
                    let f = fs::OpenOptions::new().append(true).open(&path)?;
                    return f.set_modified(SystemTime::now());
                }
                keep_protocol::layout::dir::write_block(root, h, &data)
            }
        }
    }

    /// The block's bytes, if held (and not dropped).
    pub fn get(&self, h: &BlockHash) -> io::Result<Option<Bytes>> {
        Ok(self.get_data(h)?.and_then(|d| d.to_bytes()))
    }

    /// The block as it is held, if held.
    pub fn get_data(&self, h: &BlockHash) -> io::Result<Option<Data>> {
        match self {
            Store::Memory { blocks, .. } => Ok(read(blocks).get(h).map(|e| e.0.clone())),
            Store::Dir(root) => match fs::read(Self::path(root, h)) {
                Ok(v) => Ok(Some(Data::Whole(Bytes::from(v)))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Whether a copy of the block that matches its hash is held (a PUT
    /// only touches it; a damaged one is written over).
    pub fn holds_intact(&self, h: &BlockHash) -> bool {
        match self {
            Store::Memory { blocks, .. } => read(blocks).get(h).is_some_and(|e| e.0.intact(h)),
            Store::Dir(root) => {
                fs::read(Self::path(root, h)).is_ok_and(|b| BlockHash::of(&b) == *h)
            }
        }
    }

    /// Whether the block is held.
    pub fn contains(&self, h: &BlockHash) -> bool {
        match self {
            Store::Memory { blocks, .. } => read(blocks).contains_key(h),
            Store::Dir(root) => Self::path(root, h).is_file(),
        }
    }

    /// Remove the block; whether it was there.
    pub fn remove(&self, h: &BlockHash) -> bool {
        match self {
            Store::Memory { blocks, .. } => write(blocks).remove(h).is_some(),
            Store::Dir(root) => fs::remove_file(Self::path(root, h)).is_ok(),
        }
    }

    /// Flip one byte of the stored block (the middle one); whether it was
    /// there and not empty. The mtime is kept as it was.
    pub fn corrupt(&self, h: &BlockHash) -> bool {
        match self {
            Store::Memory { blocks, .. } => {
                let mut m = write(blocks);
                match m.get_mut(h).and_then(|e| Some((e.0.to_bytes()?, e))) {
                    Some((b, e)) if !b.is_empty() => {
                        let mut v = b.to_vec();
                        let i = v.len() / 2;
                        v[i] ^= 0x01;
                        e.0 = Data::Whole(Bytes::from(v));
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
            Store::Memory { blocks, .. } => Ok(read(blocks)
                .iter()
                .filter(|(h, _)| h.has_prefix(prefix))
                .map(|(h, (d, t))| Entry {
                    hash: *h,
                    size: d.len(),
                    mtime_ns: *t,
                })
                .collect()),
            Store::Dir(root) => {
                let mut out = Vec::new();
                keep_protocol::layout::dir::scan(root, prefix, &mut |f| {
                    out.push(Entry {
                        hash: f.hash,
                        size: f.size,
                        mtime_ns: f.mtime_ns,
                    })
                })?;
                out.sort_unstable_by_key(|e| e.hash);
                Ok(out)
            }
        }
    }
}
