//! Connection tests that need no broker: back-off and the wording of
//! connection errors.

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
