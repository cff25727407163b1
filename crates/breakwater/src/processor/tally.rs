//! What one batch did, counted without allocating and recorded in the metrics only when the
//! batch commits: counters count what was committed, not what was produced before an abort.

use std::collections::BTreeMap;

use breakwater_core::{AlertKind, IncidentStatus, Model, SysId};

use crate::metrics as m;

/// What one batch did, recorded in the metrics only when the batch commits (an aborted batch
/// is read again and would count twice). Keyed without strings, so counting allocates
/// nothing per record; the labels are formatted once per commit.
#[derive(Default)]
pub(crate) struct Tally {
    /// (input topic index in `Engine::order`, outcome).
    pub(crate) inputs: BTreeMap<(usize, &'static str), u64>,
    /// (input topic index, reason code).
    pub(crate) dead_letters: BTreeMap<(usize, &'static str), u64>,
    pub(crate) propagations: BTreeMap<SysId, u64>,
    pub(crate) alerts: BTreeMap<(AlertKind, SysId), u64>,
    /// RESOLVED alerts: (the kind resolved, system).
    pub(crate) resolved: BTreeMap<(AlertKind, SysId), u64>,
    pub(crate) suppressed: BTreeMap<(AlertKind, SysId), u64>,
    pub(crate) decisions: BTreeMap<&'static str, u64>,
    pub(crate) incidents: BTreeMap<(AlertKind, IncidentStatus), u64>,
    pub(crate) actions: BTreeMap<(SysId, &'static str), u64>,
    /// (origin, system, latency ms, within the window).
    pub(crate) convergences: Vec<(SysId, SysId, i64, bool)>,
}

impl Tally {
    pub(crate) fn count<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) {
        *map.entry(key).or_default() += 1;
    }

    /// Records the batch in the metrics and empties the tally.
    pub(crate) fn record(&mut self, model: &Model, order: &[String]) {
        let topic = |i: usize| order.get(i).cloned().unwrap_or_default();
        for ((t, outcome), n) in std::mem::take(&mut self.inputs) {
            metrics::counter!(m::INPUT_RECORDS, "topic" => topic(t), "outcome" => outcome)
                .increment(n);
        }
        for ((t, reason), n) in std::mem::take(&mut self.dead_letters) {
            metrics::counter!(m::DEAD_LETTERS, "topic" => topic(t), "reason" => reason)
                .increment(n);
        }
        for (sys, n) in std::mem::take(&mut self.propagations) {
            metrics::counter!(m::PROPAGATIONS, "system" => model.name(sys).to_owned()).increment(n);
        }
        for ((kind, sys), n) in std::mem::take(&mut self.alerts) {
            metrics::counter!(m::ALERTS, "kind" => kind.as_str(), "system" => model.name(sys).to_owned())
                .increment(n);
        }
        for ((kind, sys), n) in std::mem::take(&mut self.resolved) {
            metrics::counter!(m::ALERTS_RESOLVED, "kind" => kind.as_str(), "system" => model.name(sys).to_owned())
                .increment(n);
        }
        for ((kind, sys), n) in std::mem::take(&mut self.suppressed) {
            metrics::counter!(m::ALERTS_SUPPRESSED, "kind" => kind.as_str(), "system" => model.name(sys).to_owned())
                .increment(n);
        }
        for (decision, n) in std::mem::take(&mut self.decisions) {
            metrics::counter!(m::DECISIONS, "decision" => decision).increment(n);
        }
        for ((kind, status), n) in std::mem::take(&mut self.incidents) {
            metrics::counter!(m::INCIDENTS, "kind" => kind.as_str(), "status" => status.as_str())
                .increment(n);
        }
        for ((sys, outcome), n) in std::mem::take(&mut self.actions) {
            metrics::counter!(m::ACTIONS, "system" => model.name(sys).to_owned(), "outcome" => outcome)
                .increment(n);
        }
        for (origin, sys, latency_ms, within) in self.convergences.drain(..) {
            let handoff = format!("{}->{}", model.name(origin), model.name(sys));
            metrics::histogram!(m::HANDOFF_LATENCY, "handoff" => handoff.clone())
                .record(latency_ms as f64 / 1000.0);
            metrics::counter!(m::HANDOFF_CONVERGENCES, "handoff" => handoff, "within" => if within { "true" } else { "false" })
                .increment(1);
        }
    }

    /// Forgets the batch (it was aborted).
    pub(crate) fn clear(&mut self) {
        *self = Tally::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// Counter values by name and labels, as `name{k=v,...}`.
    fn counters(snapshotter: &metrics_util::debugging::Snapshotter) -> BTreeMap<String, u64> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) => {
                    let k = key.key();
                    let labels: Vec<String> = k
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect();
                    Some((format!("{}{{{}}}", k.name(), labels.join(",")), n))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_aborted_batch_counts_nothing_and_a_committed_one_counts_once() {
        let cfg = Config::from_toml(include_str!("../../../../deploy/breakwater.toml")).unwrap();
        let order = vec!["inventory.wms.events".to_owned()];
        let wms = cfg.model.system_by_name("wms").unwrap().id;
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let mut t = Tally::default();
            // A batch that aborts: an input, an alert, a propagation, a convergence.
            Tally::count(&mut t.inputs, (0, "applied"));
            Tally::count(&mut t.alerts, (AlertKind::Oversell, wms));
            Tally::count(&mut t.propagations, wms);
            t.convergences.push((wms, wms, 1_000, true));
            t.clear();
            t.record(&cfg.model, &order);
            // The batch read again, committed.
            Tally::count(&mut t.inputs, (0, "applied"));
            Tally::count(&mut t.inputs, (0, "applied"));
            Tally::count(&mut t.alerts, (AlertKind::Oversell, wms));
            t.record(&cfg.model, &order);
            // Recorded once: a second record adds nothing.
            t.record(&cfg.model, &order);
        });
        let c = counters(&snapshotter);
        assert_eq!(
            c.get("breakwater_input_records_total{topic=inventory.wms.events,outcome=applied}"),
            Some(&2),
            "{c:?}"
        );
        assert_eq!(
            c.get("breakwater_alerts_total{kind=OVERSELL,system=wms}"),
            Some(&1),
            "{c:?}"
        );
        assert!(
            !c.keys().any(|k| k.starts_with("breakwater_propagation")),
            "{c:?}"
        );
        assert!(
            !c.keys().any(|k| k.starts_with("breakwater_handoff")),
            "{c:?}"
        );
    }
}
