#!/usr/bin/env bash
# `make demo`: builds a sample VM with real tools (mkntfs + ntfs-3g,
# mkfs.ext4, sfdisk, qemu-img, qemu-io) and shows what vbproxy finds in it:
# disk formats, a snapshot chain, partitions and filesystems, files,
# a tar stream, a single-file restore and a verified image export. Then the
# proxy's own job: the VM on a datastore LUN served over iSCSI by tgtd,
# validated against an inventory and presented to a backup tool.
set -euo pipefail
dir=${1:-target/demo}
vb=${VBPROXY:-target/release/vbproxy}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

if [ ! -e "$dir/.done-v2" ]; then
  say "building the sample VM web01 in $dir"
  rm -rf "${dir:?}"/* "$dir"/.done*
  # A Windows-like NTFS volume, filled through ntfs-3g (FUSE, on the file itself).
  truncate -s 160M "$dir/ntfs.img"
  mkntfs -q -F -Q -L WEB01-C "$dir/ntfs.img"
  mkdir -p "$dir/mnt"
  ntfs-3g "$dir/ntfs.img" "$dir/mnt"
  mkdir -p "$dir/mnt/Windows/System32/config" "$dir/mnt/Users/admin/Documents" "$dir/mnt/inetpub/wwwroot"
  echo "<h1>web01</h1>" > "$dir/mnt/inetpub/wwwroot/index.html"
  printf 'Quarterly numbers\n' > "$dir/mnt/Users/admin/Documents/report.txt"
  head -c 3M /dev/urandom > "$dir/mnt/Users/admin/Documents/photo.jpg"
  ln "$dir/mnt/Users/admin/Documents/report.txt" "$dir/mnt/Users/admin/report-link.txt"
  umount "$dir/mnt"
  # A Linux root filesystem from a directory tree.
  mkdir -p "$dir/tree/etc" "$dir/tree/home/ops" "$dir/tree/var/log"
  printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n' > "$dir/tree/etc/os-release"
  printf 'UUID=0 / ext4 defaults 0 1\n' > "$dir/tree/etc/fstab"
  printf 'backup runs at 02:00\n' > "$dir/tree/home/ops/notes.txt"
  ln -s ../home/ops/notes.txt "$dir/tree/etc/notes-link"
  mkfs.ext4 -q -F -L web01-root -d "$dir/tree" "$dir/ext4.img" 120M
  # The disk: an MBR with both volumes.
  truncate -s 300M "$dir/disk.raw"
  printf 'label: dos\nstart=2048, size=327680, type=7\nstart=329728, type=83\n' | sfdisk -q "$dir/disk.raw"
  dd if="$dir/ntfs.img" of="$dir/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$dir/ext4.img" of="$dir/disk.raw" bs=512 seek=329728 conv=notrunc,sparse status=none
  # As VMware leaves it during a backup: a base disk and a snapshot delta.
  qemu-img convert -O vmdk "$dir/disk.raw" "$dir/web01.vmdk"
  (cd "$dir" && qemu-img create -q -f vmdk -b web01.vmdk -F vmdk web01-000001.vmdk)
  # The same content in the other hypervisors' formats.
  qemu-img convert -O vhdx "$dir/disk.raw" "$dir/web01.vhdx"
  qemu-img convert -O vpc -o subformat=dynamic,force_size=on "$dir/disk.raw" "$dir/web01.vhd"
  qemu-img convert -c -O qcow2 "$dir/disk.raw" "$dir/web01.qcow2"
  rm -rf "$dir/tree" "$dir/mnt" "$dir/ntfs.img" "$dir/ext4.img"
  touch "$dir/.done-v2"
fi
top="$dir/web01-000001.vmdk"
before=$(cd "$dir" && sha256sum web01.vmdk web01-000001.vmdk web01.vhdx web01.vhd web01.qcow2)

say "what is this disk? (format, snapshot chain, partitions, filesystems)"
run "$vb" inspect "$top"

say "the same guest in every hypervisor's format"
for f in web01.vhdx web01.vhd web01.qcow2; do "$vb" inspect "$dir/$f" | head -2; done

say "browse the guest: /<volume>/<path> (one disk: /disk0 may be left out)"
run "$vb" ls -l "$top" /p1/Users/admin/Documents
run "$vb" ls -R "$top" /p2/etc
run "$vb" cat "$top" /p2/etc/os-release

say "a file-level backup stream (PAX tar), listed by GNU tar"
"$vb" tar --path /p1 "$top" > "$dir/p1.tar"
tar -tvf "$dir/p1.tar" > "$dir/p1.list"; head -12 "$dir/p1.list"; echo "($(wc -l < "$dir/p1.list") entries, $(stat -c %s "$dir/p1.tar") bytes)"

say "restore one file"
rm -rf "$dir/restore" && mkdir -p "$dir/restore"
run "$vb" cp "$top" /p1/Users/admin/Documents/report.txt "$dir/restore"
ls -l "$dir/restore"

say "image export for a full-VM backup, checked by qemu-img and by the manifest"
rm -f "$dir/export.vmdk" "$dir/export.vmdk.manifest.json"
run "$vb" export --format vmdk-stream "$top" -o "$dir/export.vmdk"
run qemu-img compare "$top" "$dir/export.vmdk"
run "$vb" verify "$dir/export.vmdk" --source "$top"

say "the proxy's job: web01 on a datastore LUN, served over iSCSI by tgtd on 127.0.0.1"
if [ ! -e "$dir/.done-ds-v1" ]; then
  # The VM's directory as ESXi keeps it: .vmx, .vmsd (one snapshot taken by
  # the backup product: it froze web01.vmdk) and the snapshot chain, on an
  # ext4 datastore volume (mkfs.ext4 -d).
  rm -rf "$dir/dstree" && mkdir -p "$dir/dstree/web01"
  cp "$dir/web01.vmdk" "$dir/web01-000001.vmdk" "$dir/dstree/web01/"
  printf '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\ndisplayName = "web01"\nguestOS = "windows2019srv-64"\nnvram = "web01.nvram"\nscsi0.present = "TRUE"\nscsi0.virtualDev = "lsisas1068"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "web01-000001.vmdk"\n' > "$dir/dstree/web01/web01.vmx"
  printf '.encoding = "UTF-8"\nsnapshot.lastUID = "1"\nsnapshot.current = "1"\nsnapshot.numSnapshots = "1"\nsnapshot0.uid = "1"\nsnapshot0.filename = "web01-Snapshot1.vmsn"\nsnapshot0.displayName = "backup-2026-11-23"\nsnapshot0.numDisks = "1"\nsnapshot0.disk0.fileName = "web01.vmdk"\nsnapshot0.disk0.node = "scsi0:0"\n' > "$dir/dstree/web01/web01.vmsd"
  head -c 8684 /dev/zero > "$dir/dstree/web01/web01.nvram"
  mkfs.ext4 -q -F -L ds-demo -d "$dir/dstree" "$dir/datastore-lun.img" 1G
  rm -rf "$dir/dstree"
  touch "$dir/.done-ds-v1"
fi
lun_before=$(sha256sum < "$dir/datastore-lun.img")
port=3299; iqn=iqn.2026-11.demo.vbproxy:ds1
tgtd -f --iscsi portal=127.0.0.1:$port -C $port > "$dir/tgtd.log" 2>&1 &
tgtd_pid=$!
stop_tgtd() {
  tgtadm -C $port --lld iscsi --op delete --force --mode target --tid 1 >/dev/null 2>&1 || true
  tgtadm -C $port --lld iscsi --op delete --mode system >/dev/null 2>&1 || true
  sleep 0.5; kill -9 $tgtd_pid 2>/dev/null || true
  mountpoint -q "$dir/job" 2>/dev/null && "$vb" umount --lazy "$dir/job" || true
}
trap stop_tgtd EXIT
for _ in $(seq 50); do tgtadm -C $port --lld iscsi --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C $port --lld iscsi --op new --mode target --tid 1 -T $iqn
tgtadm -C $port --lld iscsi --op new --mode logicalunit --tid 1 --lun 3 -b "$dir/datastore-lun.img"
tgtadm -C $port --lld iscsi --op bind --mode target --tid 1 -I ALL
run "$vb" lun list --iscsi 127.0.0.1:$port
id=$("$vb" lun list --iscsi 127.0.0.1:$port --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
# The cluster's view of its LUNs (normally from `vbproxy inventory import-esxcli`).
cat > "$dir/inventory.toml" <<EOF_INV
cluster = "demo"

[[datastore]]
name = "ds1"
lun = 3
device = "$id"
kind = "ext4"
label = "ds-demo"
source = "iscsi://127.0.0.1:$port/$iqn/3"
EOF_INV
echo "inventory: $dir/inventory.toml (datastore ds1 = LUN 3, $id)"
run "$vb" lun validate --inventory "$dir/inventory.toml"
run "$vb" vm list --inventory "$dir/inventory.toml"
rm -rf "$dir/job"
run "$vb" backup prepare --inventory "$dir/inventory.toml" --vm web01 --mode file --target "$dir/job"
echo "what the backup tool sees (read-only FUSE tree of the disks as the snapshot froze them):"
run ls "$dir/job" "$dir/job/scsi0-0"
run ls -l "$dir/job/scsi0-0/p1/Users/admin/Documents"
tar -C "$dir/job" -cf - . | tar -tvf - | tail -3
run "$vb" backup cleanup "$dir/job"
grep -q " $dir/job " /proc/self/mountinfo && { echo "MOUNT LEFT BEHIND" >&2; exit 1; } || echo "cleanup left no mount"
stop_tgtd; trap - EXIT
if [ "$lun_before" != "$(sha256sum < "$dir/datastore-lun.img")" ]; then echo "LUN CHANGED" >&2; exit 1; fi
echo "the LUN's backing file is unchanged"

say "nothing was written to the source disks"
after=$(cd "$dir" && sha256sum web01.vmdk web01-000001.vmdk web01.vhdx web01.vhd web01.qcow2)
if [ "$before" = "$after" ]; then echo "SHA-256 of every source disk unchanged:"; echo "$after" | sed 's/^/  /'; else echo "SOURCE CHANGED" >&2; exit 1; fi
