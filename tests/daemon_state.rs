//! The real daemon and its state directory: the energy counters survive a
//! restart, a corrupt state file is moved aside without stopping the start,
//! and `bms-gateway status` reads the running daemon's status server.
//! (No CAN interface exists here: the daemon retries them, which is all
//! these tests need.)

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod daemon;

use daemon::{BIN, Daemon};

const CONFIG: &str = r#"GATEWAY-ACTIVATED = true
[[bmses-in]]
CAN-IF = "nocan0"
CAPACITY-AH = 100
[[bmses-out]]
CAN-IF = "nocan1"
[mqtt]
ACTIVATED = false
[http]
LISTEN = "127.0.0.1:0"
"#;

/// Counters as a previous run saved them.
const SAVED: &str = r#"{"version": 1, "saved_at": 1700000000.0, "energy": {
  "system": {"charged_kwh": 123.456, "discharged_kwh": 100.5},
  "batteries": [{"can_if": "nocan0", "charged_kwh": 23.456, "discharged_kwh": 0.5}]}}"#;

/// The status page's URL from the daemon's log.
fn url(d: &Daemon) -> String {
    assert!(d.wait_log("status page on ", Duration::from_secs(10)), "{}", d.log());
    let log = d.log();
    let line = log.lines().find(|l| l.contains("status page on ")).unwrap();
    line.split("status page on ").nth(1).unwrap().trim().to_string()
}

fn status(url: &str) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(["status", "--url", url]).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn saved(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("state/state.json")).unwrap()).unwrap()
}

#[test]
fn counters_survive_restarts_and_status_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/state.json"), SAVED).unwrap();
    for run in 0..2 {
        let mut d = Daemon::start(&cfg);
        let url = url(&d);
        let (code, table, err) = status(&url);
        assert_eq!(code, Some(0), "run {run}: {err}");
        // The system's totals as saved (and the battery's in its row).
        assert!(
            table.contains("energy: 123.456 kWh charged, 100.500 kWh discharged"),
            "run {run}: {table}"
        );
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait_exit().0, Some(0), "{}", d.log());
        let s = saved(dir.path());
        assert_eq!(s["energy"]["system"]["charged_kwh"], 123.456, "run {run}: {s}");
        assert_eq!(s["energy"]["batteries"][0]["can_if"], "nocan0");
        assert_eq!(s["energy"]["batteries"][0]["charged_kwh"], 23.456);
    }
    // No gateway: a clear message and exit 1.
    let (code, _, err) = status("http://127.0.0.1:9/");
    assert_eq!(code, Some(1));
    assert!(err.contains("no gateway answers at http://127.0.0.1:9/"), "{err}");
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/state.json"), &SAVED[..40]).unwrap();
    let mut d = Daemon::start(&cfg);
    assert!(d.wait_log("moved aside to", Duration::from_secs(10)), "{}", d.log());
    let _ = url(&d);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().0, Some(0));
    let names: Vec<String> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("state.json.corrupt-")), "{names:?}");
    // Replaced by a fresh, loadable state at stop.
    assert_eq!(saved(dir.path())["energy"]["system"]["charged_kwh"], 0.0);
}

/// Waits until the log holds `n` lines with `needle`.
fn wait_count(d: &Daemon, needle: &str, n: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if d.log().matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_reload_keeps_the_status_server_and_the_counters_by_can_interface() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/state.json"), SAVED).unwrap();
    let mut d = Daemon::start(&cfg);
    let url = url(&d);
    // A battery added in front: nocan0 becomes battery 2 with its counters.
    let added = CONFIG.replacen(
        "[[bmses-in]]",
        "[[bmses-in]]\nCAN-IF = \"nocan2\"\nCAPACITY-AH = 100\n[[bmses-in]]",
        1,
    );
    std::fs::write(&cfg, &added).unwrap();
    d.signal(libc::SIGHUP);
    assert!(wait_count(&d, "configuration reloaded", 1), "{}", d.log());
    // The same server (same address) shows the new configuration.
    let (code, table, err) = status(&url);
    assert_eq!(code, Some(0), "{err}");
    assert!(table.contains("2        nocan0"), "{table}");
    assert!(table.contains("1        nocan2"), "{table}");
    assert!(
        table.contains("energy: 123.456 kWh charged, 100.500 kWh discharged"),
        "{table}"
    );
    // nocan0 removed: its counters leave the file, the system's totals stay.
    let removed = added.replacen("CAN-IF = \"nocan0\"\nCAPACITY-AH = 100\n", "", 1);
    let removed = removed.replacen("[[bmses-in]]\n[[bmses-out]]", "[[bmses-out]]", 1);
    std::fs::write(&cfg, &removed).unwrap();
    d.signal(libc::SIGHUP);
    assert!(wait_count(&d, "configuration reloaded", 2), "{}", d.log());
    let (_, table, _) = status(&url);
    assert!(
        table.contains("energy: 123.456 kWh charged, 100.500 kWh discharged"),
        "{table}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().0, Some(0), "{}", d.log());
    let s = saved(dir.path());
    assert_eq!(s["energy"]["system"]["charged_kwh"], 123.456, "{s}");
    assert_eq!(s["energy"]["system"]["discharged_kwh"], 100.5, "{s}");
    let batteries = s["energy"]["batteries"].as_array().unwrap();
    assert_eq!(batteries.len(), 1, "{s}");
    assert_eq!(batteries[0]["can_if"], "nocan2");
    assert_eq!(batteries[0]["charged_kwh"], 0.0);
}

/// The names of a process's threads, from /proc (what `top -H` shows).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn every_thread_of_the_daemon_is_named_for_its_work() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let mut d = Daemon::start(&cfg);
    // The status server starts after the CAN interfaces were tried: by then
    // every thread of this configuration runs.
    let _ = url(&d);
    let names = thread_names(d.child.id());
    for expected in [
        "combiner",
        "gateway",
        "http",
        "http-history",
        "in-nocan0",
        "mqtt-lane",
        "out-nocan1",
        "recorder",
        "signals",
        "state-saver",
    ] {
        assert!(names.iter().any(|n| n == expected), "no thread {expected}: {names:?}");
    }
    // Only the main thread keeps the program's name.
    assert_eq!(names.iter().filter(|n| *n == "bms-gateway").count(), 1, "{names:?}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().0, Some(0), "{}", d.log());
}
