//! Scenario files: a story of inputs over time and the alerts and propagation events it must
//! produce. The same file drives the core's tests, the demo and the processor's end-to-end
//! tests (which publish the inputs to Kafka with the step time as the record timestamp).
//!
//! A scenario is TOML (see `testdata/scenarios/`); this module holds its serde types, the
//! runner over the pure fold and the comparison with the expectations. Times are seconds from
//! `start_ms` so the story reads like one.

use serde::{Deserialize, Serialize};

use crate::event::{
    CommandKind, EventType, InventoryEvent, Measure, Millis, Mode, ReservationCommand,
};
use crate::fold::{apply, Input, Outcome, Rejection};
use crate::model::{Model, SysId};
use crate::output::{Alert, AlertKind, Decision, DecisionKind, Output, Propagation};
use crate::state::KeyState;

/// A scenario file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What the story shows.
    #[serde(default)]
    pub description: String,
    /// Path of the Breakwater config file the story runs under, relative to the scenario file.
    pub config: String,
    /// The story's time zero, in ms since the epoch.
    pub start_ms: Millis,
    /// When the story ends (timers up to then fire), in seconds from start.
    pub end_secs: i64,
    /// The inputs, in time order.
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    /// The alerts the story must produce, exactly and in order.
    #[serde(default, rename = "alert")]
    pub alerts: Vec<ExpectedAlert>,
    /// Propagation events the story must produce (others may appear too).
    #[serde(default, rename = "propagation")]
    pub propagations: Vec<ExpectedPropagation>,
    /// Reservation decisions the story must produce, exactly and in order.
    #[serde(default, rename = "decision")]
    pub decisions: Vec<ExpectedDecision>,
}

/// One input.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When it is processed, seconds from start (the Kafka record timestamp).
    pub at_secs: i64,
    /// What the step is in the story.
    #[serde(default)]
    pub note: String,
    /// An inventory event.
    #[serde(default)]
    pub event: Option<ScenarioEvent>,
    /// A reservation command.
    #[serde(default)]
    pub command: Option<ScenarioCommand>,
}

/// An inventory event with times relative to the scenario start.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // the fields are `InventoryEvent`'s
pub struct ScenarioEvent {
    pub event_id: String,
    pub system: String,
    #[serde(default)]
    pub source_seq: Option<i64>,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub sku: String,
    #[serde(default)]
    pub location: String,
    pub measure: Measure,
    pub mode: Mode,
    pub quantity: i64,
    /// Defaults to the step time.
    #[serde(default)]
    pub occurred_at_secs: Option<i64>,
    #[serde(default)]
    pub based_on_version: Option<i64>,
    #[serde(default)]
    pub data_as_of_secs: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub order_ref: Option<String>,
    #[serde(default)]
    pub line_ref: Option<String>,
}

/// A reservation command with times relative to the scenario start.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // the fields are `ReservationCommand`'s
pub struct ScenarioCommand {
    pub command_id: String,
    pub command: CommandKind,
    pub reservation_id: String,
    pub sku: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub quantity: i64,
    pub channel: String,
    #[serde(default)]
    pub ttl_secs: Option<i64>,
    #[serde(default)]
    pub order_ref: Option<String>,
    #[serde(default)]
    pub line_ref: Option<String>,
}

/// An alert the story must produce. Fields left out are not compared.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAlert {
    /// When it opens (or resolves), seconds from start.
    pub at_secs: i64,
    /// Its kind.
    pub kind: AlertKind,
    /// For RESOLVED: the kind it resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolves: Option<AlertKind>,
    /// The system.
    pub system: String,
    /// The measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<Measure>,
    /// Authoritative value (or version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<i64>,
    /// What the system had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<i64>,
    /// The root cause's event id.
    pub root: String,
    /// The cascade path, system names from the root's system to the alerting system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// For RESOLVED: how long the divergence lasted, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<i64>,
}

/// A propagation event the story must produce.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedPropagation {
    /// When it is emitted, seconds from start.
    pub at_secs: i64,
    /// The system addressed.
    pub target: String,
    /// The authoritative version.
    pub version: u64,
    /// The root event id.
    pub root: String,
    /// Authoritative on_hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hand: Option<i64>,
    /// Authoritative available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// The convergence deadline, seconds from start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_secs: Option<i64>,
}

