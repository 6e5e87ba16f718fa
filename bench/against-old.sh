#!/bin/bash
# Two builds of ckptd side by side: each on its own 1-disk VM, a third VM
# of the same kind for the bare QMP transaction, rounds interleaved (start
# and idle RSS, checkpoint-create, backup-begin/end, checkpoint-list);
# prints median (min-max) xN per figure.  BENCHMARKS.md's comparison with
# the agent before this round (ea7540e) was made with it.
#
#   OLD=/path/to/old/ckptd bench/against-old.sh   (as root or with /dev/kvm)
#
# Needs `make bench`'s tools built (build/bench/qmpbench, agentstart).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=${OLD:?OLD=path of the ckptd to compare with}
NEW=${NEW:-$ROOT/build/ckptd}
QB=$ROOT/build/bench/qmpbench; AS=$ROOT/build/bench/agentstart
D=$(mktemp -d /tmp/ckptd-against-old.XXXXXX)
cd $D; PIDS=()
vm() { local n=$1; mkdir -p $D/vm-$n; qemu-img create -q -f qcow2 $D/vm-$n/vda.qcow2 1G
  qemu-system-x86_64 -machine q35 -accel kvm -accel tcg -S -nodefaults -display none -m 128 \
   -qmp unix:$D/vm-$n/qmp.sock,server=on,wait=off -qmp unix:$D/vm-$n/test.sock,server=on,wait=off \
   -blockdev driver=file,filename=$D/vm-$n/vda.qcow2,node-name=vda-file -blockdev driver=qcow2,file=vda-file,node-name=vda-fmt \
   -device virtio-blk-pci,drive=vda-fmt,id=vda >$D/vm-$n/qemu.log 2>&1 & PIDS+=($!); }
agent() { local n=$1 bin=$2; XDG_RUNTIME_DIR=$D/vm-$n $bin --qmp $D/vm-$n/qmp.sock --control $D/vm-$n/ckptd.sock --ready-file $D/vm-$n/ready 2>$D/vm-$n/ckptd.log & PIDS+=($!)
  for i in $(seq 200); do [ -e $D/vm-$n/ready ] && return; sleep 0.05; done; echo "agent $n not ready"; }
vm old; vm new; vm bare; sleep 1
# start time and idle RSS (agentstart: spawn, first answer, RSS 200 ms later)
for r in 1 2 3 4 5; do
  for n in old new; do bin=$OLD; [ $n = new ] && bin=$NEW
    XDG_RUNTIME_DIR=$D/vm-$n $AS 2 $D/vm-$n/ckptd.sock $bin --qmp $D/vm-$n/qmp.sock --control $D/vm-$n/ckptd.sock 2>/dev/null | sed "s/^/$n /"
  done
done > $D/start.txt
agent old $OLD; agent new $NEW
prev=0
for r in 1 2 3 4 5; do
  for n in old new; do
    for i in $(seq 1 10); do k=$(( (r-1)*10 + i )); echo "create#$k checkpoint-create {\"name\":\"c$k\"}"; done | $QB $D/vm-$n/ckptd.sock | sed "s/^/$n /"
  done
  for i in $(seq 1 10); do k=$(( (r-1)*10 + i ))
    a=""; [ $k -gt 1 ] && a="{\"type\":\"block-dirty-bitmap-disable\",\"data\":{\"node\":\"vda-fmt\",\"name\":\"c$((k-1))\"}},"
    a+="{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vda-fmt\",\"name\":\"c$k\",\"persistent\":true,\"disabled\":false}},{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vda-fmt\",\"name\":\"ckptd1:$k:0:c$k\",\"persistent\":true,\"disabled\":true,\"granularity\":2147483648}}"
    echo "create#$k transaction {\"actions\":[$a]}"
  done | $QB $D/vm-bare/test.sock | sed "s/^/bare /"
  for n in old new; do
    for i in 1 2; do printf "begin#$r$i backup-begin {\"incremental\":\"c1\",\"checkpoint\":{\"name\":\"b$r$i\"}}\nend#$r$i backup-end {\"id\":\"%%ID%%\"}\n"; done | $QB $D/vm-$n/ckptd.sock | sed "s/^/$n /"
    for i in 1 2; do echo "list#$r$i checkpoint-list"; done | $QB $D/vm-$n/ckptd.sock | sed "s/^/$n /"
  done
done > $D/ops.txt
for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null
D=$D python3 - <<'PY'
import statistics as st, collections, os
d=collections.defaultdict(list)
for f in (os.environ["D"] + "/start.txt", os.environ["D"] + "/ops.txt"):
    for l in open(f):
        p=l.split()
        if len(p)==3: d[(p[0],p[1])].append(float(p[2]))
for k in ("start","rss","create","begin","end","list"):
    row=[k]
    for n in ("old","new","bare"):
        v=d.get((n,k))
        row.append("%s %.2f (%.2f-%.2f) x%d"%(n, st.median(v), min(v), max(v), len(v)) if v else "")
    print(" | ".join(row))
PY
rm -rf "$D"
