#!/usr/bin/env bash
# Instructions per input frame and per idle second of the gateway's threads
# at a real rate (2 batteries x 1 inverter, one burst per battery per second),
# counted by valgrind's callgrind: a count that does not depend on the
# machine's load. Three runs of examples/frame_cost.rs, 12 s each (idle 2 s
# vs idle 12 s: per idle second; idle 12 s vs idle 2 s + 10 s of traffic:
# per frame), so that start-up and shutdown cancel out.
# Usage: bash benches/frame_cost.sh [OUTDIR]   (needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/frame_cost}
mkdir -p "$out"
cargo build --release --example frame_cost
bin=target/release/examples/frame_cost
run() { # name args...
    local name=$1; shift
    valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" "$bin" "$@" >"$out/$name.txt" 2>"$out/$name.log"
}
run short --idle 2 --traffic 0 &
run idle --idle 12 --traffic 0 &
run traffic --idle 2 --traffic 10 &
wait
ir() { sed -n 's/^summary: //p' "$out/$1.out"; }
frames=$(sed -n 's/^frames \([0-9]*\).*/\1/p' "$out/traffic.txt")
echo "traffic run: $(cat "$out/traffic.txt")"
echo "instructions per idle second: $(( ($(ir idle) - $(ir short)) / 10 ))"
echo "instructions per input frame: $(( ($(ir traffic) - $(ir idle)) / frames )) (over $frames frames)"
echo "profiles: callgrind_annotate $out/traffic.out"
