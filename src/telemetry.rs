//! Telemetry JSON built from a status-board [`Snapshot`]: the combined state
//! on TOPIC, each battery's and each inverter's state, and the active
//! setpoints.
//!
//! Pure: the time is passed in as a [`Clock`]. Conventions, the same in every
//! payload:
//! - every timestamp is wall-clock Unix time in seconds (a float with
//!   millisecond resolution), as the original gateway's
//!   `timestamp_last_bms_update`; `timestamp` is when the payload was made,
//!   so a consumer can tell a late message from a current one;
//! - a value that is not known (yet) is `null`;
//! - values are rounded to what the protocol carries: 0.01 V for the pack
//!   voltage, 0.1 V for the voltage limits, 0.1 A, 0.1 degC, 0.1 %, 1 W,
//!   0.001 V for cell voltages.
//!
//! Before the combiner has made any state, TOPIC is still published, with
//! `"state": "starting"` and the battery values `null`.

use crate::bank::PackView;
pub use crate::clock::{Clock, round, unix};
use crate::combine::{Battery, Combined};
use crate::config::Config;
use crate::energy::Counter;
use crate::profile::Talk;
use crate::serial::SerialFaults;
use crate::setpoint::{LimitKind, LimitSetpoints, Setpoint};
use crate::status::{InputStatus, LinkRecovery, LinkState, OutputStatus, RecoveryState, Snapshot};
use crate::telegram::Telegram;
use serde::Serialize;
use std::time::{Instant, SystemTime};

/// The battery values every state payload carries, under the field names
/// of docs/mqtt.md (the same as `decode`'s).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Values {
    pub manufacturer: Option<String>,
    pub soc: Option<f64>,
    pub soh: Option<f64>,
    pub v_charge_cmd: Option<f64>,
    pub i_lim_charge: Option<f64>,
    pub i_lim_discharge: Option<f64>,
    pub v_discharge_min: Option<f64>,
    pub v_avg: Option<f64>,
    pub i_total: Option<f64>,
    pub t_avg: Option<f64>,
    /// W, + = charging.
    pub power_w: Option<f64>,
    pub error_flags_1: Option<u8>,
    pub error_flags_2: Option<u8>,
    pub warning_flags_1: Option<u8>,
    pub warning_flags_2: Option<u8>,
    pub n_modules: Option<u8>,
    pub charge_enable: Option<bool>,
    pub discharge_enable: Option<bool>,
    pub force_charge_request: Option<bool>,
    pub force_charge_request_2: Option<bool>,
    pub balancing_charge_request: Option<bool>,
    pub v_cell_min: Option<f64>,
    pub v_cell_max: Option<f64>,
    pub t_cell_min: Option<f64>,
    pub t_cell_max: Option<f64>,
    pub capacity_ah: Option<f64>,
}

impl Values {
    /// A combined battery or one inverter's share.
    pub fn of_battery(b: &Battery) -> Values {
        Values {
            manufacturer: b.manufacturer.map(|m| m.name()),
            soc: Some(round(b.soc, 1)),
            soh: Some(round(b.soh, 1)),
            v_charge_cmd: Some(round(b.v_charge_cmd, 1)),
            i_lim_charge: Some(round(b.i_lim_charge, 1)),
            i_lim_discharge: Some(round(b.i_lim_discharge, 1)),
            v_discharge_min: b.v_discharge_min.map(|v| round(v, 1)),
            v_avg: Some(round(b.v_avg, 2)),
            i_total: Some(round(b.i_total, 1)),
            t_avg: Some(round(b.t_avg, 1)),
            power_w: Some(round(b.power_w(), 0)),
            error_flags_1: Some(b.flags.error_flags_1),
            error_flags_2: Some(b.flags.error_flags_2),
            warning_flags_1: Some(b.flags.warning_flags_1),
            warning_flags_2: Some(b.flags.warning_flags_2),
            n_modules: Some(b.flags.n_modules),
            charge_enable: Some(b.requests.charge_enable),
            discharge_enable: Some(b.requests.discharge_enable),
            force_charge_request: Some(b.requests.force_charge_request),
            force_charge_request_2: Some(b.requests.force_charge_request_2),
            balancing_charge_request: Some(b.requests.balancing_charge_request),
            v_cell_min: b.cells.map(|c| round(c.v_cell_min, 3)),
            v_cell_max: b.cells.map(|c| round(c.v_cell_max, 3)),
            t_cell_min: b.cells.map(|c| round(c.t_cell_min, 1)),
            t_cell_max: b.cells.map(|c| round(c.t_cell_max, 1)),
            capacity_ah: Some(round(b.capacity_ah, 1)),
        }
    }

