#!/usr/bin/env bash
# Tests of the bms-gateway Debian package and systemd integration
# (`make test-deb`, part of `make test`).
#
# Builds the package, checks its contents, conffiles, maintainer scripts and
# lintian; rates the unit with `systemd-analyze security` (must be < 2.0) and
# verifies it; installs, removes, purges and upgrades the package on this
# machine; runs the binary under a notify socket made by
# packaging/notify-harness.py to check READY, WATCHDOG and the hung-thread
# case, and then the whole package under a real systemd 252 in a QEMU VM on
# emulated SJA1000 CAN controllers brought up by systemd-networkd with the
# shipped files (packaging/test-systemd-vm.sh). Needs root; works without systemd as
# PID 1 and without CAN in the host kernel (CI machines have neither).
#
# It really installs the package: it refuses to run where bms-gateway is
# already installed (it would purge the owner's config), unless CI=true or
# BMS_DEB_TEST_REPLACE=1.
#
# Prints "N passed, N failed" last; exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PKG=bms-gateway
CONF=/etc/bms-gateway/bms_config.toml
UNIT=/usr/lib/systemd/system/bms-gateway.service
HELPER_SOCKET=/usr/lib/systemd/system/bms-gateway-link-helper.socket
HELPER_UNIT=/usr/lib/systemd/system/bms-gateway-link-helper@.service

