//! The Pylontech low-voltage CAN protocol: every frame, both directions.
//!
//! Decoding is by field length, so the DLC variants seen in the wild (0x355
//! with 4, 6 or 8 bytes, 0x356 with 6 or 8, 0x359 with 7 or 8, 0x35C with 1, 2
//! or 8) all decode; a frame too short for its required fields, an extended-ID
//! or remote frame, or a value outside physical range is a typed error.
//!
//! Encoding rounds to the field's unit (never truncates), except current
//! limits, which are rounded down so that rounding never allows more current
//! than the rules give (docs/combining.md, "Rounding"); it saturates to the
//! field's range, never emits more than 8 bytes and never a negative limit.
//! Physical values are `f64` in V, A, degC and %; decoding divides the raw
//! integer by a power of ten so that 532 prints back as 53.2.

use crate::frame::{CanId, Frame, FrameKind};
use thiserror::Error;

pub const ID_KEEPALIVE: u16 = 0x305;
pub const ID_LIMITS: u16 = 0x351;
pub const ID_SOC: u16 = 0x355;
pub const ID_MEASUREMENTS: u16 = 0x356;
pub const ID_FLAGS: u16 = 0x359;
pub const ID_SMA_ALARMS: u16 = 0x35A;
pub const ID_REQUESTS: u16 = 0x35C;
pub const ID_MANUFACTURER: u16 = 0x35E;
pub const ID_BATTERY_INFO: u16 = 0x35F;
pub const ID_BANK_STATUS: u16 = 0x372;
pub const ID_CELLS: u16 = 0x373;
pub const ID_ENERGY: u16 = 0x378;
pub const ID_CAPACITY: u16 = 0x379;

/// Physical limits beyond which a decoded value is a broken frame, not a battery.
pub const VOLTAGE_RANGE: (f64, f64) = (0.0, 100.0);
pub const TEMPERATURE_RANGE: (f64, f64) = (-50.0, 150.0);
pub const PERCENT_MAX: f64 = 100.0;

/// Kelvin offset used by 0x373 (the protocol uses 273, not 273.15).
const KELVIN_OFFSET: f64 = 273.0;

/// 0x351: charge voltage and the current limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Charge voltage limit (CVL), V.
    pub v_charge_cmd: f64,
    /// Charge current limit (CCL), A, never negative.
    pub i_lim_charge: f64,
    /// Discharge current limit (DCL), A, never negative.
    pub i_lim_discharge: f64,
    /// Discharge voltage limit (DVL), V; `None` in 6-byte frames or sent as 0.
    pub v_discharge_min: Option<f64>,
}

/// 0x355: state of charge and health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateOfCharge {
    /// %.
    pub soc: f64,
    /// %.
    pub soh: f64,
    /// SMA's high-resolution SOC, %; `None` when absent or sent as 0.
    pub soc_hires: Option<f64>,
}

/// 0x356: pack voltage, current (+ = charging) and temperature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurements {
    pub v_avg: f64,
    pub i_total: f64,
    pub t_avg: f64,
}

/// 0x359: protection and alarm bytes, module count.
///
/// Unknown bits are kept: combining ORs the bytes through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// Byte 0, protection 1.
    pub error_flags_1: u8,
    /// Byte 1, protection 2.
    pub error_flags_2: u8,
    /// Byte 2, alarm 1.
    pub warning_flags_1: u8,
    /// Byte 3, alarm 2.
    pub warning_flags_2: u8,
    pub n_modules: u8,
}

/// Protection 2 (byte 1) bit 3: system error, set in the safe state.
pub const ERROR2_SYSTEM_ERROR: u8 = 0x08;
/// Alarm 2 (byte 3) bit 3: internal communication fail, set when degraded.
pub const WARNING2_INTERNAL_COMM_FAIL: u8 = 0x08;

/// One of the four flag bytes of 0x359.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagByte {
    /// Byte 0.
    Protection1,
    /// Byte 1.
    Protection2,
    /// Byte 2, the same layout as byte 0.
    Alarm1,
    /// Byte 3, the same layout as byte 1.
    Alarm2,
}

