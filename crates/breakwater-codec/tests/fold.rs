//! The samples behind the golden files are what the fold really emits in the SKU-1247 story
//! (`testdata/scenarios/sku-1247.toml` under `deploy/breakwater.toml`), converted by this
//! crate. A failure here with the golden tests passing means the fold changed, not the wire.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use breakwater_codec::{alert_record, decision_record, incident_record, propagation_record};
use breakwater_core::scenario::{run, Scenario, ScenarioInput};
use breakwater_core::{AlertKind, CascadeConfig, IncidentBook, IncidentStatus, Model, Output};
use common::samples;

fn story() -> (Scenario, Model) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scenarios");
    let text = std::fs::read_to_string(dir.join("sku-1247.toml")).unwrap();
    let scenario: Scenario = toml::from_str(&text).unwrap();
    let cfg = std::fs::read_to_string(dir.join(&scenario.config)).unwrap();
    let cfg: CascadeConfig = toml::from_str(&cfg).unwrap();
    (scenario, Model::build(&cfg).unwrap())
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('|').unwrap_or((key, ""))
}

#[test]
fn the_propagation_and_alert_samples_come_from_the_story() {
    let (scenario, model) = story();
    let (result, _) = run(&model, &scenario.inputs(), scenario.at(scenario.end_secs));
    let mut propagations = Vec::new();
    let mut alerts = Vec::new();
    for (_, key, output) in &result.outputs {
        let (sku, location) = split(key);
        match output {
            Output::Propagation(p) => {
                propagations.push(propagation_record(&model, sku, location, p))
            }
            Output::Alert(a) => alerts.push(alert_record(&model, sku, location, a)),
            _ => {}
        }
    }
    let propagation = samples::propagation();
    assert!(
        propagations.contains(&propagation),
        "{propagation:#?} not among {propagations:#?}"
    );
    let resolved: Vec<_> = alerts
        .into_iter()
        .filter(|a| a.kind == AlertKind::Resolved && a.system == "erp")
        .collect();
    assert_eq!(resolved, [samples::resolved_drift()]);
}

/// The story's alerts through one partition's incident book, in the order the fold raised
/// them, with stream time moved to each output's time (as the processor does).
#[test]
fn the_incident_sample_comes_from_the_story() {
    let (scenario, model) = story();
    let (result, _) = run(&model, &scenario.inputs(), scenario.at(scenario.end_secs));
    let mut book = IncidentBook::new();
    let mut reports = Vec::new();
    for (at, key, output) in &result.outputs {
        let _ = book.advance(*at, &mut reports);
        if let Output::Alert(a) = output {
            assert!(
                book.on_alert(&model, key, a, *at, &mut reports),
                "no rate limit set"
            );
        }
    }
    let erp: Vec<_> = reports
        .iter()
        .filter(|r| r.status == IncidentStatus::Resolved && model.name(r.incident.system) == "erp")
        .map(|r| incident_record(&model, 0, r))
        .collect();
    assert_eq!(erp, [samples::resolved_incident()]);
}

#[test]
fn the_decision_sample_comes_from_the_story() {
    let (scenario, model) = story();
    let reserve = samples::reserve();
    let mut inputs: Vec<_> = scenario
        .inputs()
        .into_iter()
        .filter(|(t, _)| *t <= samples::T0)
        .collect();
    inputs.push((reserve.issued_at, ScenarioInput::Command(reserve.clone())));
    let (result, _) = run(&model, &inputs, reserve.issued_at);
    let decisions: Vec<_> = result
        .outputs
        .iter()
        .filter_map(|(_, key, output)| match output {
            Output::Decision(d) => {
                let (sku, location) = split(key);
                Some(decision_record(sku, location, d))
            }
            _ => None,
        })
        .collect();
    assert_eq!(decisions, [samples::granted()]);
}
