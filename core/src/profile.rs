//! Output profiles: the dialect in which one inverter is shown the virtual
//! BMS (`[[bmses-out]] PROFILE`).
//!
//! The core decides the values (combining, shares, setpoints, the safe
//! state); a profile decides only which frames carry them, in which order,
//! with which layout, DLC and pacing. The few value rules that belong to one
//! output (the SOC window, the CVL ramp, Victron's "stop charging by lowering
//! CVL") are pure functions here too, with time passed in. The rules and
//! their sources are written down in docs/profiles.md.

use crate::codec::{
    self, BankStatus, BatteryInfo, Energy, Limits, Manufacturer, Measurements, Message, Requests, SmaAlarms,
    StateOfCharge,
};
use crate::combine::{Battery, SystemState};
use crate::frame::{CanId, Frame, FrameKind};
use std::time::{Duration, Instant};

pub mod check;

/// One inverter dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Pylontech document V1.2: 0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E (0x373).
    #[default]
    Pylon,
    /// `Pylon` and 0x35A, 0x372, 0x379 (Deye, GoodWe, SRNE, Schneider).
    PylonV2,
    /// Victron GX: the CAN-BMS set with hi-res SOC, 0x35A, 0x35F, 0x372-0x379.
    Victron,
    /// SMA Sunny Island (LiIon_Ext-BMS), vendor document.
    Sma,
    /// Sol-Ark LV: `Pylon` + 0x379, every frame 8 bytes, 0x356 in 0.1 V.
    SolArk,
    /// Luxpower / EG4 "Lithium 6": the same IDs in another layout.
    Luxpower,
}

impl Profile {
    /// Every profile, in the order the documentation lists them.
    pub const ALL: [Profile; 6] = [
        Profile::Pylon,
        Profile::PylonV2,
        Profile::Victron,
        Profile::Sma,
        Profile::SolArk,
        Profile::Luxpower,
    ];

    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Pylon => "pylon",
            Profile::PylonV2 => "pylon-v2",
            Profile::Victron => "victron",
            Profile::Sma => "sma",
            Profile::SolArk => "solark",
            Profile::Luxpower => "luxpower",
        }
    }

    pub fn parse(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The 0x35E name sent when the configuration sets none. Victron's GX
    /// switches on its Pylontech rewrites for a name starting with PYLON, so
    /// the victron profile never calls itself that by default.
    pub fn default_manufacturer(self) -> &'static str {
        match self {
            Profile::Victron | Profile::Sma => "BMS-GW",
            Profile::Pylon | Profile::PylonV2 | Profile::SolArk | Profile::Luxpower => "PYLON",
        }
    }

    /// The shortest time between two transmissions of the same ID: the
    /// Sunny Island rejects anything faster than 200 ms.
    pub fn min_gap(self) -> Duration {
        match self {
            Profile::Sma => Duration::from_millis(200),
            _ => Duration::ZERO,
        }
    }

    /// The default unit of the 0x356 voltage, V per count.
    pub fn default_voltage_unit(self) -> VoltageUnit {
        match self {
            Profile::SolArk => VoltageUnit::Decivolt,
            _ => VoltageUnit::Centivolt,
        }
    }
}

/// The unit of the pack voltage in 0x356 (`[[bmses-out]] VOLTAGE-UNIT`):
/// Pylontech sends 0.01 V, Sol-Ark's document 0.1 V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoltageUnit {
    Centivolt,
    Decivolt,
}

impl VoltageUnit {
    /// Counts per volt.
    pub fn scale(self) -> f64 {
        match self {
            VoltageUnit::Centivolt => 100.0,
            VoltageUnit::Decivolt => 10.0,
        }
    }

    /// The configuration value: V per count.
    pub fn volts(self) -> f64 {
        1.0 / self.scale()
    }

    pub fn from_volts(v: f64) -> Option<VoltageUnit> {
        if v == 0.01 {
            Some(VoltageUnit::Centivolt)
        } else if v == 0.1 {
            Some(VoltageUnit::Decivolt)
        } else {
            None
        }
    }
}

/// What an output's frames are made of: the battery as shaped for this
/// inverter, and the bank-level numbers some profiles send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shown {
    pub battery: Battery,
    /// 0x372.
    pub bank: BankStatus,
    /// 0x378; `None` until energy counters exist.
    pub energy: Option<Energy>,
}

/// The most frames any profile sends in one transmission.
pub const MAX_FRAMES: usize = 10;

