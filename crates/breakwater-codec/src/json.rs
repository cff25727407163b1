//! JSON: one object per record, field names as in the Avro schemas, timestamps as integer
//! milliseconds since the epoch, enums as their symbols, absent optional fields as `null` (or
//! left out on input).

use crate::codec::Codec;
use crate::error::CodecError;
use crate::schema::WireRecord;

/// The JSON codec. Stateless; the topic plays no part.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

impl JsonCodec {
    /// Decodes one record without the async wrapper (JSON needs no registry).
    ///
    /// # Errors
    /// [`CodecError::JsonDecode`] naming the field the error lies in, when it lies in one.
    pub fn decode_now<T: WireRecord>(&self, payload: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(payload).map_err(|source| CodecError::JsonDecode {
            record: T::RECORD_NAME,
            field: field_at(payload, offset_of(payload, source.line(), source.column())),
            source,
        })
    }

    /// Encodes one record as compact JSON without the async wrapper.
    ///
    /// # Errors
    /// [`CodecError::JsonEncode`], which the record types in this crate never cause.
    pub fn encode_now<T: WireRecord>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|source| CodecError::JsonEncode {
            record: T::RECORD_NAME,
            source,
        })
    }
}

impl Codec for JsonCodec {
    async fn decode<T: WireRecord>(&self, _topic: &str, payload: &[u8]) -> Result<T, CodecError> {
        self.decode_now(payload)
    }

    async fn encode<T: WireRecord>(&self, _topic: &str, value: &T) -> Result<Vec<u8>, CodecError> {
        self.encode_now(value)
    }
}

/// The byte offset of serde_json's (1-based line, column in bytes) position.
fn offset_of(input: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        input
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map_or(input.len(), |(i, _)| i + 1)
    };
    line_start.saturating_add(column).min(input.len())
}

/// The dotted path of the field being read at `offset` (`root_cause.occurred_at`,
/// `cascade_path[2]`), found by scanning the JSON structure up to there.
///
/// serde_json reports where an error is but not in which field (for a wrong type it says
/// `invalid type: string "fifty", expected i64 at line 1 column 30`). The scan is only as good
/// as the input is well-formed before the error, which it is for every type error.
fn field_at(input: &[u8], offset: usize) -> Option<String> {
    enum Frame {
        Object(Option<String>),
        Array(usize),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < offset.min(input.len()) {
        match input[i] {
            b'{' => {
                stack.push(Frame::Object(None));
                expect_key = true;
            }
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object(_)) => expect_key = true,
                Some(Frame::Array(n)) => *n += 1,
                None => {}
            },
            b'"' => {
                let start = i + 1;
                i = start;
                while i < input.len() && input[i] != b'"' {
                    // Skip the escaped character, which may be a quote.
                    i += if input[i] == b'\\' { 2 } else { 1 };
                }
                if expect_key {
                    if let Some(Frame::Object(key)) = stack.last_mut() {
                        let end = i.min(input.len());
                        *key = Some(String::from_utf8_lossy(&input[start..end]).into_owned());
                    }
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => break,
            Frame::Array(n) => path.push_str(&format!("[{n}]")),
        }
    }
    (!path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of_error<T: WireRecord + std::fmt::Debug>(json: &str) -> Option<String> {
        match JsonCodec.decode_now::<T>(json.as_bytes()) {
            Err(CodecError::JsonDecode { field, .. }) => field,
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn the_field_of_an_error_is_found_at_any_depth() {
        use crate::records::AlertRecord;
        use breakwater_core::InventoryEvent;
        assert_eq!(
            path_of_error::<InventoryEvent>(r#"{"event_id": "a", "quantity": "fifty"}"#).as_deref(),
            Some("quantity")
        );
        assert_eq!(
            path_of_error::<InventoryEvent>("{\n  \"event_id\": \"a\\\"b\",\n  \"colour\": 1\n}")
                .as_deref(),
            Some("colour")
        );
        assert_eq!(
            path_of_error::<AlertRecord>(
                r#"{"alert_id": "x", "root_cause": {"event_id": "e", "occurred_at": "noon"}}"#
            )
            .as_deref(),
            Some("root_cause.occurred_at")
        );
        assert_eq!(
            path_of_error::<AlertRecord>(r#"{"alert_id": "x", "cascade_path": ["wms", 7]}"#)
                .as_deref(),
            Some("cascade_path[1]")
        );
        // A missing field is reported at the closing brace: serde's message names it.
        assert_eq!(
            path_of_error::<InventoryEvent>(r#"{"event_id": "a"}"#),
            None
        );
        assert_eq!(path_of_error::<InventoryEvent>(""), None);
    }

    #[test]
    fn offsets_follow_lines() {
        let text = b"ab\ncd\nef";
        assert_eq!(offset_of(text, 1, 1), 1);
        assert_eq!(offset_of(text, 2, 0), 3);
        assert_eq!(offset_of(text, 3, 2), 8);
        assert_eq!(offset_of(text, 9, 9), 8);
    }
}
