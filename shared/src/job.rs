//! The job message: one per input file, sent by the trigger and consumed by the worker.
//!
//! The message is JSON with an explicit `version`. A worker that meets a version it does not
//! know, or a body that does not parse, treats it as a permanent failure of that message (it is
//! handed back until it reaches the dead-letter queue), never as a reason to crash.
//!
//! - Version 1 names one model file (`model_uri`): what a single-model deployment sends. It is
//!   still written for such deployments, so that workers from before version 2 take them during
//!   an update.
//! - Version 2 names the model source (`model`): one file, or the model repository with the
//!   model the input's key named and the deployment's default.
//! - Version 3 adds `split` ([`crate::shards`]): the message is one byte-range shard of a big
//!   file (`{"shard": {"index", "count", "start", "end"}}`), or the file is big but runs whole
//!   (`{"whole": {"reason"}}`). It is written only for files larger than the shard size, so
//!   everything else stays readable by workers from before it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::input::InputObject;
use crate::keys::OutputKeys;
use crate::models::ModelRequest;
use crate::split::Split;

/// The newest version this code writes and understands (it understands every earlier one).
pub const JOB_MESSAGE_VERSION: u32 = 3;

/// Everything a worker needs to process one input file.
#[derive(Debug, Clone, PartialEq)]
pub struct JobMessage {
    pub version: u32,
    pub input: InputObject,
    pub output: OutputLocation,
    pub model: ModelSource,
    /// When S3 says the object was created.
    pub event_time: DateTime<Utc>,
    /// Which shard of a big file this is, or why a big file is not split (version 3).
    pub split: Option<Split>,
}

/// Which model runs over the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ModelSource {
    /// One model file: `s3://bucket/key.onnx`, or a local path (local runs and tests).
    File { uri: String },
    /// The model repository at `root` (`s3://bucket/prefix/` or a folder): the model the
    /// input's key `requested` if the repository has one of that name, else `default`.
    Repository {
        root: String,
        #[serde(default)]
        requested: Option<ModelRequest>,
        #[serde(default)]
        default: Option<ModelRequest>,
    },
}

impl From<&str> for ModelSource {
    fn from(uri: &str) -> Self {
        ModelSource::File { uri: uri.to_owned() }
    }
}

impl From<String> for ModelSource {
    fn from(uri: String) -> Self {
        ModelSource::File { uri }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::File { uri } => f.write_str(uri),
            ModelSource::Repository { root, requested, default } => {
                write!(f, "{root}")?;
                if let Some(requested) = requested {
                    write!(f, " model {requested}")?;
                }
                if let Some(default) = default {
                    write!(f, " (default {default})")?;
                }
                Ok(())
            }
        }
    }
}

/// Where the outputs of the job go: `s3://bucket/<prefix><input key>.out` and its siblings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLocation {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    /// Reports and errors files go under `<prefix><reports>` (`REPORTS_PREFIX`); empty: beside
    /// the predictions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reports: String,
}

/// Why a message body is not a job this code can run.
#[derive(Debug, thiserror::Error)]
pub enum JobMessageError {
    #[error("job message is not valid JSON for version {version}: {source}")]
    Malformed {
        version: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("job message has version {found}, this worker understands versions 1 to {JOB_MESSAGE_VERSION}")]
    UnknownVersion { found: u64 },
    #[error("job message has no numeric \"version\" field")]
    MissingVersion,
}

/// Version 1 on the wire.
#[derive(Serialize, Deserialize)]
struct WireV1 {
    version: u32,
    input: InputObject,
    output: OutputLocation,
    model_uri: String,
    event_time: DateTime<Utc>,
}

/// Versions 2 and 3 on the wire (version 2 has no `split`).
#[derive(Serialize, Deserialize)]
struct WireV2 {
    version: u32,
    input: InputObject,
    output: OutputLocation,
    model: ModelSource,
    event_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    split: Option<Split>,
}

impl JobMessage {
    pub fn new(
        input: InputObject,
        output: OutputLocation,
        model: impl Into<ModelSource>,
        event_time: DateTime<Utc>,
    ) -> Self {
        let model = model.into();
        let version = match model {
            ModelSource::File { .. } => 1,
            ModelSource::Repository { .. } => 2,
        };
        Self { version, input, output, model, event_time, split: None }
    }

    /// The message for one shard of the file, or saying why the file is not split (version 3).
    pub fn with_split(mut self, split: Split) -> Self {
        self.version = 3;
        self.split = Some(split);
        self
    }

    /// The shard this message is, if it is one.
    pub fn shard(&self) -> Option<crate::split::Shard> {
        match self.split {
            Some(Split::Shard(shard)) => Some(shard),
            _ => None,
        }
    }

