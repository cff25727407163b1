//! The fold: `apply(model, state, input, now, out)`.
//!
//! Deterministic and free of I/O: the same inputs at the same `now` give the same state and
//! the same outputs, which is what makes replay and exactly-once restoration possible. The
//! caller owns the output buffer and reuses it, so the hot path does not allocate (except when
//! a key sees a system, a hold or a history entry for the first time).

use crate::event::{
    type_rule, CommandKind, EventClass, EventType, InventoryEvent, Measure, Millis, Mode,
    ReservationCommand, Sign,
};
use crate::id::{fingerprint, fingerprint_parts, Id, IdTooLong};
use crate::model::{Authority, Model, NegativeStock, Route, SysId};
use crate::output::{
    ActionCheck, ActionOutcome, Alert, AlertKind, Cause, Converged, Decision, DecisionKind, Output,
    Propagation, RejectReason, RootCause,
};
use crate::state::{
    Answer, Change, Divergence, Hold, KeyState, OpenAlert, OrderLine, PendingAck, Reading, RootIx,
    Seen, View, HISTORY, HISTORY_MAX, LINES_MAX, SEEN_MAX, SEQ_WINDOW,
};

/// Quantities beyond this magnitude are rejected as impossible; it also keeps every sum far
/// from overflow.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;

/// One input to the fold.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// An inventory event from a system's input topic.
    Event(&'a InventoryEvent),
    /// A command from the reservation command topic.
    Command(&'a ReservationCommand),
    /// The clock reached `now`: fire due timers.
    Timer,
}

/// What the fold did with a valid input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Folded into the state.
    Applied,
    /// Seen before (same `event_id`/`command_id`, or same `source_seq`): nothing changed,
    /// nothing emitted.
    Duplicate,
    /// Arrived after a newer ABSOLUTE value from the same system that already includes it:
    /// recorded as seen, nothing changed.
    Superseded,
}

/// Why an input is invalid. It goes to the dead-letter topic with this reason; the state is
/// untouched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `system` is not in the config.
    #[error("unknown system {0:?}")]
    UnknownSystem(String),
    /// A required text field is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// An identifier is too long to store.
    #[error("{field}: {source}")]
    IdTooLong {
        /// The field.
        field: &'static str,
        /// The length problem.
        #[source]
        source: IdTooLong,
    },
    /// The event type cannot change that measure.
    #[error("{event_type:?} cannot change {measure:?}")]
    MeasureNotAllowed {
        /// The type.
        event_type: EventType,
        /// The measure.
        measure: Measure,
    },
    /// The event type does not allow that mode.
    #[error("{event_type:?} does not allow mode {mode:?}")]
    ModeNotAllowed {
        /// The type.
        event_type: EventType,
        /// The mode.
        mode: Mode,
    },
    /// The quantity cannot happen.
    #[error("impossible quantity {quantity} for {event_type:?} {mode:?}: {why}")]
    ImpossibleQuantity {
        /// The type.
        event_type: EventType,
        /// The mode.
        mode: Mode,
        /// The quantity.
        quantity: i64,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A field that must not be negative is.
    #[error("{0} must not be negative")]
    Negative(&'static str),
    /// The SKU contains `|`, the key separator (`sku|location`).
    #[error("sku {0:?} contains '|', the key separator")]
    InvalidSku(String),
    /// Too far behind the newest `source_seq` to tell a late event from a duplicate.
    #[error(
        "source_seq {seq} is more than {SEQ_WINDOW} behind the newest seen ({max}) from this \
         system for this key"
    )]
    TooLate {
        /// The event's sequence number.
        seq: u64,
        /// The newest seen.
        max: u64,
    },
}

impl Rejection {
    /// Every code [`Rejection::code`] returns.
    pub const CODES: [&'static str; 9] = [
        "unknown_system",
        "empty_field",
        "id_too_long",
        "measure_not_allowed",
        "mode_not_allowed",
        "impossible_quantity",
        "negative_field",
        "invalid_sku",
        "too_late",
    ];

    /// A short, bounded code for metrics labels and the dead-letter `reason` header.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnknownSystem(_) => "unknown_system",
            Rejection::Empty(_) => "empty_field",
            Rejection::IdTooLong { .. } => "id_too_long",
            Rejection::MeasureNotAllowed { .. } => "measure_not_allowed",
            Rejection::ModeNotAllowed { .. } => "mode_not_allowed",
            Rejection::ImpossibleQuantity { .. } => "impossible_quantity",
            Rejection::Negative(_) => "negative_field",
            Rejection::InvalidSku(_) => "invalid_sku",
            Rejection::TooLate { .. } => "too_late",
        }
    }
}

/// Applies one input at processing time `now`, mutating `state` and appending outputs to
/// `out`.
///
/// # Errors
/// A [`Rejection`] when the input is invalid; `state` and `out` are then untouched.
pub fn apply(
    model: &Model,
    state: &mut KeyState,
    input: Input<'_>,
    now: Millis,
    out: &mut Vec<Output>,
) -> Result<Outcome, Rejection> {
    match input {
        Input::Event(e) => apply_event(model, state, e, now, out),
        Input::Command(c) => apply_command(model, state, c, now, out),
        Input::Timer => {
            fire_timers(model, state, now, out);
            Ok(Outcome::Applied)
        }
    }
}

/// An event that passed validation, with its identifiers resolved.
struct Valid<'a> {
    e: &'a InventoryEvent,
    system: SysId,
    id: Id,
    class: EventClass,
    seq: Option<u64>,
    based_on: Option<u64>,
    /// The order line it names: a fingerprint of `order_ref` and `line_ref`.
    line: Option<u64>,
}

