//! Home Assistant MQTT discovery: the retained config messages that make the
//! gateway appear in Home Assistant as one device for the system and one per
//! battery, and the rule for removing entities that the config no longer has.
//!
//! Pure: [`entities`] lists every discovery message for a config. Topics are
//! `PREFIX/<component>/<node>/<object>/config` with `node` derived from
//! BASE-TOPIC, so several gateways on one broker keep apart. Batteries and
//! inverters are identified by their CAN interface, so that an entity follows
//! the physical battery when another one is removed from the config.
//!
//! Removal: on every connect the gateway subscribes to
//! `PREFIX/+/<node>/+/config`; a retained config there that is not in
//! today's list ([`is_stale`]) was published by an earlier configuration and
//! is deleted with an empty retained message. With HA-DISCOVERY off the list
//! is empty, so turning discovery off removes the gateway's entities.

use crate::config::Config;
use serde_json::{Value, json};

/// One retained discovery message.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub topic: String,
    pub payload: Value,
}

/// Letters, digits, '_' and '-' only (what Home Assistant allows in node and
/// object ids); anything else becomes '_'.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect()
}

/// The node id of this gateway in discovery topics.
pub fn node_id(config: &Config) -> String {
    sanitize(&config.mqtt.base_topic)
}

/// The subscription that finds every discovery config of this gateway.
pub fn subscription(config: &Config) -> String {
    format!("{}/+/{}/+/config", config.mqtt.ha_discovery_prefix, node_id(config))
}

/// Whether a retained message on `topic` is one of this gateway's discovery
/// configs that today's `current` list no longer has.
pub fn is_stale(config: &Config, topic: &str, current: &[Entity]) -> bool {
    let prefix = format!("{}/", config.mqtt.ha_discovery_prefix);
    let Some(rest) = topic.strip_prefix(&prefix) else {
        return false;
    };
    let levels: Vec<&str> = rest.split('/').collect();
    let ours = matches!(levels.as_slice(), [_, node, _, "config"] if *node == node_id(config));
    ours && !current.iter().any(|e| e.topic == topic)
}

/// What a sensor measures: the Home Assistant device class, unit and state
/// class.
#[derive(Debug, Clone, Copy)]
struct Kind {
    device_class: Option<&'static str>,
    unit: Option<&'static str>,
    state_class: Option<&'static str>,
    diagnostic: bool,
}

const fn kind(
    device_class: Option<&'static str>,
    unit: Option<&'static str>,
    state_class: Option<&'static str>,
) -> Kind {
    Kind {
        device_class,
        unit,
        state_class,
        diagnostic: false,
    }
}

const BATTERY: Kind = kind(Some("battery"), Some("%"), Some("measurement"));
const PERCENT: Kind = kind(None, Some("%"), Some("measurement"));
const VOLTAGE: Kind = kind(Some("voltage"), Some("V"), Some("measurement"));
const CURRENT: Kind = kind(Some("current"), Some("A"), Some("measurement"));
const POWER: Kind = kind(Some("power"), Some("W"), Some("measurement"));
const TEMPERATURE: Kind = kind(Some("temperature"), Some("°C"), Some("measurement"));
/// Home Assistant has no device class for charge in Ah.
const CAPACITY: Kind = kind(None, Some("Ah"), Some("measurement"));
const COUNT: Kind = kind(None, None, Some("measurement"));
/// A fraction of the bank's current (1 = all of it).
const SHARE: Kind = kind(None, None, Some("measurement"));
const COUNTER: Kind = kind(None, None, Some("total_increasing"));

const fn diagnostic(k: Kind) -> Kind {
    Kind { diagnostic: true, ..k }
}

/// (field, name, kind) of the sensors every battery-like device has.
const VALUE_SENSORS: &[(&str, &str, Kind)] = &[
    ("soc", "State of charge", BATTERY),
    ("soh", "State of health", PERCENT),
    ("v_avg", "Voltage", VOLTAGE),
    ("i_total", "Current", CURRENT),
    ("power_w", "Power", POWER),
    ("t_avg", "Temperature", TEMPERATURE),
    ("i_lim_charge", "Charge current limit", CURRENT),
    ("i_lim_discharge", "Discharge current limit", CURRENT),
    ("v_charge_cmd", "Charge voltage", diagnostic(VOLTAGE)),
    ("v_discharge_min", "Discharge voltage", diagnostic(VOLTAGE)),
    ("v_cell_min", "Lowest cell voltage", diagnostic(VOLTAGE)),
    ("v_cell_max", "Highest cell voltage", diagnostic(VOLTAGE)),
    ("t_cell_min", "Lowest cell temperature", diagnostic(TEMPERATURE)),
    ("t_cell_max", "Highest cell temperature", diagnostic(TEMPERATURE)),
    ("capacity_ah", "Capacity", diagnostic(CAPACITY)),
    ("n_modules", "Modules", diagnostic(COUNT)),
];