/// The frames of one transmission, in the profile's order; no allocation.
#[derive(Debug, Clone, Copy)]
pub struct Frames {
    frames: [Frame; MAX_FRAMES],
    len: usize,
}

impl Frames {
    fn new() -> Frames {
        Frames {
            frames: [Frame::standard(0, &[]); MAX_FRAMES],
            len: 0,
        }
    }

    fn push(&mut self, frame: Frame) {
        self.frames[self.len] = frame;
        self.len += 1;
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames[..self.len]
    }
}

/// SMA's "field not valid" markers, for unsigned and signed 16-bit fields.
pub const SMA_INVALID_U16: u16 = 0xFFFF;
pub const SMA_INVALID_S16: u16 = 0x8000;
/// The Sunny Island accepts CCL and DCL up to 1200 A.
const SMA_MAX_CURRENT: f64 = 1200.0;
/// The CVL and DVL (V) the Sunny Island accepts; it silently rejects a value
/// outside and keeps its defaults (SMA's document, 0x351), so they are
/// clamped (`check` warns).
pub const SMA_CVL_RANGE: (f64, f64) = (41.0, 63.0);
pub const SMA_DVL_RANGE: (f64, f64) = (41.0, 48.0);

/// Builds one transmission's frames for `profile`.
pub fn frames(profile: Profile, shown: &Shown, manufacturer: Manufacturer, unit: VoltageUnit) -> Frames {
    let b = &shown.battery;
    let mut out = Frames::new();
    match profile {
        Profile::Pylon | Profile::PylonV2 | Profile::SolArk => {
            out.push(codec::encode(&Message::Flags(flags(profile, b))));
            out.push(codec::encode(&Message::Limits(limits(b))));
            out.push(codec::encode(&Message::StateOfCharge(soc(b, false))));
            out.push(measurements(b, unit));
            out.push(requests(profile, b.requests));
            out.push(codec::encode(&Message::Manufacturer(manufacturer)));
            if let Some(cells) = b.cells {
                out.push(codec::encode(&Message::Cells(cells)));
            }
            if profile == Profile::PylonV2 {
                out.push(codec::encode(&Message::SmaAlarms(SmaAlarms::from_flags(&b.flags))));
                out.push(codec::encode(&Message::BankStatus(shown.bank)));
            }
            if profile != Profile::Pylon {
                out.push(capacity(b));
            }
        }
        Profile::Victron => {
            out.push(codec::encode(&Message::Limits(limits(b))));
            out.push(codec::encode(&Message::StateOfCharge(soc(b, true))));
            out.push(measurements(b, unit));
            out.push(codec::encode(&Message::SmaAlarms(SmaAlarms::from_flags(&b.flags))));
            out.push(codec::encode(&Message::Manufacturer(manufacturer)));
            // Installed Ah, as 0x379 (spec 4 names both installed capacity;
            // docs/profiles.md weighs the sources).
            out.push(battery_info(b.capacity_ah, [0, 0], [0, 0]));
            out.push(codec::encode(&Message::BankStatus(shown.bank)));
            if let Some(cells) = b.cells {
                out.push(codec::encode(&Message::Cells(cells)));
            }
            if let Some(energy) = shown.energy {
                out.push(codec::encode(&Message::Energy(energy)));
            }
            out.push(capacity(b));
        }
        Profile::Sma => {
            out.push(sma_limits(b));
            out.push(codec::encode(&Message::StateOfCharge(soc(b, true))));
            out.push(measurements(b, unit));
            out.push(codec::encode(&Message::SmaAlarms(SmaAlarms::from_flags(&b.flags))));
            out.push(codec::encode(&Message::Manufacturer(manufacturer)));
            let invalid = SMA_INVALID_U16.to_le_bytes();
            out.push(battery_info(b.capacity_ah, invalid, invalid));
        }
        Profile::Luxpower => luxpower(&mut out, b, manufacturer),
    }
    if profile == Profile::SolArk {
        for f in &mut out.frames[..out.len] {
            *f = padded(f);
        }
    }
    out
}

/// 0x359's four flag bytes. Sol-Ark's document defines byte 3 bit 3 as
/// "Critical System Error", not Pylontech's "internal communication fail"
/// (the degraded state's bit): a Sol-Ark is never sent it.
fn flags(profile: Profile, b: &Battery) -> codec::Flags {
    let mut f = b.flags;
    if profile == Profile::SolArk {
        f.warning_flags_2 &= !codec::WARNING2_INTERNAL_COMM_FAIL;
    }
    f
}

