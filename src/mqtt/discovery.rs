//! Home Assistant MQTT discovery: the retained config messages that make the
//! gateway appear in Home Assistant as one device for the system, one per
//! battery and one per inverter (both linked to the system device), and the
//! rule for removing entities that the config no longer has.
//!
//! Pure: [`entities_with`] lists every discovery message for a config and
//! what has been [`Learned`] (the BMS names, shown as the batteries'
//! manufacturers). Topics are `PREFIX/<component>/<node>/<object>/config`
//! with `node` derived from BASE-TOPIC, so several gateways on one broker
//! keep apart. Batteries and inverters are identified by their CAN
//! interface, so that an entity follows the physical battery when another
//! one is removed from the config.
//!
//! What a user sees (docs/mqtt.md, "Home Assistant"): every entity is
//! unavailable while the gateway is offline, and a battery's values also
//! while that battery is not fresh (an `availability` list with
//! `availability_mode: all`); a value not known yet is "unknown" (templates
//! render `None`), never a made-up "off"; every payload names its `origin`.
//!
//! Removal: on every connect the gateway subscribes to
//! `PREFIX/+/<node>/+/config`; a retained config there that is not in
//! today's list ([`is_stale`]) was published by an earlier configuration and
//! is deleted with an empty retained message. With HA-DISCOVERY off the list
//! is empty, so turning discovery off removes the gateway's entities.

use crate::codec::FLAG_BITS;
use crate::config::{Config, InputConfig};
use crate::events;
use crate::telegram::CellReadings;
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
/// configs that today's `current` list no longer has. A cell entity of a
/// configured battery is kept while HA-CELL-ENTITIES is on: after a start
/// the list has none until the battery's cells are heard again, and
/// deleting them in between would make Home Assistant forget them.
pub fn is_stale(config: &Config, topic: &str, current: &[Entity]) -> bool {
    let prefix = format!("{}/", config.mqtt.ha_discovery_prefix);
    let Some(rest) = topic.strip_prefix(&prefix) else {
        return false;
    };
    let levels: Vec<&str> = rest.split('/').collect();
    let (ours, object) = match levels.as_slice() {
        [_, node, object, "config"] => (*node == node_id(config), *object),
        _ => (false, ""),
    };
    let kept_cell = config.mqtt.ha_cell_entities
        && config
            .inputs
            .iter()
            .any(|input| object.starts_with(&sanitize(&format!("{}{CELL_OBJECTS}", battery_prefix(input)))));
    ours && !kept_cell && !current.iter().any(|e| e.topic == topic)
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
const DURATION: Kind = kind(Some("duration"), Some("s"), Some("measurement"));
const ENERGY_STORAGE: Kind = kind(Some("energy_storage"), Some("kWh"), Some("measurement"));
/// What Home Assistant's Energy dashboard accepts as battery storage in/out.
const ENERGY: Kind = kind(Some("energy"), Some("kWh"), Some("total_increasing"));

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
    ("energy_stored_kwh", "Stored energy", ENERGY_STORAGE),
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
    ("energy_charged_kwh", "Energy charged", ENERGY),
    ("energy_discharged_kwh", "Energy discharged", ENERGY),
];

