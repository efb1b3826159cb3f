//! Reload tests of the combiner: what `Combiner::reconfigure` keeps
//! (docs/reload.md). Expected values are worked out by hand in the comments.

use super::*;
use crate::codec::{Limits, Measurements, StateOfCharge};
use crate::setpoint::Setpoint;

/// A telegram with these limits and SOC; 52 V, 0 A, 25 degC, normal requests.
fn tg(cvl: f64, ccl: f64, dcl: f64, soc: f64) -> Telegram {
    Telegram {
        limits: Limits {
            v_charge_cmd: cvl,
            i_lim_charge: ccl,
            i_lim_discharge: dcl,
            v_discharge_min: Some(45.0),
        },
        soc: StateOfCharge {
            soc,
            soh: 100.0,
            soc_hires: None,
        },
        measurements: Measurements {
            v_avg: 52.0,
            i_total: 0.0,
            t_avg: 25.0,
        },
        flags: Flags::default(),
        requests: Some(Requests::NORMAL),
        manufacturer: None,
        cells: None,
        energy: None,
        cell_readings: None,
    }
}

/// A system setpoint command.
fn system(kind: LimitKind, setpoint: Option<Setpoint>) -> SetpointCommand {
    SetpointCommand {
        scope: Scope::System,
        kind,
        setpoint,
    }
}

