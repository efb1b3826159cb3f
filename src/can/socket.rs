//! SocketCAN through the `socketcan` crate: one raw socket per interface.
//!
//! Kernel behaviour this follows (as read from the kernel's net/can): ENETDOWN when
//! the interface is set down (the socket stays bound and resumes), ENODEV or
//! ENXIO when the device is removed (reopen by name), ENOBUFS at once when the
//! transmit queue is full (it ignores the write timeout: retry briefly, then
//! give up on that frame and count it).

use super::{CanError, CanOpener, CanPort};
use crate::frame::{CanId, Frame, FrameKind};
use socketcan::{CanFrame, CanSocket, EmbeddedFrame, ExtendedId, Id, Socket, StandardId};
use std::io;
use std::time::Duration;

/// How often a write is retried on ENOBUFS before the frame is dropped.
const BUSY_RETRIES: u32 = 3;
const BUSY_PAUSE: Duration = Duration::from_millis(2);

/// Opens real (or vcan) interfaces.
#[derive(Debug, Default, Clone, Copy)]
pub struct SocketCan;

impl CanOpener for SocketCan {
    fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError> {
        let socket = CanSocket::open(interface).map_err(|e| classify(&e))?;
        socket
            .set_write_timeout(Duration::from_millis(100))
            .map_err(|e| classify(&e))?;
        Ok(Box::new(SocketPort {
            socket,
            read_timeout: None,
        }))
    }
}

struct SocketPort {
    socket: CanSocket,
    /// The timeout last set, to avoid a system call per read.
    read_timeout: Option<Duration>,
}

fn classify(e: &io::Error) -> CanError {
    match e.raw_os_error() {
        Some(libc::ENETDOWN) => CanError::Down(e.to_string()),
        Some(libc::ENOBUFS) => CanError::Busy,
        Some(libc::ENODEV) | Some(libc::ENXIO) => CanError::Gone(e.to_string()),
        Some(libc::EAFNOSUPPORT) => CanError::Gone(format!("{e} (this kernel has no SocketCAN support)")),
        _ => CanError::Other(e.to_string()),
    }
}

fn to_core(frame: &CanFrame) -> Option<Frame> {
    let id = match frame.id() {
        Id::Standard(id) => CanId::Standard(id.as_raw()),
        Id::Extended(id) => CanId::Extended(id.as_raw()),
    };
    match frame {
        CanFrame::Data(_) => Some(Frame::new(id, FrameKind::Data, frame.data())),
        CanFrame::Remote(_) => Some(Frame::remote(id, frame.dlc() as u8)),
        // Error frames are not enabled on our sockets; ignore any that come.
        CanFrame::Error(_) => None,
    }
}

fn to_socketcan(frame: &Frame) -> Option<CanFrame> {
    let id: Id = match frame.id {
        CanId::Standard(id) => StandardId::new(id)?.into(),
        CanId::Extended(id) => ExtendedId::new(id)?.into(),
    };
    match frame.kind {
        FrameKind::Data => CanFrame::new(id, frame.data()),
        FrameKind::Remote => CanFrame::new_remote(id, usize::from(frame.dlc())),
    }
}

impl CanPort for SocketPort {
    fn read(&mut self, timeout: Duration) -> Result<Option<Frame>, CanError> {
        // A zero timeout would mean "block forever" to the kernel.
        let timeout = timeout.max(Duration::from_millis(1));
        if self.read_timeout != Some(timeout) {
            self.socket.set_read_timeout(timeout).map_err(|e| classify(&e))?;
            self.read_timeout = Some(timeout);
        }
        match self.socket.read_frame() {
            Ok(frame) => Ok(to_core(&frame)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(classify(&e)),
        }
    }

    fn write(&mut self, frame: &Frame) -> Result<(), CanError> {
        let frame = to_socketcan(frame).ok_or_else(|| CanError::Other(format!("cannot build frame {frame:?}")))?;
        let mut attempt = 0;
        loop {
            match self.socket.write_frame(&frame) {
                Ok(()) => return Ok(()),
                Err(e) => match classify(&e) {
                    CanError::Busy if attempt < BUSY_RETRIES => {
                        attempt += 1;
                        std::thread::sleep(BUSY_PAUSE);
                    }
                    other => return Err(other),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_convert_both_ways() {
        let f = Frame::standard(0x351, &[1, 2, 3]);
        let s = to_socketcan(&f).unwrap();
        assert_eq!(to_core(&s), Some(f));
        let e = Frame::new(CanId::Extended(0x1ABCDEF0), FrameKind::Data, &[9]);
        assert_eq!(to_core(&to_socketcan(&e).unwrap()), Some(e));
        let r = Frame::remote(CanId::Standard(0x305), 8);
        assert_eq!(to_core(&to_socketcan(&r).unwrap()), Some(r));
    }

    #[test]
    fn errors_are_classified_by_what_to_do() {
        let e = |n| classify(&io::Error::from_raw_os_error(n));
        assert!(matches!(e(libc::ENETDOWN), CanError::Down(_)));
        assert!(matches!(e(libc::ENODEV), CanError::Gone(_)));
        assert!(matches!(e(libc::ENXIO), CanError::Gone(_)));
        assert_eq!(e(libc::ENOBUFS), CanError::Busy);
        assert!(matches!(e(libc::EAFNOSUPPORT), CanError::Gone(m) if m.contains("no SocketCAN")));
    }

    /// On this kernel (no CAN) or with a missing interface, opening fails
    /// with a reason instead of panicking; the system tests cover real vcan.
    #[test]
    fn opening_a_missing_interface_is_an_error() {
        assert!(SocketCan.open("nosuchcan9").is_err());
    }
}
