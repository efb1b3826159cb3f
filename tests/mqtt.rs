//! The MQTT thread against a real Mosquitto broker: telemetry fields and
//! values, status and last will, setpoint commands (accepted, clamped,
//! expired, cleared, refused), control off, retained commands, a broker
//! restart, authentication, TLS and Home Assistant discovery.
//!
//! `mqtt::run` runs in a thread of its own with a hand-filled status board;
//! the test plays the combiner (it reads the command channel and writes
//! setpoints back to the board). Expected values are computed by hand from
//! the values put on the board.

mod config_text;
mod mosquitto;
mod rs485_vectors;

use bms_gateway::bank::{Limit, LimitReason, PackView, PerKind};
use bms_gateway::codec::{Flags, Limits, Manufacturer, Measurements, Requests, StateOfCharge};
use bms_gateway::combine::{Battery, Combined, SystemState};
use bms_gateway::config::{self, Config};
use bms_gateway::events::{Events, Kind, Subject};
use bms_gateway::mqtt;
use bms_gateway::setpoint::{LimitKind, Scope, Setpoint, SetpointCommand};
use bms_gateway::status::{LinkState, StatusBoard};
use bms_gateway::telegram::Telegram;
use config_text::ConfigText;
use crossbeam_channel::{Receiver, Sender, bounded};
use mosquitto::{Auth, Broker, PATIENCE, Proxy, TestPki, TlsListener, Watcher, logs};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A config with two batteries (can1 100 Ah, can2 50 Ah) and two inverters,
/// caps 100 A / 120 A for the system, 60 A / 80 A for inverter 1.
fn config_for(port: u16, base: &str, mqtt_extra: &str, batteries: &[&str]) -> Config {
    let mut text = ConfigText::new().battery("I-LIM-CHARGE = 100\nI-LIM-DISCHARGE = 120");
    for (n, b) in batteries.iter().enumerate() {
        let (capacity, description) = if n == 0 { (100.0, "rack A") } else { (50.0, "") };
        text = text.input(b, capacity, &format!("DESCRIPTION = \"{description}\""));
    }
    let text = text
        .output(
            "inv1",
            "I-LIM-CHARGE = 60\nI-LIM-DISCHARGE = 80\nDESCRIPTION = \"hybrid\"",
        )
        .output("inv2", "")
        .broker(port, base, "gw")
        .mqtt(mqtt_extra)
        .text();
    config::parse(&text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn config(broker: &Broker, base: &str, mqtt_extra: &str) -> Config {
    config_for(broker.port, base, mqtt_extra, &["can1", "can2"])
}

fn at(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs)
}

/// The combined battery the tests put on the board.
fn combined_battery() -> Battery {
    Battery {
        v_charge_cmd: 53.2,
        i_lim_charge: 90.0,
        i_lim_discharge: 110.0,
        v_discharge_min: Some(46.9),
        soc: 75.0,
        soh: 98.0,
        v_avg: 51.23,
        i_total: -12.34,
        t_avg: 21.06,
        flags: Flags {
            error_flags_1: 0,
            error_flags_2: 0,
            warning_flags_1: 0x02,
            warning_flags_2: 0,
            n_modules: 4,
        },
        requests: Requests::NORMAL,
        cells: None,
        manufacturer: Manufacturer::new("PYLON"),
        capacity_ah: 150.0,
    }
}

fn telegram() -> Telegram {
    Telegram {
        limits: Limits {
            v_charge_cmd: 53.2,
            i_lim_charge: 60.0,
            i_lim_discharge: 70.0,
            v_discharge_min: Some(45.0),
        },
        soc: StateOfCharge {
            soc: 80.0,
            soh: 99.0,
            soc_hires: None,
        },
        measurements: Measurements {
            v_avg: 51.5,
            i_total: -8.0,
            t_avg: 22.0,
        },
        flags: Flags {
            n_modules: 2,
            ..Flags::default()
        },
        requests: Some(Requests::NORMAL),
        manufacturer: Manufacturer::new("PYLON"),
        cells: None,
        energy: None,
        cell_readings: None,
    }
}

/// A board with a combined state, battery 1 reporting, battery 2 silent,
/// inverter 1 served.
fn filled_board() -> Arc<StatusBoard> {
    let board = Arc::new(StatusBoard::new(2, 2));
    let now = Instant::now();
    board.system(|s| {
        s.combined = Some(Combined {
            state: SystemState::Ok,
            battery: combined_battery(),
            inputs_online: 2,
            bank: Default::default(),
            made_at: now,
            limits: PerKind {
                charge: Limit {
                    value: 100.0,
                    reason: LimitReason::Sum,
                    battery: None,
                },
                discharge: Limit {
                    value: 100.0,
                    reason: LimitReason::Share,
                    battery: Some(0),
                },
            },
            overshoot: PerKind::default(),
        });
        s.packs = vec![
            PackView {
                share: PerKind {
                    charge: 0.4,
                    discharge: 0.65,
                },
                over_current: true,
                fresh: true,
            },
            PackView::default(),
        ];
        s.inputs_fresh = vec![true, false];
    });
    board.input(0, |i| {
        i.telegram = Some(telegram());
        i.last_telegram = Some(now);
        i.last_telegram_wall = Some(at(1_700_000_000.0));
        i.frames = 60;
        i.telegrams = 10;
        i.invalid = 2;
        i.link = LinkState::Up;
    });
    board.input(1, |i| {
        i.invalid = 3;
        i.last_telegram_wall = Some(at(1_699_999_990.0));
    });
    board.output(0, |o| {
        o.last_sent = Some(combined_battery());
        o.last_state = Some(SystemState::Ok);
        o.last_sent_at = Some(now);
        o.last_request_wall = Some(at(1_700_000_001.5));
        o.frames_sent = 120;
        o.send_errors = 1;
        o.link = LinkState::Up;
    });
    board
}

/// `mqtt::run` in a thread of its own.
struct Running {
    shutdown: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
    commands: Receiver<SetpointCommand>,
    /// The events it publishes.
    events: Arc<Events>,
}

fn start(config: Config, board: Arc<StatusBoard>) -> Running {
    start_with_events(config, board, Arc::default())
}

/// [`start`] with `events` raised before.
fn start_with_events(config: Config, board: Arc<StatusBoard>, events: Arc<Events>) -> Running {
    let (shutdown_tx, shutdown_rx) = bounded::<()>(1);
    let (commands_tx, commands) = bounded::<SetpointCommand>(16);
    let thread_events = events.clone();
    let handle = std::thread::spawn(move || mqtt::run(&config, &board, &thread_events, &commands_tx, &shutdown_rx));
    Running {
        shutdown: Some(shutdown_tx),
        handle: Some(handle),
        commands,
        events,
    }
}

impl Running {
    /// Stops the thread; how long it took.
    fn stop(&mut self) -> Duration {
        let t0 = Instant::now();
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            h.join().expect("mqtt::run did not panic");
        }
        t0.elapsed()
    }

    fn next_command(&self) -> SetpointCommand {
        self.commands
            .recv_timeout(PATIENCE)
            .expect("a command reached the combiner")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wall_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn telemetry_carries_every_field_with_the_board_values() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let before = wall_now();
    let mut gw = start(config(&broker, "tele1", ""), filled_board());

    let state = watch.wait_for("tele/tele1/state", "telemetry", |_| true);
    assert!(!state.retain);
    let mut got = state.json();
    let timestamp = got
        .as_object_mut()
        .unwrap()
        .remove("timestamp")
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(
        timestamp >= before - 0.01 && timestamp <= wall_now() + 0.01,
        "{timestamp}"
    );
    let age = got
        .as_object_mut()
        .unwrap()
        .remove("state_age_s")
        .unwrap()
        .as_f64()
        .unwrap();
    assert!((0.0..60.0).contains(&age));
    // The board's energy counters were never fed: 0 (checked apart, the
    // literal below is at json!'s recursion limit).
    for field in ["energy_charged_kwh", "energy_discharged_kwh"] {
        assert_eq!(got.as_object_mut().unwrap().remove(field), Some(json!(0.0)), "{field}");
    }
    // Why the limits are what they are (the board's limits; batteries 1-based).
    let why = json!({"limit_reason_charge": "sum", "limit_battery_charge": null,
        "limit_reason_discharge": "share", "limit_battery_discharge": 1,
        "overshoot_charge": false, "overshoot_discharge": false});
    for (key, value) in why.as_object().unwrap() {
        assert_eq!(got.as_object_mut().unwrap().remove(key).as_ref(), Some(value), "{key}");
    }
    let want = json!({
        // The original gateway's fields.
        "manufacturer": "PYLON",
        "soc": 75.0,
        "soh": 98.0,
        "v_charge_cmd": 53.2,
        "i_lim_charge": 90.0,
        "i_lim_discharge": 110.0,
        "v_avg": 51.23,
        "i_total": -12.3,
        "t_avg": 21.1,
        "error_flags_1": 0,
        "error_flags_2": 0,
        "warning_flags_1": 2,
        "warning_flags_2": 0,
        "n_modules": 4,
        "charge_enable": true,
        "discharge_enable": true,
        "force_charge_request": false,
        "force_charge_request_2": false,
        "balancing_charge_request": false,
        "timestamp_last_bms_update": 1_700_000_000.0,
        "timestamp_last_inverter_request": 1_700_000_001.5,
        "n_invalid_data_telegrams": 5,
        "capacity_ah": 150.0,
        // The new ones. 51.23 V x -12.34 A = -632.18 W.
        "v_discharge_min": 46.9,
        "power_w": -632.0,
        // 0.75 x 150 Ah x 51.23 V = 5763.4 Wh
        "energy_stored_kwh": 5.76,
        "state": "ok",
        "inputs_online": 2,
        "inputs_total": 2,
        "n_dropped_telegrams": 0,
        "v_cell_min": null,
        "v_cell_max": null,
        "t_cell_min": null,
        "t_cell_max": null,
    });
    assert_eq!(got, want);

    let b1 = watch.wait_for("tele1/battery/1/state", "battery 1", |_| true).json();
    assert_eq!(b1["soc"], 80.0);
    assert_eq!(b1["v_avg"], 51.5);
    assert_eq!(b1["i_total"], -8.0);
    assert_eq!(b1["power_w"], -412.0);
    assert_eq!(b1["i_lim_discharge"], 70.0);
    assert_eq!(b1["online"], true);
    assert_eq!(b1["description"], "rack A");
    assert_eq!(b1["can_if"], "can1");
    assert_eq!(b1["capacity_ah"], 100.0);
    // The bank discharges (-12.3 A): battery 1's discharge share.
    assert_eq!(
        (b1["share"].clone(), b1["share_charge"].clone()),
        (json!(0.65), json!(0.4))
    );
    assert_eq!(b1["over_current"], true);
    // 0.8 x 100 Ah x 51.5 V = 4120 Wh
    assert_eq!(b1["energy_stored_kwh"], 4.12);
    assert_eq!(b1["frames"], 60);
    assert_eq!(b1["telegrams"], 10);
    assert_eq!(b1["invalid"], 2);
    assert_eq!(b1["link"], "up");
    assert_eq!(b1["timestamp_last_bms_update"], 1_700_000_000.0);
    assert!(b1["timestamp"].as_f64().unwrap() >= before - 0.01);
    let b2 = watch.wait_for("tele1/battery/2/state", "battery 2", |_| true).json();
    assert_eq!(b2["online"], false);
    assert_eq!(b2["soc"], Value::Null);
    assert_eq!(b2["energy_stored_kwh"], Value::Null);
    assert_eq!(b2["invalid"], 3);
    assert_eq!(b2["can_if"], "can2");
    assert_eq!(
        (b2["share"].clone(), b2["over_current"].clone()),
        (Value::Null, Value::Null)
    );
    let i1 = watch.wait_for("tele1/inverter/1/state", "inverter 1", |_| true).json();
    assert_eq!(i1["i_lim_charge"], 90.0);
    assert_eq!(i1["state"], "ok");
    assert_eq!(i1["frames_sent"], 120);
    assert_eq!(i1["send_errors"], 1);
    assert_eq!(i1["description"], "hybrid");
    // No PROFILE in its section: the default, Pylontech's.
    assert_eq!(i1["profile"], "pylon");
    assert_eq!(i1["timestamp_last_inverter_request"], 1_700_000_001.5);
    let i2 = watch.wait_for("tele1/inverter/2/state", "inverter 2", |_| true).json();
    assert_eq!(i2["state"], Value::Null);
    assert_eq!(i2["frames_sent"], 0);

    // Telemetry repeats every INTERVAL (0.5 s).
    watch.wait_nth("tele/tele1/state", 3);

    // "online", retained: a client connecting now still gets it.
    let late = Watcher::connect(&broker, "tele1/status");
    let status = late.wait_for("tele1/status", "status", |_| true);
    assert_eq!((status.text().as_str(), status.retain), ("online", true));

    // Shutdown publishes "offline", retained, within 2 s.
    let took = gw.stop();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    watch.wait_for("tele1/status", "offline", |m| m.text() == "offline");
    let later = Watcher::connect(&broker, "tele1/status");
    let status = later.wait_for("tele1/status", "status", |_| true);
    assert_eq!((status.text().as_str(), status.retain), ("offline", true));
}

#[test]
fn before_any_combined_state_telemetry_says_starting() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let _gw = start(config(&broker, "start1", ""), Arc::new(StatusBoard::new(2, 2)));
    let got = watch.wait_for("tele/start1/state", "telemetry", |_| true).json();
    assert_eq!(got["state"], "starting");
    assert_eq!(got["soc"], Value::Null);
    assert_eq!(got["i_lim_charge"], Value::Null);
    assert_eq!(got["inputs_online"], 0);
    assert_eq!(got["timestamp_last_bms_update"], Value::Null);
}

