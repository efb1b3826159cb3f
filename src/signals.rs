//! SIGTERM, SIGINT and SIGHUP as messages on a channel (signal-hook's
//! iterator, which tells them apart; ctrlc is not used on the same signals).

use crossbeam_channel::{Receiver, bounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop cleanly.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// Listens for signals until the returned handle is closed (or the process ends).
pub fn listen() -> io::Result<(Receiver<Signal>, signal_hook::iterator::Handle)> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    let (tx, rx) = bounded(16);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            let what = if sig == SIGHUP { Signal::Reload } else { Signal::Stop };
            // A full queue already holds a request of each kind that matters.
            let _ = tx.try_send(what);
        }
    })?;
    Ok((rx, handle))
}
