"""Cascaded gateways: how a bank grows past one machine's interfaces.

Gateway A combines three batteries; its output is one input of gateway B,
which adds two more batteries and serves two inverters. Under today's
combining rule (limits summed, averages weighted by CAPACITY-AH) B's output
must equal what one gateway with all five packs sends, when B's CAPACITY-AH
for A is the sum of A's packs. A third gateway with all five packs runs next
to them on the same buses (vcan lets several readers share a bus) and is
compared too. Expected values come from pylon.py, applied twice for the
cascade: A's output as B decodes it, rounded to the frame's units.
"""

import time
from fractions import Fraction

import harness
import pylon
from harness import check, scenario, wait_for
from scenarios import gateway_alive

# Averages of A's three packs are exact in the frame units (SOC 1 %,
# 0.01 V, 0.1 degC), so the cascade rounds nothing the flat gateway does not.
A_PACKS = {
    "sbat1": (100, dict(cvl=53.2, ccl=100.0, dcl=120.0, dvl=45.0, soc=80, soh=94, v=52.10,
                        i=-10.0, t=25.0, flags=(0, 0, 0x04, 0), modules=3, req=0xC0,
                        cells=(3288, 3313, 17, 25))),
    "sbat2": (100, dict(cvl=53.6, ccl=80.0, dcl=100.0, dvl=45.5, soc=70, soh=96, v=52.20,
                        i=5.0, t=26.0, flags=(0, 0, 0, 0), modules=2, req=0xC8,
                        cells=(3275, 3320, 15, 27))),
    "sbat3": (100, dict(cvl=53.4, ccl=60.0, dcl=90.0, dvl=44.0, soc=90, soh=98, v=52.30,
                        i=2.4, t=27.0, flags=(0, 0, 0, 0x01), modules=4, req=0xC0,
                        cells=(3290, 3300, 18, 24))),
}
B_PACKS = {
    "sbat4": (200, dict(cvl=54.0, ccl=150.0, dcl=200.0, dvl=46.0, soc=60, soh=99, v=52.40,
                        i=10.0, t=21.0, flags=(0, 0, 0, 0), modules=5, req=0xC0,
                        cells=(3280, 3310, 16, 26))),
    "sbat5": (100, dict(cvl=53.8, ccl=50.0, dcl=60.0, dvl=44.5, soc=50, soh=90, v=52.00,
                        i=-3.0, t=23.0, flags=(0, 0, 0, 0), modules=2, req=0xC0, cells=None)),
}
CASCADE = "scasc"  # A's output = B's input
A_CAPACITY = sum(c for c, _ in A_PACKS.values())
# A's output passes the combined battery on unchanged: no scaling, no cap below its sum.
A_OUT = {"CAN-IF": CASCADE, "I-SCALING": 1.0, "I-LIM-CHARGE": 1000.0, "I-LIM-DISCHARGE": 1000.0}
A_OUT_MODEL = dict(i_scaling=1, i_lim_charge=1000, i_lim_discharge=1000)
INV = {"I-SCALING": 0.5, "I-LIM-CHARGE": 500.0, "I-LIM-DISCHARGE": 500.0}
INV_MODEL = dict(i_scaling=0.5, i_lim_charge=500, i_lim_discharge=500)


def as_battery(view):
    """A's output as B decodes it: the frame values, in V, A, %, degC."""
    e = pylon.expected_fields(view)
    u = Fraction
    return pylon.battery(
        cvl=u(e[(0x351, "cvl_0.1V")], 10), ccl=u(e[(0x351, "ccl_0.1A")], 10),
        dcl=u(e[(0x351, "dcl_0.1A")], 10), dvl=u(e[(0x351, "dvl_0.1V")], 10),
        soc=e[(0x355, "soc_%")], soh=e[(0x355, "soh_%")], v=u(e[(0x356, "v_0.01V")], 100),
        i=u(e[(0x356, "i_0.1A")], 10), t=u(e[(0x356, "t_0.1C")], 10),
        flags=tuple(e[(0x359, k)] for k in ("prot1", "prot2", "alarm1", "alarm2")),
        modules=e[(0x359, "modules")], req=e[(0x35C, "flags")], cells=view.get("cells"))


def flat(packs):
    """One gateway with every pack in `packs` ({iface: (capacity, values)})."""
    return pylon.combine([(v, c) for c, v in packs.values()])


def cascade(a_packs, a_state="ok"):
    """B's combined battery: A's fresh packs through A's output, plus B's packs."""
    a_view = pylon.inverter_view(flat(a_packs), A_OUT_MODEL)
    if a_state == "degraded":
        a_view = pylon.degraded(a_view)
    return pylon.combine([(as_battery(a_view), A_CAPACITY)] + [(v, c) for c, v in B_PACKS.values()])


def outputs(prefix, manufacturers=("PYLON", "PYLONGW")):
    return [dict(INV, **{"CAN-IF": f"{prefix}{j}", "MANUFACTURER": m})
            for j, m in enumerate(manufacturers, 1)]


def views(comb, manufacturers=("PYLON", "PYLONGW")):
    return [pylon.expected_fields(pylon.inverter_view(comb, dict(INV_MODEL, manufacturer=m)))
            for m in manufacturers]


