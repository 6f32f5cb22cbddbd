//! keep-block-check: are the blocks a list names in this cluster?
//!
//! A drop-in for Arvados' Go `keep-block-check` (flags, settings files, log
//! lines and exit status 0/1; configuration errors exit 2 and unreadable
//! services 3 where Go exits 1), built from keep-rsync's parts: settings and
//! services ([`crate::sides::prepare_cluster`]), the block list
//! ([`crate::listed`], shared with `--blocks-from`), indexes and sub-prefix
//! passes ([`crate::index`], [`crate::passes`]), the plan's listed
//! merge ([`crate::plan`]: with no source, what it calls lost is missing),
//! signing ([`crate::services::Side::locator_for`]), body verification
//! ([`crate::copy::verify_body`]) and the report's stats and block lists.
//!
//! Three modes ([`cli::Mode`]):
//! - **index** (default): one index request per service per pass, instead
//!   of one request per block; a block is found when any service lists it;
//! - **probe**: a signed `HEAD` per block through its probe order (all
//!   services but gateways), `--transfers` blocks at a time, as the Go tool
//!   asks (one at a time);
//! - **read**: a signed `GET` per block, length and MD5 checked as it
//!   streams (nothing held); a corrupt copy is logged and counted, and the
//!   next copy in probe order is tried. A block of unknown size (a bare
//!   hash) is asked with a `HEAD` first.
//!
//! Memory: the list is on disk; index mode holds one pass (as keep-rsync's
//! indexing phase: 40 B × `--index-budget`); probe and read modes hold the
//! blocks in flight's requests and a 64 KiB list cursor.

pub mod cli;
mod report;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::console::timestamp;
use crate::error::{exit, Error, Result};
use crate::index::{fetch_all, Entry, FetchOptions, ServiceIndex};
use crate::listed::sort::{KeepFirst, Sorter};
use crate::listed::{ListedBlocks, UNKNOWN_SIZE};
use crate::passes;
use crate::plan::{plan, PlanOptions};
use crate::progress::{Level, Reporter};
use crate::protocol::client::{with_retries, Backoff, Failure, FailureKind, Op};
use crate::report::{lost_locator, Stats, Status};
use crate::services::Side;
use crate::sides::{ClusterFlags, Connection};
use cli::{CheckConfig, Mode};

/// A Go `log` line on stderr: `2006/01/02 15:04:05 msg` (UTC).
fn say(msg: &str) {
    eprintln!("{} {msg}", timestamp());
}

/// The `keep-block-check` program: argv → exit code.
pub fn main(argv: Vec<std::ffi::OsString>) -> u8 {
    crate::console::set_program("keep-block-check");
    let cfg = match cli::parse(argv) {
        Err(e) => {
            if let Some(msg) = crate::cli::describe_clap_error(&e) {
                eprintln!("keep-block-check: {msg}");
                return exit::USAGE;
            }
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
        Ok(Err(e)) => {
            eprintln!("keep-block-check: {e}");
            return e.exit_code();
        }
        Ok(Ok(cfg)) => cfg,
    };
    crate::raise_open_file_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keep-block-check: cannot start the async runtime: {e}");
            return exit::USAGE;
        }
    };
    rt.block_on(async move {
        let soft = CancellationToken::new();
        tokio::spawn(crate::signals::watch(
            soft.clone(),
            || say("interrupted: finishing the blocks being checked (signal again to stop at once)"),
            || {},
        ));
        run(cfg, soft).await
    })
}

/// What a check counts besides [`Stats`].
#[derive(Default)]
struct Tally {
    /// Blocks checked (found or not).
    attempts: AtomicU64,
    errors: AtomicU64,
    /// `--read`: copies that failed their length or MD5 check.
    bad_copies: AtomicU64,
    /// Hash sub-prefix passes (index mode).
    passes: AtomicU64,
    /// Collection records (index mode): blocks found with fewer copies than
    /// their collections want (counted in `errors` too).
    under_replicated: AtomicU64,
}

