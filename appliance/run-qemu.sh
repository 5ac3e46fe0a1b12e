#!/bin/bash
# Boots the appliance (built by appliance/build.sh or `make appliance`) under
# qemu with disk images attached as virtio-scsi LUNs, and gives a shell on
# the serial console. Exit the shell to power off (or Ctrl-A X).
#
#   appliance/run-qemu.sh [--test] [--dir OUT] IMAGE[:LUN[:WWN[:SERIAL]]]...
#
#   IMAGE   raw disk image (attached writable: the appliance's guard, not
#           qemu, is what keeps SAN LUNs read-only; copy images you care about)
#   LUN     LUN number (default: 0, 1, 2... in order)
#   WWN     NAA identifier, 16 hex digits (default 5000c500abcdefNN, NN the LUN)
#   SERIAL  VPD page 0x80 serial (default SN-LUN)
#   --test  run the boot test (vbproxy.test=1) instead of a shell
#
# An ext4 filesystem labelled vbproxy-data on any disk is mounted as the
# appliance's own /var/lib/vbproxy and never guarded. ACCEL=kvm for
# hardware virtualisation where it works (default tcg: emulation, which
# boots in about 10 s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/../target/appliance
test=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --test) test=1 ;;
        --dir) out=$2; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done
[ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.img" ] || {
    echo "no appliance in $out: run 'make appliance' first" >&2
    exit 1
}
accel=${ACCEL:-tcg}
drives=()
i=0
for a in "${args[@]}"; do
    IFS=: read -r img lun wwn serial <<<"$a"
    lun=${lun:-$i}
    wwn=${wwn:-$(printf '5000c500abcdef%02x' "$lun")}
    serial=${serial:-SN-$lun}
    drives+=(-drive "if=none,id=d$i,format=raw,file=$img"
        -device "scsi-hd,drive=d$i,bus=scsi0.0,channel=0,scsi-id=0,lun=$lun,wwn=0x$wwn,serial=$serial")
    i=$((i + 1))
done
append="console=ttyS0 quiet panic=-1 vbproxy.disks=$i"
[ "$test" = 1 ] && append="$append vbproxy.test=1"
exec qemu-system-x86_64 -accel "$accel" -m 512 -nographic -no-reboot -net none \
    -kernel "$out/vmlinuz" -initrd "$out/initramfs.img" -append "$append" \
    -device virtio-scsi-pci,id=scsi0 "${drives[@]}"
