//! An in-process CAN bus: a product feature for `demo` and for fast tests,
//! never the only test of the SocketCAN path.
//!
//! Each named interface is a broadcast medium: a frame written by one port is
//! received by every other port on the same interface (not by the writer, as
//! with one socket per interface on real SocketCAN). Each port's receive
//! queue is bounded like a socket buffer: when it is full, frames for that
//! port are dropped and counted. Interfaces can be set down or removed and
//! re-added to exercise the gateway's fault handling, and made deaf (it
//! carries nothing until it is bounced, as a controller that lost its
//! interrupt) to exercise the dead-interface recovery.

use super::{BounceError, Bounced, CanError, CanOpener, CanPort, Wake};
use crate::frame::Frame;
use crate::shutdown::Stop;
use crate::sync::lock;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, select};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames a port can hold before new ones are dropped.
pub const RX_QUEUE: usize = 1024;

#[derive(Debug)]
struct Interface {
    up: bool,
    /// Carries no frame until bounced.
    deaf: bool,
    /// Times it was taken down and up.
    bounces: u64,
    /// Bumped when the interface is removed, so that old ports see it gone.
    generation: u64,
    ports: Vec<(u64, Sender<Frame>)>,
}

#[derive(Debug, Default)]
struct Buses {
    interfaces: HashMap<String, Interface>,
    next_port: u64,
    next_generation: u64,
}

/// A set of named virtual CAN interfaces. Cheap to clone; clones share the buses.
#[derive(Debug, Clone, Default)]
pub struct VirtualBus {
    buses: Arc<Mutex<Buses>>,
    dropped: Arc<AtomicU64>,
}

