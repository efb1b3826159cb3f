//! A simulated RS485 pack: answers the gateway's requests on a serial port
//! with the reference's captured answers (shared/reference/pylontech-rs485.md
//! §5: V7 for `pylon`, V9 for `seplos`, V10 for `pace`), re-addressed to
//! the pack's ADDRESS, and can misbehave on purpose ([`Fault`]). Used by
//! `sim-bms --serial`, the demo and the tests.
//!
//! What the captures lack is made up and said so: a 0x92 and a 0x44 for
//! Seplos and PACE (all normal), and the Pylon pack's 0x51, 0x93 and 0x96.

use super::{SerialError, SerialPort};
use crate::rs485::framing::{Receiver, frame_len};
use crate::rs485::responses::encode_response;
use crate::rs485::{CID1_BATTERY, Command, Protocol, Rtn};
use std::time::{Duration, Instant};

/// How the pack misbehaves (one way at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Never answers (a pack off, a wrong address set by DIP switch).
    NoAnswer,
    /// Answers this late.
    Slow(Duration),
    /// Answers with a wrong CHKSUM.
    BadChecksum,
    /// Sends noise, never a frame.
    Garbage,
    /// Answers from another address (ADDRESS + 1).
    WrongAddress,
}

/// V7's 0x42, 0x92 and 0x44 (US5000, ADR 2).
const PYLON_ANALOG: &str = "~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r";
const PYLON_MANAGEMENT: &str = "~20024600B01402D002AFC800C8FE0CC0F915\r";
const PYLON_ALARMS: &str = "~20024600A04200020F000000000000000000000000000000050000000000000000000E80000000F101\r";
/// V6's US3000C 0x47.
const PYLON_PARAMETERS: &str = "~20024600B032110E420BEA0AF00D030A470384D2F0B3B0A7F80D030A47FC7CF27E\r";
/// V9's Seplos 0x42 and 0x51 (ADR 0).
const SEPLOS_ANALOG: &str = "~2000460010960001100CD70CE90CF40CD60CEF0CE50CE10CDC0CE90CF00CE80CEF0CEA0CDA0CDE0CD8060BA60BA00B970BA60BA50BA2FD5C14A0344E0A426803134650004603E8149F0000000000000000DC6C\r";
const SEPLOS_MANUFACTURER: &str = "~20004600C040313130312D5350313520020743414E50726F746F636F6C3A536F666172202020F046\r";
/// V10's PACE 0x42 (VER 0x25, ADR 2).
const PACE_ANALOG: &str = "~25024600F07A0002100D370CE50D080CED0D060CE70D1D0CEB0CF80CFA0CFB0D070CE10CF10CC20D06060BAA0BAC0BA60BA70BA90BB20000CF9406D603138800001388E261\r";

/// The INFO of a captured answer (its checksums checked on the way).
fn info_of(frame: &str) -> Vec<u8> {
    let mut receiver = Receiver::new();
    let mut info = None;
    for &b in frame.as_bytes() {
        if let Some(Ok(f)) = receiver.push(b) {
            info = Some(f.info.to_vec());
        }
    }
    info.unwrap_or_else(|| panic!("a reference capture is a valid frame: {frame:?}"))
}

/// A made-up 0x92 for packs of 16 cells: CVL 56.0 V, DVL 48.0 V, CCL 50.0 A,
/// DCL -50.0 A, charge and discharge allowed.
fn made_up_management(address: u8) -> Vec<u8> {
    vec![address, 0xDA, 0xC0, 0xBB, 0x80, 0x01, 0xF4, 0xFE, 0x0C, 0xC0]
}

/// A made-up all-normal 0x44 for 16 cells and 6 temperatures, with
/// Seplos's 20 status bytes (PACE's own bytes are as many zeros).
fn made_up_alarms(address: u8) -> Vec<u8> {
    let mut info = vec![0x00, address, 16];
    info.extend([0; 16]);
    info.push(6);
    info.extend([0; 6]);
    info.push(20);
    info.extend([0; 20]);
    info
}

/// A pack on one address.
#[derive(Debug, Clone)]
pub struct SimPack {
    pub protocol: Protocol,
    pub address: u8,
    pub fault: Fault,
}

impl SimPack {
    pub fn new(protocol: Protocol, address: u8) -> SimPack {
        SimPack {
            protocol,
            address,
            fault: Fault::None,
        }
    }

