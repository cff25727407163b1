//! No input makes a codec panic: arbitrary bytes, short payloads, payloads with the magic
//! byte and a known schema id but a random datum, and mutations of valid records all come
//! back as `Ok` or `Err`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::OnceLock;

use breakwater_codec::{AvroCodec, Codec, JsonCodec};
use breakwater_core::InventoryEvent;
use common::{samples, FakeRegistry};
use proptest::prelude::*;
use proptest::sample::Index;

struct Fixture {
    rt: tokio::runtime::Runtime,
    // Kept alive for the codec.
    _registry: FakeRegistry,
    avro: AvroCodec,
    valid_avro: Vec<u8>,
    valid_json: Vec<u8>,
}

/// One runtime and fake registry for every case: schema id 1 is `InventoryEvent`, any other
/// id is unknown.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (registry, avro, valid_avro) = rt.block_on(async {
            let mut registry = FakeRegistry::start().await;
            registry.knows::<InventoryEvent>(1, "t").await;
            registry.others_unknown().await;
            let avro = registry.codec();
            let valid = avro.encode("t", &samples::receipt()).await.unwrap();
            (registry, avro, valid)
        });
        let valid_json = serde_json::to_vec(&samples::receipt()).unwrap();
        Fixture {
            rt,
            _registry: registry,
            avro,
            valid_avro,
            valid_json,
        }
    })
}

fn decode_both(payload: &[u8]) {
    let f = fixture();
    let _ =
        f.rt.block_on(JsonCodec.decode::<InventoryEvent>("t", payload));
    let _ = f.rt.block_on(f.avro.decode::<InventoryEvent>("t", payload));
}

/// `valid` with some bytes overwritten and possibly cut short.
fn mutate(valid: &[u8], edits: &[(Index, u8)], cut: Index) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for (at, byte) in edits {
        let i = at.index(bytes.len());
        bytes[i] = *byte;
    }
    bytes.truncate(cut.index(bytes.len() + 1));
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn short_payloads(payload in prop::collection::vec(any::<u8>(), 0..=8)) {
        decode_both(&payload);
    }

    #[test]
    fn payloads_with_the_magic_byte(tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut payload = vec![0];
        payload.extend(tail);
        decode_both(&payload);
    }

    #[test]
    fn random_datums_for_a_known_schema(datum in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut payload = vec![0, 0, 0, 0, 1];
        payload.extend(datum);
        decode_both(&payload);
    }

    #[test]
    fn mutated_records(
        edits in prop::collection::vec(any::<(Index, u8)>(), 1..4),
        cut in any::<Index>(),
    ) {
        let f = fixture();
        decode_both(&mutate(&f.valid_avro, &edits, cut));
        decode_both(&mutate(&f.valid_json, &edits, cut));
    }

    #[test]
    fn arbitrary_bytes(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_both(&payload);
    }
}
