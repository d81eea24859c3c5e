//! One invocation: classify the event, enqueue the jobs, reconcile the workers.

use aws_lambda_events::s3::S3EventRecord;
use chrono::{DateTime, Utc};
use lambda_runtime::Diagnostic;
use serde_json::Value;
use shared::JobMessage;

use crate::config::TriggerConfig;
use crate::fleet::{ReconcileError, WorkerFleet, WorkerPlan, ensure_workers};
use crate::jobs::{BadRecord, RecordOutcome, Skip, job_for_record};
use crate::queue::{JobQueue, QueueError, enqueue_jobs};

/// What the function returns: enough to see at a glance what one invocation did.
#[derive(Debug, Default, serde::Serialize)]
pub struct InvocationSummary {
    pub jobs: Vec<String>,
    pub skipped: Vec<Skip>,
    pub workers: WorkerPlan,
    /// Why workers could not be started for jobs that are queued: the invocation still succeeds
    /// (failing it would make Lambda retry and enqueue the jobs again) and the scheduled
    /// reconciliation starts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_start_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("the event is neither an S3 notification nor a scheduled reconciliation: {0}")]
    UnrecognisedEvent(String),
    /// Good records of the same event were enqueued; these were not.
    #[error("{} record(s) could not become jobs: {}", .0.len(), join(.0))]
    BadRecords(Vec<BadRecord>),
    #[error("could not enqueue jobs: {0}")]
    Queue(#[from] QueueError),
    #[error("could not reconcile workers: {0}")]
    Workers(#[from] ReconcileError),
}

fn join(errors: &[BadRecord]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl TriggerError {
    /// Whether invoking again with the same event can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            TriggerError::UnrecognisedEvent(_) | TriggerError::BadRecords(_) => false,
            TriggerError::Queue(e) => e.is_retryable(),
            TriggerError::Workers(ReconcileError::Queue(e)) => e.is_retryable(),
            TriggerError::Workers(ReconcileError::Fleet(_)) => true,
        }
    }
}

impl From<TriggerError> for Diagnostic {
    fn from(error: TriggerError) -> Self {
        let kind = if error.is_retryable() { "Retryable" } else { "Permanent" };
        let name = match &error {
            TriggerError::UnrecognisedEvent(_) => "UnrecognisedEvent",
            TriggerError::BadRecords(_) => "BadRecords",
            TriggerError::Queue(_) => "QueueError",
            TriggerError::Workers(_) => "WorkerError",
        };
        Diagnostic { error_type: format!("{kind}.{name}"), error_message: error.to_string() }
    }
}

/// Handles one event: S3 notifications become jobs; any event (an EventBridge schedule
/// included) ends with the workers reconciled against the queue.
pub async fn handle(
    event: Value,
    config: &TriggerConfig,
    queue: &impl JobQueue,
    fleet: &impl WorkerFleet,
    now: DateTime<Utc>,
) -> Result<InvocationSummary, TriggerError> {
    let mut summary = InvocationSummary::default();
    let mut bad = Vec::new();
    let mut jobs: Vec<JobMessage> = Vec::new();

    match classify(&event)? {
        EventKind::S3Test => tracing::info!("S3 test event: nothing to do"),
        EventKind::Scheduled => tracing::info!("scheduled reconciliation"),
        EventKind::S3(records) => {
            for (index, record) in records.iter().enumerate() {
                let outcome = serde_json::from_value::<S3EventRecord>(record.clone())
                    .map_err(|e| BadRecord { index, problem: format!("is not an S3 event record: {e}") })
                    .and_then(|record| job_for_record(index, &record, &config.jobs));
                match outcome {
                    Ok(RecordOutcome::Job(job)) => {
                        summary.jobs.push(job.describe_input());
                        jobs.push(*job);
                    }
                    Ok(RecordOutcome::Skipped(skip)) => {
                        tracing::info!(?skip, "record is not a job");
                        summary.skipped.push(skip);
                    }
                    Err(error) => {
                        tracing::error!(%error, "bad record");
                        bad.push(error);
                    }
                }
            }
        }
    }

    enqueue_jobs(queue, &jobs).await?;
    for job in &jobs {
        tracing::info!(input = %job.describe_input(), "job enqueued");
    }
    match ensure_workers(queue, fleet, &config.fleet, jobs.len(), now).await {
        Ok(plan) => {
            if let Some(backoff) = &plan.backing_off {
                tracing::warn!(failures_in_a_row = backoff.failures_in_a_row, until = %backoff.until,
                    last_failure = %backoff.last_failure, "recent workers failed: starting none until the pause is over");
            }
            summary.workers = plan;
            tracing::info!(workers = ?summary.workers, "workers reconciled");
        }
        // The jobs are on the queue: failing the invocation now would only enqueue them again.
        Err(error) if !jobs.is_empty() => {
            tracing::error!(error = %error, jobs = jobs.len(),
                "could not start workers for the queued jobs; the scheduled reconciliation will try again");
            summary.worker_start_error = Some(error.to_string());
        }
        Err(error) => return Err(error.into()),
    }

    if bad.is_empty() { Ok(summary) } else { Err(TriggerError::BadRecords(bad)) }
}

enum EventKind<'a> {
    S3(&'a Vec<Value>),
    S3Test,
    Scheduled,
}

fn classify(event: &Value) -> Result<EventKind<'_>, TriggerError> {
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        return Ok(EventKind::S3(records));
    }
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(EventKind::S3Test);
    }
    if event.get("source").and_then(Value::as_str) == Some("aws.events") {
        return Ok(EventKind::Scheduled);
    }
    let mut shape = event.to_string();
    shape.truncate(200);
    Err(TriggerError::UnrecognisedEvent(shape))
}
