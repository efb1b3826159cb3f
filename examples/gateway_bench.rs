//! The gateway benchmark and soak rig: the real gateway threads
//! ([`Gateway::run`]) with N simulated batteries and M inverters, on the
//! in-process virtual bus or (with `--socketcan`) on real vcan interfaces.
//!
//! One scale per process, so that peak RSS belongs to that scale:
//!
//! ```text
//! gateway_bench --scale 8x4 [--secs 5] [--rounds 2000] [--socketcan] [--header]
//! gateway_bench --soak SECS [--scale 8x4]
//! ```
//!
//! Phases (definitions in BENCHMARKS.md):
//! 1. latency: lockstep rounds. Each round every battery sends one burst whose
//!    SOC carries the round's tag; the round's start is the moment the rig
//!    writes the last 0x356 (the frame that completes the last telegram of the
//!    round); its end at inverter j is the arrival of the 0x373 that closes the
//!    first transmission carrying the tag. The next round starts when every
//!    inverter has it.
//! 2. throughput: every battery floods its burst as fast as the gateway takes
//!    frames (at most WINDOW frames in flight per input, so the virtual bus
//!    never drops), for `--secs` after a warm-up. CPU (getrusage, and the
//!    gateway's own threads), heap allocations (a counting global allocator)
//!    and frames are counted over that window.
//! 3. correctness: the inverters' last frames are checked against values
//!    computed here, independently of the combiner, by the rules of docs/combining.md.
//!
//! The soak mode floods at the chosen scale for SECS with faults on a 30 s
//! schedule (a battery silent, a battery interface and an inverter interface
//! removed and re-added, and, when mosquitto is installed, the MQTT thread's
//! broker on 127.0.0.1 stopped and restarted), prints RSS every 5 s, checks
//! the degraded state while a battery is silent, the outputs and the MQTT
//! telemetry at the end; it exits 1 on any mismatch. The benchmark proper
//! runs without MQTT: it measures the CAN path.

use bms_gateway::bank::LimitMode;
use bms_gateway::can::socket::SocketCan;
use bms_gateway::can::virtual_bus::VirtualBus;
use bms_gateway::can::{CanOpener, CanPort};
use bms_gateway::codec::{self, Message};
use bms_gateway::combine::SystemState;
use bms_gateway::config::{Config, OutputMode};
use bms_gateway::demo::demo_config;
use bms_gateway::events::Events;
use bms_gateway::frame::{CanId, Frame};
use bms_gateway::gateway::{COMMAND_QUEUE, Fault, Gateway};
use bms_gateway::profile::Profile;
use bms_gateway::recorder::Recorder;
use bms_gateway::setpoint::SetpointCommand;
use bms_gateway::shutdown;
use bms_gateway::sim::{BatteryParams, SimAlarms};
use bms_gateway::status::{LinkState, StatusBoard};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- allocations

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

// ------------------------------------------------------------ CPU and memory

/// User + system CPU of the whole process.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Context switches of the whole process, voluntary + involuntary.
fn context_switches() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (ru.ru_nvcsw + ru.ru_nivcsw) as u64
}

/// A `/proc/self/status` memory line (VmRSS, VmHWM), bytes.
fn status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Peak resident set size (VmHWM; ru_maxrss where /proc is missing), bytes.
fn peak_rss() -> u64 {
    status_kb("VmHWM:").unwrap_or_else(|| {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        ru.ru_maxrss as u64 * 1024
    })
}

/// Current resident set size (VmRSS), bytes.
fn rss() -> u64 {
    status_kb("VmRSS:").unwrap_or(0)
}

/// CPU time of the gateway's own threads, by kind: inputs (`in-*`), outputs
/// (`out-*`) and the combiner, through each thread's CPU clock. The rig's
/// feeders and listeners are left out, unlike in getrusage.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadsCpu {
    inputs: Duration,
    outputs: Duration,
    combiner: Duration,
}

impl ThreadsCpu {
    fn total(&self) -> Duration {
        self.inputs + self.outputs + self.combiner
    }

    fn since(&self, before: &ThreadsCpu) -> ThreadsCpu {
        ThreadsCpu {
            inputs: self.inputs.saturating_sub(before.inputs),
            outputs: self.outputs.saturating_sub(before.outputs),
            combiner: self.combiner.saturating_sub(before.combiner),
        }
    }
}

fn gateway_threads_cpu() -> ThreadsCpu {
    let mut cpu = ThreadsCpu::default();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return cpu;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let slot = match comm.trim() {
            c if c.starts_with("in-") => &mut cpu.inputs,
            c if c.starts_with("out-") => &mut cpu.outputs,
            "combiner" => &mut cpu.combiner,
            _ => continue,
        };
        // The kernel's per-thread CPU clock id: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED).
        let clock = ((!(tid as u32)) << 3 | 6) as libc::clockid_t;
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
            *slot += Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    cpu
}

// ------------------------------------------------------------------- options

