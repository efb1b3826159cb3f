"""System scenarios of a CAN interface that is up but dead (spec 17,
docs/dead-interfaces.md) on real kernel CAN, with RECOVER = "bounce".

The harness makes the gateway's side of a battery's cable deaf with an
ingress tc filter that drops every frame (canio.Deafness): the battery
keeps talking, the link stays up, the gateway hears nothing. It watches
the link's up/down notifications (rtnetlink) for the gateway's bounces.

- dead_bounce: the filter goes when the harness sees the link taken down
  and up (a driver whose hang a reset clears). The battery must be fresh
  again within RECOVER-AFTER + 5 s of the interface turning deaf, after one
  bounce and with one `interface_recovered` event; the link's settings
  (txqueuelen; on the sja1000 tier also the bit rate, sample point and
  restart-ms) are the same after the bounce.
- dead_output: the same for an inverter's interface whose sends all fail
  (an egress filter: ENOBUFS, a transmit queue that stays full); frames
  reach the inverter again after one bounce, one `interface_recovered`.
- dead_backoff: the filter stays. The gateway bounces after RECOVER-AFTER,
  then RECOVER-AFTER doubled per failed bounce (6, 12, 24 s for 3 s); each
  failed bounce is an `interface_recovery_failed` event; the other
  interfaces are never bounced and the inverters' traffic never stops.

The expected times come from the spec's rule, the expected frames from
pylon.py, the counters from the status server's /metrics and the events
from its /api/events (both what MQTT publishes too).
"""

import json
import re
import time
import urllib.request

import canio
import harness
from harness import check, scenario, wait_for
from scenarios import (BOTH, INV1, INV1_MODEL, INV2, INV2_MODEL, bat_a, bat_b, expect,
                       gateway_alive, inputs_cfg, status_events)

# Longer than the STALE-TIMEOUT below, so that the battery is seen stale
# (degraded) before the bounce revives it.
BOUNCE_AFTER = 5
STALE = 2.0
BACKOFF_AFTER = 3


def dead_config(inputs, outputs, after):
    return (harness.config(inputs, outputs, {"STALE-TIMEOUT": STALE})
            + f'\n[can]\nRECOVER = "bounce"\nRECOVER-AFTER = {after}\n')


def link_settings(name):
    """What networkd would have set on the link and a bounce must keep: the
    transmit queue length and, on a real CAN device, every CAN setting the
    kernel reports except the live state and error counters."""
    r = canio.sh("ip", "-details", "-json", "link", "show", name)
    link = json.loads(r.stdout)[0]
    data = (link.get("linkinfo") or {}).get("info_data") or {}
    can = {k: v for k, v in data.items() if k not in ("state", "berr_counter")}
    return {"txqlen": link.get("txqlen"), "can": can}


