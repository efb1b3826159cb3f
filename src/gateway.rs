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
use crate::config::{Config, InputConfig, OutputConfig};
use crate::dead_link::RecoverySettings;
use crate::energy;
use crate::events::{Events, Kind, Subject};
use crate::input::{Delivery, Input};
pub use crate::liveness::{HEARTBEAT, Worker};
use crate::output::{Carried, Mailbox, Output};
use crate::recorder::{Reason, Recorder};
use crate::reload::Mapping;
use crate::serial::{LineSettings, SerialOpener};
use crate::serial_input::{SerialBuses, SerialPack};
use crate::setpoint::{Dropped, LimitKind, Scope, SetpointCommand};
use crate::shutdown::{self, Stop, StopSender};
use crate::status::{self, InputStatus, OutputStatus, Slot, StatusBoard};
use crate::sync::spawn;
use crossbeam_channel::{Receiver, Sender, bounded, never, select};
use std::sync::Arc;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

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
                let mut core = Core::new(Arc::new(self.config.clone()), self.board, Instant::now());
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

    fn spawn_input(&self, config: InputConfig, slot: Arc<Slot<InputStatus>>) -> InputThread<'scope> {
        let (stop, stop_rx) = shutdown::channel();
        let (gateway, telegrams) = (self.gateway, self.telegrams.clone());
        let name = format!("in-{}", config.can_if);
        let recovery = self.recovery;
        let thread_config = config.clone();
        if let Some(serial) = &config.serial {
            let line = LineSettings {
                baud: serial.baud,
                rs485_mode: serial.rs485_mode,
            };
            let bus = self.buses.bus(&serial.port, line);
            let handle = spawn(self.scope, name, move || {
                let heartbeat = || (gateway.heartbeat)(Worker::Input(slot.id));
                SerialPack {
                    config: &thread_config,
                    opener: gateway.serial,
                    bus: &bus,
                    telegrams: &telegrams,
                    slot: &slot,
                    events: &gateway.board.events,
                    stop: &stop_rx,
                    opened: gateway.opened,
                    heartbeat: &heartbeat,
                    heartbeat_every: gateway.heartbeat_every,
                }
                .run()
            });
            return InputThread { config, stop, handle };
        }
        let handle = spawn(self.scope, name, move || {
            let heartbeat = || (gateway.heartbeat)(Worker::Input(slot.id));
            Input {
                config: &thread_config,
                opener: gateway.opener,
                telegrams: &telegrams,
                slot: &slot,
                events: &gateway.board.events,
                stop: &stop_rx,
                opened: gateway.opened,
                heartbeat: &heartbeat,
                heartbeat_every: gateway.heartbeat_every,
                recovery,
            }
            .run()
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
        let (stop, stop_rx) = shutdown::channel();
        let gateway = self.gateway;
        let name = format!("out-{}", config.can_if);
        let recovery = self.recovery;
        let (thread_config, thread_mailbox) = (config.clone(), mailbox.clone());
        let handle = spawn(self.scope, name, move || {
            let heartbeat = || (gateway.heartbeat)(Worker::Output(slot.id));
            Output {
                config: &thread_config,
                opener: gateway.opener,
                mailbox: &thread_mailbox,
                slot: &slot,
                events: &gateway.board.events,
                stop: &stop_rx,
                opened: gateway.opened,
                heartbeat: &heartbeat,
                heartbeat_every: gateway.heartbeat_every,
                recovery,
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

/// The combiner thread's state, which a reload carries over.
struct Core {
    config: Arc<Config>,
    /// Holds the inverters' setpoints too (by position in `config.outputs`).
    combiner: Combiner,
    /// Each input's slot, in configuration order: telegrams are tagged with
    /// its id, and its energy counters are kept in it.
    inputs: Vec<Arc<Slot<InputStatus>>>,
    watch: Watch,
}

/// The inverters' shares, in `[[bmses-out]]` order.
fn shares(config: &Config) -> Vec<InverterShare> {
    config.outputs.iter().map(|o| o.share).collect()
}

fn capacities(config: &Config) -> Vec<f64> {
    config.inputs.iter().map(|i| i.capacity_ah).collect()
}

fn slots(board: &StatusBoard) -> Vec<Arc<Slot<InputStatus>>> {
    (0..board.input_count()).map(|i| board.input_slot(i)).collect()
}

impl Core {
    fn new(config: Arc<Config>, board: &StatusBoard, now: Instant) -> Core {
        Core {
            combiner: Combiner::new(config.battery, &capacities(&config), now).with_inverters(&shares(&config)),
            inputs: slots(board),
            watch: Watch::new(config.inputs.len(), board.events.clone(), board.recorder.clone()),
            config,
        }
    }

    fn on_delivery(&mut self, d: Delivery, board: &StatusBoard) -> Option<Combined> {
        // A telegram from a battery that a reload has just removed is dropped.
        let index = self.inputs.iter().position(|slot| slot.id == d.input)?;
        let gap = self.config.battery.stale_timeout;
        self.inputs[index].update(|s| s.energy.on_telegram(&d.telegram, d.at, gap));
        let made = self.combiner.on_telegram(index, d.telegram, d.at);
        self.watch.input(&self.config, &self.combiner, board, index, d.at);
        made
    }

    /// A setpoint command: logged, applied and raised as an event.
    fn command(&mut self, c: SetpointCommand, now: Instant) -> Option<Combined> {
        log_command(&c);
        let made = self.combiner.apply(c, now);
        self.watch.commanded(&c);
        made
    }

    /// Time has passed: stale inputs are logged, setpoints expire (each
    /// raised as an event), and the combiner may make a state.
    fn tick(&mut self, board: &StatusBoard, now: Instant) -> Option<Combined> {
        self.watch.log(&self.config, &self.combiner, board, now);
        let made = self.combiner.on_tick(now);
        self.watch.expired(self.combiner.expired());
        made
    }

    /// Takes the reload's configuration; the state to send at once, if any.
    fn reconfigure(&mut self, reload: Reload) -> Option<Combined> {
        let now = Instant::now();
        let Reload {
            config,
            mapping,
            board,
            done,
            ..
        } = reload;
        board.settle_positions();
        let inputs = slots(&board);
        // The system's energy total stays what it was: what a removed
        // battery had counted moves into the base (docs/reload.md).
        let total = status::energy_of(board.system(|s| s.energy_base), &self.inputs);
        self.inputs = inputs;
        let base = energy::base_for(total, &self.meters());
        board.system(|s| s.energy_base = base);
        self.watch.remap(&mapping.inputs);
        let dropped = (self.combiner).reconfigure_inverters(&shares(&config), &mapping.outputs, now);
        let made = (self.combiner).reconfigure(config.battery, &capacities(&config), &mapping.inputs, now);
        self.config = config;
        // The new inputs' freshness on the board, in their new places.
        self.watch.log(&self.config, &self.combiner, &board, now);
        board.system(|s| s.inputs_fresh.clone_from(&self.watch.published));
        let _ = done.try_send(dropped);
        made
    }

    /// Every input's energy meter, in configuration order.
    fn meters(&self) -> Vec<energy::Meter> {
        self.inputs.iter().map(|slot| slot.update(|s| s.energy)).collect()
    }

    fn distribute<'m>(
        &mut self,
        c: &Combined,
        board: &StatusBoard,
        mailboxes: impl Iterator<Item = &'m Mailbox>,
        now: Instant,
    ) {
        self.watch.state(c, self.config.inputs.len());
        self.watch.over_current(&self.config, &self.combiner);
        let combiner = &self.combiner;
        // The system's energy counters, for the profiles that send them.
        let energy = Some(status::energy_of(board.system(|s| s.energy_base), &self.inputs).into());
        for (mailbox, shaped) in mailboxes.zip(combiner.shaped(now)) {
            mailbox.put(Shaped { energy, ..shaped });
        }
        let changed = board.system(|s| {
            s.combined = Some(*c);
            s.packs.clear();
            s.packs.extend(combiner.bank().packs());
            let changed = s.setpoints != *combiner.setpoints()
                || !s.inverter_setpoints.iter().eq(combiner.inverter_setpoints())
                || s.charge_stop_soc != combiner.charge_stop_set();
            s.setpoints = *combiner.setpoints();
            s.charge_stop_soc = combiner.charge_stop_set();
            s.inverter_setpoints.clear();
            s.inverter_setpoints.extend(combiner.inverter_setpoints());
            changed
        });
        if changed {
            board.setpoints_changed();
        }
    }
}

fn log_command(command: &SetpointCommand) {
    log::info!(
        "setpoint {} {} {}",
        whose(command.scope).1,
        command.field(),
        command
            .setpoint
            .map_or("cleared".to_string(), |s| format!("= {} {}", s.value, command.unit()))
    );
}

/// A setpoint's owner, as an event's subject and in words.
fn whose(scope: Scope) -> (Subject, String) {
    match scope {
        Scope::System | Scope::ChargeStop => (Subject::System, "system".to_string()),
        Scope::Inverter(j) => (Subject::Inverter(j), format!("inverter {}", j + 1)),
    }
}

/// Remembers what was last logged, so that each change is logged (and
/// raised as an event) once.
struct Watch {
    fresh: Vec<Option<bool>>,
    /// What the board shows as each input's freshness.
    published: Vec<bool>,
    state: Option<SystemState>,
    events: Arc<Events>,
    recorder: Arc<Recorder>,
    overshoot: PerKind<bool>,
    over_current: Vec<bool>,
}

impl Watch {
    fn new(inputs: usize, events: Arc<Events>, recorder: Arc<Recorder>) -> Watch {
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
    fn remap(&mut self, from: &[Option<usize>]) {
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
    fn commanded(&self, c: &SetpointCommand) {
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
    fn expired(&self, expired: &[(Scope, LimitKind)]) {
        for &(scope, kind) in expired {
            let (subject, whose) = whose(scope);
            let message = format!("{whose} setpoint {} expired", crate::setpoint::field(scope, kind));
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
