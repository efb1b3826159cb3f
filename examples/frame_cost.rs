//! The gateway's cost per input frame and per idle second at a real rate, for
//! counting instructions with `valgrind --tool=callgrind` (a count that does
//! not depend on how loaded the machine is), and heap allocations per frame.
//!
//! It runs the real gateway threads (`Gateway::run`: two battery inputs, one
//! inverter output, the combiner) on the in-process virtual bus with the
//! configuration the system test `bench_idle` uses (2 batteries x 1 inverter,
//! LIMIT-MODE "sum", the inverter's defaults), idle for `--idle` seconds,
//! then with every battery sending one 7-frame burst every `--period-ms`
//! (1000: a Pylontech battery's rate) for `--traffic` seconds.
//!
//! ```text
//! frame_cost [--idle SECS] [--traffic SECS] [--period-ms MS]
//! valgrind --tool=callgrind target/release/examples/frame_cost --idle 5 --traffic 0
//! ```
//!
//! Instructions per idle second and per input frame are the differences of
//! two runs (`benches/frame_cost.sh` makes them), so that start-up and
//! shutdown cancel out. The run prints the frames the gateway took, the
//! transmissions it made and the heap allocations counted in the traffic
//! window.

use bms_gateway::can::CanOpener;
use bms_gateway::can::virtual_bus::VirtualBus;
use bms_gateway::config;
use bms_gateway::events::Events;
use bms_gateway::gateway::{COMMAND_QUEUE, Fault, Gateway};
use bms_gateway::recorder::Recorder;
use bms_gateway::setpoint::SetpointCommand;
use bms_gateway::shutdown;
use bms_gateway::sim::{BatteryParams, SimAlarms};
use bms_gateway::status::StatusBoard;
use crossbeam_channel::bounded;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// The configuration of the system test `bench_idle`, MQTT off.
const CONFIG: &str = r#"
GATEWAY-ACTIVATED = true
[battery]
LIMIT-MODE = "sum"
[[bmses-in]]
CAN-IF = "sbat1"
CAPACITY-AH = 100.0
[[bmses-in]]
CAN-IF = "sbat2"
CAPACITY-AH = 50.0
[[bmses-out]]
CAN-IF = "sinv1"
I-SCALING = 0.6
I-LIM-CHARGE = 150.0
[mqtt]
ACTIVATED = false
"#;

struct Options {
    idle: f64,
    traffic: f64,
    period: Duration,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        idle: 5.0,
        traffic: 10.0,
        period: Duration::from_secs(1),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().and_then(|v| v.parse::<f64>().ok()).ok_or(what.to_string());
        match a.as_str() {
            "--idle" => o.idle = value("--idle SECS")?,
            "--traffic" => o.traffic = value("--traffic SECS")?,
            "--period-ms" => o.period = Duration::from_secs_f64(value("--period-ms MS")? / 1000.0),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("frame_cost: {e}");
            return ExitCode::from(2);
        }
    };
    let config = config::parse(CONFIG).expect("the built-in configuration is valid");
    let bus = VirtualBus::new();
    for name in ["sbat1", "sbat2", "sinv1"] {
        bus.create(name);
    }
    let board = StatusBoard::new(2, 1);
    let (events, recorder) = (Events::default(), Recorder::default());
    let (stop_tx, stop) = shutdown::channel();
    let (_commands, commands_rx) = bounded::<SetpointCommand>(COMMAND_QUEUE);
    let bursts: Vec<_> = [
        BatteryParams::default(),
        BatteryParams {
            soc: 60.0,
            ..BatteryParams::default()
        },
    ]
    .iter()
    .map(|p| p.burst(0.0, SimAlarms::default()))
    .collect();
    let (frames, allocs) = std::thread::scope(|s| {
        s.spawn(|| {
            Gateway {
                config: &config,
                opener: &bus,
                serial: &bms_gateway::serial::device::Devices,
                board: &board,
                events: &events,
                recorder: &recorder,
                opened: &|| {},
                heartbeat: &|_| {},
                heartbeat_every: bms_gateway::gateway::HEARTBEAT,
                fault: Fault::None,
            }
            .run(&stop, &commands_rx)
        });
        let mut ports: Vec<_> = ["sbat1", "sbat2"]
            .iter()
            .map(|n| bus.open(n).expect("the battery interfaces exist"))
            .collect();
        std::thread::sleep(Duration::from_secs_f64(o.idle));
        let allocs0 = counting::allocations();
        let start = Instant::now();
        let mut next = start;
        while next < start + Duration::from_secs_f64(o.traffic) {
            for (port, burst) in ports.iter_mut().zip(&bursts) {
                for f in burst {
                    port.write(f).expect("the virtual bus takes the frame");
                }
            }
            next += o.period;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let allocs = counting::allocations() - allocs0;
        drop(stop_tx);
        (board.input(0, |s| s.frames) + board.input(1, |s| s.frames), allocs)
    });
    let sent = board.output(0, |s| s.frames_sent);
    println!(
        "frames {frames} frames sent {sent} allocations {allocs} ({:.3} per frame)",
        allocs as f64 / frames.max(1) as f64
    );
    ExitCode::SUCCESS
}
