//! Telegram assembly: one battery's frames, arriving one by one in any order,
//! become complete telegrams.
//!
//! A telegram is complete when 0x351, 0x355, 0x356 and 0x359 (or 0x35A) have
//! all arrived since the last complete one. 0x35C, 0x35E and 0x373 are used
//! when present.
//!
//! The request flags (0x35C) come after 0x356 in a real burst, so the first
//! telegram would complete before the battery's own 0x35C arrived, and a
//! battery that forbids charging would look, for one cycle, like one that
//! allows it. So a battery that has ever sent 0x35C only completes telegrams
//! with a fresh one (the burst's own, when the last one expired during a
//! pause); and after a start or a silence (no frame for `max_frame_age`) a
//! telegram without a fresh 0x35C is held for [`LEARN_PERIOD`]: long enough
//! for a battery that sends 0x35C to have sent it. Only a battery that sends
//! none at all is then taken to mean normal operation.
//!
//! The bound on mixing cycles: every stored frame expires `max_frame_age`
//! after it arrived (default [`MAX_FRAME_AGE`]). A BMS repeats its whole set
//! every second, so a frame of the current cycle is never older than about
//! 1.1 s; 2.5 s tolerates one lost burst but never pairs a frame with values
//! from two cycles earlier. The optional frames follow the same rule: a 0x35E
//! or 0x373 that stops coming is left out after 2.5 s. A battery that has
//! sent 0x35C and stops sending it is never taken to mean normal operation:
//! it completes no more telegrams, and so turns stale.

use crate::codec::{CellExtremes, Flags, Limits, Manufacturer, Measurements, Message, Requests, StateOfCharge};
use std::time::{Duration, Instant};

/// How long a received frame may wait for the rest of its telegram.
pub const MAX_FRAME_AGE: Duration = Duration::from_millis(2500);

/// After a start or a silence, how long to wait for a 0x35C before taking a
/// battery to send none: a whole burst period (1 s) and a half.
pub const LEARN_PERIOD: Duration = Duration::from_millis(1500);

/// One battery's complete set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Telegram {
    pub limits: Limits,
    pub soc: StateOfCharge,
    pub measurements: Measurements,
    pub flags: Flags,
    /// `None` when the battery sent no 0x35C within the bound.
    pub requests: Option<Requests>,
    pub manufacturer: Option<Manufacturer>,
    pub cells: Option<CellExtremes>,
}

impl Telegram {
    /// The request flags, or normal operation for a battery that sends no 0x35C.
    pub fn requests_or_normal(&self) -> Requests {
        self.requests.unwrap_or(Requests::NORMAL)
    }
}

/// A value and when it arrived.
#[derive(Debug, Clone, Copy)]
struct Slot<T> {
    value: T,
    at: Instant,
}

/// Collects one input's frames into telegrams.
#[derive(Debug, Clone)]
pub struct Assembler {
    max_frame_age: Duration,
    limits: Option<Slot<Limits>>,
    soc: Option<Slot<StateOfCharge>>,
    measurements: Option<Slot<Measurements>>,
    flags: Option<Slot<Flags>>,
    sma_flags: Option<Slot<Flags>>,
    requests: Option<Slot<Requests>>,
    manufacturer: Option<Slot<Manufacturer>>,
    cells: Option<Slot<CellExtremes>>,
    /// When the last frame of any kind arrived.
    last_frame: Option<Instant>,
    /// Since when this input has been talking without a silence.
    talking_since: Option<Instant>,
    /// This battery has sent 0x35C: never assume its flags.
    sends_requests: bool,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler::new(MAX_FRAME_AGE)
    }
}

fn fresh<T: Copy>(slot: &Option<Slot<T>>, now: Instant, max: Duration) -> Option<T> {
    slot.filter(|s| now.saturating_duration_since(s.at) <= max)
        .map(|s| s.value)
}

impl Assembler {
    pub fn new(max_frame_age: Duration) -> Assembler {
        Assembler {
            max_frame_age,
            limits: None,
            soc: None,
            measurements: None,
            flags: None,
            sma_flags: None,
            requests: None,
            manufacturer: None,
            cells: None,
            last_frame: None,
            talking_since: None,
            sends_requests: false,
        }
    }

    /// Takes one decoded message received at `now`; returns the telegram it
    /// completes, if any. Messages that are not part of a telegram are ignored.
    pub fn push(&mut self, message: &Message, now: Instant) -> Option<Telegram> {
        let silence = self
            .last_frame
            .is_none_or(|t| now.saturating_duration_since(t) > self.max_frame_age);
        if silence {
            self.talking_since = Some(now);
        }
        self.last_frame = Some(now);
        match *message {
            Message::Limits(v) => self.limits = Some(Slot { value: v, at: now }),
            Message::StateOfCharge(v) => self.soc = Some(Slot { value: v, at: now }),
            Message::Measurements(v) => self.measurements = Some(Slot { value: v, at: now }),
            Message::Flags(v) => self.flags = Some(Slot { value: v, at: now }),
            Message::SmaAlarms(a) => {
                self.sma_flags = Some(Slot {
                    value: a.to_flags(),
                    at: now,
                })
            }
            Message::Requests(v) => {
                self.requests = Some(Slot { value: v, at: now });
                self.sends_requests = true;
            }
            Message::Manufacturer(v) => self.manufacturer = Some(Slot { value: v, at: now }),
            Message::Cells(v) => self.cells = Some(Slot { value: v, at: now }),
            _ => return None,
        }
        self.complete(now)
    }

