//! What the fold emits: propagation events, alerts and reservation decisions.
//!
//! Outputs are plain data (no heap): systems are [`SysId`]s and the key is implied by the state
//! they came from. The codec turns them into wire records with names, the key and alert ids.

use serde::{Deserialize, Serialize};

use crate::event::{CommandKind, EventType, Measure, Millis};
use crate::id::Id;
use crate::model::SysId;

/// Alert kinds (SPEC: Outputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    /// A system's view differs from the authoritative state beyond tolerance for longer than
    /// its handoff window.
    Drift,
    /// A system allocated, promised or sold on an older version, and the changes it missed
    /// took away what it relied on: the action exceeds what is available now, though it did
    /// not exceed what the system saw.
    StaleAction,
    /// An action took more than was authoritatively available, on current data (or on data
    /// that already showed too little).
    Oversell,
    /// A customer-facing system shows more available than exists.
    PhantomAvailability,
    /// A system that acknowledges versions did not acknowledge a propagated version within
    /// its window.
    HandoffTimeout,
    /// A system's value changed with no count event upstream (a manual correction that
    /// bypassed the chain).
    UnpropagatedChange,
    /// A DRIFT, PHANTOM_AVAILABILITY or HANDOFF_TIMEOUT closed: the system converged.
    Resolved,
    /// Info, off unless `[alerts] stale_view = true`: an action taken on an older version
    /// whose missed changes did not take away what it needed (it is still covered).
    StaleView,
}

impl AlertKind {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::Drift => "DRIFT",
            AlertKind::StaleAction => "STALE_ACTION",
            AlertKind::Oversell => "OVERSELL",
            AlertKind::PhantomAvailability => "PHANTOM_AVAILABILITY",
            AlertKind::HandoffTimeout => "HANDOFF_TIMEOUT",
            AlertKind::UnpropagatedChange => "UNPROPAGATED_CHANGE",
            AlertKind::Resolved => "RESOLVED",
            AlertKind::StaleView => "STALE_VIEW",
        }
    }

    /// Every kind, in wire order.
    pub const ALL: [AlertKind; 8] = [
        AlertKind::Drift,
        AlertKind::StaleAction,
        AlertKind::Oversell,
        AlertKind::PhantomAvailability,
        AlertKind::HandoffTimeout,
        AlertKind::UnpropagatedChange,
        AlertKind::Resolved,
        AlertKind::StaleView,
    ];

    /// Raised once for one action or change and never closed by a RESOLVED.
    pub const fn is_one_shot(self) -> bool {
        matches!(
            self,
            AlertKind::StaleAction
                | AlertKind::StaleView
                | AlertKind::Oversell
                | AlertKind::UnpropagatedChange
        )
    }
}

/// Alert severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Needs attention.
    Warning,
    /// Customer-facing harm.
    Critical,
}

/// What caused a change: an inventory event, a reservation command, or a hold expiring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// An inventory event of this type.
    Event(EventType),
    /// A reservation command.
    Command(CommandKind),
    /// A reservation hold reached its TTL.
    Expiry,
}

impl Cause {
    /// The wire name: the event type, the command, or `EXPIRY`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Event(t) => t.as_str(),
            Cause::Command(c) => c.as_str(),
            Cause::Expiry => "EXPIRY",
        }
    }
}

/// The root event of a change: what every alert traces back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCause {
    /// The event id (or command id, or reservation id for an expiry).
    pub event_id: Id,
    /// The system that published it (the ledger for commands).
    pub system: SysId,
    /// Its type.
    pub cause: Cause,
    /// When it happened at its source.
    pub occurred_at: Millis,
    /// The authoritative version it produced (0 if it changed no authoritative value).
    pub version: u64,
}

/// The authoritative numbers for a key at one version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Physical units.
    pub on_hand: i64,
    /// Units assigned to picks.
    pub allocated: i64,
    /// Units promised to orders (including committed reservations).
    pub committed: i64,
    /// Units held back from sale.
    pub safety_stock: i64,
    /// `on_hand - allocated - committed - safety_stock`.
    pub available: i64,
    /// Units held by granted, uncommitted reservations.
    pub reserved: i64,
}

/// The authoritative state a downstream system must converge to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    /// The system addressed (its propagation topic).
    pub target: SysId,
    /// Authoritative version.
    pub version: u64,
    /// Authoritative numbers at that version.
    pub state: Snapshot,
    /// The change's root event.
    pub root: RootCause,
    /// Where the change entered the cascade: the path is `route(origin, target)`.
    pub origin: SysId,
    /// When Breakwater published it (processing time).
    pub emitted_at: Millis,
    /// When `target` must have converged.
    pub deadline: Millis,
}

