//! The configuration file: keys, defaults, validation and error messages.
//!
//! The format is the original Python gateway's TOML (upper-case keys with
//! hyphens), extended with the keys the README lists. Validation is pure: it takes the
//! text and returns either a [`Config`] or every problem found, each naming
//! the key, its line and column, and what is allowed.
//!
//! Split by job: `schema` (what a file holds once read), `keys` (every key
//! name, once), `read`, `read_battery`, `read_bmses` and `values` (text to a
//! [`Config`] or problems), `check` (the report `bms-gateway check` prints).

mod check;
mod keys;
mod read;
mod read_battery;
mod read_bmses;
mod schema;
mod values;

pub use read::{ConfigError, ConfigErrorKind, Problem, load, parse};
pub use schema::*;

/// The commented template that `--init` writes and the Debian package ships.
pub const TEMPLATE: &str = include_str!("../etc/bms_config.toml");

#[cfg(test)]
mod tests;

#[cfg(test)]
mod policy_tests;

#[cfg(test)]
mod keys_tests;
