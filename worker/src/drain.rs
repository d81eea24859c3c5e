//! The queue loop: receive, run each job with a visibility heartbeat, delete when done, stop
//! after enough empty receives or when asked to.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use shared::{JobMessage, JobStatus};

use crate::job::{JobOutcome, JobRunner};
use crate::shutdown::Shutdown;

/// Receive errors in a row after which the worker gives up (and exits non-zero).
const MAX_RECEIVE_FAILURES: u32 = 10;

/// One received message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub body: String,
    pub receipt: String,
    /// How many times the queue has delivered it, this time included.
    pub attempt: u32,
}

/// The job queue as the worker sees it.
#[derive(Clone)]
pub struct WorkQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

type SqsResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl WorkQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }

    pub async fn receive(&self, wait: Duration) -> SqsResult<Vec<Delivery>> {
        let response = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await?;
        Ok(response
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let attempt = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Some(Delivery {
                    message_id: m.message_id.unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                    attempt,
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt: &str) -> SqsResult<()> {
        self.client.delete_message().queue_url(&self.url).receipt_handle(receipt).send().await?;
        Ok(())
    }

    /// Hides the message for `timeout` from now; zero makes it visible again at once.
    pub async fn set_visibility(&self, receipt: &str, timeout: Duration) -> SqsResult<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs() as i32)
            .send()
            .await?;
        Ok(())
    }
}

/// Why the loop ended, and what it did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainSummary {
    pub succeeded: u64,
    pub failed: u64,
    pub left_for_retry: u64,
    pub stopped_by_signal: bool,
}

/// Keeps a message hidden while its job runs; stops when dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(queue: WorkQueue, receipt: String, timeout: Duration) -> Self {
        Self(tokio::spawn(async move {
            loop {
                if let Err(e) = queue.set_visibility(&receipt, timeout).await {
                    tracing::warn!(error = %e, "could not extend the message's visibility");
                }
                tokio::time::sleep(timeout / 3).await;
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs until the queue stays empty for the configured number of receives, or `shutdown`.
pub async fn drain(queue: &WorkQueue, runner: &JobRunner, shutdown: Shutdown) -> anyhow::Result<DrainSummary> {
    let config = &runner.config;
    let mut summary = DrainSummary::default();
    let mut empty_polls = 0;
    let mut receive_failures = 0;
    'receiving: while !shutdown.is_triggered() {
        let received = tokio::select! {
            received = queue.receive(config.poll_wait) => received,
            _ = shutdown.wait() => break,
        };
        let deliveries = match received {
            Ok(deliveries) => {
                receive_failures = 0;
                deliveries
            }
            Err(error) => {
                receive_failures += 1;
                if receive_failures >= MAX_RECEIVE_FAILURES {
                    anyhow::bail!("receiving from the job queue failed {receive_failures} times in a row: {error}");
                }
                tracing::warn!(%error, "receiving from the job queue failed; retrying");
                tokio::time::sleep(Duration::from_secs(1 << receive_failures.min(5))).await;
                continue;
            }
        };
        if deliveries.is_empty() {
            empty_polls += 1;
            if empty_polls >= config.empty_polls_before_exit {
                tracing::info!(empty_polls, "the queue is empty: exiting");
                break;
            }
            continue;
        }
        empty_polls = 0;

        for (index, delivery) in deliveries.iter().enumerate() {
            if shutdown.is_triggered() {
                release_all(queue, &deliveries[index..]).await;
                break 'receiving;
            }
            let heartbeat = Heartbeat::start(queue.clone(), delivery.receipt.clone(), config.visibility_timeout);
            let job = handle_delivery(queue, runner, delivery, &mut summary);
            tokio::pin!(job);
            let finished = tokio::select! {
                () = &mut job => true,
                () = grace_after(&shutdown, config.shutdown_grace) => false,
            };
            drop(heartbeat);
            if !finished {
                tracing::warn!(message = %delivery.message_id, "stop timeout reached: abandoning the job and returning its message");
                release_all(queue, &deliveries[index..]).await;
                break 'receiving;
            }
        }
    }
    summary.stopped_by_signal = shutdown.is_triggered();
    runner.storage.finish_cleanups().await;
    Ok(summary)
}

async fn grace_after(shutdown: &Shutdown, grace: Duration) {
    shutdown.wait().await;
    tracing::info!(grace_seconds = grace.as_secs(), "finishing the job in hand before stopping");
    tokio::time::sleep(grace).await;
}

async fn handle_delivery(queue: &WorkQueue, runner: &JobRunner, delivery: &Delivery, summary: &mut DrainSummary) {
    let job = match JobMessage::from_json(&delivery.body) {
        Ok(job) => job,
        Err(error) => {
            // No input to report on: let redelivery take it to the dead-letter queue.
            tracing::error!(message = %delivery.message_id, attempt = delivery.attempt, %error,
                "not a job this worker can run; returning it so that it reaches the dead-letter queue");
            if let Err(e) = queue.set_visibility(&delivery.receipt, Duration::ZERO).await {
                tracing::warn!(error = %e, "could not return the message");
            }
            summary.left_for_retry += 1;
            return;
        }
    };
    let input = job.describe_input();
    tracing::info!(%input, attempt = delivery.attempt, "job started");
    match runner.run(&job, delivery.attempt).await {
        Ok(outcome) => {
            match &outcome {
                JobOutcome::Reported(report) if report.status == JobStatus::Succeeded => {
                    summary.succeeded += 1;
                    tracing::info!(%input, rows_out = report.rows.output, bad_rows = report.rows.bad, "job succeeded");
                }
                JobOutcome::Reported(report) => {
                    summary.failed += 1;
                    tracing::warn!(%input, reason = report.reason.as_deref().unwrap_or(""), "job failed");
                }
                JobOutcome::Superseded => {
                    tracing::info!(%input, "input was replaced since the event: skipped")
                }
            }
            if let Err(e) = queue.delete(&delivery.receipt).await {
                // The outputs are written; a redelivery rewrites the same bytes.
                tracing::warn!(%input, error = %e, "could not delete the finished job's message");
            }
        }
        Err(error) => {
            summary.left_for_retry += 1;
            tracing::warn!(%input, %error, "job hit a transient failure; its message will be delivered again");
        }
    }
}

async fn release_all(queue: &WorkQueue, deliveries: &[Delivery]) {
    for delivery in deliveries {
        if let Err(e) = queue.set_visibility(&delivery.receipt, Duration::ZERO).await {
            tracing::warn!(message = %delivery.message_id, error = %e, "could not return the message to the queue");
        }
    }
}
