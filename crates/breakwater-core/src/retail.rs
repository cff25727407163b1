//! A seeded, deterministic, truth-scored "retail day" generator: distribution centres (`wms`),
//! stores (`pos`), an ERP on a 15-minute batch (`erp`) and a storefront selling from a
//! 5-minute availability cache (`storefront`), with web orders, reservations, store sales,
//! replenishment, returns, shrinkage and cycle counts, and optionally a handful of injected
//! faults, each with the alerts Breakwater must raise for it.
//!
//! [`generate`] is pure: the same [`RetailConfig`] gives byte-identical [`Generated`] output
//! (a splitmix64 generator, an event queue ordered by time then insertion, no hash maps).
//! The world is simulated as a discrete-event system in time order and every event updates the
//! ground truth at the moment it is published, so [`Generated::truth`] is exactly the state
//! Breakwater must reach after folding [`Generated::inputs`] with these semantics:
//!
//! - the authority of a location (`wms` at `DC-*`, `pos` at `STORE-*`) sets `on_hand` and
//!   `allocated`; `erp` sets `safety_stock`; the ledger keeps `committed`;
//! - an order line (`order_ref`, `line_ref`) is committed once (by COMMIT or by the first
//!   ORDER_PLACED from any system), its commitment is relieved by its ALLOCATION and its
//!   allocation by its SHIP; ORDER_CANCELLED relieves an unallocated line;
//! - duplicates (same event or command id) count once; deltas count once whatever their order.
//!
//! The config it runs under is `testdata/retail/breakwater.toml`.
//!
//! # Cadences and windows
//!
//! A well-behaved system in the clean stream never stays behind longer than its handoff
//! window, so the clean stream must raise no DRIFT and no PHANTOM_AVAILABILITY:
//!
//! - the ERP batches every [`BATCH_MS`] (15 min): at batch time `T` it takes the authoritative
//!   `on_hand` of every key that changed, and publishes it [`ERP_PUBLISH_LAG_MS`] (30 s) later
//!   with `data_as_of = T`. A change at `c` is reflected by the batch at the first `T >= c`,
//!   published by `c + 15 min 30 s`, inside [`ERP_WINDOW_MS`] (20 min: `wms -> erp`,
//!   `pos -> erp`) with 4.5 min to spare;
//! - the storefront refreshes its cache every [`CACHE_REFRESH_MS`] (5 min), publishing the
//!   clamped availability of every key that changed with `data_as_of` = the refresh time. A
//!   change at `c` is shown by `c + 5 min`, inside [`STOREFRONT_WINDOW_MS`] (10 min:
//!   `wms`, `pos`, `erp` and `breakwater` -> `storefront`);
//! - reservation holds live [`RESERVATION_TTL_MS`] (15 min); a COMMIT follows its RESERVE
//!   within 5 min.
//!
//! The faults break exactly one of these promises on one key each (see [`FaultKind`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use serde::{Deserialize, Serialize};

use crate::event::{
    CommandKind, EventType, InventoryEvent, Measure, Millis, Mode, ReservationCommand,
};
use crate::fold::{apply, Input};
use crate::incident::{IncidentBook, IncidentReport};
use crate::model::Model;
use crate::output::{Alert, AlertKind, Output};
use crate::scenario::ScenarioInput;
use crate::state::KeyState;

/// The ERP's batch interval: every 15 minutes it syncs the keys whose `on_hand` changed.
pub const BATCH_MS: Millis = 900_000;
/// How long after its batch time `T` the ERP publishes the batch (with `data_as_of = T`).
pub const ERP_PUBLISH_LAG_MS: Millis = 30_000;
/// The storefront's cache refresh interval.
pub const CACHE_REFRESH_MS: Millis = 300_000;
/// Handoff window `wms -> erp` and `pos -> erp`: larger than the ERP's worst lag
/// (`BATCH_MS + ERP_PUBLISH_LAG_MS`).
pub const ERP_WINDOW_MS: Millis = 1_200_000;
/// Handoff window `wms`, `pos`, `erp`, `breakwater -> storefront`: larger than the cache's worst
/// lag (`CACHE_REFRESH_MS`).
pub const STOREFRONT_WINDOW_MS: Millis = 600_000;
/// TTL of the storefront's reservation holds.
pub const RESERVATION_TTL_MS: Millis = 900_000;
/// How long the ERP skips a key in a [`FaultKind::MissedErpBatch`].
pub const MISSED_SYNC_MS: Millis = 7_200_000;
/// Units a [`FaultKind::ManualErpCorrection`] adds to the truth (bumped further if that value
/// was ever authoritative for the key).
pub const MANUAL_CORRECTION_UNITS: i64 = 37;

const _: () = assert!(BATCH_MS + ERP_PUBLISH_LAG_MS < ERP_WINDOW_MS);
const _: () = assert!(CACHE_REFRESH_MS < STOREFRONT_WINDOW_MS);
const _: () = assert!(RESERVATION_TTL_MS > 5 * MINUTE);

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;
/// The longest a web order's own events span: RESERVE -> COMMIT (5 min) -> ORDER_PLACED (10 s)
/// -> ALLOCATION (60 min) -> SHIP (240 min).
const ORDER_FLOW_MAX_MS: Millis = 306 * MINUTE;
/// A store transfer: TRANSFER_OUT at the DC, TRANSFER_IN at the store 2-5 h later.
const TRANSFER_IN_MAX_MS: Millis = 5 * HOUR;
/// Quiet margin around a fault's own events on its key.
const FAULT_MARGIN_MS: Millis = 10 * MINUTE;
/// Faults are placed between this long after the start and [`FAULT_TAIL_MS`] before the end.
const FAULT_HEAD_MS: Millis = 2 * HOUR;
const FAULT_TAIL_MS: Millis = 5 * HOUR;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetailConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Time zero, ms since the epoch. Every key's opening snapshots are at this time.
    pub start_ms: Millis,
    /// How long the world runs; nothing is published at or after `start_ms + duration_ms`.
    pub duration_ms: Millis,
    /// Distribution centres (`DC-1`, ...), run by `wms`.
    pub dcs: usize,
    /// Stores (`STORE-001`, ...), run by `pos`.
    pub stores: usize,
    /// SKUs (`SKU-00001`, ...); every SKU is stocked at every location.
    pub skus: usize,
    /// Web orders the storefront tries to place per day (lost when nothing is sellable).
    pub web_orders_per_day: usize,
    /// Walk-in sales the stores try to make per day.
    pub store_sales_per_day: usize,
    /// Inject the faults of [`FaultKind`].
    pub faults: bool,
    /// How many faults of each kind (each at its own key). Faults need
    /// `duration_ms >= 10 h`; shorter runs get none.
    pub faults_per_kind: usize,
    /// Share of web orders picked up in store (BOPIS), per mille.
    pub bopis_permille: u32,
    /// Share of web orders with two lines, per mille.
    pub multi_line_permille: u32,
    /// Share of single-line web orders placed through a reservation (RESERVE, COMMIT), per mille.
    pub reservation_permille: u32,
    /// Share of web order lines cancelled before allocation, per mille.
    pub cancel_permille: u32,
    /// Share of web order lines the ERP also reports at its next batch, per mille.
    pub erp_report_permille: u32,
    /// Share of shipped DC lines returned 1-5 days later, per mille.
    pub return_permille: u32,
    /// Mean time between two cycle counts of one key.
    pub cycle_count_every_ms: Millis,
    /// Share of cycle counts that find shrinkage (1-3 units), per mille.
    pub shrink_permille: u32,
}

impl RetailConfig {
    /// About one day, 2 DCs, 3 stores, 300 SKUs (1500 keys), a few tens of thousands of
    /// events: fast enough for debug-mode tests.
    pub fn small() -> Self {
        RetailConfig {
            seed: 1247,
            // 2026-04-03T00:00:00Z
            start_ms: 1_775_174_400_000,
            duration_ms: DAY,
            dcs: 2,
            stores: 3,
            skus: 300,
            web_orders_per_day: 4_000,
            store_sales_per_day: 5_000,
            faults: true,
            faults_per_kind: 2,
            bopis_permille: 150,
            multi_line_permille: 150,
            reservation_permille: 100,
            cancel_permille: 40,
            erp_report_permille: 300,
            return_permille: 50,
            cycle_count_every_ms: 3 * DAY,
            shrink_permille: 250,
        }
    }

    /// 30 days, 4 DCs, 20 stores, 1500 SKUs (36 000 keys), millions of events.
    pub fn month() -> Self {
        RetailConfig {
            duration_ms: 30 * DAY,
            dcs: 4,
            stores: 20,
            skus: 1_500,
            web_orders_per_day: 8_000,
            store_sales_per_day: 12_000,
            faults_per_kind: 5,
            ..RetailConfig::small()
        }
    }

    /// When the world stops: `start_ms + duration_ms`.
    pub fn end_ms(&self) -> Millis {
        self.start_ms.saturating_add(self.duration_ms)
    }
}

/// What [`generate`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// (record timestamp, input), sorted by timestamp; equal timestamps keep generation order.
    pub inputs: Vec<(Millis, ScenarioInput)>,
    /// The final authoritative state of every key, by (sku, location).
    pub truth: BTreeMap<(String, String), Truth>,
    /// The injected faults with the alerts each must raise.
    pub faults: Vec<InjectedFault>,
    /// Order lines placed (web and reservation lines), for "false alerts per 10k orders".
    pub orders: usize,
}

/// The authoritative state of one key at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// Physical units (authority: `wms` at DCs, `pos` at stores).
    pub on_hand: i64,
    /// Units allocated and not shipped.
    pub allocated: i64,
    /// Units of open order lines not yet allocated (the ledger).
    pub committed: i64,
    /// Units held back (authority: `erp`).
    pub safety_stock: i64,
}

