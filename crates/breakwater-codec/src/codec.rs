//! The one codec interface, and the enum the processor picks an implementation with.

use std::future::Future;

use crate::avro::AvroCodec;
use crate::error::CodecError;
use crate::json::JsonCodec;
use crate::schema::WireRecord;

/// Turns Kafka message values into records and back.
///
/// Async because the Avro codec may have to ask the Schema Registry (once per schema id or
/// subject; after that it answers from its cache). Not object safe: pick an implementation at
/// run time with [`AnyCodec`].
pub trait Codec: Send + Sync {
    /// Decodes the value of a message read from `topic`.
    ///
    /// # Errors
    /// A [`CodecError`]; [`CodecError::class`] says whether to retry, dead-letter or stop.
    fn decode<T: WireRecord>(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> impl Future<Output = Result<T, CodecError>> + Send;

    /// Encodes `value` as the value of a message for `topic`.
    ///
    /// # Errors
    /// A [`CodecError`]; [`CodecError::class`] says whether to retry or stop.
    fn encode<T: WireRecord>(
        &self,
        topic: &str,
        value: &T,
    ) -> impl Future<Output = Result<Vec<u8>, CodecError>> + Send;
}

/// The wire format chosen in the configuration.
#[derive(Clone, Debug)]
pub enum AnyCodec {
    /// JSON, one object per message.
    Json(JsonCodec),
    /// Avro in the Confluent wire format, schemas in a Schema Registry.
    Avro(AvroCodec),
}

impl Codec for AnyCodec {
    async fn decode<T: WireRecord>(&self, topic: &str, payload: &[u8]) -> Result<T, CodecError> {
        match self {
            AnyCodec::Json(c) => c.decode(topic, payload).await,
            AnyCodec::Avro(c) => c.decode(topic, payload).await,
        }
    }

    async fn encode<T: WireRecord>(&self, topic: &str, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            AnyCodec::Json(c) => c.encode(topic, value).await,
            AnyCodec::Avro(c) => c.encode(topic, value).await,
        }
    }
}

impl From<JsonCodec> for AnyCodec {
    fn from(c: JsonCodec) -> Self {
        AnyCodec::Json(c)
    }
}

impl From<AvroCodec> for AnyCodec {
    fn from(c: AvroCodec) -> Self {
        AnyCodec::Avro(c)
    }
}
