//! Incidents: the alerts of one root cause on one handoff, grouped, so that one missed ERP
//! batch is one page rather than one alert per SKU.
//!
//! An incident is named by its alert kind, its handoff (`origin->system`) and the window-long
//! interval its divergences began in ([`crate::scenario::incident_id`]); every alert carries
//! that id. A partition's [`IncidentBook`] follows the incidents its alerts belong to and
//! reports them (OPENED on the first alert, UPDATED as the count doubles, RESOLVED once no
//! alert of it is open and an interval has passed since its own ended, so that every alert it
//! will ever group has been raised and it does not flap). It also applies the per-kind rate limits. Everything is a function of the
//! alerts and of stream time, so replays report the same incidents.
//!
//! Keys are partitioned, so one incident can span partitions: each partition reports its share
//! under the same incident id, and [`IncidentView`] merges the shares (what a consumer of the
//! incidents topic does, keyed by incident id).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Millis;
use crate::id::fingerprint;
use crate::model::{Model, SysId};
use crate::output::{Alert, AlertKind, RootCause};

/// The interval incidents group alerts by when an alert has no window of its own (one-shot
/// kinds: STALE_ACTION, STALE_VIEW, OVERSELL, UNPROPAGATED_CHANGE).
pub const INCIDENT_INTERVAL_MS: u64 = 900_000;

/// Keys named in an incident report.
pub const SAMPLE_KEYS: usize = 8;

/// Distinct keys counted exactly per incident and partition; beyond this, every further alert
/// on a key not among the first ones counts as a new key.
pub const TRACKED_KEYS: usize = 4_096;

/// One minute, the rate limits' unit.
const MINUTE_MS: Millis = 60_000;

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IncidentStatus {
    /// Its first alert.
    Opened,
    /// More alerts: reported as the count reaches 2, 4, 8, ..., and once with the final count
    /// when the interval (plus one of grace) is over and alerts are still open.
    Updated,
    /// Closed: an interval after its own ended, with every windowed alert resolved.
    Resolved,
}

impl IncidentStatus {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Opened => "OPENED",
            IncidentStatus::Updated => "UPDATED",
            IncidentStatus::Resolved => "RESOLVED",
        }
    }
}

/// One partition's share of an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The alert kind (never RESOLVED).
    pub kind: AlertKind,
    /// Where the root changes entered the cascade.
    pub origin: SysId,
    /// The system that diverged, acted or oversold.
    pub system: SysId,
    /// Start of the interval the divergences began in.
    pub start: Millis,
    /// The interval's length: the handoff's window, or [`INCIDENT_INTERVAL_MS`].
    pub interval_ms: u64,
    /// The first alert's opening time.
    pub first_seen: Millis,
    /// The latest alert (or RESOLVED) time.
    pub last_seen: Millis,
    /// Alerts raised, published or suppressed.
    pub alerts: u64,
    /// Alerts not published because of the kind's rate limit.
    pub suppressed: u64,
    /// Windowed alerts not yet resolved.
    pub open: u64,
    /// Distinct keys with an alert (see [`TRACKED_KEYS`]).
    pub keys_affected: u64,
    /// The first keys affected, `sku|location`.
    pub sample: Vec<String>,
    /// The first alert's root cause.
    pub root: RootCause,
    /// Sorted fingerprints of the keys counted.
    keys: Vec<u64>,
    /// The alert count at which the next UPDATED is reported.
    next_report: u64,
    /// The alert count of the last report.
    reported: u64,
    /// Its interval (plus one of grace) is over: no alert will join it any more.
    settled: bool,
}

impl Incident {
    /// Its id, shared by every alert it groups ([`crate::scenario::incident_id`]).
    pub fn id(&self, model: &Model) -> String {
        crate::scenario::incident_id_of(model, self.kind, self.origin, self.system, self.start)
    }

    /// When the incident can close: an interval after its own ended. Every alert of it has
    /// opened by then (a windowed alert opens a window after its divergence began; a stale
    /// action may trace to a change late in the interval), so a closed incident does not
    /// reopen. A windowed incident also waits for its last alert to resolve.
    fn closes_at(&self) -> Millis {
        let interval = i64::try_from(self.interval_ms).unwrap_or(i64::MAX);
        self.start.saturating_add(interval.saturating_mul(2))
    }

    fn can_close(&self, now: Millis) -> bool {
        self.open == 0 && self.closes_at() <= now
    }

    fn matches(&self, kind: AlertKind, a: &Alert, start: Millis) -> bool {
        self.kind == kind
            && self.origin == a.origin
            && self.system == a.system
            && self.start == start
    }
}

