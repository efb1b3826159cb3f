//! RS485 codec tests: every test vector of the protocol reference (§1.2,
//! §1.3, §1.4 and §5, V1-V11) with the values it states, its negative list,
//! the mapping to a telegram, and properties of the framer.
//!
//! Checksums in the hand-made frames are computed by [`sum_check`], written
//! here independently of the code under test (u32 arithmetic).

use super::framing::{MAX_BODY_CHARS, checksum, frame_len, length_field};
use super::mapping::{PLAUSIBILITY_TOLERANCE, check_plausible, key};
use super::requests::WHOLE_GROUP;
use super::responses::*;
use super::*;
use crate::codec::{FLAG_BITS, Flags, Requests};
use proptest::prelude::*;

/// An owned copy of a received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    ver: u8,
    adr: u8,
    cid1: u8,
    cid2: u8,
    info: Vec<u8>,
}

fn feed(rx: &mut Receiver, bytes: &[u8]) -> Vec<Result<Got, Rejection>> {
    let mut out = Vec::new();
    for &b in bytes {
        if let Some(r) = rx.push(b) {
            out.push(r.map(|f| Got {
                ver: f.ver,
                adr: f.adr,
                cid1: f.cid1,
                cid2: f.cid2,
                info: f.info.to_vec(),
            }));
        }
    }
    out
}

/// The one frame `text` makes; panics on anything else.
fn one(text: &str) -> Got {
    let mut rx = Receiver::new();
    match feed(&mut rx, text.as_bytes()).as_slice() {
        [Ok(got)] => got.clone(),
        other => panic!("{text:?}: {other:?}"),
    }
}

/// The INFO of a good answer from `adr`.
fn info_of(text: &str, adr: u8) -> Vec<u8> {
    let got = one(text);
    let frame = Frame {
        ver: got.ver,
        adr: got.adr,
        cid1: got.cid1,
        cid2: got.cid2,
        info: &got.info,
        raw: &[],
    };
    check_reply(&frame, adr)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .to_vec()
}

/// The only rejection `text` gives, with no frame.
fn rejection(text: &[u8]) -> Rejection {
    let mut rx = Receiver::new();
    match feed(&mut rx, text).as_slice() {
        [Err(r)] => *r,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
    }
}

/// CHKSUM by the reference's definition, in u32: (0x10000 - sum % 0x10000) % 0x10000.
fn sum_check(body: &str) -> u16 {
    let sum: u32 = body.bytes().map(u32::from).sum();
    ((0x10000 - sum % 0x10000) % 0x10000) as u16
}

/// `~body CHKSUM CR` with a correct checksum.
fn framed(body: &str) -> String {
    format!("~{body}{:04X}\r", sum_check(body))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[track_caller]
fn assert_close(got: f64, want: f64) {
    assert!(close(got, want), "got {got}, want {want}");
}

#[track_caller]
fn assert_all_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(close(*g, *w), "{got:?} vs {want:?}");
    }
}

// ---- §1.2 LENGTH, §1.3 CHKSUM, §1.4 the worked example and the requests.

#[test]
fn length_field_examples() {
    // Reference §1.2: LENID 2 -> E002, 18 -> D012 (the spec's own), 122 ->
    // F07A, 0 -> 0000, 0x0F1 (nibble sum 16, the masking trap) -> 00F1.
    assert_eq!(length_field(0x002), 0xE002);
    assert_eq!(length_field(0x012), 0xD012);
    assert_eq!(length_field(0x07A), 0xF07A);
    assert_eq!(length_field(0x000), 0x0000);
    assert_eq!(length_field(0x0F1), 0x00F1);
}

#[test]
fn checksum_of_the_spec_example_is_fc71_not_fc72() {
    // Reference §1.3 errata: the characters add up to 0x038F.
    assert_eq!(checksum(b"1203400456ABCEFE"), 0xFC71);
    assert_eq!(rejection(b"~1203400456ABCEFEFC72\r"), Rejection::Checksum);
}

#[test]
fn checksum_is_modulo_65536_not_65535() {
    // 700 characters 'z' (0x7A) sum to 0x1_4D98, past 65535: the sum
    // modulo 65536 is 0x4D98, whose complement is 0xB268 (modulo 65535 it
    // would be 0x4D99 and the checksum 0xB267).
    let long = "z".repeat(700);
    assert_eq!(checksum(long.as_bytes()), sum_check(&long));
    assert_eq!(checksum(long.as_bytes()), 0xB268);
}

#[test]
fn worked_example_bytes_on_the_wire() {
    let encoded = Request::new(0x20, 2, Command::AnalogValues).encode();
    assert_eq!(
        encoded.as_bytes(),
        [
            0x7E, 0x32, 0x30, 0x30, 0x32, 0x34, 0x36, 0x34, 0x32, 0x45, 0x30, 0x30, 0x32, 0x30, 0x32, 0x46, 0x44, 0x33,
            0x33, 0x0D
        ]
    );
}

#[test]
fn request_table() {
    use Command::*;
    let group = Some(WHOLE_GROUP);
    let cases: [(Request, &str); 15] = [
        (Request::new(0x20, 2, ProtocolVersion), "~2002464F0000FD98\r"),
        (Request::new(0x00, 2, ProtocolVersion), "~0002464F0000FD9A\r"),
        (Request::new(0x20, 2, ManufacturerInfo), "~200246510000FDAC\r"),
        (Request::new(0x20, 2, AnalogValues), "~20024642E00202FD33\r"),
        (
            Request::new(0x20, 2, AnalogValues).with_info(group),
            "~20024642E002FFFD09\r",
        ),
        (
            Request::new(0x20, 1, AnalogValues).with_info(group),
            "~20014642E002FFFD0A\r",
        ),
        (Request::new(0x20, 2, AlarmInfo), "~20024644E00202FD31\r"),
        (
            Request::new(0x20, 2, SystemParameters).with_info(Some(2)),
            "~20024647E00202FD2E\r",
        ),
        (Request::new(0x20, 2, SystemParameters), "~200246470000FDA7\r"),
        (Request::new(0x20, 2, ChargeManagement), "~20024692E00202FD2E\r"),
        (Request::new(0x20, 2, SerialNumber), "~20024693E00202FD2D\r"),
        (Request::new(0x20, 2, SoftwareVersion), "~20024696E00202FD2A\r"),
        (Request::new(0x20, 0x12, AnalogValues), "~20124642E00212FD31\r"),
        (
            Request::new(Protocol::Seplos.version(), 0, AnalogValues),
            "~20004642E00200FD37\r",
        ),
        (
            Request::new(Protocol::Pace.version(), 2, AnalogValues),
            "~25024642E00202FD2E\r",
        ),
    ];
    for (request, want) in cases {
        assert_eq!(
            String::from_utf8_lossy(request.encode().as_bytes()),
            want,
            "{request:?}"
        );
    }
    // V9's 0x51 request to a Seplos at ADR 0.
    let seplos = Request::new(0x20, 0, ManufacturerInfo).encode();
    assert_eq!(seplos.as_bytes(), b"~200046510000FDAE\r");
}

