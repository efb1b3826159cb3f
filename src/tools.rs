//! The field tools: `sim-bms`, `sim-inverter` and `monitor`, on any CAN
//! interface (real, vcan, or the virtual bus in tests).

use crate::can::{CanError, CanOpener, CanPort};
use crate::codec::{self, Message, Requests};
use crate::decode::{frame_json, reading_fields};
use crate::frame::Frame;
use crate::profile::check::{self, Checker, Reading};
use crate::profile::{Profile, SmaReadings, SmaState};
use crate::signals::{self, Signal};
use crate::sim::{BatteryParams, SimAlarms};
use crossbeam_channel::Receiver;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod serial;

/// `sim-bms` flags: the values the simulated battery reports.
#[derive(Debug, Clone, clap::Args)]
pub struct SimBmsArgs {
    /// CAN interface to send on.
    #[arg(
        long = "can-if",
        value_name = "IF",
        required_unless_present = "serial",
        conflicts_with = "serial"
    )]
    pub can_if: Option<String>,
    /// Play an RS485 pack on this serial port instead (spec 18); the CAN
    /// value flags do not apply, the pack answers with the reference's
    /// captures.
    #[command(flatten)]
    pub serial: serial::SerialSimArgs,
    /// State of charge, %.
    #[arg(long, default_value_t = 88.0)]
    pub soc: f64,
    /// State of health, %.
    #[arg(long, default_value_t = 94.0)]
    pub soh: f64,
    /// Pack voltage, V.
    #[arg(long, default_value_t = 49.86)]
    pub voltage: f64,
    /// Current, A (+ = charging).
    #[arg(long, default_value_t = -27.0, allow_hyphen_values = true)]
    pub current: f64,
    /// Temperature, degC.
    #[arg(long, default_value_t = 36.3, allow_hyphen_values = true)]
    pub temp: f64,
    /// Charge voltage limit, V.
    #[arg(long, default_value_t = 53.2)]
    pub cvl: f64,
    /// Charge current limit, A.
    #[arg(long, default_value_t = 480.0)]
    pub ccl: f64,
    /// Discharge current limit, A.
    #[arg(long, default_value_t = 480.0)]
    pub dcl: f64,
    /// Discharge voltage limit, V.
    #[arg(long, default_value_t = 45.0)]
    pub dvl: f64,
    /// Number of modules.
    #[arg(long, default_value_t = 6)]
    pub modules: u8,
    /// Alarm bytes 0-3 of 0x359 as 8 hex digits, e.g. 00000800.
    #[arg(long, default_value = "00000000")]
    pub flags: String,
    /// Seconds between bursts.
    #[arg(long, default_value_t = 1.0)]
    pub period: f64,
    /// Let SOC, current, voltage and temperature drift slowly.
    #[arg(long)]
    pub drift: bool,
    /// Name sent in 0x35E.
    #[arg(long, default_value = "PYLON")]
    pub manufacturer: String,
    /// Do not send 0x373 cell extremes.
    #[arg(long)]
    pub no_cells: bool,
    /// Clear the charge-enable bit of 0x35C.
    #[arg(long)]
    pub no_charge: bool,
    /// Clear the discharge-enable bit of 0x35C.
    #[arg(long)]
    pub no_discharge: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

/// `sim-inverter` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SimInverterArgs {
    /// CAN interface of the (virtual) BMS.
    #[arg(long = "can-if", value_name = "IF")]
    pub can_if: String,
    /// Sync mode: send a 0x305 every --period and expect answers.
    #[arg(long)]
    pub sync: bool,
    /// Seconds between 0x305 keep-alives.
    #[arg(long, default_value_t = 1.0)]
    pub period: f64,
    /// Read the frames as this inverter dialect does (pylon, pylon-v2,
    /// victron, sma, solark, luxpower) and report what breaks its rules.
    #[arg(long, default_value = "pylon", value_parser = parse_profile)]
    pub profile: Profile,
    /// Play an SMA Sunny Island: every period send its data-bearing 0x305
    /// (the battery's V, I, T, SOC as it measures them) and 0x306.
    #[arg(long)]
    pub sma: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

