//! One poll cycle of one pack (its 0x42 and 0x92 answers, and its 0x44
//! answer when the cycle asked for it) made into the [`Telegram`] a CAN
//! input makes, so the combiner treats both alike (spec 18; the table is in
//! docs/rs485.md, "Mapping").
//!
//! A [`Cycle`] holds the answers of one cycle only, by value: a telegram can
//! never take a field from an older cycle. A cycle whose pack voltage is far
//! from the sum of its cells, or with a value outside physical range, is
//! refused with a [`CycleError`] (the caller counts it and uses nothing).

use super::responses::{AlarmState, Alarms, ChargeManagement, PackAnalog};
use crate::codec::{
    CellExtremes, FLAG_BITS, FlagByte, Flags, Limits, Measurements, PERCENT_MAX, Requests, StateOfCharge,
    TEMPERATURE_RANGE, VOLTAGE_RANGE,
};
use crate::telegram::{CellReadings, Telegram};
use thiserror::Error;

/// How far the pack voltage may be from the sum of its cells: 5 % of the
/// sum. The two differ by the drop across busbars, shunt and MOSFETs (about
/// 1 V at 100 A through 10 mOhm, 2 % of a 48 V pack) and by the two
/// measurements' tolerances; the captures agree within 0.01 %. What the
/// check is for is far bigger: a wrong protocol's scale (Seplos volts read
/// as Pylon's: 10x, 90 %), a misread layout, a missing cell (1 of 15 is
/// 6.7 %).
pub const PLAUSIBILITY_TOLERANCE: f64 = 0.05;

/// The answers of one poll cycle of one pack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cycle {
    /// 0x42.
    pub analog: PackAnalog,
    /// 0x92.
    pub management: ChargeManagement,
    /// 0x44, when this cycle asked for it.
    pub alarms: Option<Alarms>,
}

/// Why a cycle makes no telegram.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum CycleError {
    #[error("pack voltage {pack_v} V is not the sum of its cells, {cells_v} V (more than 5 % apart)")]
    Implausible { pack_v: f64, cells_v: f64 },
    #[error("{field} = {value} is outside {min}..{max}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("no total capacity: the state of charge cannot be worked out")]
    NoCapacity,
    #[error(
        "the 0x44 answer announces {alarm_cells} cells and {alarm_temperatures} temperatures, the 0x42 answer {cells} and {temperatures}: not the same pack's answers"
    )]
    Mismatched {
        alarm_cells: usize,
        alarm_temperatures: usize,
        cells: usize,
        temperatures: usize,
    },
}

/// A pack's 0x44 answer announces the cells and temperatures its 0x42
/// answer has (reference §3.4: "same order as in 0x42"). Answers carry no
/// command code, so one to another request arriving late, in 0x44's wait,
/// is told by its shape: its counts differ.
fn check_same_pack(pack: &PackAnalog, alarms: &Alarms) -> Result<(), CycleError> {
    let (alarm_cells, alarm_temperatures) = (alarms.cell_states().count(), alarms.temperature_states().count());
    let (cells, temperatures) = (pack.cells_mv().len(), pack.temperatures().len());
    if (alarm_cells, alarm_temperatures) == (cells, temperatures) {
        Ok(())
    } else {
        Err(CycleError::Mismatched {
            alarm_cells,
            alarm_temperatures,
            cells,
            temperatures,
        })
    }
}

fn in_range(field: &'static str, value: f64, (min, max): (f64, f64)) -> Result<f64, CycleError> {
    if value >= min && value <= max {
        Ok(value)
    } else {
        Err(CycleError::OutOfRange { field, value, min, max })
    }
}

/// The plausibility check: the pack voltage within
/// [`PLAUSIBILITY_TOLERANCE`] of the sum of its cells.
pub fn check_plausible(pack: &PackAnalog) -> Result<(), CycleError> {
    let cells_v = pack.cells_mv().iter().map(|&mv| f64::from(mv)).sum::<f64>() / 1000.0;
    if (pack.voltage - cells_v).abs() <= PLAUSIBILITY_TOLERANCE * cells_v {
        Ok(())
    } else {
        Err(CycleError::Implausible {
            pack_v: pack.voltage,
            cells_v,
        })
    }
}

impl Cycle {
    /// The cycle's telegram, or why it has none.
    pub fn telegram(&self) -> Result<Telegram, CycleError> {
        let pack = &self.analog;
        check_plausible(pack)?;
        if let Some(alarms) = &self.alarms {
            check_same_pack(pack, alarms)?;
        }
        let m = &self.management;
        let total = pack.full_ah.filter(|&t| t > 0.0).ok_or(CycleError::NoCapacity)?;
        let soc = in_range("soc", 100.0 * pack.remaining_ah / total, (0.0, PERCENT_MAX))?;
        let temperatures = pack.temperatures();
        let mut coldest = f64::INFINITY;
        let mut warmest = f64::NEG_INFINITY;
        for &t in temperatures {
            in_range("temperature", t, TEMPERATURE_RANGE)?;
            coldest = coldest.min(t);
            warmest = warmest.max(t);
        }
        let mean = temperatures.iter().sum::<f64>() / temperatures.len() as f64;
        let cells = pack.cells_mv();
        let cell_v = |mv: Option<&u16>| f64::from(mv.copied().unwrap_or(0)) / 1000.0;
        Ok(Telegram {
            limits: Limits {
                v_charge_cmd: in_range("cvl", m.cvl, VOLTAGE_RANGE)?,
                i_lim_charge: m.ccl,
                i_lim_discharge: m.dcl,
                // 0 V: none sent, as in 0x351.
                v_discharge_min: if m.dvl > 0.0 {
                    Some(in_range("dvl", m.dvl, VOLTAGE_RANGE)?)
                } else {
                    None
                },
            },
            soc: StateOfCharge {
                soc,
                soh: in_range("soh", soh(pack), (0.0, PERCENT_MAX))?,
                soc_hires: None,
            },
            measurements: Measurements {
                v_avg: in_range("voltage", pack.voltage, VOLTAGE_RANGE)?,
                i_total: pack.current,
                t_avg: mean,
            },
            flags: self.alarms.map(|a| flags(&a)).unwrap_or(Flags {
                n_modules: 1,
                ..Flags::default()
            }),
            requests: Some(requests(m.status)),
            manufacturer: None,
            cells: Some(CellExtremes {
                v_cell_min: cell_v(cells.iter().min()),
                v_cell_max: cell_v(cells.iter().max()),
                t_cell_min: coldest,
                t_cell_max: warmest,
            }),
            energy: None,
            cell_readings: CellReadings::new(cells, temperatures),
        })
    }
}

