//! MQTT through the whole gateway: the real gateway threads on the
//! in-process virtual bus (tests/common) with `mqtt::run` beside them and a
//! real Mosquitto broker (tests/mosquitto). A setpoint sent over MQTT reaches
//! the inverter's frames; a broker outage or a refused login never pauses
//! the frames to the inverters.

mod common;
mod config_text;
mod mosquitto;

use bms_gateway::codec::{self, Message};
use bms_gateway::mqtt;
use bms_gateway::sim::BatteryParams;
use common::{Rig, Timing, close, is_id, plain_battery};
use config_text::ConfigText;
use crossbeam_channel::{Sender, bounded};
use mosquitto::{Broker, Watcher, logs};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// One battery (CCL 200 A, DCL 180 A) and one push-mode inverter: the
/// inverter is shown CCL 200, DCL 180 without setpoints.
fn toml(port: u16, base: &str, extra: &str) -> String {
    ConfigText::new()
        .battery("I-LIM-CHARGE = 300\nSTALE-TIMEOUT = 1.0")
        .input("bat1", 100.0, "")
        .output("inv1", "")
        .broker(port, base, "gw")
        .mqtt("CONTROL-ACTIVATED = true")
        .mqtt(extra)
        .text()
}

fn start_rig(port: u16, base: &str, extra: &str) -> Rig {
    // Frames at once, 5 bursts a second: MQTT is the subject here.
    let rig = Rig::start_with(
        Timing::AtOnce,
        &toml(port, base, extra),
        vec![BatteryParams {
            cvl: 53.2,
            ccl: 200.0,
            dcl: 180.0,
            soc: 80.0,
            voltage: 52.0,
            current: 10.0,
            temp: 20.0,
            ..plain_battery()
        }],
        &[],
    );
    assert!(
        rig.wait_for(0, WAIT, |v| v
            .limits()
            .is_some_and(|l| close(l.i_lim_charge, 200.0) && close(l.i_lim_discharge, 180.0)))
    );
    rig
}

