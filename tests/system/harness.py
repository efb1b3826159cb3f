"""Scenario plumbing for the system tests: registry, per-scenario context,
the gateway process, and checks of inverter traffic against expected values.

A scenario is a function taking a Ctx; it fails by raising (assert or
Failure). Ctx.cleanup() always runs: it stops peers, kills the gateways it
started and deletes the interfaces it created, so scenarios are independent.
"""

import os
import re
import signal
import subprocess
import threading
import time

import canio
import pylon

REPO = None
MODE = "test"
BINARY = None
TMP = "/tmp/systest"
SCENARIOS = []


class ScenarioTimeout(Exception):
    pass


class Failure(AssertionError):
    pass


class Scenario:
    def __init__(self, name, fn, budget, mode, tier, last=False):
        self.fn, self.budget, self.mode, self.tier, self.last = fn, budget, mode, tier, last
        # The vcan tier keeps the plain name; others are NAME@TIER.
        self.name = name if tier == "vcan" else f"{name}@{tier}"
        self.doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


TIERS = ("vcan", "sja1000")


def scenario(name, budget=90, mode="test", tiers=("vcan",), last=False):
    """Register a scenario; `budget` is its hard time limit in seconds.
    `tiers`: the transports it runs on (canio.TRANSPORT), each a scenario of
    its own; the sja1000 tier is slower to set up, hence its longer budget.
    `last`: run after the tier's other scenarios (a flood can leave the
    emulated controllers unusable for the rest of the boot)."""
    def deco(fn):
        for tier in tiers:
            b = budget if tier == "vcan" else budget + 30
            SCENARIOS.append(Scenario(name, fn, b, mode, tier, last))
        return fn
    return deco


class StallMonitor(threading.Thread):
    """Notices when the whole VM stops running for a while.

    The VM is software-emulated; when the host is busy (other builds, a
    fuzzer) it can be descheduled for seconds, and its clock jumps on. Any
    timing check spanning such a stall is inconclusive: the driver uses this
    to rerun a failed scenario once instead of blaming the gateway.
    """

    TICK = 0.05

    def __init__(self):
        super().__init__(daemon=True, name="stall-monitor")
        self.stalls = []  # (monotonic time at the end, seconds lost)
        self.lock = threading.Lock()

    def run(self):
        last = time.monotonic()
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            lost = now - last - self.TICK
            if lost > 0.5:
                with self.lock:
                    self.stalls.append((now, lost))
            last = now

    def note(self, now, lost):
        """A stall seen elsewhere (a battery player that ran late)."""
        with self.lock:
            self.stalls.append((now, lost))

    def worst(self, t0, t1=None):
        """Longest stall that ended in [t0, t1]."""
        with self.lock:
            return max((d for t, d in self.stalls if t >= t0 and (t1 is None or t <= t1)),
                       default=0.0)


STALLS = StallMonitor()


def setup(repo, mode, tmp=TMP):
    """`tmp`: this process's scratch directory (config files, logs, a
    broker's files): one per lane, so lanes never share a file name."""
    global REPO, MODE, BINARY, TMP
    REPO, MODE, TMP = repo, mode, tmp
    BINARY = os.path.join(repo, "target", "release", "bms-gateway")
    os.makedirs(TMP, exist_ok=True)
    STALLS.start()
    canio.on_late = STALLS.note


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_for(pred, timeout, interval=0.1):
    """Poll pred() until it returns a truthy value; return it, or None."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


# A frame no scenario sends otherwise: what wait_listening probes with.
PROBE_ID = 0x7EF
PROBE_DATA = bytes.fromhex("50524F4245")  # "PROBE"


def wait_listening(iface, captures, timeout):
    """Send probe frames on `iface` (0x7EF "PROBE", every 0.2 s) until every
    capture has received one: their sockets are open from then on. Returns
    the monotonic time of that, or None after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        canio.sh("cansend", iface, f"{PROBE_ID:03X}#{PROBE_DATA.hex().upper()}")
        if wait_for(lambda: all(any(f.id == PROBE_ID for f in c.since(0)) for c in captures), 0.2,
                    0.02):
            return time.monotonic()
    return None


def after_probes(cap):
    """The frames `cap` received after the last probe frame of wait_listening
    (a probe still in flight is skipped too)."""
    frames = cap.since(0)
    last = max((i for i, f in enumerate(frames) if f.id == PROBE_ID and f.data == PROBE_DATA),
               default=-1)
    return [f for f in frames[last + 1:] if not (f.id == PROBE_ID and f.data == PROBE_DATA)]