#[test]
fn set_and_turn_off_cannot_be_encoded() {
    // By type: no Command is 0x94 or 0x95, and a response's CID2 is an Rtn,
    // none of which is either. Every code a Command or an Rtn can carry:
    let commands: Vec<u8> = Command::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(commands, [0x4F, 0x51, 0x42, 0x44, 0x47, 0x92, 0x93, 0x96]);
    for code in 0..=255u8 {
        if let Some(rtn) = Rtn::from_code(code) {
            assert!(!matches!(rtn.code(), 0x94 | 0x95));
        }
    }
    assert_eq!(Command::from_code(0x94), None);
    assert_eq!(Command::from_code(0x95), None);
    // And every request is CID1 0x46.
    for c in Command::ALL {
        let got = one(std::str::from_utf8(Request::new(0x20, 2, c).encode().as_bytes()).unwrap());
        assert_eq!((got.cid1, got.cid2), (0x46, c.code()));
    }
}

// ---- §5: the test vectors.

const V1: &str = "~20024600F07A11020F0D450D440D450D440D450D440D3E0D450D4A0D4A0D4B0D4A0D4A0D4A0D4A050BC30BC30BC30BCD0BCD0000C725FFFF04FFFF000200CA58012110E1A2\r";

#[test]
fn v1_spec_example_checksum_is_wrong_and_e27a_is_right() {
    assert_eq!(rejection(V1.as_bytes()), Rejection::Checksum);
    let fixed = V1.replace("E1A2\r", "E27A\r");
    let got = one(&fixed);
    assert_eq!((got.ver, got.adr, got.cid2, got.info.len() * 2), (0x20, 2, 0, 122));
    let a = decode_analog(&info_of(&fixed, 2), Protocol::Pylon).unwrap();
    assert_eq!((a.info_flag, a.command), (0x11, 2));
    let p = a.pack;
    assert_eq!(
        p.cells_mv(),
        [
            3397, 3396, 3397, 3396, 3397, 3396, 3390, 3397, 3402, 3402, 3403, 3402, 3402, 3402, 3402
        ]
    );
    assert_all_close(p.temperatures(), &[28.0, 28.0, 28.0, 29.0, 29.0]);
    assert_close(p.current, 0.0);
    assert_close(p.voltage, 50.981);
    assert_eq!(p.cycles, Some(2));
    assert_close(p.remaining_ah, 51.8);
    assert_eq!(p.full_ah, Some(74.0));
    assert_close(100.0 * p.remaining_ah / p.full_ah.unwrap(), 70.0);
}

#[test]
fn v2_up2500() {
    let text = "~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73FFFA680EFFFF04FFFF00000174E401B198E906\r";
    let a = decode_analog(&info_of(text, 2), Protocol::Pylon).unwrap();
    assert_eq!((a.info_flag, a.command), (0x10, 2));
    let p = a.pack;
    assert_eq!(p.cells_mv(), [3330, 3330, 3330, 3331, 3328, 3329, 3329, 3331]);
    assert_all_close(p.temperatures(), &[21.0, 19.0, 19.0, 19.0, 20.0]);
    assert_close(p.current, -0.6);
    assert_close(p.voltage, 26.638);
    assert_eq!(p.cycles, Some(0));
    assert_close(p.remaining_ah, 95.46);
    assert_eq!(p.full_ah, Some(111.0));
    assert_close(100.0 * p.remaining_ah / p.full_ah.unwrap(), 86.0);
}

const V3: &str = "~20024600B014026EF05AA0022BFDD5C0F915\r";

#[test]
fn v3_up2500_charge_management() {
    let m = decode_charge_management(&info_of(V3, 2)).unwrap();
    assert_eq!(m.command, 2);
    assert_close(m.cvl, 28.4);
    assert_close(m.dvl, 23.2);
    assert_close(m.ccl, 55.5);
    // Sent as 0xFDD5 = -55.5 A; taken as a magnitude.
    assert_close(m.dcl, 55.5);
    assert_eq!(m.status, 0xC0);
    assert_eq!(
        requests_of(m.status),
        Requests {
            charge_enable: true,
            discharge_enable: true,
            force_charge_request: false,
            force_charge_request_2: false,
            balancing_charge_request: false,
        }
    );
}

/// The request bits a telegram gets from a 0x92 status byte (through the
/// mapping, with V7's other answers).
fn requests_of(status: u8) -> Requests {
    let mut cycle = v7_cycle();
    cycle.management.status = status;
    cycle.telegram().unwrap().requests.unwrap()
}

#[test]
fn v4_three_us2000_whole_group() {
    let text = "~20024600914211030F0CE70CE80CE60CE70CE80CE80CE80CE60CE50CE60CE80CE70CEA0CE50CE6050B910B870B870B870B87FFE6C18982DC02C350001F0F0CE20CE60CE60CE10CE50CE70CE60CE30CE20CE50CE30CE90CE70CE90CE9050B910B870B870B870B87FFE7C17082DC02C350001F0F0CE20CE50CE50CE20CE30CE30CE40CE50CE60CE60CE30CE40CE40CE60CE6050B910B7D0B7D0B7D0B7DFFE5C16082DC02C350001FB476\r";
    let info = info_of(text, 2);
    assert_eq!(info.len() * 2, 322);
    let group = decode_analog_group(&info).unwrap();
    assert_eq!((group.info_flag, group.count), (0x11, 3));
    let packs: Vec<PackAnalog> = group.packs().map(Result::unwrap).collect();
    // (min cell, max cell, temperatures, current, voltage)
    let want: [(u16, u16, [f64; 5], f64, f64); 3] = [
        (3301, 3306, [23.0, 22.0, 22.0, 22.0, 22.0], -2.6, 49.545),
        (3297, 3305, [23.0, 22.0, 22.0, 22.0, 22.0], -2.5, 49.520),
        (3298, 3302, [23.0, 21.0, 21.0, 21.0, 21.0], -2.7, 49.504),
    ];
    assert_eq!(packs.len(), 3);
    for (p, (lo, hi, temps, current, voltage)) in packs.iter().zip(want) {
        assert_eq!(p.cells_mv().len(), 15);
        assert_eq!(p.cells_mv().iter().min(), Some(&lo));
        assert_eq!(p.cells_mv().iter().max(), Some(&hi));
        assert_all_close(p.temperatures(), &temps);
        assert_close(p.current, current);
        assert_close(p.voltage, voltage);
        assert_close(p.remaining_ah, 33.5);
        assert_eq!(p.full_ah, Some(50.0));
        assert_eq!(p.cycles, Some(31));
    }
}

