//! Progress: how a run shows what it is doing. One [`Reporter`] trait fed by
//! the stages, three renderers:
//!
//! - `Bars`: indicatif bars on a terminal (index countdown; blocks and bytes
//!   with rate and ETA), log lines printed above them;
//! - `Plain`: timestamped lines like the Go tool's, for cron and log files
//!   (`getting indexes: N...`, `copying data block i of n (x% done, ETA …): HASH+SIZE`);
//! - `Json`: one JSON object per event on stderr (`--log-format json`), with
//!   rclone's field names (`time`, `level`, `msg`, `object`, `size`).
//!
//! With `--log-format json` every stderr line is one JSON object: the end
//! summary is a `summary` event (the report's fields), diagnostics (`-v`)
//! come through [`Reporter::print`] already formatted as JSON, and the few
//! messages written before a reporter exists (or where none is at hand) use
//! [`log_without_reporter`].
//!
//! Messages never carry signatures: reporters see unsigned locators only.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::console::{human_duration, timestamp, timestamp_rfc3339};
pub use crate::console::{log_without_reporter, Level};
use crate::plan::{Job, PlanCounts};
use crate::report::Report;

/// What the stages tell the person (or log collector) watching.
pub trait Reporter: Send + Sync {
    /// A free-form message.
    fn log(&self, level: Level, msg: &str);
    /// `remaining` of `total` index requests are still outstanding.
    fn indexes(&self, remaining: usize, total: usize);
    /// A plan (or one sub-prefix pass of it) is ready.
    fn planned(&self, counts: &PlanCounts, pass: usize, passes: usize);
    /// A block is about to be copied; `ordinal` counts from 1 over `total`.
    fn block_started(&self, ordinal: u64, total: u64, job: &Job);
    /// A block finished (`error` is `None` on success).
    fn block_finished(&self, job: &Job, error: Option<&str>);
    /// Bytes of block data have arrived (progress only), counted per request
    /// as each chunk arrives.
    fn bytes(&self, _n: u64) {}
    /// A read failed after `n` bytes: they will be read again (from this or
    /// another holder), so progress takes them back.
    fn bytes_undone(&self, _n: u64) {}
    /// The run is over: clear bars before the summary.
    fn finish(&self) {}
    /// Finished lines (diagnostics, already formatted) for stderr, printed
    /// above the bars when there are bars.
    fn print(&self, text: &str) {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
    /// The end of the run: the human summary when something was `planned`
    /// (otherwise the error said it all). The JSON renderer emits its
    /// `summary` event either way.
    fn summary(&self, report: &Report, planned: bool) {
        if planned {
            self.print(&report.human());
        }
    }
}

/// The renderer for this run: JSON events, bars on a terminal, or plain
/// Go-style lines (also with `-q`, which drops the per-block lines).
pub fn for_output(format: crate::cli::LogFormat, quiet: bool) -> std::sync::Arc<dyn Reporter> {
    use std::io::IsTerminal;
    crate::console::set_json_lines(format == crate::cli::LogFormat::Json);
    match format {
        crate::cli::LogFormat::Json => std::sync::Arc::new(Json { quiet }),
        crate::cli::LogFormat::Text if std::io::stderr().is_terminal() && !quiet => {
            std::sync::Arc::new(Bars::new())
        }
        crate::cli::LogFormat::Text => std::sync::Arc::new(Plain::new(quiet)),
    }
}

/// Shared progress arithmetic: blocks and bytes done against the plan.
struct Tally {
    started: Instant,
    total_bytes: AtomicU64,
    done_bytes: AtomicU64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            started: Instant::now(),
            total_bytes: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
        }
    }
    fn eta(&self) -> Option<f64> {
        let (done, total) = (
            self.done_bytes.load(Relaxed),
            self.total_bytes.load(Relaxed),
        );
        if done == 0 || total < done {
            return None;
        }
        Some(self.started.elapsed().as_secs_f64() * (total - done) as f64 / done as f64)
    }
}

/// Go-style plain lines on stderr.
pub struct Plain {
    tally: Tally,
    quiet: bool,
}

