//! The wire harness (tests/wire) on arbitrary bytes: each byte picks an
//! event (telegrams with edge values, waits and silences, system and
//! inverter setpoints, reloads of an output section) or a setting, and the
//! sequence runs through the real combiner, shaping, encoding and
//! interlock. Fails on any interlock trip and on any violated invariant of
//! spec 4, 8, 9 and 14.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/wire/mod.rs"]
mod wire;

fuzz_target!(|data: &[u8]| {
    let scenario = wire::scenario_from_bytes(data);
    let report = wire::Harness::new(&scenario).run(&wire::with_rounds(&scenario));
    assert!(
        report.violations.is_empty(),
        "{:#?}\n{}",
        report.violations,
        scenario.config_text(&scenario.outputs)
    );
});
