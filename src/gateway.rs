//! The running gateway: one thread per CAN interface and the combiner thread
//! between them, all inside one `std::thread::scope`.
//!
//! Data flow: input threads -> bounded telegram queue -> combiner thread ->
//! one-slot mailbox per output -> output threads. Setpoint commands (from the
//! MQTT thread, or a test) arrive on their own bounded queue. Nothing here
//! blocks on MQTT: the status board is the only thing MQTT reads.

use crate::bank::{KINDS, LimitMode, PerKind, direction_name};
use crate::can::CanOpener;
use crate::combine::{Combined, Combiner, InverterShare, Shaped, SystemState};
use crate::config::Config;
use crate::events::{Events, Kind, Subject};
use crate::input::{Delivery, Input};
use crate::output::{Mailbox, Output};
use crate::recorder::{Reason, Recorder};
use crate::setpoint::{LimitKind, Scope, SetpointCommand};
use crate::shutdown::Stop;
use crate::status::StatusBoard;
use crossbeam_channel::{Receiver, bounded, never, select};
use std::time::{Duration, Instant};

/// Telegrams waiting for the combiner. A telegram is a whole snapshot, so when
/// the queue is full the newest is dropped and counted: the next one replaces it.
pub const TELEGRAM_QUEUE: usize = 256;
/// Setpoint commands waiting for the combiner.
pub const COMMAND_QUEUE: usize = 64;
/// How often every worker shows a heartbeat while idle when no watchdog
/// checks the heartbeats (with one, `Supervision::heartbeat_every` sets it
/// from the watchdog's period). Otherwise each thread sleeps until an event
/// or its next real deadline (docs/waking.md).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Faults that can be injected to prove the watchdog (never set in normal use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// The combiner thread stops working (and beating) one second after start.
    HangCombiner,
}

impl Fault {
    /// From `BMS_GATEWAY_FAULT` (read by the shell, not here).
    pub fn parse(value: Option<&str>) -> Fault {
        match value {
            Some("hang-combiner") => Fault::HangCombiner,
            _ => Fault::None,
        }
    }
}

/// Which thread a heartbeat comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    Input(usize),
    Output(usize),
    Combiner,
}

/// One run of the gateway with one configuration.
pub struct Gateway<'a> {
    pub config: &'a Config,
    pub opener: &'a dyn CanOpener,
    pub board: &'a StatusBoard,
    /// Called by each CAN thread once its interface has been tried.
    pub opened: &'a (dyn Fn() + Sync),
    /// Called by every worker once per wake-up, and at least every
    /// `heartbeat_every` while it is alive (so counting the calls counts the
    /// wake-ups).
    pub heartbeat: &'a (dyn Fn(Worker) + Sync),
    pub heartbeat_every: Duration,
    pub fault: Fault,
}

