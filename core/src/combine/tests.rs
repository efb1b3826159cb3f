//! Combining tests. Expected values are computed by hand from the rules of
//! docs/combining.md and written out as literals; the properties check its
//! invariants.

use super::*;
use crate::bank::{BankSettings, Limit, LimitMode, LimitReason};
use crate::codec::{Limits, Measurements, StateOfCharge};
use crate::profile::Profile;
use crate::setpoint::Setpoint;
use proptest::prelude::*;

/// A telegram's values, by name; flags clear, normal requests.
#[derive(Debug, Clone, Copy)]
struct Tg {
    cvl: f64,
    ccl: f64,
    dcl: f64,
    dvl: f64,
    soc: f64,
    soh: f64,
    v: f64,
    i: f64,
    t: f64,
    modules: u8,
}

impl Tg {
    fn telegram(self) -> Telegram {
        Telegram {
            limits: Limits {
                v_charge_cmd: self.cvl,
                i_lim_charge: self.ccl,
                i_lim_discharge: self.dcl,
                v_discharge_min: Some(self.dvl),
            },
            soc: StateOfCharge {
                soc: self.soc,
                soh: self.soh,
                soc_hires: None,
            },
            measurements: Measurements {
                v_avg: self.v,
                i_total: self.i,
                t_avg: self.t,
            },
            flags: Flags {
                n_modules: self.modules,
                ..Flags::default()
            },
            requests: Some(Requests::NORMAL),
            manufacturer: None,
            cells: None,
            energy: None,
            cell_readings: None,
        }
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
    let a = Tg {
        cvl: 53.2,
        ccl: 100.0,
        dcl: 120.0,
        dvl: 45.0,
        soc: 80.0,
        soh: 100.0,
        v: 52.0,
        i: 10.0,
        t: 20.0,
        modules: 3,
    }
    .telegram();
    let mut b = Tg {
        cvl: 54.0,
        ccl: 200.0,
        dcl: 250.0,
        dvl: 46.9,
        soc: 40.0,
        soh: 90.0,
        v: 53.0,
        i: -6.0,
        t: 30.0,
        modules: 6,
    }
    .telegram();
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
    let a = Tg {
        cvl: 55.0,
        ccl: 100.0,
        dcl: 100.0,
        dvl: 44.0,
        soc: 90.0,
        soh: 100.0,
        v: 52.0,
        i: 20.0,
        t: 25.0,
        modules: 2,
    }
    .telegram();
    let b = Tg {
        cvl: 54.5,
        ccl: 100.0,
        dcl: 100.0,
        dvl: 45.0,
        soc: 60.0,
        soh: 95.0,
        v: 51.0,
        i: 15.0,
        t: 24.0,
        modules: 2,
    }
    .telegram();
    let mut c = Tg {
        cvl: 56.0,
        ccl: 100.0,
        dcl: 100.0,
        dvl: 46.0,
        soc: 30.0,
        soh: 90.0,
        v: 50.0,
        i: -5.0,
        t: 23.0,
        modules: 2,
    }
    .telegram();
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
            Tg {
                cvl: 52.0 + k * 0.1,
                ccl: 25.0,
                dcl: 30.0,
                dvl: 45.0,
                soc: k * 10.0,
                soh: 100.0,
                v: 50.0,
                i: k,
                t: 20.0,
                modules: 1,
            }
            .telegram()
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
    let c = Tg {
        cvl: 55.0,
        ccl: 10.0,
        dcl: 10.0,
        dvl: 44.0,
        soc: 50.0,
        soh: 100.0,
        v: 52.0,
        i: 0.0,
        t: 20.0,
        modules: 1,
    }
    .telegram();
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

/// Section 4's rules alone: LIMIT-MODE "sum" (the share rules have their
/// own tests below and in bank/tests.rs).
fn stale5() -> BatterySettings {
    BatterySettings {
        stale_timeout: Duration::from_secs(5),
        bank: BankSettings {
            mode: LimitMode::Sum,
            ..BankSettings::default()
        },
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

/// The deadlines, by hand: STALE-TIMEOUT 5 s, KEEPALIVE 2 s.
#[test]
fn the_next_deadline_is_the_earliest_moment_time_alone_changes_something() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let ns = Duration::from_nanos(1);
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    // Start-up: its end, 5 s after the start.
    assert_eq!(c.next_deadline(t0), Some(secs(t0, 5.0)));
    c.on_telegram(0, a, secs(t0, 1.0));
    assert_eq!(c.next_deadline(secs(t0, 1.0)), Some(secs(t0, 5.0)));
    // Both reported at 1.0 and 1.5: running; a state made at 1.5, so the
    // keep-alive is due at 3.5, before either input turns stale (6.0+, 6.5+).
    c.on_telegram(1, b, secs(t0, 1.5)).expect("round complete");
    assert_eq!(c.next_deadline(secs(t0, 1.5)), Some(secs(t0, 3.5)));
    // A keep-alive state at 3.5; the next at 5.5; input 1 turns stale just
    // after 6.0.
    assert!(c.on_tick(secs(t0, 3.5)).is_some());
    assert_eq!(c.next_deadline(secs(t0, 3.5)), Some(secs(t0, 5.5)));
    assert!(c.on_tick(secs(t0, 5.5)).is_some());
    assert_eq!(c.next_deadline(secs(t0, 5.5)), Some(secs(t0, 6.0) + ns));
    // Not a moment earlier: at 6.0 input 1 is still fresh, just after not.
    assert!(c.is_fresh(0, secs(t0, 6.0)) && !c.is_fresh(0, secs(t0, 6.0) + ns));
    // A setpoint expiring at 6.2 comes before the next keep-alive (8.0) and
    // before input 2 turns stale (6.5+).
    let sp = Setpoint {
        value: 10.0,
        expires: Some(secs(t0, 6.2)),
    };
    c.apply(system(LimitKind::Charge, Some(sp)), secs(t0, 6.0))
        .expect("applied at once");
    // Input 1 turning stale is a moment for the thread (it logs it), but
    // no state: input 2 has not delivered since the last one.
    let after_stale = secs(t0, 6.0) + ns;
    assert_eq!(c.on_tick(after_stale), None);
    assert_eq!(c.next_deadline(after_stale), Some(secs(t0, 6.2)));
    let made = c.on_tick(secs(t0, 6.2)).expect("the expiry makes a state");
    assert_eq!(made.state, SystemState::Degraded);
    assert_eq!(c.next_deadline(secs(t0, 6.2)), Some(secs(t0, 6.5) + ns));
    // Both stale: only the keep-alive is left, never a moment in the past.
    assert_eq!(c.on_tick(secs(t0, 6.5) + ns).map(|m| m.state), Some(SystemState::Safe));
    assert_eq!(c.next_deadline(secs(t0, 7.0)), Some(secs(t0, 6.5) + ns + KEEPALIVE));
}

#[test]
fn before_any_report_the_only_deadline_is_the_start_up_end() {
    let t0 = Instant::now();
    let mut c = Combiner::new(stale5(), &[100.0], t0);
    assert_eq!(c.next_deadline(t0), Some(secs(t0, 5.0)));
    assert_eq!(c.on_tick(secs(t0, 5.0)), None);
    assert_eq!(c.next_deadline(secs(t0, 5.0)), None, "nothing until a telegram");
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

/// Regression: a battery that asked for a force charge and a full charge and
/// then went silent left both requests set in the safe state.
#[test]
fn the_safe_state_clears_every_request() {
    let t0 = Instant::now();
    let (mut a, _) = two_inputs();
    a.requests = Some(Requests {
        force_charge_request: true,
        force_charge_request_2: true,
        balancing_charge_request: true,
        ..Requests::NORMAL
    });
    let mut c = Combiner::new(stale5(), &[100.0], t0);
    let ok = c.on_telegram(0, a, t0).expect("first round");
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
    assert_close!(safe.battery.v_charge_cmd, 53.2);
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

fn system(kind: LimitKind, setpoint: Option<Setpoint>) -> SetpointCommand {
    SetpointCommand {
        scope: Scope::System,
        kind,
        setpoint,
    }
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
        .apply(system(LimitKind::Charge, Some(sp)), secs(t0, 0.5))
        .expect("applied at once");
    assert_close!(made.battery.i_lim_charge, 120.0);
    assert_close!(made.battery.i_lim_discharge, 370.0);
    // A setpoint above the limit does not raise it.
    let high = Setpoint {
        value: 500.0,
        expires: None,
    };
    let made = c
        .apply(system(LimitKind::Discharge, Some(high)), secs(t0, 0.6))
        .unwrap();
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

/// Two inverters sharing 0.6 and 0.4 of the totals (charge 300, discharge
/// 370), caps 300 A.
fn two_inverters(t0: Instant) -> Combiner {
    let (a, b) = two_inputs();
    let share = |i_scaling| InverterShare {
        i_scaling,
        ..InverterShare::default()
    };
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0).with_inverters(&[share(0.6), share(0.4)]);
    c.on_telegram(0, a, t0);
    c.on_telegram(1, b, t0).expect("first round");
    c
}

fn discharge_limits(c: &Combiner, now: Instant) -> Vec<f64> {
    c.shaped(now).map(|s| s.battery.i_lim_discharge).collect()
}

#[test]
fn each_inverter_gets_its_own_shaped_state() {
    let t0 = Instant::now();
    let c = two_inverters(t0);
    let shaped: Vec<Shaped> = c.shaped(t0).collect();
    assert_eq!(shaped.len(), 2);
    assert_close!(shaped[0].battery.i_lim_charge, 180.0); // 300 * 0.6
    assert_close!(shaped[1].battery.i_lim_charge, 120.0); // 300 * 0.4
    assert_close!(shaped[0].battery.i_total, 2.4); // 4.0 * 0.6
    assert_eq!(shaped[0].made_at, t0);
    // A live combiner makes a state at least every 2 s: 5 + 2 + 1 s.
    assert_eq!(shaped[0].expires, secs(t0, 8.0));
    assert_close!(shaped[0].last_cvl, 53.2);
}

#[test]
fn an_inverter_setpoint_lowers_only_its_share_and_expires() {
    let t0 = Instant::now();
    let mut c = two_inverters(t0);
    let own = SetpointCommand {
        scope: Scope::Inverter(1),
        kind: LimitKind::Discharge,
        setpoint: Some(Setpoint {
            value: 50.0,
            expires: Some(secs(t0, 1.5)),
        }),
    };
    // Applied at once, to the latest state (not a new one).
    let made = c.apply(own, secs(t0, 0.5)).expect("reshaped at once");
    assert_eq!(made.made_at, t0);
    assert_eq!(discharge_limits(&c, secs(t0, 0.5)), vec![222.0, 50.0]);
    assert_eq!(c.inverter_setpoints().nth(1).and_then(|s| s.discharge), own.setpoint);
    assert_eq!(c.on_tick(secs(t0, 1.4)), None);
    assert_eq!(c.expired(), &[]);
    // It expires at 1.5 s (before the 2 s keep-alive): the same state is
    // shaped again, back to 370 * 0.4, and the combiner says which expired.
    let made = c.on_tick(secs(t0, 1.5)).expect("expiry reshapes");
    assert_eq!(made.made_at, t0);
    assert_eq!(c.expired(), &[(Scope::Inverter(1), LimitKind::Discharge)]);
    assert_eq!(discharge_limits(&c, secs(t0, 1.5)), vec![222.0, 148.0]);
    assert_eq!(c.inverter_setpoints().nth(1).and_then(|s| s.discharge), None);
    assert_eq!(c.on_tick(secs(t0, 1.6)), None);
    assert_eq!(c.expired(), &[], "reported once");
    // An inverter that does not exist: refused, nothing to send.
    let missing = SetpointCommand {
        scope: Scope::Inverter(2),
        ..own
    };
    assert_eq!(c.apply(missing, secs(t0, 2.2)), None);
}

#[test]
fn the_next_deadline_is_the_next_moment_something_changes() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    // Start-up: its end, then input 1 turning stale 5 s after its telegram.
    assert_eq!(c.next_deadline(t0), Some(secs(t0, 5.0)));
    c.on_telegram(0, a, secs(t0, 1.0));
    assert_eq!(c.next_deadline(secs(t0, 1.0)), Some(secs(t0, 5.0)));
    c.on_telegram(1, b, secs(t0, 1.0)).expect("round");
    // Running: the keep-alive 2 s after the state.
    assert_eq!(c.next_deadline(secs(t0, 1.0)), Some(secs(t0, 3.0)));
    let sp = Setpoint {
        value: 10.0,
        expires: Some(secs(t0, 2.5)),
    };
    c.apply(system(LimitKind::Charge, Some(sp)), secs(t0, 1.2));
    assert_eq!(c.next_deadline(secs(t0, 1.2)), Some(secs(t0, 2.5)));
    // The expiry makes a state at 2.5 s: keep-alive at 4.5 s; after that one
    // (next at 6.5 s) the inputs turning stale just after 6 s comes first.
    assert!(c.on_tick(secs(t0, 2.5)).is_some());
    assert_eq!(c.expired(), &[(Scope::System, LimitKind::Charge)]);
    assert_eq!(c.next_deadline(secs(t0, 2.5)), Some(secs(t0, 4.5)));
    c.on_tick(secs(t0, 4.5));
    assert_eq!(c.expired(), &[]);
    assert_eq!(
        c.next_deadline(secs(t0, 6.0)),
        Some(secs(t0, 6.0) + Duration::from_nanos(1))
    );
    // All stale and safe: only keep-alives are left.
    let safe = c.on_tick(secs(t0, 6.1)).expect("safe state");
    assert_eq!(safe.state, SystemState::Safe);
    assert_eq!(c.next_deadline(secs(t0, 6.1)), Some(secs(t0, 8.1)));
}

/// Regression (found by the replay fuzz target): a system setpoint with a
/// TTL set before any battery ever reported stayed after its expiry, its
/// expiry stayed the next deadline, always due, and the combiner thread
/// (and replay) woke for it without end.
#[test]
fn a_setpoint_expires_even_before_the_first_state() {
    let t0 = Instant::now();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0);
    let sp = Setpoint {
        value: 20.0,
        expires: Some(secs(t0, 4.5)),
    };
    assert!(c.apply(system(LimitKind::Charge, Some(sp)), secs(t0, 1.5)).is_none());
    assert_eq!(c.next_deadline(secs(t0, 1.5)), Some(secs(t0, 4.5)));
    assert!(c.on_tick(secs(t0, 4.5)).is_none(), "nothing reported: nothing to send");
    assert_eq!(c.expired(), &[(Scope::System, LimitKind::Charge)]);
    // Next: the end of the start-up wait (5 s), then nothing at all.
    assert_eq!(c.next_deadline(secs(t0, 4.5)), Some(secs(t0, 5.0)));
    assert!(c.on_tick(secs(t0, 5.0)).is_none());
    assert_eq!(c.next_deadline(secs(t0, 5.0)), None);
}

#[test]
fn nothing_is_shaped_before_the_first_state() {
    let t0 = Instant::now();
    let (a, _) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0).with_inverters(&[InverterShare::default()]);
    c.on_telegram(0, a, t0);
    assert_eq!(c.shaped(t0).count(), 0);
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
            let mut x = Tg {
                cvl,
                ccl,
                dcl,
                dvl,
                soc,
                soh,
                v,
                i,
                t,
                modules: n,
            }
            .telegram();
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

#[test]
fn share_mode_limits_carry_their_reason_and_binding_battery() {
    let t0 = Instant::now();
    let (a, mut b) = two_inputs();
    let settings = BatterySettings {
        stale_timeout: Duration::from_secs(5),
        ..BatterySettings::default()
    };
    let mut c = Combiner::new(settings, &[100.0, 300.0], t0);
    c.on_telegram(0, a, t0);
    // The bank carries 10 - 6 = 4 A (< 10 A): capacity shares 0.25, 0.75.
    // Charge min(100 / 0.25, 200 / 0.75) = 266.67, discharge
    // min(120 / 0.25, 250 / 0.75) = 333.33: battery 2 binds both.
    let made = c.on_telegram(1, b, t0).unwrap();
    assert_close!(made.battery.i_lim_charge, 800.0 / 3.0);
    assert_close!(made.battery.i_lim_discharge, 1000.0 / 3.0);
    for l in [made.limits.charge, made.limits.discharge] {
        assert_eq!((l.reason, l.battery), (LimitReason::Share, Some(1)));
    }
    assert_eq!(made.limits.charge.value, made.battery.i_lim_charge);
    let sp = Setpoint {
        value: 120.0,
        expires: None,
    };
    let made = c.apply(system(LimitKind::Charge, Some(sp)), secs(t0, 0.5)).unwrap();
    assert_eq!(
        (made.limits.charge.reason, made.limits.charge.battery),
        (LimitReason::Setpoint, None)
    );
    assert_close!(made.battery.i_lim_charge, 120.0);
    // Battery 2 forbids discharging: the reason names it.
    b.requests = Some(Requests {
        discharge_enable: false,
        ..Requests::NORMAL
    });
    c.on_telegram(0, a, secs(t0, 1.0));
    let made = c.on_telegram(1, b, secs(t0, 1.0)).unwrap();
    assert_eq!(made.limits.discharge.reason, LimitReason::Disabled);
    assert_eq!(made.limits.discharge.battery, Some(1));
    // Everything stale: safe.
    let safe = c.on_tick(secs(t0, 6.5)).unwrap();
    for l in [safe.limits.charge, safe.limits.discharge] {
        assert_eq!((l.value, l.reason, l.battery), (0.0, LimitReason::Safe, None));
    }
}

/// The pure core on the plant model, one round a second: `demand_w` asked by
/// one inverter (I-SCALING 1) that goes `overshoot` A beyond what it is sent.
/// Returns the last combined state and the packs' last currents.
fn run_plant(mode: LimitMode, demand_w: f64, overshoot: f64, secs: usize) -> (Combined, [f64; 2], bool) {
    use crate::sim::{PackModel, ParallelBank, inverter_current};
    let t0 = Instant::now();
    let settings = BatterySettings {
        bank: BankSettings {
            mode,
            ..BankSettings::default()
        },
        ..BatterySettings::default()
    };
    // Pack 1 has a third of pack 2's resistance: it takes 3/4 of the current.
    let mut plant = ParallelBank {
        packs: vec![
            PackModel {
                capacity_ah: 100.0,
                resistance: 0.01,
                soc: 50.0,
            },
            PackModel {
                capacity_ah: 100.0,
                resistance: 0.03,
                soc: 50.0,
            },
        ],
    };
    // One inverter: the combiner tells the overshoot watch what it is sent.
    let mut c = Combiner::new(settings, &[100.0, 100.0], t0).with_inverters(&[InverterShare::default()]);
    let mut sent = None;
    let mut currents = [0.0; 2];
    let mut last = None;
    let mut overshoot_seen = false;
    for k in 0..secs {
        let now = secs_after(t0, k);
        // Nothing sent yet: the inverter waits.
        let (ccl, dcl) = sent.map_or((0.0, 0.0), |b: Battery| (b.i_lim_charge, b.i_lim_discharge));
        let limits = Limits {
            v_charge_cmd: 53.2,
            i_lim_charge: ccl,
            i_lim_discharge: dcl,
            v_discharge_min: None,
        };
        let bus = plant.split(0.0, &mut currents);
        let total = inverter_current(demand_w, bus, &limits, if sent.is_some() { overshoot } else { 0.0 });
        let bus = plant.split(total, &mut currents);
        plant.step(&currents, 1.0);
        for (i, current) in currents.iter().enumerate() {
            let t = Tg {
                cvl: 53.2,
                ccl: 60.0,
                dcl: 60.0,
                dvl: 45.0,
                soc: 50.0,
                soh: 100.0,
                v: bus,
                i: *current,
                t: 25.0,
                modules: 2,
            }
            .telegram();
            if let Some(made) = c.on_telegram(i, t, now) {
                overshoot_seen |= made.overshoot.charge;
                sent = c.shaped(now).next().map(|s| s.battery);
                last = Some(made);
            }
        }
    }
    (last.unwrap(), currents, overshoot_seen)
}

fn secs_after(t0: Instant, k: usize) -> Instant {
    t0 + Duration::from_secs(k as u64)
}

#[test]
fn on_the_plant_the_pack_that_takes_more_settles_at_its_own_limit() {
    // 8 kW of charge wanted (about 160 A), both packs allow 60 A.
    let (made, i, overshoot) = run_plant(LimitMode::Share, 8000.0, 0.0, 60);
    // Shares 0.75 / 0.25: limit 60 / 0.75 = 80 A; pack 1 at its 60 A, pack 2 at 20 A.
    assert!((made.battery.i_lim_charge - 80.0).abs() < 80.0 * 0.02, "{made:?}");
    assert_eq!(
        (made.limits.charge.reason, made.limits.charge.battery),
        (LimitReason::Share, Some(0))
    );
    assert!(i[0] <= 60.0 * 1.05 && i[0] > 55.0, "{i:?}");
    assert!(i[1] < 25.0, "{i:?}");
    assert!(!overshoot);
    // The sum would allow 120 A: pack 1 would take 90 A.
    let (made, i, _) = run_plant(LimitMode::Sum, 8000.0, 0.0, 60);
    assert!((made.battery.i_lim_charge - 120.0).abs() < 1e-9);
    assert!(i[0] > 85.0, "{i:?}");
}

#[test]
fn on_the_plant_an_inverter_ignoring_its_limit_is_reported_and_the_loop_protects_the_pack() {
    // The inverter takes 20 A more than it is sent: more than 5 % + 2 A over.
    let (made, i, overshoot) = run_plant(LimitMode::Share, 8000.0, 20.0, 40);
    assert!(overshoot && made.overshoot.charge, "{made:?}");
    // The closed loop holds the limit under the formula's 80 A, so that pack 1
    // stays near its 60 A (it would carry 0.75 x (80 + 20) = 75 A without it).
    assert!(made.battery.i_lim_charge < 70.0, "{made:?}");
    assert!(i[0] < 70.0, "{i:?}");
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
        let base = Tg { cvl: 53.2, ccl: 0.0, dcl: 0.0, dvl: 45.0, soc: 50.0, soh: 100.0, v: 52.0, i: 0.0, t: 20.0, modules: 1 }.telegram();
        let mut battery = combine_fresh(std::iter::once((&base, 100.0)), &BatterySettings::default()).unwrap();
        (battery.i_lim_charge, battery.i_lim_discharge) = total;
        let limit = |value| Limit { value, reason: LimitReason::Sum, battery: None };
        let combined = Combined {
            state: SystemState::Ok,
            battery,
            inputs_online: 1,
            bank: BankStatus::default(),
            made_at: t0,
            limits: PerKind { charge: limit(total.0), discharge: limit(total.1) },
            overshoot: PerKind::default(),
        };
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

#[test]
fn the_overshoot_watch_compares_with_what_the_inverters_are_sent_after_their_own_setpoints() {
    // One pack charging at 50 A, allowed 100 A; one inverter; no hold time.
    let t0 = Instant::now();
    let settings = BatterySettings {
        bank: BankSettings {
            mode: LimitMode::Sum,
            overshoot_time: Duration::ZERO,
            ..BankSettings::default()
        },
        ..stale5()
    };
    let pack = Tg {
        cvl: 53.2,
        ccl: 100.0,
        dcl: 100.0,
        dvl: 45.0,
        soc: 50.0,
        soh: 100.0,
        v: 52.0,
        i: 50.0,
        t: 25.0,
        modules: 1,
    }
    .telegram();
    let mut c = Combiner::new(settings, &[100.0], t0).with_inverters(&[InverterShare::default()]);
    c.on_telegram(0, pack, t0).unwrap();
    // Sent 100 A: 50 A is within 100 x 1.05 + 2.
    assert!(!c.on_telegram(0, pack, secs(t0, 1.0)).unwrap().overshoot.charge);
    // The inverter's own setpoint of 20 A: 50 A > 20 x 1.05 + 2 = 23 A.
    let own = SetpointCommand {
        scope: Scope::Inverter(0),
        kind: LimitKind::Charge,
        setpoint: Some(Setpoint {
            value: 20.0,
            expires: None,
        }),
    };
    c.apply(own, secs(t0, 1.5)).unwrap();
    assert!(c.on_telegram(0, pack, secs(t0, 2.0)).unwrap().overshoot.charge);
    // Without inverters nothing is sent, so nothing is compared.
    let mut alone = Combiner::new(settings, &[100.0], t0);
    for k in 0..3 {
        assert!(!alone.on_telegram(0, pack, secs(t0, k as f64)).unwrap().overshoot.charge);
    }
}

/// What goes on the wire, read back with this test's own byte offsets (the
/// layouts of docs/profiles.md), not with the encoder's helpers.
mod wire {
    use super::*;
    use crate::codec::Manufacturer;
    use crate::profile::{self, CvlRamp, OutputView, Shown, SocWindow};

    /// One transmission: (id, data) of each frame, in order.
    pub type Set = Vec<(u32, Vec<u8>)>;

    /// Every profile's frames for inverter `j` of `c` at `now`.
    pub fn sets(c: &Combiner, j: usize, now: Instant) -> Vec<(Profile, Set)> {
        let shaped = c.shaped(now).nth(j).expect("a shaped state");
        Profile::ALL
            .into_iter()
            .map(|p| {
                let mut view = OutputView {
                    profile: p,
                    window: SocWindow::default(),
                    ramp: CvlRamp::new(0.0),
                };
                let battery = view.apply(shaped.battery, shaped.state, now);
                let shown = Shown {
                    battery,
                    bank: shaped.bank,
                    energy: None,
                };
                let name = Manufacturer::new(p.default_manufacturer()).unwrap();
                let frames = profile::frames(p, &shown, name, p.default_voltage_unit());
                let list = frames
                    .frames()
                    .iter()
                    .map(|f| (f.id.raw(), f.data().to_vec()))
                    .collect();
                (p, list)
            })
            .collect()
    }

    pub fn frame(set: &[(u32, Vec<u8>)], id: u32) -> Option<&[u8]> {
        set.iter().find(|(i, _)| *i == id).map(|(_, d)| d.as_slice())
    }

    pub fn u16_at(d: &[u8], i: usize) -> u16 {
        u16::from_le_bytes([d[i], d[i + 1]])
    }

    pub fn i16_at(d: &[u8], i: usize) -> i16 {
        i16::from_le_bytes([d[i], d[i + 1]])
    }
}

/// Issue 22 defect 5 (spec 4): a forbidden direction is 0 A on the wire in
/// every profile. Pack A (CCL 100 A) clears its charge enable, pack B allows
/// 200 A: before the fix the bank's limit was B's 200 A x 0.5 = 100 A, so
/// sma and victron (no enable bit) were told to charge at 100 A and pylon
/// got the bit clear with 100 A. Now 0x351 bytes 2-3 (CCL, 0.1 A) are 0 for
/// every profile, in both limit modes; discharge is untouched: sum mode
/// (120 + 250) x 0.5 = 185 A = 1850 raw; share mode (capacity shares 0.5
/// each) min(120 / 0.5, 250 / 0.5) x 0.5 = 120 A = 1200 raw; 0x35C byte 0 bit 7 (charge enable) is clear
/// where the profile has 0x35C.
#[test]
fn a_forbidden_direction_is_0_a_on_the_wire_in_every_profile() {
    for (mode, dcl_raw) in [(LimitMode::Sum, 1850), (LimitMode::Share, 1200)] {
        let t0 = Instant::now();
        let (mut a, mut b) = two_inputs();
        a.requests = Some(Requests {
            charge_enable: false,
            ..Requests::NORMAL
        });
        a.measurements.i_total = 0.0;
        b.measurements.i_total = 0.0;
        let settings = BatterySettings {
            bank: BankSettings {
                mode,
                ..BankSettings::default()
            },
            ..stale5()
        };
        let share = InverterShare {
            i_lim_charge: 1000.0,
            i_lim_discharge: 1000.0,
            i_scaling: 0.5,
            i_offset: 0.0,
        };
        let mut c = Combiner::new(settings, &[100.0, 100.0], t0).with_inverters(&[share]);
        c.on_telegram(0, a, t0);
        let made = c.on_telegram(1, b, t0).expect("a round");
        assert_eq!(made.limits.charge.reason, LimitReason::Disabled);
        for (p, set) in wire::sets(&c, 0, t0) {
            let f351 = wire::frame(&set, 0x351).unwrap();
            assert_eq!(wire::i16_at(f351, 2), 0, "{mode:?} {p:?}: CCL raw");
            assert_eq!(wire::i16_at(f351, 4), dcl_raw, "{mode:?} {p:?}: DCL raw");
            if let Some(f35c) = wire::frame(&set, 0x35C) {
                assert_eq!(f35c[0] & 0x80, 0, "{mode:?} {p:?}: charge enable");
            }
        }
    }
}

/// Issue 22 defect 8 (spec 4): with no fresh battery, the safe state
/// describes the fresh batteries, none: installed capacity 0 Ah in 0x379
/// (bytes 0-1) and 0x35F (bytes 4-5), and 0x372 counts both batteries
/// offline (bytes 6-7 = 2, online bytes 0-1 = 0). Before the fix 0x379 and
/// 0x35F carried the stale batteries' 100 + 300 = 400 Ah.
#[test]
fn the_safe_state_with_no_fresh_battery_shows_no_capacity() {
    let t0 = Instant::now();
    let (a, b) = two_inputs();
    let mut c = Combiner::new(stale5(), &[100.0, 300.0], t0).with_inverters(&[InverterShare::default()]);
    c.on_telegram(0, a, t0);
    c.on_telegram(1, b, t0);
    let now = secs(t0, 5.1);
    assert_eq!(c.on_tick(now).expect("safe state").state, SystemState::Safe);
    for (p, set) in wire::sets(&c, 0, now) {
        if let Some(f) = wire::frame(&set, 0x379) {
            assert_eq!(wire::u16_at(f, 0), 0, "{p:?}: 0x379 Ah");
        }
        if let Some(f) = wire::frame(&set, 0x35F) {
            assert_eq!(wire::u16_at(f, 4), 0, "{p:?}: 0x35F Ah");
        }
        if let Some(f) = wire::frame(&set, 0x372) {
            assert_eq!(
                (wire::u16_at(f, 0), wire::u16_at(f, 6)),
                (0, 2),
                "{p:?}: 0x372 online, offline"
            );
        }
        if p == Profile::Luxpower {
            let f = wire::frame(&set, 0x359).unwrap();
            assert_eq!(wire::u16_at(f, 5), 0, "{p:?}: 0x359 Ah");
        }
    }
}

/// Issue 22 defect 6 (spec 4): a battery that sends a 6-byte 0x351 gives
/// no discharge voltage. Before the fix pylon, pylon-v2, victron, solark and
/// luxpower sent 0x351 bytes 6-7 = 0 (0 V) and sma 0xFFFF; now every
/// profile sends `[battery] V-DISCHARGE-MIN`: the default 46.0 V = 460
/// (0x01CC) raw, and 47.5 V = 475 when configured so.
#[test]
fn a_missing_discharge_voltage_is_v_discharge_min_on_the_wire() {
    for (settings, raw) in [
        (stale5(), 460),
        (
            BatterySettings {
                v_discharge_min: 47.5,
                ..stale5()
            },
            475,
        ),
    ] {
        let t0 = Instant::now();
        let (mut a, _) = two_inputs();
        a.limits.v_discharge_min = None;
        let mut c = Combiner::new(settings, &[100.0], t0).with_inverters(&[InverterShare::default()]);
        c.on_telegram(0, a, t0).expect("a round");
        for (p, set) in wire::sets(&c, 0, t0) {
            let f351 = wire::frame(&set, 0x351).unwrap();
            assert_eq!(wire::u16_at(f351, 6), raw, "{p:?}: DVL raw");
        }
    }
}

/// Issue 22 defect 1 (spec 8), a reload's round: it brings no new
/// measurement, so with a pack over current it neither rises nor falls.
/// Packs at 120 A and 30 A, own limits 100 A, capacities 100 Ah each, share
/// mode: first round 166.67 x 100 / 120 = 138.89 A (see src/bank/tests.rs);
/// two reloads of the same configuration 0.5 s and 1 s later keep 138.89 A.
#[test]
fn a_reload_round_neither_rises_nor_falls_while_a_pack_is_over_current() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_inputs();
    (a.limits.i_lim_charge, a.measurements.i_total) = (100.0, 120.0);
    (b.limits.i_lim_charge, b.measurements.i_total) = (100.0, 30.0);
    let settings = BatterySettings {
        bank: BankSettings::default(),
        ..stale5()
    };
    let mut c = Combiner::new(settings, &[100.0, 100.0], t0);
    c.on_telegram(0, a, t0);
    let first = c.on_telegram(1, b, t0).expect("a round").battery.i_lim_charge;
    assert!((first - 138.888_888_888_888_9).abs() < 1e-9, "{first}");
    for s in [0.5, 1.0] {
        let made = c.reconfigure(settings, &[100.0, 100.0], &[Some(0), Some(1)], secs(t0, s));
        let now = made.expect("a reload makes a state").battery.i_lim_charge;
        assert!((now - first).abs() < 1e-9, "{s} s: {now}");
    }
}

/// Issue 22 defect 1 (spec 8), the rise's rate: the loop rises back to the
/// limit it is under, the system setpoint included, by at most 10 % of that
/// limit per second. Packs A and B, own limits 100 A, capacities 100 Ah
/// each, a system charge setpoint of 50 A.
/// t0: A 120 A, B 30 A: shares 0.6 / 0.4, formula 166.67 A, with the
/// setpoint 50 A; A is over current: 50 x 100 / 120 = 41.67 A.
/// t0 + 1 s: A and B at 25 A each (within): shares 0.5667 / 0.4333, formula
/// min(200, 100 / 0.5667) = 176.47 A, with the setpoint 50 A: the limit
/// rises by 10 % of 50 A per second: 41.67 + 5 = 46.67 A. (Before the fix
/// it rose by 10 % of the formula before the setpoint, 17.6 A, and the
/// setpoint's 50 A was back at once.)
#[test]
fn the_loop_rises_by_10_percent_per_second_of_the_limit_with_its_setpoint() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_inputs();
    (a.limits.i_lim_charge, a.measurements.i_total) = (100.0, 120.0);
    (b.limits.i_lim_charge, b.measurements.i_total) = (100.0, 30.0);
    let settings = BatterySettings {
        bank: BankSettings::default(),
        ..stale5()
    };
    let mut c = Combiner::new(settings, &[100.0, 100.0], t0);
    let sp = Setpoint {
        value: 50.0,
        expires: None,
    };
    c.apply(system(LimitKind::Charge, Some(sp)), t0);
    c.on_telegram(0, a, t0);
    let first = c.on_telegram(1, b, t0).expect("a round").battery.i_lim_charge;
    assert_close!(first, 50.0 * 100.0 / 120.0);
    a.measurements.i_total = 25.0;
    b.measurements.i_total = 25.0;
    c.on_telegram(0, a, secs(t0, 1.0));
    let rose = c
        .on_telegram(1, b, secs(t0, 1.0))
        .expect("a round")
        .battery
        .i_lim_charge;
    assert_close!(rose, 50.0 * 100.0 / 120.0 + 5.0);
}

/// Spec 8: a system setpoint that expires while a pack is over current
/// raises nothing: the loop held at the setpoint's level. Packs at 120 A and
/// 30 A, own limits 100 A: the first round falls to 166.67 x 100/120 =
/// 138.89 A; a 50 A setpoint holds it at 50 A; when it expires (the packs
/// unchanged, so still over current) the limit stays 50 A, not 138.89 A.
#[test]
fn a_setpoint_that_expires_while_a_pack_is_over_current_raises_nothing() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_inputs();
    (a.limits.i_lim_charge, a.measurements.i_total) = (100.0, 120.0);
    (b.limits.i_lim_charge, b.measurements.i_total) = (100.0, 30.0);
    let settings = BatterySettings {
        bank: BankSettings::default(),
        ..stale5()
    };
    let mut c = Combiner::new(settings, &[100.0, 100.0], t0);
    c.on_telegram(0, a, t0);
    let first = c.on_telegram(1, b, t0).expect("a round").battery.i_lim_charge;
    assert_close!(first, (100.0 / 0.6) * 100.0 / 120.0);
    let sp = Setpoint {
        value: 50.0,
        expires: Some(secs(t0, 1.5)),
    };
    let held = c.apply(system(LimitKind::Charge, Some(sp)), secs(t0, 0.5));
    assert_close!(held.expect("a round").battery.i_lim_charge, 50.0);
    let after = c.on_tick(secs(t0, 1.5)).expect("the expiry makes a round");
    assert_eq!(c.expired(), &[(Scope::System, LimitKind::Charge)]);
    assert_close!(after.battery.i_lim_charge, 50.0);
}

/// Spec 8 and 15: a bank-policy factor that grows while a pack is over
/// current raises nothing. Pack a carries 60 A against its own 10 A
/// (discharge), both packs at 0 % SOC under SOFT-LANDING-DISCHARGE [20, 5]
/// (factor 0.1). First round: shares 2/3 and 1/3, formula 10 / (2/3) = 15 A,
/// the loop falls to 15 x 10/60 = 2.5 A, times 0.1: 0.25 A. Next round the
/// SOC is 50 % (factor 1) and a still carries 60 A: the loop would give
/// 12.86 -> 2.5 x 10/60 = 0.417 A; it stays at 0.25 A.
#[test]
fn a_policy_factor_that_grows_while_a_pack_is_over_current_raises_nothing() {
    use crate::policy::{Policy, Taper};
    let t0 = Instant::now();
    let (mut a, mut b) = two_inputs();
    (a.limits.i_lim_discharge, a.measurements.i_total, a.soc.soc) = (10.0, -60.0, 0.0);
    (b.limits.i_lim_discharge, b.measurements.i_total, b.soc.soc) = (100.0, 0.0, 0.0);
    let settings = BatterySettings {
        bank: BankSettings::default(),
        policy: Policy {
            soft_landing: PerKind {
                charge: None,
                discharge: Some(Taper { from: 20.0, to: 5.0 }),
            },
            ..Policy::default()
        },
        ..stale5()
    };
    let mut c = Combiner::new(settings, &[100.0, 100.0], t0);
    c.on_telegram(0, a, t0);
    let first = c.on_telegram(1, b, t0).expect("a round").battery.i_lim_discharge;
    assert_close!(first, 0.25);
    (a.soc.soc, b.soc.soc) = (50.0, 50.0);
    c.on_telegram(0, a, secs(t0, 1.0));
    let next = c
        .on_telegram(1, b, secs(t0, 1.0))
        .expect("a round")
        .battery
        .i_lim_discharge;
    assert_close!(next, 0.25);
}
