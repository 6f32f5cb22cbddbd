//! `keepstore-sim`: the simulator's command line. All of it lives in
//! `keep_rsync::sim::cli`, so tests and the binary share one implementation.

fn main() -> std::process::ExitCode {
    keep_rsync::sim::cli::main()
}
