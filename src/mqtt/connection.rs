//! The broker connection: the thread that drives rumqttc's event loop with
//! reconnect back-off (its options are made in `mqtt::options`), and log
//! lines that say what went wrong in the user's terms.
//!
//! rumqttc's blocking [`Connection`] must be polled continuously and
//! reconnects at once, with no back-off, on the poll after an error; a poll
//! cut short by a timeout restarts a connect in progress. So it gets a thread
//! of its own that blocks in `recv()` and waits 1, 2, 4 ... 30 s between
//! failed attempts; the MQTT thread proper only sees [`LinkEvent`]s and never
//! waits on the network. The connection thread is detached: after shutdown
//! it may still be inside a connect attempt (up to rumqttc's 5 s timeout)
//! and ends by itself afterwards, holding nothing the rest of the gateway
//! needs.

use super::options::{QUEUE_CAPACITY, base_options, options, refresh};
use super::{is_news, telemetry};
use crate::config::Config;
use crate::loglimit::{LogLimit, Repeats};
use crate::shutdown;
use crossbeam_channel::{Receiver, Sender};
use rumqttc::{Client, ConnectReturnCode, Connection, ConnectionError, Event, Outgoing, Packet, Publish, Request};
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// A connection that lasted this long was healthy: the next failure starts
/// the back-off again at 1 s.
const HEALTHY: Duration = Duration::from_secs(10);

/// The same connection error is logged again at most this often.
const ERROR_REPEAT: Duration = Duration::from_secs(600);

/// What the connection thread tells the MQTT thread.
#[derive(Debug)]
pub enum LinkEvent {
    /// The broker accepted the connection (again): resubscribe, republish.
    Connected,
    /// The connection is gone or could not be made; the thread retries.
    Disconnected,
    /// A message from a subscription.
    Message {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Our DISCONNECT went out: shutdown can finish.
    DisconnectSent,
}

/// A connection error as the user should read it.
pub fn describe(error: &ConnectionError, config: &Config) -> String {
    let m = &config.mqtt;
    let broker = format!("MQTT broker {}:{}", m.broker, m.port);
    match error {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized if m.username.is_none() => {
                    "it requires a user name and password (set USERNAME and PASSWORD-FILE)".to_string()
                }
                ConnectReturnCode::BadUserNamePassword => {
                    "bad user name or password (check USERNAME and PASSWORD-FILE)".to_string()
                }
                ConnectReturnCode::NotAuthorized => {
                    "not authorised: bad user name or password, or this client may not connect \
                     (check USERNAME and PASSWORD-FILE)"
                        .to_string()
                }
                ConnectReturnCode::BadClientId => "client id rejected (check CLIENT-ID)".to_string(),
                ConnectReturnCode::ServiceUnavailable => "service unavailable".to_string(),
                ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported".to_string(),
                ConnectReturnCode::Success => "refused without a reason".to_string(),
            };
            format!("{broker} refused the connection: {why}")
        }
        ConnectionError::Tls(e) => format!("{broker}: TLS failed: {e} (check TLS, CA-FILE, CERT-FILE, KEY-FILE)"),
        ConnectionError::Io(e) => format!("{broker} unreachable: {e}"),
        ConnectionError::NetworkTimeout => format!("{broker}: no answer within 5 s"),
        ConnectionError::FlushTimeout => format!("{broker}: sending timed out"),
        ConnectionError::MqttState(e) => format!("{broker}: connection lost: {e}"),
        other => format!("{broker}: {other}"),
    }
}

/// Waits between reconnect attempts: 1, 2, 4, 8, 16, 30, 30 ... s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Connects once and disconnects: whether the broker takes this
/// configuration's connection (address, login, TLS), for an answer at once
/// (`demo --mqtt`) instead of retries in the log.
pub fn probe(config: &Config, patience: Duration) -> Result<(), String> {
    let (client, mut connection) = Client::new(options(config)?, 8);
    let deadline = Instant::now() + patience;
    loop {
        match connection.recv_timeout(POLL) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => return Err(describe(&e, config)),
            Err(rumqttc::RecvTimeoutError::Disconnected) => return Err("the MQTT connection closed".into()),
        }
        if Instant::now() >= deadline {
            let m = &config.mqtt;
            return Err(format!(
                "MQTT broker {}:{}: no answer within {} s",
                m.broker,
                m.port,
                patience.as_secs_f64()
            ));
        }
    }
    if client.try_disconnect().is_ok() {
        closed(&mut connection);
    }
    Ok(())
}

