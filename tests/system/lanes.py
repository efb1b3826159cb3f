"""Parallel lanes of the system tests (driver.py --lanes N).

Most scenarios wait (stale timeouts, frame periods, a gateway starting):
run one after another they leave the VM's CPUs idle most of the time. So the
driver runs them in lanes, each a driver process of its own that runs its
share in order:

- a vcan lane has its own network namespace (its own vcan interfaces and
  loopback: interface names and Mosquitto's port never collide), its own
  mount of sysfs (so /sys/class/net shows that namespace's interfaces) and
  its own scratch directory;
- the sja1000 tier needs the emulated controllers of the root namespace: it
  is one lane there, in its usual order;
- the scenarios marked `last` (the floods, which load the whole VM) run after
  every lane has finished, alone, one tier after the other, so that no other
  scenario's timing is judged beside a flood.

The vcan scenarios are dealt to the lanes longest first (by EXPECTED_S, their
times measured in a lane run), each to the lane that would end earliest, so
that the lanes end together. Each lane's lines are printed as they come,
prefixed with its name; its results go to its own directory, and the driver
merges them into the usual results.txt and summary.txt.
"""

import ctypes
import os
import subprocess
import sys
import threading
import time
import traceback

# Seconds a scenario took in a lane run (2026-12-04, four lanes, host load
# average about 7 on 2 cores). Unknown names count DEFAULT_S; a wrong figure
# only makes the lanes end less evenly.
EXPECTED_S = {
    "smoke_vcan": 6, "push_3x2": 24, "push_min_delay": 13, "sync_mode": 27,
    "startup_wait": 17, "enable_flags": 30, "degraded_recover": 30, "safe_state": 25,
    "iface_faults": 49, "malformed": 36, "mqtt": 66, "signals": 26, "reload": 58,
    "run_vcan": 23, "bank_share": 40, "bank_sum": 13, "cascade": 43, "profiles": 31,
    "inverter_silent": 14, "recorder": 45, "scan_classifies": 29,
    # Measured alone (SYSTEM_TEST_LANES=1), 2026-12-05.
    "mixed_rs485": 17,
}
DEFAULT_S = 20

# unshare(2) flags: a mount namespace of its own (for its own sysfs) and a
# network namespace of its own.
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000

_print_lock = threading.Lock()


def deal(scenarios, n_lanes):
    """Split `scenarios` into at most n_lanes lists, longest first onto the
    lane that ends earliest. Order within a lane: as given."""
    loads = [0.0] * n_lanes
    shares = [[] for _ in range(n_lanes)]
    for sc in sorted(scenarios, key=lambda s: -EXPECTED_S.get(s.name, DEFAULT_S)):
        k = loads.index(min(loads))
        shares[k].append(sc)
        loads[k] += EXPECTED_S.get(sc.name, DEFAULT_S)
    order = {sc.name: i for i, sc in enumerate(scenarios)}
    return [sorted(s, key=lambda sc: order[sc.name]) for s in shares if s]


def own_namespaces():
    """Move this (single-threaded, just forked) process into a network and a
    mount namespace of its own: loopback up, sysfs showing its interfaces."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    for cmd in (["mount", "--make-rprivate", "/"], ["mount", "-t", "sysfs", "sysfs", "/sys"],
                ["ip", "link", "set", "lo", "up"]):
        subprocess.run(cmd, check=True)


class Lane:
    """One lane: a forked driver process running `scenarios` in order through
    run_lane(name, results_dir, scenarios) (a fork, not a new interpreter:
    starting Python and importing the scenarios costs the emulated VM about
    20 s). Its output comes back through a pipe; relay() prints it."""

    def __init__(self, name, scenarios, args, netns, run_lane):
        self.name, self.scenarios, self.netns = name, scenarios, netns
        self.results = os.path.join(args.results, f"lane-{name}")
        self.t0 = time.monotonic()
        self.t1 = None
        sys.stdout.flush()
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            rc = 1
            try:
                os.close(r)
                os.dup2(w, 1)
                os.dup2(w, 2)
                os.close(w)
                if netns:
                    own_namespaces()
                run_lane(name, self.results, scenarios)
                rc = 0
            except BaseException:  # noqa: BLE001 - reported, and the child must end here
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        os.close(w)
        self.out = os.fdopen(r, errors="replace")
        self.reader = None

    def relay(self):
        """Print the lane's lines as they come, in a thread; notes its end."""
        def copy():
            for line in self.out:
                with _print_lock:
                    print(f"[{self.name}] {line}", end="", flush=True)
            self.t1 = time.monotonic()
        self.reader = threading.Thread(target=copy, daemon=True, name=f"lane-{self.name}")
        self.reader.start()
        return self

    def wait(self):
        _, status = os.waitpid(self.pid, 0)
        self.reader.join()
        self.out.close()
        return os.waitstatus_to_exitcode(status)

    def outcome(self, rc):
        """(passed, failed, result lines) of this lane."""
        try:
            with open(os.path.join(self.results, "summary.txt")) as f:
                passed, failed = map(int, f.read().split())
        except (OSError, ValueError):
            passed, failed = 0, 1
        try:
            with open(os.path.join(self.results, "results.txt")) as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        head = (f"--- lane {self.name} ({'own network namespace' if self.netns else 'root namespace'}):"
                f" {len(self.scenarios)} scenarios in {self.t1 - self.t0:.1f}s")
        if rc != 0 or not os.path.exists(os.path.join(self.results, "summary.txt")):
            lines.append(f"FAIL  lane {self.name} ended with exit status {rc} before its summary")
            failed = max(failed, 1)
        return passed, failed, [head, *lines]


def run(args, selected, run_lane):
    """Run `selected` in lanes (each through run_lane, see Lane); write the
    merged results.txt and summary.txt."""
    t_all = time.monotonic()
    at_end = [sc for sc in selected if sc.last]
    vcan = [sc for sc in selected if not sc.last and sc.tier == "vcan"]
    others = {}
    for sc in selected:
        if not sc.last and sc.tier != "vcan":
            others.setdefault(sc.tier, []).append(sc)
    n_vcan = max(1, args.lanes - len(others))
    plan = [(f"vcan{k + 1}", share, True) for k, share in enumerate(deal(vcan, n_vcan))]
    plan += [(tier, scs, False) for tier, scs in others.items()]
    print(f"lanes: {', '.join(f'{n} ({len(s)})' for n, s, _ in plan)}; "
          f"then alone: {', '.join(sc.name for sc in at_end) or 'none'}", flush=True)
    # Every lane is forked before any relay thread starts: a fork copies no
    # other thread, and must find no lock held by one.
    running = [Lane(name, scs, args, netns, run_lane) for name, scs, netns in plan]
    for lane in running:
        lane.relay()
    done = [(lane, lane.wait()) for lane in running]
    # The floods, each tier alone (the sja1000 one in the root namespace).
    for tier in dict.fromkeys(sc.tier for sc in at_end):
        scs = [sc for sc in at_end if sc.tier == tier]
        lane = Lane(f"last-{tier}", scs, args, tier == "vcan", run_lane)
        done.append((lane, lane.relay().wait()))
    passed = failed = 0
    lines = []
    for lane, rc in done:
        p, f, ls = lane.outcome(rc)
        passed, failed = passed + p, failed + f
        lines.extend(ls)
    lines.append(f"total scenario time {time.monotonic() - t_all:.1f}s in {len(plan)} lanes "
                 "and the floods alone")
    with open(os.path.join(args.results, "results.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.results, "summary.txt"), "w") as f:
        f.write(f"{passed} {failed}\n")
    print(f"{passed} passed, {failed} failed", flush=True)
