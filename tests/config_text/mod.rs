//! Configuration file text for tests, built section by section, so that no
//! test spells out the same TOML by hand. Shared by the integration tests
//! (`mod config_text;`) and the library's unit tests (`crate::config_text`).

#![allow(dead_code)]

use std::fmt::Write as _;

/// A gateway configuration file: `GATEWAY-ACTIVATED = true` (and
/// `STATE-DIR` when set), then whatever sections are added, in file order.
#[derive(Debug, Clone, Default)]
pub struct ConfigText {
    top: String,
    battery: String,
    inputs: String,
    outputs: String,
    mqtt: String,
    http: String,
    recorder: String,
}

impl ConfigText {
    pub fn new() -> ConfigText {
        ConfigText::default()
    }

    /// `STATE-DIR`: where the state, history and recordings go.
    pub fn state_dir(mut self, dir: &std::path::Path) -> ConfigText {
        let _ = writeln!(self.top, "STATE-DIR = {dir:?}");
        self
    }

    /// Lines for `[battery]`, e.g. `"I-LIM-CHARGE = 300"`.
    pub fn battery(mut self, lines: &str) -> ConfigText {
        push_lines(&mut self.battery, lines);
        self
    }

    /// One `[[bmses-in]]` with its interface and capacity, and further lines.
    pub fn input(mut self, can_if: &str, capacity_ah: f64, lines: &str) -> ConfigText {
        let _ = writeln!(
            self.inputs,
            "[[bmses-in]]\nCAN-IF = \"{can_if}\"\nCAPACITY-AH = {capacity_ah}"
        );
        push_lines(&mut self.inputs, lines);
        self
    }

    /// One `[[bmses-out]]` with its interface, and further lines.
    pub fn output(mut self, can_if: &str, lines: &str) -> ConfigText {
        let _ = writeln!(self.outputs, "[[bmses-out]]\nCAN-IF = \"{can_if}\"");
        push_lines(&mut self.outputs, lines);
        self
    }

    /// Lines for `[mqtt]`, e.g. `"ACTIVATED = false"`.
    pub fn mqtt(mut self, lines: &str) -> ConfigText {
        push_lines(&mut self.mqtt, lines);
        self
    }

    /// Lines for `[http]`, e.g. `"LISTEN = \"127.0.0.1:0\""`.
    pub fn http(mut self, lines: &str) -> ConfigText {
        push_lines(&mut self.http, lines);
        self
    }

    /// Lines for `[recorder]`, e.g. `"SECONDS = 10"`.
    pub fn recorder(mut self, lines: &str) -> ConfigText {
        push_lines(&mut self.recorder, lines);
        self
    }

    /// `[mqtt]` for a test broker on 127.0.0.1:`port`: BASE-TOPIC `base`,
    /// TOPIC `tele/<base>/state`, INTERVAL 0.5 s, CLIENT-ID `<client>-<base>`.
    pub fn broker(self, port: u16, base: &str, client: &str) -> ConfigText {
        self.mqtt(&format!(
            "BROKER = \"127.0.0.1\"\nPORT = {port}\nBASE-TOPIC = \"{base}\"\nTOPIC = \"tele/{base}/state\"\n\
             INTERVAL = 0.5\nCLIENT-ID = \"{client}-{base}\""
        ))
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut t = format!("GATEWAY-ACTIVATED = true\n{}", self.top);
        if !self.battery.is_empty() {
            let _ = write!(t, "[battery]\n{}", self.battery);
        }
        t.push_str(&self.inputs);
        t.push_str(&self.outputs);
        for (name, lines) in [("mqtt", &self.mqtt), ("http", &self.http), ("recorder", &self.recorder)] {
            if !lines.is_empty() {
                let _ = write!(t, "[{name}]\n{lines}");
            }
        }
        t
    }
}

fn push_lines(section: &mut String, lines: &str) {
    for line in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
        section.push_str(line);
        section.push('\n');
    }
}
