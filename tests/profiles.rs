//! Output profiles through the gateway's real threads on the virtual bus:
//! one inverter per profile, each transmission read back with this test's
//! own byte offsets (worked out from docs/profiles.md, not the encoder).

mod common;
mod config_text;

use bms_gateway::codec::Requests;
use bms_gateway::frame::Frame;
use bms_gateway::sim::BatteryParams;
use common::*;
use config_text::ConfigText;
use std::time::{Duration, Instant};

const PROFILES: [&str; 6] = ["pylon", "pylon-v2", "victron", "sma", "solark", "luxpower"];

/// Two batteries, one inverter per profile, each with half of the limits.
/// Combined: CVL min(53.2, 54.0) = 53.2 V; CCL 100 + 150 = 250 A -> 125 A
/// each; DCL 120 + 150 = 270 A -> 135 A each; SOC (80 x 100 + 50 x 200) /
/// 300 = 60 %; V (52.00 x 100 + 52.675 x 200) / 300 = 52.45 V; capacity
/// 300 Ah. The last inverter (pylon) has the SOC window 20..80 %.
/// The summed limits (LIMIT-MODE "sum"): the profiles' encodings are
/// under test here, not the share rules.
fn config() -> String {
    let mut t = two_packs().battery("LIMIT-MODE = \"sum\"");
    for (j, p) in PROFILES.iter().enumerate() {
        t = t.output(&format!("inv{j}"), &format!("I-SCALING = 0.5\nPROFILE = \"{p}\""));
    }
    t.output("window", "I-SCALING = 0.5\nSOC-MIN = 20\nSOC-MAX = 80").text()
}

/// The two batteries of [`packs`] (100 and 200 Ah, stale after 2 s), no
/// MQTT; the inverters are the test's.
fn two_packs() -> ConfigText {
    ConfigText::new()
        .battery("STALE-TIMEOUT = 2.0")
        .input("bat1", 100.0, "")
        .input("bat2", 200.0, "")
        .mqtt("ACTIVATED = false")
}

fn pack(cvl: f64, ccl: f64, dcl: f64, soc: f64, voltage: f64) -> BatteryParams {
    BatteryParams {
        cvl,
        ccl,
        dcl,
        soc,
        voltage,
        soh: 100.0,
        current: 0.0,
        temp: 25.0,
        dvl: 45.0,
        modules: 2,
        cells: false,
        drift: false,
        ..BatteryParams::default()
    }
}

fn packs() -> Vec<BatteryParams> {
    vec![
        pack(53.2, 100.0, 120.0, 80.0, 52.0),
        pack(54.0, 150.0, 150.0, 50.0, 52.675),
    ]
}

fn u16_at(f: &Frame, i: usize) -> u16 {
    u16::from_le_bytes([f.data()[i], f.data()[i + 1]])
}

/// The last complete transmission inverter `j` received. A set goes out
/// back to back and holds each ID once: a gap of more than 50 ms or an ID
/// already in the set starts the next one.
fn last_set(rig: &Rig, j: usize) -> Vec<Frame> {
    let frames = rig.frames(j);
    let mut sets: Vec<Vec<(Instant, Frame)>> = Vec::new();
    for (at, f) in frames {
        match sets.last_mut() {
            Some(set)
                if at.duration_since(set.last().unwrap().0) < Duration::from_millis(50)
                    && !set.iter().any(|(_, g)| g.id == f.id) =>
            {
                set.push((at, f))
            }
            _ => sets.push(vec![(at, f)]),
        }
    }
    // The newest set may still be arriving: take the one before it.
    let n = sets.len();
    assert!(n >= 2, "inverter {j} received fewer than two transmissions");
    sets.swap_remove(n - 2).into_iter().map(|(_, f)| f).collect()
}

fn ids(set: &[Frame]) -> Vec<u32> {
    set.iter().map(|f| f.id.raw()).collect()
}

fn find(set: &[Frame], id: u32) -> Frame {
    *set.iter()
        .find(|f| f.id.raw() == id)
        .unwrap_or_else(|| panic!("{id:03X} missing"))
}