/// One check, shared by its blocks.
struct Check<'a> {
    cfg: &'a CheckConfig,
    side: &'a Side,
    /// Collection records: the cluster's default replication.
    default_replication: u32,
    listed: &'a ListedBlocks,
    stats: &'a Stats,
    tally: Tally,
    soft: &'a CancellationToken,
    backoff: Backoff,
    /// Blocks to check (`attempts` once done): listed under the prefix.
    total: u64,
    log: &'a dyn Reporter,
}

/// Check the list against the cluster; returns the exit code.
pub async fn run(cfg: CheckConfig, soft: CancellationToken) -> u8 {
    let stats = Stats::new();
    if let Some(path) = &cfg.report {
        if let Err(e) = crate::report::check_report_path(path, "--report") {
            eprintln!("keep-block-check: {e}");
            return e.exit_code();
        }
        stats.spill_beside(path);
    }
    let log = crate::progress::Plain::new(true);
    let flags = ClusterFlags {
        config: &cfg.config,
        services_json: cfg.services_json.as_deref(),
        cluster_config: cfg.cluster_config.as_deref(),
        via: cfg.via,
        volume_dirs: &cfg.volume_dirs,
        volumes: cfg.volumes.as_deref(),
        cluster: cfg.cluster.as_deref(),
        ttl: cfg.ttl,
        signs: cfg.mode() != Mode::Index,
        conn: Connection {
            connect_timeout: cfg.net.connect_timeout,
            stall_timeout: cfg.net.stall_timeout,
            max_per_service: cfg.conc.max_per_service,
            adaptive: !cfg.conc.fixed_concurrency,
            checkers: cfg.conc.checkers,
            retries: cfg.net.retries,
            backoff: cfg.net.backoff(),
        },
    };
    let stop = |e: Error, side: Option<&Side>, tally: &Tally| {
        eprintln!("keep-block-check: {e}");
        report::write(
            &cfg,
            &stats,
            tally,
            side,
            Status::of_error(&e),
            e.exit_code(),
            Some(e.to_string()),
        );
        e.exit_code()
    };
    let (side, default) = match crate::sides::prepare_cluster_with_default(&flags, &log).await {
        Ok(s) => s,
        Err(e) => return stop(e, None, &Tally::default()),
    };
    let listed = match crate::listed::read_list(
        &cfg.block_hash_file,
        "-block-hash-file",
        &cfg.prefix,
        cfg.index_budget(),
        Default::default(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return stop(e, Some(&side), &Tally::default()),
    };
    // Collection records with null replication need the cluster's default.
    let default = if listed.wants.per_block() && cfg.replications == 0 {
        match default.resolve().await {
            Ok(n) => n,
            Err(e) => return stop(e, Some(&side), &Tally::default()),
        }
    } else {
        0
    };
    if listed.wants.per_block() && cfg.mode() != Mode::Index {
        say(
            "collection records: --probe and --read check that each block is there, not its \
             replication; the index mode (the default) checks both",
        );
    }
    let check = Check {
        cfg: &cfg,
        side: &side,
        default_replication: default,
        listed: &listed,
        stats: &stats,
        tally: Tally::default(),
        soft: &soft,
        backoff: cfg.net.backoff(),
        total: listed.len(),
        log: &log,
    };
    // Nothing listed under the prefix: nothing to ask (0 attempts, exit 0).
    let outcome = match cfg.mode() {
        _ if check.total == 0 => Ok(()),
        Mode::Index => check.by_index().await,
        Mode::Probe | Mode::Read => check.by_block().await,
    };
    if let Err(e) = outcome {
        return stop(e, Some(&side), &check.tally);
    }
    let (attempts, errors) = (
        check.tally.attempts.load(Relaxed),
        check.tally.errors.load(Relaxed),
    );
    say(&format!(
        "Verify block totals: {attempts} attempts, {} successes, {errors} errors",
        attempts - errors
    ));
    let (status, code) = if soft.is_cancelled() {
        say(&format!(
            "interrupted after {attempts} of {} blocks: rerun to check them all",
            check.total
        ));
        (Status::Interrupted, exit::INTERRUPTED)
    } else if errors > 0 {
        say(&format!(
            "Block verification failed for {errors} out of {attempts} blocks with matching prefix."
        ));
        (Status::Incomplete, exit::BLOCKS_FAILED)
    } else {
        (Status::Complete, exit::OK)
    };
    report::write(&cfg, &stats, &check.tally, Some(&side), status, code, None);
    code
}

impl Check<'_> {
    /// The block's name in log lines: `HASH+SIZE`, or `HASH` (never signed).
    fn started(&self, n: u64, e: &Entry) {
        if self.cfg.verbose {
            say(&format!(
                "Verifying block {n} of {}: {}",
                self.total,
                lost_locator(e)
            ));
        }
    }

    fn missing(&self, e: &Entry, why: &str) {
        self.tally.errors.fetch_add(1, Relaxed);
        say(&format!("Error verifying block {}: {why}", lost_locator(e)));
    }

    /// Fetch every readable service's index for `prefix`, in service order
    /// (an empty list for a service that is down; [`passes::collect`]).
    async fn indexes(
        &self,
        prefix: &str,
        opts: &FetchOptions,
        count_lines: bool,
    ) -> Result<Vec<ServiceIndex>> {
        let sides = [self.side];
        let (targets, refs) = passes::targets(&sides);
        let fetched = fetch_all(&targets, prefix, opts, &self.stats.index_bytes, &|_| {}).await?;
        let [idx] = passes::collect(&sides, fetched, &refs, self.stats, self.log, count_lines)?;
        Ok(idx)
    }

    /// Services the indexes were read from.
    fn readable(&self) -> usize {
        passes::targets(&[self.side]).0.len()
    }

    /// Index mode: per pass, every service's index and the pass's listed
    /// blocks, merged by the plan with no source: lost = missing.
    async fn by_index(&self) -> Result<()> {
        let opts = FetchOptions {
            checkers: self.cfg.conc.checkers,
            retries: self.cfg.net.retries,
            backoff: self.backoff,
            recycle: Default::default(),
        };
        let passes = self.passes(&opts).await?;
        self.tally.passes.store(passes.len() as u64, Relaxed);
        for prefix in &passes {
            if self.soft.is_cancelled() {
                break;
            }
            let idx = tokio::select! {
                r = self.indexes(prefix, &opts, true) => r?,
                _ = self.soft.cancelled() => break,
            };
            // Loading the listed blocks, planning and the per-block verdicts
            // are file and CPU work: off the async workers.
            passes::off_workers(|| self.check_pass(prefix, &idx))?;
            opts.recycle.give(idx);
        }
        Ok(())
    }

    /// Index mode, one pass once its indexes are read: each listed block
    /// found missing or under-replicated is told and counted.
    fn check_pass(&self, prefix: &str, idx: &[ServiceIndex]) -> Result<()> {
        let listed = self.listed.load(prefix)?;
        // Copies a listing stands for, read-only stores included.
        let credits: Vec<u32> = self.side.replicas_held();
        let wants = &self.listed.wants;
        let classes: Vec<u64> = (self.side.listing_classes())
            .map(|c| wants.mask_of(c))
            .collect();
        let per_block = wants.per_block().then_some(crate::plan::PerBlock {
            wants,
            dst_classes: &classes,
            dst_credits: &credits,
            default: self.default_replication,
            replications: (self.cfg.replications > 0).then_some(self.cfg.replications),
        });
        let p = plan(
            &[],
            idx,
            &PlanOptions {
                src_rank: &crate::store::Ranking::services(Vec::new()),
                dst_credits: &credits,
                want: 1,
                verify_existing: false,
                jobs: false,
                listed: Some(&listed),
                per_block,
            },
        );
        let why = format!(
            "not in the index of any of the {} keep services read",
            self.readable()
        );
        let mut lost = p.lost.iter().peekable();
        let mut short = p.short.iter().peekable();
        for l in &listed {
            let e = &l.entry();
            let n = self.tally.attempts.fetch_add(1, Relaxed) + 1;
            self.started(n, e);
            if lost.peek().is_some_and(|x| x.hash == e.hash) {
                lost.next();
                self.missing(e, &why);
            } else if let Some(s) = short.next_if(|x| x.entry.hash == e.hash) {
                self.tally.under_replicated.fetch_add(1, Relaxed);
                let classes: Vec<String> = (s.classes.iter().enumerate())
                    .map(|(k, (c, have, want))| match k {
                        0 => format!("{have} of {want} copies wanted in {c}"),
                        _ => format!("{have} of {want} in {c}"),
                    })
                    .collect();
                self.missing(e, &format!("under-replicated: {}", classes.join(", ")));
            }
        }
        self.stats.lost(&p.lost);
        Ok(())
    }

    /// The passes of index mode: `-prefix`, or its sub-prefixes when a
    /// probe of 1/4096 of it says one pass would not fit `--index-budget`
    /// (index lines plus listed blocks), as keep-rsync splits its runs.
    async fn passes(&self, opts: &FetchOptions) -> Result<Vec<String>> {
        let prefix = &self.cfg.prefix;
        let Some(probe) = passes::probe_prefix(prefix) else {
            return Ok(vec![prefix.clone()]);
        };
        let idx = tokio::select! {
            r = self.indexes(&probe, opts, false) => r?,
            _ = self.soft.cancelled() => return Ok(Vec::new()),
        };
        let lines: u64 = idx.iter().map(|i| i.lines).sum();
        let listed = self.listed.count(prefix)?;
        Ok(passes::split(
            prefix,
            lines,
            listed,
            self.cfg.index_budget(),
        ))
    }

    /// Probe and read modes: each listed block, `--transfers` at a time.
    /// Missing blocks finish in any order: they are sorted on disk for the
    /// report (its list is in hash order, like keep-rsync's lost blocks).
    async fn by_block(&self) -> Result<()> {
        let cursor = self.listed.cursor(&self.cfg.prefix)?;
        let mut missing = Sorter::<Entry>::new(1 << 16);
        let s = stream::iter(cursor)
            .take_until(self.soft.cancelled())
            .map(|e| async move {
                let e = e?.entry();
                let n = self.tally.attempts.fetch_add(1, Relaxed) + 1;
                self.started(n, &e);
                let r = match self.cfg.mode() {
                    Mode::Read => self.read_one(&e).await,
                    _ => self.probe_one(&e).await.map(|_| ()),
                };
                Ok::<_, Error>((e, r))
            })
            .buffer_unordered(
                self.cfg
                    .conc
                    .transfers
                    .unwrap_or(crate::cli::DEFAULT_TRANSFERS),
            );
        futures::pin_mut!(s);
        while let Some(done) = s.next().await {
            let (e, r) = done?;
            if let Err(why) = r {
                self.missing(&e, &why);
                missing.push(e, &mut KeepFirst).map_err(|e| spill(&e))?;
            }
        }
        // Sorting the missing blocks and recording them is file work.
        passes::off_workers(|| {
            let (file, _) = missing.finish(&mut KeepFirst).map_err(|e| spill(&e))?;
            let mut chunk = Vec::with_capacity(4096);
            for e in crate::listed::sort::records::<Entry>(file) {
                chunk.push(e.map_err(|e| spill(&e))?);
                if chunk.len() == 4096 {
                    self.stats.lost(&chunk);
                    chunk.clear();
                }
            }
            self.stats.lost(&chunk);
            Ok(())
        })
    }

    /// Services to ask for a block, in its probe order.
    fn order(&self, e: &Entry) -> Vec<usize> {
        (self.side.rank.order(&e.hash).into_iter())
            .map(usize::from)
            .filter(|&i| self.side.services[i].store.readable())
            .collect()
    }

    /// One request to service `i`, retried on transient failures, counted
    /// against it; a service that stays unreachable is marked down.
    async fn ask<T, F, Fut>(&self, i: usize, op: F) -> std::result::Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let svc = &self.side.services[i];
        if svc.is_down() {
            return Err(Failure::new(
                FailureKind::Unreachable,
                "found unreachable earlier in this check",
            ));
        }
        // The --max-per-service slot is held per attempt, not through the
        // backoff between attempts.
        let r = with_retries(self.backoff, self.cfg.net.retries, &(), |_| async {
            let _slot = svc.limit.acquire().await;
            let asked = std::time::Instant::now();
            let r = op().await;
            svc.limit
                .observe(crate::limiter::signal_of(&r, asked.elapsed(), false));
            r
        })
        .await;
        svc.stats
            .count(Op::Get, &r.as_ref().map_err(|(f, _)| f.clone()), 0);
        r.map_err(|(f, attempts)| {
            if let Some(msg) = self.side.refused(i, &f) {
                self.log.log(Level::Warn, &msg);
            }
            if f.kind == FailureKind::Unreachable {
                let why = format!("unreachable after {attempts} attempts: {f}");
                passes::mark_down(self.side, i, &why, self.stats, self.log);
            }
            f
        })
    }

    /// `HEAD` through the probe order until a service has the block: its
    /// size, if the answer gave one. `Err`: why it counts as missing.
    async fn probe_one(&self, e: &Entry) -> std::result::Result<Option<u64>, String> {
        let size = (e.size != UNKNOWN_SIZE).then_some(e.size as u64);
        let mut why = Vec::new();
        for i in self.order(e) {
            let svc = &self.side.services[i].store;
            match self.ask(i, || svc.head(&e.hash, size)).await {
                Ok(len) => return Ok(len.or(size)),
                Err(f) => why.push((svc.id().to_string(), f)),
            }
        }
        Err(not_found(&why))
    }

    /// `GET` through the probe order until a copy has the right length and
    /// MD5. A bad copy is read again once (a connection may have broken),
    /// then logged, counted and skipped.
    async fn read_one(&self, e: &Entry) -> std::result::Result<(), String> {
        let size = if e.size != UNKNOWN_SIZE {
            e.size as u64
        } else {
            match self.probe_one(e).await? {
                Some(s) => s,
                None => {
                    return Err("a HEAD found it but gave no Content-Length to read it with".into())
                }
            }
        };
        let mut why = Vec::new();
        for i in self.order(e) {
            let svc = &self.side.services[i].store;
            let mut r = Err(Failure::new(FailureKind::BadData, "not read"));
            for _ in 0..2 {
                r = self.ask(i, || self.read_from(i, e, size)).await;
                if !matches!(&r, Err(f) if f.kind == FailureKind::BadData) {
                    break;
                }
            }
            match r {
                Ok(()) => return Ok(()),
                Err(f) => {
                    if f.kind == FailureKind::BadData {
                        self.tally.bad_copies.fetch_add(1, Relaxed);
                        self.log.log(
                            Level::Warn,
                            &format!("block {} on {}: {f}", lost_locator(e), svc.label()),
                        );
                    }
                    why.push((svc.id().to_string(), f));
                }
            }
        }
        Err(not_found(&why))
    }

    /// One verified read of the block from service `i`; its bytes are
    /// hashed and dropped.
    async fn read_from(&self, i: usize, e: &Entry, size: u64) -> std::result::Result<(), Failure> {
        let svc = &self.side.services[i];
        let body = svc.store.read(&e.hash, size).await?;
        let on_bytes = |n: u64| {
            self.stats.bytes_read.fetch_add(n, Relaxed);
            svc.stats.bytes.fetch_add(n, Relaxed);
        };
        crate::copy::verify_body(body, &e.hash, size, None, &on_bytes, drop).await
    }
}

/// Why no service gave the block: "Block not found" when every service
/// said 404, else each service's answer.
fn not_found(why: &[(String, Failure)]) -> String {
    if why.is_empty() {
        return "no keep service left to ask".into();
    }
    if why.iter().all(|(_, f)| f.kind == FailureKind::NotFound) {
        return format!(
            "Block not found (404 from all {} keep services asked)",
            why.len()
        );
    }
    let mut parts: Vec<String> = why
        .iter()
        .take(4)
        .map(|(id, f)| format!("{id}: {f}"))
        .collect();
    if why.len() > 4 {
        parts.push(format!("… {} more", why.len() - 4));
    }
    parts.join("; ")
}

fn spill(e: &std::io::Error) -> Error {
    Error::unreadable(format!(
        "cannot keep the list of missing blocks in a temporary file in $TMPDIR ({}): {e}",
        std::env::temp_dir().display()
    ))
}
