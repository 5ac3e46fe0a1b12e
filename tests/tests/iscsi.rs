//! The built-in read-only iSCSI initiator against a real tgtd.

use std::process::Command;
use vbproxy_e2e::tgtd::Tgtd;
use vbproxy_e2e::*;

#[test]
fn tgtd_harness_serves_luns_to_libiscsi() {
    let dir = scratch("iscsi-harness");
    let f = dir.join("a.img");
    std::fs::write(&f, pseudo_random(7, 4 << 20)).unwrap();
    let mut t = Tgtd::start("harness");
    t.add_target(1, "iqn.2026-11.test:harness");
    t.add_lun(1, 3, &f, &[("scsi_id", "harness3"), ("scsi_sn", "SNH3")]);
    t.bind_all(1);
    let ls = run_text(Command::new("iscsi-ls").args(["-s", &format!("iscsi://{}", t.portal())]));
    assert!(ls.contains("iqn.2026-11.test:harness"), "{ls}");
    t.restart();
    let inq = run_text(Command::new("iscsi-inq").args(["-e", "1", "-c", "128", &t.url("iqn.2026-11.test:harness", 3)]));
    assert!(inq.contains("SNH3"), "{inq}");
}
