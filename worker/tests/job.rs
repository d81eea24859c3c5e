//! One job against an in-memory object store, with the real engine and model: what it writes,
//! and how each kind of failure ends (a report, superseded, or handed back, and for whom).

mod support;

use shared::JobStatus;
use shared::aws_error::AwsError;
use support::{Fault, iris, iris_like, job_for, setup, upload};
use worker::job::{JobHandler, JobOutcome, RetryCause};

fn retry_of(outcome: JobOutcome) -> (RetryCause, String) {
    match outcome {
        JobOutcome::Retry { cause, reason } => (cause, reason),
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_becomes_its_output_its_report_and_an_event() {
    // GIVEN iris.csv uploaded
    let (store, runner, events) = setup();
    let job = upload(&store, "data/iris.csv", iris());
    // WHEN its job runs
    let outcome = runner.run(&job, 1).await;
    // THEN it succeeded, and the output, the report and the event say so
    let JobOutcome::Reported(report) = outcome else { panic!("{outcome:?}") };
    assert_eq!(report.status, JobStatus::Succeeded);
    assert_eq!((report.rows.input, report.rows.output), (150, 150));
    assert_eq!(report.outputs.data.as_deref(), Some("s3://out/data/iris.csv.out"));
    let output = String::from_utf8(store.object("out", "data/iris.csv.out").unwrap().to_vec()).unwrap();
    assert!(output.starts_with("id,label,probabilities_setosa"), "{output}");
    assert_eq!(output.lines().count(), 151);
    let written: shared::JobReport =
        serde_json::from_slice(&store.object("out", "data/iris.csv.report.json").unwrap()).unwrap();
    assert_eq!(written, *report);
    assert_eq!(events.0.lock().unwrap().as_slice(), [*report]);
}

#[tokio::test]
async fn an_input_replaced_while_it_is_processed_does_not_overwrite_the_newer_outputs() {
    // GIVEN a large v1 whose outputs span several parts, and v2 uploaded (and already processed)
    // while v1's job reads it
    let (store, runner, events) = setup();
    let job = upload(&store, "big.csv", iris_like(400_000));
    store.inject(Fault::ReplaceAfterGet { key: "big.csv".into(), data: iris().into() });
    store.put_object("out", "big.csv.out", "v2's output");
    store.put_object("out", "big.csv.report.json", "v2's report");
    // WHEN v1's job finishes after that
    let outcome = runner.run(&job, 1).await;
    runner.transfers.finish_cleanups().await;
    // THEN it is superseded: v2's outputs stay, no event, and the staged multipart upload is aborted
    assert!(matches!(&outcome, JobOutcome::Superseded(reason) if reason.contains("replaced")), "{outcome:?}");
    assert_eq!(store.object("out", "big.csv.out").unwrap(), "v2's output");
    assert_eq!(store.object("out", "big.csv.report.json").unwrap(), "v2's report");
    assert!(events.0.lock().unwrap().is_empty());
    assert_eq!(store.open_uploads(), 0);
    assert!(store.calls().iter().any(|c| c == "AbortMultipartUpload big.csv.out"), "{:?}", store.calls());
}

#[tokio::test]
async fn a_download_that_breaks_is_resumed_and_gives_the_same_output() {
    // GIVEN the output of an undisturbed run
    let (store, runner, _) = setup();
    let data = iris_like(20_000);
    let job = upload(&store, "a.csv", data.clone());
    assert!(matches!(runner.run(&job, 1).await, JobOutcome::Reported(_)));
    let undisturbed = store.object("out", "a.csv.out").unwrap();
    // WHEN the same file's download breaks twice in the middle
    let job = upload(&store, "b.csv", data);
    store.inject(Fault::BreakDownload { key: "b.csv".into(), after: 100_000, times: 2 });
    let outcome = runner.run(&job, 1).await;
    // THEN it is resumed and the output is byte for byte the same
    let JobOutcome::Reported(report) = outcome else { panic!("{outcome:?}") };
    assert_eq!(report.status, JobStatus::Succeeded);
    assert_eq!(store.object("out", "b.csv.out").unwrap(), undisturbed);
    let gets = store.calls().iter().filter(|c| *c == "GetObject b.csv").count();
    assert_eq!(gets, 3, "the first read and two resumes");
}

#[tokio::test]
async fn bytes_that_do_not_match_the_etag_are_not_published() {
    // GIVEN an object whose bytes no longer match its ETag
    let (store, runner, _) = setup();
    let job = upload(&store, "a.csv", iris());
    store.corrupt("in", "a.csv", iris_like(151));
    // WHEN its job runs
    let (cause, reason) = retry_of(runner.run(&job, 1).await);
    // THEN nothing is written and it is handed back to be read again
    assert_eq!(cause, RetryCause::Transient);
    assert!(reason.contains("do not match the object's ETag"), "{reason}");
    assert_eq!(store.keys("out"), Vec::<String>::new());
}

#[tokio::test]
async fn an_input_uploaded_in_parts_is_read_and_checked_part_by_part() {
    // GIVEN a file uploaded in 64 KiB parts (its ETag is the MD5 of the parts' MD5s, "-N")
    let (store, runner, _) = setup();
    let data = iris_like(20_000);
    let size = data.len();
    let etag = store.put_multipart_object("in", "parts.csv", data.clone(), 64 * 1024);
    let parts = size.div_ceil(64 * 1024);
    assert!(etag.ends_with(&format!("-{parts}")));
    // WHEN its job runs, with one part's download breaking once
    store.inject(Fault::BreakDownload { key: "parts.csv".into(), after: 30_000, times: 1 });
    let outcome = runner.run(&job_for("parts.csv", &etag, size), 1).await;
    // THEN it succeeds, having read each part (one twice)
    let JobOutcome::Reported(report) = outcome else { panic!("{outcome:?}") };
    assert_eq!(report.rows.input, 20_000);
    let gets = store.calls().iter().filter(|c| *c == "GetObject parts.csv").count();
    assert_eq!(gets, parts + 1);
    // AND a corrupted part is caught
    let mut corrupted = data;
    let middle = corrupted.len() / 2;
    let digit = middle + corrupted[middle..].iter().position(u8::is_ascii_digit).unwrap();
    corrupted[digit] = if corrupted[digit] == b'7' { b'8' } else { b'7' };
    store.corrupt("in", "parts.csv", corrupted);
    let (_, reason) = retry_of(runner.run(&job_for("parts.csv", &etag, size), 2).await);
    assert!(reason.contains("do not match"), "{reason}");
}

#[tokio::test]
async fn an_input_under_sse_kms_is_read_without_an_md5_check() {
    let (store, runner, _) = setup();
    let etag = "0123456789abcdef0123456789abcdef";
    store.put_object("in", "kms.csv", iris());
    store.mark_kms("in", "kms.csv", etag);
    let outcome = runner.run(&job_for("kms.csv", etag, iris().len()), 1).await;
    assert!(matches!(&outcome, JobOutcome::Reported(r) if r.status == JobStatus::Succeeded), "{outcome:?}");
}

#[tokio::test]
async fn refused_access_to_the_input_is_left_for_the_operator_with_the_services_code() {
    for (code, message, hint) in [
        ("AccessDenied", "Access Denied", "permissions on the input bucket"),
        ("KMS.DisabledException", "The key is disabled", "KMS key of the input bucket"),
    ] {
        // GIVEN S3 refuses to read the input
        let (store, runner, events) = setup();
        let job = upload(&store, "a.csv", iris());
        let error: fn() -> AwsError = if code == "AccessDenied" {
            || AwsError::service("S3", "GetObject", "AccessDenied", "Access Denied", 403)
        } else {
            || AwsError::service("S3", "GetObject", "KMS.DisabledException", "The key is disabled", 400)
        };
        store.inject(Fault::Refuse { operation: "GetObject", key: "a.csv".into(), error, times: None });
        // WHEN its job runs
        let (cause, reason) = retry_of(runner.run(&job, 1).await);
        // THEN the message stays for a redrive once fixed: no report, no event
        assert_eq!(cause, RetryCause::Operator, "{code}");
        assert!(reason.contains(&format!("{code}: {message}")) && reason.contains(hint), "{reason}");
        assert!(store.keys("out").is_empty());
        assert!(events.0.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_deleted_input_gets_a_failed_report() {
    let (store, runner, events) = setup();
    let job = job_for("gone.csv", "d41d8cd98f00b204e9800998ecf8427e", 10);
    let JobOutcome::Reported(report) = runner.run(&job, 1).await else { panic!() };
    assert_eq!(report.status, JobStatus::Failed);
    let reason = report.reason.clone().unwrap();
    assert!(reason.contains("no longer exists") && reason.contains("NoSuchKey"), "{reason}");
    assert_eq!(store.keys("out"), ["gone.csv.report.json"]);
    assert_eq!(events.0.lock().unwrap()[0].status, JobStatus::Failed);
}

#[tokio::test]
async fn a_missing_or_broken_model_is_left_for_the_operator() {
    // Missing.
    let (store, runner, _) = setup();
    let mut job = upload(&store, "a.csv", iris());
    job.model = "s3://models/absent.onnx".into();
    let (cause, reason) = retry_of(runner.run(&job, 1).await);
    assert_eq!(cause, RetryCause::Operator);
    assert!(reason.contains("s3://models/absent.onnx does not exist"), "{reason}");
    // Broken.
    store.put_object("models", "broken.onnx", "not a model");
    job.model = "s3://models/broken.onnx".into();
    let (cause, reason) = retry_of(runner.run(&job, 1).await);
    assert_eq!(cause, RetryCause::Operator);
    assert!(reason.contains("not a valid ONNX file"), "{reason}");
    assert!(store.keys("out").is_empty());
}

#[tokio::test]
async fn a_missing_output_bucket_is_left_for_the_operator() {
    let (store, runner, _) = setup();
    let mut job = upload(&store, "a.csv", iris());
    job.output.bucket = "deleted-bucket".into();
    let (cause, reason) = retry_of(runner.run(&job, 1).await);
    assert_eq!(cause, RetryCause::Operator);
    assert!(reason.contains("NoSuchBucket"), "{reason}");
}

#[tokio::test]
async fn throttled_writes_are_retried_in_place() {
    // GIVEN S3 asks to slow down on the first two writes of the output
    let (store, runner, _) = setup();
    let job = upload(&store, "a.csv", iris());
    store.inject(Fault::Refuse {
        operation: "PutObject",
        key: "a.csv.out".into(),
        error: || AwsError::service("S3", "PutObject", "SlowDown", "Please reduce your request rate.", 503),
        times: Some(2),
    });
    // WHEN the job runs
    let outcome = runner.run(&job, 1).await;
    // THEN it succeeds within the same attempt
    assert!(matches!(&outcome, JobOutcome::Reported(r) if r.status == JobStatus::Succeeded), "{outcome:?}");
    assert!(store.object("out", "a.csv.out").is_some());
}

#[tokio::test]
async fn a_failure_that_persists_is_handed_back_as_transient_and_leaves_no_upload() {
    // GIVEN a multipart output whose parts S3 keeps refusing with a server error
    let (store, runner, _) = setup();
    let job = upload(&store, "big.csv", iris_like(400_000));
    store.inject(Fault::Refuse {
        operation: "UploadPart",
        key: "big.csv.out".into(),
        error: || AwsError::service("S3", "UploadPart", "InternalError", "We encountered an internal error.", 500),
        times: None,
    });
    // WHEN the job runs
    let (cause, reason) = retry_of(runner.run(&job, 1).await);
    runner.transfers.finish_cleanups().await;
    // THEN it is handed back for a later try, with nothing half-written
    assert_eq!(cause, RetryCause::Transient);
    assert!(reason.contains("InternalError"), "{reason}");
    assert!(store.keys("out").is_empty());
    assert_eq!(store.open_uploads(), 0);
    assert!(store.calls().iter().any(|c| c == "CreateMultipartUpload big.csv.out"), "the output spans several parts");
}

#[tokio::test]
async fn a_completion_event_that_cannot_be_put_is_put_on_the_next_try() {
    // GIVEN an event bus that refuses the next puts (more than a job's retries)
    let (store, runner, events) = setup();
    let job = upload(&store, "a.csv", iris());
    events.refuse(4);
    // WHEN the job runs, THEN the file is done but the message is kept for another try
    let outcome = runner.run(&job, 1).await;
    let JobOutcome::Retry { reason, .. } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("completion event could not be put"), "{reason}");
    assert!(store.object("out", "a.csv.out").is_some());
    // WHEN it is tried again, THEN the event is put, with the upload's event id
    let JobOutcome::Reported(_) = runner.run(&job, 2).await else { panic!("the second try reports") };
    assert_eq!(events.ids(), [job.event_id()]);
}
