//! Raw images: bytes and hole map against qemu-img.
use vbproxy_e2e::*;

#[test]
fn raw_image_reads_like_qemu() {
    let dir = fixture("raw-v1", |d| {
        let img = d.join("disk.raw");
        run(std::process::Command::new("qemu-img").args(["create", "-q", "-f", "raw"]).arg(&img).arg((2 * GIB + 100 * MIB).to_string()));
        qemu_io_write(&img, "raw", &standard_writes(2 * GIB + 100 * MIB));
    });
    let img = dir.join("disk.raw");
    assert_matches_qemu(&img, &[&dir]);
}
