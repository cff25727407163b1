//! One rule at a time: every event type, every alert kind, duplicates and ordering, and the
//! reservation ledger, each on the smallest input that shows it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // tests: a panic is the failure report

use breakwater_core::fold::MAX_QUANTITY;
use breakwater_core::output::{ActionCheck, ActionOutcome, Alert, RejectReason};
use breakwater_core::SysId;
use breakwater_core::{
    apply, AlertKind, CascadeConfig, CommandKind, DecisionKind, EventType, Input, InventoryEvent,
    KeyState, Measure, Mode, Model, Outcome, Output, Rejection, ReservationCommand,
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

[[systems]]
name = "pos"
input_topic = "pos.in"
propagation_topic = "pos.out"
acks_versions = true

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
window_ms = 60000
[[handoffs]]
from = "erp"
to = "storefront"
window_ms = 60000
[[handoffs]]
from = "wms"
to = "pos"
window_ms = 30000
[[handoffs]]
from = "breakwater"
to = "storefront"
window_ms = 10000
"#;

struct H {
    model: Model,
    st: KeyState,
    out: Vec<Output>,
    n: u32,
}

fn ev(system: &str, t: EventType, m: Measure, mode: Mode, q: i64) -> InventoryEvent {
    InventoryEvent {
        event_id: String::new(),
        system: system.into(),
        source_seq: None,
        event_type: t,
        sku: "SKU-1".into(),
        location: "DC-1".into(),
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

fn cmd(kind: CommandKind, id: &str, q: i64, ttl_secs: i64) -> ReservationCommand {
    ReservationCommand {
        command_id: format!("{id}-{}", kind.as_str()),
        command: kind,
        reservation_id: id.into(),
        sku: "SKU-1".into(),
        location: "DC-1".into(),
        quantity: q,
        channel: "storefront".into(),
        ttl_ms: Some(ttl_secs * 1000),
        issued_at: 0,
        order_ref: None,
        line_ref: None,
    }
}

impl H {
    fn new() -> H {
        H::with("")
    }

    /// With more config appended to [`CONFIG`].
    fn with(extra: &str) -> H {
        let cfg: CascadeConfig = toml::from_str(&format!("{CONFIG}{extra}")).unwrap();
        H {
            model: Model::build(&cfg).unwrap(),
            st: KeyState::default(),
            out: Vec::new(),
            n: 0,
        }
    }

    /// Stock the key: wms 100 on hand, 0 allocated; erp safety stock 0 (version 3).
    fn stocked() -> H {
        let mut h = H::new();
        h.send(
            0,
            ev(
                "wms",
                EventType::Snapshot,
                Measure::OnHand,
                Mode::Absolute,
                100,
            ),
        )
        .unwrap();
        h.send(
            0,
            ev(
                "wms",
                EventType::Snapshot,
                Measure::Allocated,
                Mode::Absolute,
                0,
            ),
        )
        .unwrap();
        h.send(
            0,
            ev(
                "erp",
                EventType::Snapshot,
                Measure::SafetyStock,
                Mode::Absolute,
                0,
            ),
        )
        .unwrap();
        h.out.clear();
        h
    }

    fn send(&mut self, at_secs: i64, mut e: InventoryEvent) -> Result<Outcome, Rejection> {
        if e.event_id.is_empty() {
            self.n += 1;
            e.event_id = format!("e{}", self.n);
        }
        self.run_timers(at_secs * 1000);
        apply(
            &self.model,
            &mut self.st,
            Input::Event(&e),
            at_secs * 1000,
            &mut self.out,
        )
    }

    fn command(&mut self, at_secs: i64, c: ReservationCommand) -> Result<Outcome, Rejection> {
        self.run_timers(at_secs * 1000);
        apply(
            &self.model,
            &mut self.st,
            Input::Command(&c),
            at_secs * 1000,
            &mut self.out,
        )
    }

    /// Fires timers at their own deadlines up to `t`, as the processor does.
    fn run_timers(&mut self, t: i64) {
        while let Some(d) = self.st.next_timer().filter(|d| *d <= t) {
            apply(&self.model, &mut self.st, Input::Timer, d, &mut self.out).unwrap();
        }
    }

    fn alerts(&self) -> Vec<&Alert> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn kinds(&self) -> Vec<AlertKind> {
        self.alerts().iter().map(|a| a.kind).collect()
    }

    fn decisions_full(&self) -> Vec<breakwater_core::Decision> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Decision(d) => Some(*d),
                _ => None,
            })
            .collect()
    }

    fn decisions(&self) -> Vec<(DecisionKind, Option<RejectReason>, i64)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Decision(d) => Some((d.kind, d.reason, d.available)),
                _ => None,
            })
            .collect()
    }
}

