//! The output records as they go on the wire, and their construction from the fold's outputs.
//!
//! The fold emits plain data keyed by [`SysId`](breakwater_core::SysId) with the key implied;
//! these records carry names, the key and the stable ids downstream systems deduplicate on.
//! Field names, optionality and enum symbols match `schemas/propagation_event.avsc`,
//! `schemas/alert.avsc` and `schemas/reservation_decision.avsc` exactly (the core enums are
//! reused because their serde names are the Avro symbols, in schema order: see the tests).

use breakwater_core::output::{Cause, RejectReason, RootCause};
use breakwater_core::scenario::{alert_id, cascade_path, incident_id};
use breakwater_core::{
    message_key, Alert, AlertKind, Decision, DecisionKind, IncidentReport, IncidentStatus, Measure,
    Millis, Model, Propagation, Severity,
};
use serde::{Deserialize, Serialize};

/// `RootCause` in the Avro schemas: the event that started a change or a divergence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootCauseRecord {
    /// Its event id (command id for reservation commands, reservation id for an expiry).
    pub event_id: String,
    /// The system that published it (`breakwater` for the reservation ledger).
    pub system: String,
    /// Its event type (`RECEIPT`, ...), command (`RESERVE`, ...) or `EXPIRY`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened at its source, ms since the epoch.
    pub occurred_at: Millis,
    /// The authoritative version it produced; 0 if it changed none.
    pub version: i64,
}

/// `PropagationEvent`: the authoritative numbers a downstream system must converge to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropagationRecord {
    /// Stable id: `key/target_system/v<version>`.
    pub propagation_id: String,
    /// The system addressed.
    pub target_system: String,
    /// The SKU.
    pub sku: String,
    /// The location; empty for the default location.
    pub location: String,
    /// The authoritative version.
    pub version: i64,
    /// Authoritative physical units.
    pub on_hand: i64,
    /// Authoritative units assigned to picks.
    pub allocated: i64,
    /// Authoritative units promised to orders, including committed reservations.
    pub committed: i64,
    /// Authoritative units held back from sale.
    pub safety_stock: i64,
    /// `on_hand - allocated - committed - safety_stock`; negative after an oversell.
    pub available: i64,
    /// Units held by granted, uncommitted reservations.
    pub reserved: i64,
    /// The change's root event.
    pub root_cause: RootCauseRecord,
    /// The systems the change travels through, from its origin to `target_system`.
    pub cascade_path: Vec<String>,
    /// When Breakwater processed the change, ms since the epoch.
    pub emitted_at: Millis,
    /// When `target_system` must have converged, ms since the epoch.
    pub deadline: Millis,
}

/// `Alert`: an alert on the alert topic, with its root cause and cascade path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRecord {
    /// Stable id; a RESOLVED carries the id of the alert it closes.
    pub alert_id: String,
    /// The kind.
    pub kind: AlertKind,
    /// For RESOLVED: the kind of the alert it closes.
    #[serde(default)]
    pub resolves: Option<AlertKind>,
    /// How urgent.
    pub severity: Severity,
    /// The SKU.
    pub sku: String,
    /// The location; empty for the default location.
    pub location: String,
    /// The system that diverged, acted on stale data or oversold.
    pub system: String,
    /// Every system on the cascade path, root first.
    pub systems_involved: Vec<String>,
    /// The measure concerned.
    pub measure: Measure,
    /// The authoritative value, version or units available (see the schema).
    pub expected: i64,
    /// What the system had.
    pub observed: i64,
    /// `observed - expected`.
    pub delta: i64,
    /// The operational window that was exceeded, in ms; 0 for kinds raised at once.
    pub window_ms: i64,
    /// When the divergence began, ms since the epoch.
    pub diverged_at: Millis,
    /// When the alert opened, ms since the epoch.
    pub opened_at: Millis,
    /// For RESOLVED: when the system converged, ms since the epoch.
    #[serde(default)]
    pub resolved_at: Option<Millis>,
    /// For RESOLVED: `resolved_at - diverged_at`, in ms.
    #[serde(default)]
    pub duration_ms: Option<i64>,
    /// The authoritative version when the alert opened.
    pub version: i64,
    /// For STALE_ACTION, OVERSELL, UNPROPAGATED_CHANGE: the event that triggered it.
    #[serde(default)]
    pub trigger_event_id: Option<String>,
    /// The count event that started the divergence.
    pub root_cause: RootCauseRecord,
    /// System names from the root's system to `system`.
    pub cascade_path: Vec<String>,
    /// The incident: `KIND/origin->system/<interval start ms>`, shared by the alerts of one
    /// broken handoff (see `schemas/alert.avsc`).
    #[serde(default)]
    pub incident_id: String,
}

