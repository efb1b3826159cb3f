//! SocketCAN through the `socketcan` crate: one raw socket per interface.
//!
//! Kernel behaviour this follows (as read from the kernel's net/can): ENETDOWN when
//! the interface is set down (the socket stays bound and resumes), ENODEV or
//! ENXIO when the device is removed (reopen by name), ENOBUFS at once when the
//! transmit queue is full (it ignores the write timeout: retry briefly, then
//! give up on that frame and count it). A socket binds to an interface that
//! is down (a real controller before it has a bit rate): opening says so,
//! with what to do, and the port is used as soon as the interface comes up.
//!
//! Each socket also subscribes to two kinds of error frame (CAN_RAW_ERR_FILTER):
//! bus-off and restarted. They wake the reader as [`Wake::Controller`], so
//! the dead-interface rule learns of a bus-off without any polling; an error
//! frame is never handed on as a data frame.

use super::{BounceError, Bounced, CanError, CanOpener, CanPort, ControllerState, Wake};
use crate::can::LinkState;
use crate::frame::{CanId, Frame, FrameKind};
use crate::shutdown::{FALLBACK_SLICE, Stop};
use socketcan::{CanFrame, CanSocket, EmbeddedFrame, ExtendedId, Id, Socket, SocketOptions, StandardId};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

/// How often a write is retried on ENOBUFS before the frame is dropped.
const BUSY_RETRIES: u32 = 3;
const BUSY_PAUSE: Duration = Duration::from_millis(2);

/// Error frame bits (linux/can/error.h): the ID's error flag, and the
/// classes the sockets subscribe to.
const CAN_ERR_FLAG: u32 = 0x2000_0000;
const CAN_ERR_BUSOFF: u32 = 0x0000_0040;
const CAN_ERR_RESTARTED: u32 = 0x0000_0100;

/// Opens real (or vcan) interfaces.
#[derive(Debug, Default, Clone, Copy)]
pub struct SocketCan;

impl CanOpener for SocketCan {
    fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError> {
        let socket = CanSocket::open(interface).map_err(|e| classify(&e))?;
        socket
            .set_write_timeout(Duration::from_millis(100))
            .map_err(|e| classify(&e))?;
        socket
            .set_error_filter(CAN_ERR_BUSOFF | CAN_ERR_RESTARTED)
            .map_err(|e| classify(&e))?;
        Ok(Box::new(SocketPort {
            socket,
            read_timeout: None,
            interface: interface.to_owned(),
        }))
    }

    fn bounce(&self, interface: &str) -> Result<Bounced, BounceError> {
        super::bounce::bounce(interface, std::path::Path::new(super::bounce::HELPER_SOCKET))
    }
}

struct SocketPort {
    socket: CanSocket,
    /// The timeout last set, to avoid a system call per read.
    read_timeout: Option<Duration>,
    interface: String,
}

/// Whether `interface` is administratively up (IFF_UP in its sysfs flags);
/// `None` when that cannot be read (then nothing is claimed).
fn is_up(interface: &str) -> Option<bool> {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{interface}/flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & libc::IFF_UP as u32 != 0)
}

