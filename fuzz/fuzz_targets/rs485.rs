//! The RS485 framer and decoders (core/src/rs485) on arbitrary bytes: never
//! a panic; every frame the receiver yields has a right CHKSUM, LCHKSUM and
//! LENID (checked here on its characters, independently of the framer); the
//! rejection counters add up to the rejections returned; every frame's INFO
//! goes through every decoder under every protocol, and a 0x42 answer that
//! decodes goes through the mapping with a fixed 0x92 answer: a telegram it
//! makes has a SOC within 0..=100 % and limits never negative.
//!
//! Input: byte 0 picks the piece size the stream is fed in (1..=64), the
//! rest is the stream.

#![no_main]

use bms_gateway::rs485::Protocol;
use bms_gateway::rs485::framing::Receiver;
use bms_gateway::rs485::mapping::Cycle;
use bms_gateway::rs485::responses::*;
use libfuzzer_sys::fuzz_target;

/// CHKSUM, LCHKSUM and LENID of a frame's characters, by their definitions.
fn sound(raw: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(raw) else {
        return false;
    };
    let n = text.len();
    let word = |at: usize| u16::from_str_radix(&text[at..at + 4], 16).ok();
    let (Some(length), Some(chk)) = (word(8), word(n - 4)) else {
        return false;
    };
    let sum: u32 = text[..n - 4].bytes().map(u32::from).sum();
    let lenid = length & 0xFFF;
    let nibbles = (lenid & 0xF) + ((lenid >> 4) & 0xF) + (lenid >> 8);
    (sum + u32::from(chk)) % 0x10000 == 0 && (length >> 12) == (16 - nibbles % 16) % 16 && usize::from(lenid) == n - 16
}

/// V7's 0x92 answer (reference §5): CVL 53.25 V, CCL 20 A, DCL 50 A.
const MANAGEMENT: [u8; 10] = [0x02, 0xD0, 0x02, 0xAF, 0xC8, 0x00, 0xC8, 0xFE, 0x0C, 0xC0];

fn decode_all(info: &[u8]) {
    let management = decode_charge_management(&MANAGEMENT).expect("V7's 0x92 decodes");
    for protocol in Protocol::ALL {
        let alarms = decode_alarms(info, protocol).ok();
        let _ = decode_system_parameters(info, protocol);
        if let Ok(analog) = decode_analog(info, protocol) {
            let cycle = Cycle {
                analog: analog.pack,
                management,
                alarms,
            };
            if let Ok(t) = cycle.telegram() {
                assert!((0.0..=100.0).contains(&t.soc.soc), "{t:?}");
                assert!(t.limits.i_lim_charge >= 0.0 && t.limits.i_lim_discharge >= 0.0);
            }
        }
    }
    if let Ok(group) = decode_analog_group(info) {
        assert!(group.packs().count() <= usize::from(group.count));
    }
    let _ = decode_charge_management(info);
    let _ = decode_manufacturer_info(info);
    let _ = decode_serial_number(info);
    let _ = decode_software_version(info);
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(head % 64) + 1;
    let mut rx = Receiver::new();
    let mut rejections = 0u64;
    for chunk in stream.chunks(piece) {
        for &b in chunk {
            match rx.push(b) {
                Some(Ok(frame)) => {
                    assert!(sound(frame.raw), "{:?}", String::from_utf8_lossy(frame.raw));
                    let _ = check_reply(&frame, frame.adr);
                    decode_all(frame.info);
                }
                Some(Err(_)) => rejections += 1,
                None => {}
            }
        }
    }
    rejections += u64::from(rx.abandon().is_some());
    assert_eq!(rx.rejected().total(), rejections);
});