#[test]
fn the_last_will_says_offline_when_the_connection_dies_and_online_returns() {
    let broker = Broker::anonymous();
    let proxy = Proxy::start(broker.port);
    let watch = Watcher::connect(&broker, "will1/status");
    let mut c = config(&broker, "will1", "");
    c.mqtt.port = proxy.port;
    let _gw = start(c, filled_board());
    watch.wait_for("will1/status", "online", |m| m.text() == "online");
    // The connection dies without a DISCONNECT: the broker publishes the will.
    let cut = Instant::now();
    proxy.cut();
    watch.wait_for("will1/status", "the will", |m| m.at > cut && m.text() == "offline");
    let late = Watcher::connect(&broker, "will1/status");
    let m = late.wait_for("will1/status", "retained will", |_| true);
    assert_eq!((m.text().as_str(), m.retain), ("offline", true));
    // Back again after the back-off.
    let resumed = Instant::now();
    proxy.resume();
    watch.wait_for("will1/status", "online again", |m| {
        m.at > resumed && m.text() == "online"
    });
}

/// Applies a command to the board as the combiner does.
fn apply(board: &StatusBoard, c: SetpointCommand) {
    board.system(|s| match c.scope {
        Scope::System => s.setpoints.set(c.kind, c.setpoint),
        Scope::Inverter(j) => s.inverter_setpoints[j].set(c.kind, c.setpoint),
        Scope::ChargeStop => s.charge_stop_soc = c.setpoint,
    });
    // As the combiner does: the MQTT thread waits for this, it does not poll.
    board.setpoints_changed();
}