impl FlagByte {
    /// The field name, as in decode output and the telemetry JSON.
    pub fn field(self) -> &'static str {
        match self {
            FlagByte::Protection1 => "error_flags_1",
            FlagByte::Protection2 => "error_flags_2",
            FlagByte::Alarm1 => "warning_flags_1",
            FlagByte::Alarm2 => "warning_flags_2",
        }
    }

    fn of_mut(self, f: &mut Flags) -> &mut u8 {
        match self {
            FlagByte::Protection1 => &mut f.error_flags_1,
            FlagByte::Protection2 => &mut f.error_flags_2,
            FlagByte::Alarm1 => &mut f.warning_flags_1,
            FlagByte::Alarm2 => &mut f.warning_flags_2,
        }
    }

    /// Where 0x35A carries this byte's conditions: bytes 0-3 (alarms) for
    /// protections, 4-7 (warnings) for alarms.
    fn sma_half(self) -> usize {
        match self {
            FlagByte::Protection1 | FlagByte::Protection2 => 0,
            FlagByte::Alarm1 | FlagByte::Alarm2 => 4,
        }
    }
}

/// One bit of 0x359 that has a meaning (Pylontech document; unknown bits
/// pass through unnamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagBit {
    pub byte: FlagByte,
    pub mask: u8,
    /// Its id in MQTT discovery.
    pub key: &'static str,
    /// What it means, for people.
    pub name: &'static str,
    /// The 0x35A pairs that mean it, as (byte within the half, pair 0-3):
    /// any of them active sets the bit.
    pub sma: &'static [(usize, u8)],
}

const fn bit(byte: FlagByte, mask: u8, key: &'static str, name: &'static str, sma: &'static [(usize, u8)]) -> FlagBit {
    FlagBit {
        byte,
        mask,
        key,
        name,
        sma,
    }
}

/// Every named bit of 0x359: the one table that decoding of 0x35A, MQTT
/// discovery and the telemetry use. SMA pairs: byte 0 pair 0 general, 1
/// high voltage, 2 low voltage, 3 high temperature; byte 1 pair 0 low
/// temperature, 3 discharge current; byte 2 pair 0 charge current, 3 BMS
/// internal.
#[rustfmt::skip]
pub const FLAG_BITS: &[FlagBit] = {
    use FlagByte::*;
    &[
        bit(Protection1, 0x02, "protection_over_voltage", "Over-voltage protection", &[(0, 1)]),
        bit(Protection1, 0x04, "protection_under_voltage", "Under-voltage protection", &[(0, 2)]),
        bit(Protection1, 0x08, "protection_over_temperature", "Over-temperature protection", &[(0, 3)]),
        bit(Protection1, 0x10, "protection_under_temperature", "Under-temperature protection", &[(1, 0)]),
        bit(Protection1, 0x80, "protection_discharge_over_current", "Discharge over-current protection", &[(1, 3)]),
        bit(Protection2, 0x01, "protection_charge_over_current", "Charge over-current protection", &[(2, 0)]),
        bit(Protection2, ERROR2_SYSTEM_ERROR, "protection_system_error", "System error", &[(0, 0), (2, 3)]),
        bit(Alarm1, 0x02, "alarm_high_voltage", "High voltage alarm", &[(0, 1)]),
        bit(Alarm1, 0x04, "alarm_low_voltage", "Low voltage alarm", &[(0, 2)]),
        bit(Alarm1, 0x08, "alarm_high_temperature", "High temperature alarm", &[(0, 3)]),
        bit(Alarm1, 0x10, "alarm_low_temperature", "Low temperature alarm", &[(1, 0)]),
        bit(Alarm1, 0x80, "alarm_discharge_high_current", "Discharge high current alarm", &[(1, 3)]),
        bit(Alarm2, 0x01, "alarm_charge_high_current", "Charge high current alarm", &[(2, 0)]),
        bit(Alarm2, WARNING2_INTERNAL_COMM_FAIL, "alarm_internal_communication", "Internal communication alarm",
            &[(0, 0), (2, 3)]),
    ]
};

/// 0x35C: request flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub charge_enable: bool,
    pub discharge_enable: bool,
    pub force_charge_request: bool,
    pub force_charge_request_2: bool,
    pub balancing_charge_request: bool,
}

impl Requests {
    /// What a battery that sends no 0x35C is taken to mean: normal operation.
    pub const NORMAL: Requests = Requests {
        charge_enable: true,
        discharge_enable: true,
        force_charge_request: false,
        force_charge_request_2: false,
        balancing_charge_request: false,
    };

