//! `check`'s report of a configuration read: the warnings that do not stop
//! the gateway but that the owner should see, and the effective settings,
//! one per line.

use super::schema::{Config, OutputMode};
use crate::combine::BatterySettings;
use crate::dead_link::RecoverMode;
use crate::policy::{Curve, OnPackForbids, Taper};
use crate::profile::{Profile, SMA_CVL_RANGE, SMA_DVL_RANGE};
use std::time::Duration;

impl Config {
    /// Warnings that do not stop the gateway but that the owner should see.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let total: f64 = self.outputs.iter().map(|o| o.share.i_scaling).sum();
        if total > 1.0 + 1e-9 {
            out.push(format!(
                "the I-SCALING of all [[bmses-out]] sums to {total}: above 1 the inverters together may be allowed more current than the batteries allow"
            ));
        }
        for (n, o) in self.outputs.iter().enumerate() {
            if o.profile == Profile::Victron && o.manufacturer.name().starts_with("PYLON") {
                out.push(format!(
                    "inverter {}: MANUFACTURER {:?} with PROFILE = \"victron\": a Victron GX that sees a name starting with PYLON applies its Pylontech rewrites (replaces CVL, floors CCL at capacity/4); leave MANUFACTURER unset for the profile's \"BMS-GW\"",
                    n + 1,
                    o.manufacturer.name()
                ));
            }
        }
        for (n, _) in self
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.profile == Profile::Sma)
        {
            let ((cvl_lo, cvl_hi), (dvl_lo, dvl_hi)) = (SMA_CVL_RANGE, SMA_DVL_RANGE);
            out.push(format!(
                "inverter {}: PROFILE = \"sma\": CVL is sent within {cvl_lo}-{cvl_hi} V and DVL within {dvl_lo}-{dvl_hi} V, what the Sunny Island accepts (it ignores a value outside and keeps its defaults): a battery value outside is clamped",
                n + 1
            ));
            let v = self.battery.v_discharge_min;
            if !(dvl_lo..=dvl_hi).contains(&v) {
                out.push(format!(
                    "inverter {}: [battery] V-DISCHARGE-MIN = {v} V is outside {dvl_lo}-{dvl_hi} V: the Sunny Island is sent {} V when no battery reports a discharge voltage",
                    n + 1,
                    v.clamp(dvl_lo, dvl_hi)
                ));
            }
        }
        let m = &self.mqtt;
        if m.ha_setpoint_ttl.is_some() && !(m.control_activated && m.ha_discovery) {
            out.push(
                "[mqtt] HA-SETPOINT-TTL has no effect without CONTROL-ACTIVATED = true and HA-DISCOVERY = true (it is the lifetime of setpoints set from Home Assistant)".into(),
            );
        }
        if m.ha_cell_entities && !m.ha_discovery {
            out.push("[mqtt] HA-CELL-ENTITIES has no effect without HA-DISCOVERY = true".into());
        }
        out
    }

    /// The effective settings, one per line, as `check` prints them.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let secs = |d: Duration| d.as_secs_f64();
        let b = &self.battery;
        let _ = writeln!(s, "GATEWAY-ACTIVATED = {}", self.gateway_activated);
        let _ = writeln!(
            s,
            "[battery] I-LIM-CHARGE = {} A, I-LIM-DISCHARGE = {} A",
            b.i_lim_charge, b.i_lim_discharge
        );
        let _ = writeln!(
            s,
            "[battery] I-TOT-SCALING = {}, I-TOT-OFFSET = {} A",
            b.i_tot_scaling, b.i_tot_offset
        );
        let _ = writeln!(
            s,
            "[battery] STALE-TIMEOUT = {} s, ON-INPUT-LOST = \"{}\"",
            secs(b.stale_timeout),
            b.on_input_lost.name()
        );
        let _ = writeln!(
            s,
            "[battery] V-DISCHARGE-MIN = {} V (sent when no fresh battery reports a discharge voltage)",
            b.v_discharge_min
        );
        let _ = writeln!(
            s,
            "[battery] LIMIT-MODE = \"{}\", SHARE-MIN-CURRENT = {} A, OVERCURRENT-MARGIN = {}, OVERSHOOT-TIME = {} s",
            b.bank.mode.as_str(),
            b.bank.share_min_current,
            b.bank.overcurrent_margin,
            secs(b.bank.overshoot_time)
        );
        let _ = writeln!(s, "{}", describe_policy(b));
        for (n, i) in self.inputs.iter().enumerate() {
            let poll = i.poll_interval.map_or("off".to_string(), |p| format!("{} s", secs(p)));
            let link = match &i.serial {
                None => format!("CAN-IF = {}", i.can_if),
                Some(p) => format!(
                    "SERIAL-PORT = {}, ADDRESS = {}, BAUD = {}, PROTOCOL = {}, RS485-MODE = {}",
                    p.port,
                    p.address,
                    p.baud,
                    p.protocol.name(),
                    p.rs485_mode
                ),
            };
            let _ = writeln!(
                s,
                "battery {}: {link}, CAPACITY-AH = {}, POLL-INTERVAL = {poll}, DESCRIPTION = {:?}",
                n + 1,
                i.capacity_ah,
                i.description
            );
        }
        for (n, o) in self.outputs.iter().enumerate() {
            let mode = match o.mode {
                OutputMode::Push => format!("push, PUSH-MIN-DELAY = {} s", secs(o.push_min_delay)),
                OutputMode::Sync { interval } => format!("sync, SYNC-INTERVAL = {} s", secs(interval)),
            };
            let _ = writeln!(
                s,
                "inverter {}: CAN-IF = {}, I-LIM-CHARGE = {} A, I-LIM-DISCHARGE = {} A, I-SCALING = {}, I-OFFSET = {} A, {mode}, MANUFACTURER = {:?}, DESCRIPTION = {:?}",
                n + 1,
                o.can_if,
                o.share.i_lim_charge,
                o.share.i_lim_discharge,
                o.share.i_scaling,
                o.share.i_offset,
                o.manufacturer.name(),
                o.description
            );
            let timeout = o
                .inverter_timeout
                .map_or("0 (never talks)".to_string(), |t| format!("{} s", secs(t)));
            let _ = writeln!(
                s,
                "inverter {}: PROFILE = {}, SOC-MIN = {} %, SOC-MAX = {} %, CVL-RAMP = {} V/s, INVERTER-TIMEOUT = {timeout}, VOLTAGE-UNIT = {} V",
                n + 1,
                o.profile.name(),
                o.soc_window.min,
                o.soc_window.max,
                o.cvl_ramp,
                o.voltage_unit.volts()
            );
        }
        let m = &self.mqtt;
        if m.activated {
            let _ = writeln!(
                s,
                "[mqtt] BROKER = {}:{}, TLS = {}, USERNAME = {}",
                m.broker,
                m.port,
                m.tls.is_some(),
                m.username.as_deref().unwrap_or("(none)")
            );
            let _ = writeln!(
                s,
                "[mqtt] TOPIC = {}, BASE-TOPIC = {}, INTERVAL = {} s",
                m.topic,
                m.base_topic,
                secs(m.interval)
            );
            let _ = writeln!(
                s,
                "[mqtt] HA-DISCOVERY = {} ({}), HA-CELL-ENTITIES = {}, CONTROL-ACTIVATED = {}, SETPOINT-TTL = {}, HA-SETPOINT-TTL = {}",
                m.ha_discovery,
                m.ha_discovery_prefix,
                m.ha_cell_entities,
                m.control_activated,
                m.setpoint_ttl.map_or("none".to_string(), |t| format!("{} s", secs(t))),
                m.ha_setpoint_ttl
                    .map_or("SETPOINT-TTL".to_string(), |t| format!("{} s", secs(t)))
            );
        } else {
            let _ = writeln!(s, "[mqtt] ACTIVATED = false");
        }
        if self.http.activated {
            let _ = writeln!(s, "[http] LISTEN = {}", self.http.listen);
        } else {
            let _ = writeln!(s, "[http] ACTIVATED = false");
        }
        let state_dir = self.state_dir.as_ref().map_or(
            "default ($STATE_DIRECTORY, else ~/.bms_gateway/state)".to_string(),
            |d| d.display().to_string(),
        );
        let _ = writeln!(s, "STATE-DIR = {state_dir}");
        let r = self.recorder;
        if r.seconds == 0 {
            let _ = writeln!(s, "[recorder] off (SECONDS = 0)");
        } else {
            let _ = writeln!(
                s,
                "[recorder] the last {} s of CAN traffic, dumped to STATE-DIR/recordings, at most {} files kept",
                r.seconds, r.keep
            );
        }
        let can = self.can;
        let _ = writeln!(
            s,
            "[can] RECOVER = \"{}\", RECOVER-AFTER = {} s ({})",
            can.mode.name(),
            secs(can.after),
            match can.mode {
                RecoverMode::Off => "a dead interface is reported with the command that fixes it",
                RecoverMode::Bounce => {
                    "a dead interface is taken down and up, with back-off (directly with CAP_NET_ADMIN, else by bms-gateway-link-helper.socket)"
                }
            }
        );
        s
    }
}

/// The effective bank policy (spec 15), as `check` prints it: one line per
/// rule, "off" for a rule that is not configured.
fn describe_policy(b: &BatterySettings) -> String {
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
        format!("[battery] ON-PACK-FORBIDS = {forbids}"),
        format!(
            "[battery] TEMPERATURE-DERATING-CHARGE = {}, TEMPERATURE-DERATING-DISCHARGE = {}",
            curve(&p.derating.charge),
            curve(&p.derating.discharge)
        ),
        format!("[battery] CHARGE-STOP-SOC / CHARGE-RESUME-SOC = {stop}"),
        format!(
            "[battery] SOFT-LANDING-CHARGE = {}, SOFT-LANDING-DISCHARGE = {}",
            taper(&p.soft_landing.charge),
            taper(&p.soft_landing.discharge)
        ),
        format!("[battery] SOC-MODE = \"{}\"", p.soc_mode.name()),
    ]
    .join("\n")
}
