//! The RS485 side on real kernel pseudo-terminals: the real `sim-bms
//! --serial --pty` binary plays a pack on one side, the gateway's serial
//! thread polls it on the other. The expected values are the reference's
//! decoded captures (shared/reference/pylontech-rs485.md §5), worked out by
//! hand, not by the codec.

use bms_gateway::config::{InputConfig, SerialInput};
use bms_gateway::input::Delivery;
use bms_gateway::rs485::Protocol;
use bms_gateway::serial::LineSettings;
use bms_gateway::serial::device::Devices;
use bms_gateway::serial_input::{SerialBuses, SerialFault, SerialPack};
use bms_gateway::status::{InputStatus, LinkState, Slot, StatusBoard};
use crossbeam_channel::Receiver;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A `sim-bms` child, killed when dropped.
struct Sim {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Sim {
    /// Starts one on a pty linked at `link` and waits until it plays.
    fn start(link: &Path, extra: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bms-gateway"))
            .args(["sim-bms", "--serial"])
            .arg(link)
            .arg("--pty")
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("sim-bms starts");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut sim = Sim { child, out };
        sim.wait_line("sim-bms:");
        sim
    }

    /// Reads its output until a line starting with `start`.
    fn wait_line(&mut self, start: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "sim-bms ended before printing {start:?}");
            if line.starts_with(start) {
                return;
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: &Path, protocol: Protocol) -> InputConfig {
    let serial = SerialInput {
        port: port.to_string_lossy().into_owned(),
        address: 2,
        baud: 115_200,
        protocol,
        rs485_mode: false,
    };
    InputConfig {
        can_if: serial.name(),
        description: String::new(),
        capacity_ah: 100.0,
        poll_interval: Some(Duration::from_millis(200)),
        serial: Some(serial),
    }
}

/// Runs the gateway's serial thread for `config` while `body` looks at its
/// telegrams and its slot.
fn with_poller(config: &InputConfig, body: impl FnOnce(&Receiver<Delivery>, &Slot<InputStatus>)) {
    let board = StatusBoard::new(1, 0);
    let slot = board.input_slot(0);
    let events = bms_gateway::events::Events::default();
    let (telegrams, rx) = crossbeam_channel::bounded(64);
    let (stop_tx, stop) = bms_gateway::shutdown::channel();
    let serial = config.serial.as_ref().unwrap();
    let buses = SerialBuses::default();
    let bus = buses.bus(
        &serial.port,
        LineSettings {
            baud: serial.baud,
            rs485_mode: false,
        },
    );
    std::thread::scope(|scope| {
        scope.spawn(|| {
            SerialPack {
                config,
                opener: &Devices,
                bus: &bus,
                telegrams: &telegrams,
                slot: &slot,
                context: bms_gateway::context::ThreadContext {
                    events: &events,
                    stop: &stop,
                    opened: &|| {},
                    heartbeat: &|| {},
                    heartbeat_every: Duration::from_millis(200),
                },
            }
            .run()
        });
        body(&rx, &slot);
        stop_tx.stop();
    });
}

/// Waits (bounded) until `ok` holds of the slot.
fn wait_for(slot: &Slot<InputStatus>, what: &str, ok: impl Fn(&InputStatus) -> bool) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !slot.update(|s| ok(s)) {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_pylon_pack_on_a_pty_makes_the_telegram_of_capture_v7() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let _sim = Sim::start(&link, &["--protocol", "pylon", "--address", "2"]);
    with_poller(&config(&link, Protocol::Pylon), |rx, _| {
        let d = rx.recv_timeout(Duration::from_secs(20)).expect("a telegram");
        let t = d.telegram;
        // 0x92 of V7: CVL 53.250 V, DVL 45.000 V, CCL 20.0 A, DCL -50.0 A, status C0.
        assert!(close(t.limits.v_charge_cmd, 53.25));
        assert!(close(t.limits.i_lim_charge, 20.0));
        assert!(close(t.limits.i_lim_discharge, 50.0));
        assert_eq!(t.limits.v_discharge_min, Some(45.0));
        let r = t.requests.unwrap();
        assert!(r.charge_enable && r.discharge_enable && !r.force_charge_request);
        // 0x42 of V7: 50.247 V, +20.1 A, 94.905 of 100.000 Ah.
        assert!(close(t.measurements.v_avg, 50.247));
        assert!(close(t.measurements.i_total, 20.1));
        assert!((t.soc.soc - 94.905).abs() < 1e-9, "{}", t.soc.soc);
        // Mean of 35.2, 32.4, 32.5, 32.2, 35.2 = 167.5 / 5.
        assert!((t.measurements.t_avg - 33.5).abs() < 1e-9);
        let c = t.cells.unwrap();
        assert_eq!((c.v_cell_min, c.v_cell_max), (3.348, 3.352));
        assert_eq!((c.t_cell_min, c.t_cell_max), (32.2, 35.2));
        // 0x44 of V7: all normal.
        let f = t.flags;
        assert_eq!(
            [f.error_flags_1, f.error_flags_2, f.warning_flags_1, f.warning_flags_2],
            [0; 4]
        );
    });
}

#[test]
fn a_seplos_pack_on_a_pty_makes_the_telegram_of_capture_v9() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let _sim = Sim::start(&link, &["--protocol", "seplos"]);
    with_poller(&config(&link, Protocol::Seplos), |rx, slot| {
        let t = rx.recv_timeout(Duration::from_secs(20)).expect("a telegram").telegram;
        // V9 in Seplos units: 52.80 V, -6.76 A, 133.90 of 170.00 Ah.
        assert!(close(t.measurements.v_avg, 52.8));
        assert!(close(t.measurements.i_total, -6.76));
        assert!((t.soc.soc - 13390.0 / 170.0).abs() < 1e-9, "{}", t.soc.soc);
        let c = t.cells.unwrap();
        assert_eq!((c.v_cell_min, c.v_cell_max), (3.286, 3.316));
        assert_eq!((c.t_cell_min, c.t_cell_max), (23.6, 25.1));
        // The simulator's made-up 0x92: 56.0 V, 50 A both ways.
        assert!(close(t.limits.v_charge_cmd, 56.0));
        assert!(close(t.limits.i_lim_charge, 50.0));
        // Seplos refuses 0x93 and 0x96 with RTN 04: not a fault of the link.
        assert_eq!(slot.update(|s| s.serial_faults.total()), 0);
    });
}

/// A fault switch of `sim-bms` gives errors of `kind`, counted, and no telegram.
fn fault_is_counted(flag: &[&str], kind: SerialFault) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let _sim = Sim::start(&link, flag);
    with_poller(&config(&link, Protocol::Pylon), |rx, slot| {
        wait_for(slot, kind.name(), |s| s.serial_faults.get(kind) >= 2);
        assert!(rx.try_recv().is_err(), "no telegram from a faulty pack");
        let (telegrams, invalid) = slot.update(|s| (s.telegrams, s.invalid));
        assert_eq!(telegrams, 0);
        assert!(invalid >= 2);
    });
}

