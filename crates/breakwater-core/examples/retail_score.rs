//! The retail-day benchmark: generates a truth-scored retail stream, folds it through the pure
//! fold and prints alert precision and recall against the injected faults, false alerts per
//! 10k orders, the incidents the alerts make, keys whose final state differs from the truth,
//! and the fold's throughput.
//!
//! ```sh
//! cargo run --release -p breakwater-core --example retail_score -- month   # 30 days, 36k keys
//! cargo run --release -p breakwater-core --example retail_score -- small 7 # 1 day, seed 7
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use breakwater_core::retail::{generate, replay, score, scored, RetailConfig};
use breakwater_core::{CascadeConfig, Measure, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let size = args.next().unwrap_or_else(|| "month".to_owned());
    let mut cfg = match size.as_str() {
        "small" => RetailConfig::small(),
        "month" => RetailConfig::month(),
        other => return Err(format!("size {other:?}: small or month").into()),
    };
    if let Some(seed) = args.next() {
        cfg.seed = seed.parse()?;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/retail/breakwater.toml");
    let cascade: CascadeConfig = toml::from_str(&std::fs::read_to_string(path)?)?;
    let model = Model::build(&cascade)?;

    let t = Instant::now();
    let g = generate(&cfg);
    let generated = t.elapsed();
    let t = Instant::now();
    let r = replay(&model, &g.inputs, cfg.end_ms());
    let folded = t.elapsed();

    let s = score(&g.faults, &scored(&model, &r.alerts));
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, a) in &r.alerts {
        *by_kind.entry(a.kind.as_str()).or_default() += 1;
    }
    let off_truth = g
        .truth
        .iter()
        .filter(|((sku, loc), t)| {
            let st = &r.states[&breakwater_core::message_key(sku, loc)];
            (
                st.value(Measure::OnHand),
                st.value(Measure::Allocated),
                st.value(Measure::Committed),
                st.value(Measure::SafetyStock),
            ) != (t.on_hand, t.allocated, t.committed, t.safety_stock)
        })
        .count();
    let negative = r
        .states
        .values()
        .filter(|st| st.value(Measure::Available) < 0)
        .count();
    let bytes: usize = r
        .states
        .values()
        .map(|st| postcard::to_allocvec(st).map_or(0, |v| v.len()))
        .sum();

    println!("retail day: {size}, seed {}", cfg.seed);
    println!(
        "  {} inputs over {} days, {} keys, {} order lines, {} injected faults ({} expected alerts)",
        r.inputs,
        cfg.duration_ms / 86_400_000,
        r.states.len(),
        g.orders,
        g.faults.len(),
        s.expected
    );
    println!("  alerts by kind: {by_kind:?}");
    println!("  actions without alert: {:?}", r.actions);
    let mut incidents: BTreeMap<&str, usize> = BTreeMap::new();
    for rep in &r.incidents {
        *incidents.entry(rep.status.as_str()).or_default() += 1;
    }
    let alerts = r
        .alerts
        .iter()
        .filter(|(_, _, a)| a.kind != breakwater_core::AlertKind::Resolved)
        .count();
    println!(
        "  incidents: {} opened for {alerts} alerts; reports {incidents:?}",
        incidents.get("OPENED").copied().unwrap_or(0)
    );
    println!(
        "  precision {:.4}  recall {:.4}  (true {}, false {}, missed {})",
        s.precision(),
        s.recall(),
        s.true_positives,
        s.false_positives,
        s.false_negatives
    );
    println!(
        "  false alerts per 10k orders: {:.2}",
        s.false_positives as f64 * 10_000.0 / g.orders.max(1) as f64
    );
    println!(
        "  keys off the truth at the end: {off_truth} of {}; keys with negative availability: {negative}",
        g.truth.len()
    );
    println!(
        "  generate {:.1} s; fold {:.2} s = {:.0} inputs/s on one core; state {:.0} bytes/key serialised",
        generated.as_secs_f64(),
        folded.as_secs_f64(),
        r.inputs as f64 / folded.as_secs_f64(),
        bytes as f64 / r.states.len().max(1) as f64
    );
    for u in s.unmatched.iter().take(10) {
        println!("  unmatched: {u:?}");
    }
    Ok(())
}
