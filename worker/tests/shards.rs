//! A big file's shards against an in-memory object store, with the real engine and model: the
//! assembled output is the bytes one worker writes for the whole file, however the shards'
//! messages are ordered, repeated or raced; one report and one event per file.

mod support;

use shared::JobStatus;
use shared::report::SplitReport;
use shared::shards::{Split, plan};
use support::{Fault, MemoryStore, RecordedEvents, iris_like, runner_on, setup, upload};
use worker::job::{JobHandler, JobOutcome, JobRunner};

/// The outputs one worker writes for `data` as `key`: data, errors file (if any), report status.
async fn whole(key: &str, data: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>, shared::JobReport) {
    let (store, runner, _) = setup();
    let job = upload(&store, key, data.to_vec());
    let JobOutcome::Reported(report) = runner.run(&job, 1).await else { panic!("the whole file has a report") };
    let object = |suffix: &str| store.object("out", &format!("{key}{suffix}")).map(|b| b.to_vec());
    (object(".out"), object(".errors.csv"), *report)
}

/// The messages the trigger sends for `data` uploaded as `key`, with shards of `shard_bytes`.
fn shard_messages(store: &MemoryStore, key: &str, data: Vec<u8>, shard_bytes: u64) -> Vec<shared::JobMessage> {
    let job = upload(store, key, data);
    plan(job.input.size, shard_bytes).into_iter().map(|s| job.clone().with_split(Split::Shard(s))).collect()
}

/// Runs the messages in `order`; returns the outcomes.
async fn run_all(
    runner: &JobRunner<MemoryStore, RecordedEvents>,
    messages: &[shared::JobMessage],
    order: &[usize],
) -> Vec<JobOutcome> {
    let mut outcomes = Vec::new();
    for &i in order {
        outcomes.push(runner.run(&messages[i], 1).await);
    }
    runner.transfers.finish_cleanups().await;
    outcomes
}

