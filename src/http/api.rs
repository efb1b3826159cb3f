//! What the status server answers, without the socket: the route of a
//! request and the body of each answer. Pure: the snapshot, the events and
//! the time are passed in.
//!
//! `/api/state` uses the MQTT payloads as they are (the same field names):
//! `{"system": TOPIC's payload, "batteries": [BASE/battery/N/state...],
//! "inverters": [BASE/inverter/N/state...], "setpoints": BASE/setpoints,
//! "events": the last [`STATE_EVENTS`] events, oldest first}`.

use crate::clock::Clock;
use crate::config::Config;
use crate::events::Event;
use crate::status::Snapshot;
use crate::telemetry;
use serde::Serialize;

/// The status page: HTML, CSS and JavaScript in one file, no external assets.
pub const PAGE: &str = include_str!("page.html");

/// How many of the last events `/api/state` carries (all kept ones are on
/// `/api/events`).
pub const STATE_EVENTS: usize = 20;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Page,
    State,
    Events,
    Metrics,
    /// `/api/history[?since=UNIX][&step=S]` (docs/history.md).
    History {
        since: Option<i64>,
        step: Option<i64>,
    },
    /// POST /api/record: write a flight recording now (docs/recorder.md).
    Record,
}

/// A request refused, with its status code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

/// The route of `method path` and whether only the headers are wanted
/// (HEAD). The query string is ignored but for `/api/history`'s, which
/// must be valid (400 otherwise).
pub fn route(method: &str, target: &str) -> Result<(Route, bool), Refusal> {
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("POST", "/api/record") => return Ok((Route::Record, false)),
        (_, "/api/record") => {
            return Err(Refusal {
                status: 405,
                reason: format!("method {method} not allowed: /api/record takes POST (bms-gateway record)"),
            });
        }
        _ => {}
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Err(Refusal {
                status: 405,
                reason: format!(
                    "method {method} not allowed: this server is read-only (GET and HEAD only; POST /api/record asks for a flight recording)"
                ),
            });
        }
    };
    let route = match path {
        "/" | "/index.html" => Route::Page,
        "/api/state" => Route::State,
        "/api/events" => Route::Events,
        "/metrics" => Route::Metrics,
        "/api/history" => {
            let (since, step) = crate::history::parse_query(query).map_err(|reason| Refusal { status: 400, reason })?;
            Route::History { since, step }
        }
        _ => {
            return Err(Refusal {
                status: 404,
                reason: "not found: try /, /api/state, /api/events, /api/history or /metrics".into(),
            });
        }
    };
    Ok((route, head))
}

/// Everything an answer is made from.
pub struct View<'a> {
    pub config: &'a Config,
    pub snapshot: &'a Snapshot,
    /// Every kept event, oldest first.
    pub events: &'a [Event],
    pub clock: Clock,
}

#[derive(Serialize)]
struct State<'a> {
    system: telemetry::SystemPayload,
    batteries: Vec<telemetry::BatteryPayload>,
    inverters: Vec<telemetry::InverterPayload>,
    setpoints: serde_json::Value,
    events: &'a [Event],
}

impl View<'_> {
    /// The MQTT payloads of every battery.
    pub fn batteries(&self) -> Vec<telemetry::BatteryPayload> {
        let n = self.config.inputs.len().min(self.snapshot.inputs.len());
        let system = &self.snapshot.system;
        let discharging = system.combined.is_some_and(|c| c.battery.i_total < 0.0);
        (0..n)
            .map(|i| {
                let online = system.inputs_fresh.get(i).copied().unwrap_or(false);
                let pack = system.packs.get(i);
                telemetry::battery_state(
                    self.config,
                    i,
                    &self.snapshot.inputs[i],
                    online,
                    pack,
                    discharging,
                    &self.clock,
                )
            })
            .collect()
    }

    /// The MQTT payloads of every inverter.
    pub fn inverters(&self) -> Vec<telemetry::InverterPayload> {
        let n = self.config.outputs.len().min(self.snapshot.outputs.len());
        (0..n)
            .map(|j| telemetry::inverter_state(self.config, j, &self.snapshot.outputs[j], &self.clock))
            .collect()
    }

    pub fn system(&self) -> telemetry::SystemPayload {
        telemetry::system_state(self.snapshot, &self.clock)
    }

    /// `/api/state`.
    pub fn state_json(&self) -> String {
        let system = &self.snapshot.system;
        let recent = &self.events[self.events.len().saturating_sub(STATE_EVENTS)..];
        let state = State {
            system: self.system(),
            batteries: self.batteries(),
            inverters: self.inverters(),
            setpoints: telemetry::setpoints(&system.setpoints, &system.inverter_setpoints, &self.clock),
            events: recent,
        };
        serde_json::to_string(&state).expect("state serializes")
    }

    /// `/api/events`: every kept event, oldest first.
    pub fn events_json(&self) -> String {
        serde_json::to_string(self.events).expect("events serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/"), Ok((Route::Page, false)));
        assert_eq!(route("HEAD", "/api/state?x=1"), Ok((Route::State, true)));
        assert_eq!(route("GET", "/api/events"), Ok((Route::Events, false)));
        assert_eq!(route("GET", "/metrics"), Ok((Route::Metrics, false)));
        let history = |since, step| Ok((Route::History { since, step }, false));
        assert_eq!(route("GET", "/api/history"), history(None, None));
        assert_eq!(
            route("GET", "/api/history?since=1764000000"),
            history(Some(1_764_000_000), None)
        );
        assert_eq!(route("GET", "/api/history?step=60#x"), history(None, Some(60)));
        for bad in ["since=x", "since=-1", "since=18446744073709551616", "step=7"] {
            assert_eq!(
                route("GET", &format!("/api/history?{bad}")).unwrap_err().status,
                400,
                "{bad}"
            );
        }
        assert_eq!(route("GET", "/etc/passwd").unwrap_err().status, 404);
        assert_eq!(route("GET", "/api/state/").unwrap_err().status, 404);
        for m in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
            assert_eq!(route(m, "/").unwrap_err().status, 405, "{m}");
        }
        assert_eq!(route("POST", "/api/record?x"), Ok((Route::Record, false)));
        for m in ["GET", "HEAD", "PUT"] {
            assert_eq!(route(m, "/api/record").unwrap_err().status, 405, "{m}");
        }
    }

    #[test]
    fn the_page_is_self_contained() {
        // No external assets: nothing loaded from another origin.
        for needle in ["src=\"http", "href=\"http", "//cdn", "@import", "url(http"] {
            assert!(!PAGE.contains(needle), "{needle}");
        }
        assert!(PAGE.contains("/api/state"));
        assert!(PAGE.contains("/api/history"), "the charts' data");
        assert!(PAGE.contains("name=\"viewport\""), "readable on a phone");
    }
}