#[derive(Debug, Clone)]
struct Options {
    inputs: usize,
    outputs: usize,
    secs: f64,
    rounds: usize,
    socketcan: bool,
    soak: Option<f64>,
    header: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        inputs: 8,
        outputs: 4,
        secs: 5.0,
        rounds: 2000,
        socketcan: false,
        soak: None,
        header: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--scale" => {
                let v = value("--scale")?;
                let (n, m) = v.split_once('x').ok_or("--scale NxM")?;
                o.inputs = n.parse().map_err(|_| "--scale NxM")?;
                o.outputs = m.parse().map_err(|_| "--scale NxM")?;
            }
            "--secs" => o.secs = value("--secs")?.parse().map_err(|_| "--secs SECONDS")?,
            "--rounds" => o.rounds = value("--rounds")?.parse().map_err(|_| "--rounds N")?,
            "--soak" => o.soak = Some(value("--soak")?.parse().map_err(|_| "--soak SECONDS")?),
            "--socketcan" => o.socketcan = true,
            "--header" => o.header = true,
            // Passed by `cargo bench`; nothing to do.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.inputs == 0 || o.outputs == 0 {
        return Err("at least one input and one output".into());
    }
    Ok(o)
}

// -------------------------------------------------------------- the batteries

/// Frames in flight per input before its feeder waits: the virtual bus holds
/// 1024 per port; a SocketCAN socket's default receive buffer a few hundred.
const WINDOW: u64 = 256;
const WINDOW_SOCKETCAN: u64 = 64;

/// Battery `k`'s parameters (0-based): all different, so that every combining
/// rule shows in the result; constant (no drift), so that the expected output
/// is exact.
fn params(k: usize) -> BatteryParams {
    let k = k as f64;
    BatteryParams {
        soc: 40.0 + (k * 7.0) % 50.0,
        soh: 99.0 - k % 10.0,
        voltage: 51.0 + 0.1 * (k % 10.0),
        current: -5.0 - 2.5 * (k % 8.0),
        temp: 20.0 + k % 15.0,
        cvl: 53.0 + 0.1 * (k % 6.0),
        ccl: 50.0 + 10.0 * (k % 5.0),
        dcl: 60.0 + 10.0 * (k % 5.0),
        dvl: 44.0 + 0.5 * (k % 4.0),
        modules: 2 + (k as u8 % 4),
        cells: true,
        drift: false,
        ..BatteryParams::default()
    }
}

/// Battery `k`'s burst with the optional frames first and 0x356 last, so that
/// the last frame written completes the telegram.
fn burst(p: &BatteryParams) -> Vec<Frame> {
    let mut frames = p.burst(0.0, SimAlarms::default());
    let key = |f: &Frame| match f.id.raw() as u16 {
        codec::ID_REQUESTS | codec::ID_MANUFACTURER | codec::ID_CELLS => 0,
        codec::ID_MEASUREMENTS => 2,
        _ => 1,
    };
    frames.sort_by_key(key);
    frames
}

/// The gateway configuration: `demo_config`, with every output in push mode
/// without delay (the fastest PUSH-MIN-DELAY allows).
fn config(n: usize, m: usize) -> Config {
    let mut c = demo_config(n, m);
    for o in &mut c.outputs {
        o.mode = OutputMode::Push;
        o.push_min_delay = Duration::ZERO;
    }
    c
}

/// Frames the gateway has taken from input `i` (its own counter: frames a
/// bus dropped are not in it).
fn taken(board: &StatusBoard, i: usize) -> u64 {
    board.input(i, |s| s.frames)
}

struct Feeder {
    silent: AtomicBool,
    /// Frames in flight before the feeder waits.
    window: u64,
    /// The bus may drop frames without telling (SocketCAN).
    lossy: bool,
}

/// Floods input `i` with `frames` until `stop`, keeping at most WINDOW frames
/// in flight; reopens the port when the interface goes away.
fn flood(
    opener: &dyn CanOpener,
    name: &str,
    i: usize,
    frames: &[Frame],
    board: &StatusBoard,
    me: &Feeder,
    stop: &Receiver<()>,
) {
    let window = me.window;
    let mut port: Option<Box<dyn CanPort>> = None;
    let mut written = 0u64;
    // The board counts frames taken since the start; ours count from now on.
    let base = taken(board, i);
    let mut next = 0usize;
    let mut progress = (taken(board, i), Instant::now());
    while !shutdown::requested(stop) {
        if me.silent.load(Ordering::Relaxed) {
            port = None;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let Some(p) = port.as_mut() else {
            // Not before the gateway's own port is open: frames written to
            // an interface nobody reads are gone.
            if board.input(i, |s| s.link == LinkState::Up) {
                port = opener.open(name).ok();
            }
            if port.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            // After a gap the gateway may have lost what was in flight.
            written = taken(board, i) - base;
            continue;
        };
        let now_taken = taken(board, i);
        let in_flight = written.saturating_sub(now_taken - base);
        if now_taken != progress.0 {
            progress = (now_taken, Instant::now());
        }
        if in_flight >= window {
            // Frames written while the gateway's port is closed (at start,
            // after an interface came back) are lost without a trace, and
            // a socket's buffer can drop silently: when nothing is taken for
            // a while, what is in flight counts as lost. Long enough on the
            // virtual bus that a gateway thread merely starved of CPU is not
            // taken for a loss (that would overfill its queue: counted drops).
            let patience = if me.lossy { 500 } else { 1000 };
            if progress.1.elapsed() > Duration::from_millis(patience) {
                written = now_taken - base;
            }
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        for _ in 0..(window - in_flight).min(64) {
            if p.write(&frames[next]).is_err() {
                port = None;
                break;
            }
            next = (next + 1) % frames.len();
            written += 1;
        }
    }
}

// -------------------------------------------------------------- the inverters

/// What one inverter's listener has seen.
struct Seen {
    /// Latest frame of each ID 0x350..0x37F.
    latest: Mutex<[Option<Frame>; 0x30]>,
    frames: AtomicU64,
    /// The SOC tag the latency phase waits for (0: none).
    want: AtomicU32,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            latest: Mutex::new([None; 0x30]),
            frames: AtomicU64::new(0),
            want: AtomicU32::new(0),
        }
    }
}