/// The report for an interface that exists but is down: which one, that it
/// is down, and how a CAN interface gets up (a bit rate first).
fn down_hint(interface: &str) -> String {
    format!(
        "interface {interface} is down (a CAN controller needs a bit rate before it can go up); \
         it stays open and is used as soon as it is up. Bring it up with systemd-networkd \
         (80-can.network in /usr/share/doc/bms-gateway/examples/networkd) or by hand: \
         ip link set {interface} up type can bitrate 500000 restart-ms 100"
    )
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

/// Takes one frame if the socket holds one, without blocking (the socket
/// itself stays blocking, so that writes keep their timeout).
fn receive_now(fd: RawFd) -> io::Result<Option<libc::can_frame>> {
    // SAFETY: can_frame is plain old data; all zeroes is a valid value.
    let mut raw: libc::can_frame = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::can_frame>();
    loop {
        // SAFETY: `raw` is valid for writes of `size` bytes during the call.
        let n = unsafe { libc::recv(fd, (&raw mut raw).cast(), size, libc::MSG_DONTWAIT) };
        match n {
            n if n as usize == size => return Ok(Some(raw)),
            n if n >= 0 => return Err(io::Error::other(format!("short CAN read of {n} bytes"))),
            _ => {}
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// What ended a [`wait_readable`].
#[derive(Debug, PartialEq, Eq)]
enum Ready {
    /// The socket has a frame or an error to read, or the wait was cut short:
    /// try a read and look at the clock again.
    Socket,
    /// The whole timeout passed with nothing to read.
    TimedOut,
    Stop,
}

/// Sleeps in poll(2) until `fd` or `stop` is readable, or `timeout` passes.
fn wait_readable(fd: RawFd, stop: Option<BorrowedFd<'_>>, timeout: Duration) -> io::Result<Ready> {
    let whole = stop.is_some() || timeout <= FALLBACK_SLICE;
    let timeout = if whole { timeout } else { FALLBACK_SLICE };
    // Rounded up: waking a little after the deadline is right, before it a wasted wake.
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.map_or(-1, |s| s.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds for the duration of the call (a negative fd is ignored).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Ready::Socket)
        } else {
            Err(e)
        };
    }
    Ok(if fds[1].revents != 0 {
        Ready::Stop
    } else if n == 0 && whole {
        Ready::TimedOut
    } else {
        Ready::Socket
    })
}

/// What a received frame means to the reader: a data or remote frame, a
/// controller's state change, or nothing (an error class not asked for).
fn interpret(raw: libc::can_frame) -> Option<Wake> {
    if raw.can_id & CAN_ERR_FLAG == 0 {
        return to_core(&CanFrame::from(raw)).map(Wake::Frame);
    }
    if raw.can_id & CAN_ERR_BUSOFF != 0 {
        Some(Wake::Controller(ControllerState::BusOff))
    } else if raw.can_id & CAN_ERR_RESTARTED != 0 {
        Some(Wake::Controller(ControllerState::Restarted))
    } else {
        None
    }
}

/// One frame or controller report if the socket holds one, without waiting.
fn take_frame(fd: RawFd) -> Result<Option<Wake>, CanError> {
    loop {
        match receive_now(fd) {
            Ok(Some(raw)) => match interpret(raw) {
                Some(wake) => return Ok(Some(wake)),
                None => continue,
            },
            Ok(None) => return Ok(None),
            Err(e) => return Err(classify(&e)),
        }
    }
}

/// `read_until`, with the clock read `now` when the caller has one. Each
/// system call counts where the clock source has no vDSO (an emulated
/// machine, where every clock read is one), so a wait costs poll(2) and one
/// read per frame: it starts in poll(2), which returns at once when a frame
/// is waiting, and a wait that ends at its deadline returns without a read or
/// a clock read. A deadline that is due already takes what is waiting
/// without a wait (a drain: one read per frame).
fn wait_frame(fd: RawFd, now: Option<Instant>, deadline: Instant, stop: &Stop) -> Result<Wake, CanError> {
    let mut at = now.unwrap_or_else(Instant::now);
    if at >= deadline {
        return Ok(take_frame(fd)?.unwrap_or(Wake::Deadline));
    }
    loop {
        if stop.fd().is_none() && stop.requested() {
            return Ok(Wake::Stopped);
        }
        match wait_readable(fd, stop.fd(), deadline - at).map_err(|e| classify(&e))? {
            Ready::Stop => return Ok(Wake::Stopped),
            Ready::TimedOut => return Ok(Wake::Deadline),
            Ready::Socket => {
                if let Some(wake) = take_frame(fd)? {
                    return Ok(wake);
                }
            }
        }
        at = Instant::now();
        if at >= deadline {
            return Ok(Wake::Deadline);
        }
    }
}

impl CanPort for SocketPort {
    fn read_until(&mut self, deadline: Instant, stop: &Stop) -> Result<Wake, CanError> {
        wait_frame(self.socket.as_raw_fd(), None, deadline, stop)
    }

    fn read_until_from(&mut self, now: Instant, deadline: Instant, stop: &Stop) -> Result<Wake, CanError> {
        wait_frame(self.socket.as_raw_fd(), Some(now), deadline, stop)
    }

    fn link(&self) -> LinkState {
        match is_up(&self.interface) {
            Some(false) => LinkState::Down(down_hint(&self.interface)),
            _ => LinkState::Up,
        }
    }

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

    #[test]
    fn the_wait_ends_on_data_on_the_stop_or_at_the_timeout() {
        use std::os::unix::net::UnixDatagram;
        let (a, b) = UnixDatagram::pair().unwrap();
        let (tx, stop) = crate::shutdown::channel();
        let t0 = Instant::now();
        let r = wait_readable(b.as_raw_fd(), stop.fd(), Duration::from_millis(30)).unwrap();
        assert_eq!(r, Ready::TimedOut);
        assert!(t0.elapsed() >= Duration::from_millis(30), "slept the whole timeout");
        // Without a stop descriptor a long wait is cut into slices: not timed out.
        let r = wait_readable(b.as_raw_fd(), None, Duration::from_secs(60)).unwrap();
        assert_eq!(r, Ready::Socket);
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "one slice, not the whole minute"
        );
        a.send(b"x").unwrap();
        let r = wait_readable(b.as_raw_fd(), stop.fd(), Duration::from_secs(60)).unwrap();
        assert_eq!(r, Ready::Socket);
        tx.stop();
        let r = wait_readable(b.as_raw_fd(), stop.fd(), Duration::from_secs(60)).unwrap();
        assert_eq!(r, Ready::Stop);
    }

    /// A datagram socket pair stands in for the CAN socket: the same
    /// fixed-size reads and poll(2) readiness.
    #[test]
    fn a_wait_returns_each_frame_then_the_deadline_and_drains_when_due() {
        use std::os::unix::net::UnixDatagram;
        let (a, b) = UnixDatagram::pair().unwrap();
        let (_tx, stop) = crate::shutdown::channel();
        let send = move |id: u32| {
            // SAFETY: can_frame is plain old data; all zeroes is a valid value.
            let mut raw: libc::can_frame = unsafe { std::mem::zeroed() };
            raw.can_id = id;
            raw.can_dlc = 1;
            raw.data[0] = 7;
            // SAFETY: reads the bytes of a live can_frame.
            let bytes = unsafe {
                std::slice::from_raw_parts((&raw const raw).cast::<u8>(), std::mem::size_of::<libc::can_frame>())
            };
            a.send(bytes).unwrap();
        };
        let fd = b.as_raw_fd();
        let frame = |id| Wake::Frame(Frame::standard(id, &[7]));
        let t0 = Instant::now();
        assert_eq!(
            wait_frame(fd, Some(t0), t0 + Duration::from_millis(30), &stop),
            Ok(Wake::Deadline)
        );
        assert!(t0.elapsed() >= Duration::from_millis(30), "slept until the deadline");
        send(0x351);
        send(0x355);
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(wait_frame(fd, None, later, &stop), Ok(frame(0x351)));
        // A deadline that is due already still takes what is waiting.
        let now = Instant::now();
        assert_eq!(wait_frame(fd, Some(now), now, &stop), Ok(frame(0x355)));
        assert_eq!(wait_frame(fd, Some(now), now, &stop), Ok(Wake::Deadline));
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            send(0x356);
            send
        });
        assert_eq!(wait_frame(fd, Some(Instant::now()), later, &stop), Ok(frame(0x356)));
        let send = sender.join().unwrap();
        // Error frames: bus-off and restarted wake the reader as such (never
        // as a frame); another class is skipped.
        send(0x2000_0040);
        send(0x2000_0004);
        send(0x2000_0100);
        assert_eq!(
            wait_frame(fd, None, later, &stop),
            Ok(Wake::Controller(ControllerState::BusOff))
        );
        assert_eq!(
            wait_frame(fd, None, later, &stop),
            Ok(Wake::Controller(ControllerState::Restarted))
        );
        drop(_tx);
        assert_eq!(wait_frame(fd, None, later, &stop), Ok(Wake::Stopped));
    }

    #[test]
    fn the_down_hint_names_the_interface_and_the_ways_up() {
        let h = down_hint("can1");
        assert!(h.starts_with("interface can1 is down"), "{h}");
        assert!(h.contains("bit rate"), "{h}");
        assert!(h.contains("80-can.network"), "{h}");
        assert!(h.contains("ip link set can1 up type can bitrate 500000"), "{h}");
    }

    /// Loopback is up on every Linux machine; a missing interface has no flags.
    #[test]
    fn interface_state_is_read_from_sysfs() {
        assert_eq!(is_up("lo"), Some(true));
        assert_eq!(is_up("nosuchcan9"), None);
    }

    /// On this kernel (no CAN) or with a missing interface, opening fails
    /// with a reason instead of panicking; the system tests cover real vcan.
    #[test]
    fn opening_a_missing_interface_is_an_error() {
        assert!(SocketCan.open("nosuchcan9").is_err());
    }
}
