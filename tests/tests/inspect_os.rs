//! `vbproxy inspect`: volumes, filesystems and the guest OS of a disk made
//! by sfdisk, mkfs.vfat + mtools and mkfs.ext4 -d.
use std::process::Command;
use vbproxy_e2e::*;

fn two_os_disk() -> std::path::PathBuf {
    fixture("inspect-os-v1", |d| {
        let fat = d.join("fat.img");
        run(Command::new("mkfs.vfat").args(["-C", "-n", "SYSTEM"]).arg(&fat).arg("65536"));
        run(Command::new("mmd").arg("-i").arg(&fat).args(["::/Windows", "::/Windows/System32"]));
        let tree = d.join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/os-release"), "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n").unwrap();
        std::fs::write(tree.join("etc/fstab"), "# static\nUUID=abcd / ext4 errors=remount-ro 0 1\n/dev/sda1 /boot/efi vfat umask=0077 0 1\n").unwrap();
        let ext = d.join("ext4.img");
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "root", "-d"]).arg(&tree).arg(&ext).arg("64M"));
        let disk = d.join("disk.raw");
        run(Command::new("truncate").args(["-s", "140M"]).arg(&disk));
        let mut sf = Command::new("sfdisk");
        sf.arg("-q").arg(&disk).stdin(std::process::Stdio::piped());
        let mut child = sf.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"label: dos\nstart=2048, size=131072, type=c\nstart=133120, size=131072, type=83\n").unwrap();
        assert!(child.wait().unwrap().success());
        run(Command::new("dd").arg(format!("if={}", fat.display())).arg(format!("of={}", disk.display())).args(["bs=512", "seek=2048", "conv=notrunc", "status=none"]));
        run(Command::new("dd").arg(format!("if={}", ext.display())).arg(format!("of={}", disk.display())).args(["bs=512", "seek=133120", "conv=notrunc", "status=none"]));
        for f in [fat, ext] {
            std::fs::remove_file(f).unwrap();
        }
        std::fs::remove_dir_all(tree).unwrap();
    })
}

#[test]
fn inspect_finds_volumes_filesystems_and_both_systems() {
    let d = two_os_disk();
    let guard = SourceGuard::new(&[&d]);
    let disk = d.join("disk.raw");
    let j: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", disk.to_str().unwrap()])).unwrap();
    let vols = j["disks"][0]["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 2, "{vols:?}");
    assert_eq!(vols[0]["id"], "p1");
    assert_eq!(vols[0]["start"], 2048 * 512);
    assert_eq!(vols[0]["filesystem"], "vfat");
    assert_eq!(vols[0]["label"], "SYSTEM");
    assert_eq!(vols[1]["id"], "p2");
    assert_eq!(vols[1]["filesystem"], "ext4");
    assert_eq!(vols[1]["label"], "root");
    let systems = j["systems"].as_array().unwrap();
    assert_eq!(systems.len(), 2, "{systems:?}");
    assert_eq!(systems[0]["kind"], "windows");
    assert_eq!(systems[0]["root"], "disk0/p1");
    assert_eq!(systems[0]["system_root"], "/Windows");
    assert_eq!(systems[1]["kind"], "linux");
    assert_eq!(systems[1]["root"], "disk0/p2");
    assert_eq!(systems[1]["id"], "debian");
    assert_eq!(systems[1]["version"], "12");
    assert_eq!(systems[1]["name"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(systems[1]["fstab"][1]["mountpoint"], "/boot/efi");
    assert_eq!(j["os"], systems[0]);
    let text = vbproxy_ok(&["inspect", disk.to_str().unwrap()]);
    assert!(text.contains("guest OS: Debian GNU/Linux 12 (bookworm) on disk0/p2"), "{text}");
    guard.check();
}
