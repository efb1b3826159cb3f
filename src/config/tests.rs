//! Configuration tests: the template, an original-gateway file, and one test
//! per kind of mistake, each checking the key, line, column and message.

use super::*;
use crate::bank::LimitMode;
use crate::combine::{BatterySettings, InverterShare, OnInputLost};
use crate::dead_link::{RecoverMode, RecoverySettings};
use crate::profile::{Profile, VoltageUnit};
use std::path::PathBuf;
use std::time::Duration;

/// The smallest valid file, 6 lines: the line numbers below count from it.
pub(super) const MINIMAL: &str = r#"GATEWAY-ACTIVATED = true
[[bmses-in]]
CAN-IF = "can0"
CAPACITY-AH = 100
[[bmses-out]]
CAN-IF = "can1"
"#;

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("should be refused")
}

pub(super) fn only_problem(text: &str) -> Problem {
    let mut p = problems(text);
    assert_eq!(p.len(), 1, "{p:#?}");
    p.remove(0)
}

#[test]
fn the_template_is_valid_and_not_activated() {
    let c = parse(TEMPLATE).expect("template parses");
    assert!(!c.gateway_activated);
    assert_eq!(c.inputs.len(), 2);
    assert_eq!(c.outputs.len(), 1);
    assert_eq!(c.mqtt, MqttConfig::default());
    assert_eq!(c.battery, BatterySettings::default());
    assert_eq!(c.outputs[0].share, InverterShare::default());
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = parse(MINIMAL).unwrap();
    assert!(c.gateway_activated);
    let b = &c.battery;
    assert_eq!((b.i_lim_charge, b.i_lim_discharge), (700.0, 700.0));
    assert_eq!((b.i_tot_scaling, b.i_tot_offset), (1.0, 0.0));
    assert_eq!(b.stale_timeout, Duration::from_secs(5));
    assert_eq!(b.on_input_lost, OnInputLost::Degrade);
    let bank = &b.bank;
    assert_eq!(bank.mode, LimitMode::Share);
    assert_eq!((bank.share_min_current, bank.overcurrent_margin), (10.0, 0.05));
    assert_eq!(bank.overshoot_time, Duration::from_secs(10));
    let i = &c.inputs[0];
    assert_eq!(
        (
            i.can_if.as_str(),
            i.description.as_str(),
            i.capacity_ah,
            i.poll_interval
        ),
        ("can0", "", 100.0, None)
    );
    let o = &c.outputs[0];
    assert_eq!((o.share.i_lim_charge, o.share.i_lim_discharge), (300.0, 300.0));
    assert_eq!((o.share.i_scaling, o.share.i_offset), (1.0, 0.0));
    assert_eq!(o.push_min_delay, Duration::ZERO);
    assert_eq!(o.mode, OutputMode::Push);
    assert_eq!(o.manufacturer.name(), "PYLON");
    let m = &c.mqtt;
    assert!(m.activated);
    assert_eq!(
        (m.broker.as_str(), m.port, m.topic.as_str()),
        ("localhost", 1883, "tele/bms/state")
    );
    assert_eq!(m.interval, Duration::from_secs(10));
    assert_eq!(m.base_topic, "bms_gateway");
    assert!(m.ha_discovery && !m.control_activated);
    assert_eq!(m.ha_discovery_prefix, "homeassistant");
    assert_eq!((m.setpoint_ttl, m.tls.clone(), m.client_id.clone()), (None, None, None));
    assert_eq!(m.ha_setpoint_ttl, None);
}

/// A file in the original Python gateway's style: integers where decimals are
/// expected, only the original keys.
#[test]
fn an_original_gateway_file_loads_unchanged() {
    let text = r#"
GATEWAY-ACTIVATED = true

[battery]
I-LIM-CHARGE = 200
I-LIM-DISCHARGE = 250
I-TOT-SCALING = 1
I-TOT-OFFSET = 0

[[bmses-in]]
CAN-IF = "can0"
DESCRIPTION = "US5000 stack"
CAPACITY-AH = 400

[[bmses-in]]
CAN-IF = "can1"
DESCRIPTION = "US3000 stack"
CAPACITY-AH = 222

[[bmses-out]]
CAN-IF = "can2"
DESCRIPTION = "Multiplus"
I-LIM-CHARGE = 150
I-LIM-DISCHARGE = 200
I-SCALING = 0.5
I-OFFSET = -2
PUSH-MIN-DELAY = 1
SEND-SYNC-ACTIVATED = true
SYNC-INTERVAL = 2

[mqtt]
ACTIVATED = true
BROKER = "broker.local"
PORT = 1884
TOPIC = "tele/bms/state"
INTERVAL = 30
"#;
    let c = parse(text).expect("loads");
    assert_eq!(c.battery.i_lim_charge, 200.0);
    assert_eq!(c.inputs[1].capacity_ah, 222.0);
    assert_eq!(c.inputs[0].description, "US5000 stack");
    let o = &c.outputs[0];
    assert_eq!(o.share.i_offset, -2.0);
    assert_eq!(o.share.i_scaling, 0.5);
    assert_eq!(o.push_min_delay, Duration::from_secs(1));
    assert_eq!(
        o.mode,
        OutputMode::Sync {
            interval: Duration::from_secs(2)
        }
    );
    assert_eq!((c.mqtt.broker.as_str(), c.mqtt.port), ("broker.local", 1884));
    assert_eq!(c.mqtt.interval, Duration::from_secs(30));
}

