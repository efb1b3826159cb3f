//! Reading a profile's frames back: decoding each profile's layout, and
//! checking a received stream against the profile's rules (frames, order,
//! DLC, pacing, markers, names). `sim-inverter --profile` uses it to play an
//! inverter of that brand and say what it would have objected to.

use super::{Profile, SMA_INVALID_U16, VoltageUnit};
use crate::codec::{self, DecodeError, Measurements, Message, Requests, StateOfCharge};
use crate::frame::{CanId, Frame, FrameKind};
use std::time::Instant;

/// A frame as the profile's reader sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A frame in the Pylontech layout (every profile but Luxpower's).
    Message(Message),
    /// Luxpower 0x355: SOC, SOH and the cell voltage extremes (V).
    LuxSoc {
        soc: StateOfCharge,
        v_cell_max: f64,
        v_cell_min: f64,
    },
    /// Luxpower 0x356: V, I and the cell temperature extremes (degC).
    LuxMeasurements {
        v_avg: f64,
        i_total: f64,
        t_cell_max: f64,
        t_cell_min: f64,
    },
    /// Luxpower 0x359: the flag bytes and the capacity (Ah).
    LuxFlags { flags: codec::Flags, capacity_ah: f64 },
}

/// Decodes a frame as an inverter reading `profile` would.
pub fn decode(profile: Profile, unit: VoltageUnit, f: &Frame) -> Result<Reading, DecodeError> {
    let message = codec::decode(f)?;
    let d = f.data();
    let u16_at = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]);
    let i16_at = |i: usize| i16::from_le_bytes([d[i], d[i + 1]]);
    Ok(match (profile, message) {
        (Profile::Luxpower, Message::StateOfCharge(s)) if d.len() >= 8 => Reading::LuxSoc {
            soc: StateOfCharge { soc_hires: None, ..s },
            v_cell_max: f64::from(u16_at(4)) / 1000.0,
            v_cell_min: f64::from(u16_at(6)) / 1000.0,
        },
        (Profile::Luxpower, Message::Measurements(m)) if d.len() >= 8 => Reading::LuxMeasurements {
            v_avg: m.v_avg,
            i_total: m.i_total,
            t_cell_max: f64::from(i16_at(4)) / 10.0,
            t_cell_min: f64::from(i16_at(6)) / 10.0,
        },
        (Profile::Luxpower, Message::Flags(flags)) if d.len() >= 7 => Reading::LuxFlags {
            flags,
            capacity_ah: f64::from(u16_at(5)),
        },
        (_, Message::Measurements(m)) if unit == VoltageUnit::Decivolt => {
            Reading::Message(Message::Measurements(Measurements {
                v_avg: f64::from(i16_at(0)) / 10.0,
                ..m
            }))
        }
        // Sol-Ark and Luxpower name bit 4 force charge 1 (docs/profiles.md).
        (Profile::SolArk | Profile::Luxpower, Message::Requests(r)) => Reading::Message(Message::Requests(Requests {
            force_charge_request: r.force_charge_request_2,
            force_charge_request_2: r.force_charge_request,
            ..r
        })),
        (_, m) => Reading::Message(m),
    })
}

/// The Pylontech V1.2 set with its DLCs (0x35E: 1 to 8).
const PYLON: [(u16, Option<u8>); 7] = [
    (0x359, Some(7)),
    (0x351, Some(8)),
    (0x355, Some(4)),
    (0x356, Some(6)),
    (0x35C, Some(2)),
    (0x35E, None),
    (0x373, Some(8)),
];

/// The IDs a profile sends, in order, with their DLC (`None`: 1 to 8).
/// Built once per checker; the profiles that extend Pylontech's set say so.
fn layout(profile: Profile) -> Vec<(u16, Option<u8>)> {
    let eight = |ids: &[u16]| ids.iter().map(|&id| (id, Some(8))).collect::<Vec<_>>();
    match profile {
        Profile::Pylon => PYLON.to_vec(),
        Profile::PylonV2 => [&PYLON[..], &[(0x35A, Some(8)), (0x372, Some(8)), (0x379, Some(2))]].concat(),
        Profile::Victron => vec![
            (0x351, Some(8)),
            (0x355, Some(6)),
            (0x356, Some(6)),
            (0x35A, Some(8)),
            (0x35E, None),
            (0x35F, Some(8)),
            (0x372, Some(8)),
            (0x373, Some(8)),
            (0x378, Some(8)),
            (0x379, Some(2)),
        ],
        Profile::Sma => vec![
            (0x351, Some(8)),
            (0x355, Some(6)),
            (0x356, Some(6)),
            (0x35A, Some(8)),
            (0x35E, None),
            (0x35F, Some(8)),
        ],
        // Pylontech's IDs and 0x379, every frame 8 bytes.
        Profile::SolArk => eight(&[0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E, 0x373, 0x379]),
        Profile::Luxpower => {
            let mut l = eight(&[0x351, 0x355, 0x356, 0x359, 0x35C]);
            l.push((0x35E, None));
            l
        }
    }
}

