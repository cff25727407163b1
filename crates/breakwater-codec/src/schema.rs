//! The wire contract: each record type and the Avro schema in `schemas/` that defines it.
//!
//! The `.avsc` files are compiled in and parsed once per process. They are the public
//! contract, so the codecs never derive a schema from a Rust type: they register and resolve
//! against exactly the text other teams read.

use std::sync::{Arc, OnceLock};

use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::Schema;
use breakwater_core::{InventoryEvent, ReservationCommand};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CodecError;
use crate::records::{AlertRecord, DecisionRecord, IncidentRecord, PropagationRecord};

/// One parsed schema from `schemas/`, with its named types resolved so values can be resolved
/// against it without rebuilding the name table per record.
pub struct WireSchema {
    file: &'static str,
    raw: &'static str,
    full_name: String,
    schema: &'static Schema,
    resolved: ResolvedSchema<'static>,
}

impl WireSchema {
    /// Parses `raw`, the text of `schemas/<file>`. The error is shared because the result is
    /// cached and handed out to every caller.
    fn parse(file: &'static str, raw: &'static str) -> Result<WireSchema, Arc<apache_avro::Error>> {
        // Leaked so the name table can borrow it for 'static: each schema is parsed once per
        // process and lives in a static anyway.
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(raw)?));
        let full_name = schema
            .name()
            .map_or_else(|| file.to_owned(), |n| n.fullname(None));
        let resolved = ResolvedSchema::new(schema)?;
        Ok(WireSchema {
            file,
            raw,
            full_name,
            schema,
            resolved,
        })
    }

    /// The schema's file name in `schemas/` (`inventory_event.avsc`, ...).
    pub fn file(&self) -> &'static str {
        self.file
    }

    /// The schema text exactly as in the file; this is what gets registered.
    pub fn raw(&self) -> &'static str {
        self.raw
    }

    /// The record's full name (`io.breakwater.v1.InventoryEvent`).
    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    /// The parsed schema.
    pub fn schema(&self) -> &'static Schema {
        self.schema
    }

    /// The schema's named types, for [`apache_avro::types::Value::resolve_with_names`].
    pub fn names(&self) -> &NamesRef<'static> {
        self.resolved.get_names()
    }
}

impl std::fmt::Debug for WireSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireSchema")
            .field("file", &self.file)
            .field("full_name", &self.full_name)
            .finish_non_exhaustive()
    }
}

/// A record that travels on a topic: serde for the JSON codec and `apache_avro::from_value`,
/// plus the Avro schema that is its public contract.
pub trait WireRecord: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema's file name in `schemas/`.
    const SCHEMA_FILE: &'static str;

    /// The Avro record's full name (`io.breakwater.v1.InventoryEvent`), for error messages.
    const RECORD_NAME: &'static str;

    /// The parsed schema, parsed on first use and cached for the life of the process.
    ///
    /// # Errors
    /// [`CodecError::Schema`] if the compiled-in `.avsc` does not parse; the crate's tests
    /// prove every schema does, so in a released build this never fails.
    fn wire_schema() -> Result<&'static WireSchema, CodecError>;
}

macro_rules! wire_record {
    ($ty:ty, $file:literal, $name:literal) => {
        impl WireRecord for $ty {
            const SCHEMA_FILE: &'static str = $file;
            const RECORD_NAME: &'static str = $name;

            fn wire_schema() -> Result<&'static WireSchema, CodecError> {
                static SCHEMA: OnceLock<Result<WireSchema, Arc<apache_avro::Error>>> =
                    OnceLock::new();
                SCHEMA
                    .get_or_init(|| {
                        WireSchema::parse($file, include_str!(concat!("../../../schemas/", $file)))
                    })
                    .as_ref()
                    .map_err(|e| CodecError::Schema {
                        file: $file,
                        source: Arc::clone(e),
                    })
            }
        }
    };
}

wire_record!(
    InventoryEvent,
    "inventory_event.avsc",
    "io.breakwater.v1.InventoryEvent"
);
wire_record!(
    ReservationCommand,
    "reservation_command.avsc",
    "io.breakwater.v1.ReservationCommand"
);
wire_record!(
    PropagationRecord,
    "propagation_event.avsc",
    "io.breakwater.v1.PropagationEvent"
);
wire_record!(AlertRecord, "alert.avsc", "io.breakwater.v1.Alert");
wire_record!(IncidentRecord, "incident.avsc", "io.breakwater.v1.Incident");
wire_record!(
    DecisionRecord,
    "reservation_decision.avsc",
    "io.breakwater.v1.ReservationDecision"
);

