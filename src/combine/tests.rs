//! Combining tests. Expected values are computed by hand from spec section 4
//! and written out as literals; the properties check the spec's invariants.

use super::*;
use crate::codec::{Limits, Measurements, StateOfCharge};
use proptest::prelude::*;

/// A telegram with the given values; flags clear, normal requests.
#[allow(clippy::too_many_arguments)]
fn tg(cvl: f64, ccl: f64, dcl: f64, dvl: f64, soc: f64, soh: f64, v: f64, i: f64, t: f64, modules: u8) -> Telegram {
    Telegram {
        limits: Limits {
            v_charge_cmd: cvl,
            i_lim_charge: ccl,
            i_lim_discharge: dcl,
            v_discharge_min: Some(dvl),
        },
        soc: StateOfCharge {
            soc,
            soh,
            soc_hires: None,
        },
        measurements: Measurements {
            v_avg: v,
            i_total: i,
            t_avg: t,
        },
        flags: Flags {
            n_modules: modules,
            ..Flags::default()
        },
        requests: Some(Requests::NORMAL),
        manufacturer: None,
        cells: None,
    }
}

fn secs(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {
        assert!(close($a, $b), "{} = {} but expected {}", stringify!($a), $a, $b)
    };
}

fn two_inputs() -> (Telegram, Telegram) {
    let a = tg(53.2, 100.0, 120.0, 45.0, 80.0, 100.0, 52.0, 10.0, 20.0, 3);
    let mut b = tg(54.0, 200.0, 250.0, 46.9, 40.0, 90.0, 53.0, -6.0, 30.0, 6);
    b.flags.warning_flags_1 = 0x04;
    b.flags.error_flags_1 = 0x40; // an unknown bit passes through
    (a, b)
}

#[test]
fn two_inputs_of_different_capacity() {
    let (a, b) = two_inputs();
    let c = combine_fresh([(&a, 100.0), (&b, 300.0)].into_iter(), &BatterySettings::default()).unwrap();
    // min CVL, max DVL, summed limits (under the 700 A caps).
    assert_close!(c.v_charge_cmd, 53.2);
    assert_eq!(c.v_discharge_min, Some(46.9));
    assert_close!(c.i_lim_charge, 300.0);
    assert_close!(c.i_lim_discharge, 370.0);
    // Capacity-weighted: (80*100 + 40*300) / 400 = 50; (100*100 + 90*300) / 400 = 92.5.
    assert_close!(c.soc, 50.0);
    assert_close!(c.soh, 92.5);
    // (52*100 + 53*300) / 400 = 52.75; (20*100 + 30*300) / 400 = 27.5.
    assert_close!(c.v_avg, 52.75);
    assert_close!(c.t_avg, 27.5);
    assert_close!(c.i_total, 4.0);
    assert_close!(c.capacity_ah, 400.0);
    assert_eq!(c.flags.warning_flags_1, 0x04);
    assert_eq!(c.flags.error_flags_1, 0x40);
    assert_eq!(c.flags.n_modules, 9);
    assert_eq!(c.requests, Requests::NORMAL);
}

