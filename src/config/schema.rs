//! The schema: what a configuration file holds once read, one struct per
//! section with a doc comment on every field naming its key, and the
//! defaults of the sections that may be left out. Reading the text into it is
//! `read`'s job; `check`'s report of it is `check`'s.

use crate::codec::Manufacturer;
use crate::combine::{BatterySettings, InverterShare};
use crate::dead_link::RecoverySettings;
use crate::profile::{Profile, SocWindow, VoltageUnit};
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `GATEWAY-ACTIVATED`: the gateway only runs when true.
    pub gateway_activated: bool,
    /// `[battery]`: caps, current scaling and staleness rules of the combined battery.
    pub battery: BatterySettings,
    /// `[[bmses-in]]`: one per battery BMS, in file order.
    pub inputs: Vec<InputConfig>,
    /// `[[bmses-out]]`: one per inverter, in file order.
    pub outputs: Vec<OutputConfig>,
    /// `[mqtt]`.
    pub mqtt: MqttConfig,
    /// `STATE-DIR`: where the energy counters are kept; `None`: the
    /// default, `$STATE_DIRECTORY` under systemd, else
    /// `~/.bms_gateway/state` (resolved by the daemon, see `state_store`).
    pub state_dir: Option<PathBuf>,
    /// `[http]`: the local status server.
    pub http: HttpConfig,
    /// `[recorder]`: the flight recorder of the last minutes of CAN traffic.
    pub recorder: RecorderConfig,
    /// `[can]`: what is done about an interface that is up but dead
    /// (docs/dead-interfaces.md).
    pub can: RecoverySettings,
}

/// `[recorder]` (docs/recorder.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderConfig {
    /// `SECONDS`: how far back a recording reaches; 0 turns the recorder off.
    pub seconds: u32,
    /// `KEEP`: at most this many recordings stay in STATE-DIR/recordings;
    /// the oldest go.
    pub keep: u32,
}

impl RecorderConfig {
    /// The longest SECONDS allowed (the ring's memory grows with it).
    pub const MAX_SECONDS: u32 = 3600;
    /// The most recordings KEEP allows.
    pub const MAX_KEEP: u32 = 1000;
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig { seconds: 300, keep: 20 }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `ACTIVATED`: serve the status page, JSON API and metrics.
    pub activated: bool,
    /// `LISTEN`: address and port, e.g. "127.0.0.1:8080" (this machine
    /// only) or "0.0.0.0:8080" (the LAN).
    pub listen: std::net::SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            activated: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// One battery BMS.
#[derive(Debug, Clone, PartialEq)]
pub struct InputConfig {
    /// `CAN-IF`: the CAN interface this BMS is on. For a serial input
    /// (`serial` set) the input's name, `PORT#ADDRESS`, which stands for it
    /// wherever a CAN input's interface name does (logs, status, MQTT,
    /// saved state, reload).
    pub can_if: String,
    /// `DESCRIPTION`: shown in logs and MQTT.
    pub description: String,
    /// `CAPACITY-AH`: weight for averages, summed as capacity.
    pub capacity_ah: f64,
    /// `POLL-INTERVAL`: when set, send a 0x305 to this BMS at this period;
    /// for a serial input, the time between two poll cycles (always set).
    pub poll_interval: Option<Duration>,
    /// `SERIAL-PORT` and its keys: a pack polled over RS485 (spec 18)
    /// instead of a CAN BMS.
    pub serial: Option<SerialInput>,
}

/// A battery polled over RS485 (`[[bmses-in]] SERIAL-PORT`, spec 18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialInput {
    /// `SERIAL-PORT`: the port's path.
    pub port: String,
    /// `ADDRESS`: the pack's RS485 address.
    pub address: u8,
    /// `BAUD`: the line speed.
    pub baud: u32,
    /// `PROTOCOL`: whose variant of the protocol the pack speaks.
    pub protocol: crate::rs485::Protocol,
    /// `RS485-MODE`: switch the UART's RS485 direction control on.
    pub rs485_mode: bool,
}

impl SerialInput {
    /// The speeds `BAUD` allows (reference §2.1).
    pub const BAUDS: [u32; 3] = [9600, 19200, 115200];
    /// The input's name where a CAN input's interface name goes.
    pub fn name(&self) -> String {
        format!("{}#{}", self.port, self.address)
    }
}

impl InputConfig {
    /// `POLL-INTERVAL` of a serial input when not given (spec 18).
    pub const SERIAL_POLL_INTERVAL: Duration = Duration::from_secs(1);
}

