//! The live status board: what each thread last did, for MQTT, the demo's
//! table and the logs.
//!
//! Every thread owns its own cell and updates it under a short lock, at most
//! once per telegram or transmission; readers take a [`Snapshot`] copy. No
//! thread ever waits on a reader for longer than one copy.
//!
//! A reload makes a new board for the new configuration that shares the
//! cells of the interfaces it keeps ([`StatusBoard::reconfigure`]): a kept
//! interface's thread goes on writing the same cell, and its counters go on.

use crate::bank::PackView;
pub use crate::can::LinkState;
pub use crate::can::dead_watch::{LinkRecovery, RecoveryBoard, RecoveryState};
use crate::combine::{Battery, Combined, SystemState};
use crate::config::Config;
use crate::energy::{Counter, Meter};
use crate::history::History;
use crate::profile::{SmaReadings, SmaState, Talk};
use crate::reload::Mapping;
use crate::setpoint::LimitSetpoints;
use crate::sync::{Bell, lock};
use crate::telegram::Telegram;
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

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
    /// Dead-interface recovery (spec 17).
    pub recovery: LinkRecovery,
    /// Its energy counters (kept by the combiner, which sees every telegram).
    pub energy: Meter,
    /// An RS485 input's bad answers by kind (also counted in `invalid`);
    /// all 0 for a CAN input.
    pub serial_faults: crate::serial::SerialFaults,
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
    /// Dead-interface recovery (spec 17).
    pub recovery: LinkRecovery,
    /// Whether the inverter talks (INVERTER-TIMEOUT); `None` when it is
    /// configured never to talk.
    pub talk: Option<Talk>,
    /// The Sunny Island's own readings of the battery (its 0x305), and its
    /// 0x306 (sma profile).
    pub inverter_readings: Option<SmaReadings>,
    pub inverter_state: Option<SmaState>,
    /// "Shut down battery" requests (Luxpower 0x300) received and not obeyed.
    pub shutdown_requests: u64,
    /// Frame sets the interlock refused (spec 14): 0 in normal operation.
    pub interlock_trips: u64,
}

/// The combiner's part.
#[derive(Debug, Clone, Default)]
pub struct SystemStatus {
    pub combined: Option<Combined>,
    /// System-wide setpoints.
    pub setpoints: LimitSetpoints,
    /// Per-inverter setpoints, in output order.
    pub inverter_setpoints: Vec<LimitSetpoints>,
    /// The charge-stop SOC (%) set over MQTT (spec 15).
    pub charge_stop_soc: Option<crate::setpoint::Setpoint>,
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

impl RecoveryBoard for Slot<InputStatus> {
    fn update_recovery(&self, f: &mut dyn FnMut(&mut LinkRecovery)) {
        self.update(|s| f(&mut s.recovery));
    }
}

impl RecoveryBoard for Slot<OutputStatus> {
    fn update_recovery(&self, f: &mut dyn FnMut(&mut LinkRecovery)) {
        self.update(|s| f(&mut s.recovery));
    }
}

/// One CAN thread's cell: its status, and who it is. The same slot stays
/// with its CAN-IF across reloads.
#[derive(Debug, Default)]
pub struct Slot<S> {
    /// Stable while the CAN-IF stays configured: telegrams and heartbeats
    /// are tagged with it, never with a position that a reload may change.
    pub id: usize,
    /// Position in the running configuration (0-based), for log labels.
    position: AtomicUsize,
    status: Mutex<S>,
}

impl<S> Slot<S> {
    fn new(id: usize, position: usize) -> Slot<S>
    where
        S: Default,
    {
        Slot {
            id,
            position: AtomicUsize::new(position),
            status: Mutex::default(),
        }
    }

    /// Runs `f` on the status. A poisoned lock (a panicked writer) is taken
    /// over: status is informational and must never stop the gateway.
    pub fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut lock(&self.status))
    }

    /// The 0-based position in the running configuration.
    pub fn position(&self) -> usize {
        self.position.load(Ordering::Relaxed)
    }
}

