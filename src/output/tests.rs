//! Output tests: the frame set against hand-encoded bytes, the fail-safe on
//! old states, and the push timer.

use super::*;
use crate::codec::{BankStatus, CellExtremes, Flags, Manufacturer, Requests};
use crate::context::ThreadContext;
use crate::frame::CanId;
use crate::interlock::{Bounds, Direction};
use crate::profile::{Profile, VoltageUnit};
use crate::shutdown::Stop;

/// The default profile's frames for `b`.
fn frame_set(b: &Battery, name: Manufacturer) -> Frames {
    let shown = Shown {
        battery: *b,
        bank: BankStatus::default(),
        energy: None,
    };
    profile::frames(Profile::Pylon, &shown, name, VoltageUnit::Centivolt)
}

fn battery() -> Battery {
    Battery {
        v_charge_cmd: 53.2,
        i_lim_charge: 480.0,
        i_lim_discharge: 480.0,
        v_discharge_min: Some(45.0),
        soc: 88.4,
        soh: 94.0,
        v_avg: 49.86,
        i_total: -27.0,
        t_avg: 36.3,
        flags: Flags {
            n_modules: 6,
            ..Flags::default()
        },
        requests: Requests::NORMAL,
        cells: None,
        manufacturer: None,
        capacity_ah: 100.0,
    }
}

#[test]
fn frame_set_has_the_spec_order_and_the_reference_bytes() {
    let set = frame_set(&battery(), Manufacturer::new("PYLON").unwrap());
    let got: Vec<(u32, Vec<u8>)> = set.frames().iter().map(|f| (f.id.raw(), f.data().to_vec())).collect();
    let want: Vec<(u32, Vec<u8>)> = vec![
        (0x359, vec![0, 0, 0, 0, 6, 0x50, 0x4E]),
        (0x351, vec![0x14, 0x02, 0xC0, 0x12, 0xC0, 0x12, 0xC2, 0x01]),
        // SOC 88.4 % rounds to 88.
        (0x355, vec![0x58, 0x00, 0x5E, 0x00]),
        (0x356, vec![0x7A, 0x13, 0xF2, 0xFE, 0x6B, 0x01]),
        (0x35C, vec![0xC0, 0x00]),
        (0x35E, vec![0x50, 0x59, 0x4C, 0x4F, 0x4E, 0, 0, 0]),
    ];
    assert_eq!(got, want);
    assert!(set.frames().iter().all(|f| matches!(f.id, CanId::Standard(_))));
}

#[test]
fn cell_data_adds_0x373_last() {
    let mut b = battery();
    b.cells = Some(CellExtremes {
        v_cell_min: 3.288,
        v_cell_max: 3.313,
        t_cell_min: 17.0,
        t_cell_max: 25.0,
    });
    let set = frame_set(&b, Manufacturer::new("PYLON").unwrap());
    assert_eq!(set.frames().len(), 7);
    let last = set.frames()[6];
    assert_eq!(
        (last.id.raw(), last.data()),
        (0x373, &[0xD8, 0x0C, 0xF1, 0x0C, 0x22, 0x01, 0x2A, 0x01][..])
    );
}

fn shaped(battery: Battery, made_at: Instant, max_age: Duration) -> Shaped {
    Shaped {
        state: SystemState::Ok,
        battery,
        bank: BankStatus::default(),
        made_at,
        expires: made_at + max_age,
        last_cvl: battery.v_charge_cmd,
        energy: None,
        bounds: open_bounds(battery.v_charge_cmd),
    }
}

/// Interlock bounds that let any current through, with CVL up to `cvl`.
fn open_bounds(cvl: f64) -> Bounds {
    let open = Direction {
        enabled: true,
        cap: f64::MAX,
        share: f64::MAX,
        setpoint: None,
    };
    Bounds {
        charge: open,
        discharge: open,
        cvl,
        volts: 0.0,
    }
}

/// Regression included: the force-charge and full-charge requests of a state
/// no longer current are not passed on.
#[test]
fn an_old_state_is_sent_as_the_safe_state() {
    let t0 = Instant::now();
    let mut asking = battery();
    asking.requests.force_charge_request = true;
    asking.requests.balancing_charge_request = true;
    let max = Duration::from_secs(8);
    let shaped = shaped(asking, t0, max);
    assert_eq!(state_to_send(&shaped, t0 + max), (SystemState::Ok, asking));
    let (state, b) = state_to_send(&shaped, t0 + max + Duration::from_millis(1));
    assert_eq!(state, SystemState::Safe);
    assert_eq!((b.i_lim_charge, b.i_lim_discharge), (0.0, 0.0));
    // 0x35C byte 0 all clear: no enables, no requests.
    assert_eq!(
        frame_set(&b, Manufacturer::new("PYLON").unwrap()).frames()[4].data(),
        &[0, 0]
    );
    assert_eq!(b.flags.error_flags_2, 0x08);
    assert_eq!(b.v_charge_cmd, 53.2);
}

