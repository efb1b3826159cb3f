//! One inverter output's thread: shows the inverter a virtual BMS.
//!
//! Push mode: the frames go out when a new state arrives, no sooner than
//! PUSH-MIN-DELAY after the last transmission (a newer state replaces one
//! still waiting, so the latest is always what is sent), and at least once
//! per second. Sync mode: each 0x305 from the inverter is answered with the
//! current frames, and the gateway sends its own 0x305 every SYNC-INTERVAL.
//!
//! Fail-safe of its own: a state that is older than it could be if the
//! combiner were alive, and not already safe, is sent as the safe state.

use crate::can::{CanError, CanOpener, CanPort, Service, keep_serving, log_link};
use crate::codec::{self, Manufacturer, Measurements, Message, StateOfCharge};
use crate::combine::{Battery, SystemState};
use crate::config::{OutputConfig, OutputMode};
use crate::frame::{CanId, Frame, FrameKind};
use crate::shutdown::{self, RateLimit};
use crate::status::{LinkState, OutputStatus, Slot};
use crossbeam_channel::{Receiver, Sender, bounded, select};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// At least this often in push mode, whatever PUSH-MIN-DELAY says.
pub const REPEAT: Duration = Duration::from_secs(1);

/// What one inverter is to be shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shaped {
    pub state: SystemState,
    pub battery: Battery,
    pub made_at: Instant,
}

/// A one-slot mailbox: the combiner puts the latest state, replacing any the
/// output has not taken yet; the output is woken through a bounded(1) channel.
#[derive(Debug)]
pub struct Mailbox {
    slot: Mutex<Option<Shaped>>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
}

impl Default for Mailbox {
    fn default() -> Self {
        let (wake_tx, wake_rx) = bounded(1);
        Mailbox {
            slot: Mutex::new(None),
            wake_tx,
            wake_rx,
        }
    }
}

impl Mailbox {
    pub fn put(&self, shaped: Shaped) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(shaped);
        // Full means a wake-up is already pending: that one will see this state.
        let _ = self.wake_tx.try_send(());
    }

    pub fn take(&self) -> Option<Shaped> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The frames for one transmission, in the spec's order; no allocation.
#[derive(Debug, Clone, Copy)]
pub struct FrameSet {
    frames: [Frame; 7],
    len: usize,
}

impl FrameSet {
    pub fn frames(&self) -> &[Frame] {
        &self.frames[..self.len]
    }
}

/// Builds the frame set: 0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E, and 0x373
/// when cell data is known.
pub fn frame_set(b: &Battery, manufacturer: Manufacturer) -> FrameSet {
    let empty = Frame::standard(0, &[]);
    let mut frames = [empty; 7];
    let messages = [
        Message::Flags(b.flags),
        Message::Limits(codec::Limits {
            v_charge_cmd: b.v_charge_cmd,
            i_lim_charge: b.i_lim_charge,
            i_lim_discharge: b.i_lim_discharge,
            v_discharge_min: b.v_discharge_min,
        }),
        Message::StateOfCharge(StateOfCharge {
            soc: b.soc,
            soh: b.soh,
            soc_hires: None,
        }),
        Message::Measurements(Measurements {
            v_avg: b.v_avg,
            i_total: b.i_total,
            t_avg: b.t_avg,
        }),
        Message::Requests(b.requests),
        Message::Manufacturer(manufacturer),
    ];
    for (slot, m) in frames.iter_mut().zip(messages.iter()) {
        *slot = codec::encode(m);
    }
    let mut len = messages.len();
    if let Some(cells) = b.cells {
        frames[len] = codec::encode(&Message::Cells(cells));
        len += 1;
    }
    FrameSet { frames, len }
}

/// The state to send at `now`: `shaped` itself, or the safe state when it is
/// older than `max_age` (the combiner would have made a newer one by then).
pub fn current(shaped: &Shaped, now: Instant, max_age: Duration) -> (SystemState, Battery) {
    let old = now.saturating_duration_since(shaped.made_at) > max_age;
    if !old || shaped.state == SystemState::Safe {
        return (shaped.state, shaped.battery);
    }
    // The combiner already keeps the charge voltage at the last known one.
    let b = shaped.battery;
    (SystemState::Safe, b.safe(b.v_charge_cmd))
}