impl Plain {
    pub fn new(quiet: bool) -> Plain {
        Plain {
            tally: Tally::new(),
            quiet,
        }
    }
}

impl Reporter for Plain {
    fn log(&self, level: Level, msg: &str) {
        let tag = match level {
            Level::Info => "",
            Level::Warn => "warning: ",
            Level::Error => "error: ",
        };
        eprintln!("{} {tag}{msg}", timestamp());
    }
    fn indexes(&self, remaining: usize, _total: usize) {
        if remaining > 0 {
            eprintln!("{} getting indexes: {remaining}...", timestamp());
        }
    }
    fn planned(&self, c: &PlanCounts, pass: usize, passes: usize) {
        self.tally
            .total_bytes
            .fetch_add(c.to_write_bytes() + c.to_verify_bytes, Relaxed);
        let at = if passes > 1 {
            format!(" (pass {pass} of {passes})")
        } else {
            String::new()
        };
        eprintln!(
            "{} there are {} blocks in src and {} blocks in dst{at}; copying {} blocks, topping up {}{}",
            timestamp(),
            c.src_blocks,
            c.dst_blocks,
            c.to_copy,
            c.to_top_up,
            if c.to_verify > 0 { format!(", verifying {}", c.to_verify) } else { String::new() }
        );
    }
    fn block_started(&self, ordinal: u64, total: u64, job: &Job) {
        if self.quiet {
            return;
        }
        let pct = if total > 0 {
            (ordinal - 1) as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let eta = match self.tally.eta() {
            Some(s) => format!(", ETA {}", human_duration(s)),
            None => String::new(),
        };
        eprintln!(
            "{} {} data block {ordinal} of {total} ({pct:.2}% done{eta}): {}+{}",
            timestamp(),
            match job.action {
                crate::plan::Action::Copy => "copying",
                crate::plan::Action::TopUp => "topping up",
                crate::plan::Action::Verify => "verifying",
            },
            job.hash,
            job.size
        );
    }
    fn block_finished(&self, job: &Job, error: Option<&str>) {
        self.tally.done_bytes.fetch_add(job.size as u64, Relaxed);
        if let Some(e) = error {
            eprintln!(
                "{} error: block {}+{} failed: {e}",
                timestamp(),
                job.hash,
                job.size
            );
        }
    }
}

/// One JSON object per event on stderr. With `-q`, as in plain text, no
/// `block_start` events and `block_done` only for failed blocks.
pub struct Json {
    pub quiet: bool,
}

impl Json {
    fn emit(&self, level: Level, msg: &str, extra: serde_json::Value) {
        let mut v = json!({"time": timestamp_rfc3339(), "level": level.as_str(), "msg": msg});
        if let (Some(obj), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            obj.extend(extra);
        }
        let _ = writeln!(std::io::stderr().lock(), "{v}");
    }
}

impl Reporter for Json {
    fn log(&self, level: Level, msg: &str) {
        self.emit(level, msg, json!({"event": "log"}));
    }
    /// The `summary` event: the report's fields (all but the failure list,
    /// whose blocks were `block_done` events), whatever happened.
    fn summary(&self, report: &Report, _planned: bool) {
        let level = match report.exit_code {
            0 => Level::Info,
            crate::error::exit::INTERRUPTED => Level::Warn,
            _ => Level::Error,
        };
        let mut fields = serde_json::to_value(report).unwrap_or_else(|_| json!({}));
        if let Some(obj) = fields.as_object_mut() {
            obj.insert("event".into(), "summary".into());
        }
        self.emit(level, &report.headline(), fields);
    }
    fn indexes(&self, remaining: usize, total: usize) {
        self.emit(
            Level::Info,
            "getting indexes",
            json!({"event": "indexes", "remaining": remaining, "total": total}),
        );
    }
    fn planned(&self, c: &PlanCounts, pass: usize, passes: usize) {
        self.emit(
            Level::Info,
            "plan ready",
            json!({"event": "plan", "pass": pass, "passes": passes, "plan": c}),
        );
    }
    fn block_started(&self, ordinal: u64, total: u64, job: &Job) {
        if self.quiet {
            return;
        }
        self.emit(
            Level::Info,
            "copying block",
            json!({"event": "block_start", "object": format!("{}+{}", job.hash, job.size), "size": job.size, "action": job.action, "ordinal": ordinal, "total": total}),
        );
    }
    fn block_finished(&self, job: &Job, error: Option<&str>) {
        if self.quiet && error.is_none() {
            return;
        }
        let (level, msg) = if error.is_some() {
            (Level::Error, "block failed")
        } else {
            (Level::Info, "block done")
        };
        self.emit(
            level,
            msg,
            json!({"event": "block_done", "object": format!("{}+{}", job.hash, job.size), "size": job.size, "action": job.action, "ok": error.is_none(), "error": error}),
        );
    }
}

/// indicatif bars on a terminal. Nothing is drawn before there is work: the
/// index bar joins the display when the first index request goes out, the
/// blocks and bytes bars when a plan has something to copy. So a run that
/// stops on a settings error shows its error line alone, and no empty
/// `0/0` bar is left on screen above the real ones.
pub struct Bars {
    mp: MultiProgress,
    index: ProgressBar,
    blocks: ProgressBar,
    bytes: ProgressBar,
    lines: Mutex<()>,
    index_shown: std::sync::Once,
    work_shown: std::sync::Once,
}

/// A bar that draws nothing until it is added to the display.
fn unattached(template: &str, prefix: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(prefix);
    bar
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)),
            index: unattached("{prefix:>8} {wide_bar} {pos}/{len} services", "indexes"),
            blocks: unattached("{prefix:>8} {wide_bar} {pos}/{len} blocks", "blocks"),
            bytes: unattached(
                "{prefix:>8} {wide_bar} {bytes}/{total_bytes}  {bytes_per_sec} ETA {eta}",
                "bytes",
            ),
            lines: Mutex::new(()),
            index_shown: std::sync::Once::new(),
            work_shown: std::sync::Once::new(),
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}

