//! `check`'s report of a configuration read: the warnings that do not stop
//! the gateway but that the owner should see, and the effective settings,
//! one per line. Keys are named through the key table (`keys`), one section
//! per function, so that the report spells them as the reader reads them.

use super::keys::{self, battery, bmses_out};
use super::schema::{Config, HttpConfig, InputConfig, MqttConfig, OutputConfig, OutputMode, RecorderConfig};
use crate::combine::BatterySettings;
use crate::dead_link::{RecoverMode, RecoverySettings};
use crate::policy::{Curve, OnPackForbids, Taper};
use crate::profile::{Profile, SMA_CVL_RANGE, SMA_DVL_RANGE};
use std::time::Duration;

impl Config {
    /// Warnings that do not stop the gateway but that the owner should see.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = scaling_warning(&self.outputs);
        let numbered = || self.outputs.iter().enumerate().map(|(n, o)| (n + 1, o));
        out.extend(numbered().filter_map(|(n, o)| victron_warning(n, o)));
        for (n, _) in numbered().filter(|(_, o)| o.profile == Profile::Sma) {
            out.extend(sma_warnings(n, self.battery.v_discharge_min));
        }
        out.extend(mqtt_warnings(&self.mqtt));
        out
    }

    /// The effective settings, one per line, as `check` prints them.
    pub fn describe(&self) -> String {
        let mut lines = vec![format!("{} = {}", keys::top::GATEWAY_ACTIVATED, self.gateway_activated)];
        lines.extend(describe_battery(&self.battery));
        lines.extend(describe_policy(&self.battery));
        for (n, i) in self.inputs.iter().enumerate() {
            lines.push(describe_input(n + 1, i));
        }
        for (n, o) in self.outputs.iter().enumerate() {
            lines.extend(describe_output(n + 1, o));
        }
        lines.extend(describe_mqtt(&self.mqtt));
        lines.push(describe_http(&self.http));
        let state_dir = self.state_dir.as_ref().map_or(
            "default ($STATE_DIRECTORY, else ~/.bms_gateway/state)".to_string(),
            |d| d.display().to_string(),
        );
        lines.push(format!("{} = {state_dir}", keys::top::STATE_DIR));
        lines.push(describe_recorder(self.recorder));
        lines.push(describe_can(self.can));
        lines.iter().map(|line| format!("{line}\n")).collect()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The inverters' shares summed above 1.
fn scaling_warning(outputs: &[OutputConfig]) -> Vec<String> {
    use bmses_out::{I_SCALING, NAME};
    let total: f64 = outputs.iter().map(|o| o.share.i_scaling).sum();
    let mut out = Vec::new();
    if total > 1.0 + 1e-9 {
        out.push(format!(
            "the {I_SCALING} of all [[{NAME}]] sums to {total}: above 1 the inverters together may be allowed more current than the batteries allow"
        ));
    }
    out
}

/// Inverter `n` sending a PYLON name to a Victron GX.
fn victron_warning(n: usize, o: &OutputConfig) -> Option<String> {
    use bmses_out::{MANUFACTURER, PROFILE};
    let pylon = o.profile == Profile::Victron && o.manufacturer.name().starts_with("PYLON");
    pylon.then(|| {
        format!(
            "inverter {n}: {MANUFACTURER} {:?} with {PROFILE} = \"victron\": a Victron GX that sees a name starting with PYLON applies its Pylontech rewrites (replaces CVL, floors CCL at capacity/4); leave {MANUFACTURER} unset for the profile's \"BMS-GW\"",
            o.manufacturer.name()
        )
    })
}

/// Inverter `n`, a Sunny Island: the ranges its voltages are clamped to,
/// and the battery's discharge floor if it is outside.
fn sma_warnings(n: usize, v_discharge_min: f64) -> Vec<String> {
    let ((cvl_lo, cvl_hi), (dvl_lo, dvl_hi)) = (SMA_CVL_RANGE, SMA_DVL_RANGE);
    let mut out = vec![format!(
        "inverter {n}: {} = \"sma\": CVL is sent within {cvl_lo}-{cvl_hi} V and DVL within {dvl_lo}-{dvl_hi} V, what the Sunny Island accepts (it ignores a value outside and keeps its defaults): a battery value outside is clamped",
        bmses_out::PROFILE
    )];
    let v = v_discharge_min;
    if !(dvl_lo..=dvl_hi).contains(&v) {
        out.push(format!(
            "inverter {n}: [{}] {} = {v} V is outside {dvl_lo}-{dvl_hi} V: the Sunny Island is sent {} V when no battery reports a discharge voltage",
            battery::NAME,
            battery::V_DISCHARGE_MIN,
            v.clamp(dvl_lo, dvl_hi)
        ));
    }
    out
}

/// `[mqtt]` keys that have no effect without others.
fn mqtt_warnings(m: &MqttConfig) -> Vec<String> {
    use keys::mqtt::*;
    let mut out = Vec::new();
    if m.ha_setpoint_ttl.is_some() && !(m.control_activated && m.ha_discovery) {
        out.push(format!(
            "[{NAME}] {HA_SETPOINT_TTL} has no effect without {CONTROL_ACTIVATED} = true and {HA_DISCOVERY} = true (it is the lifetime of setpoints set from Home Assistant)"
        ));
    }
    if m.ha_cell_entities && !m.ha_discovery {
        out.push(format!(
            "[{NAME}] {HA_CELL_ENTITIES} has no effect without {HA_DISCOVERY} = true"
        ));
    }
    out
}

/// `[battery]`'s limits, scaling, staleness and bank rules.
fn describe_battery(b: &BatterySettings) -> [String; 5] {
    use battery::*;
    [
        format!(
            "[{NAME}] {I_LIM_CHARGE} = {} A, {I_LIM_DISCHARGE} = {} A",
            b.i_lim_charge, b.i_lim_discharge
        ),
        format!(
            "[{NAME}] {I_TOT_SCALING} = {}, {I_TOT_OFFSET} = {} A",
            b.i_tot_scaling, b.i_tot_offset
        ),
        format!(
            "[{NAME}] {STALE_TIMEOUT} = {} s, {ON_INPUT_LOST} = \"{}\"",
            secs(b.stale_timeout),
            b.on_input_lost.name()
        ),
        format!(
            "[{NAME}] {V_DISCHARGE_MIN} = {} V (sent when no fresh battery reports a discharge voltage)",
            b.v_discharge_min
        ),
        format!(
            "[{NAME}] {LIMIT_MODE} = \"{}\", {SHARE_MIN_CURRENT} = {} A, {OVERCURRENT_MARGIN} = {}, {OVERSHOOT_TIME} = {} s",
            b.bank.mode.as_str(),
            b.bank.share_min_current,
            b.bank.overcurrent_margin,
            secs(b.bank.overshoot_time)
        ),
    ]
}

/// The effective bank policy (spec 15), as `check` prints it: one line per
/// rule, "off" for a rule that is not configured.
fn describe_policy(b: &BatterySettings) -> [String; 5] {
    use battery::*;
    let p = &b.policy;
    let forbids = match (b.bank.on_pack_forbids, b.continues_without_forbidding_pack()) {
        (OnPackForbids::Continue, true) => "\"continue\" (the other packs go on; share 0 for the one that forbids)",
        _ => "\"stop\" (a pack that forbids a direction stops it for the bank)",
    };
    let curve = |c: &Option<Curve>| {
        c.map_or("off".to_string(), |c| {
            let points: Vec<String> = c.points().iter().map(|(t, k)| format!("[{t}, {k}]")).collect();
            format!("[{}]", points.join(", "))
        })
    };
    let stop = p.charge_stop.map_or("off".to_string(), |c| {
        format!("stop at {} %, resume below {} %", c.stop, c.resume)
    });
    let taper = |t: &Option<Taper>| t.map_or("off".to_string(), |t| format!("[{}, {}] %", t.from, t.to));
    [
        format!("[{NAME}] {ON_PACK_FORBIDS} = {forbids}"),
        format!(
            "[{NAME}] {TEMPERATURE_DERATING_CHARGE} = {}, {TEMPERATURE_DERATING_DISCHARGE} = {}",
            curve(&p.derating.charge),
            curve(&p.derating.discharge)
        ),
        format!("[{NAME}] {CHARGE_STOP_SOC} / {CHARGE_RESUME_SOC} = {stop}"),
        format!(
            "[{NAME}] {SOFT_LANDING_CHARGE} = {}, {SOFT_LANDING_DISCHARGE} = {}",
            taper(&p.soft_landing.charge),
            taper(&p.soft_landing.discharge)
        ),
        format!("[{NAME}] {SOC_MODE} = \"{}\"", p.soc_mode.name()),
    ]
}

/// Battery `n` (`[[bmses-in]]`), on CAN or on a serial port.
fn describe_input(n: usize, i: &InputConfig) -> String {
    use keys::bmses_in::*;
    let poll = i.poll_interval.map_or("off".to_string(), |p| format!("{} s", secs(p)));
    let link = match &i.serial {
        None => format!("{CAN_IF} = {}", i.can_if),
        Some(p) => format!(
            "{SERIAL_PORT} = {}, {ADDRESS} = {}, {BAUD} = {}, {PROTOCOL} = {}, {RS485_MODE} = {}",
            p.port,
            p.address,
            p.baud,
            p.protocol.name(),
            p.rs485_mode
        ),
    };
    format!(
        "battery {n}: {link}, {CAPACITY_AH} = {}, {POLL_INTERVAL} = {poll}, {DESCRIPTION} = {:?}",
        i.capacity_ah, i.description
    )
}

/// Inverter `n` (`[[bmses-out]]`): its share and mode, then its dialect.
fn describe_output(n: usize, o: &OutputConfig) -> [String; 2] {
    use bmses_out::*;
    let mode = match o.mode {
        OutputMode::Push => format!("push, {PUSH_MIN_DELAY} = {} s", secs(o.push_min_delay)),
        OutputMode::Sync { interval } => format!("sync, {SYNC_INTERVAL} = {} s", secs(interval)),
    };
    let timeout = o
        .inverter_timeout
        .map_or("0 (never talks)".to_string(), |t| format!("{} s", secs(t)));
    [
        format!(
            "inverter {n}: {CAN_IF} = {}, {I_LIM_CHARGE} = {} A, {I_LIM_DISCHARGE} = {} A, {I_SCALING} = {}, {I_OFFSET} = {} A, {mode}, {MANUFACTURER} = {:?}, {DESCRIPTION} = {:?}",
            o.can_if,
            o.share.i_lim_charge,
            o.share.i_lim_discharge,
            o.share.i_scaling,
            o.share.i_offset,
            o.manufacturer.name(),
            o.description
        ),
        format!(
            "inverter {n}: {PROFILE} = {}, {SOC_MIN} = {} %, {SOC_MAX} = {} %, {CVL_RAMP} = {} V/s, {INVERTER_TIMEOUT} = {timeout}, {VOLTAGE_UNIT} = {} V",
            o.profile.name(),
            o.soc_window.min,
            o.soc_window.max,
            o.cvl_ramp,
            o.voltage_unit.volts()
        ),
    ]
}

/// `[mqtt]`: the broker, the topics, Home Assistant and control; one line
/// when it is off.
fn describe_mqtt(m: &MqttConfig) -> Vec<String> {
    use keys::mqtt::*;
    if !m.activated {
        return vec![format!("[{NAME}] {ACTIVATED} = false")];
    }
    vec![
        format!(
            "[{NAME}] {BROKER} = {}:{}, {TLS} = {}, {USERNAME} = {}",
            m.broker,
            m.port,
            m.tls.is_some(),
            m.username.as_deref().unwrap_or("(none)")
        ),
        format!(
            "[{NAME}] {TOPIC} = {}, {BASE_TOPIC} = {}, {INTERVAL} = {} s",
            m.topic,
            m.base_topic,
            secs(m.interval)
        ),
        format!(
            "[{NAME}] {HA_DISCOVERY} = {} ({}), {HA_CELL_ENTITIES} = {}, {CONTROL_ACTIVATED} = {}, {SETPOINT_TTL} = {}, {HA_SETPOINT_TTL} = {}",
            m.ha_discovery,
            m.ha_discovery_prefix,
            m.ha_cell_entities,
            m.control_activated,
            m.setpoint_ttl.map_or("none".to_string(), |t| format!("{} s", secs(t))),
            m.ha_setpoint_ttl
                .map_or(SETPOINT_TTL.to_string(), |t| format!("{} s", secs(t)))
        ),
    ]
}

/// `[http]`: where the status server listens, or that it is off.
fn describe_http(h: &HttpConfig) -> String {
    use keys::http::*;
    if h.activated {
        format!("[{NAME}] {LISTEN} = {}", h.listen)
    } else {
        format!("[{NAME}] {ACTIVATED} = false")
    }
}

/// `[recorder]`: how far back it reaches and how many files it keeps.
fn describe_recorder(r: RecorderConfig) -> String {
    use keys::recorder::*;
    if r.seconds == 0 {
        return format!("[{NAME}] off ({SECONDS} = 0)");
    }
    format!(
        "[{NAME}] the last {} s of CAN traffic, dumped to {}/recordings, at most {} files kept",
        r.seconds,
        keys::top::STATE_DIR,
        r.keep
    )
}

/// `[can]`: what is done about a dead interface.
fn describe_can(can: RecoverySettings) -> String {
    use keys::can::*;
    let what = match can.mode {
        RecoverMode::Off => "a dead interface is reported with the command that fixes it",
        RecoverMode::Bounce => {
            "a dead interface is taken down and up, with back-off (directly with CAP_NET_ADMIN, else by bms-gateway-link-helper.socket)"
        }
    };
    format!(
        "[{NAME}] {RECOVER} = \"{}\", {RECOVER_AFTER} = {} s ({what})",
        can.mode.name(),
        secs(can.after)
    )
}
