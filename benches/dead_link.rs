//! Criterion benchmarks of the dead-interface rule (docs/dead-interfaces.md)
//! on the CAN threads' hot path: what every received frame costs it, and
//! what a wake-up's question (poll, then the next deadline) costs.
//!
//! `cargo bench --bench dead_link`; under `cargo test --all-targets`
//! criterion runs each benchmark once, as a smoke test.

use bms_gateway::dead_link::{DeadLink, Observation};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut rule = DeadLink::new(Duration::from_secs(30));
    let mut now = t0;
    let step = Duration::from_micros(250);
    c.bench_function("dead_link: a frame received", |b| {
        b.iter(|| {
            now += step;
            black_box(rule.observe(black_box(Observation::FrameReceived), now))
        })
    });
    // A healthy interface: the last frame just came, nothing is due.
    rule.observe(Observation::FrameReceived, now);
    c.bench_function("dead_link: a wake-up with nothing due (poll + deadline)", |b| {
        b.iter(|| {
            black_box(rule.poll(black_box(now)));
            black_box(rule.deadline())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
