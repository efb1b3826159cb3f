"""System scenario of a mixed bank (spec 18, issue 24): one battery on vcan
(the harness's Python Pylontech CAN player) and one RS485 pack on a
pseudo-terminal pair, played by the project's `sim-bms --serial --pty`
(the reference's capture V7, a US5000 at address 2), combined by the
release binary and checked at the inverter's vcan with can-utils' candump.
A SIGUSR1 recording holds the serial exchanges (the daemon's serial ports
go through the flight recorder), canplayer reads it and `decode --rs485`
decodes it. The RS485 pack then goes silent (its player stopped with SIGSTOP: the port
stays, the answers stop), the bank goes degraded with the CAN battery's
values alone, and comes back to the mixed values when it answers again.

Every expected value is worked out by hand below from the CAN battery's
values and the reference's decoded V7 (shared/reference/pylontech-rs485.md
section 5), with docs/combining.md's rules for LIMIT-MODE "sum" and two
100 Ah batteries: limits summed, CVL the lowest, DVL the highest, SOC, SOH,
voltage and temperature capacity-weighted (here plain means), currents and
modules summed, enables ANDed.
"""

import glob
import json
import os
import signal
import subprocess
import time

import harness
import pylon
from harness import check, scenario

STALE = 3.0

# The CAN battery (100 Ah).
CAN = pylon.battery(cvl=53.1, ccl=30.0, dcl=40.0, dvl=44.0, soc=60, soh=90, v=52.0, i=-5.0,
                    t=25.1, modules=2, req=0xC0, name="MIXCAN")

# The RS485 pack (100 Ah), V7 as decoded by the reference: 0x92 CVL 53.250 V,
# DVL 45.000 V, CCL 20.0 A, DCL 50.0 A (sent -50.0), status 0xC0; 0x42
# 50.247 V, +20.1 A, 94.905 of 100.000 Ah (SOC 94.905 %), temperatures
# 35.2/32.4/32.5/32.2/35.2 (mean 33.5), no SOH (100 % by docs/rs485.md),
# one module; 0x44 all normal.
#
# Both fresh, in raw units of the frames (0.1 V, 0.1 A, %, 0.01 V, 0.1 degC):
#   CVL  min(53.1, 53.25) = 53.1 V                      -> 531
#   DVL  max(44.0, 45.0) = 45.0 V                       -> 450
#   CCL  30.0 + 20.0 = 50.0 A                           -> 500
#   DCL  40.0 + 50.0 = 90.0 A                           -> 900
#   SOC  (60 + 94.905) / 2 = 77.4525 %                  -> 77
#   SOH  (90 + 100) / 2 = 95 %                          -> 95
#   V    (52.0 + 50.247) / 2 = 51.1235 V                -> 5112
#   I    -5.0 + 20.1 = 15.1 A                           -> 151
#   T    (25.1 + 33.5) / 2 = 29.3 degC                  -> 293
#   modules 2 + 1 = 3, enables 0xC0 & 0xC0 = 0xC0, no alarm bit.
MIXED = {
    (0x351, "cvl_0.1V"): 531, (0x351, "dvl_0.1V"): 450,
    (0x351, "ccl_0.1A"): 500, (0x351, "dcl_0.1A"): 900,
    (0x355, "soc_%"): 77, (0x355, "soh_%"): 95,
    (0x356, "v_0.01V"): 5112, (0x356, "i_0.1A"): 151, (0x356, "t_0.1C"): 293,
    (0x359, "prot1"): 0, (0x359, "prot2"): 0, (0x359, "alarm1"): 0, (0x359, "alarm2"): 0,
    (0x359, "modules"): 3,
    (0x35C, "flags"): 0xC0,
}

# The RS485 pack stale: the CAN battery's values alone, with the degraded
# state's alarm byte 3 bit 3 (docs/combining.md): 53.1 V, 44.0 V, 30.0 A,
# 40.0 A, 60 %, 90 %, 52.00 V, -5.0 A, 25.1 degC, 2 modules.
DEGRADED = {
    (0x351, "cvl_0.1V"): 531, (0x351, "dvl_0.1V"): 440,
    (0x351, "ccl_0.1A"): 300, (0x351, "dcl_0.1A"): 400,
    (0x355, "soc_%"): 60, (0x355, "soh_%"): 90,
    (0x356, "v_0.01V"): 5200, (0x356, "i_0.1A"): -50, (0x356, "t_0.1C"): 251,
    (0x359, "prot1"): 0, (0x359, "prot2"): 0, (0x359, "alarm1"): 0,
    (0x359, "alarm2"): pylon.ALARM2_INTERNAL_COMM_FAIL,
    (0x359, "modules"): 2,
    (0x35C, "flags"): 0xC0,
}


def cells_seen(cap, t0, t1):
    """(vmin, vmax) mV of every 0x373 the inverter got in [t0, t1]."""
    out = []
    for f in cap.since(t0, t1):
        if f.id == pylon.ID_373:
            fl = pylon.frame_fields(f.id, f.data)
            out.append((fl[(pylon.ID_373, "vmin_mV")], fl[(pylon.ID_373, "vmax_mV")]))
    return out


# V7's 0x42 exchange with the pack at address 2, as the recorder shows it
# (docs/recorder.md): the request of the reference's section 1.4 and V7's answer.
REQUEST_42 = "~20024642E00202FD33\\r"
ANSWER_42 = ("~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF"
             "0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\\r")


