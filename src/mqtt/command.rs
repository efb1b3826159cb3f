//! Remote setpoint commands: which topic means what, payload validation and
//! clamping, and the result message every command is answered with.
//!
//! Pure: the current time is passed in, nothing is sent from here. The MQTT
//! thread hands the accepted [`SetpointCommand`] to the combiner and
//! publishes [`result_json`] on BASE/set/result.
//!
//! Safety rules (docs/mqtt.md): a setpoint only ever lowers a limit (the
//! combiner takes the minimum); here it is clamped to 0..the configured cap;
//! anything that is not a finite number >= 0 is refused and changes nothing;
//! retained command messages are refused (a setpoint left retained on the
//! broker last week must not apply on the next reconnect); nothing is
//! accepted unless CONTROL-ACTIVATED.

use crate::config::Config;
use crate::setpoint::{Dropped, LimitKind, MAX_TTL, Scope, Setpoint, SetpointCommand};
use std::time::{Duration, Instant};

/// Longest payload looked at; longer ones are refused unread.
pub const MAX_PAYLOAD: usize = 64;

/// The highest charge-stop SOC (%) a command is clamped to.
pub const MAX_SOC: f64 = 100.0;

/// The charge and discharge caps (A) of one scope.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Caps {
    pub charge: f64,
    pub discharge: f64,
}

impl Caps {
    pub fn get(&self, kind: LimitKind) -> f64 {
        match kind {
            LimitKind::Charge => self.charge,
            LimitKind::Discharge => self.discharge,
        }
    }
}

/// Everything needed to judge a command, taken from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// BASE-TOPIC.
    pub base: String,
    /// CONTROL-ACTIVATED.
    pub control_activated: bool,
    /// `[battery]` caps.
    pub system: Caps,
    /// Each `[[bmses-out]]`'s caps, in config order.
    pub inverters: Vec<Caps>,
    /// SETPOINT-TTL; `None`: until changed.
    pub default_ttl: Option<Duration>,
}

impl Rules {
    pub fn from_config(config: &Config) -> Rules {
        Rules {
            base: config.mqtt.base_topic.clone(),
            control_activated: config.mqtt.control_activated,
            system: Caps {
                charge: config.battery.i_lim_charge,
                discharge: config.battery.i_lim_discharge,
            },
            inverters: config
                .outputs
                .iter()
                .map(|o| Caps {
                    charge: o.share.i_lim_charge,
                    discharge: o.share.i_lim_discharge,
                })
                .collect(),
            default_ttl: config.mqtt.setpoint_ttl,
        }
    }

    /// The subscriptions that receive every command (and, harmlessly, our
    /// own BASE/set/result, which [`route`] ignores).
    pub fn subscriptions(&self) -> [String; 2] {
        [
            format!("{}/set/+", self.base),
            format!("{}/inverter/+/set/+", self.base),
        ]
    }

    pub fn result_topic(&self) -> String {
        format!("{}/set/result", self.base)
    }

    /// The highest value a setpoint of `scope` and `kind` is clamped to.
    fn cap(&self, scope: Scope, kind: LimitKind) -> f64 {
        match scope {
            Scope::System => self.system.get(kind),
            Scope::Inverter(j) => self.inverters[j].get(kind),
            Scope::ChargeStop => MAX_SOC,
        }
    }
}

/// What a topic means.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Not a command (our own result topic, or anything else): no answer.
    NotACommand,
    /// A command for this setpoint.
    Setpoint(Scope, LimitKind),
    /// Looks like a command but names no setpoint: answered with this error.
    Invalid(String),
}