#[test]
fn three_inputs_with_caps_scaling_and_charge_disabled() {
    let a = tg(55.0, 100.0, 100.0, 44.0, 90.0, 100.0, 52.0, 20.0, 25.0, 2);
    let b = tg(54.5, 100.0, 100.0, 45.0, 60.0, 95.0, 51.0, 15.0, 24.0, 2);
    let mut c = tg(56.0, 100.0, 100.0, 46.0, 30.0, 90.0, 50.0, -5.0, 23.0, 2);
    c.requests = Some(Requests {
        charge_enable: false,
        balancing_charge_request: true,
        ..Requests::NORMAL
    });
    c.flags.error_flags_2 = 0x01;
    let settings = BatterySettings {
        i_lim_charge: 150.0,
        i_lim_discharge: 250.0,
        i_tot_scaling: 0.5,
        i_tot_offset: 2.0,
        ..BatterySettings::default()
    };
    let r = combine_fresh([(&a, 50.0), (&b, 100.0), (&c, 150.0)].into_iter(), &settings).unwrap();
    assert_close!(r.v_charge_cmd, 54.5);
    assert_eq!(r.v_discharge_min, Some(46.0));
    // c forbids charging: 100 + 100 + 0 = 200, capped at 150.
    assert_close!(r.i_lim_charge, 150.0);
    // 300 capped at 250.
    assert_close!(r.i_lim_discharge, 250.0);
    // (90*50 + 60*100 + 30*150) / 300 = (4500 + 6000 + 4500) / 300 = 50.
    assert_close!(r.soc, 50.0);
    // (100*50 + 95*100 + 90*150) / 300 = (5000 + 9500 + 13500) / 300 = 93.333...
    assert_close!(r.soh, 28000.0 / 300.0);
    // (20 + 15 - 5) * 0.5 + 2 = 17.
    assert_close!(r.i_total, 17.0);
    assert!(!r.requests.charge_enable);
    assert!(r.requests.discharge_enable);
    assert!(r.requests.balancing_charge_request);
    assert_eq!(r.flags.error_flags_2, 0x01);
    assert_eq!(r.flags.n_modules, 6);
}

#[test]
fn eight_inputs() {
    // Capacities 50, 100, ..., 400 Ah; SOC 10, 20, ..., 80 %.
    let ts: Vec<Telegram> = (1..=8)
        .map(|k| {
            let k = f64::from(k);
            tg(52.0 + k * 0.1, 25.0, 30.0, 45.0, k * 10.0, 100.0, 50.0, k, 20.0, 1)
        })
        .collect();
    let caps: Vec<f64> = (1..=8).map(|k| f64::from(k) * 50.0).collect();
    let r = combine_fresh(ts.iter().zip(caps.iter().copied()), &BatterySettings::default()).unwrap();
    // sum(k*10 * k*50) / sum(k*50) = 10 * sum(k^2) / sum(k) = 10 * 204 / 36.
    assert_close!(r.soc, 2040.0 / 36.0);
    assert_close!(r.v_charge_cmd, 52.1);
    assert_close!(r.i_lim_charge, 200.0);
    assert_close!(r.i_lim_discharge, 240.0);
    assert_close!(r.i_total, 36.0);
    assert_close!(r.capacity_ah, 1800.0);
    assert_eq!(r.flags.n_modules, 8);
}

/// A battery reporting a charge voltage of 0 V forbids charging; its 0 is
/// never the combined charge voltage (found by fuzzing the combiner).
#[test]
fn a_zero_charge_voltage_forbids_charging_and_is_never_sent() {
    let (a, mut b) = two_inputs();
    b.limits.v_charge_cmd = 0.0;
    let c = combine_fresh([(&a, 100.0), (&b, 300.0)].into_iter(), &BatterySettings::default()).unwrap();
    assert_close!(c.v_charge_cmd, 53.2);
    assert_close!(c.i_lim_charge, 100.0);
    assert!(!c.requests.charge_enable);
    // Only 0 V reported: the combiner keeps the last known charge voltage,
    // and before any is known it sends nothing.
    let t0 = Instant::now();
    let mut zero = a;
    zero.limits.v_charge_cmd = 0.0;
    let mut only_zero = Combiner::new(stale5(), &[100.0], t0);
    assert_eq!(only_zero.on_telegram(0, zero, t0), None);
    let mut comb = Combiner::new(stale5(), &[100.0], t0);
    comb.on_telegram(0, a, t0);
    let made = comb.on_telegram(0, zero, secs(t0, 1.0)).unwrap();
    assert_close!(made.battery.v_charge_cmd, 53.2);
    assert_eq!(made.battery.i_lim_charge, 0.0);
    assert!(!made.battery.requests.charge_enable);
}

