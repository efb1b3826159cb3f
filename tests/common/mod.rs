//! A test rig: the real gateway threads on the in-process virtual bus, with
//! batteries fed by test threads and inverters read by test threads. The
//! batteries burst as a real BMS does (one burst a second, frames 80 ms
//! apart, each battery in another phase) unless a test asks for every frame
//! at once ([`Timing::AtOnce`], for floods and fast state changes).

#![allow(dead_code)]

use bms_gateway::can::virtual_bus::VirtualBus;
use bms_gateway::can::{CanOpener, CanPort};
use bms_gateway::codec::{self, Message};
use bms_gateway::config::{self, Config};
use bms_gateway::events::Events;
use bms_gateway::frame::{CanId, Frame};
use bms_gateway::gateway::{COMMAND_QUEUE, Fault, Gateway, Reload};
use bms_gateway::recorder::Recorder;
use bms_gateway::reload::Mapping;
use bms_gateway::setpoint::{Dropped, SetpointCommand};
use bms_gateway::shutdown;
use bms_gateway::sim::{BatteryParams, InverterView, SimAlarms};
use bms_gateway::status::StatusBoard;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One simulated battery, fed by its own thread.
pub struct Battery {
    pub params: Arc<Mutex<BatteryParams>>,
    pub alarms: Arc<Mutex<SimAlarms>>,
    pub silent: Arc<AtomicBool>,
    /// When each burst sent began and ended (its first and last frame).
    pub bursts: Arc<Mutex<Vec<(Instant, Instant)>>>,
}

/// What one inverter received: every frame with its arrival time.
#[derive(Default)]
pub struct Received {
    pub frames: Vec<(Instant, Frame)>,
    pub view: InverterView,
}

pub struct Rig {
    pub config: Config,
    pub bus: VirtualBus,
    pub board: Arc<StatusBoard>,
    /// The gateway's events (a reload keeps them, as the daemon does).
    pub events: Arc<Events>,
    /// The flight recorder, on when the configuration has a STATE-DIR.
    pub recorder: Recorder,
    /// In start order (a reload adds at the end; see `battery_named`).
    pub batteries: Vec<Battery>,
    /// Per inverter interface, in start order (a reload adds at the end;
    /// see `inverter_named`).
    pub received: Vec<Arc<Mutex<Received>>>,
    /// The interface of each entry of `batteries` and of `received`.
    battery_names: Vec<String>,
    inverter_names: Vec<String>,
    /// How many CAN threads the gateway has started (each calls `opened` once).
    pub threads_started: Arc<AtomicUsize>,
    reloads: Sender<Reload>,
    pub commands: Sender<SetpointCommand>,
    /// Ports the test writes to inverters' buses (e.g. 0x305 in sync mode).
    pub inverter_tx: Vec<Mutex<Box<dyn CanPort>>>,
    timing: Timing,
    stop: Option<shutdown::StopSender>,
    stop_rx: shutdown::Stop,
    threads: Vec<JoinHandle<()>>,
}

/// How the simulated batteries send their frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// As a real BMS: one burst every [`PERIOD`], its frames [`SPACING`]
    /// apart; battery i (from 0) starts `(i + 1) x` [`PHASE_STEP`] into the
    /// period, so the batteries burst in different phases (and a test can
    /// silence them before their first burst).
    Real,
    /// Every frame of a burst at once, every [`BURST`]: for floods.
    AtOnce,
    /// No battery thread: the test writes the batteries' frames itself.
    ByTest,
}

/// A real BMS's burst period.
pub const PERIOD: Duration = Duration::from_secs(1);
/// The time between two frames of a burst, as a real BMS spaces them.
pub const SPACING: Duration = Duration::from_millis(80);
/// How far apart in phase the batteries start.
pub const PHASE_STEP: Duration = Duration::from_millis(370);
/// Burst period of [`Timing::AtOnce`].
pub const BURST: Duration = Duration::from_millis(200);

