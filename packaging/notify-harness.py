#!/usr/bin/env python3
"""A stand-in for systemd's notify socket and service watchdog, for test-deb.sh.

Runs a command the way systemd runs a Type=notify service with WatchdogSec=:
binds an AF_UNIX datagram socket, starts the command with NOTIFY_SOCKET,
WATCHDOG_USEC and WATCHDOG_PID (= the child's own pid, as systemd sets it),
records every datagram with its arrival time, and, like systemd, sends
SIGABRT when no WATCHDOG=1 arrived for WATCHDOG_USEC (plus a small slack for
a loaded CI machine). Then it checks what --expect asks for and prints one
line per check:

    CHECK ok: READY=1 within 5 s (at 0.02 s)
    CHECK fail: ...

Exit status: the number of failed checks (0 = all passed).

--expect healthy: READY=1 soon, WATCHDOG=1 regularly and never too late, a
    clean exit with status 0 by itself, STOPPING=1 before it.
--expect hang: READY=1, then the pings stop within a few seconds, the
    watchdog fires (SIGABRT) before the command would have ended, and stderr
    names the hung thread (--hung-name).

This needs no systemd: CI machines run without systemd as PID 1.
"""

import argparse
import os
import resource
import select
import signal
import socket
import sys
import tempfile
import time


def run(args):
    """Runs the command under the fake service manager; returns a record."""
    sock_dir = tempfile.mkdtemp(prefix="bms-notify-")
    path = os.path.join(sock_dir, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    wd = args.watchdog_usec / 1e6 if args.watchdog_usec else None

    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        try:
            env = dict(os.environ)
            env["NOTIFY_SOCKET"] = path
            if args.watchdog_usec:
                env["WATCHDOG_USEC"] = str(args.watchdog_usec)
                env["WATCHDOG_PID"] = str(os.getpid())
            # No core dump from the watchdog's SIGABRT.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            out = os.open(args.stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            err = os.open(args.stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.execvpe(args.command[0], args.command, env)
        except BaseException as e:  # noqa: BLE001 - report anything, then leave
            os.write(2, f"exec failed: {e}\n".encode())
        os._exit(127)

    messages = []  # (seconds since start, "KEY=VALUE")
    last_ping = start  # systemd arms the watchdog when it starts the service
    watchdog_fired_at = None
    timed_out = False
    status = None

    def drain(timeout):
        ready, _, _ = select.select([sock], [], [], timeout)
        while ready:
            data = sock.recv(4096)
            now = time.monotonic()
            for line in data.decode(errors="replace").splitlines():
                if line:
                    messages.append((now - start, line))
            ready, _, _ = select.select([sock], [], [], 0)

    while status is None:
        drain(0.02)
        now = time.monotonic()
        for t, line in messages:
            if line == "WATCHDOG=1" and start + t > last_ping:
                last_ping = start + t
        if wd and watchdog_fired_at is None and now - last_ping > wd + args.slack:
            watchdog_fired_at = now - start
            os.kill(pid, signal.SIGABRT)
        if now - start > args.timeout and not timed_out:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
    drain(0.1)
    sock.close()
    os.unlink(path)
    os.rmdir(sock_dir)
    return {
        "messages": messages,
        "elapsed": time.monotonic() - start,
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "watchdog_fired_at": watchdog_fired_at,
        "timed_out": timed_out,
    }


def check(results, ok, text):
    results.append(ok)
    print(f"CHECK {'ok' if ok else 'fail'}: {text}")


def evaluate(args, rec):
    msgs = rec["messages"]
    times = lambda key: [t for t, m in msgs if m == key]  # noqa: E731
    ready = times("READY=1")
    pings = times("WATCHDOG=1")
    results = []
    wd = args.watchdog_usec / 1e6
    print(
        f"  ran {rec['elapsed']:.1f} s, exit code {rec['exit_code']}, signal {rec['signal']}, "
        f"{len(pings)} WATCHDOG=1, READY at {[round(t, 2) for t in ready]}, "
        f"watchdog fired at {rec['watchdog_fired_at']}"
    )
    other = sorted({m.split("=", 1)[0] for _, m in msgs} - {"READY", "WATCHDOG"})
    print(f"  other notifications: {other}")

    check(results, bool(ready) and ready[0] <= 5.0,
          f"READY=1 within 5 s (at {ready[0]:.2f} s)" if ready else "READY=1 within 5 s (never sent)")
    if args.expect == "healthy":
        gaps = [b - a for a, b in zip([0.0] + pings, pings)]
        max_gap = max(gaps) if gaps else None
        want = max(3, int((args.duration - 2) / wd))
        check(results, len(pings) >= want,
              f"at least {want} WATCHDOG=1 in {args.duration} s (got {len(pings)})")
        check(results, rec["watchdog_fired_at"] is None,
              "watchdog never expired (max gap between pings "
              + (f"{max_gap:.2f} s" if max_gap is not None else "n/a")
              + f", limit {wd:.2f} s + {args.slack} s slack)")
        check(results, rec["exit_code"] == 0 and not rec["timed_out"],
              f"exited by itself with status 0 (status {rec['exit_code']}, signal {rec['signal']})")
        stopping = times("STOPPING=1")
        check(results, bool(stopping), "STOPPING=1 sent before exit")
    else:
        late = [t for t in pings if t > args.hang_by]
        check(results, not late,
              f"no WATCHDOG=1 after {args.hang_by} s (last ping at "
              + (f"{pings[-1]:.2f} s)" if pings else "never)"))
        fired = rec["watchdog_fired_at"]
        check(results, fired is not None and fired < args.duration,
              f"watchdog expired before the {args.duration} s run ended (at {fired})")
        check(results, rec["signal"] == signal.SIGABRT,
              f"process ended by the watchdog's SIGABRT (signal {rec['signal']}, exit {rec['exit_code']})")
        try:
            with open(args.stderr, errors="replace") as f:
                err = f.read()
        except OSError:
            err = ""
        check(results, args.hung_name in err,
              f"stderr names the hung thread '{args.hung_name}'")
    return results.count(False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--expect", choices=["healthy", "hang"], required=True)
    ap.add_argument("--watchdog-usec", type=int, default=1_000_000)
    ap.add_argument("--slack", type=float, default=0.3,
                    help="seconds of grace past WATCHDOG_USEC before SIGABRT")
    ap.add_argument("--duration", type=float, required=True,
                    help="how long the command runs by itself (its --duration)")
    ap.add_argument("--hang-by", type=float, default=3.0,
                    help="hang case: no ping may come after this many seconds")
    ap.add_argument("--hung-name", default="combiner")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--stdout", default=os.devnull)
    ap.add_argument("--stderr", required=True)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        ap.error("no command given")
    rec = run(args)
    sys.exit(evaluate(args, rec))


if __name__ == "__main__":
    main()
