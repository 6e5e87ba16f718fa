#!/bin/bash
# What launchers rely on: readiness (--ready-file and sd_notify READY=1 only
# once QEMU is connected), --pidfile, SIGHUP ignored, SIGTERM exit 0,
# --log-format json, `ckptctl status` exit codes in each state, the config
# file and its precedence, --exit-with-qemu.
. "$(dirname "$0")/shtest.sh"
shtest_init

have_python=""
command -v python3 >/dev/null && have_python=1

make_disk "$T/vda.qcow2" 64M || { fail setup "qemu-img create"; finish; exit 1; }

# --- status with no agent at all ---
ctl_status "$T/nothing.sock"
check status-no-agent "ckptctl status exited $ctl_rc, expected 3" [ "$ctl_rc" = 3 ]

# --- only whole option names: getopt's prefixes would take --socket for
# --socket-group ---
out=$("$CKPTD" --qmp "$T/qmp.sock" --socket "$T/x.sock" 2>&1); rc=$?
check option-prefix-refused "ckptd --socket: exit $rc, $out" \
    eval '[ "$rc" = 2 ] && [[ "$out" == *"unknown option '"'"'--socket'"'"' (did you mean --socket-group?)"* ]]'

# --- a notify socket the test owns ---
notify_ok=""
if [ -n "$have_python" ]; then
    spawn NPID python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    d = s.recv(4096)
    with open(sys.argv[2], "ab") as f:
        f.write(d + b"\n.\n")
' "$T/notify.sock" "$T/notify.log"
    wait_for 10 test -S "$T/notify.sock" && notify_ok=1
    : >"$T/notify.log"
fi

# --- agent 1, started before QEMU ---
a1_env=()
[ -n "$notify_ok" ] && a1_env=(NOTIFY_SOCKET="$T/notify.sock")
spawn A1 env "${a1_env[@]}" "$CKPTD" --qmp "$T/qmp.sock" --control "$T/ckptd.sock" \
    --ready-file "$T/ready" --pidfile "$T/ckptd.pid" --log-format json \
    --log-level debug 2>"$T/agent1.log"
if ! wait_for 10 test -S "$T/ckptd.sock"; then
    fail agent-start "no control socket after 10 s"
    tail_log "$T/agent1.log"
    finish
    exit 1
fi
sleep 0.5                               # it would be ready by now if it were wrong
check ready-file-waits-for-qemu "ready file exists before QEMU started" \
    test ! -e "$T/ready"
ctl_status "$T/ckptd.sock"
check status-qemu-not-running "ckptctl status exited $ctl_rc, expected 1" [ "$ctl_rc" = 1 ]
if [ -n "$notify_ok" ]; then
    check sd-notify-waits-for-qemu "notification before QEMU: $(tr '\n' ' ' <"$T/notify.log")" \
        eval "! grep -q READY=1 '$T/notify.log'"
fi
check pidfile-content "pidfile holds '$(cat "$T/ckptd.pid" 2>/dev/null)', pid is $A1" \
    [ "$(cat "$T/ckptd.pid" 2>/dev/null)" = "$A1" ]

start_qemu Q1 "$T" "$T/vda.qcow2"
if wait_for 20 test -e "$T/ready"; then
    pass ready-file-after-qemu
else
    fail ready-file-after-qemu "no ready file 20 s after QEMU started"
    tail_log "$T/agent1.log"
    tail_log "$T/qemu.log"
fi
ctl_status "$T/ckptd.sock"
check status-connected "ckptctl status exited $ctl_rc, expected 0" [ "$ctl_rc" = 0 ]

if [ -n "$notify_ok" ]; then
    if wait_for 5 grep -q '^READY=1$' "$T/notify.log"; then
        pass sd-notify-ready
    else
        fail sd-notify-ready "no READY=1 on NOTIFY_SOCKET: $(tr '\n' ' ' <"$T/notify.log")"
    fi
else
    skip sd-notify-ready "python3 is not installed (needed for the test's notify socket)"
fi

# --- SIGHUP: ignored, with a log line ---
kill -HUP "$A1"
sleep 0.3
ctl_status "$T/ckptd.sock"
if kill -0 "$A1" 2>/dev/null && [ "$ctl_rc" = 0 ] && grep -q SIGHUP "$T/agent1.log"; then
    pass sighup-ignored
else
    fail sighup-ignored "after SIGHUP: alive=$(kill -0 "$A1" 2>/dev/null && echo yes || echo no), status $ctl_rc, log line: $(grep -c SIGHUP "$T/agent1.log")"
