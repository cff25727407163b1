//! The JSON codec: field names as in Avro, integer millisecond timestamps, errors that name
//! the field.

#![allow(clippy::unwrap_used)]

mod common;

use breakwater_codec::{Codec, CodecError, ErrorClass, JsonCodec};
use breakwater_core::{InventoryEvent, ReservationCommand};
use common::samples;

const RECEIPT: &str = r#"{
  "event_id": "wms-rcv-7781",
  "system": "wms",
  "type": "RECEIPT",
  "sku": "SKU-1247",
  "location": "DC-1",
  "measure": "on_hand",
  "mode": "DELTA",
  "quantity": 50,
  "occurred_at": 1775206800000
}"#;

async fn decode(json: &str) -> Result<InventoryEvent, CodecError> {
    JsonCodec
        .decode("inventory.wms.events", json.as_bytes())
        .await
}

#[tokio::test]
async fn optional_fields_may_be_left_out() {
    let event = decode(RECEIPT).await.unwrap();
    assert_eq!(event.quantity, 50);
    assert_eq!(event.occurred_at, samples::T0);
    assert_eq!((event.source_seq, event.data_as_of), (None, None));

    let command: ReservationCommand = JsonCodec
        .decode(
            "breakwater.reservations",
            br#"{"command_id": "c", "command": "COMMIT", "reservation_id": "r",
                 "sku": "SKU-1247", "channel": "storefront", "issued_at": 1775206860000}"#,
        )
        .await
        .unwrap();
    assert_eq!((command.location.as_str(), command.quantity), ("", 0));
}

#[tokio::test]
async fn timestamps_are_integer_milliseconds() {
    let bytes = JsonCodec
        .encode("t", &samples::stale_order())
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["occurred_at"], 1_775_207_040_000_i64);
    assert_eq!(json["data_as_of"], 1_775_203_900_000_i64);
    assert_eq!(json["type"], "ORDER_PLACED");
    assert_eq!(json["measure"], "committed");
}

#[tokio::test]
async fn a_wrong_type_names_the_field_and_the_position() {
    let err = decode(&RECEIPT.replace("\"quantity\": 50", "\"quantity\": \"fifty\""))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CodecError::JsonDecode { field: Some(f), .. } if f == "quantity"),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::BadData);
    assert_eq!(
        err.to_string(),
        "JSON payload is not a valid io.breakwater.v1.InventoryEvent (field `quantity`)"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(
        source,
        "invalid type: string \"fifty\", expected i64 at line 9 column 21"
    );
}

#[tokio::test]
async fn an_unknown_field_is_rejected() {
    let err = decode(&RECEIPT.replace("\"mode\"", "\"colour\": \"red\",\n  \"mode\""))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CodecError::JsonDecode { field: Some(f), .. } if f == "colour"),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.starts_with("unknown field `colour`"), "{source}");
}

#[tokio::test]
async fn a_missing_field_and_bad_syntax_are_rejected() {
    let err = decode(&RECEIPT.replace("  \"sku\": \"SKU-1247\",\n", ""))
        .await
        .unwrap_err();
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.starts_with("missing field `sku`"), "{source}");

    let err = decode(&RECEIPT.replace("50,", "50")).await.unwrap_err();
    assert!(
        matches!(&err, CodecError::JsonDecode { field: Some(f), .. } if f == "quantity"),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::BadData);

    let err = decode("").await.unwrap_err();
    assert!(
        matches!(err, CodecError::JsonDecode { field: None, .. }),
        "{err:?}"
    );
}
