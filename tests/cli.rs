//! The `bms-gateway` binary as a user runs it: exit codes, messages, files,
//! signals.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod config_text;
mod daemon;

use config_text::ConfigText;
use daemon::{BIN, Daemon};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("BMS_GATEWAY_CONFIG")
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One battery and one inverter on interfaces that do not exist, no MQTT.
fn valid() -> String {
    ConfigText::new()
        .input("nocan0", 100.0, "")
        .output("nocan1", "")
        .mqtt("ACTIVATED = false")
        .text()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn decode_prints_the_reference_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "capture.log",
        "(1700000000.100000) can0 351#1402C012C012C201\n(1700000000.200000) can0 355#58005E00\ngarbage\n",
    );
    let (code, out, _) = run(&["decode", &log]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        r#"{"id":"0x351","iface":"can0","ts":1700000000.1,"v_charge_cmd":53.2,"i_lim_charge":480.0,"i_lim_discharge":480.0,"v_discharge_min":45.0}"#
    );
    assert_eq!(
        lines[1],
        r#"{"id":"0x355","iface":"can0","ts":1700000000.2,"soc":88.0,"soh":94.0}"#
    );
    assert!(
        lines[2].starts_with(r#"{"error":"#) && lines[2].ends_with(r#""line":3}"#),
        "{}",
        lines[2]
    );
}

#[test]
fn decode_rs485_prints_the_reference_vectors_and_counts_bad_lines() {
    // V3 (UP2500): our 0x92 request and its answer (CR LF line ends), then a
    // line that is no frame.
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "rs485.log",
        "~20024692E00202FD2E\r\n~20024600B014026EF05AA0022BFDD5C0F915\r\nnoise\n",
    );
    let (code, out, err) = run(&["decode", "--rs485", &log]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0],
        r#"{"line":1,"ver":"0x20","adr":2,"request":"0x92","info":"02"}"#
    );
    // CVL 28.400 V, DVL 23.200 V, CCL 55.5 A, DCL 55.5 A (sent as -55.5), 0xC0.
    assert_eq!(
        lines[1],
        r#"{"line":2,"ver":"0x20","adr":2,"rtn":"0x00","answers":"0x92","command":2,"v_charge_cmd":28.4,"v_discharge_min":23.2,"i_lim_charge":55.5,"i_lim_discharge":55.5,"status":"0xC0","charge_enable":true,"discharge_enable":true,"force_charge_request":false,"force_charge_request_2":false,"balancing_charge_request":false}"#
    );
    assert_eq!(
        lines[2],
        r#"{"line":3,"error":"not a frame: a line must start with ~"}"#
    );
    assert!(err.contains("1 bad line"), "{err}");
    // --protocol only with --rs485.
    let (code, _, err) = run(&["decode", "--protocol", "seplos", &log]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn decode_reads_standard_input() {
    let mut child = Command::new(BIN)
        .arg("decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"  can0  356   [6]  7A 13 F2 FE 6B 01\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"id":"0x356","iface":"can0","v_avg":49.86,"i_total":-27.0,"t_avg":36.3}"#
    );
}

#[test]
fn check_accepts_a_valid_file_and_prints_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "ok.toml", &valid());
    let (code, out, _) = run(&["check", "-c", &cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid"));
    assert!(out.contains("battery 1: CAN-IF = nocan0, CAPACITY-AH = 100"), "{out}");
    assert!(out.contains("STALE-TIMEOUT = 5 s"), "{out}");
    assert!(out.contains("V-DISCHARGE-MIN = 46 V"), "{out}");
    // As the file spells it, not the Rust name.
    assert!(out.contains(r#"ON-INPUT-LOST = "degrade""#), "{out}");
}

#[test]
fn check_refuses_a_bad_file_naming_key_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.toml",
        &valid().replace("CAPACITY-AH = 100", "CAPACITY-AH = 100\nPOL-INTERVAL = 1"),
    );
    let (code, _, err) = run(&["check", "-c", &cfg]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{cfg}:5:1: [[bmses-in]] #1 POL-INTERVAL: unknown key (did you mean POLL-INTERVAL?)"
        )),
        "{err}"
    );
    // The --init hint is for a file that cannot be read, not a bad one.
    assert!(!err.contains("--init"), "{err}");
    let (code, _, err) = run(&["check", "-c", "/nonexistent/bms.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the file") && err.contains("--init"), "{err}");
}

