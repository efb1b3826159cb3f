//! Bank-aware limits: keeping every pack of a parallel bank within its own
//! limit, from the currents the packs report (docs/combining.md, "Bank-aware
//! limits").
//!
//! Summing the packs' limits assumes the bank splits current in proportion
//! to them; real packs split by internal resistance and state of charge. The
//! [`Bank`] measures each pack's share of the bank's current, limits the bank
//! so that no pack's share exceeds its own limit, closes the loop on packs
//! that are over current anyway, and watches for an inverter that takes more
//! than it was allowed. Pure: the combiner passes each round's readings and
//! the time in; nothing here allocates after [`Bank::new`].

use crate::setpoint::LimitKind;
use std::time::{Duration, Instant};

/// `[battery] LIMIT-MODE`: how the combined limits are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitMode {
    /// Min over the packs of own limit / measured share (never above the sum).
    Share,
    /// The sum of the packs' limits (the original gateway's rule).
    Sum,
}

impl LimitMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMode::Share => "share",
            LimitMode::Sum => "sum",
        }
    }
}

/// `[battery] ON-PACK-FORBIDS`: what a fresh battery that forbids a
/// direction does to the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPackForbids {
    /// That direction stops for the whole bank (spec 4).
    #[default]
    Stop,
    /// The others go on, with that battery's share 0 (share mode only).
    Continue,
}

impl OnPackForbids {
    pub fn name(self) -> &'static str {
        match self {
            OnPackForbids::Stop => "stop",
            OnPackForbids::Continue => "continue",
        }
    }
}

/// The `[battery]` settings of bank-aware limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BankSettings {
    /// `LIMIT-MODE`.
    pub mode: LimitMode,
    /// `SHARE-MIN-CURRENT` (A): below this |bank current| the split is not measured.
    pub share_min_current: f64,
    /// `OVERCURRENT-MARGIN`: a pack above (1 + margin) x its own limit is over current.
    pub overcurrent_margin: f64,
    /// `OVERSHOOT-TIME`: how long the bank may take more than the inverters
    /// were allowed before it is reported (and how long it must be back
    /// within before the report clears).
    pub overshoot_time: Duration,
    /// `ON-PACK-FORBIDS` (spec 15): in share mode, whether the bank goes on
    /// without a pack that forbids a direction.
    pub on_pack_forbids: OnPackForbids,
}

impl Default for BankSettings {
    fn default() -> Self {
        BankSettings {
            mode: LimitMode::Share,
            share_min_current: 10.0,
            overcurrent_margin: 0.05,
            overshoot_time: Duration::from_secs(10),
            on_pack_forbids: OnPackForbids::Stop,
        }
    }
}

/// Weight of a new measurement in a pack's smoothed share: about the mean of
/// the last three rounds, so one noisy reading moves the limit little while
/// a real change is followed within a few seconds.
pub const SMOOTHING: f64 = 1.0 / 3.0;

/// How fast a limit may rise: this fraction of its target per second.
pub const RISE_PER_SECOND: f64 = 0.10;

/// A pack that forbids a direction is taken to still carry current in it
/// from this many A on (below is measurement noise of an open switch).
pub const FORBIDDEN_NOISE: f64 = 1.0;

/// The absolute part of the overshoot allowance (A), for sensor offsets.
pub const OVERSHOOT_SLACK: f64 = 2.0;

/// Below the remembered shares of the remaining packs summing to this, they
/// say nothing about the new set: capacity shares are used instead.
const MIN_SHARE_SUM: f64 = 0.05;

/// A charge and a discharge value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerKind<T> {
    pub charge: T,
    pub discharge: T,
}

impl<T> PerKind<T> {
    pub fn get(&self, kind: LimitKind) -> &T {
        match kind {
            LimitKind::Charge => &self.charge,
            LimitKind::Discharge => &self.discharge,
        }
    }

    pub fn get_mut(&mut self, kind: LimitKind) -> &mut T {
        match kind {
            LimitKind::Charge => &mut self.charge,
            LimitKind::Discharge => &mut self.discharge,
        }
    }
}

/// Both directions, charge first.
pub const KINDS: [LimitKind; 2] = [LimitKind::Charge, LimitKind::Discharge];

/// "charge" or "discharge", for logs.
pub fn direction_name(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Charge => "charge",
        LimitKind::Discharge => "discharge",
    }
}