/// iris-like rows with a bad one every `every` rows.
fn with_bad_rows(rows: usize, every: usize) -> Vec<u8> {
    let text = String::from_utf8(iris_like(rows)).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = if i > 0 && i % every == 0 { format!("{i},not-a-number,1,2,3") } else { line.to_owned() };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

#[tokio::test]
async fn shards_in_any_order_give_the_whole_files_bytes_one_report_and_one_event() {
    // GIVEN a CSV with CRLF line ends and bad rows, in 7 shards
    let data = with_bad_rows(3_000, 97);
    let (expected_out, expected_errors, expected) = whole("t/data.csv", &data).await;
    let (store, runner, events) = setup();
    let shard_bytes = data.len() as u64 / 7 + 1;
    let messages = shard_messages(&store, "t/data.csv", data, shard_bytes);
    assert_eq!(messages.len(), 7);
    // WHEN their messages run out of order
    let outcomes = run_all(&runner, &messages, &[3, 0, 6, 1, 5, 2, 4]).await;
    // THEN the last one reports, the others only stage their part
    assert!(outcomes[..6].iter().all(|o| matches!(o, JobOutcome::ShardDone(_))), "{outcomes:?}");
    let JobOutcome::Reported(report) = &outcomes[6] else { panic!("{:?}", outcomes[6]) };
    // AND the output and the errors file are the whole file's bytes, line numbers and all
    assert_eq!(store.object("out", "t/data.csv.out").map(|b| b.to_vec()), expected_out);
    assert_eq!(store.object("out", "t/data.csv.errors.csv").map(|b| b.to_vec()), expected_errors);
    assert_eq!(report.rows, expected.rows);
    assert_eq!(report.first_errors, expected.first_errors);
    let Some(SplitReport::Shards { count: 7, shards, .. }) = &report.split else { panic!("{:?}", report.split) };
    assert_eq!(shards.iter().map(|s| s.rows).sum::<u64>(), expected.rows.input);
    assert_eq!(events.0.lock().unwrap().len(), 1);
    // AND nothing is left staged but the claim and its announcement's marker
    let staged: Vec<_> = store.keys("out").into_iter().filter(|k| k.starts_with("_sluice/")).collect();
    assert_eq!(staged.len(), 2, "{staged:?}");
    assert!(staged.iter().any(|k| k.ends_with("/announced")), "{staged:?}");
    assert_eq!(store.open_uploads(), 0);
}

#[tokio::test]
async fn outputs_of_several_mib_are_copied_inside_the_store() {
    // GIVEN a file whose shards' outputs are several MiB each
    let data = iris_like(600_000);
    let (expected_out, _, _) = whole("big.csv", &data).await;
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "big.csv", data.clone(), data.len() as u64 / 2 + 1);
    // WHEN they all run
    run_all(&runner, &messages, &[1, 0]).await;
    // THEN the output is assembled from copies of the staged parts, the same bytes
    assert!(store.calls().iter().any(|c| c.starts_with("UploadPartCopy big.csv.out")), "{:?}", store.calls());
    assert_eq!(store.object("out", "big.csv.out").map(|b| b.to_vec()), expected_out);
    assert_eq!(events.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn json_lines_shards_read_their_columns_from_the_files_first_row() {
    let mut data = String::new();
    for i in 0..2_000 {
        data.push_str(&format!(
            "{{\"id\": {i}, \"sepal_length\": 5.1, \"sepal_width\": {}, \"petal_length\": 1.4, \"petal_width\": 0.2}}\n",
            2.0 + (i % 20) as f32 / 10.0
        ));
    }
    let (expected_out, _, expected) = whole("rows.jsonl", data.as_bytes()).await;
    let (store, runner, _) = setup();
    let messages = shard_messages(&store, "rows.jsonl", data.clone().into_bytes(), data.len() as u64 / 5);
    let order: Vec<usize> = (0..messages.len()).rev().collect();
    let outcomes = run_all(&runner, &messages, &order).await;
    assert!(matches!(outcomes.last(), Some(JobOutcome::Reported(r)) if r.rows == expected.rows), "{outcomes:?}");
    assert_eq!(store.object("out", "rows.jsonl.out").map(|b| b.to_vec()), expected_out);
}

#[tokio::test]
async fn a_shard_delivered_twice_completes_once() {
    let data = iris_like(2_000);
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "twice.csv", data.clone(), data.len() as u64 / 3 + 1);
    // WHEN shard 2 comes twice before the others end, and shard 0 again after the file is published
    let outcomes = run_all(&runner, &messages, &[1, 1, 2, 0, 0]).await;
    // THEN one message reports the file and one event is put
    let reported = outcomes.iter().filter(|o| matches!(o, JobOutcome::Reported(_))).count();
    assert_eq!(reported, 1, "{outcomes:?}");
    assert_eq!(events.0.lock().unwrap().len(), 1);
    let (expected_out, _, _) = whole("twice.csv", &data).await;
    assert_eq!(store.object("out", "twice.csv.out").map(|b| b.to_vec()), expected_out);
}

#[tokio::test]
async fn too_many_bad_rows_in_the_whole_file_fail_it_once_without_an_output() {
    // GIVEN bad rows that are few in most shards but too many in the whole file
    let data = with_bad_rows(2_000, 5);
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "bad.csv", data, 20_000);
    let order: Vec<usize> = (0..messages.len()).collect();
    let outcomes = run_all(&runner, &messages, &order).await;
    let JobOutcome::Reported(report) = outcomes.last().unwrap() else { panic!("{outcomes:?}") };
    // THEN one failed report with the whole file's count, its errors file, and no output
    assert_eq!(report.status, JobStatus::Failed);
    assert!(report.reason.as_deref().unwrap().contains("400 of 2000 rows are bad"), "{:?}", report.reason);
    assert_eq!(report.first_errors[0].line, 6, "the header is line 1; row 5 is line 6");
    assert!(store.object("out", "bad.csv.out").is_none());
    let errors = store.object("out", "bad.csv.errors.csv").unwrap();
    assert_eq!(String::from_utf8_lossy(&errors).lines().count(), 401);
    assert_eq!(events.0.lock().unwrap().len(), 1);
    assert_eq!(store.open_uploads(), 0);
}