/// Checks an event against the config and the type table without touching any state.
///
/// # Errors
/// The first rule the event breaks.
pub fn validate<'a>(model: &Model, e: &'a InventoryEvent) -> Result<ValidEvent<'a>, Rejection> {
    let system = model
        .system_by_name(&e.system)
        .ok_or_else(|| Rejection::UnknownSystem(e.system.clone()))?
        .id;
    if e.event_id.is_empty() {
        return Err(Rejection::Empty("event_id"));
    }
    if e.sku.is_empty() {
        return Err(Rejection::Empty("sku"));
    }
    if e.sku.contains('|') {
        return Err(Rejection::InvalidSku(e.sku.clone()));
    }
    let id = Id::new(&e.event_id).map_err(|source| Rejection::IdTooLong {
        field: "event_id",
        source,
    })?;
    let rule = type_rule(e.event_type);
    if !rule.measures.contains(&e.measure) {
        return Err(Rejection::MeasureNotAllowed {
            event_type: e.event_type,
            measure: e.measure,
        });
    }
    let impossible = |why| Rejection::ImpossibleQuantity {
        event_type: e.event_type,
        mode: e.mode,
        quantity: e.quantity,
        why,
    };
    if e.quantity.unsigned_abs() > MAX_QUANTITY.unsigned_abs() {
        return Err(impossible("magnitude above 10^12"));
    }
    match e.mode {
        Mode::Delta => match rule.delta {
            None => {
                return Err(Rejection::ModeNotAllowed {
                    event_type: e.event_type,
                    mode: e.mode,
                })
            }
            Some(Sign::Positive) if e.quantity <= 0 => return Err(impossible("must be > 0")),
            Some(Sign::Negative) if e.quantity >= 0 => return Err(impossible("must be < 0")),
            Some(Sign::Any) if e.quantity == 0 => return Err(impossible("a zero change")),
            Some(_) => {}
        },
        Mode::Absolute => {
            if !rule.absolute {
                return Err(Rejection::ModeNotAllowed {
                    event_type: e.event_type,
                    mode: e.mode,
                });
            }
            // A storefront may show a negative availability, and a POS's book stock may be
            // negative if the retailer says so; no count and no other bookkeeping quantity
            // can be.
            let negative_ok = e.measure == Measure::Available
                || (e.measure == Measure::OnHand
                    && e.event_type != EventType::CycleCount
                    && model.rules().negative_on_hand == NegativeStock::Accept);
            if e.quantity < 0 && !negative_ok {
                return Err(impossible(if e.measure == Measure::OnHand {
                    "on_hand cannot be negative (a count, or rules.negative_on_hand = \"dead_letter\")"
                } else {
                    "a stored measure cannot be negative"
                }));
            }
        }
    }
    let seq = opt_non_negative(e.source_seq, "source_seq")?;
    let based_on = opt_non_negative(e.based_on_version, "based_on_version")?;
    let line = e
        .order_ref
        .as_deref()
        .filter(|o| !o.is_empty())
        .map(|o| line_id(o, e.line_ref.as_deref()));
    Ok(ValidEvent(Valid {
        e,
        system,
        id,
        class: rule.class,
        seq,
        based_on,
        line,
    }))
}

/// The identity of an order line: `order_ref` and `line_ref` (absent and empty are the same).
pub fn line_id(order_ref: &str, line_ref: Option<&str>) -> u64 {
    fingerprint_parts(&[order_ref, line_ref.unwrap_or("")])
}

/// An event [`validate`] accepted.
pub struct ValidEvent<'a>(Valid<'a>);

fn opt_non_negative(v: Option<i64>, field: &'static str) -> Result<Option<u64>, Rejection> {
    match v {
        None => Ok(None),
        Some(v) => u64::try_from(v)
            .map(Some)
            .map_err(|_| Rejection::Negative(field)),
    }
}

fn apply_event(
    model: &Model,
    st: &mut KeyState,
    e: &InventoryEvent,
    now: Millis,
    out: &mut Vec<Output>,
) -> Result<Outcome, Rejection> {
    let ValidEvent(v) = validate(model, e)?;
    st.class = model.key_class(&e.sku, &e.location);
    let horizon = horizon_start(model, now);
    let fp = v.id.fingerprint();
    if was_seen(st, fp, horizon) {
        return Ok(Outcome::Duplicate);
    }
    let vi = view_index(st, v.system);
    // The source_seq window: duplicates, late events, superseded deltas.
    let mut superseded = false;
    if let Some(seq) = v.seq {
        let view = &mut st.views[vi];
        match seq_status(view, seq) {
            SeqStatus::Duplicate => return Ok(Outcome::Duplicate),
            SeqStatus::TooLate => {
                return Err(Rejection::TooLate {
                    seq,
                    max: view.max_seq,
                })
            }
            SeqStatus::Late => {
                // A late ABSOLUTE is older than the value we hold; a late DELTA at or below the
                // last ABSOLUTE's seq is already inside that value. Either way: no change.
                let m = v.e.measure.index();
                superseded = v.e.mode == Mode::Absolute || seq <= view.abs_seq[m];
            }
            SeqStatus::New => {}
        }
        mark_seq(view, seq);
    }
    remember(st, fp, now, horizon);
    if superseded {
        st.views[vi].last_seen = now;
        return Ok(Outcome::Superseded);
    }

    let measure = v.e.measure;
    let root = RootCause {
        event_id: v.id,
        system: v.system,
        cause: Cause::Event(v.e.event_type),
        occurred_at: v.e.occurred_at,
        version: 0,
    };

    let authority = model.authority(st.class, measure);
    let is_system_authority = authority == Authority::System(v.system);
    let is_authority = measure != Measure::Available
        && match authority {
            Authority::System(s) => s == v.system,
            // The ledger takes orders from every channel; counts and snapshots of `committed`
            // from a system remain that system's view.
            Authority::Ledger => v.class != EventClass::Count,
        };
    // What the event does to its order line, if it names one and speaks with authority.
    let plan = match v.line {
        Some(id) if is_authority && v.e.mode == Mode::Delta => {
            plan_line(model, st, &v, id, horizon, now)
        }
        _ => None,
    };
    let repeat = plan.as_ref().is_some_and(|p| p.repeat);

    // Checkpoint at the handoff: an action on stale data is flagged, never silently accepted.
    // An order already counted (reported again by another system) was checked the first time.
    if v.class == EventClass::Consuming && !repeat {
        let consumption = plan.as_ref().map_or(v.e.quantity, |p| p.consumption);
        check_action(model, st, &v, consumption, now, out);
    }

    // The system's own view. Actions by a system that is not the measure's authority are not
    // readings: a storefront's order is not its statement of the key's commitments.
    let old_reading = st.views[vi].readings[measure.index()];
    if v.class == EventClass::Count || is_system_authority {
        let base = match (old_reading, is_authority) {
            (Some(r), _) => Some(r.value),
            // An authority's first delta builds on the authoritative value it maintains.
            (None, true) if st.is_known(measure) => Some(st.value(measure)),
            (None, true) => Some(0),
            (None, false) => None,
        };
        let new_value = match v.e.mode {
            Mode::Absolute => Some(v.e.quantity),
            Mode::Delta => base.map(|b| b.saturating_add(v.e.quantity)),
        };
        let view = &mut st.views[vi];
        if let Some(value) = new_value {
            view.readings[measure.index()] = Some(Reading {
                value,
                occurred_at: v.e.occurred_at,
                at: now,
            });
        }
        if v.e.mode == Mode::Absolute {
            if let Some(seq) = v.seq {
                view.abs_seq[measure.index()] = view.abs_seq[measure.index()].max(seq);
            }
        }
    }
    st.views[vi].last_seen = now;
    let new_reading = st.views[vi].readings[measure.index()];
    let basis = Basis {
        version: v.based_on,
        as_of: v.e.data_as_of,
    };
    let own = Trigger::Own {
        root,
        measure,
        basis,
    };

    if is_authority {
        let i = measure.index();
        let before = st.auth;
        let was_known = st.known;
        if !repeat {
            let own_delta = plan.as_ref().map_or(v.e.quantity, |p| p.own);
            st.auth[i] = match v.e.mode {
                Mode::Absolute => v.e.quantity,
                Mode::Delta => st.auth[i].saturating_add(own_delta),
            };
            st.known |= 1 << i;
        }
        if let Some(p) = plan {
            for m in Measure::STORED {
                let d = p.extra[m.index()];
                if d != 0 {
                    st.auth[m.index()] = st.auth[m.index()].saturating_add(d);
                    st.known |= 1 << m.index();
                }
            }
            store_line(st, p.ix, p.line, now);
        }
        if st.auth != before || st.known != was_known {
            let origin = match authority {
                Authority::System(s) => s,
                Authority::Ledger => SysId::ledger(),
            };
            // The authority itself already has the value; every other downstream system,
            // including the channel whose order reached the ledger, must hear of it.
            let exclude = (origin == v.system).then_some(v.system);
            commit_change(model, st, root, origin, exclude, now, out);
        } else {
            evaluate_view(model, st, vi, own, now, out);
        }
    } else {
        let changed = new_reading.is_some() && new_reading != old_reading;
        if changed && v.class == EventClass::Count {
            check_unpropagated(model, st, vi, measure, root, now, out);
        }
        evaluate_view(model, st, vi, own, now, out);
    }

    if let Some(version) = v.based_on {
        acknowledge(model, st, vi, version, now, out);
    }
    Ok(Outcome::Applied)
}

