//! The job queue: the port the handler needs, the SQS adapter, and batched sending with retries.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use shared::JobMessage;
use shared::aws_error::{AwsError, AwsErrorKind};

/// SQS accepts at most ten messages in one `SendMessageBatch`.
pub const MAX_BATCH: usize = 10;
/// Attempts for entries that SQS reports as failed, before giving up.
pub const SEND_ATTEMPTS: u32 = 4;

/// What the trigger needs from a queue.
pub trait JobQueue {
    /// Sends up to [`MAX_BATCH`] messages; returns the entries that failed (by index in `jobs`).
    fn send_batch(&self, jobs: &[&JobMessage]) -> impl Future<Output = Result<Vec<FailedEntry>, QueueError>> + Send;
    /// The jobs on the queue: waiting to be received, and in the hands of a worker.
    fn backlog(&self) -> impl Future<Output = Result<Backlog, QueueError>> + Send;
}

/// The jobs on the queue (SQS's approximate counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// Visible messages: jobs no worker has received yet.
    pub waiting: u64,
    /// Messages received and not yet deleted: jobs in a worker's hands, or handed back with a
    /// delay before their next try.
    pub in_hand: u64,
}

impl Backlog {
    /// Every job that still needs a worker.
    pub fn total(&self) -> u64 {
        self.waiting + self.in_hand
    }
}

/// One entry of a batch that the queue did not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    pub index: usize,
    pub code: String,
    pub message: String,
    /// The request itself was wrong (retrying the same message will not help).
    pub sender_fault: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Request(#[source] AwsError),
    #[error(
        "{count} job message(s) were not accepted by the queue after {SEND_ATTEMPTS} attempts; first: {code}: {message}"
    )]
    Rejected { count: usize, code: String, message: String, sender_fault: bool },
}

impl QueueError {
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::Request(e) => e.is_retryable(),
            QueueError::Rejected { sender_fault, .. } => !sender_fault,
        }
    }
}

/// Sends every job, ten at a time, retrying the entries SQS reports as failed with backoff.
pub async fn enqueue_jobs(queue: &impl JobQueue, jobs: &[JobMessage]) -> Result<(), QueueError> {
    for chunk in jobs.chunks(MAX_BATCH) {
        let mut pending: Vec<&JobMessage> = chunk.iter().collect();
        let mut attempt = 1;
        loop {
            let failed = queue.send_batch(&pending).await?;
            if failed.is_empty() {
                break;
            }
            let permanent = failed.iter().any(|f| f.sender_fault);
            if permanent || attempt >= SEND_ATTEMPTS {
                let first = &failed[0];
                return Err(QueueError::Rejected {
                    count: failed.len(),
                    code: first.code.clone(),
                    message: first.message.clone(),
                    sender_fault: permanent,
                });
            }
            tracing::warn!(failed = failed.len(), attempt, "queue rejected some job messages; retrying them");
            pending = failed.iter().map(|f| pending[f.index]).collect();
            tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            attempt += 1;
        }
    }
    Ok(())
}

/// The job queue on SQS.
pub struct SqsJobQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsJobQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

impl JobQueue for SqsJobQueue {
    async fn send_batch(&self, jobs: &[&JobMessage]) -> Result<Vec<FailedEntry>, QueueError> {
        let entries = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(job.to_json()).build().map_err(
                    |e| QueueError::Request(AwsError::other("SQS", "SendMessageBatch", AwsErrorKind::Request, e)),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let response = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| QueueError::Request(AwsError::from_sdk("SQS", "SendMessageBatch", e)))?;
        response
            .failed
            .into_iter()
            .map(|f| {
                // The ids are the indexes this adapter gave; anything else cannot be retried safely.
                let index = f.id.parse().ok().filter(|&i: &usize| i < jobs.len()).ok_or_else(|| {
                    let problem = format!("SQS reported a failed entry with unknown id {:?}", f.id);
                    QueueError::Request(AwsError::other("SQS", "SendMessageBatch", AwsErrorKind::Response, problem))
                })?;
                Ok(FailedEntry {
                    index,
                    code: f.code,
                    message: f.message.unwrap_or_default(),
                    sender_fault: f.sender_fault,
                })
            })
            .collect()
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let response = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| QueueError::Request(AwsError::from_sdk("SQS", "GetQueueAttributes", e)))?;
        let count = |name: QueueAttributeName| {
            response.attributes.as_ref().and_then(|a| a.get(&name)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok(Backlog {
            waiting: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_hand: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}