/// Every event type, valid: the authoritative value it leads to (from 100 on hand, 0
/// allocated, 0 committed, 0 safety stock), or None where the sender is not the authority.
#[test]
fn every_event_type_folds_as_the_type_table_says() {
    use EventType::*;
    use Measure::*;
    use Mode::*;
    let table: &[(EventType, &str, Measure, Mode, i64, Option<i64>)] = &[
        (Receipt, "wms", OnHand, Delta, 50, Some(150)),
        (Adjustment, "wms", OnHand, Delta, -3, Some(97)),
        (Adjustment, "wms", OnHand, Absolute, 90, Some(90)),
        (CycleCount, "wms", OnHand, Absolute, 98, Some(98)),
        (Snapshot, "wms", OnHand, Absolute, 120, Some(120)),
        (Allocation, "wms", Allocated, Delta, 10, Some(10)),
        (Pick, "wms", OnHand, Delta, -4, Some(96)),
        (Ship, "wms", OnHand, Delta, -6, Some(94)),
        (Return, "wms", OnHand, Delta, 2, Some(102)),
        (TransferIn, "wms", OnHand, Delta, 7, Some(107)),
        (TransferOut, "wms", OnHand, Delta, -7, Some(93)),
        (OrderPlaced, "storefront", Committed, Delta, 5, Some(5)),
        (Snapshot, "erp", SafetyStock, Absolute, 4, Some(4)),
        // Not the authority: the system's own view only.
        (Receipt, "erp", OnHand, Delta, 50, None),
    ];
    for &(t, system, m, mode, q, want) in table {
        let mut h = H::stocked();
        let before = h.st.value(m);
        let r = h.send(1, ev(system, t, m, mode, q));
        assert_eq!(r, Ok(Outcome::Applied), "{t:?}");
        assert_eq!(h.st.value(m), want.unwrap_or(before), "{t:?} {m:?}");
    }
    // Releases take back what was taken.
    let mut h = H::stocked();
    h.send(1, ev("wms", Allocation, Allocated, Delta, 10))
        .unwrap();
    h.send(2, ev("wms", Deallocation, Allocated, Delta, -4))
        .unwrap();
    assert_eq!(h.st.value(Allocated), 6);
    h.send(3, ev("storefront", OrderPlaced, Committed, Delta, 5))
        .unwrap();
    h.send(4, ev("storefront", OrderCancelled, Committed, Delta, -5))
        .unwrap();
    assert_eq!(h.st.value(Committed), 0);
}

#[test]
fn impossible_events_are_rejected_and_change_nothing() {
    use EventType::*;
    use Measure::*;
    use Mode::*;
    let table: &[(EventType, &str, Measure, Mode, i64, &str)] = &[
        (Receipt, "wms", OnHand, Delta, -5, "impossible_quantity"),
        (Receipt, "wms", OnHand, Absolute, 5, "mode_not_allowed"),
        (Receipt, "wms", Committed, Delta, 5, "measure_not_allowed"),
        (CycleCount, "wms", OnHand, Delta, 5, "mode_not_allowed"),
        (
            CycleCount,
            "wms",
            OnHand,
            Absolute,
            -1,
            "impossible_quantity",
        ),
        (
            Snapshot,
            "wms",
            Allocated,
            Absolute,
            -1,
            "impossible_quantity",
        ),
        (
            Allocation,
            "wms",
            Allocated,
            Delta,
            -1,
            "impossible_quantity",
        ),
        (
            Deallocation,
            "wms",
            Allocated,
            Delta,
            3,
            "impossible_quantity",
        ),
        (Ship, "wms", OnHand, Delta, 3, "impossible_quantity"),
        (Adjustment, "wms", OnHand, Delta, 0, "impossible_quantity"),
        (
            OrderPlaced,
            "storefront",
            Committed,
            Delta,
            MAX_QUANTITY + 1,
            "impossible_quantity",
        ),
        (
            OrderCancelled,
            "storefront",
            Committed,
            Delta,
            1,
            "impossible_quantity",
        ),
        (Receipt, "mainframe", OnHand, Delta, 5, "unknown_system"),
    ];
    for &(t, system, m, mode, q, code) in table {
        let mut h = H::stocked();
        let before = h.st.clone();
        let err = h.send(1, ev(system, t, m, mode, q)).unwrap_err();
        assert_eq!(err.code(), code, "{t:?} {m:?} {mode:?} {q}: {err}");
        assert_eq!(h.st, before, "a rejected event must not change state");
        assert!(h.out.is_empty());
    }
    let mut h = H::stocked();
    let mut e = ev("wms", Receipt, OnHand, Delta, 1);
    e.event_id = "x".repeat(65);
    assert_eq!(h.send(1, e).unwrap_err().code(), "id_too_long");
    let mut e = ev("wms", Receipt, OnHand, Delta, 1);
    e.sku = String::new();
    assert_eq!(h.send(1, e).unwrap_err().code(), "empty_field");
    let mut e = ev("wms", Receipt, OnHand, Delta, 1);
    e.source_seq = Some(-1);
    assert_eq!(h.send(1, e).unwrap_err().code(), "negative_field");
}

