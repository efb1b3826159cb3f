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

#[cfg(test)]
mod tests {
    use super::*;

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
}
