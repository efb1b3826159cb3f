//! What the CAN path calls for every telegram or transmission allocates
//! nothing: the energy counters' update and the link report of an unchanged
//! link (which once formatted its label on every call). Counted by a global
//! allocator, per thread, so that other tests' threads do not count.

use bms_gateway::can::report_link;
use bms_gateway::events::{Events, Subject};
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
