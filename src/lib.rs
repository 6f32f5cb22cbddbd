//! keep-rsync: copy Arvados Keep blocks from one cluster to another.
//!
//! # Layout
//!
//! The modules follow the data flow of a run:
//!
//! - [`cli`]: flags (Go-compatible syntax), parsed and checked by clap into [`cli::Config`].
//! - [`settings`]: `-src`/`-dst` settings files.
//! - [`sides`]: both sides ready to use: settings → keep services (a services
//!   list, the API server, or raw volumes) → discovery defaults → [`services::Side`].
//! - [`services`]: a side's stores and their state ([`services::Service`]),
//!   the API server calls; [`store`]: where blocks live (a Keep service, a
//!   Directory volume or an S3 volume) and how each lists, reads and writes
//!   them; [`volumes_file`]: `--*-volumes` files (Arvados' `Volumes` syntax).
//! - [`index`]: every service's index, retried, refusing partial ones.
//! - [`plan`]: the diff, a pure function: what to copy or top up, from where.
//! - [`copy`]: the pipeline: read → verify → write replicas in rendezvous
//!   order, within a byte budget.
//! - [`report`]: counters, the failure list, the human summary and the JSON
//!   report; [`progress`] renders the run while it goes; [`logging`] writes
//!   the diagnostics (`-v`, `RUST_LOG`) through it; [`metrics`] exports the
//!   counters to Prometheus.
//! - [`run`]: sequences the stages and maps the outcome to an exit code;
//!   [`limits`]: the cron windows (`--max-duration`, `--max-transfer`).
//! - [`listed`]: block lists (`--blocks-from`, keep-block-check's hash file):
//!   locators, hashes or manifest text, read once into a sorted file.
//! - [`check`]: the `keep-block-check` program (index, probe or read mode),
//!   on the same settings, services, indexes, signing and reports.
//! - [`protocol`]: the wire format (the `keep-protocol` crate: locators,
//!   signatures, rendezvous order, index lines, services lists) and the HTTP
//!   client.
//! - Small parts: [`role`] (source or destination), [`memory`] (the memory
//!   model and `--max-memory`), [`throttle`] (`--bwlimit`), [`atomic_file`],
//!   [`error`] (error kinds and exit codes), [`console`] (levels, timestamps
//!   and human units for stderr lines; messages without a reporter),
//!   [`signals`] (SIGINT/SIGTERM: finish what is in flight, then exit 130).
//!
//! The keepstore simulator the tests, demo and benchmarks run against is its
//! own crate (`crates/keepstore-sim`), a dev-dependency: keep-rsync never
//! links server code.

pub mod atomic_file;
pub mod check;
pub mod cli;
pub mod cluster_config;
pub mod config_tree;
pub mod console;
pub mod copy;
pub mod error;
pub mod index;
pub mod limiter;
pub mod limits;
pub mod listed;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod passes;
pub mod plan;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod role;
pub mod run;
pub mod services;
pub mod settings;
pub mod sides;
pub mod signals;
pub mod store;
pub mod throttle;
pub mod volumes_file;
pub mod wants;

use tokio_util::sync::CancellationToken;

/// What `-version` says, for both programs and their packages: the package
/// version and the git commit built (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("KEEP_RSYNC_GIT_COMMIT"),
    ")"
);

/// The `keep-rsync` program: parse argv, run, and return the exit code.
/// Raise the soft open-file limit to the hard one, as every Go program does
/// at start (the Go keep-rsync and keepstore included): a login shell's
/// soft limit is often 1024, and the services' limits (up to
/// `--max-per-service` connections each) and open temp files add up past
/// it. Failure leaves the limit as it was.
pub fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let now = getrlimit(Resource::Nofile);
        if now.current != now.maximum {
            let raised = Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_err() {
                tracing::debug!("the open-file limit could not be raised");
            }
        }
    }
}

pub fn main(argv: Vec<std::ffi::OsString>) -> u8 {
    // Errors before the flags are parsed are JSON too when the command line
    // asks for JSON logs.
    let json = cli::asks_for_json_logs(&argv);
    let fail = |msg: &str, code: u8| {
        progress::log_without_reporter(Some(json), progress::Level::Error, msg, Some(code));
        code
    };
    let cfg = match cli::parse(argv) {
        Err(e) => {
            // A bad value: one paragraph naming the flag (exit 2). --help
            // and --version: clap's text on stdout, exit 0; other usage
            // errors: clap's text, exit 2.
            if let Some(msg) = cli::describe_clap_error(&e) {
                return fail(&msg, error::exit::USAGE);
            }
            if !e.use_stderr() {
                let _ = e.print();
                return error::exit::OK;
            }
            if json {
                let text = e.render().to_string();
                let text = text.trim_end().trim_start_matches("error: ");
                return fail(text, error::exit::USAGE);
            }
            let _ = e.print();
            return error::exit::USAGE;
        }
        Ok(Err(e)) => return fail(&e.to_string(), e.exit_code()),
        Ok(Ok(cfg)) => cfg,
    };
    let reporter = progress::for_output(cfg.log_format, cfg.quiet);
    logging::init(cfg.verbose, cfg.log_format, reporter.clone());
    raise_open_file_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                &format!("cannot start the async runtime: {e}"),
                error::exit::USAGE,
            )
        }
    };
    rt.block_on(async move {
        let soft = CancellationToken::new();
        let (r1, r2) = (reporter.clone(), reporter.clone());
        tokio::spawn(signals::watch(
            soft.clone(),
            move || {
                r1.log(
                    progress::Level::Warn,
                    "interrupted: finishing the blocks in flight, then stopping (signal again to stop at once)",
                )
            },
            move || {
                r2.finish();
                r2.log(
                    progress::Level::Error,
                    "interrupted again: exiting now; rerun to finish the copy",
                );
            },
        ));
        run::run(cfg, reporter, soft).await
    })
}

#[cfg(all(test, unix))]
mod tests {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let was = getrlimit(Resource::Nofile);
        let (Some(cur), Some(max)) = (was.current, was.maximum) else {
            eprintln!("skipped: the open-file limit is infinite here");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "skipped under CI=true"
            );
            return;
        };
        // One below what the process has: harmless to the other tests.
        let lowered = Rlimit {
            current: Some(cur.min(max) - 1),
            maximum: Some(max),
        };
        setrlimit(Resource::Nofile, lowered).unwrap();
        super::raise_open_file_limit();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(max));
    }
}