#[test]
fn setpoints_are_accepted_clamped_expired_and_cleared() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let board = filled_board();
    let gw = start(config(&broker, "sp1", "CONTROL-ACTIVATED = true"), board.clone());
    watch.wait_for("sp1/status", "online", |m| m.text() == "online");
    let results = "sp1/set/result";

    // A bare number, no default TTL: until changed.
    watch.publish("sp1/set/i_lim_charge", "50", false);
    let c = gw.next_command();
    assert_eq!(
        c,
        SetpointCommand {
            scope: Scope::System,
            kind: LimitKind::Charge,
            setpoint: Some(Setpoint {
                value: 50.0,
                expires: None
            }),
        }
    );
    let r = watch.wait_nth(results, 1).json();
    assert_eq!(r["topic"], "sp1/set/i_lim_charge");
    assert_eq!(r["ok"], true);
    assert_eq!(r["value"], 50.0);
    apply(&board, c);
    let sp = watch.wait_for("sp1/setpoints", "charge 50", |m| {
        m.json()["system"]["i_lim_charge"]["value"] == 50.0
    });
    assert_eq!(sp.json()["system"]["i_lim_charge"]["expires"], Value::Null);
    // Retained: a client connecting later sees the active setpoints.
    let late = Watcher::connect(&broker, "sp1/setpoints");
    let m = late.wait_for("sp1/setpoints", "retained setpoints", |_| true);
    assert!(m.retain);
    assert_eq!(m.json()["system"]["i_lim_charge"]["value"], 50.0);

    // Above the system cap of 100 A: clamped.
    watch.publish("sp1/set/i_lim_charge", "500", false);
    let c = gw.next_command();
    assert_eq!(c.setpoint.unwrap().value, 100.0);
    let r = watch.wait_nth(results, 2).json();
    assert_eq!(
        (r["ok"].clone(), r["value"].clone(), r["clamped"].clone()),
        (json!(true), json!(100.0), json!(true))
    );

    // Inverter 1's cap is 60 A.
    watch.publish("sp1/inverter/1/set/i_lim_charge", "70", false);
    let c = gw.next_command();
    assert_eq!((c.scope, c.kind), (Scope::Inverter(0), LimitKind::Charge));
    assert_eq!(c.setpoint.unwrap().value, 60.0);
    assert_eq!(watch.wait_nth(results, 3).json()["value"], 60.0);
    apply(&board, c);
    watch.wait_for("sp1/setpoints", "inverter 1 charge 60", |m| {
        m.json()["inverters"][0]["i_lim_charge"]["value"] == 60.0
    });

    // JSON with a TTL of 2 s: expires, and BASE/setpoints shows it gone.
    let sent = Instant::now();
    watch.publish("sp1/set/i_lim_discharge", r#"{"value": 30, "ttl": 2}"#, false);
    let c = gw.next_command();
    let s = c.setpoint.unwrap();
    assert_eq!((c.scope, c.kind, s.value), (Scope::System, LimitKind::Discharge, 30.0));
    let expires = s.expires.expect("a TTL gives an expiry");
    assert!(expires >= sent + Duration::from_secs(2) && expires <= Instant::now() + Duration::from_secs(2));
    let r = watch.wait_nth(results, 4).json();
    assert_eq!((r["value"].clone(), r["ttl_s"].clone()), (json!(30.0), json!(2.0)));
    apply(&board, c);
    let with = watch.wait_for("sp1/setpoints", "discharge 30", |m| {
        m.json()["system"]["i_lim_discharge"]["value"] == 30.0
    });
    assert!(with.json()["system"]["i_lim_discharge"]["expires"].as_f64().unwrap() > wall_now());
    // The board still holds it (the combiner drops it on its own clock),
    // yet the published setpoints drop it when it expires.
    let gone = watch.wait_for("sp1/setpoints", "discharge expired", |m| {
        m.at > with.at && m.json()["system"]["i_lim_discharge"].is_null()
    });
    assert!(gone.at >= sent + Duration::from_secs(2));
    assert_eq!(gone.json()["system"]["i_lim_charge"]["value"], 50.0);

    // Empty payload and "clear" clear.
    watch.publish("sp1/set/i_lim_charge", "", false);
    let c = gw.next_command();
    assert_eq!((c.scope, c.kind, c.setpoint), (Scope::System, LimitKind::Charge, None));
    let r = watch.wait_nth(results, 5).json();
    assert_eq!((r["ok"].clone(), r["value"].clone()), (json!(true), Value::Null));
    apply(&board, c);
    watch.publish("sp1/inverter/1/set/i_lim_charge", "clear", false);
    let c = gw.next_command();
    assert_eq!((c.scope, c.setpoint), (Scope::Inverter(0), None));
    apply(&board, c);
    watch.wait_for("sp1/setpoints", "all cleared", |m| {
        let j = m.json();
        j["system"]["i_lim_charge"].is_null() && j["inverters"][0]["i_lim_charge"].is_null()
    });
}

#[test]
fn the_default_ttl_applies_to_bare_numbers() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let gw = start(
        config(&broker, "ttl1", "CONTROL-ACTIVATED = true\nSETPOINT-TTL = 600"),
        filled_board(),
    );
    watch.wait_for("ttl1/status", "online", |m| m.text() == "online");
    let sent = Instant::now();
    watch.publish("ttl1/inverter/2/set/i_lim_discharge", "12.5", false);
    let c = gw.next_command();
    assert_eq!((c.scope, c.kind), (Scope::Inverter(1), LimitKind::Discharge));
    let s = c.setpoint.unwrap();
    assert_eq!(s.value, 12.5);
    let expires = s.expires.unwrap();
    assert!(expires >= sent + Duration::from_secs(600) && expires <= Instant::now() + Duration::from_secs(600));
    assert_eq!(watch.wait_nth("ttl1/set/result", 1).json()["ttl_s"], 600.0);
}