#[tokio::test]
async fn a_csv_with_a_quoted_line_break_runs_whole_and_says_why() {
    // GIVEN a CSV whose pass-through text holds a line break, deep inside the file
    let mut text = String::from_utf8(iris_like(1_000)).unwrap();
    text.push_str("\"1001\n\",5.1,3.5,1.4,0.2\n");
    text.push_str(String::from_utf8(iris_like(1_000)).unwrap().split_once('\n').unwrap().1);
    let (expected_out, _, _) = whole("quoted.csv", text.as_bytes()).await;
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "quoted.csv", text.into_bytes(), 10_000);
    let order: Vec<usize> = (0..messages.len()).rev().collect();
    let outcomes = run_all(&runner, &messages, &order).await;
    // THEN the shard that saw it ran the file whole, as one worker does
    let reports: Vec<_> =
        outcomes.iter().filter_map(|o| if let JobOutcome::Reported(r) = o { Some(r) } else { None }).collect();
    assert_eq!(reports.len(), 1, "{outcomes:?}");
    let Some(SplitReport::NotSplit { reason }) = &reports[0].split else { panic!("{:?}", reports[0].split) };
    assert!(reason.contains("quoted field holds a line break"), "{reason}");
    assert_eq!(store.object("out", "quoted.csv.out").map(|b| b.to_vec()), expected_out);
    assert_eq!(events.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_reupload_during_a_sharded_job_leaves_the_newer_outputs_alone() {
    let data = iris_like(2_000);
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "re.csv", data.clone(), data.len() as u64 / 3 + 1);
    run_all(&runner, &messages, &[0, 1]).await;
    // WHEN the key is uploaded again (its own job wrote its outputs) before the last shard ends
    store.put_object("in", "re.csv", iris_like(10));
    store.put_object("out", "re.csv.out", "the newer output");
    let outcomes = run_all(&runner, &messages, &[2]).await;
    // THEN the old file's shards publish nothing
    assert!(matches!(&outcomes[0], JobOutcome::Superseded(_)), "{outcomes:?}");
    assert_eq!(store.object("out", "re.csv.out").unwrap(), "the newer output");
    assert!(events.0.lock().unwrap().is_empty());
    assert_eq!(store.open_uploads(), 0);
}

#[tokio::test]
async fn a_row_longer_than_a_shard_and_the_window_past_it_is_read_whole_by_its_shard() {
    // GIVEN a pass-through id of 3 MiB in the middle of the file, split into shards of 200 KiB
    let mut text = String::from_utf8(iris_like(2_000)).unwrap();
    text.push_str(&format!("{},5.1,3.5,1.4,0.2\n", "7".repeat(3 << 20)));
    text.push_str(String::from_utf8(iris_like(2_000)).unwrap().split_once('\n').unwrap().1);
    let (expected_out, _, expected) = whole("long.csv", text.as_bytes()).await;
    let (store, runner, _) = setup();
    let messages = shard_messages(&store, "long.csv", text.into_bytes(), 200 << 10);
    assert!(messages.len() > 15);
    let order: Vec<usize> = (0..messages.len()).collect();
    let outcomes = run_all(&runner, &messages, &order).await;
    // THEN the shard it starts in reads on until it ends, and the shards inside it own nothing
    let JobOutcome::Reported(report) = outcomes.last().unwrap() else { panic!("{outcomes:?}") };
    assert_eq!(report.rows, expected.rows);
    assert_eq!(store.object("out", "long.csv.out").map(|b| b.to_vec()), expected_out);
}

#[tokio::test]
async fn a_worker_that_stops_between_the_event_and_its_marker_leaves_the_event_to_be_put_again() {
    // GIVEN a file in two shards, and a store that will not take the marker that records the
    // completion event as put: what a worker killed between the two leaves behind
    let data = iris_like(2_000);
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "crash.csv", data.clone(), data.len() as u64 / 2 + 1);
    let internal = || shared::aws_error::AwsError::service("S3", "PutObject", "InternalError", "internal error", 500);
    store.inject(Fault::Refuse { operation: "PutObject", key: "/announced".into(), error: internal, times: Some(4) });
    // WHEN both shards run: the last one publishes and puts the event, and cannot record it
    let outcomes = run_all(&runner, &messages, &[0, 1]).await;
    assert!(matches!(outcomes[1], JobOutcome::Retry { .. }), "{outcomes:?}");
    assert_eq!(events.ids().len(), 1);
    // WHEN another worker takes the message up once the first one's claim has timed out (as SQS
    // hands a stopped worker's message on), and an earlier shard's message comes again after it
    let mut other = runner_on(&store, &events, "worker-2");
    other.settings.announcement_timeout = std::time::Duration::ZERO;
    let again = run_all(&other, &messages, &[1, 0]).await;
    // THEN the event is put again, under the same id, and recorded; the later message puts none
    assert!(matches!(again[0], JobOutcome::Reported(_)), "{again:?}");
    assert!(matches!(again[1], JobOutcome::ShardDone(_)), "{again:?}");
    let ids = events.ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "a consumer deduplicates on the event id");
    assert_eq!(ids[0], messages[0].event_id());
    let (expected_out, _, _) = whole("crash.csv", &data).await;
    assert_eq!(store.object("out", "crash.csv.out").map(|b| b.to_vec()), expected_out);
}

