//! The serial side of the flight recorder (spec 18: "the flight recorder
//! keeps the serial exchanges too"): every RS485 request the gateway writes
//! and every byte it reads back, per port, stamped with the wall clock, in
//! a ring of its own beside the CAN frames' (an exchange is up to a few
//! hundred bytes, a CAN entry 32).
//!
//! Recording sits between the serial threads and their ports, as on the
//! CAN side: [`SerialRecording`] wraps the [`SerialOpener`], so the polling
//! thread does not know about it. The bytes read are grouped into one entry
//! per answer: an entry ends at the frame's closing CR, when a read waits a
//! whole slice for nothing (the line went quiet), before the next request
//! and when full ([`BYTES`]); a longer run goes on in the next entry.
//!
//! In a recording each entry is a comment line for candump's tools (they
//! skip lines that do not start with `(`), and the gateway's own readers
//! skip `#` lines too; docs/recorder.md shows the format.

use super::Recorder;
use super::ring::Stamped;
use crate::serial::{LineSettings, SerialError, SerialOpener, SerialPort};
use std::fmt::Write as _;
use std::time::Instant;

/// The bytes one entry holds: a 0x42 answer of 16 cells (about 160
/// characters) fits in one, a 32-cell one (about 230) too.
pub const BYTES: usize = 240;

/// The most escaped characters on one line of a recording: a frame of an
/// entry (printable characters) is one line, and lines stay under the 400
/// characters older `canplayer`s read per line for port paths up to 90.
const LINE_CHARS: usize = 240;

/// The prefix of a serial line in a recording.
pub const PREFIX: &str = "# rs485 ";

/// Which way the bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written by the gateway (a request).
    Tx,
    /// Read by the gateway (an answer, or whatever else came).
    Rx,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
        }
    }
}

/// One recorded run of bytes on a serial port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialEntry {
    /// Wall-clock time, microseconds since the Unix epoch: when the request
    /// was written, or when the run read ended.
    pub micros: u64,
    /// Index of the port in the recorder's list of serial ports.
    pub port: u8,
    pub direction: Direction,
    /// The exchange's address: the request's ADR; bytes read carry the
    /// ADR of the request they follow (the answer's own ADR is in them).
    pub address: Option<u8>,
    /// The bytes go on from the entry before (a run longer than [`BYTES`]).
    pub continues: bool,
    len: u8,
    bytes: [u8; BYTES],
}

impl SerialEntry {
    /// An entry of `bytes`, cut to [`BYTES`].
    pub fn new(micros: u64, port: u8, direction: Direction, address: Option<u8>, bytes: &[u8]) -> SerialEntry {
        let len = bytes.len().min(BYTES);
        let mut held = [0; BYTES];
        held[..len].copy_from_slice(&bytes[..len]);
        SerialEntry {
            micros,
            port,
            direction,
            address,
            continues: false,
            len: len as u8,
            bytes: held,
        }
    }