fi

# --- SIGTERM: exit 0, pidfile, ready file and socket gone ---
kill -TERM "$A1"
if wait_exit "$A1" 10; then
    check sigterm-exit-0 "exit status $exit_status" [ "$exit_status" = 0 ]
else
    fail sigterm-exit-0 "still running 10 s after SIGTERM"
fi
check pidfile-removed "pidfile still there after exit" test ! -e "$T/ckptd.pid"
check ready-file-removed "ready file still there after exit" test ! -e "$T/ready"
check control-socket-removed "control socket still there after exit" test ! -e "$T/ckptd.sock"
if [ -n "$notify_ok" ]; then
    check sd-notify-stopping "no STOPPING=1 at exit" grep -q '^STOPPING=1$' "$T/notify.log"
fi
ctl_status "$T/ckptd.sock"
check status-agent-gone "ckptctl status exited $ctl_rc, expected 3" [ "$ctl_rc" = 3 ]

# --- JSON logs: every line of agent 1's stderr is a JSON object ---
if [ ! -s "$T/agent1.log" ]; then
    fail json-logs "agent 1 logged nothing"
elif [ -n "$have_python" ]; then
    if out=$(python3 -c '
import json, sys
for n, line in enumerate(open(sys.argv[1]), 1):
    try:
        o = json.loads(line)
    except ValueError as e:
        sys.exit("line %d is not JSON (%s): %r" % (n, e, line))
    if not isinstance(o, dict) or "level" not in o or "msg" not in o:
        sys.exit("line %d has no level and msg: %r" % (n, line))
' "$T/agent1.log" 2>&1); then
        pass json-logs
    else
        fail json-logs "$out"
    fi
elif command -v jq >/dev/null; then
    check json-logs "a log line is not a JSON object" \
        jq -e 'has("level") and has("msg")' "$T/agent1.log" >/dev/null
else
    skip json-logs "neither python3 nor jq is installed"
fi

# --- agent 2: options from a config file, the command line wins; and
# --exit-with-qemu (from the file) ---
cat >"$T/ckptd.conf" <<EOF
# a comment, then options as "name = value"
qmp = $T/qmp.sock
control = $T/from-config.sock     # overridden on the command line
pidfile = $T/config.pid
log-format = json
log-level = warning
exit-with-qemu
EOF
spawn A2 "$CKPTD" --config "$T/ckptd.conf" --control "$T/ckptd2.sock" \
    --log-level info --ready-file "$T/ready2" 2>"$T/agent2.log"
if wait_for 20 test -e "$T/ready2"; then
    pass config-agent-ready
else
    fail config-agent-ready "agent with --config not ready after 20 s"
    tail_log "$T/agent2.log"
fi
check config-command-line-wins "control socket not at the command line's path" \
    eval "test -S '$T/ckptd2.sock' && test ! -e '$T/from-config.sock'"
check config-value-used "pidfile from the config file missing or wrong" \
    [ "$(cat "$T/config.pid" 2>/dev/null)" = "$A2" ]
# log-level: the file says warning, the command line info: "ready" is info.
check config-log-level-command-line "no info line: the file's log-level won" \
    grep -q '"msg":"ready"' "$T/agent2.log"

kill -TERM "$Q1"
if wait_exit "$A2" 15; then
    check exit-with-qemu "exit status $exit_status, expected 0" [ "$exit_status" = 0 ]
else
    fail exit-with-qemu "agent still running 15 s after QEMU quit"
    tail_log "$T/agent2.log"
fi
check exit-with-qemu-cleanup "pidfile, ready file or socket left" \
    eval "test ! -e '$T/config.pid' && test ! -e '$T/ready2' && test ! -e '$T/ckptd2.sock'"
wait_exit "$Q1" 10

# --- a bad config file: usage error 2, nothing created ---
printf 'qmp = %s\nno-such-option = 1\n' "$T/qmp.sock" >"$T/bad.conf"
rc=0
"$CKPTD" --config "$T/bad.conf" --control "$T/bad.sock" 2>"$T/bad.log" || rc=$?
if [ "$rc" = 2 ] && grep -q no-such-option "$T/bad.log" && [ ! -e "$T/bad.sock" ]; then
    pass config-unknown-option
else
    fail config-unknown-option "exit $rc: $(head -n 1 "$T/bad.log")"
fi

finish