#[test]
fn bad_payloads_are_refused_with_a_reason_and_change_nothing() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let gw = start(config(&broker, "bad1", "CONTROL-ACTIVATED = true"), filled_board());
    watch.wait_for("bad1/status", "online", |m| m.text() == "online");
    let long = "9".repeat(65);
    let cases: &[(&str, &str, &str)] = &[
        ("bad1/set/i_lim_charge", "fifty", "not a number"),
        ("bad1/set/i_lim_charge", "NaN", "finite"),
        ("bad1/set/i_lim_charge", "inf", "finite"),
        ("bad1/set/i_lim_discharge", "-5", "negative"),
        ("bad1/set/i_lim_discharge", &long, "longer than 64 bytes"),
        ("bad1/set/i_lim_charge", r#"{"value": }"#, "malformed JSON"),
        ("bad1/set/i_lim_charge", r#"{"value": "50"}"#, "must be a number"),
        ("bad1/set/i_lim_charge", r#"{"value": 5, "ttl": -1}"#, "ttl"),
        ("bad1/set/i_lim_charge", r#"{"valeu": 5}"#, "unknown key"),
        ("bad1/inverter/3/set/i_lim_charge", "5", "numbered 1 to 2"),
        ("bad1/inverter/0/set/i_lim_charge", "5", "numbered 1 to 2"),
        ("bad1/set/soc", "5", "unknown setpoint"),
    ];
    for (n, (topic, payload, reason)) in cases.iter().enumerate() {
        watch.publish(topic, *payload, false);
        let r = watch.wait_nth("bad1/set/result", n + 1).json();
        assert_eq!(r["topic"], *topic, "{payload}");
        assert_eq!(r["ok"], false, "{payload}");
        let error = r["error"].as_str().unwrap();
        assert!(error.contains(reason), "{payload}: {error}");
    }
    assert!(
        gw.commands.try_recv().is_err(),
        "a refused command reached the combiner"
    );
}

#[test]
fn without_control_commands_are_answered_and_ignored() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let gw = start(config(&broker, "off1", ""), filled_board());
    watch.wait_for("off1/status", "online", |m| m.text() == "online");
    watch.publish("off1/set/i_lim_charge", "10", false);
    watch.publish("off1/inverter/1/set/i_lim_discharge", "clear", false);
    let r = watch.wait_nth("off1/set/result", 1).json();
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().starts_with("control is not activated"));
    let r = watch.wait_nth("off1/set/result", 2).json();
    assert_eq!(r["topic"], "off1/inverter/1/set/i_lim_discharge");
    assert_eq!(r["ok"], false);
    std::thread::sleep(Duration::from_millis(300));
    assert!(gw.commands.try_recv().is_err());
}

#[test]
fn a_retained_command_is_not_applied() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    // Left on the broker "last week".
    watch.publish("ret1/set/i_lim_charge", "40", true);
    watch.wait_for("ret1/set/i_lim_charge", "retained command stored", |_| true);
    let gw = start(config(&broker, "ret1", "CONTROL-ACTIVATED = true"), filled_board());
    let r = watch.wait_nth("ret1/set/result", 1).json();
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().starts_with("retained command ignored"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(gw.commands.try_recv().is_err());
    // The same value sent live is taken.
    watch.publish("ret1/set/i_lim_charge", "40", false);
    assert_eq!(gw.next_command().setpoint.unwrap().value, 40.0);
    watch.publish("ret1/set/i_lim_charge", "", true);
}

/// A stand-in for a CAN thread: touches the board every 5 ms and records the
/// longest pause between two rounds.
struct Busy {
    stop: Arc<AtomicBool>,
    longest_ms: Arc<AtomicU64>,
    rounds: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Busy {
    fn start(board: Arc<StatusBoard>) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let longest_ms = Arc::new(AtomicU64::new(0));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, l, r) = (stop.clone(), longest_ms.clone(), rounds.clone());
        let handle = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !s.load(Ordering::Relaxed) {
                board.output(0, |o| o.frames_sent += 1);
                board.input(0, |i| i.frames += 1);
                r.fetch_add(1, Ordering::Relaxed);
                let gap = last.elapsed().as_millis() as u64;
                l.fetch_max(gap, Ordering::Relaxed);
                last = Instant::now();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Busy {
            stop,
            longest_ms,
            rounds,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        (
            self.rounds.load(Ordering::Relaxed),
            self.longest_ms.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn a_broker_restart_loses_telemetry_but_never_blocks_and_telemetry_resumes_fresh() {
    let mut broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let board = filled_board();
    let busy = Busy::start(board.clone());
    let mut gw = start(config(&broker, "rs1", "CONTROL-ACTIVATED = true"), board);
    watch.wait_nth("tele/rs1/state", 2);

    broker.kill();
    // Several INTERVALs of outage: nothing may be queued for later.
    std::thread::sleep(Duration::from_secs(3));
    let restarted_at = wall_now();
    let restarted = Instant::now();
    broker.restart();

    // The watcher reconnects on its own; the gateway after its back-off.
    let status = watch.wait_for("rs1/status", "online after restart", |m| {
        m.at > restarted && m.text() == "online"
    });
    let first = watch.wait_for("tele/rs1/state", "telemetry after restart", |m| m.at > restarted);
    // Resubscribed: a command is answered again.
    watch.publish("rs1/set/i_lim_charge", "20", false);
    assert_eq!(gw.next_command().setpoint.unwrap().value, 20.0);
    watch.wait_nth("rs1/set/result", 1);
    watch.wait_nth("tele/rs1/state", watch.all("tele/rs1/state").len() + 2);
    // Nothing made during the outage arrived late.
    for m in watch.all("tele/rs1/state").iter().filter(|m| m.at > restarted) {
        let ts = m.json()["timestamp"].as_f64().unwrap();
        assert!(
            ts >= restarted_at - 0.05,
            "telemetry of {ts} sent after the restart at {restarted_at}"
        );
    }
    assert!(status.at <= first.at + Duration::from_secs(5));

    assert!(gw.stop() < Duration::from_secs(2));
    let (rounds, longest_ms) = busy.finish();
    assert!(rounds > 100, "the busy thread made only {rounds} rounds");
    assert!(longest_ms < 1000, "the busy thread paused {longest_ms} ms");
}

/// An event whose PUBLISH went out but was never acknowledged (the broker
/// froze, then died with it unread) is published again once the gateway is
/// back, and only once: a broker's crash loses no event.
#[test]
fn an_event_in_flight_when_the_broker_dies_is_published_after_the_reconnect() {
    let mut broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "ev1/#");
    let board = filled_board();
    let mut gw = start(config(&broker, "ev1", ""), board.clone());
    watch.wait_for("ev1/status", "online", |m| m.text() == "online");
    broker.freeze();
    gw.events
        .emit(Kind::BatteryLost, Subject::Battery(0), "battery 1 (can1): in flight");
    // Written to the frozen broker's socket, never acknowledged.
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    // Subscribed before the gateway's first retry (after 1 s).
    let after = Watcher::connect(&broker, "#");
    let event = after.wait_for("ev1/event", "the event in flight at the crash", |m| {
        m.text().contains("in flight")
    });
    assert_eq!(event.json()["kind"], "battery_lost", "{}", event.text());
    // Not published twice: the connection's own publishing of recent events
    // (at the connect) and telemetry have gone out by now.
    after.wait_for("ev1/status", "online after the restart", |m| m.text() == "online");
    after.wait_for("tele/ev1/state", "telemetry after the restart", |_| true);
    std::thread::sleep(Duration::from_millis(500));
    let copies = after
        .all("ev1/event")
        .into_iter()
        .filter(|m| m.text().contains("in flight"))
        .count();
    assert_eq!(copies, 1);
    assert!(gw.stop() < Duration::from_secs(2));
}

#[test]
fn a_wrong_password_gives_a_clear_log_line_and_nothing_else_stops() {
    let logs = logs();
    let broker = Broker::with_password("bms", "right");
    let password = broker.dir().join("gateway-password");
    std::fs::write(&password, "wrong\n").unwrap();
    let board = filled_board();
    let busy = Busy::start(board.clone());
    let mut gw = start(
        config(
            &broker,
            "pw1",
            &format!("USERNAME = \"bms\"\nPASSWORD-FILE = \"{}\"", password.display()),
        ),
        board,
    );
    let broker_name = format!("MQTT broker 127.0.0.1:{}", broker.port);
    let line = logs.wait_for(&[&broker_name, "refused the connection"]);
    assert!(line.contains("bad user name or password"), "{line}");
    assert!(line.contains("check USERNAME and PASSWORD-FILE"), "{line}");
    // Retries (after 1 s and 3 s) repeat the same error: logged once.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(logs.matching(&[&broker_name, "refused the connection"]).len(), 1);
    assert!(gw.stop() < Duration::from_secs(2));
    let (rounds, longest_ms) = busy.finish();
    assert!(
        rounds > 100 && longest_ms < 1000,
        "{rounds} rounds, longest pause {longest_ms} ms"
    );
}

#[test]
fn a_password_protected_broker_works() {
    let broker = Broker::with_password("bms", "s3cret pass");
    let password = broker.dir().join("gateway-password");
    std::fs::write(&password, "s3cret pass\n").unwrap();
    let watch = Watcher::connect(&broker, "#");
    let _gw = start(
        config(
            &broker,
            "pw2",
            &format!("USERNAME = \"bms\"\nPASSWORD-FILE = \"{}\"", password.display()),
        ),
        filled_board(),
    );
    let got = watch.wait_for("tele/pw2/state", "telemetry", |_| true).json();
    assert_eq!(got["soc"], 75.0);
}

#[test]
fn a_missing_password_file_is_logged_and_read_again_at_the_next_attempt() {
    let logs = logs();
    let broker = Broker::with_password("bms", "later");
    let password = broker.dir().join("not-yet-there");
    let watch = Watcher::connect(&broker, "#");
    let _gw = start(
        config(
            &broker,
            "pw3",
            &format!("USERNAME = \"bms\"\nPASSWORD-FILE = \"{}\"", password.display()),
        ),
        filled_board(),
    );
    logs.wait_for(&["cannot read the MQTT password from", &password.display().to_string()]);
    std::fs::write(&password, "later\n").unwrap();
    let got = watch.wait_for("tele/pw3/state", "telemetry", |_| true).json();
    assert_eq!(got["soc"], 75.0);
}

fn tls_config(broker: &Broker, base: &str, host: &str, ca: &std::path::Path, client: Option<&TestPki>) -> Config {
    let mut extra = format!("TLS = true\nCA-FILE = \"{}\"\n", ca.display());
    if let Some(pki) = client {
        extra.push_str(&format!(
            "CERT-FILE = \"{}\"\nKEY-FILE = \"{}\"\n",
            pki.client_cert.display(),
            pki.client_key.display()
        ));
    }
    let mut c = config(broker, base, &extra);
    c.mqtt.broker = host.into();
    c
}

#[test]
fn a_tls_broker_with_a_test_ca_works() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::make(dir.path(), "t1");
    let broker = Broker::start(
        Auth::Anonymous,
        Some(TlsListener {
            pki: pki.clone(),
            require_client_cert: false,
        }),
    );
    let watch = Watcher::connect(&broker, "#");
    // By host name: the server certificate names localhost.
    let _gw = start(
        tls_config(&broker, "tls1", "localhost", &pki.ca_cert, None),
        filled_board(),
    );
    let got = watch.wait_for("tele/tls1/state", "telemetry over TLS", |_| true).json();
    assert_eq!(got["soc"], 75.0);
}

#[test]
fn a_tls_broker_requiring_a_client_certificate_works() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::make(dir.path(), "t2");
    let broker = Broker::start(
        Auth::Anonymous,
        Some(TlsListener {
            pki: pki.clone(),
            require_client_cert: true,
        }),
    );
    let watch = Watcher::connect(&broker, "#");
    // By address: the server certificate names 127.0.0.1 too.
    let _gw = start(
        tls_config(&broker, "tls2", "127.0.0.1", &pki.ca_cert, Some(&pki)),
        filled_board(),
    );
    let got = watch.wait_for("tele/tls2/state", "telemetry over TLS", |_| true).json();
    assert_eq!(got["soc"], 75.0);
}

#[test]
fn a_broker_certificate_from_another_ca_is_refused_with_a_clear_line() {
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::make(dir.path(), "t3");
    let other = TestPki::make(dir.path(), "other");
    let broker = Broker::start(
        Auth::Anonymous,
        Some(TlsListener {
            pki,
            require_client_cert: false,
        }),
    );
    let watch = Watcher::connect(&broker, "#");
    let _gw = start(
        tls_config(&broker, "tls3", "127.0.0.1", &other.ca_cert, None),
        filled_board(),
    );
    let line = logs.wait_for(&[&format!("MQTT broker 127.0.0.1:{}", broker.port), "TLS failed"]);
    assert!(line.contains("CA-FILE"), "{line}");
    assert!(watch.all("tele/tls3/state").is_empty());
}

/// The availability entry of a gateway's status topic, as Home Assistant's
/// documentation describes the `availability` list.
fn gateway_available(base: &str) -> Value {
    json!({"topic": format!("{base}/status"), "payload_available": "online", "payload_not_available": "offline"})
}

fn discovery_of(watch: &Watcher, prefix: &str, object_topic: &str) -> Value {
    let topic = format!("{prefix}/{object_topic}/config");
    watch
        .wait_for(&topic, "discovery config", |m| !m.payload.is_empty())
        .json()
}

#[test]
fn discovery_payloads_are_json_with_the_right_classes_and_units() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "ha/#");
    let _gw = start(
        config(
            &broker,
            "disc1",
            "CONTROL-ACTIVATED = true\nHA-DISCOVERY-PREFIX = \"ha\"",
        ),
        filled_board(),
    );
    let cases = [
        (
            "sensor/disc1/soc",
            Some("battery"),
            Some("%"),
            Some("measurement"),
            "tele/disc1/state",
        ),
        (
            "sensor/disc1/v_avg",
            Some("voltage"),
            Some("V"),
            Some("measurement"),
            "tele/disc1/state",
        ),
        (
            "sensor/disc1/i_total",
            Some("current"),
            Some("A"),
            Some("measurement"),
            "tele/disc1/state",
        ),
        (
            "sensor/disc1/power_w",
            Some("power"),
            Some("W"),
            Some("measurement"),
            "tele/disc1/state",
        ),
        (
            "sensor/disc1/t_avg",
            Some("temperature"),
            Some("°C"),
            Some("measurement"),
            "tele/disc1/state",
        ),
        (
            "sensor/disc1/capacity_ah",
            None,
            Some("Ah"),
            Some("measurement"),
            "tele/disc1/state",
        ),
        (
            "sensor/disc1/battery_can2_soc",
            Some("battery"),
            Some("%"),
            Some("measurement"),
            "disc1/battery/2/state",
        ),
        (
            "sensor/disc1/battery_can1_v_avg",
            Some("voltage"),
            Some("V"),
            Some("measurement"),
            "disc1/battery/1/state",
        ),
        (
            "sensor/disc1/battery_can1_t_avg",
            Some("temperature"),
            Some("°C"),
            Some("measurement"),
            "disc1/battery/1/state",
        ),
    ];
    for (object, class, unit, state_class, state_topic) in cases {
        let p = discovery_of(&watch, "ha", object);
        assert_eq!(p["device_class"].as_str(), class, "{object}");
        assert_eq!(p["unit_of_measurement"].as_str(), unit, "{object}");
        assert_eq!(p["state_class"].as_str(), state_class, "{object}");
        assert_eq!(p["state_topic"], state_topic, "{object}");
        // Home Assistant's availability list: the gateway's status, and
        // for a battery's entities its freshness too; all must say online.
        assert_eq!(p["availability"][0], gateway_available("disc1"), "{object}");
        assert_eq!(p["availability_mode"], "all", "{object}");
        assert_eq!(p["origin"]["name"], "bms-gateway", "{object}");
        assert_eq!(p["origin"]["sw_version"], env!("CARGO_PKG_VERSION"), "{object}");
        let n = if state_topic.contains("/battery/") { 2 } else { 1 };
        assert_eq!(p["availability"].as_array().unwrap().len(), n, "{object}");
    }
    let b2 = discovery_of(&watch, "ha", "sensor/disc1/battery_can2_soc");
    assert_eq!(
        b2["availability"][1],
        json!({
            "topic": "disc1/battery/2/state",
            "value_template": "{{ 'online' if value_json.online else 'offline' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        })
    );
    // Names: the DESCRIPTION alone, else "Battery N" / "Inverter N".
    let b1 = discovery_of(&watch, "ha", "sensor/disc1/battery_can1_soc");
    assert_eq!(b1["device"]["name"], "rack A");
    assert_eq!(b1["name"], "State of charge");
    assert_eq!(b2["device"]["name"], "Battery 2");
    assert_eq!(b2["device"]["model"], "Pylontech-protocol BMS");
    // Battery 1's BMS said "PYLON" in its 0x35E: the gateway renews its
    // discovery with it as the manufacturer; battery 2 was never heard.
    let named = watch
        .wait_for("ha/sensor/disc1/battery_can1_soc/config", "BMS name", |m| {
            m.json()["device"]["manufacturer"] == "PYLON"
        })
        .json();
    assert_eq!(named["device"]["name"], "rack A");
    assert!(b2["device"].get("manufacturer").is_none());
    let inv1 = discovery_of(&watch, "ha", "sensor/disc1/inverter_inv1_i_lim_charge");
    assert_eq!(inv1["state_topic"], "disc1/inverter/1/state");
    assert_eq!(inv1["name"], "Charge current limit");
    assert_eq!(inv1["device"]["name"], "hybrid");
    assert_eq!(
        inv1["device"]["identifiers"],
        json!(["bms_gateway_disc1_inverter_inv1"])
    );
    assert_eq!(inv1["device"]["via_device"], "bms_gateway_disc1");
    let inv2 = discovery_of(&watch, "ha", "sensor/disc1/inverter_inv2_i_lim_charge");
    assert_eq!(inv2["device"]["name"], "Inverter 2");
    let alarm = discovery_of(&watch, "ha", "binary_sensor/disc1/protection");
    assert_eq!(alarm["device_class"], "problem");
    let online = discovery_of(&watch, "ha", "binary_sensor/disc1/battery_can1_online");
    assert_eq!(online["device_class"], "connectivity");
    let number = discovery_of(&watch, "ha", "number/disc1/setpoint_i_lim_charge");
    assert_eq!(number["command_topic"], "disc1/set/i_lim_charge");
    assert_eq!(number["max"], 100.0);
    assert_eq!(number["unit_of_measurement"], "A");
    // One device for the system, one per battery.
    let system = discovery_of(&watch, "ha", "sensor/disc1/soc");
    let b1 = discovery_of(&watch, "ha", "sensor/disc1/battery_can1_soc");
    let b2 = discovery_of(&watch, "ha", "sensor/disc1/battery_can2_soc");
    let ids: Vec<&Value> = [&system, &b1, &b2]
        .iter()
        .map(|p| &p["device"]["identifiers"][0])
        .collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    assert_eq!(b1["device"]["via_device"], system["device"]["identifiers"][0]);
    // Every message is retained (as first delivered to a late subscriber)
    // and parses as JSON. First let the burst at connect time end.
    let mut seen = 0;
    while watch.all("ha/#").len() != seen {
        seen = watch.all("ha/#").len();
        std::thread::sleep(Duration::from_millis(500));
    }
    let late = Watcher::connect(&broker, "ha/#");
    std::thread::sleep(Duration::from_millis(500));
    let all = late.all("ha/#");
    assert!(all.len() > 40, "only {} discovery messages", all.len());
    for m in all {
        assert!(m.retain, "{} not retained", m.topic);
        let p = m.json();
        assert!(p["unique_id"].is_string() && p["device"].is_object(), "{}", m.topic);
    }
}

#[test]
fn a_battery_removed_from_the_config_loses_its_entities_on_the_next_start() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "homeassistant/#");
    let two = config_for(broker.port, "rm1", "", &["can1", "can2"]);
    let mut gw = start(two, filled_board());
    let soc2 = "homeassistant/sensor/rm1/battery_can2_soc/config";
    watch.wait_for(soc2, "battery 2 announced", |m| !m.payload.is_empty());
    gw.stop();

    let one = config_for(broker.port, "rm1", "", &["can1"]);
    let board = Arc::new(StatusBoard::new(1, 2));
    let _gw = start(one, board);
    watch.wait_for(soc2, "battery 2 removed", |m| m.payload.is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let late = Watcher::connect(&broker, "homeassistant/#");
    late.wait_for(
        "homeassistant/sensor/rm1/battery_can1_soc/config",
        "battery 1 kept",
        |_| true,
    );
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<String> = late
        .all("homeassistant/#")
        .into_iter()
        .filter(|m| m.topic.contains("battery_can2"))
        .map(|m| m.topic)
        .collect();
    assert!(left.is_empty(), "still announced: {left:?}");
}

#[test]
fn home_assistant_coming_online_gets_the_discovery_again() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "homeassistant/#");
    let _gw = start(config(&broker, "har1", ""), filled_board());
    let soc = "homeassistant/sensor/har1/soc/config";
    watch.wait_for(soc, "discovery", |_| true);
    std::thread::sleep(Duration::from_millis(500));
    let before = watch.all(soc).len();
    // Home Assistant's birth message.
    watch.publish("homeassistant/status", "online", false);
    watch.wait_nth(soc, before + 1);
}

