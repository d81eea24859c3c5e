//! Which records of an S3 notification are jobs, and the job message for each.
//!
//! A record is skipped, not failed, when it is not a job: another event type, a folder marker,
//! a key outside the input prefix, or anything under the output location (the recursion guard
//! that stops the pipeline from processing its own outputs). A record that claims to be an
//! upload but lacks what a job needs is an error.
//!
//! A file larger than the shard size becomes one message per shard ([`shared::shards`]).

use aws_lambda_events::s3::S3EventRecord;
use shared::shards::{Split, Splitting, splitting};
use shared::{InputObject, JobMessage, ModelRequest, ModelSource, OutputLocation, decode_event_key};

use crate::config::{JobSettings, Models};

/// Why a record was not turned into a job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Skip {
    NotAnUpload { event_name: String },
    FolderMarker { key: String },
    OutsideInputPrefix { key: String },
    UnderOutputLocation { key: String },
}

/// A record that should have been a job but cannot be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {index}: {problem}")]
pub struct BadRecord {
    pub index: usize,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    Job(Box<JobMessage>),
    Skipped(Skip),
}

/// The messages for a file's job: the job itself, or one per shard of a big file.
pub fn messages_for(job: JobMessage, settings: &JobSettings) -> Vec<JobMessage> {
    match splitting(&job.input.key, job.input.size, settings.shard_bytes) {
        Splitting::Whole => vec![job],
        Splitting::NotSplit(reason) => vec![job.with_split(Split::Whole { reason })],
        Splitting::Shards(shards) => {
            shards.into_iter().map(|shard| job.clone().with_split(Split::Shard(shard))).collect()
        }
    }
}

