//! The MQTT command parser (src/mqtt/command.rs) on arbitrary topics and
//! payloads: never panics; an accepted command is on a command topic, with
//! control activated, not retained, from a payload of at most 64 bytes, and
//! carries a finite setpoint between 0 and the scope's cap (100 % for the
//! charge-stop SOC) with a sane
//! expiry; every outcome's result message is valid JSON.
//!
//! Input: byte 0 = flags (control activated, retained, default TTL), then
//! the topic up to the first 0 byte (appended to "bms_gateway/" when flag
//! bit 3 is set, so that the command topics are reached), then the payload.

#![no_main]

use bms_gateway::mqtt::command::{Caps, MAX_PAYLOAD, MAX_SOC, Rules, decide, parse_payload, result_json};
use bms_gateway::setpoint::{LimitKind, MAX_TTL, Scope};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (topic, payload) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let topic = String::from_utf8_lossy(topic);
    let topic = if flags & 8 != 0 {
        format!("bms_gateway/{topic}")
    } else {
        topic.into_owned()
    };
    let rules = Rules {
        base: "bms_gateway".into(),
        control_activated: flags & 1 != 0,
        system: Caps {
            charge: 700.0,
            discharge: 650.0,
        },
        inverters: vec![
            Caps {
                charge: 300.0,
                discharge: 250.0,
            },
            Caps {
                charge: 100.0,
                discharge: 0.0,
            },
        ],
        default_ttl: (flags & 4 != 0).then_some(Duration::from_secs(60)),
    };
    let retained = flags & 2 != 0;
    let _ = parse_payload(payload);
    let now = Instant::now();
    let Some(outcome) = decide(&rules, &topic, payload, retained, now) else {
        return;
    };
    let json = result_json(&topic, &outcome);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("result is JSON");
    assert_eq!(parsed["ok"].as_bool(), Some(outcome.is_ok()));
    let Ok(accepted) = outcome else { return };
    assert!(rules.control_activated && !retained && payload.len() <= MAX_PAYLOAD);
    let c = accepted.command;
    let current_cap = |caps: Caps| match c.kind {
        LimitKind::Charge => caps.charge,
        LimitKind::Discharge => caps.discharge,
    };
    let cap = match c.scope {
        Scope::System => current_cap(rules.system),
        Scope::Inverter(j) => current_cap(rules.inverters[j]),
        // A SOC in %, for charging only (spec 15).
        Scope::ChargeStop => {
            assert!(matches!(c.kind, LimitKind::Charge), "{c:?}");
            MAX_SOC
        }
    };
    if let Some(s) = c.setpoint {
        assert!(
            s.value.is_finite() && s.value >= 0.0 && s.value <= cap,
            "{s:?} cap {cap}"
        );
        assert!(!s.value.is_sign_negative(), "-0 reached the combiner");
        if let Some(e) = s.expires {
            assert!(e > now && e <= now + MAX_TTL, "{s:?}");
        }
    }
});
