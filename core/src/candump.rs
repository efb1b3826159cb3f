//! Parsing candump output: the log format of `candump -l` / `-L`
//! (`(1700000000.123456) can0 351#14020000`) and candump's default screen
//! format (`  can0  351   [8]  14 02 ...`, optionally with a timestamp in
//! front and ASCII at the end).
//!
//! Pure: one line in, one frame (or a reason) out; and [`compact`], the
//! frame as a log line writes it (replay's output, the flight recorder).

use crate::frame::{CanId, Frame, FrameKind};

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Seconds, as candump printed them (absolute, delta or zero-based).
    pub ts: Option<f64>,
    pub iface: Option<String>,
    pub frame: Frame,
}

/// Why a line is not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Blank or comment: nothing to report.
    Empty,
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, LineError> {
    Err(LineError::Invalid(msg.into()))
}

/// candump -l's frame text: `351#1402C012`, `12345678#00`, `305#R`.
pub fn compact(f: &Frame) -> String {
    let id = match f.id {
        CanId::Standard(id) => format!("{id:03X}"),
        CanId::Extended(id) => format!("{id:08X}"),
    };
    match f.kind {
        FrameKind::Remote => format!("{id}#R"),
        FrameKind::Data => format!("{id}#{}", f.hex()),
    }
}

/// Parses one line in either format.
pub fn parse_line(line: &str) -> Result<Record, LineError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Err(LineError::Empty);
    }
    let (ts, rest) = split_timestamp(line)?;
    let mut words = rest.split_whitespace();
    let first = words
        .next()
        .ok_or_else(|| LineError::Invalid("no interface or frame after the timestamp".into()))?;
    let second = words.next();
    match second {
        // Log format: "can0 351#..." (or, without interface, "351#...").
        Some(frame) if frame.contains('#') => Ok(Record {
            ts,
            iface: Some(first.to_string()),
            frame: parse_compact(frame)?,
        }),
        None if first.contains('#') => Ok(Record {
            ts,
            iface: None,
            frame: parse_compact(first)?,
        }),
        // Screen format: "can0 351 [8] 14 02 ..."
        Some(id) => Ok(Record {
            ts,
            iface: Some(first.to_string()),
            frame: parse_screen(id, words)?,
        }),
        None => invalid(format!("cannot read {first:?} as a frame")),
    }
}

fn split_timestamp(line: &str) -> Result<(Option<f64>, &str), LineError> {
    let Some(rest) = line.strip_prefix('(') else {
        return Ok((None, line));
    };
    let Some(end) = rest.find(')') else {
        return invalid("timestamp without closing ')'");
    };
    let raw = &rest[..end];
    // candump -t A prints a date and time; keep such lines, without a number.
    let ts = raw.trim().parse::<f64>().ok().filter(|t| t.is_finite());
    Ok((ts, &rest[end + 1..]))
}

/// Hex digits only: `from_str_radix` alone would also take a leading `+`.
fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_id(text: &str) -> Result<CanId, LineError> {
    if !is_hex(text) {
        return invalid(format!("CAN ID {text:?} is not hexadecimal"));
    }
    let raw =
        u32::from_str_radix(text, 16).map_err(|_| LineError::Invalid(format!("CAN ID {text:?} is not hexadecimal")))?;
    match text.len() {
        1..=3 if raw <= 0x7FF => Ok(CanId::Standard(raw as u16)),
        8 if raw <= 0x1FFF_FFFF => Ok(CanId::Extended(raw)),
        _ => invalid(format!(
            "CAN ID {text:?} is neither 3 hex digits (standard) nor 8 (extended)"
        )),
    }
}

fn hex_bytes(text: &str) -> Result<Vec<u8>, LineError> {
    // Checked before slicing by byte pairs: a multi-byte character would
    // otherwise be cut in the middle (a panic, found by fuzzing).
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return invalid(format!("data {text:?} is not hexadecimal"));
    }
    if !text.len().is_multiple_of(2) {
        return invalid(format!("data {text:?} has an odd number of hex digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| LineError::Invalid(format!("data {text:?} is not hexadecimal")))
        })
        .collect()
}

/// `351#1402C012`, `351#R`, `351#R8`, `1ABCDEF0#00`; CAN FD (`##`) is refused.
fn parse_compact(text: &str) -> Result<Frame, LineError> {
    let (id, data) = text.split_once('#').expect("caller checked for '#'");
    if data.starts_with('#') {
        return invalid("CAN FD frames are not part of this protocol");
    }
    let id = parse_id(id)?;
    if let Some(dlc) = data.strip_prefix('R').or_else(|| data.strip_prefix('r')) {
        let dlc = if dlc.is_empty() {
            0
        } else {
            dlc.parse::<u8>()
                .map_err(|_| LineError::Invalid(format!("remote DLC {dlc:?}")))?
        };
        return Ok(Frame::remote(id, dlc));
    }
    let data: String = data.chars().filter(|c| *c != '.').collect();
    let bytes = hex_bytes(&data)?;
    if bytes.len() > 8 {
        return invalid(format!(
            "{} data bytes: a classic CAN frame carries at most 8",
            bytes.len()
        ));
    }
    Ok(Frame::new(id, FrameKind::Data, &bytes))
}

