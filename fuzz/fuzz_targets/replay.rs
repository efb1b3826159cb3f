//! `replay` on arbitrary input: never panics, whatever the bytes (garbage,
//! huge or negative timestamps, unknown interfaces, long gaps), with push and
//! sync outputs and a setpoint with a TTL; and the same input always gives
//! the same output.

#![no_main]

use bms_gateway::replay::{Format, SetpointAt, Source, run};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
GATEWAY-ACTIVATED = true
[battery]
STALE-TIMEOUT = 2.0
[[bmses-in]]
CAN-IF = "bat1"
CAPACITY-AH = 100.0
[[bmses-in]]
CAN-IF = "bat2"
CAPACITY-AH = 50.0
[[bmses-out]]
CAN-IF = "inv1"
PUSH-MIN-DELAY = 0.3
[[bmses-out]]
CAN-IF = "inv2"
SEND-SYNC-ACTIVATED = true
SYNC-INTERVAL = 2.0
"#;

fuzz_target!(|data: &[u8]| {
    let config = bms_gateway::config::parse(CONFIG).expect("the fuzz config is valid");
    let setpoint: SetpointAt = "1.5:charge:20:3".parse().expect("valid setpoint");
    let (format, bytes) = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => (Format::Json, rest),
        Some((_, rest)) => (Format::Candump, rest),
        None => return,
    };
    let sources = [Source { name: "fuzz", bytes }];
    let mut a = Vec::new();
    let mut b = Vec::new();
    let sa = run(&config, &sources, &[setpoint], format, &mut a).expect("writing to memory");
    let sb = run(&config, &sources, &[setpoint], format, &mut b).expect("writing to memory");
    assert_eq!(a, b);
    assert_eq!(sa, sb);
});
