//! The destination's write probe: before anything is listed, each writable
//! destination S3 volume takes an empty object under
//! `keep-rsync-probe/` (never a block key to keepstore) and has it deleted
//! again, so that a read-only credential, a bucket policy that refuses
//! PUTs or a missing bucket is one clear error (exit 3) at the start, not a
//! failure per planned block after a listing of hours. `--no-write-probe`
//! skips it; `--dry-run` writes nothing, so it does not probe either.
//! Directory volumes have their own check (a temp file, `sides::check_dir`).

use futures::StreamExt;

use super::Store;
use crate::error::{Error, Result};
use crate::progress::{Level, Reporter};
use crate::protocol::client::FailureKind;
use crate::role::Role;

/// Probe every writable S3 volume among `stores` (at most 8 at once). A
/// refused write is an error naming the volume and what to check; a
/// server that stays unreachable is left to the index stage (which reports
/// it down, and the run goes on without it); a probe object that could not
/// be deleted is a warning naming its key.
pub async fn probe_writes(stores: &[&Store], reporter: &dyn Reporter) -> Result<()> {
    let key = format!(
        "{}{}-{}",
        super::s3::PROBE_PREFIX,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let s3: Vec<&super::S3Volume> = (stores.iter())
        .filter(|s| s.writable())
        .filter_map(|s| match s {
            Store::S3(v) => Some(v),
            _ => None,
        })
        .collect();
    let outcomes: Vec<_> = futures::stream::iter(s3)
        .map(|v| {
            let key = &key;
            async move { (v, v.probe_write(key).await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (v, r) in outcomes {
        match r {
            Ok(None) => {
                tracing::info!(
                    event = "write_probe",
                    service = v.id.as_str(),
                    "write probe of the destination S3 volume {}: written and deleted",
                    v.id
                );
            }
            Ok(Some(f)) => reporter.log(
                Level::Warn,
                &format!(
                    "the write probe {key} on the destination S3 volume {} ({}) was written but \
                     could not be deleted ({f}): delete it by hand (keepstore ignores it)",
                    v.id,
                    v.location()
                ),
            ),
            Err(f) if f.is_transient() => {
                tracing::info!(
                    event = "write_probe",
                    service = v.id.as_str(),
                    error = %f,
                    "write probe of the destination S3 volume {}: unreachable ({f}); its index \
                     will tell",
                    v.id
                );
            }
            Err(f) => {
                let what = match f.kind {
                    FailureKind::NotFound => "check Bucket and Endpoint in the volumes file",
                    _ => {
                        "check that its credentials (AccessKeyID/SecretAccessKey, or the \
                         environment's) may write (PutObject) the bucket, or mark the volume \
                         ReadOnly in the volumes file"
                    }
                };
                return Err(Error::unreadable(format!(
                    "the destination S3 volume {} ({}) refused the write probe, an empty object \
                     {key} ({f}): no block could be written there. {}: {what}. (--no-write-probe \
                     skips this check.)",
                    v.id,
                    v.location(),
                    Role::Destination.nothing_done()
                )));
            }
        }
    }
    Ok(())
}
