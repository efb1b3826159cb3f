//! The running gateway: one thread per CAN interface and the combiner thread
//! between them, all inside one `std::thread::scope`.
//!
//! Data flow: input threads -> bounded telegram queue -> combiner thread ->
//! one-slot mailbox per output -> output threads. Setpoint commands (from the
//! MQTT thread, or a test) arrive on their own bounded queue. Nothing here
//! blocks on MQTT: the status board is the only thing MQTT reads.

use crate::bank::{KINDS, LimitMode, PerKind, direction_name};
use crate::can::CanOpener;
use crate::combine::{Combined, Combiner, KEEPALIVE, SystemState, shape};
use crate::config::Config;
use crate::input::{Delivery, Input};
use crate::output::{Mailbox, Output, Shaped};
use crate::setpoint::{LimitSetpoints, Scope, SetpointCommand};
use crate::shutdown;
use crate::status::StatusBoard;
use crossbeam_channel::{Receiver, bounded, never, select, tick};
use std::time::{Duration, Instant};

/// Telegrams waiting for the combiner. A telegram is a whole snapshot, so when
/// the queue is full the newest is dropped and counted: the next one replaces it.
pub const TELEGRAM_QUEUE: usize = 256;
/// Setpoint commands waiting for the combiner.
pub const COMMAND_QUEUE: usize = 64;
/// How often the combiner looks at the clock.
pub const TICK: Duration = Duration::from_millis(100);

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
    /// Called by every worker at least every 200 ms while it is alive.
    pub heartbeat: &'a (dyn Fn(Worker) + Sync),
    pub fault: Fault,
}

impl Gateway<'_> {
    /// Runs every thread until `stop` is dropped or sent on.
    pub fn run(&self, stop: &Receiver<()>, commands: &Receiver<SetpointCommand>) {
        let (telegram_tx, telegram_rx) = bounded::<Delivery>(TELEGRAM_QUEUE);
        let mailboxes: Vec<Mailbox> = self.config.outputs.iter().map(|_| Mailbox::default()).collect();
        let max_age = self.config.battery.stale_timeout + KEEPALIVE + Duration::from_secs(1);
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
                        max_age,
                        opened: self.opened,
                        heartbeat: &heartbeat,
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

    fn combine(
        &self,
        telegrams: &Receiver<Delivery>,
        commands: &Receiver<SetpointCommand>,
        mailboxes: &[Mailbox],
        stop: &Receiver<()>,
    ) {
        let started = Instant::now();
        let capacities: Vec<f64> = self.config.inputs.iter().map(|i| i.capacity_ah).collect();
        let mut combiner = Combiner::new(self.config.battery, &capacities, started);
        let mut inverter_setpoints = vec![LimitSetpoints::default(); self.config.outputs.len()];
        let mut watch = Watch::new(self.config.inputs.len());
        let ticker = tick(TICK);
        let mut commands = commands.clone();
        loop {
            (self.heartbeat)(Worker::Combiner);
            if self.fault == Fault::HangCombiner && started.elapsed() > Duration::from_secs(1) {
                log::error!("fault injected: the combiner thread hangs");
                let _ = stop.recv();
                return;
            }
            let made = select! {
                recv(stop) -> _ => return,
                recv(telegrams) -> d => match d {
                    Ok(d) => combiner.on_telegram(d.input, d.telegram, d.at),
                    Err(_) => return,
                },
                recv(commands) -> c => match c {
                    Ok(c) => apply(&mut combiner, &mut inverter_setpoints, c, Instant::now()),
                    Err(_) => {
                        commands = never();
                        None
                    }
                },
                recv(ticker) -> _ => {
                    let now = Instant::now();
                    watch.log(self.config, &combiner, now);
                    let expired = inverter_setpoints.iter_mut().fold(false, |acc, s| s.expire(now) | acc);
                    combiner.on_tick(now).or(if expired { combiner.last().copied() } else { None })
                },
            };
            if let Some(combined) = made {
                watch.state(&combined, self.config.inputs.len());
                watch.over_current(self.config, &combiner);
                let sent = self.distribute(&combined, &combiner, &inverter_setpoints, mailboxes);
                combiner.note_sent(sent);
            }
            if shutdown::requested(stop) {
                return;
            }
        }
    }

    /// Hands each output its share; returns what the inverters were sent
    /// together, per direction.
    fn distribute(
        &self,
        c: &Combined,
        combiner: &Combiner,
        inverter_setpoints: &[LimitSetpoints],
        mailboxes: &[Mailbox],
    ) -> PerKind<f64> {
        let now = Instant::now();
        let mut sent = PerKind::default();
        for ((output, mailbox), own) in self.config.outputs.iter().zip(mailboxes).zip(inverter_setpoints) {
            let battery = shape(c, &output.share, own, now);
            sent.charge += battery.i_lim_charge;
            sent.discharge += battery.i_lim_discharge;
            mailbox.put(Shaped {
                state: c.state,
                battery,
                bank: c.bank,
                made_at: c.made_at,
            });
        }
        self.board.system(|s| {
            s.combined = Some(*c);
            s.packs.clear();
            s.packs.extend(combiner.bank().packs());
            s.setpoints = *combiner.setpoints();
            s.inverter_setpoints.clear();
            s.inverter_setpoints.extend_from_slice(inverter_setpoints);
        });
        sent
    }
}

