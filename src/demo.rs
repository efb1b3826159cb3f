//! `bms-gateway demo`: the whole gateway on in-process virtual CAN buses, with
//! simulated batteries and inverters and a live status table. No hardware,
//! no configuration.
//!
//! The script repeats every minute: battery 2 goes silent from 20 s to 35 s
//! (degraded, then back), battery 1 raises a high-temperature warning from
//! 45 s to 52 s. With one battery, its silence shows the safe state.

use crate::can::virtual_bus::VirtualBus;
use crate::can::{CanOpener, CanPort};
use crate::codec::{self, Manufacturer, Message};
use crate::combine::{BatterySettings, InverterShare};
use crate::config::{Config, InputConfig, MqttConfig, OutputConfig, OutputMode};
use crate::gateway::{Fault, Gateway, Worker};
use crate::setpoint::SetpointCommand;
use crate::shutdown;
use crate::signals::Signal;
use crate::sim::{BatteryParams, InverterView, SimAlarms};
use crate::status::{LinkState, Snapshot, StatusBoard};
use crate::supervise::Supervision;
use crossbeam_channel::{Receiver, bounded, select, tick};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The demo's size and length.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    pub batteries: usize,
    pub inverters: usize,
    pub duration: Option<Duration>,
}

const CAPACITIES: [f64; 4] = [100.0, 200.0, 150.0, 50.0];
const SCRIPT_PERIOD: f64 = 60.0;

/// The gateway configuration the demo runs.
pub fn demo_config(batteries: usize, inverters: usize) -> Config {
    Config {
        gateway_activated: true,
        battery: BatterySettings {
            stale_timeout: Duration::from_secs(3),
            ..BatterySettings::default()
        },
        inputs: (1..=batteries)
            .map(|k| InputConfig {
                can_if: format!("bat{k}"),
                description: format!("Simulated battery {k}"),
                capacity_ah: CAPACITIES[(k - 1) % CAPACITIES.len()],
                poll_interval: None,
            })
            .collect(),
        outputs: (1..=inverters)
            .map(|j| OutputConfig {
                can_if: format!("inv{j}"),
                description: format!("Simulated inverter {j}"),
                share: InverterShare {
                    i_scaling: 1.0 / inverters as f64,
                    ..InverterShare::default()
                },
                push_min_delay: Duration::ZERO,
                // With two or more inverters the last one shows sync mode.
                mode: if j == inverters && inverters > 1 {
                    OutputMode::Sync {
                        interval: Duration::from_secs(1),
                    }
                } else {
                    OutputMode::Push
                },
                manufacturer: Manufacturer::new("PYLON").expect("valid name"),
            })
            .collect(),
        mqtt: MqttConfig {
            activated: false,
            ..MqttConfig::default()
        },
    }
}

fn battery_params(k: usize) -> BatteryParams {
    let k = k as f64;
    BatteryParams {
        soc: 55.0 + 10.0 * k,
        soh: 98.0 - k,
        voltage: 51.8 + 0.2 * k,
        current: -10.0 * k,
        temp: 22.0 + k,
        cvl: 53.2 + 0.2 * k,
        ccl: 100.0 + 50.0 * k,
        dcl: 150.0 + 50.0 * k,
        dvl: 45.0 + 0.5 * k,
        modules: 2 + k as u8,
        drift: true,
        ..BatteryParams::default()
    }
}

/// Whether battery `k` (0-based) of `n` talks at `t`, and its alarms.
fn script(k: usize, n: usize, t: f64) -> (bool, SimAlarms) {
    let phase = t % SCRIPT_PERIOD;
    // Battery 2 goes silent; with a single battery, that one (safe state).
    let quiet_one = if n > 1 { 1 } else { 0 };
    let silent = k == quiet_one && (20.0..35.0).contains(&phase);
    let mut alarms = SimAlarms::default();
    if k == 0 && (45.0..52.0).contains(&phase) {
        alarms.flags[2] = 0x08;
    }
    (!silent, alarms)
}

fn run_battery(k: usize, n: usize, port: &mut dyn CanPort, stop: &Receiver<()>, started: Instant) {
    let params = battery_params(k);
    let ticker = tick(Duration::from_secs(1));
    loop {
        let t = started.elapsed().as_secs_f64();
        let (talking, alarms) = script(k, n, t);
        if talking {
            for frame in params.burst(t, alarms) {
                let _ = port.write(&frame);
            }
        }
        select! {
            recv(stop) -> _ => return,
            recv(ticker) -> _ => {},
        }
    }
}

fn run_inverter(port: &mut dyn CanPort, sync: bool, view: &Mutex<InverterView>, stop: &Receiver<()>) {
    let mut next_poll = Instant::now();
    while !shutdown::requested(stop) {
        if sync && Instant::now() >= next_poll {
            next_poll += Duration::from_secs(1);
            let _ = port.write(&codec::encode(&Message::KeepAlive));
        }
        if let Ok(Some(frame)) = port.read(Duration::from_millis(100)) {
            view.lock().unwrap_or_else(|p| p.into_inner()).take(&frame);
        }
    }
}

