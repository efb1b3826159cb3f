//! Wire-level properties (issue 22): random sequences of telegrams (from CAN
//! and, on odd inputs, from RS485 packs through the codec) with edge
//! values, silences and returns, system and inverter setpoints (repeated,
//! expiring), waits and reloads that change output sections, for every
//! profile, SOC window, CVL ramp, share and sum mode, I-SCALING and caps,
//! driven through the real combiner, shaping and encoding (tests/wire).
//! Every transmission is decoded by the harness's own reader and checked
//! against the invariants of spec sections 4, 8, 9 and 14; the interlock
//! never trips. Shrunk failures are kept in proptest-regressions/.

mod wire;

use bms_gateway::profile::Profile;
use bms_gateway::setpoint::LimitKind;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use wire::{BatterySection, Event, Harness, OutputSection, Pack, Scenario, with_rounds};

fn pick<T: Clone + std::fmt::Debug + 'static>(values: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(values)
}

fn pack() -> impl Strategy<Value = Pack> {
    (
        pick(wire::CVLS),
        pick(wire::AMPS),
        pick(wire::AMPS),
        pick(wire::DVLS),
        pick(wire::ENABLES),
        pick(wire::CURRENTS),
        pick(wire::VOLTS),
        pick(wire::SOCS),
    )
        .prop_map(|(cvl, charge, discharge, dvl, enables, current, volts, soc)| Pack {
            cvl,
            charge,
            discharge,
            dvl,
            enables,
            current,
            volts,
            soc,
        })
}

fn section(outputs: usize) -> impl Strategy<Value = OutputSection> {
    (
        pick(&Profile::ALL),
        pick(wire::SCALINGS),
        pick(wire::OUTPUT_CAPS),
        pick(wire::OUTPUT_CAPS),
        pick(wire::RAMPS),
        pick(wire::WINDOWS),
    )
        .prop_map(
            move |(profile, scaling, cap_charge, cap_discharge, cvl_ramp, soc_window)| {
                let s = OutputSection {
                    profile,
                    scaling,
                    cap_charge,
                    cap_discharge,
                    cvl_ramp,
                    soc_window,
                };
                wire::shared(s, outputs)
            },
        )
}

fn event(inputs: usize, outputs: usize) -> impl Strategy<Value = Event> {
    let kind = pick(&[LimitKind::Charge, LimitKind::Discharge]);
    prop_oneof![
        6 => (0..inputs, pack()).prop_map(|(input, pack)| Event::Telegram { input, pack }),
        4 => pick(wire::WAITS).prop_map(|ms| Event::Wait { ms }),
        1 => (
            proptest::option::of(0..outputs),
            kind,
            pick(wire::SETPOINTS),
            pick(wire::TTLS),
        )
            .prop_map(|(inverter, kind, value, ttl_ms)| Event::Setpoint {
                inverter,
                kind,
                value,
                ttl_ms,
            }),
        1 => (0..outputs, section(outputs)).prop_map(|(output, section)| Event::Reload { output, section }),
    ]
}

/// Each input's telegrams: a few regular rounds (every input every second)
/// so that states are made, interleaved with the random events.
fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=3, 1usize..=3).prop_flat_map(|(inputs, outputs)| {
        (
            (
                any::<bool>(),
                pick(&[50.0, 150.0, 700.0]),
                pick(&[50.0, 150.0, 700.0]),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(
                    |(share_mode, cap_charge, cap_discharge, stop_on_lost, continue_on_forbid, policies)| {
                        BatterySection {
                            share_mode,
                            cap_charge,
                            cap_discharge,
                            stop_on_lost,
                            continue_on_forbid,
                            policies,
                        }
                    },
                ),
            proptest::collection::vec(pick(wire::CAPACITIES), inputs),
            proptest::collection::vec(section(outputs), outputs),
            proptest::collection::vec(event(inputs, outputs), 1..60),
        )
            .prop_map(|(battery, capacities, outputs, events)| Scenario {
                battery,
                capacities,
                outputs,
                events,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4000),
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/wire_properties.txt"))),
        .. ProptestConfig::default()
    })]

    #[test]
    fn every_transmission_obeys_the_spec_and_the_interlock_never_trips(s in scenario()) {
        let events = with_rounds(&s);
        let report = Harness::new(&s).run(&events);
        prop_assert!(report.violations.is_empty(), "{:#?}\nconfig:\n{}", report.violations, s.config_text(&s.outputs));
    }
}

