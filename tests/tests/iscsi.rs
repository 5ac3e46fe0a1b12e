//! The built-in read-only iSCSI initiator against a real tgtd on
//! 127.0.0.1: identifiers against libiscsi's tools, byte-exact reads
//! against the backing files, CHAP, a target lost or restarted mid-read,
//! and backing files unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vbproxy_e2e::tgtd::Tgtd;
use vbproxy_e2e::*;

const IQN: &str = "iqn.2026-11.test.vbproxy:disks";
const IQN2: &str = "iqn.2026-11.test.vbproxy:other";

/// Backing files: two random-content LUNs (64 MiB, 72 MiB + 512 B) and a
/// partitioned disk with an ext4 filesystem made by sfdisk + mkfs.ext4 -d.
fn backing() -> PathBuf {
    fixture("iscsi-backing-v1", |d| {
        std::fs::write(d.join("lun1.img"), pseudo_random(11, 64 << 20)).unwrap();
        std::fs::write(d.join("lun3.img"), pseudo_random(33, (72 << 20) + 512)).unwrap();
        std::fs::write(d.join("small.img"), pseudo_random(22, 4 << 20)).unwrap();
        let tree = d.join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/os-release"), "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n").unwrap();
        std::fs::write(tree.join("data.bin"), pseudo_random(77, 3 << 20)).unwrap();
        let ext = d.join("ext4.img");
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "root", "-d"]).arg(&tree).arg(&ext).arg("64M"));
        let disk = d.join("lun7.img");
        run(Command::new("truncate").args(["-s", "80M"]).arg(&disk));
        let mut child = Command::new("sfdisk").arg("-q").arg(&disk).stdin(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"label: dos\nstart=2048, size=131072, type=83\n").unwrap();
        assert!(child.wait().unwrap().success());
        run(Command::new("dd").arg(format!("if={}", ext.display())).arg(format!("of={}", disk.display())).args(["bs=512", "seek=2048", "conv=notrunc", "status=none"]));
        std::fs::remove_file(ext).unwrap();
    })
}

/// A tgtd with LUNs 1, 3, 7 on one target (scsi_id/scsi_sn set) and LUN 2
/// on a second one.
fn serve(name: &str, d: &Path) -> Tgtd {
    let mut t = Tgtd::start(name);
    t.add_target(1, IQN);
    t.add_lun(1, 1, &d.join("lun1.img"), &[("scsi_id", "vbp-lun-one"), ("scsi_sn", "SN-0001")]);
    t.add_lun(1, 3, &d.join("lun3.img"), &[("scsi_id", "vbp-lun-three"), ("scsi_sn", "SN-0003"), ("vendor_id", "VBPTEST"), ("product_id", "RandomDisk"), ("product_rev", "0042")]);
    t.add_lun(1, 7, &d.join("lun7.img"), &[("scsi_id", "vbp-lun-seven"), ("scsi_sn", "SN-0007")]);
    t.bind_all(1);
    t.add_target(2, IQN2);
    t.add_lun(2, 2, &d.join("small.img"), &[("scsi_sn", "SN-OTHER-2")]);
    t.bind_all(2);
    t
}

fn sources(d: &Path) -> Vec<PathBuf> {
    ["lun1.img", "lun3.img", "lun7.img", "small.img"].iter().map(|f| d.join(f)).collect()
}

/// iscsi-inq's `Key:[value]` or `Key:value` lines.
fn field(text: &str, key: &str) -> String {
    let line = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {text}"));
    line[key.len()..].trim_start_matches(':').trim().trim_start_matches('[').trim_end_matches(']').trim().to_string()
}