    /// One battery's own telegram, under the same names and roundings as
    /// the combined battery. A battery that sends no 0x35C is shown with the
    /// request flags combining assumes for it (normal operation).
    pub fn of_telegram(t: &Telegram, capacity_ah: f64) -> Values {
        Values::of_battery(&Battery {
            v_charge_cmd: t.limits.v_charge_cmd,
            i_lim_charge: t.limits.i_lim_charge,
            i_lim_discharge: t.limits.i_lim_discharge,
            v_discharge_min: t.limits.v_discharge_min,
            soc: t.soc.soc,
            soh: t.soc.soh,
            v_avg: t.measurements.v_avg,
            i_total: t.measurements.i_total,
            t_avg: t.measurements.t_avg,
            flags: t.flags,
            requests: t.requests_or_normal(),
            cells: t.cells,
            manufacturer: t.manufacturer,
            capacity_ah,
        })
    }
}

/// The energy stored, in kWh (0.01): SOC x capacity x the measured pack
/// voltage. The measured voltage (not a nominal one) because the gateway does
/// not know whether a pack has 15 cells (48 V nominal) or 16 (51.2 V), and an
/// LFP pack's voltage stays within a few percent of nominal over most of its
/// range; it moves by as much with the load, which the value then shows.
pub fn stored_energy_kwh(soc: f64, capacity_ah: f64, v_avg: f64) -> f64 {
    round(soc / 100.0 * capacity_ah * v_avg / 1000.0, 2)
}

/// The combined state on TOPIC: the original gateway's fields and more.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemPayload {
    #[serde(flatten)]
    pub values: Values,
    /// kWh, see [`stored_energy_kwh`].
    pub energy_stored_kwh: Option<f64>,
    /// "starting", "ok", "degraded" or "safe".
    pub state: &'static str,
    /// Inputs that delivered a telegram within STALE-TIMEOUT.
    pub inputs_online: usize,
    pub inputs_total: usize,
    /// The newest telegram of any battery.
    pub timestamp_last_bms_update: Option<f64>,
    /// The newest 0x305 from any inverter.
    pub timestamp_last_inverter_request: Option<f64>,
    /// Frames refused over all inputs (too short, out of range...).
    pub n_invalid_data_telegrams: u64,
    /// Telegrams dropped because the combiner was busy.
    pub n_dropped_telegrams: u64,
    /// Seconds since the combined state was made.
    pub state_age_s: Option<f64>,
    #[serde(flatten)]
    pub energy: EnergyKwh,
    /// Why each combined limit is what it is, and the battery that binds.
    #[serde(flatten)]
    pub limits: LimitsWhy,
    pub timestamp: f64,
}

/// Energy counters in telemetry: kWh, 0.001 kWh resolution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EnergyKwh {
    pub energy_charged_kwh: f64,
    pub energy_discharged_kwh: f64,
}

impl EnergyKwh {
    pub fn of(c: Counter) -> EnergyKwh {
        EnergyKwh {
            energy_charged_kwh: round(c.charged_kwh, 3),
            energy_discharged_kwh: round(c.discharged_kwh, 3),
        }
    }
}

