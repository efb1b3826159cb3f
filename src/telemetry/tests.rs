//! Telemetry tests: payloads built from hand-made snapshots, compared with
//! JSON written out by hand.

use super::*;
use crate::bank::{Limit, LimitReason, PerKind};
use crate::codec::{CellExtremes, Flags, Limits, Manufacturer, Measurements, Requests, StateOfCharge};
use crate::combine::{Combined, SystemState};
use crate::config_text::ConfigText;
use crate::energy::Meter;
use crate::status::SystemStatus;
use serde_json::{Value, json};
use std::time::{Duration, UNIX_EPOCH};

const T0: u64 = 1_700_000_000;

fn clock() -> Clock {
    Clock {
        now: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_millis(T0 * 1000 + 500),
    }
}

fn kwh(charged_kwh: f64, discharged_kwh: f64) -> Counter {
    Counter {
        charged_kwh,
        discharged_kwh,
    }
}

fn config() -> Config {
    let text = ConfigText::new()
        .battery("STALE-TIMEOUT = 5")
        .input("can1", 100.0, "DESCRIPTION = \"rack A\"")
        .input("can2", 50.0, "")
        .output("can3", "DESCRIPTION = \"inverter\"")
        .text();
    crate::config::parse(&text).unwrap()
}

fn battery() -> Battery {
    Battery {
        v_charge_cmd: 53.2,
        i_lim_charge: 150.0,
        i_lim_discharge: 199.96,
        v_discharge_min: Some(46.9),
        soc: 200.0 / 3.0,
        soh: 290.0 / 3.0,
        v_avg: 157.0 / 3.0,
        i_total: -4.04,
        t_avg: 70.0 / 3.0,
        flags: Flags {
            error_flags_1: 0x40,
            error_flags_2: 0,
            warning_flags_1: 0x04,
            warning_flags_2: 0x08,
            n_modules: 9,
        },
        requests: Requests::NORMAL,
        cells: Some(CellExtremes {
            v_cell_min: 3.288,
            v_cell_max: 3.313,
            t_cell_min: 17.0,
            t_cell_max: 25.0,
        }),
        manufacturer: Manufacturer::new("PYLON"),
        capacity_ah: 150.0,
    }
}

fn to_json<T: Serialize>(t: &T) -> serde_json::Value {
    serde_json::to_value(t).unwrap()
}

#[test]
fn rounding() {
    assert_eq!(round(0.1 + 0.2, 1), 0.3);
    assert_eq!(round(52.333333, 2), 52.33);
    assert_eq!(round(-0.04, 1), 0.0);
    assert!(round(-0.04, 1).is_sign_positive());
    assert_eq!(round(209.5, 0), 210.0);
    assert_eq!(round(-27.05, 1), -27.1);
}

#[test]
fn clock_conversions() {
    let c = clock();
    assert_eq!(c.timestamp(), 1_700_000_000.5);
    assert_eq!(c.unix_of(c.now - Duration::from_millis(1500)), 1_699_999_999.0);
    assert_eq!(c.unix_of(c.now + Duration::from_secs(60)), 1_700_000_060.5);
    assert_eq!(c.age(c.now - Duration::from_millis(2340)), 2.3);
    assert_eq!(c.age(c.now + Duration::from_secs(1)), 0.0);
}

