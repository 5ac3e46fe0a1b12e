#!/usr/bin/env python3
"""vbproxy benchmarks: vbproxy and the peer tool, side by side, in one run.

Every benchmark times vbproxy and its peer (qemu-img, ntfs-3g + GNU tar,
kernel + GNU tar) on the same input in the same run, takes the median of
several repetitions with the order of the sides alternated, records the
peak RSS of every measured process (GNU time %M), and regenerates
docs/PERFORMANCE.md. Benchmarks are not tests: a ratio below its target is
reported, never an error. A benchmark whose vbproxy side fails on its input
is reported as "not run" and the others still run.

    python3 bench/bench.py            # full run, writes docs/PERFORMANCE.md
    python3 bench/bench.py --small    # small inputs, quick check of the script
    python3 bench/bench.py --only tar # benchmarks whose id contains "tar"
    python3 bench/bench.py --only iscsi --out target/bench/PERFORMANCE-iscsi.md
                                      # section C alone, report beside the full one

Generated inputs are cached under target/bench/ (target/bench-small/) and
reused; delete the directory to rebuild them. Needs root (loop devices,
mounts).
"""

import argparse
import datetime
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VBPROXY = "target/release/vbproxy"
TIME = "/usr/bin/time -f %M -o"
MIB = 1 << 20
GIB = 1 << 30