fn at(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

fn settings(on_input_lost: OnInputLost) -> BatterySettings {
    BatterySettings {
        stale_timeout: Duration::from_secs(5),
        on_input_lost,
        // The summed limits: the expected values below are sums.
        bank: BankSettings {
            mode: crate::bank::LimitMode::Sum,
            ..BankSettings::default()
        },
        ..BatterySettings::default()
    }
}

/// Inputs "A" (100 Ah, SOC 80, CCL 100) and "B" (300 Ah, SOC 40, CCL 200),
/// both reported at t0: state ok.
fn running(on_input_lost: OnInputLost, t0: Instant) -> Combiner {
    let mut c = Combiner::new(settings(on_input_lost), &[100.0, 300.0], t0);
    c.on_telegram(0, tg(53.2, 100.0, 120.0, 80.0), t0);
    assert_eq!(
        c.on_telegram(1, tg(54.0, 200.0, 250.0, 40.0), t0).unwrap().state,
        SystemState::Ok
    );
    c
}

#[test]
fn telegrams_and_freshness_follow_their_interface_to_its_new_place() {
    let t0 = Instant::now();
    let mut c = running(OnInputLost::Degrade, t0);
    // The new file lists B first and gives A 300 Ah: SOC (40*300 + 80*300) / 600 = 60.
    let made = c
        .reconfigure(
            settings(OnInputLost::Degrade),
            &[300.0, 300.0],
            &[Some(1), Some(0)],
            at(t0, 1.0),
        )
        .expect("made at once");
    assert_eq!((made.state, made.inputs_online), (SystemState::Ok, 2));
    assert!((made.battery.soc - 60.0).abs() < 1e-9);
    assert!((made.battery.i_lim_charge - 300.0).abs() < 1e-9);
    assert_eq!(c.inputs[0].latest.map(|(t, _)| t.soc.soc), Some(40.0));
    // Freshness is the telegrams' own: both go stale 5 s after t0, not after the reload.
    assert!(c.is_fresh(1, at(t0, 5.0)));
    assert!(!c.is_fresh(1, at(t0, 5.01)));
}

#[test]
fn a_reload_during_start_up_keeps_the_wait_that_is_running() {
    let t0 = Instant::now();
    let mut c = Combiner::new(settings(OnInputLost::Degrade), &[100.0, 300.0], t0);
    assert_eq!(c.on_telegram(0, tg(53.2, 100.0, 120.0, 80.0), at(t0, 1.0)), None);
    assert_eq!(
        c.reconfigure(
            settings(OnInputLost::Degrade),
            &[100.0, 300.0],
            &[Some(0), Some(1)],
            at(t0, 3.0)
        ),
        None,
        "still starting"
    );
    c.on_telegram(0, tg(53.2, 100.0, 120.0, 80.0), at(t0, 4.9));
    // The wait ends STALE-TIMEOUT after the start (5 s), not after the reload (8 s).
    let made = c.on_tick(at(t0, 5.0)).expect("start-up over at 5 s");
    assert_eq!(made.state, SystemState::Degraded);
}

#[test]
fn an_added_battery_is_waited_for_without_counting_as_lost() {
    let t0 = Instant::now();
    let mut c = running(OnInputLost::Stop, t0);
    // Battery C added (third): with ON-INPUT-LOST = stop a lost input would mean safe.
    let made = c
        .reconfigure(
            settings(OnInputLost::Stop),
            &[100.0, 300.0, 200.0],
            &[Some(0), Some(1), None],
            at(t0, 1.0),
        )
        .expect("made at once");
    assert_eq!((made.state, made.inputs_online), (SystemState::Ok, 2));
    // C reports: the next round holds all three. CCL 100 + 200 + 50.
    c.on_telegram(2, tg(53.0, 50.0, 50.0, 20.0), at(t0, 1.5));
    c.on_telegram(0, tg(53.2, 100.0, 120.0, 80.0), at(t0, 2.0));
    let made = c
        .on_telegram(1, tg(54.0, 200.0, 250.0, 40.0), at(t0, 2.0))
        .expect("round");
    assert_eq!((made.state, made.inputs_online), (SystemState::Ok, 3));
    assert!((made.battery.i_lim_charge - 350.0).abs() < 1e-9);
}

#[test]
fn an_added_battery_that_never_reports_is_lost_after_stale_timeout() {
    let t0 = Instant::now();
    let mut c = running(OnInputLost::Degrade, t0);
    c.reconfigure(
        settings(OnInputLost::Degrade),
        &[100.0, 300.0, 200.0],
        &[Some(0), Some(1), None],
        at(t0, 1.0),
    );
    for s in [3.0, 5.9, 6.0] {
        c.on_telegram(0, tg(53.2, 100.0, 120.0, 80.0), at(t0, s));
        let made = c
            .on_telegram(1, tg(54.0, 200.0, 250.0, 40.0), at(t0, s))
            .expect("round");
        let expected = if s < 6.0 {
            SystemState::Ok
        } else {
            SystemState::Degraded
        };
        assert_eq!(made.state, expected, "at {s} s (joined at 1 s)");
    }
}

#[test]
fn removing_the_stale_battery_makes_the_state_ok_at_once() {
    let t0 = Instant::now();
    let mut c = running(OnInputLost::Degrade, t0);
    let made = c
        .on_telegram(0, tg(53.2, 100.0, 120.0, 80.0), at(t0, 5.5))
        .expect("B stale");
    assert_eq!(made.state, SystemState::Degraded);
    let made = c
        .reconfigure(settings(OnInputLost::Degrade), &[100.0], &[Some(0)], at(t0, 5.6))
        .expect("made at once");
    assert_eq!((made.state, made.inputs_online), (SystemState::Ok, 1));
    assert_eq!(made.battery.flags.warning_flags_2, 0);
}

#[test]
fn the_safe_state_stays_the_safe_state_across_a_reload() {
    let t0 = Instant::now();
    let mut c = running(OnInputLost::Degrade, t0);
    assert_eq!(c.on_tick(at(t0, 5.1)).unwrap().state, SystemState::Safe);
    let made = c
        .reconfigure(
            settings(OnInputLost::Degrade),
            &[100.0, 300.0],
            &[Some(0), Some(1)],
            at(t0, 6.0),
        )
        .expect("made at once");
    assert_eq!(made.state, SystemState::Safe);
    assert_eq!((made.battery.i_lim_charge, made.battery.i_lim_discharge), (0.0, 0.0));
    // The charge voltage kept is the last one combined: min(53.2, 54.0).
    assert!((made.battery.v_charge_cmd - 53.2).abs() < 1e-9);
    // Kept alive as before: again KEEPALIVE after the reload's state.
    assert_eq!(c.on_tick(at(t0, 7.0)), None);
    assert_eq!(c.on_tick(at(t0, 8.0)).unwrap().state, SystemState::Safe);
}

#[test]
fn system_setpoints_and_their_expiry_are_kept() {
    let t0 = Instant::now();
    let mut c = running(OnInputLost::Degrade, t0);
    let forever = Setpoint {
        value: 20.0,
        expires: None,
    };
    let until_3 = Setpoint {
        value: 30.0,
        expires: Some(at(t0, 3.0)),
    };
    c.apply(system(LimitKind::Charge, Some(forever)), t0);
    c.apply(system(LimitKind::Discharge, Some(until_3)), t0);
    let made = c
        .reconfigure(
            settings(OnInputLost::Degrade),
            &[100.0, 300.0],
            &[Some(0), Some(1)],
            at(t0, 1.0),
        )
        .unwrap();
    assert_eq!((made.battery.i_lim_charge, made.battery.i_lim_discharge), (20.0, 30.0));
    // The discharge setpoint still expires at 3 s: DCL back to 120 + 250.
    let made = c.on_tick(at(t0, 3.0)).expect("expiry");
    assert_eq!((made.battery.i_lim_charge, made.battery.i_lim_discharge), (20.0, 370.0));
}
