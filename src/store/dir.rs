//! A keepstore Directory volume as a store (`--src-volume-dir`,
//! `--dst-volume-dir`, or `Driver: Directory` in a `--*-volumes` file):
//! `ROOT/XYZ/HASH`, laid out by `keep_protocol::layout::dir`, the same code
//! keepstore-sim's directory store uses (docs/protocol.md, "Volume layouts").
//!
//! Reads stream the file in 1 MiB chunks (checked by the copy pipeline like
//! any read). Writes go to a temp file beside the block's name, which is
//! fsynced, stamped with the current time (the block's timestamp: never the
//! source's, or keep-balance could find a fresh copy old enough to trash) and
//! renamed over the name only once the body ended whole and verified.
//! Filesystem work runs on the blocking pool, never on async workers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use super::{BlockStream, Body, VolumeTraits};
use crate::protocol::client::{Failure, FailureKind, PutOk};
use crate::protocol::index::Entry;
use crate::protocol::layout::dir as layout;
use crate::protocol::BlockHash;

/// Bytes read from a block file at a time.
const CHUNK: usize = 1 << 20;

/// One directory volume.
#[derive(Debug)]
pub struct DirVolume {
    /// The volume uuid, or `volume-N` for a `--*-volume-dir` (N its place on
    /// the command line).
    pub id: String,
    /// The directory holding the 3-hex-digit subdirectories.
    pub root: PathBuf,
    pub traits: VolumeTraits,
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

impl DirVolume {
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
            .map_err(|e| {
                Failure::new(
                    FailureKind::Malformed,
                    format!("cannot list the volume: {e}"),
                )
            })?;
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
                r.map_err(|e| {
                    Failure::new(FailureKind::BadData, format!("reading {shown} failed: {e}"))
                })
            })
            .boxed())
    }

    pub(super) async fn write(
        &self,
        hash: &BlockHash,
        size: u64,
        body: Body,
    ) -> Result<PutOk, Failure> {
        let (root, h) = (self.root.clone(), *hash);
        let shown = layout::block_path(&self.root, hash).display().to_string();
        let what = shown.clone();
        let mut tmp = blocking(move || {
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
        let what = shown;
        blocking(move || {
            tmp.commit(std::time::SystemTime::now())
                .map_err(|e| io_failure(&e, format!("cannot store {what}")))
        })
        .await?;
        Ok(super::volume_put_ok(&self.traits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(root: &std::path::Path) -> DirVolume {
        DirVolume {
            id: "volume-0".into(),
            root: root.to_path_buf(),
            traits: VolumeTraits {
                replication: 1,
                classes: vec!["default".into()],
                ..Default::default()
            },
        }
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
