//! Fuzz target: vmdk_sparse images (seed corpus: make fuzz-seeds).
#![no_main]
#[allow(unused_imports)]
use guestfs::disk::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    guestfs_fuzz::exercise(&guestfs_fuzz::single(data), "disk.img", Some(Format::Vmdk));
});
