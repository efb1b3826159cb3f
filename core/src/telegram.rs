//! Telegram assembly: one battery's frames, arriving one by one in any order,
//! become telegrams, each holding the frames of ONE burst (docs/combining.md,
//! "Telegram assembly").
//!
//! A BMS sends its whole frame set in a burst once per second: 0x359, 0x351,
//! 0x355, 0x356, 0x35C, 0x35E, 0x373, about 80-90 ms apart, so a burst lasts
//! about half a second and the gap before the next one about as long. A
//! telegram never takes a value from another burst than the one it is made
//! from: a limit or an enable bit that changes reaches the inverters with the
//! burst that carried it, never a burst later, whatever the phase in which
//! listening started or which frame was lost.
//!
//! Burst boundary: a frame that comes [`BURST_GAP`] or more after the
//! previous one, or that repeats a kind of frame the current burst already
//! has, starts a new burst. (0x305 and other frames that are not part of a
//! telegram are ignored: they are the inverter's or another protocol's.)
//!
//! Completion: as soon as the burst holds every kind of frame the last two
//! bursts held (so, in steady state, at the burst's last frame), or else when
//! the burst ends, by [`BURST_GAP`] of quiet ([`Assembler::poll`]) or by the
//! next burst's first frame. A burst completes a telegram only with all four
//! required frames (0x351, 0x355, 0x356, and 0x359 or 0x35A); 0x35C, 0x35E,
//! 0x373 and 0x378 (energy counters) are used when the burst has them, and
//! are absent otherwise. At most one telegram per burst.
//!
//! 0x35C: a battery that has sent it once completes telegrams only from
//! bursts that have it (never assume a battery's flags). Until then, a
//! telegram without it is held back while the burst began within
//! [`LEARN_PERIOD`] of the battery's first required frame (after a start, or
//! after [`SILENCE`] without one): long enough to see one whole burst, so a
//! battery that forbids charging is never shown, even once, as one that
//! allows it. The learn period starts at a required frame, not any frame: a
//! BMS that sends only 0x35E while booting has not started its bursts yet.
//! Only a battery that sends no 0x35C at all is then taken to mean normal
//! operation.

use crate::codec::{CellExtremes, Energy, Flags, Limits, Manufacturer, Measurements, Message, Requests, StateOfCharge};
use std::time::{Duration, Instant};

/// Quiet after a frame that ends a burst: 250 ms. Frames within a burst are
/// 80-90 ms apart, so one lost frame leaves a gap of 160-180 ms and must not
/// split its burst; the gap between bursts is about 490 ms (a 1 s period
/// minus a half-second burst). 250 ms lies between the two with about 70 ms
/// of scheduling slack either way. It is also how late, at most, a burst
/// whose end cannot be told from the bursts before it (the first one, or one
/// with a lost frame) completes: well within the burst period.
pub const BURST_GAP: Duration = Duration::from_millis(250);

/// After a start or a silence, how long to wait for a 0x35C before taking a
/// battery to send none: a whole burst period (1 s) and a half.
pub const LEARN_PERIOD: Duration = Duration::from_millis(1500);

/// No required frame for this long is a silence, after which 0x35C is learnt
/// again: more than two burst periods, so one lost burst is not a silence.
pub const SILENCE: Duration = Duration::from_millis(2500);

/// One battery's values from one burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Telegram {
    pub limits: Limits,
    pub soc: StateOfCharge,
    pub measurements: Measurements,
    pub flags: Flags,
    /// `None` when the burst had no 0x35C (and the battery has never sent one).
    pub requests: Option<Requests>,
    pub manufacturer: Option<Manufacturer>,
    pub cells: Option<CellExtremes>,
    /// The battery's own energy counters (0x378), when the burst had them.
    pub energy: Option<Energy>,
    /// Every cell's voltage and every temperature sensor, when the battery
    /// says them (an RS485 pack's 0x42; Pylontech CAN carries only the
    /// extremes, in `cells`).
    pub cell_readings: Option<CellReadings>,
}

impl Telegram {
    /// The request flags, or normal operation for a battery that sends no 0x35C.
    pub fn requests_or_normal(&self) -> Requests {
        self.requests.unwrap_or(Requests::NORMAL)
    }
}

/// Most cell voltages a [`CellReadings`] holds: a 48 V LFP pack has 15 or
/// 16 cells in series (reference/pylontech-rs485.md §3.3).
pub const MAX_CELL_READINGS: usize = 16;

/// Most temperature sensors a [`CellReadings`] holds (Pylontech sends 5 or
/// 6, PACE and Seplos 6).
pub const MAX_TEMPERATURE_READINGS: usize = 16;

