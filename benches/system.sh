#!/usr/bin/env bash
# The gateway benchmark on real SocketCAN vcan interfaces: run as root inside
# the system-test VM (tests/system/run.sh bench), where the vcan module is
# loaded. Creates bat1..batN and inv1..invM for each scale, runs
# `gateway_bench --socketcan`, removes them again. The binary must have been
# built on the host first: cargo build --release --example gateway_bench.
#
# Usage: benches/system.sh [BINARY]   (default target/release/examples/gateway_bench)
# Environment: BENCH_SCALES ("2x1 8x4 32x16"), BENCH_SECS (5), BENCH_ROUNDS (2000).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
bin="${1:-$repo/target/release/examples/gateway_bench}"
scales="${BENCH_SCALES:-2x1 8x4 32x16}"
secs="${BENCH_SECS:-5}"
rounds="${BENCH_ROUNDS:-2000}"
[[ -x "$bin" ]] || { echo "bench-system: $bin not built (cargo build --release --example gateway_bench)" >&2; exit 1; }
modprobe vcan 2>/dev/null || true

links=()
cleanup() { for l in "${links[@]}"; do ip link del "$l" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "bench-system: kernel $(uname -r), $(nproc) vCPUs"
status=0
first=--header
for s in $scales; do
    n="${s%x*}"
    m="${s#*x}"
    cleanup
    links=()
    for k in $(seq 1 "$n"); do links+=("bat$k"); done
    for k in $(seq 1 "$m"); do links+=("inv$k"); done
    for l in "${links[@]}"; do
        ip link add dev "$l" type vcan
        ip link set "$l" up
    done
    # shellcheck disable=SC2086
    "$bin" --socketcan --scale "$s" --secs "$secs" --rounds "$rounds" $first || status=1
    first=""
done
exit "$status"