#[test]
fn no_answer_is_counted_as_timeouts() {
    fault_is_counted(&["--no-answer"], SerialFault::Timeout);
}

#[test]
fn a_bad_checksum_is_counted() {
    fault_is_counted(&["--bad-checksum"], SerialFault::Checksum);
}

#[test]
fn garbage_is_counted() {
    fault_is_counted(&["--garbage"], SerialFault::Garbage);
}

#[test]
fn a_wrong_address_is_counted() {
    fault_is_counted(&["--wrong-address"], SerialFault::WrongAddress);
}

#[test]
fn a_slow_answer_is_a_timeout() {
    fault_is_counted(&["--slow-answer", "1.5"], SerialFault::Timeout);
}

#[test]
fn an_unplugged_port_is_reopened_by_path_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let mut sim = Sim::start(&link, &["--unplug-after", "1", "--replug-after", "2"]);
    with_poller(&config(&link, Protocol::Pylon), |rx, slot| {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a telegram before the unplug");
        sim.wait_line("unplugged");
        wait_for(slot, "the link down", |s| matches!(s.link, LinkState::Down(_)));
        let before = slot.update(|s| s.telegrams);
        sim.wait_line("sim-bms:");
        wait_for(slot, "a telegram after the replug", |s| s.telegrams > before);
        assert_eq!(slot.update(|s| s.link.clone()), LinkState::Up);
    });
}
