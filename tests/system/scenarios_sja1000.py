"""Scenarios only the sja1000 tier can run: what a real CAN driver (sja1000 +
kvaser_pci on QEMU's emulated controllers) does that vcan does not: bit
rates, controller state, an interface that is present but down, and a
transmit queue of 10 frames.

The essential scenarios of scenarios.py run on this tier as well (NAME@sja1000).
Gateway side sNAME, peer side pNAME of each cable (canio.py).
"""

import re
import time

import canio
import harness
import pylon
from harness import check, scenario, wait_for
from scenarios import INV1, INV1_MODEL, INV2, INV2_MODEL, bat_a, bat_b, expect, gateway_alive
from scenarios import Mqtt, inputs_cfg

SJA = ("sja1000",)
# A full frame set toward an inverter with cell data (0x373), in order.
FULL_SET = pylon.FRAME_ORDER + [pylon.ID_373]


def details(name):
    """bit rate, sample point, state, restart-ms, qlen and berr counters of a
    controller, from `ip -details -statistics link show`."""
    text = canio.link_details(name)

    def grab(pattern, conv=str):
        m = re.search(pattern, text)
        return conv(m.group(1)) if m else None

    return dict(bitrate=grab(r"bitrate (\d+)", int), sample_point=grab(r"sample-point ([\d.]+)"),
                state=grab(r"can (?:<[^>]*> )?state (\S+)"), restart_ms=grab(r"restart-ms (\d+)", int),
                qlen=grab(r"qlen (\d+)", int), berr=grab(r"berr-counter (tx \d+ rx \d+)"),
                up=bool(re.search(r"<[^>]*\bUP\b[^>]*>", text)), text=text)


@scenario("smoke", budget=30, tiers=SJA)
def smoke_sja1000(ctx):
    """Emulated SJA1000: refused up without a bit rate; 500 kbit/s, ERROR-ACTIVE, one bus per cable."""
    # bat4's controllers are never configured by any other scenario.
    r = canio.sh("ip", "link", "set", "sbat4", "up", check=False)
    ctx.log(f"`ip link set sbat4 up` without a bit rate: exit {r.returncode}, {r.stderr.strip()!r}")
    check(r.returncode != 0, "an SJA1000 controller without a bit rate went up")
    ctx.vcan("sbat1", "sbat2")
    d = details("sbat1")
    ctx.log(f"sbat1: bitrate {d['bitrate']}, sample point {d['sample_point']}, state {d['state']}, "
            f"restart-ms {d['restart_ms']}, qlen {d['qlen']}, berr {d['berr']}")
    check(d["bitrate"] == 500000 and d["state"] == "ERROR-ACTIVE" and d["restart_ms"] == 100,
          f"sbat1 after set-up: {d['text']}")
    check(d["qlen"] == 10, f"the driver's default transmit queue is {d['qlen']}, expected 10")
    same, other = ctx.capture("sbat1", candump=True), ctx.capture("sbat2")
    # The other cable's reader must be listening, or "it saw nothing" below
    # could not fail: probe its own cable until it has seen a frame.
    check(harness.wait_listening("sbat2", (other,), 15), "pbat2 saw no probe frame from sbat2")

    def send_seen():
        # again until candump (slow to start in a busy VM) has seen one
        canio.sh("cansend", "sbat1", "351#1402C012C012C201")
        return wait_for(lambda: same.since(0), 0.5)

    got = wait_for(send_seen, 15, 0)
    check(got and (got[0].id, got[0].data) == (0x351, bytes.fromhex("1402C012C012C201")),
          f"pbat1 (same cable) saw {same.since(0)!r}")
    time.sleep(0.5)
    check(not harness.after_probes(other), f"pbat2 (another cable) saw {other.since(0)!r}")
    ctx.log("sbat1 -> pbat1 delivered, nothing on the other cable")