#[test]
fn cell_extremes_are_min_of_minimums_and_max_of_maximums() {
    let (mut a, mut b) = two_inputs();
    a.cells = Some(CellExtremes {
        v_cell_min: 3.20,
        v_cell_max: 3.35,
        t_cell_min: 15.0,
        t_cell_max: 22.0,
    });
    b.cells = Some(CellExtremes {
        v_cell_min: 3.25,
        v_cell_max: 3.40,
        t_cell_min: 12.0,
        t_cell_max: 21.0,
    });
    let c = tg(55.0, 10.0, 10.0, 44.0, 50.0, 100.0, 52.0, 0.0, 20.0, 1);
    let r = combine_fresh(
        [(&a, 1.0), (&b, 1.0), (&c, 1.0)].into_iter(),
        &BatterySettings::default(),
    )
    .unwrap();
    assert_eq!(
        r.cells,
        Some(CellExtremes {
            v_cell_min: 3.20,
            v_cell_max: 3.40,
            t_cell_min: 12.0,
            t_cell_max: 22.0,
        })
    );
}

fn stale5() -> BatterySettings {
    BatterySettings {
        stale_timeout: Duration::from_secs(5),
        ..BatterySettings::default()
    }
}

#[test]
fn a_round_completes_when_every_fresh_input_has_delivered() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    assert_eq!(c.on_telegram(0, a, secs(t0, 0.1)), None, "waiting for input 2");
    let made = c.on_telegram(1, b, secs(t0, 0.2)).expect("round complete");
    assert_eq!(made.state, SystemState::Ok);
    assert_eq!(made.inputs_online, 2);
    assert_close!(made.battery.soc, 50.0);
    // Input 1 again: not a round yet.
    assert_eq!(c.on_telegram(0, a, secs(t0, 1.1)), None);
    assert!(c.on_telegram(1, b, secs(t0, 1.2)).is_some());
}

#[test]
fn nothing_is_sent_during_start_up_until_every_input_reported_or_timeout() {
    let t0 = Instant::now();
    let (a, _) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    assert_eq!(c.on_tick(secs(t0, 1.0)), None);
    assert_eq!(c.on_telegram(0, a, secs(t0, 1.0)), None);
    assert_eq!(c.on_telegram(0, a, secs(t0, 2.0)), None);
    assert_eq!(c.on_tick(secs(t0, 4.9)), None);
    // STALE-TIMEOUT after start: input 2 counts as stale, degraded with input 1 only.
    c.on_telegram(0, a, secs(t0, 4.95));
    let made = c.on_tick(secs(t0, 5.0)).expect("start-up over");
    assert_eq!(made.state, SystemState::Degraded);
    assert_eq!(made.inputs_online, 1);
    assert_close!(made.battery.soc, 80.0);
    assert_eq!(made.battery.flags.warning_flags_2 & 0x08, 0x08);
    assert_close!(made.battery.i_lim_charge, 100.0);
}

#[test]
fn before_any_input_has_reported_nothing_is_sent_at_all() {
    let t0 = Instant::now();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    for s in [1.0, 5.0, 6.0, 30.0] {
        assert_eq!(c.on_tick(secs(t0, s)), None);
    }
}

