//! Telegram assembly at a real BMS's timing (bursts every 1 s, frames 85 ms
//! apart, docs/combining.md "Telegram assembly"). Every value carries the
//! number of the burst that sent it, so a telegram that mixes two bursts shows.

use super::*;
use crate::codec::decode;
use crate::frame::Frame;
use proptest::prelude::*;

/// Real burst order; each frame 85 ms after the one before.
const ORDER: [u16; 7] = [0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E, 0x373];
const SPACING: u64 = 85;
const PERIOD: u64 = 1000;
/// When the last frame of burst `k` arrives.
fn end(k: u64) -> u64 {
    k * PERIOD + 6 * SPACING
}

/// Frame `id` of burst `k`: every value is `k` (0x35C: its low three bits
/// in the request bits), charge allowed when `charge`.
fn frame(id: u16, k: u64, charge: bool) -> Message {
    let x = k as f64;
    match id {
        0x359 => Message::Flags(Flags {
            n_modules: k as u8,
            ..Flags::default()
        }),
        0x351 => Message::Limits(Limits {
            v_charge_cmd: 53.2,
            i_lim_charge: x,
            i_lim_discharge: x,
            v_discharge_min: None,
        }),
        0x355 => Message::StateOfCharge(StateOfCharge {
            soc: x,
            soh: 100.0,
            soc_hires: None,
        }),
        0x356 => Message::Measurements(Measurements {
            v_avg: x,
            i_total: 0.0,
            t_avg: 20.0,
        }),
        0x35C => Message::Requests(Requests {
            charge_enable: charge,
            discharge_enable: true,
            force_charge_request: k & 1 != 0,
            force_charge_request_2: k & 2 != 0,
            balancing_charge_request: k & 4 != 0,
        }),
        0x35E => Message::Manufacturer(Manufacturer::new(&format!("B{k}")).unwrap()),
        0x373 => Message::Cells(CellExtremes {
            v_cell_min: x,
            v_cell_max: 3.4,
            t_cell_min: 20.0,
            t_cell_max: 25.0,
        }),
        _ => unreachable!("{id:#x}"),
    }
}

/// The burst numbers a telegram's values came from, one per value present.
fn origins(t: &Telegram) -> Vec<u64> {
    let mut k = vec![
        u64::from(t.flags.n_modules),
        t.limits.i_lim_charge as u64,
        t.soc.soc as u64,
        t.measurements.v_avg as u64,
    ];
    if let Some(m) = t.manufacturer {
        k.push(m.name()[1..].parse().unwrap());
    }
    if let Some(c) = t.cells {
        k.push(c.v_cell_min as u64);
    }
    k
}

/// The burst a telegram was made from; panics if it mixes bursts.
fn origin(t: &Telegram) -> u64 {
    let k = origins(t);
    assert!(k.iter().all(|&x| x == k[0]), "a telegram from bursts {k:?}");
    if let Some(r) = t.requests {
        let low = u64::from(r.force_charge_request)
            | u64::from(r.force_charge_request_2) << 1
            | u64::from(r.balancing_charge_request) << 2;
        assert_eq!(low, k[0] & 7, "0x35C from another burst than {}", k[0]);
    }
    k[0]
}

/// Bursts `0..n` at the real timing, charge allowed: (ms, message).
fn real_bursts(n: u64) -> Vec<(u64, Message)> {
    (0..n)
        .flat_map(|k| {
            ORDER
                .iter()
                .enumerate()
                .map(move |(i, &id)| (k * PERIOD + i as u64 * SPACING, frame(id, k, true)))
        })
        .collect()
}

/// Feeds timed frames as the input thread does: it wakes at the assembler's
/// deadline when no frame comes sooner. Returns each telegram with when it
/// was made (ms).
fn run(frames: &[(u64, Message)]) -> Vec<(u64, Telegram)> {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ms = |i: Instant| i.duration_since(t0).as_millis() as u64;
    let mut a = Assembler::default();
    let mut out = Vec::new();
    let wake = |a: &mut Assembler, before: Option<u64>, out: &mut Vec<(u64, Telegram)>| {
        if let Some(d) = a.next_deadline().filter(|&d| before.is_none_or(|b| d <= at(b)))
            && let Some(t) = a.poll(d)
        {
            out.push((ms(d), t));
        }
    };
    for (t, m) in frames {
        wake(&mut a, Some(*t), &mut out);
        if let Some(telegram) = a.push(m, at(*t)) {
            out.push((*t, telegram));
        }
    }
    wake(&mut a, None, &mut out);
    out
}