/// Every discovery payload's `origin`: where the entities come from, shown
/// by Home Assistant with them. `support_url` is the package's repository
/// (Cargo.toml `repository`), left out while the package names none.
fn origin() -> Value {
    let mut o = json!({
        "name": "bms-gateway",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let url = env!("CARGO_PKG_REPOSITORY");
    if !url.is_empty() {
        o["support_url"] = url.into();
    }
    o
}

/// The status page's address for the system device's `configuration_url`
/// (the link "Visit" in Home Assistant): `None` until the gateway serves
/// one (`[http]`).
/// Only an address Home Assistant can reach: a LISTEN on one specific,
/// non-loopback address (for "0.0.0.0" the gateway cannot know which of its
/// addresses Home Assistant sees).
fn status_page_url(config: &Config) -> Option<String> {
    let listen = config.http.listen;
    let ip = listen.ip();
    (config.http.activated && !ip.is_loopback() && !ip.is_unspecified()).then(|| crate::http::url(listen))
}

/// BASE/event as a Home Assistant event entity: an automation can notify the
/// owner on any kind (the kind becomes HA's `event_type`).
fn event_entity(d: &mut Device) {
    let types: Vec<&str> = events::Kind::ALL.iter().map(|k| k.as_str()).collect();
    let p = json!({
        "state_topic": format!("{}/event", d.config.mqtt.base_topic),
        "event_types": types,
        "value_template": "{{ {'event_type': value_json.kind, 'message': value_json.message, \
                           'battery': value_json.battery, 'inverter': value_json.inverter} | to_json }}",
    });
    d.entity("event", "event", "Event", p);
}

/// How many cells and temperature sensors a battery's readings have: the
/// entities HA-CELL-ENTITIES gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellCount {
    pub cells: usize,
    pub temperatures: usize,
}

impl CellCount {
    pub fn of(readings: &CellReadings) -> CellCount {
        CellCount {
            cells: readings.cells_mv().len(),
            temperatures: readings.temperature_count(),
        }
    }
}

/// What discovery learns while running (config order): each battery's BMS
/// name from its 0x35E, the manufacturer of its device, and how many cells
/// and sensors it reports. What is once learned is kept while the battery
/// is silent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Learned {
    pub bms_names: Vec<Option<String>>,
    pub cell_counts: Vec<Option<CellCount>>,
}

/// Puts each `Some` of `heard` in its slot; true when one is new or changed.
fn remember<T: PartialEq + Clone>(slots: &mut Vec<Option<T>>, heard: impl IntoIterator<Item = Option<T>>) -> bool {
    let mut changed = false;
    for (i, value) in heard.into_iter().enumerate() {
        if slots.len() <= i {
            slots.resize(i + 1, None);
        }
        if value.is_some() && value != slots[i] {
            slots[i] = value;
            changed = true;
        }
    }
    changed
}

impl Learned {
    /// Takes the names the batteries report now (`None`: not heard); true
    /// when a name is new or changed, so that discovery must be renewed.
    pub fn learn(&mut self, names: impl IntoIterator<Item = Option<String>>) -> bool {
        let names = names
            .into_iter()
            .map(|name| name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()));
        remember(&mut self.bms_names, names)
    }

    /// Takes the batteries' cell counts now (`None`: no per-cell readings);
    /// true when one is new or changed.
    pub fn learn_cells(&mut self, counts: impl IntoIterator<Item = Option<CellCount>>) -> bool {
        remember(&mut self.cell_counts, counts)
    }
}

/// The entities of `new` that `old` does not have as they are: what must be
/// published again after something was learned.
pub fn changed<'a>(old: &[Entity], new: &'a [Entity]) -> Vec<&'a Entity> {
    new.iter().filter(|e| !old.contains(e)).collect()
}

/// A binary sensor's template: `ON` or `OFF` by `test`, and `None` while any
/// of `fields` is null (not known yet). Jinja renders `none` as `None`, which
/// Home Assistant takes as "unknown" (never as "off", which for a problem
/// sensor would claim that all is well).
fn on_off(fields: &[&str], test: &str) -> String {
    let unknown: Vec<String> = fields.iter().map(|f| format!("value_json.{f} is none")).collect();
    format!(
        "{{{{ none if {} else ('ON' if {test} else 'OFF') }}}}",
        unknown.join(" or ")
    )
}

fn flag_template(field: &str) -> String {
    on_off(&[field], &format!("value_json.{field}"))
}

fn bit_template(field: &str, mask: u8) -> String {
    on_off(&[field], &format!("value_json.{field} | bitwise_and({mask}) > 0"))
}

/// Any bit of a pair of flag bytes.
fn any_template(a: &str, b: &str) -> String {
    on_off(&[a, b], &format!("value_json.{a} > 0 or value_json.{b} > 0"))
}

/// The availability entry of the gateway itself: every entity is
/// unavailable while BASE/status is "offline" (the last will included).
fn gateway_availability(config: &Config) -> Value {
    json!({
        "topic": format!("{}/status", config.mqtt.base_topic),
        "payload_available": "online",
        "payload_not_available": "offline",
    })
}

