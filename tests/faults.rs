//! End to end under faults: the real binaries against moto, through the local Lambda and Fargate
//! emulators, with slow files and several workers, re-uploads, malformed messages, a frozen
//! endpoint, killed workers, refused starts and a burst of uploads. Every wait is for an
//! observable state (a multipart upload under way, a report, a dead-lettered message).

use std::collections::BTreeSet;
use std::time::Duration;

use shared::JobStatus;
use sluice_e2e::*;
use sluice_local::{EnvMap, Signal};

const DRAIN: Duration = Duration::from_secs(240);

/// The report of every input, keyed by input key.
async fn reports(pipeline: &sluice_local::LocalPipeline, keys: &[String]) -> Vec<shared::JobReport> {
    let mut all = Vec::new();
    for key in keys {
        all.push(report(pipeline, key).await);
    }
    all
}

#[tokio::test]
async fn slow_files_and_two_workers_each_file_is_processed_once() {
    // GIVEN four files that each take longer than the queue's 2 s visibility timeout, and two workers
    let mut options = quick_options();
    options.stack.visibility_timeout = Duration::from_secs(2);
    options.max_workers = 2;
    let mut pipeline = start(options).await;
    let keys: Vec<String> = (1..=4).map(|i| format!("slow/{i}.csv")).collect();
    for key in &keys {
        pipeline.put_input(key, iris_like_csv(1_500_000)).await.unwrap();
    }
    // WHEN they are processed
    let drained = pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN each took longer than the visibility timeout, and was processed exactly once, on its
    // first delivery: one completion event each, and reports that say attempt 1
    let reports = reports(&pipeline, &keys).await;
    for (key, report) in keys.iter().zip(&reports) {
        assert_eq!(report.status, JobStatus::Succeeded, "{key}");
        assert!(report.duration_seconds > 2.0, "{key} took {} s", report.duration_seconds);
        assert_eq!(report.attempt, 1, "{key}");
        let events = completion_events_for(&pipeline, key).await;
        assert_eq!(events.len(), 1, "{key}: {events:?}");
        assert_eq!(events[0].0, "Sluice File Succeeded");
        assert_eq!(events[0].1, *report);
    }
    // AND both workers took files (none idled while work waited), never more than two at once
    let workers: BTreeSet<&str> = reports.iter().map(|r| r.worker_id.as_str()).collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(pipeline.fargate().most_running() <= 2);
    // AND nothing went to a dead-letter queue
    assert_eq!((drained.dead_lettered_jobs, drained.dead_lettered_events), (0, 0));
    // AND the workers logged JSON lines carrying their id, the input and the attempt
    let output = worker_output(&pipeline);
    let started: Vec<serde_json::Value> = output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "job started")
        .collect();
    assert_eq!(started.len(), 4, "{output}");
    for line in &started {
        assert!(line["worker_id"].is_string() && line["attempt"] == 1, "{line}");
        assert!(line["input"].as_str().unwrap().starts_with("s3://sluice-input/slow/"), "{line}");
    }
    // AND wrote one metric record per file
    let records = output.lines().filter(|line| line.contains("\"_aws\"") && line.contains("FilesSucceeded")).count();
    assert_eq!(records, 4);
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_late_old_version_does_not_overwrite_the_new_versions_outputs() {
    // GIVEN a large v1 of a key being processed (its output's first part is up)
    let mut options = quick_options();
    options.max_workers = 2;
    let mut pipeline = start(options).await;
    pipeline.put_input("data.csv", iris_like_csv(1_200_000)).await.unwrap();
    assert_eq!(pipeline.deliver_new_uploads().await.unwrap().len(), 1);
    wait_for_upload(&pipeline, "data.csv.out", Duration::from_secs(60)).await;
    // WHEN v2 is uploaded meanwhile, and processed by a second worker while v1's still runs
    let v2 = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    pipeline.put_input("data.csv", v2).await.unwrap();
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN the outputs describe v2, the object the bucket holds
    let head = pipeline.s3.head_object().bucket(&pipeline.stack.input_bucket).key("data.csv").send().await.unwrap();
    let v2_etag = head.e_tag().unwrap().trim_matches('"').to_owned();
    let report = report(&pipeline, "data.csv").await;
    assert_eq!(report.input.etag, v2_etag);
    assert_eq!(report.rows.output, 150);
    let out = object(&pipeline, "data.csv.out").await.unwrap();
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 151);
    // AND v1's job, ending last, saw that and wrote nothing (and left no upload behind)
    let events = completion_events_for(&pipeline, "data.csv").await;
    assert_eq!(events.len(), 1, "only v2 completed: {events:?}");
    assert_eq!(events[0].1.input.etag, v2_etag);
    assert!(worker_output(&pipeline).contains("job superseded"), "v1's job ended after v2's");
    assert_eq!(open_uploads(&pipeline).await, 0);
    assert_eq!(pipeline.fargate().started_count(), 2, "a second worker for v2, not a wait behind v1");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_second_file_gets_a_second_worker_while_the_first_is_busy() {
    // GIVEN one worker busy with a long file, and at most two workers
    let mut options = quick_options();
    options.max_workers = 2;
    options.reconcile_every = None;
    let mut pipeline = start(options).await;
    pipeline.put_input("long.csv", iris_like_csv(1_200_000)).await.unwrap();
    pipeline.deliver_new_uploads().await.unwrap();
    wait_for_upload(&pipeline, "long.csv.out", Duration::from_secs(60)).await;
    assert_eq!(pipeline.fargate().started_count(), 1);
    // WHEN a second, short file arrives
    pipeline.put_input("short.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    let delivered = pipeline.deliver_new_uploads().await.unwrap();
    assert!(delivered[0].succeeded());
    // THEN the trigger starts a second worker for it, and it is done while the first still works
    eventually(Duration::from_secs(60), "short.csv's report", || async {
        object(&pipeline, "short.csv.report.json").await.is_some()
    })
    .await;
    assert!(object(&pipeline, "long.csv.out").await.is_none(), "the long file is still in hand");
    assert_eq!(pipeline.fargate().started_count(), 2);
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    assert_eq!(report(&pipeline, "long.csv").await.status, JobStatus::Succeeded);
    pipeline.shutdown().await;
}

#[tokio::test]
async fn messages_that_are_not_jobs_all_reach_the_dead_letter_queue() {
    // GIVEN twelve messages on the job queue that are not jobs, and two good uploads around them
    let mut pipeline = start(quick_options()).await;
    let good: serde_json::Value = serde_json::json!({
        "version": 1,
        "input": {"bucket": "sluice-input", "key": "x.csv", "size": 1, "etag": "e"},
        "output": {"bucket": "sluice-output", "prefix": ""},
        "model_uri": pipeline.model_uri,
        "event_time": "2026-11-21T08:00:00Z",
    });
    let mut bad = vec!["not json".to_owned(), "{}".to_owned(), "[]".to_owned(), "null".to_owned()];
    for version in [0, 2, 7] {
        let mut message = good.clone();
        message["version"] = version.into();
        bad.push(message.to_string());
    }
    for field in ["input", "output", "model_uri", "event_time", "version"] {
        let mut message = good.clone();
        message.as_object_mut().unwrap().remove(field);
        bad.push(message.to_string());
    }
    assert_eq!(bad.len(), 12);
    pipeline.put_input("before.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    pipeline.deliver_new_uploads().await.unwrap();
    for body in &bad {
        send_job_message(&pipeline, body).await;
    }
    pipeline.put_input("after.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    // WHEN the workers drain the queue
    let drained = pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN all twelve are in the dead-letter queue, none is left hidden, and the good jobs completed
    assert_eq!(drained.dead_lettered_jobs, 12);
    assert_eq!(pipeline.queue_depth().await.unwrap().total(), 0);
    for key in ["before.csv", "after.csv"] {
        assert_eq!(report(&pipeline, key).await.status, JobStatus::Succeeded, "{key}");
    }
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_failed_worker_start_after_enqueueing_does_not_enqueue_the_jobs_again() {
    // GIVEN a trigger whose RunTask fails (a subnet that does not exist)
    let mut options = quick_options();
    options.trigger_env_overrides = EnvMap::from([("WORKER_SUBNETS".to_owned(), "subnet-0000000000000000".to_owned())]);
    options.reconcile_every = None;
    let pipeline = start(options).await;
    // WHEN a file is uploaded
    pipeline.put_input("a.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    let invocation = deliver(&pipeline, "a.csv").await.unwrap();
    // THEN the invocation succeeds at once (Lambda does not retry it), its job is queued once,
    // and the event is not in the trigger's dead-letter queue
    assert!(invocation.succeeded(), "{invocation:?}");
    assert_eq!(invocation.attempts, 1);
    let sluice_local::AsyncOutcome::Succeeded(summary) = &invocation.outcome else { unreachable!() };
    let error = summary["worker_start_error"].as_str().expect("the failed start is in the summary");
    assert!(error.contains("ECS RunTask failed: InvalidSubnetID.NotFound"), "the service's code is shown: {error}");
    assert_eq!(pipeline.queue_depth().await.unwrap().visible, 1);
    assert_eq!(pipeline.dead_lettered_events().await.unwrap(), 0);
    assert_eq!(pipeline.fargate().started_count(), 0);
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_failure_only_the_operator_can_fix_ends_in_the_dead_letter_queue_and_is_redriven_once_fixed() {
    // GIVEN the output bucket gone, deleted by hand after the deployment (another bucket would be
    // AccessDenied: the worker's role may write to the stack's output bucket only)
    let mut pipeline = start(quick_options()).await;
    let outputs = pipeline.stack.output_bucket.clone();
    pipeline.s3.delete_bucket().bucket(&outputs).send().await.unwrap();
    // WHEN a file is uploaded
    pipeline.put_input("a.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    pipeline.deliver_new_uploads().await.unwrap();
    // THEN its job is retried (soon, not after the visibility timeout) until it is dead-lettered,
    // with no failed report, and the logs carry S3's error code
    eventually(DRAIN, "the job is dead-lettered", || async { pipeline.dead_lettered_jobs().await.unwrap() == 1 }).await;
    let output = worker_output(&pipeline);
    assert!(output.contains("NoSuchBucket"), "{output}");
    assert!(!output.contains("job failed"), "not the file's fault: no failed report");
    // AND once the bucket exists, a redrive processes it
    sluice_local::provision::ensure_bucket(&pipeline.s3, &outputs).await.unwrap();
    assert_eq!(redrive(&pipeline).await, 1);
    eventually(DRAIN, "the redriven job's output", || async {
        pipeline.s3.head_object().bucket(&outputs).key("a.csv.report.json").send().await.is_ok()
    })
    .await;
    pipeline.shutdown().await;
}

#[tokio::test]
async fn an_input_uploaded_in_parts_is_read_without_a_checksum_warning() {
    // GIVEN a file uploaded in two parts, as the AWS CLI uploads large files
    let mut pipeline = start(quick_options()).await;
    let data = iris_like_csv(400_000).into_bytes();
    let (bucket, key) = (pipeline.stack.input_bucket.clone(), "parts.csv");
    let upload = pipeline.s3.create_multipart_upload().bucket(&bucket).key(key).send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let mut parts = Vec::new();
    for (index, chunk) in data.chunks(6 * 1024 * 1024).enumerate() {
        let number = index as i32 + 1;
        let part = pipeline
            .s3
            .upload_part()
            .bucket(&bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(chunk.to_vec().into())
            .send()
            .await
            .unwrap();
        parts.push(aws_sdk_s3::types::CompletedPart::builder().part_number(number).set_e_tag(part.e_tag).build());
    }
    pipeline
        .s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap();
    // WHEN it is processed
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN it succeeds and nothing warns about checksums
    assert_eq!(report(&pipeline, key).await.rows.output, 400_000);
    let output = worker_output(&pipeline);
    assert!(!output.to_lowercase().contains("checksum"), "{output}");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_frozen_endpoint_in_the_middle_of_a_job_costs_a_pause_not_the_job() {
    // GIVEN a job in the middle of its file (visibility longer than the freeze, as in AWS)
    let mut options = quick_options();
    options.max_workers = 1;
    options.stack.visibility_timeout = Duration::from_secs(60);
    let mut pipeline = start(options).await;
    let rows = 1_200_000;
    pipeline.put_input("big.csv", iris_like_csv(rows)).await.unwrap();
    pipeline.deliver_new_uploads().await.unwrap();
    wait_for_upload(&pipeline, "big.csv.out", Duration::from_secs(60)).await;
    // WHEN moto freezes for 30 s, then resumes
    assert!(pipeline.moto().freeze());
    // The freeze's length is the fault itself, not a wait for a state.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(pipeline.moto().thaw());
    // THEN the file completes with its whole output, on its first delivery, by its one worker
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    let report = report(&pipeline, "big.csv").await;
    assert_eq!(report.status, JobStatus::Succeeded, "{:?}", report.reason);
    assert_eq!((report.rows.output, report.attempt), (rows as u64, 1));
    let out = object(&pipeline, "big.csv.out").await.unwrap();
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), rows + 1);
    assert_eq!(completion_events_for(&pipeline, "big.csv").await.len(), 1, "nothing done twice");
    assert_eq!(pipeline.fargate().started_count(), 1);
    assert_eq!(open_uploads(&pipeline).await, 0);
    pipeline.shutdown().await;
}

#[tokio::test]
async fn workers_killed_again_and_again_lose_nothing_and_change_nothing() {
    // GIVEN the output of an undisturbed run of a large file
    let mut options = quick_options();
    options.max_workers = 1;
    let mut pipeline = start(options).await;
    let rows = 2_400_000;
    let data = iris_like_csv(rows);
    pipeline.put_input("calm.csv", data.clone()).await.unwrap();
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    let undisturbed = object(&pipeline, "calm.csv.out").await.unwrap();
    // WHEN the same file's worker is killed three times, at three moments of its job: while it
    // holds the message before any output part, with its first part up, and with two parts up
    // (a killed worker leaves its upload open, as in AWS, so each moment is a new upload's)
    pipeline.put_input("storm.csv", data).await.unwrap();
    pipeline.deliver_new_uploads().await.unwrap();
    let mut killed: Vec<String> = Vec::new();
    let mut old_uploads: BTreeSet<String> = BTreeSet::new();
    for (moment, parts) in [("holding the message", 0), ("first part up", 1), ("two parts up", 2)] {
        eventually(DRAIN, moment, || async {
            let fresh_worker = pipeline.fargate().running().iter().any(|w| !killed.contains(&w.task_arn));
            let in_hand = pipeline.queue_depth().await.unwrap().in_flight == 1;
            let new_parts = uploads_of(&pipeline, "storm.csv.out")
                .await
                .into_iter()
                .filter(|(id, _)| !old_uploads.contains(id))
                .map(|(_, n)| n)
                .max()
                .unwrap_or(0);
            fresh_worker && in_hand && new_parts >= parts
        })
        .await;
        let victim = pipeline.fargate().running().into_iter().find(|w| !killed.contains(&w.task_arn)).unwrap().task_arn;
        pipeline.fargate().kill(&victim, Signal::Kill).unwrap();
        eventually(Duration::from_secs(10), "the killed worker is gone", || async {
            pipeline.fargate().running().iter().all(|w| w.task_arn != victim)
        })
        .await;
        assert!(object(&pipeline, "storm.csv.out").await.is_none(), "killed {moment}: nothing visible");
        killed.push(victim);
        old_uploads.extend(uploads_of(&pipeline, "storm.csv.out").await.into_iter().map(|(id, _)| id));
    }
    // THEN each time the job came back and the scheduled reconciliation started a worker; the
    // last one completed it, and the output is byte for byte the undisturbed run's
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    let report = report(&pipeline, "storm.csv").await;
    assert_eq!(report.status, JobStatus::Succeeded);
    assert_eq!(report.attempt, 4, "three killed deliveries, then the one that finished");
    assert_eq!(object(&pipeline, "storm.csv.out").await.unwrap(), undisturbed);
    assert_eq!(pipeline.fargate().most_running(), 1, "never more than MAX_WORKERS");
    assert_eq!(pipeline.dead_lettered_jobs().await.unwrap(), 0);
    pipeline.shutdown().await;
}

/// The open multipart uploads of `key`: their ids and how many parts each has. (The parts are
/// counted with the AWS CLI: moto's ListParts answer has a root element the Rust SDK rejects.)
async fn uploads_of(pipeline: &sluice_local::LocalPipeline, key: &str) -> Vec<(String, usize)> {
    let bucket = &pipeline.stack.output_bucket;
    let uploads = pipeline.s3.list_multipart_uploads().bucket(bucket).send().await.unwrap();
    let mut found = Vec::new();
    for upload in uploads.uploads().iter().filter(|u| u.key() == Some(key)) {
        let id = upload.upload_id().unwrap();
        let args = ["s3api", "list-parts", "--bucket", bucket, "--key", key, "--upload-id", id, "--output", "json"];
        let parts = match sluice_local::provision::aws_cli(&pipeline.endpoint(), &args).await {
            Ok(text) if text.trim().is_empty() => 0,
            Ok(text) => {
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["Parts"].as_array().map_or(0, Vec::len)
            }
            // Completed or aborted between the two calls.
            Err(_) => 0,
        };
        found.push((id.to_owned(), parts));
    }
    found
}

#[tokio::test]
async fn a_burst_of_300_files_is_processed_whole_by_at_most_the_maximum_of_workers() {
    // GIVEN at most three workers
    let mut options = quick_options();
    options.max_workers = 3;
    let mut pipeline = start(options).await;
    let small = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    // WHEN 300 files are uploaded at once
    let keys: Vec<String> = (0..300).map(|i| format!("burst/{i:03}.csv")).collect();
    for key in &keys {
        pipeline.put_input(key, small.clone()).await.unwrap();
    }
    let drained = pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN every file has its output and a succeeded report, exactly one completion event each,
    // nothing is dead-lettered, and never more than three workers ran at once
    let events = pipeline.completion_events().await.unwrap();
    for key in &keys {
        assert_eq!(report(&pipeline, key).await.status, JobStatus::Succeeded, "{key}");
        assert!(object(&pipeline, &format!("{key}.out")).await.is_some(), "{key}");
    }
    let announced: Vec<&str> = events.iter().filter_map(|e| e["detail"]["input"]["key"].as_str()).collect();
    assert_eq!(announced.len(), 300);
    assert_eq!(announced.iter().collect::<BTreeSet<_>>().len(), 300);
    assert_eq!((drained.dead_lettered_jobs, drained.dead_lettered_events), (0, 0));
    assert!(pipeline.fargate().most_running() <= 3, "{} at once", pipeline.fargate().most_running());
    println!(
        "300 files in {:.1} s by {} worker task(s), at most {} at once",
        drained.elapsed.as_secs_f64(),
        pipeline.fargate().started_count(),
        pipeline.fargate().most_running()
    );
    pipeline.shutdown().await;
}
