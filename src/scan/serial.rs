//! `scan` on serial ports (spec 18): lists the ports under
//! /dev/serial/by-id (stable names, by adapter serial number) and finds
//! RS485 packs on them by asking 0x4F (protocol version, the cheapest
//! request, reference §3.1) at the usual addresses and speeds, then tells
//! the brand's protocol ([`identify`]): PACE by its VER, Seplos from
//! Pylontech by their 0x42 answers' units.

use crate::rs485::mapping::check_plausible;
use crate::rs485::responses::decode_analog;
use crate::rs485::{Command, Protocol, Receiver, Request, check_reply};
use crate::serial::{LineSettings, SerialOpener};
use std::path::Path;
use std::time::{Duration, Instant};

/// Speeds tried, the reference's order (§7): Pylontech's default first.
pub const BAUDS: [u32; 3] = [115_200, 9600, 19_200];

/// Addresses tried: 2 (a Pylontech master pack, the spec's default), then
/// 0 and 1 (a Seplos or PACE pack alone, a PACE master), then the next
/// packs of a stack.
pub const ADDRESSES: [u8; 8] = [2, 0, 1, 3, 4, 5, 6, 7];

/// How long one probe waits for its answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// A pack that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPack {
    pub port: String,
    pub baud: u32,
    pub address: u8,
    /// The VER it answered with: 0x25 is PACE's (reference §4).
    pub version: u8,
    pub protocol: Protocol,
    pub told: Told,
}

/// How a pack's protocol was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// By the VER of its answers (PACE's 0x25).
    Version,
    /// By its 0x42 answer: only this brand's units make the pack voltage
    /// agree with the sum of its cells.
    Cells,
    /// Not told (no usable 0x42 answer, or both readings agree): Pylon is
    /// assumed.
    Unknown,
}

impl Told {
    fn why(self) -> &'static str {
        match self {
            Told::Version => "by its VER",
            Told::Cells => "by its 0x42: pack voltage = sum of the cells in these units",
            Told::Unknown => "not told by its answers: assumed, check it",
        }
    }
}

/// The protocol of a pack that answered 0x4F with VER `version` and 0x42
/// with INFO `analog` (None without a good answer). PACE answers with VER
/// 0x25; Seplos and Pylontech both with 0x20, and their 0x42 answers differ
/// in units (reference §4: Seplos sends the voltage in 10 mV, the current
/// in 0.01 A, P = 10): read with the wrong brand's units, the pack voltage
/// is a tenth (or ten times) the sum of its cells, or the layout does not
/// even decode. The reference's own suggestion: "the same check can
/// auto-select the profile on first contact".
pub fn identify(version: u8, analog: Option<&[u8]>) -> (Protocol, Told) {
    if version == Protocol::Pace.version() {
        return (Protocol::Pace, Told::Version);
    }
    let plausible = |protocol: Protocol| {
        analog
            .and_then(|info| decode_analog(info, protocol).ok())
            .is_some_and(|a| check_plausible(&a.pack).is_ok())
    };
    match (plausible(Protocol::Pylon), plausible(Protocol::Seplos)) {
        (true, false) => (Protocol::Pylon, Told::Cells),
        (false, true) => (Protocol::Seplos, Told::Cells),
        _ => (Protocol::Pylon, Told::Unknown),
    }
}

/// The ports under `by_id` (normally /dev/serial/by-id), sorted.
pub fn serial_ports(by_id: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(by_id) else {
        return Vec::new();
    };
    let mut ports: Vec<String> = entries
        .flatten()
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect();
    ports.sort();
    ports
}