/// Regression: the output used to build its own safe state, which kept the
/// charge voltage of the old state; the core's keeps the last known one.
#[test]
fn an_old_state_goes_out_as_the_cores_safe_state() {
    let t0 = Instant::now();
    let max = Duration::from_secs(8);
    let mut s = shaped(battery(), t0, max);
    s.last_cvl = 52.4;
    let (state, sent) = state_to_send(&s, t0 + max + Duration::from_secs(1));
    assert_eq!(state, SystemState::Safe);
    assert_eq!(sent.v_charge_cmd, 52.4);
}

#[test]
fn a_state_turning_safe_by_age_is_sent_at_once() {
    let t0 = Instant::now();
    let ms = |n| Duration::from_millis(n);
    let max = Duration::from_secs(8);
    let shaped = Shaped {
        state: SystemState::Ok,
        battery: battery(),
        bank: BankStatus::default(),
        made_at: t0,
        expires: t0 + max,
        last_cvl: 53.2,
        energy: None,
        bounds: open_bounds(53.2),
    };
    let at = fail_safe_at(&shaped).unwrap();
    assert_eq!(at, t0 + max + Duration::from_nanos(1));
    assert_eq!(state_to_send(&shaped, at - Duration::from_nanos(1)).0, SystemState::Ok);
    assert_eq!(state_to_send(&shaped, at).0, SystemState::Safe);
    let safe = Shaped {
        state: SystemState::Safe,
        ..shaped
    };
    assert_eq!(fail_safe_at(&safe), None, "already safe: nothing changes by age");
    // Last sent at 7.5 s (the once-per-second repeat); PUSH-MIN-DELAY 300 ms.
    let mut t = PushTimer {
        min_delay: ms(300),
        last_sent: Some(t0 + ms(7500)),
        pending: false,
    };
    assert_eq!(t.watch_fail_safe(Some(at), t0 + ms(7600)), Some(at), "wake for it");
    assert!(!t.pending);
    assert_eq!(t.watch_fail_safe(Some(at), at), None);
    assert!(t.pending, "the safe state is a new state");
    assert_eq!(t.due(true, at), Some(t0 + ms(7800)), "due at once (7.8 s is past)");
    // Sent after it turned safe: nothing new any more.
    t.pending = false;
    t.last_sent = Some(at);
    assert_eq!(t.watch_fail_safe(Some(at), at + ms(500)), None);
    assert!(!t.pending);
}

#[test]
fn push_timer_respects_min_delay_and_repeats_every_second() {
    let t0 = Instant::now();
    let ms = |n| Duration::from_millis(n);
    let mut t = PushTimer {
        min_delay: ms(300),
        last_sent: None,
        pending: false,
    };
    assert_eq!(t.due(false, t0), None);
    assert_eq!(t.due(true, t0), Some(t0));
    t.last_sent = Some(t0);
    assert_eq!(t.due(true, t0), Some(t0 + ms(1000)));
    t.pending = true;
    assert_eq!(t.due(true, t0), Some(t0 + ms(300)));
    // A min delay above one second cannot stop the once-per-second repeat.
    t.min_delay = ms(5000);
    assert_eq!(t.due(true, t0), Some(t0 + ms(1000)));
}

#[test]
fn mailbox_keeps_only_the_latest() {
    let m = Mailbox::default();
    let t0 = Instant::now();
    let mut s = shaped(battery(), t0, Duration::from_secs(8));
    m.put(s);
    s.battery.soc = 10.0;
    m.put(s);
    assert_eq!(m.take().map(|s| s.battery.soc), Some(10.0));
    assert_eq!(m.take(), None);
    assert!(m.wake().try_recv().is_ok(), "two puts ring once");
    assert!(m.wake().try_recv().is_err(), "two puts ring once");
}

