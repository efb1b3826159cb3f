//! Bank policy (spec 15, docs/combining.md "Bank policy"): rules the owner
//! adds on top of the batteries' own limits. Every rule can only lower a
//! limit (or the SOC shown) and names itself as the reason when it binds.
//!
//! Each rule is a small pure function of the combined state; the combiner
//! calls them once per round with the values of the fresh batteries. The
//! only state is the charge-stop hysteresis ([`ChargeGate`]), which the
//! combiner keeps and passes back in. Nothing here allocates: curves are
//! fixed-size so that the settings stay `Copy`.

use crate::bank::{Limit, LimitReason, PerKind};
use crate::codec::CellExtremes;
use crate::setpoint::LimitKind;

/// ON-PACK-FORBIDS is a setting of the bank's (crate::bank), which reads it.
pub use crate::bank::OnPackForbids;

/// `[battery] SOC-MODE`: which SOC the inverters are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SocMode {
    /// Capacity-weighted over the fresh batteries (spec 4).
    #[default]
    Weighted,
    /// A battery that forbids discharging counts as empty, one that
    /// forbids charging (and allows discharging) as full.
    Usable,
}

impl SocMode {
    pub fn name(self) -> &'static str {
        match self {
            SocMode::Weighted => "weighted",
            SocMode::Usable => "usable",
        }
    }
}

/// The most points a derating curve may have.
pub const MAX_POINTS: usize = 8;

/// A derating curve: factors (0..=1) at temperatures (degC), strictly
/// increasing in temperature; flat beyond its first and last point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curve {
    points: [(f64, f64); MAX_POINTS],
    len: usize,
}

/// Why a curve is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum CurveError {
    Empty,
    TooMany,
    /// Point n (0-based): a temperature outside -50..=150 degC, or not above the previous one.
    Temperature(usize),
    /// Point n (0-based): a factor outside 0..=1 (lower-only).
    Factor(usize),
}

impl std::fmt::Display for CurveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CurveError::Empty => write!(f, "needs at least one [degC, factor] point"),
            CurveError::TooMany => write!(f, "has more than {MAX_POINTS} points"),
            CurveError::Temperature(n) => write!(
                f,
                "point {}: temperatures must be from -50 to 150 degC and strictly increasing",
                n + 1
            ),
            CurveError::Factor(n) => write!(f, "point {}: the factor must be from 0 to 1 (it can only lower)", n + 1),
        }
    }
}

impl Curve {
    /// A curve through these `(degC, factor)` points.
    pub fn new(points: &[(f64, f64)]) -> Result<Curve, CurveError> {
        if points.is_empty() {
            return Err(CurveError::Empty);
        }
        if points.len() > MAX_POINTS {
            return Err(CurveError::TooMany);
        }
        let mut curve = Curve {
            points: [(0.0, 1.0); MAX_POINTS],
            len: points.len(),
        };
        for (n, &(t, k)) in points.iter().enumerate() {
            let rising = n == 0 || t > points[n - 1].0;
            if !(-50.0..=150.0).contains(&t) || !rising {
                return Err(CurveError::Temperature(n));
            }
            if !(0.0..=1.0).contains(&k) {
                return Err(CurveError::Factor(n));
            }
            curve.points[n] = (t, k);
        }
        Ok(curve)
    }

    pub fn points(&self) -> &[(f64, f64)] {
        &self.points[..self.len]
    }

    /// The factor at `t` degC: linear between points, flat outside them.
    pub fn factor_at(&self, t: f64) -> f64 {
        let p = self.points();
        let (first, last) = (p[0], p[p.len() - 1]);
        if t <= first.0 {
            return first.1;
        }
        if t >= last.0 {
            return last.1;
        }
        let i = p.iter().position(|&(x, _)| x >= t).unwrap_or(p.len() - 1);
        let ((t0, k0), (t1, k1)) = (p[i - 1], p[i]);
        k0 + (k1 - k0) * (t - t0) / (t1 - t0)
    }
}

/// `[battery] SOFT-LANDING-*`: the limit tapers from itself at `from` to
/// [`LANDING_FLOOR`] of itself at `to` (SOC %, `from` below `to` for
/// charging, above it for discharging).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Taper {
    pub from: f64,
    pub to: f64,
}

/// Where a soft landing ends: this fraction of the limit.
pub const LANDING_FLOOR: f64 = 0.10;

/// `[battery] CHARGE-STOP-SOC` and `CHARGE-RESUME-SOC` (%), resume below stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargeStop {
    pub stop: f64,
    pub resume: f64,
}

/// The hysteresis width used when only the MQTT command sets a stop SOC.
pub const DEFAULT_RESUME_GAP: f64 = 5.0;

/// The `[battery]` policy settings (ON-PACK-FORBIDS is the bank's:
/// [`crate::bank::BankSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Policy {
    pub derating: PerKind<Option<Curve>>,
    pub charge_stop: Option<ChargeStop>,
    pub soft_landing: PerKind<Option<Taper>>,
    pub soc_mode: SocMode,
}

/// The coldest and hottest temperature known of the fresh batteries (degC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Temperatures {
    pub coldest: f64,
    pub hottest: f64,
}

/// What one fresh battery tells about its temperature: its cell extremes
/// (0x373) when it sends them, otherwise its own temperature (0x356).
pub fn battery_temperatures(cells: Option<CellExtremes>, t_avg: f64) -> Temperatures {
    match cells {
        Some(c) => Temperatures {
            coldest: c.t_cell_min,
            hottest: c.t_cell_max,
        },
        None => Temperatures {
            coldest: t_avg,
            hottest: t_avg,
        },
    }
}

