//! Criterion benchmarks of the status page's history (docs/history.md): one
//! sample of a running gateway's board into the ring (what the status
//! server's history thread does every 10 s), the ring's push alone, and the
//! page's JSON for a full day.
//!
//! `cargo bench --bench history`; under `cargo test --all-targets`
//! criterion runs each benchmark once, as a smoke test.

use bms_gateway::codec;
use bms_gateway::combine::{Combiner, SystemState, shape};
use bms_gateway::config::Config;
use bms_gateway::demo::demo_config;
use bms_gateway::history::{History, SLOT_S, SLOTS, Sample};
use bms_gateway::http;
use bms_gateway::setpoint::LimitSetpoints;
use bms_gateway::sim::{BatteryParams, SimAlarms};
use bms_gateway::status::{LinkState, StatusBoard};
use bms_gateway::telegram::{Assembler, BURST_GAP};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

/// A board as a running gateway of `batteries` x `inverters` has it: every
/// battery's telegram, the combined state, every inverter's last values.
fn board(batteries: usize, inverters: usize) -> (Config, StatusBoard) {
    let config = demo_config(batteries, inverters);
    let board = StatusBoard::new(batteries, inverters);
    let now = Instant::now();
    let caps: Vec<f64> = config.inputs.iter().map(|i| i.capacity_ah).collect();
    let mut combiner = Combiner::new(config.battery, &caps, now);
    let mut combined = None;
    for i in 0..batteries {
        let mut a = Assembler::default();
        for f in &BatteryParams::default().burst(i as f64, SimAlarms::default()) {
            a.push(&codec::decode(f).unwrap(), now);
        }
        let t = a.poll(now + BURST_GAP).expect("a burst completes a telegram");
        board.input(i, |s| {
            s.telegram = Some(t);
            s.last_telegram = Some(now);
            s.last_telegram_wall = Some(SystemTime::now());
            s.link = LinkState::Up;
        });
        combined = combiner.on_telegram(i, t, now).or(combined);
    }
    let c = combined
        .or_else(|| combiner.on_tick(now + config.battery.stale_timeout))
        .unwrap();
    board.system(|s| {
        s.combined = Some(c);
        s.inputs_fresh = vec![true; batteries];
    });
    for (j, o) in config.outputs.iter().enumerate() {
        board.output(j, |s| {
            s.last_sent = Some(shape(&c, &o.share, &LimitSetpoints::default(), now));
            s.last_state = Some(SystemState::Ok);
            s.last_sent_at = Some(now);
            s.link = LinkState::Up;
        });
    }
    (config, board)
}

fn history_benches(c: &mut Criterion) {
    for (batteries, inverters) in [(4, 2), (32, 16)] {
        let (config, board) = board(batteries, inverters);
        // Each iteration is the next 10 s row, so every sample is stored.
        let mut at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_400_000);
        c.bench_function(
            &format!("history sample at {batteries}x{inverters} (snapshot, payloads, one row)"),
            |b| {
                b.iter(|| {
                    at += Duration::from_secs(SLOT_S as u64);
                    http::sample_history(&config, &board, at);
                })
            },
        );
    }
    let sample = Sample {
        bank: [
            Some(61.2),
            Some(52.31),
            Some(-45.3),
            Some(23.1),
            Some(100.0),
            Some(90.0),
        ],
        batteries: vec![
            [
                Some(60.0),
                Some(-11.3),
                Some(0.25),
                Some(22.0),
                Some(3.301),
                Some(3.342)
            ];
            4
        ],
        inverters: vec![[Some(50.0), Some(45.0)]; 2],
        ..Sample::default()
    };
    let mut h = History::new(4, 2);
    let mut t = 1_796_400_000;
    c.bench_function("History::push at 4x2 (one row)", |b| {
        b.iter(|| {
            t += SLOT_S;
            black_box(h.push(t, &sample))
        })
    });
    let mut day = History::new(4, 2);
    for n in 0..SLOTS as i64 {
        day.push(1_796_400_000 + n * SLOT_S, &sample);
    }
    c.bench_function("/api/history JSON, 24 h at 4x2 (1440 rows)", |b| {
        b.iter(|| day.table(None, None).json().len())
    });
}

criterion_group!(benches, history_benches);
criterion_main!(benches);