#[tokio::test]
async fn a_claim_to_put_the_event_holds_while_its_worker_may_still_be_putting_it() {
    // GIVEN a file whose event one worker has claimed to put, just now, and not yet put
    let data = iris_like(2_000);
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "held.csv", data.clone(), data.len() as u64 / 2 + 1);
    let internal = || shared::aws_error::AwsError::service("S3", "PutObject", "InternalError", "internal error", 500);
    store.inject(Fault::Refuse { operation: "PutObject", key: "/announced".into(), error: internal, times: Some(4) });
    run_all(&runner, &messages, &[0, 1]).await;
    // WHEN another worker runs the message within the claim's time
    let other = runner_on(&store, &events, "worker-2");
    let outcome = other.run(&messages[1], 2).await;
    // THEN it waits for the next try rather than putting the event twice
    let JobOutcome::Retry { reason, .. } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("worker-1 is putting the file's completion event"), "{reason}");
    assert_eq!(events.ids().len(), 1);
}

#[tokio::test]
async fn a_model_replaced_in_place_mid_file_fails_the_file_rather_than_mixing_models() {
    // GIVEN a file in two shards, the first run with the iris logistic regression
    let data = iris_like(2_000);
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "mixed.csv", data.clone(), data.len() as u64 / 2 + 1);
    let first = run_all(&runner, &messages, &[0]).await;
    assert!(matches!(first[0], JobOutcome::ShardDone(_)), "{first:?}");
    // WHEN the model file is replaced in place (another model, same key) before the second runs
    store.put_object("models", support::MODEL, std::fs::read(support::repo("models/iris_mlp.onnx")).unwrap());
    let second = run_all(&runner, &messages, &[1]).await;
    // THEN the file fails, saying why and what to do, with no output: no row ran another model
    let JobOutcome::Reported(report) = &second[0] else { panic!("{second:?}") };
    assert_eq!(report.status, JobStatus::Failed);
    let reason = report.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("was replaced while the file was processed"), "{reason}");
    assert!(reason.contains("upload the file again"), "{reason}");
    assert!(store.object("out", "mixed.csv.out").is_none());
    assert_eq!(events.ids().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Parquet: split by row groups, joined without re-encoding
// ---------------------------------------------------------------------------------------------

/// An iris-like Parquet file of `rows` rows in row groups of `row_group_rows`: `id` (int64) and
/// the four features (float64, each row's a little off iris's, so that predictions do not
/// repeat), every 89th row's `petal_width` null (a bad row).
fn iris_parquet(rows: usize, row_group_rows: usize) -> Vec<u8> {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    let names = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    fields.extend(names.iter().map(|n| Field::new(*n, DataType::Float64, true)));
    let schema = std::sync::Arc::new(Schema::new(fields));
    let text = String::from_utf8(iris_like(rows)).unwrap();
    let values: Vec<Vec<f64>> =
        text.lines().skip(1).map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect()).collect();
    let mut columns: Vec<ArrayRef> = vec![std::sync::Arc::new(Int64Array::from_iter_values(1..=rows as i64))];
    columns.extend((0..names.len()).map(|f| {
        let jitter = |r: usize| ((r * 7919 + f * 104_729) % 1000) as f64 * 1e-4;
        let column = values.iter().enumerate().map(|(r, row)| (f != 3 || r % 89 != 88).then_some(row[f] + jitter(r)));
        std::sync::Arc::new(column.collect::<Float64Array>()) as ArrayRef
    }));
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), Some(properties)).unwrap();
    writer.write(&RecordBatch::try_new(schema, columns).unwrap()).unwrap();
    writer.close().unwrap();
    out
}

