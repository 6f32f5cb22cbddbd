//! The failed-block list, bounded in memory however many blocks fail.
//!
//! The first [`FAILURES_IN_MEMORY`] failures are kept for the human summary;
//! all of them are counted. When a `--report` file will be written, every
//! failure is also appended to a temporary file in the report's directory.
//! Within a sub-prefix pass blocks finish in any order, so a pass's records
//! go to a scratch file first, with only a 28-byte key (hash, offset, length)
//! each in memory; at the end of the pass they are copied to the final file
//! in hash order. Passes run in hash order, so the final file is sorted, and
//! the report streams it out without ever holding the list.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::ser::{Error as _, SerializeSeq};
use serde::{Serialize, Serializer};

use super::spilled::{spill_file, warn_broken, SpilledList};
use super::FailedBlock;
use crate::protocol::BlockHash;

/// Failures kept in memory for the summary.
pub const FAILURES_IN_MEMORY: usize = 2000;

#[derive(Default)]
pub(super) struct Failures {
    /// The first failures, in the order they happened.
    shown: Vec<FailedBlock>,
    total: u64,
    spill_dir: Option<PathBuf>,
    spill: Option<Spill>,
    /// Set when the spill file could not be made or written: the report then
    /// lists only `shown` and says how many it leaves out.
    spill_broken: bool,
}

struct Spill {
    /// This pass's records, in the order they failed.
    pass: BufWriter<File>,
    pass_len: u64,
    keys: Vec<([u8; 16], u64, u32)>,
    /// Every earlier pass's records, sorted.
    sorted: BufWriter<tempfile::NamedTempFile>,
    count: u64,
}

impl Failures {
    pub(super) fn spill_in(&mut self, dir: &Path) {
        self.spill_dir = Some(dir.to_path_buf());
    }

    pub(super) fn push(&mut self, hash: BlockHash, f: FailedBlock) {
        self.total += 1;
        if self.spill_dir.is_some() && !self.spill_broken {
            if let Err(e) = self.append(hash, &f) {
                self.broken(e);
            }
        }
        if self.shown.len() < FAILURES_IN_MEMORY {
            self.shown.push(f);
        }
    }

    fn broken(&mut self, e: std::io::Error) {
        warn_broken("failed blocks", &e, FAILURES_IN_MEMORY);
        self.spill_broken = true;
        self.spill = None;
    }

    fn append(&mut self, hash: BlockHash, f: &FailedBlock) -> std::io::Result<()> {
        if self.spill.is_none() {
            let dir = self.spill_dir.as_deref().unwrap_or(Path::new("."));
            self.spill = Some(Spill {
                pass: BufWriter::new(tempfile::tempfile_in(dir)?),
                pass_len: 0,
                keys: Vec::new(),
                sorted: BufWriter::new(spill_file(Some(dir))?),
                count: 0,
            });
        }
        let Some(s) = self.spill.as_mut() else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(f).map_err(std::io::Error::other)?;
        line.push(b'\n');
        s.pass.write_all(&line)?;
        s.keys.push((hash.0, s.pass_len, line.len() as u32));
        s.pass_len += line.len() as u64;
        Ok(())
    }

    /// Move this pass's records to the sorted file.
    pub(super) fn end_pass(&mut self) {
        if let Err(e) = self.sort_pass() {
            self.broken(e);
        }
    }

    fn sort_pass(&mut self) -> std::io::Result<()> {
        let Some(s) = self.spill.as_mut() else {
            return Ok(());
        };
        if s.keys.is_empty() {
            return Ok(());
        }
        s.pass.flush()?;
        s.keys.sort_unstable();
        let mut buf = Vec::new();
        for &(_, at, len) in &s.keys {
            buf.resize(len as usize, 0);
            s.pass.get_ref().read_exact_at(&mut buf, at)?;
            s.sorted.write_all(&buf)?;
        }
        s.sorted.flush()?;
        s.count += s.keys.len() as u64;
        s.keys.clear();
        s.pass_len = 0;
        let f = s.pass.get_mut();
        f.set_len(0)?;
        f.rewind()?;
        Ok(())
    }

    pub(super) fn list(&self) -> FailureList {
        let mut shown = self.shown.clone();
        shown.sort_by(|a, b| a.locator.cmp(&b.locator));
        let spilled = self
            .spill
            .as_ref()
            .filter(|s| s.count == self.total)
            .and_then(|s| s.sorted.get_ref().reopen().ok());
        FailureList {
            shown,
            total: self.total,
            spilled,
        }
    }
}

/// The failures as the report shows them: the first ones for the summary,
/// and every one (from the spill file, when there is one) for the JSON.
pub type FailureList = SpilledList<FailedBlock>;

impl Serialize for FailureList {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let Some(file) = self.spill_reader() else {
            return self.shown.serialize(ser);
        };
        let mut seq = ser.serialize_seq(Some(self.total as usize))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(S::Error::custom)?;
            let f: FailedBlock = serde_json::from_str(&line).map_err(S::Error::custom)?;
            seq.serialize_element(&f)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    fn failed(n: u32) -> (BlockHash, FailedBlock) {
        let h = BlockHash::of(&n.to_le_bytes());
        (
            h,
            FailedBlock {
                locator: format!("{h}+4"),
                action: Action::Copy,
                service: String::new(),
                reason: format!("reason {n}"),
            },
        )
    }

    #[test]
    fn memory_is_bounded_and_the_spill_lists_every_failure_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Failures::default();
        f.spill_in(dir.path());
        let n = FAILURES_IN_MEMORY as u32 * 3;
        for pass in 0..3 {
            // Each pass fails a disjoint, increasing hash range, out of order.
            let mut v: Vec<_> = (0..n).map(failed).collect();
            v.sort_by_key(|(h, _)| *h);
            let chunk = &v[(pass * n / 3) as usize..((pass + 1) * n / 3) as usize];
            for (h, b) in chunk.iter().rev() {
                f.push(*h, b.clone());
            }
            f.end_pass();
        }
        assert_eq!(f.shown.len(), FAILURES_IN_MEMORY);
        let list = f.list();
        assert_eq!(list.len(), n as u64);
        assert_eq!(list.omitted(), 0);
        let json: Vec<FailedBlock> =
            serde_json::from_value(serde_json::to_value(&list).unwrap()).unwrap();
        assert_eq!(json.len(), n as usize);
        assert!(json.windows(2).all(|w| w[0].locator < w[1].locator));
        // Serialising twice gives the same list (the file offset is not used).
        assert_eq!(
            serde_json::to_value(&list)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            n as usize
        );
    }

    #[test]
    fn without_a_spill_the_report_says_what_it_leaves_out() {
        let mut f = Failures::default();
        for n in 0..(FAILURES_IN_MEMORY as u32 + 5) {
            let (h, b) = failed(n);
            f.push(h, b);
        }
        let list = f.list();
        assert_eq!(list.len(), FAILURES_IN_MEMORY as u64 + 5);
        assert_eq!(list.omitted(), 5);
        assert_eq!(list.shown().len(), FAILURES_IN_MEMORY);
    }
}
