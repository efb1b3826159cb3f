//! The running gateway: one thread per CAN interface and the combiner thread
//! between them, all inside one `std::thread::scope`.
//!
//! Data flow: input threads -> bounded telegram queue -> combiner thread ->
//! one-slot mailbox per output -> output threads. Setpoint commands (from the
//! MQTT thread, or a test) arrive on their own bounded queue. Nothing here
//! blocks on MQTT: the status board is the only thing MQTT reads.

use crate::can::CanOpener;
use crate::combine::{Combined, Combiner, KEEPALIVE, SystemState, shape};
use crate::config::{Config, InputConfig, OutputConfig};
use crate::input::{Delivery, Input};
use crate::output::{Carried, Mailbox, Output, Shaped};
use crate::reload::Mapping;
use crate::setpoint::{self, Dropped, LimitSetpoints, Scope, SetpointCommand};
use crate::shutdown;
use crate::status::{InputStatus, OutputStatus, Slot, StatusBoard};
use crossbeam_channel::{Receiver, Sender, bounded, never, select, tick};
use std::sync::Arc;
use std::thread::ScopedJoinHandle;
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

/// Which thread a heartbeat comes from: CAN threads by their slot id on the
/// status board (stable across reloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Worker {
    Input(usize),
    Output(usize),
    Combiner,
}

/// The running gateway. It runs until stopped, and takes new configurations
/// without stopping ([`Reload`]).
pub struct Gateway<'a> {
    /// The configuration it starts with.
    pub config: &'a Config,
    pub opener: &'a dyn CanOpener,
    /// The board it starts with; a reload brings the next one.
    pub board: &'a StatusBoard,
    /// Called by each CAN thread once its interface has been tried.
    pub opened: &'a (dyn Fn() + Sync),
    /// Called by every worker at least every 200 ms while it is alive.
    pub heartbeat: &'a (dyn Fn(Worker) + Sync),
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
    pub fn run(&self, stop: &Receiver<()>, commands: &Receiver<SetpointCommand>) {
        self.run_reloading(stop, commands.clone(), &never());
    }

    /// Runs every thread until `stop` is dropped or sent on, taking each
    /// configuration that arrives on `reloads`.
    pub fn run_reloading(&self, stop: &Receiver<()>, commands: Receiver<SetpointCommand>, reloads: &Receiver<Reload>) {
        std::thread::scope(|s| {
            spawn(s, "combiner".into(), move || {
                let (telegrams_tx, telegrams) = bounded::<Delivery>(TELEGRAM_QUEUE);
                let mut threads = Threads {
                    gateway: self,
                    scope: s,
                    telegrams: telegrams_tx,
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                };
                threads.start(self.config, self.board);
                let mut core = Core::new(Arc::new(self.config.clone()), self.board, Instant::now());
                self.combine(&mut core, &mut threads, &telegrams, commands, reloads, stop);
            });
        });
    }

    fn combine(
        &self,
        core: &mut Core,
        threads: &mut Threads<'_, '_>,
        telegrams: &Receiver<Delivery>,
        mut commands: Receiver<SetpointCommand>,
        reloads: &Receiver<Reload>,
        stop: &Receiver<()>,
    ) {
        let started = Instant::now();
        let ticker = tick(TICK);
        let mut reloads = reloads.clone();
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
                    Ok(d) => core.on_delivery(d),
                    Err(_) => return,
                },
                recv(commands) -> c => match c {
                    Ok(c) => core.apply(c, Instant::now()),
                    Err(_) => {
                        commands = never();
                        None
                    }
                },
                recv(reloads) -> r => match r {
                    Ok(r) => reload(core, threads, &mut commands, r),
                    Err(_) => {
                        reloads = never();
                        None
                    }
                },
                recv(ticker) -> _ => core.on_tick(Instant::now()),
            };
            if let Some(combined) = made {
                core.distribute(&combined, self.board, threads.mailboxes());
            }
            if shutdown::requested(stop) {
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
        core.apply(c, Instant::now());
    }
    *commands = r.commands.clone();
    threads.reconfigure(&r);
    core.reconfigure(r)
}

/// One battery input's running thread.
struct InputThread<'scope> {
    config: InputConfig,
    /// Dropped to stop the thread.
    stop: Sender<()>,
    handle: ScopedJoinHandle<'scope, ()>,
}

/// One inverter output's running thread.
struct OutputThread<'scope> {
    /// What the thread was started with: a reload that changes it restarts it.
    config: OutputConfig,
    max_age: Duration,
    mailbox: Arc<Mailbox>,
    stop: Sender<()>,
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
}