/// Why the combined limits are what they are (`null` before the first state).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LimitsWhy {
    /// `cap`, `sum`, `share`, `overcurrent`, `setpoint`, `disabled`, `safe`, or a
    /// bank policy rule: `temperature`, `soc_target`, `soft_landing`, `pack_forbids`.
    pub limit_reason_charge: Option<&'static str>,
    pub limit_reason_discharge: Option<&'static str>,
    /// The binding battery, 1-based; null when no single battery binds.
    pub limit_battery_charge: Option<usize>,
    pub limit_battery_discharge: Option<usize>,
    /// The bank took more than the inverters were allowed, for OVERSHOOT-TIME.
    pub overshoot_charge: Option<bool>,
    pub overshoot_discharge: Option<bool>,
}

impl LimitsWhy {
    fn of(c: &Combined) -> LimitsWhy {
        LimitsWhy {
            limit_reason_charge: Some(c.limits.charge.reason.as_str()),
            limit_reason_discharge: Some(c.limits.discharge.reason.as_str()),
            limit_battery_charge: c.limits.charge.battery.map(|i| i + 1),
            limit_battery_discharge: c.limits.discharge.battery.map(|i| i + 1),
            overshoot_charge: Some(c.overshoot.charge),
            overshoot_discharge: Some(c.overshoot.discharge),
        }
    }
}

fn newest(times: impl Iterator<Item = Option<SystemTime>>) -> Option<f64> {
    times.flatten().max().map(unix)
}

/// The payload for TOPIC.
pub fn system_state(snapshot: &Snapshot, clock: &Clock) -> SystemPayload {
    let combined = snapshot.system.combined.as_ref();
    SystemPayload {
        values: combined.map_or_else(Values::default, |c| Values::of_battery(&c.battery)),
        energy_stored_kwh: combined.map(|c| {
            let b = &c.battery;
            stored_energy_kwh(b.soc, b.capacity_ah, b.v_avg)
        }),
        state: combined.map_or("starting", |c| c.state.as_str()),
        inputs_online: combined.map_or(0, |c| c.inputs_online),
        inputs_total: snapshot.inputs.len(),
        timestamp_last_bms_update: newest(snapshot.inputs.iter().map(|i| i.last_telegram_wall)),
        timestamp_last_inverter_request: newest(snapshot.outputs.iter().map(|o| o.last_request_wall)),
        n_invalid_data_telegrams: snapshot.inputs.iter().map(|i| i.invalid).sum(),
        n_dropped_telegrams: snapshot.inputs.iter().map(|i| i.dropped).sum(),
        state_age_s: combined.map(|c| clock.age(c.made_at)),
        energy: EnergyKwh::of(snapshot.energy()),
        limits: combined.map_or_else(LimitsWhy::default, LimitsWhy::of),
        timestamp: clock.timestamp(),
    }
}

/// "up", "opening", "down" or "recovering" (taken down and up by the
/// gateway, spec 17, and no traffic back yet), and the reason when down.
fn link(state: &LinkState, recovery: &LinkRecovery) -> (&'static str, Option<String>) {
    match (state, recovery.state) {
        (_, RecoveryState::Recovering) => ("recovering", None),
        (LinkState::Opening, RecoveryState::Normal) => ("opening", None),
        (LinkState::Up, RecoveryState::Normal) => ("up", None),
        (LinkState::Down(why), RecoveryState::Normal) => ("down", Some(why.clone())),
    }
}

/// An interface's dead-link recovery counters (spec 17), in both payloads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecoveryCounts {
    /// Times the gateway took the link down and up.
    pub link_bounces: u64,
    /// Dead spells ended by a bounce.
    pub link_recoveries: u64,
    /// Bounces that brought nothing back, or could not be done.
    pub link_recovery_failures: u64,
}

impl RecoveryCounts {
    fn of(r: &LinkRecovery) -> RecoveryCounts {
        RecoveryCounts {
            link_bounces: r.bounces,
            link_recoveries: r.recovered,
            link_recovery_failures: r.failed,
        }
    }
}

