//! Early writeback for large outputs. An export must be on disk before it
//! is renamed into place, but one fsync of gigabytes at the end serialises
//! all the disk writing after all the reading. A flusher thread calls
//! `fdatasync` on a clone of the output handle every `STEP` bytes written,
//! so the disk works while the export goes on and the final sync has
//! little left to do.

use std::fs::File;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

const STEP: u64 = 256 << 20;

pub struct Flusher {
    tx: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    since: u64,
}

impl Flusher {
    /// Starts flushing `file` in the background (or does nothing when the
    /// handle cannot be cloned).
    pub fn new(file: &File) -> Flusher {
        let Ok(clone) = file.try_clone() else {
            return Flusher { tx: None, thread: None, since: 0 };
        };
        // One pending request at most: if a sync is still running, asking
        // again changes nothing.
        let (tx, rx) = sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            while rx.recv().is_ok() {
                // Errors surface at the final sync_all, which is checked.
                let _ = clone.sync_data();
            }
        });
        Flusher { tx: Some(tx), thread: Some(thread), since: 0 }
    }

    /// Records `n` bytes written; asks for a flush every STEP bytes.
    pub fn wrote(&mut self, n: u64) {
        self.since += n;
        if self.since >= STEP {
            self.since = 0;
            if let Some(tx) = &self.tx {
                match tx.try_send(()) {
                    Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
                }
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
