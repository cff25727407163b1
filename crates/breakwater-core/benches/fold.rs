//! The fold alone on a realistic mix over 100k keys: no Kafka, no RocksDB, state in a Vec.
//!
//! `cargo bench -p breakwater-core --bench fold` prints events/s ("thrpt").
//!
//! The mix, per 100 inputs: 30 WMS counts (receipts, picks, adjustments), 10 WMS
//! allocations, 20 ERP and record snapshots, 15 storefront orders, 10 storefront availability
//! snapshots, 10 reservation commands (reserve, commit or release) and 5 timer firings.
//! Keys are drawn uniformly, so most inputs touch a cold-ish key as in a real partition.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::time::{Duration, Instant};

use breakwater_core::{
    apply, CascadeConfig, CommandKind, EventType, Input, InventoryEvent, KeyState, Measure, Mode,
    Model, ReservationCommand,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const KEYS: usize = 100_000;
const INPUTS: usize = 1_000_000;

enum Inp {
    E(InventoryEvent),
    C(ReservationCommand),
    T,
}

/// A small deterministic generator (xorshift), so the bench needs no extra crate and every run
/// sees the same inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(id: usize, system: &str, t: EventType, m: Measure, mode: Mode, q: i64) -> InventoryEvent {
    InventoryEvent {
        event_id: format!("e{id}"),
        system: system.into(),
        source_seq: None,
        event_type: t,
        sku: "SKU".into(),
        location: "DC".into(),
        measure: m,
        mode,
        quantity: q,
        occurred_at: 0,
        based_on_version: None,
        data_as_of: None,
        reason: None,
        causation_id: None,
        correlation_id: None,
        order_ref: None,
        po_ref: None,
        shipment_ref: None,
        line_ref: None,
    }
}

fn inputs() -> Vec<(usize, Inp)> {
    generate(0x9e37_79b9_7f4a_7c15, 0)
}

fn warmup_inputs() -> Vec<(usize, Inp)> {
    generate(0x2545_f491_4f6c_dd1d, INPUTS)
}

/// `INPUTS` inputs with ids starting at `first_id`.
fn generate(seed: u64, first_id: usize) -> Vec<(usize, Inp)> {
    let mut rng = Rng(seed);
    (first_id..first_id + INPUTS)
        .map(|i| {
            let key = rng.below(KEYS as u64) as usize;
            let roll = rng.below(100);
            let inp = match roll {
                0..30 => {
                    let (t, q) = match rng.below(3) {
                        0 => (EventType::Receipt, 1 + rng.below(50) as i64),
                        1 => (EventType::Pick, -(1 + rng.below(5) as i64)),
                        _ => (EventType::Adjustment, rng.below(7) as i64 - 3),
                    };
                    let q = if q == 0 { 1 } else { q };
                    Inp::E(event(i, "wms", t, Measure::OnHand, Mode::Delta, q))
                }
                30..40 => Inp::E(event(
                    i,
                    "wms",
                    EventType::Allocation,
                    Measure::Allocated,
                    Mode::Delta,
                    1 + rng.below(4) as i64,
                )),
                40..60 => {
                    let sys = if roll < 50 { "erp" } else { "record" };
                    Inp::E(event(
                        i,
                        sys,
                        EventType::Snapshot,
                        Measure::OnHand,
                        Mode::Absolute,
                        rng.below(500) as i64,
                    ))
                }
                60..75 => {
                    let mut e = event(
                        i,
                        "storefront",
                        EventType::OrderPlaced,
                        Measure::Committed,
                        Mode::Delta,
                        1 + rng.below(3) as i64,
                    );
                    e.based_on_version = Some(rng.below(20) as i64);
                    Inp::E(e)
                }
                75..85 => Inp::E(event(
                    i,
                    "storefront",
                    EventType::Snapshot,
                    Measure::Available,
                    Mode::Absolute,
                    rng.below(500) as i64,
                )),
                85..95 => {
                    let kind = match rng.below(3) {
                        0 | 1 => CommandKind::Reserve,
                        _ => CommandKind::Commit,
                    };
                    Inp::C(ReservationCommand {
                        command_id: format!("c{i}"),
                        command: kind,
                        reservation_id: format!("r{}", rng.below(4)),
                        sku: "SKU".into(),
                        location: "DC".into(),
                        quantity: 1 + rng.below(3) as i64,
                        channel: "web".into(),
                        ttl_ms: Some(600_000),
                        issued_at: 0,
                        order_ref: None,
                        line_ref: None,
                    })
                }
                _ => Inp::T,
            };
            (key, inp)
        })
        .collect()
}

fn model() -> Model {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/breakwater.toml"
    ))
    .expect("deploy/breakwater.toml");
    let cfg: CascadeConfig = toml::from_str(&text).expect("config parses");
    Model::build(&cfg).expect("config is valid")
}

fn fold(c: &mut Criterion) {
    let model = model();
    let inputs = inputs();
    // Every key starts from a state built by a different history, so the measured inputs meet
    // steady-state keys (views, history and rings populated) and none of them is a duplicate.
    let mut warm: Vec<KeyState> = vec![KeyState::default(); KEYS];
    let mut out = Vec::with_capacity(64);
    let mut now = 1_000_000_000i64;
    for (k, inp) in &warmup_inputs() {
        now += 1;
        out.clear();
        step(&model, &mut warm[*k], inp, now, &mut out);
    }
    let start = now;
    let mut g = c.benchmark_group("fold");
    g.throughput(Throughput::Elements(INPUTS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("realistic_mix_100k_keys", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut states = warm.clone();
                let mut now = start;
                let t = Instant::now();
                for (k, inp) in &inputs {
                    now += 1;
                    out.clear();
                    step(&model, &mut states[*k], inp, now, &mut out);
                    black_box(out.len());
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn step(
    model: &Model,
    st: &mut KeyState,
    inp: &Inp,
    now: i64,
    out: &mut Vec<breakwater_core::Output>,
) {
    let r = match inp {
        Inp::E(e) => apply(model, st, Input::Event(e), now, out),
        Inp::C(c) => apply(model, st, Input::Command(c), now, out),
        Inp::T => apply(model, st, Input::Timer, now, out),
    };
    let _ = black_box(r);
}

criterion_group!(benches, fold);
criterion_main!(benches);