passed=0
failed=0
failures=()
pass() {
    passed=$((passed + 1))
    echo "PASS: $*"
}
fail() {
    failed=$((failed + 1))
    failures+=("$*")
    echo "FAIL: $*"
}
# check NAME COMMAND...: runs COMMAND quietly; on failure shows its output.
check() {
    local name=$1
    shift
    local log
    log=$(mktemp)
    if "$@" >"$log" 2>&1; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/    | /' "$log" | tail -n 30
    fi
    rm -f "$log"
}
finish() {
    echo
    if [ "$failed" -gt 0 ]; then
        echo "failed tests:"
        printf '  - %s\n' "${failures[@]}"
    fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
# A missing prerequisite is a failure, never a silent skip.
fatal() {
    fail "$*"
    finish || true
    exit 1
}

WORK=$(mktemp -d /tmp/bms-deb-test.XXXXXX)
installed_by_us=0
cleanup() {
    if [ "$installed_by_us" = 1 ] && dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q "install ok"; then
        dpkg --purge "$PKG" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A section's header, with the seconds since the start (where the time goes).
section() {
    echo "== $* (at ${SECONDS}s)"
}

section "prerequisites"
[ "$(id -u)" = 0 ] || fatal "test-deb must run as root (it installs the package with dpkg)"
for tool in cargo dpkg dpkg-deb lintian systemd-analyze python3 adduser getent; do
    command -v "$tool" >/dev/null || fatal "missing tool: $tool (run \`make deps\`)"
done
pass "tools present (systemd $(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'), PID 1 is $(ps -o comm= -p 1 2>/dev/null || echo '?'))"
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q "install ok"; then
    if [ "${CI:-}" = true ] || [ "${BMS_DEB_TEST_REPLACE:-}" = 1 ]; then
        echo "note: $PKG is installed already; purging it for the test"
        dpkg --purge "$PKG" >/dev/null
    else
        fatal "$PKG is installed on this machine; the test would replace it and purge its config (set BMS_DEB_TEST_REPLACE=1 to allow)"
    fi
fi

section "build"
if ! bash packaging/build-deb.sh >"$WORK/build.out" 2>"$WORK/build.err"; then
    tail -n 30 "$WORK/build.err" | sed 's/^/    | /'
    fatal "make deb (packaging/build-deb.sh) builds the package"
fi
BUILT=$(tail -n 1 "$WORK/build.out")
pass "package builds: $BUILT"
# A later cargo-deb run empties target/debian: test a copy.
DEB="$WORK/$(basename "$BUILT")"
cp "$BUILT" "$DEB"
VERSION=$(dpkg-deb -f "$DEB" Version)

section "contents"
dpkg-deb -c "$DEB" >"$WORK/contents"
has_entry() { # MODE PATH: one line of `dpkg-deb -c` with this mode and path
    awk -v m="$1" -v p="./$2" '$1 == m && $6 == p { found = 1 } END { exit !found }' "$WORK/contents"
}
for entry in \
    "-rwxr-xr-x usr/bin/bms-gateway" \
    "-rw-r--r-- etc/bms-gateway/bms_config.toml" \
    "-rw-r--r-- usr/lib/systemd/system/bms-gateway.service" \
    "-rw-r--r-- usr/lib/systemd/system/bms-gateway-link-helper.socket" \
    "-rw-r--r-- usr/lib/systemd/system/bms-gateway-link-helper@.service" \
    "-rw-r--r-- usr/share/man/man1/bms-gateway.1.gz" \
    "-rw-r--r-- usr/share/doc/bms-gateway/copyright" \
    "-rw-r--r-- usr/share/doc/bms-gateway/changelog.Debian.gz" \
    "-rw-r--r-- usr/share/doc/bms-gateway/examples/networkd/79-can-mcp251xfd.network" \
    "-rw-r--r-- usr/share/doc/bms-gateway/examples/networkd/80-can.network" \
    "-rw-r--r-- usr/share/doc/bms-gateway/examples/networkd/80-can.link" \
    "-rw-r--r-- usr/share/doc/bms-gateway/examples/udev/70-bms-gateway-can.rules" \
    "-rw-r--r-- usr/share/doc/bms-gateway/examples/udev/71-bms-gateway-rs485.rules"; do
    read -r mode path <<<"$entry"
    check "contains $path ($mode)" has_entry "$mode" "$path"
done
check "every file is owned by root:root" \
    awk '$2 != "0/0" { print; bad = 1 } END { exit bad }' "$WORK/contents"

section "control data"
mkdir "$WORK/control"
dpkg-deb -e "$DEB" "$WORK/control"
check "conffiles is exactly $CONF" \
    test "$(cat "$WORK/control/conffiles")" = "$CONF"
check "Depends names adduser and procps (/bin/kill for ExecReload)" \
    bash -c "dpkg-deb -f '$DEB' Depends | grep -q adduser && dpkg-deb -f '$DEB' Depends | grep -q procps"
check "Architecture is $(dpkg --print-architecture)" \
    test "$(dpkg-deb -f "$DEB" Architecture)" = "$(dpkg --print-architecture)"
check "maintainer scripts are valid sh" \
    bash -c "for s in '$WORK'/control/{postinst,postrm,prerm}; do sh -n \"\$s\" || exit 1; done"
check "postinst creates the system user bms-gateway" \
    grep -q 'adduser --system --group --no-create-home' "$WORK/control/postinst"
check "postinst neither enables nor starts the unit on install" \
    bash -c "! grep -Eq 'deb-systemd-invoke (start|restart) |systemctl (enable|start)' '$WORK/control/postinst'"

mkdir "$WORK/root"
dpkg-deb -x "$DEB" "$WORK/root"
BIN="$WORK/root/usr/bin/bms-gateway"
check "packaged config says GATEWAY-ACTIVATED = false" \
    grep -Eq '^[[:space:]]*GATEWAY-ACTIVATED[[:space:]]*=[[:space:]]*false' "$WORK/root$CONF"
check "packaged config never says GATEWAY-ACTIVATED = true" \
    bash -c "! grep -Eq '^[[:space:]]*GATEWAY-ACTIVATED[[:space:]]*=[[:space:]]*true' '$WORK/root$CONF'"
check "packaged unit is packaging/bms-gateway.service" \
    cmp "$WORK/root$UNIT" packaging/bms-gateway.service
check "packaged link helper units are those of packaging/link-helper/" \
    bash -c "cmp '$WORK/root$HELPER_SOCKET' packaging/link-helper/bms-gateway-link-helper.socket &&
        cmp '$WORK/root$HELPER_UNIT' packaging/link-helper/bms-gateway@.bms-gateway-link-helper.service"
check "postinst neither enables nor starts the link helper's socket on install" \
    bash -c "! grep -Eq 'deb-systemd-invoke (start|restart) .*link-helper|systemctl (enable|start) .*link-helper' '$WORK/control/postinst'"

section "lintian"
set +e
lintian --tag-display-limit 0 "$DEB" >"$WORK/lintian" 2>&1
rc=$?
set -e
grep -v 'running with root privileges' "$WORK/lintian" | sed 's/^/    | /' || true
if [ "$rc" = 0 ] && ! grep -q '^E: ' "$WORK/lintian"; then
    pass "lintian reports no errors ($(grep -c '^W: ' "$WORK/lintian" || true) warnings, listed above)"
elif grep -q '^E: ' "$WORK/lintian"; then
    fail "lintian reports no errors"
else
    fail "lintian ran (exit status $rc)"
fi

section "systemd unit"
systemd-analyze security --offline=yes --no-pager packaging/bms-gateway.service >"$WORK/security" 2>&1 || true
score=$(sed -n 's/.*Overall exposure level for bms-gateway.service: \([0-9.]*\).*/\1/p' "$WORK/security")
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s < 2.0) }'; then
    pass "systemd-analyze security rates the unit $score (< 2.0)"