fn parse_profile(name: &str) -> Result<Profile, String> {
    Profile::parse(name).ok_or_else(|| {
        let all: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
        format!("unknown profile {name:?}: one of {}", all.join(", "))
    })
}

fn open(opener: &dyn CanOpener, name: &str) -> Result<Box<dyn CanPort>, String> {
    opener.open(name).map_err(|e| format!("{name}: {e}"))
}

fn positive(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{name} must be a positive number of seconds"))
    }
}

fn stop_channel(
    duration: Option<f64>,
) -> Result<(Receiver<Signal>, Receiver<Instant>, signal_hook::iterator::Handle), String> {
    let (signals, handle) = signals::listen().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let deadline = match duration {
        Some(d) => crossbeam_channel::after(positive("--duration", d)?),
        None => crossbeam_channel::never(),
    };
    Ok((signals, deadline, handle))
}

/// Plays a battery until stopped.
pub fn sim_bms(opener: &dyn CanOpener, args: &SimBmsArgs) -> Result<(), String> {
    let can_if = match (&args.can_if, &args.serial.serial) {
        (_, Some(_)) => return serial::sim_pack(&args.serial, args.duration),
        (Some(can_if), None) => can_if,
        (None, None) => return Err("sim-bms needs --can-if or --serial".into()),
    };
    let period = positive("--period", args.period)?;
    let flags = u32::from_str_radix(&args.flags, 16)
        .ok()
        .filter(|_| args.flags.len() == 8)
        .ok_or("--flags takes 8 hex digits, e.g. 00000800")?
        .to_be_bytes();
    let params = BatteryParams {
        soc: args.soc,
        soh: args.soh,
        voltage: args.voltage,
        current: args.current,
        temp: args.temp,
        cvl: args.cvl,
        ccl: args.ccl,
        dcl: args.dcl,
        dvl: args.dvl,
        modules: args.modules,
        manufacturer: args.manufacturer.clone(),
        cells: !args.no_cells,
        drift: args.drift,
        requests: Requests {
            charge_enable: !args.no_charge,
            discharge_enable: !args.no_discharge,
            ..Requests::NORMAL
        },
    };
    let mut port = open(opener, can_if)?;
    let (signals, deadline, handle) = stop_channel(args.duration)?;
    let started = Instant::now();
    let ticker = crossbeam_channel::tick(period);
    let mut result = Ok(());
    loop {
        let t = started.elapsed().as_secs_f64();
        for frame in params.burst(t, SimAlarms { flags }) {
            if let Err(e) = port.write(&frame) {
                result = Err(format!("{can_if}: {e}"));
                break;
            }
        }
        if result.is_err() {
            break;
        }
        crossbeam_channel::select! {
            recv(signals) -> _ => break,
            recv(deadline) -> _ => break,
            recv(ticker) -> _ => {},
        }
    }
    handle.close();
    result
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads `port` until stopped, handing each frame to `each`.
fn listen(
    port: &mut dyn CanPort,
    name: &str,
    signals: &Receiver<Signal>,
    deadline: &Receiver<Instant>,
    mut tick: impl FnMut(&mut dyn CanPort) -> Result<(), CanError>,
    mut each: impl FnMut(&Frame) -> std::io::Result<()>,
) -> Result<(), String> {
    loop {
        if signals.try_recv().is_ok() || deadline.try_recv().is_ok() {
            return Ok(());
        }
        tick(port).map_err(|e| format!("{name}: {e}"))?;
        match port.read(Duration::from_millis(100)) {
            Ok(Some(frame)) => {
                if let Err(e) = each(&frame) {
                    // A closed pipe (… | head) ends the tool quietly.
                    return if e.kind() == std::io::ErrorKind::BrokenPipe {
                        Ok(())
                    } else {
                        Err(e.to_string())
                    };
                }
            }
            Ok(None) => {}
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
}

/// Plays an inverter: prints every frame received as a JSON line, read as
/// `--profile` reads it, with the profile's rules it breaks under
/// "violations" (and a count on stderr at the end); in sync mode sends a
/// 0x305 every period, with `--sma` the Sunny Island's 0x305/0x306.
pub fn sim_inverter(opener: &dyn CanOpener, args: &SimInverterArgs) -> Result<(), String> {
    let period = positive("--period", args.period)?;
    let mut port = open(opener, &args.can_if)?;
    let (signals, deadline, handle) = stop_channel(args.duration)?;
    let mut next = Instant::now();
    let (profile, unit) = (args.profile, args.profile.default_voltage_unit());
    let mut checker = Checker::new(profile);
    // Both closures use it: the reader fills it, the ticker sends from it.
    let island = std::cell::RefCell::new(SunnyIsland::default());
    let mut violations = 0usize;
    let sync = args.sync || args.sma;
    let sma = args.sma;
    let mut out = std::io::stdout().lock();
    let result = listen(
        port.as_mut(),
        &args.can_if,
        &signals,
        &deadline,
        |port| {
            if sync && Instant::now() >= next {
                next = Instant::now() + period;
                for f in island.borrow().frames(sma) {
                    port.write(&f)?;
                }
            }
            Ok(())
        },
        |frame| {
            let ts = (unix_now() * 1e6).round() / 1e6;
            let mut fields = frame_json(frame, Some(&args.can_if), Some(ts));
            if let Ok(reading) = check::decode(profile, unit, frame) {
                fields.extend(reading_fields(&reading));
                island.borrow_mut().take(&reading);
            }
            let problems = checker.check(frame, Instant::now());
            if !problems.is_empty() {
                violations += problems.len();
                fields.insert("violations".into(), Value::from(problems));
            }
            writeln!(out, "{}", Value::Object(fields))?;
            out.flush()
        },
    );
    handle.close();
    eprintln!(
        "sim-inverter {}: {violations} violations of the {} profile",
        args.can_if,
        profile.name()
    );
    result
}

/// What `sim-inverter --sma` measures: the battery as the virtual BMS last
/// reported it (a real Sunny Island measures its own, close to these).
#[derive(Debug, Default)]
struct SunnyIsland {
    readings: Option<SmaReadings>,
    soh: f64,
}

impl SunnyIsland {
    fn take(&mut self, reading: &Reading) {
        let r = self.readings.get_or_insert(SmaReadings {
            v: 0.0,
            i: 0.0,
            t: 0.0,
            soc: 0.0,
        });
        match reading {
            Reading::Message(Message::Measurements(m)) => (r.v, r.i, r.t) = (m.v_avg, m.i_total, m.t_avg),
            Reading::Message(Message::StateOfCharge(s)) => {
                r.soc = s.soc_hires.unwrap_or(s.soc);
                self.soh = s.soh;
            }
            _ => {}
        }
    }

    /// The frames to send this period: an all-zero 0x305, or the Sunny
    /// Island's 0x305 and 0x306 once it has readings.
    fn frames(&self, sma: bool) -> Vec<Frame> {
        match (sma, self.readings) {
            (true, Some(r)) => vec![
                r.frame(),
                SmaState {
                    soh: self.soh,
                    charge_procedure: 0,
                    operating_state: 0,
                    error: 0,
                    v_charge_setpoint: 0.0,
                }
                .frame(),
            ],
            _ => vec![codec::encode(&Message::KeepAlive)],
        }
    }
}

/// Live decoded view: one human-readable line per frame.
pub fn monitor(opener: &dyn CanOpener, interface: &str) -> Result<(), String> {
    let mut port = open(opener, interface)?;
    let (signals, deadline, handle) = stop_channel(None)?;
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    let result = listen(
        port.as_mut(),
        interface,
        &signals,
        &deadline,
        |_| Ok(()),
        |frame| {
            let fields = frame_json(frame, None, None);
            let text: Vec<String> = fields
                .iter()
                .filter(|(k, _)| k.as_str() != "id")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(
                out,
                "{:>9.3} {interface} {:?} {}",
                started.elapsed().as_secs_f64(),
                frame,
                text.join(" ")
            )?;
            out.flush()
        },
    );
    handle.close();
    result
}