    /// What a slot holds before its first entry.
    pub const EMPTY: SerialEntry = SerialEntry {
        micros: 0,
        port: 0,
        direction: Direction::Rx,
        address: None,
        continues: false,
        len: 0,
        bytes: [0; BYTES],
    };

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Stamped for SerialEntry {
    fn micros(&self) -> u64 {
        self.micros
    }
}

/// The ADR of a request frame (`~` VER ADR ...: characters 3 and 4 in hex).
pub fn request_address(bytes: &[u8]) -> Option<u8> {
    if bytes.first() != Some(&b'~') {
        return None;
    }
    let hex = std::str::from_utf8(bytes.get(3..5)?).ok()?;
    u8::from_str_radix(hex, 16).ok()
}

/// Appends `byte` as a recording shows it: printable ASCII as itself, a
/// backslash doubled, CR and LF as `\r` and `\n`, anything else (a space
/// included, so the bytes stay one word) as `\xNN`.
fn escape(byte: u8, out: &mut String) {
    match byte {
        b'\\' => out.push_str("\\\\"),
        b'\r' => out.push_str("\\r"),
        b'\n' => out.push_str("\\n"),
        0x21..=0x7E => out.push(char::from(byte)),
        _ => {
            let _ = write!(out, "\\x{byte:02X}");
        }
    }
}

/// The bytes back from their escaped text, or None if it is not one.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.bytes();
    while let Some(c) = chars.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            b'\\' => out.push(b'\\'),
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b'x' => {
                let hex = [chars.next()?, chars.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// An entry as recording lines:
/// `# rs485 (1700000000.123456) /dev/ttyUSB0 adr=02 tx ~20024642E00202FD33\r`.
/// Bytes that escape to more than [`LINE_CHARS`] go on over more lines,
/// the later ones marked `tx+` or `rx+`, as is an entry that continues the
/// one before. Returns the lines written.
pub fn render(entry: &SerialEntry, ports: &[String], out: &mut String) -> usize {
    let port = ports.get(usize::from(entry.port)).map_or("?", String::as_str);
    let address = entry.address.map_or("adr=--".to_string(), |a| format!("adr={a:02X}"));
    let mut lines = 0;
    let mut bytes = entry.bytes().iter().peekable();
    loop {
        let more = if lines > 0 || entry.continues { "+" } else { "" };
        let _ = write!(
            out,
            "{PREFIX}({}.{:06}) {port} {address} {}{more} ",
            entry.micros / 1_000_000,
            entry.micros % 1_000_000,
            entry.direction.as_str()
        );
        let start = out.len();
        while let Some(&&byte) = bytes.peek() {
            if out.len() - start >= LINE_CHARS {
                break;
            }
            escape(byte, out);
            bytes.next();
        }
        out.push('\n');
        lines += 1;
        if bytes.peek().is_none() {
            return lines;
        }
    }
}

/// A [`SerialOpener`] whose ports record every byte written and read.
pub struct SerialRecording<'a> {
    pub(super) opener: &'a dyn SerialOpener,
    pub(super) recorder: Recorder,
}

impl SerialOpener for SerialRecording<'_> {
    fn open(&self, path: &str, line: LineSettings) -> Result<Box<dyn SerialPort>, SerialError> {
        let port = self.opener.open(path, line)?;
        Ok(match self.recorder.port_index(path) {
            Some(index) => Box::new(RecordingSerialPort {
                port,
                recorder: self.recorder.clone(),
                index,
                address: None,
                pending: [0; BYTES],
                pending_len: 0,
                continues: false,
            }),
            None => port,
        })
    }
}

/// A port that records; the bytes read wait in `pending` until their run ends.
struct RecordingSerialPort {
    port: Box<dyn SerialPort>,
    recorder: Recorder,
    index: u8,
    /// The last request's ADR.
    address: Option<u8>,
    pending: [u8; BYTES],
    pending_len: usize,
    /// The next entry read goes on from a full one.
    continues: bool,
}

impl RecordingSerialPort {
    /// Records the bytes read so far as one entry; `more` when the run goes on.
    fn flush(&mut self, more: bool) {
        if self.pending_len > 0 {
            let bytes = &self.pending[..self.pending_len];
            let direction = Direction::Rx;
            let continues = std::mem::replace(&mut self.continues, more);
            self.recorder
                .record_serial(self.index, direction, self.address, continues, bytes);
            self.pending_len = 0;
        }
    }
}

impl SerialPort for RecordingSerialPort {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SerialError> {
        self.flush(false);
        self.address = request_address(bytes);
        self.port.write_all(bytes)?;
        self.recorder
            .record_serial(self.index, Direction::Tx, self.address, false, bytes);
        Ok(())
    }

    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, SerialError> {
        let n = match self.port.read_until(buf, deadline) {
            Ok(n) => n,
            Err(e) => {
                self.flush(false);
                return Err(e);
            }
        };
        if n == 0 {
            // A quiet slice: whatever came before it is a run of its own.
            self.flush(false);
        }
        for &byte in &buf[..n] {
            self.pending[self.pending_len] = byte;
            self.pending_len += 1;
            if byte == crate::rs485::framing::EOI {
                self.flush(false);
            } else if self.pending_len == BYTES {
                self.flush(true);
            }
        }
        Ok(n)
    }