@scenario("cascade", budget=150)
def cascade_gateways(ctx):
    """Gateway A (3 packs) feeds gateway B (2 more, 2 inverters): B sends what one gateway with
    all 5 packs sends; a pack lost at A shows degraded at B's inverters in time."""
    everything = dict(A_PACKS, **B_PACKS)
    ctx.vcan(*everything, CASCADE, "sinv1", "sinv2", "sflat1", "sflat2")
    sims = {i: ctx.battery(i, pylon.battery(**v)) for i, (_, v) in everything.items()}
    inv = [ctx.capture("sinv1"), ctx.capture("sinv2")]
    ref = [ctx.capture("sflat1"), ctx.capture("sflat2")]
    # Three battery periods: a player the busy VM delays (eight of them and
    # three gateways here) must not make a pack stale in the steady windows.
    stale = 3.0
    bcfg = {"STALE-TIMEOUT": stale}

    def ins(packs):
        return [{"CAN-IF": i, "CAPACITY-AH": c} for i, (c, _) in packs.items()]

    gw_a = ctx.gateway(harness.config(ins(A_PACKS), [A_OUT], bcfg))
    b_in = [{"CAN-IF": CASCADE, "DESCRIPTION": "gateway A", "CAPACITY-AH": A_CAPACITY}]
    gw_b = ctx.gateway(harness.config(b_in + ins(B_PACKS), outputs("sinv"), bcfg))
    gw_flat = ctx.gateway(harness.config(ins(everything), outputs("sflat"), bcfg))
    want = views(flat(everything))
    check(want == views(cascade(A_PACKS)), "test fixture: cascade and flat models differ")
    t0 = time.monotonic()
    for j in (0, 1):
        harness.wait_state(ref[j], want[j], 25, f"one gateway with 5 packs, inverter {j + 1}")
        harness.wait_state(inv[j], want[j], 25, f"cascade A -> B, inverter {j + 1}")
    ctx.log(f"B's inverters show the 5-pack state {time.monotonic() - t0:.1f}s after start")
    t1 = time.monotonic()
    time.sleep(4)
    for j in (0, 1):
        harness.check_window(inv[j], want[j], t1, time.monotonic(),
                             f"cascade steady state, inverter {j + 1}", min_bursts=2)
    d = pylon.decode(0x351, [f for f in inv[0].since(t1) if f.id == 0x351][-1].data)
    ctx.log(f"inverter 1 via A -> B: {d}, same as the one-gateway reference")
    # A pack lost at A: A degrades after its STALE-TIMEOUT, B passes the flag on.
    t_stop = time.monotonic()
    sims["sbat2"].paused = True
    fresh_a = {i: p for i, p in A_PACKS.items() if i != "sbat2"}
    deg = views(cascade(fresh_a, "degraded"))
    bound = stale + stale + 2.0
    t_deg = [harness.wait_state(inv[j], deg[j], bound + 10, f"degraded at B's inverter {j + 1}")
             for j in (0, 1)]
    first = wait_for(lambda: next((f.t for f in inv[0].since(t_stop)
                                   if f.id == 0x359 and f.data[3] & pylon.ALARM2_INTERNAL_COMM_FAIL),
                                  None), 1)
    lag = (first or t_deg[0]) - t_stop
    ctx.log(f"pack lost at A: degraded bit at B's inverter 1 after {lag:.1f}s "
            f"(bound STALE-TIMEOUT_A + STALE-TIMEOUT_B + 2 s = {bound:.1f}s), "
            f"values as the cascade model after {max(t_deg) - t_stop:.1f}s")
    check(lag <= bound, f"degraded reached B's inverters after {lag:.1f}s, bound {bound:.1f}s")
    sims["sbat2"].paused = False
    for j in (0, 1):
        harness.wait_state(inv[j], want[j], 15, f"ok again at B's inverter {j + 1}")
    # Every pack of A lost: A sends the safe state (limits 0, enables clear,
    # system error); B's inverters get its enables cleared and the error flag.
    t_safe = time.monotonic()
    for i in A_PACKS:
        sims[i].paused = True

    def b_safe():
        last = {}
        for f in inv[0].since(t_safe):
            last[f.id] = f
        return (0x35C in last and 0x359 in last and not last[0x35C].data[0] & 0xC0
                and last[0x359].data[1] & pylon.PROT2_SYSTEM_ERROR)

    check(wait_for(b_safe, bound + 10),
          f"A's safe state did not reach B's inverter 1: {harness.describe(inv[0].since(t_safe))}")
    ctx.log(f"all of A's packs lost: B's inverter 1 has enables clear and the system error flag "
            f"after {time.monotonic() - t_safe:.1f}s")
    for i in A_PACKS:
        sims[i].paused = False
    for j in (0, 1):
        harness.wait_state(inv[j], want[j], 15, f"ok again at B's inverter {j + 1} after A's safe state")
    # Gateway A itself gone: B's own STALE-TIMEOUT, then degraded with its own packs.
    t_kill = time.monotonic()
    gw_a.kill()
    only_b = pylon.degraded(pylon.inverter_view(flat(B_PACKS), dict(INV_MODEL, manufacturer="PYLON")))
    harness.wait_state(inv[0], pylon.expected_fields(only_b), stale + 10, "degraded at B without A")
    ctx.log(f"gateway A stopped: B degraded on its own packs after {time.monotonic() - t_kill:.1f}s")
    for g in (gw_b, gw_flat):
        gateway_alive(g)
