//! The Lambda function binary: reads its settings, builds the clients once, serves events.

use aws_config::BehaviorVersion;
use lambda_runtime::{LambdaEvent, service_fn};
use lambda_trigger::fleet::EcsWorkerFleet;
use lambda_trigger::queue::SqsJobQueue;
use lambda_trigger::{TriggerConfig, handle};
use serde_json::Value;
use shared::config::process_environment;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // CloudWatch adds its own timestamps and shows no colours.
        .without_time()
        .with_ansi(false)
        .init();

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
        async move { handle(event.payload, config, queue, fleet, chrono::Utc::now()).await }
    }))
    .await
}