#[test]
fn v5_us3000_and_us2000_whole_group_p4() {
    let text = "~2002460010F011020F0CCD0CCE0CCC0CCE0CCB0CCC0CCD0CCC0CCD0CCB0CCC0CCD0CCD0CCE0CCC050BE10BCD0BCD0BD70BCDFFC3BFFDFFFF04FFFF0234007F300121100F0CCA0CCA0CCB0CCC0CCA0CCC0CCB0CCB0CCB0CCB0CCB0CCA0CCC0CCC0CCB050BEB0BCD0BCD0BCD0BC3FFD1BFE5FFFF04FFFF0292005FB400C350C4A7\r";
    let info = info_of(text, 2);
    assert_eq!(info.len() * 2, 240);
    let group = decode_analog_group(&info).unwrap();
    assert_eq!(group.count, 2);
    let packs: Vec<PackAnalog> = group.packs().map(Result::unwrap).collect();
    let want = [
        PackWant {
            cells: (3275, 3278),
            temperatures: [31.0, 29.0, 29.0, 30.0, 29.0],
            current: -6.1,
            voltage: 49.149,
            cycles: 564,
            remaining: 32.56,
            total: 74.0,
        },
        PackWant {
            cells: (3274, 3276),
            temperatures: [32.0, 29.0, 29.0, 29.0, 28.0],
            current: -4.7,
            voltage: 49.125,
            cycles: 658,
            remaining: 24.5,
            total: 50.0,
        },
    ];
    assert_eq!(packs.len(), 2);
    for (p, w) in packs.iter().zip(want) {
        assert_eq!(p.cells_mv().iter().min(), Some(&w.cells.0));
        assert_eq!(p.cells_mv().iter().max(), Some(&w.cells.1));
        assert_all_close(p.temperatures(), &w.temperatures);
        assert_close(p.current, w.current);
        assert_close(p.voltage, w.voltage);
        assert_eq!(p.cycles, Some(w.cycles));
        assert_close(p.remaining_ah, w.remaining);
        assert_eq!(p.full_ah, Some(w.total));
    }
}

/// What the reference states of one pack of a group answer.
struct PackWant {
    /// Lowest and highest cell, mV.
    cells: (u16, u16),
    temperatures: [f64; 5],
    current: f64,
    voltage: f64,
    cycles: u16,
    remaining: f64,
    total: f64,
}

#[test]
fn v6_system_parameters_us3000c_and_us2000c() {
    let us3000c = "~20024600B032110E420BEA0AF00D030A470384D2F0B3B0A7F80D030A47FC7CF27E\r";
    let us2000c = "~20024600B032110E420BEA0AF00D030A470384D2F0B3B0A9EC0D030A47FC7CF272\r";
    for (text, module_under) in [(us3000c, 43.0), (us2000c, 43.5)] {
        let s = decode_system_parameters(&info_of(text, 2), Protocol::Pylon).unwrap();
        assert_eq!(s.info_flag, 0x11);
        assert_close(s.cell_high, 3.65);
        assert_close(s.cell_low, 3.05);
        assert_close(s.cell_under, 2.8);
        assert_close(s.charge_high_temperature, 60.0);
        assert_close(s.charge_low_temperature, -10.0);
        assert_close(s.charge_current, 90.0);
        assert_close(s.module_high, 54.0);
        assert_close(s.module_low, 46.0);
        assert_close(s.module_under, module_under);
        assert_close(s.discharge_high_temperature, 60.0);
        assert_close(s.discharge_low_temperature, -10.0);
        assert_close(s.discharge_current, -90.0);
    }
}

const V7_ANALOG: &str = "~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r";
const V7_MANAGEMENT: &str = "~20024600B01402D002AFC800C8FE0CC0F915\r";
const V7_ALARMS: &str = "~20024600A04200020F000000000000000000000000000000050000000000000000000E80000000F101\r";

fn v7_cycle() -> Cycle {
    Cycle {
        analog: decode_analog(&info_of(V7_ANALOG, 2), Protocol::Pylon).unwrap().pack,
        management: decode_charge_management(&info_of(V7_MANAGEMENT, 2)).unwrap(),
        alarms: Some(decode_alarms(&info_of(V7_ALARMS, 2), Protocol::Pylon).unwrap()),
    }
}

#[test]
fn v7_us5000_analog() {
    let a = decode_analog(&info_of(V7_ANALOG, 2), Protocol::Pylon).unwrap();
    assert_eq!(a.info_flag, 0x00);
    let p = a.pack;
    assert_eq!(p.cells_mv().len(), 15);
    assert_eq!(p.cells_mv().iter().min(), Some(&3348));
    assert_eq!(p.cells_mv().iter().max(), Some(&3352));
    assert_all_close(p.temperatures(), &[35.2, 32.4, 32.5, 32.2, 35.2]);
    assert_close(p.current, 20.1);
    assert_close(p.voltage, 50.247);
    assert_eq!(p.cycles, Some(18));
    assert_close(p.remaining_ah, 94.905);
    assert_eq!(p.full_ah, Some(100.0));
}

#[test]
fn v7_us5000_charge_management() {
    let m = decode_charge_management(&info_of(V7_MANAGEMENT, 2)).unwrap();
    assert_close(m.cvl, 53.25);
    assert_close(m.dvl, 45.0);
    assert_close(m.ccl, 20.0);
    assert_close(m.dcl, 50.0);
    assert_eq!(m.status, 0xC0);
}

#[test]
fn v7_us5000_alarms_with_the_extra_byte() {
    let info = info_of(V7_ALARMS, 2);
    // LENID 66: 33 bytes, one more than V3.3 accounts for.
    assert_eq!(info.len(), 33);
    let a = decode_alarms(&info, Protocol::Pylon).unwrap();
    assert_eq!((a.info_flag, a.command), (0, 2));
    assert_eq!(a.cell_states().count(), 15);
    assert!(a.cell_states().all(|s| s == AlarmState::Normal));
    assert_eq!(a.temperature_states().count(), 5);
    assert!(a.temperature_states().all(|s| s == AlarmState::Normal));
    assert_eq!(
        a.pylon,
        Some(PylonStatus {
            charge_current: AlarmState::Normal,
            module_voltage: AlarmState::Normal,
            discharge_current: AlarmState::Normal,
            status: [0x00, 0x0E, 0x80, 0x00, 0x00],
        })
    );
}

