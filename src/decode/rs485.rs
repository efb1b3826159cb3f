//! `bms-gateway decode --rs485`: a log of Pylontech RS485 frames to one
//! JSON object per line (docs/rs485.md, "Decoding a log").
//!
//! The log holds one frame per line as its ASCII characters, `~` to the
//! last checksum digit, the closing CR optional (a CR LF or LF line end is
//! fine); spaces around it and blank lines are ignored. Everything else is
//! a bad line: reported with its line number and counted, never dropped.
//!
//! Requests carry their command in CID2; answers carry only a return code,
//! so an answer is decoded as the answer to the request before it in the
//! log (same address). An answer with no such request keeps its INFO as
//! hex.

use crate::rs485::mapping::requests;
use crate::rs485::responses::{
    AlarmState, PackAnalog, decode_alarms, decode_analog, decode_analog_group, decode_charge_management,
    decode_manufacturer_info, decode_serial_number, decode_software_version, decode_system_parameters,
};
use crate::rs485::{CID1_BATTERY, Command, Protocol, Receiver, Rtn, requests::WHOLE_GROUP};
use serde_json::{Map, Value, json};
use std::io::{self, BufRead, Write};

/// The request an answer is taken to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    adr: u8,
    command: Command,
    /// INFO = 0xFF: a whole group's 0x42.
    whole_group: bool,
}

/// Decodes a log line by line, remembering the last request.
pub struct Decoder {
    protocol: Protocol,
    asked: Option<Asked>,
}

/// One frame of a line, owned.
struct Owned {
    ver: u8,
    adr: u8,
    cid1: u8,
    cid2: u8,
    info: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn code(byte: u8) -> String {
    format!("0x{byte:02X}")
}

/// The one frame `line` holds, or why not.
fn frame_of(line: &str) -> Result<Owned, String> {
    let text = line.trim();
    if !text.starts_with('~') {
        return Err("not a frame: a line must start with ~".into());
    }
    let mut rx = Receiver::new();
    let mut got = None;
    // The trim took the CR, if the line had one.
    for &b in text.as_bytes().iter().chain(b"\r") {
        match rx.push(b) {
            None => {}
            Some(Ok(f)) if got.is_none() => {
                got = Some(Owned {
                    ver: f.ver,
                    adr: f.adr,
                    cid1: f.cid1,
                    cid2: f.cid2,
                    info: f.info.to_vec(),
                });
            }
            Some(Ok(_)) => return Err("more than one frame on the line".into()),
            Some(Err(r)) => return Err(format!("rejected: {}", r.name())),
        }
    }
    got.ok_or_else(|| "no whole frame on the line".into())
}

fn state(s: AlarmState) -> Value {
    match s {
        AlarmState::Normal => json!("normal"),
        AlarmState::BelowLimit => json!("below"),
        AlarmState::AboveLimit => json!("above"),
        AlarmState::Other(b) => json!(code(b)),
    }
}

/// One pack's 0x42 block under the MQTT names where there are some.
fn pack_fields(p: &PackAnalog) -> Value {
    json!({
        "cells_v": p.cells_mv().iter().map(|&mv| f64::from(mv) / 1000.0).collect::<Vec<f64>>(),
        "cells_t": p.temperatures(),
        "i_total": p.current,
        "v_avg": p.voltage,
        "remaining_ah": p.remaining_ah,
        "full_ah": p.full_ah,
        "design_ah": p.design_ah,
        "cycles": p.cycles,
        "soc": p.soc,
        "soh": p.soh,
    })
}

impl Decoder {
    pub fn new(protocol: Protocol) -> Decoder {
        Decoder { protocol, asked: None }
    }

    /// Line `line_no`'s JSON object (`error` set when it is bad); `None`
    /// for a blank line.
    pub fn line(&mut self, line: &str, line_no: usize) -> Option<Value> {
        if line.trim().is_empty() {
            return None;
        }
        let mut m = Map::new();
        m.insert("line".into(), json!(line_no));
        match frame_of(line) {
            Ok(f) => self.frame(&f, &mut m),
            Err(why) => {
                m.insert("error".into(), json!(why));
            }
        }
        Some(Value::Object(m))
    }

