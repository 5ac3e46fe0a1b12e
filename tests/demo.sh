#!/usr/bin/env bash
# `make demo`: builds a sample VM with real tools (mkntfs + ntfs-3g,
# mkfs.ext4, sfdisk, qemu-img, qemu-io) and shows what vbproxy finds in it:
# disk formats, a snapshot chain, partitions and filesystems, files,
# a tar stream, a single-file restore and a verified image export.
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

say "nothing was written to the source disks"
after=$(cd "$dir" && sha256sum web01.vmdk web01-000001.vmdk web01.vhdx web01.vhd web01.qcow2)
if [ "$before" = "$after" ]; then echo "SHA-256 of every source disk unchanged:"; echo "$after" | sed 's/^/  /'; else echo "SOURCE CHANGED" >&2; exit 1; fi