/// SOH: Seplos sends it; PACE's full over design capacity; Pylontech sends
/// none, and 100 % is assumed (docs/rs485.md).
fn soh(pack: &PackAnalog) -> f64 {
    let ratio = match (pack.full_ah, pack.design_ah) {
        (Some(full), Some(design)) if design > 0.0 => Some((100.0 * full / design).min(PERCENT_MAX)),
        _ => None,
    };
    pack.soh.or(ratio).unwrap_or(PERCENT_MAX)
}

/// 0x92's status byte: the same bits as 0x35C's (reference §3.6).
pub fn requests(status: u8) -> Requests {
    Requests {
        charge_enable: status & 0x80 != 0,
        discharge_enable: status & 0x40 != 0,
        force_charge_request: status & 0x20 != 0,
        force_charge_request_2: status & 0x10 != 0,
        balancing_charge_request: status & 0x08 != 0,
    }
}

/// The 0x359 bits (by their key in [`FLAG_BITS`]) that the mapping sets.
pub(super) mod key {
    pub const OVER_VOLTAGE: &str = "protection_over_voltage";
    pub const UNDER_VOLTAGE: &str = "protection_under_voltage";
    pub const OVER_TEMPERATURE: &str = "protection_over_temperature";
    pub const DISCHARGE_OVER_CURRENT: &str = "protection_discharge_over_current";
    pub const CHARGE_OVER_CURRENT: &str = "protection_charge_over_current";
    pub const SYSTEM_ERROR: &str = "protection_system_error";
    pub const HIGH_VOLTAGE: &str = "alarm_high_voltage";
    pub const LOW_VOLTAGE: &str = "alarm_low_voltage";
    pub const HIGH_TEMPERATURE: &str = "alarm_high_temperature";
    pub const LOW_TEMPERATURE: &str = "alarm_low_temperature";
    pub const DISCHARGE_HIGH_CURRENT: &str = "alarm_discharge_high_current";
    pub const CHARGE_HIGH_CURRENT: &str = "alarm_charge_high_current";
}

/// Sets the 0x359 bit named `key` (one table, codec's [`FLAG_BITS`]).
fn set(flags: &mut Flags, key: &str) {
    if let Some(bit) = FLAG_BITS.iter().find(|b| b.key == key) {
        let byte = match bit.byte {
            FlagByte::Protection1 => &mut flags.error_flags_1,
            FlagByte::Protection2 => &mut flags.error_flags_2,
            FlagByte::Alarm1 => &mut flags.warning_flags_1,
            FlagByte::Alarm2 => &mut flags.warning_flags_2,
        };
        *byte |= bit.mask;
    }
}

/// A state byte beyond a limit raises the alarm named for that side.
fn alarm_on(flags: &mut Flags, state: AlarmState, below: &str, above: &str) {
    match state {
        AlarmState::BelowLimit => set(flags, below),
        AlarmState::AboveLimit => set(flags, above),
        AlarmState::Normal | AlarmState::Other(_) => {}
    }
}

/// The 0x359 bytes of a 0x44 answer (docs/rs485.md, "Alarms").
fn flags(alarms: &Alarms) -> Flags {
    let mut f = Flags {
        n_modules: 1,
        ..Flags::default()
    };
    for state in alarms.cell_states() {
        alarm_on(&mut f, state, key::LOW_VOLTAGE, key::HIGH_VOLTAGE);
    }
    for state in alarms.temperature_states() {
        alarm_on(&mut f, state, key::LOW_TEMPERATURE, key::HIGH_TEMPERATURE);
    }
    if let Some(p) = alarms.pylon {
        alarm_on(&mut f, p.module_voltage, key::LOW_VOLTAGE, key::HIGH_VOLTAGE);
        if p.charge_current == AlarmState::AboveLimit {
            set(&mut f, key::CHARGE_HIGH_CURRENT);
        }
        if p.discharge_current == AlarmState::AboveLimit {
            set(&mut f, key::DISCHARGE_HIGH_CURRENT);
        }
        let [status1, _, _, faulty_low, faulty_high] = p.status;
        let protections = [
            (0x80, key::UNDER_VOLTAGE),
            (0x40, key::OVER_TEMPERATURE),
            (0x20, key::OVER_TEMPERATURE),
            (0x10, key::DISCHARGE_OVER_CURRENT),
            (0x04, key::CHARGE_OVER_CURRENT),
            (0x02, key::UNDER_VOLTAGE),
            (0x01, key::OVER_VOLTAGE),
        ];
        for (mask, name) in protections {
            if status1 & mask != 0 {
                set(&mut f, name);
            }
        }
        if faulty_low | faulty_high != 0 {
            set(&mut f, key::SYSTEM_ERROR);
        }
    }
    f
}