/// When the next push-mode transmission is due. Pure: the thread asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushTimer {
    pub min_delay: Duration,
    pub last_sent: Option<Instant>,
    /// A state arrived that has not been sent yet.
    pub pending: bool,
}

impl PushTimer {
    /// `None`: nothing to send until a state arrives.
    pub fn due(&self, have_state: bool, now: Instant) -> Option<Instant> {
        match (self.last_sent, self.pending, have_state) {
            (_, _, false) => None,
            (None, _, true) => Some(now),
            (Some(last), true, true) => Some(last + self.min_delay.min(REPEAT)),
            (Some(last), false, true) => Some(last + REPEAT),
        }
    }
}

/// What an output thread hands to the one that replaces it when a reload
/// changes its section: what it was showing and when it last sent, so that
/// the inverter sees no gap.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carried {
    pub latest: Option<Shaped>,
    pub last_sent: Option<Instant>,
}

/// Everything one output thread needs.
pub struct Output<'a> {
    pub config: &'a OutputConfig,
    pub opener: &'a dyn CanOpener,
    pub mailbox: &'a Mailbox,
    /// This output's cell on the status board, and its id.
    pub slot: &'a Slot<OutputStatus>,
    pub stop: &'a Receiver<()>,
    /// How old a state may be before it is replaced by the safe state.
    pub max_age: Duration,
    pub opened: &'a (dyn Fn() + Sync),
    pub heartbeat: &'a (dyn Fn() + Sync),
}

/// Tick for heartbeats and stop checks while waiting.
const IDLE: Duration = Duration::from_millis(100);

