#!/bin/sh
# Installs the Debian 12 packages ckptd's build, tests and demo need, if any
# is missing.  Needs root for apt-get; says what to run otherwise.
set -e
pkgs="gcc make pkg-config qemu-system-x86 qemu-utils libjansson-dev
      libxml2-dev libev-dev libnbd-dev libnbd-bin libcmocka-dev
      clang libclang-rt-14-dev
      linux-image-amd64 busybox-static qemu-guest-agent e2fsprogs"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$missing" >&2
    echo "deps: run as root: apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
