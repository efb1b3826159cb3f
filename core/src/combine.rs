//! The virtual battery: combining the fresh inputs, the degraded and safe
//! states, each inverter's share and the setpoints; the rules are written
//! out in docs/combining.md.
//!
//! [`Combiner`] is a pure state machine: the combiner thread feeds it
//! telegrams, setpoints and ticks with the current time and forwards whatever
//! combined state it returns. Nothing here reads a clock.

use crate::bank::LimitMode;
use crate::bank::{Bank, BankSettings, KINDS, Limit, LimitReason, PackReading, PerKind, Round};
use crate::bounds::{BankBounds, Bounds, ForbidRule};
use crate::codec::{
    BankStatus, CellExtremes, ERROR2_SYSTEM_ERROR, Energy, Flags, Manufacturer, Requests, WARNING2_INTERNAL_COMM_FAIL,
};
use crate::policy::{self, ChargeGate, OnPackForbids, Policy, PolicyInputs};
use crate::setpoint::{self, Dropped, LimitKind, LimitSetpoints, Scope, Setpoint, SetpointCommand};
use crate::telegram::Telegram;
use std::time::{Duration, Instant};

/// What to do while some input is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInputLost {
    /// Go on with the fresh inputs, flagging internal communication failure.
    Degrade,
    /// Safe state while any input is stale.
    Stop,
}

impl OnInputLost {
    /// As written in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            OnInputLost::Degrade => "degrade",
            OnInputLost::Stop => "stop",
        }
    }
}

/// The `[battery]` settings that combining needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatterySettings {
    /// Cap (A) on the total charge limit.
    pub i_lim_charge: f64,
    /// Cap (A) on the total discharge limit.
    pub i_lim_discharge: f64,
    pub i_tot_scaling: f64,
    pub i_tot_offset: f64,
    pub stale_timeout: Duration,
    /// `V-DISCHARGE-MIN` (V): the discharge voltage sent when no fresh
    /// battery reports one (never 0 on the wire).
    pub v_discharge_min: f64,
    pub on_input_lost: OnInputLost,
    /// `LIMIT-MODE` and the bank-aware limits' settings.
    pub bank: BankSettings,
    /// The bank policy (spec 15): derating, charge stop, soft landing, SOC mode.
    pub policy: Policy,
}

impl BatterySettings {
    /// Whether the bank goes on without a pack that forbids a direction:
    /// ON-PACK-FORBIDS = "continue" in share mode (never in sum mode).
    pub fn continues_without_forbidding_pack(&self) -> bool {
        self.bank.mode == LimitMode::Share && self.bank.on_pack_forbids == OnPackForbids::Continue
    }
}

impl BatterySettings {
    /// Whether an input whose last complete telegram arrived at `at` is
    /// fresh at `now`: no older than STALE-TIMEOUT (docs/combining.md,
    /// "Freshness"). The one place this is decided; the combiner thread puts
    /// the result on the status board for everyone else.
    pub fn is_fresh(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) <= self.stale_timeout
    }
}

impl Default for BatterySettings {
    fn default() -> Self {
        BatterySettings {
            i_lim_charge: 700.0,
            i_lim_discharge: 700.0,
            i_tot_scaling: 1.0,
            i_tot_offset: 0.0,
            stale_timeout: Duration::from_secs(5),
            v_discharge_min: 46.0,
            on_input_lost: OnInputLost::Degrade,
            bank: BankSettings::default(),
            policy: Policy::default(),
        }
    }
}

/// The health of the combined battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemState {
    /// Every input fresh.
    Ok,
    /// Some input stale, going on with the fresh ones.
    Degraded,
    /// No current allowed: no fresh input, or an input lost with `stop`.
    Safe,
}

impl SystemState {
    pub fn as_str(self) -> &'static str {
        match self {
            SystemState::Ok => "ok",
            SystemState::Degraded => "degraded",
            SystemState::Safe => "safe",
        }
    }
}

/// Battery values as a virtual BMS reports them: the combined battery, or
/// one inverter's share of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Battery {
    pub v_charge_cmd: f64,
    pub i_lim_charge: f64,
    pub i_lim_discharge: f64,
    pub v_discharge_min: Option<f64>,
    pub soc: f64,
    pub soh: f64,
    pub v_avg: f64,
    pub i_total: f64,
    pub t_avg: f64,
    pub flags: Flags,
    pub requests: Requests,
    pub cells: Option<CellExtremes>,
    /// The first fresh input's manufacturer name, for telemetry.
    pub manufacturer: Option<Manufacturer>,
    pub capacity_ah: f64,
}

impl Battery {
    /// Power in W, + = charging.
    pub fn power_w(&self) -> f64 {
        self.v_avg * self.i_total
    }

