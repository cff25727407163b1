//! Golden files: one sample of every record type (see `common/samples.rs`) as the JSON codec
//! reads it and as the Avro codec writes it, byte for byte, with schema id 1.
//!
//! After an intentional change to a schema or a sample, regenerate the files and review the
//! diff before committing:
//!
//! ```sh
//! BREAKWATER_BLESS=1 cargo test -p breakwater-codec --test golden
//! ```

#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Debug;
use std::path::PathBuf;

use breakwater_codec::{Codec, JsonCodec, WireRecord};
use common::{samples, FakeRegistry};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/golden")
}

/// `BREAKWATER_BLESS=1` rewrites the golden files from the samples instead of checking them.
fn bless() -> bool {
    std::env::var_os("BREAKWATER_BLESS").is_some_and(|v| v == "1")
}

fn golden(file: &str, fresh: &[u8]) -> Vec<u8> {
    let path = golden_dir().join(file);
    if bless() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, fresh).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with BREAKWATER_BLESS=1 to create it",
            path.display()
        )
    })
}

async fn check<T: WireRecord + PartialEq + Debug>(name: &str, sample: T) {
    let topic = "golden";

    let pretty = serde_json::to_string_pretty(&sample).unwrap() + "\n";
    let json = golden(&format!("{name}.json"), pretty.as_bytes());
    let decoded: T = JsonCodec.decode(topic, &json).await.unwrap();
    assert_eq!(decoded, sample, "{name}.json decodes to the sample");
    let encoded = JsonCodec.encode(topic, &sample).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&encoded).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
        "the sample encodes to {name}.json"
    );

    let mut registry = FakeRegistry::start().await;
    registry.knows::<T>(1, topic).await;
    let codec = registry.codec();
    let encoded = codec.encode(topic, &sample).await.unwrap();
    let avro = golden(&format!("{name}.avro.bin"), &encoded);
    assert_eq!(encoded, avro, "the sample encodes to {name}.avro.bin");
    let decoded: T = codec.decode(topic, &avro).await.unwrap();
    assert_eq!(decoded, sample, "{name}.avro.bin decodes to the sample");
}

#[tokio::test]
async fn inventory_event() {
    check("inventory_event", samples::receipt()).await;
}

#[tokio::test]
async fn reservation_command() {
    check("reservation_command", samples::reserve()).await;
}

#[tokio::test]
async fn propagation_event() {
    check("propagation_event", samples::propagation()).await;
}

#[tokio::test]
async fn alert() {
    check("alert", samples::resolved_drift()).await;
}

#[tokio::test]
async fn incident() {
    check("incident", samples::resolved_incident()).await;
}

#[tokio::test]
async fn reservation_decision() {
    check("reservation_decision", samples::granted()).await;
}

/// The start of the receipt's Avro bytes, worked out by hand from the Avro spec: strings and
/// longs are zig-zag varints, a union is its branch index then the value, an enum its index.
#[test]
fn the_inventory_event_bytes_follow_the_avro_spec() {
    let bytes = std::fs::read(golden_dir().join("inventory_event.avro.bin")).unwrap();
    let mut expected = vec![0, 0, 0, 0, 1]; // magic byte, schema id 1 big-endian
    expected.push(24); // event_id: 12 bytes
    expected.extend(b"wms-rcv-7781");
    expected.push(6); // system: 3 bytes
    expected.extend(b"wms");
    expected.extend([2, 0xca, 0x79]); // source_seq: branch 1 (long), 7781 -> 15562
    expected.push(0); // type: RECEIPT, symbol 0
    expected.push(16); // sku: 8 bytes
    expected.extend(b"SKU-1247");
    expected.push(8); // location: 4 bytes
    expected.extend(b"DC-1");
    expected.extend([0, 0]); // measure on_hand, mode DELTA
    expected.push(100); // quantity: 50
                        // occurred_at: 1775206800000 ms, zig-zag 3550413600000, 7 bits at a time.
    expected.extend([0x80, 0xea, 0x90, 0xa9, 0xaa, 0x67]);
    expected.extend([0, 0, 0, 0]); // based_on_version, data_as_of, reason, causation_id: null
    assert_eq!(bytes[..expected.len()], expected[..]);
}
