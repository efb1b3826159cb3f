#!/usr/bin/env python3
"""Judges a crash and restart of the gateway service, inside the systemd VM of
packaging/test-systemd-vm.sh (called by guest-test.sh after a SIGKILL).

Reads two `candump -L` logs ("(sec.usec) iface ID#DATA", realtime stamps):
the inverter's bus and the gateway's battery buses. Prints "MEASURE" lines
with the figures and "CHECK ok|fail" lines:
- systemd waits RestartSec before the new process; the inverter's longest
  gap in 0x351 around the crash is at most RestartSec + STALE-TIMEOUT (the
  longest a start waits for its batteries) + 1 s (one repeat) + SLACK;
- after the restart nothing reaches the inverter before every battery has
  reported to the new process, and the first frame set equals the last one
  before the crash (the batteries' values did not change): no partial,
  default or zero state in between.
"""

import argparse
import os
import re
import sys

LINE = re.compile(r"^\((\d+\.\d+)\)\s+(\S+)\s+([0-9A-Fa-f]+)#(\S*)$")
SET_IDS = (0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E)
# Seconds allowed on top of the bounds for systemd's own restart work and the
# software-emulated VM (measured there: about 2 s; see the MEASURE lines).
SLACK = 5.0


def frames(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                out.append((float(m.group(1)), m.group(2), int(m.group(3), 16), m.group(4).upper()))
    return out


def seconds(text):
    """A systemd time span as `systemctl show` prints it (5s, 100ms, 1min 30s)."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600}
    total = 0.0
    for n, u in re.findall(r"([\d.]+)\s*(us|ms|min|s|h)", text):
        total += float(n) * units[u]
    return total


def process_start(pid):
    """Realtime start of a process: /proc/PID/stat start time after boot + btime."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def frame_sets(inv):
    """Complete frame sets (0x359 .. 0x35E): dicts of ID -> data, with "t"
    (first frame) and "end" (last frame)."""
    out, cur = [], {}
    for t, _, cid, data in inv:
        if cid not in SET_IDS:
            continue
        if cid == 0x359:
            cur = {"t": t}
        if "t" in cur:
            cur[cid] = data
            if all(i in cur for i in SET_IDS):
                out.append(dict(cur, end=t))
                cur = {}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inverter", required=True)
    ap.add_argument("--batteries", required=True)
    ap.add_argument("--killed-at", type=float, required=True)
    ap.add_argument("--pid", type=int, help="the new main process (its start time is read)")
    ap.add_argument("--started-at", type=float, help="instead of --pid: its start, realtime")
    ap.add_argument("--restart-sec", required=True)
    ap.add_argument("--stale-timeout", type=float, required=True)
    a = ap.parse_args()
    inv, bat = frames(a.inverter), frames(a.batteries)
    start = a.started_at if a.started_at is not None else process_start(a.pid)
    print(f"MEASURE crash: killed at {a.killed_at:.3f}, new process started at {start:.3f} (realtime)")
    restart_sec = seconds(a.restart_sec)
    ok = True

    def check(cond, what):
        nonlocal ok
        ok &= bool(cond)
        print(f"CHECK {'ok' if cond else 'fail'}: {what}")

    t351 = [t for t, _, cid, _ in inv if cid == 0x351]
    before = [t for t in t351 if t < a.killed_at]
    # Frames still in the driver's queue may leave after the kill: the new
    # process's frames are those after its start.
    after = [t for t in t351 if t > start]
    if not before or not after:
        check(False, f"crash: 0x351 on the inverter bus before ({len(before)}) and after ({len(after)}) the restart")
        return 1
    ts = [t for t in t351 if t >= before[0]]
    gap = max(b - x for x, b in zip(ts, ts[1:]))
    first_out = after[0]
    startup = first_out - start
    delay = start - a.killed_at
    # Every battery bus (iface) has sent 0x351 to the new process before its first frame.
    bats = sorted({i for _, i, _, _ in bat})
    reported = {i: min((t for t, ii, cid, _ in bat if ii == i and cid == 0x351 and t >= start), default=None)
                for i in bats}
    # RestartSec, the longest a start may wait for its batteries (STALE-TIMEOUT),
    # one repeat (1 s), and SLACK for systemd's and the emulated VM's own delays.
    bound = restart_sec + a.stale_timeout + 1.0 + SLACK
    print(f"MEASURE crash: SIGKILL -> new process {delay:.2f}s (RestartSec {restart_sec:g}s), "
          f"new process -> first inverter frame (start-up) {startup:.2f}s, longest inverter gap "
          f"{gap:.2f}s (bound RestartSec + STALE-TIMEOUT + 1 s repeat + {SLACK:g}s slack = {bound:.1f}s)")
    print("MEASURE crash: batteries' first 0x351 after the new process started: "
          + ", ".join(f"{i} +{t - start:.2f}s" if t else f"{i} none" for i, t in reported.items()))
    check(delay >= restart_sec - 0.1, f"crash: systemd waited RestartSec ({delay:.2f}s >= {restart_sec:g}s)")
    check(startup <= a.stale_timeout + 1.0 + SLACK,
          f"crash: start-up {startup:.2f}s <= STALE-TIMEOUT + 1 s + {SLACK:g}s slack")
    check(gap <= bound, f"crash: longest inverter gap {gap:.2f}s <= {bound:.1f}s")
    check(bats and all(t is not None and t < first_out for t in reported.values()),
          f"crash: every battery bus ({', '.join(bats)}) reported before the first frame after the restart")
    sets = frame_sets(inv)
    old = next((x for x in reversed(sets) if x["end"] < a.killed_at), None)
    new = next((x for x in sets if x["t"] > start), None)
    same = old is not None and new is not None and all(old[i] == new[i] for i in SET_IDS)
    if old and new:
        diff = [f"0x{i:03X} {old[i]} -> {new[i]}" for i in SET_IDS if old[i] != new[i]]
        print(f"MEASURE crash: first frame set after the restart at +{new['t'] - start:.2f}s, "
              + ("identical to the last one before the crash" if not diff else "differs: " + "; ".join(diff)))
    check(same, "crash: the first frame set after the restart equals the last one before the crash")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
