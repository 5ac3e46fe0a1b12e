#!/usr/bin/env bash
# Seed corpora for the fuzz targets: small real images made by qemu-img,
# so the fuzzer starts from valid structures and mutates from there.
set -euo pipefail
out=${1:-fuzz/corpus}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
seed() { mkdir -p "$out/$1"; cp "$2" "$out/$1/$(basename "$2")"; }
w() { qemu-io -f "$1" -c 'write -q -P 0x5a 0 4k' -c 'write -q -P 0x33 1m 64k' -c 'write -q -z 1536k 64k' "$2"; }

qemu-img create -q -f qcow2 "$tmp/v3.qcow2" 4M && w qcow2 "$tmp/v3.qcow2"
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 "$tmp/v2.qcow2" 4M && w qcow2 "$tmp/v2.qcow2"
qemu-img create -q -f qcow2 -o extended_l2=on "$tmp/l2x.qcow2" 4M && w qcow2 "$tmp/l2x.qcow2"
qemu-img convert -c -O qcow2 "$tmp/v3.qcow2" "$tmp/deflate.qcow2"
qemu-img convert -c -O qcow2 -o compression_type=zstd "$tmp/v3.qcow2" "$tmp/zstd.qcow2"
for f in v3 v2 l2x deflate zstd; do seed qcow2 "$tmp/$f.qcow2"; done

qemu-img create -q -f vmdk "$tmp/sparse.vmdk" 4M && w vmdk "$tmp/sparse.vmdk"
qemu-img convert -O vmdk -o subformat=streamOptimized "$tmp/sparse.vmdk" "$tmp/stream.vmdk"
seed vmdk_sparse "$tmp/sparse.vmdk"; seed vmdk_sparse "$tmp/stream.vmdk"
# A descriptor followed (after NULs) by the extents it names.
printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="custom"\nRW 4096 FLAT "e0.vmdk" 0\nRW 4096 ZERO\nRW 8192 SPARSE "e1.vmdk"\n' > "$tmp/desc"
head -c 2097152 /dev/urandom > "$tmp/e0"
qemu-img create -q -f vmdk "$tmp/e1" 4M && w vmdk "$tmp/e1"
mkdir -p "$out/vmdk_descriptor"
{ cat "$tmp/desc"; printf '\0'; cat "$tmp/e0"; printf '\0'; cat "$tmp/e1"; } > "$out/vmdk_descriptor/custom"

qemu-img create -q -f vpc -o subformat=dynamic "$tmp/dyn.vhd" 4M && w vpc "$tmp/dyn.vhd"
qemu-img create -q -f vpc -o subformat=fixed "$tmp/fixed.vhd" 4M && w vpc "$tmp/fixed.vhd"
seed vhd "$tmp/dyn.vhd"; seed vhd "$tmp/fixed.vhd"

qemu-img create -q -f vhdx -o block_size=1M "$tmp/dyn.vhdx" 4M && w vhdx "$tmp/dyn.vhdx"
seed vhdx "$tmp/dyn.vhdx"

# COWD and SEsparse seeds come from the test generators (qemu cannot make them).
mkdir -p "$out/vmdk_cowd" "$out/vmdk_sesparse"
python3 tests/fixtures/mk_cowd.py "$out/vmdk_cowd/small-delta" --sectors 8192 --runs 0:8,8:4,5000:3,8191:1
python3 tests/fixtures/mk_sesparse.py "$out/vmdk_sesparse/small-sesparse" --sectors 131072 --runs 0:4:D,10:2:Z,4100:3:D,16383:1:D

# VMFS: a small image derived from the ESXi-made sample (where the corpus is present).
mkdir -p "$out/vmfs"
if [ -f ../shared/corpus/vmfs5.bin.gz ]; then
  gzip -dc ../shared/corpus/vmfs5.bin.gz > "$tmp/vmfs5.bin" && python3 tests/fixtures/mk_vmfs.py --fuzz-seed "$tmp/vmfs5.bin" "$out/vmfs/sample" || echo "vmfs seed skipped" >&2
fi

# .vmx/.vmsd text (the parser's input), and an empty start for iSCSI PDUs.
mkdir -p "$out/vmx" "$out/iscsi_pdu"
printf '.encoding = "UTF-8"\ndisplayName = "web01"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "web01-000001.vmdk"\nsata0:1.deviceType = "cdrom-image"\nnvme0:0.fileName = "/vmfs/volumes/ds1/web01/data.vmdk"\nscsi0:1.mode = "independent-persistent"\n' > "$out/vmx/web01.vmx"
printf 'snapshot.current = "1"\nsnapshot.numSnapshots = "1"\nsnapshot0.uid = "1"\nsnapshot0.displayName = "b|22k"\nsnapshot0.numDisks = "1"\nsnapshot0.disk0.fileName = "web01.vmdk"\nsnapshot0.disk0.node = "scsi0:0"\n' > "$out/vmx/web01.vmsd"
printf '\x03\x87\x00\x00\x00\x00\x00\x00' > "$out/iscsi_pdu/empty-ish"

mkdir -p "$out/detect"; cp "$out"/qcow2/v3.qcow2 "$out"/vmdk_sparse/stream.vmdk "$out"/vhd/dyn.vhd "$out"/vhdx/dyn.vhdx "$out/detect/"
echo "seed corpora in $out: $(find "$out" -type f | wc -l) files"
