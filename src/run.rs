//! One run, stage by stage: settings → services → indexes → plan → copy →
//! report. This module only sequences the stages and turns their outcome
//! into an exit code; each stage lives in its own module.
//!
//! Indexes are fetched and planned in hash sub-prefix passes when a cluster
//! is too big to hold in memory at once: a small probe (1/4096 of the hash
//! space) estimates a pass's cost (index lines plus planned jobs), and the
//! prefix is split into 16^d sub-prefixes so each pass stays under
//! `--index-budget`.
//!
//! With `--blocks-from` the list is read once into a sorted file
//! ([`crate::listed`]) after the sides are ready, each pass plans with its
//! own listed blocks, and lost blocks go to the stats (and exit code 1).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cli::Config;
use crate::copy::{Budget, BufferPool, Copier, CopyOptions};
use crate::error::{exit, Error, Result};
use crate::index::{fetch_all, FetchOptions, Fetched, ServiceIndex};
use crate::limits::Limits;
use crate::listed::ListedBlocks;
use crate::metrics::Metrics;
use crate::passes;
use crate::plan::{plan, PerBlock, PlanCounts, PlanOptions, JOB_COST_ENTRIES};
use crate::progress::{Level, Reporter};
use crate::report::{Ending, Report, Stats, Status};
use crate::services::Side;
use crate::sides::{self, Sides};
use crate::throttle::Throttle;

/// Run keep-rsync to the end and return the process exit code.
pub async fn run(cfg: Config, reporter: Arc<dyn Reporter>, soft: CancellationToken) -> u8 {
    // A report that could not be written would be lost after the whole run.
    if let Some(Err(e)) =
        (cfg.report.as_deref()).map(|p| crate::report::check_report_path(p, "--report"))
    {
        let no_report = Config {
            report: None,
            ..cfg.clone()
        };
        return stopped_early(&no_report, &*reporter, e);
    }
    // The window starts now; `limits.stop()` is what the stages watch.
    let limits = Limits::start(cfg.max_duration, cfg.max_transfer, &soft, reporter.clone());
    match Metrics::start(&cfg, &*reporter).await {
        Ok(metrics) => {
            let code = stages(&cfg, &reporter, &limits, &metrics).await;
            metrics.finish(code, &*reporter).await;
            code
        }
        Err(e) => stopped_early(&cfg, &*reporter, e),
    }
}

/// The run once its metrics are set up: sides, passes, summary.
async fn stages(
    cfg: &Config,
    reporter: &Arc<dyn Reporter>,
    limits: &Limits,
    metrics: &Metrics,
) -> u8 {
    let sides = match sides::prepare(cfg, &**reporter).await {
        Ok(sides) => Arc::new(sides),
        Err(e) => return stopped_early(cfg, &**reporter, e),
    };
    let listed = match crate::listed::read_for_run(
        cfg.blocks_from.as_deref(),
        "--blocks-from",
        &cfg.prefix,
        cfg.budgets().index_budget,
        crate::listed::ListOptions {
            classes: crate::wants::split_classes(cfg.storage_classes.as_deref()),
        },
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return stopped_early(cfg, &**reporter, e),
    };
    let mut run = Run::new(cfg, &sides, &**reporter, limits);
    run.listed = listed.as_ref();
    if let Some(l) = listed.as_ref().filter(|l| l.wants.per_block()) {
        run.dst_classes = (sides.dst.listing_classes())
            .map(|c| l.wants.mask_of(c))
            .collect();
    }
    metrics.attach(sides.clone(), run.stats.clone());
    let mut counts = PlanCounts::new(sides.src.services.len());
    let mut outcome = run.sync(&mut counts).await;
    if matches!(outcome, Err(Error::Interrupted)) && limits.reached().is_some() {
        // --max-duration ended the window before anything was planned.
        limits.cut_short();
        outcome = Ok(());
    }
    let ending = Ending {
        error: outcome.as_ref().err().map(|e| e.to_string()),
        ..run.ending(&outcome, &counts)
    };
    conclude(cfg, &**reporter, &run.stats, ending, true)
}

/// A run that `e` ended before anything was planned: the error paragraph is
/// the whole story, but a report is still left so a shard runner can tell
/// why.
fn stopped_early(cfg: &Config, reporter: &dyn Reporter, e: Error) -> u8 {
    let ending = Ending {
        status: Status::of_error(&e),
        exit_code: e.exit_code(),
        error: Some(e.to_string()),
        limit_reached: None,
        prefix: &cfg.prefix,
        replications: cfg.replications,
        dry_run: cfg.dry_run,
        budgets: cfg.budgets(),
        src_services: &[],
        dst_services: &[],
        plan: &PlanCounts::new(0),
        blocks_from: cfg.blocks_from.as_deref(),
    };
    conclude(cfg, reporter, &Stats::new(), ending, false)
}

