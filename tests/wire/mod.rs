//! The wire-level harness shared by tests/wire_properties.rs (proptest) and
//! the `wire` fuzz target: a deterministic driver of the real core (the
//! [`Combiner`], each output's shaping and encoding through
//! [`checked_transmission`], its push timing) in virtual time, and an
//! oracle that decodes every transmission with its own reader written from
//! the spec's tables (section 4, 9: 0x351, 0x359, 0x35C, 0x35F, 0x379) and
//! checks it against what the batteries said (sections 4, 8, 9, 14).
//!
//! The oracle knows only what the harness fed in: the telegrams (as values),
//! the setpoints, the configuration. It shares no code with the encoder, the
//! shaping or the interlock.

#![allow(dead_code)]

use bms_gateway::codec::{Flags, Limits, Measurements, Requests, StateOfCharge};
use bms_gateway::combine::{Combined, Combiner, InverterShare, Shaped};
use bms_gateway::config::{self, Config, OutputConfig};
use bms_gateway::frame::Frame;
use bms_gateway::interlock::Interlock;
use bms_gateway::output::{checked_transmission, min_delay, view_of};
use bms_gateway::profile::{OutputView, Profile};
use bms_gateway::send::PushTimer;
use bms_gateway::setpoint::{LimitKind, Scope, Setpoint, SetpointCommand};
use bms_gateway::telegram::Telegram;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// STALE-TIMEOUT of every scenario (the default).
pub const STALE: Duration = Duration::from_secs(5);
/// `[battery] V-DISCHARGE-MIN` (the default).
pub const V_DISCHARGE_MIN: f64 = 46.0;
/// `[battery] OVERCURRENT-MARGIN` (the default).
const OVERCURRENT_MARGIN: f64 = 0.05;

/// The edge values the generators pick from (proptest strategies and the
/// fuzz target's byte reader alike): tapering limits down to 0.1 A and 0,
/// CVL 0, DVL absent or outside the Sunny Island's window, forbids,
/// currents of either sign (circulating), SOC at the ends.
pub const CVLS: &[f64] = &[0.0, 52.0, 53.2, 55.2, 56.0, 56.0, 58.4];
pub const AMPS: &[f64] = &[0.0, 0.1, 0.3, 0.5, 10.0, 50.5, 100.0, 175.0, 250.0];
pub const DVLS: &[Option<f64>] = &[None, Some(40.0), Some(44.0), Some(46.0), Some(47.5), Some(50.0)];
pub const ENABLES: &[Option<(bool, bool)>] = &[
    None,
    Some((true, true)),
    Some((true, true)),
    Some((true, true)),
    Some((false, true)),
    Some((true, false)),
    Some((false, false)),
];
pub const CURRENTS: &[f64] = &[-150.0, -60.0, -20.0, -3.0, 0.0, 5.0, 20.0, 60.0, 150.0];
pub const VOLTS: &[f64] = &[48.0, 51.37, 53.6];
pub const SOCS: &[f64] = &[0.0, 5.0, 50.0, 95.0, 100.0];
pub const SCALINGS: &[f64] = &[1.0, 0.5, 1.0 / 3.0, 0.29];
pub const OUTPUT_CAPS: &[f64] = &[20.0, 100.0, 300.0];
pub const RAMPS: &[f64] = &[0.0, 0.0, 0.1, 1.0];
pub const WINDOWS: &[Option<(f64, f64)>] = &[None, None, Some((10.0, 90.0)), Some((5.0, 95.0))];
pub const BANK_CAPS: &[f64] = &[50.0, 150.0, 700.0];
pub const CAPACITIES: &[f64] = &[100.0, 200.0];
pub const WAITS: &[u32] = &[50, 300, 1000, 1000, 2500, 6000];
pub const SETPOINTS: &[Option<f64>] = &[None, Some(0.0), Some(0.5), Some(20.0), Some(75.3), Some(150.0)];
pub const TTLS: &[Option<u32>] = &[None, Some(500), Some(3000)];

/// An output section with `scaling` divided among `outputs` outputs, so
/// that the I-SCALING of all sums to at most 1.
pub fn shared(section: OutputSection, outputs: usize) -> OutputSection {
    OutputSection {
        scaling: (section.scaling / outputs as f64 * 1e4).floor() / 1e4,
        ..section
    }
}

