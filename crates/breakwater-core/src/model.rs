//! The cascade map: systems, source-of-truth rules, handoffs and alert policy, as configured
//! (`CascadeConfig`, the `[[systems]]`, `[measures]`, `[[handoffs]]` and `[alerts]` sections of
//! the TOML file) and as compiled for the fold (`Model`).
//!
//! Validation reports every problem at once, each with the key path of the offending setting.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::{Measure, Millis};
use crate::id::fingerprint;
use crate::output::{AlertKind, Severity};

/// The reserved name of Breakwater's own reservation ledger, usable as a measure's authority
/// and as the `from` of a handoff.
pub const LEDGER: &str = "breakwater";

/// One participating system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// The system's name (`wms`, `erp`, ...), as it appears in events' `system` field.
    pub name: String,
    /// The topic the system publishes its inventory events to.
    pub input_topic: String,
    /// The topic Breakwater publishes this system's propagation events to.
    pub propagation_topic: String,
    /// Customers see this system's `available`: showing more than exists is
    /// PHANTOM_AVAILABILITY rather than DRIFT.
    #[serde(default)]
    pub customer_facing: bool,
    /// The system acknowledges the versions it has applied (by sending `based_on_version` on
    /// its events): a propagated version it has not acknowledged within its window raises
    /// HANDOFF_TIMEOUT. Off for systems that cannot echo versions.
    #[serde(default)]
    pub acks_versions: bool,
    /// Free text for dashboards and the cascade map.
    #[serde(default)]
    pub description: String,
}

/// The source-of-truth rule for one measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureConfig {
    /// The system whose events set this measure's authoritative value, or `breakwater` for the
    /// reservation ledger (which takes orders from every system and COMMIT commands).
    pub authority: String,
    /// Largest difference, in units, between a system's view and the authoritative value that
    /// still counts as converged.
    #[serde(default)]
    pub tolerance: u32,
    /// Other authorities for locations by prefix (stores' `on_hand` from the POS, a 3PL
    /// site's from the 3PL). The longest matching prefix wins; `authority` applies elsewhere.
    #[serde(default)]
    pub by_location: Vec<LocationAuthority>,
}

/// The authority of a measure at the locations whose name starts with `prefix`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationAuthority {
    /// Location name prefix (`STORE-`, `3PL-`); a whole location name matches itself.
    pub prefix: String,
    /// The system (or `breakwater`) whose events set the measure at those locations.
    pub authority: String,
}

/// What to do with a negative ABSOLUTE `on_hand` (a POS's book stock after selling units it
/// had not received yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeStock {
    /// Take it as reported, as a DELTA may already take stock below zero.
    #[default]
    Accept,
    /// Send it to the dead-letter topic (`impossible_quantity`).
    DeadLetter,
}

/// Keys where an order beyond what is available is a backorder or preorder, by SKU and
/// location prefix (an empty prefix matches every name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackorderRule {
    /// SKU prefix (`PRE-` for preorder SKUs); empty: any SKU.
    #[serde(default)]
    pub sku_prefix: String,
    /// Location prefix; empty: any location.
    #[serde(default)]
    pub location_prefix: String,
}

/// Rules that are a retailer's choice rather than a fact of the cascade map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// How long an event id, command id or closed order line is remembered per key: a
    /// redelivery within it changes nothing, and a retried command gets its original decision.
    #[serde(default = "default_idempotency_horizon_ms")]
    pub idempotency_horizon_ms: u64,
    /// Negative ABSOLUTE `on_hand` from ADJUSTMENT or SNAPSHOT (a CYCLE_COUNT is a physical
    /// count and is never negative).
    #[serde(default)]
    pub negative_on_hand: NegativeStock,
    /// Keys that take backorders: an order beyond availability there is counted
    /// (`breakwater_actions_total{outcome="backorder"}`), not an OVERSELL.
    #[serde(default)]
    pub backorder: Vec<BackorderRule>,
}

/// 24 hours: a day's redeliveries and retries (the longest a producer's retry loop, a
/// replayed batch or a reconnecting client should take).
pub const fn default_idempotency_horizon_ms() -> u64 {
    86_400_000
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            idempotency_horizon_ms: default_idempotency_horizon_ms(),
            negative_on_hand: NegativeStock::Accept,
            backorder: Vec::new(),
        }
    }
}

