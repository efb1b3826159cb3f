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

use crate::can::dead_watch::{DeadWatch, Reporter};
use crate::can::{CanError, CanOpener, CanPort, Service, Wake, keep_serving, report_link};
use crate::codec::{self, Message};
use crate::combine::{Battery, Shaped, SystemState};
use crate::config::{OutputConfig, OutputMode};
use crate::context::ThreadContext;
use crate::dead_link::RecoverySettings;
use crate::events::{Kind, Subject};
use crate::frame::{Frame, FrameKind};
use crate::interlock::{self, Interlock, Trip};
use crate::loglimit::{LogLimit, Repeats};
use crate::profile::{self, CvlRamp, Frames, InverterFrame, InverterWatch, OutputView, Shown, Talk, TalkChange};
use crate::send::{PushTimer, fail_safe_at, state_to_send};
use crate::status::{LinkState, OutputStatus, Slot};
use crate::sync::{Bell, lock};
use crossbeam_channel::{Receiver, select};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// A one-slot mailbox: the combiner puts the latest state, replacing any the
/// output has not taken yet, and rings the output's [`Bell`].
#[derive(Debug, Default)]
pub struct Mailbox {
    slot: Mutex<Option<Shaped>>,
    bell: Bell,
}

impl Mailbox {
    pub fn put(&self, shaped: Shaped) {
        *lock(&self.slot) = Some(shaped);
        // A pending ring already wakes the output for this state.
        self.bell.ring();
    }

    pub fn take(&self) -> Option<Shaped> {
        lock(&self.slot).take()
    }

    /// What the output waits on for a new state.
    fn wake(&self) -> &Receiver<()> {
        self.bell.receiver()
    }
}

/// What one transmission to this output is: the state (maybe turned safe
/// by age), the battery as this output shows it, and its frames. Pure: the
/// output's CVL ramp is the only state, passed in.
pub fn transmission(
    config: &OutputConfig,
    view: &mut OutputView,
    shaped: &Shaped,
    now: Instant,
) -> (SystemState, Battery, Frames) {
    let (state, battery) = state_to_send(shaped, now);
    let battery = view.apply(battery, state, now);
    let shown = Shown {
        battery,
        bank: shaped.bank,
        energy: shaped.energy,
    };
    let frames = profile::frames(config.profile, &shown, config.manufacturer, config.voltage_unit);
    (state, battery, frames)
}

/// One transmission as the interlock let it through.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub state: SystemState,
    pub battery: Battery,
    pub frames: Frames,
    /// The rule the shaped set broke: `frames` is then the safe state.
    pub trip: Option<Trip>,
}

/// [`transmission`], checked by the interlock (spec 14) against the bounds
/// the combiner took from the fresh telegrams: a set that fails is replaced
/// by the safe state, and the trip is counted in `interlock`.
pub fn checked_transmission(
    config: &OutputConfig,
    view: &mut OutputView,
    interlock: &mut Interlock,
    shaped: &Shaped,
    now: Instant,
) -> Checked {
    let (state, battery, frames) = transmission(config, view, shaped, now);
    let setting = interlock::Setting {
        profile: config.profile,
        cvl_ramp: config.cvl_ramp,
    };
    match interlock.check(setting, frames.frames(), state, &shaped.bounds, now) {
        Ok(cvl) => {
            interlock.sent_cvl(cvl, now);
            Checked {
                state,
                battery,
                frames,
                trip: None,
            }
        }
        Err(trip) => {
            interlock.trips += 1;
            let (battery, frames) = safe_instead(config, view, interlock, shaped, now);
            interlock.sent(config.profile, frames.frames(), now);
            Checked {
                state: SystemState::Safe,
                battery,
                frames,
                trip: Some(trip),
            }
        }
    }
}

/// The safe state sent in place of a refused set: its CVL never above the
/// last one sent (a refused set says nothing trustworthy about the ramp).
fn safe_instead(
    config: &OutputConfig,
    view: &mut OutputView,
    interlock: &Interlock,
    shaped: &Shaped,
    now: Instant,
) -> (Battery, Frames) {
    let mut battery = shaped.safe();
    if let Some(last) = interlock.last_cvl().filter(|&v| v > 0.0) {
        battery.v_charge_cmd = battery.v_charge_cmd.min(last);
    }
    let battery = view.apply(battery, SystemState::Safe, now);
    let shown = Shown {
        battery,
        bank: shaped.bank,
        energy: shaped.energy,
    };
    let frames = profile::frames(config.profile, &shown, config.manufacturer, config.voltage_unit);
    (battery, frames)
}