/// Shared by all threads. Status only: the events and the flight recorder
/// are handed to the threads that use them where the gateway is assembled,
/// never reached through the board.
#[derive(Debug, Default)]
pub struct StatusBoard {
    system: Arc<Mutex<SystemStatus>>,
    inputs: Vec<Arc<Slot<InputStatus>>>,
    outputs: Vec<Arc<Slot<OutputStatus>>>,
    /// The id the next new slot gets.
    next_id: usize,
    /// Shared with the boards a reload makes: the MQTT thread's wake-up.
    setpoints: Arc<Bell>,
    /// The last 24 h for the status page (filled by the status server's
    /// thread, saved by the state saver), shared with the boards a reload
    /// makes.
    history: Arc<Mutex<History>>,
}

/// The running configuration and its board, for the readers that go on
/// across a reload (the status server and the state saver): a reload puts
/// the new pair in place, and each reader takes the latest at each use.
pub struct Latest {
    running: Mutex<(Arc<Config>, Arc<StatusBoard>)>,
}

impl Latest {
    pub fn new(config: Arc<Config>, board: Arc<StatusBoard>) -> Latest {
        Latest {
            running: Mutex::new((config, board)),
        }
    }

    /// The configuration and board in effect now.
    pub fn get(&self) -> (Arc<Config>, Arc<StatusBoard>) {
        lock(&self.running).clone()
    }

    /// A reload is in effect: readers take these from now on.
    pub fn set(&self, config: Arc<Config>, board: Arc<StatusBoard>) {
        *lock(&self.running) = (config, board);
    }
}

/// The system's energy counters: `base` plus the total of every input in
/// `inputs`, read cell by cell (no copy of the board: the combiner asks with
/// every state it distributes).
pub fn energy_of(base: Counter, inputs: &[Arc<Slot<InputStatus>>]) -> Counter {
    (inputs.iter()).fold(base.sane(), |total, slot| total.plus(slot.update(|s| s.energy.total)))
}

