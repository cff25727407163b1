//! Per-key state: everything Breakwater knows about one SKU at one location.
//!
//! One `KeyState` is one value in the state store and one record on the changelog, so it is
//! kept flat and bounded: fixed-size arrays per measure, short rings for history and duplicate
//! detection, one `View` per system that has ever published for the key.
//!
//! Root causes carry a full event id (up to 64 bytes). History entries, divergences and
//! pending acknowledgements refer to them by index into one small per-key table
//! ([`KeyState::roots`]), so the fixed per-measure arrays stay small: the fold reads and
//! writes every view on every authoritative change, and its speed is bounded by how many
//! bytes that touches.

use serde::{Deserialize, Serialize};

use crate::event::{Measure, Millis};
use crate::id::Id;
use crate::model::{KeyClass, SysId};
use crate::output::{AlertKind, DecisionKind, RejectReason, RootCause, Snapshot};

/// Authoritative changes always remembered per key, however old: enough to name the change a
/// stale action missed and to tell a value that was once authoritative from one that came
/// from nowhere. Changes younger than [`Model::history_ms`](crate::Model::history_ms) are
/// kept too, up to [`HISTORY_MAX`].
pub const HISTORY: usize = 8;
/// The most authoritative changes remembered per key, so that a key changing many times a
/// minute keeps a bounded state.
pub const HISTORY_MAX: usize = 64;
/// The most event and command ids remembered per key within the idempotency horizon; beyond
/// it the oldest is forgotten first (a key taking more than this many events a day).
pub const SEEN_MAX: usize = 16_384;
/// The most order lines kept per key. Closed lines are dropped after the idempotency
/// horizon; past this bound the oldest closed line goes first, then the oldest open one.
pub const LINES_MAX: usize = 4_096;
/// Root-cause table size below which a new root is appended rather than reusing the slot of
/// one nothing refers to any more.
pub const ROOTS_BEFORE_REUSE: usize = HISTORY;

/// Index of a root cause in [`KeyState::roots`].
pub type RootIx = u32;
/// How far behind the newest `source_seq` of a system an event may arrive and still be told
/// apart from a duplicate.
pub const SEQ_WINDOW: u64 = 64;

/// Everything known about one key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    /// Authoritative version: +1 on every change of authoritative values or reservations.
    pub version: u64,
    /// Authoritative value of each stored measure (`Measure::STORED` order).
    pub auth: [i64; 4],
    /// Bit `i` set: stored measure `i` has an authoritative value.
    pub known: u8,
    /// Units held by granted, uncommitted reservations.
    pub reserved: i64,
    /// Processing time of the last authoritative change.
    pub changed_at: Millis,
    /// Recent authoritative changes, oldest first: at least the last [`HISTORY`], and all
    /// within the model's history horizon up to [`HISTORY_MAX`].
    pub history: Vec<Change>,
    /// What each system last said.
    pub views: Vec<View>,
    /// Granted reservations not yet committed, released or expired.
    pub holds: Vec<Hold>,
    /// Event and command id fingerprints seen within the idempotency horizon, oldest first.
    pub seen: Vec<Seen>,
    /// The decision each command seen within the horizon got, so a retry gets it again.
    pub answers: Vec<Answer>,
    /// Order lines: open ones with their outstanding commitment and allocation, closed ones
    /// until the idempotency horizon has passed.
    pub lines: Vec<OrderLine>,
    /// The key's authority profile and order policy, from its location and SKU.
    pub class: KeyClass,
    /// The root causes `history`, divergences and pending acknowledgements refer to; a slot
    /// nothing refers to is reused (see [`KeyState::intern`]).
    pub roots: Vec<RootCause>,
}

/// One authoritative change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The version it produced.
    pub version: u64,
    /// Its root event (index into [`KeyState::roots`]).
    pub root: RootIx,
    /// Where it entered the cascade.
    pub origin: SysId,
    /// Processing time.
    pub at: Millis,
    /// Every measure's authoritative value after it (`Measure::ALL` order).
    pub values: [i64; 5],
    /// Units a new action could take after it: available less active holds.
    pub sellable: i64,
}

/// An id seen, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Fingerprint of the event or command id.
    pub fp: u64,
    /// Stream time when it was seen.
    pub at: Millis,
}

/// The decision a reservation command got, kept to answer a retry the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Fingerprint of the command id.
    pub fp: u64,
    /// The decision.
    pub kind: DecisionKind,
    /// Why, for REJECTED.
    pub reason: Option<RejectReason>,
    /// Units.
    pub quantity: i64,
    /// Sellable after the decision.
    pub available: i64,
    /// Version after the decision.
    pub version: u64,
    /// Hold expiry (GRANTED).
    pub expires_at: Option<Millis>,
    /// When it was decided.
    pub decided_at: Millis,
}

