//! Remote current-limit setpoints: lower-only limits with an optional expiry.
//!
//! Pure values with time passed in; the MQTT thread parses commands into
//! these, the combiner applies them.

use std::time::{Duration, Instant};

/// Longest lifetime a setpoint may have: the limit of a command's "ttl" and
/// of SETPOINT-TTL and HA-SETPOINT-TTL.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86400);

/// Which limit a setpoint lowers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Charge,
    Discharge,
}

impl LimitKind {
    /// The field and topic name, as in the telemetry JSON.
    pub fn field(self) -> &'static str {
        match self {
            LimitKind::Charge => "i_lim_charge",
            LimitKind::Discharge => "i_lim_discharge",
        }
    }
}

/// One active setpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setpoint {
    /// A, already clamped to 0..the configured cap.
    pub value: f64,
    /// `None`: until changed or cleared.
    pub expires: Option<Instant>,
}

impl Setpoint {
    pub fn active_at(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// The charge and discharge setpoints of one scope (the system or one inverter).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LimitSetpoints {
    pub charge: Option<Setpoint>,
    pub discharge: Option<Setpoint>,
}

impl LimitSetpoints {
    pub fn get(&self, kind: LimitKind) -> Option<Setpoint> {
        match kind {
            LimitKind::Charge => self.charge,
            LimitKind::Discharge => self.discharge,
        }
    }

    pub fn set(&mut self, kind: LimitKind, setpoint: Option<Setpoint>) {
        match kind {
            LimitKind::Charge => self.charge = setpoint,
            LimitKind::Discharge => self.discharge = setpoint,
        }
    }

    /// The active value, if any, at `now`.
    pub fn value_at(&self, kind: LimitKind, now: Instant) -> Option<f64> {
        self.get(kind).filter(|s| s.active_at(now)).map(|s| s.value)
    }

    /// `limit` lowered by the active setpoint (never raised).
    pub fn lower(&self, kind: LimitKind, limit: f64, now: Instant) -> f64 {
        self.value_at(kind, now).map_or(limit, |v| limit.min(v))
    }

    /// When the first of these setpoints expires, if any does.
    pub fn next_expiry(&self) -> Option<Instant> {
        [self.charge, self.discharge]
            .into_iter()
            .flatten()
            .filter_map(|s| s.expires)
            .min()
    }

    /// Drops expired setpoints; true when something was dropped.
    pub fn expire(&mut self, now: Instant) -> bool {
        self.expire_each(now, |_| {})
    }

    /// Drops expired setpoints, telling `dropped` each one's kind; true when
    /// something was dropped.
    pub fn expire_each(&mut self, now: Instant, mut dropped: impl FnMut(LimitKind)) -> bool {
        let mut changed = false;
        for kind in [LimitKind::Charge, LimitKind::Discharge] {
            if self.get(kind).is_some_and(|s| !s.active_at(now)) {
                self.set(kind, None);
                dropped(kind);
                changed = true;
            }
        }
        changed
    }
}

/// Who a setpoint applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The whole system: lowers the combined limits.
    System,
    /// One inverter, by index in `[[bmses-out]]` order (0-based).
    Inverter(usize),
    /// The bank's charge-stop SOC (`BASE/set/charge_stop_soc`, spec 15):
    /// the value is a SOC in %, not a current, and the kind is always
    /// `Charge`. Like every setpoint it can only lower: it stops charging
    /// sooner than CHARGE-STOP-SOC, never later.
    ChargeStop,
}

/// A validated command for the combiner: set or clear one setpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SetpointCommand {
    pub scope: Scope,
    pub kind: LimitKind,
    /// `None` clears it.
    pub setpoint: Option<Setpoint>,
}

impl SetpointCommand {
    /// The field and topic name it sets: `i_lim_charge`, `i_lim_discharge`
    /// or `charge_stop_soc`.
    pub fn field(&self) -> &'static str {
        field(self.scope, self.kind)
    }

    /// The unit of its value: "%" for the charge-stop SOC, else "A".
    pub fn unit(&self) -> &'static str {
        unit(self.scope)
    }
}

/// The field and topic name of a setpoint of `scope` and `kind`.
pub fn field(scope: Scope, kind: LimitKind) -> &'static str {
    match scope {
        Scope::ChargeStop => "charge_stop_soc",
        Scope::System | Scope::Inverter(_) => kind.field(),
    }
}