/// What an authoritative event that names an order line does to it and to the buckets.
struct LinePlan {
    /// The line's index in `KeyState::lines`, or `None` for a new line.
    ix: Option<usize>,
    /// The line after the event.
    line: OrderLine,
    /// The change to the event's own measure (replaces its quantity).
    own: i64,
    /// Changes to the other stored measures (`Measure::ALL` order).
    extra: [i64; 5],
    /// Units of availability the action takes that were not already promised to this line.
    consumption: i64,
    /// The line was already counted (the same order from another system): no change at all.
    repeat: bool,
}

/// Plans the effect of `v` on order line `id`. Commitments live in the ledger, so they are
/// only moved when the ledger is `committed`'s authority; allocations are moved only by the
/// allocated authority.
fn plan_line(
    model: &Model,
    st: &KeyState,
    v: &Valid<'_>,
    id: u64,
    horizon: Millis,
    now: Millis,
) -> Option<LinePlan> {
    let ledger_commits = model.authority(st.class, Measure::Committed) == Authority::Ledger;
    let allocates = model.authority(st.class, Measure::Allocated) == Authority::System(v.system);
    let ix = st
        .lines
        .iter()
        .position(|l| l.id == id && l.closed_at.is_none_or(|c| c >= horizon));
    let mut line = ix.map_or(
        OrderLine {
            id,
            committed: 0,
            allocated: 0,
            shipped: 0,
            cancelled: false,
            opened_at: now,
            closed_at: None,
        },
        |i| st.lines[i],
    );
    let q = v.e.quantity.saturating_abs();
    let mut plan = LinePlan {
        ix,
        line,
        own: v.e.quantity,
        extra: [0; 5],
        consumption: q,
        repeat: false,
    };
    let ci = Measure::Committed.index();
    let ai = Measure::Allocated.index();
    match (v.e.event_type, v.e.measure) {
        (EventType::OrderPlaced, Measure::Committed) if ledger_commits => {
            if ix.is_some() {
                // The same order line from another system (or after its COMMIT): counted once.
                plan.repeat = true;
                return Some(plan);
            }
            line.committed = q;
        }
        (EventType::OrderCancelled, Measure::Committed) if ledger_commits => {
            if line.cancelled {
                plan.repeat = true;
                return Some(plan);
            }
            // Release what is still promised to the line, not more: units already allocated
            // or shipped are released by the WMS's own deallocation or a return.
            let r = q.min(line.committed);
            line.committed -= r;
            line.cancelled = true;
            plan.own = -r;
        }
        (EventType::Allocation, Measure::Allocated) if allocates => {
            let r = if ledger_commits {
                q.min(line.committed)
            } else {
                0
            };
            line.committed -= r;
            line.allocated = line.allocated.saturating_add(q);
            plan.extra[ci] = -r;
            plan.consumption = q - r;
        }
        (EventType::Deallocation, Measure::Allocated) if allocates => {
            ix?;
            let d = q.min(line.allocated);
            line.allocated -= d;
            if !line.cancelled && ledger_commits {
                // Still ordered: the units go back to being promised.
                line.committed = line.committed.saturating_add(d);
                plan.extra[ci] = d;
            }
        }
        (EventType::Pick | EventType::Ship, Measure::OnHand) => {
            // A fulfilment of an order line we never saw has nothing to relieve.
            ix?;
            let a = if allocates { q.min(line.allocated) } else { 0 };
            line.allocated -= a;
            plan.extra[ai] = -a;
            let r = if ledger_commits {
                (q - a).min(line.committed)
            } else {
                0
            };
            line.committed -= r;
            plan.extra[ci] = -r;
            line.shipped = line.shipped.saturating_add(q);
        }
        (EventType::Pick | EventType::Ship, Measure::Allocated) => {
            // A fulfilment of an order line we never saw has nothing to relieve.
            ix?;
            line.allocated -= q.min(line.allocated);
        }
        _ => return None,
    }
    plan.line = line;
    Some(plan)
}