#[test]
fn v7_one_cycle_makes_this_telegram() {
    // Every value worked out by hand from V7's three answers.
    let t = v7_cycle().telegram().unwrap();
    assert_close(t.limits.v_charge_cmd, 53.25);
    assert_close(t.limits.i_lim_charge, 20.0);
    assert_close(t.limits.i_lim_discharge, 50.0);
    assert_eq!(t.limits.v_discharge_min, Some(45.0));
    // 94.905 Ah of 100 Ah.
    assert!((t.soc.soc - 94.905).abs() < 1e-9);
    assert_close(t.soc.soh, 100.0);
    assert_eq!(t.soc.soc_hires, None);
    assert_close(t.measurements.v_avg, 50.247);
    assert_close(t.measurements.i_total, 20.1);
    // (35.2 + 32.4 + 32.5 + 32.2 + 35.2) / 5
    assert!((t.measurements.t_avg - 33.5).abs() < 1e-9);
    assert_eq!(
        t.flags,
        Flags {
            n_modules: 1,
            ..Flags::default()
        }
    );
    assert_eq!(
        t.requests,
        Some(Requests {
            charge_enable: true,
            discharge_enable: true,
            force_charge_request: false,
            force_charge_request_2: false,
            balancing_charge_request: false,
        })
    );
    let c = t.cells.unwrap();
    assert_close(c.v_cell_min, 3.348);
    assert_close(c.v_cell_max, 3.352);
    assert_close(c.t_cell_min, 32.2);
    // The warmest sensor.
    assert_close(c.t_cell_max, 35.2);
    assert_eq!(t.manufacturer, None);
    assert_eq!(t.energy, None);
}

#[test]
fn v7_one_cycle_carries_every_cell_and_temperature() {
    // V7's 0x42, by hand: cells 0D17 0D14 0D15 0D15 0D18, three times;
    // temperatures (0C0B, 0BEF, 0BF0, 0BED, 0C0B) - 2731 in 0.1 degC.
    let t = v7_cycle().telegram().unwrap();
    let r = t.cell_readings.expect("a 15-cell pack fits");
    let five = [3351, 3348, 3349, 3349, 3352];
    let cells: Vec<u16> = five.iter().chain(&five).chain(&five).copied().collect();
    assert_eq!(r.cells_mv(), cells.as_slice());
    let temperatures: Vec<f64> = r.temperatures().collect();
    assert_all_close(&temperatures, &[35.2, 32.4, 32.5, 32.2, 35.2]);
    // 3 x 16 749 mV / 15 cells = 3349.8 mV; the sum is the pack's 50.247 V.
    assert!((r.mean_cell_v() - 3.3498).abs() < 1e-9);
    assert!((r.cell_volts().sum::<f64>() - 50.247).abs() < 1e-9);
}

#[test]
fn v9_seplos_cycle_carries_its_16_cells_and_6_temperatures() {
    let mut cycle = v7_cycle();
    cycle.analog = decode_analog(&info_of(V9_ANALOG, 0), Protocol::Seplos).unwrap().pack;
    cycle.alarms = None;
    let r = cycle.telegram().unwrap().cell_readings.expect("16 cells fit");
    // V9's cells, read by hand from the frame: 0CD7 0CE9 0CF4 0CD6 ...
    assert_eq!(
        r.cells_mv(),
        [
            3287, 3305, 3316, 3286, 3311, 3301, 3297, 3292, 3305, 3312, 3304, 3311, 3306, 3290, 3294, 3288
        ]
    );
    assert_eq!(r.temperature_count(), 6);
}

#[test]
fn a_cycle_without_alarm_answer_has_no_alarm_bits() {
    let mut cycle = v7_cycle();
    cycle.alarms = None;
    let t = cycle.telegram().unwrap();
    assert_eq!(
        (t.flags.error_flags_1, t.flags.warning_flags_1, t.flags.n_modules),
        (0, 0, 1)
    );
}

#[test]
fn v8_rs232_two_us2000b_at_address_1() {
    let text = "~20014600B0D800020F0CF80CF80CF70CF90CF80CF80CF80CF80CF80CF80CF90CF80CF70CF90CF7050BA50B870B870B870B87FFF5C288A60402C35000010F0CF80CF80CF60CF70CF80CF80CF70CF80CF80CF90CF90CF90CF80CF80CF8050B9B0B870B870B870B87FFF4C287A7F802C3500280CC47\r";
    let info = info_of(text, 1);
    let group = decode_analog_group(&info).unwrap();
    assert_eq!(group.count, 2);
    let packs: Vec<PackAnalog> = group.packs().map(Result::unwrap).collect();
    assert_close(packs[0].current, -1.1);
    assert_close(packs[0].voltage, 49.8);
    assert_close(packs[0].remaining_ah, 42.5);
    assert_eq!(packs[0].full_ah, Some(50.0));
    assert_eq!(packs[0].cycles, Some(1));
    assert_all_close(packs[0].temperatures(), &[25.0, 22.0, 22.0, 22.0, 22.0]);
    assert_close(packs[1].current, -1.2);
    assert_close(packs[1].voltage, 49.799);
    assert_close(packs[1].remaining_ah, 43.0);
    assert_eq!(packs[1].full_ah, Some(50.0));
    assert_eq!(packs[1].cycles, Some(640));
}

const V9_ANALOG: &str = "~2000460010960001100CD70CE90CF40CD60CEF0CE50CE10CDC0CE90CF00CE80CEF0CEA0CDA0CDE0CD8060BA60BA00B970BA60BA50BA2FD5C14A0344E0A426803134650004603E8149F0000000000000000DC6C\r";

#[test]
fn v9_seplos_analog() {
    let a = decode_analog(&info_of(V9_ANALOG, 0), Protocol::Seplos).unwrap();
    assert_eq!((a.info_flag, a.command), (0x00, 0x01));
    let p = a.pack;
    assert_eq!(
        p.cells_mv(),
        [
            3287, 3305, 3316, 3286, 3311, 3301, 3297, 3292, 3305, 3312, 3304, 3311, 3306, 3290, 3294, 3288
        ]
    );
    assert_all_close(p.temperatures(), &[25.1, 24.5, 23.6, 25.1, 25.0, 24.7]);
    assert_close(p.current, -6.76);
    assert_close(p.voltage, 52.8);
    assert_close(p.remaining_ah, 133.9);
    assert_eq!(p.full_ah, Some(170.0));
    assert_eq!(p.soc, Some(78.7));
    assert_eq!(p.design_ah, Some(180.0));
    assert_eq!(p.cycles, Some(70));
    assert_eq!(p.soh, Some(100.0));
    assert!(check_plausible(&p).is_ok());
}

