"""SocketCAN peers for the system tests: bus set-up (vcan, or emulated SJA1000
controllers), battery players, captures.

Standard library only (Python's socket module speaks AF_CAN/CAN_RAW). The
battery players and captures survive their interface going down or being
deleted and re-created: they keep retrying, as real devices on a bus would,
so a test can take an interface away under the gateway.
"""

import os
import socket
import struct
import subprocess
import threading
import time

import pylon

CAN_EFF_FLAG = 0x80000000
CAN_RTR_FLAG = 0x40000000
CAN_ERR_FLAG = 0x20000000
CAN_FRAME = struct.Struct("=IB3x8s")


def sh(*args, check=True):
    """Run a command, raise with its output if it fails."""
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


# --- the two transports ---------------------------------------------------------
# "vcan": one vcan interface per cable, shared by the gateway and its peer.
# "sja1000": a real driver (sja1000 + kvaser_pci) on QEMU's emulated
# controllers. Each cable is an emulated bus with two controllers: the
# gateway's side sNAME and the peer's side pNAME (battery sim, inverter
# capture, cansend). run.sh (vm-lib.sh) puts the gateway's side of cable k
# (k = 0, 1, ... in the order of CABLES) at PCI slot 0x10 + k and its peer's
# side at 0x10 + N + k, N cables in all.
TRANSPORT = "vcan"
# Called as on_late(now, seconds) when a battery player ends its burst more
# than LATE_S after it was due (harness.setup hooks the stall monitor in): a
# starved player makes the gateway see a stale battery, so any timing check
# spanning that is inconclusive, as across a VM stall.
on_late = None
LATE_S = 0.5
CABLES = ("bat1", "bat2", "bat3", "inv1", "inv2", "bat4")
SJA_BITRATE = 500000


def peer(name):
    """The interface a peer of the gateway's interface `name` uses."""
    if TRANSPORT == "sja1000" and name.startswith("s") and name[1:] in CABLES:
        return "p" + name[1:]
    return name


def sja_name_controllers(cables):
    """Rename the guest's SJA1000 controllers (can0, can1, ... in probe order)
    by PCI slot to sNAME / pNAME; returns the names present afterwards."""
    by_slot = {}
    for n in os.listdir("/sys/class/net"):
        dev = os.path.realpath(f"/sys/class/net/{n}/device")
        drv = os.path.basename(os.path.realpath(f"/sys/class/net/{n}/device/driver"))
        if drv == "kvaser_pci":
            slot = int(os.path.basename(dev).split(":")[2].split(".")[0], 16)
            by_slot[slot] = n
    names = []
    n = len(by_slot) // 2
    for k, cable in enumerate(cables[:n]):
        for side, slot in (("s", 0x10 + k), ("p", 0x10 + n + k)):
            cur = by_slot.get(slot)
            if cur is None:
                continue
            if cur != side + cable:
                sh("ip", "link", "set", cur, "name", side + cable)
            names.append(side + cable)
    return names


def ip_batch(lines, check=True):
    """Several `ip` commands in one process (each start of `ip` costs the
    slow VM a noticeable time)."""
    r = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                       capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip -batch failed ({r.returncode}): {r.stderr.strip()} for {lines}")
    return r


def sja_up(*names, bitrate=SJA_BITRATE):
    """Give controllers their bit rate and bring them up (what networkd does)."""
    lines = []
    for n in names:
        lines += [f"link set {n} down",
                  f"link set {n} type can bitrate {bitrate} restart-ms 100",
                  f"link set {n} up"]
    ip_batch(lines)


def sja_down(*names):
    ip_batch([f"link set {n} down" for n in names], check=False)


def link_details(name):
    """`ip -details -statistics link show NAME` as text."""
    return sh("ip", "-details", "-statistics", "link", "show", name).stdout


def vcan_add(name):
    """Create (or re-create) a vcan interface and bring it up."""
    if os.path.exists(f"/sys/class/net/{name}"):
        sh("ip", "link", "delete", name)
    sh("ip", "link", "add", "dev", name, "type", "vcan")
    sh("ip", "link", "set", name, "up")


def vcan_del(name):
    if os.path.exists(f"/sys/class/net/{name}"):
        sh("ip", "link", "delete", name, check=False)


def open_can(iface):
    s = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    s.bind((iface,))
    return s


def pack(can_id, data, ext=False, rtr=False):
    cid = can_id | (CAN_EFF_FLAG if ext else 0) | (CAN_RTR_FLAG if rtr else 0)
    data = bytes(data)
    return CAN_FRAME.pack(cid, len(data), data.ljust(8, b"\0"))


