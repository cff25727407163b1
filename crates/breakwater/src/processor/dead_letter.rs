//! The dead-letter writer: a record that cannot be folded goes, unchanged, to the dead-letter
//! topic with its reason and origin in headers. Its offset still advances with the batch: the
//! record is handled, not lost.

use breakwater_core::Millis;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::Message;
use tracing::warn;

use crate::config::Config;

/// Headers on every dead-letter record.
pub mod dlq_headers {
    /// Short reason code (`undecodable`, `unknown_system`, `impossible_quantity`, ...).
    pub const REASON_CODE: &str = "breakwater.dlq.reason_code";
    /// Human-readable reason.
    pub const REASON: &str = "breakwater.dlq.reason";
    /// Source topic.
    pub const TOPIC: &str = "breakwater.dlq.topic";
    /// Source partition.
    pub const PARTITION: &str = "breakwater.dlq.partition";
    /// Source offset.
    pub const OFFSET: &str = "breakwater.dlq.offset";
    /// Source record timestamp (ms), if it had one.
    pub const TIMESTAMP: &str = "breakwater.dlq.timestamp";
    /// Present when the value was cut to fit the dead-letter topic's `max.message.bytes`:
    /// the original value's length in bytes (the whole record stays at its source offset).
    pub const TRUNCATED_FROM: &str = "breakwater.dlq.truncated_from";
}

/// Room kept in a dead-letter record for the record batch and record framing, besides the
/// key and headers (Kafka's batch header is 61 bytes; a record's own framing under 30).
const DLQ_FRAMING: usize = 512;

/// A dead-letter record for `msg`, for `topic`, in the source partition: the source key and
/// value, our headers (reason, origin) then the record's own. A record without a timestamp
/// takes `stream_time`. A value that would make the record larger than `max_bytes` (which
/// would abort every transaction it is in, for ever) is cut to fit, and
/// [`dlq_headers::TRUNCATED_FROM`] says so.
pub(crate) fn dead_letter_record<'a, M: Message>(
    topic: &'a str,
    msg: &'a M,
    code: &str,
    reason: &str,
    max_bytes: usize,
    stream_time: Millis,
) -> BaseRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: dlq_headers::REASON_CODE,
            value: Some(code),
        })
        .insert(Header {
            key: dlq_headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: dlq_headers::TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: dlq_headers::PARTITION,
            value: Some(&msg.partition().to_string()),
        })
        .insert(Header {
            key: dlq_headers::OFFSET,
            value: Some(&msg.offset().to_string()),
        });
    let ts = msg.timestamp().to_millis();
    if let Some(t) = ts {
        headers = headers.insert(Header {
            key: dlq_headers::TIMESTAMP,
            value: Some(&t.to_string()),
        });
    }
    if let Some(h) = msg.headers() {
        for i in 0..h.count() {
            let hd = h.get(i);
            headers = headers.insert(Header {
                key: hd.key,
                value: hd.value,
            });
        }
    }
    let key = msg.key().unwrap_or_default();
    let mut payload = msg.payload().unwrap_or_default();
    let header_bytes: usize = (0..headers.count())
        .map(|i| {
            let h = headers.get(i);
            h.key.len() + h.value.map_or(0, <[u8]>::len) + 10
        })
        .sum();
    // Room for the truncation header too: its name, a length of up to 20 digits, framing.
    let truncation_header = dlq_headers::TRUNCATED_FROM.len() + 20 + 10;
    let room = max_bytes.saturating_sub(DLQ_FRAMING + key.len() + header_bytes + truncation_header);
    if payload.len() > room {
        warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            bytes = payload.len(),
            room,
            "dead-lettered record too large for the dead-letter topic; its value is cut"
        );
        headers = headers.insert(Header {
            key: dlq_headers::TRUNCATED_FROM,
            value: Some(&payload.len().to_string()),
        });
        payload = &payload[..room];
    }
    BaseRecord::to(topic)
        .partition(msg.partition())
        .key(key)
        .payload(payload)
        .timestamp(ts.unwrap_or(stream_time))
        .headers(headers)
}

