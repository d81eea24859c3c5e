//! The handler against in-memory fakes of the queue and the fleet.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lambda_events::s3::S3Event;
use chrono::{DateTime, Utc};
use lambda_trigger::config::{Capacity, FleetSettings, JobSettings, Models};
use lambda_trigger::fleet::{FleetError, StoppedWorker, WorkerFleet};
use lambda_trigger::queue::{Backlog, FailedEntry, JobQueue, QueueError};
use lambda_trigger::{TriggerConfig, TriggerError, handle};
use serde_json::{Value, json};
use shared::JobMessage;
use shared::aws_error::AwsError;

const PUT_EVENT: &[u8] = include_bytes!("../fixtures/s3-put.json");
/// What an EventBridge schedule (the template's `Reconcile` event) sends.
const SCHEDULED_EVENT: &[u8] = include_bytes!("../fixtures/scheduled-event.json");

/// A queue that keeps what it is sent and can refuse entries for a while.
#[derive(Default)]
struct FakeQueue {
    sent: Mutex<Vec<JobMessage>>,
    /// How many of the sent jobs a worker has received and not yet finished.
    in_hand: Mutex<u64>,
    /// How many more times every entry of a batch is refused.
    refusals_left: Mutex<u32>,
    refuse_as_sender_fault: bool,
}

impl JobQueue for FakeQueue {
    async fn send_batch(&self, jobs: &[&JobMessage]) -> Result<Vec<FailedEntry>, QueueError> {
        assert!(jobs.len() <= 10, "SQS takes at most ten entries a batch");
        let mut refusals = self.refusals_left.lock().unwrap();
        if *refusals > 0 {
            *refusals -= 1;
            return Ok((0..jobs.len())
                .map(|index| FailedEntry {
                    index,
                    code: "ServiceUnavailable".into(),
                    message: "try later".into(),
                    sender_fault: self.refuse_as_sender_fault,
                })
                .collect());
        }
        self.sent.lock().unwrap().extend(jobs.iter().map(|j| (*j).clone()));
        Ok(vec![])
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let in_hand = *self.in_hand.lock().unwrap();
        Ok(Backlog { waiting: self.sent.lock().unwrap().len() as u64 - in_hand, in_hand })
    }
}

/// A fleet that honours client tokens the way ECS does: the same token starts one task.
#[derive(Default)]
struct FakeFleet {
    active: Mutex<Vec<String>>,
    by_token: Mutex<HashMap<String, String>>,
    /// Tasks that stopped, for the back-off.
    stopped: Mutex<Vec<StoppedWorker>>,
    /// RunTask fails (no capacity, throttled, a bad network setting).
    refuse_starts: bool,
}

impl WorkerFleet for FakeFleet {
    async fn active_workers(&self) -> Result<Vec<String>, FleetError> {
        Ok(self.active.lock().unwrap().clone())
    }

    async fn start_worker(&self, client_token: &str) -> Result<String, FleetError> {
        // Let concurrent invocations interleave between looking and starting.
        tokio::task::yield_now().await;
        if self.refuse_starts {
            return Err(FleetError::Request(AwsError::service(
                "ECS",
                "RunTask",
                "ThrottlingException",
                "Rate exceeded",
                400,
            )));
        }
        let mut by_token = self.by_token.lock().unwrap();
        let mut active = self.active.lock().unwrap();
        let arn = by_token
            .entry(client_token.to_owned())
            .or_insert_with(|| {
                let arn = format!("arn:aws:ecs:us-east-1:123456789012:task/sluice/{}", active.len() + 1);
                active.push(arn.clone());
                arn
            })
            .clone();
        Ok(arn)
    }

    async fn recent_stops(&self) -> Result<Vec<StoppedWorker>, FleetError> {
        Ok(self.stopped.lock().unwrap().clone())
    }
}

fn config(max_workers: usize) -> TriggerConfig {
    TriggerConfig {
        queue_url: "queue".into(),
        metrics_namespace: "sluice".into(),
        jobs: JobSettings {
            input_prefix: "incoming/".into(),
            output_bucket: "sluice-output".into(),
            output_prefix: String::new(),
            reports_prefix: String::new(),
            models: Models::File("s3://models/iris.onnx".into()),
            shard_bytes: 0,
        },
        fleet: FleetSettings {
            cluster: "sluice".into(),
            task_definition: "sluice-worker".into(),
            subnets: vec!["subnet-1".into()],
            security_groups: vec![],
            assign_public_ip: false,
            max_workers,
            capacity: Capacity::Fargate,
        },
    }
}

fn now() -> DateTime<Utc> {
    "2026-11-21T08:00:00Z".parse().unwrap()
}