/// One order line's units in the authoritative buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Fingerprint of `order_ref` and `line_ref`.
    pub id: u64,
    /// Units promised and not yet allocated or shipped (in `committed`).
    pub committed: i64,
    /// Units allocated to it and not yet shipped (in `allocated`).
    pub allocated: i64,
    /// Units shipped for it.
    pub shipped: i64,
    /// It was cancelled: a deallocation no longer returns units to its commitment.
    pub cancelled: bool,
    /// Stream time when it was first seen.
    pub opened_at: Millis,
    /// Stream time when nothing was outstanding any more; it is forgotten a horizon later.
    pub closed_at: Option<Millis>,
}

impl OrderLine {
    /// Whether nothing is outstanding on it any more.
    pub fn is_done(&self) -> bool {
        self.committed == 0 && self.allocated == 0 && (self.cancelled || self.shipped > 0)
    }
}

/// A reading of one measure by one system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The system's value.
    pub value: i64,
    /// `occurred_at` of the event that set it.
    pub occurred_at: Millis,
    /// When Breakwater processed it.
    pub at: Millis,
}

/// An alert that is open on a divergence or an unacknowledged version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAlert {
    /// DRIFT, PHANTOM_AVAILABILITY or HANDOFF_TIMEOUT.
    pub kind: AlertKind,
    /// When it opened.
    pub opened_at: Millis,
    /// Authoritative version when it opened (part of the alert id).
    pub opened_version: u64,
}

/// A system's reading that differs from the authoritative value beyond tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// When it began.
    pub since: Millis,
    /// When it becomes an alert if still open.
    pub deadline: Millis,
    /// The event that started it (index into [`KeyState::roots`]).
    pub root: RootIx,
    /// Where that event entered the cascade.
    pub origin: SysId,
    /// +1: the system has more than the truth; -1: less.
    pub sign: i8,
    /// The window, in ms.
    pub window_ms: u64,
    /// The alert, once opened.
    pub alert: Option<OpenAlert>,
}

/// A propagated version a system that acknowledges versions has not yet acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAck {
    /// The oldest unacknowledged version.
    pub version: u64,
    /// When it was propagated.
    pub since: Millis,
    /// When it must have been acknowledged.
    pub deadline: Millis,
    /// Its root event (index into [`KeyState::roots`]).
    pub root: RootIx,
    /// Where that event entered the cascade.
    pub origin: SysId,
    /// The window, in ms.
    pub window_ms: u64,
    /// The HANDOFF_TIMEOUT alert, once opened.
    pub alert: Option<OpenAlert>,
}

/// What one system last said about the key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// The system.
    pub system: SysId,
    /// Its reading of each measure (`Measure::ALL` order).
    pub readings: [Option<Reading>; 5],
    /// Its open divergence per measure.
    pub divergence: [Option<Divergence>; 5],
    /// Highest `source_seq` seen from this system for this key.
    pub max_seq: u64,
    /// Bit `i` set: `max_seq - i` was seen. Zero until the first sequenced event.
    pub seq_bits: u64,
    /// Per measure: the `source_seq` of the last ABSOLUTE applied (later DELTAs at or below it
    /// are already included in that value).
    pub abs_seq: [u64; 5],
    /// Processing time of the last event from this system for this key.
    pub last_seen: Millis,
    /// Highest `based_on_version` this system has sent.
    pub acked_version: Option<u64>,
    /// The oldest version it has not acknowledged in time, if any.
    pub pending_ack: Option<PendingAck>,
}

impl View {
    /// A view with nothing in it.
    pub fn new(system: SysId) -> View {
        View {
            system,
            readings: [None; 5],
            divergence: [None; 5],
            max_seq: 0,
            seq_bits: 0,
            abs_seq: [0; 5],
            last_seen: 0,
            acked_version: None,
            pending_ack: None,
        }
    }
}

/// A granted reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The reservation id.
    pub reservation_id: Id,
    /// The channel it was granted to.
    pub channel: Id,
    /// Units held.
    pub quantity: i64,
    /// When it expires.
    pub expires_at: Millis,
}

impl KeyState {
    /// The authoritative value of `m` (`available` derived), 0 where unknown.
    pub fn value(&self, m: Measure) -> i64 {
        match m {
            Measure::Available => self.auth[0]
                .saturating_sub(self.auth[1])
                .saturating_sub(self.auth[2])
                .saturating_sub(self.auth[3]),
            _ => self.auth[m.index()],
        }
    }

    /// Whether `m` has an authoritative value (`available` once `on_hand` has one).
    pub fn is_known(&self, m: Measure) -> bool {
        let i = match m {
            Measure::Available => 0,
            _ => m.index(),
        };
        self.known & (1 << i) != 0
    }

