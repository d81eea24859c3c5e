//! The work queue port: receive one job message, hide it while its job runs, delete it when
//! done, or hand it back. The SQS adapter is [`crate::sqs::SqsWorkQueue`]; tests use an
//! in-memory queue with the same visibility rules.

use std::future::Future;
use std::time::Duration;

use shared::aws_error::AwsError;

/// A failed queue call, with the service's error code.
pub type QueueError = AwsError;

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub body: String,
    /// What later calls about this delivery name it by.
    pub receipt: String,
    /// How many times the queue has delivered it, this time included.
    pub attempt: u32,
}

/// The job queue as the worker sees it.
pub trait WorkQueue: Clone + Send + Sync + 'static {
    /// One message, waiting up to `wait` for one to arrive; `None` when none did.
    ///
    /// One at a time: a worker holds only the message it works on, so the others stay
    /// available to other workers and never time out unprotected in a worker's hands.
    fn receive(&self, wait: Duration) -> impl Future<Output = Result<Option<Delivery>, QueueError>> + Send;
    fn delete(&self, receipt: &str) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Hides the message for `timeout` from now; zero makes it visible again at once.
    fn set_visibility(&self, receipt: &str, timeout: Duration) -> impl Future<Output = Result<(), QueueError>> + Send;
}
