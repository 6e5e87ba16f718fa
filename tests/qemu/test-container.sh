#!/bin/bash
# contrib/container/ for real, under podman (rootful, runc, cgroupfs):
# the Containerfile built on a Debian 12 base made here with mmdebstrap
# (no registry needed) with the package `make deb` builds, then
#  1. one container: launch-vm.sh runs QEMU and ckptd, the run directory a
#     volume; from the host, ckptctl pulls a full and an incremental
#     backup through the shared sockets; `podman stop` with a backup
#     running: ckptd ends it and exits before QEMU is stopped;
#  2. two containers sharing the run directory: QEMU in one, ckptd in the
#     other (started first: it waits for the QMP socket); an incremental
#     pull from the host; stopping the ckptd container leaves QEMU with no
#     job, export, scratch node or temporary bitmap; then QEMU's.
# Data: each pulled chain equals its disk (qemu-img compare, after guest
# writes injected through a second QMP socket), the images hold exactly the
# checkpoints' bitmaps, nothing is left (no container, volume, process,
# socket, scratch file).
# The base image, the QEMU layer and podman's storage are cached in
# $CKPTD_ROOT_CACHE/podman (default /var/cache/ckptd-ci); a run then
# takes about a minute (the first one needs the Debian mirror).  Skipped
# when not root, in the sanitizer run (the image holds the plain
# package), in a chroot (the Debian 13 run) and without podman or runc
# (CKPTD_DEPS_CONTAINER=1 make deps installs them).
. "$(dirname "$0")/shtest.sh"
SHTEST_TIMEOUT=${SHTEST_TIMEOUT:-600}
shtest_init

skip_all() {
    skip container "$1"
    finish
    exit 0
}
[ "$(id -u)" = 0 ] || skip_all "not root: the test runs rootful podman"
[ "$BUILD" = build-asan ] &&
    skip_all "the image holds the package, always a plain build; covered by the plain run"
# podman cannot run containers from a chroot: the Debian 13 root of
# scripts/trixie-root.sh (its marker file), or any root other than PID 1's
# (when /proc/1/root can be read at all).
[ -e /.ckptd-root ] &&
    skip_all "in the Debian 13 root of scripts/trixie-root.sh, a chroot: podman cannot run containers there"
root_id=$(stat -L -c %d:%i / 2>/dev/null)
init_root_id=$(stat -L -c %d:%i /proc/1/root/ 2>/dev/null) || init_root_id=$root_id
[ "$root_id" = "$init_root_id" ] || skip_all "in a chroot: podman cannot run containers here"
command -v podman >/dev/null ||
    skip_all "podman not installed (CKPTD_DEPS_CONTAINER=1 make deps installs podman and runc)"
command -v runc >/dev/null ||
    skip_all "runc not installed (CKPTD_DEPS_CONTAINER=1 make deps installs it); crun refuses this machine's mixed cgroups"
command -v dpkg-buildpackage >/dev/null || skip_all "no dpkg-buildpackage: cannot build the package"

