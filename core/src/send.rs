//! The output's send rules: what state goes out to an inverter at a given
//! moment, and when the next push-mode transmission is due.
//!
//! Pure: the output thread (the gateway's `output` module) and the replay
//! both ask these with the instants they read or replay.

use crate::combine::{Battery, Shaped, SystemState};
use std::time::{Duration, Instant};

/// At least this often in push mode, whatever PUSH-MIN-DELAY says.
pub const REPEAT: Duration = Duration::from_secs(1);

/// The state to send at `now`: `shaped` itself, or the core's safe state
/// once it has expired (a live combiner would have made a newer one by then).
pub fn state_to_send(shaped: &Shaped, now: Instant) -> (SystemState, Battery) {
    if now <= shaped.expires || shaped.state == SystemState::Safe {
        return (shaped.state, shaped.battery);
    }
    (SystemState::Safe, shaped.safe())
}

/// The moment [`state_to_send`] turns `shaped` into the safe state by its
/// age, if it is not the safe state already.
pub fn fail_safe_at(shaped: &Shaped) -> Option<Instant> {
    (shaped.state != SystemState::Safe).then(|| shaped.expires + Duration::from_nanos(1))
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

    /// The state turning safe by age at `at` (see [`fail_safe_at`]) after
    /// the last transmission is a new state to show: once `now` reaches `at`
    /// it is pending. Returns `at` while it is still ahead, to wake for it.
    pub fn watch_fail_safe(&mut self, at: Option<Instant>, now: Instant) -> Option<Instant> {
        let at = at?;
        if at > now {
            return Some(at);
        }
        if self.last_sent.is_some_and(|sent| sent < at) {
            self.pending = true;
        }
        None
    }
}
