//! Prometheus metrics: `--metrics-textfile PATH` (node_exporter's textfile
//! collector, for cron jobs) and `--metrics-addr HOST:PORT` (`GET /metrics`
//! while the run lasts), with the Prometheus project's Rust client
//! (`prometheus-client`).
//!
//! Nothing is counted twice for them: a `prometheus-client` [`Collector`]
//! reads the run's own atomic counters (`report::Stats`, each service's
//! `ServiceStats`) when the metrics are encoded, at a scrape or a textfile
//! write. The hot paths pay nothing for the metrics but the per-request
//! atomic increments of `ServiceStats::answers` and `retries`.
//!
//! Names (Prometheus style: `keep_rsync_` prefix, counters end in `_total`,
//! units in the name) and labels are documented in docs/operations.md.
//! Every metric carries `prefix`, the run's `-prefix`, so that 16 jobs on
//! one host do not collide.
//!
//! Format: `prometheus-client` writes OpenMetrics text; node_exporter's
//! textfile collector and `promtool check metrics` read the Prometheus text
//! format (0.0.4), where a counter's `# HELP`/`# TYPE` lines name its
//! `_total` samples and there is no `# EOF`. [`to_prometheus_text`] makes
//! that change (the only one for the counters and gauges here); both the
//! file and the endpoint serve the result.
//!
//! The textfile is written atomically (`atomic_file`, mode 0644 so that
//! node_exporter can read it) when the run starts (so a bad path is a
//! configuration error at once), every `--metrics-interval` (15 s), and at
//! exit with the end time and exit code. `keep_rsync_last_success_timestamp_seconds`
//! is carried over from the file a previous run left, so an alert can fire
//! when no run succeeded for days.

mod http;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cli::Config;
use crate::error::{Error, Result};
use crate::progress::{Level, Reporter};
use crate::protocol::client::Op;
use crate::report::{unix_now, Stats};
use crate::services::STATUS_CLASSES;
use crate::sides::Sides;

/// The run's metrics: nothing at all without `--metrics-textfile` and
/// `--metrics-addr`.
pub struct Metrics {
    inner: Option<Exporter>,
}

struct Exporter {
    registry: Arc<Registry>,
    state: Arc<State>,
    textfile: Option<Arc<Textfile>>,
    /// The textfile writer and the HTTP server, stopped at the end.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the collector reads besides the run's counters.
#[derive(Default)]
struct State {
    /// Both sides and the counters, once the sides are ready.
    run: OnceLock<(Arc<Sides>, Arc<Stats>)>,
    started_at: f64,
    /// End time and exit code, once the run has ended.
    ended: OnceLock<(f64, u8)>,
    /// When a run (this one, or one before it that wrote the textfile)
    /// last exited 0.
    last_success: Mutex<Option<f64>>,
}

/// The textfile and the lock that keeps its writes in order.
struct Textfile {
    path: PathBuf,
    writing: Mutex<()>,
}

impl Metrics {
    /// No metrics.
    pub fn none() -> Metrics {
        Metrics { inner: None }
    }