/// Checks a stream of frames received from a virtual BMS against the
/// profile's rules. Frames that do not come from a BMS (0x305 echoes and
/// the like) are not judged.
#[derive(Debug, Clone)]
pub struct Checker {
    profile: Profile,
    layout: Vec<(u16, Option<u8>)>,
    /// Position in `layout` of the last frame seen.
    last_index: Option<usize>,
    /// When each ID of `layout` was last seen.
    seen: [Option<Instant>; 10],
}

impl Checker {
    pub fn new(profile: Profile) -> Checker {
        Checker {
            profile,
            layout: layout(profile),
            last_index: None,
            seen: [None; 10],
        }
    }

    /// What is wrong with `f`, received at `now` (empty: nothing).
    pub fn check(&mut self, f: &Frame, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        let id = match (f.id, f.kind) {
            (CanId::Standard(id), FrameKind::Data) => id,
            _ => {
                out.push(format!("{:X}: not a standard data frame", f.id.raw()));
                return out;
            }
        };
        if (0x300..=0x307).contains(&id) {
            return out;
        }
        let Some(index) = self.layout.iter().position(|(i, _)| *i == id) else {
            out.push(format!("{id:03X}: not part of the {} profile", self.profile.name()));
            return out;
        };
        let want = self.layout[index].1;
        self.order(index, id, &mut out);
        dlc(want, f, &mut out);
        self.pacing(index, id, now, &mut out);
        self.values(id, f.data(), &mut out);
        out
    }

    fn order(&mut self, index: usize, id: u16, out: &mut Vec<String>) {
        if let Some(last) = self.last_index
            && index <= last
            && index != 0
        {
            out.push(format!(
                "{id:03X} after {:03X}: out of the {} profile's order",
                self.layout[last].0,
                self.profile.name()
            ));
        }
        self.last_index = Some(index);
    }

    fn pacing(&mut self, index: usize, id: u16, now: Instant, out: &mut Vec<String>) {
        let gap = self.profile.min_gap();
        if let Some(prev) = self.seen[index].replace(now)
            && now.saturating_duration_since(prev) < gap
        {
            out.push(format!(
                "{id:03X}: again after {} ms, the profile allows one every {} ms",
                now.saturating_duration_since(prev).as_millis(),
                gap.as_millis()
            ));
        }
    }

    fn values(&self, id: u16, d: &[u8], out: &mut Vec<String>) {
        let u16_at = |i: usize| d.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        match id {
            0x351 => {
                if u16_at(0) == Some(0) {
                    out.push("351: CVL 0 V (read as over-voltage)".into());
                }
                for (i, name) in [(2, "CCL"), (4, "DCL")] {
                    if u16_at(i).is_some_and(|v| (v as i16) < 0) {
                        out.push(format!("351: negative {name}"));
                    }
                }
                if self.profile == Profile::Sma && u16_at(6) == Some(0) {
                    out.push("351: an unused DVL must carry the invalid marker FFFF, not 0".into());
                }
            }
            0x35F if self.profile == Profile::Sma && u16_at(6) != Some(SMA_INVALID_U16) => {
                out.push("35F: the unused manufacturer id must carry the invalid marker FFFF".into());
            }
            0x35E if self.profile == Profile::Victron && d.starts_with(b"PYLON") => {
                out.push("35E: a name starting with PYLON switches on the GX's Pylontech rewrites".into());
            }
            _ => {}
        }
    }
}

fn dlc(want: Option<u8>, f: &Frame, out: &mut Vec<String>) {
    let got = f.dlc();
    let ok = match want {
        Some(n) => got == n,
        None => (1..=8).contains(&got),
    };
    if !ok {
        let want = want.map_or("1 to 8".to_string(), |n| n.to_string());
        out.push(format!("{:03X}: DLC {got}, the profile sends {want}", f.id.raw()));
    }
}

#[cfg(test)]
mod tests;