/// The source-of-truth rules, one per stored measure.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuresConfig {
    /// Physical units.
    pub on_hand: Option<MeasureConfig>,
    /// Units assigned to picks.
    pub allocated: Option<MeasureConfig>,
    /// Units promised to orders.
    pub committed: Option<MeasureConfig>,
    /// Units held back from sale.
    pub safety_stock: Option<MeasureConfig>,
    /// Tolerance for comparing a system's reported `available` (it has no authority: it is
    /// derived).
    #[serde(default)]
    pub available_tolerance: u32,
}

/// A directed handoff between two systems.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffConfig {
    /// The system that hands data off (or `breakwater` for the ledger).
    pub from: String,
    /// The system that receives it.
    pub to: String,
    /// The operational window: how long `to` may take to converge after `from` changes.
    pub window_ms: u64,
    /// Severity of DRIFT and HANDOFF_TIMEOUT alerts raised on this handoff; defaults to the
    /// kind's severity in `[alerts]`.
    #[serde(default)]
    pub severity: Option<Severity>,
}

/// Alert policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Severity per alert kind, overriding the defaults (`OVERSELL = "critical"`, ...).
    #[serde(default)]
    pub severity: BTreeMap<AlertKind, Severity>,
    /// Raise an info-level STALE_VIEW alert for an action taken on an older version that the
    /// missed changes did not invalidate. Off by default: such actions are counted
    /// (`breakwater_actions_total{outcome="stale_sufficient"}`), which is what an operator
    /// usually wants; turn it on to audit a channel's cache.
    #[serde(default)]
    pub stale_view: bool,
    /// At most this many alerts of a kind per handoff, per partition, per minute of stream
    /// time; the rest are counted in their incident (`suppressed`) and in
    /// `breakwater_alerts_suppressed_total`, not published. Only for the one-shot kinds
    /// (STALE_ACTION, STALE_VIEW, OVERSELL, UNPROPAGATED_CHANGE): an alert that a RESOLVED
    /// will close is always published, so that every RESOLVED closes a published alert.
    #[serde(default)]
    pub rate_limit_per_minute: BTreeMap<AlertKind, u32>,
}

/// The cascade part of the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CascadeConfig {
    /// Participating systems.
    #[serde(default)]
    pub systems: Vec<SystemConfig>,
    /// Source-of-truth rules.
    #[serde(default)]
    pub measures: MeasuresConfig,
    /// The cascade map's edges.
    #[serde(default)]
    pub handoffs: Vec<HandoffConfig>,
    /// Alert policy.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Idempotency horizon, negative stock, backorders.
    #[serde(default)]
    pub rules: RulesConfig,
}

/// One invalid setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: `handoffs[2].to`, `measures.on_hand.authority`, ...
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration ({} problem(s)):\n{}", .0.len(), display_list(.0))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

fn display_list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigErrors {
    /// Adds a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A system's stable identity in persisted state: a fingerprint of its name, so that adding,
/// removing or reordering systems in the config does not scramble stored views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SysId(pub u32);

impl SysId {
    /// The identity of the system named `name`.
    pub fn of(name: &str) -> SysId {
        let h = fingerprint(name);
        SysId((h ^ (h >> 32)) as u32)
    }
    /// The reservation ledger.
    pub fn ledger() -> SysId {
        SysId::of(LEDGER)
    }
}

/// Who sets a stored measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// The system with this id.
    System(SysId),
    /// Breakwater's reservation ledger.
    Ledger,
}

/// A compiled system.
#[derive(Clone, Debug)]
pub struct System {
    /// Stable id.
    pub id: SysId,
    /// Name from the config.
    pub name: String,
    /// Input topic.
    pub input_topic: String,
    /// Propagation topic.
    pub propagation_topic: String,
    /// Customers see its `available`.
    pub customer_facing: bool,
    /// Held to acknowledging propagated versions.
    pub acks_versions: bool,
}

/// The path a change travels from an origin to a downstream system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Origin first, destination last.
    pub path: Vec<SysId>,
    /// Sum of the handoff windows along the path: the convergence deadline after a change.
    pub window_ms: u64,
    /// Severity of the last handoff on the path, if it sets one.
    pub severity: Option<Severity>,
}