#[test]
fn the_profile_paces_pushes() {
    let mut c = crate::config::parse("GATEWAY-ACTIVATED = true\n[[bmses-in]]\nCAN-IF = \"a\"\nCAPACITY-AH = 1\n[[bmses-out]]\nCAN-IF = \"b\"\nPROFILE = \"sma\"\n")
        .unwrap()
        .outputs
        .remove(0);
    assert_eq!(min_delay(&c), Duration::from_millis(200), "SMA: 200 ms per ID");
    c.push_min_delay = Duration::from_millis(500);
    assert_eq!(min_delay(&c), Duration::from_millis(500));
    c.profile = Profile::Pylon;
    c.push_min_delay = Duration::ZERO;
    assert_eq!(min_delay(&c), Duration::ZERO);
}

/// Delays the last frame (0x35F) of every other SMA transmission by 60 ms
/// before writing it, and records when each frame was written.
struct SlowEveryOther {
    bus: crate::can::virtual_bus::VirtualBus,
    written: std::sync::Arc<std::sync::Mutex<Vec<(Instant, u32)>>>,
}

struct SlowPort {
    inner: Box<dyn CanPort>,
    written: std::sync::Arc<std::sync::Mutex<Vec<(Instant, u32)>>>,
    last_frames: usize,
}

impl crate::can::CanOpener for SlowEveryOther {
    fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError> {
        Ok(Box::new(SlowPort {
            inner: self.bus.open(interface)?,
            written: self.written.clone(),
            last_frames: 0,
        }))
    }
}

impl CanPort for SlowPort {
    fn read(&mut self, timeout: Duration) -> Result<Option<Frame>, CanError> {
        self.inner.read(timeout)
    }
    fn read_until(&mut self, deadline: Instant, stop: &Stop) -> Result<crate::can::Wake, CanError> {
        self.inner.read_until(deadline, stop)
    }
    fn write(&mut self, frame: &Frame) -> Result<(), CanError> {
        let id = frame.id.raw();
        if id == 0x35F {
            self.last_frames += 1;
            if self.last_frames % 2 == 1 {
                std::thread::sleep(Duration::from_millis(60));
            }
        }
        self.inner.write(frame)?;
        self.written.lock().unwrap().push((Instant::now(), id));
        Ok(())
    }
}

/// Regression (a VM run saw 193 ms): SMA's 200 ms per ID holds from the
/// write of the frame, even when the previous transmission was slow to go
/// out. New states arrive every 20 ms, so every push waits for the pacing.
#[test]
fn sma_pacing_counts_from_the_end_of_the_previous_transmission() {
    let config = crate::config::parse(
        "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nCAN-IF = \"a\"\nCAPACITY-AH = 1\n\
         [[bmses-out]]\nCAN-IF = \"inv\"\nPROFILE = \"sma\"\n",
    )
    .unwrap()
    .outputs
    .remove(0);
    let bus = crate::can::virtual_bus::VirtualBus::new();
    bus.create("inv");
    let opener = SlowEveryOther {
        bus,
        written: Default::default(),
    };
    let board = crate::status::StatusBoard::new(0, 1);
    let slot = board.output_slot(0);
    let events = crate::events::Events::default();
    let mailbox = Mailbox::default();
    let (stop_tx, stop) = crate::shutdown::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            Output {
                config: &config,
                opener: &opener,
                mailbox: &mailbox,
                slot: &slot,
                recovery: crate::dead_link::RecoverySettings::default(),
                context: ThreadContext::unwatched(&events, &stop, Duration::from_secs(5)),
            }
            .run(Carried::default())
        });
        let start = Instant::now();
        let mut soc = 10.0;
        while start.elapsed() < Duration::from_millis(1600) {
            let mut b = battery();
            soc += 1.0;
            b.soc = soc;
            mailbox.put(shaped(b, Instant::now(), Duration::from_secs(8)));
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stop_tx);
    });
    let written = opener.written.lock().unwrap();
    let mut last: std::collections::HashMap<u32, Instant> = Default::default();
    let mut shortest = Duration::MAX;
    for &(at, id) in written.iter() {
        if let Some(before) = last.insert(id, at) {
            shortest = shortest.min(at - before);
        }
    }
    let sets = written.iter().filter(|(_, id)| *id == 0x35F).count();
    assert!(sets >= 4, "only {sets} transmissions in 1.6 s");
    assert!(
        shortest >= Duration::from_millis(200),
        "an ID went out again after {shortest:?}"
    );
}