/// The part of `current` (+ = charging) that flows in direction `kind` (>= 0).
pub fn along(kind: LimitKind, current: f64) -> f64 {
    match kind {
        LimitKind::Charge => current.max(0.0),
        LimitKind::Discharge => (-current).max(0.0),
    }
}

/// Why a combined limit is what it is, binding term first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitReason {
    /// The `[battery]` cap.
    Cap,
    /// The sum of the packs' limits.
    Sum,
    /// A pack's own limit over its measured share.
    Share,
    /// Lowered by the closed loop after a pack was over current.
    Overcurrent,
    /// A system setpoint.
    Setpoint,
    /// A pack forbids the direction (its enable bit is clear).
    Disabled,
    /// The safe state.
    Safe,
    /// Bank policy (spec 15): temperature derating.
    Temperature,
    /// Bank policy: the charge-stop SOC.
    #[serde(rename = "soc_target")]
    SocTarget,
    /// Bank policy: the soft landing near full or empty.
    #[serde(rename = "soft_landing")]
    SoftLanding,
    /// Bank policy: a pack forbids the direction and the bank goes on
    /// without it (or stops because it still takes current).
    #[serde(rename = "pack_forbids")]
    PackForbids,
}

impl LimitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitReason::Cap => "cap",
            LimitReason::Sum => "sum",
            LimitReason::Share => "share",
            LimitReason::Overcurrent => "overcurrent",
            LimitReason::Setpoint => "setpoint",
            LimitReason::Disabled => "disabled",
            LimitReason::Safe => "safe",
            LimitReason::Temperature => "temperature",
            LimitReason::SocTarget => "soc_target",
            LimitReason::SoftLanding => "soft_landing",
            LimitReason::PackForbids => "pack_forbids",
        }
    }
}

/// One limit and why it is what it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub value: f64,
    pub reason: LimitReason,
    /// The binding pack (0-based input index), if one binds.
    pub battery: Option<usize>,
}

impl Limit {
    /// Lowers the limit to `value` for `reason` when that is strictly lower.
    pub fn lower(&mut self, value: f64, reason: LimitReason, battery: Option<usize>) {
        if below(value, self.value) {
            *self = Limit { value, reason, battery };
        }
    }
}

/// `a` is lower than `b` by more than rounding noise: a tie keeps the simpler reason.
fn below(a: f64, b: f64) -> bool {
    a < b - 1e-9 * b.abs().max(1.0)
}

/// What one fresh pack reports in a round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackReading {
    /// A, + = charging.
    pub current: f64,
    /// Its own limits (A); 0 for a direction it forbids.
    pub limits: PerKind<f64>,
    /// The directions it forbids (enable bit clear), as opposed to allowing 0 A.
    pub forbids: PerKind<bool>,
}

/// One pack as the bank sees it, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PackView {
    /// Its share of the bank's current, per direction (sums to 1 over the fresh packs).
    pub share: PerKind<f64>,
    /// Above (1 + margin) x its own limit in the direction it carries.
    pub over_current: bool,
    /// Fresh in the last round.
    pub fresh: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Pack {
    view: PackView,
    reading: Option<PackReading>,
    /// Forbids a direction yet was measured carrying current in it: that
    /// direction stays 0 until the pack allows it again.
    forbidden_taking: PerKind<bool>,
}

/// Whether the bank takes more than the inverters were allowed, debounced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overshoot {
    #[default]
    Within,
    /// Over the allowance since then, not yet for OVERSHOOT-TIME.
    Exceeding(Instant),
    /// Reported.
    Active,
    /// Reported, back within since then, not yet for OVERSHOOT-TIME.
    Settling(Instant),
}

impl Overshoot {
    pub fn is_active(self) -> bool {
        matches!(self, Overshoot::Active | Overshoot::Settling(_))
    }

    /// The next state after one observation at `now`.
    pub fn step(self, exceeds: bool, now: Instant, hold: Duration) -> Overshoot {
        let held = |since: Instant| now.saturating_duration_since(since) >= hold;
        match (self, exceeds) {
            (Overshoot::Within, true) if hold.is_zero() => Overshoot::Active,
            (Overshoot::Within, true) => Overshoot::Exceeding(now),
            (Overshoot::Exceeding(since), true) if held(since) => Overshoot::Active,
            (Overshoot::Exceeding(_), false) => Overshoot::Within,
            (Overshoot::Active, false) if hold.is_zero() => Overshoot::Within,
            (Overshoot::Active, false) => Overshoot::Settling(now),
            (Overshoot::Settling(since), false) if held(since) => Overshoot::Within,
            (Overshoot::Settling(_), true) => Overshoot::Active,
            (state, _) => state,
        }
    }
}