/// Writes `line` back (or adds it), closing it when nothing is outstanding.
fn store_line(st: &mut KeyState, ix: Option<usize>, mut line: OrderLine, now: Millis) {
    if line.closed_at.is_none() && line.is_done() {
        line.closed_at = Some(now);
    }
    match ix {
        Some(i) => st.lines[i] = line,
        None => {
            if st.lines.len() >= LINES_MAX {
                // Forget the oldest closed line, else the oldest line.
                let i = st
                    .lines
                    .iter()
                    .position(|l| l.closed_at.is_some())
                    .unwrap_or(0);
                st.lines.remove(i);
            }
            st.lines.push(line);
        }
    }
}

/// STALE_ACTION and OVERSELL for an allocation or order taking `consumption` units it had not
/// already been promised, judged against the state the action should have seen (before
/// applying it). One alert at most: STALE_ACTION when the changes the actor missed took away
/// what it relied on, OVERSELL when it took more than it could have seen.
fn check_action(
    model: &Model,
    st: &KeyState,
    v: &Valid<'_>,
    consumption: i64,
    now: Millis,
    out: &mut Vec<Output>,
) {
    let stale = v.based_on.is_some_and(|b| b < st.version)
        || (v.based_on.is_none() && v.e.data_as_of.is_some_and(|t| t < st.changed_at));
    let sellable = st.sellable();
    let counted = |outcome| {
        Output::Action(ActionCheck {
            system: v.system,
            outcome,
        })
    };
    // The changes the actor missed, oldest first: after its version, or after its data time.
    let missed = |c: &Change| match v.based_on {
        Some(b) => c.version > b,
        None => v.e.data_as_of.is_some_and(|t| c.at > t),
    };
    if consumption <= 0 || consumption <= sellable {
        if !stale {
            out.push(counted(ActionOutcome::Current));
            return;
        }
        out.push(counted(ActionOutcome::StaleSufficient));
        if model.alerts().stale_view {
            // Traced to the oldest change the actor missed.
            if let Some(c) = st.history.iter().find(|c| missed(c)) {
                out.push(stale_alert(AlertKind::StaleView, st, v, c, now));
            }
        }
        return;
    }
    if st.class.backorder {
        out.push(counted(ActionOutcome::Backorder));
        return;
    }
    let missed_from = if stale {
        st.history.iter().position(missed)
    } else {
        None
    };
    // What the actor saw: the sellable quantity just before the first change it missed (if
    // that is older than the history kept, it saw more than we remember: assume enough).
    let seen = missed_from
        .and_then(|i| i.checked_sub(1))
        .map(|i| st.history[i].sellable);
    if let (Some(from), true) = (missed_from, seen.is_none_or(|s| consumption <= s)) {
        // The missed change that took the most away is the root.
        let mut best: Option<(i64, &Change)> = None;
        for i in from..st.history.len() {
            let before = if i == 0 {
                seen.unwrap_or(st.history[i].sellable)
            } else {
                st.history[i - 1].sellable
            };
            let drop = before.saturating_sub(st.history[i].sellable);
            if best.is_none_or(|(d, _)| drop > d) {
                best = Some((drop, &st.history[i]));
            }
        }
        if let Some((_, c)) = best {
            out.push(stale_alert(AlertKind::StaleAction, st, v, c, now));
            return;
        }
    }
    // The root is the last change that took availability down, else the last change.
    let mut prev = None;
    let mut root = None;
    for c in &st.history {
        if prev.is_some_and(|p| c.sellable < p) {
            root = Some(c);
        }
        prev = Some(c.sellable);
    }
    let root = root.or(st.history.last());
    out.push(Output::Alert(Alert {
        kind: AlertKind::Oversell,
        resolves: None,
        system: v.system,
        measure: v.e.measure,
        expected: sellable,
        observed: consumption,
        root: root.map_or(self_root(v), |c| st.root(c.root)),
        origin: root.map_or(v.system, |c| c.origin),
        window_ms: 0,
        diverged_at: root.map_or(now, |c| c.at),
        opened_at: now,
        opened_version: st.version,
        trigger: v.id,
        resolved_at: None,
    }));
}

/// A STALE_ACTION or STALE_VIEW on action `v`: the version it acted on against the current
/// one, traced to the missed change `c`.
fn stale_alert(kind: AlertKind, st: &KeyState, v: &Valid<'_>, c: &Change, now: Millis) -> Output {
    Output::Alert(Alert {
        kind,
        resolves: None,
        system: v.system,
        measure: v.e.measure,
        expected: to_i64(st.version),
        observed: v.based_on.map_or(-1, to_i64),
        root: st.root(c.root),
        origin: c.origin,
        window_ms: 0,
        diverged_at: c.at,
        opened_at: now,
        opened_version: st.version,
        trigger: v.id,
        resolved_at: None,
    })
}

fn self_root(v: &Valid<'_>) -> RootCause {
    RootCause {
        event_id: v.id,
        system: v.system,
        cause: Cause::Event(v.e.event_type),
        occurred_at: v.e.occurred_at,
        version: 0,
    }
}

/// A non-authoritative system's count moved its value to one that was never authoritative:
/// a change that bypassed the chain.
fn check_unpropagated(
    model: &Model,
    st: &KeyState,
    vi: usize,
    m: Measure,
    root: RootCause,
    now: Millis,
    out: &mut Vec<Output>,
) {
    // `available` is a display, not a count: a storefront showing a number that came from
    // nowhere is PHANTOM_AVAILABILITY or DRIFT, judged by `evaluate_view`.
    if m == Measure::Available || !st.is_known(m) || !held_to(model, st, st.views[vi].system, m) {
        return;
    }
    let Some(r) = st.views[vi].readings[m.index()] else {
        return;
    };
    let tol = model.tolerance(m);
    let expected = expected_value(st, m);
    if (r.value - expected).abs() <= tol {
        return;
    }
    let was_authoritative = st
        .history
        .iter()
        .any(|c| (c.values[m.index()] - r.value).abs() <= tol);
    if was_authoritative {
        return;
    }
    out.push(Output::Alert(Alert {
        kind: AlertKind::UnpropagatedChange,
        resolves: None,
        system: st.views[vi].system,
        measure: m,
        expected,
        observed: r.value,
        root,
        origin: root.system,
        window_ms: 0,
        diverged_at: now,
        opened_at: now,
        opened_version: st.version,
        trigger: root.event_id,
        resolved_at: None,
    }));
}

