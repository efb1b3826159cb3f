//! Simulated peers: a Pylontech battery and an inverter. Used by `demo` on the
//! virtual bus and by `sim-bms` / `sim-inverter` on real interfaces.
//!
//! The battery is a pure function of time (no clock read here), so the demo,
//! the simulators and the tests all produce the same frames for the same
//! parameters.
//!
//! The plant model ([`ParallelBank`], [`inverter_current`]) is what the
//! batteries' currents come from in the demo and the closed-loop tests:
//! packs with a capacity, an internal resistance and an open-circuit voltage
//! over SOC, connected in parallel, so that the circuit splits the current
//! (a low-resistance or low-SOC pack takes more), and inverters that charge
//! or discharge at a demanded power within the limits they were sent.

use crate::codec::{self, CellExtremes, Flags, Limits, Manufacturer, Measurements, Message, Requests, StateOfCharge};
use crate::frame::Frame;
use std::collections::BTreeMap;

/// What a simulated battery reports (its stack totals).
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryParams {
    pub soc: f64,
    pub soh: f64,
    pub voltage: f64,
    pub current: f64,
    pub temp: f64,
    pub cvl: f64,
    pub ccl: f64,
    pub dcl: f64,
    pub dvl: f64,
    pub modules: u8,
    pub manufacturer: String,
    /// Send 0x373 cell extremes.
    pub cells: bool,
    /// Slow sine drift of SOC, current, voltage and temperature.
    pub drift: bool,
    /// 0x35C request flags.
    pub requests: Requests,
}

impl Default for BatteryParams {
    /// The reference capture's values.
    fn default() -> Self {
        BatteryParams {
            soc: 88.0,
            soh: 94.0,
            voltage: 49.86,
            current: -27.0,
            temp: 36.3,
            cvl: 53.2,
            ccl: 480.0,
            dcl: 480.0,
            dvl: 45.0,
            modules: 6,
            manufacturer: "PYLON".into(),
            cells: true,
            drift: false,
            requests: Requests::NORMAL,
        }
    }
}

/// Alarms a simulated battery can raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimAlarms {
    pub flags: [u8; 4],
}

impl BatteryParams {
    /// The burst at `t` seconds after start, in a real stack's order: 0x359,
    /// 0x351, 0x355, 0x356, 0x35C, 0x35E and 0x373.
    pub fn burst(&self, t: f64, alarms: SimAlarms) -> Vec<Frame> {
        let (soc, current, voltage, temp) = if self.drift {
            let s = (t / 60.0).sin();
            (
                (self.soc + 5.0 * s).clamp(0.0, 100.0),
                self.current + 20.0 * (t / 15.0).sin(),
                self.voltage + 0.3 * s,
                self.temp + 1.5 * (t / 40.0).sin(),
            )
        } else {
            (self.soc, self.current, self.voltage, self.temp)
        };
        let mut messages = vec![
            Message::Flags(Flags {
                error_flags_1: alarms.flags[0],
                error_flags_2: alarms.flags[1],
                warning_flags_1: alarms.flags[2],
                warning_flags_2: alarms.flags[3],
                n_modules: self.modules,
            }),
            Message::Limits(Limits {
                v_charge_cmd: self.cvl,
                i_lim_charge: self.ccl,
                i_lim_discharge: self.dcl,
                v_discharge_min: Some(self.dvl),
            }),
            Message::StateOfCharge(StateOfCharge {
                soc,
                soh: self.soh,
                soc_hires: None,
            }),
            Message::Measurements(Measurements {
                v_avg: voltage,
                i_total: current,
                t_avg: temp,
            }),
            Message::Requests(self.requests),
        ];
        if let Some(m) = Manufacturer::new(&self.manufacturer) {
            messages.push(Message::Manufacturer(m));
        }
        if self.cells {
            // 15 LFP cells in series per 48 V module.
            let cell = (voltage / 15.0).clamp(2.5, 3.65);
            messages.push(Message::Cells(CellExtremes {
                v_cell_min: cell - 0.012,
                v_cell_max: cell + 0.013,
                t_cell_min: (temp - 4.0).round(),
                t_cell_max: (temp + 4.0).round(),
            }));
        }
        messages.iter().map(codec::encode).collect()
    }
}

/// What an inverter has seen of the virtual BMS: the latest decoded value of
/// each frame ID, and counters.
#[derive(Debug, Clone, Default)]
pub struct InverterView {
    pub latest: BTreeMap<u16, Message>,
    pub frames: u64,
    pub errors: u64,
}

