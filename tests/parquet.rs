//! Parquet end to end: files as pyarrow (every codec, dictionaries, nulls, dates, timestamps,
//! decimals, structs, list features, pages v1 and v2), polars and DuckDB write them, through
//! `worker transform` and through the queue against moto; every output read back by pyarrow,
//! polars and DuckDB (tests/clients/read_parquet.py) and compared with onnxruntime's answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use shared::JobStatus;
use sluice_e2e::*;
use sluice_local::{LocalModels, PipelineOptions};
use tokio::process::Command;

const DRAIN: Duration = Duration::from_secs(180);
const CODECS: [&str; 6] = ["snappy", "zstd", "gzip", "lz4", "brotli", "none"];
/// The pass-through columns of the pyarrow files beside `id`, and the types their output keeps.
const TYPED_COLUMNS: [(&str, &str); 5] = [
    ("site", "dictionary<values=string, indices=int32, ordered=0>"),
    ("measured_on", "date32[day]"),
    ("measured_at", "timestamp[us, tz=UTC]"),
    ("price", "decimal128(10, 2)"),
    ("meta", "struct<batch: int64, source: string>"),
];

/// A fresh folder for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-parquet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn data(name: &str) -> PathBuf {
    repo(&format!("tests/data/parquet/{name}.parquet"))
}

/// The iris logistic regression in `dir`, with `config` as its sidecar.
fn iris_model(dir: &Path, config: Value) -> PathBuf {
    let model = dir.join("iris.onnx");
    std::fs::copy(repo("models/iris_logreg.onnx"), &model).unwrap();
    std::fs::write(dir.join("iris.onnx.json"), config.to_string()).unwrap();
    model
}

fn iris_config(features: Value, passthrough: &[&str]) -> Value {
    serde_json::json!({
        "features": features,
        "passthrough": passthrough,
        "classes": CLASSES,
    })
}

fn iris_features() -> Value {
    serde_json::json!(["sepal_length", "sepal_width", "petal_length", "petal_width"])
}

