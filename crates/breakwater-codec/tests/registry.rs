//! The Avro codec against a fake Schema Registry: round trips, schema resolution, and every
//! way a payload or the registry can fail.

#![allow(clippy::unwrap_used)]

mod common;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use breakwater_codec::error::DatumError;
use breakwater_codec::{
    AlertRecord, AvroCodec, Codec, CodecError, DecisionRecord, ErrorClass, PropagationRecord,
    WireRecord,
};
use breakwater_core::{InventoryEvent, ReservationCommand};
use common::{samples, FakeRegistry};

async fn round_trip<T: WireRecord + PartialEq + std::fmt::Debug>(
    codec: &AvroCodec,
    topic: &str,
    id: u32,
    value: &T,
) {
    let bytes = codec.encode(topic, value).await.unwrap();
    assert_eq!(
        bytes[..5],
        [0, 0, 0, 0, id as u8],
        "Confluent header of {topic}"
    );
    let back: T = codec.decode(topic, &bytes).await.unwrap();
    assert_eq!(&back, value, "{topic}");
}

#[tokio::test]
async fn every_record_type_round_trips() {
    let mut registry = FakeRegistry::start().await;
    registry
        .knows::<InventoryEvent>(1, "inventory.wms.events")
        .await
        .knows::<ReservationCommand>(2, "breakwater.reservations")
        .await
        .knows::<PropagationRecord>(3, "inventory.erp.propagation")
        .await
        .knows::<AlertRecord>(4, "breakwater.alerts")
        .await
        .knows::<DecisionRecord>(5, "breakwater.reservation-decisions")
        .await;
    let codec = registry.codec();
    let events = "inventory.wms.events";
    // Nulls, set optionals, a timestamp-millis union (data_as_of) and every enum.
    round_trip(&codec, events, 1, &samples::receipt()).await;
    round_trip(&codec, events, 1, &samples::stale_order()).await;
    round_trip(&codec, "breakwater.reservations", 2, &samples::reserve()).await;
    round_trip(
        &codec,
        "inventory.erp.propagation",
        3,
        &samples::propagation(),
    )
    .await;
    round_trip(&codec, "breakwater.alerts", 4, &samples::resolved_drift()).await;
    let decisions = "breakwater.reservation-decisions";
    for d in [samples::granted(), samples::expired(), samples::rejected()] {
        round_trip(&codec, decisions, 5, &d).await;
    }
}

#[tokio::test]
async fn the_schema_is_registered_once_per_subject() {
    let mut registry = FakeRegistry::start().await;
    let register = registry
        .server
        .mock("POST", "/subjects/breakwater.alerts-value/versions")
        .with_status(200)
        .with_header("content-type", "application/vnd.schemaregistry.v1+json")
        .with_body(r#"{"id":4}"#)
        .expect(1)
        .create_async()
        .await;
    let codec = registry.codec();
    for _ in 0..3 {
        codec
            .encode("breakwater.alerts", &samples::resolved_drift())
            .await
            .unwrap();
    }
    register.assert_async().await;
}

/// A producer on another version of the schema: it lacks `po_ref` and `shipment_ref` (which
/// have defaults) and has a field Breakwater does not know.
const OTHER_VERSION: &str = r#"{
  "type": "record", "name": "InventoryEvent", "namespace": "io.breakwater.v1",
  "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "system", "type": "string"},
    {"name": "source_seq", "type": ["null", "long"], "default": null},
    {"name": "type", "type": {"type": "enum", "name": "EventType", "symbols": ["RECEIPT", "ADJUSTMENT", "CYCLE_COUNT", "SNAPSHOT", "ALLOCATION", "DEALLOCATION", "PICK", "SHIP", "RETURN", "TRANSFER_IN", "TRANSFER_OUT", "ORDER_PLACED", "ORDER_CANCELLED"]}},
    {"name": "sku", "type": "string"},
    {"name": "location", "type": "string", "default": ""},
    {"name": "dock_door", "type": "string", "default": ""},
    {"name": "measure", "type": {"type": "enum", "name": "Measure", "symbols": ["on_hand", "allocated", "committed", "safety_stock", "available"]}},
    {"name": "mode", "type": {"type": "enum", "name": "Mode", "symbols": ["DELTA", "ABSOLUTE"]}},
    {"name": "quantity", "type": "int"},
    {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "based_on_version", "type": ["null", "long"], "default": null},
    {"name": "data_as_of", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
    {"name": "reason", "type": ["null", "string"], "default": null},
    {"name": "causation_id", "type": ["null", "string"], "default": null},
    {"name": "correlation_id", "type": ["null", "string"], "default": null},
    {"name": "order_ref", "type": ["null", "string"], "default": null}
  ]
}"#;

