//! S3 event notifications in AWS's documented format, and an event source that turns new objects
//! in a bucket into such events.
//!
//! moto can send S3 notifications itself, but its bodies lack fields that `aws_lambda_events`
//! requires, so the harness builds its own: the same shape S3 sends to Lambda, with the key
//! form-urlencoded the way S3 encodes it in notifications.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::aws::REGION;

/// The `principalId` S3 puts in local events (AWS uses the caller's IAM id).
const PRINCIPAL_ID: &str = "AWS:AIDAEXAMPLESLUICELOCAL";
/// The bucket owner's canonical id in local events.
const OWNER_ID: &str = "A3SLUICELOCALEXAMPLE";
/// The notification configuration's id, as S3 reports it.
const CONFIGURATION_ID: &str = "sluice-local-trigger";

/// An S3 event with one record for `key` in `bucket`, as S3 delivers it to Lambda
/// (`eventVersion` 2.1). `event_name` is without the `s3:` prefix, e.g. `ObjectCreated:Put`.
/// `etag` is given without quotes; the key is encoded as S3 encodes it (see [`encode_key`]).
pub fn s3_object_created_event(
    bucket: &str,
    key: &str,
    size: u64,
    etag: &str,
    version_id: Option<&str>,
    event_name: &str,
) -> Value {
    let now = Utc::now();
    let mut object = json!({
        "key": encode_key(key),
        "size": size,
        "eTag": etag.trim_matches('"'),
        "sequencer": format!("{:018X}", now.timestamp_nanos_opt().unwrap_or_default()),
    });
    if let (Some(version_id), Some(object)) = (version_id, object.as_object_mut()) {
        object.insert("versionId".to_owned(), Value::String(version_id.to_owned()));
    }
    json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": REGION,
            "eventTime": now.to_rfc3339_opts(SecondsFormat::Millis, true),
            "eventName": event_name,
            "userIdentity": { "principalId": PRINCIPAL_ID },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": {
                "x-amz-request-id": request_id(),
                "x-amz-id-2": host_id(),
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": CONFIGURATION_ID,
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": { "principalId": OWNER_ID },
                    "arn": format!("arn:aws:s3:::{bucket}"),
                },
                "object": object,
            },
        }]
    })
}

/// The `s3:TestEvent` S3 sends once when a notification configuration is saved; the trigger must
/// ignore it.
pub fn s3_test_event(bucket: &str) -> Value {
    json!({
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "Bucket": bucket,
        "RequestId": request_id(),
        "HostId": host_id(),
    })
}

/// Encodes an object key the way S3 does in event notifications: form encoding (a space becomes
/// `+`, other bytes outside `A-Z a-z 0-9 - _ . *` become `%XX` of their UTF-8), except that `/`
/// stays `/`.
pub fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => {
                encoded.push(char::from(byte));
            }
            b' ' => encoded.push('+'),
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

/// Decodes a key from an S3 notification (the inverse of [`encode_key`]): `+` is a space, `%XX`
/// a byte. Malformed escapes are kept as they are; invalid UTF-8 is replaced.
pub fn decode_key(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        decoded.push(byte);
                        i += 2;
                    }
                    None => decoded.push(b'%'),
                }
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_ascii_uppercase()
}

fn host_id() -> String {
    format!("{}/{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Watches a bucket with `ListObjectsV2` and produces an `ObjectCreated:Put` event for every
/// object that is new or whose ETag changed since the last look: how the local run notices files
/// a person uploads with the AWS CLI.
#[derive(Debug)]
pub struct S3EventSource {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: Option<String>,
    seen: HashMap<String, String>,
}

impl S3EventSource {
    /// A source for every object in `bucket`; nothing is seen yet, so the first [`Self::poll`]
    /// reports what is already there (use [`Self::prime`] to skip it).
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self { s3, bucket: bucket.into(), prefix: None, seen: HashMap::new() }
    }

    /// Only watch keys under `prefix` (S3 notifications' prefix filter).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The watched bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Records what is in the bucket now without producing events; returns how many objects.
    pub async fn prime(&mut self) -> Result<usize> {
        self.seen = self.list().await?.into_iter().map(|(key, (etag, _))| (key, etag)).collect();
        Ok(self.seen.len())
    }

    /// Lists the bucket and returns one event per new or changed object, in key order.
    pub async fn poll(&mut self) -> Result<Vec<Value>> {
        let current = self.list().await?;
        let mut changed: Vec<(&String, &(String, u64))> = Vec::new();
        let mut listing: Vec<_> = current.iter().collect();
        listing.sort();
        for (key, entry) in listing {
            if self.seen.get(key) != Some(&entry.0) {
                changed.push((key, entry));
            }
        }
        let events = changed
            .iter()
            .map(|(key, (etag, size))| {
                s3_object_created_event(&self.bucket, key, *size, etag, None, "ObjectCreated:Put")
            })
            .collect();
        self.seen = current.into_iter().map(|(key, (etag, _))| (key, etag)).collect();
        Ok(events)
    }

    /// Polls every `interval` in the background and sends the events to the returned feed.
    /// Listing errors are logged and the next poll tries again.
    pub fn spawn(mut self, interval: Duration) -> EventFeed {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match self.poll().await {
                    Ok(events) => {
                        for event in events {
                            if sender.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(bucket = %self.bucket, "cannot list the bucket: {err:#}")
                    }
                }
                tokio::time::sleep(interval).await;
            }
        });
        EventFeed { receiver, task }
    }

    /// key -> (ETag without quotes, size)
    async fn list(&self) -> Result<HashMap<String, (String, u64)>> {
        let mut objects = HashMap::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_prefix(self.prefix.clone())
                .set_continuation_token(continuation.take())
                .send()
                .await
                .with_context(|| format!("cannot list bucket {}", self.bucket))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    let etag = object.e_tag().unwrap_or_default().trim_matches('"').to_owned();
                    let size = object.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                    objects.insert(key.to_owned(), (etag, size));
                }
            }
            match page.next_continuation_token() {
                Some(token) if page.is_truncated() == Some(true) => continuation = Some(token.to_owned()),
                _ => return Ok(objects),
            }
        }
    }
}

