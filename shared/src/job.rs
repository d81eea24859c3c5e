//! The job message: one per input file, sent by the trigger and consumed by the worker.
//!
//! The message is JSON with an explicit `version`. A worker that meets a version it does not
//! know, or a body that does not parse, treats it as a permanent failure of that message (it is
//! reported and deleted), never as a reason to crash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::OutputKeys;

/// The version this code writes and understands.
pub const JOB_MESSAGE_VERSION: u32 = 1;

/// Everything a worker needs to process one input file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    pub version: u32,
    pub input: InputObject,
    pub output: OutputLocation,
    /// `s3://bucket/key.onnx` or a local path (local runs and tests).
    pub model_uri: String,
    /// When S3 says the object was created.
    pub event_time: DateTime<Utc>,
}

/// The object that triggered the job, as the S3 event described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputObject {
    pub bucket: String,
    /// The decoded key (the event carries it form-urlencoded).
    pub key: String,
    pub size: u64,
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// Where the outputs of the job go: `s3://bucket/<prefix><input key>.out` and its siblings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLocation {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
}

/// Why a message body is not a job this code can run.
#[derive(Debug, thiserror::Error)]
pub enum JobMessageError {
    #[error("job message is not valid JSON for version {JOB_MESSAGE_VERSION}: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("job message has version {found}, this worker understands version {JOB_MESSAGE_VERSION}")]
    UnknownVersion { found: u64 },
    #[error("job message has no numeric \"version\" field")]
    MissingVersion,
}

impl JobMessage {
    pub fn new(
        input: InputObject,
        output: OutputLocation,
        model_uri: impl Into<String>,
        event_time: DateTime<Utc>,
    ) -> Self {
        Self { version: JOB_MESSAGE_VERSION, input, output, model_uri: model_uri.into(), event_time }
    }

    /// Parses a queue message body, checking the version before the shape so that a message
    /// from a newer trigger is reported as such rather than as "malformed".
    pub fn from_json(body: &str) -> Result<Self, JobMessageError> {
        let value: serde_json::Value = serde_json::from_str(body).map_err(JobMessageError::Malformed)?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(JOB_MESSAGE_VERSION) => {}
            Some(found) => return Err(JobMessageError::UnknownVersion { found }),
            None => return Err(JobMessageError::MissingVersion),
        }
        serde_json::from_value(value).map_err(JobMessageError::Malformed)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JobMessage always serialises")
    }

    /// The keys of this job's outputs in the output bucket.
    pub fn output_keys(&self) -> OutputKeys {
        OutputKeys::for_input(&self.output.prefix, &self.input.key)
    }

    /// A stable identity of the input object version, for logs and de-duplication.
    pub fn describe_input(&self) -> String {
        format!("s3://{}/{} (etag {})", self.input.bucket, self.input.key, self.input.etag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JobMessage {
        JobMessage::new(
            InputObject {
                bucket: "in".into(),
                key: "path/my data+1.csv".into(),
                size: 4321,
                etag: "9b2cf535f27731c974343645a3985328".into(),
                version_id: Some("3HL4kqtJlcpXroDTDmjVBH40Nrjfkd".into()),
            },
            OutputLocation { bucket: "out".into(), prefix: "results/".into() },
            "s3://models/iris.onnx",
            "2026-11-21T08:00:00.123Z".parse().unwrap(),
        )
    }

    #[test]
    fn round_trips_through_json() {
        // GIVEN a job message
        let job = sample();
        // WHEN it is serialised and parsed back
        let parsed = JobMessage::from_json(&job.to_json()).unwrap();
        // THEN nothing is lost
        assert_eq!(parsed, job);
    }

    #[test]
    fn carries_the_version_field() {
        let value: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(value["input"]["key"], "path/my data+1.csv");
    }

    #[test]
    fn version_id_is_optional() {
        let mut job = sample();
        job.input.version_id = None;
        let json = job.to_json();
        assert!(!json.contains("version_id"));
        assert_eq!(JobMessage::from_json(&json).unwrap(), job);
    }

    #[test]
    fn rejects_unknown_versions() {
        let mut value: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        value["version"] = 2.into();
        let err = JobMessage::from_json(&value.to_string()).unwrap_err();
        assert!(matches!(err, JobMessageError::UnknownVersion { found: 2 }), "{err}");
        assert!(err.to_string().contains("version 2"));
    }

    #[test]
    fn rejects_missing_version_and_garbage() {
        assert!(matches!(JobMessage::from_json(r#"{"input": {}}"#), Err(JobMessageError::MissingVersion)));
        assert!(matches!(JobMessage::from_json("not json"), Err(JobMessageError::Malformed(_))));
        assert!(matches!(JobMessage::from_json(r#"{"version": 1, "input": 3}"#), Err(JobMessageError::Malformed(_))));
    }
}
