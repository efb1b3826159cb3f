"""Scenario driver of the bms-gateway system tests; runs inside the test VM.

Started by vm-init.sh (see run.sh) in a chroot of the host's root, with the
CAN modules loaded. Scenarios run on two tiers: vcan, and emulated SJA1000
controllers (NAME@sja1000; canio.TRANSPORT says which). Each scenario sets up
its own interfaces, peers
(Python AF_CAN battery players, can-utils, Mosquitto) and a gateway with its
own config, checks the inverter buses against values computed here from the
documented rules, and tears everything down. Prints each scenario's result and time, and
writes results.txt and summary.txt ("passed failed") to the results export.
With --lanes N (test mode) the scenarios run in N parallel lanes, see lanes.py.

Usage: driver.py --repo DIR --results DIR [--mode test|bench] [--lanes N] [SCENARIO...]
"""

import argparse
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import canio  # noqa: E402
import harness  # noqa: E402
import lanes  # noqa: E402
import scenarios  # noqa: E402  (importing registers the scenarios)
import scenarios_cascade  # noqa: E402,F401
import scenarios_policy  # noqa: E402,F401
import scenarios_sja1000  # noqa: E402,F401

REGISTERED_BY = (scenarios.__name__, scenarios_cascade.__name__, scenarios_policy.__name__,
                 scenarios_sja1000.__name__)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--mode", default="test")
    ap.add_argument("--lanes", type=int, default=1,
                    help="parallel lanes for the vcan tier (lanes.py); 1: all in order")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()

    selected = [s for s in harness.SCENARIOS
                if (not args.names or s.name in args.names) and s.mode == args.mode]
    # Every vcan scenario first, then each other tier's (one set-up each).
    selected.sort(key=lambda s: (harness.TIERS.index(s.tier), s.last))
    unknown = set(args.names) - {s.name for s in harness.SCENARIOS}
    if args.lanes > 1 and args.mode == "test" and not unknown:
        def run_lane(name, results, scenarios):
            harness.setup(args.repo, args.mode, os.path.join(harness.TMP, name))
            run_in_order(results, scenarios, set())
        lanes.run(args, selected, run_lane)
        return
    harness.setup(args.repo, args.mode)
    run_in_order(args.results, selected, unknown)


def run_in_order(results, selected, unknown):
    """Run `selected` one after another in this process (a lane, or the
    whole run when it has one lane); their results go to the directory
    `results`."""
    os.makedirs(results, exist_ok=True)
    results_path = os.path.join(results, "results.txt")
    summary_path = os.path.join(results, "summary.txt")
    passed = failed = 0
    lines = []

    def record(line):
        print(line, flush=True)
        lines.append(line)
        with open(results_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    for name in sorted(unknown):
        failed += 1
        record(f"FAIL  {name:<24} 0.0s  unknown scenario")
    if not selected and not unknown:
        failed += 1
        record("FAIL  (none)                   0.0s  no scenario selected")

    t_all = time.monotonic()
    tier = "vcan"
    for sc in selected:
        if sc.tier != tier:
            tier = sc.tier
            record(f"--- tier {tier} after {time.monotonic() - t_all:.1f}s")
            if tier == "sja1000":
                # Named after the vcan tier: that one uses the same names.
                names = canio.sja_name_controllers(canio.CABLES)
                print(f"sja1000 tier: controllers {' '.join(names)}", flush=True)
        print(f"--- {sc.name}: {sc.doc}", flush=True)
        t0 = time.monotonic()
        ctx, err = run_one(sc)
        stall = harness.STALLS.worst(t0)
        retried = ""
        if err is not None and stall > 1.0:
            # The VM (or a battery player in it) stood still: timing checks
            # were inconclusive.
            print(f"--- {sc.name}: failed after a {stall:.1f}s stall of the VM or a battery "
                  f"player ({first_line(err)}); running it again", flush=True)
            retried = (f"first try failed after a {stall:.1f}s stall of the VM or a battery "
                       f"player: {first_line(err)}")
            ctx, err = run_one(sc)
        dt = time.monotonic() - t0
        if err is None:
            passed += 1
            record(f"PASS  {sc.name:<24} {dt:6.1f}s")
        else:
            failed += 1
            msg = str(err).strip() or type(err).__name__
            record(f"FAIL  {sc.name:<24} {dt:6.1f}s  {msg.splitlines()[0]}")
            for extra in msg.splitlines()[1:40]:
                record(f"        {extra}")
            for extra in ctx.gateway_log_tails():
                record(f"        | {extra}")
            stall = harness.STALLS.worst(t0)
            if stall > 1.0:
                record(f"        (the VM stalled for up to {stall:.1f}s during this scenario)")
        if retried:
            ctx.notes.insert(0, retried)
        elif err is None and harness.STALLS.worst(t0) > 1.0:
            ctx.notes.insert(0, f"the VM stalled for up to {harness.STALLS.worst(t0):.1f}s")
        for note in ctx.notes:
            record(f"      note: {note}")
    total = time.monotonic() - t_all
    if tier == "sja1000":
        # What the kernel said about the emulated controllers (IRQs, overruns).
        r = canio.sh("dmesg", check=False)
        notes = [ln for ln in r.stdout.splitlines()
                 if any(k in ln.lower() for k in ("irq", "nobody", "disabl", "overrun", "error",
                                                   "timeout", "sja1000"))]
        print("kernel messages of the sja1000 tier (last 15):\n  " + "\n  ".join(notes[-15:]),
              flush=True)
    record(f"total scenario time {total:.1f}s")
    with open(summary_path, "w") as f:
        f.write(f"{passed} {failed}\n")
    print(f"{passed} passed, {failed} failed", flush=True)


def first_line(err):
    return (str(err).strip() or type(err).__name__).splitlines()[0][:200]


def run_one(sc):
    """Run one scenario with its budget; always clean up. Returns (ctx, error)."""
    ctx = harness.Ctx(sc.name)
    err = None
    canio.TRANSPORT = sc.tier

    def on_alarm(signum, frame):
        raise harness.ScenarioTimeout(f"scenario exceeded its {sc.budget}s budget")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(sc.budget)
    try:
        sc.fn(ctx)
    except Exception as e:  # noqa: BLE001 - every failure is reported
        err = e
        if not isinstance(e, (AssertionError, harness.ScenarioTimeout)):
            traceback.print_exc()
    finally:
        signal.alarm(0)
        try:
            ctx.cleanup()
        except Exception as e:  # noqa: BLE001
            err = err or e
    if ctx.soft_errors:  # checks that let the scenario go on
        err = harness.Failure("\n".join(([str(err)] if err else []) + ctx.soft_errors))
    return ctx, err


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - the VM must still power off
        traceback.print_exc()
        sys.exit(1)
