#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECS seconds each (default 60), one after
# the other, with libFuzzer through cargo-fuzz.
#
# cargo-fuzz needs nightly compiler flags (-Zsanitizer=address); this project
# has one stable toolchain, so RUSTC_BOOTSTRAP=1 unlocks them. The seed corpus
# in fuzz/corpus/TARGET is read but never written: what the fuzzer finds goes
# to fuzz/target/corpus/TARGET (kept between runs, not committed), crashes to
# fuzz/artifacts/TARGET. Exits 1 if any target found a crash.
#
#   FUZZ_SECS=600 bash fuzz/run.sh            # every target, 10 minutes each
#   FUZZ_TARGETS="decode candump" bash fuzz/run.sh
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"
FUZZ_SECS="${FUZZ_SECS:-60}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

# Built once, then each fuzzer binary is run directly: `cargo fuzz run` would
# also write what it finds into corpus/TARGET, the committed seeds.
# Default build: optimized, with debug assertions and overflow checks, ASan.
cargo fuzz build
triple="$(rustc -vV | sed -n 's/^host: //p')"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
failed=""
for t in $targets; do
    echo "=== fuzz $t for ${FUZZ_SECS}s"
    mkdir -p "target/corpus/$t" "artifacts/$t"
    if ! "target/$triple/release/$t" "target/corpus/$t" "corpus/$t" \
        -artifact_prefix="artifacts/$t/" -max_total_time="$FUZZ_SECS" \
        -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1; then
        failed="$failed $t"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzz: crashes found in:$failed (see fuzz/artifacts/)"
    exit 1
fi
echo "fuzz: no crash in $(echo "$targets" | wc -w) targets, ${FUZZ_SECS}s each"
