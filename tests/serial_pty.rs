//! The RS485 side on real kernel pseudo-terminals: the real `sim-bms
//! --serial --pty` binary plays a pack on one side, the gateway's serial
//! thread polls it on the other. The expected values are the reference's
//! decoded captures (shared/reference/pylontech-rs485.md §5), worked out by
//! hand, not by the codec.

#[path = "common/promtool.rs"]
mod promtool;

use bms_gateway::config::{InputConfig, SerialInput};
use bms_gateway::input::Delivery;
use bms_gateway::rs485::Protocol;
use bms_gateway::serial::device::Devices;
use bms_gateway::serial::{LineSettings, SerialOpener};
use bms_gateway::serial_input::{SerialBuses, SerialFault, SerialPack};
use bms_gateway::status::{InputStatus, LinkState, Slot, StatusBoard};
use crossbeam_channel::Receiver;
use promtool::promtool_check;
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
    with_poller_via(config, &Devices, body);
}

/// [`with_poller`] with the ports opened by `opener`.
fn with_poller_via(
    config: &InputConfig,
    opener: &dyn SerialOpener,
    body: impl FnOnce(&Receiver<Delivery>, &Slot<InputStatus>),
) {
    with_poller_on(&StatusBoard::new(1, 0), config, opener, body);
}

/// [`with_poller_via`] as the first battery of `board`.
fn with_poller_on(
    board: &StatusBoard,
    config: &InputConfig,
    opener: &dyn SerialOpener,
    body: impl FnOnce(&Receiver<Delivery>, &Slot<InputStatus>),
) {
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
                opener,
                bus: &bus,
                telegrams: &telegrams,
                slot: &slot,
                context: bms_gateway::context::ThreadContext::unwatched(&events, &stop, Duration::from_millis(200)),
            }
            .run()
        });
        // Dropped on the way out, a failed check's too: the thread stops,
        // so the failure is reported instead of the scope waiting for ever.
        let _stop = stop_tx;
        body(&rx, &slot);
    });
}

/// Sets its flag when dropped (a failed check's unwinding included).
struct SetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
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

/// One serial line of a flight recording, taken apart.
#[derive(Debug)]
struct Exchange {
    micros: u64,
    port: String,
    address: String,
    direction: String,
    bytes: Vec<u8>,
}

fn exchanges(text: &str) -> Vec<Exchange> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# rs485 "))
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 5, "{l}");
            let (secs, micros) = w[0].trim_matches(['(', ')']).split_once('.').unwrap();
            Exchange {
                micros: secs.parse::<u64>().unwrap() * 1_000_000 + micros.parse::<u64>().unwrap(),
                port: w[1].to_string(),
                address: w[2].to_string(),
                direction: w[3].to_string(),
                bytes: bms_gateway::recorder::serial::unescape(w[4]).unwrap(),
            }
        })
        .collect()
}

fn unix_micros() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_micros() as u64
}