class Frame:
    """One received frame with its monotonic arrival time."""

    __slots__ = ("t", "id", "data", "ext", "rtr")

    def __init__(self, t, can_id, data, ext=False, rtr=False):
        self.t, self.id, self.data, self.ext, self.rtr = t, can_id, bytes(data), ext, rtr

    def __repr__(self):
        flags = ("x" if self.ext else "") + ("R" if self.rtr else "")
        return f"{self.id:03X}{flags}#{self.data.hex().upper()}@{self.t:.3f}"


class Sender:
    """A socket that reopens itself when its interface vanishes or goes down."""

    def __init__(self, iface):
        self.iface = iface
        self.sock = None
        self.errors = 0

    def send(self, can_id, data, ext=False, rtr=False):
        try:
            if self.sock is None:
                self.sock = open_can(self.iface)
            self.sock.send(pack(can_id, data, ext, rtr))
            return True
        except OSError:
            self.errors += 1
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            return False

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class BatterySim(threading.Thread):
    """Plays one Pylontech BMS: the whole frame set every `period` seconds.

    `values` may be replaced at any time (whole dict); `paused` silences it.
    Also records the 0x305 frames it receives (a gateway polling it).
    """

    def __init__(self, iface, values, period=1.0, gap=0.003):
        super().__init__(daemon=True, name=f"bms-{iface}")
        self.iface, self.values, self.period, self.gap = iface, values, period, gap
        self.paused = False
        self.bursts = 0
        self.burst_ends = []  # monotonic time each complete burst was sent
        self.burst_starts = []  # ... and when its first frame was sent
        self._halt = threading.Event()
        self.sender = Sender(iface)

    def run(self):
        nxt = time.monotonic()
        while not self._halt.is_set():
            if not self.paused:
                ok = True
                self.burst_starts.append(time.monotonic())
                for n, (can_id, data) in enumerate(pylon.encode_battery(self.values)):
                    if n and self.gap:
                        time.sleep(self.gap)
                    ok &= self.sender.send(can_id, data)
                if ok:
                    self.bursts += 1
                    self.burst_ends.append(time.monotonic())
                # A burst that took long (each 3 ms gap a wake-up the busy
                # VM may delay) completes its telegram late all the same.
                late = time.monotonic() - nxt
                if late > LATE_S and on_late is not None:
                    on_late(time.monotonic(), late)
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay < 0:  # fell behind (slow VM): do not burst to catch up
                nxt = time.monotonic()
                delay = 0
            self._halt.wait(delay)
        self.sender.close()

    def stop(self):
        self._halt.set()
        self.join(timeout=5)


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("=qq")


class Capture(threading.Thread):
    """Records every frame seen on an interface (python AF_CAN socket).

    Arrival times are the kernel's receive timestamps (SO_TIMESTAMPNS, moved
    to the monotonic clock), so a capture thread that the busy VM schedules
    late still reports when the frame was on the bus.
    """

    def __init__(self, iface):
        super().__init__(daemon=True, name=f"cap-{iface}")
        self.iface = iface
        self.frames = []
        self.lock = threading.Lock()
        self._halt = threading.Event()
        self.reopens = 0

    def run(self):
        sock = None
        while not self._halt.is_set():
            try:
                if sock is None:
                    sock = open_can(self.iface)
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
                    sock.settimeout(0.2)
                raw, anc, _, _ = sock.recvmsg(CAN_FRAME.size, 64)
            except socket.timeout:
                continue
            except OSError:
                # interface down or deleted: retry until it is back
                if sock is not None:
                    sock.close()
                    sock = None
                    self.reopens += 1
                self._halt.wait(0.1)
                continue
            t = time.monotonic()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = TIMESPEC.unpack(value[:TIMESPEC.size])
                    # realtime -> monotonic; never later than "now"
                    t = min(t, sec + nsec / 1e9 - (time.time() - time.monotonic()))
            cid, dlc, data = CAN_FRAME.unpack(raw)
            if cid & CAN_ERR_FLAG:
                continue
            fr = Frame(t, cid & 0x1FFFFFFF, data[:dlc],
                       bool(cid & CAN_EFF_FLAG), bool(cid & CAN_RTR_FLAG))
            with self.lock:
                self.frames.append(fr)
        if sock is not None:
            sock.close()

    def stop(self):
        self._halt.set()
        self.join(timeout=5)

    def since(self, t0, t1=None):
        with self.lock:
            return [f for f in self.frames if f.t >= t0 and (t1 is None or f.t <= t1)]

    def clear(self):
        with self.lock:
            self.frames = []


