"""Bank policy (spec 15, docs/combining.md "Bank policy") on real SocketCAN.

- policy_forbid_stop / policy_forbid_continue: two equal packs (100 A each)
  share a charge; one forbids charging and stops taking current. "stop" sends
  0 A and a clear charge enable bit, "continue" the other pack's own 100 A,
  in every frame set made from the round that carried the forbid (told by
  the SOC it shows, see SOC_AFTER), and never the 200 A of both.
- policy_derating: a cell temperature (0x373) ramps down and back up; the
  charge limit follows the curve, value by value.
- policy_charge_stop: the SOC rises to the stop SOC, falls inside the
  hysteresis (still 0 A) and below the resume SOC (charging again).

Expected values are worked out by hand from the spec and written as
literals; the limits are read from the frames the inverter bus carries.
"""

import time

import harness
import pylon
from harness import check, scenario, wait_for
from scenarios import ccl_values, gateway_alive, wait_ccl

PACKS = ("sbat1", "sbat2")
INVERTER = [{"CAN-IF": "sinv1", "I-LIM-CHARGE": 1000.0, "I-LIM-DISCHARGE": 1000.0}]
CHARGE_AND_DISCHARGE = pylon.CHARGE_ENABLE | pylon.DISCHARGE_ENABLE


def pack(i, req=CHARGE_AND_DISCHARGE, **kw):
    """A pack allowing 100 A each way, carrying i A (+ = charging)."""
    return pylon.battery(ccl=100.0, dcl=100.0, i=i, req=req, **kw)


def start(ctx, packs, battery):
    """The gateway on `packs` (100 Ah each) and one inverter, share mode."""
    ctx.vcan(*packs, "sinv1")
    bats = [ctx.battery(p, pack(0.5)) for p in packs]
    cap = ctx.capture("sinv1")
    inputs = [{"CAN-IF": p, "CAPACITY-AH": 100} for p in packs]
    settings = {"LIMIT-MODE": "share", "STALE-TIMEOUT": 3.0}
    settings.update(battery)
    gw = ctx.gateway(harness.config(inputs, INVERTER, settings))
    return bats, cap, gw


def first_burst_end_after(bat, t):
    """When `bat` finished its first burst that started after t (that burst
    carries the values set at t)."""
    def done():
        return any(s > t for s in bat.burst_starts) and len(bat.burst_ends) >= len(bat.burst_starts)

    check(wait_for(done, 5, 0.05), f"{bat.iface}: no burst after the change")
    n = next(k for k, s in enumerate(bat.burst_starts) if s > t)
    return bat.burst_ends[n]


def frame_sets(cap, t0):
    """(time, charge limit A, SOC %, charge enable) of every frame set an
    inverter bus carried since t0 (pylon order: 0x359, 0x351, 0x355, 0x356,
    0x35C, 0x35E; a set's fields come from one combined state)."""
    sets, cur = [], None
    for f in cap.since(t0):
        if f.ext or f.rtr:
            continue
        if f.id == 0x351 and len(f.data) >= 8:
            if cur is not None:
                sets.append(cur)
            cur = {"t": f.t, "ccl": pylon.decode(f.id, f.data)["i_lim_charge"]}
        elif cur is not None and f.id == 0x355 and len(f.data) >= 4:
            cur["soc"] = pylon.decode(f.id, f.data)["soc"]
        elif cur is not None and f.id == 0x35C and len(f.data) >= 1:
            cur["enable"] = pylon.decode(f.id, f.data)["charge_enable"]
    if cur is not None:
        sets.append(cur)
    return [(s["t"], s["ccl"], s["soc"], s["enable"]) for s in sets if "soc" in s and "enable" in s]


# SOC marks which of pack 1's telegrams a frame set was made from: 80 % and
# 80 % before the forbid, 70 % (forbidding) and 80 % after it, so the bank
# shows (80 + 70) / 2 = 75 % (weighted by the equal capacities) exactly in
# the sets made from a round that had the forbid. That is what spec 15 is
# about ("never 200 A, not even for one round"), whatever the machine's
# load: a set sent while the gateway has not read the forbid yet rightly
# carries the old state, and no wire timestamp can tell it apart.
SOC_BEFORE, SOC_FORBIDDING, SOC_AFTER = 80, 70, 75