impl<'scope, 'env> Threads<'scope, 'env> {
    fn start(&mut self, config: &Config, board: &StatusBoard) {
        let max_age = max_age(config);
        for (i, c) in config.inputs.iter().enumerate() {
            let thread = self.spawn_input(c.clone(), board.input_slot(i));
            self.inputs.push(thread);
        }
        for (j, c) in config.outputs.iter().enumerate() {
            let slot = board.output_slot(j);
            let thread = self.spawn_output(c.clone(), max_age, slot, Arc::default(), Carried::default());
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
        let max_age = max_age(config);
        let mut old_inputs: Vec<Option<InputThread>> = self.inputs.drain(..).map(Some).collect();
        let mut old_outputs: Vec<Option<OutputThread>> = self.outputs.drain(..).map(Some).collect();
        let keep_inputs = kept(&mapping.inputs, &config.inputs, &old_inputs, |t, c| t.config == *c);
        let keep_outputs = kept(&mapping.outputs, &config.outputs, &old_outputs, |t, c| {
            t.config == *c && t.max_age == max_age
        });
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
                    self.spawn_output(c.clone(), max_age, board.output_slot(j), mailbox, carried)
                }
            };
            self.outputs.push(thread);
        }
    }

    fn spawn_input(&self, config: InputConfig, slot: Arc<Slot<InputStatus>>) -> InputThread<'scope> {
        let (stop, stop_rx) = shutdown::channel();
        let (gateway, telegrams) = (self.gateway, self.telegrams.clone());
        let name = format!("in-{}", config.can_if);
        let thread_config = config.clone();
        let handle = spawn(self.scope, name, move || {
            let heartbeat = || (gateway.heartbeat)(Worker::Input(slot.id));
            Input {
                config: &thread_config,
                opener: gateway.opener,
                telegrams: &telegrams,
                slot: &slot,
                stop: &stop_rx,
                opened: gateway.opened,
                heartbeat: &heartbeat,
            }
            .run()
        });
        InputThread { config, stop, handle }
    }

    fn spawn_output(
        &self,
        config: OutputConfig,
        max_age: Duration,
        slot: Arc<Slot<OutputStatus>>,
        mailbox: Arc<Mailbox>,
        carried: Carried,
    ) -> OutputThread<'scope> {
        let (stop, stop_rx) = shutdown::channel();
        let gateway = self.gateway;
        let name = format!("out-{}", config.can_if);
        let (thread_config, thread_mailbox) = (config.clone(), mailbox.clone());
        let handle = spawn(self.scope, name, move || {
            let heartbeat = || (gateway.heartbeat)(Worker::Output(slot.id));
            Output {
                config: &thread_config,
                opener: gateway.opener,
                mailbox: &thread_mailbox,
                slot: &slot,
                stop: &stop_rx,
                max_age,
                opened: gateway.opened,
                heartbeat: &heartbeat,
            }
            .run(carried)
        });
        OutputThread {
            config,
            max_age,
            mailbox,
            stop,
            handle,
        }
    }
}

/// How old a state may get in an output before it sends the safe state
/// instead: the combiner makes one at least every KEEPALIVE while an input
/// can still be fresh.
fn max_age(config: &Config) -> Duration {
    config.battery.stale_timeout + KEEPALIVE + Duration::from_secs(1)
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
    combiner: Combiner,
    inverter_setpoints: Vec<LimitSetpoints>,
    /// The slot id of each input, in configuration order.
    input_ids: Vec<usize>,
    watch: Watch,
}

impl Core {
    fn new(config: Arc<Config>, board: &StatusBoard, now: Instant) -> Core {
        let capacities: Vec<f64> = config.inputs.iter().map(|i| i.capacity_ah).collect();
        Core {
            combiner: Combiner::new(config.battery, &capacities, now),
            inverter_setpoints: vec![LimitSetpoints::default(); config.outputs.len()],
            input_ids: (0..board.input_count()).map(|i| board.input_slot(i).id).collect(),
            watch: Watch::new(config.inputs.len()),
            config,
        }
    }

    fn on_delivery(&mut self, d: Delivery) -> Option<Combined> {
        // A telegram from a battery that a reload has just removed is dropped.
        let index = self.input_ids.iter().position(|&id| id == d.input)?;
        self.combiner.on_telegram(index, d.telegram, d.at)
    }

    fn on_tick(&mut self, now: Instant) -> Option<Combined> {
        self.watch.log(&self.config, &self.combiner, now);
        let expired = (self.inverter_setpoints.iter_mut()).fold(false, |acc, s| s.expire(now) | acc);
        let made = self.combiner.on_tick(now);
        made.or(if expired { self.combiner.last().copied() } else { None })
    }

    fn apply(&mut self, command: SetpointCommand, now: Instant) -> Option<Combined> {
        apply(&mut self.combiner, &mut self.inverter_setpoints, command, now)
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
        let (setpoints, dropped) = setpoint::carry(&self.inverter_setpoints, &mapping.outputs, now);
        self.inverter_setpoints = setpoints;
        self.input_ids = (0..board.input_count()).map(|i| board.input_slot(i).id).collect();
        self.watch.remap(&mapping.inputs);
        let capacities: Vec<f64> = config.inputs.iter().map(|i| i.capacity_ah).collect();
        let made = (self.combiner).reconfigure(config.battery, &capacities, &mapping.inputs, now);
        self.config = config;
        let _ = done.try_send(dropped);
        made
    }

    fn distribute<'m>(&mut self, c: &Combined, board: &StatusBoard, mailboxes: impl Iterator<Item = &'m Mailbox>) {
        self.watch.state(c, self.config.inputs.len());
        let now = Instant::now();
        let outputs = self.config.outputs.iter().zip(mailboxes).zip(&self.inverter_setpoints);
        for ((output, mailbox), own) in outputs {
            mailbox.put(Shaped {
                state: c.state,
                battery: shape(c, &output.share, own, now),
                made_at: c.made_at,
            });
        }
        board.system(|s| {
            s.combined = Some(*c);
            s.setpoints = *self.combiner.setpoints();
            s.inverter_setpoints.clear();
            s.inverter_setpoints.extend_from_slice(&self.inverter_setpoints);
        });
    }
}

fn spawn<'scope, 'env, F, T>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    name: String,
    f: F,
) -> ScopedJoinHandle<'scope, T>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(s, f)
        .unwrap_or_else(|e| panic!("cannot start thread {name}: {e}"))
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
}

impl Watch {
    fn new(inputs: usize) -> Watch {
        Watch {
            fresh: vec![None; inputs],
            state: None,
        }
    }

    /// After a reload: what was logged follows each battery to its new place.
    fn remap(&mut self, from: &[Option<usize>]) {
        let old = std::mem::take(&mut self.fresh);
        self.fresh = from
            .iter()
            .map(|f| f.and_then(|o| old.get(o).copied().flatten()))
            .collect();
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
