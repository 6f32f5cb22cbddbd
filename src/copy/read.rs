//! Reading: source holders in order, retried, streamed into a [`Relay`]
//! that the writes follow.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Relay;
use super::{gone, request_done, summarize, BlockError, Copier, From, Need};
use crate::plan::Job;
use crate::protocol::client::{with_retries, Failure, FailureKind, Op};
use crate::store::BlockStream;

/// A read whose first answer says the block is coming, holding its
/// service's `--max-per-service` slot while it lasts.
pub(super) struct Reading {
    stream: BlockStream,
    _slot: crate::limiter::Permit,
}

impl<'a> Copier<'a> {
    /// Try `step` on each candidate in order, for `--retries` rounds, until
    /// one succeeds. A 404, refusal or a read that stayed failing after its
    /// retries rules a candidate out; bad data may be a passing fault, so a
    /// candidate that gave it is tried again next round.
    pub(super) async fn try_candidates<T, F, Fut>(
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

    /// One candidate, streamed: read it (retrying transient failures on it)
    /// and let the writes follow the read. `Err` is the read's failure (no
    /// replica was stored by this attempt); `Ok` carries the write's outcome
    /// for a verified block.
    pub(super) async fn read_and_write(
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
    pub(super) async fn read_whole(&self, c: From, job: &Job) -> Result<Relay, Failure> {
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
    pub(super) async fn open(&self, c: From, job: &Job) -> Result<Reading, Failure> {
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
    pub(super) async fn fill(
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
}

/// Read candidates: source holders in probe order, then destination holders
/// not in `exclude` (a last resort, for top-ups and repairs).
pub(super) fn candidates(sources: &[u16], dst_holders: &[u16], exclude: &[u16]) -> Vec<From> {
    let mut c: Vec<From> = sources.iter().map(|&s| From::Src(s)).collect();
    c.extend(
        dst_holders
            .iter()
            .filter(|d| !exclude.contains(d))
            .map(|&d| From::Dst(d)),
    );
    c
}
