//! `bms-gateway status [--url URL]`: the running gateway's state as a table
//! in the terminal, read from its status server's `/api/state`; and
//! `bms-gateway record [--url URL]`, which asks it for a flight recording.
//!
//! [`table`] is pure (JSON in, text out); [`fetch`] is a plain HTTP/1.1 GET
//! of the one answer our own server gives (Content-Length, then close).

use crate::text_table::{Align, Table, number};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long `status` waits for the gateway.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// `http://HOST:PORT[/...]` split into the address and the base path.
fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs, e.g. http://127.0.0.1:8080/"))?;
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let host = if host.contains(':') && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let base = path.trim_end_matches('/');
    Ok((
        host,
        if base.is_empty() {
            String::new()
        } else {
            format!("/{base}")
        },
    ))
}

/// GET `URL/api/state`; the body, or what went wrong, said for a person.
pub fn fetch(url: &str) -> Result<String, String> {
    let (status, body) = exchange(url, "GET /api/state", "", TIMEOUT)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("{url}api/state answered {status:?}: is this a bms-gateway?"));
    }
    Ok(body)
}

/// How long `record` waits: the gateway's own wait for the dump, and more.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(15);

/// POST `URL/api/record` (`bms-gateway record`): the file the gateway
/// wrote and its frame count, or the gateway's reason for writing none.
pub fn record(url: &str) -> Result<(String, u64), String> {
    let header = format!("{}: record\r\nContent-Length: 0\r\n", crate::http::RECORD_HEADER);
    let (status, body) = exchange(url, "POST /api/record", &header, RECORD_TIMEOUT)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("the gateway at {url} wrote no recording: {}", body.trim()));
    }
    let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{url}api/record did not answer JSON: {e}"))?;
    match (answer["file"].as_str(), answer["frames"].as_u64()) {
        (Some(file), Some(frames)) => Ok((file.to_string(), frames)),
        _ => Err(format!("{url}api/record answered {body:?}: is this a bms-gateway?")),
    }
}

/// One request (`METHOD /path` under the URL's base, with `headers`, each
/// ending in CRLF); the status line and the body.
fn exchange(url: &str, request: &str, headers: &str, timeout: Duration) -> Result<(String, String), String> {
    let (host, base) = parse_url(url)?;
    let unreachable = |e: String| {
        format!(
            "no gateway answers at {url}: {e}\n(is bms-gateway running, with [http] ACTIVATED = true? \
             pass its address with --url)"
        )
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let (method, path) = request.split_once(' ').unwrap_or(("GET", request));
    let request = format!("{method} {base}{path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unreachable(e.to_string()))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| unreachable(e.to_string()))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or("").to_string();
    Ok((status, body.to_string()))
}

/// A number of the document with `decimals` decimals, or `-`.
fn f(v: &Value, decimals: usize) -> String {
    number(v.as_f64(), decimals)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

/// The table `status` prints for an `/api/state` document.
pub fn table(state: &Value) -> String {
    let sys = &state["system"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "state: {}   batteries online: {}/{}   energy: {} kWh charged, {} kWh discharged\n",
        s(sys, "state"),
        sys["inputs_online"],
        sys["inputs_total"],
        f(&sys["energy_charged_kwh"], 3),
        f(&sys["energy_discharged_kwh"], 3),
    );
    out.push_str(&battery_table(state).render());
    out.push('\n');
    out.push_str(&inverter_table(state).render());
    let events = state["events"].as_array().map_or(&[][..], |e| &e[..]);
    if !events.is_empty() {
        let _ = writeln!(out, "\nLast events:");
        for e in &events[events.len().saturating_sub(5)..] {
            let _ = writeln!(out, "  {}  {}", s(e, "kind"), s(e, "message"));
        }
    }
    out
}

/// Each battery's row and the combined battery's.
fn battery_table(state: &Value) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("BATTERY", Left),
        ("IF", Left),
        ("LINK", Left),
        ("ONLINE", Left),
        ("SOC", Right),
        ("V", Right),
        ("I", Right),
        ("T", Right),
        ("CCL", Right),
        ("DCL", Right),
        ("AGE", Right),
        ("SHARE%", Right),
    ]);
    let row = |name: String, can_if: &str, link: &str, online: &str, v: &Value| {
        let share = v["share"].as_f64().map(|s| s * 100.0);
        vec![
            name,
            can_if.into(),
            link.into(),
            online.into(),
            f(&v["soc"], 1),
            f(&v["v_avg"], 2),
            f(&v["i_total"], 1),
            f(&v["t_avg"], 1),
            f(&v["i_lim_charge"], 1),
            f(&v["i_lim_discharge"], 1),
            f(&v["age_s"], 1),
            number(share, 0),
        ]
    };
    for b in state["batteries"].as_array().into_iter().flatten() {
        let online = if b["online"].as_bool() == Some(true) {
            "yes"
        } else {
            "STALE"
        };
        table.row(row(b["battery"].to_string(), s(b, "can_if"), s(b, "link"), online, b));
    }
    table.row(row("COMBINED".into(), "", "", "", &state["system"]));
    table
}