fn limits(b: &Battery) -> Limits {
    Limits {
        v_charge_cmd: b.v_charge_cmd,
        i_lim_charge: b.i_lim_charge,
        i_lim_discharge: b.i_lim_discharge,
        v_discharge_min: b.v_discharge_min,
    }
}

fn soc(b: &Battery, hires: bool) -> StateOfCharge {
    StateOfCharge {
        soc: b.soc,
        soh: b.soh,
        // 0 on the wire means "absent": a bank at exactly 0 % sends 0.01 %.
        soc_hires: hires.then_some(b.soc.max(0.01)),
    }
}

fn measurements(b: &Battery, unit: VoltageUnit) -> Frame {
    let mut f = codec::encode(&Message::Measurements(Measurements {
        v_avg: b.v_avg,
        i_total: b.i_total,
        t_avg: b.t_avg,
    }));
    if unit == VoltageUnit::Decivolt {
        let raw = i16_raw(b.v_avg, 10.0);
        let mut data = [0u8; 6];
        data.copy_from_slice(f.data());
        data[0..2].copy_from_slice(&raw.to_le_bytes());
        f = Frame::standard(codec::ID_MEASUREMENTS, &data);
    }
    f
}

/// 0x35C; the Sol-Ark and Luxpower documents both name bit 4 "forced
/// charge request 1" and bit 5 "request 2", where Pylontech's bit 5 is force
/// charge I and bit 4 II: those two map by name.
fn requests(profile: Profile, r: Requests) -> Frame {
    let r = if matches!(profile, Profile::SolArk | Profile::Luxpower) {
        Requests {
            force_charge_request: r.force_charge_request_2,
            force_charge_request_2: r.force_charge_request,
            ..r
        }
    } else {
        r
    };
    codec::encode(&Message::Requests(r))
}

fn capacity(b: &Battery) -> Frame {
    codec::encode(&Message::InstalledCapacity {
        capacity_ah: b.capacity_ah,
    })
}

/// 0x35F: bytes 0-1 and 2-3 as given (type / hardware version, BMS
/// version), 4-5 `capacity_ah` (installed), 6-7 zero (Victron) or the SMA invalid
/// marker (manufacturer id, which this gateway has none of).
fn battery_info(capacity_ah: f64, first: [u8; 2], version: [u8; 2]) -> Frame {
    let cap = u16_raw(capacity_ah, 1.0).to_le_bytes();
    let last = if first == SMA_INVALID_U16.to_le_bytes() {
        first
    } else {
        [0, 0]
    };
    let raw = [
        first[0], first[1], version[0], version[1], cap[0], cap[1], last[0], last[1],
    ];
    codec::encode(&Message::BatteryInfo(BatteryInfo {
        raw,
        len: 8,
        capacity_ah,
    }))
}

/// 0x351 for the Sunny Island: currents within its 0-1200 A, CVL and DVL
/// within what it accepts, a DVL the batteries did not give marked invalid
/// instead of 0 (the combiner always gives one: `[battery] V-DISCHARGE-MIN`).
fn sma_limits(b: &Battery) -> Frame {
    let mut l = limits(b);
    l.i_lim_charge = l.i_lim_charge.min(SMA_MAX_CURRENT);
    l.i_lim_discharge = l.i_lim_discharge.min(SMA_MAX_CURRENT);
    l.v_charge_cmd = l.v_charge_cmd.clamp(SMA_CVL_RANGE.0, SMA_CVL_RANGE.1);
    l.v_discharge_min = l.v_discharge_min.map(|v| v.clamp(SMA_DVL_RANGE.0, SMA_DVL_RANGE.1));
    let f = codec::encode(&Message::Limits(l));
    if b.v_discharge_min.is_some() {
        return f;
    }
    let mut data = [0u8; 8];
    data.copy_from_slice(f.data());
    data[6..8].copy_from_slice(&SMA_INVALID_U16.to_le_bytes());
    Frame::standard(codec::ID_LIMITS, &data)
}

