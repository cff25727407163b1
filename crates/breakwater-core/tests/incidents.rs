//! Incidents: alerts grouped by kind, handoff and interval; per-kind rate limits; the merge of
//! several partitions' reports of one incident.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use breakwater_core::incident::{IncidentBook, IncidentView, INCIDENT_INTERVAL_MS, SAMPLE_KEYS};
use breakwater_core::output::{Cause, RootCause};
use breakwater_core::scenario::incident_id;
use breakwater_core::{
    Alert, AlertKind, CascadeConfig, EventType, Id, IncidentReport, IncidentStatus, Measure,
    Millis, Model, SysId,
};

const CONFIG: &str = r#"
[[systems]]
name = "wms"
input_topic = "wms.in"
propagation_topic = "wms.out"

[[systems]]
name = "erp"
input_topic = "erp.in"
propagation_topic = "erp.out"

[[systems]]
name = "storefront"
input_topic = "sf.in"
propagation_topic = "sf.out"
customer_facing = true

[measures.on_hand]
authority = "wms"
[measures.allocated]
authority = "wms"
[measures.committed]
authority = "breakwater"
[measures.safety_stock]
authority = "erp"

[[handoffs]]
from = "wms"
to = "erp"
window_ms = 900000

[[handoffs]]
from = "wms"
to = "storefront"
window_ms = 60000

[[handoffs]]
from = "breakwater"
to = "storefront"
window_ms = 60000

[alerts.rate_limit_per_minute]
OVERSELL = 2
"#;

/// 2026-04-03T09:00:00Z, on a 15-minute boundary.
const T0: Millis = 1_775_206_800_000;

fn model(extra: &str) -> Model {
    let cfg: CascadeConfig = toml::from_str(&format!("{CONFIG}{extra}")).unwrap();
    Model::build(&cfg).unwrap_or_else(|e| panic!("{e}"))
}

fn root(id: &str, at: Millis) -> RootCause {
    RootCause {
        event_id: Id::new(id).unwrap(),
        system: SysId::of("wms"),
        cause: Cause::Event(EventType::Receipt),
        occurred_at: at,
        version: 1,
    }
}

/// The ERP's DRIFT on one key: diverged at `since`, opened a window later.
fn drift(since: Millis) -> Alert {
    Alert {
        kind: AlertKind::Drift,
        resolves: None,
        system: SysId::of("erp"),
        measure: Measure::OnHand,
        expected: 10,
        observed: 7,
        root: root("wms-rcv", since),
        origin: SysId::of("wms"),
        window_ms: 900_000,
        diverged_at: since,
        opened_at: since + 900_000,
        opened_version: 3,
        trigger: Id::EMPTY,
        resolved_at: None,
    }
}

fn resolved(a: &Alert, at: Millis) -> Alert {
    Alert {
        kind: AlertKind::Resolved,
        resolves: Some(a.kind),
        resolved_at: Some(at),
        ..*a
    }
}

/// A storefront order beyond availability, on current data.
fn oversell(at: Millis) -> Alert {
    Alert {
        kind: AlertKind::Oversell,
        resolves: None,
        system: SysId::of("storefront"),
        measure: Measure::Committed,
        expected: 0,
        observed: 1,
        root: root("wms-alloc", at - 5_000),
        origin: SysId::of("wms"),
        window_ms: 0,
        diverged_at: at - 5_000,
        opened_at: at,
        opened_version: 9,
        trigger: Id::new("order").unwrap(),
        resolved_at: None,
    }
}

fn statuses(reports: &[IncidentReport]) -> Vec<(IncidentStatus, u64)> {
    reports
        .iter()
        .map(|r| (r.status, r.incident.alerts))
        .collect()
}