#[test]
fn a_change_propagates_downstream_with_deadlines_along_the_path() {
    let mut h = H::stocked();
    h.send(
        10,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 5),
    )
    .unwrap();
    let props: Vec<_> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Propagation(p) => Some((h.model.name(p.target).to_owned(), p.deadline)),
            _ => None,
        })
        .collect();
    // wms is the authority: it is not told its own news.
    assert_eq!(
        props,
        vec![
            ("erp".into(), 70_000),
            ("storefront".into(), 130_000),
            ("pos".into(), 40_000)
        ]
    );
    assert_eq!(h.st.version, 4);
}

#[test]
fn drift_opens_after_the_window_and_resolves_on_convergence() {
    let mut h = H::stocked();
    h.send(
        0,
        ev(
            "erp",
            EventType::Snapshot,
            Measure::OnHand,
            Mode::Absolute,
            100,
        ),
    )
    .unwrap();
    h.send(
        10,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 5),
    )
    .unwrap();
    // Inside the window: nothing.
    h.run_timers(69_999);
    assert!(h.kinds().is_empty());
    h.run_timers(70_000);
    assert_eq!(h.kinds(), vec![AlertKind::Drift]);
    let a = h.alerts()[0];
    assert_eq!((a.expected, a.observed, a.window_ms), (105, 100, 60_000));
    h.send(
        100,
        ev(
            "erp",
            EventType::Snapshot,
            Measure::OnHand,
            Mode::Absolute,
            105,
        ),
    )
    .unwrap();
    assert_eq!(h.kinds(), vec![AlertKind::Drift, AlertKind::Resolved]);
    let r = h.alerts()[1];
    assert_eq!(r.resolves, Some(AlertKind::Drift));
    assert_eq!(r.resolved_at.unwrap() - r.diverged_at, 90_000);
}

#[test]
fn converging_inside_the_window_raises_nothing() {
    let mut h = H::stocked();
    h.send(
        0,
        ev(
            "erp",
            EventType::Snapshot,
            Measure::OnHand,
            Mode::Absolute,
            100,
        ),
    )
    .unwrap();
    h.send(
        10,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 5),
    )
    .unwrap();
    h.send(
        60,
        ev(
            "erp",
            EventType::Snapshot,
            Measure::OnHand,
            Mode::Absolute,
            105,
        ),
    )
    .unwrap();
    h.run_timers(1_000_000);
    assert!(h.kinds().is_empty());
    assert_eq!(h.st.next_timer(), None);
}

#[test]
fn a_stale_but_covered_action_raises_an_info_stale_view_only_when_asked() {
    for on in [false, true] {
        let mut h = H::stocked(); // 100 on hand, version 3
        if on {
            let stocked = std::mem::replace(&mut h, H::with("[alerts]\nstale_view = true\n"));
            h.st = stocked.st;
            h.n = stocked.n;
        }
        h.send(
            1,
            ev(
                "wms",
                EventType::Allocation,
                Measure::Allocated,
                Mode::Delta,
                90,
            ),
        )
        .unwrap(); // v4: 10 sellable
        let mut order = ev(
            "storefront",
            EventType::OrderPlaced,
            Measure::Committed,
            Mode::Delta,
            4,
        );
        order.based_on_version = Some(3);
        h.out.clear();
        h.send(2, order).unwrap();
        assert!(h.out.contains(&Output::Action(ActionCheck {
            system: SysId::of("storefront"),
            outcome: ActionOutcome::StaleSufficient
        })));
        if !on {
            assert!(h.kinds().is_empty(), "{:?}", h.kinds());
            continue;
        }
        assert_eq!(h.kinds(), vec![AlertKind::StaleView]);
        let a = h.alerts()[0];
        assert_eq!(a.root.event_id.as_str(), "e4", "the first change it missed");
        assert_eq!(
            (a.expected, a.observed),
            (4, 3),
            "version now, version seen"
        );
        assert_eq!(
            h.model.severity(a.kind, h.model.route(a.origin, a.system)),
            breakwater_core::Severity::Info
        );
    }
}