/// A battery's cells in BASE/battery/N/state (docs/mqtt.md, "Cells").
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CellValues {
    /// Every cell's voltage in the pack's order (V, 0.001), when the battery
    /// says them (an RS485 pack); null otherwise.
    pub cells_v: Option<Vec<f64>>,
    /// Every temperature sensor in the pack's order (degC, 0.1), with
    /// `cells_v`.
    pub cells_t: Option<Vec<f64>>,
    /// The lowest and highest cell voltage and the difference between them
    /// (V, 0.001): from the cells, or a CAN pack's 0x373 extremes.
    pub cell_v_min: Option<f64>,
    pub cell_v_max: Option<f64>,
    pub cell_v_delta: Option<f64>,
}

impl CellValues {
    pub fn of(t: &Telegram) -> CellValues {
        let readings = t.cell_readings.as_ref();
        // Both sources agree for an RS485 pack (its mapping makes the
        // extremes from the same cells); a CAN pack has only the extremes.
        let (min, max) = t
            .cells
            .map(|c| (round(c.v_cell_min, 3), round(c.v_cell_max, 3)))
            .unzip();
        CellValues {
            cells_v: readings.map(|r| r.cell_volts().map(|v| round(v, 3)).collect()),
            cells_t: readings.map(|r| r.temperatures().map(|t| round(t, 1)).collect()),
            cell_v_min: min,
            cell_v_max: max,
            // From the rounded values, so that min + delta = max as shown.
            cell_v_delta: min.zip(max).map(|(lo, hi)| round(hi - lo, 3)),
        }
    }
}

/// BASE/battery/N/state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatteryPayload {
    #[serde(flatten)]
    pub values: Values,
    #[serde(flatten)]
    pub cells: CellValues,
    /// kWh, see [`stored_energy_kwh`].
    pub energy_stored_kwh: Option<f64>,
    /// 1-based, config order.
    pub battery: usize,
    pub description: String,
    pub can_if: String,
    /// A complete telegram within STALE-TIMEOUT.
    pub online: bool,
    /// Seconds since the last complete telegram.
    pub age_s: Option<f64>,
    pub timestamp_last_bms_update: Option<f64>,
    pub link: &'static str,
    pub link_error: Option<String>,
    #[serde(flatten)]
    pub recovery: RecoveryCounts,
    pub frames: u64,
    pub telegrams: u64,
    pub invalid: u64,
    pub dropped: u64,
    /// An RS485 battery's bad answers by kind (`timeout`, `checksum`...:
    /// docs/mqtt.md); null for a CAN battery.
    pub serial_faults: Option<SerialFaults>,
    #[serde(flatten)]
    pub energy: EnergyKwh,
    /// Its share of the bank's current in the direction the bank flows
    /// (charge when idle), and per direction; null while it is stale.
    pub share: Option<f64>,
    pub share_charge: Option<f64>,
    pub share_discharge: Option<f64>,
    /// Above (1 + OVERCURRENT-MARGIN) x its own limit; null while stale.
    pub over_current: Option<bool>,
    pub timestamp: f64,
}

