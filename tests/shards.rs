//! Big files in shards, end to end: the real binaries against moto, through the local Lambda and
//! Fargate emulators. A file split into shards and processed by several workers gives the bytes
//! `worker transform` writes for the whole file, one report and one completion event, whatever
//! is killed, repeated or uploaded again meanwhile.

use std::path::Path;
use std::time::Duration;

use shared::JobStatus;
use shared::report::SplitReport;
use sluice_e2e::*;
use sluice_local::{LocalPipeline, Signal};

const DRAIN: Duration = Duration::from_secs(240);

/// `worker transform` over `data` named `name`: its output and errors file (if any).
fn whole_file(data: &[u8], name: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    let dir = std::env::temp_dir().join(format!("sluice-shards-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join(name), dir.join(format!("{name}.out")));
    std::fs::write(&input, data).unwrap();
    let worker = sluice_local::binaries::workspace_binary("worker").unwrap();
    let status = std::process::Command::new(worker)
        .args(["transform", "--model"])
        .arg(repo("models/iris_logreg.onnx"))
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let errors = Path::new(&format!("{}.errors.csv", output.display())).to_owned();
    assert!(status.success() || errors.exists(), "worker transform failed on {name}");
    let written = (std::fs::read(&output).unwrap_or_default(), std::fs::read(errors).ok());
    std::fs::remove_dir_all(&dir).unwrap();
    written
}

/// iris-like CSV rows with a bad one every `every` rows.
fn csv_with_bad_rows(rows: usize, every: usize) -> Vec<u8> {
    let mut out = String::new();
    for (i, line) in iris_like_csv(rows).lines().enumerate() {
        if i > 0 && i % every == 0 {
            out.push_str(&format!("{i},not-a-number,3.0,1.0,0.2\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// The same rows as JSON Lines objects.
fn json_lines(csv: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(csv);
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let mut out = String::new();
    for row in csv_rows(csv) {
        let fields: Vec<String> = header.iter().zip(&row).map(|(name, value)| format!("{name:?}: {value}")).collect();
        out.push_str(&format!("{{{}}}\n", fields.join(", ")));
    }
    out.into_bytes()
}

fn shard_count(report: &shared::JobReport) -> u32 {
    match &report.split {
        Some(SplitReport::Shards { count, .. }) => *count,
        other => panic!("not split: {other:?}"),
    }
}

/// A quick pipeline with `workers` workers that splits files above `shard_bytes`.
async fn start_sharded(workers: u32, shard_bytes: u64) -> LocalPipeline {
    let mut options = quick_options();
    options.max_workers = workers;
    options.shard_bytes = shard_bytes;
    start(options).await
}

async fn staged_objects(pipeline: &LocalPipeline) -> Vec<String> {
    output_keys(pipeline)
        .await
        .into_iter()
        .filter(|k| k.starts_with("_sluice/") && !k.ends_with("claim.json"))
        .collect()
}

#[tokio::test]
async fn files_split_among_three_workers_give_what_one_worker_writes() {
    // GIVEN shards of 64 KiB and three workers, and four big files: CSV with bad rows, the same
    // rows as JSON Lines, CSV with too many bad rows, and CSV with a quoted line break
    let mut pipeline = start_sharded(3, 64 * 1024).await;
    let csv = csv_with_bad_rows(20_000, 250);
    let jsonl = json_lines(&csv);
    let too_bad = csv_with_bad_rows(20_000, 5);
    let mut quoted = iris_like_csv(20_000);
    quoted.push_str("\"20001\n\",5.1,3.5,1.4,0.2\n");
    let files: [(&str, &[u8]); 4] =
        [("rows.csv", &csv), ("rows.jsonl", &jsonl), ("too-bad.csv", &too_bad), ("quoted.csv", quoted.as_bytes())];
    for (key, data) in files {
        pipeline.put_input(key, data.to_vec()).await.unwrap();
    }
    // WHEN they are processed
    let drained = pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN the CSV and the JSON Lines were split into at least six shards, that three workers
    // shared, and their outputs and errors files are the bytes `worker transform` writes
    for (key, data) in &files[..2] {
        let report = report(&pipeline, key).await;
        assert_eq!(report.status, JobStatus::Succeeded, "{key}: {:?}", report.reason);
        let count = shard_count(&report);
        assert!(count >= 6, "{key}: {count} shards");
        let (expected_out, expected_errors) = whole_file(data, key);
        assert_eq!(object(&pipeline, &format!("{key}.out")).await.unwrap(), expected_out, "{key}");
        assert_eq!(object(&pipeline, &format!("{key}.errors.csv")).await, expected_errors, "{key}");
        assert_eq!(report.rows.input, 20_000);
        assert_eq!(report.rows.bad, 80);
        let events = completion_events_for(&pipeline, key).await;
        assert_eq!(events.len(), 1, "{key}: one event: {events:#?}\n{}", worker_output(&pipeline));
    }
    let Some(SplitReport::Shards { shards, .. }) = report(&pipeline, "rows.csv").await.split else { unreachable!() };
    let workers: std::collections::BTreeSet<_> = shards.iter().map(|s| s.worker_id.clone()).collect();
    assert!(workers.len() >= 2, "the fleet shared the file: {workers:?}");
    assert_eq!(pipeline.fargate().most_running(), 3);
    // AND the file with too many bad rows, counted in the whole file, failed once with no output
    let failed = report(&pipeline, "too-bad.csv").await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.reason.as_deref().unwrap().contains("4000 of 20000 rows are bad"), "{:?}", failed.reason);
    assert!(object(&pipeline, "too-bad.csv.out").await.is_none());
    assert_eq!(completion_events_for(&pipeline, "too-bad.csv").await.len(), 1);
    // AND the CSV with a quoted line break ran whole, saying why, with the whole file's output
    let whole = report(&pipeline, "quoted.csv").await;
    let Some(SplitReport::NotSplit { reason }) = &whole.split else { panic!("{:?}", whole.split) };
    assert!(reason.contains("quoted field holds a line break"), "{reason}");
    assert_eq!(object(&pipeline, "quoted.csv.out").await.unwrap(), whole_file(quoted.as_bytes(), "quoted.csv").0);
    // AND nothing is left staged or open, and nothing was dead-lettered
    assert_eq!(drained.dead_lettered_jobs, 0);
    assert_eq!(open_uploads(&pipeline).await, 0);
    let staged = staged_objects(&pipeline).await;
    assert!(staged.iter().all(|k| k.ends_with("/announced")), "{staged:?}");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_worker_killed_mid_shard_and_a_repeated_event_change_nothing() {
    // GIVEN a file in shards that each take a while, and two workers
    let mut pipeline = start_sharded(2, 4 * 1024 * 1024).await;
    let data = iris_like_csv(1_000_000).into_bytes();
    pipeline.put_input("killed.csv", data.clone()).await.unwrap();
    // AND its upload event delivered twice, as S3 may: every shard message comes twice
    pipeline.deliver_new_uploads().await.unwrap();
    assert!(deliver(&pipeline, "killed.csv").await.unwrap().succeeded());
    // WHEN a worker is killed while both hold a shard and shards are still to do
    eventually(DRAIN, "both workers hold a shard", || async {
        let running = pipeline.fargate().running().len() as u64;
        let holding = pipeline.queue_depth().await.unwrap().in_flight;
        running == 2 && holding == 2 && pipeline.queue_depth().await.unwrap().visible > 0
    })
    .await;
    let victim = pipeline.fargate().running()[0].task_arn.clone();
    pipeline.fargate().kill(&victim, Signal::Kill).unwrap();
    // THEN its shard came back and was done again, the output is the whole file's bytes, and
    // one report and one event say so
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    let report = report(&pipeline, "killed.csv").await;
    assert_eq!(report.status, JobStatus::Succeeded);
    let redelivered = worker_output(&pipeline)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|line| line["message"] == "job started" && line["attempt"] == 2);
    assert!(redelivered, "the killed worker's message came back");
    assert_eq!(object(&pipeline, "killed.csv.out").await.unwrap(), whole_file(&data, "killed.csv").0);
    assert_eq!(completion_events_for(&pipeline, "killed.csv").await.len(), 1, "completed once");
    assert_eq!(pipeline.dead_lettered_jobs().await.unwrap(), 0);
    assert_eq!(open_uploads(&pipeline).await, 0);
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_reupload_during_a_sharded_job_leaves_only_the_newest_versions_output() {
    // GIVEN a big v1 being processed in shards (one shard done)
    let mut pipeline = start_sharded(2, 4 * 1024 * 1024).await;
    pipeline.put_input("data.csv", iris_like_csv(1_000_000).into_bytes()).await.unwrap();
    pipeline.deliver_new_uploads().await.unwrap();
    eventually(DRAIN, "a shard of v1 is done", || async {
        output_keys(&pipeline).await.iter().any(|k| k.contains("/done/"))
    })
    .await;
    // WHEN v2, a small file, is uploaded meanwhile
    let v2 = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    pipeline.put_input("data.csv", v2.clone()).await.unwrap();
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN the output is v2's, and only v2 completed
    let head = pipeline.s3.head_object().bucket(&pipeline.stack.input_bucket).key("data.csv").send().await.unwrap();
    let v2_etag = head.e_tag().unwrap().trim_matches('"').to_owned();
    assert_eq!(report(&pipeline, "data.csv").await.input.etag, v2_etag);
    assert_eq!(object(&pipeline, "data.csv.out").await.unwrap(), whole_file(&v2, "data.csv").0);
    let events = completion_events_for(&pipeline, "data.csv").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1.input.etag, v2_etag);
    assert_eq!(open_uploads(&pipeline).await, 0);
    pipeline.shutdown().await;
}