/// Each inverter's row.
fn inverter_table(state: &Value) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("INVERTER", Left),
        ("IF", Left),
        ("LINK", Left),
        ("STATE", Left),
        ("SOC", Right),
        ("V", Right),
        ("CVL", Right),
        ("CCL", Right),
        ("DCL", Right),
        ("FRAMES", Right),
        ("PROFILE", Left),
        ("TALKS", Left),
    ]);
    for v in state["inverters"].as_array().into_iter().flatten() {
        table.row(vec![
            v["inverter"].to_string(),
            s(v, "can_if").into(),
            s(v, "link").into(),
            s(v, "state").into(),
            f(&v["soc"], 1),
            f(&v["v_avg"], 2),
            f(&v["v_charge_cmd"], 1),
            f(&v["i_lim_charge"], 1),
            f(&v["i_lim_discharge"], 1),
            v["frames_sent"].to_string(),
            s(v, "profile").into(),
            match v["silent"].as_bool() {
                Some(true) => "SILENT",
                Some(false) => "yes",
                None => "-",
            }
            .into(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/").unwrap(),
            ("127.0.0.1:8080".into(), String::new())
        );
        assert_eq!(
            parse_url("http://pi.local").unwrap(),
            ("pi.local:80".into(), String::new())
        );
        assert_eq!(
            parse_url("http://[::1]:81/gw/").unwrap(),
            ("[::1]:81".into(), "/gw".into())
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http:///").is_err());
    }

    #[test]
    fn the_table_shows_each_battery_and_inverter() {
        let state = json!({
            "system": {"state": "degraded", "inputs_online": 1, "inputs_total": 2, "soc": 55.5,
                       "energy_charged_kwh": 1.25, "energy_discharged_kwh": 0.5},
            "batteries": [
                {"battery": 1, "can_if": "can0", "link": "up", "online": true, "soc": 55.5, "v_avg": 52.1, "age_s": 0.4,
                 "share": 0.625},
                {"battery": 2, "can_if": "can1", "link": "down", "online": false, "soc": null}
            ],
            "inverters": [{"inverter": 1, "can_if": "can9", "link": "up", "state": "degraded", "frames_sent": 42,
                           "profile": "victron", "silent": true}],
            "events": [{"kind": "battery_lost", "message": "battery 2 (can1): stale"}]
        });
        let t = table(&state);
        assert!(
            t.starts_with("state: degraded   batteries online: 1/2   energy: 1.250 kWh charged, 0.500 kWh discharged"),
            "{t}"
        );
        // Rows read cell by cell (the widths are the renderer's business,
        // tested in text_table); share 0.625 shown as 62 % (no decimals).
        let dash = |n: usize| vec!["-"; n];
        let b1 = [
            vec!["1", "can0", "up", "yes", "55.5", "52.10"],
            dash(4),
            vec!["0.4", "62"],
        ]
        .concat();
        assert_eq!(cells(&t, &["1", "can0"]), b1, "{t}");
        assert_eq!(
            cells(&t, &["2", "can1"]),
            [vec!["2", "can1", "down", "STALE"], dash(8)].concat(),
            "{t}"
        );
        assert_eq!(
            cells(&t, &["COMBINED"]),
            [vec!["COMBINED", "55.5"], dash(7)].concat(),
            "{t}"
        );
        let inverter = [
            vec!["1", "can9", "up", "degraded"],
            dash(5),
            vec!["42", "victron", "SILENT"],
        ]
        .concat();
        assert_eq!(cells(&t, &["1", "can9"]), inverter, "{t}");
        // A number ends under its title's end.
        let header = t.lines().find(|l| l.starts_with("BATTERY")).unwrap();
        let row = t.lines().find(|l| l.contains("can0")).unwrap();
        assert_eq!(header.find("SOC").unwrap() + 3, row.find("55.5").unwrap() + 4, "{t}");
        assert!(t.contains("battery_lost  battery 2 (can1): stale"), "{t}");
    }

    /// The blank-separated cells of the line whose first cells are `first`.
    fn cells<'a>(t: &'a str, first: &[&str]) -> Vec<&'a str> {
        let rows = t.lines().map(|l| l.split_whitespace().collect::<Vec<_>>());
        let mut rows = rows.filter(|r| r.starts_with(first));
        rows.next().unwrap_or_else(|| panic!("no row {first:?} in {t}"))
    }
}