/// A scenario read from arbitrary bytes (the fuzz target's input): each
/// byte picks from the tables above, modulo their length.
pub fn scenario_from_bytes(data: &[u8]) -> Scenario {
    let mut bytes = data.iter().copied().chain(std::iter::repeat(0));
    let mut next = move || bytes.next().unwrap_or(0);
    fn pick<T: Copy>(table: &[T], b: u8) -> T {
        table[usize::from(b) % table.len()]
    }
    let head = next();
    let inputs = 1 + usize::from(head % 3);
    let outputs = 1 + usize::from(head / 3 % 3);
    let battery = BatterySection {
        share_mode: head & 0x20 != 0,
        cap_charge: pick(BANK_CAPS, next()),
        cap_discharge: pick(BANK_CAPS, next()),
        stop_on_lost: head & 0x40 != 0,
        continue_on_forbid: head & 0x80 != 0,
        policies: next() & 1 != 0,
    };
    let capacities = (0..inputs).map(|_| pick(CAPACITIES, next())).collect();
    let section = |next: &mut dyn FnMut() -> u8| {
        let profile = pick(&Profile::ALL, next());
        let s = OutputSection {
            profile,
            scaling: pick(SCALINGS, next()),
            cap_charge: pick(OUTPUT_CAPS, next()),
            cap_discharge: pick(OUTPUT_CAPS, next()),
            cvl_ramp: pick(RAMPS, next()),
            soc_window: pick(WINDOWS, next()),
        };
        shared(s, outputs)
    };
    let sections = (0..outputs).map(|_| section(&mut next)).collect();
    let count = usize::from(next()) % 80;
    let kinds = [LimitKind::Charge, LimitKind::Discharge];
    let events = (0..count)
        .map(|_| match next() % 12 {
            0..=5 => Event::Telegram {
                input: usize::from(next()) % inputs,
                pack: Pack {
                    cvl: pick(CVLS, next()),
                    charge: pick(AMPS, next()),
                    discharge: pick(AMPS, next()),
                    dvl: pick(DVLS, next()),
                    enables: pick(ENABLES, next()),
                    current: pick(CURRENTS, next()),
                    volts: pick(VOLTS, next()),
                    soc: pick(SOCS, next()),
                },
            },
            6..=9 => Event::Wait {
                ms: pick(WAITS, next()),
            },
            10 => {
                let b = next();
                Event::Setpoint {
                    inverter: (b & 0x80 != 0).then_some(usize::from(b & 0x7F) % outputs),
                    kind: pick(&kinds, next()),
                    value: pick(SETPOINTS, next()),
                    ttl_ms: pick(TTLS, next()),
                }
            }
            _ => Event::Reload {
                output: usize::from(next()) % outputs,
                section: section(&mut next),
            },
        })
        .collect();
    Scenario {
        battery,
        capacities,
        outputs: sections,
        events,
    }
}

/// The events with each input's telegram repeated every second as real
/// batteries do, so that rounds complete: a `Wait` between 1 and 6 s is cut
/// into one-second steps with a telegram of every input that has sent one
/// (the latest it sent); 6 s is a silence.
pub fn with_rounds(s: &Scenario) -> Vec<Event> {
    let mut last: Vec<Option<Pack>> = vec![None; s.capacities.len()];
    let mut out = Vec::new();
    for e in &s.events {
        match *e {
            Event::Telegram { input, pack } => {
                let n = last.len();
                last[input % n] = Some(pack);
                out.push(*e);
            }
            Event::Wait { ms } if ms > 1000 && ms < 6000 => {
                for _ in 0..ms / 1000 {
                    out.push(Event::Wait { ms: 1000 });
                    for (input, p) in last.iter().enumerate() {
                        if let Some(pack) = *p {
                            out.push(Event::Telegram { input, pack });
                        }
                    }
                }
            }
            _ => out.push(*e),
        }
    }
    out
}

/// What one battery says in one telegram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pack {
    pub cvl: f64,
    pub charge: f64,
    pub discharge: f64,
    /// `None`: a 6-byte 0x351 (no discharge voltage).
    pub dvl: Option<f64>,
    /// `None`: no 0x35C (normal operation assumed).
    pub enables: Option<(bool, bool)>,
    /// A, + = charging.
    pub current: f64,
    pub volts: f64,
    pub soc: f64,
}

impl Pack {
    pub fn telegram(&self) -> Telegram {
        Telegram {
            limits: Limits {
                v_charge_cmd: self.cvl,
                i_lim_charge: self.charge,
                i_lim_discharge: self.discharge,
                v_discharge_min: self.dvl,
            },
            soc: StateOfCharge {
                soc: self.soc,
                soh: 100.0,
                soc_hires: None,
            },
            measurements: Measurements {
                v_avg: self.volts,
                i_total: self.current,
                t_avg: 20.0,
            },
            flags: Flags {
                n_modules: 1,
                ..Flags::default()
            },
            requests: self.enables.map(|(c, d)| Requests {
                charge_enable: c,
                discharge_enable: d,
                ..Requests::NORMAL
            }),
            manufacturer: None,
            cells: None,
            energy: None,
            cell_readings: None,
        }
    }

