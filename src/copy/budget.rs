//! The byte budget for block data in flight (`--buffer-memory`).
//!
//! Memory of the copy stage is bounded by bytes, not by the number of
//! transfers: a block reserves its size (known from its locator) before its
//! read starts and gives it back when its last replica write has ended. So
//! 64 MiB blocks run a few at a time while small blocks still run
//! `--transfers` at once. A block larger than the whole budget waits until it
//! can have all of it, then runs alone: never stuck, never over budget by
//! more than itself. Waiters are served in order (tokio's semaphore is fair),
//! so a big block is not starved by a stream of small ones.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a tiny block costs at least: its share of the HTTP buffers it lives in.
pub const MIN_RESERVATION: u64 = 4096;

/// Bytes of block data that may be held at once.
#[derive(Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    total: u64,
}

/// A reservation; dropping it gives the bytes back.
pub struct Reserved {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new(bytes: u64) -> Budget {
        let total = bytes.clamp(MIN_RESERVATION, Semaphore::MAX_PERMITS as u64);
        Budget {
            sem: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// The bytes a block of `size` reserves.
    pub fn cost(&self, size: u64) -> u32 {
        size.max(MIN_RESERVATION)
            .min(self.total)
            .min(u32::MAX as u64) as u32
    }

    /// Wait until a block of `size` bytes fits, and reserve it.
    pub async fn reserve(&self, size: u64) -> Reserved {
        let n = self.cost(size);
        let permit = self
            .sem
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the budget's semaphore is never closed");
        Reserved { _permit: permit }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds_bytes_and_lets_a_huge_block_run_alone() {
        let b = Budget::new(100 << 20);
        let a = b.reserve(64 << 20).await;
        // A second 64 MiB block does not fit beside the first ...
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.reserve(64 << 20)).await;
        assert!(waiting.is_err());
        // ... but small ones do.
        let small: Vec<_> = futures::future::join_all((0..100).map(|_| b.reserve(1000))).await;
        assert_eq!(
            b.available(),
            (100 << 20) - (64 << 20) - 100 * MIN_RESERVATION
        );
        drop((a, small));
        // A block larger than the whole budget takes all of it and runs.
        let huge = b.reserve(1 << 40).await;
        assert_eq!(b.available(), 0);
        drop(huge);
        assert_eq!(b.available(), 100 << 20);
    }
}
