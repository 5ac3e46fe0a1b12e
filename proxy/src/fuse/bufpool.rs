//! Read buffers shared by the event-loop threads, most recently returned
//! first.
//!
//! The kernel hands consecutive requests of one sequential reader to
//! different threads in turn. With a buffer per thread each request
//! would fill and send a buffer that has gone cold in the CPU caches
//! (16 threads x 1 MiB); taking the last buffer returned keeps one warm
//! buffer going round, and only as many buffers exist as requests were
//! ever served at once.

use std::sync::Mutex;

pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    size: usize,
}

impl BufPool {
    /// A pool of `size`-byte buffers (allocated on first use).
    pub fn new(size: usize) -> BufPool {
        BufPool { free: Mutex::new(Vec::new()), size }
    }

    /// A buffer of the pool's size, back in the pool when dropped.
    pub fn take(&self) -> PoolBuf<'_> {
        let buf = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        // Zero-filled once, when the pool grows; reused as it is after
        // that (a read overwrites what it returns).
        PoolBuf { buf: Some(buf.unwrap_or_else(|| vec![0; self.size])), pool: self }
    }
}

pub struct PoolBuf<'a> {
    buf: Option<Vec<u8>>,
    pool: &'a BufPool,
}

impl std::ops::Deref for PoolBuf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }
}

impl std::ops::DerefMut for PoolBuf<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for PoolBuf<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.free.lock().unwrap_or_else(|e| e.into_inner()).push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_buffer_returned_is_the_next_one_taken() {
        let pool = BufPool::new(8);
        let mut a = pool.take();
        a[0] = 1;
        let mut b = pool.take();
        b[0] = 2;
        assert_eq!(a.len(), 8);
        drop(a);
        drop(b);
        assert_eq!(pool.take()[0], 2);
        let (x, y) = (pool.take(), pool.take());
        assert_eq!((x[0], y[0]), (2, 1));
        drop((x, y));
        assert_eq!(pool.free.lock().unwrap().len(), 2, "no buffer is made while one is free");
    }
}
