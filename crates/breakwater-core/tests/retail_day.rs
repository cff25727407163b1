//! A normal retail day, truth-scored: the generator's stream (stores and DCs, orders with
//! lifecycles, ERP batches, a cached storefront, cycle counts with shrinkage) folded through
//! the pure fold. The clean day raises no alert at all; a day with injected faults raises
//! exactly the alerts the faults make true, with the right kind and root; and the final
//! authoritative state equals the generator's truth for every key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;

use breakwater_core::retail::{generate, replay, score, scored, Generated, RetailConfig};
use breakwater_core::scenario::incident_id;
use breakwater_core::{CascadeConfig, Measure, Model};

fn model() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/retail/breakwater.toml");
    let cfg: CascadeConfig = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Model::build(&cfg).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_truth(model: &Model, g: &Generated, cfg: &RetailConfig) {
    let r = replay(model, &g.inputs, cfg.end_ms());
    let mut wrong = Vec::new();
    for ((sku, loc), t) in &g.truth {
        let st = &r.states[&breakwater_core::message_key(sku, loc)];
        let got = (
            st.value(Measure::OnHand),
            st.value(Measure::Allocated),
            st.value(Measure::Committed),
            st.value(Measure::SafetyStock),
        );
        let want = (t.on_hand, t.allocated, t.committed, t.safety_stock);
        if got != want {
            wrong.push(format!("{sku}|{loc}: got {got:?}, truth {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} keys differ from the truth, e.g. {:?}",
        wrong.len(),
        g.truth.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(r.rejected.is_empty(), "rejected: {:?}", r.rejected);
}

#[test]
fn a_clean_retail_day_raises_no_alert_and_ends_on_the_truth() {
    let model = model();
    let cfg = RetailConfig {
        faults: false,
        ..RetailConfig::small()
    };
    let g = generate(&cfg);
    let r = replay(&model, &g.inputs, cfg.end_ms());
    let alerts: Vec<String> = r
        .alerts
        .iter()
        .take(10)
        .map(|(sku, loc, a)| {
            format!(
                "{sku}|{loc} {:?} on {} at {} root {} ({:?})",
                a.kind,
                model.name(a.system),
                a.opened_at,
                a.root.event_id,
                a.measure
            )
        })
        .collect();
    assert!(
        r.alerts.is_empty(),
        "{} alerts on a clean day of {} orders, e.g.:\n{}",
        r.alerts.len(),
        g.orders,
        alerts.join("\n")
    );
    // Most orders were taken on a cached view: counted, not alerted.
    assert!(
        r.actions.get("stale_sufficient").copied().unwrap_or(0) > 0,
        "{:?}",
        r.actions
    );
    assert_truth(&model, &g, &cfg);
}

#[test]
fn every_injected_fault_is_alerted_with_its_kind_and_root_and_nothing_else() {
    let model = model();
    let cfg = RetailConfig::small();
    let g = generate(&cfg);
    let r = replay(&model, &g.inputs, cfg.end_ms());
    let s = score(&g.faults, &scored(&model, &r.alerts));
    assert!(
        s.false_positives == 0 && s.false_negatives == 0,
        "precision {:.3}, recall {:.3}: {:#?}",
        s.precision(),
        s.recall(),
        s.unmatched
    );
    assert!(s.true_positives >= s.expected && s.expected > 0);
    // Every alert that opened also resolved by the end of the day (the faults heal), under
    // the same incident.
    let opened: BTreeSet<String> = r
        .alerts
        .iter()
        .filter(|(_, _, a)| a.window_ms > 0 && a.resolves.is_none())
        .map(|(_, _, a)| incident_id(&model, a))
        .collect();
    let resolved: BTreeSet<String> = r
        .alerts
        .iter()
        .filter(|(_, _, a)| a.resolves.is_some())
        .map(|(_, _, a)| incident_id(&model, a))
        .collect();
    assert_eq!(opened, resolved);
    assert_truth(&model, &g, &cfg);
}

#[test]
fn the_same_seed_gives_the_same_alerts() {
    let model = model();
    let cfg = RetailConfig::small();
    let a = replay(&model, &generate(&cfg).inputs, cfg.end_ms());
    let b = replay(&model, &generate(&cfg).inputs, cfg.end_ms());
    assert_eq!(a.alerts, b.alerts);
    assert_eq!(a.states, b.states);
}