#[cfg(test)]
mod tests {
    use breakwater_core::event::EVENT_TYPES;
    use breakwater_core::output::RejectReason;
    use breakwater_core::{
        AlertKind, CommandKind, DecisionKind, IncidentStatus, Measure, Mode, Severity,
    };
    use serde_json::Value as Json;

    use super::*;

    fn check<T: WireRecord>() -> &'static WireSchema {
        let schema = T::wire_schema().unwrap_or_else(|e| panic!("{}: {e:?}", T::SCHEMA_FILE));
        assert_eq!(schema.file(), T::SCHEMA_FILE);
        assert_eq!(schema.full_name(), T::RECORD_NAME);
        schema
    }

    #[test]
    fn every_schema_parses_and_names_its_record() {
        check::<InventoryEvent>();
        check::<ReservationCommand>();
        check::<PropagationRecord>();
        check::<AlertRecord>();
        check::<DecisionRecord>();
        check::<IncidentRecord>();
    }

    /// The symbols of every enum named `name` in the schema's JSON (the schemas are
    /// self-contained, so a shared enum such as `Measure` is defined once per file).
    fn symbols(raw: &str, name: &str) -> Vec<String> {
        fn walk(j: &Json, name: &str, out: &mut Vec<Vec<String>>) {
            match j {
                Json::Object(m) => {
                    if m.get("type") == Some(&Json::from("enum"))
                        && m.get("name") == Some(&Json::from(name))
                    {
                        let s = m.get("symbols").and_then(Json::as_array).map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect()
                        });
                        out.push(s.unwrap_or_default());
                    }
                    m.values().for_each(|v| walk(v, name, out));
                }
                Json::Array(a) => a.iter().for_each(|v| walk(v, name, out)),
                _ => {}
            }
        }
        let json: Json = serde_json::from_str(raw).unwrap_or(Json::Null);
        let mut found = Vec::new();
        walk(&json, name, &mut found);
        assert_eq!(found.len(), 1, "enum {name} defined once");
        found.pop().unwrap_or_default()
    }

    /// Avro writes an enum as its symbol's index and `apache_avro` maps a Rust variant by
    /// name: both only agree if the serde names are the symbols, in schema order.
    fn assert_symbols<T: WireRecord, E: Serialize>(name: &str, variants: &[E]) {
        let names: Vec<String> = variants
            .iter()
            .map(|v| match serde_json::to_value(v) {
                Ok(Json::String(s)) => s,
                other => panic!("{name} does not serialise as a string: {other:?}"),
            })
            .collect();
        let raw = check::<T>().raw();
        assert_eq!(names, symbols(raw, name), "{name} in {}", T::SCHEMA_FILE);
    }

    /// Lists every variant, and fails to compile when a variant is added without updating it.
    macro_rules! all {
        ($ty:ident: $($v:ident),+ $(,)?) => {{
            let _exhaustive = |x: $ty| match x { $($ty::$v)|+ => () };
            [$($ty::$v),+]
        }};
    }

    #[test]
    fn core_enums_are_the_schema_symbols_in_order() {
        let alert_kinds = all!(AlertKind: Drift, StaleAction, Oversell, PhantomAvailability,
            HandoffTimeout, UnpropagatedChange, Resolved, StaleView);
        let incident_statuses = all!(IncidentStatus: Opened, Updated, Resolved);
        let severities = all!(Severity: Info, Warning, Critical);
        let modes = all!(Mode: Delta, Absolute);
        let commands = all!(CommandKind: Reserve, Commit, Release);
        let decisions = all!(DecisionKind: Granted, Rejected, Committed, Released, Expired);
        let reasons = all!(RejectReason: InsufficientAvailability, UnknownReservation,
            DuplicateReservation, InvalidCommand);

        assert_symbols::<InventoryEvent, _>("EventType", &EVENT_TYPES);
        assert_symbols::<InventoryEvent, _>("Measure", &Measure::ALL);
        assert_symbols::<InventoryEvent, _>("Mode", &modes);
        assert_symbols::<ReservationCommand, _>("CommandKind", &commands);
        assert_symbols::<AlertRecord, _>("AlertKind", &alert_kinds);
        assert_symbols::<AlertRecord, _>("Severity", &severities);
        assert_symbols::<AlertRecord, _>("Measure", &Measure::ALL);
        assert_symbols::<DecisionRecord, _>("DecisionKind", &decisions);
        assert_symbols::<IncidentRecord, _>("IncidentStatus", &incident_statuses);
        assert_symbols::<IncidentRecord, _>("AlertKind", &alert_kinds);
        assert_symbols::<IncidentRecord, _>("Severity", &severities);
        assert_symbols::<DecisionRecord, _>("RejectReason", &reasons);
    }
}