#[test]
fn an_unknown_key_gets_did_you_mean_with_line_and_column() {
    let text = format!("{MINIMAL}[battery]\nSTALE-TIMOUT = 3\n");
    let p = only_problem(&text);
    assert_eq!((p.line, p.column), (8, 1));
    assert_eq!(p.key, "[battery] STALE-TIMOUT");
    assert!(p.message.contains("did you mean STALE-TIMEOUT?"), "{}", p.message);
}

#[test]
fn lower_case_or_underscored_keys_are_near_misses() {
    let text = MINIMAL.replace("CAPACITY-AH", "capacity_ah");
    let p = problems(&text);
    assert!(
        p.iter().any(|p| p.message.contains("did you mean CAPACITY-AH?")),
        "{p:#?}"
    );
}

#[test]
fn an_unrelated_unknown_key_lists_what_is_allowed() {
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nFOO = 1\n"));
    assert_eq!(p.key, "[mqtt] FOO");
    assert!(p.message.contains("allowed here: ACTIVATED, BROKER"), "{}", p.message);
}

#[test]
fn a_wrong_type_names_the_key_and_what_is_allowed() {
    let text = MINIMAL.replace("CAPACITY-AH = 100", "CAPACITY-AH = \"100\"");
    let p = only_problem(&text);
    assert_eq!(
        (p.line, p.column, p.key.as_str()),
        (4, 15, "[[bmses-in]] #1 CAPACITY-AH")
    );
    assert_eq!(
        p.message,
        "must be a number greater than 0 and at most 1000000, not a string"
    );
}

#[test]
fn out_of_range_values_are_refused() {
    let p = only_problem(&format!("{MINIMAL}I-SCALING = -0.5\n"));
    assert_eq!((p.line, p.key.as_str()), (7, "[[bmses-out]] #1 I-SCALING"));
    assert_eq!(p.message, "-0.5 is out of range: must be a number from 0 to 10");
    let p = only_problem(&MINIMAL.replace("CAPACITY-AH = 100", "CAPACITY-AH = 0"));
    assert!(p.message.starts_with("0 is out of range"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}[battery]\nSTALE-TIMEOUT = nan\n"));
    assert!(p.message.contains("out of range"));
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nPORT = 70000\n"));
    assert_eq!(p.key, "[mqtt] PORT");
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nPORT = 1883.5\n"));
    assert_eq!(p.message, "must be a whole number from 1 to 65535");
    // Checked once: one problem for a port that is not a number at all.
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nPORT = \"mqtt\"\n"));
    assert_eq!(p.message, "must be a whole number from 1 to 65535, not a string");
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nPORT = 0\n"));
    assert_eq!(p.message, "0 is out of range: must be a whole number from 1 to 65535");
}

#[test]
fn choices_and_names_are_checked() {
    let p = only_problem(&format!("{MINIMAL}[battery]\nON-INPUT-LOST = \"ignore\"\n"));
    assert_eq!(p.message, "\"ignore\" is not allowed: one of \"degrade\", \"stop\"");
    let c = parse(&format!("{MINIMAL}[battery]\nON-INPUT-LOST = \"stop\"\n")).unwrap();
    assert_eq!(c.battery.on_input_lost, OnInputLost::Stop);
    let p = only_problem(&format!("{MINIMAL}MANUFACTURER = \"PYLONTECH\"\n"));
    assert_eq!(p.key, "[[bmses-out]] #1 MANUFACTURER");
    assert!(p.message.contains("1 to 8 ASCII characters"));
    let p = only_problem(&MINIMAL.replace("\"can1\"", "\"can 1\""));
    assert!(p.message.contains("is not an interface name"));
}