/// Events from a background [`S3EventSource`]; polling stops when the feed is dropped.
#[derive(Debug)]
pub struct EventFeed {
    receiver: mpsc::UnboundedReceiver<Value>,
    task: JoinHandle<()>,
}

impl EventFeed {
    /// The next event, waiting for one.
    pub async fn recv(&mut self) -> Option<Value> {
        self.receiver.recv().await
    }

    /// An event if one is ready.
    pub fn try_recv(&mut self) -> Option<Value> {
        self.receiver.try_recv().ok()
    }
}

impl Drop for EventFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const FIXTURE: &str = include_str!("../fixtures/s3-put.json");

    /// Every key path in a JSON value ("Records[].s3.object.key", ...).
    fn key_paths(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    paths.insert(path.clone());
                    key_paths(child, &path, paths);
                }
            }
            Value::Array(items) => {
                for item in items {
                    key_paths(item, &format!("{prefix}[]"), paths);
                }
            }
            _ => {}
        }
    }

    fn paths_of(value: &Value) -> BTreeSet<String> {
        let mut paths = BTreeSet::new();
        key_paths(value, "", &mut paths);
        paths
    }

    #[test]
    fn built_event_has_the_structure_of_the_documented_put_event() {
        // GIVEN AWS's documented S3 put event
        let fixture: Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
        // WHEN the builder makes an unversioned put event
        let built = s3_object_created_event("sluice-input", "data/iris.csv", 4551, "abc", None, "ObjectCreated:Put");
        // THEN both have the same keys at every level
        assert_eq!(paths_of(&built), paths_of(&fixture));
    }

    #[test]
    fn version_id_is_present_only_when_given() {
        let built = s3_object_created_event("b", "k", 1, "e", Some("v1"), "ObjectCreated:Put");
        assert_eq!(built["Records"][0]["s3"]["object"]["versionId"], "v1");
        let built = s3_object_created_event("b", "k", 1, "e", None, "ObjectCreated:Put");
        assert!(built["Records"][0]["s3"]["object"].get("versionId").is_none());
    }

    #[test]
    fn fields_carry_what_was_given() {
        let built = s3_object_created_event(
            "sluice-input",
            "in/my file.csv",
            42,
            "\"0123abcd\"",
            None,
            "ObjectCreated:CompleteMultipartUpload",
        );
        let record = &built["Records"][0];
        assert_eq!(record["eventVersion"], "2.1");
        assert_eq!(record["eventSource"], "aws:s3");
        assert_eq!(record["awsRegion"], "us-east-1");
        assert_eq!(record["eventName"], "ObjectCreated:CompleteMultipartUpload");
        assert_eq!(record["s3"]["bucket"]["name"], "sluice-input");
        assert_eq!(record["s3"]["bucket"]["arn"], "arn:aws:s3:::sluice-input");
        assert_eq!(record["s3"]["object"]["key"], "in/my+file.csv");
        assert_eq!(record["s3"]["object"]["size"], 42);
        assert_eq!(record["s3"]["object"]["eTag"], "0123abcd");
        let time = record["eventTime"].as_str().expect("eventTime is a string");
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        assert!(time.ends_with('Z') && time.len() == "1970-01-01T00:00:00.000Z".len(), "{time}");
    }

    #[test]
    fn built_event_parses_as_the_trigger_parses_it() {
        let built = s3_object_created_event("b", "a b+c.csv", 7, "e", Some("v"), "ObjectCreated:Put");
        let parsed: aws_lambda_events::event::s3::S3Event =
            serde_json::from_value(built).expect("aws_lambda_events accepts the event");
        let object = &parsed.records[0].s3.object;
        assert_eq!(object.key.as_deref(), Some("a+b%2Bc.csv"));
        assert_eq!(object.size, Some(7));
        assert_eq!(object.version_id.as_deref(), Some("v"));
    }

    #[test]
    fn keys_are_form_encoded_like_s3_notifications() {
        assert_eq!(encode_key("plain/path/file-1_2.csv"), "plain/path/file-1_2.csv");
        assert_eq!(encode_key("my file.csv"), "my+file.csv");
        assert_eq!(encode_key("a+b.csv"), "a%2Bb.csv");
        assert_eq!(encode_key("x=1&y=2:z,(v).csv"), "x%3D1%26y%3D2%3Az%2C%28v%29.csv");
        assert_eq!(encode_key("100%.csv"), "100%25.csv");
        assert_eq!(encode_key("tilde~star*.csv"), "tilde%7Estar*.csv");
        assert_eq!(encode_key("données/é.csv"), "donn%C3%A9es/%C3%A9.csv");
    }

    #[test]
    fn decoding_reverses_encoding() {
        for key in ["my file.csv", "a+b/c%d.csv", "données/é (1).csv", "plain"] {
            assert_eq!(decode_key(&encode_key(key)), key);
        }
        assert_eq!(decode_key("bad%zzescape%4"), "bad%zzescape%4");
    }

    #[test]
    fn test_event_has_the_documented_fields() {
        let event = s3_test_event("sluice-input");
        assert_eq!(event["Event"], "s3:TestEvent");
        assert_eq!(event["Service"], "Amazon S3");
        assert_eq!(event["Bucket"], "sluice-input");
        for field in ["Time", "RequestId", "HostId"] {
            assert!(event[field].is_string(), "{field} missing");
        }
    }
}