/// One pack's cell voltages (mV) and temperature sensors (0.1 degC), in the
/// pack's own order. Fixed-size and `Copy`: it travels inside every
/// [`Telegram`] without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellReadings {
    cells_mv: [u16; MAX_CELL_READINGS],
    n_cells: u8,
    /// Tenths of a degree: the protocols' own resolution.
    temperatures_dc: [i16; MAX_TEMPERATURE_READINGS],
    n_temperatures: u8,
}

impl CellReadings {
    /// The readings of `cells_mv` and `temperatures` (degC), or `None` when
    /// there is no cell or more than fit: a pack with more cells than
    /// [`MAX_CELL_READINGS`] is shown with its extremes only, never with
    /// part of its cells.
    pub fn new(cells_mv: &[u16], temperatures: &[f64]) -> Option<CellReadings> {
        if cells_mv.is_empty() || cells_mv.len() > MAX_CELL_READINGS || temperatures.len() > MAX_TEMPERATURE_READINGS {
            return None;
        }
        let mut readings = CellReadings {
            cells_mv: [0; MAX_CELL_READINGS],
            n_cells: cells_mv.len() as u8,
            temperatures_dc: [0; MAX_TEMPERATURE_READINGS],
            n_temperatures: temperatures.len() as u8,
        };
        readings.cells_mv[..cells_mv.len()].copy_from_slice(cells_mv);
        for (slot, &t) in readings.temperatures_dc.iter_mut().zip(temperatures) {
            // Within i16 for any temperature a pack can report (-3276..3276 degC).
            *slot = (t * 10.0).round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
        }
        Some(readings)
    }

    /// The cell voltages, mV.
    pub fn cells_mv(&self) -> &[u16] {
        &self.cells_mv[..usize::from(self.n_cells)]
    }

    /// The cell voltages, V.
    pub fn cell_volts(&self) -> impl Iterator<Item = f64> + '_ {
        self.cells_mv().iter().map(|&mv| f64::from(mv) / 1000.0)
    }

    /// The temperature sensors, degC.
    pub fn temperatures(&self) -> impl Iterator<Item = f64> + '_ {
        self.temperatures_dc[..usize::from(self.n_temperatures)]
            .iter()
            .map(|&dc| f64::from(dc) / 10.0)
    }

    /// How many temperature sensors.
    pub fn temperature_count(&self) -> usize {
        usize::from(self.n_temperatures)
    }

    /// The mean cell voltage, V (there is always at least one cell).
    pub fn mean_cell_v(&self) -> f64 {
        // Summed in whole mV: exact, whatever the order.
        let sum_mv: u32 = self.cells_mv().iter().map(|&mv| u32::from(mv)).sum();
        f64::from(sum_mv) / f64::from(self.n_cells) / 1000.0
    }
}

/// The kinds of frame a telegram is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Limits,
    Soc,
    Measurements,
    Flags,
    SmaFlags,
    Requests,
    Manufacturer,
    Cells,
    Energy,
}

impl Kind {
    fn of(message: &Message) -> Option<Kind> {
        Some(match message {
            Message::Limits(_) => Kind::Limits,
            Message::StateOfCharge(_) => Kind::Soc,
            Message::Measurements(_) => Kind::Measurements,
            Message::Flags(_) => Kind::Flags,
            Message::SmaAlarms(_) => Kind::SmaFlags,
            Message::Requests(_) => Kind::Requests,
            Message::Manufacturer(_) => Kind::Manufacturer,
            Message::Cells(_) => Kind::Cells,
            Message::Energy(_) => Kind::Energy,
            _ => return None,
        })
    }

    fn required(self) -> bool {
        matches!(
            self,
            Kind::Limits | Kind::Soc | Kind::Measurements | Kind::Flags | Kind::SmaFlags
        )
    }
}

/// A set of [`Kind`]s, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Kinds(u16);

impl Kinds {
    fn bit(kind: Kind) -> u16 {
        1 << kind as u8
    }

    fn has(self, kind: Kind) -> bool {
        self.0 & Kinds::bit(kind) != 0
    }

    fn with(self, kind: Kind) -> Kinds {
        Kinds(self.0 | Kinds::bit(kind))
    }

    fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 == other.0
    }
}

/// The burst being received.
#[derive(Debug, Clone, Copy)]
struct Burst {
    /// Its first frame.
    started: Instant,
    /// Its latest frame.
    last: Instant,
    kinds: Kinds,
    limits: Option<Limits>,
    soc: Option<StateOfCharge>,
    measurements: Option<Measurements>,
    flags: Option<Flags>,
    sma_flags: Option<Flags>,
    requests: Option<Requests>,
    manufacturer: Option<Manufacturer>,
    cells: Option<CellExtremes>,
    energy: Option<Energy>,
    /// Its telegram has been made: at most one per burst.
    delivered: bool,
}

