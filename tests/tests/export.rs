//! `vbproxy export` / `verify` against qemu-img: every input format the
//! disk layer reads to every output format, chains, streaming, and the
//! promise that an interrupted or failed export leaves nothing complete.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use vbproxy_e2e::*;

const OUTPUTS: &[(&str, &str, bool)] = &[
    // (format, file extension, qemu-img check supports it)
    ("raw", "raw", false),
    ("raw-sparse", "img", false),
    ("qcow2", "qcow2", true),
    ("vhd", "vhd", false),
    ("vhdx", "vhdx", true),
    ("vmdk-stream", "vmdk", true),
    ("vmdk-sparse", "vmdk", true),
    ("vmdk-flat", "vmdk", true),
];

const SIZE: u64 = 300 * MIB + 64 * 1024;

/// One source disk per input format, same guest content, made by qemu.
fn inputs() -> PathBuf {
    fixture("export-inputs-v1", |d| {
        let raw = d.join("truth.raw");
        qemu_img(&["create", "-q", "-f", "raw", raw.to_str().unwrap(), &SIZE.to_string()]);
        qemu_io_write(&raw, "raw", &standard_writes(SIZE));
        for (name, args) in [
            ("in.qcow2", vec!["-O", "qcow2"]),
            ("in-z.qcow2", vec!["-c", "-O", "qcow2"]),
            ("in.vmdk", vec!["-O", "vmdk"]),
            ("in-stream.vmdk", vec!["-O", "vmdk", "-o", "subformat=streamOptimized"]),
            ("in.vhd", vec!["-O", "vpc", "-o", "subformat=dynamic,force_size=on"]),
            ("in.vhdx", vec!["-O", "vhdx"]),
        ] {
            let mut a = vec!["convert"];
            a.extend(args);
            a.push(raw.to_str().unwrap());
            let out = d.join(name);
            a.push(out.to_str().unwrap());
            qemu_img(&a);
        }
    })
}