#[test]
fn combined_state_has_every_field_of_the_original_gateway_and_the_new_ones() {
    let c = clock();
    let mut snap = Snapshot {
        system: SystemStatus {
            combined: Some(Combined {
                state: SystemState::Degraded,
                battery: battery(),
                inputs_online: 1,
                bank: Default::default(),
                made_at: c.now - Duration::from_millis(300),
                limits: PerKind {
                    charge: Limit {
                        value: 150.0,
                        reason: LimitReason::Share,
                        battery: Some(1),
                    },
                    discharge: Limit {
                        value: 199.96,
                        reason: LimitReason::Sum,
                        battery: None,
                    },
                },
                overshoot: PerKind {
                    charge: false,
                    discharge: true,
                },
            }),
            energy_base: kwh(1.0, 0.5),
            ..SystemStatus::default()
        },
        inputs: vec![InputStatus::default(), InputStatus::default()],
        outputs: vec![OutputStatus::default()],
    };
    snap.inputs[0].invalid = 3;
    snap.inputs[1].invalid = 4;
    snap.inputs[0].dropped = 2;
    snap.inputs[1].dropped = 1;
    snap.inputs[0].energy = Meter::restored(kwh(10.25, 3.0), None);
    snap.inputs[1].energy = Meter::restored(kwh(0.0004, 2.0), None);
    snap.inputs[0].last_telegram_wall = Some(UNIX_EPOCH + Duration::from_secs(T0 - 10));
    snap.inputs[1].last_telegram_wall = Some(UNIX_EPOCH + Duration::from_millis(T0 * 1000 - 1250));
    snap.outputs[0].last_request_wall = Some(UNIX_EPOCH + Duration::from_secs(T0 - 2));
    let mut got = to_json(&system_state(&snap, &c));
    // Why the limits are what they are; 1-based: the second battery (index 1) binds.
    let why = json!({"limit_reason_charge": "share", "limit_reason_discharge": "sum",
        "limit_battery_charge": 2, "limit_battery_discharge": null,
        "overshoot_charge": false, "overshoot_discharge": true});
    for (key, value) in why.as_object().unwrap() {
        assert_eq!(got.as_object_mut().unwrap().remove(key).as_ref(), Some(value), "{key}");
    }
    let want = json!({
        "manufacturer": "PYLON",
        "soc": 66.7,
        "soh": 96.7,
        "v_charge_cmd": 53.2,
        "i_lim_charge": 150.0,
        "i_lim_discharge": 200.0,
        "v_discharge_min": 46.9,
        "v_avg": 52.33,
        "i_total": -4.0,
        "t_avg": 23.3,
        // 52.3333 V x -4.04 A = -211.4 W
        "power_w": -211.0,
        "error_flags_1": 64,
        "error_flags_2": 0,
        "warning_flags_1": 4,
        "warning_flags_2": 8,
        "n_modules": 9,
        "charge_enable": true,
        "discharge_enable": true,
        "force_charge_request": false,
        "force_charge_request_2": false,
        "balancing_charge_request": false,
        "v_cell_min": 3.288,
        "v_cell_max": 3.313,
        "t_cell_min": 17.0,
        "t_cell_max": 25.0,
        "capacity_ah": 150.0,
        // 2/3 x 150 Ah x 52.333 V = 5233.3 Wh
        "energy_stored_kwh": 5.23,
        "state": "degraded",
        "inputs_online": 1,
        "inputs_total": 2,
        "timestamp_last_bms_update": 1_699_999_998.75,
        "timestamp_last_inverter_request": 1_699_999_998.0,
        "n_invalid_data_telegrams": 7,
        "n_dropped_telegrams": 3,
        "state_age_s": 0.3,
        // 1 + 10.25 + 0.0004 and 0.5 + 3 + 2, to 0.001 kWh.
        "energy_charged_kwh": 11.25,
        "energy_discharged_kwh": 5.5,
        "timestamp": 1_700_000_000.5,
    });
    assert_eq!(got, want);
}

#[test]
fn before_any_combined_state_the_state_is_starting_with_null_values() {
    let c = clock();
    let snap = Snapshot {
        inputs: vec![InputStatus::default()],
        ..Snapshot::default()
    };
    let got = to_json(&system_state(&snap, &c));
    assert_eq!(got["state"], "starting");
    assert_eq!(got["soc"], serde_json::Value::Null);
    assert_eq!(got["manufacturer"], serde_json::Value::Null);
    assert_eq!(got["charge_enable"], serde_json::Value::Null);
    assert_eq!(got["energy_stored_kwh"], serde_json::Value::Null);
    assert_eq!(got["timestamp_last_bms_update"], serde_json::Value::Null);
    assert_eq!(got["timestamp_last_inverter_request"], serde_json::Value::Null);
    assert_eq!(got["inputs_online"], 0);
    assert_eq!(got["inputs_total"], 1);
    assert_eq!(got["limit_reason_charge"], serde_json::Value::Null);
    assert_eq!(got["overshoot_discharge"], serde_json::Value::Null);
    assert_eq!(got["timestamp"], 1_700_000_000.5);
}

