//! One invocation: classify the event, enqueue the jobs, reconcile the workers.

use aws_lambda_events::s3::S3EventRecord;
use chrono::{DateTime, Utc};
use lambda_runtime::Diagnostic;
use serde_json::Value;
use shared::JobMessage;

use crate::config::TriggerConfig;
use crate::fleet::{ReconcileError, WorkerFleet, WorkerPlan, ensure_workers};
use crate::jobs::{BadRecord, RecordOutcome, Skip, job_for_record, messages_for};
use crate::queue::{JobQueue, QueueError, enqueue_jobs};

/// What the function returns: enough to see at a glance what one invocation did.
#[derive(Debug, Default, serde::Serialize)]
pub struct InvocationSummary {
    /// The files enqueued.
    pub jobs: Vec<String>,
    /// The messages sent: one per file, or one per shard of a big file.
    pub messages: usize,
    pub skipped: Vec<Skip>,
    /// Records that should have been jobs but cannot be (logged, and counted in the
    /// `BadRecords` metric, which has an alarm). The invocation still succeeds: failing it
    /// would make Lambda retry the whole event and enqueue its good records again, and a
    /// retry cannot mend a bad record.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bad_records: Vec<String>,
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
    #[error("could not enqueue jobs: {0}")]
    Queue(#[from] QueueError),
    #[error("could not reconcile workers: {0}")]
    Workers(#[from] ReconcileError),
}

impl TriggerError {
    /// Whether invoking again with the same event can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            TriggerError::UnrecognisedEvent(_) => false,
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
                        jobs.extend(messages_for(*job, &config.jobs));
                    }
                    Ok(RecordOutcome::Skipped(skip)) => {
                        tracing::info!(?skip, "record is not a job");
                        summary.skipped.push(skip);
                    }
                    Err(error) => {
                        tracing::error!(%error, "a record of the event cannot become a job; the others are enqueued");
                        summary.bad_records.push(error.to_string());
                    }
                }
            }
        }
    }

    enqueue_jobs(queue, &jobs).await?;
    summary.messages = jobs.len();
    for job in &jobs {
        match job.shard() {
            Some(shard) => tracing::info!(input = %job.describe_input(), shard = shard.index, shards = shard.count,
                start = shard.start, end = shard.end, "shard enqueued"),
            None => tracing::info!(input = %job.describe_input(), "job enqueued"),
        }
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

    Ok(summary)
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