    fn frame(&mut self, f: &Owned, m: &mut Map<String, Value>) {
        m.insert("ver".into(), json!(code(f.ver)));
        m.insert("adr".into(), json!(f.adr));
        if f.cid1 != CID1_BATTERY {
            m.insert("cid1".into(), json!(code(f.cid1)));
            m.insert("info".into(), json!(hex(&f.info)));
            m.insert("error".into(), json!("CID1 is not 0x46 (battery)"));
            return;
        }
        if let Some(command) = Command::from_code(f.cid2) {
            m.insert("request".into(), json!(code(f.cid2)));
            m.insert("info".into(), json!(hex(&f.info)));
            self.asked = Some(Asked {
                adr: f.adr,
                command,
                whole_group: command == Command::AnalogValues && f.info.first() == Some(&WHOLE_GROUP),
            });
            return;
        }
        if matches!(f.cid2, 0x94 | 0x95) {
            // A request the gateway never sends: shown, not decoded.
            m.insert("request".into(), json!(code(f.cid2)));
            m.insert("info".into(), json!(hex(&f.info)));
            self.asked = None;
            return;
        }
        let Some(rtn) = Rtn::from_code(f.cid2) else {
            m.insert("cid2".into(), json!(code(f.cid2)));
            m.insert("info".into(), json!(hex(&f.info)));
            m.insert("error".into(), json!("CID2 is neither a command nor a return code"));
            return;
        };
        m.insert("rtn".into(), json!(code(rtn.code())));
        let asked = self.asked.take().filter(|a| a.adr == f.adr);
        let Some(asked) = asked else {
            m.insert("info".into(), json!(hex(&f.info)));
            m.insert(
                "note".into(),
                json!("no request to this address before it: INFO not decoded"),
            );
            return;
        };
        m.insert("answers".into(), json!(code(asked.command.code())));
        if rtn != Rtn::Normal {
            m.insert("info".into(), json!(hex(&f.info)));
            return;
        }
        match self.answer(asked, &f.info) {
            Ok(fields) => m.extend(fields),
            Err(why) => {
                m.insert("info".into(), json!(hex(&f.info)));
                m.insert("error".into(), json!(why));
            }
        }
    }