/// A fault injected on one key, with the alerts it must raise (none for faults Breakwater
/// must absorb silently).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedFault {
    /// What went wrong.
    pub fault: FaultKind,
    /// The key's SKU.
    pub sku: String,
    /// The key's location.
    pub location: String,
    /// When the fault's first (root) event is published.
    pub at: Millis,
    /// The alerts it must raise, each at this key.
    pub expected: Vec<ExpectedAlert>,
}

/// An alert a fault must raise at its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedAlert {
    /// The kind.
    pub kind: AlertKind,
    /// The alerting system.
    pub system: String,
    /// The root cause's event id.
    pub root_event_id: String,
}

/// The faults [`generate`] can inject. Faults that change an authoritative value run on a key
/// kept quiet (no organic activity) around them, so their roots are unambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    /// The ERP skips one DC key for [`MISSED_SYNC_MS`] while three WMS receipts change its
    /// `on_hand`. Expected: DRIFT on `erp`, root = the first receipt (the first authoritative
    /// `on_hand` change after the ERP's last as-of point).
    MissedErpBatch,
    /// An ERP ADJUSTMENT sets a store key's `on_hand` to a value never authoritative for it
    /// (truth + [`MANUAL_CORRECTION_UNITS`]), 90 s after a batch; the next batch restores the
    /// truth within 16 min. Expected: UNPROPAGATED_CHANGE on `erp`, root = the adjustment.
    ManualErpCorrection,
    /// The storefront's cache stops refreshing one DC key; a B2B ALLOCATION from `wms` (no
    /// `order_ref`) takes sellable down to 0 or 1; 15 min later the storefront places an order
    /// it cannot cover, on its stale view; the storefront cancels it an hour later and the
    /// cache resumes. Expected, all on `storefront` with root = the B2B allocation:
    /// STALE_ACTION, OVERSELL (the order is larger than sellable) and PHANTOM_AVAILABILITY
    /// (its cached availability stays above the truth past its window).
    StaleCacheOversell,
    /// A storefront ORDER_PLACED re-published with the same event id 2 h later. No alert; it
    /// counts once.
    DuplicatedOrder,
    /// Two consecutive WMS RECEIPT deltas on a DC key published in swapped order (`source_seq`
    /// n+1 before n). No alert; both count once.
    ReorderedDelta,
    /// A RESERVE re-published with the same command id an hour later. No alert; it counts once.
    RetriedReservation,
}

impl FaultKind {
    /// Every kind, in the order faults are planned.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::MissedErpBatch,
        FaultKind::ManualErpCorrection,
        FaultKind::StaleCacheOversell,
        FaultKind::DuplicatedOrder,
        FaultKind::ReorderedDelta,
        FaultKind::RetriedReservation,
    ];
}

/// An alert Breakwater raised, as [`score`] compares it (RESOLVED alerts left out by the caller).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScoredAlert {
    /// The kind.
    pub kind: AlertKind,
    /// The alerting system.
    pub system: String,
    /// The key's SKU.
    pub sku: String,
    /// The key's location.
    pub location: String,
    /// The root cause's event id.
    pub root_event_id: String,
}

/// An alert or expectation that found no partner, for diagnostics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unmatched {
    /// An alert no fault expected.
    FalsePositive(ScoredAlert),
    /// An expected alert nothing matched.
    FalseNegative {
        /// The fault that expected it.
        fault: FaultKind,
        /// The fault's SKU.
        sku: String,
        /// The fault's location.
        location: String,
        /// The alert it expected.
        expected: ExpectedAlert,
    },
}

/// How the alerts of a run compare with the injected faults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    /// Alerts matching an expected alert (several alerts may match one expectation).
    pub true_positives: usize,
    /// Alerts matching no expected alert.
    pub false_positives: usize,
    /// Expected alerts matched by no alert.
    pub false_negatives: usize,
    /// Expected alerts in all.
    pub expected: usize,
    /// Every false positive and false negative.
    pub unmatched: Vec<Unmatched>,
}

impl Score {
    /// `TP / (TP + FP)`; 1 when there are no alerts.
    pub fn precision(&self) -> f64 {
        let all = self.true_positives + self.false_positives;
        if all == 0 {
            1.0
        } else {
            self.true_positives as f64 / all as f64
        }
    }

    /// Share of expected alerts matched by at least one alert; 1 when none were expected.
    pub fn recall(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            (self.expected - self.false_negatives) as f64 / self.expected as f64
        }
    }
}

/// Scores `alerts` against the faults' expectations. An alert matches an expected alert when
/// kind, system, SKU, location and root event id are equal; it is a true positive if it matches
/// one, a false positive otherwise. An expected alert nothing matches is a false negative.
pub fn score(faults: &[InjectedFault], alerts: &[ScoredAlert]) -> Score {
    type MatchKey<'a> = (AlertKind, &'a str, &'a str, &'a str, &'a str);
    let mut hit: BTreeMap<MatchKey<'_>, bool> = BTreeMap::new();
    for f in faults {
        for e in &f.expected {
            hit.insert(
                (
                    e.kind,
                    e.system.as_str(),
                    f.sku.as_str(),
                    f.location.as_str(),
                    e.root_event_id.as_str(),
                ),
                false,
            );
        }
    }
    let mut s = Score::default();
    for a in alerts {
        let k = (
            a.kind,
            a.system.as_str(),
            a.sku.as_str(),
            a.location.as_str(),
            a.root_event_id.as_str(),
        );
        match hit.get_mut(&k) {
            Some(h) => {
                *h = true;
                s.true_positives += 1;
            }
            None => {
                s.false_positives += 1;
                s.unmatched.push(Unmatched::FalsePositive(a.clone()));
            }
        }
    }
    for f in faults {
        for e in &f.expected {
            s.expected += 1;
            let k = (
                e.kind,
                e.system.as_str(),
                f.sku.as_str(),
                f.location.as_str(),
                e.root_event_id.as_str(),
            );
            if hit.get(&k) != Some(&true) {
                s.false_negatives += 1;
                s.unmatched.push(Unmatched::FalseNegative {
                    fault: f.fault,
                    sku: f.sku.clone(),
                    location: f.location.clone(),
                    expected: e.clone(),
                });
            }
        }
    }
    s
}

/// Everything a pure replay of many keys produced.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The final state of every key, by `sku|location`.
    pub states: BTreeMap<String, KeyState>,
    /// Every alert, with its key's SKU and location, in the order raised per key.
    pub alerts: Vec<(String, String, Alert)>,
    /// Consuming actions that raised no alert, by outcome.
    pub actions: BTreeMap<&'static str, u64>,
    /// Inputs that were rejected (they would go to the dead-letter topic), by reason code.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Inputs folded (events and commands, duplicates included).
    pub inputs: u64,
    /// Incident reports, as one partition's [`IncidentBook`] makes them.
    pub incidents: Vec<IncidentReport>,
    /// Alerts the rate limits kept off the alert topic (not in `alerts`).
    pub suppressed: u64,
}

/// Folds `inputs` (in timestamp order) through the pure fold as the processor does for one
/// partition: before each input, every timer due by its timestamp fires at its own deadline,
/// earliest first (ties by key); at the end, every timer due by `end` fires. Alerts go
/// through one [`IncidentBook`], at the stream time they were raised.
pub fn replay(model: &Model, inputs: &[(Millis, ScenarioInput)], end: Millis) -> Replayed {
    let mut r = Replayed::default();
    let mut out = Vec::new();
    let mut book = IncidentBook::new();
    // (deadline, key): the partition's timer index.
    let mut timers: BTreeSet<(Millis, String)> = BTreeSet::new();
    let record = |key: &str,
                  out: &mut Vec<Output>,
                  r: &mut Replayed,
                  book: &mut IncidentBook,
                  now: Millis| {
        for o in out.drain(..) {
            match o {
                Output::Alert(a) => {
                    if book.on_alert(model, key, &a, now, &mut r.incidents) {
                        let (sku, loc) = key.split_once('|').unwrap_or((key, ""));
                        r.alerts.push((sku.to_owned(), loc.to_owned(), a));
                    } else {
                        r.suppressed += 1;
                    }
                }
                Output::Action(a) => *r.actions.entry(a.outcome.as_str()).or_default() += 1,
                _ => {}
            }
        }
    };
    let fire = |until: Millis,
                r: &mut Replayed,
                timers: &mut BTreeSet<(Millis, String)>,
                book: &mut IncidentBook,
                out: &mut Vec<Output>| {
        while let Some((d, key)) = timers.first().filter(|(d, _)| *d <= until).cloned() {
            timers.remove(&(d, key.clone()));
            let st = r.states.entry(key.clone()).or_default();
            // A timer input cannot be rejected.
            let _ = apply(model, st, Input::Timer, d, out);
            if let Some(next) = st.next_timer() {
                timers.insert((next, key.clone()));
            }
            let _ = book.advance(d, &mut r.incidents);
            record(&key, out, r, book, d);
        }
    };
    for (t, input) in inputs {
        fire(*t, &mut r, &mut timers, &mut book, &mut out);
        let _ = book.advance(*t, &mut r.incidents);
        let (sku, loc) = input.key();
        let key = crate::event::message_key(sku, loc);
        let st = r.states.entry(key.clone()).or_default();
        let before = st.next_timer();
        let res = match input {
            ScenarioInput::Event(e) => apply(model, st, Input::Event(e), *t, &mut out),
            ScenarioInput::Command(c) => apply(model, st, Input::Command(c), *t, &mut out),
        };
        let after = st.next_timer();
        if let Err(e) = res {
            *r.rejected.entry(e.code()).or_default() += 1;
        }
        if before != after {
            if let Some(d) = before {
                timers.remove(&(d, key.clone()));
            }
            if let Some(d) = after {
                timers.insert((d, key.clone()));
            }
        }
        r.inputs += 1;
        record(&key, &mut out, &mut r, &mut book, *t);
    }
    fire(end, &mut r, &mut timers, &mut book, &mut out);
    let _ = book.advance(end, &mut r.incidents);
    r
}

