//! Responses: checking that a frame answers the request sent, then decoding
//! its INFO per command and per [`Protocol`] (reference §3 and §4).
//!
//! Decoders walk the counts the pack sends (cells M, temperatures N, the
//! "user defined" count P) and ignore trailing bytes (a US5000's 0x44 has
//! one more than V3.3 accounts for); too few bytes for what the counts
//! announce is an error. Values come out in V, A, Ah and degC with the
//! protocol's scales applied; fixed arrays hold cells and temperatures, so
//! decoding allocates nothing.

use super::Protocol;
use super::framing::{Frame, TooLong, write_frame};
use super::requests::Command;
use thiserror::Error;

/// Most cells a pack block may announce (reference §4: "any 1…32").
pub const MAX_CELLS: usize = 32;
/// Most temperatures a pack block may announce.
pub const MAX_TEMPS: usize = 16;

/// A response's return code (RTN, reference §3.12). No variant is 0x94 or
/// 0x95, so a response written with one cannot be those commands either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rtn {
    Normal,
    VerError,
    ChecksumError,
    LengthChecksumError,
    InvalidCid2,
    FormatError,
    InvalidData,
    /// Seplos: no (history) data.
    NoData,
    AdrError,
    /// Master and slave pack cannot talk.
    InternalCommError,
    /// Seplos.
    InvalidCid1,
    /// Seplos.
    ExecutionFailure,
    /// Seplos.
    DeviceFault,
    /// Seplos.
    InvalidPermissions,
}

impl Rtn {
    pub const ALL: [Rtn; 14] = [
        Rtn::Normal,
        Rtn::VerError,
        Rtn::ChecksumError,
        Rtn::LengthChecksumError,
        Rtn::InvalidCid2,
        Rtn::FormatError,
        Rtn::InvalidData,
        Rtn::NoData,
        Rtn::AdrError,
        Rtn::InternalCommError,
        Rtn::InvalidCid1,
        Rtn::ExecutionFailure,
        Rtn::DeviceFault,
        Rtn::InvalidPermissions,
    ];

    pub const fn code(self) -> u8 {
        match self {
            Rtn::Normal => 0x00,
            Rtn::VerError => 0x01,
            Rtn::ChecksumError => 0x02,
            Rtn::LengthChecksumError => 0x03,
            Rtn::InvalidCid2 => 0x04,
            Rtn::FormatError => 0x05,
            Rtn::InvalidData => 0x06,
            Rtn::NoData => 0x07,
            Rtn::AdrError => 0x90,
            Rtn::InternalCommError => 0x91,
            Rtn::InvalidCid1 => 0xE1,
            Rtn::ExecutionFailure => 0xE2,
            Rtn::DeviceFault => 0xE3,
            Rtn::InvalidPermissions => 0xE4,
        }
    }

    pub fn from_code(code: u8) -> Option<Rtn> {
        Rtn::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// Writes a response frame (for simulated packs and tests) into `out`.
pub fn encode_response(out: &mut [u8], ver: u8, adr: u8, rtn: Rtn, info: &[u8]) -> Result<usize, TooLong> {
    write_frame(out, ver, adr, rtn.code(), info)
}

/// Why a checked frame is not a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("CID1 0x{0:02X} is not a battery's (0x46)")]
    WrongDevice(u8),
    #[error("answer from address {got}, asked {asked}")]
    WrongAddress { asked: u8, got: u8 },
    #[error("a request (CID2 0x{0:02X}), not an answer: an echo or another master")]
    Echo(u8),
    #[error("the pack refused: RTN 0x{0:02X}")]
    Refused(u8),
    #[error("{what}: {have} INFO bytes, needs {need}")]
    TooShort {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{0} cells announced (1..={MAX_CELLS} expected)")]
    CellCount(u8),
    #[error("{0} temperatures announced (1..={MAX_TEMPS} expected)")]
    TemperatureCount(u8),
    #[error(
        "not the 0x92 answer of address {asked}: command value 0x{command:02X}, {len} INFO bytes (0x92's are the address and {MANAGEMENT_INFO} bytes)"
    )]
    NotManagement { asked: u8, command: u8, len: usize },
}