#[test]
fn one_input_silent_gives_degraded_then_ok_again() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    c.on_telegram(0, a, secs(t0, 0.0));
    assert_eq!(c.on_telegram(1, b, secs(t0, 0.0)).unwrap().state, SystemState::Ok);
    // Input 2 goes silent; input 1 keeps delivering every second.
    for s in 1..=5 {
        assert_eq!(
            c.on_telegram(0, a, secs(t0, f64::from(s))),
            None,
            "waiting for input 2 at {s} s"
        );
    }
    // 5.0 s after its last telegram input 2 is still fresh; just after, it is not,
    // and the round completes with input 1 alone.
    let made = c.on_tick(secs(t0, 5.05)).expect("input 2 dropped from the wait");
    assert_eq!(made.state, SystemState::Degraded);
    assert_close!(made.battery.i_lim_charge, 100.0);
    assert_close!(made.battery.soc, 80.0);
    assert_close!(made.battery.capacity_ah, 100.0);
    assert_eq!(made.battery.flags.warning_flags_2, 0x08);
    // Input 1 alone makes the next round; input 2 comes back just after it and
    // joins the wait for the round after.
    assert_eq!(c.on_telegram(0, a, secs(t0, 6.0)).unwrap().state, SystemState::Degraded);
    assert_eq!(c.on_telegram(1, b, secs(t0, 6.1)), None);
    let made = c.on_telegram(0, a, secs(t0, 7.0)).expect("round with both");
    assert_eq!(made.state, SystemState::Ok);
    assert_eq!(made.battery.flags.warning_flags_2, 0x00);
    assert_close!(made.battery.soc, 50.0);
}

#[test]
fn all_inputs_lost_gives_the_safe_state_with_the_last_charge_voltage() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    c.on_telegram(0, a, t0);
    c.on_telegram(1, b, t0);
    assert_eq!(c.on_tick(secs(t0, 1.0)), None);
    let made = c.on_tick(secs(t0, 5.1)).expect("safe state");
    assert_eq!(made.state, SystemState::Safe);
    assert_eq!(made.inputs_online, 0);
    assert_eq!(made.battery.i_lim_charge, 0.0);
    assert_eq!(made.battery.i_lim_discharge, 0.0);
    assert!(!made.battery.requests.charge_enable);
    assert!(!made.battery.requests.discharge_enable);
    assert_eq!(made.battery.flags.error_flags_2 & 0x08, 0x08);
    assert_close!(made.battery.v_charge_cmd, 53.2);
    // No degraded bit carried over from an earlier state.
    assert_eq!(made.battery.flags.warning_flags_2 & 0x08, 0);
    // The safe state is repeated as keep-alive, not on every tick.
    assert_eq!(c.on_tick(secs(t0, 5.2)), None);
    assert_eq!(c.on_tick(secs(t0, 7.1)).unwrap().state, SystemState::Safe);
}

/// Regression: a battery that asked for force charge I and full charge and
/// then went silent left both requests set in the safe state.
#[test]
fn the_safe_state_clears_the_requests() {
    let t0 = Instant::now();
    let (mut a, _) = two_inputs();
    a.requests = Some(Requests {
        force_charge_request: true,
        balancing_charge_request: true,
        ..Requests::NORMAL
    });
    let mut c = Combiner::new(stale5(), &[100.0], t0);
    let ok = c.on_telegram(0, a, t0).expect("ok state");
    assert!(ok.battery.requests.force_charge_request && ok.battery.requests.balancing_charge_request);
    let safe = c.on_tick(secs(t0, 5.1)).expect("safe state");
    assert_eq!(safe.state, SystemState::Safe);
    let none = Requests {
        charge_enable: false,
        discharge_enable: false,
        force_charge_request: false,
        force_charge_request_2: false,
        balancing_charge_request: false,
    };
    assert_eq!(safe.battery.requests, none);
}

#[test]
fn on_input_lost_stop_means_safe_while_any_input_is_stale() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let settings = BatterySettings {
        on_input_lost: OnInputLost::Stop,
        ..stale5()
    };
    let mut c = Combiner::new(settings, &[100.0, 300.0], t0);
    c.on_telegram(0, a, t0);
    assert_eq!(c.on_telegram(1, b, t0).unwrap().state, SystemState::Ok);
    c.on_telegram(0, a, secs(t0, 4.0));
    let made = c.on_tick(secs(t0, 5.1)).expect("input 2 lost");
    assert_eq!(made.state, SystemState::Safe);
    assert_eq!(made.inputs_online, 1);
    assert_eq!(made.battery.i_lim_charge, 0.0);
    assert!(!made.battery.requests.charge_enable);
    assert_close!(made.battery.v_charge_cmd, 53.2);
    // Input 2 back: ok again at the next round.
    assert_eq!(c.on_telegram(1, b, secs(t0, 6.0)), None);
    assert_eq!(c.on_telegram(0, a, secs(t0, 6.5)).unwrap().state, SystemState::Ok);
}

