#!/bin/bash
# make bench: ckptd against libvirt 9.0 doing the same work, and against the
# limit (a bare QMP transaction on a second VM of the same kind; nbdcopy
# reading the same export), on this machine, in one run.
#
# Prints one table (median of repeated runs, min-max, ratios), a goals
# check, and writes both to BENCHMARKS.md with the machine and the date.
# The last line is "N passed, N failed" counting goals met and missed.
#
# As root it installs the packages it needs (apt-get), sets libvirt up as
# ../shared/REFERENCE-LIBVIRT.md says (idempotent: daemons are started only
# if not running, and stopped at the end only if this run started them),
# defines throw-away domains with unique names and undefines them at the
# end.  Without libvirt the libvirt columns say why they are empty.
# Everything else lives in one temporary directory, removed by the trap.
#
# Environment: BUILD (build), BENCH_QUICK=1 (fewer repetitions, smaller
# sizes, a few minutes: a smoke test, not numbers to quote), BENCH_ONLY
# ("sec_pull sec_k": run only these sections; sec_backup and sec_mem need
# sec_create too), BENCH_KEEP=1 (keep the directory), BENCH_OUT
# (BENCHMARKS.md; "-" writes none).
set -u -o pipefail
export LC_ALL=C
BUILD=${BUILD:-build}
ROOT=$(pwd)
BIN=$(cd "$BUILD" && pwd)
T=$BIN/bench
QUICK=${BENCH_QUICK:-0}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
PY=/usr/bin/python3
LVPY=$ROOT/bench/lv.py
CKPY=$ROOT/bench/ckpy.py
export LIBVIRT_DEFAULT_URI=qemu:///system

W=$(mktemp -d "${TMPDIR:-/tmp}/ckptd-bench.XXXXXX")
S=$W/samples
mkdir -p "$S"
TAG=cb$$                                 # unique domain-name prefix
START_S=$(date +%s)

# ---- repetitions and sizes (BENCH_QUICK shrinks them) -------------------
if [ "$QUICK" = 1 ]; then
    R_CREATE=5 R_PROC=3 R_DEL=5 R_BACKUP=3 R_INC1=2 R_INC10=1 R_FULL=1
    FULL_GIB=1 GW_N=20000 GW_RUNS=3 KCOUNT=100 K8COUNT=50 R_START=3
else
    R_CREATE=30 R_PROC=10 R_DEL=15 R_BACKUP=10 R_INC1=5 R_INC10=3 R_FULL=3
    FULL_GIB=4 GW_N=100000 GW_RUNS=5 KCOUNT=1000 K8COUNT=1000 R_START=10
fi
CHAIN=50                                 # delete: middle of a chain of 50
PULL_GIB=8                               # the incremental pulls' disk
TS=1700000000                            # creation time in limit records

log() { printf '[%4ds] %s\n' $(( $(date +%s) - START_S )) "$*" >&2; }
NOTES=()
note() { NOTES+=("$*"); log "note: $*"; }

# ---- cleanup -------------------------------------------------------------
PIDS=()          # agents and QEMUs we started, killed newest first
DOMS=()          # libvirt domains we defined
STARTED_DAEMONS=()
cleanup() {
    trap - EXIT INT TERM
    local i d
    for d in "${DOMS[@]}"; do
        virsh -q destroy "$d" >/dev/null 2>&1
        virsh -q undefine "$d" --checkpoints-metadata >/dev/null 2>&1
    done
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        kill "${PIDS[i]}" 2>/dev/null
    done
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        wait "${PIDS[i]}" 2>/dev/null
    done
    for d in "${STARTED_DAEMONS[@]}"; do
        kill "$d" 2>/dev/null
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- statistics ----------------------------------------------------------
# Every tool prints "NAME MS" lines; record() files them under $S/NAME.
record() { awk -v d="$S" '{ f = d "/" $1; print $2 >> f; close(f) }'; }
# st NAME -> "median min max n" (empty, status 1, when nothing was measured)
st() {
    [ -s "$S/$1" ] || return 1
    sort -g "$S/$1" | awk '{ a[NR] = $1 } END {
        m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%s %s %s %d\n", m, a[1], a[NR], NR }'
}
med() { st "$1" | awk '{ print $1 }'; }
sum() { [ -s "$S/$1" ] && awk '{ s += $1 } END { print s }' "$S/$1"; }
num() {   # three significant figures, no exponent
    awk -v x="$1" 'BEGIN { a = x < 0 ? -x : x
        if (a >= 100) printf "%.0f", x; else if (a >= 10) printf "%.1f", x
        else if (a >= 1) printf "%.2f", x; else printf "%.3f", x }'
}
# cell NAME [SCALE]: "median (min-max) [xN]", values times SCALE
cell() {
    local s; s=$(st "$1") || { echo "—"; return; }
    set -- $s "${2:-1}"
    local n=""; [ "$4" -gt 1 ] && n=" ×$4"
    echo "$(num "$(awk -v a="$1" -v k="$5" 'BEGIN{print a*k}')") ($(num "$(awk -v a="$2" -v k="$5" 'BEGIN{print a*k}')")–$(num "$(awk -v a="$3" -v k="$5" 'BEGIN{print a*k}')"))$n"
}
# tput_cell NAME BYTES: median time as "S s (min-max), MB/s"
tput_cell() {
    local s; s=$(st "$1") || { echo "—"; return; }
    set -- $s
    awk -v m="$1" -v lo="$2" -v hi="$3" -v n="$4" -v b="$BYTES" 'BEGIN {
        printf "%.2f s (%.2f–%.2f) ×%d = %.0f MB/s", m/1000, lo/1000, hi/1000, n, b/1e6/(m/1000) }'
}
# ratio A B: median(A) / median(B), or "—"
ratio() {
    local a b; a=$(med "$1") && b=$(med "$2") && [ -n "$a" ] && [ -n "$b" ] || { echo "—"; return; }
    awk -v a="$a" -v b="$b" 'BEGIN { if (b == 0) print "—"; else printf "%.3g×\n", a / b }'
}
# inverse ratio (for throughputs measured as times): median(B) / median(A)
iratio() {
    local a b; a=$(med "$1") && b=$(med "$2") && [ -n "$a" ] && [ -n "$b" ] || { echo "—"; return; }
    awk -v a="$a" -v b="$b" 'BEGIN { if (a == 0) print "—"; else printf "%.3g×\n", b / a }'
}

# ---- VMs and agents ------------------------------------------------------
DISKS=(vda vdb vdc vdd vde vdf vdg vdh)
# vm_start NAME NDISKS SIZE: QEMU with no guest, two QMP monitors
# ($W/NAME/qmp.sock for the agent, test.sock for the bench), qcow2 disks.
vm_start() {
    local d=$W/$1 n=$2 size=$3 i args=()
    mkdir -p "$d"
    for (( i=0; i<n; i++ )); do
        local k=${DISKS[i]}
        [ -e "$d/$k.qcow2" ] || qemu-img create -q -f qcow2 "$d/$k.qcow2" "$size" || return 1
        args+=(-blockdev "driver=file,filename=$d/$k.qcow2,node-name=$k-file"
               -blockdev "driver=qcow2,file=$k-file,node-name=$k-fmt"
               -device "virtio-blk-pci,drive=$k-fmt,id=$k")
    done
    qemu-system-x86_64 -machine q35 -accel kvm -accel tcg -S -nodefaults -display none \
        -m 128 -qmp "unix:$d/qmp.sock,server=on,wait=off" \
        -qmp "unix:$d/test.sock,server=on,wait=off" "${args[@]}" >"$d/qemu.log" 2>&1 &
    PIDS+=($!)
    echo $! >"$d/qemu.pid"
    for i in $(seq 200); do
        [ -S "$d/test.sock" ] && [ -S "$d/qmp.sock" ] && return 0
        sleep 0.05
    done
    log "QEMU $1 did not start: $(cat "$d/qemu.log")"
    return 1
}
agent_start() {
    local d=$W/$1 i
    rm -f "$d/ready"
    XDG_RUNTIME_DIR=$d "$BIN/ckptd" --qmp "$d/qmp.sock" --control "$d/ckptd.sock" \
        --ready-file "$d/ready" 2>>"$d/ckptd.log" &
    PIDS+=($!)
    echo $! >"$d/agent.pid"
    for i in $(seq 200); do
        [ -e "$d/ready" ] && return 0
        sleep 0.05
    done
    log "ckptd for $1 did not become ready: $(tail -5 "$d/ckptd.log")"
    return 1
}
agent_stop() {
    local p; p=$(cat "$W/$1/agent.pid")
    kill "$p" 2>/dev/null; wait "$p" 2>/dev/null
}
ctl() { local v=$1; shift; "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" "$@"; }
qb() { "$T/qmpbench" "$@"; }                       # qb SOCKET < script
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# hmp_write DEVICE PATTERN OFFSET LENGTH: a guest write (qemu-io on the
# device's own BlockBackend), as a qmpbench line
hmp_line() {
    printf -- '- human-monitor-command {"command-line": "qemu-io -d %s/virtio-backend \\"write -P %s %s %s\\""}\n' "$@"
}

# Limit-side names: checkpoint i's record, as ckptd names it.
rec() { echo "ckptd1:$1:$TS:c$1"; }
# One create transaction on disks $2.. for checkpoint number $1 (the
# previous one, $1-1, is disabled): what ckptd sends.
qmp_create_actions() {
    local i=$1 k a="" sep=""; shift
    for k in "$@"; do
        [ "$i" -gt 1 ] && { a+="$sep{\"type\":\"block-dirty-bitmap-disable\",\"data\":{\"node\":\"$k-fmt\",\"name\":\"c$((i-1))\"}}"; sep=,; }
        a+="$sep{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"$k-fmt\",\"name\":\"c$i\",\"persistent\":true,\"disabled\":false}}"; sep=,
        a+=",{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"$k-fmt\",\"name\":\"$(rec "$i")\",\"persistent\":true,\"disabled\":true,\"granularity\":2147483648}}"
    done
    echo "$a"
}

