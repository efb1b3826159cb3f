//! The key table: every key of the configuration file, section by section,
//! each name written once. The reader looks keys up by these constants and
//! refuses any other key of a section (its "did you mean" hint and "allowed
//! here" list come from the same table), `check`'s report names the settings
//! by them, and a test holds the template etc/bms_config.toml to exactly
//! these keys, so that a key added, renamed or dropped in one of the three
//! places cannot go unnoticed in the others.

/// One module per section: `NAME`, the section's name in the file; a
/// constant per key, named as the key with `_` for `-`; `ALL`, the keys in
/// the order the "allowed here" list gives them. Also `SECTIONS`, every
/// section below the top level in file order.
macro_rules! key_table {
    (
        $(#[$top_doc:meta])* top { $($top_constant:ident = $top_key:literal,)* }
        $( $(#[$doc:meta])* $section:ident = $name:literal { $($constant:ident = $key:literal,)* } )*
    ) => {
        $(#[$top_doc])*
        pub mod top {
            $(pub const $top_constant: &str = $top_key;)*
            /// The keys of the top level, sections left out.
            pub const ALL: &[&str] = &[$($top_constant),*];
            /// Each constant's name beside its key, for the test that they match.
            #[cfg(test)]
            pub const SPELLED: &[(&str, &str)] = &[$((stringify!($top_constant), $top_constant)),*];
        }
        $(
            $(#[$doc])*
            pub mod $section {
                /// The section's name in the file.
                pub const NAME: &str = $name;
                $(pub const $constant: &str = $key;)*
                /// Every key of the section.
                pub const ALL: &[&str] = &[$($constant),*];
                /// Each constant's name beside its key, for the test that they match.
                #[cfg(test)]
                pub const SPELLED: &[(&str, &str)] = &[$((stringify!($constant), $constant)),*];
            }
        )*
        /// Every section below the top level, in file order: its name and keys.
        pub const SECTIONS: &[(&str, &[&str])] = &[$(($section::NAME, $section::ALL)),*];
        /// Every section's constants beside their keys, the top level first.
        #[cfg(test)]
        pub const SPELLED: &[&[(&str, &str)]] = &[top::SPELLED, $($section::SPELLED),*];
    };
}

key_table! {
    /// The top level: the keys before the first section.
    top {
        GATEWAY_ACTIVATED = "GATEWAY-ACTIVATED",
        STATE_DIR = "STATE-DIR",
    }
    /// `[battery]`: the combined battery and the bank policy (spec 15).
    battery = "battery" {
        I_LIM_CHARGE = "I-LIM-CHARGE",
        I_LIM_DISCHARGE = "I-LIM-DISCHARGE",
        I_TOT_SCALING = "I-TOT-SCALING",
        I_TOT_OFFSET = "I-TOT-OFFSET",
        STALE_TIMEOUT = "STALE-TIMEOUT",
        V_DISCHARGE_MIN = "V-DISCHARGE-MIN",
        ON_INPUT_LOST = "ON-INPUT-LOST",
        LIMIT_MODE = "LIMIT-MODE",
        SHARE_MIN_CURRENT = "SHARE-MIN-CURRENT",
        OVERCURRENT_MARGIN = "OVERCURRENT-MARGIN",
        OVERSHOOT_TIME = "OVERSHOOT-TIME",
        ON_PACK_FORBIDS = "ON-PACK-FORBIDS",
        TEMPERATURE_DERATING_CHARGE = "TEMPERATURE-DERATING-CHARGE",
        TEMPERATURE_DERATING_DISCHARGE = "TEMPERATURE-DERATING-DISCHARGE",
        CHARGE_STOP_SOC = "CHARGE-STOP-SOC",
        CHARGE_RESUME_SOC = "CHARGE-RESUME-SOC",
        SOFT_LANDING_CHARGE = "SOFT-LANDING-CHARGE",
        SOFT_LANDING_DISCHARGE = "SOFT-LANDING-DISCHARGE",
        SOC_MODE = "SOC-MODE",
    }
    /// `[[bmses-in]]`: one battery, on CAN or on a serial port (spec 18).
    bmses_in = "bmses-in" {
        CAN_IF = "CAN-IF",
        DESCRIPTION = "DESCRIPTION",
        CAPACITY_AH = "CAPACITY-AH",
        POLL_INTERVAL = "POLL-INTERVAL",
        SERIAL_PORT = "SERIAL-PORT",
        ADDRESS = "ADDRESS",
        BAUD = "BAUD",
        PROTOCOL = "PROTOCOL",
        RS485_MODE = "RS485-MODE",
    }
    /// `[[bmses-out]]`: one inverter.
    bmses_out = "bmses-out" {
        CAN_IF = "CAN-IF",
        DESCRIPTION = "DESCRIPTION",
        I_LIM_CHARGE = "I-LIM-CHARGE",
        I_LIM_DISCHARGE = "I-LIM-DISCHARGE",
        I_SCALING = "I-SCALING",
        I_OFFSET = "I-OFFSET",
        PUSH_MIN_DELAY = "PUSH-MIN-DELAY",
        SEND_SYNC_ACTIVATED = "SEND-SYNC-ACTIVATED",
        SYNC_INTERVAL = "SYNC-INTERVAL",
        MANUFACTURER = "MANUFACTURER",
        PROFILE = "PROFILE",
        SOC_MIN = "SOC-MIN",
        SOC_MAX = "SOC-MAX",
        CVL_RAMP = "CVL-RAMP",
        INVERTER_TIMEOUT = "INVERTER-TIMEOUT",
        VOLTAGE_UNIT = "VOLTAGE-UNIT",
    }
    /// `[mqtt]`: telemetry, Home Assistant discovery and control.
    mqtt = "mqtt" {
        ACTIVATED = "ACTIVATED",
        BROKER = "BROKER",
        PORT = "PORT",
        TOPIC = "TOPIC",
        INTERVAL = "INTERVAL",
        BASE_TOPIC = "BASE-TOPIC",
        CLIENT_ID = "CLIENT-ID",
        USERNAME = "USERNAME",
        PASSWORD_FILE = "PASSWORD-FILE",
        TLS = "TLS",
        CA_FILE = "CA-FILE",
        CERT_FILE = "CERT-FILE",
        KEY_FILE = "KEY-FILE",
        HA_DISCOVERY = "HA-DISCOVERY",
        HA_DISCOVERY_PREFIX = "HA-DISCOVERY-PREFIX",
        HA_CELL_ENTITIES = "HA-CELL-ENTITIES",
        CONTROL_ACTIVATED = "CONTROL-ACTIVATED",
        SETPOINT_TTL = "SETPOINT-TTL",
        HA_SETPOINT_TTL = "HA-SETPOINT-TTL",
    }
    /// `[http]`: the local status server.
    http = "http" {
        ACTIVATED = "ACTIVATED",
        LISTEN = "LISTEN",
    }
    /// `[recorder]`: the flight recorder (docs/recorder.md).
    recorder = "recorder" {
        SECONDS = "SECONDS",
        KEEP = "KEEP",
    }
    /// `[can]`: what is done about a dead interface (docs/dead-interfaces.md).
    can = "can" {
        RECOVER = "RECOVER",
        RECOVER_AFTER = "RECOVER-AFTER",
    }
}

/// What the top level allows: its own keys, then the sections' names.
pub fn top_level() -> Vec<&'static str> {
    let sections = SECTIONS.iter().map(|(name, _)| *name);
    top::ALL.iter().copied().chain(sections).collect()
}
