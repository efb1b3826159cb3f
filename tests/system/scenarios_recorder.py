"""System scenario of the flight recorder on real vcan (docs/recorder.md):
SIGUSR1 to the daemon writes a candump -l file holding the frames the
batteries sent and the inverter received in the window; can-utils
`canplayer` plays it back onto vcan and `candump` sees the same frames; the
daemon's own recording replayed with `bms-gateway replay` gives the frames
the daemon actually sent (same values, same order, times within the push
timing); `bms-gateway record` asks for one through the status server; and
entering the safe state writes one.
"""

import glob
import os
import signal
import subprocess
import time

import canio
import harness
import pylon
from harness import check, scenario

SECONDS = 6
PORT = 18471
IFACES = ["rbat1", "rbat2", "rinv1"]


def read_log(path):
    """[(ts, iface, id, ext, data)] of a candump -l file, in file order."""
    out = []
    with open(path) as f:
        for line in f:
            ts, iface, frame = line.split()
            ident, _, payload = frame.partition("#")
            out.append((float(ts.strip("()")), iface, int(ident, 16), len(ident) == 8,
                        bytes.fromhex(payload)))
    return out


def frames_on(log, iface):
    return [(i, d) for _, n, i, _, d in log if n == iface]


def contains_run(whole, part):
    n = len(part)
    return any(whole[k:k + n] == part for k in range(len(whole) - n + 1))


def transmissions(lines):
    """[(t, frames)]: a transmission carries each ID once, so an ID seen again
    starts the next one; t is its first frame's time."""
    out = []
    for t, frame in lines:
        if not out or frame[0] in {i for i, _ in out[-1][1]}:
            out.append((t, []))
        out[-1][1].append(frame)
    return [(t, tuple(fs)) for t, fs in out]


def changes(sets):
    """The distinct frame sets in order, each with the time it first appeared."""
    out = []
    for t, fs in sets:
        if not out or out[-1][1] != fs:
            out.append((t, fs))
    return out


def wait_file(directory, suffix, timeout):
    return harness.wait_for(lambda: sorted(glob.glob(os.path.join(directory, f"*-{suffix}.log"))),
                            timeout)


