#!/bin/bash
# contrib/launch-vm.sh end to end, in the layout the container example uses
# (a run directory with the sockets, disks passed with --disk, stop by
# SIGTERM): start with two disks, status, checkpoint, pull, stop; then no
# process and no socket may remain.  Also: QEMU exiting ends the launcher
# and the agent, and a failed start leaves nothing behind.
. "$(dirname "$0")/shtest.sh"
shtest_init

L=contrib/launch-vm.sh
make_disk "$T/vda.qcow2" 64M && make_disk "$T/vdb.qcow2" 32M &&
    qemu-io -f qcow2 -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 8M 64k' "$T/vda.qcow2" >/dev/null &&
    qemu-io -f qcow2 -c 'write -P 0x11 1M 1M' "$T/vdb.qcow2" >/dev/null ||
    { fail setup "cannot create the disks"; finish; exit 1; }

# nothing_left DIR: no process mentions DIR, no socket under DIR.
nothing_left() {
    local procs socks
    procs=$(pgrep -a -f -- "$1" | grep -v "^$$ " || true)
    socks=$(find "$1" -type s 2>/dev/null)
    if [ -n "$procs$socks" ]; then
        echo "$procs $socks" | tr '\n' ' '
        return 1
    fi
}

# start_launcher VAR RUNDIR ARGS...: the launcher in the background; it
# prints the control socket on stdout (RUNDIR.out) once ready.
start_launcher() {
    local var=$1 run=$2
    shift 2
    spawn "$var" "$L" --name shtest --run-dir "$run" --ckptd "$CKPTD" --qemu "$QEMU" \
        "$@" >"$run.out" 2>"$run.err"
}

# --- 1. the whole life: start, status, checkpoint, pull, stop ---
R=$T/run1
start_launcher LP "$R" --disk "$T/vda.qcow2" --disk "$T/vdb.qcow2" --qga --timeout 30 -- -S
if wait_for 40 test -s "$R.out"; then
    sock=$(head -n 1 "$R.out")
    check launcher-ready "printed '$sock', expected $R/ckptd.sock" [ "$sock" = "$R/ckptd.sock" ]
else
    fail launcher-ready "no control socket printed within 40 s"
    tail_log "$R.err"
    finish
    exit 1
fi
check launcher-run-dir "run directory lacks qmp.sock, ckptd.sock or the pid files" \
    eval "test -S '$R/qmp.sock' && test -S '$R/ckptd.sock' && test -s '$R/ckptd.pid' && test -s '$R/qemu.pid'"
ctl=("$CKPTCTL" --socket "$R/ckptd.sock" --timeout 30)
ctl_status "$R/ckptd.sock"
check launcher-status "ckptctl status exited $ctl_rc" [ "$ctl_rc" = 0 ]
# --qga: the guest-agent channel in QEMU, and ckptd on it.
qga_connected() {
    "$CKPTCTL" --socket "$R/ckptd.sock" status 2>&1 | grep -qx 'guest agent: connected'
}
check launcher-qga "no qga.sock, or the agent never reached the guest agent's channel" \
    eval "test -S '$R/qga.sock' && wait_for 20 qga_connected"
disks=$("${ctl[@]}" --json disks 2>&1)
check launcher-disks "disks: $disks" eval "echo '$disks' | grep -q '\"vda\"' && echo '$disks' | grep -q '\"vdb\"'"
if "${ctl[@]}" checkpoint create c1 >"$T/c1.out" 2>&1 &&
   "${ctl[@]}" checkpoint list | grep -q '^c1 '; then
    pass launcher-checkpoint
else
    fail launcher-checkpoint "$(head -n 1 "$T/c1.out")"
fi

