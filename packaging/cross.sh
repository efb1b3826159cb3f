#!/usr/bin/env bash
# Cross-builds the bms-gateway Debian package for Raspberry Pi OS on a Debian
# bookworm x86_64 machine: arm64 (64-bit Pi OS, Pi 3/4/5/Zero 2) and armhf
# (32-bit Pi OS on a Pi 2/3/4/5).
#
# Usage: bash packaging/cross.sh [arm64|armhf|all]     (default: all)
#
# Needs root for apt-get (the Debian cross compilers) and rustup for the Rust
# standard library of each target. The packages land in target/debian/.
# Then a smoke test runs the packaged binary under qemu-user: the demo (the
# whole gateway on in-process virtual CAN buses) under the notify/watchdog
# harness of the package tests. It proves the binary works on that CPU
# architecture, not that it works with CAN hardware.
#
# Not covered: Pi Zero / Pi 1 (ARMv6). Debian's armhf is ARMv7, and so are
# its cross glibc and start files; build on the Pi itself for those (Rust
# target arm-unknown-linux-gnueabihf). The packages need glibc >= the one of
# bookworm (2.36): Raspberry Pi OS bookworm or later.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

die() {
    echo "cross: $*" >&2
    exit 1
}

which_arch=${1:-all}
case "$which_arch" in
    arm64 | armhf | all) ;;
    *) die "unknown architecture '$which_arch' (arm64, armhf or all)" ;;
esac

# debian-arch  rust-target  gcc-prefix  qemu-binary
targets=(
    "arm64 aarch64-unknown-linux-gnu aarch64-linux-gnu qemu-aarch64"
    "armhf armv7-unknown-linux-gnueabihf arm-linux-gnueabihf qemu-arm"
)

need_pkgs=()
for t in "${targets[@]}"; do
    read -r arch _ prefix _ <<<"$t"
    [ "$which_arch" = all ] || [ "$which_arch" = "$arch" ] || continue
    for p in "gcc-$prefix" "libc6-dev-$arch-cross"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
    done
done
command -v qemu-aarch64 >/dev/null || need_pkgs+=(qemu-user)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need root to install: ${need_pkgs[*]}"
    echo "cross: installing ${need_pkgs[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi

command -v rustup >/dev/null || die "rustup not found: the Rust standard library for the targets comes from rustup"

for t in "${targets[@]}"; do
    read -r arch triple prefix qemu <<<"$t"
    [ "$which_arch" = all ] || [ "$which_arch" = "$arch" ] || continue
    echo "cross: == $arch ($triple)" >&2
    rustup target add "$triple" >&2 ||
        die "rustup target add $triple failed (it downloads the target's standard library from the Rust project)"

    # Cargo's linker and the cc crate's compiler (ring has C and assembly) for
    # this target; the variable names are the triple in upper / lower snake case.
    upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
    lower=$(echo "$triple" | tr '-' '_')
    export "CARGO_TARGET_${upper}_LINKER=$prefix-gcc"
    export "CC_${lower}=$prefix-gcc"
    export "AR_${lower}=$prefix-ar"

    deb=$(bash packaging/build-deb.sh --target "$triple" | tail -n 1)
    [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] ||
        die "$deb has Architecture $(dpkg-deb -f "$deb" Architecture), want $arch"

    # Smoke test under qemu-user: the packaged binary starts, runs the demo
    # (the whole gateway on in-process buses, so no CAN is needed) under the
    # notify-socket harness of the package tests, healthy and with a hung
    # combiner. qemu-user keeps the pid, so WATCHDOG_PID matches.
    smoke=$(mktemp -d)
    dpkg-deb -x "$deb" "$smoke"
    run=("$qemu" -L "/usr/$prefix" "$smoke/usr/bin/bms-gateway")
    "${run[@]}" --version >&2 || { rm -rf "$smoke"; die "$arch binary does not start under $qemu"; }
    if ! python3 packaging/notify-harness.py --expect healthy --duration 8 \
        --stderr "$smoke/healthy.err" -- "${run[@]}" demo --duration 8 >&2; then
        tail -n 5 "$smoke/healthy.err" >&2
        rm -rf "$smoke"
        die "$arch demo under $qemu: READY/WATCHDOG checks failed"
    fi
    if ! BMS_GATEWAY_FAULT=hang-combiner python3 packaging/notify-harness.py --expect hang --duration 8 \
        --stderr "$smoke/hang.err" -- "${run[@]}" demo --duration 8 >&2; then
        rm -rf "$smoke"
        die "$arch demo under $qemu: hung-combiner checks failed"
    fi
    echo "cross: $arch package ok: demo, READY and watchdog checks pass under $qemu" >&2
    rm -rf "$smoke"
    echo "$deb"
done
