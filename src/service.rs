//! Running as a systemd service: logging, readiness, reloads and the watchdog.
//!
//! Everything here works the same outside systemd: the notifications are no-ops
//! when `NOTIFY_SOCKET` is not set, and logging falls back to a terminal format.
//!
//! * [`init_logging`]: env_logger. Under journald (`JOURNAL_STREAM` names our
//!   stderr) every line is written as `<N>message`, where `N` is the syslog
//!   priority, so journald keeps the level and adds its own timestamp; on a
//!   terminal or in a file the line carries a timestamp, level and module.
//! * [`notify_ready`], [`notify_reloading`], [`notify_stopping`],
//!   [`notify_status`]: the `sd_notify` protocol for `Type=notify` units.
//! * [`watchdog_interval`], [`notify_watchdog`] and [`Liveness`]: the daemon
//!   pings the systemd watchdog only while every worker thread has shown a
//!   heartbeat since the previous check, so a hung thread (not only a dead
//!   process) makes systemd restart the gateway.
//!
//! Reload protocol for systemd 252 (`Type=notify`): send [`notify_reloading`]
//! when SIGHUP arrives and [`notify_ready`] again when the reload is done, valid
//! config or not; until then systemd shows the unit as "reloading".

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::Level;
use sd_notify::NotifyState;

/// The crate's own module prefix: `-v` raises it to debug without also
/// turning on the libraries' debug output (rumqttc logs every packet).
const OWN_CRATE: &str = "bms_gateway";

/// Sets up env_logger for the whole process. Call once, early in `main`.
///
/// The filter is `RUST_LOG` when set (default `info`); `verbose` (`-v`) adds
/// `bms_gateway=debug` on top. A second call is harmless (it is ignored).
pub fn init_logging(verbose: bool) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter_spec(rust_log.as_deref(), verbose));
    if stderr_is_journal() {
        // journald stamps every line itself; a second timestamp and the level
        // word would only be noise. The `<N>` prefix is parsed by journald
        // into PRIORITY=, so `journalctl -p warning` keeps working.
        builder.format(|buf, record| {
            let line = journal_line(record.level(), &record.args().to_string());
            buf.write_all(line.as_bytes())
        });
    } else {
        builder
            .format_timestamp_millis()
            .format_module_path(false)
            .format_level(true);
    }
    let _ = builder.try_init();
}

/// The env_logger filter directives for `RUST_LOG` (if set) and `-v`.
fn filter_spec(rust_log: Option<&str>, verbose: bool) -> String {
    let base = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    if verbose {
        // A later directive for the same module replaces an earlier one.
        format!("{base},{OWN_CRATE}=debug")
    } else {
        base.to_string()
    }
}

/// Syslog priority for a log level, as journald reads it from `<N>`.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One record as journald wants it on a stream: every line of a multi-line
/// message gets the prefix, or journald would log the continuation lines at
/// the default priority (info).
fn journal_line(level: Level, message: &str) -> String {
    let prefix = format!("<{}>", syslog_priority(level));
    let mut out = String::with_capacity(message.len() + 8);
    for line in message.split('\n') {
        out.push_str(&prefix);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// True when stderr is the stream journald gave us. systemd sets
/// `JOURNAL_STREAM=<device>:<inode>` of that stream; comparing it with
/// stderr's own device and inode (as sd_journal_stream_fd(3) recommends)
/// avoids the journal format when stderr was redirected, e.g. when an
/// operator runs `bms-gateway check` from a shell inside a service.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = parse_journal_stream(&value.to_string_lossy()) else {
        return false;
    };
    match stderr_dev_ino() {
        Some((d, i)) => d == dev && i == ino,
        // Cannot tell: trust the variable, which only systemd sets.
        None => true,
    }
}

fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

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

/// A registry of heartbeats, one per worker thread that must not hang.
///
/// The main loop calls [`Liveness::all_alive_since_last_check`] every
/// [`watchdog_interval`] and pings the watchdog only when it returns `Ok`.
#[derive(Debug, Default)]
pub struct Liveness {
    entries: Mutex<Vec<Entry>>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    counter: Arc<AtomicU64>,
    /// Counter value seen at the previous check.
    seen: u64,
}