/// Runs the demo until `--duration` ends or a stop signal arrives.
pub fn run(options: DemoOptions, signals: &Receiver<Signal>) -> Result<(), String> {
    let config = demo_config(options.batteries, options.inverters);
    let bus = VirtualBus::new();
    for name in config.interfaces() {
        bus.create(name);
    }
    let open = |name: &str| bus.open(name).map_err(|e| format!("virtual bus {name}: {e}"));
    let mut battery_ports: Vec<Box<dyn CanPort>> = config
        .inputs
        .iter()
        .map(|i| open(&i.can_if))
        .collect::<Result<_, _>>()?;
    let mut inverter_ports: Vec<Box<dyn CanPort>> = config
        .outputs
        .iter()
        .map(|o| open(&o.can_if))
        .collect::<Result<_, _>>()?;
    let views: Vec<Mutex<InverterView>> = config.outputs.iter().map(|_| Mutex::default()).collect();
    let board = StatusBoard::new(config.inputs.len(), config.outputs.len());
    let (stop_tx, stop) = shutdown::channel();
    let (_commands_tx, commands) = bounded::<SetpointCommand>(1);
    let started = Instant::now();
    // The demo is supervised like the daemon (READY, watchdog, injected
    // faults), so that the systemd integration can be tested without CAN.
    let supervision = Supervision::new(&config, &board);
    let gateway = Gateway {
        config: &config,
        opener: &bus,
        board: &board,
        opened: &|| supervision.opened(),
        heartbeat: &|w: Worker| supervision.heartbeat(w),
        fault: Fault::parse(std::env::var("BMS_GATEWAY_FAULT").ok().as_deref()),
    };
    std::thread::scope(|s| {
        let stop = &stop;
        s.spawn(|| gateway.run(stop, &commands));
        let n = battery_ports.len();
        for (k, port) in battery_ports.iter_mut().enumerate() {
            s.spawn(move || run_battery(k, n, port.as_mut(), stop, started));
        }
        for ((port, view), output) in inverter_ports.iter_mut().zip(&views).zip(&config.outputs) {
            let sync = matches!(output.mode, OutputMode::Sync { .. });
            s.spawn(move || run_inverter(port.as_mut(), sync, view, stop));
        }
        let screen = tick(Duration::from_secs(1));
        let watch = tick(Duration::from_millis(200));
        let deadline = options
            .duration
            .map_or(crossbeam_channel::never(), crossbeam_channel::after);
        let terminal = std::io::stdout().is_terminal();
        let mut events = Events::default();
        loop {
            select! {
                recv(signals) -> _ => break,
                recv(deadline) -> _ => break,
                recv(watch) -> _ => supervision.poll(Instant::now()),
                recv(screen) -> _ => {
                    let views: Vec<InverterView> = views.iter().map(|v| v.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect();
                    let snapshot = board.snapshot();
                    let now = Instant::now();
                    events.update(&config, &snapshot, started.elapsed(), now);
                    let mut table = render(&config, &snapshot, &views, started.elapsed(), now);
                    table.push_str(&events.render());
                    let mut out = std::io::stdout().lock();
                    if terminal {
                        let _ = write!(out, "\x1b[2J\x1b[H");
                    }
                    let _ = writeln!(out, "{table}");
                    let _ = out.flush();
                },
            }
        }
        crate::service::notify_stopping();
        drop(stop_tx);
    });
    Ok(())
}

/// What changed, as the demo's table shows it under "Events".
#[derive(Default)]
struct Events {
    lines: Vec<String>,
    fresh: Vec<bool>,
    state: Option<&'static str>,
}

impl Events {
    const KEEP: usize = 6;

    fn update(&mut self, config: &Config, snap: &Snapshot, elapsed: Duration, now: Instant) {
        let t = elapsed.as_secs();
        self.fresh.resize(snap.inputs.len(), false);
        for (i, st) in snap.inputs.iter().enumerate() {
            let fresh = st
                .last_telegram
                .is_some_and(|at| now.saturating_duration_since(at) <= config.battery.stale_timeout);
            if fresh != self.fresh[i] {
                let what = if fresh { "reporting" } else { "stale" };
                self.lines.push(format!("{t:>4} s  battery {} {what}", i + 1));
                self.fresh[i] = fresh;
            }
        }
        let state = snap.system.combined.map(|c| c.state.as_str());
        if state.is_some() && state != self.state {
            self.lines
                .push(format!("{t:>4} s  combined state: {}", state.unwrap_or("-")));
            self.state = state;
        }
        let excess = self.lines.len().saturating_sub(Self::KEEP);
        self.lines.drain(..excess);
    }

    fn render(&self) -> String {
        let mut s = String::from("\n\nEvents:\n");
        for line in &self.lines {
            let _ = writeln!(s, "  {line}");
        }
        s
    }
}

fn opt(v: Option<f64>, width: usize, decimals: usize) -> String {
    v.map_or(format!("{:>width$}", "-"), |x| format!("{x:>width$.decimals$}"))
}

/// The status table: each battery, the combined battery, each inverter as it
/// decoded the frames it received.
pub fn render(config: &Config, snap: &Snapshot, views: &[InverterView], elapsed: Duration, now: Instant) -> String {
    let mut s = String::new();
    let state = snap.system.combined.map_or("starting", |c| c.state.as_str());
    let _ = writeln!(
        s,
        "bms-gateway demo: {} batteries -> {} inverters, t = {:.0} s, state: {state}   (Ctrl-C to stop)\n",
        config.inputs.len(),
        config.outputs.len(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "BATTERY  IF     AH   LINK  ONLINE   SOC      V       I     T    CVL    CCL    DCL  FLAGS     TELEGRAMS"
    );
    for (i, (input, st)) in config.inputs.iter().zip(&snap.inputs).enumerate() {
        let fresh = st
            .last_telegram
            .is_some_and(|t| now.saturating_duration_since(t) <= config.battery.stale_timeout);
        let t = st.telegram.as_ref();
        let link = match st.link {
            LinkState::Up => "up",
            LinkState::Down(_) => "DOWN",
            LinkState::Opening => "...",
        };
        let f = t.map(|t| t.flags);
        let _ = writeln!(
            s,
            "{:<8} {:<5} {:>4}  {:<5} {:<6} {} {} {} {} {} {} {}  {}  {:>9}",
            i + 1,
            input.can_if,
            input.capacity_ah,
            link,
            if fresh { "yes" } else { "STALE" },
            opt(t.map(|t| t.soc.soc), 5, 0),
            opt(t.map(|t| t.measurements.v_avg), 6, 2),
            opt(t.map(|t| t.measurements.i_total), 7, 1),
            opt(t.map(|t| t.measurements.t_avg), 5, 1),
            opt(t.map(|t| t.limits.v_charge_cmd), 6, 1),
            opt(t.map(|t| t.limits.i_lim_charge), 6, 1),
            opt(t.map(|t| t.limits.i_lim_discharge), 6, 1),
            f.map_or("--------".into(), |f| format!(
                "{:02X}{:02X}{:02X}{:02X}",
                f.error_flags_1, f.error_flags_2, f.warning_flags_1, f.warning_flags_2
            )),
            st.telegrams
        );
    }
    if let Some(c) = snap.system.combined {
        let b = &c.battery;
        let _ = writeln!(
            s,
            "COMBINED {:<5} {:>4}  {:<5} {:<6} {} {} {} {} {} {} {}  {:02X}{:02X}{:02X}{:02X}",
            "",
            b.capacity_ah,
            "",
            format!("{}/{}", c.inputs_online, config.inputs.len()),
            opt(Some(b.soc), 5, 0),
            opt(Some(b.v_avg), 6, 2),
            opt(Some(b.i_total), 7, 1),
            opt(Some(b.t_avg), 5, 1),
            opt(Some(b.v_charge_cmd), 6, 1),
            opt(Some(b.i_lim_charge), 6, 1),
            opt(Some(b.i_lim_discharge), 6, 1),
            b.flags.error_flags_1,
            b.flags.error_flags_2,
            b.flags.warning_flags_1,
            b.flags.warning_flags_2
        );
    }
    let _ = writeln!(
        s,
        "\nINVERTER IF     MODE  SHARE   SOC      V       I           CVL    CCL    DCL  FLAGS  EN     FRAMES"
    );
    for (j, (output, view)) in config.outputs.iter().zip(views).enumerate() {
        let mode = match output.mode {
            OutputMode::Push => "push",
            OutputMode::Sync { .. } => "sync",
        };
        let l = view.limits();
        let f = view.flags();
        let r = view.requests();
        let _ = writeln!(
            s,
            "{:<8} {:<5}  {:<5} {:>5.2} {} {} {}       {} {} {}  {}  {:<5} {:>7}",
            j + 1,
            output.can_if,
            mode,
            output.share.i_scaling,
            opt(view.soc().map(|x| x.soc), 5, 0),
            opt(view.measurements().map(|m| m.v_avg), 6, 2),
            opt(view.measurements().map(|m| m.i_total), 7, 1),
            opt(l.map(|l| l.v_charge_cmd), 6, 1),
            opt(l.map(|l| l.i_lim_charge), 6, 1),
            opt(l.map(|l| l.i_lim_discharge), 6, 1),
            f.map_or("--------".into(), |f| format!(
                "{:02X}{:02X}{:02X}{:02X}",
                f.error_flags_1, f.error_flags_2, f.warning_flags_1, f.warning_flags_2
            )),
            r.map_or("-", |r| match (r.charge_enable, r.discharge_enable) {
                (true, true) => "C+D",
                (true, false) => "C",
                (false, true) => "D",
                (false, false) => "none",
            }),
            view.frames
        );
    }
    let _ = write!(
        s,
        "\nScript (every 60 s): battery 2 silent 20-35 s (degraded, or safe with one battery), battery 1 high-temperature warning 45-52 s."
    );
    s
}
