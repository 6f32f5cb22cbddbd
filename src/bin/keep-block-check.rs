//! The `keep-block-check` binary: everything happens in the library
//! (`keep_rsync::check`).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(keep_rsync::check::main(std::env::args_os().collect()))
}
