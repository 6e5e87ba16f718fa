#!/bin/bash
# `make install` / `make uninstall` with DESTDIR and PREFIX: exactly the
# listed files, and nothing left after uninstall; the man pages render
# without warnings; the systemd units pass systemd-analyze verify (or at
# least have the keys that matter); the bash completion and launcher parse.
. "$(dirname "$0")/shtest.sh"
shtest_init
SHTEST_TIMEOUT=${SHTEST_TIMEOUT:-120}

mk() { make --no-print-directory -s -C "$ROOT" $(make_vars) "$@"; }

expected="usr/bin/ckptctl
usr/bin/ckptd
usr/lib/systemd/system/ckptd@.service
usr/share/bash-completion/completions/ckptctl
usr/share/doc/ckptd/examples/ckptd.conf
usr/share/doc/ckptd/examples/container/Containerfile
usr/share/doc/ckptd/examples/container/README.md
usr/share/doc/ckptd/examples/launch-vm.sh
usr/share/doc/ckptd/examples/systemd/ckptd@.service.d/qemu-vm.conf
usr/share/doc/ckptd/examples/systemd/qemu-vm@.service
usr/share/doc/ckptd/examples/systemd/vm1.env
usr/share/man/man1/ckptctl.1
usr/share/man/man8/ckptd.8"

D=$T/root
if mk install DESTDIR="$D" PREFIX=/usr >"$T/install.log" 2>&1; then
    pass install-runs
else
    fail install-runs "make install failed"
    tail_log "$T/install.log"
fi
got=$(cd "$D" 2>/dev/null && find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort)
if [ "$got" = "$expected" ]; then
    pass install-files
else
    fail install-files "installed files differ from the list"
    diff <(echo "$expected") <(echo "$got") | sed 's/^/# /'
fi
modes=$(stat -c '%a %n' "$D/usr/bin/ckptd" "$D/usr/bin/ckptctl" \
        "$D/usr/share/doc/ckptd/examples/launch-vm.sh" "$D/usr/share/man/man8/ckptd.8" 2>&1 |
        sed "s|$D/||" | tr '\n' ' ')
check install-modes "modes: $modes" [ "$modes" = \
    "755 usr/bin/ckptd 755 usr/bin/ckptctl 755 usr/share/doc/ckptd/examples/launch-vm.sh 644 usr/share/man/man8/ckptd.8 " ]
check install-unit-execstart "the installed unit does not run /usr/bin/ckptd" \
    grep -q '^ExecStart=/usr/bin/ckptd ' "$D/usr/lib/systemd/system/ckptd@.service"
check install-binary-runs "the installed ckptd --version failed" \
    eval "'$D/usr/bin/ckptd' --version | grep -q '^ckptd [0-9]'"

# The directory variables move each part on its own.
if mk install DESTDIR="$T/root2" PREFIX=/opt/ckptd UNITDIR=/lib/systemd/system \
        >"$T/install2.log" 2>&1 &&
   test -f "$T/root2/lib/systemd/system/ckptd@.service" &&
   test -x "$T/root2/opt/ckptd/bin/ckptd" &&
   grep -q '^ExecStart=/opt/ckptd/bin/ckptd ' "$T/root2/lib/systemd/system/ckptd@.service"; then
    pass install-unitdir-prefix
else
    fail install-unitdir-prefix "PREFIX=/opt/ckptd UNITDIR=/lib/systemd/system misplaced files"
    tail_log "$T/install2.log"
fi

if mk uninstall DESTDIR="$D" PREFIX=/usr >"$T/uninstall.log" 2>&1; then
    pass uninstall-runs
else
    fail uninstall-runs "make uninstall failed"
    tail_log "$T/uninstall.log"
fi
left=$(cd "$D" && find . \( -type f -o -type l \) | sed 's|^\./||')
check uninstall-files "left behind: $(echo $left)" [ -z "$left" ]
check uninstall-doc-dir "usr/share/doc/ckptd still there" test ! -e "$D/usr/share/doc/ckptd"
mk uninstall DESTDIR="$T/root2" PREFIX=/opt/ckptd UNITDIR=/lib/systemd/system >/dev/null 2>&1
left=$(cd "$T/root2" && find . \( -type f -o -type l \))
check uninstall-unitdir-prefix "left behind: $(echo $left)" [ -z "$left" ]

# --- man pages ---
for page in doc/ckptd.8 doc/ckptctl.1; do
    name=man-$(basename "$page")
    if command -v man >/dev/null; then
        out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >"$T/man.txt")
    elif command -v groff >/dev/null; then
        out=$(groff -man -Tutf8 -ww "$page" 2>&1 >"$T/man.txt")
    else
        skip "$name" "neither man nor groff is installed"
        continue
    fi
    if [ -n "$out" ]; then
        fail "$name" "warnings: $(echo "$out" | head -n 3 | tr '\n' ' ')"
    elif ! grep -q '^NAME' "$T/man.txt" || ! grep -q 'SYNOPSIS' "$T/man.txt"; then
        fail "$name" "rendered page has no NAME or SYNOPSIS"
    else
        pass "$name"
    fi