    fn byte(self) -> u8 {
        (u8::from(self.charge_enable) << 7)
            | (u8::from(self.discharge_enable) << 6)
            | (u8::from(self.force_charge_request) << 5)
            | (u8::from(self.force_charge_request_2) << 4)
            | (u8::from(self.balancing_charge_request) << 3)
    }

    fn from_byte(b: u8) -> Requests {
        Requests {
            charge_enable: b & 0x80 != 0,
            discharge_enable: b & 0x40 != 0,
            force_charge_request: b & 0x20 != 0,
            force_charge_request_2: b & 0x10 != 0,
            balancing_charge_request: b & 0x08 != 0,
        }
    }
}

/// 0x35E: manufacturer name, at most 8 ASCII bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Manufacturer {
    bytes: [u8; 8],
    len: u8,
}

impl Manufacturer {
    /// Builds a name from text; `None` when it is empty, not ASCII or longer
    /// than 8 bytes (config validation reports that to the user).
    pub fn new(name: &str) -> Option<Manufacturer> {
        let raw = name.as_bytes();
        if raw.is_empty() || raw.len() > 8 || !name.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Manufacturer {
            bytes,
            len: raw.len() as u8,
        })
    }

    /// The name without NUL or space padding; non-printable bytes are
    /// replaced so that a log line or JSON string stays readable.
    pub fn name(&self) -> String {
        self.bytes[..usize::from(self.len)]
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '\u{FFFD}'
                }
            })
            .collect::<String>()
            .trim_end_matches([' ', '\u{FFFD}'])
            .to_string()
    }

    fn from_payload(data: &[u8]) -> Manufacturer {
        let end = data.iter().rposition(|&b| b != 0 && b != b' ').map_or(0, |i| i + 1);
        let mut bytes = [0u8; 8];
        bytes[..end].copy_from_slice(&data[..end]);
        Manufacturer { bytes, len: end as u8 }
    }
}

impl std::fmt::Debug for Manufacturer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.name())
    }
}

/// 0x373: cell extremes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellExtremes {
    /// V.
    pub v_cell_min: f64,
    /// V.
    pub v_cell_max: f64,
    /// degC.
    pub t_cell_min: f64,
    /// degC.
    pub t_cell_max: f64,
}

/// 0x35A: SMA-style alarms and warnings as 2-bit pairs, kept raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmaAlarms {
    pub raw: [u8; 8],
}

impl SmaAlarms {
    /// A pair is active when its low bit is set.
    fn active(byte: u8, pair: u8) -> bool {
        byte >> (pair * 2) & 0x01 != 0
    }

    /// The Pylontech 0x359 bytes these alarms mean ([`FLAG_BITS`]), so that
    /// a battery that sends 0x35A instead of 0x359 combines like any other.
    /// Module count is not carried by 0x35A and is 0.
    pub fn to_flags(&self) -> Flags {
        let mut flags = Flags::default();
        for bit in FLAG_BITS {
            let half = bit.byte.sma_half();
            if bit
                .sma
                .iter()
                .any(|&(byte, pair)| Self::active(self.raw[half + byte], pair))
            {
                *bit.byte.of_mut(&mut flags) |= bit.mask;
            }
        }
        flags
    }

    /// The 0x35A a virtual BMS sends for these 0x359 bytes: the inverse of
    /// [`SmaAlarms::to_flags`]. Every pair that `to_flags` reads is
    /// supported: `10` when clear, `01` when set; the others are `00`
    /// (not supported). The system-error bit sets both pairs that mean it.
    pub fn from_flags(flags: &Flags) -> SmaAlarms {
        let half = |first: u8, second: u8| -> [u8; 4] {
            let mut b = [0u8; 4];
            for &(byte, pair, set) in &[
                (0, 1, first & 0x02 != 0),
                (0, 2, first & 0x04 != 0),
                (0, 3, first & 0x08 != 0),
                (1, 0, first & 0x10 != 0),
                (1, 3, first & 0x80 != 0),
                (2, 0, second & 0x01 != 0),
                (0, 0, second & 0x08 != 0),
                (2, 3, second & 0x08 != 0),
            ] {
                b[byte] |= (if set { 0b01 } else { 0b10 }) << (pair * 2);
            }
            b
        };
        let e = half(flags.error_flags_1, flags.error_flags_2);
        let w = half(flags.warning_flags_1, flags.warning_flags_2);
        SmaAlarms {
            raw: [e[0], e[1], e[2], e[3], w[0], w[1], w[2], w[3]],
        }
    }
}

