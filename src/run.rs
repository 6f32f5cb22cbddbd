//! One run, stage by stage: settings → services → indexes → plan → copy →
//! report. This module only sequences the stages and turns their outcome
//! into an exit code; each stage lives in its own module.
//!
//! Indexes are fetched and planned in hash sub-prefix passes when a cluster
//! is too big to hold in memory at once: a small probe (1/4096 of the hash
//! space) estimates the index size, and the prefix is split into 16^d
//! sub-prefixes so each pass stays under `--index-budget` lines.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cli::Config;
use crate::copy::{Budget, Copier, CopyOptions};
use crate::error::{exit, Error, Result};
use crate::index::{fetch_all, FetchOptions, Fetched, ServiceIndex, Target};
use crate::plan::{plan, PlanCounts, PlanOptions, JOB_COST_ENTRIES};
use crate::progress::{Level, Reporter};
use crate::protocol::client::{Backoff, ClientOptions, KeepClient};
use crate::report::{Ending, Report, Stats, Status};
use crate::services::{self, Discovery, KeepService, Side};
use crate::settings::{self, Settings};
use crate::throttle::Throttle;

/// The default blob signature TTL of Arvados (two weeks).
pub const DEFAULT_TTL: u64 = 1_209_600;

/// Run keep-rsync to the end and return the process exit code.
pub async fn run(cfg: Config, reporter: Arc<dyn Reporter>, soft: CancellationToken) -> u8 {
    let (src, dst, want) = match prepare(&cfg, &*reporter).await {
        Ok(sides) => sides,
        Err(e) => {
            // Nothing was planned: the error paragraph is the whole story, but
            // a report is still left so a shard runner can tell why.
            let ending = Ending {
                status: Status::of_error(&e),
                exit_code: e.exit_code(),
                error: Some(e.to_string()),
                prefix: &cfg.prefix,
                replications: cfg.replications,
                dry_run: cfg.dry_run,
                src_services: &[],
                dst_services: &[],
                plan: &PlanCounts::new(0),
            };
            return conclude(&cfg, &*reporter, &Stats::new(0, 0), ending, false);
        }
    };
    let stats = Stats::new(src.services.len(), dst.services.len());
    if let Some(path) = &cfg.report {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        stats.spill_failures_in(dir);
    }
    let mut counts = PlanCounts::new(src.services.len());
    let outcome = sync(
        &cfg,
        &src,
        &dst,
        want,
        &stats,
        &mut counts,
        &*reporter,
        &soft,
    )
    .await;
    let failed = stats.failed.load(Relaxed);
    let (status, exit_code, error) = match &outcome {
        Err(e) => (Status::of_error(e), e.exit_code(), Some(e.to_string())),
        Ok(()) if soft.is_cancelled() => (Status::Interrupted, exit::INTERRUPTED, None),
        // A service that could not be read leaves the plan (or the copy)
        // incomplete, in a dry run too.
        Ok(()) if failed > 0 || stats.any_down() => (Status::Incomplete, exit::BLOCKS_FAILED, None),
        Ok(()) if cfg.dry_run => (Status::DryRun, exit::OK, None),
        Ok(()) => (Status::Complete, exit::OK, None),
    };
    let ending = Ending {
        status,
        exit_code,
        error,
        prefix: &cfg.prefix,
        replications: want,
        dry_run: cfg.dry_run,
        src_services: &src.services,
        dst_services: &dst.services,
        plan: &counts,
    };
    conclude(&cfg, &*reporter, &stats, ending, true)
}

/// End a run: clear progress, log the error if any, print the human summary
/// (when something was planned), write `--report`, and return the exit code.
fn conclude(
    cfg: &Config,
    reporter: &dyn Reporter,
    stats: &Stats,
    ending: Ending<'_>,
    summary: bool,
) -> u8 {
    reporter.finish();
    if let Some(e) = &ending.error {
        reporter.log(Level::Error, e);
    }
    let report = Report::build(stats, &ending);
    if summary {
        eprint!("{}", report.human());
    }
    if let Some(path) = &cfg.report {
        if let Err(e) = report.write_to(path) {
            reporter.log(
                Level::Error,
                &format!("could not write the report {}: {e}", path.display()),
            );
        }
    }
    ending.exit_code
}