impl Rig {
    /// Starts the gateway with `toml` (a complete configuration) and one
    /// battery thread per input with `params[i]`. Interfaces named in
    /// `missing` are not created on the bus.
    pub fn start(toml: &str, params: Vec<BatteryParams>, missing: &[&str]) -> Rig {
        Rig::start_with(Timing::Real, toml, params, missing)
    }

    /// [`Rig::start`] with the batteries sending with `timing`.
    pub fn start_with(timing: Timing, toml: &str, params: Vec<BatteryParams>, missing: &[&str]) -> Rig {
        let config = config::parse(toml).unwrap_or_else(|p| panic!("test config: {p:#?}"));
        assert_eq!(params.len(), config.inputs.len());
        let bus = VirtualBus::new();
        for name in config.interfaces() {
            if !missing.contains(&name) {
                bus.create(name);
            }
        }
        // The flight recorder is on when the configuration has a STATE-DIR.
        let recorder = Recorder::new(&config, config.state_dir.as_deref());
        let events = Arc::new(Events::default());
        let board = Arc::new(StatusBoard::new(config.inputs.len(), config.outputs.len()));
        let (stop_tx, stop_rx) = shutdown::channel();
        let (commands, commands_rx) = bounded(COMMAND_QUEUE);
        let (reloads, reloads_rx) = bounded(1);
        let threads_started = Arc::new(AtomicUsize::new(0));
        let mut rig = Rig {
            config: config.clone(),
            bus: bus.clone(),
            board: board.clone(),
            events: events.clone(),
            recorder: recorder.clone(),
            batteries: Vec::new(),
            received: Vec::new(),
            battery_names: Vec::new(),
            inverter_names: Vec::new(),
            threads_started: threads_started.clone(),
            reloads,
            commands,
            inverter_tx: Vec::new(),
            timing,
            stop: Some(stop_tx),
            stop_rx: stop_rx.clone(),
            threads: Vec::new(),
        };
        for (i, p) in params.into_iter().enumerate() {
            rig.add_battery(&config.inputs[i].can_if, p);
        }
        for o in &config.outputs {
            rig.add_inverter(&o.can_if);
        }
        let started = threads_started;
        let (recorder_events, recorder_stop, dumps) = (events.clone(), stop_rx.clone(), recorder.clone());
        rig.threads
            .push(std::thread::spawn(move || dumps.run(&recorder_events, &recorder_stop)));
        rig.threads.push(std::thread::spawn(move || {
            let opener = recorder.opener(&bus);
            let gateway = Gateway {
                config: &config,
                opener: &opener,
                serial: &bms_gateway::serial::device::Devices,
                board: &board,
                events: &events,
                recorder: &recorder,
                opened: &|| {
                    started.fetch_add(1, Ordering::SeqCst);
                },
                heartbeat: &|_| {},
                heartbeat_every: bms_gateway::gateway::HEARTBEAT,
                fault: Fault::None,
            };
            gateway.run_reloading(&stop_rx, commands_rx, &reloads_rx);
        }));
        rig
    }

    /// A battery thread for interface `name`, the next one in phase.
    fn add_battery(&mut self, name: &str, p: BatteryParams) {
        let i = self.batteries.len();
        let battery = Battery {
            params: Arc::new(Mutex::new(p)),
            alarms: Arc::default(),
            silent: Arc::default(),
            bursts: Arc::default(),
        };
        let sim = Sim {
            params: battery.params.clone(),
            alarms: battery.alarms.clone(),
            silent: battery.silent.clone(),
            bursts: battery.bursts.clone(),
            timing: self.timing,
            phase: Duration::from_nanos((PHASE_STEP.as_nanos() * (i as u128 + 1) % PERIOD.as_nanos()) as u64),
        };
        let (bus, stop, name2) = (self.bus.clone(), self.stop_rx.clone(), name.to_string());
        self.threads
            .push(std::thread::spawn(move || sim.feed(&bus, &name2, &stop)));
        self.batteries.push(battery);
        self.battery_names.push(name.into());
    }

