//! CAN access behind one small interface, with two implementations:
//! SocketCAN ([`socket`]) for real and vcan interfaces, and an in-process
//! virtual bus ([`virtual_bus`]) for the demo and fast tests. The gateway's
//! threads see only [`CanPort`] and [`CanOpener`], so the same daemon runs on
//! a desk and on a Raspberry Pi.

pub mod bounce;
pub mod dead_watch;
pub mod reconnect;
pub mod socket;
pub mod virtual_bus;

pub use reconnect::{Service, backoff, keep_serving, report_link};

use crate::frame::Frame;
use crate::shutdown::Stop;
use std::fmt;
use std::time::{Duration, Instant};

/// Whether a CAN interface is usable right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Not opened yet.
    #[default]
    Opening,
    Up,
    /// Failing; the reason as the OS gave it. The thread retries with back-off.
    Down(String),
}

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

/// What a [`CanPort::read_until`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Frame(Frame),
    /// The deadline came first.
    Deadline,
    /// The stop was given.
    Stopped,
    /// The controller reported a change of state (an error frame the port
    /// subscribed to); never a data frame.
    Controller(ControllerState),
}

/// What a controller said about itself (SocketCAN error frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerState {
    /// Bus-off: it no longer takes part in the bus until restarted.
    BusOff,
    /// Restarted after bus-off (by restart-ms or by hand).
    Restarted,
}

/// How a link was taken down and up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounced {
    /// By the gateway itself (it holds CAP_NET_ADMIN).
    Directly,
    /// By the link helper, over its socket.
    ByHelper,
}

/// Why a link could not be taken down and up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceError {
    /// Nobody here may: the gateway lacks CAP_NET_ADMIN and no helper
    /// answers. What was tried, for the owner.
    NoPrivilege(String),
    /// The helper answered and refused.
    Refused(String),
    /// It was tried and failed.
    Failed(String),
}

impl fmt::Display for BounceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BounceError::NoPrivilege(why) => write!(f, "no privilege to take the link down and up ({why})"),
            BounceError::Refused(why) => write!(f, "the link helper refused ({why})"),
            BounceError::Failed(why) => write!(f, "taking the link down and up failed ({why})"),
        }
    }
}

/// One open CAN interface.
pub trait CanPort: Send {
    /// Waits up to `timeout` for a frame; `Ok(None)` when none came.
    fn read(&mut self, timeout: Duration) -> Result<Option<Frame>, CanError>;
    /// Sleeps until a frame arrives, `deadline` passes or `stop` is given,
    /// whichever comes first; the gateway's threads wait only here, so an
    /// idle interface costs no wake-ups. `Down` is reported once per time
    /// the interface goes down (as the kernel does); the next call waits
    /// for frames again, which come once it is up.
    fn read_until(&mut self, deadline: Instant, stop: &Stop) -> Result<Wake, CanError>;
    /// [`CanPort::read_until`] for a caller that has just read the clock
    /// (`now`), which saves the port a clock read per wait.
    fn read_until_from(&mut self, now: Instant, deadline: Instant, stop: &Stop) -> Result<Wake, CanError> {
        let _ = now;
        self.read_until(deadline, stop)
    }
    /// Sends one frame.
    fn write(&mut self, frame: &Frame) -> Result<(), CanError>;
    /// The link state right after opening: `Down` with what to do when the
    /// interface exists but is down (the port is used once it comes up).
    fn link(&self) -> LinkState {
        LinkState::Up
    }
}

/// Opens interfaces by name.
pub trait CanOpener: Send + Sync {
    fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError>;
    /// Takes `interface` down and up again (spec 17), keeping its settings.
    fn bounce(&self, interface: &str) -> Result<Bounced, BounceError> {
        Err(BounceError::NoPrivilege(format!(
            "{interface}: this kind of interface cannot be bounced"
        )))
    }
}
