//! The reader of `[battery]`: the combined battery's caps, scaling and
//! staleness, the bank's limit rules, and the bank policy (spec 15: derating
//! curves, charge stop, soft landing, SOC mode), each value checked with its
//! key, line and column.

use super::keys;
use super::read::{Reader, Section};
use super::values::{MAX_CURRENT, kind};
use crate::bank::{BankSettings, LimitMode, PerKind};
use crate::combine::{BatterySettings, OnInputLost};
use crate::policy::{ChargeStop, Curve, OnPackForbids, Policy, SocMode, Taper};
use crate::setpoint::LimitKind;
use toml::Spanned;
use toml::de::DeValue;

impl Reader<'_> {
    /// `[battery]`, the bank policy included.
    pub(super) fn battery(&mut self, s: &Section) -> Option<BatterySettings> {
        use super::keys::battery::*;
        self.unknown_keys(s, keys::battery::ALL);
        let d = BatterySettings::default();
        let current = (0.0, MAX_CURRENT);
        Some(BatterySettings {
            i_lim_charge: self.number_or(s, I_LIM_CHARGE, d.i_lim_charge, current),
            i_lim_discharge: self.number_or(s, I_LIM_DISCHARGE, d.i_lim_discharge, current),
            i_tot_scaling: self.number_or(s, I_TOT_SCALING, d.i_tot_scaling, (0.0, 10.0)),
            i_tot_offset: self.number_or(s, I_TOT_OFFSET, d.i_tot_offset, (-1000.0, 1000.0)),
            stale_timeout: self.seconds_or(s, STALE_TIMEOUT, d.stale_timeout, (0.5, 3600.0)),
            // Never 0: it is what inverters are sent as their discharge floor.
            v_discharge_min: self.number_or(s, V_DISCHARGE_MIN, d.v_discharge_min, (1.0, 100.0)),
            on_input_lost: match self.choice(
                s,
                ON_INPUT_LOST,
                &[OnInputLost::Degrade.name(), OnInputLost::Stop.name()],
            ) {
                Some(name) if name == OnInputLost::Stop.name() => OnInputLost::Stop,
                _ => OnInputLost::Degrade,
            },
            bank: self.bank(s),
            policy: self.policy(s),
        })
    }

    /// The bank policy keys (spec 15).
    fn policy(&mut self, s: &Section) -> Policy {
        use super::keys::battery::*;
        Policy {
            derating: PerKind {
                charge: self.curve(s, TEMPERATURE_DERATING_CHARGE),
                discharge: self.curve(s, TEMPERATURE_DERATING_DISCHARGE),
            },
            charge_stop: self.charge_stop(s),
            soft_landing: PerKind {
                charge: self.taper(s, SOFT_LANDING_CHARGE, LimitKind::Charge),
                discharge: self.taper(s, SOFT_LANDING_DISCHARGE, LimitKind::Discharge),
            },
            soc_mode: match self.choice(s, SOC_MODE, &[SocMode::Weighted.name(), SocMode::Usable.name()]) {
                Some("usable") => SocMode::Usable,
                _ => SocMode::Weighted,
            },
        }
    }

    /// An array of numbers, each checked against `range`; `None` (with a
    /// problem) when it is not one.
    fn numbers<const N: usize>(
        &mut self,
        s: &Section,
        key: &str,
        v: &Spanned<DeValue>,
        range: (f64, f64),
        shape: &str,
    ) -> Option<[f64; N]> {
        let items = match v.get_ref() {
            DeValue::Array(items) if items.len() == N => items,
            other => {
                let found = match other {
                    DeValue::Array(items) => format!("{} values", items.len()),
                    other => kind(other).to_string(),
                };
                self.problem(v.span(), &s.name(key), format!("must be {shape}, not {found}"));
                return None;
            }
        };
        let mut out = [0.0; N];
        for (slot, item) in out.iter_mut().zip(items.iter()) {
            *slot = self.number(s, key, item, range)?;
        }
        Some(out)
    }

    /// `[[degC, factor], ...]`: a derating curve.
    fn curve(&mut self, s: &Section, key: &str) -> Option<Curve> {
        let v = s.get(key)?;
        let shape = "an array of [degC, factor] pairs, e.g. [[0, 0.2], [10, 1.0], [45, 1.0], [55, 0.0]]";
        let DeValue::Array(items) = v.get_ref() else {
            self.problem(
                v.span(),
                &s.name(key),
                format!("must be {shape}, not {}", kind(v.get_ref())),
            );
            return None;
        };
        let mut points = [(0.0, 0.0); crate::policy::MAX_POINTS];
        if items.len() > points.len() {
            let message = format!("has {} points: at most {}", items.len(), points.len());
            self.problem(v.span(), &s.name(key), message);
            return None;
        }
        for (slot, item) in points.iter_mut().zip(items.iter()) {
            let [t, k] = self.numbers::<2>(s, key, item, (-50.0, 150.0), "a [degC, factor] pair")?;
            *slot = (t, k);
        }
        match Curve::new(&points[..items.len()]) {
            Ok(curve) => Some(curve),
            Err(e) => {
                self.problem(v.span(), &s.name(key), e.to_string());
                None
            }
        }
    }

    /// `[soc_from, soc_to]`: toward full for charging (from < to), toward
    /// empty for discharging (from > to).
    fn taper(&mut self, s: &Section, key: &str, kind: LimitKind) -> Option<Taper> {
        let v = s.get(key)?;
        let [from, to] = self.numbers::<2>(s, key, v, (0.0, 100.0), "[soc_from, soc_to] in %")?;
        let (ok, rule) = match kind {
            LimitKind::Charge => (from < to, "soc_from below soc_to (the taper runs toward full)"),
            LimitKind::Discharge => (from > to, "soc_from above soc_to (the taper runs toward empty)"),
        };
        if !ok {
            self.problem(v.span(), &s.name(key), format!("[{from}, {to}]: needs {rule}"));
            return None;
        }
        Some(Taper { from, to })
    }

    /// CHARGE-STOP-SOC and CHARGE-RESUME-SOC (resume below stop; without
    /// it, stop minus the default gap).
    fn charge_stop(&mut self, s: &Section) -> Option<ChargeStop> {
        use super::keys::battery::*;
        let stop = s
            .get(CHARGE_STOP_SOC)
            .and_then(|v| self.number(s, CHARGE_STOP_SOC, v, (0.0, 100.0)));
        let resume_value = s.get(CHARGE_RESUME_SOC);
        let resume = resume_value.and_then(|v| self.number(s, CHARGE_RESUME_SOC, v, (0.0, 100.0)));
        match (stop, resume) {
            (None, Some(_)) if s.get(CHARGE_STOP_SOC).is_none() => {
                let span = resume_value.map_or(s.span.clone(), |v| v.span());
                let message = format!("has no effect without {CHARGE_STOP_SOC}: set both");
                self.problem(span, &s.name(CHARGE_RESUME_SOC), message);
                None
            }
            (Some(stop), Some(resume)) if resume >= stop => {
                let span = resume_value.map_or(s.span.clone(), |v| v.span());
                let message = format!(
                    "{resume} must be below {CHARGE_STOP_SOC} ({stop}): charging resumes once the SOC falls below it"
                );
                self.problem(span, &s.name(CHARGE_RESUME_SOC), message);
                None
            }
            (Some(stop), resume) => Some(ChargeStop {
                stop,
                resume: resume.unwrap_or((stop - crate::policy::DEFAULT_RESUME_GAP).max(0.0)),
            }),
            (None, _) => None,
        }
    }

    fn bank(&mut self, s: &Section) -> BankSettings {
        use super::keys::battery::*;
        let d = BankSettings::default();
        BankSettings {
            mode: match self.choice(s, LIMIT_MODE, &["share", "sum"]) {
                Some("sum") => LimitMode::Sum,
                _ => LimitMode::Share,
            },
            // Above 0: an idle bank's split (0 / 0) is never measured.
            share_min_current: self.number_or(s, SHARE_MIN_CURRENT, d.share_min_current, (0.1, 1000.0)),
            overcurrent_margin: self.number_or(s, OVERCURRENT_MARGIN, d.overcurrent_margin, (0.0, 1.0)),
            overshoot_time: self.seconds_or(s, OVERSHOOT_TIME, d.overshoot_time, (0.0, 3600.0)),
            on_pack_forbids: self.on_pack_forbids(s),
        }
    }

    /// ON-PACK-FORBIDS: "continue" needs the measured shares of share mode.
    fn on_pack_forbids(&mut self, s: &Section) -> OnPackForbids {
        use super::keys::battery::*;
        let names = [OnPackForbids::Stop.name(), OnPackForbids::Continue.name()];
        if self.choice(s, ON_PACK_FORBIDS, &names) != Some("continue") {
            return OnPackForbids::Stop;
        }
        let sum = (s.get(LIMIT_MODE).map(|v| v.get_ref()))
            .is_some_and(|v| matches!(v, DeValue::String(m) if m.eq_ignore_ascii_case("sum")));
        if sum {
            let span = s.get(ON_PACK_FORBIDS).map_or(s.span.clone(), |v| v.span());
            let message = format!(
                "\"continue\" needs {LIMIT_MODE} = \"share\": only measured shares keep the other packs \
                 within their own limits when one drops out"
            );
            self.problem(span, &s.name(ON_PACK_FORBIDS), message);
        }
        OnPackForbids::Continue
    }
}