#[test]
fn identifiers_match_libiscsi() {
    let d = backing();
    let guard = SourceGuard::new(&sources(&d));
    let t = serve("ids", &d);
    let json: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["iscsi-ls", &t.portal(), "--json"])).unwrap();
    let luns = json.as_array().unwrap();
    let listed: Vec<(String, u64)> = luns.iter().map(|l| (l["target"].as_str().unwrap().to_string(), l["lun"].as_u64().unwrap())).collect();
    assert_eq!(listed, vec![(IQN.to_string(), 1), (IQN.to_string(), 3), (IQN.to_string(), 7), (IQN2.to_string(), 2)], "{json:#}");

    // iscsi-ls -s lists the same disks.
    let ls = run_text(Command::new("iscsi-ls").args(["-s", &format!("iscsi://{}", t.portal())]));
    let disks = ls.lines().filter(|l| l.contains("DIRECT_ACCESS")).count();
    assert_eq!(disks, 4, "{ls}");

    for l in luns {
        let url = t.url(l["target"].as_str().unwrap(), l["lun"].as_u64().unwrap());
        assert_eq!(l["device"], url.as_str());
        let inq = run_text(Command::new("iscsi-inq").arg(&url));
        assert_eq!(l["vendor"], field(&inq, "Vendor").as_str(), "{url}");
        assert_eq!(l["model"], field(&inq, "Product").as_str(), "{url}");
        assert_eq!(l["revision"], field(&inq, "Revision").as_str(), "{url}");
        let sn = run_text(Command::new("iscsi-inq").args(["-e", "1", "-c", "128", &url]));
        assert_eq!(l["serial"], field(&sn, "Unit Serial Number").as_str(), "{url}");
        let cap = run_text(Command::new("iscsi-readcapacity16").arg(&url));
        assert_eq!(l["size"].as_u64().unwrap(), field(&cap, "Total size").parse::<u64>().unwrap(), "{url}");
        assert_eq!(l["logical_block_size"].as_u64().unwrap(), field(&cap, "LOGICAL BLOCK LENGTH IN BYTES").parse::<u64>().unwrap());
        let exp: u32 = field(&cap, "P_I_EXPONENT:0 LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT").parse().unwrap();
        assert_eq!(l["physical_block_size"].as_u64().unwrap(), l["logical_block_size"].as_u64().unwrap() << exp);

        // VPD 0x83: libiscsi prints the designators last-first, binary
        // values raw up to their first NUL byte.
        let out = Command::new("iscsi-inq").args(["-e", "1", "-c", "131", &url]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut theirs: Vec<(String, String, Vec<u8>)> = Vec::new();
        let mut kind = String::new();
        let mut assoc = String::new();
        for line in out.stdout.split(|&b| b == b'\n') {
            let s = String::from_utf8_lossy(line);
            if let Some(v) = s.strip_prefix("Designator Type:") {
                kind = v.to_string();
            } else if let Some(v) = s.strip_prefix("Association:") {
                assoc = v.to_string();
            } else if let Some(v) = line.strip_prefix(b"Designator:[") {
                theirs.push((kind.clone(), assoc.clone(), v.strip_suffix(b"]").unwrap_or(v).to_vec()));
            }
        }
        theirs.reverse();
        let ours = l["designators"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{url}: ours {ours:?}, iscsi-inq {text}");
        assert!(ours.iter().any(|d| d["type"] == "naa"), "{url}: no NAA designator");
        for (o, (k, a, raw)) in ours.iter().zip(&theirs) {
            let v = o["value"].as_str().unwrap();
            match o["type"].as_str().unwrap() {
                "naa" => {
                    assert!(k.contains("NAA"), "{url}: {o} vs {k}");
                    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                    assert!(v.starts_with(&format!("naa.{hex}")), "{url}: {v} vs raw {raw:?}");
                    assert_eq!(v.len(), 4 + if v.as_bytes()[4] == b'6' { 32 } else { 16 }, "{v}");
                }
                "t10" => {
                    assert!(k.contains("T10"), "{url}: {o} vs {k}");
                    assert_eq!(v, format!("t10.{}", String::from_utf8_lossy(raw).trim()), "{url}");
                }
                other => assert!(!other.is_empty()),
            }
            assert_eq!(o["association"] == "lun", a.contains("LOGICAL_UNIT"), "{url}: {o} vs {a}");
        }
        // The identifier inventories use: a registered NAA (type 6) before
        // tgtd's locally assigned one (type 3), as ESXi names such LUNs.
        let naa: Vec<&str> = ours.iter().filter(|d| d["type"] == "naa" && d["association"] == "lun").filter_map(|d| d["value"].as_str()).collect();
        let want = naa.iter().find(|v| v.starts_with("naa.6")).or(naa.first()).copied().unwrap();
        assert_eq!(l["id"], want, "{url}: preferred id is the registered NAA");
    }
    // scsi_id shows as the T10 vendor designator.
    assert!(luns[1]["designators"].as_array().unwrap().iter().any(|d| d["value"] == "t10.vbp-lun-three"), "{json:#}");
    assert_eq!(luns[1]["vendor"], "VBPTEST");
    assert_eq!(luns[1]["size"], (72 << 20) + 512);
    drop(t);
    guard.check();
}

#[test]
fn reads_are_byte_exact() {
    let d = backing();
    let guard = SourceGuard::new(&sources(&d));
    let t = serve("exact", &d);
    let out = scratch("iscsi-exact");
    for (lun, file) in [(3u64, "lun3.img"), (1, "lun1.img")] {
        let raw = out.join(format!("lun{lun}.raw"));
        vbproxy_ok(&["export", "--format", "raw", "-q", "--no-manifest", &t.url(IQN, lun), "-o", raw.to_str().unwrap()]);
        assert_files_equal(&raw, &d.join(file));
    }

    // The library itself, at unaligned offsets and lengths, several threads.
    use guestfs::block::ReadAt;
    let url = iscsi::IscsiUrl::parse(&t.url(IQN, 3)).unwrap();
    let lun = std::sync::Arc::new(iscsi::IscsiLun::open(&url, iscsi::Limits::default()).unwrap());
    let want = std::fs::read(d.join("lun3.img")).unwrap();
    assert_eq!(lun.size(), want.len() as u64);
    let cases: Vec<(u64, usize)> = vec![(0, 1), (1, 511), (511, 2), (4095, 8193), (1 << 20, 3 << 20), (12_345_677, 5_000_001), (want.len() as u64 - 700, 700), (want.len() as u64 - 1, 1)];
    std::thread::scope(|s| {
        for &(off, len) in &cases {
            let (lun, want) = (lun.clone(), &want);
            s.spawn(move || {
                let mut buf = vec![0u8; len];
                lun.read_exact_at(&mut buf, off).unwrap();
                assert!(buf == want[off as usize..off as usize + len], "bytes differ at offset {off}, length {len}");
            });
        }
    });
    let mut past = vec![0u8; 2];
    let e = lun.read_exact_at(&mut past, want.len() as u64 - 1).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    drop(lun);
    drop(t);
    guard.check();
}

#[test]
fn filesystem_on_a_lun() {
    let d = backing();
    let guard = SourceGuard::new(&sources(&d));
    let t = serve("fs", &d);
    let url = t.url(IQN, 7);
    let j: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", &url])).unwrap();
    let vols = j["disks"][0]["volumes"].as_array().unwrap();
    assert_eq!(vols[0]["filesystem"], "ext4", "{j:#}");
    assert_eq!(vols[0]["label"], "root");
    let ls = vbproxy_ok(&["ls", &url, "/p1/"]);
    assert!(ls.contains("data.bin") && ls.contains("etc"), "{ls}");
    let out = vbproxy().args(["cat", &url, "/p1/data.bin"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == pseudo_random(77, 3 << 20), "data.bin read through iSCSI differs");
    drop(t);
    guard.check();
}

#[test]
fn chap_good_secret_works_bad_secret_fails_fast() {
    let d = backing();
    let mut t = Tgtd::start("chap");
    t.add_target(1, IQN);
    t.add_lun(1, 2, &d.join("small.img"), &[]);
    t.bind_all(1);
    t.add_chap(1, "backup", "s3cretPassw0rd");
    let good = format!("iscsi://backup%s3cretPassw0rd@{}/{IQN}/2", t.portal());
    let out = scratch("iscsi-chap");
    let raw = out.join("small.raw");
    vbproxy_ok(&["export", "-q", "--no-manifest", &good, "-o", raw.to_str().unwrap()]);
    assert_files_equal(&raw, &d.join("small.img"));

    // Secret from a file for iscsi-ls, and from the environment for a URL.
    let secret_file = out.join("secret");
    std::fs::write(&secret_file, "s3cretPassw0rd\n").unwrap();
    let ls = vbproxy_ok(&["iscsi-ls", &t.portal(), "--user", "backup", "--chap-secret-file", secret_file.to_str().unwrap()]);
    assert!(ls.contains(&format!("{IQN}/2")), "{ls}");
    let env_ok = vbproxy()
        .args(["inspect", &format!("iscsi://backup@{}/{IQN}/2", t.portal())])
        .env("VBPROXY_ISCSI_SECRET", "s3cretPassw0rd")
        .output()
        .unwrap();
    assert!(env_ok.status.success(), "{}", String::from_utf8_lossy(&env_ok.stderr));

    for (url, needle) in [
        (format!("iscsi://backup%wrongsecret@{}/{IQN}/2", t.portal()), "wrong CHAP user or secret"),
        (format!("iscsi://{}/{IQN}/2", t.portal()), "requires CHAP"),
    ] {
        let start = Instant::now();
        let (code, err) = vbproxy_fails(&["inspect", &url]);
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("authentication failed") && err.contains(needle), "{err}");
        assert!(!err.contains("wrongsecret") && !err.contains("s3cret"), "secret printed: {err}");
    }
}

/// Starts `vbproxy export` of LUN 3 held to 16 MB/s (about 5 s).
fn slow_export(t: &Tgtd, out: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = vbproxy();
    cmd.args(["export", "-q", "--no-manifest", "--rate-limit", "16M", &t.url(IQN, 3), "-o", out.to_str().unwrap()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap()
}

fn wait_with_limit(mut child: std::process::Child, limit: Duration) -> (std::process::ExitStatus, String, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status, err, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("vbproxy still running after {limit:?}: hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killed_target_is_a_clear_error_not_a_hang() {
    let d = backing();
    let guard = SourceGuard::new(&sources(&d));
    let mut t = serve("kill", &d);
    let out = scratch("iscsi-kill").join("out.raw");
    let child = slow_export(&t, &out, &[("VBPROXY_ISCSI_TIMEOUT", "3"), ("VBPROXY_ISCSI_RETRIES", "2")]);
    std::thread::sleep(Duration::from_millis(1500));
    t.kill();
    let (status, err, took) = wait_with_limit(child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("unreachable after 2 reconnection attempts") && err.contains(IQN), "{err}");
    assert!(took < Duration::from_secs(15), "error after {took:?}");
    guard.check();
}

#[test]
fn restarted_target_is_reconnected_and_the_read_completes() {
    let d = backing();
    let guard = SourceGuard::new(&sources(&d));
    let mut t = serve("restart", &d);
    let out = scratch("iscsi-restart").join("out.raw");
    let child = slow_export(&t, &out, &[("VBPROXY_ISCSI_TIMEOUT", "5")]);
    std::thread::sleep(Duration::from_millis(1500));
    t.kill();
    std::thread::sleep(Duration::from_millis(700));
    t.restart();
    let (status, err, _) = wait_with_limit(child, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    assert_files_equal(&out, &d.join("lun3.img"));
    drop(t);
    guard.check();
}