/// The alerts of a replay in the scorer's terms (RESOLVED left out).
pub fn scored(model: &Model, alerts: &[(String, String, Alert)]) -> Vec<ScoredAlert> {
    alerts
        .iter()
        .filter(|(_, _, a)| a.kind != AlertKind::Resolved)
        .map(|(sku, location, a)| ScoredAlert {
            kind: a.kind,
            system: model.name(a.system).to_owned(),
            sku: sku.clone(),
            location: location.clone(),
            root_event_id: a.root.event_id.to_string(),
        })
        .collect()
}

/// Generates the world `cfg` describes. Pure and deterministic.
pub fn generate(cfg: &RetailConfig) -> Generated {
    let mut g = Gen::new(cfg);
    g.open();
    if cfg.faults {
        g.plan_faults();
    }
    g.run();
    g.finish()
}

// --- Randomness ----------------------------------------------------------------------------

/// splitmix64: tiny, fast, and good enough for a simulation.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6a09_e667_f3bc_c908)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = hi.abs_diff(lo).saturating_add(1);
        lo.saturating_add(self.below(span) as i64)
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn chance(&mut self, permille: u32) -> bool {
        self.below(1000) < u64::from(permille)
    }
}

// --- The simulation ------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sys {
    Wms,
    Pos,
    Erp,
    Storefront,
}

impl Sys {
    const fn name(self) -> &'static str {
        match self {
            Sys::Wms => "wms",
            Sys::Pos => "pos",
            Sys::Erp => "erp",
            Sys::Storefront => "storefront",
        }
    }
}

/// Optional fields of an event.
#[derive(Default)]
struct Refs {
    order_ref: Option<String>,
    line_ref: Option<String>,
    po_ref: Option<String>,
    shipment_ref: Option<String>,
    data_as_of: Option<Millis>,
    reason: Option<String>,
    correlation_id: Option<String>,
}

/// One key's simulated state.
#[derive(Clone, Default)]
struct KeySim {
    on_hand: i64,
    allocated: i64,
    committed: i64,
    safety: i64,
    /// Units held by granted, uncommitted reservations.
    reserved: i64,
    /// Last `source_seq` of the key's authority.
    seq: i64,
    /// The ERP's last published `on_hand` (-1: never).
    erp_known: i64,
    /// The storefront's last published availability (-1: never).
    sf_shown: i64,
    erp_dirty: bool,
    sf_dirty: bool,
    /// Replenish when available falls below this.
    reorder_point: i64,
    /// Replenish up to this available.
    target: i64,
    /// A receipt or transfer is on its way.
    replenishing: bool,
}

