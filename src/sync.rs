//! The thread plumbing every thread uses the same way: a named scoped
//! thread ([`spawn`]), a lock that survives a panicked holder ([`lock`]) and
//! a one-slot wake-up ([`Bell`]).

use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::{Mutex, MutexGuard};
use std::thread::{Scope, ScopedJoinHandle};

/// Starts a named scoped thread; a thread that cannot start is a fatal
/// error at startup.
pub fn spawn<'scope, 'env, F, T>(s: &'scope Scope<'scope, 'env>, name: String, f: F) -> ScopedJoinHandle<'scope, T>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(s, f)
        .unwrap_or_else(|e| panic!("cannot start thread {name}: {e}"))
}

/// Locks `mutex`, also after a thread panicked while holding it: what every
/// lock here guards (status, rings, heartbeats) stays usable, and one
/// panicked thread must not take the others down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A wake-up for one waiting reader: any number of rings before the reader
/// looks make one wake-up (a bounded(1) channel; a full slot means a
/// wake-up is pending already, and it will see whatever rang since).
#[derive(Debug)]
pub struct Bell {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Default for Bell {
    fn default() -> Bell {
        let (tx, rx) = bounded(1);
        Bell { tx, rx }
    }
}

impl Bell {
    /// Rings; never blocks.
    pub fn ring(&self) {
        let _ = self.tx.try_send(());
    }

    /// What the reader waits on (in a `select!` beside its other channels).
    pub fn receiver(&self) -> &Receiver<()> {
        &self.rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_rings_make_one_wake_up() {
        let bell = Bell::default();
        assert!(bell.receiver().try_recv().is_err(), "not rung yet");
        bell.ring();
        bell.ring();
        bell.ring();
        assert!(bell.receiver().try_recv().is_ok());
        assert!(bell.receiver().try_recv().is_err(), "three rings, one wake-up");
    }
}