/// How frames reach an inverter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputMode {
    /// Send each new combined state (and at least once per second).
    Push,
    /// Answer the inverter's 0x305; send our own 0x305 every `interval`.
    Sync { interval: Duration },
}

/// One inverter.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// `CAN-IF`: the CAN interface this inverter is on.
    pub can_if: String,
    /// `DESCRIPTION`: shown in logs and MQTT.
    pub description: String,
    /// `I-LIM-CHARGE`, `I-LIM-DISCHARGE`, `I-SCALING`, `I-OFFSET`.
    pub share: InverterShare,
    /// `PUSH-MIN-DELAY`: minimum time between two transmissions.
    pub push_min_delay: Duration,
    /// `SEND-SYNC-ACTIVATED` and `SYNC-INTERVAL`.
    pub mode: OutputMode,
    /// `MANUFACTURER`: the name sent in 0x35E (default: the profile's).
    pub manufacturer: Manufacturer,
    /// `PROFILE`: the inverter's dialect (frames, layout, pacing).
    pub profile: Profile,
    /// `SOC-MIN`, `SOC-MAX`: the SOC window this inverter is shown.
    pub soc_window: SocWindow,
    /// `CVL-RAMP`: V/s by which the sent CVL may move; 0 = at once.
    pub cvl_ramp: f64,
    /// `INVERTER-TIMEOUT`: quiet this long, the inverter is silent; `None`
    /// (0 in the file): this inverter never talks.
    pub inverter_timeout: Option<Duration>,
    /// `VOLTAGE-UNIT`: V per count of the 0x356 voltage (0.01 or 0.1).
    pub voltage_unit: VoltageUnit,
}

/// TLS to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// `CA-FILE`: CA certificates (PEM) to trust; the system's when absent.
    pub ca_file: Option<PathBuf>,
    /// `CERT-FILE`: client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// `KEY-FILE`: client private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// `ACTIVATED`.
    pub activated: bool,
    /// `BROKER`: host name or address.
    pub broker: String,
    /// `PORT`.
    pub port: u16,
    /// `TOPIC`: the combined state, with the original gateway's field names.
    pub topic: String,
    /// `INTERVAL`: time between telemetry publishes.
    pub interval: Duration,
    /// `BASE-TOPIC`: root of every other topic.
    pub base_topic: String,
    /// `CLIENT-ID`; `None`: "bms-gateway-" and the host name.
    pub client_id: Option<String>,
    /// `USERNAME`.
    pub username: Option<String>,
    /// `PASSWORD-FILE`: the password, read from this file (or a systemd
    /// credential) at connect time, never from the main config.
    pub password_file: Option<PathBuf>,
    /// `TLS` (with `CA-FILE`, `CERT-FILE`, `KEY-FILE`); `None`: plain TCP.
    pub tls: Option<TlsConfig>,
    /// `HA-DISCOVERY`: publish Home Assistant discovery.
    pub ha_discovery: bool,
    /// `HA-DISCOVERY-PREFIX`.
    pub ha_discovery_prefix: String,
    /// `HA-CELL-ENTITIES`: every cell's voltage and temperature as an entity
    /// of its own (min, max and delta are always there).
    pub ha_cell_entities: bool,
    /// `CONTROL-ACTIVATED`: accept setpoint commands.
    pub control_activated: bool,
    /// `SETPOINT-TTL`: default lifetime of a setpoint; `None`: until changed.
    pub setpoint_ttl: Option<Duration>,
    /// `HA-SETPOINT-TTL`: lifetime of a setpoint set from Home Assistant's
    /// number entities (sent with it through their `command_template`), so
    /// that the limit falls back by itself when nothing renews it; `None`
    /// (0 in the file): SETPOINT-TTL applies.
    pub ha_setpoint_ttl: Option<Duration>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            activated: true,
            broker: "localhost".into(),
            port: 1883,
            topic: "tele/bms/state".into(),
            interval: Duration::from_secs(10),
            base_topic: "bms_gateway".into(),
            client_id: None,
            username: None,
            password_file: None,
            tls: None,
            ha_discovery: true,
            ha_discovery_prefix: "homeassistant".into(),
            ha_cell_entities: false,
            control_activated: false,
            setpoint_ttl: None,
            ha_setpoint_ttl: None,
        }
    }
}

impl Config {
    /// Every CAN interface named, batteries first, in file order.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        let can = self.inputs.iter().filter(|i| i.serial.is_none());
        let inputs = can.map(|i| i.can_if.as_str());
        inputs.chain(self.outputs.iter().map(|o| o.can_if.as_str()))
    }
}
