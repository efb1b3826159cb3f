#!/usr/bin/env bash
# `make test`: every test tier, overlapped where one of them waits.
#
# The tiers mostly wait (real threads and real time in the Rust tests,
# timeouts inside software-emulated VMs), so on two cores they run side by
# side, each as soon as what it needs exists:
#
#   release build ───────────► system-test VM (tests/system/run.sh) ──────►
#   test build (--no-run) ───► cargo tests ───► package tests (test-deb.sh) ─►
#
# The system VM needs only the release binary. The package tests need it
# too; they start once the cargo tests are done, so that at most two of the
# waiting tiers share the two cores and their timing checks (the watchdog,
# a restart gap, stale timeouts in the VMs) never share them with the
# compiler. Each
# tier's output goes to target/make-test/TIER.log and is printed whole
# when the tier ends, then a table of the tiers' times; the last line is
# "N passed, N failed" over every tier. Exit status 0 only when every tier
# passed.
set -uo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
CARGO=${CARGO:-cargo}
logs=target/make-test
mkdir -p "$logs"
rm -f "$logs"/*.log

declare -A started ended status pid
start() { # NAME COMMAND...: run COMMAND in the background, output to its log
    local name=$1
    shift
    started[$name]=$SECONDS
    echo "make test: ${SECONDS}s: $name starts: $*"
    "$@" >"$logs/$name.log" 2>&1 &
    pid[$name]=$!
}
finish() { # NAME: wait for it, print its log
    local name=$1
    wait "${pid[$name]}"
    status[$name]=$?
    ended[$name]=$SECONDS
    echo
    echo "===== $name: exit status ${status[$name]} after $((ended[$name] - started[$name]))s ====="
    cat "$logs/$name.log"
    echo "===== end of $name ====="
}
ok() { [ "${status[$1]:-1}" = 0 ]; }

start release-build "$CARGO" build --release
start test-build "$CARGO" test --all-targets --no-run
finish release-build
if ok release-build; then
    start system bash tests/system/run.sh
fi
finish test-build
if ok test-build; then
    start cargo-test "$CARGO" test --all-targets
    finish cargo-test
fi
if ok release-build; then
    start package bash packaging/test-deb.sh
fi
for name in system package; do
    [ -n "${pid[$name]:-}" ] && finish "$name"
done

# Counts: cargo's "test result:" lines, the other tiers' closing line.
passed=0 failed=0
if [ -f "$logs/cargo-test.log" ]; then
    read -r p f < <(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' \
        "$logs/cargo-test.log" | awk '{ p += $1; f += $2 } END { print p + 0, f + 0 }')
    passed=$((passed + p)) failed=$((failed + f))
fi
for name in system package; do
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$logs/$name.log" 2>/dev/null | tail -n 1)
    if [ -n "$line" ]; then
        read -r p _ f _ <<<"${line//,/}"
        passed=$((passed + p)) failed=$((failed + f))
    fi
done
all_ok=1
echo
echo "make test: the tiers' times (seconds from the start of make test, after lint)"
printf '  %-14s %6s %6s %6s  %s\n' tier start end took result
for name in release-build test-build system cargo-test package; do
    if [ -z "${started[$name]:-}" ]; then
        printf '  %-14s %6s %6s %6s  %s\n' "$name" - - - "not run (what it needs failed)"
        all_ok=0
        continue
    fi
    ok "$name" || all_ok=0
    printf '  %-14s %6s %6s %6s  %s\n' "$name" "${started[$name]}" "${ended[$name]}" \
        "$((ended[$name] - started[$name]))" "$(ok "$name" && echo passed || echo "FAILED (exit status ${status[$name]})")"
done
echo "  total          ${SECONDS}s; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$all_ok" = 1 ] && [ "$failed" = 0 ]; then
    echo "$passed passed, $failed failed"
    exit 0
fi
# A tier that failed without a count of its own still fails the run.
[ "$failed" -gt 0 ] || failed=1
echo "$passed passed, $failed failed"
exit 1
