//! `bms-gateway demo`: the whole gateway on in-process virtual CAN buses, with
//! simulated batteries and inverters and a live status table. No hardware,
//! no configuration.
//!
//! The script repeats every minute: battery 2 goes silent from 20 s to 35 s
//! (degraded, then back), battery 1 raises a high-temperature warning from
//! 45 s to 52 s. With one battery, its silence shows the safe state. From 5 s
//! to 15 s battery 1's coldest cell is at 4 degC: the demo's charge derating
//! curve (bank policy, docs/combining.md) halves the charge limit, reason
//! `temperature`.
//!
//! The batteries' currents come from the plant model (`sim::ParallelBank`):
//! the inverters charge and discharge at a demanded power that swings every
//! two minutes, within the limits they receive, and the packs split it by
//! their internal resistance and state of charge. Battery 1 has the lowest
//! resistance for its size: it takes half the current with a quarter of the
//! limits, so the share limit holds it at its own limit, the others below.
//!
//! With three batteries or more, the last one is an RS485 pack on an
//! in-process serial link (crate::serial::pair), played by the simulated
//! pack of `sim-bms --serial` (the reference's US5000 capture, V7): the
//! demo shows a mixed bank, polled by the gateway's serial thread.
//!
//! With `--mqtt HOST[:PORT]` the demo also runs the MQTT thread against that
//! broker, Home Assistant discovery included, so that the whole integration
//! can be seen in one's own Home Assistant. It publishes under its own base
//! topic ([`DEMO_BASE_TOPIC`]) and TOPIC with a client id of its own, so it
//! never mixes with a real gateway on the same broker; `--remove` deletes
//! what it left there.

use crate::bank::PerKind;
use crate::can::virtual_bus::VirtualBus;
use crate::can::{CanOpener, CanPort};
use crate::codec::{self, Manufacturer, Message};
use crate::combine::{BatterySettings, InverterShare};
use crate::config::SerialInput;
use crate::config::{Config, HttpConfig, InputConfig, MqttConfig, OutputConfig, OutputMode, RecorderConfig};
use crate::dead_link::RecoverySettings;
use crate::events::Events;
use crate::frame::Frame;
use crate::gateway::{COMMAND_QUEUE, Fault, Gateway, Worker};
use crate::policy::{Curve, Policy};
use crate::profile::{Profile, SocWindow};
use crate::recorder::Recorder;
use crate::serial::pair::Pairs;
use crate::serial::sim_pack::SimPack;
use crate::setpoint::SetpointCommand;
use crate::shutdown;
use crate::signals::Signal;
use crate::sim::{BatteryParams, InverterView, PackModel, ParallelBank, SimAlarms, inverter_current};
use crate::status::{LinkState, Snapshot, StatusBoard};
use crate::supervise::Supervision;
use crate::sync::lock;
use crate::text_table::{Align, Table, number};
use crossbeam_channel::{Receiver, bounded, select, tick};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The demo's size and length.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub batteries: usize,
    pub inverters: usize,
    pub duration: Option<Duration>,
    /// `--mqtt`: publish to this broker too.
    pub mqtt: Option<DemoMqtt>,
}

/// How long `--mqtt` waits for the broker before giving up.
const PROBE_PATIENCE: Duration = Duration::from_secs(10);

/// The demo's base topic: not a real gateway's, so that both can share a
/// broker (and a Home Assistant).
pub const DEMO_BASE_TOPIC: &str = "bms_gateway_demo";

/// Where and how the demo publishes (`demo --mqtt`).
#[derive(Debug, Clone, PartialEq)]
pub struct DemoMqtt {
    pub broker: String,
    pub port: u16,
    /// `--username`.
    pub username: Option<String>,
    /// `--password-file`.
    pub password_file: Option<PathBuf>,
    /// `--control`: accept setpoints (Home Assistant's number entities).
    pub control: bool,
}