/// The authorities that hold at one class of locations, and what follows from them.
#[derive(Clone, Debug)]
struct Profile {
    /// The location prefix this profile is for (empty: the default authorities).
    prefix: String,
    authority: [Authority; 4],
    /// Per system (config order): the window within which it must converge on each measure
    /// (`Measure::ALL` order), `None` where it is not downstream of that measure's authority.
    /// Precomputed because the fold asks for every reading on every change.
    held: Vec<[Option<u64>; 5]>,
}

/// Which authorities hold at a key, and its order policy: chosen from the key's location and
/// SKU by [`Model::key_class`], kept in the key's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyClass {
    /// Index of the location's authority profile.
    pub profile: u8,
    /// Orders beyond availability are backorders here, not oversells.
    pub backorder: bool,
}

/// The validated, compiled cascade map the fold runs on. Cheap lookups only: routes are
/// precomputed for every (origin, destination) pair.
#[derive(Clone, Debug)]
pub struct Model {
    systems: Vec<System>,
    /// Node list for routes: systems then the ledger.
    nodes: Vec<SysId>,
    /// Authority profiles: the default first, then one per location prefix, longest first.
    profiles: Vec<Profile>,
    tolerance: [i64; 5],
    /// `routes[origin_node][dest_node]`.
    routes: Vec<Vec<Option<Route>>>,
    severity: BTreeMap<AlertKind, Severity>,
    handoffs: Vec<HandoffConfig>,
    rules: RulesConfig,
    alerts: AlertsConfig,
    /// How long authoritative changes are remembered per key: twice the longest route, so a
    /// reading that lags by up to a window can still be matched to the truth it reflects.
    history_ms: i64,
}

