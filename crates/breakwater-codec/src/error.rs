//! The crate's one error type, classified where each error enters.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::RawError;

/// The Schema Registry's error code for "schema not found" (HTTP 404).
pub const SCHEMA_NOT_FOUND: u32 = 40403;

/// What the caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A transient failure (the registry is unreachable or overloaded): retry the same record
    /// with backoff.
    Retry,
    /// The record cannot be decoded and never will be: send it to the dead-letter topic and
    /// move on.
    BadData,
    /// Breakwater itself is misconfigured or broken (registry credentials, an incompatible
    /// schema, a record that does not fit its own schema): stop.
    Fatal,
}

/// Everything that can go wrong encoding or decoding a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload cannot hold the Confluent header (magic byte and 4-byte schema id).
    #[error(
        "Avro payload is {len} bytes; the Confluent wire format needs at least 5 \
         (magic byte and schema id)"
    )]
    TooShort {
        /// The payload's length in bytes.
        len: usize,
    },

    /// The payload does not start with the Confluent magic byte 0.
    #[error("Avro payload starts with byte {byte:#04x}, not the Confluent magic byte 0x00")]
    BadMagic {
        /// The first byte of the payload.
        byte: u8,
    },

    /// The payload names a schema id the registry does not know (HTTP 404, error code 40403).
    #[error("schema id {id} is not in the schema registry")]
    UnknownSchemaId {
        /// The schema id from the payload.
        id: u32,
        /// The registry client's error.
        #[source]
        source: SRCError,
    },

    /// The registry could not be reached or answered with a server error; retrying may help.
    #[error("schema registry unavailable while looking up {lookup}")]
    RegistryUnavailable {
        /// What was being looked up: `schema id 7` or `subject orders-value`.
        lookup: String,
        /// The registry client's error.
        #[source]
        source: SRCError,
    },

    /// The registry refused the request or answered with something unusable (bad
    /// credentials, an incompatible schema, a schema of another type); retrying will not help.
    #[error("schema registry request failed while looking up {lookup}")]
    Registry {
        /// What was being looked up: `schema id 7` or `subject orders-value`.
        lookup: String,
        /// The registry client's error.
        #[source]
        source: SRCError,
    },

    /// The Avro datum does not decode with the schema it names, or does not resolve to the
    /// record Breakwater expects.
    #[error("Avro payload with schema id {schema_id} is not a valid {record}")]
    AvroDecode {
        /// The expected record's full name.
        record: &'static str,
        /// The writer's schema id from the payload.
        schema_id: u32,
        /// Why: a [`DatumError`], or the registry client's error when the writer's schema
        /// does not parse or is not Avro.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// A record Breakwater built does not fit its own schema (a bug).
    #[error("{record} does not fit its Avro schema")]
    AvroEncode {
        /// The record's full name.
        record: &'static str,
        /// The registry client's error; its source is `apache_avro`'s.
        #[source]
        source: SRCError,
    },

    /// The JSON payload is not valid JSON or does not match the record: a syntax error, a
    /// field of the wrong type, a missing required field or an unknown field. The source's
    /// message has the details and the position.
    #[error("JSON payload is not a valid {record}{}", FieldSuffix(.field.as_deref()))]
    JsonDecode {
        /// The expected record's name.
        record: &'static str,
        /// The dotted path of the field the error is in (`quantity`,
        /// `root_cause.occurred_at`), when it lies within one.
        field: Option<String>,
        /// serde_json's error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A record could not be written as JSON (a bug: every record type serialises).
    #[error("{record} could not be written as JSON")]
    JsonEncode {
        /// The record's name.
        record: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },

    /// One of the compiled-in `.avsc` files is not a valid Avro schema (a bug, caught by the
    /// crate's tests).
    #[error("schema {file} does not parse")]
    Schema {
        /// The file in `schemas/`.
        file: &'static str,
        /// The parser's error, shared because the parse result is cached.
        #[source]
        source: Arc<apache_avro::Error>,
    },
}

/// Why an Avro datum did not decode: the `source` of [`CodecError::AvroDecode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatumError {
    /// The datum ends before the record does.
    #[error("the datum ends before the record does")]
    Truncated,
    /// Bytes are left over after the record.
    #[error("{0} bytes are left over after the record")]
    TrailingBytes(usize),
    /// `apache_avro` could not decode the datum or resolve it to Breakwater's schema.
    #[error(transparent)]
    Avro(apache_avro::Error),
}