    fn discard_input(&mut self) -> Result<(), SerialError> {
        self.flush(false);
        self.port.discard_input()
    }
}

impl Drop for RecordingSerialPort {
    fn drop(&mut self) {
        self.flush(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_256_bytes() {
        // docs/recorder.md sizes the serial ring with it.
        assert_eq!(std::mem::size_of::<SerialEntry>(), 256);
    }

    #[test]
    fn a_request_renders_as_its_characters_with_its_address() {
        // The reference's worked example (§1.4): 0x42 to ADR 2.
        let request = b"~20024642E00202FD33\r";
        assert_eq!(request_address(request), Some(2));
        let entry = SerialEntry::new(1_700_000_000_000_042, 0, Direction::Tx, Some(2), request);
        let mut text = String::new();
        assert_eq!(render(&entry, &["/dev/ttyUSB0".into()], &mut text), 1);
        assert_eq!(
            text,
            "# rs485 (1700000000.000042) /dev/ttyUSB0 adr=02 tx ~20024642E00202FD33\\r\n"
        );
    }

    #[test]
    fn odd_bytes_are_escaped_and_come_back() {
        let bytes = b"a b\\\x00\xFF\n\r~";
        let entry = SerialEntry::new(1, 0, Direction::Rx, None, bytes);
        let mut text = String::new();
        render(&entry, &["p".into()], &mut text);
        assert_eq!(text, "# rs485 (0.000001) p adr=-- rx a\\x20b\\\\\\x00\\xFF\\n\\r~\n");
        let word = text.trim_end().rsplit(' ').next().unwrap();
        assert_eq!(unescape(word).unwrap(), bytes);
        assert_eq!(unescape("\\q"), None);
        assert_eq!(unescape("\\x4"), None);
    }

    #[test]
    fn a_long_run_goes_on_over_lines() {
        // 200 bytes 0x01 escape to 800 characters: 60 bytes (240
        // characters) a line, then 20.
        let bytes = [1; 200];
        let entry = SerialEntry::new(2_000_000, 0, Direction::Rx, Some(0x10), &bytes);
        let mut text = String::new();
        assert_eq!(render(&entry, &["p".into()], &mut text), 4);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("# rs485 (2.000000) p adr=10 rx {}", "\\x01".repeat(60))
        );
        assert_eq!(
            lines[3],
            format!("# rs485 (2.000000) p adr=10 rx+ {}", "\\x01".repeat(20))
        );
        // 240 printable bytes (a frame) are one line.
        let frame = SerialEntry::new(0, 0, Direction::Rx, None, &[b'A'; 240]);
        assert_eq!(render(&frame, &["p".into()], &mut String::new()), 1);
        // An entry that goes on from the one before is marked from its first line.
        let mut next = SerialEntry::new(0, 0, Direction::Rx, None, b"B");
        next.continues = true;
        let mut text = String::new();
        render(&next, &["p".into()], &mut text);
        assert_eq!(text, "# rs485 (0.000000) p adr=-- rx+ B\n");
        // And an entry holds at most BYTES.
        assert_eq!(
            SerialEntry::new(0, 0, Direction::Rx, None, &[0; 300]).bytes().len(),
            BYTES
        );
    }

    #[test]
    fn no_address_without_a_frame_start() {
        assert_eq!(request_address(b"20024642"), None);
        assert_eq!(request_address(b"~20"), None);
        assert_eq!(request_address(b"~20ZZ"), None);
    }
}
