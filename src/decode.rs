//! `bms-gateway decode`: candump logs to one JSON object per line, with the
//! field names of the MQTT JSON (README, docs/mqtt.md); [`rs485`] does the
//! same for logs of RS485 frames (`decode --rs485`).

pub mod rs485;

use crate::candump::{self, LineError};
use crate::codec::{self, Message};
use crate::frame::Frame;
use crate::profile::check::Reading;
use serde_json::{Map, Value, json};
use std::io::{self, BufRead, Write};

/// The fields of one decoded message, under those names, in V, A, degC and %.
pub fn message_fields(message: &Message) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    match *message {
        Message::KeepAlive => {}
        Message::Limits(l) => {
            put("v_charge_cmd", json!(l.v_charge_cmd));
            put("i_lim_charge", json!(l.i_lim_charge));
            put("i_lim_discharge", json!(l.i_lim_discharge));
            put("v_discharge_min", json!(l.v_discharge_min));
        }
        Message::StateOfCharge(s) => {
            put("soc", json!(s.soc));
            put("soh", json!(s.soh));
            if let Some(h) = s.soc_hires {
                put("soc_hires", json!(h));
            }
        }
        Message::Measurements(x) => {
            put("v_avg", json!(x.v_avg));
            put("i_total", json!(x.i_total));
            put("t_avg", json!(x.t_avg));
        }
        Message::Flags(f) => {
            put("error_flags_1", json!(f.error_flags_1));
            put("error_flags_2", json!(f.error_flags_2));
            put("warning_flags_1", json!(f.warning_flags_1));
            put("warning_flags_2", json!(f.warning_flags_2));
            put("n_modules", json!(f.n_modules));
        }
        Message::SmaAlarms(a) => {
            let f = a.to_flags();
            put("raw", json!(hex(&a.raw)));
            put("error_flags_1", json!(f.error_flags_1));
            put("error_flags_2", json!(f.error_flags_2));
            put("warning_flags_1", json!(f.warning_flags_1));
            put("warning_flags_2", json!(f.warning_flags_2));
        }
        Message::Requests(r) => {
            put("charge_enable", json!(r.charge_enable));
            put("discharge_enable", json!(r.discharge_enable));
            put("force_charge_request", json!(r.force_charge_request));
            put("force_charge_request_2", json!(r.force_charge_request_2));
            put("balancing_charge_request", json!(r.balancing_charge_request));
        }
        Message::Manufacturer(n) => put("manufacturer", json!(n.name())),
        Message::BatteryInfo(b) => {
            put("raw", json!(hex(&b.raw[..usize::from(b.len)])));
            put("capacity_ah", json!(b.capacity_ah));
        }
        Message::Cells(c) => {
            put("v_cell_min", json!(c.v_cell_min));
            put("v_cell_max", json!(c.v_cell_max));
            put("t_cell_min", json!(c.t_cell_min));
            put("t_cell_max", json!(c.t_cell_max));
        }
        Message::Energy(e) => {
            put("charged_kwh", json!(e.charged_kwh));
            put("discharged_kwh", json!(e.discharged_kwh));
        }
        Message::BankStatus(b) => {
            put("batteries_online", json!(b.online));
            put("batteries_blocking_charge", json!(b.blocking_charge));
            put("batteries_blocking_discharge", json!(b.blocking_discharge));
            put("batteries_offline", json!(b.offline));
        }
        Message::InstalledCapacity { capacity_ah } => put("capacity_ah", json!(capacity_ah)),
        Message::Other { .. } => put("unknown", json!(true)),
    }
    m
}

/// The fields of a frame as a profile's reader sees it (`sim-inverter --profile`).
pub fn reading_fields(reading: &Reading) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    match *reading {
        Reading::Message(ref message) => return message_fields(message),
        Reading::LuxSoc {
            soc,
            v_cell_max,
            v_cell_min,
        } => {
            put("soc", json!(soc.soc));
            put("soh", json!(soc.soh));
            put("v_cell_max", json!(v_cell_max));
            put("v_cell_min", json!(v_cell_min));
        }
        Reading::LuxMeasurements {
            v_avg,
            i_total,
            t_cell_max,
            t_cell_min,
        } => {
            put("v_avg", json!(v_avg));
            put("i_total", json!(i_total));
            put("t_cell_max", json!(t_cell_max));
            put("t_cell_min", json!(t_cell_min));
        }
        Reading::LuxFlags { flags, capacity_ah } => {
            let mut f = message_fields(&Message::Flags(flags));
            f.insert("capacity_ah".into(), json!(capacity_ah));
            return f;
        }
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Decodes one candump line into its JSON object; `None` for blank lines.
pub fn decode_line(line: &str, line_no: usize) -> Option<Value> {
    let record = match candump::parse_line(line) {
        Ok(r) => r,
        Err(LineError::Empty) => return None,
        Err(LineError::Invalid(why)) => return Some(json!({"error": why, "line": line_no})),
    };
    let mut m = frame_json(&record.frame, record.iface.as_deref(), record.ts);
    if m.contains_key("error") {
        m.insert("line".into(), json!(line_no));
    }
    Some(Value::Object(m))
}

/// One frame as a JSON object: `id`, `iface` and `ts` when known, then the
/// decoded fields, or `data` and `error` when it cannot be used.
pub fn frame_json(frame: &Frame, iface: Option<&str>, ts: Option<f64>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(format!("0x{:03X}", frame.id.raw())));
    if let Some(iface) = iface {
        m.insert("iface".into(), json!(iface));
    }
    if let Some(ts) = ts {
        m.insert("ts".into(), json!(ts));
    }
    match codec::decode(frame) {
        Ok(message) => {
            if matches!(message, Message::Other { .. }) {
                m.insert("data".into(), json!(frame.hex()));
            }
            m.extend(message_fields(&message));
        }
        Err(e) => {
            m.insert("data".into(), json!(frame.hex()));
            m.insert("error".into(), json!(e.to_string()));
        }
    }
    m
}