/// Regression: wherever in a burst listening starts, every telegram is one
/// burst's, and each burst reaches the combiner at its own end (the first
/// burst seen whole at most BURST_GAP later), never with the next burst.
#[test]
fn every_start_phase_gives_one_burst_per_telegram_at_its_end() {
    let all = real_bursts(5);
    for phase in (0..PERIOD).step_by(5) {
        let frames: Vec<_> = all.iter().copied().filter(|(t, _)| *t >= phase).collect();
        let got = run(&frames);
        let made: Vec<(u64, u64)> = got.iter().map(|(at, t)| (origin(t), *at)).collect();
        // Bursts seen from their first frame.
        let first = phase.div_ceil(PERIOD);
        let want: Vec<u64> = (first..5).collect();
        let bursts: Vec<u64> = made.iter().map(|m| m.0).collect();
        assert_eq!(bursts, want, "phase {phase} ms: telegrams from bursts {made:?}");
        for &(k, at) in &made {
            assert!(
                at >= end(k) && at <= end(k) + 250,
                "phase {phase}: burst {k} made at {at} ms"
            );
            if k > first {
                assert_eq!(at, end(k), "phase {phase}: burst {k} not made at its last frame");
            }
        }
    }
}

/// Bursts `0..n` with the frame `lost` missing from burst `k_lost`.
fn with_lost(n: u64, k_lost: u64, lost: u16) -> Vec<(u64, Message)> {
    real_bursts(n)
        .into_iter()
        .filter(|(t, m)| !(t / PERIOD == k_lost && decode_id(m) == lost))
        .collect()
}

fn decode_id(m: &Message) -> u16 {
    crate::codec::encode(m).id.raw() as u16
}

/// Regression: after a lost 0x359 or 0x356 that burst makes no telegram, and
/// the next ones are made at their own end, not at the next burst's frames.
#[test]
fn a_lost_required_frame_loses_only_its_burst() {
    for lost in [0x359, 0x356] {
        let got = run(&with_lost(5, 2, lost));
        let made: Vec<(u64, u64)> = got.iter().map(|(at, t)| (origin(t), *at)).collect();
        assert_eq!(
            made,
            [(0, end(0) + 250), (1, end(1)), (3, end(3)), (4, end(4))],
            "lost {lost:#x}"
        );
    }
}

/// A lost optional frame: its burst completes after the hold without it; the
/// next burst still waits for its own.
#[test]
fn a_lost_0x373_is_absent_from_its_burst_only() {
    let got = run(&with_lost(4, 2, 0x373));
    let made: Vec<(u64, u64, bool)> = got.iter().map(|(at, t)| (origin(t), *at, t.cells.is_some())).collect();
    let end_2 = 2 * PERIOD + 5 * SPACING;
    assert_eq!(
        made,
        [
            (0, end(0) + 250, true),
            (1, end(1), true),
            (2, end_2 + 250, false),
            (3, end(3), true)
        ]
    );
    // 0x373 gives the extremes only: never per-cell readings.
    assert!(got.iter().all(|(_, t)| t.cell_readings.is_none()));
}

/// Regression: a battery that clears its charge-enable bit (same CCL) is shown
/// so in that very burst's telegram.
#[test]
fn a_charge_enable_toggle_takes_effect_with_its_burst() {
    let mut frames = real_bursts(4);
    for (t, m) in &mut frames {
        if let Message::Requests(r) = m {
            r.charge_enable = *t / PERIOD != 2;
        }
    }
    let got = run(&frames);
    let charge: Vec<(u64, bool)> = got
        .iter()
        .map(|(_, t)| (origin(t), t.requests.unwrap().charge_enable))
        .collect();
    assert_eq!(charge, [(0, true), (1, true), (2, false), (3, true)]);
}