    /// These values as the safe state (docs/combining.md, "Safe state"): no
    /// current, both enables and every request clear (no battery is heard to
    /// ask for force or full charge), protection byte 1 bit 3 (system error)
    /// set, the charge voltage `last_cvl`, the last known one (never 0).
    pub fn safe(mut self, last_cvl: f64) -> Battery {
        self.i_lim_charge = 0.0;
        self.i_lim_discharge = 0.0;
        self.requests = Requests {
            charge_enable: false,
            discharge_enable: false,
            force_charge_request: false,
            force_charge_request_2: false,
            balancing_charge_request: false,
        };
        self.flags.error_flags_2 |= ERROR2_SYSTEM_ERROR;
        self.v_charge_cmd = last_cvl;
        self
    }
}

/// One combined state, as made at `made_at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Combined {
    pub state: SystemState,
    pub battery: Battery,
    pub inputs_online: usize,
    /// Online, blocking and offline batteries (0x372).
    pub bank: BankStatus,
    pub made_at: Instant,
    /// The combined limits (as in `battery`) and why each is what it is.
    pub limits: PerKind<Limit>,
    /// The bank took more than the inverters were allowed, for OVERSHOOT-TIME.
    pub overshoot: PerKind<bool>,
}

/// Whether these request flags allow current in direction `kind`.
pub fn allows(r: &Requests, kind: LimitKind) -> bool {
    match kind {
        LimitKind::Charge => r.charge_enable,
        LimitKind::Discharge => r.discharge_enable,
    }
}

/// One battery's own limits, 0 for a direction it forbids.
pub fn own_limits(t: &Telegram) -> PerKind<f64> {
    let r = allowed(t);
    let own = |kind, limit: f64| if allows(&r, kind) { limit } else { 0.0 };
    PerKind {
        charge: own(LimitKind::Charge, t.limits.i_lim_charge),
        discharge: own(LimitKind::Discharge, t.limits.i_lim_discharge),
    }
}

/// Combines telegrams (with their inputs' capacities) that are all fresh.
/// `None` for an empty set.
pub fn combine_fresh<'a>(
    fresh: impl Iterator<Item = (&'a Telegram, f64)> + Clone,
    settings: &BatterySettings,
) -> Option<Battery> {
    let capacity: f64 = fresh.clone().map(|(_, c)| c).sum();
    fresh.clone().next()?;
    let weighted = |f: fn(&Telegram) -> f64| fresh.clone().map(|(t, c)| f(t) * c).sum::<f64>() / capacity;
    let mut b = Battery {
        v_charge_cmd: f64::INFINITY,
        i_lim_charge: 0.0,
        i_lim_discharge: 0.0,
        v_discharge_min: None,
        soc: weighted(|t| t.soc.soc),
        soh: weighted(|t| t.soc.soh),
        v_avg: weighted(|t| t.measurements.v_avg),
        t_avg: weighted(|t| t.measurements.t_avg),
        i_total: 0.0,
        flags: Flags::default(),
        // AND and OR start from here: enabled, no requests.
        requests: Requests::NORMAL,
        cells: None,
        manufacturer: None,
        capacity_ah: capacity,
    };
    for (t, _) in fresh {
        let r = allowed(t);
        // A battery's charge voltage of 0 V never becomes the combined value
        // (inverters read CVL 0 as over-voltage).
        if t.limits.v_charge_cmd > 0.0 {
            b.v_charge_cmd = b.v_charge_cmd.min(t.limits.v_charge_cmd);
        }
        // A discharge voltage of 0 V is no discharge voltage.
        b.v_discharge_min = max_opt(b.v_discharge_min, t.limits.v_discharge_min.filter(|&v| v > 0.0));
        // An input that forbids a direction adds no current to it.
        let own = own_limits(t);
        b.i_lim_charge += own.charge;
        b.i_lim_discharge += own.discharge;
        b.i_total += t.measurements.i_total;
        b.flags.error_flags_1 |= t.flags.error_flags_1;
        b.flags.error_flags_2 |= t.flags.error_flags_2;
        b.flags.warning_flags_1 |= t.flags.warning_flags_1;
        b.flags.warning_flags_2 |= t.flags.warning_flags_2;
        b.flags.n_modules = b.flags.n_modules.saturating_add(t.flags.n_modules);
        b.requests.charge_enable &= r.charge_enable;
        b.requests.discharge_enable &= r.discharge_enable;
        b.requests.force_charge_request |= r.force_charge_request;
        b.requests.force_charge_request_2 |= r.force_charge_request_2;
        b.requests.balancing_charge_request |= r.balancing_charge_request;
        b.cells = merge_cells(b.cells, t.cells);
        if b.manufacturer.is_none() {
            b.manufacturer = t.manufacturer;
        }
    }
    if b.v_charge_cmd.is_infinite() {
        // No battery gave a charge voltage: the combiner keeps the last known one.
        b.v_charge_cmd = 0.0;
    }
    // Never 0 V on the wire: an inverter takes the discharge voltage as its
    // floor (spec 4).
    b.v_discharge_min = b.v_discharge_min.or(Some(settings.v_discharge_min));
    b.i_lim_charge = b.i_lim_charge.min(settings.i_lim_charge);
    b.i_lim_discharge = b.i_lim_discharge.min(settings.i_lim_discharge);
    b.i_total = b.i_total * settings.i_tot_scaling + settings.i_tot_offset;
    Some(b)
}

