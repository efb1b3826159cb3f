#!/usr/bin/env bash
# Instructions per input frame and per idle second of the gateway's threads
# at a real rate (2 batteries x 1 inverter, one burst per battery per second),
# counted by valgrind's callgrind: a count that does not depend on the
# machine's load. Three runs of examples/frame_cost.rs: idle 2 s ("short"),
# idle 12 s, and idle 2 s then 10 s of traffic; per idle second is
# (idle - short) / 10, per input frame (traffic - short) / frames: all the
# process did in the traffic window per frame, as bench_idle measures it in
# the system-test VM. Start-up and shutdown cancel out.
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
echo "instructions per input frame: $(( ($(ir traffic) - $(ir short)) / frames )) (over $frames frames)"
echo "profiles: callgrind_annotate $out/traffic.out"
