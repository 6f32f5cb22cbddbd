//! Diagnostics: why a run is slow, while it runs (`-v`, `-vv`, `RUST_LOG`).
//!
//! The stages emit `tracing` events: at `info` (`-v`) every retry (side,
//! service, operation, status or error, attempt, backoff delay), every
//! failover to the next holder or destination service, a re-read after bad
//! data, a service marked down, sub-prefix pass boundaries and the probe's
//! estimate, and one timing per service index; at `debug` (`-vv`) one line
//! per block request. `RUST_LOG`, when set, replaces what `-v` selects
//! (`tracing-subscriber`'s EnvFilter syntax: `keep_rsync::copy=debug`).
//! Each of our events carries an `event` field naming it (`retry`,
//! `failover`, `reread`, `service_down`, `pass_start`, `pass_end`, `passes`,
//! `index`, `request`).
//!
//! This module owns how those events are written, beside the progress
//! renderer (`progress::Reporter`), which stays the run's voice (warnings,
//! errors, progress, summary): each formatted line goes through
//! [`Reporter::print`], so on a terminal it prints above the bars; in text
//! form it has a Go-style timestamp like the plain progress lines; with
//! `--log-format json` it is one JSON object with the reporter's `time`,
//! `level`, `msg` and `event` fields and the event's own fields beside them
//! (collected by `tracing-subscriber`'s JSON visitor).
//!
//! Cost: without `-v` or `RUST_LOG` no subscriber is installed, and each
//! event site costs one relaxed load; at `-v` the `debug` sites cost the
//! same. No event is emitted per chunk of data.
//!
//! Secrets: our events name services by uuid, blocks as `HASH+SIZE`, and
//! failures by their (redacted) text. Only `tracing` events are shown:
//! there is no `log` bridge, so reqwest's records (which name URLs) never
//! reach the output. And every line passes through `redact_signatures`
//! before it is written, in case a dependency's event at `RUST_LOG=trace`
//! names a signed locator.

use std::io;
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::VisitOutput;
use tracing_subscriber::fmt::format::{JsonVisitor, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;
use crate::progress::{Level, Reporter};

/// The filter for `-v` given `verbose` times, unless `RUST_LOG` says more.
/// `None`: no diagnostics at all.
fn filter(verbose: u8, rust_log: Option<&str>, reporter: &dyn Reporter) -> Option<EnvFilter> {
    if let Some(directives) = rust_log.filter(|d| !d.trim().is_empty()) {
        match EnvFilter::builder().parse(directives) {
            Ok(f) => return Some(f),
            Err(e) => reporter.log(
                Level::Warn,
                &format!(
                    "ignoring RUST_LOG={directives:?}: {e}; write e.g. RUST_LOG=keep_rsync=debug \
                     or RUST_LOG=keep_rsync::copy=debug,info"
                ),
            ),
        }
    }
    let level = match verbose {
        0 => return None,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    EnvFilter::builder()
        .parse(format!("keep_rsync={level}"))
        .ok()
}

/// Install the diagnostics subscriber for this process (`-v` given `verbose`
/// times, `RUST_LOG`), writing through `reporter`. Does nothing when neither
/// asks for diagnostics.
pub fn init(verbose: u8, format: LogFormat, reporter: Arc<dyn Reporter>) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let Some(filter) = filter(verbose, rust_log.as_deref(), &*reporter) else {
        return;
    };
    let writer = ThroughReporter(reporter);
    let layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLine)
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_timer(GoTime)
            .with_target(false)
            .with_ansi(false)
            .with_writer(writer)
            .boxed(),
    };
    // Fails only when a subscriber is installed already (a second run in
    // one process): that one then stays.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// The Go-style timestamp of the plain progress lines.
struct GoTime;

impl tracing_subscriber::fmt::time::FormatTime for GoTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(&crate::console::timestamp())
    }
}

