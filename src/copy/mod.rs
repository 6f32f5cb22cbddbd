//! The copy pipeline: for each planned block, read it once from a source
//! service that holds it, verify length and MD5, and write it to the
//! destination in rendezvous order until the wanted replicas are confirmed.
//!
//! - **Memory is a byte budget** (`--buffer-memory`, [`Budget`]): a block
//!   reserves its size before its read and releases it when its last write
//!   ends, so 64 MiB blocks run a few at a time and small ones up to
//!   `--transfers` at once. Each service takes at most `--max-per-service`
//!   requests at a time.
//! - **Reads** try holders in source probe order. Transient failures are
//!   retried with backoff on the same holder, then the next holder is tried;
//!   a 404 or refusal moves on at once; a short or corrupt body is fetched
//!   again, preferably from another holder. For a top-up, destination copies
//!   are a last resort when no source copy can be read.
//! - **Writes** go to the first writable services of the destination probe
//!   order that do not list the block yet, replicas in parallel; a failed
//!   service (after retries; 507 at once) is replaced by the next one in
//!   order. With streaming (the default) they start as soon as the read's
//!   headers arrive and follow its body through a [`Relay`], which releases
//!   the block's last bytes only once its MD5 and length are verified; a
//!   failed read abandons them before their last byte, and the next holder's
//!   read starts them afresh.
//! - A failed block never stops the run: it is recorded with its reason.
//! - This module owns graceful cancellation: once `soft` is cancelled no new
//!   block starts (not even one waiting for budget) and the blocks in flight
//!   finish.

mod budget;
mod pool;
mod relay;

pub use budget::Budget;
pub use pool::BufferPool;
pub use relay::{verify_body, Relay};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use futures::stream::{self, FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::plan::{class_replicas, Action, Job, PerBlock, Plan};
use crate::progress::Reporter;
use crate::protocol::client::{with_retries, Backoff, Failure, FailureKind, Op};
use crate::report::{FailedBlock, Stats};
use crate::services::{Asking, Service, Side};
use crate::store::BlockStream;
use crate::throttle::Throttle;

/// PUTs of blocks up to this size measure the service's queue (their body
/// takes little of their time): their times feed its adaptive limit.
const SMALL_PUT: u64 = 256 << 10;

/// How blocks are copied.
pub struct CopyOptions {
    pub want: u32,
    pub transfers: usize,
    pub retries: u32,
    pub backoff: Backoff,
    /// `--storage-classes`, as sent in `X-Keep-Storage-Classes`.
    pub storage_classes: Option<String>,
    pub throttle: Option<Throttle>,
    /// Bytes of block data in flight (`--buffer-memory`).
    pub budget: Budget,
    /// Start the replica writes while the read arrives (see [`Relay`]);
    /// `false` writes only once the whole block is verified.
    pub stream: bool,
}

/// Everything a block copy needs, shared by all transfers.
pub struct Copier<'a> {
    pub src: &'a Side,
    pub dst: &'a Side,
    pub opts: &'a CopyOptions,
    pub stats: &'a Stats,
    pub reporter: &'a dyn Reporter,
    /// `--max-transfer` admits each block before it starts.
    pub limits: &'a crate::limits::Limits,
    /// Blocks started so far over all passes, and the planned total.
    pub ordinal: AtomicU64,
    pub total: AtomicU64,
    /// The buffers block data is copied into (emptied after each pass).
    pub pool: std::sync::Arc<BufferPool>,
    /// Collection records: what each block's collections want.
    pub per_block: Option<PerBlock<'a>>,
}

/// What a block's writes must still achieve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The run's own want: this many more replicas, each PUT confirming
    /// every `--storage-classes` class.
    Replicas(u32),
    /// Collection records: replicas still missing per storage class. A PUT
    /// asks for the classes still short and counts for those it confirms
    /// (as the Arvados SDK's block writer does).
    Classes(Vec<(String, u32)>),
}

