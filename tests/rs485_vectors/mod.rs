//! The protocol reference's RS485 vectors (reference/pylontech-rs485.md §5)
//! made into telegrams with the codec, for the tests that follow cells to
//! MQTT, the status page and /metrics.

#![allow(dead_code)]

use bms_gateway::rs485::responses::{decode_analog, decode_charge_management};
use bms_gateway::rs485::{Cycle, Protocol, Receiver, check_reply};
use bms_gateway::telegram::Telegram;

/// V7 (US5000, ADR 2): 0x42 and 0x92 answers.
pub const V7_ANALOG: &str = "~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r";
pub const V7_MANAGEMENT: &str = "~20024600B01402D002AFC800C8FE0CC0F915\r";
/// V10 (PACE, ADR 2): 0x42 answer, 16 cells spread over 117 mV.
pub const V10_ANALOG: &str = "~25024600F07A0002100D370CE50D080CED0D060CE70D1D0CEB0CF80CFA0CFB0D070CE10CF10CC20D06060BAA0BAC0BA60BA70BA90BB20000CF9406D603138800001388E261\r";

/// The INFO of the one answer `text` holds, from ADR 2.
pub fn info(text: &str) -> Vec<u8> {
    let mut rx = Receiver::new();
    let mut out = None;
    for &b in text.as_bytes() {
        if let Some(got) = rx.push(b) {
            let frame = got.expect("a good frame");
            out = Some(check_reply(&frame, 2).expect("a normal answer").to_vec());
        }
    }
    out.expect("a whole frame")
}

/// One poll cycle's telegram: `analog` (0x42, read as `protocol`) with V7's
/// 0x92 (CVL 53.25 V, CCL 20 A, DCL 50 A, charge and discharge enabled).
pub fn telegram(analog: &str, protocol: Protocol) -> Telegram {
    Cycle {
        analog: decode_analog(&info(analog), protocol).unwrap().pack,
        management: decode_charge_management(&info(V7_MANAGEMENT)).unwrap(),
        alarms: None,
    }
    .telegram()
    .unwrap()
}
