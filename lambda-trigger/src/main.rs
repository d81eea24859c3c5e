//! The Lambda function binary: reads its settings, builds the clients once, serves events.

use aws_config::BehaviorVersion;
use lambda_runtime::{LambdaEvent, service_fn};
use lambda_trigger::fleet::EcsWorkerFleet;
use lambda_trigger::metrics::invocation_record;
use lambda_trigger::queue::SqsJobQueue;
use lambda_trigger::{TriggerConfig, handle};
use serde_json::Value;
use shared::config::process_environment;
use shared::logging::{self, LogFormat};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init(LogFormat::detect());

    let config = match TriggerConfig::from_env(&process_environment()) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("lambda-trigger cannot start: {error}");
            return Err(error.into());
        }
    };
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let queue = SqsJobQueue::new(aws_sdk_sqs::Client::new(&sdk), &config.queue_url);
    let fleet = EcsWorkerFleet::new(aws_sdk_ecs::Client::new(&sdk), config.fleet.clone());

    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (config, queue, fleet) = (&config, &queue, &fleet);
        async move {
            let result = handle(event.payload, config, queue, fleet, chrono::Utc::now()).await;
            if let Some(record) = invocation_record(&config.metrics_namespace, &result) {
                record.emit();
            }
            result
        }
    }))
    .await
}
