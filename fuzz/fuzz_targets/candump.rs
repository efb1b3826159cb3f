//! The candump line parser on arbitrary text: never panics, and every frame
//! it accepts prints back (in the compact log format) to a line that parses
//! to the same frame.

#![no_main]

use bms_gateway::candump::parse_line;
use bms_gateway::frame::{CanId, FrameKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(record) = parse_line(line) else { return };
    let f = record.frame;
    assert!(f.data().len() <= 8 && f.dlc() <= 8);
    let id = match f.id {
        CanId::Standard(id) => {
            assert!(id <= 0x7FF);
            format!("{id:03X}")
        }
        CanId::Extended(id) => {
            assert!(id <= 0x1FFF_FFFF);
            format!("{id:08X}")
        }
    };
    let again = match f.kind {
        FrameKind::Data => format!("(0.0) can0 {id}#{}", f.hex()),
        FrameKind::Remote => format!("(0.0) can0 {id}#R{}", f.dlc()),
    };
    let reparsed = parse_line(&again).unwrap_or_else(|e| panic!("{line:?} -> {again:?}: {e:?}"));
    assert_eq!(reparsed.frame, f, "{line:?} -> {again:?}");
});
