//! The memory model: what a run holds, and how one total (`--max-memory`)
//! is split between the two budgets that bound it.
//!
//! A run alternates between two phases per sub-prefix pass, never both at
//! once: **indexing** holds the pass's index entries (20 bytes each, about
//! [`BYTES_PER_INDEX_LINE`] with vector growth and read buffers), bounded by
//! `--index-budget` lines; **copying** holds the pass's planned jobs (about
//! 40 bytes each, counted against `--index-budget` at
//! [`crate::plan::JOB_COST_ENTRIES`] entries, so at most
//! [`BYTES_PER_BUDGET_LINE_IN_JOBS`] bytes per budget line) plus the block data
//! in flight, bounded by `--buffer-memory`. Add [`OVERHEAD`] for the runtime,
//! HTTP pools and allocator slack. So peak RSS is at most
//!
//! ```text
//! OVERHEAD + max(40 B × index_budget, buffer_memory + 20 B × index_budget)
//! ```
//!
//! A block list (`--blocks-from`, [`crate::listed`]) adds no term: it is
//! read before any index with a sort buffer of at most `index_budget`
//! entries (20 B each), and a pass's listed blocks (20 B each, a second
//! 20 B for a lost one) are counted as one index line each by the pass
//! splitter; the rest of it is on disk.
//!
//! `--max-memory TOTAL` picks both budgets from that formula: with
//! `A = TOTAL − OVERHEAD`, `--buffer-memory = 3A/4` and
//! `--index-budget = A / 80 B` lines (indexing then peaks at A/2, copying at
//! 3A/4 + A/4 = A). docs/scale-out.md has the arithmetic for N jobs on a host;
//! docs/benchmarks.md ("Memory") the measurements behind the constants.

/// Runtime, HTTP connection pools and allocator slack, measured at 20–30 MiB.
pub const OVERHEAD: u64 = 32 << 20;

/// Memory per index line held while planning (measured ≈ 30 B; 20 B entries,
/// growth, dedup and read buffers).
pub const BYTES_PER_INDEX_LINE: u64 = 40;

/// Memory of planned jobs per line of `--index-budget`: a job is ~40 B and
/// costs 2 budget lines.
pub const BYTES_PER_BUDGET_LINE_IN_JOBS: u64 = 20;

/// The smallest `--max-memory`: one 64 MiB block plus the overhead.
pub const MIN_TOTAL: u64 = OVERHEAD + (64 << 20);

/// Both budgets derived from one memory total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// `--buffer-memory`, bytes.
    pub buffer_memory: u64,
    /// `--index-budget`, lines.
    pub index_budget: u64,
}

impl Budgets {
    /// Split `total` bytes (see the module doc); `Err` below [`MIN_TOTAL`].
    pub fn from_total(total: u64) -> Result<Budgets, String> {
        if total < MIN_TOTAL {
            return Err(format!(
                "{} MiB is too little: one 64 MiB block plus {} MiB of overhead needs at least {} MiB",
                total >> 20,
                OVERHEAD >> 20,
                MIN_TOTAL >> 20
            ));
        }
        let a = total - OVERHEAD;
        Ok(Budgets {
            buffer_memory: a / 4 * 3,
            index_budget: a / (2 * BYTES_PER_INDEX_LINE),
        })
    }

    /// The peak the model predicts for these budgets.
    pub fn peak(&self) -> u64 {
        let index = BYTES_PER_INDEX_LINE * self.index_budget;
        let copy = self.buffer_memory + BYTES_PER_BUDGET_LINE_IN_JOBS * self.index_budget;
        OVERHEAD + index.max(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_splits_into_budgets_whose_peak_fits_it() {
        for total in [MIN_TOTAL, 256 << 20, 512 << 20, 1 << 30, 8 << 30, 64 << 30] {
            let b = Budgets::from_total(total).unwrap();
            assert!(b.peak() <= total, "{total}: {b:?} peaks at {}", b.peak());
            assert!(b.peak() > total - (total >> 6), "{total}: uses most of it");
        }
        let b = Budgets::from_total(512 << 20).unwrap();
        assert_eq!(b.buffer_memory, 360 << 20);
        assert_eq!(b.index_budget, 6_291_456);
        assert!(Budgets::from_total(MIN_TOTAL - 1).is_err());
    }
}
