//! The interlock (spec section 14): an independent bound check of every
//! frame set right before it leaves for an inverter.
//!
//! Shaping (combining, the closed loop, setpoints, SOC window, CVL ramp,
//! the profiles' encoders) has many rules; a mistake where two of them meet
//! puts a wrong value on the wire. The interlock does not repeat those
//! rules: it takes simpler bounds from the fresh batteries' own telegrams
//! ([`BankBounds`], made by the combiner next to each combined state, and
//! [`Bounds`] per inverter), decodes the few fields that matter from the
//! bytes about to be sent with its own small per-profile reader ([`Wire`]),
//! and says whether the set stays within them ([`Interlock::check`]). The
//! caller sends the safe state instead of a set that does not.
//!
//! Everything here works on the stack: the check runs before every
//! transmission and never allocates (tests/no_alloc.rs).

use crate::bank::PerKind;
pub use crate::bounds::{BankBounds, BankDirection, Bounds, Direction};
use crate::combine::SystemState;
use crate::frame::Frame;
use crate::profile::Profile;
use crate::setpoint::LimitKind;
use std::fmt;
use std::time::Instant;

/// The lowest CVL the Sunny Island accepts (spec 9): its profile clamps up
/// to it, so its CVL bound is never below it.
pub const SMA_CVL_MIN: f64 = 41.0;

/// Floating-point noise in a bound, in wire counts: the encoder rounds a
/// limit down after adding the same allowance (codec `LIMIT_NOISE`), a
/// ten-millionth of an ampere.
const COUNT_NOISE: f64 = 1e-6;

/// The fields the interlock reads from a frame set, in wire units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wire {
    /// 0x351 bytes 0-1, 0.1 V; `None`: no 0x351 of at least 6 bytes.
    pub cvl: Option<u16>,
    /// 0x351 bytes 2-3 and 4-5, 0.1 A (signed on the wire).
    pub charge: i16,
    pub discharge: i16,
    /// 0x35C byte 0 bits 7 and 6, in the profiles that send it.
    pub enable: Option<PerKind<bool>>,
    /// 0x359 byte 1 bit 3 (protection: system error), in the profiles that send it.
    pub system_error: Option<bool>,
}

impl Wire {
    /// Reads the set as `profile` lays it out. Every profile puts CVL, CCL
    /// and DCL at the same places of 0x351 (Pylontech document, Victron's
    /// and SMA's CAN-BMS documents, Luxpower V04.2); the pylon family and
    /// Luxpower also send 0x35C's enable bits and 0x359's protection bytes.
    pub fn read(profile: Profile, frames: &[Frame]) -> Wire {
        let mut wire = Wire::default();
        let has_flags = matches!(
            profile,
            Profile::Pylon | Profile::PylonV2 | Profile::SolArk | Profile::Luxpower
        );
        for f in frames {
            let d = f.data();
            match f.id.raw() {
                0x351 if d.len() >= 6 => {
                    wire.cvl = Some(u16::from_le_bytes([d[0], d[1]]));
                    wire.charge = i16::from_le_bytes([d[2], d[3]]);
                    wire.discharge = i16::from_le_bytes([d[4], d[5]]);
                }
                0x35C if has_flags && !d.is_empty() => {
                    wire.enable = Some(PerKind {
                        charge: d[0] & 0x80 != 0,
                        discharge: d[0] & 0x40 != 0,
                    });
                }
                0x359 if has_flags && d.len() >= 2 => wire.system_error = Some(d[1] & 0x08 != 0),
                _ => {}
            }
        }
        wire
    }

    fn limit(&self, kind: LimitKind) -> i16 {
        match kind {
            LimitKind::Charge => self.charge,
            LimitKind::Discharge => self.discharge,
        }
    }
}

