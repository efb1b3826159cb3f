//! The reader: configuration text to a [`Config`], or every problem found,
//! each naming the key, its line and column, and what is allowed. The
//! section readers are here; the typed value readers they share (numbers,
//! durations, strings, choices) and the unknown-key check are in `values`.

use super::keys::{self, bmses_in};
use super::schema::{
    Config, HttpConfig, InputConfig, MqttConfig, OutputConfig, OutputMode, RecorderConfig, SerialInput, TlsConfig,
};
use super::values::kind;
use crate::bank::{BankSettings, LimitMode, PerKind};
use crate::codec::Manufacturer;
use crate::combine::{BatterySettings, InverterShare, OnInputLost};
use crate::dead_link::{RECOVER_AFTER_RANGE, RecoverMode, RecoverySettings};
use crate::policy::{ChargeStop, Curve, OnPackForbids, Policy, SocMode, Taper};
use crate::profile::{Profile, SocWindow, VoltageUnit};
use crate::setpoint::LimitKind;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem concerns the file as a whole.
    pub line: usize,
    pub column: usize,
    /// The key as the user would look for it, e.g. `[battery] STALE-TIMEOUT`.
    pub key: String,
    pub message: String,
}

/// Why a configuration file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub kind: ConfigErrorKind,
    pub problems: Vec<Problem>,
}

/// What went wrong with a configuration file, for the hint to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file could not be read (missing, not permitted...).
    Unreadable,
    /// The file was read and is not a valid configuration.
    Invalid,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {} problem{}",
            self.path.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}:{}:{}: ", self.path.display(), p.line, p.column)?;
            if !p.key.is_empty() {
                write!(f, "{}: ", p.key)?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        kind: ConfigErrorKind::Unreadable,
        problems: vec![Problem {
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(&text).map_err(|problems| ConfigError {
        path: path.to_path_buf(),
        kind: ConfigErrorKind::Invalid,
        problems,
    })
}

/// Validates configuration text; every problem found is reported.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let mut reader = Reader {
        text,
        problems: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            reader.problem(span, "", format!("not valid TOML: {message}"));
            return Err(reader.problems);
        }
    };
    let config = reader.config(root.get_ref());
    match (config, reader.problems.is_empty()) {
        (Some(c), true) => Ok(c),
        _ => Err(reader.problems),
    }
}

/// The `[[bmses-in]]` keys that only a serial input takes.
const SERIAL_ONLY_KEYS: [&str; 4] = [
    bmses_in::ADDRESS,
    bmses_in::BAUD,
    bmses_in::PROTOCOL,
    bmses_in::RS485_MODE,
];
/// `[[bmses-out]] PROFILE` values, as `Profile::name` spells them.
const PROFILES: [&str; 6] = ["pylon", "pylon-v2", "victron", "sma", "solark", "luxpower"];

/// The largest current a limit field can carry (s16, 0.1 A).
const MAX_CURRENT: f64 = 3276.7;

/// Walks the parsed document, collecting problems.
pub(super) struct Reader<'t> {
    pub(super) text: &'t str,
    pub(super) problems: Vec<Problem>,
}

/// One table of the document and the name it is reported under.
pub(super) struct Section<'a, 'i> {
    pub(super) table: &'a DeTable<'i>,
    /// e.g. "[battery] " or "[[bmses-in]] #2 ".
    pub(super) label: String,
    /// Where the table starts, for "missing key" problems.
    pub(super) span: Range<usize>,
}

impl<'a, 'i> Section<'a, 'i> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.table.get(key)
    }

    pub(super) fn name(&self, key: &str) -> String {
        format!("{}{key}", self.label)
    }
}