/// The packs that allow a direction one pack forbids, going on without it
/// (ON-PACK-FORBIDS = "continue").
#[derive(Debug, Clone, Copy, PartialEq)]
struct GoingOn {
    /// The first pack that forbids it (0-based), named as the reason.
    first: usize,
    /// The remembered shares of the packs that allow it.
    shares: f64,
    /// Their capacity (Ah).
    capacity: f64,
}

impl GoingOn {
    /// A remaining pack's share scaled so that the remaining shares sum 1;
    /// when they say nothing (sum near 0), its capacity share among them.
    fn renormalised(&self, share: f64, capacity: f64) -> f64 {
        if self.shares > MIN_SHARE_SUM {
            share / self.shares
        } else {
            capacity / self.capacity
        }
    }
}

/// Whether this round brings new readings or repeats the last ones (a
/// keep-alive or a setpoint change): only new readings are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    New,
    Repeat,
}

/// What the closed loop does in one round, per direction (spec 8).
#[derive(Debug, Clone, Copy, PartialEq)]
enum LoopStep {
    /// A pack is over current and this round measured it: fall by `factor`
    /// (L_i / |I_i| of the worst pack, `battery`).
    Fall { factor: f64, battery: usize },
    /// A pack is over current but the round repeats the last readings (a
    /// setpoint, a keep-alive, an expiry): never rise, and fall only with a
    /// new measurement.
    Hold,
    /// No pack is over current: rise toward the formula by elapsed time.
    Rise,
}

/// The bank's limits, its packs' shares and the overshoot watch.
#[derive(Debug, Clone)]
pub struct Bank {
    settings: BankSettings,
    caps: PerKind<f64>,
    capacities: Vec<f64>,
    packs: Vec<Pack>,
    /// The closed loop's output per direction; `None` before the first round.
    output: PerKind<Option<f64>>,
    /// The pack whose over-current last lowered the output.
    loop_battery: PerKind<Option<usize>>,
    last_round: Option<Instant>,
    /// What the inverters together were last sent, per direction.
    sent: Option<PerKind<f64>>,
    overshoot: PerKind<Overshoot>,
    /// A reload changed the set of packs: the next round scales the
    /// remembered shares to sum 1 even if no pack's freshness changed.
    regrouped: bool,
    /// The system setpoints in effect: the closed loop falls from, and rises
    /// back to, the limit with them.
    ceiling: PerKind<Option<f64>>,
    /// Whether this round's loop held or fell (a pack over current).
    holding: PerKind<bool>,
    /// The combined limit last made, after setpoints and the bank policy.
    last_final: PerKind<Option<f64>>,
}

impl Bank {
    /// A bank of packs with these capacities (Ah), under these caps (A).
    pub fn new(settings: BankSettings, caps: PerKind<f64>, capacities: &[f64]) -> Bank {
        Bank {
            settings,
            caps,
            capacities: capacities.to_vec(),
            packs: vec![Pack::default(); capacities.len()],
            output: PerKind::default(),
            loop_battery: PerKind::default(),
            last_round: None,
            sent: None,
            overshoot: PerKind::default(),
            regrouped: false,
            ceiling: PerKind::default(),
            holding: PerKind::default(),
            last_final: PerKind::default(),
        }
    }

