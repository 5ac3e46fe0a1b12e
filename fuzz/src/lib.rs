//! Shared driver for the disk-format fuzz targets: open an image held in
//! memory, walk its allocation map and read from every kind of run. Any
//! panic, hang or runaway allocation is a bug; errors are expected.

use guestfs::disk::{detect::open_layer, Format, Layer};
use guestfs::namespace::MemFs;
use std::path::Path;

/// Most runs walked per input: a hostile 1 PiB image with tiny grains has
/// billions of runs, and the point is to exercise the parser, not to time out.
const MAX_RUNS: usize = 512;
/// Most bytes read per run.
const MAX_READ: u64 = 256 * 1024;

/// Opens `path` in `fs` as `format` (detected when `None`) and exercises it.
pub fn exercise(fs: &MemFs, path: &str, format: Option<Format>) {
    let Ok(layer) = open_layer(fs, Path::new(path), format) else { return };
    exercise_layer(&*layer);
    // Also through the chain code: parents named by the image resolve in
    // the same in-memory namespace (and mostly fail, which is the point).
    let _ = guestfs::disk::open_disk(fs, Path::new(path), &Default::default()).map(|d| {
        let mut buf = vec![0u8; 4096.min(d.virtual_size()) as usize];
        let _ = d.read_at(&mut buf, 0);
    });
}

fn exercise_layer(layer: &dyn Layer) {
    let size = layer.virtual_size();
    let mut off = 0u64;
    let mut buf = Vec::new();
    for _ in 0..MAX_RUNS {
        if off >= size {
            break;
        }
        let Ok((alloc, n)) = layer.status(off, size - off) else { return };
        assert!(n >= 1 && n <= size - off, "status returned {n} for {} remaining", size - off);
        if alloc == guestfs::disk::Allocation::Data {
            buf.resize(n.min(MAX_READ) as usize, 0);
            let _ = layer.read_data(off, &mut buf);
        }
        off += n;
    }
    // And the last sector, which exercises the far end of every table.
    if size >= 512 {
        if let Ok((guestfs::disk::Allocation::Data, _)) = layer.status(size - 512, 512) {
            buf.resize(512, 0);
            let _ = layer.read_data(size - 512, &mut buf);
        }
    }
}

/// A single image file as the whole namespace.
pub fn single(data: &[u8]) -> MemFs {
    MemFs::default().with("disk.img", data.to_vec())
}