/// The largest record the dead-letter topic takes: its `max.message.bytes` (as described),
/// capped by the producer's `message.max.bytes`.
pub(crate) fn dead_letter_limit(cfg: &Config, topic_max: Option<String>) -> usize {
    let producer_max = cfg
        .kafka
        .librdkafka_options
        .get("message.max.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1_000_000);
    // Unknown: the broker's default (1048588), which the producer's own limit is below.
    topic_max
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(producer_max, |m| m.min(producer_max))
}

/// The message key must be the record's `sku|location`: anything else means the producer
/// keyed it differently, and it may sit in the wrong partition.
pub(crate) fn key_problem<M: Message>(msg: &M, key: &str) -> Option<String> {
    match msg.key() {
        Some(k) if k == key.as_bytes() => None,
        Some(k) => Some(format!(
            "message key {:?} is not the record's key {key:?} (sku|location)",
            String::from_utf8_lossy(k)
        )),
        None => Some(format!(
            "message has no key; expected {key:?} (sku|location)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn source(payload: &[u8], ts: Option<i64>) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(b"SKU-1|DC-1".to_vec()),
            "inventory.wms.events".into(),
            ts.map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
            3,
            41,
            Some(OwnedHeaders::new().insert(Header {
                key: "trace",
                value: Some("abc"),
            })),
        )
    }

    fn headers(rec: &BaseRecord<'_, [u8], [u8]>) -> Vec<(String, String)> {
        let h = rec.headers.as_ref().expect("headers");
        (0..h.count())
            .map(|i| {
                let x = h.get(i);
                (
                    x.key.to_owned(),
                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_record_keeps_its_bytes_origin_and_own_headers() {
        let msg = source(b"{not json", Some(1_700_000_000_000));
        let rec = dead_letter_record("dlq", &msg, "json_decode", "expected value", 1_000_000, 5);
        assert_eq!(rec.topic, "dlq");
        assert_eq!(rec.partition, Some(3));
        assert_eq!(rec.key, Some(&b"SKU-1|DC-1"[..]));
        assert_eq!(rec.payload, Some(&b"{not json"[..]));
        assert_eq!(rec.timestamp, Some(1_700_000_000_000));
        let h = headers(&rec);
        let want = [
            (dlq_headers::REASON_CODE, "json_decode"),
            (dlq_headers::REASON, "expected value"),
            (dlq_headers::TOPIC, "inventory.wms.events"),
            (dlq_headers::PARTITION, "3"),
            (dlq_headers::OFFSET, "41"),
            (dlq_headers::TIMESTAMP, "1700000000000"),
            ("trace", "abc"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(h, want);
    }

    #[test]
    fn a_record_without_a_timestamp_takes_stream_time() {
        let msg = source(b"x", None);
        let rec = dead_letter_record("dlq", &msg, "empty_payload", "r", 1_000_000, 777);
        assert_eq!(rec.timestamp, Some(777));
        assert!(!headers(&rec)
            .iter()
            .any(|(k, _)| k == dlq_headers::TIMESTAMP));
    }

    #[test]
    fn a_value_too_large_for_the_topic_is_cut_to_fit_and_says_so() {
        let big = vec![b'x'; 50_000];
        let msg = source(&big, Some(1));
        let rec = dead_letter_record("dlq", &msg, "too_large", "r", 10_000, 0);
        let payload = rec.payload.expect("payload");
        let h = headers(&rec);
        let framed: usize = payload.len()
            + rec.key.map_or(0, <[u8]>::len)
            + h.iter().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>();
        assert!(framed + DLQ_FRAMING <= 10_000, "{framed} bytes");
        assert!(payload.len() > 8_000, "kept most of it: {}", payload.len());
        assert_eq!(&big[..payload.len()], payload);
        assert!(h.contains(&(dlq_headers::TRUNCATED_FROM.to_owned(), "50000".to_owned())));
        // A value that fits is not cut.
        let rec = dead_letter_record("dlq", &msg, "too_large", "r", 1_000_000, 0);
        assert_eq!(rec.payload.map(<[u8]>::len), Some(50_000));
        assert!(!headers(&rec)
            .iter()
            .any(|(k, _)| k == dlq_headers::TRUNCATED_FROM));
    }

    #[test]
    fn a_message_keyed_other_than_sku_location_is_named() {
        let msg = source(b"x", None);
        assert_eq!(key_problem(&msg, "SKU-1|DC-1"), None);
        let problem = key_problem(&msg, "SKU-2|DC-1").expect("mismatch");
        assert!(problem.contains("SKU-2|DC-1") && problem.contains("SKU-1|DC-1"));
    }
}
