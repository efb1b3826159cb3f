//! The combiner thread's state and what it does with each thing that
//! arrives (a telegram, a command, the passing of time, a reload): the
//! combiner itself, the inputs' energy counters, the status board's system
//! cell and the outputs' mailboxes. The loop that waits for those things is
//! in the parent module; the events they raise are the [`Watch`]'s.

use super::Reload;
use super::watch::Watch;
use crate::combine::{Combined, Combiner, InverterShare, Shaped};
use crate::config::Config;
use crate::energy;
use crate::events::{Events, Subject};
use crate::input::Delivery;
use crate::output::Mailbox;
use crate::recorder::Recorder;
use crate::setpoint::{Scope, SetpointCommand};
use crate::status::{self, InputStatus, Slot, StatusBoard};
use std::sync::Arc;
use std::time::Instant;

/// The combiner thread's state, which a reload carries over.
pub(super) struct Core<'a> {
    pub(super) config: Arc<Config>,
    /// Holds the inverters' setpoints too (by position in `config.outputs`).
    pub(super) combiner: Combiner,
    /// Each input's slot, in configuration order: telegrams are tagged with
    /// its id, and its energy counters are kept in it.
    inputs: Vec<Arc<Slot<InputStatus>>>,
    watch: Watch<'a>,
}

/// The inverters' shares, in `[[bmses-out]]` order.
fn shares(config: &Config) -> Vec<InverterShare> {
    config.outputs.iter().map(|o| o.share).collect()
}

fn capacities(config: &Config) -> Vec<f64> {
    config.inputs.iter().map(|i| i.capacity_ah).collect()
}

fn slots(board: &StatusBoard) -> Vec<Arc<Slot<InputStatus>>> {
    (0..board.input_count()).map(|i| board.input_slot(i)).collect()
}

impl<'a> Core<'a> {
    /// The combiner for `config`: its events go to `events`, and changes
    /// that need a record trigger `recorder`.
    pub(super) fn new(
        config: Arc<Config>,
        board: &StatusBoard,
        events: &'a Events,
        recorder: &'a Recorder,
        now: Instant,
    ) -> Core<'a> {
        Core {
            combiner: Combiner::new(config.battery, &capacities(&config), now).with_inverters(&shares(&config)),
            inputs: slots(board),
            watch: Watch::new(config.inputs.len(), events, recorder),
            config,
        }
    }

    pub(super) fn on_delivery(&mut self, d: Delivery, board: &StatusBoard) -> Option<Combined> {
        // A telegram from a battery that a reload has just removed is dropped.
        let index = self.inputs.iter().position(|slot| slot.id == d.input)?;
        let gap = self.config.battery.stale_timeout;
        self.inputs[index].update(|s| s.energy.on_telegram(&d.telegram, d.at, gap));
        let made = self.combiner.on_telegram(index, d.telegram, d.at);
        self.watch.input(&self.config, &self.combiner, board, index, d.at);
        made
    }

    /// A setpoint command: logged, applied and raised as an event.
    pub(super) fn command(&mut self, c: SetpointCommand, now: Instant) -> Option<Combined> {
        log_command(&c);
        let made = self.combiner.apply(c, now);
        self.watch.commanded(&c);
        made
    }

    /// Time has passed: stale inputs are logged, setpoints expire (each
    /// raised as an event), and the combiner may make a state.
    pub(super) fn tick(&mut self, board: &StatusBoard, now: Instant) -> Option<Combined> {
        self.watch.log(&self.config, &self.combiner, board, now);
        let made = self.combiner.on_tick(now);
        self.watch.expired(self.combiner.expired());
        made
    }

    /// Takes the reload's configuration; the state to send at once, if any.
    pub(super) fn reconfigure(&mut self, reload: Reload) -> Option<Combined> {
        let now = Instant::now();
        let Reload {
            config,
            mapping,
            board,
            done,
            ..
        } = reload;
        board.settle_positions();
        let inputs = slots(&board);
        // The system's energy total stays what it was: what a removed
        // battery had counted moves into the base (docs/reload.md).
        let total = status::energy_of(board.system(|s| s.energy_base), &self.inputs);
        self.inputs = inputs;
        let base = energy::base_for(total, &self.meters());
        board.system(|s| s.energy_base = base);
        self.watch.remap(&mapping.inputs);
        let dropped = (self.combiner).reconfigure_inverters(&shares(&config), &mapping.outputs, now);
        let made = (self.combiner).reconfigure(config.battery, &capacities(&config), &mapping.inputs, now);
        self.config = config;
        // The new inputs' freshness on the board, in their new places.
        self.watch.log(&self.config, &self.combiner, &board, now);
        board.system(|s| s.inputs_fresh.clone_from(&self.watch.published));
        let _ = done.try_send(dropped);
        made
    }

    /// Every input's energy meter, in configuration order.
    fn meters(&self) -> Vec<energy::Meter> {
        self.inputs.iter().map(|slot| slot.update(|s| s.energy)).collect()
    }

    pub(super) fn distribute<'m>(
        &mut self,
        c: &Combined,
        board: &StatusBoard,
        mailboxes: impl Iterator<Item = &'m Mailbox>,
        now: Instant,
    ) {
        self.watch.state(c, self.config.inputs.len());
        self.watch.over_current(&self.config, &self.combiner);
        let combiner = &self.combiner;
        // The system's energy counters, for the profiles that send them.
        let energy = Some(status::energy_of(board.system(|s| s.energy_base), &self.inputs).into());
        for (mailbox, shaped) in mailboxes.zip(combiner.shaped(now)) {
            mailbox.put(Shaped { energy, ..shaped });
        }
        let changed = board.system(|s| {
            s.combined = Some(*c);
            s.packs.clear();
            s.packs.extend(combiner.bank().packs());
            let changed = s.setpoints != *combiner.setpoints()
                || !s.inverter_setpoints.iter().eq(combiner.inverter_setpoints())
                || s.charge_stop_soc != combiner.charge_stop_set();
            s.setpoints = *combiner.setpoints();
            s.charge_stop_soc = combiner.charge_stop_set();
            s.inverter_setpoints.clear();
            s.inverter_setpoints.extend(combiner.inverter_setpoints());
            changed
        });
        if changed {
            board.setpoints_changed();
        }
    }
}

fn log_command(command: &SetpointCommand) {
    log::info!(
        "setpoint {} {} {}",
        whose(command.scope).1,
        command.field(),
        command
            .setpoint
            .map_or("cleared".to_string(), |s| format!("= {} {}", s.value, command.unit()))
    );
}

/// A setpoint's owner, as an event's subject and in words.
pub(super) fn whose(scope: Scope) -> (Subject, String) {
    match scope {
        Scope::System | Scope::ChargeStop => (Subject::System, "system".to_string()),
        Scope::Inverter(j) => (Subject::Inverter(j), format!("inverter {}", j + 1)),
    }
}
