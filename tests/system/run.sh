#!/usr/bin/env bash
# System tests of bms-gateway on real Linux SocketCAN.
#
# The build machines' kernel has no CAN support, so this script boots Debian's
# own kernel in QEMU (software emulation, no network device), loads the CAN
# modules there, exports the host's root read-only over 9p and chroots into it.
# Inside the VM tests/system/driver.py runs the release binary against
# can-utils, Python AF_CAN sockets and Mosquitto on two tiers: vcan, and real
# CAN drivers (sja1000 + kvaser_pci) on QEMU's emulated SJA1000 controllers,
# one emulated bus per cable, two controllers on each (the gateway's side and
# its peer's). Kernel, modules and initramfs come from vm-lib.sh, shared with
# packaging/test-systemd-vm.sh.
# Results come back through a second, writable 9p export; the VM's console
# (every scenario's measurements) is kept in tests/system/.work/console.log.
#
# Usage: tests/system/run.sh [bench] [SCENARIO...]
#   SCENARIO names select a subset (default: all, both tiers); NAME runs on
#   vcan, NAME@sja1000 on the emulated controllers. `bench` runs the timing
#   measurements instead (make bench-system).
# Environment: SYSTEM_TEST_TIMEOUT (seconds for the whole VM run, default 1500),
#   SYSTEM_TEST_MEM (VM memory in MiB, default 1536), SYSTEM_TEST_SMP (vCPUs, 2),
#   SYSTEM_TEST_KERNEL_ARGS (added to the VM kernel command line),
#   SYSTEM_TEST_LANES (parallel scenario lanes, default 3; 1: one after another).
#
# It never skips: a missing prerequisite that cannot be installed is an error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd "$here/../.." && pwd -P)"
work="$here/.work"
binary="$repo/target/release/bms-gateway"
timeout_s="${SYSTEM_TEST_TIMEOUT:-1500}"
mem_mb="${SYSTEM_TEST_MEM:-1536}"
smp="${SYSTEM_TEST_SMP:-2}"
# Scenarios run in this many parallel lanes (tests/system/lanes.py): the vcan
# ones in their own network namespaces, the sja1000 tier in one lane.
lanes="${SYSTEM_TEST_LANES:-3}"
# Extra kernel arguments for the VM, e.g. "clocksource=tsc tsc=reliable" to
# measure with a vDSO clock, as a Raspberry Pi's arch timer has.
kernel_args="${SYSTEM_TEST_KERNEL_ARGS:-}"

die() {
    echo "system tests: ERROR: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

# --- prerequisites -----------------------------------------------------------
# Each entry is "test-path debian-package". Installed with apt-get when missing
# (we are root on Debian in CI); a failed install is fatal, never a skip.
prereqs=(
    "/usr/bin/qemu-system-x86_64 qemu-system-x86"
    "/bin/busybox busybox-static"
    "/usr/bin/cansend can-utils"
    "/usr/bin/candump can-utils"
    "/usr/bin/cangen can-utils"
    "/usr/sbin/mosquitto mosquitto"
    "/usr/bin/mosquitto_sub mosquitto-clients"
    "/usr/bin/mosquitto_pub mosquitto-clients"
    "/usr/bin/python3 python3"
    "/usr/sbin/ip iproute2"
    "/usr/bin/timeout coreutils"
)
missing=()
for entry in "${prereqs[@]}"; do
    read -r path pkg <<<"$entry"
    [[ -x "$path" ]] || missing+=("$pkg")
done
# busybox must be the static build: it runs in the initramfs before any
# library is reachable.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
    missing+=(busybox-static)
compgen -G "/boot/vmlinuz-*" >/dev/null || missing+=(linux-image-amd64)
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "system tests: installing missing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        die "missing packages (${missing[*]}) and not root: install them with apt-get"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } ||
        die "could not install ${missing[*]}"
fi

[[ -x "$binary" ]] || die "$binary not found: run 'make build' (or 'make test-system') first"

# shellcheck source=tests/system/vm-lib.sh
. "$here/vm-lib.sh"
vm_kernel
kver="$VM_KVER"

# --- initramfs ---------------------------------------------------------------
rm -rf "$work/initramfs" "$work/results" "$work/console.log"
mkdir -p "$work/initramfs"/{bin,dev,proc,sys,host} "$work/results"
initrd="$work/initramfs.cpio.gz"
cp /bin/busybox "$work/initramfs/bin/busybox"
cp "$here/vm-init.sh" "$work/initramfs/init"
chmod 755 "$work/initramfs/init"
# virtio/9p for the host's root, the CAN core and vcan for the vcan tier, the
# SJA1000 drivers for the emulated controllers of the sja1000 tier, and a
# tc filter that drops everything in one direction (clsact, in sch_ingress:
# the dead_* scenarios' deaf or mute controller).
vm_modules "$work/initramfs/modules" virtio_pci 9pnet_virtio 9p can can_raw vcan kvaser_pci \
    sch_ingress cls_matchall act_gact
vm_cpio "$work/initramfs" "$initrd"
# The sja1000 tier: one emulated bus per cable (canio.CABLES: three batteries,
# two inverters, a battery left down), two controllers on each (gateway side,
# peer side).
can_buses=6
vm_can_args "$can_buses"

# Parameters for the VM, read by vm-init.sh from the writable export.
mode="test"
if [[ "${1:-}" == "bench" ]]; then mode="bench"; shift; fi
{
    printf 'REPO=%q\n' "$repo"
    printf 'MODE=%q\n' "$mode"
    printf 'SCENARIOS=%q\n' "$*"
    printf 'KVER=%q\n' "$kver"
    printf 'CAN_BUSES=%q\n' "$can_buses"
    printf 'LANES=%q\n' "$lanes"
} >"$work/results/params.sh"

# --- boot --------------------------------------------------------------------
echo "system tests: booting Debian kernel $kver in QEMU (TCG, $smp vCPU, ${mem_mb} MiB, no network, $can_buses emulated CAN buses)"
start=$(date +%s)
set +e
timeout --kill-after=10 "$timeout_s" "${VM_NICE[@]}" qemu-system-x86_64 \
    -accel tcg -smp "$smp" -m "$mem_mb" \
    -nographic -no-reboot -nodefaults -serial stdio -monitor none \
    -nic none \
    "${VM_CAN_ARGS[@]}" \
    -kernel "/boot/vmlinuz-$kver" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 loglevel=3 rdinit=/init $kernel_args" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$work/results,mount_tag=results,security_model=none,multidevs=remap" \
    </dev/null 2>&1 |
    sed -u -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' | tee "$work/console.log"
qemu_rc=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - start))
echo "system tests: VM finished after ${elapsed}s (qemu exit $qemu_rc)"

if [[ $qemu_rc -eq 124 || $qemu_rc -eq 137 ]]; then
    die "the VM did not finish within ${timeout_s}s (hard timeout): see the console output above"
fi
summary="$work/results/summary.txt"
if [[ ! -s "$summary" ]]; then
    [[ -s "$work/results/results.txt" ]] && cat "$work/results/results.txt"
    die "the VM wrote no summary (boot or driver failure): see the console output above"
fi

echo
echo "=== system test results (total ${elapsed}s including boot) ==="
cat "$work/results/results.txt"
read -r passed failed <"$summary"
echo "$passed passed, $failed failed"
[[ "$failed" -eq 0 && "$passed" -gt 0 ]]
