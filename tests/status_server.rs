//! The status server against the real gateway threads on the in-process
//! virtual bus: the page in Debian's headless Chromium, `/metrics` through
//! Debian's promtool, refusals of bad requests, hostile clients while the
//! inverter's frame gaps are counted, and the energy counters over a
//! measured time.

mod common;
mod config_text;
#[path = "common/promtool.rs"]
mod promtool;
mod rs485_vectors;

use bms_gateway::can::CanOpener;
use bms_gateway::events::Events;
use bms_gateway::http;
use bms_gateway::recorder::Recorder;
use bms_gateway::shutdown;
use bms_gateway::sim::{BatteryParams, SimAlarms};
use common::*;
use config_text::ConfigText;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Two batteries, one inverter, no MQTT. STALE-TIMEOUT 3 s: Chromium and
/// the hostile clients load the 2 cores; a battery must not turn stale
/// because its feeder thread was not scheduled.
fn two_by_one() -> ConfigText {
    ConfigText::new()
        .battery("STALE-TIMEOUT = 3.0")
        .input("bat1", 100.0, "DESCRIPTION = \"rack A\"")
        .input("bat2", 100.0, "")
        .output("inv1", "")
        .mqtt("ACTIVATED = false")
}

/// The rig's gateway with a status server on a free loopback port.
struct Served {
    rig: Rig,
    addr: SocketAddr,
    _stop: shutdown::StopSender,
}

fn serve(toml: &str, params: Vec<BatteryParams>) -> Served {
    let rig = Rig::start(toml, params, &[]);
    let server = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop) = shutdown::channel();
    let (config, board) = (rig.config.clone(), rig.board.clone());
    let (events, recorder) = (rig.events.clone(), rig.recorder.clone());
    std::thread::spawn(move || server.run(&config, &board, &events, &recorder, &stop));
    Served {
        rig,
        addr,
        _stop: stop_tx,
    }
}

fn two_batteries() -> Vec<BatteryParams> {
    vec![
        BatteryParams {
            cvl: 53.2,
            ccl: 100.0,
            dcl: 100.0,
            soc: 42.0,
            voltage: 52.00,
            current: 10.0,
            temp: 20.0,
            ..plain_battery()
        },
        BatteryParams {
            cvl: 53.2,
            ccl: 100.0,
            dcl: 100.0,
            soc: 77.0,
            voltage: 52.40,
            current: -4.0,
            temp: 24.0,
            ..plain_battery()
        },
    ]
}

/// Sends raw bytes, returns the whole answer.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = raw(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn state(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/api/state").1).unwrap()
}

fn wait_state(addr: SocketAddr, want: &str) -> bool {
    wait_until(addr, |st| st["system"]["state"] == want)
}

