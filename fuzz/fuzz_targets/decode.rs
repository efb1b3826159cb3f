//! The frame decoder on arbitrary frames: never panics, and every message the
//! gateway itself sends survives encode -> decode unchanged (so a decoded
//! value is one the encoder can represent, and the encoder's rounding and
//! saturation agree with the decoder's scaling).
//!
//! Input: byte 0 picks the frame kind and ID format, bytes 1-2 (or 1-4) the
//! ID, the rest (at most 8) the data. IDs near 0x351..0x37F are favoured so
//! that the protocol's frames are reached quickly.

#![no_main]

use bms_gateway::codec::{Message, decode, encode};
use bms_gateway::frame::{CanId, Frame, FrameKind};
use libfuzzer_sys::fuzz_target;

fn frame(data: &[u8]) -> Option<Frame> {
    let (&head, rest) = data.split_first()?;
    let (id, rest) = match head & 0x03 {
        // Mostly protocol IDs: 0x300 + one byte.
        0 | 1 => (CanId::Standard(0x300 | u16::from(*rest.first()?)), rest.get(1..)?),
        2 => {
            let raw = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]);
            (CanId::Standard(raw & 0x7FF), rest.get(2..)?)
        }
        _ => {
            let raw = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
            (CanId::Extended(raw & 0x1FFF_FFFF), rest.get(4..)?)
        }
    };
    let kind = if head & 0x04 != 0 {
        FrameKind::Remote
    } else {
        FrameKind::Data
    };
    let data = &rest[..rest.len().min(8)];
    Some(match kind {
        FrameKind::Data => Frame::new(id, kind, data),
        FrameKind::Remote => Frame::remote(id, data.len() as u8),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(frame) = frame(data) else { return };
    let Ok(message) = decode(&frame) else { return };
    // The messages the virtual BMS sends toward inverters.
    let sent = matches!(
        message,
        Message::Limits(_)
            | Message::StateOfCharge(_)
            | Message::Measurements(_)
            | Message::Flags(_)
            | Message::Requests(_)
            | Message::Manufacturer(_)
            | Message::Cells(_)
            | Message::KeepAlive
    );
    let encoded = encode(&message);
    assert!(encoded.data().len() <= 8);
    if sent {
        assert_eq!(decode(&encoded), Ok(message), "{frame:?} -> {message:?} -> {encoded:?}");
    }
});