#[test]
fn stale_action_only_when_the_missed_changes_took_away_what_it_relied_on() {
    let mut h = H::stocked(); // 100 on hand, version 3
    h.send(
        1,
        ev(
            "wms",
            EventType::Allocation,
            Measure::Allocated,
            Mode::Delta,
            90,
        ),
    )
    .unwrap(); // v4: 10 sellable
    h.send(
        2,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 5),
    )
    .unwrap(); // v5: 15 sellable
               // On version 3 (100 sellable), an order of 12: still covered by the 15 there are now.
    let mut order = ev(
        "storefront",
        EventType::OrderPlaced,
        Measure::Committed,
        Mode::Delta,
        12,
    );
    order.based_on_version = Some(3);
    h.out.clear();
    h.send(3, order).unwrap();
    assert!(h.kinds().is_empty(), "{:?}", h.kinds());
    assert!(h.out.contains(&Output::Action(ActionCheck {
        system: SysId::of("storefront"),
        outcome: ActionOutcome::StaleSufficient
    })));

    // On version 3 again, 5 more: only 3 are left, and the allocation it missed took them.
    let mut order = ev(
        "storefront",
        EventType::OrderPlaced,
        Measure::Committed,
        Mode::Delta,
        5,
    );
    order.based_on_version = Some(3);
    h.out.clear();
    h.send(4, order).unwrap();
    assert_eq!(h.kinds(), vec![AlertKind::StaleAction]);
    let a = h.alerts()[0];
    assert_eq!(
        a.root.event_id.as_str(),
        "e4",
        "the allocation, not the receipt"
    );
    assert_eq!((a.expected, a.observed), (6, 3));

    // On the current version, more than there is: OVERSELL, not STALE_ACTION.
    let mut order = ev(
        "storefront",
        EventType::OrderPlaced,
        Measure::Committed,
        Mode::Delta,
        5,
    );
    order.based_on_version = Some(h.st.version as i64);
    h.out.clear();
    h.send(5, order).unwrap();
    assert_eq!(h.kinds(), vec![AlertKind::Oversell]);

    // Stale by time, and what it saw was already too little: OVERSELL.
    let mut alloc = ev(
        "wms",
        EventType::Allocation,
        Measure::Allocated,
        Mode::Delta,
        50,
    );
    alloc.data_as_of = Some(1500);
    h.out.clear();
    h.send(6, alloc).unwrap();
    assert_eq!(h.kinds(), vec![AlertKind::Oversell]);
}

#[test]
fn oversell_when_an_action_takes_more_than_is_sellable() {
    let mut h = H::stocked();
    h.send(
        1,
        ev(
            "storefront",
            EventType::OrderPlaced,
            Measure::Committed,
            Mode::Delta,
            100,
        ),
    )
    .unwrap();
    assert!(h.kinds().is_empty(), "exactly what is available is fine");
    h.send(
        2,
        ev(
            "storefront",
            EventType::OrderPlaced,
            Measure::Committed,
            Mode::Delta,
            1,
        ),
    )
    .unwrap();
    assert_eq!(h.kinds(), vec![AlertKind::Oversell]);
    assert_eq!((h.alerts()[0].expected, h.alerts()[0].observed), (0, 1));
}

#[test]
fn phantom_availability_on_report_and_after_the_window() {
    // On a report: at once.
    let mut h = H::stocked();
    h.send(
        1,
        ev(
            "storefront",
            EventType::Snapshot,
            Measure::Available,
            Mode::Absolute,
            120,
        ),
    )
    .unwrap();
    assert_eq!(h.kinds(), vec![AlertKind::PhantomAvailability]);
    assert_eq!(
        h.alerts()[0].window_ms,
        0,
        "raised on the report, not for a window"
    );

    // After a change the storefront has not caught up with: at its deadline.
    let mut h = H::stocked();
    h.send(
        1,
        ev(
            "storefront",
            EventType::Snapshot,
            Measure::Available,
            Mode::Absolute,
            100,
        ),
    )
    .unwrap();
    h.send(
        2,
        ev(
            "wms",
            EventType::Allocation,
            Measure::Allocated,
            Mode::Delta,
            30,
        ),
    )
    .unwrap();
    h.run_timers(2_000 + 119_999);
    assert!(h.kinds().is_empty());
    h.run_timers(2_000 + 120_000);
    assert_eq!(h.kinds(), vec![AlertKind::PhantomAvailability]);
    h.send(
        200,
        ev(
            "storefront",
            EventType::Snapshot,
            Measure::Available,
            Mode::Absolute,
            70,
        ),
    )
    .unwrap();
    assert_eq!(
        h.kinds(),
        vec![AlertKind::PhantomAvailability, AlertKind::Resolved]
    );

    // Showing less than exists is DRIFT, not PHANTOM.
    let mut h = H::stocked();
    h.send(
        1,
        ev(
            "storefront",
            EventType::Snapshot,
            Measure::Available,
            Mode::Absolute,
            100,
        ),
    )
    .unwrap();
    h.send(
        2,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 30),
    )
    .unwrap();
    h.run_timers(1_000_000);
    assert_eq!(h.kinds(), vec![AlertKind::Drift]);
}