    /// The INFO of its answer to `command`, or the refusal a pack gives
    /// to a command it does not know.
    fn answer_info(&self, command: Command) -> Result<Vec<u8>, Rtn> {
        let adr = self.address;
        let with_adr = |mut info: Vec<u8>, at: usize| {
            info[at] = adr;
            info
        };
        Ok(match (self.protocol, command) {
            (_, Command::ProtocolVersion) => Vec::new(),
            (Protocol::Pylon, Command::AnalogValues) => with_adr(info_of(PYLON_ANALOG), 1),
            (Protocol::Pylon, Command::ChargeManagement) => with_adr(info_of(PYLON_MANAGEMENT), 0),
            (Protocol::Pylon, Command::AlarmInfo) => with_adr(info_of(PYLON_ALARMS), 1),
            (Protocol::Pylon, Command::SystemParameters) => info_of(PYLON_PARAMETERS),
            (Protocol::Pylon, Command::ManufacturerInfo) => {
                let mut info = b"US5000-SIM".to_vec();
                info.extend([0x01, 0x00]);
                info.extend(b"bms-gateway sim-bms ");
                info
            }
            (Protocol::Pylon, Command::SerialNumber) => {
                let mut info = vec![adr];
                info.extend(b"SIM0000000000002");
                info
            }
            (Protocol::Pylon, Command::SoftwareVersion) => vec![adr, 0x01, 0x00, 0x01, 0x00, 0x00],
            (Protocol::Seplos, Command::AnalogValues) => info_of(SEPLOS_ANALOG),
            (Protocol::Seplos, Command::ManufacturerInfo) => info_of(SEPLOS_MANUFACTURER),
            (Protocol::Pace, Command::AnalogValues) => with_adr(info_of(PACE_ANALOG), 1),
            (Protocol::Seplos | Protocol::Pace, Command::ChargeManagement) => made_up_management(adr),
            (Protocol::Seplos | Protocol::Pace, Command::AlarmInfo) => made_up_alarms(adr),
            _ => return Err(Rtn::InvalidCid2),
        })
    }

    /// The bytes it sends for a request of CID2 `cid2`, or `None` to stay
    /// silent.
    pub fn answer(&self, cid2: u8) -> Option<Vec<u8>> {
        if self.fault == Fault::NoAnswer {
            return None;
        }
        if self.fault == Fault::Garbage {
            return Some(b"\x00\x13 NOISE 0123 \xFF\r".to_vec());
        }
        let (rtn, info) = match Command::from_code(cid2) {
            Some(command) => match self.answer_info(command) {
                Ok(info) => (Rtn::Normal, info),
                Err(rtn) => (rtn, Vec::new()),
            },
            None => (Rtn::InvalidCid2, Vec::new()),
        };
        let adr = match self.fault {
            Fault::WrongAddress => self.address.wrapping_add(1),
            _ => self.address,
        };
        let mut out = vec![0u8; frame_len(info.len())];
        let n = encode_response(&mut out, self.protocol.version(), adr, rtn, &info).ok()?;
        out.truncate(n);
        if self.fault == Fault::BadChecksum {
            // The last checksum digit, changed to another hex digit.
            let at = n - 2;
            out[at] = if out[at] == b'0' { b'1' } else { b'0' };
        }
        Some(out)
    }
}

/// Serves `packs` (one port's) on `port` until `until` says stop (it is
/// asked at least every 100 ms) or the port fails.
pub fn serve(port: &mut dyn SerialPort, packs: &[SimPack], until: &dyn Fn() -> bool) -> Result<(), SerialError> {
    let mut receiver = Receiver::new();
    let mut buf = [0u8; 256];
    while !until() {
        let n = port.read_until(&mut buf, Instant::now() + Duration::from_millis(100))?;
        for &byte in &buf[..n] {
            let Some(Ok(frame)) = receiver.push(byte) else { continue };
            if frame.cid1 != CID1_BATTERY {
                continue;
            }
            // Packs stay silent to other addresses (reference §3.12).
            let Some(pack) = packs.iter().find(|p| p.address == frame.adr) else {
                continue;
            };
            let Some(answer) = pack.answer(frame.cid2) else {
                continue;
            };
            if let Fault::Slow(delay) = pack.fault {
                std::thread::sleep(delay);
            }
            port.write_all(&answer)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_carry_the_packs_address_and_version() {
        let pace = SimPack::new(Protocol::Pace, 5);
        let a = String::from_utf8(pace.answer(0x42).unwrap()).unwrap();
        // VER 25, ADR 05, CID1 46, RTN 00.
        assert!(a.starts_with("~25054600"), "{a}");
        let seplos = SimPack::new(Protocol::Seplos, 3);
        // 0x93 is not a Seplos command: RTN 04, no INFO.
        assert!(
            String::from_utf8(seplos.answer(0x93).unwrap())
                .unwrap()
                .starts_with("~200346040000")
        );
    }

    #[test]
    fn faults_change_the_answer() {
        let mut pack = SimPack::new(Protocol::Pylon, 2);
        let good = pack.answer(0x92).unwrap();
        // V7's 0x92 answer, byte for byte.
        assert_eq!(good, PYLON_MANAGEMENT.as_bytes());
        pack.fault = Fault::BadChecksum;
        let bad = pack.answer(0x92).unwrap();
        assert_eq!(bad.len(), good.len());
        assert_ne!(bad[bad.len() - 2], good[good.len() - 2]);
        pack.fault = Fault::WrongAddress;
        assert!(
            String::from_utf8(pack.answer(0x92).unwrap())
                .unwrap()
                .starts_with("~20034600")
        );
        pack.fault = Fault::NoAnswer;
        assert_eq!(pack.answer(0x92), None);
        pack.fault = Fault::Garbage;
        assert!(!pack.answer(0x92).unwrap().contains(&b'~'));
    }
}
