//! `scan` on serial ports (spec 18): lists the ports under
//! /dev/serial/by-id (stable names, by adapter serial number) and finds
//! RS485 packs on them by asking 0x4F (protocol version, the cheapest
//! request, reference §3.1) at the usual addresses and speeds.

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
}

impl FoundPack {
    /// The protocol to start from: PACE by its VER; Pylon otherwise (a
    /// Seplos pack answers 0x20 too: the plausibility check of the first
    /// cycle tells, docs/rs485.md).
    pub fn protocol(&self) -> Protocol {
        if self.version == Protocol::Pace.version() {
            Protocol::Pace
        } else {
            Protocol::Pylon
        }
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
            let request = Request::new(Protocol::Pylon.version(), address, Command::ProtocolVersion);
            link.discard_input().map_err(|e| e.to_string())?;
            link.write_all(request.encode().as_bytes()).map_err(|e| e.to_string())?;
            if let Some(version) = answer(link.as_mut(), address)? {
                found.push(FoundPack {
                    port: port.to_string(),
                    baud,
                    address,
                    version,
                });
            }
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

/// The VER of a good answer from `address` within [`PROBE_TIMEOUT`].
fn answer(link: &mut dyn crate::serial::SerialPort, address: u8) -> Result<Option<u8>, String> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut receiver = Receiver::new();
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let n = link.read_until(&mut buf, deadline).map_err(|e| e.to_string())?;
        for &byte in &buf[..n] {
            if let Some(Ok(frame)) = receiver.push(byte)
                && check_reply(&frame, address).is_ok()
            {
                return Ok(Some(frame.ver));
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
                        "{port}: RS485 pack at address {} ({} baud, VER 0x{:02X}, protocol {})\n",
                        p.address,
                        p.baud,
                        p.version,
                        p.protocol().name()
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
             # From the answer's VER; a Seplos pack answers as \"pylon\" does: set \"seplos\".\n\
             PROTOCOL = {:?}\nDESCRIPTION = {:?}\n\
             # The pack's capacity in Ah (weights SOC and the averages): edit this.\n\
             CAPACITY-AH = 100.0\n",
            p.port,
            p.address,
            p.baud,
            p.protocol().name(),
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

    #[test]
    fn no_port_and_no_pack_say_so() {
        assert!(serial_ports(Path::new("/nonexistent/by-id")).is_empty());
        let pairs = Pairs::new();
        assert!(probe(&pairs, "/dev/ttyNONE").is_err());
        let text = report(&[("/dev/ttyX".into(), Ok(Vec::new()))]);
        assert_eq!(text, "/dev/ttyX: no RS485 pack answered 0x4F\n");
    }
}