fn export(src: &Path, format: &str, out: &Path, extra: &[&str]) {
    let mut args = vec!["export", "-q", "--format", format, src.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    vbproxy_ok(&args);
}

fn assert_identical(a: &Path, b: &Path) {
    let out = Command::new("qemu-img").arg("compare").arg(a).arg(b).output().unwrap();
    assert!(out.status.success(), "qemu-img compare {} {}: {}", a.display(), b.display(), String::from_utf8_lossy(&out.stdout));
}

fn check_output(src: &Path, out: &Path, qemu_check: bool) {
    assert_identical(src, out);
    if qemu_check {
        let c = run_text(Command::new("qemu-img").arg("check").arg(out));
        assert!(c.contains("No errors were found"), "qemu-img check {}: {c}", out.display());
    }
    let info = qemu_info(out);
    let ours: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", out.to_str().unwrap()])).unwrap();
    assert_eq!(ours["disks"][0]["format"], info["format"], "format of {}", out.display());
    assert_eq!(ours["disks"][0]["virtual_size"], info["virtual-size"], "size of {}", out.display());
    vbproxy_ok(&["verify", out.to_str().unwrap(), "--source", src.to_str().unwrap()]);
}

fn matrix_for(input: &str) {
    let dir = inputs();
    let src = dir.join(input);
    let guard = SourceGuard::new(&[&dir]);
    let out_dir = scratch(&format!("export-{input}"));
    for (format, ext, qcheck) in OUTPUTS {
        let out = out_dir.join(format!("out-{format}.{ext}"));
        export(&src, format, &out, &[]);
        check_output(&src, &out, *qcheck);
    }
    guard.check();
}

#[test]
fn raw_to_every_format() {
    matrix_for("truth.raw");
}

#[test]
fn qcow2_to_every_format() {
    matrix_for("in.qcow2");
}

#[test]
fn compressed_qcow2_to_every_format() {
    matrix_for("in-z.qcow2");
}

#[test]
fn vmdk_sparse_to_every_format() {
    matrix_for("in.vmdk");
}

#[test]
fn vmdk_stream_to_every_format() {
    matrix_for("in-stream.vmdk");
}

#[test]
fn vhd_to_every_format() {
    matrix_for("in.vhd");
}

#[test]
fn vhdx_to_every_format() {
    matrix_for("in.vhdx");
}

#[test]
fn chain_exports_latest_state_and_base_alone_pre_snapshot_state() {
    let d = fixture("export-chain-v1", |d| {
        let base = d.join("base.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
        qemu_io_write(&base, "qcow2", &[GuestWrite { offset: 0, len: 8 * MIB, fill: Fill::Pattern(1) }]);
        let mut parent = base;
        for (i, fill) in [(1, 2u8), (2, 3u8)] {
            let top = d.join(format!("d{i}.qcow2"));
            let pname = parent.file_name().unwrap().to_str().unwrap().to_owned();
            run(Command::new("qemu-img").current_dir(d).args(["create", "-q", "-f", "qcow2", "-b", &pname, "-F", "qcow2"]).arg(&top));
            qemu_io_write(&top, "qcow2", &[GuestWrite { offset: i * MIB, len: 2 * MIB, fill: Fill::Pattern(fill) }]);
            parent = top;
        }
    });
    let guard = SourceGuard::new(&[&d]);
    let out = scratch("export-chain");
    export(&d.join("d2.qcow2"), "qcow2", &out.join("top.qcow2"), &[]);
    assert_identical(&d.join("d2.qcow2"), &out.join("top.qcow2"));
    export(&d.join("d2.qcow2"), "raw-sparse", &out.join("base.raw"), &["--base"]);
    assert_identical(&d.join("base.qcow2"), &out.join("base.raw"));
    export(&d.join("d2.qcow2"), "vmdk-stream", &out.join("mid.vmdk"), &["--below", "1"]);
    assert_identical(&d.join("d1.qcow2"), &out.join("mid.vmdk"));
    // The top and the base really differ, so the checks above can fail.
    let differ = Command::new("qemu-img").arg("compare").arg(out.join("top.qcow2")).arg(out.join("base.raw")).output().unwrap();
    assert!(!differ.status.success());
    guard.check();
}

#[test]
fn raw_and_vmdk_stream_to_stdout() {
    let dir = inputs();
    let src = dir.join("truth.raw");
    let out = scratch("export-stdout");
    for (format, name) in [("raw", "s.raw"), ("vmdk-stream", "s.vmdk")] {
        let file = std::fs::File::create(out.join(name)).unwrap();
        let st = vbproxy().args(["export", "--format", format, "-o", "-"]).arg(&src).stdout(file).status().unwrap();
        assert!(st.success());
        assert_identical(&src, &out.join(name));
    }
    // Formats that need to seek refuse a pipe with a usage-level error.
    let (code, err) = vbproxy_fails(&["export", "--format", "qcow2", "-o", "-", src.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("standard output"), "{err}");
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn sigint_leaves_nothing_and_sigkill_nothing_complete() {
    let dir = inputs();
    let src = dir.join("truth.raw");
    let out = scratch("export-interrupt");
    for (sig, name) in [("INT", "int.raw"), ("TERM", "term.raw"), ("KILL", "kill.raw")] {
        let child = vbproxy()
            .args(["export", "-q", "--format", "raw", "--rate-limit", "20M", "-o"])
            .arg(out.join(name))
            .arg(&src)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        run(Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()));
        let res = child.wait_with_output().unwrap();
        assert!(!res.status.success(), "export survived SIG{sig}");
        let left = leftovers(&out);
        assert!(!left.iter().any(|f| f == name || f.ends_with(".manifest.json")), "SIG{sig} left {left:?}");
        if sig != "KILL" {
            assert!(left.is_empty(), "SIG{sig} left {left:?}");
        } else {
            // A killed process cannot clean up: what remains is named .partial.
            assert!(left.iter().all(|f| f.ends_with(".partial")), "{left:?}");
            for f in left {
                std::fs::remove_file(out.join(f)).unwrap();
            }
        }
    }
}

#[test]
fn disk_full_gives_a_clear_error_and_removes_the_partial_file() {
    let dir = inputs();
    let src = dir.join("truth.raw");
    let mnt = scratch("export-full");
    run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&mnt));
    let res = vbproxy().args(["export", "-q", "--format", "raw", "-o"]).arg(mnt.join("x.raw")).arg(&src).output().unwrap();
    let left = leftovers(&mnt);
    run(Command::new("umount").arg(&mnt));
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(left.is_empty(), "left {left:?}");
}

#[test]
fn verify_detects_a_changed_export() {
    let dir = inputs();
    let src = dir.join("truth.raw");
    let out = scratch("export-verify");
    let img = out.join("v.qcow2");
    export(&src, "qcow2", &img, &[]);
    vbproxy_ok(&["verify", img.to_str().unwrap()]);
    // Flip one byte of guest data inside the export.
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -q -P 0x99 0 512"]).arg(&img));
    let (code, err) = vbproxy_fails(&["verify", img.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("differs"), "{err}");
}

#[test]
fn rate_limit_holds_the_read_rate() {
    let dir = inputs();
    let src = dir.join("truth.raw");
    let out = scratch("export-rate");
    // The data batches of this disk: export reads them whole.
    let map: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["map", "--json", src.to_str().unwrap()])).unwrap();
    let mut batches = std::collections::BTreeSet::new();
    for r in data_ranges(&map) {
        for b in r.0 / (4 * MIB)..=(r.0 + r.1 - 1) / (4 * MIB) {
            batches.insert(b);
        }
    }
    let bytes = batches.len() as u64 * 4 * MIB;
    let rate = 8 * MIB;
    let start = std::time::Instant::now();
    vbproxy_ok(&["export", "-q", "--format", "qcow2", "--rate-limit", "8M", src.to_str().unwrap(), "-o", out.join("r.qcow2").to_str().unwrap()]);
    let secs = start.elapsed().as_secs_f64();
    let expected = bytes as f64 / rate as f64;
    // The bucket allows the first second's worth at once.
    assert!(secs >= expected - 1.0, "read {bytes} bytes in {secs:.2}s at --rate-limit 8M (expected >= {:.2}s)", expected - 1.0);
    assert_identical(&src, &out.join("r.qcow2"));
}

