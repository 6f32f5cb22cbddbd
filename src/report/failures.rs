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
//!
//! The files are written by a thread of their own ([`Writer`]), started by
//! the first failure: the copy pipeline's async workers only hand it each
//! record over a channel, so a mass failure (a destination gone, a million
//! blocks failing in a minute) never stalls them on disk writes.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

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
    /// The spill files' thread, once a failure was to be kept on disk.
    writer: Option<Writer>,
}

impl Failures {
    pub(super) fn spill_in(&mut self, dir: &Path) {
        self.spill_dir = Some(dir.to_path_buf());
    }

    pub(super) fn push(&mut self, hash: BlockHash, f: FailedBlock) {
        self.total += 1;
        if let Some(dir) = &self.spill_dir {
            let w = self.writer.get_or_insert_with(|| Writer::start(dir));
            match serde_json::to_vec(&f) {
                Ok(mut line) => {
                    line.push(b'\n');
                    w.send(Cmd::Record(hash.0, line));
                }
                Err(e) => w.send(Cmd::Broken(std::io::Error::other(e))),
            }
        }
        if self.shown.len() < FAILURES_IN_MEMORY {
            self.shown.push(f);
        }
    }

    /// A pass has ended: its records go to the sorted file (on the thread).
    pub(super) fn end_pass(&mut self) {
        if let Some(w) = &self.writer {
            w.send(Cmd::EndPass);
        }
    }

    /// The list for the report. Ends the current pass and waits for the
    /// thread to have written every record so far.
    pub(super) fn list(&self) -> FailureList {
        let mut shown = self.shown.clone();
        shown.sort_by(|a, b| a.locator.cmp(&b.locator));
        let spilled = (self.writer.as_ref())
            .and_then(Writer::sync)
            .filter(|(_, count)| *count == self.total)
            .map(|(file, _)| file);
        FailureList {
            shown,
            total: self.total,
            spilled,
        }
    }
}

/// What the spill thread is asked to do, in the order asked.
enum Cmd {
    /// One failure: its hash (the sort key) and its JSON line.
    Record([u8; 16], Vec<u8>),
    /// The pass has ended: sort its records into the final file.
    EndPass,
    /// End the pass, then answer with the final file reopened and how many
    /// records it holds (`None` when it could not be kept).
    Sync(mpsc::SyncSender<Option<(File, u64)>>),
    /// A record could not even be made: give up the file.
    Broken(std::io::Error),
}

/// The thread that owns the spill files.
struct Writer {
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    /// Held by a test to stall the thread's file work.
    #[cfg(test)]
    gate: std::sync::Arc<std::sync::Mutex<()>>,
}

impl Writer {
    fn start(dir: &Path) -> Writer {
        let (tx, rx) = mpsc::channel();
        let dir = dir.to_path_buf();
        #[cfg(test)]
        let gate = std::sync::Arc::new(std::sync::Mutex::new(()));
        #[cfg(test)]
        let held = gate.clone();
        let thread = std::thread::Builder::new()
            .name("failure-spill".into())
            .spawn(move || {
                let mut spill = SpillFiles { dir, open: None };
                for cmd in rx {
                    #[cfg(test)]
                    let _held = held.lock();
                    if !spill.serve(cmd) {
                        break;
                    }
                }
            })
            .map_err(|e| warn_broken("failed blocks", &e, FAILURES_IN_MEMORY))
            .ok();
        Writer {
            // Without the thread, records go nowhere (the report says so).
            tx: thread.is_some().then_some(tx),
            thread,
            #[cfg(test)]
            gate,
        }
    }

    /// Hand the thread a command; once it has given up, nothing happens.
    fn send(&self, cmd: Cmd) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(cmd);
        }
    }

    fn sync(&self) -> Option<(File, u64)> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.as_ref()?.send(Cmd::Sync(tx)).ok()?;
        rx.recv().ok().flatten()
    }
}

impl Drop for Writer {
    /// Wait for the thread, so that its temporary files are gone when the
    /// failures are.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The spill thread's state: the files, made on the first record.
struct SpillFiles {
    dir: PathBuf,
    open: Option<Spill>,
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

impl SpillFiles {
    /// Do one command; false once the files are given up (said once).
    fn serve(&mut self, cmd: Cmd) -> bool {
        let done = match cmd {
            Cmd::Record(key, line) => self.append(key, &line),
            Cmd::EndPass => self.sort_pass(),
            Cmd::Sync(reply) => {
                let r = self.sort_pass();
                let kept = (self.open.as_ref()).and_then(|s| {
                    let f = s.sorted.get_ref().reopen().ok()?;
                    Some((f, s.count))
                });
                let _ = reply.send(kept.filter(|_| r.is_ok()));
                r
            }
            Cmd::Broken(e) => Err(e),
        };
        match done {
            Ok(()) => true,
            Err(e) => {
                warn_broken("failed blocks", &e, FAILURES_IN_MEMORY);
                self.open = None;
                false
            }
        }
    }

    fn append(&mut self, key: [u8; 16], line: &[u8]) -> std::io::Result<()> {
        let s = match &mut self.open {
            Some(s) => s,
            None => self.open.insert(Spill {
                pass: BufWriter::new(tempfile::tempfile_in(&self.dir)?),
                pass_len: 0,
                keys: Vec::new(),
                sorted: BufWriter::new(spill_file(Some(&self.dir))?),
                count: 0,
            }),
        };
        s.pass.write_all(line)?;
        s.keys.push((key, s.pass_len, line.len() as u32));
        s.pass_len += line.len() as u64;
        Ok(())
    }

    /// Move this pass's records to the sorted file.
    fn sort_pass(&mut self) -> std::io::Result<()> {
        let Some(s) = self.open.as_mut() else {
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
    fn failing_blocks_never_wait_for_the_spill_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Failures::default();
        f.spill_in(dir.path());
        let (h, b) = failed(0);
        f.push(h, b);
        // The disk stalls: every further failure is still taken at once.
        let gate = f.writer.as_ref().unwrap().gate.clone();
        let held = gate.lock().unwrap();
        let n = 10_000u32;
        let (tx, rx) = std::sync::mpsc::channel();
        let pusher = std::thread::spawn(move || {
            for i in 1..n {
                let (h, b) = failed(i);
                f.push(h, b);
            }
            f.end_pass();
            tx.send(()).unwrap();
            f
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("pushing failures waited for the stalled spill thread");
        drop(held);
        let f = pusher.join().unwrap();
        let list = f.list();
        assert_eq!(list.len(), n as u64);
        assert_eq!(list.omitted(), 0);
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json.as_array().unwrap().len(), n as usize);
    }

    #[test]
    fn without_a_spill_file_the_report_says_what_it_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        // No --report (no spill), and a report directory that went away.
        for spill in [None, Some(dir.path().join("gone"))] {
            let mut f = Failures::default();
            if let Some(d) = &spill {
                f.spill_in(d);
            }
            for n in 0..(FAILURES_IN_MEMORY as u32 + 5) {
                let (h, b) = failed(n);
                f.push(h, b);
            }
            let list = f.list();
            assert_eq!(list.len(), FAILURES_IN_MEMORY as u64 + 5, "{spill:?}");
            assert_eq!(list.omitted(), 5, "{spill:?}");
            assert_eq!(list.shown().len(), FAILURES_IN_MEMORY);
        }
    }
}