#[test]
fn v9_seplos_read_as_pylon_is_caught_by_the_plausibility_check() {
    let p = decode_analog(&info_of(V9_ANALOG, 0), Protocol::Pylon).unwrap().pack;
    assert_close(p.current, -67.6);
    assert_close(p.voltage, 5.28);
    assert_eq!(
        check_plausible(&p),
        Err(mapping::CycleError::Implausible {
            pack_v: 5.28,
            cells_v: 52.805
        })
    );
}

#[test]
fn v9_seplos_manufacturer_info() {
    let text = "~20004600C040313130312D5350313520020743414E50726F746F636F6C3A536F666172202020F046\r";
    let m = decode_manufacturer_info(&info_of(text, 0)).unwrap();
    assert_eq!(&m.name, b"1101-SP15 ");
    assert_eq!(m.version, [0x02, 0x07]);
    assert_eq!(&m.manufacturer, b"CANProtocol:Sofar   ");
    assert_eq!(
        (m.name(), m.manufacturer()),
        ("1101-SP15".to_string(), "CANProtocol:Sofar".to_string())
    );
}

#[test]
fn v10_pace_analog() {
    let text = "~25024600F07A0002100D370CE50D080CED0D060CE70D1D0CEB0CF80CFA0CFB0D070CE10CF10CC20D06060BAA0BAC0BA60BA70BA90BB20000CF9406D603138800001388E261\r";
    let got = one(text);
    assert_eq!(got.ver, 0x25);
    let a = decode_analog(&info_of(text, 2), Protocol::Pace).unwrap();
    assert_eq!((a.info_flag, a.command), (0x00, 2));
    let p = a.pack;
    assert_eq!(
        p.cells_mv(),
        [
            3383, 3301, 3336, 3309, 3334, 3303, 3357, 3307, 3320, 3322, 3323, 3335, 3297, 3313, 3266, 3334
        ]
    );
    // Offset 2730, not 2731.
    assert_all_close(p.temperatures(), &[25.6, 25.8, 25.2, 25.3, 25.5, 26.4]);
    assert_close(p.current, 0.0);
    assert_close(p.voltage, 53.14);
    assert_close(p.remaining_ah, 17.5);
    assert_eq!(p.full_ah, Some(50.0));
    assert_eq!(p.cycles, Some(0));
    assert_eq!(p.design_ah, Some(50.0));
    assert!(check_plausible(&p).is_ok());
}

#[test]
fn v11_protocol_version_answer() {
    let got = one("~200246000000FDB2\r");
    assert_eq!((got.ver, got.adr, got.cid1, got.cid2), (0x20, 2, 0x46, 0));
    assert!(got.info.is_empty());
    assert!(info_of("~200246000000FDB2\r", 2).is_empty());
}

#[test]
fn serial_number_and_software_version() {
    // Made by hand: command 2, then "US5000C123456789" / 5 version bytes.
    let serial = "0255533530303043313233343536373839";
    let text = framed(&format!("20024600{:04X}{serial}", length_field(serial.len() as u16)));
    let s = decode_serial_number(&info_of(&text, 2)).unwrap();
    assert_eq!((s.command, s.text()), (2, "US5000C123456789".to_string()));
    let version = "020102020309";
    let text = framed(&format!("20024600{:04X}{version}", length_field(version.len() as u16)));
    let v = decode_software_version(&info_of(&text, 2)).unwrap();
    assert_eq!((v.command, v.manufacturer, v.main_line), (2, [1, 2], [2, 3, 9]));
}

// ---- The reference's negative list (end of §5), and the other rejections.

#[test]
fn one_flipped_digit_is_a_checksum_error() {
    // V3 with the CVL's 6E turned into 7E.
    assert_eq!(
        rejection(b"~20024600B014027EF05AA0022BFDD5C0F915\r"),
        Rejection::Checksum
    );
}

#[test]
fn a_changed_lchksum_is_a_length_checksum_error() {
    // V3's LENGTH B014 with its top nibble changed, CHKSUM made right.
    let text = framed("20024600C014026EF05AA0022BFDD5C0");
    assert_eq!(rejection(text.as_bytes()), Rejection::LengthChecksum);
}

#[test]
fn lenid_larger_than_the_info_is_truncation() {
    // LENID 2 (E002), no INFO.
    let text = framed("20024600E002");
    assert_eq!(rejection(text.as_bytes()), Rejection::LengthMismatch);
    // LENID 20 (B014, as in V3) on 18 characters.
    let text = framed("20024600B014026EF05AA0022BFDD5");
    assert_eq!(rejection(text.as_bytes()), Rejection::LengthMismatch);
}

#[test]
fn rtn_04_is_refused() {
    let got = one("~200246040000FDAE\r");
    assert_eq!(got.cid2, 0x04);
    let frame = Frame {
        ver: got.ver,
        adr: got.adr,
        cid1: got.cid1,
        cid2: got.cid2,
        info: &got.info,
        raw: &[],
    };
    assert_eq!(check_reply(&frame, 2), Err(ReplyError::Refused(0x04)));
    assert_eq!(Rtn::from_code(0x04), Some(Rtn::InvalidCid2));
}

fn reply_error(text: &str, asked: u8) -> ReplyError {
    let got = one(text);
    let frame = Frame {
        ver: got.ver,
        adr: got.adr,
        cid1: got.cid1,
        cid2: got.cid2,
        info: &got.info,
        raw: &[],
    };
    check_reply(&frame, asked).unwrap_err()
}

#[test]
fn an_echo_of_our_request_is_no_answer() {
    assert_eq!(reply_error("~20024642E00202FD33\r", 2), ReplyError::Echo(0x42));
    assert_eq!(reply_error("~20024692E00202FD2E\r", 2), ReplyError::Echo(0x92));
}

#[test]
fn an_answer_from_another_address_is_no_answer() {
    assert_eq!(reply_error(V3, 3), ReplyError::WrongAddress { asked: 3, got: 2 });
}

#[test]
fn another_cid1_is_no_answer() {
    let text = framed("20024700B014026EF05AA0022BFDD5C0");
    assert_eq!(reply_error(&text, 2), ReplyError::WrongDevice(0x47));
}

