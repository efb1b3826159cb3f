//! The share estimator and closed loop (core/src/bank.rs) on arbitrary rounds of
//! readings: any currents (either sign, so packs circulate), any limits (0 =
//! a forbidden direction), packs going stale and coming back, new and
//! repeated rounds, any time steps and settings. On every round: the limits
//! are finite, never negative, never above the sum of the fresh packs'
//! limits nor the cap, no fresh pack's share of them exceeds its own limit
//! (T x s_i <= L_i; with ON-PACK-FORBIDS = "continue" the shares of the
//! packs going on, scaled to sum 1), and the fresh packs' shares are finite
//! and sum to 1.

#![no_main]

use bms_gateway::bank::{Bank, BankSettings, KINDS, LimitMode, OnPackForbids, PackReading, PerKind, Round};
use libfuzzer_sys::fuzz_target;

mod input;
use input::take;
use std::time::{Duration, Instant};

/// 5 bytes: current (s16, 0.1 A), charge and discharge limits (4 A steps),
/// flags: bit 0 stale, bit 1 charging forbidden, bit 2 discharging
/// forbidden (a forbidden direction's limit is 0, spec 4).
fn reading(raw: &[u8]) -> Option<PackReading> {
    let forbids = PerKind {
        charge: raw[4] & 2 != 0,
        discharge: raw[4] & 4 != 0,
    };
    let limit = |forbidden: bool, raw: u8| if forbidden { 0.0 } else { f64::from(raw) * 4.0 };
    (raw[4] & 1 == 0).then(|| PackReading {
        current: f64::from(i16::from_le_bytes([raw[0], raw[1]])) / 10.0,
        limits: PerKind {
            charge: limit(forbids.charge, raw[2]),
            discharge: limit(forbids.discharge, raw[3]),
        },
        forbids,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let Some(head) = take(&mut data, 6) else { return };
    let n = usize::from(head[0] % 32) + 1;
    let settings = BankSettings {
        mode: if head[1] & 1 == 0 {
            LimitMode::Share
        } else {
            LimitMode::Sum
        },
        share_min_current: 0.1 + f64::from(head[2]),
        overcurrent_margin: f64::from(head[3]) / 255.0,
        overshoot_time: Duration::from_millis(u64::from(head[4]) * 50),
        on_pack_forbids: if head[1] & 2 == 0 {
            OnPackForbids::Stop
        } else {
            OnPackForbids::Continue
        },
    };
    let cap = f64::from(head[5]) * 13.0;
    let caps = PerKind {
        charge: cap,
        discharge: cap,
    };
    let capacities: Vec<f64> = (0..n).map(|k| 10.0 + 37.0 * (k % 7) as f64).collect();
    let mut bank = Bank::new(settings, caps, &capacities);
    let t0 = Instant::now();
    let mut now = t0;
    let mut readings = vec![None; n];
    while let Some(op) = take(&mut data, 2) {
        now += Duration::from_millis(u64::from(op[1]) * 20);
        let round = if op[0] & 1 == 0 { Round::New } else { Round::Repeat };
        if op[0] & 2 != 0 {
            let Some(raw) = take(&mut data, 5 * n) else { break };
            for (r, chunk) in readings.iter_mut().zip(raw.chunks(5)) {
                *r = reading(chunk);
            }
        }
        if op[0] & 4 != 0 {
            bank.note_sent(PerKind {
                charge: f64::from(op[1]) * 3.0,
                discharge: f64::from(op[1]) * 2.0,
            });
        }
        let limits = bank.round(readings.iter().copied(), round, now);
        let views: Vec<_> = bank.packs().collect();
        for kind in KINDS {
            let t = limits.get(kind).value;
            let sum: f64 = readings.iter().flatten().map(|r| *r.limits.get(kind)).sum();
            assert!(t.is_finite() && t >= 0.0, "{kind:?} {t}");
            assert!(
                t <= sum + 1e-9 && t <= cap + 1e-9,
                "{kind:?} {t} > sum {sum} or cap {cap}"
            );
            // ON-PACK-FORBIDS = "continue" with a fresh pack forbidding
            // `kind`: the others' shares are scaled to sum 1 (spec 15); when
            // they sum to less than 0.05 they say nothing and capacities
            // split the current instead (not checked here).
            let forbidding = |r: &PackReading| *r.forbids.get(kind);
            let going_on =
                settings.on_pack_forbids == OnPackForbids::Continue && readings.iter().flatten().any(forbidding);
            let allowing_shares: f64 = views
                .iter()
                .zip(&readings)
                .filter(|(_, r)| r.as_ref().is_some_and(|r| !forbidding(r)))
                .map(|(v, _)| *v.share.get(kind))
                .sum();
            for (view, r) in views.iter().zip(&readings) {
                let Some(r) = r else { continue };
                let (s, own) = (*view.share.get(kind), *r.limits.get(kind));
                assert!(s.is_finite(), "{view:?}");
                let s = match going_on {
                    false => s,
                    true if forbidding(r) => continue,
                    true if allowing_shares > 0.05 => s / allowing_shares,
                    true => continue,
                };
                if settings.mode == LimitMode::Share && s > 0.0 && own > 0.0 {
                    assert!(t * s <= own * (1.0 + 1e-9), "{kind:?}: {t} x {s} > {own}");
                }
            }
            if readings.iter().any(Option::is_some) {
                let total: f64 = views.iter().filter(|v| v.fresh).map(|v| *v.share.get(kind)).sum();
                assert!((total - 1.0).abs() < 1e-6, "{kind:?} shares sum to {total}");
            }
        }
    }
});
