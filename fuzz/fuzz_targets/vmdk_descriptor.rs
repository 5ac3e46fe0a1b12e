//! Fuzz target: a VMDK text descriptor and the extent files it names. The
//! input is split at the first NUL: the descriptor, then the bytes of two
//! extents `e0.vmdk` and `e1.vmdk` (split at the next NUL), so the fuzzer can
//! reach extent parsing through descriptor lines.
#![no_main]
use guestfs::disk::Format;
use guestfs::namespace::MemFs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let desc = parts.next().unwrap_or_default().to_vec();
    let e0 = parts.next().unwrap_or_default().to_vec();
    let e1 = parts.next().unwrap_or_default().to_vec();
    let fs = MemFs::default().with("d.vmdk", desc).with("e0.vmdk", e0).with("e1.vmdk", e1);
    guestfs_fuzz::exercise(&fs, "d.vmdk", Some(Format::Vmdk));
});
