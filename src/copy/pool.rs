//! Reusable 1 MiB buffers that block data is copied into as it arrives.
//!
//! A chunk hyper hands over is a slice of its read buffer and keeps the whole
//! buffer alive. When a body trickles in (a slow link, a busy source) reads
//! are short and much of each read buffer is never used, yet held until the
//! block's last write ends: measured at up to a third more than the blocks
//! themselves, which breaks the `--buffer-memory` bound exactly where
//! migrations run (over long links). So every chunk is copied into dense
//! buffers of [`SIZE`] bytes and hyper's buffer is free at once (hyper then
//! reuses it instead of allocating and faulting in fresh pages).
//!
//! Full-size buffers come back here when the last reference to them drops
//! and are reused, so the copy costs one `memcpy` and no page faults or page
//! zeroing. The pool keeps at most the byte budget's worth, and is emptied
//! after each pass's copies, so the index phase gets the memory back.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Bytes in one pooled buffer.
pub const SIZE: usize = 1 << 20;

/// Free full-size buffers, kept for reuse.
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool keeping at most `keep_bytes` of free buffers.
    pub fn new(keep_bytes: u64) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            free: Mutex::new(Vec::new()),
            keep: (keep_bytes / SIZE as u64) as usize,
        })
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer for up to `want` bytes: a pooled one when `want` is a
    /// full buffer, otherwise one of exactly that size.
    pub fn take(self: &Arc<Self>, want: usize) -> Filling {
        if want < SIZE {
            return Filling {
                buf: Vec::with_capacity(want),
                pool: None,
            };
        }
        let buf = self
            .free()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SIZE));
        Filling {
            buf,
            pool: Some(self.clone()),
        }
    }

    /// Drop every free buffer (their memory goes back to the system).
    pub fn clear(&self) {
        *self.free() = Vec::new();
    }

    fn give(&self, mut buf: Vec<u8>) {
        let mut free = self.free();
        if free.len() < self.keep {
            buf.clear();
            free.push(buf);
        }
    }
}

/// A buffer being filled.
pub struct Filling {
    buf: Vec<u8>,
    pool: Option<Arc<BufferPool>>,
}

impl Filling {
    /// Room left.
    pub fn room(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Append as much of `data` as fits; returns what did not.
    pub fn fill<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let n = data.len().min(self.room());
        self.buf.extend_from_slice(&data[..n]);
        &data[n..]
    }

    /// The bytes, shared; the buffer returns to its pool when the last
    /// reference drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(Owned {
            buf: self.buf,
            pool: self.pool,
        })
    }
}

/// What a frozen buffer's `Bytes` own.
struct Owned {
    buf: Vec<u8>,
    pool: Option<Arc<BufferPool>>,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused_up_to_the_budget() {
        let pool = BufferPool::new(2 * SIZE as u64);
        let mut a = pool.take(SIZE);
        assert_eq!(a.fill(&vec![1u8; SIZE + 10]).len(), 10, "only SIZE fits");
        let bytes = a.freeze();
        let clone = bytes.slice(5..);
        let ptr = bytes.as_ptr();
        drop(bytes);
        assert_eq!(pool.free().len(), 0, "still referenced");
        drop(clone);
        assert_eq!(pool.free().len(), 1);
        let b = pool.take(SIZE);
        assert!(b.is_empty());
        assert_eq!(b.buf.as_ptr(), ptr, "the same memory, reused");
        // Small buffers are not pooled; the pool keeps at most its budget.
        drop(pool.take(100).freeze());
        let many: Vec<Bytes> = (0..4).map(|_| pool.take(SIZE).freeze()).collect();
        drop(many);
        assert_eq!(pool.free().len(), 2);
        pool.clear();
        assert_eq!(pool.free().len(), 0);
        drop(b);
    }
}
