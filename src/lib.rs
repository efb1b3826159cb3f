//! bms-gateway: one virtual battery made of several Pylontech-protocol BMSes,
//! shown to one or more inverters, with MQTT telemetry and control.
//!
//! The pure core (`frame`, `codec`, `telegram`, `combine`, `config`, `candump`)
//! has no threads, clocks or sockets: time is passed in. The shell around it
//! (`can`, `gateway`, `mqtt`, the commands) moves data between threads.

pub mod bank;
pub mod can;
pub mod candump;
pub mod codec;
pub mod combine;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod demo;
pub mod energy;
pub mod events;
pub mod frame;
pub mod gateway;
pub mod http;
pub mod input;
pub mod liveness;
pub mod logging;
pub mod loglimit;
pub mod metrics;
pub mod mqtt;
pub mod output;
pub mod policy;
pub mod profile;
pub mod recorder;
pub mod reload;
pub mod replay;
pub mod scan;
pub mod setpoint;
pub mod shutdown;
pub mod signals;
pub mod sim;
pub mod state_store;
pub mod status;
pub mod status_client;
pub mod supervise;
pub mod systemd;
pub mod telegram;
pub mod tools;

/// Configuration text for the unit tests, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/config_text/mod.rs"]
mod config_text;