impl Burst {
    fn new(now: Instant) -> Burst {
        Burst {
            started: now,
            last: now,
            kinds: Kinds::default(),
            limits: None,
            soc: None,
            measurements: None,
            flags: None,
            sma_flags: None,
            requests: None,
            manufacturer: None,
            cells: None,
            energy: None,
            delivered: false,
        }
    }

    /// Whether a frame of `kind` at `now` starts the next burst.
    fn ends_before(&self, kind: Kind, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= BURST_GAP || self.kinds.has(kind)
    }

    fn take(&mut self, message: &Message, kind: Kind, now: Instant) {
        self.last = now;
        self.kinds = self.kinds.with(kind);
        match *message {
            Message::Limits(v) => self.limits = Some(v),
            Message::StateOfCharge(v) => self.soc = Some(v),
            Message::Measurements(v) => self.measurements = Some(v),
            Message::Flags(v) => self.flags = Some(v),
            Message::SmaAlarms(a) => self.sma_flags = Some(a.to_flags()),
            Message::Requests(v) => self.requests = Some(v),
            Message::Manufacturer(v) => self.manufacturer = Some(v),
            Message::Cells(v) => self.cells = Some(v),
            Message::Energy(v) => self.energy = Some(v),
            _ => {}
        }
    }
}

/// Collects one input's frames into telegrams, one per burst.
#[derive(Debug, Clone, Default)]
pub struct Assembler {
    burst: Option<Burst>,
    /// The kinds of frame of the last two bursts that ended: a burst that has
    /// them all is complete.
    previous: [Kinds; 2],
    /// When the latest required frame arrived.
    last_required: Option<Instant>,
    /// The first required frame after a start or a silence.
    talking_since: Option<Instant>,
    /// This battery has sent 0x35C: never assume its flags.
    sends_requests: bool,
}

impl Assembler {
    /// Takes one decoded message received at `now`; returns the telegram it
    /// completes (its own burst's, or the previous burst's that it ends), if
    /// any. Messages that are not part of a telegram are ignored.
    pub fn push(&mut self, message: &Message, now: Instant) -> Option<Telegram> {
        let kind = Kind::of(message)?;
        // The previous burst ends before this frame counts for anything.
        let ended = match &self.burst {
            Some(b) if b.ends_before(kind, now) => self.end_burst(),
            _ => None,
        };
        if kind.required() {
            if self
                .last_required
                .is_none_or(|t| now.saturating_duration_since(t) > SILENCE)
            {
                self.talking_since = Some(now);
            }
            self.last_required = Some(now);
        }
        if kind == Kind::Requests {
            self.sends_requests = true;
        }
        self.burst
            .get_or_insert_with(|| Burst::new(now))
            .take(message, kind, now);
        ended.or_else(|| self.complete_early())
    }

    /// When [`poll`](Self::poll) may complete a telegram: [`BURST_GAP`]
    /// after the latest frame of a burst that has not made one yet.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.burst.as_ref().filter(|b| !b.delivered).map(|b| b.last + BURST_GAP)
    }

    /// Time passes: at or after [`next_deadline`](Self::next_deadline) the
    /// burst is over, and its telegram, if it has one, is returned.
    pub fn poll(&mut self, now: Instant) -> Option<Telegram> {
        match self.next_deadline() {
            Some(at) if now >= at => self.end_burst(),
            _ => None,
        }
    }

    /// The burst has every kind of frame the last two had: it is over.
    fn complete_early(&mut self) -> Option<Telegram> {
        let burst = self.burst.as_ref()?;
        let expected = self.previous[0].union(self.previous[1]);
        if burst.delivered || expected == Kinds::default() || !burst.kinds.contains(expected) {
            return None;
        }
        let telegram = self.telegram(burst)?;
        if let Some(b) = self.burst.as_mut() {
            b.delivered = true;
        }
        Some(telegram)
    }

    fn end_burst(&mut self) -> Option<Telegram> {
        let burst = self.burst.take()?;
        self.previous = [burst.kinds, self.previous[0]];
        if burst.delivered { None } else { self.telegram(&burst) }
    }

    /// The burst's telegram, if it makes one.
    fn telegram(&self, b: &Burst) -> Option<Telegram> {
        let learning = self
            .talking_since
            .is_some_and(|t| b.started.saturating_duration_since(t) < LEARN_PERIOD);
        if b.requests.is_none() && (self.sends_requests || learning) {
            return None;
        }
        Some(Telegram {
            limits: b.limits?,
            soc: b.soc?,
            measurements: b.measurements?,
            // 0x359 is the Pylontech document's own frame: prefer it.
            flags: b.flags.or(b.sma_flags)?,
            requests: b.requests,
            manufacturer: b.manufacturer,
            cells: b.cells,
            energy: b.energy,
            // Pylontech CAN carries the extremes only (0x373).
            cell_readings: None,
        })
    }
}

#[cfg(test)]
mod tests;
