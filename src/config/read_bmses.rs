//! The reader of `[[bmses-in]]` and `[[bmses-out]]`: the batteries, on a
//! CAN interface or a serial port (spec 18), and the inverters with their
//! shares, modes and profiles; and the checks across them (each CAN
//! interface used once, each pack on a port once, one line speed per port).

use super::keys::{self, bmses_in};
use super::read::{Reader, Section};
use super::schema::{InputConfig, OutputConfig, OutputMode, SerialInput};
use super::values::MAX_CURRENT;
use crate::codec::Manufacturer;
use crate::combine::InverterShare;
use crate::profile::{Profile, SocWindow, VoltageUnit};
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The `[[bmses-in]]` keys that only a serial input takes.
const SERIAL_ONLY_KEYS: [&str; 4] = [
    bmses_in::ADDRESS,
    bmses_in::BAUD,
    bmses_in::PROTOCOL,
    bmses_in::RS485_MODE,
];

/// `[[bmses-out]] PROFILE` values, as `Profile::name` spells them.
const PROFILES: [&str; 6] = ["pylon", "pylon-v2", "victron", "sma", "solark", "luxpower"];

impl Reader<'_> {
    /// Each CAN interface serves one battery or one inverter, once.
    pub(super) fn interfaces_used_once(&mut self, root: &DeTable) {
        let mut seen: Vec<(String, String)> = Vec::new();
        let arrays = [
            (keys::bmses_in::NAME, keys::bmses_in::CAN_IF),
            (keys::bmses_out::NAME, keys::bmses_out::CAN_IF),
        ];
        for (array, can_if) in arrays {
            let Some(DeValue::Array(items)) = root.get(array).map(|v| v.get_ref()) else {
                continue;
            };
            for (n, item) in items.iter().enumerate() {
                let DeValue::Table(t) = item.get_ref() else { continue };
                let Some(v) = t.get(can_if) else { continue };
                let DeValue::String(name) = v.get_ref() else { continue };
                let here = format!("[[{array}]] #{}", n + 1);
                if let Some((_, first)) = seen.iter().find(|(s, _)| s == name.as_ref()) {
                    let message = format!(
                        "interface {name} is already used by {first}: each CAN interface serves one battery or one inverter"
                    );
                    self.problem(v.span(), &format!("{here} {can_if}"), message);
                } else {
                    seen.push((name.to_string(), here));
                }
            }
        }
    }

    /// One `[[bmses-in]]`: a battery on CAN-IF or on SERIAL-PORT.
    pub(super) fn input(&mut self, s: &Section) -> Option<InputConfig> {
        use super::keys::bmses_in::*;
        self.unknown_keys(s, keys::bmses_in::ALL);
        let (can_if, serial) = match (s.get(CAN_IF), s.get(SERIAL_PORT)) {
            (Some(_), Some(v)) => {
                self.problem(
                    v.span(),
                    &s.name(SERIAL_PORT),
                    format!("a battery is on {CAN_IF} or on {SERIAL_PORT}, not both: keep one"),
                );
                (None, None)
            }
            (_, Some(v)) => {
                let serial = self.serial_input(s, v);
                (serial.as_ref().map(SerialInput::name), serial)
            }
            (_, None) => {
                self.no_serial_keys(s);
                (self.interface(s, CAN_IF), None)
            }
        };
        let capacity_ah = match s.get(CAPACITY_AH) {
            Some(v) => self.number(s, CAPACITY_AH, v, (f64::MIN_POSITIVE, 1.0e6)),
            None => {
                self.problem(
                    s.span.clone(),
                    &s.name(CAPACITY_AH),
                    "missing: the battery's capacity in Ah (a number > 0)".into(),
                );
                None
            }
        };
        let mut poll_interval = s
            .get(POLL_INTERVAL)
            .and_then(|v| self.seconds(s, POLL_INTERVAL, v, (0.05, 3600.0)));
        if serial.is_some() {
            poll_interval = poll_interval.or(Some(InputConfig::SERIAL_POLL_INTERVAL));
        }
        Some(InputConfig {
            can_if: can_if?,
            description: self.string_or(s, DESCRIPTION, ""),
            capacity_ah: capacity_ah?,
            poll_interval,
            serial,
        })
    }

    /// `SERIAL-PORT` and the keys that go with it.
    fn serial_input(&mut self, s: &Section, port: &Spanned<DeValue>) -> Option<SerialInput> {
        use super::keys::bmses_in::*;
        let path = self.string(s, SERIAL_PORT, port)?;
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            self.problem(
                port.span(),
                &s.name(SERIAL_PORT),
                format!("{path:?} is not a serial port: an absolute path such as \"/dev/serial/by-id/usb-...\" or \"/dev/ttyUSB0\""),
            );
            return None;
        }
        let address = self.whole_or(s, ADDRESS, 2, (0, 255)) as u8;
        let baud = self.whole_or(s, BAUD, 115_200, (1, u32::MAX));
        if !SerialInput::BAUDS.contains(&baud) {
            let v = s.get(BAUD).map_or(s.span.clone(), |v| v.span());
            self.problem(
                v,
                &s.name(BAUD),
                format!("{baud} is not allowed: one of 9600, 19200, 115200"),
            );
        }
        let names = crate::rs485::Protocol::ALL.map(|p| p.name());
        let protocol = match s.get(PROTOCOL) {
            Some(_) => self
                .choice(s, PROTOCOL, &names)
                .and_then(crate::rs485::Protocol::from_name),
            None => Some(crate::rs485::Protocol::Pylon),
        };
        let rs485_mode = match s.get(RS485_MODE) {
            Some(v) => self.boolean(s, RS485_MODE, v),
            None => Some(false),
        };
        Some(SerialInput {
            port: path,
            address,
            baud,
            protocol: protocol?,
            rs485_mode: rs485_mode?,
        })
    }

    /// A CAN battery given a serial-only key: said, not ignored.
    fn no_serial_keys(&mut self, s: &Section) {
        use super::keys::bmses_in::{CAN_IF, SERIAL_PORT};
        for key in SERIAL_ONLY_KEYS {
            if let Some(v) = s.get(key) {
                self.problem(
                    v.span(),
                    &s.name(key),
                    format!("only for a battery on {SERIAL_PORT} (RS485), not on {CAN_IF}"),
                );
            }
        }
    }

    /// Each pack on a port once (one ADDRESS per port), and one line speed
    /// and direction control per port: the packs of a port share its wire.
    pub(super) fn serial_inputs_distinct(&mut self, root: &DeTable, inputs: &[Option<InputConfig>]) {
        use super::keys::bmses_in::{ADDRESS, BAUD, NAME, RS485_MODE};
        let mut seen: Vec<(usize, &SerialInput)> = Vec::new();
        for (n, input) in inputs.iter().enumerate() {
            let Some(serial) = input.as_ref().and_then(|i| i.serial.as_ref()) else {
                continue;
            };
            let here = format!("[[{NAME}]] #{}", n + 1);
            let span = serial_port_span(root, n);
            if let Some((first, _)) = seen
                .iter()
                .find(|(_, s)| s.port == serial.port && s.address == serial.address)
            {
                let message = format!(
                    "{} address {} is already polled by [[{NAME}]] #{}: each pack on a port needs its own {ADDRESS}",
                    serial.port,
                    serial.address,
                    first + 1
                );
                self.problem(span, &format!("{here} {ADDRESS}"), message);
            } else if let Some((first, other)) = seen
                .iter()
                .find(|(_, s)| s.port == serial.port && (s.baud, s.rs485_mode) != (serial.baud, serial.rs485_mode))
            {
                let message = format!(
                    "{BAUD} and {RS485_MODE} differ from [[{NAME}]] #{} on the same port {}: the packs of one port share its line ({} baud, {RS485_MODE} = {})",
                    first + 1,
                    serial.port,
                    other.baud,
                    other.rs485_mode
                );
                self.problem(span, &format!("{here} {BAUD}"), message);
            } else {
                seen.push((n, serial));
            }
        }
    }

    /// One `[[bmses-out]]`: an inverter.
    pub(super) fn output(&mut self, s: &Section) -> Option<OutputConfig> {
        use super::keys::bmses_out::*;
        self.unknown_keys(s, keys::bmses_out::ALL);
        let can_if = self.interface(s, CAN_IF);
        let d = InverterShare::default();
        let current = (0.0, MAX_CURRENT);
        let share = InverterShare {
            i_lim_charge: self.number_or(s, I_LIM_CHARGE, d.i_lim_charge, current),
            i_lim_discharge: self.number_or(s, I_LIM_DISCHARGE, d.i_lim_discharge, current),
            i_scaling: self.number_or(s, I_SCALING, d.i_scaling, (0.0, 10.0)),
            i_offset: self.number_or(s, I_OFFSET, d.i_offset, (-1000.0, 1000.0)),
        };
        let push_min_delay = self.seconds_or(s, PUSH_MIN_DELAY, Duration::ZERO, (0.0, 60.0));
        let sync = s
            .get(SEND_SYNC_ACTIVATED)
            .and_then(|v| self.boolean(s, SEND_SYNC_ACTIVATED, v));
        let interval = self.seconds_or(s, SYNC_INTERVAL, Duration::from_secs(5), (0.1, 3600.0));
        let profile = self
            .choice(s, PROFILE, &PROFILES)
            .and_then(Profile::parse)
            .unwrap_or_default();
        if profile == Profile::Sma && sync == Some(true) {
            let span = s.get(SEND_SYNC_ACTIVATED).map_or(s.span.clone(), |v| v.span());
            let message = "not with PROFILE = \"sma\": sync mode sends the gateway's own 0x305, which is the Sunny Island's own frame, on a bus where SMA allows no other IDs; the Sunny Island is served in push mode".into();
            self.problem(span, &s.name(SEND_SYNC_ACTIVATED), message);
        }
        let manufacturer_name = self.string_or(s, MANUFACTURER, profile.default_manufacturer());
        let manufacturer = Manufacturer::new(&manufacturer_name);
        if manufacturer.is_none() {
            let span = s.get(MANUFACTURER).map_or(s.span.clone(), |v| v.span());
            self.problem(span, &s.name(MANUFACTURER), format!("{manufacturer_name:?} cannot be sent: 1 to 8 ASCII characters are allowed (some inverters accept only names starting with PYLON)"));
        }
        Some(OutputConfig {
            can_if: can_if?,
            description: self.string_or(s, DESCRIPTION, ""),
            share,
            push_min_delay,
            mode: if sync == Some(true) {
                OutputMode::Sync { interval }
            } else {
                OutputMode::Push
            },
            manufacturer: manufacturer?,
            profile,
            soc_window: self.soc_window(s)?,
            cvl_ramp: self.number_or(s, CVL_RAMP, 0.0, (0.0, 100.0)),
            inverter_timeout: Some(self.seconds_or(s, INVERTER_TIMEOUT, Duration::from_secs(10), (0.0, 3600.0)))
                .filter(|t| !t.is_zero()),
            voltage_unit: self.voltage_unit(s, profile),
        })
    }

    fn soc_window(&mut self, s: &Section) -> Option<SocWindow> {
        use super::keys::bmses_out::*;
        let d = SocWindow::default();
        let window = SocWindow {
            min: self.number_or(s, SOC_MIN, d.min, (0.0, 100.0)),
            max: self.number_or(s, SOC_MAX, d.max, (0.0, 100.0)),
        };
        if window.min >= window.max {
            let span = s.get(SOC_MAX).or(s.get(SOC_MIN)).map_or(s.span.clone(), |v| v.span());
            let message = format!(
                "{SOC_MIN} ({}) must be below {SOC_MAX} ({}): the window shown to the inverter is {SOC_MIN}..{SOC_MAX}",
                window.min, window.max
            );
            self.problem(span, &s.name(SOC_MAX), message);
            return None;
        }
        Some(window)
    }

    fn voltage_unit(&mut self, s: &Section, profile: Profile) -> VoltageUnit {
        use super::keys::bmses_out::*;
        let Some(v) = s.get(VOLTAGE_UNIT) else {
            return profile.default_voltage_unit();
        };
        let volts = self.number(s, VOLTAGE_UNIT, v, (0.0, 1.0));
        match volts.map(VoltageUnit::from_volts) {
            Some(Some(unit)) => unit,
            Some(None) => {
                let message = "must be 0.01 (V per count, as Pylontech sends it) or 0.1 (Sol-Ark's document)".into();
                self.problem(v.span(), &s.name(VOLTAGE_UNIT), message);
                profile.default_voltage_unit()
            }
            None => profile.default_voltage_unit(),
        }
    }

    /// `key` (CAN-IF): a CAN interface's name.
    fn interface(&mut self, s: &Section, key: &str) -> Option<String> {
        let Some(v) = s.get(key) else {
            self.problem(
                s.span.clone(),
                &s.name(key),
                "missing: the CAN interface name, e.g. \"can0\"".into(),
            );
            return None;
        };
        let name = self.string(s, key, v)?;
        let valid =
            !name.is_empty() && name.len() <= 15 && name.chars().all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if !valid {
            self.problem(
                v.span(),
                &s.name(key),
                format!("{name:?} is not an interface name: 1 to 15 characters, no spaces, '/' or ':'"),
            );
            return None;
        }
        Some(name)
    }
}

/// Where `[[bmses-in]]` number `n`'s SERIAL-PORT is written.
fn serial_port_span(root: &DeTable, n: usize) -> Range<usize> {
    let Some(DeValue::Array(items)) = root.get(keys::bmses_in::NAME).map(|v| v.get_ref()) else {
        return 0..0;
    };
    let Some(DeValue::Table(t)) = items.get(n).map(|i| i.get_ref()) else {
        return 0..0;
    };
    t.get(keys::bmses_in::SERIAL_PORT).map_or(0..0, |v| v.span())
}
