//! `bms-gateway scan`: which CAN interface is which. Lists every CAN
//! interface of the machine with its link state (and, where the driver
//! reports them through netlink, bit rate, controller state and restart-ms),
//! listens a few seconds on every interface that is up, and says what talks
//! on it: a battery, an inverter, both (a misconfigured bus) or nothing.
//! With `--config` it writes a configuration to start from. Serial ports
//! and the RS485 packs on them: [`serial`].
//!
//! The classification ([`Observation`], [`Observation::role`]) and the
//! generated configuration ([`config_text`]) are pure; only [`scan`] touches
//! the system. Everything runs unprivileged: reading link details over
//! netlink and listening on a raw CAN socket need no capability.

pub mod serial;

use crate::can::{CanError, CanOpener};
use crate::codec::{self, Limits, Message};
use crate::frame::{CanId, Frame};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// ARPHRD_CAN: the link type of every SocketCAN interface (can, vcan, slcan...).
const ARPHRD_CAN: &str = "280";

/// An interface's link as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    Down,
}

/// One CAN interface and what the driver says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub link: Link,
    /// Bit/s; `None` where the driver has no bit timing (vcan) or netlink failed.
    pub bitrate: Option<u32>,
    /// Controller state, e.g. "error-active" or "bus-off".
    pub controller: Option<&'static str>,
    /// Automatic restart after bus-off, ms (0: off).
    pub restart_ms: Option<u32>,
}

/// The names of the CAN interfaces under `sys_class_net` (normally
/// /sys/class/net), sorted; each with its link state from the `flags` file.
pub fn can_interfaces(sys_class_net: &Path) -> Vec<(String, Link)> {
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return Vec::new();
    };
    let mut found: Vec<(String, Link)> = entries
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let kind = std::fs::read_to_string(dir.join("type")).ok()?;
            if kind.trim() != ARPHRD_CAN {
                return None;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name, link_from_flags(&std::fs::read_to_string(dir.join("flags")).ok()?)))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// IFF_UP is bit 0 of the interface flags ("0x41" when up and running).
fn link_from_flags(flags: &str) -> Link {
    let flags = flags.trim();
    let value = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
    if value & 1 == 1 { Link::Up } else { Link::Down }
}

/// How long netlink may take to describe an interface: a driver that does
/// not answer must not hold up the scan.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

/// What netlink reports of one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Details {
    up: bool,
    bitrate: Option<u32>,
    controller: Option<&'static str>,
    restart_ms: Option<u32>,
}

fn netlink_details(name: &str) -> Option<Details> {
    let d = socketcan::CanInterface::open(name).and_then(|i| i.details()).ok()?;
    Some(Details {
        up: d.is_up,
        bitrate: d.can.bit_timing.map(|t| t.bitrate).filter(|&b| b > 0),
        controller: d.can.state.map(controller_name),
        restart_ms: d.can.restart_ms,
    })
}

/// Adds what netlink reports, asking for every interface at once, each in a
/// thread of its own that is left behind if it does not answer in time; an
/// interface netlink cannot describe keeps its name and link state.
fn with_details(found: Vec<(String, Link)>) -> Vec<Interface> {
    let pending: Vec<_> = found
        .iter()
        .map(|(name, _)| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let name = name.clone();
            let asked = std::thread::Builder::new()
                .name("scan-netlink".into())
                .spawn(move || {
                    let _ = tx.send(netlink_details(&name));
                })
                .is_ok();
            asked.then_some(rx)
        })
        .collect();
    let deadline = Instant::now() + NETLINK_TIMEOUT;
    found
        .into_iter()
        .zip(pending)
        .map(|((name, link), rx)| {
            let details = rx.and_then(|rx| rx.recv_deadline(deadline).ok().flatten());
            Interface {
                name,
                link: details.map_or(link, |d| if d.up { Link::Up } else { Link::Down }),
                bitrate: details.and_then(|d| d.bitrate),
                controller: details.and_then(|d| d.controller),
                restart_ms: details.and_then(|d| d.restart_ms),
            }
        })
        .collect()
}

fn controller_name(state: socketcan::nl::CanState) -> &'static str {
    use socketcan::nl::CanState as S;
    match state {
        S::ErrorActive => "error-active",
        S::ErrorWarning => "error-warning",
        S::ErrorPassive => "error-passive",
        S::BusOff => "bus-off",
        S::Stopped => "stopped",
        S::Sleeping => "sleeping",
    }
}

