//! The dashboard's and the alert rules' PromQL against the metric catalogue
//! (`breakwater::metrics::CATALOGUE`): every metric they name is one Breakwater exports, and
//! every label they match on, group by or list is one that metric carries. A renamed metric or
//! label shows up here instead of as an empty panel or an alert that can never fire.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;

use breakwater::metrics::{is_histogram, CATALOGUE};
use regex::Regex;

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The labels of series `name` (a catalogue metric, a histogram's `_bucket`/`_sum`/`_count`,
/// or `up`), or `None` if Breakwater does not export it.
fn labels_of(name: &str) -> Option<BTreeSet<&'static str>> {
    let mut labels: BTreeSet<&'static str> = TARGET_LABELS.into_iter().collect();
    if name == "up" {
        return Some(labels);
    }
    let (base, bucket) = match ["_bucket", "_sum", "_count"].iter().find_map(|s| {
        name.strip_suffix(s)
            .filter(|b| is_histogram(b))
            .map(|b| (b, *s))
    }) {
        Some((b, s)) => (b, s == "_bucket"),
        None => (name, false),
    };
    let (_, own) = CATALOGUE.iter().find(|(n, _)| *n == base)?;
    labels.extend(own.iter().copied());
    if bucket {
        labels.insert("le");
    }
    Some(labels)
}

/// What is wrong with `expr` (from `origin`), if anything.
fn problems(expr: &str, origin: &str) -> Vec<String> {
    let selector =
        Regex::new(r"\b(breakwater_[a-z_]+|process_[a-z_]+|up)\b\s*(\{[^}]*\})?").unwrap();
    let matcher = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*""#).unwrap();
    let grouping = Regex::new(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)").unwrap();
    let mut out = Vec::new();
    let mut all_labels = BTreeSet::new();
    let mut metrics = 0;
    for c in selector.captures_iter(expr) {
        let name = &c[1];
        metrics += 1;
        let Some(labels) = labels_of(name) else {
            out.push(format!("{origin}: {name} is not exported (in {expr:?})"));
            continue;
        };
        if let Some(sel) = c.get(2) {
            for m in matcher.captures_iter(sel.as_str()) {
                if !labels.contains(&m[1]) {
                    out.push(format!(
                        "{origin}: {name} has no label {:?} (it has {labels:?})",
                        &m[1]
                    ));
                }
            }
        }
        all_labels.extend(labels);
    }
    if metrics > 0 {
        for g in grouping.captures_iter(expr) {
            for label in g[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
                if !all_labels.contains(label) {
                    out.push(format!(
                        "{origin}: grouping by {label:?}, which none of its metrics has (in {expr:?})"
                    ));
                }
            }
        }
    }
    out
}

/// Every `expr` and templating `query` string in the dashboard JSON, with where it is.
fn dashboard_exprs(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            let here = m
                .get("title")
                .or_else(|| m.get("name"))
                .and_then(|t| t.as_str())
                .map_or_else(|| at.to_owned(), |t| format!("{at} / {t}"));
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", serde_json::Value::String(s)) => {
                        out.push((here.clone(), label_values_to_selector(s)));
                    }
                    ("query", serde_json::Value::Object(q)) => {
                        if let Some(s) = q.get("query").and_then(|s| s.as_str()) {
                            out.push((here.clone(), label_values_to_selector(s)));
                        }
                    }
                    _ => dashboard_exprs(x, &here, out),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                dashboard_exprs(x, at, out);
            }
        }
        _ => {}
    }
}

/// Grafana's `label_values(metric, label)` as a PromQL selector naming the label, so it is
/// checked like any other.
fn label_values_to_selector(q: &str) -> String {
    let lv = Regex::new(r"label_values\(\s*([a-z_]+)\s*,\s*([a-z_]+)\s*\)").unwrap();
    lv.replace_all(q, r#"$1{$2=~".+"}"#).into_owned()
}

/// Every `expr:` of the rules file, single-line or a block.
fn rule_exprs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut alert = String::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            alert = name.trim().to_owned();
        }
        if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == ">" {
                let indent = line.len() - t.len();
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let ni = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && ni <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                out.push((alert.clone(), block.join(" ")));
            } else {
                out.push((alert.clone(), rest.to_owned()));
            }
        }
        i += 1;
    }
    out
}

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_dashboard_names_only_exported_metrics_and_labels() {
    let v: serde_json::Value =
        serde_json::from_str(&deploy("grafana/breakwater-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&v, "dashboard", &mut exprs);
    let with_metrics = exprs
        .iter()
        .filter(|(_, e)| e.contains("breakwater_"))
        .count();
    assert!(with_metrics >= 10, "found only {with_metrics} expressions");
    let found: Vec<String> = exprs.iter().flat_map(|(at, e)| problems(e, at)).collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_alert_rules_name_only_exported_metrics_and_labels() {
    let exprs = rule_exprs(&deploy("alerts.yml"));
    assert!(exprs.len() >= 8, "found only {} rules", exprs.len());
    let found: Vec<String> = exprs
        .iter()
        .flat_map(|(at, e)| problems(e, &format!("rule {at}")))
        .collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_checker_catches_a_renamed_metric_or_label() {
    assert!(problems(
        "sum(rate(breakwater_alerts_total{kind=\"OVERSELL\"}[5m]))",
        "ok"
    )
    .is_empty());
    assert!(problems(
        "histogram_quantile(0.99, sum by (le, handoff) (rate(breakwater_handoff_convergence_seconds_bucket[5m])))",
        "ok"
    )
    .is_empty());
    assert_eq!(problems("rate(breakwater_alert_total[5m])", "x").len(), 1);
    assert_eq!(
        problems("breakwater_alerts_total{severity=\"x\"}", "x").len(),
        1
    );
    assert_eq!(
        problems("sum by (handoff) (breakwater_alerts_total)", "x").len(),
        1
    );
    assert_eq!(
        problems(
            &label_values_to_selector("label_values(breakwater_assigned_partitions, instance)"),
            "x"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(
            &label_values_to_selector("label_values(breakwater_assigned_partitions, pod)"),
            "x"
        )
        .len(),
        1
    );
}
