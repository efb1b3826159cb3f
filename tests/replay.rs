//! The replay regression corpus (tests/replay/, explained in its README):
//! each case's captures run through `bms-gateway replay` must give exactly
//! the reviewed expected output, byte for byte. A change in behaviour shows
//! up as a diff here.
//!
//! The captures were made with the project's battery simulator (the frames of
//! `sim-bms`, `sim::BatteryParams::burst`) by `regenerate_captures`, which is
//! ignored: run it with `cargo test --test replay -- --ignored` only to
//! change a case, then review the new expected output by hand
//! (`REPLAY_BLESS=1 cargo test --test replay` writes it).

use bms_gateway::codec::Requests;
use bms_gateway::frame::{CanId, Frame};
use bms_gateway::sim::{BatteryParams, SimAlarms};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// 2025-12-01 08:00:00 UTC: captures carry absolute times like candump -l's.
const EPOCH: f64 = 1_764_576_000.0;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay")
}

fn case_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("config.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

fn replay(dir: &Path) -> (String, String) {
    let mut captures: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("capture"))
        .map(PathBuf::from)
        .collect();
    captures.sort();
    let args = std::fs::read_to_string(dir.join("args")).unwrap_or_default();
    // Run inside the case's directory: messages name the files as given.
    let out = Command::new(env!("CARGO_BIN_EXE_bms-gateway"))
        .current_dir(dir)
        .args(["-c", "config.toml"])
        .arg("replay")
        .args(&captures)
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn every_case_gives_its_reviewed_output() {
    let dirs = case_dirs();
    assert!(dirs.len() >= 3, "the corpus is missing: {dirs:?}");
    for dir in dirs {
        let (out, err) = replay(&dir);
        let expected = dir.join("expected.log");
        if std::env::var_os("REPLAY_BLESS").is_some() {
            std::fs::write(&expected, &out).unwrap();
            std::fs::write(dir.join("expected.stderr"), &err).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected).unwrap();
        assert!(
            out == want,
            "{}: output differs from expected.log; see the README there",
            dir.display()
        );
        let want_err = std::fs::read_to_string(dir.join("expected.stderr")).unwrap();
        assert_eq!(err, want_err, "{}: messages differ", dir.display());
    }
}

/// candump -l lines of one battery playing `params` for `t` in `times`.
fn battery(out: &mut String, iface: &str, params: &BatteryParams, times: impl Iterator<Item = f64>) {
    for t in times {
        for (n, frame) in params.burst(t, SimAlarms::default()).iter().enumerate() {
            log_line(out, EPOCH + t + n as f64 * 0.001, iface, frame);
        }
    }
}

fn log_line(out: &mut String, ts: f64, iface: &str, frame: &Frame) {
    let id = match frame.id {
        CanId::Standard(id) => format!("{id:03X}"),
        CanId::Extended(id) => format!("{id:08X}"),
    };
    let _ = writeln!(out, "({ts:.6}) {iface} {id}#{}", frame.hex());
}

fn sorted(text: String) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by(|a, b| a[1..18].cmp(&b[1..18]));
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
#[ignore = "rewrites the captures: run only to change the corpus"]
fn regenerate_captures() {
    let a = BatteryParams::default();
    let b = BatteryParams {
        soc: 60.0,
        voltage: 49.2,
        current: -12.0,
        ccl: 200.0,
        dcl: 250.0,
        cvl: 53.6,
        manufacturer: "PYLON".into(),
        ..BatteryParams::default()
    };
    let secs = |from: u32, to: u32| (from..to).map(f64::from);

    // Two packs, the second silent from 8 s on: one file per interface.
    let dir = corpus().join("two-packs-one-silent");
    let mut one = String::new();
    battery(&mut one, "can0", &a, secs(0, 20));
    let mut two = String::new();
    battery(&mut two, "can1", &b, secs(0, 8).map(|t| t + 0.3));
    std::fs::write(dir.join("capture-can0.log"), one).unwrap();
    std::fs::write(dir.join("capture-can1.log"), two).unwrap();

    // A pack that forbids charging, beside one that allows it: one file.
    let dir = corpus().join("no-charge");
    let forbids = BatteryParams {
        requests: Requests {
            charge_enable: false,
            ..Requests::NORMAL
        },
        ..b.clone()
    };
    let mut both = String::new();
    battery(&mut both, "can0", &a, secs(0, 6));
    battery(&mut both, "can1", &forbids, secs(0, 6).map(|t| t + 0.3));
    std::fs::write(dir.join("capture.log"), sorted(both)).unwrap();

    // A short flood on the battery's bus: 1 kHz of foreign and malformed
    // frames for 2 s, with the battery's own bursts in between.
    let dir = corpus().join("flood");
    let mut log = String::new();
    battery(&mut log, "can0", &a, secs(0, 6));
    for k in 0..2000u32 {
        let t = EPOCH + 2.0005 + f64::from(k) * 0.001;
        let frame = match k % 4 {
            0 => Frame::standard(0x123, &k.to_le_bytes()),
            1 => Frame::new(
                CanId::Extended(0x1800_0000 | k),
                bms_gateway::frame::FrameKind::Data,
                &[0; 8],
            ),
            // Too short to be a 0x351 or 0x355: refused by the decoder.
            2 => Frame::standard(0x351, &[0x14]),
            _ => Frame::standard(0x355, &[0x58]),
        };
        log_line(&mut log, t, "can0", &frame);
    }
    let mut log = sorted(log);
    log.push_str("this line is garbage\n(1764576005.5) can9 351#00\n");
    std::fs::write(dir.join("capture.log"), log).unwrap();
}

/// `--speed N` changes only when lines appear: the same bytes as virtual
/// time, and no sooner than the log's span / N (a lower bound on the pacing,
/// which no load can break).
#[test]
fn speed_paces_the_same_output() {
    let dir = corpus().join("no-charge");
    let run = |extra: &[&str]| {
        let t0 = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_bms-gateway"))
            .current_dir(&dir)
            .args(["-c", "config.toml", "replay", "capture.log"])
            .args(extra)
            .output()
            .unwrap();
        (out, t0.elapsed())
    };
    let want = std::fs::read_to_string(dir.join("expected.log")).unwrap();
    let stamp = |line: &str| line[1..line.find(')').unwrap()].parse::<f64>().unwrap();
    let span = stamp(want.lines().last().unwrap()) - stamp(want.lines().next().unwrap());
    assert!(span > 4.0, "the case spans {span} s");
    let (out, took) = run(&["--speed", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    assert!(took.as_secs_f64() >= span / 10.0, "{took:?} for {span} s at speed 10");
    for bad in [
        &["--speed", "0"][..],
        &["--speed", "fast"],
        &["--speed", "2", "--virtual"],
    ] {
        let (out, _) = run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("speed") || err.contains("--virtual"), "{bad:?}: {err}");
    }
    let (out, _) = run(&["--virtual"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

/// Spec 14: replaying any case of the corpus trips no interlock.
#[test]
fn no_case_trips_the_interlock() {
    for dir in case_dirs() {
        let captures: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("capture"))
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_bms-gateway"))
            .current_dir(&dir)
            .args(["-c", "config.toml", "replay", "--output", "json"])
            .args(&captures)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut transmissions = 0;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v.get("keepalive").is_some() || v.get("inverter").is_none() {
                continue;
            }
            transmissions += 1;
            assert!(v["interlock"].is_null(), "{}: {}", dir.display(), v["interlock"]);
        }
        assert!(transmissions > 0, "{}: nothing sent", dir.display());
    }
}