/// What a battery said during the scan: its latest values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatterySeen {
    pub frames: u64,
    /// 0x35E, as sent.
    pub name: Option<codec::Manufacturer>,
    pub soc: Option<f64>,
    pub voltage: Option<f64>,
    pub limits: Option<Limits>,
}

/// What an inverter said during the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InverterSeen {
    pub frames: u64,
    /// 0x305-0x307 with 11-bit identifiers seen.
    pub standard: bool,
    /// 0x305-0x307 with 29-bit identifiers seen.
    pub extended: bool,
}

/// Everything heard on one interface, folded frame by frame (a flood costs
/// no memory).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observation {
    pub battery: BatterySeen,
    pub inverter: InverterSeen,
    /// Frames that are neither.
    pub other: u64,
}

/// What an interface is, by what was heard on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    Battery(BatterySeen),
    Inverter(InverterSeen),
    /// Battery and inverter frames on one bus: the gateway needs them apart.
    Both(BatterySeen, InverterSeen),
    /// Traffic, but no Pylontech frame.
    Foreign {
        frames: u64,
    },
    Silent,
}

/// The inverter's identifiers: 0x305 (keep-alive / request) and the
/// 0x306-0x307 some inverters send with it.
fn is_inverter_id(raw: u32) -> bool {
    (0x305..=0x307).contains(&raw)
}

impl Observation {
    /// Takes one frame heard on the interface.
    pub fn take(&mut self, frame: &Frame) {
        if is_inverter_id(frame.id.raw()) {
            self.inverter.frames += 1;
            match frame.id {
                CanId::Standard(_) => self.inverter.standard = true,
                CanId::Extended(_) => self.inverter.extended = true,
            }
            return;
        }
        let b = &mut self.battery;
        match (frame.id, codec::decode(frame)) {
            (CanId::Standard(_), Ok(m)) if !matches!(m, Message::Other { .. } | Message::KeepAlive) => {
                b.frames += 1;
                match m {
                    Message::Limits(l) => b.limits = Some(l),
                    Message::StateOfCharge(s) => b.soc = Some(s.soc),
                    Message::Measurements(x) => b.voltage = Some(x.v_avg),
                    Message::Manufacturer(n) => b.name = Some(n),
                    _ => {}
                }
            }
            _ => self.other += 1,
        }
    }

    /// The interface's role.
    pub fn role(&self) -> Role {
        match (self.battery.frames > 0, self.inverter.frames > 0) {
            (true, true) => Role::Both(self.battery, self.inverter),
            (true, false) => Role::Battery(self.battery),
            (false, true) => Role::Inverter(self.inverter),
            (false, false) if self.other > 0 => Role::Foreign { frames: self.other },
            (false, false) => Role::Silent,
        }
    }
}

/// Classifies a sequence of frames heard on one interface.
pub fn classify<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Role {
    let mut o = Observation::default();
    frames.into_iter().for_each(|f| o.take(f));
    o.role()
}

/// One interface's scan result.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub interface: Interface,
    /// `None` when the interface was not listened to (down), with the reason
    /// when opening failed.
    pub heard: Result<Role, String>,
}

