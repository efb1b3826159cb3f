//! Criterion benchmarks of the status server at 32 batteries x 16 inverters
//! with 100 events: `/api/state` and `/metrics` over a real loopback TCP
//! connection to the real server, and the JSON alone.
//!
//! `cargo bench --bench status_server`; under `cargo test --all-targets`
//! criterion runs each benchmark once, as a smoke test.

use bms_gateway::codec;
use bms_gateway::combine::{Combiner, SystemState, shape};
use bms_gateway::demo::demo_config;
use bms_gateway::events::{Events, Kind, Subject};
use bms_gateway::http::{self, api::View};
use bms_gateway::mqtt::telemetry::Clock;
use bms_gateway::recorder::Recorder;
use bms_gateway::setpoint::LimitSetpoints;
use bms_gateway::shutdown;
use bms_gateway::sim::{BatteryParams, SimAlarms};
use bms_gateway::status::{LinkState, StatusBoard};
use bms_gateway::telegram::{Assembler, BURST_GAP};
use criterion::{Criterion, criterion_group, criterion_main};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Instant, SystemTime};

const BATTERIES: usize = 32;
const INVERTERS: usize = 16;

/// A board as a running 32x16 gateway has it.
fn board() -> (bms_gateway::config::Config, StatusBoard, Events) {
    let config = demo_config(BATTERIES, INVERTERS);
    let board = StatusBoard::new(BATTERIES, INVERTERS);
    let now = Instant::now();
    let caps: Vec<f64> = config.inputs.iter().map(|i| i.capacity_ah).collect();
    let mut combiner = Combiner::new(config.battery, &caps, now);
    let mut combined = None;
    for i in 0..BATTERIES {
        let mut a = Assembler::default();
        let burst = BatteryParams::default().burst(i as f64, SimAlarms::default());
        for f in &burst {
            a.push(&codec::decode(f).unwrap(), now);
        }
        // The first burst ends after a quiet gap.
        let t = a.poll(now + BURST_GAP).expect("a burst completes a telegram");
        board.input(i, |s| {
            s.telegram = Some(t);
            s.last_telegram = Some(now);
            s.last_telegram_wall = Some(SystemTime::now());
            s.telegrams = 1000;
            s.link = LinkState::Up;
        });
        combined = combiner.on_telegram(i, t, now).or(combined);
    }
    let c = combined
        .or_else(|| combiner.on_tick(now + config.battery.stale_timeout))
        .unwrap();
    board.system(|s| s.combined = Some(c));
    for (j, o) in config.outputs.iter().enumerate() {
        board.output(j, |s| {
            s.last_sent = Some(shape(&c, &o.share, &LimitSetpoints::default(), now));
            s.last_state = Some(SystemState::Ok);
            s.last_sent_at = Some(now);
            s.frames_sent = 5000;
            s.link = LinkState::Up;
        });
    }
    let events = Events::default();
    for n in 0..100 {
        events.emit(
            Kind::BatteryLost,
            Subject::Battery(n % BATTERIES),
            format!("battery {n} lost"),
        );
    }
    (config, board, events)
}

fn get(addr: SocketAddr, path: &str) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::with_capacity(64 * 1024);
    s.read_to_end(&mut out).unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200"));
    out.len()
}

fn status_benches(c: &mut Criterion) {
    let (config, board, events) = board();
    let server = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let (_stop_tx, stop) = shutdown::channel();
    std::thread::scope(|s| {
        s.spawn(|| server.run(&config, &board, &events, &Recorder::default(), &stop));
        c.bench_function("GET /api/state at 32x16 over loopback TCP", |b| {
            b.iter(|| get(addr, "/api/state"))
        });
        c.bench_function("GET /metrics at 32x16 over loopback TCP", |b| {
            b.iter(|| get(addr, "/metrics"))
        });
        c.bench_function("/api/state JSON at 32x16 (snapshot and serialize)", |b| {
            b.iter(|| {
                let snapshot = board.snapshot();
                let events = events.after(0);
                View {
                    config: &config,
                    snapshot: &snapshot,
                    events: &events,
                    clock: Clock::now(),
                }
                .state_json()
                .len()
            })
        });
        drop(_stop_tx);
    });
}

criterion_group!(benches, status_benches);
criterion_main!(benches);
