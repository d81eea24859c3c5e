//! Completion events: every finished file is announced on EventBridge's default bus, with its
//! report as the event's detail, so that finishing can start anything (a Lambda function, a Step
//! Functions workflow, an SNS notification), as SageMaker Async Inference's success and error
//! topics do. A failure to announce is logged and counted; it does not undo the file.
//!
//! Delivery is at least once, as EventBridge's own: a worker that stops between putting the
//! event and recording that it did puts it again on the next try. The detail's `event_id` is
//! the same every time for one upload ([`shared::JobMessage::event_id`]); consumers deduplicate
//! on it.

use std::future::Future;

use shared::aws_error::{AwsError, AwsErrorKind};
use shared::{JobReport, JobStatus};

/// The events' `source`.
pub const SOURCE: &str = "sluice";
/// The `detail-type` of a file that succeeded.
pub const SUCCEEDED: &str = "Sluice File Succeeded";
/// The `detail-type` of a file that failed (the report says why).
pub const FAILED: &str = "Sluice File Failed";

/// Where finished files are announced.
pub trait CompletionEvents: Send + Sync {
    /// Announces `report`, under `event_id`.
    fn file_finished(&self, report: &JobReport, event_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// The event's detail: the report, and the event's id.
pub fn detail(report: &JobReport, event_id: &str) -> serde_json::Value {
    let mut detail = serde_json::to_value(report).expect("a report always serialises");
    if let serde_json::Value::Object(fields) = &mut detail {
        fields.insert("event_id".into(), event_id.into());
    }
    detail
}

/// The `detail-type` for a report.
pub fn detail_type(report: &JobReport) -> &'static str {
    match report.status {
        JobStatus::Succeeded => SUCCEEDED,
        JobStatus::Failed => FAILED,
    }
}

/// Announcements turned off (the `COMPLETION_EVENTS` setting).
pub struct NoCompletionEvents;

impl CompletionEvents for NoCompletionEvents {
    async fn file_finished(&self, _report: &JobReport, _event_id: &str) -> Result<(), AwsError> {
        Ok(())
    }
}

/// `PutEvents` on the account's default event bus.
pub struct EventBridgeCompletions {
    client: aws_sdk_eventbridge::Client,
}

impl EventBridgeCompletions {
    pub fn new(client: aws_sdk_eventbridge::Client) -> Self {
        Self { client }
    }
}

impl CompletionEvents for EventBridgeCompletions {
    async fn file_finished(&self, report: &JobReport, event_id: &str) -> Result<(), AwsError> {
        let detail = detail(report, event_id).to_string();
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(SOURCE)
            .detail_type(detail_type(report))
            .detail(detail)
            .resources(format!("arn:aws:s3:::{}/{}", report.input.bucket, report.input.key))
            .build();
        let response = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("EventBridge", "PutEvents", e))?;
        // PutEvents answers 200 with per-entry failures.
        if response.failed_entry_count() > 0
            && let Some(failed) = response.entries().iter().find(|e| e.error_code().is_some())
        {
            let code = failed.error_code().unwrap_or_default();
            return Err(AwsError::service(
                "EventBridge",
                "PutEvents",
                code,
                failed.error_message().unwrap_or_default(),
                // Throttling and internal failures are worth a retry; the rest are not.
                if code.contains("Throttl") || code.contains("Internal") { 503 } else { 400 },
            ));
        }
        if response.failed_entry_count() > 0 {
            return Err(AwsError::other(
                "EventBridge",
                "PutEvents",
                AwsErrorKind::Response,
                "an entry failed without a code",
            ));
        }
        Ok(())
    }
}