else
    tail -n 5 "$WORK/security" | sed 's/^/    | /'
    fail "systemd-analyze security rates the unit under 2.0 (got '${score:-no score}')"
fi
unit_has() { grep -qx "$1" packaging/bms-gateway.service; }
for line in "Type=notify" "NotifyAccess=main" "WatchdogSec=10" "Restart=on-failure" \
    "RestartPreventExitStatus=2" 'ExecReload=/bin/kill -HUP $MAINPID' "User=bms-gateway" \
    "ExecStart=/usr/bin/bms-gateway -c /etc/bms-gateway/bms_config.toml" \
    "CapabilityBoundingSet=" "NoNewPrivileges=yes" "ProtectSystem=strict" \
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_CAN AF_NETLINK" \
    "DevicePolicy=closed" "DeviceAllow=char-ttyUSB rw" "DeviceAllow=char-ttyACM rw" \
    "DeviceAllow=char-ttyAMA rw" "DeviceAllow=char-ttyS rw" "SupplementaryGroups=dialout"; do
    check "unit has $line" unit_has "$line"
done
check "unit wants the link helper's socket (a dead interface is bounced through it)" \
    unit_has "Wants=bms-gateway-link-helper.socket"
# The link helper (docs/dead-interfaces.md): its score is stated there.
mkdir -p "$WORK/helper-unit"
cp packaging/link-helper/bms-gateway@.bms-gateway-link-helper.service "$WORK/helper-unit/bms-gateway-link-helper@.service"
systemd-analyze security --offline=yes --no-pager "$WORK/helper-unit/bms-gateway-link-helper@.service" >"$WORK/helper-security" 2>&1 || true
hscore=$(sed -n 's/.*Overall exposure level for bms-gateway-link-helper@.*: \([0-9.]*\).*/\1/p' "$WORK/helper-security")
if [ -n "$hscore" ] && awk -v s="$hscore" 'BEGIN { exit !(s < 2.0) }'; then
    pass "systemd-analyze security rates the link helper $hscore (< 2.0)"
else
    tail -n 5 "$WORK/helper-security" | sed 's/^/    | /'
    fail "systemd-analyze security rates the link helper under 2.0 (got '${hscore:-no score}')"
fi
helper_has() { grep -qx "$1" packaging/link-helper/bms-gateway@.bms-gateway-link-helper.service; }
for line in "DynamicUser=yes" "AmbientCapabilities=CAP_NET_ADMIN" "CapabilityBoundingSet=CAP_NET_ADMIN" \
    "NoNewPrivileges=yes" "RestrictAddressFamilies=AF_UNIX AF_NETLINK" "IPAddressDeny=any" \
    "StandardInput=socket" \
    "ExecStart=/usr/bin/bms-gateway -c /etc/bms-gateway/bms_config.toml link-helper --user bms-gateway"; do
    check "link helper unit has $line" helper_has "$line"