fn spawn<'scope, 'env, F>(s: &'scope std::thread::Scope<'scope, 'env>, name: String, f: F)
where
    F: FnOnce() + Send + 'scope,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(s, f)
        .unwrap_or_else(|e| panic!("cannot start thread {name}: {e}"));
}

/// Applies one command; returns the state to send at once, if any.
fn apply(
    combiner: &mut Combiner,
    inverter_setpoints: &mut [LimitSetpoints],
    command: SetpointCommand,
    now: Instant,
) -> Option<Combined> {
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
    match command.scope {
        Scope::System => combiner.set_setpoint(command.kind, command.setpoint, now),
        Scope::Inverter(j) => {
            inverter_setpoints.get_mut(j)?.set(command.kind, command.setpoint);
            combiner.last().copied()
        }
    }
}

/// Remembers what was last logged, so that each change is logged once.
struct Watch {
    fresh: Vec<Option<bool>>,
    state: Option<SystemState>,
    overshoot: PerKind<bool>,
    over_current: Vec<bool>,
}

impl Watch {
    fn new(inputs: usize) -> Watch {
        Watch {
            fresh: vec![None; inputs],
            state: None,
            overshoot: PerKind::default(),
            over_current: vec![false; inputs],
        }
    }

    fn log(&mut self, config: &Config, combiner: &Combiner, now: Instant) {
        for (i, seen) in self.fresh.iter_mut().enumerate() {
            let fresh = combiner.is_fresh(i, now);
            let name = &config.inputs[i].can_if;
            match (*seen, fresh) {
                (Some(false) | None, true) => log::info!("battery {} ({name}): reporting", i + 1),
                (Some(true), false) => log::warn!(
                    "battery {} ({name}): stale, no complete telegram for {:.1} s",
                    i + 1,
                    config.battery.stale_timeout.as_secs_f64()
                ),
                _ => {}
            }
            if seen.is_some() || fresh {
                *seen = Some(fresh);
            }
        }
    }

    /// Logs a battery going over its own limit (by more than
    /// OVERCURRENT-MARGIN) and coming back within it.
    fn over_current(&mut self, config: &Config, combiner: &Combiner) {
        let action = match config.battery.bank.mode {
            LimitMode::Share => "the combined limit falls until it is within",
            LimitMode::Sum => "LIMIT-MODE \"sum\" does not lower the combined limit for it",
        };
        for (i, (seen, pack)) in self.over_current.iter_mut().zip(combiner.bank().packs()).enumerate() {
            let name = &config.inputs[i].can_if;
            match (*seen, pack.over_current) {
                (false, true) => log::warn!(
                    "battery {} ({name}): over current, above its own limit: {action}",
                    i + 1
                ),
                (true, false) => log::info!("battery {} ({name}): back within its own limit", i + 1),
                _ => {}
            }
            *seen = pack.over_current;
        }
    }

    /// Logs an overshoot raised or cleared (an inverter ignoring its limit).
    fn overshoot(&mut self, c: &Combined) {
        for kind in KINDS {
            let (was, now) = (*self.overshoot.get(kind), *c.overshoot.get(kind));
            let what = direction_name(kind);
            match (was, now) {
                (false, true) => log::warn!(
                    "overshoot: the bank {what}s at {:.1} A, more than the inverters were allowed together: an inverter ignores its {what} limit",
                    c.battery.i_total.abs()
                ),
                (true, false) => log::info!(
                    "overshoot cleared: the bank's {what} current is back within what the inverters were allowed"
                ),
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
        self.state = Some(c.state);
    }
}