#[test]
fn garbage_before_the_frame_is_dropped_and_counted() {
    let mut rx = Receiver::new();
    let mut bytes = b"\x00\xFFnoise 12\r\n".to_vec();
    bytes.extend_from_slice(V3.as_bytes());
    let got = feed(&mut rx, &bytes);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Err(Rejection::Garbage));
    assert_eq!(got[1].as_ref().map(|g| g.info.len()), Ok(10));
    assert_eq!(rx.rejected().get(Rejection::Garbage), 1);
    assert_eq!(rx.rejected().total(), 1);
}

#[test]
fn two_frames_in_one_read() {
    let mut rx = Receiver::new();
    let bytes = format!("{V3}~200246000000FDB2\r");
    let got = feed(&mut rx, bytes.as_bytes());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].as_ref().map(|g| g.info.len()), Ok(10));
    assert_eq!(got[1].as_ref().map(|g| g.info.len()), Ok(0));
    assert_eq!(rx.rejected().total(), 0);
}

#[test]
fn a_frame_split_over_many_reads() {
    let mut rx = Receiver::new();
    let mut got = Vec::new();
    for piece in V7_ANALOG.as_bytes().chunks(7) {
        assert!(got.is_empty());
        got.extend(feed(&mut rx, piece));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].as_ref().map(|g| g.info.len()), Ok(61));
}

#[test]
fn lower_case_hex_is_accepted() {
    // V3 in lower case; its checksum is over the characters sent.
    let body = "20024600b014026ef05aa0022bfdd5c0";
    let text = format!("~{body}{:04x}\r", sum_check(body));
    assert_eq!(one(&text), one(V3));
}

#[test]
fn a_new_start_in_a_frame_makes_the_first_partial() {
    let mut rx = Receiver::new();
    let got = feed(&mut rx, format!("~20024600B0{V3}").as_bytes());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Err(Rejection::Partial));
    assert!(got[1].is_ok());
    assert_eq!(rx.rejected().get(Rejection::Partial), 1);
}

#[test]
fn abandoning_an_unfinished_frame_counts_it_partial() {
    let mut rx = Receiver::new();
    assert!(feed(&mut rx, &V3.as_bytes()[..20]).is_empty());
    assert!(rx.in_frame());
    assert_eq!(rx.abandon(), Some(Rejection::Partial));
    assert!(!rx.in_frame());
    assert_eq!(rx.abandon(), None);
    // The rest of that frame is garbage; the next frame is whole.
    let got = feed(&mut rx, format!("{}{V3}", &V3[20..]).as_bytes());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Err(Rejection::Garbage));
    assert!(got[1].is_ok());
}

#[test]
fn an_oversized_frame_is_dropped_up_to_its_end() {
    let mut rx = Receiver::new();
    let mut bytes = vec![b'~'];
    bytes.extend(std::iter::repeat_n(b'0', MAX_BODY_CHARS + 100));
    bytes.push(b'\r');
    bytes.extend_from_slice(V3.as_bytes());
    let got = feed(&mut rx, &bytes);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Err(Rejection::Oversized));
    assert!(got[1].is_ok());
    assert_eq!(rx.rejected().get(Rejection::Oversized), 1);
}

#[test]
fn the_longest_frame_passes() {
    let info = vec![0x5A; 2047];
    let mut out = vec![0u8; frame_len(info.len())];
    let n = encode_response(&mut out, 0x20, 2, Rtn::Normal, &info).unwrap();
    assert_eq!(n, 1 + MAX_BODY_CHARS - 1 + 1);
    assert_eq!(one(std::str::from_utf8(&out).unwrap()).info, info);
    assert!(encode_response(&mut out, 0x20, 2, Rtn::Normal, &[0; 2048]).is_err());
}

#[test]
fn not_hex_odd_and_short_frames() {
    assert_eq!(rejection(b"~20024600G000FDB2\r"), Rejection::NotHex);
    assert_eq!(rejection(b"~200246000000FDB\r"), Rejection::Malformed);
    assert_eq!(rejection(b"~2002460000FD\r"), Rejection::Malformed);
    assert_eq!(rejection(b"~\r"), Rejection::Malformed);
}

#[test]
fn too_short_answers_are_errors_not_panics() {
    let info = info_of(V7_ANALOG, 2);
    for cut in 0..info.len() - 10 {
        // Up to the end of the capacities' first items, each cut fails.
        assert!(decode_analog(&info[..cut], Protocol::Pylon).is_err(), "cut at {cut}");
    }
    assert!(matches!(
        decode_charge_management(&info_of(V3, 2)[..9]),
        Err(ReplyError::TooShort { need: 10, have: 9, .. })
    ));
    let alarms = info_of(V7_ALARMS, 2);
    assert!(decode_alarms(&alarms[..alarms.len() - 2], Protocol::Pylon).is_err());
    assert!(decode_system_parameters(&[0x11; 24], Protocol::Pylon).is_err());
}

#[test]
fn cell_and_temperature_counts_are_bounded() {
    assert_eq!(
        decode_analog(&[0, 2, 0], Protocol::Pylon),
        Err(ReplyError::CellCount(0))
    );
    assert_eq!(
        decode_analog(&[0, 2, 33], Protocol::Pylon),
        Err(ReplyError::CellCount(33))
    );
    assert_eq!(
        decode_analog(&[0, 2, 1, 0x0D, 0x00, 17], Protocol::Pylon),
        Err(ReplyError::TemperatureCount(17))
    );
}

// ---- Plausibility and alarm mapping.

/// V7's analog answer with the pack voltage replaced (mV).
fn v7_with_voltage(mv: u16) -> PackAnalog {
    let mut info = info_of(V7_ANALOG, 2);
    // flag, command, M, 15 cells, N, 5 temperatures, current: voltage at 46.
    info[46..48].copy_from_slice(&mv.to_be_bytes());
    decode_analog(&info, Protocol::Pylon).unwrap().pack
}

#[test]
fn plausibility_tolerance_is_five_percent_of_the_cells_sum() {
    assert_close(PLAUSIBILITY_TOLERANCE, 0.05);
    // Cells sum to 50.247 V; 5 % is 2.51235 V.
    assert!(check_plausible(&v7_with_voltage(52_759)).is_ok());
    assert!(check_plausible(&v7_with_voltage(47_735)).is_ok());
    assert!(check_plausible(&v7_with_voltage(52_760)).is_err());
    assert!(check_plausible(&v7_with_voltage(47_734)).is_err());
    let mut cycle = v7_cycle();
    cycle.analog = v7_with_voltage(5_025);
    assert!(matches!(cycle.telegram(), Err(mapping::CycleError::Implausible { .. })));
}