#[test]
fn handoff_timeout_for_a_version_acknowledging_system() {
    let mut h = H::stocked();
    let mut hello = ev(
        "pos",
        EventType::Snapshot,
        Measure::Available,
        Mode::Absolute,
        100,
    );
    hello.based_on_version = Some(3);
    h.send(1, hello).unwrap();
    h.send(
        2,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 1),
    )
    .unwrap(); // v4, pos window 30 s
    h.run_timers(31_999);
    assert!(h.kinds().is_empty());
    h.run_timers(32_000);
    // Its shown value is off (DRIFT) and it has not acknowledged the version (HANDOFF_TIMEOUT).
    assert_eq!(h.kinds(), vec![AlertKind::Drift, AlertKind::HandoffTimeout]);
    assert_eq!((h.alerts()[1].expected, h.alerts()[1].observed), (4, 3));
    let mut ack = ev(
        "pos",
        EventType::Snapshot,
        Measure::Available,
        Mode::Absolute,
        101,
    );
    ack.based_on_version = Some(4);
    h.send(40, ack).unwrap();
    let resolved: Vec<_> = h.alerts()[2..]
        .iter()
        .map(|a| (a.kind, a.resolves))
        .collect();
    assert_eq!(
        resolved,
        vec![
            (AlertKind::Resolved, Some(AlertKind::Drift)),
            (AlertKind::Resolved, Some(AlertKind::HandoffTimeout))
        ]
    );
    // Systems that do not acknowledge versions are never held to it.
    let mut h = H::stocked();
    let mut sf = ev(
        "storefront",
        EventType::Snapshot,
        Measure::Available,
        Mode::Absolute,
        100,
    );
    sf.based_on_version = Some(3);
    h.send(1, sf).unwrap();
    h.send(
        2,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 1),
    )
    .unwrap();
    h.run_timers(1_000_000);
    assert!(!h.kinds().contains(&AlertKind::HandoffTimeout));
}

#[test]
fn unpropagated_change_is_a_value_that_never_was_authoritative() {
    let mut h = H::stocked();
    h.send(
        1,
        ev(
            "erp",
            EventType::Snapshot,
            Measure::OnHand,
            Mode::Absolute,
            100,
        ),
    )
    .unwrap();
    // A manual correction in the ERP, bypassing the WMS.
    h.send(
        2,
        ev(
            "erp",
            EventType::Adjustment,
            Measure::OnHand,
            Mode::Delta,
            -8,
        ),
    )
    .unwrap();
    assert_eq!(h.kinds(), vec![AlertKind::UnpropagatedChange]);
    let a = h.alerts()[0];
    assert_eq!((a.expected, a.observed), (100, 92));
    assert_eq!(h.model.name(a.root.system), "erp");
    // Catching up with an older authoritative value is not a bypass.
    let mut h = H::stocked();
    h.send(
        1,
        ev(
            "erp",
            EventType::Snapshot,
            Measure::OnHand,
            Mode::Absolute,
            100,
        ),
    )
    .unwrap();
    h.send(
        2,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 5),
    )
    .unwrap();
    h.send(
        3,
        ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 5),
    )
    .unwrap();
    h.send(
        4,
        ev(
            "erp",
            EventType::Snapshot,
            Measure::OnHand,
            Mode::Absolute,
            105,
        ),
    )
    .unwrap();
    assert!(h.kinds().is_empty());
}

#[test]
fn duplicates_change_nothing_and_emit_nothing() {
    let mut h = H::stocked();
    let mut e = ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 5);
    e.event_id = "rcv-1".into();
    assert_eq!(h.send(1, e.clone()), Ok(Outcome::Applied));
    let (st, n) = (h.st.clone(), h.out.len());
    assert_eq!(h.send(2, e), Ok(Outcome::Duplicate));
    assert_eq!((h.st.clone(), h.out.len()), (st, n));
}