#[test]
fn required_keys_and_sections_are_reported_missing() {
    let p = problems("[[bmses-in]]\nCAN-IF = \"can0\"\n");
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["GATEWAY-ACTIVATED", "[[bmses-in]] #1 CAPACITY-AH", "[[bmses-out]]"]
    );
    assert_eq!((p[1].line, p[1].column), (1, 1));
}

#[test]
fn each_interface_is_used_once() {
    let text = format!("{MINIMAL}[[bmses-out]]\nCAN-IF = \"can0\"\n");
    let p = only_problem(&text);
    assert_eq!((p.line, p.key.as_str()), (8, "[[bmses-out]] #2 CAN-IF"));
    assert!(p.message.contains("already used by [[bmses-in]] #1"), "{}", p.message);
}

#[test]
fn a_password_in_the_main_config_is_refused_with_the_way_out() {
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nPASSWORD = \"secret\"\n"));
    assert!(p.message.contains("PASSWORD-FILE"));
    assert!(!p.message.contains("secret"));
}

#[test]
fn tls_client_certificate_needs_both_files() {
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nTLS = true\nCERT-FILE = \"/a.pem\"\n"));
    assert!(p.message.contains("go together"));
    let c = parse(&format!(
        "{MINIMAL}[mqtt]\nTLS = true\nCA-FILE = \"/ca.pem\"\nSETPOINT-TTL = 60\n"
    ))
    .unwrap();
    assert_eq!(c.mqtt.tls.unwrap().ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(c.mqtt.setpoint_ttl, Some(Duration::from_secs(60)));
}

#[test]
fn ha_setpoint_ttl_is_seconds_up_to_30_days_and_0_means_setpoint_ttl() {
    let c = parse(&format!(
        "{MINIMAL}[mqtt]\nCONTROL-ACTIVATED = true\nHA-SETPOINT-TTL = 900\n"
    ))
    .unwrap();
    assert_eq!(c.mqtt.ha_setpoint_ttl, Some(Duration::from_secs(900)));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let c = parse(&format!("{MINIMAL}[mqtt]\nHA-SETPOINT-TTL = 0\n")).unwrap();
    assert_eq!(c.mqtt.ha_setpoint_ttl, None);
    // 30 days = 2592000 s is the longest.
    let c = parse(&format!("{MINIMAL}[mqtt]\nHA-SETPOINT-TTL = 2592000\n")).unwrap();
    assert_eq!(c.mqtt.ha_setpoint_ttl, Some(Duration::from_secs(2_592_000)));
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nHA-SETPOINT-TTL = 2592001\n"));
    assert_eq!((p.line, p.key.as_str()), (8, "[mqtt] HA-SETPOINT-TTL"));
    assert!(p.message.contains("out of range"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nHA-SETPOINT-TTL = -1\n"));
    assert_eq!(p.key, "[mqtt] HA-SETPOINT-TTL");
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nHA-SETPOINT-TTL = \"15m\"\n"));
    assert_eq!(p.key, "[mqtt] HA-SETPOINT-TTL");
}

#[test]
fn a_setpoint_ttl_too_short_to_count_is_refused_not_taken_as_never() {
    // 1e-10 s is under the 1 ns a Duration counts: read as 0 it would mean
    // "no expiry", the opposite of what was asked (issue 18, finding 6).
    for key in ["SETPOINT-TTL", "HA-SETPOINT-TTL"] {
        let p = only_problem(&format!("{MINIMAL}[mqtt]\n{key} = 1e-10\n"));
        assert_eq!((p.line, p.key.clone()), (8, format!("[mqtt] {key}")));
        assert!(p.message.contains("too short"), "{}", p.message);
        let c = parse(&format!("{MINIMAL}[mqtt]\n{key} = 0.000000001\n")).unwrap();
        let ttl = if key == "SETPOINT-TTL" {
            c.mqtt.setpoint_ttl
        } else {
            c.mqtt.ha_setpoint_ttl
        };
        assert_eq!(ttl, Some(Duration::from_nanos(1)));
    }
}

#[test]
fn ha_setpoint_ttl_without_control_is_a_warning() {
    let c = parse(&format!("{MINIMAL}[mqtt]\nHA-SETPOINT-TTL = 900\n")).unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("HA-SETPOINT-TTL") && w[0].contains("CONTROL-ACTIVATED"),
        "{}",
        w[0]
    );
}

