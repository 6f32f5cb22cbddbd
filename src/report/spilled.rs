//! What the failed-block and lost-block lists share once a run is over: the
//! first entries (kept in memory for the human summary), how many there
//! were, and the temporary file that holds every one, sorted, when one could
//! be kept. The report streams the file out, so a list of 10^8 entries is
//! never held in memory; without the file it lists the first entries and
//! says how many it leaves out.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A list as the report shows it.
pub struct SpilledList<T> {
    pub(super) shown: Vec<T>,
    pub(super) total: u64,
    /// Every entry, sorted, when the spill file could be kept whole.
    pub(super) spilled: Option<File>,
}

impl<T> SpilledList<T> {
    /// Entries in all.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The first entries, sorted.
    pub fn shown(&self) -> &[T] {
        &self.shown
    }

    /// Entries the JSON list leaves out (no spill file): normally 0.
    pub fn omitted(&self) -> u64 {
        if self.spilled.is_some() {
            0
        } else {
            self.total - self.shown.len() as u64
        }
    }

    /// The spill file from its start (without moving its shared offset).
    pub(super) fn spill_reader(&self) -> Option<impl Read + '_> {
        self.spilled.as_ref().map(|file| ReadAt { file, at: 0 })
    }
}

/// Make the spill file of a list in `dir` (the report's directory).
pub(super) fn spill_file(dir: Option<&Path>) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
}

/// The spill file of `what` could not be made or written: say so once (as
/// a JSON line under `--log-format json`); the report then lists only the
/// first `kept`.
pub(super) fn warn_broken(what: &str, e: &std::io::Error, kept: usize) {
    crate::console::log_without_reporter(
        None,
        crate::console::Level::Warn,
        &format!(
            "cannot keep the list of {what} on disk ({e}): the report will list only the \
             first {kept} of them."
        ),
        None,
    );
}

/// Reads a file from its start without moving its shared offset.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}