/// Reads inverter `j`'s interface until `stop`; reports `(j, tag, arrival)`
/// when a transmission carrying the wanted SOC tag ends (its 0x373).
fn listen(
    opener: &dyn CanOpener,
    name: &str,
    j: usize,
    seen: &Seen,
    done: &Sender<(usize, u32, Instant)>,
    stop: &Receiver<()>,
) {
    let mut port: Option<Box<dyn CanPort>> = None;
    let mut tagged = 0u32;
    while !shutdown::requested(stop) {
        let Some(p) = port.as_mut() else {
            port = opener.open(name).ok();
            if port.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        let frame = match p.read(Duration::from_millis(50)) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(_) => {
                port = None;
                continue;
            }
        };
        let at = Instant::now();
        seen.frames.fetch_add(1, Ordering::Relaxed);
        let CanId::Standard(id) = frame.id else { continue };
        if (0x350..0x380).contains(&id) {
            seen.latest.lock().unwrap()[usize::from(id - 0x350)] = Some(frame);
        }
        let want = seen.want.load(Ordering::Relaxed);
        if want == 0 {
            continue;
        }
        match id {
            codec::ID_SOC => tagged = u32::from(frame.data().first().copied().unwrap_or(0)),
            codec::ID_CELLS if tagged == want => {
                tagged = 0;
                let _ = done.send((j, want, at));
            }
            _ => {}
        }
    }
}

// --------------------------------------------------------- expected outputs

/// What inverter `j` of `m` should be shown when `fresh` batteries are fresh,
/// by the rules of docs/combining.md, computed here without the combiner.
struct Expected {
    cvl: f64,
    dvl: f64,
    ccl: f64,
    dcl: f64,
    soc: f64,
    soh: f64,
    v: f64,
    i: f64,
    t: f64,
    flags: [u8; 5],
    v_cell_min: f64,
    v_cell_max: f64,
}

fn expected(config: &Config, fresh: &[usize], j: usize, degraded: bool) -> Expected {
    let caps: Vec<f64> = fresh.iter().map(|&k| config.inputs[k].capacity_ah).collect();
    let total: f64 = caps.iter().sum();
    let ps: Vec<BatteryParams> = fresh.iter().map(|&k| params(k)).collect();
    let avg = |f: fn(&BatteryParams) -> f64| ps.iter().zip(&caps).map(|(p, c)| f(p) * c).sum::<f64>() / total;
    let out = &config.outputs[j];
    let bat = &config.battery;
    let mut ccl_total = ps.iter().map(|p| p.ccl).sum::<f64>().min(bat.i_lim_charge);
    let mut dcl_total = ps.iter().map(|p| p.dcl).sum::<f64>().min(bat.i_lim_discharge);
    if bat.bank.mode == LimitMode::Share {
        // Every battery discharges at a constant current: settled, the
        // discharge shares are I_k / sum of I; charging is never measured,
        // so the charge shares are the capacity shares c_k / sum of c.
        let current: f64 = ps.iter().map(|p| p.current).sum();
        for (p, c) in ps.iter().zip(&caps) {
            ccl_total = ccl_total.min(p.ccl * total / c);
            dcl_total = dcl_total.min(p.dcl * current / p.current);
        }
    }
    let modules = ps.iter().fold(0u8, |a, p| a.saturating_add(p.modules));
    let cell = |p: &BatteryParams| (p.voltage / 15.0).clamp(2.5, 3.65);
    Expected {
        cvl: ps.iter().map(|p| p.cvl).fold(f64::INFINITY, f64::min),
        dvl: ps.iter().map(|p| p.dvl).fold(f64::NEG_INFINITY, f64::max),
        ccl: (ccl_total * out.share.i_scaling).min(out.share.i_lim_charge),
        dcl: (dcl_total * out.share.i_scaling).min(out.share.i_lim_discharge),
        soc: avg(|p| p.soc),
        soh: avg(|p| p.soh),
        v: avg(|p| p.voltage),
        i: (ps.iter().map(|p| p.current).sum::<f64>() * bat.i_tot_scaling + bat.i_tot_offset) * out.share.i_scaling
            + out.share.i_offset,
        t: avg(|p| p.temp),
        flags: [0, 0, 0, if degraded { 0x08 } else { 0 }, modules],
        v_cell_min: ps.iter().map(|p| cell(p) - 0.012).fold(f64::INFINITY, f64::min),
        v_cell_max: ps.iter().map(|p| cell(p) + 0.013).fold(f64::NEG_INFINITY, f64::max),
    }
}