fn telegram() -> Telegram {
    Telegram {
        limits: Limits {
            v_charge_cmd: 53.2,
            i_lim_charge: 480.0,
            i_lim_discharge: 480.0,
            v_discharge_min: None,
        },
        soc: StateOfCharge {
            soc: 88.0,
            soh: 94.0,
            soc_hires: None,
        },
        measurements: Measurements {
            v_avg: 49.86,
            i_total: -27.0,
            t_avg: 36.3,
        },
        flags: Flags {
            n_modules: 6,
            ..Flags::default()
        },
        requests: None,
        manufacturer: None,
        cells: None,
        energy: None,
        cell_readings: None,
    }
}

#[test]
fn battery_state_from_its_telegram_and_counters() {
    let c = clock();
    let input = InputStatus {
        telegram: Some(telegram()),
        last_telegram: Some(c.now - Duration::from_millis(1200)),
        last_telegram_wall: Some(UNIX_EPOCH + Duration::from_millis(T0 * 1000 - 700)),
        frames: 70,
        telegrams: 10,
        invalid: 1,
        dropped: 2,
        link: LinkState::Up,
        recovery: LinkRecovery {
            state: RecoveryState::Normal,
            bounces: 3,
            recovered: 2,
            failed: 1,
        },
        energy: Meter::restored(kwh(12.3456, 7.0), None),
        ..InputStatus::default()
    };
    let pack = PackView {
        share: PerKind {
            charge: 0.6666666,
            discharge: 0.25,
        },
        over_current: true,
        fresh: true,
    };
    let mut got = to_json(&battery_state(&config(), 0, &input, true, Some(&pack), true, &c));
    // The bank discharges: its discharge share.
    let bank = json!({"share": 0.25, "share_charge": 0.667, "share_discharge": 0.25, "over_current": true});
    for (key, value) in bank.as_object().unwrap() {
        assert_eq!(got.as_object_mut().unwrap().remove(key).as_ref(), Some(value), "{key}");
    }
    let want = json!({
        "manufacturer": null,
        "soc": 88.0,
        "soh": 94.0,
        "v_charge_cmd": 53.2,
        "i_lim_charge": 480.0,
        "i_lim_discharge": 480.0,
        "v_discharge_min": null,
        "v_avg": 49.86,
        "i_total": -27.0,
        "t_avg": 36.3,
        // 49.86 V x -27 A = -1346.22 W
        "power_w": -1346.0,
        "error_flags_1": 0,
        "error_flags_2": 0,
        "warning_flags_1": 0,
        "warning_flags_2": 0,
        "n_modules": 6,
        // No 0x35C: shown as combining takes it, normal operation.
        "charge_enable": true,
        "discharge_enable": true,
        "force_charge_request": false,
        "force_charge_request_2": false,
        "balancing_charge_request": false,
        "v_cell_min": null,
        "v_cell_max": null,
        "t_cell_min": null,
        "t_cell_max": null,
        "capacity_ah": 100.0,
        // 0.88 x 100 Ah x 49.86 V = 4387.7 Wh
        "energy_stored_kwh": 4.39,
        "battery": 1,
        "description": "rack A",
        "can_if": "can1",
        "online": true,
        "age_s": 1.2,
        "timestamp_last_bms_update": 1_699_999_999.3,
        "link": "up",
        "link_error": null,
        "frames": 70,
        "telegrams": 10,
        "invalid": 1,
        "dropped": 2,
        "timestamp": 1_700_000_000.5,
    });
    // Checked apart: the literal above is at json!'s recursion limit.
    let mut got = got;
    let energy = got.as_object_mut().unwrap();
    assert_eq!(energy.remove("energy_charged_kwh"), Some(json!(12.346)));
    assert_eq!(energy.remove("energy_discharged_kwh"), Some(json!(7.0)));
    assert_eq!(energy.remove("link_bounces"), Some(json!(3)));
    assert_eq!(energy.remove("link_recoveries"), Some(json!(2)));
    assert_eq!(energy.remove("link_recovery_failures"), Some(json!(1)));
    // No 0x373 and no cells: every cell field null.
    for field in ["cells_v", "cells_t", "cell_v_min", "cell_v_max", "cell_v_delta"] {
        assert_eq!(energy.remove(field), Some(Value::Null), "{field}");
    }
    // A CAN battery has no serial fault counts.
    assert_eq!(energy.remove("serial_faults"), Some(Value::Null));
    assert_eq!(got, want);
}

