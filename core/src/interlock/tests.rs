//! The interlock's bounds and checks on frame sets written byte by byte
//! from the Pylontech layout (0x351: CVL, CCL, DCL, DVL in 0.1 V / 0.1 A,
//! little endian; 0x35C byte 0 bits 7/6 the enables; 0x359 byte 1 bit 3
//! the system error), not by the encoder.

use super::*;
use crate::codec::{Flags, Limits, Measurements, Requests, StateOfCharge};
use crate::setpoint::{LimitSetpoints, Setpoint};
use crate::telegram::Telegram;
use std::time::Duration;

fn telegram(cvl: f64, charge: f64, discharge: f64, enable: (bool, bool)) -> Telegram {
    Telegram {
        limits: Limits {
            v_charge_cmd: cvl,
            i_lim_charge: charge,
            i_lim_discharge: discharge,
            v_discharge_min: Some(46.0),
        },
        soc: StateOfCharge {
            soc: 50.0,
            soh: 100.0,
            soc_hires: None,
        },
        measurements: Measurements {
            v_avg: 52.0,
            i_total: 0.0,
            t_avg: 20.0,
        },
        flags: Flags::default(),
        requests: Some(Requests {
            charge_enable: enable.0,
            discharge_enable: enable.1,
            ..Requests::NORMAL
        }),
        manufacturer: None,
        cells: None,
        energy: None,
        cell_readings: None,
    }
}

fn caps(charge: f64, discharge: f64) -> PerKind<f64> {
    PerKind { charge, discharge }
}

/// A pylon set: 0x359 (system error bit as given), 0x351, 0x35C.
fn pylon_set(cvl: u16, charge: i16, discharge: i16, enables: u8, system_error: bool) -> [Frame; 3] {
    let (v, c, d) = (cvl.to_le_bytes(), charge.to_le_bytes(), discharge.to_le_bytes());
    [
        Frame::standard(0x359, &[0, if system_error { 0x08 } else { 0 }, 0, 0, 1, b'P', b'N', 0]),
        Frame::standard(0x351, &[v[0], v[1], c[0], c[1], d[0], d[1], 0xCC, 0x01]),
        Frame::standard(0x35C, &[enables, 0]),
    ]
}

const BOTH: u8 = 0xC0;
const PYLON: Setting = Setting {
    profile: Profile::Pylon,
    cvl_ramp: 0.0,
};

fn bounds_of(telegrams: &[Telegram], bank_caps: PerKind<f64>, out_caps: PerKind<f64>, scaling: f64) -> Bounds {
    let now = Instant::now();
    let bank = BankBounds::of(
        telegrams.iter().map(|t| (t, 100.0)),
        bank_caps,
        &LimitSetpoints::default(),
        now,
    );
    Bounds::for_inverter(&bank, out_caps, scaling, &LimitSetpoints::default(), 53.0, now)
}

#[test]
fn bank_bounds_sum_the_limits_of_the_batteries_allowing_each_direction() {
    let t = [
        telegram(55.2, 100.0, 80.0, (true, true)),
        telegram(54.8, 60.0, 90.0, (true, false)),
    ];
    let now = Instant::now();
    let b = BankBounds::of(
        t.iter().map(|t| (t, 100.0)),
        caps(150.0, 700.0),
        &LimitSetpoints::default(),
        now,
    );
    // Charge: 100 + 60 = 160, capped at 150. Discharge: only the first allows: 80.
    assert_eq!(b.charge.limit, 150.0);
    assert!(b.charge.enabled);
    assert_eq!(b.discharge.limit, 80.0);
    assert!(!b.discharge.enabled);
    assert_eq!(b.cvl, Some(54.8));
}

#[test]
fn a_limit_rounded_down_passes_and_one_count_more_trips() {
    // 2 x 175 A, I-SCALING 1/3: 116.666... A; the encoder sends 116.6 A.
    let b = bounds_of(
        &[telegram(55.2, 175.0, 175.0, (true, true)); 2],
        caps(700.0, 700.0),
        caps(300.0, 300.0),
        1.0 / 3.0,
    );
    let il = Interlock::default();
    let now = Instant::now();
    let ok = pylon_set(552, 1166, 1166, BOTH, false);
    assert_eq!(il.check(PYLON, &ok, SystemState::Ok, &b, now).map(drop), Ok(()));
    let over = pylon_set(552, 1166, 1167, BOTH, false);
    let trip = il.check(PYLON, &over, SystemState::Ok, &b, now).unwrap_err();
    assert_eq!(trip.rule, Rule::Batteries(LimitKind::Discharge));
    assert_eq!(trip.sent, 116.7);
}

