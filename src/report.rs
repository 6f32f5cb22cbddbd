//! The run's one stats model, the failure list, and what is made of them at
//! the end: the human summary (always) and the JSON report (`--report`).
//!
//! Counters are atomics updated by the copy pipeline; renderers (see
//! `progress`) only read them. Nothing here holds a token, key or signature:
//! failures name locators as `HASH+SIZE` only.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::console::{human_bytes, human_duration};
use crate::plan::{Action, PlanCounts};
use crate::protocol::BlockHash;
use crate::role::Role;
use crate::services::Service;

mod failures;
mod lost;
mod spilled;
pub use failures::{FailureList, FAILURES_IN_MEMORY};
pub use lost::{locator as lost_locator, LostList, LOST_IN_MEMORY};

/// Bumped when a field of the JSON report changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

/// One block that could not be completed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailedBlock {
    /// `HASH+SIZE`, never signed.
    pub locator: String,
    pub action: Action,
    /// The service whose failure decided it (uuid), or "" when none was tried.
    pub service: String,
    pub reason: String,
}

/// Live counters of a run.
pub struct Stats {
    pub started: Instant,
    pub started_unix: f64,
    pub index_lines: AtomicU64,
    pub index_bytes: AtomicU64,
    /// Block bytes received from sources (verified or not), for progress.
    pub bytes_read: AtomicU64,
    pub blocks_done: AtomicU64,
    /// Sub-prefix passes planned for the run, and the one under way (from
    /// 1; 0 before the first).
    pub passes: AtomicU64,
    pub pass: AtomicU64,
    /// What the passes planned so far: blocks to write or verify, blocks
    /// already present (and their bytes).
    pub planned: AtomicU64,
    pub planned_bytes: AtomicU64,
    pub present: AtomicU64,
    pub present_bytes: AtomicU64,
    pub copied: AtomicU64,
    pub copied_bytes: AtomicU64,
    pub topped_up: AtomicU64,
    pub topped_up_bytes: AtomicU64,
    pub replicas_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub verified: AtomicU64,
    pub verify_bad: AtomicU64,
    pub repaired: AtomicU64,
    pub failed: AtomicU64,
    pub failed_bytes: AtomicU64,
    failures: Mutex<failures::Failures>,
    /// Listed blocks no service holds (`--blocks-from`, keep-block-check).
    lost: Mutex<lost::Lost>,
    unreachable: Mutex<Vec<UnreachableService>>,
}

