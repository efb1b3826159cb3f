//! Serial ports behind one small interface, for the RS485 batteries of spec
//! 18, with two implementations: real ports (and pseudo-terminals) through
//! the `serial2` crate ([`device`]), and an in-process pair ([`pair`]) for
//! the demo and fast tests, as the CAN side has SocketCAN and its virtual
//! bus. The polling thread (crate::serial_input) sees only [`SerialPort`]
//! and [`SerialOpener`]. [`sim_pack`] plays a pack on any port and [`pty`]
//! makes pseudo-terminals for it.

pub mod device;
pub mod pair;
pub mod pty;
pub mod sim_pack;

use crate::rs485::{Rejection, ReplyError};
use std::fmt;
use std::time::Instant;

/// How a port's line is set up (`BAUD`, `RS485-MODE`); always 8N1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSettings {
    pub baud: u32,
    /// Switch the UART's RS485 direction control on (TIOCSRS485).
    pub rs485_mode: bool,
}

/// A port failed: it is gone (unplugged), cannot be opened, or refused a
/// setting. The thread drops it and reopens it by path with back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialError(pub String);

impl fmt::Display for SerialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerialError {}

impl From<std::io::Error> for SerialError {
    fn from(e: std::io::Error) -> Self {
        SerialError(e.to_string())
    }
}

/// One open serial port.
pub trait SerialPort: Send {
    /// Sends all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SerialError>;
    /// Waits until bytes arrive or `deadline` passes; returns how many were
    /// put into `buf`, 0 at the deadline.
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, SerialError>;
    /// Drops whatever arrived and was not read (a late answer to an earlier
    /// request must not be taken for the next one's).
    fn discard_input(&mut self) -> Result<(), SerialError>;
}

/// Opens ports by path.
pub trait SerialOpener: Send + Sync {
    fn open(&self, path: &str, line: LineSettings) -> Result<Box<dyn SerialPort>, SerialError>;
}

/// What went wrong with one answer (or its absence), by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialFault {
    /// No (complete) answer in time.
    Timeout,
    /// CHKSUM or LCHKSUM wrong.
    Checksum,
    /// LENID wrong, odd, too short or oversized.
    Length,
    /// Our own request read back (or another master's).
    Echo,
    /// An answer from another address.
    WrongAddress,
    /// Bytes that are not a frame.
    Garbage,
    /// A frame cut short.
    Partial,
    /// The pack answered with an error RTN.
    Refused,
    /// A frame with a layout the decoder refuses.
    Undecodable,
    /// A whole cycle refused by the plausibility or range checks.
    Implausible,
}

impl SerialFault {
    pub const ALL: [SerialFault; 10] = [
        SerialFault::Timeout,
        SerialFault::Checksum,
        SerialFault::Length,
        SerialFault::Echo,
        SerialFault::WrongAddress,
        SerialFault::Garbage,
        SerialFault::Partial,
        SerialFault::Refused,
        SerialFault::Undecodable,
        SerialFault::Implausible,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SerialFault::Timeout => "timeout",
            SerialFault::Checksum => "checksum",
            SerialFault::Length => "length",
            SerialFault::Echo => "echo",
            SerialFault::WrongAddress => "wrong_address",
            SerialFault::Garbage => "garbage",
            SerialFault::Partial => "partial",
            SerialFault::Refused => "refused",
            SerialFault::Undecodable => "undecodable",
            SerialFault::Implausible => "implausible",
        }
    }

    pub fn of_rejection(r: Rejection) -> SerialFault {
        match r {
            Rejection::Garbage | Rejection::NotHex => SerialFault::Garbage,
            Rejection::Partial => SerialFault::Partial,
            Rejection::Oversized | Rejection::Malformed | Rejection::LengthMismatch => SerialFault::Length,
            Rejection::Checksum | Rejection::LengthChecksum => SerialFault::Checksum,
        }
    }

    pub fn of_reply(e: &ReplyError) -> SerialFault {
        match e {
            ReplyError::Echo(_) => SerialFault::Echo,
            ReplyError::WrongAddress { .. } => SerialFault::WrongAddress,
            ReplyError::WrongDevice(_) => SerialFault::Garbage,
            ReplyError::Refused(_) => SerialFault::Refused,
            ReplyError::TooShort { .. }
            | ReplyError::CellCount(_)
            | ReplyError::TemperatureCount(_)
            | ReplyError::NotManagement { .. } => SerialFault::Undecodable,
        }
    }
}

/// How many of each [`SerialFault`] an input had (on the status board).
/// In telemetry an object of every kind's count, by name, in
/// [`SerialFault::ALL`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SerialFaults([u64; SerialFault::ALL.len()]);

impl serde::Serialize for SerialFaults {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(SerialFault::ALL.len()))?;
        for kind in SerialFault::ALL {
            map.serialize_entry(kind.name(), &self.get(kind))?;
        }
        map.end()
    }
}

impl SerialFaults {
    pub fn get(&self, kind: SerialFault) -> u64 {
        self.0[kind as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn add(&mut self, kind: SerialFault) {
        self.0[kind as usize] += 1;
    }

    pub fn add_all(&mut self, other: &SerialFaults) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}