/// The availability entry of one battery: its values are unavailable while
/// it is not fresh (`online` false in its state), not shown as the last ones
/// heard.
fn battery_availability(state_topic: &str) -> Value {
    json!({
        "topic": state_topic,
        "value_template": "{{ 'online' if value_json.online else 'offline' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    })
}

/// A sensor payload's device class, unit, state class and category.
fn add_kind(payload: &mut Value, k: Kind) {
    let m = payload.as_object_mut().expect("discovery payloads are objects");
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
}

/// Builds the entities of one device.
struct Device<'a> {
    config: &'a Config,
    node: String,
    /// The device block every entity repeats.
    device: Value,
    /// Prefix of object ids ("" for the system).
    object_prefix: String,
    state_topic: String,
    /// The device's own availability entry besides the gateway's (a
    /// battery's freshness); all entries must say available.
    own_availability: Option<Value>,
    out: Vec<Entity>,
}

impl<'a> Device<'a> {
    fn new(config: &'a Config, node: &str, device: Value, object_prefix: String, state_topic: String) -> Device<'a> {
        Device {
            config,
            node: node.to_string(),
            device,
            object_prefix,
            state_topic,
            own_availability: None,
            out: Vec::new(),
        }
    }

    fn entity(&mut self, component: &str, object: &str, name: &str, mut payload: Value) {
        let object = sanitize(&format!("{}{object}", self.object_prefix));
        let mut availability = vec![gateway_availability(self.config)];
        availability.extend(self.own_availability.clone());
        let extra = json!({
            "name": name,
            "unique_id": format!("{}_{object}", self.node),
            "device": self.device.clone(),
            "origin": origin(),
            "availability": availability,
            "availability_mode": "all",
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

    /// Entities made in `f` have only the gateway's availability: those that
    /// tell whether the device is there (online, link) or count its errors.
    fn gateway_availability_only(&mut self, f: impl FnOnce(&mut Self)) {
        let own = self.own_availability.take();
        f(self);
        self.own_availability = own;
    }

    fn sensor(&mut self, field: &str, name: &str, k: Kind) {
        let mut p = json!({
            "state_topic": self.state_topic,
            "value_template": format!("{{{{ value_json.{field} }}}}"),
        });
        add_kind(&mut p, k);
        self.entity("sensor", field, name, p);
    }

    /// A text field with a fixed set of values.
    fn enum_sensor(&mut self, field: &str, name: &str, options: &[&str], diagnostic: bool) {
        let mut p = json!({
            "state_topic": self.state_topic,
            "value_template": format!("{{{{ value_json.{field} }}}}"),
            "device_class": "enum",
            "options": options,
        });
        if diagnostic {
            p["entity_category"] = "diagnostic".into();
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
        self.binary(
            "protection",
            "Protection",
            Some("problem"),
            any_template("error_flags_1", "error_flags_2"),
        );
        self.binary(
            "alarm",
            "Alarm",
            Some("problem"),
            any_template("warning_flags_1", "warning_flags_2"),
        );
    }

    /// A link sensor (opening, up, down, recovering) of a CAN interface.
    fn link(&mut self) {
        self.enum_sensor("link", "Link", &["opening", "up", "down", "recovering"], true);
    }
}

/// Every discovery message for this config (empty with HA-DISCOVERY off),
/// before anything is learned.
pub fn entities(config: &Config) -> Vec<Entity> {
    entities_with(config, &Learned::default())
}

/// Every discovery message for this config with what has been learned.
pub fn entities_with(config: &Config, learned: &Learned) -> Vec<Entity> {
    if !config.mqtt.ha_discovery {
        return Vec::new();
    }
    let node = node_id(config);
    let system_id = format!("bms_gateway_{node}");
    let mut out = system(config, &node, &system_id);
    for i in 0..config.inputs.len() {
        let name = learned.bms_names.get(i).cloned().flatten();
        let cells = learned.cell_counts.get(i).copied().flatten();
        out.extend(battery(config, &node, &system_id, i, name, cells));
    }
    for j in 0..config.outputs.len() {
        out.extend(inverter(config, &node, &system_id, j));
    }
    out
}

/// A device's name: its DESCRIPTION, else "<kind> N" (1-based). Home
/// Assistant puts it before every entity name ("rack A State of charge").
fn device_name(description: &str, kind: &str, n: usize) -> String {
    if description.is_empty() {
        format!("{kind} {n}")
    } else {
        description.to_string()
    }
}

/// "BMS gateway", and what tells this gateway apart when BASE-TOPIC is not
/// the default ("bms_gateway_demo" gives "BMS gateway demo").
fn system_name(base: &str) -> String {
    match base.strip_prefix("bms_gateway") {
        Some("") => "BMS gateway".to_string(),
        Some(rest) if rest.starts_with(['_', '-', '/']) => format!("BMS gateway {}", &rest[1..]),
        _ => format!("BMS gateway {base}"),
    }
}

fn system(config: &Config, node: &str, system_id: &str) -> Vec<Entity> {
    let mut block = json!({
        "identifiers": [system_id],
        "name": system_name(&config.mqtt.base_topic),
        "manufacturer": "bms-gateway",
        "model": format!("virtual battery of {} BMS, {} inverters", config.inputs.len(), config.outputs.len()),
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(url) = status_page_url(config) {
        block["configuration_url"] = url.into();
    }
    let mut d = Device::new(config, node, block, String::new(), config.mqtt.topic.clone());
    d.value_sensors();
    d.enum_sensor("state", "State", &["starting", "ok", "degraded", "safe"], false);
    d.sensor("inputs_online", "Batteries online", COUNT);
    d.sensor("n_invalid_data_telegrams", "Invalid frames", diagnostic(COUNTER));
    event_entity(&mut d);
    d.enable_binaries();
    d.binary(
        "force_charge_request",
        "Force charge request",
        None,
        on_off(
            &["force_charge_request", "force_charge_request_2"],
            "value_json.force_charge_request or value_json.force_charge_request_2",
        ),
    );
    d.binary(
        "balancing_charge_request",
        "Full charge request",
        None,
        flag_template("balancing_charge_request"),
    );
    for bit in FLAG_BITS {
        d.binary(
            bit.key,
            bit.name,
            Some("problem"),
            bit_template(bit.byte.field(), bit.mask),
        );
    }
    limit_reasons(&mut d);
    if config.mqtt.control_activated {
        let b = &config.battery;
        let base = &config.mqtt.base_topic;
        setpoint_controls(
            &mut d,
            &format!("{base}/set"),
            "value_json.system",
            (b.i_lim_charge, b.i_lim_discharge),
        );
        charge_stop_control(&mut d, &format!("{base}/set/charge_stop_soc"));
    }
    d.out
}

/// Why each limit is what it is (text, with the binding battery), and the
/// overshoot of an inverter ignoring its limit (docs/combining.md).
fn limit_reasons(d: &mut Device) {
    for (what, name) in [
        ("charge", "Charge limit reason"),
        ("discharge", "Discharge limit reason"),
    ] {
        let template = format!(
            "{{{{ value_json.limit_reason_{what} }}}}{{{{ ' (battery ' ~ value_json.limit_battery_{what} ~ ')' if value_json.limit_battery_{what} else '' }}}}"
        );
        let p = json!({"state_topic": d.state_topic, "value_template": template, "icon": "mdi:information-outline"});
        d.entity("sensor", &format!("limit_reason_{what}"), name, p);
    }
    let fields = ["overshoot_charge", "overshoot_discharge"];
    let test = "value_json.overshoot_charge or value_json.overshoot_discharge";
    d.binary(
        "overshoot",
        "Inverter overshoot",
        Some("problem"),
        on_off(&fields, test),
    );
}

/// One device per inverter: what it was last sent, its link and counters,
/// and its own setpoints.
fn inverter(config: &Config, node: &str, system_id: &str, j: usize) -> Vec<Entity> {
    let o = &config.outputs[j];
    let base = &config.mqtt.base_topic;
    let block = json!({
        "identifiers": [format!("{system_id}_inverter_{}", sanitize(&o.can_if))],
        "name": device_name(&o.description, "Inverter", j + 1),
        "model": format!("inverter on {} (virtual BMS)", o.can_if),
        "via_device": system_id,
    });
    let state_topic = format!("{base}/inverter/{}/state", j + 1);
    let mut d = Device::new(config, node, block, format!("inverter_{}_", o.can_if), state_topic);
    d.sensor("i_lim_charge", "Charge current limit", CURRENT);
    d.sensor("i_lim_discharge", "Discharge current limit", CURRENT);
    d.sensor("v_charge_cmd", "Charge voltage", diagnostic(VOLTAGE));
    d.enum_sensor("state", "State", &["ok", "degraded", "safe"], false);
    d.sensor("sync_age_s", "Time since last request", diagnostic(DURATION));
    d.link();
    d.sensor("frames_sent", "Frames sent", diagnostic(COUNTER));
    d.sensor("send_errors", "Send errors", diagnostic(COUNTER));
    d.sensor("interlock_trips", "Interlock trips", diagnostic(COUNTER));
    // INVERTER-TIMEOUT: a problem when the inverter has gone quiet; unknown
    // (null) for an inverter configured never to talk.
    d.binary("silent", "Inverter silent", Some("problem"), flag_template("silent"));
    if config.mqtt.control_activated {
        setpoint_controls(
            &mut d,
            &format!("{base}/inverter/{}/set", j + 1),
            &format!("value_json.inverters[{j}]"),
            (o.share.i_lim_charge, o.share.i_lim_discharge),
        );
    }
    d.out
}

/// For each limit of one scope (the system or an inverter): a number entity
/// to set it, a button to clear it, whether one is active, and when it
/// expires. `path` is where the scope's setpoints are in BASE/setpoints.
fn setpoint_controls(d: &mut Device, set_topic: &str, path: &str, (charge_cap, discharge_cap): (f64, f64)) {
    let setpoints = format!("{}/setpoints", d.config.mqtt.base_topic);
    for (field, what, cap) in [
        ("i_lim_charge", "Charge", charge_cap),
        ("i_lim_discharge", "Discharge", discharge_cap),
    ] {
        let p = format!("{path}.{field}");
        // No active setpoint shows as the cap: "no restriction" ("active"
        // tells the two apart).
        let mut number = json!({
            "command_topic": format!("{set_topic}/{field}"),
            "state_topic": setpoints,
            "value_template": format!("{{{{ {p}.value if {p} else {cap} }}}}"),
            "min": 0,
            "max": cap,
            "step": 0.1,
            "mode": "box",
            "device_class": "current",
            "unit_of_measurement": "A",
        });
        if let Some(ttl) = d.config.mqtt.ha_setpoint_ttl {
            number["command_template"] = super::command::ha_command_template(ttl).into();
        }
        let object = format!("setpoint_{field}");
        d.entity("number", &object, &format!("{what} current setpoint"), number);
        let button = json!({
            "command_topic": format!("{set_topic}/{field}"),
            "payload_press": "clear",
        });
        let lower = what.to_lowercase();
        d.entity(
            "button",
            &format!("{object}_clear"),
            &format!("Clear {lower} current setpoint"),
            button,
        );
        let active = json!({
            "state_topic": setpoints,
            "value_template": format!("{{{{ 'ON' if {p} else 'OFF' }}}}"),
            "payload_on": "ON",
            "payload_off": "OFF",
        });
        d.entity(
            "binary_sensor",
            &format!("{object}_active"),
            &format!("{what} current setpoint active"),
            active,
        );
        let expires = json!({
            "state_topic": setpoints,
            "value_template": format!("{{{{ as_datetime({p}.expires) if {p} and {p}.expires is not none else none }}}}"),
            "device_class": "timestamp",
        });
        d.entity(
            "sensor",
            &format!("{object}_expires"),
            &format!("{what} current setpoint expires"),
            expires,
        );
    }
}

/// The charge-stop SOC command (spec 15): a number entity in % (showing
/// 100 while none is set: no restriction) and a button to clear it.
fn charge_stop_control(d: &mut Device, command_topic: &str) {
    let setpoints = format!("{}/setpoints", d.config.mqtt.base_topic);
    let p = "value_json.system.charge_stop_soc";
    let mut number = json!({
        "command_topic": command_topic,
        "state_topic": setpoints,
        "value_template": format!("{{{{ {p}.value if {p} else 100 }}}}"),
        "min": 0,
        "max": 100,
        "step": 1,
        "mode": "box",
        "unit_of_measurement": "%",
        "icon": "mdi:battery-charging-high",
    });
    if let Some(ttl) = d.config.mqtt.ha_setpoint_ttl {
        number["command_template"] = super::command::ha_command_template(ttl).into();
    }
    d.entity("number", "setpoint_charge_stop_soc", "Charge stop SOC", number);
    let button = json!({"command_topic": command_topic, "payload_press": "clear"});
    d.entity(
        "button",
        "setpoint_charge_stop_soc_clear",
        "Clear charge stop SOC",
        button,
    );
}

/// The object-id prefix of a battery's entities.
fn battery_prefix(input: &InputConfig) -> String {
    format!("battery_{}_", input.can_if)
}

/// What the object ids of a battery's per-cell entities start with, after
/// its prefix.
const CELL_OBJECTS: &str = "cells_";

/// Entry `k` (0-based) of the array `field`, `None` while the array is
/// null or shorter.
fn element_template(field: &str, k: usize) -> String {
    format!(
        "{{{{ value_json.{field}[{k}] if value_json.{field} is not none and value_json.{field} | length > {k} else none }}}}"
    )
}

/// The cell difference always; with HA-CELL-ENTITIES, every cell's voltage
/// and every temperature sensor the battery has reported.
fn cell_sensors(d: &mut Device, cells: Option<CellCount>) {
    d.sensor("cell_v_delta", "Cell voltage difference", VOLTAGE);
    let Some(count) = cells.filter(|_| d.config.mqtt.ha_cell_entities) else {
        return;
    };
    for k in 0..count.cells {
        let mut p = json!({"state_topic": d.state_topic, "value_template": element_template("cells_v", k)});
        add_kind(&mut p, VOLTAGE);
        let n = k + 1;
        d.entity(
            "sensor",
            &format!("{CELL_OBJECTS}v_{n}"),
            &format!("Cell {n} voltage"),
            p,
        );
    }
    for k in 0..count.temperatures {
        let mut p = json!({"state_topic": d.state_topic, "value_template": element_template("cells_t", k)});
        add_kind(&mut p, TEMPERATURE);
        let n = k + 1;
        d.entity(
            "sensor",
            &format!("{CELL_OBJECTS}t_{n}"),
            &format!("Temperature sensor {n}"),
            p,
        );
    }
}

fn battery(
    config: &Config,
    node: &str,
    system_id: &str,
    i: usize,
    bms_name: Option<String>,
    cells: Option<CellCount>,
) -> Vec<Entity> {
    let input = &config.inputs[i];
    let mut block = json!({
        "identifiers": [format!("{system_id}_battery_{}", sanitize(&input.can_if))],
        "name": device_name(&input.description, "Battery", i + 1),
        "model": "Pylontech-protocol BMS",
        "via_device": system_id,
    });
    if let Some(name) = bms_name {
        block["manufacturer"] = name.into();
    }
    let state_topic = format!("{}/battery/{}/state", config.mqtt.base_topic, i + 1);
    let mut d = Device::new(config, node, block, battery_prefix(input), state_topic);
    d.own_availability = Some(battery_availability(&d.state_topic));
    d.value_sensors();
    cell_sensors(&mut d, cells);
    d.enable_binaries();
    d.sensor("share", "Share of the bank's current", SHARE);
    d.binary(
        "over_current",
        "Over current",
        Some("problem"),
        flag_template("over_current"),
    );
    d.gateway_availability_only(|d| {
        d.binary("online", "Online", Some("connectivity"), flag_template("online"));
        d.link();
        d.sensor("invalid", "Invalid frames", diagnostic(COUNTER));
    });
    d.out
}

#[cfg(test)]
mod tests;