/// `Incident`: one partition's share of an incident, on the incidents topic (keyed by
/// `incident_id`, so every partition's reports of one incident land on one partition of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentRecord {
    /// `KIND/origin->system/<interval start ms>`: the `incident_id` of every alert it groups.
    pub incident_id: String,
    /// OPENED, UPDATED or RESOLVED.
    pub status: IncidentStatus,
    /// The alert kind it groups.
    pub kind: AlertKind,
    /// The kind's severity on this handoff.
    pub severity: Severity,
    /// Where the root changes entered the cascade.
    pub origin: String,
    /// The system that diverged, acted stale or oversold.
    pub system: String,
    /// System names from `origin` to `system`.
    pub cascade_path: Vec<String>,
    /// The input partition whose keys this report covers.
    pub partition: i32,
    /// Start of the interval the divergences began in, ms since the epoch.
    pub interval_start: Millis,
    /// The interval's length in ms (the handoff's window, or 15 minutes for one-shot kinds).
    pub interval_ms: i64,
    /// The first alert's opening time, ms since the epoch.
    pub first_seen: Millis,
    /// The latest alert or resolution, ms since the epoch.
    pub last_seen: Millis,
    /// Alerts in this partition's share, published or suppressed.
    pub alerts: i64,
    /// Of those, not published because of the kind's rate limit.
    pub suppressed: i64,
    /// Windowed alerts not yet resolved.
    pub open_alerts: i64,
    /// Distinct keys with an alert.
    pub keys_affected: i64,
    /// The first keys affected, `sku|location`.
    pub sample_keys: Vec<String>,
    /// The first alert's root cause.
    pub root_cause: RootCauseRecord,
    /// Stream time of the report, ms since the epoch.
    pub reported_at: Millis,
}

/// The incident record for partition `partition`'s report `r`.
pub fn incident_record(model: &Model, partition: i32, r: &IncidentReport) -> IncidentRecord {
    let i = &r.incident;
    IncidentRecord {
        incident_id: i.id(model),
        status: r.status,
        kind: i.kind,
        severity: model.severity(i.kind, model.route(i.origin, i.system)),
        origin: model.name(i.origin).to_owned(),
        system: model.name(i.system).to_owned(),
        cascade_path: cascade_path(model, i.origin, i.system),
        partition,
        interval_start: i.start,
        interval_ms: long(i.interval_ms),
        first_seen: i.first_seen,
        last_seen: i.last_seen,
        alerts: long(i.alerts),
        suppressed: long(i.suppressed),
        open_alerts: long(i.open),
        keys_affected: long(i.keys_affected),
        sample_keys: i.sample.clone(),
        root_cause: root_cause_record(model, &i.root),
        reported_at: r.at,
    }
}

/// `ReservationDecision`: the answer to one reservation command, or a hold's expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// Stable id: `reservation_id/command_id`, or `reservation_id/EXPIRED`.
    pub decision_id: String,
    /// The outcome.
    pub decision: DecisionKind,
    /// For REJECTED: why.
    #[serde(default)]
    pub reason: Option<RejectReason>,
    /// The command answered; `None` for EXPIRED.
    #[serde(default)]
    pub command_id: Option<String>,
    /// The reservation.
    pub reservation_id: String,
    /// The SKU.
    pub sku: String,
    /// The location; empty for the default location.
    pub location: String,
    /// The channel that asked.
    pub channel: String,
    /// Units held, committed, released, expired or asked for.
    pub quantity: i64,
    /// Units still sellable after the decision.
    pub available: i64,
    /// The authoritative version after the decision.
    pub version: i64,
    /// For GRANTED: when the hold expires, ms since the epoch.
    #[serde(default)]
    pub expires_at: Option<Millis>,
    /// When Breakwater decided, ms since the epoch.
    pub decided_at: Millis,
}

