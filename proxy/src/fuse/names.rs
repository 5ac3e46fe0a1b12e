//! Names of the inodes the kernel currently knows, so a read error can be
//! logged with the file's path. An entry lives from `lookup` to the
//! matching `forget`, so the table holds no more than the kernel's own
//! inode cache, however many files a backup walks.

use std::collections::HashMap;
use std::sync::Mutex;

use super::inode::ROOT_INO;

struct Known {
    parent: u64,
    name: Vec<u8>,
    lookups: u64,
}

#[derive(Default)]
pub struct Names {
    map: Mutex<HashMap<u64, Known>>,
}

/// Most path components put into one message.
const MAX_DEPTH: usize = 4096;

impl Names {
    /// One more kernel reference to `ino`, found as `name` in `parent`.
    pub fn looked_up(&self, ino: u64, parent: u64, name: &[u8]) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let k = map.entry(ino).or_insert_with(|| Known { parent, name: name.to_vec(), lookups: 0 });
        k.lookups = k.lookups.saturating_add(1);
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = map.get_mut(&ino) {
            k.lookups = k.lookups.saturating_sub(n);
            if k.lookups == 0 {
                map.remove(&ino);
            }
        }
    }

    /// `/disk0/p1/dir/file` as far as it is known (`?` for a part the
    /// kernel already forgot).
    pub fn path(&self, ino: u64) -> String {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT_INO && parts.len() < MAX_DEPTH {
            match map.get(&at) {
                Some(k) => {
                    parts.push(crate::guest::printable(&k.name));
                    at = k.parent;
                }
                None => {
                    parts.push(format!("?(inode {at:#x})"));
                    break;
                }
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_parents_until_forgotten() {
        let n = Names::default();
        n.looked_up(2, 1, b"disk0");
        n.looked_up(10, 2, b"p1");
        n.looked_up(11, 10, b"file");
        n.looked_up(11, 10, b"file");
        assert_eq!(n.path(11), "/disk0/p1/file");
        n.forget(11, 1);
        assert_eq!(n.path(11), "/disk0/p1/file");
        n.forget(10, 1);
        assert_eq!(n.path(11), "/?(inode 0xa)/file");
        n.forget(11, 1);
        assert_eq!(n.path(11), "/?(inode 0xb)");
    }
}
