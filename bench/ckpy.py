#!/usr/bin/python3
"""ckpy.py: times ckptd control-socket commands from Python over one
persistent connection, the counterpart of bench/lv.py's python3-libvirt
calls (so both sides of a row pay Python's costs).

    ckpy.py SOCKET < SCRIPT

The script is read whole first.  Lines, as for bench/qmpbench:

    TAG COMMAND [JSON-ARGUMENTS]    send, read the reply and json.loads it

A sample is timed from the request written to the reply read whole AND
decoded into Python objects (for checkpoint-list: every checkpoint with
its name, parent, time and disks).  Consecutive lines with one TAG are one
sample; "NAME MS" per sample (NAME: TAG up to '#'); TAG "-" is not
printed.  An error reply stops the script, exit 1.
"""
import json
import socket
import sys
import time


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    f = s.makefile("rb", buffering=1 << 20)
    lines = [l.split(None, 2) for l in sys.stdin.read().splitlines() if l.strip()]

    def call(cmd, args):
        req = {"execute": cmd}
        if args is not None:
            req["arguments"] = args
        s.sendall(json.dumps(req).encode() + b"\n")
        while True:
            line = f.readline()
            if not line:
                sys.exit("ckpy.py: %s: connection closed" % cmd)
            msg = json.loads(line)
            if "event" in msg:
                continue
            if "error" in msg:
                sys.exit("ckpy.py: %s: %s" % (cmd, msg["error"].get("desc")))
            return msg["return"]

    if "QMP" not in json.loads(f.readline()):
        sys.exit("ckpy.py: no QMP greeting")
    call("qmp_capabilities", None)

    cur, t0, t1 = None, 0.0, 0.0

    def emit(tag, ms):
        if tag != "-":
            print("%s %.3f" % (tag.split("#")[0], ms), flush=True)

    for w in lines:
        tag, cmd = w[0], w[1]
        args = json.loads(w[2]) if len(w) > 2 else None
        if tag != cur:
            if cur is not None:
                emit(cur, (t1 - t0) * 1e3)
            cur, t0 = tag, time.perf_counter()
        call(cmd, args)
        t1 = time.perf_counter()
    if cur is not None:
        emit(cur, (t1 - t0) * 1e3)


if __name__ == "__main__":
    main()
