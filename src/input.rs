//! One battery input's thread: reads its CAN interface, decodes frames,
//! assembles telegrams and hands complete telegrams (never single frames) to
//! the combiner. Bad frames are counted and logged, rate-limited, with the
//! interface name. A failing interface is reopened with back-off; meanwhile
//! the input simply turns stale in the combiner.

use crate::can::dead_watch::{DeadWatch, Reporter};
use crate::can::{CanError, CanOpener, CanPort, Service, Wake, keep_serving, report_link};
use crate::codec::{self, Message};
use crate::config::InputConfig;
use crate::context::ThreadContext;
use crate::dead_link::RecoverySettings;
use crate::events::Subject;
use crate::frame::Frame;
use crate::loglimit::{LogLimit, Repeats};
use crate::status::{InputStatus, LinkState, Slot};
use crate::telegram::{Assembler, Telegram};
use crossbeam_channel::{Sender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

/// How long the thread waits before reading again when an interface that
/// was reported down reports it again at once (a socket reports it once).
const DOWN_RETRY: Duration = Duration::from_millis(200);

/// A telegram on its way to the combiner.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// The input's slot id (stable across reloads, unlike its position).
    pub input: usize,
    pub telegram: Telegram,
    pub at: Instant,
}

/// Everything one input thread needs.
pub struct Input<'a> {
    pub config: &'a InputConfig,
    pub opener: &'a dyn CanOpener,
    pub telegrams: &'a Sender<Delivery>,
    /// This input's cell on the status board, and its id.
    pub slot: &'a Slot<InputStatus>,
    /// `[can]`: when the interface counts as dead.
    pub recovery: RecoverySettings,
    /// Events, stop, heartbeats.
    pub context: ThreadContext<'a>,
}

/// Counters kept locally and flushed to the board with each telegram, so the
/// hot path takes no lock per frame.
#[derive(Default)]
struct Counters {
    frames: u64,
    invalid: u64,
    dropped: u64,
}

impl Input<'_> {
    fn name(&self) -> &str {
        &self.config.can_if
    }

    fn label(&self) -> String {
        format!("battery {} ({})", self.slot.position() + 1, self.name())
    }

    /// For the dead-interface watch's reports.
    fn reporter(&self) -> Reporter<'_> {
        Reporter {
            events: self.context.events,
            subject: Subject::Battery(self.slot.position()),
            interface: self.name(),
            label: self.label(),
            link: self.opener,
            board: self.slot,
        }
    }

    /// Runs until stopped.
    pub fn run(&self) {
        let mut service = InputService {
            input: self,
            counters: Counters::default(),
            bad_frames: LogLimit::new(Duration::from_secs(10), Repeats::AnyText),
            dead: DeadWatch::new(self.recovery),
        };
        let context = &self.context;
        keep_serving(self.opener, self.name(), context.stop, context.opened, &mut service);
    }

    /// Sleeps with heartbeats, waking at once on a stop; true when stopped.
    fn wait(&self, d: Duration) -> bool {
        self.context.wait_until(Instant::now() + d)
    }

    fn on_frame(
        &self,
        frame: &Frame,
        now: Instant,
        assembler: &mut Assembler,
        counters: &mut Counters,
        bad: &mut LogLimit,
    ) {
        counters.frames += 1;
        let message = match codec::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                counters.invalid += 1;
                let line = format_args!("{}: frame not used: {e}", self.label());
                if let Some(line) = bad.check(line, now) {
                    log::warn!("{line}");
                }
                self.flush(counters, None);
                return;
            }
        };
        log::debug!("{}: {frame:?}", self.name());
        if let Some(telegram) = assembler.push(&message, now) {
            self.deliver(telegram, now, counters);
        }
    }

    /// A burst that ended by a quiet gap completes its telegram here.
    fn on_quiet(&self, assembler: &mut Assembler, counters: &mut Counters, now: Instant) {
        if let Some(telegram) = assembler.poll(now) {
            self.deliver(telegram, now, counters);
        }
    }

    fn deliver(&self, telegram: Telegram, now: Instant, counters: &mut Counters) {
        let delivery = Delivery {
            input: self.slot.id,
            telegram,
            at: now,
        };
        if let Err(TrySendError::Full(_)) = self.telegrams.try_send(delivery) {
            counters.dropped += 1;
        }
        self.flush(counters, Some((telegram, now)));
    }

    fn flush(&self, counters: &mut Counters, telegram: Option<(Telegram, Instant)>) {
        self.slot.update(|s| {
            s.frames += counters.frames;
            s.invalid += counters.invalid;
            s.dropped += counters.dropped;
            if let Some((t, at)) = telegram {
                s.telegram = Some(t);
                s.last_telegram = Some(at);
                s.last_telegram_wall = Some(SystemTime::now());
                s.telegrams += 1;
            }
        });
        *counters = Counters::default();
    }
}