impl Model {
    /// Validates `cfg` and compiles it.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing every invalid setting with its key path.
    pub fn build(cfg: &CascadeConfig) -> Result<Model, ConfigErrors> {
        let mut errs = ConfigErrors(Vec::new());
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut topics: BTreeMap<&str, String> = BTreeMap::new();
        let mut ids: BTreeMap<SysId, &str> = BTreeMap::new();
        if cfg.systems.is_empty() {
            errs.push("systems", "at least one system is required");
        }
        for (i, s) in cfg.systems.iter().enumerate() {
            let at = format!("systems[{i}]");
            if !valid_name(&s.name) {
                errs.push(
                    format!("{at}.name"),
                    format!(
                        "{:?} is not a valid system name (1-64 characters of a-z, 0-9, '_' or '-')",
                        s.name
                    ),
                );
            } else if s.name == LEDGER {
                errs.push(
                    format!("{at}.name"),
                    format!("{LEDGER:?} is reserved for the reservation ledger"),
                );
            } else if let Some(j) = names.insert(&s.name, i) {
                errs.push(
                    format!("{at}.name"),
                    format!("duplicate system name {:?} (also systems[{j}])", s.name),
                );
            } else if let Some(other) = ids.insert(SysId::of(&s.name), &s.name) {
                errs.push(
                    format!("{at}.name"),
                    format!(
                        "system name {:?} collides with {other:?}; rename one",
                        s.name
                    ),
                );
            }
            for (field, topic) in [
                ("input_topic", &s.input_topic),
                ("propagation_topic", &s.propagation_topic),
            ] {
                let path = format!("{at}.{field}");
                if topic.trim().is_empty() {
                    errs.push(path, "must not be empty");
                } else if let Some(prev) = topics.insert(topic, path.clone()) {
                    errs.push(
                        path,
                        format!("duplicate topic {topic:?} (also used by {prev})"),
                    );
                }
            }
        }
        let known = |n: &str| n == LEDGER || names.contains_key(n);

        let resolve = |name: &str, path: String, errs: &mut ConfigErrors| {
            if name == LEDGER {
                Some(Authority::Ledger)
            } else if names.contains_key(name) {
                Some(Authority::System(SysId::of(name)))
            } else {
                errs.push(
                    path,
                    format!("unknown system {name:?} (known: {})", known_list(&names)),
                );
                None
            }
        };
        let mut authority = [Authority::Ledger; 4];
        let mut tolerance = [0i64; 5];
        // Every prefix named by any measure, with its per-measure overrides.
        let mut prefixes: BTreeMap<&str, [Option<Authority>; 4]> = BTreeMap::new();
        for m in Measure::STORED {
            let path = format!("measures.{}", m.as_str());
            match measure_cfg(&cfg.measures, m) {
                None => errs.push(
                    path,
                    "no authority: every stored measure needs a source-of-truth rule",
                ),
                Some(mc) => {
                    tolerance[m.index()] = i64::from(mc.tolerance);
                    if let Some(a) = resolve(&mc.authority, format!("{path}.authority"), &mut errs)
                    {
                        authority[m.index()] = a;
                    }
                    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
                    for (j, la) in mc.by_location.iter().enumerate() {
                        let at = format!("{path}.by_location[{j}]");
                        if la.prefix.is_empty() {
                            errs.push(
                                format!("{at}.prefix"),
                                "must not be empty (the measure's `authority` is the default)",
                            );
                            continue;
                        }
                        if let Some(k) = seen.insert(&la.prefix, j) {
                            errs.push(
                                format!("{at}.prefix"),
                                format!("duplicate prefix {:?} (also by_location[{k}])", la.prefix),
                            );
                        }
                        if let Some(a) =
                            resolve(&la.authority, format!("{at}.authority"), &mut errs)
                        {
                            prefixes.entry(&la.prefix).or_default()[m.index()] = Some(a);
                        }
                    }
                }
            }
        }
        for (j, b) in cfg.rules.backorder.iter().enumerate() {
            if b.location_prefix.contains('|') || b.sku_prefix.contains('|') {
                errs.push(
                    format!("rules.backorder[{j}]"),
                    "prefixes cannot contain '|', the key separator",
                );
            }
        }
        if cfg.rules.idempotency_horizon_ms == 0 {
            errs.push(
                "rules.idempotency_horizon_ms",
                "must be greater than 0: a redelivered event would count twice",
            );
        }
        tolerance[Measure::Available.index()] = i64::from(cfg.measures.available_tolerance);

        let mut edges: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (i, h) in cfg.handoffs.iter().enumerate() {
            let at = format!("handoffs[{i}]");
            for (field, name) in [("from", &h.from), ("to", &h.to)] {
                if !known(name) {
                    errs.push(
                        format!("{at}.{field}"),
                        format!("unknown system {name:?} (known: {})", known_list(&names)),
                    );
                }
            }
            if h.to == LEDGER {
                errs.push(
                    format!("{at}.to"),
                    "the ledger only hands off; it cannot be a destination",
                );
            }
            if h.from == h.to {
                errs.push(
                    format!("{at}.to"),
                    "a handoff cannot loop to its own source",
                );
            }
            if h.window_ms == 0 {
                errs.push(
                    format!("{at}.window_ms"),
                    "must be greater than 0: a zero window would alert on every change",
                );
            }
            if let Some(j) = edges.insert((&h.from, &h.to), i) {
                errs.push(
                    at,
                    format!(
                        "duplicate handoff {} -> {} (also handoffs[{j}])",
                        h.from, h.to
                    ),
                );
            }
        }
        for (kind, limit) in &cfg.alerts.rate_limit_per_minute {
            if !kind.is_one_shot() {
                errs.push(
                    format!("alerts.rate_limit_per_minute.{}", kind.as_str()),
                    "only one-shot kinds (STALE_ACTION, STALE_VIEW, OVERSELL, \
                     UNPROPAGATED_CHANGE) can be rate-limited: a RESOLVED must always close a \
                     published alert",
                );
            } else if *limit == 0 {
                errs.push(
                    format!("alerts.rate_limit_per_minute.{}", kind.as_str()),
                    "must be at least 1 (to silence a kind, route it away downstream)",
                );
            }
        }
        if !errs.0.is_empty() {
            return Err(errs);
        }

        let systems: Vec<System> = cfg
            .systems
            .iter()
            .map(|s| System {
                id: SysId::of(&s.name),
                name: s.name.clone(),
                input_topic: s.input_topic.clone(),
                propagation_topic: s.propagation_topic.clone(),
                customer_facing: s.customer_facing,
                acks_versions: s.acks_versions,
            })
            .collect();
        let mut nodes: Vec<SysId> = systems.iter().map(|s| s.id).collect();
        nodes.push(SysId::ledger());
        let routes = compute_routes(&nodes, &cfg.handoffs);
        let mut severity = default_severities();
        severity.extend(cfg.alerts.severity.iter().map(|(k, v)| (*k, *v)));
        // A location's authority per measure is that of the longest matching prefix naming
        // the measure. All prefixes a location matches are prefixes of the longest one, so a
        // location has the profile of its longest matching prefix, computed here for each.
        let mut profile_list: Vec<(String, [Authority; 4])> = vec![(String::new(), authority)];
        let mut by_len: Vec<&str> = prefixes.keys().copied().collect();
        by_len.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        for p in &by_len {
            let mut a = authority;
            for m in Measure::STORED {
                // Shortest to longest, so the longest matching override wins.
                let mut matching: Vec<&&str> =
                    by_len.iter().filter(|q| p.starts_with(**q)).collect();
                matching.sort_by_key(|q| q.len());
                for q in matching {
                    if let Some(o) = prefixes[*q][m.index()] {
                        a[m.index()] = o;
                    }
                }
            }
            profile_list.push(((*p).to_owned(), a));
        }
        if profile_list.len() > usize::from(u8::MAX) {
            errs.push(
                "measures",
                format!(
                    "{} location prefixes; at most {} are supported",
                    profile_list.len() - 1,
                    u8::MAX - 1
                ),
            );
            return Err(errs);
        }
        let history_ms = routes
            .iter()
            .flatten()
            .flatten()
            .map(|r| r.window_ms)
            .max()
            .unwrap_or(0)
            .saturating_mul(2);
        let mut model = Model {
            systems,
            nodes,
            profiles: Vec::new(),
            tolerance,
            routes,
            severity,
            handoffs: cfg.handoffs.clone(),
            rules: cfg.rules.clone(),
            alerts: cfg.alerts.clone(),
            history_ms: i64::try_from(history_ms).unwrap_or(i64::MAX),
        };
        model.profiles = profile_list
            .into_iter()
            .map(|(prefix, authority)| {
                let held = model
                    .systems
                    .iter()
                    .map(|s| {
                        let mut w = [None; 5];
                        for m in Measure::ALL {
                            w[m.index()] =
                                model.route_for(&authority, s.id, m).map(|r| r.window_ms);
                        }
                        w
                    })
                    .collect();
                Profile {
                    prefix,
                    authority,
                    held,
                }
            })
            .collect();
        Ok(model)
    }