impl DemoMqtt {
    /// `HOST`, `HOST:PORT`, or `[IPv6]:PORT`; the port defaults to 1883.
    pub fn parse_broker(s: &str) -> Result<(String, u16), String> {
        let bad = || format!("--mqtt {s:?}: expected HOST or HOST:PORT (e.g. 192.168.1.10:1883)");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else {
            match s.split_once(':') {
                Some((host, port)) if !port.contains(':') => (host, Some(port)),
                Some(_) => return Err(format!("{}; write an IPv6 address as [ADDRESS]:PORT", bad())),
                None => (s, None),
            }
        };
        let port = match port {
            None => 1883,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok((host.to_string(), port))
    }

    /// The demo's MQTT settings.
    pub fn config(&self) -> MqttConfig {
        MqttConfig {
            activated: true,
            broker: self.broker.clone(),
            port: self.port,
            topic: format!("tele/{DEMO_BASE_TOPIC}/state"),
            interval: Duration::from_secs(2),
            base_topic: DEMO_BASE_TOPIC.into(),
            // The process id keeps two demos on one machine apart too.
            client_id: Some(format!("bms-gateway-demo-{}", std::process::id())),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            control_activated: self.control,
            ..MqttConfig::default()
        }
    }
}

/// Removes what a demo left on the broker (its retained discovery, status
/// and setpoints); how many messages there were.
pub fn remove(mqtt: &DemoMqtt) -> Result<usize, String> {
    let config = Config {
        mqtt: mqtt.config(),
        ..demo_config(1, 1)
    };
    crate::mqtt::remove::retained(&config)
}

const CAPACITIES: [f64; 4] = [100.0, 200.0, 150.0, 50.0];
/// Internal resistances (ohm): battery 1 is the one that takes more.
const RESISTANCES: [f64; 4] = [0.006, 0.012, 0.012, 0.02];
/// The inverters together want up to this much power (W), + = charging,
/// swinging over DEMAND_PERIOD seconds.
const DEMAND_W: f64 = 7000.0;
const DEMAND_PERIOD: f64 = 120.0;
const SCRIPT_PERIOD: f64 = 60.0;
/// The demo's charge derating: 0.2 at 0 degC up to 1 at 10 degC (LFP cells
/// must not be charged hard when cold).
const DEMO_DERATING: [(f64, f64); 2] = [(0.0, 0.2), (10.0, 1.0)];

/// The gateway configuration the demo runs.
pub fn demo_config(batteries: usize, inverters: usize) -> Config {
    Config {
        gateway_activated: true,
        battery: BatterySettings {
            stale_timeout: Duration::from_secs(3),
            policy: Policy {
                derating: PerKind {
                    charge: Some(Curve::new(&DEMO_DERATING).expect("a valid curve")),
                    discharge: None,
                },
                ..Policy::default()
            },
            ..BatterySettings::default()
        },
        inputs: (1..=batteries)
            .map(|k| match k == batteries && batteries >= RS485_FROM {
                true => rs485_input(k),
                false => InputConfig {
                    can_if: format!("bat{k}"),
                    description: format!("Simulated battery {k}"),
                    capacity_ah: CAPACITIES[(k - 1) % CAPACITIES.len()],
                    poll_interval: None,
                    serial: None,
                },
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
                manufacturer: Manufacturer::new(demo_profile(j).default_manufacturer()).expect("valid name"),
                profile: demo_profile(j),
                soc_window: SocWindow::default(),
                cvl_ramp: 0.0,
                inverter_timeout: Some(Duration::from_secs(10)),
                voltage_unit: demo_profile(j).default_voltage_unit(),
            })
            .collect(),
        mqtt: MqttConfig {
            activated: false,
            ..MqttConfig::default()
        },
        state_dir: None,
        http: HttpConfig::default(),
        recorder: RecorderConfig {
            seconds: 0,
            ..RecorderConfig::default()
        },
        can: RecoverySettings::default(),
    }
}

/// The demo shows two dialects: odd inverters speak Pylontech, even ones
/// Victron's (another name, hi-res SOC, 0x35A, 0x372, 0x379...).
fn demo_profile(j: usize) -> Profile {
    if j.is_multiple_of(2) {
        Profile::Victron
    } else {
        Profile::Pylon
    }
}

/// Battery `k`'s fixed values; current, voltage and SOC come from the plant.
/// Limits of half a C, so battery 1's are the smallest but one.
fn battery_params(k: usize) -> BatteryParams {
    let capacity = CAPACITIES[k % CAPACITIES.len()];
    let k = k as f64;
    BatteryParams {
        soh: 98.0 - k,
        temp: normal_temperature(k as usize),
        cvl: 53.2 + 0.2 * k,
        ccl: 0.5 * capacity,
        dcl: 0.5 * capacity,
        dvl: 45.0 + 0.5 * k,
        modules: 2 + k as u8,
        drift: false,
        ..BatteryParams::default()
    }
}

/// The demo's bank on one DC bus, at SOCs from 60 % up.
fn plant(n: usize) -> ParallelBank {
    ParallelBank {
        packs: (0..n)
            .map(|k| PackModel {
                capacity_ah: CAPACITIES[k % CAPACITIES.len()],
                resistance: RESISTANCES[k % RESISTANCES.len()],
                soc: 60.0 + 2.0 * k as f64,
            })
            .collect(),
    }
}

/// Battery `k`'s (0-based) temperature outside its cold spell.
fn normal_temperature(k: usize) -> f64 {
    22.0 + k as f64
}

/// Battery `k`'s temperature at `t`: battery 1 is at 8 degC (its coldest
/// cell at 4 degC) from 5 s to 15 s of each script period.
fn temperature(k: usize, t: f64) -> f64 {
    let cold = k == 0 && (5.0..15.0).contains(&(t % SCRIPT_PERIOD));
    if cold { 8.0 } else { normal_temperature(k) }
}

/// From this many batteries on, the last one is on RS485.
const RS485_FROM: usize = 3;
/// The in-process serial port of the demo's RS485 battery.
const RS485_PORT: &str = "/dev/demo-rs485";

/// The demo's RS485 battery: a US5000 (100 Ah) at address 2.
fn rs485_input(k: usize) -> InputConfig {
    let serial = SerialInput {
        port: RS485_PORT.into(),
        address: 2,
        baud: 115_200,
        protocol: crate::rs485::Protocol::Pylon,
        rs485_mode: false,
    };
    InputConfig {
        can_if: serial.name(),
        description: format!("Simulated RS485 battery {k}"),
        capacity_ah: 100.0,
        poll_interval: Some(InputConfig::SERIAL_POLL_INTERVAL),
        serial: Some(serial),
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

/// The bank: every second the inverters take their demand within the limits
/// they last received, the plant splits it, and each battery that talks
/// sends its burst. A silent battery still carries current: only its BMS
/// is quiet.
fn run_bank(ports: &mut [Box<dyn CanPort>], views: &[Mutex<InverterView>], stop: &Receiver<()>, started: Instant) {
    let n = ports.len();
    let mut bank = plant(n);
    let mut params: Vec<BatteryParams> = (0..n).map(battery_params).collect();
    let mut currents = vec![0.0; n];
    let ticker = tick(Duration::from_secs(1));
    loop {
        let t = started.elapsed().as_secs_f64();
        let idle = bank.split(0.0, &mut currents);
        let demand = DEMAND_W * (std::f64::consts::TAU * t / DEMAND_PERIOD).sin() / views.len().max(1) as f64;
        let total: f64 = views
            .iter()
            .filter_map(|v| lock(v).limits())
            .map(|l| inverter_current(demand, idle, &l, 0.0))
            .sum();
        let bus = bank.split(total, &mut currents);
        bank.step(&currents, 1.0);
        for (k, port) in ports.iter_mut().enumerate() {
            let (talking, alarms) = script(k, n, t);
            let p = &mut params[k];
            (p.current, p.voltage, p.soc) = (currents[k], bus, bank.packs[k].soc);
            p.temp = temperature(k, t);
            if talking {
                for frame in p.burst(t, alarms) {
                    let _ = port.write(&frame);
                }
            }
        }
        select! {
            recv(stop) -> _ => return,
            recv(ticker) -> _ => {},
        }
    }
}

/// What a real inverter of `profile`'s kind sends on its own every second,
/// whatever the gateway's mode (reference/inverters.md, "Common ground"): a
/// Pylontech-protocol inverter its all-zero 0x305 keep-alive; a Victron GX
/// the 0x305 with its 0x307 ("VIC"). So the demo's inverters talk, as
/// real ones do, and the INVERTER-TIMEOUT watch sees them.
fn inverter_frames(profile: Profile) -> Vec<Frame> {
    let keepalive = codec::encode(&Message::KeepAlive);
    match profile {
        Profile::Victron => vec![
            keepalive,
            Frame::standard(0x307, &[0x12, 0x34, 0x56, 0x78, b'V', b'I', b'C', 0]),
        ],
        _ => vec![keepalive],
    }
}

fn run_inverter(port: &mut dyn CanPort, talk: &[Frame], view: &Mutex<InverterView>, stop: &Receiver<()>) {
    let mut next_talk = Instant::now();
    while !shutdown::requested(stop) {
        if Instant::now() >= next_talk {
            next_talk += Duration::from_secs(1);
            for frame in talk {
                let _ = port.write(frame);
            }
        }
        if let Ok(Some(frame)) = port.read(Duration::from_millis(100)) {
            lock(view).take(&frame);
        }
    }
}

/// Runs the demo until `--duration` ends or a stop signal arrives.
pub fn run(options: DemoOptions, signals: &Receiver<Signal>) -> Result<(), String> {
    let mut config = demo_config(options.batteries, options.inverters);
    if let Some(m) = &options.mqtt {
        config.mqtt = m.config();
        // A wrong address or login is said at once, not hidden behind the
        // table (which keeps the log off the terminal).
        crate::mqtt::connection::probe(&config, PROBE_PATIENCE)?;
    }
    let bus = VirtualBus::new();
    for name in config.interfaces() {
        bus.create(name);
    }
    let open = |name: &str| bus.open(name).map_err(|e| format!("virtual bus {name}: {e}"));
    let serial = Pairs::new();
    let rs485_pack = config
        .inputs
        .iter()
        .any(|i| i.serial.is_some())
        .then(|| serial.plug(RS485_PORT));
    let mut battery_ports: Vec<Box<dyn CanPort>> = config
        .inputs
        .iter()
        .filter(|i| i.serial.is_none())
        .map(|i| open(&i.can_if))
        .collect::<Result<_, _>>()?;
    let mut inverter_ports: Vec<Box<dyn CanPort>> = config
        .outputs
        .iter()
        .map(|o| open(&o.can_if))
        .collect::<Result<_, _>>()?;
    let views: Vec<Mutex<InverterView>> = config.outputs.iter().map(|_| Mutex::default()).collect();
    let board = StatusBoard::new(config.inputs.len(), config.outputs.len());
    // The demo keeps no recordings: its recorder is off.
    let (events, recorder) = (Events::default(), Recorder::default());
    let (stop_tx, stop) = shutdown::channel();
    let (commands_tx, commands) = bounded::<SetpointCommand>(COMMAND_QUEUE);
    let started = Instant::now();
    // The demo is supervised like the daemon (READY, watchdog, injected
    // faults), so that the systemd integration can be tested without CAN.
    let supervision = Supervision::new(&config, &board);
    let gateway = Gateway {
        config: &config,
        opener: &bus,
        serial: &serial,
        board: &board,
        events: &events,
        recorder: &recorder,
        opened: &|| supervision.opened(),
        heartbeat: &|w: Worker| supervision.heartbeat(w),
        heartbeat_every: supervision.heartbeat_every(),
        fault: Fault::parse(std::env::var("BMS_GATEWAY_FAULT").ok().as_deref()),
    };
    let server = serve_page(&config);
    let page = server.as_ref().map(|s| crate::http::url(s.local_addr()));
    std::thread::scope(|s| {
        let stop = &stop;
        s.spawn(|| gateway.run(stop, &commands));
        let (events, recorder) = (&events, &recorder);
        if let Some(server) = &server {
            let (config, board) = (&config, &board);
            s.spawn(move || server.run(config, board, events, recorder, stop));
        }
        if config.mqtt.activated {
            let (config, board, commands_tx) = (&config, &board, &commands_tx);
            s.spawn(move || crate::mqtt::run(config, board, events, commands_tx, stop));
        }
        if let Some(mut end) = rs485_pack {
            let pack = [SimPack::new(crate::rs485::Protocol::Pylon, 2)];
            s.spawn(move || {
                let _ = crate::serial::sim_pack::serve(&mut end, &pack, &|| stop.requested());
            });
        }
        let bank_views = &views;
        s.spawn(move || run_bank(&mut battery_ports, bank_views, stop, started));
        for ((port, view), output) in inverter_ports.iter_mut().zip(&views).zip(&config.outputs) {
            let talk = inverter_frames(output.profile);
            s.spawn(move || run_inverter(port.as_mut(), &talk, view, stop));
        }
        let screen = tick(Duration::from_secs(1));
        let watch = tick(Duration::from_millis(200));
        let deadline = options
            .duration
            .map_or(crossbeam_channel::never(), crossbeam_channel::after);
        let terminal = std::io::stdout().is_terminal();
        let started_wall = std::time::SystemTime::now();
        loop {
            select! {
                recv(signals) -> _ => break,
                recv(deadline) -> _ => break,
                recv(watch) -> _ => {
                    supervision.poll(Instant::now(), &board);
                }
                recv(screen) -> _ => {
                    let views: Vec<InverterView> = views.iter().map(|v| lock(v).clone()).collect();
                    let snapshot = board.snapshot();
                    let mut table = render(&config, &snapshot, &views, started.elapsed());
                    table.push_str(&render_events(&events.after(0), started_wall));
                    if let Some(url) = &page {
                        let _ = write!(table, "\n\nStatus page: {url}");
                    }
                    let mut out = std::io::stdout().lock();
                    if terminal {
                        let _ = write!(out, "\x1b[2J\x1b[H");
                    }
                    let _ = writeln!(out, "{table}");
                    let _ = out.flush();
                },
            }
        }
        crate::systemd::notify_stopping();
        drop(stop_tx);
    });
    Ok(())
}

/// The demo's status page: `[http] LISTEN` (127.0.0.1:8080), or any free
/// port when that one is taken (another gateway or demo is running).
fn serve_page(config: &Config) -> Option<crate::http::Server> {
    let wanted = config.http.listen;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    match crate::http::bind(wanted).or_else(|_| crate::http::bind(any)) {
        Ok(server) => Some(server),
        Err(e) => {
            log::warn!("demo: no status page, cannot listen on 127.0.0.1: {e}");
            None
        }
    }
}

/// How many events the table shows.
const EVENTS_SHOWN: usize = 6;

/// The last events under the table, in seconds since the demo started.
fn render_events(events: &[crate::events::Event], started: std::time::SystemTime) -> String {
    let t0 = crate::clock::unix(started);
    let mut s = String::from("\n\nEvents:\n");
    for e in &events[events.len().saturating_sub(EVENTS_SHOWN)..] {
        let _ = writeln!(s, "  {:>4.0} s  {}", e.timestamp - t0, e.message);
    }
    s
}

/// The four flag bytes as the frames carry them, in hex.
fn flag_bytes(f: &crate::codec::Flags) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}",
        f.error_flags_1, f.error_flags_2, f.warning_flags_1, f.warning_flags_2
    )
}

