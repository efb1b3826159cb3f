//! The configuration loader on arbitrary text: never panics, every problem
//! names a position inside the text, and an accepted configuration keeps the
//! configuration rules (at least one input and output, each interface used
//! once, finite positive capacities) and can be described.

#![no_main]

use bms_gateway::config::parse;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text) {
        Ok(config) => {
            assert!(!config.inputs.is_empty() && !config.outputs.is_empty());
            let mut seen = HashSet::new();
            for name in config
                .inputs
                .iter()
                .map(|i| &i.can_if)
                .chain(config.outputs.iter().map(|o| &o.can_if))
            {
                assert!(seen.insert(name.clone()), "{name} used twice");
            }
            for i in &config.inputs {
                assert!(i.capacity_ah.is_finite() && i.capacity_ah > 0.0);
            }
            for o in &config.outputs {
                assert!(o.share.i_scaling.is_finite() && o.share.i_lim_charge.is_finite());
            }
            let _ = config.describe();
            let _ = config.warnings();
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            let lines = text.lines().count().max(1);
            for p in &problems {
                assert!(p.line <= lines + 1, "line {} of {lines}: {p:?}", p.line);
            }
        }
    }
});
