"""The system-test scenarios (spec sections 4-7 on real SocketCAN).

Each scenario states its expectations from the spec and computes expected
frame values with pylon.py (independent of the gateway's code). Interface
names: sbatN for battery buses, sinvN for inverter buses.
"""

import os
import time

import canio
import harness
import pylon
from harness import Failure, check, scenario, wait_for


@scenario("smoke_vcan", budget=30)
def smoke_vcan(ctx):
    """The VM has working SocketCAN: cansend -> vcan -> candump and AF_CAN."""
    ctx.vcan("smoke0")
    dump = ctx.capture("smoke0", candump=True)
    sock = ctx.capture("smoke0")
    time.sleep(0.5)  # let candump open its socket
    canio.sh("cansend", "smoke0", "351#1402C012C012C201")
    canio.sh("cansend", "smoke0", "12345678#DEADBEEF")
    canio.sh("cansend", "smoke0", "305#R")
    for cap in (dump, sock):
        got = wait_for(lambda cap=cap: len(cap.since(0)) >= 3, 5)
        check(got, f"{type(cap).__name__} saw {cap.since(0)!r}, expected 3 frames")
        f = cap.since(0)
        check((f[0].id, f[0].data, f[0].ext) == (0x351, bytes.fromhex("1402C012C012C201"), False),
              f"first frame {f[0]!r}")
        check(pylon.decode(f[0].id, f[0].data) == dict(v_charge_cmd=53.2, i_lim_charge=480.0,
                                                      i_lim_discharge=480.0, v_discharge_min=45.0),
              "test vector 0x351 decodes wrongly")
        check((f[1].id, f[1].ext) == (0x12345678, True), f"second frame {f[1]!r}")
        check((f[2].id, f[2].rtr) == (0x305, True), f"third frame {f[2]!r}")
    check(os.access(harness.BINARY, os.X_OK), f"{harness.BINARY} is not executable in the VM")
