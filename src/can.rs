//! CAN access behind one small interface, with two implementations:
//! SocketCAN ([`socket`]) for real and vcan interfaces, and an in-process
//! virtual bus ([`virtual_bus`]) for the demo and fast tests. The gateway's
//! threads see only [`CanPort`] and [`CanOpener`], so the same daemon runs on
//! a desk and on a Raspberry Pi.

pub mod socket;
pub mod virtual_bus;

use crate::frame::Frame;
use crate::shutdown;
use crate::status::LinkState;
use crossbeam_channel::Receiver;
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
    /// The link state right after opening: `Down` with what to do when the
    /// interface exists but is down (the port is used once it comes up).
    fn link(&self) -> LinkState {
        LinkState::Up
    }
}

/// Opens interfaces by name.
pub trait CanOpener: Send + Sync {
    fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError>;
}

/// Reopen back-off: 0.5 s doubling up to 30 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.min(6));
    Duration::from_millis(ms.min(30_000))
}

/// Logs a link change of `label` (e.g. "battery 1 (can0)") once.
pub fn log_link(label: &str, link: &LinkState) {
    match link {
        LinkState::Up => log::info!("{label}: interface up"),
        LinkState::Down(why) => log::warn!("{label}: {why}; retrying"),
        LinkState::Opening => {}
    }
}

/// What a CAN thread does with its interface, for [`keep_serving`].
pub trait Service {
    /// Reports a link state (the thread logs and records changes).
    fn link(&self, link: LinkState);
    /// Waits `d` while staying responsive (heartbeats, mailbox); true when stopped.
    fn wait(&mut self, d: Duration) -> bool;
    /// Uses the open port until stopped (`Ok`) or until it must be reopened (`Err`).
    fn serve(&mut self, port: &mut dyn CanPort) -> Result<(), CanError>;
}

/// Keeps `interface` open and served until `stop`: opens it, with back-off
/// after failures, and reopens it whenever serving fails. `opened` is called
/// once, after the first attempt, whatever its outcome.
pub fn keep_serving(
    opener: &dyn CanOpener,
    interface: &str,
    stop: &Receiver<()>,
    opened: &dyn Fn(),
    service: &mut dyn Service,
) {
    let mut failures = 0u32;
    let mut first = true;
    while !shutdown::requested(stop) {
        let result = opener.open(interface);
        if std::mem::take(&mut first) {
            opened();
        }
        let mut port = match result {
            Ok(port) => port,
            Err(e) => {
                service.link(LinkState::Down(e.to_string()));
                if service.wait(backoff(failures)) {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        failures = 0;
        service.link(port.link());
        match service.serve(port.as_mut()) {
            Ok(()) => return,
            Err(e) => service.link(LinkState::Down(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let secs: Vec<f64> = (0..9).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
    }
}
