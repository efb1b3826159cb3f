//! Writing one recording: the file's name, its candump `-l` text, the write
//! (a hidden temporary file, then a rename, so a reader never sees half a
//! recording) and keeping at most KEEP files. Naming and text are pure; the
//! file functions touch only the recordings directory.

use super::ring::Entry;
use super::serial::{self, SerialEntry};
use crate::candump;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

/// `YYYYmmdd-HHMMSS-REASON.log` for a dump at `unix_secs` (UTC).
pub fn file_name(unix_secs: u64, reason: &str) -> String {
    let (y, m, d) = civil_date(unix_secs / 86_400);
    let s = unix_secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{reason}.log",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (Howard
/// Hinnant's days-to-civil algorithm, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Whether `name` is a recording's file name (and so may be pruned): the
/// 15-character time stamp, a reason, `.log`.
pub fn is_recording(name: &str) -> bool {
    let b = name.as_bytes();
    name.len() > 20
        && name.ends_with(".log")
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'-'
}

/// One candump `-l` line per entry: `(1700000000.123456) can0 351#1402`.
pub fn render(entries: impl Iterator<Item = Entry>, names: &[String], out: &mut String) -> usize {
    let mut n = 0;
    for e in entries {
        let name = names.get(usize::from(e.interface)).map_or("?", String::as_str);
        let _ = writeln!(
            out,
            "({}.{:06}) {name} {}",
            e.micros / 1_000_000,
            e.micros % 1_000_000,
            candump::compact(&e.frame)
        );
        n += 1;
    }
    n
}

/// The CAN frames and the serial entries, each in recorded order, merged
/// by time into one recording (a frame before a serial entry of the same
/// microsecond). `names` are the CAN interfaces', `ports` the serial
/// ports'. Returns the frames and entries written.
pub fn render_all(
    can: impl Iterator<Item = Entry>,
    serial: impl Iterator<Item = SerialEntry>,
    (names, ports): (&[String], &[String]),
    out: &mut String,
) -> usize {
    let mut can = can.peekable();
    let mut serial = serial.peekable();
    let mut n = 0;
    loop {
        let serial_first = match (can.peek(), serial.peek()) {
            (None, None) => return n,
            (Some(c), Some(s)) => s.micros < c.micros,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        if serial_first {
            serial::render(&serial.next().expect("peeked"), ports, out);
            n += 1;
        } else {
            n += render(can.next().into_iter(), names, out);
        }
    }
}

/// Writes `text` as `dir/name` (creating `dir`); a name already taken (two
/// dumps in one second) gets `-2`, `-3`... before `.log`. The path written.
pub fn write(dir: &Path, name: &str, text: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stem = name.trim_end_matches(".log");
    let path = (1..)
        .map(|k| match k {
            1 => dir.join(name),
            k => dir.join(format!("{stem}-{k}.log")),
        })
        .find(|p| !p.exists())
        .expect("an unbounded range has a free name");
    let tmp = dir.join(format!(".{stem}.tmp"));
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

/// Removes the oldest recordings in `dir` until at most `keep` are left (by
/// name: the time stamp comes first). Other files are left alone. The paths
/// removed.
pub fn prune(dir: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_recording(n))
        .collect();
    names.sort();
    let extra = names.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for name in &names[..extra] {
        let path = dir.join(name);
        std::fs::remove_file(&path)?;
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{CanId, Frame, FrameKind};

    #[test]
    fn names_are_utc_date_and_time_then_the_reason() {
        // 1700000000 = 2023-11-14 22:13:20 UTC (`date -u -d @1700000000`).
        assert_eq!(file_name(1_700_000_000, "safe"), "20231114-221320-safe.log");
        // The epoch, and a leap day: 951782400 = 2000-02-29 00:00:00 UTC.
        assert_eq!(file_name(0, "signal"), "19700101-000000-signal.log");
        assert_eq!(file_name(951_782_400, "request"), "20000229-000000-request.log");
        // 2026-12-31 23:59:59 UTC = 1798761599.
        assert_eq!(file_name(1_798_761_599, "degraded"), "20261231-235959-degraded.log");
        assert!(is_recording("20231114-221320-safe.log"));
        assert!(is_recording("20231114-221320-safe-2.log"));
        assert!(!is_recording(".20231114-221320-safe.tmp"));
        assert!(!is_recording("notes.log"));
        assert!(!is_recording("2023111x-221320-safe.log"));
    }

    #[test]
    fn lines_are_candump_log_lines() {
        let names = vec!["can0".to_string(), "inv1".to_string()];
        let entries = [
            Entry {
                micros: 1_700_000_000_000_042,
                interface: 0,
                frame: Frame::standard(0x351, &[0x14, 0x02]),
            },
            Entry {
                micros: 1_700_000_001_500_000,
                interface: 1,
                frame: Frame::new(CanId::Extended(0x1234), FrameKind::Data, &[0xAB]),
            },
        ];
        let mut text = String::new();
        assert_eq!(render(entries.into_iter(), &names, &mut text), 2);
        assert_eq!(
            text,
            "(1700000000.000042) can0 351#1402\n(1700000001.500000) inv1 00001234#AB\n"
        );
        // And the project's own reader reads them back.
        let back = crate::candump::parse_line(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(back.iface.as_deref(), Some("inv1"));
        assert_eq!(back.frame, entries[1].frame);
    }

    #[test]
    fn serial_entries_go_between_the_frames_by_time() {
        let names = vec!["can0".to_string()];
        let ports = vec!["/dev/ttyUSB0".to_string()];
        let frame = |micros| Entry {
            micros,
            interface: 0,
            frame: Frame::standard(0x351, &[1]),
        };
        let tx = SerialEntry::new(20, 0, serial::Direction::Tx, Some(2), b"~20024642E00202FD33\r");
        let rx = SerialEntry::new(30, 0, serial::Direction::Rx, Some(2), b"~x\r");
        let mut text = String::new();
        let n = render_all(
            [frame(10), frame(30), frame(40)].into_iter(),
            [tx, rx].into_iter(),
            (&names, &ports),
            &mut text,
        );
        assert_eq!(n, 5);
        let times: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().find(|w| w.starts_with('(')).unwrap())
            .collect();
        assert_eq!(
            times,
            ["(0.000010)", "(0.000020)", "(0.000030)", "(0.000030)", "(0.000040)"]
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("# rs485 ") && lines[1].contains(" tx "), "{text}");
        // The frame of the same microsecond comes first.
        assert!(lines[2].ends_with("can0 351#01") && lines[3].contains(" rx "), "{text}");
        // The CAN tools' reader skips the serial lines.
        assert_eq!(
            crate::candump::parse_line(lines[1]),
            Err(crate::candump::LineError::Empty)
        );
    }

    #[test]
    fn keep_removes_the_oldest_recordings_only() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "20260101-000000-safe.log",
            "20260101-000001-signal.log",
            "20251231-235959-degraded.log",
            "20260102-120000-request.log",
        ];
        for n in names {
            write(dir.path(), n, "x\n").unwrap();
        }
        std::fs::write(dir.path().join("README"), "mine").unwrap();
        // Keep 2: the two oldest by time go (2025-12-31, then 2026-01-01 00:00:00).
        let removed = prune(dir.path(), 2).unwrap();
        let removed: Vec<_> = removed.iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(removed, ["20251231-235959-degraded.log", "20260101-000000-safe.log"]);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["20260101-000001-signal.log", "20260102-120000-request.log", "README"]
        );
    }

    #[test]
    fn a_second_dump_in_the_same_second_gets_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "20260101-000000-signal.log", "a\n").unwrap();
        let b = write(dir.path(), "20260101-000000-signal.log", "b\n").unwrap();
        assert_eq!(b.file_name().unwrap(), "20260101-000000-signal-2.log");
        assert_eq!(std::fs::read_to_string(a).unwrap(), "a\n");
        assert_eq!(std::fs::read_to_string(b).unwrap(), "b\n");
    }
}
