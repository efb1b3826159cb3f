//! The running gateway: one thread per CAN interface and the combiner thread
//! between them, all inside one `std::thread::scope`.
//!
//! Data flow: input threads -> bounded telegram queue -> combiner thread ->
//! one-slot mailbox per output -> output threads. Setpoint commands (from the
//! MQTT thread, or a test) arrive on their own bounded queue. Nothing here
//! blocks on MQTT: the status board is the only thing MQTT reads.
//!
//! Here: the threads' set, the combiner thread's loop and the reload's
//! choreography (which threads stop, start or carry on). What the combiner
//! thread does with each telegram, command, tick and reload is in
//! `combiner`; the events raised on the way are `watch`'s.

use crate::can::CanOpener;
use crate::combine::Combined;
use crate::config::{Config, InputConfig, OutputConfig};
use crate::context::ThreadContext;
use crate::dead_link::RecoverySettings;
use crate::events::Events;
use crate::input::{Delivery, Input};
pub use crate::liveness::{HEARTBEAT, Worker};
use crate::output::{Carried, Mailbox, Output};
use crate::recorder::Recorder;
use crate::reload::Mapping;
use crate::serial::{LineSettings, SerialOpener};
use crate::serial_input::{SerialBuses, SerialPack};
use crate::setpoint::{Dropped, SetpointCommand};
use crate::shutdown::{self, Stop, StopSender};
use crate::status::{InputStatus, OutputStatus, Slot, StatusBoard};
use crate::sync::spawn;
use crossbeam_channel::{Receiver, Sender, bounded, never, select};
use std::sync::Arc;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

mod combiner;
mod watch;

use combiner::Core;

/// Telegrams waiting for the combiner. A telegram is a whole snapshot, so when
/// the queue is full the newest is dropped and counted: the next one replaces it.
pub const TELEGRAM_QUEUE: usize = 256;
/// Setpoint commands waiting for the combiner.
pub const COMMAND_QUEUE: usize = 64;

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

/// The running gateway. It runs until stopped, and takes new configurations
/// without stopping ([`Reload`]).
pub struct Gateway<'a> {
    /// The configuration it starts with.
    pub config: &'a Config,
    pub opener: &'a dyn CanOpener,
    /// Opens the serial ports of RS485 batteries.
    pub serial: &'a dyn SerialOpener,
    /// The board it starts with; a reload brings the next one.
    pub board: &'a StatusBoard,
    /// Where the CAN threads and the combiner raise events.
    pub events: &'a Events,
    /// Triggered by the combiner where a change needs a record (the CAN
    /// ports record through `opener`, wrapped by whoever made it).
    pub recorder: &'a Recorder,
    /// Called by each CAN thread once its interface has been tried.
    pub opened: &'a (dyn Fn() + Sync),
    /// Called by every worker once per wake-up, and at least every
    /// `heartbeat_every` while it is alive (so counting the calls counts the
    /// wake-ups).
    pub heartbeat: &'a (dyn Fn(Worker) + Sync),
    pub heartbeat_every: Duration,
    pub fault: Fault,
}

/// A new configuration for the running gateway (docs/reload.md).
pub struct Reload {
    pub config: Arc<Config>,
    /// Which sections of `config` are running ones, by CAN-IF.
    pub mapping: Mapping,
    /// The running board reconfigured with `mapping`.
    pub board: Arc<StatusBoard>,
    /// Setpoint commands from now on (those still queued on the old
    /// queue are applied first, with the old configuration).
    pub commands: Receiver<SetpointCommand>,
    /// Gets the setpoints the reload dropped once it is in effect.
    pub done: Sender<Vec<Dropped>>,
}

