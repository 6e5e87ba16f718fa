#!/usr/bin/python3
"""lv.py: times libvirt API calls over one persistent connection
(python3-libvirt, so the daemon is measured without virsh's start-up).

    lv.py DOMAIN < SCRIPT

The script is read whole first.  Lines, as for bench/qmpbench:

    TAG create NAME                 checkpointCreateXML (every disk)
    TAG delete NAME                 checkpoint delete (merges into parent)
    TAG list                        listAllCheckpoints + names
    TAG begin INC|- NEW|- DISKS SOCK SCRATCHDIR
                                    backupBegin pull (INC: incremental from;
                                    NEW: checkpoint made with it; DISKS:
                                    comma list of the disks to back up)
    TAG end                         abortJob (ends the pull backup)
    TAG pull INC|- NEW|- DISK SOCK SCRATCHDIR NBDPULL OUT
                                    begin, copy DISK's export into OUT with
                                    ckptctl pull's engine (bench/nbdpull),
                                    end
    TAG hmp COMMAND-LINE...         an HMP command (qemu-io writes); any
                                    text in the reply is an error

Consecutive lines with one TAG are one sample; "NAME MS" per sample (NAME:
TAG up to '#'); TAG "-" is not printed.
"""
import subprocess
import sys
import time

import libvirt
import libvirt_qemu


def backup_xml(inc, disks, all_disks, sock, scratch, seq):
    x = "<domainbackup mode='pull'>"
    if inc != "-":
        x += "<incremental>%s</incremental>" % inc
    x += "<server transport='unix' socket='%s'/><disks>" % sock
    for d in all_disks:
        if d in disks:
            x += ("<disk name='%s' backup='yes' type='file'>"
                  "<scratch file='%s/lv-scratch-%d-%s.qcow2'/></disk>"
                  % (d, scratch, seq, d))
        else:
            x += "<disk name='%s' backup='no'/>" % d
    return x + "</disks></domainbackup>"


def ckpt_xml(name, disks=None):
    if name == "-":
        return None
    return "<domaincheckpoint><name>%s</name></domaincheckpoint>" % name


def main():
    libvirt.registerErrorHandler(lambda *a: None, None)
    conn = libvirt.open("qemu:///system")
    dom = conn.lookupByName(sys.argv[1])
    all_disks = sorted(set(
        t.split("'")[1] for t in dom.XMLDesc().split("<target dev=")[1:]))
    lines = [l.split() for l in sys.stdin.read().splitlines() if l.strip()]
    seq = 0
    cur, t0, t1 = None, 0.0, 0.0

    def emit(tag, ms):
        if tag.lstrip("?") != "-":
            print("%s %.3f" % (tag.lstrip("?").split("#")[0], ms), flush=True)

    for w in lines:
        tag, op, args = w[0], w[1], w[2:]
        if tag != cur:
            if cur is not None:
                emit(cur, (t1 - t0) * 1e3)
            cur, t0 = tag, time.perf_counter()
        seq += 1
        if op == "create":
            dom.checkpointCreateXML(ckpt_xml(args[0]))
        elif op == "delete":
            dom.checkpointLookupByName(args[0]).delete()
        elif op == "list":
            names = [c.getName() for c in dom.listAllCheckpoints()]
            assert names or True
        elif op == "begin":
            inc, new, disks, sock, scratch = args
            dom.backupBegin(backup_xml(inc, disks.split(","), all_disks,
                                       sock, scratch, seq), ckpt_xml(new))
        elif op == "end":
            dom.abortJob()
        elif op == "pull":
            inc, new, disk, sock, scratch, nbdpull, out = args
            dom.backupBegin(backup_xml(inc, [disk], all_disks, sock, scratch,
                                       seq), ckpt_xml(new))
            try:
                ctx = "qemu:dirty-bitmap:backup-%s" % disk if inc != "-" else "-"
                subprocess.run([nbdpull, "nbd+unix:///%s?socket=%s" % (disk, sock),
                                ctx, out], check=True, stdout=subprocess.DEVNULL)
            finally:
                dom.abortJob()
        elif op == "hmp":
            r = libvirt_qemu.qemuMonitorCommand(
                dom, " ".join(args), libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            if r.strip():
                sys.exit("lv.py: hmp: %s" % r.strip())
        else:
            sys.exit("lv.py: unknown operation %s" % op)
        t1 = time.perf_counter()
    if cur is not None:
        emit(cur, (t1 - t0) * 1e3)


if __name__ == "__main__":
    main()