#[test]
fn system_setpoints_lower_the_total_and_apply_at_once() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    c.on_telegram(0, a, t0);
    c.on_telegram(1, b, t0);
    let sp = Setpoint {
        value: 120.0,
        expires: Some(secs(t0, 1.5)),
    };
    let made = c
        .set_setpoint(LimitKind::Charge, Some(sp), secs(t0, 0.5))
        .expect("applied at once");
    assert_close!(made.battery.i_lim_charge, 120.0);
    assert_close!(made.battery.i_lim_discharge, 370.0);
    // A setpoint above the limit does not raise it.
    let high = Setpoint {
        value: 500.0,
        expires: None,
    };
    let made = c.set_setpoint(LimitKind::Discharge, Some(high), secs(t0, 0.6)).unwrap();
    assert_close!(made.battery.i_lim_discharge, 370.0);
    // The charge setpoint expires at 1.5 s: a new state restores the limit.
    let made = c.on_tick(secs(t0, 1.5)).expect("expiry makes a new state");
    assert_close!(made.battery.i_lim_charge, 300.0);
}

#[test]
fn inverter_share_scales_limits_and_current_and_applies_caps_and_setpoints() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    c.on_telegram(0, a, t0);
    let combined = c.on_telegram(1, b, t0).unwrap();
    // Totals: charge 300, discharge 370, current 4.0.
    let share = InverterShare {
        i_lim_charge: 100.0,
        i_lim_discharge: 300.0,
        i_scaling: 0.6,
        i_offset: 1.5,
    };
    let mut own = LimitSetpoints::default();
    let s = shape(&combined, &share, &own, t0);
    assert_close!(s.i_lim_charge, 100.0); // min(100, 300 * 0.6 = 180)
    assert_close!(s.i_lim_discharge, 222.0); // min(300, 370 * 0.6)
    assert_close!(s.i_total, 3.9); // 4.0 * 0.6 + 1.5
    assert_close!(s.soc, 50.0);
    own.set(
        LimitKind::Discharge,
        Some(Setpoint {
            value: 50.0,
            expires: None,
        }),
    );
    assert_close!(shape(&combined, &share, &own, t0).i_lim_discharge, 50.0);
}

#[test]
fn safe_state_shares_stay_at_zero_whatever_the_offset() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    c.on_telegram(0, a, t0);
    c.on_telegram(1, b, t0);
    let safe = c.on_tick(secs(t0, 6.0)).unwrap();
    let share = InverterShare {
        i_offset: 10.0,
        ..InverterShare::default()
    };
    let s = shape(&safe, &share, &LimitSetpoints::default(), t0);
    assert_eq!((s.i_lim_charge, s.i_lim_discharge), (0.0, 0.0));
}

fn telegram_strategy() -> impl Strategy<Value = Telegram> {
    (
        (40.0f64..60.0, 0.0f64..500.0, 0.0f64..500.0, 40.0f64..50.0),
        (
            0.0f64..=100.0,
            0.0f64..=100.0,
            40.0f64..60.0,
            -300.0f64..300.0,
            -20.0f64..60.0,
        ),
        (any::<[u8; 4]>(), 0u8..16, any::<bool>(), any::<bool>()),
    )
        .prop_map(|((cvl, ccl, dcl, dvl), (soc, soh, v, i, t), (flags, n, ce, de))| {
            let mut x = tg(cvl, ccl, dcl, dvl, soc, soh, v, i, t, n);
            x.flags.error_flags_1 = flags[0];
            x.flags.error_flags_2 = flags[1];
            x.flags.warning_flags_1 = flags[2];
            x.flags.warning_flags_2 = flags[3];
            x.requests = Some(Requests {
                charge_enable: ce,
                discharge_enable: de,
                ..Requests::NORMAL
            });
            x
        })
}

