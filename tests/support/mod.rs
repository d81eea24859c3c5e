//! Set-up shared by the end-to-end tests: the local pipeline with short timeouts, delivering S3
//! events by hand, and reading back what the worker wrote.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use shared::JobReport;
use sluice_local::events::s3_object_created_event;
use sluice_local::lambda::AsyncInvocation;
use sluice_local::{FargateOptions, LocalModels, LocalPipeline, PipelineOptions, StackSettings, WorkerSettings};

/// template.yaml as YAML, CloudFormation's tags (`!Ref`, `!Sub`, ...) kept as tagged nodes.
pub mod template {
    use saphyr::{LoadableYamlNode, Yaml};

    pub fn template() -> Yaml<'static> {
        let text = std::fs::read_to_string(super::repo("template.yaml")).expect("template.yaml is readable");
        let text: &'static str = Box::leak(text.into_boxed_str());
        Yaml::load_from_str(text).expect("template.yaml is YAML").into_iter().next().expect("one document")
    }

    /// The node at `path` (mapping keys), or a panic naming what is missing.
    pub fn get<'a>(node: &'a Yaml<'static>, path: &[&str]) -> &'a Yaml<'static> {
        path.iter().fold(node, |node, key| {
            node.as_mapping_get(key).unwrap_or_else(|| panic!("template.yaml has no {key} in {}", path.join(".")))
        })
    }
}

/// A file of the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Options for a pipeline that reacts within seconds: short visibility timeout and polls.
pub fn quick_options() -> PipelineOptions {
    PipelineOptions {
        models: LocalModels::File(repo("models/iris_logreg.onnx")),
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
        reconcile_every: Some(Duration::from_secs(2)),
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
    pipeline.trigger().invoke_async_like_s3(event, Some(pipeline.trigger_dead_letter_queue())).await
}

pub use sluice_local::pipeline::scheduled_event;

pub async fn object(pipeline: &LocalPipeline, key: &str) -> Option<Vec<u8>> {
    let response = pipeline.s3.get_object().bucket(&pipeline.stack.output_bucket).key(key).send().await.ok()?;
    Some(response.body.collect().await.ok()?.into_bytes().to_vec())
}

pub async fn report(pipeline: &LocalPipeline, input_key: &str) -> JobReport {
    let key = pipeline.report_key(input_key);
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
/// The peak resident memory (KiB, the kernel's high-water mark) of process `pid`, sampled until
/// it exits; fails if it runs longer than `timeout`.
pub async fn peak_rss_kib_until_exit(pid: u32, timeout: Duration) -> u64 {
    let mut peak_kib = 0u64;
    let deadline = std::time::Instant::now() + timeout;
    while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        {
            peak_kib = kib;
        }
        assert!(std::time::Instant::now() < deadline, "the process did not finish within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak_kib
}

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

/// Waits until a multipart upload of `key` is under way in the output bucket: a job is past its
/// first output part.
pub async fn wait_for_upload(pipeline: &LocalPipeline, key: &str, timeout: Duration) {
    eventually(timeout, &format!("a multipart upload of {key} is under way"), || async {
        let uploads = pipeline.s3.list_multipart_uploads().bucket(&pipeline.stack.output_bucket).send().await.unwrap();
        uploads.uploads().iter().any(|u| u.key() == Some(key))
    })
    .await;
}

/// Multipart uploads left open in the output bucket.
pub async fn open_uploads(pipeline: &LocalPipeline) -> usize {
    let uploads = pipeline.s3.list_multipart_uploads().bucket(&pipeline.stack.output_bucket).send().await.unwrap();
    uploads.uploads().len()
}

/// Sends a raw message to the job queue.
pub async fn send_job_message(pipeline: &LocalPipeline, body: &str) {
    pipeline.sqs.send_message().queue_url(&pipeline.stack.queue_url).message_body(body).send().await.unwrap();
}

/// Moves every message of the jobs' dead-letter queue back to the job queue, as
/// `aws sqs start-message-move-task` does in AWS (moto does not implement it); returns how many.
pub async fn redrive(pipeline: &LocalPipeline) -> usize {
    let mut moved = 0;
    loop {
        let received = pipeline
            .sqs
            .receive_message()
            .queue_url(&pipeline.stack.dead_letter_queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return moved;
        }
        for message in messages {
            send_job_message(pipeline, message.body().unwrap()).await;
            pipeline
                .sqs
                .delete_message()
                .queue_url(&pipeline.stack.dead_letter_queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            moved += 1;
        }
    }
}

/// Everything every worker printed, running or finished.
pub fn worker_output(pipeline: &LocalPipeline) -> String {
    let fargate = pipeline.fargate();
    let mut text = String::new();
    let tasks =
        fargate.finished().into_iter().map(|w| w.task_arn).chain(fargate.running().into_iter().map(|w| w.task_arn));
    for task in tasks {
        text.push_str(&fargate.output_of(&task).unwrap_or_default());
        text.push('\n');
    }
    text
}

/// The completion events for `input_key`, as (detail-type, report).
pub async fn completion_events_for(pipeline: &LocalPipeline, input_key: &str) -> Vec<(String, JobReport)> {
    pipeline
        .completion_events()
        .await
        .expect("completion events")
        .into_iter()
        .filter(|e| e["detail"]["input"]["key"] == input_key)
        .map(|e| (e["detail-type"].as_str().unwrap().to_owned(), serde_json::from_value(e["detail"].clone()).unwrap()))
        .collect()
}