#[test]
fn out_of_range_and_missing_capacity_refuse_the_cycle() {
    let mut cycle = v7_cycle();
    cycle.analog.full_ah = Some(90.0);
    assert!(matches!(
        cycle.telegram(),
        Err(mapping::CycleError::OutOfRange { field: "soc", .. })
    ));
    cycle.analog.full_ah = None;
    assert_eq!(cycle.telegram(), Err(mapping::CycleError::NoCapacity));
}

#[test]
fn request_bits_follow_the_status_byte() {
    assert_eq!(
        requests_of(0x38),
        Requests {
            charge_enable: false,
            discharge_enable: false,
            force_charge_request: true,
            force_charge_request_2: true,
            balancing_charge_request: true,
        }
    );
    assert!(requests_of(0x80).charge_enable && !requests_of(0x80).discharge_enable);
}

#[test]
fn every_flag_key_the_mapping_uses_exists() {
    use key::*;
    for k in [
        OVER_VOLTAGE,
        UNDER_VOLTAGE,
        OVER_TEMPERATURE,
        DISCHARGE_OVER_CURRENT,
        CHARGE_OVER_CURRENT,
        SYSTEM_ERROR,
        HIGH_VOLTAGE,
        LOW_VOLTAGE,
        HIGH_TEMPERATURE,
        LOW_TEMPERATURE,
        DISCHARGE_HIGH_CURRENT,
        CHARGE_HIGH_CURRENT,
    ] {
        assert!(FLAG_BITS.iter().any(|b| b.key == k), "{k}");
    }
}

/// A Pylon 0x44 INFO: 4 cells, 2 temperatures, then the given bytes.
/// A 0x44 answer for V7's pack (15 cells, 5 temperatures, as its 0x42):
/// the first cells' and temperatures' states given, the others normal.
fn alarms_info(cells: [u8; 4], temps: [u8; 2], tail: [u8; 8]) -> Vec<u8> {
    let mut info = vec![0x00, 0x02, 15];
    info.extend(cells);
    info.extend([0; 11]);
    info.push(5);
    info.extend(temps);
    info.extend([0; 3]);
    info.extend(tail);
    info
}

fn flags_of(info: &[u8], protocol: Protocol) -> Flags {
    let mut cycle = v7_cycle();
    cycle.alarms = Some(decode_alarms(info, protocol).unwrap());
    cycle.telegram().unwrap().flags
}

#[test]
fn alarm_states_and_status_bits_map_to_0x359() {
    // 0x359 (pylontech-can.md): byte 0 protection 1 (0x02 over-voltage,
    // 0x04 under-voltage, 0x08 over-temperature, 0x80 discharge
    // over-current), byte 1 protection 2 (0x01 charge over-current, 0x08
    // system error), bytes 2-3 the alarms in the same places.
    // Cell 3 above its limit, temperature 1 below, charge current above,
    // Status 1 = 0x41 (charge over-temperature, module over-voltage),
    // Status 4 = 0x04 (cell 3 faulty).
    let info = alarms_info([0, 0, 2, 0], [1, 0], [2, 0, 0, 0x41, 0x0E, 0x80, 0x04, 0x00]);
    assert_eq!(
        flags_of(&info, Protocol::Pylon),
        Flags {
            error_flags_1: 0x08 | 0x02,
            error_flags_2: 0x08,
            warning_flags_1: 0x02 | 0x10,
            warning_flags_2: 0x01,
            n_modules: 1,
        }
    );
    // Temperature 2 above, module voltage below, discharge current above;
    // Status 1 = 0x96 (module under-voltage, discharge over-current, charge
    // over-current, cell under-voltage).
    let info = alarms_info([0, 0, 0, 0], [0, 2], [0, 1, 2, 0x96, 0, 0, 0, 0]);
    assert_eq!(
        flags_of(&info, Protocol::Pylon),
        Flags {
            error_flags_1: 0x04 | 0x80,
            error_flags_2: 0x01,
            warning_flags_1: 0x04 | 0x80 | 0x08,
            warning_flags_2: 0x00,
            n_modules: 1,
        }
    );
    // 0xF0 ("other error") names no condition: no bit.
    let info = alarms_info([0xF0, 0, 0, 0], [0, 0], [0xF0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(flags_of(&info, Protocol::Pylon).warning_flags_1, 0);
}

#[test]
fn seplos_and_pace_alarms_use_the_cell_and_temperature_states_only() {
    // The brand tails (a Seplos P = 20 block) are not decoded.
    let info = alarms_info([1, 0, 0, 0], [0, 2], [0xFF; 8]);
    for protocol in [Protocol::Seplos, Protocol::Pace] {
        let a = decode_alarms(&info, protocol).unwrap();
        assert_eq!(a.pylon, None);
        assert_eq!(
            flags_of(&info, protocol),
            Flags {
                warning_flags_1: 0x04 | 0x08,
                n_modules: 1,
                ..Flags::default()
            }
        );
    }
}

#[test]
fn soh_from_the_pack_or_its_capacities() {
    let seplos = decode_analog(&info_of(V9_ANALOG, 0), Protocol::Seplos).unwrap().pack;
    let mut cycle = v7_cycle();
    cycle.analog = seplos;
    cycle.alarms = None;
    let t = cycle.telegram().unwrap();
    assert_close(t.soc.soh, 100.0);
    // 133.9 of 170 Ah.
    assert!((t.soc.soc - 100.0 * 133.9 / 170.0).abs() < 1e-9);
    // Full 153 of design 180 Ah, no SOH sent: 85 %.
    cycle.analog.soh = None;
    cycle.analog.full_ah = Some(153.0);
    assert!((cycle.telegram().unwrap().soc.soh - 85.0).abs() < 1e-9);
}

#[test]
fn protocol_names() {
    for p in Protocol::ALL {
        assert_eq!(Protocol::from_name(p.name()), Some(p));
    }
    assert_eq!(Protocol::from_name("jk"), None);
    assert_eq!(
        (
            Protocol::Pylon.version(),
            Protocol::Seplos.version(),
            Protocol::Pace.version()
        ),
        (0x20, 0x20, 0x25)
    );
}

// ---- Properties.

fn rtn() -> impl Strategy<Value = Rtn> {
    prop::sample::select(Rtn::ALL.to_vec())
}

/// Bytes that often look like frames: frame characters, hex, and noise.
fn wire_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'~'),
        Just(b'\r'),
        prop::sample::select(b"0123456789ABCDEFabcdef".to_vec()),
        any::<u8>(),
    ]
}

