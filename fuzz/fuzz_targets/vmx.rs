//! Fuzz target: `.vmx` and `.vmsd` parsing (the dictionary format, disk
//! slots and their classification, the snapshot tree walk).
#![no_main]
use guestfs::vm::{vmsd::Vmsd, vmx::Vmx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Vmx::parse(data) {
        for d in v.disks() {
            let _ = (d.slot(), d.node());
        }
        let _ = (v.display_name(), v.nvram(), v.guest_os(), v.uuid_bios());
    }
    if let Ok(s) = Vmsd::parse(data) {
        let _ = s.tree();
        for snap in &s.snapshots {
            let _ = s.depth(snap.uid);
        }
        let _ = s.current_snapshot();
    }
});