impl<'t> Reader<'t> {
    fn config(&mut self, root: &DeTable) -> Option<Config> {
        use super::keys::top::*;
        let top = Section {
            table: root,
            label: String::new(),
            span: 0..0,
        };
        self.unknown_keys(&top, &keys::top_level());
        let gateway_activated = match top.get(GATEWAY_ACTIVATED) {
            Some(v) => self.boolean(&top, GATEWAY_ACTIVATED, v),
            None => {
                self.problem(
                    0..0,
                    GATEWAY_ACTIVATED,
                    "missing: set it to true to run the gateway".into(),
                );
                None
            }
        };
        let battery = self.table(&top, keys::battery::NAME).map(|s| self.battery(&s));
        let inputs = self.array_of_tables(&top, keys::bmses_in::NAME);
        let outputs = self.array_of_tables(&top, keys::bmses_out::NAME);
        let inputs: Vec<Option<InputConfig>> = inputs.iter().map(|s| self.input(s)).collect();
        let outputs: Vec<Option<OutputConfig>> = outputs.iter().map(|s| self.output(s)).collect();
        let mqtt = self.table(&top, keys::mqtt::NAME).map(|s| self.mqtt(&s));
        let http = self.table(&top, keys::http::NAME).map(|s| self.http(&s));
        let recorder = self.table(&top, keys::recorder::NAME).map(|s| self.recorder(&s));
        let can = self.table(&top, keys::can::NAME).map(|s| self.can(&s));
        let state_dir = top
            .get(STATE_DIR)
            .map(|_| PathBuf::from(self.nonempty_or(&top, STATE_DIR, "")));
        if inputs.is_empty() {
            self.problem(0..0, "[[bmses-in]]", "at least one battery input is needed".into());
        }
        if outputs.is_empty() {
            self.problem(0..0, "[[bmses-out]]", "at least one inverter output is needed".into());
        }
        self.interfaces_used_once(root);
        self.serial_inputs_distinct(root, &inputs);
        Some(Config {
            gateway_activated: gateway_activated?,
            battery: battery.unwrap_or(Some(BatterySettings::default()))?,
            inputs: inputs.into_iter().collect::<Option<Vec<_>>>()?,
            outputs: outputs.into_iter().collect::<Option<Vec<_>>>()?,
            mqtt: mqtt.unwrap_or(Some(MqttConfig::default()))?,
            state_dir,
            http: http.unwrap_or(Some(HttpConfig::default()))?,
            recorder: recorder.unwrap_or_default(),
            can: can.unwrap_or_default(),
        })
    }

    fn recorder(&mut self, s: &Section) -> RecorderConfig {
        use super::keys::recorder::*;
        self.unknown_keys(s, keys::recorder::ALL);
        let d = RecorderConfig::default();
        RecorderConfig {
            seconds: self.whole_or(s, SECONDS, d.seconds, (0, RecorderConfig::MAX_SECONDS)),
            keep: self.whole_or(s, KEEP, d.keep, (1, RecorderConfig::MAX_KEEP)),
        }
    }

    fn can(&mut self, s: &Section) -> RecoverySettings {
        use super::keys::can::*;
        self.unknown_keys(s, keys::can::ALL);
        let d = RecoverySettings::default();
        let mode = match self.choice(s, RECOVER, &["off", "bounce"]) {
            Some("bounce") => RecoverMode::Bounce,
            Some(_) => RecoverMode::Off,
            None => d.mode,
        };
        RecoverySettings {
            mode,
            after: self.seconds_or(s, RECOVER_AFTER, d.after, RECOVER_AFTER_RANGE),
        }
    }

    fn http(&mut self, s: &Section) -> Option<HttpConfig> {
        use super::keys::http::*;
        self.unknown_keys(s, keys::http::ALL);
        let d = HttpConfig::default();
        let activated = s
            .get(ACTIVATED)
            .map_or(Some(d.activated), |v| self.boolean(s, ACTIVATED, v));
        let listen = match s.get(LISTEN) {
            None => Some(d.listen),
            Some(v) => {
                let text = self.string(s, LISTEN, v)?;
                let parsed = text.parse::<std::net::SocketAddr>().ok();
                if parsed.is_none() {
                    self.problem(
                        v.span(),
                        &s.name(LISTEN),
                        format!(
                            "{text:?} is not an address and port: e.g. \"127.0.0.1:8080\" (this machine only) or \"0.0.0.0:8080\" (the LAN)"
                        ),
                    );
                }
                parsed
            }
        };
        Some(HttpConfig {
            activated: activated?,
            listen: listen?,
        })
    }

