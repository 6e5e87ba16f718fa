#!/bin/sh
# Runs test binaries and adds up their results.  Each binary is either a
# cmocka program ("[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)") or
# one of ours that ends with "N passed, N failed".  A binary that crashes or
# exits non-zero without a summary counts as one failure.
# Ends with the line "N passed, N failed" (", N skipped" when any test
# skipped a case; its "SKIP name: reason" line says why).
# Every change the agent replays on its cached tree is checked against a
# re-read from QEMU (a mismatch aborts the agent, failing the test).
export CKPTD_DEBUG_VERIFY_TREE=1
passed=0
failed=0
skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
    name=${t#"${BUILD:-build}"/}
    printf '=== %s\n' "$name"
    "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    s=""
    if [ -z "$p$f" ]; then
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
        p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
        f=$(echo "$line" | sed -n 's/.*passed, \([0-9]*\) failed.*/\1/p')
        s=$(echo "$line" | sed -n 's/.*failed, \([0-9]*\) skipped.*/\1/p')
    fi
    skipped=$((skipped + ${s:-0}))
    p=${p:-0}
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "--- $name exited with status $rc"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done
# Skips are counted too; each test printed why ("SKIP name: reason").
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