done
sock_has() { grep -qx "$1" packaging/link-helper/bms-gateway-link-helper.socket; }
for line in "ListenStream=/run/bms-gateway-link-helper.sock" "Accept=yes" "SocketUser=root" \
    "SocketGroup=bms-gateway" "SocketMode=0660"; do
    check "link helper socket has $line" sock_has "$line"
done
check "unit never uses PrivateNetwork (it would hide the CAN interfaces)" \
    bash -c "! grep -q '^PrivateNetwork' packaging/bms-gateway.service"
check "unit never uses PrivateDevices (it would hide serial adapters plugged in later)" \
    bash -c "! grep -q '^PrivateDevices' packaging/bms-gateway.service"

section "example files against systemd $(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')'s own key tables"
# No offline verifier exists for .network/.link files in systemd 252, so
# every Section.Key used must appear in the parser's table compiled into
# systemd-networkd (for .network) or systemd-udevd (for .link).
keys_known() { # FILE BINARY
    local section="" key bad=0
    while IFS= read -r line; do
        case "$line" in
            '#'* | '') continue ;;
            '['*']') section=${line#[}; section=${section%]} ;;
            *=*)
                key=${line%%=*}
                if ! grep -aq "$section\.$key" "$2"; then
                    echo "unknown key $section.$key in $1"
                    bad=1
                fi
                ;;
        esac
    done <"$1"
    return $bad
}
NETWORKD="" UDEVD=""
for dir in /lib/systemd /usr/lib/systemd; do
    [ -z "$NETWORKD" ] && [ -x "$dir/systemd-networkd" ] && NETWORKD=$dir/systemd-networkd
    [ -z "$UDEVD" ] && [ -x "$dir/systemd-udevd" ] && UDEVD=$dir/systemd-udevd
done
if [ -n "$NETWORKD" ] && [ -n "$UDEVD" ]; then
    check "etc/networkd/80-can.network uses only keys systemd-networkd knows" keys_known etc/networkd/80-can.network "$NETWORKD"
    check "etc/networkd/80-can.link uses only keys systemd-udevd knows" keys_known etc/networkd/80-can.link "$UDEVD"
    check "etc/networkd/79-can-mcp251xfd.network uses only keys systemd-networkd knows" keys_known etc/networkd/79-can-mcp251xfd.network "$NETWORKD"
else
    fail "systemd-networkd and systemd-udevd binaries found (install systemd)"
fi
check "udev example names interfaces of at most 15 characters starting with can" \
    bash -c "grep -o 'NAME=\"[^\"]*\"' etc/udev/70-bms-gateway-can.rules | sed 's/NAME=\"\(.*\)\"/\1/' | awk 'length(\$0) > 15 || !/^can/ { bad = 1 } END { exit bad || NR == 0 }'"
check "RS485 udev example: every rule matches a tty by USB ID and serial number and adds a bms-rs485-* symlink" \
    bash -c "grep -v '^#' etc/udev/71-bms-gateway-rs485.rules | grep . | awk '!/SUBSYSTEM==\"tty\"/ || !/ATTRS\\{serial\\}==/ || !/SYMLINK\\+=\"bms-rs485-[a-z0-9-]+\"/ { bad = 1 } END { exit bad || NR == 0 }'"

section "binary contract (needs the gateway's CLI)"
check "packaged binary answers --help" "$BIN" --help
set +e
timeout 20 "$BIN" -c "$WORK/root$CONF" >"$WORK/unedited.out" 2>"$WORK/unedited.err"
rc=$?
set -e
if [ "$rc" = 2 ]; then
    pass "the unedited packaged config does not run a gateway (exit status 2)"
else
    sed 's/^/    | /' "$WORK/unedited.err" | tail -n 10
    fail "the unedited packaged config does not run a gateway (want exit status 2, got $rc)"
