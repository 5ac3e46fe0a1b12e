//! Shared helpers for the end-to-end tests: fixtures made by real tools and
//! cached under `target/fixtures`, the `vbproxy` binary, the qemu oracles,
//! and a guard that proves no source file was modified.
//!
//! Fixture directories are built in a temporary directory and renamed into
//! place, so a crashed build never leaves a half-made fixture that later
//! runs would trust. Delete `target/fixtures` to rebuild them all.

pub mod tgtd;
pub mod tree;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

/// `../shared/corpus`, beside the repository, when present.
pub fn corpus(name: &str) -> Option<PathBuf> {
    let p = workspace().join("../shared/corpus").join(name);
    p.exists().then_some(p)
}

/// A scratch directory for one test, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let d = target_dir().join("scratch").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

static FIXTURE_LOCK: Mutex<()> = Mutex::new(());

/// Returns the cached fixture directory `name`, building it with `build`
/// (which fills the directory it is given) when absent. Bump the name when
/// the recipe changes.
pub fn fixture(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let _g = FIXTURE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = target_dir().join("fixtures");
    let dir = root.join(name);
    if dir.exists() {
        return dir;
    }
    let tmp = root.join(format!(".{name}.building.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create fixture dir");
    build(&tmp);
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process built it first; use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a command and returns its stdout as text.
pub fn run_text(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// The `vbproxy` binary, built once per test process so it is never stale.
pub fn vbproxy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = std::env::var("VBPROXY_RELEASE").is_ok();
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "vbproxy", "--bin", "vbproxy"]).current_dir(workspace());
        if release {
            cmd.arg("--release");
        }
        run(&mut cmd);
        target_dir().join(if release { "release" } else { "debug" }).join("vbproxy")
    })
    .clone()
}

/// A `vbproxy` command.
pub fn vbproxy() -> Command {
    Command::new(vbproxy_bin())
}

/// Runs `vbproxy ARGS`, expecting success; returns stdout.
pub fn vbproxy_ok(args: &[&str]) -> String {
    run_text(vbproxy().args(args))
}

/// Runs `vbproxy ARGS`, expecting failure; returns (exit code, stderr).
pub fn vbproxy_fails(args: &[&str]) -> (i32, String) {
    let out = vbproxy().args(args).output().expect("run vbproxy");
    assert!(!out.status.success(), "vbproxy {args:?} unexpectedly succeeded");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash file");
    format!("{:x}", h.finalize())
}

/// SHA-256 over a file's non-zero 4 KiB blocks and their offsets, reading
/// only data extents (SEEK_DATA/SEEK_HOLE): as strong as hashing every byte
/// (a block's bytes and position are both covered; zero blocks and holes
/// read alike) without reading gigabytes of holes in sparse test images.
pub fn content_digest(path: &Path) -> String {
    use guestfs::block::{FileSource, ReadAt};
    let src = FileSource::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let size = src.size();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut off = 0;
    while off < size {
        let (data, n) = src.extent_at(off).unwrap_or((true, size - off));
        if data {
            let n = n.min(buf.len() as u64);
            src.read_exact_at(&mut buf[..n as usize], off).expect("read source");
            // All-zero blocks hash like holes: ext4 reports unwritten extents
            // as holes or data depending on the page cache, not on content.
            for (i, block) in buf[..n as usize].chunks(4096).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    h.update((off + i as u64 * 4096).to_le_bytes());
                    h.update(block);
                }
            }
            off += n;
        } else {
            off += n;
        }
    }
    format!("{:x}", h.finalize())
}

/// Hashes every file under the given paths now; [`SourceGuard::check`]
/// asserts none changed (nothing ever writes to a source).
pub struct SourceGuard {
    hashes: Vec<(PathBuf, String, Option<std::time::SystemTime>)>,
}

impl SourceGuard {
    pub fn new<P: AsRef<Path>>(paths: &[P]) -> SourceGuard {
        let mut files = Vec::new();
        for p in paths {
            collect_files(p.as_ref(), &mut files);
        }
        let hashes = files
            .into_iter()
            .map(|f| {
                let mtime = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
                let h = content_digest(&f);
                (f, h, mtime)
            })
            .collect();
        SourceGuard { hashes }
    }

