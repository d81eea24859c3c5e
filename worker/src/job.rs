//! One job: stream the input through the model into the outputs, then write the report.
//!
//! The outcome is either a report (succeeded, or failed for a reason retrying cannot fix) or a
//! [`TransientError`], after which the message is left for the queue to deliver again.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use shared::JobMessage;
use shared::keys::OutputKeys;
use shared::report::{JobReport, JobStatus, ModelInfo, ReportOutputs, RowCounts};

use crate::config::WorkerConfig;
use crate::engine::{FileKind, TransformError, TransformSummary, transform};
use crate::models::{LoadedModel, ModelCache};
use crate::storage::{PART_SIZE, S3Storage, StorageError, input_channel, output_channel};

/// What the worker needs to run jobs.
pub struct JobRunner {
    pub storage: S3Storage,
    pub models: ModelCache,
    pub config: WorkerConfig,
    pub worker_id: String,
}

/// A failure that may pass: the message should be delivered again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransientError(String);

/// What happened to a job that needs no retry.
#[derive(Debug)]
pub enum JobOutcome {
    Reported(Box<JobReport>),
    /// The object was replaced after this event; the newer version's own event covers it.
    Superseded,
}

/// A failure of this file that retrying cannot fix, with what was learnt before it.
struct Permanent {
    reason: String,
    summary: TransformSummary,
    errors_written: bool,
}

impl Permanent {
    fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), summary: TransformSummary::default(), errors_written: false }
    }
}

enum Failure {
    Permanent(Permanent),
    Transient(String),
    Superseded,
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Changed { .. } => Failure::Superseded,
            e if e.is_transient() => Failure::Transient(e.to_string()),
            e => Failure::Permanent(Permanent::new(e.to_string())),
        }
    }
}

impl JobRunner {
    pub async fn run(&self, job: &JobMessage, attempt: u32) -> Result<JobOutcome, TransientError> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let keys = job.output_keys();
        let result = self.transform(job, &keys).await;

        let (status, reason, summary, errors_written, model_sha) = match result {
            Ok((summary, sha)) => {
                let errors_written = summary.bad_rows > 0;
                (JobStatus::Succeeded, None, summary, errors_written, Some(sha))
            }
            Err((Failure::Permanent(p), sha)) => (JobStatus::Failed, Some(p.reason), p.summary, p.errors_written, sha),
            Err((Failure::Transient(reason), _)) => return Err(TransientError(reason)),
            Err((Failure::Superseded, _)) => return Ok(JobOutcome::Superseded),
        };

        // Leave no output of an earlier version of this input that would contradict the report.
        let out = &job.output.bucket;
        let stale = match status {
            JobStatus::Succeeded if !errors_written => Some(&keys.errors),
            JobStatus::Failed => Some(&keys.data),
            JobStatus::Succeeded => None,
        };
        if let Some(stale) = stale {
            self.storage.delete(out, stale).await.map_err(|e| TransientError(e.to_string()))?;
        }
        if !errors_written && status == JobStatus::Failed {
            self.storage.delete(out, &keys.errors).await.map_err(|e| TransientError(e.to_string()))?;
        }