def check_recording(ctx, gw, link, recordings):
    """SIGUSR1: the recording holds the serial exchanges beside the CAN
    frames; canplayer reads it (the serial lines are comments to it) and
    `decode --rs485` decodes its serial lines."""
    gw.proc.send_signal(signal.SIGUSR1)
    files = harness.wait_for(lambda: sorted(glob.glob(os.path.join(recordings, "*-signal.log"))), 10)
    check(files, f"no recording in {recordings}: {gw.log_text()[-500:]}")
    with open(files[0]) as f:
        lines = f.read().splitlines()
    serial = [line.split() for line in lines if line.startswith("# rs485 ")]
    can = [line for line in lines if line.startswith("(")]
    ctx.log(f"recording: {len(can)} CAN frames, {len(serial)} serial entries")
    check(all(w[3] == link and w[4] == "adr=02" for w in serial), f"serial lines: {serial[:3]}")
    words = [(w[5], w[6]) for w in serial]
    check(("tx", REQUEST_42) in words and ("rx", ANSWER_42) in words,
          f"no 0x42 exchange of V7 in the recording: {words[:4]}")
    check(any(" xbat1 351#" in line for line in can), "no CAN battery frame in the recording")
    # canplayer reads the whole file onto a vcan of its own (-t: at once).
    ctx.vcan("xplay")
    p = subprocess.run(["canplayer", "-I", files[0], "-t", "xplay=xbat1", "xplay=xinv1"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and not p.stderr.strip(), f"canplayer: {p.returncode} {p.stderr}")
    d = subprocess.run([harness.BINARY, "decode", "--rs485", files[0]], capture_output=True, text=True,
                       timeout=30)
    check(d.returncode == 0, f"decode --rs485: {d.returncode} {d.stderr}")
    answers = [json.loads(line) for line in d.stdout.splitlines()]
    analog = [a for a in answers if a.get("answers") == "0x42"]
    check(analog and analog[0].get("v_avg") == 50.247, f"decode --rs485: {d.stdout[:400]}")


@scenario("mixed_rs485", budget=150)
def mixed_rs485(ctx):
    """A CAN battery and an RS485 pack on a pty combine; the pack goes silent, stale, and comes back."""
    ctx.vcan("xbat1", "xinv1")
    ctx.battery("xbat1", CAN)
    cap = ctx.capture("xinv1", candump=True)
    link = os.path.join(harness.TMP, "mixed-ttyBAT")
    sim = ctx.spawn([harness.BINARY, "sim-bms", "--serial", link, "--pty", "--protocol", "pylon",
                     "--address", "2"])
    check(harness.wait_for(lambda: os.path.islink(link), 10), f"sim-bms made no pty at {link}")
    cfg = harness.config(
        [{"CAN-IF": "xbat1", "CAPACITY-AH": 100.0},
         {"SERIAL-PORT": link, "ADDRESS": 2, "BAUD": 115200, "PROTOCOL": "pylon",
          "CAPACITY-AH": 100.0}],
        [{"CAN-IF": "xinv1"}], {"STALE-TIMEOUT": STALE})
    state = os.path.join(harness.TMP, "mixed-state")
    subprocess.run(["rm", "-rf", state], check=True)
    cfg = cfg.replace("GATEWAY-ACTIVATED = true\n",
                      f"GATEWAY-ACTIVATED = true\nSTATE-DIR = {harness.toml_value(state)}\n", 1)
    cfg += "[recorder]\nSECONDS = 30\n"
    gw = ctx.gateway(cfg)

    t_ok = harness.wait_state(cap, MIXED, 30, "the mixed bank's values")
    ctx.log(f"mixed values after {t_ok - gw.started:.1f}s")
    time.sleep(3)
    t1 = time.monotonic()
    harness.check_window(cap, MIXED, t_ok + 0.5, t1, "steady mixed bank", min_bursts=2)
    cells = cells_seen(cap, t_ok + 0.5, t1)
    # V7's 15 cells span 3348..3352 mV; the CAN battery sends no 0x373.
    check(cells and set(cells) == {(3348, 3352)}, f"0x373 cell extremes: {sorted(set(cells))}")

    check_recording(ctx, gw, link, os.path.join(state, "recordings"))

    # Silent: the pack's player stops answering; the port stays.
    sim.send_signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    t_deg = harness.wait_state(cap, DEGRADED, STALE + 8, "degraded with the CAN battery alone")
    ctx.log(f"degraded {t_deg - t_stop:.1f}s after the RS485 pack went silent (STALE-TIMEOUT {STALE})")
    # Its last complete cycle was at most one POLL-INTERVAL (1 s) before the stop.
    check(t_deg - t_stop > STALE - 1.1, f"degraded after only {t_deg - t_stop:.2f}s")
    time.sleep(3)
    harness.check_window(cap, DEGRADED, t_deg + 0.5, time.monotonic(), "steady degraded state",
                         min_bursts=2)

    # Back: the player answers again; the mixed values return.
    sim.send_signal(signal.SIGCONT)
    t_cont = time.monotonic()
    t_back = harness.wait_state(cap, MIXED, 15, "the mixed bank after the pack answers again")
    ctx.log(f"mixed values again {t_back - t_cont:.1f}s after the pack resumed")
    time.sleep(2)
    harness.check_window(cap, MIXED, t_back + 0.5, time.monotonic(), "steady mixed bank again")
    check(gw.alive(), f"the gateway died: {gw.log_text()[-500:]}")
    # The serial thread's own account: the silence was timeouts, and no
    # answer was corrupt, from another address or implausible.
    log = gw.log_text()
    check("answer not used (timeout)" in log, "no timeout logged for the silent pack")
    for kind in ("checksum", "garbage", "wrong_address", "implausible"):
        check(f"answer not used ({kind})" not in log, f"a {kind} answer logged: {log[-800:]}")
