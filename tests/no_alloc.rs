//! What the CAN path calls for every telegram or transmission allocates
//! nothing, nor does an RS485 poll cycle after start: the energy counters'
//! update, the link report of an unchanged link (which once formatted its
//! label on every call), and the flight
//! recorder's copy of each frame. Counted by a global
//! allocator, per thread, so that other tests' threads do not count.

mod config_text;

use bms_gateway::can::report_link;
use bms_gateway::context::ThreadContext;
use bms_gateway::events::{Events, Subject};
use bms_gateway::frame::Frame;
use bms_gateway::recorder::Recorder;
use bms_gateway::sim::{BatteryParams, SimAlarms};
use bms_gateway::status::{LinkState, StatusBoard};
use bms_gateway::telegram::{Assembler, BURST_GAP};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(|n| n.get());
    f();
    ALLOCS.with(|n| n.get()) - before
}

#[test]
fn the_per_telegram_and_per_transmission_work_allocates_nothing() {
    let board = StatusBoard::new(2, 1);
    let events = Events::default();
    let now = Instant::now();
    let mut a = Assembler::default();
    let burst = BatteryParams::default().burst(0.0, SimAlarms::default());
    for f in &burst {
        a.push(&bms_gateway::codec::decode(f).unwrap(), now);
    }
    // The first burst ends after a quiet gap.
    let telegram = a.poll(now + BURST_GAP).expect("a burst completes a telegram");
    let up = LinkState::Up;
    let n = allocations(|| {
        for k in 0..10_000u64 {
            let at = now + Duration::from_millis(200 * k);
            board.input(1, |s| s.energy.on_telegram(&telegram, at, Duration::from_secs(5)));
            report_link(&events, Subject::Inverter(0), || format!("inverter {k}"), &up, &up);
        }
    });
    assert_eq!(n, 0);
    // The counters did count: 49.86 V x -27 A for 9999 x 0.2 s.
    let kwh = board.input(1, |s| s.energy.total.discharged_kwh);
    assert!((kwh - 49.86 * 27.0 * 9999.0 * 0.2 / 3.6e6).abs() < 1e-9, "{kwh}");
    // And a real change is reported (and may allocate).
    report_link(
        &events,
        Subject::Inverter(0),
        || "inverter 1 (can9)".into(),
        &LinkState::Opening,
        &LinkState::Down("gone".into()),
    );
    assert_eq!(events.after(0)[0].message, "inverter 1 (can9): gone");
}