    /// Start exporting as the flags say: bind `--metrics-addr` (the address
    /// is logged: with port 0 the system picks one) and write the textfile
    /// a first time. Either failing is a configuration error naming its
    /// flag.
    pub async fn start(cfg: &Config, reporter: &dyn Reporter) -> Result<Metrics> {
        if cfg.metrics_textfile.is_none() && cfg.metrics_addr.is_none() {
            return Ok(Metrics::none());
        }
        let previous = cfg
            .metrics_textfile
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let state = Arc::new(State {
            started_at: unix_now(),
            last_success: Mutex::new(previous.as_deref().and_then(last_success_in)),
            ..State::default()
        });
        let mut registry = Registry::with_prefix_and_labels(
            "keep_rsync",
            [(Cow::Borrowed("prefix"), Cow::Owned(cfg.prefix.clone()))].into_iter(),
        );
        registry.register_collector(Box::new(RunCollector(state.clone())));
        let registry = Arc::new(registry);
        let mut tasks = Vec::new();
        let textfile = match &cfg.metrics_textfile {
            None => None,
            Some(path) => {
                let t = Arc::new(Textfile {
                    path: path.clone(),
                    writing: Mutex::new(()),
                });
                t.write(&registry).map_err(|e| {
                    Error::config(format!(
                        "cannot write the metrics file {} (--metrics-textfile): {e}. Give a path \
                         in an existing, writable directory, such as node_exporter's \
                         --collector.textfile.directory.",
                        path.display()
                    ))
                })?;
                let (t2, registry) = (t.clone(), registry.clone());
                let every = cfg.metrics_interval;
                tasks.push(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let (t, registry) = (t2.clone(), registry.clone());
                        // A failed periodic write is retried at the next
                        // tick; the one at exit says why it failed.
                        let _ = tokio::task::spawn_blocking(move || t.write(&registry)).await;
                    }
                }));
                Some(t)
            }
        };
        if let Some(addr) = &cfg.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(|e| {
                    Error::config(format!(
                        "cannot serve metrics on --metrics-addr {addr}: {e}. Give HOST:PORT with \
                         a free port, e.g. 127.0.0.1:9150 (port 0: any free port, logged)."
                    ))
                })?;
            if let Ok(bound) = listener.local_addr() {
                reporter.log(
                    Level::Info,
                    &format!("serving metrics on http://{bound}/metrics"),
                );
            }
            let registry = registry.clone();
            let render: http::Render = Arc::new(move || encode(&registry));
            tasks.push(tokio::spawn(http::serve(listener, render)));
        }
        Ok(Metrics {
            inner: Some(Exporter {
                registry,
                state,
                textfile,
                tasks,
            }),
        })
    }

    /// The run's sides and counters are ready: their metrics are exported
    /// from now on.
    pub fn attach(&self, sides: Arc<Sides>, stats: Arc<Stats>) {
        if let Some(e) = &self.inner {
            let _ = e.state.run.set((sides, stats));
        }
    }

    /// The run has ended with `exit_code`: stop serving, and write the
    /// textfile a last time (with the end time, the exit code, and the
    /// time of this success if it is one).
    pub async fn finish(&self, exit_code: u8, reporter: &dyn Reporter) {
        let Some(e) = &self.inner else {
            return;
        };
        let now = unix_now();
        let _ = e.state.ended.set((now, exit_code));
        if exit_code == crate::error::exit::OK {
            *lock(&e.state.last_success) = Some(now);
        }
        for t in &e.tasks {
            t.abort();
        }
        if let Some(t) = &e.textfile {
            let (t, registry) = (t.clone(), e.registry.clone());
            let written = tokio::task::spawn_blocking(move || t.write(&registry)).await;
            if let Ok(Err(err)) | Err(err) = written.map_err(std::io::Error::other) {
                reporter.log(
                    Level::Error,
                    &format!(
                        "could not write the metrics file {} (--metrics-textfile): {err}",
                        e.textfile
                            .as_ref()
                            .map(|t| t.path.display().to_string())
                            .unwrap_or_default()
                    ),
                );
            }
        }
    }

    /// The metrics as they would be served now (`None` without metrics).
    pub fn render(&self) -> Option<String> {
        self.inner.as_ref().map(|e| encode(&e.registry))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Textfile {
    /// Render and write the file, one write at a time: a periodic write
    /// that ends after the final one renders the final state too.
    fn write(&self, registry: &Registry) -> std::io::Result<()> {
        let _one_at_a_time = lock(&self.writing);
        let text = encode(registry);
        crate::atomic_file::write_readable(&self.path, |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })
    }
}

/// The registry in the Prometheus text format.
fn encode(registry: &Registry) -> String {
    let mut om = String::new();
    // Writing to a String cannot fail; a collector error leaves what was
    // encoded so far.
    let _ = prometheus_client::encoding::text::encode(&mut om, registry);
    to_prometheus_text(&om)
}

/// `keep_rsync_last_success_timestamp_seconds` from a textfile's text.
fn last_success_in(text: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("keep_rsync_last_success_timestamp_seconds")?;
        if !rest.starts_with(['{', ' ']) {
            return None;
        }
        rest.rsplit(' ').next()?.trim().parse().ok()
    })
}

/// OpenMetrics text (what `prometheus-client` writes) to the Prometheus
/// text format 0.0.4 (what node_exporter's textfile collector and `promtool
/// check metrics` read): a counter family's `# HELP` and `# TYPE` lines name
/// its `_total` samples, and there is no `# UNIT` or `# EOF` line.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 8 * counters.len());
    'lines: for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        for tag in ["# HELP ", "# TYPE "] {
            if let Some(rest) = line.strip_prefix(tag) {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{tag}{name}_total {tail}\n"));
                    continue 'lines;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Encodes the metrics from [`State`] and the run's counters at each
/// scrape or write.
struct RunCollector(Arc<State>);

impl std::fmt::Debug for RunCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunCollector")
    }
}

/// A family of metrics of one type.
fn family<'a>(
    enc: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> std::result::Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    enc.encode_descriptor(name, help, None, kind)
}

/// One gauge: counts as integers, times as seconds with a fraction.
fn gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(family(enc, name, help, MetricType::Gauge)?)
}