impl Gateway<'_> {
    /// Runs every thread until `stop` is dropped or sent on.
    pub fn run(&self, stop: &Stop, commands: &Receiver<SetpointCommand>) {
        self.run_reloading(stop, commands.clone(), &never());
    }

    /// Runs every thread until `stop` is dropped or sent on, taking each
    /// configuration that arrives on `reloads`.
    pub fn run_reloading(&self, stop: &Stop, commands: Receiver<SetpointCommand>, reloads: &Receiver<Reload>) {
        std::thread::scope(|s| {
            spawn(s, "combiner".into(), move || {
                let (telegrams_tx, telegrams) = bounded::<Delivery>(TELEGRAM_QUEUE);
                let mut threads = Threads {
                    gateway: self,
                    scope: s,
                    telegrams: telegrams_tx,
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    recovery: self.config.can,
                    buses: SerialBuses::default(),
                };
                threads.start(self.config, self.board);
                let config = Arc::new(self.config.clone());
                let mut core = Core::new(config, self.board, self.events, self.recorder, Instant::now());
                self.combine(&mut core, &mut threads, &telegrams, commands, reloads, stop);
            });
        });
    }

    /// The combiner thread: sleeps until a telegram, a command, the stop, or
    /// the combiner's next deadline (see `Combiner::next_deadline`; an
    /// inverter setpoint's expiry; the next heartbeat).
    fn combine(
        &self,
        core: &mut Core,
        threads: &mut Threads<'_, '_>,
        telegrams: &Receiver<Delivery>,
        mut commands: Receiver<SetpointCommand>,
        reloads: &Receiver<Reload>,
        stop: &Stop,
    ) {
        let started = Instant::now();
        let mut reloads = reloads.clone();
        loop {
            (self.heartbeat)(Worker::Combiner);
            if self.fault == Fault::HangCombiner && started.elapsed() > Duration::from_secs(1) {
                log::error!("fault injected: the combiner thread hangs");
                let _ = stop.recv();
                return;
            }
            let now = Instant::now();
            let deadline = (core.combiner)
                .next_deadline(now)
                .map_or(now + self.heartbeat_every, |at| at.min(now + self.heartbeat_every));
            let (made, now) = if deadline <= now {
                (core.tick(self.board, now), now)
            } else {
                select! {
                    recv(stop.receiver()) -> _ => return,
                    recv(telegrams) -> d => match d {
                        Ok(d) => (core.on_delivery(d, self.board), d.at),
                        Err(_) => return,
                    },
                    recv(commands) -> c => match c {
                        Ok(c) => {
                            let now = Instant::now();
                            (core.command(c, now), now)
                        }
                        Err(_) => {
                            commands = never();
                            (None, Instant::now())
                        }
                    },
                    recv(reloads) -> r => match r {
                        Ok(r) => (reload(core, threads, &mut commands, r), Instant::now()),
                        Err(_) => {
                            reloads = never();
                            (None, Instant::now())
                        }
                    },
                    default(deadline - now) => {
                        let now = Instant::now();
                        (core.tick(self.board, now), now)
                    },
                }
            };
            if let Some(combined) = made {
                core.distribute(&combined, self.board, threads.mailboxes(), now);
            }
            if stop.requested() {
                return;
            }
        }
    }
}

/// Takes a reload: commands already queued (meant for the running
/// configuration) first, then the threads, then the combiner's state.
fn reload(
    core: &mut Core,
    threads: &mut Threads,
    commands: &mut Receiver<SetpointCommand>,
    r: Reload,
) -> Option<Combined> {
    while let Ok(c) = commands.try_recv() {
        core.command(c, Instant::now());
    }
    *commands = r.commands.clone();
    threads.reconfigure(&r);
    core.reconfigure(r)
}

/// One battery input's running thread.
struct InputThread<'scope> {
    config: InputConfig,
    /// Dropped to stop the thread.
    stop: StopSender,
    handle: ScopedJoinHandle<'scope, ()>,
}

/// One inverter output's running thread.
struct OutputThread<'scope> {
    /// What the thread was started with: a reload that changes it restarts it.
    config: OutputConfig,
    mailbox: Arc<Mailbox>,
    stop: StopSender,
    handle: ScopedJoinHandle<'scope, Carried>,
}

