#!/bin/bash
# Builds the vbproxy test appliance: a Debian kernel and an initramfs holding
# busybox, the vbproxy binary with the shared libraries it links, the kernel
# modules for virtio-scsi disks and ext4, and the /init script beside this file.
#
#   appliance/build.sh [OUT]        (OUT defaults to target/appliance)
#
# Produces OUT/vmlinuz and OUT/initramfs.img. Environment:
#   VBPROXY_BIN   the vbproxy binary to put in (default target/release/vbproxy,
#                 which `make appliance` builds first)
#   KERNEL_PKG    the Debian kernel package (default: what linux-image-amd64
#                 depends on, as `apt-cache depends` reports it)
#   APPLIANCE_CACHE  where the downloaded kernel .deb and its extracted files
#                 are kept (default target/appliance/cache)
#
# Nothing is rebuilt when the inputs (this script, init, the binaries, the
# kernel package) hash the same as for the image already in OUT.
# Needs: apt-get (download only: the kernel is never installed), dpkg-deb,
# busybox-static, cpio, gzip, ldd, strip (binutils).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$root/target/appliance}
cache=${APPLIANCE_CACHE:-$root/target/appliance/cache}
bin=${VBPROXY_BIN:-$root/target/release/vbproxy}
busybox=$(command -v busybox || true)

die() { echo "appliance/build.sh: $*" >&2; exit 1; }
[ -x "$bin" ] || die "no vbproxy binary at $bin (run 'cargo build --release -p vbproxy' or set VBPROXY_BIN)"
[ -n "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
    ldd "$busybox" 2>&1 | grep -q 'not a dynamic executable' ||
    die "$busybox is not static (apt-get install busybox-static)"
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"

mkdir -p "$out" "$cache"
# One build at a time per cache (a test and `make appliance` may overlap).
exec 9>"$cache/.lock"
flock 9

# --- The kernel package: downloaded once, never installed. -----------------
kernel_pkg=${KERNEL_PKG:-}
if [ -z "$kernel_pkg" ]; then
    # A kernel already downloaded is reused (works offline, and a test run
    # does not change kernels under a cached image).
    kdeb=$(ls "$cache"/linux-image-*-amd64_*.deb 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$kdeb" ]; then
        kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
        if [ -z "$kernel_pkg" ]; then
            # Package lists absent or stale (a machine whose tools were all
            # preinstalled never ran apt-get update): refresh once.
            apt-get update -q >&2 || true
            kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
        fi
        [ -n "$kernel_pkg" ] || die "apt-cache depends linux-image-amd64 names no kernel (run apt-get update)"
    fi
fi
if [ -n "$kernel_pkg" ]; then
    kdeb=$(ls "$cache"/"$kernel_pkg"_*.deb 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$kdeb" ]; then
        echo "appliance: downloading $kernel_pkg" >&2
        # As root, apt downloads as _apt, which cannot write into target/:
        # keep root for this download.
        sandbox=()
        [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
        (cd "$cache" && apt-get download -q "${sandbox[@]}" "$kernel_pkg" >&2) ||
            { apt-get update -q >&2 || true; (cd "$cache" && apt-get download -q "${sandbox[@]}" "$kernel_pkg" >&2); } ||
            die "apt-get download $kernel_pkg failed"
        kdeb=$(ls "$cache"/"$kernel_pkg"_*.deb | sort -V | tail -1)
    fi
fi

# Extracted once per package (dpkg-deb's data archive: the package's
# maintainer scripts never run): vmlinuz and the module directories that
# storage drivers, filesystems and their helpers live in (about 80 of the 400 MB).
kdir="$cache/$(basename "$kdeb" .deb)"
if [ ! -f "$kdir/.done" ]; then
    echo "appliance: extracting $(basename "$kdeb")" >&2
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$kdir" --wildcards \
        './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/scsi' './lib/modules/*/kernel/drivers/virtio' \
        './lib/modules/*/kernel/fs' './lib/modules/*/kernel/lib' './lib/modules/*/kernel/crypto' \
        './lib/modules/*/kernel/block' './lib/modules/*/kernel/arch'
    touch "$kdir/.done"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$kdir"/lib/modules/* | head -1)
kver=$(basename "$moddir")

# --- Input hash: skip the build when nothing changed. -----------------------
libs=$(ldd "$bin" | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | sort -u)
stamp=$( {
    sha256sum "$here/build.sh" "$here/init" "$bin" "$busybox" $libs
    echo "kernel $(basename "$kdeb")"
} | sha256sum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
    [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.img" ]; then
    echo "appliance: up to date in $out" >&2
    exit 0
fi

# --- Kernel modules: what the disks and the own filesystem need. ------------
# Roots: virtio PCI transport, the virtio-scsi HBA, SCSI disks, the SCSI
# generic driver (sg, for tools that want /dev/sgN), ext4. Soft
# dependencies (`softdep=pre:` in .modinfo, resolved by modprobe through
# crypto aliases) are named here explicitly since busybox insmod does not
# follow them.
roots="crc32c_generic crct10dif_generic crc64_rocksoft_generic virtio_pci virtio_scsi sd_mod sg ext4"

modfile() { # module name -> .ko path ('-' and '_' are the same to the kernel)
    local n=$1 f
    for f in "$n" "${n//_/-}" "${n//-/_}"; do
        local hit
        hit=$(find "$moddir/kernel" -name "$f.ko" -print -quit)
        [ -n "$hit" ] && { echo "$hit"; return; }
    done
    die "module $n not found in $moddir"
}
moddeps() { # the `depends=` field of a module's .modinfo section
    tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | tr ',' ' '
}
order=()
declare -A seen=()
visit() { # depth-first: dependencies before the module
    local key=${1//-/_}
    [ -n "${seen[$key]:-}" ] && return
    seen[$key]=1
    local f d
    f=$(modfile "$1")
    for d in $(moddeps "$f"); do visit "$d"; done
    order+=("$f")
}
for m in $roots; do visit "$m"; done

# --- The initramfs tree. ----------------------------------------------------
stage="$out/.stage.$$"
rm -rf "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,run,tmp,mnt,etc,var/lib/vbproxy,root}
cp "$busybox" "$stage/bin/busybox"
install -m 0755 "$here/init" "$stage/init"
# Stripped: the release profile keeps line tables, which the appliance does
# not need and which would triple the initramfs.
strip --strip-debug -o "$stage/usr/bin/vbproxy" "$bin"
for l in $libs; do
    mkdir -p "$stage$(dirname "$l")"
    cp -L "$l" "$stage$l"
done
# The dynamic loader under its canonical name whatever ldd printed.
if [ ! -e "$stage/lib64/ld-linux-x86-64.so.2" ]; then
    mkdir -p "$stage/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/"
fi
: >"$stage/lib/modules/load-order"
for f in "${order[@]}"; do
    cp "$f" "$stage/lib/modules/"
    basename "$f" .ko >>"$stage/lib/modules/load-order"
done
echo "$kver" >"$stage/etc/kernel-release"
cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
echo vbproxy-appliance >"$stage/etc/hostname"

# newc archive, gzip -1: the kernel unpacks it faster than a tighter one
# under TCG emulation, and it is built in a second.
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) |
    gzip -1 >"$out/initramfs.img.tmp"
mv "$out/initramfs.img.tmp" "$out/initramfs.img"
cp "$vmlinuz" "$out/vmlinuz"
echo "$stamp" >"$out/stamp"
echo "appliance: built $out (kernel $kver, $(du -h "$out/initramfs.img" | cut -f1) initramfs, modules: $(tr '\n' ' ' <"$stage/lib/modules/load-order"))" >&2
