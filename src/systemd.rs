//! Running as a systemd service: readiness, reloads, the status line and the
//! watchdog, through the `sd_notify` protocol for `Type=notify` units.
//! Outside systemd (no `NOTIFY_SOCKET`) every notification is a no-op.
//!
//! * [`notify_ready`], [`notify_reloading`], [`notify_stopping`],
//!   [`notify_status`]: the states systemd shows.
//! * [`watchdog_interval`], [`notify_watchdog`]: the daemon pings the systemd
//!   watchdog only while every worker thread has shown a heartbeat since the
//!   previous check (crate::liveness), so a hung thread (not only a dead
//!   process) makes systemd restart the gateway.
//!
//! Reload protocol for systemd 252 (`Type=notify`): send [`notify_reloading`]
//! when SIGHUP arrives and [`notify_ready`] again when the reload is done, valid
//! config or not; until then systemd shows the unit as "reloading".

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends states to systemd; outside systemd (no `NOTIFY_SOCKET`) this does
/// nothing. A failure is logged at debug level only: the gateway must keep
/// running whether or not a service manager listens.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify failed: {e}");
    }
}

/// `READY=1`: call once every CAN interface has been opened (or attempted),
/// and again after each reload.
pub fn notify_ready() {
    notify(&[NotifyState::Ready]);
}

/// `RELOADING=1` on SIGHUP. `MONOTONIC_USEC` is required by systemd 253+
/// (`Type=notify-reload`) and ignored by 252. Follow with [`notify_ready`].
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1` when shutting down.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping]);
}

/// `STATUS=...`, shown by `systemctl status`. Newlines would end the
/// assignment early in the protocol, so they become spaces.
pub fn notify_status(s: &str) {
    let one_line = s.replace(['\n', '\r'], " ");
    notify(&[NotifyState::Status(&one_line)]);
}

/// How often to check liveness and ping the watchdog: half of `WatchdogSec=`
/// (systemd's advice), or `None` when the watchdog is off or meant for
/// another process (`WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(ping_period)
}

fn ping_period(watchdog: Duration) -> Duration {
    watchdog / 2
}

/// `WATCHDOG=1`. Only call it after [`Liveness::all_alive_since_last_check`]
/// returned `Ok`.
pub fn notify_watchdog() {
    notify(&[NotifyState::Watchdog]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::Liveness;

    /// Environment marker: set only in the child that
    /// `notify_protocol_against_a_socket` starts.
    const CHILD_MARK: &str = "BMS_SERVICE_TEST_CHILD";

    /// Plays a daemon under systemd; does nothing in a normal test run. Its
    /// notifications are read by `notify_protocol_against_a_socket`.
    #[test]
    fn notify_child() {
        if std::env::var_os(CHILD_MARK).is_none() {
            return;
        }
        let Some(period) = watchdog_interval() else {
            notify_status("no-watchdog");
            return;
        };
        notify_ready();
        notify_status("line one\nline two");
        let mut live = Liveness::new();
        let worker = live.register("worker");
        for round in 0..4 {
            // The worker beats in the first two rounds only, then "hangs".
            if round < 2 {
                worker.beat();
            }
            std::thread::sleep(period);
            match live.all_alive_since_last_check() {
                Ok(()) => notify_watchdog(),
                Err(names) => notify_status(&format!("hung: {}", names.join(","))),
            }
        }
        notify_reloading();
        notify_stopping();
    }

    /// Runs `notify_child` in a child process (this test binary again) with
    /// NOTIFY_SOCKET and WATCHDOG_USEC pointing at a socket of ours, the way
    /// systemd starts a Type=notify service, and reads what it sends.
    fn run_child(watchdog_pid: Option<u32>) -> Vec<String> {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "systemd::tests::notify_child", "--nocapture"])
            .env(CHILD_MARK, "1")
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000")
            .stdout(std::process::Stdio::null());
        if let Some(pid) = watchdog_pid {
            cmd.env("WATCHDOG_PID", pid.to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => lines.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string)),
                Err(_) => {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    assert!(std::time::Instant::now() < deadline, "child hangs");
                }
            }
        }
        assert!(child.wait().unwrap().success());
        lines
    }

    #[test]
    fn notify_protocol_against_a_socket() {
        let got = run_child(None);
        let expected_start = [
            "READY=1",
            "STATUS=line one line two",
            "WATCHDOG=1",
            "WATCHDOG=1",
            "STATUS=hung: worker",
            "STATUS=hung: worker",
            "RELOADING=1",
        ];
        assert_eq!(&got[..expected_start.len()], &expected_start[..], "{got:?}");
        let rest = &got[expected_start.len()..];
        assert_eq!(rest.len(), 2, "{got:?}");
        assert!(rest[0].starts_with("MONOTONIC_USEC="), "{got:?}");
        assert_eq!(rest[1], "STOPPING=1");
    }

    #[test]
    fn watchdog_meant_for_another_pid_is_off() {
        // WATCHDOG_PID names a process that is not the child: as under
        // systemd when the variable was inherited, the child must not ping.
        let got = run_child(Some(std::process::id()));
        assert_eq!(got, ["STATUS=no-watchdog"]);
    }
}
