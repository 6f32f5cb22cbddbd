//! `keepstore-sim`: the simulator's command line. All of it lives in
//! `keepstore_sim::cli`, so tests and the binary share one implementation.

fn main() -> std::process::ExitCode {
    keepstore_sim::cli::main()
}
