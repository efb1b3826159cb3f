//! Heartbeats of the worker threads: the daemon pings the systemd watchdog
//! only while every one of them has beaten since the previous check.

use crate::sync::lock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often every worker shows a heartbeat while idle when no watchdog
/// checks the heartbeats (with one, `Supervision::heartbeat_every` sets it
/// from the watchdog's period). Otherwise each thread sleeps until an event
/// or its next real deadline (docs/waking.md).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Which thread a heartbeat comes from: CAN threads by their slot id on the
/// status board (stable across reloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Worker {
    Input(usize),
    Output(usize),
    Combiner,
}

/// A registry of heartbeats, one per worker thread that must not hang.
///
/// The main loop calls [`Liveness::all_alive_since_last_check`] every
/// [`crate::systemd::watchdog_interval`] and pings the watchdog only when it returns `Ok`.
#[derive(Debug, Default)]
pub struct Liveness {
    entries: Mutex<Vec<Entry>>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    counter: Arc<AtomicU64>,
    /// Counter value seen at the previous check.
    seen: u64,
}

/// One thread's heartbeat. Cloning shares the counter.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    counter: Arc<AtomicU64>,
}

impl Heartbeat {
    /// Records that the owning thread is alive. One relaxed atomic add: cheap
    /// enough for every loop iteration. The counter wraps after 2^64 beats,
    /// which does not happen.
    pub fn beat(&self) {
        self.counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Liveness {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a heartbeat under `name` (used in the error naming a hung thread).
    /// A heartbeat that has not beaten by the next check counts as hung.
    pub fn register(&self, name: &str) -> Heartbeat {
        let counter = Arc::new(AtomicU64::new(0));
        let entry = Entry {
            name: name.to_string(),
            counter: Arc::clone(&counter),
            seen: 0,
        };
        // A poisoned lock only means another thread panicked while
        // registering; the list itself is still sound.
        lock(&self.entries).push(entry);
        Heartbeat { counter }
    }

    /// Removes `heartbeat` (its thread has been stopped on purpose, e.g. a
    /// CAN thread whose interface a reload removed or changed).
    pub fn forget(&self, heartbeat: &Heartbeat) {
        let mut entries = lock(&self.entries);
        entries.retain(|e| !Arc::ptr_eq(&e.counter, &heartbeat.counter));
    }

    /// `Ok` when every registered heartbeat has beaten since the previous
    /// call (or since it was registered), else the names of those that did
    /// not, in registration order. With no heartbeats registered it is `Ok`.
    pub fn all_alive_since_last_check(&mut self) -> Result<(), Vec<String>> {
        let entries = self.entries.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut silent = Vec::new();
        for entry in entries.iter_mut() {
            let now = entry.counter.load(Ordering::Relaxed);
            if now == entry.seen {
                silent.push(entry.name.clone());
            }
            entry.seen = now;
        }
        if silent.is_empty() { Ok(()) } else { Err(silent) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_reports_only_silent_heartbeats() {
        let mut live = Liveness::new();
        let can0 = live.register("can0");
        let combiner = live.register("combiner");
        // Nothing has beaten since registration.
        assert_eq!(
            live.all_alive_since_last_check(),
            Err(vec!["can0".to_string(), "combiner".to_string()])
        );
        can0.beat();
        combiner.beat();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        // Only can0 beats: the combiner is named, can0 is not.
        can0.beat();
        assert_eq!(live.all_alive_since_last_check(), Err(vec!["combiner".to_string()]));
        // A check resets the window: beating once again is enough.
        can0.beat();
        combiner.beat();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
    }

    #[test]
    fn a_forgotten_heartbeat_no_longer_counts() {
        let mut live = Liveness::new();
        let a = live.register("a");
        let b = live.register("b");
        a.beat();
        b.beat();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        live.forget(&b);
        a.beat();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        assert_eq!(live.all_alive_since_last_check(), Err(vec!["a".to_string()]));
    }

    #[test]
    fn liveness_without_heartbeats_is_ok() {
        let mut live = Liveness::new();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
    }

    #[test]
    fn many_beats_count_as_one_alive_window() {
        let mut live = Liveness::new();
        let hb = live.register("x");
        for _ in 0..1000 {
            hb.beat();
        }
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        assert_eq!(live.all_alive_since_last_check(), Err(vec!["x".to_string()]));
    }

    #[test]
    fn clones_share_the_heartbeat_and_work_across_threads() {
        let mut live = Liveness::new();
        let hb = live.register("worker");
        let clone = hb.clone();
        std::thread::spawn(move || clone.beat()).join().unwrap();
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
        drop(hb);
        // A thread that dropped its heartbeat (exited) counts as hung.
        assert_eq!(live.all_alive_since_last_check(), Err(vec!["worker".to_string()]));
    }

    #[test]
    fn register_works_through_a_shared_reference() {
        let mut live = Liveness::new();
        let beats: Vec<Heartbeat> = std::thread::scope(|s| {
            let live = &live;
            let handles: Vec<_> = (0..4)
                .map(|i| s.spawn(move || live.register(&format!("t{i}"))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for b in &beats {
            b.beat();
        }
        assert_eq!(live.all_alive_since_last_check(), Ok(()));
    }
}