    /// The class of the key `sku` at `location`: its authority profile (longest matching
    /// location prefix) and whether it takes backorders. A few prefix comparisons, no
    /// allocation.
    pub fn key_class(&self, sku: &str, location: &str) -> KeyClass {
        let profile = self
            .profiles
            .iter()
            .skip(1)
            .position(|p| location.starts_with(p.prefix.as_str()))
            .map_or(0, |i| i + 1);
        let backorder = self.rules.backorder.iter().any(|b| {
            sku.starts_with(b.sku_prefix.as_str())
                && location.starts_with(b.location_prefix.as_str())
        });
        KeyClass {
            // At most u8::MAX profiles (checked in `build`).
            profile: u8::try_from(profile).unwrap_or(0),
            backorder,
        }
    }

    /// The rules section.
    pub fn rules(&self) -> &RulesConfig {
        &self.rules
    }

    /// The alert policy section.
    pub fn alerts(&self) -> &AlertsConfig {
        &self.alerts
    }

    /// How long authoritative changes are kept per key, in ms.
    pub fn history_ms(&self) -> Millis {
        self.history_ms
    }

    fn profile(&self, class: KeyClass) -> &Profile {
        self.profiles
            .get(usize::from(class.profile))
            .unwrap_or(&self.profiles[0])
    }

    /// The configured systems, in config order.
    pub fn systems(&self) -> &[System] {
        &self.systems
    }

    /// The configured handoffs.
    pub fn handoffs(&self) -> &[HandoffConfig] {
        &self.handoffs
    }

    /// The system called `name`.
    pub fn system_by_name(&self, name: &str) -> Option<&System> {
        self.systems.iter().find(|s| s.name == name)
    }

    /// The system with id `id`.
    pub fn system(&self, id: SysId) -> Option<&System> {
        self.systems.iter().find(|s| s.id == id)
    }

