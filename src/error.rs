//! The error type every stage returns, and the exit code each kind maps to.
//!
//! A run fails for one of three reasons, and the exit code says which, so cron
//! wrappers and shard schedulers can react without parsing text:
//! 2 = the admin must fix flags, a settings file or a services list;
//! 3 = a service, the API server or an index could not be read (nothing was
//! planned, nothing written); 130 = interrupted. Per-block failures are not
//! errors here: they are counted in the report and make the exit code 1;
//! nor is a cron window that ended (`--max-duration`, `--max-transfer`):
//! exit 8, rclone's code for it.
//!
//! Messages are one paragraph naming the file, line, service or locator at
//! fault and what to do. They never contain tokens, keys or signatures.

/// Process exit codes, documented in `--help` and README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const BLOCKS_FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREADABLE: u8 = 3;
    /// `--max-duration` or `--max-transfer` ended the run with work left:
    /// the window ended, a rerun continues (rclone's exit code for it).
    pub const STOPPED_AT_LIMIT: u8 = 8;
    pub const INTERRUPTED: u8 = 130;
}

/// A failure that ends the run before or instead of copying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, settings or services list (exit 2).
    #[error("{0}")]
    Config(String),
    /// A service, the API server or an index could not be read (exit 3).
    #[error("{0}")]
    Unreadable(String),
    /// The run was interrupted before anything was planned (exit 130).
    #[error("interrupted before any block was planned")]
    Interrupted,
}

impl Error {
    pub fn config(msg: impl Into<String>) -> Error {
        Error::Config(msg.into())
    }
    pub fn unreadable(msg: impl Into<String>) -> Error {
        Error::Unreadable(msg.into())
    }
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::USAGE,
            Error::Unreadable(_) => exit::UNREADABLE,
            Error::Interrupted => exit::INTERRUPTED,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
