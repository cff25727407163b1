//! The demo through the processor on librdkafka's mock cluster (no broker needed): the
//! article's story raises the alerts the scenario promises, and the fixed stack raises none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // tests: a panic is the failure report

use breakwater_core::{AlertKind, DecisionKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_both_stories() {
    let mut out = Vec::new();
    let told = breakwater::demo::run(&mut out).await.expect("demo runs");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(told.len(), 2, "{text}");
    let kinds: Vec<AlertKind> = told[0].alerts.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        vec![
            AlertKind::StaleAction,
            AlertKind::Drift,
            AlertKind::PhantomAvailability,
            AlertKind::Resolved,
            AlertKind::Resolved
        ],
        "{text}"
    );
    assert!(told[0]
        .alerts
        .iter()
        .all(|a| a.root_cause.event_id == "wms-rcv-7781"
            || a.root_cause.event_id == "wms-alloc-3302"));
    assert!(told[1].alerts.is_empty(), "{text}");
    assert_eq!(told[1].decisions.len(), 1);
    assert_eq!(told[1].decisions[0].decision, DecisionKind::Rejected);
    assert!(text.contains("Cascade map"), "{text}");
    assert!(text.contains("wms -> erp -> storefront"), "{text}");
}
