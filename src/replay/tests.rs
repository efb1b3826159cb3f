//! Replay tests: timing and values worked out by hand from the push rules
//! (first state sent at once, then at least every second) and the combining
//! rules; error handling line by line.

use super::*;
use crate::config;
use crate::config_text::ConfigText;

/// One battery, one inverter whose caps are above the battery's 480 A, so
/// that its limits pass unchanged.
fn toml() -> String {
    ConfigText::new()
        .battery("STALE-TIMEOUT = 5.0")
        .input("bat1", 100.0, "")
        .output("inv1", "I-LIM-CHARGE = 600.0\nI-LIM-DISCHARGE = 600.0")
        .text()
}

/// One burst at `t` s: CVL 53.2 V, CCL 480 A, DCL 480 A, DVL 45 V, SOC 88 %,
/// SOH 94 %, 49.86 V, -27 A, 36.3 degC, 6 modules, charge and discharge enabled.
fn burst(t: f64) -> String {
    [
        "359#0000000006504E",
        "351#1402C012C012C201",
        "355#58005E00",
        "356#7A13F2FE6B01",
        "35C#C000",
    ]
    .iter()
    .enumerate()
    .map(|(n, f)| format!("({:.6}) bat1 {f}\n", t + n as f64 * 0.001))
    .collect()
}

fn replay(config: &str, log: &str, setpoints: &[SetpointAt], format: Format) -> (String, Summary) {
    let config = config::parse(config).unwrap();
    let mut out = Vec::new();
    let summary = run(
        &config,
        &[Source {
            name: "log",
            bytes: log.as_bytes(),
        }],
        setpoints,
        format,
        &mut out,
    )
    .unwrap();
    (String::from_utf8(out).unwrap(), summary)
}

fn sends(out: &str) -> Vec<(&str, &str)> {
    out.lines()
        .filter(|l| l.contains(" 351#"))
        .map(|l| {
            let (ts, rest) = l.split_once(' ').unwrap();
            (ts, rest.split_once('#').unwrap().1)
        })
        .collect()
}

#[test]
fn a_single_battery_is_passed_through_on_time() {
    let log: String = (0..4).map(|k| burst(100.0 + f64::from(k))).collect();
    let (out, summary) = replay(&toml(), &log, &[], Format::Candump);
    // By the burst rule (docs/combining.md): the first burst, with no burst
    // before it to compare with, completes when it ends, 250 ms after its
    // last frame (100.004 + 0.25); the later ones at their last frame, when
    // they hold every kind the bursts before held (+4 ms). All inputs
    // reported: the start-up wait ends with the first; pushed at once, then
    // each new state.
    let got = sends(&out);
    assert_eq!(
        got,
        [
            ("(100.254000)", "1402C012C012C201"),
            ("(101.004000)", "1402C012C012C201"),
            ("(102.004000)", "1402C012C012C201"),
            ("(103.004000)", "1402C012C012C201"),
        ]
    );
    // The whole frame set, in order, on the output's interface.
    let first: Vec<&str> = out.lines().take(6).collect();
    assert_eq!(
        first,
        [
            "(100.254000) inv1 359#0000000006504E",
            "(100.254000) inv1 351#1402C012C012C201",
            "(100.254000) inv1 355#58005E00",
            "(100.254000) inv1 356#7A13F2FE6B01",
            "(100.254000) inv1 35C#C000",
            "(100.254000) inv1 35E#50594C4F4E000000",
        ]
    );
    assert_eq!((summary.frames_in, summary.transmissions), (20, 4));
    assert!(summary.problems.is_empty());
}

#[test]
fn silence_repeats_then_goes_safe() {
    // Two bursts, then only an unrelated frame 12 s later that keeps time going.
    let mut log = burst(0.0) + &burst(1.0);
    log.push_str("(13.000000) bat1 123#00\n");
    let (out, _) = replay(&toml(), &log, &[], Format::Candump);
    let got = sends(&out);
    // Telegrams at 0.254 (first burst: its end) and 1.004 (its last frame).
    // Repeated every second (2.004, 3.004); the combiner's keep-alive state
    // 2 s after its last (3.004: the combiner wakes at its own deadline, as
    // the daemon's thread does) goes out in the same transmission as the
    // repeat, then again (4.004, 5.004). At 6.004 the input is still fresh
    // (age 5 s = STALE-TIMEOUT); the first microsecond after, it is stale and
    // the combiner makes the safe state at once: CCL = DCL = 0, CVL kept.
    let safe_from = got.iter().position(|(_, d)| *d == "140200000000C201").unwrap();
    assert_eq!(got[safe_from].0, "(6.004001)");
    assert!(got[..safe_from].iter().all(|(_, d)| *d == "1402C012C012C201"));
    let times: Vec<&str> = got[..safe_from].iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        [
            "(0.254000)",
            "(1.004000)",
            "(2.004000)",
            "(3.004000)",
            "(4.004000)",
            "(5.004000)",
            "(6.004000)"
        ]
    );
    // 0x35C of the safe state: both enables clear.
    assert!(out.contains("(6.004001) inv1 35C#0000"));
}

#[test]
fn a_setpoint_lowers_the_charge_limit_for_its_ttl() {
    let log: String = (0..6).map(|k| burst(f64::from(k))).collect();
    let sp: SetpointAt = "2.5:charge:50:2".parse().unwrap();
    let (out, _) = replay(&toml(), &log, &[sp], Format::Candump);
    let got = sends(&out);
    // 50 A = 500 = 0x01F4 -> F401. Set at 2.5 s (sent at once), expires 4.5 s:
    // the state made at the 4.5 s tick has 480 A again.
    assert!(got.contains(&("(2.500000)", "1402F401C012C201")));
    assert!(got.contains(&("(4.004000)", "1402F401C012C201")));
    assert!(got.contains(&("(4.500000)", "1402C012C012C201")));
}

