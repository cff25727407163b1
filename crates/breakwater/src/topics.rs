//! `breakwater topics`: creates the topics a config needs, co-partitioned.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;
use crate::processor::base_client_config;

/// Every topic of `cfg`, with whether it is compacted (the changelog).
pub fn all_topics(cfg: &Config) -> Vec<(String, bool)> {
    let mut t: Vec<(String, bool)> = Vec::new();
    for s in cfg.model.systems() {
        t.push((s.input_topic.clone(), false));
        t.push((s.propagation_topic.clone(), false));
    }
    for name in [
        &cfg.topics.reservations,
        &cfg.topics.ticks,
        &cfg.topics.alerts,
        &cfg.topics.decisions,
        &cfg.topics.incidents,
        &cfg.topics.dead_letter,
    ] {
        t.push((name.clone(), false));
    }
    t.push((cfg.topics.changelog.clone(), true));
    t
}

/// Creates every missing topic with `partitions` partitions and `replication` replicas.
/// Returns the topics it created. Existing topics are left alone (the processor checks their
/// partition counts at start).
///
/// # Errors
/// Kafka errors other than "already exists".
pub async fn create_topics(
    cfg: &Config,
    partitions: i32,
    replication: i32,
) -> Result<Vec<String>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base_client_config(cfg).create()?;
    let probe: BaseConsumer = base_client_config(cfg)
        .set("allow.auto.create.topics", "false")
        .create()?;
    let md = probe.fetch_metadata(None, Duration::from_secs(30))?;
    let existing: Vec<&str> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    let wanted = all_topics(cfg);
    let missing: Vec<&(String, bool)> = wanted
        .iter()
        .filter(|(t, _)| !existing.contains(&t.as_str()))
        .collect();
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(t, compact)| {
            let n = NewTopic::new(t, partitions, TopicReplication::Fixed(replication));
            if *compact {
                n.set("cleanup.policy", "compact")
            } else {
                n
            }
        })
        .collect();
    let mut created = Vec::new();
    if new.is_empty() {
        return Ok(created);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics(&new, &opts).await? {
        match r {
            Ok(t) => created.push(t),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                tracing::error!(topic = %t, error = %e, "creating topic failed");
                return Err(KafkaError::AdminOp(e));
            }
        }
    }
    Ok(created)
}