@scenario("iface_down", budget=90, tiers=SJA)
def iface_down(ctx):
    """An input present but never brought up: logged with the interface and the networkd hint,
    the rest served; up later: used without a restart."""
    ctx.vcan("sbat1", "sinv1")
    before = details("sbat4")
    ctx.log(f"sbat4 before: up {before['up']}, bitrate {before['bitrate']}")
    check(not before["up"], f"sbat4 is up before the scenario: {before['text']}")
    if before["bitrate"] is not None:
        ctx.note("sbat4 had a bit rate from an earlier try; it is down, which is what is judged")
    canio.sja_up("pbat4")  # the battery's side of the cable is fine
    a = ctx.battery("sbat1", bat_a())
    d = ctx.battery("sbat4", bat_b())
    cap = ctx.capture("sinv1")
    caps = {"sbat1": 100, "sbat4": 200}
    ins = [{"CAN-IF": i, "CAPACITY-AH": c} for i, c in caps.items()]
    try:
        gw = ctx.gateway(harness.config(ins, [INV1], {"STALE-TIMEOUT": 2.0}))
        t0 = time.monotonic()

        def model(bats, state="ok"):
            comb = pylon.combine([(b, caps[i]) for b, i in bats])
            view = pylon.inverter_view(comb, INV1_MODEL)
            return pylon.expected_fields(pylon.degraded(view) if state == "degraded" else view)

        harness.wait_state(cap, model([(a.values, "sbat1")], "degraded"), 20,
                           "degraded state of battery 1 while sbat4 is down")
        line = wait_for(lambda: next((ln for ln in gw.log_text().splitlines()
                                      if "sbat4" in ln and "down" in ln), None), 10)
        ctx.log(f"gateway log: {line}")
        check(line and "bit rate" in line and "networkd" in line and "80-can.network" in line,
              f"no clear report of sbat4 being down (interface, down, networkd hint): {line!r}")
        # networkd would do this at boot or on hot-plug; the gateway keeps its socket.
        t_up = time.monotonic()
        canio.sja_up("sbat4")
        harness.wait_state(cap, model([(a.values, "sbat1"), (d.values, "sbat4")]), 20,
                           "ok state once sbat4 is up")
        ctx.log(f"sbat4 up: ok state after {time.monotonic() - t_up:.1f}s, "
                f"{t_up - t0:.1f}s after the gateway started; same process, no restart")
        gateway_alive(gw)
    finally:
        canio.sja_down("pbat4", "sbat4")


def set_problems(frames):
    """Frame sets (from 0x359 on) that are not the full set in order: (number
    of sets, the incomplete ones as ID lists)."""
    sets = [[f.id for f in b] for b in harness.bursts([f for f in frames if f.id in FULL_SET])]
    if sets and sets[0][0] != 0x359:
        sets.pop(0)  # began before the window
    return len(sets), [s for s in sets if s != FULL_SET]