    /// The name of `id`: a system's name, `breakwater` for the ledger, `unknown` for a system
    /// that is in stored state but no longer in the config.
    pub fn name(&self, id: SysId) -> &str {
        if id == SysId::ledger() {
            return LEDGER;
        }
        self.system(id).map_or("unknown", |s| s.name.as_str())
    }

    /// Who sets stored measure `m` at keys of `class`. `available` has no authority and
    /// answers `Ledger`.
    pub fn authority(&self, class: KeyClass, m: Measure) -> Authority {
        self.profile(class)
            .authority
            .get(m.index())
            .copied()
            .unwrap_or(Authority::Ledger)
    }

    /// The convergence tolerance for `m`, in units.
    pub fn tolerance(&self, m: Measure) -> i64 {
        self.tolerance[m.index()]
    }

    /// The route a change at `origin` travels to reach `dest`, if `dest` is downstream.
    pub fn route(&self, origin: SysId, dest: SysId) -> Option<&Route> {
        let o = self.nodes.iter().position(|n| *n == origin)?;
        let d = self.nodes.iter().position(|n| *n == dest)?;
        self.routes[o][d].as_ref()
    }

    /// The route a change of `m` takes to `system` under `authority` (for `available`: the
    /// quickest from any authority).
    fn route_for(&self, authority: &[Authority; 4], system: SysId, m: Measure) -> Option<&Route> {
        let origin = |m: Measure| match authority[m.index()] {
            Authority::System(s) => s,
            Authority::Ledger => SysId::ledger(),
        };
        match m {
            Measure::Available => Measure::STORED
                .iter()
                .filter_map(|s| self.route(origin(*s), system))
                .min_by_key(|r| r.window_ms),
            _ => self.route(origin(m), system),
        }
    }

    /// The system with id `id` and, per measure, the window within which it must converge on
    /// it at keys of `class` (`None` where it is not downstream of the measure's authority).
    pub fn held(&self, class: KeyClass, id: SysId) -> Option<(&System, &[Option<u64>; 5])> {
        let i = self.systems.iter().position(|s| s.id == id)?;
        Some((&self.systems[i], self.profile(class).held.get(i)?))
    }

    /// The origin of a change to measure `m` at keys of `class` (its authority).
    pub fn origin_of(&self, class: KeyClass, m: Measure) -> SysId {
        match self.authority(class, m) {
            Authority::System(s) => s,
            Authority::Ledger => SysId::ledger(),
        }
    }

    /// The severity of an alert of `kind` on `route`.
    pub fn severity(&self, kind: AlertKind, route: Option<&Route>) -> Severity {
        if matches!(kind, AlertKind::Drift | AlertKind::HandoffTimeout) {
            if let Some(s) = route.and_then(|r| r.severity) {
                return s;
            }
        }
        self.severity
            .get(&kind)
            .copied()
            .unwrap_or(Severity::Warning)
    }
}

fn default_severities() -> BTreeMap<AlertKind, Severity> {
    BTreeMap::from([
        (AlertKind::Drift, Severity::Warning),
        (AlertKind::StaleAction, Severity::Warning),
        (AlertKind::Oversell, Severity::Critical),
        (AlertKind::PhantomAvailability, Severity::Critical),
        (AlertKind::HandoffTimeout, Severity::Warning),
        (AlertKind::UnpropagatedChange, Severity::Warning),
        (AlertKind::Resolved, Severity::Info),
        (AlertKind::StaleView, Severity::Info),
    ])
}