/// The Luxpower / EG4 layout (vendor document V04.2): 0x351 as Pylontech
/// with the discharge cut-off in bytes 6-7; 0x355 SOC, SOH, max and min cell
/// mV; 0x356 V, I, max and min cell temperature (0.1 degC); 0x359 the four
/// flag bytes, module count, capacity Ah in bytes 5-6; 0x35C the request
/// byte and a cycle count (unknown here: 0). Without cell data the cell
/// voltages are the bank voltage over [`LUXPOWER_CELLS`] (never 0 mV, which
/// reads as a cell under-voltage) and the cell temperatures the average;
/// the max temperature is always sent at least 0.1 degC above the min
/// (public Luxpower implementations never send them equal).
fn luxpower(out: &mut Frames, b: &Battery, manufacturer: Manufacturer) {
    let (v_max, v_min, t_max, t_min) = match b.cells {
        Some(c) => (c.v_cell_max, c.v_cell_min, c.t_cell_max, c.t_cell_min),
        None => {
            let cell = b.v_avg / LUXPOWER_CELLS;
            (cell, cell, b.t_avg, b.t_avg)
        }
    };
    out.push(codec::encode(&Message::Limits(limits(b))));
    let w = |v: u16| v.to_le_bytes();
    let soc = codec::encode(&Message::StateOfCharge(soc(b, false)));
    let s = soc.data();
    let mv = |v: f64| w(u16_raw(v, 1000.0));
    let (hi, lo) = (mv(v_max), mv(v_min));
    out.push(Frame::standard(
        codec::ID_SOC,
        &[s[0], s[1], s[2], s[3], hi[0], hi[1], lo[0], lo[1]],
    ));
    let m = measurements(b, VoltageUnit::Centivolt);
    let d = m.data();
    let tl = i16_raw(t_min, 10.0);
    let th = i16_raw(t_max, 10.0).max(tl.saturating_add(1));
    let (th, tl) = (th.to_le_bytes(), tl.to_le_bytes());
    out.push(Frame::standard(
        codec::ID_MEASUREMENTS,
        &[d[0], d[1], d[2], d[3], th[0], th[1], tl[0], tl[1]],
    ));
    let f = b.flags;
    let cap = w(u16_raw(b.capacity_ah, 1.0));
    out.push(Frame::standard(
        codec::ID_FLAGS,
        &[
            f.error_flags_1,
            f.error_flags_2,
            f.warning_flags_1,
            f.warning_flags_2,
            f.n_modules,
            cap[0],
            cap[1],
            0,
        ],
    ));
    let r = requests(Profile::Luxpower, b.requests);
    out.push(Frame::standard(codec::ID_REQUESTS, &[r.data()[0], 0, 0, 0, 0, 0, 0, 0]));
    out.push(codec::encode(&Message::Manufacturer(manufacturer)));
}

/// Cells in series assumed for a Luxpower LV bank without cell data (16 LFP
/// cells, a 51.2 V nominal pack): only for its 0x355 cell voltage fields.
const LUXPOWER_CELLS: f64 = 16.0;

/// `frame` with its data padded with zeros to 8 bytes.
fn padded(frame: &Frame) -> Frame {
    let mut data = [0u8; 8];
    data[..frame.data().len()].copy_from_slice(frame.data());
    Frame::new(frame.id, frame.kind, &data)
}

/// Rounds to nearest and saturates, like the codec (NaN -> 0).
fn u16_raw(value: f64, scale: f64) -> u16 {
    let v = (value * scale).round();
    if v.is_nan() {
        0
    } else {
        v.clamp(0.0, f64::from(u16::MAX)) as u16
    }
}

fn i16_raw(value: f64, scale: f64) -> i16 {
    let v = (value * scale).round();
    if v.is_nan() {
        0
    } else {
        v.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
    }
}

/// `[[bmses-out]] SOC-MIN` / `SOC-MAX`: shown SOC = (SOC - min) / (max - min)
/// x 100, clamped to 0..100. Validation guarantees min < max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SocWindow {
    pub min: f64,
    pub max: f64,
}

impl Default for SocWindow {
    fn default() -> Self {
        SocWindow { min: 0.0, max: 100.0 }
    }
}

impl SocWindow {
    pub fn show(&self, soc: f64) -> f64 {
        ((soc - self.min) / (self.max - self.min) * 100.0).clamp(0.0, 100.0)
    }
}

/// `[[bmses-out]] CVL-RAMP`: the CVL sent moves toward the wanted one by at
/// most `rate` V per second of elapsed time, down and up. The safe state is
/// never delayed: it is sent at once and the ramp restarts from there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CvlRamp {
    /// V/s; 0 = no ramp.
    pub rate: f64,
    last: Option<(f64, Instant)>,
}

