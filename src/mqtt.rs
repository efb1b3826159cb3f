//! The MQTT thread: telemetry, Home Assistant discovery and remote
//! current-limit setpoints (docs/mqtt.md).
//!
//! [`run`] is the thread's body. It talks to the broker through rumqttc's
//! blocking client, whose event loop runs in a connection thread of its own
//! ([`connection`]), and it never blocks the rest of the gateway: the board
//! is only read through `snapshot()`, commands go to the combiner with
//! `try_send`, and publishes use `try_publish` into a bounded queue whose
//! overflow is counted and dropped.
//!
//! Nothing is published while disconnected, and whatever was queued when the
//! connection dropped is discarded before reconnecting, but for events the
//! broker had not acknowledged, which go out again while they are news
//! ([`connection`]): after an outage the broker gets the current state
//! (status, discovery, setpoints, telemetry) at once, never a backlog of old
//! telemetry, and no event is lost in flight. Every payload carries a
//! `timestamp` (Unix seconds) all the same.
//!
//! The pure parts: [`command`] (what a command means and whether it is
//! accepted), [`telemetry`] (the JSON payloads) and [`discovery`] (Home
//! Assistant discovery). [`remove`] deletes a gateway's retained messages
//! from its broker (`demo --mqtt ... --remove`).

pub mod command;
pub mod connection;
pub mod discovery;
pub mod options;
pub mod remove;
pub use crate::telemetry;

use crate::config::Config;
use crate::events::Events;
use crate::loglimit::{LogLimit, Repeats};
use crate::setpoint::{LimitSetpoints, Scope, SetpointCommand};
use crate::status::{Snapshot, StatusBoard};
use command::{Accepted, Rules};
use connection::LinkEvent;
use crossbeam_channel::{Receiver, Sender, TrySendError, never, select, tick};
use rumqttc::{Client, QoS};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use telemetry::Clock;

/// How long the thread sleeps when no setpoint expiry is due (telemetry,
/// events and the stop wake it anyway).
const QUIET: Duration = Duration::from_secs(3600);

/// How old an event may be and still be published after a (re)connect.
const EVENT_NEWS: Duration = Duration::from_secs(60);

/// BASE/event, where each event is published once.
pub(crate) fn event_topic(config: &Config) -> String {
    format!("{}/event", config.mqtt.base_topic)
}

/// Whether an event made at `timestamp` (Unix seconds) is still worth
/// sending at `now` after a (re)connect: a notification about an old
/// dropout would mislead (the status page keeps them all).
pub(crate) fn is_news(timestamp: f64, now: f64) -> bool {
    now - timestamp <= EVENT_NEWS.as_secs_f64()
}

/// How long shutdown waits for "offline" and the DISCONNECT to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Runs the MQTT side (`board`'s status, each of `events` once, commands
/// to `commands`) until `shutdown` receives a message or is disconnected;
/// then publishes BASE/status "offline" (retained), disconnects and
/// returns, within 2 s.
pub fn run(
    config: &Config,
    board: &StatusBoard,
    events: &Events,
    commands: &Sender<SetpointCommand>,
    shutdown: &Receiver<()>,
) {
    run_after_reload(
        config,
        board,
        events,
        commands,
        shutdown,
        Vec::new(),
        &Ending::default(),
    );
}

/// What a broker connection is made of: the `[mqtt]` section and the
/// contents of the files it names (a password or certificate replaced on
/// disk makes another connection, even under the same file name).
#[derive(Debug, PartialEq)]
pub struct Link {
    mqtt: crate::config::MqttConfig,
    files: Vec<Option<Vec<u8>>>,
}

impl Link {
    pub fn of(config: &Config) -> Link {
        let m = &config.mqtt;
        let tls = m.tls.iter().flat_map(|t| [&t.ca_file, &t.cert_file, &t.key_file]);
        let files = std::iter::once(&m.password_file)
            .chain(tls)
            .map(|path| path.as_ref().and_then(|p| std::fs::read(p).ok()))
            .collect();
        Link { mqtt: m.clone(), files }
    }
}

/// How an MQTT run ends, told by whoever stops it before the stop.
#[derive(Debug, Default)]
pub struct Ending {
    handed_over: AtomicBool,
}