/// 0x35F: battery type, BMS version and capacity (layout differs per vendor;
/// only the capacity is interpreted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatteryInfo {
    pub raw: [u8; 8],
    pub len: u8,
    /// Bytes 4-5, Ah.
    pub capacity_ah: f64,
}

/// 0x378: energy counters, kWh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Energy {
    pub charged_kwh: f64,
    pub discharged_kwh: f64,
}

/// 0x372: how many batteries of the bank are online, blocking charge,
/// blocking discharge and offline (Victron's "modules" counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BankStatus {
    pub online: u16,
    pub blocking_charge: u16,
    pub blocking_discharge: u16,
    pub offline: u16,
}

/// One decoded Pylontech frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message {
    KeepAlive,
    Limits(Limits),
    StateOfCharge(StateOfCharge),
    Measurements(Measurements),
    Flags(Flags),
    SmaAlarms(SmaAlarms),
    Requests(Requests),
    Manufacturer(Manufacturer),
    BatteryInfo(BatteryInfo),
    Cells(CellExtremes),
    Energy(Energy),
    BankStatus(BankStatus),
    InstalledCapacity {
        capacity_ah: f64,
    },
    /// A standard-ID frame this protocol does not define; not an error,
    /// CAN buses carry other traffic.
    Other {
        id: u16,
    },
}

/// Why a frame cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum DecodeError {
    #[error("frame 0x{id:03X} has {len} data bytes, needs at least {need}")]
    TooShort { id: u16, len: u8, need: u8 },
    #[error("extended-ID frame 0x{0:08X} (the protocol uses standard IDs only)")]
    Extended(u32),
    #[error("remote frame 0x{0:X} (the protocol uses data frames only)")]
    Remote(u32),
    #[error("frame 0x{id:03X}: {field} = {value} is outside {min}..{max}")]
    OutOfRange {
        id: u16,
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
}

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([d[i], d[i + 1]])
}

fn i16_at(d: &[u8], i: usize) -> i16 {
    i16::from_le_bytes([d[i], d[i + 1]])
}

fn need(id: u16, data: &[u8], n: u8) -> Result<(), DecodeError> {
    if data.len() < usize::from(n) {
        Err(DecodeError::TooShort {
            id,
            len: data.len() as u8,
            need: n,
        })
    } else {
        Ok(())
    }
}

fn in_range(id: u16, field: &'static str, value: f64, range: (f64, f64)) -> Result<f64, DecodeError> {
    if value >= range.0 && value <= range.1 {
        Ok(value)
    } else {
        Err(DecodeError::OutOfRange {
            id,
            field,
            value,
            min: range.0,
            max: range.1,
        })
    }
}

