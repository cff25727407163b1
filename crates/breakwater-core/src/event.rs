//! The input contract: inventory events and reservation commands, and the rules that make an
//! event valid before it reaches the fold.
//!
//! Field names match `schemas/inventory_event.avsc` and `schemas/reservation_command.avsc`;
//! timestamps are milliseconds since the Unix epoch (Avro `timestamp-millis`).

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// What happened to the inventory. The type says whether an event is a *count* (a physical or
/// bookkeeping change that starts a cascade) or an *action* (allocating, promising or selling,
/// which must be taken on current data), and constrains the measure and sign it may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // the variants are the SPEC's vocabulary, documented in the Avro schema
pub enum EventType {
    Receipt,
    Adjustment,
    CycleCount,
    Snapshot,
    Allocation,
    Deallocation,
    Pick,
    Ship,
    Return,
    TransferIn,
    TransferOut,
    OrderPlaced,
    OrderCancelled,
}

/// Every event type, in schema order.
pub const EVENT_TYPES: [EventType; 13] = [
    EventType::Receipt,
    EventType::Adjustment,
    EventType::CycleCount,
    EventType::Snapshot,
    EventType::Allocation,
    EventType::Deallocation,
    EventType::Pick,
    EventType::Ship,
    EventType::Return,
    EventType::TransferIn,
    EventType::TransferOut,
    EventType::OrderPlaced,
    EventType::OrderCancelled,
];

/// An inventory quantity Breakwater tracks per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Physical units at the location.
    OnHand,
    /// Units assigned to picks.
    Allocated,
    /// Units promised to orders.
    Committed,
    /// Units held back from sale.
    SafetyStock,
    /// `on_hand - allocated - committed - safety_stock`. Never authoritative on its own: systems
    /// report what they show (a storefront's availability) and Breakwater compares it.
    Available,
}

impl Measure {
    /// All measures, in index order.
    pub const ALL: [Measure; 5] = [
        Measure::OnHand,
        Measure::Allocated,
        Measure::Committed,
        Measure::SafetyStock,
        Measure::Available,
    ];
    /// The measures that have an authority and are stored; `available` is derived from them.
    pub const STORED: [Measure; 4] = [
        Measure::OnHand,
        Measure::Allocated,
        Measure::Committed,
        Measure::SafetyStock,
    ];

    /// Index into per-measure arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The wire name (`on_hand`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Measure::OnHand => "on_hand",
            Measure::Allocated => "allocated",
            Measure::Committed => "committed",
            Measure::SafetyStock => "safety_stock",
            Measure::Available => "available",
        }
    }
}

/// How `quantity` applies to the measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// `quantity` is a signed change.
    Delta,
    /// `quantity` is the new value.
    Absolute,
}

/// One inventory event as a publishing system sends it (decoded from Avro or JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryEvent {
    /// Idempotency key: a second event with the same id for the same key changes nothing.
    pub event_id: String,
    /// The publishing system, as named in the config.
    pub system: String,
    /// Monotonic per system and key, when the system has one. Drives the out-of-order rule.
    #[serde(default)]
    pub source_seq: Option<i64>,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The SKU.
    pub sku: String,
    /// The location; empty for the default location.
    #[serde(default)]
    pub location: String,
    /// The measure this event changes.
    pub measure: Measure,
    /// Whether `quantity` is a change or a new value.
    pub mode: Mode,
    /// Signed change (`DELTA`) or new value (`ABSOLUTE`), in units.
    pub quantity: i64,
    /// When it happened in the publishing system.
    pub occurred_at: Millis,
    /// For actions: the authoritative version the system acted on.
    #[serde(default)]
    pub based_on_version: Option<i64>,
    /// For actions: the time of the data the system acted on.
    #[serde(default)]
    pub data_as_of: Option<Millis>,
    /// Free-text reason (adjustments, manual corrections).
    #[serde(default)]
    pub reason: Option<String>,
    /// The event that caused this one, if any.
    #[serde(default)]
    pub causation_id: Option<String>,
    /// Correlates events of one business flow.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The order this event belongs to. With `line_ref` it identifies one order line: the
    /// fold keeps the line's commitment and allocation, so fulfilment relieves them and the same
    /// order reported by several systems counts once.
    #[serde(default)]
    pub order_ref: Option<String>,
    /// The line within `order_ref` (empty or absent: the order has one line per SKU and
    /// location).
    #[serde(default)]
    pub line_ref: Option<String>,
    /// The purchase order this event belongs to.
    #[serde(default)]
    pub po_ref: Option<String>,
    /// The shipment this event belongs to.
    #[serde(default)]
    pub shipment_ref: Option<String>,
}

/// A reservation command's verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandKind {
    /// Hold `quantity` units for `ttl_ms`.
    Reserve,
    /// Turn a held reservation into committed units.
    Commit,
    /// Give a held reservation back.
    Release,
}

