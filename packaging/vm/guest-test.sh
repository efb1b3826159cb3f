#!/bin/bash
# Runs inside the test VM of packaging/test-systemd-vm.sh, under a real
# systemd 252 as PID 1, on a writable overlay of the host's root: installs the
# package, plays the owner (edits the config, enables the service), and checks
# what systemd does with the hardened unit on real CAN drivers (emulated
# SJA1000 controllers that systemd-networkd brings up with the shipped files):
# networkd settings, READY, watchdog, reload, restart after a SIGKILL (the
# inverter's frame gap, restart-gap.py), a dead interface bounced through the
# link helper (and the helper refusing everyone else), restart of a hung
# gateway, stop, remove.
#
# Writes "CHECK ok: ..." / "CHECK fail: ..." lines to /vmtest/results, the
# journal to /vmtest/journal.txt, then powers the VM off.
set -u

R=/vmtest
DEB=$(ls "$R"/*.deb | head -n 1)
UNIT=bms-gateway.service
: >"$R/results"
echo started >"$R/started"
# Seconds since the VM booted, on every line: where a slow run's time went.
up() { cut -d' ' -f1 /proc/uptime; }
ok() { echo "CHECK ok: $* (at $(up) s)" | tee -a "$R/results"; }
bad() { echo "CHECK fail: $* (at $(up) s)" | tee -a "$R/results"; }
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
check "systemd-analyze security on the installed unit: $score < 2.0" \
    awk -v s="$score" 'BEGIN { exit !(s != "" && s < 2.0) }'
check "install leaves the unit disabled" test "$(systemctl is-enabled "$UNIT")" = disabled

# --- serial ports (RS485 batteries): a copy of the installed unit, with its
# whole sandbox, whose command only opens the VM's UART /dev/ttyS0 (root:
# dialout, 0660 by udev) the way the gateway opens a port. Then the same
# without the dialout group: refused, so the group is what grants it.
probe() { # EXTRA-SERVICE-LINES (printf %b escapes)
    local d=/run/systemd/system/bms-serial-probe.service.d
    cp "$(systemctl show -P FragmentPath "$UNIT")" /run/systemd/system/bms-serial-probe.service
    mkdir -p "$d"
    printf '[Unit]\nConditionPathExists=\n[Service]\nType=oneshot\nWatchdogSec=0\nRestart=no\nExecStart=\nExecStart=/usr/bin/python3 -c "import os; os.close(os.open(\x27/dev/ttyS0\x27, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))"\n%b' "$1" >"$d/probe.conf"
    systemctl daemon-reload
    timeout 60 systemctl start bms-serial-probe.service
}
ls -l /dev/ttyS0 >>"$R/guest.log" 2>&1
systemctl show -P DeviceAllow "$UNIT" >>"$R/guest.log" 2>&1
check "the unit's sandbox opens a serial port (dialout, DeviceAllow=char-ttyS)" probe ""
probe_without_dialout() { ! probe 'SupplementaryGroups=\n'; }
check "without SupplementaryGroups=dialout the same open is refused" probe_without_dialout
rm -rf /run/systemd/system/bms-serial-probe.service /run/systemd/system/bms-serial-probe.service.d
systemctl daemon-reload
check "install does not start the gateway" bash -c "! systemctl is-active --quiet $UNIT"

# --- starting on the unedited config: exit status 2, no restart loop
systemctl start "$UNIT" >>"$R/guest.log" 2>&1
# Until the process has exited (systemd says so), then 6 s more: long enough
# for a restart (RestartSec=5) that must not come.
exited() { [ "$(prop ExecMainExitTimestampMonotonic)" != 0 ] && [ "$(prop SubState)" != running ]; }
wait_for 60 exited
sleep 6
check "unedited config: the start fails with exit status 2" test "$(prop ExecMainStatus)" = 2
check "unedited config: status 2 is not restarted (NRestarts=0)" test "$(prop NRestarts)" = 0
systemctl reset-failed "$UNIT" >/dev/null 2>&1

# --- the owner's setup as the README says: systemd-networkd with the shipped
# 80-can.network / 80-can.link brings the CAN controllers up. The VM has three
# emulated CAN buses with two SJA1000 (kvaser_pci) controllers each: can0 can1
# can2 for the gateway (the shipped config's interfaces), can3 can4 can5 on the
# same buses for the simulated batteries and the inverter's candump.
CANS="can0 can1 can2 can3 can4 can5"
all_present() { for i in $CANS; do [ -e "/sys/class/net/$i" ] || return 1; done; }
all_up() { for i in $CANS; do ip link show "$i" | grep -q '[<,]UP[,>]' || return 1; done; }
check "udev loaded kvaser_pci: controllers $CANS present" wait_for 60 all_present
check "a controller without a bit rate is refused up (as real hardware)" bash -c "! ip link set can0 up"
EX=/usr/share/doc/bms-gateway/examples/networkd
# 79-can-mcp251xfd.network is installed too, as the README says: it matches
# only the mcp251xfd driver, so these kvaser_pci controllers keep 80-can.network
# (restart-ms 100 below).
cp "$EX/79-can-mcp251xfd.network" "$EX/80-can.network" "$EX/80-can.link" /etc/systemd/network/
udevadm control --reload
udevadm trigger -c add -s net >>"$R/guest.log" 2>&1
udevadm settle -t 30
check "systemctl enable --now systemd-networkd" timeout 120 systemctl enable --now systemd-networkd
check "systemd-networkd brings $CANS up" wait_for 60 all_up
for i in $CANS; do
    d=$(ip -details -statistics link show "$i")
    echo "$d" >>"$R/guest.log"
    echo "MEASURE $i: $(echo "$d" | grep -Eo 'qlen [0-9]+|can state [A-Z-]+|restart-ms [0-9]+|bitrate [0-9]+ sample-point [0-9.]+' | tr '\n' ' ')" >>"$R/results"
    check "$i: bit rate 500 kbit/s (80-can.network)" grep -q 'bitrate 500000 ' <<<"$d"
    check "$i: restart-ms 100 (80-can.network RestartSec=100ms)" grep -q 'restart-ms 100 ' <<<"$d"
    check "$i: txqueuelen 1024 (80-can.link)" grep -q 'qlen 1024' <<<"$d"
    check "$i: controller ERROR-ACTIVE" grep -q 'state ERROR-ACTIVE' <<<"$d"
done
sed -i 's/^\([[:space:]]*GATEWAY-ACTIVATED[[:space:]]*=[[:space:]]*\)false/\1true/' /etc/bms-gateway/bms_config.toml
check "bms-gateway check accepts the owner's config" bms-gateway check -c /etc/bms-gateway/bms_config.toml
systemctl start mosquitto.service >>"$R/guest.log" 2>&1
wait_for 30 systemctl is-active --quiet mosquitto.service
# Simulated batteries on the input buses, if the binary has the simulator.
if bms-gateway sim-bms --help >/dev/null 2>&1; then
    systemd-run --unit=sim-bms0 bms-gateway sim-bms --can-if can3 >>"$R/guest.log" 2>&1
    systemd-run --unit=sim-bms1 bms-gateway sim-bms --can-if can4 --modules 4 >>"$R/guest.log" 2>&1
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
    check "frames reach the inverter's controller over the emulated bus (0x351 on can5)" \
        bash -c "timeout 20 candump -n 3 can5,351:7FF | grep -q 351"
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

# --- crash: SIGKILL -> Restart=on-failure. The inverter's longest gap, and the
# first frames after the restart (the batteries must have reported first:
# the same frame set as before the crash, never a partial or default one).
if command -v candump >/dev/null && bms-gateway sim-bms --help >/dev/null 2>&1; then
    stdbuf -oL candump -L can5 >"$R/crash-inverter.log" 2>/dev/null &
    dump_inv=$!
    stdbuf -oL candump -L can0 can1 >"$R/crash-batteries.log" 2>/dev/null &
    dump_bat=$!
    # Until both candumps are listening and have logged frame sets before
    # the crash: two of the inverter's (its last set before the crash is
    # the reference) and both batteries' 0x351.
    sets_before() { [ "$(grep -c '#' "$R/crash-inverter.log")" -ge 12 ] &&
        grep -q ' can0 351#' "$R/crash-batteries.log" && grep -q ' can1 351#' "$R/crash-batteries.log"; }
    check "candump logs the inverter's and the batteries' frames before the crash" wait_for 60 sets_before
    restarts=$(prop NRestarts)
    killed_at=$(date +%s.%N)
    kill -9 "$(prop MainPID)"
    check "SIGKILL: systemd restarts the service (Restart=on-failure)" \
        wait_for 90 bash -c "[ \"\$(systemctl show -P NRestarts $UNIT)\" -gt $restarts ] && systemctl is-active --quiet $UNIT"
    newpid=$(prop MainPID)
    # Until the new process has sent two whole frame sets (0x35E ends one),
    # after the one its first could have cut short.
    last_ids() { grep -c ' can5 35E#' "$R/crash-inverter.log"; }
    ends_before=$(last_ids)
    check "the restarted gateway sends frame sets to the inverter" \
        wait_for 90 bash -c "[ \$(grep -c ' can5 35E#' '$R/crash-inverter.log') -ge $((ends_before + 3)) ]"
    kill "$dump_inv" "$dump_bat"
    wait "$dump_inv" "$dump_bat" 2>/dev/null
    python3 "$R/restart-gap.py" --inverter "$R/crash-inverter.log" --batteries "$R/crash-batteries.log" \
        --killed-at "$killed_at" --pid "$newpid" --restart-sec "$(prop RestartUSec)" \
        --stale-timeout "$(sed -n 's/^STALE-TIMEOUT *= *\([0-9.]*\).*/\1/p' /etc/bms-gateway/bms_config.toml)" \
        >>"$R/results" 2>>"$R/guest.log" || bad "restart-gap.py failed (see guest.log)"
    pid=$newpid
fi

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

# --- a dead CAN interface (spec 17): the unprivileged gateway has it taken
# down and up by the link helper, the only unit with CAP_NET_ADMIN; nobody
# else gets anything from the helper.
HELPER=bms-gateway-link-helper
SOCK=/run/$HELPER.sock
check "the gateway's unit started the link helper's socket (Wants=)" systemctl is-active --quiet $HELPER.socket
check "the helper's socket is root:bms-gateway 0660" test "$(stat -c '%U:%G %a' $SOCK)" = "root:bms-gateway 660"
hscore=$(systemd-analyze security --no-pager $HELPER@probe.service 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "MEASURE systemd-analyze security (online): $UNIT $score, $HELPER@.service $hscore" >>"$R/results"
check "systemd-analyze security on the installed helper: $hscore < 2.0" \
    awk -v s="$hscore" 'BEGIN { exit !(s != "" && s < 2.0) }'
ask() { # USER GROUP REQUEST: the helper's answer to REQUEST, sent as USER:GROUP
    setpriv --reuid="$1" --regid="$2" --clear-groups python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    sys.exit(f"cannot connect: {e.strerror}")
s.sendall(sys.argv[2].encode() + b"\n")
print(s.makefile().readline().strip())' "$SOCK" "$3" 2>&1
}
# The shipped config says RECOVER = "off": the gateway never asks, so the
# helper bounces nothing, not even for the gateway's user.
answer=$(ask bms-gateway bms-gateway "bounce can1")
echo "helper, bms-gateway asks for can1 with RECOVER = off: $answer" >>"$R/guest.log"
check "with RECOVER = \"off\" the helper refuses even the gateway's own can1: $answer" \
    grep -q '^refused \[can\] RECOVER is "off"' <<<"$answer"
# From here on, as the owner who wants it: RECOVER = "bounce" (the helper
# reads the config at each request; the gateway at its start, below).
sed -i -e 's/^RECOVER = "off"/RECOVER = "bounce"/' -e 's/^RECOVER-AFTER = 30$/RECOVER-AFTER = 5/' \
    /etc/bms-gateway/bms_config.toml
answer=$(ask bms-gateway bms-gateway "bounce can3")
echo "helper, bms-gateway asks for can3: $answer" >>"$R/guest.log"
check "the helper refuses an interface the config does not name (can3): $answer" \
    grep -q '^refused .*can3.* not a CAN-IF' <<<"$answer"
answer=$(ask nobody bms-gateway "bounce can1")
echo "helper, nobody (group bms-gateway) asks for can1: $answer" >>"$R/guest.log"
check "the helper refuses another user, even in the gateway's group (SO_PEERCRED): $answer" \
    grep -q "^refused user id $(id -u nobody) is not the gateway's ($(id -u bms-gateway))" <<<"$answer"
answer=$(ask nobody nogroup "bounce can1")
echo "helper, nobody (nogroup) asks for can1: $answer" >>"$R/guest.log"
check "another user outside the group cannot even connect: $answer" grep -q 'Permission denied' <<<"$answer"
# The real thing: RECOVER = "bounce", and can1 (battery 2, whose simulator
# keeps talking on can4) made deaf by an ingress tc filter that drops every
# frame; the filter goes once the gateway has had the link bounced.
t0=$(date +%s)
journal_has() { journalctl -b --no-pager -o cat --since "@$t0" | grep -q "$1"; }
check "restart with RECOVER = \"bounce\", RECOVER-AFTER = 5" timeout 120 systemctl restart "$UNIT"
check "battery 2 (can1) reports after the restart" wait_for 60 journal_has 'battery 2 (can1): reporting'
before=$(ip -details link show can1 | grep -Eo 'qlen [0-9]+|restart-ms [0-9]+|bitrate [0-9]+ sample-point [0-9.]+' | tr '\n' ' ')
tc qdisc add dev can1 ingress >>"$R/guest.log" 2>&1
tc filter add dev can1 ingress matchall action drop >>"$R/guest.log" 2>&1
t_deaf=$(date +%s.%N)
check "the gateway had the deaf can1 taken down and up by the helper" \
    wait_for 60 journal_has 'battery 2 (can1): nothing is received any more for 5 s: took can1 down and up (by the link helper), try 1'
t_bounced=$(date +%s.%N)
tc qdisc del dev can1 ingress >>"$R/guest.log" 2>&1
check "the helper did it for the gateway's user" \
    journal_has "link helper: took can1 down and up for user id $(id -u bms-gateway)"
check "traffic is back on can1 (interface_recovered)" \
    wait_for 30 journal_has 'battery 2 (can1): traffic is back, the interface works again'
t_back=$(date +%s.%N)
after=$(ip -details link show can1 | grep -Eo 'qlen [0-9]+|restart-ms [0-9]+|bitrate [0-9]+ sample-point [0-9.]+' | tr '\n' ' ')
secs() { printf '%.2f' "$(echo "$1 - $2" | bc)"; }
echo "MEASURE dead can1: bounce seen in the journal $(secs "$t_bounced" "$t_deaf") s after the filter (RECOVER-AFTER 5, journal polled each second), traffic back $(secs "$t_back" "$t_deaf") s after; settings before: $before; after: $after" >>"$R/results"
check "networkd's settings survive the bounce: $after" test "$before" = "$after"
check "the gateway still has no capabilities (CapEff 0)" \
    grep -q '^CapEff:[[:space:]]*0000000000000000$' "/proc/$(prop MainPID)/status"
check "no helper instance is left running" \
    bash -c "! systemctl list-units --no-legend --state=active '$HELPER@*.service' | grep -q ."

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
