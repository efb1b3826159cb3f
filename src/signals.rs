//! SIGTERM, SIGINT, SIGHUP and SIGUSR1 as messages on a channel (signal-hook's
//! iterator, which tells them apart; ctrlc is not used on the same signals).

use crossbeam_channel::{Receiver, bounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::io;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop cleanly.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGUSR1: write a flight recording now (docs/recorder.md).
    Record,
}

/// Listens for signals until the returned handle is closed (or the process ends).
pub fn listen() -> io::Result<(Receiver<Signal>, signal_hook::iterator::Handle)> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    let handle = signals.handle();
    let (tx, rx) = bounded(16);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            let what = match sig {
                SIGHUP => Signal::Reload,
                SIGUSR1 => Signal::Record,
                _ => Signal::Stop,
            };
            // A full queue already holds a request of each kind that matters.
            let _ = tx.try_send(what);
        }
    })?;
    Ok((rx, handle))
}