impl Output<'_> {
    fn name(&self) -> &str {
        &self.config.can_if
    }

    fn label(&self) -> String {
        format!("inverter {} ({})", self.slot.position() + 1, self.name())
    }

    fn set_link(&self, link: LinkState) {
        let changed = self
            .slot
            .update(|s| std::mem::replace(&mut s.link, link.clone()) != link);
        if changed {
            log_link(&self.label(), &link);
        }
    }

    /// Runs until stopped, going on from `carried`; returns what the next
    /// thread for this inverter goes on from.
    pub fn run(&self, carried: Carried) -> Carried {
        let mut service = OutputService { output: self, carried };
        keep_serving(self.opener, self.name(), self.stop, self.opened, &mut service);
        service.carried
    }

    /// Waits `d` while keeping `latest` current; true when stopped.
    fn idle(&self, d: Duration, latest: &mut Option<Shaped>) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            (self.heartbeat)();
            if shutdown::sleep(self.stop, IDLE.min(until.saturating_duration_since(Instant::now()))) {
                return true;
            }
            if let Some(s) = self.mailbox.take() {
                *latest = Some(s);
            }
        }
        false
    }

    fn push(&self, port: &mut dyn CanPort, carried: &mut Carried) -> Result<(), CanError> {
        let Carried { latest, last_sent } = carried;
        let mut timer = PushTimer {
            min_delay: self.config.push_min_delay,
            last_sent: *last_sent,
            pending: latest.is_some(),
        };
        let mut errors = RateLimit::new(Duration::from_secs(10));
        loop {
            (self.heartbeat)();
            let now = Instant::now();
            let wait = timer
                .due(latest.is_some(), now)
                .map_or(IDLE, |at| at.saturating_duration_since(now).min(IDLE));
            select! {
                recv(self.stop) -> _ => return Ok(()),
                recv(self.mailbox.wake_rx) -> _ => {
                    if let Some(s) = self.mailbox.take() {
                        *latest = Some(s);
                        timer.pending = true;
                    }
                },
                default(wait) => {},
            }
            let now = Instant::now();
            let Some(state) = latest.as_ref() else { continue };
            if timer.due(true, now).is_some_and(|at| at <= now) {
                timer.pending = false;
                timer.last_sent = Some(now);
                *last_sent = Some(now);
                self.transmit(port, state, now, &mut errors)?;
            }
        }
    }

    fn sync(&self, port: &mut dyn CanPort, latest: &mut Option<Shaped>, interval: Duration) -> Result<(), CanError> {
        let mut next_own = Instant::now();
        let mut errors = RateLimit::new(Duration::from_secs(10));
        while !shutdown::requested(self.stop) {
            (self.heartbeat)();
            if let Some(s) = self.mailbox.take() {
                *latest = Some(s);
            }
            let now = Instant::now();
            if now >= next_own {
                next_own = now + interval;
                self.send(port, &codec::encode(&Message::KeepAlive), &mut errors)?;
            }
            let timeout = next_own.saturating_duration_since(now).min(IDLE);
            match port.read(timeout) {
                Ok(Some(f)) if is_keepalive(&f) => {
                    let now = Instant::now();
                    self.slot.update(|s| {
                        s.last_request = Some(now);
                        s.last_request_wall = Some(SystemTime::now());
                    });
                    if let Some(s) = self.mailbox.take() {
                        *latest = Some(s);
                    }
                    if let Some(state) = latest.as_ref() {
                        self.transmit(port, state, now, &mut errors)?;
                    }
                }
                Ok(_) => {}
                Err(CanError::Down(why)) => {
                    self.set_link(LinkState::Down(format!("interface down ({why})")));
                    if self.idle(Duration::from_millis(200), latest) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends the frame set for `state`. Errors other than "gone" are counted
    /// and logged (rate-limited); the next transmission tries again.
    fn transmit(
        &self,
        port: &mut dyn CanPort,
        state: &Shaped,
        now: Instant,
        errors: &mut RateLimit,
    ) -> Result<(), CanError> {
        let (system_state, battery) = current(state, now, self.max_age);
        if system_state != state.state && errors.allow(now).is_some() {
            log::error!(
                "{}: no new combined state for {:.1} s: sending the safe state",
                self.label(),
                now.saturating_duration_since(state.made_at).as_secs_f64()
            );
        }
        let set = frame_set(&battery, self.config.manufacturer);
        let mut sent = 0u64;
        let mut failed = 0u64;
        let mut result = Ok(());
        for frame in set.frames() {
            match self.send(port, frame, errors) {
                Ok(()) => sent += 1,
                Err(e) => {
                    failed += 1;
                    result = Err(e);
                    break;
                }
            }
        }
        self.slot.update(|s| {
            s.frames_sent += sent;
            s.send_errors += failed;
            if failed == 0 {
                s.last_sent = Some(battery);
                s.last_state = Some(system_state);
                s.last_sent_at = Some(now);
            }
        });
        match result {
            Err(CanError::Gone(why)) => Err(CanError::Gone(why)),
            Err(CanError::Other(why)) => Err(CanError::Other(why)),
            _ => {
                if failed == 0 {
                    self.set_link(LinkState::Up);
                }
                Ok(())
            }
        }
    }

    fn send(&self, port: &mut dyn CanPort, frame: &Frame, errors: &mut RateLimit) -> Result<(), CanError> {
        log::debug!("{}: {frame:?}", self.name());
        match port.write(frame) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let CanError::Down(why) = &e {
                    self.set_link(LinkState::Down(format!("interface down ({why})")));
                } else if let Some(n) = errors.allow(Instant::now()) {
                    let more = if n > 0 {
                        format!(" ({n} more since the last report)")
                    } else {
                        String::new()
                    };
                    log::warn!("{}: frame not sent: {e}{more}", self.label());
                }
                Err(e)
            }
        }
    }
}

/// One output thread's state across reopenings of its interface: the latest
/// state survives, so it is ready when the port is back.
struct OutputService<'o, 'a> {
    output: &'o Output<'a>,
    carried: Carried,
}

impl Service for OutputService<'_, '_> {
    fn link(&self, link: LinkState) {
        self.output.set_link(link);
    }

    fn wait(&mut self, d: Duration) -> bool {
        self.output.idle(d, &mut self.carried.latest)
    }

    fn serve(&mut self, port: &mut dyn CanPort) -> Result<(), CanError> {
        match self.output.config.mode {
            OutputMode::Push => self.output.push(port, &mut self.carried),
            OutputMode::Sync { interval } => self.output.sync(port, &mut self.carried.latest, interval),
        }
    }
}

fn is_keepalive(f: &Frame) -> bool {
    f.id == CanId::Standard(codec::ID_KEEPALIVE) && f.kind == FrameKind::Data
}

#[cfg(test)]
mod tests;
