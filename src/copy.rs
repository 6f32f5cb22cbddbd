//! The copy pipeline: for each planned block, read it once from a source
//! service that holds it, verify length and MD5, and write it to the
//! destination in rendezvous order until the wanted replicas are confirmed.
//!
//! - Up to `--transfers` blocks are in flight; each service takes at most
//!   `--max-per-service` requests at a time. Memory is bounded by transfers ×
//!   block size: a block is held once, and replica PUTs share that buffer.
//! - Reads try holders in source probe order. Transient failures are retried
//!   with backoff on the same holder, then the next holder is tried; a 404 or
//!   refusal moves on at once; a short or corrupt body is fetched again,
//!   preferably from another holder. For a top-up, destination copies are a
//!   last resort when no source copy can be read.
//! - Writes go to the first writable services of the destination probe order
//!   that do not list the block yet, replicas in parallel; a failed service
//!   (after retries; 507 at once) is replaced by the next one in order.
//! - A failed block never stops the run: it is recorded with its reason.
//! - This module owns graceful cancellation: once `soft` is cancelled no new
//!   block starts and the blocks in flight finish.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use futures::stream::{self, FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::plan::{Action, Job};
use crate::progress::Reporter;
use crate::protocol::client::{with_retries, Backoff, BlockData, Failure, FailureKind};
use crate::protocol::probe_order;
use crate::report::{FailedBlock, ServiceStats, Stats};
use crate::services::Side;
use crate::throttle::Throttle;

/// How blocks are copied.
pub struct CopyOptions {
    pub want: u32,
    pub transfers: usize,
    pub retries: u32,
    pub backoff: Backoff,
    /// `--storage-classes`, as sent in `X-Keep-Storage-Classes`.
    pub storage_classes: Option<String>,
    pub throttle: Option<Throttle>,
}

/// Everything a block copy needs, shared by all transfers.
pub struct Copier<'a> {
    pub src: &'a Side,
    pub dst: &'a Side,
    pub opts: &'a CopyOptions,
    pub stats: &'a Stats,
    pub reporter: &'a dyn Reporter,
    /// Blocks started so far over all passes, and the planned total.
    pub ordinal: AtomicU64,
    pub total: AtomicU64,
}

/// Where a read candidate lives.
#[derive(Clone, Copy)]
enum From {
    Src(u16),
    Dst(u16),
}

/// A block-level failure: the service that decided it and why.
struct BlockError {
    service: String,
    reason: String,
}

impl<'a> Copier<'a> {
    /// Copy `jobs`, `--transfers` at a time, until done or `soft` is cancelled.
    pub async fn run(&self, jobs: Vec<Job>, soft: &CancellationToken) {
        stream::iter(jobs)
            .take_until(soft.cancelled())
            .map(|job| async move {
                let n = self.ordinal.fetch_add(1, Relaxed) + 1;
                self.reporter
                    .block_started(n, self.total.load(Relaxed), &job);
                let r = self.copy_one(&job).await;
                self.stats.blocks_done.fetch_add(1, Relaxed);
                (job, r)
            })
            .buffer_unordered(self.opts.transfers.max(1))
            .for_each(|(job, r)| async move {
                match r {
                    Ok(()) => self.reporter.block_finished(&job, None),
                    Err(e) => {
                        self.reporter.block_finished(&job, Some(&e.reason));
                        self.stats.fail(
                            FailedBlock {
                                locator: format!("{}+{}", job.hash, job.size),
                                action: job.action,
                                service: e.service,
                                reason: e.reason,
                            },
                            job.size as u64,
                        );
                    }
                }
            })
            .await;
    }

    async fn copy_one(&self, job: &Job) -> Result<(), BlockError> {
        match job.action {
            Action::Copy | Action::TopUp => {
                let data = self.read(job, &[]).await?;
                let need = self.opts.want.saturating_sub(job.replicas);
                self.write(job, data, &job.dst_holders, need).await?;
                let size = job.size as u64;
                if job.action == Action::Copy {
                    self.stats.copied.fetch_add(1, Relaxed);
                    self.stats.copied_bytes.fetch_add(size, Relaxed);
                } else {
                    self.stats.topped_up.fetch_add(1, Relaxed);
                    self.stats.topped_up_bytes.fetch_add(size, Relaxed);
                }
                Ok(())
            }
            Action::Verify => self.verify(job).await,
        }
    }