done
if command -v man >/dev/null; then
    check man-relative-path "man ./doc/ckptctl.1 did not render" \
        eval "MANPAGER=cat man ./doc/ckptctl.1 2>/dev/null | grep -q 'ckptctl - drive ckptd'"
fi
# Every option of ckptd --help is in ckptd.8, every command of ckptctl in
# ckptctl.1: the pages follow the binaries.
missing=""
for o in $("$CKPTD" --help | grep -o -- '^  --[a-z-]*'); do
    grep -q -- "^\\.B[IR]* *\\\\-\\\\-${o#--}" doc/ckptd.8 ||
        grep -q -- "\\\\-\\\\-$(echo "${o#--}" | sed 's/-/\\\\-/g')" doc/ckptd.8 || missing="$missing $o"
done
check man-ckptd-options "options missing from ckptd.8:$missing" [ -z "$missing" ]
missing=""
while read -r c; do
    grep -q "^\\.B $(echo "$c" | sed 's/-/\\\\-/g')\\b" doc/ckptctl.1 || missing="$missing '$c'"
done < <("$CKPTCTL" --help | sed -n '/^Commands/,/^[A-Z]/s/^  \([a-z][a-z-]*\( [a-z][a-z-]*\)\{0,1\}\)\( .*\)\{0,1\}$/\1/p')
check man-ckptctl-commands "commands missing from ckptctl.1:$missing" [ -z "$missing" ]

# --- systemd units ---
unit=contrib/systemd/ckptd@.service
keys_missing=""
for k in '^Type=notify$' '^RuntimeDirectory=ckptd/%i$' '^RuntimeDirectoryPreserve=yes$' \
         '^ProtectSystem=strict$' '^ReadWritePaths=/run/ckptd$' '^NoNewPrivileges=yes$' \
         '^PrivateTmp=yes$' '^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$' \
         '^ExecStart=/usr/bin/ckptd --qmp /run/ckptd/%i/qmp.sock --control /run/ckptd/%i/ckptd.sock '; do
    grep -q -- "$k" "$unit" || keys_missing="$keys_missing $k"
done
check unit-keys "ckptd@.service lacks:$keys_missing" [ -z "$keys_missing" ]
check unit-vm-runtime-dir "qemu-vm@.service does not share the run directory" \
    eval "grep -q '^RuntimeDirectory=ckptd/%i$' contrib/systemd/qemu-vm@.service &&
          grep -q '^Wants=ckptd@%i.service$' contrib/systemd/qemu-vm@.service &&
          grep -q 'qmp unix:/run/ckptd/%i/qmp.sock' contrib/systemd/qemu-vm@.service"
check unit-dropin "the drop-in lacks BindsTo= and After=" \
    eval "grep -q '^BindsTo=qemu-vm@%i.service$' contrib/systemd/ckptd@.service.d/qemu-vm.conf &&
          grep -q '^After=qemu-vm@%i.service$' contrib/systemd/ckptd@.service.d/qemu-vm.conf"
if command -v systemd-analyze >/dev/null; then
    # Verify as instances, with ExecStart= pointing at binaries that exist.
    U=$T/units
    mkdir -p "$U/ckptd@.service.d"
    sed "s|/usr/bin/ckptd|$CKPTD|" "$unit" >"$U/ckptd@.service"
    sed "s|/usr/bin/qemu-system-x86_64|$(command -v "$QEMU" || echo /bin/true)|" \
        contrib/systemd/qemu-vm@.service >"$U/qemu-vm@.service"
    cp contrib/systemd/ckptd@.service.d/qemu-vm.conf "$U/ckptd@.service.d/"
    out=$(cd "$U" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no \
          "$U/ckptd@vm1.service" "$U/qemu-vm@vm1.service" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && [ -z "$out" ]; then
        pass unit-systemd-analyze
    else
        fail unit-systemd-analyze "systemd-analyze verify (exit $rc): $(echo "$out" | head -n 3 | tr '\n' ' ')"
    fi
else
    skip unit-systemd-analyze "systemd-analyze is not installed"
fi

# --- bash completion and the launcher's syntax ---
check completion-syntax "bash -n failed" bash -n contrib/bash-completion/ckptctl
comp=$(bash -c '
    _init_completion() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]};
                         words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
    _filedir() { COMPREPLY=(); }
    . contrib/bash-completion/ckptctl
    t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _ckptctl; echo "${COMPREPLY[*]}"; }
    t "$1" ""; t "$1" checkpoint ""; t "$1" checkpoint list --de
' _ "$CKPTCTL" 2>&1)
check completion-words "got: $(echo "$comp" | tr '\n' '|')" \
    eval "echo \"\$comp\" | sed -n 1p | grep -q 'checkpoint.*status' &&
          echo \"\$comp\" | sed -n 2p | grep -q 'create.*list.*delete' &&
          [ \"\$(echo \"\$comp\" | sed -n 3p)\" = --descendants ]"
check launcher-syntax "bash -n failed" bash -n contrib/launch-vm.sh
check launcher-help "launch-vm.sh --help failed" eval "contrib/launch-vm.sh --help | grep -q -- --run-dir"

finish