/// A Parquet file's rows, as text (one line a row), and its row groups.
fn parquet_rows(file: &[u8]) -> (Vec<String>, usize) {
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file.to_vec()))
            .unwrap();
    let row_groups = builder.metadata().num_row_groups();
    let mut rows = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let formatters: Vec<_> = batch.columns().iter().map(|c| arrow_cast_free_display(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f(row)).collect::<Vec<_>>().join(","));
        }
    }
    (rows, row_groups)
}

/// A cell printer for the output's column types (int64, strings, float32).
fn arrow_cast_free_display(column: &dyn arrow_array::Array) -> Box<dyn Fn(usize) -> String + '_> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type};
    use arrow_schema::DataType;
    match column.data_type() {
        DataType::Int64 => Box::new(move |r| column.as_primitive::<Int64Type>().value(r).to_string()),
        DataType::Float32 => Box::new(move |r| column.as_primitive::<Float32Type>().value(r).to_string()),
        DataType::Utf8 => Box::new(move |r| column.as_string::<i32>().value(r).to_owned()),
        other => panic!("no printer for {other}"),
    }
}

/// The runner of `setup`, writing `format`.
fn writing(
    format: worker::engine::TableFormat,
) -> (support::MemoryStore, JobRunner<support::MemoryStore, RecordedEvents>, RecordedEvents) {
    let (store, mut runner, events) = setup();
    runner.settings.transform.output_format = Some(format);
    (store, runner, events)
}

/// The outputs one worker writes for `data` as `key`, in `format`: data, errors file, report.
async fn whole_in(
    format: worker::engine::TableFormat,
    key: &str,
    data: &[u8],
    data_key: &str,
) -> (Vec<u8>, Option<Vec<u8>>, shared::JobReport) {
    let (store, runner, _) = writing(format);
    let job = upload(&store, key, data.to_vec());
    let JobOutcome::Reported(report) = runner.run(&job, 1).await else { panic!("the whole file has a report") };
    let object = |key: &str| store.object("out", key).map(|b| b.to_vec());
    (object(data_key).expect("an output"), object(&format!("{key}.errors.csv")), *report)
}

#[tokio::test]
async fn a_parquet_file_is_split_by_row_groups_and_joined_into_one_file() {
    use worker::engine::TableFormat;
    // GIVEN a Parquet file of 40 row groups with bad rows, in 7 shards
    let data = iris_parquet(4_000, 100);
    let (expected_out, expected_errors, expected) =
        whole_in(TableFormat::Parquet, "t/rows.parquet", &data, "t/rows.parquet.out.parquet").await;
    let (store, runner, events) = writing(TableFormat::Parquet);
    let messages = shard_messages(&store, "t/rows.parquet", data.clone(), data.len() as u64 / 7 + 1);
    assert_eq!(messages.len(), 7);
    // WHEN their messages run out of order, one twice
    let outcomes = run_all(&runner, &messages, &[3, 0, 6, 1, 5, 5, 2, 4]).await;
    // THEN one reports the file, with the whole file's counts and row numbers
    let reports: Vec<_> =
        outcomes.iter().filter_map(|o| if let JobOutcome::Reported(r) = o { Some(r) } else { None }).collect();
    assert_eq!(reports.len(), 1, "{outcomes:?}");
    assert_eq!((reports[0].rows, &reports[0].first_errors), (expected.rows, &expected.first_errors));
    assert_eq!(expected.rows.bad, 4_000 / 89);
    let Some(SplitReport::Shards { count: 7, shards, .. }) = &reports[0].split else {
        panic!("{:?}", reports[0].split)
    };
    // (The last shards' ranges hold the footer's statistics and page indexes, not row groups.)
    assert!(shards.iter().filter(|s| s.rows > 0).count() >= 4, "{shards:?}");
    // AND the output is one Parquet file of the shards' row groups, rows as one worker writes them
    let out = store.object("out", "t/rows.parquet.out.parquet").expect("the output").to_vec();
    let ((rows, row_groups), (expected_rows, _)) = (parquet_rows(&out), parquet_rows(&expected_out));
    assert_eq!(rows.len(), 4_000 - 4_000 / 89);
    assert_eq!(rows, expected_rows);
    assert!(row_groups >= 4, "{row_groups} row groups");
    // AND the errors file is the whole file's, row numbers and all
    assert_eq!(store.object("out", "t/rows.parquet.errors.csv").map(|b| b.to_vec()), expected_errors);
    assert_eq!(events.0.lock().unwrap().len(), 1);
    let staged: Vec<_> = store.keys("out").into_iter().filter(|k| k.starts_with("_sluice/")).collect();
    assert_eq!(staged.len(), 2, "{staged:?}");
    assert_eq!(store.open_uploads(), 0);
}

