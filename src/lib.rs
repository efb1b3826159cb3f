//! bms-gateway: one virtual battery made of several Pylontech-protocol BMSes,
//! shown to one or more inverters, with MQTT telemetry and control.
//!
//! The pure core (`frame`, `codec`, `telegram`, `combine`, `config`, `candump`)
//! has no threads, clocks or sockets: time is passed in. The shell around it
//! (`can`, `gateway`, `mqtt`, the commands) moves data between threads.

pub mod codec;
pub mod combine;
pub mod config;
pub mod frame;
pub mod mqtt;
pub mod setpoint;
pub mod status;
pub mod telegram;
