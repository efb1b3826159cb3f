//! The `bms-gateway` daemon (the real binary) with a real Mosquitto broker:
//! status "online" and telemetry while it runs (its CAN interfaces cannot be
//! opened here, so it keeps retrying and reports "starting"), "offline" on
//! SIGTERM within 2 s, the last will when it is killed, and a SIGHUP reload
//! that removes the entities of a battery taken out of the config; events
//! are published once, not again by the MQTT connection a reload restarts;
//! a reload that keeps the broker connection never says "offline", one that
//! moves the base topic leaves "offline" on the old one.

mod config_text;
mod daemon;
mod mosquitto;

use config_text::ConfigText;
use daemon::Daemon;
use mosquitto::{Broker, Watcher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn config_text(port: u16, base: &str, batteries: &[&str]) -> String {
    let text = batteries.iter().fold(ConfigText::new(), |t, b| t.input(b, 100.0, ""));
    text.output("nocanout0", "").broker(port, base, "daemon").text()
}

/// A broker, the daemon configured for it and a watcher of `filter` on it.
struct Rig {
    broker: Broker,
    /// The daemon's config file, rewritten for a reload.
    cfg: PathBuf,
    watch: Watcher,
    d: Daemon,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(base: &str, batteries: &[&str], filter: &str) -> Rig {
        let broker = Broker::anonymous();
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bms.toml");
        std::fs::write(&cfg, config_text(broker.port, base, batteries)).unwrap();
        let watch = Watcher::connect(&broker, filter);
        let d = Daemon::start(&cfg);
        Rig {
            broker,
            cfg,
            watch,
            d,
            _dir: dir,
        }
    }

    /// Rewrites the config file and sends SIGHUP.
    fn reload(&self, base: &str, batteries: &[&str]) {
        std::fs::write(&self.cfg, config_text(self.broker.port, base, batteries)).unwrap();
        self.d.signal(libc::SIGHUP);
    }
}

#[test]
fn the_daemon_says_online_and_goes_offline_within_2_s_on_sigterm() {
    let rig = Rig::start("d1", &["nocanin0"], "#");
    let broker = &rig.broker;
    let watch = &rig.watch;
    let mut d = rig.d;
    watch.wait_for("d1/status", "online", |m| m.text() == "online");
    let state = watch.wait_for("tele/d1/state", "telemetry", |_| true).json();
    // No battery can be heard here: no combined state.
    assert_eq!(state["state"], "starting", "{}", d.log());
    let asked = Instant::now();
    d.signal(libc::SIGTERM);
    let (code, took) = d.wait_exit();
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    let offline = watch.wait_for("d1/status", "offline", |m| m.at > asked && m.text() == "offline");
    assert!(offline.at <= asked + Duration::from_secs(2));
    let late = Watcher::connect(broker, "d1/status");
    let m = late.wait_for("d1/status", "retained status", |_| true);
    assert_eq!((m.text().as_str(), m.retain), ("offline", true));
}

#[test]
fn a_killed_daemon_is_declared_offline_by_its_last_will() {
    let rig = Rig::start("d2", &["nocanin0"], "d2/status");
    let broker = &rig.broker;
    let watch = &rig.watch;
    let mut d = rig.d;
    watch.wait_for("d2/status", "online", |m| m.text() == "online");
    let killed = Instant::now();
    d.signal(libc::SIGKILL);
    d.wait_exit();
    watch.wait_for("d2/status", "the will", |m| m.at > killed && m.text() == "offline");
    let late = Watcher::connect(broker, "d2/status");
    let m = late.wait_for("d2/status", "retained will", |_| true);
    assert_eq!((m.text().as_str(), m.retain), ("offline", true));
}

#[test]
fn a_reload_without_a_battery_removes_its_home_assistant_entities() {
    let rig = Rig::start("d3", &["nocanin0", "nocanin1"], "#");
    let broker = &rig.broker;
    let cfg = &rig.cfg;
    let watch = &rig.watch;
    let d = rig.d;
    let gone = "homeassistant/sensor/d3/battery_nocanin1_soc/config";
    watch.wait_for(gone, "battery 2 announced", |m| !m.payload.is_empty());
    std::fs::write(cfg, config_text(broker.port, "d3", &["nocanin0"])).unwrap();
    let reloaded = Instant::now();
    d.signal(libc::SIGHUP);
    watch.wait_for(gone, "battery 2 removed", |m| m.payload.is_empty());
    watch.wait_for("d3/status", "online after the reload", |m| {
        m.at > reloaded && m.text() == "online"
    });
    let state = watch.wait_for("tele/d3/state", "telemetry after the reload", |m| {
        m.at > reloaded && m.json()["inputs_total"] == 1
    });
    assert_eq!(state.json()["state"], "starting", "{}", d.log());
}

#[test]
fn each_event_is_published_once_across_reloads() {
    let rig = Rig::start("d4", &["nocanin0"], "#");
    let watch = &rig.watch;
    let d = rig.d;
    watch.wait_for("d4/status", "online", |m| m.text() == "online");
    let reloaded = |m: &mosquitto::Msg| m.json()["kind"] == "config_reloaded";
    for n in 1..=2 {
        let online_before = watch.all("d4/status").iter().filter(|m| m.text() == "online").count();
        d.signal(libc::SIGHUP);
        watch.wait_for("d4/status", "online after the reload", |_| {
            watch.all("d4/status").iter().filter(|m| m.text() == "online").count() > online_before
        });
        // Its config_reloaded event (the interfaces' own interface_down
        // events of the start come on the same topic, at any moment).
        watch.wait_for("d4/event", "config_reloaded", |_| {
            watch.all("d4/event").iter().filter(|m| reloaded(m)).count() >= n
        });
        // The new connection's first telemetry: anything it sent again
        // would be out by now.
        let after = Instant::now();
        watch.wait_for("tele/d4/state", "telemetry after the reload", |m| m.at > after);
        let events = watch.all("d4/event");
        assert_eq!(
            events.iter().filter(|m| reloaded(m)).count(),
            n,
            "reload {n}: {:?}",
            events.iter().map(mosquitto::Msg::text).collect::<Vec<_>>()
        );
    }
}

/// Waits for the `n`th "online" on `topic`, counted from the start.
fn wait_online(watch: &Watcher, topic: &str, n: usize) {
    watch.wait_for(topic, &format!("\"online\" number {n}"), |_| {
        watch.all(topic).iter().filter(|m| m.text() == "online").count() >= n
    });
}

#[test]
fn a_reload_that_connects_the_same_way_never_says_offline() {
    let mut rig = Rig::start("d5", &["nocanin0"], "#");
    wait_online(&rig.watch, "d5/status", 1);
    // A battery added, the [mqtt] section as it was.
    rig.reload("d5", &["nocanin0", "nocanin1"]);
    wait_online(&rig.watch, "d5/status", 2);
    rig.watch
        .wait_for("tele/d5/state", "telemetry of the new configuration", |m| {
            m.json()["inputs_total"] == 2
        });
    let said: Vec<String> = rig.watch.all("d5/status").iter().map(|m| m.text()).collect();
    assert_eq!(said, ["online", "online"], "{}", rig.d.log());
    // The old connection's end is no broker trouble.
    assert!(!rig.d.log().contains("WARN  bms_gateway::mqtt"), "{}", rig.d.log());
    // A stop still says so.
    rig.d.signal(libc::SIGTERM);
    rig.watch
        .wait_for("d5/status", "offline at the stop", |m| m.text() == "offline");
    assert_eq!(rig.d.wait_exit().0, Some(0));
}

#[test]
fn a_reload_to_another_base_topic_says_offline_on_the_old_one() {
    let rig = Rig::start("d6", &["nocanin0"], "#");
    wait_online(&rig.watch, "d6/status", 1);
    rig.reload("d6b", &["nocanin0"]);
    rig.watch
        .wait_for("d6/status", "offline on the old topic", |m| m.text() == "offline");
    wait_online(&rig.watch, "d6b/status", 1);
    // What the old topic keeps for Home Assistant.
    let late = Watcher::connect(&rig.broker, "d6/status");
    let m = late.wait_for("d6/status", "the retained status", |_| true);
    assert_eq!((m.text().as_str(), m.retain), ("offline", true));
}