/// The unit of a setpoint of `scope`.
pub fn unit(scope: Scope) -> &'static str {
    match scope {
        Scope::ChargeStop => "%",
        Scope::System | Scope::Inverter(_) => "A",
    }
}

/// A per-inverter setpoint that a reload dropped because its inverter is no
/// longer in the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropped {
    /// The inverter's position in the running configuration (0-based).
    pub inverter: usize,
    pub kind: LimitKind,
    pub setpoint: Setpoint,
}

/// The per-inverter setpoints for a new configuration: new inverter `j`
/// keeps those (with their expiry) of running inverter `from[j]`; those of
/// running inverters that are gone are returned as dropped, unless already
/// expired at `now`.
pub fn carry(old: &[LimitSetpoints], from: &[Option<usize>], now: Instant) -> (Vec<LimitSetpoints>, Vec<Dropped>) {
    let kept = from
        .iter()
        .map(|f| f.and_then(|o| old.get(o)).copied().unwrap_or_default())
        .collect();
    let mut dropped = Vec::new();
    for (inverter, setpoints) in old.iter().enumerate() {
        if from.contains(&Some(inverter)) {
            continue;
        }
        for kind in [LimitKind::Charge, LimitKind::Discharge] {
            if let Some(setpoint) = setpoints.get(kind).filter(|s| s.active_at(now)) {
                dropped.push(Dropped {
                    inverter,
                    kind,
                    setpoint,
                });
            }
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn setpoints_lower_but_never_raise_and_expire() {
        let t0 = Instant::now();
        let mut s = LimitSetpoints::default();
        s.set(
            LimitKind::Charge,
            Some(Setpoint {
                value: 50.0,
                expires: Some(t0 + Duration::from_secs(10)),
            }),
        );
        assert_eq!(s.lower(LimitKind::Charge, 100.0, t0), 50.0);
        assert_eq!(s.lower(LimitKind::Charge, 20.0, t0), 20.0);
        assert_eq!(s.lower(LimitKind::Discharge, 100.0, t0), 100.0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(s.lower(LimitKind::Charge, 100.0, later), 100.0);
        assert!(s.expire(later));
        assert_eq!(s.charge, None);
        assert!(!s.expire(later));
    }

    #[test]
    fn a_reload_keeps_setpoints_by_inverter_and_reports_those_of_removed_ones() {
        let t0 = Instant::now();
        let sp = |value, expires| Setpoint { value, expires };
        let old = [
            LimitSetpoints {
                charge: Some(sp(10.0, None)),
                discharge: None,
            },
            LimitSetpoints {
                charge: Some(sp(20.0, Some(t0 + Duration::from_secs(5)))),
                discharge: Some(sp(30.0, Some(t0 + Duration::from_secs(1)))),
            },
            LimitSetpoints {
                charge: Some(sp(40.0, Some(t0 + Duration::from_secs(9)))),
                discharge: None,
            },
        ];
        // New file: the old third inverter first, then a new one; the first two are gone.
        let (kept, dropped) = carry(&old, &[Some(2), None], t0 + Duration::from_secs(2));
        assert_eq!(kept, [old[2], LimitSetpoints::default()]);
        // The second one's discharge setpoint had expired at 1 s: nothing to report.
        assert_eq!(
            dropped,
            [
                Dropped {
                    inverter: 0,
                    kind: LimitKind::Charge,
                    setpoint: sp(10.0, None)
                },
                Dropped {
                    inverter: 1,
                    kind: LimitKind::Charge,
                    setpoint: sp(20.0, Some(t0 + Duration::from_secs(5)))
                },
            ]
        );
    }

    #[test]
    fn the_next_expiry_is_the_earliest_of_those_that_expire() {
        let t0 = Instant::now();
        let at = |s| Some(t0 + Duration::from_secs(s));
        let mut s = LimitSetpoints::default();
        assert_eq!(s.next_expiry(), None);
        s.set(
            LimitKind::Charge,
            Some(Setpoint {
                value: 1.0,
                expires: None,
            }),
        );
        assert_eq!(s.next_expiry(), None, "until changed: never");
        s.set(
            LimitKind::Discharge,
            Some(Setpoint {
                value: 1.0,
                expires: at(30),
            }),
        );
        assert_eq!(s.next_expiry(), at(30));
        s.set(
            LimitKind::Charge,
            Some(Setpoint {
                value: 1.0,
                expires: at(10),
            }),
        );
        assert_eq!(s.next_expiry(), at(10));
    }
}