class CandumpCapture(threading.Thread):
    """Records frames with can-utils' candump (an independent reader)."""

    def __init__(self, iface):
        super().__init__(daemon=True, name=f"candump-{iface}")
        self.iface = iface
        self.frames = []
        self.lock = threading.Lock()
        # -L: log format "(sec.usec) iface ID#DATA"; stdbuf: line-buffered pipe
        self.proc = subprocess.Popen(["stdbuf", "-oL", "candump", "-L", iface],
                                     stdout=subprocess.PIPE, text=True)
        self.lines = 0

    def run(self):
        for line in self.proc.stdout:
            t = time.monotonic()
            self.lines += 1
            parts = line.split()
            if len(parts) != 3 or "#" not in parts[2]:
                continue
            ident, _, payload = parts[2].partition("#")
            rtr = payload.startswith("R")
            data = b"" if rtr else bytes.fromhex(payload)
            fr = Frame(t, int(ident, 16), data, ext=len(ident) == 8, rtr=rtr)
            with self.lock:
                self.frames.append(fr)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.join(timeout=5)

    def since(self, t0, t1=None):
        with self.lock:
            return [f for f in self.frames if f.t >= t0 and (t1 is None or f.t <= t1)]


def link_stats(name):
    """The kernel's counters of an interface (/sys/class/net/NAME/statistics):
    what a controller sent, received and lost (an emulated SJA1000's receive
    overruns)."""
    d = f"/sys/class/net/{name}/statistics"
    keys = ("tx_packets", "tx_dropped", "rx_packets", "rx_over_errors", "rx_errors", "rx_dropped")
    out = {}
    for k in keys:
        with open(os.path.join(d, k)) as f:
            out[k] = int(f.read())
    return out


# --- a controller that no longer hears (spec 17) ----------------------------------

IFF_UP = 0x1
RTM_NEWLINK = 16
RTMGRP_LINK = 1
NLMSGHDR = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")


class LinkWatch(threading.Thread):
    """Every time `iface` is taken down and up, from the kernel's rtnetlink
    link notifications (no polling: a bounce takes milliseconds). `downs`
    and `ups` are the monotonic times the link went down and came up again;
    `on_up(t)` runs in this thread after each up that followed a down."""

    def __init__(self, iface, on_up=None):
        super().__init__(daemon=True, name=f"linkwatch-{iface}")
        self.iface, self.on_up = iface, on_up
        self.index = socket.if_nametoindex(iface)
        self.downs, self.ups = [], []
        self.lock = threading.Lock()
        self._halt = threading.Event()
        # Subscribed before the thread starts: no change can slip past.
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))
        self.sock.settimeout(0.2)
        self.start()

    def run(self):
        was_up = True
        while not self._halt.is_set():
            try:
                buf = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            t = time.monotonic()
            for flags in self._link_flags(buf):
                up = bool(flags & IFF_UP)
                if up == was_up:
                    continue
                was_up = up
                with self.lock:
                    (self.ups if up else self.downs).append(t)
                if up and self.on_up is not None:
                    self.on_up(t)
        self.sock.close()

    def _link_flags(self, buf):
        """The flags of each RTM_NEWLINK message about our interface in `buf`."""
        off = 0
        while off + NLMSGHDR.size <= len(buf):
            length, kind, _, _, _ = NLMSGHDR.unpack_from(buf, off)
            if length < NLMSGHDR.size:
                break
            if kind == RTM_NEWLINK and off + NLMSGHDR.size + IFINFOMSG.size <= len(buf):
                _, _, index, flags, _ = IFINFOMSG.unpack_from(buf, off + NLMSGHDR.size)
                if index == self.index:
                    yield flags
            off += (length + 3) & ~3

    def bounces(self):
        """(down, up) times of each completed bounce."""
        with self.lock:
            return list(zip(self.downs, self.ups))

    def stop(self):
        self._halt.set()
        self.join(timeout=5)


class Deafness:
    """A controller that no longer hears (`side` "ingress": a tc filter on
    `iface` drops every frame the gateway's side would receive; the peer's
    frames still go out on the cable, and on vcan the peer's own reception
    is cut too, which no scenario reads) or no longer sends ("egress": every
    frame the gateway sends is dropped before the driver, and the send
    fails with ENOBUFS, as with a transmit queue that stays full). With
    `heal`, the harness removes the filter as soon as it sees the link
    taken down and up, as a driver whose hang a reset clears; without, the
    interface stays so until stop()."""

    def __init__(self, iface, heal, side="ingress"):
        self.iface = iface
        self.healed_at = None
        self.watch = LinkWatch(iface, on_up=self._heal if heal else None)
        sh("tc", "qdisc", "add", "dev", iface, "clsact")
        sh("tc", "filter", "add", "dev", iface, side, "matchall", "action", "drop")
        self.since = time.monotonic()

    def _heal(self, t):
        if self.healed_at is None:
            self.remove()
            self.healed_at = time.monotonic()

    def remove(self):
        sh("tc", "qdisc", "del", "dev", self.iface, "clsact", check=False)

    def stop(self):
        self.watch.stop()
        self.remove()