/// The status table: each battery, the combined battery, each inverter as it
/// decoded the frames it received.
pub fn render(config: &Config, snap: &Snapshot, views: &[InverterView], elapsed: Duration) -> String {
    let mut s = String::new();
    let state = snap.system.combined.map_or("starting", |c| c.state.as_str());
    let _ = writeln!(
        s,
        "bms-gateway demo: {} batteries -> {} inverters, t = {:.0} s, state: {state}   (Ctrl-C to stop)\n",
        config.inputs.len(),
        config.outputs.len(),
        elapsed.as_secs_f64()
    );
    s.push_str(&battery_table(config, snap).render());
    if let Some(c) = &snap.system.combined {
        s.push_str(&limits_line(config, c));
    }
    s.push('\n');
    s.push_str(&inverter_table(config, views).render());
    let _ = write!(
        s,
        "\nScript (every 60 s): battery 2 silent 20-35 s (degraded, or safe with one battery), battery 1 high-temperature warning 45-52 s.\nThe inverters want up to {DEMAND_W} W, charging then discharging every {DEMAND_PERIOD} s; battery 1 takes the most current for its limits (lowest resistance): the share limit holds it at its own limit."
    );
    let m = &config.mqtt;
    if m.activated {
        let mut login = String::new();
        if let Some(user) = &m.username {
            let _ = write!(login, " --username {user}");
        }
        if let Some(file) = &m.password_file {
            let _ = write!(login, " --password-file {}", file.display());
        }
        let _ = write!(
            s,
            "\nMQTT: {}:{} under {}/ and {} (Home Assistant: {}/), remote control {}. Remove it from the broker with: bms-gateway demo --mqtt {}:{}{login} --remove",
            m.broker,
            m.port,
            m.base_topic,
            m.topic,
            m.ha_discovery_prefix,
            if m.control_activated { "on" } else { "off" },
            m.broker,
            m.port
        );
    }
    s
}