/// Checks that `frame` answers a request to `asked`: a battery's frame, from
/// that address, a return code and not a request (a request's CID2 is never
/// a valid RTN, so an echo of our own request shows), RTN normal. Returns
/// its INFO. VER is not checked (reference §1.5 step 7).
pub fn check_reply<'a>(frame: &Frame<'a>, asked: u8) -> Result<&'a [u8], ReplyError> {
    if frame.cid1 != super::CID1_BATTERY {
        return Err(ReplyError::WrongDevice(frame.cid1));
    }
    if Command::from_code(frame.cid2).is_some() || matches!(frame.cid2, 0x94 | 0x95) {
        return Err(ReplyError::Echo(frame.cid2));
    }
    if frame.adr != asked {
        return Err(ReplyError::WrongAddress { asked, got: frame.adr });
    }
    if frame.cid2 != Rtn::Normal.code() {
        return Err(ReplyError::Refused(frame.cid2));
    }
    Ok(frame.info)
}

/// Reads big-endian fields off an INFO slice.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { data, at: 0, what }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ReplyError> {
        let bytes = self.data.get(self.at..self.at + n).ok_or(ReplyError::TooShort {
            what: self.what,
            need: self.at + n,
            have: self.data.len(),
        })?;
        self.at += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, ReplyError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ReplyError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn i16(&mut self) -> Result<i16, ReplyError> {
        Ok(self.u16()? as i16)
    }

    fn u24(&mut self) -> Result<u32, ReplyError> {
        let b = self.take(3)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReplyError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The next field if `present` and the bytes are there, else `None`.
    fn optional_u16(&mut self, present: bool) -> Option<u16> {
        (present && self.remaining() >= 2).then(|| self.u16().ok()).flatten()
    }
}

/// The scales of one protocol (reference §4's table).
struct Units {
    /// Added to degC x 10 in a temperature field.
    kelvin_offset: i32,
    /// A per raw unit.
    current: f64,
    /// V per raw unit.
    voltage: f64,
    /// Ah per raw unit.
    capacity: f64,
}

impl Protocol {
    fn units(self) -> Units {
        match self {
            Protocol::Pylon => Units {
                kelvin_offset: 2731,
                current: 0.1,
                voltage: 0.001,
                capacity: 0.001,
            },
            Protocol::Seplos => Units {
                kelvin_offset: 2731,
                current: 0.01,
                voltage: 0.01,
                capacity: 0.01,
            },
            Protocol::Pace => Units {
                kelvin_offset: 2730,
                current: 0.01,
                voltage: 0.001,
                capacity: 0.01,
            },
        }
    }
}

impl Units {
    fn celsius(&self, raw: u16) -> f64 {
        f64::from(i32::from(raw) - self.kelvin_offset) / 10.0
    }
}

/// Scales by a power of ten and rounds away the float noise, so that
/// 0x0D45 mV reads 3.397, not 3.3970000000000002.
fn scaled(raw: f64, unit: f64) -> f64 {
    let decimals = (-unit.log10()).round() as i32;
    let p = 10f64.powi(decimals);
    (raw * unit * p).round() / p
}

/// One pack's block of a 0x42 answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackAnalog {
    cells_mv: [u16; MAX_CELLS],
    n_cells: u8,
    temperatures: [f64; MAX_TEMPS],
    n_temperatures: u8,
    /// A, + = charging.
    pub current: f64,
    /// The module's own voltage, V.
    pub voltage: f64,
    /// Ah.
    pub remaining_ah: f64,
    /// Full (or total) capacity, Ah, when sent.
    pub full_ah: Option<f64>,
    /// Design (rated) capacity, Ah: Seplos and PACE.
    pub design_ah: Option<f64>,
    pub cycles: Option<u16>,
    /// The pack's own SOC, %: Seplos only.
    pub soc: Option<f64>,
    /// The pack's own SOH, %: Seplos only.
    pub soh: Option<f64>,
}

impl PackAnalog {
    /// Cell voltages, mV, in the pack's order.
    pub fn cells_mv(&self) -> &[u16] {
        &self.cells_mv[..usize::from(self.n_cells)]
    }

    /// Temperatures, degC, in the pack's order (reference §3.3 item 4).
    pub fn temperatures(&self) -> &[f64] {
        &self.temperatures[..usize::from(self.n_temperatures)]
    }

