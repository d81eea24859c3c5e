//! End to end: JSON Lines, gzip, bad rows and bounded memory, through the real binaries and moto.

use std::io::Write;
use std::time::Duration;

use shared::JobStatus;
use sluice_e2e::*;
use sluice_local::{LocalModels, PipelineOptions};

const DRAIN: Duration = Duration::from_secs(180);

#[tokio::test]
async fn json_lines_and_gzip_inputs_get_outputs_in_their_format() {
    // GIVEN iris as JSON Lines, and iris.csv gzip-compressed
    let mut pipeline = start(quick_options()).await;
    let csv = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    let jsonl: String = csv_rows(&csv)
        .iter()
        .map(|r| {
            format!(
                "{{\"id\": {}, \"sepal_length\": {}, \"sepal_width\": {}, \"petal_length\": {}, \"petal_width\": {}}}\n",
                r[0], r[1], r[2], r[3], r[4]
            )
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&csv).unwrap();
    pipeline.put_input("in/iris.jsonl", jsonl).await.unwrap();
    pipeline.put_input("in/iris.csv.gz", gz.finish().unwrap()).await.unwrap();
    pipeline.put_input("in/plain.csv", csv).await.unwrap();
    // WHEN they are processed
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN the compressed file's output equals the plain file's
    let plain = object(&pipeline, "in/plain.csv.out").await.expect("plain output");
    assert_eq!(object(&pipeline, "in/iris.csv.gz.out").await.expect("gzip output"), plain);
    // AND the JSON Lines output holds the same predictions as objects
    let out = String::from_utf8(object(&pipeline, "in/iris.jsonl.out").await.expect("jsonl output")).unwrap();
    let objects: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let rows = csv_rows(&plain);
    assert_eq!(objects.len(), 150);
    for (object, row) in objects.iter().zip(&rows) {
        assert_eq!(object["id"].to_string(), row[0]);
        assert_eq!(object["label"], row[1].as_str());
        let p: f64 = row[2].parse().unwrap();
        assert!((object["probabilities_setosa"].as_f64().unwrap() - p).abs() < 1e-6);
    }
    for key in ["in/iris.jsonl", "in/iris.csv.gz", "in/plain.csv"] {
        assert_eq!(report(&pipeline, key).await.status, JobStatus::Succeeded, "{key}");
    }
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_model_with_its_configuration_inside_needs_no_sidecar() {
    // GIVEN a deployment whose model names its own classes and carries its configuration in its
    // ONNX metadata, with no sidecar in the bucket
    let mut pipeline =
        start(PipelineOptions { models: LocalModels::File(repo("models/iris_named.onnx")), ..quick_options() }).await;
    assert!(!repo("models/iris_named.onnx.json").exists());
    pipeline.put_input("iris.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    // WHEN the file is processed
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN the output is onnxruntime's: id passed through, class names from the model
    assert_eq!(report(&pipeline, "iris.csv").await.status, JobStatus::Succeeded);
    let out = object(&pipeline, "iris.csv.out").await.expect("output");
    let reference = std::fs::read(repo("models/reference/iris_named.csv")).unwrap();
    assert!(out.starts_with(b"id,label,probabilities_setosa,probabilities_versicolor,probabilities_virginica\n"));
    let (got, want) = (csv_rows(&out), csv_rows(&reference));
    assert_eq!(got.len(), 150);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g[..2], w[..2], "id and label");
    }
    pipeline.shutdown().await;
}

#[tokio::test]
async fn bad_rows_go_to_the_errors_file_and_too_many_fail_the_file() {
    // GIVEN a file with two bad rows in 150, and one that is mostly bad
    let mut pipeline = start(quick_options()).await;
    let csv = String::from_utf8(std::fs::read(repo("examples/data/iris.csv")).unwrap()).unwrap();
    let some_bad = csv.replacen("5.1,3.5,1.4,0.2", "5.1,abc,1.4,0.2", 1).replacen("4.9,3.0,1.4,0.2", "4.9,3.0,1.4", 1);
    let mostly_bad = "id,sepal_length,sepal_width,petal_length,petal_width\n1,5.1,3.5,1.4,0.2\n2,x,y,z,w\n3,,,,\n";
    pipeline.put_input("some_bad.csv", some_bad).await.unwrap();
    pipeline.put_input("mostly_bad.csv", mostly_bad).await.unwrap();
    // WHEN they are processed
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN the good rows are predicted and the bad ones listed with line and reason
    let report_some = report(&pipeline, "some_bad.csv").await;
    assert_eq!(report_some.status, JobStatus::Succeeded);
    assert_eq!((report_some.rows.input, report_some.rows.output, report_some.rows.bad), (150, 148, 2));
    assert_eq!(report_some.first_errors.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(report_some.outputs.errors.as_deref(), Some("s3://sluice-output/some_bad.csv.errors.csv"));
    let errors = csv_rows(&object(&pipeline, "some_bad.csv.errors.csv").await.expect("errors file"));
    assert_eq!(errors[0][0], "2");
    assert!(errors[0][1].contains("sepal_width"), "{:?}", errors[0]);
    assert_eq!(errors[0][2], "1,5.1,abc,1.4,0.2");
    assert!(errors[1][1].contains("expected 5 fields, found 4"), "{:?}", errors[1]);
    assert_eq!(csv_rows(&object(&pipeline, "some_bad.csv.out").await.unwrap()).len(), 148);
    // AND the mostly bad file failed, with its errors file but no output
    let report_bad = report(&pipeline, "mostly_bad.csv").await;
    assert_eq!(report_bad.status, JobStatus::Failed);
    assert!(report_bad.reason.as_deref().unwrap().contains("2 of 3 rows are bad"), "{:?}", report_bad.reason);
    assert!(object(&pipeline, "mostly_bad.csv.out").await.is_none());
    assert!(object(&pipeline, "mostly_bad.csv.errors.csv").await.is_some());
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_100_mb_input_keeps_the_worker_memory_bounded() {
    // GIVEN a 100 MB file in the input bucket and its job on the queue
    let mut options = quick_options();
    options.stack.visibility_timeout = Duration::from_secs(30);
    let pipeline = start(options).await;
    let rows = 4_500_000;
    let data = iris_like_csv(rows);
    assert!(data.len() > 100_000_000, "{} bytes", data.len());
    pipeline.put_input("big.csv", data).await.unwrap();
    let enqueued = deliver(&pipeline, "big.csv").await.unwrap();
    assert!(enqueued.succeeded());
    eventually(Duration::from_secs(30), "the emulated task has started", || async {
        pipeline.fargate().started_count() == 1
    })
    .await;
    let pid = pipeline.fargate().running().first().map(|w| w.pid).expect("a running worker");
    // WHEN it processes the file, its peak resident memory is sampled until it exits
    let peak_kib = peak_rss_kib_until_exit(pid, DRAIN).await;
    // THEN the whole output was written while memory stayed far below the file's size
    let report = report(&pipeline, "big.csv").await;
    assert_eq!(report.status, JobStatus::Succeeded, "{:?}", report.reason);
    assert_eq!(report.rows.output, rows as u64);
    let peak_mb = peak_kib / 1024;
    println!("worker peak RSS for a {rows}-row (>100 MB) input: {peak_mb} MB");
    assert!(peak_mb < 96, "peak RSS {peak_mb} MB for a 100 MB input: memory must not follow file size");
    pipeline.shutdown().await;
}