#[test]
fn the_output_cap_and_every_setpoint_bound_the_limit() {
    let now = Instant::now();
    let t = [telegram(55.2, 200.0, 200.0, (true, true))];
    let mut system = LimitSetpoints::default();
    system.set(
        LimitKind::Charge,
        Some(Setpoint {
            value: 50.0,
            expires: None,
        }),
    );
    let mut own = LimitSetpoints::default();
    own.set(
        LimitKind::Discharge,
        Some(Setpoint {
            value: 20.0,
            expires: None,
        }),
    );
    let bank = BankBounds::of(t.iter().map(|t| (t, 100.0)), caps(700.0, 700.0), &system, now);
    let b = Bounds::for_inverter(&bank, caps(100.0, 100.0), 1.0, &own, 55.2, now);
    let il = Interlock::default();
    let check = |c, d| il.check(PYLON, &pylon_set(552, c, d, BOTH, false), SystemState::Ok, &b, now);
    assert_eq!(check(500, 200).map(drop), Ok(()));
    assert_eq!(check(501, 200).unwrap_err().rule, Rule::Setpoint(LimitKind::Charge));
    assert_eq!(check(500, 201).unwrap_err().rule, Rule::Setpoint(LimitKind::Discharge));
    // Without setpoints the output's own cap of 100 A binds.
    let b = Bounds::for_inverter(
        &BankBounds::of(
            t.iter().map(|t| (t, 100.0)),
            caps(700.0, 700.0),
            &LimitSetpoints::default(),
            now,
        ),
        caps(100.0, 100.0),
        1.0,
        &LimitSetpoints::default(),
        55.2,
        now,
    );
    let trip = il
        .check(PYLON, &pylon_set(552, 1001, 0, BOTH, false), SystemState::Ok, &b, now)
        .unwrap_err();
    assert_eq!(trip.rule, Rule::Cap(LimitKind::Charge));
}

#[test]
fn a_forbidden_direction_must_be_0_a_with_its_bit_clear() {
    let b = bounds_of(
        &[
            telegram(55.2, 100.0, 100.0, (false, true)),
            telegram(55.2, 100.0, 100.0, (true, true)),
        ],
        caps(700.0, 700.0),
        caps(300.0, 300.0),
        1.0,
    );
    let il = Interlock::default();
    let now = Instant::now();
    let check = |c, bits| il.check(PYLON, &pylon_set(552, c, 500, bits, false), SystemState::Ok, &b, now);
    assert_eq!(check(0, 0x40).map(drop), Ok(()));
    assert_eq!(check(1, 0x40).unwrap_err().rule, Rule::Forbidden(LimitKind::Charge));
    assert_eq!(check(0, BOTH).unwrap_err().rule, Rule::EnableBit(LimitKind::Charge));
    // Victron has no enable bit: 0 A is the only way to say it.
    let victron = Setting {
        profile: Profile::Victron,
        cvl_ramp: 0.0,
    };
    let set = pylon_set(552, 100, 500, BOTH, false);
    let trip = il.check(victron, &set[1..2], SystemState::Ok, &b, now).unwrap_err();
    assert_eq!(trip.rule, Rule::Forbidden(LimitKind::Charge));
}

#[test]
fn cvl_must_be_above_0_and_not_above_the_lowest_fresh_one() {
    let b = bounds_of(
        &[
            telegram(55.2, 100.0, 100.0, (true, true)),
            telegram(54.0, 100.0, 100.0, (true, true)),
        ],
        caps(700.0, 700.0),
        caps(300.0, 300.0),
        1.0,
    );
    let il = Interlock::default();
    let now = Instant::now();
    let check = |v| il.check(PYLON, &pylon_set(v, 100, 100, BOTH, false), SystemState::Ok, &b, now);
    assert_eq!(check(540).map(drop), Ok(()));
    assert_eq!(check(541).unwrap_err().rule, Rule::Cvl);
    assert_eq!(check(0).unwrap_err().rule, Rule::CvlZero);
}