/// A service that could not be read at all: its blocks (source) or its
/// copies (destination) were left out of the run.
#[derive(Clone, Debug, Serialize)]
pub struct UnreachableService {
    pub role: Role,
    pub uuid: String,
    pub url: String,
    pub reason: String,
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            started_unix: unix_now(),
            index_lines: AtomicU64::new(0),
            index_bytes: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            blocks_done: AtomicU64::new(0),
            passes: AtomicU64::new(0),
            pass: AtomicU64::new(0),
            planned: AtomicU64::new(0),
            planned_bytes: AtomicU64::new(0),
            present: AtomicU64::new(0),
            present_bytes: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            copied_bytes: AtomicU64::new(0),
            topped_up: AtomicU64::new(0),
            topped_up_bytes: AtomicU64::new(0),
            replicas_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            verify_bad: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failed_bytes: AtomicU64::new(0),
            failures: Mutex::new(failures::Failures::default()),
            lost: Mutex::new(lost::Lost::default()),
            unreachable: Mutex::new(Vec::new()),
        }
    }

    /// Keep every failed (and lost) block for the `--report` file, spilled
    /// to a temporary file in `dir` (the report's directory) so that a mass
    /// failure costs disk, not memory. Without it only the first
    /// [`FAILURES_IN_MEMORY`] are kept (for the summary) and the rest counted.
    pub fn spill_failures_in(&self, dir: &std::path::Path) {
        self.lock_failures().spill_in(dir);
        self.lock_lost().spill_in(dir);
    }

    /// A pass's plan is ready: add its counts.
    pub fn planned(&self, c: &PlanCounts) {
        self.planned.fetch_add(c.to_write() + c.to_verify, Relaxed);
        self.planned_bytes
            .fetch_add(c.to_write_bytes() + c.to_verify_bytes, Relaxed);
        self.present.fetch_add(c.present, Relaxed);
        self.present_bytes.fetch_add(c.present_bytes, Relaxed);
    }

    /// [`Stats::spill_failures_in`] the directory of the `--report` file.
    pub fn spill_beside(&self, report: &std::path::Path) {
        self.spill_failures_in(&report_dir(report));
    }

    /// Listed blocks no service holds, in hash order after those recorded
    /// before (a plan's [`crate::plan::Plan::lost`], pass after pass).
    pub fn lost(&self, entries: &[crate::index::Entry]) {
        if !entries.is_empty() {
            self.lock_lost().extend(entries);
        }
    }

    /// Every lost block so far, for the report.
    pub fn lost_list(&self) -> LostList {
        self.lock_lost().list()
    }

    fn lock_lost(&self) -> std::sync::MutexGuard<'_, lost::Lost> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fail(&self, hash: BlockHash, f: FailedBlock, size: u64) {
        self.failed.fetch_add(1, Relaxed);
        self.failed_bytes.fetch_add(size, Relaxed);
        self.lock_failures().push(hash, f);
    }

    /// A sub-prefix pass has ended: its failures go to the spill file in
    /// hash order (passes come in hash order, so the file stays sorted).
    pub fn end_pass(&self) {
        self.lock_failures().end_pass();
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, failures::Failures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a service found unreachable (once per service).
    pub fn service_down(&self, role: Role, svc: &Service, reason: &str) {
        let mut v = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        let id = svc.store.id();
        if !v.iter().any(|u| u.uuid == id) {
            v.push(UnreachableService {
                role,
                uuid: id.to_string(),
                url: svc.store.location(),
                reason: reason.into(),
            });
        }
    }

    pub fn any_down(&self) -> bool {
        !self
            .unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub fn unreachable(&self) -> Vec<UnreachableService> {
        self.unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every failure so far, for the report (ends the current pass, and
    /// waits for the spill file to hold every one).
    pub fn failures(&self) -> FailureList {
        self.lock_failures().list()
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything planned was done.
    Complete,
    /// Finished, but some blocks failed, a service could not be read, or
    /// (`--blocks-from`) listed blocks are lost.
    Incomplete,
    /// A service or index could not be read.
    Unreadable,
    /// Stopped by a signal.
    Interrupted,
    /// `--dry-run`: planned only.
    DryRun,
    /// Flags, settings or services list were wrong (exit 2).
    ConfigError,
    /// `--max-duration` or `--max-transfer` ended the run with blocks left
    /// (exit 8; `limit_reached` says which).
    StoppedAtLimit,
}

impl Status {
    /// The status of a run that a fatal error ended.
    pub fn of_error(e: &crate::error::Error) -> Status {
        match e.exit_code() {
            crate::error::exit::USAGE => Status::ConfigError,
            crate::error::exit::INTERRUPTED => Status::Interrupted,
            _ => Status::Unreadable,
        }
    }
}

#[derive(Serialize)]
pub struct ServiceReport {
    pub uuid: String,
    pub url: String,
    pub service_type: String,
    pub read_only: bool,
    /// A PUT to it got 507 (full): nothing more was written to it.
    pub full: bool,
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    /// What its indexes listed (lines, files or bucket keys) and the
    /// blocks they gave.
    pub index_listed: u64,
    pub index_blocks: u64,
}

/// The directory a `--report` file is written in.
fn report_dir(path: &std::path::Path) -> std::path::PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Check, before a run, that the `--report` file can be written: its
/// directory must exist and take new files (the report is written there
/// atomically at the end, and failed blocks are spilled beside it). `flag`
/// names the option in the error (exit 2).
pub fn check_report_path(path: &std::path::Path, flag: &str) -> crate::error::Result<()> {
    let dir = report_dir(path);
    let why = match std::fs::metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "that directory does not exist".to_string()
        }
        Err(e) => e.to_string(),
        Ok(m) if !m.is_dir() => "that is not a directory".to_string(),
        Ok(_) => match tempfile::NamedTempFile::new_in(&dir) {
            Ok(_) => return Ok(()),
            Err(e) => format!("no file can be created there ({})", e.kind()),
        },
    };
    Err(crate::error::Error::config(format!(
        "cannot write the report {} ({flag}) in {}: {why}. Give {flag} a path in an existing, \
         writable directory.",
        path.display(),
        dir.display()
    )))
}

/// The JSON report (`--report FILE`); its schema is documented in
/// docs/report-schema.md and versioned by `schema_version`.
#[derive(Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: &'static str,
    pub version: &'static str,
    pub status: Status,
    pub exit_code: u8,
    pub error: Option<String>,
    /// The limit that stopped the run (`max_duration`, `max_transfer`), if any.
    pub limit_reached: Option<Limit>,
    pub started_at: f64,
    pub ended_at: f64,
    pub elapsed_seconds: f64,
    pub prefix: String,
    pub replications: u32,
    pub dry_run: bool,
    /// `--buffer-memory` (bytes) and `--index-budget` (lines) in effect.
    pub buffer_memory: u64,
    pub index_budget: u64,
    /// Hash sub-prefix passes the run was split into (0 if none was planned).
    pub passes: u64,
    pub source: Vec<ServiceReport>,
    pub destination: Vec<ServiceReport>,
    pub plan: PlanCounts,
    pub index_lines: u64,
    pub index_bytes: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    pub topped_up: u64,
    pub topped_up_bytes: u64,
    pub replicas_written: u64,
    pub bytes_written: u64,
    pub verified: u64,
    pub verify_bad: u64,
    pub repaired: u64,
    pub failed: u64,
    pub failed_bytes: u64,
    pub rate_bytes_per_second: f64,
    /// Every failed block, sorted by locator (streamed from the spill file).
    /// Written to the `--report` file only (see [`Report::write_to`]): the
    /// JSON log's `summary` event is the rest of the report.
    #[serde(skip)]
    pub failures: FailureList,
    /// Failed blocks not listed in `failures` (only when no spill file could
    /// be made; normally 0).
    pub failures_omitted: u64,
    /// `--blocks-from` (a path, or `-` for stdin); null without a list.
    pub blocks_from: Option<String>,
    /// Listed blocks on no source and no destination service, sorted:
    /// `HASH+SIZE`, or `HASH` when the list gave no size. In the `--report`
    /// file only, as `failures` (it may be read back from a spill file).
    #[serde(skip)]
    pub lost_blocks: LostList,
    /// Lost blocks `lost_blocks` leaves out (no spill file): normally 0.
    pub lost_omitted: u64,
    /// Services that could not be read at all during this run.
    pub unreachable_services: Vec<UnreachableService>,
}

/// Which limit stopped a run (the report's `limit_reached`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// `--max-duration`.
    MaxDuration,
    /// `--max-transfer`.
    MaxTransfer,
}