/// One input thread's state across reopenings of its interface.
struct InputService<'i, 'a> {
    input: &'i Input<'a>,
    counters: Counters,
    bad_frames: LogLimit,
    /// Whether the interface is up but dead (spec 17).
    dead: DeadWatch,
}

impl Service for InputService<'_, '_> {
    fn link(&self, link: LinkState) {
        let input = self.input;
        let old = input.slot.update(|s| std::mem::replace(&mut s.link, link.clone()));
        report_link(
            input.context.events,
            Subject::Battery(input.slot.position()),
            || input.label(),
            &old,
            &link,
        );
    }

    fn wait(&mut self, d: Duration) -> bool {
        self.input.wait(d)
    }

    /// Reads until stopped (`Ok`) or the port must be reopened (`Err`). The
    /// thread sleeps in the port until a frame, the stop, or its next
    /// deadline: the end of the burst being assembled, the next POLL-INTERVAL
    /// keep-alive or heartbeat.
    fn serve(&mut self, port: &mut dyn CanPort) -> Result<(), CanError> {
        let input = self.input;
        // A new port starts a new telegram: nothing from before the gap.
        let mut assembler = Assembler::default();
        let mut next_poll = Instant::now();
        self.dead.opened(next_poll);
        let mut down = false;
        // One clock read per wake-up: the frame's arrival time is also the
        // base of the next deadline.
        let mut now = Instant::now();
        loop {
            (input.context.heartbeat)();
            self.dead.check(now, || input.reporter());
            let mut deadline = now + input.context.heartbeat_every;
            if let Some(period) = input.config.poll_interval {
                if now >= next_poll {
                    next_poll = now + period;
                    // A failed poll shows up again on the next read; only
                    // the dead-interface watch counts it.
                    let polled = port.write(&codec::encode(&Message::KeepAlive));
                    // A write may wait (a full transmit queue).
                    now = Instant::now();
                    self.dead.sent(&polled, now, || input.reporter());
                }
                deadline = deadline.min(next_poll);
            }
            // Wake up when the burst being assembled may be over.
            if let Some(at) = assembler.next_deadline() {
                deadline = deadline.min(at);
            }
            // And when the interface would count as dead.
            if let Some(at) = self.dead.deadline() {
                deadline = deadline.min(at);
            }
            let woke = port.read_until_from(now, deadline, input.context.stop);
            now = Instant::now();
            match woke {
                Ok(Wake::Frame(frame)) => {
                    if std::mem::take(&mut down) {
                        self.link(LinkState::Up);
                    }
                    self.dead.received(now, || input.reporter());
                    input.on_frame(&frame, now, &mut assembler, &mut self.counters, &mut self.bad_frames);
                    if input.context.stop.requested() {
                        return Ok(());
                    }
                }
                Ok(Wake::Controller(state)) => self.dead.controller(state, now, || input.reporter()),
                Ok(Wake::Deadline) => {}
                Ok(Wake::Stopped) => return Ok(()),
                Err(CanError::Down(why)) => {
                    self.link(LinkState::Down(format!("interface down ({why})")));
                    // Told twice without a frame between: do not spin on it.
                    if std::mem::replace(&mut down, true) && input.wait(DOWN_RETRY) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
            input.on_quiet(&mut assembler, &mut self.counters, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::can::virtual_bus::VirtualBus;
    use crate::dead_link::RecoverMode;
    use crate::events::{Event, Events, Kind};
    use crate::frame::{CanId, FrameKind};

    /// Waits (bounded) until `events` holds one of `kind`.
    fn wait_for(events: &Events, kind: Kind) -> Option<Event> {
        let give_up = Instant::now() + Duration::from_secs(20);
        while Instant::now() < give_up {
            if let Some(e) = events.after(0).into_iter().find(|e| e.kind == kind) {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The wiring of spec 17 in the input thread: a battery that talked and
    /// went quiet for RECOVER-AFTER is reported once with the command, and
    /// its next frame reports the interface working again.
    #[test]
    fn a_battery_interface_quiet_for_recover_after_is_reported_with_the_command() {
        let bus = VirtualBus::new();
        bus.create("bat1");
        let mut battery = bus.open("bat1").unwrap();
        let config = InputConfig {
            can_if: "bat1".into(),
            description: String::new(),
            capacity_ah: 100.0,
            poll_interval: None,
            serial: None,
        };
        let board = crate::status::StatusBoard::new(1, 0);
        let slot = board.input_slot(0);
        let events = Events::default();
        let (telegrams, _rx) = crossbeam_channel::bounded(16);
        let (stop_tx, stop) = crate::shutdown::channel();
        let after = Duration::from_secs(2);
        let frame = Frame::new(CanId::Standard(0x359), FrameKind::Data, &[0; 7]);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                Input {
                    config: &config,
                    opener: &bus,
                    telegrams: &telegrams,
                    slot: &slot,
                    recovery: RecoverySettings {
                        mode: RecoverMode::Off,
                        after,
                    },
                    context: ThreadContext::unwatched(&events, &stop, Duration::from_millis(200)),
                }
                .run()
            });
            // The thread must have its port before the battery talks.
            while slot.update(|s| s.link != LinkState::Up) {
                std::thread::sleep(Duration::from_millis(5));
            }
            battery.write(&frame).unwrap();
            let last_frame = Instant::now();
            let dead = wait_for(&events, Kind::InterfaceRecoveryFailed).expect("reported dead");
            assert!(last_frame.elapsed() >= after);
            assert_eq!(
                dead.message,
                "battery 1 (bat1): nothing is received any more for 2 s: the interface looks dead. The gateway cannot take it down and up itself; to revive it, run as root: ip link set bat1 down && ip link set bat1 up"
            );
            battery.write(&frame).unwrap();
            let back = wait_for(&events, Kind::InterfaceRecovered).expect("reported back");
            assert!(
                back.message.starts_with("battery 1 (bat1): traffic is back"),
                "{}",
                back.message
            );
            let reports = events.after(0);
            let dead_reports = reports.iter().filter(|e| e.kind == Kind::InterfaceRecoveryFailed);
            assert_eq!(dead_reports.count(), 1);
            drop(stop_tx);
        });
    }

    /// RECOVER = "bounce" in the input thread: a deaf interface (the
    /// battery talks, nothing arrives) is bounced after RECOVER-AFTER, is
    /// shown recovering meanwhile, and the battery's next frames end it
    /// with one interface_recovered and the counters 1 bounce, 1 recovery.
    #[test]
    fn a_deaf_battery_interface_is_bounced_and_recovers() {
        let bus = VirtualBus::new();
        bus.create("bat1");
        let mut battery = bus.open("bat1").unwrap();
        let config = InputConfig {
            can_if: "bat1".into(),
            description: String::new(),
            capacity_ah: 100.0,
            poll_interval: None,
            serial: None,
        };
        let board = crate::status::StatusBoard::new(1, 0);
        let slot = board.input_slot(0);
        let events = Events::default();
        let (telegrams, _rx) = crossbeam_channel::bounded(16);
        let (stop_tx, stop) = crate::shutdown::channel();
        let after = Duration::from_secs(2);
        // Too short to decode: traffic all the same, and the input counts it on
        // the board at once (valid frames are counted with their telegram).
        let frame = Frame::new(CanId::Standard(0x359), FrameKind::Data, &[0; 2]);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                Input {
                    config: &config,
                    opener: &bus,
                    telegrams: &telegrams,
                    slot: &slot,
                    recovery: RecoverySettings {
                        mode: RecoverMode::Bounce,
                        after,
                    },
                    context: ThreadContext::unwatched(&events, &stop, Duration::from_millis(200)),
                }
                .run()
            });
            while slot.update(|s| s.link != LinkState::Up) {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The link may show up a moment before the port reads: the
            // battery repeats its frame until the input has counted one.
            while slot.update(|s| s.frames == 0) {
                battery.write(&frame).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            bus.deafen("bat1");
            let deaf_at = Instant::now();
            // The battery goes on talking; frames get through again only
            // after the bounce.
            let give_up = Instant::now() + Duration::from_secs(20);
            let back = loop {
                battery.write(&frame).unwrap();
                if let Some(e) = events.after(0).into_iter().find(|e| e.kind == Kind::InterfaceRecovered) {
                    break e;
                }
                assert!(Instant::now() < give_up, "no recovery");
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(deaf_at.elapsed() >= after);
            assert_eq!(bus.bounces("bat1"), 1);
            assert!(
                back.message.starts_with("battery 1 (bat1): traffic is back"),
                "{}",
                back.message
            );
            let recovery = slot.update(|s| s.recovery);
            assert_eq!((recovery.bounces, recovery.recovered, recovery.failed), (1, 1, 0));
            assert_eq!(recovery.state, crate::status::RecoveryState::Normal);
            assert!(events.after(0).iter().all(|e| e.kind != Kind::InterfaceRecoveryFailed));
            drop(stop_tx);
        });
    }
}