impl KeySim {
    fn available(&self) -> i64 {
        self.on_hand - self.allocated - self.committed - self.safety
    }
    fn sellable(&self) -> i64 {
        self.available() - self.reserved
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineState {
    Reserved,
    Committed,
    Allocated,
    Shipped,
    Cancelled,
}

struct Line {
    order: u64,
    line_no: u32,
    key: u32,
    quantity: i64,
    state: LineState,
    reservation: u64,
}

enum Action {
    WebArrival,
    StoreArrival,
    ErpBatch,
    ErpPublish {
        as_of: Millis,
        snapshots: Vec<(u32, i64)>,
        lines: Vec<u32>,
    },
    Refresh,
    Commit {
        line: u32,
        may_cancel: bool,
    },
    PlaceCommitted {
        line: u32,
        may_cancel: bool,
    },
    Allocate(u32),
    Ship(u32),
    Cancel(u32),
    Return {
        key: u32,
        quantity: i64,
        order: u64,
    },
    CycleCount(u32),
    Receipt(u32),
    TransferOut {
        dc: u32,
        store: u32,
    },
    TransferIn {
        store: u32,
        quantity: i64,
        shipment: u64,
    },
    /// Publish a prepared input; `on_hand` is the delta it makes to a key's truth.
    Emit {
        input: Box<ScenarioInput>,
        on_hand: Option<(u32, i64)>,
    },
    Fault(FaultStep),
}

enum FaultStep {
    MissedSyncReceipt {
        fault: usize,
        key: u32,
        first: bool,
    },
    ManualCorrection {
        fault: usize,
        key: u32,
    },
    StalePrep {
        key: u32,
    },
    StaleB2b {
        fault: usize,
        key: u32,
        as_of: Millis,
    },
    StaleOrder {
        key: u32,
        quantity: i64,
        as_of: Millis,
    },
    StaleCancel {
        line: u32,
    },
    DuplicatedOrder {
        key: u32,
    },
    ReorderedDelta {
        key: u32,
    },
    RetriedReservation {
        key: u32,
    },
}

struct Scheduled {
    at: Millis,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: `BinaryHeap` is a max-heap and the earliest action must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Gen<'a> {
    cfg: &'a RetailConfig,
    rng: Rng,
    end: Millis,
    nloc: usize,
    sku_names: Vec<String>,
    loc_names: Vec<String>,
    /// Cumulative SKU popularity weights.
    sku_cum: Vec<u64>,
    keys: Vec<KeySim>,
    queue: BinaryHeap<Scheduled>,
    queued: u64,
    out: Vec<(Millis, ScenarioInput)>,
    event_ids: [u64; 4],
    command_ids: u64,
    reservation_ids: u64,
    order_ids: u64,
    po_ids: u64,
    shipment_ids: u64,
    lines: Vec<Line>,
    erp_dirty: Vec<u32>,
    sf_dirty: Vec<u32>,
    /// Lines the ERP reports at its next batch.
    erp_lines: Vec<u32>,
    sf_last_refresh: Millis,
    /// Keys kept free of organic activity: (from, to) inclusive.
    quiet: BTreeMap<u32, Vec<(Millis, Millis)>>,
    /// Keys the ERP skips at batches with as-of time in (from, to].
    erp_skip: BTreeMap<u32, (Millis, Millis)>,
    /// Keys whose storefront cache is frozen, with the time of its data.
    sf_frozen: BTreeMap<u32, Millis>,
    /// Every authoritative `on_hand` value of watched keys.
    on_hand_seen: BTreeMap<u32, BTreeSet<i64>>,
    faults: Vec<InjectedFault>,
    orders: usize,
}

impl<'a> Gen<'a> {
    fn new(cfg: &'a RetailConfig) -> Gen<'a> {
        let nloc = cfg.dcs + cfg.stores;
        let sku_names = (1..=cfg.skus).map(|i| format!("SKU-{i:05}")).collect();
        let loc_names = (1..=cfg.dcs)
            .map(|i| format!("DC-{i}"))
            .chain((1..=cfg.stores).map(|i| format!("STORE-{i:03}")))
            .collect();
        // Zipf-like popularity: weight ~ 1 / (rank + 10).
        let mut total = 0u64;
        let sku_cum = (0..cfg.skus as u64)
            .map(|i| {
                total += 1_000_000 / (i + 10);
                total
            })
            .collect();
        Gen {
            cfg,
            rng: Rng::new(cfg.seed),
            end: cfg.end_ms(),
            nloc,
            sku_names,
            loc_names,
            sku_cum,
            keys: vec![KeySim::default(); cfg.skus * nloc],
            queue: BinaryHeap::new(),
            queued: 0,
            out: Vec::new(),
            event_ids: [0; 4],
            command_ids: 0,
            reservation_ids: 0,
            order_ids: 0,
            po_ids: 0,
            shipment_ids: 0,
            lines: Vec::new(),
            erp_dirty: Vec::new(),
            sf_dirty: Vec::new(),
            erp_lines: Vec::new(),
            sf_last_refresh: cfg.start_ms,
            quiet: BTreeMap::new(),
            erp_skip: BTreeMap::new(),
            sf_frozen: BTreeMap::new(),
            on_hand_seen: BTreeMap::new(),
            faults: Vec::new(),
            orders: 0,
        }
    }

    // --- keys ---

    fn key(&self, sku: usize, loc: usize) -> u32 {
        (sku * self.nloc + loc) as u32
    }
    fn sku_of(&self, key: u32) -> usize {
        key as usize / self.nloc
    }
    fn loc_of(&self, key: u32) -> usize {
        key as usize % self.nloc
    }
    fn is_dc(&self, key: u32) -> bool {
        self.loc_of(key) < self.cfg.dcs
    }
    fn authority(&self, key: u32) -> Sys {
        if self.is_dc(key) {
            Sys::Wms
        } else {
            Sys::Pos
        }
    }
    fn k(&self, key: u32) -> &KeySim {
        &self.keys[key as usize]
    }
    fn km(&mut self, key: u32) -> &mut KeySim {
        &mut self.keys[key as usize]
    }
    /// Whether `key` is free of fault activity over `[from, to]`.
    fn is_quiet(&self, key: u32, from: Millis, to: Millis) -> bool {
        self.quiet
            .get(&key)
            .is_none_or(|ws| ws.iter().all(|(a, b)| to < *a || from > *b))
    }
    fn sample_sku(&mut self) -> usize {
        let total = self.sku_cum.last().copied().unwrap_or(0);
        let x = self.rng.below(total);
        self.sku_cum.partition_point(|c| *c <= x)
    }
    fn sample_quantity(&mut self) -> i64 {
        match self.rng.below(100) {
            0..=69 => 1,
            70..=89 => 2,
            _ => self.rng.range(3, 5),
        }
    }

    // --- truth ---

    /// Changes a key's truth and marks it for the ERP and the storefront.
    fn change(&mut self, key: u32, on_hand: i64, allocated: i64, committed: i64) {
        let k = &mut self.keys[key as usize];
        k.on_hand += on_hand;
        k.allocated += allocated;
        k.committed += committed;
        let new_on_hand = k.on_hand;
        if on_hand != 0 && !k.erp_dirty {
            k.erp_dirty = true;
            self.erp_dirty.push(key);
        }
        let k = &mut self.keys[key as usize];
        if (on_hand != 0 || allocated != 0 || committed != 0) && !k.sf_dirty {
            k.sf_dirty = true;
            self.sf_dirty.push(key);
        }
        if on_hand != 0 {
            if let Some(seen) = self.on_hand_seen.get_mut(&key) {
                seen.insert(new_on_hand);
            }
        }
    }

    // --- output ---

    fn schedule(&mut self, at: Millis, action: Action) {
        if at < self.end {
            self.queued += 1;
            self.queue.push(Scheduled {
                at,
                seq: self.queued,
                action,
            });
        }
    }

    /// The one constructor of every inventory event: assigns the event id and, for the WMS
    /// and the POS, the key's next `source_seq`.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        sys: Sys,
        event_type: EventType,
        key: u32,
        measure: Measure,
        mode: Mode,
        quantity: i64,
        occurred_at: Millis,
        refs: Refs,
    ) -> InventoryEvent {
        let counter = &mut self.event_ids[sys as usize];
        *counter += 1;
        let event_id = format!("{}-{:09}", sys.name(), *counter);
        let source_seq = match sys {
            Sys::Wms | Sys::Pos => {
                let k = self.km(key);
                k.seq += 1;
                Some(k.seq)
            }
            Sys::Erp | Sys::Storefront => None,
        };
        InventoryEvent {
            event_id,
            system: sys.name().to_owned(),
            source_seq,
            event_type,
            sku: self.sku_names[self.sku_of(key)].clone(),
            location: self.loc_names[self.loc_of(key)].clone(),
            measure,
            mode,
            quantity,
            occurred_at,
            based_on_version: None,
            data_as_of: refs.data_as_of,
            reason: refs.reason,
            causation_id: None,
            correlation_id: refs.correlation_id,
            order_ref: refs.order_ref,
            line_ref: refs.line_ref,
            po_ref: refs.po_ref,
            shipment_ref: refs.shipment_ref,
        }
    }

    fn command(
        &mut self,
        command: CommandKind,
        line: u32,
        issued_at: Millis,
    ) -> ReservationCommand {
        self.command_ids += 1;
        let l = &self.lines[line as usize];
        let (key, quantity, reservation, order, line_no) =
            (l.key, l.quantity, l.reservation, l.order, l.line_no);
        let commit = command == CommandKind::Commit;
        ReservationCommand {
            command_id: format!("cmd-{:09}", self.command_ids),
            command,
            reservation_id: format!("res-{reservation:09}"),
            sku: self.sku_names[self.sku_of(key)].clone(),
            location: self.loc_names[self.loc_of(key)].clone(),
            quantity,
            channel: Sys::Storefront.name().to_owned(),
            ttl_ms: (command == CommandKind::Reserve).then_some(RESERVATION_TTL_MS),
            issued_at,
            order_ref: commit.then(|| order_ref(order)),
            line_ref: commit.then(|| line_no.to_string()),
        }
    }

    fn emit(&mut self, at: Millis, e: InventoryEvent) {
        self.out.push((at, ScenarioInput::Event(e)));
    }

    fn emit_command(&mut self, at: Millis, c: ReservationCommand) {
        self.out.push((at, ScenarioInput::Command(c)));
    }

    fn line_refs(&self, line: u32, data_as_of: Option<Millis>) -> Refs {
        let l = &self.lines[line as usize];
        Refs {
            order_ref: Some(order_ref(l.order)),
            line_ref: Some(l.line_no.to_string()),
            data_as_of,
            ..Refs::default()
        }
    }

    /// The time of the storefront's cached view of `key`.
    fn sf_as_of(&self, key: u32) -> Millis {
        self.sf_frozen
            .get(&key)
            .copied()
            .unwrap_or(self.sf_last_refresh)
    }

    // --- the opening ---

    fn open(&mut self) {
        let cfg = self.cfg;
        let t = cfg.start_ms;
        let total = self.sku_cum.last().copied().unwrap_or(1).max(1);
        // Daily demand in milli-units (1.15 lines per order, 1.6 units per line, 1.3 units
        // per store sale).
        let web = cfg.web_orders_per_day as u64 * 1_840;
        let bopis = web * u64::from(cfg.bopis_permille) / 1000;
        let store = cfg.store_sales_per_day as u64 * 1_300;
        let mut prev = 0;
        for sku in 0..cfg.skus {
            let w = self.sku_cum[sku] - prev;
            prev = self.sku_cum[sku];
            for loc in 0..self.nloc {
                let key = self.key(sku, loc);
                let dc = loc < cfg.dcs;
                let daily_milli = if dc {
                    (web + store) * w / total / cfg.dcs.max(1) as u64
                } else {
                    (store + bopis) * w / total / cfg.stores.max(1) as u64
                };
                let daily = (daily_milli.div_ceil(1000)) as i64;
                let (safety, reorder_point, target, opening) = if dc {
                    let opening = daily * self.rng.range(4, 8) + self.rng.range(10, 30);
                    (self.rng.range(0, 5), 2 * daily + 5, 7 * daily + 20, opening)
                } else {
                    let opening = daily * self.rng.range(3, 6) + self.rng.range(2, 6);
                    (self.rng.range(0, 2), 2 * daily + 2, 6 * daily + 6, opening)
                };
                let on_hand = opening + safety;
                {
                    let k = self.km(key);
                    k.safety = safety;
                    k.reorder_point = reorder_point;
                    k.target = target;
                    k.erp_known = -1;
                    k.sf_shown = -1;
                }
                let auth = self.authority(key);
                let e = self.event(
                    auth,
                    EventType::Snapshot,
                    key,
                    Measure::OnHand,
                    Mode::Absolute,
                    on_hand,
                    t,
                    Refs::default(),
                );
                self.emit(t, e);
                self.change(key, on_hand, 0, 0);
                let e = self.event(
                    auth,
                    EventType::Snapshot,
                    key,
                    Measure::Allocated,
                    Mode::Absolute,
                    0,
                    t,
                    Refs::default(),
                );
                self.emit(t, e);
                let e = self.event(
                    Sys::Erp,
                    EventType::Snapshot,
                    key,
                    Measure::SafetyStock,
                    Mode::Absolute,
                    safety,
                    t,
                    Refs::default(),
                );
                self.emit(t, e);
                let first = self.rng.range(HOUR, cfg.cycle_count_every_ms.max(HOUR));
                self.schedule(t + first, Action::CycleCount(key));
            }
        }
        self.schedule(t, Action::Refresh);
        self.schedule(t + BATCH_MS, Action::ErpBatch);
        if cfg.dcs > 0 && cfg.web_orders_per_day > 0 {
            let gap = self.web_gap();
            self.schedule(t + gap, Action::WebArrival);
        }
        if cfg.stores > 0 && cfg.store_sales_per_day > 0 {
            let gap = self.store_gap();
            self.schedule(t + gap, Action::StoreArrival);
        }
    }

    fn web_gap(&mut self) -> Millis {
        let mean = DAY / self.cfg.web_orders_per_day.max(1) as i64;
        self.rng.range(1, 2 * mean)
    }
    fn store_gap(&mut self) -> Millis {
        let mean = DAY / self.cfg.store_sales_per_day.max(1) as i64;
        self.rng.range(1, 2 * mean)
    }

    // --- the run ---

    fn run(&mut self) {
        while let Some(s) = self.queue.pop() {
            if s.at >= self.end {
                break;
            }
            self.step(s.at, s.action);
        }
    }

    fn finish(mut self) -> Generated {
        // Already in time order; a stable sort keeps generation order within a timestamp.
        self.out.sort_by_key(|(t, _)| *t);
        let mut truth = BTreeMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            let key = i as u32;
            truth.insert(
                (
                    self.sku_names[self.sku_of(key)].clone(),
                    self.loc_names[self.loc_of(key)].clone(),
                ),
                Truth {
                    on_hand: k.on_hand,
                    allocated: k.allocated,
                    committed: k.committed,
                    safety_stock: k.safety,
                },
            );
        }
        Generated {
            inputs: self.out,
            truth,
            faults: self.faults,
            orders: self.orders,
        }
    }

    fn step(&mut self, t: Millis, action: Action) {
        match action {
            Action::WebArrival => self.web_arrival(t),
            Action::StoreArrival => self.store_arrival(t),
            Action::ErpBatch => self.erp_batch(t),
            Action::ErpPublish {
                as_of,
                snapshots,
                lines,
            } => self.erp_publish(t, as_of, snapshots, lines),
            Action::Refresh => self.refresh(t),
            Action::Commit { line, may_cancel } => self.commit(t, line, may_cancel),
            Action::PlaceCommitted { line, may_cancel } => {
                let e = self.order_placed(line, t);
                self.emit(t, e);
                self.follow_up(t, line, may_cancel, true);
            }
            Action::Allocate(line) => self.allocate(t, line),
            Action::Ship(line) => self.ship(t, line),
            Action::Cancel(line) => self.cancel(t, line),
            Action::Return {
                key,
                quantity,
                order,
            } => {
                if !self.is_quiet(key, t, t) {
                    self.schedule(
                        t + HOUR,
                        Action::Return {
                            key,
                            quantity,
                            order,
                        },
                    );
                    return;
                }
                let refs = Refs {
                    correlation_id: Some(order_ref(order)),
                    reason: Some("customer return".to_owned()),
                    ..Refs::default()
                };
                let e = self.event(
                    Sys::Wms,
                    EventType::Return,
                    key,
                    Measure::OnHand,
                    Mode::Delta,
                    quantity,
                    t,
                    refs,
                );
                self.emit(t, e);
                self.change(key, quantity, 0, 0);
            }
            Action::CycleCount(key) => self.cycle_count(t, key),
            Action::Receipt(key) => self.replenishment_receipt(t, key),
            Action::TransferOut { dc, store } => self.transfer_out(t, dc, store),
            Action::TransferIn {
                store,
                quantity,
                shipment,
            } => {
                let refs = Refs {
                    shipment_ref: Some(format!("TR-{shipment:08}")),
                    ..Refs::default()
                };
                let e = self.event(
                    Sys::Pos,
                    EventType::TransferIn,
                    store,
                    Measure::OnHand,
                    Mode::Delta,
                    quantity,
                    t,
                    refs,
                );
                self.emit(t, e);
                self.change(store, quantity, 0, 0);
                self.km(store).replenishing = false;
                self.check_replenish(t, store);
            }
            Action::Emit { input, on_hand } => {
                self.out.push((t, *input));
                if let Some((key, d)) = on_hand {
                    self.change(key, d, 0, 0);
                }
            }
            Action::Fault(f) => self.fault_step(t, f),
        }
    }

    // --- demand ---

    fn web_arrival(&mut self, t: Millis) {
        let gap = self.web_gap();
        self.schedule(t + gap, Action::WebArrival);
        let cfg = self.cfg;
        let loc = if cfg.stores > 0 && self.rng.chance(cfg.bopis_permille) {
            cfg.dcs + self.rng.index(cfg.stores)
        } else {
            self.rng.index(cfg.dcs)
        };
        let n = if self.rng.chance(cfg.multi_line_permille) {
            2
        } else {
            1
        };
        let mut accepted: Vec<(u32, i64)> = Vec::new();
        for _ in 0..n {
            let sku = self.sample_sku();
            let key = self.key(sku, loc);
            let q = self.sample_quantity();
            if accepted.iter().any(|(k, _)| *k == key) {
                continue;
            }
            // The storefront is well behaved: it sells only what the ledger says is sellable.
            if self.is_quiet(key, t, t + ORDER_FLOW_MAX_MS) && self.k(key).sellable() >= q {
                accepted.push((key, q));
            }
        }
        if accepted.is_empty() {
            return;
        }
        self.order_ids += 1;
        let order = self.order_ids;
        if accepted.len() == 1 && self.rng.chance(cfg.reservation_permille) {
            let (key, q) = accepted[0];
            self.reserve(t, order, key, q, true, None);
        } else {
            for (i, (key, q)) in accepted.iter().enumerate() {
                self.place(t, order, i as u32 + 1, *key, *q, true, true, None);
            }
        }
        for (key, _) in accepted {
            self.check_replenish(t, key);
        }
    }

    fn new_line(&mut self, order: u64, line_no: u32, key: u32, q: i64, state: LineState) -> u32 {
        self.lines.push(Line {
            order,
            line_no,
            key,
            quantity: q,
            state,
            reservation: 0,
        });
        self.orders += 1;
        (self.lines.len() - 1) as u32
    }

    /// The storefront's ORDER_PLACED for `line`, taken on its cached view.
    fn order_placed(&mut self, line: u32, t: Millis) -> InventoryEvent {
        let key = self.lines[line as usize].key;
        let q = self.lines[line as usize].quantity;
        let refs = self.line_refs(line, Some(self.sf_as_of(key)));
        self.event(
            Sys::Storefront,
            EventType::OrderPlaced,
            key,
            Measure::Committed,
            Mode::Delta,
            q,
            t,
            refs,
        )
    }

    /// A plain web order line: ORDER_PLACED now, then cancellation or allocation.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        t: Millis,
        order: u64,
        line_no: u32,
        key: u32,
        q: i64,
        may_cancel: bool,
        may_report: bool,
        duplicate_after: Option<Millis>,
    ) -> u32 {
        let line = self.new_line(order, line_no, key, q, LineState::Committed);
        let e = self.order_placed(line, t);
        if let Some(d) = duplicate_after {
            self.schedule(
                t + d,
                Action::Emit {
                    input: Box::new(ScenarioInput::Event(e.clone())),
                    on_hand: None,
                },
            );
        }
        self.emit(t, e);
        self.change(key, 0, 0, q);
        self.follow_up(t, line, may_cancel, may_report);
        line
    }