/// (object, name, field, mask) of the alarm bits of 0x359 (Pylontech
/// document), as problem binary sensors of the system.
const ALARM_BITS: &[(&str, &str, &str, u8)] = &[
    (
        "protection_over_voltage",
        "Over-voltage protection",
        "error_flags_1",
        0x02,
    ),
    (
        "protection_under_voltage",
        "Under-voltage protection",
        "error_flags_1",
        0x04,
    ),
    (
        "protection_over_temperature",
        "Over-temperature protection",
        "error_flags_1",
        0x08,
    ),
    (
        "protection_under_temperature",
        "Under-temperature protection",
        "error_flags_1",
        0x10,
    ),
    (
        "protection_discharge_over_current",
        "Discharge over-current protection",
        "error_flags_1",
        0x80,
    ),
    (
        "protection_charge_over_current",
        "Charge over-current protection",
        "error_flags_2",
        0x01,
    ),
    ("protection_system_error", "System error", "error_flags_2", 0x08),
    ("alarm_high_voltage", "High voltage alarm", "warning_flags_1", 0x02),
    ("alarm_low_voltage", "Low voltage alarm", "warning_flags_1", 0x04),
    (
        "alarm_high_temperature",
        "High temperature alarm",
        "warning_flags_1",
        0x08,
    ),
    (
        "alarm_low_temperature",
        "Low temperature alarm",
        "warning_flags_1",
        0x10,
    ),
    (
        "alarm_discharge_high_current",
        "Discharge high current alarm",
        "warning_flags_1",
        0x80,
    ),
    (
        "alarm_charge_high_current",
        "Charge high current alarm",
        "warning_flags_2",
        0x01,
    ),
    (
        "alarm_internal_communication",
        "Internal communication alarm",
        "warning_flags_2",
        0x08,
    ),
];

const ANY_PROTECTION: &str =
    "{{ 'ON' if (value_json.error_flags_1 | int(0)) > 0 or (value_json.error_flags_2 | int(0)) > 0 else 'OFF' }}";
const ANY_ALARM: &str =
    "{{ 'ON' if (value_json.warning_flags_1 | int(0)) > 0 or (value_json.warning_flags_2 | int(0)) > 0 else 'OFF' }}";

/// Builds the entities of one device.
struct Device<'a> {
    config: &'a Config,
    node: String,
    /// The device block every entity repeats.
    device: Value,
    /// Prefix of object ids ("" for the system).
    object_prefix: String,
    state_topic: String,
    out: Vec<Entity>,
}

impl Device<'_> {
    fn entity(&mut self, component: &str, object: &str, name: &str, mut payload: Value) {
        let object = sanitize(&format!("{}{object}", self.object_prefix));
        let status = format!("{}/status", self.config.mqtt.base_topic);
        let extra = json!({
            "name": name,
            "unique_id": format!("{}_{object}", self.node),
            "device": self.device.clone(),
            "availability_topic": status,
            "payload_available": "online",
            "payload_not_available": "offline",
        });
        let map = payload.as_object_mut().expect("discovery payloads are objects");
        if let Value::Object(extra) = extra {
            map.extend(extra);
        }
        self.out.push(Entity {
            topic: format!(
                "{}/{component}/{}/{object}/config",
                self.config.mqtt.ha_discovery_prefix, self.node
            ),
            payload,
        });
    }

    fn sensor(&mut self, field: &str, name: &str, k: Kind) {
        let mut p = json!({
            "state_topic": self.state_topic,
            "value_template": format!("{{{{ value_json.{field} }}}}"),
        });
        let m = p.as_object_mut().unwrap();
        if let Some(c) = k.device_class {
            m.insert("device_class".into(), c.into());
        }
        if let Some(u) = k.unit {
            m.insert("unit_of_measurement".into(), u.into());
        }
        if let Some(s) = k.state_class {
            m.insert("state_class".into(), s.into());
        }
        if k.diagnostic {
            m.insert("entity_category".into(), "diagnostic".into());
        }
        self.entity("sensor", field, name, p);
    }

    /// The charge and discharge enable flags, for the system and each battery.
    fn enable_binaries(&mut self) {
        self.binary(
            "charge_enable",
            "Charging allowed",
            None,
            flag_template("charge_enable"),
        );
        self.binary(
            "discharge_enable",
            "Discharging allowed",
            None,
            flag_template("discharge_enable"),
        );
    }

    fn binary(&mut self, object: &str, name: &str, device_class: Option<&str>, template: String) {
        let mut p = json!({
            "state_topic": self.state_topic,
            "value_template": template,
            "payload_on": "ON",
            "payload_off": "OFF",
        });
        if let Some(c) = device_class {
            p.as_object_mut().unwrap().insert("device_class".into(), c.into());
        }
        self.entity("binary_sensor", object, name, p);
    }

    fn value_sensors(&mut self) {
        for (field, name, k) in VALUE_SENSORS {
            self.sensor(field, name, *k);
        }
        self.binary("protection", "Protection", Some("problem"), ANY_PROTECTION.into());
        self.binary("alarm", "Alarm", Some("problem"), ANY_ALARM.into());
    }
}