impl Need {
    fn is_met(&self) -> bool {
        match self {
            Need::Replicas(n) => *n == 0,
            Need::Classes(c) => c.iter().all(|(_, n)| *n == 0),
        }
    }
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

/// A read whose first answer says the block is coming, holding its
/// service's `--max-per-service` slot while it lasts.
struct Reading {
    stream: BlockStream,
    _slot: crate::limiter::Permit,
}

impl<'a> Copier<'a> {
    /// Copy the plan's jobs, `--transfers` at a time within the byte budget,
    /// until done or `soft` is cancelled (a signal, or a cron-window limit:
    /// `--max-transfer` admits each block here). Jobs left unstarted are
    /// told to the limits, so that the run says it stopped short.
    pub async fn run(&self, plan: &Plan, soft: &CancellationToken) {
        let started = std::sync::atomic::AtomicUsize::new(0);
        let started = &started;
        stream::iter(&plan.jobs)
            .take_until(soft.cancelled())
            .map(|job| async move {
                // The block's bytes first; a stop while waiting for them
                // means the block never starts.
                let reserved = tokio::select! {
                    biased;
                    _ = soft.cancelled() => return None,
                    r = self.opts.budget.reserve(job.size as u64) => r,
                };
                if !self.limits.admit(job.size as u64) {
                    return None;
                }
                started.fetch_add(1, Relaxed);
                let n = self.ordinal.fetch_add(1, Relaxed) + 1;
                self.reporter
                    .block_started(n, self.total.load(Relaxed), job);
                let r = self.copy_one(plan, job).await;
                drop(reserved);
                self.stats.blocks_done.fetch_add(1, Relaxed);
                Some((job, r))
            })
            .buffer_unordered(self.opts.transfers.max(1))
            .for_each(|done| async move {
                let Some((job, r)) = done else { return };
                match r {
                    Ok(()) => self.reporter.block_finished(job, None),
                    Err(e) => {
                        self.reporter.block_finished(job, Some(&e.reason));
                        self.stats.fail(
                            job.hash,
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
        // The index phase that follows gets the buffers' memory back.
        self.pool.clear();
        if started.load(Relaxed) < plan.jobs.len() {
            self.limits.cut_short();
        }
    }

    async fn copy_one(&self, plan: &Plan, job: &Job) -> Result<(), BlockError> {
        // The plan names destination listings (stores, or keepstore mounts);
        // reads and writes go to their services.
        let listed = plan.dst_holders(job);
        let holders = &self.dst.services_of(listed)[..];
        match job.action {
            Action::Copy | Action::TopUp => {
                let need = self.need(job, listed);
                let cands = candidates(plan.sources(job), holders, &[]);
                self.transfer(job, &cands, holders, &need).await?;
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
            Action::Verify => self.verify(plan, job).await,
        }
    }

    /// `--verify-existing`: read back every destination copy the index lists;
    /// rewrite missing or corrupt ones from the source.
    async fn verify(&self, plan: &Plan, job: &Job) -> Result<(), BlockError> {
        let size = job.size as u64;
        let listed = plan.dst_holders(job);
        let holders = &self.dst.services_of(listed)[..];
        let mut bad: Vec<u16> = Vec::new();
        for &d in holders {
            let svc = &self.dst.services[d as usize].store;
            match self.read_whole(From::Dst(d), job).await {
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
                        service: svc.id().to_string(),
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
        let cands = candidates(plan.sources(job), holders, &bad);
        let relay = self
            .try_candidates(job, &cands, |c| self.read_whole(c, job))
            .await?;
        let mut good: Vec<u16> = Vec::new();
        for &d in holders {
            if bad.contains(&d) && self.put_to(d, job, &relay, 1, None).await.is_err() {
                continue;
            }
            // The service's listings of the block count again.
            good.extend(
                (listed.iter().copied()).filter(|&l| self.dst.listings[l as usize].service == d),
            );
        }
        let need = self.need(job, &good);
        self.write(job, &relay, holders, &need).await?;
        self.stats.repaired.fetch_add(1, Relaxed);
        Ok(())
    }

    /// What writes must add to the copies the destination listings
    /// `holders` have.
    fn need(&self, job: &Job, holders: &[u16]) -> Need {
        match &self.per_block {
            Some(p) if job.want != crate::wants::RUN_WANT => Need::Classes(
                (p.wants.resolve(job.want, p.default, p.replications))
                    .map(|(class, n)| {
                        let have = class_replicas(holders, p.dst_credits, p.dst_classes, class);
                        let name = p.wants.names()[class as usize].clone();
                        (name, n.saturating_sub(have))
                    })
                    .collect(),
            ),
            _ => {
                let credits = self.dst.credits(self.opts.want);
                let have = crate::plan::count_replicas(holders, &credits);
                Need::Replicas(self.opts.want.saturating_sub(have))
            }
        }
    }

    /// Read the block from the first candidate that gives a good copy and
    /// write what `need` says to writable destination services not in `skip`.
    async fn transfer(
        &self,
        job: &Job,
        cands: &[From],
        skip: &[u16],
        need: &Need,
    ) -> Result<u32, BlockError> {
        self.try_candidates(job, cands, |c| self.read_and_write(c, job, skip, need))
            .await?
    }

    /// Try `step` on each candidate in order, for `--retries` rounds, until
    /// one succeeds. A 404, refusal or a read that stayed failing after its
    /// retries rules a candidate out; bad data may be a passing fault, so a
    /// candidate that gave it is tried again next round.
    async fn try_candidates<T, F, Fut>(
        &self,
        job: &Job,
        cands: &[From],
        mut step: F,
    ) -> Result<T, BlockError>
    where
        F: FnMut(From) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
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
                match step(c).await {
                    Ok(v) => return Ok(v),
                    Err(f) => {
                        if f.kind != FailureKind::BadData
                            || self.service_of(c).store.bad_data_is_final()
                        {
                            dead[k] = true;
                        }
                        let label = self.service_of(c).store.id().to_string();
                        let next = (k + 1..cands.len()).find(|&n| !dead[n]);
                        if let Some(n) = next {
                            self.failover(Op::Get, job, c, cands[n], &f);
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
                let delay = self.opts.backoff.delay(round);
                tracing::info!(
                    event = "reread",
                    object = %format_args!("{}+{}", job.hash, job.size),
                    round = round + 1,
                    rounds = self.opts.retries + 1,
                    backoff_ms = delay.as_millis() as u64,
                    "{}+{}: no good copy in round {} of {}; reading again in {delay:?}",
                    job.hash,
                    job.size,
                    round + 1,
                    self.opts.retries + 1
                );
                tokio::time::sleep(delay).await;
            }
        }
        reasons.dedup();
        Err(BlockError {
            service: last_service,
            reason: format!("could not read a good copy: {}", summarize(&reasons)),
        })
    }

    /// Diagnostics (`-v`): `op` of `job` on `from` failed with `f`; `to` is
    /// asked next.
    fn failover(&self, op: Op, job: &Job, from: From, to: From, f: &Failure) {
        let (from_side, _) = self.side_of(from);
        let (to_side, _) = self.side_of(to);
        let (from, to) = (
            self.service_of(from).store.id(),
            self.service_of(to).store.id(),
        );
        tracing::info!(
            event = "failover",
            op = op.as_str(),
            object = %format_args!("{}+{}", job.hash, job.size),
            side = from_side.role.as_str(),
            from,
            to,
            to_side = to_side.role.as_str(),
            status = f.status,
            error = %f,
            "{} {}+{}: {} service {from} failed ({f}); trying {} service {to}",
            op.as_str(),
            job.hash,
            job.size,
            from_side.role,
            to_side.role
        );
    }

    fn side_of(&self, c: From) -> (&Side, usize) {
        match c {
            From::Src(i) => (self.src, i as usize),
            From::Dst(i) => (self.dst, i as usize),
        }
    }

    fn service_of(&self, c: From) -> &Service {
        let (side, i) = self.side_of(c);
        &side.services[i]
    }

    /// `op` of `job` on candidate `c`, for its retries' diagnostics.
    fn asking<'s>(&'s self, c: From, op: Op, job: &'s Job) -> Asking<'s> {
        let (side, i) = self.side_of(c);
        Asking {
            role: side.role,
            service: &side.services[i],
            op,
            block: Some((&job.hash, job.size)),
        }
    }

    /// One candidate, streamed: read it (retrying transient failures on it)
    /// and let the writes follow the read. `Err` is the read's failure (no
    /// replica was stored by this attempt); `Ok` carries the write's outcome
    /// for a verified block.
    async fn read_and_write(
        &self,
        c: From,
        job: &Job,
        skip: &[u16],
        need: &Need,
    ) -> Result<Result<u32, BlockError>, Failure> {
        let (side, i) = self.side_of(c);
        let asking = self.asking(c, Op::Get, job);
        let r = with_retries(self.opts.backoff, self.opts.retries, &asking, |_| async move {
            let reading = self.open(c, job).await?;
            let relay = Relay::new(job.size as u64, &self.pool);
            let read = self.fill(c, job, reading, &relay);
            let write = async {
                if !self.opts.stream && !relay.wait_end().await {
                    return None;
                }
                Some(self.write(job, &relay, skip, need).await)
            };
            futures::pin_mut!(read, write);
            let mut read_result = None;
            loop {
                tokio::select! {
                    r = &mut read, if read_result.is_none() => read_result = Some(r),
                    w = &mut write => {
                        // No write can complete before the read verified the
                        // block; a write that failed while the read goes on
                        // failed on its own (every service refused): the read
                        // is dropped, the block has failed.
                        let r = match read_result {
                            Some(r) => r,
                            None if relay.is_failed() || matches!(w, None | Some(Ok(_))) => read.await,
                            None => Ok(()),
                        };
                        return match (r, w) {
                            (Err(f), _) => Err(f),
                            (Ok(()), Some(w)) => Ok(w),
                            (Ok(()), None) => Err(Failure::new(FailureKind::BadData, "read ended unverified")),
                        };
                    }
                }
            }
        })
        .await;
        r.map_err(|(f, _)| self.note_down(side, i, f))
    }

    /// Read and verify the whole block from one candidate (retrying transient
    /// failures on it), with no write: `--verify-existing` read-backs and
    /// repairs.
    async fn read_whole(&self, c: From, job: &Job) -> Result<Relay, Failure> {
        let (side, i) = self.side_of(c);
        let asking = self.asking(c, Op::Get, job);
        let r = with_retries(
            self.opts.backoff,
            self.opts.retries,
            &asking,
            |_| async move {
                let reading = self.open(c, job).await?;
                let relay = Relay::new(job.size as u64, &self.pool);
                self.fill(c, job, reading, &relay).await.map(|()| relay)
            },
        )
        .await;
        r.map_err(|(f, _)| self.note_down(side, i, f))
    }

    /// Start a read on candidate `c`: up to the store's first answer (a
    /// GET's headers, an opened file). Failures are counted against the
    /// store; the bytes are counted as they arrive ([`Copier::fill`]).
    async fn open(&self, c: From, job: &Job) -> Result<Reading, Failure> {
        let (side, i) = self.side_of(c);
        let svc = &side.services[i];
        if svc.is_down() {
            return Err(gone());
        }
        let size = job.size as u64;
        let slot = svc.limit.acquire().await;
        let asked = std::time::Instant::now();
        let opened = svc.store.read(&job.hash, size).await;
        // The time to a GET's headers measures the store, not the block.
        svc.limit
            .observe(crate::limiter::signal_of(&opened, asked.elapsed(), true));
        request_done(side, svc, Op::Get, job, &opened, asked);
        if opened.is_err() {
            svc.stats.count(Op::Get, &opened, size);
        }
        opened.map(|stream| Reading {
            stream,
            _slot: slot,
        })
    }

    /// Read an opened block into `relay`, verified; bytes are counted per
    /// chunk as they arrive (progress) and taken back if the read fails.
    async fn fill(
        &self,
        c: From,
        job: &Job,
        reading: Reading,
        relay: &Relay,
    ) -> Result<(), Failure> {
        let svc = self.service_of(c);
        let got = AtomicU64::new(0);
        let on_bytes = |n: u64| {
            got.fetch_add(n, Relaxed);
            self.stats.bytes_read.fetch_add(n, Relaxed);
            self.reporter.bytes(n);
        };
        let r = relay
            .fill(
                reading.stream,
                &job.hash,
                self.opts.throttle.as_ref(),
                &on_bytes,
            )
            .await;
        if r.is_err() {
            self.reporter.bytes_undone(got.load(Relaxed));
        }
        svc.stats.count(Op::Get, &r, job.size as u64);
        r
    }

    /// A service that refuses connections after all retries has died mid-run:
    /// mark it down so later blocks skip it at once instead of each paying
    /// the retries, and list it (the run then exits 1; a rerun completes).
    /// A refused request (401/403) says once what to fix ([`Side::refused`]).
    fn note_down(&self, side: &Side, i: usize, f: Failure) -> Failure {
        if let Some(msg) = side.refused(i, &f) {
            self.reporter.log(crate::progress::Level::Warn, &msg);
        }
        let svc = &side.services[i];
        let why = || format!("stopped accepting connections mid-run: {f}");
        if f.kind == FailureKind::Unreachable && svc.mark_down_because(side.role, &why()) {
            let why = why();
            self.reporter.log(
                crate::progress::Level::Warn,
                &format!("{} service {}: {why}", side.role, svc.store.label()),
            );
            self.stats.service_down(side.role, svc, &why);
        }
        f
    }

    /// PUT to one destination service (with retries for transient failures),
    /// asking for `classes` (`X-Keep-Storage-Classes`). With the run's own
    /// want (`classes` None: `--storage-classes`), a PUT that does not
    /// confirm every class fails. A PUT that broke because the block's read
    /// failed is `Abandoned`: it says nothing about the service and is
    /// neither retried nor counted.
    async fn put_to(
        &self,
        d: u16,
        job: &Job,
        relay: &Relay,
        desired: u32,
        classes: Option<&str>,
    ) -> Result<crate::protocol::client::PutOk, Failure> {
        let svc = &self.dst.services[d as usize];
        if svc.is_down() {
            return Err(gone());
        }
        if svc.is_full() {
            return Err(Failure::new(
                FailureKind::Full,
                "full (507) earlier in this run",
            ));
        }
        let strict = classes.is_none();
        let classes = classes.or(self.opts.storage_classes.as_deref());
        let size = job.size as u64;
        let asking = self.asking(From::Dst(d), Op::Put, job);
        let r = with_retries(self.opts.backoff, self.opts.retries, &asking, |_| {
            async move {
                let _permit = svc.limit.acquire().await;
                let asked = std::time::Instant::now();
                let r = svc
                    .store
                    .write(&job.hash, size, relay.body(), desired, classes)
                    .await;
                request_done(self.dst, svc, Op::Put, job, &r, asked);
                // A small block's PUT time is mostly the service's own (its
                // queue), as a GET's time to headers is.
                svc.limit.observe(crate::limiter::signal_of(
                    &r,
                    asked.elapsed(),
                    size <= SMALL_PUT,
                ));
                if r.is_err() && relay.is_failed() {
                    return Err(Failure::new(FailureKind::Abandoned, relay::ReadFailed.to_string()));
                }
                let r = r.and_then(|ok| match classes {
                    Some(want) if strict && !classes_confirmed(want, ok.classes_confirmed.as_deref()) => Err(Failure::new(
                        FailureKind::Rejected,
                        format!(
                            "storage classes {want:?} not confirmed (X-Keep-Storage-Classes-Confirmed: {:?})",
                            ok.classes_confirmed.unwrap_or_default()
                        ),
                    )),
                    Some(want) if !strict && confirmed_counts(want, ok.classes_confirmed.as_deref(), ok.replicas).is_empty() => Err(Failure::new(
                        FailureKind::Rejected,
                        format!(
                            "none of the storage classes {want:?} confirmed (X-Keep-Storage-Classes-Confirmed: {:?})",
                            ok.classes_confirmed.unwrap_or_default()
                        ),
                    )),
                    _ => Ok(ok),
                });
                svc.stats.count(Op::Put, &r, size);
                r
            }
        })
        .await;
        match r {
            Ok(ok) => {
                self.stats
                    .replicas_written
                    .fetch_add(ok.replicas as u64, Relaxed);
                self.stats
                    .bytes_written
                    .fetch_add(size * ok.replicas as u64, Relaxed);
                Ok(ok)
            }
            // keepstore answers 507 as well when it has no writable volume
            // of any class asked: full only where the classes are known.
            Err((f, _)) if f.kind == FailureKind::Full => match classes {
                Some(asked) if !svc.store.write_classes().is_some_and(|_| svc.store.may_confirm(Some(asked))) => {
                    Err(Failure::new(
                        FailureKind::Rejected,
                        format!("{f} for storage classes {asked:?}: no writable volume of them there, or they are full"),
                    ))
                }
                _ => Err(self.note_full(d as usize, f)),
            },
            Err((f, _)) => Err(self.note_down(self.dst, d as usize, f)),
        }
    }

    /// A PUT got 507: the service's volumes are full. Write nothing more to
    /// it in this run (said once); blocks go to the next services in their
    /// probe order, as they would after this answer anyway.
    fn note_full(&self, d: usize, f: Failure) -> Failure {
        let svc = &self.dst.services[d];
        if svc.mark_full() {
            let why = format!("full ({f}): no more blocks are written to it in this run; they go to the next services in their probe order");
            tracing::info!(
                event = "service_full",
                side = self.dst.role.as_str(),
                service = svc.store.id(),
                "{} service {} {why}",
                self.dst.role,
                svc.store.label()
            );
            self.reporter.log(
                crate::progress::Level::Warn,
                &format!("{} service {}: {why}", self.dst.role, svc.store.label()),
            );
        }
        f
    }

    /// Write what `need` says to writable destination services in probe
    /// order, skipping those in `skip`; returns the replicas stored. Stops
    /// at once (storing nothing) when the block's read fails under it.
    async fn write(
        &self,
        job: &Job,
        relay: &Relay,
        skip: &[u16],
        need: &Need,
    ) -> Result<u32, BlockError> {
        if need.is_met() {
            return Ok(0);
        }
        let mut todo: Vec<(String, u32)> = match need {
            Need::Replicas(n) => vec![(String::new(), *n)],
            Need::Classes(c) => c.clone(),
        };
        let per_class = matches!(need, Need::Classes(_));
        // Classes still short, as a PUT asks for them.
        let asked = |todo: &[(String, u32)]| -> Option<String> {
            per_class.then(|| {
                (todo.iter().filter(|(_, n)| *n > 0))
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        let most = |todo: &[(String, u32)]| todo.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let run_classes = self.opts.storage_classes.as_deref();
        let order: Vec<u16> = (self.dst.rank.order(&job.hash).into_iter())
            .filter(|&i| {
                let svc = &self.dst.services[i as usize];
                svc.store.writable() && !svc.is_down() && !svc.is_full() && !skip.contains(&i)
            })
            .filter(|&i| {
                let store = &self.dst.services[i as usize].store;
                if per_class {
                    // A volume takes part only with a class still short.
                    todo.iter().any(|(c, _)| store.may_confirm(Some(c)))
                } else {
                    store.may_confirm(run_classes)
                }
            })
            .collect();
        let mut next = 0;
        let mut stored = 0u32;
        // Replicas a write in flight will store if it succeeds: a volume its
        // Replication, a keepstore its first writable mount's for the block
        // (1 when its mounts are not known); a keepproxy is counted as 1
        // until it says how many it stored.
        let expected = |d: u16| {
            let store = &self.dst.services[d as usize].store;
            if store.is_proxy() {
                1
            } else {
                store.expected_replicas(&job.hash, run_classes)
            }
        };
        let mut pending = 0u32;
        let mut reasons = Vec::new();
        let mut last_service = String::new();
        let mut inflight = FuturesUnordered::new();
        loop {
            while pending < most(&todo) && next < order.len() {
                let d = order[next];
                next += 1;
                let classes = asked(&todo);
                let store = &self.dst.services[d as usize].store;
                if per_class
                    && !todo
                        .iter()
                        .any(|(c, n)| *n > 0 && store.may_confirm(Some(c)))
                {
                    continue;
                }
                pending += expected(d);
                let desired = most(&todo).saturating_sub(pending - expected(d)).max(1);
                inflight.push(async move {
                    let r = self
                        .put_to(d, job, relay, desired, classes.as_deref())
                        .await;
                    (d, r)
                });
            }
            let Some((d, r)) = inflight.next().await else {
                break;
            };
            pending -= expected(d);
            match r {
                Ok(ok) => {
                    stored += ok.replicas;
                    if per_class {
                        let asked = asked(&todo).unwrap_or_default();
                        for (class, n) in
                            confirmed_counts(&asked, ok.classes_confirmed.as_deref(), ok.replicas)
                        {
                            if let Some(t) = todo.iter_mut().find(|(c, _)| *c == class) {
                                t.1 = t.1.saturating_sub(n);
                            }
                        }
                    } else {
                        todo[0].1 = todo[0].1.saturating_sub(ok.replicas);
                    }
                }
                Err(f) if f.kind == FailureKind::Abandoned => {
                    return Err(BlockError {
                        service: String::new(),
                        reason: f.detail,
                    })
                }
                Err(f) => {
                    let id = self.dst.services[d as usize].store.id();
                    if next < order.len() {
                        self.failover(Op::Put, job, From::Dst(d), From::Dst(order[next]), &f);
                    }
                    reasons.push(format!("{id}: {f}"));
                    last_service = id.to_string();
                }
            }
            if most(&todo) == 0 {
                // Writes still in flight were needed when they started (the
                // ones before them could not store enough): they end rather
                // than being dropped, so where the replicas land does not
                // depend on which store answered first.
                while let Some((_, r)) = inflight.next().await {
                    if let Ok(ok) = r {
                        stored += ok.replicas;
                    }
                }
                break;
            }
        }
        if most(&todo) == 0 {
            return Ok(stored);
        }
        let why = if order.is_empty() {
            "no writable destination service is left to write to (the others are read-only, \
             full or unreachable, or hold none of the storage classes wanted)"
                .to_string()
        } else {
            summarize(&reasons)
        };
        let short = match need {
            Need::Replicas(n) => format!("stored {stored} of {n} replicas needed"),
            Need::Classes(_) => format!(
                "stored {stored} replicas, still short of {}",
                (todo.iter().filter(|(_, n)| *n > 0))
                    .map(|(c, n)| format!("{n} in {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Err(BlockError {
            service: last_service,
            reason: format!("{short}: {why}"),
        })
    }
}

/// Read candidates: source holders in probe order, then destination holders
/// not in `exclude` (a last resort, for top-ups and repairs).
fn candidates(sources: &[u16], dst_holders: &[u16], exclude: &[u16]) -> Vec<From> {
    let mut c: Vec<From> = sources.iter().map(|&s| From::Src(s)).collect();
    c.extend(
        dst_holders
            .iter()
            .filter(|d| !exclude.contains(d))
            .map(|&d| From::Dst(d)),
    );
    c
}

/// Diagnostics at `-vv`: one line per block request (a GET up to its
/// headers, a whole PUT), with its outcome and time.
fn request_done<T>(
    side: &Side,
    svc: &Service,
    op: Op,
    job: &Job,
    r: &Result<T, Failure>,
    asked: std::time::Instant,
) {
    tracing::debug!(
        event = "request",
        op = op.as_str(),
        side = side.role.as_str(),
        service = svc.store.id(),
        object = %format_args!("{}+{}", job.hash, job.size),
        ok = r.is_ok(),
        status = r.as_ref().err().and_then(|f| f.status),
        error = r.as_ref().err().map(|f| f.detail.as_str()),
        ms = asked.elapsed().as_millis() as u64,
        "{} {}+{} on {} service {}: {} in {:?}",
        op.as_str(),
        job.hash,
        job.size,
        side.role,
        svc.store.id(),
        match r {
            Ok(_) => "ok".to_string(),
            Err(f) => f.to_string(),
        },
        asked.elapsed()
    );
}

fn gone() -> Failure {
    Failure::new(
        FailureKind::Transient,
        "service found unreachable earlier in this run",
    )
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

/// What a PUT asking for `asked` (comma-separated) confirmed of them:
/// `(class, replicas)` from `X-Keep-Storage-Classes-Confirmed`; without
/// that header (an older keepstore) every class asked, `replicas` times.
pub fn confirmed_counts(asked: &str, confirmed: Option<&str>, replicas: u32) -> Vec<(String, u32)> {
    let asked = asked.split(',').map(str::trim).filter(|c| !c.is_empty());
    let Some(confirmed) = confirmed else {
        return asked.map(|c| (c.to_string(), replicas)).collect();
    };
    let got: Vec<(&str, u32)> = confirmed
        .split(',')
        .filter_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            Some((k.trim(), v.trim().parse().ok()?))
        })
        .collect();
    asked
        .filter_map(|c| {
            let n = got
                .iter()
                .filter(|(k, _)| *k == c)
                .map(|(_, n)| n)
                .sum::<u32>();
            (n > 0).then(|| (c.to_string(), n))
        })
        .collect()
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
        assert_eq!(
            confirmed_counts("default, archive", Some("archive=2, hot=1"), 2),
            [("archive".to_string(), 2)]
        );
        assert_eq!(
            confirmed_counts("a,b", None, 1),
            [("a".to_string(), 1), ("b".to_string(), 1)]
        );
        assert!(confirmed_counts("a", Some("b=1"), 1).is_empty());
    }
}
