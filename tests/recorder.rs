//! The flight recorder in the gateway's real threads on the virtual bus: a
//! dump asked for as SIGUSR1 asks for it, and one made on entering the safe
//! state, hold the frames the batteries sent and the inverter received in
//! the window, as candump -l lines (docs/recorder.md).

mod common;
mod config_text;

use bms_gateway::candump::{self, Record};
use bms_gateway::events::Kind;
use bms_gateway::frame::Frame;
use bms_gateway::recorder::Reason;
use bms_gateway::sim::SimAlarms;
use common::*;
use config_text::ConfigText;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECONDS: f64 = 3.0;

fn lines(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| candump::parse_line(l).unwrap()).collect()
}

fn on(records: &[Record], iface: &str) -> Vec<Frame> {
    records
        .iter()
        .filter(|r| r.iface.as_deref() == Some(iface))
        .map(|r| r.frame)
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Whether `part` appears in `whole` as one unbroken run.
fn contains_run(whole: &[Frame], part: &[Frame]) -> bool {
    whole.windows(part.len()).any(|w| w == part)
}

fn wait_for_file(dir: &Path, suffix: &str, timeout: Duration) -> Option<PathBuf> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        let found = std::fs::read_dir(dir).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.to_string_lossy().ends_with(suffix))
        });
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_signal_dump_and_the_safe_state_entry_hold_the_frames_of_the_window() {
    let state = tempfile::tempdir().unwrap();
    let toml = ConfigText::new()
        .state_dir(state.path())
        .battery("STALE-TIMEOUT = 2.0")
        .input("bat1", 100.0, "")
        .input("bat2", 100.0, "")
        .output("inv1", "")
        .mqtt("ACTIVATED = false")
        .recorder(&format!("SECONDS = {SECONDS}\nKEEP = 5"))
        .text();
    let rig = Rig::start(&toml, vec![plain_battery(), plain_battery()], &[]);
    let dir = state.path().join("recordings");
    // Run past the window, so that the ring holds frames older than it.
    std::thread::sleep(Duration::from_secs_f64(SECONDS + 1.5));
    let before = unix_now();
    let written = rig.recorder.ask(Reason::Signal).expect("a recording");
    let after = unix_now();
    assert_eq!(written.path.parent(), Some(dir.as_path()));
    assert!(written.path.to_string_lossy().ends_with("-signal.log"));
    let records = lines(&written.path);
    assert_eq!(records.len(), written.frames);
    // Only the window: no frame older than SECONDS before the request.
    for r in &records {
        let ts = r.ts.unwrap();
        assert!(
            ts >= before - SECONDS - 1e-6 && ts <= after,
            "{ts} outside {before}-{SECONDS}..{after}"
        );
    }
    // Each battery's frames are its simulator's burst (no drift: every
    // burst is the same), whole bursts of the 3 s (2 to 3 of them).
    let burst = plain_battery().burst(0.0, SimAlarms::default());
    for bat in ["bat1", "bat2"] {
        let seen = on(&records, bat);
        assert!(seen.len() >= 2 * burst.len(), "{bat}: {} frames", seen.len());
        assert!(seen.iter().all(|f| burst.contains(f)), "{bat}: {seen:?}");
        assert!(
            burst.iter().all(|f| seen.contains(f)),
            "{bat}: a frame of the burst missing"
        );
    }
    // The inverter's frames are what the inverter received, in its order.
    let sent = on(&records, "inv1");
    let received: Vec<Frame> = rig.frames(0).into_iter().map(|(_, f)| f).collect();
    assert!(sent.len() >= 2, "{sent:?}");
    assert!(
        contains_run(&received, &sent),
        "recorded {sent:?}\nreceived {received:?}"
    );

    // Both batteries fall silent: stale after 2 s, the safe state, a recording.
    rig.set_silent(0, true);
    rig.set_silent(1, true);
    let safe = wait_for_file(&dir, "-safe.log", Duration::from_secs(10)).expect("a recording on entering safe");
    let records = lines(&safe);
    // The last bursts before the silence are in it, and the inverter's frames.
    assert!(!on(&records, "bat1").is_empty() && !on(&records, "bat2").is_empty());
    let sent = on(&records, "inv1");
    let received: Vec<Frame> = rig.frames(0).into_iter().map(|(_, f)| f).collect();
    assert!(
        contains_run(&received, &sent),
        "recorded {sent:?}\nreceived {received:?}"
    );
    let events = rig.events.after(0);
    let written: Vec<_> = events.iter().filter(|e| e.kind == Kind::RecordingWritten).collect();
    assert!(written.iter().any(|e| e.message.contains("-safe.log")), "{written:?}");
    assert!(written.iter().any(|e| e.message.contains("-signal.log")), "{written:?}");
    rig.stop();
}
