//! Any datum through the Avro decoder (Confluent framing, schema resolution, the strict
//! reader): the input is framed with a pinned schema id so no registry is asked, once as an
//! inventory event (id 1) and once as a reservation command (id 2). An `Ok` or an `Err`,
//! never a panic, and no allocation beyond the codec's cap.

#![no_main]

use std::sync::OnceLock;

use breakwater_codec::{AvroCodec, Codec};
use breakwater_core::{InventoryEvent, ReservationCommand};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    rt: tokio::runtime::Runtime,
    codec: AvroCodec,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Nothing listens there: a lookup would fail, but every id used is pinned.
        let codec = AvroCodec::with_url("http://127.0.0.1:9");
        codec.pin_writer::<InventoryEvent>(1).expect("schema");
        codec.pin_writer::<ReservationCommand>(2).expect("schema");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        Fixture { rt, codec }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut framed = Vec::with_capacity(data.len() + 5);
    framed.extend_from_slice(&[0, 0, 0, 0, 1]);
    framed.extend_from_slice(data);
    let _ = f.rt.block_on(f.codec.decode::<InventoryEvent>("t", &framed));
    framed[4] = 2;
    let _ = f.rt.block_on(f.codec.decode::<ReservationCommand>("t", &framed));
});