        let report = JobReport {
            status,
            reason,
            input: job.input.clone(),
            outputs: ReportOutputs {
                data: (status == JobStatus::Succeeded).then(|| format!("s3://{out}/{}", keys.data)),
                errors: errors_written.then(|| format!("s3://{out}/{}", keys.errors)),
            },
            rows: RowCounts { input: summary.rows_in, output: summary.rows_out, bad: summary.bad_rows },
            model: ModelInfo { uri: job.model_uri.clone(), sha256: model_sha },
            started_at,
            finished_at: Utc::now(),
            duration_seconds: clock.elapsed().as_secs_f64(),
            worker_id: self.worker_id.clone(),
            attempt,
            first_errors: summary.first_errors,
        };
        let body = serde_json::to_vec_pretty(&report).expect("a report always serialises");
        self.storage
            .put(out, &keys.report, body, "application/json")
            .await
            .map_err(|e| TransientError(e.to_string()))?;
        Ok(JobOutcome::Reported(Box::new(report)))
    }

    /// Runs the model over the input; on success the outputs are complete.
    async fn transform(
        &self,
        job: &JobMessage,
        keys: &OutputKeys,
    ) -> Result<(TransformSummary, String), (Failure, Option<String>)> {
        let kind = match input_kind(job, &self.config) {
            Ok(kind) => kind,
            Err(problem) => return Err((Failure::Permanent(Permanent::new(problem)), None)),
        };
        let model: Arc<LoadedModel> = match self.models.get(&job.model_uri).await {
            Ok(model) => model,
            Err(e) if e.is_transient() => return Err((Failure::Transient(e.to_string()), None)),
            Err(e) => return Err((Failure::Permanent(Permanent::new(e.to_string())), None)),
        };
        let sha = Some(model.model.sha256.clone());
        let body = self.storage.open_input(&job.input).await.map_err(|e| (e.into(), sha.clone()))?;

        let input_uri = format!("s3://{}/{}", job.input.bucket, job.input.key);
        let (chunks, reader) = input_channel();
        let (data_writer, data_parts) = output_channel(PART_SIZE);
        let (errors_writer, errors_parts) = output_channel(PART_SIZE);
        let options = self.config.transform;
        let engine_model = model.clone();
        let engine = tokio::task::spawn_blocking(move || {
            let mut data_writer = data_writer;
            let mut errors_writer = errors_writer;
            let result = transform(
                reader,
                kind,
                &mut data_writer,
                &mut errors_writer,
                &engine_model.model,
                &options,
                &mut |_| {},
            );
            // Outputs are completed only from here; anything else drops them, and drops abandon.
            let errors_complete = match &result {
                Ok(s) if s.bad_rows > 0 => errors_writer.finish().is_ok(),
                Err(TransformError::TooManyBadRows { .. }) => errors_writer.finish().is_ok(),
                _ => false,
            };
            if result.is_ok() {
                data_writer.finish()?;
            }
            Ok::<_, std::io::Error>((result, errors_complete))
        });

        let out = &job.output.bucket;
        let (downloaded, data_upload, errors_upload, engine) = tokio::join!(
            S3Storage::pump(&input_uri, body, chunks),
            self.storage.upload(out, &keys.data, "text/csv", data_parts),
            self.storage.upload(out, &keys.errors, "text/csv", errors_parts),
            engine,
        );

        // Storage failures come first: they explain any I/O error the engine saw.
        downloaded.map_err(|e| (e.into(), sha.clone()))?;
        let (result, errors_complete) = match engine {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(io)) => {
                return Err((Failure::Transient(format!("writing the output failed: {io}")), sha));
            }
            Err(join) => {
                return Err((Failure::Transient(format!("the transform stopped unexpectedly: {join}")), sha));
            }
        };
        let errors_written = errors_complete && errors_upload.is_ok();
        if errors_complete && let Err(e) = &errors_upload {
            return Err((Failure::Transient(e.to_string()), sha));
        }
        match result {
            Ok(summary) => {
                data_upload.map_err(|e| (Failure::Transient(e.to_string()), sha.clone()))?;
                tracing::info!(input = %input_uri, rows_in = summary.rows_in, rows_out = summary.rows_out,
                    bad = summary.bad_rows, "transform complete");
                Ok((summary, model.model.sha256.clone()))
            }
            Err(error) if !error.is_permanent() => {
                Err((Failure::Transient(format!("reading or writing failed: {error}")), sha))
            }
            Err(error) => {
                let summary = match &error {
                    TransformError::TooManyBadRows { summary, .. } => summary.clone(),
                    _ => TransformSummary::default(),
                };
                let reason = format!("{input_uri}: {error}");
                Err((Failure::Permanent(Permanent { reason, summary, errors_written }), sha))
            }
        }
    }
}

/// The input's format, or why the job cannot be attempted at all, judged from the message.
fn input_kind(job: &JobMessage, config: &WorkerConfig) -> Result<FileKind, String> {
    let uri = format!("s3://{}/{}", job.input.bucket, job.input.key);
    let kind = FileKind::from_name(&job.input.key, None, config.csv).map_err(|e| format!("{uri}: {e}"))?;
    if job.input.size > config.max_input_bytes {
        return Err(format!(
            "{uri} is {} bytes, larger than the limit of {} bytes (MAX_INPUT_BYTES)",
            job.input.size, config.max_input_bytes
        ));
    }
    Ok(kind)
}