/// Decodes one frame.
pub fn decode(frame: &Frame) -> Result<Message, DecodeError> {
    let id = match (frame.id, frame.kind) {
        (CanId::Extended(id), _) => return Err(DecodeError::Extended(id)),
        (CanId::Standard(id), FrameKind::Remote) => return Err(DecodeError::Remote(u32::from(id))),
        (CanId::Standard(id), FrameKind::Data) => id,
    };
    let d = frame.data();
    let percent = (0.0, PERCENT_MAX);
    Ok(match id {
        ID_KEEPALIVE => Message::KeepAlive,
        ID_LIMITS => {
            need(id, d, 6)?;
            // The Pylontech document leaves DVL blank: 0 means "not sent".
            let v_discharge_min = match d.get(6..8).map(|_| u16_at(d, 6)) {
                None | Some(0) => None,
                Some(raw) => Some(in_range(id, "v_discharge_min", f64::from(raw) / 10.0, VOLTAGE_RANGE)?),
            };
            Message::Limits(Limits {
                v_charge_cmd: in_range(id, "v_charge_cmd", f64::from(u16_at(d, 0)) / 10.0, VOLTAGE_RANGE)?,
                // A negative limit means "none allowed": clamp to 0 on input.
                i_lim_charge: f64::from(i16_at(d, 2).max(0)) / 10.0,
                i_lim_discharge: f64::from(i16_at(d, 4).max(0)) / 10.0,
                v_discharge_min,
            })
        }
        ID_SOC => {
            need(id, d, 4)?;
            let hires = if d.len() >= 6 { u16_at(d, 4) } else { 0 };
            Message::StateOfCharge(StateOfCharge {
                soc: in_range(id, "soc", f64::from(u16_at(d, 0)), percent)?,
                soh: in_range(id, "soh", f64::from(u16_at(d, 2)), percent)?,
                soc_hires: match hires {
                    0 => None,
                    h => Some(in_range(id, "soc_hires", f64::from(h) / 100.0, percent)?),
                },
            })
        }
        ID_MEASUREMENTS => {
            need(id, d, 6)?;
            Message::Measurements(Measurements {
                v_avg: in_range(id, "v_avg", f64::from(i16_at(d, 0)) / 100.0, VOLTAGE_RANGE)?,
                i_total: f64::from(i16_at(d, 2)) / 10.0,
                t_avg: in_range(id, "t_avg", f64::from(i16_at(d, 4)) / 10.0, TEMPERATURE_RANGE)?,
            })
        }
        ID_FLAGS => {
            need(id, d, 5)?;
            Message::Flags(Flags {
                error_flags_1: d[0],
                error_flags_2: d[1],
                warning_flags_1: d[2],
                warning_flags_2: d[3],
                n_modules: d[4],
            })
        }
        ID_SMA_ALARMS => {
            need(id, d, 8)?;
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&d[..8]);
            Message::SmaAlarms(SmaAlarms { raw })
        }
        ID_REQUESTS => {
            need(id, d, 1)?;
            Message::Requests(Requests::from_byte(d[0]))
        }
        ID_MANUFACTURER => {
            need(id, d, 1)?;
            Message::Manufacturer(Manufacturer::from_payload(d))
        }
        ID_BATTERY_INFO => {
            need(id, d, 6)?;
            let mut raw = [0u8; 8];
            raw[..d.len()].copy_from_slice(d);
            Message::BatteryInfo(BatteryInfo {
                raw,
                len: d.len() as u8,
                capacity_ah: f64::from(u16_at(d, 4)),
            })
        }
        ID_CELLS => {
            need(id, d, 8)?;
            let temp = |field, i| in_range(id, field, f64::from(u16_at(d, i)) - KELVIN_OFFSET, TEMPERATURE_RANGE);
            Message::Cells(CellExtremes {
                v_cell_min: f64::from(u16_at(d, 0)) / 1000.0,
                v_cell_max: f64::from(u16_at(d, 2)) / 1000.0,
                t_cell_min: temp("t_cell_min", 4)?,
                t_cell_max: temp("t_cell_max", 6)?,
            })
        }
        ID_ENERGY => {
            need(id, d, 8)?;
            let u32_at = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
            Message::Energy(Energy {
                charged_kwh: f64::from(u32_at(0)) / 10.0,
                discharged_kwh: f64::from(u32_at(4)) / 10.0,
            })
        }
        ID_BANK_STATUS => {
            need(id, d, 8)?;
            Message::BankStatus(BankStatus {
                online: u16_at(d, 0),
                blocking_charge: u16_at(d, 2),
                blocking_discharge: u16_at(d, 4),
                offline: u16_at(d, 6),
            })
        }
        ID_CAPACITY => {
            need(id, d, 2)?;
            Message::InstalledCapacity {
                capacity_ah: f64::from(u16_at(d, 0)),
            }
        }
        other => Message::Other { id: other },
    })
}

/// Rounds `value * scale` to the nearest integer and saturates it to
/// `min..=max`; NaN becomes `min` (the safe end for every limit field).
fn to_raw(value: f64, scale: f64, min: i64, max: i64) -> i64 {
    saturate((value * scale).round(), min, max)
}

fn saturate(whole: f64, min: i64, max: i64) -> i64 {
    if whole.is_nan() {
        return min;
    }
    (whole as i64).clamp(min, max)
}

/// How far below a whole 0.1 A a current limit may be and still count as
/// it: floating-point noise (100 A x 0.29 is 28.999999999999996 A), a
/// ten-millionth of an ampere, not a current anyone could draw.
const LIMIT_NOISE: f64 = 1e-6;

/// A current limit in 0.1 A, rounded down (toward 0, limits are never
/// negative): the inverters' limits together then never exceed the combined
/// limit, a setpoint or a cap. Rules that depend on what an inverter is
/// told (e.g. victron's "charging forbidden") judge this value.
pub fn limit_raw(amperes: f64) -> i16 {
    saturate((amperes * 10.0 + LIMIT_NOISE).floor(), 0, i64::from(i16::MAX)) as i16
}

