//! Who may do what, end to end: every program runs against moto with IAM enforced, holding only
//! its template.yaml role's policy (sluice_local::iam), so these tests and every other end-to-end
//! test prove the template grants what the code needs. Here: a statement taken away fails with
//! an AccessDenied that names the action; a versioned input is read by its version; the online
//! server reads the S3 repository with its own role and answers only callers with a key; and no
//! log holds a credential or a key.

use std::process::Stdio;
use std::time::Duration;

use shared::JobStatus;
use shared::report::SplitReport;
use sluice_e2e::*;
use sluice_local::events::s3_object_created_event;
use sluice_local::iam::{Program, Revoked};
use sluice_local::{AsyncOutcome, LocalModels, PipelineOptions};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(90);

fn revoking(program: Program, sid: &str) -> PipelineOptions {
    let mut options = quick_options();
    options.revoked = vec![Revoked { program, sid: sid.to_owned() }];
    options
}

#[tokio::test]
async fn a_trigger_without_its_queue_statement_fails_with_access_denied_naming_the_action() {
    // GIVEN the trigger's role without EnqueueJobs (sqs:SendMessage on the job queue)
    let pipeline = start(revoking(Program::Trigger, "EnqueueJobs")).await;
    pipeline.put_input("a.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    // WHEN S3 invokes it for an upload
    let invocation = deliver(&pipeline, "a.csv").await.unwrap();
    // THEN every attempt fails with AWS's code and the action refused, and the event is kept
    let AsyncOutcome::SentToDeadLetterQueue { error, .. } = &invocation.outcome else {
        panic!("the event is in the trigger's dead-letter queue: {invocation:?}")
    };
    let message = format!("{error:?}");
    assert!(message.contains("AccessDenied") && message.contains("sqs:SendMessage"), "{message}");
    assert_eq!(pipeline.dead_lettered_events().await.unwrap(), 1, "sent with the trigger's own role");
    assert_eq!(pipeline.fargate().started_count(), 0);
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_worker_that_may_not_read_inputs_leaves_the_job_to_the_dead_letter_queue_naming_the_action() {
    // GIVEN the worker's role without ReadInputs, and jobs that go to the dead-letter queue soon
    let mut options = revoking(Program::Worker, "ReadInputs");
    options.stack.max_receive_count = 2;
    let pipeline = start(options).await;
    pipeline.put_input("a.csv", std::fs::read(repo("examples/data/iris.csv")).unwrap()).await.unwrap();
    // WHEN the job is delivered
    assert!(deliver(&pipeline, "a.csv").await.unwrap().succeeded());
    // THEN it is the operator's to fix: no report, the message ends in the dead-letter queue
    eventually(WAIT, "the job is in the dead-letter queue", || async {
        pipeline.dead_lettered_jobs().await.unwrap() == 1
    })
    .await;
    assert_eq!(object(&pipeline, "a.csv.report.json").await, None, "no failed report for a permission");
    // AND the worker's log says which action on which object was refused
    let output = worker_output(&pipeline);
    assert!(output.contains("AccessDenied") && output.contains("s3:GetObject"), "{output}");
    assert!(output.contains("arn:aws:s3:::sluice-input/a.csv"), "{output}");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn a_job_of_a_versioned_input_reads_the_version_its_event_names() {
    // GIVEN an input bucket with versioning, as users turn it on for their own buckets
    let pipeline = start(quick_options()).await;
    let bucket = pipeline.stack.input_bucket.clone();
    let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .build();
    pipeline.s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(versioning).send().await.unwrap();
    let iris = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    let put = pipeline.s3.put_object().bucket(&bucket).key("v.csv").body(iris.clone().into()).send().await.unwrap();
    // WHEN S3's event names the object's version
    let version = put.version_id().unwrap().to_owned();
    let etag = put.e_tag().unwrap().trim_matches('"').to_owned();
    let event =
        s3_object_created_event(&bucket, "v.csv", iris.len() as u64, &etag, Some(&version), "ObjectCreated:Put");
    assert!(invoke(&pipeline, event).await.unwrap().succeeded());
    // THEN the worker reads that version (s3:GetObjectVersion, which the role grants) and
    // predicts its 150 rows
    eventually(WAIT, "the report of v.csv", || async { object(&pipeline, "v.csv.report.json").await.is_some() }).await;
    let report = report(&pipeline, "v.csv").await;
    assert_eq!(report.status, JobStatus::Succeeded, "{report:?}");
    assert_eq!(report.input.version_id.as_deref(), Some(version.as_str()));
    assert_eq!(report.rows.output, 150);
    pipeline.shutdown().await;
}

const API_KEY: &str = "online-test-key-0123456789";

/// Runs `curl ARGS` against the server and returns (status, body).
async fn curl(port: u16, args: &[&str], path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn the_online_server_reads_the_s3_repository_with_its_role_and_answers_only_callers_with_a_key() {
    // GIVEN the example repository in the model bucket, and worker serve with the online role's
    // key and the environment of the template's online task
    let mut options = quick_options();
    options.models = LocalModels::Repository { folder: repo("models/repository"), default: Some("iris".into()) };
    let pipeline = start(options).await;
    let port = sluice_local::moto::free_port().unwrap();
    let mut env = sluice_local::aws::moto_env(&pipeline.endpoint());
    env.extend(sluice_local::aws::credentials_env(pipeline.stack.credentials_of(Program::Online).unwrap()));
    let log = std::env::temp_dir().join(format!("sluice-online-{}.log", std::process::id()));
    let mut server = Command::new(sluice_local::binaries::workspace_binary("worker").unwrap())
        .args(["serve", "--port", &port.to_string(), "--grpc-port", "0"])
        .env_clear()
        .envs(env)
        .env("MODEL_REPOSITORY", &pipeline.model_uri)
        .env("API_KEYS", API_KEY)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(WAIT, "the server has loaded every model", || async {
        curl(port, &[], "/v2/health/ready").await.0 == 200
    })
    .await;
    let predict = ["-X", "POST", "-d", r#"{"instances": [1.0, 2.0, 5.0]}"#];
    let path = "/v1/models/half_plus_two:predict";
    // THEN health is open; without a key, or with a wrong one, nothing else answers
    assert_eq!(curl(port, &[], "/ping").await.0, 200);
    let (status, body) = curl(port, &predict, path).await;
    assert_eq!((status, body.contains("needs an API key")), (401, true), "{body}");
    assert_eq!(
        curl(port, &[&predict[..], &["-H", "x-api-key: online-test-key-012345678X"]].concat(), path).await.0,
        401
    );
    assert_eq!(curl(port, &[], "/metrics").await.0, 401, "metrics need a key too");
    assert_eq!(curl(port, &[], "/v2/models/iris").await.0, 401, "so does metadata");
    // AND with the key, as Bearer or x-api-key, the models answer
    let bearer = format!("Authorization: Bearer {API_KEY}");
    let (status, body) = curl(port, &[&predict[..], &["-H", &bearer]].concat(), path).await;
    assert_eq!((status, body.as_str()), (200, r#"{"predictions":[2.5,3.0,4.5]}"#));
    let header = format!("x-api-key: {API_KEY}");
    assert_eq!(curl(port, &[&predict[..], &["-H", &header]].concat(), path).await.0, 200);
    // AND the repository API is off, whatever the key
    let unload = ["-X", "POST", "-H", &bearer];
    let (status, body) = curl(port, &unload, "/v2/repository/models/iris/unload").await;
    assert_eq!((status, body.contains("repository API")), (403, true), "{body}");
    // AND the refusals are counted
    let (_, metrics) = curl(port, &["-H", &bearer], "/metrics").await;
    assert!(
        metrics.contains(r#"sluice_unauthorized_requests_total{protocol="tfserving",reason="no_key"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reason="wrong_key"} 1"#), "{metrics}");
    // AND the server's log, at debug, holds neither the key nor the role's secret
    server.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert!(text.contains("serving"), "{text}");
    let secret = &pipeline.stack.credentials_of(Program::Online).unwrap().secret_access_key;
    assert!(!text.contains(API_KEY) && !text.contains(secret.as_str()), "a key in the log:\n{text}");
    pipeline.shutdown().await;
}

#[tokio::test]
async fn no_log_holds_a_credential_a_signature_or_a_key() {
    // GIVEN a pipeline logging at debug, a file with a bad row and a big file in shards
    let mut options = quick_options();
    options.trigger_rust_log = "debug".to_owned();
    options.stack.worker.rust_log = "debug".to_owned();
    options.shard_bytes = 64 * 1024;
    let mut pipeline = start(options).await;
    let mut csv = std::fs::read_to_string(repo("examples/data/iris.csv")).unwrap();
    csv.push_str("999,not,a,number,here\n");
    pipeline.put_input("bad-row.csv", csv).await.unwrap();
    pipeline.put_input("big.csv", iris_like_csv(20_000)).await.unwrap();
    // WHEN both are processed
    let drained = pipeline.wait_until_drained(Duration::from_secs(240)).await.unwrap();
    assert_eq!(report(&pipeline, "bad-row.csv").await.rows.bad, 1);
    let split = report(&pipeline, "big.csv").await.split;
    assert!(matches!(split, Some(SplitReport::Shards { .. })), "the big file ran in shards: {split:?}");
    assert!(drained.workers_started >= 1);
    // THEN neither the trigger's nor any worker's output holds a secret key, a signature or a
    // presigned URL
    let logs = format!("{}\n{}", pipeline.trigger().output(), worker_output(&pipeline));
    assert!(logs.lines().count() > 20, "the logs were captured:\n{logs}");
    for (program, key) in &pipeline.stack.credentials {
        assert!(!logs.contains(key.secret_access_key.as_str()), "{program}'s secret key is in the logs");
    }
    for leak in ["X-Amz-Signature", "X-Amz-Credential", "Signature=", "x-amz-security-token", "AWS_SECRET_ACCESS_KEY"] {
        assert!(!logs.contains(leak), "{leak} is in the logs:\n{}", lines_with(&logs, leak));
    }
    pipeline.shutdown().await;
}

fn lines_with(text: &str, needle: &str) -> String {
    text.lines().filter(|l| l.contains(needle)).take(5).collect::<Vec<_>>().join("\n")
}
