//! The `keep-rsync` binary: everything happens in the library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(keep_rsync::main(std::env::args_os().collect()))
}
