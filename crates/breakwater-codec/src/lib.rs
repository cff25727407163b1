//! Breakwater's wire formats: the records of `schemas/*.avsc` and two codecs for them, Avro in
//! the Confluent wire format (schemas in a Schema Registry) and JSON, behind one trait.
//!
//! # Layout
//! - [`schema`]: [`WireRecord`], tying each record type to its compiled-in `.avsc`.
//! - [`records`]: the output records (propagation events, alerts, reservation decisions) and
//!   their construction from the fold's outputs. The inputs are core's
//!   [`InventoryEvent`](breakwater_core::InventoryEvent) and
//!   [`ReservationCommand`](breakwater_core::ReservationCommand).
//! - [`codec`]: the [`Codec`] trait and [`AnyCodec`], the run-time choice between:
//! - [`json`]: [`JsonCodec`], one JSON object per message;
//! - [`avro`]: [`AvroCodec`], Confluent framing, schemas registered and fetched by subject
//!   `<topic>-value`, values resolved against Breakwater's schema.
//! - [`error`]: [`CodecError`], classified as retry, bad data or fatal.
//!
//! Golden files for every record type, in both formats, are in `testdata/golden/`; the tests
//! in `tests/golden.rs` say how to regenerate them.

pub mod avro;
pub mod codec;
pub mod error;
pub mod json;
pub mod records;
pub mod schema;

pub use avro::AvroCodec;
pub use codec::{AnyCodec, Codec};
pub use error::{CodecError, ErrorClass};
pub use json::JsonCodec;
pub use records::{
    alert_record, decision_record, incident_record, propagation_record, AlertRecord,
    DecisionRecord, IncidentRecord, PropagationRecord, RootCauseRecord,
};
pub use schema::{WireRecord, WireSchema};
/// Registry connection settings (URLs, credentials, timeout) for [`AvroCodec::new`].
pub use schema_registry_converter::async_impl::schema_registry::SrSettings;
