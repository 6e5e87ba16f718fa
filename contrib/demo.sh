#!/bin/sh
# make demo: a throw-away VM (QEMU with no guest, two qcow2 disks), ckptd
# beside it, a full and an incremental pull backup while "the guest" writes,
# then both disks restored at both points in time and compared with what
# they held at backup time.  Cleans up after itself.
set -eu
BUILD=${BUILD:-build}
BIN=$(cd "$BUILD" && pwd)
DIR=$(mktemp -d "${TMPDIR:-/tmp}/ckptd-demo.XXXXXX")
QEMU_PID=
AGENT_PID=
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }
now_ms() { date +%s%3N; }
ctl() { "$BIN/ckptctl" --socket "$DIR/ckptd.sock" "$@"; }
# Writes through the virtio device's own path, as a guest write would go.
guest_write() {   # disk pattern offset length
    "$BIN/qmp-send" --hmp-ok "$DIR/test.sock" human-monitor-command \
        "{\"command-line\": \"qemu-io -d $1/virtio-backend \\\"write -P $2 $3 $4\\\"\"}" >/dev/null
}
guest_flush() {
    "$BIN/qmp-send" --hmp-ok "$DIR/test.sock" human-monitor-command \
        "{\"command-line\": \"qemu-io -d $1/virtio-backend flush\"}" >/dev/null
}
# The disk as it is now (QEMU is idle between steps, so a shared read is
# consistent): the reference a restore must equal.
snapshot() {      # disk name
    guest_flush "$1"
    qemu-img convert -U -O raw "$DIR/$1.qcow2" "$DIR/ref-$1-$2.raw"
}

step "creating two 256 MiB qcow2 disks in $DIR"
for d in vda vdb; do qemu-img create -q -f qcow2 "$DIR/$d.qcow2" 256M; done

step "starting QEMU (no guest, CPU stopped) with two QMP monitors"
qemu-system-x86_64 -machine q35 -accel kvm -accel tcg -S -nodefaults -display none \
    -qmp "unix:$DIR/qmp.sock,server=on,wait=off" \
    -qmp "unix:$DIR/test.sock,server=on,wait=off" \
    -blockdev "driver=file,filename=$DIR/vda.qcow2,node-name=vda-file" \
    -blockdev driver=qcow2,file=vda-file,node-name=vda-fmt \
    -device virtio-blk-pci,drive=vda-fmt,id=vda \
    -blockdev "driver=file,filename=$DIR/vdb.qcow2,node-name=vdb-file" \
    -blockdev driver=qcow2,file=vdb-file,node-name=vdb-fmt \
    -device virtio-blk-pci,drive=vdb-fmt,id=vdb >"$DIR/qemu.log" 2>&1 &
QEMU_PID=$!

step "starting ckptd on one monitor"
XDG_RUNTIME_DIR=$DIR "$BIN/ckptd" --qmp "$DIR/qmp.sock" --control "$DIR/ckptd.sock" \
    --ready-file "$DIR/ready" 2>"$DIR/ckptd.log" &
AGENT_PID=$!
i=0
until [ -e "$DIR/ready" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat "$DIR/ckptd.log"; exit 1; }
    sleep 0.1
done
ctl status
ctl disks

step "the guest writes 64 MiB over both disks"
guest_write vda 0x11 0 32M
guest_write vdb 0x22 64M 32M
snapshot vda full; snapshot vdb full

step "full backup, starting checkpoint 'full1'"
t0=$(now_ms)
ctl pull --output "$DIR/backups" --checkpoint full1
echo "took $(( $(now_ms) - t0 )) ms"
ctl checkpoint list --parent --size

step "the guest writes 1 MiB more (two small places)"
guest_write vda 0x33 4M 512k
guest_write vdb 0x44 100M 512k
snapshot vda inc; snapshot vdb inc

step "incremental backup since 'full1', starting checkpoint 'inc1'"
t0=$(now_ms)
ctl pull --output "$DIR/backups" --incremental full1 --checkpoint inc1
echo "took $(( $(now_ms) - t0 )) ms"
ls -l "$DIR/backups"
full=$(du -k "$DIR/backups/vda.full1.full.qcow2" | cut -f1)
inc=$(du -k "$DIR/backups/vda.inc1.inc.qcow2" | cut -f1)
echo "vda: full backup ${full} KiB on disk, incremental ${inc} KiB"
[ "$inc" -lt "$full" ] || { echo "the incremental is not smaller"; exit 1; }

step "restoring both disks at both points and comparing with the references"
for d in vda vdb; do
    for point in full1:full inc1:inc; do
        ckpt=${point%%:*}; ref=${point##*:}
        ctl restore "$DIR/backups" --disk "$d" --checkpoint "$ckpt" \
            --output "$DIR/restore-$d-$ckpt.qcow2"
        qemu-img compare -q "$DIR/restore-$d-$ckpt.qcow2" "$DIR/ref-$d-$ref.raw"
        echo "$d at $ckpt: restore is identical to the disk at backup time"
    done
done

step "stopping ckptd and QEMU: nothing left behind"
kill "$AGENT_PID"; wait "$AGENT_PID"; AGENT_PID=
"$BIN/qmp-send" "$DIR/test.sock" quit >/dev/null || true
wait "$QEMU_PID" || true; QEMU_PID=
echo "demo passed"
