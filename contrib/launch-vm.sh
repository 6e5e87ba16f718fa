#!/bin/bash
# launch-vm.sh: one QEMU and its ckptd, started together, stopped together.
#
# The run directory holds everything the pair shares:
#   qmp.sock     QEMU's QMP socket, used by ckptd only
#   ckptd.sock   ckptd's control socket (what ckptctl talks to)
#   qga.sock     with --qga: the guest agent's channel, used by ckptd
#   scratch/     backup scratch files
#   ckptd.pid, qemu.pid, ready
# The launcher starts QEMU, then ckptd with --ready-file, waits (bounded)
# until the agent is connected to QEMU, prints the control socket's path on
# stdout and stays in the foreground.  On SIGTERM, SIGINT or SIGHUP, or
# when either process ends, it stops ckptd first (SIGTERM: running backups
# are ended and their scratch files removed), then QEMU (SIGTERM: QEMU
# shuts down cleanly and stores the persistent bitmaps in the images), and
# removes the sockets and files it made.  Logs of both go to stderr.
#
# QEMU and ckptd run in their own process groups (set -m), so a Ctrl-C on
# the terminal reaches only the launcher, which then stops them in order.
set -u

usage() {
    cat <<EOF
Usage: launch-vm.sh [OPTION]... [-- QEMU-ARG...]
Start QEMU with a QMP socket and ckptd beside it; stop both in order.

  --name NAME           the VM's name (default: vm); QEMU's -name
  --run-dir DIR         sockets and state (default: \$XDG_RUNTIME_DIR/ckptd/NAME,
                        /run/ckptd/NAME for root, else /tmp/ckptd-\$USER/NAME);
                        it and the directories above it must be owned by
                        root or you and not writable by others (or sticky)
  --disk FILE           a disk image, as virtio-blk vda, vdb, ... (repeatable;
                        the format is probed with qemu-img)
  --qemu BINARY         QEMU (default: qemu-system-x86_64)
  --machine TYPE        QEMU's -machine (default: q35; "" for none)
  --accel ACCEL         QEMU's -accel (repeatable; default: kvm, then tcg)
  --ckptd BINARY        the agent (default: ckptd from PATH)
  --ckptd-config FILE   passed to ckptd as --config FILE
  --socket-group GROUP  let GROUP reach the sockets: the run directory is
                        made mode 0710 with that group, and ckptd gets
                        --socket-group GROUP (sockets 0660)
  --allow-uid UID       passed to ckptd: also serve this user (repeatable)
  --qga                 give the guest a guest-agent channel (virtio-serial,
                        org.qemu.guest_agent.0) and ckptd --qga on it, so
                        checkpoints and backups can --quiesce (the guest
                        must run qemu-ga)
  --timeout SEC         how long to wait for readiness (default: 30)
  --help                this text

Arguments after -- go to QEMU as they are (memory, kernel, network, -S...).
When ready, the control socket's path is printed on stdout, alone on a
line; use it with ckptctl --socket PATH or CKPTD_SOCKET=PATH.
Exit status: 0 after a signal or when QEMU exits 0, 1 when start-up fails,
otherwise QEMU's exit status.
EOF
}

die() { echo "launch-vm: $*" >&2; exit 1; }
say() { echo "launch-vm: $*" >&2; }

name=vm run_dir="" qemu=qemu-system-x86_64 machine=q35 ckptd="" config=""
timeout=30 group="" qga=""
disks=() accels=() allow=()
while [ $# -gt 0 ]; do
    case $1 in
    --name) name=${2?--name needs a value}; shift 2 ;;
    --run-dir) run_dir=${2?--run-dir needs a value}; shift 2 ;;
    --disk) disks+=("${2?--disk needs a value}"); shift 2 ;;
    --qemu) qemu=${2?--qemu needs a value}; shift 2 ;;
    --machine) machine=${2?--machine needs a value}; shift 2 ;;
    --accel) accels+=("${2?--accel needs a value}"); shift 2 ;;
    --ckptd) ckptd=${2?--ckptd needs a value}; shift 2 ;;
    --ckptd-config) config=${2?--ckptd-config needs a value}; shift 2 ;;
    --socket-group) group=${2?--socket-group needs a value}; shift 2 ;;
    --allow-uid) allow+=(--allow-uid "${2?--allow-uid needs a value}"); shift 2 ;;
    --timeout) timeout=${2?--timeout needs a value}; shift 2 ;;
    --qga) qga=1; shift ;;
    --help|-h) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown option '$1'" ;;
    esac