#[tokio::test]
async fn parquet_and_text_cross_over_when_split() {
    use worker::engine::TableFormat;
    // GIVEN a Parquet file written as CSV, and a CSV written as Parquet, each in shards
    let parquet = iris_parquet(3_000, 64);
    let (expected_csv, _, _) = whole_in(TableFormat::Csv, "a.parquet", &parquet, "a.parquet.out").await;
    let (store, runner, _) = writing(TableFormat::Csv);
    let messages = shard_messages(&store, "a.parquet", parquet.clone(), parquet.len() as u64 / 4 + 1);
    run_all(&runner, &messages, &[2, 1, 3, 0]).await;
    // THEN the CSV has one header and the whole file's rows
    assert_eq!(store.object("out", "a.parquet.out").map(|b| b.to_vec()), Some(expected_csv));

    let csv = with_bad_rows(3_000, 97);
    let (expected_parquet, _, _) = whole_in(TableFormat::Parquet, "b.csv", &csv, "b.csv.out.parquet").await;
    let (store, runner, _) = writing(TableFormat::Parquet);
    let messages = shard_messages(&store, "b.csv", csv.clone(), csv.len() as u64 / 5);
    let order: Vec<usize> = (0..messages.len()).rev().collect();
    run_all(&runner, &messages, &order).await;
    let out = store.object("out", "b.csv.out.parquet").expect("the output").to_vec();
    assert_eq!(parquet_rows(&out).0, parquet_rows(&expected_parquet).0);
}

#[tokio::test]
async fn outputs_of_several_mib_are_joined_from_copies_inside_the_store() {
    use worker::engine::TableFormat;
    let data = iris_parquet(2_000_000, 250_000);
    let (store, runner, _) = writing(TableFormat::Parquet);
    let messages = shard_messages(&store, "big.parquet", data.clone(), data.len() as u64 / 2 + 1);
    run_all(&runner, &messages, &[1, 0]).await;
    assert!(
        store.calls().iter().any(|c| c.starts_with("UploadPartCopy big.parquet.out.parquet")),
        "{:?}",
        store.calls()
    );
    let out = store.object("out", "big.parquet.out.parquet").expect("the output").to_vec();
    assert_eq!(parquet_rows(&out).0.len(), 2_000_000 - 2_000_000 / 89);
}

#[tokio::test]
async fn a_parquet_file_of_one_row_group_runs_whole_and_says_why() {
    let data = iris_parquet(2_000, 10_000);
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "one.parquet", data.clone(), data.len() as u64 / 3 + 1);
    let outcomes = run_all(&runner, &messages, &[2, 0, 1]).await;
    let reports: Vec<_> =
        outcomes.iter().filter_map(|o| if let JobOutcome::Reported(r) = o { Some(r) } else { None }).collect();
    assert_eq!(reports.len(), 1, "{outcomes:?}");
    let Some(SplitReport::NotSplit { reason }) = &reports[0].split else { panic!("{:?}", reports[0].split) };
    assert!(reason.contains("one row group"), "{reason}");
    assert_eq!(reports[0].rows.input, 2_000);
    assert_eq!(events.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_parquet_reupload_mid_file_stops_the_old_versions_shards_reading_it() {
    // GIVEN a Parquet file in three shards, one done
    let data = iris_parquet(3_000, 100);
    let (store, runner, events) = setup();
    let messages = shard_messages(&store, "re.parquet", data.clone(), data.len() as u64 / 3 + 1);
    run_all(&runner, &messages, &[0]).await;
    // WHEN the key is uploaded again before the next shard reads its row groups
    store.put_object("in", "re.parquet", iris_parquet(500, 100));
    let outcomes = run_all(&runner, &messages, &[1, 2]).await;
    // THEN its ranged reads, pinned to the old ETag, stop it, and nothing is published
    assert!(outcomes.iter().all(|o| matches!(o, JobOutcome::Superseded(_))), "{outcomes:?}");
    assert!(store.object("out", "re.parquet.out.parquet").is_none());
    assert!(events.0.lock().unwrap().is_empty());
    assert_eq!(store.open_uploads(), 0);
}