    /// A reservation-backed line: RESERVE now, COMMIT 1-5 min later, then ORDER_PLACED.
    fn reserve(
        &mut self,
        t: Millis,
        order: u64,
        key: u32,
        q: i64,
        may_cancel: bool,
        retry_after: Option<Millis>,
    ) {
        let line = self.new_line(order, 1, key, q, LineState::Reserved);
        self.reservation_ids += 1;
        self.lines[line as usize].reservation = self.reservation_ids;
        let c = self.command(CommandKind::Reserve, line, t);
        if let Some(d) = retry_after {
            self.schedule(
                t + d,
                Action::Emit {
                    input: Box::new(ScenarioInput::Command(c.clone())),
                    on_hand: None,
                },
            );
        }
        self.emit_command(t, c);
        self.km(key).reserved += q;
        let at = t + self.rng.range(MINUTE, 5 * MINUTE);
        self.schedule(at, Action::Commit { line, may_cancel });
    }

    fn commit(&mut self, t: Millis, line: u32, may_cancel: bool) {
        let c = self.command(CommandKind::Commit, line, t);
        self.emit_command(t, c);
        let (key, q) = (
            self.lines[line as usize].key,
            self.lines[line as usize].quantity,
        );
        self.km(key).reserved -= q;
        self.change(key, 0, 0, q);
        self.lines[line as usize].state = LineState::Committed;
        let at = t + self.rng.range(SECOND, 10 * SECOND);
        self.schedule(at, Action::PlaceCommitted { line, may_cancel });
    }

    fn follow_up(&mut self, t: Millis, line: u32, may_cancel: bool, may_report: bool) {
        if may_report && self.rng.chance(self.cfg.erp_report_permille) {
            self.erp_lines.push(line);
        }
        if may_cancel && self.rng.chance(self.cfg.cancel_permille) {
            let at = t + self.rng.range(2 * MINUTE, 30 * MINUTE);
            self.schedule(at, Action::Cancel(line));
        } else {
            let at = t + self.rng.range(5 * MINUTE, 60 * MINUTE);
            self.schedule(at, Action::Allocate(line));
        }
    }

    fn allocate(&mut self, t: Millis, line: u32) {
        let (key, q) = (
            self.lines[line as usize].key,
            self.lines[line as usize].quantity,
        );
        let refs = self.line_refs(line, None);
        let auth = self.authority(key);
        let e = self.event(
            auth,
            EventType::Allocation,
            key,
            Measure::Allocated,
            Mode::Delta,
            q,
            t,
            refs,
        );
        self.emit(t, e);
        self.change(key, 0, q, -q);
        self.lines[line as usize].state = LineState::Allocated;
        let at = t + self.rng.range(30 * MINUTE, 240 * MINUTE);
        self.schedule(at, Action::Ship(line));
    }

    fn ship(&mut self, t: Millis, line: u32) {
        let l = &self.lines[line as usize];
        let (key, q, order) = (l.key, l.quantity, l.order);
        let refs = self.line_refs(line, None);
        let auth = self.authority(key);
        let e = self.event(
            auth,
            EventType::Ship,
            key,
            Measure::OnHand,
            Mode::Delta,
            -q,
            t,
            refs,
        );
        self.emit(t, e);
        self.change(key, -q, -q, 0);
        self.lines[line as usize].state = LineState::Shipped;
        if self.is_dc(key) && self.rng.chance(self.cfg.return_permille) {
            let at = t + self.rng.range(DAY, 5 * DAY);
            self.schedule(
                at,
                Action::Return {
                    key,
                    quantity: q,
                    order,
                },
            );
        }
    }

    fn cancel(&mut self, t: Millis, line: u32) {
        let (key, q) = (
            self.lines[line as usize].key,
            self.lines[line as usize].quantity,
        );
        let refs = Refs {
            reason: Some("customer cancelled".to_owned()),
            ..self.line_refs(line, None)
        };
        let e = self.event(
            Sys::Storefront,
            EventType::OrderCancelled,
            key,
            Measure::Committed,
            Mode::Delta,
            -q,
            t,
            refs,
        );
        self.emit(t, e);
        self.change(key, 0, 0, -q);
        self.lines[line as usize].state = LineState::Cancelled;
    }

    fn store_arrival(&mut self, t: Millis) {
        let gap = self.store_gap();
        self.schedule(t + gap, Action::StoreArrival);
        let loc = self.cfg.dcs + self.rng.index(self.cfg.stores);
        let sku = self.sample_sku();
        let key = self.key(sku, loc);
        let q = match self.rng.below(100) {
            0..=79 => 1,
            80..=94 => 2,
            _ => 3,
        };
        // The store does not sell units promised to pick-up orders or held back.
        if !self.is_quiet(key, t, t) || self.k(key).sellable() < q {
            return;
        }
        let e = self.event(
            Sys::Pos,
            EventType::Ship,
            key,
            Measure::OnHand,
            Mode::Delta,
            -q,
            t,
            Refs::default(),
        );
        self.emit(t, e);
        self.change(key, -q, 0, 0);
        self.check_replenish(t, key);
    }

    // --- supply ---

    fn check_replenish(&mut self, t: Millis, key: u32) {
        let k = self.k(key);
        if k.replenishing || k.available() >= k.reorder_point || self.cfg.dcs == 0 {
            return;
        }
        self.km(key).replenishing = true;
        if self.is_dc(key) {
            let at = t + self.rng.range(4 * HOUR, 12 * HOUR);
            self.schedule(at, Action::Receipt(key));
        } else {
            let store_idx = self.loc_of(key) - self.cfg.dcs;
            let dc = self.key(self.sku_of(key), store_idx % self.cfg.dcs.max(1));
            let at = t + self.rng.range(30 * MINUTE, 120 * MINUTE);
            self.schedule(at, Action::TransferOut { dc, store: key });
        }
    }

    /// A WMS receipt of `q` units with a new purchase order.
    fn receipt(&mut self, t: Millis, key: u32, q: i64) -> InventoryEvent {
        self.po_ids += 1;
        let refs = Refs {
            po_ref: Some(format!("PO-{:08}", self.po_ids)),
            ..Refs::default()
        };
        self.event(
            Sys::Wms,
            EventType::Receipt,
            key,
            Measure::OnHand,
            Mode::Delta,
            q,
            t,
            refs,
        )
    }