@scenario("recorder", budget=150)
def recorder(ctx):
    """SIGUSR1, `record` and the safe state write recordings that canplayer and replay play back."""
    ctx.vcan(*IFACES, "rpbat1", "rpbat2", "rpinv1")
    values_a = pylon.battery(soc=70, ccl=80.0, name="RECA")
    values_b = pylon.battery(soc=50, ccl=60.0, v=52.4, name="RECB")
    a = ctx.battery("rbat1", values_a)
    b = ctx.battery("rbat2", values_b)
    cap = ctx.capture("rinv1")
    state = os.path.join(harness.TMP, "recorder-state")
    subprocess.run(["rm", "-rf", state], check=True)
    cfg = harness.config([{"CAN-IF": "rbat1", "CAPACITY-AH": 100.0},
                          {"CAN-IF": "rbat2", "CAPACITY-AH": 100.0}],
                         [{"CAN-IF": "rinv1"}], {"STALE-TIMEOUT": 3.0})
    cfg = cfg.replace("GATEWAY-ACTIVATED = true\n",
                      f"GATEWAY-ACTIVATED = true\nSTATE-DIR = {harness.toml_value(state)}\n", 1)
    cfg += f"[http]\nLISTEN = \"127.0.0.1:{PORT}\"\n[recorder]\nSECONDS = {SECONDS}\nKEEP = 3\n"
    gw = ctx.gateway(cfg)
    recordings = os.path.join(state, "recordings")
    # Run past the window, then change a battery's values 2.5 s before the
    # dump (3.5 s into its window), so that order matters.
    check(harness.wait_for(lambda: len(cap.since(0)) > 20, 20), "the gateway sends nothing to rinv1")
    time.sleep(SECONDS)
    a.values = dict(values_a, soc=72, ccl=40.0)
    time.sleep(2.5)

    t0 = time.time()
    gw.proc.send_signal(signal.SIGUSR1)
    files = wait_file(recordings, "signal", 10)
    check(files, f"no *-signal.log in {recordings} after SIGUSR1: {gw.log_text()[-500:]}")
    log = read_log(files[0])
    ctx.log(f"SIGUSR1: {os.path.basename(files[0])}, {len(log)} frames")
    stamps = [e[0] for e in log]
    check(stamps == sorted(stamps), "the recording is not in time order")
    check(min(stamps) >= t0 - SECONDS - 0.5 and max(stamps) <= time.time(),
          f"frames outside the {SECONDS} s window: {min(stamps) - t0:.2f}..{max(stamps) - t0:.2f} s")
    # The batteries' frames are what the battery players sent.
    for iface, sets in (("rbat1", [values_a, a.values]), ("rbat2", [values_b])):
        sent = {f for v in sets for f in pylon.encode_battery(v)}
        seen = frames_on(log, iface)
        check(len(seen) >= 4 * 6, f"{iface}: {len(seen)} frames in {SECONDS} s")
        check(set(seen) <= sent, f"{iface}: frames no battery sent: {set(seen) - sent}")
    check(set(pylon.encode_battery(a.values)) <= set(frames_on(log, "rbat1")),
          "rbat1: the changed values are not in the recording")
    # The inverter's frames are exactly a run of what its bus carried.
    on_bus = [(f.id, f.data) for f in cap.since(0)]
    recorded = frames_on(log, "rinv1")
    check(len(recorded) >= 6 * (SECONDS - 1), f"rinv1: {len(recorded)} frames recorded")
    check(contains_run(on_bus, recorded), "rinv1: the recorded frames are not what the bus carried")

    # canplayer plays the recording onto other vcan interfaces; candump sees it all.
    dumps = {n: ctx.capture(f"rp{n[1:]}", candump=True) for n in IFACES}
    # candump is listening once it shows a probe frame (a busy VM starts it late).
    for n in IFACES:
        probe = canio.Sender(f"rp{n[1:]}")
        ready = harness.wait_for(lambda: probe.send(0x7FF, b"") and dumps[n].since(0), 10, 0.2)
        probe.close()
        check(ready, f"candump on rp{n[1:]} never showed a probe frame")
    t_play = time.monotonic()
    assign = [f"rp{n[1:]}={n}" for n in IFACES]
    p = subprocess.run(["canplayer", "-I", files[0], "-t", *assign], capture_output=True, text=True,
                       timeout=60)
    check(p.returncode == 0, f"canplayer failed ({p.returncode}): {p.stderr}")
    for n in IFACES:
        want = frames_on(log, n)
        def played(n=n):
            return [(f.id, f.data) for f in dumps[n].since(t_play) if f.id != 0x7FF]
        got = harness.wait_for(lambda: len(played()) >= len(want) and played(), 10)
        check(got == want, f"candump on rp{n[1:]}: {len(got or [])} frames, {len(want)} played")
    ctx.log(f"canplayer -t: {len(log)} frames played, candump saw them all in order")

    # replay of the daemon's recording gives what the daemon sent.
    r = subprocess.run([harness.BINARY, "-c", gw.cfg, "replay", files[0]], capture_output=True,
                       text=True, timeout=60)
    check(r.returncode == 0, f"replay exited {r.returncode}: {r.stderr[-500:]}")
    replayed = []
    for line in r.stdout.splitlines():
        ts, iface, frame = line.split()
        ident, _, payload = frame.partition("#")
        replayed.append((float(ts.strip("()")), (int(ident, 16), bytes.fromhex(payload))))
    # Replay starts cold at the window's first frame: skip its start-up.
    warm = log[0][0] + 3.0
    mine = changes([s for s in transmissions(replayed) if s[0] >= warm])
    sent = [(t, f) for t, n, i, _, d in log if n == "rinv1" for f in [(i, d)]]
    theirs = changes([s for s in transmissions(sent) if s[0] >= warm - 1.0])
    # The daemon's set current at `warm` may have begun a little before it.
    check(len(mine) >= 2 and [fs for _, fs in mine] == [fs for _, fs in theirs][-len(mine):],
          f"replay's frame sets {[(round(t - warm, 2), len(f)) for t, f in mine]} are not the "
          f"daemon's {[(round(t - warm, 2), len(f)) for t, f in theirs]}")
    lag = [abs(tm - tt) for (tm, _), (tt, _) in zip(mine[1:], theirs[-len(mine) + 1:])]
    ctx.log(f"replay: {len(replayed)} frames; {len(mine)} distinct frame sets as the daemon's; "
            f"change times differ by {', '.join(f'{x * 1000:.0f} ms' for x in lag)}")
    check(all(x <= 1.0 for x in lag), f"replay's change times differ by {lag} s (push timing: 1 s)")

    # bms-gateway record asks the running gateway through its status server.
    rec = subprocess.run([harness.BINARY, "-c", gw.cfg, "record"], capture_output=True, text=True,
                         timeout=30)
    check(rec.returncode == 0, f"record exited {rec.returncode}: {rec.stderr}")
    path = rec.stdout.split()[0]
    check(path.startswith(recordings) and path.endswith("-request.log") and os.path.exists(path),
          f"record printed {rec.stdout!r}")
    ctx.log(f"record: {rec.stdout.strip()}")

    # Both batteries fall silent: degraded, then safe, each a recording.
    a.paused = b.paused = True
    files = wait_file(recordings, "safe", 20)
    check(files, f"no *-safe.log after both batteries went silent: {os.listdir(recordings)}")
    log = read_log(files[0])
    check(frames_on(log, "rbat1") and frames_on(log, "rbat2"), "the safe recording has no battery frames")
    recorded = frames_on(log, "rinv1")
    on_bus = [(f.id, f.data) for f in cap.since(0)]
    check(recorded and contains_run(on_bus, recorded), "safe: the rinv1 frames are not what the bus carried")
    kept = sorted(os.listdir(recordings))
    ctx.log(f"safe: {os.path.basename(files[0])}, {len(log)} frames; kept {kept}")
    # signal, request, (degraded), safe: KEEP = 3 leaves the newest three.
    check(len(kept) == 3 and kept[-1] == os.path.basename(files[-1]), f"KEEP = 3: {kept}")