#[test]
fn broken_toml_gives_the_line() {
    let p = only_problem("GATEWAY-ACTIVATED = true\n[battery\n");
    assert_eq!(p.line, 2);
    assert!(p.message.starts_with("not valid TOML"), "{}", p.message);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "GATEWAY-ACTIVATED = \"yes\"\n[[bmses-in]]\nCAN-IF = \"can0\"\nCAPACITY-AH = -1\n[[bmses-out]]\nCAN-IF = \"can1\"\nI-SCALLING = 1\n";
    let p = problems(text);
    assert_eq!(p.len(), 3, "{p:#?}");
    let err = ConfigError {
        path: "x.toml".into(),
        kind: ConfigErrorKind::Invalid,
        problems: p,
    };
    let shown = err.to_string();
    assert!(shown.starts_with("x.toml: 3 problems"), "{shown}");
    assert!(
        shown.contains("x.toml:1:21: GATEWAY-ACTIVATED: must be true or false, not a string"),
        "{shown}"
    );
}

#[test]
fn scaling_over_one_is_a_warning() {
    let text = format!("{MINIMAL}I-SCALING = 0.7\n[[bmses-out]]\nCAN-IF = \"can2\"\nI-SCALING = 0.6\n");
    let c = parse(&text).unwrap();
    assert_eq!(c.warnings().len(), 1);
    assert!(parse(MINIMAL).unwrap().warnings().is_empty());
}

#[test]
fn http_and_state_dir_default_and_parse() {
    let c = parse(MINIMAL).unwrap();
    assert!(c.http.activated);
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.state_dir, None);
    let text = format!("STATE-DIR = \"/srv/gw\"\n{MINIMAL}[http]\nACTIVATED = false\nLISTEN = \"0.0.0.0:9000\"\n");
    let c = parse(&text).unwrap();
    assert!(!c.http.activated);
    assert_eq!(c.http.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.state_dir, Some(PathBuf::from("/srv/gw")));
    let t = parse(TEMPLATE).unwrap();
    assert_eq!(t.http, HttpConfig::default());
}

#[test]
fn a_bad_listen_address_names_the_key_and_an_example() {
    let p = only_problem(&format!("{MINIMAL}[http]\nLISTEN = \"localhost\"\n"));
    assert_eq!(p.key, "[http] LISTEN");
    assert_eq!(p.line, 8);
    assert!(p.message.contains("\"0.0.0.0:8080\" (the LAN)"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}[http]\nLISTN = \"127.0.0.1:80\"\n"));
    assert!(p.message.contains("did you mean LISTEN?"), "{}", p.message);
    let p = only_problem(&format!("STATE-DIR = \"\"\n{MINIMAL}"));
    assert_eq!(p.key, "STATE-DIR");
}

#[test]
fn bank_aware_limit_keys_are_checked() {
    let c = parse(&format!(
        "{MINIMAL}[battery]\nLIMIT-MODE = \"sum\"\nSHARE-MIN-CURRENT = 5\nOVERCURRENT-MARGIN = 0.1\nOVERSHOOT-TIME = 30\n"
    ))
    .unwrap();
    let bank = c.battery.bank;
    assert_eq!(bank.mode, LimitMode::Sum);
    assert_eq!((bank.share_min_current, bank.overcurrent_margin), (5.0, 0.1));
    assert_eq!(bank.overshoot_time, Duration::from_secs(30));
    assert!(c.describe().contains(
        "[battery] LIMIT-MODE = \"sum\", SHARE-MIN-CURRENT = 5 A, OVERCURRENT-MARGIN = 0.1, OVERSHOOT-TIME = 30 s"
    ));
    let p = only_problem(&format!("{MINIMAL}[battery]\nLIMIT-MODE = \"min\"\n"));
    assert_eq!((p.line, p.column, p.key.as_str()), (8, 14, "[battery] LIMIT-MODE"));
    assert!(p.message.contains("one of \"share\", \"sum\""), "{}", p.message);
    // 0 A would measure an idle bank's split, 0 / 0.
    let p = only_problem(&format!("{MINIMAL}[battery]\nSHARE-MIN-CURRENT = 0\n"));
    assert_eq!((p.line, p.key.as_str()), (8, "[battery] SHARE-MIN-CURRENT"));
    assert!(p.message.contains("from 0.1 to 1000"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}[battery]\nOVERCURRENT-MARGIN = 2\n"));
    assert!(p.message.contains("from 0 to 1"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}[battery]\nOVERSHOOT-TIME = \"10 s\"\n"));
    assert_eq!(p.key, "[battery] OVERSHOOT-TIME");
}

