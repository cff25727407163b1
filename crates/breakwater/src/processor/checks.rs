//! The start-up checks of the topic layout: every input topic exists and they are
//! co-partitioned, Breakwater's own topics have a partition for every input partition, the
//! changelog is compacted-only, and the dead-letter topic's record limit.

use std::collections::HashMap;
use std::time::Duration;

use breakwater_core::SysId;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::runtime::Handle;
use tracing::warn;

use super::base_client_config;
use super::dead_letter::dead_letter_limit;
use super::error::{kafka, ProcessorError};
use crate::config::Config;

/// What an input topic carries.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TopicKind {
    /// Count events of one system.
    Events(SysId),
    /// Reservation commands.
    Commands,
    /// Clock ticks.
    Ticks,
}

/// The input topics of `cfg` and what each carries: every system's, the reservations, the
/// ticks.
pub(crate) fn input_topics(cfg: &Config) -> Vec<(String, TopicKind)> {
    let mut inputs: Vec<(String, TopicKind)> = cfg
        .model
        .systems()
        .iter()
        .map(|s| (s.input_topic.clone(), TopicKind::Events(s.id)))
        .collect();
    inputs.push((cfg.topics.reservations.clone(), TopicKind::Commands));
    inputs.push((cfg.topics.ticks.clone(), TopicKind::Ticks));
    inputs
}

/// Checks the input topics exist and are co-partitioned, and that Breakwater's own topics
/// have at least as many partitions. Returns what each input topic carries.
///
/// # Errors
/// [`ProcessorError::Topics`] naming every problem; Kafka errors.
pub(crate) fn check_topics(cfg: &Config) -> Result<HashMap<String, TopicKind>, ProcessorError> {
    let probe: BaseConsumer = base_client_config(cfg)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(kafka("create metadata client"))?;
    let md = probe
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(kafka("fetch metadata"))?;
    let count = |t: &str| {
        md.topics()
            .iter()
            .find(|mt| mt.name() == t && mt.error().is_none())
            .map(|mt| mt.partitions().len())
    };
    let inputs = input_topics(cfg);
    let mut problems = Vec::new();
    let mut partitions = None;
    for (t, _) in &inputs {
        match count(t) {
            None => problems.push(format!("input topic {t:?} does not exist")),
            Some(n) => match partitions {
                None => partitions = Some((n, t.clone())),
                Some((p, ref first)) if p != n => problems.push(format!(
                    "input topics are not co-partitioned: {t:?} has {n} partitions, {first:?} has {p}"
                )),
                Some(_) => {}
            },
        }
    }
    if let Some((n, _)) = partitions {
        let mut outputs: Vec<&str> = cfg
            .model
            .systems()
            .iter()
            .map(|s| s.propagation_topic.as_str())
            .collect();
        outputs.extend([
            cfg.topics.alerts.as_str(),
            cfg.topics.decisions.as_str(),
            cfg.topics.incidents.as_str(),
            cfg.topics.dead_letter.as_str(),
            cfg.topics.changelog.as_str(),
        ]);
        for t in outputs {
            match count(t) {
                None => problems.push(format!("output topic {t:?} does not exist")),
                Some(c) if c < n => problems.push(format!(
                    "output topic {t:?} has {c} partitions; it needs at least {n} (one per input partition)"
                )),
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        Ok(inputs.into_iter().collect())
    } else {
        Err(ProcessorError::Topics(format!(
            "{} (create them with `breakwater topics --config FILE`)",
            problems.join("; ")
        )))
    }
}

/// The checks of topic configs, in one DescribeConfigs round trip: the changelog's cleanup
/// policy ([`check_changelog`]) and the dead-letter topic's record limit
/// ([`dead_letter_limit`]), which it returns. Without DescribeConfigs (an ACL, librdkafka's
/// mock cluster) the policy is not checked and the limit is the producer's, each said in a
/// warning. Runs beside the loop: a broker without DescribeConfigs answers only after its
/// timeout.
///
/// # Errors
/// [`ProcessorError::ChangelogPolicy`].
pub(crate) fn topic_configs(cfg: &Config, rt: &Handle) -> Result<usize, ProcessorError> {
    use rdkafka::admin::{AdminClient, AdminOptions, OwnedResourceSpecifier, ResourceSpecifier};
    let (changelog, dead_letter) = (
        cfg.topics.changelog.as_str(),
        cfg.topics.dead_letter.as_str(),
    );
    let described: Result<Vec<_>, ProcessorError> = (|| {
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = base_client_config(cfg)
            .create()
            .map_err(kafka("create admin client"))?;
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let topics = [
            ResourceSpecifier::Topic(changelog),
            ResourceSpecifier::Topic(dead_letter),
        ];
        rt.block_on(admin.describe_configs(&topics, &opts))
            .map_err(kafka("describe topic configs"))
    })();
    let entry = |topic: &str, name: &str| -> Option<String> {
        described
            .as_ref()
            .ok()?
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .find_map(|r| {
                let of_topic =
                    matches!(&r.specifier, OwnedResourceSpecifier::Topic(t) if t == topic);
                r.entries
                    .iter()
                    .find(|e| of_topic && e.name == name)
                    .and_then(|e| e.value.clone())
            })
    };
    if let Err(e) = &described {
        warn!(error = %e, "cannot read the changelog's and dead-letter topic's configs; cleanup.policy not checked, dead-letter limit assumed to be the producer's");
    }
    check_changelog(changelog, entry(changelog, "cleanup.policy"))?;
    Ok(dead_letter_limit(
        cfg,
        entry(dead_letter, "max.message.bytes"),
    ))
}

/// The changelog must be compacted and nothing else: with `delete` (or `compact,delete`) in
/// its cleanup policy, retention removes the last state of every key that has not changed
/// for `retention.ms`, and a restore would silently rebuild a partition without them.
/// Unknown (`None`) passes.
fn check_changelog(topic: &str, policy: Option<String>) -> Result<(), ProcessorError> {
    let Some(policy) = policy else {
        return Ok(());
    };
    let parts: Vec<&str> = policy.split(',').map(str::trim).collect();
    if parts.contains(&"compact") && !parts.contains(&"delete") {
        return Ok(());
    }
    Err(ProcessorError::ChangelogPolicy(format!(
        "the changelog topic {topic:?} has cleanup.policy={policy:?}; it must be \"compact\" \
         (with delete, retention drops the state of keys that have not changed for \
         retention.ms and a restore would miss them): kafka-configs --alter --entity-type \
         topics --entity-name {topic} --add-config cleanup.policy=compact"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_compacted_only_changelog_passes() {
        for ok in [None, Some("compact"), Some(" compact ")] {
            assert!(
                check_changelog("cl", ok.map(str::to_owned)).is_ok(),
                "{ok:?}"
            );
        }
        for bad in ["delete", "compact,delete", "delete, compact"] {
            let e = check_changelog("cl", Some(bad.to_owned())).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains("cleanup.policy=compact"), "{msg}");
        }
    }
}
