#!/usr/bin/env bash
# run.sh: runs test programs (C test binaries, shell and Python test scripts) and counts the
# "PASS/FAIL/SKIP name" lines they print. A program that exits non-zero without printing a FAIL line
# (a crash, a sanitizer report) counts as one failure. Ends with "N passed, N failed, N skipped" and
# exits 1 if anything failed. Each run also appends its counts to $CAV_TEST_LOGS/counts, and
# `run.sh --total` prints the sum over all runs as the closing line.
# Python scripts run under $CAV_PYTHON (default /usr/bin/python3, which has the Debian packages the Makefile
# installs; a GPU machine's image may hold numpy and torch in another Python).
# Usage: run.sh LABEL PROGRAM...   |   run.sh --total
set -u
root=${CAV_TEST_LOGS:-build/test-logs}
if [ "${1:-}" = "--total" ]; then
    read -r p f s < <(awk '{p+=$2; f+=$3; s+=$4} END {print p+0, f+0, s+0}' "$root/counts" 2>/dev/null || echo "0 0 0")
    echo "check: $p passed, $f failed, $s skipped"
    [ "$f" -eq 0 ] && [ "$p" -gt 0 ]
    exit
fi
label=$1; shift
pass=0 fail=0 skip=0
logdir=$root/$label
mkdir -p "$logdir"
for t in "$@"; do
    name=$(basename "$t")
    log="$logdir/$name.log"
    case "$t" in
        *.py) cmd=("${CAV_PYTHON:-/usr/bin/python3}" "$t") ;;
        *.sh) cmd=(bash "$t") ;;
        *) cmd=("$t") ;;
    esac
    start=$(date +%s)
    timeout "${CAV_TEST_TIMEOUT:-900}" "${cmd[@]}" >"$log" 2>&1
    rc=$?
    p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log"); s=$(grep -c '^SKIP ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL $name: exited with status $rc without reporting a failure" >>"$log"
    fi
    if [ "$rc" -eq 0 ] && [ "$f" -ne 0 ]; then
        echo "FAIL $name: reported failures but exited 0" >>"$log"
    fi
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    printf '[%s] %-40s %3d passed %3d failed %3d skipped  (%ss)\n' "$label" "$name" "$p" "$f" "$s" $(( $(date +%s) - start ))
    if [ "$f" -ne 0 ]; then sed 's/^/    /' "$log" | tail -n 60; fi
    grep '^SKIP ' "$log" | sed 's/^/    /'
done
echo "$label $pass $fail $skip" >>"$root/counts"
echo "[$label] $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
