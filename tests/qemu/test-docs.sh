#!/bin/bash
# ckptctl's command table (ckptctl/main.c) is the one description of its
# commands: --help, `help COMMAND` and the bash completion read it from the
# binary.  The man page is written by hand, so this test holds it to the
# table: every command the binary lists has an entry in ckptctl(1), and
# every option its synopsis names appears in that entry; the completion
# finds every command.
. "$(dirname "$0")/shtest.sh"
shtest_init

MAN=doc/ckptctl.1
commands=$("$CKPTCTL" --help | sed -n '/^Commands/,/^[A-Z]/s/^  \([a-z][a-z-]*\( [a-z][a-z-]*\)\{0,1\}\)\( .*\)\{0,1\}$/\1/p')
[ -n "$commands" ] || { fail commands "ckptctl --help lists no command"; finish; exit 1; }

# The man page's entry for a command: from its ".B NAME" line under .TP to
# the next .TP, with troff escapes taken out.
entry() {
    awk -v name="$1" '
        /^\.TP/ { inside = 0; next }
        /^\.B / { line = $0; sub(/^\.B /, "", line); gsub(/\\f[BIR]/, "", line);
                  gsub(/\\-/, "-", line);
                  if (index(line, name) == 1 &&
                      (length(line) == length(name) || substr(line, length(name) + 1, 1) == " "))
                      inside = 1 }
        inside { l = $0; gsub(/\\f[BIR]/, "", l); gsub(/\\-/, "-", l); print l }
    ' "$MAN"
}

while IFS= read -r cmd; do
    [ "$cmd" = help ] && continue
    e=$(entry "$cmd")
    if [ -z "$e" ]; then
        fail "man-${cmd// /-}" "ckptctl(1) has no entry for '$cmd'"
        continue
    fi
    missing=""
    for opt in $("$CKPTCTL" help $cmd 2>/dev/null | sed -n '/^Usage:/,/^$/p' |
                 grep -o -- '--[a-z][a-z-]*' | sort -u); do
        printf '%s\n' "$e" | grep -q -- "$opt" || missing="$missing $opt"
    done
    if [ -n "$missing" ]; then
        fail "man-${cmd// /-}" "ckptctl(1)'s entry for '$cmd' lacks$missing"
    else
        pass "man-${cmd// /-}"
    fi
done <<< "$commands"

# The completion reads the same list.
if [ -f /usr/share/bash-completion/bash_completion ]; then
    got=$(bash -c '. contrib/bash-completion/ckptctl; _ckptctl_commands "$1"' _ "$CKPTCTL")
    check completion-commands "the completion does not see the binary's commands" \
        test "$got" = "$commands"
else
    got=$(bash -c '. contrib/bash-completion/ckptctl 2>/dev/null; _ckptctl_commands "$1"' _ "$CKPTCTL")
    check completion-commands "the completion does not see the binary's commands" \
        test "$got" = "$commands"
fi
finish