    /// The same values as an RS485 pack at `address` says them: a Pylon
    /// 0x42 and 0x92 answer written by hand from the layouts of
    /// reference §3.3 and §3.6 (15 cells summing to the pack voltage, five
    /// sensors at 20 degC, 100 Ah), decoded and mapped by the gateway's
    /// codec (`Cycle::telegram`), as the serial thread does.
    pub fn rs485_telegram(&self, address: u8) -> Telegram {
        use bms_gateway::rs485::Protocol;
        use bms_gateway::rs485::mapping::Cycle;
        use bms_gateway::rs485::responses::{decode_analog, decode_charge_management};
        let word = |v: i64| (v as u16).to_be_bytes();
        let total_mv = (self.volts * 1000.0).round() as i64;
        let mut analog = vec![0x00, address, 15];
        for k in 0..15 {
            // 14 equal cells and the rest, so that they sum to the pack.
            let cell = if k < 14 {
                total_mv / 15
            } else {
                total_mv - 14 * (total_mv / 15)
            };
            analog.extend(word(cell));
        }
        analog.push(5);
        for _ in 0..5 {
            analog.extend(word(2731 + 200));
        }
        analog.extend(word((self.current * 10.0).round() as i64));
        analog.extend(word(total_mv));
        analog.extend([0xFF, 0xFF, 4, 0xFF, 0xFF, 0, 0]);
        let remaining = (self.soc * 1000.0).round() as u32;
        analog.extend(&remaining.to_be_bytes()[1..]);
        analog.extend(&100_000u32.to_be_bytes()[1..]);
        let mut management = vec![address];
        management.extend(word((self.cvl * 1000.0).round() as i64));
        management.extend(word((self.dvl.unwrap_or(0.0) * 1000.0).round() as i64));
        management.extend(word((self.charge * 10.0).round() as i64));
        // US packs send the discharge limit negative.
        management.extend(word(-(self.discharge * 10.0).round() as i64));
        let (charge, discharge) = self.enables.unwrap_or((true, true));
        management.push(if charge { 0x80 } else { 0 } | if discharge { 0x40 } else { 0 });
        let cycle = Cycle {
            analog: decode_analog(&analog, Protocol::Pylon).expect("a valid 0x42").pack,
            management: decode_charge_management(&management).expect("a valid 0x92"),
            alarms: None,
        };
        cycle.telegram().expect("the cycle maps")
    }

    /// Whether this battery allows `kind` (its enable bit; no 0x35C: yes).
    fn allows(&self, kind: LimitKind) -> bool {
        match (self.enables, kind) {
            (None, _) => true,
            (Some((c, _)), LimitKind::Charge) => c,
            (Some((_, d)), LimitKind::Discharge) => d,
        }
    }

    fn limit(&self, kind: LimitKind) -> f64 {
        match kind {
            LimitKind::Charge => self.charge,
            LimitKind::Discharge => self.discharge,
        }
    }
}

/// One `[[bmses-out]]` section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputSection {
    pub profile: Profile,
    pub scaling: f64,
    pub cap_charge: f64,
    pub cap_discharge: f64,
    pub cvl_ramp: f64,
    pub soc_window: Option<(f64, f64)>,
}

/// `[battery]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatterySection {
    pub share_mode: bool,
    pub cap_charge: f64,
    pub cap_discharge: f64,
    pub stop_on_lost: bool,
    /// ON-PACK-FORBIDS = "continue" (written in share mode only: `check`
    /// refuses it in sum mode).
    pub continue_on_forbid: bool,
    /// The lower-only bank policies of spec 15 (temperature derating, a
    /// charge-stop SOC, soft landing, the usable SOC): none may raise what
    /// an inverter is sent, so every invariant holds with them too.
    pub policies: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    Telegram {
        input: usize,
        pack: Pack,
    },
    Wait {
        ms: u32,
    },
    /// `inverter`: `None` for the system; `value` `None` clears.
    Setpoint {
        inverter: Option<usize>,
        kind: LimitKind,
        value: Option<f64>,
        ttl_ms: Option<u32>,
    },
    /// A reload that changes one output's section.
    Reload {
        output: usize,
        section: OutputSection,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub battery: BatterySection,
    pub capacities: Vec<f64>,
    pub outputs: Vec<OutputSection>,
    pub events: Vec<Event>,
}

impl Scenario {
    pub fn config_text(&self, outputs: &[OutputSection]) -> String {
        let b = &self.battery;
        let mut t = String::from("GATEWAY-ACTIVATED = true\n[mqtt]\nACTIVATED = false\n[battery]\n");
        let _ = writeln!(
            t,
            "LIMIT-MODE = \"{}\"\nI-LIM-CHARGE = {}\nI-LIM-DISCHARGE = {}\nON-INPUT-LOST = \"{}\"",
            if b.share_mode { "share" } else { "sum" },
            b.cap_charge,
            b.cap_discharge,
            if b.stop_on_lost { "stop" } else { "degrade" }
        );
        if b.share_mode && b.continue_on_forbid {
            t.push_str("ON-PACK-FORBIDS = \"continue\"\n");
        }
        if b.policies {
            // The packs report 20 degC: factors 0.75 (charge) and 0.7 (discharge).
            t.push_str(
                "TEMPERATURE-DERATING-CHARGE = [[0, 0.0], [15, 0.5], [25, 1.0]]\n\
                 TEMPERATURE-DERATING-DISCHARGE = [[10, 0.4], [30, 1.0]]\n\
                 CHARGE-STOP-SOC = 90\nCHARGE-RESUME-SOC = 85\n\
                 SOFT-LANDING-CHARGE = [80, 100]\nSOFT-LANDING-DISCHARGE = [20, 5]\n\
                 SOC-MODE = \"usable\"\n",
            );
        }
        for (i, c) in self.capacities.iter().enumerate() {
            // Odd inputs are RS485 packs, sharing one port (spec 18).
            if i % 2 == 1 {
                let _ = writeln!(
                    t,
                    "[[bmses-in]]\nSERIAL-PORT = \"/dev/ttyWIRE\"\nADDRESS = {i}\nCAPACITY-AH = {c}"
                );
            } else {
                let _ = writeln!(t, "[[bmses-in]]\nCAN-IF = \"bat{i}\"\nCAPACITY-AH = {c}");
            }
        }
        for (j, o) in outputs.iter().enumerate() {
            let _ = writeln!(
                t,
                "[[bmses-out]]\nCAN-IF = \"inv{j}\"\nPROFILE = \"{}\"\nI-SCALING = {}\nI-LIM-CHARGE = {}\nI-LIM-DISCHARGE = {}\nCVL-RAMP = {}\nINVERTER-TIMEOUT = 0",
                o.profile.name(),
                o.scaling,
                o.cap_charge,
                o.cap_discharge,
                o.cvl_ramp
            );
            if let Some((min, max)) = o.soc_window {
                let _ = writeln!(t, "SOC-MIN = {min}\nSOC-MAX = {max}");
            }
        }
        t
    }