/// Compares an inverter's last frames with `e`, as its `profile` lays
/// them out (victron sends no 0x359 or 0x35C but 0x35A; spec 9); returns
/// the mismatches.
fn check(seen: &Seen, e: &Expected, profile: Profile) -> Vec<String> {
    let latest = *seen.latest.lock().unwrap();
    let get = |id: u16| latest[usize::from(id - 0x350)].and_then(|f| codec::decode(&f).ok());
    let mut bad = Vec::new();
    // Each value within half a unit of its field (the encoder rounds).
    fn near(bad: &mut Vec<String>, name: &str, got: f64, want: f64, unit: f64) {
        if (got - want).abs() > unit / 2.0 + 1e-9 {
            bad.push(format!("{name}: got {got}, expected {want:.4}"));
        }
    }
    // A current limit is rounded down to 0.1 A (spec 4): exactly that.
    fn limit(bad: &mut Vec<String>, name: &str, got: f64, want: f64) {
        let wire = (want * 10.0 + 1e-6).floor() / 10.0;
        if (got - wire).abs() > 1e-9 {
            bad.push(format!(
                "{name}: got {got}, expected {wire:.1} ({want:.4} rounded down)"
            ));
        }
    }
    match get(codec::ID_LIMITS) {
        Some(Message::Limits(l)) => {
            near(&mut bad, "v_charge_cmd", l.v_charge_cmd, e.cvl, 0.1);
            limit(&mut bad, "i_lim_charge", l.i_lim_charge, e.ccl);
            limit(&mut bad, "i_lim_discharge", l.i_lim_discharge, e.dcl);
            near(
                &mut bad,
                "v_discharge_min",
                l.v_discharge_min.unwrap_or(0.0),
                e.dvl,
                0.1,
            );
        }
        other => bad.push(format!("0x351: {other:?}")),
    }
    match get(codec::ID_SOC) {
        Some(Message::StateOfCharge(s)) => {
            near(&mut bad, "soc", s.soc, e.soc, 1.0);
            near(&mut bad, "soh", s.soh, e.soh, 1.0);
        }
        other => bad.push(format!("0x355: {other:?}")),
    }
    match get(codec::ID_MEASUREMENTS) {
        Some(Message::Measurements(m)) => {
            near(&mut bad, "v_avg", m.v_avg, e.v, 0.01);
            near(&mut bad, "i_total", m.i_total, e.i, 0.1);
            near(&mut bad, "t_avg", m.t_avg, e.t, 0.1);
        }
        other => bad.push(format!("0x356: {other:?}")),
    }
    if profile == Profile::Victron {
        match get(codec::ID_SMA_ALARMS) {
            Some(Message::SmaAlarms(_)) => {}
            other => bad.push(format!("0x35A: {other:?}")),
        }
        for id in [codec::ID_FLAGS, codec::ID_REQUESTS] {
            if latest[usize::from(id - 0x350)].is_some() {
                bad.push(format!("0x{id:03X} sent, which the victron profile does not define"));
            }
        }
        return check_cells(&latest, e, bad);
    }
    match get(codec::ID_FLAGS) {
        Some(Message::Flags(f)) => {
            let got = [
                f.error_flags_1,
                f.error_flags_2,
                f.warning_flags_1,
                f.warning_flags_2,
                f.n_modules,
            ];
            if got != e.flags {
                bad.push(format!("0x359: got {got:?}, expected {:?}", e.flags));
            }
        }
        other => bad.push(format!("0x359: {other:?}")),
    }
    match get(codec::ID_REQUESTS) {
        Some(Message::Requests(r)) if r.charge_enable && r.discharge_enable => {}
        other => bad.push(format!("0x35C: {other:?}")),
    }
    check_cells(&latest, e, bad)
}

/// 0x373 (every profile here sends it when the batteries do).
fn check_cells(latest: &[Option<Frame>; 0x30], e: &Expected, mut bad: Vec<String>) -> Vec<String> {
    let cells = latest[usize::from(codec::ID_CELLS - 0x350)].and_then(|f| codec::decode(&f).ok());
    match cells {
        Some(Message::Cells(c)) => {
            for (name, got, want) in [
                ("v_cell_min", c.v_cell_min, e.v_cell_min),
                ("v_cell_max", c.v_cell_max, e.v_cell_max),
            ] {
                if (got - want).abs() > 0.0005 + 1e-9 {
                    bad.push(format!("{name}: got {got}, expected {want:.4}"));
                }
            }
        }
        other => bad.push(format!("0x373: {other:?}")),
    }
    bad
}

// -------------------------------------------------------------------- the rig

struct Rig {
    config: Config,
    opener: Arc<dyn CanOpener>,
    bus: Option<VirtualBus>,
    board: Arc<StatusBoard>,
    seen: Vec<Arc<Seen>>,
    feeders: Vec<Arc<Feeder>>,
    done_rx: Receiver<(usize, u32, Instant)>,
    stop: Option<shutdown::StopSender>,
    flood_stop: Option<shutdown::StopSender>,
    threads: Vec<std::thread::JoinHandle<()>>,
    flood_threads: Vec<std::thread::JoinHandle<()>>,
    _commands: Sender<SetpointCommand>,
}