/// Regression: a BMS that sends only 0x35E while booting, then bursts with
/// charging forbidden, is never shown as allowing it: the learn period starts
/// with its first burst, even when that burst's 0x35C is lost.
#[test]
fn a_boot_time_0x35e_does_not_start_the_learn_period() {
    let boot: Vec<(u64, Message)> = (0..5).map(|s| (s * PERIOD, frame(0x35E, 0, false))).collect();
    let bursts = |skip_first_35c: bool| -> Vec<(u64, Message)> {
        let mut f = boot.clone();
        for k in 5..8 {
            for (i, &id) in ORDER.iter().enumerate() {
                if !(skip_first_35c && k == 5 && id == 0x35C) {
                    f.push((k * PERIOD + i as u64 * SPACING, frame(id, k, false)));
                }
            }
        }
        f
    };
    for lost in [false, true] {
        let got = run(&bursts(lost));
        let first = got.first().expect("a telegram").1;
        assert_eq!(
            first.requests.map(|r| r.charge_enable),
            Some(false),
            "0x35C lost: {lost}"
        );
        assert_eq!(origin(&first), if lost { 6 } else { 5 });
        assert!(got.iter().all(|(_, t)| t.requests.is_some()));
    }
}

#[test]
fn completes_in_any_order_after_the_gap() {
    let frames: Vec<(u64, Message)> = [0x356, 0x35C, 0x351, 0x359, 0x355]
        .iter()
        .enumerate()
        .map(|(i, &id)| (i as u64 * 80, frame(id, 7, false)))
        .collect();
    let got = run(&frames);
    assert_eq!(got.len(), 1);
    let (at, t) = got[0];
    assert_eq!(at, 320 + 250);
    assert_eq!(origin(&t), 7);
    assert_eq!(t.requests.map(|r| r.charge_enable), Some(false));
    assert_eq!((t.manufacturer, t.cells), (None, None));
}

/// The test rig's flood mode: every frame of a burst at once, a burst every
/// 200 ms (shorter than the gap): the repeated IDs mark the bursts.
#[test]
fn repeated_ids_end_a_burst_without_a_gap() {
    let frames: Vec<(u64, Message)> = (0..4)
        .flat_map(|k| ORDER.iter().map(move |&id| (k * 200, frame(id, k, true))))
        .collect();
    let got = run(&frames);
    let made: Vec<(u64, u64)> = got.iter().map(|(at, t)| (origin(t), *at)).collect();
    // The first burst at the second's first frame, then each at its last.
    assert_eq!(made, [(0, 200), (1, 200), (2, 400), (3, 600)]);
}

#[test]
fn sma_alarms_stand_in_for_0x359() {
    let sma = decode(&Frame::standard(0x35A, &[0x04, 0, 0, 0, 0, 0, 0, 0])).unwrap();
    let mut frames = vec![(0, sma)];
    frames.extend([0x351, 0x355, 0x356, 0x35C].iter().map(|&id| (10, frame(id, 0, true))));
    let got = run(&frames);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.flags.error_flags_1, 0x02);
}

/// A battery that sent 0x35C and then stops sending it completes no more
/// telegrams (and turns stale) rather than being assumed to allow charging.
#[test]
fn a_battery_that_stops_sending_0x35c_is_not_assumed_enabled() {
    let frames: Vec<_> = real_bursts(6)
        .into_iter()
        .filter(|(t, m)| *t < 2 * PERIOD || decode_id(m) != 0x35C)
        .collect();
    let made: Vec<u64> = run(&frames).iter().map(|(_, t)| origin(t)).collect();
    assert_eq!(made, [0, 1]);
}

#[test]
fn a_battery_without_0x35c_completes_after_the_learn_period() {
    let frames: Vec<_> = real_bursts(4)
        .into_iter()
        .filter(|(_, m)| decode_id(m) != 0x35C)
        .collect();
    let got = run(&frames);
    // Bursts 0 and 1 begin within 1.5 s of the first required frame.
    let made: Vec<u64> = got.iter().map(|(_, t)| origin(t)).collect();
    assert_eq!(made, [2, 3]);
    assert_eq!(got[0].1.requests, None);
    assert!(got[0].1.requests_or_normal().charge_enable);
}

