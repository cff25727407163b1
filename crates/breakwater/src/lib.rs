//! Breakwater: stops inventory cascades. The service around the cascade engine: configuration,
//! Kafka, the CLI.
//!
//! # Layout
//! - [`config`]: the TOML file with `BREAKWATER_*` environment overrides, validated with every
//!   problem named at once.

pub mod config;

pub use config::Config;