/// Which rule a frame set broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No 0x351 (or one shorter than 6 bytes).
    NoLimits,
    /// A limit above the output's cap.
    Cap(LimitKind),
    /// A limit above I-SCALING x what the fresh batteries allow.
    Batteries(LimitKind),
    /// A limit above an active setpoint.
    Setpoint(LimitKind),
    /// Current in a direction a fresh battery forbids.
    Forbidden(LimitKind),
    /// An enable bit set for a direction a fresh battery forbids.
    EnableBit(LimitKind),
    /// CVL 0 V.
    CvlZero,
    /// CVL above the lowest fresh CVL.
    Cvl,
    /// CVL above what the CVL ramp allows from the last CVL sent.
    CvlRamp,
    /// The safe state with current allowed.
    SafeLimit(LimitKind),
    /// The safe state with an enable bit set.
    SafeEnable(LimitKind),
    /// The safe state without protection byte 1 bit 3 (system error).
    SafeSystemError,
}

impl Rule {
    /// The rule's name in the event.
    pub fn name(self) -> &'static str {
        use LimitKind::{Charge, Discharge};
        match self {
            Rule::NoLimits => "no_limits_frame",
            Rule::Cap(Charge) => "charge_above_cap",
            Rule::Cap(Discharge) => "discharge_above_cap",
            Rule::Batteries(Charge) => "charge_above_batteries",
            Rule::Batteries(Discharge) => "discharge_above_batteries",
            Rule::Setpoint(Charge) => "charge_above_setpoint",
            Rule::Setpoint(Discharge) => "discharge_above_setpoint",
            Rule::Forbidden(Charge) => "charge_forbidden",
            Rule::Forbidden(Discharge) => "discharge_forbidden",
            Rule::EnableBit(Charge) => "charge_enable_bit",
            Rule::EnableBit(Discharge) => "discharge_enable_bit",
            Rule::CvlZero => "cvl_zero",
            Rule::Cvl => "cvl_above_batteries",
            Rule::CvlRamp => "cvl_above_ramp",
            Rule::SafeLimit(Charge) => "safe_charge_limit",
            Rule::SafeLimit(Discharge) => "safe_discharge_limit",
            Rule::SafeEnable(Charge) => "safe_charge_enable",
            Rule::SafeEnable(Discharge) => "safe_discharge_enable",
            Rule::SafeSystemError => "safe_system_error",
        }
    }
}

/// A failed check: the rule, the value on the wire and the bound (in A or
/// V; 1/0 for bits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    pub rule: Rule,
    pub sent: f64,
    pub bound: f64,
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interlock: {} (sent {:.1}, bound {:.4}): the safe state was sent instead",
            self.rule.name(),
            self.sent,
            self.bound
        )
    }
}

/// One output's interlock: the last CVL it let through (the CVL ramp's
/// bound starts from it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Interlock {
    last_cvl: Option<(u16, Instant)>,
    /// Frame sets refused so far.
    pub trips: u64,
}

/// How `state` is checked and which ramp applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub profile: Profile,
    /// `[[bmses-out]] CVL-RAMP`, V/s; 0 = none.
    pub cvl_ramp: f64,
}

impl Interlock {
    /// Whether `frames`, about to be sent at `now` in `state` to an output
    /// with `setting`, stay within `bounds`; the CVL read from them (0.1 V)
    /// when they do, for [`Interlock::sent_cvl`].
    pub fn check(
        &self,
        setting: Setting,
        frames: &[Frame],
        state: SystemState,
        bounds: &Bounds,
        now: Instant,
    ) -> Result<u16, Trip> {
        let wire = Wire::read(setting.profile, frames);
        let Some(cvl) = wire.cvl else {
            return Err(Trip {
                rule: Rule::NoLimits,
                sent: 0.0,
                bound: 0.0,
            });
        };
        if cvl == 0 {
            return Err(trip(Rule::CvlZero, 0.0, 0.0));
        }
        if state == SystemState::Safe {
            check_safe(&wire, cvl, bounds.cvl.max(cvl_floor(setting.profile)))?;
            return Ok(cvl);
        }
        for kind in [LimitKind::Charge, LimitKind::Discharge] {
            check_direction(&wire, kind, bounds.get(kind))?;
        }
        self.check_cvl(setting, &wire, cvl, bounds, now)?;
        Ok(cvl)
    }

    /// The set `frames` was sent at `now`.
    pub fn sent(&mut self, profile: Profile, frames: &[Frame], now: Instant) {
        if let Some(cvl) = Wire::read(profile, frames).cvl {
            self.sent_cvl(cvl, now);
        }
    }

