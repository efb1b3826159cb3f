//! The combiner's event edge detector: it remembers what was last logged
//! (each input's freshness, the system state, a limit over the bank's,
//! a pack over its current) so that each change is logged and raised as an
//! event once, and the flight recorder is triggered where a change needs a
//! record.

use super::combiner::whose;
use crate::bank::{KINDS, LimitMode, PerKind, direction_name};
use crate::combine::{Combined, Combiner, SystemState};
use crate::config::Config;
use crate::events::{Events, Kind, Subject};
use crate::recorder::{Reason, Recorder};
use crate::setpoint::{LimitKind, Scope, SetpointCommand};
use crate::status::StatusBoard;
use std::time::Instant;

/// Remembers what was last logged, so that each change is logged (and
/// raised as an event) once.
pub(super) struct Watch<'a> {
    fresh: Vec<Option<bool>>,
    /// What the board shows as each input's freshness.
    pub(super) published: Vec<bool>,
    state: Option<SystemState>,
    events: &'a Events,
    recorder: &'a Recorder,
    overshoot: PerKind<bool>,
    over_current: Vec<bool>,
}

impl<'a> Watch<'a> {
    pub(super) fn new(inputs: usize, events: &'a Events, recorder: &'a Recorder) -> Watch<'a> {
        Watch {
            fresh: vec![None; inputs],
            published: vec![false; inputs],
            state: None,
            overshoot: PerKind::default(),
            over_current: vec![false; inputs],
            events,
            recorder,
        }
    }

    /// After a reload: what was logged follows each battery to its new place.
    pub(super) fn remap(&mut self, from: &[Option<usize>]) {
        let old = std::mem::take(&mut self.fresh);
        self.fresh = from
            .iter()
            .map(|f| f.and_then(|o| old.get(o).copied().flatten()))
            .collect();
        let old = std::mem::take(&mut self.over_current);
        self.over_current = (from.iter())
            .map(|f| f.and_then(|o| old.get(o).copied()).unwrap_or(false))
            .collect();
        let old = std::mem::take(&mut self.published);
        self.published = (from.iter())
            .map(|f| f.and_then(|o| old.get(o).copied()).unwrap_or(false))
            .collect();
    }

    /// A setpoint command was applied.
    pub(super) fn commanded(&self, c: &SetpointCommand) {
        let (kind, message) = match c.setpoint {
            Some(s) => (
                Kind::SetpointSet,
                format!("{} set to {} {}", c.field(), s.value, c.unit()),
            ),
            None => (Kind::SetpointCleared, format!("{} cleared", c.field())),
        };
        let (subject, whose) = whose(c.scope);
        self.events.emit(kind, subject, format!("{whose} setpoint {message}"));
    }

    /// Raises an event for each setpoint the combiner dropped as expired.
    pub(super) fn expired(&self, expired: &[(Scope, LimitKind)]) {
        for &(scope, kind) in expired {
            let (subject, whose) = whose(scope);
            let message = format!("{whose} setpoint {} expired", crate::setpoint::field(scope, kind));
            self.events.emit(Kind::SetpointExpired, subject, message);
        }
    }

    /// Logs every input whose freshness changed by `now`.
    pub(super) fn log(&mut self, config: &Config, combiner: &Combiner, board: &StatusBoard, now: Instant) {
        for i in 0..self.fresh.len() {
            self.input(config, combiner, board, i, now);
        }
    }

    /// Logs input `i` if its freshness changed by `now` (and raises it as an
    /// event when it was seen before), and puts the change on the board.
    pub(super) fn input(&mut self, config: &Config, combiner: &Combiner, board: &StatusBoard, i: usize, now: Instant) {
        let fresh = combiner.is_fresh(i, now);
        if std::mem::replace(&mut self.published[i], fresh) != fresh {
            board.system(|s| s.inputs_fresh.clone_from(&self.published));
        }
        let seen = &mut self.fresh[i];
        if *seen == Some(fresh) {
            return;
        }
        let name = &config.inputs[i].can_if;
        match (*seen, fresh) {
            (Some(false) | None, true) => {
                log::info!("battery {} ({name}): reporting", i + 1);
                if *seen == Some(false) {
                    let message = format!("battery {} ({name}) is reporting again", i + 1);
                    self.events.emit(Kind::BatteryBack, Subject::Battery(i), message);
                }
            }
            (Some(true), false) => {
                let message = format!(
                    "battery {} ({name}): stale, no complete telegram for {:.1} s",
                    i + 1,
                    config.battery.stale_timeout.as_secs_f64()
                );
                log::warn!("{message}");
                self.events.emit(Kind::BatteryLost, Subject::Battery(i), message);
            }
            _ => {}
        }
        if seen.is_some() || fresh {
            *seen = Some(fresh);
        }
    }

    /// Logs a battery going over its own limit (by more than
    /// OVERCURRENT-MARGIN) and coming back within it, each an event.
    pub(super) fn over_current(&mut self, config: &Config, combiner: &Combiner) {
        let action = match config.battery.bank.mode {
            LimitMode::Share => "the combined limit falls until it is within",
            LimitMode::Sum => "LIMIT-MODE \"sum\" does not lower the combined limit for it",
        };
        for (i, (seen, pack)) in self.over_current.iter_mut().zip(combiner.bank().packs()).enumerate() {
            let name = &config.inputs[i].can_if;
            match (*seen, pack.over_current) {
                (false, true) => {
                    let message = format!(
                        "battery {} ({name}): over current, above its own limit: {action}",
                        i + 1
                    );
                    log::warn!("{message}");
                    self.events.emit(Kind::Overcurrent, Subject::Battery(i), message);
                }
                (true, false) => {
                    let message = format!("battery {} ({name}): back within its own limit", i + 1);
                    log::info!("{message}");
                    self.events.emit(Kind::OvercurrentCleared, Subject::Battery(i), message);
                }
                _ => {}
            }
            *seen = pack.over_current;
        }
    }

    /// Logs an overshoot raised or cleared (an inverter ignoring its limit),
    /// each an event.
    pub(super) fn overshoot(&mut self, c: &Combined) {
        for kind in KINDS {
            let (was, now) = (*self.overshoot.get(kind), *c.overshoot.get(kind));
            let what = direction_name(kind);
            match (was, now) {
                (false, true) => {
                    let message = format!(
                        "overshoot: the bank {what}s at {:.1} A, more than the inverters were allowed together: an inverter ignores its {what} limit",
                        c.battery.i_total.abs()
                    );
                    log::warn!("{message}");
                    self.events.emit(Kind::Overshoot, Subject::System, message);
                }
                (true, false) => {
                    let message = format!(
                        "overshoot cleared: the bank's {what} current is back within what the inverters were allowed"
                    );
                    log::info!("{message}");
                    self.events.emit(Kind::OvershootCleared, Subject::System, message);
                }
                _ => {}
            }
            *self.overshoot.get_mut(kind) = now;
        }
    }

    pub(super) fn state(&mut self, c: &Combined, inputs: usize) {
        self.overshoot(c);
        if self.state == Some(c.state) {
            return;
        }
        let stale = inputs - c.inputs_online;
        let message = match c.state {
            SystemState::Ok => format!("state ok: all {inputs} batteries reporting"),
            SystemState::Degraded => format!("state degraded: {stale} of {inputs} batteries stale"),
            SystemState::Safe => format!(
                "safe state: no current allowed ({} of {inputs} batteries reporting)",
                c.inputs_online
            ),
        };
        self.events.emit(Kind::StateChanged, Subject::System, message);
        match c.state {
            SystemState::Ok => log::info!("combined battery ok: all {inputs} batteries reporting"),
            SystemState::Degraded => log::warn!("combined battery degraded: {stale} of {inputs} batteries stale"),
            SystemState::Safe => log::error!(
                "safe state entered: no current allowed ({} of {inputs} batteries reporting)",
                c.inputs_online
            ),
        }
        if self.state == Some(SystemState::Safe) {
            log::info!("safe state left");
        }
        // The first state after start-up is no incident: only a change is recorded.
        if let (Some(_), Some(reason)) = (self.state, Reason::entering(c.state)) {
            self.recorder.trigger(reason);
        }
        self.state = Some(c.state);
    }
}
