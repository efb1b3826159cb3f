"""Output profiles on real vcan: one inverter per PROFILE, each read by this
file's own decoder (byte offsets from docs/profiles.md, not the gateway's
code): the frames present and their order, DLCs, values, names and SMA's
pacing."""

import struct
import time

import canio
import harness
import pylon
from harness import check, scenario, wait_for

PROFILES = ["pylon", "pylon-v2", "victron", "sma", "solark", "luxpower"]

PYLON_SET = [(0x359, 7), (0x351, 8), (0x355, 4), (0x356, 6), (0x35C, 2), (0x35E, 8), (0x373, 8)]
LAYOUT = {
    "pylon": PYLON_SET,
    "pylon-v2": PYLON_SET + [(0x35A, 8), (0x372, 8), (0x379, 2)],
    "victron": [(0x351, 8), (0x355, 6), (0x356, 6), (0x35A, 8), (0x35E, 8), (0x35F, 8),
                (0x372, 8), (0x373, 8), (0x378, 8), (0x379, 2)],
    "sma": [(0x351, 8), (0x355, 6), (0x356, 6), (0x35A, 8), (0x35E, 8), (0x35F, 8)],
    "solark": [(i, 8) for i, _ in PYLON_SET] + [(0x379, 8)],
    "luxpower": [(0x351, 8), (0x355, 8), (0x356, 8), (0x359, 8), (0x35C, 8), (0x35E, 8)],
}
NO_ALARMS = bytes.fromhex("AA828200AA828200")


def u16(d, i):
    return struct.unpack_from("<H", d, i)[0]


def s16(d, i):
    return struct.unpack_from("<h", d, i)[0]


def packs(req_a=0xC0):
    # Combined, by hand: CVL min(53.2, 54.0) = 53.2; CCL 100 + 150 = 250, DCL
    # 120 + 150 = 270, each inverter 0.5 of it: 125.0 / 135.0 A; SOC (80 x 100
    # + 50 x 200) / 300 = 60 %; V (52.00 x 100 + 52.66 x 200) / 300 = 52.44 V;
    # cells only from A. With A forbidding charge: CCL 0 A in every profile (a
    # forbidden direction is 0 A on the wire, spec 4).
    a = pylon.battery(cvl=53.2, ccl=100.0, dcl=120.0, soc=80, soh=95, v=52.00, t=25.0,
                      req=req_a, cells=(3288, 3313, 17, 25))
    b = pylon.battery(cvl=54.0, ccl=150.0, dcl=150.0, soc=50, soh=95, v=52.66, t=25.0)
    return a, b


def sets(frames):
    """Frame sets: one transmission goes out back to back (less than 50 ms
    between frames) and holds each ID once."""
    out = []
    for f in frames:
        if out and f.t - out[-1][-1].t < 0.05 and all(g.id != f.id for g in out[-1]):
            out[-1].append(f)
        else:
            out.append([f])
    return out


def by_id(frame_set):
    return {f.id: bytes(f.data) for f in frame_set}


def check_layout(name, frame_set):
    got = [(f.id, len(f.data)) for f in frame_set]
    check(got == LAYOUT[name], f"{name}: frames {[(hex(i), n) for i, n in got]}, "
                               f"expected {[(hex(i), n) for i, n in LAYOUT[name]]}")


def check_values(name, d, ccl_raw, blocking_charge):
    check((u16(d[0x351], 0), s16(d[0x351], 2), s16(d[0x351], 4)) ==
          (pylon_cvl(name, blocking_charge), ccl_raw, 1350), f"{name}: 0x351 {d[0x351].hex()}")
    cvl = u16(d[0x351], 0)
    if name in ("pylon", "pylon-v2", "solark"):
        check((u16(d[0x355], 0), u16(d[0x355], 2)) == (60, 95), f"{name}: 0x355 {d[0x355].hex()}")
        volts = 524 if name == "solark" else 5244
        check(u16(d[0x356], 0) == volts, f"{name}: 0x356 voltage {u16(d[0x356], 0)}, expected {volts}")
        check(d[0x35E].rstrip(b"\0") == b"PYLON", f"{name}: name {d[0x35E]!r}")
    if name in ("pylon-v2", "victron"):
        want = bytes([2, 0, blocking_charge, 0, 0, 0, 0, 0])
        check(d[0x372] == want, f"{name}: 0x372 {d[0x372].hex()}, expected {want.hex()}")
    if name in ("pylon-v2", "victron", "solark"):
        check(u16(d[0x379], 0) == 300, f"{name}: 0x379 {d[0x379].hex()}")
    if name in ("victron", "sma"):
        check(u16(d[0x355], 4) == 6000, f"{name}: hi-res SOC {u16(d[0x355], 4)}")
        check(d[0x35E].rstrip(b"\0") == b"BMS-GW", f"{name}: name {d[0x35E]!r}")
        marker = b"\xff\xff"
        want = (marker * 2 if name == "sma" else b"\0" * 4) + struct.pack("<H", 300) + \
            (marker if name == "sma" else b"\0\0")
        check(d[0x35F] == want, f"{name}: 0x35F {d[0x35F].hex()}, expected {want.hex()}")
    if name in ("pylon-v2", "victron", "sma"):
        check(d[0x35A] == NO_ALARMS, f"{name}: 0x35A {d[0x35A].hex()}")
    if name == "luxpower":
        check((u16(d[0x355], 4), u16(d[0x355], 6)) == (3313, 3288), f"lux 0x355 {d[0x355].hex()}")
        check((u16(d[0x356], 0), s16(d[0x356], 4), s16(d[0x356], 6)) == (5244, 250, 170),
              f"lux 0x356 {d[0x356].hex()}")
        check(u16(d[0x359], 5) == 300, f"lux 0x359 {d[0x359].hex()}")
    return cvl


