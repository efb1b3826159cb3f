//! The live status board: what each thread last did, for MQTT, the demo's
//! table and the logs.
//!
//! Every thread owns its own cell and updates it under a short lock, at most
//! once per telegram or transmission; readers take a [`Snapshot`] copy. No
//! thread ever waits on a reader for longer than one copy.

use crate::bank::PackView;
use crate::combine::{Battery, Combined, SystemState};
use crate::energy::{Counter, Meter};
use crate::events::Events;
use crate::profile::{SmaReadings, SmaState, Talk};
use crate::recorder::Recorder;
use crate::setpoint::LimitSetpoints;
use crate::telegram::Telegram;
use crossbeam_channel::{Receiver, Sender, bounded};
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
    /// Its energy counters (kept by the combiner, which sees every telegram).
    pub energy: Meter,
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
    /// Whether the inverter talks (INVERTER-TIMEOUT); `None` when it is
    /// configured never to talk.
    pub talk: Option<Talk>,
    /// The Sunny Island's own readings of the battery (its 0x305), and its
    /// 0x306 (sma profile).
    pub inverter_readings: Option<SmaReadings>,
    pub inverter_state: Option<SmaState>,
    /// "Shut down battery" requests (Luxpower 0x300) received and not obeyed.
    pub shutdown_requests: u64,
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
    /// Whether each input is fresh, in input order, as the combiner decided
    /// it at its latest look at the clock (at most one tick old).
    pub inputs_fresh: Vec<bool>,
    /// What the system's energy counters hold beyond its batteries' (from
    /// batteries no longer configured).
    pub energy_base: Counter,
}

impl SystemStatus {
    /// One line for `systemctl status` (systemd's STATUS=), e.g.
    /// "3/3 batteries, ok" or "1/3 batteries, degraded".
    pub fn summary(&self) -> String {
        let fresh = self.inputs_fresh.iter().filter(|&&f| f).count();
        let state = self.combined.map_or("starting", |c| c.state.as_str());
        format!("{fresh}/{} batteries, {state}", self.inputs_fresh.len())
    }
}

impl Snapshot {
    /// The system's energy counters.
    pub fn energy(&self) -> Counter {
        crate::energy::system_total(self.system.energy_base, self.inputs.iter().map(|i| &i.energy))
    }
}

/// Shared by all threads.
#[derive(Debug, Default)]
pub struct StatusBoard {
    pub system: Mutex<SystemStatus>,
    pub inputs: Vec<Mutex<InputStatus>>,
    pub outputs: Vec<Mutex<OutputStatus>>,
    /// The last events, for MQTT and the status page.
    pub events: Events,
    /// The flight recorder (off unless [`StatusBoard::with_recorder`]).
    pub recorder: Recorder,
    setpoints: Wake,
}

/// A wake-up for one waiting reader: bounded(1), so any number of
/// notifications before the reader looks make one wake-up.
#[derive(Debug)]
struct Wake {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Default for Wake {
    fn default() -> Wake {
        let (tx, rx) = bounded(1);
        Wake { tx, rx }
    }
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
                inputs_fresh: vec![false; inputs],
                ..SystemStatus::default()
            }),
            inputs: (0..inputs).map(|_| Mutex::default()).collect(),
            outputs: (0..outputs).map(|_| Mutex::default()).collect(),
            events: Events::default(),
            recorder: Recorder::default(),
            setpoints: Wake::default(),
        }
    }

    /// The board with `recorder` as the flight recorder.
    pub fn with_recorder(self, recorder: Recorder) -> StatusBoard {
        StatusBoard { recorder, ..self }
    }

    /// Called by the combiner when the system's setpoints on the board changed.
    pub fn setpoints_changed(&self) {
        // Full: a wake-up is pending already, and it will read the new values.
        let _ = self.setpoints.tx.try_send(());
    }

    /// Receives once after one or more [`StatusBoard::setpoints_changed`], so
    /// that the MQTT thread can wait for changes instead of polling.
    pub fn setpoint_changes(&self) -> &Receiver<()> {
        &self.setpoints.rx
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

    /// The system's energy counters, read cell by cell (no whole snapshot:
    /// the combiner asks for them with every state it distributes).
    pub fn energy(&self) -> Counter {
        let base = self.system(|s| s.energy_base.sane());
        (0..self.inputs.len()).fold(base, |total, i| total.plus(self.input(i, |s| s.energy.total)))
    }

    /// The line for systemd's STATUS=.
    pub fn summary(&self) -> String {
        self.system(|s| s.summary())
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            system: self.system(|s| s.clone()),
            inputs: (0..self.inputs.len()).map(|i| self.input(i, |s| s.clone())).collect(),
            outputs: (0..self.outputs.len()).map(|i| self.output(i, |s| s.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::{Limit, LimitReason, PerKind};
    use crate::codec::{Flags, Requests};
    use crate::combine::{Battery, Combined};
    use std::time::Instant;

    const NO_CURRENT: Limit = Limit {
        value: 0.0,
        reason: LimitReason::Sum,
        battery: None,
    };

    fn combined(state: SystemState) -> Combined {
        Combined {
            state,
            battery: Battery {
                v_charge_cmd: 53.2,
                i_lim_charge: 0.0,
                i_lim_discharge: 0.0,
                v_discharge_min: None,
                soc: 50.0,
                soh: 100.0,
                v_avg: 52.0,
                i_total: 0.0,
                t_avg: 20.0,
                flags: Flags::default(),
                requests: Requests::NORMAL,
                cells: None,
                manufacturer: None,
                capacity_ah: 100.0,
            },
            inputs_online: 1,
            bank: Default::default(),
            made_at: Instant::now(),
            limits: PerKind {
                charge: NO_CURRENT,
                discharge: NO_CURRENT,
            },
            overshoot: PerKind::default(),
        }
    }

    #[test]
    fn the_systemd_status_line_counts_fresh_batteries_and_names_the_state() {
        let board = StatusBoard::new(3, 1);
        assert_eq!(board.summary(), "0/3 batteries, starting");
        board.system(|s| {
            s.inputs_fresh = vec![true, false, true];
            s.combined = Some(combined(SystemState::Degraded));
        });
        assert_eq!(board.summary(), "2/3 batteries, degraded");
        board.system(|s| {
            s.inputs_fresh = vec![true; 3];
            s.combined = Some(combined(SystemState::Ok));
        });
        assert_eq!(board.summary(), "3/3 batteries, ok");
    }

    #[test]
    fn the_boards_energy_is_the_base_plus_every_batterys_total() {
        use crate::energy::Meter;
        let board = StatusBoard::new(2, 1);
        let kwh = |c, d| Counter {
            charged_kwh: c,
            discharged_kwh: d,
        };
        board.system(|s| s.energy_base = kwh(1.0, 2.0));
        board.input(0, |s| s.energy = Meter::restored(kwh(0.5, 0.25), None));
        board.input(1, |s| s.energy = Meter::restored(kwh(3.0, 0.0), None));
        // By hand: 1 + 0.5 + 3 = 4.5 kWh charged, 2 + 0.25 + 0 = 2.25 discharged.
        assert_eq!(board.energy(), kwh(4.5, 2.25));
        assert_eq!(board.energy(), board.snapshot().energy());
    }
}