/// A kept slot, or a new one with the next id.
fn take_slot<S: Default>(next_id: &mut usize, kept: Option<&Arc<Slot<S>>>, position: usize) -> Arc<Slot<S>> {
    match kept {
        Some(kept) => kept.clone(),
        None => {
            *next_id += 1;
            Arc::new(Slot::new(*next_id - 1, position))
        }
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
    /// Slots 0..inputs for the inputs, then the outputs' (ids = positions
    /// for inputs; outputs follow).
    pub fn new(inputs: usize, outputs: usize) -> StatusBoard {
        StatusBoard {
            system: Arc::new(Mutex::new(SystemStatus {
                inverter_setpoints: vec![LimitSetpoints::default(); outputs],
                inputs_fresh: vec![false; inputs],
                ..SystemStatus::default()
            })),
            inputs: (0..inputs).map(|i| Arc::new(Slot::new(i, i))).collect(),
            outputs: (0..outputs).map(|j| Arc::new(Slot::new(inputs + j, j))).collect(),
            next_id: inputs + outputs,
            setpoints: Arc::default(),
            history: Arc::new(Mutex::new(History::new(inputs, outputs))),
        }
    }

    /// The board for a reloaded configuration: `mapping` says which slots
    /// (cells and counters) it keeps, in their new positions; new
    /// interfaces get new slots. The system cell is shared.
    pub fn reconfigure(&self, mapping: &Mapping) -> StatusBoard {
        let mut next_id = self.next_id;
        let inputs = (mapping.inputs.iter().enumerate())
            .map(|(i, from)| take_slot(&mut next_id, from.and_then(|o| self.inputs.get(o)), i))
            .collect();
        let outputs = (mapping.outputs.iter().enumerate())
            .map(|(j, from)| take_slot(&mut next_id, from.and_then(|o| self.outputs.get(o)), j))
            .collect();
        StatusBoard {
            system: self.system.clone(),
            inputs,
            outputs,
            next_id,
            setpoints: self.setpoints.clone(),
            history: self.history.clone(),
        }
    }

    /// Input `i`'s slot, for its thread.
    pub fn input_slot(&self, i: usize) -> Arc<Slot<InputStatus>> {
        self.inputs[i].clone()
    }

    /// Output `j`'s slot, for its thread.
    pub fn output_slot(&self, j: usize) -> Arc<Slot<OutputStatus>> {
        self.outputs[j].clone()
    }

    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    pub fn output_count(&self) -> usize {
        self.outputs.len()
    }

    /// Called by the combiner when the system's setpoints on the board changed.
    pub fn setpoints_changed(&self) {
        self.setpoints.ring();
    }

    /// Receives once after one or more [`StatusBoard::setpoints_changed`], so
    /// that the MQTT thread can wait for changes instead of polling.
    pub fn setpoint_changes(&self) -> &Receiver<()> {
        self.setpoints.receiver()
    }

    /// Runs `f` on input `i`'s cell. A poisoned lock (a panicked writer) is
    /// taken over: status is informational and must never stop the gateway.
    pub fn input<R>(&self, i: usize, f: impl FnOnce(&mut InputStatus) -> R) -> R {
        self.inputs[i].update(f)
    }

    pub fn output<R>(&self, i: usize, f: impl FnOnce(&mut OutputStatus) -> R) -> R {
        self.outputs[i].update(f)
    }

    pub fn system<R>(&self, f: impl FnOnce(&mut SystemStatus) -> R) -> R {
        f(&mut lock(&self.system))
    }

    /// Runs `f` on the history (a poisoned lock is taken over, as above).
    pub fn history<R>(&self, f: impl FnOnce(&mut History) -> R) -> R {
        f(&mut lock(&self.history))
    }

    /// Sets each slot's position to the one it has on this board (after a
    /// reload, when this board becomes the running one).
    pub fn settle_positions(&self) {
        for (i, slot) in self.inputs.iter().enumerate() {
            slot.position.store(i, Ordering::Relaxed);
        }
        for (j, slot) in self.outputs.iter().enumerate() {
            slot.position.store(j, Ordering::Relaxed);
        }
    }

    /// The system's energy counters, read cell by cell (no whole snapshot:
    /// the combiner asks for them with every state it distributes).
    pub fn energy(&self) -> Counter {
        energy_of(self.system(|s| s.energy_base), &self.inputs)
    }

    /// The line for systemd's STATUS=.
    pub fn summary(&self) -> String {
        self.system(|s| s.summary())
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            system: self.system(|s| s.clone()),
            inputs: self.inputs.iter().map(|s| s.update(|s| s.clone())).collect(),
            outputs: self.outputs.iter().map(|s| s.update(|s| s.clone())).collect(),
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
    fn a_reconfigured_board_keeps_the_cells_of_kept_interfaces() {
        let board = StatusBoard::new(2, 1);
        board.input(1, |s| s.frames = 7);
        board.output(0, |s| s.frames_sent = 3);
        let mapping = Mapping {
            inputs: vec![None, Some(1)],
            outputs: vec![Some(0), None],
        };
        let new = board.reconfigure(&mapping);
        new.settle_positions();
        assert_eq!(new.input(0, |s| s.frames), 0);
        assert_eq!(new.input(1, |s| s.frames), 7);
        assert_eq!(new.output(0, |s| s.frames_sent), 3);
        // The same cell: a kept thread's writes show on the new board.
        board.input(1, |s| s.frames += 1);
        assert_eq!(new.input(1, |s| s.frames), 8);
        // Ids: kept ones keep theirs (1 and 2), new ones get unused ones.
        let ids = |b: &StatusBoard| -> Vec<usize> {
            let ins = b.inputs.iter().map(|s| s.id);
            ins.chain(b.outputs.iter().map(|s| s.id)).collect()
        };
        assert_eq!(ids(&board), [0, 1, 2]);
        assert_eq!(ids(&new), [3, 1, 2, 4]);
        assert_eq!((new.input_slot(1).position(), new.output_slot(1).position()), (1, 1));
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
