"""Independent Pylontech CAN codec and combiner model for the system tests.

Written from shared/reference/pylontech-can.md and docs/combining.md, not
from the gateway's source, so that the tests check the gateway against the
contract rather than against itself. Everything here is plain Python with
exact fractions: expected values are rounded to the field's unit (half away
from zero, never truncated) and saturated to the field's range, except current
limits, which are rounded down (toward zero) so that rounding never allows more
than the rules give.
"""

from fractions import Fraction
import struct

# Frame set toward inverters, in the order docs/combining.md requires.
FRAME_ORDER = [0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E]
ID_373 = 0x373

# 0x359 bits the gateway sets itself (docs/combining.md, degraded and safe states).
ALARM2_INTERNAL_COMM_FAIL = 0x08  # byte 3 bit 3: degraded
PROT2_SYSTEM_ERROR = 0x08  # byte 1 bit 3: safe state
CHARGE_ENABLE = 0x80
DISCHARGE_ENABLE = 0x40


def q(value, unit):
    """Round a value (int, str, float or Fraction) to an integer count of unit.

    Half away from zero, as a user reading the rules ("rounded, not truncated")
    expects. Floats go through str() so 52.1 means exactly 52.1.
    """
    v = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    n = v / Fraction(str(unit))
    sign = -1 if n < 0 else 1
    n = abs(n)
    whole = int(n)
    if n - whole >= Fraction(1, 2):
        whole += 1
    return sign * whole


def q_down(value, unit):
    """Round a value down (toward zero) to an integer count of unit: current
    limits, so that the inverters together never exceed the combined limit,
    a cap or a setpoint."""
    v = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    n = v / Fraction(str(unit))
    return int(n)


def is_tie(value, unit):
    """True when value lies exactly half-way between two units: a fixture
    whose expected value depends on the tie-breaking rule tests nothing
    useful, so expected_fields refuses it."""
    v = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    n = abs(v / Fraction(str(unit)))
    return n - int(n) == Fraction(1, 2)


def sat(n, lo, hi):
    """Saturate an integer to [lo, hi]."""
    return max(lo, min(hi, n))


def u16(n):
    return struct.pack("<H", sat(n, 0, 0xFFFF))


def s16(n):
    return struct.pack("<h", sat(n, -0x8000, 0x7FFF))


# --- battery side: what a Pylontech BMS sends --------------------------------

def battery(**kw):
    """A battery's values with sensible defaults (units: V, A, %, degC, mV)."""
    b = dict(cvl=53.2, ccl=100.0, dcl=100.0, dvl=45.0, soc=80, soh=95,
             v=52.0, i=0.0, t=25.0, flags=(0, 0, 0, 0), modules=3,
             req=0xC0, cells=None, name="PYLON")
    b.update(kw)
    return b


def encode_battery(b):
    """The frame set a Pylontech BMS sends once per second, in real order."""
    f = b["flags"]
    frames = [
        (0x359, bytes([f[0], f[1], f[2], f[3], b["modules"]]) + b"PN"),
        (0x351, u16(q(b["cvl"], "0.1")) + s16(q(b["ccl"], "0.1"))
         + s16(q(b["dcl"], "0.1")) + u16(q(b["dvl"], "0.1"))),
        (0x355, u16(q(b["soc"], 1)) + u16(q(b["soh"], 1))),
        (0x356, s16(q(b["v"], "0.01")) + s16(q(b["i"], "0.1")) + s16(q(b["t"], "0.1"))),
        (0x35C, bytes([b["req"], 0])),
        (0x35E, b["name"].encode().ljust(8, b"\0")[:8]),
    ]
    if b.get("cells"):
        vmin, vmax, tmin, tmax = b["cells"]
        frames.append((ID_373, u16(vmin) + u16(vmax) + u16(tmin + 273) + u16(tmax + 273)))
    return frames


# --- inverter side: decoding what the gateway sends --------------------------