#[test]
fn bad_lines_are_reported_with_numbers_and_replay_goes_on() {
    let mut log = burst(0.0);
    log.push_str(
        "garbage\n(0.5) bat1 351#1\nbat1 351#00\n(0.6) 351#00\n(0.001) bat1 355#58005E00\n(0.7) can9 351#00\n",
    );
    log.push_str(&burst(1.0));
    let mut bytes = log.into_bytes();
    bytes.extend_from_slice(b"\xff\xfe\n");
    let config = config::parse(&toml()).unwrap();
    let mut out = Vec::new();
    let summary = run(
        &config,
        &[Source {
            name: "x.log",
            bytes: &bytes,
        }],
        &[],
        Format::Candump,
        &mut out,
    )
    .unwrap();
    let got: Vec<(usize, Problem)> = summary.problems.iter().map(|p| (p.line, p.problem)).collect();
    assert_eq!(
        got,
        [
            (6, Problem::NotAFrame),
            (7, Problem::NotAFrame),
            (8, Problem::NoTimestamp),
            (9, Problem::NoInterface),
            (10, Problem::BackInTime),
            (11, Problem::UnknownInterface),
            (17, Problem::NotText),
        ]
    );
    assert_eq!(
        summary.problems[5].to_string(),
        "x.log:11: unknown interface: \"can9\" is neither a [[bmses-in]] nor a [[bmses-out]] CAN-IF"
    );
    assert_eq!(summary.transmissions, 2);
    assert!(summary.to_string().contains("7 lines not used"));
}

#[test]
fn the_same_input_gives_the_same_bytes_and_json_decodes() {
    let log: String = (0..3).map(|k| burst(f64::from(k) * 0.7)).collect();
    let a = replay(&toml(), &log, &[], Format::Json).0;
    let b = replay(&toml(), &log, &[], Format::Json).0;
    assert_eq!(a, b);
    let first: Value = serde_json::from_str(a.lines().next().unwrap()).unwrap();
    assert_eq!(first["ts"], "0.254000");
    assert_eq!(first["iface"], "inv1");
    assert_eq!(first["state"], "ok");
    assert_eq!(first["combined"]["inputs_online"], 1);
    assert_eq!(first["frames"][1]["i_lim_charge"], 480.0);
    assert_eq!(first["frames"][1]["id"], "0x351");
}

#[test]
fn setpoint_arguments_are_checked() {
    let s: SetpointAt = "10:discharge:0".parse().unwrap();
    assert_eq!(
        (s.at, s.kind, s.value, s.ttl),
        (Duration::from_secs(10), LimitKind::Discharge, 0.0, None)
    );
    for bad in [
        "",
        "1:charge",
        "x:charge:1",
        "1:both:1",
        "1:charge:-1",
        "1:charge:1:0",
        "1:charge:1:2:3",
    ] {
        assert!(bad.parse::<SetpointAt>().is_err(), "{bad:?}");
    }
}

#[test]
fn a_long_silence_is_shortened_and_reported() {
    // A day between two bursts: replayed as 600 s, printed with the log's own times.
    let log = burst(0.0) + &burst(86_400.0);
    let (out, summary) = replay(&toml(), &log, &[], Format::Candump);
    let gap: Vec<_> = summary.problems.iter().filter(|p| p.problem == Problem::Gap).collect();
    assert_eq!(gap.len(), 1);
    assert_eq!(gap[0].line, 6);
    assert!(gap[0].detail.starts_with("86399.996 s without any frame"));
    // After the gap, the second burst's telegram is sent at its own time.
    assert!(out.contains("(86400.004000) inv1 351#"), "{out}");
    // In between: repeats, then the safe state, ~600 s at one per second.
    let n = sends(&out).len();
    assert!((595..=605).contains(&n), "{n} transmissions");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Lines that are mostly candump-like: a timestamp (sometimes wild), one
    /// of the configured interfaces or another, a protocol ID and data.
    fn line() -> impl Strategy<Value = String> {
        let ts = prop_oneof![0.0..30.0f64, -1e12..1e12f64, Just(f64::NAN)];
        let iface = prop_oneof![Just("bat1"), Just("inv1"), Just("can7")];
        let id = prop_oneof![0x351u16..0x360, Just(0x305), 0u16..0x7FF];
        let data = proptest::collection::vec(any::<u8>(), 0..9);
        prop_oneof![
            8 => (ts, iface, id, data).prop_map(|(t, i, id, d)| {
                let hex: String = d.iter().map(|b| format!("{b:02X}")).collect();
                format!("({t:.6}) {i} {id:03X}#{hex}")
            }),
            1 => "\\PC{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn on_candump_like_lines(lines in proptest::collection::vec(line(), 0..60)) {
            let log = lines.join("\n");
            let (a, sa) = replay(&toml(), &log, &[], Format::Json);
            let (b, sb) = replay(&toml(), &log, &[], Format::Json);
            prop_assert_eq!(a, b);
            prop_assert_eq!(sa, sb);
        }

        #[test]
        fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let config = config::parse(&toml()).unwrap();
            let mut out = Vec::new();
            let source = Source { name: "b", bytes: &bytes };
            run(&config, &[source], &[], Format::Candump, &mut out).unwrap();
        }
    }
}
