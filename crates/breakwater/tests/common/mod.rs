//! Helpers for tests against a real Kafka broker (`make test` starts one).

#![allow(dead_code)] // each test binary uses a different subset

pub mod processor;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// The environment variable `make test` sets to the broker's address.
pub const BOOTSTRAP_ENV: &str = "BREAKWATER_KAFKA_BOOTSTRAP";

/// The real broker's bootstrap address.
///
/// # Panics
/// When the variable is unset: these tests are `#[ignore]`d by default and run by `make test`,
/// which starts a broker first.
pub fn bootstrap() -> String {
    std::env::var(BOOTSTRAP_ENV).unwrap_or_else(|_| {
        panic!("{BOOTSTRAP_ENV} is not set: run `make test`, which starts a Kafka broker")
    })
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Creates `topics` with `partitions` partitions each and waits for the broker to confirm.
pub async fn create_topics(bootstrap: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin
        .create_topics(&new, &opts)
        .await
        .expect("create_topics")
    {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// Sets one config of `topic` (AlterConfigs: the topic's other overrides are reset).
pub async fn alter_topic(bootstrap: &str, topic: &str, key: &str, value: &str) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
    for r in admin.alter_configs([&change], &opts).await.unwrap() {
        r.unwrap();
    }
}