    pub fn config(&self, outputs: &[OutputSection]) -> Config {
        let text = self.config_text(outputs);
        config::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e:?}"))
    }
}

/// One violated invariant.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub transmissions: usize,
    /// Violations (of every invariant, or of the one WIRE_ONLY names): the
    /// first few.
    pub violations: Vec<Violation>,
    /// Violations of the invariants WIRE_ONLY leaves out, by invariant.
    pub gated: Vec<(&'static str, usize)>,
    /// Every invariant violated, gated or not: how often, and the first case.
    pub all: Vec<(&'static str, usize, String)>,
    pub trips: u64,
}

impl Report {
    fn violate(&mut self, invariant: &'static str, detail: String) {
        match self.all.iter_mut().find(|(n, _, _)| *n == invariant) {
            Some((_, k, _)) => *k += 1,
            None => self.all.push((invariant, 1, detail.clone())),
        }
        // WIRE_ONLY=name: look at one invariant alone, gated or not (to find
        // and shrink its counterexample).
        let gated = match std::env::var("WIRE_ONLY") {
            Ok(only) => only != invariant,
            Err(_) => false,
        };
        if gated {
            match self.gated.iter_mut().find(|(n, _)| *n == invariant) {
                Some((_, k)) => *k += 1,
                None => self.gated.push((invariant, 1)),
            }
        } else if self.violations.len() < 5 {
            self.violations.push(Violation { invariant, detail });
        }
    }
}

/// The fields of one transmission, read from the bytes as the spec's tables
/// lay them out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Decoded {
    /// 0x351: V, A, A, V (DVL `None` without bytes 6-7).
    pub limits: Option<(f64, f64, f64, Option<u16>)>,
    /// 0x35C byte 0: charge enable (bit 7), discharge enable (bit 6), force
    /// charge 1 and 2, full charge (bits 5, 4, 3).
    pub requests: Option<u8>,
    /// 0x359 byte 1 (protection 2).
    pub protection2: Option<u8>,
    /// 0x379 bytes 0-1, Ah.
    pub capacity_379: Option<u16>,
    /// 0x35F bytes 4-5, Ah.
    pub capacity_35f: Option<u16>,
}

pub fn decode(profile: Profile, frames: &[Frame]) -> Decoded {
    let u16_at = |d: &[u8], i: usize| u16::from_le_bytes([d[i], d[i + 1]]);
    let i16_at = |d: &[u8], i: usize| i16::from_le_bytes([d[i], d[i + 1]]);
    let pylon_like = matches!(
        profile,
        Profile::Pylon | Profile::PylonV2 | Profile::SolArk | Profile::Luxpower
    );
    let mut out = Decoded::default();
    for f in frames {
        let d = f.data();
        match f.id.raw() {
            0x351 if d.len() >= 6 => {
                out.limits = Some((
                    f64::from(u16_at(d, 0)) / 10.0,
                    f64::from(i16_at(d, 2)) / 10.0,
                    f64::from(i16_at(d, 4)) / 10.0,
                    (d.len() >= 8).then(|| u16_at(d, 6)),
                ))
            }
            0x35C if pylon_like && !d.is_empty() => out.requests = Some(d[0]),
            0x359 if pylon_like && d.len() >= 2 => out.protection2 = Some(d[1]),
            0x379 if d.len() >= 2 => out.capacity_379 = Some(u16_at(d, 0)),
            0x35F if d.len() >= 6 => out.capacity_35f = Some(u16_at(d, 4)),
            _ => {}
        }
    }
    out
}

/// The batteries a combined state was made of, as the oracle saw them.
#[derive(Debug, Clone, PartialEq, Default)]
struct Snapshot {
    fresh: Vec<(Pack, f64)>,
    /// ON-PACK-FORBIDS "continue" in share mode (spec 15).
    continues: bool,
    safe: bool,
    /// The last known CVL (the lowest fresh one, or the one before).
    last_cvl: f64,
}

impl Snapshot {
    /// Whether the bank may carry current in direction `kind` (spec 4): every
    /// fresh battery allows it; with "continue" (spec 15) one allows it and
    /// no forbidding one is measured taking current in it (1 A or more).
    fn enabled(&self, kind: LimitKind) -> bool {
        if !self.continues {
            return self.fresh.iter().all(|(p, _)| p.allows(kind));
        }
        let along = |p: &Pack| {
            if kind == LimitKind::Charge {
                p.current
            } else {
                -p.current
            }
        };
        self.fresh.iter().any(|(p, _)| p.allows(kind))
            && !self.fresh.iter().any(|(p, _)| !p.allows(kind) && along(p) >= 1.0)
    }