    /// After a reload: the packs of the new configuration, `from[i]` being
    /// new pack `i`'s position in the running one (by CAN-IF). A kept pack
    /// keeps its measured shares and state; an added one starts like a pack
    /// that has just come back (its capacity share), and the next round
    /// scales the others to make room, as it does for a removed one
    /// (docs/reload.md). The closed loop goes on from where it was, unless
    /// LIMIT-MODE changed.
    pub fn reconfigure(
        &mut self,
        settings: BankSettings,
        caps: PerKind<f64>,
        capacities: &[f64],
        from: &[Option<usize>],
    ) {
        let old = std::mem::take(&mut self.packs);
        self.packs = (from.iter())
            .map(|f| f.and_then(|o| old.get(o).copied()).unwrap_or_default())
            .collect();
        let moved = |battery: Option<usize>| battery.and_then(|o| from.iter().position(|&f| f == Some(o)));
        for kind in KINDS {
            let battery = self.loop_battery.get_mut(kind);
            *battery = moved(*battery);
        }
        if settings.mode != self.settings.mode {
            self.output = PerKind::default();
            self.loop_battery = PerKind::default();
        }
        self.regrouped |= from.len() != old.len() || from.iter().enumerate().any(|(i, &f)| f != Some(i));
        self.settings = settings;
        self.caps = caps;
        self.capacities = capacities.to_vec();
    }

    pub fn settings(&self) -> &BankSettings {
        &self.settings
    }