/// Settings, services and defaults for both sides; everything that can be
/// wrong with the configuration is found here, before any index is fetched.
async fn prepare(cfg: &Config, reporter: &dyn Reporter) -> Result<(Side, Side, u32)> {
    // With raw volumes as the source, the source cluster need not exist.
    let src_settings = if !cfg.src_volume_dirs.is_empty() && cfg.src.is_empty() {
        Settings::default()
    } else {
        settings::load(&cfg.src, "source", "-src")?
    };
    let dst_settings = settings::load(&cfg.dst, "destination", "-dst")?;
    for w in src_settings.warnings.iter().chain(&dst_settings.warnings) {
        reporter.log(Level::Warn, w);
    }
    let src_services = if !cfg.src_volume_dirs.is_empty() {
        crate::volume::services(&cfg.src_volume_dirs)?
    } else {
        side_services(
            &src_settings,
            cfg.src_services_json.as_deref(),
            "source",
            "-src-keep-services-json",
            cfg,
        )
        .await?
    };
    let dst_services = side_services(
        &dst_settings,
        cfg.dst_services_json.as_deref(),
        "destination",
        "-dst-keep-services-json",
        cfg,
    )
    .await?;
    if let Some(s) = src_services.iter().find(|s| {
        dst_services
            .iter()
            .any(|d| d.url() == s.url() || d.uuid == s.uuid)
    }) {
        return Err(Error::config(format!(
            "the source and destination both list {}: copying a cluster onto itself does nothing \
             useful. Check -src/-dst and the services lists.",
            s.label()
        )));
    }
    // The discovery document is read only when a default is needed.
    let need_dst_doc = cfg.replications == 0
        || (cfg.verify_existing && dst_settings.blob_signing_key.is_some() && cfg.dst_ttl == 0);
    let need_src_doc = src_settings.blob_signing_key.is_some()
        && cfg.src_ttl == 0
        && cfg.src_volume_dirs.is_empty();
    let dst_doc = if need_dst_doc {
        let flag = if cfg.replications == 0 {
            "-replications N"
        } else {
            "-dst-blob-signature-ttl DURATION"
        };
        discovery(&dst_settings, "destination", flag, cfg).await?
    } else {
        Discovery::default()
    };
    let src_doc = if need_src_doc {
        let flag = "-src-blob-signature-ttl DURATION (the source's blobSignatureTtl, needed to sign locators)";
        discovery(&src_settings, "source", flag, cfg).await?
    } else {
        Discovery::default()
    };
    let want = if cfg.replications > 0 {
        cfg.replications
    } else {
        dst_doc.default_replication.filter(|&n| n > 0).ok_or_else(|| {
            Error::unreadable(format!(
                "the destination API server ({}) gave no defaultCollectionReplication: pass -replications N.",
                dst_settings.api_host
            ))
        })?
    };
    let writable: Vec<&KeepService> = dst_services.iter().filter(|s| s.writable()).collect();
    if writable.is_empty() {
        return Err(Error::config("the destination has no writable keep service (all are read-only or gateways): nothing can be copied there.".to_string()));
    }
    if !writable.iter().any(|s| s.is_proxy()) && want as usize > writable.len() {
        return Err(Error::config(format!(
            "-replications {want} is more than the {} writable destination services: each replica \
             needs its own keepstore. Lower -replications or add services.",
            writable.len()
        )));
    }
    let src_ttl = if cfg.src_ttl > 0 {
        cfg.src_ttl
    } else {
        src_doc.blob_signature_ttl.unwrap_or(DEFAULT_TTL)
    };
    let dst_ttl = if cfg.dst_ttl > 0 {
        cfg.dst_ttl
    } else {
        dst_doc.blob_signature_ttl.unwrap_or(DEFAULT_TTL)
    };
    let src = make_side("source", src_settings, src_services, src_ttl, cfg)?;
    let dst = make_side("destination", dst_settings, dst_services, dst_ttl, cfg)?;
    Ok((src, dst, want))
}