    fn sum(&self, kind: LimitKind) -> f64 {
        (self.fresh.iter())
            .filter(|(p, _)| p.allows(kind))
            .map(|(p, _)| p.limit(kind))
            .sum()
    }

    fn lowest_cvl(&self) -> f64 {
        (self.fresh.iter().map(|(p, _)| p.cvl))
            .filter(|&v| v > 0.0)
            .fold(f64::INFINITY, f64::min)
            .min(if self.fresh.iter().any(|(p, _)| p.cvl > 0.0) {
                f64::INFINITY
            } else {
                self.last_cvl
            })
    }

    fn bank_volts(&self) -> f64 {
        let cap: f64 = self.fresh.iter().map(|(_, c)| c).sum();
        self.fresh.iter().map(|(p, c)| p.volts * c).sum::<f64>() / cap
    }

    /// The direction the bank flows, and whether a pack is over its own
    /// limit in it (spec 8).
    fn over_current(&self) -> Option<LimitKind> {
        let total: f64 = self.fresh.iter().map(|(p, _)| p.current).sum();
        let kind = if total > 0.0 {
            LimitKind::Charge
        } else if total < 0.0 {
            LimitKind::Discharge
        } else {
            return None;
        };
        let over = self.fresh.iter().any(|(p, _)| {
            let own = if p.allows(kind) { p.limit(kind) } else { 0.0 };
            let along = if kind == LimitKind::Charge {
                p.current
            } else {
                -p.current
            };
            along > (1.0 + OVERCURRENT_MARGIN) * own
        });
        over.then_some(kind)
    }
}

/// A setpoint as the oracle keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sp {
    value: f64,
    expires: Option<Instant>,
}

fn active(sp: Option<Sp>, now: Instant) -> Option<f64> {
    sp.filter(|s| s.expires.is_none_or(|e| now < e)).map(|s| s.value)
}

#[derive(Debug, Clone, Copy)]
struct Previous {
    wire: (f64, f64),
    over: Option<LimitKind>,
    fresh_set: u64,
    epoch: u64,
}

struct Out {
    section: OutputSection,
    config: OutputConfig,
    latest: Option<Shaped>,
    timer: PushTimer,
    view: OutputView,
    interlock: Interlock,
    setpoints: [Option<Sp>; 2],
    /// The last CVL sent (0.1 V) and when: the ramp's starting point.
    last_cvl: Option<(u16, Instant)>,
    previous: Option<Previous>,
}

/// The driver and the oracle.
pub struct Harness {
    scenario_battery: BatterySection,
    capacities: Vec<f64>,
    config: Config,
    combiner: Combiner,
    outputs: Vec<Out>,
    start: Instant,
    now: Instant,
    latest: Vec<Option<(Pack, Instant)>>,
    snapshot: Snapshot,
    system_setpoints: [Option<Sp>; 2],
    /// Bumped by every setpoint or reload, and by a round whose over-current
    /// state differs from the last one's: a limit may rise across one.
    epoch: u64,
    report: Report,
    last_made: Option<Combined>,
}

fn slot(kind: LimitKind) -> usize {
    match kind {
        LimitKind::Charge => 0,
        LimitKind::Discharge => 1,
    }
}

const KINDS: [LimitKind; 2] = [LimitKind::Charge, LimitKind::Discharge];

impl Harness {
    pub fn new(scenario: &Scenario) -> Harness {
        let config = scenario.config(&scenario.outputs);
        let start = Instant::now();
        let shares: Vec<InverterShare> = config.outputs.iter().map(|o| o.share).collect();
        let combiner = Combiner::new(config.battery, &scenario.capacities, start).with_inverters(&shares);
        let outputs = (config.outputs.iter().zip(&scenario.outputs))
            .map(|(c, &section)| Out {
                section,
                config: c.clone(),
                latest: None,
                timer: PushTimer {
                    min_delay: min_delay(c),
                    last_sent: None,
                    pending: false,
                },
                view: view_of(c),
                interlock: Interlock::default(),
                setpoints: [None; 2],
                last_cvl: None,
                previous: None,
            })
            .collect();
        Harness {
            scenario_battery: scenario.battery,
            capacities: scenario.capacities.clone(),
            config,
            combiner,
            outputs,
            start,
            now: start,
            latest: vec![None; scenario.capacities.len()],
            snapshot: Snapshot::default(),
            system_setpoints: [None; 2],
            epoch: 0,
            report: Report::default(),
            last_made: None,
        }
    }

    /// Runs every event, then 12 s more (every input turns stale: the safe
    /// state is checked too).
    pub fn run(mut self, events: &[Event]) -> Report {
        for e in events {
            self.event(e);
        }
        self.wait(Duration::from_secs(12));
        self.report.trips = self.outputs.iter().map(|o| o.interlock.trips).sum();
        self.report
    }

    fn event(&mut self, e: &Event) {
        let now = self.now;
        match *e {
            Event::Telegram { input, pack } => {
                let input = input % self.latest.len();
                self.latest[input] = Some((pack, now));
                // Odd inputs are RS485 packs (config_text).
                let telegram = if input % 2 == 1 {
                    pack.rs485_telegram(input as u8)
                } else {
                    pack.telegram()
                };
                let made = self.combiner.on_telegram(input, telegram, now);
                self.distribute(made);
                self.run_outputs();
            }
            Event::Wait { ms } => self.wait(Duration::from_millis(u64::from(ms))),
            Event::Setpoint {
                inverter,
                kind,
                value,
                ttl_ms,
            } => self.setpoint(inverter, kind, value, ttl_ms),
            Event::Reload { output, section } => self.reload(output, section),
        }
    }