/// The shortest time between two pushes: PUSH-MIN-DELAY, and never less
/// than the profile's pacing (SMA: 200 ms per ID).
pub fn min_delay(config: &OutputConfig) -> Duration {
    config.push_min_delay.max(config.profile.min_gap())
}

/// The per-output view (SOC window, CVL ramp) an output starts with.
pub fn view_of(config: &OutputConfig) -> OutputView {
    OutputView {
        profile: config.profile,
        window: config.soc_window,
        ramp: CvlRamp::new(config.cvl_ramp),
    }
}

/// What an output thread hands to the one that replaces it when a reload
/// changes its section: what it was showing, when it last sent (pacing, in
/// push and sync mode) and what it knows of its inverter (CVL ramp, silent
/// watch), so that the inverter sees no gap and nothing it is sent changes
/// beyond what the changed keys ask for (spec 7).
#[derive(Debug, Clone, Copy, Default)]
pub struct Carried {
    pub latest: Option<Shaped>,
    pub last_sent: Option<Instant>,
    pub peer: Option<PeerState>,
    /// The interlock's memory (the last CVL sent, the CVL ramp's bound
    /// starts from it), which a reload keeps as it keeps the inverter.
    pub interlock: Interlock,
}

/// An output's knowledge of its inverter that outlives its thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerState {
    pub view: OutputView,
    pub watch: InverterWatch,
}

impl PeerState {
    /// What a thread for `config` starts from at `now`: the carried view and
    /// watch with the new section's settings (SOC window, profile, ramp
    /// rate, timeout), or fresh ones for an output that had none.
    pub fn resumed(carried: Option<PeerState>, config: &OutputConfig, now: Instant) -> PeerState {
        match carried {
            Some(old) => {
                let mut ramp = old.view.ramp;
                ramp.rate = config.cvl_ramp;
                PeerState {
                    view: OutputView {
                        ramp,
                        ..view_of(config)
                    },
                    watch: old.watch.with_timeout(config.inverter_timeout),
                }
            }
            None => PeerState {
                view: view_of(config),
                watch: InverterWatch::new(config.inverter_timeout, now),
            },
        }
    }
}

/// Everything one output thread needs.
pub struct Output<'a> {
    pub config: &'a OutputConfig,
    pub opener: &'a dyn CanOpener,
    pub mailbox: &'a Mailbox,
    /// This output's cell on the status board, and its id.
    pub slot: &'a Slot<OutputStatus>,
    /// `[can]`: when the interface counts as dead.
    pub recovery: RecoverySettings,
    /// Events, stop, heartbeats.
    pub context: ThreadContext<'a>,
}

/// The most inverter frames a push-mode output reads per wake-up (an
/// inverter sends a few per second).
const DRAIN_MAX: usize = 64;

/// How long the thread waits before reading again when an interface that
/// was reported down reports it again at once (a socket reports it once).
const DOWN_RETRY: Duration = Duration::from_millis(200);

