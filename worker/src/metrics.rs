//! The worker's metrics, one embedded-metric-format record per job outcome (see
//! [`shared::metrics`]): files succeeded, failed and superseded, jobs handed back, rows in, out
//! and bad, seconds, rows per second, and the delay from the upload to the job's start.

use chrono::{DateTime, Utc};
use shared::metrics::{MetricRecord, Unit};
use shared::{JobMessage, JobStatus};

use crate::job::{JobOutcome, RetryCause};

/// Every metric the worker writes (the template's dashboard may plot only these).
pub const NAMES: &[&str] = &[
    "FilesSucceeded",
    "FilesFailed",
    "FilesSuperseded",
    "ShardsDone",
    "JobsRetried",
    "MessagesMalformed",
    "RowsIn",
    "RowsOut",
    "RowsBad",
    "Seconds",
    "RowsPerSecond",
    "UploadToStartSeconds",
    "CompletionEventFailures",
];

/// The record for one job's outcome.
pub fn outcome_record(
    namespace: &str,
    job: &JobMessage,
    attempt: u32,
    started_at: DateTime<Utc>,
    outcome: &JobOutcome,
) -> MetricRecord {
    let waited = (started_at - job.event_time).num_milliseconds().max(0) as f64 / 1000.0;
    let record = MetricRecord::new(namespace)
        .property("input", format!("s3://{}/{}", job.input.bucket, job.input.key))
        .property("attempt", attempt);
    match outcome {
        JobOutcome::Reported(report) => {
            let succeeded = report.status == JobStatus::Succeeded;
            let seconds = report.duration_seconds;
            record
                .metric("FilesSucceeded", Unit::Count, f64::from(u8::from(succeeded)))
                .metric("FilesFailed", Unit::Count, f64::from(u8::from(!succeeded)))
                .metric("RowsIn", Unit::Count, report.rows.input as f64)
                .metric("RowsOut", Unit::Count, report.rows.output as f64)
                .metric("RowsBad", Unit::Count, report.rows.bad as f64)
                .metric("Seconds", Unit::Seconds, seconds)
                .metric("RowsPerSecond", Unit::CountPerSecond, report.rows.input as f64 / seconds.max(1e-6))
                .metric("UploadToStartSeconds", Unit::Seconds, waited)
                .property("status", if succeeded { "succeeded" } else { "failed" })
                .property("worker_id", report.worker_id.clone())
        }
        JobOutcome::Superseded(reason) => {
            record.metric("FilesSuperseded", Unit::Count, 1.0).property("reason", reason.clone())
        }
        JobOutcome::ShardDone(what) => record.metric("ShardsDone", Unit::Count, 1.0).property("shard", what.clone()),
        JobOutcome::Retry { cause, reason } => record
            .metric("JobsRetried", Unit::Count, 1.0)
            .metric("UploadToStartSeconds", Unit::Seconds, waited)
            .property(
                "cause",
                match cause {
                    RetryCause::Transient => "transient",
                    RetryCause::Operator => "operator",
                },
            )
            .property("reason", reason.clone()),
    }
}

/// The record for a message that is not a job.
pub fn malformed_record(namespace: &str) -> MetricRecord {
    MetricRecord::new(namespace).metric("MessagesMalformed", Unit::Count, 1.0)
}

#[cfg(test)]
mod tests {
    use shared::report::{JobReport, ModelInfo, ReportOutputs, RowCounts};
    use shared::{InputObject, OutputLocation};

    use super::*;

    #[test]
    fn each_outcome_is_a_record_of_declared_metrics_with_its_delay_from_the_upload() {
        let uploaded = "2026-11-21T08:00:00Z".parse().unwrap();
        let started: DateTime<Utc> = "2026-11-21T08:00:30Z".parse().unwrap();
        let job = JobMessage::new(
            InputObject { bucket: "in".into(), key: "a.csv".into(), size: 1, etag: "e".into(), version_id: None },
            OutputLocation { bucket: "out".into(), prefix: String::new(), reports: String::new() },
            "s3://m/model.onnx",
            uploaded,
        );
        let report = JobReport {
            status: JobStatus::Succeeded,
            reason: None,
            input: job.input.clone(),
            outputs: ReportOutputs::default(),
            rows: RowCounts { input: 1000, output: 990, bad: 10, truncated: 0 },
            model: ModelInfo { uri: job.model.to_string(), name: None, version: None, sha256: None },
            started_at: started,
            finished_at: started,
            duration_seconds: 2.0,
            worker_id: "w".into(),
            attempt: 1,
            first_errors: vec![],
            split: None,
        };
        let outcomes = [
            JobOutcome::Reported(Box::new(report)),
            JobOutcome::Superseded("replaced".into()),
            JobOutcome::ShardDone("shard 1 of 2 staged".into()),
            JobOutcome::Retry { cause: RetryCause::Operator, reason: "AccessDenied".into() },
        ];
        let records: Vec<_> = outcomes.iter().map(|o| outcome_record("ns", &job, 1, started, o).to_json()).collect();
        assert_eq!(records[0]["RowsPerSecond"], 500.0);
        assert_eq!(records[0]["UploadToStartSeconds"], 30.0);
        assert_eq!((records[0]["FilesSucceeded"].clone(), records[0]["FilesFailed"].clone()), (1.0.into(), 0.0.into()));
        assert_eq!(records[1]["FilesSuperseded"], 1.0);
        assert_eq!(records[2]["ShardsDone"], 1.0);
        assert_eq!(records[3]["JobsRetried"], 1.0);
        assert_eq!(records[3]["cause"], "operator");
        for record in records.iter().chain([&malformed_record("ns").to_json()]) {
            for metric in record["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
                assert!(NAMES.contains(&metric["Name"].as_str().unwrap()), "{metric}");
            }
        }
    }
}