/// A reservation decision the story must produce.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDecision {
    /// When, seconds from start.
    pub at_secs: i64,
    /// The reservation.
    pub reservation_id: String,
    /// The outcome.
    pub kind: DecisionKind,
    /// Available minus holds after the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
}

/// One step of a scenario as a concrete input.
#[derive(Clone, Debug, PartialEq)]
pub enum ScenarioInput {
    /// An inventory event, for the system's input topic.
    Event(InventoryEvent),
    /// A reservation command, for the command topic.
    Command(ReservationCommand),
}

impl ScenarioInput {
    /// The SKU and location the input is keyed by.
    pub fn key(&self) -> (&str, &str) {
        match self {
            ScenarioInput::Event(e) => (&e.sku, &e.location),
            ScenarioInput::Command(c) => (&c.sku, &c.location),
        }
    }
}

impl Scenario {
    /// Time of `secs` from start, in ms.
    pub fn at(&self, secs: i64) -> Millis {
        self.start_ms.saturating_add(secs.saturating_mul(1000))
    }

    /// The inputs with absolute times, each with its processing time.
    pub fn inputs(&self) -> Vec<(Millis, ScenarioInput)> {
        self.steps
            .iter()
            .flat_map(|s| {
                let now = self.at(s.at_secs);
                let ev = s.event.as_ref().map(|e| {
                    ScenarioInput::Event(InventoryEvent {
                        event_id: e.event_id.clone(),
                        system: e.system.clone(),
                        source_seq: e.source_seq,
                        event_type: e.event_type,
                        sku: e.sku.clone(),
                        location: e.location.clone(),
                        measure: e.measure,
                        mode: e.mode,
                        quantity: e.quantity,
                        occurred_at: e.occurred_at_secs.map_or(now, |t| self.at(t)),
                        based_on_version: e.based_on_version,
                        data_as_of: e.data_as_of_secs.map(|t| self.at(t)),
                        reason: e.reason.clone(),
                        causation_id: None,
                        correlation_id: None,
                        order_ref: e.order_ref.clone(),
                        po_ref: None,
                        shipment_ref: None,
                        line_ref: e.line_ref.clone(),
                    })
                });
                let cmd = s.command.as_ref().map(|c| {
                    ScenarioInput::Command(ReservationCommand {
                        command_id: c.command_id.clone(),
                        command: c.command,
                        reservation_id: c.reservation_id.clone(),
                        sku: c.sku.clone(),
                        location: c.location.clone(),
                        quantity: c.quantity,
                        channel: c.channel.clone(),
                        ttl_ms: c.ttl_secs.map(|t| t.saturating_mul(1000)),
                        issued_at: now,
                        order_ref: c.order_ref.clone(),
                        line_ref: c.line_ref.clone(),
                    })
                });
                ev.into_iter().chain(cmd).map(move |i| (now, i))
            })
            .collect()
    }
}

/// Everything a run produced, keyed outputs in order with their processing time.
#[derive(Debug, Default)]
pub struct Run {
    /// (time, key, output) in emission order.
    pub outputs: Vec<(Millis, String, Output)>,
    /// Inputs the fold rejected, with the reason.
    pub rejected: Vec<(Millis, Rejection)>,
    /// Inputs that were duplicates or superseded.
    pub ignored: Vec<(Millis, Outcome)>,
}