#[test]
fn the_flight_recorder_keeps_the_exchanges_byte_for_byte() {
    use bms_gateway::recorder::{Reason, Recorder};
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let port = link.to_string_lossy().into_owned();
    let text = format!(
        "GATEWAY-ACTIVATED = true\nSTATE-DIR = {:?}\n[[bmses-in]]\nSERIAL-PORT = {port:?}\nADDRESS = 2\n\
         CAPACITY-AH = 100\nPOLL-INTERVAL = 0.2\n[[bmses-out]]\nCAN-IF = \"inv1\"\n[mqtt]\nACTIVATED = false\n\
         [recorder]\nSECONDS = 60\n",
        dir.path()
    );
    let config = bms_gateway::config::parse(&text).unwrap();
    let recorder = Recorder::new(&config, Some(dir.path()));
    let _sim = Sim::start(&link, &["--protocol", "pylon", "--address", "2"]);
    let before = unix_micros();
    let opener = recorder.serial_opener(&Devices);
    with_poller_via(&config.inputs[0], &opener, |rx, _| {
        // Two complete cycles: the first one's exchanges are all recorded.
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(20)).expect("a telegram");
        }
    });
    let after = unix_micros();
    let events = bms_gateway::events::Events::default();
    let (stop_tx, stop) = bms_gateway::shutdown::channel();
    let written = std::thread::scope(|s| {
        s.spawn(|| recorder.run(&events, &stop));
        let written = recorder.ask(Reason::Request);
        stop_tx.stop();
        written
    })
    .expect("a recording");
    let recorded = std::fs::read_to_string(&written.path).unwrap();
    let seen = exchanges(&recorded);
    // The first cycle, worked out from the reference: the requests are its
    // §1.4 table's (0x42, 0x92 and 0x44 to ADR 2 with INFO 02; e.g. 0x42's
    // CHKSUM is 0x10000 - 0x02CD = 0xFD33), the answers are capture V7's,
    // the simulator's pack, as the bytes on the wire.
    let first_cycle: [(&str, &str); 6] = [
        ("tx", "~20024642E00202FD33\r"),
        (
            "rx",
            "~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r",
        ),
        ("tx", "~20024692E00202FD2E\r"),
        ("rx", "~20024600B01402D002AFC800C8FE0CC0F915\r"),
        ("tx", "~20024644E00202FD31\r"),
        (
            "rx",
            "~20024600A04200020F000000000000000000000000000000050000000000000000000E80000000F101\r",
        ),
    ];
    assert!(seen.len() >= 8, "{recorded}");
    for (k, (direction, bytes)) in first_cycle.iter().enumerate() {
        let e = &seen[k];
        assert_eq!(
            (e.direction.as_str(), e.bytes.as_slice()),
            (*direction, bytes.as_bytes()),
            "exchange {k} in\n{recorded}"
        );
    }
    // Every line: this port, ADR 2, in time order within the test's run.
    for pair in seen.windows(2) {
        assert!(pair[0].micros <= pair[1].micros, "{recorded}");
    }
    for e in &seen {
        assert_eq!((e.port.as_str(), e.address.as_str()), (port.as_str(), "adr=02"));
        assert!(e.micros >= before && e.micros <= after, "{e:?}");
    }
    // A later cycle's 0x42 is the same request again, answered the same.
    let analog: Vec<&Exchange> = seen.iter().filter(|e| e.bytes == first_cycle[0].1.as_bytes()).collect();
    assert!(analog.len() >= 2, "{recorded}");
    assert_eq!(written.frames, seen.len());
}