/// An alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The kind; `Resolved` closes the alert named by `resolves` and `opened_version`.
    pub kind: AlertKind,
    /// For RESOLVED: the kind being resolved.
    pub resolves: Option<AlertKind>,
    /// The system that diverged, acted stale or oversold.
    pub system: SysId,
    /// The measure concerned (`committed` for actions on orders, ...).
    pub measure: Measure,
    /// The authoritative value (DRIFT, PHANTOM: value; STALE_ACTION, HANDOFF_TIMEOUT: version;
    /// OVERSELL: units available).
    pub expected: i64,
    /// What the system had (value, version acted on, units taken).
    pub observed: i64,
    /// The root cause: the count event that started the divergence.
    pub root: RootCause,
    /// Where the root entered the cascade: the cascade path is `route(origin, system)`.
    pub origin: SysId,
    /// The window exceeded (DRIFT, PHANTOM, HANDOFF_TIMEOUT), in ms; 0 for instant kinds.
    pub window_ms: u64,
    /// When the divergence began (the root's processing time).
    pub diverged_at: Millis,
    /// When the alert opened.
    pub opened_at: Millis,
    /// Authoritative version at opening; with kind, system, measure and the key this makes the
    /// alert id stable across replays.
    pub opened_version: u64,
    /// For one-shot kinds: the event that triggered it (its id is in the alert id).
    pub trigger: Id,
    /// For RESOLVED: when it converged.
    pub resolved_at: Option<Millis>,
}

/// A reservation decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DecisionKind {
    /// The hold is in place.
    Granted,
    /// The command was refused; see the reason.
    Rejected,
    /// The hold became committed units.
    Committed,
    /// The hold was given back.
    Released,
    /// The hold reached its TTL.
    Expired,
}

/// Why a command was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    /// Available minus active holds does not cover the quantity.
    InsufficientAvailability,
    /// No active hold with that reservation id.
    UnknownReservation,
    /// A hold with that reservation id is already active.
    DuplicateReservation,
    /// Quantity not positive or TTL missing/not positive.
    InvalidCommand,
}

/// The answer to one reservation command (or a hold's expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The outcome.
    pub kind: DecisionKind,
    /// Why, for REJECTED.
    pub reason: Option<RejectReason>,
    /// The reservation.
    pub reservation_id: Id,
    /// The command answered (empty for EXPIRED).
    pub command_id: Id,
    /// The channel that asked.
    pub channel: Id,
    /// Units held, committed, released or asked for.
    pub quantity: i64,
    /// Available minus active holds after the decision.
    pub available: i64,
    /// Authoritative version after the decision.
    pub version: u64,
    /// When the hold expires (GRANTED).
    pub expires_at: Option<Millis>,
    /// Processing time of the decision.
    pub decided_at: Millis,
}

/// One output of the fold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// To a system's propagation topic.
    Propagation(Propagation),
    /// To the alert topic.
    Alert(Alert),
    /// To the reservation decisions topic.
    Decision(Decision),
    /// A system converged on a measure after diverging: the handoff's latency. Not published;
    /// it feeds the handoff latency metrics.
    Converged(Converged),
    /// A consuming action (allocation, order) that raised no alert, and why. Not published;
    /// it feeds `breakwater_actions_total`.
    Action(ActionCheck),
}

/// How an action that raised no alert was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionOutcome {
    /// Taken on the current version (or with no basis given) and covered.
    Current,
    /// Taken on an older version, but what it missed did not matter: still covered.
    StaleSufficient,
    /// Beyond availability at a key that takes backorders or preorders.
    Backorder,
}

impl ActionOutcome {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Current => "current",
            ActionOutcome::StaleSufficient => "stale_sufficient",
            ActionOutcome::Backorder => "backorder",
        }
    }
}

/// A consuming action that raised no alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCheck {
    /// The system that acted.
    pub system: SysId,
    /// How it was judged.
    pub outcome: ActionOutcome,
}

/// A divergence that closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Converged {
    /// The system that converged.
    pub system: SysId,
    /// On which measure.
    pub measure: Measure,
    /// Where the change it converged on entered the cascade.
    pub origin: SysId,
    /// How long it took, from the root change to convergence, in ms.
    pub latency_ms: i64,
    /// Whether it converged inside its window (no alert was raised).
    pub within_window: bool,
}