/// `351 [8] 14 02 C0 12 C0 12 C2 01 '....'` or `351 [8] remote request`.
fn parse_screen<'a>(id: &str, mut words: impl Iterator<Item = &'a str>) -> Result<Frame, LineError> {
    let id = parse_id(id)?;
    let dlc_word = words.next().unwrap_or_default();
    let dlc = dlc_word
        .strip_prefix('[')
        .and_then(|w| w.strip_suffix(']'))
        .and_then(|w| w.parse::<u8>().ok())
        .filter(|&d| d <= 8)
        .ok_or_else(|| LineError::Invalid(format!("expected a length like [8], found {dlc_word:?}")))?;
    let mut bytes = Vec::with_capacity(usize::from(dlc));
    for word in words.by_ref() {
        if word == "remote" {
            return Ok(Frame::remote(id, dlc));
        }
        if bytes.len() == usize::from(dlc) {
            break; // the ASCII column
        }
        bytes.extend(hex_bytes(word)?);
    }
    if bytes.len() != usize::from(dlc) {
        return invalid(format!("length [{dlc}] but {} data bytes", bytes.len()));
    }
    Ok(Frame::new(id, FrameKind::Data, &bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format() {
        let r = parse_line("(1700000000.123456) can0 351#1402C012C012C201").unwrap();
        assert_eq!(r.ts, Some(1700000000.123456));
        assert_eq!(r.iface.as_deref(), Some("can0"));
        assert_eq!(
            r.frame,
            Frame::standard(0x351, &[0x14, 0x02, 0xC0, 0x12, 0xC0, 0x12, 0xC2, 0x01])
        );
    }

    #[test]
    fn log_format_extended_remote_and_empty() {
        let r = parse_line("(0.000000) vcan1 1ABCDEF0#00FF").unwrap();
        assert_eq!(r.frame.id, CanId::Extended(0x1ABCDEF0));
        let r = parse_line("(0.1) can0 305#R").unwrap();
        assert_eq!(r.frame.kind, FrameKind::Remote);
        let r = parse_line("(0.1) can0 305#").unwrap();
        assert_eq!(r.frame.data(), &[] as &[u8]);
        let r = parse_line("351#14.02").unwrap();
        assert_eq!((r.iface, r.frame.data()), (None, &[0x14u8, 0x02][..]));
    }

    #[test]
    fn screen_format() {
        let r = parse_line("  can0  351   [8]  14 02 C0 12 C0 12 C2 01").unwrap();
        assert_eq!(r.ts, None);
        assert_eq!(r.iface.as_deref(), Some("can0"));
        assert_eq!(r.frame.data(), &[0x14, 0x02, 0xC0, 0x12, 0xC0, 0x12, 0xC2, 0x01]);
        let r = parse_line(" (1700000000.500000)  can1  35E   [8]  50 59 4C 4F 4E 00 00 00   'PYLON...'").unwrap();
        assert_eq!(r.ts, Some(1700000000.5));
        assert_eq!(r.frame.data(), b"PYLON\0\0\0");
        let r = parse_line("  can0  305   [0]  remote request").unwrap();
        assert_eq!(r.frame.kind, FrameKind::Remote);
        let r = parse_line("  vcan0  12345678   [2]  01 02").unwrap();
        assert_eq!(r.frame.id, CanId::Extended(0x12345678));
    }

    #[test]
    fn non_ascii_and_signs_are_not_hex() {
        // Found by fuzzing: a multi-byte character in the data panicked.
        for line in [
            "can0 140#\u{3b3}011C01",
            "can0 351#0\u{e9}0",
            "  can0  351   [2]  0\u{e9} 11",
        ] {
            match parse_line(line) {
                Err(LineError::Invalid(msg)) => assert!(msg.contains("not hexadecimal"), "{line:?}: {msg}"),
                other => panic!("{line:?}: {other:?}"),
            }
        }
        // from_str_radix alone would take "+1" as 1.
        assert!(parse_line("can0 351#+1").is_err());
        assert!(parse_line("can0 +51#00").is_err());
    }

    #[test]
    fn bad_lines_say_why() {
        assert_eq!(parse_line("   "), Err(LineError::Empty));
        for (line, why) in [
            ("can0 3G1#00", "not hexadecimal"),
            ("can0 351#123", "odd number"),
            ("can0 351#001122334455667788", "at most 8"),
            ("can0 351##1001122", "CAN FD"),
            ("can0 351 [9] 00", "length like [8]"),
            ("can0 351 [4] 00 11", "length [4] but 2"),
            ("(12.5 can0 351#00", "closing"),
            ("hello", "cannot read"),
            ("can0 1234#00", "neither 3 hex digits"),
        ] {
            match parse_line(line) {
                Err(LineError::Invalid(msg)) => assert!(msg.contains(why), "{line:?}: {msg}"),
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }
}