    fn complete(&mut self, now: Instant) -> Option<Telegram> {
        let max = self.max_frame_age;
        let requests = fresh(&self.requests, now, max);
        let learning = self
            .talking_since
            .is_some_and(|t| now.saturating_duration_since(t) < LEARN_PERIOD);
        if requests.is_none() && (learning || self.sends_requests) {
            return None;
        }
        let telegram = Telegram {
            limits: fresh(&self.limits, now, max)?,
            soc: fresh(&self.soc, now, max)?,
            measurements: fresh(&self.measurements, now, max)?,
            // 0x359 is the Pylontech document's own frame: prefer it.
            flags: fresh(&self.flags, now, max).or_else(|| fresh(&self.sma_flags, now, max))?,
            requests,
            manufacturer: fresh(&self.manufacturer, now, max),
            cells: fresh(&self.cells, now, max),
        };
        // The required frames start over; optional ones stay until they expire.
        self.limits = None;
        self.soc = None;
        self.measurements = None;
        self.flags = None;
        self.sma_flags = None;
        Some(telegram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;
    use crate::frame::Frame;

    fn msg(id: u16, bytes: &[u8]) -> Message {
        decode(&Frame::standard(id, bytes)).unwrap()
    }

    fn burst() -> Vec<Message> {
        vec![
            msg(0x359, &[0, 0, 0, 0, 6, 0x50, 0x4E]),
            msg(0x351, &[0x14, 0x02, 0xC0, 0x12, 0xC0, 0x12, 0xC2, 0x01]),
            msg(0x355, &[0x58, 0x00, 0x5E, 0x00]),
            msg(0x356, &[0x7A, 0x13, 0xF2, 0xFE, 0x6B, 0x01]),
            msg(0x35C, &[0x40, 0x00]),
            msg(0x35E, b"PYLON\0\0\0"),
            msg(0x373, &[0xD8, 0x0C, 0xF1, 0x0C, 0x22, 0x01, 0x2A, 0x01]),
        ]
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn completes_on_the_last_required_frame_in_any_order() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        // 0x356 first, then 0x35C, 0x351, 0x359: still missing 0x355.
        for (i, m) in [&b[3], &b[4], &b[1], &b[0]].into_iter().enumerate() {
            assert_eq!(a.push(m, ms(t0, i as u64 * 80)), None);
        }
        let t = a.push(&b[2], ms(t0, 400)).expect("complete");
        assert_eq!(t.limits.v_charge_cmd, 53.2);
        assert_eq!(t.soc.soc, 88.0);
        assert_eq!(t.measurements.i_total, -27.0);
        assert_eq!(t.flags.n_modules, 6);
        assert_eq!(t.requests.map(|r| r.charge_enable), Some(false));
        assert_eq!(t.manufacturer, None);
        assert_eq!(t.cells, None);
    }

    #[test]
    fn a_new_telegram_needs_every_required_frame_again() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        let mut completed = 0;
        for (i, m) in b.iter().enumerate() {
            completed += usize::from(a.push(m, ms(t0, i as u64 * 80)).is_some());
        }
        assert_eq!(completed, 1);
        // A repeated 0x356 alone completes nothing.
        assert_eq!(a.push(&b[3], ms(t0, 1000)), None);
        // The next cycle uses the optional frames of the previous one.
        for (i, m) in b[..3].iter().enumerate() {
            let t = a.push(m, ms(t0, 1080 + i as u64 * 80));
            if i == 2 {
                let t = t.expect("second telegram");
                assert_eq!(t.cells.map(|c| c.v_cell_max), Some(3.313));
                assert_eq!(t.manufacturer.map(|m| m.name()), Some("PYLON".into()));
            } else {
                assert_eq!(t, None);
            }
        }
    }

    #[test]
    fn frames_older_than_the_bound_are_never_mixed_in() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        a.push(&b[0], t0); // 0x359
        a.push(&b[1], t0); // 0x351
        a.push(&b[2], t0); // 0x355
        // 0x356 arrives 2.6 s later: the others have expired.
        assert_eq!(a.push(&b[3], ms(t0, 2600)), None);
        // Exactly at the bound they still count.
        let mut a = Assembler::default();
        for m in &b[..3] {
            a.push(m, t0);
        }
        assert!(a.push(&b[3], ms(t0, 2500)).is_some());
    }

