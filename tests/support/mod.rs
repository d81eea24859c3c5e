//! Set-up shared by the end-to-end tests: the local pipeline with short timeouts, delivering S3
//! events by hand, and reading back what the worker wrote.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use shared::JobReport;
use sluice_local::events::s3_object_created_event;
use sluice_local::lambda::{AsyncInvocation, DeadLetterQueue};
use sluice_local::{FargateOptions, LocalPipeline, PipelineOptions, StackSettings, WorkerSettings};

/// A file of the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Options for a pipeline that reacts within seconds: short visibility timeout and polls.
pub fn quick_options() -> PipelineOptions {
    PipelineOptions {
        model: repo("models/iris_logreg.onnx"),
        stack: StackSettings {
            visibility_timeout: Duration::from_secs(4),
            worker: WorkerSettings {
                poll_wait_seconds: 1,
                empty_polls_before_exit: 2,
                shutdown_grace_seconds: 5,
                ..WorkerSettings::default()
            },
            ..StackSettings::default()
        },
        fargate: FargateOptions { poll_interval: Duration::from_millis(100), ..FargateOptions::default() },
        ..PipelineOptions::default()
    }
}

pub async fn start(options: PipelineOptions) -> LocalPipeline {
    LocalPipeline::start(options)
        .await
        .expect("the local pipeline starts (run `make setup` and `cargo build --workspace` first)")
}

/// Delivers the S3 event for `key` in the input bucket to the trigger, as S3 would.
pub async fn deliver(pipeline: &LocalPipeline, key: &str) -> Result<AsyncInvocation> {
    let head = pipeline.s3.head_object().bucket(&pipeline.stack.input_bucket).key(key).send().await?;
    let etag = head.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    let size = head.content_length().unwrap_or_default() as u64;
    let event = s3_object_created_event(&pipeline.stack.input_bucket, key, size, &etag, None, "ObjectCreated:Put");
    invoke(pipeline, event).await
}

/// Invokes the trigger asynchronously (Lambda's retries and dead-letter queue included).
pub async fn invoke(pipeline: &LocalPipeline, event: Value) -> Result<AsyncInvocation> {
    let dlq =
        DeadLetterQueue { sqs: pipeline.sqs.clone(), queue_url: pipeline.stack.trigger_dead_letter_queue_url.clone() };
    pipeline.trigger().invoke_async_like_s3(event, Some(&dlq)).await
}

/// The EventBridge event of the trigger's reconciliation schedule.
pub fn scheduled_event() -> Value {
    serde_json::json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
}

pub async fn object(pipeline: &LocalPipeline, key: &str) -> Option<Vec<u8>> {
    let response = pipeline.s3.get_object().bucket(&pipeline.stack.output_bucket).key(key).send().await.ok()?;
    Some(response.body.collect().await.ok()?.into_bytes().to_vec())
}

pub async fn report(pipeline: &LocalPipeline, input_key: &str) -> JobReport {
    let key = format!("{input_key}.report.json");
    let bytes = object(pipeline, &key).await.with_context(|| format!("no report {key}")).unwrap();
    serde_json::from_slice(&bytes).expect("the report parses as a JobReport")
}

/// Keys in the output bucket.
pub async fn output_keys(pipeline: &LocalPipeline) -> Vec<String> {
    sluice_local::pipeline::list_keys(&pipeline.s3, &pipeline.stack.output_bucket).await.expect("list outputs")
}

/// Rows of a CSV text, header excluded.
pub fn csv_rows(text: &[u8]) -> Vec<Vec<String>> {
    csv::Reader::from_reader(text)
        .records()
        .map(|r| r.expect("valid CSV").iter().map(str::to_owned).collect())
        .collect()
}

/// An iris-like CSV of `rows` rows: the real iris rows over and over, with fresh ids.
pub fn iris_like_csv(rows: usize) -> String {
    let iris = std::fs::read_to_string(repo("examples/data/iris.csv")).expect("iris.csv");
    let mut lines = iris.lines();
    let header = lines.next().expect("header");
    let samples: Vec<&str> = lines.map(|l| l.split_once(',').expect("id,features").1).collect();
    let mut out = String::with_capacity(rows * 24);
    out.push_str(header);
    out.push('\n');
    for i in 0..rows {
        out.push_str(&format!("{},{}\n", i + 1, samples[i % samples.len()]));
    }
    out
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