/// Versions and windows are `u64` in the fold and `long` on the wire. Neither comes near
/// `i64::MAX`; saturate rather than wrap should one ever do so.
fn long(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The wire form of a root cause.
pub fn root_cause_record(model: &Model, root: &RootCause) -> RootCauseRecord {
    RootCauseRecord {
        event_id: root.event_id.to_string(),
        system: model.name(root.system).to_owned(),
        event_type: Cause::as_str(root.cause).to_owned(),
        occurred_at: root.occurred_at,
        version: long(root.version),
    }
}

/// The propagation event for `p`, a change of the key (`sku`, `location`).
pub fn propagation_record(
    model: &Model,
    sku: &str,
    location: &str,
    p: &Propagation,
) -> PropagationRecord {
    let target = model.name(p.target);
    PropagationRecord {
        propagation_id: format!("{}/{target}/v{}", message_key(sku, location), p.version),
        target_system: target.to_owned(),
        sku: sku.to_owned(),
        location: location.to_owned(),
        version: long(p.version),
        on_hand: p.state.on_hand,
        allocated: p.state.allocated,
        committed: p.state.committed,
        safety_stock: p.state.safety_stock,
        available: p.state.available,
        reserved: p.state.reserved,
        root_cause: root_cause_record(model, &p.root),
        cascade_path: cascade_path(model, p.origin, p.target),
        emitted_at: p.emitted_at,
        deadline: p.deadline,
    }
}

/// The alert record for `a`, raised on the key (`sku`, `location`).
///
/// Severity comes from the handoff the alert travelled (DRIFT, HANDOFF_TIMEOUT) or the
/// `[alerts.severity]` config, so a RESOLVED gets the RESOLVED severity, not that of the alert
/// it closes.
pub fn alert_record(model: &Model, sku: &str, location: &str, a: &Alert) -> AlertRecord {
    let route = model.route(a.origin, a.system);
    let path = cascade_path(model, a.origin, a.system);
    AlertRecord {
        alert_id: alert_id(model, &message_key(sku, location), a),
        kind: a.kind,
        resolves: a.resolves,
        severity: model.severity(a.kind, route),
        sku: sku.to_owned(),
        location: location.to_owned(),
        system: model.name(a.system).to_owned(),
        systems_involved: path.clone(),
        measure: a.measure,
        expected: a.expected,
        observed: a.observed,
        delta: a.observed.saturating_sub(a.expected),
        window_ms: long(a.window_ms),
        diverged_at: a.diverged_at,
        opened_at: a.opened_at,
        resolved_at: a.resolved_at,
        duration_ms: a.resolved_at.map(|r| r.saturating_sub(a.diverged_at)),
        version: long(a.opened_version),
        trigger_event_id: (!a.trigger.is_empty()).then(|| a.trigger.to_string()),
        root_cause: root_cause_record(model, &a.root),
        cascade_path: path,
        incident_id: incident_id(model, a),
    }
}

/// The decision record for `d`, on the key (`sku`, `location`).
pub fn decision_record(sku: &str, location: &str, d: &Decision) -> DecisionRecord {
    let command_id = (!d.command_id.is_empty()).then(|| d.command_id.to_string());
    let decision_id = match &command_id {
        Some(c) => format!("{}/{c}", d.reservation_id),
        None => format!("{}/EXPIRED", d.reservation_id),
    };
    DecisionRecord {
        decision_id,
        decision: d.kind,
        reason: d.reason,
        command_id,
        reservation_id: d.reservation_id.to_string(),
        sku: sku.to_owned(),
        location: location.to_owned(),
        channel: d.channel.to_string(),
        quantity: d.quantity,
        available: d.available,
        version: long(d.version),
        expires_at: d.expires_at,
        decided_at: d.decided_at,
    }
}

#[cfg(test)]
mod tests {
    use breakwater_core::output::Snapshot;
    use breakwater_core::{CascadeConfig, EventType, Id, SysId};

    use super::*;

    const T0: Millis = 1_775_206_800_000;

    fn model() -> Model {
        let cfg: CascadeConfig = toml::from_str(
            r#"
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
            window_ms = 300000
            [[handoffs]]
            from = "erp"
            to = "storefront"
            window_ms = 120000
            severity = "critical"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Model::build(&cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    fn id(s: &str) -> Id {
        Id::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn receipt_root() -> RootCause {
        RootCause {
            event_id: id("wms-rcv-7781"),
            system: SysId::of("wms"),
            cause: Cause::Event(EventType::Receipt),
            occurred_at: T0,
            version: 4,
        }
    }

    fn drift() -> Alert {
        Alert {
            kind: AlertKind::Drift,
            resolves: None,
            system: SysId::of("storefront"),
            measure: Measure::Available,
            expected: 440,
            observed: 390,
            root: receipt_root(),
            origin: SysId::of("wms"),
            window_ms: 420_000,
            diverged_at: T0,
            opened_at: T0 + 420_000,
            opened_version: 4,
            trigger: Id::EMPTY,
            resolved_at: None,
        }
    }

    #[test]
    fn a_propagation_names_its_systems_and_key() {
        let m = model();
        let p = Propagation {
            target: SysId::of("storefront"),
            version: 4,
            state: Snapshot {
                on_hand: 450,
                allocated: 0,
                committed: 0,
                safety_stock: 10,
                available: 440,
                reserved: 2,
            },
            root: receipt_root(),
            origin: SysId::of("wms"),
            emitted_at: T0,
            deadline: T0 + 420_000,
        };
        let r = propagation_record(&m, "SKU-1247", "DC-1", &p);
        assert_eq!(r.propagation_id, "SKU-1247|DC-1/storefront/v4");
        assert_eq!(r.target_system, "storefront");
        assert_eq!(r.cascade_path, ["wms", "erp", "storefront"]);
        assert_eq!((r.on_hand, r.available, r.reserved), (450, 440, 2));
        assert_eq!(
            r.root_cause,
            RootCauseRecord {
                event_id: "wms-rcv-7781".into(),
                system: "wms".into(),
                event_type: "RECEIPT".into(),
                occurred_at: T0,
                version: 4,
            }
        );
        // The default location drops out of the key.
        let r = propagation_record(&m, "SKU-1247", "", &p);
        assert_eq!(r.propagation_id, "SKU-1247/storefront/v4");
    }

    #[test]
    fn an_alert_takes_its_severity_from_the_handoff_and_its_id_from_core() {
        let m = model();
        let r = alert_record(&m, "SKU-1247", "DC-1", &drift());
        assert_eq!(r.alert_id, "SKU-1247|DC-1/storefront/available/DRIFT/v4");
        assert_eq!(
            r.severity,
            Severity::Critical,
            "the erp -> storefront handoff"
        );
        assert_eq!(r.systems_involved, ["wms", "erp", "storefront"]);
        assert_eq!(r.cascade_path, r.systems_involved);
        assert_eq!(r.delta, -50);
        assert_eq!(r.window_ms, 420_000);
        assert_eq!(
            (r.resolved_at, r.duration_ms, r.trigger_event_id),
            (None, None, None)
        );
    }

    #[test]
    fn a_resolved_alert_keeps_the_id_and_gets_its_own_severity() {
        let m = model();
        let resolved = Alert {
            kind: AlertKind::Resolved,
            resolves: Some(AlertKind::Drift),
            observed: 440,
            resolved_at: Some(T0 + 600_000),
            ..drift()
        };
        let opened = alert_record(&m, "SKU-1247", "DC-1", &drift());
        let r = alert_record(&m, "SKU-1247", "DC-1", &resolved);
        assert_eq!(r.alert_id, opened.alert_id);
        assert_eq!(r.kind, AlertKind::Resolved);
        assert_eq!(r.resolves, Some(AlertKind::Drift));
        assert_eq!(r.severity, Severity::Info);
        assert_eq!(r.resolved_at, Some(T0 + 600_000));
        assert_eq!(r.duration_ms, Some(600_000));
        assert_eq!(r.delta, 0);
    }

    #[test]
    fn a_one_shot_alert_names_its_trigger() {
        let m = model();
        let stale = Alert {
            kind: AlertKind::StaleAction,
            measure: Measure::Committed,
            expected: 5,
            observed: 3,
            window_ms: 0,
            trigger: id("sf-ord-1001"),
            ..drift()
        };
        let r = alert_record(&m, "SKU-1247", "DC-1", &stale);
        assert_eq!(r.trigger_event_id.as_deref(), Some("sf-ord-1001"));
        assert_eq!(
            r.alert_id,
            "SKU-1247|DC-1/storefront/STALE_ACTION/sf-ord-1001"
        );
        assert_eq!(r.severity, Severity::Warning, "the [alerts] default");
    }

    #[test]
    fn a_decision_id_names_the_command_or_the_expiry() {
        let granted = Decision {
            kind: DecisionKind::Granted,
            reason: None,
            reservation_id: id("res-WEB-1002"),
            command_id: id("sf-cmd-2001"),
            channel: id("storefront"),
            quantity: 2,
            available: 438,
            version: 5,
            expires_at: Some(T0 + 960_000),
            decided_at: T0 + 60_000,
        };
        let r = decision_record("SKU-1247", "DC-1", &granted);
        assert_eq!(r.decision_id, "res-WEB-1002/sf-cmd-2001");
        assert_eq!(r.command_id.as_deref(), Some("sf-cmd-2001"));
        assert_eq!(r.channel, "storefront");

        let expired = Decision {
            kind: DecisionKind::Expired,
            command_id: Id::EMPTY,
            expires_at: None,
            ..granted
        };
        let r = decision_record("SKU-1247", "DC-1", &expired);
        assert_eq!(r.decision_id, "res-WEB-1002/EXPIRED");
        assert_eq!(r.command_id, None);
    }
}
