#!/bin/bash
# The Debian package: `make deb` (dpkg-buildpackage -us -uc -b on a copy of
# the tree), its fields and files, lintian when installed, and the
# installed package's ckptd --version.  Needs root (it installs the build
# dependencies with apt-get and the package with dpkg); skipped otherwise,
# and in the sanitizer run (the package is always a plain build).
# Takes a minute or two.
. "$(dirname "$0")/shtest.sh"
SHTEST_TIMEOUT=${SHTEST_TIMEOUT:-900}
shtest_init

if [ "$(id -u)" != 0 ]; then
    skip deb "not root: cannot install build dependencies or the package"
    finish
    exit
fi
if [ "$BUILD" = build-asan ]; then
    skip deb "the package is built without sanitizers; covered by the plain run"
    finish
    exit
fi
if ! command -v dpkg-buildpackage >/dev/null || ! command -v apt-get >/dev/null; then
    skip deb "not a Debian system (no dpkg-buildpackage or apt-get)"
    finish
    exit
fi

# One package test at a time on this machine: two would share
# $BUILD/deb and the dpkg database (and /usr/bin/ckptd).
if command -v flock >/dev/null; then
    exec 9>"${TMPDIR:-/tmp}/ckptd-test-deb.lock"
    if ! flock -w 600 9; then
        fail deb-lock "another test-deb.sh held the lock for 10 minutes"
        finish
        exit 1
    fi
fi

# Build dependencies (debian/control's Build-Depends plus the tools).
need=""
for p in debhelper dpkg-dev pkg-config libjansson-dev libxml2-dev libev-dev \
         libnbd-dev libcmocka-dev; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
        need="$need $p"
done
if [ -n "$need" ]; then
    note "installing$need"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $need; } \
            >"$T/apt.log" 2>&1; then
        fail deb-build-deps "apt-get install$need failed"
        tail_log "$T/apt.log"
        finish
        exit 1
    fi
fi

version=$(sed -n 's/^VERSION *:= *//p' Makefile)
# The package's version is the Makefile's (native package).
check deb-version-matches "debian/changelog is not at $version" \
    eval "head -n 1 debian/changelog | grep -q '^ckptd ($version)'"

DEB_DIR=$ROOT/$BUILD/deb
if make --no-print-directory -C "$ROOT" BUILD="$BUILD" deb >"$T/deb.log" 2>&1; then
    pass deb-build
else
    fail deb-build "make deb failed"
    tail_log "$T/deb.log" 30
    finish
    exit 1
fi
deb=$(ls "$DEB_DIR"/ckptd_"$version"_*.deb 2>/dev/null | head -n 1)
check deb-file "no ckptd_${version}_ARCH.deb in $DEB_DIR" test -f "$deb"
check deb-unit-tests "the unit tests did not run in the package build" \
    grep -qE '^[0-9]+ passed, 0 failed' "$T/deb.log"

depends=$(dpkg-deb -f "$deb" Depends)
missing=""
for lib in libc6 libjansson4 libxml2 libev4 libnbd0; do
    echo "$depends" | grep -q "\\b$lib\\b" || missing="$missing $lib"
done
check deb-depends "Depends '$depends' lacks:$missing" [ -z "$missing" ]
recommends=$(dpkg-deb -f "$deb" Recommends)
check deb-recommends "Recommends is '$recommends'" \
    [ "$recommends" = "qemu-system-x86 | qemu-system, qemu-utils" ]
files=$(dpkg-deb -c "$deb" | awk '{ print $6 }')
missing=""
for f in ./usr/bin/ckptd ./usr/bin/ckptctl ./usr/share/man/man8/ckptd.8.gz \
         ./usr/share/man/man1/ckptctl.1.gz ./lib/systemd/system/ckptd@.service \
         ./usr/share/bash-completion/completions/ckptctl \
         ./usr/share/doc/ckptd/examples/launch-vm.sh ./usr/share/doc/ckptd/copyright; do
    echo "$files" | grep -qx -- "$f" || missing="$missing $f"
done
check deb-contents "the package lacks:$missing" [ -z "$missing" ]

if command -v lintian >/dev/null; then
    # Tags we accept are overridden, with a reason, in debian/; any other
    # error, warning, info or pedantic tag fails.
    tags=$(lintian -E -I --pedantic "$DEB_DIR"/ckptd_"$version"_*.changes 2>&1 |
           grep -v '^running with root privileges' | grep -v '^N:')
    check deb-lintian "lintian: $(echo "$tags" | head -n 5 | tr '\n' ' ')" [ -z "$tags" ]
else
    skip deb-lintian "lintian is not installed (apt-get install lintian)"
fi

# Install it, run it, remove it (unless a ckptd package was installed
# before: then only the unpacked binary is run).
if dpkg-query -W -f='${Status}\n' ckptd 2>/dev/null | grep -q '^install ok installed'; then
    skip deb-install "a ckptd package is already installed; not replacing it"
    dpkg-deb -x "$deb" "$T/x"
    check deb-unpacked-version "the unpacked ckptd --version failed" \
        eval "'$T/x/usr/bin/ckptd' --version | grep -qx 'ckptd $version'"
else
    installed=""
    remove_pkg() { [ -n "$installed" ] && dpkg -r ckptd >/dev/null 2>&1; installed=""; }
    trap 'remove_pkg; cleanup' EXIT
    if dpkg -i "$deb" >"$T/dpkg.log" 2>&1; then
        installed=1
        pass deb-install
    else
        fail deb-install "dpkg -i failed: $(tail -n 2 "$T/dpkg.log" | tr '\n' ' ')"
        installed=1
    fi
    v=$(/usr/bin/ckptd --version 2>&1)
    check deb-installed-ckptd-version "/usr/bin/ckptd --version said '$v'" [ "$v" = "ckptd $version" ]
    v=$(/usr/bin/ckptctl --version 2>&1)
    check deb-installed-ckptctl-version "/usr/bin/ckptctl --version said '$v'" [ "$v" = "ckptctl $version" ]
    if command -v man >/dev/null; then
        check deb-installed-man "man -w ckptd found no page" eval "man -w 8 ckptd >/dev/null 2>&1"
    fi
    remove_pkg
    check deb-remove "files left after dpkg -r" \
        eval "test ! -e /usr/bin/ckptd && test ! -e /lib/systemd/system/ckptd@.service"
fi

finish
