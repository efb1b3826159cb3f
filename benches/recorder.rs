//! Criterion micro-benchmarks of the flight recorder's cost on the CAN path:
//! recording one frame (what every CAN read and write adds), and copying one
//! chunk out of the ring while dumping (the longest a CAN thread can wait
//! for the recorder's lock).
//!
//! `cargo bench --bench recorder`; under `cargo test --all-targets`
//! criterion runs each benchmark once, as a smoke test.

use bms_gateway::config;
use bms_gateway::frame::Frame;
use bms_gateway::recorder::Recorder;
use bms_gateway::recorder::ring::{Entry, Ring};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn recorder_benches(c: &mut Criterion) {
    let state = tempfile::tempdir().unwrap();
    let text = "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nCAN-IF = \"can0\"\nCAPACITY-AH = 100\n\
                [[bmses-in]]\nCAN-IF = \"can1\"\nCAPACITY-AH = 100\n[[bmses-out]]\nCAN-IF = \"can2\"\n";
    let config = config::parse(text).unwrap();
    let recorder = Recorder::new(&config, Some(state.path()));
    let frame = Frame::standard(0x351, &[0x14, 0x02, 0xC0, 0x12, 0x20, 0x03, 0xE0, 0x01]);
    c.bench_function("record one frame (lock, clock, copy)", |b| {
        b.iter(|| recorder.record(black_box(1), black_box(&frame)))
    });
    let mut ring = Ring::new(Recorder::capacity(&config));
    for k in 0..ring.capacity() as u64 {
        ring.push(Entry {
            micros: k,
            interface: 0,
            frame,
        });
    }
    let span = ring.span();
    let mut out = Vec::with_capacity(256);
    c.bench_function("copy one 256-frame chunk out of the ring", |b| {
        b.iter(|| {
            out.clear();
            ring.copy(black_box(span.start..span.start + 256), &mut out);
        })
    });
}

criterion_group!(benches, recorder_benches);
criterion_main!(benches);