#[test]
fn an_rs485_battery_counts_its_bad_answers_by_kind() {
    use crate::serial::{SerialFault, SerialFaults};
    let text = "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nSERIAL-PORT = \"/dev/ttyUSB0\"\nCAPACITY-AH = 100\n\
                [[bmses-out]]\nCAN-IF = \"inv1\"\n[mqtt]\nACTIVATED = false\n";
    let config = crate::config::parse(text).unwrap();
    let mut faults = SerialFaults::default();
    for kind in [
        SerialFault::Checksum,
        SerialFault::Checksum,
        SerialFault::Timeout,
        SerialFault::Implausible,
    ] {
        faults.add(kind);
    }
    let input = InputStatus {
        serial_faults: faults,
        ..InputStatus::default()
    };
    let got = to_json(&battery_state(&config, 0, &input, false, None, false, &clock()));
    assert_eq!(got["can_if"], json!("/dev/ttyUSB0#2"));
    // Every kind, by name, in the order of spec 18's list.
    let want = json!({"timeout": 1, "checksum": 2, "length": 0, "echo": 0, "wrong_address": 0, "garbage": 0,
                      "partial": 0, "refused": 0, "undecodable": 0, "implausible": 1});
    assert_eq!(got["serial_faults"], want);
    let keys: Vec<&String> = got["serial_faults"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 10);
}

fn cells_of(t: Telegram) -> Value {
    let c = clock();
    let input = InputStatus {
        telegram: Some(t),
        last_telegram: Some(c.now),
        ..InputStatus::default()
    };
    let got = to_json(&battery_state(&config(), 0, &input, true, None, false, &c));
    let fields = ["cells_v", "cells_t", "cell_v_min", "cell_v_max", "cell_v_delta"];
    fields.iter().map(|f| (f.to_string(), got[f].clone())).collect()
}

#[test]
fn a_can_pack_with_0x373_has_min_max_and_delta_only() {
    // The reference's 0x373 D80CF10C22012A01: 3288 and 3313 mV.
    let t = Telegram {
        cells: Some(CellExtremes {
            v_cell_min: 3.288,
            v_cell_max: 3.313,
            t_cell_min: 17.0,
            t_cell_max: 25.0,
        }),
        ..telegram()
    };
    assert_eq!(
        cells_of(t),
        json!({"cells_v": null, "cells_t": null, "cell_v_min": 3.288, "cell_v_max": 3.313, "cell_v_delta": 0.025})
    );
}

/// The frame `text` holds (one whole frame, else a panic).
fn rs485_info(text: &str) -> Vec<u8> {
    let mut rx = crate::rs485::Receiver::new();
    let mut info = None;
    for &b in text.as_bytes() {
        if let Some(got) = rx.push(b) {
            let frame = got.unwrap();
            info = Some(crate::rs485::check_reply(&frame, 2).unwrap().to_vec());
        }
    }
    info.expect("a whole frame")
}

