//! End to end: the real `lambda-trigger` and `worker` binaries against moto, through the local
//! Lambda Runtime API and Fargate emulators (see `local/`).

use std::time::Duration;

use shared::JobStatus;
use sluice_e2e::*;
use sluice_local::Signal;

const DRAIN: Duration = Duration::from_secs(120);

#[tokio::test]
async fn an_uploaded_csv_gets_predictions_equal_to_onnxruntime_and_a_report() {
    // GIVEN the pipeline with the logistic-regression model
    let mut pipeline = start(quick_options()).await;
    // WHEN iris.csv is uploaded
    pipeline.upload_file(&repo("examples/data/iris.csv"), Some("batch/iris.csv")).await.unwrap();
    let drained = pipeline.wait_until_drained(DRAIN).await.unwrap();

    // THEN one worker ran and exited cleanly, and nothing was dead-lettered
    assert_eq!(drained.workers_started, 1);
    assert!(pipeline.fargate().finished().iter().all(|w| w.succeeded()), "{:?}", pipeline.fargate().finished());
    assert_eq!((drained.dead_lettered_jobs, drained.dead_lettered_events), (0, 0));
    // AND the output's labels equal onnxruntime's, its probabilities within 1e-5, in input order
    let out = object(&pipeline, "batch/iris.csv.out").await.expect("an output");
    let got = csv_rows(&out);
    let want = csv_rows(&std::fs::read(repo("models/reference/iris_logreg.csv")).unwrap());
    assert_eq!(got.len(), 150);
    let classes = ["setosa", "versicolor", "virginica"];
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g[0], w[0]);
        assert_eq!(g[1], classes[w[1].parse::<usize>().unwrap()], "label of id {}", w[0]);
        for col in 2..5 {
            let (a, b): (f64, f64) = (g[col].parse().unwrap(), w[col].parse().unwrap());
            assert!((a - b).abs() <= 1e-5, "id {} column {col}: {a} vs {b}", w[0]);
        }
    }
    // AND the report says what happened
    let report = report(&pipeline, "batch/iris.csv").await;
    assert_eq!(report.status, JobStatus::Succeeded);
    assert_eq!((report.rows.input, report.rows.output, report.rows.bad), (150, 150, 0));
    assert_eq!(report.model.uri, "s3://sluice-models/iris_logreg.onnx");
    assert_eq!(report.model.sha256.as_deref().map(str::len), Some(64));
    assert_eq!(report.attempt, 1);
    assert_eq!(report.outputs.data.as_deref(), Some("s3://sluice-output/batch/iris.csv.out"));
    assert_eq!(output_keys(&pipeline).await, ["batch/iris.csv.out", "batch/iris.csv.report.json"]);
    pipeline.shutdown().await;
}