impl Rig {
    /// Starts the gateway threads (and the MQTT thread when `mqtt_port` is
    /// given: a broker on 127.0.0.1 at that port).
    fn start(o: &Options, mqtt_port: Option<u16>, mode: LimitMode) -> Rig {
        let mut config = config(o.inputs, o.outputs);
        config.battery.bank.mode = mode;
        if let Some(port) = mqtt_port {
            config.mqtt.activated = true;
            config.mqtt.broker = "127.0.0.1".into();
            config.mqtt.port = port;
            config.mqtt.interval = Duration::from_secs(1);
            config.mqtt.client_id = Some("gateway-bench-soak".into());
        }
        let (opener, bus): (Arc<dyn CanOpener>, Option<VirtualBus>) = if o.socketcan {
            (Arc::new(SocketCan), None)
        } else {
            let bus = VirtualBus::new();
            for name in config
                .inputs
                .iter()
                .map(|i| &i.can_if)
                .chain(config.outputs.iter().map(|o| &o.can_if))
            {
                bus.create(name);
            }
            (Arc::new(bus.clone()), Some(bus))
        };
        let board = Arc::new(StatusBoard::new(o.inputs, o.outputs));
        let events = Arc::new(Events::default());
        let (stop_tx, stop_rx) = shutdown::channel();
        let (commands, commands_rx) = bounded(COMMAND_QUEUE);
        let (done_tx, done_rx) = unbounded();
        let mut threads = Vec::new();
        let mut seen = Vec::new();
        for (j, out) in config.outputs.iter().enumerate() {
            let s: Arc<Seen> = Arc::default();
            let (opener, name, s2, done, stop) = (
                opener.clone(),
                out.can_if.clone(),
                s.clone(),
                done_tx.clone(),
                stop_rx.clone(),
            );
            threads.push(spawn(format!("listen-{j}"), move || {
                listen(&*opener, &name, j, &s2, &done, &stop)
            }));
            seen.push(s);
        }
        {
            let (config, opener, board, stop) = (config.clone(), opener.clone(), board.clone(), stop_rx.clone());
            let events = events.clone();
            threads.push(spawn("gateway".into(), move || {
                Gateway {
                    config: &config,
                    opener: &*opener,
                    serial: &bms_gateway::serial::device::Devices,
                    board: &board,
                    events: &events,
                    recorder: &Recorder::default(),
                    opened: &|| {},
                    heartbeat: &|_| {},
                    heartbeat_every: bms_gateway::gateway::HEARTBEAT,
                    fault: Fault::None,
                }
                .run(&stop, &commands_rx)
            }));
        }
        if config.mqtt.activated {
            let (config, board, commands, stop) = (config.clone(), board.clone(), commands.clone(), stop_rx.clone());
            let events = events.clone();
            threads.push(spawn("mqtt".into(), move || {
                bms_gateway::mqtt::run(&config, &board, &events, &commands, &stop)
            }));
        }
        let feeders = (0..o.inputs)
            .map(|_| {
                Arc::new(Feeder {
                    silent: AtomicBool::new(false),
                    window: if o.socketcan { WINDOW_SOCKETCAN } else { WINDOW },
                    lossy: o.socketcan,
                })
            })
            .collect();
        Rig {
            config,
            opener,
            bus,
            board,
            seen,
            feeders,
            done_rx,
            stop: Some(stop_tx),
            flood_stop: None,
            threads,
            flood_threads: Vec::new(),
            _commands: commands,
        }
    }

    fn start_flood(&mut self) {
        let (tx, rx) = shutdown::channel();
        for (i, input) in self.config.inputs.iter().enumerate() {
            let frames = burst(&params(i));
            let (opener, board, me, stop, name) = (
                self.opener.clone(),
                self.board.clone(),
                self.feeders[i].clone(),
                rx.clone(),
                input.can_if.clone(),
            );
            self.flood_threads.push(spawn(format!("feed-{i}"), move || {
                flood(&*opener, &name, i, &frames, &board, &me, &stop)
            }));
        }
        self.flood_stop = Some(tx);
    }

    fn stop_flood(&mut self) {
        self.flood_stop.take();
        for t in self.flood_threads.drain(..) {
            t.join().expect("feeder panicked");
        }
    }

    fn frames(&self) -> u64 {
        (0..self.config.inputs.len()).map(|i| taken(&self.board, i)).sum()
    }

    fn telegrams(&self) -> u64 {
        (0..self.config.inputs.len())
            .map(|i| self.board.input(i, |s| s.telegrams))
            .sum()
    }

    /// Telegrams dropped because the combiner's queue was full, and frames
    /// the virtual bus dropped (a receiver's queue full).
    fn drops(&self) -> (u64, u64) {
        (
            (0..self.config.inputs.len())
                .map(|i| self.board.input(i, |s| s.dropped))
                .sum(),
            self.bus.as_ref().map_or(0, |b| b.dropped()),
        )
    }

    fn state(&self) -> Option<SystemState> {
        self.board.system(|s| s.combined.map(|c| c.state))
    }

    /// Checks every inverter against the expected values; prints mismatches.
    fn verify(&self, fresh: &[usize], degraded: bool, when: &str) -> bool {
        let mut ok = true;
        for (j, seen) in self.seen.iter().enumerate() {
            let mut bad = check(
                seen,
                &expected(&self.config, fresh, j, degraded),
                self.config.outputs[j].profile,
            );
            // Spec 14: the interlock never trips in normal operation.
            let trips = self.board.snapshot().outputs[j].interlock_trips;
            if trips > 0 {
                bad.push(format!("{trips} frame sets refused by the interlock"));
            }
            for b in &bad {
                eprintln!("MISMATCH {when}: inverter {}: {b}", j + 1);
            }
            ok &= bad.is_empty();
        }
        ok
    }

