"""System scenario of `bms-gateway scan` on real vcan: batteries (the
project's sim-bms and the harness's Python peer), inverters (sim-inverter
--sync, sending 11-bit 0x305; a Python peer with 29-bit 0x305-0x307), a bus with both,
a silent interface and a down one. Run unprivileged (setpriv to nobody).
The generated configuration must pass `bms-gateway check`.
"""

import os
import subprocess
import threading
import time
import tomllib

import canio
import harness
import pylon
from harness import check, scenario

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


class Keepalive29(threading.Thread):
    """An inverter that sends its 0x305-0x307 with 29-bit identifiers."""

    def __init__(self, iface):
        super().__init__(daemon=True, name=f"inv29-{iface}")
        self.sender = canio.Sender(iface)
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            for can_id in (0x305, 0x306, 0x307):
                self.sender.send(can_id, bytes(8), ext=True)
            self._halt.wait(0.5)
        self.sender.close()

    def stop(self):
        self._halt.set()
        self.join(timeout=5)


def scan(ctx, *args):
    t0 = time.monotonic()
    cmd = NOBODY + [harness.BINARY, "scan", "--seconds", "3", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=40)
    except subprocess.TimeoutExpired as e:
        raise harness.Failure(f"scan {' '.join(args)} did not end in 40 s; stderr: {e.stderr!r}")
    ctx.log(f"scan {' '.join(args)}: {time.monotonic() - t0:.1f}s, exit {p.returncode}")
    check(p.returncode == 0, f"scan {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def lines_by_iface(text):
    return {line.split()[0]: line for line in text.splitlines() if line.strip()}


@scenario("scan_classifies", budget=120)
def scan_classifies(ctx):
    """scan tells batteries, inverters, a shared bus, silence and a down link apart."""
    names = ["scbat1", "scbat2", "scinv1", "scinv2", "scboth", "scquiet", "scdown"]
    ctx.vcan(*names)
    canio.sh("ip", "link", "set", "scdown", "down")
    ctx.battery("scbat1", pylon.battery(soc=61, v=51.5, cvl=54.0, ccl=90.0, dcl=110.0, name="PYTHON"))
    ctx.spawn([harness.BINARY, "sim-bms", "--can-if", "scbat2", "--soc", "42",
               "--voltage", "50.5", "--manufacturer", "SIMBMS"])
    ctx.spawn([harness.BINARY, "sim-inverter", "--can-if", "scinv1", "--sync", "--period", "0.5"])
    inv29 = Keepalive29("scinv2")
    inv29.start()
    ctx.threads.append(inv29)
    ctx.battery("scboth", pylon.battery(name="SHARED"))
    ctx.spawn([harness.BINARY, "sim-inverter", "--can-if", "scboth", "--sync", "--period", "0.5"])

    ctx.log("peers started")
    seen = lines_by_iface(scan(ctx).stdout)
    ctx.log("\n".join(seen.get(n, f"{n}: MISSING") for n in names))
    for n in names:
        check(n in seen, f"{n} not listed by scan")
    b1 = seen["scbat1"]
    check("[up" in b1 and "battery: PYTHON, SOC 61 %, 51.5 V, CVL 54 V, CCL 90 A, DCL 110 A" in b1,
          f"scbat1: {b1}")
    check("battery: SIMBMS, SOC 42 %, 50.5 V" in seen["scbat2"], f"scbat2: {seen['scbat2']}")
    check("inverter: 0x305-0x307 11-bit" in seen["scinv1"], f"scinv1: {seen['scinv1']}")
    check("inverter: 0x305-0x307 29-bit" in seen["scinv2"], f"scinv2: {seen['scinv2']}")
    check("battery AND inverter" in seen["scboth"] and "SHARED" in seen["scboth"],
          f"scboth: {seen['scboth']}")
    check("silent for 3 s" in seen["scquiet"], f"scquiet: {seen['scquiet']}")
    check("[down]" in seen["scdown"] and "not listened" in seen["scdown"], f"scdown: {seen['scdown']}")

    text = scan(ctx, "--config").stdout
    path = os.path.join(harness.TMP, "scan.toml")
    with open(path, "w") as f:
        f.write(text)
    c = subprocess.run([harness.BINARY, "check", "-c", path], capture_output=True, text=True, timeout=20)
    check(c.returncode == 0, f"check refused the scan's config ({c.returncode}): {c.stderr}\n{text}")
    cfg = tomllib.loads(text)
    ins = [s["CAN-IF"] for s in cfg["bmses-in"] if s["CAN-IF"].startswith("sc")]
    outs = [s["CAN-IF"] for s in cfg["bmses-out"] if s["CAN-IF"].startswith("sc")]
    check(ins == ["scbat1", "scbat2"], f"[[bmses-in]]: {ins}")
    check(outs == ["scinv1", "scinv2"], f"[[bmses-out]]: {outs}")
    check("PYTHON" in cfg["bmses-in"][0]["DESCRIPTION"], f"description: {cfg['bmses-in'][0]}")
    check("# scboth: a battery and an inverter on the same bus" in text, "scboth not called out")