/// The CAN threads, in configuration order: started, and on a reload kept,
/// restarted (a changed section), stopped (a removed one) or added.
struct Threads<'scope, 'env> {
    gateway: &'env Gateway<'env>,
    scope: &'scope std::thread::Scope<'scope, 'env>,
    telegrams: Sender<Delivery>,
    inputs: Vec<InputThread<'scope>>,
    outputs: Vec<OutputThread<'scope>>,
    /// `[can]`, read at start: every CAN thread judges its interface by
    /// the same rule until the next start (a reload that changes it says so).
    recovery: RecoverySettings,
    /// The serial ports in use, shared by the RS485 batteries on each.
    buses: SerialBuses,
}

impl<'scope, 'env> Threads<'scope, 'env> {
    fn start(&mut self, config: &Config, board: &StatusBoard) {
        for (i, c) in config.inputs.iter().enumerate() {
            let thread = self.spawn_input(c.clone(), board.input_slot(i));
            self.inputs.push(thread);
        }
        for (j, c) in config.outputs.iter().enumerate() {
            let slot = board.output_slot(j);
            let thread = self.spawn_output(c.clone(), slot, Arc::default(), Carried::default());
            self.outputs.push(thread);
        }
    }

    /// The outputs' mailboxes, in configuration order.
    fn mailboxes(&self) -> impl Iterator<Item = &Mailbox> {
        self.outputs.iter().map(|o| &*o.mailbox)
    }

    /// Takes `reload`'s configuration: threads of unchanged sections keep
    /// running; the others are stopped (all at once, then joined) before
    /// their replacements start, so that no interface is ever served twice.
    /// A restarted output goes on from where its old thread was.
    fn reconfigure(&mut self, reload: &Reload) {
        let (config, mapping, board) = (&reload.config, &reload.mapping, &reload.board);
        let mut old_inputs: Vec<Option<InputThread>> = self.inputs.drain(..).map(Some).collect();
        let mut old_outputs: Vec<Option<OutputThread>> = self.outputs.drain(..).map(Some).collect();
        let keep_inputs = kept(&mapping.inputs, &config.inputs, &old_inputs, |t, c| t.config == *c);
        let keep_outputs = kept(&mapping.outputs, &config.outputs, &old_outputs, |t, c| t.config == *c);
        // Every thread that ends is told before any is waited for.
        let ending_inputs: Vec<_> = unkept(&mut old_inputs, &keep_inputs)
            .map(|(_, InputThread { handle, stop, .. })| {
                drop(stop);
                handle
            })
            .collect();
        let ending_outputs: Vec<_> = unkept(&mut old_outputs, &keep_outputs)
            .map(
                |(
                    o,
                    OutputThread {
                        handle, mailbox, stop, ..
                    },
                )| {
                    drop(stop);
                    (o, mailbox, handle)
                },
            )
            .collect();
        for handle in ending_inputs {
            if handle.join().is_err() {
                log::error!("a battery thread had panicked");
            }
        }
        let mut ended: Vec<(usize, Arc<Mailbox>, Carried)> = ending_outputs
            .into_iter()
            .map(|(o, mailbox, handle)| {
                let carried = handle.join().unwrap_or_else(|_| {
                    log::error!("an inverter thread had panicked");
                    Carried::default()
                });
                (o, mailbox, carried)
            })
            .collect();
        for (i, c) in config.inputs.iter().enumerate() {
            let thread = match keep_inputs[i] {
                Some(o) => old_inputs[o].take().expect("each running thread is kept once"),
                None => self.spawn_input(c.clone(), board.input_slot(i)),
            };
            self.inputs.push(thread);
        }
        for (j, c) in config.outputs.iter().enumerate() {
            let thread = match keep_outputs[j] {
                Some(o) => old_outputs[o].take().expect("each running thread is kept once"),
                None => {
                    let restarted = mapping.outputs[j].and_then(|o| ended.iter().position(|e| e.0 == o));
                    let (_, mailbox, carried) = restarted.map_or_else(Default::default, |k| ended.swap_remove(k));
                    self.spawn_output(c.clone(), board.output_slot(j), mailbox, carried)
                }
            };
            self.outputs.push(thread);
        }
    }