#[test]
fn source_seq_orders_events_per_system() {
    let seq = |id: &str, s: i64, mode: Mode, q: i64| {
        let mut e = ev("wms", EventType::Adjustment, Measure::OnHand, mode, q);
        e.event_id = id.into();
        e.source_seq = Some(s);
        e
    };
    let mut h = H::stocked();
    h.send(1, seq("a", 10, Mode::Delta, 1)).unwrap();
    h.send(1, seq("c", 12, Mode::Delta, 1)).unwrap();
    // Late delta (11) not yet counted: applied, once.
    assert_eq!(
        h.send(1, seq("b", 11, Mode::Delta, 1)),
        Ok(Outcome::Applied)
    );
    assert_eq!(h.st.value(Measure::OnHand), 103);
    // Same seq, different id: a re-send, not a new event.
    assert_eq!(
        h.send(1, seq("b2", 11, Mode::Delta, 1)),
        Ok(Outcome::Duplicate)
    );
    // An absolute at 20 includes everything before it...
    h.send(1, seq("d", 20, Mode::Absolute, 150)).unwrap();
    // ...so a late delta at 15 is superseded, as is a late absolute.
    assert_eq!(
        h.send(1, seq("e", 15, Mode::Delta, 1)),
        Ok(Outcome::Superseded)
    );
    assert_eq!(
        h.send(1, seq("f", 19, Mode::Absolute, 1)),
        Ok(Outcome::Superseded)
    );
    assert_eq!(h.st.value(Measure::OnHand), 150);
    // Beyond the window: cannot tell, so it is rejected to the dead-letter topic.
    h.send(1, seq("g", 200, Mode::Delta, 1)).unwrap();
    assert_eq!(
        h.send(1, seq("h", 100, Mode::Delta, 1)).unwrap_err().code(),
        "too_late"
    );
}

#[test]
fn reservations_grant_reject_commit_release_and_expire() {
    let mut h = H::stocked(); // 100 available
    h.command(1, cmd(CommandKind::Reserve, "r1", 60, 300))
        .unwrap();
    h.command(2, cmd(CommandKind::Reserve, "r2", 50, 300))
        .unwrap();
    h.command(3, cmd(CommandKind::Reserve, "r3", 40, 10))
        .unwrap();
    assert_eq!(
        h.decisions(),
        vec![
            (DecisionKind::Granted, None, 40),
            (
                DecisionKind::Rejected,
                Some(RejectReason::InsufficientAvailability),
                40
            ),
            (DecisionKind::Granted, None, 0),
        ]
    );
    h.out.clear();
    h.command(4, cmd(CommandKind::Commit, "r1", 0, 0)).unwrap();
    assert_eq!(h.st.value(Measure::Committed), 60);
    h.command(5, cmd(CommandKind::Release, "r1", 0, 0)).unwrap();
    // r3 expires at 13 s, before the command at 20 s is decided.
    h.command(20, cmd(CommandKind::Release, "r9", 0, 0))
        .unwrap();
    assert_eq!(
        h.decisions(),
        vec![
            (DecisionKind::Committed, None, 0),
            (
                DecisionKind::Rejected,
                Some(RejectReason::UnknownReservation),
                0
            ),
            (DecisionKind::Expired, None, 40),
            (
                DecisionKind::Rejected,
                Some(RejectReason::UnknownReservation),
                40
            ),
        ]
    );
    // A repeated command changes nothing and gets its original decision again.
    h.out.clear();
    assert_eq!(
        h.command(21, cmd(CommandKind::Reserve, "r1", 60, 300)),
        Ok(Outcome::Duplicate)
    );
    let again = h.decisions_full();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (
            again[0].kind,
            again[0].command_id.as_str(),
            again[0].decided_at,
            again[0].version
        ),
        (DecisionKind::Granted, "r1-RESERVE", 1000, 4),
        "the original decision, not a new one"
    );
    h.out.clear();
    // Invalid and duplicate reservations are answered, not dropped.
    h.command(22, cmd(CommandKind::Reserve, "r4", 0, 300))
        .unwrap();
    h.command(23, cmd(CommandKind::Reserve, "r5", 1, 300))
        .unwrap();
    let mut again = cmd(CommandKind::Reserve, "r5", 1, 300);
    again.command_id = "r5-again".into();
    h.command(24, again).unwrap();
    let reasons: Vec<_> = h.decisions().iter().map(|d| d.1).collect();
    assert_eq!(
        reasons,
        vec![
            Some(RejectReason::InvalidCommand),
            None,
            Some(RejectReason::DuplicateReservation)
        ]
    );
}

fn order(system: &str, t: EventType, m: Measure, q: i64, order_ref: &str) -> InventoryEvent {
    let mut e = ev(system, t, m, Mode::Delta, q);
    e.order_ref = Some(order_ref.into());
    e
}

fn bucket(h: &H) -> (i64, i64, i64, i64) {
    (
        h.st.value(Measure::OnHand),
        h.st.value(Measure::Allocated),
        h.st.value(Measure::Committed),
        h.st.value(Measure::Available),
    )
}

