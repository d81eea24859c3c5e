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

/// A Parquet file as pyarrow writes it: `rows` iris-like rows (`id`, four float64 features
/// drawn at random) in row groups of `row_group_rows`, rows 3 and 7's `petal_width` null.
fn pyarrow_iris(rows: usize, row_group_rows: usize) -> Vec<u8> {
    let file = std::env::temp_dir().join(format!("sluice-shards-{}-made.parquet", std::process::id()));
    let script = format!(
        "import numpy as np, pyarrow as pa, pyarrow.parquet as pq\n\
         rng = np.random.default_rng(11)\n\
         x = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], ({rows}, 4))\n\
         cols = {{'id': np.arange(1, {rows} + 1)}}\n\
         names = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width']\n\
         cols.update({{name: pa.array(x[:, i]) for i, name in enumerate(names)}})\n\
         cols['petal_width'] = pa.array([None if i in (2, 6) else v for i, v in enumerate(x[:, 3].tolist())])\n\
         pq.write_table(pa.table(cols), '{}', row_group_size={row_group_rows})\n",
        file.display()
    );
    let made = std::process::Command::new(repo(".tools/parquet/bin/python")).args(["-c", &script]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let data = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    data
}

/// Whether pyarrow, polars and DuckDB each read the same rows from Parquet files `a` and `b`
/// (tests/clients/read_parquet.py).
fn same_parquet_rows(a: &[u8], b: &[u8]) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("sluice-shards-{}-compare", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file_a, file_b) = (dir.join("a.parquet"), dir.join("b.parquet"));
    std::fs::write(&file_a, a).unwrap();
    std::fs::write(&file_b, b).unwrap();
    let output = std::process::Command::new(repo(".tools/parquet/bin/python"))
        .arg(repo("tests/clients/read_parquet.py"))
        .arg("--compare")
        .args([&file_a, &file_b])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(output.status.success(), "read_parquet.py: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn a_big_parquet_file_is_split_by_row_groups_killed_repeated_and_joined_into_one_file() {
    // GIVEN a Parquet file of 40 MB in 20 row groups, shards of 4 MiB, and two workers
    let mut pipeline = start_sharded(2, 4 * 1024 * 1024).await;
    let data = pyarrow_iris(1_000_000, 50_000);
    assert!(data.len() > 30_000_000, "{} bytes", data.len());
    pipeline.put_input("big.parquet", data.clone()).await.unwrap();
    // AND its upload event delivered twice: every shard message comes twice
    pipeline.deliver_new_uploads().await.unwrap();
    assert!(deliver(&pipeline, "big.parquet").await.unwrap().succeeded());
    // WHEN a worker is killed while both hold a shard and shards are still to do
    eventually(DRAIN, "both workers hold a shard", || async {
        let running = pipeline.fargate().running().len() as u64;
        let depth = pipeline.queue_depth().await.unwrap();
        running == 2 && depth.in_flight == 2 && depth.visible > 0
    })
    .await;
    let victim = pipeline.fargate().running()[0].task_arn.clone();
    pipeline.fargate().kill(&victim, Signal::Kill).unwrap();
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN one report counts every row, with the whole file's bad rows by row number
    let report = report(&pipeline, "big.parquet").await;
    assert_eq!(report.status, JobStatus::Succeeded, "{:?}", report.reason);
    assert_eq!((report.rows.input, report.rows.bad), (1_000_000, 2));
    assert_eq!(report.first_errors.iter().map(|e| e.line).collect::<Vec<_>>(), [3, 7]);
    assert!(shard_count(&report) >= 8, "{} shards", shard_count(&report));
    // AND the output is one Parquet file of the shards' row groups that pyarrow, polars and
    // DuckDB read as the rows `worker transform` writes for the whole file, in order
    let (expected_out, expected_errors) = whole_file(&data, "big.parquet");
    let out = object(&pipeline, "big.parquet.out.parquet").await.expect("the output");
    let compared = same_parquet_rows(&out, &expected_out);
    assert_eq!(compared["rows"], serde_json::json!([999_998, 999_998]), "{compared}");
    for reader in ["pyarrow", "polars", "duckdb"] {
        assert_eq!(compared[reader], true, "{reader}: {compared}");
    }
    assert!(compared["row_groups"][0].as_u64().unwrap() >= 8, "{compared}");
    assert_eq!(object(&pipeline, "big.parquet.errors.csv").await, expected_errors);
    // AND the killed worker's shard was done again, and one event says the file is done
    let redelivered = worker_output(&pipeline)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|line| line["message"] == "job started" && line["attempt"] == 2);
    assert!(redelivered, "the killed worker's message came back");
    assert_eq!(completion_events_for(&pipeline, "big.parquet").await.len(), 1, "completed once");
    assert_eq!(pipeline.dead_lettered_jobs().await.unwrap(), 0);
    assert_eq!(open_uploads(&pipeline).await, 0);
    let staged = staged_objects(&pipeline).await;
    assert!(staged.iter().all(|k| k.ends_with("/announced")), "{staged:?}");
    pipeline.shutdown().await;
}