    fn replenishment_receipt(&mut self, t: Millis, key: u32) {
        if !self.is_quiet(key, t, t) {
            self.schedule(t + 30 * MINUTE, Action::Receipt(key));
            return;
        }
        let k = self.k(key);
        let q = (k.target - k.available()).max(k.target / 4).max(1);
        let e = self.receipt(t, key, q);
        self.emit(t, e);
        self.change(key, q, 0, 0);
        self.km(key).replenishing = false;
    }

    fn transfer_out(&mut self, t: Millis, dc: u32, store: u32) {
        let in_at = t + self.rng.range(2 * HOUR, TRANSFER_IN_MAX_MS);
        if !self.is_quiet(dc, t, t) || !self.is_quiet(store, t, in_at) {
            self.schedule(t + 30 * MINUTE, Action::TransferOut { dc, store });
            return;
        }
        let s = self.k(store);
        let want = s.target - s.available();
        let q = want.min(self.k(dc).sellable());
        if q <= 0 {
            self.km(store).replenishing = false;
            return;
        }
        self.shipment_ids += 1;
        let shipment = self.shipment_ids;
        let refs = Refs {
            shipment_ref: Some(format!("TR-{shipment:08}")),
            ..Refs::default()
        };
        let e = self.event(
            Sys::Wms,
            EventType::TransferOut,
            dc,
            Measure::OnHand,
            Mode::Delta,
            -q,
            t,
            refs,
        );
        self.emit(t, e);
        self.change(dc, -q, 0, 0);
        self.schedule(
            in_at,
            Action::TransferIn {
                store,
                quantity: q,
                shipment,
            },
        );
        self.check_replenish(t, dc);
    }

    fn cycle_count(&mut self, t: Millis, key: u32) {
        let every = self.cfg.cycle_count_every_ms.max(HOUR);
        let next = t + self.rng.range(every - every / 6, every + every / 6);
        self.schedule(next, Action::CycleCount(key));
        if !self.is_quiet(key, t, t) {
            return;
        }
        // Shrinkage happened silently since the last count; only unpromised units go missing.
        let spare = self.k(key).sellable().max(0);
        let shrink = if self.rng.chance(self.cfg.shrink_permille) {
            self.rng.range(1, 3).min(spare)
        } else {
            0
        };
        let counted = self.k(key).on_hand - shrink;
        let auth = self.authority(key);
        let e = self.event(
            auth,
            EventType::CycleCount,
            key,
            Measure::OnHand,
            Mode::Absolute,
            counted,
            t,
            Refs::default(),
        );
        self.emit(t, e);
        if shrink > 0 {
            self.change(key, -shrink, 0, 0);
            self.check_replenish(t, key);
        }
    }

    // --- the ERP and the storefront ---

    fn erp_batch(&mut self, t: Millis) {
        self.schedule(t + BATCH_MS, Action::ErpBatch);
        let mut dirty = std::mem::take(&mut self.erp_dirty);
        dirty.sort_unstable();
        let mut snapshots = Vec::new();
        for key in dirty {
            let skipped = self
                .erp_skip
                .get(&key)
                .is_some_and(|(from, to)| t > *from && t <= *to);
            if skipped {
                self.erp_dirty.push(key);
                continue;
            }
            let k = self.km(key);
            k.erp_dirty = false;
            if k.on_hand != k.erp_known {
                snapshots.push((key, k.on_hand));
            }
        }
        // An order the ERP already saw cancelled is not reported.
        let lines: Vec<u32> = std::mem::take(&mut self.erp_lines);
        if !snapshots.is_empty() || !lines.is_empty() {
            self.schedule(
                t + ERP_PUBLISH_LAG_MS,
                Action::ErpPublish {
                    as_of: t,
                    snapshots,
                    lines,
                },
            );
        }
    }

    fn erp_publish(
        &mut self,
        t: Millis,
        as_of: Millis,
        snapshots: Vec<(u32, i64)>,
        lines: Vec<u32>,
    ) {
        for (key, v) in snapshots {
            let refs = Refs {
                data_as_of: Some(as_of),
                ..Refs::default()
            };
            let e = self.event(
                Sys::Erp,
                EventType::Snapshot,
                key,
                Measure::OnHand,
                Mode::Absolute,
                v,
                t,
                refs,
            );
            self.emit(t, e);
            self.km(key).erp_known = v;
        }
        for line in lines {
            let l = &self.lines[line as usize];
            if l.state == LineState::Cancelled {
                continue;
            }
            let (key, q) = (l.key, l.quantity);
            let refs = self.line_refs(line, None);
            let e = self.event(
                Sys::Erp,
                EventType::OrderPlaced,
                key,
                Measure::Committed,
                Mode::Delta,
                q,
                t,
                refs,
            );
            self.emit(t, e);
        }
    }

    fn refresh(&mut self, t: Millis) {
        self.schedule(t + CACHE_REFRESH_MS, Action::Refresh);
        self.sf_last_refresh = t;
        let mut dirty = std::mem::take(&mut self.sf_dirty);
        dirty.sort_unstable();
        for key in dirty {
            if self.sf_frozen.contains_key(&key) {
                self.sf_dirty.push(key);
                continue;
            }
            let k = self.km(key);
            k.sf_dirty = false;
            let shown = k.available().max(0);
            if shown == k.sf_shown {
                continue;
            }
            k.sf_shown = shown;
            let refs = Refs {
                data_as_of: Some(t),
                ..Refs::default()
            };
            let e = self.event(
                Sys::Storefront,
                EventType::Snapshot,
                key,
                Measure::Available,
                Mode::Absolute,
                shown,
                t,
                refs,
            );
            self.emit(t, e);
        }
    }

    // --- faults ---

    fn plan_faults(&mut self) {
        let cfg = self.cfg;
        let n = cfg.faults_per_kind;
        let span = cfg.duration_ms - FAULT_HEAD_MS - FAULT_TAIL_MS;
        if n == 0 || span < 3 * HOUR || cfg.dcs == 0 || cfg.skus == 0 {
            return;
        }
        let total = FaultKind::ALL.len() * n;
        let dc_keys = cfg.skus * cfg.dcs;
        let store_keys = cfg.skus * cfg.stores;
        if dc_keys < total {
            return;
        }
        let mut used = BTreeSet::new();
        for j in 0..total {
            let kind = FaultKind::ALL[j % FaultKind::ALL.len()];
            let base = cfg.start_ms + FAULT_HEAD_MS + span * (j as i64 + 1) / (total as i64 + 1);
            let key = loop {
                let sku = self.rng.index(cfg.skus);
                let loc = if kind == FaultKind::ManualErpCorrection && store_keys > n {
                    cfg.dcs + self.rng.index(cfg.stores)
                } else {
                    self.rng.index(cfg.dcs)
                };
                let key = self.key(sku, loc);
                if used.insert(key) {
                    break key;
                }
            };
            self.plan_fault(kind, key, base);
        }
    }

    fn align_down(&self, t: Millis, every: Millis) -> Millis {
        let s = self.cfg.start_ms;
        s + (t - s) / every * every
    }