def decode(can_id, data):
    """Decode one frame into the documented field names (units V, A, %, degC)."""
    d = bytes(data)
    if can_id == 0x351 and len(d) >= 8:
        cvl, ccl, dcl, dvl = struct.unpack("<HhhH", d[:8])
        return dict(v_charge_cmd=cvl / 10, i_lim_charge=ccl / 10,
                    i_lim_discharge=dcl / 10, v_discharge_min=dvl / 10)
    if can_id == 0x355 and len(d) >= 4:
        soc, soh = struct.unpack("<HH", d[:4])
        return dict(soc=soc, soh=soh)
    if can_id == 0x356 and len(d) >= 6:
        v, i, t = struct.unpack("<hhh", d[:6])
        return dict(v_avg=v / 100, i_total=i / 10, t_avg=t / 10)
    if can_id == 0x359 and len(d) >= 5:
        return dict(error_flags_1=d[0], error_flags_2=d[1], warning_flags_1=d[2],
                    warning_flags_2=d[3], n_modules=d[4])
    if can_id == 0x35C and len(d) >= 1:
        return dict(charge_enable=bool(d[0] & 0x80), discharge_enable=bool(d[0] & 0x40),
                    force_charge_request=bool(d[0] & 0x20),
                    force_charge_request_2=bool(d[0] & 0x10),
                    balancing_charge_request=bool(d[0] & 0x08))
    if can_id == 0x35E:
        return dict(manufacturer=d.rstrip(b"\0 ").decode("ascii", "replace"))
    if can_id == ID_373 and len(d) >= 8:
        a, b, c, e = struct.unpack("<HHHH", d[:8])
        return dict(v_cell_min=a / 1000, v_cell_max=b / 1000, t_cell_min=c - 273, t_cell_max=e - 273)
    return dict(undecodable=d.hex())


# --- the combiner model (docs/combining.md) --------------------------------------

def F(x):
    return Fraction(str(x)) if isinstance(x, float) else Fraction(x)


def combine(inputs, battery_cfg=None):
    """Combine fresh inputs: list of (battery dict, capacity_ah).

    Returns the virtual battery in exact fractions (no rounding yet).
    """
    cfg = dict(i_lim_charge=700, i_lim_discharge=700, i_tot_scaling=1, i_tot_offset=0)
    cfg.update(battery_cfg or {})
    cap = sum(F(c) for _, c in inputs)

    def wavg(key):
        return sum(F(b[key]) * F(c) for b, c in inputs) / cap

    req_and = 0xFF
    req_or = 0
    for b, _ in inputs:
        req_and &= b["req"]
        req_or |= b["req"]
    flags = [0, 0, 0, 0]
    for b, _ in inputs:
        flags = [x | y for x, y in zip(flags, b["flags"])]
    ccl = sum(max(F(b["ccl"]), 0) for b, _ in inputs if b["req"] & CHARGE_ENABLE)
    dcl = sum(max(F(b["dcl"]), 0) for b, _ in inputs if b["req"] & DISCHARGE_ENABLE)
    # A forbidden direction (combined enable clear) is 0 A on the wire (spec 4).
    ccl = ccl if req_and & CHARGE_ENABLE else Fraction(0)
    dcl = dcl if req_and & DISCHARGE_ENABLE else Fraction(0)
    v = dict(
        cvl=min(F(b["cvl"]) for b, _ in inputs),
        dvl=max(F(b["dvl"]) for b, _ in inputs),
        ccl=min(ccl, F(cfg["i_lim_charge"])),
        dcl=min(dcl, F(cfg["i_lim_discharge"])),
        i=sum(F(b["i"]) for b, _ in inputs) * F(cfg["i_tot_scaling"]) + F(cfg["i_tot_offset"]),
        soc=wavg("soc"), soh=wavg("soh"), v=wavg("v"), t=wavg("t"),
        flags=flags,
        modules=sum(b["modules"] for b, _ in inputs),
        # enables AND, the three request bits OR (docs/combining.md)
        req=(req_and & 0xC0) | (req_or & 0x38),
        cells=None,
    )
    cells = [b["cells"] for b, _ in inputs if b.get("cells")]
    if cells:
        v["cells"] = (min(c[0] for c in cells), max(c[1] for c in cells),
                      min(c[2] for c in cells), max(c[3] for c in cells))
    return v