#[test]
fn the_config_is_found_through_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "env.toml", &valid());
    let out = Command::new(BIN)
        .arg("check")
        .env("BMS_GATEWAY_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&cfg));
}

#[test]
fn init_writes_the_template_and_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/bms_config.toml");
    let p = path.to_str().unwrap();
    assert_eq!(run(&["--init", "-c", p]).0, 0);
    let template = std::fs::read_to_string(&path).unwrap();
    assert!(template.contains("GATEWAY-ACTIVATED = false"));
    std::fs::write(&path, "edited").unwrap();
    let (code, _, err) = run(&["--init", "-c", p]);
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "edited");
    assert_eq!(run(&["--init", "--force", "-c", p]).0, 0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), template);
    // The template itself checks clean, and says it is not activated.
    let (code, out, _) = run(&["check", "-c", p]);
    assert_eq!(code, 0);
    assert!(out.contains("GATEWAY-ACTIVATED is false"));
}

#[test]
fn a_config_that_is_not_activated_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "off.toml", &valid().replace("= true", "= false"));
    let (code, _, err) = run(&["-c", &cfg]);
    assert_eq!(code, 2);
    assert!(err.contains("GATEWAY-ACTIVATED is false"), "{err}");
}

#[test]
fn usage_errors_exit_with_2() {
    assert_eq!(run(&["demo", "--batteries", "0"]).0, 2);
    assert_eq!(run(&["no-such-command"]).0, 2);
    assert_eq!(run(&["demo", "--duration", "-1"]).0, 2);
    // The MQTT options need --mqtt; a bad address is refused before anything runs.
    assert_eq!(run(&["demo", "--remove"]).0, 2);
    assert_eq!(run(&["demo", "--username", "u"]).0, 2);
    assert_eq!(run(&["demo", "--mqtt", "h", "--password-file", "/p"]).0, 2);
    let (code, _, err) = run(&["demo", "--mqtt", "host:port", "--duration", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("HOST:PORT"), "{err}");
}

#[test]
fn the_demo_says_at_once_when_its_broker_is_unreachable() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let (code, _, err) = run(&["demo", "--mqtt", &address, "--duration", "30"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("MQTT broker {address} unreachable")), "{err}");
}

#[test]
fn the_demo_runs_for_its_duration_and_shows_the_table() {
    let (code, out, _) = run(&["demo", "--duration", "3", "--batteries", "2", "--inverters", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("COMBINED"), "{out}");
    assert!(out.contains("inv1"), "{out}");
}

/// Every event the demo shows is part of its script: its simulated
/// inverters talk as real ones do (0x305 every second), so none is reported
/// silent after INVERTER-TIMEOUT (10 s), in push mode (inverter 1) or in
/// sync mode (inverter 2). The script's own first event comes at 20 s.
#[test]
fn the_demos_inverters_talk_like_real_ones_and_none_turns_silent() {
    let (code, out, _) = run(&["demo", "--duration", "13"]);
    assert_eq!(code, 0);
    let last_table = out.rsplit("bms-gateway demo:").next().unwrap();
    assert!(last_table.contains("t = 1"), "{last_table}");
    assert!(!out.contains("no frame from the inverter"), "{last_table}");
    let events = last_table.split("Events:").nth(1).unwrap();
    assert!(!events.contains("inverter"), "{events}");
}

/// On this machine the interfaces cannot be opened (no CAN in the kernel, or
/// no such interface): the daemon keeps retrying and serves signals anyway.
#[test]
fn sighup_with_a_broken_config_keeps_running_and_sigterm_stops_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "live.toml", &valid());
    let mut d = Daemon::start(Path::new(&cfg));
    assert!(d.wait_log("retrying", Duration::from_secs(10)), "{}", d.log());
    // A broken file: refused, still running.
    std::fs::write(&cfg, "GATEWAY-ACTIVATED = true\n[battery\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(d.wait_log("reload refused", Duration::from_secs(10)), "{}", d.log());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited on a bad reload"
    );
    // A valid file: reloaded.
    std::fs::write(&cfg, valid().replace("CAPACITY-AH = 100", "CAPACITY-AH = 200")).unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(10)),
        "{}",
        d.log()
    );
    // SIGTERM: clean exit 0 within 2 s.
    d.signal(libc::SIGTERM);
    let (code, took) = d.wait_exit();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    assert!(d.wait_log("bms-gateway stopped", Duration::from_secs(2)));
}