/// Decodes every line of `input` to `output`; returns how many lines could not
/// be decoded. Decoding goes on after a bad line.
pub fn run(input: impl BufRead, mut output: impl Write) -> io::Result<usize> {
    let mut failures = 0;
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let text = String::from_utf8_lossy(&line);
        if let Some(v) = decode_line(&text, n + 1) {
            failures += usize::from(v.get("error").is_some());
            writeln!(output, "{v}")?;
        }
    }
    output.flush()?;
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Value {
        decode_line(line, 1).unwrap()
    }

    #[test]
    fn reference_vectors_decode_exactly() {
        assert_eq!(
            one("(1700000000.000000) can0 351#1402C012C012C201").to_string(),
            r#"{"id":"0x351","iface":"can0","ts":1700000000.0,"v_charge_cmd":53.2,"i_lim_charge":480.0,"i_lim_discharge":480.0,"v_discharge_min":45.0}"#
        );
        assert_eq!(
            one("can0 355#58005E00").to_string(),
            r#"{"id":"0x355","iface":"can0","soc":88.0,"soh":94.0}"#
        );
        assert_eq!(
            one("can0 356#7A13F2FE6B01").to_string(),
            r#"{"id":"0x356","iface":"can0","v_avg":49.86,"i_total":-27.0,"t_avg":36.3}"#
        );
        assert_eq!(
            one("can0 359#0000000006504E").to_string(),
            r#"{"id":"0x359","iface":"can0","error_flags_1":0,"error_flags_2":0,"warning_flags_1":0,"warning_flags_2":0,"n_modules":6}"#
        );
        assert_eq!(
            one("can0 351#330209240924D501").to_string(),
            r#"{"id":"0x351","iface":"can0","v_charge_cmd":56.3,"i_lim_charge":922.5,"i_lim_discharge":922.5,"v_discharge_min":46.9}"#
        );
        assert_eq!(
            one("  can0  356   [8]  AB 14 DF FC CC 00 00 00").to_string(),
            r#"{"id":"0x356","iface":"can0","v_avg":52.91,"i_total":-80.1,"t_avg":20.4}"#
        );
        assert_eq!(
            one("can0 373#D80CF10C22012A01").to_string(),
            r#"{"id":"0x373","iface":"can0","v_cell_min":3.288,"v_cell_max":3.313,"t_cell_min":17.0,"t_cell_max":25.0}"#
        );
        assert_eq!(
            one("can0 35E#50594C4F4E000000").to_string(),
            r#"{"id":"0x35E","iface":"can0","manufacturer":"PYLON"}"#
        );
        assert_eq!(
            one("can0 35C#C000").to_string(),
            r#"{"id":"0x35C","iface":"can0","charge_enable":true,"discharge_enable":true,"force_charge_request":false,"force_charge_request_2":false,"balancing_charge_request":false}"#
        );
    }

    #[test]
    fn bad_lines_and_bad_frames_give_errors_and_decoding_goes_on() {
        let input = "can0 351#1402C012C012C201\nnot a frame\ncan0 355#FA005E00\n\ncan0 356#7A13\ncan0 35C#C000\n";
        let mut out = Vec::new();
        let failures = run(input.as_bytes(), &mut out).unwrap();
        assert_eq!(failures, 3);
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1]["line"], 2);
        assert!(
            lines[1]["error"]
                .as_str()
                .unwrap()
                .contains("expected a length like [8]")
        );
        assert_eq!(lines[2]["line"], 3);
        assert_eq!(lines[2]["error"], "frame 0x355: soc = 250 is outside 0..100");
        assert_eq!(lines[3]["error"], "frame 0x356 has 2 data bytes, needs at least 6");
        assert_eq!(lines[4]["charge_enable"], true);
    }

    #[test]
    fn unknown_ids_keep_their_data() {
        assert_eq!(
            one("can0 123#0102").to_string(),
            r#"{"id":"0x123","iface":"can0","data":"0102","unknown":true}"#
        );
        let ext = one("can0 12345678#00");
        assert_eq!(ext["id"], "0x12345678");
        assert!(ext["error"].as_str().unwrap().contains("extended"));
    }
}