done
extra=("$@")

case $name in
''|*/*|.|..) die "invalid --name '$name'" ;;
esac
case $timeout in
''|*[!0-9]*) die "--timeout wants whole seconds" ;;
esac
if [ -z "$run_dir" ]; then
    if [ -n "${XDG_RUNTIME_DIR:-}" ]; then
        run_dir=$XDG_RUNTIME_DIR/ckptd/$name
    elif [ "$(id -u)" = 0 ]; then
        run_dir=/run/ckptd/$name
    else
        run_dir=/tmp/ckptd-$(id -un)/$name
    fi
fi
[ -n "$ckptd" ] || ckptd=$(command -v ckptd) || die "no ckptd in PATH; use --ckptd"
command -v "$qemu" >/dev/null || die "no QEMU '$qemu'; use --qemu"
[ ${#accels[@]} -gt 0 ] || accels=(kvm tcg)

qmp=$run_dir/qmp.sock
control=$run_dir/ckptd.sock
ready=$run_dir/ready

# The pid files of a previous run: refuse to start over a live pair.
for f in "$run_dir/ckptd.pid" "$run_dir/qemu.pid"; do
    if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
        die "$f: process $(cat "$f") is still running"
    fi
done
# Like ckptd itself: the run directory (before it exists, its nearest
# existing parent) and every directory above it must be owned by root or
# us and not writable by others unless sticky, or someone else could swap
# the sockets under us.
check_dir() {
    local d=$1 me owner mode
    me=$(id -u)
    while [ ! -e "$d" ]; do d=$(dirname "$d"); done
    d=$(cd "$d" 2>/dev/null && pwd -P) || die "cannot enter $d"
    while :; do
        read -r owner mode <<<"$(stat -L -c '%u %a' "$d")" || die "cannot stat $d"
        if [ "$owner" != 0 ] && [ "$owner" != "$me" ]; then
            die "refusing run directory $1: $d is owned by uid $owner, neither root nor you (uid $me)"
        fi
        if (( (8#$mode & 8#022) && !(8#$mode & 8#1000) )); then
            die "refusing run directory $1: $d can be written by others (mode $mode) and has no sticky bit"
        fi
        [ "$d" = / ] && return 0
        d=$(dirname "$d")
    done
}
check_dir "$run_dir"

if [ -n "$group" ]; then
    getent group "$group" >/dev/null || die "no group '$group'"
fi
made_dir=""
if [ ! -d "$run_dir" ]; then
    mkdir -p -m 0700 "$run_dir" || die "cannot create $run_dir"
    made_dir=1
    # Group members pass through to the sockets; they cannot list.
    if [ -n "$group" ]; then
        chgrp "$group" "$run_dir" && chmod 0710 "$run_dir" ||
            die "cannot give $run_dir to group $group"
    fi
fi
run_dir=$(cd "$run_dir" && pwd) || die "cannot enter $run_dir"
qmp=$run_dir/qmp.sock control=$run_dir/ckptd.sock ready=$run_dir/ready
qga_sock=$run_dir/qga.sock
rm -f "$qmp" "$control" "$ready" "$qga_sock"

# QEMU's command line: the QMP socket for ckptd and one virtio-blk device
# per disk, as -blockdev file + format nodes (vda-file, vda-fmt).
args=(-name "$name" -nodefaults -display none
      -qmp "unix:$qmp,server=on,wait=off"
      -pidfile "$run_dir/qemu.pid")
[ -n "$machine" ] && args+=(-machine "$machine")
[ -n "$qga" ] && args+=(-device virtio-serial-pci
                        -chardev "socket,id=qga0,path=$qga_sock,server=on,wait=off"
                        -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0)
for a in "${accels[@]}"; do args+=(-accel "$a"); done
letters=abcdefghijklmnopqrstuvwxyz
i=0
for d in "${disks[@]}"; do
    [ -f "$d" ] || [ -b "$d" ] || die "no disk image '$d'"
    [ $i -lt 26 ] || die "too many disks"
    id=vd${letters:$i:1}
    path=$(cd "$(dirname "$d")" && pwd)/$(basename "$d")
    fmt=$(qemu-img info -U --output=json "$path" 2>/dev/null |
          sed -n 's/^    "format": "\([a-z0-9]*\)".*/\1/p' | head -n 1)
    [ -n "$fmt" ] || case $d in *.qcow2) fmt=qcow2 ;; *) fmt=raw ;; esac
    args+=(-blockdev "driver=file,filename=$path,node-name=$id-file"
           -blockdev "driver=$fmt,file=$id-file,node-name=$id-fmt"
           -device "virtio-blk-pci,drive=$id-fmt,id=$id")
    i=$((i + 1))
