//! The real daemon and its state directory: the energy counters survive a
//! restart, a corrupt state file is moved aside without stopping the start,
//! and `bms-gateway status` reads the running daemon's status server.
//! (No CAN interface exists here: the daemon retries them, which is all
//! these tests need.)

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod config_text;
mod daemon;

use config_text::ConfigText;
use daemon::{BIN, Daemon};

/// A battery on each of `batteries`, 100 Ah, one inverter; no MQTT; the
/// status server on a free loopback port.
fn config(batteries: &[&str]) -> String {
    let text = batteries.iter().fold(ConfigText::new(), |t, b| t.input(b, 100.0, ""));
    text.output("nocan1", "")
        .mqtt("ACTIVATED = false")
        .http("LISTEN = \"127.0.0.1:0\"")
        .text()
}

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
    std::fs::write(&cfg, config(&["nocan0"])).unwrap();
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
    std::fs::write(&cfg, config(&["nocan0"])).unwrap();
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

/// Whether a line of `status`'s table begins with these cells.
fn has_row(table: &str, first: &[&str]) -> bool {
    table
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>().starts_with(first))
}

#[test]
fn a_reload_keeps_the_status_server_and_the_counters_by_can_interface() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, config(&["nocan0"])).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/state.json"), SAVED).unwrap();
    let mut d = Daemon::start(&cfg);
    let url = url(&d);
    // A battery added in front: nocan0 becomes battery 2 with its counters.
    let added = config(&["nocan2", "nocan0"]);
    std::fs::write(&cfg, &added).unwrap();
    d.signal(libc::SIGHUP);
    assert!(wait_count(&d, "configuration reloaded", 1), "{}", d.log());
    // The same server (same address) shows the new configuration.
    let (code, table, err) = status(&url);
    assert_eq!(code, Some(0), "{err}");
    assert!(has_row(&table, &["2", "nocan0"]), "{table}");
    assert!(has_row(&table, &["1", "nocan2"]), "{table}");
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
    std::fs::write(&cfg, config(&["nocan0"])).unwrap();
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

/// GET `path` from the daemon's status page at `url` (`http://ADDR/`).
fn http_get(url: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out[9..12].parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The status page's history survives restarts: the daemon serves what
/// STATE-DIR/history.bin held, adds its own rows, and writes both back at
/// stop (and every minute, through the state saver).
#[test]
fn the_history_survives_restarts() {
    use bms_gateway::history::{self, History, Sample};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, config(&["nocan0"])).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // 30 rows of a previous run, ten minutes ago.
    let now = unix_now();
    let base = now - now % 10 - 600;
    let mut h = History::new(1, 1);
    for n in 0..30 {
        let sample = Sample {
            bank: [
                Some(60.0 + n as f64 / 10.0),
                Some(52.1),
                Some(-3.5),
                Some(21.0),
                Some(50.0),
                Some(40.0),
            ],
            batteries: vec![[Some(55.5), Some(-3.5), Some(1.0), Some(22.5), None, None]],
            inverters: vec![[Some(12.3), Some(4.5)]],
            ..Sample::default()
        };
        h.push(base + n * 10, &sample);
    }
    std::fs::write(state.join("history.bin"), history::encode(&h)).unwrap();
    for run in 0..2 {
        let started = unix_now();
        let mut d = Daemon::start(&cfg);
        let url = url(&d);
        let (code, body) = http_get(&url, &format!("/api/history?since={base}&step=10"));
        assert_eq!(code, 200, "run {run}: {body}");
        let t: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(t["start"], base, "run {run}: {body}");
        assert_eq!(t["bank"]["soc"][0], 60.0, "run {run}");
        assert_eq!(t["bank"]["soc"][29], 62.9, "run {run}");
        assert_eq!(t["batteries"][0]["soc"][0], 55.5, "run {run}");
        assert_eq!(t["inverters"][0]["i_lim_charge"][29], 12.3, "run {run}");
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait_exit().0, Some(0), "{}", d.log());
        let saved = history::decode(&std::fs::read(state.join("history.bin")).unwrap()).unwrap();
        // The daemon's own rows (at least the one of its start) were saved too.
        assert!(saved.newest().unwrap() >= started - started % 10, "run {run}");
        let table = saved.table(Some(base), Some(10));
        assert_eq!(table.bank["soc"].as_ref().unwrap()[29], Some(62.9), "run {run}");
    }
}

#[test]
fn a_damaged_history_file_is_moved_aside_and_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, config(&["nocan0"])).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("history.bin"), b"BMSGHIST and then garbage").unwrap();
    let mut d = Daemon::start(&cfg);
    assert!(d.wait_log("history file", Duration::from_secs(10)), "{}", d.log());
    let (code, _) = http_get(&url(&d), "/api/history");
    assert_eq!(code, 200);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().0, Some(0));
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("history.bin.corrupt-")), "{names:?}");
    // Replaced by a loadable history at stop.
    let bytes = std::fs::read(state.join("history.bin")).unwrap();
    assert!(bms_gateway::history::decode(&bytes).is_ok());
}