fn measure_cfg(m: &MeasuresConfig, which: Measure) -> Option<&MeasureConfig> {
    match which {
        Measure::OnHand => m.on_hand.as_ref(),
        Measure::Allocated => m.allocated.as_ref(),
        Measure::Committed => m.committed.as_ref(),
        Measure::SafetyStock => m.safety_stock.as_ref(),
        Measure::Available => None,
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn known_list(names: &BTreeMap<&str, usize>) -> String {
    let mut v: Vec<&str> = names.keys().copied().collect();
    v.push(LEDGER);
    v.join(", ")
}

/// Shortest (by total window) path from every node to every other, Dijkstra on a graph of at
/// most a few dozen nodes: computed once at start-up.
fn compute_routes(nodes: &[SysId], handoffs: &[HandoffConfig]) -> Vec<Vec<Option<Route>>> {
    let idx = |name: &str| nodes.iter().position(|n| *n == SysId::of(name));
    let n = nodes.len();
    let mut adj: Vec<Vec<(usize, u64, Option<Severity>)>> = vec![Vec::new(); n];
    for h in handoffs {
        if let (Some(f), Some(t)) = (idx(&h.from), idx(&h.to)) {
            adj[f].push((t, h.window_ms, h.severity));
        }
    }
    let mut all = Vec::with_capacity(n);
    for src in 0..n {
        let mut dist: Vec<Option<u64>> = vec![None; n];
        let mut prev: Vec<Option<(usize, Option<Severity>)>> = vec![None; n];
        let mut done = vec![false; n];
        dist[src] = Some(0);
        loop {
            let next = (0..n)
                .filter(|&i| !done[i])
                .filter_map(|i| dist[i].map(|d| (d, i)))
                .min();
            let Some((d, u)) = next else { break };
            done[u] = true;
            for &(v, w, sev) in &adj[u] {
                let nd = d.saturating_add(w);
                if dist[v].is_none_or(|cur| nd < cur) {
                    dist[v] = Some(nd);
                    prev[v] = Some((u, sev));
                }
            }
        }
        let row = (0..n)
            .map(|dst| {
                if dst == src {
                    return None;
                }
                let window_ms = dist[dst]?;
                let mut path = vec![nodes[dst]];
                let mut cur = dst;
                let severity = prev[dst].and_then(|(_, s)| s);
                while let Some((p, _)) = prev[cur] {
                    path.push(nodes[p]);
                    cur = p;
                }
                path.reverse();
                Some(Route {
                    path,
                    window_ms,
                    severity,
                })
            })
            .collect();
        all.push(row);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(name: &str) -> SystemConfig {
        SystemConfig {
            name: name.into(),
            input_topic: format!("{name}.in"),
            propagation_topic: format!("{name}.out"),
            customer_facing: false,
            acks_versions: false,
            description: String::new(),
        }
    }

    fn rule(authority: &str) -> Option<MeasureConfig> {
        Some(MeasureConfig {
            authority: authority.into(),
            tolerance: 0,
            by_location: Vec::new(),
        })
    }

    fn handoff(from: &str, to: &str, window_ms: u64) -> HandoffConfig {
        HandoffConfig {
            from: from.into(),
            to: to.into(),
            window_ms,
            severity: None,
        }
    }

    fn valid() -> CascadeConfig {
        CascadeConfig {
            systems: vec![sys("wms"), sys("erp"), sys("storefront")],
            measures: MeasuresConfig {
                on_hand: rule("wms"),
                allocated: rule("wms"),
                committed: rule("breakwater"),
                safety_stock: rule("erp"),
                available_tolerance: 0,
            },
            handoffs: vec![
                handoff("wms", "erp", 300_000),
                handoff("erp", "storefront", 120_000),
            ],
            alerts: AlertsConfig::default(),
            rules: RulesConfig::default(),
        }
    }

    #[test]
    fn routes_follow_the_cascade_map() {
        let m = Model::build(&valid()).unwrap();
        let r = m
            .route(SysId::of("wms"), SysId::of("storefront"))
            .expect("storefront is downstream of wms");
        assert_eq!(
            r.path,
            vec![SysId::of("wms"), SysId::of("erp"), SysId::of("storefront")]
        );
        assert_eq!(r.window_ms, 420_000);
        assert!(m.route(SysId::of("storefront"), SysId::of("wms")).is_none());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut cfg = valid();
        cfg.systems.push(sys("erp"));
        cfg.systems[2].input_topic = "wms.in".into();
        cfg.measures.allocated = None;
        cfg.measures.on_hand = rule("WMS");
        cfg.handoffs.push(handoff("erp", "pos", 1000));
        cfg.handoffs.push(handoff("wms", "storefront", 0));
        let errs = Model::build(&cfg).unwrap_err();
        let paths: Vec<&str> = errs.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "systems[2].input_topic",
                "systems[3].name",
                "systems[3].input_topic",
                "systems[3].propagation_topic",
                "measures.on_hand.authority",
                "measures.allocated",
                "handoffs[2].to",
                "handoffs[3].window_ms",
            ]
        );
        let text = errs.to_string();
        assert!(text.contains("unknown system \"pos\""), "{text}");
        assert!(text.contains("8 problem(s)"), "{text}");
    }
}