#[test]
fn profile_keys_default_and_parse() {
    let o = &parse(MINIMAL).unwrap().outputs[0];
    assert_eq!(o.profile, Profile::Pylon);
    assert_eq!((o.soc_window.min, o.soc_window.max), (0.0, 100.0));
    assert_eq!(o.cvl_ramp, 0.0);
    assert_eq!(o.inverter_timeout, Some(Duration::from_secs(10)));
    assert_eq!(o.voltage_unit, VoltageUnit::Centivolt);
    let text =
        format!("{MINIMAL}PROFILE = \"solark\"\nSOC-MIN = 10\nSOC-MAX = 95.5\nCVL-RAMP = 0.1\nINVERTER-TIMEOUT = 0\n");
    let o = &parse(&text).unwrap().outputs[0];
    assert_eq!(o.profile, Profile::SolArk);
    assert_eq!((o.soc_window.min, o.soc_window.max), (10.0, 95.5));
    assert_eq!(o.cvl_ramp, 0.1);
    assert_eq!(o.inverter_timeout, None, "0 = this inverter never talks");
    assert_eq!(o.voltage_unit, VoltageUnit::Decivolt, "Sol-Ark's document: 0.1 V");
    let o = &parse(&format!("{MINIMAL}PROFILE = \"solark\"\nVOLTAGE-UNIT = 0.01\n"))
        .unwrap()
        .outputs[0];
    assert_eq!(o.voltage_unit, VoltageUnit::Centivolt);
}

#[test]
fn the_profile_picks_the_default_name() {
    let o = &parse(&format!("{MINIMAL}PROFILE = \"victron\"\n")).unwrap().outputs[0];
    assert_eq!(o.manufacturer.name(), "BMS-GW");
    let o = &parse(&format!("{MINIMAL}PROFILE = \"victron\"\nMANUFACTURER = \"PYLON\"\n")).unwrap();
    assert_eq!(o.outputs[0].manufacturer.name(), "PYLON");
    let w = o.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("inverter 1") && w[0].contains("Pylontech"), "{}", w[0]);
}

#[test]
fn bad_profile_keys_name_the_key_and_what_is_allowed() {
    let p = only_problem(&format!("{MINIMAL}PROFILE = \"growatt\"\n"));
    assert_eq!((p.line, p.key.as_str()), (7, "[[bmses-out]] #1 PROFILE"));
    assert_eq!(
        p.message,
        "\"growatt\" is not allowed: one of \"pylon\", \"pylon-v2\", \"victron\", \"sma\", \"solark\", \"luxpower\""
    );
    let p = only_problem(&format!("{MINIMAL}SOC-MIN = 90\nSOC-MAX = 20\n"));
    assert_eq!((p.line, p.key.as_str()), (8, "[[bmses-out]] #1 SOC-MAX"));
    assert!(
        p.message.contains("SOC-MIN (90) must be below SOC-MAX (20)"),
        "{}",
        p.message
    );
    let p = only_problem(&format!("{MINIMAL}SOC-MIN = 50\nSOC-MAX = 50\n"));
    assert!(p.message.contains("must be below"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}CVL-RAMP = -0.1\n"));
    assert_eq!(p.key, "[[bmses-out]] #1 CVL-RAMP");
    assert_eq!(p.message, "-0.1 is out of range: must be a number from 0 to 100");
    let p = only_problem(&format!("{MINIMAL}VOLTAGE-UNIT = 0.5\n"));
    assert_eq!(p.key, "[[bmses-out]] #1 VOLTAGE-UNIT");
    assert!(p.message.contains("0.01") && p.message.contains("0.1"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}INVERTER-TIMEOUT = -1\n"));
    assert_eq!(p.key, "[[bmses-out]] #1 INVERTER-TIMEOUT");
}

#[test]
fn recorder_keys_default_and_are_checked() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.recorder, RecorderConfig { seconds: 300, keep: 20 });
    let c = parse(&format!("{MINIMAL}[recorder]\nSECONDS = 0\nKEEP = 1\n")).unwrap();
    assert_eq!(c.recorder, RecorderConfig { seconds: 0, keep: 1 });
    assert!(c.describe().contains("[recorder] off (SECONDS = 0)"));
    // MINIMAL has 6 lines: [recorder] is line 7, its first key line 8.
    let p = only_problem(&format!("{MINIMAL}[recorder]\nSECONDS = 3601\n"));
    assert_eq!((p.key.as_str(), p.line), ("[recorder] SECONDS", 8));
    assert_eq!(p.message, "3601 is out of range: must be a whole number from 0 to 3600");
    let p = only_problem(&format!("{MINIMAL}[recorder]\nKEEP = 0\n"));
    assert_eq!(p.key, "[recorder] KEEP");
    assert!(p.message.contains("from 1 to 1000"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}[recorder]\nKEEP = 2.5\n"));
    assert_eq!(p.message, "must be a whole number from 1 to 1000");
    let p = only_problem(&format!("{MINIMAL}[recorder]\nSECOND = 10\n"));
    assert!(p.message.contains("did you mean SECONDS?"), "{}", p.message);
    assert_eq!(parse(TEMPLATE).unwrap().recorder, RecorderConfig::default());
}

/// `[can] RECOVER` and `RECOVER-AFTER` (spec section 17): "off" and 30 s by
/// default, "bounce" or "off" in any case, 2 to 3600 s.
#[test]
fn can_recovery_keys_default_and_are_checked() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.can.mode, RecoverMode::Off);
    assert_eq!(c.can.after, Duration::from_secs(30));
    assert!(
        c.describe().contains("[can] RECOVER = \"off\", RECOVER-AFTER = 30 s"),
        "{}",
        c.describe()
    );
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let c = parse(&format!("{MINIMAL}[can]\nRECOVER = \"Bounce\"\nRECOVER-AFTER = 2\n")).unwrap();
    assert_eq!((c.can.mode, c.can.after), (RecoverMode::Bounce, Duration::from_secs(2)));
    assert!(c.describe().contains("[can] RECOVER = \"bounce\", RECOVER-AFTER = 2 s"));
    // The bounce is built now: nothing to warn about.
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let c = parse(&format!("{MINIMAL}[can]\nRECOVER-AFTER = 3600.0\n")).unwrap();
    assert_eq!(c.can.after, Duration::from_secs(3600));
    // MINIMAL has 6 lines: [can] is line 7, its first key line 8, column 17
    // after "RECOVER-AFTER = ".
    let p = only_problem(&format!("{MINIMAL}[can]\nRECOVER-AFTER = 1.5\n"));
    assert_eq!((p.key.as_str(), p.line, p.column), ("[can] RECOVER-AFTER", 8, 17));
    assert_eq!(p.message, "1.5 is out of range: must be a number from 2 to 3600");
    let p = only_problem(&format!("{MINIMAL}[can]\nRECOVER-AFTER = 3601\n"));
    assert!(p.message.starts_with("3601 is out of range"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}[can]\nRECOVER = \"reset\"\n"));
    assert_eq!((p.key.as_str(), p.line), ("[can] RECOVER", 8));
    assert_eq!(p.message, "\"reset\" is not allowed: one of \"off\", \"bounce\"");
    let p = only_problem(&format!("{MINIMAL}[can]\nRECOVER = true\n"));
    assert_eq!(p.message, "must be a quoted string, not a boolean");
    let p = only_problem(&format!("{MINIMAL}[can]\nRECOVER_AFTER = 10\n"));
    assert_eq!((p.key.as_str(), p.line, p.column), ("[can] RECOVER_AFTER", 8, 1));
    assert!(p.message.contains("did you mean RECOVER-AFTER?"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}[cna]\nRECOVER = \"off\"\n"));
    assert!(p.message.contains("did you mean can?"), "{}", p.message);
    assert_eq!(parse(TEMPLATE).unwrap().can, RecoverySettings::default());
}