proptest! {
    /// The combined charge voltage is never above a fresh input's, and the
    /// weighted averages stay within the inputs' range.
    #[test]
    fn combined_charge_voltage_is_never_above_an_input(
        inputs in prop::collection::vec((telegram_strategy(), 1.0f64..1000.0), 1..8)
    ) {
        let b = combine_fresh(inputs.iter().map(|(t, c)| (t, *c)), &BatterySettings::default()).unwrap();
        for (t, _) in &inputs {
            prop_assert!(b.v_charge_cmd <= t.limits.v_charge_cmd);
        }
        let lo = inputs.iter().map(|(t, _)| t.soc.soc).fold(f64::INFINITY, f64::min);
        let hi = inputs.iter().map(|(t, _)| t.soc.soc).fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(b.soc >= lo - 1e-9 && b.soc <= hi + 1e-9);
        prop_assert!(b.i_lim_charge <= 700.0 && b.i_lim_discharge <= 700.0);
    }

    /// With shares summing to at most 1, the inverters together are never
    /// allowed more than the batteries allow.
    #[test]
    fn shares_never_sum_above_the_total(
        inputs in prop::collection::vec((telegram_strategy(), 1.0f64..1000.0), 1..6),
        weights in prop::collection::vec(0.0f64..1.0, 1..5),
        caps in prop::collection::vec(0.0f64..1000.0, 5),
        offsets in prop::collection::vec(-50.0f64..50.0, 5),
    ) {
        let t0 = Instant::now();
        let caps_ah: Vec<f64> = inputs.iter().map(|(_, c)| *c).collect();
        let mut c = Combiner::new(stale5(), &caps_ah, t0);
        let mut made = None;
        for (i, (t, _)) in inputs.iter().enumerate() {
            made = c.on_telegram(i, *t, t0);
        }
        let combined = made.expect("round complete");
        let total: f64 = weights.iter().sum();
        let shares: Vec<InverterShare> = weights.iter().enumerate().map(|(j, w)| InverterShare {
            i_lim_charge: caps[j],
            i_lim_discharge: caps[j],
            i_scaling: w / total.max(1.0),
            i_offset: offsets[j],
        }).collect();
        let own = LimitSetpoints::default();
        let charge: f64 = shares.iter().map(|s| shape(&combined, s, &own, t0).i_lim_charge).sum();
        let discharge: f64 = shares.iter().map(|s| shape(&combined, s, &own, t0).i_lim_discharge).sum();
        prop_assert!(charge <= combined.battery.i_lim_charge + 1e-6);
        prop_assert!(discharge <= combined.battery.i_lim_discharge + 1e-6);
    }

    /// Nothing is derived from a stale input: adding a stale input with any
    /// values changes nothing but the degraded bit.
    #[test]
    fn nothing_is_derived_from_a_stale_input(
        fresh in prop::collection::vec((telegram_strategy(), 1.0f64..1000.0), 1..5),
        stale in telegram_strategy(),
    ) {
        // The stale input reports once at 0 s; the fresh ones at 3 s and 5.5 s,
        // when it has been silent for longer than STALE-TIMEOUT (5 s).
        let t0 = Instant::now();
        let mut caps: Vec<f64> = fresh.iter().map(|(_, c)| *c).collect();
        let run = |c: &mut Combiner| {
            let mut made = None;
            for at in [3.0, 5.5] {
                for (i, (t, _)) in fresh.iter().enumerate() {
                    made = c.on_telegram(i, *t, secs(t0, at)).or(made);
                }
            }
            made.expect("round")
        };
        let alone = run(&mut Combiner::new(stale5(), &caps, t0));
        prop_assert_eq!(alone.state, SystemState::Ok);
        caps.push(1000.0);
        let mut c = Combiner::new(stale5(), &caps, t0);
        c.on_telegram(fresh.len(), stale, t0);
        let with_stale = run(&mut c);
        prop_assert_eq!(with_stale.made_at, secs(t0, 5.5));
        prop_assert_eq!(with_stale.state, SystemState::Degraded);
        let mut expected = alone.battery;
        expected.flags.warning_flags_2 |= WARNING2_INTERNAL_COMM_FAIL;
        prop_assert_eq!(with_stale.battery, expected);
    }
}

