#!/usr/bin/env bash
# make bench: the gateway benchmark at 2x1, 8x4 and 32x16 (inputs x outputs)
# on the in-process virtual bus, one process per scale (so that peak RSS is
# that scale's), then the criterion micro-benchmarks of the codec and the
# combiner. Prints a Markdown table; BENCHMARKS.md says what each column
# means. No speed target is asserted (the numbers are for reading), but the
# benchmark checks what the inverters were sent against values computed from
# the spec (and that the interlock never tripped): a scale whose check fails
# is not a measurement, and makes this script (and `make bench`) exit 1.
#
# Environment: BENCH_SCALES ("2x1 8x4 32x16"), BENCH_SECS (throughput window,
# 5), BENCH_ROUNDS (latency rounds, 2000), BENCH_CRITERION (1; 0 skips it).
# The machine should be otherwise idle: the rig runs 2N+M+... threads.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scales="${BENCH_SCALES:-2x1 8x4 32x16}"
secs="${BENCH_SECS:-5}"
rounds="${BENCH_ROUNDS:-2000}"

cargo build --release --quiet --example gateway_bench
bin=target/release/examples/gateway_bench

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
status=0
first=--header
for s in $scales; do
    # shellcheck disable=SC2086
    if ! "$bin" --scale "$s" --secs "$secs" --rounds "$rounds" $first; then
        echo "bench: the $s check FAILED (outputs wrong or transmissions missed): not a measurement" >&2
        status=1
    fi
    first=""
done

if [[ "${BENCH_CRITERION:-1}" != 0 ]]; then
    echo
    echo "criterion micro-benchmarks (cargo bench --bench codec):"
    cargo bench --quiet --bench codec 2>&1 | grep -E 'time:|^[a-z]' | grep -v -E '^(Benchmarking|Gnuplot|Found|Warning)' || status=1
    echo "criterion micro-benchmarks (cargo bench --bench recorder):"
    cargo bench --quiet --bench recorder 2>&1 | grep -E 'time:|^[a-z]' | grep -v -E '^(Benchmarking|Gnuplot|Found|Warning)' || status=1
fi
exit "$status"