/// Which setpoint a topic addresses.
pub fn route(rules: &Rules, topic: &str) -> Route {
    let Some(rest) = topic.strip_prefix(&rules.base).and_then(|r| r.strip_prefix('/')) else {
        return Route::NotACommand;
    };
    let levels: Vec<&str> = rest.split('/').collect();
    match levels.as_slice() {
        ["set", "result"] => Route::NotACommand,
        ["set", "charge_stop_soc"] => Route::Setpoint(Scope::ChargeStop, LimitKind::Charge),
        ["set", name] => match kind(name) {
            Ok(k) => Route::Setpoint(Scope::System, k),
            Err(e) => Route::Invalid(e),
        },
        ["inverter", n, "set", name] => {
            let count = rules.inverters.len();
            let index = match n.parse::<usize>() {
                Ok(n) if (1..=count).contains(&n) => n - 1,
                _ => return Route::Invalid(format!("no inverter {n:?}: inverters are numbered 1 to {count}")),
            };
            match kind(name) {
                Ok(k) => Route::Setpoint(Scope::Inverter(index), k),
                Err(e) => Route::Invalid(e),
            }
        }
        _ => Route::NotACommand,
    }
}

fn kind(name: &str) -> Result<LimitKind, String> {
    match name {
        "i_lim_charge" => Ok(LimitKind::Charge),
        "i_lim_discharge" => Ok(LimitKind::Discharge),
        "charge_stop_soc" => Err("charge_stop_soc is set for the whole bank only: BASE/set/charge_stop_soc".into()),
        _ => Err(format!(
            "unknown setpoint {name:?}: use i_lim_charge, i_lim_discharge or (for the bank) charge_stop_soc"
        )),
    }
}

/// A payload as the user meant it, before clamping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Request {
    Clear,
    Set {
        /// A, finite and >= 0.
        value: f64,
        /// `None`: SETPOINT-TTL; `Some(0)`: no expiry.
        ttl: Option<Duration>,
    },
}

const USAGE: &str = "send a number (amperes; % for charge_stop_soc), {\"value\": number, \"ttl\": seconds}, or clear";

/// Validates a payload: a bare number, `{"value": A, "ttl": s}`, or empty
/// or `clear` to clear.
pub fn parse_payload(payload: &[u8]) -> Result<Request, String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!("payload longer than {MAX_PAYLOAD} bytes"));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| format!("payload is not text: {USAGE}"))?
        .trim();
    if text.is_empty() || text.eq_ignore_ascii_case("clear") {
        return Ok(Request::Clear);
    }
    if text.starts_with('{') {
        return parse_json(text);
    }
    // Rust's float syntax also takes "NaN", "inf" and "1e999" (= inf): the
    // finiteness check below refuses those.
    let value = text
        .parse::<f64>()
        .map_err(|_| format!("{text:?} is not a number: {USAGE}"))?;
    Ok(Request::Set {
        value: check_value(value)?,
        ttl: None,
    })
}

fn parse_json(text: &str) -> Result<Request, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON ({e}): {USAGE}"))?;
    let object = json.as_object().ok_or_else(|| format!("not a JSON object: {USAGE}"))?;
    if let Some(key) = object.keys().find(|k| *k != "value" && *k != "ttl") {
        return Err(format!("unknown key {key:?}: only \"value\" and \"ttl\" are allowed"));
    }
    let value = match object.get("value") {
        None => return Err("\"value\" is missing".into()),
        Some(v) => v.as_f64().ok_or("\"value\" must be a number")?,
    };
    let ttl = match object.get("ttl") {
        None => None,
        Some(t) => {
            let secs = t.as_f64().ok_or("\"ttl\" must be a number of seconds")?;
            if !(secs >= 0.0 && secs <= MAX_TTL.as_secs_f64()) {
                return Err(format!("\"ttl\" must be from 0 to {} seconds", MAX_TTL.as_secs()));
            }
            let ttl = Duration::from_secs_f64(secs);
            // 0 means "until changed": a positive TTL must not become that.
            if secs > 0.0 && ttl.is_zero() {
                return Err(format!(
                    "\"ttl\" {secs} s is too short to count (under 1 ns): send 0 for no expiry or at least 0.000000001 s"
                ));
            }
            Some(ttl)
        }
    };
    Ok(Request::Set {
        value: check_value(value)?,
        ttl,
    })
}

fn check_value(value: f64) -> Result<f64, String> {
    if !value.is_finite() {
        return Err("the value must be a finite number".into());
    }
    if value < 0.0 {
        return Err(format!("the value must not be negative (got {value})"));
    }
    // -0.0 passes the check above: make it a plain 0.
    Ok(value + 0.0)
}