/// A command on the reservation command topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationCommand {
    /// Idempotency key: a repeated command is answered once only.
    pub command_id: String,
    /// RESERVE, COMMIT or RELEASE.
    pub command: CommandKind,
    /// The reservation this command creates or acts on.
    pub reservation_id: String,
    /// The SKU.
    pub sku: String,
    /// The location; empty for the default location.
    #[serde(default)]
    pub location: String,
    /// Units to reserve (RESERVE); ignored by COMMIT and RELEASE, which act on the whole hold.
    #[serde(default)]
    pub quantity: i64,
    /// The selling channel asking (`storefront`, `marketplace`, ...).
    pub channel: String,
    /// How long a granted hold lives before it expires (RESERVE).
    #[serde(default)]
    pub ttl_ms: Option<i64>,
    /// When the command was issued.
    pub issued_at: Millis,
    /// COMMIT: the order line the committed units belong to, so that its fulfilment relieves
    /// them and the channel's own ORDER_PLACED for it is not counted again. Defaults to the
    /// reservation id.
    #[serde(default)]
    pub order_ref: Option<String>,
    /// COMMIT: the line within `order_ref`.
    #[serde(default)]
    pub line_ref: Option<String>,
}

/// Whether an event type counts stock or acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventClass {
    /// Changes what exists (receipts, counts, picks, ...): starts cascades.
    Count,
    /// Consumes availability (allocations, orders): checked for staleness and oversell.
    Consuming,
    /// Gives availability back (deallocations, cancellations).
    Releasing,
}

/// The sign a DELTA of a given type must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// Strictly positive.
    Positive,
    /// Strictly negative.
    Negative,
    /// Any non-zero value.
    Any,
}

/// What an event type may carry. One row per type: the single table the validator, the fold
/// and the README draw on.
#[derive(Clone, Copy, Debug)]
pub struct TypeRule {
    /// Count, consuming or releasing.
    pub class: EventClass,
    /// Measures the type may change.
    pub measures: &'static [Measure],
    /// Whether DELTA is allowed, and with which sign.
    pub delta: Option<Sign>,
    /// Whether ABSOLUTE is allowed.
    pub absolute: bool,
}

const ALL_STORED_AND_AVAILABLE: &[Measure] = &Measure::ALL;

/// The rule for `t`.
pub const fn type_rule(t: EventType) -> TypeRule {
    use EventClass::*;
    use Measure::*;
    const fn rule(
        class: EventClass,
        measures: &'static [Measure],
        delta: Option<Sign>,
        absolute: bool,
    ) -> TypeRule {
        TypeRule {
            class,
            measures,
            delta,
            absolute,
        }
    }
    match t {
        EventType::Receipt => rule(Count, &[OnHand], Some(Sign::Positive), false),
        EventType::Adjustment => rule(Count, ALL_STORED_AND_AVAILABLE, Some(Sign::Any), true),
        EventType::CycleCount => rule(Count, &[OnHand], None, true),
        EventType::Snapshot => rule(Count, ALL_STORED_AND_AVAILABLE, None, true),
        EventType::Allocation => rule(Consuming, &[Allocated], Some(Sign::Positive), false),
        EventType::Deallocation => rule(Releasing, &[Allocated], Some(Sign::Negative), false),
        EventType::Pick => rule(Count, &[OnHand, Allocated], Some(Sign::Negative), false),
        EventType::Ship => rule(Count, &[OnHand, Allocated], Some(Sign::Negative), false),
        EventType::Return => rule(Count, &[OnHand], Some(Sign::Positive), false),
        EventType::TransferIn => rule(Count, &[OnHand], Some(Sign::Positive), false),
        EventType::TransferOut => rule(Count, &[OnHand], Some(Sign::Negative), false),
        EventType::OrderPlaced => rule(Consuming, &[Committed], Some(Sign::Positive), false),
        EventType::OrderCancelled => rule(Releasing, &[Committed], Some(Sign::Negative), false),
    }
}

impl EventType {
    /// The wire name (`RECEIPT`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Receipt => "RECEIPT",
            EventType::Adjustment => "ADJUSTMENT",
            EventType::CycleCount => "CYCLE_COUNT",
            EventType::Snapshot => "SNAPSHOT",
            EventType::Allocation => "ALLOCATION",
            EventType::Deallocation => "DEALLOCATION",
            EventType::Pick => "PICK",
            EventType::Ship => "SHIP",
            EventType::Return => "RETURN",
            EventType::TransferIn => "TRANSFER_IN",
            EventType::TransferOut => "TRANSFER_OUT",
            EventType::OrderPlaced => "ORDER_PLACED",
            EventType::OrderCancelled => "ORDER_CANCELLED",
        }
    }
}

impl CommandKind {
    /// The wire name (`RESERVE`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandKind::Reserve => "RESERVE",
            CommandKind::Commit => "COMMIT",
            CommandKind::Release => "RELEASE",
        }
    }
}

/// The Kafka message key for a SKU at a location: `sku|location`, or `sku` for the default
/// location. All topics are keyed this way so they are co-partitioned.
pub fn message_key(sku: &str, location: &str) -> String {
    if location.is_empty() {
        sku.to_owned()
    } else {
        format!("{sku}|{location}")
    }
}