    fn stop(mut self) {
        self.stop_flood();
        self.stop.take();
        for t in self.threads.drain(..) {
            t.join().expect("rig thread panicked");
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new().name(name).spawn(f).expect("spawn")
}

// ------------------------------------------------------------------ latency

struct Latency {
    samples: Vec<Duration>,
    /// Context switches (whole process) per measured round.
    switches_per_round: f64,
    missed: usize,
    rounds_per_s: f64,
}

/// Lockstep rounds; see the module doc.
fn latency(rig: &Rig, rounds: usize) -> Latency {
    let n = rig.config.inputs.len();
    let m = rig.config.outputs.len();
    let mut ports: Vec<Box<dyn CanPort>> = rig
        .config
        .inputs
        .iter()
        .map(|i| rig.opener.open(&i.can_if).expect("open battery port"))
        .collect();
    // Per tag (SOC 1..=100) and battery: its burst.
    let bursts: Vec<Vec<Vec<Frame>>> = (0..=100u32)
        .map(|tag| {
            (0..n)
                .map(|k| {
                    burst(&BatteryParams {
                        soc: f64::from(tag),
                        ..params(k)
                    })
                })
                .collect()
        })
        .collect();
    let warmup = 50;
    let mut samples = Vec::with_capacity(rounds * m);
    let mut missed = 0;
    let mut measured = Duration::ZERO;
    let mut switches = 0;
    for r in 0..warmup + rounds {
        if r == warmup {
            switches = context_switches();
        }
        let tag = (r % 100) as u32 + 1;
        for s in &rig.seen {
            s.want.store(tag, Ordering::Relaxed);
        }
        let mut start = Instant::now();
        for (k, port) in ports.iter_mut().enumerate() {
            let frames = &bursts[tag as usize][k];
            for (x, f) in frames.iter().enumerate() {
                if k == n - 1 && x == frames.len() - 1 {
                    start = Instant::now();
                }
                port.write(f).expect("write battery frame");
            }
        }
        let mut got = 0;
        let until = start + Duration::from_secs(2);
        while got < m {
            match rig.done_rx.recv_deadline(until) {
                Ok((_, t, at)) if t == tag => {
                    got += 1;
                    if r >= warmup {
                        samples.push(at.saturating_duration_since(start));
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if r >= warmup {
            missed += m - got;
            measured += start.elapsed();
        }
    }
    for s in &rig.seen {
        s.want.store(0, Ordering::Relaxed);
    }
    samples.sort();
    Latency {
        samples,
        switches_per_round: (context_switches() - switches) as f64 / rounds.max(1) as f64,
        missed,
        rounds_per_s: rounds as f64 / measured.as_secs_f64().max(1e-9),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ------------------------------------------------------------------- the run

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn header() {
    println!(
        "| scale | bus | input frames/s | telegrams/s combined | CPU us/frame (process) | CPU us/frame (gateway threads) | latency p50 us | p99 us | max us | peak RSS MB | allocs/telegram | dropped in the window: telegrams (queue) / frames (bus) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn bench(o: &Options) -> ExitCode {
    let config = config(o.inputs, o.outputs);
    if o.socketcan {
        let names = config
            .inputs
            .iter()
            .map(|i| &i.can_if)
            .chain(config.outputs.iter().map(|o| &o.can_if));
        for name in names {
            if let Err(e) = SocketCan.open(name) {
                eprintln!("gateway_bench: cannot open {name}: {e} (benches/system.sh creates the vcan interfaces)");
                return ExitCode::FAILURE;
            }
        }
    }
    // The default LIMIT-MODE, so that its cost is measured.
    let mut rig = Rig::start(o, None, LimitMode::Share);
    // Give the threads time to open their interfaces.
    std::thread::sleep(Duration::from_millis(300));
    let lat = latency(&rig, o.rounds);

    rig.start_flood();
    std::thread::sleep(Duration::from_secs(1));
    // The rig's own measuring (reading /proc) allocates: allocations are
    // counted strictly between the two samples of the other counters.
    let (f0, t0, d0, c0, g0, w0) = (
        rig.frames(),
        rig.telegrams(),
        rig.drops(),
        process_cpu(),
        gateway_threads_cpu(),
        Instant::now(),
    );
    let a0 = counting::allocations();
    std::thread::sleep(Duration::from_secs_f64(o.secs));
    let a1 = counting::allocations();
    let (f1, t1, d1, c1, g1, w1) = (
        rig.frames(),
        rig.telegrams(),
        rig.drops(),
        process_cpu(),
        gateway_threads_cpu(),
        Instant::now(),
    );
    rig.stop_flood();
    // One more round with nothing in flight, then check what the inverters show.
    std::thread::sleep(Duration::from_millis(300));
    let all: Vec<usize> = (0..o.inputs).collect();
    let correct = rig.verify(&all, false, "after the flood");
    rig.stop();

    let frames = (f1 - f0).max(1);
    let telegrams = (t1 - t0).max(1);
    let window = (w1 - w0).as_secs_f64();
    let (queue_dropped, bus_dropped) = (d1.0 - d0.0, d1.1 - d0.1);
    let g = g1.since(&g0);
    if o.header {
        header();
    }
    println!(
        "| {}x{} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {:.3} | {} / {} |",
        o.inputs,
        o.outputs,
        if o.socketcan { "vcan" } else { "virtual" },
        frames as f64 / window,
        (telegrams - queue_dropped.min(telegrams)) as f64 / window,
        us(c1 - c0) / frames as f64,
        us(g1.since(&g0).total()) / frames as f64,
        us(pct(&lat.samples, 0.5)),
        us(pct(&lat.samples, 0.99)),
        us(lat.samples.last().copied().unwrap_or_default()),
        peak_rss() as f64 / 1e6,
        (a1 - a0) as f64 / telegrams as f64,
        queue_dropped,
        bus_dropped,
    );
    eprintln!(
        "  {}x{}: CPU in the window: inputs {:.0} ms, outputs {:.0} ms, combiner {:.0} ms, rig (feeders, listeners) {:.0} ms, of {:.0} ms wall",
        o.inputs,
        o.outputs,
        g.inputs.as_secs_f64() * 1e3,
        g.outputs.as_secs_f64() * 1e3,
        g.combiner.as_secs_f64() * 1e3,
        (c1 - c0).saturating_sub(g.total()).as_secs_f64() * 1e3,
        window * 1e3
    );
    eprintln!(
        "  {}x{}: {} latency rounds ({:.0} rounds/s closed loop, {:.1} context switches per round, {} transmissions missed), {} telegrams and {} heap allocations in the window, outputs {}",
        o.inputs,
        o.outputs,
        o.rounds,
        lat.rounds_per_s,
        lat.switches_per_round,
        lat.missed,
        telegrams,
        a1 - a0,
        if correct { "correct" } else { "WRONG" }
    );
    if correct && lat.missed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// --------------------------------------------------------------------- soak

/// A Mosquitto broker on 127.0.0.1 for the soak's broker restarts.
struct Broker {
    port: u16,
    conf: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Broker {
    /// `None` when mosquitto is not installed.
    fn start() -> Option<Broker> {
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let conf = std::env::temp_dir().join(format!("gateway-bench-mosquitto-{}.conf", std::process::id()));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"),
        )
        .ok()?;
        let mut b = Broker {
            port,
            conf,
            child: None,
        };
        b.up(exe);
        Some(b)
    }

    fn up(&mut self, exe: &str) {
        self.child = std::process::Command::new(exe)
            .arg("-c")
            .arg(&self.conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        // Let it bind before anyone connects.
        std::thread::sleep(Duration::from_millis(200));
    }

    fn set_running(&mut self, running: bool) {
        match (running, self.child.is_some()) {
            (true, false) => self.up(if std::path::Path::new("/usr/sbin/mosquitto").exists() {
                "/usr/sbin/mosquitto"
            } else {
                "/usr/bin/mosquitto"
            }),
            (false, true) => {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            _ => {}
        }
    }

    /// Waits up to `timeout` for one telemetry message on `topic`.
    fn receives(&self, topic: &str, timeout: Duration) -> bool {
        std::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-t",
                topic,
                "-C",
                "1",
                "-W",
            ])
            .arg(timeout.as_secs().max(1).to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.set_running(false);
        let _ = std::fs::remove_file(&self.conf);
    }
}

/// The fault schedule, repeating every 30 s: (start, end) in seconds.
const SILENT: (f64, f64) = (3.0, 10.0);
const INPUT_GONE: (f64, f64) = (13.0, 16.0);
const OUTPUT_GONE: (f64, f64) = (19.0, 21.0);
const BROKER_DOWN: (f64, f64) = (23.0, 27.0);
const PERIOD: f64 = 30.0;

fn soak(o: &Options, secs: f64) -> ExitCode {
    if o.socketcan {
        eprintln!("--soak runs on the virtual bus only (it removes and re-adds interfaces)");
        return ExitCode::from(2);
    }
    let mut broker = Broker::start();
    // The soak checks the fault rules of section 4 against their sums; a
    // battery coming back would otherwise be checked while its limit is
    // still rising gradually.
    let mut rig = Rig::start(o, broker.as_ref().map(|b| b.port), LimitMode::Sum);
    let bus = rig.bus.clone().expect("virtual bus");
    let n = o.inputs;
    // Which battery goes silent and which interfaces vanish.
    let silent = 1 % n;
    let gone_input = 2 % n;
    let gone_output = 1 % o.outputs;
    println!(
        "soak {}x{} for {secs:.0} s: every {PERIOD:.0} s battery {} silent {:.0}-{:.0} s, {} removed {:.0}-{:.0} s, {} removed {:.0}-{:.0} s, {}",
        n,
        o.outputs,
        silent + 1,
        SILENT.0,
        SILENT.1,
        rig.config.inputs[gone_input].can_if,
        INPUT_GONE.0,
        INPUT_GONE.1,
        rig.config.outputs[gone_output].can_if,
        OUTPUT_GONE.0,
        OUTPUT_GONE.1,
        match &broker {
            Some(b) => format!(
                "MQTT broker (127.0.0.1:{}) stopped {:.0}-{:.0} s",
                b.port, BROKER_DOWN.0, BROKER_DOWN.1
            ),
            None => "no MQTT broker (mosquitto not installed)".into(),
        }
    );
    println!("|   t s | RSS MB | input frames/s | state    | inverter frames | bus drops |");
    rig.start_flood();
    let started = Instant::now();
    let mut ok = true;
    let mut rss_samples = Vec::new();
    let mut last_sample = (Instant::now(), rig.frames());
    let mut next_sample = 5.0;
    let mut degraded_checks = 0;
    let (mut input_removed, mut output_removed, mut checked_cycle) = (false, false, None);
    let tick = Duration::from_millis(50);
    while started.elapsed().as_secs_f64() < secs {
        let t = started.elapsed().as_secs_f64();
        let phase = t % PERIOD;
        let cycle = (t / PERIOD) as u64;
        let in_window = |w: (f64, f64)| (w.0..w.1).contains(&phase);
        rig.feeders[silent]
            .silent
            .store(n > 1 && in_window(SILENT), Ordering::Relaxed);
        let want_in_removed = in_window(INPUT_GONE);
        if want_in_removed != input_removed {
            if want_in_removed {
                bus.remove(&rig.config.inputs[gone_input].can_if);
            } else {
                bus.create(&rig.config.inputs[gone_input].can_if);
            }
            input_removed = want_in_removed;
        }
        let want_out_removed = in_window(OUTPUT_GONE);
        if want_out_removed != output_removed {
            if want_out_removed {
                bus.remove(&rig.config.outputs[gone_output].can_if);
            } else {
                bus.create(&rig.config.outputs[gone_output].can_if);
            }
            output_removed = want_out_removed;
        }
        if let Some(b) = broker.as_mut() {
            b.set_running(!in_window(BROKER_DOWN));
        }
        // Near the end of the silence the battery is stale (3 s) and the
        // others carry on: degraded, with the silent one left out.
        if n > 1 && phase >= SILENT.1 - 0.5 && checked_cycle != Some(cycle) && in_window(SILENT) {
            checked_cycle = Some(cycle);
            let fresh: Vec<usize> = (0..n).filter(|&k| k != silent).collect();
            let state = rig.state();
            if state != Some(SystemState::Degraded) {
                eprintln!("MISMATCH t={t:.1}: state {state:?}, expected degraded");
                ok = false;
            }
            ok &= rig.verify(&fresh, true, &format!("t={t:.1} (battery {} silent)", silent + 1));
            degraded_checks += 1;
        }
        if t >= next_sample {
            next_sample += 5.0;
            let now = (Instant::now(), rig.frames());
            let rate = (now.1 - last_sample.1) as f64 / (now.0 - last_sample.0).as_secs_f64();
            last_sample = now;
            let r = rss();
            rss_samples.push(r);
            let inv: u64 = rig.seen.iter().map(|s| s.frames.load(Ordering::Relaxed)).sum();
            println!(
                "| {t:5.0} | {:6.2} | {rate:14.0} | {:8} | {inv:15} | {:9} |",
                r as f64 / 1e6,
                rig.state().map_or("-", |s| s.as_str()),
                bus.dropped()
            );
        }
        std::thread::sleep(tick);
    }
    // Faults off; wait for every interface and battery to be back.
    rig.feeders[silent].silent.store(false, Ordering::Relaxed);
    if input_removed {
        bus.create(&rig.config.inputs[gone_input].can_if);
    }
    if output_removed {
        bus.create(&rig.config.outputs[gone_output].can_if);
    }
    let until = Instant::now() + Duration::from_secs(45);
    let back = |rig: &Rig| {
        rig.state() == Some(SystemState::Ok) && (0..o.outputs).all(|j| rig.board.output(j, |s| s.link == LinkState::Up))
    };
    while !back(&rig) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the listeners (which reopen every 50 ms) see a few transmissions.
    std::thread::sleep(Duration::from_millis(500));
    let all: Vec<usize> = (0..n).collect();
    let state = rig.state();
    if state != Some(SystemState::Ok) {
        eprintln!("MISMATCH at the end: state {state:?}, expected ok");
        ok = false;
    }
    ok &= rig.verify(&all, false, "at the end");
    let mut telemetry = "no broker";
    if let Some(b) = broker.as_mut() {
        b.set_running(true);
        // The client reconnects with back-off after a broker restart.
        telemetry = if b.receives(&rig.config.mqtt.topic, Duration::from_secs(20)) {
            "telemetry received after the broker restarts"
        } else {
            ok = false;
            eprintln!("MISMATCH at the end: no MQTT telemetry within 20 s");
            "NO telemetry after the broker restarts"
        };
    }
    rig.stop_flood();
    let dropped = bus.dropped();
    rig.stop();
    let settled = &rss_samples[rss_samples.len().min(2)..];
    let (lo, hi) = settled
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "soak done: RSS after warm-up {:.2}-{:.2} MB, peak {:.2} MB; {degraded_checks} degraded-state checks; virtual bus drops {dropped}; {telemetry}; outputs {}",
        lo as f64 / 1e6,
        hi as f64 / 1e6,
        peak_rss() as f64 / 1e6,
        if ok { "correct" } else { "WRONG" }
    );
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gateway_bench: {e}");
            return ExitCode::from(2);
        }
    };
    match o.soak {
        Some(secs) => soak(&o, secs),
        None => bench(&o),
    }
}
