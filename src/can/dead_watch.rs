//! The dead-interface rule ([`crate::dead_link`]) as a CAN thread runs it:
//! fed with what the thread sees anyway (frames in, transmissions out),
//! asked at the thread's own wake-ups (no polling of its own), and turned
//! into log lines and events (docs/dead-interfaces.md).
//!
//! The gateway cannot take a link down and up yet (that needs CAP_NET_ADMIN,
//! which it does not hold), so when the rule says "bounce" it tells the
//! owner once per dead spell what is wrong and the command that revives
//! the interface, as an `interface_recovery_failed` event; when traffic
//! comes back, `interface_recovered`. The rule's later bounces of the same
//! spell (its back-off schedule) are only logged at debug level.

use crate::can::CanError;
use crate::dead_link::{DeadLink, Decision, Observation, Reason, RecoverySettings};
use crate::events::{Events, Kind, Subject};
use std::time::{Duration, Instant};

/// One interface's dead-link watch, kept by its thread across reopenings.
#[derive(Debug, Clone)]
pub struct DeadWatch {
    rule: DeadLink,
    after: Duration,
}

/// Who is reporting: the thread's label ("battery 1 (can0)"), its
/// interface and its event subject, made only when there is something to
/// report.
pub struct Reporter<'a> {
    pub events: &'a Events,
    pub subject: Subject,
    pub interface: &'a str,
    pub label: String,
}

impl DeadWatch {
    pub fn new(settings: RecoverySettings) -> DeadWatch {
        DeadWatch {
            rule: DeadLink::new(settings.after),
            after: settings.after,
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

    fn saw<'a>(&mut self, seen: Observation, now: Instant, report: impl FnOnce() -> Reporter<'a>) {
        if let Some(decision) = self.rule.observe(seen, now) {
            self.report(decision, &report());
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
        self.report(first, &reporter);
        while let Some(next) = self.rule.poll(now) {
            self.report(next, &reporter);
        }
    }

    fn report(&self, decision: Decision, to: &Reporter) {
        let label = &to.label;
        match decision {
            Decision::Bounce { reason, attempt: 1 } => {
                let message = dead_message(label, to.interface, reason, self.after);
                log::warn!("{message}");
                to.events.emit(Kind::InterfaceRecoveryFailed, to.subject, message);
            }
            Decision::Bounce { reason, attempt } => log::debug!(
                "{label}: still dead ({}); a bounce would be number {attempt}",
                reason.describe()
            ),
            Decision::RecoveryFailed { next_bounce_in, .. } => log::debug!(
                "{label}: still dead; next look in {:.0} s",
                next_bounce_in.as_secs_f64()
            ),
            Decision::Recovered { reason, .. } => {
                let message = format!(
                    "{label}: traffic is back, the interface works again (before: {})",
                    reason.describe()
                );
                log::info!("{message}");
                to.events.emit(Kind::InterfaceRecovered, to.subject, message);
            }
        }
    }
}

/// What is wrong with `interface` and the command that revives it.
pub fn dead_message(label: &str, interface: &str, reason: Reason, after: Duration) -> String {
    let restart = match reason {
        Reason::ControllerStopped => {
            " (or give it automatic restart after bus-off, restart-ms, except on mcp251xfd: README, Hardware)"
        }
        Reason::TransmitFailing | Reason::Silent => "",
    };
    format!(
        "{label}: {} for {:.0} s: the interface looks dead. The gateway cannot take it down and up itself; to revive it, run as root: ip link set {interface} down && ip link set {interface} up{restart}",
        reason.describe(),
        after.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_link::RecoverMode;

    fn settings(secs: u64) -> RecoverySettings {
        RecoverySettings {
            mode: RecoverMode::Off,
            after: Duration::from_secs(secs),
        }
    }

    fn reporter(events: &Events) -> Reporter<'_> {
        Reporter {
            events,
            subject: Subject::Battery(1),
            interface: "can1",
            label: "battery 2 (can1)".into(),
        }
    }

    fn kinds(events: &Events) -> Vec<(Kind, String)> {
        events.after(0).into_iter().map(|e| (e.kind, e.message)).collect()
    }

    #[test]
    fn a_dead_spell_is_reported_once_with_the_command_and_its_end_once() {
        let events = Events::default();
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(30));
        watch.received(t0, || reporter(&events));
        watch.check(t0 + Duration::from_secs(29), || reporter(&events));
        assert!(kinds(&events).is_empty());
        // Dead at 30 s; the rule's later tries (60 s judged, 90 s, 210 s)
        // add nothing.
        for s in [30, 60, 90, 150, 210, 400] {
            watch.check(t0 + Duration::from_secs(s), || reporter(&events));
        }
        let want = "battery 2 (can1): nothing is received any more for 30 s: the interface looks dead. The gateway cannot take it down and up itself; to revive it, run as root: ip link set can1 down && ip link set can1 up";
        assert_eq!(kinds(&events), [(Kind::InterfaceRecoveryFailed, want.to_string())]);
        // A send is no proof for a silent interface; a frame is.
        watch.sent(&Ok(()), t0 + Duration::from_secs(401), || reporter(&events));
        assert_eq!(kinds(&events).len(), 1);
        watch.received(t0 + Duration::from_secs(402), || reporter(&events));
        let all = kinds(&events);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].0, Kind::InterfaceRecovered);
        assert!(
            all[1].1.starts_with("battery 2 (can1): traffic is back"),
            "{}",
            all[1].1
        );
    }

    #[test]
    fn only_a_full_queue_or_a_down_link_is_a_failed_send() {
        let events = Events::default();
        let t0 = Instant::now();
        let mut watch = DeadWatch::new(settings(2));
        watch.sent(&Err(CanError::Gone("ENODEV".into())), t0, || reporter(&events));
        watch.check(t0 + Duration::from_secs(3), || reporter(&events));
        assert!(kinds(&events).is_empty());
        watch.sent(&Err(CanError::Busy), t0 + Duration::from_secs(3), || reporter(&events));
        watch.sent(
            &Err(CanError::Down("ENETDOWN".into())),
            t0 + Duration::from_secs(4),
            || reporter(&events),
        );
        watch.check(t0 + Duration::from_secs(5), || reporter(&events));
        let all = kinds(&events);
        assert_eq!(all.len(), 1);
        assert!(all[0].1.contains("every transmission fails for 2 s"), "{}", all[0].1);
    }
}
