//! bms-gateway: one virtual battery made of several Pylontech-protocol BMSes,
//! shown to one or more inverters, with MQTT telemetry and control.
//!
//! The module map, by layer, lowest first. A module's code imports only from
//! its own layer or the ones below it, and modules import each other in no
//! cycle: the `layers` test reads this list and checks every `crate::` path
//! of the code in src/ (unit tests left out) against it.
//!
//! 1. **Core** (the `bms-core` crate, re-exported here under the same
//!    names): the pure rules, functions of their arguments with time passed
//!    in: [`frame`], [`codec`], [`telegram`], [`candump`], [`rs485`],
//!    [`bank`], [`setpoint`], [`combine`], [`energy`], [`profile`], [`send`],
//!    [`sim`], [`bounds`], [`interlock`], [`policy`], [`dead_link`].
//! 2. **Plumbing**: what every thread leans on (time stamps, stopping,
//!    signals, logs, events, heartbeats, systemd, the 24 h history ring,
//!    the context a serving thread is started with):
//!    [`clock`], [`shutdown`], [`signals`], [`logging`], [`loglimit`],
//!    [`events`], [`liveness`], [`systemd`], [`sync`], [`history`],
//!    [`context`].
//! 3. **Configuration**: the configuration file and what a reload keeps:
//!    [`config`], [`reload`].
//! 4. **Hardware edge**: CAN interfaces and serial ports, real or virtual,
//!    each behind one small interface: [`can`], [`serial`].
//! 5. **The running gateway**: the threads and what they share (the input and
//!    output threads, the combiner, the status board, the flight recorder,
//!    the state on disk, the supervision): [`input`], [`serial_input`],
//!    [`output`], [`gateway`],
//!    [`status`], [`recorder`], [`state_store`], [`supervise`].
//! 6. **Front ends**: how people and other programs see and steer it:
//!    [`telemetry`], [`mqtt`], [`http`], [`text_table`].
//! 7. **Commands**: one module per `bms-gateway` subcommand beyond the
//!    library: [`daemon`], [`demo`], [`decode`], [`replay`], [`scan`],
//!    [`status_client`], [`tools`].

pub use bms_core::{
    bank, bounds, candump, codec, combine, dead_link, energy, frame, interlock, policy, profile, rs485, send, setpoint,
    sim, telegram,
};

pub mod can;
pub mod clock;
pub mod config;
pub mod context;
pub mod daemon;
pub mod decode;
pub mod demo;
pub mod events;
pub mod gateway;
pub mod history;
pub mod http;
pub mod input;
pub mod liveness;
pub mod logging;
pub mod loglimit;
pub mod mqtt;
pub mod output;
pub mod recorder;
pub mod reload;
pub mod replay;
pub mod scan;
pub mod serial;
pub mod serial_input;
pub mod shutdown;
pub mod signals;
pub mod state_store;
pub mod status;
pub mod status_client;
pub mod supervise;
pub mod sync;
pub mod systemd;
pub mod telemetry;
pub mod text_table;
pub mod tools;

/// Configuration text for the unit tests, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/config_text/mod.rs"]
mod config_text;

/// The layer rule of the module map above, checked.
#[cfg(test)]
mod layers;