    fn read(r: &mut Reader<'_>, protocol: Protocol) -> Result<PackAnalog, ReplyError> {
        let units = protocol.units();
        let m = r.u8()?;
        if m == 0 || usize::from(m) > MAX_CELLS {
            return Err(ReplyError::CellCount(m));
        }
        let mut cells_mv = [0u16; MAX_CELLS];
        for cell in &mut cells_mv[..usize::from(m)] {
            *cell = r.u16()?;
        }
        let n = r.u8()?;
        if n == 0 || usize::from(n) > MAX_TEMPS {
            return Err(ReplyError::TemperatureCount(n));
        }
        let mut temperatures = [0f64; MAX_TEMPS];
        for t in &mut temperatures[..usize::from(n)] {
            *t = units.celsius(r.u16()?);
        }
        let current = scaled(f64::from(r.i16()?), units.current);
        let voltage = scaled(f64::from(r.u16()?), units.voltage);
        let remaining = r.u16()?;
        let p = r.u8()?;
        let ah = |raw: f64| scaled(raw, units.capacity);
        let mut pack = PackAnalog {
            cells_mv,
            n_cells: m,
            temperatures,
            n_temperatures: n,
            current,
            voltage,
            remaining_ah: ah(f64::from(remaining)),
            full_ah: None,
            design_ah: None,
            cycles: None,
            soc: None,
            soh: None,
        };
        match protocol {
            Protocol::Pylon => {
                // P = 2: total and cycles; P >= 4: 0xFFFF there and the
                // 3-byte capacities after them (reference §3.3 items 8-12).
                let total = if p >= 1 { Some(r.u16()?) } else { None };
                pack.cycles = if p >= 2 { Some(r.u16()?) } else { None };
                pack.full_ah = total.map(|t| ah(f64::from(t)));
                if p >= 4 && r.remaining() >= 6 {
                    pack.remaining_ah = ah(f64::from(r.u24()?));
                    pack.full_ah = Some(ah(f64::from(r.u24()?)));
                }
            }
            Protocol::Seplos => {
                // P = 10: full capacity, SOC ‰, rated capacity, cycles,
                // SOH ‰, port voltage, 4 reserved (reference §4, V9).
                pack.full_ah = r.optional_u16(p >= 1).map(|v| ah(f64::from(v)));
                pack.soc = r.optional_u16(p >= 2).map(|v| f64::from(v) / 10.0);
                pack.design_ah = r.optional_u16(p >= 3).map(|v| ah(f64::from(v)));
                pack.cycles = r.optional_u16(p >= 4);
                pack.soh = r.optional_u16(p >= 5).map(|v| f64::from(v) / 10.0);
            }
            Protocol::Pace => {
                // P = 3: full capacity, cycles, design capacity.
                pack.full_ah = r.optional_u16(p >= 1).map(|v| ah(f64::from(v)));
                pack.cycles = r.optional_u16(p >= 2);
                pack.design_ah = r.optional_u16(p >= 3).map(|v| ah(f64::from(v)));
            }
        }
        Ok(pack)
    }
}

/// A 0x42 answer for one pack (the request's INFO named it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Analog {
    /// INFOFLAG: a status byte, never tested for a value (reference §3.3).
    pub info_flag: u8,
    /// The "command value": the pack's address echoed (Seplos sends its group).
    pub command: u8,
    pub pack: PackAnalog,
}

/// Decodes a 0x42 answer to a one-pack request.
pub fn decode_analog(info: &[u8], protocol: Protocol) -> Result<Analog, ReplyError> {
    let mut r = Reader::new(info, "0x42 analog values");
    let info_flag = r.u8()?;
    let command = r.u8()?;
    let pack = PackAnalog::read(&mut r, protocol)?;
    Ok(Analog {
        info_flag,
        command,
        pack,
    })
}

/// A 0x42 answer to INFO = 0xFF: a pack count, then one block per pack
/// (Pylon only; reference §3.3, the captures V4, V5, V8).
#[derive(Debug, Clone, Copy)]
pub struct AnalogGroup<'a> {
    pub info_flag: u8,
    pub count: u8,
    blocks: &'a [u8],
}

impl<'a> AnalogGroup<'a> {
    /// The packs' blocks in order; stops at the first that does not decode.
    pub fn packs(&self) -> impl Iterator<Item = Result<PackAnalog, ReplyError>> + 'a {
        let mut r = Reader::new(self.blocks, "0x42 group block");
        let mut failed = false;
        (0..self.count).map_while(move |_| {
            if failed {
                return None;
            }
            let pack = PackAnalog::read(&mut r, Protocol::Pylon);
            failed = pack.is_err();
            Some(pack)
        })
    }
}

/// Decodes a 0x42 answer to a whole-group request.
pub fn decode_analog_group(info: &[u8]) -> Result<AnalogGroup<'_>, ReplyError> {
    let mut r = Reader::new(info, "0x42 group");
    let info_flag = r.u8()?;
    let count = r.u8()?;
    Ok(AnalogGroup {
        info_flag,
        count,
        blocks: &info[2..],
    })
}