#[test]
fn with_a_ramp_cvl_may_stay_above_the_batteries_while_it_falls_but_never_jumps_up() {
    let b = bounds_of(
        &[telegram(52.0, 100.0, 100.0, (true, true))],
        caps(700.0, 700.0),
        caps(300.0, 300.0),
        1.0,
    );
    let ramp = Setting {
        profile: Profile::Pylon,
        cvl_ramp: 0.1,
    };
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut il = Interlock::default();
    il.sent(Profile::Pylon, &pylon_set(557, 0, 0, BOTH, false), t0);
    // Falling from 55.7 V at 0.1 V/s toward 52.0 V: 55.6 V one second later.
    let check = |il: &Interlock, v| il.check(ramp, &pylon_set(v, 100, 100, BOTH, false), SystemState::Ok, &b, t1);
    assert_eq!(check(&il, 556).map(drop), Ok(()));
    // One count of rounding slack (55.7), not more.
    assert_eq!(check(&il, 557).map(drop), Ok(()));
    assert_eq!(check(&il, 558).unwrap_err().rule, Rule::CvlRamp);
    // Rising from 51.3 V (victron's lowering) toward 52.0 V: 51.4 V, not 52.0 V at once.
    il.sent(Profile::Pylon, &pylon_set(513, 0, 0, BOTH, false), t0);
    assert_eq!(check(&il, 514).map(drop), Ok(()));
    let trip = check(&il, 520).unwrap_err();
    assert_eq!((trip.rule, trip.sent), (Rule::CvlRamp, 52.0));
}

#[test]
fn the_safe_state_has_no_current_no_enable_and_the_system_error() {
    let b = bounds_of(
        &[telegram(55.2, 100.0, 100.0, (true, true))],
        caps(700.0, 700.0),
        caps(300.0, 300.0),
        1.0,
    );
    let il = Interlock::default();
    let now = Instant::now();
    let check = |c, bits, err| il.check(PYLON, &pylon_set(552, c, 0, bits, err), SystemState::Safe, &b, now);
    assert_eq!(check(0, 0, true).map(drop), Ok(()));
    assert_eq!(check(1, 0, true).unwrap_err().rule, Rule::SafeLimit(LimitKind::Charge));
    assert_eq!(
        check(0, 0x40, true).unwrap_err().rule,
        Rule::SafeEnable(LimitKind::Discharge)
    );
    assert_eq!(check(0, 0, false).unwrap_err().rule, Rule::SafeSystemError);
}

#[test]
fn a_set_without_its_limits_frame_trips() {
    let b = bounds_of(
        &[telegram(55.2, 100.0, 100.0, (true, true))],
        caps(700.0, 700.0),
        caps(300.0, 300.0),
        1.0,
    );
    let set = pylon_set(552, 0, 0, BOTH, false);
    let trip = Interlock::default()
        .check(PYLON, &[set[0], set[2]], SystemState::Ok, &b, Instant::now())
        .unwrap_err();
    assert_eq!(trip.rule, Rule::NoLimits);
    assert_eq!(
        trip.to_string(),
        "interlock: no_limits_frame (sent 0.0, bound 0.0000): the safe state was sent instead"
    );
}

#[test]
fn sma_cvl_bound_is_never_below_what_the_sunny_island_accepts() {
    let b = bounds_of(
        &[telegram(40.0, 100.0, 100.0, (true, true))],
        caps(700.0, 700.0),
        caps(300.0, 300.0),
        1.0,
    );
    let sma = Setting {
        profile: Profile::Sma,
        cvl_ramp: 0.0,
    };
    let set = pylon_set(410, 100, 100, BOTH, false);
    let now = Instant::now();
    assert_eq!(
        Interlock::default().check(sma, &set[1..2], SystemState::Ok, &b, now),
        Ok(410)
    );
    let trip = Interlock::default()
        .check(PYLON, &set, SystemState::Ok, &b, now)
        .unwrap_err();
    assert_eq!(trip.rule, Rule::Cvl);
}

#[test]
fn victron_cvl_lowered_to_the_bank_voltage_follows_it_up_while_charging_is_forbidden() {
    // One pack at 51.37 V, CVL 52.0 V; the inverter is sent 0.0 A charge
    // (a setpoint, a share rounded down): charging is forbidden on the wire.
    let mut t = telegram(52.0, 100.0, 100.0, (true, true));
    t.measurements.v_avg = 51.37;
    let b = bounds_of(&[t], caps(700.0, 700.0), caps(300.0, 300.0), 1.0);
    let victron = Setting {
        profile: Profile::Victron,
        cvl_ramp: 0.1,
    };
    let t0 = Instant::now();
    let mut il = Interlock::default();
    il.sent(Profile::Victron, &pylon_set(480, 0, 1000, 0, false)[1..2], t0);
    // CCL 0.0 A: CVL may be the bank voltage rounded down, 51.3 V, at once.
    let check = |c, v| il.check(victron, &pylon_set(v, c, 1000, 0, false)[1..2], SystemState::Ok, &b, t0);
    assert_eq!(check(0, 513).map(drop), Ok(()));
    assert_eq!(check(0, 514).unwrap_err().rule, Rule::CvlRamp);
    // With 0.1 A allowed the ramp binds: 48.0 V and one count.
    assert_eq!(check(1, 481).map(drop), Ok(()));
    assert_eq!(check(1, 513).unwrap_err().rule, Rule::CvlRamp);
}