/// `mqtt::run` beside the rig's gateway.
struct MqttThread {
    shutdown: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl MqttThread {
    fn start(rig: &Rig) -> MqttThread {
        let (shutdown_tx, shutdown_rx) = bounded::<()>(1);
        let (config, board, commands) = (rig.config.clone(), rig.board.clone(), rig.commands.clone());
        let events = rig.events.clone();
        let handle = std::thread::spawn(move || mqtt::run(&config, &board, &events, &commands, &shutdown_rx));
        MqttThread {
            shutdown: Some(shutdown_tx),
            handle: Some(handle),
        }
    }

    fn stop(&mut self) -> Duration {
        let t0 = Instant::now();
        self.shutdown.take();
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        t0.elapsed()
    }
}

impl Drop for MqttThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (arrival, CCL, DCL) of every 0x351 inverter 1 received.
fn limits_frames(rig: &Rig) -> Vec<(Instant, f64, f64)> {
    rig.frames(0)
        .into_iter()
        .filter(|(_, f)| is_id(f, codec::ID_LIMITS))
        .filter_map(|(at, f)| match codec::decode(&f) {
            Ok(Message::Limits(l)) => Some((at, l.i_lim_charge, l.i_lim_discharge)),
            _ => None,
        })
        .collect()
}

/// The longest time between two 0x351 frames arriving within `from..to`.
fn longest_gap(frames: &[(Instant, f64, f64)], from: Instant, to: Instant) -> Duration {
    let times: Vec<Instant> = frames.iter().map(|f| f.0).filter(|t| *t >= from && *t <= to).collect();
    assert!(times.len() > 2, "only {} frames in the window", times.len());
    let mut longest = times[0].duration_since(from);
    for w in times.windows(2) {
        longest = longest.max(w[1].duration_since(w[0]));
    }
    longest.max(to.duration_since(*times.last().unwrap()))
}

#[test]
fn a_setpoint_over_mqtt_reaches_the_inverter_frames_at_once_and_expires() {
    let broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let rig = start_rig(broker.port, "e2e1", "");
    let _mqtt = MqttThread::start(&rig);
    watch.wait_for("e2e1/status", "online", |m| m.text() == "online");

    // System charge setpoint 50 A.
    watch.publish("e2e1/set/i_lim_charge", "50", false);
    let result = watch.wait_nth("e2e1/set/result", 1);
    assert_eq!(result.json()["ok"], true);
    assert!(rig.wait_for(0, WAIT, |v| v.limits().is_some_and(|l| close(l.i_lim_charge, 50.0))));
    // The combiner makes a new state at once; push mode sends it at once
    // (and at least once per second): well within a transmission period,
    // with slack for a busy machine.
    let frames = limits_frames(&rig);
    let first = frames
        .iter()
        .find(|(at, ccl, _)| *at >= result.at - Duration::from_millis(500) && close(*ccl, 50.0))
        .expect("a 0x351 with the setpoint");
    assert!(
        first.0 <= result.at + Duration::from_millis(1500),
        "the setpoint took {:?} after its result",
        first.0.saturating_duration_since(result.at)
    );
    let settled = result.at + Duration::from_millis(1500);
    assert!(
        frames.iter().filter(|f| f.0 > settled).all(|f| close(f.1, 50.0)),
        "an old limit was sent after the setpoint"
    );

    // Telemetry shows the lowered combined limit; the real combiner's
    // setpoints are published, retained.
    watch.wait_for("tele/e2e1/state", "limit 50 in telemetry", |m| {
        m.json()["i_lim_charge"] == 50.0
    });
    watch.wait_for("e2e1/setpoints", "setpoint published", |m| {
        m.json()["system"]["i_lim_charge"]["value"] == 50.0
    });

    // An inverter setpoint with a TTL of 1 s: applied, then expired.
    watch.publish(
        "e2e1/inverter/1/set/i_lim_discharge",
        r#"{"value": 20, "ttl": 1}"#,
        false,
    );
    assert!(rig.wait_for(0, WAIT, |v| v.limits().is_some_and(|l| close(l.i_lim_discharge, 20.0))));
    watch.wait_for("e2e1/setpoints", "inverter setpoint published", |m| {
        m.json()["inverters"][0]["i_lim_discharge"]["value"] == 20.0
    });
    assert!(rig.wait_for(0, WAIT, |v| v.limits().is_some_and(|l| close(l.i_lim_discharge, 180.0))));
    watch.wait_for("e2e1/setpoints", "inverter setpoint expired", |m| {
        m.json()["inverters"][0]["i_lim_discharge"].is_null() && m.json()["system"]["i_lim_charge"]["value"] == 50.0
    });

    // A refused command changes nothing on the bus.
    watch.publish("e2e1/set/i_lim_charge", "-5", false);
    assert_eq!(watch.wait_nth("e2e1/set/result", 3).json()["ok"], false);
    // Clearing restores the battery's own limit.
    watch.publish("e2e1/set/i_lim_charge", "clear", false);
    assert!(rig.wait_for(0, WAIT, |v| v.limits().is_some_and(|l| close(l.i_lim_charge, 200.0))));

    // Every change was an event on BASE/event, not retained.
    let event = |what: &str, kind: &str, inverter: serde_json::Value| {
        let m = watch.wait_for("e2e1/event", what, |m| {
            m.json()["kind"] == kind && m.json()["inverter"] == inverter
        });
        assert!(!m.retain, "{what}");
        m.json()
    };
    let set = event("system setpoint set", "setpoint_set", serde_json::Value::Null);
    assert_eq!(set["message"], "system setpoint i_lim_charge set to 50 A");
    assert!(set["battery"].is_null() && set["timestamp"].as_f64().unwrap() > 1.7e9);
    event("inverter setpoint expired", "setpoint_expired", 1.into());
    event("system setpoint cleared", "setpoint_cleared", serde_json::Value::Null);
    // The only battery goes silent: lost, and the safe state.
    rig.set_silent(0, true);
    let lost = watch.wait_for("e2e1/event", "battery lost", |m| m.json()["kind"] == "battery_lost");
    assert_eq!(lost.json()["battery"], 1);
    watch.wait_for("e2e1/event", "safe state", |m| {
        m.json()["kind"] == "state_changed" && m.json()["message"].as_str().unwrap().starts_with("safe state")
    });
}

#[test]
fn a_broker_outage_never_pauses_the_frames_to_the_inverters() {
    let mut broker = Broker::anonymous();
    let watch = Watcher::connect(&broker, "#");
    let rig = start_rig(broker.port, "e2e2", "");
    let mut mqtt = MqttThread::start(&rig);
    watch.wait_nth("tele/e2e2/state", 2);

    let outage = Instant::now();
    broker.kill();
    std::thread::sleep(Duration::from_secs(4));
    let restarted = Instant::now();
    broker.restart();
    watch.wait_for("tele/e2e2/state", "telemetry after the restart", |m| m.at > restarted);
    let end = Instant::now();

    // Push mode sends at least once per second; the batteries burst every
    // 200 ms. The broker going away must not stretch that.
    let gap = longest_gap(&limits_frames(&rig), outage, end);
    assert!(
        gap < Duration::from_millis(1200),
        "the inverter went {gap:?} without frames"
    );
    assert!(mqtt.stop() < Duration::from_secs(2));
    rig.stop();
}

#[test]
fn a_refused_login_is_logged_and_the_frames_go_on() {
    let logs = logs();
    let broker = Broker::with_password("bms", "right");
    let password = broker.dir().join("gateway-password");
    std::fs::write(&password, "wrong").unwrap();
    let extra = format!("USERNAME = \"bms\"\nPASSWORD-FILE = \"{}\"", password.display());
    let rig = start_rig(broker.port, "e2e3", &extra);
    let t0 = Instant::now();
    let mut mqtt = MqttThread::start(&rig);
    logs.wait_for(&[
        &format!("MQTT broker 127.0.0.1:{}", broker.port),
        "check USERNAME and PASSWORD-FILE",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let gap = longest_gap(&limits_frames(&rig), t0, Instant::now());
    assert!(
        gap < Duration::from_millis(1200),
        "the inverter went {gap:?} without frames"
    );
    assert!(mqtt.stop() < Duration::from_secs(2));
    rig.stop();
}