/// The bank's extremes over the fresh batteries; `None` without any.
pub fn bank_temperatures(fresh: impl Iterator<Item = Temperatures>) -> Option<Temperatures> {
    fresh.reduce(|a, b| Temperatures {
        coldest: a.coldest.min(b.coldest),
        hottest: a.hottest.max(b.hottest),
    })
}

/// The derating factor for direction `kind`: the curve at the coldest
/// temperature, for charging also at the hottest (the lower of the two).
/// Without a known temperature, 1: the batteries' own limits still apply.
pub fn derating(curve: &Curve, kind: LimitKind, t: Option<Temperatures>) -> f64 {
    let Some(t) = t else { return 1.0 };
    let cold = curve.factor_at(t.coldest);
    match kind {
        LimitKind::Charge => cold.min(curve.factor_at(t.hottest)),
        LimitKind::Discharge => cold,
    }
}

/// The soft-landing factor at `soc`: 1 before `from`, [`LANDING_FLOOR`]
/// from `to` on, linear between.
pub fn soft_landing(taper: &Taper, soc: f64) -> f64 {
    let span = taper.to - taper.from;
    let along = if span == 0.0 {
        1.0
    } else {
        ((soc - taper.from) / span).clamp(0.0, 1.0)
    };
    1.0 - (1.0 - LANDING_FLOOR) * along
}

/// The charge-stop hysteresis: whether charging is stopped by the SOC target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChargeGate {
    #[default]
    Open,
    Stopped,
}

/// The charge stop in effect: the configured one lowered by the command's
/// stop SOC (`set`), keeping the configured hysteresis width (or
/// [`DEFAULT_RESUME_GAP`] without one).
pub fn effective_charge_stop(configured: Option<ChargeStop>, set: Option<f64>) -> Option<ChargeStop> {
    match (configured, set) {
        (c, None) => c,
        (None, Some(stop)) => Some(ChargeStop {
            stop,
            resume: (stop - DEFAULT_RESUME_GAP).max(0.0),
        }),
        (Some(c), Some(set)) if set >= c.stop => Some(c),
        (Some(c), Some(stop)) => Some(ChargeStop {
            stop,
            resume: (stop - (c.stop - c.resume)).max(0.0),
        }),
    }
}

/// The next gate at `soc`: stopped once `soc` reaches `stop.stop`, open
/// again once it is below `stop.resume`, unchanged between. With the same
/// SOC twice the gate does not move: it changes only as the SOC does.
pub fn charge_gate(gate: ChargeGate, soc: f64, stop: Option<ChargeStop>) -> ChargeGate {
    let Some(stop) = stop else { return ChargeGate::Open };
    if soc >= stop.stop {
        ChargeGate::Stopped
    } else if soc < stop.resume {
        ChargeGate::Open
    } else {
        gate
    }
}

/// What a fresh battery counts as in the usable SOC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SocInput {
    pub soc: f64,
    pub capacity_ah: f64,
    pub allows_charge: bool,
    pub allows_discharge: bool,
}

/// The usable SOC: capacity-weighted, with a battery that forbids
/// discharging counted as empty and one that only forbids charging as full.
/// `None` without capacity.
pub fn usable_soc(fresh: impl Iterator<Item = SocInput>) -> Option<f64> {
    let (mut weighted, mut capacity) = (0.0, 0.0);
    for b in fresh {
        let soc = match (b.allows_discharge, b.allows_charge) {
            (false, _) => 0.0,
            (true, false) => 100.0,
            (true, true) => b.soc,
        };
        weighted += soc * b.capacity_ah;
        capacity += b.capacity_ah;
    }
    (capacity > 0.0).then(|| weighted / capacity)
}

/// What the rules read in one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyInputs {
    /// The capacity-weighted SOC of the fresh batteries (%).
    pub soc: f64,
    pub temperatures: Option<Temperatures>,
    pub gate: ChargeGate,
}

/// The factor (0..=1) each rule allows in direction `kind`, binding rule
/// last: what the combiner multiplies the limit by.
pub fn factors(policy: &Policy, kind: LimitKind, inputs: &PolicyInputs) -> [(f64, LimitReason); 3] {
    let temperature = policy
        .derating
        .get(kind)
        .as_ref()
        .map_or(1.0, |c| derating(c, kind, inputs.temperatures));
    let soc_target = match (kind, inputs.gate) {
        (LimitKind::Charge, ChargeGate::Stopped) => 0.0,
        _ => 1.0,
    };
    let landing = policy
        .soft_landing
        .get(kind)
        .as_ref()
        .map_or(1.0, |t| soft_landing(t, inputs.soc));
    [
        (temperature, LimitReason::Temperature),
        (landing, LimitReason::SoftLanding),
        (soc_target, LimitReason::SocTarget),
    ]
}

/// Lowers `limit` by every rule of `policy` in direction `kind` (never
/// raises it): each factor multiplies what the rules before left.
pub fn apply(policy: &Policy, kind: LimitKind, inputs: &PolicyInputs, limit: &mut Limit) {
    let mut value = limit.value;
    for (factor, reason) in factors(policy, kind, inputs) {
        value *= factor.clamp(0.0, 1.0);
        limit.lower(value, reason, None);
    }
}

#[cfg(test)]
mod tests;
