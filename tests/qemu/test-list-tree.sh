#!/bin/bash
# `ckptctl checkpoint list --tree` prints a linear chain flat: one name a
# line in the first column, then the blank line that closes the tree (a
# chain of 10,000 used to indent 10,000 levels: 399 MB of output).
. "$(dirname "$0")/shtest.sh"
shtest_init

N=60
make_disk "$T/vda.qcow2" 16M || { fail setup "cannot create the disk"; finish; exit 1; }
start_qemu Q "$T" "$T/vda.qcow2"
wait_for 20 test -S "$T/qmp.sock" ||
    { fail setup "QEMU did not start"; tail_log "$T/qemu.log"; finish; exit 1; }
spawn A "$CKPTD" --qmp "$T/qmp.sock" --control "$T/ckptd.sock" --ready-file "$T/ready" \
    2>"$T/agent.log"
wait_for 20 test -e "$T/ready" ||
    { fail setup "agent not ready"; tail_log "$T/agent.log"; finish; exit 1; }
ctl() { "$CKPTCTL" --socket "$T/ckptd.sock" "$@"; }

for i in $(seq $N); do
    ctl checkpoint create "c$i" >/dev/null || { fail create "checkpoint c$i"; break; }
done
ctl checkpoint list --tree >"$T/tree.out" 2>&1
{ for i in $(seq $N); do echo "c$i"; done; echo; } >"$T/tree.want"
check tree-flat "--tree printed $(wc -c <"$T/tree.out") bytes: $(diff "$T/tree.want" "$T/tree.out" | head -3 | tr '\n' ' ')" \
    cmp -s "$T/tree.want" "$T/tree.out"
finish
