//! The dead-interface rule ([`crate::dead_link`]) as a CAN thread runs it:
//! fed with what the thread sees anyway (frames in, transmissions out, the
//! controller's bus-off and restart error frames), asked at the thread's own
//! wake-ups (no polling of its own), and turned into bounces, log lines,
//! events and the figures on the status board (docs/dead-interfaces.md).
//!
//! With `RECOVER = "bounce"` each bounce the rule decides is done through
//! the thread's [`CanOpener::bounce`] (directly, or by the link helper);
//! each bounce ends in one event, `interface_recovered` when the missing
//! traffic comes back, `interface_recovery_failed` when it does not within
//! RECOVER-AFTER. With `"off"`, or when nothing here may bounce, the owner
//! is told once per dead spell what is wrong and the command that revives
//! the interface (an `interface_recovery_failed` event); the rule's later
//! bounces of that spell are only logged at debug level.

use crate::can::{BounceError, Bounced, CanError, CanOpener, ControllerState};
use crate::dead_link::{DeadLink, Decision, Observation, Reason, RecoverMode, RecoverySettings};
use crate::events::{Events, Kind, Subject};
use std::time::{Duration, Instant};

/// Where an interface stands in its dead spell, as the status board shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryState {
    /// Working, or dead with nothing done about it but telling the owner.
    #[default]
    Normal,
    /// Taken down and up at least once in this dead spell, and no traffic
    /// back yet ("recovering" in the telemetry and on the status page).
    Recovering,
}

/// One interface's recovery figures, as kept on the status board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkRecovery {
    pub state: RecoveryState,
    /// Times the gateway took the link down and up.
    pub bounces: u64,
    /// Dead spells that ended with traffic back after a bounce.
    pub recovered: u64,
    /// Bounces that brought nothing back within RECOVER-AFTER, or that
    /// could not be done (refused, failed).
    pub failed: u64,
}

/// A status cell that holds a [`LinkRecovery`].
pub trait RecoveryBoard {
    fn update_recovery(&self, f: &mut dyn FnMut(&mut LinkRecovery));
}

/// What was done in the current dead spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spell {
    /// Nothing yet (or no dead spell).
    Quiet,
    /// The owner was told the command (nothing here may bounce).
    Told,
    /// The link was taken down and up.
    Bounced,
}

/// One interface's dead-link watch, kept by its thread across reopenings.
#[derive(Debug, Clone)]
pub struct DeadWatch {
    rule: DeadLink,
    settings: RecoverySettings,
    spell: Spell,
}

/// Who is reporting: the thread's label ("battery 1 (can0)"), its
/// interface and its event subject, what bounces its link and where its
/// figures go; made only when there is something to report.
pub struct Reporter<'a> {
    pub events: &'a Events,
    pub subject: Subject,
    pub interface: &'a str,
    pub label: String,
    /// Takes the link down and up (with RECOVER = "bounce").
    pub link: &'a dyn CanOpener,
    pub board: &'a dyn RecoveryBoard,
}

impl DeadWatch {
    pub fn new(settings: RecoverySettings) -> DeadWatch {
        DeadWatch {
            rule: DeadLink::new(settings.after),
            settings,
            spell: Spell::Quiet,
        }
    }