impl Gateway<'_> {
    /// Runs every thread until `stop` is dropped or sent on.
    pub fn run(&self, stop: &Stop, commands: &Receiver<SetpointCommand>) {
        let (telegram_tx, telegram_rx) = bounded::<Delivery>(TELEGRAM_QUEUE);
        let mailboxes: Vec<Mailbox> = self.config.outputs.iter().map(|_| Mailbox::default()).collect();
        std::thread::scope(|s| {
            for (index, config) in self.config.inputs.iter().enumerate() {
                let telegrams = &telegram_tx;
                let heartbeat = move || (self.heartbeat)(Worker::Input(index));
                let input = move || {
                    Input {
                        index,
                        config,
                        opener: self.opener,
                        telegrams,
                        board: self.board,
                        stop,
                        opened: self.opened,
                        heartbeat: &heartbeat,
                        heartbeat_every: self.heartbeat_every,
                    }
                    .run()
                };
                spawn(s, format!("in-{}", config.can_if), input);
            }
            for (index, config) in self.config.outputs.iter().enumerate() {
                let mailbox = &mailboxes[index];
                let heartbeat = move || (self.heartbeat)(Worker::Output(index));
                let output = move || {
                    Output {
                        index,
                        config,
                        opener: self.opener,
                        mailbox,
                        board: self.board,
                        stop,
                        opened: self.opened,
                        heartbeat: &heartbeat,
                        heartbeat_every: self.heartbeat_every,
                    }
                    .run()
                };
                spawn(s, format!("out-{}", config.can_if), output);
            }
            let mailboxes = &mailboxes;
            spawn(s, "combiner".into(), move || {
                self.combine(&telegram_rx, commands, mailboxes, stop)
            });
        });
    }

    /// The combiner thread: sleeps until a telegram, a command, the stop, or
    /// the combiner's next deadline (see `Combiner::next_deadline`; an
    /// inverter setpoint's expiry; the next heartbeat).
    fn combine(
        &self,
        telegrams: &Receiver<Delivery>,
        commands: &Receiver<SetpointCommand>,
        mailboxes: &[Mailbox],
        stop: &Stop,
    ) {
        let started = Instant::now();
        let capacities: Vec<f64> = self.config.inputs.iter().map(|i| i.capacity_ah).collect();
        let shares: Vec<InverterShare> = self.config.outputs.iter().map(|o| o.share).collect();
        let mut combiner = Combiner::new(self.config.battery, &capacities, started).with_inverters(&shares);
        let mut watch = Watch::new(self.config.inputs.len(), &self.board.events, &self.board.recorder);
        let mut commands = commands.clone();
        loop {
            (self.heartbeat)(Worker::Combiner);
            if self.fault == Fault::HangCombiner && started.elapsed() > Duration::from_secs(1) {
                log::error!("fault injected: the combiner thread hangs");
                let _ = stop.recv();
                return;
            }
            let now = Instant::now();
            let deadline = combiner
                .next_deadline(now)
                .map_or(now + self.heartbeat_every, |at| at.min(now + self.heartbeat_every));
            let (made, now) = if deadline <= now {
                (self.tick(&mut combiner, &mut watch, now), now)
            } else {
                select! {
                    recv(stop.receiver()) -> _ => return,
                    recv(telegrams) -> d => match d {
                        Ok(d) => {
                            let gap = self.config.battery.stale_timeout;
                            self.board.input(d.input, |s| s.energy.on_telegram(&d.telegram, d.at, gap));
                            let made = combiner.on_telegram(d.input, d.telegram, d.at);
                            watch.input(self.config, &combiner, self.board, d.input, d.at);
                            (made, d.at)
                        }
                        Err(_) => return,
                    },
                    recv(commands) -> c => match c {
                        Ok(c) => {
                            log_command(&c);
                            let now = Instant::now();
                            let made = combiner.apply(c, now);
                            watch.commanded(&c);
                            (made, now)
                        }
                        Err(_) => {
                            commands = never();
                            (None, Instant::now())
                        }
                    },
                    default(deadline - now) => {
                        let now = Instant::now();
                        (self.tick(&mut combiner, &mut watch, now), now)
                    },
                }
            };
            if let Some(combined) = made {
                watch.state(&combined, self.config.inputs.len());
                watch.over_current(self.config, &combiner);
                self.distribute(&combined, &combiner, mailboxes, now);
            }
            if stop.requested() {
                return;
            }
        }
    }

    /// Time has passed: stale inputs are logged, setpoints expire (each
    /// raised as an event), and the combiner may make a state.
    fn tick(&self, combiner: &mut Combiner, watch: &mut Watch, now: Instant) -> Option<Combined> {
        watch.log(self.config, combiner, self.board, now);
        let made = combiner.on_tick(now);
        watch.expired(combiner.expired());
        made
    }

    fn distribute(&self, c: &Combined, combiner: &Combiner, mailboxes: &[Mailbox], now: Instant) {
        let energy = Some(self.board.energy().into());
        for (mailbox, shaped) in mailboxes.iter().zip(combiner.shaped(now)) {
            mailbox.put(Shaped { energy, ..shaped });
        }
        let changed = self.board.system(|s| {
            s.combined = Some(*c);
            s.packs.clear();
            s.packs.extend(combiner.bank().packs());
            let changed =
                s.setpoints != *combiner.setpoints() || !s.inverter_setpoints.iter().eq(combiner.inverter_setpoints());
            s.setpoints = *combiner.setpoints();
            s.inverter_setpoints.clear();
            s.inverter_setpoints.extend(combiner.inverter_setpoints());
            changed
        });
        if changed {
            self.board.setpoints_changed();
        }
    }
}