struct FieldSuffix<'a>(Option<&'a str>);

impl fmt::Display for FieldSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(field) => write!(f, " (field `{field}`)"),
            None => Ok(()),
        }
    }
}

impl CodecError {
    /// What the caller should do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            CodecError::TooShort { .. }
            | CodecError::BadMagic { .. }
            | CodecError::UnknownSchemaId { .. }
            | CodecError::AvroDecode { .. }
            | CodecError::JsonDecode { .. } => ErrorClass::BadData,
            CodecError::RegistryUnavailable { .. } => ErrorClass::Retry,
            CodecError::Registry { .. }
            | CodecError::AvroEncode { .. }
            | CodecError::JsonEncode { .. }
            | CodecError::Schema { .. } => ErrorClass::Fatal,
        }
    }

    /// True when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retry
    }

    /// Classifies an error from the registry client.
    ///
    /// The client reports failures as one string-typed error; its source says where it came
    /// from. A registry error response carries a [`RawError`] (its code is the HTTP status
    /// times 100 plus a detail digit, or the bare status); a transport failure is marked
    /// retriable; anything else concerns the one schema id or record at hand.
    pub(crate) fn from_registry(e: SRCError, lookup: Lookup, record: &'static str) -> CodecError {
        let source = StdError::source(&e);
        if let Some(raw) = source.and_then(|s| s.downcast_ref::<RawError>()) {
            let code = raw.error_code;
            let status = if code >= 10_000 { code / 100 } else { code };
            return match (lookup, code) {
                (Lookup::Id(id), SCHEMA_NOT_FOUND | 404) => {
                    CodecError::UnknownSchemaId { id, source: e }
                }
                // Server errors and throttling pass; the client only marks 502 and 503.
                (lookup, _) if e.retriable || matches!(status, 408 | 429 | 500..=599) => {
                    CodecError::RegistryUnavailable {
                        lookup: lookup.to_string(),
                        source: e,
                    }
                }
                (lookup, _) => CodecError::Registry {
                    lookup: lookup.to_string(),
                    source: e,
                },
            };
        }
        if e.retriable {
            return CodecError::RegistryUnavailable {
                lookup: lookup.to_string(),
                source: e,
            };
        }
        // What is left is about this schema or this datum: the writer's schema does not parse
        // or is not Avro, the datum does not decode, or (encoding) the record does not fit.
        match lookup {
            Lookup::Id(schema_id) => CodecError::AvroDecode {
                record,
                schema_id,
                source: Box::new(e),
            },
            Lookup::Subject(_) if source.is_some_and(|s| s.is::<apache_avro::Error>()) => {
                CodecError::AvroEncode { record, source: e }
            }
            lookup @ Lookup::Subject(_) => CodecError::Registry {
                lookup: lookup.to_string(),
                source: e,
            },
        }
    }
}