async fn worker_transform(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let worker = sluice_local::binaries::workspace_binary("worker").unwrap();
    Command::new(worker)
        .args(["transform", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .await
        .unwrap()
}

/// What pyarrow, polars and DuckDB each read of `files`.
async fn read_back(files: &[PathBuf]) -> BTreeMap<String, Value> {
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    serde_json::from_value(read_parquet(&files).await).unwrap()
}

/// Runs tests/clients/read_parquet.py with `args`; what it printed.
async fn read_parquet(args: &[String]) -> Value {
    let python = repo(".tools/parquet/bin/python");
    assert!(python.exists(), "{} is missing: run `make setup`", python.display());
    let output = Command::new(python).arg(repo("tests/clients/read_parquet.py")).args(args).output().await.unwrap();
    assert!(output.status.success(), "read_parquet.py failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

const CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];

/// onnxruntime's answers for iris: `(id, class name, probabilities)` by row.
fn reference() -> Vec<(i64, String, Vec<f64>)> {
    csv_rows(&std::fs::read(repo("models/reference/iris_logreg.csv")).unwrap())
        .into_iter()
        .map(|r| {
            let label = CLASSES[r[1].parse::<usize>().unwrap()].to_owned();
            (r[0].parse().unwrap(), label, r[2..5].iter().map(|p| p.parse().unwrap()).collect())
        })
        .collect()
}

/// Checks that the three readers agree on `file`'s rows and that they are onnxruntime's answers:
/// `id` first, then `extra` pass-through columns, then the label and three probabilities.
fn assert_iris_answers(name: &str, file: &Value, extra: usize) {
    let rows = file["pyarrow"].as_array().unwrap();
    assert_eq!(file["polars"], file["pyarrow"], "{name}: polars reads what pyarrow reads");
    assert_eq!(file["duckdb"], file["pyarrow"], "{name}: DuckDB reads what pyarrow reads");
    let want = reference();
    assert_eq!(rows.len(), want.len(), "{name}");
    for (row, (id, label, probabilities)) in rows.iter().zip(&want) {
        let row = row.as_array().unwrap();
        assert_eq!(row[0].as_i64(), Some(*id), "{name}");
        assert_eq!(row[1 + extra].as_str(), Some(label.as_str()), "{name}: row {id}");
        for (got, want) in row[2 + extra..].iter().zip(probabilities) {
            assert!((got.as_f64().unwrap() - want).abs() < 1e-6, "{name}: row {id}: {got} vs {want}");
        }
    }
    let schema = &file["schema"];
    assert_eq!(schema["label"], "string", "{name}");
    assert_eq!(schema["probabilities_setosa"], "float", "{name}");
    assert_eq!(file["codecs"], serde_json::json!(["SNAPPY"]), "{name}");
    assert_eq!(file["statistics"], true, "{name}: every column chunk has statistics");
}

#[tokio::test]
async fn every_writer_codec_and_layout_gives_onnxruntimes_answers_typed() {
    // GIVEN iris as pyarrow writes it with every codec (and pages v2 without dictionaries), with
    // typed pass-through columns; as polars and DuckDB write it; and with its features as a list
    let dir = scratch("writers");
    let passthrough: Vec<&str> = std::iter::once("id").chain(TYPED_COLUMNS.iter().map(|(c, _)| *c)).collect();
    let typed = iris_model(&dir.join("typed").tap_create(), iris_config(iris_features(), &passthrough));
    let plain = iris_model(&dir.join("plain").tap_create(), iris_config(iris_features(), &["id"]));
    let vector = iris_model(&dir.join("vector").tap_create(), iris_config(serde_json::json!(["features"]), &["id"]));
    let mut runs: Vec<(String, &PathBuf, usize)> = CODECS.iter().map(|c| (format!("iris_{c}"), &typed, 5)).collect();
    runs.push(("iris_page_v2".into(), &typed, 5));
    for name in ["iris_polars", "iris_duckdb"] {
        runs.push((name.into(), &plain, 0));
    }
    for name in ["iris_vector", "iris_fixed_vector"] {
        runs.push((name.into(), &vector, 0));
    }
    // WHEN each runs through worker transform into Parquet
    let mut outputs = Vec::new();
    for (name, model, _) in &runs {
        let output = dir.join(format!("{name}.out.parquet"));
        let run = worker_transform(model, &data(name), &output, &[]).await;
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        assert!(String::from_utf8_lossy(&run.stdout).contains("150 rows in, 150 out, 0 bad"), "{name}");
        outputs.push(output);
    }
    // THEN pyarrow, polars and DuckDB read the same rows from every output: onnxruntime's answers
    let read = read_back(&outputs).await;
    for ((name, _, extra), output) in runs.iter().zip(&outputs) {
        let file = &read[&output.display().to_string()];
        assert_iris_answers(name, file, *extra);
        // AND pass-through columns keep their types
        if *extra > 0 {
            for (column, data_type) in TYPED_COLUMNS {
                assert_eq!(file["schema"][column], data_type, "{name}: {column}");
            }
            let first = file["pyarrow"][0].as_array().unwrap();
            let want = serde_json::json!(
                ["north", "2026-12-01", "2026-12-01T00:00:00+00:00", "0.00", {"batch": 0, "source": "field"}]
            );
            assert_eq!(first[1..6], want.as_array().unwrap()[..], "{name}");
            // A null string stays null.
            assert_eq!(file["pyarrow"][4][1], Value::Null, "{name}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Creates a folder and gives it back, for building paths in one expression.
trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[tokio::test]
async fn row_groups_formats_and_typed_models() {
    let dir = scratch("options");
    let model = iris_model(&dir, iris_config(iris_features(), &["id"]));
    // GIVEN a row group size of 40 rows, WHEN iris runs into Parquet
    let grouped = dir.join("grouped.parquet");
    let run = worker_transform(&model, &data("iris_zstd"), &grouped, &["--row-group-rows", "40"]).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // AND into CSV and JSON Lines, told by the output's name or by --output-format
    let csv = dir.join("iris.csv");
    assert!(worker_transform(&model, &data("iris_zstd"), &csv, &[]).await.status.success());
    let jsonl = dir.join("iris.out");
    assert!(worker_transform(&model, &data("iris_zstd"), &jsonl, &["--output-format", "jsonl"]).await.status.success());
    // AND a typed model (a ColumnTransformer of a string and a float64 input) reads its columns
    let typed = dir.join("typed.parquet");
    let zoo = repo("models/zoo/column_transformer_strings_numbers.onnx");
    let run = worker_transform(&zoo, &data("typed_colour"), &typed, &[]).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    // AND a model exported from float64 data reads float64 columns as they are
    let double = dir.join("double.parquet");
    let zoo64 = repo("models/zoo/logreg_iris_double.onnx");
    let run = worker_transform(&zoo64, &data("double_iris"), &double, &[]).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let read = read_back(&[grouped.clone(), typed.clone(), double.clone()]).await;
    // THEN the output has 4 row groups and the answers
    let file = &read[&grouped.display().to_string()];
    assert_eq!(file["row_groups"], 4);
    assert_iris_answers("grouped", file, 0);
    // AND the CSV and JSON Lines outputs hold the same answers
    let rows = csv_rows(&std::fs::read(&csv).unwrap());
    let want = reference();
    assert_eq!(rows.len(), 150);
    for (got, (id, label, _)) in rows.iter().zip(&want) {
        assert_eq!((got[0].parse::<i64>().unwrap(), &got[1]), (*id, label));
    }
    let lines: Vec<Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 150);
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[0]["label"], want[0].1.as_str());
    // AND the typed and the float64 models' answers are onnxruntime's, their integer labels int64
    for (output, name, label) in
        [(&typed, "column_transformer_strings_numbers", "output_label"), (&double, "logreg_iris_double", "label")]
    {
        let file = &read[&output.display().to_string()];
        assert_eq!(file["schema"][label], "int64", "{name}");
        let expected = csv_rows(&std::fs::read(repo(&format!("models/zoo/{name}.expected.csv"))).unwrap());
        let rows = file["pyarrow"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "{name}");
        for (row, want) in rows.iter().zip(&expected) {
            let row = row.as_array().unwrap();
            assert_eq!(row[0].to_string(), want[0], "{name}");
            assert_eq!(row[1].to_string(), want[1], "{name}");
            for (got, want) in row[2..].iter().zip(&want[2..]) {
                let want: f64 = want.parse().unwrap();
                assert!((got.as_f64().unwrap() - want).abs() < 1e-6, "{name}: {got} vs {want}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_files_fail_with_a_reason_and_null_features_are_bad_rows() {
    let dir = scratch("bad");
    let model = repo("models/iris_logreg.onnx");
    // GIVEN files that are not Parquet, cut short, with a footer that lies, a column of the
    // wrong type, and no rows; WHEN each runs, THEN it fails saying why
    for (name, reason) in [
        ("bad_truncated", "does not end with Parquet's magic bytes"),
        ("bad_not_parquet", "does not end with Parquet's magic bytes"),
        ("bad_footer", "row group 0 cannot be read"),
        ("bad_type", "column \"sepal_length\" is of type Utf8; the model takes numbers"),
        ("empty", "the file has no data rows"),
    ] {
        let output = dir.join(format!("{name}.parquet"));
        let run = worker_transform(&model, &data(name), &output, &[]).await;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{name} succeeded");
        assert!(stderr.contains(reason), "{name}: {stderr}");
        assert!(!output.exists(), "{name}: no output");
    }
    // GIVEN rows 3 and 7 with a null feature, WHEN the file runs
    let output = dir.join("nulls.parquet");
    let run = worker_transform(&model, &data("iris_nulls"), &output, &[]).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // THEN they are in the errors file by row number, with the column named, and the rest is out
    assert!(String::from_utf8_lossy(&run.stdout).contains("150 rows in, 148 out, 2 bad"));
    let errors = std::fs::read(dir.join("nulls.parquet.errors.csv")).unwrap();
    assert!(errors.starts_with(b"row,reason,values\n"));
    let errors = csv_rows(&errors);
    assert_eq!(errors[0][..2], ["3", "column \"sepal_width\" is null"]);
    assert_eq!(errors[1][..2], ["7", "column \"petal_length\" is null"]);
    // GIVEN a file whose every row has a null feature, WHEN bad rows may be all of it
    let empty = dir.join("none-good.parquet");
    let run = worker_transform(&model, &data("all_null"), &empty, &["--max-bad-row-ratio", "1"]).await;
    // THEN it succeeds with a valid Parquet output of no rows, and every row in the errors file
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("150 rows in, 0 out, 150 bad"));
    let read = read_back(&[output.clone(), empty.clone()]).await;
    assert_eq!(read[&empty.display().to_string()]["pyarrow"], serde_json::json!([]));
    assert_eq!(read[&empty.display().to_string()]["schema"]["label"], "string");
    let ids: Vec<i64> = read[&output.display().to_string()]["pyarrow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 148);
    assert!(!ids.contains(&3) && !ids.contains(&7));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn parquet_through_the_queue_reads_only_the_columns_it_needs() {
    // GIVEN the pipeline with the iris model (features and id only), outputs under results/ and
    // reports apart under results/_reports/, and Parquet uploads: a good file with columns the
    // model does not need, a file with two null features, a broken one
    let mut pipeline = start(PipelineOptions {
        models: LocalModels::File(repo("models/iris_logreg.onnx")),
        output_prefix: "results/".into(),
        reports_prefix: "_reports/".into(),
        ..quick_options()
    })
    .await;
    let good = std::fs::read(data("iris_brotli")).unwrap();
    pipeline.put_input("lake/iris.parquet", good.clone()).await.unwrap();
    pipeline.put_input("lake/nulls.parquet", std::fs::read(data("iris_nulls")).unwrap()).await.unwrap();
    pipeline.put_input("lake/broken.parquet", std::fs::read(data("bad_footer")).unwrap()).await.unwrap();
    // WHEN they are processed
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN each good file has a Parquet output named for DuckDB's and polars' globs
    let iris_report = report(&pipeline, "lake/iris.parquet").await;
    assert_eq!(iris_report.status, JobStatus::Succeeded, "{:?}", iris_report.reason);
    assert!(
        iris_report.outputs.data.as_deref().is_some_and(|uri| uri.ends_with("/results/lake/iris.parquet.out.parquet"))
    );
    // AND the output prefix holds predictions only, the reports and errors files apart
    let keys = output_keys(&pipeline).await;
    let (reports, data): (Vec<&String>, Vec<&String>) =
        keys.iter().filter(|k| k.starts_with("results/")).partition(|k| k.starts_with("results/_reports/"));
    assert_eq!(data, ["results/lake/iris.parquet.out.parquet", "results/lake/nulls.parquet.out.parquet"], "{keys:?}");
    assert_eq!(reports.len(), 4, "three reports and an errors file: {keys:?}");
    // AND DuckDB reads the prefix (synced to a folder, as `aws s3 sync` does) as one table
    let dir = scratch("queue");
    let (iris, nulls) = (dir.join("lake/iris.parquet.out.parquet"), dir.join("lake/nulls.parquet.out.parquet"));
    std::fs::create_dir_all(dir.join("lake")).unwrap();
    for (key, file) in data.iter().zip([&iris, &nulls]) {
        std::fs::write(file, object(&pipeline, key).await.expect("output")).unwrap();
    }
    let query = format!(
        "SELECT label, count(*) FROM read_parquet('{}/**/*.parquet') GROUP BY label ORDER BY label",
        dir.display()
    );
    let counts = read_parquet(&["--duckdb".into(), query]).await;
    // Both files' rows: the iris rows twice, but rows 3 and 7 of the file with null features.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (id, label, _) in reference() {
        *want.entry(label).or_default() += if id == 3 || id == 7 { 1 } else { 2 };
    }
    let want: Vec<Value> = want.into_iter().map(|(label, n)| serde_json::json!([label, n])).collect();
    assert_eq!(counts, Value::Array(want));
    let read = read_back(&[iris.clone(), nulls.clone()]).await;
    assert_iris_answers("queue", &read[&iris.display().to_string()], 0);
    // AND make local's preview of it is its header and first rows, read by ranged GETs
    let (lines, rows) = pipeline.read_parquet_head("results/lake/iris.parquet.out.parquet", 2).await.unwrap();
    assert_eq!(rows, 150);
    assert_eq!(lines[0], "id,label,probabilities_setosa,probabilities_versicolor,probabilities_virginica");
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with("1,setosa,0.98165"), "{lines:?}");
    // AND the worker fetched the footer and the columns it needed, not the whole object
    let log = worker_output(&pipeline);
    let fetched: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("transform complete") && l.contains("bytes_fetched"))
        .filter_map(|l| {
            let after = l.split("bytes_fetched").nth(1)?;
            after.trim_start_matches(['"', ':', '=']).split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect();
    assert!(!fetched.is_empty(), "{log}");
    assert!(fetched.iter().all(|&n| n > 0 && n < good.len() as u64), "{fetched:?} of {}", good.len());
    // AND null features are bad rows, by row number, beside a file of the rest
    let report_nulls = report(&pipeline, "lake/nulls.parquet").await;
    assert_eq!((report_nulls.rows.input, report_nulls.rows.output, report_nulls.rows.bad), (150, 148, 2));
    assert_eq!(report_nulls.first_errors[0].line, 3);
    let errors = object(&pipeline, "results/_reports/lake/nulls.parquet.errors.csv").await.expect("errors file");
    assert!(String::from_utf8_lossy(&errors).starts_with("row,reason,values\n3,"));
    assert_eq!(read[&nulls.display().to_string()]["pyarrow"].as_array().unwrap().len(), 148);
    // AND the broken file's report says why it failed
    let broken = report(&pipeline, "lake/broken.parquet").await;
    assert_eq!(broken.status, JobStatus::Failed);
    assert!(broken.reason.as_deref().is_some_and(|r| r.contains("cannot be read as Parquet")), "{:?}", broken.reason);
    assert!(object(&pipeline, "results/lake/broken.parquet.out.parquet").await.is_none());
    pipeline.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_big_parquet_file_is_read_by_the_columns_it_needs_in_bounded_memory() {
    // GIVEN a Parquet file of 130 MB or more in row groups of 256Ki rows: the iris features and
    // id, and four columns of random numbers the model does not read
    let dir = scratch("big");
    let file = dir.join("big.parquet");
    let rows = 2_000_000;
    let script = format!(
        "import numpy as np, pyarrow as pa, pyarrow.parquet as pq\n\
         rng = np.random.default_rng(7)\n\
         n = {rows}\n\
         x = np.round(rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], (n, 4)), 1)\n\
         cols = {{'id': np.arange(1, n + 1)}}\n\
         cols.update({{name: x[:, i] for i, name in enumerate(['sepal_length', 'sepal_width', 'petal_length', 'petal_width'])}})\n\
         cols.update({{f'noise{{i}}': rng.random(n) for i in range(8)}})\n\
         pq.write_table(pa.table(cols), '{}', row_group_size=1 << 18)\n",
        file.display()
    );
    let python = repo(".tools/parquet/bin/python");
    let made = Command::new(python).args(["-c", &script]).output().await.unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let data = std::fs::read(&file).unwrap();
    assert!(data.len() > 130_000_000, "{} bytes", data.len());
    let size = data.len() as u64;
    let mut options = quick_options();
    options.stack.visibility_timeout = Duration::from_secs(30);
    let pipeline = start(options).await;
    pipeline.put_input("big.parquet", data).await.unwrap();
    drop(std::fs::remove_dir_all(&dir));
    let enqueued = deliver(&pipeline, "big.parquet").await.unwrap();
    assert!(enqueued.succeeded());
    eventually(Duration::from_secs(30), "the emulated task has started", || async {
        pipeline.fargate().started_count() == 1
    })
    .await;
    let pid = pipeline.fargate().running().first().map(|w| w.pid).expect("a running worker");
    // WHEN it processes the file, its peak resident memory is sampled until it exits
    let peak_kib = peak_rss_kib_until_exit(pid, DRAIN).await;
    // THEN every row came out while memory stayed far below the file's size, and the worker
    // fetched the id and features, not the columns it does not need
    let report = report(&pipeline, "big.parquet").await;
    assert_eq!(report.status, JobStatus::Succeeded, "{:?}", report.reason);
    assert_eq!(report.rows.output, rows);
    let peak_mb = peak_kib / 1024;
    let log = worker_output(&pipeline);
    let fetched: u64 = log
        .lines()
        .filter(|l| l.contains("transform complete"))
        .find_map(|l| l.split("\"bytes_fetched\":").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .expect("the worker says what it fetched");
    println!("worker peak RSS for a {size}-byte Parquet file: {peak_mb} MB; fetched {fetched} bytes");
    assert!(peak_mb < 96, "peak RSS {peak_mb} MB for a {size}-byte file: memory must not follow file size");
    assert!(fetched < size / 2, "fetched {fetched} of {size} bytes: the unused columns were downloaded");
    pipeline.shutdown().await;
}