async fn side_services(
    s: &Settings,
    json: Option<&str>,
    role: &'static str,
    flag: &str,
    cfg: &Config,
) -> Result<Vec<KeepService>> {
    match json {
        Some(arg) => {
            let (text, origin) = services::read_services_arg(arg, flag)?;
            services::parse_services(&text, &origin, role)
        }
        None => {
            services::fetch_accessible(&services::api_client(s, cfg.connect_timeout)?, s, role)
                .await
        }
    }
}

async fn discovery(s: &Settings, role: &str, needed_for: &str, cfg: &Config) -> Result<Discovery> {
    services::fetch_discovery(
        &services::api_client(s, cfg.connect_timeout)?,
        s,
        role,
        needed_for,
    )
    .await
}

fn make_side(
    role: &'static str,
    settings: Settings,
    services: Vec<KeepService>,
    ttl: u64,
    cfg: &Config,
) -> Result<Side> {
    let opts = ClientOptions {
        connect_timeout: cfg.connect_timeout,
        stall_timeout: cfg.stall_timeout,
        insecure: settings.insecure,
        pool_per_host: cfg.max_per_service.max(cfg.checkers),
    };
    let client = KeepClient::new(&settings.api_token, &opts).map_err(Error::config)?;
    let limits = services
        .iter()
        .map(|_| Arc::new(Semaphore::new(cfg.max_per_service)))
        .collect();
    let down = services.iter().map(|_| AtomicBool::new(false)).collect();
    Ok(Side {
        role,
        settings,
        services,
        client,
        ttl,
        limits,
        down,
    })
}

/// Index, plan and copy, pass by pass.
#[allow(clippy::too_many_arguments)]
async fn sync(
    cfg: &Config,
    src: &Side,
    dst: &Side,
    want: u32,
    stats: &Stats,
    counts: &mut PlanCounts,
    reporter: &dyn Reporter,
    soft: &CancellationToken,
) -> Result<()> {
    let fetch = FetchOptions {
        checkers: cfg.checkers,
        retries: cfg.retries,
        backoff: Backoff {
            base: cfg.retry_backoff,
            max: cfg.retry_backoff.saturating_mul(30),
        },
        recycle: Default::default(),
    };
    let plan_opts = PlanOptions {
        src_services: &src.services,
        dst_services: &dst.services,
        want,
        verify_existing: cfg.verify_existing,
        jobs: !cfg.dry_run,
    };
    let prefixes = passes(cfg, [src, dst], &plan_opts, &fetch, stats, reporter, soft).await?;
    let copy_opts = CopyOptions {
        want,
        transfers: cfg.transfers,
        retries: cfg.retries,
        backoff: fetch.backoff,
        storage_classes: cfg.storage_classes.clone(),
        throttle: cfg.bwlimit.map(Throttle::new),
        budget: Budget::new(cfg.buffer_memory),
        stream: cfg.streaming,
    };
    let copier = Copier {
        src,
        dst,
        opts: &copy_opts,
        stats,
        reporter,
        ordinal: AtomicU64::new(0),
        total: AtomicU64::new(0),
    };
    for (k, prefix) in prefixes.iter().enumerate() {
        if soft.is_cancelled() {
            break;
        }
        // Services found down (by the probe, an earlier pass or a copy) are
        // not asked again: each would cost its full retries every pass.
        let (targets, refs) = index_targets([src, dst]);
        let total = targets.len();
        reporter.indexes(total, total);
        let on_index = |left| reporter.indexes(left, total);
        let fetched = tokio::select! {
            r = fetch_all(&targets, prefix, &fetch, &stats.index_bytes, &on_index) => r?,
            // Interrupted while indexing: nothing of this pass was planned.
            _ = soft.cancelled() => return if k == 0 { Err(Error::Interrupted) } else { Ok(()) },
        };
        let (src_idx, dst_idx) =
            collect_indexes(fetched, &refs, [src, dst], stats, reporter, true)?;
        let p = plan(&src_idx, &dst_idx, &plan_opts);
        if p.jobs.is_empty() {
            // The next pass parses into these.
            fetch.recycle.give(src_idx);
            fetch.recycle.give(dst_idx);
        } else {
            // The copy gets the memory back.
            drop((src_idx, dst_idx));
            fetch.recycle.clear();
        }
        counts.add(&p.counts);
        reporter.planned(&p.counts, k + 1, prefixes.len());
        if !p.jobs.is_empty() {
            copier.total.fetch_add(p.jobs.len() as u64, Relaxed);
            copier.run(&p, soft).await;
        }
        stats.end_pass();
    }
    Ok(())
}