/// What a registry request was about, for error messages.
#[derive(Clone, Debug)]
pub(crate) enum Lookup {
    /// Fetching the writer's schema by the id in a payload.
    Id(u32),
    /// Registering (or finding) a schema under a subject.
    Subject(String),
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Id(id) => write!(f, "schema id {id}"),
            Lookup::Subject(s) => write!(f, "subject {s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_error(status: &str, body: &str, retriable: bool) -> SRCError {
        let raw: RawError = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}"));
        let what = format!("HTTP request to schema registry failed with status {status}");
        if retriable {
            SRCError::retryable_with_cause(raw, &what)
        } else {
            SRCError::non_retryable_with_cause(raw, &what)
        }
    }

    fn class(e: SRCError, lookup: Lookup) -> (ErrorClass, String) {
        let e = CodecError::from_registry(e, lookup, "io.breakwater.v1.InventoryEvent");
        (e.class(), e.to_string())
    }

    #[test]
    fn registry_errors_are_classified_by_their_code() {
        let not_found = registry_error(
            "404 Not Found",
            r#"{"error_code":40403,"message":"Schema 9 not found"}"#,
            false,
        );
        assert_eq!(
            class(not_found.clone(), Lookup::Id(9)),
            (
                ErrorClass::BadData,
                "schema id 9 is not in the schema registry".into()
            )
        );
        // Cached errors are clones; the source survives.
        let (c, _) = class(not_found.into_cache(), Lookup::Id(9));
        assert_eq!(c, ErrorClass::BadData);

        let backend = registry_error(
            "500 Internal Server Error",
            r#"{"error_code":50001,"message":"Error in the backend data store"}"#,
            false,
        );
        assert_eq!(class(backend, Lookup::Id(1)).0, ErrorClass::Retry);

        let unavailable = registry_error(
            "503 Service Unavailable",
            r#"{"error_code":0,"message":"x"}"#,
            true,
        );
        assert_eq!(class(unavailable, Lookup::Id(1)).0, ErrorClass::Retry);

        let unauthorized = registry_error(
            "401 Unauthorized",
            r#"{"error_code":401,"message":"Unauthorized"}"#,
            false,
        );
        assert_eq!(
            class(unauthorized, Lookup::Subject("alerts-value".into())),
            (
                ErrorClass::Fatal,
                "schema registry request failed while looking up subject alerts-value".into()
            )
        );

        let incompatible = registry_error(
            "409 Conflict",
            r#"{"error_code":409,"message":"Schema being registered is incompatible"}"#,
            false,
        );
        assert_eq!(
            class(incompatible, Lookup::Subject("alerts-value".into())).0,
            ErrorClass::Fatal
        );
    }

    #[test]
    fn transport_and_avro_errors_are_classified_by_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let down = SRCError::retryable_with_cause(io, "http call to schema registry failed");
        let (c, text) = class(down, Lookup::Id(1));
        assert_eq!(c, ErrorClass::Retry);
        assert_eq!(
            text,
            "schema registry unavailable while looking up schema id 1"
        );

        let avro = || {
            let e = apache_avro::Schema::parse_str("{").err();
            SRCError::non_retryable_with_cause(
                e.unwrap_or_else(|| panic!("`{{` is not a schema")),
                "Could not transform bytes using schema",
            )
        };
        assert!(matches!(
            CodecError::from_registry(avro(), Lookup::Id(3), "R"),
            CodecError::AvroDecode { schema_id: 3, .. }
        ));
        assert!(matches!(
            CodecError::from_registry(avro(), Lookup::Subject("s".into()), "R"),
            CodecError::AvroEncode { .. }
        ));

        // A schema id that is not Avro is a bad record, not a broken registry.
        let not_avro = SRCError::non_retryable_without_cause("type Json, is not correct");
        assert_eq!(class(not_avro, Lookup::Id(1)).0, ErrorClass::BadData);
        let odd = SRCError::non_retryable_without_cause("Could not get id from response");
        assert_eq!(class(odd, Lookup::Subject("s".into())).0, ErrorClass::Fatal);
    }

    #[test]
    fn errors_can_cross_threads() {
        fn is<T: Send + Sync + 'static>() {}
        is::<CodecError>();
    }

    #[test]
    fn only_registry_outages_are_retryable() {
        assert!(!CodecError::TooShort { len: 4 }.is_retryable());
        assert!(!CodecError::BadMagic { byte: 1 }.is_retryable());
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let e = CodecError::RegistryUnavailable {
            lookup: "schema id 1".into(),
            source: SRCError::retryable_with_cause(io, "http call to schema registry failed"),
        };
        assert!(e.is_retryable());
    }
}
