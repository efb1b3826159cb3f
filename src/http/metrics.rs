//! `/metrics`: the gateway's state in the Prometheus text format (0.0.4),
//! through the `prometheus-client` crate.
//!
//! Names start with `bms_gateway_` and end with their unit (`_percent`,
//! `_volts`, `_amperes`, `_watts`, `_celsius`, `_seconds`, `_kwh_total`);
//! batteries carry the labels `battery` (1-based) and `can_if`, inverters
//! `inverter` and `can_if`; a cell's voltage also `cell` (1-based, the
//! pack's order), a temperature sensor's `sensor`, an RS485 battery's
//! fault count `kind` (spec 18's kinds: `timeout`, `checksum`...). The values are those of the MQTT payloads, so
//! both show the same numbers; a value not known yet is left out. A fresh
//! registry is built for each scrape: there is no state to keep in step.

use crate::http::api::View;
use crate::serial::SerialFault;
use crate::telemetry::{BatteryPayload, Values};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// `battery` or `inverter` (1-based) and `can_if`; none for the system.
type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// The families of one scrape, by name.
struct Families {
    registry: Registry,
}

impl Families {
    fn gauge(&mut self, name: &str, help: &str, rows: &[(Labels, Option<f64>)]) {
        let family = Family::<Labels, FloatGauge>::default();
        for (labels, value) in rows {
            if let Some(v) = value {
                family.get_or_create(labels).set(*v);
            }
        }
        self.registry.register(name, help, family);
    }

    fn counter(&mut self, name: &str, help: &str, rows: &[(Labels, Option<f64>)]) {
        let family = Family::<Labels, FloatCounter>::default();
        for (labels, value) in rows {
            if let Some(v) = value {
                family.get_or_create(labels).inc_by(*v);
            }
        }
        self.registry.register(name, help, family);
    }
}

/// One row per RS485 battery and fault kind (`kind` label); none for a CAN battery.
fn serial_fault_rows(batteries: &[BatteryPayload], labels: &[Labels]) -> Vec<(Labels, Option<f64>)> {
    let mut rows = Vec::new();
    for (b, l) in batteries.iter().zip(labels) {
        let Some(faults) = &b.serial_faults else { continue };
        for kind in SerialFault::ALL {
            let mut labels = l.clone();
            labels.push(("kind", kind.name().to_string()));
            rows.push((labels, Some(faults.get(kind) as f64)));
        }
    }
    rows
}

fn bool_value(b: Option<bool>) -> Option<f64> {
    b.map(|b| if b { 1.0 } else { 0.0 })
}

/// The values every battery-like row has, as (name, help, value).
fn value_rows(v: &Values) -> [(&'static str, &'static str, Option<f64>); 8] {
    [
        ("soc_percent", "State of charge", v.soc),
        ("voltage_volts", "Pack voltage", v.v_avg),
        ("current_amperes", "Current, + = charging", v.i_total),
        ("temperature_celsius", "Temperature", v.t_avg),
        ("charge_current_limit_amperes", "Charge current limit", v.i_lim_charge),
        (
            "discharge_current_limit_amperes",
            "Discharge current limit",
            v.i_lim_discharge,
        ),
        ("charge_voltage_volts", "Charge voltage limit", v.v_charge_cmd),
        ("soh_percent", "State of health", v.soh),
    ]
}

/// Each battery's cell extremes and difference, and every cell and sensor
/// of those that report them (docs/mqtt.md, "Cells").
fn cell_gauges(f: &mut Families, batteries: &[BatteryPayload], labels: &[Labels]) {
    let per_battery = |pick: fn(&BatteryPayload) -> Option<f64>| -> Vec<(Labels, Option<f64>)> {
        batteries
            .iter()
            .zip(labels)
            .map(|(b, l)| (l.clone(), pick(b)))
            .collect()
    };
    f.gauge(
        "battery_cell_voltage_min_volts",
        "Lowest cell voltage of each battery",
        &per_battery(|b| b.cells.cell_v_min),
    );
    f.gauge(
        "battery_cell_voltage_max_volts",
        "Highest cell voltage of each battery",
        &per_battery(|b| b.cells.cell_v_max),
    );
    f.gauge(
        "battery_cell_voltage_delta_volts",
        "Highest minus lowest cell voltage of each battery",
        &per_battery(|b| b.cells.cell_v_delta),
    );
    let each = |key: &'static str, values: fn(&BatteryPayload) -> Option<&Vec<f64>>| -> Vec<(Labels, Option<f64>)> {
        let mut rows = Vec::new();
        for (b, l) in batteries.iter().zip(labels) {
            for (k, v) in values(b).into_iter().flatten().enumerate() {
                let mut l = l.clone();
                l.push((key, (k + 1).to_string()));
                rows.push((l, Some(*v)));
            }
        }
        rows
    };
    f.gauge(
        "battery_cell_voltage_volts",
        "Each cell's voltage, for batteries that report every cell",
        &each("cell", |b| b.cells.cells_v.as_ref()),
    );
    f.gauge(
        "battery_cell_temperature_celsius",
        "Each temperature sensor of batteries that report them all (the pack's order: on Pylontech the BMS board first, then groups of cells)",
        &each("sensor", |b| b.cells.cells_t.as_ref()),
    );
}

