//! Energy counters: how many kWh each battery has taken in (charged) and
//! given out (discharged), and their sums for the system.
//!
//! Pure: every telegram comes with the instant it arrived. The rules
//! (docs/energy-and-events.md):
//! - a battery that sends its own counters (0x378) is counted from them: the
//!   increase between two of its readings is added; a reading lower than the
//!   one before (the pack was reset or replaced) only becomes the new
//!   baseline, so a counter never goes backwards;
//! - any other battery is integrated from its own V x I between two
//!   telegrams, as long as the second came within STALE-TIMEOUT of the
//!   first (a battery that was stale contributes nothing for the gap). The
//!   power is taken to change linearly between the two telegrams (trapezoid
//!   rule), split exactly into a charged and a discharged part when it
//!   changes sign;
//! - the system's counters are the batteries' sums plus a base that keeps
//!   what batteries no longer in the configuration had counted, so that
//!   removing one never lowers the system's total either.

use crate::codec::Energy;
use crate::telegram::Telegram;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Charged and discharged energy, kWh. Both only ever grow.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Counter {
    pub charged_kwh: f64,
    pub discharged_kwh: f64,
}

impl Counter {
    fn add(&mut self, other: Counter) {
        self.charged_kwh += other.charged_kwh;
        self.discharged_kwh += other.discharged_kwh;
    }

    /// Both counters of `self` and `other` added.
    pub fn plus(mut self, other: Counter) -> Counter {
        self.add(other);
        self
    }

    /// A counter read back from disk: anything negative or not finite is 0.
    pub fn sane(self) -> Counter {
        let clean = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
        Counter {
            charged_kwh: clean(self.charged_kwh),
            discharged_kwh: clean(self.discharged_kwh),
        }
    }
}

/// Watt-seconds per kWh.
const WS_PER_KWH: f64 = 3_600_000.0;

/// One battery's counters and what integration needs from the last telegram.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Meter {
    pub total: Counter,
    /// The power (W, + = charging) of the last telegram and when it came.
    last: Option<(Instant, f64)>,
    /// The battery's own counters as last read from its 0x378; once there
    /// is one, V x I is not used for this battery.
    bms: Option<Counter>,
}

impl Meter {
    /// A meter that goes on from counters saved earlier (`bms`: the last
    /// 0x378 reading then, if the battery sends one).
    pub fn restored(total: Counter, bms: Option<Counter>) -> Meter {
        Meter {
            total: total.sane(),
            last: None,
            bms: bms.map(Counter::sane),
        }
    }

    /// The battery's own last 0x378 reading, to be saved with the total.
    pub fn bms_reading(&self) -> Option<Counter> {
        self.bms
    }

    /// Takes one telegram that arrived at `at`; `max_gap` is STALE-TIMEOUT.
    pub fn on_telegram(&mut self, telegram: &Telegram, at: Instant, max_gap: Duration) {
        let m = &telegram.measurements;
        let power = m.v_avg * m.i_total;
        let previous = self.last.replace((at, power));
        if let Some(own) = telegram.energy {
            self.count_bms(own);
            return;
        }
        if self.bms.is_some() {
            return;
        }
        if let Some((t0, p0)) = previous {
            let dt = at.saturating_duration_since(t0);
            if !dt.is_zero() && dt <= max_gap && power.is_finite() && p0.is_finite() {
                self.total.add(trapezoid(p0, power, dt.as_secs_f64()));
            }
        }
    }

    fn count_bms(&mut self, own: Energy) {
        let reading = Counter {
            charged_kwh: own.charged_kwh,
            discharged_kwh: own.discharged_kwh,
        }
        .sane();
        if let Some(before) = self.bms {
            let rise = |now: f64, then: f64| if now >= then { now - then } else { 0.0 };
            self.total.add(Counter {
                charged_kwh: rise(reading.charged_kwh, before.charged_kwh),
                discharged_kwh: rise(reading.discharged_kwh, before.discharged_kwh),
            });
        }
        self.bms = Some(reading);
    }
}

/// The energy of a power going linearly from `p0` to `p1` (W) over `dt` s,
/// split into its charging (p > 0) and discharging (p < 0) parts, kWh.
/// Each part is classified by the sign of the power itself, so an end at
/// exactly 0 W (an idle pack) belongs to neither side and no part is ever
/// booked negative into the other counter.
pub fn trapezoid(p0: f64, p1: f64, dt: f64) -> Counter {
    let (charged_ws, discharged_ws) = if p0 * p1 < 0.0 {
        // The zero crossing splits the interval into two triangles.
        let t0 = dt * p0 / (p0 - p1);
        let first = p0 * t0 / 2.0;
        let second = p1 * (dt - t0) / 2.0;
        if p0 > 0.0 { (first, -second) } else { (second, -first) }
    } else {
        // Both ends on one side (or at 0 W): one area, its sign says which.
        let area = (p0 + p1) / 2.0 * dt;
        (area.max(0.0), (-area).max(0.0))
    };
    Counter {
        charged_kwh: charged_ws / WS_PER_KWH,
        discharged_kwh: discharged_ws / WS_PER_KWH,
    }
}

/// The counters as 0x378 carries them.
impl From<Counter> for Energy {
    fn from(c: Counter) -> Energy {
        Energy {
            charged_kwh: c.charged_kwh,
            discharged_kwh: c.discharged_kwh,
        }
    }
}

/// The system's counters: `base` plus every battery's.
pub fn system_total<'a>(base: Counter, meters: impl IntoIterator<Item = &'a Meter>) -> Counter {
    let mut total = base.sane();
    for m in meters {
        total.add(m.total);
    }
    total
}

/// The base that makes the system's counters `system` with these meters:
/// what batteries no longer configured had counted (never negative). Used
/// at start (from the saved state) and at a reload (from the running total).
pub fn base_for<'a>(system: Counter, meters: impl IntoIterator<Item = &'a Meter>) -> Counter {
    let batteries = system_total(Counter::default(), meters);
    let system = system.sane();
    Counter {
        charged_kwh: (system.charged_kwh - batteries.charged_kwh).max(0.0),
        discharged_kwh: (system.discharged_kwh - batteries.discharged_kwh).max(0.0),
    }
}

/// One battery's counters as saved on disk, by its CAN interface.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SavedBattery {
    pub can_if: String,
    #[serde(flatten)]
    pub total: Counter,
    /// Its own 0x378 reading, if it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bms: Option<Counter>,
}

/// Everything the energy counters need to go on after a restart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Saved {
    pub system: Counter,
    pub batteries: Vec<SavedBattery>,
}

impl Saved {
    /// The meters for the batteries named in `can_ifs` (config order) and
    /// the system base that keeps the saved system total.
    pub fn restore(&self, can_ifs: &[&str]) -> (Vec<Meter>, Counter) {
        let meters: Vec<Meter> = can_ifs
            .iter()
            .map(|name| {
                self.batteries
                    .iter()
                    .find(|b| b.can_if == *name)
                    .map_or_else(Meter::default, |b| Meter::restored(b.total, b.bms))
            })
            .collect();
        let base = base_for(self.system, &meters);
        (meters, base)
    }

    /// What to save for these meters (config order, named by `can_ifs`).
    pub fn of(base: Counter, can_ifs: &[&str], meters: &[Meter]) -> Saved {
        Saved {
            system: system_total(base, meters),
            batteries: can_ifs
                .iter()
                .zip(meters)
                .map(|(name, m)| SavedBattery {
                    can_if: name.to_string(),
                    total: m.total,
                    bms: m.bms,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
