//! What the interlock (spec section 14) checks each frame set against:
//! bounds taken from the fresh batteries' own telegrams, the caps, I-SCALING
//! and the active setpoints, never from the shaping rules.
//!
//! The combiner makes [`BankBounds`] next to each combined state and
//! [`Bounds`] for each inverter; [`crate::interlock`] reads them. They live
//! apart from the interlock so that the combiner, which the profiles build
//! on, does not depend on the interlock, which reads the profiles' frames.

use crate::bank::PerKind;
use crate::setpoint::{LimitKind, LimitSetpoints};
use crate::telegram::Telegram;
use std::time::Instant;

/// Bounds of one direction for the whole bank, from the fresh telegrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BankDirection {
    /// Every fresh battery allows this direction (the AND of their enable bits).
    pub enabled: bool,
    /// min(sum of the limits of the fresh batteries that allow this direction, `[battery]` cap).
    pub limit: f64,
    /// The active system setpoint, if any.
    pub setpoint: Option<f64>,
}

/// When a direction some fresh battery forbids is still open to the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbidRule {
    /// One forbid stops the direction (spec 4; ON-PACK-FORBIDS "stop").
    AnyForbidStops,
    /// The direction goes on while one fresh battery allows it
    /// (ON-PACK-FORBIDS "continue", share mode, spec 15).
    GoesOnWhileOneAllows,
}

/// What the fresh batteries allow the bank, made when a combined state is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BankBounds {
    pub charge: BankDirection,
    pub discharge: BankDirection,
    /// The lowest CVL (> 0) of the fresh batteries; `None` when none sent one.
    pub cvl: Option<f64>,
    /// The fresh batteries' voltage, weighted by capacity (0 without any).
    pub volts: f64,
}

impl BankBounds {
    /// The bounds over the `fresh` telegrams (with their inputs'
    /// capacities), the `[battery]` caps and the system setpoints active at
    /// `now`.
    pub fn of<'a>(
        fresh: impl Iterator<Item = (&'a Telegram, f64)>,
        caps: PerKind<f64>,
        system: &LimitSetpoints,
        now: Instant,
    ) -> BankBounds {
        BankBounds::with_rule(fresh, caps, system, now, ForbidRule::AnyForbidStops)
    }

    /// The same, with `rule` deciding when the bank may go on in a
    /// direction some fresh battery forbids (ON-PACK-FORBIDS, spec 15).
    pub fn with_rule<'a>(
        fresh: impl Iterator<Item = (&'a Telegram, f64)>,
        caps: PerKind<f64>,
        system: &LimitSetpoints,
        now: Instant,
        rule: ForbidRule,
    ) -> BankBounds {
        let mut any_allows = PerKind {
            charge: false,
            discharge: false,
        };
        let mut sum = PerKind {
            charge: 0.0,
            discharge: 0.0,
        };
        let mut enabled = PerKind {
            charge: true,
            discharge: true,
        };
        let mut cvl: Option<f64> = None;
        let (mut volt_ah, mut ah) = (0.0, 0.0);
        for (t, capacity) in fresh {
            volt_ah += t.measurements.v_avg * capacity;
            ah += capacity;
            let r = t.requests_or_normal();
            if r.charge_enable {
                sum.charge += t.limits.i_lim_charge.max(0.0);
            }
            if r.discharge_enable {
                sum.discharge += t.limits.i_lim_discharge.max(0.0);
            }
            enabled.charge &= r.charge_enable;
            enabled.discharge &= r.discharge_enable;
            any_allows.charge |= r.charge_enable;
            any_allows.discharge |= r.discharge_enable;
            if t.limits.v_charge_cmd > 0.0 {
                cvl = Some(cvl.map_or(t.limits.v_charge_cmd, |c| c.min(t.limits.v_charge_cmd)));
            }
        }
        let direction = |kind: LimitKind| BankDirection {
            enabled: match rule {
                ForbidRule::AnyForbidStops => *enabled.get(kind),
                ForbidRule::GoesOnWhileOneAllows => *any_allows.get(kind),
            },
            limit: sum.get(kind).min(*caps.get(kind)),
            setpoint: system.value_at(kind, now),
        };
        BankBounds {
            charge: direction(LimitKind::Charge),
            discharge: direction(LimitKind::Discharge),
            cvl,
            volts: if ah > 0.0 { volt_ah / ah } else { 0.0 },
        }
    }
}

/// Bounds of one direction for one inverter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Direction {
    pub enabled: bool,
    /// The output's own cap (`[[bmses-out]] I-LIM-...`).
    pub cap: f64,
    /// I-SCALING x the bank's limit.
    pub share: f64,
    /// The lowest active setpoint (system or this inverter's).
    pub setpoint: Option<f64>,
}

/// What one inverter may be sent, whatever the shaping rules say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub charge: Direction,
    pub discharge: Direction,
    /// The highest CVL: the lowest fresh one (the last known one without any).
    pub cvl: f64,
    /// The bank's voltage (victron's lowered CVL follows it, spec 9).
    pub volts: f64,
}

impl Bounds {
    /// The bounds of an inverter with these caps and I-SCALING and its own
    /// setpoints (active at `now`); `last_cvl` stands in for a bank CVL
    /// when no fresh battery sent one.
    pub fn for_inverter(
        bank: &BankBounds,
        caps: PerKind<f64>,
        i_scaling: f64,
        own: &LimitSetpoints,
        last_cvl: f64,
        now: Instant,
    ) -> Bounds {
        let direction = |kind: LimitKind, b: &BankDirection| Direction {
            enabled: b.enabled,
            cap: *caps.get(kind),
            share: i_scaling * b.limit,
            setpoint: match (b.setpoint, own.value_at(kind, now)) {
                (Some(a), Some(o)) => Some(a.min(o)),
                (a, o) => a.or(o),
            },
        };
        Bounds {
            charge: direction(LimitKind::Charge, &bank.charge),
            discharge: direction(LimitKind::Discharge, &bank.discharge),
            cvl: bank.cvl.unwrap_or(last_cvl),
            volts: bank.volts,
        }
    }

    pub(crate) fn get(&self, kind: LimitKind) -> &Direction {
        match kind {
            LimitKind::Charge => &self.charge,
            LimitKind::Discharge => &self.discharge,
        }
    }
}