fn u16_le(value: f64, scale: f64) -> [u8; 2] {
    (to_raw(value, scale, 0, i64::from(u16::MAX)) as u16).to_le_bytes()
}

fn i16_le(value: f64, scale: f64) -> [u8; 2] {
    (to_raw(value, scale, i64::from(i16::MIN), i64::from(i16::MAX)) as i16).to_le_bytes()
}

/// A limit is s16 on the wire but never negative.
fn limit_le(value: f64) -> [u8; 2] {
    limit_raw(value).to_le_bytes()
}

fn percent_le(value: f64, scale: f64) -> [u8; 2] {
    (to_raw(value, scale, 0, (PERCENT_MAX * scale) as i64) as u16).to_le_bytes()
}

fn concat<const N: usize>(parts: &[[u8; 2]]) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, p) in parts.iter().enumerate() {
        out[i * 2..i * 2 + 2].copy_from_slice(p);
    }
    out
}

/// Encodes one message as the frame a virtual BMS sends (or, for 0x305, an
/// inverter). DLCs follow the Pylontech document.
pub fn encode(message: &Message) -> Frame {
    match *message {
        Message::KeepAlive => Frame::standard(ID_KEEPALIVE, &[0; 8]),
        Message::Limits(l) => {
            let dvl = u16_le(l.v_discharge_min.unwrap_or(0.0), 10.0);
            let data: [u8; 8] = concat(&[
                u16_le(l.v_charge_cmd, 10.0),
                limit_le(l.i_lim_charge),
                limit_le(l.i_lim_discharge),
                dvl,
            ]);
            Frame::standard(ID_LIMITS, &data)
        }
        Message::StateOfCharge(s) => {
            let base = [percent_le(s.soc, 1.0), percent_le(s.soh, 1.0)];
            match s.soc_hires {
                Some(h) => Frame::standard(ID_SOC, &concat::<6>(&[base[0], base[1], percent_le(h, 100.0)])),
                None => Frame::standard(ID_SOC, &concat::<4>(&base)),
            }
        }
        Message::Measurements(m) => {
            let data: [u8; 6] = concat(&[i16_le(m.v_avg, 100.0), i16_le(m.i_total, 10.0), i16_le(m.t_avg, 10.0)]);
            Frame::standard(ID_MEASUREMENTS, &data)
        }
        Message::Flags(f) => Frame::standard(
            ID_FLAGS,
            &[
                f.error_flags_1,
                f.error_flags_2,
                f.warning_flags_1,
                f.warning_flags_2,
                f.n_modules,
                b'P',
                b'N',
            ],
        ),
        Message::SmaAlarms(a) => Frame::standard(ID_SMA_ALARMS, &a.raw),
        Message::Requests(r) => Frame::standard(ID_REQUESTS, &[r.byte(), 0]),
        Message::Manufacturer(m) => Frame::standard(ID_MANUFACTURER, &m.bytes),
        Message::BatteryInfo(b) => Frame::standard(ID_BATTERY_INFO, &b.raw[..usize::from(b.len)]),
        Message::Cells(c) => {
            let data: [u8; 8] = concat(&[
                u16_le(c.v_cell_min, 1000.0),
                u16_le(c.v_cell_max, 1000.0),
                u16_le(c.t_cell_min + KELVIN_OFFSET, 1.0),
                u16_le(c.t_cell_max + KELVIN_OFFSET, 1.0),
            ]);
            Frame::standard(ID_CELLS, &data)
        }
        Message::Energy(e) => {
            let raw = |v: f64| (to_raw(v, 10.0, 0, i64::from(u32::MAX)) as u32).to_le_bytes();
            let (a, b) = (raw(e.charged_kwh), raw(e.discharged_kwh));
            Frame::standard(ID_ENERGY, &[a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]])
        }
        Message::BankStatus(b) => {
            let data: [u8; 8] = concat(&[
                b.online.to_le_bytes(),
                b.blocking_charge.to_le_bytes(),
                b.blocking_discharge.to_le_bytes(),
                b.offline.to_le_bytes(),
            ]);
            Frame::standard(ID_BANK_STATUS, &data)
        }
        Message::InstalledCapacity { capacity_ah } => Frame::standard(ID_CAPACITY, &u16_le(capacity_ah, 1.0)),
        Message::Other { id } => Frame::standard(id, &[]),
    }
}

#[cfg(test)]
mod tests;
