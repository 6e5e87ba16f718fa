#!/bin/sh
# Installs the Debian packages ckptd's build, tests, demo and package need,
# if any is missing; prints nothing when none is.  Works on Debian 12 and 13.
# Names given as arguments are needed too (scripts/deps.sh mmdebstrap).
# Needs root for apt-get; says what to run otherwise.
# CKPTD_DEPS_CONTAINER=1 adds podman, runc and mmdebstrap, which
# tests/qemu/test-container.sh needs (it skips without them); not by
# default, as podman brings a container engine and its services.
#   scripts/deps.sh --list   prints the list below (for the trixie root's
#                            cache key), one entry a line.
# Names are split on white space, never globbed.
set -ef

# One entry a line; add a package by adding a line.  "a|b": a or b, where
# releases name the same thing differently: any of them installed counts,
# and when none is, the first one the release offers is installed.
PACKAGES='
gcc
make
pkgconf|pkg-config
qemu-system-x86
qemu-utils
libjansson-dev
libxml2-dev
libev-dev
libnbd-dev
libnbd-bin
nettle-dev
libcmocka-dev
clang
libclang-rt-dev|libclang-rt-14-dev
build-essential
dpkg-dev
debhelper
linux-image-amd64
busybox-static
qemu-guest-agent
e2fsprogs
'

entries=$(printf '%s\n' "$PACKAGES" | sed 's/#.*//; s/[[:space:]]//g; /^$/d')
if [ "$1" = --list ]; then
    printf '%s\n' "$entries"
    exit 0
fi
# After --list: the trixie root's cache key does not change with it.
[ "${CKPTD_DEPS_CONTAINER:-}" = 1 ] && set -- "$@" podman runc mmdebstrap
for p in "$@"; do
    entries="$entries
$p"
done

# Everything installed: one dpkg-query, no apt.
names=$(printf '%s\n' "$entries" | tr '|' '\n')
installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $names 2>/dev/null |
            awk '$1 == "ii" { print $2 }') || true
missing=""
for e in $entries; do
    ok=""
    for p in $(printf '%s\n' "$e" | tr '|' ' '); do
        printf '%s\n' "$installed" | grep -qx -- "$p" && ok=1 && break
    done
    [ -n "$ok" ] || missing="$missing $e"
done
[ -z "$missing" ] && exit 0

# The name this release offers: the first alternative apt has a candidate
# for; "" when none has (stale or missing package lists).
offered() {
    for p in $(printf '%s\n' "$1" | tr '|' ' '); do
        c=$(apt-cache policy -- "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p')
        if [ -n "$c" ] && [ "$c" != "(none)" ]; then
            echo "$p"
            return 0
        fi
    done
    return 0
}
resolve() {
    unknown=""
    pkgs=""
    for e in $missing; do
        p=$(offered "$e")
        [ -n "$p" ] || { unknown="$unknown $e"; p=${e%%|*}; }
        pkgs="$pkgs $p"
    done
}
resolve

if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$pkgs" >&2
    echo "deps: run as root: apt-get install -y --no-install-recommends$pkgs" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Other apt users on the machine: wait for the lock instead of failing.
APT="apt-get -o DPkg::Lock::Timeout=600 -y -qq"
updated=""
if [ -n "$unknown" ]; then
    $APT update
    updated=1
    resolve
fi
echo "deps: installing$pkgs"
if ! $APT install --no-install-recommends $pkgs; then
    # Stale package lists name files the mirror no longer has.
    [ -z "$updated" ] || exit 1
    $APT update
    $APT install --no-install-recommends $pkgs
fi
