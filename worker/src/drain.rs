//! The queue loop: receive one message at a time, run its job with a visibility heartbeat, then
//! delete the message or hand it back; stop after enough empty receives, or when asked to.
//!
//! - A worker holds only the message it works on, and keeps it hidden while it does: the others
//!   stay on the queue for other workers, and no message times out in a worker's hands.
//! - A message that is not a job is handed back at once (it has no heartbeat to race with), so
//!   that its receives run out and SQS moves it to the dead-letter queue.
//! - A job to be tried again is handed back with a short delay that doubles with each attempt:
//!   a live worker retries it soon, rather than after the whole visibility timeout.
//! - On a stop signal the job in hand has `shutdown_grace` to finish; after that it is
//!   abandoned (its uploads are aborted) and its message handed back at once.

use std::time::Duration;

use chrono::Utc;
use shared::{JobMessage, JobStatus};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::job::{JobHandler, JobOutcome};
use crate::metrics::{malformed_record, outcome_record};
use crate::queue::{Delivery, QueueError, WorkQueue};
use crate::retry::{Backoff, retry};
use crate::shutdown::Shutdown;

/// Receive errors in a row after which the worker gives up (and exits non-zero).
const MAX_RECEIVE_FAILURES: u32 = 10;
/// The longest pause before a handed-back job is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(900);
/// How long a stopping heartbeat may take to finish the extension it is sending.
const HEARTBEAT_STOP_WAIT: Duration = Duration::from_secs(5);

/// The loop's settings, from the worker's.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainSettings {
    pub poll_wait: Duration,
    pub empty_polls_before_exit: u32,
    pub visibility_timeout: Duration,
    pub shutdown_grace: Duration,
    /// The pause before the second try of a job; it doubles with each further one.
    pub retry_delay: Duration,
    pub metrics_namespace: String,
}

impl From<&WorkerConfig> for DrainSettings {
    fn from(config: &WorkerConfig) -> Self {
        Self {
            poll_wait: config.poll_wait,
            empty_polls_before_exit: config.empty_polls_before_exit,
            visibility_timeout: config.visibility_timeout,
            shutdown_grace: config.shutdown_grace,
            retry_delay: config.retry_delay,
            metrics_namespace: config.metrics_namespace.clone(),
        }
    }
}

impl DrainSettings {
    /// How long a job handed back after delivery `attempt` stays hidden before its next try.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        Backoff { attempts: u32::MAX, first: self.retry_delay, max: MAX_RETRY_DELAY.max(self.retry_delay) }
            .delay(attempt)
    }
}

/// What the loop did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainSummary {
    pub succeeded: u64,
    pub failed: u64,
    pub superseded: u64,
    /// Shards of big files staged, whose file another message reports.
    pub shards: u64,
    /// Jobs handed back to be tried again.
    pub retried: u64,
    /// Messages that were not jobs, handed back on their way to the dead-letter queue.
    pub malformed: u64,
    /// A job given up on a stop signal.
    pub abandoned: u64,
    pub stopped_by_signal: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("receiving from the job queue failed {failures} times in a row; the last time: {last}")]
    Receive { failures: u32, last: QueueError },
}

/// Runs until the queue stays empty for the configured number of receives, or `shutdown`.
pub async fn drain<Q: WorkQueue, H: JobHandler>(
    queue: &Q,
    jobs: &H,
    settings: &DrainSettings,
    shutdown: Shutdown,
) -> Result<DrainSummary, DrainError> {
    let mut summary = DrainSummary::default();
    let mut empty_polls = 0;
    let mut receive_failures = 0;
    while !shutdown.is_triggered() {
        let received = tokio::select! {
            received = queue.receive(settings.poll_wait) => received,
            () = shutdown.wait() => break,
        };
        let delivery = match received {
            Ok(Some(delivery)) => {
                receive_failures = 0;
                empty_polls = 0;
                delivery
            }
            Ok(None) => {
                receive_failures = 0;
                empty_polls += 1;
                if empty_polls >= settings.empty_polls_before_exit {
                    tracing::info!(empty_polls, "the queue is empty: exiting");
                    break;
                }
                continue;
            }
            Err(error) => {
                receive_failures += 1;
                if receive_failures >= MAX_RECEIVE_FAILURES {
                    return Err(DrainError::Receive { failures: receive_failures, last: error });
                }
                tracing::warn!(%error, "receiving from the job queue failed; retrying");
                tokio::time::sleep(Duration::from_secs(1 << receive_failures.min(5))).await;
                continue;
            }
        };
        let Some(job) = parse(queue, &delivery, settings, &mut summary).await else {
            continue;
        };
        let span = tracing::info_span!("job", input = %job.describe_input(), attempt = delivery.attempt,
            message_id = %delivery.message_id);
        let finished = run_job(queue, jobs, settings, &shutdown, &delivery, &job, &mut summary).instrument(span).await;
        if !finished {
            break;
        }
    }
    summary.stopped_by_signal = shutdown.is_triggered();
    Ok(summary)
}