/// Renders Home Assistant templates with Jinja2, as Home Assistant does
/// (tests/jinja/render.py); each item is `{"template", "payload"}` or
/// `{"template", "value"}`.
fn render(items: &[Value]) -> Vec<String> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jinja/render.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (make deps installs python3 and python3-jinja2)");
    let input = serde_json::to_vec(items).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rendering failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every discovery template rendered as Home Assistant renders it, against
/// the gateway's own messages: a null value gives `None` (HA: unknown), an
/// offline battery's availability `offline`, the number entities' command
/// template a command the gateway accepts. Expected values by hand from the
/// board (see `filled_board`).
#[test]
fn discovery_templates_render_as_home_assistant_needs() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let board = filled_board();
    // An event, for the event entity (published at connect: it is recent).
    let events = Arc::new(Events::default());
    events.emit(Kind::BatteryLost, Subject::Battery(1), "battery 2 (can2): stale");
    let extra = "CONTROL-ACTIVATED = true\nHA-SETPOINT-TTL = 900\nHA-DISCOVERY-PREFIX = \"ha\"";
    let gw = start_with_events(config(&broker, "tpl1", extra), board.clone(), events);
    // A gateway whose batteries were never heard: state "starting".
    let starting = Arc::new(StatusBoard::new(2, 2));
    let starting_events = Arc::new(Events::default());
    starting_events.emit(Kind::StateChanged, Subject::System, "state ok");
    let _starting = start_with_events(
        config(&broker, "tpl2", "HA-DISCOVERY-PREFIX = \"ha\""),
        starting,
        starting_events,
    );
    watch.wait_for("tpl1/status", "online", |m| m.text() == "online");
    // System charge 50 A for 600 s; inverter 1 discharge 20 A until changed.
    watch.publish("tpl1/set/i_lim_charge", r#"{"value": 50, "ttl": 600}"#, false);
    apply(&board, gw.next_command());
    watch.publish(
        "tpl1/inverter/1/set/i_lim_discharge",
        r#"{"value": 20, "ttl": 0}"#,
        false,
    );
    apply(&board, gw.next_command());
    let setpoints = watch.wait_for("tpl1/setpoints", "both setpoints", |m| {
        let j = m.json();
        !j["system"]["i_lim_charge"].is_null() && !j["inverters"][0]["i_lim_discharge"].is_null()
    });
    for base in ["tpl1", "tpl2"] {
        watch.wait_for(&format!("tele/{base}/state"), "telemetry", |_| true);
        watch.wait_for(&format!("{base}/battery/2/state"), "battery 2", |_| true);
        watch.wait_for(&format!("{base}/inverter/2/state"), "inverter 2", |_| true);
    }
    // Let the discovery burst (and the renewal with the BMS name) end.
    let mut seen = 0;
    while watch.all("ha/#").len() != seen {
        seen = watch.all("ha/#").len();
        std::thread::sleep(Duration::from_millis(500));
    }
    let latest = |topic: &str| -> String {
        if topic == "tpl1/setpoints" {
            return setpoints.text();
        }
        watch
            .all(topic)
            .last()
            .unwrap_or_else(|| panic!("nothing on {topic}"))
            .text()
    };
    // Every value template of both gateways (StrictUndefined: a key the
    // payload lacks fails), and every battery availability template.
    let mut items = Vec::new();
    let mut names = Vec::new();
    let mut configs: Vec<(String, Value)> = Vec::new();
    for m in watch.all("ha/+/+/+/config") {
        if m.payload.is_empty() {
            continue;
        }
        let object = m
            .topic
            .trim_start_matches("ha/")
            .trim_end_matches("/config")
            .to_string();
        configs.retain(|(o, _)| *o != object);
        configs.push((object, m.json()));
    }
    assert!(configs.len() > 100, "{}", configs.len());
    for (object, p) in &configs {
        if let Some(t) = p["value_template"].as_str() {
            let payload = latest(p["state_topic"].as_str().unwrap());
            items.push(json!({"template": t, "payload": payload}));
            names.push(object.clone());
        }
        if let Some(a) = p["availability"].get(1) {
            let payload = latest(a["topic"].as_str().unwrap());
            items.push(json!({"template": a["value_template"], "payload": payload}));
            names.push(format!("{object} availability"));
        }
        if let Some(t) = p["command_template"].as_str() {
            items.push(json!({"template": t, "value": 42.5}));
            names.push(format!("{object} command"));
        }
    }
    let rendered: std::collections::HashMap<String, String> = names.into_iter().zip(render(&items)).collect();
    let cases = [
        ("sensor/tpl1/soc", "75.0"),
        // 0.75 x 150 Ah x 51.23 V
        ("sensor/tpl1/energy_stored_kwh", "5.76"),
        ("sensor/tpl1/state", "ok"),
        ("binary_sensor/tpl1/charge_enable", "ON"),
        ("binary_sensor/tpl1/protection", "OFF"),
        // warning_flags_1 = 0x02: high voltage.
        ("binary_sensor/tpl1/alarm", "ON"),
        ("binary_sensor/tpl1/alarm_high_voltage", "ON"),
        ("binary_sensor/tpl1/alarm_low_voltage", "OFF"),
        ("binary_sensor/tpl1/force_charge_request", "OFF"),
        ("sensor/tpl1/battery_can1_soc", "80.0"),
        ("binary_sensor/tpl1/battery_can1_charge_enable", "ON"),
        ("binary_sensor/tpl1/battery_can1_online", "ON"),
        ("sensor/tpl1/battery_can1_soc availability", "online"),
        // Battery 2 never sent a telegram.
        ("sensor/tpl1/battery_can2_soc", "None"),
        ("sensor/tpl1/battery_can2_energy_stored_kwh", "None"),
        ("binary_sensor/tpl1/battery_can2_charge_enable", "None"),
        ("binary_sensor/tpl1/battery_can2_protection", "None"),
        ("binary_sensor/tpl1/battery_can2_alarm", "None"),
        ("binary_sensor/tpl1/battery_can2_online", "OFF"),
        ("sensor/tpl1/battery_can2_link", "opening"),
        ("sensor/tpl1/battery_can2_soc availability", "offline"),
        ("sensor/tpl1/inverter_inv1_i_lim_charge", "90.0"),
        ("sensor/tpl1/inverter_inv1_state", "ok"),
        ("sensor/tpl1/inverter_inv2_state", "None"),
        ("sensor/tpl1/inverter_inv2_i_lim_charge", "None"),
        ("number/tpl1/setpoint_i_lim_charge", "50.0"),
        // No setpoint: the cap.
        ("number/tpl1/setpoint_i_lim_discharge", "120"),
        ("binary_sensor/tpl1/setpoint_i_lim_charge_active", "ON"),
        ("binary_sensor/tpl1/setpoint_i_lim_discharge_active", "OFF"),
        ("sensor/tpl1/setpoint_i_lim_discharge_expires", "None"),
        ("binary_sensor/tpl1/inverter_inv1_setpoint_i_lim_discharge_active", "ON"),
        // Until changed: no expiry.
        ("sensor/tpl1/inverter_inv1_setpoint_i_lim_discharge_expires", "None"),
        ("sensor/tpl1/inverter_inv2_setpoint_i_lim_charge_expires", "None"),
        (
            "number/tpl1/setpoint_i_lim_charge command",
            r#"{"value": 42.5, "ttl": 900}"#,
        ),
        (
            "event/tpl1/event",
            r#"{"event_type":"battery_lost","message":"battery 2 (can2): stale","battery":2,"inverter":null}"#,
        ),
        ("sensor/tpl1/energy_charged_kwh", "0.0"),
        ("sensor/tpl1/battery_can1_energy_discharged_kwh", "0.0"),
        ("sensor/tpl2/soc", "None"),
        ("sensor/tpl2/state", "starting"),
        ("sensor/tpl2/energy_stored_kwh", "None"),
        ("binary_sensor/tpl2/charge_enable", "None"),
        ("binary_sensor/tpl2/protection", "None"),
        ("binary_sensor/tpl2/alarm_high_voltage", "None"),
        ("binary_sensor/tpl2/force_charge_request", "None"),
        ("binary_sensor/tpl2/balancing_charge_request", "None"),
    ];
    for (name, want) in cases {
        assert_eq!(rendered.get(name).map(String::as_str), Some(want), "{name}");
    }
    // The expiry as an aware UTC datetime: its time of day is that of the
    // Unix time in BASE/setpoints.
    let expires = setpoints.json()["system"]["i_lim_charge"]["expires"].as_f64().unwrap();
    let secs = expires.floor() as u64 % 86400;
    let time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let got = &rendered["sensor/tpl1/setpoint_i_lim_charge_expires"];
    assert!(
        got.len() >= 25 && got[11..19] == time && got.ends_with("+00:00"),
        "{got} should be a UTC datetime at {time}"
    );
    // What the number entity sends is a command the gateway takes: 42.5 A
    // for HA-SETPOINT-TTL (900 s).
    let before = Instant::now();
    watch.publish(
        "tpl1/set/i_lim_charge",
        rendered["number/tpl1/setpoint_i_lim_charge command"].as_str(),
        false,
    );
    let c = gw.next_command();
    let s = c.setpoint.expect("a setpoint");
    assert_eq!((c.scope, c.kind, s.value), (Scope::System, LimitKind::Charge, 42.5));
    let ttl = s.expires.expect("it expires").duration_since(before);
    // The gateway took its time after `before`, within PATIENCE.
    let ttl_s = Duration::from_secs(900);
    assert!(ttl >= ttl_s && ttl < ttl_s + PATIENCE, "{ttl:?}");
}

