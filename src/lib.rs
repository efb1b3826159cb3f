//! bms-gateway library: placeholder while the skeleton is laid.

pub mod service;
