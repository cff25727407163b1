//! Every story in `testdata/scenarios/` produces exactly the alerts it lists and the
//! propagation events it names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};

use breakwater_core::scenario::{check, run, Scenario};
use breakwater_core::{CascadeConfig, Model};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scenarios")
}

fn load(path: &Path) -> (Scenario, Model) {
    let text = std::fs::read_to_string(path).unwrap();
    let scenario: Scenario =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cfg_path = path.parent().unwrap().join(&scenario.config);
    let cfg: CascadeConfig = toml::from_str(&std::fs::read_to_string(&cfg_path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", cfg_path.display()));
    let model = Model::build(&cfg).unwrap_or_else(|e| panic!("{}: {e}", cfg_path.display()));
    (scenario, model)
}

#[test]
fn every_scenario_produces_what_it_expects() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios found");
    let mut failures = Vec::new();
    for f in &files {
        let (scenario, model) = load(f);
        let inputs = scenario.inputs();
        let (result, _) = run(&model, &inputs, scenario.at(scenario.end_secs));
        if let Err(e) = check(&model, &scenario, &result) {
            failures.push(format!("{}:\n{e}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_article_story_is_deterministic() {
    let (scenario, model) = load(&scenarios_dir().join("sku-1247.toml"));
    let inputs = scenario.inputs();
    let end = scenario.at(scenario.end_secs);
    let (a, sa) = run(&model, &inputs, end);
    let (b, sb) = run(&model, &inputs, end);
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(sa, sb);
}
