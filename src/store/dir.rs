//! A keepstore Directory volume as a store (`--src-volume-dir`,
//! `--dst-volume-dir`, or `Driver: Directory` in a `--*-volumes` file):
//! `ROOT/XYZ/HASH`, laid out by `keep_protocol::layout::dir`, the same code
//! keepstore-sim's directory store uses (docs/protocol.md, "Volume layouts").
//!
//! Reads stream the file in 1 MiB chunks (checked by the copy pipeline like
//! any read). Writes go to a temp file beside the block's name, which is
//! fsynced, stamped with the current time (the block's timestamp: never the
//! source's, or keep-balance could find a fresh copy old enough to trash) and
//! renamed over the name only once the body ended whole and verified. The
//! fsync, rename and directory fsync are the write's *finish*
//! ([`super::Staged`]): the copy runs it after freeing the block's buffer.
//! Filesystem work runs on the blocking pool, never on async workers.
//!
//! As keepstore (unix_volume.go): a volume whose `ROOT/full` marker is
//! less than an hour old, or with less than one block (64 MiB) free, is
//! `Full` (the block goes to the next volume; the latter also sets the
//! marker, as keepstore's own check does), and `Serialize: true` lets one
//! read or write at a time touch the volume.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};

use super::{BlockStream, Body, Staged, VolumeTraits};
use crate::protocol::client::{Failure, FailureKind, PutOk};
use crate::protocol::index::Entry;
use crate::protocol::layout::dir as layout;
use crate::protocol::BlockHash;

/// Bytes read from a block file at a time.
const CHUNK: usize = 1 << 20;

/// One directory volume.
pub struct DirVolume {
    /// The volume uuid, or `volume-N` for a `--*-volume-dir` (N its place on
    /// the command line).
    pub id: String,
    /// The directory holding the 3-hex-digit subdirectories.
    pub root: PathBuf,
    pub traits: VolumeTraits,
    /// `Serialize: true`: held by each read (while its file is read) and
    /// each write (while its file is written and renamed).
    serial: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Bytes free for this user at ROOT (`statvfs`; a seam for tests).
    free_space: FreeSpace,
    /// Called inside each write's serialized section (tests count overlaps).
    #[cfg(test)]
    on_write: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// How a volume's free space is measured.
pub type FreeSpace = fn(&Path) -> std::io::Result<u64>;

/// keepstore's free-space floor: one block (`BlockSize`, 64 MiB).
pub const FREE_SPACE_FLOOR: u64 = crate::protocol::MAX_BLOCK_SIZE;

/// How long a `ROOT/full` marker keeps a volume full (keepstore: an hour).
pub const FULL_MARKER_TTL: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for DirVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirVolume")
            .field("id", &self.id)
            .field("root", &self.root)
            .field("traits", &self.traits)
            .field("serialize", &self.serial.is_some())
            .finish()
    }
}

/// Bytes available to unprivileged users on the filesystem holding `root`
/// (`f_bavail × f_frsize`, what keepstore's `Bavail × Bsize` means).
pub fn statvfs_free(root: &Path) -> std::io::Result<u64> {
    #[cfg(unix)]
    {
        let st = rustix::fs::statvfs(root)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = root;
        Ok(u64::MAX)
    }
}

/// The unix time a `ROOT/full` marker holds: a symlink whose target is the
/// decimal seconds (keepstore's form), or, leniently, a file holding them.
fn full_marker_time(root: &Path) -> Option<u64> {
    let marker = root.join("full");
    let text = match std::fs::read_link(&marker) {
        Ok(t) => t.into_os_string().into_string().ok()?,
        Err(_) => std::fs::read_to_string(&marker).ok()?,
    };
    text.trim().parse().ok()
}

/// Why the volume takes no block now, as keepstore's `isFull`: a
/// `ROOT/full` marker less than an hour old, or less than one block
/// free (then the marker is set, as keepstore sets it, so that it and
/// other writers skip the volume for the hour). A free space that
/// cannot be measured is not full (keepstore's rule too).
fn full(id: &str, root: &Path, free_space: FreeSpace) -> Option<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if let Some(t) = full_marker_time(root) {
        if now.saturating_sub(t) < FULL_MARKER_TTL.as_secs() {
            return Some(format!(
                "volume {} is marked full: {}/full is {}s old (keepstore takes no block on \
                 a volume marked full less than an hour ago); blocks go to the next volume",
                id,
                root.display(),
                now.saturating_sub(t)
            ));
        }
    }
    let free = free_space(root).ok()?;
    if free >= FREE_SPACE_FLOOR {
        return None;
    }
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink(now.to_string(), root.join("full"));
    Some(format!(
        "volume {} is full: {free} bytes free at {}, less than one block (64 MiB, \
         keepstore's floor); marked {}/full as keepstore does; blocks go to the next volume",
        id,
        root.display(),
        root.display()
    ))
}

