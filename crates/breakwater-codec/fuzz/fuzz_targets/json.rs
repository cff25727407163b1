//! Any bytes through the JSON decoder of every record type: an `Ok` or an `Err`, never a
//! panic (the processor decodes input records with it, consumers decode its outputs).

#![no_main]

use breakwater_codec::{AlertRecord, DecisionRecord, IncidentRecord, JsonCodec, PropagationRecord};
use breakwater_core::{InventoryEvent, ReservationCommand};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = JsonCodec.decode_now::<InventoryEvent>(data);
    let _ = JsonCodec.decode_now::<ReservationCommand>(data);
    let _ = JsonCodec.decode_now::<PropagationRecord>(data);
    let _ = JsonCodec.decode_now::<AlertRecord>(data);
    let _ = JsonCodec.decode_now::<IncidentRecord>(data);
    let _ = JsonCodec.decode_now::<DecisionRecord>(data);
});
