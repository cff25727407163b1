//! Avro in the Confluent wire format: magic byte 0, the writer's schema id as a 4-byte
//! big-endian integer, then the Avro binary datum. Schemas live in a Schema Registry under the
//! TopicNameStrategy subject `<topic>-value`.
//!
//! Encoding registers the record's `.avsc` under the topic's subject on first use (the
//! registry answers with the existing id when it is already there) and caches the id.
//!
//! Decoding fetches the writer's schema by the payload's id (cached), decodes the datum with
//! it, then resolves the value against Breakwater's own schema, so a producer on an older or
//! newer compatible schema version still decodes: fields Breakwater does not know are
//! dropped and fields the producer did not send take their schema defaults. The datum is
//! read here rather than by the registry client because `apache_avro` 0.22 is lenient at the
//! end of its input (a string, boolean or union index cut off by the end decodes as null, so
//! a truncated record would lose its trailing optional fields without an error); reading it
//! here lets the codec reject a datum that ends early or leaves bytes over.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::codec::Codec;
use crate::error::{CodecError, DatumError, Lookup};
use crate::schema::WireRecord;

/// The most memory a single length field in an Avro datum may ask for. `apache_avro`
/// allocates a string's or array's declared length before reading it, so a corrupt
/// 10-byte payload could otherwise ask for its default 512 MiB. Breakwater's records are a
/// few hundred bytes and a Kafka message is at most a few MiB.
pub const MAX_AVRO_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// The Avro codec, backed by a Schema Registry. Cheap to clone: clones share the schema
/// caches.
#[derive(Clone)]
pub struct AvroCodec {
    inner: Arc<Inner>,
}

struct Inner {
    // The plain converter types rather than the `Easy*` wrappers (which are these in an
    // `Arc`): only these expose `remove_errors_from_cache`, without which a registry error
    // not marked retriable (a 500, a 404 from a replica that has not yet seen a new schema)
    // would be returned for that schema id until restart; and `get_schema`, so the codec can
    // read the datum itself.
    decoder: AvroDecoder,
    encoder: AvroEncoder,
    /// Writers' schemas by id, with their named types resolved once.
    writers: Mutex<HashMap<u32, Arc<Writer>>>,
}

/// A writer's schema from the registry, ready to read datums with.
struct Writer {
    schema: &'static Schema,
    names: ResolvedSchema<'static>,
}

impl std::fmt::Debug for AvroCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroCodec").finish_non_exhaustive()
    }
}

impl AvroCodec {
    /// A codec using the registry described by `settings` (URLs, credentials, timeout).
    ///
    /// Also caps `apache_avro`'s per-field allocation at [`MAX_AVRO_ALLOCATION_BYTES`] for the
    /// whole process (the setting is global, and the first value set wins).
    pub fn new(settings: SrSettings) -> AvroCodec {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION_BYTES);
        AvroCodec {
            inner: Arc::new(Inner {
                decoder: AvroDecoder::new(settings.clone()),
                encoder: AvroEncoder::new(settings),
                writers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A codec for the registry at `url`, without credentials.
    pub fn with_url(url: impl Into<String>) -> AvroCodec {
        AvroCodec::new(SrSettings::new(url.into()))
    }

    /// Pins schema id `id` to `T`'s schema as this build has it, without asking the
    /// registry: for decoding offline what this build wrote (fuzzing, a file in the
    /// published contract). A pinned id is never looked up.
    ///
    /// # Errors
    /// The schema does not parse or resolve (a bug in this build's schemas).
    pub fn pin_writer<T: WireRecord>(&self, id: u32) -> Result<(), CodecError> {
        let ws = T::wire_schema()?;
        let names = ResolvedSchema::new(ws.schema()).map_err(|e| CodecError::AvroDecode {
            record: T::RECORD_NAME,
            schema_id: id,
            source: Box::new(e),
        })?;
        let writer = Arc::new(Writer {
            schema: ws.schema(),
            names,
        });
        self.writers().insert(id, writer);
        Ok(())
    }

    /// The TopicNameStrategy subject for values on `topic`.
    pub fn subject(topic: &str) -> String {
        format!("{topic}-value")
    }

    /// The writer's schema `id`, from the cache or the registry.
    async fn writer(&self, id: u32, record: &'static str) -> Result<Arc<Writer>, CodecError> {
        if let Some(w) = self.writers().get(&id) {
            return Ok(Arc::clone(w));
        }
        let fetched = self.inner.decoder.get_schema(id).await.map_err(|e| {
            let e = CodecError::from_registry(e, Lookup::Id(id), record);
            self.forget_registry_errors(&e);
            e
        })?;
        // Leaked so the name table can borrow it for 'static, as the registry client does
        // with every schema it decodes with: one per schema id the registry knows.
        let schema: &'static Schema = Box::leak(Box::new(fetched.parsed.clone()));
        let names = ResolvedSchema::new(schema).map_err(|e| CodecError::AvroDecode {
            record,
            schema_id: id,
            source: Box::new(e),
        })?;
        let writer = Arc::new(Writer { schema, names });
        self.writers().insert(id, Arc::clone(&writer));
        Ok(writer)
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Writer>>> {
        // The map is only ever inserted into whole, so a panic elsewhere cannot leave it
        // inconsistent.
        self.inner
            .writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops cached registry failures so the next record asks again. Called after every
    /// registry error: they are rare, and a stale one would poison every later record.
    fn forget_registry_errors(&self, e: &CodecError) {
        if matches!(
            e,
            CodecError::UnknownSchemaId { .. }
                | CodecError::Registry { .. }
                | CodecError::RegistryUnavailable { .. }
        ) {
            self.inner.decoder.remove_errors_from_cache();
            self.inner.encoder.remove_errors_from_cache();
        }
    }
}

/// The schema id of a Confluent-framed payload.
///
/// # Errors
/// [`CodecError::TooShort`] below 5 bytes, [`CodecError::BadMagic`] when the first byte is
/// not 0.
pub fn schema_id(payload: &[u8]) -> Result<u32, CodecError> {
    let Some(([magic, id @ ..], _)) = payload.split_first_chunk::<5>() else {
        return Err(CodecError::TooShort { len: payload.len() });
    };
    if *magic != 0 {
        return Err(CodecError::BadMagic { byte: *magic });
    }
    Ok(u32::from_be_bytes(*id))
}

/// Reads a datum and remembers whether the decoder wanted more than there was, which
/// `apache_avro` would otherwise paper over with nulls.
struct StrictReader<'a> {
    rest: &'a [u8],
    ran_out: bool,
}

impl Read for StrictReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.rest.len());
        self.ran_out |= n < buf.len();
        let (now, later) = self.rest.split_at(n);
        buf[..n].copy_from_slice(now);
        self.rest = later;
        Ok(n)
    }
}

/// Decodes the datum after the 5-byte header with the writer's schema.
fn read_datum(writer: &Writer, datum: &[u8]) -> Result<apache_avro::types::Value, DatumError> {
    let mut input = StrictReader {
        rest: datum,
        ran_out: false,
    };
    let value = GenericDatumReader::builder(writer.schema)
        .resolved_writer_schemata(writer.names.clone())
        .build()
        .and_then(|r| r.read_value(&mut input));
    // Running out explains whatever else went wrong.
    if input.ran_out {
        return Err(DatumError::Truncated);
    }
    let value = value.map_err(DatumError::Avro)?;
    if !input.rest.is_empty() {
        return Err(DatumError::TrailingBytes(input.rest.len()));
    }
    Ok(value)
}

impl Codec for AvroCodec {
    async fn decode<T: WireRecord>(&self, _topic: &str, payload: &[u8]) -> Result<T, CodecError> {
        let reader = T::wire_schema()?;
        let id = schema_id(payload)?;
        let writer = self.writer(id, T::RECORD_NAME).await?;
        let bad_datum = |e: DatumError| CodecError::AvroDecode {
            record: T::RECORD_NAME,
            schema_id: id,
            source: Box::new(e),
        };
        // `schema_id` checked the length.
        let datum = payload.get(5..).unwrap_or_default();
        let value = read_datum(&writer, datum)
            .and_then(|v| {
                v.resolve_with_names(reader.schema(), reader.names())
                    .map_err(DatumError::Avro)
            })
            .map_err(bad_datum)?;
        apache_avro::from_value(&value).map_err(|e| bad_datum(DatumError::Avro(e)))
    }