#[test]
fn progress_shows_on_a_terminal_only() {
    let dir = inputs();
    let src = dir.join("truth.raw");
    let out = scratch("export-progress");
    // `script` gives the export a real terminal; a slow rate makes it draw.
    let cmd = format!(
        "{} export --format raw-sparse --rate-limit 4M {} -o {}",
        vbproxy_bin().display(),
        src.display(),
        out.join("tty.raw").display()
    );
    let tty = run_text(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    assert!(tty.contains("ETA") && tty.contains("%"), "no progress on a terminal: {tty:?}");
    let piped = vbproxy().args(["export", "--format", "raw-sparse", "--rate-limit", "4M"]).arg(&src).arg("-o").arg(out.join("pipe.raw")).output().unwrap();
    assert!(piped.status.success());
    assert!(piped.stderr.is_empty(), "progress on a pipe: {:?}", String::from_utf8_lossy(&piped.stderr));
}

/// `-o /dev/null` (a benchmark's favourite) and `-o FIFO` are streams: the
/// node must stay what it was, with no `.partial` or manifest beside it.
/// A block device is refused: vbproxy writes to no device.
#[test]
fn special_outputs_are_streams_and_devices_are_refused() {
    use std::os::unix::fs::FileTypeExt;
    let src = inputs().join("in.qcow2");
    let truth = inputs().join("truth.raw");
    let guard = SourceGuard::new(&[&src, &truth]);
    let s = src.to_str().unwrap();
    vbproxy_ok(&["export", "-q", s, "-o", "/dev/null"]);
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null was replaced");
    assert!(!Path::new("/dev/null.partial").exists() && !Path::new("/dev/null.manifest.json").exists());
    let (code, err) = vbproxy_fails(&["export", "-q", "--format", "qcow2", s, "-o", "/dev/null"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stream"), "{err}");

    // A FIFO gets the raw bytes, in order.
    let dir = scratch("export-special");
    let fifo = dir.join("pipe");
    run(Command::new("mkfifo").arg(&fifo));
    let reader = Command::new("sh")
        .arg("-c")
        .arg(format!("sha256sum < '{}'", fifo.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    vbproxy_ok(&["export", "-q", s, "-o", fifo.to_str().unwrap()]);
    let out = reader.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_owned();
    assert_eq!(got, sha256_file(&truth));
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    // A block device: refused before anything is written.
    let img = dir.join("dev.img");
    std::fs::write(&img, vec![0x5au8; 1 << 20]).unwrap();
    let before = sha256_file(&img);
    let loopdev = String::from_utf8(run(Command::new("losetup").args(["-f", "--show"]).arg(&img)).stdout).unwrap().trim().to_owned();
    let (code, err) = vbproxy_fails(&["export", "-q", s, "-o", &loopdev]);
    run(Command::new("losetup").args(["-d", &loopdev]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("block device"), "{err}");
    assert_eq!(sha256_file(&img), before);
    guard.check();
}
