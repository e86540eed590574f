//! S3 "object created" events in the shapes they arrive in: raw S3 notifications (SQS,
//! Lambda), wrapped in an SNS notification, or as EventBridge events; a list of any of them
//! too (a forwarder batching). Every record of a message counts.

use serde_json::Value;

/// One created object named by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    /// Decoded: S3 notifications URL-encode keys (`+` for space, `%xx`).
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the event is not JSON: {0}")]
    NotJson(String),
    #[error("not an S3 event: {0}")]
    Unknown(String),
}

/// Every object-created record in `body`. Other S3 events (deletes, `s3:TestEvent`) yield
/// nothing; a body that is no S3 event at all is an error.
pub fn parse(body: &[u8]) -> Result<Vec<ObjectEvent>, EventError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let mut out = Vec::new();
    collect(&value, &mut out, 0)?;
    Ok(out)
}

/// Envelopes nest at most this deep (SNS in a list, say); deeper is refused, not recursed.
const MAX_DEPTH: u8 = 4;

fn collect(value: &Value, out: &mut Vec<ObjectEvent>, depth: u8) -> Result<(), EventError> {
    if depth > MAX_DEPTH {
        return Err(EventError::Unknown("envelopes nested too deep".into()));
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| collect(v, out, depth + 1)),
        Value::Object(map) => {
            if let Some(records) = map.get("Records").and_then(Value::as_array) {
                records.iter().filter_map(notification_record).for_each(|e| out.push(e));
                Ok(())
            } else if map.get("Type").and_then(Value::as_str) == Some("Notification") {
                // SNS: the S3 notification is a JSON string in `Message`.
                let message = map.get("Message").and_then(Value::as_str).unwrap_or_default();
                let inner: Value = serde_json::from_str(message)
                    .map_err(|e| EventError::Unknown(format!("SNS Message is not JSON: {e}")))?;
                collect(&inner, out, depth + 1)
            } else if map.get("source").and_then(Value::as_str) == Some("aws.s3") {
                out.extend(eventbridge(map));
                Ok(())
            } else if map.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
                Ok(()) // sent once when a notification is configured
            } else {
                Err(EventError::Unknown(
                    "expected S3 notification `Records`, an SNS notification or an EventBridge event".into(),
                ))
            }
        }
        _ => Err(EventError::Unknown("expected a JSON object or list".into())),
    }
}

/// One `Records[]` entry of an S3 notification; `None` unless it is an object creation.
fn notification_record(record: &Value) -> Option<ObjectEvent> {
    let name = record.get("eventName").and_then(Value::as_str)?;
    if !name.starts_with("ObjectCreated:") {
        return None;
    }
    let s3 = record.get("s3")?;
    let object = s3.get("object")?;
    Some(ObjectEvent {
        bucket: s3.pointer("/bucket/name").and_then(Value::as_str)?.to_owned(),
        key: decode_key(object.get("key").and_then(Value::as_str)?),
        size: object.get("size").and_then(Value::as_u64),
        etag: object.get("eTag").and_then(Value::as_str).map(str::to_owned),
        version_id: object.get("versionId").and_then(Value::as_str).map(str::to_owned),
    })
}

/// An EventBridge `Object Created` event. Its keys are not URL-encoded (unlike notifications).
fn eventbridge(map: &serde_json::Map<String, Value>) -> Option<ObjectEvent> {
    if map.get("detail-type").and_then(Value::as_str) != Some("Object Created") {
        return None;
    }
    let detail = map.get("detail")?;
    Some(ObjectEvent {
        bucket: detail.pointer("/bucket/name").and_then(Value::as_str)?.to_owned(),
        key: detail.pointer("/object/key").and_then(Value::as_str)?.to_owned(),
        size: detail.pointer("/object/size").and_then(Value::as_u64),
        etag: detail.pointer("/object/etag").and_then(Value::as_str).map(str::to_owned),
        version_id: detail.pointer("/object/version-id").and_then(Value::as_str).map(str::to_owned),
    })
}

/// Notification keys are form-encoded: `+` is a space, `%2B` a plus.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(name: &str, key: &str) -> Value {
        json!({
            "eventSource": "aws:s3",
            "eventName": name,
            "s3": { "bucket": { "name": "bkt" }, "object": { "key": key, "size": 3, "eTag": "abc", "versionId": "v1" } }
        })
    }

    #[test]
    fn every_record_of_a_notification_with_decoded_keys() {
        let body = json!({ "Records": [
            record("ObjectCreated:Put", "in/my+file%21.txt"),
            record("ObjectRemoved:Delete", "in/gone.txt"),
            record("ObjectCreated:CompleteMultipartUpload", "in/a%2Bb.txt"),
        ]});
        let events = parse(body.to_string().as_bytes()).unwrap();
        let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["in/my file!.txt", "in/a+b.txt"]);
        assert_eq!(events[0].etag.as_deref(), Some("abc"));
        assert_eq!(events[0].version_id.as_deref(), Some("v1"));
        assert_eq!(events[0].size, Some(3));
    }

    #[test]
    fn sns_and_eventbridge_envelopes() {
        let inner = json!({ "Records": [record("ObjectCreated:Put", "x%20y.bin")] });
        let sns = json!({ "Type": "Notification", "Message": inner.to_string() });
        assert_eq!(parse(sns.to_string().as_bytes()).unwrap()[0].key, "x y.bin");
        let eb = json!({
            "source": "aws.s3", "detail-type": "Object Created",
            "detail": { "bucket": { "name": "bkt" }, "object": { "key": "a b+c.txt", "size": 9, "etag": "e", "version-id": "v" } }
        });
        let e = &parse(eb.to_string().as_bytes()).unwrap()[0];
        assert_eq!(
            (e.key.as_str(), e.version_id.as_deref()),
            ("a b+c.txt", Some("v")),
            "EventBridge keys are not encoded"
        );
        let deleted = json!({ "source": "aws.s3", "detail-type": "Object Deleted", "detail": {} });
        assert!(parse(deleted.to_string().as_bytes()).unwrap().is_empty());
        // A forwarder's list of envelopes.
        let list = json!([sns, eb]);
        assert_eq!(parse(list.to_string().as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn test_events_and_junk() {
        let test = json!({ "Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bkt" });
        assert!(parse(test.to_string().as_bytes()).unwrap().is_empty());
        assert!(matches!(parse(b"not json"), Err(EventError::NotJson(_))));
        assert!(matches!(parse(br#"{"location": "a"}"#), Err(EventError::Unknown(_))));
        assert!(matches!(parse(br#"{"Type": "Notification", "Message": "nope"}"#), Err(EventError::Unknown(_))));
        let deep = (0..10).fold(json!({"Records": []}), |v, _| json!([v]));
        assert!(parse(deep.to_string().as_bytes()).is_err());
    }
}
