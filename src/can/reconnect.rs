//! Keeping one CAN interface open and served: reopening with back-off after
//! it fails, and logging each link change once (and raising it as an event).

use super::{CanError, CanOpener, CanPort};
use crate::can::LinkState;
use crate::events::{Events, Kind, Subject};
use crate::shutdown::Stop;
use std::time::Duration;

/// Reopen back-off: 0.5 s doubling up to 30 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.min(6));
    Duration::from_millis(ms.min(30_000))
}

/// Logs a link change of `label` (e.g. "battery 1 (can0)") once.
fn log_link(label: &str, link: &LinkState) {
    match link {
        LinkState::Up => log::info!("{label}: interface up"),
        LinkState::Down(why) => log::warn!("{label}: {why}; retrying"),
        LinkState::Opening => {}
    }
}

/// Logs a change of link state from `old` and raises it as an event: down
/// whenever it fails, up only when it comes back (not at the first open).
/// `label` is only made for a change: this runs on every transmission.
pub fn report_link(
    events: &Events,
    subject: Subject,
    label: impl FnOnce() -> String,
    old: &LinkState,
    new: &LinkState,
) {
    if old == new {
        return;
    }
    let label = &label();
    log_link(label, new);
    match (old, new) {
        (LinkState::Down(_), LinkState::Up) => {
            events.emit(Kind::InterfaceUp, subject, format!("{label}: interface up"))
        }
        (_, LinkState::Down(why)) if !matches!(old, LinkState::Down(_)) => {
            events.emit(Kind::InterfaceDown, subject, format!("{label}: {why}"))
        }
        _ => {}
    }
}

/// What a CAN thread does with its interface, for [`keep_serving`].
pub trait Service {
    /// Reports a link state (the thread logs and records changes).
    fn link(&self, link: LinkState);
    /// Waits `d` while staying responsive (heartbeats, mailbox, and the stop,
    /// which ends the wait at once); true when stopped.
    fn wait(&mut self, d: Duration) -> bool;
    /// Uses the open port until stopped (`Ok`) or until it must be reopened (`Err`).
    fn serve(&mut self, port: &mut dyn CanPort) -> Result<(), CanError>;
}

/// Keeps `interface` open and served until `stop`: opens it, with back-off
/// after failures, and reopens it whenever serving fails. `opened` is called
/// once, after the first attempt, whatever its outcome.
pub fn keep_serving(
    opener: &dyn CanOpener,
    interface: &str,
    stop: &Stop,
    opened: &dyn Fn(),
    service: &mut dyn Service,
) {
    let mut failures = 0u32;
    let mut first = true;
    while !stop.requested() {
        let result = opener.open(interface);
        if std::mem::take(&mut first) {
            opened();
        }
        let mut port = match result {
            Ok(port) => port,
            Err(e) => {
                service.link(LinkState::Down(e.to_string()));
                if service.wait(backoff(failures)) {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        failures = 0;
        service.link(port.link());
        match service.serve(port.as_mut()) {
            Ok(()) => return,
            Err(e) => service.link(LinkState::Down(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let secs: Vec<f64> = (0..9).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
    }
}
