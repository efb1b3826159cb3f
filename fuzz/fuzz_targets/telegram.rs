//! Telegram assembly on arbitrary sequences of frames and time steps, checked
//! against a small model of the rules (docs/combining.md, "Telegram
//! assembly"): a burst ends at a frame BURST_GAP or more after the previous
//! one, at a frame of a kind the burst already has, or at a poll BURST_GAP
//! after its last frame; a telegram holds only its burst's frames (every
//! required one, and the optional ones the burst had so far), at most one
//! per burst; a burst that can make one has made it by the time it ends; a
//! battery that has sent 0x35C gets telegrams only with one, and a telegram
//! without it is held while its burst began within LEARN_PERIOD of the first
//! required frame after a start or a SILENCE. Frames that do not decode are
//! dropped, as the input thread does.
//!
//! Input: records of [step, selector, len, data...]: step advances the clock
//! by step * 20 ms (so the 250 ms gap is crossed often, the 2.5 s silence
//! sometimes); selector picks the ID, and its top bit polls the assembler
//! at that time before the frame, as the input thread does when it wakes.

#![no_main]

use bms_gateway::codec::{Message, decode};
use bms_gateway::frame::Frame;
use bms_gateway::telegram::{Assembler, BURST_GAP, LEARN_PERIOD, SILENCE, Telegram};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const IDS: [u16; 10] = [0x351, 0x355, 0x356, 0x359, 0x35A, 0x35C, 0x35E, 0x373, 0x305, 0x378];

/// Frames of one burst, in arrival order.
struct Burst {
    start: Instant,
    last: Instant,
    frames: Vec<(u16, Message)>,
    delivered: bool,
}

impl Burst {
    fn get(&self, id: u16) -> Option<Message> {
        self.frames.iter().find(|(i, _)| *i == id).map(|(_, m)| *m)
    }
}

#[derive(Default)]
struct Model {
    burst: Option<Burst>,
    last_required: Option<Instant>,
    talking_since: Option<Instant>,
    sends_requests: bool,
}

fn part_of_a_telegram(id: u16) -> bool {
    id != 0x305
}

fn required(id: u16) -> bool {
    matches!(id, 0x351 | 0x355 | 0x356 | 0x359 | 0x35A)
}

impl Model {
    /// The telegram `burst` makes by the rules, if any.
    fn telegram(&self, b: &Burst) -> Option<Telegram> {
        let requests = match b.get(0x35C) {
            Some(Message::Requests(r)) => Some(r),
            _ => None,
        };
        let learning = self
            .talking_since
            .is_some_and(|t| b.start.saturating_duration_since(t) < LEARN_PERIOD);
        if requests.is_none() && (self.sends_requests || learning) {
            return None;
        }
        let flags = match (b.get(0x359), b.get(0x35A)) {
            (Some(Message::Flags(f)), _) => f,
            (None, Some(Message::SmaAlarms(a))) => a.to_flags(),
            _ => return None,
        };
        let (Some(Message::Limits(limits)), Some(Message::StateOfCharge(soc)), Some(Message::Measurements(m))) =
            (b.get(0x351), b.get(0x355), b.get(0x356))
        else {
            return None;
        };
        Some(Telegram {
            limits,
            soc,
            measurements: m,
            flags,
            requests,
            manufacturer: match b.get(0x35E) {
                Some(Message::Manufacturer(x)) => Some(x),
                _ => None,
            },
            cells: match b.get(0x373) {
                Some(Message::Cells(x)) => Some(x),
                _ => None,
            },
            energy: match b.get(0x378) {
                Some(Message::Energy(x)) => Some(x),
                _ => None,
            },
            cell_readings: None,
        })
    }

    /// The burst ends: what its end must deliver.
    fn end(&mut self) -> Option<Telegram> {
        let b = self.burst.take()?;
        if b.delivered { None } else { self.telegram(&b) }
    }

    fn deadline(&self) -> Option<Instant> {
        self.burst.as_ref().filter(|b| !b.delivered).map(|b| b.last + BURST_GAP)
    }
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
        assert_eq!(assembler.next_deadline(), model.deadline(), "deadline");
        if selector & 0x80 != 0 {
            let got = assembler.poll(now);
            let expected = match model.deadline() {
                Some(at) if now >= at => model.end(),
                _ => None,
            };
            assert_eq!(got, expected, "poll at {:?}", now - t0);
        }
        let id = IDS[usize::from(*selector & 0x7F) % IDS.len()];
        let Ok(message) = decode(&Frame::standard(id, payload)) else {
            continue;
        };
        let got = assembler.push(&message, now);
        if !part_of_a_telegram(id) {
            assert_eq!(got, None, "{message:?} completed a telegram");
            continue;
        }
        // The burst before ends first; this frame cannot count for it.
        let ends = model
            .burst
            .as_ref()
            .is_some_and(|b| now - b.last >= BURST_GAP || b.get(id).is_some());
        let ended = if ends { Some(model.end()) } else { None };
        if required(id) {
            if model.last_required.is_none_or(|t| now - t > SILENCE) {
                model.talking_since = Some(now);
            }
            model.last_required = Some(now);
        }
        if id == 0x35C {
            model.sends_requests = true;
        }
        let burst = model.burst.get_or_insert_with(|| Burst {
            start: now,
            last: now,
            frames: Vec::new(),
            delivered: false,
        });
        burst.last = now;
        burst.frames.push((id, message));
        match ended {
            // Ending a burst delivers exactly what it must.
            Some(expected) => assert_eq!(got, expected, "end of a burst at {:?}", now - t0),
            // Within a burst, a telegram may come early, but only the one
            // the burst makes, and only once.
            None => {
                if let Some(t) = got {
                    let b = model.burst.as_ref().unwrap();
                    assert!(!b.delivered, "a second telegram from one burst");
                    assert_eq!(Some(t), model.telegram(b), "early telegram");
                    model.burst.as_mut().unwrap().delivered = true;
                }
            }
        }
    }
});