#[test]
fn an_order_line_moves_between_buckets_and_fulfilment_relieves_it() {
    use EventType::*;
    use Measure::*;
    let mut h = H::stocked();
    h.send(1, order("storefront", OrderPlaced, Committed, 5, "WEB-1"))
        .unwrap();
    assert_eq!(bucket(&h), (100, 0, 5, 95));
    let v = h.st.version;
    // The WMS allocates the order: the promise becomes an allocation, in one version.
    h.send(2, order("wms", Allocation, Allocated, 5, "WEB-1"))
        .unwrap();
    assert_eq!(bucket(&h), (100, 5, 0, 95));
    assert_eq!(h.st.version, v + 1);
    // It ships: on hand and the allocation go down together.
    h.send(3, order("wms", Ship, OnHand, -5, "WEB-1")).unwrap();
    assert_eq!(bucket(&h), (95, 0, 0, 95));
    assert_eq!(h.st.version, v + 2);
    // An order shipped without an allocation (ship-from-store) relieves its commitment.
    h.send(4, order("storefront", OrderPlaced, Committed, 3, "WEB-2"))
        .unwrap();
    h.send(5, order("wms", Ship, OnHand, -3, "WEB-2")).unwrap();
    assert_eq!(bucket(&h), (92, 0, 0, 92));
    // A cancelled order releases what is still promised, once.
    h.send(6, order("storefront", OrderPlaced, Committed, 4, "WEB-3"))
        .unwrap();
    h.send(
        7,
        order("storefront", OrderCancelled, Committed, -4, "WEB-3"),
    )
    .unwrap();
    h.send(8, order("erp", OrderCancelled, Committed, -4, "WEB-3"))
        .unwrap();
    assert_eq!(bucket(&h), (92, 0, 0, 92));
    // A deallocation of a live order gives the units back to its promise.
    h.send(9, order("storefront", OrderPlaced, Committed, 2, "WEB-4"))
        .unwrap();
    h.send(10, order("wms", Allocation, Allocated, 2, "WEB-4"))
        .unwrap();
    h.send(11, order("wms", Deallocation, Allocated, -2, "WEB-4"))
        .unwrap();
    assert_eq!(bucket(&h), (92, 0, 2, 90));
    // A normal day raised nothing.
    h.run_timers(1_000_000);
    assert!(h.kinds().is_empty(), "{:?}", h.kinds());
}

#[test]
fn the_same_order_from_two_systems_counts_once() {
    use EventType::*;
    use Measure::*;
    let mut h = H::stocked();
    let mut line = order("storefront", OrderPlaced, Committed, 5, "WEB-7");
    line.line_ref = Some("1".into());
    h.send(1, line).unwrap();
    let mut other_line = order("storefront", OrderPlaced, Committed, 1, "WEB-7");
    other_line.line_ref = Some("2".into());
    h.send(2, other_line).unwrap();
    let v = h.st.version;
    let mut erp = order("erp", OrderPlaced, Committed, 5, "WEB-7");
    erp.line_ref = Some("1".into());
    h.out.clear();
    assert_eq!(h.send(600, erp), Ok(Outcome::Applied));
    assert_eq!(bucket(&h), (100, 0, 6, 94));
    assert_eq!(h.st.version, v, "a repeat is not a change");
    assert!(h.out.is_empty(), "{:?}", h.out);
}

#[test]
fn a_committed_reservation_is_the_orders_commitment() {
    use EventType::*;
    use Measure::*;
    let mut h = H::stocked();
    h.command(1, cmd(CommandKind::Reserve, "r1", 5, 600))
        .unwrap();
    let mut commit = cmd(CommandKind::Commit, "r1", 0, 600);
    commit.order_ref = Some("WEB-9".into());
    h.command(2, commit).unwrap();
    assert_eq!(bucket(&h), (100, 0, 5, 95));
    // The storefront reports the order it placed after the commit: counted once.
    h.send(3, order("storefront", OrderPlaced, Committed, 5, "WEB-9"))
        .unwrap();
    assert_eq!(bucket(&h), (100, 0, 5, 95));
    h.send(4, order("wms", Allocation, Allocated, 5, "WEB-9"))
        .unwrap();
    h.send(5, order("wms", Ship, OnHand, -5, "WEB-9")).unwrap();
    assert_eq!(bucket(&h), (95, 0, 0, 95));
    assert!(h.kinds().is_empty(), "{:?}", h.kinds());
}

#[test]
fn ids_are_remembered_for_the_horizon_not_for_the_last_few() {
    use EventType::*;
    use Measure::*;
    let mut h = H::stocked();
    let mut first = order("storefront", OrderPlaced, Committed, 1, "WEB-1");
    first.event_id = "sf-ord-1".into();
    h.send(1, first.clone()).unwrap();
    for i in 0..100 {
        h.send(2 + i, ev("wms", Receipt, OnHand, Mode::Delta, 1))
            .unwrap();
    }
    // Redelivered two hours and a hundred events later: still a duplicate.
    assert_eq!(h.send(7200, first.clone()), Ok(Outcome::Duplicate));
    assert_eq!(h.st.value(Committed), 1);
    // After the 24-hour horizon the id is forgotten.
    let mut late = first;
    late.order_ref = None;
    assert_eq!(h.send(90_000, late), Ok(Outcome::Applied));
    assert_eq!(h.st.value(Committed), 2);
}

