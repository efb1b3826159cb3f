//! CAN access behind one small interface, with two implementations:
//! SocketCAN ([`socket`]) for real and vcan interfaces, and an in-process
//! virtual bus ([`virtual_bus`]) for the demo and fast tests. The gateway's
//! threads see only [`CanPort`] and [`CanOpener`], so the same daemon runs on
//! a desk and on a Raspberry Pi.

pub mod reconnect;
pub mod socket;
pub mod virtual_bus;

pub use reconnect::{Service, backoff, keep_serving, log_link};

use crate::frame::Frame;
use std::fmt;
use std::time::Duration;

/// What went wrong with an interface, by what the thread should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanError {
    /// The interface is down (ENETDOWN): keep the port, it resumes when the
    /// interface comes up again.
    Down(String),
    /// The interface is gone or cannot be opened (ENODEV, ENXIO, missing):
    /// drop the port and reopen it by name with back-off.
    Gone(String),
    /// The transmit queue is full (ENOBUFS): the frame was not sent.
    Busy,
    /// Anything else; treated like `Gone`.
    Other(String),
}

impl fmt::Display for CanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CanError::Down(why) => write!(f, "interface down ({why})"),
            CanError::Gone(why) => write!(f, "interface unavailable ({why})"),
            CanError::Busy => write!(f, "transmit queue full"),
            CanError::Other(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for CanError {}

/// One open CAN interface.
pub trait CanPort: Send {
    /// Waits up to `timeout` for a frame; `Ok(None)` when none came.
    fn read(&mut self, timeout: Duration) -> Result<Option<Frame>, CanError>;
    /// Sends one frame.
    fn write(&mut self, frame: &Frame) -> Result<(), CanError>;
}

/// Opens interfaces by name.
pub trait CanOpener: Send + Sync {
    fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError>;
}