@scenario("txqueue_10", budget=150, tiers=SJA)
def txqueue_10(ctx):
    """Transmit queue 10 (the driver's default): sync answers, own 0x305 and POLL frames collide;
    every frame set is whole, or its missing frames are counted (ENOBUFS) or lost on the bus."""
    ctx.vcan("sbat1", "sbat2", "sinv1", "sinv2")
    for n in ("sinv1", "sinv2", "sbat1"):
        q = details(n)["qlen"]
        check(q == 10, f"{n}: txqueuelen {q}, expected the driver's default 10")
    a = ctx.battery("sbat1", bat_a())
    b = ctx.battery("sbat2", bat_b())
    caps = {j: ctx.capture(j) for j in ("sinv1", "sinv2")}
    port, base = 18831, "systest"
    m = Mqtt(ctx, port)
    ins = inputs_cfg("sbat1", "sbat2")
    for i in ins:
        i["POLL-INTERVAL"] = 0.5
    outs = [dict(INV1, **{"SEND-SYNC-ACTIVATED": True, "SYNC-INTERVAL": 1.0}),
            dict(INV2, **{"SEND-SYNC-ACTIVATED": True, "SYNC-INTERVAL": 1.0})]
    mcfg = {"ACTIVATED": True, "BROKER": "127.0.0.1", "PORT": port, "INTERVAL": 1.0,
            "BASE-TOPIC": base, "HA-DISCOVERY": False}
    gw = ctx.gateway(harness.config(ins, outs, mqtt=mcfg))
    both = [(a.values, "sbat1"), (b.values, "sbat2")]
    want = {"sinv1": expect(both, INV1_MODEL), "sinv2": expect(both, INV2_MODEL)}
    inverters = {j: canio.Sender(ctx.peer(j)) for j in caps}
    for j in caps:
        t0 = time.monotonic()
        ok = wait_for(lambda j=j, t0=t0: inverters[j].send(0x305, bytes(8)) and
                      harness.latest_burst_ok(caps[j], want[j], t0), 25, 0.5)
        check(ok, f"{j}: no answer to 0x305 with the combined state within 25 s")

    def send_errors(t_from):
        out = {}
        for n in (1, 2):
            st = m.wait_json(t_from, f"{base}/inverter/{n}/state", lambda js: "send_errors" in js, 10)
            check(st is not None, f"no {base}/inverter/{n}/state with send_errors")
            out[f"sinv{n}"] = st["send_errors"]
        return out

    err0 = send_errors(time.monotonic())
    st0 = {j: (canio.link_stats(j), canio.link_stats(ctx.peer(j))) for j in caps}
    # Each inverter asks three times back to back, ten times a second, for
    # 10 s: up to 21 frames answered at once into a queue of 10, next to
    # the gateway's own 0x305 and its polls of both batteries.
    t0 = time.monotonic()
    asked = 0
    while time.monotonic() - t0 < 10:
        for _ in range(3):
            for s in inverters.values():
                asked += s.send(0x305, bytes(8))
        time.sleep(0.1)
    time.sleep(2.5)
    t1 = time.monotonic()
    err1 = send_errors(t1 - 0.5)
    short = unsent_all = lost_all = 0
    for j, cap in caps.items():
        frames = cap.since(t0, t1)
        n, bad = set_problems(frames)
        missing = sum(len(FULL_SET) - len(x) for x in bad)
        (g0, p0), (g1, p1) = st0[j], (canio.link_stats(j), canio.link_stats(ctx.peer(j)))
        sent = g1["tx_packets"] - g0["tx_packets"]
        got = p1["rx_packets"] - p0["rx_packets"]
        over = p1["rx_over_errors"] - p0["rx_over_errors"]
        unsent = err1[j] - err0[j]
        ctx.log(f"{j}: {n} frame sets for {asked // 2} requests in {t1 - t0:.1f}s, {len(bad)} "
                f"incomplete ({missing} frames missing"
                + (f", e.g. {[hex(i) for i in bad[0]]}" if bad else "") + "); "
                f"gateway: {unsent} frames not sent after the ENOBUFS retries (send_errors); "
                f"driver: {sent} frames sent, peer received {got}, RX overruns {over}")
        mism = harness.mismatches(frames, want[j], {k for k in want[j] if k[0] != pylon.ID_373})
        check(not mism, f"{j}: wrong values under load: {mism[:3]}")
        check(n >= 20, f"{j}: only {n} frame sets answered {asked // 2} requests")
        # Every frame missing from a set is accounted for: refused by the full
        # queue and counted by the gateway, or sent but lost on the way in.
        check(missing <= unsent + max(0, sent - got),
              f"{j}: {missing} frames missing from frame sets, but only {unsent} counted as not "
              f"sent and {max(0, sent - got)} lost on the bus")
        short += len(bad)
        unsent_all += unsent
        lost_all += max(0, sent - got)
    if short:
        ctx.note(f"{short} frame sets arrived incomplete with txqueuelen 10: the gateway left "
                 f"{unsent_all} frames unsent after its ENOBUFS retries (a set is cut short "
                 f"only then), the receiving emulated controllers lost {lost_all} (RX overruns)")
    gateway_alive(gw)