class Gateway:
    """One bms-gateway process with its own config file and log."""

    def __init__(self, ctx, config, args=(), env=None, binary=None):
        self.ctx = ctx
        n = len(ctx.gateways) + 1
        self.cfg = os.path.join(TMP, f"{ctx.name}-{n}.toml")
        self.logpath = os.path.join(TMP, f"{ctx.name}-{n}.log")
        with open(self.cfg, "w") as f:
            f.write(config)
        e = dict(os.environ)
        e.setdefault("RUST_LOG", "info")
        e.update(env or {})
        self.log = open(self.logpath, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([binary or BINARY, "-c", self.cfg, *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=e)

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def threads(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/task"))
        except OSError:
            return None

    def signal_stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send sig, wait for exit; return (seconds, exit code or None)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        return time.monotonic() - t0, rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_text(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Ctx:
    """Everything one scenario started, so that it can all be torn down."""

    def __init__(self, name):
        self.name = name
        self.ifaces = []
        self.threads = []
        self.procs = []
        self.gateways = []
        self.notes = []
        self.soft_errors = []

    def log(self, msg):
        print(f"    [{self.name}] {msg}", flush=True)

    def soft(self, cond, msg):
        """A check that fails the scenario at its end, so later checks still
        run and report (used where one deviation should not hide others)."""
        if not cond:
            self.soft_errors.append(msg)
            self.log(f"FAILED (continuing): {msg}")

    def note(self, msg):
        """A remark printed with the result (e.g. an underspecified choice)."""
        self.notes.append(msg)

    def vcan(self, *names):
        """The gateway's interfaces `names`, ready: vcan interfaces made, or
        on the sja1000 tier both controllers of each cable given their bit
        rate and brought up. Peers reach them through ctx.peer(name)."""
        if canio.TRANSPORT == "sja1000":
            for n in names:
                check(os.path.exists(f"/sys/class/net/{n}"),
                      f"no emulated controller {n} (cables: {', '.join(canio.CABLES)})")
            canio.sja_up(*names, *map(canio.peer, names))
        for n in names:
            if canio.TRANSPORT != "sja1000":
                canio.vcan_add(n)
            if n not in self.ifaces:
                self.ifaces.append(n)

    def peer(self, iface):
        """Where a peer (battery, inverter, cansend) of the gateway's `iface` is."""
        return canio.peer(iface)

    def battery(self, iface, values, period=1.0):
        """A battery sim on the cable of the gateway's `iface`."""
        b = canio.BatterySim(canio.peer(iface), values, period)
        b.start()
        self.threads.append(b)
        return b

    def capture(self, iface, candump=False):
        """What a peer on the cable of the gateway's `iface` receives."""
        iface = canio.peer(iface)
        c = canio.CandumpCapture(iface) if candump else canio.Capture(iface)
        c.start()
        self.threads.append(c)
        return c

    def spawn(self, args, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def gateway(self, config, args=(), env=None, require_binary=True, binary=None):
        """A gateway process; `binary` instead of the build tree's release binary."""
        if require_binary:
            check(os.access(BINARY, os.X_OK), f"{BINARY} missing")
        g = Gateway(self, config, args, env, binary)
        self.gateways.append(g)
        return g

    def gateway_log_tails(self, n=25):
        out = []
        for i, g in enumerate(self.gateways, 1):
            lines = g.log_text().splitlines()
            if lines:
                out.append(f"gateway {i} log (last {min(n, len(lines))} of {len(lines)} lines):")
                out.extend(lines[-n:])
        return out

    def cleanup(self):
        for g in self.gateways:
            g.kill()
        self.check_no_interlock_trips()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for t in self.threads:
            t.stop()
        if canio.TRANSPORT == "sja1000":
            canio.sja_down(*self.ifaces, *map(canio.peer, self.ifaces))
        else:
            for n in self.ifaces:
                canio.vcan_del(n)


    def check_no_interlock_trips(self):
        """Spec 14: no gateway of the scenario refused a frame set. Each trip
        is logged as "inverter N (IF): interlock: RULE (...)"."""
        trips = [line for g in self.gateways for line in g.log_text().splitlines()
                 if "interlock: " in line]
        if not trips:
            return
        msg = f"{len(trips)} interlock trip(s), first: {trips[0].strip()[:200]}"
        self.soft(False, msg)




# --- configuration -----------------------------------------------------------

def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def config(inputs, outputs, battery=None, mqtt=None):
    """Gateway TOML (keys as in etc/bms_config.toml). inputs/outputs: lists of key dicts.

    LIMIT-MODE is "sum" unless `battery` sets it: the section 4 scenarios'
    expected limits are the sums; the bank_* scenarios test "share"."""
    lines = ["# written by tests/system (scenario config)", "GATEWAY-ACTIVATED = true", ""]
    lines.append("[battery]")
    for k, v in {"LIMIT-MODE": "sum", **(battery or {})}.items():
        lines.append(f"{k} = {toml_value(v)}")
    lines.append("")
    for i in inputs:
        lines.append("[[bmses-in]]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in i.items())
        lines.append("")
    for o in outputs:
        lines.append("[[bmses-out]]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in o.items())
        lines.append("")
    lines.append("[mqtt]")
    for k, v in (mqtt or {"ACTIVATED": False}).items():
        lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


# --- checks of inverter traffic ------------------------------------------------

def describe(frames, limit=12):
    return " ".join(repr(f) for f in frames[-limit:])


def mismatches(frames, expected, only=None):
    """Every field of every frame compared to expected: list of texts."""
    out = []
    for fr in frames:
        if fr.ext or fr.rtr:
            out.append(f"forbidden frame {fr!r}")
            continue
        for key, got in pylon.frame_fields(fr.id, fr.data).items():
            if only is not None and key not in only:
                continue
            if key in expected and expected[key] != got:
                out.append(f"0x{key[0]:03X} {key[1]}: expected {expected[key]!r}, got {got!r} "
                           f"(frame {fr!r})")
    return out


def ids_seen(frames):
    return {f.id for f in frames}


def latest_burst_ok(cap, expected, t0, only=None):
    """True when, after t0, every expected frame ID arrived and the most recent
    frame of each matches expected."""
    frames = cap.since(t0)
    want = {k[0] for k in expected}
    last = {}
    for f in frames:
        if not f.ext and not f.rtr:
            last[f.id] = f
    if not want <= set(last):
        return False
    return not mismatches(list(last.values()), expected, only)


def wait_state(cap, expected, timeout, what, only=None):
    """Wait until the inverter bus shows `expected`; fail with the diff."""
    t0 = time.monotonic()
    ok = wait_for(lambda: latest_burst_ok(cap, expected, t0, only), timeout, 0.2)
    if not ok:
        frames = cap.since(t0)
        last = {}
        for f in frames:
            last[f.id] = f
        diff = mismatches(list(last.values()), expected, only)
        missing = {k[0] for k in expected} - set(last)
        raise Failure(f"{cap.iface}: {what} not reached within {timeout}s; "
                      + (f"missing IDs {sorted(hex(m) for m in missing)}; " if missing else "")
                      + "; ".join(diff[:8]) + f" [{len(frames)} frames]")
    return time.monotonic()


def check_window(cap, expected, t0, t1, what, only=None, min_bursts=1):
    """Every frame in [t0, t1] matches expected, each ID at least min_bursts times,
    and every frame is structurally valid (standard ID, DLC, ...)."""
    frames = cap.since(t0, t1)
    problems = []
    for f in frames:
        for p in pylon.frame_problems(f.id, f.data, f.ext, f.rtr):
            problems.append(f"{f!r}: {p}")
    diff = mismatches(frames, expected, only)
    counts = {}
    for f in frames:
        counts[f.id] = counts.get(f.id, 0) + 1
    few = [f"0x{i:03X} x{counts.get(i, 0)}" for i in sorted({k[0] for k in expected})
           if counts.get(i, 0) < min_bursts]
    msgs = []
    if few:
        msgs.append(f"too few frames (want >= {min_bursts}): {', '.join(few)}")
    msgs.extend(problems[:5])
    msgs.extend(diff[:8])
    if msgs:
        raise Failure(f"{cap.iface}: {what}: " + "; ".join(msgs))
    return frames


def bursts(frames):
    """Split frames into frame sets, each starting at 0x359 (docs/combining.md order)."""
    out, cur = [], []
    for f in frames:
        if f.id == 0x359 and cur:
            out.append(cur)
            cur = []
        cur.append(f)
    if cur:
        out.append(cur)
    return out


def check_window_any(cap, expected_list, t0, t1, what, only=None):
    """Every frame set in [t0, t1] matches one of several expected states as a
    whole (for transitions, where either the old or the new state is right,
    but never a mixture or anything else)."""
    bad = []
    for b in bursts(cap.since(t0, t1)):
        diffs = [mismatches(b, e, only) for e in expected_list]
        if all(diffs):
            bad.append(min(diffs, key=len))
    if bad:
        raise Failure(f"{cap.iface}: {what}: {len(bad)} frame sets match no allowed state, "
                      "closest: " + "; ".join(bad[0][:6]))


def max_gap(cap, t0, t1, can_id=0x351):
    """Longest interval without a frame of can_id in [t0, t1] (edges count)."""
    ts = [t0] + [f.t for f in cap.since(t0, t1) if f.id == can_id and not f.ext] + [t1]
    return max(b - a for a, b in zip(ts, ts[1:]))


def expected_for(view):
    return pylon.expected_fields(view)