/// A 0x92 answer: the live limits and the request bits (no INFOFLAG).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargeManagement {
    pub command: u8,
    /// Charge voltage limit, V.
    pub cvl: f64,
    /// Discharge voltage limit, V.
    pub dvl: f64,
    /// Charge current limit, A (a negative one reads 0: none allowed).
    pub ccl: f64,
    /// Discharge current limit, A, as a magnitude: US packs send it
    /// negative, emulators positive (reference §3.6).
    pub dcl: f64,
    /// The status byte (bit 7 charge enable, 6 discharge enable, 5 and 4
    /// force charge, 3 full-charge request).
    pub status: u8,
}

/// Decodes a 0x92 answer.
pub fn decode_charge_management(info: &[u8]) -> Result<ChargeManagement, ReplyError> {
    let mut r = Reader::new(info, "0x92 charge management");
    Ok(ChargeManagement {
        command: r.u8()?,
        cvl: scaled(f64::from(r.u16()?), 0.001),
        dvl: scaled(f64::from(r.u16()?), 0.001),
        ccl: scaled(f64::from(r.i16()?.max(0)), 0.1),
        dcl: scaled(f64::from(r.i16()?.unsigned_abs()), 0.1),
        status: r.u8()?,
    })
}

/// The INFO bytes of a 0x92 answer: the command value and 9 (reference §3.6).
pub const MANAGEMENT_INFO: usize = 10;

/// Decodes the 0x92 answer of the pack at `asked`, refusing what is not
/// one: its command value must be the address asked and its INFO
/// [`MANAGEMENT_INFO`] bytes (reference §3.6, and both captures, V3 and
/// V7). Answers carry no command code, so an answer to another request
/// that arrives late, in 0x92's wait, is only told by its shape; read as
/// 0x92, V7's 0x42 answer would give CVL 0.527 V, CCL 334.8 A and charge
/// and discharge forbidden.
pub fn decode_charge_management_of(info: &[u8], asked: u8) -> Result<ChargeManagement, ReplyError> {
    let m = decode_charge_management(info)?;
    if m.command != asked || info.len() != MANAGEMENT_INFO {
        return Err(ReplyError::NotManagement {
            asked,
            command: m.command,
            len: info.len(),
        });
    }
    Ok(m)
}

/// One state byte of 0x44 (reference §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmState {
    Normal,
    BelowLimit,
    AboveLimit,
    /// 0xF0, or a brand's own code (PACE's 0x80..0xEF).
    Other(u8),
}

impl AlarmState {
    pub fn of(raw: u8) -> AlarmState {
        match raw {
            0x00 => AlarmState::Normal,
            0x01 => AlarmState::BelowLimit,
            0x02 => AlarmState::AboveLimit,
            other => AlarmState::Other(other),
        }
    }
}

/// The Pylontech tail of a 0x44 block (items 5-12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PylonStatus {
    pub charge_current: AlarmState,
    pub module_voltage: AlarmState,
    pub discharge_current: AlarmState,
    /// Status 1 to 5.
    pub status: [u8; 5],
}

/// A 0x44 answer for one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alarms {
    pub info_flag: u8,
    pub command: u8,
    cell_states: [u8; MAX_CELLS],
    n_cells: u8,
    temperature_states: [u8; MAX_TEMPS],
    n_temperatures: u8,
    /// Pylon only: Seplos and PACE follow with their own bytes, not
    /// decoded here (docs/rs485.md, "0x44 of Seplos and PACE").
    pub pylon: Option<PylonStatus>,
}

impl Alarms {
    pub fn cell_states(&self) -> impl Iterator<Item = AlarmState> + '_ {
        self.cell_states[..usize::from(self.n_cells)]
            .iter()
            .map(|&b| AlarmState::of(b))
    }

    pub fn temperature_states(&self) -> impl Iterator<Item = AlarmState> + '_ {
        self.temperature_states[..usize::from(self.n_temperatures)]
            .iter()
            .map(|&b| AlarmState::of(b))
    }
}