/// Listens on `name` for `duration`.
fn listen(opener: &dyn CanOpener, name: &str, duration: Duration) -> Result<Role, String> {
    let mut port = opener.open(name).map_err(|e| e.to_string())?;
    let mut seen = Observation::default();
    let until = Instant::now() + duration;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(seen.role());
        }
        match port.read(left.min(Duration::from_millis(200))) {
            Ok(Some(frame)) => seen.take(&frame),
            Ok(None) | Err(CanError::Busy) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Lists the machine's CAN interfaces and listens on those that are up, all
/// at once, for `duration`.
pub fn scan(opener: &dyn CanOpener, sys_class_net: &Path, duration: Duration) -> Vec<Finding> {
    let interfaces = with_details(can_interfaces(sys_class_net));
    std::thread::scope(|s| {
        let listeners: Vec<_> = interfaces
            .iter()
            .map(|i| (i.link == Link::Up).then(|| s.spawn(move || listen(opener, &i.name, duration))))
            .collect();
        interfaces
            .iter()
            .zip(listeners)
            .map(|(interface, listener)| Finding {
                interface: interface.clone(),
                heard: match listener {
                    None => Err("down: not listened to (bring it up with: ip link set NAME up)".into()),
                    Some(h) => h.join().unwrap_or_else(|_| Err("the listener failed".into())),
                },
            })
            .collect()
    })
}

fn battery_summary(b: &BatterySeen) -> String {
    let mut parts = vec![b.name.map_or_else(|| "no 0x35E name".to_string(), |n| n.name())];
    if let Some(soc) = b.soc {
        parts.push(format!("SOC {soc} %"));
    }
    if let Some(v) = b.voltage {
        parts.push(format!("{v} V"));
    }
    if let Some(l) = b.limits {
        parts.push(format!(
            "CVL {} V, CCL {} A, DCL {} A",
            l.v_charge_cmd, l.i_lim_charge, l.i_lim_discharge
        ));
    }
    parts.join(", ")
}

fn inverter_summary(i: &InverterSeen) -> String {
    let bits = match (i.standard, i.extended) {
        (true, true) => "11- and 29-bit",
        (false, true) => "29-bit",
        _ => "11-bit",
    };
    format!("0x305-0x307 {bits}, {} frames", i.frames)
}

/// One line per interface, for people.
pub fn report(findings: &[Finding], duration: Duration) -> String {
    if findings.is_empty() {
        return "no CAN interfaces on this machine (none in /sys/class/net has link type 280)\n".into();
    }
    let mut out = String::new();
    for f in findings {
        let i = &f.interface;
        let mut link = match i.link {
            Link::Up => "up".to_string(),
            Link::Down => "down".to_string(),
        };
        if let Some(b) = i.bitrate {
            let _ = write!(link, ", {b} bit/s");
        }
        if let Some(c) = i.controller {
            let _ = write!(link, ", {c}");
        }
        if let Some(r) = i.restart_ms {
            let _ = write!(link, ", restart-ms {r}");
        }
        let heard = match &f.heard {
            Err(why) => why.clone(),
            Ok(Role::Battery(b)) => format!("battery: {} ({} frames)", battery_summary(b), b.frames),
            Ok(Role::Inverter(v)) => format!("inverter: {}", inverter_summary(v)),
            Ok(Role::Both(b, v)) => format!(
                "battery AND inverter on one bus (give each its own interface): {}; {}",
                battery_summary(b),
                inverter_summary(v)
            ),
            Ok(Role::Foreign { frames }) => format!("{frames} frames, none of them Pylontech"),
            Ok(Role::Silent) => format!("silent for {} s", duration.as_secs_f64()),
        };
        let _ = writeln!(out, "{:<12} [{link}] {heard}", i.name);
    }
    out
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A configuration to start from: one `[[bmses-in]]` per battery, one
/// `[[bmses-out]]` per inverter, GATEWAY-ACTIVATED false until edited.
pub fn config_text(findings: &[Finding]) -> String {
    let mut out = String::from(
        "# Written by bms-gateway scan. Check each CAPACITY-AH, then set\n\
         # GATEWAY-ACTIVATED = true. Every other key: see bms-gateway --init.\n\
         GATEWAY-ACTIVATED = false\n",
    );
    let (mut batteries, mut inverters) = (0, 0);
    for f in findings {
        let name = &f.interface.name;
        match &f.heard {
            Ok(Role::Battery(b)) => {
                batteries += 1;
                let _ = write!(
                    out,
                    "\n[[bmses-in]]\nCAN-IF = {}\nDESCRIPTION = {}\n\
                     # The pack's capacity in Ah (weights SOC and the averages): edit this.\n\
                     CAPACITY-AH = 100.0\n",
                    quoted(name),
                    quoted(&format!("{} on {name}", battery_summary(b)))
                );
            }
            Ok(Role::Inverter(v)) => {
                inverters += 1;
                let _ = write!(
                    out,
                    "\n[[bmses-out]]\nCAN-IF = {}\nDESCRIPTION = {}\n",
                    quoted(name),
                    quoted(&format!("Inverter on {name} ({})", inverter_summary(v)))
                );
            }
            Ok(Role::Both(..)) => {
                let _ = write!(
                    out,
                    "\n# {name}: a battery and an inverter on the same bus; wire them to\n\
                     # separate interfaces and scan again.\n"
                );
            }
            _ => {}
        }
    }
    if batteries == 0 {
        out.push_str("\n# No battery was heard: add a [[bmses-in]] (CAN-IF, CAPACITY-AH).\n");
    }
    if inverters == 0 {
        out.push_str("\n# No inverter was heard: add a [[bmses-out]] (CAN-IF).\n");
    }
    out
}

#[cfg(test)]
mod tests;