/// The services to index: every non-gateway service of both sides that is
/// not marked down, with (side, service) for each.
fn index_targets<'s>(sides: [&'s Side; 2]) -> (Vec<Target<'s>>, Vec<(usize, usize)>) {
    let mut targets = Vec::new();
    let mut refs = Vec::new();
    for (k, side) in sides.into_iter().enumerate() {
        for (i, s) in side.services.iter().enumerate() {
            if s.is_gateway() || side.is_down(i) {
                continue;
            }
            targets.push(Target {
                role: side.role,
                service: s,
                client: &side.client,
            });
            refs.push((k, i));
        }
    }
    (targets, refs)
}

/// Put fetched indexes back in service order for each side. Unreachable
/// services get empty lists, are marked down (later passes and copies skip
/// them; said once, here) and are reported; a side with no readable service
/// at all ends the run (exit 3). `count_lines`: add the lines to the run's
/// index totals (not for the probe).
fn collect_indexes(
    fetched: Vec<Fetched>,
    refs: &[(usize, usize)],
    sides: [&Side; 2],
    stats: &Stats,
    reporter: &dyn Reporter,
    count_lines: bool,
) -> Result<(Vec<ServiceIndex>, Vec<ServiceIndex>)> {
    let empty = |side: &Side| -> Vec<ServiceIndex> {
        side.services
            .iter()
            .map(|_| ServiceIndex {
                entries: Vec::new(),
                lines: 0,
            })
            .collect()
    };
    let mut out = [empty(sides[0]), empty(sides[1])];
    for (f, &(k, i)) in fetched.into_iter().zip(refs) {
        let st = if k == 0 { &stats.src[i] } else { &stats.dst[i] };
        st.requests.fetch_add(1, Relaxed);
        match f {
            Fetched::Index(ix) => {
                if count_lines {
                    stats.index_lines.fetch_add(ix.lines, Relaxed);
                }
                out[k][i] = ix;
            }
            Fetched::Down(why) => {
                st.errors.fetch_add(1, Relaxed);
                let side = sides[k];
                if !side.down[i].swap(true, Relaxed) {
                    reporter.log(
                        Level::Warn,
                        &format!(
                            "{} service {}: {why}; it is left out for the rest of this run{}",
                            side.role,
                            side.services[i].label(),
                            if k == 0 {
                                " (blocks only it holds are not copied)"
                            } else {
                                " (its copies are not counted and it gets no writes)"
                            }
                        ),
                    );
                }
                stats.service_down(side.role, &side.services[i], &why);
            }
        }
    }
    for side in sides {
        let readable = side
            .services
            .iter()
            .enumerate()
            .filter(|(i, s)| !s.is_gateway() && !side.is_down(*i));
        if readable.count() == 0 {
            return Err(Error::unreadable(format!(
                "no {} keep service could be read: {}. Nothing was planned. Check that the services \
                 are up and reachable from this host.",
                side.role,
                side.services.iter().map(|s| s.label()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let [s, d] = out;
    Ok((s, d))
}

/// The prefixes to work through: just `cfg.prefix`, or its sub-prefixes when
/// the probe says one pass would not fit `--index-budget`. A pass costs its
/// index entries plus its planned jobs (each weighed as
/// [`JOB_COST_ENTRIES`] entries), so both are bounded. Services the probe
/// finds unreachable are marked down here, once, for the whole run.
async fn passes(
    cfg: &Config,
    sides: [&Side; 2],
    plan_opts: &PlanOptions<'_>,
    fetch: &FetchOptions,
    stats: &Stats,
    reporter: &dyn Reporter,
    soft: &CancellationToken,
) -> Result<Vec<String>> {
    const PROBE_DIGITS: usize = 3;
    if cfg.prefix.len() + PROBE_DIGITS > 32 {
        return Ok(vec![cfg.prefix.clone()]);
    }
    let probe = format!("{}{}", cfg.prefix, "0".repeat(PROBE_DIGITS));
    let (targets, refs) = index_targets(sides);
    let ignore = AtomicU64::new(0);
    let fetched = tokio::select! {
        r = fetch_all(&targets, &probe, fetch, &ignore, &|_| {}) => r?,
        _ = soft.cancelled() => return Err(Error::Interrupted),
    };
    let probe_lines: u64 = fetched
        .iter()
        .map(|f| match f {
            Fetched::Index(ix) => ix.lines,
            Fetched::Down(_) => 0,
        })
        .sum();
    let (s, d) = collect_indexes(fetched, &refs, sides, stats, reporter, false)?;
    let probe_jobs = if plan_opts.jobs {
        let counts = plan(
            &s,
            &d,
            &PlanOptions {
                jobs: false,
                ..*plan_opts
            },
        )
        .counts;
        counts.to_write() + counts.to_verify
    } else {
        0
    };
    let cost = probe_lines + JOB_COST_ENTRIES * probe_jobs;
    let estimate = cost.saturating_mul(16u64.pow(PROBE_DIGITS as u32));
    let depth = split_depth(estimate, cfg.index_budget, 32 - cfg.prefix.len());
    Ok(sub_prefixes(&cfg.prefix, depth))
}

/// Smallest number of extra hex digits that brings `estimate` lines per pass
/// under `budget`.
pub fn split_depth(estimate: u64, budget: u64, max_depth: usize) -> usize {
    let mut depth = 0;
    let mut per_pass = estimate;
    while per_pass > budget && depth < max_depth.min(4) {
        per_pass /= 16;
        depth += 1;
    }
    depth
}

/// `prefix` extended by every combination of `depth` hex digits, in order.
pub fn sub_prefixes(prefix: &str, depth: usize) -> Vec<String> {
    let n = 16usize.pow(depth as u32);
    (0..n)
        .map(|i| {
            if depth == 0 {
                prefix.to_string()
            } else {
                format!("{prefix}{i:0depth$x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_splitting() {
        assert_eq!(split_depth(0, 4_000_000, 32), 0);
        assert_eq!(split_depth(3_999_999, 4_000_000, 32), 0);
        assert_eq!(split_depth(38_000_000, 4_000_000, 32), 1);
        assert_eq!(split_depth(400_000_000, 4_000_000, 32), 2);
        assert_eq!(split_depth(u64::MAX, 4_000_000, 2), 2);
        assert_eq!(sub_prefixes("a", 0), vec!["a"]);
        let s = sub_prefixes("a", 2);
        assert_eq!(s.len(), 256);
        assert_eq!((s[0].as_str(), s[255].as_str()), ("a00", "aff"));
    }
}