#[tokio::test]
async fn a_record_on_another_schema_version_resolves_with_defaults() {
    let mut registry = FakeRegistry::start().await;
    registry.serves(7, OTHER_VERSION).await;
    let codec = registry.codec();

    let writer = Schema::parse_str(OTHER_VERSION).unwrap();
    let null = || Value::Union(0, Box::new(Value::Null));
    let some = |v: Value| Value::Union(1, Box::new(v));
    let datum = Value::Record(vec![
        ("event_id".into(), Value::String("wms-rcv-7781".into())),
        ("system".into(), Value::String("wms".into())),
        ("source_seq".into(), some(Value::Long(7781))),
        ("type".into(), Value::Enum(0, "RECEIPT".into())),
        ("sku".into(), Value::String("SKU-1247".into())),
        ("location".into(), Value::String("DC-1".into())),
        ("dock_door".into(), Value::String("D4".into())),
        ("measure".into(), Value::Enum(0, "on_hand".into())),
        ("mode".into(), Value::Enum(0, "DELTA".into())),
        ("quantity".into(), Value::Int(50)),
        ("occurred_at".into(), Value::TimestampMillis(samples::T0)),
        ("based_on_version".into(), null()),
        ("data_as_of".into(), null()),
        ("reason".into(), null()),
        ("causation_id".into(), null()),
        (
            "correlation_id".into(),
            some(Value::String("po-4471-receiving".into())),
        ),
        ("order_ref".into(), null()),
    ]);
    let mut payload = vec![0, 0, 0, 0, 7];
    payload.extend(
        GenericDatumWriter::builder(&writer)
            .build()
            .unwrap()
            .write_value_to_vec(datum)
            .unwrap(),
    );

    let event: InventoryEvent = codec
        .decode("inventory.wms.events", &payload)
        .await
        .unwrap();
    let expected = InventoryEvent {
        po_ref: None,
        shipment_ref: None,
        line_ref: None,
        ..samples::receipt()
    };
    assert_eq!(
        event, expected,
        "int widened, unknown field dropped, defaults filled"
    );
}

#[tokio::test]
async fn an_unknown_schema_id_is_named_and_asked_again_later() {
    let mut registry = FakeRegistry::start().await;
    let missing = registry
        .server
        .mock("GET", "/schemas/ids/9?deleted=true")
        .with_status(404)
        .with_header("content-type", "application/vnd.schemaregistry.v1+json")
        .with_body(r#"{"error_code":40403,"message":"Schema 9 not found"}"#)
        .create_async()
        .await;
    let codec = registry.codec();
    let payload = [0, 0, 0, 0, 9, 24, b'w'];
    let err = codec
        .decode::<InventoryEvent>("inventory.wms.events", &payload)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CodecError::UnknownSchemaId { id: 9, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "schema id 9 is not in the schema registry");
    assert_eq!(err.class(), ErrorClass::BadData);

    // The schema appears (a replica caught up): the failure was not cached.
    missing.remove_async().await;
    registry
        .knows::<InventoryEvent>(9, "inventory.wms.events")
        .await;
    let payload = codec
        .encode("inventory.wms.events", &samples::receipt())
        .await
        .unwrap();
    let event: InventoryEvent = codec
        .decode("inventory.wms.events", &payload)
        .await
        .unwrap();
    assert_eq!(event, samples::receipt());
}

#[tokio::test]
async fn a_payload_too_short_for_the_header_says_its_length() {
    // No registry is needed: the length is checked first.
    let codec = AvroCodec::with_url("http://127.0.0.1:1");
    for len in 0..5 {
        let payload = vec![0; len];
        let err = codec
            .decode::<InventoryEvent>("inventory.wms.events", &payload)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CodecError::TooShort { len: l } if l == len),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&format!("is {len} bytes")),
            "{err}"
        );
        assert_eq!(err.class(), ErrorClass::BadData);
    }
}