CACHE=${CKPTD_ROOT_CACHE:-/var/cache/ckptd-ci}
MIRROR=${CKPTD_MIRROR:-http://deb.debian.org/debian}
STORE=$CACHE/podman
BASE=localhost/ckptd-ci/debian:bookworm
IMG=localhost/ckptd-ci/ckptd-vm:test
QMP_SEND=$BIN/qmp-send
# Our own configuration: runc with cgroupfs (this machine mixes cgroup v1
# and v2), no default ulimits, logs in files (no journald needed).
cat >"$T/containers.conf" <<'EOF'
[containers]
default_ulimits = []
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
EOF
export CONTAINERS_CONF=$T/containers.conf
pm() { podman --root "$STORE/storage" --runroot /run/ckptd-ci-podman "$@"; }

# Containers of this run: removed whatever the way out.
PREFIX=ckptd-ci-$$
started=""
remove_containers() {
    local c
    for c in $started; do pm rm -f -v "$c" >/dev/null 2>&1; done
    started=""
}
trap 'remove_containers; cleanup' EXIT

# One run at a time builds and uses the tag.
mkdir -p "$STORE"
exec 9>"$STORE/.lock"
flock -w 300 9 || { fail container-lock "another run holds $STORE/.lock"; finish; exit 1; }

secs() { echo $(( $(date +%s) - $1 )); }
t0=$(date +%s)
if ! pm image exists "$BASE" 2>/dev/null; then
    if ! command -v mmdebstrap >/dev/null && ! scripts/deps.sh mmdebstrap >"$T/deps.log" 2>&1; then
        fail container-base "no mmdebstrap, and scripts/deps.sh could not install it"
        tail_log "$T/deps.log"
        finish
        exit 1
    fi
    if mmdebstrap --quiet --variant=minbase bookworm "$T/base.tar" "$MIRROR" >"$T/base.log" 2>&1 &&
       pm import "$T/base.tar" "$BASE" >>"$T/base.log" 2>&1; then
        note "base image $BASE made in $(secs "$t0") s"
    else
        fail container-base "cannot make the base image"
        tail_log "$T/base.log"
        finish
        exit 1
    fi
    rm -f "$T/base.tar"
fi

# The package, without its unit tests (test-deb.sh runs them), and the
# image from it; podman's layer cache keeps the QEMU layer between runs.
# The package is kept too, under the hash of the files `make deb` copies
# (contents and names only), so that a second run on the same tree skips
# its build.
t1=$(date +%s)
key=$(tar -cf - --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
          --exclude=./.git --exclude=./build --exclude='./build-*' . | sha256sum | cut -c1-16)
mkdir -p "$STORE/deb" "$T/ctx"
if [ -f "$STORE/deb/$key/done" ]; then
    cp "$STORE/deb/$key"/ckptd_*.deb "$T/ctx/"
    note "package of this tree from $STORE/deb/$key"
elif DEB_BUILD_OPTIONS="nocheck parallel=2" make --no-print-directory -C "$ROOT" \
       BUILD="$T/debbuild" deb >"$T/deb.log" 2>&1; then
    cp "$T"/debbuild/deb/ckptd_*.deb "$T/ctx/" && rm -rf "$T/debbuild"
    rm -rf "$STORE/deb"/* && mkdir "$STORE/deb/$key" &&
        cp "$T"/ctx/ckptd_*.deb "$STORE/deb/$key/" && touch "$STORE/deb/$key/done"
else
    fail container-deb "make deb failed"
    tail_log "$T/deb.log"
    finish
    exit 1
fi
t2=$(date +%s)
if pm build --format docker --network host --build-arg BASE="$BASE" \
       -f contrib/container/Containerfile -t "$IMG" "$T/ctx" >"$T/build.log" 2>&1; then
    pass container-build
    pm image prune -f >/dev/null 2>&1
else
    fail container-build "podman build failed"
    tail_log "$T/build.log" 20
    finish
    exit 1
fi
note "package $(secs "$t1") s, image $(secs "$t2") s"

make_disk "$T/vda.qcow2" 64M && make_disk "$T/vdb.qcow2" 32M &&
    qemu-io -f qcow2 -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 8M 64k' "$T/vda.qcow2" >/dev/null &&
    qemu-io -f qcow2 -c 'write -P 0x11 1M 1M' "$T/vdb.qcow2" >/dev/null ||
    { fail setup "cannot create the disks"; finish; exit 1; }
B=$T/backups
volumes_before=$(pm volume ls -q | sort)

# run NAME ARGS...: a detached container; the whole test directory is a
# volume at the same path, so that the paths ckptd reports (the NBD
# socket, the scratch files) mean the same on the host.
run() {
    local name=$PREFIX-$1
    shift
    started="$started $name"
    pm run -d --name "$name" --network none -v "$T:$T" "$@" >/dev/null 2>>"$T/podman.err"
}
# w SOCKET DISK WRITE...: a guest write, through the device (HMP qemu-io).
w() {
    local sock=$1 disk=$2 hmp
    shift 2
    hmp=$(printf '{"command-line": "qemu-io -d %s/virtio-backend \\"%s\\""}' "$disk" "$*")
    "$QMP_SEND" --hmp-ok "$sock" human-monitor-command "$hmp" >/dev/null
}
# exit_code NAME: the container's exit code.
exit_code() { pm inspect --format '{{.State.ExitCode}}' "$PREFIX-$1" 2>/dev/null; }
# in_order FILE REGEX...: lines matching each REGEX in turn, each after the
# line the previous one matched.
in_order() {
    local f=$1 prev=0 n
    shift
    for re in "$@"; do
        n=$(tail -n +$((prev + 1)) "$f" | grep -n -E -m 1 -- "$re" | cut -d: -f1)
        [ -n "$n" ] || return 1
        prev=$((prev + n))
    done
}
# bitmaps IMAGE: the bitmap names stored in a qcow2 file, sorted, one a line.
bitmaps() {
    qemu-img info -U --output=json "$1" | sed -n 's/^ *"name": "\(.*\)",$/\1/p' | sort
}
# only_checkpoints IMAGE NAME...: the image's bitmaps are exactly the
# checkpoints' (NAME, plus ckptd's record bitmaps "ckptd1:..."): no
# temporary bitmap of a backup ("ckptd:JOB:DISK") left.
only_checkpoints() {
    local img=$1 got want
    shift
    got=$(bitmaps "$img" | grep -v '^ckptd1:' | tr '\n' ' ')
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
    [ "$got" = "$want" ] && ! bitmaps "$img" | grep -q '^ckptd:'
}
same() { qemu-img compare "$1" "$2" >>"$T/compare.err" 2>&1; }
# temp_bitmaps SOCKET: QEMU holds a backup's temporary bitmap ("ckptd:JOB:DISK").
temp_bitmaps() {
    "$QMP_SEND" "$1" query-named-block-nodes '{"flat": true}' 2>/dev/null |
        grep -q '"name": *"ckptd:'
}
no_sockets() { [ -z "$(find "$1" -type s 2>/dev/null)" ]; }

# --- 1. one container: launch-vm.sh starts QEMU and ckptd ---
R=$T/run1
ctl=("$CKPTCTL" --socket "$R/ckptd.sock" --timeout 30)
t3=$(date +%s)
run one -e CKPTD_SOCKET="$R/ckptd.sock" "$IMG" --run-dir "$R" \
    --disk "$T/vda.qcow2" --disk "$T/vdb.qcow2" --timeout 60 -- \
    -S -qmp "unix:$T/inject1.sock,server=on,wait=off"
if wait_for 60 test -e "$R/ready"; then
    pass one-ready
    note "container up in $(secs "$t3") s"
else
    fail one-ready "no $R/ready within 60 s"
    pm logs "$PREFIX-one" 2>&1 | tail -n 20 | sed 's/^/# /'
    finish
    exit 1
fi
# The image's HEALTHCHECK (ckptctl status inside the container).
check one-healthcheck "podman healthcheck run: $(pm healthcheck run "$PREFIX-one" 2>&1 | tail -n 1)" \
    pm healthcheck run "$PREFIX-one"
# The control socket, made in the container, from the host.
status=$("${ctl[@]}" status 2>&1)
check one-status-from-host "status: $status" eval "echo \"\$status\" | grep -qx 'qemu: connected'"
if "${ctl[@]}" pull --output "$B" --checkpoint c1 >"$T/pull-c1.out" 2>&1; then
    pass one-pull-full
else
    fail one-pull-full "$(tail -n 2 "$T/pull-c1.out" | tr '\n' ' ')"
fi
if w "$T/inject1.sock" vda write -P 0x5a 2M 192k && w "$T/inject1.sock" vda write -z 0 64k &&
   w "$T/inject1.sock" vdb write -P 0x77 20M 1M; then
    pass one-guest-writes
else
    fail one-guest-writes "a write through $T/inject1.sock failed"
fi
if "${ctl[@]}" pull --output "$B" --incremental c1 --checkpoint c2 >"$T/pull-c2.out" 2>&1; then
    pass one-pull-incremental
else
    fail one-pull-incremental "$(tail -n 2 "$T/pull-c2.out" | tr '\n' ' ')"
fi
# Stop with an incremental backup running: its scratch files are in the
# volume, its temporary bitmaps in QEMU.
"${ctl[@]}" backup begin --incremental c1 >"$T/begin1.out" 2>&1
check one-backup-running "backup begin: $(head -n 1 "$T/begin1.out"); scratch: $(ls "$R/scratch" 2>&1)" \
    eval "[ -n \"\$(ls '$R/scratch' 2>/dev/null)\" ] && temp_bitmaps '$T/inject1.sock'"

t4=$(date +%s)
pm stop -t 90 "$PREFIX-one" >/dev/null 2>>"$T/podman.err"
note "podman stop took $(secs "$t4") s"
pm logs "$PREFIX-one" >"$T/one.log" 2>&1
check one-stop-exit "the container exited $(exit_code one), expected 0" [ "$(exit_code one)" = 0 ]
# SIGTERM reaches the launcher; ckptd ends the backup and exits, then QEMU
# gets its SIGTERM.
check one-stop-order "ckptd's SIGTERM, backup end and exit, then QEMU's SIGTERM: not in that order in the log" \
    in_order "$T/one.log" 'launch-vm: stopping' 'ckptd.*signal 15: ending 1 backups' \
        'ckptd.*removed scratch file' 'ckptd.*backup .* ended: cancelled' 'ckptd.*exited' \
        'terminating on signal 15'
pm rm -v "$PREFIX-one" >/dev/null 2>>"$T/podman.err"
check one-no-container "left: $(pm ps -a -q --filter name="$PREFIX-one")" \
    eval "[ -z \"\$(pm ps -a -q --filter name='$PREFIX-one')\" ]"
check one-run-dir-removed "the run directory is still there: $(ls -A "$R" 2>&1 | tr '\n' ' ')" test ! -e "$R"
check one-no-socket "sockets left: $(find "$T" -type s | tr '\n' ' ')" no_sockets "$T"
for d in vda vdb; do
    check "one-$d-pulled-equals-disk" "$B/$d.c2.inc.qcow2 (on $d.c1.full.qcow2): $(tail -n 1 "$T/compare.err" 2>/dev/null)" \
        same "$T/$d.qcow2" "$B/$d.c2.inc.qcow2"
    check "one-$d-bitmaps" "bitmaps in $d.qcow2: $(bitmaps "$T/$d.qcow2" | tr '\n' ' ')" \
        only_checkpoints "$T/$d.qcow2" c1 c2
done
# The incremental holds what changed only (a lost bitmap would make it full).
check one-incremental-small "vda.c2.inc.qcow2 is $(stat -c %s "$B/vda.c2.inc.qcow2" 2>/dev/null) bytes for 256 KiB of writes" \
    eval "[ \"\$(stat -c %s '$B/vda.c2.inc.qcow2')\" -lt $((1 << 20)) ]"

# --- 2. two containers: QEMU in one, ckptd in the other ---
R=$T/run2
mkdir -m 0700 "$R"
ctl=("$CKPTCTL" --socket "$R/ckptd.sock" --timeout 30)
# ckptd first: it waits for QEMU's socket.
run agent --no-healthcheck --entrypoint ckptd "$IMG" --qmp "$R/qmp.sock" --control "$R/ckptd.sock" \
    --scratch-dir "$R/scratch" --ready-file "$R/ready"
run qemu --no-healthcheck --entrypoint qemu-system-x86_64 "$IMG" -machine q35 -accel tcg -S -nodefaults \
    -display none -qmp "unix:$R/qmp.sock,server=on,wait=off" \
    -qmp "unix:$T/inject2.sock,server=on,wait=off" \
    -blockdev "driver=file,filename=$T/vda.qcow2,node-name=vda-file" \
    -blockdev "driver=qcow2,file=vda-file,node-name=vda-fmt" \
    -device "virtio-blk-pci,drive=vda-fmt,id=vda"
if wait_for 60 test -e "$R/ready"; then
    pass two-ready
else
    fail two-ready "no $R/ready within 60 s"
    pm logs "$PREFIX-agent" 2>&1 | tail -n 10 | sed 's/^/# /'
    pm logs "$PREFIX-qemu" 2>&1 | tail -n 10 | sed 's/^/# /'
    finish
    exit 1
fi
# The checkpoints the first run stored in the image.
list=$("${ctl[@]}" checkpoint list 2>&1 | awk '{ print $1 }' | tr '\n' ' ')
check two-checkpoints-from-image "checkpoint list: $list" eval "echo '$list' | grep -q 'c1 c2'"
if w "$T/inject2.sock" vda write -P 0x3c 30M 128k && w "$T/inject2.sock" vda write -P 0x3d 2M 4k; then
    pass two-guest-writes
else
    fail two-guest-writes "a write through $T/inject2.sock failed"
fi
if "${ctl[@]}" pull --output "$B" --disk vda --incremental c2 --checkpoint c3 >"$T/pull-c3.out" 2>&1; then
    pass two-pull-incremental
else
    fail two-pull-incremental "$(tail -n 2 "$T/pull-c3.out" | tr '\n' ' ')"
fi
# A scratch file made by ckptd's container and opened by QEMU's.
"${ctl[@]}" backup begin --incremental c2 >"$T/begin2.out" 2>&1
check two-backup-running "backup begin: $(head -n 1 "$T/begin2.out"); scratch: $(ls "$R/scratch" 2>&1)" \
    eval "[ -n \"\$(ls '$R/scratch' 2>/dev/null)\" ] && temp_bitmaps '$T/inject2.sock'"

# The ckptd container first: it ends the backup while QEMU is there.
pm stop -t 60 "$PREFIX-agent" >/dev/null 2>>"$T/podman.err"
pm logs "$PREFIX-agent" >"$T/agent.log" 2>&1
check two-agent-exit "the ckptd container exited $(exit_code agent), expected 0" [ "$(exit_code agent)" = 0 ]
check two-agent-log "no SIGTERM, backup end and exit in ckptd's log" \
    in_order "$T/agent.log" 'signal 15: ending 1 backups' 'removed scratch file' \
        'backup .* ended: cancelled' 'info: exited'
# What QEMU has left, asked through the second QMP socket.
q() { "$QMP_SEND" "$T/inject2.sock" "$@" 2>&1; }
jobs=$(q query-block-jobs) exports=$(q query-block-exports)
nodes=$(q query-named-block-nodes '{"flat": true}')
names=$(echo "$nodes" | grep -o '"node-name": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/' | sort -u | tr '\n' ' ')
check two-qemu-no-job "block jobs: $jobs" eval "[ \"\$(echo \"\$jobs\" | tr -d ' \n')\" = '[]' ]"
check two-qemu-no-export "exports: $exports" eval "[ \"\$(echo \"\$exports\" | tr -d ' \n')\" = '[]' ]"
check two-qemu-no-scratch-node "nodes: $names" [ "$names" = "vda-file vda-fmt " ]
check two-qemu-no-temp-bitmap "a temporary bitmap left: $(echo "$nodes" | grep -o '"name": *"ckptd:[^"]*"' | head -n 1)" \
    eval "! temp_bitmaps '$T/inject2.sock'"
check two-no-scratch-file "scratch: $(ls -A "$R/scratch" 2>&1)" eval "[ -z \"\$(ls -A '$R/scratch' 2>/dev/null)\" ]"
check two-agent-sockets-gone "left by ckptd: $(cd "$R" && ls ckptd.sock ckptd-nbd.sock 2>/dev/null | tr '\n' ' ')" \
    eval "[ ! -e '$R/ckptd.sock' ] && [ ! -e '$R/ckptd-nbd.sock' ]"

pm stop -t 30 "$PREFIX-qemu" >/dev/null 2>>"$T/podman.err"
pm logs "$PREFIX-qemu" >"$T/qemu.log" 2>&1
check two-qemu-exit "the QEMU container exited $(exit_code qemu), expected 0" [ "$(exit_code qemu)" = 0 ]
check two-qemu-sigterm "QEMU's log has no 'terminating on signal 15'" grep -q 'terminating on signal 15' "$T/qemu.log"
pm rm -v "$PREFIX-agent" "$PREFIX-qemu" >/dev/null 2>>"$T/podman.err"
check two-no-container "left: $(pm ps -a -q --filter name="$PREFIX-" | tr '\n' ' ')" \
    eval "[ -z \"\$(pm ps -a -q --filter name='$PREFIX-')\" ]"
started=""
check two-no-socket "sockets left: $(find "$T" -type s | tr '\n' ' ')" no_sockets "$T"
check two-vda-pulled-equals-disk "$B/vda.c3.inc.qcow2: $(tail -n 1 "$T/compare.err" 2>/dev/null)" \
    same "$T/vda.qcow2" "$B/vda.c3.inc.qcow2"
check two-vda-bitmaps "bitmaps in vda.qcow2: $(bitmaps "$T/vda.qcow2" | tr '\n' ' ')" \
    only_checkpoints "$T/vda.qcow2" c1 c2 c3

# Nothing of ours anywhere: no volume, no process naming the test directory.
check container-no-volume "volumes left: $(comm -13 <(echo "$volumes_before") <(pm volume ls -q | sort) | tr '\n' ' ')" \
    eval "[ \"\$(pm volume ls -q | sort)\" = \"\$volumes_before\" ]"
check container-no-process "processes left: $(pgrep -a -f -- "$T/" | grep -v "^$$ " | tr '\n' ' ')" \
    eval "[ -z \"\$(pgrep -f -- '$T/' | grep -vx $$)\" ]"
note "the test took $(secs "$t0") s"
# (podman logs an error for each health-check timer it cannot give systemd.)
[ "$failed" -gt 0 ] && { tail_log "$T/one.log" 20; grep -v "systemd connection" "$T/podman.err" | tail -n 10 | sed "s/^/# /"; }
finish
