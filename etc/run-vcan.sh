#!/usr/bin/env bash
# `make run-vcan`: the whole gateway on virtual CAN buses of this machine.
#
# Creates vcan interfaces (vcan-bat1, vcan-bat2 for two simulated batteries,
# vcan-inv1, vcan-inv2 for two simulated inverters), starts the project's
# simulators on them and the gateway with etc/vcan-example.toml. Runs until
# Ctrl-C (or for RUN_VCAN_DURATION seconds), then stops everything it started
# and deletes the interfaces it created. Needs the vcan kernel module and
# root (or CAP_NET_ADMIN) for `ip link`.
#
# Watch the buses meanwhile with `candump -L vcan-inv1` or
# `bms-gateway monitor vcan-inv1`; the simulators' output is in the log
# directory printed at start.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd "$here/.." && pwd -P)"
gw="${BMS_GATEWAY:-$repo/target/release/bms-gateway}"
config="${RUN_VCAN_CONFIG:-$here/vcan-example.toml}"
duration="${RUN_VCAN_DURATION:-}"
ifaces=(vcan-bat1 vcan-bat2 vcan-inv1 vcan-inv2)

die() {
    echo "run-vcan: ERROR: $*" >&2
    exit 1
}

[[ -x "$gw" ]] || die "$gw not found: run 'make build' first (make run-vcan does)"
[[ -r "$config" ]] || die "config $config not readable"
command -v ip >/dev/null || die "'ip' (iproute2) is needed to create vcan interfaces"

# The vcan driver: loaded already, or loadable. Kernels without CAN support
# (some containers and CI machines) cannot run this; tests/system/run.sh
# boots a VM for that case.
if [[ ! -d /sys/module/vcan ]]; then
    modprobe vcan 2>/dev/null || die "the vcan kernel module is not available (modprobe vcan failed);
  this kernel may have no CAN support: try 'make test-system', which brings its own kernel"
fi

logdir="$(mktemp -d "${TMPDIR:-/tmp}/run-vcan.XXXXXX")"
created=()
pids=()

# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
    local pid n
    trap - INT TERM EXIT
    # Stop our children (the gateway first, so it stops sending), by PID.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 30); do # up to 3 s for a clean exit
        n=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done
        ((n == 0)) && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "run-vcan: $(cat "/proc/$pid/comm" 2>/dev/null) (pid $pid) ignored SIGTERM: killed" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    # Only the interfaces this run created: pre-existing ones stay.
    for n in "${created[@]}"; do ip link delete "$n" 2>/dev/null || true; done
    echo "run-vcan: stopped; logs kept in $logdir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

for n in "${ifaces[@]}"; do
    if [[ ! -e "/sys/class/net/$n" ]]; then
        ip link add dev "$n" type vcan ||
            die "cannot create $n (needs root or CAP_NET_ADMIN: try 'sudo make run-vcan')"
        created+=("$n")
    fi
    ip link set "$n" up || die "cannot bring $n up"
done
echo "run-vcan: interfaces ${ifaces[*]} up; logs in $logdir"

# Two batteries with different values so the combining is visible.
"$gw" sim-bms --can-if vcan-bat1 --soc 80 --soh 98 --voltage 52.4 --current -12.5 --temp 24 \
    --cvl 53.2 --ccl 80 --dcl 100 --dvl 45 --modules 3 --drift >"$logdir/sim-bms-1.log" 2>&1 &
pids+=($!)
"$gw" sim-bms --can-if vcan-bat2 --soc 60 --soh 95 --voltage 52.1 --current 5.0 --temp 21 \
    --cvl 53.6 --ccl 150 --dcl 150 --dvl 46 --modules 5 --drift >"$logdir/sim-bms-2.log" 2>&1 &
pids+=($!)
"$gw" sim-inverter --can-if vcan-inv2 --sync >"$logdir/sim-inverter-2.log" 2>&1 &
pids+=($!)
# The push-mode inverter's decoded view is what a user wants to see here.
# (process substitution so that $! is the simulator, not tee)
"$gw" sim-inverter --can-if vcan-inv1 > >(tee "$logdir/sim-inverter-1.log") 2>&1 &
pids+=($!)
"$gw" -c "$config" >"$logdir/gateway.log" 2>&1 &
pids=("$!" "${pids[@]}")
echo "run-vcan: gateway (pid ${pids[0]}) running with $config; Ctrl-C stops everything"

if [[ -n "$duration" ]]; then
    sleep "$duration" &
    pids+=($!)
fi
# Returns when any child ends (or on Ctrl-C through the trap). A child that
# ends by itself is an error, except the optional duration timer.
set +e
wait -n
rc=$?
set -e
if [[ -n "$duration" ]] && ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "run-vcan: $duration s elapsed"
    exit 0
fi
echo "run-vcan: a process ended unexpectedly (exit $rc); see $logdir" >&2
for f in "$logdir"/*.log; do
    [[ -s "$f" ]] && { echo "--- $f (last lines)"; tail -n 8 "$f"; } >&2
done
exit 1