    /// Units a new action or reservation may take: available less active holds.
    pub fn sellable(&self) -> i64 {
        self.value(Measure::Available).saturating_sub(self.reserved)
    }

    /// The authoritative numbers now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            on_hand: self.auth[0],
            allocated: self.auth[1],
            committed: self.auth[2],
            safety_stock: self.auth[3],
            available: self.value(Measure::Available),
            reserved: self.reserved,
        }
    }

    /// The view of system `id`, if it has published for this key.
    pub fn view(&self, id: SysId) -> Option<&View> {
        self.views.iter().find(|v| v.system == id)
    }

    /// Open alerts: (system, measure, alert, divergence) for every open DRIFT or
    /// PHANTOM_AVAILABILITY.
    pub fn open_alerts(&self) -> impl Iterator<Item = (SysId, Measure, &Divergence)> + '_ {
        self.views.iter().flat_map(|v| {
            v.divergence
                .iter()
                .zip(Measure::ALL)
                .filter_map(move |(d, m)| match d {
                    Some(d) if d.alert.is_some() => Some((v.system, m, d)),
                    _ => None,
                })
        })
    }

    /// The root cause at `ix`. An index outside the table (only possible in a state that was
    /// not written by the fold; [`KeyState::check`] rejects those) yields an empty root rather
    /// than a panic.
    pub fn root(&self, ix: RootIx) -> RootCause {
        usize::try_from(ix)
            .ok()
            .and_then(|i| self.roots.get(i))
            .copied()
            .unwrap_or(RootCause {
                event_id: Id::EMPTY,
                system: SysId(0),
                cause: crate::output::Cause::Expiry,
                occurred_at: 0,
                version: 0,
            })
    }

    /// The index of `root` in the root table, adding it if it is not there. A root that
    /// produced a version is identified by that version (unique per key); one that produced
    /// none by its event id and system. Once the table has [`ROOTS_BEFORE_REUSE`] entries, the
    /// first slot nothing refers to is reused, so the table stays as small as the number of
    /// distinct roots still referred to.
    pub fn intern(&mut self, root: RootCause) -> RootIx {
        let same = |r: &RootCause| {
            r.version == root.version
                && (root.version != 0
                    || (r.event_id == root.event_id
                        && r.system == root.system
                        && r.cause == root.cause))
        };
        let slot = match self.roots.iter().position(same) {
            Some(i) => i,
            None => {
                let free = if self.roots.len() >= ROOTS_BEFORE_REUSE {
                    (0..self.roots.len()).find(|&i| !self.refers_to(i))
                } else {
                    None
                };
                match free {
                    Some(i) => {
                        self.roots[i] = root;
                        i
                    }
                    None => {
                        self.roots.push(root);
                        self.roots.len() - 1
                    }
                }
            }
        };
        // The table holds at most HISTORY + 6 per view live entries plus the reuse threshold:
        // far below u32::MAX.
        RootIx::try_from(slot).unwrap_or(RootIx::MAX)
    }

    /// Whether anything in the state refers to root slot `i`.
    fn refers_to(&self, i: usize) -> bool {
        let Ok(ix) = RootIx::try_from(i) else {
            return true;
        };
        self.history.iter().any(|c| c.root == ix)
            || self.views.iter().any(|v| {
                v.divergence.iter().flatten().any(|d| d.root == ix)
                    || v.pending_ack.is_some_and(|p| p.root == ix)
            })
    }

    /// Checks the state's internal references (root indices), for states read from storage.
    ///
    /// # Errors
    /// A description of the first dangling reference.
    pub fn check(&self) -> Result<(), String> {
        let n = self.roots.len();
        let ok = |ix: RootIx| usize::try_from(ix).is_ok_and(|i| i < n);
        let refs = self
            .history
            .iter()
            .map(|c| c.root)
            .chain(self.views.iter().flat_map(|v| {
                v.divergence
                    .iter()
                    .flatten()
                    .map(|d| d.root)
                    .chain(v.pending_ack.iter().map(|p| p.root))
            }));
        for ix in refs {
            if !ok(ix) {
                return Err(format!("root index {ix} outside a table of {n}"));
            }
        }
        Ok(())
    }

    /// The earliest time a timer is due: a divergence or acknowledgement deadline without an
    /// alert yet, or a hold's expiry. The store indexes keys by it.
    pub fn next_timer(&self) -> Option<Millis> {
        let div = self.views.iter().flat_map(|v| {
            v.divergence
                .iter()
                .flatten()
                .filter(|d| d.alert.is_none())
                .map(|d| d.deadline)
                .chain(
                    v.pending_ack
                        .iter()
                        .filter(|p| p.alert.is_none())
                        .map(|p| p.deadline),
                )
        });
        div.chain(self.holds.iter().map(|h| h.expires_at)).min()
    }
}