impl Ending {
    /// The next run connects with the same [`Link`] and says "online" at
    /// once: this one leaves its "online" standing instead of saying
    /// "offline" first (which shows every Home Assistant entity unavailable
    /// for a moment, and wakes automations on the gateway's availability).
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Release);
    }

    fn says_offline(&self) -> bool {
        !self.handed_over.load(Ordering::Acquire)
    }
}

/// [`run`] after a reload: `results` (BASE/set/result payloads about what
/// the reload changed, e.g. setpoints dropped with their inverter) are
/// published at the first connection; `ending` says, once `shutdown` came,
/// whether the run says "offline".
pub fn run_after_reload(
    config: &Config,
    board: &StatusBoard,
    events: &Events,
    commands: &Sender<SetpointCommand>,
    shutdown: &Receiver<()>,
    results: Vec<String>,
    ending: &Ending,
) {
    let (event_tx, event_rx) = crossbeam_channel::bounded(256);
    // Dropped when this function returns: that stops the connection thread.
    let (_stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let client = match connection::start(config, event_tx, stop_rx) {
        Ok(client) => client,
        Err(e) => {
            log::error!("{e}; MQTT is off until the gateway restarts");
            let _ = shutdown.recv();
            return;
        }
    };
    log::info!(
        "MQTT: broker {}:{}{}, telemetry on {} every {} s, remote control {}",
        config.mqtt.broker,
        config.mqtt.port,
        if config.mqtt.tls.is_some() { " (TLS)" } else { "" },
        config.mqtt.topic,
        config.mqtt.interval.as_secs_f64(),
        if config.mqtt.control_activated { "on" } else { "off" },
    );
    let mut session = Session::new(config, board, events, commands, client);
    session.pending_results = results;
    let telemetry_tick = tick(config.mqtt.interval);
    let mut link_events = event_rx.clone();
    loop {
        // The next published setpoint to expire: BASE/setpoints must drop it
        // then, whether or not the combiner has done so yet.
        let now = Instant::now();
        let wait = session.next_expiry(now).map_or(QUIET, |at| at - now);
        select! {
            recv(shutdown) -> _ => break,
            recv(link_events) -> event => match event {
                Ok(event) => session.on_event(event),
                Err(_) => {
                    log::error!("the MQTT connection thread has stopped; no more telemetry");
                    link_events = never();
                }
            },
            recv(events.bell()) -> _ => session.publish_events(),
            recv(telemetry_tick) -> _ => session.publish_telemetry(),
            // The combiner says when the board's setpoints change (set,
            // cleared or expired): no polling.
            recv(board.setpoint_changes()) -> _ => session.poll_setpoints(false),
            default(wait) => session.poll_setpoints(false),
        }
    }
    session.shutdown(&event_rx, ending.says_offline());
}

/// The topics other than TOPIC.
struct Topics {
    status: String,
    setpoints: String,
    ha_status: String,
    event: String,
}

/// The MQTT thread's state between events.
struct Session<'a> {
    config: &'a Config,
    board: &'a StatusBoard,
    /// The gateway's events, each published once on BASE/event.
    events: &'a Events,
    commands: &'a Sender<SetpointCommand>,
    client: Client,
    rules: Rules,
    topics: Topics,
    /// Today's discovery messages (empty with HA-DISCOVERY off).
    discovery: Vec<discovery::Entity>,
    /// What discovery has learned (the BMS names) since the thread started.
    learned: discovery::Learned,
    connected: bool,
    /// The newest event published on BASE/event (or passed over).
    published_event: u64,
    /// The setpoints last published on BASE/setpoints.
    published_setpoints: Option<Vec<LimitSetpoints>>,
    /// Publishes dropped because the queue was full.
    dropped: u64,
    drop_log: LogLimit,
    /// Accepted commands: logged, but an energy manager sending a new value
    /// every few seconds must not fill the journal.
    accepted_log: LogLimit,
    /// Refused commands: a misbehaving client must not fill the journal.
    refused_log: LogLimit,
    /// Removed discovery entities: one line for the whole batch.
    removal_log: LogLimit,
    /// BASE/set/result payloads for the first connection.
    pending_results: Vec<String>,
}