impl Limit {
    /// The flag that set it.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::MaxDuration => "--max-duration",
            Limit::MaxTransfer => "--max-transfer",
        }
    }
}

/// What the end of a run knows besides the counters.
pub struct Ending<'a> {
    pub status: Status,
    pub exit_code: u8,
    pub error: Option<String>,
    /// The cron-window limit that stopped the run, if one did.
    pub limit_reached: Option<Limit>,
    pub prefix: &'a str,
    pub replications: u32,
    pub dry_run: bool,
    /// The memory budgets the run used.
    pub budgets: crate::memory::Budgets,
    pub src_services: &'a [Service],
    pub dst_services: &'a [Service],
    pub plan: &'a PlanCounts,
    /// `--blocks-from`, when given.
    pub blocks_from: Option<&'a str>,
}

pub(crate) fn service_reports(services: &[Service]) -> Vec<ServiceReport> {
    services
        .iter()
        .map(|s| ServiceReport {
            uuid: s.store.id().to_string(),
            url: s.store.location(),
            service_type: s.store.kind().to_string(),
            read_only: s.store.read_only(),
            full: s.is_full(),
            requests: s.stats.requests.load(Relaxed),
            errors: s.stats.errors.load(Relaxed),
            bytes: s.stats.bytes.load(Relaxed),
            index_listed: s.stats.index_listed.load(Relaxed),
            index_blocks: s.stats.index_blocks.load(Relaxed),
        })
        .collect()
}