    fn plan_fault(&mut self, kind: FaultKind, key: u32, base: Millis) {
        let fault = self.faults.len();
        let quiet = |g: &mut Gen<'_>, from: Millis, to: Millis| {
            g.quiet.entry(key).or_default().push((from, to));
        };
        let at = match kind {
            FaultKind::MissedErpBatch => {
                let last = self.align_down(base, BATCH_MS);
                let first = last + 2 * MINUTE;
                self.erp_skip.insert(key, (last, last + MISSED_SYNC_MS));
                let resumed = last + MISSED_SYNC_MS + BATCH_MS + ERP_PUBLISH_LAG_MS;
                quiet(self, last - FAULT_MARGIN_MS, resumed + FAULT_MARGIN_MS);
                for (i, dt) in [0, 40 * MINUTE, 80 * MINUTE].into_iter().enumerate() {
                    self.schedule(
                        first + dt,
                        Action::Fault(FaultStep::MissedSyncReceipt {
                            fault,
                            key,
                            first: i == 0,
                        }),
                    );
                }
                first
            }
            FaultKind::ManualErpCorrection => {
                let batch = self.align_down(base, BATCH_MS);
                let adjust = batch + ERP_PUBLISH_LAG_MS + MINUTE;
                let seen = BTreeSet::from([self.k(key).on_hand]);
                self.on_hand_seen.insert(key, seen);
                quiet(
                    self,
                    batch - FAULT_MARGIN_MS,
                    batch + BATCH_MS + ERP_PUBLISH_LAG_MS + FAULT_MARGIN_MS,
                );
                self.schedule(
                    adjust,
                    Action::Fault(FaultStep::ManualCorrection { fault, key }),
                );
                adjust
            }
            FaultKind::StaleCacheOversell => {
                let as_of = self.align_down(base, CACHE_REFRESH_MS);
                let b2b = as_of + MINUTE;
                let cancel = b2b + 15 * MINUTE + HOUR;
                quiet(self, as_of - FAULT_MARGIN_MS, cancel + FAULT_MARGIN_MS);
                self.schedule(
                    as_of - 4 * MINUTE,
                    Action::Fault(FaultStep::StalePrep { key }),
                );
                self.schedule(
                    b2b,
                    Action::Fault(FaultStep::StaleB2b { fault, key, as_of }),
                );
                b2b
            }
            FaultKind::DuplicatedOrder => {
                self.schedule(base, Action::Fault(FaultStep::DuplicatedOrder { key }));
                base
            }
            FaultKind::ReorderedDelta => {
                quiet(self, base - FAULT_MARGIN_MS, base + FAULT_MARGIN_MS);
                self.schedule(base, Action::Fault(FaultStep::ReorderedDelta { key }));
                base
            }
            FaultKind::RetriedReservation => {
                self.schedule(base, Action::Fault(FaultStep::RetriedReservation { key }));
                base
            }
        };
        self.faults.push(InjectedFault {
            fault: kind,
            sku: self.sku_names[self.sku_of(key)].clone(),
            location: self.loc_names[self.loc_of(key)].clone(),
            at,
            expected: Vec::new(),
        });
    }

    fn expect(&mut self, fault: usize, kind: AlertKind, system: Sys, root: &str) {
        if let Some(f) = self.faults.get_mut(fault) {
            f.expected.push(ExpectedAlert {
                kind,
                system: system.name().to_owned(),
                root_event_id: root.to_owned(),
            });
        }
    }

    /// Makes sure at least `q` units are sellable at a DC key, with a receipt if needed.
    fn top_up(&mut self, t: Millis, key: u32, q: i64) {
        let sellable = self.k(key).sellable();
        if sellable < q {
            let add = q - sellable + 10;
            let e = self.receipt(t, key, add);
            self.emit(t, e);
            self.change(key, add, 0, 0);
        }
    }

    fn fault_step(&mut self, t: Millis, step: FaultStep) {
        match step {
            FaultStep::MissedSyncReceipt { fault, key, first } => {
                let q = self.rng.range(10, 40);
                let e = self.receipt(t, key, q);
                if first {
                    let id = e.event_id.clone();
                    self.expect(fault, AlertKind::Drift, Sys::Erp, &id);
                }
                self.emit(t, e);
                self.change(key, q, 0, 0);
            }
            FaultStep::ManualCorrection { fault, key } => {
                let mut v = self.k(key).on_hand + MANUAL_CORRECTION_UNITS;
                while self.on_hand_seen.get(&key).is_some_and(|s| s.contains(&v)) {
                    v += 1;
                }
                let refs = Refs {
                    reason: Some("manual correction".to_owned()),
                    ..Refs::default()
                };
                let e = self.event(
                    Sys::Erp,
                    EventType::Adjustment,
                    key,
                    Measure::OnHand,
                    Mode::Absolute,
                    v,
                    t,
                    refs,
                );
                let id = e.event_id.clone();
                self.expect(fault, AlertKind::UnpropagatedChange, Sys::Erp, &id);
                self.emit(t, e);
                // The ERP now believes `v`: its next batch restores the truth.
                let k = self.km(key);
                k.erp_known = v;
                if !k.erp_dirty {
                    k.erp_dirty = true;
                    self.erp_dirty.push(key);
                }
            }
            FaultStep::StalePrep { key } => self.top_up(t, key, 10),
            FaultStep::StaleB2b { fault, key, as_of } => {
                // The cache stops here, holding what it showed at `as_of`.
                self.sf_frozen.insert(key, as_of);
                let cached = self.k(key).sf_shown;
                let sellable = self.k(key).sellable();
                let rest = self.rng.range(0, 1);
                let b2b = sellable - rest;
                if b2b < 1 || cached <= rest {
                    return;
                }
                let refs = Refs {
                    reason: Some("B2B allocation".to_owned()),
                    ..Refs::default()
                };
                let e = self.event(
                    Sys::Wms,
                    EventType::Allocation,
                    key,
                    Measure::Allocated,
                    Mode::Delta,
                    b2b,
                    t,
                    refs,
                );
                let id = e.event_id.clone();
                // One alert per action: the order was covered by what the cache showed and
                // the allocation it missed took that away, so STALE_ACTION, not OVERSELL too.
                for kind in [AlertKind::StaleAction, AlertKind::PhantomAvailability] {
                    self.expect(fault, kind, Sys::Storefront, &id);
                }
                self.emit(t, e);
                self.change(key, 0, b2b, 0);
                // Within what the stale cache shows, beyond what is sellable.
                let q = self.rng.range(rest + 1, cached.min(rest + 3));
                self.schedule(
                    t + 15 * MINUTE,
                    Action::Fault(FaultStep::StaleOrder {
                        key,
                        quantity: q,
                        as_of,
                    }),
                );
            }
            FaultStep::StaleOrder {
                key,
                quantity,
                as_of,
            } => {
                self.order_ids += 1;
                let order = self.order_ids;
                let line = self.new_line(order, 1, key, quantity, LineState::Committed);
                let refs = self.line_refs(line, Some(as_of));
                let e = self.event(
                    Sys::Storefront,
                    EventType::OrderPlaced,
                    key,
                    Measure::Committed,
                    Mode::Delta,
                    quantity,
                    t,
                    refs,
                );
                self.emit(t, e);
                self.change(key, 0, 0, quantity);
                self.schedule(t + HOUR, Action::Fault(FaultStep::StaleCancel { line }));
            }
            FaultStep::StaleCancel { line } => {
                self.cancel(t, line);
                let key = self.lines[line as usize].key;
                // The cache resumes at its next refresh.
                self.sf_frozen.remove(&key);
            }
            FaultStep::DuplicatedOrder { key } => {
                self.top_up(t, key, 1);
                self.order_ids += 1;
                let order = self.order_ids;
                self.place(t, order, 1, key, 1, false, false, Some(2 * HOUR));
            }
            FaultStep::ReorderedDelta { key } => {
                let (qa, qb) = (self.rng.range(5, 30), self.rng.range(5, 30));
                let a = self.receipt(t, key, qa);
                let b = self.receipt(t + 30 * SECOND, key, qb);
                self.schedule(
                    t + MINUTE,
                    Action::Emit {
                        input: Box::new(ScenarioInput::Event(b)),
                        on_hand: Some((key, qb)),
                    },
                );
                self.schedule(
                    t + MINUTE + 15 * SECOND,
                    Action::Emit {
                        input: Box::new(ScenarioInput::Event(a)),
                        on_hand: Some((key, qa)),
                    },
                );
            }
            FaultStep::RetriedReservation { key } => {
                self.top_up(t, key, 1);
                self.order_ids += 1;
                let order = self.order_ids;
                self.reserve(t, order, key, 1, false, Some(HOUR));
            }
        }
    }
}