fn flag_template(field: &str) -> String {
    format!("{{{{ 'ON' if value_json.{field} else 'OFF' }}}}")
}

fn bit_template(field: &str, mask: u8) -> String {
    format!("{{{{ 'ON' if (value_json.{field} | int(0)) | bitwise_and({mask}) > 0 else 'OFF' }}}}")
}

/// Every discovery message for this config (empty with HA-DISCOVERY off).
pub fn entities(config: &Config) -> Vec<Entity> {
    if !config.mqtt.ha_discovery {
        return Vec::new();
    }
    let node = node_id(config);
    let system_id = format!("bms_gateway_{node}");
    let mut out = system(config, &node, &system_id);
    for (i, input) in config.inputs.iter().enumerate() {
        out.extend(battery(config, &node, &system_id, i, &input.can_if, &input.description));
    }
    out
}

fn system(config: &Config, node: &str, system_id: &str) -> Vec<Entity> {
    let base = &config.mqtt.base_topic;
    let name = if base == "bms_gateway" {
        "BMS gateway".to_string()
    } else {
        format!("BMS gateway {base}")
    };
    let mut d = Device {
        config,
        node: node.to_string(),
        device: json!({
            "identifiers": [system_id],
            "name": name,
            "manufacturer": "bms-gateway",
            "model": format!("virtual battery of {} BMS, {} inverters", config.inputs.len(), config.outputs.len()),
            "sw_version": env!("CARGO_PKG_VERSION"),
        }),
        object_prefix: String::new(),
        state_topic: config.mqtt.topic.clone(),
        out: Vec::new(),
    };
    d.value_sensors();
    let state = json!({
        "state_topic": config.mqtt.topic,
        "value_template": "{{ value_json.state }}",
        "device_class": "enum",
        "options": ["starting", "ok", "degraded", "safe"],
    });
    d.entity("sensor", "state", "State", state);
    d.sensor("inputs_online", "Batteries online", COUNT);
    d.sensor("n_invalid_data_telegrams", "Invalid frames", diagnostic(COUNTER));
    d.enable_binaries();
    d.binary(
        "force_charge_request",
        "Force charge request",
        None,
        "{{ 'ON' if value_json.force_charge_request or value_json.force_charge_request_2 else 'OFF' }}".into(),
    );
    d.binary(
        "balancing_charge_request",
        "Full charge request",
        None,
        flag_template("balancing_charge_request"),
    );
    for (object, name, field, mask) in ALARM_BITS {
        d.binary(object, name, Some("problem"), bit_template(field, *mask));
    }
    limit_reasons(&mut d);
    for (j, output) in config.outputs.iter().enumerate() {
        inverter(&mut d, j, &output.can_if);
    }
    if config.mqtt.control_activated {
        setpoint_controls(&mut d, config);
    }
    d.out
}