/// Waits (bounded) until `/api/state` satisfies `ok`.
fn wait_until(addr: SocketAddr, ok: impl Fn(&serde_json::Value) -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if ok(&state(addr)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Where this test's files go (kept after the run).
fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status_server");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs Debian's headless Chromium on `url` with `what` (e.g.
/// `--dump-dom`); its stdout and stderr.
fn chromium(url: &str, what: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=4000",
            "--window-size=1000,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(what)
        .arg(url)
        .output()
        .expect("Debian's chromium is installed (make deps)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The text of the element with `attr` inside the battery card `n`.
fn card_soc(dom: &str, n: usize) -> Option<String> {
    let card = dom.split(&format!("data-battery=\"{n}\"")).nth(1)?;
    let soc = card.split("class=\"soc\">").nth(1)?;
    Some(soc.split('<').next()?.to_string())
}

fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

#[test]
fn the_page_in_chromium_shows_each_battery_and_the_degraded_state() {
    let s = serve(&two_by_one().text(), two_batteries());
    assert!(wait_state(s.addr, "ok"), "{}", state(s.addr));
    let url = format!("http://{}/", s.addr);
    let (dom, stderr) = chromium(&url, &["--dump-dom"]);
    assert!(dom.contains("id=\"state\" class=\"badge ok\">ok<"), "{dom}");
    assert_eq!(card_soc(&dom, 1).as_deref(), Some("SOC 42.0 %"), "{dom}");
    assert_eq!(card_soc(&dom, 2).as_deref(), Some("SOC 77.0 %"), "{dom}");
    assert!(dom.contains("rack A"), "{dom}");
    assert!(
        console_lines(&stderr).is_empty(),
        "console: {:?}",
        console_lines(&stderr)
    );

    s.rig.set_silent(1, true);
    // Degraded because battery 2 went quiet, battery 1 still online (on a
    // starved machine battery 1 can miss its own deadline too: that is
    // another degraded state, not the one this page must show).
    let battery_2_off = |st: &serde_json::Value| {
        st["system"]["state"] == "degraded"
            && st["batteries"][0]["online"] == true
            && st["batteries"][1]["online"] == false
    };
    assert!(wait_until(s.addr, battery_2_off), "{}", state(s.addr));
    let (dom, stderr) = chromium(&url, &["--dump-dom"]);
    assert!(dom.contains("id=\"state\" class=\"badge degraded\">degraded<"), "{dom}");
    assert!(dom.contains("class=\"card off\" data-battery=\"2\""), "{dom}");
    assert!(dom.contains("battery lost"), "the event list shows the dropout: {dom}");
    assert!(
        console_lines(&stderr).is_empty(),
        "console: {:?}",
        console_lines(&stderr)
    );

    let shot = output_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let (_, stderr) = chromium(&url, &[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {stderr}"));
    assert_eq!(&png[1..4], b"PNG");
    println!("screenshot: {}", shot.display());
}

#[test]
fn promtool_accepts_the_metrics() {
    let s = serve(&two_by_one().text(), two_batteries());
    assert!(wait_state(s.addr, "ok"));
    let (status, text) = get(s.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("bms_gateway_battery_soc_percent{battery=\"2\",can_if=\"bat2\"} 77.0"),
        "{text}"
    );
    assert!(text.contains("bms_gateway_state{state=\"ok\"} 1"), "{text}");
    // 10 A and -4 A: |6 A| is under SHARE-MIN-CURRENT (10 A), so the shares are
    // the capacity shares, 100 / (100 + 100) = 0.5 each.
    for b in ["battery=\"1\",can_if=\"bat1\"", "battery=\"2\",can_if=\"bat2\""] {
        assert!(
            text.contains(&format!("bms_gateway_battery_share_ratio{{{b}}} 0.5\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("bms_gateway_battery_over_current{{{b}}} 0.0\n")),
            "{text}"
        );
    }
    assert!(text.contains("bms_gateway_overshoot_charge 0.0\n"), "{text}");
    assert!(text.contains("# TYPE bms_gateway_inverter_silent gauge"), "{text}");
    assert!(
        text.contains("bms_gateway_inverter_shutdown_requests_total{inverter=\"1\",can_if=\"inv1\"} 0.0\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE bms_gateway_battery_energy_charged_kwh_total counter"),
        "{text}"
    );
    promtool_check(&text, "metrics.txt");
}

#[test]
fn bad_requests_get_4xx_and_nothing_but_get_and_head_is_served() {
    let s = serve(&two_by_one().text(), two_batteries());
    let status = |answer: String| answer[9..12].to_string();
    assert_eq!(status(raw(s.addr, b"GARBAGE\x01\r\n\r\n")), "400");
    assert_eq!(
        status(raw(s.addr, b"POST /api/state HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")),
        "405"
    );
    assert_eq!(status(raw(s.addr, b"DELETE / HTTP/1.1\r\n\r\n")), "405");
    assert_eq!(status(raw(s.addr, b"GET /nothing HTTP/1.1\r\n\r\n")), "404");
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(status(raw(s.addr, huge.as_bytes())), "431");
    let head = raw(s.addr, b"HEAD /api/state HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    let (code, page) = get(s.addr, "/");
    assert_eq!(code, 200);
    assert!(page.starts_with("<!doctype html>"));
    let (code, events) = get(s.addr, "/api/events");
    assert_eq!(code, 200);
    assert!(events.starts_with('['), "{events}");
    // /api/history: since and step are checked, anything hostile is 400.
    for bad in [
        "since=abc",
        "since=-1",
        "since=99999999999999999999999",
        "since=1e10",
        "since=%00",
        "step=7",
        "step=-10",
        "x=1",
    ] {
        let (code, body) = get(s.addr, &format!("/api/history?{bad}"));
        assert_eq!(code, 400, "{bad}: {body}");
    }
    assert_eq!(get(s.addr, "/api/history?since=0&step=60").0, 200);
}

#[test]
fn hostile_clients_never_delay_the_inverters_frames() {
    let s = serve(&two_by_one().text(), two_batteries());
    assert!(wait_state(s.addr, "ok"));
    s.rig.clear(0);
    let t0 = Instant::now();
    // 64 connections that trickle one byte every 100 ms and never finish,
    // more than the workers and the queue together.
    let hostile: Vec<_> = (0..64)
        .map(|_| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let Ok(mut c) = TcpStream::connect(addr) else {
                    return String::new();
                };
                c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let mut answer = Vec::new();
                for b in b"GET /api/state HTTP/1.1\r\nX-Slow: ".iter().cycle().take(30) {
                    if c.write_all(&[*b]).is_err() {
                        break;
                    }
                    let mut buf = [0u8; 512];
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
                String::from_utf8_lossy(&answer).into_owned()
            })
        })
        .collect();
    let answers: Vec<String> = hostile.into_iter().map(|h| h.join().unwrap()).collect();
    let window = t0.elapsed();
    let frames: Vec<Instant> = s
        .rig
        .frames(0)
        .iter()
        .filter(|(_, f)| f.id == bms_gateway::frame::CanId::Standard(0x351))
        .map(|(t, _)| *t)
        .collect();
    // The spec's bound: one transmission per second at the least (push
    // mode repeats the state every second when nothing new comes), here
    // with the slack the broker-outage test of tests/mqtt_gateway.rs
    // allows a busy 2-core machine (1.2 s).
    let longest = frames.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let long_gaps = frames
        .windows(2)
        .filter(|w| w[1] - w[0] > Duration::from_millis(1200))
        .count();
    assert_eq!(
        long_gaps, 0,
        "gaps over 1.2 s while the server was under attack (longest {longest:?})"
    );
    let expected_at_least = (window.as_secs_f64() - 1.0).floor() as usize;
    assert!(
        frames.len() >= expected_at_least,
        "{} frames in {window:?}",
        frames.len()
    );
    let timed_out = answers.iter().filter(|a| a.starts_with("HTTP/1.1 408")).count();
    let busy = answers.iter().filter(|a| a.starts_with("HTTP/1.1 503")).count();
    println!(
        "{} frames to the inverter in {window:?}, longest gap {longest:?}; hostile clients: {timed_out} got 408, {busy} got 503",
        frames.len()
    );
    assert!(timed_out > 0 && busy > 0, "408: {timed_out}, 503: {busy}");
    // And the server still answers.
    assert_eq!(get(s.addr, "/api/state").0, 200);
}

#[test]
fn energy_of_a_constant_power_over_a_measured_time() {
    // One battery at 50.00 V and 20.0 A (both exact in the frames): 1000 W.
    let toml = two_by_one()
        .text()
        .replace("STALE-TIMEOUT = 3.0", "STALE-TIMEOUT = 0.5");
    let mut params = two_batteries();
    params[0].voltage = 50.0;
    params[0].current = 20.0;
    let rig = Rig::start(&toml, params.clone(), &[]);
    // The test plays battery 1 itself, so that it knows when each burst went.
    rig.set_silent(0, true);
    std::thread::sleep(Duration::from_millis(800));
    let mut port = rig.bus.open("bat1").unwrap();
    let mut sent = Vec::new();
    let mut before = None;
    for k in 0..19 {
        for f in params[0].burst(k as f64, SimAlarms::default()) {
            port.write(&f).unwrap();
        }
        sent.push(Instant::now());
        std::thread::sleep(Duration::from_millis(100));
        // From the third burst on, a burst's telegram completes with its
        // last frame (docs/combining.md): the count starts there.
        if k == 2 {
            before = Some(rig.board.input(0, |s| s.energy.total));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = before.unwrap();
    let after = rig.board.input(0, |s| s.energy.total);
    let measured = (*sent.last().unwrap() - sent[2]).as_secs_f64();
    let expected_kwh = 1000.0 * measured / 3.6e6;
    let got = after.charged_kwh - before.charged_kwh;
    assert!(
        (got - expected_kwh).abs() <= 0.01 * expected_kwh,
        "{got} kWh, expected {expected_kwh} kWh over {measured} s"
    );
    assert_eq!(after.discharged_kwh, before.discharged_kwh);
    // The system counts the same energy, plus battery 2's discharging.
    rig.stop();
}

#[test]
fn post_api_record_writes_a_recording_only_when_asked_by_bms_gateway_record() {
    let off = serve(&two_by_one().text(), two_batteries());
    let url = http::url(off.addr);
    // No STATE-DIR in the rig: the recorder is off, and the answer says so.
    let e = bms_gateway::status_client::record(&url).unwrap_err();
    assert!(e.contains("the flight recorder is off"), "{e}");
    let state = tempfile::tempdir().unwrap();
    let s = serve(&two_by_one().state_dir(state.path()).text(), two_batteries());
    // A plain POST (what a web page could send) is refused.
    let plain = raw(s.addr, b"POST /api/record HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 403"), "{plain}");
    assert!(std::fs::read_dir(state.path().join("recordings")).is_err());
    // Asked again until the recording holds a battery's and the inverter's
    // 0x351 (the gateway sends once the batteries have reported: a loaded
    // machine takes its time), each answer a whole recording. A second one
    // within the same second is named ...-request-2.log.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut asked = 0;
    let text = loop {
        let (file, frames) = bms_gateway::status_client::record(&http::url(s.addr)).unwrap();
        asked += 1;
        if asked == 1 {
            assert!(file.ends_with("-request.log"), "{file}");
        } else {
            assert!(file.contains("-request"), "{file}");
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count() as u64, frames);
        if text.contains(" bat1 351#") && text.contains(" inv1 351#") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains(" bat1 351#") && text.contains(" inv1 351#"), "{text}");
}

/// The rig's gateway, once its batteries are fresh and its inverter was
/// sent a state, with a status server started only then (whose first
/// history sample is taken at its start).
fn serve_when_running(toml: &str, params: Vec<BatteryParams>) -> Served {
    let rig = Rig::start(toml, params, &[]);
    assert!(rig.wait_for_fresh(Duration::from_secs(10), &[true, true]));
    assert!(rig.wait_for(0, Duration::from_secs(10), |v| v.limits().is_some()));
    let until = Instant::now() + Duration::from_secs(10);
    while rig.board.snapshot().outputs[0].last_sent.is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop) = shutdown::channel();
    let (config, board) = (rig.config.clone(), rig.board.clone());
    let (events, recorder) = (rig.events.clone(), rig.recorder.clone());
    std::thread::spawn(move || server.run(&config, &board, &events, &recorder, &stop));
    Served {
        rig,
        addr,
        _stop: stop_tx,
    }
}

/// The last row's value of a column of /api/history.
fn last(columns: &serde_json::Value, name: &str) -> serde_json::Value {
    columns[name]
        .as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or_default()
}

/// `/api/history` from the real server holds what the status board shows
/// (the same values as /api/state), in 10 s rows.
#[test]
fn api_history_holds_the_status_boards_values() {
    let s = serve_when_running(&two_by_one().text(), two_batteries());
    let until = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let (code, body) = get(s.addr, "/api/history");
        assert_eq!(code, 200, "{body}");
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        // A row sampled before battery 2's first telegram holds battery 1
        // alone: wait for one with both (on a slow machine that is a later row).
        let both = (0..2).all(|k| !last(&h["batteries"][k], "soc").is_null());
        if (both && !last(&h["bank"], "soc").is_null()) || Instant::now() > until {
            break h;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let st = state(s.addr);
    assert_eq!(history["step"], 10, "{history}");
    assert!(history["rows"].as_u64().unwrap() >= 1, "{history}");
    assert_eq!(history["start"].as_i64().unwrap() % 10, 0);
    let (bank, sys) = (&history["bank"], &st["system"]);
    // By hand: two 100 Ah packs at 42 % and 77 %, 10 A and -4 A.
    assert_eq!(last(bank, "soc"), 59.5, "{history}");
    assert_eq!(last(bank, "i_total"), 6.0, "{history}");
    for name in ["soc", "i_total", "t_avg", "i_lim_charge", "i_lim_discharge"] {
        assert_eq!(last(bank, name), sys[name], "{name}: {history}");
    }
    assert_eq!(history["why"]["charge"][0][1], sys["limit_reason_charge"], "{history}");
    assert_eq!(history["why"]["discharge"][0][1], sys["limit_reason_discharge"]);
    let expected = [(42.0, 10.0, 20.0), (77.0, -4.0, 24.0)];
    for (k, (soc, current, temp)) in expected.into_iter().enumerate() {
        let b = &history["batteries"][k];
        assert_eq!(
            (last(b, "soc"), last(b, "i_total"), last(b, "t_avg")),
            (soc.into(), current.into(), temp.into())
        );
        assert_eq!(last(b, "share"), st["batteries"][k]["share"], "{history}");
    }
    let inv = &history["inverters"][0];
    assert_eq!(
        last(inv, "i_lim_charge"),
        st["inverters"][0]["i_lim_charge"],
        "{history}"
    );
    assert_eq!(last(inv, "i_lim_discharge"), st["inverters"][0]["i_lim_discharge"]);
}

/// The charts in headless Chromium: one path per series, one point per
/// known row (a stale battery's rows leave a gap: a new "M"), no NaN.
#[test]
fn the_history_charts_in_chromium_have_one_path_per_series_and_no_nan() {
    use bms_gateway::history::{Sample, Why};
    let rig = Rig::start(&two_by_one().text(), two_batteries(), &[]);
    // 30 rows of 10 s; battery 2 stale in rows 10-14. They end in the
    // future, so that the server's own samples (at "now") are older and
    // skipped: the rows are exactly these.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let base = now - now % 10 - 100;
    rig.board.history(|h| {
        for n in 0..30 {
            let x = n as f64;
            let pack = |soc: f64| [Some(soc), Some(x - 10.0), Some(0.5), Some(20.0 + x / 10.0), None, None];
            let stale = (10..15).contains(&n);
            let sample = Sample {
                bank: [
                    Some(50.0 + x),
                    Some(52.0),
                    Some(x - 10.0),
                    Some(21.0),
                    Some(100.0),
                    Some(80.0),
                ],
                why_charge: Some(Why {
                    reason: if n < 20 { "sum" } else { "share" },
                    battery: (n >= 20).then_some(1),
                }),
                why_discharge: Some(Why {
                    reason: "sum",
                    battery: None,
                }),
                batteries: vec![pack(40.0 + x), if stale { [None; 6] } else { pack(70.0 - x) }],
                inverters: vec![[Some(100.0), Some(80.0)]],
            };
            h.push(base + n * 10, &sample);
        }
    });
    let server = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let (_stop_tx, stop) = shutdown::channel();
    let (config, board) = (rig.config.clone(), rig.board.clone());
    let (events, recorder) = (rig.events.clone(), rig.recorder.clone());
    std::thread::spawn(move || server.run(&config, &board, &events, &recorder, &stop));
    let (dom, stderr) = chromium(&format!("http://{addr}/"), &["--dump-dom"]);
    assert!(
        console_lines(&stderr).is_empty(),
        "console: {:?}",
        console_lines(&stderr)
    );
    // Each series' path: (its pen-downs "M", its points "M" + "L").
    let path = |series: &str| -> (usize, usize) {
        let marker = format!("data-series=\"{series}\"");
        let mut found = dom.split(&marker).skip(1);
        let tag = found.next().unwrap_or_else(|| panic!("no path {series}: {dom}"));
        assert!(found.next().is_none(), "two paths for {series}");
        let tag = &tag[..tag.find('>').unwrap()];
        let d = tag.split(" d=\"").nth(1).unwrap_or_else(|| panic!("{series}: {tag}"));
        let d = &d[..d.find('"').unwrap()];
        assert!(!d.contains("NaN") && !d.contains("Infinity"), "{series}: {d}");
        (d.matches('M').count(), d.matches('M').count() + d.matches('L').count())
    };
    for series in [
        "soc-bank",
        "soc-1",
        "current-bank",
        "limit-charge",
        "limit-discharge",
        "share-1",
        "temp-bank",
        "temp-1",
    ] {
        assert_eq!(path(series), (1, 30), "{series}");
    }
    for series in ["soc-2", "share-2", "temp-2"] {
        assert_eq!(path(series), (2, 25), "{series}");
    }
    assert_eq!(dom.matches("class=\"series\"").count(), 11, "no other series");
    assert!(!dom.contains("NaN"));
    // The charge limit's reason is marked where it changes (row 20).
    assert!(dom.contains(">+share 1<"), "{dom}");
    assert!(dom.contains(">+sum<"), "{dom}");
    let marks = dom.matches("class=\"mark\"").count();
    // Two 10 s refreshes later (virtual time): the rows since the last one
    // were merged in (and redrawn), and the charts are the same.
    let (later, _) = chromium(
        &format!("http://{addr}/"),
        &["--virtual-time-budget=25000", "--dump-dom"],
    );
    assert!(later.contains("data-merges=\"1\""), "{later}");
    let path_of = |dom: &str, series: &str| {
        let tag = dom
            .split(&format!("data-series=\"{series}\""))
            .nth(1)
            .unwrap()
            .to_string();
        tag[..tag.find('>').unwrap()].to_string()
    };
    for series in ["soc-bank", "soc-2", "limit-discharge", "temp-2"] {
        assert_eq!(path_of(&later, series), path_of(&dom, series), "{series}");
    }
    assert_eq!(later.matches("class=\"mark\"").count(), marks);
}

/// A status server on a board filled by hand: one battery whose telegram
/// is `telegram`, fresh.
fn serve_board(telegram: bms_gateway::telegram::Telegram) -> (SocketAddr, shutdown::StopSender) {
    let text = ConfigText::new()
        .input("bat1", 50.0, "")
        .output("inv1", "")
        .mqtt("ACTIVATED = false")
        .text();
    let config = bms_gateway::config::parse(&text).unwrap();
    let board = std::sync::Arc::new(bms_gateway::status::StatusBoard::new(1, 1));
    board.input(0, |i| {
        i.telegram = Some(telegram);
        i.last_telegram = Some(Instant::now());
    });
    board.system(|s| s.inputs_fresh = vec![true]);
    let server = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop) = shutdown::channel();
    let (events, recorder) = (Events::default(), Recorder::default());
    std::thread::spawn(move || server.run(&config, &board, &events, &recorder, &stop));
    (addr, stop_tx)
}

/// The reference's V10 (a PACE pack, 16 cells), by hand: the cells sum to
/// 53 140 mV, a mean of 3321.25 mV; from it (mV, rounded) +62, -20, +15,
/// -12, +13, -18, +36, -14, -1, +1, +2, +14, -24, -8, -55, +13. Over 10 mV
/// is amber, over 30 mV red.
#[test]
fn each_cell_is_a_bar_coloured_by_its_distance_from_the_mean_and_a_metric() {
    let t = rs485_vectors::telegram(rs485_vectors::V10_ANALOG, bms_gateway::rs485::Protocol::Pace);
    let (addr, _stop) = serve_board(t);

    let b = &state(addr)["batteries"][0];
    let cells = [
        3.383, 3.301, 3.336, 3.309, 3.334, 3.303, 3.357, 3.307, 3.32, 3.322, 3.323, 3.335, 3.297, 3.313, 3.266, 3.334,
    ];
    assert_eq!(b["cells_v"], serde_json::json!(cells), "{b}");
    // Offset 2730 (PACE): 0BAA..0BB2.
    assert_eq!(b["cells_t"], serde_json::json!([25.6, 25.8, 25.2, 25.3, 25.5, 26.4]));
    assert_eq!(
        (
            b["cell_v_min"].clone(),
            b["cell_v_max"].clone(),
            b["cell_v_delta"].clone()
        ),
        (
            serde_json::json!(3.266),
            serde_json::json!(3.383),
            serde_json::json!(0.117)
        )
    );

    let (dom, stderr) = chromium(&format!("http://{addr}/"), &["--dump-dom"]);
    let row = dom
        .split("class=\"cells\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no cell bars: {dom}"));
    let row = row.split("</div>").next().unwrap();
    let bars: Vec<(String, i64)> = row
        .split("<span ")
        .skip(1)
        .map(|span| {
            let attr = |name: &str| {
                span.split(&format!("{name}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            };
            (attr("class"), attr("data-mv").parse().unwrap())
        })
        .collect();
    let want_mv = [62, -20, 15, -12, 13, -18, 36, -14, -1, 1, 2, 14, -24, -8, -55, 13];
    let mv: Vec<i64> = bars.iter().map(|b| b.1).collect();
    assert_eq!(mv, want_mv, "{row}");
    let classes: Vec<&str> = bars.iter().map(|b| b.0.as_str()).collect();
    #[rustfmt::skip]
    let want = ["bad", "warn", "warn", "warn", "warn", "warn", "bad", "warn", "ok", "ok", "ok", "warn", "warn", "ok", "bad", "warn"];
    assert_eq!(classes, want);
    assert!(dom.contains("16 cells, mean 3.321 V"), "{dom}");
    assert!(dom.contains("3.266 \u{2013} 3.383 V (\u{394} 117 mV)"), "{dom}");
    assert!(
        console_lines(&stderr).is_empty(),
        "console: {:?}",
        console_lines(&stderr)
    );

    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let labels = "battery=\"1\",can_if=\"bat1\"";
    for line in [
        format!("bms_gateway_battery_cell_voltage_volts{{{labels},cell=\"1\"}} 3.383\n"),
        format!("bms_gateway_battery_cell_voltage_volts{{{labels},cell=\"15\"}} 3.266\n"),
        format!("bms_gateway_battery_cell_temperature_celsius{{{labels},sensor=\"6\"}} 26.4\n"),
        format!("bms_gateway_battery_cell_voltage_delta_volts{{{labels}}} 0.117\n"),
        format!("bms_gateway_battery_cell_voltage_min_volts{{{labels}}} 3.266\n"),
    ] {
        assert!(text.contains(&line), "{line} in {text}");
    }
    assert_eq!(text.matches("bms_gateway_battery_cell_voltage_volts{").count(), 16);
    promtool_check(&text, "metrics-cells.txt");
}

/// Debian's promtool finds nothing to say about `text` (kept as `name`).
fn promtool_check(text: &str, name: &str) {
    promtool::promtool_check(text, &output_dir().join(name));
}