/// How long the broker may take to close the connection after DISCONNECT.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How often a short-lived connection ([`probe`], the removal) is polled.
pub const POLL: Duration = Duration::from_millis(100);

/// Waits (at most [`CLOSE_GRACE`]) until the broker has closed the
/// connection after our DISCONNECT: a connection dropped before the broker
/// read it would make the broker publish the last will ("offline",
/// retained) on BASE/status.
pub fn closed(connection: &mut Connection) {
    let until = Instant::now() + CLOSE_GRACE;
    while Instant::now() < until {
        match connection.recv_timeout(POLL) {
            Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Ok(Err(_)) | Err(rumqttc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Creates the client and starts the connection thread. The thread stops
/// when `stop` receives or is disconnected (checked between polls and
/// during back-off), or when every [`Client`] is dropped.
pub fn start(config: &Config, events: Sender<LinkEvent>, stop: Receiver<()>) -> Result<Client, String> {
    // A file that cannot be read now is reported, and read again, by the
    // connection thread before each attempt.
    let mut opts = base_options(config);
    let needs_refresh = refresh(config, &mut opts).is_err();
    let (client, connection) = Client::new(opts, QUEUE_CAPACITY);
    let config = config.clone();
    std::thread::Builder::new()
        .name("mqtt-connection".into())
        .spawn(move || drive(&config, connection, &events, &stop, needs_refresh))
        .map_err(|e| format!("cannot start the MQTT connection thread: {e}"))?;
    Ok(client)
}

/// The connection thread's loop: poll, forward, wait after failures.
fn drive(
    config: &Config,
    mut connection: Connection,
    events: &Sender<LinkEvent>,
    stop: &Receiver<()>,
    mut needs_refresh: bool,
) {
    let mut retry = Retry::new(config);
    let event_topic = super::event_topic(config);
    let mut unacknowledged = Unacknowledged::default();
    let mut disconnect_sent = false;
    loop {
        if shutdown::requested(stop) {
            return;
        }
        if needs_refresh {
            if let Err(e) = refresh(config, &mut connection.eventloop.mqtt_options) {
                if retry.failed(&e, log::Level::Error, stop) {
                    return;
                }
                continue;
            }
            needs_refresh = false;
        }
        let forward = match connection.recv() {
            // Every client handle is gone: nothing more to send.
            Err(_) => return,
            Ok(Ok(event)) => {
                if let Event::Incoming(Packet::ConnAck(_)) = event {
                    unacknowledged.resend(&mut connection.eventloop.pending);
                }
                retry.on_event(event)
            }
            Ok(Err(e)) => {
                // After our DISCONNECT the broker closes the connection: the
                // end of this run, not a fault to log and retry.
                let asked = disconnect_sent;
                if events.send(LinkEvent::Disconnected).is_err() || shutdown::requested(stop) || asked {
                    return;
                }
                retry.lost();
                if retry.failed(&describe(&e, config), log::Level::Warn, stop) {
                    return;
                }
                // Whatever was queued while disconnected is dropped, not
                // sent late as if it were current (the MQTT thread
                // republishes current state on the next connect), but for
                // the events the broker had not acknowledged.
                connection.eventloop.clean();
                unacknowledged.take_from(&mut connection.eventloop.pending, &event_topic);
                needs_refresh = true;
                None
            }
        };
        disconnect_sent |= matches!(forward, Some(LinkEvent::DisconnectSent));
        if let Some(ev) = forward
            && events.send(ev).is_err()
        {
            return;
        }
    }
}

/// The events whose PUBLISH the broker had not acknowledged when the
/// connection dropped. Whatever else rumqttc still held then (its publishes
/// in flight, the requests not yet sent) is dropped, so that a reconnect
/// sends the current state rather than a backlog; but an event is published
/// once, so these go out again, first, once the next connection is up, if
/// they are still news (`mqtt::is_news`). (rumqttc itself drops them at a
/// connect without a session.)
#[derive(Debug, Default)]
struct Unacknowledged {
    events: Vec<Publish>,
}

impl Unacknowledged {
    /// Empties `pending` (filled by `EventLoop::clean`), keeping the events.
    fn take_from(&mut self, pending: &mut VecDeque<Request>, event_topic: &str) {
        for request in pending.drain(..) {
            if let Request::Publish(mut p) = request
                && p.topic == event_topic
            {
                // A new packet id in the new session.
                p.pkid = 0;
                p.dup = false;
                self.events.push(p);
            }
        }
    }

    /// Queues the events that are still news ahead of everything else.
    fn resend(&mut self, pending: &mut VecDeque<Request>) {
        let now = telemetry::unix(SystemTime::now());
        let news = self
            .events
            .drain(..)
            .filter(|p| event_time(&p.payload).is_some_and(|t| is_news(t, now)));
        for (n, p) in news.enumerate() {
            pending.insert(n, Request::Publish(p));
        }
    }
}

/// The `timestamp` of an event's JSON payload.
fn event_time(payload: &[u8]) -> Option<f64> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()?
        .get("timestamp")?
        .as_f64()
}

/// The connection thread's memory between attempts: back-off and log
/// rate limits.
struct Retry {
    broker: String,
    backoff: Backoff,
    errors: LogLimit,
    connects: LogLimit,
    connected_at: Option<Instant>,
}

impl Retry {
    fn new(config: &Config) -> Retry {
        Retry {
            broker: format!("{}:{}", config.mqtt.broker, config.mqtt.port),
            backoff: Backoff::default(),
            errors: LogLimit::new(ERROR_REPEAT, Repeats::SameText),
            connects: LogLimit::new(Duration::from_secs(60), Repeats::SameText),
            connected_at: None,
        }
    }

    /// What the MQTT thread must hear of an event, if anything.
    fn on_event(&mut self, event: Event) -> Option<LinkEvent> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.connected_at = Some(Instant::now());
                let line = format!("MQTT connected to {}", self.broker);
                if let Some(line) = self.connects.check(&line, Instant::now()) {
                    log::info!("{line}");
                }
                Some(LinkEvent::Connected)
            }
            Event::Incoming(Packet::Publish(p)) => Some(LinkEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
                retain: p.retain,
            }),
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if refused {
                    log::warn!(
                        "MQTT broker {} refused a subscription: setpoint commands may not arrive (check the broker's ACL)",
                        self.broker
                    );
                }
                None
            }
            Event::Outgoing(Outgoing::Disconnect) => Some(LinkEvent::DisconnectSent),
            _ => None,
        }
    }

    /// The connection was lost (or never made). After a healthy connection
    /// this is a new outage: the back-off starts again and the cause is
    /// logged even if the last outage had the same.
    fn lost(&mut self) {
        if self.connected_at.take().is_some_and(|t| t.elapsed() >= HEALTHY) {
            self.backoff.reset();
            self.errors = LogLimit::new(ERROR_REPEAT, Repeats::SameText);
        }
    }

    /// Logs `why` (rate-limited) and waits the back-off; true when stopped
    /// meanwhile.
    fn failed(&mut self, why: &str, level: log::Level, stop: &Receiver<()>) -> bool {
        let wait = self.backoff.next_wait();
        match self.errors.check(why, Instant::now()) {
            Some(line) => log::log!(level, "{line}; retrying in {} s", wait.as_secs()),
            None => log::debug!("{why}; retrying in {} s", wait.as_secs()),
        }
        shutdown::sleep(stop, wait)
    }
}

#[cfg(test)]
mod tests;