/// Each battery's row and the combined battery's.
fn battery_table(config: &Config, snap: &Snapshot) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("BATTERY", Left),
        ("IF", Left),
        ("AH", Right),
        ("LINK", Left),
        ("ONLINE", Left),
        ("SOC", Right),
        ("V", Right),
        ("I", Right),
        ("T", Right),
        ("CVL", Right),
        ("CCL", Right),
        ("DCL", Right),
        ("FLAGS", Left),
        ("TELEGRAMS", Right),
        ("SHARE", Right),
        ("OVER", Left),
    ]);
    let discharging = snap.system.combined.is_some_and(|c| c.battery.i_total < 0.0);
    for (i, (input, st)) in config.inputs.iter().zip(&snap.inputs).enumerate() {
        let fresh = snap.system.inputs_fresh.get(i).copied().unwrap_or(false);
        let t = st.telegram.as_ref();
        let link = match st.link {
            LinkState::Up => "up",
            LinkState::Down(_) => "DOWN",
            LinkState::Opening => "...",
        };
        let pack = snap.system.packs.get(i).filter(|p| p.fresh);
        let share = pack.map(|p| if discharging { p.share.discharge } else { p.share.charge });
        table.row(vec![
            (i + 1).to_string(),
            input.can_if.clone(),
            input.capacity_ah.to_string(),
            link.into(),
            if fresh { "yes" } else { "STALE" }.into(),
            number(t.map(|t| t.soc.soc), 0),
            number(t.map(|t| t.measurements.v_avg), 2),
            number(t.map(|t| t.measurements.i_total), 1),
            number(t.map(|t| t.measurements.t_avg), 1),
            number(t.map(|t| t.limits.v_charge_cmd), 1),
            number(t.map(|t| t.limits.i_lim_charge), 1),
            number(t.map(|t| t.limits.i_lim_discharge), 1),
            t.map_or("--------".into(), |t| flag_bytes(&t.flags)),
            st.telegrams.to_string(),
            number(share, 2),
            match pack.map(|p| p.over_current) {
                Some(true) => "OVER",
                Some(false) => "-",
                None => "",
            }
            .into(),
        ]);
    }
    if let Some(c) = snap.system.combined {
        let b = &c.battery;
        table.row(vec![
            "COMBINED".into(),
            String::new(),
            b.capacity_ah.to_string(),
            String::new(),
            format!("{}/{}", c.inputs_online, config.inputs.len()),
            number(Some(b.soc), 0),
            number(Some(b.v_avg), 2),
            number(Some(b.i_total), 1),
            number(Some(b.t_avg), 1),
            number(Some(b.v_charge_cmd), 1),
            number(Some(b.i_lim_charge), 1),
            number(Some(b.i_lim_discharge), 1),
            flag_bytes(&b.flags),
        ]);
    }
    table
}