fn bms_gateway(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bms-gateway"))
        .args(args)
        .output()
        .expect("bms-gateway runs")
}

/// `demo --mqtt` publishes the whole integration under its own base topic
/// next to a real gateway on the same broker, and `--remove` deletes what it
/// left (and nothing of the real gateway's).
#[test]
fn the_demo_publishes_under_its_own_base_and_remove_clears_it() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let real = start(config(&broker, "bms_gateway", ""), filled_board());
    watch.wait_for("homeassistant/sensor/bms_gateway/soc/config", "real gateway", |_| true);
    let address = format!("127.0.0.1:{}", broker.port);
    let out = bms_gateway(&[
        "demo",
        "--mqtt",
        &address,
        "--duration",
        "4",
        "--batteries",
        "2",
        "--inverters",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("--remove"), "the table says how to remove it: {table}");

    let soc = watch
        .wait_for(
            "homeassistant/sensor/bms_gateway_demo/battery_bat1_soc/config",
            "demo discovery",
            |m| m.json()["device"]["manufacturer"] == "PYLON",
        )
        .json();
    assert_eq!(soc["state_topic"], "bms_gateway_demo/battery/1/state");
    assert_eq!(soc["device"]["name"], "Simulated battery 1");
    let system = discovery_of(&watch, "homeassistant", "sensor/bms_gateway_demo/soc");
    assert_eq!(system["device"]["name"], "BMS gateway demo");
    assert_eq!(system["state_topic"], "tele/bms_gateway_demo/state");
    let state = watch.wait_for("tele/bms_gateway_demo/state", "demo telemetry", |m| {
        m.json()["state"] == "ok"
    });
    assert_eq!(state.json()["inputs_online"], 2);
    // Its status went offline when it stopped; the real gateway's did not.
    watch.wait_for("bms_gateway_demo/status", "offline", |m| m.text() == "offline");
    assert_eq!(watch.all("bms_gateway/status").last().unwrap().text(), "online");
    // Nothing of the demo's went to the real gateway's topics.
    assert!(watch.all("tele/bms/state").is_empty());
    let demo_topics = watch.all("homeassistant/+/bms_gateway_demo/+/config").len();
    assert!(demo_topics > 80, "{demo_topics}");

    let out = bms_gateway(&["demo", "--mqtt", &address, "--remove"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("removed "), "{said}");
    let late = Watcher::connect(&broker, "#");
    late.wait_for(
        "homeassistant/sensor/bms_gateway/soc/config",
        "real gateway kept",
        |m| !m.payload.is_empty(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<String> = late
        .all("#")
        .into_iter()
        .filter(|m| m.retain && m.topic.contains("bms_gateway_demo"))
        .map(|m| m.topic)
        .collect();
    assert!(left.is_empty(), "still retained: {left:?}");
    // The number removed: the demo's discovery configs, status and setpoints.
    let distinct: std::collections::HashSet<String> = watch
        .all("homeassistant/+/bms_gateway_demo/+/config")
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(
        said.split(' ').nth(1),
        Some((distinct.len() + 2).to_string().as_str()),
        "{said}"
    );
    drop(real);
}

/// `demo --mqtt` with a login: a wrong password is said at once (exit 1),
/// the right one is taken (here by `--remove`, which finds nothing).
#[test]
fn the_demo_logs_in_with_username_and_password_file() {
    let broker = Broker::with_password("demo", "s3cret");
    let address = format!("127.0.0.1:{}", broker.port);
    let wrong = broker.dir().join("wrong");
    let right = broker.dir().join("right");
    std::fs::write(&wrong, "nope\n").unwrap();
    std::fs::write(&right, "s3cret\n").unwrap();
    let login = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["demo", "--mqtt", &address, "--username", "demo"];
        args.extend(["--password-file", file.to_str().unwrap()]);
        args.extend(extra);
        bms_gateway(&args)
    };
    let out = login(&wrong, &["--duration", "30"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad user name or password"), "{err}");
    let out = login(&right, &["--remove"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("removed 0 "));
}

/// `BASE/set/charge_stop_soc` (spec 15): accepted in %, clamped to 100,
/// answered on BASE/set/result and listed in BASE/setpoints; refused on an
/// inverter's topic.
#[test]
fn the_charge_stop_soc_command_is_answered_and_listed() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let board = filled_board();
    let gw = start(config(&broker, "cs1", "CONTROL-ACTIVATED = true"), board.clone());
    watch.wait_for("cs1/status", "online", |m| m.text() == "online");
    let results = "cs1/set/result";
    watch.publish("cs1/set/charge_stop_soc", "120", false);
    let c = gw.next_command();
    assert_eq!((c.scope, c.setpoint.map(|s| s.value)), (Scope::ChargeStop, Some(100.0)));
    let r = watch.wait_nth(results, 1).json();
    assert_eq!(
        (
            r["topic"].clone(),
            r["ok"].clone(),
            r["value"].clone(),
            r["clamped"].clone()
        ),
        (json!("cs1/set/charge_stop_soc"), json!(true), json!(100.0), json!(true))
    );
    watch.publish("cs1/set/charge_stop_soc", "80", false);
    let c = gw.next_command();
    apply(&board, c);
    watch.wait_for("cs1/setpoints", "charge stop 80", |m| {
        m.json()["system"]["charge_stop_soc"]["value"] == 80.0
    });
    watch.publish("cs1/inverter/1/set/charge_stop_soc", "80", false);
    let r = watch.wait_nth(results, 3).json();
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("whole bank only"), "{r}");
    drop(gw);
}

/// Battery 1 an RS485 pack (the reference's V7, US5000: 15 cells, 5
/// sensors), battery 2 a CAN pack with 0x373 (the reference's
/// D80CF10C22012A01: 3.288 and 3.313 V). Expected values by hand from the
/// vectors: V7's cells 0D17 0D14 0D15 0D15 0D18 three times, its sensors
/// (0C0B, 0BEF, 0BF0, 0BED, 0C0B) - 2731 in 0.1 degC.
#[test]
fn cells_reach_mqtt_and_home_assistant_renders_every_cell() {
    use bms_gateway::codec::CellExtremes;
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let board = Arc::new(StatusBoard::new(2, 2));
    let now = Instant::now();
    let rs485 = rs485_vectors::telegram(rs485_vectors::V7_ANALOG, bms_gateway::rs485::Protocol::Pylon);
    let can = Telegram {
        cells: Some(CellExtremes {
            v_cell_min: 3.288,
            v_cell_max: 3.313,
            t_cell_min: 17.0,
            t_cell_max: 25.0,
        }),
        ..telegram()
    };
    for (i, t) in [rs485, can].into_iter().enumerate() {
        board.input(i, |input| {
            input.telegram = Some(t);
            input.last_telegram = Some(now);
        });
    }
    board.system(|s| s.inputs_fresh = vec![true, true]);
    let extra = "HA-DISCOVERY-PREFIX = \"ha\"\nHA-CELL-ENTITIES = true";
    let _gw = start(config(&broker, "cell1", extra), board);

    let b1 = watch.wait_for("cell1/battery/1/state", "battery 1", |_| true).json();
    let five = [3.351, 3.348, 3.349, 3.349, 3.352];
    let cells: Vec<f64> = five.iter().chain(&five).chain(&five).copied().collect();
    assert_eq!(b1["cells_v"], json!(cells));
    assert_eq!(b1["cells_t"], json!([35.2, 32.4, 32.5, 32.2, 35.2]));
    let extremes = |b: &Value| {
        (
            b["cell_v_min"].clone(),
            b["cell_v_max"].clone(),
            b["cell_v_delta"].clone(),
        )
    };
    assert_eq!(extremes(&b1), (json!(3.348), json!(3.352), json!(0.004)));
    let b2 = watch.wait_for("cell1/battery/2/state", "battery 2", |_| true).json();
    assert_eq!(
        (b2["cells_v"].clone(), b2["cells_t"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(extremes(&b2), (json!(3.288), json!(3.313), json!(0.025)));

    // Battery 1's cells are learned from its telegram: 15 + 5 entities.
    let v15 = "ha/sensor/cell1/battery_can1_cells_v_15/config";
    watch.wait_for(v15, "cell 15", |m| !m.payload.is_empty());
    let mut seen = 0;
    while watch.all("ha/#").len() != seen {
        seen = watch.all("ha/#").len();
        std::thread::sleep(Duration::from_millis(500));
    }
    let topics: Vec<String> = watch.all("ha/#").into_iter().map(|m| m.topic).collect();
    let count = |pattern: &str| {
        let distinct: std::collections::HashSet<&String> = topics.iter().filter(|t| t.contains(pattern)).collect();
        distinct.len()
    };
    assert_eq!(count("/battery_can1_cells_v_"), 15);
    assert_eq!(count("/battery_can1_cells_t_"), 5);
    assert_eq!(count("/battery_can2_cells_"), 0, "a CAN pack has no per-cell entities");
    // Rendered as Home Assistant renders them, against the state payloads.
    let objects = [
        ("battery_can1_cells_v_1", "cell1/battery/1/state", "3.351"),
        ("battery_can1_cells_v_15", "cell1/battery/1/state", "3.352"),
        ("battery_can1_cells_t_5", "cell1/battery/1/state", "35.2"),
        ("battery_can1_cell_v_delta", "cell1/battery/1/state", "0.004"),
        ("battery_can2_cell_v_delta", "cell1/battery/2/state", "0.025"),
        ("battery_can2_v_cell_min", "cell1/battery/2/state", "3.288"),
    ];
    let items: Vec<Value> = objects
        .iter()
        .map(|(object, state, _)| {
            let p = discovery_of(&watch, "ha", &format!("sensor/cell1/{object}"));
            let payload = watch.all(state).last().unwrap().text();
            json!({"template": p["value_template"], "payload": payload})
        })
        .collect();
    let rendered = render(&items);
    for ((object, _, want), got) in objects.iter().zip(&rendered) {
        assert_eq!(got, want, "{object}");
    }
    // A cell template on a payload without cells (a CAN pack's): unknown.
    let p = discovery_of(&watch, "ha", "sensor/cell1/battery_can1_cells_v_1");
    let none = render(&[
        json!({"template": p["value_template"], "payload": watch.all("cell1/battery/2/state").last().unwrap().text()}),
    ]);
    assert_eq!(none, ["None"]);
}
