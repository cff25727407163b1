//! Per-key state: everything Breakwater knows about one SKU at one location.
//!
//! One `KeyState` is one value in the state store and one record on the changelog, so it is
//! kept flat and bounded: fixed-size arrays per measure, short rings for history and duplicate
//! detection, one `View` per system that has ever published for the key.

use serde::{Deserialize, Serialize};

use crate::event::{Measure, Millis};
use crate::id::Id;
use crate::model::SysId;
use crate::output::{AlertKind, RootCause, Snapshot};

/// Authoritative changes remembered per key: enough to name the change a stale action missed
/// and to tell a value that was once authoritative from one that came from nowhere.
pub const HISTORY: usize = 8;
/// Event ids (and reservation command ids) remembered per key for duplicate detection, on top
/// of the per-system `source_seq` window.
pub const RECENT_IDS: usize = 16;
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
    /// The last [`HISTORY`] authoritative changes, oldest first.
    pub history: Vec<Change>,
    /// What each system last said.
    pub views: Vec<View>,
    /// Granted reservations not yet committed, released or expired.
    pub holds: Vec<Hold>,
    /// Fingerprints of the last [`RECENT_IDS`] event and command ids, a ring.
    pub recent: Vec<u64>,
    /// Next slot to overwrite in `recent` once it is full.
    pub recent_next: u8,
}

/// One authoritative change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The version it produced.
    pub version: u64,
    /// Its root event.
    pub root: RootCause,
    /// Where it entered the cascade.
    pub origin: SysId,
    /// Processing time.
    pub at: Millis,
    /// Every measure's authoritative value after it (`Measure::ALL` order).
    pub values: [i64; 5],
}

/// A reading of one measure by one system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The system's value.
    pub value: i64,
    /// The event that set it.
    pub event_id: Id,
    /// Its `occurred_at`.
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
    /// The event that started it.
    pub root: RootCause,
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
    /// Its root event.
    pub root: RootCause,
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