impl Output<'_> {
    fn name(&self) -> &str {
        &self.config.can_if
    }

    fn label(&self) -> String {
        format!("inverter {} ({})", self.slot.position() + 1, self.name())
    }

    /// For the dead-interface watch's reports.
    fn reporter(&self) -> Reporter<'_> {
        Reporter {
            events: self.context.events,
            subject: Subject::Inverter(self.slot.position()),
            interface: self.name(),
            label: self.label(),
            link: self.opener,
            board: self.slot,
        }
    }

    fn set_link(&self, link: LinkState) {
        let old = self.slot.update(|s| std::mem::replace(&mut s.link, link.clone()));
        report_link(
            self.context.events,
            Subject::Inverter(self.slot.position()),
            || self.label(),
            &old,
            &link,
        );
    }

    /// Runs until stopped, going on from `carried`; returns what the next
    /// thread for this inverter goes on from.
    pub fn run(&self, carried: Carried) -> Carried {
        let PeerState { view, watch } = PeerState::resumed(carried.peer, self.config, Instant::now());
        self.slot.update(|s| {
            s.talk = self.config.inverter_timeout.map(|_| watch.talk());
        });
        let mut service = OutputService {
            output: self,
            carried,
            peer: Peer {
                view,
                watch,
                interlock: carried.interlock,
                shutdown_log: LogLimit::new(Duration::from_secs(60), Repeats::AnyText),
                dead: DeadWatch::new(self.recovery),
            },
        };
        let context = &self.context;
        keep_serving(self.opener, self.name(), context.stop, context.opened, &mut service);
        let Peer {
            view, watch, interlock, ..
        } = service.peer;
        Carried {
            peer: Some(PeerState { view, watch }),
            interlock,
            ..service.carried
        }
    }

    /// Waits `d` while keeping `latest` current; true when stopped.
    fn idle(&self, d: Duration, latest: &mut Option<Shaped>) -> bool {
        let until = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            let wait = until.min(now + self.context.heartbeat_every) - now;
            select! {
                recv(self.context.stop.receiver()) -> _ => return true,
                recv(self.mailbox.wake()) -> _ => {},
                default(wait) => {},
            }
            (self.context.heartbeat)();
            if let Some(s) = self.mailbox.take() {
                *latest = Some(s);
            }
        }
    }

    /// Push mode: sleeps until a new state arrives, the stop, or the next
    /// transmission (REPEAT, PUSH-MIN-DELAY), the fail-safe age of the
    /// latest state or the next heartbeat is due.
    ///
    /// The inverter's frames wait in the socket and are read at each wake-up
    /// (at least once a second with a state to repeat, and when the
    /// inverter would turn silent by INVERTER-TIMEOUT).
    fn push(&self, port: &mut dyn CanPort, carried: &mut Carried, peer: &mut Peer) -> Result<(), CanError> {
        let Carried { latest, last_sent, .. } = carried;
        let mut timer = PushTimer {
            min_delay: min_delay(self.config),
            last_sent: *last_sent,
            pending: latest.is_some(),
        };
        let mut errors = LogLimit::new(Duration::from_secs(10), Repeats::AnyText);
        loop {
            (self.context.heartbeat)();
            let now = Instant::now();
            self.drain(port, peer, now)?;
            self.check_talk(peer, now);
            peer.dead.check(now, || self.reporter());
            let mut deadline = now + self.context.heartbeat_every;
            // The inverter's frames are read at wake-ups: wake when it would
            // turn silent, to read them first.
            if let Some(at) = peer.watch.deadline() {
                deadline = deadline.min(at);
            }
            // And when the interface would count as dead.
            if let Some(at) = peer.dead.deadline() {
                deadline = deadline.min(at);
            }
            if let Some(state) = latest.as_ref() {
                if let Some(at) = timer.watch_fail_safe(fail_safe_at(state), now) {
                    deadline = deadline.min(at);
                }
                if timer.due(true, now).is_some_and(|at| at <= now) {
                    timer.pending = false;
                    let sent = self.transmit(port, state, peer, now, &mut errors);
                    // Paced from the end of this transmission: a frame
                    // written late in it (a slow or full queue) still gets
                    // the whole gap before its ID goes out again.
                    timer.last_sent = Some(Instant::now());
                    *last_sent = timer.last_sent;
                    sent?;
                }
                deadline = timer.due(true, now).map_or(deadline, |at| deadline.min(at));
            }
            select! {
                recv(self.context.stop.receiver()) -> _ => return Ok(()),
                recv(self.mailbox.wake()) -> _ => {
                    if let Some(s) = self.mailbox.take() {
                        *latest = Some(s);
                        timer.pending = true;
                    }
                },
                default(deadline - now) => {},
            }
        }
    }

    /// Sync mode: sleeps in the port until a 0x305 from the inverter, the
    /// stop, or the next own 0x305 (SYNC-INTERVAL) or heartbeat is due. The
    /// mailbox needs no wake-up: the latest state is taken when it is sent.
    fn sync(
        &self,
        port: &mut dyn CanPort,
        carried: &mut Carried,
        peer: &mut Peer,
        interval: Duration,
    ) -> Result<(), CanError> {
        let Carried { latest, last_sent, .. } = carried;
        let mut next_own = Instant::now();
        let min_gap = self.config.profile.min_gap();
        let mut errors = LogLimit::new(Duration::from_secs(10), Repeats::AnyText);
        let mut down = false;
        loop {
            (self.context.heartbeat)();
            let now = Instant::now();
            if now >= next_own {
                next_own = now + interval;
                let sent = self.send(port, &codec::encode(&Message::KeepAlive), &mut errors);
                peer.dead.sent(&sent, now, || self.reporter());
                sent?;
            }
            self.check_talk(peer, now);
            peer.dead.check(now, || self.reporter());
            let mut deadline = next_own.min(now + self.context.heartbeat_every);
            if let Some(at) = peer.dead.deadline() {
                deadline = deadline.min(at);
            }
            match port.read_until(deadline, self.context.stop) {
                Ok(Wake::Frame(f)) => {
                    down = false;
                    let now = Instant::now();
                    self.heard(peer, &f, now);
                    if !is_keepalive(&f) {
                        continue;
                    }
                    if let Some(s) = self.mailbox.take() {
                        *latest = Some(s);
                    }
                    // An answer sooner than the profile allows is skipped: the
                    // next request gets one.
                    let paced = last_sent.is_none_or(|at| now.saturating_duration_since(at) >= min_gap);
                    if let (Some(state), true) = (latest.as_ref(), paced) {
                        let sent = self.transmit(port, state, peer, now, &mut errors);
                        // From the end, as in push mode.
                        *last_sent = Some(Instant::now());
                        sent?;
                    }
                }
                Ok(Wake::Controller(state)) => peer.dead.controller(state, Instant::now(), || self.reporter()),
                Ok(Wake::Stopped) => return Ok(()),
                Ok(Wake::Deadline) => {}
                Err(CanError::Down(why)) => {
                    self.set_link(LinkState::Down(format!("interface down ({why})")));
                    // Told twice without a frame between: do not spin on it.
                    if std::mem::replace(&mut down, true) && self.idle(DOWN_RETRY, latest) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the frames the inverter sent since the last wake-up, without
    /// waiting; at most [`DRAIN_MAX`] per wake-up, so that a flooded
    /// inverter bus can never hold back a transmission (the rest wait for
    /// the next wake-up, or are dropped by the socket). A down interface is
    /// left to the transmissions to report.
    fn drain(&self, port: &mut dyn CanPort, peer: &mut Peer, now: Instant) -> Result<(), CanError> {
        for _ in 0..DRAIN_MAX {
            match port.read_until_from(now, now, self.context.stop) {
                Ok(Wake::Frame(f)) => self.heard(peer, &f, now),
                Ok(Wake::Controller(state)) => peer.dead.controller(state, now, || self.reporter()),
                Ok(_) | Err(CanError::Down(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A frame from the inverter's bus: what the inverter said, if anything.
    fn heard(&self, peer: &mut Peer, frame: &Frame, now: Instant) {
        peer.dead.received(now, || self.reporter());
        let Some(said) = profile::read_inverter(self.config.profile, frame) else {
            return;
        };
        if peer.watch.heard(now) == Some(TalkChange::Back) {
            let message = format!("{}: talking again", self.label());
            log::info!("{message}");
            self.context
                .events
                .emit(Kind::InverterBack, Subject::Inverter(self.slot.position()), message);
        }
        // Every mode records the inverter's 0x305 ("Last 0x305", Home
        // Assistant's "Time since last request"), not only sync mode.
        let request = is_keepalive(frame).then(SystemTime::now);
        self.slot.update(|s| {
            s.talk = s.talk.map(|_| Talk::Talking);
            if let Some(wall) = request {
                s.last_request = Some(now);
                s.last_request_wall = Some(wall);
            }
            match said {
                InverterFrame::SmaReadings(r) => s.inverter_readings = Some(r),
                InverterFrame::SmaState(st) => s.inverter_state = Some(st),
                InverterFrame::ShutdownRequest => s.shutdown_requests += 1,
                InverterFrame::KeepAlive | InverterFrame::Identity => {}
            }
        });
        if said == InverterFrame::ShutdownRequest {
            let line = format_args!(
                "{}: the inverter asks to shut down the battery (0x300); not obeyed: the batteries' own BMSes decide",
                self.label()
            );
            if let Some(line) = peer.shutdown_log.check(line, now) {
                log::warn!("{line}");
                let subject = Subject::Inverter(self.slot.position());
                self.context.events.emit(Kind::InverterShutdownRequest, subject, line);
            }
        }
    }

    /// Whether the inverter has gone quiet for INVERTER-TIMEOUT.
    fn check_talk(&self, peer: &mut Peer, now: Instant) {
        if peer.watch.check(now) == Some(TalkChange::WentSilent) {
            let timeout = self.config.inverter_timeout.unwrap_or_default();
            let message = format!(
                "{}: silent, no frame from the inverter for {:.0} s (INVERTER-TIMEOUT)",
                self.label(),
                timeout.as_secs_f64()
            );
            log::warn!("{message}");
            self.context
                .events
                .emit(Kind::InverterSilent, Subject::Inverter(self.slot.position()), message);
            self.slot.update(|s| s.talk = Some(Talk::Silent));
        }
    }

    /// Sends the frame set for `state`. Errors other than "gone" are counted
    /// and logged (rate-limited); the next transmission tries again.
    fn transmit(
        &self,
        port: &mut dyn CanPort,
        state: &Shaped,
        peer: &mut Peer,
        now: Instant,
        errors: &mut LogLimit,
    ) -> Result<(), CanError> {
        let checked = checked_transmission(self.config, &mut peer.view, &mut peer.interlock, state, now);
        let Checked {
            state: system_state,
            battery,
            frames: set,
            trip,
        } = checked;
        if let Some(trip) = trip {
            self.tripped(&trip);
        } else if system_state != state.state {
            let line = format_args!(
                "{}: no new combined state for {:.1} s: sending the safe state",
                self.label(),
                now.saturating_duration_since(state.made_at).as_secs_f64()
            );
            if let Some(line) = errors.check(line, now) {
                log::error!("{line}");
            }
        }
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
        if sent > 0 {
            peer.dead.sent(&Ok(()), now, || self.reporter());
        }
        if failed > 0 {
            peer.dead.sent(&result, now, || self.reporter());
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

    /// The interlock refused a set: counted, logged and raised as an event
    /// naming the rule and the values.
    fn tripped(&self, trip: &Trip) {
        self.slot.update(|s| s.interlock_trips += 1);
        let message = format!("{}: {trip}", self.label());
        log::error!("{message}");
        self.context
            .events
            .emit(Kind::Interlock, Subject::Inverter(self.slot.position()), message);
    }

    fn send(&self, port: &mut dyn CanPort, frame: &Frame, errors: &mut LogLimit) -> Result<(), CanError> {
        log::debug!("{}: {frame:?}", self.name());
        match port.write(frame) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let CanError::Down(why) = &e {
                    self.set_link(LinkState::Down(format!("interface down ({why})")));
                } else {
                    let line = format_args!("{}: frame not sent: {e}", self.label());
                    if let Some(line) = errors.check(line, Instant::now()) {
                        log::warn!("{line}");
                    }
                }
                Err(e)
            }
        }
    }
}

/// What one output keeps about its inverter across wake-ups and reopenings:
/// its view (SOC window, CVL ramp) and whether it talks.
struct Peer {
    view: OutputView,
    /// The interlock's memory of what this inverter was sent (spec 14).
    interlock: Interlock,
    watch: InverterWatch,
    /// "Shut down battery" requests are logged at most once a minute.
    shutdown_log: LogLimit,
    /// Whether the interface is up but dead (spec 17).
    dead: DeadWatch,
}

/// One output thread's state across reopenings of its interface: the latest
/// state survives, so it is ready when the port is back.
struct OutputService<'o, 'a> {
    output: &'o Output<'a>,
    carried: Carried,
    peer: Peer,
}

impl Service for OutputService<'_, '_> {
    fn link(&self, link: LinkState) {
        self.output.set_link(link);
    }

    fn wait(&mut self, d: Duration) -> bool {
        self.output.idle(d, &mut self.carried.latest)
    }

    fn serve(&mut self, port: &mut dyn CanPort) -> Result<(), CanError> {
        self.peer.dead.opened(Instant::now());
        match self.output.config.mode {
            OutputMode::Push => self.output.push(port, &mut self.carried, &mut self.peer),
            OutputMode::Sync { interval } => self.output.sync(port, &mut self.carried, &mut self.peer, interval),
        }
    }
}

/// A sync request: 0x305 with an 11- or 29-bit ID (Schneider sends 29-bit),
/// with or without data (the Sunny Island's carries its readings).
fn is_keepalive(f: &Frame) -> bool {
    f.id.raw() == u32::from(codec::ID_KEEPALIVE) && f.kind == FrameKind::Data
}

#[cfg(test)]
mod tests;