    fn setpoint(&mut self, inverter: Option<usize>, kind: LimitKind, value: Option<f64>, ttl_ms: Option<u32>) {
        let now = self.now;
        let expires = ttl_ms.map(|ms| now + Duration::from_millis(u64::from(ms)));
        let scope = match inverter {
            None => Scope::System,
            Some(j) => Scope::Inverter(j % self.outputs.len()),
        };
        // Clamped to 0..the cap, as the MQTT command parser does (spec 6).
        let cap = match (scope, kind) {
            (Scope::System, LimitKind::Charge) => self.scenario_battery.cap_charge,
            (Scope::System, LimitKind::Discharge) => self.scenario_battery.cap_discharge,
            (Scope::Inverter(j), LimitKind::Charge) => self.outputs[j].section.cap_charge,
            (Scope::Inverter(j), LimitKind::Discharge) => self.outputs[j].section.cap_discharge,
            (Scope::ChargeStop, _) => unreachable!("the harness draws current setpoints only"),
        };
        let sp = value.map(|v| Sp {
            value: v.clamp(0.0, cap),
            expires,
        });
        match scope {
            Scope::System => self.system_setpoints[slot(kind)] = sp,
            Scope::Inverter(j) => self.outputs[j].setpoints[slot(kind)] = sp,
            Scope::ChargeStop => unreachable!("the harness draws current setpoints only"),
        }
        self.epoch += 1;
        let command = SetpointCommand {
            scope,
            kind,
            setpoint: sp.map(|s| Setpoint {
                value: s.value,
                expires: s.expires,
            }),
        };
        let made = self.combiner.apply(command, now);
        self.distribute(made);
        self.run_outputs();
    }

    fn reload(&mut self, output: usize, section: OutputSection) {
        let j = output % self.outputs.len();
        let mut sections: Vec<OutputSection> = self.outputs.iter().map(|o| o.section).collect();
        sections[j] = section;
        let scenario = Scenario {
            battery: self.scenario_battery,
            capacities: self.capacities.clone(),
            outputs: sections,
            events: Vec::new(),
        };
        let config = scenario.config(&scenario.outputs);
        let now = self.now;
        let identity_in: Vec<Option<usize>> = (0..config.inputs.len()).map(Some).collect();
        let identity_out: Vec<Option<usize>> = (0..config.outputs.len()).map(Some).collect();
        let shares: Vec<InverterShare> = config.outputs.iter().map(|o| o.share).collect();
        self.combiner.reconfigure_inverters(&shares, &identity_out, now);
        let capacities: Vec<f64> = config.inputs.iter().map(|i| i.capacity_ah).collect();
        let made = self
            .combiner
            .reconfigure(config.battery, &capacities, &identity_in, now);
        // The changed output goes on with its ramp, pacing and interlock
        // (spec 7: a reload changes nothing beyond what the keys ask for).
        let out = &mut self.outputs[j];
        let fresh = view_of(&config.outputs[j]);
        out.view.profile = fresh.profile;
        out.view.window = fresh.window;
        out.view.ramp.rate = fresh.ramp.rate;
        out.timer.min_delay = min_delay(&config.outputs[j]);
        out.config = config.outputs[j].clone();
        out.section = section;
        self.config = config;
        self.epoch += 1;
        self.distribute(made);
        self.run_outputs();
    }

