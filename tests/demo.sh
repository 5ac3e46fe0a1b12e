#!/usr/bin/env bash
# `make demo`: builds sample VM disks with real tools (qemu-img, qemu-io) and
# shows what vbproxy finds in them: formats, snapshot chains, allocation,
# and a byte-exact export checked by qemu-img compare.
set -euo pipefail
dir=${1:-target/demo}
vb=${VBPROXY:-target/release/vbproxy}
mkdir -p "$dir"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -e "$dir/.done" ]; then
  say "building sample disks in $dir"
  rm -f "$dir"/*
  # A qcow2 base with an "OS" written at the start, then a snapshot overlay
  # where the guest changed some blocks: what a backup sees during a job.
  qemu-img create -q -f qcow2 "$dir/web01-base.qcow2" 4G
  qemu-io -f qcow2 -c 'write -q -P 0x11 0 8M' -c 'write -q -P 0x22 1G 4M' "$dir/web01-base.qcow2"
  qemu-img create -q -f qcow2 -b web01-base.qcow2 -F qcow2 "$dir/web01-snap.qcow2"
  qemu-io -f qcow2 -c 'write -q -P 0x33 4M 2M' -c 'write -q -P 0x44 3G 1M' "$dir/web01-snap.qcow2"
  # The same kind of disk as VMware and Hyper-V leave it.
  qemu-img convert -O vmdk -o subformat=streamOptimized "$dir/web01-snap.qcow2" "$dir/web01-stream.vmdk"
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$dir/web01-snap.qcow2" "$dir/web01.vmdk"
  qemu-img convert -O vhdx -o subformat=dynamic "$dir/web01-snap.qcow2" "$dir/web01.vhdx"
  qemu-img convert -O vpc -o subformat=dynamic "$dir/web01-snap.qcow2" "$dir/web01.vhd"
  touch "$dir/.done"
fi

say "vbproxy inspect (snapshot chain of a running backup)"
"$vb" inspect "$dir/web01-snap.qcow2"

say "vbproxy inspect: the same disk in every hypervisor's format"
for f in web01-stream.vmdk web01.vmdk web01.vhdx web01.vhd; do
  "$vb" inspect "$dir/$f" || echo "  (not readable yet: $f)"
done

say "vbproxy map web01-snap.qcow2 (which layer holds each range)"
"$vb" map "$dir/web01-snap.qcow2"

say "vbproxy export --format raw-sparse, checked by qemu-img compare"
for f in web01-snap.qcow2 web01-stream.vmdk web01.vhdx web01.vhd; do
  out="$dir/${f%.*}-export.raw"
  if "$vb" export --format raw-sparse "$dir/$f" -o "$out"; then
    printf '%-20s ' "$f"; qemu-img compare -q "$out" "$dir/$f" && echo "identical to qemu's reading"
    rm -f "$out"
  else
    echo "  (export failed: $f)"
  fi
done