impl<'a> Session<'a> {
    fn new(
        config: &'a Config,
        board: &'a StatusBoard,
        events: &'a Events,
        commands: &'a Sender<SetpointCommand>,
        client: Client,
    ) -> Session<'a> {
        let base = &config.mqtt.base_topic;
        Session {
            config,
            board,
            events,
            commands,
            client,
            rules: Rules::from_config(config),
            topics: Topics {
                status: format!("{base}/status"),
                setpoints: format!("{base}/setpoints"),
                ha_status: format!("{}/status", config.mqtt.ha_discovery_prefix),
                event: event_topic(config),
            },
            // A run after a reload goes on after what the one before sent.
            published_event: events.published(),
            discovery: discovery::entities(config),
            learned: discovery::Learned::default(),
            connected: false,
            published_setpoints: None,
            dropped: 0,
            drop_log: LogLimit::new(Duration::from_secs(60), Repeats::SameText),
            accepted_log: LogLimit::new(Duration::from_secs(10), Repeats::AnyText),
            refused_log: LogLimit::new(Duration::from_secs(10), Repeats::AnyText),
            removal_log: LogLimit::new(Duration::from_secs(60), Repeats::AnyText),
            pending_results: Vec::new(),
        }
    }

    /// Queues a publish if connected; a full queue drops it and counts.
    fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Vec<u8>>) {
        if !self.connected {
            return;
        }
        if self.client.try_publish(topic, qos, retain, payload).is_err() {
            self.dropped += 1;
            let line = "MQTT queue full: messages are being dropped";
            if let Some(line) = self.drop_log.check(line, Instant::now()) {
                log::warn!("{line} ({} so far)", self.dropped);
            }
        }
    }

    fn on_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected => self.on_connect(),
            LinkEvent::Disconnected => self.connected = false,
            LinkEvent::Message { topic, payload, retain } => self.on_message(&topic, &payload, retain),
            LinkEvent::DisconnectSent => {}
        }
    }

    /// A new session: subscriptions are not kept across reconnects, and the
    /// broker may have lost retained messages (a restart without
    /// persistence), so everything is renewed.
    fn on_connect(&mut self) {
        self.connected = true;
        self.skip_old_events();
        let mut subscriptions: Vec<String> = self.rules.subscriptions().into();
        // Before discovery goes out, so that the retained configs found are
        // those of earlier runs.
        subscriptions.push(discovery::subscription(self.config));
        if self.config.mqtt.ha_discovery {
            subscriptions.push(self.topics.ha_status.clone());
        }
        for s in subscriptions {
            if self.client.try_subscribe(s.as_str(), QoS::AtLeastOnce).is_err() {
                log::warn!("MQTT queue full: cannot subscribe to {s}");
            }
        }
        let status = self.topics.status.clone();
        self.publish(&status, QoS::AtLeastOnce, true, "online");
        // Before the discovery burst, which can fill the queue: an event is
        // published once, the rest is renewed anyway.
        self.publish_events();
        self.publish_discovery();
        self.poll_setpoints(true);
        self.publish_telemetry();
        let result_topic = self.rules.result_topic();
        for payload in std::mem::take(&mut self.pending_results) {
            self.publish(&result_topic, QoS::AtLeastOnce, false, payload);
        }
    }

    /// Events older than EVENT_NEWS are not sent late on (re)connecting: a
    /// notification about an old dropout would mislead (the status page
    /// keeps them). Newer ones, e.g. a reload's, still go out.
    fn skip_old_events(&mut self) {
        let now = telemetry::unix(std::time::SystemTime::now());
        for e in self.events.after(self.published_event) {
            if !is_news(e.timestamp, now) {
                self.published_event = e.seq;
            }
        }
        self.events.mark_published(self.published_event);
    }

    fn publish_discovery(&mut self) {
        for e in self.discovery.clone() {
            self.publish(&e.topic, QoS::AtLeastOnce, true, e.payload.to_string());
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], retain: bool) {
        if let Some(outcome) = command::decide(&self.rules, topic, payload, retain, Instant::now()) {
            self.on_command(topic, outcome);
        } else if topic == self.topics.ha_status {
            // Home Assistant restarted: it wants the discovery again. (A
            // retained "online" comes at every connect, which publishes
            // the discovery anyway.)
            if payload == b"online" && !retain && self.config.mqtt.ha_discovery {
                self.publish_discovery();
            }
        } else if retain && !payload.is_empty() && discovery::is_stale(self.config, topic, &self.discovery) {
            let line = format!("removing Home Assistant entities no longer in the configuration, e.g. {topic}");
            match self.removal_log.check(&line, Instant::now()) {
                Some(line) => log::info!("{line}"),
                None => log::debug!("removing Home Assistant entity {topic}"),
            }
            self.publish(topic, QoS::AtLeastOnce, true, Vec::new());
        }
    }

    /// Hands an accepted command to the combiner and answers on
    /// BASE/set/result either way.
    fn on_command(&mut self, topic: &str, outcome: Result<Accepted, String>) {
        let outcome = outcome.and_then(|a| match self.commands.try_send(a.command) {
            Ok(()) => Ok(a),
            Err(TrySendError::Full(_)) => Err("the gateway is busy: command not applied, send it again".into()),
            Err(TrySendError::Disconnected(_)) => Err("the gateway is stopping: command not applied".into()),
        });
        let now = Instant::now();
        match &outcome {
            Ok(a) => {
                let line = format!("MQTT setpoint {}: {}", describe_scope(a), describe_value(a));
                match self.accepted_log.check(&line, now) {
                    Some(line) => log::info!("{line}"),
                    None => log::debug!("{line}"),
                }
            }
            Err(e) => {
                let line = format!("MQTT command on {topic} refused: {e}");
                match self.refused_log.check(&line, now) {
                    Some(line) => log::warn!("{line}"),
                    None => log::debug!("{line}"),
                }
            }
        }
        let result_topic = self.rules.result_topic();
        self.publish(
            &result_topic,
            QoS::AtLeastOnce,
            false,
            command::result_json(topic, &outcome),
        );
    }

    /// TOPIC, and each battery's and each inverter's state.
    fn publish_telemetry(&mut self) {
        if !self.connected {
            return;
        }
        let snapshot = self.board.snapshot();
        self.learn(&snapshot);
        let clock = Clock::now();
        let base = self.config.mqtt.base_topic.clone();
        let system = telemetry::system_state(&snapshot, &clock);
        let topic = self.config.mqtt.topic.clone();
        self.publish(&topic, QoS::AtMostOnce, false, json(&system));
        let discharging = snapshot.system.combined.is_some_and(|c| c.battery.i_total < 0.0);
        for (i, input) in snapshot.inputs.iter().enumerate().take(self.config.inputs.len()) {
            let online = snapshot.system.inputs_fresh.get(i).copied().unwrap_or(false);
            let pack = snapshot.system.packs.get(i);
            let state = telemetry::battery_state(self.config, i, input, online, pack, discharging, &clock);
            self.publish(
                &format!("{base}/battery/{}/state", i + 1),
                QoS::AtMostOnce,
                false,
                json(&state),
            );
        }
        for (j, output) in snapshot.outputs.iter().enumerate().take(self.config.outputs.len()) {
            let state = telemetry::inverter_state(self.config, j, output, &clock);
            self.publish(
                &format!("{base}/inverter/{}/state", j + 1),
                QoS::AtMostOnce,
                false,
                json(&state),
            );
        }
    }

    /// BASE/event (not retained) for each event since the last one
    /// published. While disconnected they wait: the next connect publishes
    /// the recent ones (see `skip_old_events`).
    fn publish_events(&mut self) {
        if !self.connected {
            return;
        }
        let events = self.events.after(self.published_event);
        let Some(last) = events.last() else { return };
        self.published_event = last.seq;
        self.events.mark_published(last.seq);
        let topic = self.topics.event.clone();
        for e in &events {
            self.publish(&topic, QoS::AtLeastOnce, false, json(e));
        }
    }

    /// When the first of the published setpoints expires, if one does after `now`.
    fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.published_setpoints
            .as_ref()?
            .iter()
            .filter_map(LimitSetpoints::next_expiry)
            .filter(|&at| at > now)
            .min()
    }

    /// A BMS name heard for the first time (or changed) renews the discovery
    /// of that battery, which shows it as the manufacturer; with
    /// HA-CELL-ENTITIES, so does a battery's count of cells and sensors.
    fn learn(&mut self, snapshot: &Snapshot) {
        if !self.config.mqtt.ha_discovery {
            return;
        }
        let inputs = || snapshot.inputs.iter().take(self.config.inputs.len());
        let names = inputs().map(|i| i.telegram.as_ref().and_then(|t| t.manufacturer).map(|m| m.name()));
        let named = self.learned.learn(names);
        let counts = inputs().map(|i| {
            i.telegram
                .as_ref()
                .and_then(|t| t.cell_readings.as_ref())
                .map(discovery::CellCount::of)
        });
        let counted = self.config.mqtt.ha_cell_entities && self.learned.learn_cells(counts);
        if !(named || counted) {
            return;
        }
        let new = discovery::entities_with(self.config, &self.learned);
        let renewed: Vec<discovery::Entity> = discovery::changed(&self.discovery, &new).into_iter().cloned().collect();
        self.discovery = new;
        for e in renewed {
            self.publish(&e.topic, QoS::AtLeastOnce, true, e.payload.to_string());
        }
    }

    /// Publishes BASE/setpoints (retained) when the active setpoints changed
    /// since the last time, or always with `force`.
    fn poll_setpoints(&mut self, force: bool) {
        if !self.connected {
            return;
        }
        let snapshot = self.board.snapshot();
        let clock = Clock::now();
        let system = &snapshot.system;
        let mut active = telemetry::active_setpoints(&system.setpoints, &system.inverter_setpoints, clock.now);
        // The charge-stop SOC last, so that its change and expiry republish too.
        active.push(telemetry::charge_stop_entry(system.charge_stop_soc, clock.now));
        if !force && self.published_setpoints.as_ref() == Some(&active) {
            return;
        }
        let payload = telemetry::setpoints(&system.setpoints, &system.inverter_setpoints, &clock);
        let payload = telemetry::with_charge_stop(payload, system.charge_stop_soc, &clock).to_string();
        let topic = self.topics.setpoints.clone();
        self.publish(&topic, QoS::AtLeastOnce, true, payload);
        self.published_setpoints = Some(active);
    }

    /// "offline" and a clean DISCONNECT, waiting at most SHUTDOWN_GRACE for
    /// them to go out.
    /// Says "offline" (unless the next run takes over, see [`Ending`]) and
    /// disconnects cleanly, so that the broker drops the last will.
    fn shutdown(mut self, events: &Receiver<LinkEvent>, say_offline: bool) {
        if self.connected {
            if say_offline {
                let status = self.topics.status.clone();
                self.publish(&status, QoS::AtLeastOnce, true, "offline");
            }
            if self.client.try_disconnect().is_ok() {
                // Handing over, wait until the broker has closed this
                // connection: a next run connecting with the same client id
                // before the broker took the DISCONNECT would take this
                // session over, and the broker would publish the last will.
                let deadline = Instant::now() + SHUTDOWN_GRACE;
                while let Ok(event) = events.recv_deadline(deadline) {
                    match event {
                        LinkEvent::Disconnected => break,
                        LinkEvent::DisconnectSent if say_offline => break,
                        _ => {}
                    }
                }
            }
        }
        if self.dropped > 0 {
            log::info!(
                "MQTT stopped; {} messages were dropped while the queue was full",
                self.dropped
            );
        } else {
            log::info!("MQTT stopped");
        }
    }
}

fn json<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_string(t).expect("telemetry serializes")
}

fn describe_scope(a: &Accepted) -> String {
    let field = a.command.field();
    match a.command.scope {
        Scope::System | Scope::ChargeStop => format!("system {field}"),
        Scope::Inverter(j) => format!("inverter {} {field}", j + 1),
    }
}

fn describe_value(a: &Accepted) -> String {
    match (a.command.setpoint, a.ttl) {
        (None, _) => "cleared".into(),
        (Some(s), None) => format!("{} {} until changed", s.value, a.command.unit()),
        (Some(s), Some(ttl)) => format!("{} {} for {} s", s.value, a.command.unit(), ttl.as_secs_f64()),
    }
}