/// Records an authoritative change: bumps the version, remembers it, propagates it downstream
/// and re-evaluates every view against the new truth.
fn commit_change(
    model: &Model,
    st: &mut KeyState,
    mut root: RootCause,
    origin: SysId,
    exclude: Option<SysId>,
    now: Millis,
    out: &mut Vec<Output>,
) {
    st.version += 1;
    st.changed_at = now;
    root.version = st.version;
    let mut values = [0; 5];
    for m in Measure::ALL {
        values[m.index()] = st.value(m);
    }
    // Keep the last HISTORY changes, and younger ones up to HISTORY_MAX: a reading that lags
    // by up to twice the longest window can still be matched to the truth it reflects.
    let keep_from = now.saturating_sub(model.history_ms());
    let mut drop = 0;
    while st.history.len() - drop >= HISTORY
        && (st.history.len() - drop >= HISTORY_MAX || st.history[drop].at < keep_from)
    {
        drop += 1;
    }
    st.history.drain(..drop);
    let rix = st.intern(root);
    st.history.push(Change {
        version: st.version,
        root: rix,
        origin,
        at: now,
        values,
        sellable: st.sellable(),
    });
    let snapshot = st.snapshot();
    for sys in model.systems() {
        if Some(sys.id) == exclude {
            continue;
        }
        let Some(route) = model.route(origin, sys.id) else {
            continue;
        };
        let deadline = now.saturating_add(window(route));
        out.push(Output::Propagation(Propagation {
            target: sys.id,
            version: st.version,
            state: snapshot,
            root,
            origin,
            emitted_at: now,
            deadline,
        }));
        if !sys.acks_versions {
            continue;
        }
        if let Some(v) = st.views.iter_mut().find(|v| v.system == sys.id) {
            if v.pending_ack.is_none() {
                v.pending_ack = Some(PendingAck {
                    version: st.version,
                    since: now,
                    deadline,
                    root: rix,
                    origin,
                    window_ms: route.window_ms,
                    alert: None,
                });
            }
        }
    }
    for vi in 0..st.views.len() {
        evaluate_view(
            model,
            st,
            vi,
            Trigger::Change { root: rix, origin },
            now,
            out,
        );
    }
}

/// Why a view is being re-evaluated.
#[derive(Clone, Copy)]
enum Trigger {
    /// The system itself published `measure`, from data as of `basis`.
    Own {
        root: RootCause,
        measure: Measure,
        basis: Basis,
    },
    /// The authoritative state changed (root: index into the root table).
    Change { root: RootIx, origin: SysId },
}

/// The point in the truth's history a system's report reflects.
#[derive(Clone, Copy)]
struct Basis {
    /// The authoritative version it read (`based_on_version`).
    version: Option<u64>,
    /// The time of the data it read (`data_as_of`).
    as_of: Option<Millis>,
}

impl Basis {
    /// Whether change `c` was already there when the report's data was read.
    fn includes(&self, c: &Change) -> bool {
        match (self.version, self.as_of) {
            (Some(v), _) => c.version <= v,
            (None, Some(t)) => c.at <= t,
            (None, None) => true,
        }
    }
}

/// The change a reading of `m` that is not the truth now has been behind since: the reading
/// matches the truth at some point its basis allows (the newest such), and the returned
/// change began the run of changes that put the truth where it now is relative to it (on the
/// same side, beyond tolerance). `None` when the reading matches no remembered truth: the
/// system is not behind, it is off.
fn lag_start(st: &KeyState, m: Measure, value: i64, tol: i64, basis: Basis) -> Option<usize> {
    let at = |c: &Change| match m {
        Measure::Available => c.values[m.index()].max(0),
        _ => c.values[m.index()],
    };
    let side = |c: &Change| {
        let d = value.saturating_sub(at(c));
        if d.abs() <= tol {
            0
        } else {
            d.signum()
        }
    };
    let k = st
        .history
        .iter()
        .rposition(|c| side(c) == 0 && basis.includes(c))?;
    let mut start = None;
    let mut prev = 0;
    for (j, c) in st.history.iter().enumerate().skip(k + 1) {
        let s = side(c);
        if s != prev && s != 0 {
            start = Some(j);
        }
        prev = s;
    }
    start
}

/// The value a system's reading of `m` is compared with. A storefront cannot show less than
/// zero, so `available` is compared clamped at zero.
fn expected_value(st: &KeyState, m: Measure) -> i64 {
    match m {
        Measure::Available => st.value(m).max(0),
        _ => st.value(m),
    }
}

/// Whether `system` is downstream of the authority of `m` (for `available`: of any authority),
/// i.e. whether it is expected to converge on it.
fn held_to(model: &Model, st: &KeyState, system: SysId, m: Measure) -> bool {
    model
        .held(st.class, system)
        .is_some_and(|(_, w)| w[m.index()].is_some())
}

