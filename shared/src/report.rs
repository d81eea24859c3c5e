//! The report written beside every output (`<key>.report.json`): what happened to one input.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::input::InputObject;

/// How many row errors the report lists; the errors file has all of them.
pub const REPORTED_ROW_ERRORS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub status: JobStatus,
    /// Why the file failed, in words a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub input: InputObject,
    /// `s3://` URIs of what was written.
    pub outputs: ReportOutputs,
    pub rows: RowCounts,
    pub model: ModelInfo,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub worker_id: String,
    /// How many times the queue has delivered this job (1 on the first try).
    pub attempt: u32,
    /// The first few rejected rows; the errors file lists them all.
    #[serde(default)]
    pub first_errors: Vec<RowError>,
    /// For a file larger than the shard size: how it was split, or why it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitReport>,
}

/// How a big file was processed. A split file's report describes the whole file (rows, line
/// numbers, `duration_seconds` from the first shard's start to the output's publication);
/// this adds each shard's part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitReport {
    Shards {
        count: u32,
        shards: Vec<ShardReport>,
        /// Seconds the workers spent on the shards, all together.
        worker_seconds: f64,
        /// Seconds from the last shard's end to the output's publication.
        assembly_seconds: f64,
    },
    /// Why the file ran whole.
    NotSplit { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub index: u32,
    /// Its byte range, `[start, end)`.
    pub start: u64,
    pub end: u64,
    pub rows: u64,
    pub seconds: f64,
    pub worker_id: String,
    /// Which delivery of its message did it (above 1: a worker died or failed on it before).
    pub attempt: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportOutputs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
}

/// Data rows (the header is not a row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    #[serde(rename = "in")]
    pub input: u64,
    #[serde(rename = "out")]
    pub output: u64,
    pub bad: u64,
    /// Rows whose text was longer than the text model reads, cut to its maximum (their answer
    /// is the first tokens'), as sentence-transformers and transformers' pipelines cut them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model file that ran.
    pub uri: String,
    /// Its name in the model repository, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its version there (resolved when the job started, if the input asked for the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Hex SHA-256 of the model file; absent when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One rejected row: its number as a person counts lines in the file (the header is line 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}