done

qpid="" apid="" stopping="" status=0

# Stops a process with SIGTERM, then SIGKILL after $2 seconds.
stop_pid() {
    local pid=$1 grace=$2 n=0
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do
        if [ $n -ge $((grace * 10)) ]; then
            say "process $pid did not stop in ${grace}s, killing it"
            kill -KILL "$pid" 2>/dev/null
            break
        fi
        sleep 0.1
        n=$((n + 1))
    done
    wait "$pid" 2>/dev/null
}

teardown() {
    trap '' TERM INT HUP
    if [ -n "$apid" ]; then
        stop_pid "$apid" 60          # ckptd first: it ends backups over QMP
        apid=""
    fi
    if [ -n "$qpid" ]; then
        stop_pid "$qpid" 30
        qpid=""
    fi
    rm -f "$qmp" "$control" "$ready" "$run_dir/ckptd.pid" "$run_dir/qemu.pid" \
          "$run_dir/ckptd-nbd.sock" "$qga_sock"
    rmdir "$run_dir/scratch" 2>/dev/null
    [ -n "$made_dir" ] && rmdir "$run_dir" 2>/dev/null
    return 0
}
trap 'teardown; exit $status' EXIT
trap 'stopping=1' TERM INT HUP

set -m                                  # children in their own process groups
"$qemu" "${args[@]}" "${extra[@]}" </dev/null &
qpid=$!
cargs=(--qmp "$qmp" --control "$control" --scratch-dir "$run_dir/scratch"
       --ready-file "$ready" --pidfile "$run_dir/ckptd.pid")
[ -n "$config" ] && cargs=(--config "$config" "${cargs[@]}")
[ -n "$group" ] && cargs+=(--socket-group "$group")
[ -n "$qga" ] && cargs+=(--qga "$qga_sock")
cargs+=("${allow[@]}")
"$ckptd" "${cargs[@]}" </dev/null &
apid=$!
set +m

# Readiness: ckptd creates the ready file once QEMU is connected.
n=0
while [ ! -e "$ready" ]; do
    if [ -n "$stopping" ]; then status=0; exit; fi
    kill -0 "$qpid" 2>/dev/null || { wait "$qpid"; say "QEMU exited with status $? during start-up"; status=1; exit; }
    kill -0 "$apid" 2>/dev/null || { wait "$apid"; say "ckptd exited with status $? during start-up"; status=1; exit; }
    if [ $n -ge $((timeout * 10)) ]; then
        say "ckptd not ready after ${timeout}s"
        status=1
        exit
    fi
    sleep 0.1
    n=$((n + 1))
done
say "$name is up: QEMU pid $qpid, ckptd pid $apid"
echo "$control"

# Until a signal, or until QEMU or ckptd ends.
while [ -z "$stopping" ]; do
    wait -n "$qpid" "$apid" 2>/dev/null
    rc=$?
    [ -n "$stopping" ] && break
    if ! kill -0 "$qpid" 2>/dev/null; then
        wait "$qpid" 2>/dev/null; status=$?
        [ $status -eq 127 ] && status=$rc
        qpid=""
        say "QEMU exited with status $status"
        break
    fi
    if ! kill -0 "$apid" 2>/dev/null; then
        wait "$apid" 2>/dev/null; rc=$?
        apid=""
        say "ckptd exited with status $rc; stopping QEMU"
        status=1
        break
    fi
done
[ -n "$stopping" ] && say "stopping $name"
exit
