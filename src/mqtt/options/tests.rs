//! Options tests that need no broker: client id, password and TLS file
//! handling, the last will.

use super::*;
use crate::config_text::ConfigText;

/// A config for broker.lan:8883 with these `[mqtt]` lines (also used by
/// the connection tests).
pub(in crate::mqtt) fn config(mqtt: &str) -> Config {
    let text = ConfigText::new()
        .input("can0", 100.0, "")
        .output("can1", "")
        .mqtt("BROKER = \"broker.lan\"\nPORT = 8883")
        .mqtt(mqtt)
        .text();
    crate::config::parse(&text).unwrap()
}

#[test]
fn password_from_the_file_or_the_systemd_credential() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret \n").unwrap();
    assert_eq!(read_password(&file), Ok("s3cret ".into()));
    std::fs::write(&file, "s3cret\r\n").unwrap();
    assert_eq!(read_password(&file), Ok("s3cret".into()));
    std::fs::write(&file, "no newline").unwrap();
    assert_eq!(read_password(&file), Ok("no newline".into()));
    let missing = read_password(&dir.path().join("nope")).unwrap_err();
    assert!(missing.starts_with("cannot read the MQTT password from "), "{missing}");

    let with_file = config(&format!("USERNAME = \"bms\"\nPASSWORD-FILE = \"{}\"", file.display()));
    assert_eq!(password_path(&with_file, Some(dir.path())), Some(file.clone()));
    let without = config("USERNAME = \"bms\"");
    assert_eq!(password_path(&without, None), None);
    assert_eq!(password_path(&without, Some(dir.path())), None);
    std::fs::write(dir.path().join("mqtt-password"), "cred\n").unwrap();
    assert_eq!(
        password_path(&without, Some(dir.path())),
        Some(dir.path().join("mqtt-password"))
    );
}

#[test]
fn tls_file_problems_name_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = TlsConfig {
        ca_file: Some(dir.path().join("ca.pem")),
        ..TlsConfig::default()
    };
    let e = tls_client_config(&missing).unwrap_err();
    assert!(e.starts_with("CA-FILE ") && e.contains("ca.pem"), "{e}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = tls_client_config(&TlsConfig {
        ca_file: Some(empty),
        ..TlsConfig::default()
    })
    .unwrap_err();
    assert!(e.contains("no PEM certificate"), "{e}");
}

#[test]
fn client_id_from_config_or_host_name() {
    assert_eq!(client_id(&config("CLIENT-ID = \"gw1\"")), "gw1");
    let id = client_id(&config(""));
    assert!(
        id.starts_with("bms-gateway-") && id.len() > "bms-gateway-".len(),
        "{id}"
    );
}

#[test]
fn options_carry_the_last_will_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "pw\n").unwrap();
    let c = config(&format!(
        "BASE-TOPIC = \"gw\"\nUSERNAME = \"bms\"\nPASSWORD-FILE = \"{}\"",
        file.display()
    ));
    let o = options(&c).unwrap();
    let will = o.last_will().unwrap();
    assert_eq!(will.topic, "gw/status");
    assert_eq!(&will.message[..], b"offline");
    assert!(will.retain);
    let login = o.credentials().unwrap();
    assert_eq!((login.username.as_str(), login.password.as_str()), ("bms", "pw"));
    assert_eq!(o.broker_address(), ("broker.lan".to_string(), 8883));
    assert!(o.clean_session());
}
