# shellcheck shell=bash
# Shared pieces of the two QEMU test VMs: the system tests (tests/system/run.sh)
# and the Debian package test under systemd (packaging/test-systemd-vm.sh).
# Sourced, not run. Both boot Debian's own kernel with a busybox initramfs and
# the host's root exported over 9p; what they share lives here once:
#   vm_kernel            the newest /boot/vmlinuz-* whose /lib/modules is present
#   vm_modules DIR M...  modules M and their dependencies (modinfo), plain .ko
#                        in DIR, load order in DIR/order
#   vm_cpio DIR OUT      DIR packed as a newc initramfs
#   vm_can_args N        QEMU arguments for N emulated CAN buses with two
#                        SJA1000 controllers (kvaser_pci) on each
#   VM_NICE              a command prefix that runs the VM at a higher CPU
#                        priority when we may (root), else nothing
# Callers define die() (message, exit) before using these.

# The VMs judge timing (frame gaps, stale timeouts) in software emulation:
# on a busy host (the builds and tests of `make test` beside them) they get
# the CPU first.
if [[ $(id -u) -eq 0 ]]; then
    VM_NICE=(nice -n -5)
else
    VM_NICE=()
fi

# vm_kernel: sets VM_KVER (kernel release) and VM_KERNEL (its image). The VM
# loads modules from the host's /lib/modules, so both must match.
vm_kernel() {
    VM_KVER=""
    local k
    for k in $(printf '%s\n' /boot/vmlinuz-* | sed 's|/boot/vmlinuz-||' | sort -V -r); do
        if [[ -d "/lib/modules/$k/kernel" && -r "/boot/vmlinuz-$k" ]]; then
            VM_KVER="$k"
            break
        fi
    done
    [[ -n "$VM_KVER" ]] || die "no /boot/vmlinuz-* with matching /lib/modules (install linux-image-amd64)"
    VM_KERNEL="/boot/vmlinuz-$VM_KVER"
}

# vm_modules DIR MODULE...: copies MODULEs and everything they depend on into
# DIR as plain .ko files (busybox insmod reads no compressed modules) and
# writes their load order, dependencies first, to DIR/order. Resolved with
# modinfo, so a kernel with other dependencies or compression still works;
# a module built into the kernel needs no file and is skipped.
vm_modules() {
    local dir="$1" m src dst
    shift
    mkdir -p "$dir"
    : >"$dir/order"
    declare -A _vm_seen=()
    local -a _vm_order=()
    _vm_add() {
        local mod="$1" dep deps path
        [[ -n "${_vm_seen[$mod]:-}" ]] && return 0
        _vm_seen[$mod]=1
        path="$(modinfo -k "$VM_KVER" -n "$mod" 2>/dev/null)" || die "module $mod not found for kernel $VM_KVER"
        [[ "$path" == "(builtin)" ]] && return 0
        deps="$(modinfo -k "$VM_KVER" -F depends "$mod")"
        for dep in ${deps//,/ }; do _vm_add "$dep"; done
        _vm_order+=("$mod")
    }
    for m in "$@"; do _vm_add "$m"; done
    for m in "${_vm_order[@]}"; do
        src="$(modinfo -k "$VM_KVER" -n "$m")"
        dst="$dir/$m.ko"
        case "$src" in
            *.ko) cp "$src" "$dst" ;;
            *.ko.xz) xz -dc "$src" >"$dst" ;;
            *.ko.zst) zstd -qdc "$src" >"$dst" ;;
            *.ko.gz) gzip -dc "$src" >"$dst" ;;
            *) die "unknown module format: $src" ;;
        esac
        echo "$m" >>"$dir/order"
    done
    unset -f _vm_add
}

# vm_cpio DIR OUT: DIR as a gzip-compressed newc archive (the kernel's
# initramfs format).
vm_cpio() {
    (cd "$1" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$2"
}

# vm_can_args N: sets the array VM_CAN_ARGS to N emulated CAN buses
# (can-bus objects canbus1..canbusN), each with two kvaser_pci (SJA1000)
# controllers at fixed PCI slots: bus k's first controller (the gateway's
# side) at slot 0x10+k-1, its second (the peer's side) at 0x10+N+k-1. The
# kernel names them in slot order, so the gateway's sides are can0..can(N-1)
# and their peers canN..can(2N-1); tests/system renames them by slot.
vm_can_args() {
    local n="$1" k
    VM_CAN_ARGS=()
    for ((k = 1; k <= n; k++)); do
        VM_CAN_ARGS+=(-object "can-bus,id=canbus$k"
            -device "kvaser_pci,canbus=canbus$k,addr=$(printf '%02x' $((0x10 + k - 1)))"
            -device "kvaser_pci,canbus=canbus$k,addr=$(printf '%02x' $((0x10 + n + k - 1)))")
    done
}