    /// A frame came in at `now`; `report` is called only for a recovery.
    pub fn received<'a>(&mut self, now: Instant, report: impl FnOnce() -> Reporter<'a>) {
        self.saw(Observation::FrameReceived, now, report);
    }

    /// The thread (re)opened the interface at `now`: the peer gets
    /// RECOVER-AFTER on the new port before anything is judged.
    pub fn opened(&mut self, now: Instant) {
        // Opening is never a recovery: nothing to report.
        let _ = self.rule.observe(Observation::Opened, now);
    }

    /// The outcome of one write: a full queue or a down interface is a
    /// failed transmission; other errors make the thread reopen the port
    /// and are not the rule's business.
    pub fn sent<'a>(&mut self, result: &Result<(), CanError>, now: Instant, report: impl FnOnce() -> Reporter<'a>) {
        let seen = match result {
            Ok(()) => Observation::SendSucceeded,
            Err(CanError::Busy | CanError::Down(_)) => Observation::SendFailed,
            Err(CanError::Gone(_) | CanError::Other(_)) => return,
        };
        self.saw(seen, now, report);
    }

    /// The controller said it went bus-off, or was restarted.
    pub fn controller<'a>(&mut self, state: ControllerState, now: Instant, report: impl Fn() -> Reporter<'a>) {
        let seen = match state {
            ControllerState::BusOff => {
                log::warn!("{}: the controller went bus-off", report().label);
                Observation::ControllerStopped
            }
            ControllerState::Restarted => Observation::ControllerRunning,
        };
        self.saw(seen, now, report);
    }

    fn saw<'a>(&mut self, seen: Observation, now: Instant, report: impl FnOnce() -> Reporter<'a>) {
        if let Some(decision) = self.rule.observe(seen, now) {
            self.act(decision, &report());
        }
    }

    /// When the thread should wake up next for the rule, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.rule.deadline()
    }

    /// Asks the rule at a wake-up; `report` is called only when it decides.
    pub fn check<'a>(&mut self, now: Instant, report: impl FnOnce() -> Reporter<'a>) {
        let Some(first) = self.rule.poll(now) else { return };
        let reporter = report();
        self.act(first, &reporter);
        while let Some(next) = self.rule.poll(now) {
            self.act(next, &reporter);
        }
    }

    fn act(&mut self, decision: Decision, to: &Reporter) {
        match decision {
            Decision::Bounce { reason, attempt } => self.bounce(reason, attempt, to),
            Decision::RecoveryFailed {
                reason,
                attempts,
                next_bounce_in,
            } => self.bounce_failed(reason, attempts, next_bounce_in, to),
            Decision::Recovered { reason, .. } => self.recovered(reason, to),
        }
    }

    fn bounce(&mut self, reason: Reason, attempt: u32, to: &Reporter) {
        let label = &to.label;
        if self.settings.mode == RecoverMode::Off {
            self.tell_once(reason, None, attempt, to);
            return;
        }
        match to.link.bounce(to.interface) {
            Ok(how) => {
                let by = match how {
                    Bounced::Directly => "",
                    Bounced::ByHelper => " (by the link helper)",
                };
                log::warn!(
                    "{label}: {} for {:.0} s: took {} down and up{by}, try {attempt}",
                    reason.describe(),
                    self.settings.after.as_secs_f64(),
                    to.interface
                );
                self.spell = Spell::Bounced;
                to.board.update_recovery(&mut |r| {
                    r.bounces += 1;
                    r.state = RecoveryState::Recovering;
                });
            }
            Err(BounceError::NoPrivilege(why)) => self.tell_once(reason, Some(&why), attempt, to),
            Err(e) => {
                let message = format!("{label}: {} and {e}", reason.describe());
                log::warn!("{message}");
                to.events.emit(Kind::InterfaceRecoveryFailed, to.subject, message);
                to.board.update_recovery(&mut |r| r.failed += 1);
            }
        }
    }

    /// Nothing here may bounce: the owner is told once per dead spell.
    fn tell_once(&mut self, reason: Reason, why: Option<&str>, attempt: u32, to: &Reporter) {
        if self.spell != Spell::Quiet {
            log::debug!(
                "{}: still dead ({}); a bounce would be number {attempt}",
                to.label,
                reason.describe()
            );
            return;
        }
        self.spell = Spell::Told;
        let message = dead_message(&to.label, to.interface, reason, self.settings.after, why);
        log::warn!("{message}");
        to.events.emit(Kind::InterfaceRecoveryFailed, to.subject, message);
    }

    fn bounce_failed(&mut self, reason: Reason, attempts: u32, next_in: Duration, to: &Reporter) {
        if self.spell != Spell::Bounced {
            log::debug!("{}: still dead; next look in {:.0} s", to.label, next_in.as_secs_f64());
            return;
        }
        let message = format!(
            "{}: still dead after taking it down and up ({}, try {attempts}); next try in {:.0} s",
            to.label,
            reason.describe(),
            next_in.as_secs_f64()
        );
        log::warn!("{message}");
        to.events.emit(Kind::InterfaceRecoveryFailed, to.subject, message);
        to.board.update_recovery(&mut |r| r.failed += 1);
    }

    fn recovered(&mut self, reason: Reason, to: &Reporter) {
        let message = format!(
            "{}: traffic is back, the interface works again (before: {})",
            to.label,
            reason.describe()
        );
        log::info!("{message}");
        to.events.emit(Kind::InterfaceRecovered, to.subject, message);
        if std::mem::replace(&mut self.spell, Spell::Quiet) == Spell::Bounced {
            to.board.update_recovery(&mut |r| {
                r.recovered += 1;
                r.state = RecoveryState::Normal;
            });
        }
    }
}