def pylon_cvl(name, blocking_charge):
    # Victron: while charging is forbidden, CVL = bank voltage 52.44 rounded
    # down to 0.1 V = 52.4; everyone else keeps 53.2.
    return 524 if (name == "victron" and blocking_charge) else 532


@scenario("profiles", budget=120)
def profiles(ctx):
    """One inverter per PROFILE: frames, order, DLC, values, names, SMA pacing."""
    invs = [f"sprof{k}" for k in range(len(PROFILES))]
    ctx.vcan("spb1", "spb2", *invs)
    a, b = packs()
    bat_a = ctx.battery("spb1", a)
    ctx.battery("spb2", b)
    caps = {i: ctx.capture(i) for i in invs}
    inputs = [{"CAN-IF": "spb1", "CAPACITY-AH": 100}, {"CAN-IF": "spb2", "CAPACITY-AH": 200}]
    outputs = [{"CAN-IF": i, "I-SCALING": 0.5, "PROFILE": p} for i, p in zip(invs, PROFILES)]
    gw = ctx.gateway(harness.config(inputs, outputs))
    for blocking, ccl in ((0, 1250), (1, 0)):
        if blocking:
            bat_a.values = packs(req_a=0x40)[0]
        t0 = time.monotonic() + (3 if blocking else 0)
        check(wait_for(lambda: all(len(sets(caps[i].since(t0))) >= 4 for i in invs), 30),
              "not every inverter got 4 transmissions: " +
              ", ".join(f"{i}: {len(sets(caps[i].since(t0)))}" for i in invs))
        for iface, name in zip(invs, PROFILES):
            got = sets(caps[iface].since(t0))[-2]
            check_layout(name, got)
            cvl = check_values(name, by_id(got), ccl, blocking)
            ctx.log(f"{name}: {len(got)} frames, CVL {cvl / 10:.1f} V, CCL {ccl / 10:.1f} A")
    # SMA: no ID more often than every 200 ms (kernel receive timestamps).
    last, worst = {}, 9.0
    for f in caps[invs[PROFILES.index("sma")]].since(0):
        if f.id in last:
            worst = min(worst, f.t - last[f.id])
        last[f.id] = f.t
    ctx.log(f"sma: shortest gap between two frames of one ID {worst * 1000:.0f} ms")
    check(worst >= 0.195, f"sma: an ID repeated after {worst * 1000:.0f} ms (at least 200 ms)")
    check(gw.alive(), "the gateway exited")


@scenario("inverter_silent", budget=90)
def inverter_silent(ctx):
    """INVERTER-TIMEOUT on a push output: silent when the inverter stops, back when it talks."""
    ctx.vcan("sib1", "sii1")
    ctx.battery("sib1", packs()[0])
    cap = ctx.capture("sii1")
    inv = canio.Sender("sii1")
    inputs = [{"CAN-IF": "sib1", "CAPACITY-AH": 100}]
    outputs = [{"CAN-IF": "sii1", "INVERTER-TIMEOUT": 2.0}]
    gw = ctx.gateway(harness.config(inputs, outputs))
    mark = [0]  # log offset: only what was said after it counts

    def said(text):
        return text in gw.log_text()[mark[0]:]

    check(wait_for(lambda: len(cap.since(0)) > 0, 20), "no frames to the inverter")

    def talk(seconds, ext):
        """Sends 0x305 twice a second; returns when the last one went."""
        until = time.monotonic() + seconds
        while True:
            inv.send(0x305, bytes(8), ext=ext)
            last = time.monotonic()
            if last + 0.5 >= until:
                return last
            time.sleep(0.5)

    t0 = talk(3, ext=True)  # Schneider's 29-bit 0x305 counts too
    mark[0] = len(gw.log_text())
    check(wait_for(lambda: said("silent, no frame from the inverter"), 15),
          "the gateway never said the inverter went silent")
    ctx.log(f"silent reported {time.monotonic() - t0:.1f} s after the last 0x305 (timeout 2 s)")
    mark[0] = len(gw.log_text())
    talk(2, ext=False)
    check(wait_for(lambda: said("talking again"), 10), "the gateway never said the inverter is back")
    # Push mode never paused for any of it.
    gap = harness.max_gap(cap, t0, time.monotonic())
    ctx.log(f"longest gap between frame sets meanwhile {gap:.2f} s")
    check(gap < 2.0, f"{gap:.2f} s without 0x351 while watching the inverter")
    check(gw.alive(), "the gateway exited")
