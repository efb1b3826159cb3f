//! The reader: configuration text to a [`Config`], or every problem found,
//! each naming the key, its line and column, and what is allowed. Here: the
//! entry points, the walk over the document (the top level, `[mqtt]`,
//! `[http]`, `[recorder]`, `[can]`); `[battery]` is read in `read_battery`,
//! the batteries and inverters in `read_bmses`, and the typed values they
//! all share (numbers, durations, strings, choices) and the unknown-key
//! check in `values`.

use super::keys;
use super::schema::{Config, HttpConfig, InputConfig, MqttConfig, OutputConfig, RecorderConfig, TlsConfig};
use super::values::kind;
use crate::combine::BatterySettings;
use crate::dead_link::{RECOVER_AFTER_RANGE, RecoverMode, RecoverySettings};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
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
            let key = format!("[[{}]]", keys::bmses_in::NAME);
            self.problem(0..0, &key, "at least one battery input is needed".into());
        }
        if outputs.is_empty() {
            let key = format!("[[{}]]", keys::bmses_out::NAME);
            self.problem(0..0, &key, "at least one inverter output is needed".into());
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
                format!("{CERT_FILE} and {KEY_FILE} go together: set both or neither"),
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
}
