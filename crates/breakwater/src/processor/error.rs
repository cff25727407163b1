//! Why the processor stopped, and what that means: its error type, whose variant alone decides
//! whether a new incarnation can get past it or an operator must act.

use breakwater_codec::CodecError;
use breakwater_store::StoreError;
use rdkafka::error::KafkaError;

/// What to do after a [`ProcessorError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Start a new incarnation: new clients, every task reopened from its committed state and
    /// the open batch read again from the committed offsets (a broker that went away, a fenced
    /// producer, a timed-out commit, a full disk that was cleared).
    Restart,
    /// Topics still appearing: restart, but only within the start-up grace period (topics
    /// created just before start take a moment to show in metadata); after it, exit.
    RestartWithinGrace,
    /// Exit non-zero: starting again cannot help and would only hide the problem (a topic
    /// layout or changelog policy to fix, state that cannot be restored, a duplicate instance
    /// id that two live processes would fence each other with forever).
    Exit,
}

/// Why the processor stopped or restarted.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A Kafka operation failed.
    #[error("kafka: {op}: {source}")]
    Kafka {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: KafkaError,
    },
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// Encoding an output failed (a bug or a registry that refuses our schemas).
    #[error("encoding an output for {topic}: {source}")]
    Encode {
        /// The topic.
        topic: String,
        /// The error.
        #[source]
        source: Box<CodecError>,
    },
    /// Topics are missing or not co-partitioned.
    #[error("topics: {0}")]
    Topics(String),
    /// librdkafka reported a fatal consumer error (for example another live member with the
    /// same `group.instance.id`): this client can do nothing more, and starting again would
    /// only fence the other instance in turn.
    #[error("fatal kafka error: {0}")]
    Fatal(String),
    /// The changelog topic is not compacted-only.
    #[error("{0}")]
    ChangelogPolicy(String),
    /// A partition's state cannot be rebuilt: the changelog lost records this instance needs
    /// (deleted or recreated). An operator must rebuild it (see the message).
    #[error("partition {partition}'s state cannot be restored: {detail}")]
    StateLost {
        /// The partition.
        partition: i32,
        /// What was lost and what to do.
        detail: String,
    },
    /// Restoring a partition from the changelog failed.
    #[error("restoring partition {partition}: {detail}")]
    Restore {
        /// The partition.
        partition: i32,
        /// What went wrong.
        detail: String,
    },
}

impl ProcessorError {
    /// A bounded label for the restarts metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorError::Kafka { .. } => "kafka",
            ProcessorError::Store(_) => "store",
            ProcessorError::Encode { .. } => "encode",
            ProcessorError::Topics(_) => "topics",
            ProcessorError::Fatal(_) => "fatal",
            ProcessorError::StateLost { .. } => "state_lost",
            ProcessorError::ChangelogPolicy(_) => "changelog_policy",
            ProcessorError::Restore { .. } => "restore",
        }
    }

    /// What to do about it.
    pub fn recovery(&self) -> Recovery {
        match self {
            ProcessorError::Kafka { .. }
            | ProcessorError::Store(_)
            | ProcessorError::Encode { .. }
            | ProcessorError::Restore { .. } => Recovery::Restart,
            ProcessorError::Topics(_) => Recovery::RestartWithinGrace,
            ProcessorError::Fatal(_)
            | ProcessorError::ChangelogPolicy(_)
            | ProcessorError::StateLost { .. } => Recovery::Exit,
        }
    }
}

/// Maps a Kafka error to a [`ProcessorError::Kafka`] naming the operation.
pub(crate) fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> ProcessorError {
    move |source| ProcessorError::Kafka { op, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn only_what_a_new_incarnation_can_get_past_is_restarted() {
        let restart = [
            kafka("commit_transaction")(KafkaError::Global(RDKafkaErrorCode::Fenced)),
            ProcessorError::Restore {
                partition: 0,
                detail: "x".into(),
            },
        ];
        for e in &restart {
            assert_eq!(e.recovery(), Recovery::Restart, "{e}");
        }
        assert_eq!(
            ProcessorError::Topics("missing".into()).recovery(),
            Recovery::RestartWithinGrace
        );
        let exit = [
            ProcessorError::Fatal("FENCED_INSTANCE_ID".into()),
            ProcessorError::ChangelogPolicy("delete".into()),
            ProcessorError::StateLost {
                partition: 3,
                detail: "deleted".into(),
            },
        ];
        for e in &exit {
            assert_eq!(e.recovery(), Recovery::Exit, "{e}");
        }
    }
}