#[tokio::test]
async fn a_payload_without_the_magic_byte_is_rejected() {
    let codec = AvroCodec::with_url("http://127.0.0.1:1");
    let err = codec
        .decode::<InventoryEvent>("t", br#"{"event_id":"x"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CodecError::BadMagic { byte: b'{' }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Avro payload starts with byte 0x7b, not the Confluent magic byte 0x00"
    );
}

#[tokio::test]
async fn a_datum_that_does_not_match_its_schema_is_bad_data() {
    let mut registry = FakeRegistry::start().await;
    registry.knows::<InventoryEvent>(1, "t").await;
    registry.knows::<AlertRecord>(2, "alerts").await;
    let codec = registry.codec();
    let good = codec.encode("t", &samples::receipt()).await.unwrap();

    // Cut inside the last string, and right after `occurred_at` where all that is left is
    // optional unions: `apache_avro` alone decodes both, with nulls for what is missing.
    for cut in [good.len() - 3, 49] {
        let err = codec
            .decode::<InventoryEvent>("t", &good[..cut])
            .await
            .unwrap_err();
        assert!(
            matches!(err, CodecError::AvroDecode { schema_id: 1, .. }),
            "{err:?}"
        );
        let source = std::error::Error::source(&err).unwrap();
        assert!(
            matches!(source.downcast_ref(), Some(DatumError::Truncated)),
            "{source:?}"
        );
        assert_eq!(err.class(), ErrorClass::BadData);
    }
    let mut long = good.clone();
    long.push(0);
    let err = codec
        .decode::<InventoryEvent>("t", &long)
        .await
        .unwrap_err();
    assert!(matches!(err, CodecError::AvroDecode { .. }), "{err:?}");

    // An enum index out of range: `type` is the third field, after two strings and a union.
    let mut bad = good.clone();
    let type_at = 5 + 1 + 12 + 1 + 3 + 1 + 2;
    assert_eq!(bad[type_at], 0, "RECEIPT is symbol 0");
    bad[type_at] = 2 * 40;
    let err = codec.decode::<InventoryEvent>("t", &bad).await.unwrap_err();
    assert!(matches!(err, CodecError::AvroDecode { .. }), "{err:?}");

    // A valid datum of another record.
    let alert = codec
        .encode("alerts", &samples::resolved_drift())
        .await
        .unwrap();
    let err = codec
        .decode::<InventoryEvent>("t", &alert)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CodecError::AvroDecode { schema_id: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Avro payload with schema id 2 is not a valid io.breakwater.v1.InventoryEvent"
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_retryable() {
    // Nothing listens on port 1.
    let codec = AvroCodec::with_url("http://127.0.0.1:1");
    let err = codec
        .decode::<InventoryEvent>("t", &[0, 0, 0, 0, 1, 0])
        .await
        .unwrap_err();
    assert!(
        matches!(err, CodecError::RegistryUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = codec.encode("t", &samples::receipt()).await.unwrap_err();
    assert!(
        matches!(err, CodecError::RegistryUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "schema registry unavailable while looking up subject t-value"
    );
}

#[tokio::test]
async fn registry_errors_say_whether_to_retry() {
    let mut registry = FakeRegistry::start().await;
    registry
        .server
        .mock("GET", "/schemas/ids/1?deleted=true")
        .with_status(500)
        .with_body(r#"{"error_code":50001,"message":"Error in the backend data store"}"#)
        .create_async()
        .await;
    registry
        .server
        .mock("POST", "/subjects/t-value/versions")
        .with_status(401)
        .with_body(r#"{"error_code":401,"message":"Unauthorized"}"#)
        .create_async()
        .await;
    let codec = registry.codec();
    let err = codec
        .decode::<InventoryEvent>("t", &[0, 0, 0, 0, 1, 0])
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = codec.encode("t", &samples::receipt()).await.unwrap_err();
    assert!(matches!(err, CodecError::Registry { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Fatal);
}
