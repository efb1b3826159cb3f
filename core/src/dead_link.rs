//! The dead-interface rule (spec section 17): from what a CAN thread already
//! knows about its interface (a frame received, a transmission that went
//! out or failed, the controller reported stopped or running), decide when
//! an interface that is "up" but no longer works should be taken down and
//! up again ("bounced"), how often, and whether a bounce helped.
//!
//! Pure: every observation and every question comes with the instant it
//! happened at; the rule reads no clock, and it bounces nothing itself (the
//! shell does, or, without the privilege, tells the owner the command).
//! docs/dead-interfaces.md says what the rule can and cannot tell apart.
//!
//! The rule, with `after` = `[can] RECOVER-AFTER`:
//! - an interface is dead when, for at least `after`, nothing was received
//!   although something had been received before ([`Reason::Silent`]), or
//!   every transmission failed ([`Reason::TransmitFailing`]), or the
//!   controller stayed bus-off or stopped ([`Reason::ControllerStopped`]);
//! - a dead interface is bounced ([`Decision::Bounce`]); the bounce helped
//!   when the traffic its reason missed comes back ([`Decision::Recovered`]);
//!   without that within `after` it failed ([`Decision::RecoveryFailed`]),
//!   and the next bounce comes [`retry_interval`] after the last one:
//!   `after` doubled for each bounce that did not help, at most
//!   [`MAX_INTERVAL`] (but never sooner than `after`).
//!
//! Every symptom has to last `after`, and each bounce restarts every
//! symptom's clock, so two bounces are always at least `after` apart.

use std::time::{Duration, Instant};

/// The longest wait between two bounces of an interface that stays dead.
pub const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// The shortest and longest `RECOVER-AFTER` the configuration accepts (s).
pub const RECOVER_AFTER_RANGE: (f64, f64) = (2.0, 3600.0);

/// `RECOVER-AFTER` when the configuration does not set it.
pub const DEFAULT_RECOVER_AFTER: Duration = Duration::from_secs(30);

/// `[can] RECOVER`: what the gateway does about a dead interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoverMode {
    /// Detect, log and report it, with the command that fixes it; never
    /// touch the link.
    #[default]
    Off,
    /// Take the link down and up (needs the privilege, see the docs).
    Bounce,
}

impl RecoverMode {
    /// The spelling in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            RecoverMode::Off => "off",
            RecoverMode::Bounce => "bounce",
        }
    }
}

/// `[can]`: the dead-interface settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverySettings {
    /// `RECOVER`.
    pub mode: RecoverMode,
    /// `RECOVER-AFTER`: how long a symptom must last, and the first
    /// interval between bounces.
    pub after: Duration,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        RecoverySettings {
            mode: RecoverMode::Off,
            after: DEFAULT_RECOVER_AFTER,
        }
    }
}

/// What the CAN thread saw on its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A frame came in.
    FrameReceived,
    /// A frame was handed to the interface.
    SendSucceeded,
    /// A frame could not be sent (ENOBUFS: the queue stays full; ENETDOWN).
    SendFailed,
    /// The controller reported bus-off or stopped (where the driver says so).
    ControllerStopped,
    /// The controller reported it is running again (error-active, warning
    /// or passive).
    ControllerRunning,
    /// The thread (re)opened the interface (at start, after it was gone):
    /// every symptom's clock starts again, as the peer gets a fair chance
    /// to be heard on the new port. Not proof of life.
    Opened,
}

/// Why an interface is judged dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Bus-off or stopped for `after`.
    ControllerStopped,
    /// Every transmission failed for `after`.
    TransmitFailing,
    /// Nothing received for `after`, after it had traffic.
    Silent,
}

impl Reason {
    /// What is wrong, for the log and the event.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::ControllerStopped => "the controller is bus-off or stopped",
            Reason::TransmitFailing => "every transmission fails",
            Reason::Silent => "nothing is received any more",
        }
    }

    /// Whether `seen` is the traffic this reason missed, i.e. proof that a
    /// bounce made for it helped.
    fn cured_by(self, seen: Observation) -> bool {
        match self {
            Reason::Silent => seen == Observation::FrameReceived,
            Reason::TransmitFailing => seen == Observation::SendSucceeded,
            Reason::ControllerStopped => matches!(
                seen,
                Observation::FrameReceived | Observation::SendSucceeded | Observation::ControllerRunning
            ),
        }
    }
}

/// What the shell should do or report now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Take the link down and up now; `attempt` counts the bounces of this
    /// dead spell, from 1.
    Bounce { reason: Reason, attempt: u32 },
    /// Traffic came back after `attempts` bounces (`interface_recovered`).
    Recovered { reason: Reason, attempts: u32 },
    /// The last bounce did not bring traffic back within `after`
    /// (`interface_recovery_failed`); the next one comes in `next_bounce_in`.
    RecoveryFailed {
        reason: Reason,
        attempts: u32,
        next_bounce_in: Duration,
    },
}

/// Where the rule stands on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No bounce pending: watching the symptoms.
    Watching,
    /// Bounced at `bounced_at`; waiting up to `after` for the traffic back.
    Recovering {
        reason: Reason,
        attempts: u32,
        bounced_at: Instant,
    },
    /// The last bounce did not help; the next one is due at `next_at`.
    BackingOff {
        reason: Reason,
        attempts: u32,
        next_at: Instant,
    },
}

/// Reception, for the silence symptom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reception {
    /// Nothing received yet: silence means nothing (nobody may be there).
    NeverHeard,
    /// Quiet since this instant: the last frame, or the last bounce.
    QuietSince(Instant),
}

