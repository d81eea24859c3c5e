//! The work queue on Amazon SQS.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use shared::aws_error::AwsError;

use crate::queue::{Delivery, QueueError, WorkQueue};

#[derive(Clone)]
pub struct SqsWorkQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsWorkQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }
}

impl WorkQueue for SqsWorkQueue {
    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let response = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(1)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("SQS", "ReceiveMessage", e))?;
        Ok(response.messages.unwrap_or_default().into_iter().find_map(|m| {
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
        }))
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("SQS", "DeleteMessage", e))?;
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("SQS", "ChangeMessageVisibility", e))?;
        Ok(())
    }
}
