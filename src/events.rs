//! Events: the things an owner wants to be told about (a battery lost or
//! back, a state change, an interface down or up, an interface that is up
//! but dead or works again, an inverter silent or
//! back, a battery over its own limit, an inverter ignoring its limit
//! (overshoot), an inverter asking to shut the battery down, a setpoint set,
//! expired or cleared, a configuration reloaded or rejected, a flight
//! recording written or not), kept in a ring of the last
//! [`KEEP`] for the status page and published on `BASE/event` by the MQTT
//! thread.
//!
//! Every part of the gateway reports through [`Events::emit`]; it never
//! blocks (one short lock, and a wake-up for the MQTT thread that is dropped
//! when one is already pending). Events are rare, so each may allocate.
//! The JSON of one event: `{"timestamp", "kind", "battery", "inverter",
//! "message"}` with `battery` / `inverter` the 1-based number or null
//! (docs/energy-and-events.md).

use crate::sync::{Bell, lock};
use crossbeam_channel::Receiver;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// How many events the ring keeps.
pub const KEEP: usize = 100;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    BatteryLost,
    BatteryBack,
    StateChanged,
    InterfaceDown,
    InterfaceUp,
    SetpointSet,
    SetpointExpired,
    SetpointCleared,
    ConfigReloaded,
    ConfigRejected,
    InverterSilent,
    InverterBack,
    Overcurrent,
    OvercurrentCleared,
    Overshoot,
    OvershootCleared,
    InverterShutdownRequest,
    RecordingWritten,
    RecordingFailed,
    /// The interlock refused a frame set and sent the safe state instead.
    Interlock,
    InterfaceRecovered,
    InterfaceRecoveryFailed,
}

impl Kind {
    /// Every kind, for Home Assistant's `event_types`.
    pub const ALL: &[Kind] = &[
        Kind::BatteryLost,
        Kind::BatteryBack,
        Kind::StateChanged,
        Kind::InterfaceDown,
        Kind::InterfaceUp,
        Kind::SetpointSet,
        Kind::SetpointExpired,
        Kind::SetpointCleared,
        Kind::ConfigReloaded,
        Kind::ConfigRejected,
        Kind::InverterSilent,
        Kind::InverterBack,
        Kind::Overcurrent,
        Kind::OvercurrentCleared,
        Kind::Overshoot,
        Kind::OvershootCleared,
        Kind::InverterShutdownRequest,
        Kind::RecordingWritten,
        Kind::RecordingFailed,
        Kind::Interlock,
        Kind::InterfaceRecovered,
        Kind::InterfaceRecoveryFailed,
    ];

    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BatteryLost => "battery_lost",
            Kind::BatteryBack => "battery_back",
            Kind::StateChanged => "state_changed",
            Kind::InterfaceDown => "interface_down",
            Kind::InterfaceUp => "interface_up",
            Kind::SetpointSet => "setpoint_set",
            Kind::SetpointExpired => "setpoint_expired",
            Kind::SetpointCleared => "setpoint_cleared",
            Kind::ConfigReloaded => "config_reloaded",
            Kind::ConfigRejected => "config_rejected",
            Kind::InverterSilent => "inverter_silent",
            Kind::InverterBack => "inverter_back",
            Kind::Overcurrent => "overcurrent",
            Kind::OvercurrentCleared => "overcurrent_cleared",
            Kind::Overshoot => "overshoot",
            Kind::OvershootCleared => "overshoot_cleared",
            Kind::InverterShutdownRequest => "inverter_shutdown_request",
            Kind::RecordingWritten => "recording_written",
            Kind::RecordingFailed => "recording_failed",
            Kind::Interlock => "interlock",
            Kind::InterfaceRecovered => "interface_recovered",
            Kind::InterfaceRecoveryFailed => "interface_recovery_failed",
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    System,
    /// 0-based, config order.
    Battery(usize),
    /// 0-based, config order.
    Inverter(usize),
}

/// One event as published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Position in the stream, from 1; not published.
    #[serde(skip)]
    pub seq: u64,
    /// Unix seconds.
    pub timestamp: f64,
    pub kind: Kind,
    /// 1-based, or null.
    pub battery: Option<usize>,
    /// 1-based, or null.
    pub inverter: Option<usize>,
    pub message: String,
}