    /// Time passes: the combiner ticks at its own deadlines and the outputs
    /// send when due, as the daemon's threads would.
    fn wait(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let tick = self.combiner.next_deadline(self.now);
            let due = (self.outputs.iter())
                .filter_map(|o| o.timer.due(o.latest.is_some(), self.now))
                .min();
            let next = [tick, due, Some(end)].into_iter().flatten().min().unwrap_or(end);
            let next = next.max(self.now + Duration::from_micros(1)).min(end);
            if next <= self.now {
                break;
            }
            self.now = next;
            if tick.is_some_and(|t| t <= self.now) {
                let made = self.combiner.on_tick(self.now);
                // An inverter's own setpoint that expires gives it back its
                // share of the combined limit, which spec 8's loop bounds:
                // like a setpoint command, its limit may rise across it.
                if (self.combiner.expired().iter()).any(|(scope, _)| matches!(scope, Scope::Inverter(_))) {
                    self.epoch += 1;
                }
                self.distribute(made);
            }
            self.run_outputs();
            if self.now >= end {
                break;
            }
        }
    }

    /// A state the combiner returned: a new one (made of the latest
    /// telegrams: the oracle takes its snapshot), or the latest one again
    /// (an inverter's setpoint reshapes it).
    fn distribute(&mut self, made: Option<Combined>) {
        let Some(made) = made else { return };
        if self.last_made != Some(made) {
            let snapshot = self.snapshot_at(self.now);
            // A round in which no pack (or another direction's) was over
            // current may raise the limit (spec 8): a transmission after it
            // is compared with none before it.
            if self.scenario_battery.share_mode && snapshot.over_current() != self.snapshot.over_current() {
                self.epoch += 1;
            }
            self.snapshot = snapshot;
        }
        self.last_made = Some(made);
        let shaped: Vec<Shaped> = self.combiner.shaped(self.now).collect();
        for (out, s) in self.outputs.iter_mut().zip(shaped) {
            out.latest = Some(s);
            out.timer.pending = true;
        }
    }

    fn snapshot_at(&self, now: Instant) -> Snapshot {
        let fresh: Vec<(Pack, f64)> = (self.latest.iter().zip(&self.capacities))
            .filter_map(|(l, &c)| {
                l.filter(|(_, at)| now.saturating_duration_since(*at) <= STALE)
                    .map(|(p, _)| (p, c))
            })
            .collect();
        let waiting = |l: &Option<(Pack, Instant)>| l.is_none() && now.saturating_duration_since(self.start) < STALE;
        let lost = self.latest.len() - fresh.len() - self.latest.iter().filter(|l| waiting(l)).count();
        let safe = fresh.is_empty() || (self.scenario_battery.stop_on_lost && lost > 0);
        let b = &self.scenario_battery;
        let mut snapshot = Snapshot {
            fresh,
            continues: b.share_mode && b.continue_on_forbid,
            safe,
            last_cvl: self.snapshot.last_cvl,
        };
        let lowest = snapshot.lowest_cvl();
        if lowest.is_finite() && lowest > 0.0 {
            snapshot.last_cvl = lowest;
        }
        snapshot
    }

    fn run_outputs(&mut self) {
        for j in 0..self.outputs.len() {
            let now = self.now;
            let out = &mut self.outputs[j];
            let Some(shaped) = out.latest else { continue };
            if out.timer.due(true, now).is_none_or(|at| at > now) {
                continue;
            }
            out.timer.pending = false;
            out.timer.last_sent = Some(now);
            let checked = checked_transmission(&out.config, &mut out.view, &mut out.interlock, &shaped, now);
            self.report.transmissions += 1;
            if let Some(trip) = checked.trip {
                self.report.violate(
                    "interlock_never_trips",
                    format!("inverter {j}: {trip} at {:?}", now - self.start),
                );
            }
            self.check(j, checked.frames.frames(), now);
        }
    }
}

/// The largest count of 0.1 A within `amperes` (the encoder's own noise
/// allowance of a ten-millionth of an ampere).
fn max_count(amperes: f64) -> f64 {
    (amperes * 10.0 + 1e-6).floor()
}