impl Report {
    pub fn build(stats: &Stats, end: &Ending<'_>) -> Report {
        let elapsed = stats.started.elapsed().as_secs_f64();
        let copied_bytes = stats.copied_bytes.load(Relaxed);
        let topped = stats.topped_up_bytes.load(Relaxed);
        let failures = stats.failures();
        let lost_blocks = stats.lost_list();
        Report {
            schema_version: SCHEMA_VERSION,
            tool: "keep-rsync",
            version: env!("CARGO_PKG_VERSION"),
            status: end.status,
            exit_code: end.exit_code,
            error: end.error.clone(),
            limit_reached: end.limit_reached,
            started_at: stats.started_unix,
            ended_at: unix_now(),
            elapsed_seconds: elapsed,
            prefix: end.prefix.to_string(),
            replications: end.replications,
            dry_run: end.dry_run,
            buffer_memory: end.budgets.buffer_memory,
            index_budget: end.budgets.index_budget,
            passes: stats.passes.load(Relaxed),
            source: service_reports(end.src_services),
            destination: service_reports(end.dst_services),
            plan: end.plan.clone(),
            index_lines: stats.index_lines.load(Relaxed),
            index_bytes: stats.index_bytes.load(Relaxed),
            copied: stats.copied.load(Relaxed),
            copied_bytes,
            topped_up: stats.topped_up.load(Relaxed),
            topped_up_bytes: topped,
            replicas_written: stats.replicas_written.load(Relaxed),
            bytes_written: stats.bytes_written.load(Relaxed),
            verified: stats.verified.load(Relaxed),
            verify_bad: stats.verify_bad.load(Relaxed),
            repaired: stats.repaired.load(Relaxed),
            failed: stats.failed.load(Relaxed),
            failed_bytes: stats.failed_bytes.load(Relaxed),
            rate_bytes_per_second: if elapsed > 0.0 {
                (copied_bytes + topped) as f64 / elapsed
            } else {
                0.0
            },
            failures_omitted: failures.omitted(),
            failures,
            blocks_from: end.blocks_from.map(str::to_string),
            lost_omitted: lost_blocks.omitted(),
            lost_blocks,
            unreachable_services: stats.unreachable(),
        }
    }

