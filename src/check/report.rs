//! keep-block-check's `--report FILE`: keep-rsync's conventions (schema
//! version, status and exit code, times, per-service requests, unreachable
//! services, a sorted block list that spills to disk, an atomic write),
//! with the Go tool's totals. Schema: docs/report-schema.md.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use super::cli::{CheckConfig, Mode};
use super::Tally;
use crate::report::{
    service_reports, unix_now, LostList, ServiceReport, Stats, Status, UnreachableService,
    SCHEMA_VERSION,
};
use crate::services::Side;

#[derive(Serialize)]
struct CheckReport {
    schema_version: u32,
    tool: &'static str,
    version: &'static str,
    status: Status,
    exit_code: u8,
    error: Option<String>,
    started_at: f64,
    ended_at: f64,
    elapsed_seconds: f64,
    prefix: String,
    mode: Mode,
    block_hash_file: String,
    index_budget: u64,
    passes: u64,
    services: Vec<ServiceReport>,
    index_lines: u64,
    index_bytes: u64,
    bytes_read: u64,
    attempts: u64,
    successes: u64,
    errors: u64,
    bad_copies: u64,
    /// Collection records: blocks found with fewer copies than their
    /// collections want (also in `errors`).
    under_replicated: u64,
    missing_blocks: LostList,
    missing_omitted: u64,
    unreachable_services: Vec<UnreachableService>,
}

/// Write the report, if one was asked for; a failure to write it is logged.
pub(super) fn write(
    cfg: &CheckConfig,
    stats: &Stats,
    tally: &Tally,
    side: Option<&Side>,
    status: Status,
    exit_code: u8,
    error: Option<String>,
) {
    let Some(path) = &cfg.report else {
        return;
    };
    let attempts = tally.attempts.load(Relaxed);
    let errors = tally.errors.load(Relaxed);
    let missing = stats.lost_list();
    let r = CheckReport {
        schema_version: SCHEMA_VERSION,
        tool: "keep-block-check",
        version: env!("CARGO_PKG_VERSION"),
        status,
        exit_code,
        error,
        started_at: stats.started_unix,
        ended_at: unix_now(),
        elapsed_seconds: stats.started.elapsed().as_secs_f64(),
        prefix: cfg.prefix.clone(),
        mode: cfg.mode(),
        block_hash_file: cfg.block_hash_file.clone(),
        index_budget: cfg.index_budget(),
        passes: tally.passes.load(Relaxed),
        services: side
            .map(|s| service_reports(&s.services))
            .unwrap_or_default(),
        index_lines: stats.index_lines.load(Relaxed),
        index_bytes: stats.index_bytes.load(Relaxed),
        bytes_read: stats.bytes_read.load(Relaxed),
        attempts,
        successes: attempts - errors,
        errors,
        bad_copies: tally.bad_copies.load(Relaxed),
        under_replicated: tally.under_replicated.load(Relaxed),
        missing_omitted: missing.omitted(),
        missing_blocks: missing,
        unreachable_services: stats.unreachable(),
    };
    // The missing blocks stream from their spill file: off the async workers.
    let written = crate::passes::off_workers(|| {
        crate::atomic_file::write(path, |w| {
            serde_json::to_writer_pretty(&mut *w, &r).map_err(std::io::Error::other)?;
            std::io::Write::write_all(w, b"\n")
        })
    });
    if let Err(e) = written {
        super::say(&format!(
            "error: could not write the report {}: {e}",
            path.display()
        ));
    }
}
