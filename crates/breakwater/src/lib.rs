//! Breakwater: stops inventory cascades. The service around the cascade engine:
//! configuration, the Kafka processor, the HTTP API, metrics.
//!
//! # Layout
//! - [`config`]: the TOML file with `BREAKWATER_*` environment overrides, validated with every
//!   problem named at once.
//! - [`processor`]: the consumer group, per-partition tasks over RocksDB state, the fold,
//!   exactly-once commits, restoration from the changelog, dead-lettering (its module docs
//!   list its parts by role).
//! - [`service`]: `run(cfg, metrics, shutdown)`: the processor thread, HTTP, graceful shutdown.
//! - [`http`]: `/metrics`, `/health`, `/ready`, availability, the cascade map.
//! - [`topics`]: creating a config's topics, co-partitioned.
//! - [`demo`]: the article's story through the processor on librdkafka's mock cluster.
//! - [`metrics`]: metric names, units and help texts.

pub mod config;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod partition_group;
pub mod processor;
pub mod service;
pub mod topics;

pub use config::Config;
pub use service::run;
