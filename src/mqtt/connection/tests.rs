//! Connection tests that need no broker: back-off, the wording of
//! connection errors, and which unacknowledged events go out again.

use super::*;
use crate::mqtt::options::tests::config;

#[test]
fn backoff_doubles_from_1_s_up_to_30_s() {
    let mut b = Backoff::default();
    let waits: Vec<u64> = (0..8).map(|_| b.next_wait().as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    b.reset();
    assert_eq!(b.next_wait(), Duration::from_secs(1));
}

#[test]
fn a_wrong_password_is_named_as_such() {
    let c = config("USERNAME = \"bms\"\nPASSWORD-FILE = \"/x\"");
    assert_eq!(
        describe(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            &c
        ),
        "MQTT broker broker.lan:8883 refused the connection: bad user name or password (check USERNAME and PASSWORD-FILE)"
    );
    // Mosquitto answers a wrong password with "not authorised".
    let line = describe(
        &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
        &c,
    );
    assert!(
        line.starts_with(
            "MQTT broker broker.lan:8883 refused the connection: not authorised: bad user name or password"
        )
    );
    assert!(line.contains("(check USERNAME and PASSWORD-FILE)"));
}

#[test]
fn a_missing_user_name_is_named_as_such() {
    let c = config("");
    assert_eq!(
        describe(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            &c
        ),
        "MQTT broker broker.lan:8883 refused the connection: it requires a user name and password (set USERNAME and PASSWORD-FILE)"
    );
}

#[test]
fn network_errors_name_the_broker() {
    let c = config("");
    let e = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert!(describe(&e, &c).starts_with("MQTT broker broker.lan:8883 unreachable: "));
    assert_eq!(
        describe(&ConnectionError::NetworkTimeout, &c),
        "MQTT broker broker.lan:8883: no answer within 5 s"
    );
}

fn publish(topic: &str, payload: &str, pkid: u16) -> Request {
    let mut p = Publish::new(topic, rumqttc::QoS::AtLeastOnce, payload.as_bytes().to_vec());
    p.pkid = pkid;
    p.dup = true;
    Request::Publish(p)
}

fn event_at(timestamp: f64) -> String {
    format!(r#"{{"timestamp":{timestamp},"kind":"battery_lost","battery":1,"inverter":null,"message":"m"}}"#)
}

fn topics_and_ids(pending: &VecDeque<Request>) -> Vec<(String, u16, bool)> {
    pending
        .iter()
        .map(|r| match r {
            Request::Publish(p) => (p.topic.clone(), p.pkid, p.dup),
            other => (format!("{other:?}"), 0, false),
        })
        .collect()
}

#[test]
fn only_unacknowledged_events_that_are_still_news_go_out_again_first() {
    let now = telemetry::unix(SystemTime::now());
    // What EventLoop::clean leaves: publishes in flight and queued requests.
    let mut pending: VecDeque<Request> = [
        publish("base/event", &event_at(now - 1.0), 7),
        publish("tele/base/state", r#"{"timestamp":1}"#, 0),
        publish("base/status", "online", 8),
        publish("base/event", &event_at(now - 61.0), 9),
        Request::PingReq(rumqttc::PingReq),
        publish("base/event", &event_at(now - 30.0), 10),
    ]
    .into();
    let mut held = Unacknowledged::default();
    held.take_from(&mut pending, "base/event");
    assert!(pending.is_empty(), "everything else is dropped");
    assert_eq!(held.events.len(), 3);
    // After the next ConnAck, in front of what the new session queued: the
    // two of the last 60 s, in their order, with new packet ids.
    pending.push_back(publish("base/status", "online", 0));
    held.resend(&mut pending);
    assert_eq!(
        topics_and_ids(&pending),
        [
            ("base/event".to_string(), 0, false),
            ("base/event".to_string(), 0, false),
            ("base/status".to_string(), 0, true),
        ]
    );
    let stamps: Vec<f64> = pending
        .iter()
        .filter_map(|r| match r {
            Request::Publish(p) => event_time(&p.payload),
            _ => None,
        })
        .collect();
    assert_eq!(stamps, [now - 1.0, now - 30.0]);
    assert!(held.events.is_empty(), "sent once");
}