impl InverterView {
    pub fn take(&mut self, frame: &Frame) {
        self.frames += 1;
        match codec::decode(frame) {
            Ok(Message::Other { .. }) | Ok(Message::KeepAlive) => {}
            Ok(m) => {
                if let crate::frame::CanId::Standard(id) = frame.id {
                    self.latest.insert(id, m);
                }
            }
            Err(_) => self.errors += 1,
        }
    }

    pub fn limits(&self) -> Option<Limits> {
        match self.latest.get(&codec::ID_LIMITS) {
            Some(Message::Limits(l)) => Some(*l),
            _ => None,
        }
    }

    pub fn soc(&self) -> Option<StateOfCharge> {
        match self.latest.get(&codec::ID_SOC) {
            Some(Message::StateOfCharge(s)) => Some(*s),
            _ => None,
        }
    }

    pub fn measurements(&self) -> Option<Measurements> {
        match self.latest.get(&codec::ID_MEASUREMENTS) {
            Some(Message::Measurements(m)) => Some(*m),
            _ => None,
        }
    }

    /// The 0x359 flags, or what the 0x35A alarms mean for profiles that
    /// send only those.
    pub fn flags(&self) -> Option<Flags> {
        match (
            self.latest.get(&codec::ID_FLAGS),
            self.latest.get(&codec::ID_SMA_ALARMS),
        ) {
            (Some(Message::Flags(f)), _) => Some(*f),
            (_, Some(Message::SmaAlarms(a))) => Some(a.to_flags()),
            _ => None,
        }
    }

    pub fn requests(&self) -> Option<Requests> {
        match self.latest.get(&codec::ID_REQUESTS) {
            Some(Message::Requests(r)) => Some(*r),
            _ => None,
        }
    }
}

/// Open-circuit voltage (V) over SOC (%) of a 15-cell LFP pack: steep at
/// both ends, nearly flat between.
const OCV_CURVE: [(f64, f64); 7] = [
    (0.0, 45.0),
    (5.0, 47.0),
    (10.0, 48.0),
    (30.0, 49.6),
    (60.0, 50.2),
    (90.0, 51.0),
    (100.0, 53.0),
];

/// The open-circuit voltage at `soc` (%), linear between the curve's points.
pub fn ocv(soc: f64) -> f64 {
    let soc = soc.clamp(0.0, 100.0);
    let upper = OCV_CURVE
        .iter()
        .position(|&(s, _)| s >= soc)
        .unwrap_or(OCV_CURVE.len() - 1)
        .max(1);
    let ((s0, v0), (s1, v1)) = (OCV_CURVE[upper - 1], OCV_CURVE[upper]);
    v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
}

/// One pack of a parallel bank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackModel {
    pub capacity_ah: f64,
    /// Internal resistance (ohm), cables included.
    pub resistance: f64,
    /// State of charge, %.
    pub soc: f64,
}

/// Packs in parallel on one DC bus.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelBank {
    pub packs: Vec<PackModel>,
}

impl ParallelBank {
    /// The bus voltage when the bank as a whole takes `total` A (+ =
    /// charging), and each pack's current into `currents`: every pack sees
    /// the bus voltage, I_i = (V - OCV_i) / R_i, and the currents sum to
    /// `total`, so V = (total + sum of OCV_i / R_i) / (sum of 1 / R_i).
    pub fn split(&self, total: f64, currents: &mut [f64]) -> f64 {
        let conductance: f64 = self.packs.iter().map(|p| 1.0 / p.resistance).sum();
        let driven: f64 = self.packs.iter().map(|p| ocv(p.soc) / p.resistance).sum();
        let bus = (total + driven) / conductance;
        for (i, p) in currents.iter_mut().zip(&self.packs) {
            *i = (bus - ocv(p.soc)) / p.resistance;
        }
        bus
    }

    /// `dt` seconds at these currents: each pack's SOC moves by I dt / capacity.
    pub fn step(&mut self, currents: &[f64], dt: f64) {
        for (p, i) in self.packs.iter_mut().zip(currents) {
            p.soc = (p.soc + 100.0 * i * dt / 3600.0 / p.capacity_ah).clamp(0.0, 100.0);
        }
    }
}