    fn interfaces_used_once(&mut self, root: &DeTable) {
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

    fn table<'a, 'i>(&mut self, parent: &Section<'a, 'i>, key: &str) -> Option<Section<'a, 'i>> {
        let v = parent.get(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Section {
                table: t,
                label: format!("[{key}] "),
                span: v.span(),
            }),
            other => {
                self.problem(
                    v.span(),
                    &format!("[{key}]"),
                    format!("must be a table, not {}", kind(other)),
                );
                None
            }
        }
    }

    fn array_of_tables<'a, 'i>(&mut self, parent: &Section<'a, 'i>, key: &str) -> Vec<Section<'a, 'i>> {
        let Some(v) = parent.get(key) else { return Vec::new() };
        let DeValue::Array(items) = v.get_ref() else {
            self.problem(
                v.span(),
                &format!("[[{key}]]"),
                format!("must be written as [[{key}]] tables"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (n, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::Table(t) => out.push(Section {
                    table: t,
                    label: format!("[[{key}]] #{} ", n + 1),
                    span: item.span(),
                }),
                other => self.problem(
                    item.span(),
                    &format!("[[{key}]]"),
                    format!("must be a table, not {}", kind(other)),
                ),
            }
        }
        out
    }

    fn battery(&mut self, s: &Section) -> Option<BatterySettings> {
        use super::keys::battery::*;
        self.unknown_keys(s, keys::battery::ALL);
        let d = BatterySettings::default();
        let current = (0.0, MAX_CURRENT);
        Some(BatterySettings {
            i_lim_charge: self.number_or(s, I_LIM_CHARGE, d.i_lim_charge, current),
            i_lim_discharge: self.number_or(s, I_LIM_DISCHARGE, d.i_lim_discharge, current),
            i_tot_scaling: self.number_or(s, I_TOT_SCALING, d.i_tot_scaling, (0.0, 10.0)),
            i_tot_offset: self.number_or(s, I_TOT_OFFSET, d.i_tot_offset, (-1000.0, 1000.0)),
            stale_timeout: self.seconds_or(s, STALE_TIMEOUT, d.stale_timeout, (0.5, 3600.0)),
            // Never 0: it is what inverters are sent as their discharge floor.
            v_discharge_min: self.number_or(s, V_DISCHARGE_MIN, d.v_discharge_min, (1.0, 100.0)),
            on_input_lost: match self.choice(
                s,
                ON_INPUT_LOST,
                &[OnInputLost::Degrade.name(), OnInputLost::Stop.name()],
            ) {
                Some(name) if name == OnInputLost::Stop.name() => OnInputLost::Stop,
                _ => OnInputLost::Degrade,
            },
            bank: self.bank(s),
            policy: self.policy(s),
        })
    }

    /// The bank policy keys (spec 15).
    fn policy(&mut self, s: &Section) -> Policy {
        use super::keys::battery::*;
        Policy {
            derating: PerKind {
                charge: self.curve(s, TEMPERATURE_DERATING_CHARGE),
                discharge: self.curve(s, TEMPERATURE_DERATING_DISCHARGE),
            },
            charge_stop: self.charge_stop(s),
            soft_landing: PerKind {
                charge: self.taper(s, SOFT_LANDING_CHARGE, LimitKind::Charge),
                discharge: self.taper(s, SOFT_LANDING_DISCHARGE, LimitKind::Discharge),
            },
            soc_mode: match self.choice(s, SOC_MODE, &[SocMode::Weighted.name(), SocMode::Usable.name()]) {
                Some("usable") => SocMode::Usable,
                _ => SocMode::Weighted,
            },
        }
    }

    /// An array of numbers, each checked against `range`; `None` (with a
    /// problem) when it is not one.
    fn numbers<const N: usize>(
        &mut self,
        s: &Section,
        key: &str,
        v: &Spanned<DeValue>,
        range: (f64, f64),
        shape: &str,
    ) -> Option<[f64; N]> {
        let items = match v.get_ref() {
            DeValue::Array(items) if items.len() == N => items,
            other => {
                let found = match other {
                    DeValue::Array(items) => format!("{} values", items.len()),
                    other => kind(other).to_string(),
                };
                self.problem(v.span(), &s.name(key), format!("must be {shape}, not {found}"));
                return None;
            }
        };
        let mut out = [0.0; N];
        for (slot, item) in out.iter_mut().zip(items.iter()) {
            *slot = self.number(s, key, item, range)?;
        }
        Some(out)
    }

    /// `[[degC, factor], ...]`: a derating curve.
    fn curve(&mut self, s: &Section, key: &str) -> Option<Curve> {
        let v = s.get(key)?;
        let shape = "an array of [degC, factor] pairs, e.g. [[0, 0.2], [10, 1.0], [45, 1.0], [55, 0.0]]";
        let DeValue::Array(items) = v.get_ref() else {
            self.problem(
                v.span(),
                &s.name(key),
                format!("must be {shape}, not {}", kind(v.get_ref())),
            );
            return None;
        };
        let mut points = [(0.0, 0.0); crate::policy::MAX_POINTS];
        if items.len() > points.len() {
            let message = format!("has {} points: at most {}", items.len(), points.len());
            self.problem(v.span(), &s.name(key), message);
            return None;
        }
        for (slot, item) in points.iter_mut().zip(items.iter()) {
            let [t, k] = self.numbers::<2>(s, key, item, (-50.0, 150.0), "a [degC, factor] pair")?;
            *slot = (t, k);
        }
        match Curve::new(&points[..items.len()]) {
            Ok(curve) => Some(curve),
            Err(e) => {
                self.problem(v.span(), &s.name(key), e.to_string());
                None
            }
        }
    }

    /// `[soc_from, soc_to]`: toward full for charging (from < to), toward
    /// empty for discharging (from > to).
    fn taper(&mut self, s: &Section, key: &str, kind: LimitKind) -> Option<Taper> {
        let v = s.get(key)?;
        let [from, to] = self.numbers::<2>(s, key, v, (0.0, 100.0), "[soc_from, soc_to] in %")?;
        let (ok, rule) = match kind {
            LimitKind::Charge => (from < to, "soc_from below soc_to (the taper runs toward full)"),
            LimitKind::Discharge => (from > to, "soc_from above soc_to (the taper runs toward empty)"),
        };
        if !ok {
            self.problem(v.span(), &s.name(key), format!("[{from}, {to}]: needs {rule}"));
            return None;
        }
        Some(Taper { from, to })
    }

    /// CHARGE-STOP-SOC and CHARGE-RESUME-SOC (resume below stop; without
    /// it, stop minus the default gap).
    fn charge_stop(&mut self, s: &Section) -> Option<ChargeStop> {
        use super::keys::battery::*;
        let stop = s
            .get(CHARGE_STOP_SOC)
            .and_then(|v| self.number(s, CHARGE_STOP_SOC, v, (0.0, 100.0)));
        let resume_value = s.get(CHARGE_RESUME_SOC);
        let resume = resume_value.and_then(|v| self.number(s, CHARGE_RESUME_SOC, v, (0.0, 100.0)));
        match (stop, resume) {
            (None, Some(_)) if s.get(CHARGE_STOP_SOC).is_none() => {
                let span = resume_value.map_or(s.span.clone(), |v| v.span());
                let message = "has no effect without CHARGE-STOP-SOC: set both".to_string();
                self.problem(span, &s.name(CHARGE_RESUME_SOC), message);
                None
            }
            (Some(stop), Some(resume)) if resume >= stop => {
                let span = resume_value.map_or(s.span.clone(), |v| v.span());
                let message = format!(
                    "{resume} must be below CHARGE-STOP-SOC ({stop}): charging resumes once the SOC falls below it"
                );
                self.problem(span, &s.name(CHARGE_RESUME_SOC), message);
                None
            }
            (Some(stop), resume) => Some(ChargeStop {
                stop,
                resume: resume.unwrap_or((stop - crate::policy::DEFAULT_RESUME_GAP).max(0.0)),
            }),
            (None, _) => None,
        }
    }

    fn bank(&mut self, s: &Section) -> BankSettings {
        use super::keys::battery::*;
        let d = BankSettings::default();
        BankSettings {
            mode: match self.choice(s, LIMIT_MODE, &["share", "sum"]) {
                Some("sum") => LimitMode::Sum,
                _ => LimitMode::Share,
            },
            // Above 0: an idle bank's split (0 / 0) is never measured.
            share_min_current: self.number_or(s, SHARE_MIN_CURRENT, d.share_min_current, (0.1, 1000.0)),
            overcurrent_margin: self.number_or(s, OVERCURRENT_MARGIN, d.overcurrent_margin, (0.0, 1.0)),
            overshoot_time: self.seconds_or(s, OVERSHOOT_TIME, d.overshoot_time, (0.0, 3600.0)),
            on_pack_forbids: self.on_pack_forbids(s),
        }
    }

    /// ON-PACK-FORBIDS: "continue" needs the measured shares of share mode.
    fn on_pack_forbids(&mut self, s: &Section) -> OnPackForbids {
        use super::keys::battery::*;
        let names = [OnPackForbids::Stop.name(), OnPackForbids::Continue.name()];
        if self.choice(s, ON_PACK_FORBIDS, &names) != Some("continue") {
            return OnPackForbids::Stop;
        }
        let sum = (s.get(LIMIT_MODE).map(|v| v.get_ref()))
            .is_some_and(|v| matches!(v, DeValue::String(m) if m.eq_ignore_ascii_case("sum")));
        if sum {
            let span = s.get(ON_PACK_FORBIDS).map_or(s.span.clone(), |v| v.span());
            let message = "\"continue\" needs LIMIT-MODE = \"share\": only measured shares keep the other packs \
                           within their own limits when one drops out"
                .to_string();
            self.problem(span, &s.name(ON_PACK_FORBIDS), message);
        }
        OnPackForbids::Continue
    }

    fn input(&mut self, s: &Section) -> Option<InputConfig> {
        use super::keys::bmses_in::*;
        self.unknown_keys(s, keys::bmses_in::ALL);
        let (can_if, serial) = match (s.get(CAN_IF), s.get(SERIAL_PORT)) {
            (Some(_), Some(v)) => {
                self.problem(
                    v.span(),
                    &s.name(SERIAL_PORT),
                    "a battery is on CAN-IF or on SERIAL-PORT, not both: keep one".into(),
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
        for key in SERIAL_ONLY_KEYS {
            if let Some(v) = s.get(key) {
                self.problem(
                    v.span(),
                    &s.name(key),
                    "only for a battery on SERIAL-PORT (RS485), not on CAN-IF".into(),
                );
            }
        }
    }

    /// Each pack on a port once (one ADDRESS per port), and one line speed
    /// and direction control per port: the packs of a port share its wire.
    fn serial_inputs_distinct(&mut self, root: &DeTable, inputs: &[Option<InputConfig>]) {
        let mut seen: Vec<(usize, &SerialInput)> = Vec::new();
        for (n, input) in inputs.iter().enumerate() {
            let Some(serial) = input.as_ref().and_then(|i| i.serial.as_ref()) else {
                continue;
            };
            let here = format!("[[bmses-in]] #{}", n + 1);
            let span = serial_port_span(root, n);
            if let Some((first, _)) = seen
                .iter()
                .find(|(_, s)| s.port == serial.port && s.address == serial.address)
            {
                let message = format!(
                    "{} address {} is already polled by [[bmses-in]] #{}: each pack on a port needs its own ADDRESS",
                    serial.port,
                    serial.address,
                    first + 1
                );
                self.problem(span, &format!("{here} {}", bmses_in::ADDRESS), message);
            } else if let Some((first, other)) = seen
                .iter()
                .find(|(_, s)| s.port == serial.port && (s.baud, s.rs485_mode) != (serial.baud, serial.rs485_mode))
            {
                let message = format!(
                    "BAUD and RS485-MODE differ from [[bmses-in]] #{} on the same port {}: the packs of one port share its line ({} baud, RS485-MODE = {})",
                    first + 1,
                    serial.port,
                    other.baud,
                    other.rs485_mode
                );
                self.problem(span, &format!("{here} {}", bmses_in::BAUD), message);
            } else {
                seen.push((n, serial));
            }
        }
    }

    fn output(&mut self, s: &Section) -> Option<OutputConfig> {
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
                "SOC-MIN ({}) must be below SOC-MAX ({}): the window shown to the inverter is SOC-MIN..SOC-MAX",
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

    fn mqtt(&mut self, s: &Section) -> Option<MqttConfig> {
        use super::keys::mqtt::*;
        self.unknown_keys(s, keys::mqtt::ALL);
        let d = MqttConfig::default();
        let flag =
            |r: &mut Self, key: &str, default: bool| s.get(key).and_then(|v| r.boolean(s, key, v)).unwrap_or(default);
        let tls = flag(self, TLS, false);
        let path = |r: &mut Self, key: &str| s.get(key).map(|_| PathBuf::from(r.string_or(s, key, "")));
        let tls_files = TlsConfig {
            ca_file: path(self, CA_FILE),
            cert_file: path(self, CERT_FILE),
            key_file: path(self, KEY_FILE),
        };
        if tls_files.cert_file.is_some() != tls_files.key_file.is_some() {
            self.problem(
                s.span.clone(),
                &s.name(CERT_FILE),
                "CERT-FILE and KEY-FILE go together: set both or neither".into(),
            );
        }
        let port = self.port_or(s, PORT, d.port);
        let ttl = self.lifetime(s, SETPOINT_TTL);
        let ha_ttl = self.lifetime(s, HA_SETPOINT_TTL);
        Some(MqttConfig {
            activated: flag(self, ACTIVATED, d.activated),
            broker: self.nonempty_or(s, BROKER, &d.broker),
            port,
            topic: self.topic_or(s, TOPIC, &d.topic),
            interval: self.seconds_or(s, INTERVAL, d.interval, (0.1, 86400.0)),
            base_topic: self.topic_or(s, BASE_TOPIC, &d.base_topic),
            client_id: s.get(CLIENT_ID).map(|_| self.nonempty_or(s, CLIENT_ID, "bms-gateway")),
            username: s.get(USERNAME).map(|_| self.string_or(s, USERNAME, "")),
            password_file: path(self, PASSWORD_FILE),
            tls: tls.then_some(tls_files),
            ha_discovery: flag(self, HA_DISCOVERY, d.ha_discovery),
            ha_discovery_prefix: self.topic_or(s, HA_DISCOVERY_PREFIX, &d.ha_discovery_prefix),
            ha_cell_entities: flag(self, HA_CELL_ENTITIES, d.ha_cell_entities),
            control_activated: flag(self, CONTROL_ACTIVATED, d.control_activated),
            setpoint_ttl: ttl,
            ha_setpoint_ttl: ha_ttl,
        })
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