/// Runs `inputs` through the fold the way the processor does: before each input at time `t`,
/// every timer due at or before `t` fires at its own deadline; at the end, timers up to `end`
/// fire. One state per key.
pub fn run(
    model: &Model,
    inputs: &[(Millis, ScenarioInput)],
    end: Millis,
) -> (Run, Vec<(String, KeyState)>) {
    let mut states: Vec<(String, KeyState)> = Vec::new();
    let mut result = Run::default();
    let mut buf = Vec::new();
    let fire_until = |states: &mut Vec<(String, KeyState)>,
                      t: Millis,
                      result: &mut Run,
                      buf: &mut Vec<Output>| loop {
        let due = states
            .iter()
            .enumerate()
            .filter_map(|(i, (_, s))| s.next_timer().map(|d| (d, i)))
            .filter(|(d, _)| *d <= t)
            .min();
        let Some((deadline, i)) = due else { break };
        buf.clear();
        let (key, st) = &mut states[i];
        // Timers never reject.
        let _ = apply(model, st, Input::Timer, deadline, buf);
        result
            .outputs
            .extend(buf.drain(..).map(|o| (deadline, key.clone(), o)));
    };
    for (now, input) in inputs {
        fire_until(&mut states, *now, &mut result, &mut buf);
        let (sku, loc) = input.key();
        let key = crate::event::message_key(sku, loc);
        let i = match states.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                states.push((key.clone(), KeyState::default()));
                states.len() - 1
            }
        };
        buf.clear();
        let st = &mut states[i].1;
        let r = match input {
            ScenarioInput::Event(e) => apply(model, st, Input::Event(e), *now, &mut buf),
            ScenarioInput::Command(c) => apply(model, st, Input::Command(c), *now, &mut buf),
        };
        match r {
            Ok(Outcome::Applied) => {}
            Ok(o) => result.ignored.push((*now, o)),
            Err(e) => result.rejected.push((*now, e)),
        }
        result
            .outputs
            .extend(buf.drain(..).map(|o| (*now, key.clone(), o)));
    }
    fire_until(&mut states, end, &mut result, &mut buf);
    (result, states)
}

/// The cascade path of an alert: system names from the root's origin to the alerting system.
pub fn cascade_path(model: &Model, origin: SysId, system: SysId) -> Vec<String> {
    match model.route(origin, system) {
        Some(r) => r.path.iter().map(|s| model.name(*s).to_owned()).collect(),
        None if origin == system => vec![model.name(system).to_owned()],
        None => vec![model.name(origin).to_owned(), model.name(system).to_owned()],
    }
}

/// The stable id of an alert: the same on every replay, and shared by an alert and the
/// RESOLVED that closes it.
pub fn alert_id(model: &Model, key: &str, a: &Alert) -> String {
    let kind = a.resolves.unwrap_or(a.kind);
    if a.trigger.is_empty() {
        format!(
            "{}/{}/{}/{}/v{}",
            key,
            model.name(a.system),
            a.measure.as_str(),
            kind.as_str(),
            a.opened_version
        )
    } else {
        format!(
            "{}/{}/{}/{}",
            key,
            model.name(a.system),
            kind.as_str(),
            a.trigger
        )
    }
}

/// The incident `a` belongs to: `KIND/origin->system/<interval start>`. Alerts of one kind on
/// one handoff whose divergence began within the same window-long interval (the handoff's
/// window, or [`crate::incident::INCIDENT_INTERVAL_MS`] for one-shot kinds) are one incident, so a broken
/// handoff pages once rather than once per SKU. Stable across replays (a function of the
/// alert alone); a RESOLVED carries the incident of the alert it closes.
pub fn incident_id(model: &Model, a: &Alert) -> String {
    let (start, _) = crate::incident::incident_interval(a);
    incident_id_of(
        model,
        a.resolves.unwrap_or(a.kind),
        a.origin,
        a.system,
        start,
    )
}

/// The incident id of `kind` on the handoff `origin -> system` for the interval at `start`.
pub fn incident_id_of(
    model: &Model,
    kind: AlertKind,
    origin: SysId,
    system: SysId,
    start: Millis,
) -> String {
    format!(
        "{}/{}->{}/{}",
        kind.as_str(),
        model.name(origin),
        model.name(system),
        start
    )
}

/// An alert in the scenario's terms.
pub fn describe_alert(model: &Model, scenario: &Scenario, at: Millis, a: &Alert) -> ExpectedAlert {
    ExpectedAlert {
        at_secs: (at - scenario.start_ms) / 1000,
        kind: a.kind,
        resolves: a.resolves,
        system: model.name(a.system).to_owned(),
        measure: Some(a.measure),
        expected: Some(a.expected),
        observed: Some(a.observed),
        root: a.root.event_id.to_string(),
        path: cascade_path(model, a.origin, a.system),
        duration_secs: a.resolved_at.map(|r| (r - a.diverged_at) / 1000),
    }
}