#[test]
fn an_rs485_pack_shows_every_cell_and_temperature() {
    use crate::rs485::responses::{decode_analog, decode_charge_management};
    use crate::rs485::{Cycle, Protocol};
    // The reference's V7 (US5000, ADR 2): its 0x42 and 0x92 answers.
    let analog = "~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r";
    let management = "~20024600B01402D002AFC800C8FE0CC0F915\r";
    let cycle = Cycle {
        analog: decode_analog(&rs485_info(analog), Protocol::Pylon).unwrap().pack,
        management: decode_charge_management(&rs485_info(management)).unwrap(),
        alarms: None,
    };
    let five = [3.351, 3.348, 3.349, 3.349, 3.352];
    let cells: Vec<f64> = five.iter().chain(&five).chain(&five).copied().collect();
    // Temperatures (0C0B, 0BEF, 0BF0, 0BED, 0C0B) - 2731, in 0.1 degC.
    assert_eq!(
        cells_of(cycle.telegram().unwrap()),
        json!({"cells_v": cells, "cells_t": [35.2, 32.4, 32.5, 32.2, 35.2],
            "cell_v_min": 3.348, "cell_v_max": 3.352, "cell_v_delta": 0.004})
    );
}

/// An interface the gateway has bounced, with no traffic back yet, is
/// "recovering" (spec 17), whatever its link said last.
#[test]
fn a_bounced_interface_is_recovering() {
    let c = clock();
    let input = InputStatus {
        link: LinkState::Down("Network is down".into()),
        recovery: LinkRecovery {
            state: RecoveryState::Recovering,
            bounces: 1,
            ..LinkRecovery::default()
        },
        ..InputStatus::default()
    };
    let got = to_json(&battery_state(&config(), 0, &input, false, None, false, &c));
    assert_eq!(got["link"], "recovering");
    assert_eq!(got["link_error"], json!(null));
    assert_eq!(got["link_bounces"], 1);
}

#[test]
fn a_battery_is_offline_when_stale_or_silent() {
    let c = clock();
    let stale = InputStatus {
        telegram: Some(telegram()),
        last_telegram: Some(c.now - Duration::from_millis(5100)),
        link: LinkState::Down("No such device".into()),
        ..InputStatus::default()
    };
    let got = to_json(&battery_state(&config(), 1, &stale, false, None, false, &c));
    assert_eq!(got["online"], false);
    assert_eq!(got["age_s"], 5.1);
    assert_eq!(got["battery"], 2);
    assert_eq!(got["description"], "");
    assert_eq!(got["can_if"], "can2");
    assert_eq!(got["capacity_ah"], 50.0);
    assert_eq!(got["link"], "down");
    assert_eq!(got["link_error"], "No such device");
    let silent = to_json(&battery_state(
        &config(),
        1,
        &InputStatus::default(),
        false,
        None,
        false,
        &c,
    ));
    assert_eq!(silent["online"], false);
    assert_eq!(silent["age_s"], serde_json::Value::Null);
    assert_eq!(silent["soc"], serde_json::Value::Null);
    assert_eq!(silent["capacity_ah"], 50.0);
    assert_eq!(silent["link"], "opening");
    // A stale battery has no share, whatever the bank last remembered.
    let remembered = PackView {
        fresh: false,
        ..PackView::default()
    };
    let stale = to_json(&battery_state(
        &config(),
        1,
        &stale,
        false,
        Some(&remembered),
        false,
        &c,
    ));
    assert_eq!(stale["share"], serde_json::Value::Null);
    assert_eq!(stale["over_current"], serde_json::Value::Null);
}

#[test]
fn inverter_state_shows_what_was_sent() {
    let c = clock();
    let mut sent = battery();
    sent.i_lim_charge = 75.0;
    sent.i_total = -2.02;
    let output = OutputStatus {
        last_sent: Some(sent),
        last_state: Some(SystemState::Ok),
        last_sent_at: Some(c.now - Duration::from_millis(400)),
        last_request: Some(c.now - Duration::from_millis(900)),
        last_request_wall: Some(UNIX_EPOCH + Duration::from_millis(T0 * 1000 - 400)),
        frames_sent: 600,
        send_errors: 1,
        link: LinkState::Up,
        ..OutputStatus::default()
    };
    let got = to_json(&inverter_state(&config(), 0, &output, &c));
    assert_eq!(got["i_lim_charge"], 75.0);
    assert_eq!(got["i_total"], -2.0);
    assert_eq!(got["soc"], 66.7);
    assert_eq!(got["inverter"], 1);
    assert_eq!(got["description"], "inverter");
    assert_eq!(got["can_if"], "can3");
    assert_eq!(got["state"], "ok");
    assert_eq!(got["sync_age_s"], 0.9);
    assert_eq!(got["sent_age_s"], 0.4);
    assert_eq!(got["timestamp_last_inverter_request"], 1_699_999_999.6);
    assert_eq!(got["frames_sent"], 600);
    assert_eq!(got["send_errors"], 1);
    assert_eq!(got["link"], "up");
    assert_eq!(got["timestamp"], 1_700_000_000.5);

    let nothing = to_json(&inverter_state(&config(), 0, &OutputStatus::default(), &c));
    assert_eq!(nothing["state"], serde_json::Value::Null);
    assert_eq!(nothing["i_lim_charge"], serde_json::Value::Null);
    assert_eq!(nothing["sync_age_s"], serde_json::Value::Null);
}