/// `[battery] V-DISCHARGE-MIN` (issue 22 defect 6): 46.0 V by default, in
/// the template with its explanation, never 0 (it goes on the wire).
#[test]
fn v_discharge_min_defaults_to_46_v_and_is_never_0() {
    assert_eq!(parse(MINIMAL).unwrap().battery.v_discharge_min, 46.0);
    let c = parse(&format!("{MINIMAL}[battery]\nV-DISCHARGE-MIN = 47.5\n")).unwrap();
    assert_eq!(c.battery.v_discharge_min, 47.5);
    let p = only_problem(&format!("{MINIMAL}[battery]\nV-DISCHARGE-MIN = 0\n"));
    assert_eq!(p.key, "[battery] V-DISCHARGE-MIN");
    assert_eq!(p.message, "0 is out of range: must be a number from 1 to 100");
    assert!(TEMPLATE.contains("\nV-DISCHARGE-MIN = 46.0\n"));
}

/// Issue 22 defect 7 (spec 9): 0x305 is the Sunny Island's own frame and
/// its bus allows no ID the SMA document does not define, so `check`
/// refuses sync mode (the gateway's own 0x305) with PROFILE = "sma".
#[test]
fn sma_with_sync_mode_is_refused() {
    let p = only_problem(&format!("{MINIMAL}PROFILE = \"sma\"\nSEND-SYNC-ACTIVATED = true\n"));
    assert_eq!(p.key, "[[bmses-out]] #1 SEND-SYNC-ACTIVATED");
    assert!(p.message.contains("0x305"), "{}", p.message);
    assert!(parse(&format!("{MINIMAL}PROFILE = \"sma\"\nSEND-SYNC-ACTIVATED = false\n")).is_ok());
    assert!(parse(&format!("{MINIMAL}PROFILE = \"victron\"\nSEND-SYNC-ACTIVATED = true\n")).is_ok());
}

