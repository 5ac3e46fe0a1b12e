#!/bin/bash
# Installs qemu-system-x86 (for the appliance boot test) without disturbing
# the qemu-utils already installed.
#
#   appliance/install-qemu.sh [--simulate]
#
# The build machines carry qemu-utils 10 from bookworm-backports; Debian 12's
# own qemu-system-x86 (7.2) conflicts with it (qemu-utils 10 Breaks
# qemu-system-common < 8), and installing it alone would downgrade qemu-img.
# So when qemu-utils comes from backports, qemu-system-x86 is installed from
# bookworm-backports too, in one apt-get command with qemu-utils, through a
# private source list and package cache under /tmp: the machine's own apt
# sources are left as they are. Otherwise both come from the distribution.
set -euo pipefail
sim=()
[ "${1:-}" = --simulate ] && sim=(-s)
if [ ${#sim[@]} -eq 0 ] && command -v qemu-system-x86_64 >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(qemu-system-x86 qemu-utils)
utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
case "$utils" in
*bpo12*)
    d=/tmp/vbproxy-apt-bookworm-backports
    mkdir -p "$d/lists/partial" "$d/archives/partial"
    key=/usr/share/keyrings/debian-archive-keyring.gpg
    cat >"$d/sources.list" <<EOF
deb [signed-by=$key] http://deb.debian.org/debian bookworm main
deb [signed-by=$key] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=$key] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=$key] http://deb.debian.org/debian bookworm-backports main
EOF
    o=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::lists=$d/lists"
        -o "Dir::Cache::archives=$d/archives")
    apt-get "${o[@]}" update -q >/dev/null
    apt-get "${o[@]}" install "${sim[@]}" -y -q --no-install-recommends -t bookworm-backports "${pkgs[@]}"
    ;;
*)
    apt-get install "${sim[@]}" -y -q --no-install-recommends "${pkgs[@]}"
    ;;
esac
if [ ${#sim[@]} -eq 0 ]; then
    qemu-system-x86_64 --version | head -1
    qemu-img --version | head -1
fi
