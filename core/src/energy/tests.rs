//! Energy tests. Expected values are worked out by hand (W x s / 3.6e6 =
//! kWh) and written as literals.

use super::*;
use crate::codec::{Flags, Limits, Measurements, Requests, StateOfCharge};
use proptest::prelude::*;

const GAP: Duration = Duration::from_secs(5);

fn tg(v: f64, i: f64, own: Option<(f64, f64)>) -> Telegram {
    Telegram {
        limits: Limits {
            v_charge_cmd: 53.2,
            i_lim_charge: 100.0,
            i_lim_discharge: 100.0,
            v_discharge_min: Some(45.0),
        },
        soc: StateOfCharge {
            soc: 50.0,
            soh: 100.0,
            soc_hires: None,
        },
        measurements: Measurements {
            v_avg: v,
            i_total: i,
            t_avg: 20.0,
        },
        flags: Flags::default(),
        requests: Some(Requests::NORMAL),
        manufacturer: None,
        cells: None,
        energy: own.map(|(c, d)| Energy {
            charged_kwh: c,
            discharged_kwh: d,
        }),
        cell_readings: None,
    }
}

fn at(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn constant_charging_for_an_hour() {
    // 50 V x 20 A = 1000 W; 3601 telegrams one second apart span 3600 s:
    // exactly 1 kWh charged.
    let t0 = Instant::now();
    let mut m = Meter::default();
    for s in 0..=3600 {
        m.on_telegram(&tg(50.0, 20.0, None), at(t0, s as f64), GAP);
    }
    assert!(close(m.total.charged_kwh, 1.0), "{:?}", m.total);
    assert_eq!(m.total.discharged_kwh, 0.0);
}

#[test]
fn discharging_counts_on_the_other_side() {
    // 48 V x -10 A = -480 W for 2 x 1.5 s = 3 s: 1440 Ws = 0.0004 kWh.
    let t0 = Instant::now();
    let mut m = Meter::default();
    for s in [0.0, 1.5, 3.0] {
        m.on_telegram(&tg(48.0, -10.0, None), at(t0, s), GAP);
    }
    assert!(close(m.total.discharged_kwh, 0.0004), "{:?}", m.total);
    assert_eq!(m.total.charged_kwh, 0.0);
}

#[test]
fn a_sign_change_is_split_at_the_zero_crossing() {
    // +100 W to -300 W over 4 s: zero at 1 s; +100 x 1 / 2 = 50 Ws charged,
    // 300 x 3 / 2 = 450 Ws discharged.
    let c = trapezoid(100.0, -300.0, 4.0);
    assert!(close(c.charged_kwh, 50.0 / 3.6e6));
    assert!(close(c.discharged_kwh, 450.0 / 3.6e6));
    let c = trapezoid(-300.0, 100.0, 4.0);
    assert!(close(c.charged_kwh, 50.0 / 3.6e6));
    assert!(close(c.discharged_kwh, 450.0 / 3.6e6));
}

#[test]
fn nothing_is_counted_across_a_stale_gap() {
    let t0 = Instant::now();
    let mut m = Meter::default();
    m.on_telegram(&tg(50.0, 20.0, None), t0, GAP);
    m.on_telegram(&tg(50.0, 20.0, None), at(t0, 6.0), GAP);
    assert_eq!(m.total, Counter::default());
    // Then it counts again from the telegram after the gap: 1000 W x 1 s.
    m.on_telegram(&tg(50.0, 20.0, None), at(t0, 7.0), GAP);
    assert!(close(m.total.charged_kwh, 1000.0 / 3.6e6));
}

#[test]
fn the_first_telegram_counts_nothing() {
    let mut m = Meter::default();
    m.on_telegram(&tg(50.0, 20.0, None), Instant::now(), GAP);
    assert_eq!(m.total, Counter::default());
}

#[test]
fn a_battery_with_its_own_counters_is_counted_from_them() {
    let t0 = Instant::now();
    let mut m = Meter::default();
    // The first reading is the baseline; V x I is not used at all.
    m.on_telegram(&tg(50.0, 20.0, Some((10.0, 4.0))), t0, GAP);
    m.on_telegram(&tg(50.0, 20.0, None), at(t0, 1.0), GAP);
    assert_eq!(m.total, Counter::default());
    m.on_telegram(&tg(50.0, 20.0, Some((10.5, 4.2))), at(t0, 2.0), GAP);
    assert!(close(m.total.charged_kwh, 0.5) && close(m.total.discharged_kwh, 0.2));
    // A reset of the pack's counter only moves the baseline.
    m.on_telegram(&tg(50.0, 20.0, Some((3.0, 1.0))), at(t0, 3.0), GAP);
    assert!(close(m.total.charged_kwh, 0.5));
    m.on_telegram(&tg(50.0, 20.0, Some((3.2, 1.1))), at(t0, 4.0), GAP);
    assert!(close(m.total.charged_kwh, 0.7), "{:?}", m.total);
    assert!((m.total.discharged_kwh - 0.3).abs() < 1e-9, "{:?}", m.total);
}

#[test]
fn restoring_keeps_the_system_total_when_a_battery_left() {
    let saved = Saved {
        system: Counter {
            charged_kwh: 30.0,
            discharged_kwh: 20.0,
        },
        batteries: vec![
            SavedBattery {
                can_if: "can0".into(),
                total: Counter {
                    charged_kwh: 10.0,
                    discharged_kwh: 5.0,
                },
                bms: None,
            },
            SavedBattery {
                can_if: "can1".into(),
                total: Counter {
                    charged_kwh: 20.0,
                    discharged_kwh: 15.0,
                },
                bms: Some(Counter {
                    charged_kwh: 100.0,
                    discharged_kwh: 90.0,
                }),
            },
        ],
    };
    // can0 is gone, can1 stays, can9 is new.
    let (meters, base) = saved.restore(&["can1", "can9"]);
    assert_eq!(meters[0].total.charged_kwh, 20.0);
    assert_eq!(meters[0].bms_reading().unwrap().charged_kwh, 100.0);
    assert_eq!(meters[1], Meter::default());
    assert_eq!(
        base,
        Counter {
            charged_kwh: 10.0,
            discharged_kwh: 5.0
        }
    );
    let again = Saved::of(base, &["can1", "can9"], &meters);
    assert_eq!(again.system, saved.system);
}

#[test]
fn garbage_on_disk_becomes_zero() {
    let m = Meter::restored(
        Counter {
            charged_kwh: f64::NAN,
            discharged_kwh: -3.0,
        },
        None,
    );
    assert_eq!(m.total, Counter::default());
}

proptest! {
    /// Whatever the telegrams, the counters never go backwards.
    #[test]
    fn never_backwards(steps in proptest::collection::vec(
        (0.0f64..10.0, 0.0f64..60.0, -200.0f64..200.0, proptest::option::of((0.0f64..1e4, 0.0f64..1e4))), 1..60)
    ) {
        let t0 = Instant::now();
        let mut m = Meter::default();
        let mut t = 0.0;
        let mut before = m.total;
        for (dt, v, i, own) in steps {
            t += dt;
            m.on_telegram(&tg(v, i, own), at(t0, t), GAP);
            prop_assert!(m.total.charged_kwh >= before.charged_kwh);
            prop_assert!(m.total.discharged_kwh >= before.discharged_kwh);
            before = m.total;
        }
    }
}

#[test]
fn idle_to_discharging_books_discharge_only() {
    // Issue 22 defect 9: 0 W (a pack at exactly 0 A) to -1000 W over 1 s is
    // a triangle of 1000 x 1 / 2 = 500 Ws discharged and nothing charged;
    // and the same from the other side, 0 W to +1000 W: 500 Ws charged.
    let c = trapezoid(0.0, -1000.0, 1.0);
    assert_eq!(c.charged_kwh, 0.0, "{c:?}");
    assert!(close(c.discharged_kwh, 500.0 / 3.6e6), "{c:?}");
    let c = trapezoid(-1000.0, 0.0, 1.0);
    assert_eq!(c.charged_kwh, 0.0, "{c:?}");
    assert!(close(c.discharged_kwh, 500.0 / 3.6e6), "{c:?}");
    let c = trapezoid(0.0, 1000.0, 1.0);
    assert!(close(c.charged_kwh, 500.0 / 3.6e6), "{c:?}");
    assert_eq!(c.discharged_kwh, 0.0, "{c:?}");
}

#[test]
fn a_meter_from_idle_to_discharging_never_lowers_charged() {
    // 48 V x 0 A, then 48 V x -20 A one second later: 960 x 1 / 2 = 480 Ws
    // discharged; the charged counter stays 0 (it never goes backwards).
    let t0 = Instant::now();
    let mut m = Meter::default();
    m.on_telegram(&tg(48.0, 0.0, None), t0, GAP);
    m.on_telegram(&tg(48.0, -20.0, None), at(t0, 1.0), GAP);
    assert_eq!(m.total.charged_kwh, 0.0, "{:?}", m.total);
    assert!(close(m.total.discharged_kwh, 480.0 / 3.6e6), "{:?}", m.total);
}