impl CvlRamp {
    pub fn new(rate: f64) -> CvlRamp {
        CvlRamp { rate, last: None }
    }

    /// The CVL to send at `now` for a wanted `target`.
    pub fn next(&mut self, target: f64, state: SystemState, now: Instant) -> f64 {
        let sent = match self.last {
            Some((last, at)) if self.rate > 0.0 && state != SystemState::Safe => {
                let step = self.rate * now.saturating_duration_since(at).as_secs_f64();
                last + (target - last).clamp(-step, step)
            }
            _ => target,
        };
        self.last = Some((sent, now));
        sent
    }

    /// `sent` was sent at `now` instead of what [`CvlRamp::next`] gave (a
    /// safety case): the ramp goes on from there.
    pub fn restart_from(&mut self, sent: f64, now: Instant) {
        self.last = Some((sent, now));
    }
}

/// Victron's GX does not stop charging on CCL 0 alone: while charging is
/// forbidden (the CCL on the wire is 0.0 A, or charge enable clear), CVL is
/// also lowered to the bank voltage, rounded down to 0.1 V, never 0 and
/// never above `cvl`.
pub fn victron_cvl(b: &Battery, cvl: f64) -> f64 {
    let bank = (b.v_avg * 10.0).floor() / 10.0;
    if charge_forbidden(b) && bank > 0.0 {
        bank.min(cvl)
    } else {
        cvl
    }
}

/// Whether the inverter is told not to charge: judged on the CCL as it goes
/// on the wire (a limit below 0.1 A is sent as 0.0 A).
fn charge_forbidden(b: &Battery) -> bool {
    codec::limit_raw(b.i_lim_charge) == 0 || !b.requests.charge_enable
}

/// Everything one output adds to the shaped battery before encoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputView {
    pub profile: Profile,
    pub window: SocWindow,
    pub ramp: CvlRamp,
}

impl OutputView {
    /// The battery this output shows at `now`.
    pub fn apply(&mut self, mut b: Battery, state: SystemState, now: Instant) -> Battery {
        b.soc = self.window.show(b.soc);
        let combined_cvl = b.v_charge_cmd;
        b.v_charge_cmd = self.ramp.next(combined_cvl, state, now);
        if self.profile == Profile::Victron && charge_forbidden(&b) {
            // A safety case: at once, never above the combined CVL nor the
            // ramp's value; the ramp goes on from what was sent, so the rise
            // after it is gradual.
            b.v_charge_cmd = victron_cvl(&b, b.v_charge_cmd.min(combined_cvl));
            self.ramp.restart_from(b.v_charge_cmd, now);
        }
        b
    }
}

/// What an inverter said on its bus, as far as the gateway reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InverterFrame {
    /// 0x305 with an all-zero (or any non-SMA) payload, 11- or 29-bit ID.
    KeepAlive,
    /// SMA Sunny Island 0x305: its own readings of the battery.
    SmaReadings(SmaReadings),
    /// SMA Sunny Island 0x306.
    SmaState(SmaState),
    /// 0x306/0x307 of other inverters (Victron's identity frames).
    Identity,
    /// Luxpower 0x300 with byte 0 = 1: "shut down battery". Reported, never obeyed.
    ShutdownRequest,
}

/// The Sunny Island's 0x305: voltage (0.1 V), current (0.1 A, negative
/// while charging: the opposite of 0x356), temperature (0.1 degC), SOC (0.1 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmaReadings {
    pub v: f64,
    /// A, + = charging (converted from SMA's sign).
    pub i: f64,
    pub t: f64,
    pub soc: f64,
}

/// The Sunny Island's 0x306, as read here: SOH (u16, 1 %), charge procedure
/// (u8), operating state (u8), active error number (u16), its CVL setpoint
/// (u16, 0.1 V).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmaState {
    pub soh: f64,
    pub charge_procedure: u8,
    pub operating_state: u8,
    pub error: u16,
    pub v_charge_setpoint: f64,
}