/// The whole text of `/metrics`.
pub fn render(view: &View) -> String {
    let system = view.system();
    let batteries = view.batteries();
    let inverters = view.inverters();
    let mut f = Families {
        registry: Registry::with_prefix("bms_gateway"),
    };

    let states = Family::<StateLabel, Gauge>::default();
    for s in ["starting", "ok", "degraded", "safe"] {
        states
            .get_or_create(&StateLabel { state: s })
            .set(i64::from(system.state == s));
    }
    f.registry
        .register("state", "1 for the combined battery's current state", states);

    let battery_labels: Vec<Labels> = batteries
        .iter()
        .map(|b| vec![("battery", b.battery.to_string()), ("can_if", b.can_if.clone())])
        .collect();
    let inverter_labels: Vec<Labels> = inverters
        .iter()
        .map(|v| vec![("inverter", v.inverter.to_string()), ("can_if", v.can_if.clone())])
        .collect();

    for (k, (name, help, value)) in value_rows(&system.values).into_iter().enumerate() {
        f.gauge(
            name,
            &format!("{help} of the combined battery"),
            &[(Labels::new(), value)],
        );
        let rows: Vec<(Labels, Option<f64>)> = batteries
            .iter()
            .zip(&battery_labels)
            .map(|(b, l)| (l.clone(), value_rows(&b.values)[k].2))
            .collect();
        f.gauge(&format!("battery_{name}"), &format!("{help} of each battery"), &rows);
        let rows: Vec<(Labels, Option<f64>)> = inverters
            .iter()
            .zip(&inverter_labels)
            .map(|(v, l)| (l.clone(), value_rows(&v.values)[k].2))
            .collect();
        f.gauge(
            &format!("inverter_{name}"),
            &format!("{help} last sent to each inverter"),
            &rows,
        );
    }
    f.gauge(
        "power_watts",
        "Power of the combined battery, + = charging",
        &[(Labels::new(), system.values.power_w)],
    );
    f.gauge(
        "batteries_online",
        "Batteries with a complete telegram within STALE-TIMEOUT",
        &[(Labels::new(), Some(system.inputs_online as f64))],
    );

    let sys = |v: f64| [(Labels::new(), Some(v))];
    let per_battery = |pick: &dyn Fn(&crate::telemetry::BatteryPayload) -> Option<f64>| -> Vec<(Labels, Option<f64>)> {
        batteries
            .iter()
            .zip(&battery_labels)
            .map(|(b, l)| (l.clone(), pick(b)))
            .collect()
    };
    let per_inverter =
        |pick: &dyn Fn(&crate::telemetry::InverterPayload) -> Option<f64>| -> Vec<(Labels, Option<f64>)> {
            inverters
                .iter()
                .zip(&inverter_labels)
                .map(|(v, l)| (l.clone(), pick(v)))
                .collect()
        };

    f.counter(
        "energy_charged_kwh",
        "Energy taken in by the combined battery, kWh",
        &sys(system.energy.energy_charged_kwh),
    );
    f.counter(
        "energy_discharged_kwh",
        "Energy given out by the combined battery, kWh",
        &sys(system.energy.energy_discharged_kwh),
    );
    f.counter(
        "battery_energy_charged_kwh",
        "Energy taken in by each battery, kWh",
        &per_battery(&|b| Some(b.energy.energy_charged_kwh)),
    );
    f.counter(
        "battery_energy_discharged_kwh",
        "Energy given out by each battery, kWh",
        &per_battery(&|b| Some(b.energy.energy_discharged_kwh)),
    );
    f.gauge(
        "battery_online",
        "1 while the battery reports",
        &per_battery(&|b| bool_value(Some(b.online))),
    );
    f.gauge(
        "battery_age_seconds",
        "Seconds since the battery's last complete telegram",
        &per_battery(&|b| b.age_s),
    );
    f.gauge(
        "battery_link_up",
        "1 while the battery's CAN interface is up",
        &per_battery(&|b| bool_value(Some(b.link == "up"))),
    );
    f.counter(
        "battery_link_bounces",
        "Times the gateway took the battery's CAN interface down and up because it looked dead",
        &per_battery(&|b| Some(b.recovery.link_bounces as f64)),
    );
    f.counter(
        "battery_link_recoveries",
        "Dead spells of the battery's CAN interface that a bounce ended",
        &per_battery(&|b| Some(b.recovery.link_recoveries as f64)),
    );
    f.counter(
        "battery_link_recovery_failures",
        "Bounces of the battery's CAN interface that brought no traffic back, or could not be done",
        &per_battery(&|b| Some(b.recovery.link_recovery_failures as f64)),
    );
    f.gauge(
        "battery_link_recovering",
        "1 while the battery's CAN interface has been bounced and no traffic is back yet",
        &per_battery(&|b| bool_value(Some(b.link == "recovering"))),
    );
    f.counter(
        "battery_frames",
        "Frames received from each battery",
        &per_battery(&|b| Some(b.frames as f64)),
    );
    f.counter(
        "battery_invalid_frames",
        "Frames from each battery that were not used",
        &per_battery(&|b| Some(b.invalid as f64)),
    );
    f.counter(
        "battery_dropped_telegrams",
        "Telegrams of each battery dropped because the combiner was busy",
        &per_battery(&|b| Some(b.dropped as f64)),
    );
    f.counter(
        "battery_serial_faults",
        "Bad or missing answers from each RS485 battery, by kind",
        &serial_fault_rows(&batteries, &battery_labels),
    );
    cell_gauges(&mut f, &batteries, &battery_labels);
    f.gauge(
        "battery_share_ratio",
        "Each battery's share of the bank's current (measured, or its capacity share before a measurement)",
        &per_battery(&|b| b.share),
    );
    f.gauge(
        "battery_over_current",
        "1 while the battery carries more than (1 + OVERCURRENT-MARGIN) x its own limit",
        &per_battery(&|b| bool_value(b.over_current)),
    );
    f.gauge(
        "overshoot_charge",
        "1 while the bank charges above what the inverters were allowed together (for OVERSHOOT-TIME)",
        &[(Labels::new(), bool_value(system.limits.overshoot_charge))],
    );
    f.gauge(
        "overshoot_discharge",
        "1 while the bank discharges above what the inverters were allowed together (for OVERSHOOT-TIME)",
        &[(Labels::new(), bool_value(system.limits.overshoot_discharge))],
    );
    f.gauge(
        "inverter_silent",
        "1 once the inverter has sent nothing for INVERTER-TIMEOUT",
        &per_inverter(&|v| bool_value(v.silent)),
    );
    f.counter(
        "inverter_shutdown_requests",
        "Shut-down-battery requests received from each inverter (Luxpower 0x300), never obeyed",
        &per_inverter(&|v| Some(v.shutdown_requests as f64)),
    );
    f.counter(
        "inverter_interlock_trips",
        "Frame sets the interlock refused for each inverter (the safe state was sent instead); 0 in normal operation",
        &per_inverter(&|v| Some(v.interlock_trips as f64)),
    );
    f.counter(
        "inverter_frames_sent",
        "Frames sent to each inverter",
        &per_inverter(&|v| Some(v.frames_sent as f64)),
    );
    f.counter(
        "inverter_send_errors",
        "Transmissions to each inverter that failed",
        &per_inverter(&|v| Some(v.send_errors as f64)),
    );
    f.gauge(
        "inverter_link_up",
        "1 while the inverter's CAN interface is up",
        &per_inverter(&|v| bool_value(Some(v.link == "up"))),
    );
    f.counter(
        "inverter_link_bounces",
        "Times the gateway took the inverter's CAN interface down and up because it looked dead",
        &per_inverter(&|v| Some(v.recovery.link_bounces as f64)),
    );
    f.counter(
        "inverter_link_recoveries",
        "Dead spells of the inverter's CAN interface that a bounce ended",
        &per_inverter(&|v| Some(v.recovery.link_recoveries as f64)),
    );
    f.counter(
        "inverter_link_recovery_failures",
        "Bounces of the inverter's CAN interface that brought no traffic back, or could not be done",
        &per_inverter(&|v| Some(v.recovery.link_recovery_failures as f64)),
    );
    f.gauge(
        "inverter_link_recovering",
        "1 while the inverter's CAN interface has been bounced and no traffic is back yet",
        &per_inverter(&|v| bool_value(Some(v.link == "recovering"))),
    );
    f.gauge(
        "inverter_sent_age_seconds",
        "Seconds since the last transmission to each inverter",
        &per_inverter(&|v| v.sent_age_s),
    );

    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &f.registry).expect("writing to a String");
    text
}