/// `GET path` from the status server at `addr`: the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[test]
fn fault_counts_by_kind_reach_the_state_api_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let port = link.to_string_lossy().into_owned();
    let text = format!(
        "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nSERIAL-PORT = {port:?}\nCAPACITY-AH = 100\nPOLL-INTERVAL = 0.2\n\
         [[bmses-out]]\nCAN-IF = \"inv1\"\n[mqtt]\nACTIVATED = false\n"
    );
    let config = bms_gateway::config::parse(&text).unwrap();
    let board = std::sync::Arc::new(StatusBoard::new(1, 1));
    let _sim = Sim::start(&link, &["--bad-checksum"]);
    with_poller_on(&board, &config.inputs[0], &Devices, |_, slot| {
        wait_for(slot, "checksum errors", |s| {
            s.serial_faults.get(SerialFault::Checksum) >= 3
        });
    });
    // The thread has stopped: the counts stay as they are now.
    let faults = board.input_slot(0).update(|s| s.serial_faults);
    let checksum = faults.get(SerialFault::Checksum);
    // Every answer has a wrong CHKSUM, and answers come: nothing else.
    assert_eq!(faults.total(), checksum, "{faults:?}");

    let server = bms_gateway::http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop) = bms_gateway::shutdown::channel();
    let served = board.clone();
    let served_config = config.clone();
    std::thread::spawn(move || {
        let (events, recorder) = (
            bms_gateway::events::Events::default(),
            bms_gateway::recorder::Recorder::default(),
        );
        server.run(&served_config, &served, &events, &recorder, &stop)
    });

    let state: serde_json::Value = serde_json::from_str(&http_get(addr, "/api/state")).unwrap();
    let b = &state["batteries"][0];
    let want = serde_json::json!({"timeout": 0, "checksum": checksum, "length": 0, "echo": 0, "wrong_address": 0,
        "garbage": 0, "partial": 0, "refused": 0, "undecodable": 0, "implausible": 0});
    assert_eq!(b["serial_faults"], want, "{b}");
    assert_eq!(b["invalid"], serde_json::json!(checksum));

    let metrics = http_get(addr, "/metrics");
    let labels = format!("battery=\"1\",can_if=\"{port}#2\"");
    for kind in SerialFault::ALL {
        let n = if kind == SerialFault::Checksum { checksum } else { 0 };
        let line = format!(
            "bms_gateway_battery_serial_faults_total{{{labels},kind=\"{}\"}} {n}.0\n",
            kind.name()
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(metrics.contains("# TYPE bms_gateway_battery_serial_faults_total counter\n"));
    promtool_check(&metrics, &dir.path().join("metrics.txt"));
    stop_tx.stop();
}

/// A test's own pack on a pty: answers each request it knows (by its exact
/// characters) with the given frame, and every other with `other`, until
/// `done` is set.
fn play_frames(link: &Path, answers: &[(&str, &str)], other: &str, done: &std::sync::atomic::AtomicBool) {
    use bms_gateway::serial::SerialPort;
    use std::sync::atomic::Ordering;
    let pty = bms_gateway::serial::pty::LinkedPty::create(link).unwrap();
    let mut port = bms_gateway::serial::device::Device::from_port(pty.master.try_clone().unwrap());
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !done.load(Ordering::Relaxed) {
        let n = port
            .read_until(&mut buf, Instant::now() + Duration::from_millis(50))
            .unwrap();
        for &b in &buf[..n] {
            got.push(b);
            if b == b'\r' {
                let request = String::from_utf8_lossy(&got).into_owned();
                let answer = answers.iter().find(|(q, _)| *q == request).map_or(other, |(_, a)| *a);
                port.write_all(answer.as_bytes()).unwrap();
                got.clear();
            }
        }
    }
    drop(pty);
}

#[test]
fn a_seplos_pack_that_refuses_0x92_gives_no_telegram_and_its_refusals_are_counted() {
    use std::sync::atomic::AtomicBool;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let mut config = config(&link, Protocol::Seplos);
    config.serial.as_mut().unwrap().address = 0;
    // The reference's V9 exchange (§5): 0x42 to ADR 0 and its answer.
    let analog = (
        "~20004642E00200FD37\r",
        "~2000460010960001100CD70CE90CF40CD60CEF0CE50CE10CDC0CE90CF00CE80CEF0CEA0CDA0CDE0CD8060BA60BA00B970BA60BA50BA2FD5C14A0344E0A426803134650004603E8149F0000000000000000DC6C\r",
    );
    // Anything else, 0x92 first, is refused as an unknown command: RTN 04
    // from ADR 0. By hand: the ASCII of 200046040000 sums to
    // 0x32 + 0x34 + 0x36 + 0x34 + 8 x 0x30 = 0x250, 0x10000 - 0x250 = 0xFDB0
    // (the reference's ADR 2 copy, ~200246040000FDAE, sums 2 more).
    let refused = "~200046040000FDB0\r";
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| play_frames(&link, &[analog], refused, &done));
        let _done = SetOnDrop(&done);
        // The pack's link exists before the poller first opens it.
        while std::fs::symlink_metadata(&link).is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
        with_poller(&config, |rx, slot| {
            wait_for(slot, "refusals", |s| s.serial_faults.get(SerialFault::Refused) >= 3);
            assert!(rx.try_recv().is_err(), "no telegram without 0x92");
            let (telegrams, link_state, frames) = slot.update(|s| (s.telegrams, s.link.clone(), s.frames));
            assert_eq!(telegrams, 0);
            // The link is fine: the pack answers, 0x42 and the refusals.
            assert_eq!(link_state, LinkState::Up);
            assert!(frames >= 6, "{frames}");
        });
    });
}