/// The fixture's single record repeated under `keys`.
fn event_with_keys(keys: &[&str]) -> Value {
    let mut event: Value = serde_json::from_slice(PUT_EVENT).unwrap();
    let template = event["Records"][0].clone();
    event["Records"] = keys
        .iter()
        .map(|key| {
            let mut record = template.clone();
            record["s3"]["object"]["key"] = json!(key);
            record
        })
        .collect();
    event
}

#[test]
fn the_fixture_is_a_valid_s3_event_that_round_trips() {
    let event: S3Event = serde_json::from_slice(PUT_EVENT).unwrap();
    let again: S3Event = serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
    assert_eq!(again.records.len(), 1);
    assert_eq!(again.records[0].s3.object.key.as_deref(), Some("incoming/daily+batch%2B2/iris.csv"));
}

#[tokio::test]
async fn n_records_become_n_messages_and_start_workers() {
    // GIVEN an event with three uploads and no worker running
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    let event = event_with_keys(&["incoming/a.csv", "incoming/b.csv", "incoming/c.csv"]);
    // WHEN it is handled
    let summary = handle(event, &config(2), &queue, &fleet, now()).await.unwrap();
    // THEN each upload is one message and the wanted number of workers starts
    let sent = queue.sent.lock().unwrap();
    let keys: Vec<_> = sent.iter().map(|j| j.input.key.as_str()).collect();
    assert_eq!(keys, ["incoming/a.csv", "incoming/b.csv", "incoming/c.csv"]);
    assert_eq!(summary.workers.started.len(), 2, "three jobs, at most two workers");
    assert_eq!(fleet.active.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_fixture_key_is_decoded_into_the_message() {
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    handle(serde_json::from_slice(PUT_EVENT).unwrap(), &config(1), &queue, &fleet, now()).await.unwrap();
    let sent = queue.sent.lock().unwrap();
    assert_eq!(sent[0].input.key, "incoming/daily batch+2/iris.csv");
    assert_eq!(sent[0].input.version_id.as_deref(), Some("096fKKXTRTtl3on89fVO.nfljtsv6qko"));
    assert_eq!(sent[0].input.size, 2945);
}

#[tokio::test]
async fn a_running_worker_means_no_new_task() {
    // GIVEN a worker already running
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    fleet.active.lock().unwrap().push("arn:aws:ecs:us-east-1:123456789012:task/sluice/running".into());
    // WHEN one upload arrives and at most one worker is wanted
    let summary = handle(event_with_keys(&["incoming/a.csv"]), &config(1), &queue, &fleet, now()).await.unwrap();
    // THEN the job is queued for it and nothing starts
    assert_eq!(queue.sent.lock().unwrap().len(), 1);
    assert!(summary.workers.started.is_empty());
    assert_eq!(fleet.active.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn duplicate_deliveries_give_one_message_each_and_no_task_storm() {
    // GIVEN the same event delivered to four concurrent invocations
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    let event = event_with_keys(&["incoming/a.csv"]);
    let cfg = config(1);
    // WHEN they all run at once
    let results = tokio::join!(
        handle(event.clone(), &cfg, &queue, &fleet, now()),
        handle(event.clone(), &cfg, &queue, &fleet, now()),
        handle(event.clone(), &cfg, &queue, &fleet, now()),
        handle(event.clone(), &cfg, &queue, &fleet, now()),
    );
    for result in [results.0, results.1, results.2, results.3] {
        result.unwrap();
    }
    // THEN each delivery is one message (duplicates are harmless downstream) and one worker runs
    assert_eq!(queue.sent.lock().unwrap().len(), 4);
    assert_eq!(fleet.active.lock().unwrap().len(), 1, "same view, same minute: same client token");
}

#[tokio::test]
async fn test_events_and_non_jobs_enqueue_nothing_and_start_nothing() {
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-21T08:00:00.000Z",
                            "Bucket": "sluice-input", "RequestId": "R", "HostId": "H"});
    handle(test_event, &config(1), &queue, &fleet, now()).await.unwrap();
    let summary =
        handle(event_with_keys(&["incoming/folder/", "other/a.csv"]), &config(1), &queue, &fleet, now()).await.unwrap();
    assert_eq!(summary.skipped.len(), 2);
    assert!(queue.sent.lock().unwrap().is_empty());
    assert!(fleet.active.lock().unwrap().is_empty());
}

#[tokio::test]
async fn more_than_ten_jobs_go_in_batches_of_ten() {
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    let keys: Vec<String> = (0..23).map(|i| format!("incoming/{i}.csv")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    handle(event_with_keys(&keys), &config(1), &queue, &fleet, now()).await.unwrap();
    assert_eq!(queue.sent.lock().unwrap().len(), 23);
}

#[tokio::test]
async fn refused_entries_are_retried() {
    let queue = FakeQueue { refusals_left: Mutex::new(2), ..FakeQueue::default() };
    let fleet = FakeFleet::default();
    handle(event_with_keys(&["incoming/a.csv", "incoming/b.csv"]), &config(1), &queue, &fleet, now()).await.unwrap();
    assert_eq!(queue.sent.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn entries_refused_for_the_senders_fault_are_a_permanent_error() {
    let queue = FakeQueue { refusals_left: Mutex::new(1), refuse_as_sender_fault: true, ..FakeQueue::default() };
    let err = handle(event_with_keys(&["incoming/a.csv"]), &config(1), &queue, &FakeFleet::default(), now())
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_bad_record_beside_good_ones_is_reported_and_the_invocation_succeeds() {
    // GIVEN one good record and one whose key is not UTF-8
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    let event = event_with_keys(&["incoming/good.csv", "incoming/bad%FF.csv"]);
    // WHEN handled
    let summary = handle(event, &config(1), &queue, &fleet, now()).await.unwrap();
    // THEN the good one is queued once and a worker starts: Lambda has no reason to retry the
    // event and enqueue it again
    assert_eq!(queue.sent.lock().unwrap().len(), 1);
    assert_eq!(fleet.active.lock().unwrap().len(), 1);
    // AND the bad one is named, and counted in the metric the alarm watches
    assert_eq!(summary.bad_records.len(), 1);
    assert!(summary.bad_records[0].starts_with("record 1:"), "{:?}", summary.bad_records);
    let record = lambda_trigger::metrics::invocation_record("sluice", &Ok(summary)).unwrap().to_json();
    assert_eq!(record["BadRecords"], 1.0, "{record}");
}

#[tokio::test]
async fn a_big_file_is_enqueued_as_shards_that_wake_up_to_max_workers() {
    // GIVEN splitting at 1000 bytes, and a 2945-byte upload (the fixture's size)
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    let mut config = config(3);
    config.jobs.shard_bytes = 1000;
    // WHEN handled
    let summary = handle(event_with_keys(&["incoming/big.csv"]), &config, &queue, &fleet, now()).await.unwrap();
    // THEN one file is three shard messages, and the fleet grows to its maximum for them
    assert_eq!(summary.jobs.len(), 1);
    assert_eq!(summary.messages, 3);
    let sent = queue.sent.lock().unwrap().clone();
    let shards: Vec<_> = sent.iter().map(|job| job.shard().unwrap()).collect();
    assert_eq!(shards.iter().map(|s| (s.start, s.end)).collect::<Vec<_>>(), [(0, 1000), (1000, 2000), (2000, 2945)]);
    assert_eq!(fleet.active.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn malformed_events_are_a_clear_permanent_error() {
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    for event in [json!({"hello": "world"}), json!([1, 2]), json!("text")] {
        let err = handle(event, &config(1), &queue, &fleet, now()).await.unwrap_err();
        assert!(matches!(err, TriggerError::UnrecognisedEvent(_)), "{err}");
    }
    // A record that is not an S3 record at all is reported, not retried.
    let summary = handle(json!({"Records": [{"eventName": 5}]}), &config(1), &queue, &fleet, now()).await.unwrap();
    assert!(summary.bad_records[0].contains("not an S3 event record"), "{:?}", summary.bad_records);
}

#[tokio::test]
async fn a_scheduled_event_starts_a_worker_for_waiting_jobs() {
    // GIVEN jobs waiting from earlier and no worker (say RunTask failed back then)
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    handle(event_with_keys(&["incoming/a.csv"]), &config(1), &queue, &fleet, now()).await.unwrap();
    fleet.active.lock().unwrap().clear();
    // WHEN the schedule fires
    let scheduled: Value = serde_json::from_slice(SCHEDULED_EVENT).unwrap();
    let summary = handle(scheduled, &config(1), &queue, &fleet, now() + chrono::Duration::minutes(5)).await.unwrap();
    // THEN a worker starts
    assert_eq!(summary.workers.started.len(), 1);
}

#[tokio::test]
async fn a_failed_worker_start_after_the_jobs_are_queued_does_not_fail_the_invocation() {
    // GIVEN ECS refuses to start tasks
    let queue = FakeQueue::default();
    let fleet = FakeFleet { refuse_starts: true, ..FakeFleet::default() };
    // WHEN two uploads arrive
    let summary = handle(event_with_keys(&["incoming/a.csv", "incoming/b.csv"]), &config(2), &queue, &fleet, now())
        .await
        .unwrap();
    // THEN the invocation succeeds (so Lambda does not retry it and enqueue the jobs again),
    // each job is queued once, and the summary says why no worker started
    assert_eq!(queue.sent.lock().unwrap().len(), 2);
    let error = summary.worker_start_error.expect("the failed start is reported");
    assert!(error.contains("ThrottlingException: Rate exceeded"), "{error}");
    assert!(summary.workers.started.is_empty());
}

#[tokio::test]
async fn a_failed_worker_start_fails_a_scheduled_reconciliation() {
    // GIVEN a job waiting and ECS refusing to start tasks
    let queue = FakeQueue::default();
    handle(event_with_keys(&["incoming/a.csv"]), &config(1), &queue, &FakeFleet::default(), now()).await.unwrap();
    let fleet = FakeFleet { refuse_starts: true, ..FakeFleet::default() };
    // WHEN the schedule fires, with nothing enqueued that a retry could duplicate
    let scheduled: Value = serde_json::from_slice(SCHEDULED_EVENT).unwrap();
    let err = handle(scheduled, &config(1), &queue, &fleet, now()).await.unwrap_err();
    // THEN the error is retryable and names the service's error code
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("ECS RunTask failed: ThrottlingException"), "{err}");
}

#[tokio::test]
async fn a_busy_worker_is_not_counted_as_free() {
    // GIVEN one worker busy with a long file (its job is in hand), and at most two workers
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    handle(event_with_keys(&["incoming/long.csv"]), &config(2), &queue, &fleet, now()).await.unwrap();
    assert_eq!(fleet.active.lock().unwrap().len(), 1);
    *queue.in_hand.lock().unwrap() = 1;
    // WHEN a second file arrives
    let summary = handle(event_with_keys(&["incoming/short.csv"]), &config(2), &queue, &fleet, now()).await.unwrap();
    // THEN a second worker starts for it instead of waiting for the first to finish
    assert_eq!(summary.workers.backlog, Backlog { waiting: 1, in_hand: 1 });
    assert_eq!(summary.workers.wanted, 2);
    assert_eq!(summary.workers.started.len(), 1);
    assert_eq!(fleet.active.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_job_in_hand_of_a_lone_busy_worker_starts_nothing() {
    // GIVEN a worker busy with the only job
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    handle(event_with_keys(&["incoming/long.csv"]), &config(2), &queue, &fleet, now()).await.unwrap();
    *queue.in_hand.lock().unwrap() = 1;
    // WHEN the schedule fires
    let scheduled: Value = serde_json::from_slice(SCHEDULED_EVENT).unwrap();
    let summary = handle(scheduled, &config(2), &queue, &fleet, now()).await.unwrap();
    // THEN that worker is enough
    assert!(summary.workers.started.is_empty());
    assert_eq!(fleet.active.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn workers_that_keep_failing_are_not_started_again_until_the_pause_is_over() {
    // GIVEN the last two workers stopped with exit code 1 (a bad setting), the newest a minute ago
    let (queue, fleet) = (FakeQueue::default(), FakeFleet::default());
    *fleet.stopped.lock().unwrap() = [1, 4]
        .iter()
        .map(|&minutes| StoppedWorker {
            task: format!("arn:aws:ecs:us-east-1:123456789012:task/sluice/failed-{minutes}"),
            stopped_at: now() - chrono::Duration::minutes(minutes),
            failure: Some("exited with code 1: environment variable BATCH_SIZE is \"lots\"".into()),
        })
        .collect();
    // WHEN a file arrives
    let summary = handle(event_with_keys(&["incoming/a.csv"]), &config(2), &queue, &fleet, now()).await.unwrap();
    // THEN it is queued, and no worker starts: two failures in a row pause starts for 2 minutes
    assert_eq!(queue.sent.lock().unwrap().len(), 1);
    assert!(summary.workers.started.is_empty());
    let backoff = summary.workers.backing_off.expect("held back");
    assert_eq!(backoff.failures_in_a_row, 2);
    assert_eq!(backoff.until, now() + chrono::Duration::minutes(1));
    assert!(backoff.last_failure.contains("BATCH_SIZE"), "{backoff:?}");
    // AND once the pause is over the schedule starts one
    let scheduled: Value = serde_json::from_slice(SCHEDULED_EVENT).unwrap();
    let later = now() + chrono::Duration::minutes(2);
    let summary = handle(scheduled, &config(2), &queue, &fleet, later).await.unwrap();
    assert_eq!(summary.workers.started.len(), 1);
}