    async fn encode<T: WireRecord>(&self, topic: &str, value: &T) -> Result<Vec<u8>, CodecError> {
        let schema = T::wire_schema()?;
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
            topic.to_owned(),
            false,
            SuppliedSchema::new(
                Some(T::RECORD_NAME.to_owned()),
                SchemaType::Avro,
                schema.raw().to_owned(),
            ),
        );
        self.inner
            .encoder
            .encode_struct(value, &strategy)
            .await
            .map_err(|e| {
                let lookup = Lookup::Subject(AvroCodec::subject(topic));
                let e = CodecError::from_registry(e, lookup, T::RECORD_NAME);
                self.forget_registry_errors(&e);
                e
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_checked_before_anything_reads_it() {
        assert!(matches!(
            schema_id(&[]),
            Err(CodecError::TooShort { len: 0 })
        ));
        assert!(matches!(
            schema_id(&[0, 0, 0, 1]),
            Err(CodecError::TooShort { len: 4 })
        ));
        assert!(matches!(
            schema_id(&[1, 0, 0, 0, 1]),
            Err(CodecError::BadMagic { byte: 1 })
        ));
        assert_eq!(schema_id(&[0, 0, 1, 0, 2]).ok(), Some(65_538));
    }

    /// The surprise this reader exists for: `apache_avro` decodes a string cut off by the end
    /// of its input as null instead of failing.
    #[test]
    fn a_datum_cut_short_is_an_error_not_a_null() {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "R", "fields": [
                {"name": "a", "type": "long"},
                {"name": "b", "type": ["null", "string"], "default": null}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let schema: &'static Schema = Box::leak(Box::new(schema));
        let writer = Writer {
            schema,
            names: ResolvedSchema::new(schema).unwrap_or_else(|e| panic!("{e}")),
        };
        // a = 1, b = branch 1 (string) "xyz"
        let full = [2, 2, 6, b'x', b'y', b'z'];
        assert!(read_datum(&writer, &full).is_ok());

        let lenient = GenericDatumReader::builder(schema)
            .build()
            .and_then(|r| r.read_value(&mut &full[..4]));
        assert!(lenient.is_ok(), "apache_avro is lenient: {lenient:?}");

        for cut in [1, 2, 4] {
            assert!(
                matches!(
                    read_datum(&writer, &full[..cut]),
                    Err(DatumError::Truncated)
                ),
                "cut at {cut}"
            );
        }
        let mut long = full.to_vec();
        long.push(0);
        assert!(matches!(
            read_datum(&writer, &long),
            Err(DatumError::TrailingBytes(1))
        ));
    }
}