fn order_ref(order: u64) -> String {
    format!("WEB-{order:08}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{type_rule, Sign};
    use crate::model::{CascadeConfig, Model};

    fn small() -> Generated {
        generate(&RetailConfig::small())
    }

    #[test]
    fn retail_same_seed_same_output() {
        let cfg = RetailConfig::small();
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.truth, b.truth);
        assert_eq!(a.faults, b.faults);
        assert_eq!(a.orders, b.orders);
    }

    #[test]
    fn retail_different_seed_different_output() {
        let a = small();
        let b = generate(&RetailConfig {
            seed: 7,
            ..RetailConfig::small()
        });
        assert_ne!(a.inputs, b.inputs);
        assert_ne!(a.truth, b.truth);
    }

    #[test]
    fn retail_inputs_sorted_and_sized() {
        let cfg = RetailConfig::small();
        let g = generate(&cfg);
        assert!(g.inputs.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(g
            .inputs
            .iter()
            .all(|(t, _)| *t >= cfg.start_ms && *t < cfg.end_ms()));
        let n = g.inputs.len();
        assert!((30_000..=60_000).contains(&n), "{n} inputs");
        assert_eq!(g.truth.len(), cfg.skus * (cfg.dcs + cfg.stores));
        assert!(g.orders > 1_000, "{} orders", g.orders);
        let commands = g
            .inputs
            .iter()
            .filter(|(_, i)| matches!(i, ScenarioInput::Command(_)))
            .count();
        assert!(commands > 100, "{commands} commands");
    }

    /// Every event is valid by the type table and by the fold's validator.
    #[test]
    fn retail_events_are_valid() {
        // The generator's systems, with single authorities (the per-location rule is the
        // processor's business; validation does not depend on it).
        let cfg: CascadeConfig = toml::from_str(
            r#"
            [[systems]]
            name = "wms"
            input_topic = "w"
            propagation_topic = "wp"
            [[systems]]
            name = "pos"
            input_topic = "p"
            propagation_topic = "pp"
            [[systems]]
            name = "erp"
            input_topic = "e"
            propagation_topic = "ep"
            [[systems]]
            name = "storefront"
            input_topic = "s"
            propagation_topic = "sp"
            customer_facing = true
            [measures.on_hand]
            authority = "wms"
            [measures.allocated]
            authority = "wms"
            [measures.committed]
            authority = "breakwater"
            [measures.safety_stock]
            authority = "erp"
            "#,
        )
        .unwrap();
        let model = Model::build(&cfg).unwrap();
        let g = small();
        for (_, input) in &g.inputs {
            match input {
                ScenarioInput::Event(e) => {
                    let rule = type_rule(e.event_type);
                    assert!(rule.measures.contains(&e.measure), "{e:?}");
                    match e.mode {
                        Mode::Delta => match rule.delta {
                            Some(Sign::Positive) => assert!(e.quantity > 0, "{e:?}"),
                            Some(Sign::Negative) => assert!(e.quantity < 0, "{e:?}"),
                            Some(Sign::Any) => assert!(e.quantity != 0, "{e:?}"),
                            None => panic!("DELTA not allowed: {e:?}"),
                        },
                        Mode::Absolute => {
                            assert!(rule.absolute, "{e:?}");
                            assert!(e.quantity >= 0, "{e:?}");
                        }
                    }
                    assert!(crate::fold::validate(&model, e).is_ok(), "{e:?}");
                    let auth = if e.location.starts_with("DC-") {
                        "wms"
                    } else {
                        "pos"
                    };
                    if e.system == "wms" || e.system == "pos" {
                        assert_eq!(e.system, auth, "{e:?}");
                        assert!(e.source_seq.is_some(), "{e:?}");
                    } else {
                        assert!(e.source_seq.is_none(), "{e:?}");
                    }
                }
                ScenarioInput::Command(c) => {
                    assert!(!c.command_id.is_empty() && !c.reservation_id.is_empty());
                    assert_eq!(c.channel, "storefront");
                    if c.command == CommandKind::Reserve {
                        assert!(c.quantity > 0);
                        assert_eq!(c.ttl_ms, Some(RESERVATION_TTL_MS));
                    } else {
                        assert!(c.order_ref.is_some() && c.line_ref.is_some());
                    }
                }
            }
        }
    }

    /// `source_seq` rises per (system, key) in publication order, except for the swapped
    /// receipts of a ReorderedDelta.
    #[test]
    fn retail_source_seq_monotonic() {
        let g = small();
        let mut last: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
        let mut late = 0;
        for (_, input) in &g.inputs {
            if let ScenarioInput::Event(e) = input {
                if let Some(s) = e.source_seq {
                    let prev = last.entry((&e.system, &e.sku, &e.location)).or_insert(0);
                    if s < *prev {
                        late += 1;
                        assert_eq!(s, *prev - 1, "{e:?}");
                    } else {
                        *prev = s;
                    }
                }
            }
        }
        let reordered = g
            .faults
            .iter()
            .filter(|f| f.fault == FaultKind::ReorderedDelta)
            .count();
        assert_eq!(late, reordered);
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum ReplayLine {
        Committed(i64),
        Allocated(i64),
        Closed,
    }

    /// An independent replay with the ledger's semantics, from the events alone.
    fn replay(inputs: &[(Millis, ScenarioInput)]) -> BTreeMap<(String, String), Truth> {
        let mut truth: BTreeMap<(String, String), Truth> = BTreeMap::new();
        let mut lines: BTreeMap<(String, String, String, String), ReplayLine> = BTreeMap::new();
        let mut holds: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
        for (_, input) in inputs {
            match input {
                ScenarioInput::Event(e) => {
                    let key = (e.sku.clone(), e.location.clone());
                    if !seen.insert((e.sku.clone(), e.location.clone(), e.event_id.clone())) {
                        continue;
                    }
                    let t = truth.entry(key).or_default();
                    let auth = if e.location.starts_with("STORE-") {
                        "pos"
                    } else {
                        "wms"
                    };
                    let line = e.order_ref.as_ref().map(|o| {
                        (
                            e.sku.clone(),
                            e.location.clone(),
                            o.clone(),
                            e.line_ref.clone().unwrap_or_default(),
                        )
                    });
                    match (e.measure, e.event_type) {
                        (Measure::Committed, EventType::OrderPlaced) => {
                            let l = line.unwrap();
                            if let std::collections::btree_map::Entry::Vacant(v) = lines.entry(l) {
                                v.insert(ReplayLine::Committed(e.quantity));
                                t.committed += e.quantity;
                            }
                        }
                        (Measure::Committed, EventType::OrderCancelled) => {
                            let l = line.unwrap();
                            if let Some(ReplayLine::Committed(q)) = lines.get(&l).copied() {
                                t.committed -= q;
                                lines.insert(l, ReplayLine::Closed);
                            }
                        }
                        (Measure::SafetyStock, _) if e.system == "erp" => {
                            t.safety_stock = e.quantity;
                        }
                        (Measure::OnHand | Measure::Allocated, _) if e.system == auth => {
                            if e.measure == Measure::Allocated && e.mode == Mode::Delta {
                                if let Some(l) = &line {
                                    if let Some(ReplayLine::Committed(q)) = lines.get(l).copied() {
                                        t.committed -= q;
                                    }
                                    lines.insert(l.clone(), ReplayLine::Allocated(e.quantity));
                                }
                            }
                            if e.measure == Measure::OnHand && e.event_type == EventType::Ship {
                                if let Some(l) = &line {
                                    if let Some(ReplayLine::Allocated(q)) = lines.get(l).copied() {
                                        t.allocated -= q;
                                    }
                                    lines.insert(l.clone(), ReplayLine::Closed);
                                }
                            }
                            let v = if e.measure == Measure::OnHand {
                                &mut t.on_hand
                            } else {
                                &mut t.allocated
                            };
                            match e.mode {
                                Mode::Absolute => *v = e.quantity,
                                Mode::Delta => *v += e.quantity,
                            }
                        }
                        // Other systems' views do not change the truth.
                        _ => {}
                    }
                }
                ScenarioInput::Command(c) => {
                    if !seen.insert((c.sku.clone(), c.location.clone(), c.command_id.clone())) {
                        continue;
                    }
                    let hold = (c.sku.clone(), c.location.clone(), c.reservation_id.clone());
                    match c.command {
                        CommandKind::Reserve => {
                            holds.insert(hold, c.quantity);
                        }
                        CommandKind::Commit => {
                            let q = holds.remove(&hold).unwrap();
                            let t = truth
                                .entry((c.sku.clone(), c.location.clone()))
                                .or_default();
                            t.committed += q;
                            let l = (
                                c.sku.clone(),
                                c.location.clone(),
                                c.order_ref.clone().unwrap(),
                                c.line_ref.clone().unwrap_or_default(),
                            );
                            assert!(lines.insert(l, ReplayLine::Committed(q)).is_none());
                        }
                        CommandKind::Release => {
                            holds.remove(&hold);
                        }
                    }
                }
            }
        }
        truth
    }

    #[test]
    fn retail_replay_reaches_truth() {
        for faults in [true, false] {
            let g = generate(&RetailConfig {
                faults,
                ..RetailConfig::small()
            });
            let replayed = replay(&g.inputs);
            assert_eq!(replayed.len(), g.truth.len());
            let mut wrong = Vec::new();
            for (k, want) in &g.truth {
                if replayed.get(k) != Some(want) {
                    wrong.push((k.clone(), *want, replayed.get(k).copied()));
                }
            }
            assert!(
                wrong.is_empty(),
                "{} keys differ: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(5)]
            );
            for t in g.truth.values() {
                assert!(
                    t.on_hand >= 0 && t.allocated >= 0 && t.committed >= 0,
                    "{t:?}"
                );
            }
        }
    }

    #[test]
    fn retail_faults_present_only_when_asked() {
        let cfg = RetailConfig::small();
        let g = generate(&cfg);
        for kind in FaultKind::ALL {
            let of_kind: Vec<_> = g.faults.iter().filter(|f| f.fault == kind).collect();
            assert_eq!(of_kind.len(), cfg.faults_per_kind, "{kind:?}");
            let want = match kind {
                FaultKind::MissedErpBatch | FaultKind::ManualErpCorrection => 1,
                FaultKind::StaleCacheOversell => 2,
                _ => 0,
            };
            for f in of_kind {
                assert_eq!(f.expected.len(), want, "{f:?}");
                // Every root is a published event at the fault's key.
                for e in &f.expected {
                    let root = g.inputs.iter().find_map(|(t, i)| match i {
                        ScenarioInput::Event(ev) if ev.event_id == e.root_event_id => Some((t, ev)),
                        _ => None,
                    });
                    let (t, ev) = root.unwrap_or_else(|| panic!("no root for {f:?}"));
                    assert_eq!((&ev.sku, &ev.location, *t), (&f.sku, &f.location, f.at));
                }
            }
        }
        let keys: BTreeSet<_> = g.faults.iter().map(|f| (&f.sku, &f.location)).collect();
        assert_eq!(keys.len(), g.faults.len(), "faults share a key");
        // The re-published inputs are there.
        let dup_events = g.inputs.len()
            - g.inputs
                .iter()
                .map(|(_, i)| match i {
                    ScenarioInput::Event(e) => e.event_id.clone(),
                    ScenarioInput::Command(c) => c.command_id.clone(),
                })
                .collect::<BTreeSet<_>>()
                .len();
        assert_eq!(dup_events, 2 * cfg.faults_per_kind);

        let clean = generate(&RetailConfig {
            faults: false,
            ..cfg
        });
        assert!(clean.faults.is_empty());
        assert!(clean.inputs.iter().all(|(_, i)| match i {
            ScenarioInput::Event(e) => e.event_type != EventType::Adjustment,
            ScenarioInput::Command(_) => true,
        }));
    }

    #[test]
    fn retail_score_counts_matches() {
        let g = small();
        let f = g
            .faults
            .iter()
            .find(|f| f.fault == FaultKind::StaleCacheOversell)
            .unwrap();
        let alert = |kind, root: &str| ScoredAlert {
            kind,
            system: "storefront".into(),
            sku: f.sku.clone(),
            location: f.location.clone(),
            root_event_id: root.into(),
        };
        let root = f.expected[0].root_event_id.clone();
        let alerts = vec![
            alert(AlertKind::StaleAction, &root),
            alert(AlertKind::StaleAction, &root),
            alert(AlertKind::PhantomAvailability, &root),
            alert(AlertKind::Drift, &root),
        ];
        let s = score(&g.faults, &alerts);
        let expected: usize = g.faults.iter().map(|f| f.expected.len()).sum();
        assert_eq!(s.true_positives, 3);
        assert_eq!(s.false_positives, 1);
        assert_eq!(s.expected, expected);
        assert_eq!(s.false_negatives, expected - 2);
        assert_eq!(s.unmatched.len(), 1 + expected - 2);
        assert!((s.precision() - 0.75).abs() < 1e-9);
        let perfect = score(&[], &[]);
        assert_eq!((perfect.precision(), perfect.recall()), (1.0, 1.0));
    }

    /// The config's handoff windows are the generator's.
    #[test]
    fn retail_config_windows_match() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/retail/breakwater.toml");
        let v: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let handoffs = v["handoffs"].as_array().unwrap();
        let window = |from: &str, to: &str| {
            handoffs
                .iter()
                .find(|h| h["from"].as_str() == Some(from) && h["to"].as_str() == Some(to))
                .and_then(|h| h["window_ms"].as_integer())
        };
        for from in ["wms", "pos"] {
            assert_eq!(window(from, "erp"), Some(ERP_WINDOW_MS));
        }
        for from in ["wms", "pos", "erp", "breakwater"] {
            assert_eq!(window(from, "storefront"), Some(STOREFRONT_WINDOW_MS));
        }
    }
}
