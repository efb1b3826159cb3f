//! The running gateway: one thread per CAN interface and the combiner thread
//! between them, all inside one `std::thread::scope`.
//!
//! Data flow: input threads -> bounded telegram queue -> combiner thread ->
//! one-slot mailbox per output -> output threads. Setpoint commands (from the
//! MQTT thread, or a test) arrive on their own bounded queue. Nothing here
//! blocks on MQTT: the status board is the only thing MQTT reads.

use crate::can::CanOpener;
use crate::combine::{Combined, Combiner, InverterShare, SystemState};
use crate::config::Config;
use crate::input::{Delivery, Input};
use crate::output::{Mailbox, Output};
use crate::setpoint::{Scope, SetpointCommand};
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
        let shares: Vec<InverterShare> = self.config.outputs.iter().map(|o| o.share).collect();
        let mut combiner = Combiner::new(self.config.battery, &capacities, started).with_inverters(&shares);
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
            let (made, now) = select! {
                recv(stop) -> _ => return,
                recv(telegrams) -> d => match d {
                    Ok(d) => (combiner.on_telegram(d.input, d.telegram, d.at), d.at),
                    Err(_) => return,
                },
                recv(commands) -> c => match c {
                    Ok(c) => {
                        log_command(&c);
                        let now = Instant::now();
                        (combiner.apply(c, now), now)
                    }
                    Err(_) => {
                        commands = never();
                        (None, Instant::now())
                    }
                },
                recv(ticker) -> _ => {
                    let now = Instant::now();
                    watch.log(self.config, &combiner, self.board, now);
                    (combiner.on_tick(now), now)
                },
            };
            if let Some(combined) = made {
                watch.state(&combined, self.config.inputs.len());
                self.distribute(&combined, &combiner, mailboxes, now);
            }
            if shutdown::requested(stop) {
                return;
            }
        }
    }

    fn distribute(&self, c: &Combined, combiner: &Combiner, mailboxes: &[Mailbox], now: Instant) {
        for (mailbox, shaped) in mailboxes.iter().zip(combiner.shaped(now)) {
            mailbox.put(shaped);
        }
        self.board.system(|s| {
            s.combined = Some(*c);
            s.setpoints = *combiner.setpoints();
            s.inverter_setpoints.clear();
            s.inverter_setpoints.extend(combiner.inverter_setpoints());
        });
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

/// Remembers what was last logged, so that each change is logged once.
struct Watch {
    fresh: Vec<Option<bool>>,
    /// What the board shows as each input's freshness.
    published: Vec<bool>,
    state: Option<SystemState>,
}

impl Watch {
    fn new(inputs: usize) -> Watch {
        Watch {
            fresh: vec![None; inputs],
            published: vec![false; inputs],
            state: None,
        }
    }

    /// Logs each input turning fresh or stale, and puts the change on the
    /// board.
    fn log(&mut self, config: &Config, combiner: &Combiner, board: &StatusBoard, now: Instant) {
        let mut changed = false;
        for (i, (seen, published)) in self.fresh.iter_mut().zip(&mut self.published).enumerate() {
            let fresh = combiner.is_fresh(i, now);
            changed |= std::mem::replace(published, fresh) != fresh;
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
        if changed {
            board.system(|s| s.inputs_fresh.clone_from(&self.published));
        }
    }

    fn state(&mut self, c: &Combined, inputs: usize) {
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