    /// Starts a serving thread named `name` that beats as `worker`: `serve`
    /// gets its context (the gateway's events and callbacks, its own stop).
    /// Returns its stop and its handle.
    fn spawn_serving<T: Send + 'scope>(
        &self,
        name: String,
        worker: Worker,
        serve: impl FnOnce(ThreadContext) -> T + Send + 'scope,
    ) -> (StopSender, ScopedJoinHandle<'scope, T>) {
        let (stop, stop_rx) = shutdown::channel();
        let gateway = self.gateway;
        let handle = spawn(self.scope, name, move || {
            let heartbeat = || (gateway.heartbeat)(worker);
            serve(ThreadContext {
                events: gateway.events,
                stop: &stop_rx,
                opened: gateway.opened,
                heartbeat: &heartbeat,
                heartbeat_every: gateway.heartbeat_every,
            })
        });
        (stop, handle)
    }

    fn spawn_input(&self, config: InputConfig, slot: Arc<Slot<InputStatus>>) -> InputThread<'scope> {
        let (gateway, telegrams, recovery) = (self.gateway, self.telegrams.clone(), self.recovery);
        // An RS485 battery's port, shared with the other packs on it.
        let bus = config.serial.as_ref().map(|serial| {
            let line = LineSettings {
                baud: serial.baud,
                rs485_mode: serial.rs485_mode,
            };
            self.buses.bus(&serial.port, line)
        });
        let thread_config = config.clone();
        let name = format!("in-{}", config.can_if);
        let (stop, handle) = self.spawn_serving(name, Worker::Input(slot.id), move |context| match &bus {
            Some(bus) => SerialPack {
                config: &thread_config,
                opener: gateway.serial,
                bus,
                telegrams: &telegrams,
                slot: &slot,
                context,
            }
            .run(),
            None => Input {
                config: &thread_config,
                opener: gateway.opener,
                telegrams: &telegrams,
                slot: &slot,
                recovery,
                context,
            }
            .run(),
        });
        InputThread { config, stop, handle }
    }

    fn spawn_output(
        &self,
        config: OutputConfig,
        slot: Arc<Slot<OutputStatus>>,
        mailbox: Arc<Mailbox>,
        carried: Carried,
    ) -> OutputThread<'scope> {
        let (gateway, recovery) = (self.gateway, self.recovery);
        let (thread_config, thread_mailbox) = (config.clone(), mailbox.clone());
        let name = format!("out-{}", config.can_if);
        let (stop, handle) = self.spawn_serving(name, Worker::Output(slot.id), move |context| {
            Output {
                config: &thread_config,
                opener: gateway.opener,
                mailbox: &thread_mailbox,
                slot: &slot,
                recovery,
                context,
            }
            .run(carried)
        });
        OutputThread {
            config,
            mailbox,
            stop,
            handle,
        }
    }
}

/// For each new section, the running thread that goes on as it is: the one
/// of the same CAN-IF (`from`), if `same` says its section is unchanged.
fn kept<T, C>(
    from: &[Option<usize>],
    sections: &[C],
    old: &[Option<T>],
    same: impl Fn(&T, &C) -> bool,
) -> Vec<Option<usize>> {
    from.iter()
        .zip(sections)
        .map(|(from, c)| from.filter(|&o| old[o].as_ref().is_some_and(|t| same(t, c))))
        .collect()
}

/// Takes the running threads that are not kept, with their old positions.
fn unkept<'t, T>(old: &'t mut [Option<T>], kept: &'t [Option<usize>]) -> impl Iterator<Item = (usize, T)> + 't {
    let ending = move |(o, t): (usize, &mut Option<T>)| {
        if kept.contains(&Some(o)) {
            None
        } else {
            t.take().map(|t| (o, t))
        }
    };
    old.iter_mut().enumerate().filter_map(ending)
}