fn settled(rig: &Rig) {
    let all = |rig: &Rig| (0..=PROFILES.len()).all(|j| rig.frames(j).len() > 40);
    let until = Instant::now() + Duration::from_secs(15);
    while !all(rig) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_profile_sends_its_own_frame_set_and_layout() {
    let rig = Rig::start(&config(), packs(), &[]);
    settled(&rig);
    let sets: Vec<Vec<Frame>> = (0..=PROFILES.len()).map(|j| last_set(&rig, j)).collect();
    let pylon = [0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E];
    assert_eq!(ids(&sets[0]), pylon);
    assert_eq!(
        ids(&sets[1]),
        [0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E, 0x35A, 0x372, 0x379]
    );
    assert_eq!(
        ids(&sets[2]),
        [0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x372, 0x378, 0x379]
    );
    assert_eq!(ids(&sets[3]), [0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F]);
    assert_eq!(ids(&sets[4]), [0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E, 0x379]);
    assert_eq!(ids(&sets[5]), [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]);
    for set in &sets {
        let limits = find(set, 0x351);
        assert_eq!(u16_at(&limits, 0), 532, "CVL 53.2 V");
        assert_eq!(u16_at(&limits, 2), 1250, "CCL 125.0 A");
        assert_eq!(u16_at(&limits, 4), 1350, "DCL 135.0 A");
    }
    // Names: Pylontech's by default, not toward a Victron GX or an SMA.
    assert_eq!(&find(&sets[0], 0x35E).data()[..5], b"PYLON");
    assert_eq!(&find(&sets[2], 0x35E).data()[..6], b"BMS-GW");
    assert_eq!(&find(&sets[3], 0x35E).data()[..6], b"BMS-GW");
    // Hi-res SOC for Victron and SMA: 60.00 % = 6000.
    for j in [2, 3] {
        assert_eq!(u16_at(&find(&sets[j], 0x355), 4), 6000);
    }
    // 0x378 (Victron): the system's energy counters; both packs carry 0 A
    // from the start, so 0 kWh charged and 0 kWh discharged.
    assert_eq!(find(&sets[2], 0x378).data(), &[0; 8]);
    // 0x372: 2 online, none blocking, none offline; 0x379: 300 Ah.
    assert_eq!(find(&sets[1], 0x372).data(), &[2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(u16_at(&find(&sets[1], 0x379), 0), 300);
    // SMA: no DVL marker needed (the packs send 45.0 V), manufacturer id invalid.
    assert_eq!(u16_at(&find(&sets[3], 0x351), 6), 450);
    assert_eq!(u16_at(&find(&sets[3], 0x35F), 6), 0xFFFF);
    assert_eq!(u16_at(&find(&sets[3], 0x35F), 4), 300);
    // Sol-Ark: every frame 8 bytes, the voltage in 0.1 V: 52.45 -> 525 (nearest).
    assert!(sets[4].iter().all(|f| f.data().len() == 8));
    assert_eq!(u16_at(&find(&sets[4], 0x356), 0), 525);
    // Pylontech: 0.01 V.
    assert_eq!(u16_at(&find(&sets[0], 0x356), 0), 5245);
    // Luxpower: capacity 300 Ah in 0x359 bytes 5-6.
    assert_eq!(u16_at(&find(&sets[5], 0x359), 5), 300);
    // The SOC window 20..80: (60 - 20) / 60 x 100 = 66.7 -> 67 %.
    assert_eq!(u16_at(&find(&sets[6], 0x355), 0), 67);
    assert_eq!(u16_at(&find(&sets[0], 0x355), 0), 60);
    rig.stop();
}

#[test]
fn victron_lowers_cvl_when_a_battery_forbids_charging() {
    let mut p = packs();
    p[0].requests = Requests {
        charge_enable: false,
        ..Requests::NORMAL
    };
    let rig = Rig::start(&config(), p, &[]);
    settled(&rig);
    let victron = last_set(&rig, 2);
    let pylon = last_set(&rig, 0);
    // Charging forbidden (the AND of the enables): Pylontech keeps CVL 53.2,
    // the Victron profile lowers it to the bank voltage, 52.45 -> 52.4 V.
    assert_eq!(u16_at(&find(&pylon, 0x351), 0), 532);
    assert_eq!(u16_at(&find(&victron, 0x351), 0), 524);
    // 0x372: one of two batteries blocks charging.
    assert_eq!(find(&victron, 0x372).data(), &[2, 0, 1, 0, 0, 0, 0, 0]);
    rig.stop();
}

/// INVERTER-TIMEOUT 1 s on a push-mode and a sync-mode output: talking while
/// the test sends 0x305 (29-bit on the push one, as Schneider does), silent
/// once it stops, talking again when it resumes; a Luxpower "shut down
/// battery" request is counted, never obeyed (frames keep their limits).
#[test]
fn silent_inverters_are_reported_and_shutdown_requests_ignored() {
    use bms_gateway::frame::{CanId, FrameKind};
    use bms_gateway::profile::Talk;
    let toml = two_packs()
        .battery("LIMIT-MODE = \"sum\"")
        .output("push", "PROFILE = \"luxpower\"\nINVERTER-TIMEOUT = 1.0")
        .output("sync", "SEND-SYNC-ACTIVATED = true\nINVERTER-TIMEOUT = 1.0")
        .text();
    let rig = Rig::start(&toml, packs(), &[]);
    let talk = |j: usize| rig.board.snapshot().outputs[j].talk;
    let send = |j: usize, f: &Frame| rig.inverter_tx[j].lock().unwrap().write(f).unwrap();
    let schneider = Frame::new(CanId::Extended(0x305), FrameKind::Data, &[0; 8]);
    let plain = Frame::standard(0x305, &[0; 8]);
    let wait = |cond: &dyn Fn() -> bool| {
        let until = Instant::now() + Duration::from_secs(10);
        while !cond() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        cond()
    };
    // Nothing heard for 1 s after start: silent.
    assert!(wait(&|| talk(0) == Some(Talk::Silent) && talk(1) == Some(Talk::Silent)));
    for _ in 0..20 {
        send(0, &schneider);
        send(1, &plain);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!((talk(0), talk(1)), (Some(Talk::Talking), Some(Talk::Talking)));
    send(0, &Frame::standard(0x300, &[1, 0, 0, 0, 0, 0, 0, 0]));
    assert!(wait(&|| rig.board.snapshot().outputs[0].shutdown_requests == 1));
    assert!(wait(&|| talk(0) == Some(Talk::Silent) && talk(1) == Some(Talk::Silent)));
    // Not obeyed: the Luxpower output still allows 250 A x 1.0 (sum mode).
    let lux = last_set(&rig, 0);
    assert_eq!(u16_at(&find(&lux, 0x351), 2), 2500);
    send(0, &plain);
    assert!(wait(&|| talk(0) == Some(Talk::Talking)));
    // Each change was also an event, about its inverter (1-based): silent at
    // start, back, the shutdown request, silent again, back again (push).
    let events: Vec<(String, Option<usize>)> = rig
        .events
        .after(0)
        .into_iter()
        .filter(|e| e.kind.as_str().starts_with("inverter_"))
        .map(|e| (e.kind.as_str().to_string(), e.inverter))
        .collect();
    let of = |n: usize| {
        events
            .iter()
            .filter(|e| e.1 == Some(n))
            .map(|e| e.0.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(1),
        [
            "inverter_silent",
            "inverter_back",
            "inverter_shutdown_request",
            "inverter_silent",
            "inverter_back"
        ]
    );
    assert_eq!(of(2), ["inverter_silent", "inverter_back", "inverter_silent"]);
    rig.stop();
}

/// What the gateway heard from an inverter is reported whatever the
/// output's mode: a push-mode inverter that sends 0x305 (a Pylontech-
/// protocol inverter's keep-alive; 29-bit as Schneider's) has its last
/// request on the board, as a sync-mode one has ("Last 0x305" on the page,
/// "Time since last request" in Home Assistant).
#[test]
fn a_push_mode_inverters_0x305_is_recorded_as_its_last_request() {
    use bms_gateway::frame::{CanId, FrameKind};
    use bms_gateway::mqtt::telemetry::{Clock, inverter_state};
    let toml = two_packs().output("plain", "").output("schneider", "").text();
    let rig = Rig::start(&toml, packs(), &[]);
    let last = |j: usize| rig.board.snapshot().outputs[j].last_request_wall;
    assert_eq!((last(0), last(1)), (None, None));
    let before = std::time::SystemTime::now();
    let extended = Frame::new(CanId::Extended(0x305), FrameKind::Data, &[0; 8]);
    // Once a second, as the inverters do (the first may come before the
    // gateway opened its port).
    let until = Instant::now() + Duration::from_secs(10);
    while (last(0).is_none() || last(1).is_none()) && Instant::now() < until {
        rig.inverter_tx[0]
            .lock()
            .unwrap()
            .write(&Frame::standard(0x305, &[0; 8]))
            .unwrap();
        rig.inverter_tx[1].lock().unwrap().write(&extended).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
    }
    for j in 0..2 {
        assert!(last(j).is_some_and(|t| t >= before), "inverter {j}: {:?}", last(j));
        let payload = inverter_state(&rig.config, j, &rig.board.snapshot().outputs[j], &Clock::now());
        assert!(payload.sync_age_s.is_some_and(|a| a < 10.0), "{payload:?}");
    }
    rig.stop();
}