#[tokio::test]
async fn the_same_event_twice_gives_one_output_with_identical_bytes() {
    // GIVEN a file processed once
    let mut pipeline = start(quick_options()).await;
    pipeline.put_input("data/my file+1.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    let first = object(&pipeline, "data/my file+1.csv.out").await.expect("first output");
    // WHEN S3 delivers the same event again
    let again = deliver(&pipeline, "data/my file+1.csv").await.unwrap();
    assert!(again.succeeded(), "{again:?}");
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN the job ran again and the output is byte for byte the same, with no extra object
    let second = object(&pipeline, "data/my file+1.csv.out").await.expect("second output");
    assert_eq!(first, second);
    assert_eq!(output_keys(&pipeline).await, ["data/my file+1.csv.out", "data/my file+1.csv.report.json"]);
    assert_eq!(pipeline.fargate().started_count(), 2, "one worker per delivery, as the first had exited");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_file_that_is_not_csv_gets_a_failed_report_and_no_output() {
    // GIVEN a PNG named .csv, and a file of a type sluice does not read
    let mut pipeline = start(quick_options()).await;
    let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00\x1f\xf3\xffa";
    pipeline.put_input("image.csv", png.to_vec()).await.unwrap();
    pipeline.put_input("notes.txt", "hello\n").await.unwrap();
    // WHEN they are processed
    let drained = pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN each has a failed report with a reason, no output, and the queue is empty
    for (key, reason) in [("image.csv", "not UTF-8 text"), ("notes.txt", "not a supported file type")] {
        let report = report(&pipeline, key).await;
        assert_eq!(report.status, JobStatus::Failed, "{key}");
        assert!(report.reason.as_deref().unwrap_or("").contains(reason), "{key}: {:?}", report.reason);
        assert!(report.outputs.data.is_none());
        assert!(object(&pipeline, &format!("{key}.out")).await.is_none(), "{key} has no .out");
    }
    assert_eq!(pipeline.queue_depth().await.unwrap().total(), 0);
    assert_eq!(drained.dead_lettered_jobs, 0, "permanent failures are reported, not dead-lettered");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_worker_killed_mid_job_loses_nothing() {
    // GIVEN a file big enough that its output is a multipart upload
    let mut options = quick_options();
    options.max_workers = 1;
    let mut pipeline = start(options).await;
    let rows = 400_000;
    pipeline.put_input("big.csv", iris_like_csv(rows)).await.unwrap();
    let delivered = pipeline.deliver_new_uploads().await.unwrap();
    assert_eq!(delivered.len(), 1);
    // WHEN the worker is killed with SIGKILL in the middle of the job (its first part is up)
    wait_for_upload(&pipeline, "big.csv.out", Duration::from_secs(60)).await;
    let victim = pipeline.fargate().running()[0].task_arn.clone();
    pipeline.fargate().kill(&victim, Signal::Kill).unwrap();
    eventually(Duration::from_secs(10), "the killed worker is gone", || async {
        pipeline.fargate().running().is_empty()
    })
    .await;
    // THEN no partial output is visible
    assert!(object(&pipeline, "big.csv.out").await.is_none(), "the job must not have finished before the kill");
    // AND, with no new upload, the scheduled reconciliation starts a worker once the message is
    // visible again, and it produces the whole output
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    let report = report(&pipeline, "big.csv").await;
    assert_eq!(report.status, JobStatus::Succeeded);
    assert_eq!((report.rows.input, report.rows.output), (rows as u64, rows as u64));
    assert!(report.attempt >= 2, "delivered again: attempt {}", report.attempt);
    let out = object(&pipeline, "big.csv.out").await.unwrap();
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), rows + 1);
    // (The reconciliation counts the dead worker's job as work in hand, so it may start a worker
    // before the message is visible again; that one idles out and the next takes the job.)
    assert!(pipeline.fargate().started_count() >= 2);
    assert_eq!(pipeline.fargate().most_running(), 1, "never more than MAX_WORKERS");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn the_worker_exits_by_itself_once_the_queue_is_empty() {
    // GIVEN a worker started with nothing to do
    let mut pipeline = start(quick_options()).await;
    let started = invoke(&pipeline, scheduled_event()).await.unwrap();
    assert!(started.succeeded());
    assert_eq!(pipeline.fargate().started_count(), 0, "no job waits, so no worker starts");
    let worker = sluice_local::binaries::workspace_binary("worker").unwrap();
    let clock = std::time::Instant::now();
    let status = tokio::process::Command::new(worker)
        .env_clear()
        .envs(&pipeline.stack.worker_environment)
        .status()
        .await
        .unwrap();
    // THEN it exits with status 0 after its empty polls (2 of 1 s)
    assert!(status.success(), "{status:?}");
    assert!(clock.elapsed() < Duration::from_secs(15), "took {:?}", clock.elapsed());
    // AND in the pipeline, a worker started for a job exits once it is done
    pipeline.put_input("a.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    let finished = pipeline.fargate().finished();
    assert_eq!(finished.len(), 1);
    assert!(finished[0].succeeded(), "{finished:?}");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn the_trigger_starts_a_task_only_when_none_runs() {
    // GIVEN workers that linger, and at most one of them
    let mut options = quick_options();
    options.max_workers = 1;
    options.stack.worker.empty_polls_before_exit = 30;
    let pipeline = start(options).await;
    // WHEN a first file arrives
    pipeline.put_input("one.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    assert!(deliver(&pipeline, "one.csv").await.unwrap().succeeded());
    eventually(Duration::from_secs(30), "the first output", || async {
        object(&pipeline, "one.csv.out").await.is_some()
    })
    .await;
    assert_eq!(pipeline.fargate().started_count(), 1);
    // AND a second file arrives while that worker still runs
    assert_eq!(pipeline.fargate().running().len(), 1);
    pipeline.put_input("two.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    assert!(deliver(&pipeline, "two.csv").await.unwrap().succeeded());
    // THEN the running worker takes it and no second task starts
    eventually(Duration::from_secs(30), "the second output", || async {
        object(&pipeline, "two.csv.out").await.is_some()
    })
    .await;
    assert_eq!(pipeline.fargate().started_count(), 1);
    let tasks = pipeline.ecs.list_tasks().cluster(&pipeline.stack.cluster_name).send().await.unwrap();
    assert_eq!(tasks.task_arns().len(), 1, "ECS knows one task");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn sigterm_returns_the_job_in_hand_and_leaves_no_partial_output() {
    // GIVEN a worker with no grace period, a long visibility timeout, and a long job in hand
    let mut options = quick_options();
    options.max_workers = 1;
    options.stack.visibility_timeout = Duration::from_secs(60);
    options.stack.worker.shutdown_grace_seconds = 0;
    let mut pipeline = start(options).await;
    pipeline.put_input("big.csv", iris_like_csv(400_000)).await.unwrap();
    assert_eq!(pipeline.deliver_new_uploads().await.unwrap().len(), 1);
    wait_for_upload(&pipeline, "big.csv.out", Duration::from_secs(60)).await;
    // WHEN ECS stops the task (SIGTERM) in the middle of the job
    let task = pipeline.fargate().running()[0].task_arn.clone();
    pipeline.fargate().kill(&task, Signal::Term).unwrap();
    // THEN the worker exits cleanly at once and the message is visible again long before its
    // visibility timeout, with no output written
    eventually(Duration::from_secs(10), "the worker has exited", || async { pipeline.fargate().running().is_empty() })
        .await;
    let finished = pipeline.fargate().finished();
    assert!(finished[0].succeeded(), "{finished:?}");
    eventually(Duration::from_secs(5), "the message is back", || async {
        pipeline.queue_depth().await.unwrap().visible == 1
    })
    .await;
    assert!(object(&pipeline, "big.csv.out").await.is_none());
    // AND no unfinished multipart upload is left behind
    assert_eq!(open_uploads(&pipeline).await, 0);
    pipeline.shutdown().await;
}
