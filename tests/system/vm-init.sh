#!/bin/busybox sh
# shellcheck shell=dash
# /init of the system-test VM's initramfs (busybox only; see run.sh).
# Loads the virtio/9p and CAN modules, mounts the host's root (read-only) and
# the results export, chroots into the host root to run the scenario driver,
# then powers the VM off. Any failure still powers off: run.sh then reports
# the missing results instead of hanging until its timeout.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "vm-init: ERROR: $*"
    sync
    poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

while read -r m; do
    insmod "/modules/$m.ko" || fail "insmod $m failed"
done </modules/order

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host ||
    fail "cannot mount the host root over 9p"
mkdir -p /results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /results ||
    fail "cannot mount the results export"
# shellcheck disable=SC1091 # written by run.sh at boot time
. /results/params.sh
[ -n "$REPO" ] || fail "params.sh has no REPO"

# The chroot needs its own kernel file systems and writable scratch space; the
# host root itself stays read-only.
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm 2>/dev/null
mount -t devpts devpts /host/dev/pts
mount -t tmpfs shm /host/dev/shm
# udev would make these; bash process substitution needs /dev/fd
ln -sf /proc/self/fd /host/dev/fd
ln -sf /proc/self/fd/0 /host/dev/stdin
ln -sf /proc/self/fd/1 /host/dev/stdout
ln -sf /proc/self/fd/2 /host/dev/stderr
# A fresh tmpfs on /tmp and /run. A checkout that lives under one of them
# (CI clones into temporary directories) is bound back to its own path.
mkdir -p /repo
mount -o bind "/host$REPO" /repo || fail "cannot bind $REPO"
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
if [ ! -e "/host$REPO/tests/system/driver.py" ]; then
    mkdir -p "/host$REPO"
    mount -o bind /repo "/host$REPO" || fail "cannot bind $REPO back"
fi
mkdir -p /host/tmp/results
mount -o bind /results /host/tmp/results || fail "cannot bind the results export"

# Loopback for Mosquitto; there is no other network device in this VM.
chroot /host /usr/sbin/ip link set lo up

echo "vm-init: kernel $(uname -r), CAN modules loaded, running the scenario driver"
# shellcheck disable=SC2086 # SCENARIOS is a space-separated list of names
chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    /usr/bin/python3 "$REPO/tests/system/driver.py" \
    --repo "$REPO" --results /tmp/results --mode "$MODE" --lanes "${LANES:-1}" $SCENARIOS # split: a name list
echo "vm-init: driver exited with $?"
sync
umount /host/tmp/results /results 2>/dev/null
poweroff -f