/// Transmission, for the failing symptom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transmission {
    /// The last transmission went out, or none failed since the last bounce.
    Working,
    /// Every transmission failed since this instant.
    FailingSince(Instant),
}

/// The controller's reported state, for the stopped symptom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Running,
    StoppedSince(Instant),
}

/// The rule for one interface.
#[derive(Debug, Clone)]
pub struct DeadLink {
    after: Duration,
    phase: Phase,
    reception: Reception,
    transmission: Transmission,
    controller: Controller,
}

/// How long after bounce number `attempts` (from 1) of a dead spell the next
/// one comes: `after` doubled per bounce that did not help, at most
/// [`MAX_INTERVAL`], never sooner than `after`.
pub fn retry_interval(after: Duration, attempts: u32) -> Duration {
    let doubled = after.saturating_mul(1u32.checked_shl(attempts).unwrap_or(u32::MAX));
    doubled.min(MAX_INTERVAL).max(after)
}

impl DeadLink {
    /// A rule that has seen nothing yet.
    pub fn new(after: Duration) -> DeadLink {
        DeadLink {
            after,
            phase: Phase::Watching,
            reception: Reception::NeverHeard,
            transmission: Transmission::Working,
            controller: Controller::Running,
        }
    }

    /// Where the rule stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The next instant at which [`DeadLink::poll`] may decide something;
    /// `None` while no symptom is running. A thread folds it into the
    /// deadline it sleeps until, so the rule needs no wake-ups of its own.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Watching => {
                let stopped = match self.controller {
                    Controller::StoppedSince(t) => Some(t),
                    Controller::Running => None,
                };
                let failing = match self.transmission {
                    Transmission::FailingSince(t) => Some(t),
                    Transmission::Working => None,
                };
                let quiet = match self.reception {
                    Reception::QuietSince(t) => Some(t),
                    Reception::NeverHeard => None,
                };
                let first = [stopped, failing, quiet].into_iter().flatten().min()?;
                first.checked_add(self.after)
            }
            Phase::Recovering { bounced_at, .. } => bounced_at.checked_add(self.after),
            Phase::BackingOff { next_at, .. } => Some(next_at),
        }
    }

    /// Records what the CAN thread saw at `now`; reports a recovery when it
    /// is the traffic the last bounce was made to bring back.
    pub fn observe(&mut self, seen: Observation, now: Instant) -> Option<Decision> {
        match seen {
            Observation::FrameReceived => self.reception = Reception::QuietSince(now),
            Observation::SendSucceeded => self.transmission = Transmission::Working,
            Observation::SendFailed => {
                if self.transmission == Transmission::Working {
                    self.transmission = Transmission::FailingSince(now);
                }
            }
            Observation::ControllerStopped => {
                if self.controller == Controller::Running {
                    self.controller = Controller::StoppedSince(now);
                }
            }
            Observation::ControllerRunning => self.controller = Controller::Running,
            Observation::Opened => self.restart_clocks(now),
        }
        let (reason, attempts) = match self.phase {
            Phase::Watching => return None,
            Phase::Recovering { reason, attempts, .. } | Phase::BackingOff { reason, attempts, .. } => {
                (reason, attempts)
            }
        };
        if !reason.cured_by(seen) {
            return None;
        }
        self.phase = Phase::Watching;
        Some(Decision::Recovered { reason, attempts })
    }

    /// What to do at `now`. Call it whenever the thread is awake anyway;
    /// a late call catches up one step at a time, so call it again until
    /// it says `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Decision> {
        match self.phase {
            Phase::Watching => {
                let reason = self.dead_for(now)?;
                Some(self.bounce(reason, 1, now))
            }
            Phase::Recovering {
                reason,
                attempts,
                bounced_at,
            } => {
                let judged_at = bounced_at.checked_add(self.after)?;
                if now < judged_at {
                    return None;
                }
                let next_at = bounced_at.checked_add(retry_interval(self.after, attempts))?;
                self.phase = Phase::BackingOff {
                    reason,
                    attempts,
                    next_at,
                };
                Some(Decision::RecoveryFailed {
                    reason,
                    attempts,
                    next_bounce_in: next_at.saturating_duration_since(now),
                })
            }
            Phase::BackingOff {
                reason,
                attempts,
                next_at,
            } => (now >= next_at).then(|| self.bounce(reason, attempts.saturating_add(1), now)),
        }
    }

    /// Every symptom starts again at `now` (what was heard stays heard).
    fn restart_clocks(&mut self, now: Instant) {
        if self.reception != Reception::NeverHeard {
            self.reception = Reception::QuietSince(now);
        }
        self.transmission = Transmission::Working;
        self.controller = Controller::Running;
    }

    /// The symptom that has lasted `after` at `now`, the most telling first.
    fn dead_for(&self, now: Instant) -> Option<Reason> {
        let lasted = |since: Instant| now.saturating_duration_since(since) >= self.after;
        if let Controller::StoppedSince(t) = self.controller
            && lasted(t)
        {
            return Some(Reason::ControllerStopped);
        }
        if let Transmission::FailingSince(t) = self.transmission
            && lasted(t)
        {
            return Some(Reason::TransmitFailing);
        }
        if let Reception::QuietSince(t) = self.reception
            && lasted(t)
        {
            return Some(Reason::Silent);
        }
        None
    }

    /// Decides a bounce at `now`: every symptom's clock starts again (a
    /// bounce resets the controller, so what it shows afterwards is new).
    fn bounce(&mut self, reason: Reason, attempt: u32, now: Instant) -> Decision {
        self.restart_clocks(now);
        self.phase = Phase::Recovering {
            reason,
            attempts: attempt,
            bounced_at: now,
        };
        Decision::Bounce { reason, attempt }
    }
}

#[cfg(test)]
mod tests;