fi
# Under journald: JOURNAL_STREAM names stderr's device:inode, and every line
# must carry a <N> priority prefix and no timestamp of its own.
: >"$WORK/journal.err"
# shellcheck disable=SC2094 # stat reads the inode number, not the contents
set +e
JOURNAL_STREAM=$(stat -c '%d:%i' "$WORK/journal.err") timeout 20 "$BIN" -c "$WORK/root$CONF" \
    >/dev/null 2>>"$WORK/journal.err"
set -e
if [ -s "$WORK/journal.err" ] && ! grep -qv '^<[0-7]>' "$WORK/journal.err" &&
    ! grep -Eq '[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:' "$WORK/journal.err"; then
    pass "under journald the refusal is logged as <N>message lines without timestamps: $(head -n 1 "$WORK/journal.err")"
else
    sed 's/^/    | /' "$WORK/journal.err" | tail -n 5
    fail "under journald the refusal is logged as <N>message lines without timestamps (stderr above)"
fi

section "notify socket and watchdog (packaging/notify-harness.py)"
harness() { # NAME EXPECT [ENV=VALUE...]: bms-gateway demo under the fake service manager
    local name=$1 expect=$2
    shift 2
    local out
    set +e
    out=$(env "$@" python3 packaging/notify-harness.py --expect "$expect" --duration 8 \
        --watchdog-usec 1000000 --stdout "$WORK/$name.stdout" --stderr "$WORK/$name.stderr" \
        -- "$BIN" demo --duration 8 2>&1)
    set -e
    echo "$out" | grep -v '^CHECK ' | sed 's/^/    /'
    while IFS= read -r line; do
        case "$line" in
            "CHECK ok: "*) pass "$name: ${line#CHECK ok: }" ;;
            "CHECK fail: "*) fail "$name: ${line#CHECK fail: }" ;;
        esac
    done <<<"$out"
    if ! grep -q '^CHECK ' <<<"$out"; then
        fail "$name: the harness ran"
    fi
    if grep -q '^CHECK fail' <<<"$out"; then
        echo "    last lines of the gateway's stderr:"
        tail -n 8 "$WORK/$name.stderr" | sed 's/^/    | /'
    fi
}
harness "demo under systemd" healthy
harness "demo with a hung combiner" hang BMS_GATEWAY_FAULT=hang-combiner

section "under a real systemd in a VM (packaging/test-systemd-vm.sh, a few minutes)"
# Before the host install below: the VM sees the host's root, and must find
# the package not installed.
set +e
bash packaging/test-systemd-vm.sh "$DEB" >"$WORK/vm.out" 2>&1
rc=$?
set -e
grep -v '^CHECK ' "$WORK/vm.out" | sed 's/^/    /'
while IFS= read -r line; do
    case "$line" in
        "CHECK ok: "*) pass "VM: ${line#CHECK ok: }" ;;
        "CHECK fail: "*) fail "VM: ${line#CHECK fail: }" ;;
    esac
done <"$WORK/vm.out"
if [ "$rc" = 100 ] || ! grep -q '^CHECK ' "$WORK/vm.out"; then
    fail "VM: the systemd test VM ran (exit status $rc)"
fi

section "install"
if dpkg -i "$DEB" >"$WORK/install.log" 2>&1; then
    installed_by_us=1
    pass "dpkg -i installs $VERSION"
else
    installed_by_us=1
    sed 's/^/    | /' "$WORK/install.log" | tail -n 20
    fail "dpkg -i installs $VERSION"
fi
check "system user bms-gateway exists" getent passwd bms-gateway
check "bms-gateway is a system user without a login shell" \
    bash -c "uid=\$(id -u bms-gateway); [ \"\$uid\" -lt 1000 ] && getent passwd bms-gateway | grep -Eq ':/(usr/)?s?bin/(nologin|false)\$'"
check "bms-gateway is in no supplementary group" test "$(id -Gn bms-gateway)" = bms-gateway
for f in /usr/bin/bms-gateway "$CONF" "$UNIT" /usr/share/man/man1/bms-gateway.1.gz \
    /usr/share/doc/bms-gateway/examples/networkd/80-can.network; do
    check "installed $f" test -f "$f"
