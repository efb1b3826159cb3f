//! Simulated peers: a Pylontech battery and an inverter. Used by `demo` on the
//! virtual bus and by `sim-bms` / `sim-inverter` on real interfaces.
//!
//! The battery is a pure function of time (no clock read here), so the demo,
//! the simulators and the tests all produce the same frames for the same
//! parameters.

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
