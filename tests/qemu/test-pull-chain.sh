#!/bin/bash
# ckptctl pull writes the backup qcow2 files itself (nbd/qcow2-out.c): a
# full backup and a chain of incrementals, with guest writes in between
# that are unaligned, cross clusters, zero data the previous backup holds,
# and touch the disk's last bytes.  Every file must pass `qemu-img check`,
# name its predecessor as a relative qcow2 backing file, and restore to
# exactly the bytes of a shadow raw file that took the same writes.
# This is ckptctl's default path (no option; the check "mode-pull" holds
# it to that).  test-push-chain.sh runs the same with CHAIN_MODE=push
# (--push), where QEMU writes the files ckptctl opened and passed as
# descriptors.
. "$(dirname "$0")/shtest.sh"
shtest_init
CHAIN_MODE=${CHAIN_MODE:-pull}
mode_args=()
[ "$CHAIN_MODE" = push ] && mode_args=(--push)

QMP_SEND=$BIN/qmp-send
SIZE=$((64 << 20))
# Start-up data: two regions and the last 4 KiB.
make_disk "$T/vda.qcow2" $SIZE &&
    qemu-io -f qcow2 -c 'write -P 0xab 0 3M' -c 'write -P 0xcd 40M 1M' \
        -c "write -P 0xef $((SIZE - 4096)) 4096" "$T/vda.qcow2" >/dev/null &&
    qemu-img convert -O raw "$T/vda.qcow2" "$T/shadow.raw" ||
    { fail setup "cannot create the disk"; finish; exit 1; }

spawn Q "$QEMU" -machine q35 $ACCEL -S -nodefaults -display none \
    -qmp "unix:$T/qmp.sock,server=on,wait=off" -qmp "unix:$T/test.sock,server=on,wait=off" \
    -blockdev "driver=file,filename=$T/vda.qcow2,node-name=vda-file" \
    -blockdev "driver=qcow2,file=vda-file,node-name=vda-fmt" \
    -device "virtio-blk-pci,drive=vda-fmt,id=vda" </dev/null >>"$T/qemu.log" 2>&1
wait_for 20 test -S "$T/test.sock" ||
    { fail setup "QEMU did not start"; tail_log "$T/qemu.log"; finish; exit 1; }
spawn A "$CKPTD" --qmp "$T/qmp.sock" --control "$T/ckptd.sock" --ready-file "$T/ready" \
    2>"$T/agent.log"
wait_for 20 test -e "$T/ready" ||
    { fail setup "agent not ready"; tail_log "$T/agent.log"; finish; exit 1; }
ctl() { "$CKPTCTL" --socket "$T/ckptd.sock" "$@"; }

# w QEMU-IO-WRITE...: one guest write, on the device and on the shadow.
w() {
    local hmp
    hmp=$(printf '{"command-line": "qemu-io -d vda/virtio-backend \\"%s\\""}' "$*")
    "$QMP_SEND" --hmp-ok "$T/test.sock" human-monitor-command "$hmp" >/dev/null &&
        qemu-io -f raw -c "$*" "$T/shadow.raw" >/dev/null
}

B=$T/backups
pulls=(c0 c1 c2 c3)
# The writes before each pull (c0: the start-up data only).
writes_c1() {
    w write -P 0x11 5120 1024 &&                    # inside one cluster
    w write -P 0x12 $((3 << 20)) 70000 &&           # just past data, crossing
    w write -z $((1 << 20)) $((1 << 20)) &&         # zero 1 MiB of c0's data
    w write -z $(((2 << 20) + 4096)) 8192 &&        # an unaligned zero
    w write -P 0x13 $((SIZE - 512)) 512             # the last sector
}
writes_c2() {
    w write -z 0 65536 &&                           # zero the first cluster
    w write -P 0x14 2000000 300000 &&
    w write -P 0x15 $((40 << 20)) 131072
}
writes_c3() {
    w write -P 0x16 $((20 << 20)) $((5 << 20)) &&   # a new region
    w write -z $((40 << 20)) $((1 << 20))           # zero what c0 and c2 wrote
}

prev=""
for c in "${pulls[@]}"; do
    if [ -n "$prev" ]; then
        "writes_$c" || { fail "writes-$c" "a guest write failed"; break; }
    fi
    cp --sparse=always "$T/shadow.raw" "$T/want-$c.raw"
    if [ -z "$prev" ]; then
        args=(--checkpoint "$c"); kind=full
    else
        args=(--incremental "$prev" --checkpoint "$c"); kind=inc
    fi
    if ctl pull --output "$B" --disk vda "${mode_args[@]}" "${args[@]}" >"$T/pull-$c.out" 2>&1; then
        pass "pull-$c"
    else
        fail "pull-$c" "$(tail -n 2 "$T/pull-$c.out" | tr '\n' ' ')"
        break
    fi
    f=$B/vda.$c.$kind.qcow2
    check "qemu-img-check-$c" "qemu-img check of $f: $(qemu-img check "$f" 2>&1 | head -2 | tr '\n' ' ')" \
        qemu-img check -q "$f"
    if [ -n "$prev" ]; then
        back=$(qemu-img info --output=json "$f" | sed -n 's/.*"backing-filename": "\([^"]*\)".*/\1/p')
        fmt=$(qemu-img info --output=json "$f" | sed -n 's/.*"backing-filename-format": "\([^"]*\)".*/\1/p')
        want=$(basename "$(ls "$B"/vda."$prev".*.qcow2)")
        check "backing-$c" "backing file '$back' ($fmt), expected '$want' (qcow2)" \
            [ "$back" = "$want" ] && [ "$fmt" = qcow2 ]
    fi
    prev=$c
done

# The backups took the path asked for.
got_mode=$(grep -c "starting: .*, push" "$T/agent.log")
if [ "$CHAIN_MODE" = push ]; then
    check "mode-$CHAIN_MODE" "$got_mode of ${#pulls[@]} backups were pushes" [ "$got_mode" = ${#pulls[@]} ]
else
    check "mode-$CHAIN_MODE" "$got_mode backups were pushes" [ "$got_mode" = 0 ]
fi

# Every point of the chain restores to its shadow, byte for byte.
for c in "${pulls[@]}"; do
    [ -e "$T/want-$c.raw" ] || continue
    if ctl restore "$B" --disk vda --checkpoint "$c" --output "$T/got-$c.raw" --format raw \
        >"$T/restore-$c.out" 2>&1; then
        check "restore-$c-bytes" "$(cmp "$T/got-$c.raw" "$T/want-$c.raw" 2>&1 | head -1)" \
            cmp -s "$T/got-$c.raw" "$T/want-$c.raw"
    else
        fail "restore-$c" "$(tail -n 2 "$T/restore-$c.out" | tr '\n' ' ')"
    fi
done
# The zero clusters of the incrementals are stored as such, not as data:
# c3's file holds its 5 MiB of new data and little more.
f=$B/vda.c3.inc.qcow2
[ -e "$f" ] && check c3-size "c3 is $(stat -c %s "$f") bytes for 5 MiB of data" \
    [ "$(stat -c %s "$f")" -lt $(((5 << 20) + (1 << 20))) ]
finish