/// What an inverter takes from (- ) or gives to (+) the bank: `demand_w`
/// (W, + = charging the battery) at the bus voltage, within the limits it was
/// sent, plus `overshoot` A beyond them for an inverter that ignores them.
pub fn inverter_current(demand_w: f64, bus_v: f64, limits: &Limits, overshoot: f64) -> f64 {
    let wanted = demand_w / bus_v.max(1.0);
    wanted.clamp(-(limits.i_lim_discharge + overshoot), limits.i_lim_charge + overshoot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_battery_sends_the_reference_vectors() {
        let burst = BatteryParams::default().burst(0.0, SimAlarms::default());
        let ids: Vec<u32> = burst.iter().map(|f| f.id.raw()).collect();
        assert_eq!(ids, [0x359, 0x351, 0x355, 0x356, 0x35C, 0x35E, 0x373]);
        assert_eq!(burst[1].data(), &[0x14, 0x02, 0xC0, 0x12, 0xC0, 0x12, 0xC2, 0x01]);
        assert_eq!(burst[2].data(), &[0x58, 0x00, 0x5E, 0x00]);
        assert_eq!(burst[3].data(), &[0x7A, 0x13, 0xF2, 0xFE, 0x6B, 0x01]);
        assert_eq!(burst[0].data(), &[0, 0, 0, 0, 6, 0x50, 0x4E]);
    }

    #[test]
    fn the_ocv_curve_is_linear_between_its_points() {
        assert_eq!(ocv(0.0), 45.0);
        assert_eq!(ocv(100.0), 53.0);
        // Half-way from 30 % (49.6 V) to 60 % (50.2 V).
        assert!((ocv(45.0) - 49.9).abs() < 1e-12);
        assert_eq!(ocv(150.0), 53.0);
    }

    #[test]
    fn parallel_packs_split_by_resistance_and_state_of_charge() {
        let pack = |resistance, soc| PackModel {
            capacity_ah: 100.0,
            resistance,
            soc,
        };
        // Same SOC: the split follows the conductances 1/0.01 : 1/0.02 = 2 : 1.
        let bank = ParallelBank {
            packs: vec![pack(0.01, 50.0), pack(0.02, 50.0)],
        };
        let mut i = [0.0; 2];
        let bus = bank.split(90.0, &mut i);
        assert!((i[0] - 60.0).abs() < 1e-9 && (i[1] - 30.0).abs() < 1e-9, "{i:?}");
        // 60 A through 10 mOhm: 0.6 V above the OCV at 50 % (50.0 V).
        assert!((bus - 50.6).abs() < 1e-9, "{bus}");
        // Idle, different SOC: the fuller pack (60 %: 50.2 V) charges the
        // emptier (30 %: 49.6 V): 0.6 V / 20 mOhm = 30 A circulating.
        let bank = ParallelBank {
            packs: vec![pack(0.01, 30.0), pack(0.01, 60.0)],
        };
        bank.split(0.0, &mut i);
        assert!((i[0] - 30.0).abs() < 1e-9 && (i[1] + 30.0).abs() < 1e-9, "{i:?}");
        let mut bank = bank;
        bank.step(&[36.0, -36.0], 3600.0);
        // 36 Ah into 100 Ah: +36 %, -36 %.
        assert!((bank.packs[0].soc - 66.0).abs() < 1e-9 && (bank.packs[1].soc - 24.0).abs() < 1e-9);
    }

    #[test]
    fn an_inverter_takes_its_demand_within_its_limits_unless_it_overshoots() {
        let limits = Limits {
            v_charge_cmd: 53.2,
            i_lim_charge: 50.0,
            i_lim_discharge: 80.0,
            v_discharge_min: None,
        };
        assert_eq!(inverter_current(1000.0, 50.0, &limits, 0.0), 20.0);
        assert_eq!(inverter_current(5000.0, 50.0, &limits, 0.0), 50.0);
        assert_eq!(inverter_current(-5000.0, 50.0, &limits, 0.0), -80.0);
        assert_eq!(inverter_current(5000.0, 50.0, &limits, 15.0), 65.0);
    }

    #[test]
    fn an_inverter_view_keeps_the_latest_of_each_frame() {
        let mut v = InverterView::default();
        for f in BatteryParams::default().burst(0.0, SimAlarms::default()) {
            v.take(&f);
        }
        v.take(&Frame::standard(0x355, &[1]));
        assert_eq!(v.frames, 8);
        assert_eq!(v.errors, 1);
        assert_eq!(v.soc().unwrap().soc, 88.0);
        assert_eq!(v.limits().unwrap().v_charge_cmd, 53.2);
    }
}