/// The message's job, or `None` after handing a message that is not a job back.
async fn parse<Q: WorkQueue>(
    queue: &Q,
    delivery: &Delivery,
    settings: &DrainSettings,
    summary: &mut DrainSummary,
) -> Option<JobMessage> {
    match JobMessage::from_json(&delivery.body) {
        Ok(job) => Some(job),
        Err(error) => {
            // No input to report on: its receives run out and SQS moves it to the dead-letter queue.
            tracing::error!(message_id = %delivery.message_id, attempt = delivery.attempt, %error,
                "not a job this worker can run; handing it back on its way to the dead-letter queue");
            malformed_record(&settings.metrics_namespace).emit();
            hand_back(queue, delivery, Duration::ZERO).await;
            summary.malformed += 1;
            None
        }
    }
}

/// Runs one job under a heartbeat and settles its message. `false` when it was abandoned
/// because the worker is stopping.
async fn run_job<Q: WorkQueue, H: JobHandler>(
    queue: &Q,
    jobs: &H,
    settings: &DrainSettings,
    shutdown: &Shutdown,
    delivery: &Delivery,
    job: &JobMessage,
    summary: &mut DrainSummary,
) -> bool {
    tracing::info!("job started");
    let started_at = Utc::now();
    let heartbeat = Heartbeat::start(queue.clone(), delivery.receipt.clone(), settings.visibility_timeout);
    let outcome = {
        let run = jobs.run(job, delivery.attempt);
        tokio::pin!(run);
        tokio::select! {
            outcome = &mut run => Some(outcome),
            () = grace_after(shutdown, settings.shutdown_grace) => None,
        }
        // Dropping an unfinished job here aborts its uploads.
    };
    // No extension may land after the message is settled below.
    heartbeat.stop().await;
    let Some(outcome) = outcome else {
        tracing::warn!("stop timeout reached: abandoning the job and handing its message back");
        hand_back(queue, delivery, Duration::ZERO).await;
        summary.abandoned += 1;
        return false;
    };
    outcome_record(&settings.metrics_namespace, job, delivery.attempt, started_at, &outcome).emit();
    match &outcome {
        JobOutcome::Reported(report) if report.status == JobStatus::Succeeded => {
            summary.succeeded += 1;
            tracing::info!(rows_out = report.rows.output, bad_rows = report.rows.bad, "job succeeded");
        }
        JobOutcome::Reported(report) => {
            summary.failed += 1;
            tracing::warn!(reason = report.reason.as_deref().unwrap_or(""), "job failed: the file cannot be processed");
        }
        JobOutcome::Superseded(reason) => {
            summary.superseded += 1;
            tracing::info!(%reason, "job superseded: nothing written");
        }
        JobOutcome::ShardDone(what) => {
            summary.shards += 1;
            tracing::info!(%what, "shard done");
        }
        JobOutcome::Retry { cause, reason } => {
            summary.retried += 1;
            let delay = settings.retry_delay(delivery.attempt);
            tracing::warn!(?cause, %reason, retry_in_seconds = delay.as_secs(),
                "job not finished; handing its message back for another try");
            hand_back(queue, delivery, delay).await;
            return true;
        }
    }
    if let Err(error) = retry(&Backoff::CALLS, || queue.delete(&delivery.receipt)).await {
        // The outputs are written; a redelivery writes the same bytes again.
        tracing::error!(%error, "could not delete the finished job's message");
    }
    true
}

async fn grace_after(shutdown: &Shutdown, grace: Duration) {
    shutdown.wait().await;
    tracing::info!(grace_seconds = grace.as_secs(), "finishing the job in hand before stopping");
    tokio::time::sleep(grace).await;
}

/// Makes the message visible again after `delay`.
async fn hand_back<Q: WorkQueue>(queue: &Q, delivery: &Delivery, delay: Duration) {
    if let Err(error) = retry(&Backoff::CALLS, || queue.set_visibility(&delivery.receipt, delay)).await {
        tracing::error!(message_id = %delivery.message_id, %error,
            "could not hand the message back; it reappears when its visibility timeout ends");
    }
}

/// Keeps a message hidden while its job runs: extends its visibility every third of the
/// timeout.
struct Heartbeat {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Heartbeat {
    fn start<Q: WorkQueue>(queue: Q, receipt: String, timeout: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(timeout / 3) => {}
                }
                if let Err(error) = queue.set_visibility(&receipt, timeout).await {
                    tracing::warn!(%error, "could not extend the message's visibility");
                }
            }
        });
        Self { stop, task }
    }

    /// Stops it, letting an extension that is under way finish first (briefly), so that none
    /// can land after the message is deleted or handed back.
    async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(HEARTBEAT_STOP_WAIT, self.task).await.is_err() {
            abort.abort();
        }
    }
}