fn window(route: &Route) -> Millis {
    i64::try_from(route.window_ms).unwrap_or(Millis::MAX)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Compares every reading of one view with the authoritative state, opening, keeping,
/// restarting or closing divergences.
fn evaluate_view(
    model: &Model,
    st: &mut KeyState,
    vi: usize,
    trigger: Trigger,
    now: Millis,
    out: &mut Vec<Output>,
) {
    let system = st.views[vi].system;
    let Some((sys, held)) = model.held(st.class, system) else {
        return;
    };
    let customer_facing = sys.customer_facing;
    for m in Measure::ALL {
        let mi = m.index();
        let Some(reading) = st.views[vi].readings[mi] else {
            continue;
        };
        let authority_here = m != Measure::Available && model.origin_of(st.class, m) == system;
        let held_window = if authority_here || !st.is_known(m) {
            None
        } else {
            held[mi]
        };
        let Some(held_window) = held_window else {
            continue;
        };
        let expected = expected_value(st, m);
        let diff = reading.value.saturating_sub(expected);
        let current = st.views[vi].divergence[mi];
        let tol = model.tolerance(m);
        if diff.abs() <= tol {
            if let Some(d) = current {
                resolve(st, vi, m, &d, expected, reading.value, now, out);
                out.push(Output::Converged(Converged {
                    system,
                    measure: m,
                    origin: d.origin,
                    latency_ms: now.saturating_sub(d.since),
                    within_window: d.alert.is_none(),
                }));
                st.views[vi].divergence[mi] = None;
            }
            continue;
        }
        let sign: i8 = if diff > 0 { 1 } else { -1 };
        let kind_for = |sign: i8| {
            if customer_facing && m == Measure::Available && sign > 0 {
                AlertKind::PhantomAvailability
            } else {
                AlertKind::Drift
            }
        };
        let window_from = |origin: SysId| {
            model
                .route(origin, system)
                .map_or(held_window, |r| r.window_ms)
        };
        let divergence = |since: Millis, root: RootIx, origin: SysId, window_ms: u64| Divergence {
            since,
            deadline: since.saturating_add(i64::try_from(window_ms).unwrap_or(i64::MAX)),
            root,
            origin,
            sign,
            window_ms,
            alert: None,
        };
        let d = match trigger {
            // The system reported this measure: judge the report against the truth as of the
            // data it reflects. Behind but within its window is on time; a value that was
            // never the truth there is off from now.
            Trigger::Own {
                root,
                measure,
                basis,
            } if measure == m => {
                let fresh = match lag_start(st, m, reading.value, tol, basis) {
                    Some(j) => {
                        let c = st.history[j];
                        Some(divergence(c.at, c.root, c.origin, window_from(c.origin)))
                    }
                    None => None,
                };
                match (current, fresh) {
                    // Still beyond its window on the same side: the open alert stays open.
                    (Some(d), Some(f))
                        if d.alert.is_some() && d.sign == sign && f.deadline <= now =>
                    {
                        d
                    }
                    (Some(d), None) if d.alert.is_some() && d.sign == sign => d,
                    (current, fresh) => {
                        if let Some(d) = current {
                            // Caught up to within its window, or crossed over: that
                            // divergence ended.
                            resolve(st, vi, m, &d, expected, reading.value, now, out);
                        }
                        let mut d = fresh.unwrap_or_else(|| {
                            let rix = st.intern(root);
                            divergence(now, rix, system, held_window)
                        });
                        if fresh.is_none() && kind_for(sign) == AlertKind::PhantomAvailability {
                            // A customer-facing system showing stock that was never there
                            // is acted on at once, not after a window.
                            d.window_ms = 0;
                            d.deadline = now;
                        }
                        if d.deadline <= now {
                            d.alert = Some(open(
                                st,
                                system,
                                m,
                                &d,
                                kind_for(sign),
                                expected,
                                reading.value,
                                now,
                                out,
                            ));
                        }
                        d
                    }
                }
            }
            _ => match current {
                Some(d) if d.sign == sign => d,
                _ => {
                    if let Some(d) = current {
                        // The truth crossed the system's value: that divergence ended and a
                        // new one, with a new root, began.
                        resolve(st, vi, m, &d, expected, reading.value, now, out);
                    }
                    let (root, origin) = match trigger {
                        Trigger::Own { root, .. } => (st.intern(root), system),
                        Trigger::Change { root, origin } => (root, origin),
                    };
                    divergence(now, root, origin, window_from(origin))
                }
            },
        };
        if current != Some(d) {
            st.views[vi].divergence[mi] = Some(d);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn open(
    st: &KeyState,
    system: SysId,
    m: Measure,
    d: &Divergence,
    kind: AlertKind,
    expected: i64,
    observed: i64,
    now: Millis,
    out: &mut Vec<Output>,
) -> OpenAlert {
    out.push(Output::Alert(Alert {
        kind,
        resolves: None,
        system,
        measure: m,
        expected,
        observed,
        root: st.root(d.root),
        origin: d.origin,
        window_ms: d.window_ms,
        diverged_at: d.since,
        opened_at: now,
        opened_version: st.version,
        trigger: Id::EMPTY,
        resolved_at: None,
    }));
    OpenAlert {
        kind,
        opened_at: now,
        opened_version: st.version,
    }
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    st: &KeyState,
    vi: usize,
    m: Measure,
    d: &Divergence,
    expected: i64,
    observed: i64,
    now: Millis,
    out: &mut Vec<Output>,
) {
    let Some(a) = d.alert else { return };
    out.push(Output::Alert(Alert {
        kind: AlertKind::Resolved,
        resolves: Some(a.kind),
        system: st.views[vi].system,
        measure: m,
        expected,
        observed,
        root: st.root(d.root),
        origin: d.origin,
        window_ms: d.window_ms,
        diverged_at: d.since,
        opened_at: a.opened_at,
        opened_version: a.opened_version,
        trigger: Id::EMPTY,
        resolved_at: Some(now),
    }));
}

/// A system said it acted on (or holds) `version`.
fn acknowledge(
    model: &Model,
    st: &mut KeyState,
    vi: usize,
    version: u64,
    now: Millis,
    out: &mut Vec<Output>,
) {
    let view = &mut st.views[vi];
    let acked = view.acked_version.map_or(version, |a| a.max(version));
    view.acked_version = Some(acked);
    let system = view.system;
    let Some(p) = view.pending_ack else { return };
    if acked < p.version {
        return;
    }
    if let Some(a) = p.alert {
        out.push(Output::Alert(Alert {
            kind: AlertKind::Resolved,
            resolves: Some(AlertKind::HandoffTimeout),
            system,
            measure: Measure::Available,
            expected: to_i64(p.version),
            observed: to_i64(acked),
            root: st.root(p.root),
            origin: p.origin,
            window_ms: p.window_ms,
            diverged_at: p.since,
            opened_at: a.opened_at,
            opened_version: a.opened_version,
            trigger: Id::EMPTY,
            resolved_at: Some(now),
        }));
    }
    // Still behind a newer version: the oldest one it has not acknowledged is now pending.
    st.views[vi].pending_ack = st.history.iter().find(|c| c.version > acked).and_then(|c| {
        let route = model.route(c.origin, system)?;
        Some(PendingAck {
            version: c.version,
            since: c.at,
            deadline: c.at.saturating_add(window(route)),
            root: c.root,
            origin: c.origin,
            window_ms: route.window_ms,
            alert: None,
        })
    });
}

/// Fires every timer due at `now`: hold expiries, divergence and acknowledgement deadlines.
fn fire_timers(model: &Model, st: &mut KeyState, now: Millis, out: &mut Vec<Output>) {
    let mut i = 0;
    while i < st.holds.len() {
        if st.holds[i].expires_at <= now {
            let h = st.holds.remove(i);
            st.reserved = st.reserved.saturating_sub(h.quantity);
            let root = RootCause {
                event_id: h.reservation_id,
                system: SysId::ledger(),
                cause: Cause::Expiry,
                occurred_at: h.expires_at,
                version: 0,
            };
            commit_change(model, st, root, SysId::ledger(), None, now, out);
            out.push(decision(
                st,
                DecisionKind::Expired,
                None,
                h.reservation_id,
                Id::EMPTY,
                h.channel,
                h.quantity,
                None,
                now,
            ));
        } else {
            i += 1;
        }
    }
    for vi in 0..st.views.len() {
        let system = st.views[vi].system;
        let customer_facing = model.system(system).is_some_and(|s| s.customer_facing);
        for m in Measure::ALL {
            let mi = m.index();
            let Some(d) = st.views[vi].divergence[mi] else {
                continue;
            };
            if d.alert.is_some() || d.deadline > now {
                continue;
            }
            let observed = st.views[vi].readings[mi].map_or(0, |r| r.value);
            let kind = if customer_facing && m == Measure::Available && d.sign > 0 {
                AlertKind::PhantomAvailability
            } else {
                AlertKind::Drift
            };
            let expected = expected_value(st, m);
            let a = open(st, system, m, &d, kind, expected, observed, now, out);
            if let Some(d) = st.views[vi].divergence[mi].as_mut() {
                d.alert = Some(a);
            }
        }
        if let Some(p) = st.views[vi].pending_ack {
            if p.alert.is_none() && p.deadline <= now {
                out.push(Output::Alert(Alert {
                    kind: AlertKind::HandoffTimeout,
                    resolves: None,
                    system,
                    measure: Measure::Available,
                    expected: to_i64(p.version),
                    observed: st.views[vi].acked_version.map_or(-1, to_i64),
                    root: st.root(p.root),
                    origin: p.origin,
                    window_ms: p.window_ms,
                    diverged_at: p.since,
                    opened_at: now,
                    opened_version: st.version,
                    trigger: Id::EMPTY,
                    resolved_at: None,
                }));
                if let Some(p) = st.views[vi].pending_ack.as_mut() {
                    p.alert = Some(OpenAlert {
                        kind: AlertKind::HandoffTimeout,
                        opened_at: now,
                        opened_version: st.version,
                    });
                }
            }
        }
    }
}

/// Checks a reservation command without touching any state (an invalid quantity or TTL is
/// not invalid input: it is answered with a REJECTED decision).
///
/// # Errors
/// The first rule the command breaks.
pub fn validate_command(c: &ReservationCommand) -> Result<(Id, Id, Id), Rejection> {
    if c.command_id.is_empty() {
        return Err(Rejection::Empty("command_id"));
    }
    if c.reservation_id.is_empty() {
        return Err(Rejection::Empty("reservation_id"));
    }
    if c.sku.is_empty() {
        return Err(Rejection::Empty("sku"));
    }
    if c.sku.contains('|') {
        return Err(Rejection::InvalidSku(c.sku.clone()));
    }
    let id = |field, s: &str| Id::new(s).map_err(|source| Rejection::IdTooLong { field, source });
    Ok((
        id("command_id", &c.command_id)?,
        id("reservation_id", &c.reservation_id)?,
        id("channel", &c.channel)?,
    ))
}

fn apply_command(
    model: &Model,
    st: &mut KeyState,
    c: &ReservationCommand,
    now: Millis,
    out: &mut Vec<Output>,
) -> Result<Outcome, Rejection> {
    let (command_id, reservation_id, channel) = validate_command(c)?;
    st.class = model.key_class(&c.sku, &c.location);
    let horizon = horizon_start(model, now);
    // Command ids share the duplicate filter with event ids; prefix so the two never collide.
    let fp = fingerprint(&c.command_id) ^ 0x9e37_79b9_7f4a_7c15;
    if was_seen(st, fp, horizon) {
        // A retry gets the original decision again, with the same id (the command's): a
        // client that lost the answer gets it, a consumer deduplicating by id sees one.
        if let Some(a) = st.answers.iter().rev().find(|a| a.fp == fp) {
            out.push(Output::Decision(Decision {
                kind: a.kind,
                reason: a.reason,
                reservation_id,
                command_id,
                channel,
                quantity: a.quantity,
                available: a.available,
                version: a.version,
                expires_at: a.expires_at,
                decided_at: a.decided_at,
            }));
        }
        return Ok(Outcome::Duplicate);
    }
    remember(st, fp, now, horizon);
    let first = out.len();
    let outcome = decide(model, st, c, command_id, reservation_id, channel, now, out)?;
    if let Some(Output::Decision(d)) = out[first..]
        .iter()
        .rev()
        .find(|o| matches!(o, Output::Decision(_)))
    {
        let answer = Answer {
            fp,
            kind: d.kind,
            reason: d.reason,
            quantity: d.quantity,
            available: d.available,
            version: d.version,
            expires_at: d.expires_at,
            decided_at: d.decided_at,
        };
        let stale = st
            .answers
            .iter()
            .take_while(|a| a.decided_at < horizon)
            .count();
        st.answers.drain(..stale);
        if st.answers.len() >= SEEN_MAX {
            st.answers.remove(0);
        }
        st.answers.push(answer);
    }
    Ok(outcome)
}

/// Decides one new command; the decision is the last output it pushes.
#[allow(clippy::too_many_arguments)]
fn decide(
    model: &Model,
    st: &mut KeyState,
    c: &ReservationCommand,
    command_id: Id,
    reservation_id: Id,
    channel: Id,
    now: Millis,
    out: &mut Vec<Output>,
) -> Result<Outcome, Rejection> {
    let root = RootCause {
        event_id: command_id,
        system: SysId::ledger(),
        cause: Cause::Command(c.command),
        occurred_at: c.issued_at,
        version: 0,
    };
    let reject = |st: &KeyState, reason, out: &mut Vec<Output>| {
        out.push(decision(
            st,
            DecisionKind::Rejected,
            Some(reason),
            reservation_id,
            command_id,
            channel,
            c.quantity,
            None,
            now,
        ));
        Ok(Outcome::Applied)
    };
    let held = st
        .holds
        .iter()
        .position(|h| h.reservation_id == reservation_id);
    match c.command {
        CommandKind::Reserve => {
            let ttl = c.ttl_ms.filter(|t| *t > 0);
            let (Some(ttl), true) = (ttl, c.quantity > 0 && c.quantity <= MAX_QUANTITY) else {
                return reject(st, RejectReason::InvalidCommand, out);
            };
            if held.is_some() {
                return reject(st, RejectReason::DuplicateReservation, out);
            }
            if c.quantity > st.sellable() {
                return reject(st, RejectReason::InsufficientAvailability, out);
            }
            let expires_at = now.saturating_add(ttl);
            st.holds.push(Hold {
                reservation_id,
                channel,
                quantity: c.quantity,
                expires_at,
            });
            st.reserved = st.reserved.saturating_add(c.quantity);
            commit_change(model, st, root, SysId::ledger(), None, now, out);
            out.push(decision(
                st,
                DecisionKind::Granted,
                None,
                reservation_id,
                command_id,
                channel,
                c.quantity,
                Some(expires_at),
                now,
            ));
        }
        CommandKind::Commit | CommandKind::Release => {
            let Some(i) = held else {
                return reject(st, RejectReason::UnknownReservation, out);
            };
            let h = st.holds.remove(i);
            st.reserved = st.reserved.saturating_sub(h.quantity);
            let kind = if c.command == CommandKind::Commit {
                // Committed units live in the ledger when it is `committed`'s authority;
                // otherwise the authority's next report is expected to include them.
                // The committed units become the order line's commitment, relieved by its
                // fulfilment like any order's; the channel's own ORDER_PLACED for the line is
                // then not counted again (nor is this COMMIT, if that came first).
                if model.authority(st.class, Measure::Committed) == Authority::Ledger {
                    let order = c.order_ref.as_deref().filter(|o| !o.is_empty());
                    let lid = line_id(order.unwrap_or(&c.reservation_id), c.line_ref.as_deref());
                    let horizon = horizon_start(model, now);
                    let known = st
                        .lines
                        .iter()
                        .any(|l| l.id == lid && l.closed_at.is_none_or(|t| t >= horizon));
                    if !known {
                        let ci = Measure::Committed.index();
                        st.auth[ci] = st.auth[ci].saturating_add(h.quantity);
                        st.known |= 1 << ci;
                        let line = OrderLine {
                            id: lid,
                            committed: h.quantity,
                            allocated: 0,
                            shipped: 0,
                            cancelled: false,
                            opened_at: now,
                            closed_at: None,
                        };
                        store_line(st, None, line, now);
                    }
                }
                DecisionKind::Committed
            } else {
                DecisionKind::Released
            };
            commit_change(model, st, root, SysId::ledger(), None, now, out);
            out.push(decision(
                st,
                kind,
                None,
                reservation_id,
                command_id,
                h.channel,
                h.quantity,
                None,
                now,
            ));
        }
    }
    Ok(Outcome::Applied)
}

#[allow(clippy::too_many_arguments)]
fn decision(
    st: &KeyState,
    kind: DecisionKind,
    reason: Option<RejectReason>,
    reservation_id: Id,
    command_id: Id,
    channel: Id,
    quantity: i64,
    expires_at: Option<Millis>,
    now: Millis,
) -> Output {
    Output::Decision(Decision {
        kind,
        reason,
        reservation_id,
        command_id,
        channel,
        quantity,
        available: st.sellable(),
        version: st.version,
        expires_at,
        decided_at: now,
    })
}

fn view_index(st: &mut KeyState, system: SysId) -> usize {
    match st.views.iter().position(|v| v.system == system) {
        Some(i) => i,
        None => {
            st.views.push(View::new(system));
            st.views.len() - 1
        }
    }
}

/// The start of the idempotency horizon at `now`: ids and closed order lines older than this
/// are forgotten.
fn horizon_start(model: &Model, now: Millis) -> Millis {
    now.saturating_sub(i64::try_from(model.rules().idempotency_horizon_ms).unwrap_or(i64::MAX))
}

/// Whether id fingerprint `fp` was seen within the horizon. Entries older than the horizon
/// are ignored even if not yet pruned, so the answer does not depend on when pruning ran.
fn was_seen(st: &KeyState, fp: u64, horizon: Millis) -> bool {
    st.seen.iter().rev().any(|s| s.fp == fp && s.at >= horizon)
}

/// Records id fingerprint `fp`, forgetting what has left the horizon (and closed order lines
/// with it).
fn remember(st: &mut KeyState, fp: u64, now: Millis, horizon: Millis) {
    let old = st.seen.iter().take_while(|s| s.at < horizon).count();
    st.seen.drain(..old);
    if st.seen.len() >= SEEN_MAX {
        st.seen.remove(0);
    }
    st.seen.push(Seen { fp, at: now });
    st.lines
        .retain(|l| l.closed_at.is_none_or(|t| t >= horizon));
}

enum SeqStatus {
    New,
    Late,
    Duplicate,
    TooLate,
}

fn seq_status(view: &View, seq: u64) -> SeqStatus {
    if view.seq_bits == 0 || seq > view.max_seq {
        return SeqStatus::New;
    }
    let behind = view.max_seq - seq;
    if behind >= SEQ_WINDOW {
        SeqStatus::TooLate
    } else if view.seq_bits & (1 << behind) != 0 {
        SeqStatus::Duplicate
    } else {
        SeqStatus::Late
    }
}

fn mark_seq(view: &mut View, seq: u64) {
    if view.seq_bits == 0 {
        view.max_seq = seq;
        view.seq_bits = 1;
    } else if seq > view.max_seq {
        let shift = seq - view.max_seq;
        view.seq_bits = if shift >= SEQ_WINDOW {
            0
        } else {
            view.seq_bits << shift
        } | 1;
        view.max_seq = seq;
    } else {
        view.seq_bits |= 1 << (view.max_seq - seq);
    }
}
