//! The live status board: what each thread last did, for MQTT, the demo's
//! table and the logs.
//!
//! Every thread owns its own cell and updates it under a short lock, at most
//! once per telegram or transmission; readers take a [`Snapshot`] copy. No
//! thread ever waits on a reader for longer than one copy.

use crate::bank::PackView;
use crate::combine::{Battery, Combined, SystemState};
use crate::setpoint::LimitSetpoints;
use crate::telegram::Telegram;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// Whether a CAN interface is usable right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Not opened yet.
    #[default]
    Opening,
    Up,
    /// Failing; the reason as the OS gave it. The thread retries with back-off.
    Down(String),
}

/// One battery input, as its thread last saw it.
#[derive(Debug, Clone, Default)]
pub struct InputStatus {
    pub telegram: Option<Telegram>,
    /// When the last complete telegram arrived.
    pub last_telegram: Option<Instant>,
    pub last_telegram_wall: Option<SystemTime>,
    /// Frames received (any ID).
    pub frames: u64,
    /// Complete telegrams assembled.
    pub telegrams: u64,
    /// Frames refused: too short, extended or remote, out of range.
    pub invalid: u64,
    /// Telegrams dropped because the combiner's queue was full.
    pub dropped: u64,
    pub link: LinkState,
}

/// One inverter output, as its thread last saw it.
#[derive(Debug, Clone, Default)]
pub struct OutputStatus {
    /// The values last sent to this inverter.
    pub last_sent: Option<Battery>,
    pub last_state: Option<SystemState>,
    pub last_sent_at: Option<Instant>,
    /// Last 0x305 received from the inverter.
    pub last_request: Option<Instant>,
    pub last_request_wall: Option<SystemTime>,
    pub frames_sent: u64,
    /// Transmissions that failed (queue full, interface down).
    pub send_errors: u64,
    pub link: LinkState,
}

/// The combiner's part.
#[derive(Debug, Clone, Default)]
pub struct SystemStatus {
    pub combined: Option<Combined>,
    /// System-wide setpoints.
    pub setpoints: LimitSetpoints,
    /// Per-inverter setpoints, in output order.
    pub inverter_setpoints: Vec<LimitSetpoints>,
    /// Each battery's share and over-current flag, in input order.
    pub packs: Vec<PackView>,
    /// Telegrams dropped by the combiner's queue, over all inputs.
    pub dropped: u64,
}

/// Shared by all threads.
#[derive(Debug, Default)]
pub struct StatusBoard {
    pub system: Mutex<SystemStatus>,
    pub inputs: Vec<Mutex<InputStatus>>,
    pub outputs: Vec<Mutex<OutputStatus>>,
}

/// A consistent-enough copy of the whole board (each cell copied under its
/// own lock).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub system: SystemStatus,
    pub inputs: Vec<InputStatus>,
    pub outputs: Vec<OutputStatus>,
}

impl StatusBoard {
    pub fn new(inputs: usize, outputs: usize) -> StatusBoard {
        StatusBoard {
            system: Mutex::new(SystemStatus {
                inverter_setpoints: vec![LimitSetpoints::default(); outputs],
                ..SystemStatus::default()
            }),
            inputs: (0..inputs).map(|_| Mutex::default()).collect(),
            outputs: (0..outputs).map(|_| Mutex::default()).collect(),
        }
    }

    /// Runs `f` on input `i`'s cell. A poisoned lock (a panicked writer) is
    /// taken over: status is informational and must never stop the gateway.
    pub fn input<R>(&self, i: usize, f: impl FnOnce(&mut InputStatus) -> R) -> R {
        f(&mut self.inputs[i].lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn output<R>(&self, i: usize, f: impl FnOnce(&mut OutputStatus) -> R) -> R {
        f(&mut self.outputs[i].lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn system<R>(&self, f: impl FnOnce(&mut SystemStatus) -> R) -> R {
        f(&mut self.system.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            system: self.system(|s| s.clone()),
            inputs: (0..self.inputs.len()).map(|i| self.input(i, |s| s.clone())).collect(),
            outputs: (0..self.outputs.len()).map(|i| self.output(i, |s| s.clone())).collect(),
        }
    }
}