    pub fn check(&self) {
        for (f, h, mtime) in &self.hashes {
            assert_eq!(&content_digest(f), h, "source {} was modified", f.display());
            let now = std::fs::metadata(f).and_then(|m| m.modified()).ok();
            assert_eq!(&now, mtime, "source {} mtime changed", f.display());
        }
    }
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p).expect("read dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for e in entries {
            collect_files(&e, out);
        }
    } else {
        out.push(p.to_owned());
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so fixtures are
/// reproducible and every grain has distinct content.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One write of guest content, done by `qemu-io`.
#[derive(Clone, Debug)]
pub enum Fill {
    /// Every byte this value (`write -P`).
    Pattern(u8),
    /// Pseudo-random bytes from this seed (`write -s FILE`).
    Random(u64),
    /// Explicit zeroes (`write -z`): zero grains/clusters where the format has them.
    Zeroes,
}

#[derive(Clone, Debug)]
pub struct GuestWrite {
    pub offset: u64,
    pub len: u64,
    pub fill: Fill,
}

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// The standard content for a disk of `size` bytes: data at the start, an
/// unaligned write, a multi-block run, a write across the 2 GiB extent
/// boundary (when the disk is that big), an explicit zero range inside
/// data, and the last sector. Written high offsets first so formats allocate
/// out of order.
pub fn standard_writes(size: u64) -> Vec<GuestWrite> {
    use Fill::*;
    let mut w = vec![
        GuestWrite { offset: size - 512, len: 512, fill: Pattern(0x66) },
        GuestWrite { offset: 0, len: 64 * 1024, fill: Random(1) },
        GuestWrite { offset: MIB + 512, len: 4096, fill: Pattern(0x22) },
        GuestWrite { offset: 7 * MIB, len: 3 * MIB, fill: Random(2) },
        GuestWrite { offset: 8 * MIB, len: 64 * 1024, fill: Zeroes },
    ];
    if size > 2 * GIB + 2 * MIB {
        w.insert(0, GuestWrite { offset: 2 * GIB - 32 * 1024, len: 64 * 1024, fill: Random(3) });
        w.insert(0, GuestWrite { offset: 2 * GIB + MIB + 4096, len: 8192, fill: Pattern(0x55) });
    }
    w
}

/// Writes `writes` into the image with `qemu-io -f FORMAT`.
pub fn qemu_io_write(image: &Path, format: &str, writes: &[GuestWrite]) {
    let tmp = image.with_extension("qemu-io-src");
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", format]);
    let mut files = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        let c = match w.fill {
            Fill::Pattern(p) => format!("write -q -P {p} {} {}", w.offset, w.len),
            Fill::Zeroes => format!("write -q -z {} {}", w.offset, w.len),
            Fill::Random(seed) => {
                let f = tmp.with_extension(format!("src{i}"));
                std::fs::write(&f, pseudo_random(seed, w.len as usize)).expect("write random source");
                let c = format!("write -q -s {} {} {}", f.display(), w.offset, w.len);
                files.push(f);
                c
            }
        };
        cmd.args(["-c", &c]);
    }
    cmd.arg(image);
    run(&mut cmd);
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// `qemu-img info --output=json` of an image.
pub fn qemu_info(image: &Path) -> serde_json::Value {
    let out = run_text(Command::new("qemu-img").args(["info", "--output=json"]).arg(image));
    serde_json::from_str(&out).expect("qemu-img info json")
}

pub fn qemu_virtual_size(image: &Path) -> u64 {
    qemu_info(image)["virtual-size"].as_u64().expect("virtual-size")
}

/// Compares two files byte for byte, reading only where either has data.
pub fn assert_files_equal(ours: &Path, theirs: &Path) {
    use guestfs::block::{FileSource, ReadAt};
    let a = FileSource::open(ours).expect("open ours");
    let b = FileSource::open(theirs).expect("open theirs");
    assert_eq!(a.size(), b.size(), "{} and {} differ in size", ours.display(), theirs.display());
    let size = a.size();
    let chunk = 4 * MIB;
    let (mut ba, mut bb) = (vec![0u8; chunk as usize], vec![0u8; chunk as usize]);
    let mut off = 0;
    while off < size {
        let n = chunk.min(size - off);
        let hole = |s: &FileSource| matches!(s.extent_at(off), Some((false, len)) if len >= n);
        if !(hole(&a) && hole(&b)) {
            a.read_exact_at(&mut ba[..n as usize], off).expect("read ours");
            b.read_exact_at(&mut bb[..n as usize], off).expect("read theirs");
            if ba[..n as usize] != bb[..n as usize] {
                let i = ba.iter().zip(&bb).position(|(x, y)| x != y).unwrap_or(0);
                panic!(
                    "{} and {} differ at byte {} (ours {:#04x}, theirs {:#04x})",
                    ours.display(),
                    theirs.display(),
                    off + i as u64,
                    ba[i],
                    bb[i]
                );
            }
        }
        off += n;
    }
}

/// Data ranges of a map (`[{start,length,data,...}]`), coalesced. Only the
/// `data` flag is compared with qemu: its `zero` flag also reflects holes in
/// the host file under allocated clusters, which is the host's business.
pub fn data_ranges(map: &serde_json::Value) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in map.as_array().expect("map is a list") {
        if !e["data"].as_bool().unwrap_or(false) {
            continue;
        }
        let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        match out.last_mut() {
            Some(last) if last.0 + last.1 == s => last.1 += l,
            _ => out.push((s, l)),
        }
    }
    out
}