/// An incident report: what the incidents topic carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentReport {
    /// What happened to it.
    pub status: IncidentStatus,
    /// Stream time of the report.
    pub at: Millis,
    /// The partition's share, as of the report.
    pub incident: Incident,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Limit {
    kind: AlertKind,
    origin: SysId,
    system: SysId,
    minute: Millis,
    published: u32,
}

/// A partition's open incidents and rate-limit counters. Kept with the partition's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentBook {
    open: Vec<Incident>,
    limits: Vec<Limit>,
    /// The earliest `closes_at` of the open one-shot incidents (`Millis::MAX` if none).
    next_close: Option<Millis>,
}

/// The interval start and length of the incident `a` belongs to.
pub fn incident_interval(a: &Alert) -> (Millis, u64) {
    let interval = if a.window_ms > 0 {
        a.window_ms
    } else {
        INCIDENT_INTERVAL_MS
    };
    let len = i64::try_from(interval).unwrap_or(i64::MAX);
    (a.diverged_at - a.diverged_at.rem_euclid(len), interval)
}

impl IncidentBook {
    /// An empty book.
    pub fn new() -> IncidentBook {
        IncidentBook::default()
    }

    /// Open incidents.
    pub fn open(&self) -> &[Incident] {
        &self.open
    }

    /// Whether nothing is open and no rate limit is counting.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.limits.is_empty()
    }

    /// Books alert `a`, raised on `key` at stream time `now`; appends the reports it causes to
    /// `reports`. Returns whether the alert is published (false: the kind's rate limit for its
    /// handoff is spent this minute).
    pub fn on_alert(
        &mut self,
        model: &Model,
        key: &str,
        a: &Alert,
        now: Millis,
        reports: &mut Vec<IncidentReport>,
    ) -> bool {
        let (start, interval_ms) = incident_interval(a);
        if a.kind == AlertKind::Resolved {
            let Some(kind) = a.resolves else {
                return true;
            };
            if let Some(i) = self.open.iter().position(|x| x.matches(kind, a, start)) {
                let inc = &mut self.open[i];
                inc.open = inc.open.saturating_sub(1);
                inc.last_seen = inc.last_seen.max(now);
                if inc.can_close(now) {
                    let incident = self.open.remove(i);
                    reports.push(IncidentReport {
                        status: IncidentStatus::Resolved,
                        at: now,
                        incident,
                    });
                } else if inc.open == 0 {
                    let t = inc.closes_at();
                    self.next_close = Some(self.next_close.map_or(t, |n| n.min(t)));
                }
            }
            return true;
        }
        let publish = self.admit(model, a, now);
        let i = match self.open.iter().position(|x| x.matches(a.kind, a, start)) {
            Some(i) => i,
            None => {
                self.open.push(Incident {
                    kind: a.kind,
                    origin: a.origin,
                    system: a.system,
                    start,
                    interval_ms,
                    first_seen: a.opened_at,
                    last_seen: a.opened_at,
                    alerts: 0,
                    suppressed: 0,
                    open: 0,
                    keys_affected: 0,
                    sample: Vec::new(),
                    root: a.root,
                    keys: Vec::new(),
                    next_report: 2,
                    reported: 0,
                    settled: false,
                });
                self.open.len() - 1
            }
        };
        let inc = &mut self.open[i];
        inc.alerts += 1;
        if !publish {
            inc.suppressed += 1;
        }
        if !a.kind.is_one_shot() {
            inc.open += 1;
        }
        inc.first_seen = inc.first_seen.min(a.opened_at);
        inc.last_seen = inc.last_seen.max(a.opened_at);
        let fp = fingerprint(key);
        match inc.keys.binary_search(&fp) {
            Ok(_) => {}
            Err(at) => {
                inc.keys_affected += 1;
                if inc.keys.len() < TRACKED_KEYS {
                    inc.keys.insert(at, fp);
                }
                if inc.sample.len() < SAMPLE_KEYS {
                    inc.sample.push(key.to_owned());
                }
            }
        }
        let status = if inc.alerts == 1 {
            Some(IncidentStatus::Opened)
        } else if inc.alerts == inc.next_report {
            inc.next_report = inc.next_report.saturating_mul(2);
            Some(IncidentStatus::Updated)
        } else {
            None
        };
        if let Some(status) = status {
            inc.reported = inc.alerts;
            reports.push(IncidentReport {
                status,
                at: now,
                incident: inc.clone(),
            });
        }
        let t = inc.closes_at();
        self.next_close = Some(self.next_close.map_or(t, |n| n.min(t)));
        publish
    }

    /// Moves the book to stream time `now`: incidents whose interval (plus one of grace) is
    /// over and that have no open alert are RESOLVED, and spent rate-limit minutes are
    /// forgotten. Returns whether the book changed.
    pub fn advance(&mut self, now: Millis, reports: &mut Vec<IncidentReport>) -> bool {
        let minute = now.div_euclid(MINUTE_MS);
        let limits = self.limits.len();
        self.limits.retain(|l| l.minute >= minute);
        let forgot = self.limits.len() != limits;
        if self.next_close.is_none_or(|t| t > now) {
            return forgot;
        }
        let mut next = None;
        let mut i = 0;
        while i < self.open.len() {
            let inc = &mut self.open[i];
            let t = inc.closes_at();
            if t > now {
                next = Some(next.map_or(t, |n: Millis| n.min(t)));
                i += 1;
            } else if inc.open == 0 {
                let incident = self.open.remove(i);
                reports.push(IncidentReport {
                    status: IncidentStatus::Resolved,
                    at: t.max(incident.last_seen),
                    incident,
                });
            } else {
                // Still open past its interval: report its final count once, then wait for
                // its alerts to resolve.
                if !inc.settled {
                    inc.settled = true;
                    if inc.alerts != inc.reported {
                        inc.reported = inc.alerts;
                        reports.push(IncidentReport {
                            status: IncidentStatus::Updated,
                            at: t,
                            incident: inc.clone(),
                        });
                    }
                }
                i += 1;
            }
        }
        self.next_close = next;
        true
    }

    /// Whether the rate limit lets `a` through, counting it if so.
    fn admit(&mut self, model: &Model, a: &Alert, now: Millis) -> bool {
        let Some(&limit) = model.alerts().rate_limit_per_minute.get(&a.kind) else {
            return true;
        };
        if !a.kind.is_one_shot() {
            return true;
        }
        let minute = now.div_euclid(MINUTE_MS);
        let l = match self
            .limits
            .iter()
            .position(|l| l.kind == a.kind && l.origin == a.origin && l.system == a.system)
        {
            Some(i) => &mut self.limits[i],
            None => {
                self.limits.push(Limit {
                    kind: a.kind,
                    origin: a.origin,
                    system: a.system,
                    minute,
                    published: 0,
                });
                let last = self.limits.len() - 1;
                &mut self.limits[last]
            }
        };
        if l.minute != minute {
            l.minute = minute;
            l.published = 0;
        }
        if l.published >= limit {
            return false;
        }
        l.published += 1;
        true
    }
}