/// Issue 22 defect 7: an sma output gets a `check` warning saying CVL and
/// DVL are clamped to what the Sunny Island accepts (41-63 V, 41-48 V), and
/// names V-DISCHARGE-MIN when it is outside 41-48 V (50 V is sent as 48 V).
#[test]
fn sma_outputs_warn_about_the_voltage_clamp() {
    let sma = format!("{MINIMAL}PROFILE = \"sma\"\n");
    let w = parse(&sma).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("41-63 V") && w[0].contains("41-48 V"), "{w:?}");
    let w = parse(&format!("{sma}[battery]\nV-DISCHARGE-MIN = 50\n"))
        .unwrap()
        .warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[1].contains("V-DISCHARGE-MIN = 50 V") && w[1].contains("48 V"),
        "{w:?}"
    );
}

const SERIAL: &str = r#"
[[bmses-in]]
SERIAL-PORT = "/dev/ttyUSB0"
CAPACITY-AH = 280
"#;

#[test]
fn a_serial_battery_takes_the_documented_defaults() {
    let c = parse(&format!("{MINIMAL}{SERIAL}")).unwrap();
    let i = &c.inputs[1];
    let s = i.serial.as_ref().expect("a serial input");
    // Spec 18: ADDRESS 2, BAUD 115200, PROTOCOL pylon, POLL-INTERVAL 1.0 s, RS485-MODE false.
    assert_eq!(
        (s.port.as_str(), s.address, s.baud, s.protocol, s.rs485_mode),
        ("/dev/ttyUSB0", 2, 115_200, crate::rs485::Protocol::Pylon, false)
    );
    assert_eq!(i.poll_interval, Some(Duration::from_secs(1)));
    assert_eq!(i.can_if, "/dev/ttyUSB0#2");
    assert!(c.inputs[0].serial.is_none());
    // Only CAN interfaces are interfaces.
    assert_eq!(c.interfaces().collect::<Vec<_>>(), ["can0", "can1"]);
}

#[test]
fn serial_keys_parse() {
    let text = format!(
        "{MINIMAL}{SERIAL}ADDRESS = 0\nBAUD = 9600\nPROTOCOL = \"seplos\"\nPOLL-INTERVAL = 2.5\nRS485-MODE = true\n"
    );
    let c = parse(&text).unwrap();
    let s = c.inputs[1].serial.clone().unwrap();
    assert_eq!(
        (s.address, s.baud, s.protocol, s.rs485_mode),
        (0, 9600, crate::rs485::Protocol::Seplos, true)
    );
    assert_eq!(c.inputs[1].poll_interval, Some(Duration::from_secs_f64(2.5)));
}

#[test]
fn can_if_and_serial_port_are_exclusive() {
    let text = format!("{MINIMAL}{SERIAL}CAN-IF = \"can7\"\n");
    let p = only_problem(&text);
    // MINIMAL is 6 lines, SERIAL opens with a blank one: SERIAL-PORT's
    // value is on line 9, column 15.
    assert_eq!(
        (p.line, p.column, p.key.as_str()),
        (9, 15, "[[bmses-in]] #2 SERIAL-PORT")
    );
    assert!(p.message.contains("not both"), "{}", p.message);
    let p = only_problem(&format!("{MINIMAL}BAUD = 9600\n"));
    assert_eq!((p.line, p.key.as_str()), (7, "[[bmses-out]] #1 BAUD"));
    let p = only_problem(&MINIMAL.replace("CAPACITY-AH = 100", "CAPACITY-AH = 100\nADDRESS = 3"));
    assert_eq!((p.line, p.column, p.key.as_str()), (5, 11, "[[bmses-in]] #1 ADDRESS"));
    assert!(p.message.contains("only for a battery on SERIAL-PORT"), "{}", p.message);
}

#[test]
fn serial_values_are_checked_with_line_and_column() {
    let p = only_problem(&format!("{MINIMAL}{SERIAL}BAUD = 57600\n"));
    assert_eq!((p.line, p.column, p.key.as_str()), (11, 8, "[[bmses-in]] #2 BAUD"));
    assert_eq!(p.message, "57600 is not allowed: one of 9600, 19200, 115200");
    let p = only_problem(&format!("{MINIMAL}{SERIAL}PROTOCOL = \"jk\"\n"));
    assert_eq!(p.key, "[[bmses-in]] #2 PROTOCOL");
    assert_eq!(
        p.message,
        "\"jk\" is not allowed: one of \"pylon\", \"seplos\", \"pace\""
    );
    let p = only_problem(&format!("{MINIMAL}{SERIAL}ADDRESS = 256\n"));
    assert_eq!(p.key, "[[bmses-in]] #2 ADDRESS");
    let p = only_problem(&MINIMAL.replace("CAN-IF = \"can0\"", "SERIAL-PORT = \"ttyUSB0\""));
    assert_eq!((p.line, p.key.as_str()), (3, "[[bmses-in]] #1 SERIAL-PORT"));
    assert!(p.message.contains("absolute path"), "{}", p.message);
}

