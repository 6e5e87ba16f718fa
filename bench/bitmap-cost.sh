#!/bin/bash
# bitmap-cost.sh LAYOUT N [DIR]: what N checkpoints cost a 256 MiB qcow2
# (metadata/README.md, "What the record bitmap costs").  One QEMU makes N
# checkpoints with the transactions ckptd sends, a 1 MiB guest write
# between two, then quits; prints the file size, the bytes allocated and
# how long `qemu-img info` takes to open the image.
#   LAYOUT two:  data bitmap C + record ckptd1:SEQ:CTIME:C (2 GiB
#                granularity, disabled): ckptd's format
#          one:  the data bitmap named with the record, no record bitmap
#          none: no bitmap (the guest writes alone)
# Needs build/bench/qmpbench (make bench builds it).
set -u -o pipefail
L=$1 N=$2 D=${3:-$(mktemp -d "${TMPDIR:-/tmp}/bitmap-cost.XXXXXX")}
B=${BUILD:-build}
mkdir -p "$D"
qemu-img create -q -f qcow2 "$D/d.qcow2" 256M || exit 1
qemu-system-x86_64 -machine q35 -accel kvm -accel tcg -S -nodefaults -display none -m 64 \
    -qmp "unix:$D/t.sock,server=on,wait=off" \
    -blockdev "driver=file,filename=$D/d.qcow2,node-name=f" \
    -blockdev "driver=qcow2,file=f,node-name=vda-fmt" \
    -device virtio-blk-pci,drive=vda-fmt,id=vda >"$D/q.log" 2>&1 &
qp=$!
for _ in $(seq 100); do [ -S "$D/t.sock" ] && break; sleep 0.05; done
name() { if [ "$L" = one ]; then echo "ckptd1:$1:1700000000:checkpoint-$1"; else echo "checkpoint-$1"; fi; }
add() { printf '{"type":"block-dirty-bitmap-add","data":{"node":"vda-fmt","name":"%s","persistent":true%s}}' "$1" "$2"; }
{
    for (( i=1; i<=N; i++ )); do
        a=""
        if [ "$L" != none ]; then
            [ "$i" -gt 1 ] && a="{\"type\":\"block-dirty-bitmap-disable\",\"data\":{\"node\":\"vda-fmt\",\"name\":\"$(name $((i - 1)))\"}},"
            a+=$(add "$(name "$i")" "")
            [ "$L" = two ] && a+=,$(add "ckptd1:$i:1700000000:checkpoint-$i" ',"disabled":true,"granularity":2147483648')
            echo "- transaction {\"actions\":[$a]}"
        fi
        printf -- '- human-monitor-command {"command-line": "qemu-io -d vda/virtio-backend \\"write -P 1 %dM 1M\\""}\n' $(( (i * 7) % 256 ))
    done
    echo "- quit"
} | "$B/bench/qmpbench" "$D/t.sock" >/dev/null || { echo "qmpbench failed" >&2; exit 1; }
wait "$qp"
qemu-img check -q "$D/d.qcow2" || exit 1
s=$(date +%s.%N)
qemu-img info "$D/d.qcow2" >/dev/null
e=$(date +%s.%N)
echo "$L $N: file $(stat -c %s "$D/d.qcow2") bytes, allocated $(du -B1 "$D/d.qcow2" | cut -f1) bytes, qemu-img info $(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.3f s", e - s }')"
[ -z "${3:-}" ] && rm -rf "$D"
exit 0