    fn add_inverter(&mut self, name: &str) {
        let r: Arc<Mutex<Received>> = Arc::default();
        let (bus, stop, name2, r2) = (self.bus.clone(), self.stop_rx.clone(), name.to_string(), r.clone());
        self.threads
            .push(std::thread::spawn(move || listen(&bus, &name2, &r2, &stop)));
        self.received.push(r);
        if let Ok(p) = self.bus.open(name) {
            self.inverter_tx.push(Mutex::new(p));
        }
        self.inverter_names.push(name.into());
    }

    /// Reloads the running gateway with `toml`, as SIGHUP does: interfaces
    /// it adds are created on the bus, with a battery thread fed with
    /// `params[name]` for each added battery. Returns the setpoints dropped.
    pub fn reload(&mut self, toml: &str, params: Vec<(&str, BatteryParams)>) -> Vec<Dropped> {
        let new = config::parse(toml).unwrap_or_else(|p| panic!("test config: {p:#?}"));
        for name in new.interfaces() {
            self.bus.create(name);
        }
        for (name, p) in params {
            self.add_battery(name, p);
        }
        for o in &new.outputs {
            if !self.inverter_names.contains(&o.can_if) {
                self.add_inverter(&o.can_if);
            }
        }
        let mapping = Mapping::between(&self.config, &new);
        let board = Arc::new(self.board.reconfigure(&mapping));
        let (commands, commands_rx) = bounded(COMMAND_QUEUE);
        let (done, dropped) = bounded(1);
        let reload = Reload {
            config: Arc::new(new.clone()),
            mapping,
            board: board.clone(),
            commands: commands_rx,
            done,
        };
        self.reloads.send(reload).expect("gateway running");
        let dropped = dropped.recv_timeout(Duration::from_secs(5)).expect("reload applied");
        self.config = new;
        self.board = board;
        self.commands = commands;
        dropped
    }

    /// The index in `batteries` of the battery on interface `name`.
    pub fn battery_named(&self, name: &str) -> usize {
        self.battery_names
            .iter()
            .position(|n| n == name)
            .expect("battery started")
    }

    /// The index in `received` of the inverter on interface `name`.
    pub fn inverter_named(&self, name: &str) -> usize {
        self.inverter_names
            .iter()
            .position(|n| n == name)
            .expect("inverter started")
    }

    /// When inverter `j` received each frame set (its 0x359), as its own
    /// listening thread saw them.
    pub fn frame_sets(&self, j: usize) -> Vec<Instant> {
        let r = self.received[j].lock().unwrap();
        r.frames
            .iter()
            .filter(|(_, f)| is_id(f, 0x359))
            .map(|(t, _)| *t)
            .collect()
    }