#[test]
fn authority_by_location_backorders_and_negative_stock_are_policies() {
    let cfg = format!(
        "{CONFIG}
[[measures.on_hand.by_location]]
prefix = \"STORE-\"
authority = \"pos\"
[rules]
negative_on_hand = \"accept\"
[[rules.backorder]]
sku_prefix = \"PRE-\"
"
    );
    let cfg: CascadeConfig = toml::from_str(&cfg).unwrap();
    let model = Model::build(&cfg).unwrap();
    let run = |sku: &str, location: &str, e: Vec<InventoryEvent>| {
        let mut st = KeyState::default();
        let mut out = Vec::new();
        for (i, mut e) in e.into_iter().enumerate() {
            e.sku = sku.into();
            e.location = location.into();
            e.event_id = format!("x{i}");
            apply(&model, &mut st, Input::Event(&e), 1000, &mut out).unwrap();
        }
        (st, out)
    };
    let snap = |s: &str, q| ev(s, EventType::Snapshot, Measure::OnHand, Mode::Absolute, q);
    // At a store the POS owns on_hand; the WMS's number is only its view.
    let (st, _) = run("SKU-1", "STORE-7", vec![snap("pos", 12), snap("wms", 40)]);
    assert_eq!(st.value(Measure::OnHand), 12);
    let (st, _) = run("SKU-1", "DC-1", vec![snap("pos", 12), snap("wms", 40)]);
    assert_eq!(st.value(Measure::OnHand), 40);
    // A store's book stock may go negative when the retailer says so.
    let (st, _) = run("SKU-1", "STORE-7", vec![snap("pos", -2)]);
    assert_eq!(st.value(Measure::OnHand), -2);
    // A preorder SKU takes orders beyond stock without an OVERSELL.
    let place = || {
        ev(
            "storefront",
            EventType::OrderPlaced,
            Measure::Committed,
            Mode::Delta,
            5,
        )
    };
    let (_, out) = run("PRE-1", "DC-1", vec![snap("wms", 0), place()]);
    assert!(out.contains(&Output::Action(ActionCheck {
        system: SysId::of("storefront"),
        outcome: ActionOutcome::Backorder
    })));
    assert!(!out.iter().any(|o| matches!(o, Output::Alert(_))));
    let (_, out) = run("SKU-1", "DC-1", vec![snap("wms", 0), place()]);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Alert(a) if a.kind == AlertKind::Oversell)));

    // With the dead-letter policy a negative on_hand is rejected.
    let cfg = format!("{CONFIG}\n[rules]\nnegative_on_hand = \"dead_letter\"\n");
    let model = Model::build(&toml::from_str(&cfg).unwrap()).unwrap();
    let mut e = snap("wms", -2);
    e.event_id = "neg".into();
    let err = apply(
        &model,
        &mut KeyState::default(),
        Input::Event(&e),
        0,
        &mut Vec::new(),
    );
    assert_eq!(err.unwrap_err().code(), "impossible_quantity");
}

#[test]
fn a_system_that_keeps_catching_up_within_its_window_never_drifts() {
    // The ERP syncs every 50 s (window 60 s); on hand changes every 10 s. Each batch reports
    // the truth as of the batch: behind, never beyond its window.
    let mut h = H::stocked();
    let mut truth = 100;
    let mut as_of_truth = 100;
    for t in 1..=600 {
        if t % 10 == 0 {
            truth += 1;
            h.send(
                t,
                ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 1),
            )
            .unwrap();
        }
        if t % 50 == 0 {
            as_of_truth = truth;
        }
        if t % 50 == 5 {
            let mut batch = ev(
                "erp",
                EventType::Snapshot,
                Measure::OnHand,
                Mode::Absolute,
                as_of_truth,
            );
            batch.data_as_of = Some((t - 5) * 1000);
            h.send(t, batch).unwrap();
        }
    }
    h.run_timers(600_000);
    assert!(h.kinds().is_empty(), "{:?}", h.kinds());

    // When it stops syncing, it drifts once, from the first change it missed.
    h.out.clear();
    for t in 601..=800 {
        if t % 10 == 0 {
            h.send(
                t,
                ev("wms", EventType::Receipt, Measure::OnHand, Mode::Delta, 1),
            )
            .unwrap();
        }
    }
    assert_eq!(h.kinds(), vec![AlertKind::Drift]);
}