done
check "the unit is not enabled by the install" \
    bash -c "! ls /etc/systemd/system/*.wants/bms-gateway.service >/dev/null 2>&1"
check "the link helper's socket is not enabled by the install" \
    bash -c "! ls /etc/systemd/system/*.wants/bms-gateway-link-helper.socket >/dev/null 2>&1"
if command -v man >/dev/null; then
    check "systemd-analyze verify accepts the installed unit (and finds its man page)" \
        systemd-analyze verify "$UNIT"
else
    echo "    (man is not installed: verifying with --man=no)"
    check "systemd-analyze verify accepts the installed unit" \
        systemd-analyze verify --man=no "$UNIT"
fi
check "systemd-analyze verify accepts the link helper's socket and service" \
    systemd-analyze verify --man=no "$HELPER_SOCKET" "${HELPER_UNIT%@.service}@check.service"

section "remove and purge"
echo "# owner's edit" >>"$CONF"
check "dpkg -r removes the package" dpkg -r "$PKG"
check "remove deletes the binary" test ! -e /usr/bin/bms-gateway
check "remove deletes the unit" test ! -e "$UNIT"
check "remove keeps the (edited) config" grep -q "owner's edit" "$CONF"
check "dpkg -P purges the package" dpkg -P "$PKG"
check "purge deletes the config" test ! -e "$CONF"
check "purge deletes /etc/bms-gateway" test ! -e /etc/bms-gateway
check "package is gone from dpkg's database" \
    bash -c "! dpkg-query -W -f='\${Status}' $PKG 2>/dev/null | grep -q 'install'"

section "upgrade keeps the owner's config"
# A second package, Debian revision +1, whose config template changed too:
# the hard case, where dpkg must choose between the owner's file and ours.
REV=${VERSION##*-}
NEXT_REV=$((REV + 1))
cp "${BMS_CONFIG_TEMPLATE:-etc/bms_config.toml}" "$WORK/template-next.toml"
echo "# a line new in the next template" >>"$WORK/template-next.toml"
if BMS_CONFIG_TEMPLATE="$WORK/template-next.toml" bash packaging/build-deb.sh --no-build \
    --deb-revision "$NEXT_REV" --output "$WORK/next.deb" >"$WORK/build2.out" 2>"$WORK/build2.err"; then
    DEB2=$(tail -n 1 "$WORK/build2.out")
    pass "second package builds ($(dpkg-deb -f "$DEB2" Version))"
    if dpkg -i "$DEB" >"$WORK/install2.log" 2>&1; then
        installed_by_us=1
        sed -i 's/^\([[:space:]]*GATEWAY-ACTIVATED[[:space:]]*=[[:space:]]*\)false/\1true/' "$CONF"
        echo "# owner's edit before upgrade" >>"$CONF"
        check "upgrade with dpkg -i --force-confold" \
            env DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$DEB2"
        check "upgraded version is $(dpkg-deb -f "$DEB2" Version)" \
            test "$(dpkg-query -W -f='${Version}' "$PKG")" = "$(dpkg-deb -f "$DEB2" Version)"
        check "upgrade keeps the owner's edit" grep -q "owner's edit before upgrade" "$CONF"
        check "upgrade keeps the owner's GATEWAY-ACTIVATED = true" \
            grep -Eq '^[[:space:]]*GATEWAY-ACTIVATED[[:space:]]*=[[:space:]]*true' "$CONF"
        check "the new template is left beside it as bms_config.toml.dpkg-dist" \
            grep -q "a line new in the next template" "$CONF.dpkg-dist"
        check "dpkg -P after the upgrade" dpkg -P "$PKG"
        check "purge after upgrade deletes /etc/bms-gateway" test ! -e /etc/bms-gateway
    else
        sed 's/^/    | /' "$WORK/install2.log" | tail -n 20
        fail "dpkg -i installs $VERSION before the upgrade"
    fi
else
    tail -n 20 "$WORK/build2.err" | sed 's/^/    | /'
    fail "second package builds"
fi

finish
