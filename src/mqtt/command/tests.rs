//! Command tests: every payload a remote client can get wrong, clamping to
//! the caps, TTLs, routing and the result messages. Expected values are
//! written out by hand.

use super::*;
use crate::config_text::ConfigText;

fn rules(control: bool) -> Rules {
    Rules {
        base: "gw".into(),
        control_activated: control,
        system: Caps {
            charge: 100.0,
            discharge: 120.0,
        },
        inverters: vec![
            Caps {
                charge: 60.0,
                discharge: 80.0,
            },
            Caps {
                charge: 30.0,
                discharge: 40.0,
            },
        ],
        default_ttl: None,
    }
}

fn set(value: f64, ttl: Option<Duration>) -> Request {
    Request::Set { value, ttl }
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

#[test]
fn bare_numbers_are_accepted() {
    assert_eq!(parse_payload(b"50"), Ok(set(50.0, None)));
    assert_eq!(parse_payload(b" 12.5\n"), Ok(set(12.5, None)));
    assert_eq!(parse_payload(b"0"), Ok(set(0.0, None)));
    assert_eq!(parse_payload(b"1e2"), Ok(set(100.0, None)));
    assert_eq!(parse_payload(b"+7"), Ok(set(7.0, None)));
}

#[test]
fn minus_zero_becomes_plain_zero() {
    let Ok(Request::Set { value, .. }) = parse_payload(b"-0") else {
        panic!("-0 refused")
    };
    assert!(value == 0.0 && value.is_sign_positive());
}

#[test]
fn empty_and_clear_clear() {
    for p in [&b""[..], b"clear", b"CLEAR", b"  clear \n", b" "] {
        assert_eq!(parse_payload(p), Ok(Request::Clear), "{p:?}");
    }
}

#[test]
fn json_objects_with_value_and_ttl() {
    assert_eq!(parse_payload(br#"{"value": 40}"#), Ok(set(40.0, None)));
    assert_eq!(parse_payload(br#"{"value": 40.5, "ttl": 30}"#), Ok(set(40.5, secs(30))));
    assert_eq!(parse_payload(br#"{"ttl": 0, "value": 1}"#), Ok(set(1.0, secs(0))));
    assert_eq!(
        parse_payload(br#"{"value": 1, "ttl": 2.5}"#),
        Ok(set(1.0, Some(Duration::from_millis(2500))))
    );
}

fn refused(payload: &[u8]) -> String {
    match parse_payload(payload) {
        Err(e) => e,
        Ok(r) => panic!("{:?} accepted as {r:?}", String::from_utf8_lossy(payload)),
    }
}

#[test]
fn text_nan_infinity_and_negative_are_refused() {
    assert!(refused(b"abc").contains("not a number"));
    assert!(refused(b"50A").contains("not a number"));
    assert!(refused(b"0x10").contains("not a number"));
    assert!(refused(b"NaN").contains("finite"));
    assert!(refused(b"nan").contains("finite"));
    assert!(refused(b"inf").contains("finite"));
    assert!(refused(b"-inf").contains("finite"));
    assert!(refused(b"1e999").contains("finite"));
    assert!(refused(b"-5").contains("negative"));
    assert!(refused(b"-0.1").contains("negative"));
    assert!(refused(&[0xff, 0xfe]).contains("not text"));
}

#[test]
fn oversized_payloads_are_refused_unread() {
    let long = "1".repeat(65);
    assert!(refused(long.as_bytes()).contains("longer than 64 bytes"));
    // 64 bytes is still fine.
    let ok = format!("{}1", " ".repeat(63));
    assert_eq!(parse_payload(ok.as_bytes()), Ok(set(1.0, None)));
}

#[test]
fn malformed_and_wrong_json_is_refused() {
    assert!(refused(br#"{"value": }"#).contains("malformed JSON"));
    assert!(refused(br#"{"value": 5"#).contains("malformed JSON"));
    assert!(refused(br#"{"value": NaN}"#).contains("malformed JSON"));
    assert!(refused(br#"{"value": 1e999}"#).contains("malformed JSON"));
    assert!(refused(br#"{"value": "50"}"#).contains("must be a number"));
    assert!(refused(br#"{"value": null}"#).contains("must be a number"));
    assert!(refused(br#"{"value": -1}"#).contains("negative"));
    assert!(refused(br#"{"ttl": 5}"#).contains("missing"));
    assert!(refused(br#"{"value": 5, "ttl": -1}"#).contains("ttl"));
    assert!(refused(br#"{"value": 5, "ttl": "5"}"#).contains("ttl"));
    assert!(refused(br#"{"value": 5, "ttl": 2592001}"#).contains("ttl"));
    // Regression: a TTL that rounds to zero was taken as "never expires".
    assert!(refused(br#"{"value": 5, "ttl": 1e-10}"#).contains("too short"));
    assert_eq!(
        parse_payload(br#"{"value": 5, "ttl": 1e-9}"#),
        Ok(set(5.0, Some(Duration::from_nanos(1))))
    );
    assert!(refused(br#"{"value": 5, "tll": 3}"#).contains("unknown key \"tll\""));
    assert!(refused(b"[5]").contains("malformed JSON") || refused(b"[5]").contains("not a number"));
}

#[test]
fn routes() {
    let r = rules(true);
    assert_eq!(
        route(&r, "gw/set/i_lim_charge"),
        Route::Setpoint(Scope::System, LimitKind::Charge)
    );
    assert_eq!(
        route(&r, "gw/set/i_lim_discharge"),
        Route::Setpoint(Scope::System, LimitKind::Discharge)
    );
    assert_eq!(
        route(&r, "gw/inverter/1/set/i_lim_charge"),
        Route::Setpoint(Scope::Inverter(0), LimitKind::Charge)
    );
    assert_eq!(
        route(&r, "gw/inverter/2/set/i_lim_discharge"),
        Route::Setpoint(Scope::Inverter(1), LimitKind::Discharge)
    );
    // Our own answers must never be taken for commands.
    assert_eq!(route(&r, "gw/set/result"), Route::NotACommand);
    assert_eq!(route(&r, "gw/status"), Route::NotACommand);
    assert_eq!(route(&r, "gwx/set/i_lim_charge"), Route::NotACommand);
    assert_eq!(route(&r, "other/set/i_lim_charge"), Route::NotACommand);
    for bad in [
        "gw/inverter/0/set/i_lim_charge",
        "gw/inverter/3/set/i_lim_charge",
        "gw/inverter/x/set/i_lim_charge",
    ] {
        match route(&r, bad) {
            Route::Invalid(e) => assert!(e.contains("numbered 1 to 2"), "{e}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    match route(&r, "gw/set/soc") {
        Route::Invalid(e) => assert!(e.contains("unknown setpoint")),
        other => panic!("{other:?}"),
    }
}

fn accepted(r: &Rules, topic: &str, payload: &str, now: Instant) -> Accepted {
    match decide(r, topic, payload.as_bytes(), false, now) {
        Some(Ok(a)) => a,
        other => panic!("{topic} {payload}: {other:?}"),
    }
}

#[test]
fn values_are_clamped_to_the_scope_cap() {
    let r = rules(true);
    let now = Instant::now();
    let a = accepted(&r, "gw/set/i_lim_charge", "500", now);
    assert_eq!(
        a.command,
        SetpointCommand {
            scope: Scope::System,
            kind: LimitKind::Charge,
            setpoint: Some(Setpoint {
                value: 100.0,
                expires: None
            }),
        }
    );
    assert_eq!(a.requested, Some(500.0));
    let a = accepted(&r, "gw/set/i_lim_discharge", "119.9", now);
    assert_eq!(a.command.setpoint.unwrap().value, 119.9);
    let a = accepted(&r, "gw/set/i_lim_discharge", "121", now);
    assert_eq!(a.command.setpoint.unwrap().value, 120.0);
    let a = accepted(&r, "gw/inverter/1/set/i_lim_charge", "70", now);
    assert_eq!(a.command.scope, Scope::Inverter(0));
    assert_eq!(a.command.setpoint.unwrap().value, 60.0);
    let a = accepted(&r, "gw/inverter/2/set/i_lim_discharge", "{\"value\": 1000}", now);
    assert_eq!(a.command.scope, Scope::Inverter(1));
    assert_eq!(a.command.setpoint.unwrap().value, 40.0);
    let a = accepted(&r, "gw/inverter/2/set/i_lim_discharge", "0", now);
    assert_eq!(a.command.setpoint.unwrap().value, 0.0);
}

#[test]
fn ttl_from_the_command_or_the_default() {
    let mut r = rules(true);
    let now = Instant::now();
    let a = accepted(&r, "gw/set/i_lim_charge", "50", now);
    assert_eq!(a.command.setpoint.unwrap().expires, None);
    assert_eq!(a.ttl, None);
    let a = accepted(&r, "gw/set/i_lim_charge", r#"{"value": 50, "ttl": 30}"#, now);
    assert_eq!(a.command.setpoint.unwrap().expires, Some(now + Duration::from_secs(30)));
    assert_eq!(a.ttl, secs(30));

    r.default_ttl = secs(600);
    let a = accepted(&r, "gw/set/i_lim_charge", "50", now);
    assert_eq!(
        a.command.setpoint.unwrap().expires,
        Some(now + Duration::from_secs(600))
    );
    let a = accepted(&r, "gw/set/i_lim_charge", r#"{"value": 50}"#, now);
    assert_eq!(
        a.command.setpoint.unwrap().expires,
        Some(now + Duration::from_secs(600))
    );
    // An explicit 0 means no expiry, overriding the default.
    let a = accepted(&r, "gw/set/i_lim_charge", r#"{"value": 50, "ttl": 0}"#, now);
    assert_eq!(a.command.setpoint.unwrap().expires, None);
    assert_eq!(a.ttl, None);
}

#[test]
fn clear_gives_no_setpoint() {
    let r = rules(true);
    let now = Instant::now();
    for p in ["", "clear"] {
        let a = accepted(&r, "gw/inverter/2/set/i_lim_charge", p, now);
        assert_eq!(
            a.command,
            SetpointCommand {
                scope: Scope::Inverter(1),
                kind: LimitKind::Charge,
                setpoint: None
            }
        );
    }
}

#[test]
fn nothing_is_accepted_without_control() {
    let r = rules(false);
    let e = decide(&r, "gw/set/i_lim_charge", b"50", false, Instant::now());
    assert_eq!(
        e,
        Some(Err(
            "control is not activated (set CONTROL-ACTIVATED = true in [mqtt])".into()
        ))
    );
    assert_eq!(decide(&r, "gw/set/result", b"{}", false, Instant::now()), None);
}

#[test]
fn retained_commands_are_refused() {
    let r = rules(true);
    match decide(&r, "gw/set/i_lim_charge", b"50", true, Instant::now()) {
        Some(Err(e)) => assert!(e.starts_with("retained command ignored")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refusals_reach_decide() {
    let r = rules(true);
    match decide(&r, "gw/set/i_lim_charge", b"NaN", false, Instant::now()) {
        Some(Err(e)) => assert!(e.contains("finite")),
        other => panic!("{other:?}"),
    }
    match decide(&r, "gw/inverter/7/set/i_lim_charge", b"5", false, Instant::now()) {
        Some(Err(e)) => assert!(e.contains("no inverter \"7\"")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn result_messages() {
    let r = rules(true);
    let now = Instant::now();
    let a = accepted(&r, "gw/set/i_lim_charge", r#"{"value": 500, "ttl": 60}"#, now);
    let json: serde_json::Value = serde_json::from_str(&result_json("gw/set/i_lim_charge", &Ok(a))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"topic": "gw/set/i_lim_charge", "ok": true, "value": 100.0, "cleared": false,
                           "clamped": true, "ttl_s": 60.0})
    );
    let a = accepted(&r, "gw/set/i_lim_charge", "20", now);
    let json: serde_json::Value = serde_json::from_str(&result_json("t", &Ok(a))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"topic": "t", "ok": true, "value": 20.0, "cleared": false, "clamped": false, "ttl_s": null})
    );
    let a = accepted(&r, "gw/set/i_lim_charge", "clear", now);
    let json: serde_json::Value = serde_json::from_str(&result_json("t", &Ok(a))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"topic": "t", "ok": true, "value": null, "cleared": true, "clamped": false, "ttl_s": null})
    );
    let json: serde_json::Value = serde_json::from_str(&result_json("t", &Err("bad \"x\"".into()))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"topic": "t", "ok": false, "error": "bad \"x\""})
    );
}

#[test]
fn rules_from_the_config() {
    let text = ConfigText::new()
        .battery("I-LIM-CHARGE = 100.0\nI-LIM-DISCHARGE = 120")
        .input("can0", 100.0, "")
        .output("can1", "I-LIM-CHARGE = 60\nI-LIM-DISCHARGE = 80")
        .mqtt("BASE-TOPIC = \"gw\"\nCONTROL-ACTIVATED = true\nSETPOINT-TTL = 90")
        .text();
    let config = crate::config::parse(&text).unwrap();
    let r = Rules::from_config(&config);
    assert_eq!(
        r,
        Rules {
            base: "gw".into(),
            control_activated: true,
            system: Caps {
                charge: 100.0,
                discharge: 120.0
            },
            inverters: vec![Caps {
                charge: 60.0,
                discharge: 80.0
            }],
            default_ttl: secs(90),
        }
    );
    assert_eq!(
        r.subscriptions(),
        ["gw/set/+".to_string(), "gw/inverter/+/set/+".to_string()]
    );
    assert_eq!(r.result_topic(), "gw/set/result");
}

#[test]
fn the_home_assistant_command_template_gives_a_value_with_the_ttl() {
    let t = ha_command_template(Duration::from_secs(900));
    assert_eq!(t, r#"{"value": {{ value }}, "ttl": 900}"#);
    assert_eq!(
        ha_command_template(Duration::from_millis(1500)),
        r#"{"value": {{ value }}, "ttl": 1.5}"#
    );
    // Home Assistant replaces `{{ value }}` with the number set, e.g. 42.5.
    let rendered = t.replace("{{ value }}", "42.5");
    assert_eq!(
        parse_payload(rendered.as_bytes()),
        Ok(Request::Set {
            value: 42.5,
            ttl: secs(900)
        })
    );
    // The longest lifetime still fits in a payload with a large value.
    let longest = ha_command_template(MAX_TTL).replace("{{ value }}", "3276.7");
    assert!(longest.len() <= MAX_PAYLOAD, "{longest}");
    assert!(parse_payload(longest.as_bytes()).is_ok());
}

#[test]
fn the_charge_stop_soc_is_clamped_to_100_percent_with_the_default_ttl_and_refused_like_any_command() {
    let mut r = rules(true);
    r.default_ttl = secs(600);
    let now = Instant::now();
    assert_eq!(
        route(&r, "gw/set/charge_stop_soc"),
        Route::Setpoint(Scope::ChargeStop, LimitKind::Charge)
    );
    let a = accepted(&r, "gw/set/charge_stop_soc", "150", now);
    assert_eq!(
        a.command,
        SetpointCommand {
            scope: Scope::ChargeStop,
            kind: LimitKind::Charge,
            setpoint: Some(Setpoint {
                value: 100.0,
                expires: Some(now + Duration::from_secs(600)),
            }),
        }
    );
    assert_eq!(a.command.field(), "charge_stop_soc");
    assert_eq!(a.command.unit(), "%");
    let a = accepted(&r, "gw/set/charge_stop_soc", "{\"value\": 80, \"ttl\": 0}", now);
    assert_eq!(a.command.setpoint.map(|s| (s.value, s.expires)), Some((80.0, None)));
    let a = accepted(&r, "gw/set/charge_stop_soc", "clear", now);
    assert_eq!(a.command.setpoint, None);
    for bad in ["-5", "NaN", "eighty"] {
        let refused = decide(&r, "gw/set/charge_stop_soc", bad.as_bytes(), false, now);
        assert!(matches!(refused, Some(Err(_))), "{bad}: {refused:?}");
    }
    let retained = decide(&r, "gw/set/charge_stop_soc", b"80", true, now);
    assert!(matches!(retained, Some(Err(e)) if e.contains("retained")));
    let off = decide(&rules(false), "gw/set/charge_stop_soc", b"80", false, now);
    assert!(matches!(off, Some(Err(e)) if e.contains("CONTROL-ACTIVATED")));
    match route(&r, "gw/inverter/1/set/charge_stop_soc") {
        Route::Invalid(e) => assert!(e.contains("whole bank only"), "{e}"),
        other => panic!("{other:?}"),
    }
}