/// Decodes a 0x44 answer to a one-pack request.
pub fn decode_alarms(info: &[u8], protocol: Protocol) -> Result<Alarms, ReplyError> {
    let mut r = Reader::new(info, "0x44 alarm info");
    let info_flag = r.u8()?;
    let command = r.u8()?;
    let m = r.u8()?;
    if m == 0 || usize::from(m) > MAX_CELLS {
        return Err(ReplyError::CellCount(m));
    }
    let mut cell_states = [0u8; MAX_CELLS];
    cell_states[..usize::from(m)].copy_from_slice(r.take(usize::from(m))?);
    let n = r.u8()?;
    if usize::from(n) > MAX_TEMPS {
        return Err(ReplyError::TemperatureCount(n));
    }
    let mut temperature_states = [0u8; MAX_TEMPS];
    temperature_states[..usize::from(n)].copy_from_slice(r.take(usize::from(n))?);
    let pylon = match protocol {
        Protocol::Pylon => Some(PylonStatus {
            charge_current: AlarmState::of(r.u8()?),
            module_voltage: AlarmState::of(r.u8()?),
            discharge_current: AlarmState::of(r.u8()?),
            status: r.array()?,
        }),
        Protocol::Seplos | Protocol::Pace => None,
    };
    Ok(Alarms {
        info_flag,
        command,
        cell_states,
        n_cells: m,
        temperature_states,
        n_temperatures: n,
        pylon,
    })
}

/// A 0x47 answer: the protection parameters (not the live limits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SystemParameters {
    pub info_flag: u8,
    /// V.
    pub cell_high: f64,
    pub cell_low: f64,
    pub cell_under: f64,
    /// degC.
    pub charge_high_temperature: f64,
    pub charge_low_temperature: f64,
    /// A, as sent.
    pub charge_current: f64,
    /// V.
    pub module_high: f64,
    pub module_low: f64,
    pub module_under: f64,
    /// degC.
    pub discharge_high_temperature: f64,
    pub discharge_low_temperature: f64,
    /// A, as sent (negative on US packs).
    pub discharge_current: f64,
}

/// Decodes a 0x47 answer: INFOFLAG and 12 words, no command value (V6).
pub fn decode_system_parameters(info: &[u8], protocol: Protocol) -> Result<SystemParameters, ReplyError> {
    let units = protocol.units();
    let mut r = Reader::new(info, "0x47 system parameters");
    let info_flag = r.u8()?;
    let mut volts = || r.u16().map(|v| scaled(f64::from(v), 0.001));
    let (cell_high, cell_low, cell_under) = (volts()?, volts()?, volts()?);
    let charge_high_temperature = units.celsius(r.u16()?);
    let charge_low_temperature = units.celsius(r.u16()?);
    let charge_current = scaled(f64::from(r.i16()?), 0.1);
    let mut volts = || r.u16().map(|v| scaled(f64::from(v), 0.001));
    let (module_high, module_low, module_under) = (volts()?, volts()?, volts()?);
    Ok(SystemParameters {
        info_flag,
        cell_high,
        cell_low,
        cell_under,
        charge_high_temperature,
        charge_low_temperature,
        charge_current,
        module_high,
        module_low,
        module_under,
        discharge_high_temperature: units.celsius(r.u16()?),
        discharge_low_temperature: units.celsius(r.u16()?),
        discharge_current: scaled(f64::from(r.i16()?), 0.1),
    })
}

/// Text of a fixed ASCII field, without its padding.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches([' ', '\0']).to_string()
}

/// A 0x51 answer (no INFOFLAG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManufacturerInfo {
    pub name: [u8; 10],
    pub version: [u8; 2],
    /// Seplos puts its CAN protocol selection here.
    pub manufacturer: [u8; 20],
}

impl ManufacturerInfo {
    pub fn name(&self) -> String {
        text(&self.name)
    }

    pub fn manufacturer(&self) -> String {
        text(&self.manufacturer)
    }
}

pub fn decode_manufacturer_info(info: &[u8]) -> Result<ManufacturerInfo, ReplyError> {
    let mut r = Reader::new(info, "0x51 manufacturer info");
    Ok(ManufacturerInfo {
        name: r.array()?,
        version: r.array()?,
        manufacturer: r.array()?,
    })
}

/// A 0x93 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialNumber {
    pub command: u8,
    pub serial: [u8; 16],
}

impl SerialNumber {
    pub fn text(&self) -> String {
        text(&self.serial)
    }
}

pub fn decode_serial_number(info: &[u8]) -> Result<SerialNumber, ReplyError> {
    let mut r = Reader::new(info, "0x93 serial number");
    Ok(SerialNumber {
        command: r.u8()?,
        serial: r.array()?,
    })
}

/// A 0x96 answer: raw bytes (their rendering is uncertain, reference §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftwareVersion {
    pub command: u8,
    pub manufacturer: [u8; 2],
    pub main_line: [u8; 3],
}

pub fn decode_software_version(info: &[u8]) -> Result<SoftwareVersion, ReplyError> {
    let mut r = Reader::new(info, "0x96 software version");
    Ok(SoftwareVersion {
        command: r.u8()?,
        manufacturer: r.array()?,
        main_line: r.array()?,
    })
}