    /// The longest time inverter `j` went without a frame set between
    /// `from` and `to` (including the edges).
    pub fn longest_gap(&self, j: usize, from: Instant, to: Instant) -> Duration {
        let sets: Vec<Instant> = self
            .frame_sets(j)
            .into_iter()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        let mut edges = vec![from];
        edges.extend(sets);
        edges.push(to);
        edges.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    /// Waits up to `timeout` for `cond` on inverter `j`'s view; returns
    /// whether it came true.
    pub fn wait_for(&self, j: usize, timeout: Duration, cond: impl Fn(&InverterView) -> bool) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if cond(&self.received[j].lock().unwrap().view) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits up to `timeout` until inverter `j` has received `more` frame
    /// sets beyond the ones it had when called; returns whether it did.
    pub fn wait_frame_sets(&self, j: usize, more: usize, timeout: Duration) -> bool {
        let want = self.frame_sets(j).len() + more;
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.frame_sets(j).len() >= want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits up to `timeout` for the board to show these inputs fresh.
    pub fn wait_for_fresh(&self, timeout: Duration, want: &[bool]) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.board.snapshot().system.inputs_fresh == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn view(&self, j: usize) -> InverterView {
        self.received[j].lock().unwrap().view.clone()
    }

    /// Forgets what inverter `j` received so far.
    pub fn clear(&self, j: usize) {
        *self.received[j].lock().unwrap() = Received::default();
    }

    pub fn frames(&self, j: usize) -> Vec<(Instant, Frame)> {
        self.received[j].lock().unwrap().frames.clone()
    }

    pub fn set_silent(&self, i: usize, silent: bool) {
        self.batteries[i].silent.store(silent, Ordering::SeqCst);
    }

    pub fn stop(mut self) {
        self.stop.take();
        for t in self.threads.drain(..) {
            t.join().expect("thread panicked");
        }
    }
}

impl Rig {
    /// Frame sets the interlock refused, per inverter: 0 in every test
    /// (spec 14), checked when the rig is dropped.
    pub fn interlock_trips(&self) -> Vec<u64> {
        self.board
            .snapshot()
            .outputs
            .iter()
            .map(|o| o.interlock_trips)
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.take();
        if !std::thread::panicking() {
            let trips = self.interlock_trips();
            let events = self.events.after(0);
            let refused: Vec<&str> = (events.iter())
                .filter(|e| e.kind == bms_gateway::events::Kind::Interlock)
                .map(|e| e.message.as_str())
                .take(3)
                .collect();
            assert!(
                trips.iter().all(|&n| n == 0) && refused.is_empty(),
                "interlock trips per inverter: {trips:?}: {refused:?}"
            );
        }
    }
}

/// What one battery thread sends, and how.
struct Sim {
    params: Arc<Mutex<BatteryParams>>,
    alarms: Arc<Mutex<SimAlarms>>,
    silent: Arc<AtomicBool>,
    bursts: Arc<Mutex<Vec<(Instant, Instant)>>>,
    timing: Timing,
    phase: Duration,
}

impl Sim {
    fn feed(&self, bus: &VirtualBus, name: &str, stop: &Receiver<()>) {
        let (period, spacing, phase) = match self.timing {
            Timing::Real => (PERIOD, SPACING, self.phase),
            Timing::AtOnce => (BURST, Duration::ZERO, BURST),
            Timing::ByTest => return,
        };
        let mut port: Option<Box<dyn CanPort>> = None;
        let started = Instant::now();
        // Bursts at fixed times, however long writing one took.
        let mut next = started + phase;
        loop {
            if shutdown::sleep(stop, next.saturating_duration_since(Instant::now())) {
                return;
            }
            next += period;
            if self.silent.load(Ordering::SeqCst) {
                continue;
            }
            if port.is_none() {
                port = bus.open(name).ok();
            }
            let Some(p) = port.as_mut() else { continue };
            // Before the values are read: a change made before this instant is in the burst.
            let first = Instant::now();
            let burst = self
                .params
                .lock()
                .unwrap()
                .burst(started.elapsed().as_secs_f64(), *self.alarms.lock().unwrap());
            for (k, f) in burst.iter().enumerate() {
                if k > 0 && !spacing.is_zero() && shutdown::sleep(stop, spacing) {
                    return;
                }
                if p.write(f).is_err() {
                    port = None;
                    break;
                }
            }
            self.bursts.lock().unwrap().push((first, Instant::now()));
        }
    }
}

fn listen(bus: &VirtualBus, name: &str, received: &Mutex<Received>, stop: &Receiver<()>) {
    let mut port: Option<Box<dyn CanPort>> = None;
    while !shutdown::requested(stop) {
        if port.is_none() {
            port = bus.open(name).ok();
            if port.is_none() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        match port.as_mut().unwrap().read(Duration::from_millis(50)) {
            Ok(Some(f)) => {
                let mut r = received.lock().unwrap();
                r.frames.push((Instant::now(), f));
                r.view.take(&f);
            }
            Ok(None) => {}
            Err(_) => port = None,
        }
    }
}

/// A battery for the rigs: SOH 100 %, DVL 45 V, 2 modules, no cell data,
/// no drift; name the values a test needs on top of it:
/// `BatteryParams { cvl: 53.2, ccl: 100.0, ..plain_battery() }`.
pub fn plain_battery() -> BatteryParams {
    BatteryParams {
        soh: 100.0,
        dvl: 45.0,
        modules: 2,
        cells: false,
        drift: false,
        ..BatteryParams::default()
    }
}

pub fn keepalive() -> Frame {
    codec::encode(&Message::KeepAlive)
}

pub fn is_id(f: &Frame, id: u16) -> bool {
    f.id == CanId::Standard(id)
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}
