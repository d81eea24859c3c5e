//! The whole local pipeline with stand-in binaries (examples/fake_trigger.rs and
//! examples/fake_worker.rs): upload -> S3 event -> trigger under the Runtime API emulator ->
//! SQS + RunTask -> worker under the Fargate emulator -> outputs in S3.

use std::time::Duration;

use sluice_local::binaries::workspace_example;
use sluice_local::{FargateOptions, LocalPipeline, PipelineOptions, StackSettings, WorkerSettings};

#[tokio::test]
async fn uploads_flow_through_trigger_and_workers_to_outputs() {
    // GIVEN a model with its sidecar, and the pipeline with stand-in binaries
    let dir = std::env::temp_dir().join(format!("sluice-pipeline-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let model = dir.join("tiny.onnx");
    std::fs::write(&model, b"not really onnx").expect("model");
    std::fs::write(dir.join("tiny.onnx.json"), br#"{"features": [0]}"#).expect("sidecar");
    let options = PipelineOptions {
        model: model.clone(),
        trigger_binary: Some(workspace_example("fake_trigger").expect("fake_trigger is built")),
        worker_binary: Some(workspace_example("fake_worker").expect("fake_worker is built")),
        stack: StackSettings {
            visibility_timeout: Duration::from_secs(5),
            worker: WorkerSettings { poll_wait_seconds: 1, empty_polls_before_exit: 1, ..WorkerSettings::default() },
            ..StackSettings::default()
        },
        fargate: FargateOptions { poll_interval: Duration::from_millis(100), ..FargateOptions::default() },
        ..PipelineOptions::default()
    };
    let mut pipeline = LocalPipeline::start(options).await.expect("pipeline starts");
    assert_eq!(pipeline.model_uri, "s3://sluice-models/tiny.onnx");
    let models = sluice_local::pipeline::list_keys(&pipeline.s3, "sluice-models").await.expect("list");
    assert_eq!(models, ["tiny.onnx", "tiny.onnx.json"]);

    // WHEN two files are uploaded, one with a space in its key
    pipeline.put_input("a.csv", "x\n1\n2\n").await.expect("upload");
    pipeline.put_input("dir/b c.csv", "x\n3\n").await.expect("upload");
    let report = pipeline.wait_until_drained(Duration::from_secs(60)).await.expect("the pipeline drains");

    // THEN each upload was delivered once and the trigger handled it
    let mut keys: Vec<&str> = report.deliveries.iter().map(|d| d.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a.csv", "dir/b c.csv"]);
    assert!(report.deliveries.iter().all(|d| d.succeeded()), "{:?}", report.deliveries);
    assert!(report.deliveries.iter().all(|d| d.invocation.attempts == 1));
    // AND workers ran through ECS and exited cleanly
    assert!(report.workers_started >= 1);
    let finished = pipeline.fargate().finished();
    assert_eq!(finished.len(), report.workers_started);
    assert!(finished.iter().all(|w| w.succeeded()), "{finished:?}");
    // AND nothing was dead-lettered, and the outputs are there
    assert_eq!((report.dead_lettered_jobs, report.dead_lettered_events), (0, 0));
    let outputs = pipeline.outputs().await.expect("outputs");
    let bases: Vec<&str> = outputs.iter().map(|o| o.base_key.as_str()).collect();
    assert_eq!(bases, ["a.csv", "dir/b c.csv"]);
    assert_eq!(pipeline.read_output("a.csv.out").await.expect("output"), "x\n1\n2\n");
    let report_json = pipeline.read_report(&outputs[0]).await.expect("report").expect("a report");
    assert_eq!(report_json["rows_in"], 3);

    // WHEN nothing new is uploaded, draining again returns at once with no deliveries
    let again = pipeline.wait_until_drained(Duration::from_secs(30)).await.expect("drained");
    assert!(again.deliveries.is_empty());

    pipeline.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