if "$CKPTCTL" pull --help >/dev/null 2>&1; then
    if "${ctl[@]}" pull --output "$T/backup" --checkpoint c2 >"$T/pull.out" 2>&1; then
        pass launcher-pull
        # The guest is stopped (-S): the backup equals the disk now.
        for d in vda vdb; do
            f=$(ls "$T/backup/$d".*full.qcow2 2>/dev/null | head -n 1)
            if [ -n "$f" ] && qemu-img compare -q -U "$T/$d.qcow2" "$f" 2>"$T/cmp.err"; then
                pass "launcher-pull-$d-equal"
            else
                fail "launcher-pull-$d-equal" "backup '$f' differs from the disk: $(head -n 1 "$T/cmp.err")"
            fi
        done
    else
        fail launcher-pull "$(tail -n 2 "$T/pull.out" | tr '\n' ' ')"
    fi
    check launcher-pull-checkpoint "checkpoint c2 not created by the pull" \
        eval "'${ctl[0]}' --socket '$R/ckptd.sock' checkpoint list | grep -q '^c2 '"
else
    skip launcher-pull "this ckptctl has no 'pull' command"
fi

# Stop with a backup running: ckptd must end it while QEMU is still there.
if "${ctl[@]}" backup begin >"$T/begin.out" 2>&1; then
    pass launcher-backup-begin
else
    fail launcher-backup-begin "$(head -n 1 "$T/begin.out")"
fi

kill -TERM "$LP"
if wait_exit "$LP" 60; then
    check launcher-stop-status "launcher exited $exit_status after SIGTERM" [ "$exit_status" = 0 ]
else
    fail launcher-stop-status "launcher still running 60 s after SIGTERM"
fi
left=$(nothing_left "$R")
check launcher-nothing-left "left: $left" [ -z "$left" ]
check launcher-run-dir-removed "the run directory it created is still there" test ! -e "$R"
# ckptd stops first (it ends backups over QMP), QEMU second.
a=$(grep -n 'ckptd.*exited' "$R.err" | head -n 1 | cut -d: -f1)
q=$(grep -n 'terminating on signal' "$R.err" | head -n 1 | cut -d: -f1)
check launcher-stop-order "ckptd's exit at line ${a:-none}, QEMU's at line ${q:-none} of the log" \
    eval "[ -n '$a' ] && [ -n '$q' ] && [ '$a' -lt '$q' ]"
# The backup was ended (by ckptd, over QMP) before QEMU was stopped; its
# scratch file went with the run directory (checked above).
b=$(grep -n 'ckptd.*backup .* ended' "$R.err" | head -n 1 | cut -d: -f1)
check launcher-backup-ended "backup end at line ${b:-none}, QEMU's exit at line ${q:-none} of the log" \
    eval "[ -n '$b' ] && [ -n '$q' ] && [ '$b' -lt '$q' ]"
[ "$failed" -gt 0 ] && tail_log "$R.err" 30

# --- 2. QEMU goes away: the launcher stops the agent and exits ---
R=$T/run2
mkdir -m 0700 "$R"
start_launcher LP2 "$R" --disk "$T/vda.qcow2" --timeout 30 -- -S
if wait_for 40 test -s "$R.out"; then
    kill -TERM "$(cat "$R/qemu.pid")"
    if wait_exit "$LP2" 30; then
        check launcher-qemu-exit "launcher exited $exit_status when QEMU quit" [ "$exit_status" = 0 ]
    else
        fail launcher-qemu-exit "launcher still running 30 s after QEMU quit"
    fi
    left=$(nothing_left "$R")
    check launcher-qemu-exit-nothing-left "left: $left" [ -z "$left" ]
    check launcher-keeps-given-dir "removed a run directory it did not create" test -d "$R"
else
    fail launcher-qemu-exit "not ready within 40 s"
    tail_log "$R.err"
fi

# --- 3. the agent fails at start-up: exit 1, QEMU stopped, nothing left ---
R=$T/run3
start_launcher LP3 "$R" --ckptd /bin/false --disk "$T/vdb.qcow2" --timeout 30 -- -S
if wait_exit "$LP3" 40; then
    check launcher-start-failure "launcher exited $exit_status, expected 1" [ "$exit_status" = 1 ]
else
    fail launcher-start-failure "launcher still running 40 s after a failed start"
fi
left=$(nothing_left "$R")
check launcher-start-failure-nothing-left "left: $left" [ -z "$left" ]

finish