def metrics():
    with urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, iface):
    """The value of `name` (after the bms_gateway_ prefix; a counter
    carries _total) for the interface `iface`, or None."""
    m = re.search(rf'^bms_gateway_{name}(?:_total)?\{{[^}}]*can_if="{iface}"[^}}]*\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def link_figures(iface, who="battery"):
    text = metrics()
    return {k: metric(text, f"{who}_link_{k}", iface)
            for k in ("bounces", "recoveries", "recovery_failures", "recovering")}


def dead_events():
    """(kind, battery, inverter) of every event about dead interfaces."""
    return [(e["kind"], e["battery"], e["inverter"]) for e in status_events()
            if e["kind"].startswith("interface_recover")]


@scenario("dead_bounce", budget=120, tiers=BOTH)
def dead_bounce(ctx):
    """A deaf input that a bounce cures: fresh again within RECOVER-AFTER + 5 s, one event."""
    ctx.vcan("sbat1", "sbat2", "sinv1")
    # Not the default, so that a reset to defaults would show.
    canio.sh("ip", "link", "set", "sbat2", "txqueuelen", "321")
    before = link_settings("sbat2")
    a = ctx.battery("sbat1", bat_a())
    b = ctx.battery("sbat2", bat_b())
    cap = ctx.capture("sinv1")
    gw = ctx.gateway(dead_config(inputs_cfg("sbat1", "sbat2"), [INV1], BOUNCE_AFTER))
    ok = expect([(a.values, "sbat1"), (b.values, "sbat2")], INV1_MODEL)
    deg = expect([(a.values, "sbat1")], INV1_MODEL, state="degraded")
    harness.wait_state(cap, ok, 20, "ok state")
    healthy = canio.LinkWatch("sbat1")
    ctx.threads.append(healthy)
    deaf = canio.Deafness("sbat2", heal=True)
    ctx.threads.append(deaf)
    t_deaf = deaf.since
    harness.wait_state(cap, deg, BOUNCE_AFTER + 3, "degraded state (sbat2 deaf, battery 2 stale)")
    bound = BOUNCE_AFTER + 5
    t_ok = harness.wait_state(cap, ok, max(bound - (time.monotonic() - t_deaf), 0.5),
                              f"ok state again (battery 2 fresh) within {bound}s of sbat2 turning deaf")
    bounces = deaf.watch.bounces()
    check(len(bounces) == 1, f"sbat2 taken down and up {len(bounces)} times, want 1: {bounces}")
    t_down, t_up = bounces[0]
    ctx.log(f"deaf at 0; bounced at {t_down - t_deaf:.2f}s (down for {1000 * (t_up - t_down):.0f} ms); "
            f"filter removed at {deaf.healed_at - t_deaf:.2f}s; battery 2 fresh (ok state) at "
            f"{t_ok - t_deaf:.2f}s (RECOVER-AFTER {BOUNCE_AFTER}, bound {bound}s)")
    # Silence counts from the last frame heard, at most one battery period
    # (1 s) before the filter went in.
    check(t_down - t_deaf > BOUNCE_AFTER - 1.2,
          f"bounced {t_down - t_deaf:.2f}s after turning deaf, before RECOVER-AFTER")
    got = wait_for(lambda: [e for e in dead_events() if e[0] == "interface_recovered"], 5, 0.2)
    check(got, f"no interface_recovered event within 5s of the recovery: {dead_events()}")
    # A second bounce could only come RECOVER-AFTER after the first: watch
    # that long (and a second more) for anything that should not happen.
    time.sleep(max(t_up + BOUNCE_AFTER + 1 - time.monotonic(), 0))
    t_end = time.monotonic()
    harness.check_window(cap, ok, t_ok + 0.5, t_end, "steady ok state after the recovery")
    gap = harness.max_gap(cap, t_deaf - 2, t_end)
    check(gap < 2.0, f"sinv1: {gap:.2f}s without frames while sbat2 was deaf and bounced")
    check(deaf.watch.bounces() == bounces, f"sbat2 bounced again: {deaf.watch.bounces()}")
    check(not healthy.downs, f"the healthy sbat1 was taken down too at {healthy.downs}")
    events = dead_events()
    check(events == [("interface_recovered", 2, None)],
          f"want exactly one interface_recovered of battery 2, got {events}")
    fig = link_figures("sbat2")
    check(fig == {"bounces": 1, "recoveries": 1, "recovery_failures": 0, "recovering": 0},
          f"sbat2 link figures in /metrics: {fig}")
    fig1 = link_figures("sbat1")
    check(fig1 == {"bounces": 0, "recoveries": 0, "recovery_failures": 0, "recovering": 0},
          f"sbat1 link figures in /metrics: {fig1}")
    check("took sbat2 down and up, try 1" in gw.log_text(), "no bounce line in the gateway's log")
    after = link_settings("sbat2")
    check(after == before, f"sbat2's settings changed by the bounce: before {before}, after {after}")
    bitrate = (before["can"].get("bittiming") or {}).get("bitrate")
    ctx.log(f"kept across the bounce: txqueuelen {after['txqlen']}"
            + (f", bit rate {bitrate}, restart-ms {before['can'].get('restart_ms')}"
               if bitrate else " (vcan has no bit rate)"))
    gateway_alive(gw)


MODELS = {"sinv1": INV1_MODEL, "sinv2": INV2_MODEL}


def two_by_two_ok(ctx):
    """Two batteries and two inverters on vcan, RECOVER-AFTER BACKOFF_AFTER,
    waited into the ok state: battery 1, the inverters' captures, the
    gateway and each inverter's ok expectation."""
    ctx.vcan("sbat1", "sbat2", "sinv1", "sinv2")
    a = ctx.battery("sbat1", bat_a())
    b = ctx.battery("sbat2", bat_b())
    caps = {"sinv1": ctx.capture("sinv1"), "sinv2": ctx.capture("sinv2")}
    gw = ctx.gateway(dead_config(inputs_cfg("sbat1", "sbat2"), [INV1, INV2], BACKOFF_AFTER))
    ok = {j: expect([(a.values, "sbat1"), (b.values, "sbat2")], m) for j, m in MODELS.items()}
    for j in caps:
        harness.wait_state(caps[j], ok[j], 20, "ok state")
    return a, caps, gw, ok


@scenario("dead_backoff", budget=150)
def dead_backoff(ctx):
    """A deaf input that stays deaf: bounces back off (3, then 6, 12, 24 s); the rest carries on."""
    a, caps, gw, ok = two_by_two_ok(ctx)
    deg = {j: expect([(a.values, "sbat1")], m, state="degraded") for j, m in MODELS.items()}
    others = [canio.LinkWatch(n) for n in ("sbat1", "sinv1", "sinv2")]
    ctx.threads.extend(others)
    deaf = canio.Deafness("sbat2", heal=False)
    ctx.threads.append(deaf)
    t_deaf = deaf.since
    t_deg = harness.wait_state(caps["sinv1"], deg["sinv1"], BACKOFF_AFTER + 5, "degraded state")
    # The rule: the first bounce RECOVER-AFTER after the last frame heard,
    # then RECOVER-AFTER doubled per bounce that did not help.
    want = [BACKOFF_AFTER * 2 ** k for k in (1, 2, 3)]
    timeout = BACKOFF_AFTER + sum(want) + 10
    got = wait_for(lambda: len(deaf.watch.bounces()) >= 4, timeout, 0.2)
    downs = [d for d, _ in deaf.watch.bounces()]
    check(got, f"{len(downs)} bounces within {timeout}s, want 4: at "
               f"{[round(d - t_deaf, 2) for d in downs]}s")
    t_end = time.monotonic()
    intervals = [b2 - b1 for b1, b2 in zip(downs, downs[1:])]
    ctx.log(f"deaf at 0; bounced at {', '.join(f'{d - t_deaf:.2f}' for d in downs)}s: intervals "
            f"{', '.join(f'{i:.2f}' for i in intervals)}s (rule: {want})")
    first = downs[0] - t_deaf
    check(BACKOFF_AFTER - 1.2 < first < BACKOFF_AFTER + 2.5,
          f"first bounce {first:.2f}s after turning deaf, RECOVER-AFTER is {BACKOFF_AFTER}")
    for got_s, want_s in zip(intervals, want):
        check(want_s - 0.5 < got_s < want_s + 2.5, f"bounce interval {got_s:.2f}s, rule {want_s}s "
                                                   f"(all: {intervals})")
    # The failed bounces are counted and told; the link is "recovering".
    # The 4th bounce's own failure may be judged meanwhile (RECOVER-AFTER
    # after it): 3 or 4 failures.
    fig = wait_for(lambda: (lambda f: f if f["bounces"] == 4 else None)(link_figures("sbat2")), 5,
                   0.2) or link_figures("sbat2")
    check(fig["bounces"] == 4 and fig["recoveries"] == 0 and fig["recovering"] == 1
          and fig["recovery_failures"] in (3, 4),
          f"sbat2 link figures in /metrics after the 4th bounce: {fig}")
    events = dead_events()
    check(events in ([("interface_recovery_failed", 2, None)] * n for n in (3, 4)),
          f"want 3 or 4 interface_recovery_failed of battery 2 and nothing else, got {events}")
    # Each failure says when the next try comes: the rule's interval less
    # the RECOVER-AFTER already waited for traffic after the bounce.
    told = {int(n): int(s) for n, s in
            re.findall(r"sbat2\): still dead after taking it down and up \(.*?, try (\d+)\); "
                       r"next try in (\d+) s", gw.log_text())}
    for n, w in enumerate(want, 1):
        check(n in told and abs(told[n] - (w - BACKOFF_AFTER)) <= 1,
              f"failure {n}: 'next try in {told.get(n)} s', want {w - BACKOFF_AFTER} (log: {told})")
    # Nothing else was touched, and the inverters never went without frames.
    for w in others:
        check(not w.downs, f"{w.iface} was taken down too, at {w.downs}")
    for j in caps:
        gap = harness.max_gap(caps[j], t_deaf - 2, t_end)
        check(gap < 2.0, f"{j}: {gap:.2f}s without frames while sbat2 stayed deaf")
        harness.check_window(caps[j], deg[j], t_deg + 0.5, t_end,
                             "degraded state (battery 1 only) through every bounce",
                             min_bursts=int(t_end - t_deg) // 2)
    check(link_figures("sbat1")["bounces"] == 0, "sbat1 counted a bounce")
    gateway_alive(gw)


@scenario("dead_output", budget=120)
def dead_output(ctx):
    """An output whose sends all fail (ENOBUFS), cured by a bounce: frames again, one event."""
    a, caps, gw, ok = two_by_two_ok(ctx)
    others = [canio.LinkWatch(n) for n in ("sbat1", "sbat2", "sinv1")]
    ctx.threads.extend(others)
    mute = canio.Deafness("sinv2", heal=True, side="egress")
    ctx.threads.append(mute)
    t_mute = mute.since
    # Transmissions fail from the next push (within a second); the rule
    # bounces RECOVER-AFTER after the first failure.
    bound = BACKOFF_AFTER + 5
    t_back = harness.wait_state(caps["sinv2"], ok["sinv2"], bound,
                                f"frames on sinv2 again within {bound}s of its sends failing")
    bounces = mute.watch.bounces()
    check(len(bounces) == 1, f"sinv2 taken down and up {len(bounces)} times, want 1: {bounces}")
    t_down, t_up = bounces[0]
    silent = [f.t for f in caps["sinv2"].since(t_mute, t_down)]
    ctx.log(f"sends fail from 0; last frame on sinv2 at {max(silent, default=t_mute) - t_mute:.2f}s; "
            f"bounced at {t_down - t_mute:.2f}s; filter removed at {mute.healed_at - t_mute:.2f}s; "
            f"frames (ok state) again at {t_back - t_mute:.2f}s (RECOVER-AFTER {BACKOFF_AFTER}, "
            f"bound {bound}s)")
    check(t_down - t_mute > BACKOFF_AFTER - 0.2,
          f"bounced {t_down - t_mute:.2f}s after the sends began to fail, before RECOVER-AFTER")
    got = wait_for(lambda: [e for e in dead_events() if e[0] == "interface_recovered"], 5, 0.2)
    check(got, f"no interface_recovered event within 5s of the recovery: {dead_events()}")
    time.sleep(max(t_up + BACKOFF_AFTER + 1 - time.monotonic(), 0))
    t_end = time.monotonic()
    harness.check_window(caps["sinv2"], ok["sinv2"], t_back + 0.5, t_end, "steady ok state on sinv2")
    gap = harness.max_gap(caps["sinv1"], t_mute - 2, t_end)
    check(gap < 2.0, f"sinv1: {gap:.2f}s without frames while sinv2 could not send")
    check(mute.watch.bounces() == bounces, f"sinv2 bounced again: {mute.watch.bounces()}")
    for w in others:
        check(not w.downs, f"{w.iface} was taken down too, at {w.downs}")
    events = dead_events()
    check(events == [("interface_recovered", None, 2)],
          f"want exactly one interface_recovered of inverter 2, got {events}")
    fig = link_figures("sinv2", "inverter")
    check(fig == {"bounces": 1, "recoveries": 1, "recovery_failures": 0, "recovering": 0},
          f"sinv2 link figures in /metrics: {fig}")
    check("inverter 2 (sinv2): every transmission fails for 3 s: took sinv2 down and up, try 1"
          in gw.log_text(), "no bounce line for sinv2 in the gateway's log")
    gateway_alive(gw)