/// One inverter's limits as they go out on the wire and an inverter reads them.
fn on_the_wire(b: &Battery) -> (f64, f64) {
    let frame = crate::codec::encode(&crate::codec::Message::Limits(Limits {
        v_charge_cmd: b.v_charge_cmd,
        i_lim_charge: b.i_lim_charge,
        i_lim_discharge: b.i_lim_discharge,
        v_discharge_min: b.v_discharge_min,
    }));
    match crate::codec::decode(&frame) {
        Ok(crate::codec::Message::Limits(l)) => (l.i_lim_charge, l.i_lim_discharge),
        other => panic!("{other:?}"),
    }
}

proptest! {
    /// Rounding never allows more current than the rules give: with shares
    /// summing to at most 1, the limits the inverters read sum to at most the
    /// combined limit, and each is at most its cap and its setpoint.
    #[test]
    fn encoded_limits_never_exceed_the_total_a_cap_or_a_setpoint(
        total in (0.0f64..1000.0, 0.0f64..1000.0),
        weights in prop::collection::vec(0.0f64..1.0, 1..6),
        caps in prop::collection::vec((0.0f64..500.0, 0.0f64..500.0), 6),
        setpoints in prop::collection::vec(prop::option::of((0.0f64..500.0, 0.0f64..500.0)), 6),
    ) {
        let t0 = Instant::now();
        let base = tg(53.2, 0.0, 0.0, 45.0, 50.0, 100.0, 52.0, 0.0, 20.0, 1);
        let mut battery = combine_fresh(std::iter::once((&base, 100.0)), &BatterySettings::default()).unwrap();
        (battery.i_lim_charge, battery.i_lim_discharge) = total;
        let combined = Combined { state: SystemState::Ok, battery, inputs_online: 1, made_at: t0 };
        let sum: f64 = weights.iter().sum();
        let mut wire = (0.0, 0.0);
        for (j, w) in weights.iter().enumerate() {
            let share = InverterShare {
                i_lim_charge: caps[j].0,
                i_lim_discharge: caps[j].1,
                i_scaling: w / sum.max(1.0),
                i_offset: 0.0,
            };
            let mut own = LimitSetpoints::default();
            let set = |value| Some(Setpoint { value, expires: None });
            if let Some((c, d)) = setpoints[j] {
                own.set(LimitKind::Charge, set(c));
                own.set(LimitKind::Discharge, set(d));
            }
            let (c, d) = on_the_wire(&shape(&combined, &share, &own, t0));
            prop_assert!(c <= caps[j].0 + 1e-6 && d <= caps[j].1 + 1e-6, "inverter {j}: {c}, {d} over its caps");
            if let Some((sc, sd)) = setpoints[j] {
                prop_assert!(c <= sc + 1e-6 && d <= sd + 1e-6, "inverter {j}: {c}, {d} over its setpoints");
            }
            wire = (wire.0 + c, wire.1 + d);
        }
        prop_assert!(wire.0 <= total.0 + 1e-6, "charge limits sum to {} over {}", wire.0, total.0);
        prop_assert!(wire.1 <= total.1 + 1e-6, "discharge limits sum to {} over {}", wire.1, total.1);
    }
}
