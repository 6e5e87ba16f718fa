#!/bin/sh
# A Debian 13 (trixie) root file system, to build and test ckptd on QEMU 10
# from a Debian 12 machine.  Built once with mmdebstrap and cached; every
# run enters a throw-away overlay on it, so the cached root never changes
# and several runs can share it.  Needs root.
#
#   scripts/trixie-root.sh path        the cached root's directory (it may
#                                      not exist yet)
#   scripts/trixie-root.sh build       builds it unless it is there
#   scripts/trixie-root.sh check [VAR=VALUE...]
#                                      `make check` in it (make check-trixie)
#   scripts/trixie-root.sh run CMD     sh -c CMD in it, in /src/ckptd (a
#                                      copy of this tree, build dirs left out)
#   scripts/trixie-root.sh prune       removes cached roots of other package
#                                      lists
# Options before the command, for run:
#   --lower DIR    overlay DIR instead of the cached root (DIR=/ inside a
#                  trixie run: a throw-away root within it)
#   --no-tree      no copy of the tree; CMD runs in /
#   --file FILE    copies FILE into the root's /tmp (repeatable)
#
# The cache key is the package list (scripts/deps.sh --list plus EXTRA
# below) and RECIPE: the root is rebuilt when either changes.
# Environment: CKPTD_ROOT_CACHE (default /var/cache/ckptd-ci),
# CKPTD_MIRROR (default http://deb.debian.org/debian).
set -e

SUITE=trixie
# Packages the tests use beyond scripts/deps.sh's (one a line).
EXTRA='
lintian
man-db
mount
procps
python3
systemd
'
# Change when the recipe below changes, to rebuild the cached roots.
RECIPE=1

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
CACHE=${CKPTD_ROOT_CACHE:-/var/cache/ckptd-ci}
MIRROR=${CKPTD_MIRROR:-http://deb.debian.org/debian}

die() { echo "trixie-root: $*" >&2; exit 1; }

extra=$(printf '%s\n' "$EXTRA" | sed '/^[[:space:]]*$/d')
key=$( { echo "$SUITE $RECIPE"; sh "$HERE/deps.sh" --list; echo "$extra"; } |
       sha256sum | cut -c1-12)
ROOTFS=$CACHE/$SUITE-$key

build() {
    [ -f "$ROOTFS/.ckptd-root" ] && return 0
    [ "$(id -u)" = 0 ] || die "building the root needs root"
    sh "$HERE/deps.sh" mmdebstrap
    mkdir -p "$CACHE"
    # One build at a time; whoever waited finds it built.
    exec 8>"$CACHE/.lock"
    flock 8
    if [ ! -f "$ROOTFS/.ckptd-root" ]; then
        tmp=$CACHE/.build-$SUITE-$key.$$
        rm -rf "$tmp"
        trap 'rm -rf "$tmp"' EXIT
        echo "trixie-root: building $ROOTFS (a few minutes)"
        # deps.sh runs inside, so the root gets what `make deps` would
        # install there, names chosen by trixie's own apt.
        if ! mmdebstrap --quiet --variant=apt \
                --include="$(echo "$extra" | paste -sd, -)" \
                --customize-hook="copy-in $HERE/deps.sh /tmp" \
                --customize-hook='chroot "$1" sh /tmp/deps.sh' \
                --customize-hook='rm -f "$1/tmp/deps.sh"' \
                --customize-hook='printf "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" >"$1/etc/hosts"' \
                "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1; then
            tail -n 30 "$tmp.log" >&2
            rm -f "$tmp.log"
            die "mmdebstrap failed"
        fi
        rm -f "$tmp.log"
        echo "$SUITE $key $(date -u +%FT%TZ)" >"$tmp/.ckptd-root"
        rm -rf "$ROOTFS"    # without its mark: an interrupted build
        mv "$tmp" "$ROOTFS"
        trap - EXIT
    fi
    exec 8>&-
}

# --- run: the throw-away root ---
lower=""
tree=1
files=""
while [ $# -gt 0 ]; do
    case $1 in
        --lower) lower=$2; shift 2 ;;
        --no-tree) tree=""; shift ;;
        --file) files="$files $2"; shift 2 ;;
        *) break ;;
    esac
