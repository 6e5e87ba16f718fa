#!/bin/sh
# Runs each libFuzzer harness for $FUZZ_SECONDS (default 20) from its seed corpus;
# new inputs go to a temporary directory, crashes to $BUILD_FUZZ/crash-*.
# One harness that runs clean for the whole time is one test passed.
# Ends with the line "N passed, N failed".
secs=${FUZZ_SECONDS:-20}
dir=${BUILD_FUZZ:-build-fuzz}
passed=0
failed=0
for f in "$dir"/fuzz-*; do
    name=${f##*/fuzz-}
    work=$(mktemp -d)
    printf '=== fuzz %s (%ss)\n' "$name" "$secs"
    if "$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -max_len=65536 -artifact_prefix="$dir/crash-$name-" \
            "$work" "tests/fuzz/corpus/$name" >"$work.log" 2>&1; then
        tail -n 1 "$work.log"
        echo "PASS fuzz-$name"
        passed=$((passed + 1))
    else
        tail -n 40 "$work.log"
        echo "FAIL fuzz-$name: see the crash input in $dir"
        failed=$((failed + 1))
    fi
    rm -rf "$work" "$work.log"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