#[test]
fn after_a_silence_0x35c_is_learnt_again() {
    // A battery without 0x35C, silent for 10 s: its first burst after the
    // silence is held again, as at a start.
    let mut frames: Vec<_> = real_bursts(4)
        .into_iter()
        .filter(|(_, m)| decode_id(m) != 0x35C)
        .collect();
    let later: Vec<_> = frames.iter().map(|(t, m)| (t + 13 * PERIOD, *m)).collect();
    frames.extend(later);
    let made: Vec<u64> = run(&frames).iter().map(|(_, t)| origin(t)).collect();
    assert_eq!(made, [2, 3, 2, 3]);
}

#[test]
fn non_telegram_messages_are_ignored() {
    let mut a = Assembler::default();
    let now = Instant::now();
    assert_eq!(a.push(&Message::KeepAlive, now), None);
    assert_eq!(a.push(&Message::Other { id: 0x123 }, now), None);
    assert_eq!(a.next_deadline(), None);
}

/// One generated burst: the order of its frames, which are lost, the spacing
/// before each (ms), and the gap before the burst (ms).
type Plan = (Vec<u16>, Vec<bool>, Vec<u64>, u64);

fn plan() -> impl Strategy<Value = Plan> {
    (
        Just(ORDER.to_vec()).prop_shuffle(),
        prop::collection::vec(prop::bool::weighted(0.15), 7),
        prop::collection::vec(0u64..=180, 7),
        prop_oneof![0u64..250, 250u64..3000],
    )
}

proptest! {
    /// For random burst timings, orders and losses, no telegram holds frames
    /// of two bursts, no burst makes two, and every burst that has all four
    /// required frames and its 0x35C makes one, by BURST_GAP after its end.
    #[test]
    fn no_telegram_holds_frames_from_two_bursts(plans in prop::collection::vec(plan(), 1..12)) {
        let mut frames = Vec::new();
        let mut t = 0;
        // The kinds sent in the last burst that sent any, to tell when a
        // short gap is still a boundary the protocol can see (a repeated ID).
        let mut last_sent: Vec<u16> = Vec::new();
        let mut complete = Vec::new();
        for (k, (order, lost, spacing, gap)) in plans.into_iter().enumerate() {
            let sent: Vec<(u16, u64)> = order
                .iter()
                .zip(&lost)
                .zip(&spacing)
                .filter(|((_, l), _)| !**l)
                .map(|((id, _), s)| (*id, *s))
                .collect();
            let Some(&(first, _)) = sent.first() else { continue };
            let gap = if gap < 250 && !last_sent.contains(&first) { gap + 250 } else { gap };
            t += gap;
            for (i, (id, s)) in sent.iter().enumerate() {
                if i > 0 {
                    t += s;
                }
                frames.push((t, frame(*id, k as u64, true)));
            }
            last_sent = sent.iter().map(|(id, _)| *id).collect();
            let has = |id| last_sent.contains(&id);
            if [0x359, 0x351, 0x355, 0x356, 0x35C].into_iter().all(has) {
                complete.push((k as u64, t));
            }
        }
        let got = run(&frames);
        let made: Vec<(u64, u64)> = got.iter().map(|(at, t)| (origin(t), *at)).collect();
        prop_assert!(made.windows(2).all(|w| w[0].0 < w[1].0), "a burst made two: {made:?}");
        for (k, end) in complete {
            let at = made.iter().find(|m| m.0 == k).map(|m| m.1);
            prop_assert!(at.is_some_and(|at| at <= end + 250), "burst {k} ending at {end} made at {at:?}");
        }
    }
}

#[test]
fn cell_readings_hold_up_to_16_cells_and_never_part_of_a_pack() {
    let sixteen = [3300u16; 16];
    let r = CellReadings::new(&sixteen, &[-10.3, 0.0, 25.5]).unwrap();
    assert_eq!(r.cells_mv().len(), 16);
    let t: Vec<f64> = r.temperatures().collect();
    assert_eq!(t, [-10.3, 0.0, 25.5]);
    assert_eq!(r.mean_cell_v(), 3.3);
    // 17 cells do not fit: no readings rather than 16 of 17.
    assert_eq!(CellReadings::new(&[3300; 17], &[20.0]), None);
    assert_eq!(CellReadings::new(&[], &[20.0]), None);
    assert_eq!(CellReadings::new(&[3300], &[20.0; 17]), None);
    // No temperature sensor is allowed: the cells alone.
    assert_eq!(CellReadings::new(&[3300], &[]).unwrap().temperature_count(), 0);
}