/// Spec 14: a set the interlock refuses is not sent: the safe state goes out
/// instead, and the trip is counted. 480 A shaped against a bound of 100 A
/// (this inverter's cap in the bounds, as a shaping mistake would leave it).
#[test]
fn a_refused_set_is_replaced_by_the_safe_state() {
    let config = crate::config::parse(
        "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nCAN-IF = \"a\"\nCAPACITY-AH = 1\n[[bmses-out]]\nCAN-IF = \"b\"\n",
    )
    .unwrap();
    let out = &config.outputs[0];
    let t0 = Instant::now();
    let mut s = shaped(battery(), t0, Duration::from_secs(8));
    s.bounds.discharge.cap = 100.0;
    let (mut view, mut interlock) = (view_of(out), Interlock::default());
    let checked = checked_transmission(out, &mut view, &mut interlock, &s, t0);
    let trip = checked.trip.expect("refused");
    assert_eq!(
        trip.rule,
        crate::interlock::Rule::Cap(crate::setpoint::LimitKind::Discharge)
    );
    assert_eq!((trip.sent, trip.bound), (480.0, 100.0));
    assert_eq!(checked.state, SystemState::Safe);
    assert_eq!(interlock.trips, 1);
    // 0x351 as sent: CVL 53.2 V, CCL and DCL 0 A; 0x35C all clear.
    let limits = checked.frames.frames().iter().find(|f| f.id.raw() == 0x351).unwrap();
    assert_eq!(&limits.data()[..6], &[0x14, 0x02, 0, 0, 0, 0]);
    let requests = checked.frames.frames().iter().find(|f| f.id.raw() == 0x35C).unwrap();
    assert_eq!(requests.data()[0], 0);
    // Within its bounds the same state goes out as shaped.
    s.bounds.discharge.cap = 480.0;
    let checked = checked_transmission(out, &mut view, &mut interlock, &s, t0 + Duration::from_secs(1));
    assert_eq!(
        (checked.trip, checked.state, interlock.trips),
        (None, SystemState::Ok, 1)
    );
}

/// Waits (bounded) until `events` holds one of `kind`.
fn wait_for_event(events: &crate::events::Events, kind: Kind) -> Option<crate::events::Event> {
    let give_up = Instant::now() + Duration::from_secs(20);
    while Instant::now() < give_up {
        if let Some(e) = events.after(0).into_iter().find(|e| e.kind == kind) {
            return Some(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Spec 17 wired into the output thread: an interface on which every
/// transmission fails for RECOVER-AFTER is reported once with the command,
/// and the first transmission that goes out again reports it working.
#[test]
fn an_inverter_interface_whose_sends_all_fail_is_reported_with_the_command() {
    let config = crate::config::parse(
        "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nCAN-IF = \"a\"\nCAPACITY-AH = 1\n\
         [[bmses-out]]\nCAN-IF = \"inv\"\n",
    )
    .unwrap()
    .outputs
    .remove(0);
    let bus = crate::can::virtual_bus::VirtualBus::new();
    bus.create("inv");
    let board = crate::status::StatusBoard::new(0, 1);
    let slot = board.output_slot(0);
    let events = crate::events::Events::default();
    let mailbox = Mailbox::default();
    let (stop_tx, stop) = crate::shutdown::channel();
    let after = Duration::from_secs(2);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            Output {
                config: &config,
                opener: &bus,
                mailbox: &mailbox,
                slot: &slot,
                recovery: crate::dead_link::RecoverySettings {
                    mode: crate::dead_link::RecoverMode::Off,
                    after,
                },
                context: ThreadContext::unwatched(&events, &stop, Duration::from_millis(200)),
            }
            .run(Carried::default())
        });
        // Far from stale: the output repeats it every second.
        mailbox.put(shaped(battery(), Instant::now(), Duration::from_secs(600)));
        while slot.update(|s| s.frames_sent == 0) {
            std::thread::sleep(Duration::from_millis(5));
        }
        bus.set_up("inv", false);
        let down_at = Instant::now();
        let dead = wait_for_event(&events, Kind::InterfaceRecoveryFailed).expect("reported dead");
        assert!(down_at.elapsed() >= after);
        assert_eq!(
            dead.message,
            "inverter 1 (inv): every transmission fails for 2 s: the interface looks dead. The gateway cannot take it down and up itself; to revive it, run as root: ip link set inv down && ip link set inv up"
        );
        bus.set_up("inv", true);
        let back = wait_for_event(&events, Kind::InterfaceRecovered).expect("reported back");
        assert!(
            back.message.starts_with("inverter 1 (inv): traffic is back"),
            "{}",
            back.message
        );
        let dead_reports = events.after(0);
        let dead_reports = dead_reports.iter().filter(|e| e.kind == Kind::InterfaceRecoveryFailed);
        assert_eq!(dead_reports.count(), 1);
        drop(stop_tx);
    });
}