/// One event as one JSON object with the reporter's field names.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = String::new();
        let mut visitor = JsonVisitor::new(&mut fields);
        event.record(&mut visitor);
        visitor.finish()?;
        let mut fields: Map<String, Value> = serde_json::from_str(&fields).unwrap_or_default();
        let msg = match fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("time".into(), crate::console::timestamp_rfc3339().into());
        line.insert("level".into(), level_name(meta.level()).into());
        line.insert("msg".into(), msg.into());
        line.insert(
            "event".into(),
            fields
                .remove("event")
                .unwrap_or_else(|| "diagnostic".into()),
        );
        line.insert("target".into(), meta.target().into());
        for (k, v) in fields {
            line.entry(k).or_insert(v);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The reporter's level names (`warning`, not `warn`).
fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warning",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

/// Hands each formatted event to the reporter, whole, so that it prints
/// above the bars and never between the pieces of another line.
struct ThroughReporter(Arc<dyn Reporter>);

impl<'a> MakeWriter<'a> for ThroughReporter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            to: &*self.0,
            buf: Vec::new(),
        }
    }
}

/// One event's text, collected, then printed (redacted) when dropped.
struct Line<'a> {
    to: &'a dyn Reporter,
    buf: Vec<u8>,
}

impl io::Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let text = String::from_utf8_lossy(&self.buf);
            self.to.print(&crate::protocol::redact_signatures(&text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A reporter that keeps what it is given to print.
    #[derive(Default)]
    struct Kept(Mutex<String>);

    impl Reporter for Kept {
        fn log(&self, _: Level, msg: &str) {
            self.print(&format!("log: {msg}\n"));
        }
        fn indexes(&self, _: usize, _: usize) {}
        fn planned(&self, _: &crate::plan::PlanCounts, _: usize, _: usize) {}
        fn block_started(&self, _: u64, _: u64, _: &crate::plan::Job) {}
        fn block_finished(&self, _: &crate::plan::Job, _: Option<&str>) {}
        fn print(&self, text: &str) {
            self.0.lock().unwrap().push_str(text);
        }
    }

    #[test]
    fn verbosity_and_rust_log_choose_the_filter() {
        let r = Kept::default();
        assert!(filter(0, None, &r).is_none());
        assert!(filter(0, Some(""), &r).is_none());
        assert_eq!(filter(1, None, &r).unwrap().to_string(), "keep_rsync=info");
        assert_eq!(filter(2, None, &r).unwrap().to_string(), "keep_rsync=debug");
        assert_eq!(
            filter(0, Some("keep_rsync::copy=debug"), &r)
                .unwrap()
                .to_string(),
            "keep_rsync::copy=debug"
        );
        // A bad RUST_LOG is said and -v applies.
        assert_eq!(
            filter(1, Some("keep_rsync=loud"), &r).unwrap().to_string(),
            "keep_rsync=info"
        );
        assert!(r.0.lock().unwrap().contains("ignoring RUST_LOG"));
    }

    #[test]
    fn json_lines_carry_the_reporters_fields_and_no_signature() {
        let kept = Arc::new(Kept::default());
        let layer = tracing_subscriber::fmt::layer()
            .event_format(JsonLine)
            .with_writer(ThroughReporter(kept.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                event = "retry",
                service = "zzzzz-bi6l4-000000000000000",
                attempt = 2u32,
                error = "GET acbd18db4cc2f85cedef654fccc4a4d8+3+A89118b78732c33104a4d6231e8b5a5fa1e4301e3@7fffffff: HTTP 503",
                "retrying"
            );
        });
        let text = kept.0.lock().unwrap().clone();
        let v: Value = serde_json::from_str(text.trim()).expect(&text);
        assert_eq!(v["event"], "retry");
        assert_eq!(v["level"], "info");
        assert_eq!(v["msg"], "retrying");
        assert_eq!(v["attempt"], 2);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(!text.contains("89118b78"), "{text}");
        assert!(text.contains("+A…"), "{text}");
    }
}