#[test]
fn a_missed_batch_over_many_keys_is_one_incident_reported_as_it_doubles_and_resolved_once() {
    let model = model("");
    let mut book = IncidentBook::new();
    let mut reports = Vec::new();
    // 100 keys drift from changes spread over the first 10 minutes of one 15-minute interval.
    let alerts: Vec<(String, Alert)> = (0..100)
        .map(|i| (format!("SKU-{i}|DC-1"), drift(T0 + i * 6_000)))
        .collect();
    for (key, a) in &alerts {
        book.advance(a.opened_at, &mut reports);
        assert!(book.on_alert(&model, key, a, a.opened_at, &mut reports));
    }
    let ids: std::collections::BTreeSet<String> =
        alerts.iter().map(|(_, a)| incident_id(&model, a)).collect();
    assert_eq!(ids.len(), 1, "one incident id: {ids:?}");
    assert_eq!(
        statuses(&reports),
        [
            (IncidentStatus::Opened, 1),
            (IncidentStatus::Updated, 2),
            (IncidentStatus::Updated, 4),
            (IncidentStatus::Updated, 8),
            (IncidentStatus::Updated, 16),
            (IncidentStatus::Updated, 32),
            (IncidentStatus::Updated, 64),
        ]
    );
    let last = &reports.last().unwrap().incident;
    assert_eq!(last.keys_affected, 64);
    assert_eq!(last.sample.len(), SAMPLE_KEYS);
    assert_eq!(last.sample[0], "SKU-0|DC-1");
    assert_eq!(last.first_seen, T0 + 900_000);
    assert_eq!(last.id(&model), *ids.iter().next().unwrap());
    // Time alone does not close a windowed incident while its alerts are open; when its
    // interval (plus one of grace) is over it reports its final count, once.
    reports.clear();
    book.advance(T0 + 10 * INCIDENT_INTERVAL_MS as Millis, &mut reports);
    assert_eq!(statuses(&reports), [(IncidentStatus::Updated, 100)]);
    assert_eq!(reports[0].at, T0 + 2 * INCIDENT_INTERVAL_MS as Millis);
    assert_eq!(reports[0].incident.keys_affected, 100);
    reports.clear();
    book.advance(T0 + 20 * INCIDENT_INTERVAL_MS as Millis, &mut reports);
    assert!(reports.is_empty());
    assert_eq!(book.open()[0].open, 100);
    // The next batch converges every key: one RESOLVED, on the last.
    let at = T0 + 3_600_000;
    for (i, (key, a)) in alerts.iter().enumerate() {
        assert!(book.on_alert(&model, key, &resolved(a, at), at, &mut reports));
        assert_eq!(
            reports.len(),
            usize::from(i == 99),
            "after {} RESOLVED",
            i + 1
        );
    }
    let r = &reports[0];
    assert_eq!(r.status, IncidentStatus::Resolved);
    assert_eq!((r.incident.alerts, r.incident.open), (100, 0));
    assert_eq!(r.incident.keys_affected, 100);
    assert_eq!(r.incident.last_seen, at);
    assert!(book.is_empty());
}

#[test]
fn drifts_that_began_in_different_windows_or_on_different_handoffs_are_different_incidents() {
    let model = model("");
    let mut book = IncidentBook::new();
    let mut reports = Vec::new();
    let a = drift(T0 + 60_000);
    let b = drift(T0 + 960_000); // the next 15-minute interval
    let c = Alert {
        system: SysId::of("storefront"),
        window_ms: 60_000,
        ..drift(T0 + 60_000)
    };
    for x in [&a, &b, &c] {
        book.on_alert(&model, "SKU-1|DC-1", x, x.opened_at, &mut reports);
    }
    assert_eq!(
        reports
            .iter()
            .filter(|r| r.status == IncidentStatus::Opened)
            .count(),
        3
    );
    assert_ne!(incident_id(&model, &a), incident_id(&model, &b));
    assert_ne!(incident_id(&model, &a), incident_id(&model, &c));
}