    #[test]
    fn optional_frames_expire_too() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        a.push(&b[5], t0); // 0x35E
        a.push(&b[6], t0); // 0x373
        let mut done = None;
        for m in &b[..4] {
            done = a.push(m, ms(t0, 2000)).or(done);
        }
        for m in &b[..4] {
            done = a.push(m, ms(t0, 3000)).or(done);
        }
        let t = done.expect("complete");
        assert_eq!(
            (t.manufacturer, t.cells),
            (None, None),
            "0x35E and 0x373 from 3 s ago are not used"
        );
    }

    /// A battery that sent 0x35C and then stops sending it completes no more
    /// telegrams (and turns stale) rather than being assumed to allow charging.
    #[test]
    fn a_battery_that_stops_sending_0x35c_is_not_assumed_enabled() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        for (i, m) in b.iter().enumerate() {
            a.push(m, ms(t0, i as u64 * 10));
        }
        // While the 0x35C of 40 ms is within the bound, telegrams complete.
        let done = b[..4].iter().fold(None, |d, m| a.push(m, ms(t0, 2000)).or(d));
        assert!(done.is_some());
        for s in 3..8 {
            for m in &b[..4] {
                assert_eq!(a.push(m, ms(t0, s * 1000)), None, "at {s} s");
            }
        }
    }

    #[test]
    fn sma_alarms_stand_in_for_0x359() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        a.push(&msg(0x35A, &[0x04, 0, 0, 0, 0, 0, 0, 0]), t0);
        for m in [&b[1], &b[2], &b[4]] {
            a.push(m, t0);
        }
        let t = a.push(&b[3], t0).expect("complete with 0x35A");
        assert_eq!(t.flags.error_flags_1, 0x02);
    }

    /// Regression: the first telegram carries the battery's own 0x35C, which
    /// comes after 0x356 in a burst, instead of defaulting to "enabled".
    #[test]
    fn the_first_telegram_waits_for_the_bursts_own_0x35c() {
        let t0 = Instant::now();
        let b = burst(); // its 0x35C forbids charging
        let mut a = Assembler::default();
        for (i, m) in b[..4].iter().enumerate() {
            assert_eq!(a.push(m, ms(t0, i as u64 * 80)), None);
        }
        let t = a.push(&b[4], ms(t0, 320)).expect("complete with 0x35C");
        assert_eq!(t.requests.map(|r| r.charge_enable), Some(false));
    }

    #[test]
    fn after_a_silence_0x35c_is_learnt_again() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        for (i, m) in b.iter().enumerate() {
            a.push(m, ms(t0, i as u64 * 10));
        }
        // Silent for 10 s; then a burst: the stale 0x35C is not used and the
        // telegram waits for the new one.
        for (i, m) in b[..4].iter().enumerate() {
            assert_eq!(a.push(m, ms(t0, 10_000 + i as u64 * 10)), None);
        }
        let t = a.push(&b[4], ms(t0, 10_050)).expect("complete");
        assert_eq!(t.requests.map(|r| r.charge_enable), Some(false));
    }

    /// Regression: a pause shorter than the frame-age bound, after which the
    /// last 0x35C has just expired, does not default the flags to "enabled".
    #[test]
    fn after_a_short_pause_the_bursts_own_0x35c_is_used() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        for (i, m) in b.iter().enumerate() {
            a.push(m, ms(t0, i as u64 * 80)); // 0x35C at 320 ms, last frame at 480 ms
        }
        // 2.4 s without a frame (not a silence), then a burst: at its 0x356
        // the 0x35C is 2.9 s old.
        for (i, m) in b[..4].iter().enumerate() {
            assert_eq!(a.push(m, ms(t0, 2880 + i as u64 * 10)), None);
        }
        let t = a.push(&b[4], ms(t0, 2930)).expect("complete with the new 0x35C");
        assert_eq!(t.requests.map(|r| r.charge_enable), Some(false));
    }

    #[test]
    fn a_battery_without_0x35c_completes_after_the_learn_period() {
        let t0 = Instant::now();
        let b = burst();
        let mut a = Assembler::default();
        for (i, m) in b[..4].iter().enumerate() {
            assert_eq!(a.push(m, ms(t0, i as u64 * 80)), None);
        }
        // Next burst, 1 s later: still learning (1.0 s < 1.5 s).
        for (i, m) in b[..4].iter().enumerate() {
            assert_eq!(a.push(m, ms(t0, 1000 + i as u64 * 80)), None);
        }
        let mut done = None;
        for (i, m) in b[..4].iter().enumerate() {
            done = a.push(m, ms(t0, 2000 + i as u64 * 80)).or(done);
        }
        let t = done.expect("complete without 0x35C");
        assert_eq!(t.requests, None);
        assert!(t.requests_or_normal().charge_enable);
    }

    #[test]
    fn non_telegram_messages_are_ignored() {
        let mut a = Assembler::default();
        assert_eq!(a.push(&Message::KeepAlive, Instant::now()), None);
        assert_eq!(a.push(&Message::Other { id: 0x123 }, Instant::now()), None);
    }
}