/// The independent check of a frame's characters: CHKSUM, LCHKSUM, LENID.
fn frame_is_sound(raw: &[u8]) -> bool {
    let text = std::str::from_utf8(raw).unwrap();
    let n = text.len();
    let word = |at: usize| u16::from_str_radix(&text[at..at + 4], 16).unwrap();
    let length = word(8);
    let lenid = length & 0xFFF;
    let nibble_sum = (lenid & 0xF) + ((lenid >> 4) & 0xF) + (lenid >> 8);
    sum_check(&text[..n - 4]) == word(n - 4)
        && (length >> 12) == (16 - nibble_sum % 16) % 16
        && usize::from(lenid) == n - 16
}

proptest! {
    #[test]
    fn a_written_frame_is_received_whole(
        ver in any::<u8>(),
        adr in any::<u8>(),
        rtn in rtn(),
        info in prop::collection::vec(any::<u8>(), 0..300),
        noise in prop::collection::vec(any::<u8>().prop_filter("not ~", |&b| b != b'~'), 0..20),
        piece in 1usize..50,
    ) {
        let mut out = vec![0u8; frame_len(info.len())];
        let n = encode_response(&mut out, ver, adr, rtn, &info).unwrap();
        prop_assert_eq!(n, out.len());
        let mut bytes = noise.clone();
        bytes.extend_from_slice(&out);
        let mut rx = Receiver::new();
        let mut got = Vec::new();
        for chunk in bytes.chunks(piece) {
            got.extend(feed(&mut rx, chunk));
        }
        let want = Got { ver, adr, cid1: CID1_BATTERY, cid2: rtn.code(), info };
        let frames: Vec<_> = got.iter().filter(|r| r.is_ok()).cloned().collect();
        prop_assert_eq!(frames, vec![Ok(want)]);
        let garbage = u64::from(!noise.is_empty());
        prop_assert_eq!(rx.rejected().get(Rejection::Garbage), garbage);
        prop_assert_eq!(rx.rejected().total(), garbage);
    }

    #[test]
    fn a_request_is_received_as_sent(ver in any::<u8>(), adr in any::<u8>(), c in 0usize..8, info in any::<Option<u8>>()) {
        let request = Request::new(ver, adr, Command::ALL[c]).with_info(info);
        let got = one(std::str::from_utf8(request.encode().as_bytes()).unwrap());
        prop_assert_eq!(got, Got { ver, adr, cid1: 0x46, cid2: Command::ALL[c].code(), info: info.into_iter().collect() });
    }

    #[test]
    fn arbitrary_bytes_never_yield_an_unsound_frame(bytes in prop::collection::vec(wire_byte(), 0..600)) {
        let mut rx = Receiver::new();
        let mut rejections = 0u64;
        for &b in &bytes {
            match rx.push(b) {
                Some(Ok(frame)) => {
                    prop_assert!(frame_is_sound(frame.raw), "{:?}", String::from_utf8_lossy(frame.raw));
                    // The decoders take any INFO without panicking.
                    for p in Protocol::ALL {
                        let _ = decode_analog(frame.info, p);
                        let _ = decode_alarms(frame.info, p);
                        let _ = decode_system_parameters(frame.info, p);
                    }
                    let _ = decode_analog_group(frame.info).map(|g| g.packs().count());
                    let _ = decode_charge_management(frame.info);
                    let _ = decode_manufacturer_info(frame.info);
                    let _ = decode_serial_number(frame.info);
                    let _ = decode_software_version(frame.info);
                }
                Some(Err(_)) => rejections += 1,
                None => {}
            }
        }
        prop_assert_eq!(rx.rejected().total(), rejections);
    }

    #[test]
    fn arbitrary_info_never_panics_the_mapping(info in prop::collection::vec(any::<u8>(), 0..120), status in any::<u8>()) {
        for p in Protocol::ALL {
            if let Ok(a) = decode_analog(&info, p) {
                let mut cycle = v7_cycle();
                cycle.analog = a.pack;
                cycle.management.status = status;
                if let Ok(t) = cycle.telegram() {
                    prop_assert!(t.soc.soc >= 0.0 && t.soc.soc <= 100.0);
                    prop_assert!(t.limits.i_lim_charge >= 0.0 && t.limits.i_lim_discharge >= 0.0);
                }
            }
        }
    }
}

#[test]
fn only_a_0x92_answer_of_the_address_asked_is_taken_for_one() {
    // Both captures' 0x92 answers (V3, V7): command value 2 = the ADR, 10 bytes.
    assert_close(decode_charge_management_of(&info_of(V3, 2), 2).unwrap().cvl, 28.4);
    assert_close(
        decode_charge_management_of(&info_of(V7_MANAGEMENT, 2), 2).unwrap().cvl,
        53.25,
    );
    // V7's 0x42 answer read as 0x92: command 0x00 (its INFOFLAG), 61 bytes
    // (LENGTH F07A: LENID 0x07A = 122 characters).
    let analog = info_of(V7_ANALOG, 2);
    assert_eq!(analog.len(), 61);
    assert_eq!(
        decode_charge_management_of(&analog, 2),
        Err(ReplyError::NotManagement {
            asked: 2,
            command: 0x00,
            len: 61
        })
    );
    // V7's 0x44 answer (33 bytes), and a 0x92 answer of another address.
    assert!(decode_charge_management_of(&info_of(V7_ALARMS, 2), 2).is_err());
    assert!(decode_charge_management_of(&info_of(V3, 2), 3).is_err());
    // At ADR 0 an INFOFLAG 0x00 looks like the address: the length tells
    // (V9, Seplos's 0x42 at ADR 0).
    assert!(decode_charge_management_of(&info_of(V9_ANALOG, 0), 0).is_err());
}

#[test]
fn a_0x44_answer_of_other_counts_than_the_0x42_refuses_the_cycle() {
    // V7's cycle with its own 0x44 (15 cells, 5 temperatures, as its 0x42): a telegram.
    assert!(v7_cycle().telegram().is_ok());
    // V2's 0x42 (UP2500: 8 cells, 5 temperatures) with V7's 0x44 (15 and 5):
    // not the same pack's answers (a late answer in 0x44's wait).
    let v2 = "~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73FFFA680EFFFF04FFFF00000174E401B198E906\r";
    let cycle = Cycle {
        analog: decode_analog(&info_of(v2, 2), Protocol::Pylon).unwrap().pack,
        ..v7_cycle()
    };
    assert_eq!(
        cycle.telegram(),
        Err(CycleError::Mismatched {
            alarm_cells: 15,
            alarm_temperatures: 5,
            cells: 8,
            temperatures: 5
        })
    );
    // Without a 0x44 in the cycle, nothing to compare: V2's telegram.
    assert!(Cycle { alarms: None, ..cycle }.telegram().is_ok());
}
