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