/// `scan`'s probe of one port on which `sim-bms` plays `protocol` at `address`.
fn probe_sim(protocol: &str, address: &str) -> Vec<bms_gateway::scan::serial::FoundPack> {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let _sim = Sim::start(&link, &["--protocol", protocol, "--address", address]);
    bms_gateway::scan::serial::probe(&Devices, &link.to_string_lossy()).expect("the port opens")
}

#[test]
fn scan_tells_a_seplos_pack_from_a_pylon_one_on_a_pty() {
    use bms_gateway::scan::serial::Told;
    // sim-bms answers 0x42 with the reference's V9 (Seplos, 10 mV units:
    // 5280 x 10 mV = 52.80 V, its 16 cells sum to 52.805 V) and V7 (Pylon:
    // 50.247 V, its 15 cells sum to 50.247 V); both answer 0x4F with VER 0x20.
    let seplos = probe_sim("seplos", "0");
    assert_eq!(seplos.len(), 1, "{seplos:?}");
    let p = &seplos[0];
    assert_eq!((p.address, p.baud, p.version), (0, 115_200, 0x20));
    assert_eq!((p.protocol, p.told), (Protocol::Seplos, Told::Cells));
    let pylon = probe_sim("pylon", "2");
    assert_eq!(pylon.len(), 1, "{pylon:?}");
    assert_eq!((pylon[0].address, pylon[0].version), (2, 0x20));
    assert_eq!((pylon[0].protocol, pylon[0].told), (Protocol::Pylon, Told::Cells));
    // PACE answers with its own VER 0x25.
    let pace = probe_sim("pace", "1");
    assert_eq!((pace[0].address, pace[0].version), (1, 0x25));
    assert_eq!((pace[0].protocol, pace[0].told), (Protocol::Pace, Told::Version));
    // And the report says how each was told.
    let report = bms_gateway::scan::serial::report(&[("/dev/ttyS".into(), Ok(seplos))]);
    assert_eq!(
        report,
        "/dev/ttyS: RS485 pack at address 0 (115200 baud, VER 0x20, protocol seplos, \
         by its 0x42: pack voltage = sum of the cells in these units)\n"
    );
}

#[test]
fn an_answer_to_another_request_is_not_taken_for_0x92s() {
    use std::sync::atomic::AtomicBool;
    // A late answer lands in 0x92's wait: here the pack answers 0x92 with
    // its 0x42 answer (the reference's V7). Read as 0x92 it would give
    // command 0x00, CVL 0x020F = 0.527 V, CCL 334.8 A, status 0x0D (charge
    // and discharge forbidden): a telegram the bank would take. 0x92's
    // command value is the ADR asked and its INFO 10 bytes (reference
    // §3.6): this one is neither, so it is refused, and no telegram is made.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyBAT");
    let config = config(&link, Protocol::Pylon);
    let analog = "~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r";
    let alarms = "~20024600A04200020F000000000000000000000000000000050000000000000000000E80000000F101\r";
    let answers = [
        ("~20024642E00202FD33\r", analog),
        ("~20024692E00202FD2E\r", analog),
        ("~20024644E00202FD31\r", alarms),
    ];
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| play_frames(&link, &answers, "~200246040000FDAE\r", &done));
        let _done = SetOnDrop(&done);
        while std::fs::symlink_metadata(&link).is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
        with_poller(&config, |rx, slot| {
            wait_for(slot, "refused 0x92 answers, or a telegram", |s| {
                s.serial_faults.get(SerialFault::Undecodable) >= 3 || s.telegrams > 0
            });
            if let Ok(d) = rx.try_recv() {
                panic!("a telegram from a 0x42 answer read as 0x92: {:?}", d.telegram.limits);
            }
            assert_eq!(slot.update(|s| s.telegrams), 0);
        });
    });
}