#[test]
fn each_pack_on_a_port_once_and_one_speed_per_port() {
    let p = only_problem(&format!("{MINIMAL}{SERIAL}{SERIAL}"));
    // The second one's SERIAL-PORT, line 13.
    assert_eq!((p.line, p.key.as_str()), (13, "[[bmses-in]] #3 ADDRESS"));
    assert!(p.message.contains("already polled by [[bmses-in]] #2"), "{}", p.message);
    let text = format!("{MINIMAL}{SERIAL}{SERIAL}ADDRESS = 3\n");
    assert!(parse(&text).is_ok());
    let p = only_problem(&format!("{MINIMAL}{SERIAL}{SERIAL}ADDRESS = 3\nBAUD = 9600\n"));
    assert_eq!(p.key, "[[bmses-in]] #3 BAUD");
    assert!(p.message.contains("share its line"), "{}", p.message);
}

/// The whole message for a port's second pack at another speed, worked out
/// from the file: pack #2 has the defaults, 115200 baud and no RS485-MODE.
#[test]
fn a_second_speed_on_a_port_is_refused_naming_the_ports_line() {
    let p = only_problem(&format!("{MINIMAL}{SERIAL}{SERIAL}ADDRESS = 3\nBAUD = 9600\n"));
    assert_eq!(
        p.message,
        "BAUD and RS485-MODE differ from [[bmses-in]] #2 on the same port /dev/ttyUSB0: the packs of one port \
         share its line (115200 baud, RS485-MODE = false)"
    );
}

#[test]
fn the_templates_commented_rs485_example_is_valid_once_uncommented() {
    let start = TEMPLATE
        .find("# [[bmses-in]]\n# SERIAL-PORT")
        .expect("the RS485 example");
    let end = start + TEMPLATE[start..].find("\n\n").expect("its end");
    let example: String = TEMPLATE[start..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let c = parse(&format!("{MINIMAL}{example}")).unwrap();
    let s = c.inputs[1].serial.as_ref().unwrap();
    assert_eq!(
        (s.address, s.baud, s.protocol),
        (2, 9600, crate::rs485::Protocol::Seplos)
    );
}

#[test]
fn ha_cell_entities_is_off_by_default_a_flag_and_needs_discovery() {
    assert!(!parse(MINIMAL).unwrap().mqtt.ha_cell_entities);
    let c = parse(&format!("{MINIMAL}[mqtt]\nHA-CELL-ENTITIES = true\n")).unwrap();
    assert!(c.mqtt.ha_cell_entities);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let p = only_problem(&format!("{MINIMAL}[mqtt]\nHA-CELL-ENTITIES = \"yes\"\n"));
    assert_eq!((p.line, p.key.as_str()), (8, "[mqtt] HA-CELL-ENTITIES"));
    let c = parse(&format!(
        "{MINIMAL}[mqtt]\nHA-DISCOVERY = false\nHA-CELL-ENTITIES = true\n"
    ))
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("HA-CELL-ENTITIES"), "{}", w[0]);
}

/// The tests' configuration builder (tests/config_text) writes each section
/// where the reader looks for it: its smallest file is MINIMAL, and every
/// section it can add is read back as written.
#[test]
fn the_test_builder_writes_what_the_reader_reads() {
    use crate::config_text::ConfigText;
    let minimal = ConfigText::new().input("can0", 100.0, "").output("can1", "");
    assert_eq!(parse(&minimal.clone().text()), parse(MINIMAL));
    let dir = std::path::Path::new("/srv/gw \"state\"");
    let text = minimal
        .state_dir(dir)
        .battery("STALE-TIMEOUT = 3")
        .mqtt("ACTIVATED = false")
        .http("LISTEN = \"127.0.0.1:0\"")
        .recorder("SECONDS = 0")
        .text();
    let c = parse(&text).unwrap();
    assert_eq!(c.state_dir.as_deref(), Some(dir));
    assert_eq!(c.battery.stale_timeout, Duration::from_secs(3));
    assert!(!c.mqtt.activated);
    assert_eq!(c.http.listen, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    assert_eq!(c.recorder.seconds, 0);
}