/// Reads a frame received from an inverter; `None` for anything that is not
/// an inverter's frame. `profile` decides whether a data-bearing 0x305 is
/// SMA readings.
pub fn read_inverter(profile: Profile, f: &Frame) -> Option<InverterFrame> {
    if f.kind != FrameKind::Data {
        return None;
    }
    let id = match f.id {
        CanId::Standard(id) => u32::from(id),
        CanId::Extended(id) => id,
    };
    let d = f.data();
    let u16_at = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]);
    let i16_at = |i: usize| i16::from_le_bytes([d[i], d[i + 1]]);
    match id {
        0x305 if profile == Profile::Sma && d.len() >= 8 && d.iter().any(|&b| b != 0) => {
            Some(InverterFrame::SmaReadings(SmaReadings {
                v: f64::from(u16_at(0)) / 10.0,
                i: -f64::from(i16_at(2)) / 10.0,
                t: f64::from(i16_at(4)) / 10.0,
                soc: f64::from(i16_at(6)) / 10.0,
            }))
        }
        0x305 => Some(InverterFrame::KeepAlive),
        0x306 if profile == Profile::Sma && d.len() >= 8 => Some(InverterFrame::SmaState(SmaState {
            soh: f64::from(u16_at(0)),
            charge_procedure: d[2],
            operating_state: d[3],
            error: u16_at(4),
            v_charge_setpoint: f64::from(u16_at(6)) / 10.0,
        })),
        0x306 | 0x307 => Some(InverterFrame::Identity),
        0x300 if d.first() == Some(&0x01) => Some(InverterFrame::ShutdownRequest),
        _ => None,
    }
}

impl SmaReadings {
    /// The Sunny Island's 0x305 for these readings (`sim-inverter --sma`).
    pub fn frame(&self) -> Frame {
        let v = u16_raw(self.v, 10.0).to_le_bytes();
        let i = i16_raw(-self.i, 10.0).to_le_bytes();
        let t = i16_raw(self.t, 10.0).to_le_bytes();
        let soc = i16_raw(self.soc, 10.0).to_le_bytes();
        Frame::standard(0x305, &[v[0], v[1], i[0], i[1], t[0], t[1], soc[0], soc[1]])
    }
}

impl SmaState {
    /// The Sunny Island's 0x306 (`sim-inverter --sma`).
    pub fn frame(&self) -> Frame {
        let soh = u16_raw(self.soh, 1.0).to_le_bytes();
        let e = self.error.to_le_bytes();
        let cvl = u16_raw(self.v_charge_setpoint, 10.0).to_le_bytes();
        Frame::standard(
            0x306,
            &[
                soh[0],
                soh[1],
                self.charge_procedure,
                self.operating_state,
                e[0],
                e[1],
                cvl[0],
                cvl[1],
            ],
        )
    }
}

/// `[[bmses-out]] INVERTER-TIMEOUT`: is the inverter talking?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Talk {
    /// Nothing heard yet since the output started.
    #[default]
    NotYet,
    Talking,
    Silent,
}

/// Watches one inverter's frames; pure, time passed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InverterWatch {
    /// `None`: this inverter never talks (INVERTER-TIMEOUT = 0).
    timeout: Option<Duration>,
    started: Instant,
    last_heard: Option<Instant>,
    talk: Talk,
}

/// A change worth an event and a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkChange {
    WentSilent,
    Back,
}

impl InverterWatch {
    pub fn new(timeout: Option<Duration>, now: Instant) -> InverterWatch {
        InverterWatch {
            timeout,
            started: now,
            last_heard: None,
            talk: Talk::NotYet,
        }
    }

    pub fn talk(&self) -> Talk {
        self.talk
    }

    /// The same watch under another INVERTER-TIMEOUT (a reload): what was
    /// heard, and whether the inverter was already reported silent, stay.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> InverterWatch {
        self.timeout = timeout;
        self
    }

    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// A frame from the inverter arrived.
    pub fn heard(&mut self, now: Instant) -> Option<TalkChange> {
        self.last_heard = Some(now);
        let was = std::mem::replace(&mut self.talk, Talk::Talking);
        (was == Talk::Silent).then_some(TalkChange::Back)
    }

    /// The moment the inverter turns silent if nothing is heard before.
    pub fn deadline(&self) -> Option<Instant> {
        let timeout = self.timeout?;
        (self.talk != Talk::Silent).then(|| self.last_heard.unwrap_or(self.started) + timeout)
    }

    /// Checks the clock: an inverter quiet for the timeout turns silent
    /// (also one never heard since the output started).
    pub fn check(&mut self, now: Instant) -> Option<TalkChange> {
        let due = self.deadline()?;
        if now < due {
            return None;
        }
        self.talk = Talk::Silent;
        Some(TalkChange::WentSilent)
    }
}

#[cfg(test)]
mod tests;
