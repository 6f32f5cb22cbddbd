//! Lost blocks: blocks a list names (`--blocks-from`; keep-block-check's
//! hash file) that no service holds. Bounded in memory like the failure
//! list: the first [`LOST_IN_MEMORY`] are kept for the summary and all are
//! counted; with a `--report` file every one is also appended to a
//! temporary file next to it (20 bytes each). Plans emit lost blocks in
//! hash order and passes run in hash order, so the file is sorted as
//! written and the report streams it out.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::ser::{Error as _, SerializeSeq};
use serde::{Serialize, Serializer};

use super::spilled::{spill_file, warn_broken, SpilledList};
use super::Report;
use crate::index::Entry;
use crate::listed::sort::{decode, encode, RECORD};
use crate::listed::UNKNOWN_SIZE;

/// Lost blocks kept in memory for the summary.
pub const LOST_IN_MEMORY: usize = 2000;

#[derive(Default)]
pub(super) struct Lost {
    shown: Vec<Entry>,
    total: u64,
    spill_dir: Option<PathBuf>,
    spill: Option<BufWriter<tempfile::NamedTempFile>>,
    spilled: u64,
    /// The spill file could not be made or written: the report lists only
    /// `shown` and says how many it leaves out.
    broken: bool,
}

impl Lost {
    pub(super) fn spill_in(&mut self, dir: &Path) {
        self.spill_dir = Some(dir.to_path_buf());
    }

    /// Record lost blocks, in hash order, after those recorded before.
    pub(super) fn extend(&mut self, entries: &[Entry]) {
        self.total += entries.len() as u64;
        let room = LOST_IN_MEMORY.saturating_sub(self.shown.len());
        self.shown
            .extend_from_slice(&entries[..room.min(entries.len())]);
        if self.spill_dir.is_some() && !self.broken {
            if let Err(e) = self.append(entries) {
                warn_broken("lost blocks", &e, LOST_IN_MEMORY);
                self.broken = true;
                self.spill = None;
            }
        }
    }

    fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        if self.spill.is_none() {
            self.spill = Some(BufWriter::new(spill_file(self.spill_dir.as_deref())?));
        }
        if let Some(w) = self.spill.as_mut() {
            for e in entries {
                w.write_all(&encode(e))?;
            }
            w.flush()?;
            self.spilled += entries.len() as u64;
        }
        Ok(())
    }

    pub(super) fn list(&self) -> LostList {
        let spilled = (self.spill.as_ref())
            .filter(|_| self.spilled == self.total)
            .and_then(|w| w.get_ref().reopen().ok());
        LostList {
            shown: self.shown.clone(),
            total: self.total,
            spilled,
        }
    }
}

/// `HASH+SIZE`, or `HASH` when the list gave no size.
pub fn locator(e: &Entry) -> String {
    if e.size == UNKNOWN_SIZE {
        e.hash.to_string()
    } else {
        format!("{}+{}", e.hash, e.size)
    }
}

/// The lost blocks as a report shows them: the first for the summary, all
/// (from the spill file, when there is one) for the JSON, as locators.
pub type LostList = SpilledList<Entry>;

impl Serialize for LostList {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let Some(file) = self.spill_reader() else {
            let v: Vec<String> = self.shown.iter().map(locator).collect();
            return v.serialize(ser);
        };
        let mut seq = ser.serialize_seq(Some(self.total as usize))?;
        let mut r = BufReader::new(file);
        let mut rec = [0u8; RECORD];
        for _ in 0..self.total {
            r.read_exact(&mut rec).map_err(S::Error::custom)?;
            seq.serialize_element(&locator(&decode(&rec)))?;
        }
        seq.end()
    }
}

impl Report {
    /// `--blocks-from`: what the list found, and the first lost blocks.
    pub(super) fn human_lost(&self, s: &mut String) {
        const SHOWN: usize = 50;
        if self.blocks_from.is_none() {
            return;
        }
        let p = &self.plan;
        s.push_str(&format!(
            "  listed: {}   present: {}   to copy or top up: {}   lost: {} (on no source or destination service)\n",
            p.listed,
            p.present,
            p.to_write(),
            p.lost
        ));
        if self.lost_blocks.is_empty() {
            return;
        }
        s.push_str(&format!("  lost blocks ({}):\n", self.lost_blocks.len()));
        for e in self.lost_blocks.shown().iter().take(SHOWN) {
            s.push_str(&format!("    {}\n", locator(e)));
        }
        if self.lost_blocks.len() > SHOWN as u64 {
            s.push_str(&format!(
                "    … and {} more (see --report)\n",
                self.lost_blocks.len() - SHOWN as u64
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keep_protocol::BlockHash;

    fn entries(from: u32, to: u32) -> Vec<Entry> {
        let mut v: Vec<Entry> = (from..to)
            .map(|n| Entry {
                hash: BlockHash::of(&n.to_le_bytes()),
                size: if n % 2 == 0 { n } else { UNKNOWN_SIZE },
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn bounded_in_memory_and_complete_in_the_spill() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Lost::default();
        l.spill_in(dir.path());
        let all = entries(0, 5000);
        for chunk in all.chunks(1500) {
            l.extend(chunk);
        }
        assert_eq!(l.shown.len(), LOST_IN_MEMORY);
        let list = l.list();
        assert_eq!((list.len(), list.omitted()), (5000, 0));
        let json: Vec<String> =
            serde_json::from_value(serde_json::to_value(&list).unwrap()).unwrap();
        assert_eq!(json, all.iter().map(locator).collect::<Vec<_>>());
        assert!(json.iter().any(|s| s.len() == 32) && json.iter().any(|s| s.contains('+')));
        // Twice: the same list.
        assert_eq!(
            serde_json::to_value(&list)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            5000
        );
        // Without a spill: the first ones, and how many are left out.
        let mut l = Lost::default();
        l.extend(&all);
        let list = l.list();
        assert_eq!(list.omitted(), 5000 - LOST_IN_MEMORY as u64);
    }
}
