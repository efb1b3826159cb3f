//! The thread plumbing every thread uses the same way: a named scoped
//! thread ([`spawn`]) and a lock that survives a panicked holder ([`lock`]).

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