def share_limit(inputs, direction, cap=700, share_min_current=10):
    """Settled bank-aware limit (LIMIT-MODE "share", docs/combining.md) for
    steady currents: inputs is a list of (battery dict, capacity_ah);
    direction "charge" or "discharge". Shares are I_i / sum of I when the
    bank flows that way with |sum| >= share_min_current, else the capacity
    shares; limit = min(cap, sum of L_i, min over s_i > 0 of L_i / s_i).
    Exact fractions."""
    key, bit = ("ccl", CHARGE_ENABLE) if direction == "charge" else ("dcl", DISCHARGE_ENABLE)
    own = [max(F(b[key]), 0) if b["req"] & bit else Fraction(0) for b, _ in inputs]
    total = sum(F(b["i"]) for b, _ in inputs)
    flows = total >= share_min_current if direction == "charge" else -total >= share_min_current
    if flows:
        shares = [F(b["i"]) / total for b, _ in inputs]
    else:
        cap_sum = sum(F(c) for _, c in inputs)
        shares = [F(c) / cap_sum for _, c in inputs]
    limit = min(F(cap), sum(own))
    for l_i, s_i in zip(own, shares):
        if l_i > 0 and s_i > 0:
            limit = min(limit, l_i / s_i)
    return limit


def inverter_view(combined, out_cfg=None, setpoint_charge=None, setpoint_discharge=None):
    """Apply one inverter's share (docs/combining.md, each inverter's share)."""
    o = dict(i_lim_charge=300, i_lim_discharge=300, i_scaling=1, i_offset=0, manufacturer="PYLON")
    o.update(out_cfg or {})
    v = dict(combined)
    ch = [F(o["i_lim_charge"]), combined["ccl"] * F(o["i_scaling"])]
    dis = [F(o["i_lim_discharge"]), combined["dcl"] * F(o["i_scaling"])]
    if setpoint_charge is not None:
        ch.append(F(setpoint_charge))
    if setpoint_discharge is not None:
        dis.append(F(setpoint_discharge))
    v["ccl"] = min(ch)
    v["dcl"] = min(dis)
    v["i"] = combined["i"] * F(o["i_scaling"]) + F(o["i_offset"])
    v["name"] = o["manufacturer"]
    return v


def degraded(view):
    """Degraded: alarm byte 3 bit 3 on top of the fresh inputs' values."""
    v = dict(view)
    f = list(v["flags"])
    f[3] |= ALARM2_INTERNAL_COMM_FAIL
    v["flags"] = f
    return v


def expected_fields(view):
    """The fields an inverter must see, as raw integers in the frame's units.

    Keys are (can_id, field) so a mismatch report names the frame.
    """
    # Current limits round down: no tie to refuse.
    for key, unit in (("cvl", "0.1"), ("dvl", "0.1"), ("soc", 1),
                      ("soh", 1), ("v", "0.01"), ("i", "0.1"), ("t", "0.1")):
        if is_tie(view[key], unit):
            raise ValueError(f"test fixture: {key} = {float(view[key])} is a rounding tie")
    f = view["flags"]
    e = {
        (0x351, "cvl_0.1V"): sat(q(view["cvl"], "0.1"), 0, 0xFFFF),
        (0x351, "ccl_0.1A"): sat(q_down(view["ccl"], "0.1"), 0, 0x7FFF),
        (0x351, "dcl_0.1A"): sat(q_down(view["dcl"], "0.1"), 0, 0x7FFF),
        (0x351, "dvl_0.1V"): sat(q(view["dvl"], "0.1"), 0, 0xFFFF),
        (0x355, "soc_%"): sat(q(view["soc"], 1), 0, 100),
        (0x355, "soh_%"): sat(q(view["soh"], 1), 0, 100),
        (0x356, "v_0.01V"): sat(q(view["v"], "0.01"), -0x8000, 0x7FFF),
        (0x356, "i_0.1A"): sat(q(view["i"], "0.1"), -0x8000, 0x7FFF),
        (0x356, "t_0.1C"): sat(q(view["t"], "0.1"), -0x8000, 0x7FFF),
        (0x359, "prot1"): f[0], (0x359, "prot2"): f[1],
        (0x359, "alarm1"): f[2], (0x359, "alarm2"): f[3],
        (0x359, "modules"): sat(view["modules"], 0, 255),
        (0x35C, "flags"): view["req"],
        (0x35E, "name"): view["name"],
    }
    if view.get("cells"):
        c = view["cells"]
        e[(ID_373, "vmin_mV")] = c[0]
        e[(ID_373, "vmax_mV")] = c[1]
        e[(ID_373, "tmin_K")] = c[2] + 273
        e[(ID_373, "tmax_K")] = c[3] + 273
    return e


