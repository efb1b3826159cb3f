//! The typed value readers the section readers share: a number in a range,
//! a duration, a whole number, a port, a boolean, a string, a topic, one of
//! a list of names; each reports a value it cannot take as one problem with
//! the key, line, column and what is allowed. Also the unknown-key check
//! with its "did you mean" hint.

use super::keys::mqtt;
use super::read::{Problem, Reader, Section};
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;
use toml::de::DeValue;

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The allowed key closest to `key`, if it is a near miss.
fn did_you_mean(key: &str, allowed: &[&str]) -> Option<String> {
    let norm = |s: &str| s.to_ascii_uppercase().replace('_', "-");
    allowed
        .iter()
        .map(|a| (edit_distance(&norm(key), &norm(a)), *a))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, a)| a.to_string())
}

/// The longest SETPOINT-TTL and HA-SETPOINT-TTL: the longest lifetime a
/// command may ask for.
const MAX_SETPOINT_TTL_S: f64 = crate::setpoint::MAX_TTL.as_secs_f64();

/// The largest current a limit field can carry (s16, 0.1 A).
pub(super) const MAX_CURRENT: f64 = 3276.7;

impl Reader<'_> {
    pub(super) fn problem(&mut self, span: Range<usize>, key: &str, message: String) {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        self.problems.push(Problem {
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    pub(super) fn unknown_keys(&mut self, section: &Section, allowed: &[&str]) {
        for (key, _) in section.table.iter() {
            let name = key.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            let mut message = "unknown key".to_string();
            if name.eq_ignore_ascii_case("PASSWORD") && allowed.contains(&mqtt::PASSWORD_FILE) {
                message = format!(
                    "the password is never read from the main config: put it in a file readable only by the \
                     gateway and name that file in {}",
                    mqtt::PASSWORD_FILE
                );
            } else if let Some(hint) = did_you_mean(name, allowed) {
                message.push_str(&format!(" (did you mean {hint}?)"));
            } else {
                message.push_str(&format!("; allowed here: {}", allowed.join(", ")));
            }
            self.problem(key.span(), &section.name(name), message);
        }
    }

    pub(super) fn number(&mut self, s: &Section, key: &str, v: &Spanned<DeValue>, range: (f64, f64)) -> Option<f64> {
        let allowed = if range.0 == f64::MIN_POSITIVE {
            format!("a number greater than 0 and at most {}", range.1)
        } else {
            format!("a number from {} to {}", range.0, range.1)
        };
        let value = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
                .ok()
                .map(|i| i as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => {
                self.problem(
                    v.span(),
                    &s.name(key),
                    format!("must be {allowed}, not {}", kind(other)),
                );
                return None;
            }
        };
        match value {
            Some(x) if x.is_finite() && x >= range.0 && x <= range.1 => Some(x),
            _ => {
                let raw = &self.text[v.span()];
                self.problem(
                    v.span(),
                    &s.name(key),
                    format!("{raw} is out of range: must be {allowed}"),
                );
                None
            }
        }
    }

    pub(super) fn number_or(&mut self, s: &Section, key: &str, default: f64, range: (f64, f64)) -> f64 {
        s.get(key)
            .and_then(|v| self.number(s, key, v, range))
            .unwrap_or(default)
    }

    pub(super) fn seconds(
        &mut self,
        s: &Section,
        key: &str,
        v: &Spanned<DeValue>,
        range: (f64, f64),
    ) -> Option<Duration> {
        self.number(s, key, v, range).map(Duration::from_secs_f64)
    }

    /// A setpoint lifetime: 0 (or absent) is "until changed"; a positive
    /// value too small to count (under 1 ns) is refused rather than read as
    /// 0, which would silently turn a short lifetime into no expiry.
    pub(super) fn lifetime(&mut self, s: &Section, key: &str) -> Option<Duration> {
        let v = s.get(key)?;
        let secs = self.number(s, key, v, (0.0, MAX_SETPOINT_TTL_S))?;
        let ttl = Duration::from_secs_f64(secs);
        if secs > 0.0 && ttl.is_zero() {
            self.problem(
                v.span(),
                &s.name(key),
                format!("{secs} s is too short to count (under 1 ns): use 0 for no expiry or at least 0.000000001"),
            );
        }
        (!ttl.is_zero()).then_some(ttl)
    }

    pub(super) fn seconds_or(&mut self, s: &Section, key: &str, default: Duration, range: (f64, f64)) -> Duration {
        s.get(key)
            .and_then(|v| self.seconds(s, key, v, range))
            .unwrap_or(default)
    }

    /// A whole number in `range` (inclusive), one problem otherwise.
    pub(super) fn whole_or(&mut self, s: &Section, key: &str, default: u32, range: (u32, u32)) -> u32 {
        let allowed = format!("must be a whole number from {} to {}", range.0, range.1);
        let Some(v) = s.get(key) else { return default };
        let message = match v.get_ref() {
            DeValue::Integer(i) => {
                let found = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
                    .ok()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (range.0..=range.1).contains(n));
                if let Some(n) = found {
                    return n;
                }
                format!("{} is out of range: {allowed}", &self.text[v.span()])
            }
            DeValue::Float(_) => allowed,
            other => format!("{allowed}, not {}", kind(other)),
        };
        self.problem(v.span(), &s.name(key), message);
        default
    }

    /// A TCP port: a whole number from 1 to 65535, one problem otherwise.
    pub(super) fn port_or(&mut self, s: &Section, key: &str, default: u16) -> u16 {
        let port = self.whole_or(s, key, u32::from(default), (1, u32::from(u16::MAX)));
        u16::try_from(port).unwrap_or(default)
    }

    pub(super) fn boolean(&mut self, s: &Section, key: &str, v: &Spanned<DeValue>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.problem(
                    v.span(),
                    &s.name(key),
                    format!("must be true or false, not {}", kind(other)),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, s: &Section, key: &str, v: &Spanned<DeValue>) -> Option<String> {
        match v.get_ref() {
            DeValue::String(text) => Some(text.to_string()),
            other => {
                self.problem(
                    v.span(),
                    &s.name(key),
                    format!("must be a quoted string, not {}", kind(other)),
                );
                None
            }
        }
    }

    pub(super) fn string_or(&mut self, s: &Section, key: &str, default: &str) -> String {
        s.get(key)
            .and_then(|v| self.string(s, key, v))
            .unwrap_or_else(|| default.to_string())
    }

    pub(super) fn nonempty_or(&mut self, s: &Section, key: &str, default: &str) -> String {
        let value = self.string_or(s, key, default);
        if value.trim().is_empty() {
            self.problem(
                s.get(key).map_or(0..0, |v| v.span()),
                &s.name(key),
                "must not be empty".into(),
            );
        }
        value
    }

    /// An MQTT topic to publish under: no wildcards, no empty levels at the ends.
    pub(super) fn topic_or(&mut self, s: &Section, key: &str, default: &str) -> String {
        let value = self.nonempty_or(s, key, default);
        if value.contains(['+', '#', '\0']) || value.starts_with('/') || value.ends_with('/') {
            self.problem(
                s.get(key).map_or(0..0, |v| v.span()),
                &s.name(key),
                format!("{value:?} is not a topic to publish to: no '+', '#', and no '/' at either end"),
            );
        }
        value
    }

    pub(super) fn choice(&mut self, s: &Section, key: &str, allowed: &[&'static str]) -> Option<&'static str> {
        let v = s.get(key)?;
        let text = self.string(s, key, v)?;
        let found = allowed.iter().find(|a| a.eq_ignore_ascii_case(&text)).copied();
        if found.is_none() {
            let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
            self.problem(
                v.span(),
                &s.name(key),
                format!("{text:?} is not allowed: one of {}", list.join(", ")),
            );
        }
        found
    }
}

pub(super) fn kind(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a decimal number",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
