#!/usr/bin/env bash
# Runs the Debian package under a real systemd (252, as PID 1) in a QEMU VM,
# for machines without systemd as PID 1 and without CAN in their kernel (CI).
#
# Usage: bash packaging/test-systemd-vm.sh PACKAGE.deb
#
# The VM boots Debian's own kernel (linux-image-amd64, which has the CAN
# drivers) with emulated SJA1000 CAN controllers and a busybox initramfs that mounts the host's root read-only over 9p, puts a
# tmpfs overlay on it (so the VM can install packages without touching the
# host) and switches to /lib/systemd/systemd with a test target as default.
# The test itself is packaging/vm/guest-test.sh; its "CHECK ok|fail" lines
# come back through a second, writable 9p export and are printed here.
# Exit status: the number of failed checks (0 = all passed); 100 when the VM
# could not be run at all.
#
# Software emulation (TCG): KVM hangs on these machines. A run takes a few
# minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
deb=${1:?usage: test-systemd-vm.sh PACKAGE.deb}
[ -f "$deb" ] || { echo "no package $deb" >&2; exit 100; }

die() {
    echo "vm: $*" >&2
    exit 100
}

# shellcheck source=tests/system/vm-lib.sh
. tests/system/vm-lib.sh
vm_kernel
kver=$VM_KVER
kernel=$VM_KERNEL
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
[ -x /bin/busybox ] || die "busybox missing (apt-get install busybox-static)"
ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is not static (apt-get install busybox-static)"
# udev loads the CAN drivers in the VM and applies 80-can.link.
[ -x /lib/systemd/systemd-udevd ] || die "systemd-udevd missing (apt-get install udev)"
[ -x /lib/systemd/systemd-networkd ] || die "systemd-networkd missing (apt-get install systemd)"
# Three emulated CAN buses with two SJA1000 controllers each: the gateway's
# can0 can1 (batteries) can2 (inverter) of the shipped config, and their
# peers can3 can4 can5 (simulated batteries, the inverter's candump). udev
# loads the kvaser_pci driver in the VM, systemd-networkd brings them up.
vm_can_args 3

work=$(mktemp -d /tmp/bms-vm.XXXXXX)
qemu_pid=""
cleanup() {
    if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- initramfs: busybox, the modules for 9p and overlayfs, and /init
mkdir -p "$work/initramfs"/{bin,proc,sys,dev,lower,upper,newroot}
cp /bin/busybox "$work/initramfs/bin/busybox"
vm_modules "$work/initramfs/mods" virtio_pci 9pnet_virtio 9p overlay
cat >"$work/initramfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod /mods/\$m.ko || echo "insmod \$m failed"; done </mods/order
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /lower || exec sh
mount -t tmpfs -o size=1g,mode=0755 tmpfs /upper
mkdir -p /upper/up /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/up,workdir=/upper/work /newroot || exec sh
mkdir -p /newroot/vmtest
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /newroot/vmtest || exec sh
# The host's fstab and enabled services mean nothing in here. A container
# marker of the host would make systemd believe it runs in a container and
# ignore the kernel command line.
: >/newroot/etc/fstab
rm -f /newroot/.dockerenv /newroot/run/.containerenv
# Container images forbid service starts from maintainer scripts; a Pi does not.
rm -f /newroot/usr/sbin/policy-rc.d
cp /newroot/vmtest/bms-vmtest.target /newroot/vmtest/bms-vmtest.service /newroot/etc/systemd/system/
# The kernel has booted: the host's boot watch sees it (systemd prints
# nothing here until the test starts).
: >/newroot/vmtest/booted
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /lib/systemd/systemd --unit=bms-vmtest.target
EOF
chmod 755 "$work/initramfs/init"
vm_cpio "$work/initramfs" "$work/initrd.gz"

# --- the results export: package, guest script, test units
results=$work/results
mkdir -p "$results"
cp "$deb" "$results/"
cp packaging/vm/guest-test.sh packaging/vm/restart-gap.py "$results/"
cat >"$results/bms-vmtest.target" <<'EOF'
[Unit]
Description=bms-gateway package test in a VM
Requires=basic.target bms-vmtest.service
After=basic.target
AllowIsolate=yes
EOF
cat >"$results/bms-vmtest.service" <<'EOF'
[Unit]
Description=bms-gateway package test driver
After=basic.target systemd-journald.service

[Service]
Type=oneshot
ExecStart=/bin/bash /vmtest/guest-test.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=15min
EOF

# boot_vm ATTEMPT: runs the VM until it powers off. Returns 1 when the
# kernel did not reach the initramfs's switch to the root within 5 minutes
# (TCG boots can stall, e.g. a soft lockup in the kernel's early self-tests
# on a loaded machine), 0 otherwise. Once it has, systemd's start of the
# test is waited for as long as it takes (at host load 9 the test had not
# started after 5 minutes, twice, with no console output to tell where the
# boot stood); the whole run is bounded to 20 minutes.
boot_vm() {
    rm -f "$results/booted" "$results/started" "$results/finished" "$results/results"
    echo "vm: booting kernel $kver under TCG, attempt $1 (a few minutes)"
    "${VM_NICE[@]}" qemu-system-x86_64 -accel tcg -m 1536 -smp 2 -nographic -no-reboot \
        -kernel "$kernel" -initrd "$work/initrd.gz" \
        -append "console=ttyS0 panic=-1 cryptomgr.notests systemd.unit=bms-vmtest.target systemd.mask=apparmor.service systemd.show_status=0 loglevel=4" \
        -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
        -virtfs "local,path=$results,mount_tag=results,security_model=none,multidevs=remap" \
        "${VM_CAN_ARGS[@]}" \
        >"$work/console.log" 2>&1 &
    qemu_pid=$!
    local t=0 stalled=0
    while kill -0 "$qemu_pid" 2>/dev/null; do
        if [ "$t" -ge 300 ] && [ ! -f "$results/booted" ]; then
            echo "vm: the kernel has not reached the root file system after 300 s; stopping this attempt" >&2
            stalled=1
            kill "$qemu_pid"
            break
        fi
        if [ "$t" -ge 1200 ]; then
            echo "vm: timed out after 20 minutes" >&2
            kill "$qemu_pid"
            break
        fi
        sleep 1
        t=$((t + 1))
    done
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
    return "$stalled"
}
if ! boot_vm 1; then
    tail -n 5 "$work/console.log" | sed 's/^/    | /' >&2
    boot_vm 2 || true
fi

keep=${BMS_VM_KEEP:-}
if [ -n "$keep" ]; then
    mkdir -p "$keep" && cp -r "$work/console.log" "$results"/* "$keep"/ 2>/dev/null || true
    echo "vm: logs kept in $keep"
fi
if [ ! -f "$results/finished" ] || [ ! -s "$results/results" ]; then
    echo "vm: the guest test did not finish; last console lines:" >&2
    tail -n 40 "$work/console.log" >&2
    exit 100
fi
cat "$results/results"
failed=$(grep -c '^CHECK fail' "$results/results" || true)
if [ "$failed" -gt 0 ]; then
    echo "vm: gateway journal (last 40 lines):"
    grep -E 'bms-gateway|systemd\[1\]: bms-gateway' "$results/journal.txt" | tail -n 40 | sed 's/^/    | /'
fi
exit "$failed"