/// Why each limit is what it is (text, with the binding battery), and the
/// overshoot of an inverter ignoring its limit (docs/combining.md).
fn limit_reasons(d: &mut Device) {
    for what in ["charge", "discharge"] {
        let template = format!(
            "{{{{ value_json.limit_reason_{what} }}}}{{{{ ' (battery ' ~ value_json.limit_battery_{what} ~ ')' if value_json.limit_battery_{what} else '' }}}}"
        );
        let p = json!({"state_topic": d.state_topic, "value_template": template, "icon": "mdi:information-outline"});
        let name = if what == "charge" {
            "Charge limit reason"
        } else {
            "Discharge limit reason"
        };
        d.entity("sensor", &format!("limit_reason_{what}"), name, p);
    }
    d.binary(
        "overshoot",
        "Inverter overshoot",
        Some("problem"),
        "{{ 'ON' if value_json.overshoot_charge or value_json.overshoot_discharge else 'OFF' }}".into(),
    );
}

/// An inverter's limits as sensors of the system device.
fn inverter(d: &mut Device, j: usize, can_if: &str) {
    let topic = format!("{}/inverter/{}/state", d.config.mqtt.base_topic, j + 1);
    for (field, what) in [("i_lim_charge", "charge"), ("i_lim_discharge", "discharge")] {
        let p = json!({
            "state_topic": topic,
            "value_template": format!("{{{{ value_json.{field} }}}}"),
            "device_class": "current",
            "unit_of_measurement": "A",
            "state_class": "measurement",
        });
        let name = format!("Inverter {} {what} current limit", j + 1);
        d.entity("sensor", &format!("inverter_{can_if}_{field}"), &name, p);
    }
}

/// Number entities and clear buttons for every setpoint (CONTROL-ACTIVATED).
fn setpoint_controls(d: &mut Device, config: &Config) {
    let base = &config.mqtt.base_topic;
    let b = &config.battery;
    let mut scopes = vec![(
        format!("{base}/set"),
        "value_json.system".to_string(),
        String::from("setpoint"),
        String::new(),
        (b.i_lim_charge, b.i_lim_discharge),
    )];
    for (j, o) in config.outputs.iter().enumerate() {
        scopes.push((
            format!("{base}/inverter/{}/set", j + 1),
            format!("value_json.inverters[{j}]"),
            format!("inverter_{}_setpoint", o.can_if),
            format!("Inverter {} ", j + 1),
            (o.share.i_lim_charge, o.share.i_lim_discharge),
        ));
    }
    for (set, path, object, label, (charge_cap, discharge_cap)) in scopes {
        for (field, what, cap) in [
            ("i_lim_charge", "charge", charge_cap),
            ("i_lim_discharge", "discharge", discharge_cap),
        ] {
            // No active setpoint shows as the cap: "no restriction".
            let template = format!("{{{{ {path}.{field}.value if {path}.{field} else {cap} }}}}");
            let number = json!({
                "command_topic": format!("{set}/{field}"),
                "state_topic": format!("{base}/setpoints"),
                "value_template": template,
                "min": 0,
                "max": cap,
                "step": 0.1,
                "mode": "box",
                "device_class": "current",
                "unit_of_measurement": "A",
            });
            d.entity(
                "number",
                &format!("{object}_{field}"),
                &format!("{label}{what} current setpoint"),
                number,
            );
            let button = json!({
                "command_topic": format!("{set}/{field}"),
                "payload_press": "clear",
            });
            d.entity(
                "button",
                &format!("{object}_{field}_clear"),
                &format!("Clear {}{what} current setpoint", label.to_lowercase()),
                button,
            );
        }
    }
}

fn battery(config: &Config, node: &str, system_id: &str, i: usize, can_if: &str, description: &str) -> Vec<Entity> {
    let name = if description.is_empty() {
        format!("Battery {} ({can_if})", i + 1)
    } else {
        format!("Battery {} {description}", i + 1)
    };
    let mut d = Device {
        config,
        node: node.to_string(),
        device: json!({
            "identifiers": [format!("{system_id}_battery_{}", sanitize(can_if))],
            "name": name,
            "manufacturer": "bms-gateway",
            "model": format!("Pylontech-protocol BMS on {can_if}"),
            "via_device": system_id,
        }),
        object_prefix: format!("battery_{can_if}_"),
        state_topic: format!("{}/battery/{}/state", config.mqtt.base_topic, i + 1),
        out: Vec::new(),
    };
    d.value_sensors();
    d.binary("online", "Online", Some("connectivity"), flag_template("online"));
    d.enable_binaries();
    d.sensor("share", "Share of the bank's current", SHARE);
    d.binary(
        "over_current",
        "Over current",
        Some("problem"),
        flag_template("over_current"),
    );
    d.sensor("invalid", "Invalid frames", diagnostic(COUNTER));
    d.out
}

#[cfg(test)]
mod tests;
