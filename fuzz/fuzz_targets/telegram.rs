//! Telegram assembly on arbitrary sequences of frames and time steps, checked
//! against a small model of the rules (src/telegram.rs): a telegram is made
//! exactly when 0x351, 0x355, 0x356 and 0x359 (or 0x35A) have all arrived
//! since the last telegram and none is older than the frame-age bound; it
//! carries the latest value of each; the optional frames are used while
//! within the bound; after a start or a silence longer than the bound, a
//! telegram without a fresh 0x35C is held back for LEARN_PERIOD, and a
//! battery that has ever sent 0x35C gets telegrams only with a fresh one. Frames that
//! do not decode are dropped, as the input thread does.
//!
//! Input: records of [step, id selector, len, data...]: step advances the
//! clock by step * 20 ms (so the 2.5 s bound is crossed often).

#![no_main]

use bms_gateway::codec::{Message, decode};
use bms_gateway::frame::Frame;
use bms_gateway::telegram::{Assembler, LEARN_PERIOD, MAX_FRAME_AGE};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const IDS: [u16; 10] = [0x351, 0x355, 0x356, 0x359, 0x35A, 0x35C, 0x35E, 0x373, 0x305, 0x378];

#[derive(Default)]
struct Model {
    limits: Option<(Message, Instant)>,
    soc: Option<(Message, Instant)>,
    measurements: Option<(Message, Instant)>,
    flags: Option<(Message, Instant)>,
    sma: Option<(Message, Instant)>,
    requests: Option<(Message, Instant)>,
    manufacturer: Option<(Message, Instant)>,
    cells: Option<(Message, Instant)>,
    last_frame: Option<Instant>,
    talking_since: Option<Instant>,
    sends_requests: bool,
}

fn fresh(slot: Option<(Message, Instant)>, now: Instant) -> Option<Message> {
    slot.filter(|(_, at)| now.duration_since(*at) <= MAX_FRAME_AGE)
        .map(|(m, _)| m)
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut assembler = Assembler::default();
    let mut model = Model::default();
    let mut rest = data;
    while let [step, selector, len, tail @ ..] = rest {
        let n = usize::from(*len % 9).min(tail.len());
        let (payload, tail) = tail.split_at(n);
        rest = tail;
        now += Duration::from_millis(u64::from(*step) * 20);
        let frame = Frame::standard(IDS[usize::from(*selector) % IDS.len()], payload);
        let Ok(message) = decode(&frame) else { continue };
        let got = assembler.push(&message, now);
        // Any frame that decodes counts as the battery talking.
        if model.last_frame.is_none_or(|t| now.duration_since(t) > MAX_FRAME_AGE) {
            model.talking_since = Some(now);
        }
        model.last_frame = Some(now);
        let slot = Some((message, now));
        match message {
            Message::Limits(_) => model.limits = slot,
            Message::StateOfCharge(_) => model.soc = slot,
            Message::Measurements(_) => model.measurements = slot,
            Message::Flags(_) => model.flags = slot,
            Message::SmaAlarms(_) => model.sma = slot,
            Message::Requests(_) => {
                model.requests = slot;
                model.sends_requests = true;
            }
            Message::Manufacturer(_) => model.manufacturer = slot,
            Message::Cells(_) => model.cells = slot,
            _ => {
                assert_eq!(got, None, "{message:?} completed a telegram");
                continue;
            }
        }
        let flags = fresh(model.flags, now).or_else(|| fresh(model.sma, now));
        let required = (
            fresh(model.limits, now),
            fresh(model.soc, now),
            fresh(model.measurements, now),
            flags,
        );
        let learning = model
            .talking_since
            .is_some_and(|t| now.duration_since(t) < LEARN_PERIOD);
        let requests_fresh = fresh(model.requests, now).is_some();
        let expected = match required {
            // Held back until the battery has had time to send its 0x35C, and
            // never assumed for a battery that sends it.
            _ if (learning || model.sends_requests) && !requests_fresh => None,
            (Some(Message::Limits(l)), Some(Message::StateOfCharge(s)), Some(Message::Measurements(m)), Some(f)) => {
                let f = match f {
                    Message::Flags(f) => f,
                    Message::SmaAlarms(a) => a.to_flags(),
                    other => unreachable!("{other:?}"),
                };
                Some((l, s, m, f))
            }
            _ => None,
        };
        match (got, expected) {
            (None, None) => {}
            (Some(t), Some((l, s, m, f))) => {
                assert_eq!((t.limits, t.soc, t.measurements, t.flags), (l, s, m, f));
                let requests = match fresh(model.requests, now) {
                    Some(Message::Requests(r)) => Some(r),
                    _ => None,
                };
                let manufacturer = match fresh(model.manufacturer, now) {
                    Some(Message::Manufacturer(m)) => Some(m),
                    _ => None,
                };
                let cells = match fresh(model.cells, now) {
                    Some(Message::Cells(c)) => Some(c),
                    _ => None,
                };
                assert_eq!((t.requests, t.manufacturer, t.cells), (requests, manufacturer, cells));
                // The required frames start over.
                model.limits = None;
                model.soc = None;
                model.measurements = None;
                model.flags = None;
                model.sma = None;
            }
            (got, expected) => panic!("assembler gave {got:?}, the model expected {expected:?}"),
        }
    }
});
