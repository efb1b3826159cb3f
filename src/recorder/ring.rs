//! The recorder's memory: a fixed number of slots, allocated once, that the
//! newest entry overwrites when full. Pure: times are passed in. One ring
//! holds CAN frames ([`Entry`]), another the serial exchanges
//! (super::serial::SerialEntry): a ring is generic over its entry.
//!
//! A dump copies the ring in chunks ([`Ring::span`], then [`Ring::copy`] per
//! chunk under the caller's lock), so that a CAN thread recording meanwhile
//! waits for at most one chunk. Each frame has a sequence number (its
//! position in everything ever written); a slot holds only the frame whose
//! number it last received, so a frame overwritten between two chunks is
//! recognised and left out, never mixed up with its newer neighbour.

use crate::frame::Frame;
use std::ops::Range;

/// One recorded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Wall-clock time, microseconds since the Unix epoch.
    pub micros: u64,
    /// Index of the interface in the recorder's list of names.
    pub interface: u8,
    pub frame: Frame,
}

/// An entry that knows its time.
pub trait Stamped {
    /// Wall-clock time, microseconds since the Unix epoch.
    fn micros(&self) -> u64;
}

impl Stamped for Entry {
    fn micros(&self) -> u64 {
        self.micros
    }
}

/// The ring of the last `capacity` entries.
#[derive(Debug)]
pub struct Ring<T = Entry> {
    slots: Box<[T]>,
    /// How many frames were ever written; the next one goes to slot
    /// `written % capacity`.
    written: u64,
}

impl Ring<Entry> {
    /// A ring of `capacity` CAN frames (at least one).
    pub fn new(capacity: usize) -> Ring<Entry> {
        let empty = Entry {
            micros: 0,
            interface: 0,
            frame: Frame::standard(0, &[]),
        };
        Ring::filled(capacity, empty)
    }
}

impl<T: Copy> Ring<T> {
    /// A ring of `capacity` slots (at least one) holding `empty`, allocated
    /// here and only here.
    pub fn filled(capacity: usize, empty: T) -> Ring<T> {
        Ring {
            slots: vec![empty; capacity.max(1)].into_boxed_slice(),
            written: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Records one frame, overwriting the oldest when full. Allocates nothing.
    pub fn push(&mut self, entry: T) {
        let slot = (self.written % self.slots.len() as u64) as usize;
        self.slots[slot] = entry;
        self.written += 1;
    }

    /// The sequence numbers the ring holds now, oldest first.
    pub fn span(&self) -> Range<u64> {
        self.written.saturating_sub(self.slots.len() as u64)..self.written
    }

    /// Appends the frames numbered `seqs` that the ring still holds, oldest
    /// first; those overwritten since are left out.
    pub fn copy(&self, seqs: Range<u64>, out: &mut Vec<T>) {
        let held = self.span();
        let from = seqs.start.max(held.start);
        let to = seqs.end.min(held.end);
        for seq in from..to {
            out.push(self.slots[(seq % self.slots.len() as u64) as usize]);
        }
    }
}

/// The entries of the last `seconds` before `now_micros` (both ends
/// included), in recorded order. Filtered rather than cut, so that a wall
/// clock set back while recording loses only the frames it moved out of
/// the window.
pub fn window<T: Stamped>(entries: &[T], now_micros: u64, seconds: u32) -> impl Iterator<Item = &T> {
    let from = now_micros.saturating_sub(u64::from(seconds) * 1_000_000);
    entries
        .iter()
        .filter(move |e| e.micros() >= from && e.micros() <= now_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(micros: u64, id: u16) -> Entry {
        Entry {
            micros,
            interface: (id % 3) as u8,
            frame: Frame::standard(id, &[id as u8]),
        }
    }

    fn ids(entries: &[Entry]) -> Vec<u16> {
        entries.iter().map(|e| e.frame.id.raw() as u16).collect()
    }

    #[test]
    fn a_ring_not_yet_full_gives_everything_in_order() {
        let mut ring = Ring::new(4);
        for id in 1..=3 {
            ring.push(entry(u64::from(id), id));
        }
        assert_eq!(ring.span(), 0..3);
        let mut out = Vec::new();
        ring.copy(ring.span(), &mut out);
        assert_eq!(ids(&out), [1, 2, 3]);
    }

    #[test]
    fn wrap_around_keeps_the_newest_capacity_frames() {
        let mut ring = Ring::new(4);
        // 10 frames into 4 slots: frames 7, 8, 9, 10 remain (numbers 6..10).
        for id in 1..=10 {
            ring.push(entry(u64::from(id), id));
        }
        assert_eq!(ring.span(), 6..10);
        let mut out = Vec::new();
        ring.copy(ring.span(), &mut out);
        assert_eq!(ids(&out), [7, 8, 9, 10]);
    }

    #[test]
    fn frames_overwritten_between_chunks_are_left_out() {
        let mut ring = Ring::new(4);
        for id in 1..=4 {
            ring.push(entry(u64::from(id), id));
        }
        let span = ring.span();
        assert_eq!(span, 0..4);
        let mut out = Vec::new();
        ring.copy(span.start..2, &mut out);
        // Two new frames arrive between the chunks: they overwrite frames
        // 1 and 2 (already copied) and 3 and 4 stay.
        ring.push(entry(5, 5));
        ring.push(entry(6, 6));
        ring.copy(2..span.end, &mut out);
        assert_eq!(ids(&out), [1, 2, 3, 4]);
        // Two more overwrite 3 and 4: a chunk asked for them gets nothing.
        ring.push(entry(7, 7));
        ring.push(entry(8, 8));
        let mut late = Vec::new();
        ring.copy(2..4, &mut late);
        assert!(late.is_empty());
    }

    #[test]
    fn the_window_keeps_the_last_seconds_only() {
        // Frames at 0.5 s steps from t = 100 s to 110 s; a 3 s window at
        // 110 s keeps 107.0 to 110.0: 7 frames (107.0, 107.5, ... 110.0).
        let entries: Vec<Entry> = (0..=20).map(|k| entry(100_000_000 + k * 500_000, k as u16)).collect();
        let kept: Vec<u64> = window(&entries, 110_000_000, 3).map(|e| e.micros).collect();
        assert_eq!(
            kept,
            [
                107_000_000,
                107_500_000,
                108_000_000,
                108_500_000,
                109_000_000,
                109_500_000,
                110_000_000
            ]
        );
        // A frame stamped after the dump (a clock set back) is not in it.
        assert_eq!(window(&entries, 104_200_000, 1).count(), 2);
    }

    #[test]
    fn an_entry_is_32_bytes() {
        // docs/recorder.md sizes the ring with it.
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn a_zero_capacity_is_one_slot() {
        let mut ring = Ring::new(0);
        ring.push(entry(1, 1));
        ring.push(entry(2, 2));
        let mut out = Vec::new();
        ring.copy(0..2, &mut out);
        assert_eq!(ids(&out), [2]);
    }
}
