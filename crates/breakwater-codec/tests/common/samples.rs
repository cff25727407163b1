//! One hand-checked value of every record type, from the SKU-1247 story
//! (`testdata/scenarios/sku-1247.toml`, t=0 is 2026-04-03T09:00:00Z = 1775206800000 ms).

use breakwater_codec::{
    AlertRecord, DecisionRecord, IncidentRecord, PropagationRecord, RootCauseRecord,
};
use breakwater_core::output::RejectReason;
use breakwater_core::{
    AlertKind, CommandKind, DecisionKind, EventType, IncidentStatus, InventoryEvent, Measure, Mode,
    ReservationCommand, Severity,
};

/// 2026-04-03T09:00:00Z, the story's t=0.
pub const T0: i64 = 1_775_206_800_000;

/// The WMS receipt that starts the cascade: 50 units onto 400.
pub fn receipt() -> InventoryEvent {
    InventoryEvent {
        event_id: "wms-rcv-7781".into(),
        system: "wms".into(),
        source_seq: Some(7781),
        event_type: EventType::Receipt,
        sku: "SKU-1247".into(),
        location: "DC-1".into(),
        measure: Measure::OnHand,
        mode: Mode::Delta,
        quantity: 50,
        occurred_at: T0,
        based_on_version: None,
        data_as_of: None,
        reason: None,
        causation_id: None,
        correlation_id: Some("po-4471-receiving".into()),
        order_ref: None,
        po_ref: Some("PO-4471".into()),
        shipment_ref: Some("ASN-88120".into()),
        line_ref: None,
    }
}

/// The storefront's stale sale (t=240): acted on version 3 and data from t=-2900.
pub fn stale_order() -> InventoryEvent {
    InventoryEvent {
        event_id: "sf-ord-1001".into(),
        system: "storefront".into(),
        source_seq: None,
        event_type: EventType::OrderPlaced,
        sku: "SKU-1247".into(),
        location: "DC-1".into(),
        measure: Measure::Committed,
        mode: Mode::Delta,
        quantity: 5,
        occurred_at: T0 + 240_000,
        based_on_version: Some(3),
        data_as_of: Some(T0 - 2_900_000),
        reason: None,
        causation_id: None,
        correlation_id: None,
        order_ref: Some("WEB-1001".into()),
        po_ref: None,
        shipment_ref: None,
        line_ref: None,
    }
}

/// The storefront holds 2 units for 15 minutes at t=60.
pub fn reserve() -> ReservationCommand {
    ReservationCommand {
        command_id: "sf-cmd-2001".into(),
        command: CommandKind::Reserve,
        reservation_id: "res-WEB-1002".into(),
        sku: "SKU-1247".into(),
        location: "DC-1".into(),
        quantity: 2,
        channel: "storefront".into(),
        ttl_ms: Some(900_000),
        issued_at: T0 + 60_000,
        order_ref: None,
        line_ref: None,
    }
}

/// The receipt propagated to the ERP: version 4, due within the 5-minute wms -> erp window.
pub fn propagation() -> PropagationRecord {
    PropagationRecord {
        propagation_id: "SKU-1247|DC-1/erp/v4".into(),
        target_system: "erp".into(),
        sku: "SKU-1247".into(),
        location: "DC-1".into(),
        version: 4,
        on_hand: 450,
        allocated: 0,
        committed: 0,
        safety_stock: 10,
        available: 440,
        reserved: 0,
        root_cause: receipt_root(),
        cascade_path: vec!["wms".into(), "erp".into()],
        emitted_at: T0,
        deadline: T0 + 300_000,
    }
}

/// The ERP's DRIFT closing when its 15-minute batch lands (t=900), 900 s after the receipt.
pub fn resolved_drift() -> AlertRecord {
    AlertRecord {
        alert_id: "SKU-1247|DC-1/erp/on_hand/DRIFT/v6".into(),
        kind: AlertKind::Resolved,
        resolves: Some(AlertKind::Drift),
        severity: Severity::Info,
        sku: "SKU-1247".into(),
        location: "DC-1".into(),
        system: "erp".into(),
        systems_involved: vec!["wms".into(), "erp".into()],
        measure: Measure::OnHand,
        expected: 450,
        observed: 450,
        delta: 0,
        window_ms: 300_000,
        diverged_at: T0,
        opened_at: T0 + 300_000,
        resolved_at: Some(T0 + 900_000),
        duration_ms: Some(900_000),
        version: 6,
        trigger_event_id: None,
        root_cause: receipt_root(),
        cascade_path: vec!["wms".into(), "erp".into()],
        incident_id: format!("DRIFT/wms->erp/{}", T0 - T0.rem_euclid(300_000)),
    }
}

/// The incident of [`resolved_drift`]'s DRIFT, resolved with it: one key, one alert.
pub fn resolved_incident() -> IncidentRecord {
    IncidentRecord {
        incident_id: format!("DRIFT/wms->erp/{}", T0 - T0.rem_euclid(300_000)),
        status: IncidentStatus::Resolved,
        kind: AlertKind::Drift,
        severity: Severity::Warning,
        origin: "wms".into(),
        system: "erp".into(),
        cascade_path: vec!["wms".into(), "erp".into()],
        partition: 0,
        interval_start: T0,
        interval_ms: 300_000,
        first_seen: T0 + 300_000,
        last_seen: T0 + 900_000,
        alerts: 1,
        suppressed: 0,
        open_alerts: 0,
        keys_affected: 1,
        sample_keys: vec!["SKU-1247|DC-1".into()],
        root_cause: receipt_root(),
        reported_at: T0 + 900_000,
    }
}

/// The hold of [`reserve`] granted: 440 available, 438 after the hold.
pub fn granted() -> DecisionRecord {
    DecisionRecord {
        decision_id: "res-WEB-1002/sf-cmd-2001".into(),
        decision: DecisionKind::Granted,
        reason: None,
        command_id: Some("sf-cmd-2001".into()),
        reservation_id: "res-WEB-1002".into(),
        sku: "SKU-1247".into(),
        location: "DC-1".into(),
        channel: "storefront".into(),
        quantity: 2,
        available: 438,
        version: 5,
        expires_at: Some(T0 + 960_000),
        decided_at: T0 + 60_000,
    }
}

/// An expired hold: no command, so no command id.
pub fn expired() -> DecisionRecord {
    DecisionRecord {
        decision_id: "res-WEB-1002/EXPIRED".into(),
        decision: DecisionKind::Expired,
        reason: None,
        command_id: None,
        expires_at: None,
        decided_at: T0 + 960_000,
        available: 440,
        version: 6,
        ..granted()
    }
}

/// A rejection, to cover the optional enum.
pub fn rejected() -> DecisionRecord {
    DecisionRecord {
        decision_id: "res-WEB-1003/sf-cmd-2002".into(),
        decision: DecisionKind::Rejected,
        reason: Some(RejectReason::InsufficientAvailability),
        command_id: Some("sf-cmd-2002".into()),
        reservation_id: "res-WEB-1003".into(),
        quantity: 500,
        expires_at: None,
        ..granted()
    }
}

fn receipt_root() -> RootCauseRecord {
    RootCauseRecord {
        event_id: "wms-rcv-7781".into(),
        system: "wms".into(),
        event_type: "RECEIPT".into(),
        occurred_at: T0,
        version: 4,
    }
}
