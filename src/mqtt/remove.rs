//! Removing a gateway's retained messages from its broker: its Home
//! Assistant discovery configs (Home Assistant then deletes the entities and
//! devices), BASE/status and BASE/setpoints. `bms-gateway demo --mqtt ...
//! --remove` uses it to clear what a demo left on the user's broker.
//!
//! It connects with the configuration's client options, subscribes to the
//! discovery configs under the gateway's node id and to its two retained
//! topics, takes the retained messages the broker delivers until it has been
//! quiet for [`QUIET`], publishes an empty retained message on each of those
//! topics (MQTT's way of deleting one), and disconnects once the broker has
//! acknowledged them all. Whatever the discovery was (any number of
//! batteries, control on or off), everything under the node id goes.

use super::{connection, discovery, options};
use crate::config::Config;
use rumqttc::{Client, Connection, Event, Packet, QoS, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long the broker stays silent after the subscriptions before every
/// retained message is taken to have arrived.
const QUIET: Duration = Duration::from_secs(1);

/// The longest the whole removal may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// Removes the retained messages; how many there were.
pub fn retained(config: &Config) -> Result<usize, String> {
    let options = options::options(config)?;
    let (client, mut conn) = Client::new(options, 256);
    let base = &config.mqtt.base_topic;
    let filters = [
        discovery::subscription(config),
        format!("{base}/status"),
        format!("{base}/setpoints"),
    ];
    let deadline = Instant::now() + PATIENCE;
    let topics = collect(config, &client, &mut conn, &filters, deadline)?;
    for topic in &topics {
        client
            .try_publish(topic.as_str(), QoS::AtLeastOnce, true, Vec::new())
            .map_err(|e| format!("cannot queue the removal of {topic}: {e}"))?;
    }
    let mut acked = 0;
    while acked < topics.len() {
        if let Event::Incoming(Packet::PubAck(_)) = next(config, &mut conn, deadline)? {
            acked += 1;
        }
    }
    client.try_disconnect().map_err(|e| format!("cannot disconnect: {e}"))?;
    connection::closed(&mut conn);
    Ok(topics.len())
}

/// The topics with a retained message under the subscriptions.
fn collect(
    config: &Config,
    client: &Client,
    conn: &mut Connection,
    filters: &[String],
    deadline: Instant,
) -> Result<Vec<String>, String> {
    let mut topics: Vec<String> = Vec::new();
    let mut acks = 0;
    let mut last = Instant::now();
    while acks < filters.len() || last.elapsed() < QUIET {
        match poll(config, conn, deadline)? {
            Some(Event::Incoming(Packet::ConnAck(_))) => {
                for f in filters {
                    client
                        .try_subscribe(f.as_str(), QoS::AtLeastOnce)
                        .map_err(|e| format!("cannot subscribe to {f}: {e}"))?;
                }
            }
            Some(Event::Incoming(Packet::SubAck(_))) => {
                acks += 1;
                last = Instant::now();
            }
            Some(Event::Incoming(Packet::Publish(p))) => {
                if p.retain && !p.payload.is_empty() && !topics.contains(&p.topic) {
                    topics.push(p.topic);
                }
                last = Instant::now();
            }
            _ => {}
        }
    }
    Ok(topics)
}

/// The next event, waiting until `deadline`.
fn next(config: &Config, conn: &mut Connection, deadline: Instant) -> Result<Event, String> {
    loop {
        if let Some(event) = poll(config, conn, deadline)? {
            return Ok(event);
        }
    }
}

/// One poll of at most [`connection::POLL`]: an event, or `None` when there was none.
fn poll(config: &Config, conn: &mut Connection, deadline: Instant) -> Result<Option<Event>, String> {
    let m = &config.mqtt;
    if Instant::now() >= deadline {
        return Err(format!(
            "MQTT broker {}:{}: the removal did not finish within {} s",
            m.broker,
            m.port,
            PATIENCE.as_secs()
        ));
    }
    match conn.recv_timeout(connection::POLL) {
        Ok(Ok(event)) => Ok(Some(event)),
        Ok(Err(e)) => Err(connection::describe(&e, config)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(RecvTimeoutError::Disconnected) => Err(format!("MQTT broker {}:{}: connection closed", m.broker, m.port)),
    }
}