    /// Write the JSON report to `path` atomically (a temporary file in the
    /// same directory, then a rename), so a reader never sees half a report.
    /// The failures are streamed, never held as one string.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        #[derive(Serialize)]
        struct WithFailures<'a> {
            #[serde(flatten)]
            report: &'a Report,
            failures: &'a FailureList,
            lost_blocks: &'a LostList,
        }
        let whole = WithFailures {
            report: self,
            failures: &self.failures,
            lost_blocks: &self.lost_blocks,
        };
        crate::atomic_file::write(path, |w| {
            serde_json::to_writer_pretty(&mut *w, &whole).map_err(std::io::Error::other)?;
            std::io::Write::write_all(w, b"\n")
        })
    }

    /// The human summary printed at the end of every run.
    pub fn human(&self) -> String {
        let mut s = String::new();
        self.human_counts(&mut s);
        self.human_lost(&mut s);
        if self.plan.under_replicated > 0 {
            s.push_str(&format!(
                "  under-replicated on the destination only (no source copy to top up from): {}\n",
                self.plan.under_replicated
            ));
        }
        if self.plan.dst_wrong_size > 0 {
            s.push_str(&format!(
                "  destination copies of the wrong size (cut short; not counted, written again): {}\n",
                self.plan.dst_wrong_size
            ));
        }
        if self.dry_run && self.plan.to_write() > 0 {
            self.human_breakdown(&mut s);
        }
        self.human_unreachable(&mut s);
        self.human_failures(&mut s);
        s
    }

    /// `keep-rsync complete`, `keep-rsync interrupted`…: the summary's
    /// first line, and the `msg` of the JSON `summary` event.
    pub fn headline(&self) -> String {
        let status = match self.status {
            Status::Complete => "complete",
            Status::Incomplete if self.plan.lost > 0 && self.failed == 0 && self.dry_run => {
                "dry run (nothing written): listed blocks are lost"
            }
            Status::Incomplete if self.plan.lost > 0 && self.failed == 0 => {
                "finished: listed blocks are lost"
            }
            Status::Incomplete => "finished with failed blocks",
            Status::Unreadable => "stopped: a service or index could not be read",
            Status::Interrupted => "interrupted",
            Status::DryRun => "dry run (nothing written)",
            Status::ConfigError => "stopped: configuration error",
            Status::StoppedAtLimit => {
                return match self.limit_reached {
                    Some(l) => format!("keep-rsync stopped at {} (rerun to continue)", l.flag()),
                    None => "keep-rsync stopped at a limit (rerun to continue)".into(),
                }
            }
        };
        format!("keep-rsync {status}")
    }

    /// Status, then what the plan found and what the run did.
    fn human_counts(&self, s: &mut String) {
        let p = &self.plan;
        s.push_str(&self.headline());
        s.push('\n');
        s.push_str(&format!(
            "  blocks in source: {} ({})   in destination: {} ({})\n",
            p.src_blocks,
            human_bytes(p.src_bytes),
            p.dst_blocks,
            human_bytes(p.dst_bytes)
        ));
        s.push_str(&format!(
            "  to copy: {} ({})   to top up: {} ({})   already present: {}\n",
            p.to_copy,
            human_bytes(p.to_copy_bytes),
            p.to_top_up,
            human_bytes(p.to_top_up_bytes),
            p.present
        ));
        if !self.dry_run {
            s.push_str(&format!(
                "  copied: {} ({})   topped up: {} ({})   failed: {}   replicas written: {}\n",
                self.copied,
                human_bytes(self.copied_bytes),
                self.topped_up,
                human_bytes(self.topped_up_bytes),
                self.failed,
                self.replicas_written
            ));
            if p.to_verify > 0 || self.verified > 0 {
                s.push_str(&format!(
                    "  verified: {}   bad: {}   repaired: {}\n",
                    self.verified, self.verify_bad, self.repaired
                ));
            }
        }
        s.push_str(&format!(
            "  elapsed: {}   rate: {}/s\n",
            human_duration(self.elapsed_seconds),
            human_bytes(self.rate_bytes_per_second as u64)
        ));
    }

    /// `--dry-run`: where the blocks to write are, per source service and
    /// per first hex digit.
    fn human_breakdown(&self, s: &mut String) {
        s.push_str("  per source service (blocks to read there first):\n");
        for (svc, b) in self.source.iter().zip(&self.plan.per_source) {
            s.push_str(&format!(
                "    {} {:>10} blocks {:>12}\n",
                svc.uuid,
                b.blocks,
                human_bytes(b.bytes)
            ));
        }
        s.push_str("  per first hex digit:\n   ");
        for (d, b) in self.plan.per_digit.iter().enumerate() {
            s.push_str(&format!(" {d:x}:{}", b.blocks));
        }
        s.push('\n');
        // Collection records: what the blocks to write want.
        if !self.plan.per_replication.is_empty() {
            s.push_str("  per wanted replication (the most copies any of its classes wants):\n");
            for (n, b) in &self.plan.per_replication {
                s.push_str(&format!(
                    "    {n:>3} {:>10} blocks {:>12}\n",
                    b.blocks,
                    human_bytes(b.bytes)
                ));
            }
        }
        if !self.plan.per_class.is_empty() {
            s.push_str("  per wanted storage class (a block wanting two counts in both):\n");
            for (c, b) in &self.plan.per_class {
                s.push_str(&format!(
                    "    {c:<12} {:>10} blocks {:>12}\n",
                    b.blocks,
                    human_bytes(b.bytes)
                ));
            }
        }
    }

    fn human_unreachable(&self, s: &mut String) {
        for u in &self.unreachable_services {
            let what = if u.role == Role::Source {
                "blocks only it holds were not copied"
            } else {
                "copies it holds were not counted and it got no further writes (replicas went to the next services)"
            };
            s.push_str(&format!(
                "  {} service {} ({}) unreachable: {what}; {}\n",
                u.role, u.uuid, u.url, u.reason
            ));
        }
    }

    /// The first failed blocks (the report lists them all).
    fn human_failures(&self, s: &mut String) {
        const SHOWN: usize = 50;
        if self.failures.is_empty() {
            return;
        }
        s.push_str(&format!("  failed blocks ({}):\n", self.failures.len()));
        for f in self.failures.shown().iter().take(SHOWN) {
            let service = if f.service.is_empty() {
                "-"
            } else {
                &f.service
            };
            s.push_str(&format!("    {} {service}: {}\n", f.locator, f.reason));
        }
        if self.failures.len() > SHOWN as u64 {
            s.push_str(&format!(
                "    … and {} more (see --report)\n",
                self.failures.len() - SHOWN as u64
            ));
        }
        s.push_str(
            "  Rerun the same command to retry them: blocks already copied are not sent again.\n",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_duration(3.25), "3.2s");
        assert_eq!(human_duration(123.0), "2m3s");
        assert_eq!(human_duration(7384.0), "2h3m4s");
    }
}