# Input sizes. Full scale follows the issues; --small shrinks everything so
# the whole script can be checked in a minute or two.
SCALES = {
    "full": dict(
        dir="target/bench",
        export_virtual=8 * GIB, export_chunk=32 * MIB, export_fill=0.25,
        wide_virtual=64 * GIB, wide_alloc=1 * GIB, wide_chunk=16 * MIB, full_size=1 * GIB,
        tree_files=50_000, tree_bytes=2 * GIB, tree_large=30, fs_size=3 * GIB,
        reps=5, reps_slow=3, iscsi_size=2 * GIB,
    ),
    "small": dict(
        dir="target/bench-small",
        export_virtual=1 * GIB, export_chunk=8 * MIB, export_fill=0.25,
        wide_virtual=8 * GIB, wide_alloc=128 * MIB, wide_chunk=4 * MIB, full_size=128 * MIB,
        tree_files=3_000, tree_bytes=128 * MIB, tree_large=4, fs_size=384 * MIB,
        reps=2, reps_slow=2, iscsi_size=128 * MIB,
    ),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True, capture=False):
    """Runs a shell command from the repository root (not timed)."""
    r = subprocess.run(["bash", "-c", "set -eo pipefail; " + cmd], cwd=ROOT, text=True,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {cmd}\n{(r.stderr or '')[-2000:]}")
    return r


def human_bytes(n):
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- inputs


class Inputs:
    """Builds the benchmark inputs once and reuses them (a NAME.ok marker
    holds the parameters an input was built with)."""

    def __init__(self, scale):
        self.s = scale
        self.dir = scale["dir"]
        os.makedirs(os.path.join(ROOT, self.dir, "out"), exist_ok=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def cached(self, name, params, build):
        path = self.path(name)
        marker = os.path.join(ROOT, path + ".ok")
        want = repr(params)
        if os.path.exists(os.path.join(ROOT, path)) and os.path.exists(marker):
            with open(marker) as f:
                if f.read() == want:
                    return path
        log(f"building input {path}")
        for p in (path, path + ".ok"):
            full = os.path.join(ROOT, p)
            if os.path.isdir(full):
                shutil.rmtree(full)
            elif os.path.exists(full):
                os.remove(full)
        t0 = time.monotonic()
        build(path)
        with open(marker, "w") as f:
            f.write(want)
        log(f"built {path} in {time.monotonic() - t0:.0f} s")
        return path

    @staticmethod
    def write_sparse_raw(path, virtual, chunks):
        """A sparse raw file of `virtual` bytes with random data at `chunks`."""
        with open(os.path.join(ROOT, path), "wb") as f:
            f.truncate(virtual)
            for off, length in chunks:
                f.seek(off)
                left = length
                while left:
                    n = min(left, 4 * MIB)
                    f.write(os.urandom(n))
                    left -= n

    def vmdk_from_chunks(self, name, virtual, chunks):
        def build(path):
            raw = path + ".tmp.raw"
            self.write_sparse_raw(raw, virtual, chunks)
            sh(f"qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse {raw} {path} && rm -f {raw}")
        return self.cached(name, ("vmdk-v1", virtual, chunks), build)

    @staticmethod
    def spread(virtual, allocated, chunk):
        """Chunks of `chunk` bytes spread evenly over the disk."""
        count = allocated // chunk
        stride = virtual // count
        return [(i * stride, chunk) for i in range(count)]

    def export_vmdk(self):
        s = self.s
        chunks = self.spread(s["export_virtual"], int(s["export_virtual"] * s["export_fill"]), s["export_chunk"])
        return self.vmdk_from_chunks("export.vmdk", s["export_virtual"], chunks)

    def wide_vmdk(self):
        s = self.s
        return self.vmdk_from_chunks("wide.vmdk", s["wide_virtual"],
                                     self.spread(s["wide_virtual"], s["wide_alloc"], s["wide_chunk"]))

    def iscsi_lun(self):
        """A LUN's backing file: random data over its whole size."""
        size = self.s["iscsi_size"]
        return self.cached("iscsi-lun.img", ("iscsi-lun-v1", size),
                           lambda path: self.write_sparse_raw(path, size, [(0, size)]))

    def full_vmdk(self):
        s = self.s
        return self.vmdk_from_chunks("full.vmdk", s["full_size"], [(0, s["full_size"])])

    def tree(self):
        """A directory tree: ~tree_files files, ~tree_bytes of data, mixed
        sizes (a few bytes to tens of MiB), ~100 entries per directory."""
        s = self.s

        def build(path):
            rng = random.Random(4)
            nfiles, total = s["tree_files"], s["tree_bytes"]
            sizes = []
            # many small files (log-uniform 1 B .. 64 KiB), some medium
            # (256 KiB .. 4 MiB), and a few large ones that take the rest
            n_medium = nfiles // 100
            n_small = nfiles - n_medium - s["tree_large"]
            sizes += [int(2 ** rng.uniform(0, 16)) for _ in range(n_small)]
            sizes += [int(2 ** rng.uniform(18, 22)) for _ in range(n_medium)]
            rest = max(total - sum(sizes), s["tree_large"] * MIB)
            weights = [rng.uniform(0.5, 1.5) for _ in range(s["tree_large"])]
            sizes += [int(rest * w / sum(weights)) for w in weights]
            rng.shuffle(sizes)
            per_dir = 100
            ndirs = (len(sizes) + per_dir - 1) // per_dir
            top = max(1, ndirs // 100)
            base = os.path.join(ROOT, path)
            for i, size in enumerate(sizes):
                d = i // per_dir
                sub = os.path.join(base, f"d{d % top:02d}", f"s{d:04d}")
                if i % per_dir == 0:
                    os.makedirs(sub)
                with open(os.path.join(sub, f"f{i:06d}.bin"), "wb") as f:
                    left = size
                    while left:
                        n = min(left, 4 * MIB)
                        f.write(os.urandom(n))
                        left -= n
        params = ("tree-v1", s["tree_files"], s["tree_bytes"], s["tree_large"])
        return self.cached("tree", params, build)

    def tree_stats(self, tree):
        r = sh(f"find {tree} -type f -printf '%s\\n' | awk '{{n++; s+=$1}} END {{print n, s}}'", capture=True)
        files, size = r.stdout.split()
        return int(files), int(size)

    def ntfs_image(self, tree):
        def build(path):
            mnt = self.path("mnt-build")
            sh(f"truncate -s {self.s['fs_size']} {path} && mkntfs -F -Q -q -L bench {path} >/dev/null 2>&1 "
               f"&& mkdir -p {mnt} && ntfs-3g {path} {mnt} "
               f"&& (cp -a {tree}/. {mnt}/; rc=$?; umount {mnt}; exit $rc)")
        return self.cached("ntfs.img", ("ntfs-v1", self.s["fs_size"], tree), build)

    def ntfs_qcow2(self, img):
        return self.cached("ntfs.qcow2", ("qcow2-v1", img),
                           lambda path: sh(f"qemu-img convert -f raw -O qcow2 {img} {path}"))

    def ext4_image(self, tree):
        return self.cached("ext4.img", ("ext4-v1", self.s["fs_size"], tree), lambda path: sh(
            f"truncate -s {self.s['fs_size']} {path} && mkfs.ext4 -q -F -L bench -d {tree} {path}"))


# ---------------------------------------------------------------- running


class Side:
    """One side of a benchmark: a shell script (run with bash from the
    repository root); $RSS_<name> files receive the peak RSS in KiB of each
    measured process; `outputs` are removed before every run."""

    def __init__(self, label, script, ours, rss=("vbproxy",), outputs=()):
        self.label = label
        self.script = script
        self.ours = ours
        self.rss_names = rss
        self.outputs = outputs
        self.times = []
        self.rss = {}
        self.out_bytes = None
        self.error = None

    def median(self):
        return statistics.median(self.times) if self.times else None


def clear_outputs(side):
    for p in side.outputs:
        for q in (p, p + ".manifest.json"):
            full = os.path.join(ROOT, q)
            if os.path.exists(full):
                os.remove(full)


def run_once(side, timed):
    clear_outputs(side)
    os.sync()  # the previous run's dirty pages are not this run's cost
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        for name in side.rss_names:
            env["RSS_" + name.replace("-", "_")] = os.path.join(tmp, name)
        t0 = time.monotonic()
        r = subprocess.run(["bash", "-c", "set -eo pipefail\n" + side.script], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        elapsed = time.monotonic() - t0
        if r.returncode != 0:
            release_devices()
            err = r.stderr.strip().splitlines()
            return f"exit {r.returncode}: " + " / ".join(err[-3:])[-400:]
        if timed:
            side.times.append(elapsed)
            for name in side.rss_names:
                try:
                    with open(os.path.join(tmp, name)) as f:
                        kib = int(f.read().split()[-1])
                    side.rss[name] = max(side.rss.get(name, 0), kib)
                except (OSError, ValueError, IndexError):
                    pass
        out = r.stdout.strip().split()
        if out and out[-1].isdigit():
            side.out_bytes = int(out[-1])
    return None


class Bench:
    def __init__(self, bid, title, sides, data_bytes, data_note, inputs, reps, warmup_runs=True,
                 ratios=None, target="", notes=(), goals=()):
        self.bid = bid
        self.title = title
        self.sides = sides
        self.data_bytes = data_bytes
        self.data_note = data_note
        self.inputs = inputs
        self.reps = reps
        self.warmup_runs = warmup_runs
        # (ours label, peer label) pairs whose ratio is reported
        self.ratios = ratios or [(s.label, sides[-1].label) for s in sides if s.ours]
        self.target = target
        self.notes = list(notes)
        self.skipped = None
        self.check = None  # untimed check of vbproxy's output, returns a note
        # summary rows: (kind, a, b, op, threshold); kind "ratio" is time(b) / time(a)
        # (peer over vbproxy), kind "cost" is time(a) / time(b)
        self.goals = list(goals)
        self.extra = []  # lines computed after the run

    def tar_check(self, source, nfiles, nbytes):
        """Lists vbproxy's archive with GNU tar: it must hold every file of
        the source tree with its size (a fast wrong answer is no answer)."""
        def check():
            r = sh(f"{VBPROXY} tar --path /fs {source} | tar -tvf - "
                   "| awk '$1 ~ /^-/ {n++; s+=$3} END {print n+0, s+0}'", capture=True, check=False)
            got = r.stdout.split()
            if r.returncode == 0 and got == [str(nfiles), str(nbytes)]:
                return (f"Check (untimed): GNU tar lists {nfiles} regular files, {nbytes} bytes in "
                        f"vbproxy's archive of {source}, as in the source tree.")
            return (f"**Check failed** (untimed): vbproxy's archive of {source} lists {' '.join(got)} "
                    f"(files, bytes), the source tree has {nfiles} {nbytes}; exit {r.returncode}.")
        self.check = check

    def side(self, label):
        return next(s for s in self.sides if s.label == label)

    def run(self):
        log(f"{self.bid}: {self.title}")
        # Warm: every input in the page cache, then (unless a run is very
        # long) one untimed run of each side.
        sh("cat " + " ".join(shlex.quote(i) for i in self.inputs) + " > /dev/null")
        ours = [s for s in self.sides if s.ours]
        for s in self.sides:
            if self.warmup_runs and not all(o.error for o in ours):
                s.error = run_once(s, timed=False)
        for i in range(self.reps):
            # vbproxy sides come first in the list, so a failing vbproxy
            # is found before any long peer run
            order = self.sides if i % 2 == 0 else list(reversed(self.sides))
            for s in order:
                if s.error or all(o.error for o in ours):
                    continue
                s.error = run_once(s, timed=True)
                if not s.error:
                    log(f"  {s.label}: {s.times[-1]:.2f} s")
        for s in self.sides:
            clear_outputs(s)
        if self.check and not all(o.error for o in ours):
            self.notes.append(self.check())
        failed_ours = [s for s in self.sides if s.ours and s.error]
        if failed_ours and all(s.error for s in self.sides if s.ours):
            self.skipped = f"vbproxy fails on this input ({failed_ours[0].error})"
            log(f"  not run: {self.skipped}")


# ---------------------------------------------------------------- benchmarks


def export_side(label, src, fmt, out, manifest=True):
    flag = "" if manifest else " --no-manifest"
    return Side(label, f'{TIME} "$RSS_vbproxy" {VBPROXY} export -q{flag} --format {fmt} {src} -o {out}',
                ours=True, outputs=[out])


def qemu_side(label, src, out, opts):
    return Side(label, f'{TIME} "$RSS_qemu_img" qemu-img convert {opts} {src} {out}',
                ours=False, rss=("qemu-img",), outputs=[out])


def tar_side(label, srcs, path):
    return Side(label, f'{TIME} "$RSS_vbproxy" {VBPROXY} tar --path {path} {srcs} | wc -c', ours=True)


def ntfs3g_side(label, img, mnt):
    # mount and unmount are timed: vbproxy opens the image itself.
    script = f"""dev=$(losetup -r -f --show {img})
ntfs-3g -o ro $dev {mnt}
{TIME} "$RSS_tar" tar -cf - -C {mnt} . | wc -c
pid=$(pgrep -f "ntfs-3g -o ro $dev {mnt}" | head -1 || true)
if [ -n "$pid" ]; then awk '/VmHWM/ {{print $2}}' /proc/$pid/status > "$RSS_ntfs_3g"; fi
umount {mnt}
losetup -d $dev"""
    return Side(label, script, ours=False, rss=("tar", "ntfs-3g"))


def kernel_side(label, img, mnt):
    script = f"""mount -o ro,loop {img} {mnt}
{TIME} "$RSS_tar" tar -cf - -C {mnt} . | wc -c
umount {mnt}"""
    return Side(label, script, ours=False, rss=("tar",))


MOUNTS = []


def release_devices():
    """After a failed run: unmounts our mount point and detaches the loop
    devices of our inputs (a peer script stopped half way leaves them)."""
    for mnt in MOUNTS:
        cleanup_mounts(mnt)
    for img in IMAGES:
        r = subprocess.run(["losetup", "-j", os.path.join(ROOT, img)], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            subprocess.run(["losetup", "-d", line.split(":")[0]])


IMAGES = []


def cleanup_mounts(mnt):
    full = os.path.join(ROOT, mnt)
    os.makedirs(full, exist_ok=True)
    if subprocess.run(["mountpoint", "-q", full]).returncode == 0:
        subprocess.run(["umount", full])


# Called when the run ends, even on failure (stops tgtd).
AT_END = []


class BenchTgtd:
    """A private tgtd on 127.0.0.1 (own iSCSI and control port) serving one
    LUN; stop() deletes the target, asks tgtd to exit and kills it."""

    IQN = "iqn.2026-11.bench.vbproxy:lun"

    def __init__(self, backing):
        import socket
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            self.port = so.getsockname()[1]
        self.control = 1000 + self.port % 31000
        self.proc = subprocess.Popen(["tgtd", "-f", "--iscsi", f"portal=127.0.0.1:{self.port}", "-C", str(self.control)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        AT_END.append(self.stop)
        for _ in range(200):
            if subprocess.run(self.adm("--op", "show", "--mode", "target"), capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        for args in (("--op", "new", "--mode", "target", "--tid", "1", "-T", self.IQN),
                     ("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b",
                      os.path.join(ROOT, backing)),
                     ("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")):
            subprocess.run(self.adm(*args), check=True, capture_output=True)
        self.url = f"iscsi://127.0.0.1:{self.port}/{self.IQN}/1"

    def adm(self, *args):
        return ["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args]

    def stop(self):
        if self.proc.poll() is None:
            subprocess.run(self.adm("--op", "delete", "--force", "--mode", "target", "--tid", "1"), capture_output=True)
            subprocess.run(self.adm("--op", "delete", "--mode", "system"), capture_output=True)
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def define(inp, s, only):
    out = inp.path("out")
    benches = []

    def want(bid):
        return not only or any(o in bid for o in only)

    if want("A.a export-raw-sparse") or want("A.b export-vmdk-stream"):
        src = inp.export_vmdk()
        alloc = int(s["export_virtual"] * s["export_fill"]) // s["export_chunk"] * s["export_chunk"]
        note = f"{human_bytes(alloc)} allocated of {human_bytes(s['export_virtual'])} virtual"
        if want("A.a export-raw-sparse"):
            benches.append(Bench(
                "A.a export-raw-sparse",
                f"Export a {human_bytes(s['export_virtual'])}-virtual monolithicSparse VMDK "
                f"({s['export_fill']:.0%} random data) to raw-sparse",
                [export_side("vbproxy --no-manifest", src, "raw-sparse", f"{out}/a.raw", manifest=False),
                 export_side("vbproxy (with manifest)", src, "raw-sparse", f"{out}/a.raw"),
                 qemu_side("qemu-img convert -O raw", src, f"{out}/a.raw", "-O raw"),
                 qemu_side("qemu-img convert -t writeback -O raw (durable)", src, f"{out}/a.raw",
                           "-t writeback -O raw")],
                alloc, note, [src], s["reps"],
                ratios=[("vbproxy --no-manifest", "qemu-img convert -O raw"),
                        ("vbproxy --no-manifest", "qemu-img convert -t writeback -O raw (durable)"),
                        ("vbproxy (with manifest)", "qemu-img convert -O raw"),
                        ("vbproxy (with manifest)", "qemu-img convert -t writeback -O raw (durable)")],
                target=">= 1.0x (aim 1.5x) for vbproxy --no-manifest",
                goals=[("ratio", "vbproxy --no-manifest", "qemu-img convert -O raw", ">=", 1.0),
                       ("ratio", "vbproxy --no-manifest", "qemu-img convert -t writeback -O raw (durable)",
                        ">=", 1.0),
                       ("ratio", "vbproxy (with manifest)", "qemu-img convert -O raw", None, None)],
                notes=["qemu-img convert's default destination cache mode never flushes; "
                       "vbproxy always fsyncs its output. `-t writeback` makes qemu-img flush too "
                       "(fdatasync at close, checked with strace), which is the like-for-like comparison."]))
        if want("A.b export-vmdk-stream"):
            benches.append(Bench(
                "A.b export-vmdk-stream",
                f"Export the same VMDK to streamOptimized VMDK (vbproxy --jobs = nproc = {os.cpu_count()})",
                [export_side("vbproxy", src, "vmdk-stream", f"{out}/b.vmdk"),
                 qemu_side("qemu-img convert streamOptimized", src, f"{out}/b.vmdk",
                           "-O vmdk -o subformat=streamOptimized")],
                alloc, note, [src], s["reps_slow"], warmup_runs=False,
                target=">= 2x",
                goals=[("ratio", "vbproxy", "qemu-img convert streamOptimized", ">=", 2.0)],
                notes=["qemu-img compresses VMDK grains on one thread; vbproxy compresses batches on "
                       "--jobs threads (default: every core). vbproxy fsyncs and writes its manifest "
                       "(the default); qemu-img does not flush (default cache mode), which favours qemu-img."]))
    for fmt, qfmt in (("raw-sparse", "raw"), ("qcow2", "qcow2")):
        bid = f"A.c export-cost-{fmt}"
        if not want(bid):
            continue
        wide, full = inp.wide_vmdk(), inp.full_vmdk()
        wl = f"wide ({human_bytes(s['wide_virtual'])} virtual, {human_bytes(s['wide_alloc'])} allocated)"
        fl = f"full ({human_bytes(s['full_size'])}, all allocated)"
        b = Bench(
            bid, f"Cost follows allocated bytes: {human_bytes(s['wide_virtual'])}-virtual VMDK with "
                 f"{human_bytes(s['wide_alloc'])} allocated vs a {human_bytes(s['full_size'])} fully allocated "
                 f"VMDK, to {fmt}",
            [export_side(f"vbproxy {wl}", wide, fmt, f"{out}/c-wide.{qfmt}"),
             export_side(f"vbproxy {fl}", full, fmt, f"{out}/c-full.{qfmt}"),
             qemu_side(f"qemu-img {wl}", wide, f"{out}/c-wide.{qfmt}", f"-O {qfmt}"),
             qemu_side(f"qemu-img {fl}", full, f"{out}/c-full.{qfmt}", f"-O {qfmt}")],
            s["wide_alloc"], f"{human_bytes(s['wide_alloc'])} allocated in each input", [wide, full], s["reps"],
            ratios=[(f"vbproxy {wl}", f"qemu-img {wl}"), (f"vbproxy {fl}", f"qemu-img {fl}")],
            target="vbproxy time(wide) / time(full) <= 2x",
            goals=[("cost", f"vbproxy {wl}", f"vbproxy {fl}", "<=", 2.0),
                   ("cost", f"qemu-img {wl}", f"qemu-img {fl}", None, None)],
            notes=["Both vbproxy runs write the manifest (the default), whose digest also has to "
                   "follow allocated bytes. qemu-img runs with its default cache mode (no flush)."])
        b.cost_pairs = [(f"vbproxy {wl}", f"vbproxy {fl}"), (f"qemu-img {wl}", f"qemu-img {fl}")]
        benches.append(b)

    if any(want(x) for x in ("B.a tar-ntfs", "B.b tar-ext4")):
        tree = inp.tree()
        nfiles, nbytes = inp.tree_stats(tree)
        note = f"{nfiles} files, {human_bytes(nbytes)} of file data"
        mnt = inp.path("mnt")
        MOUNTS.append(mnt)
        if want("B.a tar-ntfs"):
            img = inp.ntfs_image(tree)
            qcow = inp.ntfs_qcow2(img)
            IMAGES.append(img)
            benches.append(Bench(
                "B.a tar-ntfs", "File-level tar of an NTFS image (bare filesystem, volume `fs`)",
                [tar_side("vbproxy tar (raw image)", img, "/fs"),
                 tar_side("vbproxy tar (same image as qcow2)", qcow, "/fs"),
                 ntfs3g_side("ntfs-3g -o ro + GNU tar (mount+umount timed)", img, mnt)],
                nbytes, note, [img, qcow], s["reps"],
                ratios=[("vbproxy tar (raw image)", "ntfs-3g -o ro + GNU tar (mount+umount timed)"),
                        ("vbproxy tar (same image as qcow2)", "ntfs-3g -o ro + GNU tar (mount+umount timed)")],
                target="faster than ntfs-3g + tar (> 1.0x)",
                goals=[("ratio", "vbproxy tar (raw image)", "ntfs-3g -o ro + GNU tar (mount+umount timed)", ">", 1.0),
                       ("ratio", "vbproxy tar (same image as qcow2)",
                        "ntfs-3g -o ro + GNU tar (mount+umount timed)", ">", 1.0)]))
            benches[-1].tar_check(img, nfiles, nbytes)
        if want("B.b tar-ext4"):
            img = inp.ext4_image(tree)
            IMAGES.append(img)
            benches.append(Bench(
                "B.b tar-ext4", "File-level tar of an ext4 image (`mkfs.ext4 -d`)",
                [tar_side("vbproxy tar", img, "/fs"),
                 kernel_side("kernel ext4 (ro loop mount) + GNU tar (mount+umount timed)", img, mnt)],
                nbytes, note, [img], s["reps"], target=">= 0.8x",
                goals=[("ratio", "vbproxy tar", "kernel ext4 (ro loop mount) + GNU tar (mount+umount timed)",
                        ">=", 0.8)]))
            benches[-1].tar_check(img, nfiles, nbytes)

    if want("C.a iscsi-read"):
        lun = inp.iscsi_lun()
        tgt = BenchTgtd(lun)
        # vbproxy writes the LUN's bytes to /dev/null (the time is the iSCSI
        # read); qemu-img, when its iscsi module loads, to a tmpfs file.
        shm = "/dev/shm/vbproxy-bench-iscsi"
        os.makedirs(shm, exist_ok=True)
        AT_END.append(lambda: shutil.rmtree(shm, ignore_errors=True))
        sides = [Side("vbproxy export --format raw -o /dev/null",
                      f'{TIME} "$RSS_vbproxy" {VBPROXY} export -q --no-manifest --format raw {tgt.url} -o /dev/null',
                      ours=True)]
        qemu_iscsi = sh(f"qemu-img info {tgt.url} > /dev/null 2>&1", check=False).returncode == 0
        if qemu_iscsi:
            sides.append(qemu_side("qemu-img convert -O raw (libiscsi, to tmpfs)", tgt.url, f"{shm}/c.raw", "-O raw"))
        b = Bench(
            "C.a iscsi-read",
            f"Sequential read of a {human_bytes(s['iscsi_size'])} LUN from tgtd on 127.0.0.1 "
            "(backing file in the page cache)",
            sides, s["iscsi_size"], f"{human_bytes(s['iscsi_size'])} LUN, random data", [lun], s["reps_slow"],
            target="for reference; libiscsi's iscsi-perf as the peer",
            goals=[("ratio", sides[0].label, sides[-1].label, ">=", 1.0)] if qemu_iscsi else [],
            notes=["vbproxy reads through its built-in initiator (READ(16) of MaxBurstLength = 1 MiB, 8 in flight, "
                   "one connection). `iscsi-dd` is not in Debian's libiscsi-bin."
                   + ("" if qemu_iscsi else " qemu-img 10 lists iscsi but cannot load its module "
                      "(qemu-block-extra is not installable beside qemu-utils 10 here): no qemu-img side.")])

        if not qemu_iscsi:
            b.ratios = []  # no timed peer: iscsi-perf's rate is compared in a note

        def peer_perf(url=tgt.url, b=b, secs=10):
            """libiscsi's iscsi-perf: sequential READ(16) of 1 MiB, 8 in flight,
            data discarded, for `secs` seconds; its average rate in MB/s (10^6)."""
            r = subprocess.run(["timeout", "-s", "INT", str(secs), "iscsi-perf", "-m", "8", "-b", "2048", url],
                               capture_output=True, text=True)
            import re
            avg = re.findall(r"iops average (\d+)", r.stdout)
            if not avg:
                return f"iscsi-perf gave no rate (exit {r.returncode})"
            rate = int(avg[-1]) * 2048 * 512 / 1e6
            ours = b.sides[0].median()
            line = (f"Peer (untimed by the table): libiscsi `iscsi-perf -m 8 -b 2048` (sequential 1 MiB READs, "
                    f"8 in flight, data discarded) averaged {rate:.0f} MB/s over {secs} s in this run")
            if ours:
                mine = b.data_bytes / ours / 1e6
                line += f"; vbproxy's median {mine:.0f} MB/s is **{mine / rate:.2f}x** of it"
            return line + "."

        def check(url=tgt.url, lun=lun):
            r = sh(f"{VBPROXY} export -q --no-manifest --format raw {url} -o - | cmp - {lun}", capture=True, check=False)
            if r.returncode == 0:
                return f"Check (untimed): vbproxy's read of the LUN equals the backing file {lun} (cmp)."
            return f"**Check failed** (untimed): vbproxy's read of the LUN differs from {lun}: {r.stdout}{r.stderr}"

        def check_and_peer():
            b.notes.append(peer_perf())
            return check()
        b.check = check_and_peer
        benches.append(b)
    benches += define_fuse(inp, s, only)
    return benches


# ---------------------------------------------------------------- D. FUSE read


def fuse_big_file_image(inp, size):
    """An ext4 image (mkfs.ext4 -d) holding one `size`-byte random file,
    big.bin, in a raw image: the guest tree path is /fs/big.bin."""
    def build(path):
        src = inp.path("fuse-src")
        sh(f"rm -rf {src} && mkdir -p {src} && head -c {size} /dev/urandom > {src}/big.bin "
           f"&& truncate -s {size + size // 8 + 64 * MIB} {path} "
           f"&& mkfs.ext4 -q -F -L fusebench -d {src} {path} && rm -rf {src}")
    return inp.cached("fuse-ext4.img", ("fuse-ext4-v1", size), build)


# Dropping the page cache needs a writable /proc/sys/vm/drop_caches; both
# sides try it, so both read the image the same way either way. No `sync`
# here: run_once has just synced outside the timed part, and a sync inside
# it times other processes' writeback (seconds on a busy machine, against
# 0.1 s for `vbproxy cat` of 2 GiB from the page cache).
DROP_CACHES = "(echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null || true"


def null_sink(inp):
    """Where both sides write: /dev/null if it is the character device. In
    a container where /dev/null has become a regular file (on tmpfs, a
    stray `rm` and redirect), writing 2 GiB there costs about a second
    and hides the read speed being measured: a private null device then
    (mknod c 1 3, root only), else /dev/null as it is."""
    import stat
    try:
        if stat.S_ISCHR(os.stat("/dev/null").st_mode):
            return "/dev/null"
    except OSError:
        pass
    path = os.path.join(ROOT, inp.path("null"))
    if not os.path.exists(path):
        sh(f"mknod {path} c 1 3", check=False)
    try:
        if stat.S_ISCHR(os.stat(path).st_mode):
            log(f"/dev/null is not a character device; writing to {path}")
            return path
    except OSError:
        pass
    return "/dev/null"


def fuse_side(label, img, mnt, null, flags="", reader="cat"):
    # A fresh mount every run: its page cache starts empty (the kernel
    # keeps a FUSE file's pages only while the mount lives). Mount and
    # umount are timed, as vbproxy cat opens the image itself.
    script = f"""{DROP_CACHES}
{VBPROXY} mount {flags} --pid-file {mnt}.pid {img} {mnt}
{TIME} "$RSS_cat" {reader.format(f=f"{mnt}/disk0/fs/big.bin", null=null)}
awk '/VmHWM/ {{print $2}}' /proc/$(cat {mnt}.pid)/status > "$RSS_vbproxy_mount"
{VBPROXY} umount {mnt}"""
    return Side(label, script, ours=True, rss=("cat", "vbproxy-mount"))


def define_fuse(inp, s, only):
    """D.a: reading a large guest file through `vbproxy mount` with cat,
    against `vbproxy cat` of the same file."""
    bid = "D.a fuse-read"
    if only and not any(o in bid for o in only):
        return []
    size = 2 * GIB if s["dir"] == "target/bench" else 128 * MIB
    img = fuse_big_file_image(inp, size)
    mnt = inp.path("fuse-mnt")
    os.makedirs(os.path.join(ROOT, mnt), exist_ok=True)
    null = null_sink(inp)
    cat = Side("vbproxy cat", f'{DROP_CACHES}\n{TIME} "$RSS_vbproxy" {VBPROXY} cat {img} /fs/big.bin > {null}',
               ours=False)
    plain = "cat {f} > {null}"
    dd = "dd if={f} of={null} bs=1M status=none"
    b = Bench(
        bid, f"Read a {human_bytes(size)} file of an ext4 image through `vbproxy mount` (cat > /dev/null) "
             "vs `vbproxy cat`",
        [fuse_side("cat through vbproxy mount (mount+umount timed)", img, mnt, null, reader=plain),
         fuse_side("dd bs=1M through vbproxy mount", img, mnt, null, reader=dd),
         fuse_side("cat through vbproxy mount --direct-io", img, mnt, null, "--direct-io", plain),
         fuse_side("dd bs=1M through vbproxy mount --direct-io", img, mnt, null, "--direct-io", dd),
         cat],
        size, f"one {human_bytes(size)} random file", [img], s["reps_slow"],
        target=">= 0.7x",
        goals=[("ratio", "cat through vbproxy mount (mount+umount timed)", "vbproxy cat", ">=", 0.7)],
        notes=["Each FUSE run mounts afresh, so no page of the file is in the mount's page cache; "
               "drop_caches is attempted before every run of both sides (a container may refuse it; "
               "then both sides read the image from the host page cache alike).",
               "Ratio = time(vbproxy cat) / time(cat through the mount): 1.0x means FUSE costs nothing.",
               "vbproxy cat is one pread per MiB from the image's page cache into a reused buffer (memory "
               "speed); through the mount the server does the same pread, then the kernel copies the reply "
               "into the mount's page cache (or, with --direct-io, into the reader's buffer) and, in page "
               "cache mode, the reader copies it out again, with a request round trip per MiB: "
               "see docs/MOUNT.md, Performance."])
    return [b]


# ---------------------------------------------------------------- report


def fmt_rss(side):
    if not side.rss:
        return "-"
    return ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in side.rss.items())


def machine_facts():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    qemu = sh("qemu-img --version | head -1", capture=True).stdout.strip()
    ntfs3g = sh("ntfs-3g --version 2>&1 | head -1 || true", capture=True).stdout.strip()
    tar = sh("tar --version | head -1", capture=True).stdout.strip()
    commit = sh("git rev-parse --short HEAD 2>/dev/null || echo unknown", capture=True).stdout.strip()
    dirty = sh("git status --porcelain -- guestfs proxy Cargo.lock 2>/dev/null | head -1", capture=True).stdout
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", human_bytes(mem)),
        ("kernel", platform.release()),
        ("qemu-img", qemu),
        ("ntfs-3g", ntfs3g),
        ("tar", tar),
        ("vbproxy", f"commit {commit}{' (with uncommitted changes)' if dirty else ''}, release build"),
        ("load average at start", load),
    ]


def render(benches, facts, started, finished, scale_name, s):
    L = []
    L.append("# vbproxy performance")
    L.append("")
    L.append("Generated by `make bench` (`python3 bench/bench.py`); the whole file is rewritten on every run, "
             "do not edit it by hand.")
    L.append("")
    L.append(f"Run: {started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC, scale `{scale_name}`.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    for k, v in facts:
        L.append(f"| {k} | {v} |")
    L.append("")
    L.append("## Summary")
    L.append("")
    L.append("| benchmark | measure | value | target | |")
    L.append("|---|---|---|---|---|")
    for b in benches:
        if b.skipped:
            L.append(f"| {b.bid} | - | not run | {b.target} | vbproxy fails on the input (see below) |")
            continue
        for kind, a, c, op, thr in b.goals:
            A, C = b.side(a), b.side(c)
            if not (A.times and C.times):
                L.append(f"| {b.bid} | {kind} {c} vs {a} | failed | | |")
                continue
            if kind == "ratio":
                v, what = C.median() / A.median(), f"[{c}] / [{a}]"
            else:
                v, what = A.median() / C.median(), f"[{a}] / [{c}]"
            status = ""
            if op:
                ok = v >= thr if op == ">=" else v > thr if op == ">" else v <= thr
                status = "met" if ok else "**not met**"
            L.append(f"| {b.bid} | time {what} | {v:.2f}x | {f'{op} {thr}x' if op else 'for reference'} | {status} |")
    rss = [x.rss["vbproxy"] for b in benches for x in b.sides if x.ours and "vbproxy" in x.rss]
    if rss:
        worst = max(rss) / 1024
        L.append(f"| all | largest vbproxy peak RSS | {worst:.0f} MiB | <= 128 MiB | "
                 f"{'met' if worst <= 128 else '**not met**'} |")
    L.append("")
    L.append("Ratios are peer time / vbproxy time (> 1: vbproxy is faster); cost ratios compare one tool "
             "with itself on two inputs.")
    L.append("")
    L.append("## Method")
    L.append("")
    L.append(f"- vbproxy and its peer run in the same run on the same input; every side runs "
             f"{s['reps']} times (exports to streamOptimized VMDK: {s['reps_slow']}) and the table gives the "
             "median wall time; the order of the sides is reversed on every other repetition.")
    L.append("- **Warm cache**: before each benchmark every input file is read once (`cat > /dev/null`) so "
             "it sits in the page cache for both sides, and each side runs once untimed (the "
             "streamOptimized export skips this untimed run because it is long; its input is already "
             "cached by the benchmark before it). Page caches are not dropped between runs.")
    L.append("- Before each run its outputs are deleted (vbproxy writes OUT and OUT.manifest.json) and "
             "`sync` flushes earlier dirty pages, outside the timed part. vbproxy fsyncs its output before "
             "it exits, so its time includes writing the output to disk. `qemu-img convert` with its "
             "default destination cache mode never flushes (strace shows no fsync/fdatasync): its time "
             "ends with the data still in the page cache. The raw-sparse export therefore also times "
             "`qemu-img convert -t writeback`, which calls fdatasync at the end, like for like.")
    L.append("- Ratio = peer median / vbproxy median: above 1 vbproxy is faster. Targets are goals, not "
             "tests; a benchmark never fails the build.")
    L.append("- MB/s = the input's data bytes (allocated bytes for exports, file data for tar; 1 MB = 10^6 B) "
             "/ median seconds, the same figure for both sides.")
    L.append("- Peak RSS is GNU `/usr/bin/time -f %M` of each measured process, the largest over the timed "
             "runs. For ntfs-3g the FUSE daemon's VmHWM is read from /proc before unmounting; the kernel's "
             "own memory for a kernel mount is not counted.")
    L.append("- File-level tar: both sides write the archive to a pipe into `wc -c` (GNU tar skips reading "
             "file data when its output is /dev/null). The peer's time includes `losetup -r`, the mount "
             "and the unmount, since vbproxy opens the image itself. The \"tar bytes\" column lets one check "
             "both archives carry the same data.")
    L.append("")
    for b in benches:
        L.append(f"## {b.bid}: {b.title}")
        L.append("")
        L.append(f"Input: {b.data_note}. Target: {b.target}.")
        L.append("")
        if b.skipped:
            L.append(f"**Not run**: {b.skipped}.")
            L.append("")
            L.append("Commands that would be timed:")
        else:
            has_tar = any(x.out_bytes for x in b.sides)
            head = "| side | median s | runs (s) | MB/s | peak RSS |" + (" tar bytes |" if has_tar else "")
            L.append(head)
            L.append("|" + "---|" * (head.count("|") - 1))
            for x in b.sides:
                if x.error or not x.times:
                    L.append(f"| {x.label} | failed: {x.error} | | | |" + (" |" if has_tar else ""))
                    continue
                m = x.median()
                runs = " ".join(f"{t:.2f}" for t in x.times)
                row = f"| {x.label} | {m:.2f} | {runs} | {b.data_bytes / m / 1e6:.0f} | {fmt_rss(x)} |"
                if has_tar:
                    row += f" {x.out_bytes or '-'} |"
                L.append(row)
            L.append("")
            for ours, peer in b.ratios:
                o, p = b.side(ours), b.side(peer)
                if o.times and p.times:
                    L.append(f"- **Ratio {p.median() / o.median():.2f}x** = time of [{peer}] / "
                             f"time of [{ours}]")
            for a, c in getattr(b, "cost_pairs", []):
                A, C = b.side(a), b.side(c)
                if A.times and C.times:
                    L.append(f"- **Cost ratio {A.median() / C.median():.2f}x** = time of [{a}] / "
                             f"time of [{c}]")
            ours_rss = [x.rss.get("vbproxy") for x in b.sides if x.ours and x.rss.get("vbproxy")]
            if ours_rss:
                worst = max(ours_rss) / 1024
                L.append(f"- vbproxy peak RSS: {worst:.0f} MiB (target <= 128 MiB"
                         f"{': met' if worst <= 128 else ': NOT met'})")
            for n in b.notes:
                L.append(f"- {n}")
            L.append("")
            L.append("Commands (run with `bash -c 'set -eo pipefail; ...'` from the repository root):")
        L.append("")
        for x in b.sides:
            L.append(f"{x.label}:")
            L.append("```")
            L.append(x.script)
            L.append("```")
        L.append("")
    if not any(b.bid.startswith("C.") for b in benches):
        L.append("## C. iSCSI read (issue 5)")
        L.append("")
        L.append("Not run (`python3 bench/bench.py --only iscsi`).")
        L.append("")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="small inputs (checks the script quickly)")
    ap.add_argument("--only", action="append", default=[], help="run benchmarks whose id contains this")
    ap.add_argument("--out", help="report path (default docs/PERFORMANCE.md; with --small "
                                  "target/bench-small/PERFORMANCE.md)")
    args = ap.parse_args()
    scale_name = "small" if args.small else "full"
    s = SCALES[scale_name]
    out = args.out or ("target/bench-small/PERFORMANCE.md" if args.small else "docs/PERFORMANCE.md")
    if os.geteuid() != 0:
        sys.exit("bench: needs root (loop devices and mounts)")
    if not os.path.exists(os.path.join(ROOT, VBPROXY)):
        sys.exit(f"bench: {VBPROXY} missing: run cargo build --release")
    started = datetime.datetime.now(datetime.timezone.utc)
    facts = machine_facts()
    inp = Inputs(s)
    mnt = inp.path("mnt")
    cleanup_mounts(mnt)
    try:
        benches = define(inp, s, args.only)
        for b in benches:
            b.run()
    finally:
        for stop in AT_END:
            stop()
        cleanup_mounts(mnt)
        shutil.rmtree(os.path.join(ROOT, inp.path("out")), ignore_errors=True)
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = render(benches, facts, started, finished, scale_name, s)
    full = os.path.join(ROOT, out)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    log(f"wrote {out} ({(finished - started).total_seconds() / 60:.1f} min)")


if __name__ == "__main__":
    main()