    /// Each pack, in input order.
    pub fn packs(&self) -> impl ExactSizeIterator<Item = PackView> + '_ {
        self.packs.iter().map(|p| p.view)
    }

    /// Whether an overshoot is being reported in direction `kind`.
    pub fn overshoot(&self, kind: LimitKind) -> bool {
        self.overshoot.get(kind).is_active()
    }

    /// What the inverters together were sent, per direction: the overshoot
    /// watch compares the bank's current with it from the next round on.
    pub fn note_sent(&mut self, sent: PerKind<f64>) {
        self.sent = Some(sent);
    }

    /// The system setpoints in effect from the next round on (`None`: none).
    /// The closed loop falls from, and rises at 10 % per second of, the limit
    /// as sent (the formula lowered by them), not the formula alone.
    /// The combined limit made from the last round, after setpoints and
    /// the bank policy.
    pub fn note_final(&mut self, limit: PerKind<f64>) {
        self.last_final = PerKind {
            charge: Some(limit.charge),
            discharge: Some(limit.discharge),
        };
    }

    /// After a round in which the loop held or fell (a pack over current):
    /// the loop's output lowered so that, times this round's policy
    /// `factor`, it stays at or below the limit last made (with a factor
    /// of 0: the output itself stays at or below it), and the binding
    /// pack. `None` when the loop rose or nothing was made before.
    pub fn hold_after_policy(&mut self, kind: LimitKind, factor: f64) -> Option<(f64, Option<usize>)> {
        let last = (*self.holding.get(kind))
            .then_some(*self.last_final.get(kind))
            .flatten()?;
        let output = self.output.get_mut(kind).as_mut()?;
        // A factor of 0 (the policy stops the direction) bounds nothing this
        // round, but the loop's output must not stay above what was last
        // made: once the factor returns, the loop rises from there, and a
        // bank without the policy, whose loop this bound lowers, would rise
        // from at most that too (found by the property "the combiner with
        // policies never sends more").
        let bound = if factor > 0.0 { last / factor } else { last };
        *output = output.min(bound);
        Some((*output, *self.loop_battery.get(kind)))
    }

    pub fn set_ceiling(&mut self, ceiling: PerKind<Option<f64>>) {
        self.ceiling = ceiling;
    }

    /// One round: the readings of every input in order (`None` for a stale
    /// one) at `now`. Returns the combined limits before setpoints.
    pub fn round(
        &mut self,
        readings: impl Iterator<Item = Option<PackReading>>,
        round: Round,
        now: Instant,
    ) -> PerKind<Limit> {
        for (pack, reading) in self.packs.iter_mut().zip(readings) {
            pack.reading = reading;
        }
        self.follow_fresh_set();
        let total: f64 = self.fresh().map(|(_, r)| r.current).sum();
        if round == Round::New {
            self.measure(total);
            self.watch_overshoot(total, now);
        }
        self.mark_over_current();
        let dt = self
            .last_round
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last_round = Some(now);
        let mut limits = PerKind {
            charge: self.formula(LimitKind::Charge),
            discharge: self.formula(LimitKind::Discharge),
        };
        if self.settings.mode == LimitMode::Share {
            for kind in KINDS {
                let step = match (self.fall_factor(kind, total), round) {
                    (Some((factor, battery)), Round::New) => LoopStep::Fall { factor, battery },
                    (Some(_), Round::Repeat) => LoopStep::Hold,
                    (None, _) => LoopStep::Rise,
                };
                self.close_loop(kind, limits.get_mut(kind), step, dt);
            }
        }
        limits
    }

    fn fresh(&self) -> impl Iterator<Item = (usize, PackReading)> + '_ {
        self.packs
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.reading.map(|r| (i, r)))
    }

    /// Capacity shares for packs that just came back, the others' remembered
    /// shares scaled so that all sum to 1.
    fn follow_fresh_set(&mut self) {
        let mut changed = false;
        let mut capacity = 0.0;
        for (pack, &c) in self.packs.iter_mut().zip(&self.capacities) {
            let fresh = pack.reading.is_some();
            changed |= fresh != pack.view.fresh;
            if fresh {
                capacity += c;
            } else {
                pack.view = PackView::default();
                pack.forbidden_taking = PerKind::default();
            }
        }
        changed |= std::mem::take(&mut self.regrouped);
        if !changed || capacity <= 0.0 {
            return;
        }
        for kind in KINDS {
            let (mut back, mut rest) = (0.0, 0.0);
            for (pack, &c) in self.packs.iter_mut().zip(&self.capacities) {
                if pack.reading.is_none() {
                    continue;
                }
                if pack.view.fresh {
                    rest += *pack.view.share.get(kind);
                } else {
                    *pack.view.share.get_mut(kind) = c / capacity;
                    back += c / capacity;
                }
            }
            let scale = (rest > MIN_SHARE_SUM).then(|| (1.0 - back) / rest);
            for (pack, &c) in self.packs.iter_mut().zip(&self.capacities) {
                if pack.reading.is_some() && pack.view.fresh {
                    let share = pack.view.share.get_mut(kind);
                    *share = scale.map_or(c / capacity, |k| *share * k);
                }
            }
        }
        for pack in &mut self.packs {
            pack.view.fresh = pack.reading.is_some();
        }
    }

    /// Moves each fresh pack's share toward I_i / sum of I when the bank
    /// carries enough current to tell.
    fn measure(&mut self, total: f64) {
        if total.abs() < self.settings.share_min_current || total.abs() == 0.0 {
            return;
        }
        let kind = if total > 0.0 {
            LimitKind::Charge
        } else {
            LimitKind::Discharge
        };
        for pack in &mut self.packs {
            if let Some(r) = pack.reading {
                let share = pack.view.share.get_mut(kind);
                *share += SMOOTHING * (r.current / total - *share);
            }
        }
    }

    fn mark_over_current(&mut self) {
        let margin = 1.0 + self.settings.overcurrent_margin;
        for pack in &mut self.packs {
            let Some(r) = pack.reading else { continue };
            pack.view.over_current = false;
            for kind in KINDS {
                let own = *r.limits.get(kind);
                let carried = along(kind, r.current);
                let over = carried > margin * own && carried >= FORBIDDEN_NOISE;
                pack.view.over_current |= over;
                let taking = pack.forbidden_taking.get_mut(kind);
                *taking = own <= 0.0 && (*taking || carried >= FORBIDDEN_NOISE);
            }
        }
    }

    /// min(cap, sum of L_i, and in share mode min over s_i > 0 of L_i / s_i).
    fn formula(&self, kind: LimitKind) -> Limit {
        let sum: f64 = self.fresh().map(|(_, r)| *r.limits.get(kind)).sum();
        let mut limit = Limit {
            value: *self.caps.get(kind),
            reason: LimitReason::Cap,
            battery: None,
        };
        limit.lower(sum, LimitReason::Sum, None);
        if self.settings.mode == LimitMode::Sum {
            return limit;
        }
        let going_on = self.going_on_without(kind);
        for (i, r) in self.fresh() {
            let pack = &self.packs[i];
            let own = *r.limits.get(kind);
            let share = *pack.view.share.get(kind);
            if going_on.is_some() && *r.forbids.get(kind) {
                // ON-PACK-FORBIDS = "continue": its share is 0 at once, unless
                // it still takes current in the direction it forbids.
                if *pack.forbidden_taking.get(kind) {
                    limit.lower(0.0, LimitReason::PackForbids, Some(i));
                }
                continue;
            }
            let share = going_on.map_or(share, |w| w.renormalised(share, self.capacities[i]));
            if own > 0.0 && share > 0.0 {
                limit.lower(own / share, LimitReason::Share, Some(i));
            } else if own <= 0.0 && *pack.forbidden_taking.get(kind) {
                limit.lower(0.0, LimitReason::Share, Some(i));
            }
        }
        if let Some(without) = going_on.filter(|_| matches!(limit.reason, LimitReason::Sum | LimitReason::Share)) {
            // What the others allow without it: name the pack that forbids.
            limit.reason = LimitReason::PackForbids;
            limit.battery = Some(without.first);
        }
        limit
    }

    /// With ON-PACK-FORBIDS = "continue", when a fresh pack forbids
    /// direction `kind`: how the others' shares are scaled to sum 1.
    fn going_on_without(&self, kind: LimitKind) -> Option<GoingOn> {
        if self.settings.on_pack_forbids != OnPackForbids::Continue {
            return None;
        }
        let first = self.fresh().find(|(_, r)| *r.forbids.get(kind))?.0;
        let (mut shares, mut capacity) = (0.0, 0.0);
        for (i, _) in self.fresh().filter(|(_, r)| !*r.forbids.get(kind)) {
            shares += *self.packs[i].view.share.get(kind);
            capacity += self.capacities[i];
        }
        Some(GoingOn {
            first,
            shares,
            capacity,
        })
    }

    /// The first fresh pack that forbids direction `kind` yet is measured
    /// taking current in it: with ON-PACK-FORBIDS = "continue" that
    /// direction stops (its enable bit is cleared).
    pub fn forbidding_pack_taking(&self, kind: LimitKind) -> Option<usize> {
        self.fresh()
            .find(|(i, r)| *r.forbids.get(kind) && *self.packs[*i].forbidden_taking.get(kind))
            .map(|(i, _)| i)
    }

    /// When the bank flows in `kind` and a pack is over current in it: the
    /// smallest L_i / |I_i| (below 1) and that pack.
    fn fall_factor(&self, kind: LimitKind, total: f64) -> Option<(f64, usize)> {
        if along(kind, total) <= 0.0 {
            return None;
        }
        let margin = 1.0 + self.settings.overcurrent_margin;
        self.fresh()
            .filter_map(|(i, r)| {
                let carried = along(kind, r.current);
                let own = *r.limits.get(kind);
                (carried > margin * own && carried >= FORBIDDEN_NOISE).then_some((own / carried, i))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// Falls at once (by the over-current factor, or to a lower target);
    /// holds (never above the setpoint-lowered limit, so that a setpoint
    /// that expires while a pack is over current raises nothing) while a pack
    /// is over current without a new measurement; rises
    /// by at most RISE_PER_SECOND of the target per second of `dt`.
    fn close_loop(&mut self, kind: LimitKind, limit: &mut Limit, step: LoopStep, dt: f64) {
        let target = limit.value;
        // What the inverters are allowed with the system setpoint: the loop
        // falls from it and rises by 10 % of it per second.
        let sent = self.ceiling.get(kind).map_or(target, |c| target.min(c));
        let previous = *self.output.get(kind);
        if let LoopStep::Fall { battery, .. } = step {
            *self.loop_battery.get_mut(kind) = Some(battery);
        }
        let value = match (previous, step) {
            (None, LoopStep::Fall { factor, .. }) => sent * factor,
            (None, LoopStep::Hold | LoopStep::Rise) => target,
            (Some(prev), LoopStep::Fall { factor, .. }) => prev.min(sent) * factor,
            (Some(prev), LoopStep::Hold) => prev.min(sent),
            (Some(prev), LoopStep::Rise) => prev + RISE_PER_SECOND * sent * dt,
        }
        .clamp(0.0, target.max(0.0));
        *self.holding.get_mut(kind) = matches!(step, LoopStep::Fall { .. } | LoopStep::Hold);
        *self.output.get_mut(kind) = Some(value);
        limit.lower(value, LimitReason::Overcurrent, *self.loop_battery.get(kind));
    }

    fn watch_overshoot(&mut self, total: f64, now: Instant) {
        let Some(sent) = self.sent else { return };
        let margin = self.settings.overcurrent_margin;
        for kind in KINDS {
            let allowed = *sent.get(kind);
            let exceeds = along(kind, total) > allowed * (1.0 + margin) + OVERSHOOT_SLACK;
            let state = self.overshoot.get_mut(kind);
            *state = state.step(exceeds, now, self.settings.overshoot_time);
        }
    }
}

#[cfg(test)]
mod tests;