/// Decides what one record of an S3 event is.
pub fn job_for_record(
    index: usize,
    record: &S3EventRecord,
    settings: &JobSettings,
) -> Result<RecordOutcome, BadRecord> {
    let bad = |problem: String| BadRecord { index, problem };
    let event_name = record.event_name.clone().unwrap_or_default();
    // Notifications name the type "ObjectCreated:Put"; the configuration says "s3:ObjectCreated:*".
    if !event_name.trim_start_matches("s3:").starts_with("ObjectCreated:") {
        return Ok(RecordOutcome::Skipped(Skip::NotAnUpload { event_name }));
    }
    let object = &record.s3.object;
    let raw_key = object.key.as_deref().ok_or_else(|| bad("has no object key".into()))?;
    let key = decode_event_key(raw_key).map_err(|e| bad(e.to_string()))?;
    let bucket = record
        .s3
        .bucket
        .name
        .clone()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad(format!("{key:?} has no bucket name")))?;

    if key.ends_with('/') {
        return Ok(RecordOutcome::Skipped(Skip::FolderMarker { key }));
    }
    if bucket == settings.output_bucket && key.starts_with(&settings.output_prefix) {
        return Ok(RecordOutcome::Skipped(Skip::UnderOutputLocation { key }));
    }
    if !key.starts_with(&settings.input_prefix) {
        return Ok(RecordOutcome::Skipped(Skip::OutsideInputPrefix { key }));
    }

    let size = object.size.ok_or_else(|| bad(format!("{key:?} has no size")))?;
    let size = u64::try_from(size).map_err(|_| bad(format!("{key:?} has a negative size {size}")))?;
    let etag = object.e_tag.clone().filter(|e| !e.is_empty()).ok_or_else(|| bad(format!("{key:?} has no eTag")))?;
    let input =
        InputObject { bucket, key, size, etag, version_id: object.version_id.clone().filter(|v| !v.is_empty()) };
    let output = OutputLocation {
        bucket: settings.output_bucket.clone(),
        prefix: settings.output_prefix.clone(),
        reports: settings.reports_prefix.clone(),
    };
    // The key says which model it wants; whether the repository has it is the worker's to see
    // (the trigger reads no model).
    let model = match &settings.models {
        Models::File(uri) => ModelSource::File { uri: uri.clone() },
        Models::Repository { root, default } => ModelSource::Repository {
            root: root.clone(),
            requested: ModelRequest::from_key(&input.key, &settings.input_prefix),
            default: default.clone(),
        },
    };
    Ok(RecordOutcome::Job(Box::new(JobMessage::new(input, output, model, record.event_time))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> JobSettings {
        JobSettings {
            input_prefix: "incoming/".into(),
            output_bucket: "out".into(),
            output_prefix: "results/".into(),
            reports_prefix: String::new(),
            models: Models::File("s3://models/iris.onnx".into()),
            shard_bytes: 0,
        }
    }

    fn record(event_name: &str, bucket: &str, key: &str) -> S3EventRecord {
        let json = serde_json::json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-21T08:00:00.000Z", "eventName": event_name,
            "userIdentity": {"principalId": "AWS:EXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "I"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
                   "bucket": {"name": bucket, "ownerIdentity": {"principalId": "O"}, "arn": format!("arn:aws:s3:::{bucket}")},
                   "object": {"key": key, "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e", "sequencer": "0A1B2C3D4E5F678901"}}
        });
        serde_json::from_value(json).unwrap()
    }

    fn outcome(event_name: &str, bucket: &str, key: &str) -> RecordOutcome {
        job_for_record(0, &record(event_name, bucket, key), &settings()).unwrap()
    }

    #[test]
    fn an_upload_under_the_input_prefix_is_a_job_with_a_decoded_key() {
        // GIVEN an upload whose key has a space and a plus sign
        // WHEN the record is examined
        let RecordOutcome::Job(job) = outcome("ObjectCreated:Put", "in", "incoming/my+file%2B1.csv") else {
            panic!("expected a job");
        };
        // THEN the job names the decoded key and the configured output and model
        assert_eq!(job.input.key, "incoming/my file+1.csv");
        assert_eq!(job.input.bucket, "in");
        assert_eq!(job.input.size, 1024);
        assert_eq!(job.output.bucket, "out");
        assert_eq!(job.model, ModelSource::File { uri: "s3://models/iris.onnx".into() });
        assert_eq!(job.output_keys().data, "results/incoming/my file+1.csv.out");
    }

    #[test]
    fn with_a_repository_the_first_folder_after_the_prefix_is_the_requested_model() {
        let mut repository = settings();
        repository.models =
            Models::Repository { root: "s3://models/repo/".into(), default: Some(ModelRequest::latest("iris")) };
        let job = |key| match job_for_record(0, &record("ObjectCreated:Put", "in", key), &repository).unwrap() {
            RecordOutcome::Job(job) => job,
            other => panic!("{other:?}"),
        };
        let ModelSource::Repository { root, requested, default } = job("incoming/half_plus_two@3/a.csv").model else {
            panic!()
        };
        assert_eq!(root, "s3://models/repo/");
        assert_eq!(requested, Some(ModelRequest { name: "half_plus_two".into(), version: Some(3) }));
        assert_eq!(default, Some(ModelRequest::latest("iris")));
        let ModelSource::Repository { requested, .. } = job("incoming/a.csv").model else { panic!() };
        assert_eq!(requested, None, "no folder: the default model");
        assert_eq!(job("incoming/a.csv").version, 2);
    }

    #[test]
    fn multipart_and_copy_uploads_are_jobs_too() {
        for name in ["ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Copy", "s3:ObjectCreated:Post"] {
            assert!(matches!(outcome(name, "in", "incoming/a.csv"), RecordOutcome::Job(_)), "{name}");
        }
    }

    #[test]
    fn a_big_table_is_one_message_per_shard_and_a_big_archive_says_why_not() {
        let RecordOutcome::Job(job) = outcome("ObjectCreated:Put", "in", "incoming/a.csv") else { panic!() };
        // The record's object is 1024 bytes.
        let sharding = |shard_bytes| JobSettings { shard_bytes, ..settings() };
        assert_eq!(messages_for((*job).clone(), &sharding(0)), vec![(*job).clone()]);
        assert_eq!(messages_for((*job).clone(), &sharding(1024)), vec![(*job).clone()]);
        let shards = messages_for((*job).clone(), &sharding(300));
        assert_eq!(shards.len(), 4);
        assert!(shards.iter().all(|m| m.version == 3));
        assert_eq!(shards[3].shard().map(|s| (s.index, s.count, s.start, s.end)), Some((3, 4, 900, 1024)));

        let RecordOutcome::Job(archive) = outcome("ObjectCreated:Put", "in", "incoming/a.tar.gz") else { panic!() };
        let messages = messages_for(*archive, &sharding(300));
        assert!(
            matches!(&messages[..], [m] if matches!(&m.split, Some(Split::Whole { reason }) if reason.contains("gzip")))
        );
    }

    #[test]
    fn other_event_types_are_skipped() {
        assert_eq!(
            outcome("ObjectRemoved:Delete", "in", "incoming/a.csv"),
            RecordOutcome::Skipped(Skip::NotAnUpload { event_name: "ObjectRemoved:Delete".into() })
        );
    }

    #[test]
    fn folder_markers_and_keys_outside_the_prefix_are_skipped() {
        assert!(matches!(
            outcome("ObjectCreated:Put", "in", "incoming/sub/"),
            RecordOutcome::Skipped(Skip::FolderMarker { .. })
        ));
        assert!(matches!(
            outcome("ObjectCreated:Put", "in", "elsewhere/a.csv"),
            RecordOutcome::Skipped(Skip::OutsideInputPrefix { .. })
        ));
    }

    #[test]
    fn the_recursion_guard_skips_outputs_in_the_output_bucket() {
        // GIVEN input and output share a bucket, as when a user points both at one bucket
        let mut shared_bucket = settings();
        shared_bucket.input_prefix = String::new();
        let rec = record("ObjectCreated:Put", "out", "results/incoming/a.csv.out");
        // WHEN an output object's notification comes back
        let outcome = job_for_record(0, &rec, &shared_bucket).unwrap();
        // THEN it is not a job
        assert!(matches!(outcome, RecordOutcome::Skipped(Skip::UnderOutputLocation { .. })));
        // AND an input elsewhere in that bucket still is
        let rec = record("ObjectCreated:Put", "out", "data/a.csv");
        assert!(matches!(job_for_record(0, &rec, &shared_bucket).unwrap(), RecordOutcome::Job(_)));
    }

    #[test]
    fn records_missing_what_a_job_needs_are_errors() {
        let mut rec = record("ObjectCreated:Put", "in", "incoming/a.csv");
        rec.s3.object.e_tag = None;
        let err = job_for_record(3, &rec, &settings()).unwrap_err();
        assert_eq!(err.index, 3);
        assert!(err.problem.contains("eTag"), "{err}");

        let rec = record("ObjectCreated:Put", "in", "incoming/bad%FF.csv");
        assert!(job_for_record(0, &rec, &settings()).unwrap_err().problem.contains("UTF-8"));
    }
}