impl VirtualBus {
    pub fn new() -> VirtualBus {
        VirtualBus::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buses> {
        lock(&self.buses)
    }

    /// Adds an interface (up). Adding an existing one does nothing.
    pub fn create(&self, name: &str) {
        let mut b = self.lock();
        b.next_generation += 1;
        let generation = b.next_generation;
        b.interfaces.entry(name.to_string()).or_insert(Interface {
            up: true,
            deaf: false,
            bounces: 0,
            generation,
            ports: Vec::new(),
        });
    }

    /// Like `ip link set NAME down` / `up`.
    pub fn set_up(&self, name: &str, up: bool) {
        if let Some(i) = self.lock().interfaces.get_mut(name) {
            i.up = up;
        }
    }

    /// Like a controller that lost its interrupt: the interface carries no
    /// frame until it is bounced.
    pub fn deafen(&self, name: &str) {
        if let Some(i) = self.lock().interfaces.get_mut(name) {
            i.deaf = true;
        }
    }

    /// How often `name` was bounced.
    pub fn bounces(&self, name: &str) -> u64 {
        self.lock().interfaces.get(name).map_or(0, |i| i.bounces)
    }

    /// Like unplugging a USB adapter: open ports fail with `Gone` and must reopen.
    pub fn remove(&self, name: &str) {
        self.lock().interfaces.remove(name);
    }

    /// Frames dropped because a port's receive queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl CanOpener for VirtualBus {
    fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError> {
        let mut b = self.lock();
        let id = b.next_port;
        b.next_port += 1;
        let Some(i) = b.interfaces.get_mut(interface) else {
            return Err(CanError::Gone(format!("no virtual interface {interface}")));
        };
        let (tx, rx) = bounded(RX_QUEUE);
        i.ports.push((id, tx));
        Ok(Box::new(VirtualPort {
            bus: self.clone(),
            name: interface.to_string(),
            id,
            generation: i.generation,
            rx,
            down_reported: false,
        }))
    }

    /// Down and up: a deaf interface hears again.
    fn bounce(&self, interface: &str) -> Result<Bounced, BounceError> {
        let mut b = self.lock();
        let i = b
            .interfaces
            .get_mut(interface)
            .ok_or_else(|| BounceError::Failed(format!("no virtual interface {interface}")))?;
        i.deaf = false;
        i.bounces += 1;
        Ok(Bounced::Directly)
    }
}

struct VirtualPort {
    bus: VirtualBus,
    name: String,
    id: u64,
    generation: u64,
    rx: Receiver<Frame>,
    /// `read_until` told of the interface being down: it waits for frames
    /// now (none come while it is down), as a socket does after ENETDOWN.
    down_reported: bool,
}

impl VirtualPort {
    /// The interface's state as this port sees it.
    fn check(&self) -> Result<(), CanError> {
        let b = self.bus.lock();
        match b.interfaces.get(&self.name) {
            Some(i) if i.generation == self.generation && i.up => Ok(()),
            Some(i) if i.generation == self.generation => Err(CanError::Down(format!("{} is down", self.name))),
            _ => Err(CanError::Gone(format!("{} was removed", self.name))),
        }
    }
}

impl CanPort for VirtualPort {
    fn read(&mut self, timeout: Duration) -> Result<Option<Frame>, CanError> {
        self.check()?;
        match self.rx.recv_timeout(timeout) {
            Ok(frame) => Ok(Some(frame)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(CanError::Gone(format!("{} was removed", self.name))),
        }
    }

    fn read_until(&mut self, deadline: Instant, stop: &Stop) -> Result<Wake, CanError> {
        match self.check() {
            Ok(()) => self.down_reported = false,
            Err(CanError::Down(why)) if !std::mem::replace(&mut self.down_reported, true) => {
                return Err(CanError::Down(why));
            }
            Err(CanError::Down(_)) => {}
            Err(e) => return Err(e),
        }
        // A frame that comes within a moment is taken without sleeping:
        // crossbeam's receive spins briefly before it gives up (`select!`
        // would sleep at once), which saves a context switch per frame when
        // a burst arrives, as a blocking read did.
        match self.rx.recv_deadline(Instant::now()) {
            Ok(frame) => return Ok(Wake::Frame(frame)),
            Err(RecvTimeoutError::Disconnected) => return Err(CanError::Gone(format!("{} was removed", self.name))),
            Err(RecvTimeoutError::Timeout) => {}
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        select! {
            recv(self.rx) -> frame => match frame {
                Ok(frame) => Ok(Wake::Frame(frame)),
                Err(_) => Err(CanError::Gone(format!("{} was removed", self.name))),
            },
            recv(stop.receiver()) -> _ => Ok(Wake::Stopped),
            default(timeout) => Ok(Wake::Deadline),
        }
    }

    fn write(&mut self, frame: &Frame) -> Result<(), CanError> {
        let b = self.bus.lock();
        let i = match b.interfaces.get(&self.name) {
            Some(i) if i.generation == self.generation => i,
            _ => return Err(CanError::Gone(format!("{} was removed", self.name))),
        };
        if !i.up {
            return Err(CanError::Down(format!("{} is down", self.name)));
        }
        if i.deaf {
            return Ok(());
        }
        for (id, tx) in &i.ports {
            if *id != self.id
                && let Err(TrySendError::Full(_)) = tx.try_send(*frame)
            {
                self.bus.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl Drop for VirtualPort {
    fn drop(&mut self) {
        let mut b = self.bus.lock();
        if let Some(i) = b.interfaces.get_mut(&self.name) {
            i.ports.retain(|(id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    #[test]
    fn frames_reach_every_other_port_but_not_the_writer() {
        let bus = VirtualBus::new();
        bus.create("vcan0");
        let mut a = bus.open("vcan0").unwrap();
        let mut b = bus.open("vcan0").unwrap();
        let mut c = bus.open("vcan0").unwrap();
        let f = Frame::standard(0x351, &[1, 2]);
        a.write(&f).unwrap();
        assert_eq!(b.read(T).unwrap(), Some(f));
        assert_eq!(c.read(T).unwrap(), Some(f));
        assert_eq!(a.read(Duration::from_millis(10)).unwrap(), None);
    }

    #[test]
    fn interfaces_are_separate() {
        let bus = VirtualBus::new();
        bus.create("a");
        bus.create("b");
        let mut a = bus.open("a").unwrap();
        let mut b = bus.open("b").unwrap();
        let _a2 = bus.open("a").unwrap();
        a.write(&Frame::standard(1, &[])).unwrap();
        assert_eq!(b.read(Duration::from_millis(10)).unwrap(), None);
    }

    #[test]
    fn down_and_removed_interfaces_fail_like_the_kernel_says() {
        let bus = VirtualBus::new();
        assert!(matches!(bus.open("x"), Err(CanError::Gone(_))));
        bus.create("x");
        let mut p = bus.open("x").unwrap();
        bus.set_up("x", false);
        assert!(matches!(p.write(&Frame::standard(1, &[])), Err(CanError::Down(_))));
        assert!(matches!(p.read(T), Err(CanError::Down(_))));
        bus.set_up("x", true);
        assert!(p.write(&Frame::standard(1, &[])).is_ok());
        bus.remove("x");
        bus.create("x");
        // Re-added: the old port stays gone, a new one works.
        assert!(matches!(p.read(T), Err(CanError::Gone(_))));
        assert!(bus.open("x").is_ok());
    }

    #[test]
    fn read_until_wakes_on_a_frame_the_deadline_or_the_stop() {
        let bus = VirtualBus::new();
        bus.create("x");
        let mut w = bus.open("x").unwrap();
        let mut r = bus.open("x").unwrap();
        let (tx, stop) = crate::shutdown::channel();
        let soon = || Instant::now() + Duration::from_millis(20);
        assert_eq!(r.read_until(soon(), &stop).unwrap(), Wake::Deadline);
        let f = Frame::standard(0x351, &[7]);
        w.write(&f).unwrap();
        assert_eq!(r.read_until(soon(), &stop).unwrap(), Wake::Frame(f));
        // Down is told once; then the port waits, and a frame sent once it
        // is up again arrives.
        bus.set_up("x", false);
        assert!(matches!(r.read_until(soon(), &stop), Err(CanError::Down(_))));
        assert_eq!(r.read_until(soon(), &stop).unwrap(), Wake::Deadline);
        bus.set_up("x", true);
        w.write(&f).unwrap();
        assert_eq!(r.read_until(soon(), &stop).unwrap(), Wake::Frame(f));
        let far = Instant::now() + Duration::from_secs(60);
        let t = std::thread::spawn(move || r.read_until(far, &stop).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        tx.stop();
        assert_eq!(t.join().unwrap(), Wake::Stopped);
    }

    #[test]
    fn a_full_receive_queue_drops_and_counts() {
        let bus = VirtualBus::new();
        bus.create("x");
        let mut w = bus.open("x").unwrap();
        let mut r = bus.open("x").unwrap();
        for i in 0..RX_QUEUE + 10 {
            w.write(&Frame::standard(1, &[i as u8])).unwrap();
        }
        assert_eq!(bus.dropped(), 10);
        assert_eq!(r.read(T).unwrap().unwrap().data(), &[0]);
    }
}