/// Starts a named scoped thread; a thread that cannot start is a fatal
/// error at startup.
pub(crate) fn spawn<'scope, 'env, F>(s: &'scope std::thread::Scope<'scope, 'env>, name: String, f: F)
where
    F: FnOnce() + Send + 'scope,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(s, f)
        .unwrap_or_else(|e| panic!("cannot start thread {name}: {e}"));
}

fn log_command(command: &SetpointCommand) {
    log::info!(
        "setpoint {} {} {}",
        match command.scope {
            Scope::System => "system".to_string(),
            Scope::Inverter(j) => format!("inverter {}", j + 1),
        },
        command.kind.field(),
        command
            .setpoint
            .map_or("cleared".to_string(), |s| format!("= {} A", s.value))
    );
}

/// A setpoint's owner, as an event's subject and in words.
fn whose(scope: Scope) -> (Subject, String) {
    match scope {
        Scope::System => (Subject::System, "system".to_string()),
        Scope::Inverter(j) => (Subject::Inverter(j), format!("inverter {}", j + 1)),
    }
}

/// Remembers what was last logged, so that each change is logged (and
/// raised as an event) once.
struct Watch<'e> {
    fresh: Vec<Option<bool>>,
    /// What the board shows as each input's freshness.
    published: Vec<bool>,
    state: Option<SystemState>,
    events: &'e Events,
    recorder: &'e Recorder,
    overshoot: PerKind<bool>,
    over_current: Vec<bool>,
}

impl<'e> Watch<'e> {
    fn new(inputs: usize, events: &'e Events, recorder: &'e Recorder) -> Watch<'e> {
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

    /// A setpoint command was applied.
    fn commanded(&self, c: &SetpointCommand) {
        let (kind, message) = match c.setpoint {
            Some(s) => (Kind::SetpointSet, format!("{} set to {} A", c.kind.field(), s.value)),
            None => (Kind::SetpointCleared, format!("{} cleared", c.kind.field())),
        };
        let (subject, whose) = whose(c.scope);
        self.events.emit(kind, subject, format!("{whose} setpoint {message}"));
    }

    /// Raises an event for each setpoint the combiner dropped as expired.
    fn expired(&self, expired: &[(Scope, LimitKind)]) {
        for &(scope, kind) in expired {
            let (subject, whose) = whose(scope);
            let message = format!("{whose} setpoint {} expired", kind.field());
            self.events.emit(Kind::SetpointExpired, subject, message);
        }
    }

    /// Logs every input whose freshness changed by `now`.
    fn log(&mut self, config: &Config, combiner: &Combiner, board: &StatusBoard, now: Instant) {
        for i in 0..self.fresh.len() {
            self.input(config, combiner, board, i, now);
        }
    }

    /// Logs input `i` if its freshness changed by `now` (and raises it as an
    /// event when it was seen before), and puts the change on the board.
    fn input(&mut self, config: &Config, combiner: &Combiner, board: &StatusBoard, i: usize, now: Instant) {
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
    fn over_current(&mut self, config: &Config, combiner: &Combiner) {
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
    fn overshoot(&mut self, c: &Combined) {
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

    fn state(&mut self, c: &Combined, inputs: usize) {
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
