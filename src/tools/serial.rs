//! `sim-bms --serial`: one simulated RS485 pack on a serial port, or on a
//! pseudo-terminal linked at the path (`--pty`), with fault switches and a
//! timed unplug (the port closed, the link removed) and replug.

use crate::rs485::Protocol;
use crate::serial::device::{Device, Devices};
use crate::serial::pty::LinkedPty;
use crate::serial::sim_pack::{self, Fault, SimPack};
use crate::serial::{LineSettings, SerialOpener, SerialPort};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// The serial flags of `sim-bms`.
#[derive(Debug, Clone, clap::Args)]
pub struct SerialSimArgs {
    /// Serial port to play an RS485 pack on.
    #[arg(long, value_name = "PATH")]
    pub serial: Option<String>,
    /// Make a pseudo-terminal and link its other side at PATH (for the
    /// gateway's SERIAL-PORT), instead of opening PATH.
    #[arg(long, requires = "serial")]
    pub pty: bool,
    /// The pack's protocol: pylon, seplos or pace.
    #[arg(long, default_value = "pylon", value_parser = parse_protocol, requires = "serial")]
    pub protocol: Protocol,
    /// The pack's RS485 address.
    #[arg(long, default_value_t = 2, requires = "serial")]
    pub address: u8,
    /// Line speed of a real port.
    #[arg(long, default_value_t = 115_200, requires = "serial")]
    pub baud: u32,
    /// Fault: never answer.
    #[arg(long, group = "fault", requires = "serial")]
    pub no_answer: bool,
    /// Fault: answer this many seconds late.
    #[arg(long, value_name = "SECS", group = "fault", requires = "serial")]
    pub slow_answer: Option<f64>,
    /// Fault: answer with a wrong checksum.
    #[arg(long, group = "fault", requires = "serial")]
    pub bad_checksum: bool,
    /// Fault: answer with noise, never a frame.
    #[arg(long, group = "fault", requires = "serial")]
    pub garbage: bool,
    /// Fault: answer from the next address.
    #[arg(long, group = "fault", requires = "serial")]
    pub wrong_address: bool,
    /// Unplug after this many seconds: close the port (and remove the pty's link).
    #[arg(long, value_name = "SECS", requires = "serial")]
    pub unplug_after: Option<f64>,
    /// Plug in again this many seconds after the unplug.
    #[arg(long, value_name = "SECS", requires = "unplug_after")]
    pub replug_after: Option<f64>,
}

fn parse_protocol(name: &str) -> Result<Protocol, String> {
    Protocol::from_name(name).ok_or_else(|| format!("unknown protocol {name:?}: one of pylon, seplos, pace"))
}

fn seconds(flag: &str, v: Option<f64>) -> Result<Option<Duration>, String> {
    v.map(|s| {
        if s.is_finite() && s >= 0.0 {
            Ok(Duration::from_secs_f64(s))
        } else {
            Err(format!("{flag} must be a number of seconds >= 0"))
        }
    })
    .transpose()
}

impl SerialSimArgs {
    fn fault(&self) -> Result<Fault, String> {
        Ok(if self.no_answer {
            Fault::NoAnswer
        } else if let Some(d) = seconds("--slow-answer", self.slow_answer)? {
            Fault::Slow(d)
        } else if self.bad_checksum {
            Fault::BadChecksum
        } else if self.garbage {
            Fault::Garbage
        } else if self.wrong_address {
            Fault::WrongAddress
        } else {
            Fault::None
        })
    }
}

/// What holds the port open while the pack plays on it.
enum Plugged {
    Pty(LinkedPty),
    Device(Box<dyn SerialPort>),
}

impl Plugged {
    fn open(args: &SerialSimArgs, path: &str) -> Result<Plugged, String> {
        if args.pty {
            let pty = LinkedPty::create(Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
            Ok(Plugged::Pty(pty))
        } else {
            let line = LineSettings {
                baud: args.baud,
                rs485_mode: false,
            };
            Ok(Plugged::Device(Devices.open(path, line).map_err(|e| e.to_string())?))
        }
    }
}

/// Plays the pack until `duration` or a signal.
pub fn sim_pack(args: &SerialSimArgs, duration: Option<f64>) -> Result<(), String> {
    let path = args.serial.as_deref().ok_or("--serial PATH is needed")?;
    let mut pack = SimPack::new(args.protocol, args.address);
    pack.fault = args.fault()?;
    let unplug_after = seconds("--unplug-after", args.unplug_after)?;
    let replug_after = seconds("--replug-after", args.replug_after)?;
    let (signals, deadline, handle) = super::stop_channel(duration)?;
    let stopped = std::cell::Cell::new(false);
    let stop_asked = || {
        if signals.try_recv().is_ok() || deadline.try_recv().is_ok() {
            stopped.set(true);
        }
        stopped.get()
    };
    let started = Instant::now();
    let mut result = play(args, path, &pack, &stop_asked, unplug_after.map(|d| started + d));
    if result.is_ok() && !stopped.get() {
        println!("unplugged {path}");
        let _ = std::io::stdout().flush();
        if let Some(after) = replug_after {
            let back = Instant::now() + after;
            while Instant::now() < back && !stop_asked() {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !stopped.get() {
                result = play(args, path, &pack, &stop_asked, None);
            }
        } else {
            while !stop_asked() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    handle.close();
    result
}

/// Opens the port and serves the pack until stopped or `unplug_at`.
fn play(
    args: &SerialSimArgs,
    path: &str,
    pack: &SimPack,
    stop_asked: &dyn Fn() -> bool,
    unplug_at: Option<Instant>,
) -> Result<(), String> {
    let plugged = Plugged::open(args, path)?;
    println!(
        "sim-bms: {} pack at address {} on {path}",
        pack.protocol.name(),
        pack.address
    );
    let _ = std::io::stdout().flush();
    let until = || stop_asked() || unplug_at.is_some_and(|at| Instant::now() >= at);
    let packs = std::slice::from_ref(pack);
    let served = match plugged {
        Plugged::Pty(pty) => {
            let mut master = Device::from_port(pty.master.try_clone().map_err(|e| e.to_string())?);
            let served = sim_pack::serve(&mut master, packs, &until);
            drop(pty);
            served
        }
        Plugged::Device(mut port) => sim_pack::serve(port.as_mut(), packs, &until),
    };
    served.map_err(|e| format!("{path}: {e}"))
}