/// An incident as a consumer of the incidents topic sees it: the latest report of every
/// partition that has one, merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentView {
    shares: BTreeMap<i32, IncidentReport>,
}

impl IncidentView {
    /// Takes partition `partition`'s report (a later report replaces an earlier one).
    pub fn apply(&mut self, partition: i32, report: IncidentReport) {
        self.shares.insert(partition, report);
    }

    /// RESOLVED when every partition's share is resolved; OPENED while only one partition has
    /// reported and only its first alert; UPDATED otherwise. `None` before any report.
    pub fn status(&self) -> Option<IncidentStatus> {
        let first = self.shares.values().next()?;
        Some(
            if self
                .shares
                .values()
                .all(|r| r.status == IncidentStatus::Resolved)
            {
                IncidentStatus::Resolved
            } else if self.shares.len() == 1 && first.status == IncidentStatus::Opened {
                IncidentStatus::Opened
            } else {
                IncidentStatus::Updated
            },
        )
    }

    /// Alerts across partitions.
    pub fn alerts(&self) -> u64 {
        self.shares.values().map(|r| r.incident.alerts).sum()
    }

    /// Suppressed alerts across partitions.
    pub fn suppressed(&self) -> u64 {
        self.shares.values().map(|r| r.incident.suppressed).sum()
    }

    /// Distinct keys across partitions (a key lives in one partition).
    pub fn keys_affected(&self) -> u64 {
        self.shares.values().map(|r| r.incident.keys_affected).sum()
    }

    /// The earliest first alert.
    pub fn first_seen(&self) -> Option<Millis> {
        self.shares.values().map(|r| r.incident.first_seen).min()
    }

    /// The latest alert or resolution.
    pub fn last_seen(&self) -> Option<Millis> {
        self.shares.values().map(|r| r.incident.last_seen).max()
    }

    /// Partitions that reported.
    pub fn partitions(&self) -> usize {
        self.shares.len()
    }
}