    /// The fields of a normal answer to `asked`.
    fn answer(&self, asked: Asked, info: &[u8]) -> Result<Map<String, Value>, String> {
        let p = self.protocol;
        let e = |e: crate::rs485::ReplyError| e.to_string();
        let v = match asked.command {
            Command::ProtocolVersion => json!({}),
            Command::AnalogValues if asked.whole_group => {
                let group = decode_analog_group(info).map_err(e)?;
                let packs = group
                    .packs()
                    .map(|r| r.map(|pack| pack_fields(&pack)))
                    .collect::<Result<Vec<Value>, _>>()
                    .map_err(e)?;
                if packs.len() != usize::from(group.count) {
                    return Err(format!("{} packs announced, {} decoded", group.count, packs.len()));
                }
                json!({"info_flag": code(group.info_flag), "packs": packs})
            }
            Command::AnalogValues => {
                let a = decode_analog(info, p).map_err(e)?;
                let mut v = pack_fields(&a.pack);
                v["info_flag"] = json!(code(a.info_flag));
                v["command"] = json!(a.command);
                v
            }
            Command::AlarmInfo => {
                let a = decode_alarms(info, p).map_err(e)?;
                let mut v = json!({
                    "info_flag": code(a.info_flag),
                    "command": a.command,
                    "cell_states": a.cell_states().map(state).collect::<Vec<Value>>(),
                    "temperature_states": a.temperature_states().map(state).collect::<Vec<Value>>(),
                });
                if let Some(s) = a.pylon {
                    v["charge_current_state"] = state(s.charge_current);
                    v["module_voltage_state"] = state(s.module_voltage);
                    v["discharge_current_state"] = state(s.discharge_current);
                    v["status"] = json!(s.status.map(code));
                }
                v
            }
            Command::ChargeManagement => {
                let c = decode_charge_management(info).map_err(e)?;
                let r = requests(c.status);
                json!({
                    "command": c.command,
                    "v_charge_cmd": c.cvl,
                    "v_discharge_min": c.dvl,
                    "i_lim_charge": c.ccl,
                    "i_lim_discharge": c.dcl,
                    "status": code(c.status),
                    "charge_enable": r.charge_enable,
                    "discharge_enable": r.discharge_enable,
                    "force_charge_request": r.force_charge_request,
                    "force_charge_request_2": r.force_charge_request_2,
                    "balancing_charge_request": r.balancing_charge_request,
                })
            }
            Command::SystemParameters => {
                let s = decode_system_parameters(info, p).map_err(e)?;
                json!({
                    "info_flag": code(s.info_flag),
                    "cell_high_v": s.cell_high,
                    "cell_low_v": s.cell_low,
                    "cell_under_v": s.cell_under,
                    "charge_high_t": s.charge_high_temperature,
                    "charge_low_t": s.charge_low_temperature,
                    "charge_current_a": s.charge_current,
                    "module_high_v": s.module_high,
                    "module_low_v": s.module_low,
                    "module_under_v": s.module_under,
                    "discharge_high_t": s.discharge_high_temperature,
                    "discharge_low_t": s.discharge_low_temperature,
                    "discharge_current_a": s.discharge_current,
                })
            }
            Command::ManufacturerInfo => {
                let i = decode_manufacturer_info(info).map_err(e)?;
                json!({"name": i.name(), "version": hex(&i.version), "manufacturer": i.manufacturer()})
            }
            Command::SerialNumber => {
                let s = decode_serial_number(info).map_err(e)?;
                json!({"command": s.command, "serial": s.text()})
            }
            Command::SoftwareVersion => {
                let s = decode_software_version(info).map_err(e)?;
                json!({"command": s.command, "manufacturer_version": hex(&s.manufacturer), "main_line_version": hex(&s.main_line)})
            }
        };
        match v {
            Value::Object(map) => Ok(map),
            _ => unreachable!("every answer is an object"),
        }
    }
}

/// Decodes every line of `input` to `output`; returns how many lines were
/// bad. Decoding goes on after a bad line.
pub fn run(input: impl BufRead, mut output: impl Write, protocol: Protocol) -> io::Result<usize> {
    let mut decoder = Decoder::new(protocol);
    let mut failures = 0;
    // A flight recording's serial run waiting for its `+` lines: (line, text).
    let mut held: Option<(usize, String)> = None;
    let mut emit = |text: &str, n: usize, output: &mut dyn Write| -> io::Result<()> {
        if let Some(v) = decoder.line(text, n) {
            failures += usize::from(v.get("error").is_some());
            writeln!(output, "{v}")?;
        }
        Ok(())
    };
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let text = String::from_utf8_lossy(&line);
        match recorded(&text) {
            Recorded::Can => continue,
            Recorded::More(bytes) if held.is_some() => {
                held.as_mut().expect("checked").1.push_str(&bytes);
                continue;
            }
            Recorded::Start(bytes) | Recorded::More(bytes) => {
                if let Some((k, run)) = held.replace((n + 1, bytes)) {
                    emit(&run, k, &mut output)?;
                }
                continue;
            }
            Recorded::No => {}
        }
        if let Some((k, run)) = held.take() {
            emit(&run, k, &mut output)?;
        }
        emit(&text, n + 1, &mut output)?;
    }
    if let Some((k, run)) = held.take() {
        emit(&run, k, &mut output)?;
    }
    output.flush()?;
    Ok(failures)
}

/// What a line of a flight recording (docs/recorder.md) is.
enum Recorded {
    /// Not a recording's line.
    No,
    /// A CAN frame: not for this decoder.
    Can,
    /// A serial line's bytes (as text, lossy), starting a run.
    Start(String),
    /// A `tx+`/`rx+` line's: the run before goes on.
    More(String),
}

fn recorded(line: &str) -> Recorded {
    let line = line.trim();
    if line.starts_with('(') {
        return Recorded::Can;
    }
    let Some(rest) = line.strip_prefix(crate::recorder::serial::PREFIX) else {
        return Recorded::No;
    };
    let words: Vec<&str> = rest.split(' ').collect();
    let bytes = match words[..] {
        [_, _, _, _, bytes] => crate::recorder::serial::unescape(bytes),
        _ => None,
    };
    // An unreadable serial line is passed on as it is: reported as bad.
    let Some(bytes) = bytes else { return Recorded::No };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if words[3].ends_with('+') {
        Recorded::More(text)
    } else {
        Recorded::Start(text)
    }
}

#[cfg(test)]
mod tests;
