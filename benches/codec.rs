//! Criterion micro-benchmarks of the pure hot path: the frame decoder, the
//! telegram assembler, the combiner with per-inverter shaping, the
//! encoder that builds one inverter's frame set, and the interlock's check
//! of it (spec 14: what it adds to each transmission).
//!
//! `cargo bench --bench codec`; under `cargo test --all-targets` criterion
//! runs each benchmark once, as a smoke test.

use bms_gateway::codec::{self, Manufacturer, Message};
use bms_gateway::combine::{BatterySettings, Combiner, InverterShare};
use bms_gateway::profile::{self, Profile, Shown, VoltageUnit};
use bms_gateway::sim::{BatteryParams, SimAlarms};
use bms_gateway::telegram::{Assembler, BURST_GAP, Telegram};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn burst() -> Vec<bms_gateway::frame::Frame> {
    BatteryParams::default().burst(0.0, SimAlarms::default())
}

fn telegram() -> Telegram {
    let mut a = Assembler::default();
    let now = Instant::now();
    for f in burst() {
        assert_eq!(a.push(&codec::decode(&f).unwrap(), now), None);
    }
    // The first burst ends after a quiet gap.
    a.poll(now + BURST_GAP).expect("a burst completes a telegram")
}

fn codec_benches(c: &mut Criterion) {
    let frames = burst();
    c.bench_function("decode one frame (0x351)", |b| {
        b.iter(|| codec::decode(black_box(&frames[1])))
    });
    c.bench_function("decode a 7-frame burst", |b| {
        b.iter(|| {
            for f in black_box(&frames) {
                black_box(codec::decode(f).ok());
            }
        })
    });
    let messages: Vec<Message> = frames.iter().map(|f| codec::decode(f).unwrap()).collect();
    c.bench_function("assemble a 7-frame burst into a telegram", |b| {
        let mut a = Assembler::default();
        let now = Instant::now();
        b.iter(|| {
            let mut t = None;
            for m in black_box(&messages) {
                t = a.push(m, now).or(t);
            }
            t
        })
    });
    let combined = {
        let mut comb = Combiner::new(BatterySettings::default(), &[100.0], Instant::now());
        comb.on_telegram(0, telegram(), Instant::now()).expect("combined")
    };
    let manufacturer = Manufacturer::new("PYLON").unwrap();
    for p in [Profile::Pylon, Profile::Victron] {
        let shown = Shown {
            battery: combined.battery,
            bank: combined.bank,
            energy: None,
        };
        c.bench_function(&format!("encode one inverter's frame set ({})", p.name()), |b| {
            b.iter(|| profile::frames(p, black_box(&shown), manufacturer, VoltageUnit::Centivolt))
        });
    }
}

fn combiner_benches(c: &mut Criterion) {
    let t = telegram();
    for (n, m) in [(2usize, 1usize), (8, 4), (32, 16)] {
        let capacities: Vec<f64> = (0..n).map(|k| 100.0 + k as f64).collect();
        let settings = BatterySettings {
            stale_timeout: Duration::from_secs(3600),
            ..BatterySettings::default()
        };
        let start = Instant::now();
        let share = InverterShare {
            i_scaling: 1.0 / m as f64,
            ..InverterShare::default()
        };
        let mut comb = Combiner::new(settings, &capacities, start).with_inverters(&vec![share; m]);
        c.bench_function(
            &format!("combine one round of {n} telegrams and shape for {m} inverters"),
            |b| {
                b.iter(|| {
                    let now = start + Duration::from_millis(1);
                    let mut made = None;
                    for i in 0..n {
                        made = comb.on_telegram(i, black_box(t), now).or(made);
                    }
                    made.expect("the last telegram completes the round");
                    for shaped in comb.shaped(now) {
                        black_box(shaped);
                    }
                })
            },
        );
    }
}

/// One output's transmission without and with the interlock: shaping (SOC
/// window, CVL ramp), encoding, and for the second the check of the bytes.
fn interlock_benches(c: &mut Criterion) {
    use bms_gateway::interlock::Interlock;
    use bms_gateway::output::{checked_transmission, transmission, view_of};
    let config = bms_gateway::config::parse(
        "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nCAN-IF = \"a\"\nCAPACITY-AH = 100\n[[bmses-out]]\nCAN-IF = \"b\"\nCVL-RAMP = 0.1\n",
    )
    .expect("valid");
    let out = &config.outputs[0];
    let start = Instant::now();
    let mut comb = Combiner::new(config.battery, &[100.0], start).with_inverters(&[out.share]);
    comb.on_telegram(0, telegram(), start).expect("combined");
    let shaped = comb.shaped(start).next().expect("shaped");
    let mut view = view_of(out);
    c.bench_function("one transmission (pylon): shape and encode", |b| {
        b.iter(|| transmission(out, &mut view, black_box(&shaped), start))
    });
    let (mut view, mut interlock) = (view_of(out), Interlock::default());
    c.bench_function(
        "one transmission (pylon): shape, encode and the interlock's check",
        |b| b.iter(|| checked_transmission(out, &mut view, &mut interlock, black_box(&shaped), start)),
    );
    assert_eq!(interlock.trips, 0);
}

criterion_group!(benches, codec_benches, combiner_benches, interlock_benches);
criterion_main!(benches);