    /// `--verify-existing`: read back every destination copy the index lists;
    /// rewrite missing or corrupt ones from the source.
    async fn verify(&self, job: &Job) -> Result<(), BlockError> {
        let size = job.size as u64;
        let mut bad: Vec<u16> = Vec::new();
        for &d in job.dst_holders.iter() {
            let svc = &self.dst.services[d as usize];
            let r = self.get_from(From::Dst(d), job).await;
            match r {
                Ok(_) => {}
                Err(f) if matches!(f.kind, FailureKind::BadData | FailureKind::NotFound) => {
                    self.reporter.log(
                        crate::progress::Level::Warn,
                        &format!("{}+{size} on {}: {f}", job.hash, svc.label()),
                    );
                    bad.push(d)
                }
                Err(f) => {
                    return Err(BlockError {
                        service: svc.uuid.clone(),
                        reason: format!("could not verify: {f}"),
                    })
                }
            }
        }
        self.stats.verified.fetch_add(1, Relaxed);
        if bad.is_empty() {
            return Ok(());
        }
        self.stats.verify_bad.fetch_add(1, Relaxed);
        // Repair: rewrite the bad copies in place (keepstore replaces a copy
        // that fails its hash), then top up if the good ones are too few.
        let data = self.read(job, &bad).await?;
        let good: Vec<u16> = job
            .dst_holders
            .iter()
            .copied()
            .filter(|d| !bad.contains(d))
            .collect();
        let mut stored = 0;
        for &d in &bad {
            if self.put_to(d, job, data.clone(), 1).await.is_ok() {
                stored += 1;
            }
        }
        let good_count =
            crate::plan::count_replicas(&good, &self.dst.services, self.opts.want) + stored;
        if good_count < self.opts.want {
            let skip: Vec<u16> = job.dst_holders.to_vec();
            self.write(job, data, &skip, self.opts.want - good_count)
                .await?;
        }
        self.stats.repaired.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Read and verify the block. Candidates: source holders in probe order,
    /// then destination holders not in `exclude` (last resort).
    async fn read(&self, job: &Job, exclude: &[u16]) -> Result<BlockData, BlockError> {
        let mut cands: Vec<From> = job.sources.iter().map(|&s| From::Src(s)).collect();
        cands.extend(
            job.dst_holders
                .iter()
                .filter(|d| !exclude.contains(d))
                .map(|&d| From::Dst(d)),
        );
        if cands.is_empty() {
            return Err(BlockError {
                service: String::new(),
                reason: "no service holds a readable copy".into(),
            });
        }
        let mut dead = vec![false; cands.len()];
        let mut reasons: Vec<String> = Vec::new();
        let mut last_service = String::new();
        for round in 0..=self.opts.retries {
            for (k, &c) in cands.iter().enumerate() {
                if dead[k] {
                    continue;
                }
                let label = self.service_of(c).uuid.clone();
                match self.get_from(c, job).await {
                    Ok(data) => return Ok(data),
                    Err(f) => {
                        // Bad data may be a passing fault: try it again next
                        // round. Anything else that survived retries is final
                        // for this service.
                        if f.kind != FailureKind::BadData {
                            dead[k] = true;
                        }
                        reasons.push(format!("{label}: {f}"));
                        last_service = label;
                    }
                }
            }
            if dead.iter().all(|&d| d) {
                break;
            }
            if round < self.opts.retries {
                tokio::time::sleep(self.opts.backoff.delay(round)).await;
            }
        }
        reasons.dedup();
        Err(BlockError {
            service: last_service,
            reason: format!("could not read a good copy: {}", summarize(&reasons)),
        })
    }

    fn service_of(&self, c: From) -> &crate::services::KeepService {
        match c {
            From::Src(i) => &self.src.services[i as usize],
            From::Dst(i) => &self.dst.services[i as usize],
        }
    }

    /// GET (with retries for transient failures) from one service.
    async fn get_from(&self, c: From, job: &Job) -> Result<BlockData, Failure> {
        let (side, i, st) = match c {
            From::Src(i) => (self.src, i as usize, &self.stats.src),
            From::Dst(i) => (self.dst, i as usize, &self.stats.dst),
        };
        if side.is_down(i) {
            return Err(gone());
        }
        let url = side.services[i].url();
        let size = job.size as u64;
        let throttle = self.opts.throttle.as_ref();
        if side.services[i].service_type == crate::volume::VOLUME_TYPE {
            return self.read_volume(side, i, &st[i], job).await;
        }
        let r = with_retries(self.opts.backoff, self.opts.retries, |_| {
            let (url, side, st) = (&url, side, &st[i]);
            async move {
                let _permit = side.limits[i].acquire().await.ok();
                let loc = side.get_locator(&job.hash, size);
                let before = self.stats.bytes_read.load(Relaxed);
                let r = side
                    .client
                    .get_block(url, &loc, &job.hash, size, &self.stats.bytes_read, throttle)
                    .await;
                let got = self.stats.bytes_read.load(Relaxed).saturating_sub(before);
                self.reporter.bytes(got.min(size));
                count(st, &r, size);
                r
            }
        })
        .await;
        r.map_err(|(f, _)| self.note_down(side, i, f))
    }

    /// A service that refuses connections after all retries has died mid-run:
    /// mark it down so later blocks skip it at once instead of each paying
    /// the retries, and list it (the run then exits 1; a rerun completes).
    fn note_down(&self, side: &Side, i: usize, f: Failure) -> Failure {
        if f.kind == FailureKind::Unreachable && !side.down[i].swap(true, Relaxed) {
            let why = format!("stopped accepting connections mid-run: {f}");
            self.reporter.log(
                crate::progress::Level::Warn,
                &format!("{} service {}: {why}", side.role, side.services[i].label()),
            );
            self.stats.service_down(side.role, &side.services[i], &why);
        }
        f
    }

    /// Read a block file from a raw volume (`--src-volume-dir`), verified.
    async fn read_volume(
        &self,
        side: &Side,
        i: usize,
        st: &ServiceStats,
        job: &Job,
    ) -> Result<BlockData, Failure> {
        let root = std::path::PathBuf::from(&side.services[i].host);
        let (hash, size) = (job.hash, job.size as u64);
        let r = tokio::task::spawn_blocking(move || crate::volume::read_block(&root, &hash, size))
            .await
            .unwrap_or_else(|e| {
                Err(Failure::new(
                    FailureKind::Rejected,
                    format!("read failed: {e}"),
                ))
            });
        if let Some(t) = &self.opts.throttle {
            t.take(size).await;
        }
        match &r {
            Ok(_) => {
                self.stats.bytes_read.fetch_add(size, Relaxed);
                self.reporter.bytes(size);
            }
            Err(f) => self.reporter.log(crate::progress::Level::Warn, &f.detail),
        }
        count(st, &r, size);
        r.map(BlockData::from)
    }

    /// PUT to one destination service (with retries for transient failures).
    async fn put_to(
        &self,
        d: u16,
        job: &Job,
        data: BlockData,
        desired: u32,
    ) -> Result<u32, Failure> {
        let i = d as usize;
        if self.dst.is_down(i) {
            return Err(gone());
        }
        let url = self.dst.services[i].url();
        let classes = self.opts.storage_classes.as_deref();
        let size = job.size as u64;
        let r = with_retries(self.opts.backoff, self.opts.retries, |_| {
            let (url, data) = (&url, &data);
            async move {
                let _permit = self.dst.limits[i].acquire().await.ok();
                let r = self.dst.client.put_block(url, &job.hash, data, desired, classes).await;
                let r = r.and_then(|ok| match classes {
                    Some(want) if !classes_confirmed(want, ok.classes_confirmed.as_deref()) => Err(Failure::new(
                        FailureKind::Rejected,
                        format!(
                            "storage classes {want:?} not confirmed (X-Keep-Storage-Classes-Confirmed: {:?})",
                            ok.classes_confirmed.unwrap_or_default()
                        ),
                    )),
                    _ => Ok(ok.replicas),
                });
                count(&self.stats.dst[i], &r, size);
                r
            }
        })
        .await;
        match r {
            Ok(n) => {
                self.stats.replicas_written.fetch_add(n as u64, Relaxed);
                self.stats.bytes_written.fetch_add(size * n as u64, Relaxed);
                Ok(n)
            }
            Err((f, _)) => Err(self.note_down(self.dst, i, f)),
        }
    }

    /// Write `need` replicas to writable destination services in probe order,
    /// skipping those in `skip`; returns the replicas stored.
    async fn write(
        &self,
        job: &Job,
        data: BlockData,
        skip: &[u16],
        need: u32,
    ) -> Result<u32, BlockError> {
        if need == 0 {
            return Ok(0);
        }
        let order: Vec<u16> = probe_order(&job.hash, &self.dst.suffixes())
            .into_iter()
            .map(|i| i as u16)
            .filter(|&i| {
                self.dst.services[i as usize].writable()
                    && !self.dst.is_down(i as usize)
                    && !skip.contains(&i)
            })
            .collect();
        let mut next = 0;
        let mut stored = 0u32;
        let mut pending = 0u32;
        let mut reasons = Vec::new();
        let mut last_service = String::new();
        let mut inflight = FuturesUnordered::new();
        loop {
            while stored + pending < need && next < order.len() {
                let d = order[next];
                next += 1;
                pending += 1;
                let data = data.clone();
                inflight.push(async move { (d, self.put_to(d, job, data, need - stored).await) });
            }
            let Some((d, r)) = inflight.next().await else {
                break;
            };
            pending -= 1;
            match r {
                Ok(n) => stored += n,
                Err(f) => {
                    let svc = &self.dst.services[d as usize];
                    reasons.push(format!("{}: {f}", svc.uuid));
                    last_service = svc.uuid.clone();
                }
            }
            if stored >= need {
                break;
            }
        }
        if stored >= need {
            return Ok(stored);
        }
        let why = if order.is_empty() {
            "no writable destination service is left to write to".to_string()
        } else {
            summarize(&reasons)
        };
        Err(BlockError {
            service: last_service,
            reason: format!("stored {stored} of {need} replicas needed: {why}"),
        })
    }
}

fn gone() -> Failure {
    Failure::new(
        FailureKind::Transient,
        "service found unreachable earlier in this run",
    )
}

fn count<T>(st: &ServiceStats, r: &Result<T, Failure>, size: u64) {
    st.requests.fetch_add(1, Relaxed);
    match r {
        Ok(_) => {
            st.bytes.fetch_add(size, Relaxed);
        }
        Err(_) => {
            st.errors.fetch_add(1, Relaxed);
        }
    }
}

/// Whether every requested class is confirmed with at least one replica.
pub fn classes_confirmed(requested: &str, confirmed: Option<&str>) -> bool {
    let Some(confirmed) = confirmed else {
        return false;
    };
    let got: Vec<(&str, u32)> = confirmed
        .split(',')
        .filter_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            Some((k.trim(), v.trim().parse().ok()?))
        })
        .collect();
    requested
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .all(|c| got.iter().any(|(k, n)| *k == c && *n > 0))
}

fn summarize(reasons: &[String]) -> String {
    const MAX: usize = 4;
    let mut s = reasons
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if reasons.len() > MAX {
        s.push_str(&format!("; … {} more", reasons.len() - MAX));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes() {
        assert!(classes_confirmed("default", Some("default=1")));
        assert!(classes_confirmed("a, b", Some("b=1, a=2")));
        assert!(!classes_confirmed("a,b", Some("a=1")));
        assert!(!classes_confirmed("a", Some("a=0")));
        assert!(!classes_confirmed("a", None));
    }
}