# ---- libvirt -------------------------------------------------------------
LV=0 LV_WHY=""
LV_RSS_IDLE=""
lv_setup() {
    if [ "$(id -u)" != 0 ]; then LV_WHY="not root: cannot install or start libvirt"; return 1; fi
    local pkgs="libvirt-daemon-driver-qemu libvirt-daemon libvirt-clients python3-libvirt qemu-system-x86 qemu-utils libnbd-bin" p missing=""
    for p in $pkgs; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing$missing"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
          apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing; } \
            >"$W/apt.log" 2>&1 || { LV_WHY="apt-get install$missing failed: $(tail -1 "$W/apt.log")"; return 1; }
    fi
    getent group kvm >/dev/null || groupadd -r kvm
    id libvirt-qemu >/dev/null 2>&1 || useradd -r -g kvm libvirt-qemu
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
    mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt/qemu /var/cache/libvirt /etc/libvirt
    if ! grep -q '^security_driver = "none"' /etc/libvirt/qemu.conf 2>/dev/null; then
        cat >>/etc/libvirt/qemu.conf <<'CONF'
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
remember_owner = 0
CONF
    fi
    if ! pgrep -x virtlogd >/dev/null; then
        rm -f /var/run/virtlogd.pid
        virtlogd -d || { LV_WHY="virtlogd -d failed"; return 1; }
        sleep 0.2; STARTED_DAEMONS+=("$(cat /var/run/virtlogd.pid 2>/dev/null)")
    fi
    if ! pgrep -x libvirtd >/dev/null; then
        rm -f /var/run/libvirtd.pid
        libvirtd -d || { LV_WHY="libvirtd -d failed"; return 1; }
        sleep 0.3; STARTED_DAEMONS+=("$(cat /var/run/libvirtd.pid 2>/dev/null)")
    fi
    local i
    for i in $(seq 60); do
        virsh -q version >/dev/null 2>&1 && break
        sleep 0.5
    done
    virsh -q version >/dev/null 2>&1 || { LV_WHY="libvirtd does not answer (virsh version)"; return 1; }
    $PY -c 'import libvirt' 2>/dev/null || { LV_WHY="python3-libvirt missing"; return 1; }
    LV_RSS_IDLE=$(( $(rss "$(pgrep -xo libvirtd)") + $(rss "$(pgrep -xo virtlogd)") ))
    LV=1
}
LV_TYPE=qemu
[ -r /dev/kvm ] && [ -w /dev/kvm ] && LV_TYPE=kvm
# lv_start NAME NDISKS SIZE: a paused domain $TAG-NAME with qcow2 disks
# in $W/lv-NAME; its disk devices are virtio-disk0...
lv_start() {
    local d=$W/lv-$1 n=$2 size=$3 dom=$TAG-$1 i x
    mkdir -p "$d"
    x="<domain type='$LV_TYPE'><name>$dom</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
    x+="<os><type arch='x86_64' machine='q35'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
    for (( i=0; i<n; i++ )); do
        qemu-img create -q -f qcow2 "$d/${DISKS[i]}.qcow2" "$size" || return 1
        x+="<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$d/${DISKS[i]}.qcow2'/><target dev='${DISKS[i]}' bus='virtio'/></disk>"
    done
    x+="</devices></domain>"
    echo "$x" >"$d/domain.xml"
    virsh -q define "$d/domain.xml" >/dev/null || return 1
    DOMS+=("$dom")
    virsh -q start --paused "$dom" >/dev/null || return 1
}
lvpy() { $PY "$LVPY" "$TAG-$1"; }                   # lvpy NAME < script

# ==========================================================================
log "bench directory $W"
lv_setup || note "libvirt columns skipped: $LV_WHY"
[ "$LV" = 1 ] && log "libvirt $(libvirtd --version | awk '{print $NF}') running (domain type $LV_TYPE)"

# ---- 1. checkpoint create, 1 and 8 disks ---------------------------------
# ckptd (persistent client: bench/qmpbench; a ckptctl process per call),
# libvirt (python3-libvirt over one connection; a virsh process per call),
# limit: the same transaction sent to a bare QEMU by bench/qmpbench.
sec_create() {
    local n=$1 v=c$1 q=q$1 i r disks=("${DISKS[@]:0:$1}")
    vm_start "$v" "$n" 1G && agent_start "$v" && vm_start "$q" "$n" 1G || return 1
    [ "$LV" = 1 ] && { lv_start "$v" "$n" 1G || { note "libvirt domain for create failed"; }; }
    local per=$(( R_CREATE / 3 )) pp=$(( R_PROC / 2 )) a e=1
    for r in 1 2 3; do          # three interleaved rounds
        a=$(( (r - 1) * per + 1 ))      # names a$a .. a$((a+per-1)) this round
        for (( i=a; i<a+per; i++ )); do
            echo "x#$i checkpoint-create {\"name\":\"a$i\"}"
        done | qb "$W/$v/ckptd.sock" | sed "s/^x/create${n}_ckptd/" | record || return 1
        for (( i=a; i<a+per; i++ )); do
            echo "x#$i transaction {\"actions\":[$(qmp_create_actions "$i" "${disks[@]}")]}"
        done | qb "$W/$q/test.sock" | sed "s/^x/create${n}_limit/" | record || return 1
        if [ "$LV" = 1 ]; then
            for (( i=a; i<a+per; i++ )); do echo "x#$i create a$i"; done |
                lvpy "$v" | sed "s/^x/create${n}_lvpy/" | record || note "libvirt create ($n disks) failed"
        fi
        [ "$r" = 3 ] && continue
        "$T/timeit" "createproc${n}_ckptd" "$e" "$pp" "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" \
            checkpoint create "p%i" | record || return 1
        if [ "$LV" = 1 ]; then
            "$T/timeit" "createproc${n}_virsh" "$e" "$pp" virsh -q checkpoint-create-as "$TAG-$v" "p%i" |
                record || note "virsh checkpoint-create-as failed"
        fi
        e=$((e + pp))
    done
}