    /// A set with this CVL (0.1 V, as [`Interlock::check`] read it) was sent at `now`.
    pub fn sent_cvl(&mut self, cvl: u16, now: Instant) {
        self.last_cvl = Some((cvl, now));
    }

    /// The last CVL sent, in V.
    pub fn last_cvl(&self) -> Option<f64> {
        self.last_cvl.map(|(raw, _)| f64::from(raw) / 10.0)
    }

    /// CVL <= the lowest fresh CVL; with a ramp, <= where the ramp can be
    /// from the last CVL sent (one count for the two roundings to 0.1 V).
    /// Victron's CVL lowered to the bank voltage while charging is
    /// forbidden follows that voltage, up too (spec 9), never above the
    /// lowest fresh CVL.
    fn check_cvl(&self, setting: Setting, wire: &Wire, cvl: u16, bounds: &Bounds, now: Instant) -> Result<(), Trip> {
        let target = bounds.cvl.max(cvl_floor(setting.profile));
        let ramping = self.last_cvl.filter(|_| setting.cvl_ramp > 0.0);
        let (rule, bound, slack) = match ramping {
            None => (Rule::Cvl, target, 0.0),
            Some((last, at)) => {
                let last = f64::from(last) / 10.0;
                let step = setting.cvl_ramp * now.saturating_duration_since(at).as_secs_f64();
                let bound = if target < last {
                    target.max(last - step)
                } else {
                    target.min(last + step)
                };
                (Rule::CvlRamp, bound, 1.0)
            }
        };
        let mut max_raw = (bound * 10.0).round() + slack;
        if setting.profile == Profile::Victron && wire.charge <= 0 {
            max_raw = max_raw.max((target.min(bounds.volts) * 10.0 + COUNT_NOISE).floor());
        }
        if f64::from(cvl) > max_raw {
            return Err(trip(rule, f64::from(cvl) / 10.0, bound));
        }
        Ok(())
    }
}

/// The lowest CVL a profile sends whatever the batteries say.
fn cvl_floor(profile: Profile) -> f64 {
    if profile == Profile::Sma { SMA_CVL_MIN } else { 0.0 }
}

fn trip(rule: Rule, sent: f64, bound: f64) -> Trip {
    Trip { rule, sent, bound }
}

/// The largest wire count (0.1 A) within `amperes`.
fn max_count(amperes: f64) -> f64 {
    (amperes * 10.0 + COUNT_NOISE).floor()
}

fn check_direction(wire: &Wire, kind: LimitKind, d: &Direction) -> Result<(), Trip> {
    let raw = f64::from(wire.limit(kind));
    let sent = raw / 10.0;
    if !d.enabled {
        if raw > 0.0 {
            return Err(trip(Rule::Forbidden(kind), sent, 0.0));
        }
        if wire.enable.is_some_and(|e| *e.get(kind)) {
            return Err(trip(Rule::EnableBit(kind), 1.0, 0.0));
        }
    }
    if raw > max_count(d.cap) {
        return Err(trip(Rule::Cap(kind), sent, d.cap));
    }
    if raw > max_count(d.share) {
        return Err(trip(Rule::Batteries(kind), sent, d.share));
    }
    if let Some(setpoint) = d.setpoint.filter(|&s| raw > max_count(s)) {
        return Err(trip(Rule::Setpoint(kind), sent, setpoint));
    }
    Ok(())
}

/// The safe state: no current, no enable bit, the system error set, CVL
/// not above the last known one.
fn check_safe(wire: &Wire, cvl: u16, last_cvl: f64) -> Result<(), Trip> {
    for kind in [LimitKind::Charge, LimitKind::Discharge] {
        let raw = wire.limit(kind);
        if raw != 0 {
            return Err(trip(Rule::SafeLimit(kind), f64::from(raw) / 10.0, 0.0));
        }
        if wire.enable.is_some_and(|e| *e.get(kind)) {
            return Err(trip(Rule::SafeEnable(kind), 1.0, 0.0));
        }
    }
    if wire.system_error == Some(false) {
        return Err(trip(Rule::SafeSystemError, 0.0, 1.0));
    }
    if f64::from(cvl) > (last_cvl * 10.0).round() {
        return Err(trip(Rule::Cvl, f64::from(cvl) / 10.0, last_cvl));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
