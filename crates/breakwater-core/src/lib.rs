//! Breakwater's cascade engine: the pure heart of the service.
//!
//! Everything here is deterministic and free of I/O, so every rule of the product can be
//! tested in milliseconds and replayed exactly.
//!
//! # Layout
//! - [`event`]: the input contract (inventory events, reservation commands) and the table of
//!   what each event type may carry.
//! - [`model`]: the cascade map from the config (systems, source-of-truth rules, handoffs,
//!   alert policy), validated with every problem reported at once, compiled into routes.
//! - [`state`]: per-key state: views, authoritative values and version, divergences, holds,
//!   timers, duplicate filters.
//! - [`fold`]: `apply(model, state, input, now, out)`, the only way state changes.
//! - [`output`]: propagation events, alerts and reservation decisions.
//! - [`incident`]: alerts grouped by kind, handoff and interval into incidents, per-kind rate
//!   limits, and the merge of partitions' incident reports.
//! - [`retail`]: a seeded, truth-scored retail-day generator (stores, DCs, orders with
//!   lifecycles, ERP batches, a cached storefront, injected faults) and its scorer.
//! - [`scenario`]: story files that drive tests, the demo and end-to-end runs.
//! - [`id`]: inline identifiers, so the fold does not allocate.

pub mod event;
pub mod fold;
pub mod id;
pub mod incident;
pub mod model;
pub mod output;
pub mod retail;
pub mod scenario;
pub mod state;

pub use event::{
    message_key, CommandKind, EventType, InventoryEvent, Measure, Millis, Mode, ReservationCommand,
};
pub use fold::{apply, validate, validate_command, Input, Outcome, Rejection};
pub use id::Id;
pub use incident::{IncidentBook, IncidentReport, IncidentStatus, IncidentView};
pub use model::{CascadeConfig, ConfigErrors, Model, SysId};
pub use output::{Alert, AlertKind, Decision, DecisionKind, Output, Propagation, Severity};
pub use state::KeyState;
