//! The serial thread's cycle logic on the in-process pair: what is asked,
//! in which order, how often, and two packs sharing one port.

use super::*;
use crate::rs485::Protocol;
use crate::serial::pair::{PairEnd, Pairs};
use crate::serial::sim_pack::SimPack;
use crate::shutdown::Stop;
use crate::status::StatusBoard;

/// One request as the pack side saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    adr: u8,
    cid1: u8,
    cid2: u8,
    at: Instant,
}

/// Answers `packs` on `end` and records every request, until `stop`.
fn respond(mut end: PairEnd, packs: &[SimPack], seen: &Mutex<Vec<Seen>>, stop: &Stop) {
    let mut receiver = Receiver::new();
    let mut buf = [0u8; 64];
    while !stop.requested() {
        let n = end
            .read_until(&mut buf, Instant::now() + Duration::from_millis(20))
            .unwrap();
        for &b in &buf[..n] {
            let Some(Ok(f)) = receiver.push(b) else { continue };
            let at = Instant::now();
            let (adr, cid1, cid2) = (f.adr, f.cid1, f.cid2);
            seen.lock().unwrap().push(Seen { adr, cid1, cid2, at });
            if let Some(answer) = packs.iter().find(|p| p.address == adr).and_then(|p| p.answer(cid2)) {
                end.write_all(&answer).unwrap();
            }
        }
    }
}

fn input(address: u8) -> InputConfig {
    let serial = SerialInput {
        port: "/dev/ttyTEST".into(),
        address,
        baud: 9600,
        protocol: Protocol::Pylon,
        rs485_mode: false,
    };
    InputConfig {
        can_if: serial.name(),
        description: String::new(),
        capacity_ah: 100.0,
        poll_interval: Some(Duration::from_millis(100)),
        serial: Some(serial),
    }
}

/// Polls the packs at `addresses` on one shared pair until `enough` of the
/// requests seen say so; returns the requests and the telegrams.
fn run(addresses: &[u8], enough: impl Fn(&[Seen]) -> bool) -> (Vec<Seen>, Vec<Delivery>) {
    let pairs = Pairs::new();
    let end = pairs.plug("/dev/ttyTEST");
    let packs: Vec<SimPack> = addresses.iter().map(|&a| SimPack::new(Protocol::Pylon, a)).collect();
    let configs: Vec<InputConfig> = addresses.iter().map(|&a| input(a)).collect();
    let board = StatusBoard::new(addresses.len(), 0);
    let events = crate::events::Events::default();
    let (telegrams, rx) = crossbeam_channel::unbounded();
    let (stop_tx, stop) = crate::shutdown::channel();
    let seen = Mutex::new(Vec::new());
    let buses = SerialBuses::default();
    let line = LineSettings {
        baud: 9600,
        rs485_mode: false,
    };
    std::thread::scope(|scope| {
        scope.spawn(|| respond(end, &packs, &seen, &stop));
        for (k, config) in configs.iter().enumerate() {
            let (slot, bus) = (board.input_slot(k), buses.bus("/dev/ttyTEST", line));
            let (pairs, telegrams, stop, events) = (&pairs, &telegrams, &stop, &events);
            scope.spawn(move || {
                SerialPack {
                    config,
                    opener: pairs,
                    bus: &bus,
                    telegrams,
                    slot: &slot,
                    context: ThreadContext::unwatched(events, stop, Duration::from_millis(100)),
                }
                .run()
            });
        }
        let give_up = Instant::now() + Duration::from_secs(20);
        while !enough(&seen.lock().unwrap()) {
            assert!(Instant::now() < give_up, "gave up: {:?}", seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(10));
        }
        stop_tx.stop();
    });
    (seen.into_inner().unwrap(), rx.try_iter().collect())
}

#[test]
fn the_first_cycle_asks_everything_then_only_analog_and_limits() {
    let (seen, telegrams) = run(&[2], |s| s.len() >= 11);
    let codes: Vec<u8> = seen.iter().map(|s| s.cid2).take(11).collect();
    // Spec 18: 0x42 + 0x92 every cycle, 0x44 at start (then every 10 s),
    // the statics at start; the next cycles within 10 s: 0x42 + 0x92.
    assert_eq!(
        codes,
        [0x42, 0x92, 0x44, 0x51, 0x93, 0x96, 0x47, 0x42, 0x92, 0x42, 0x92]
    );
    assert!(seen.iter().all(|s| s.cid1 == 0x46 && s.adr == 2));
    assert!(!telegrams.is_empty());
}

#[test]
fn packs_sharing_a_port_are_polled_in_turn_with_the_gap() {
    let cycles_of = |s: &[Seen], adr| s.iter().filter(|r| r.adr == adr && r.cid2 == 0x92).count();
    let (seen, telegrams) = run(&[2, 3], |s| cycles_of(s, 2) >= 3 && cycles_of(s, 3) >= 3);
    // A cycle is never cut by another pack's requests: each pack's 0x42 is
    // followed by its own 0x92 (and 0x44 and statics) before the other's.
    for (k, r) in seen.iter().enumerate() {
        if r.cid2 == 0x42 {
            let next = seen.get(k + 1).expect("the cycle goes on");
            assert_eq!((next.adr, next.cid2), (r.adr, 0x92), "{seen:?}");
        }
    }
    // The bus rests INTER_FRAME_GAP between two transactions, whoever
    // they are for: so two requests are at least that far apart.
    for w in seen.windows(2) {
        assert!(w[1].at - w[0].at >= INTER_FRAME_GAP, "{w:?}");
    }
    // In turn: once both packs have asked for the port, no pack has two
    // cycles in a row (both are always due: their cycles take longer than
    // their 100 ms POLL-INTERVAL). A plain mutex let pack 2 take the port
    // back at once, and pack 3 sometimes waited for ever.
    let starts: Vec<u8> = seen.iter().filter(|r| r.cid2 == 0x42).map(|r| r.adr).collect();
    let both_asked = starts.iter().position(|&a| a == 3).expect("pack 3 polled");
    for w in starts[both_asked..].windows(2) {
        assert_ne!(w[0], w[1], "two cycles in a row for one pack: {starts:?}");
    }
    let from: Vec<usize> = telegrams.iter().map(|d| d.input).collect();
    assert!(
        from.contains(&0) && from.contains(&1),
        "both packs make telegrams: {from:?}"
    );
}
