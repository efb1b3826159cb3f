#!/bin/bash
# Runs inside the test VM of packaging/test-systemd-vm.sh, under a real
# systemd 252 as PID 1, on a writable overlay of the host's root: installs the
# package, plays the owner (edits the config, enables the service), and checks
# what systemd does with the hardened unit on real SocketCAN (vcan):
# READY, watchdog, reload, restart of a hung gateway, stop, remove.
#
# Writes "CHECK ok: ..." / "CHECK fail: ..." lines to /vmtest/results, the
# journal to /vmtest/journal.txt, then powers the VM off.
set -u

R=/vmtest
DEB=$(ls "$R"/*.deb | head -n 1)
UNIT=bms-gateway.service
: >"$R/results"
echo started >"$R/started"
ok() { echo "CHECK ok: $*" | tee -a "$R/results"; }
bad() { echo "CHECK fail: $*" | tee -a "$R/results"; }
check() { # NAME COMMAND...
    local name=$1
    shift
    if "$@" >>"$R/guest.log" 2>&1; then ok "$name"; else bad "$name"; fi
}
prop() { systemctl show -P "$1" "$UNIT"; }
# wait_for SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
    local until=$((SECONDS + $1))
    shift
    while [ "$SECONDS" -lt "$until" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}
finish() {
    journalctl -b --no-pager -o short-monotonic >"$R/journal.txt" 2>&1
    journalctl -b --no-pager -u "$UNIT" -o verbose >"$R/journal-unit-verbose.txt" 2>&1
    echo finished >"$R/finished"
    systemctl poweroff --no-block
    exit 0
}
trap finish EXIT

echo "guest: systemd $(systemctl --version | head -n 1), kernel $(uname -r)" >>"$R/guest.log"
check "systemd is PID 1 in the VM" test "$(cat /proc/1/comm)" = systemd

# --- install: user made, unit neither enabled nor started
# man-db's trigger would re-index every manual page over 9p under TCG
# (many minutes); the index is not what is tested here.
rm -f /var/lib/man-db/auto-update
check "dpkg -i under systemd" env DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB"
score=$(systemd-analyze security --no-pager "$UNIT" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security (online): $score" >>"$R/guest.log"
check "systemd-analyze security on the installed unit: $score < 3.0" \
    awk -v s="$score" 'BEGIN { exit !(s != "" && s < 3.0) }'
check "install leaves the unit disabled" test "$(systemctl is-enabled "$UNIT")" = disabled
check "install does not start the gateway" bash -c "! systemctl is-active --quiet $UNIT"

# --- starting on the unedited config: exit status 2, no restart loop
systemctl start "$UNIT" >>"$R/guest.log" 2>&1
sleep 8
check "unedited config: the start fails with exit status 2" test "$(prop ExecMainStatus)" = 2
check "unedited config: status 2 is not restarted (NRestarts=0)" test "$(prop NRestarts)" = 0
systemctl reset-failed "$UNIT" >/dev/null 2>&1

# --- the owner's setup: CAN links, an activated config, a broker
modprobe vcan
for i in can0 can1 can2; do
    ip link add "$i" type vcan && ip link set "$i" up
done
check "vcan interfaces can0 can1 can2 are up" ip link show can2
sed -i 's/^\([[:space:]]*GATEWAY-ACTIVATED[[:space:]]*=[[:space:]]*\)false/\1true/' /etc/bms-gateway/bms_config.toml
check "bms-gateway check accepts the owner's config" bms-gateway check -c /etc/bms-gateway/bms_config.toml
systemctl start mosquitto.service >>"$R/guest.log" 2>&1
wait_for 30 systemctl is-active --quiet mosquitto.service
# Simulated batteries on the input buses, if the binary has the simulator.
if bms-gateway sim-bms --help >/dev/null 2>&1; then
    systemd-run --unit=sim-bms0 bms-gateway sim-bms --can-if can0 >>"$R/guest.log" 2>&1
    systemd-run --unit=sim-bms1 bms-gateway sim-bms --can-if can1 >>"$R/guest.log" 2>&1
fi

# --- hardened service on real SocketCAN: READY reached, watchdog fed
check "systemctl enable --now (returns once READY=1 arrived)" timeout 120 systemctl enable --now "$UNIT"
check "service is active (running)" test "$(prop ActiveState)/$(prop SubState)" = active/running
pid=$(prop MainPID)
check "runs as user bms-gateway" test "$(ps -o user= -p "$pid" | tr -d ' ')" = bms-gateway
check "has no capabilities (CapEff 0)" grep -q '^CapEff:[[:space:]]*0000000000000000$' "/proc/$pid/status"
check "has CAN sockets bound on can0 and can2 despite RestrictAddressFamilies" \
    bash -c "cat /proc/net/can/rcvlist_* | grep -q can0 && cat /proc/net/can/rcvlist_* | grep -q can2"
if command -v candump >/dev/null && bms-gateway sim-bms --help >/dev/null 2>&1; then
    check "frames reach the inverter bus (0x351 on can2)" \
        bash -c "timeout 20 candump -n 3 can2,351:7FF | grep -q 351"
fi
if command -v mosquitto_sub >/dev/null; then
    check "publishes bms_gateway/status over MQTT from inside the sandbox" \
        bash -c "timeout 30 mosquitto_sub -h localhost -C 1 -t bms_gateway/status | grep -q online"
fi
sleep 25
check "still running after 25 s (> WatchdogSec=10): the watchdog is fed" \
    test "$(prop ActiveState)/$(prop NRestarts)" = active/0
check "same main process (no restart)" test "$(prop MainPID)" = "$pid"

# --- reload: SIGHUP, RELOADING=1 ... READY=1
check "systemctl reload returns" timeout 60 systemctl reload "$UNIT"
check "still active after reload, same process" \
    test "$(prop ActiveState)/$(prop MainPID)" = "active/$pid"

# --- the MQTT password as a systemd credential, as the docs tell the owner
install -m 600 /dev/null /etc/bms-gateway/mqtt-password
echo "not-a-real-password" >/etc/bms-gateway/mqtt-password
mkdir -p /etc/systemd/system/$UNIT.d
printf '[Service]\nLoadCredential=mqtt-password:/etc/bms-gateway/mqtt-password\n' \
    >/etc/systemd/system/$UNIT.d/credential.conf
systemctl daemon-reload
check "with LoadCredential= the service restarts to active (running)" \
    bash -c "timeout 120 systemctl restart $UNIT && [ \"\$(systemctl show -P SubState $UNIT)\" = running ]"
check "the credential is readable by the service user, and only by it" \
    bash -c "setpriv --reuid=bms-gateway --regid=bms-gateway --clear-groups cat /run/credentials/$UNIT/mqtt-password | grep -q not-a-real && ! setpriv --reuid=nobody --regid=nogroup --clear-groups cat /run/credentials/$UNIT/mqtt-password 2>/dev/null"
rm -f /etc/systemd/system/$UNIT.d/credential.conf /etc/bms-gateway/mqtt-password
systemctl daemon-reload

# --- journald: priorities kept
check "journal has the gateway's messages at info priority or more severe" \
    bash -c "journalctl -b -u $UNIT -p info --no-pager -o cat | grep -q ."
check "no doubled timestamps in the journal lines" \
    bash -c "! journalctl -b -u $UNIT --no-pager -o cat | grep -Eq '^\\[?[0-9]{4}-[0-9]{2}-[0-9]{2}T'"

# --- hung combiner: the watchdog fires and systemd restarts the service
mkdir -p /etc/systemd/system/$UNIT.d
printf '[Service]\nEnvironment=BMS_GATEWAY_FAULT=hang-combiner\n' >/etc/systemd/system/$UNIT.d/fault.conf
systemctl daemon-reload
systemctl restart "$UNIT" >>"$R/guest.log" 2>&1
check "hung combiner: systemd restarts the service after a watchdog timeout" \
    wait_for 90 bash -c "[ \"\$(systemctl show -P NRestarts $UNIT)\" -ge 1 ]"
check "hung combiner: the journal says watchdog timeout" \
    bash -c "journalctl -b -u $UNIT --no-pager | grep -qi 'watchdog timeout'"
check "hung combiner: the gateway logged the hung thread at error priority" \
    bash -c "journalctl -b -u $UNIT -p err --no-pager -o cat | grep -q combiner"
rm -f /etc/systemd/system/$UNIT.d/fault.conf
systemctl daemon-reload

# --- stop and remove
check "systemctl stop within 10 s" timeout 10 systemctl stop "$UNIT"
check "stopped cleanly (not failed)" bash -c "[ \"\$(systemctl show -P ActiveState $UNIT)\" = inactive ]"
check "dpkg -r under systemd" dpkg -r bms-gateway
check "remove keeps the owner's config" grep -q 'GATEWAY-ACTIVATED = true' /etc/bms-gateway/bms_config.toml