#[test]
fn setpoints_payload_with_expiry_and_without() {
    let c = clock();
    let mut system = LimitSetpoints::default();
    system.set(
        LimitKind::Charge,
        Some(Setpoint {
            value: 50.04,
            expires: Some(c.now + Duration::from_secs(90)),
        }),
    );
    let mut inv = LimitSetpoints::default();
    inv.set(
        LimitKind::Discharge,
        Some(Setpoint {
            value: 20.0,
            expires: None,
        }),
    );
    // An expired one is shown as gone even before the combiner drops it.
    inv.set(
        LimitKind::Charge,
        Some(Setpoint {
            value: 10.0,
            expires: Some(c.now - Duration::from_secs(1)),
        }),
    );
    let got = setpoints(&system, &[inv, LimitSetpoints::default()], &c);
    let want = json!({
        "system": {
            "i_lim_charge": {"value": 50.0, "expires": 1_700_000_090.5, "remaining_s": 90.0},
            "i_lim_discharge": null,
        },
        "inverters": [
            {"inverter": 1, "i_lim_charge": null, "i_lim_discharge": {"value": 20.0, "expires": null, "remaining_s": null}},
            {"inverter": 2, "i_lim_charge": null, "i_lim_discharge": null},
        ],
        "timestamp": 1_700_000_000.5,
    });
    assert_eq!(got, want);
}

#[test]
fn active_setpoints_change_when_one_expires() {
    let t0 = Instant::now();
    let mut system = LimitSetpoints::default();
    system.set(
        LimitKind::Charge,
        Some(Setpoint {
            value: 50.0,
            expires: Some(t0 + Duration::from_secs(10)),
        }),
    );
    let before = active_setpoints(&system, &[LimitSetpoints::default()], t0);
    let same = active_setpoints(&system, &[LimitSetpoints::default()], t0 + Duration::from_secs(9));
    let after = active_setpoints(&system, &[LimitSetpoints::default()], t0 + Duration::from_secs(10));
    assert_eq!(before, same);
    assert_ne!(before, after);
    assert_eq!(after, vec![LimitSetpoints::default(); 2]);
}

#[test]
fn inverter_state_says_whether_it_talks_and_what_an_sma_measured() {
    let c = clock();
    let mut output = OutputStatus::default();
    let got = to_json(&inverter_state(&config(), 0, &output, &c));
    assert_eq!(got["silent"], Value::Null, "configured never to talk");
    assert_eq!(got["inverter_readings"], Value::Null);
    output.talk = Some(crate::profile::Talk::NotYet);
    assert_eq!(to_json(&inverter_state(&config(), 0, &output, &c))["silent"], false);
    output.talk = Some(crate::profile::Talk::Silent);
    output.inverter_readings = Some(crate::profile::SmaReadings {
        v: 52.3,
        i: 20.0,
        t: 25.0,
        soc: 76.5,
    });
    output.shutdown_requests = 2;
    let got = to_json(&inverter_state(&config(), 0, &output, &c));
    assert_eq!(got["silent"], true);
    assert_eq!(got["inverter_readings"]["v"], 52.3);
    assert_eq!(got["inverter_readings"]["i"], 20.0, "+ = charging, as everywhere else");
    assert_eq!(got["inverter_readings"]["soc"], 76.5);
    assert_eq!(got["shutdown_requests"], 2);
}
