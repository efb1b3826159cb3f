//! Telling worker threads to stop: a [`Stop`] that every thread holds and a
//! [`StopSender`] whose drop gives the stop. Threads that wait on crossbeam
//! channels see the stop as a disconnected channel (in `select!` and between
//! blocking reads); threads that wait on a file descriptor (a CAN socket in
//! `poll(2)`) also wait on an eventfd that the drop makes readable, so that
//! no thread has to wake periodically to look for a stop.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The waiting side of a stop. Cheap to clone; every clone sees the same stop.
/// It derefs to the channel, for `select!` and for code that only needs that.
#[derive(Debug, Clone)]
pub struct Stop {
    rx: Receiver<()>,
    /// Readable once the stop is given; `None` when no eventfd could be made
    /// (then file-descriptor waits fall back to slices of [`FALLBACK_SLICE`]).
    fd: Option<Arc<OwnedFd>>,
}

/// How long a file-descriptor wait sleeps at most when there is no eventfd.
pub const FALLBACK_SLICE: Duration = Duration::from_millis(100);

/// Gives the stop when dropped (or when [`StopSender::stop`] is called).
#[derive(Debug)]
pub struct StopSender {
    tx: Option<Sender<()>>,
    fd: Option<Arc<OwnedFd>>,
}

impl StopSender {
    /// Gives the stop now; the same as dropping the sender.
    pub fn stop(mut self) {
        self.give();
    }

    fn give(&mut self) {
        if let Some(fd) = &self.fd {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. A
            // failure (the counter cannot overflow from one write) changes
            // nothing: the channel below disconnects all the same.
            unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
        }
        self.tx = None;
    }
}

impl Drop for StopSender {
    fn drop(&mut self) {
        self.give();
    }
}

/// Create the pair: drop the [`StopSender`] to stop every holder of a [`Stop`].
pub fn channel() -> (StopSender, Stop) {
    let (tx, rx) = bounded(1);
    // SAFETY: eventfd takes no pointers; a non-negative result is a new fd
    // that nothing else owns.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    let fd = if raw >= 0 {
        // SAFETY: see above: `raw` is a fresh, owned descriptor.
        Some(Arc::new(unsafe { OwnedFd::from_raw_fd(raw) }))
    } else {
        log::warn!(
            "cannot create an eventfd ({}): CAN threads look for a stop every {} ms instead",
            std::io::Error::last_os_error(),
            FALLBACK_SLICE.as_millis()
        );
        None
    };
    (
        StopSender {
            tx: Some(tx),
            fd: fd.clone(),
        },
        Stop { rx, fd },
    )
}

impl Stop {
    /// True when the stop has been given.
    pub fn requested(&self) -> bool {
        requested(&self.rx)
    }

    /// Sleeps for `d` unless stopped first; true when stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        sleep(&self.rx, d)
    }

    /// Sleeps until `deadline` unless stopped first; true when stopped.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        !matches!(self.rx.recv_deadline(deadline), Err(RecvTimeoutError::Timeout))
    }

    /// The channel, for `select!`.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.rx
    }

    /// A descriptor that turns readable (and stays so) once the stop is given.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }
}

impl std::ops::Deref for Stop {
    type Target = Receiver<()>;

    fn deref(&self) -> &Receiver<()> {
        &self.rx
    }
}

/// True when the stop has been given.
pub fn requested(stop: &Receiver<()>) -> bool {
    !matches!(stop.try_recv(), Err(TryRecvError::Empty))
}

/// Sleeps for `d` unless stopped first; true when stopped.
pub fn sleep(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `fd` is readable within `ms` milliseconds.
    fn readable(fd: BorrowedFd<'_>, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    #[test]
    fn the_stop_makes_its_descriptor_readable_for_every_clone() {
        let (tx, stop) = channel();
        let clone = stop.clone();
        assert!(!readable(stop.fd().unwrap(), 0));
        let t = std::thread::spawn(move || readable(clone.fd().unwrap(), 60_000) && clone.requested());
        std::thread::sleep(Duration::from_millis(20));
        tx.stop();
        assert!(t.join().unwrap(), "a waiter in poll(2) is woken by the stop");
        // Level-triggered: it stays readable for later waiters.
        assert!(readable(stop.fd().unwrap(), 0));
        assert!(stop.sleep_until(Instant::now() + Duration::from_secs(60)));
    }

    #[test]
    fn dropping_the_sender_stops_every_receiver() {
        let (tx, rx) = channel();
        let rx2 = rx.clone();
        assert!(!requested(&rx));
        assert!(!sleep(&rx, Duration::from_millis(1)));
        drop(tx);
        assert!(requested(&rx) && requested(&rx2));
        assert!(sleep(&rx, Duration::from_secs(60)));
    }
}
