//! Requests the gateway sends: the eight read commands, and nothing else.
//!
//! [`Command`] has one variant per command the gateway may send; 0x94 (set
//! limits) and 0x95 (turn off) have none, and the frame writer is private to
//! the codec, so no code outside it can put them, or a CID1 other than 0x46,
//! on the wire (reference §3.9, spec 18).

use super::framing::{TooLong, frame_len, write_frame};

/// A command the gateway may send (CID2 of a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0x4F: protocol version (the answer's VER is the answer).
    ProtocolVersion,
    /// 0x51: manufacturer information.
    ManufacturerInfo,
    /// 0x42: analog values (cells, temperatures, current, voltage, capacity).
    AnalogValues,
    /// 0x44: alarm information.
    AlarmInfo,
    /// 0x47: system (protection) parameters.
    SystemParameters,
    /// 0x92: charge/discharge management (the live limits).
    ChargeManagement,
    /// 0x93: module serial number.
    SerialNumber,
    /// 0x96: software version.
    SoftwareVersion,
}

impl Command {
    /// Every command, for tests and tools.
    pub const ALL: [Command; 8] = [
        Command::ProtocolVersion,
        Command::ManufacturerInfo,
        Command::AnalogValues,
        Command::AlarmInfo,
        Command::SystemParameters,
        Command::ChargeManagement,
        Command::SerialNumber,
        Command::SoftwareVersion,
    ];

    /// Its CID2 code.
    pub const fn code(self) -> u8 {
        match self {
            Command::ProtocolVersion => 0x4F,
            Command::ManufacturerInfo => 0x51,
            Command::AnalogValues => 0x42,
            Command::AlarmInfo => 0x44,
            Command::SystemParameters => 0x47,
            Command::ChargeManagement => 0x92,
            Command::SerialNumber => 0x93,
            Command::SoftwareVersion => 0x96,
        }
    }

    /// The command with this CID2 code, if the gateway may send it.
    pub fn from_code(code: u8) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether its request carries the one-byte "command value" (the pack
    /// asked, = ADR) by default: 0x4F, 0x51 and 0x47 go without INFO.
    pub const fn takes_pack(self) -> bool {
        !matches!(
            self,
            Command::ProtocolVersion | Command::ManufacturerInfo | Command::SystemParameters
        )
    }
}

/// INFO = 0xFF to the group master: the whole group (0x42 and 0x44 only).
pub const WHOLE_GROUP: u8 = 0xFF;

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// VER: the protocol's (0x20, or 0x25 for PACE), or learnt from 0x4F.
    pub ver: u8,
    /// The pack asked.
    pub adr: u8,
    pub command: Command,
    /// The one-byte INFO, if any: the "command value".
    pub info: Option<u8>,
}

/// The longest request: one byte of INFO.
pub const MAX_REQUEST: usize = 20;

/// A request's bytes, `~` to CR, in a fixed buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    bytes: [u8; MAX_REQUEST],
    len: u8,
}

impl Encoded {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl Request {
    /// The usual request: INFO = ADR for the commands that name a pack
    /// (every working implementation does so, reference §2.2), none otherwise.
    pub fn new(ver: u8, adr: u8, command: Command) -> Request {
        Request {
            ver,
            adr,
            command,
            info: command.takes_pack().then_some(adr),
        }
    }

    /// The same request with another INFO (0xFF for a whole group, a
    /// Boqiang pack's fixed 1, or none).
    pub fn with_info(self, info: Option<u8>) -> Request {
        Request { info, ..self }
    }

    /// Its frame.
    pub fn encode(&self) -> Encoded {
        let mut bytes = [0u8; MAX_REQUEST];
        let info = self.info.as_slice();
        let len = write_frame(&mut bytes, self.ver, self.adr, self.command.code(), info)
            .unwrap_or_else(|TooLong { .. }| unreachable!("{} bytes hold a request", frame_len(1)));
        Encoded { bytes, len: len as u8 }
    }
}
