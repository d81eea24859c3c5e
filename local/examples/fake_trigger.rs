//! A stand-in for `lambda-trigger` that exercises the harness end to end before the real one
//! exists: for each ObjectCreated record it sends `{"bucket", "key", "output_bucket"}` to
//! `QUEUE_URL` and starts one worker task with `RunTask` (Fargate, awsvpc from `WORKER_SUBNETS` /
//! `WORKER_SECURITY_GROUPS`). It reads the same environment variables the real trigger does.

use aws_config::BehaviorVersion;
use aws_sdk_ecs::types::{AssignPublicIp, AwsVpcConfiguration, LaunchType, NetworkConfiguration};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

struct Settings {
    queue_url: String,
    output_bucket: String,
    cluster: String,
    task_definition: String,
    subnets: Vec<String>,
    security_groups: Vec<String>,
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn list(name: &str) -> Result<Vec<String>, String> {
    Ok(var(name)?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

fn failure(error: impl std::fmt::Display) -> Diagnostic {
    Diagnostic { error_type: "FakeTriggerFailure".to_owned(), error_message: error.to_string() }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let ecs = aws_sdk_ecs::Client::new(&config);
    let settings = Settings {
        queue_url: var("QUEUE_URL")?,
        output_bucket: var("OUTPUT_BUCKET")?,
        cluster: var("ECS_CLUSTER")?,
        task_definition: var("WORKER_TASK_DEFINITION")?,
        subnets: list("WORKER_SUBNETS")?,
        security_groups: list("WORKER_SECURITY_GROUPS")?,
    };
    let settings = &settings;
    let (sqs, ecs) = (&sqs, &ecs);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(event.payload, settings, sqs, ecs).await
    }))
    .await
}

async fn handle(
    event: Value,
    settings: &Settings,
    sqs: &aws_sdk_sqs::Client,
    ecs: &aws_sdk_ecs::Client,
) -> Result<Value, Diagnostic> {
    let mut jobs = 0;
    for record in event["Records"].as_array().into_iter().flatten() {
        if !record["eventName"].as_str().unwrap_or_default().starts_with("ObjectCreated:") {
            continue;
        }
        let message = json!({
            "bucket": record["s3"]["bucket"]["name"],
            "key": record["s3"]["object"]["key"],
            "output_bucket": settings.output_bucket,
        });
        sqs.send_message()
            .queue_url(&settings.queue_url)
            .message_body(message.to_string())
            .send()
            .await
            .map_err(|e| failure(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        jobs += 1;
    }
    if jobs > 0 {
        let network = AwsVpcConfiguration::builder()
            .set_subnets(Some(settings.subnets.clone()))
            .set_security_groups(Some(settings.security_groups.clone()))
            .assign_public_ip(AssignPublicIp::Enabled)
            .build()
            .map_err(failure)?;
        ecs.run_task()
            .cluster(&settings.cluster)
            .task_definition(&settings.task_definition)
            .launch_type(LaunchType::Fargate)
            .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
            .started_by("fake-trigger")
            .send()
            .await
            .map_err(|e| failure(aws_sdk_ecs::error::DisplayErrorContext(e)))?;
    }
    Ok(json!({ "jobs": jobs }))
}