/// What one battery allows: its request flags, with charging forbidden
/// when its charge voltage is 0 V (no voltage to charge to).
fn allowed(t: &Telegram) -> Requests {
    let mut r = t.requests_or_normal();
    if t.limits.v_charge_cmd <= 0.0 {
        r.charge_enable = false;
    }
    r
}

/// The bank's counters (0x372) over the fresh batteries: a battery blocks a
/// direction when it forbids it or allows 0 A in it.
pub fn bank_status<'a>(fresh: impl Iterator<Item = &'a Telegram>, total: usize) -> BankStatus {
    let mut bank = BankStatus::default();
    for t in fresh {
        let r = allowed(t);
        bank.online += 1;
        bank.blocking_charge += u16::from(!r.charge_enable || t.limits.i_lim_charge <= 0.0);
        bank.blocking_discharge += u16::from(!r.discharge_enable || t.limits.i_lim_discharge <= 0.0);
    }
    bank.offline = (total as u16).saturating_sub(bank.online);
    bank
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn merge_cells(a: Option<CellExtremes>, b: Option<CellExtremes>) -> Option<CellExtremes> {
    match (a, b) {
        (Some(x), Some(y)) => Some(CellExtremes {
            v_cell_min: x.v_cell_min.min(y.v_cell_min),
            v_cell_max: x.v_cell_max.max(y.v_cell_max),
            t_cell_min: x.t_cell_min.min(y.t_cell_min),
            t_cell_max: x.t_cell_max.max(y.t_cell_max),
        }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// How often a combined state is made even when no round completes, so that
/// the outputs see a live combiner and setpoint expiry takes effect.
pub const KEEPALIVE: Duration = Duration::from_secs(2);

/// What one inverter is to be shown, as the combiner made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shaped {
    pub state: SystemState,
    pub battery: Battery,
    /// The bank's online/blocking/offline counters (0x372).
    pub bank: BankStatus,
    pub made_at: Instant,
    /// After this instant the state is older than a live combiner lets any
    /// state get: its output sends [`Shaped::safe`] instead.
    pub expires: Instant,
    /// The last known charge voltage, which the safe state keeps.
    pub last_cvl: f64,
    /// The system's energy counters for 0x378: the combiner leaves them
    /// `None`; the shell, which keeps the meters, fills them in.
    pub energy: Option<Energy>,
    /// What the interlock lets through to this inverter (spec 14).
    pub bounds: Bounds,
}

impl Shaped {
    /// The safe state for this inverter.
    pub fn safe(&self) -> Battery {
        self.battery.safe(self.last_cvl)
    }
}

#[derive(Debug, Clone, Copy)]
struct InputState {
    capacity_ah: f64,
    latest: Option<(Telegram, Instant)>,
    /// Delivered a telegram since the last round.
    delivered: bool,
    /// When the wait for this input's first telegram began: the start, or
    /// the reload that added it.
    joined: Instant,
}

impl InputState {
    fn new(capacity_ah: f64, now: Instant) -> InputState {
        InputState {
            capacity_ah,
            latest: None,
            delivered: false,
            joined: now,
        }
    }

    /// Not reported yet, and still within STALE-TIMEOUT of joining: neither
    /// fresh nor lost.
    fn waiting(&self, timeout: Duration, now: Instant) -> bool {
        self.latest.is_none() && now.saturating_duration_since(self.joined) < timeout
    }
}

impl InputState {
    /// The latest telegram, if it is fresh at `now`.
    fn fresh(&self, now: Instant, settings: &BatterySettings) -> Option<&Telegram> {
        self.latest
            .as_ref()
            .filter(|(_, at)| settings.is_fresh(*at, now))
            .map(|(t, _)| t)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing made yet: waiting until no input is waiting any more.
    Starting,
    Running,
}

/// One inverter as the combiner shapes it.
#[derive(Debug, Clone, Copy)]
struct Inverter {
    share: InverterShare,
    /// Its own setpoints, on top of the system's.
    setpoints: LimitSetpoints,
}

/// The combining state machine.
#[derive(Debug, Clone)]
pub struct Combiner {
    settings: BatterySettings,
    inputs: Vec<InputState>,
    phase: Phase,
    setpoints: LimitSetpoints,
    inverters: Vec<Inverter>,
    /// Last values combined from fresh inputs, before any state changes.
    last_fresh: Option<Battery>,
    /// Last non-zero combined charge voltage; nothing is sent before there is one.
    last_cvl: Option<f64>,
    last: Option<Combined>,
    /// The setpoints the latest `on_tick` dropped as expired.
    expired: Vec<(Scope, LimitKind)>,
    /// Shares, the closed loop and the overshoot watch.
    bank: Bank,
    /// The interlock's bounds from the telegrams `last` was made of.
    last_bounds: Option<BankBounds>,
    /// The charge-stop hysteresis (spec 15).
    gate: ChargeGate,
    /// The stop SOC set over MQTT (%), lowering the configured one.
    charge_stop_set: Option<Setpoint>,
}

impl Combiner {
    /// A combiner for inputs with these capacities (Ah), started at `now`.
    pub fn new(settings: BatterySettings, capacities: &[f64], now: Instant) -> Combiner {
        Combiner {
            settings,
            inputs: capacities.iter().map(|&c| InputState::new(c, now)).collect(),
            phase: Phase::Starting,
            setpoints: LimitSetpoints::default(),
            inverters: Vec::new(),
            last_fresh: None,
            last_cvl: None,
            last: None,
            expired: Vec::new(),
            bank: Bank::new(
                settings.bank,
                PerKind {
                    charge: settings.i_lim_charge,
                    discharge: settings.i_lim_discharge,
                },
                capacities,
            ),
            last_bounds: None,
            gate: ChargeGate::Open,
            charge_stop_set: None,
        }
    }

    /// The bank's view of each pack (shares, over current).
    pub fn bank(&self) -> &Bank {
        &self.bank
    }

    /// The same combiner, shaping a state for each of these inverters (in
    /// `[[bmses-out]]` order).
    pub fn with_inverters(mut self, shares: &[InverterShare]) -> Combiner {
        self.inverters = shares
            .iter()
            .map(|&share| Inverter {
                share,
                setpoints: LimitSetpoints::default(),
            })
            .collect();
        self
    }

    /// How old a state may get before an output replaces it with the safe
    /// state. A live combiner makes one at least every [`KEEPALIVE`];
    /// STALE-TIMEOUT and a second on top keep a busy machine from tripping it.
    pub fn max_age(&self) -> Duration {
        self.settings.stale_timeout + KEEPALIVE + Duration::from_secs(1)
    }

    /// The system-wide setpoints.
    pub fn setpoints(&self) -> &LimitSetpoints {
        &self.setpoints
    }

    /// Each inverter's own setpoints, in `[[bmses-out]]` order.
    pub fn inverter_setpoints(&self) -> impl ExactSizeIterator<Item = &LimitSetpoints> {
        self.inverters.iter().map(|i| &i.setpoints)
    }

    /// Whether input `index` delivered a complete telegram within STALE-TIMEOUT.
    pub fn is_fresh(&self, index: usize, now: Instant) -> bool {
        self.inputs[index]
            .latest
            .is_some_and(|(_, at)| self.settings.is_fresh(at, now))
    }

    /// The next moment after `now` at which [`Combiner::on_tick`] may have
    /// something to do: the start-up wait ends, a fresh input turns stale, a
    /// setpoint expires, a keep-alive state is due. A moment already passed
    /// that on_tick has not handled yet is returned as it is (due at once).
    /// `None`: nothing happens until a telegram or a command arrives.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let timeout = self.settings.stale_timeout;
        // The end of each first-telegram wait (the start-up's, or that of an
        // input a reload added): it ends the start-up or counts as lost.
        let starting = self.phase == Phase::Starting;
        let start_up = (self.inputs.iter())
            .filter(|i| i.latest.is_none())
            .map(|i| i.joined + timeout)
            .filter(|&at| starting || at > now)
            .min();
        // Fresh means age <= STALE-TIMEOUT: stale from the next nanosecond.
        let turns_stale = self
            .inputs
            .iter()
            .filter_map(|i| i.latest.map(|(_, at)| at + timeout + Duration::from_nanos(1)))
            .filter(|&at| at > now);
        let setpoints = std::iter::once(&self.setpoints).chain(self.inverter_setpoints());
        let expiries = setpoints
            .flat_map(|s| [s.charge, s.discharge])
            .flatten()
            .filter_map(|s| s.expires);
        let keepalive = self.last.map(|c| c.made_at + KEEPALIVE);
        let charge_stop_expiry = self.charge_stop_set.and_then(|s| s.expires);
        start_up
            .into_iter()
            .chain(turns_stale)
            .chain(expiries)
            .chain(charge_stop_expiry)
            .chain(keepalive)
            .min()
    }

    /// Input `index` delivered a complete telegram at `now`.
    pub fn on_telegram(&mut self, index: usize, telegram: Telegram, now: Instant) -> Option<Combined> {
        let input = &mut self.inputs[index];
        input.latest = Some((telegram, now));
        input.delivered = true;
        self.advance(now)
    }

    /// Time passes: stale inputs leave the wait, the start-up wait ends,
    /// setpoints expire, keep-alive states are made.
    pub fn on_tick(&mut self, now: Instant) -> Option<Combined> {
        self.expired.clear();
        let mut inverter_expired = false;
        for (j, inverter) in self.inverters.iter_mut().enumerate() {
            let dropped = |kind| self.expired.push((Scope::Inverter(j), kind));
            inverter_expired |= inverter.setpoints.expire_each(now, dropped);
        }
        // System setpoints expire whether or not a state was made yet: one
        // left in place would stay in next_deadline, always due, and the
        // combiner thread would wake for it without end.
        let mut expired = self
            .setpoints
            .expire_each(now, |kind| self.expired.push((Scope::System, kind)));
        if self.charge_stop_set.is_some_and(|s| !s.active_at(now)) {
            self.charge_stop_set = None;
            self.expired.push((Scope::ChargeStop, LimitKind::Charge));
            expired = true;
        }
        if let Some(made) = self.advance(now) {
            return Some(made);
        }
        let last = self.last?;
        let nothing_fresh = (0..self.inputs.len()).all(|i| !self.is_fresh(i, now));
        let all_lost = nothing_fresh && last.state != SystemState::Safe;
        let quiet = now.saturating_duration_since(last.made_at) >= KEEPALIVE;
        if expired || all_lost || quiet {
            return self.make(now, Round::Repeat);
        }
        // An inverter's own setpoint changes only its share: the same
        // combined state, shaped again.
        if inverter_expired {
            self.note_sent(now);
        }
        inverter_expired.then_some(last)
    }

    /// The setpoints (by inverter, then the system's) that the latest
    /// [`Combiner::on_tick`] dropped because they expired.
    pub fn expired(&self) -> &[(Scope, LimitKind)] {
        &self.expired
    }

    /// Sets or clears a setpoint. A system setpoint makes a new state at
    /// once, an inverter's reshapes the latest one, so that either reaches
    /// the inverters within one transmission. `None`: nothing to send yet,
    /// or no such inverter.
    pub fn apply(&mut self, command: SetpointCommand, now: Instant) -> Option<Combined> {
        match command.scope {
            Scope::System => {
                self.setpoints.set(command.kind, command.setpoint);
                match self.phase {
                    Phase::Running if self.last.is_some() => self.make(now, Round::Repeat),
                    _ => None,
                }
            }
            Scope::Inverter(j) => {
                self.inverters.get_mut(j)?.setpoints.set(command.kind, command.setpoint);
                self.note_sent(now);
                self.last
            }
            Scope::ChargeStop => self.set_charge_stop(command.setpoint, now),
        }
    }

    /// Sets (or with `None` clears) the stop SOC commanded over MQTT
    /// (`BASE/set/charge_stop_soc`, %): it only ever stops charging sooner
    /// than the configured CHARGE-STOP-SOC. Makes a new state at once.
    pub fn set_charge_stop(&mut self, setpoint: Option<Setpoint>, now: Instant) -> Option<Combined> {
        self.charge_stop_set = setpoint;
        match self.phase {
            Phase::Running if self.last.is_some() => self.make(now, Round::Repeat),
            _ => None,
        }
    }

    /// The stop SOC commanded over MQTT, while it is in effect.
    pub fn charge_stop_set(&self) -> Option<Setpoint> {
        self.charge_stop_set
    }

    /// Takes a new configuration at `now`, keeping what it still has:
    /// `from[i]` is the running input that new input `i` is (by CAN-IF), and
    /// its latest telegram and freshness carry over; a new input gets a wait
    /// of STALE-TIMEOUT for its first telegram, during which it counts
    /// neither as fresh nor as lost. The phase, the setpoints and the last
    /// values are kept, so the start-up wait is not restarted and the safe
    /// state stays the safe state. Once running, the new state is made at
    /// once (new shares and caps apply, new inverters get it), as a round
    /// that repeats the last readings: a reload is no new measurement.
    pub fn reconfigure(
        &mut self,
        settings: BatterySettings,
        capacities: &[f64],
        from: &[Option<usize>],
        now: Instant,
    ) -> Option<Combined> {
        let old = std::mem::take(&mut self.inputs);
        self.inputs = capacities
            .iter()
            .zip(from)
            .map(|(&capacity_ah, from)| match from.and_then(|o| old.get(o)) {
                Some(kept) => InputState { capacity_ah, ..*kept },
                None => InputState::new(capacity_ah, now),
            })
            .collect();
        self.settings = settings;
        // Kept packs keep their measured shares (by CAN-IF); added ones start
        // from their capacity share.
        let caps = PerKind {
            charge: settings.i_lim_charge,
            discharge: settings.i_lim_discharge,
        };
        self.bank.reconfigure(settings.bank, caps, capacities, from);
        match self.phase {
            Phase::Running if self.last.is_some() => self.make(now, Round::Repeat),
            _ => self.advance(now),
        }
    }

    /// After a reload: the inverters of the new file, with these shares;
    /// `from[j]` is the position of new inverter `j` in the running file (by
    /// CAN-IF), whose setpoints (with their expiry) it keeps. Returns the
    /// setpoints still in effect of the inverters no longer configured.
    pub fn reconfigure_inverters(
        &mut self,
        shares: &[InverterShare],
        from: &[Option<usize>],
        now: Instant,
    ) -> Vec<Dropped> {
        let old: Vec<LimitSetpoints> = self.inverters.iter().map(|i| i.setpoints).collect();
        let (kept, dropped) = setpoint::carry(&old, from, now);
        self.inverters = (shares.iter().zip(kept))
            .map(|(&share, setpoints)| Inverter { share, setpoints })
            .collect();
        dropped
    }

    fn advance(&mut self, now: Instant) -> Option<Combined> {
        if self.phase == Phase::Starting {
            let timeout = self.settings.stale_timeout;
            if self.inputs.iter().any(|i| i.waiting(timeout, now)) {
                return None;
            }
            self.phase = Phase::Running;
        }
        let mut any_fresh = false;
        for (i, input) in self.inputs.iter().enumerate() {
            if self.is_fresh(i, now) {
                any_fresh = true;
                if !input.delivered {
                    return None;
                }
            }
        }
        if any_fresh { self.make(now, Round::New) } else { None }
    }

    /// Makes a combined state from the latest telegrams of the fresh inputs
    /// and starts a new round.
    fn make(&mut self, now: Instant, round: Round) -> Option<Combined> {
        let settings = &self.settings;
        let fresh = self
            .inputs
            .iter()
            .filter_map(move |i| i.fresh(now, settings).map(|t| (t, i.capacity_ah)));
        let readings = self.inputs.iter().map(|i| {
            i.fresh(now, settings).map(|t| PackReading {
                current: t.measurements.i_total,
                limits: own_limits(t),
                forbids: forbids(t),
            })
        });
        // What the loop may not rise above: the system setpoint, and 0 for a
        // direction some fresh battery forbids (spec 4), so that a setpoint
        // expiring or a forbid lifting while a pack is over current raises
        // nothing (spec 8).
        let continues = self.settings.continues_without_forbidding_pack();
        let ceiling = |kind| {
            // With ON-PACK-FORBIDS "continue" the bank goes on while any
            // fresh battery allows the direction (spec 15).
            let forbidden = if continues {
                !fresh.clone().any(|(t, _)| allows(&allowed(t), kind))
            } else {
                fresh.clone().any(|(t, _)| !allows(&allowed(t), kind))
            };
            if forbidden {
                Some(0.0)
            } else {
                self.setpoints.value_at(kind, now)
            }
        };
        self.bank.set_ceiling(PerKind {
            charge: ceiling(LimitKind::Charge),
            discharge: ceiling(LimitKind::Discharge),
        });
        let mut limits = self.bank.round(readings, round, now);
        let online = fresh.clone().count();
        let bank = bank_status(fresh.clone().map(|(t, _)| t), self.inputs.len());
        let caps = PerKind {
            charge: self.settings.i_lim_charge,
            discharge: self.settings.i_lim_discharge,
        };
        let rule = if self.settings.continues_without_forbidding_pack() {
            ForbidRule::GoesOnWhileOneAllows
        } else {
            ForbidRule::AnyForbidStops
        };
        let bounds = BankBounds::with_rule(fresh.clone(), caps, &self.setpoints, now, rule);
        if let Some(b) = combine_fresh(fresh, &self.settings) {
            self.last_fresh = Some(b);
            if b.v_charge_cmd > 0.0 {
                self.last_cvl = Some(b.v_charge_cmd);
            }
        }
        for input in &mut self.inputs {
            input.delivered = false;
        }
        let timeout = self.settings.stale_timeout;
        let waiting = self.inputs.iter().filter(|i| i.waiting(timeout, now)).count();
        let lost = self.inputs.len() - online - waiting;
        let state = match (online, lost, self.settings.on_input_lost) {
            (0, _, _) => SystemState::Safe,
            (_, 0, _) => SystemState::Ok,
            (_, _, OnInputLost::Degrade) => SystemState::Degraded,
            (_, _, OnInputLost::Stop) => SystemState::Safe,
        };
        // Before any input has ever reported (or ever reported a charge
        // voltage) there is nothing safe to send: send nothing.
        let mut battery = self.last_fresh?;
        let last_cvl = self.last_cvl?;
        if online == 0 {
            // The state describes the fresh batteries only: with none, no
            // capacity is installed (0x379, 0x35F), whatever the stale ones had.
            battery.capacity_ah = 0.0;
        }
        if battery.v_charge_cmd <= 0.0 {
            battery.v_charge_cmd = last_cvl;
        }
        let inputs = self.policy_inputs(online, now);
        // While a pack is over current, a policy factor that grows (a SOC
        // leaving the soft landing, a temperature back in range) raises
        // nothing either (spec 8, spec 15).
        for kind in KINDS {
            let factor = policy_factor(&self.settings.policy, kind, &inputs);
            if let Some((held, battery)) = self.bank.hold_after_policy(kind, factor) {
                limits.get_mut(kind).lower(held, LimitReason::Overcurrent, battery);
            }
        }
        if online > 0 && (self.continues() || self.settings.policy.soc_mode == policy::SocMode::Usable) {
            self.follow_policy(&mut battery, now);
        }
        for kind in KINDS {
            self.explain(kind, limits.get_mut(kind), &battery, state, &inputs, now);
        }
        battery.i_lim_charge = limits.charge.value;
        battery.i_lim_discharge = limits.discharge.value;
        self.bank.note_final(PerKind {
            charge: limits.charge.value,
            discharge: limits.discharge.value,
        });
        match state {
            SystemState::Ok => {}
            SystemState::Degraded => battery.flags.warning_flags_2 |= WARNING2_INTERNAL_COMM_FAIL,
            SystemState::Safe => battery = battery.safe(last_cvl),
        }
        let combined = Combined {
            state,
            battery,
            inputs_online: online,
            bank,
            made_at: now,
            limits,
            overshoot: PerKind {
                charge: self.bank.overshoot(LimitKind::Charge),
                discharge: self.bank.overshoot(LimitKind::Discharge),
            },
        };
        self.last = Some(combined);
        self.last_bounds = Some(bounds);
        self.note_sent(now);
        Some(combined)
    }

    /// Tells the overshoot watch what the inverters together are sent from
    /// now on (the sum of their shaped limits), each time the latest state
    /// or an inverter's share of it changes. Without inverters nothing is
    /// sent, so nothing is compared.
    fn note_sent(&mut self, now: Instant) {
        let Some(c) = self.last.filter(|_| !self.inverters.is_empty()) else {
            return;
        };
        let mut sent = PerKind::default();
        for i in &self.inverters {
            let b = shape(&c, &i.share, &i.setpoints, now);
            sent.charge += b.i_lim_charge;
            sent.discharge += b.i_lim_discharge;
        }
        self.bank.note_sent(sent);
    }
}

impl Combiner {
    /// Lowers the bank's limit by the system setpoint, and overrides it
    /// with 0 A for the safe state and a forbidden direction.
    fn explain(
        &self,
        kind: LimitKind,
        limit: &mut Limit,
        combined: &Battery,
        state: SystemState,
        inputs: &PolicyInputs,
        now: Instant,
    ) {
        if let Some(v) = self.setpoints.value_at(kind, now) {
            limit.lower(v, LimitReason::Setpoint, None);
        }
        policy::apply(&self.settings.policy, kind, inputs, limit);
        if state == SystemState::Safe {
            *limit = Limit {
                value: 0.0,
                reason: LimitReason::Safe,
                battery: None,
            };
        } else if let Some(taking) = self
            .continues()
            .then(|| self.bank.forbidding_pack_taking(kind))
            .flatten()
        {
            // ON-PACK-FORBIDS = "continue", but the pack that forbids still
            // takes current: the direction stops.
            *limit = Limit {
                value: 0.0,
                reason: LimitReason::PackForbids,
                battery: Some(taking),
            };
        } else if !allows(&combined.requests, kind) {
            // A forbidden direction is 0 A on the wire (spec 4): a profile
            // without an enable bit has no other way to say it.
            limit.value = 0.0;
            limit.reason = LimitReason::Disabled;
            let forbids = |t: &Telegram| !allows(&allowed(t), kind);
            limit.battery = (0..self.inputs.len())
                .find(|&i| self.is_fresh(i, now) && self.inputs[i].latest.as_ref().is_some_and(|(t, _)| forbids(t)));
        }
    }
}

impl Combiner {
    fn continues(&self) -> bool {
        self.settings.continues_without_forbidding_pack()
    }

    /// The charge stop in effect at `now`: the configured one lowered by
    /// the command's.
    pub fn charge_stop(&self, now: Instant) -> Option<policy::ChargeStop> {
        let set = self.charge_stop_set.filter(|s| s.active_at(now)).map(|s| s.value);
        policy::effective_charge_stop(self.settings.policy.charge_stop, set)
    }

    /// What the policy rules read this round; moves the charge-stop
    /// hysteresis with the SOC of the fresh batteries (not with a stale one's).
    fn policy_inputs(&mut self, online: usize, now: Instant) -> PolicyInputs {
        let settings = &self.settings;
        let derates = settings.policy.derating.charge.is_some() || settings.policy.derating.discharge.is_some();
        // Only read when a curve needs it: the round's cost without policy stays as it was.
        let temperatures = derates
            .then(|| {
                policy::bank_temperatures(
                    (self.inputs.iter())
                        .filter_map(|i| i.fresh(now, settings))
                        .map(|t| policy::battery_temperatures(t.cells, t.measurements.t_avg)),
                )
            })
            .flatten();
        let soc = self.last_fresh.map_or(0.0, |b| b.soc);
        if online > 0 {
            self.gate = policy::charge_gate(self.gate, soc, self.charge_stop(now));
        }
        PolicyInputs {
            soc,
            temperatures,
            gate: self.gate,
        }
    }

    /// The enable bits with ON-PACK-FORBIDS = "continue" (on while any fresh
    /// pack allows the direction and no pack that forbids it still takes
    /// current in it) and the SOC shown with SOC-MODE = "usable".
    fn follow_policy(&self, battery: &mut Battery, now: Instant) {
        let settings = &self.settings;
        let fresh = || (self.inputs.iter()).filter_map(|i| i.fresh(now, settings).map(|t| (t, i.capacity_ah)));
        if self.continues() {
            let any_allows = |kind| fresh().any(|(t, _)| allows(&allowed(t), kind));
            let goes_on = |kind| any_allows(kind) && self.bank.forbidding_pack_taking(kind).is_none();
            battery.requests.charge_enable = goes_on(LimitKind::Charge);
            battery.requests.discharge_enable = goes_on(LimitKind::Discharge);
        }
        if self.settings.policy.soc_mode == policy::SocMode::Usable {
            let usable = policy::usable_soc(fresh().map(|(t, capacity_ah)| {
                let r = allowed(t);
                policy::SocInput {
                    soc: t.soc.soc,
                    capacity_ah,
                    allows_charge: r.charge_enable,
                    allows_discharge: r.discharge_enable,
                }
            }));
            battery.soc = usable.unwrap_or(battery.soc);
        }
    }
}

/// The directions a battery forbids (enable bit clear, or no charge voltage).
pub fn forbids(t: &Telegram) -> PerKind<bool> {
    let r = allowed(t);
    PerKind {
        charge: !r.charge_enable,
        discharge: !r.discharge_enable,
    }
}

/// One inverter's share of the combined battery (`[[bmses-out]]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InverterShare {
    /// This inverter's cap (A) on the charge limit.
    pub i_lim_charge: f64,
    /// This inverter's cap (A) on the discharge limit.
    pub i_lim_discharge: f64,
    /// Fraction of the total limits and current that this inverter gets.
    pub i_scaling: f64,
    /// Added to this inverter's current (A).
    pub i_offset: f64,
}

impl Default for InverterShare {
    fn default() -> Self {
        InverterShare {
            i_lim_charge: 300.0,
            i_lim_discharge: 300.0,
            i_scaling: 1.0,
            i_offset: 0.0,
        }
    }
}

impl Combiner {
    /// What each inverter is shown now (in `[[bmses-out]]` order), from the
    /// latest combined state; nothing before the first.
    pub fn shaped(&self, now: Instant) -> impl Iterator<Item = Shaped> + '_ {
        let latest = self.last.zip(self.last_cvl).zip(self.last_bounds);
        let expires_after = self.max_age();
        self.inverters.iter().filter_map(move |i| {
            let ((c, last_cvl), bank) = latest?;
            let caps = PerKind {
                charge: i.share.i_lim_charge,
                discharge: i.share.i_lim_discharge,
            };
            Some(Shaped {
                state: c.state,
                battery: shape(&c, &i.share, &i.setpoints, now),
                bank: c.bank,
                made_at: c.made_at,
                expires: c.made_at + expires_after,
                last_cvl,
                energy: None,
                bounds: Bounds::for_inverter(&bank, caps, i.share.i_scaling, &i.setpoints, last_cvl, now),
            })
        })
    }
}

/// What one inverter is shown: limit_j = min(cap_j, total x I-SCALING_j,
/// setpoint_j); current_j = i_total x I-SCALING_j + I-OFFSET_j; everything
/// else as combined.
pub fn shape(combined: &Combined, share: &InverterShare, own: &LimitSetpoints, now: Instant) -> Battery {
    let mut b = combined.battery;
    let scale = share.i_scaling;
    let charge = (b.i_lim_charge * scale).min(share.i_lim_charge);
    let discharge = (b.i_lim_discharge * scale).min(share.i_lim_discharge);
    b.i_lim_charge = own.lower(LimitKind::Charge, charge, now).max(0.0);
    b.i_lim_discharge = own.lower(LimitKind::Discharge, discharge, now).max(0.0);
    b.i_total = b.i_total * scale + share.i_offset;
    b
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod reload_tests;

/// The product of the policy's factors in direction `kind` (1 without
/// policy).
fn policy_factor(policy: &Policy, kind: LimitKind, inputs: &PolicyInputs) -> f64 {
    policy::factors(policy, kind, inputs)
        .iter()
        .map(|(f, _)| f.clamp(0.0, 1.0))
        .product()
}