/// The payload for BASE/battery/N/state of input `index` (0-based);
/// `online` is its freshness as the combiner decided it, `pack` the bank's
/// view of it, `discharging` whether the bank discharges.
pub fn battery_state(
    config: &Config,
    index: usize,
    input: &InputStatus,
    online: bool,
    pack: Option<&PackView>,
    discharging: bool,
    clock: &Clock,
) -> BatteryPayload {
    // Null unless fresh both to the combiner now and in the bank's last round.
    let pack = pack.filter(|p| online && p.fresh);
    let share = |f: fn(&PackView) -> f64| pack.map(|p| round(f(p), 3));
    let c = &config.inputs[index];
    let age = input.last_telegram.map(|t| clock.now.saturating_duration_since(t));
    let (link, link_error) = link(&input.link, &input.recovery);
    let mut values = input
        .telegram
        .as_ref()
        .map_or_else(Values::default, |t| Values::of_telegram(t, c.capacity_ah));
    values.capacity_ah = Some(round(c.capacity_ah, 1));
    let energy_stored_kwh = input
        .telegram
        .as_ref()
        .map(|t| stored_energy_kwh(t.soc.soc, c.capacity_ah, t.measurements.v_avg));
    BatteryPayload {
        values,
        cells: input.telegram.as_ref().map_or_else(CellValues::default, CellValues::of),
        energy_stored_kwh,
        battery: index + 1,
        description: c.description.clone(),
        can_if: c.can_if.clone(),
        online,
        age_s: age.map(|a| round(a.as_secs_f64(), 1)),
        timestamp_last_bms_update: input.last_telegram_wall.map(unix),
        link,
        link_error,
        recovery: RecoveryCounts::of(&input.recovery),
        frames: input.frames,
        telegrams: input.telegrams,
        invalid: input.invalid,
        dropped: input.dropped,
        serial_faults: c.serial.is_some().then_some(input.serial_faults),
        energy: EnergyKwh::of(input.energy.total),
        share: if discharging {
            share(|p| p.share.discharge)
        } else {
            share(|p| p.share.charge)
        },
        share_charge: share(|p| p.share.charge),
        share_discharge: share(|p| p.share.discharge),
        over_current: pack.map(|p| p.over_current),
        timestamp: clock.timestamp(),
    }
}

/// BASE/inverter/N/state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InverterPayload {
    /// The values last sent to this inverter.
    #[serde(flatten)]
    pub values: Values,
    /// 1-based, config order.
    pub inverter: usize,
    pub description: String,
    pub can_if: String,
    /// Its output profile (`[[bmses-out]] PROFILE`): the dialect it is sent.
    pub profile: &'static str,
    /// The system state of the values last sent.
    pub state: Option<&'static str>,
    /// Seconds since the inverter's last 0x305.
    pub sync_age_s: Option<f64>,
    /// Seconds since the last transmission.
    pub sent_age_s: Option<f64>,
    pub timestamp_last_inverter_request: Option<f64>,
    pub frames_sent: u64,
    pub send_errors: u64,
    pub link: &'static str,
    pub link_error: Option<String>,
    #[serde(flatten)]
    pub recovery: RecoveryCounts,
    /// No frame from the inverter for INVERTER-TIMEOUT; `None` when it is
    /// configured never to talk (INVERTER-TIMEOUT = 0).
    pub silent: Option<bool>,
    /// What the inverter itself measures (an SMA Sunny Island's 0x305 and
    /// 0x306), `None` for inverters that do not say.
    pub inverter_readings: Option<InverterReadings>,
    /// "Shut down battery" requests received (Luxpower 0x300), never obeyed.
    pub shutdown_requests: u64,
    /// Frame sets the interlock refused (spec 14).
    pub interlock_trips: u64,
    pub timestamp: f64,
}

/// An inverter's own readings of the battery (units V, A with + = charging,
/// degC, %), and its state frame when it sends one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InverterReadings {
    pub v: f64,
    pub i: f64,
    pub t: f64,
    pub soc: f64,
    pub soh: Option<f64>,
    pub charge_procedure: Option<u8>,
    pub operating_state: Option<u8>,
    pub error: Option<u16>,
    pub v_charge_setpoint: Option<f64>,
}

impl InverterReadings {
    fn of(output: &OutputStatus) -> Option<InverterReadings> {
        let r = output.inverter_readings?;
        let st = output.inverter_state;
        Some(InverterReadings {
            v: r.v,
            i: r.i,
            t: r.t,
            soc: r.soc,
            soh: st.map(|s| s.soh),
            charge_procedure: st.map(|s| s.charge_procedure),
            operating_state: st.map(|s| s.operating_state),
            error: st.map(|s| s.error),
            v_charge_setpoint: st.map(|s| s.v_charge_setpoint),
        })
    }
}

