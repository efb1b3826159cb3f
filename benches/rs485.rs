//! Criterion benchmark of one RS485 poll cycle's CPU on the gateway's side
//! (spec 18, docs/rs485.md): the three requests of a cycle encoded (0x42,
//! 0x92, 0x44), the three answers of a simulated US5000 (the reference's
//! vectors, as `sim-bms --serial` sends them) pushed byte by byte through
//! the receiver, checked, decoded and mapped to the telegram the combiner
//! gets. What a real cycle adds is system calls and waiting on the wire
//! (9600 or 115200 baud), not computing; that part is the serial thread's
//! sleep, counted by the no_alloc and pty tests, not here.
//!
//! `cargo bench --bench rs485`; under `cargo test --all-targets` criterion
//! runs it once, as a smoke test, after the correctness check below.

use bms_gateway::rs485::responses::{decode_alarms, decode_analog, decode_charge_management_of};
use bms_gateway::rs485::{Command, Cycle, Protocol, Receiver, Request, check_reply};
use bms_gateway::serial::sim_pack::SimPack;
use bms_gateway::telegram::Telegram;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const ADDRESS: u8 = 2;
const COMMANDS: [Command; 3] = [Command::AnalogValues, Command::ChargeManagement, Command::AlarmInfo];

/// One cycle: each request encoded, its answer framed and checked, the
/// three INFOs decoded into a telegram. `info` is the buffer made at start.
fn cycle(answers: &[Vec<u8>; 3], receiver: &mut Receiver, info: &mut [Vec<u8>; 3]) -> Telegram {
    for ((command, answer), info) in COMMANDS.iter().zip(answers).zip(info.iter_mut()) {
        let request = Request::new(Protocol::Pylon.version(), ADDRESS, *command).encode();
        black_box(request.as_bytes());
        let mut framed = false;
        for &byte in answer {
            if let Some(frame) = receiver.push(byte) {
                let frame = frame.expect("the simulated pack's answer frames");
                let body = check_reply(&frame, ADDRESS).expect("the answer is to our request");
                info.clear();
                info.extend_from_slice(body);
                framed = true;
            }
        }
        assert!(framed, "no frame in the answer to {command:?}");
    }
    let cycle = Cycle {
        analog: decode_analog(&info[0], Protocol::Pylon).unwrap().pack,
        management: decode_charge_management_of(&info[1], ADDRESS).unwrap(),
        alarms: Some(decode_alarms(&info[2], Protocol::Pylon).unwrap()),
    };
    cycle.telegram().expect("a plausible cycle")
}

fn rs485_benches(c: &mut Criterion) {
    let pack = SimPack::new(Protocol::Pylon, ADDRESS);
    let answers = COMMANDS.map(|command| pack.answer(command.code()).expect("the pack answers"));
    let mut receiver = Receiver::new();
    let mut info = [
        Vec::with_capacity(256),
        Vec::with_capacity(256),
        Vec::with_capacity(256),
    ];
    // The benchmark's own check: the reference's V7 pack (sim-bms's US5000)
    // reads 50.247 V (its cells' sum) and CCL 20 A / DCL 50 A (V7's 0x92,
    // reference 5); a cycle that decodes to anything else is not measured.
    let telegram = cycle(&answers, &mut receiver, &mut info);
    assert!((telegram.measurements.v_avg - 50.247).abs() < 0.001, "{telegram:?}");
    assert_eq!(
        (telegram.limits.i_lim_charge, telegram.limits.i_lim_discharge),
        (20.0, 50.0)
    );
    c.bench_function(
        "RS485 poll cycle: 3 requests, 3 answers framed, decoded, telegram",
        |b| b.iter(|| black_box(cycle(black_box(&answers), &mut receiver, &mut info))),
    );
}

criterion_group!(benches, rs485_benches);
criterion_main!(benches);
