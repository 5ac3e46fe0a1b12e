//! Fuzz target: VMFS datastores. A VMFS volume needs tens of MiB of address
//! space (LVM header at 1 MiB, filesystem at 17+2 MiB, system files after),
//! so the input is a list of 516-byte records (u32 LE sector number, 512
//! bytes) laid over an all-zero 512 MiB image. Seed: the non-zero sectors of
//! the ESXi-made sample (`python3 tests/fixtures/mk_vmfs.py --fuzz-seed
//! ../shared/corpus/vmfs5.bin.gz-unpacked fuzz/corpus/vmfs/sample`).
#![no_main]
use guestfs::block::ReadAt;
use guestfs::fs::{FileKind, Filesystem};
use guestfs::vmfs::Vmfs;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::Arc;

const SIZE: u64 = 512 << 20;

struct Sectors(BTreeMap<u64, Vec<u8>>);

impl ReadAt for Sectors {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= SIZE).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.fill(0);
        for (&s, data) in self.0.range(offset / 512..end.div_ceil(512)) {
            for (i, b) in data.iter().enumerate() {
                let p = s * 512 + i as u64;
                if p >= offset && p < end {
                    buf[(p - offset) as usize] = *b;
                }
            }
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        SIZE
    }
}

fuzz_target!(|data: &[u8]| {
    let mut sectors = BTreeMap::new();
    for rec in data.chunks_exact(516) {
        let s = u64::from(u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]])) % (SIZE / 512);
        sectors.insert(s, rec[4..].to_vec());
    }
    let src: Arc<dyn ReadAt> = Arc::new(Sectors(sectors));
    let _ = guestfs::vmfs::probe(src.as_ref());
    let Ok(fs) = Vmfs::open(vec![src], "fuzz") else { return };
    let _ = fs.info();
    // Walk a bounded part of the tree, reading a little of every file.
    let mut todo = vec![(fs.root(), 0u32)];
    let mut seen = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while let Some((dir, depth)) = todo.pop() {
        let Ok(entries) = fs.read_dir(dir) else { continue };
        for e in entries {
            seen += 1;
            if seen > 256 {
                return;
            }
            let Ok(st) = fs.stat(e.id) else { continue };
            match st.kind {
                FileKind::Dir if depth < 8 => todo.push((e.id, depth + 1)),
                FileKind::File => {
                    let _ = fs.read(e.id, 0, &mut buf);
                    let _ = fs.read(e.id, st.size.saturating_sub(100), &mut buf);
                    if st.size <= 1 << 30 {
                        let _ = fs.data_ranges(e.id);
                    }
                }
                FileKind::Symlink => {
                    let _ = fs.readlink(e.id);
                }
                _ => {}
            }
        }
    }
});