#[derive(Debug, Default)]
struct Ring {
    last_seq: u64,
    events: VecDeque<Event>,
}

/// The ring and the MQTT thread's wake-up.
#[derive(Debug)]
pub struct Events {
    ring: Mutex<Ring>,
    /// The last event published on MQTT (its seq): a new MQTT run (after a
    /// reload) goes on from here instead of sending the recent ones again.
    published: AtomicU64,
    bell: Bell,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            ring: Mutex::default(),
            published: AtomicU64::new(0),
            bell: Bell::default(),
        }
    }
}

impl Events {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panicked writer leaves a usable ring: events are informational.
        lock(&self.ring)
    }

    /// The seq of the last event published on MQTT (0: none yet).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events up to `seq` have been published (or skipped as too old).
    pub fn mark_published(&self, seq: u64) {
        self.published.fetch_max(seq, Ordering::Relaxed);
    }

    /// Records an event now.
    pub fn emit(&self, kind: Kind, subject: Subject, message: impl Into<String>) {
        self.emit_at(kind, subject, message.into(), SystemTime::now());
    }

    /// Records an event that happened at `when`.
    pub fn emit_at(&self, kind: Kind, subject: Subject, message: String, when: SystemTime) {
        let (battery, inverter) = match subject {
            Subject::System => (None, None),
            Subject::Battery(i) => (Some(i + 1), None),
            Subject::Inverter(j) => (None, Some(j + 1)),
        };
        {
            let mut ring = self.ring();
            ring.last_seq += 1;
            let event = Event {
                seq: ring.last_seq,
                timestamp: crate::clock::unix(when),
                kind,
                battery,
                inverter,
                message,
            };
            if ring.events.len() == KEEP {
                ring.events.pop_front();
            }
            ring.events.push_back(event);
        }
        // Full means a wake-up is already pending: nothing is lost.
        self.bell.ring();
    }

    /// The kept events newer than `seq`, oldest first.
    pub fn after(&self, seq: u64) -> Vec<Event> {
        self.ring().events.iter().filter(|e| e.seq > seq).cloned().collect()
    }

    /// The sequence number of the newest event (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.ring().last_seq
    }

    /// Becomes ready when events were emitted since the last receive.
    pub fn bell(&self) -> &Receiver<()> {
        self.bell.receiver()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn keeps_the_last_hundred_in_order() {
        let e = Events::default();
        for n in 0..150 {
            e.emit(Kind::BatteryLost, Subject::Battery(n % 3), format!("#{n}"));
        }
        let all = e.after(0);
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].message, "#50");
        assert_eq!(all[99].message, "#149");
        assert_eq!(all[99].seq, 150);
        assert_eq!(e.after(148).len(), 2);
    }

    #[test]
    fn json_names_the_subject_or_null() {
        let e = Events::default();
        let when = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        e.emit_at(Kind::InterfaceDown, Subject::Inverter(1), "can9 down".into(), when);
        e.emit_at(Kind::ConfigReloaded, Subject::System, "ok".into(), when);
        let json: Vec<String> = e.after(0).iter().map(|x| serde_json::to_string(x).unwrap()).collect();
        assert_eq!(
            json[0],
            r#"{"timestamp":1700000000.25,"kind":"interface_down","battery":null,"inverter":2,"message":"can9 down"}"#
        );
        assert_eq!(
            json[1],
            r#"{"timestamp":1700000000.25,"kind":"config_reloaded","battery":null,"inverter":null,"message":"ok"}"#
        );
    }

    #[test]
    fn the_bell_rings_once_for_many() {
        let e = Events::default();
        assert!(e.bell().try_recv().is_err());
        e.emit(Kind::StateChanged, Subject::System, "a");
        e.emit(Kind::StateChanged, Subject::System, "b");
        assert!(e.bell().try_recv().is_ok());
        assert!(e.bell().try_recv().is_err());
    }

    #[test]
    fn the_published_mark_only_moves_forward() {
        let e = Events::default();
        assert_eq!(e.published(), 0);
        e.mark_published(3);
        // An older run's late mark does not make a newer one send again.
        e.mark_published(2);
        assert_eq!(e.published(), 3);
    }
}