/// What is wrong with `interface` and the command that revives it; `why`
/// says why the gateway could not do it itself with RECOVER = "bounce".
pub fn dead_message(label: &str, interface: &str, reason: Reason, after: Duration, why: Option<&str>) -> String {
    let restart = match reason {
        Reason::ControllerStopped => {
            " (or give it automatic restart after bus-off, restart-ms, except on mcp251xfd: README, Hardware)"
        }
        Reason::TransmitFailing | Reason::Silent => "",
    };
    let cannot = match why {
        None => String::new(),
        Some(why) => format!(
            " (RECOVER = \"bounce\", but {why}; install and start bms-gateway-link-helper.socket, docs/dead-interfaces.md)"
        ),
    };
    format!(
        "{label}: {} for {:.0} s: the interface looks dead. The gateway cannot take it down and up itself{cannot}; to revive it, run as root: ip link set {interface} down && ip link set {interface} up{restart}",
        reason.describe(),
        after.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::can::{CanPort, ControllerState};
    use std::sync::Mutex;

    /// A link that answers bounces as told, and counts them.
    struct FakeLink {
        answer: Result<Bounced, BounceError>,
        bounced: Mutex<Vec<String>>,
    }

    impl FakeLink {
        fn answering(answer: Result<Bounced, BounceError>) -> FakeLink {
            FakeLink {
                answer,
                bounced: Mutex::default(),
            }
        }
    }

    impl CanOpener for FakeLink {
        fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError> {
            Err(CanError::Gone(interface.into()))
        }
        fn bounce(&self, interface: &str) -> Result<Bounced, BounceError> {
            self.bounced.lock().unwrap().push(interface.into());
            self.answer.clone()
        }
    }

    #[derive(Default)]
    struct Board(Mutex<LinkRecovery>);

    impl RecoveryBoard for Board {
        fn update_recovery(&self, f: &mut dyn FnMut(&mut LinkRecovery)) {
            f(&mut self.0.lock().unwrap());
        }
    }

    impl Board {
        fn get(&self) -> LinkRecovery {
            *self.0.lock().unwrap()
        }
    }

    fn settings(mode: RecoverMode, secs: u64) -> RecoverySettings {
        RecoverySettings {
            mode,
            after: Duration::from_secs(secs),
        }
    }

    fn reporter<'a>(events: &'a Events, link: &'a FakeLink, board: &'a Board) -> Reporter<'a> {
        Reporter {
            events,
            subject: Subject::Battery(1),
            interface: "can1",
            label: "battery 2 (can1)".into(),
            link,
            board,
        }
    }

    fn kinds(events: &Events) -> Vec<(Kind, String)> {
        events.after(0).into_iter().map(|e| (e.kind, e.message)).collect()
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_dead_spell_is_reported_once_with_the_command_and_its_end_once() {
        let (events, board) = (Events::default(), Board::default());
        let link = FakeLink::answering(Ok(Bounced::Directly));
        let r = || reporter(&events, &link, &board);
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(RecoverMode::Off, 30));
        watch.received(t0, r);
        watch.check(secs(t0, 29), r);
        assert!(kinds(&events).is_empty());
        // Dead at 30 s; the rule's later tries (60 s judged, 90 s, 210 s)
        // add nothing.
        for s in [30, 60, 90, 150, 210, 400] {
            watch.check(secs(t0, s), r);
        }
        let want = "battery 2 (can1): nothing is received any more for 30 s: the interface looks dead. The gateway cannot take it down and up itself; to revive it, run as root: ip link set can1 down && ip link set can1 up";
        assert_eq!(kinds(&events), [(Kind::InterfaceRecoveryFailed, want.to_string())]);
        // A send is no proof for a silent interface; a frame is.
        watch.sent(&Ok(()), secs(t0, 401), r);
        assert_eq!(kinds(&events).len(), 1);
        watch.received(secs(t0, 402), r);
        let all = kinds(&events);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].0, Kind::InterfaceRecovered);
        assert!(
            all[1].1.starts_with("battery 2 (can1): traffic is back"),
            "{}",
            all[1].1
        );
        // RECOVER = "off" never touches the link.
        assert!(link.bounced.lock().unwrap().is_empty());
        assert_eq!(board.get(), LinkRecovery::default());
    }

    #[test]
    fn only_a_full_queue_or_a_down_link_is_a_failed_send() {
        let (events, board) = (Events::default(), Board::default());
        let link = FakeLink::answering(Ok(Bounced::Directly));
        let r = || reporter(&events, &link, &board);
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(RecoverMode::Off, 2));
        watch.sent(&Err(CanError::Gone("ENODEV".into())), t0, r);
        watch.check(secs(t0, 3), r);
        assert!(kinds(&events).is_empty());
        watch.sent(&Err(CanError::Busy), secs(t0, 3), r);
        watch.sent(&Err(CanError::Down("ENETDOWN".into())), secs(t0, 4), r);
        watch.check(secs(t0, 5), r);
        let all = kinds(&events);
        assert_eq!(all.len(), 1);
        assert!(all[0].1.contains("every transmission fails for 2 s"), "{}", all[0].1);
    }

    /// RECOVER = "bounce" with the privilege: the link is bounced when the
    /// rule says so, shown "recovering", and the traffic back ends it with
    /// one interface_recovered and the counters 1 bounce, 1 recovered.
    #[test]
    fn a_bounce_that_brings_traffic_back_is_one_recovery() {
        let (events, board) = (Events::default(), Board::default());
        let link = FakeLink::answering(Ok(Bounced::Directly));
        let r = || reporter(&events, &link, &board);
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(RecoverMode::Bounce, 10));
        watch.received(t0, r);
        watch.check(secs(t0, 9), r);
        assert!(link.bounced.lock().unwrap().is_empty());
        watch.check(secs(t0, 10), r);
        assert_eq!(*link.bounced.lock().unwrap(), ["can1"]);
        assert_eq!(
            board.get(),
            LinkRecovery {
                state: RecoveryState::Recovering,
                bounces: 1,
                recovered: 0,
                failed: 0
            }
        );
        assert!(kinds(&events).is_empty(), "a bounce ends in one event, later");
        watch.received(secs(t0, 11), r);
        let all = kinds(&events);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, Kind::InterfaceRecovered);
        assert_eq!(
            board.get(),
            LinkRecovery {
                state: RecoveryState::Normal,
                bounces: 1,
                recovered: 1,
                failed: 0
            }
        );
    }

    /// An interface that stays dead: bounced at 10 s, then 20 s and 40 s
    /// after the previous bounce (RECOVER-AFTER 10 s doubled), each try
    /// ending in interface_recovery_failed; "recovering" all along.
    #[test]
    fn a_link_that_stays_dead_is_bounced_on_the_back_off_schedule() {
        let (events, board) = (Events::default(), Board::default());
        let link = FakeLink::answering(Ok(Bounced::ByHelper));
        let r = || reporter(&events, &link, &board);
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(RecoverMode::Bounce, 10));
        watch.received(t0, r);
        let mut bounced_at = Vec::new();
        for s in 1..=75 {
            let before = link.bounced.lock().unwrap().len();
            watch.check(secs(t0, s), r);
            if link.bounced.lock().unwrap().len() > before {
                bounced_at.push(s);
            }
        }
        // 10; judged failed at 20, next 10 + 20 = 30; failed at 40, next
        // 30 + 40 = 70.
        assert_eq!(bounced_at, [10, 30, 70]);
        let failed: Vec<_> = kinds(&events)
            .into_iter()
            .filter(|(k, _)| *k == Kind::InterfaceRecoveryFailed)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(failed.len(), 2);
        assert_eq!(
            failed[0],
            "battery 2 (can1): still dead after taking it down and up (nothing is received any more, try 1); next try in 10 s"
        );
        assert_eq!(
            board.get(),
            LinkRecovery {
                state: RecoveryState::Recovering,
                bounces: 3,
                recovered: 0,
                failed: 2
            }
        );
    }

    /// No privilege and no helper: told once per spell, with why and the
    /// command; the back-off's later tries are quiet.
    #[test]
    fn without_the_privilege_the_owner_is_told_once_with_the_command() {
        let (events, board) = (Events::default(), Board::default());
        let link = FakeLink::answering(Err(BounceError::NoPrivilege("EPERM; no helper".into())));
        let r = || reporter(&events, &link, &board);
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(RecoverMode::Bounce, 10));
        watch.received(t0, r);
        for s in 1..=200 {
            watch.check(secs(t0, s), r);
        }
        assert!(link.bounced.lock().unwrap().len() > 1, "tried again on the schedule");
        let want = "battery 2 (can1): nothing is received any more for 10 s: the interface looks dead. The gateway cannot take it down and up itself (RECOVER = \"bounce\", but EPERM; no helper; install and start bms-gateway-link-helper.socket, docs/dead-interfaces.md); to revive it, run as root: ip link set can1 down && ip link set can1 up";
        assert_eq!(kinds(&events), [(Kind::InterfaceRecoveryFailed, want.to_string())]);
        assert_eq!(board.get(), LinkRecovery::default());
    }

    /// A refused bounce is a failed recovery each time it is tried.
    #[test]
    fn a_refused_bounce_is_a_failed_recovery() {
        let (events, board) = (Events::default(), Board::default());
        let link = FakeLink::answering(Err(BounceError::Refused("\"can1\" is not a CAN-IF".into())));
        let r = || reporter(&events, &link, &board);
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(RecoverMode::Bounce, 10));
        watch.received(t0, r);
        watch.check(secs(t0, 10), r);
        assert_eq!(
            kinds(&events),
            [(
                Kind::InterfaceRecoveryFailed,
                "battery 2 (can1): nothing is received any more and the link helper refused (\"can1\" is not a CAN-IF)"
                    .to_string()
            )]
        );
        assert_eq!(board.get().failed, 1);
        assert_eq!(board.get().state, RecoveryState::Normal);
    }

    /// Bus-off reported by the controller for RECOVER-AFTER is a bounce; a
    /// restart by the kernel (restart-ms) before that is none.
    #[test]
    fn a_bus_off_controller_is_bounced_unless_the_kernel_restarts_it() {
        let (events, board) = (Events::default(), Board::default());
        let link = FakeLink::answering(Ok(Bounced::Directly));
        let r = || reporter(&events, &link, &board);
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(RecoverMode::Bounce, 10));
        watch.controller(ControllerState::BusOff, t0, r);
        watch.controller(ControllerState::Restarted, secs(t0, 1), r);
        watch.check(secs(t0, 20), r);
        assert!(link.bounced.lock().unwrap().is_empty());
        watch.controller(ControllerState::BusOff, secs(t0, 20), r);
        watch.check(secs(t0, 30), r);
        assert_eq!(*link.bounced.lock().unwrap(), ["can1"]);
        // Any sign of life cures a stopped controller: a send that goes out.
        watch.sent(&Ok(()), secs(t0, 31), r);
        assert_eq!(kinds(&events).last().map(|e| e.0), Some(Kind::InterfaceRecovered));
        assert_eq!(board.get().recovered, 1);
    }
}