impl Collector for RunCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &*self.0;
        let run = s.run.get();
        let stats = run.map(|(_, st)| &**st);
        let load = |f: fn(&Stats) -> &AtomicU64| stats.map_or(0, |st| f(st).load(Relaxed));

        let outcomes: [(&str, u64, u64); 5] = [
            ("planned", load(|s| &s.planned), load(|s| &s.planned_bytes)),
            ("present", load(|s| &s.present), load(|s| &s.present_bytes)),
            ("copied", load(|s| &s.copied), load(|s| &s.copied_bytes)),
            (
                "topped_up",
                load(|s| &s.topped_up),
                load(|s| &s.topped_up_bytes),
            ),
            ("failed", load(|s| &s.failed), load(|s| &s.failed_bytes)),
        ];
        {
            let mut m = family(
                &mut enc,
                "blocks",
                "Blocks by outcome: planned (to copy, top up or verify), present (already at \
                 the destination with the wanted replicas), copied, topped_up, failed",
                MetricType::Counter,
            )?;
            for (outcome, n, _) in outcomes {
                ConstCounter::new(n).encode(m.encode_family(&[("outcome", outcome)])?)?;
            }
        }
        {
            let mut m = family(
                &mut enc,
                "block_bytes",
                "Bytes of the blocks, by the same outcomes as keep_rsync_blocks_total",
                MetricType::Counter,
            )?;
            for (outcome, _, bytes) in outcomes {
                ConstCounter::new(bytes).encode(m.encode_family(&[("outcome", outcome)])?)?;
            }
        }
        for (name, help, value) in [
            (
                "read_bytes",
                "Block data received from services, re-reads included (progress)",
                load(|s| &s.bytes_read),
            ),
            (
                "written_bytes",
                "Block data stored by destination services, all replicas",
                load(|s| &s.bytes_written),
            ),
            (
                "replicas_written",
                "Replicas stored by destination services",
                load(|s| &s.replicas_written),
            ),
            (
                "index_lines",
                "Index lines received from all services",
                load(|s| &s.index_lines),
            ),
        ] {
            ConstCounter::new(value).encode(family(&mut enc, name, help, MetricType::Counter)?)?;
        }

        if let Some((sides, _)) = run {
            let services = || {
                [&sides.src, &sides.dst]
                    .into_iter()
                    .flat_map(|side| side.services.iter().map(move |svc| (side.role, svc)))
            };
            {
                let mut m = family(
                    &mut enc,
                    "requests",
                    "Requests to each service, every attempt, by operation (index, get, put) \
                     and outcome: the HTTP status class (2xx = succeeded), or error (no \
                     complete answer: refused, timed out, or a body that broke or failed \
                     verification)",
                    MetricType::Counter,
                )?;
                for (role, svc) in services() {
                    for op in Op::ALL {
                        for (class, n) in STATUS_CLASSES.iter().zip(&svc.stats.answers[op as usize])
                        {
                            let n = n.load(Relaxed);
                            if n == 0 && *class != "2xx" {
                                continue;
                            }
                            let labels = [
                                ("side", role.as_str()),
                                ("service", svc.store.id()),
                                ("operation", op.as_str()),
                                ("status_class", class),
                            ];
                            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                        }
                    }
                }
            }
            {
                let mut m = family(
                    &mut enc,
                    "retries",
                    "Retries of requests to each service after transient failures, by operation",
                    MetricType::Counter,
                )?;
                for (role, svc) in services() {
                    for op in Op::ALL {
                        let labels = [
                            ("side", role.as_str()),
                            ("service", svc.store.id()),
                            ("operation", op.as_str()),
                        ];
                        let n = svc.stats.retries[op as usize].load(Relaxed);
                        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
            {
                let mut m = family(
                    &mut enc,
                    "service_up",
                    "1 while a service (or volume) is used, 0 once it was found unreachable (it is \
                     then left out for the rest of the run); store is its kind: disk, proxy, \
                     directory or s3",
                    MetricType::Gauge,
                )?;
                for (role, svc) in services() {
                    let labels = [
                        ("side", role.as_str()),
                        ("service", svc.store.id()),
                        ("store", svc.store.kind()),
                    ];
                    let up = if svc.is_down() { 0 } else { 1 };
                    ConstGauge::new(up as i64).encode(m.encode_family(&labels)?)?;
                }
            }
            {
                let mut m = family(
                    &mut enc,
                    "service_concurrency_limit",
                    "Requests a service may have in flight now: its adaptive limit (between 2 \
                     and --max-per-service, moved by the service's 503s and round trips), or \
                     --max-per-service with --fixed-concurrency",
                    MetricType::Gauge,
                )?;
                for (role, svc) in services() {
                    let labels = [("side", role.as_str()), ("service", svc.store.id())];
                    ConstGauge::new(svc.limit.limit() as i64).encode(m.encode_family(&labels)?)?;
                }
            }
            {
                let mut m = family(
                    &mut enc,
                    "service_full",
                    "1 once a destination service answered a PUT with 507 (its volumes are full): \
                     nothing more is written to it in this run",
                    MetricType::Gauge,
                )?;
                for svc in sides.dst.services.iter() {
                    let labels = [
                        ("side", sides.dst.role.as_str()),
                        ("service", svc.store.id()),
                    ];
                    ConstGauge::new(i64::from(svc.is_full())).encode(m.encode_family(&labels)?)?;
                }
            }
        }

        let ended = s.ended.get().copied();
        gauge(
            &mut enc,
            "running",
            "1 while the run lasts, 0 once it has ended",
            i64::from(ended.is_none()),
        )?;
        gauge(
            &mut enc,
            "pass",
            "The hash sub-prefix pass under way (from 1; 0 before the first)",
            load(|s| &s.pass) as i64,
        )?;
        gauge(
            &mut enc,
            "passes",
            "Hash sub-prefix passes the run is split into (0 before planning)",
            load(|s| &s.passes) as i64,
        )?;
        gauge(
            &mut enc,
            "last_run_start_timestamp_seconds",
            "When the last (or current) run started, Unix seconds",
            s.started_at,
        )?;
        if let Some((end, code)) = ended {
            gauge(
                &mut enc,
                "last_run_end_timestamp_seconds",
                "When the last run ended, Unix seconds",
                end,
            )?;
            gauge(
                &mut enc,
                "last_run_exit_code",
                "The last run's exit code: 0 complete, 1 blocks failed or a service was \
                 unreachable, 2 configuration error, 3 unreadable, 8 stopped at a cron-window \
                 limit, 130 interrupted",
                i64::from(code),
            )?;
        }
        if let Some(t) = *lock(&s.last_success) {
            gauge(
                &mut enc,
                "last_success_timestamp_seconds",
                "When a run last exited 0 (carried over in the textfile from run to run)",
                t,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_become_prometheus_text() {
        let om = "# HELP keep_rsync_blocks Blocks.\n# TYPE keep_rsync_blocks counter\n\
                  keep_rsync_blocks_total{prefix=\"a\",outcome=\"copied\"} 3\n\
                  # HELP keep_rsync_running Running.\n# TYPE keep_rsync_running gauge\n\
                  keep_rsync_running{prefix=\"a\"} 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP keep_rsync_blocks_total Blocks.\n# TYPE keep_rsync_blocks_total counter\n\
             keep_rsync_blocks_total{prefix=\"a\",outcome=\"copied\"} 3\n\
             # HELP keep_rsync_running Running.\n# TYPE keep_rsync_running gauge\n\
             keep_rsync_running{prefix=\"a\"} 1\n"
        );
    }

    #[test]
    fn the_last_success_is_carried_over() {
        let text = "# TYPE keep_rsync_last_success_timestamp_seconds gauge\n\
                    keep_rsync_last_success_timestamp_seconds{prefix=\"7\"} 1795400000.5\n";
        assert_eq!(last_success_in(text), Some(1795400000.5));
        assert_eq!(
            last_success_in("keep_rsync_last_success_timestamp_seconds 12\n"),
            Some(12.0)
        );
        assert_eq!(
            last_success_in("keep_rsync_last_success_timestamp_secondsX 1\n"),
            None
        );
        assert_eq!(last_success_in("garbage"), None);
    }

    #[test]
    fn a_run_before_its_sides_are_ready_has_run_level_metrics() {
        let state = Arc::new(State {
            started_at: 1795400000.0,
            ..State::default()
        });
        let mut registry = Registry::with_prefix_and_labels(
            "keep_rsync",
            [(Cow::Borrowed("prefix"), Cow::Borrowed("0a"))].into_iter(),
        );
        registry.register_collector(Box::new(RunCollector(state.clone())));
        let text = encode(&registry);
        assert!(
            text.contains("keep_rsync_running{prefix=\"0a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keep_rsync_blocks_total{prefix=\"0a\",outcome=\"failed\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE keep_rsync_blocks_total counter"),
            "{text}"
        );
        assert!(!text.contains("last_run_exit_code"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let _ = state.ended.set((1795400100.0, 8));
        let text = encode(&registry);
        assert!(
            text.contains("keep_rsync_last_run_exit_code{prefix=\"0a\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("keep_rsync_running{prefix=\"0a\"} 0"),
            "{text}"
        );
    }
}
