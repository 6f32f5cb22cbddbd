//! One block's course: copy or top up (read once, write the replicas
//! still needed, their finishes left to admission), or `--verify-existing`
//! (read back, repair, finishes awaited here).

use std::sync::atomic::Ordering::Relaxed;

use super::read::candidates;
use super::{BlockError, Copier, From, Need};
use crate::plan::{class_replicas, Action, Job, Plan};
use crate::protocol::client::FailureKind;

impl<'a> Copier<'a> {
    pub(super) async fn copy_one(&self, plan: &Plan, job: &Job) -> Result<(), BlockError> {
        // The plan names destination listings (stores, or keepstore mounts);
        // reads and writes go to their services.
        let listed = plan.dst_holders(job);
        let holders = &self.dst.services_of(listed)[..];
        match job.action {
            Action::Copy | Action::TopUp => {
                let need = self.need(job, listed);
                let cands = candidates(plan.sources(job), holders, &[]);
                // Counted as stored once its writes' finishes end
                // (admission runs them).
                self.transfer(job, &cands, holders, &need).await?;
                Ok(())
            }
            Action::Verify => self.verify(plan, job).await,
        }
    }

    /// `--verify-existing`: read back every destination copy the index lists;
    /// rewrite missing or corrupt ones from the source.
    pub(super) async fn verify(&self, plan: &Plan, job: &Job) -> Result<(), BlockError> {
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
        self.settle(job).await?;
        self.stats.repaired.fetch_add(1, Relaxed);
        Ok(())
    }

    /// What writes must add to the copies the destination listings
    /// `holders` have.
    pub(super) fn need(&self, job: &Job, holders: &[u16]) -> Need {
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
    pub(super) async fn transfer(
        &self,
        job: &Job,
        cands: &[From],
        skip: &[u16],
        need: &Need,
    ) -> Result<u32, BlockError> {
        self.try_candidates(job, cands, |c| self.read_and_write(c, job, skip, need))
            .await?
    }
}