/// The payload for BASE/inverter/N/state of output `index` (0-based).
pub fn inverter_state(config: &Config, index: usize, output: &OutputStatus, clock: &Clock) -> InverterPayload {
    let c = &config.outputs[index];
    let (link, link_error) = link(&output.link, &output.recovery);
    InverterPayload {
        values: output
            .last_sent
            .as_ref()
            .map_or_else(Values::default, Values::of_battery),
        inverter: index + 1,
        description: c.description.clone(),
        can_if: c.can_if.clone(),
        profile: c.profile.name(),
        state: output.last_state.map(|s| s.as_str()),
        sync_age_s: output.last_request.map(|t| clock.age(t)),
        sent_age_s: output.last_sent_at.map(|t| clock.age(t)),
        timestamp_last_inverter_request: output.last_request_wall.map(unix),
        frames_sent: output.frames_sent,
        send_errors: output.send_errors,
        link,
        link_error,
        recovery: RecoveryCounts::of(&output.recovery),
        silent: output.talk.map(|t| t == Talk::Silent),
        inverter_readings: InverterReadings::of(output),
        shutdown_requests: output.shutdown_requests,
        interlock_trips: output.interlock_trips,
        timestamp: clock.timestamp(),
    }
}

/// The setpoints that are active at `now` (expired ones dropped), as
/// compared to decide whether BASE/setpoints must be published again.
pub fn active_setpoints(system: &LimitSetpoints, inverters: &[LimitSetpoints], now: Instant) -> Vec<LimitSetpoints> {
    std::iter::once(system)
        .chain(inverters)
        .map(|s| {
            let mut s = *s;
            s.expire(now);
            s
        })
        .collect()
}

/// The charge-stop SOC set over MQTT as an entry of [`active_setpoints`]
/// (in the charge slot), dropped once expired.
pub fn charge_stop_entry(charge_stop: Option<Setpoint>, now: Instant) -> LimitSetpoints {
    LimitSetpoints {
        charge: charge_stop.filter(|s| s.active_at(now)),
        discharge: None,
    }
}

/// BASE/setpoints with the bank's charge-stop SOC (%) under "system" as
/// `charge_stop_soc` (null when none is set).
pub fn with_charge_stop(
    mut setpoints: serde_json::Value,
    charge_stop: Option<Setpoint>,
    clock: &Clock,
) -> serde_json::Value {
    setpoints["system"]["charge_stop_soc"] = setpoint_json(charge_stop, clock);
    setpoints
}

fn setpoint_json(s: Option<Setpoint>, clock: &Clock) -> serde_json::Value {
    match s.filter(|s| s.active_at(clock.now)) {
        None => serde_json::Value::Null,
        Some(s) => serde_json::json!({
            "value": round(s.value, 1),
            "expires": s.expires.map(|e| clock.unix_of(e)),
            "remaining_s": s.expires.map(|e| round(e.saturating_duration_since(clock.now).as_secs_f64(), 1)),
        }),
    }
}

fn scope_json(s: &LimitSetpoints, clock: &Clock) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for kind in [LimitKind::Charge, LimitKind::Discharge] {
        m.insert(kind.field().into(), setpoint_json(s.get(kind), clock));
    }
    m
}

/// BASE/setpoints: `{"system": {"i_lim_charge": null or {"value", "expires",
/// "remaining_s"}, "i_lim_discharge": ...}, "inverters": [{"inverter": 1,
/// ...}], "timestamp"}`. `expires` is null for a setpoint without expiry.
pub fn setpoints(system: &LimitSetpoints, inverters: &[LimitSetpoints], clock: &Clock) -> serde_json::Value {
    let inverters: Vec<serde_json::Value> = inverters
        .iter()
        .enumerate()
        .map(|(j, s)| {
            let mut m = scope_json(s, clock);
            m.insert("inverter".into(), (j + 1).into());
            serde_json::Value::Object(m)
        })
        .collect();
    serde_json::json!({
        "system": scope_json(system, clock),
        "inverters": inverters,
        "timestamp": clock.timestamp(),
    })
}

#[cfg(test)]
mod tests;