# ---- 2. checkpoint delete in the middle of a chain of 50 -----------------
# After each delete one more checkpoint is made at the end, so every
# delete finds a chain of 50; the deleted one is the middle one.
sec_delete() {
    local v=del q=qdel i k
    vm_start "$v" 1 1G && agent_start "$v" && vm_start "$q" 1 1G || return 1
    [ "$LV" = 1 ] && { lv_start "$v" 1 1G || note "libvirt domain for delete failed"; }
    local chain=() next=1
    for (( i=1; i<=CHAIN; i++ )); do chain+=("c$i"); done
    next=$((CHAIN + 1))
    # ckptd and the limit build the same chain c1..c50
    for (( i=1; i<=CHAIN; i++ )); do echo "- checkpoint-create {\"name\":\"c$i\"}"; done |
        qb "$W/$v/ckptd.sock" || return 1
    for (( i=1; i<=CHAIN; i++ )); do echo "- transaction {\"actions\":[$(qmp_create_actions "$i" vda)]}"; done |
        qb "$W/$q/test.sock" || return 1
    [ "$LV" = 1 ] && for (( i=1; i<=CHAIN; i++ )); do echo "- create c$i"; done | lvpy "$v"
    # the scripts: R_DEL client deletes (each followed by an untimed
    # create), then R_PROC process deletes
    local ck="" lim="" lvs="" procs=()
    for (( k=0; k<R_DEL + R_PROC; k++ )); do
        local mid=$(( ${#chain[@]} / 2 )) m p
        m=${chain[mid]} p=${chain[mid-1]}
        if (( k < R_DEL )); then
            ck+="x#$k checkpoint-delete {\"name\":\"$m\"}"$'\n'"- checkpoint-create {\"name\":\"c$next\"}"$'\n'
            lvs+="x#$k delete $m"$'\n'"- create c$next"$'\n'
        else
            procs+=("$m c$next")
        fi
        local mi=${m#c}
        lim+="x#$k transaction {\"actions\":[{\"type\":\"block-dirty-bitmap-merge\",\"data\":{\"node\":\"vda-fmt\",\"target\":\"$p\",\"bitmaps\":[\"$m\"]}},{\"type\":\"block-dirty-bitmap-remove\",\"data\":{\"node\":\"vda-fmt\",\"name\":\"$m\"}},{\"type\":\"block-dirty-bitmap-remove\",\"data\":{\"node\":\"vda-fmt\",\"name\":\"$(rec "$mi")\"}}]}"$'\n'
        lim+="- transaction {\"actions\":[$(qmp_create_actions_after "$next" "${chain[-1]#c}")]}"$'\n'
        chain=("${chain[@]:0:mid}" "${chain[@]:mid+1}" "c$next")
        next=$((next + 1))
    done
    printf '%s' "$ck" | qb "$W/$v/ckptd.sock" | sed 's/^x/delete_ckptd/' | record || return 1
    printf '%s' "$lim" | qb "$W/$q/test.sock" | sed 's/^x/delete_limit/' | record || return 1
    [ "$LV" = 1 ] && { printf '%s' "$lvs" | lvpy "$v" | sed 's/^x/delete_lvpy/' | record || note "libvirt delete failed"; }
    local pr m c
    for pr in "${procs[@]}"; do
        m=${pr% *} c=${pr#* }
        "$T/timeit" deleteproc_ckptd 0 1 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" checkpoint delete "$m" | record || return 1
        ctl "$v" checkpoint create "$c" >/dev/null || return 1
        if [ "$LV" = 1 ]; then
            "$T/timeit" deleteproc_virsh 0 1 virsh -q checkpoint-delete "$TAG-$v" "$m" | record &&
                virsh -q checkpoint-create-as "$TAG-$v" "$c" >/dev/null || note "virsh checkpoint-delete failed"
        fi
    done
}
# the create transaction for checkpoint $1 whose predecessor is number $2
qmp_create_actions_after() {
    printf '{"type":"block-dirty-bitmap-disable","data":{"node":"vda-fmt","name":"c%s"}},' "$2"
    printf '{"type":"block-dirty-bitmap-add","data":{"node":"vda-fmt","name":"c%s","persistent":true,"disabled":false}},' "$1"
    printf '{"type":"block-dirty-bitmap-add","data":{"node":"vda-fmt","name":"%s","persistent":true,"disabled":true,"granularity":2147483648}}' "$(rec "$1")"
}

# ---- 3. backup-begin incremental + new checkpoint; backup-end ------------
# The limit: the QMP commands ckptd's plan comes down to, for the
# fleecing path ckptd took (fleece_path asks it; footnote 4).  Both paths
# start an NBD server and make a qcow2 scratch node with a blockdev-create
# job.  The filter path (QEMU 7.1+, agent/job-fleece.c): a scratch without
# backing, ckptd's own copy-before-write filter over the disk, one
# transaction with the temporary bitmap, the merge and the new checkpoint,
# the device switched to the filter (qom-set), a snapshot-access view, the
# recording bitmap merged into the temporary one, the export.  The old
# path (backup-job): a scratch backed by the disk, one transaction with
# the temporary bitmap, the merge, the new checkpoint and blockdev-backup
# sync=none, the export.  And their removal.
# fleece_path VM "CKPTCTL-ARGS": the "fleecing" of one untimed backup begin
# ("filter" or "backup-job"), ended at once
fleece_path() {
    local j f id
    j=$(ctl "$1" --json backup begin $2) || return 1
    f=$(sed -n 's/.*"fleecing":"\([a-z-]*\)".*/\1/p' <<<"$j")
    id=$(sed -n 's/^{"id":"\([^"]*\)".*/\1/p' <<<"$j")
    ctl "$1" backup end "$id" >/dev/null || return 1
    [ -n "$f" ] && echo "$f"
}
limit_scratch() {   # k socketdir backing(json) tag: NBD server, scratch node f$k
    local k=$1 d=$2 t=$4
    : >"$d/scr$k.qcow2"
    cat <<EOF
$t#b$k nbd-server-start {"addr":{"type":"unix","data":{"path":"$d/nbd.sock"}}}
$t#b$k blockdev-add {"driver":"file","node-name":"s$k","filename":"$d/scr$k.qcow2"}
$t#b$k blockdev-create {"job-id":"cr$k","options":{"driver":"qcow2","file":"s$k","size":1073741824}}
$t#b$k @wait JOB_STATUS_CHANGE status concluded
$t#b$k job-dismiss {"id":"cr$k"}
$t#b$k blockdev-add {"driver":"qcow2","node-name":"f$k","file":"s$k","backing":$3}
EOF
}
# the transaction's actions: temporary bitmap t$k, the merge, the new
# checkpoint n (none when empty) after p
limit_acts() {    # k prev new merge-list(json)
    local acts="{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vda-fmt\",\"name\":\"t$1\",\"persistent\":false,\"disabled\":true,\"granularity\":65536}},{\"type\":\"block-dirty-bitmap-merge\",\"data\":{\"node\":\"vda-fmt\",\"target\":\"t$1\",\"bitmaps\":$4}}"
    [ -n "$3" ] && acts+=",$(qmp_create_actions_after "${3#c}" "${2#c}")"
    echo "$acts"
}
limit_export() {  # k node tag
    echo "$3#b$1 block-export-add {\"type\":\"nbd\",\"id\":\"e$1\",\"node-name\":\"$2\",\"name\":\"vda\",\"writable\":false,\"bitmaps\":[{\"node\":\"vda-fmt\",\"name\":\"t$1\"}]}"
}
# the old path (blockdev-backup sync=none)
limit_begin_old() {   # k prev new merge-list(json) socketdir [tag]
    local k=$1 t=${6:-x}
    limit_scratch "$k" "$5" '"vda-fmt"' "$t"
    echo "$t#b$k transaction {\"actions\":[$(limit_acts "$k" "$2" "$3" "$4"),{\"type\":\"blockdev-backup\",\"data\":{\"job-id\":\"bk$k\",\"device\":\"vda-fmt\",\"target\":\"f$k\",\"sync\":\"none\",\"filter-node-name\":\"cf$k\",\"auto-dismiss\":true}}]}"
    limit_export "$k" "f$k" "$t"
}
limit_end_old() {     # k [tag]
    local k=$1 t=${2:-y}
    cat <<EOF
$t#e$k block-export-del {"id":"e$k","mode":"hard"}
$t#e$k @wait BLOCK_EXPORT_DELETED
$t#e$k job-cancel {"id":"bk$k"}
$t#e$k @wait JOB_STATUS_CHANGE status null
$t#e$k blockdev-del {"node-name":"f$k"}
$t#e$k block-dirty-bitmap-remove {"node":"vda-fmt","name":"t$k"}
$t#e$k blockdev-del {"node-name":"s$k"}
$t#e$k nbd-server-stop
EOF
}
# ckptd's own filter (what agent/job-fleece.c sends); RECORDING is the
# bitmap recording after the transaction (the new checkpoint's, else the
# newest one's), merged into t$k once the device writes through the filter
limit_begin_filter() {  # k prev new merge-list(json) socketdir recording [tag]
    local k=$1 t=${7:-x}
    limit_scratch "$k" "$5" null "$t"
    cat <<EOF
$t#b$k blockdev-add {"driver":"copy-before-write","node-name":"w$k","file":"vda-fmt","target":"f$k","on-cbw-error":"break-snapshot"}
$t#b$k transaction {"actions":[$(limit_acts "$k" "$2" "$3" "$4")]}
$t#b$k qom-set {"path":"/machine/peripheral/vda/virtio-backend","property":"drive","value":"w$k"}
$t#b$k blockdev-add {"driver":"snapshot-access","node-name":"a$k","file":"w$k"}
$t#b$k block-dirty-bitmap-merge {"node":"vda-fmt","target":"t$k","bitmaps":["$6"]}
EOF
    limit_export "$k" "a$k" "$t"
}
limit_end_filter() {  # k [tag]
    local k=$1 t=${2:-y}
    cat <<EOF
$t#e$k block-export-del {"id":"e$k","mode":"hard"}
$t#e$k @wait BLOCK_EXPORT_DELETED
$t#e$k blockdev-del {"node-name":"a$k"}
$t#e$k qom-set {"path":"/machine/peripheral/vda/virtio-backend","property":"drive","value":"vda-fmt"}
$t#e$k block-dirty-bitmap-remove {"node":"vda-fmt","name":"t$k"}
$t#e$k blockdev-del {"node-name":"w$k"}
$t#e$k blockdev-del {"node-name":"f$k"}
$t#e$k blockdev-del {"node-name":"s$k"}
$t#e$k nbd-server-stop
EOF
}
# limit_begin PATH ...: the begin on PATH ("filter": limit_begin_filter's
# arguments; otherwise the old path, which ignores RECORDING)
limit_begin() {
    local p=$1; shift
    if [ "$p" = filter ]; then limit_begin_filter "$@"
    else limit_begin_old "$1" "$2" "$3" "$4" "$5" "${7:-x}"; fi
}
limit_end() { local p=$1; shift; if [ "$p" = filter ]; then limit_end_filter "$@"; else limit_end_old "$@"; fi; }
sec_backup() {
    local v=c1 q=q1 k
    # section 1 left the chains at a$n (ckptd, libvirt) and c$n (limit)
    local lastq=$(( R_CREATE / 3 * 3 ))
    local ck="" lim="" lvs="" p=a$lastq pq=c$lastq pl=a$lastq nq=$((lastq + 1)) fp
    fp=$(fleece_path "$v" "--incremental $p") || { note "backup-begin's fleecing path unknown"; return 1; }
    FLEECE=$fp
    log "ckptd's fleecing path: $fp"
    for (( k=1; k<=R_BACKUP; k++ )); do
        ck+="b#$k backup-begin {\"incremental\":\"$p\",\"checkpoint\":{\"name\":\"b$k\"}}"$'\n'
        ck+="e#$k backup-end {\"id\":\"%ID%\"}"$'\n'
        p=b$k
        # ckptd's path (x, y), then the old path (u, v): a checkpoint each
        lim+=$(limit_begin "$fp" "$k" "$pq" "c$nq" "[\"$pq\"]" "$W/$q" "c$nq")$'\n'
        lim+=$(limit_end "$fp" "$k")$'\n'
        pq=c$nq nq=$((nq + 1))
        lim+=$(limit_begin_old "o$k" "$pq" "c$nq" "[\"$pq\"]" "$W/$q" u)$'\n'
        lim+=$(limit_end_old "o$k" v)$'\n'
        pq=c$nq nq=$((nq + 1))
        lvs+="b#$k begin $pl b$k vda $W/lv-$v/nbd$k.sock $W/lv-$v"$'\n'"e#$k end"$'\n'
        pl=b$k
    done
    printf '%s' "$ck" | qb "$W/$v/ckptd.sock" | sed 's/^b/begin_ckptd/;s/^e/end_ckptd/' | record || return 1
    printf '%s' "$lim" | qb "$W/$q/test.sock" | sed 's/^x/begin_limit/;s/^y/end_limit/;s/^u/begin_limitold/;s/^v/end_limitold/' |
        record || return 1
    if [ "$LV" = 1 ] && [ -n "$pl" ]; then
        printf '%s' "$lvs" | lvpy "$v" | sed 's/^b/begin_lvpy/;s/^e/end_lvpy/' | record || note "libvirt backup-begin failed"
    fi
    # one process per call: ckptctl and virsh
    local id pv=$p
    for (( k=1; k<=R_PROC / 2; k++ )); do
        "$T/timeit" beginproc_ckptd 0 1 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" backup begin \
            --incremental "$pv" --checkpoint "bp$k" | record || return 1
        id=$(ctl "$v" backup info | awk '/^Job:/ { print $2 }')
        "$T/timeit" endproc_ckptd 0 1 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" backup end "$id" | record || return 1
        pv=bp$k
        if [ "$LV" = 1 ] && [ -n "$pl" ]; then
            local d=$W/lv-$v
            echo "<domainbackup mode='pull'><incremental>$pl</incremental><server transport='unix' socket='$d/vnbd$k.sock'/><disks><disk name='vda' backup='yes' type='file'><scratch file='$d/vscr$k.qcow2'/></disk></disks></domainbackup>" >"$d/bk$k.xml"
            echo "<domaincheckpoint><name>bp$k</name></domaincheckpoint>" >"$d/ck$k.xml"
            { "$T/timeit" beginproc_virsh 0 1 virsh -q backup-begin "$TAG-$v" "$d/bk$k.xml" "$d/ck$k.xml" | record &&
              "$T/timeit" endproc_virsh 0 1 virsh -q domjobabort "$TAG-$v" | record; } || note "virsh backup-begin failed"
            pl=bp$k
        fi
    done
}

# ---- 4. pulls: incremental 1% / 10% of an 8 GiB disk, full of 4 GiB ------
# ckptd: `ckptctl pull` (begin, copy with its libnbd engine, which writes
# the new qcow2 itself, end).  libvirt: backupBegin, the same engine
# (bench/nbdpull, linked with build/libckptd.a) on libvirt's export,
# abortJob.  Limits, each in the same rounds: incremental, the plain
# libnbd extent reader (bench/extread: begin, block status, read the
# dirty extents and throw them away, end; and the same reader storing them
# in a raw file, the bound for storing); full, nbdcopy of the export to
# a raw sparse file and QEMU's own push job (blockdev-backup sync=full
# into a qcow2 target node); both, nbdcopy into a qcow2 served by
# qemu-nbd (the old limit: the socket hop costs half).  The disks hold
# data only where the changes are, so a full export's data is exactly the
# changed extents: nbdcopy copies the same bytes as the incremental pulls.
pull_writes() {   # dev stride-MiB count pattern -> qmpbench lines
    local i
    for (( i=0; i<$3; i++ )); do hmp_line "$1" "$4" "$(( i * $2 ))M" 1M; done
}
lv_writes() {
    local i
    for (( i=0; i<$3; i++ )); do echo "- hmp qemu-io -d $1/virtio-backend \"write -P $4 $(( i * $2 ))M 1M\""; done
}
limit_pull() {    # NAME DISK GIB: nbdcopy a full export of DISK into qemu-nbd
    local v=pull j uri rc
    j=$(ctl "$v" backup begin --disk "$2" | sed -n 1p) || return 1
    uri="nbd+unix:///$2?socket=$W/$v/ckptd-nbd.sock"
    qemu-img create -q -f qcow2 "$W/lim.qcow2" "${3}G"
    "$T/timeit" "$1" 0 1 nbdcopy --flush --destination-is-zero "$uri" -- [ qemu-nbd -f qcow2 "$W/lim.qcow2" ] | record
    rc=$?
    rm -f "$W/lim.qcow2"
    ctl "$v" backup end "$j" >/dev/null
    return $rc
}
# The full limit's whole job, timed as one process like `ckptctl pull`:
# begin (a full backup with a new checkpoint, as the pull's begin),
# nbdcopy of the export to a raw sparse file, end.
raw_job_script() {
    cat >"$W/rawjob.sh" <<'XEOF'
#!/bin/bash
# rawjob.sh CKPTCTL SOCKET DISK CHECKPOINT OUT
set -e -o pipefail
out=$("$1" --socket "$2" backup begin --disk "$3" --checkpoint "$4")
re="^$3 ([^ ]*)$"
while IFS= read -r l; do [[ $l =~ $re ]] && uri=${BASH_REMATCH[1]}; done <<<"$out"
nbdcopy --flush "$uri" "$5"
"$1" --socket "$2" backup end "$(sed -n 1p <<<"$out")" >/dev/null
XEOF
    chmod +x "$W/rawjob.sh"
}
# The plain extent reader's whole incremental: begin (incremental from
# FROM, with the new checkpoint NEW, as ckptctl pull's begin), read the
# dirty extents (and with OUT store them in the raw file OUT), end.  A
# script, so that timeit times it as one process like `ckptctl pull`.
ext_job_script() {
    cat >"$W/extjob.sh" <<'XEOF'
#!/bin/bash
# extjob.sh CKPTCTL SOCKET DISK FROM NEW EXTREAD [OUT]
set -e -o pipefail
out=$("$1" --socket "$2" backup begin --disk "$3" --incremental "$4" --checkpoint "$5")
re="^$3 ([^ ]*) \(bitmap (.*)\)$"
while IFS= read -r l; do [[ $l =~ $re ]] && uri=${BASH_REMATCH[1]} ctx=${BASH_REMATCH[2]}; done <<<"$out"
"$6" "$uri" "$ctx" ${7:+"$7"} >/dev/null
"$1" --socket "$2" backup end "$(sed -n 1p <<<"$out")" >/dev/null
XEOF
    chmod +x "$W/extjob.sh"
}
# QEMU's own push job: a full backup of DISK by blockdev-backup into a
# new qcow2 target node, closed (flushed) at the end; on the bench
# monitor, so the agent is not involved.
push_job() {      # NAME DISK GIB ROUND
    local f=$W/push.qcow2 k=$4 rc
    qemu-img create -q -f qcow2 "$f" "${3}G" || return 1
    qb "$W/pull/test.sock" <<XEOF | sed "s/^x/$1/" | record
x#$k blockdev-add {"driver":"file","node-name":"pt$k","filename":"$f"}
x#$k blockdev-add {"driver":"qcow2","node-name":"pq$k","file":"pt$k"}
x#$k blockdev-backup {"job-id":"push$k","device":"$2-fmt","target":"pq$k","sync":"full","auto-dismiss":true}
x#$k @wait BLOCK_JOB_COMPLETED device push$k
x#$k blockdev-del {"node-name":"pq$k"}
x#$k blockdev-del {"node-name":"pt$k"}
XEOF
    rc=$?
    rm -f "$f"
    return $rc
}
# The same job incremental: sync=bitmap from checkpoint BITMAP's bitmap
# (the newest checkpoint when the round's writes came: it holds exactly
# them), on the agent's VM, bitmap-mode never so the checkpoint stays as
# it was.  The job's own failure fails the section (qmpbench's status,
# not the pipe's).
push_job_inc() {  # NAME DISK GIB ROUND BITMAP VM
    local f=$W/pushi.qcow2 k=$4 rc
    qemu-img create -q -f qcow2 "$f" "${3}G" || return 1
    qb "$W/$6/test.sock" <<XEOF | sed "s/^x/$1/" | record
x#$k blockdev-add {"driver":"file","node-name":"pit$k","filename":"$f"}
x#$k blockdev-add {"driver":"qcow2","node-name":"piq$k","file":"pit$k"}
x#$k blockdev-backup {"job-id":"pushi$k","device":"$2-fmt","target":"piq$k","sync":"bitmap","bitmap":"$5","bitmap-mode":"never","auto-dismiss":true}
x#$k @wait BLOCK_JOB_COMPLETED device pushi$k
x#$k blockdev-del {"node-name":"piq$k"}
x#$k blockdev-del {"node-name":"pit$k"}
XEOF
    rc=$(( PIPESTATUS[0] | PIPESTATUS[2] ))
    rm -f "$f"
    return $rc
}
sec_pull() {
    local v=pull r stride cnt pat name reps prev=i0 lprev LVP=$LV lout=$W/lv-out.qcow2
    vm_start "$v" 2 "${PULL_GIB}G" && agent_start "$v" || return 1
    [ "$LV" = 1 ] && { lv_start "$v" 2 "${PULL_GIB}G" || { note "libvirt domain for pulls failed"; LVP=0; }; }
    mkdir -p "$W/$v/out"
    ext_job_script
    raw_job_script
    for name in 1 10; do
        if [ "$name" = 1 ]; then stride=100 reps=$R_INC1; else stride=10 reps=$R_INC10; fi
        cnt=$(( PULL_GIB * 1024 / stride ))
        # allocate the set and bring both chains up to date (not timed)
        pull_writes vda "$stride" "$cnt" 0x5a | qb "$W/$v/test.sock" || return 1
        if [ "$name" = 1 ]; then
            ctl "$v" pull --output "$W/$v/out" --disk vda --checkpoint i0 >/dev/null || return 1
        else
            ctl "$v" pull --output "$W/$v/out" --disk vda --incremental "$prev" --checkpoint "i10-0" >/dev/null || return 1
            prev=i10-0
        fi
        if [ "$LVP" = 1 ]; then
            lv_writes virtio-disk0 "$stride" "$cnt" 0x5a | lvpy "$v" || { note "libvirt guest writes failed"; LVP=0; }
            if [ "$name" = 1 ]; then
                echo "- create i0" | lvpy "$v"; lprev=i0
            else
                echo "- pull $lprev i10-0 vda $W/lv-$v/nbd.sock $W/lv-$v $T/nbdpull $lout" | lvpy "$v" || LVP=0
                rm -f "$lout"; lprev=i10-0
            fi
        fi
        # QEMU's own incremental reads one bitmap: the newest checkpoint's
        # when the round's writes came (the last one the previous round
        # made), which holds exactly them
        local newest=$prev
        for (( r=1; r<=reps; r++ )); do
            pat=$(printf '0x%02x' $(( (r * 17 + name) % 256 )))
            pull_writes vda "$stride" "$cnt" "$pat" | qb "$W/$v/test.sock" || return 1
            "$T/timeit" "inc${name}_ckptd" 0 1 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" pull --pull \
                --output "$W/$v/out" --disk vda --incremental "$prev" --checkpoint "i$name-$r" | record || return 1
            # ckptctl pull --push (QEMU writes the files): the same changes
            "$T/timeit" "inc${name}_push" 0 1 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" pull --push \
                --output "$W/$v/out" --disk vda --incremental "$prev" --checkpoint "p$name-$r" | record || return 1
            # the same changes: incremental from the same checkpoint, read
            # and thrown away, then read and stored in a raw file
            "$T/timeit" "inc${name}_ext" 0 1 "$W/extjob.sh" "$BIN/ckptctl" "$W/$v/ckptd.sock" \
                vda "$prev" "x-$prev" "$T/extread" | record || return 1
            "$T/timeit" "inc${name}_extw" 0 1 "$W/extjob.sh" "$BIN/ckptctl" "$W/$v/ckptd.sock" \
                vda "$prev" "xw-$prev" "$T/extread" "$W/ext.raw" | record || return 1
            rm -f "$W/ext.raw"
            # and QEMU's own incremental push job of them
            push_job_inc "inc${name}_qpush" vda "$PULL_GIB" "$name-$r" "$newest" "$v" || return 1
            newest=xw-$prev

            prev=i$name-$r
            limit_pull "inc${name}_limit" vda "$PULL_GIB" || return 1
            if [ "$LVP" = 1 ]; then
                lv_writes virtio-disk0 "$stride" "$cnt" "$pat" | lvpy "$v" &&
                echo "x pull $lprev i$name-$r vda $W/lv-$v/nbd.sock $W/lv-$v $T/nbdpull $lout" |
                    lvpy "$v" | sed "s/^x/inc${name}_lv/" | record || { note "libvirt incremental pull failed"; LVP=0; }
                rm -f "$lout"; lprev=i$name-$r
            fi
        done
    done
    # full pull of FULL_GIB GiB of data on vdb
    local g
    for (( g=0; g<FULL_GIB * 4; g++ )); do hmp_line vdb 0xab "$(( g * 256 ))M" 256M; done |
        qb "$W/$v/test.sock" || return 1
    if [ "$LVP" = 1 ]; then
        for (( g=0; g<FULL_GIB * 4; g++ )); do
            echo "- hmp qemu-io -d virtio-disk1/virtio-backend \"write -P 0xab $(( g * 256 ))M 256M\""
        done | lvpy "$v" || { note "libvirt guest writes (full) failed"; LVP=0; }
    fi
    for (( r=1; r<=R_FULL; r++ )); do
        "$T/timeit" full_ckptd 0 1 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" pull --pull \
            --output "$W/$v/full" --disk vdb --checkpoint "f$r" | record || return 1
        rm -rf "$W/$v/full"
        "$T/timeit" full_pushc 0 1 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" pull --push \
            --output "$W/$v/full" --disk vdb --checkpoint "fp$r" | record || return 1
        rm -rf "$W/$v/full"
        rm -f "$W/lim.raw"
        "$T/timeit" full_raw 0 1 "$W/rawjob.sh" "$BIN/ckptctl" "$W/$v/ckptd.sock" \
            vdb "r$r" "$W/lim.raw" | record || return 1
        rm -f "$W/lim.raw"
        push_job full_push vdb "$PULL_GIB" "$r" || return 1
        limit_pull full_limit vdb "$PULL_GIB" || return 1
        if [ "$LVP" = 1 ]; then
            echo "x pull - f$r vdb $W/lv-$v/nbd.sock $W/lv-$v $T/nbdpull $lout" |
                lvpy "$v" | sed 's/^x/full_lv/' | record || { note "libvirt full pull failed"; LVP=0; }
            rm -f "$lout"
        fi
    done
    PULL1_BYTES=$(( PULL_GIB * 1024 / 100 * 1048576 ))
    PULL10_BYTES=$(( PULL_GIB * 1024 / 10 * 1048576 ))
}

# ---- 5. guest write cost: qemu-img bench on prepared images -------------
# ckptd's layout: N checkpoints, only the newest data bitmap recording,
# plus N records (disabled, 2 GiB granularity).  libvirt's: N bitmaps,
# all recording.  None: no bitmap.  Interleaved runs; IOPS = N / time.
sec_gw() {
    local d=$W/gw i n img r
    mkdir -p "$d"
    qemu-img create -q -f qcow2 -o preallocation=metadata "$d/base.qcow2" 1G || return 1
    for n in 1 10 100; do
        cp "$d/base.qcow2" "$d/ck$n.qcow2"; cp "$d/base.qcow2" "$d/lv$n.qcow2"
        for (( i=1; i<=n; i++ )); do
            if [ "$i" -lt "$n" ]; then qemu-img bitmap --add --disable "$d/ck$n.qcow2" "c$i"
            else qemu-img bitmap --add "$d/ck$n.qcow2" "c$i"; fi
            qemu-img bitmap --add --disable -g 2147483648 "$d/ck$n.qcow2" "$(rec "$i")"
            qemu-img bitmap --add "$d/lv$n.qcow2" "c$i"
        done || return 1
    done
    cp "$d/base.qcow2" "$d/none.qcow2"
    for (( r=1; r<=GW_RUNS; r++ )); do
        for img in none ck1 ck10 ck100 lv1 lv10 lv100; do
            qemu-img bench -w -c "$GW_N" -d 32 -s 4k -S 64k -t writeback -q -f qcow2 "$d/$img.qcow2" |
                awk -v n="gw_$img" '/Run completed in/ { print n, $4 * 1000 }' | record
        done
    done
}

# ---- 6. 1,000 checkpoints on one disk ------------------------------------
sec_k() {
    local v=k q=qk i fp
    vm_start "$v" 1 1G && agent_start "$v" && vm_start "$q" 1 1G || return 1
    for (( i=1; i<=KCOUNT; i++ )); do echo "x#$i checkpoint-create {\"name\":\"c$i\"}"; done |
        qb "$W/$v/ckptd.sock" | sed 's/^x/k_create_ckptd/' | record || return 1
    for (( i=1; i<=KCOUNT; i++ )); do echo "x#$i transaction {\"actions\":[$(qmp_create_actions "$i" vda)]}"; done |
        qb "$W/$q/test.sock" | sed 's/^x/k_create_limit/' | record || return 1
    for i in 1 2 3 4 5; do echo "x#$i checkpoint-list"; done |
        qb "$W/$v/ckptd.sock" | sed 's/^x/k_list_ckptd/' | record || return 1
    for i in 1 2 3 4 5; do echo "x#$i query-named-block-nodes {\"flat\":true}"; done |
        qb "$W/$q/test.sock" | sed 's/^x/k_list_limit/' | record || return 1
    "$T/timeit" k_listproc_ckptd 0 3 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" checkpoint list | record
    "$T/timeit" k_tree_ckptd 0 3 "$BIN/ckptctl" --socket "$W/$v/ckptd.sock" checkpoint list --tree | record
    echo "k_treebytes_ckptd $(ctl "$v" checkpoint list --tree | wc -c)" | record
    local s="" lim="" merge="" k
    for (( k=1; k<=3; k++ )); do
        s+="b#$k backup-begin {\"incremental\":\"c1\"}"$'\n'"e#$k backup-end {\"id\":\"%ID%\"}"$'\n'
    done
    printf '%s' "$s" | qb "$W/$v/ckptd.sock" | sed 's/^b/k_inc_ckptd/;s/^e/k_incend_ckptd/' | record || return 1
    merge=$(for (( i=1; i<=KCOUNT; i++ )); do printf '"c%d"\n' "$i"; done | paste -sd, -)
    # ckptd's fleecing path (the recording bitmap: the newest, c$KCOUNT),
    # then the old one
    fp=$(fleece_path "$v" "--incremental c1") || { note "backup-begin's fleecing path unknown"; return 1; }
    FLEECE=$fp
    for (( k=1; k<=3; k++ )); do
        lim+=$(limit_begin "$fp" "$k" "" "" "[$merge]" "$W/$q" "c$KCOUNT")$'\n'$(limit_end "$fp" "$k")$'\n'
        lim+=$(limit_begin_old "o$k" "" "" "[$merge]" "$W/$q" u)$'\n'$(limit_end_old "o$k" v)$'\n'
    done
    printf '%s' "$lim" | qb "$W/$q/test.sock" |
        sed 's/^x/k_inc_limit/;s/^y/k_incend_limit/;s/^u/k_inc_limitold/;s/^v/k_incend_limitold/' | record || return 1
    local lvk=0 r
    if [ "$LV" = 1 ]; then
        if ! lv_start "$v" 1 1G; then
            note "libvirt domain for 1,000 checkpoints failed"
        elif ! for (( i=1; i<=KCOUNT; i++ )); do echo "x#$i create c$i"; done |
                lvpy "$v" | sed 's/^x/k_create_lvpy/' | record; then
            note "libvirt 1,000 creates failed"
        else
            lvk=1
        fi
    fi
    # the list from python on both sides (bench/ckpy.py: the reply
    # json.loads'ed; lv.py: listAllCheckpoints + getName), in 5
    # interleaved rounds of 2 calls over one connection each
    for (( r=1; r<=5; r++ )); do
        for i in 1 2; do echo "x#$i checkpoint-list"; done | $PY "$CKPY" "$W/$v/ckptd.sock" |
            sed 's/^x/k_listpy_ckptd/' | record || return 1
        if [ "$lvk" = 1 ]; then
            for i in 1 2; do echo "x#$i list"; done | lvpy "$v" | sed 's/^x/k_list_lvpy/' | record ||
                { note "libvirt list of 1,000 failed"; lvk=0; }
        fi
    done
    if [ "$lvk" = 1 ]; then
        "$T/timeit" k_listproc_virsh 0 3 virsh -q checkpoint-list "$TAG-$v" | record
        "$T/timeit" k_tree_virsh 0 3 virsh -q checkpoint-list --tree "$TAG-$v" | record
        echo "k_treebytes_virsh $(virsh -q checkpoint-list --tree "$TAG-$v" | wc -c)" | record
        s=""
        for (( k=1; k<=3; k++ )); do
            s+="b#$k begin c1 - vda $W/lv-$v/nbd$k.sock $W/lv-$v"$'\n'"e#$k end"$'\n'
        done
        printf '%s' "$s" | lvpy "$v" | sed 's/^b/k_inc_lvpy/;s/^e/k_incend_lvpy/' | record ||
            note "libvirt incremental from the oldest of 1,000 failed"
    fi
}

# ---- 7. memory; 1,000 checkpoints x 8 disks; agent start -----------------
sec_mem() {
    local v=c8 i p
    p=$(cat "$W/$v/agent.pid")
    for (( i=1; i<=K8COUNT; i++ )); do echo "x#$i checkpoint-create {\"name\":\"m$i\"}"; done |
        qb "$W/$v/ckptd.sock" | sed 's/^x/k8_create_ckptd/' | record || return 1
    rss "$p" | sed 's/^/rss_k8_ckptd /' | record
    # a fresh agent on the same VM: start time and resident memory with them
    agent_stop "$v"
    XDG_RUNTIME_DIR=$W/$v "$T/agentstart" 3 "$W/$v/ckptd.sock" "$BIN/ckptd" --qmp "$W/$v/qmp.sock" \
        --control "$W/$v/ckptd.sock" 2>>"$W/$v/ckptd.log" |
        sed 's/^start/start_k8_ckptd/;s/^rss/rss_k8fresh_ckptd/' | record
}
sec_start() {
    local v=st
    vm_start "$v" 1 1G || return 1
    XDG_RUNTIME_DIR=$W/$v "$T/agentstart" "$R_START" "$W/$v/ckptd.sock" "$BIN/ckptd" --qmp "$W/$v/qmp.sock" \
        --control "$W/$v/ckptd.sock" 2>>"$W/$v/ckptd.log" |
        sed 's/^start/start_ckptd/;s/^rss/rss_idle_ckptd/' | record
}

# ==========================================================================
run() {   # run NAME FUNCTION [ARG]...: a section that fails leaves its rows empty
    local name=$1; shift
    if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $1 "* ]]; then
        log "== $name: skipped (BENCH_ONLY)"; return 0
    fi
    log "== $name"
    "$@" || note "section '$name' failed (see above); its rows are empty"
}
FLEECE=""                # the fleecing path ckptd took (sec_backup, sec_k)
run "agent start and idle memory" sec_start
run "checkpoint create, 1 disk" sec_create 1
run "checkpoint create, 8 disks" sec_create 8
run "checkpoint delete in a chain of $CHAIN" sec_delete
run "backup-begin/backup-end" sec_backup
run "guest write cost" sec_gw
run "$KCOUNT checkpoints on one disk" sec_k
run "$K8COUNT checkpoints x 8 disks, memory" sec_mem
PULL1_BYTES=0 PULL10_BYTES=0
run "pulls" sec_pull
if [ "$LV" = 1 ]; then
    LV_RSS_END=$(( $(rss "$(pgrep -xo libvirtd)") + $(rss "$(pgrep -xo virtlogd)") ))
    echo "rss_idle_lv $LV_RSS_IDLE" | record
    echo "rss_end_lv $LV_RSS_END" | record
fi
ELAPSED=$(( $(date +%s) - START_S ))

# ==========================================================================
# The table
LVNA="—"
[ "$LV" = 1 ] || LVNA="n/a¹"
lvcell() { if [ "$LV" = 1 ]; then cell "$@"; else echo "$LVNA"; fi; }
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@"; }
tcell() { BYTES=$2 tput_cell "$1"; }
lvtcell() { if [ "$LV" = 1 ]; then tcell "$@"; else echo "$LVNA"; fi; }

GITREV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)
[ -n "$(git -C "$ROOT" status --porcelain -- agent qmp metadata bitmap nbd common 2>/dev/null)" ] && GITREV="$GITREV+changes"
MACHINE="$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), $(qemu-system-x86_64 --version | head -1 | sed 's/ (.*//;s/QEMU emulator version/QEMU/'), $( [ "$LV" = 1 ] && libvirtd --version | sed 's/.*(libvirt) /libvirt /' || echo 'libvirt not available'), /dev/kvm $( [ -w /dev/kvm ] && echo present || echo absent), ckptd $GITREV"
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

gwcell() { local s; s=$(st "gw_$1") || { echo "—"; return; }; set -- $s
    awk -v m="$1" -v lo="$2" -v hi="$3" -v n="$4" -v c="$GW_N" 'BEGIN {
        printf "%.0f (%.0f–%.0f) ×%d", c/(m/1000), c/(hi/1000), c/(lo/1000), n }'; }
kb() { local s; s=$(st "$1") || { echo "—"; return; }; set -- $s; echo "$1 KiB"; }
tot() { local s; s=$(sum "$1") || { echo "—"; return; }; awk -v s="$s" 'BEGIN { printf "%.2f s", s / 1000 }'; }
totr() { local a b; a=$(sum "$1") && b=$(sum "$2") || { echo "—"; return; }; awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3g×", a / b }'; }

case $FLEECE in
    filter) FLEECE_LBL="ckptd's copy-before-write filter" ;;
    backup-job) FLEECE_LBL="blockdev-backup sync=none" ;;
    *) FLEECE_LBL="path not measured" ;;
esac
TABLE=$(
echo "| figure | ckptd | libvirt | limit | ckptd/libvirt | ckptd/limit |"
echo "| --- | --- | --- | --- | --- | --- |"
row "checkpoint create, 1 disk: client round trip (ms)²" "$(cell create1_ckptd)" "$(lvcell create1_lvpy) python" "$(cell create1_limit) QMP" "$(ratio create1_ckptd create1_lvpy)" "$(ratio create1_ckptd create1_limit)"
row "checkpoint create, 1 disk: one process per call (ms)" "$(cell createproc1_ckptd) ckptctl" "$(lvcell createproc1_virsh) virsh" "—" "$(ratio createproc1_ckptd createproc1_virsh)" "—"
row "checkpoint create, 8 disks: client round trip (ms)²" "$(cell create8_ckptd)" "$(lvcell create8_lvpy) python" "$(cell create8_limit) QMP" "$(ratio create8_ckptd create8_lvpy)" "$(ratio create8_ckptd create8_limit)"
row "checkpoint create, 8 disks: one process per call (ms)" "$(cell createproc8_ckptd) ckptctl" "$(lvcell createproc8_virsh) virsh" "—" "$(ratio createproc8_ckptd createproc8_virsh)" "—"
row "checkpoint delete, middle of a chain of $CHAIN: client (ms)³" "$(cell delete_ckptd)" "$(lvcell delete_lvpy) python" "$(cell delete_limit) QMP" "$(ratio delete_ckptd delete_lvpy)" "$(ratio delete_ckptd delete_limit)"
row "checkpoint delete, middle of a chain of $CHAIN: one process (ms)" "$(cell deleteproc_ckptd) ckptctl" "$(lvcell deleteproc_virsh) virsh" "—" "$(ratio deleteproc_ckptd deleteproc_virsh)" "—"
row "backup-begin incremental + new checkpoint, 1 disk: client (ms)⁴" "$(cell begin_ckptd)" "$(lvcell begin_lvpy) python" "$(cell begin_limit) QMP, $FLEECE_LBL" "$(ratio begin_ckptd begin_lvpy)" "$(ratio begin_ckptd begin_limit)"
row "backup-end: client (ms)⁴" "$(cell end_ckptd)" "$(lvcell end_lvpy) python" "$(cell end_limit) QMP, $FLEECE_LBL" "$(ratio end_ckptd end_lvpy)" "$(ratio end_ckptd end_limit)"
row "backup-begin incremental + new checkpoint: against the old fleecing path's bare sequence⁴" "$(cell begin_ckptd)" "—" "$(cell begin_limitold) QMP, blockdev-backup sync=none" "—" "$(ratio begin_ckptd begin_limitold)"
row "backup-end: against the old fleecing path's bare sequence⁴" "$(cell end_ckptd)" "—" "$(cell end_limitold) QMP, blockdev-backup sync=none" "—" "$(ratio end_ckptd end_limitold)"
row "backup-begin incremental + new checkpoint: one process (ms)" "$(cell beginproc_ckptd) ckptctl" "$(lvcell beginproc_virsh) virsh" "—" "$(ratio beginproc_ckptd beginproc_virsh)" "—"
row "backup-end: one process (ms)" "$(cell endproc_ckptd) ckptctl" "$(lvcell endproc_virsh) virsh domjobabort" "—" "$(ratio endproc_ckptd endproc_virsh)" "—"
row "incremental pull, 1% of an ${PULL_GIB} GiB disk changed ($(( PULL1_BYTES / 1048576 )) MiB)⁵" "$(tcell inc1_ckptd "$PULL1_BYTES") ckptctl pull" "$(lvtcell inc1_lv "$PULL1_BYTES")" "$(tcell inc1_ext "$PULL1_BYTES") plain extent reader" "$(iratio inc1_ckptd inc1_lv)" "$(iratio inc1_ckptd inc1_ext)"
row "incremental pull, 1% changed: against a plain extent reader that stores (raw file)⁵" "$(tcell inc1_ckptd "$PULL1_BYTES") ckptctl pull" "—" "$(tcell inc1_extw "$PULL1_BYTES") plain extent reader, pwrite to a raw file, fdatasync" "—" "$(iratio inc1_ckptd inc1_extw)"
row "incremental pull, 1%: against the old limit⁵" "$(tcell inc1_ckptd "$PULL1_BYTES") ckptctl pull" "—" "$(tcell inc1_limit "$PULL1_BYTES") nbdcopy into qemu-nbd (qcow2)" "—" "$(iratio inc1_ckptd inc1_limit)"
row "incremental pull, 10% changed ($(( PULL10_BYTES / 1048576 )) MiB)⁵" "$(tcell inc10_ckptd "$PULL10_BYTES") ckptctl pull" "$(lvtcell inc10_lv "$PULL10_BYTES")" "$(tcell inc10_ext "$PULL10_BYTES") plain extent reader" "$(iratio inc10_ckptd inc10_lv)" "$(iratio inc10_ckptd inc10_ext)"
row "incremental pull, 10% changed: against a plain extent reader that stores (raw file)⁵" "$(tcell inc10_ckptd "$PULL10_BYTES") ckptctl pull" "—" "$(tcell inc10_extw "$PULL10_BYTES") plain extent reader, pwrite to a raw file, fdatasync" "—" "$(iratio inc10_ckptd inc10_extw)"
row "incremental pull, 10%: against the old limit⁵" "$(tcell inc10_ckptd "$PULL10_BYTES") ckptctl pull" "—" "$(tcell inc10_limit "$PULL10_BYTES") nbdcopy into qemu-nbd (qcow2)" "—" "$(iratio inc10_ckptd inc10_limit)"
row "full pull of $FULL_GIB GiB of data⁵" "$(tcell full_ckptd $(( FULL_GIB << 30 ))) ckptctl pull" "$(lvtcell full_lv $(( FULL_GIB << 30 )))" "$(tcell full_raw $(( FULL_GIB << 30 ))) nbdcopy to a raw sparse file" "$(iratio full_ckptd full_lv)" "$(iratio full_ckptd full_raw)"
row "full backup of $FULL_GIB GiB: against QEMU's own push job⁵" "$(tcell full_ckptd $(( FULL_GIB << 30 ))) ckptctl pull" "—" "$(tcell full_push $(( FULL_GIB << 30 ))) blockdev-backup sync=full to qcow2" "—" "$(iratio full_ckptd full_push)"
row "incremental local backup, 1% changed: against QEMU's own incremental push job⁵" "$(tcell inc1_ckptd "$PULL1_BYTES") ckptctl pull" "—" "$(tcell inc1_qpush "$PULL1_BYTES") blockdev-backup sync=bitmap to qcow2" "—" "$(iratio inc1_ckptd inc1_qpush)"
row "incremental local backup, 10% changed: against QEMU's own incremental push job⁵" "$(tcell inc10_ckptd "$PULL10_BYTES") ckptctl pull" "—" "$(tcell inc10_qpush "$PULL10_BYTES") blockdev-backup sync=bitmap to qcow2" "—" "$(iratio inc10_ckptd inc10_qpush)"
row "full local backup of $FULL_GIB GiB, ckptctl pull --push: against QEMU's own push job⁵" "$(tcell full_pushc $(( FULL_GIB << 30 ))) ckptctl pull --push" "—" "$(tcell full_push $(( FULL_GIB << 30 ))) blockdev-backup sync=full to qcow2" "—" "$(iratio full_pushc full_push)"
row "incremental local backup, --push against the default (NBD), 1% changed⁵" "$(tcell inc1_push "$PULL1_BYTES") ckptctl pull --push" "—" "$(tcell inc1_ckptd "$PULL1_BYTES") ckptctl pull" "—" "$(iratio inc1_push inc1_ckptd)"
row "incremental local backup, --push against the default (NBD), 10% changed⁵" "$(tcell inc10_push "$PULL10_BYTES") ckptctl pull --push" "—" "$(tcell inc10_ckptd "$PULL10_BYTES") ckptctl pull" "—" "$(iratio inc10_push inc10_ckptd)"
row "full pull of $FULL_GIB GiB: against the old limit⁵" "$(tcell full_ckptd $(( FULL_GIB << 30 ))) ckptctl pull" "—" "$(tcell full_limit $(( FULL_GIB << 30 ))) nbdcopy into qemu-nbd (qcow2)" "—" "$(iratio full_ckptd full_limit)"
for n in 1 10 100; do
    row "guest writes with $n checkpoint$([ $n -gt 1 ] && echo s) (4 KiB random, IOPS)⁶" "$(gwcell ck$n)" "$(gwcell lv$n)" "$(gwcell none) no bitmap" "$(iratio gw_ck$n gw_lv$n)" "$(iratio gw_ck$n gw_none)"
done
row "$KCOUNT checkpoints, 1 disk: create all (total of round trips)" "$(tot k_create_ckptd)" "$( [ "$LV" = 1 ] && tot k_create_lvpy || echo "$LVNA") python" "$(tot k_create_limit) QMP" "$(totr k_create_ckptd k_create_lvpy)" "$(totr k_create_ckptd k_create_limit)"
row "$KCOUNT checkpoints, 1 disk: each create (ms)" "$(cell k_create_ckptd)" "$(lvcell k_create_lvpy) python" "$(cell k_create_limit) QMP" "$(ratio k_create_ckptd k_create_lvpy)" "$(ratio k_create_ckptd k_create_limit)"
row "$KCOUNT checkpoints: list, python client (ms)⁷" "$(cell k_listpy_ckptd) python" "$(lvcell k_list_lvpy) python" "—" "$(ratio k_listpy_ckptd k_list_lvpy)" "—"
row "$KCOUNT checkpoints: list, client (ms)⁷" "$(cell k_list_ckptd) C (qmpbench)" "$(lvcell k_list_lvpy) python" "$(cell k_list_limit) query-named-block-nodes" "$(ratio k_list_ckptd k_list_lvpy)" "$(ratio k_list_ckptd k_list_limit)"
row "$KCOUNT checkpoints: list, one process (ms)" "$(cell k_listproc_ckptd) ckptctl" "$(lvcell k_listproc_virsh) virsh" "—" "$(ratio k_listproc_ckptd k_listproc_virsh)" "—"
row "$KCOUNT checkpoints (a linear chain): list --tree, one process (ms)" "$(cell k_tree_ckptd) ckptctl, $(med k_treebytes_ckptd) bytes" "$(lvcell k_tree_virsh) virsh, $( [ "$LV" = 1 ] && med k_treebytes_virsh) bytes" "—" "$(ratio k_tree_ckptd k_tree_virsh)" "—"
row "$KCOUNT checkpoints: backup-begin incremental from the oldest (ms)⁴" "$(cell k_inc_ckptd)" "$(lvcell k_inc_lvpy) python" "$(cell k_inc_limit) QMP, $FLEECE_LBL" "$(ratio k_inc_ckptd k_inc_lvpy)" "$(ratio k_inc_ckptd k_inc_limit)"
row "$KCOUNT checkpoints: backup-begin incremental from the oldest: against the old fleecing path's bare sequence⁴" "$(cell k_inc_ckptd)" "—" "$(cell k_inc_limitold) QMP, blockdev-backup sync=none" "—" "$(ratio k_inc_ckptd k_inc_limitold)"
row "$K8COUNT checkpoints × 8 disks: each create (ms)" "$(cell k8_create_ckptd)" "—" "—" "—" "—"
row "resident memory, idle (VmRSS)⁸" "$(kb rss_idle_ckptd)" "$( [ "$LV" = 1 ] && kb rss_idle_lv || echo "$LVNA") libvirtd+virtlogd" "—" "$(ratio rss_idle_ckptd rss_idle_lv)" "—"
row "resident memory with $K8COUNT checkpoints × 8 disks⁸" "$(kb rss_k8_ckptd)" "$( [ "$LV" = 1 ] && kb rss_end_lv || echo "$LVNA") libvirtd+virtlogd, end of run" "—" "$(ratio rss_k8_ckptd rss_end_lv)" "—"
row "agent start to first answer, 0 checkpoints (ms)⁹" "$(cell start_ckptd)" "—" "—" "—" "—"
row "agent start to first answer, $K8COUNT checkpoints × 8 disks (ms)⁹" "$(cell start_k8_ckptd)" "—" "—" "—" "—"
)

LVFOOT="1. libvirt columns: libvirt 9.0's qemu driver (libvirtd + virtlogd) on the same machine, set up as ../shared/REFERENCE-LIBVIRT.md says."
[ "$LV" = 1 ] || LVFOOT="1. libvirt was not available: $LV_WHY."
FOOT=$(cat <<EOF
Cells: median (min–max) ×samples. Ratios divide the medians in the row's
unit: for times below 1 means ckptd is faster or smaller; for MB/s and IOPS
above 1 means ckptd is faster. MB = 10^6 bytes.

$LVFOOT
2. Client round trip: one persistent connection, request sent to reply read
   (bench/qmpbench for ckptd and the bare QEMU, python3-libvirt
   \`checkpointCreateXML\` for libvirt). ckptd's transaction on each disk
   disables the previous checkpoint's bitmap and adds the new data bitmap
   and its record bitmap; the limit sends exactly that transaction to a
   second QEMU of the same kind (no agent) on its own monitor. libvirt's
   domain is a separate QEMU started by libvirt (kvm accel when present, as
   ours). ${R_CREATE} round trips in 3 interleaved rounds; one-process rows:
   \`ckptctl checkpoint create\` vs \`virsh checkpoint-create-as\`, ${R_PROC} runs.
3. Each delete is followed by an untimed create at the end, so every delete
   meets a chain of $CHAIN and removes its middle element. The limit: one
   transaction merging the bitmap into its parent and removing it and its
   record (what ckptd sends).
4. backup-begin: pull, incremental from the previous checkpoint, a new
   checkpoint in the same transaction, NBD over a Unix socket, qcow2 scratch.
   backup-end: ckptd's \`backup-end\`, libvirt's \`abortJob\`
   (\`virsh domjobabort\`). The limit is the bare QMP sequence ckptd sends for
   the fleecing path it took, asked before timing (the "fleecing" of an
   untimed \`backup-begin\`; this run: ${FLEECE:-not measured}), sent one command at a
   time by bench/qmpbench to the second QEMU. Both paths: nbd-server-start,
   a file node on the scratch, a qcow2 made by a blockdev-create job (waited
   for, dismissed), the qcow2 node. "filter" (ckptd's own copy-before-write
   filter, agent/job-fleece.c): the scratch without backing, blockdev-add
   copy-before-write over the disk (target the scratch, on-cbw-error
   break-snapshot), one transaction (temporary bitmap, merge, the new
   checkpoint), qom-set of the device's drive to the filter, blockdev-add
   snapshot-access over it, the recording bitmap merged into the temporary
   one, block-export-add of the view; end: block-export-del (hard, until
   BLOCK_EXPORT_DELETED), blockdev-del of the view, qom-set back, the
   temporary bitmap removed, blockdev-del of filter, scratch, file node,
   nbd-server-stop. "backup-job" (the old path): the scratch backed by the
   disk, one transaction (temporary bitmap, merge, new checkpoint,
   blockdev-backup sync=none), block-export-add; end: export deleted,
   job-cancel until the job is gone, the nodes and bitmap removed. The old
   path's sequence is also measured, interleaved, for its own rows (with the
   filter path taken: what ckptd's path costs in QEMU against the old one).
   The ${KCOUNT}-checkpoint row's limit is the same sequence without a new
   checkpoint, merging all ${KCOUNT} bitmaps.
5. Time for the whole pull: \`ckptctl pull --pull --disk vda --incremental PREV
   --checkpoint NEXT\` (begin, copy with ckptd's libnbd engine, which writes
   the new qcow2 itself, flush, end; ckptctl's default); the push rows time
   \`ckptctl pull --push\` (the files passed to the agent with getfd, \`backup-begin\` mode push,
   QEMU copying into them until \`BACKUP_END\`, the records' SHA-256), on
   the same changes (an incremental from the same checkpoint) in the same
   rounds; libvirt: backupBegin (with a new
   checkpoint), the same engine (bench/nbdpull, linked with libckptd.a) on
   libvirt's export, abortJob. Limits, all in the same rounds on the same
   VM and data: for incrementals the plain libnbd extent reader
   (bench/extread: \`backup begin --incremental PREV --checkpoint X\`, block status of the
   dirty bitmap, read every dirty extent, 16 × 256 KiB in flight, throw
   the data away, \`backup end\`; one process timed whole), and the same
   reader storing what it reads ("that stores" rows: the same reads in
   flight, each chunk pwritten at its offset into a new raw file sized to
   the export as it arrives, fdatasync at the end; no hashing, no qcow2):
   what storing costs at the least, where ckptd also writes a qcow2 and
   its records; the goals stay against the reader that stores nothing; for the full
   backup \`nbdcopy --flush\` of the export to a raw sparse file (timed
   whole the same way: \`backup begin --checkpoint X\`, nbdcopy, \`backup
   end\`), and QEMU's
   own push job (\`blockdev-backup sync=full\` into a new qcow2 target node
   on the bench's monitor, until the node is closed); the old limit,
   \`nbdcopy --flush --destination-is-zero\` into a new qcow2 served by
   qemu-nbd, is kept for what it is: the socket hop through qemu-nbd costs
   about half; its exports are set up beforehand and not timed.
   The ${PULL_GIB} GiB disk is sparse and holds data only
   where the changes are (1 MiB every 100 MiB for 1%, every 10 MiB for 10%,
   rewritten through the device path with \`qemu-io -d vda/virtio-backend\` via
   HMP before each pull), so the limit copies exactly the changed extents.
   The full pull reads ${FULL_GIB} GiB written the same way (256 MiB pieces) into a
   sparse ${PULL_GIB} GiB disk. Repetitions: ${R_INC1} (1%), ${R_INC10} (10%), ${R_FULL} (full),
   interleaved ckptd / limit / libvirt. Throughput is of the changed data.
6. \`qemu-img bench -w -c ${GW_N} -d 32 -s 4k -S 64k -t writeback\` on a 1 GiB
   qcow2 (metadata preallocated, so no cluster allocation is timed) holding
   N checkpoints as \`qemu-img bitmap --add\` made them: ckptd's layout (only
   the newest of N data bitmaps recording, plus N disabled record bitmaps)
   in the ckptd column, libvirt's (all N recording) in the libvirt column, no
   bitmap as the limit. ${GW_RUNS} runs of each, interleaved; IOPS = requests / time.
7. ckptd: one \`checkpoint-list\`, whose reply carries the name, parent,
   creation time and disks (node, bitmap, state) of every checkpoint;
   libvirt: \`listAllCheckpoints\`, which returns checkpoint objects, and
   \`getName\` read on each. "python client": both from python over one
   connection each, ckptd by bench/ckpy.py (request written to reply read
   whole and json.loads'ed: all ${KCOUNT} checkpoints as python objects),
   libvirt by python3-libvirt, in 5 interleaved rounds of 2 calls; the goal
   uses this row. "client": ckptd from C (bench/qmpbench, jansson
   json_loadb of the reply) against the same libvirt samples. Limit: one
   \`query-named-block-nodes\` (where all the bitmaps are), from C.
8. VmRSS from /proc. Idle: a fresh agent 200 ms after its first answer (no
   checkpoint, 1 disk). With checkpoints: the agent that created them all.
   libvirt: libvirtd + virtlogd, idle when first connected, and at the end of
   the run with this run's domains (one with $KCOUNT checkpoints) defined.
9. From exec of ckptd (QEMU already running) to the first \`query-status\`
   answering "qemu": "connected" on its control socket (bench/agentstart).
EOF
)
[ "$QUICK" = 1 ] && FOOT="$FOOT"$'\n'"BENCH_QUICK=1: reduced repetitions and sizes, a smoke test only."
[ ${#NOTES[@]} -gt 0 ] && FOOT="$FOOT"$'\n\n'"Notes from this run:"$'\n'"$(printf -- '- %s\n' "${NOTES[@]}")"

# ---- goals ---------------------------------------------------------------
PASS=0 FAIL=0
GOALS="| goal | measured | target | result |"$'\n'"| --- | --- | --- | --- |"
goal() {   # text value(or "") op target
    local text=$1 v=$2 op=$3 tgt=$4 res
    if [ -z "$v" ] || [ "$v" = "—" ]; then res="not measured"; FAIL=$((FAIL + 1))
    elif awk -v v="$v" -v t="$tgt" -v op="$op" 'BEGIN { exit !(op == "<=" ? v <= t : v >= t) }'; then
        res=met; PASS=$((PASS + 1))
    else res=missed; FAIL=$((FAIL + 1)); fi
    local shown="—"
    [ "$res" != "not measured" ] && shown="$(num "$v")${5:-×}"
    GOALS+=$'\n'"| $text | $shown | $op $tgt${5:-×} | $res |"
}
rv() { local a b; a=$(med "$1") && b=$(med "$2") && [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { printf "%.4g", a / b }'; }
goal "create, 1 disk: ckptd round trip ÷ bare QMP transaction" "$(rv create1_ckptd create1_limit)" "<=" 2
goal "create, 8 disks: ckptd round trip ÷ bare QMP transaction" "$(rv create8_ckptd create8_limit)" "<=" 2
goal "create, 1 disk: libvirt (python) ÷ ckptd round trip" "$(rv create1_lvpy create1_ckptd)" ">=" 20
goal "create, 8 disks: libvirt (python) ÷ ckptd round trip" "$(rv create8_lvpy create8_ckptd)" ">=" 20
goal "create, 1 disk: virsh ÷ ckptctl (one process each)" "$(rv createproc1_virsh createproc1_ckptd)" ">=" 20
goal "incremental pull 1%: ckptd MB/s ÷ plain extent reader MB/s" "$(rv inc1_ext inc1_ckptd)" ">=" 0.9
goal "incremental pull 10%: ckptd MB/s ÷ plain extent reader MB/s" "$(rv inc10_ext inc10_ckptd)" ">=" 0.9
goal "full pull: ckptd MB/s ÷ nbdcopy to a raw file MB/s" "$(rv full_raw full_ckptd)" ">=" 0.9
goal "full local backup (ckptctl pull, its default path): ckptd MB/s ÷ QEMU's push job MB/s" "$(rv full_push full_ckptd)" ">=" 0.9
goal "incremental local backup 1%: ckptd MB/s ÷ QEMU's incremental push job MB/s" "$(rv inc1_qpush inc1_ckptd)" ">=" 0.9
goal "incremental local backup 10%: ckptd MB/s ÷ QEMU's incremental push job MB/s" "$(rv inc10_qpush inc10_ckptd)" ">=" 0.9
goal "backup-end: ckptd round trip ÷ bare QMP sequence" "$(rv end_ckptd end_limit)" "<=" 1.3
goal "$KCOUNT checkpoints: list, ckptd ÷ libvirt (python), both from python (reply json.loads'ed ÷ listAllCheckpoints + getName)" "$(rv k_listpy_ckptd k_list_lvpy)" "<=" 1
goal "guest writes: IOPS with 100 checkpoints ÷ with 1 (ckptd layout)" "$(rv gw_ck1 gw_ck100)" ">=" 0.95
goal "agent resident memory idle" "$(med rss_idle_ckptd)" "<=" 4096 " KiB"

REPORT=$(cat <<EOF
Machine: $MACHINE.
Run: $DATE, \`make bench\`$( [ "$QUICK" = 1 ] && echo " with BENCH_QUICK=1"), ${ELAPSED} s.

$TABLE

$FOOT

Goals (ratios from the medians above):

$GOALS
EOF
)
echo
echo "$REPORT"
# What follows this line in BENCHMARKS.md is written by hand (analysis,
# profiles) and kept as it is by a re-run.
KEEP_MARK='<!-- Written by hand below this line; make bench keeps it. -->'
if [ "$OUT" != "-" ]; then
    KEPT=""
    [ -f "$OUT" ] && KEPT=$(sed -n "/^$KEEP_MARK\$/,\$p" "$OUT")
    {
        cat <<'EOF'
# Benchmarks

ckptd against libvirt 9.0 doing the same work on the same machine in the
same run, and against the limit: a bare QMP transaction with the same
actions sent to a second QEMU of the same kind; for data, what reads or
copies the same export fastest (nbdcopy to a raw sparse file, a plain
libnbd reader of the dirty extents) and QEMU's own push job. Written by
`make bench` (bench/bench.sh; as root it installs and starts libvirt
itself, and removes everything it made at the end); re-run it to refresh
this file. The numbers come from a small, shared, noisy machine: compare
the ratios, which are measured side by side, rather than the absolute
times.

EOF
        echo "$REPORT"
        if [ -n "$KEPT" ]; then echo; echo "$KEPT"; fi
    } >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
    log "wrote $OUT"
fi
echo
echo "$PASS passed, $FAIL failed"