def frame_fields(can_id, data):
    """Raw integer fields of one received frame, keyed like expected_fields."""
    d = bytes(data)
    if can_id == 0x351 and len(d) >= 8:
        a, b, c, e = struct.unpack("<HhhH", d[:8])
        return {(0x351, "cvl_0.1V"): a, (0x351, "ccl_0.1A"): b,
                (0x351, "dcl_0.1A"): c, (0x351, "dvl_0.1V"): e}
    if can_id == 0x355 and len(d) >= 4:
        a, b = struct.unpack("<HH", d[:4])
        return {(0x355, "soc_%"): a, (0x355, "soh_%"): b}
    if can_id == 0x356 and len(d) >= 6:
        a, b, c = struct.unpack("<hhh", d[:6])
        return {(0x356, "v_0.01V"): a, (0x356, "i_0.1A"): b, (0x356, "t_0.1C"): c}
    if can_id == 0x359 and len(d) >= 5:
        return {(0x359, "prot1"): d[0], (0x359, "prot2"): d[1], (0x359, "alarm1"): d[2],
                (0x359, "alarm2"): d[3], (0x359, "modules"): d[4]}
    if can_id == 0x35C and len(d) >= 1:
        return {(0x35C, "flags"): d[0]}
    if can_id == 0x35E:
        return {(0x35E, "name"): d.rstrip(b"\0 ").decode("ascii", "replace")}
    if can_id == ID_373 and len(d) >= 8:
        a, b, c, e = struct.unpack("<HHHH", d[:8])
        return {(ID_373, "vmin_mV"): a, (ID_373, "vmax_mV"): b,
                (ID_373, "tmin_K"): c, (ID_373, "tmax_K"): e}
    return {}


# Minimum DLC per frame (Pylontech document; newer firmware may send more).
MIN_DLC = {0x351: 8, 0x355: 4, 0x356: 6, 0x359: 7, 0x35C: 2, 0x35E: 1, ID_373: 8}


def frame_problems(can_id, data, ext=False, rtr=False):
    """Structural problems of one frame sent toward an inverter, as text."""
    p = []
    if ext:
        p.append("extended ID")
    if rtr:
        p.append("remote frame")
    if can_id in MIN_DLC and len(data) < MIN_DLC[can_id]:
        p.append(f"DLC {len(data)} < {MIN_DLC[can_id]}")
    if can_id == 0x351 and len(data) >= 8:
        cvl, ccl, dcl, _ = struct.unpack("<HhhH", bytes(data[:8]))
        if ccl < 0 or dcl < 0:
            p.append("negative current limit")
        if cvl == 0:
            p.append("CVL 0")
    if can_id == 0x359 and len(data) >= 7 and bytes(data[5:7]) != b"PN":
        p.append(f"bytes 5-6 {bytes(data[5:7])!r}, expected b'PN'")
    if can_id == 0x35E and len(data) > 8:
        p.append("name longer than 8 bytes")
    return p
