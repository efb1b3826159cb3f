//! bms-core: the pure core of bms-gateway.
//!
//! Everything here is a function of its arguments: no threads, no clocks, no
//! sockets, no logging. Time comes in as `Instant` values the shell read
//! (core/clippy.toml makes reading the clock here a lint error). The
//! gateway crate (`bms_gateway`) re-exports every module under the same
//! name, so `bms_gateway::codec` and `bms_core::codec` are one module.
//!
//! - Wire: [`frame`] (a CAN frame), [`codec`] (Pylontech messages to and from
//!   frames), [`telegram`] (a battery's messages gathered into one reading),
//!   [`candump`] (the can-utils log format), [`rs485`] (the Pylontech RS485
//!   protocol: frames, requests, answers, a poll cycle made a telegram).
//! - Rules: [`bank`] (one bank's limits from its packs), [`policy`] (the
//!   bank policy of spec 15, all lower-only), [`setpoint`] (limit
//!   setpoints and their lifetimes), [`combine`] (the virtual battery),
//!   [`energy`] (the kWh counters), [`profile`] (what each inverter is shown,
//!   and `check`, the decoder of what it was shown), [`send`] (what an
//!   output sends when), [`bounds`] (what the fresh telegrams allow each
//!   inverter), [`interlock`] (the independent check of every frame set
//!   against them before it leaves, spec 14) and [`dead_link`] (when a CAN
//!   interface that is up but dead is taken down and up).
//! - Models: [`sim`] (simulated batteries and inverters for tests, the demo
//!   and benchmarks).

// The unit tests start from one arbitrary base instant (`Instant::now()`)
// and move time by adding durations to it; the code under test still reads
// no clock.
#![cfg_attr(
    test,
    allow(
        clippy::disallowed_methods,
        reason = "unit tests take Instant::now() once as an arbitrary base; the code under test reads no clock"
    )
)]

pub mod bank;
pub mod bounds;
pub mod candump;
pub mod codec;
pub mod combine;
pub mod dead_link;
pub mod energy;
pub mod frame;
pub mod interlock;
pub mod policy;
pub mod profile;
pub mod rs485;
pub mod send;
pub mod setpoint;
pub mod sim;
pub mod telegram;