/// The harness can fail: a pack forbidding charge while a pylon output is
/// shown a charge limit would be reported (checked on the decoder and the
/// invariant directly, with bytes written by hand).
#[test]
fn the_decoder_reads_the_spec_layout() {
    use bms_gateway::frame::Frame;
    let frames = [
        Frame::standard(0x359, &[0, 0x08, 0, 0, 1, b'P', b'N', 0]),
        Frame::standard(0x351, &[0x28, 0x02, 0xE8, 0x03, 0x00, 0x00, 0xCC, 0x01]),
        Frame::standard(0x35C, &[0x40, 0]),
        Frame::standard(0x379, &[0xC8, 0x00]),
    ];
    let d = wire::decode(Profile::PylonV2, &frames);
    assert_eq!(d.limits, Some((55.2, 100.0, 0.0, Some(460))));
    assert_eq!(d.requests, Some(0x40));
    assert_eq!(d.protection2, Some(0x08));
    assert_eq!(d.capacity_379, Some(200));
    // Victron has no 0x35C or 0x359 to read.
    let d = wire::decode(Profile::Victron, &frames);
    assert_eq!((d.requests, d.protection2), (None, None));
}

/// `cargo test --test wire_properties survey -- --ignored --nocapture`:
/// which invariants fail how often over many scenarios (gated or not), with
/// a first example of each.
#[test]
#[ignore]
fn survey() {
    let mut runner = TestRunner::deterministic();
    let mut all: Vec<(&'static str, usize, usize, String)> = Vec::new();
    let (mut transmissions, mut trips) = (0, 0);
    for _ in 0..2000 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let report = Harness::new(&s).run(&with_rounds(&s));
        transmissions += report.transmissions;
        trips += report.trips;
        for (name, k, first) in report.all {
            match all.iter_mut().find(|(n, ..)| *n == name) {
                Some((_, cases, count, _)) => {
                    *cases += 1;
                    *count += k;
                }
                None => all.push((name, 1, k, format!("{first}\n{}", s.config_text(&s.outputs)))),
            }
        }
    }
    println!("{transmissions} transmissions, {trips} interlock trips");
    for (name, cases, count, first) in all {
        println!("== {name}: {cases} scenarios, {count} transmissions; first: {first}");
    }
}

/// The fuzz target's reader (fuzz/fuzz_targets/wire.rs) gives runnable
/// scenarios from any bytes; run here so that stable `cargo test` keeps it
/// working without libFuzzer.
#[test]
fn scenarios_from_arbitrary_bytes_run_clean() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..200 {
        let bytes: Vec<u8> = (0..400)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let s = wire::scenario_from_bytes(&bytes);
        let report = Harness::new(&s).run(&with_rounds(&s));
        assert!(report.violations.is_empty(), "{:#?}\n{s:#?}", report.violations);
    }
}

/// An RS485 pack's telegram (odd inputs) carries what the CAN one does for
/// the same pack: the oracle, which knows only the `Pack`, holds for both.
#[test]
fn an_rs485_pack_says_what_the_can_pack_says() {
    for (soc, current, dvl, enables) in [
        (95.0, -150.0, Some(47.5), Some((true, false))),
        (5.0, 20.0, None, None),
        (0.0, 0.0, Some(40.0), Some((false, true))),
    ] {
        let pack = Pack {
            cvl: 56.0,
            charge: 50.5,
            discharge: 0.3,
            dvl,
            enables,
            current,
            volts: 51.37,
            soc,
        };
        let (can, rs485) = (pack.telegram(), pack.rs485_telegram(3));
        assert_eq!(rs485.limits, can.limits);
        assert_eq!(rs485.soc, can.soc);
        assert_eq!(rs485.measurements, can.measurements);
        assert_eq!(rs485.flags, can.flags);
        assert_eq!(rs485.requests_or_normal(), can.requests_or_normal());
    }
}