done
cmd=${1:-}
[ $# -gt 0 ] && shift

# Inside a private mount namespace (see run): mounts the overlay and the
# kernel file systems, runs the command, and takes everything down again.
enter() {
    work=$1
    shift
    m=$work/root
    mkdir -p "$m"
    # An overlay's upper layer cannot be on an overlay (the case inside a
    # trixie run): a tmpfs then.
    if [ "$(stat -f -c %T "$work")" = overlayfs ]; then
        mkdir -p "$work/rw"
        mount -t tmpfs -o mode=0755 ckptd-rw "$work/rw"
        rw=$work/rw
    else
        rw=$work
    fi
    mkdir -p "$rw/upper" "$rw/work"
    mount -t overlay ckptd-root \
        -o "lowerdir=$lower,upperdir=$rw/upper,workdir=$rw/work" "$m"
    trap 'takedown' EXIT
    trap 'takedown; exit 130' INT TERM HUP
    mount --make-private "$m"
    for d in proc sys dev dev/pts dev/shm; do
        [ -d "/$d" ] && mkdir -p "$m/$d" && mount --bind "/$d" "$m/$d"
    done
    rm -f "$m/etc/resolv.conf"
    cp /etc/resolv.conf "$m/etc/resolv.conf" 2>/dev/null || true
    for f in $files; do
        cp "$f" "$m/tmp/"
    done
    dir=/
    if [ -n "$tree" ]; then
        dir=/src/ckptd
        mkdir -p "$m$dir"
        tar -C "$SRC" -cf - --exclude=./.git --exclude=./build \
            --exclude='./build-*' . | tar -C "$m$dir" -xf -
    fi
    # A clean environment, with what the tests read from it.
    set -- PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" CKPTD_DEB_ROOT=/
    for v in CI HQ_ACCEL FUZZ_SECONDS SHTEST_TIMEOUT; do
        eval "[ -n \"\${$v+x}\" ]" && set -- "$@" "$v=$(eval "echo \"\$$v\"")"
    done
    rc=0
    chroot "$m" /usr/bin/env -i "$@" /bin/sh -c "cd $dir && $cmd_line" || rc=$?
    exit "$rc"
}

# Processes left inside the root are killed so that it can be unmounted.
takedown() {
    trap - EXIT INT TERM HUP
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$m" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    for d in dev/shm dev/pts dev sys proc; do
        mountpoint -q "$m/$d" 2>/dev/null && { umount "$m/$d" || umount -l "$m/$d"; }
    done
    umount "$m" 2>/dev/null || umount -l "$m"
    [ "$rw" = "$work" ] || umount "$rw" 2>/dev/null || umount -l "$rw"
    return 0
}

run() {
    [ "$(id -u)" = 0 ] || die "entering the root needs root"
    [ -n "$*" ] || die "run: no command"
    if [ -z "$lower" ]; then
        build
        lower=$ROOTFS
    fi
    [ -d "$lower/usr" ] || die "no root file system at $lower"
    base=$CACHE/runs
    [ "$lower" = / ] && base=${TMPDIR:-/tmp}
    mkdir -p "$base"
    # Left by runs killed with SIGKILL (their mounts went with them).
    [ "$lower" = / ] || find "$base" -mindepth 1 -maxdepth 1 -name 'ckptd-root-*' \
        -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
    work=$(mktemp -d "$base/ckptd-root-XXXXXX")
    trap 'rm -rf "$work"' EXIT
    trap 'exit 130' INT TERM HUP
    rc=0
    # The mounts live in a namespace of their own: they go when it does,
    # even if this script is killed.
    cmd_line="$*"
    set -- --lower "$lower"
    [ -n "$tree" ] || set -- "$@" --no-tree
    for f in $files; do
        set -- "$@" --file "$f"
    done
    cmd_line=$cmd_line unshare --mount --propagation private \
        sh "$0" "$@" __enter "$work" || rc=$?
    return "$rc"
}

case $cmd in
    path) echo "$ROOTFS" ;;
    build) build; echo "$ROOTFS" ;;
    check) run "make check $*" ;;
    run) run "$@" ;;
    __enter) cmd_line=${cmd_line:?}; enter "$@" ;;
    prune)
        for d in "$CACHE/$SUITE"-*; do
            [ -d "$d" ] && [ "$d" != "$ROOTFS" ] && { echo "removing $d"; rm -rf "$d"; }
        done
        ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
