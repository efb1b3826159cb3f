//! What an output sends, pure: the frame set for a state, the state to send
//! at a given moment (the safe state once it has expired), and when the next
//! push-mode transmission is due. The thread in `output` asks these.

use crate::codec::{self, Manufacturer, Measurements, Message, StateOfCharge};
use crate::combine::{Battery, Shaped, SystemState};
use crate::frame::Frame;
use std::time::{Duration, Instant};

/// At least this often in push mode, whatever PUSH-MIN-DELAY says.
pub const REPEAT: Duration = Duration::from_secs(1);

/// The frames for one transmission, in the order of docs/combining.md
/// ("Timing"); no allocation.
#[derive(Debug, Clone, Copy)]
pub struct FrameSet {
    frames: [Frame; 7],
    len: usize,
}

impl FrameSet {
    pub fn frames(&self) -> &[Frame] {
        &self.frames[..self.len]
    }
}

/// Builds the frame set: 0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E, and 0x373
/// when cell data is known.
pub fn frame_set(b: &Battery, manufacturer: Manufacturer) -> FrameSet {
    let empty = Frame::standard(0, &[]);
    let mut frames = [empty; 7];
    let messages = [
        Message::Flags(b.flags),
        Message::Limits(codec::Limits {
            v_charge_cmd: b.v_charge_cmd,
            i_lim_charge: b.i_lim_charge,
            i_lim_discharge: b.i_lim_discharge,
            v_discharge_min: b.v_discharge_min,
        }),
        Message::StateOfCharge(StateOfCharge {
            soc: b.soc,
            soh: b.soh,
            soc_hires: None,
        }),
        Message::Measurements(Measurements {
            v_avg: b.v_avg,
            i_total: b.i_total,
            t_avg: b.t_avg,
        }),
        Message::Requests(b.requests),
        Message::Manufacturer(manufacturer),
    ];
    for (slot, m) in frames.iter_mut().zip(messages.iter()) {
        *slot = codec::encode(m);
    }
    let mut len = messages.len();
    if let Some(cells) = b.cells {
        frames[len] = codec::encode(&Message::Cells(cells));
        len += 1;
    }
    FrameSet { frames, len }
}

/// The state to send at `now`: `shaped` itself, or the core's safe state
/// once it has expired (a live combiner would have made a newer one by then).
pub fn state_to_send(shaped: &Shaped, now: Instant) -> (SystemState, Battery) {
    if now <= shaped.expires || shaped.state == SystemState::Safe {
        return (shaped.state, shaped.battery);
    }
    (SystemState::Safe, shaped.safe())
}

/// When the next push-mode transmission is due. Pure: the thread asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushTimer {
    pub min_delay: Duration,
    pub last_sent: Option<Instant>,
    /// A state arrived that has not been sent yet.
    pub pending: bool,
}

impl PushTimer {
    /// `None`: nothing to send until a state arrives.
    pub fn due(&self, have_state: bool, now: Instant) -> Option<Instant> {
        match (self.last_sent, self.pending, have_state) {
            (_, _, false) => None,
            (None, _, true) => Some(now),
            (Some(last), true, true) => Some(last + self.min_delay.min(REPEAT)),
            (Some(last), false, true) => Some(last + REPEAT),
        }
    }
}