/// End a run: clear progress, log the error if any, print the human summary
/// (when something was planned), write `--report`, and return the exit code.
/// The report streams the spilled failure lists from disk: file work, done
/// off the async workers.
fn conclude(
    cfg: &Config,
    reporter: &dyn Reporter,
    stats: &Stats,
    ending: Ending<'_>,
    summary: bool,
) -> u8 {
    passes::off_workers(|| conclude_here(cfg, reporter, stats, ending, summary))
}

/// [`conclude`]'s work, on the thread it is called on.
fn conclude_here(
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
    reporter.summary(&report, summary);
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

/// What the passes of one run share: the flags, both sides, the counters,
/// who watches, and the stop signal.
struct Run<'a> {
    cfg: &'a Config,
    src: &'a Side,
    dst: &'a Side,
    want: u32,
    /// What each destination store's listing counts for.
    dst_credits: &'a [u32],
    /// Shared with the metrics, which read it at each scrape.
    stats: Arc<Stats>,
    reporter: &'a dyn Reporter,
    /// Cancelled when no new work may start: a signal or a cron-window limit.
    soft: &'a CancellationToken,
    limits: &'a Limits,
    fetch: FetchOptions,
    /// `--blocks-from`, read and sorted.
    listed: Option<&'a ListedBlocks>,
    /// Collection records: each destination store's classes, as a mask of
    /// the list's classes (empty without them).
    dst_classes: Vec<u64>,
    /// Collection records: what each destination store's listing counts
    /// for, a keepproxy's as complete.
    dst_credits_per_block: Vec<u32>,
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a Config,
        sides: &'a Sides,
        reporter: &'a dyn Reporter,
        limits: &'a Limits,
    ) -> Run<'a> {
        let stats = Arc::new(Stats::new());
        if let Some(path) = &cfg.report {
            stats.spill_beside(path);
        }
        Run {
            cfg,
            src: &sides.src,
            dst: &sides.dst,
            want: sides.want,
            dst_credits: &sides.dst_credits,
            stats,
            reporter,
            soft: limits.stop(),
            limits,
            fetch: FetchOptions {
                checkers: cfg.conc.checkers,
                retries: cfg.net.retries,
                backoff: cfg.net.backoff(),
                recycle: Default::default(),
            },
            listed: None,
            dst_classes: Vec::new(),
            dst_credits_per_block: sides.dst.credits(crate::wants::MAX_REPLICATION),
        }
    }

    /// What the listed blocks' collections want, when they were collection
    /// records.
    fn per_block(&self) -> Option<PerBlock<'_>> {
        let l = self.listed.filter(|l| l.wants.per_block())?;
        Some(PerBlock {
            wants: &l.wants,
            dst_classes: &self.dst_classes,
            dst_credits: &self.dst_credits_per_block,
            default: self.want,
            replications: (self.cfg.replications > 0).then_some(self.cfg.replications),
        })
    }

    /// How the run ended, from the outcome of the passes.
    fn ending(&self, outcome: &Result<()>, counts: &'a PlanCounts) -> Ending<'a> {
        let failed = self.stats.failed.load(Relaxed);
        let limit = self.limits.stopped_by();
        let (status, exit_code) = match outcome {
            Err(e) => (Status::of_error(e), e.exit_code()),
            Ok(()) if self.limits.signalled() => (Status::Interrupted, exit::INTERRUPTED),
            // A service that could not be read leaves the plan (or the copy)
            // incomplete, in a dry run too.
            Ok(()) if failed > 0 || self.stats.any_down() || counts.lost > 0 => {
                (Status::Incomplete, exit::BLOCKS_FAILED)
            }
            // The window ended with work left: the rerun continues.
            Ok(()) if limit.is_some() => (Status::StoppedAtLimit, exit::STOPPED_AT_LIMIT),
            Ok(()) if self.cfg.dry_run => (Status::DryRun, exit::OK),
            Ok(()) => (Status::Complete, exit::OK),
        };
        Ending {
            status,
            exit_code,
            error: None,
            limit_reached: limit,
            prefix: &self.cfg.prefix,
            replications: self.want,
            dry_run: self.cfg.dry_run,
            budgets: self.cfg.budgets(),
            src_services: &self.src.services,
            dst_services: &self.dst.services,
            plan: counts,
            blocks_from: self.cfg.blocks_from.as_deref(),
        }
    }

    fn plan_options(&self) -> PlanOptions<'_> {
        PlanOptions {
            src_rank: &self.src.rank,
            dst_credits: self.dst_credits,
            want: self.want,
            verify_existing: self.cfg.verify_existing,
            jobs: !self.cfg.dry_run,
            listed: None,
            per_block: self.per_block(),
        }
    }

    fn copy_options(&self) -> CopyOptions {
        CopyOptions {
            want: self.want,
            transfers: self.cfg.conc.transfers,
            retries: self.cfg.net.retries,
            backoff: self.fetch.backoff,
            storage_classes: self.cfg.storage_classes.clone(),
            throttle: self.cfg.bwlimit.filter(|&r| r > 0).map(Throttle::new),
            budget: Budget::new(self.cfg.budgets().buffer_memory),
            stream: self.cfg.streaming(),
        }
    }

    /// Index, plan and copy, pass by pass.
    async fn sync(&self, counts: &mut PlanCounts) -> Result<()> {
        let prefixes = self.passes().await?;
        self.stats.passes.store(prefixes.len() as u64, Relaxed);
        let copy_opts = self.copy_options();
        let copier = Copier {
            src: self.src,
            dst: self.dst,
            opts: &copy_opts,
            stats: &self.stats,
            reporter: self.reporter,
            limits: self.limits,
            ordinal: AtomicU64::new(0),
            total: AtomicU64::new(0),
            pool: BufferPool::new(copy_opts.budget.total()),
            per_block: self.per_block(),
            finishing: Default::default(),
        };
        for (k, prefix) in prefixes.iter().enumerate() {
            if !self.limits.before_pass() {
                break;
            }
            let pass_started = std::time::Instant::now();
            self.stats.pass.store(k as u64 + 1, Relaxed);
            tracing::info!(
                event = "pass_start",
                pass = k + 1,
                passes = prefixes.len(),
                prefix = prefix.as_str(),
                "pass {} of {}: prefix {prefix:?}",
                k + 1,
                prefixes.len()
            );
            let Some((src_idx, dst_idx)) = self.indexes(prefix, k == 0).await? else {
                self.limits.cut_short();
                return Ok(());
            };
            let p = self.plan_pass(prefix, &src_idx, &dst_idx, self.plan_options())?;
            if p.jobs.is_empty() {
                // The next pass parses into these.
                self.fetch.recycle.give(src_idx);
                self.fetch.recycle.give(dst_idx);
            } else {
                // The copy gets the memory back.
                drop((src_idx, dst_idx));
                self.fetch.recycle.clear();
            }
            counts.add(&p.counts);
            self.stats.planned(&p.counts);
            self.reporter.planned(&p.counts, k + 1, prefixes.len());
            if !p.jobs.is_empty() {
                copier.total.fetch_add(p.jobs.len() as u64, Relaxed);
                copier.run(&p, self.soft).await;
            }
            self.stats.end_pass();
            tracing::info!(
                event = "pass_end",
                pass = k + 1,
                passes = prefixes.len(),
                prefix = prefix.as_str(),
                planned = p.jobs.len(),
                seconds = pass_started.elapsed().as_secs_f64(),
                "pass {} of {} done: {} blocks planned, {:.3}s",
                k + 1,
                prefixes.len(),
                p.jobs.len(),
                pass_started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Plan one pass, restricted to its listed blocks with `--blocks-from`
    /// (loaded for the pass, freed with it); lost blocks go to the stats.
    fn plan_pass(
        &self,
        prefix: &str,
        src: &[ServiceIndex],
        dst: &[ServiceIndex],
        opts: PlanOptions<'_>,
    ) -> Result<crate::plan::Plan> {
        let Some(l) = self.listed else {
            return Ok(passes::off_workers(|| plan(src, dst, &opts)));
        };
        // Reading the pass's listed blocks and recording its lost ones is
        // file work, planning is CPU.
        let p = passes::off_workers(|| {
            let listed = l.load(prefix)?;
            let p = plan(
                src,
                dst,
                &PlanOptions {
                    listed: Some(&listed),
                    ..opts
                },
            );
            self.stats.lost(&p.lost);
            Ok::<_, crate::error::Error>(p)
        })?;
        if let Some(first) = p.lost.first() {
            self.reporter.log(
                Level::Warn,
                &format!(
                    "{} listed block{} under prefix {prefix:?} {} on no source or destination \
                     service (lost), the first {}",
                    p.lost.len(),
                    if p.lost.len() == 1 { "" } else { "s" },
                    if p.lost.len() == 1 { "is" } else { "are" },
                    crate::report::lost_locator(first)
                ),
            );
        }
        Ok(p)
    }

    /// One pass's indexes, both sides; `None` when interrupted meanwhile
    /// (an error if nothing was planned yet).
    async fn indexes(
        &self,
        prefix: &str,
        first: bool,
    ) -> Result<Option<(Vec<ServiceIndex>, Vec<ServiceIndex>)>> {
        // Services found down (by the probe, an earlier pass or a copy) are
        // not asked again: each would cost its full retries every pass.
        let sides = [self.src, self.dst];
        let (targets, refs) = passes::targets(&sides);
        let total = targets.len();
        self.reporter.indexes(total, total);
        let on_index = |left| self.reporter.indexes(left, total);
        let fetched = tokio::select! {
            r = fetch_all(&targets, prefix, &self.fetch, &self.stats.index_bytes, &on_index) => r?,
            _ = self.soft.cancelled() => return if first { Err(Error::Interrupted) } else { Ok(None) },
        };
        let [s, d] = passes::collect(&sides, fetched, &refs, &self.stats, self.reporter, true)?;
        Ok(Some((s, d)))
    }

    /// The prefixes to work through: just `--prefix`, or its sub-prefixes
    /// when the probe says one pass would not fit `--index-budget`. A pass
    /// costs its index entries plus its planned jobs (each weighed as
    /// [`JOB_COST_ENTRIES`] entries), so both are bounded. Services the probe
    /// finds unreachable are marked down here, once, for the whole run.
    async fn passes(&self) -> Result<Vec<String>> {
        let prefix = &self.cfg.prefix;
        let Some(probe) = passes::probe_prefix(prefix) else {
            return Ok(vec![prefix.clone()]);
        };
        let sides = [self.src, self.dst];
        let (targets, refs) = passes::targets(&sides);
        let ignore = AtomicU64::new(0);
        let fetched = tokio::select! {
            r = fetch_all(&targets, &probe, &self.fetch, &ignore, &|_| {}) => r?,
            _ = self.soft.cancelled() => return Err(Error::Interrupted),
        };
        let probe_lines: u64 = fetched
            .iter()
            .map(|f| match f {
                Fetched::Index(ix) => ix.lines,
                Fetched::Down(_) => 0,
            })
            .sum();
        let [s, d] = passes::collect(&sides, fetched, &refs, &self.stats, self.reporter, false)?;
        let opts = self.plan_options();
        let probe_jobs = if opts.jobs {
            let counts = self.probe_plan(&probe, &s, &d, opts)?;
            counts.to_write() + counts.to_verify
        } else {
            0
        };
        let cost = probe_lines + JOB_COST_ENTRIES * probe_jobs;
        // A listed block costs a budget line while its pass is planned (its
        // entry, and its lost entry if it is lost); counted exactly.
        let listed = match self.listed {
            Some(l) => l.count(prefix)?,
            None => 0,
        };
        let estimate = passes::estimate(cost, listed);
        let budget = self.cfg.budgets().index_budget;
        let depth = passes::split_depth(estimate, budget, 32 - prefix.len());
        tracing::info!(
            event = "passes",
            probe = probe.as_str(),
            probe_lines,
            probe_jobs,
            estimate,
            index_budget = budget,
            passes = 16u64.pow(depth as u32),
            "probe {probe:?}: {probe_lines} index lines and {probe_jobs} blocks to write, about \
             {estimate} per pass over {prefix:?} against --index-budget {budget}: {} pass(es)",
            16u64.pow(depth as u32)
        );
        Ok(passes::sub_prefixes(prefix, depth))
    }
}

impl Run<'_> {
    /// The probe's plan counts (no jobs, no lost blocks recorded).
    fn probe_plan(
        &self,
        probe: &str,
        s: &[ServiceIndex],
        d: &[ServiceIndex],
        opts: PlanOptions<'_>,
    ) -> Result<PlanCounts> {
        let listed = self.listed.map(|l| l.load(probe)).transpose()?;
        let opts = PlanOptions {
            jobs: false,
            listed: listed.as_deref(),
            ..opts
        };
        Ok(passes::off_workers(|| plan(s, d, &opts)).counts)
    }
}