#[test]
fn the_rate_limit_publishes_the_first_alerts_each_minute_and_counts_the_rest() {
    let model = model("");
    let mut book = IncidentBook::new();
    let mut reports = Vec::new();
    let minute = T0 + 120_000;
    let published: Vec<bool> = (0..5)
        .map(|i| {
            let at = minute + i * 1_000;
            book.advance(at, &mut reports);
            book.on_alert(&model, "SKU-1|S-1", &oversell(at), at, &mut reports)
        })
        .collect();
    assert_eq!(published, [true, true, false, false, false]);
    // The next minute of stream time publishes again.
    let next = minute + 60_000;
    book.advance(next, &mut reports);
    assert!(book.on_alert(&model, "SKU-2|S-1", &oversell(next), next, &mut reports));
    let inc = &book.open()[0];
    assert_eq!((inc.alerts, inc.suppressed), (6, 3));
    assert_eq!(inc.keys_affected, 2);
    // Windowed kinds are never limited, and other kinds have no limit unless configured.
    assert!(book.on_alert(&model, "SKU-1|S-1", &drift(minute), next, &mut reports));
}

#[test]
fn a_rate_limit_on_a_windowed_kind_is_refused_at_start() {
    let cfg: CascadeConfig =
        toml::from_str(&format!("{CONFIG}DRIFT = 5\nSTALE_ACTION = 0\n")).unwrap();
    let err = Model::build(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("alerts.rate_limit_per_minute.DRIFT") && err.contains("one-shot"),
        "{err}"
    );
    assert!(
        err.contains("alerts.rate_limit_per_minute.STALE_ACTION") && err.contains("at least 1"),
        "{err}"
    );
}

#[test]
fn a_one_shot_incident_resolves_an_interval_after_its_own_ended() {
    let model = model("");
    let mut book = IncidentBook::new();
    let mut reports = Vec::new();
    let at = T0 + 60_000;
    book.on_alert(&model, "SKU-1|S-1", &oversell(at), at, &mut reports);
    let interval = INCIDENT_INTERVAL_MS as Millis;
    // Still open through the next interval: a stale action traced to a change late in this
    // interval may still join it.
    book.advance(T0 + 2 * interval - 1, &mut reports);
    assert_eq!(statuses(&reports), [(IncidentStatus::Opened, 1)]);
    assert!(book.advance(T0 + 2 * interval, &mut reports));
    assert_eq!(
        statuses(&reports),
        [(IncidentStatus::Opened, 1), (IncidentStatus::Resolved, 1)]
    );
    assert_eq!(
        reports[1].at,
        T0 + 2 * interval,
        "reported at its closing time"
    );
    assert!(book.open().is_empty());
}

#[test]
fn an_incident_over_two_partitions_is_resolved_when_both_shares_are() {
    let model = model("");
    let (mut p0, mut p1) = (IncidentBook::new(), IncidentBook::new());
    let (mut r0, mut r1) = (Vec::new(), Vec::new());
    let a = drift(T0 + 1_000);
    let b = drift(T0 + 2_000);
    p0.on_alert(&model, "SKU-1|DC-1", &a, a.opened_at, &mut r0);
    p1.on_alert(&model, "SKU-2|DC-1", &b, b.opened_at, &mut r1);
    p1.on_alert(&model, "SKU-3|DC-1", &b, b.opened_at, &mut r1);
    assert_eq!(r0[0].incident.id(&model), r1[0].incident.id(&model));
    let mut view = IncidentView::default();
    view.apply(0, r0.last().unwrap().clone());
    assert_eq!(view.status(), Some(IncidentStatus::Opened));
    view.apply(1, r1.last().unwrap().clone());
    assert_eq!(view.status(), Some(IncidentStatus::Updated));
    assert_eq!((view.alerts(), view.keys_affected()), (3, 3));
    let at = T0 + 3_600_000;
    p0.on_alert(&model, "SKU-1|DC-1", &resolved(&a, at), at, &mut r0);
    view.apply(0, r0.last().unwrap().clone());
    assert_eq!(
        view.status(),
        Some(IncidentStatus::Updated),
        "partition 1 still open"
    );
    for key in ["SKU-2|DC-1", "SKU-3|DC-1"] {
        p1.on_alert(&model, key, &resolved(&b, at), at, &mut r1);
    }
    view.apply(1, r1.last().unwrap().clone());
    assert_eq!(view.status(), Some(IncidentStatus::Resolved));
    assert_eq!(view.first_seen(), Some(a.opened_at));
    assert_eq!(view.last_seen(), Some(at));
    assert_eq!(view.partitions(), 2);
}