    /// Parses a queue message body, checking the version before the shape so that a message
    /// from a newer trigger is reported as such rather than as "malformed".
    pub fn from_json(body: &str) -> Result<Self, JobMessageError> {
        let malformed = |version| move |source| JobMessageError::Malformed { version, source };
        let value: serde_json::Value = serde_json::from_str(body).map_err(malformed(JOB_MESSAGE_VERSION.into()))?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(1) => {
                let wire: WireV1 = serde_json::from_value(value).map_err(malformed(1))?;
                Ok(Self {
                    version: 1,
                    input: wire.input,
                    output: wire.output,
                    model: ModelSource::File { uri: wire.model_uri },
                    event_time: wire.event_time,
                    split: None,
                })
            }
            Some(version @ (2 | 3)) => {
                let wire: WireV2 = serde_json::from_value(value).map_err(malformed(version))?;
                if version == 3 && wire.split.is_none() {
                    let missing = <serde_json::Error as serde::de::Error>::missing_field("split");
                    return Err(malformed(3)(missing));
                }
                Ok(Self {
                    version: version as u32,
                    input: wire.input,
                    output: wire.output,
                    model: wire.model,
                    event_time: wire.event_time,
                    split: if version == 3 { wire.split } else { None },
                })
            }
            Some(found) => Err(JobMessageError::UnknownVersion { found }),
            None => Err(JobMessageError::MissingVersion),
        }
    }

    /// Version 1 for a model file (what every worker understands), 3 with a split, 2 otherwise.
    pub fn to_json(&self) -> String {
        let (input, output, event_time) = (self.input.clone(), self.output.clone(), self.event_time);
        let json = match (&self.model, &self.split) {
            (ModelSource::File { uri }, None) if self.version == 1 => {
                serde_json::to_string(&WireV1 { version: 1, input, output, model_uri: uri.clone(), event_time })
            }
            (model, split) => serde_json::to_string(&WireV2 {
                version: if split.is_some() { 3 } else { 2 },
                input,
                output,
                model: model.clone(),
                event_time,
                split: split.clone(),
            }),
        };
        json.expect("a JobMessage always serialises")
    }

    /// The keys of this job's outputs in the output bucket.
    /// The id of the file's completion event: the same for every message, attempt and worker
    /// of one upload (the input's bucket, key, ETag, version and event time), so that a consumer
    /// can drop the repeats that at-least-once delivery brings.
    pub fn event_id(&self) -> String {
        use sha2::{Digest, Sha256};
        let input = &self.input;
        let mut digest = Sha256::new();
        let time = self.event_time.to_rfc3339();
        for part in [&input.bucket, &input.key, &input.etag, input.version_id.as_deref().unwrap_or(""), &time] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        digest.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn output_keys(&self) -> OutputKeys {
        OutputKeys::for_input(&self.output.prefix, &self.output.reports, &self.input.key)
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
            OutputLocation { bucket: "out".into(), prefix: "results/".into(), reports: String::new() },
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
    fn a_model_file_is_version_1_as_workers_before_version_2_read_it() {
        let value: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(value["model_uri"], "s3://models/iris.onnx");
        assert!(value.get("model").is_none());
        // A version-1 body as earlier triggers wrote it still parses.
        let old = r#"{"version": 1, "input": {"bucket": "in", "key": "a.csv", "size": 1, "etag": "e"},
            "output": {"bucket": "out", "prefix": ""}, "model_uri": "s3://m/iris.onnx",
            "event_time": "2026-11-21T08:00:00Z"}"#;
        let job = JobMessage::from_json(old).unwrap();
        assert_eq!(job.model, ModelSource::File { uri: "s3://m/iris.onnx".into() });
    }

    #[test]
    fn a_repository_route_is_version_2_and_round_trips() {
        let mut job = sample();
        job.model = ModelSource::Repository {
            root: "s3://models/repo/".into(),
            requested: Some(ModelRequest { name: "iris".into(), version: Some(2) }),
            default: Some(ModelRequest::latest("half_plus_two")),
        };
        job.version = 2;
        let json = job.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["version"], 2);
        assert_eq!(value["model"]["source"], "repository");
        assert_eq!(value["model"]["requested"], serde_json::json!({"name": "iris", "version": 2}));
        assert_eq!(JobMessage::from_json(&json).unwrap(), job);
    }

    #[test]
    fn a_shard_is_version_3_and_round_trips() {
        let shard = crate::split::Shard { index: 2, count: 8, start: 512, end: 768 };
        let job = sample().with_split(Split::Shard(shard));
        let value: serde_json::Value = serde_json::from_str(&job.to_json()).unwrap();
        assert_eq!(value["version"], 3);
        assert_eq!(value["split"]["shard"], serde_json::json!({"index": 2, "count": 8, "start": 512, "end": 768}));
        assert_eq!(value["model"]["uri"], "s3://models/iris.onnx");
        let parsed = JobMessage::from_json(&job.to_json()).unwrap();
        assert_eq!(parsed, job);
        assert_eq!(parsed.shard(), Some(shard));

        let whole = sample().with_split(Split::Whole { reason: "gzip".into() });
        assert_eq!(JobMessage::from_json(&whole.to_json()).unwrap(), whole);
        // Version 3 without a split is not a message any trigger writes.
        let mut value: serde_json::Value = serde_json::from_str(&whole.to_json()).unwrap();
        value.as_object_mut().unwrap().remove("split");
        assert!(matches!(
            JobMessage::from_json(&value.to_string()),
            Err(JobMessageError::Malformed { version: 3, .. })
        ));
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
        value["version"] = 4.into();
        let err = JobMessage::from_json(&value.to_string()).unwrap_err();
        assert!(matches!(err, JobMessageError::UnknownVersion { found: 4 }), "{err}");
        assert!(err.to_string().contains("version 4"));
    }

    #[test]
    fn rejects_missing_version_and_garbage() {
        assert!(matches!(JobMessage::from_json(r#"{"input": {}}"#), Err(JobMessageError::MissingVersion)));
        assert!(matches!(JobMessage::from_json("not json"), Err(JobMessageError::Malformed { .. })));
        assert!(matches!(
            JobMessage::from_json(r#"{"version": 1, "input": 3}"#),
            Err(JobMessageError::Malformed { .. })
        ));
        assert!(matches!(
            JobMessage::from_json(r#"{"version": 2, "model": {"source": "ftp"}}"#),
            Err(JobMessageError::Malformed { version: 2, .. })
        ));
    }
}
