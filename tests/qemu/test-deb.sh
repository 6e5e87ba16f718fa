#!/bin/bash
# The Debian package: `make deb` (dpkg-buildpackage -us -uc -b on a copy of
# the tree), its fields and files, lintian when installed, and the package
# installed, run (ckptd --version) and removed in a throw-away root file
# system: an overlay on the trixie root of scripts/trixie-root.sh (or on
# $CKPTD_DEB_ROOT; "/" inside a trixie run), never on this machine.  Needs
# root (build dependencies, mounts); skipped otherwise, and in the
# sanitizer run (the package is always a plain build).  Takes a minute or
# two.
. "$(dirname "$0")/shtest.sh"
SHTEST_TIMEOUT=${SHTEST_TIMEOUT:-900}
shtest_init

if [ "$(id -u)" != 0 ]; then
    skip deb "not root: cannot install build dependencies or mount a root"
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

# Build dependencies: `make deps` installs them (a no-op after make check's).
if ! scripts/deps.sh >"$T/deps.log" 2>&1; then
    fail deb-build-deps "scripts/deps.sh failed"
    tail_log "$T/deps.log"
    finish
    exit 1
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

# Depends names, for each library the programs link (and libxml2, which
# ckptd opens with dlopen), the package that ships it on this release
# (libev4 on Debian 12, libev4t64 on 13).
dpkg-deb -x "$deb" "$T/x"
sonames=$( { readelf -d "$T/x/usr/bin/ckptd" "$T/x/usr/bin/ckptctl" |
             sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; echo libxml2.so.2; } | sort -u)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
libpkgs=""
for so in $sonames; do
    p=$(dpkg-query -S "*/$multiarch/$so" 2>/dev/null | grep -v '^diversion' |
        sed -n 's/^\([^:,]*\).*/\1/p' | head -n 1)
    libpkgs="$libpkgs ${p:-?$so}"
done
note "libraries' packages here:$libpkgs"
depends=$(dpkg-deb -f "$deb" Depends)
missing=""
for p in $libpkgs; do
    echo "$depends" | tr ',' '\n' | grep -qE "^ *$p( |$)" || missing="$missing $p"
done
check deb-depends "Depends '$depends' lacks:$missing" [ -z "$missing" ]
recommends=$(dpkg-deb -f "$deb" Recommends)
check deb-recommends "Recommends is '$recommends'" \
    [ "$recommends" = "qemu-system-x86 | qemu-system, qemu-utils" ]
files=$(dpkg-deb -c "$deb" | awk '{ print $6 }')
missing=""
for f in ./usr/bin/ckptd ./usr/bin/ckptctl ./usr/share/man/man8/ckptd.8.gz \
         ./usr/share/man/man1/ckptctl.1.gz ./usr/lib/systemd/system/ckptd@.service \
         ./usr/share/bash-completion/completions/ckptctl \
         ./usr/share/doc/ckptd/examples/launch-vm.sh ./usr/share/doc/ckptd/copyright; do
    echo "$files" | grep -qx -- "$f" || missing="$missing $f"
done
check deb-contents "the package lacks:$missing" [ -z "$missing" ]
# Merged /usr: nothing under /lib, /bin or /sbin.
aliased=$(echo "$files" | grep -E '^\./(lib|lib64|bin|sbin)/.' | tr '\n' ' ')
check deb-merged-usr "files under an aliased directory: $aliased" [ -z "$aliased" ]

if command -v lintian >/dev/null; then
    # Tags we accept are overridden, with a reason, in debian/; any other
    # error, warning, info or pedantic tag fails.
    tags=$(lintian -E -I --pedantic "$DEB_DIR"/ckptd_"$version"_*.changes 2>&1 |
           grep -v '^running with root privileges' | grep -v '^N:')
    check deb-lintian "lintian: $(echo "$tags" | head -n 5 | tr '\n' ' ')" [ -z "$tags" ]
else
    skip deb-lintian "lintian is not installed (apt-get install lintian)"
fi

# Install, run and remove it in a throw-away root.
lower=${CKPTD_DEB_ROOT:-$(scripts/trixie-root.sh path)}
if [ ! -d "$lower/usr" ] || ! command -v unshare >/dev/null; then
    skip deb-install "no root file system at $lower to install into (scripts/trixie-root.sh build makes one)"
    finish
    exit
fi
note "installing into an overlay on $lower (Debian $(cat "$lower/etc/debian_version"))"
host_before=$(dpkg-query -W -f='${Status} ${Version}' ckptd 2>/dev/null; ls -l --time-style=full-iso /usr/bin/ckptd 2>/dev/null)
cat >"$T/in-root.sh" <<EOF
dpkg -i /tmp/$(basename "$deb") >/tmp/dpkg.log 2>&1 && echo install=ok ||
    { echo install=failed; tail -n 3 /tmp/dpkg.log | sed 's/^/log=/'; }
echo "ckptd=\$(/usr/bin/ckptd --version 2>&1)"
echo "ckptctl=\$(/usr/bin/ckptctl --version 2>&1)"
test -f /usr/lib/systemd/system/ckptd@.service && echo unit=ok
if command -v man >/dev/null; then
    man -w 8 ckptd >/dev/null 2>&1 && echo man=ok || echo man=missing
fi
dpkg -r ckptd >/tmp/dpkg-r.log 2>&1 && echo remove=ok
test ! -e /usr/bin/ckptd && test ! -e /usr/lib/systemd/system/ckptd@.service && echo gone=ok
EOF
out=$(scripts/trixie-root.sh --lower "$lower" --no-tree --file "$deb" --file "$T/in-root.sh" \
          run sh /tmp/in-root.sh 2>&1)
echo "$out" | sed 's/^/# /'
val() { echo "$out" | sed -n "s/^$1=//p" | head -n 1; }
check deb-install "dpkg -i failed: $(val log)" [ "$(val install)" = ok ]
check deb-installed-ckptd-version "/usr/bin/ckptd --version said '$(val ckptd)'" \
    [ "$(val ckptd)" = "ckptd $version" ]
check deb-installed-ckptctl-version "/usr/bin/ckptctl --version said '$(val ckptctl)'" \
    [ "$(val ckptctl)" = "ckptctl $version" ]
check deb-installed-unit "no /usr/lib/systemd/system/ckptd@.service" [ "$(val unit)" = ok ]
if [ -n "$(val man)" ]; then
    check deb-installed-man "man -w 8 ckptd found no page" [ "$(val man)" = ok ]
fi
check deb-remove "dpkg -r failed or left files" [ "$(val remove)$(val gone)" = okok ]
host_after=$(dpkg-query -W -f='${Status} ${Version}' ckptd 2>/dev/null; ls -l --time-style=full-iso /usr/bin/ckptd 2>/dev/null)
check deb-host-untouched "this machine's ckptd changed: '$host_before' -> '$host_after'" \
    [ "$host_before" = "$host_after" ]

finish