/// The oracle check every disk fixture gets: every byte `vbproxy export`
/// reads equals `qemu-img convert -O raw`, `vbproxy map` marks data where
/// `qemu-img map` does, and the image files are unchanged afterwards.
pub fn assert_matches_qemu(image: &Path, sources: &[&Path]) {
    let guard = SourceGuard::new(sources);
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    // Unique per call: parallel tests may compare images of the same name.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch(&format!("cmp-{}-{n}-{name}", std::process::id()));
    let theirs = dir.join("qemu.raw");
    let ours = dir.join("ours.raw");
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(image).arg(&theirs));
    vbproxy_ok(&["export", "--format", "raw-sparse", image.to_str().unwrap(), "-o", ours.to_str().unwrap()]);
    assert_files_equal(&ours, &theirs);
    let qmap: serde_json::Value =
        serde_json::from_str(&run_text(Command::new("qemu-img").args(["map", "--output=json"]).arg(image))).unwrap();
    let omap: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["map", "--json", image.to_str().unwrap()])).unwrap();
    assert_eq!(data_ranges(&omap), data_ranges(&qmap), "data ranges of {} differ from qemu-img map", image.display());
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", image.to_str().unwrap()])).unwrap();
    assert_eq!(info["disks"][0]["virtual_size"].as_u64(), Some(qemu_virtual_size(image)), "virtual size of {}", image.display());
    let _ = std::fs::remove_dir_all(&dir);
    guard.check();
}

/// Asserts that `vbproxy ARGS` fails with exit code `code` within 1 s of
/// CPU time (user + system) and 64 MiB peak RSS (both measured by GNU
/// time), without a panic, its message containing every one of `needles`.
/// CPU time is what the command itself costs; wall time on a loaded 2-core
/// machine also counts the other tests, so it only guards against hangs.
pub fn assert_clean_error(args: &[&str], code: i32, needles: &[&str]) -> String {
    let bin = vbproxy_bin();
    let start = std::time::Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "VBPROXY_MAXRSS_KB=%M VBPROXY_CPU=%U+%S"])
        .arg(bin)
        .args(args)
        .output()
        .expect("run /usr/bin/time vbproxy (apt-get install time)");
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stats = stderr.lines().find(|l| l.starts_with("VBPROXY_MAXRSS_KB=")).expect("GNU time reported nothing").to_owned();
    let rss_kb: u64 = stats
        .split_whitespace()
        .find_map(|w| w.strip_prefix("VBPROXY_MAXRSS_KB="))
        .and_then(|v| v.parse().ok())
        .expect("GNU time reported no max RSS");
    let cpu: f64 = stats
        .split_whitespace()
        .find_map(|w| w.strip_prefix("VBPROXY_CPU="))
        .map(|v| v.split('+').filter_map(|x| x.parse::<f64>().ok()).sum())
        .expect("GNU time reported no CPU time");
    let stderr: String = stderr.lines().filter(|l| !l.starts_with("VBPROXY_MAXRSS_KB=") && !l.starts_with("Command exited")).collect::<Vec<_>>().join("\n");
    assert!(!stderr.contains("panicked"), "vbproxy {args:?} panicked: {stderr}");
    assert_eq!(out.status.code(), Some(code), "exit code of vbproxy {args:?}; stderr: {stderr}");
    assert!(cpu < 1.0, "vbproxy {args:?} used {cpu:.2}s of CPU");
    assert!(secs < 20.0, "vbproxy {args:?} took {secs:.2}s of wall time (hang?)");
    assert!(rss_kb < 64 * 1024, "vbproxy {args:?} peaked at {rss_kb} KiB RSS");
    for n in needles {
        assert!(stderr.contains(n), "stderr of vbproxy {args:?} lacks {n:?}: {stderr}");
    }
    stderr
}

/// Runs `qemu-img ARGS`, expecting success; returns stdout.
pub fn qemu_img(args: &[&str]) -> String {
    run_text(Command::new("qemu-img").args(args))
}