#[test]
fn recording_a_frame_allocates_nothing() {
    let state = tempfile::tempdir().unwrap();
    let text = config_text::ConfigText::new()
        .input("can0", 100.0, "")
        .output("can1", "")
        .text();
    let config = bms_gateway::config::parse(&text).unwrap();
    let recorder = Recorder::new(&config, Some(state.path()));
    let frame = Frame::standard(0x351, &[0x14, 0x02, 0xC0, 0x12, 0x20, 0x03, 0xE0, 0x01]);
    // 300 s x (20 + 40) frames/s = 18000 slots: 50000 frames wrap it twice.
    let n = allocations(|| {
        for k in 0..50_000u32 {
            recorder.record((k % 2) as u8, &frame);
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn recording_a_serial_exchange_allocates_nothing() {
    use bms_gateway::recorder::serial::Direction;
    let state = tempfile::tempdir().unwrap();
    let text = "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nSERIAL-PORT = \"/dev/ttyUSB0\"\nCAPACITY-AH = 100\n\
                [[bmses-out]]\nCAN-IF = \"can1\"\n";
    let config = bms_gateway::config::parse(text).unwrap();
    let recorder = Recorder::new(&config, Some(state.path()));
    let request = b"~20024642E00202FD33\r";
    // 300 s x 6 entries/s = 1800 slots: 5000 requests of 2 entries wrap it.
    let long = [b'0'; 300];
    let n = allocations(|| {
        for _ in 0..5_000 {
            recorder.record_serial(0, Direction::Tx, Some(2), false, request);
            recorder.record_serial(0, Direction::Rx, Some(2), false, &long);
        }
    });
    assert_eq!(n, 0);
}

/// Spec 14: the interlock's check of each transmission allocates nothing:
/// shaping, encoding and the check of 10 000 transmissions of a live
/// state, for every profile, with a CVL ramp.
#[test]
fn a_checked_transmission_allocates_nothing() {
    use bms_gateway::combine::Combiner;
    use bms_gateway::interlock::Interlock;
    use bms_gateway::output::{checked_transmission, view_of};
    for profile in bms_gateway::profile::Profile::ALL {
        let text = config_text::ConfigText::new()
            .input("can0", 100.0, "")
            .output("can1", &format!("PROFILE = \"{}\"\nCVL-RAMP = 0.1", profile.name()))
            .text();
        let config = bms_gateway::config::parse(&text).unwrap();
        let now = Instant::now();
        let mut a = Assembler::default();
        for f in &BatteryParams::default().burst(0.0, SimAlarms::default()) {
            a.push(&bms_gateway::codec::decode(f).unwrap(), now);
        }
        let telegram = a.poll(now + BURST_GAP).expect("a burst completes a telegram");
        let mut combiner = Combiner::new(config.battery, &[100.0], now).with_inverters(&[config.outputs[0].share]);
        combiner.on_telegram(0, telegram, now).expect("a state");
        let shaped = combiner.shaped(now).next().unwrap();
        let (mut view, mut interlock) = (view_of(&config.outputs[0]), Interlock::default());
        let mut sent = 0;
        let n = allocations(|| {
            for k in 0..10_000u64 {
                let at = now + Duration::from_micros(100 * k);
                let checked = checked_transmission(&config.outputs[0], &mut view, &mut interlock, &shaped, at);
                sent += checked.frames.frames().len();
            }
        });
        assert_eq!(n, 0, "{}", profile.name());
        assert_eq!(interlock.trips, 0, "{}", profile.name());
        assert!(sent >= 60_000, "{}: {sent} frames", profile.name());
    }
}

/// A combiner round with every bank policy on (spec 15): the rules are pure
/// functions over fixed-size settings, so a round allocates nothing.
#[test]
fn a_combiner_round_with_every_bank_policy_allocates_nothing() {
    use bms_gateway::bank::{BankSettings, PerKind};
    use bms_gateway::combine::{BatterySettings, Combiner, InverterShare};
    use bms_gateway::policy::{ChargeStop, Curve, OnPackForbids, Policy, SocMode, Taper};
    let now = Instant::now();
    let mut a = Assembler::default();
    for f in &BatteryParams::default().burst(0.0, SimAlarms::default()) {
        a.push(&bms_gateway::codec::decode(f).unwrap(), now);
    }
    let telegram = a.poll(now + BURST_GAP).expect("a burst completes a telegram");
    let curve = Curve::new(&[(0.0, 0.2), (10.0, 1.0), (45.0, 1.0), (55.0, 0.0)]).unwrap();
    let settings = BatterySettings {
        bank: BankSettings {
            on_pack_forbids: OnPackForbids::Continue,
            ..BankSettings::default()
        },
        policy: Policy {
            derating: PerKind {
                charge: Some(curve),
                discharge: Some(curve),
            },
            charge_stop: Some(ChargeStop {
                stop: 90.0,
                resume: 85.0,
            }),
            soft_landing: PerKind {
                charge: Some(Taper { from: 80.0, to: 100.0 }),
                discharge: Some(Taper { from: 20.0, to: 5.0 }),
            },
            soc_mode: SocMode::Usable,
        },
        ..BatterySettings::default()
    };
    let mut c = Combiner::new(settings, &[100.0, 100.0], now).with_inverters(&[InverterShare::default()]);
    c.on_telegram(0, telegram, now);
    c.on_telegram(1, telegram, now).expect("the first round");
    let n = allocations(|| {
        for k in 1..20 {
            let at = now + Duration::from_millis(500 * k);
            c.on_telegram(0, telegram, at);
            assert!(c.on_telegram(1, telegram, at).is_some());
        }
    });
    assert_eq!(n, 0, "allocations in 19 rounds");
}

/// A port that answers like capture V7's US5000 (reference §5) from fixed
/// bytes, refuses the static commands (RTN 04), and notes the poller
/// thread's allocation count at each 0x42 request: it runs on that thread.
mod canned {
    use super::ALLOCS;
    use bms_gateway::serial::{LineSettings, SerialError, SerialOpener, SerialPort};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Instant;

    const ANALOG: &[u8] = b"~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r";
    const MANAGEMENT: &[u8] = b"~20024600B01402D002AFC800C8FE0CC0F915\r";
    const ALARMS: &[u8] = b"~20024600A04200020F000000000000000000000000000000050000000000000000000E80000000F101\r";
    const REFUSED: &[u8] = b"~200246040000FDAE\r";

    pub static AT_ANALOG: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
    pub static ANALOG_ASKED: AtomicUsize = AtomicUsize::new(0);

    pub struct Port {
        pending: &'static [u8],
    }

    impl SerialPort for Port {
        fn write_all(&mut self, bytes: &[u8]) -> Result<(), SerialError> {
            self.pending = match &bytes[7..9] {
                b"42" => {
                    let k = ANALOG_ASKED.fetch_add(1, Ordering::SeqCst);
                    if let Some(slot) = AT_ANALOG.get(k) {
                        slot.store(ALLOCS.with(|n| n.get()), Ordering::SeqCst);
                    }
                    ANALOG
                }
                b"92" => MANAGEMENT,
                b"44" => ALARMS,
                _ => REFUSED,
            };
            Ok(())
        }

        fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, SerialError> {
            if self.pending.is_empty() {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                return Ok(0);
            }
            let n = self.pending.len().min(buf.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending = &self.pending[n..];
            Ok(n)
        }

        fn discard_input(&mut self) -> Result<(), SerialError> {
            self.pending = &[];
            Ok(())
        }
    }

    pub struct Opener;

    impl SerialOpener for Opener {
        fn open(&self, _: &str, _: LineSettings) -> Result<Box<dyn SerialPort>, SerialError> {
            Ok(Box::new(Port { pending: &[] }))
        }
    }
}

/// Spec 18's cost rule: once started, the RS485 thread's poll cycles
/// (request, answer, decoding, mapping, delivery) allocate nothing.
#[test]
fn an_rs485_poll_cycle_allocates_nothing_after_start() {
    use bms_gateway::config::{InputConfig, SerialInput};
    use bms_gateway::rs485::Protocol;
    use bms_gateway::serial::LineSettings;
    use bms_gateway::serial_input::{SerialBuses, SerialPack};
    use std::sync::atomic::Ordering;
    let serial = SerialInput {
        port: "/dev/ttyCANNED".into(),
        address: 2,
        baud: 115_200,
        protocol: Protocol::Pylon,
        rs485_mode: false,
    };
    let config = InputConfig {
        can_if: serial.name(),
        description: String::new(),
        capacity_ah: 100.0,
        poll_interval: Some(Duration::from_millis(10)),
        serial: Some(serial),
    };
    let board = StatusBoard::new(1, 0);
    let slot = board.input_slot(0);
    let events = Events::default();
    let (telegrams, rx) = crossbeam_channel::bounded(64);
    let (stop_tx, stop) = bms_gateway::shutdown::channel();
    let buses = SerialBuses::default();
    let line = LineSettings {
        baud: 115_200,
        rs485_mode: false,
    };
    let bus = buses.bus("/dev/ttyCANNED", line);
    std::thread::scope(|s| {
        s.spawn(|| {
            SerialPack {
                config: &config,
                opener: &canned::Opener,
                bus: &bus,
                telegrams: &telegrams,
                slot: &slot,
                context: ThreadContext::unwatched(&events, &stop, Duration::from_millis(100)),
            }
            .run()
        });
        let give_up = Instant::now() + Duration::from_secs(30);
        while canned::ANALOG_ASKED.load(Ordering::SeqCst) < 8 {
            assert!(Instant::now() < give_up, "the thread polls");
            // Keep the queue from filling: a full one is a different path.
            while rx.try_recv().is_ok() {}
            std::thread::sleep(Duration::from_millis(5));
        }
        stop_tx.stop();
    });
    let at = |k: usize| canned::AT_ANALOG[k].load(Ordering::SeqCst);
    // Cycle 0 reads the statics and 0x44; cycles 2 to 7 are 0x42 + 0x92 only.
    assert_eq!(at(7) - at(2), 0, "allocations in cycles 2 to 6");
    assert!(slot.update(|s| s.telegrams) >= 7);
}
