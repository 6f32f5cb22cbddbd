//! Finishing: a block's outcome told to the reporter and counted in the
//! run's stats (a failed block is listed with its reason, never fatal).

use super::{BlockError, Copier};
use crate::plan::Job;
use crate::report::FailedBlock;

impl<'a> Copier<'a> {
    /// Record the end of `job`.
    pub(super) fn finished(&self, job: &Job, r: Result<(), BlockError>) {
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
    }
}