impl Harness {
    /// Every invariant on transmission `frames` of output `j` at `now`.
    fn check(&mut self, j: usize, frames: &[Frame], now: Instant) {
        let out = &self.outputs[j];
        let profile = out.section.profile;
        let wire = decode(profile, frames);
        let Some((cvl, charge, discharge, dvl)) = wire.limits else {
            self.report
                .violate("limits_frame_sent", format!("inverter {j}: no 0x351"));
            return;
        };
        let snap = self.snapshot.clone();
        let mut found: Vec<(&'static str, String)> = Vec::new();
        let mut v = |name: &'static str, detail: String| found.push((name, detail));
        let ctx = format!("inverter {j} ({}) at {:?}", profile.name(), now - self.start);
        if cvl <= 0.0 {
            v("cvl_above_zero", format!("{ctx}: CVL {cvl}"));
        }
        if profile == Profile::Sma {
            if !(41.0..=63.0).contains(&cvl) {
                v("sma_voltage_window", format!("{ctx}: CVL {cvl}"));
            }
            if let Some(dvl) = dvl.filter(|&d| !(410..=480).contains(&d)) {
                v("sma_voltage_window", format!("{ctx}: DVL raw {dvl}"));
            }
        } else if dvl == Some(0) {
            v("dvl_never_zero", format!("{ctx}: DVL 0 V"));
        }
        if snap.safe {
            self.check_safe(&ctx, &wire, &snap, &mut v);
        } else {
            let out = &self.outputs[j];
            for kind in KINDS {
                let sent = if kind == LimitKind::Charge { charge } else { discharge };
                let cap = if kind == LimitKind::Charge {
                    out.section.cap_charge
                } else {
                    out.section.cap_discharge
                };
                let bank_cap = if kind == LimitKind::Charge {
                    self.scenario_battery.cap_charge
                } else {
                    self.scenario_battery.cap_discharge
                };
                let mut bound = cap.min(out.section.scaling * snap.sum(kind).min(bank_cap));
                for sp in [self.system_setpoints[slot(kind)], out.setpoints[slot(kind)]] {
                    if let Some(s) = active(sp, now) {
                        bound = bound.min(s);
                    }
                }
                if sent * 10.0 > max_count(bound) + 1e-9 {
                    v("limit_within_bounds", format!("{ctx}: {kind:?} {sent} A > {bound} A"));
                }
                if !snap.enabled(kind) {
                    let bit = if kind == LimitKind::Charge { 0x80 } else { 0x40 };
                    if sent != 0.0 || wire.requests.is_some_and(|r| r & bit != 0) {
                        v(
                            "forbidden_direction_zero",
                            format!("{ctx}: {kind:?} forbidden, {sent} A, 0x35C {:?}", wire.requests),
                        );
                    }
                }
            }
            self.check_cvl(j, &ctx, cvl, charge, &snap, now, &mut v);
            self.check_no_rise(j, &ctx, (charge, discharge), &snap, &mut v);
        }
        for (name, detail) in found {
            self.report.violate(name, detail);
        }
        let out = &mut self.outputs[j];
        out.last_cvl = Some(((cvl * 10.0).round() as u16, now));
    }

    fn check_safe(&self, ctx: &str, wire: &Decoded, snap: &Snapshot, v: &mut impl FnMut(&'static str, String)) {
        let Some((cvl, charge, discharge, _)) = wire.limits else {
            return;
        };
        if charge != 0.0 || discharge != 0.0 {
            v(
                "safe_state_frames",
                format!("{ctx}: safe with {charge} / {discharge} A"),
            );
        }
        if wire.requests.is_some_and(|r| r & 0xF8 != 0) {
            v(
                "safe_state_frames",
                format!("{ctx}: safe with 0x35C {:?}", wire.requests),
            );
        }
        if wire.protection2.is_some_and(|p| p & 0x08 == 0) {
            v("safe_state_frames", format!("{ctx}: safe without the system error bit"));
        }
        if cvl > snap.last_cvl + 1e-9 {
            v(
                "safe_state_frames",
                format!("{ctx}: safe CVL {cvl} > last known {}", snap.last_cvl),
            );
        }
        let installed: f64 = snap.fresh.iter().map(|(_, c)| c).sum::<f64>() + 0.0;
        for cap in [wire.capacity_379, wire.capacity_35f].into_iter().flatten() {
            if f64::from(cap) != installed.round() {
                v(
                    "safe_capacity_fresh_only",
                    format!("{ctx}: capacity {cap} Ah, fresh {installed} Ah"),
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_cvl(
        &self,
        j: usize,
        ctx: &str,
        cvl: f64,
        charge: f64,
        snap: &Snapshot,
        now: Instant,
        v: &mut impl FnMut(&'static str, String),
    ) {
        let out = &self.outputs[j];
        let profile = out.section.profile;
        let floor = if profile == Profile::Sma { 41.0 } else { 0.0 };
        let target = snap.lowest_cvl().max(floor);
        let raw = (cvl * 10.0).round();
        // Spec 9: victron's CVL while charging is forbidden is the bank
        // voltage rounded down (never above the combined CVL), at once.
        let bank = (snap.bank_volts() * 10.0 + 1e-9).floor() / 10.0;
        let lowered = (profile == Profile::Victron && charge == 0.0).then(|| bank.min(snap.lowest_cvl()));
        match out.last_cvl.filter(|_| out.section.cvl_ramp > 0.0) {
            _ if lowered.is_some_and(|l| raw <= (l * 10.0).round()) => {}
            None => {
                if raw > (target * 10.0).round() {
                    v("cvl_at_most_lowest_fresh", format!("{ctx}: CVL {cvl} > {target}"));
                }
            }
            Some((last, at)) => {
                let last = f64::from(last) / 10.0;
                let step = out.section.cvl_ramp * now.saturating_duration_since(at).as_secs_f64();
                let bound = if target < last {
                    target.max(last - step)
                } else {
                    target.min(last + step)
                };
                if raw > (bound * 10.0).round() + 1.0 {
                    v(
                        "cvl_within_ramp",
                        format!("{ctx}: CVL {cvl} > ramp bound {bound} (last {last}, target {target})"),
                    );
                }
            }
        }
        if profile == Profile::Victron {
            let forbidden = charge == 0.0 || !snap.enabled(LimitKind::Charge);
            let lowered = bank.min(snap.lowest_cvl());
            if forbidden && bank > 0.0 && raw > (lowered * 10.0).round() {
                v(
                    "victron_cvl",
                    format!(
                        "{ctx}: charging forbidden, CVL {cvl} > min(bank {bank}, CVL {})",
                        snap.lowest_cvl()
                    ),
                );
            }
        }
    }

    /// Spec 8: while a pack is over current in the direction the bank
    /// flows, that direction's limit never rises (between two transmissions
    /// of the same fresh set, with no setpoint or reload between).
    fn check_no_rise(
        &mut self,
        j: usize,
        ctx: &str,
        wire: (f64, f64),
        snap: &Snapshot,
        v: &mut impl FnMut(&'static str, String),
    ) {
        let fresh_set = (self.latest.iter().enumerate())
            .filter(|(_, l)| l.is_some_and(|(_, at)| self.now.saturating_duration_since(at) <= STALE))
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let over = if self.scenario_battery.share_mode {
            snap.over_current()
        } else {
            None
        };
        let now = Previous {
            wire,
            over,
            fresh_set,
            epoch: self.epoch,
        };
        let out = &mut self.outputs[j];
        if let (Some(p), Some(kind)) = (out.previous, over)
            && p.over == Some(kind)
            && p.fresh_set == fresh_set
            && p.epoch == self.epoch
        {
            let (before, after) = match kind {
                LimitKind::Charge => (p.wire.0, wire.0),
                LimitKind::Discharge => (p.wire.1, wire.1),
            };
            if after > before {
                v(
                    "no_rise_while_over_current",
                    format!("{ctx}: {kind:?} rose {before} -> {after} A while a pack is over current"),
                );
            }
        }
        out.previous = Some(now);
    }
}