impl Reporter for Bars {
    fn log(&self, level: Level, msg: &str) {
        let _g = self.lines.lock();
        let tag = match level {
            Level::Info => "",
            Level::Warn => "warning: ",
            Level::Error => "error: ",
        };
        let _ = self.mp.println(format!("{tag}{msg}"));
    }
    fn print(&self, text: &str) {
        let _g = self.lines.lock();
        self.mp.suspend(|| {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        });
    }
    fn indexes(&self, remaining: usize, total: usize) {
        if total == 0 {
            return;
        }
        self.index.set_length(total as u64);
        self.index.set_position((total - remaining) as u64);
        self.index_shown.call_once(|| {
            self.mp.add(self.index.clone());
            self.index.enable_steady_tick(Duration::from_millis(250));
        });
        if remaining == 0 {
            self.index.finish();
        }
    }
    fn planned(&self, c: &PlanCounts, _pass: usize, _passes: usize) {
        if c.to_write() + c.to_verify == 0 {
            return;
        }
        self.blocks.inc_length(c.to_write() + c.to_verify);
        self.bytes
            .inc_length(c.to_write_bytes() + c.to_verify_bytes);
        self.work_shown.call_once(|| {
            self.mp.add(self.blocks.clone());
            self.mp.add(self.bytes.clone());
        });
    }
    fn block_started(&self, _ordinal: u64, _total: u64, _job: &Job) {}
    fn block_finished(&self, job: &Job, error: Option<&str>) {
        self.blocks.inc(1);
        if let Some(e) = error {
            self.log(
                Level::Error,
                &format!("block {}+{} failed: {e}", job.hash, job.size),
            );
        }
    }
    fn bytes(&self, n: u64) {
        self.bytes.inc(n);
    }
    fn bytes_undone(&self, n: u64) {
        self.bytes.dec(n);
    }
    fn finish(&self) {
        self.index.finish_and_clear();
        self.blocks.finish_and_clear();
        self.bytes.finish_and_clear();
        let _ = self.mp.clear();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 19, "{t}");
        assert_eq!(&t[4..5], "/");
        assert!(t.starts_with("20"));
        assert!(super::timestamp_rfc3339().ends_with('Z'));
    }
}