/// A filesystem error as a failure: a full disk is `Full` (the next volume
/// is written instead), a missing file `NotFound`, the rest refusals.
fn io_failure(e: &std::io::Error, what: String) -> Failure {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => FailureKind::NotFound,
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => FailureKind::Full,
        _ => FailureKind::Rejected,
    };
    Failure::new(kind, format!("{what}: {e}"))
}

/// A scan that failed: transient when the error kind may pass (NFS's
/// EBADCOOKIE, EIO, ESTALE, already retried per subdirectory, as keepstore
/// does: the index retries the whole listing), otherwise a refusal. Never
/// `Malformed`: nothing was misread, and no partial listing is kept.
fn list_failure(e: &std::io::Error) -> Failure {
    if layout::is_transient(e) {
        Failure::new(
            FailureKind::Transient,
            format!(
                "cannot list the volume: {e}. Check the filesystem (an NFS mount's server, or \
                 the disk's kernel log), then rerun"
            ),
        )
    } else {
        Failure::new(
            FailureKind::Rejected,
            format!("cannot list the volume: {e}"),
        )
    }
}

/// Run filesystem work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Failure::new(
            FailureKind::Rejected,
            format!("I/O task failed: {e}"),
        ))
    })
}

/// Tests only (debug builds): with `KEEP_RSYNC_TEST_FINISH_GATE=PATH` set,
/// each write's finish (fsync, rename) waits until PATH exists, so that a
/// test can see how many blocks are written but not yet finished.
#[cfg(debug_assertions)]
fn finish_gate() {
    static GATE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let gate =
        GATE.get_or_init(|| std::env::var_os("KEEP_RSYNC_TEST_FINISH_GATE").map(PathBuf::from));
    if let Some(gate) = gate {
        while !gate.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl DirVolume {
    /// The volume at `root`; `serialize` is its `Serialize` parameter.
    pub fn new(id: String, root: PathBuf, traits: VolumeTraits, serialize: bool) -> DirVolume {
        DirVolume {
            id,
            root,
            traits,
            serial: serialize.then(|| Arc::new(tokio::sync::Mutex::new(()))),
            free_space: statvfs_free,
            #[cfg(test)]
            on_write: None,
        }
    }

    /// Measure free space with `f` instead of `statvfs` (tests).
    pub fn with_free_space(mut self, f: FreeSpace) -> DirVolume {
        self.free_space = f;
        self
    }

    /// What to fix when the volume refuses a request (`f`): its files'
    /// permissions, never a token.
    pub(super) fn refused_advice(&self, role: crate::role::Role, f: &Failure) -> String {
        format!(
            "the {role} Directory volume {} refuses our requests ({f}): check that {} and the \
             files under it can be read (and, on the destination, written) by the user \
             keep-rsync runs as.",
            self.id,
            self.root.display()
        )
    }

    pub(super) async fn list(
        &self,
        prefix: &str,
        answered: &AtomicBool,
        mut into: Vec<Entry>,
    ) -> Result<(Vec<Entry>, u64), Failure> {
        let (root, prefix) = (self.root.clone(), prefix.to_string());
        answered.store(true, Ordering::Relaxed);
        blocking(move || {
            let mut lines = 0u64;
            layout::scan(&root, &prefix, &mut |f| {
                lines += 1;
                into.push(Entry {
                    hash: f.hash,
                    size: f.size as u32,
                });
            })
            .map_err(|e| list_failure(&e))?;
            Ok((into, lines))
        })
        .await
    }

    pub(super) async fn head(&self, hash: &BlockHash) -> Result<u64, Failure> {
        let path = layout::block_path(&self.root, hash);
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(_) => Err(Failure::new(
                FailureKind::NotFound,
                format!("{} is not a file", path.display()),
            )),
            Err(e) => Err(io_failure(&e, format!("cannot read {}", path.display()))),
        })
        .await
    }

    pub(super) async fn read(&self, hash: &BlockHash, size: u64) -> Result<BlockStream, Failure> {
        // Serialize: held until the stream is dropped (read or abandoned).
        let guard = match &self.serial {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        };
        let path = layout::block_path(&self.root, hash);
        let shown = path.display().to_string();
        let file = blocking(move || {
            let f = std::fs::File::open(&path)
                .map_err(|e| io_failure(&e, format!("cannot read {}", path.display())))?;
            let len = f
                .metadata()
                .map_err(|e| io_failure(&e, format!("cannot read {}", path.display())))?
                .len();
            if len != size {
                return Err(Failure::new(
                    FailureKind::BadData,
                    format!(
                        "corrupt file {}: {len} bytes where its locator says {size} (not copied)",
                        path.display()
                    ),
                ));
            }
            Ok(f)
        })
        .await?;
        let reader =
            tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), CHUNK);
        Ok(reader
            .map(move |r| {
                let _held = &guard;
                r.map_err(|e| {
                    Failure::new(FailureKind::BadData, format!("reading {shown} failed: {e}"))
                })
            })
            .boxed())
    }

    /// A whole write, its finish awaited (tests).
    #[cfg(test)]
    pub(super) async fn write(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
    ) -> Result<PutOk, Failure> {
        self.write_staged(hash, size, body).await?.wait().await
    }

    /// Write the body to a temp file; the answer's finish fsyncs it,
    /// renames it over the block's name and fsyncs the directory
    /// ([`layout::TempBlock::commit`]). Dropping the finish unrun removes
    /// the temp file. A `Serialize` volume does all of it here, under its
    /// lock.
    pub(super) async fn write_staged(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
    ) -> Result<Staged<'static>, Failure> {
        if self.serial.is_some() {
            return Ok(Staged::done(self.write_serialized(hash, size, body).await?));
        }
        let (id, root, h, free) = (self.id.clone(), self.root.clone(), *hash, self.free_space);
        let shown = layout::block_path(&self.root, hash).display().to_string();
        let what = shown.clone();
        let mut tmp = blocking(move || {
            if let Some(why) = full(&id, &root, free) {
                return Err(Failure::new(FailureKind::Full, why));
            }
            layout::TempBlock::create(&root, &h)
                .map_err(|e| io_failure(&e, format!("cannot create a temp file beside {what}")))
        })
        .await?;
        let mut body = body.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Failure::new(FailureKind::Abandoned, e.to_string()))?;
            let what = shown.clone();
            tmp = blocking(move || {
                tmp.write(&chunk)
                    .map_err(|e| io_failure(&e, format!("cannot write {what}")))?;
                Ok(tmp)
            })
            .await?;
        }
        if tmp.written() != size {
            // Dropping the temp file removes it: nothing is visible.
            return Err(Failure::new(
                FailureKind::Abandoned,
                format!("the body ended after {} of {size} bytes", tmp.written()),
            ));
        }
        let finish = blocking(move || {
            #[cfg(debug_assertions)]
            finish_gate();
            tmp.commit(SystemTime::now())
                .map_err(|e| io_failure(&e, format!("cannot store {shown}")))
        });
        Ok(Staged {
            ok: super::volume_put_ok(&self.traits),
            finish: Some(finish.boxed()),
            request: false,
        })
    }

    /// A write on a `Serialize` volume: the body is gathered first (its
    /// chunks are the block's own buffers, already counted by the copy's
    /// byte budget), so the lock is held only while the file is written
    /// and renamed, never while a slow source sends it.
    async fn write_serialized(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
    ) -> Result<PutOk, Failure> {
        let mut chunks = Vec::new();
        let mut got = 0u64;
        let mut body = body.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Failure::new(FailureKind::Abandoned, e.to_string()))?;
            got += chunk.len() as u64;
            chunks.push(chunk);
        }
        if got != size {
            return Err(Failure::new(
                FailureKind::Abandoned,
                format!("the body ended after {got} of {size} bytes"),
            ));
        }
        let guard = match &self.serial {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        };
        let (id, root, h, free) = (self.id.clone(), self.root.clone(), *hash, self.free_space);
        #[cfg(test)]
        let hook = self.on_write.clone();
        let shown = layout::block_path(&self.root, hash).display().to_string();
        blocking(move || {
            let _held = guard;
            #[cfg(test)]
            if let Some(hook) = hook {
                hook();
            }
            if let Some(why) = full(&id, &root, free) {
                return Err(Failure::new(FailureKind::Full, why));
            }
            let mut tmp = layout::TempBlock::create(&root, &h)
                .map_err(|e| io_failure(&e, format!("cannot create a temp file beside {shown}")))?;
            for c in &chunks {
                tmp.write(c)
                    .map_err(|e| io_failure(&e, format!("cannot write {shown}")))?;
            }
            tmp.commit(SystemTime::now())
                .map_err(|e| io_failure(&e, format!("cannot store {shown}")))
        })
        .await?;
        Ok(super::volume_put_ok(&self.traits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(root: &std::path::Path) -> DirVolume {
        DirVolume::new(
            "volume-0".into(),
            root.to_path_buf(),
            VolumeTraits {
                replication: 1,
                classes: vec!["default".into()],
                ..Default::default()
            },
            false,
        )
    }

    fn whole(data: &'static [u8]) -> Body {
        Body::Whole(vec![bytes::Bytes::from_static(data)])
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A `ROOT/full` marker under an hour old makes a write `Full`; an
    /// older one does not.
    #[tokio::test]
    async fn a_fresh_full_marker_refuses_writes_and_a_stale_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let v = vol(dir.path()).with_free_space(|_| Ok(u64::MAX));
        let h = BlockHash::of(b"foobar");
        let marker = dir.path().join("full");
        std::os::unix::fs::symlink((now_secs() - 60).to_string(), &marker).unwrap();
        let e = v.write(&h, 6, whole(b"foobar")).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Full, "{e}");
        assert!(
            e.detail.contains("volume-0") && e.detail.contains("full"),
            "{e}"
        );
        assert!(!layout::block_path(dir.path(), &h).exists());
        std::fs::remove_file(&marker).unwrap();
        std::os::unix::fs::symlink((now_secs() - 3700).to_string(), &marker).unwrap();
        v.write(&h, 6, whole(b"foobar")).await.unwrap();
        assert!(layout::block_path(dir.path(), &h).is_file());
        // A marker that holds no time is no marker.
        std::fs::remove_file(&marker).unwrap();
        std::os::unix::fs::symlink("soon", &marker).unwrap();
        v.write(&h, 6, whole(b"foobar")).await.unwrap();
    }

    /// Less than one block free is `Full`, and sets the marker as keepstore
    /// does; free space that cannot be measured is not full.
    #[tokio::test]
    async fn below_the_free_space_floor_is_full_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let h = BlockHash::of(b"foobar");
        let v = vol(dir.path()).with_free_space(|_| Ok(FREE_SPACE_FLOOR - 1));
        let e = v.write(&h, 6, whole(b"foobar")).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Full, "{e}");
        assert!(e.detail.contains("64 MiB"), "{e}");
        let t: u64 = std::fs::read_link(dir.path().join("full"))
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(now_secs().abs_diff(t) < 10);
        std::fs::remove_file(dir.path().join("full")).unwrap();
        let v = vol(dir.path()).with_free_space(|_| Ok(FREE_SPACE_FLOOR));
        v.write(&h, 6, whole(b"foobar")).await.unwrap();
        let v = vol(dir.path()).with_free_space(|_| Err(std::io::Error::other("no statvfs")));
        v.write(&h, 6, whole(b"foobar")).await.unwrap();
        assert!(!dir.path().join("full").exists());
        // The real statvfs answers for a real directory.
        assert!(statvfs_free(dir.path()).unwrap() > 0);
    }

    /// With `Serialize`, no two writes are ever inside their file work at
    /// once. The first to enter waits (up to 0.5 s) for another to join it,
    /// so without the lock they always overlap; with it none can.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serialized_writes_never_overlap() {
        use std::sync::atomic::AtomicU32;
        for serialize in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut v = DirVolume::new(
                "volume-0".into(),
                dir.path().to_path_buf(),
                VolumeTraits::default(),
                serialize,
            )
            .with_free_space(|_| Ok(u64::MAX));
            let inside = Arc::new(AtomicU32::new(0));
            let most = Arc::new(AtomicU32::new(0));
            let (i, m) = (inside.clone(), most.clone());
            v.on_write = Some(Arc::new(move || {
                let n = i.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(n, Ordering::SeqCst);
                let t = std::time::Instant::now();
                while i.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_millis(500) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                i.fetch_sub(1, Ordering::SeqCst);
            }));
            if !serialize {
                // The hook runs in serialized writes only: take that path
                // without the lock.
                v.serial = None;
                let v = Arc::new(v);
                let (a, b) = (v.clone(), v.clone());
                let w = |v: Arc<DirVolume>, d: &'static [u8]| async move {
                    v.write_serialized(&BlockHash::of(d), d.len() as u64, whole(d))
                        .await
                };
                let (x, y) = tokio::join!(w(a, b"one"), w(b, b"two"));
                x.unwrap();
                y.unwrap();
                assert_eq!(most.load(Ordering::SeqCst), 2, "the probe sees overlaps");
                continue;
            }
            let v = Arc::new(v);
            let writes = (0..4u8).map(|n| {
                let v = v.clone();
                tokio::spawn(async move {
                    let data = vec![n; 10];
                    let h = BlockHash::of(&data);
                    v.write(&h, 10, Body::Whole(vec![data.into()])).await
                })
            });
            for w in futures::future::join_all(writes).await {
                w.unwrap().unwrap();
            }
            assert_eq!(most.load(Ordering::SeqCst), 1, "two writes overlapped");
        }
    }

    /// With `Serialize`, a read holds the lock until its stream is dropped.
    #[tokio::test]
    async fn a_serialized_read_holds_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let v = DirVolume::new(
            "v".into(),
            dir.path().to_path_buf(),
            VolumeTraits::default(),
            true,
        )
        .with_free_space(|_| Ok(u64::MAX));
        let h = BlockHash::of(b"foobar");
        v.write(&h, 6, whole(b"foobar")).await.unwrap();
        let stream = v.read(&h, 6).await.unwrap();
        let lock = v.serial.clone().unwrap();
        assert!(lock.try_lock().is_err(), "a read in progress holds it");
        drop(stream);
        assert!(lock.try_lock().is_ok());
    }

    /// A scan error that persisted through keepstore's retries is a
    /// transient failure (the index retries it and then stops the run as
    /// unreadable), never a malformed listing; others are refusals.
    #[test]
    fn scan_errors_are_not_malformed_listings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("abc")).unwrap();
        let mut fail = |d: &std::path::Path| {
            if d.ends_with("abc") {
                Err(std::io::Error::from_raw_os_error(523))
            } else {
                layout::read_names(d)
            }
        };
        let e = layout::scan_with(dir.path(), "", &mut fail, &mut |_| {}).unwrap_err();
        let f = list_failure(&e);
        assert_eq!(f.kind, FailureKind::Transient, "{f}");
        assert!(f.detail.contains("abc"), "{f}");
        let f = list_failure(&std::io::Error::from_raw_os_error(13));
        assert_eq!(f.kind, FailureKind::Rejected, "{f}");
    }

    /// A block file that is a symlink is listed, found and read as its
    /// target (keepstore's stat and open follow it).
    #[tokio::test]
    async fn a_symlinked_block_is_listed_found_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let v = vol(dir.path());
        let h = BlockHash::of(b"foobar");
        std::fs::write(elsewhere.path().join("data"), b"foobar").unwrap();
        std::fs::create_dir_all(layout::block_dir(dir.path(), &h)).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("data"),
            layout::block_path(dir.path(), &h),
        )
        .unwrap();
        let (got, lines) = v
            .list("", &AtomicBool::new(false), Vec::new())
            .await
            .unwrap();
        assert_eq!(lines, 1);
        assert_eq!(got, vec![Entry { hash: h, size: 6 }]);
        assert_eq!(v.head(&h).await.unwrap(), 6);
        let read: Vec<_> = v.read(&h, 6).await.unwrap().collect().await;
        assert_eq!(&read[0].as_ref().unwrap()[..], b"foobar");
    }

    #[tokio::test]
    async fn a_failed_body_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let v = vol(dir.path());
        let h = BlockHash::of(b"foobar");
        let broken = futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"foo")),
            Err(super::super::ReadFailed),
        ])
        .boxed();
        let e = v.write(&h, 6, Body::Follow(broken)).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Abandoned);
        let sub = layout::block_dir(dir.path(), &h);
        assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 0);
        // A short body is not stored either.
        let short = Body::Whole(vec![bytes::Bytes::from_static(b"foo")]);
        assert!(v.write(&h, 6, short).await.is_err());
        assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 0);
        let ok = Body::Whole(vec![bytes::Bytes::from_static(b"foobar")]);
        let put = v.write(&h, 6, ok).await.unwrap();
        assert_eq!(put.replicas, 1);
        assert_eq!(v.head(&h).await.unwrap(), 6);
        let got: Vec<_> = v.read(&h, 6).await.unwrap().collect().await;
        assert_eq!(&got[0].as_ref().unwrap()[..], b"foobar");
        assert_eq!(
            v.read(&h, 7).await.err().unwrap().kind,
            FailureKind::BadData
        );
    }
}