def forbid(ctx, on_pack_forbids, want, want_enable):
    """Both packs charge at 40 A (limit min(100 / 0.5, 100 / 0.5, 200) =
    200 A); then pack 1 forbids charging and reports 0 A, pack 2 takes 80 A."""
    bats, cap, gw = start(ctx, PACKS, {"ON-PACK-FORBIDS": on_pack_forbids})
    bats[0].values, bats[1].values = pack(40.0), pack(40.0)
    wait_ccl(cap, 200.0, 0.05, 30, "both packs charging", hold=2.0)
    t_set = time.monotonic()
    bats[0].values = pack(0.0, req=pylon.DISCHARGE_ENABLE, soc=SOC_FORBIDDING)
    bats[1].values = pack(80.0)
    # The forbid is on the wire once pack 1 finished a burst with it.
    t_forbid = first_burst_end_after(bats[0], t_set)
    check(wait_for(lambda: sum(s[2] == SOC_AFTER for s in frame_sets(cap, t_set)) >= 6, 15, 0.1),
          "fewer than 6 frame sets made from the forbid's round within 15 s")
    sets = frame_sets(cap, t_set)
    made_after = [s for s in sets if s[2] == SOC_AFTER]
    made_before = [s for s in sets if s[2] == SOC_BEFORE]
    first = made_after[0]
    ctx.log(f"{on_pack_forbids}: first set from the forbid's round: {first[1]} A, sent "
            f"{first[0] - t_forbid:.3f}s after the forbid's burst ended; sets from before it: "
            f"{[(round(t - t_forbid, 3), v) for t, v, _, _ in made_before]}")
    check(len(made_after) + len(made_before) == len(sets),
          f"a set with a SOC from neither round: {[s[2] for s in sets]}")
    check(all(s[0] < first[0] for s in made_before),
          "a set made before the forbid was sent after one made from it")
    wrong = [v for _, v, _, _ in made_after if v != want]
    check(not wrong, f"every set made from the forbid's round on must carry {want} A: "
          f"{[v for _, v, _, _ in made_after]}")
    # Made before the gateway read the forbid: the old 200 A (pack 2's new
    # 80 A may come first; the smoothed shares barely move in that time).
    odd = [v for _, v, _, _ in made_before if v != 200.0]
    check(not odd, f"sets made before the forbid's round: {odd}, want 200.0 A")
    enables = [e for _, _, _, e in made_after]
    check(all(e == want_enable for e in enables),
          f"charge enable after the forbid: {enables}, want {want_enable}")
    # Pack 1 allows charging again: back toward 200 A as the measured shares
    # return to 0.5 / 0.5 (smoothed, spec 8: within 2 % in 30 s).
    bats[0].values, bats[1].values = pack(40.0), pack(40.0)
    wait_ccl(cap, 200.0, 4.0, 40, "both packs charging again")
    gateway_alive(gw)


@scenario("policy_forbid_stop", budget=90)
def policy_forbid_stop(ctx):
    """ON-PACK-FORBIDS = "stop": one pack forbids charging: 0 A, enable clear."""
    forbid(ctx, "stop", 0.0, False)


@scenario("policy_forbid_continue", budget=90)
def policy_forbid_continue(ctx):
    """ON-PACK-FORBIDS = "continue": the other pack's own 100 A at once, never 200 A."""
    forbid(ctx, "continue", 100.0, True)


@scenario("policy_derating", budget=120)
def policy_derating(ctx):
    """TEMPERATURE-DERATING-CHARGE [[0, 0.2], [10, 1]]: the coldest cell (0x373,
    below the pack's own 25 degC) ramps 10 -> -5 -> 10 degC; the idle pack's
    100 A limit follows 100 x (0.2 + 0.08 x t) between 0 and 10 degC."""
    # A Python list is written as the TOML array (harness.toml_value: repr).
    curve = [[0, 0.2], [10, 1.0]]
    bats, cap, gw = start(ctx, ("sbat1",), {"TEMPERATURE-DERATING-CHARGE": curve})
    # 0x373 carries whole kelvin: integer degC only.
    ramp = [(10, 100.0), (8, 84.0), (5, 60.0), (3, 44.0), (0, 20.0), (-5, 20.0), (5, 60.0), (10, 100.0)]
    for t_cell, want in ramp:
        # Cells 3.300..3.320 V, coldest t_cell, hottest 30 degC (not derated).
        bats[0].values = pack(0.5, t=25.0, cells=(3300, 3320, t_cell, 30))
        took = wait_ccl(cap, want, 0.11, 15, f"coldest cell {t_cell} degC")
        ctx.log(f"coldest cell {t_cell} degC: {want} A after {took:.1f}s")
    # The discharge limit has no curve: untouched.
    d = [pylon.decode(f.id, f.data)["i_lim_discharge"] for f in cap.since(time.monotonic() - 2)
         if f.id == 0x351 and len(f.data) >= 8]
    check(d and all(v == 100.0 for v in d), f"discharge limit derated: {d}")
    gateway_alive(gw)


@scenario("policy_charge_stop", budget=120)
def policy_charge_stop(ctx):
    """CHARGE-STOP-SOC 90, CHARGE-RESUME-SOC 85: 88 % charges (100 A), 90 % stops
    (0 A), 87 % still stopped, 84 % charges again."""
    bats, cap, gw = start(ctx, ("sbat1",), {"CHARGE-STOP-SOC": 90, "CHARGE-RESUME-SOC": 85})
    for soc, want, what in [(88, 100.0, "below the stop SOC"), (90, 0.0, "at the stop SOC"),
                            (87, 0.0, "inside the hysteresis"), (84, 100.0, "below the resume SOC")]:
        bats[0].values = pack(0.5, soc=soc)
        took = wait_ccl(cap, want, 0.05, 15, f"SOC {soc} %: {what}", hold=2.5 if want == 0.0 else 0.0)
        ctx.log(f"SOC {soc} % ({what}): {want} A after {took:.1f}s")
    gateway_alive(gw)