/// The Home Assistant `command_template` of the number entities with
/// HA-SETPOINT-TTL: HA renders `{{ value }}` as the number set, giving
/// `{"value": 42.5, "ttl": 900}`, which [`parse_payload`] takes as that
/// value for that many seconds. Whole seconds are written without a
/// fraction; the result is far below [`MAX_PAYLOAD`].
pub fn ha_command_template(ttl: Duration) -> String {
    format!("{{\"value\": {{{{ value }}}}, \"ttl\": {}}}", ttl.as_secs_f64())
}

/// An accepted command with what the answer should tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accepted {
    pub command: SetpointCommand,
    /// The value asked for, before clamping (`None` for a clear).
    pub requested: Option<f64>,
    /// The lifetime applied; `None`: no expiry.
    pub ttl: Option<Duration>,
}

/// Judges one incoming message. `None`: not a command, no answer.
/// `Some(Err(reason))`: refused, answer with the reason, change nothing.
pub fn decide(
    rules: &Rules,
    topic: &str,
    payload: &[u8],
    retained: bool,
    now: Instant,
) -> Option<Result<Accepted, String>> {
    let (scope, kind) = match route(rules, topic) {
        Route::NotACommand => return None,
        Route::Invalid(e) => return Some(Err(e)),
        Route::Setpoint(scope, kind) => (scope, kind),
    };
    if !rules.control_activated {
        return Some(Err(
            "control is not activated (set CONTROL-ACTIVATED = true in [mqtt])".into()
        ));
    }
    if retained {
        return Some(Err(
            "retained command ignored: setpoints are taken only from live messages, publish without the retain flag"
                .into(),
        ));
    }
    Some(parse_payload(payload).map(|request| accept(rules, scope, kind, request, now)))
}

fn accept(rules: &Rules, scope: Scope, kind: LimitKind, request: Request, now: Instant) -> Accepted {
    let (setpoint, requested, ttl) = match request {
        Request::Clear => (None, None, None),
        Request::Set { value, ttl } => {
            let cap = rules.cap(scope, kind);
            let ttl = ttl.or(rules.default_ttl).filter(|t| !t.is_zero());
            let setpoint = Setpoint {
                value: value.min(cap),
                // MAX_TTL keeps this far from overflow; if it ever did
                // overflow, "never" is the nearest honest answer.
                expires: ttl.and_then(|t| now.checked_add(t)),
            };
            (Some(setpoint), Some(value), ttl)
        }
    };
    Accepted {
        command: SetpointCommand { scope, kind, setpoint },
        requested,
        ttl,
    }
}

/// The answer on BASE/set/result: `{"topic", "ok": true, "value", ...}` or
/// `{"topic", "ok": false, "error"}`. `value` is the clamped value, null for
/// a clear.
pub fn result_json(topic: &str, outcome: &Result<Accepted, String>) -> String {
    let json = match outcome {
        Ok(a) => {
            let value = a.command.setpoint.map(|s| s.value);
            serde_json::json!({
                "topic": topic,
                "ok": true,
                "value": value,
                "cleared": a.command.setpoint.is_none(),
                "clamped": matches!((a.requested, value), (Some(r), Some(v)) if r != v),
                "ttl_s": a.ttl.map(|t| t.as_secs_f64()),
            })
        }
        Err(e) => serde_json::json!({"topic": topic, "ok": false, "error": e}),
    };
    json.to_string()
}

/// The BASE/set/result payload saying that a reload dropped a per-inverter
/// setpoint because its inverter (`can_if`) is no longer configured. The
/// topic is the one the setpoint was set on.
pub fn dropped_json(base: &str, dropped: &Dropped, can_if: &str) -> String {
    let n = dropped.inverter + 1;
    let topic = format!("{base}/inverter/{n}/set/{}", dropped.kind.field());
    let error = format!(
        "setpoint of {} A dropped on reload: inverter {n} ({can_if}) is no longer in the configuration",
        dropped.setpoint.value
    );
    serde_json::json!({"topic": topic, "ok": false, "error": error}).to_string()
}

#[cfg(test)]
mod tests;
