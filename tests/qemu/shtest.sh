# Shared by the shell tests tests/qemu/test-*.sh (sourced, not run).
#
# Each test prints "PASS name", "FAIL name: reason" or "SKIP name: reason"
# lines and ends with "N passed, N failed" (", N skipped" when some were;
# tests/run-tests.sh adds those up); notes start with "# ".  Every process a test starts goes through
# spawn (or is added to $pids), and everything is killed and the temporary
# directory removed on exit, whatever the way out: a failed check, a signal,
# or the watchdog ($SHTEST_TIMEOUT seconds, default 120).

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
case $BUILD in /*) BIN=$BUILD ;; *) BIN=$ROOT/$BUILD ;; esac
CKPTD=${CKPTD:-$BIN/ckptd}
CKPTCTL=${CKPTCTL:-$BIN/ckptctl}
QEMU=${QEMU:-qemu-system-x86_64}
ACCEL=${HQ_ACCEL:--accel kvm -accel tcg}

passed=0
failed=0
skipped=0
pids=""
T=""
watchdog=""

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }
note() { echo "# $*"; }

# check NAME REASON COMMAND...: PASS when COMMAND succeeds.
check() {
    local name=$1 reason=$2
    shift 2
    if "$@"; then pass "$name"; else fail "$name" "$reason"; fi
}

# The summary line; the exit status says whether anything failed.
finish() {
    if [ "$skipped" -gt 0 ]; then
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
    [ "$failed" -eq 0 ]
}

# The make variables that keep a nested make on this test's build.
make_vars() {
    echo "BUILD=$BUILD"
    [ "$BUILD" = build-asan ] && echo "SANITIZE=1"
}

cleanup() {
    local p n
    trap - EXIT INT TERM HUP
    [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
    for p in $pids; do kill -TERM "$p" 2>/dev/null; done
    for n in $(seq 50); do
        local alive=""
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
    # Processes started by what we started (a launcher's QEMU and agent)
    # carry the temporary directory on their command lines.
    if [ -n "$T" ]; then
        for p in $(pgrep -f -- "$T/" 2>/dev/null); do
            [ "$p" != $$ ] && kill -KILL "$p" 2>/dev/null
        done
        rm -rf "$T"
    fi
}

# shtest_init: the temporary directory $T, traps and the watchdog.
shtest_init() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/ckptd-shtest-XXXXXX") || exit 1
    trap 'cleanup' EXIT
    trap 'echo "FAIL signal: interrupted"; failed=$((failed + 1)); finish; exit 1' INT TERM HUP
    # The watchdog's sleep dies with it (cleanup TERMs the subshell).
    (
        trap 'kill "$s" 2>/dev/null; exit 0' TERM
        sleep "${SHTEST_TIMEOUT:-120}" &
        s=$!
        wait "$s" && kill -TERM $$
    ) 2>/dev/null &
    watchdog=$!
}

# spawn VAR COMMAND...: runs COMMAND in the background, its pid in VAR.
spawn() {
    local var=$1
    shift
    "$@" &
    eval "$var=$!"
    pids="$pids $!"
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
    local tries=$(($1 * 10))
    shift
    while ! "$@"; do
        tries=$((tries - 1))
        [ "$tries" -le 0 ] && return 1
        sleep 0.1
    done
}

# wait_exit PID SECONDS: waits for PID to end; its status in $exit_status.
wait_exit() {
    local pid=$1
    if ! wait_for "$2" eval "! kill -0 $pid 2>/dev/null"; then
        exit_status=timeout
        return 1
    fi
    wait "$pid" 2>/dev/null
    exit_status=$?
    return 0
}

# make_disk FILE SIZE: a qcow2 image.
make_disk() {
    qemu-img create -q -f qcow2 "$1" "$2"
}

# start_qemu VAR DIR DISK...: QEMU with CPUs stopped, QMP at DIR/qmp.sock
# and each qcow2 DISK as vda, vdb, ...; output in DIR/qemu.log.
start_qemu() {
    local var=$1 dir=$2 i=0 id
    shift 2
    local args=(-machine q35 $ACCEL -S -nodefaults -display none
                -qmp "unix:$dir/qmp.sock,server=on,wait=off")
    for d in "$@"; do
        id=vd$(printf "\\$(printf %o $((97 + i)))")
        args+=(-blockdev "driver=file,filename=$d,node-name=$id-file"
               -blockdev "driver=qcow2,file=$id-file,node-name=$id-fmt"
               -device "virtio-blk-pci,drive=$id-fmt,id=$id")
        i=$((i + 1))
    done
    spawn "$var" "$QEMU" "${args[@]}" </dev/null >>"$dir/qemu.log" 2>&1
}

# ctl_status SOCKET: `ckptctl status`'s exit code, in $ctl_rc.
ctl_status() {
    ctl_rc=0
    "$CKPTCTL" --socket "$1" --timeout 5 status >/dev/null 2>&1 || ctl_rc=$?
}

# tail_log FILE: the last lines of FILE as notes, after a failure.
tail_log() {
    [ -f "$1" ] && tail -n "${2:-15}" "$1" | sed 's/^/# /'
}
