//! Telling worker threads to stop: a channel that is never sent on, only
//! dropped. Every thread sees the disconnection at once, in `select!` as well
//! as between blocking reads.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded};
use std::time::Duration;

/// Create the pair: drop the `Sender` to stop every holder of the receiver.
pub fn channel() -> (Sender<()>, Receiver<()>) {
    bounded(1)
}

/// True when the stop has been given.
pub fn requested(stop: &Receiver<()>) -> bool {
    !matches!(stop.try_recv(), Err(TryRecvError::Empty))
}

/// Sleeps for `d` unless stopped first; true when stopped.
pub fn sleep(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

/// Rate-limits a repeated log line: the first occurrence and then at most one
/// per `every`, saying how many were not logged in between.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line should be logged now, `n` being how many were
    /// suppressed since the last one.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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

    #[test]
    fn rate_limit_counts_what_it_suppressed() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(10));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(2));
    }
}
