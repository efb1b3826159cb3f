//! The Pylontech RS485 protocol ("~…\r" frames), the polling side, pure:
//! the frame receiver and checksums ([`framing`]), the requests the
//! gateway may send ([`requests`]), the answers' decoders with the brand
//! deviations ([`responses`]), and one poll cycle made into a telegram
//! ([`mapping`]). The rules, in our words, are in docs/rs485.md; the facts
//! in the protocol reference (shared/reference/pylontech-rs485.md).
//!
//! No I/O here: the serial thread feeds bytes in and writes the requests'
//! bytes out.

pub mod framing;
pub mod mapping;
pub mod requests;
pub mod responses;

pub use framing::{Frame, Receiver, Rejection, RejectionCounts};
pub use mapping::{Cycle, CycleError};
pub use requests::{Command, Request};
pub use responses::{ReplyError, Rtn, check_reply};

/// CID1 of every frame: "lithium iron phosphate battery". The only one the
/// gateway sends or accepts.
pub const CID1_BATTERY: u8 = 0x46;

/// Whose variant of the protocol a pack speaks (`PROTOCOL` of spec 18):
/// VER, units and layouts differ (reference §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Pylontech US/UP/Force-L and the Pylon emulations: VER 0x20, 0.1 A,
    /// mV, mAh, P = 2 or 4.
    Pylon,
    /// Seplos V2 BMS port: VER 0x20, 0.01 A, 10 mV, 10 mAh, P = 10.
    Seplos,
    /// PACE: VER 0x25, temperatures from 2730, 0.01 A, mV, 10 mAh, P = 3.
    Pace,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Pylon, Protocol::Seplos, Protocol::Pace];

    /// The VER its requests carry.
    pub const fn version(self) -> u8 {
        match self {
            Protocol::Pylon | Protocol::Seplos => 0x20,
            Protocol::Pace => 0x25,
        }
    }

    /// Its name in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Pylon => "pylon",
            Protocol::Seplos => "seplos",
            Protocol::Pace => "pace",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[cfg(test)]
mod tests;