/// The packs answering on `port`: at the first speed where any answers,
/// every address of [`ADDRESSES`] that does.
pub fn probe(opener: &dyn SerialOpener, port: &str) -> Result<Vec<FoundPack>, String> {
    let mut last_error = None;
    for baud in BAUDS {
        let line = LineSettings {
            baud,
            rs485_mode: false,
        };
        let mut link = match opener.open(port, line) {
            Ok(link) => link,
            Err(e) => {
                last_error = Some(e.to_string());
                continue;
            }
        };
        let mut found = Vec::new();
        for address in ADDRESSES {
            let Some((version, _)) = ask(
                link.as_mut(),
                Protocol::Pylon.version(),
                address,
                Command::ProtocolVersion,
            )?
            else {
                continue;
            };
            // PACE is told by its VER alone; a 0x42 tells the others apart.
            let analog = if version == Protocol::Pace.version() {
                None
            } else {
                ask(link.as_mut(), version, address, Command::AnalogValues)?
            };
            let (protocol, told) = identify(version, analog.as_ref().map(|(_, info)| info.as_slice()));
            found.push(FoundPack {
                port: port.to_string(),
                baud,
                address,
                version,
                protocol,
                told,
            });
        }
        if !found.is_empty() {
            return Ok(found);
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(Vec::new()),
    }
}

/// Sends `command` to `address` and waits [`PROBE_TIMEOUT`] for a good
/// answer: its VER and INFO.
fn ask(
    link: &mut dyn crate::serial::SerialPort,
    version: u8,
    address: u8,
    command: Command,
) -> Result<Option<(u8, Vec<u8>)>, String> {
    let request = Request::new(version, address, command);
    link.discard_input().map_err(|e| e.to_string())?;
    link.write_all(request.encode().as_bytes()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut receiver = Receiver::new();
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let n = link.read_until(&mut buf, deadline).map_err(|e| e.to_string())?;
        for &byte in &buf[..n] {
            if let Some(Ok(frame)) = receiver.push(byte)
                && let Ok(info) = check_reply(&frame, address)
            {
                return Ok(Some((frame.ver, info.to_vec())));
            }
        }
    }
    Ok(None)
}

/// The report's lines for the serial ports.
pub fn report(ports: &[(String, Result<Vec<FoundPack>, String>)]) -> String {
    let mut out = String::new();
    for (port, found) in ports {
        let line = match found {
            Err(e) => format!("{port}: cannot probe ({e})\n"),
            Ok(packs) if packs.is_empty() => format!("{port}: no RS485 pack answered 0x4F\n"),
            Ok(packs) => packs
                .iter()
                .map(|p| {
                    format!(
                        "{port}: RS485 pack at address {} ({} baud, VER 0x{:02X}, protocol {}, {})\n",
                        p.address,
                        p.baud,
                        p.version,
                        p.protocol.name(),
                        p.told.why()
                    )
                })
                .collect(),
        };
        out.push_str(&line);
    }
    out
}

/// One `[[bmses-in]]` per pack found.
pub fn config_text(packs: &[FoundPack]) -> String {
    let mut out = String::new();
    for p in packs {
        out.push_str(&format!(
            "\n[[bmses-in]]\nSERIAL-PORT = {:?}\nADDRESS = {}\nBAUD = {}\n\
             # Protocol {}.\n\
             PROTOCOL = {:?}\nDESCRIPTION = {:?}\n\
             # The pack's capacity in Ah (weights SOC and the averages): edit this.\n\
             CAPACITY-AH = 100.0\n",
            p.port,
            p.address,
            p.baud,
            p.told.why(),
            p.protocol.name(),
            format!("RS485 pack {} on {}", p.address, p.port)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::pair::Pairs;
    use crate::serial::sim_pack::{SimPack, serve};

    #[test]
    fn a_pack_on_a_port_is_found_at_its_address_and_proposed() {
        let pairs = Pairs::new();
        let mut end = pairs.plug("/dev/ttyPROBE");
        let (stop_tx, stop) = crate::shutdown::channel();
        let packs = [SimPack::new(Protocol::Pace, 3)];
        let found = std::thread::scope(|s| {
            s.spawn(|| serve(&mut end, &packs, &|| stop.requested()));
            let found = probe(&pairs, "/dev/ttyPROBE").unwrap();
            stop_tx.stop();
            found
        });
        assert_eq!(
            found,
            [FoundPack {
                port: "/dev/ttyPROBE".into(),
                baud: 115_200,
                address: 3,
                version: 0x25,
                protocol: Protocol::Pace,
                told: Told::Version,
            }]
        );
        let text = format!(
            "GATEWAY-ACTIVATED = false\n[[bmses-out]]\nCAN-IF = \"can9\"\n{}",
            config_text(&found)
        );
        let c = crate::config::parse(&text).expect("the proposed section is valid");
        let s = c.inputs[0].serial.as_ref().unwrap();
        assert_eq!((s.address, s.baud, s.protocol), (3, 115_200, Protocol::Pace));
    }

    /// The INFO of one of the reference's answers (its checksums checked).
    fn info(frame: &str) -> Vec<u8> {
        let mut receiver = Receiver::new();
        for b in frame.bytes() {
            if let Some(got) = receiver.push(b) {
                return got.unwrap().info.to_vec();
            }
        }
        panic!("no frame in {frame:?}")
    }

    /// The reference's 0x42 answers (§5): V7 (US5000), V2 (UP2500, 24 V),
    /// V9 (Seplos V2), and V10 (PACE).
    const V7: &str = "~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r";
    const V2: &str = "~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73FFFA680EFFFF04FFFF00000174E401B198E906\r";
    const V9: &str = "~2000460010960001100CD70CE90CF40CD60CEF0CE50CE10CDC0CE90CF00CE80CEF0CEA0CDA0CDE0CD8060BA60BA00B970BA60BA50BA2FD5C14A0344E0A426803134650004603E8149F0000000000000000DC6C\r";

    #[test]
    fn seplos_and_pylon_are_told_apart_by_their_0x42_answers() {
        // V7: 15 cells summing to 50.247 V against a pack voltage of 50.247
        // V in mV (Pylon); read in Seplos's 10 mV it would be 502.47 V.
        assert_eq!(identify(0x20, Some(&info(V7))), (Protocol::Pylon, Told::Cells));
        // V2: 8 cells summing to 26.638 V against 26.638 V.
        assert_eq!(identify(0x20, Some(&info(V2))), (Protocol::Pylon, Told::Cells));
        // V9: 16 cells summing to 52.805 V against 5280 x 10 mV = 52.80 V;
        // read as Pylon's mV it would be 5.28 V (reference §5 V9).
        assert_eq!(identify(0x20, Some(&info(V9))), (Protocol::Seplos, Told::Cells));
        // PACE by its VER 0x25 (V10), whatever else.
        assert_eq!(identify(0x25, None), (Protocol::Pace, Told::Version));
        // No usable 0x42: Pylon, said to be assumed.
        assert_eq!(identify(0x20, None), (Protocol::Pylon, Told::Unknown));
        assert_eq!(identify(0x20, Some(&[0x00, 0x02])), (Protocol::Pylon, Told::Unknown));
    }

    #[test]
    fn no_port_and_no_pack_say_so() {
        assert!(serial_ports(Path::new("/nonexistent/by-id")).is_empty());
        let pairs = Pairs::new();
        assert!(probe(&pairs, "/dev/ttyNONE").is_err());
        let text = report(&[("/dev/ttyX".into(), Ok(Vec::new()))]);
        assert_eq!(text, "/dev/ttyX: no RS485 pack answered 0x4F\n");
    }
}