fn describe_propagation(
    model: &Model,
    scenario: &Scenario,
    at: Millis,
    p: &Propagation,
) -> ExpectedPropagation {
    ExpectedPropagation {
        at_secs: (at - scenario.start_ms) / 1000,
        target: model.name(p.target).to_owned(),
        version: p.version,
        root: p.root.event_id.to_string(),
        on_hand: Some(p.state.on_hand),
        available: Some(p.state.available),
        deadline_secs: Some((p.deadline - scenario.start_ms) / 1000),
    }
}

fn describe_decision(scenario: &Scenario, at: Millis, d: &Decision) -> ExpectedDecision {
    ExpectedDecision {
        at_secs: (at - scenario.start_ms) / 1000,
        reservation_id: d.reservation_id.to_string(),
        kind: d.kind,
        available: Some(d.available),
    }
}

fn alert_matches(want: &ExpectedAlert, got: &ExpectedAlert) -> bool {
    want.at_secs == got.at_secs
        && want.kind == got.kind
        && want.resolves == got.resolves
        && want.system == got.system
        && want.root == got.root
        && (want.measure.is_none() || want.measure == got.measure)
        && (want.expected.is_none() || want.expected == got.expected)
        && (want.observed.is_none() || want.observed == got.observed)
        && (want.path.is_empty() || want.path == got.path)
        && (want.duration_secs.is_none() || want.duration_secs == got.duration_secs)
}

fn propagation_matches(want: &ExpectedPropagation, got: &ExpectedPropagation) -> bool {
    want.at_secs == got.at_secs
        && want.target == got.target
        && want.version == got.version
        && want.root == got.root
        && (want.on_hand.is_none() || want.on_hand == got.on_hand)
        && (want.available.is_none() || want.available == got.available)
        && (want.deadline_secs.is_none() || want.deadline_secs == got.deadline_secs)
}

/// Compares a run with the scenario's expectations: alerts and decisions exactly and in
/// order, every expected propagation present.
///
/// # Errors
/// A readable report of every mismatch.
pub fn check(model: &Model, scenario: &Scenario, run: &Run) -> Result<(), String> {
    let mut problems = Vec::new();
    let alerts: Vec<ExpectedAlert> = run
        .outputs
        .iter()
        .filter_map(|(t, _, o)| match o {
            Output::Alert(a) => Some(describe_alert(model, scenario, *t, a)),
            _ => None,
        })
        .collect();
    if alerts.len() != scenario.alerts.len()
        || !scenario
            .alerts
            .iter()
            .zip(&alerts)
            .all(|(w, g)| alert_matches(w, g))
    {
        problems.push(format!(
            "alerts differ.\n  expected: {:#?}\n  got: {:#?}",
            scenario.alerts, alerts
        ));
    }
    let decisions: Vec<ExpectedDecision> = run
        .outputs
        .iter()
        .filter_map(|(t, _, o)| match o {
            Output::Decision(d) => Some(describe_decision(scenario, *t, d)),
            _ => None,
        })
        .collect();
    let decisions_match = decisions.len() == scenario.decisions.len()
        && scenario.decisions.iter().zip(&decisions).all(|(w, g)| {
            w.at_secs == g.at_secs
                && w.reservation_id == g.reservation_id
                && w.kind == g.kind
                && (w.available.is_none() || w.available == g.available)
        });
    if !decisions_match {
        problems.push(format!(
            "decisions differ.\n  expected: {:#?}\n  got: {:#?}",
            scenario.decisions, decisions
        ));
    }
    let props: Vec<ExpectedPropagation> = run
        .outputs
        .iter()
        .filter_map(|(t, _, o)| match o {
            Output::Propagation(p) => Some(describe_propagation(model, scenario, *t, p)),
            _ => None,
        })
        .collect();
    for want in &scenario.propagations {
        if !props.iter().any(|g| propagation_matches(want, g)) {
            problems.push(format!("missing propagation {want:?}"));
        }
    }
    if !run.rejected.is_empty() {
        problems.push(format!("inputs rejected: {:?}", run.rejected));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