/// Which rule sets the bank's limits, and whether an inverter overshoots.
fn limits_line(config: &Config, c: &crate::combine::Combined) -> String {
    let why = |l: &crate::bank::Limit| {
        let battery = l.battery.map_or(String::new(), |i| format!(", battery {}", i + 1));
        format!("{:.1} A ({}{battery})", l.value, l.reason.as_str())
    };
    let overshoot = match (c.overshoot.charge, c.overshoot.discharge) {
        (false, false) => "none",
        (true, false) => "CHARGE",
        (false, true) => "DISCHARGE",
        (true, true) => "BOTH",
    };
    format!(
        "LIMITS   ({} mode) charge {}, discharge {}; inverter overshoot: {overshoot}\n",
        config.battery.bank.mode.as_str(),
        why(&c.limits.charge),
        why(&c.limits.discharge)
    )
}

/// Each inverter as it decoded the frames it received.
fn inverter_table(config: &Config, views: &[InverterView]) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("INVERTER", Left),
        ("IF", Left),
        ("MODE/PROFILE", Left),
        ("SHARE", Right),
        ("SOC", Right),
        ("V", Right),
        ("I", Right),
        ("CVL", Right),
        ("CCL", Right),
        ("DCL", Right),
        ("FLAGS", Left),
        ("EN", Left),
        ("FRAMES", Right),
    ]);
    for (j, (output, view)) in config.outputs.iter().zip(views).enumerate() {
        let mode = match output.mode {
            OutputMode::Push => format!("push {}", output.profile.name()),
            OutputMode::Sync { .. } => format!("sync {}", output.profile.name()),
        };
        let l = view.limits();
        let enabled = view
            .requests()
            .map_or("-", |r| match (r.charge_enable, r.discharge_enable) {
                (true, true) => "C+D",
                (true, false) => "C",
                (false, true) => "D",
                (false, false) => "none",
            });
        table.row(vec![
            (j + 1).to_string(),
            output.can_if.clone(),
            mode,
            format!("{:.2}", output.share.i_scaling),
            number(view.soc().map(|x| x.soc), 0),
            number(view.measurements().map(|m| m.v_avg), 2),
            number(view.measurements().map(|m| m.i_total), 1),
            number(l.map(|l| l.v_charge_cmd), 1),
            number(l.map(|l| l.i_lim_charge), 1),
            number(l.map(|l| l.i_lim_discharge), 1),
            view.flags().map_or("--------".into(), |f| flag_bytes(&f)),
            enabled.into(),
            view.frames.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn battery_1s_cold_spell_halves_its_charge_limit_in_every_script_period() {
        // Cells 4 degC below the pack: 8 - 4 = 4 degC, factor 0.2 + 0.8 x 0.4 = 0.52.
        assert_eq!(
            (temperature(0, 4.9), temperature(0, 5.0), temperature(0, 65.0)),
            (22.0, 8.0, 8.0)
        );
        assert_eq!((temperature(0, 15.0), temperature(1, 10.0)), (22.0, 23.0));
        let curve = demo_config(3, 2)
            .battery
            .policy
            .derating
            .charge
            .expect("a charge curve");
        assert!((curve.factor_at(8.0 - 4.0) - 0.52).abs() < 1e-12);
    }

    #[test]
    fn broker_addresses() {
        let p = DemoMqtt::parse_broker;
        assert_eq!(p("ha.lan"), Ok(("ha.lan".to_string(), 1883)));
        assert_eq!(p("192.168.1.10:1884"), Ok(("192.168.1.10".to_string(), 1884)));
        assert_eq!(p("[::1]:1885"), Ok(("::1".to_string(), 1885)));
        assert_eq!(p("[fe80::2]"), Ok(("fe80::2".to_string(), 1883)));
        for bad in [
            "",
            ":1883",
            "host:",
            "host:0",
            "host:70000",
            "host:x",
            "::1",
            "[::1",
            "[::1]x",
        ] {
            let e = p(bad).expect_err(bad);
            assert!(e.starts_with("--mqtt"), "{e}");
        }
    }

    #[test]
    fn the_demo_never_uses_a_real_gateways_topics_or_client_id() {
        let m = DemoMqtt {
            broker: "ha.lan".into(),
            port: 1883,
            username: Some("demo".into()),
            password_file: Some("/run/pw".into()),
            control: true,
        };
        let c = m.config();
        let real = MqttConfig::default();
        assert_eq!(c.base_topic, "bms_gateway_demo");
        assert_eq!(c.topic, "tele/bms_gateway_demo/state");
        assert_ne!(c.topic, real.topic);
        let id = c.client_id.clone().unwrap();
        assert!(id.starts_with("bms-gateway-demo-"), "{id}");
        assert!(c.activated && c.ha_discovery && c.control_activated);
        assert_eq!((c.broker.as_str(), c.port), ("ha.lan", 1883));
        assert_eq!(c.username.as_deref(), Some("demo"));
        assert_eq!(c.password_file, Some(PathBuf::from("/run/pw")));
        assert_eq!(c.ha_discovery_prefix, real.ha_discovery_prefix);
        // The table says how to remove it again, with the same login.
        let config = Config {
            mqtt: c,
            ..demo_config(1, 1)
        };
        let table = render(&config, &Snapshot::default(), &[], Duration::ZERO);
        assert!(
            table.contains("bms-gateway demo --mqtt ha.lan:1883 --username demo --password-file /run/pw --remove"),
            "{table}"
        );
    }
}