/// One thread's heartbeat. Cloning shares the counter.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    counter: Arc<AtomicU64>,
}

impl Heartbeat {
    /// Records that the owning thread is alive. One relaxed atomic add: cheap
    /// enough for every loop iteration. The counter wraps after 2^64 beats,
    /// which does not happen.
    pub fn beat(&self) {
        self.counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Liveness {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a heartbeat under `name` (used in the error naming a hung thread).
    /// A heartbeat that has not beaten by the next check counts as hung.
    pub fn register(&self, name: &str) -> Heartbeat {
        let counter = Arc::new(AtomicU64::new(0));
        let entry = Entry {
            name: name.to_string(),
            counter: Arc::clone(&counter),
            seen: 0,
        };
        // A poisoned lock only means another thread panicked while
        // registering; the list itself is still sound.
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
        Heartbeat { counter }
    }

    /// Removes `heartbeat` (its thread has been stopped on purpose).
    pub fn forget(&self, heartbeat: &Heartbeat) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| !Arc::ptr_eq(&e.counter, &heartbeat.counter));
    }

    /// `Ok` when every registered heartbeat has beaten since the previous
    /// call (or since it was registered), else the names of those that did
    /// not, in registration order. With no heartbeats registered it is `Ok`.
    pub fn all_alive_since_last_check(&mut self) -> Result<(), Vec<String>> {
        let entries = self.entries.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut silent = Vec::new();
        for entry in entries.iter_mut() {
            let now = entry.counter.load(Ordering::Relaxed);
            if now == entry.seen {
                silent.push(entry.name.clone());
            }
            entry.seen = now;
        }
        if silent.is_empty() { Ok(()) } else { Err(silent) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_reports_only_silent_heartbeats() {
        let mut live = Liveness::new();
        let can0 = live.register("can0");
        let combiner = live.register("combiner");
        // Nothing has beaten since registration.
        assert_eq!(
            live.all_alive_since_last_check(),
            Err(vec!["can0".to_string(), "combiner".to_string()])
        );
        can0.beat();
        combiner.beat();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        // Only can0 beats: the combiner is named, can0 is not.
        can0.beat();
        assert_eq!(live.all_alive_since_last_check(), Err(vec!["combiner".to_string()]));
        // A check resets the window: beating once again is enough.
        can0.beat();
        combiner.beat();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
    }

    #[test]
    fn a_forgotten_heartbeat_no_longer_counts() {
        let mut live = Liveness::new();
        let a = live.register("a");
        let b = live.register("b");
        a.beat();
        b.beat();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        live.forget(&b);
        a.beat();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        assert_eq!(live.all_alive_since_last_check(), Err(vec!["a".to_string()]));
    }

    #[test]
    fn liveness_without_heartbeats_is_ok() {
        let mut live = Liveness::new();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
    }

    #[test]
    fn many_beats_count_as_one_alive_window() {
        let mut live = Liveness::new();
        let hb = live.register("x");
        for _ in 0..1000 {
            hb.beat();
        }
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        assert_eq!(live.all_alive_since_last_check(), Err(vec!["x".to_string()]));
    }

    #[test]
    fn clones_share_the_heartbeat_and_work_across_threads() {
        let mut live = Liveness::new();
        let hb = live.register("worker");
        let clone = hb.clone();
        std::thread::spawn(move || clone.beat()).join().unwrap();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        drop(hb);
        // A thread that dropped its heartbeat (exited) counts as hung.
        assert_eq!(live.all_alive_since_last_check(), Err(vec!["worker".to_string()]));
    }

    #[test]
    fn register_works_through_a_shared_reference() {
        let mut live = Liveness::new();
        let beats: Vec<Heartbeat> = std::thread::scope(|s| {
            let live = &live;
            let handles: Vec<_> = (0..4)
                .map(|i| s.spawn(move || live.register(&format!("t{i}"))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for b in &beats {
            b.beat();
        }
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
    }

    #[test]
    fn heartbeat_is_send_and_clone() {
        fn assert_send_clone<T: Send + Sync + Clone + 'static>() {}
        assert_send_clone::<Heartbeat>();
    }

    #[test]
    fn syslog_priorities() {
        assert_eq!(syslog_priority(Level::Error), 3);
        assert_eq!(syslog_priority(Level::Warn), 4);
        assert_eq!(syslog_priority(Level::Info), 6);
        assert_eq!(syslog_priority(Level::Debug), 7);
        assert_eq!(syslog_priority(Level::Trace), 7);
    }

    #[test]
    fn journal_lines_have_a_prefix_and_no_timestamp() {
        assert_eq!(journal_line(Level::Warn, "can0: bus-off"), "<4>can0: bus-off\n");
        assert_eq!(
            journal_line(Level::Error, "bad config\n  line 3"),
            "<3>bad config\n<3>  line 3\n"
        );
    }

    #[test]
    fn filter_spec_honours_rust_log_and_verbose() {
        assert_eq!(filter_spec(None, false), "info");
        assert_eq!(filter_spec(Some("  "), false), "info");
        assert_eq!(filter_spec(None, true), "info,bms_gateway=debug");
        assert_eq!(filter_spec(Some("warn"), false), "warn");
        assert_eq!(filter_spec(Some("warn"), true), "warn,bms_gateway=debug");
    }

    #[test]
    fn journal_stream_parsing() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:12345\n"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("garbage"), None);
        assert_eq!(parse_journal_stream("8:x"), None);
    }

    #[test]
    fn watchdog_ping_period_is_half() {
        assert_eq!(ping_period(Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(
            ping_period(Duration::from_micros(1_000_000)),
            Duration::from_millis(500)
        );
    }

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
        cmd.args(["--exact", "service::tests::notify_child", "--nocapture"])
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

    /// Logs a few records after `init_logging`, in a child process only (the
    /// logger is global); `logging_formats` reads its stderr.
    #[test]
    fn logging_child() {
        if std::env::var_os(CHILD_MARK).is_none() {
            return;
        }
        init_logging(std::env::var_os("CHILD_VERBOSE").is_some());
        log::error!("boom\nsecond line");
        log::warn!("careful");
        log::info!("hello");
        log::debug!("details");
    }

    /// Runs `logging_child` with stderr going to a file; `journal` sets
    /// JOURNAL_STREAM to that file's device and inode, as systemd does for
    /// the stream it connects to journald.
    fn run_logging_child(journal: bool, verbose: bool) -> String {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "service::tests::logging_child", "--nocapture"])
            .env(CHILD_MARK, "1")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdout(std::process::Stdio::null())
            .stderr(file);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        if verbose {
            cmd.env("CHILD_VERBOSE", "1");
        }
        assert!(cmd.status().unwrap().success());
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn logging_formats() {
        // Under journald: priority prefixes, no timestamps, no level words.
        assert_eq!(
            run_logging_child(true, false),
            "<3>boom\n<3>second line\n<4>careful\n<6>hello\n"
        );
        assert!(run_logging_child(true, true).ends_with("<6>hello\n<7>details\n"));
        // On a terminal (or a file without JOURNAL_STREAM): timestamp, level
        // and module, e.g. "[2026-11-24T03:00:00.123Z INFO  bms_gateway::...] hello".
        let plain = run_logging_child(false, false);
        let hello = plain.lines().find(|l| l.ends_with("hello")).unwrap();
        assert!(hello.starts_with('['), "{plain}");
        assert!(hello.contains("Z INFO "), "{plain}");
        assert!(hello.contains("bms_gateway::service::tests]"), "{plain}");
        assert!(!plain.contains("details"), "{plain}");
        assert!(!plain.contains('<'), "{plain}");
    }

    #[test]
    fn notifications_are_noops_outside_systemd() {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            // Running under a service manager: do not tell it anything.
            return;
        }
        notify_ready();
        notify_reloading();
        notify_status("line one\nline two");
        notify_watchdog();
        notify_stopping();
    }
}
