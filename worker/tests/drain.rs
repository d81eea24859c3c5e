//! The drain loop against an in-memory queue with SQS's visibility rules, with jobs that take
//! scripted (virtual) time: what a worker holds, what it hands back and when, and how it stops.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use shared::report::{JobReport, JobStatus, ModelInfo, ReportOutputs, RowCounts};
use shared::{InputObject, JobMessage, OutputLocation};
use support::MemoryQueue;
use tokio::time::Instant;
use worker::drain::{DrainSettings, drain};
use worker::job::{JobHandler, JobOutcome, RetryCause};
use worker::shutdown::shutdown_channel;

fn settings() -> DrainSettings {
    DrainSettings {
        poll_wait: Duration::from_secs(1),
        empty_polls_before_exit: 2,
        visibility_timeout: Duration::from_secs(4),
        shutdown_grace: Duration::from_secs(5),
        retry_delay: Duration::from_secs(2),
        metrics_namespace: "sluice-test".into(),
    }
}

fn job(key: &str) -> String {
    JobMessage::new(
        InputObject { bucket: "in".into(), key: key.into(), size: 10, etag: "e".into(), version_id: None },
        OutputLocation { bucket: "out".into(), prefix: String::new(), reports: String::new() },
        "s3://models/m.onnx",
        Utc::now(),
    )
    .to_json()
}

fn report(job: &JobMessage, attempt: u32, worker: &str) -> JobOutcome {
    let now = Utc::now();
    JobOutcome::Reported(Box::new(JobReport {
        status: JobStatus::Succeeded,
        reason: None,
        input: job.input.clone(),
        outputs: ReportOutputs::default(),
        rows: RowCounts { input: 1, output: 1, bad: 0, truncated: 0 },
        model: ModelInfo { uri: job.model.to_string(), name: None, version: None, sha256: None },
        started_at: now,
        finished_at: now,
        duration_seconds: 0.0,
        worker_id: worker.into(),
        attempt,
        first_errors: vec![],
        split: None,
    }))
}

/// Jobs that take `duration` of virtual time each and succeed, except keys scripted to ask for
/// a retry on their first attempts. Records every run.
struct ScriptedJobs {
    worker: &'static str,
    duration: Duration,
    /// key -> attempts that end in a retry.
    retry_attempts: HashMap<String, Vec<u32>>,
    runs: Arc<Mutex<Vec<Run>>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Run {
    key: String,
    attempt: u32,
    worker: &'static str,
    at: Instant,
}

impl ScriptedJobs {
    fn new(worker: &'static str, duration: Duration, runs: &Arc<Mutex<Vec<Run>>>) -> Self {
        Self { worker, duration, retry_attempts: HashMap::new(), runs: Arc::clone(runs) }
    }
}

impl JobHandler for ScriptedJobs {
    async fn run(&self, job: &JobMessage, attempt: u32) -> JobOutcome {
        let run = Run { key: job.input.key.clone(), attempt, worker: self.worker, at: Instant::now() };
        self.runs.lock().unwrap().push(run);
        tokio::time::sleep(self.duration).await;
        if self.retry_attempts.get(&job.input.key).is_some_and(|a| a.contains(&attempt)) {
            return JobOutcome::Retry { cause: RetryCause::Transient, reason: "SlowDown".into() };
        }
        report(job, attempt, self.worker)
    }
}

#[tokio::test(start_paused = true)]
async fn two_workers_each_take_one_slow_job_at_a_time_and_none_runs_twice() {
    // GIVEN four jobs that each take 10 s, three times the queue's 4 s visibility timeout
    let queue = MemoryQueue::new(Duration::from_secs(4), 5);
    for key in ["a.csv", "b.csv", "c.csv", "d.csv"] {
        queue.send(job(key));
    }
    let runs = Arc::new(Mutex::new(Vec::new()));
    let (one, two) = (
        ScriptedJobs::new("one", Duration::from_secs(10), &runs),
        ScriptedJobs::new("two", Duration::from_secs(10), &runs),
    );
    // WHEN two workers drain the queue at once
    let (_t1, stop1) = shutdown_channel();
    let (_t2, stop2) = shutdown_channel();
    let settings = settings();
    let (first, second) = tokio::join!(drain(&queue, &one, &settings, stop1), drain(&queue, &two, &settings, stop2));
    let (first, second) = (first.unwrap(), second.unwrap());
    // THEN every job ran exactly once, on its first delivery, both workers working from the start
    let runs = runs.lock().unwrap().clone();
    let mut keys: Vec<&str> = runs.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a.csv", "b.csv", "c.csv", "d.csv"], "{runs:#?}");
    assert!(runs.iter().all(|r| r.attempt == 1), "{runs:#?}");
    assert_eq!((first.succeeded, second.succeeded), (2, 2));
    let started_by = |w| runs.iter().filter(|r| r.worker == w).map(|r| r.at).min().unwrap();
    assert_eq!(started_by("one"), started_by("two"), "no worker idles while work waits");
    // AND nothing is left or dead-lettered
    assert_eq!(queue.len(), 0);
    assert!(queue.dead_letters().is_empty());
}

#[tokio::test(start_paused = true)]
async fn messages_that_are_not_jobs_all_reach_the_dead_letter_queue_and_jobs_around_them_complete() {
    // GIVEN twelve messages that are not jobs of this version, among good jobs
    let queue = MemoryQueue::new(Duration::from_secs(4), 5);
    let mut bad = vec!["not json".to_owned(), "{}".to_owned(), "[1, 2]".to_owned(), "".to_owned()];
    let good: serde_json::Value = serde_json::from_str(&job("x.csv")).unwrap();
    for version in [0, 2, 99] {
        let mut message = good.clone();
        message["version"] = version.into();
        bad.push(message.to_string());
    }
    for field in ["input", "output", "model_uri", "event_time"] {
        let mut message = good.clone();
        message.as_object_mut().unwrap().remove(field);
        bad.push(message.to_string());
    }
    let mut message = good.clone();
    message["input"]["size"] = "big".into();
    bad.push(message.to_string());
    assert_eq!(bad.len(), 12);
    queue.send(job("first.csv"));
    for body in &bad {
        queue.send(body.clone());
    }
    queue.send(job("last.csv"));
    let runs = Arc::new(Mutex::new(Vec::new()));
    let jobs = ScriptedJobs::new("one", Duration::from_secs(3), &runs);
    // WHEN a worker drains the queue
    let (_trigger, shutdown) = shutdown_channel();
    let summary = drain(&queue, &jobs, &settings(), shutdown).await.unwrap();
    // THEN all twelve are in the dead-letter queue, none is stranded, and both jobs completed
    let mut dead = queue.dead_letters();
    dead.sort();
    bad.sort();
    assert_eq!(dead, bad);
    assert_eq!(queue.len(), 0, "nothing stranded");
    assert_eq!(summary.succeeded, 2);
    assert_eq!(summary.malformed, 12 * 5, "each received maxReceiveCount times");
}

#[tokio::test(start_paused = true)]
async fn a_job_to_retry_comes_back_after_a_short_growing_delay_not_the_visibility_timeout() {
    // GIVEN a job whose first two attempts fail for a passing reason, and a long visibility timeout
    let queue = MemoryQueue::new(Duration::from_secs(300), 5);
    queue.send(job("flaky.csv"));
    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut jobs = ScriptedJobs::new("one", Duration::from_secs(1), &runs);
    jobs.retry_attempts.insert("flaky.csv".into(), vec![1, 2]);
    let mut settings = settings();
    settings.empty_polls_before_exit = 20;
    // WHEN a worker drains the queue
    let (_trigger, shutdown) = shutdown_channel();
    let summary = drain(&queue, &jobs, &settings, shutdown).await.unwrap();
    // THEN the same worker retried it 2 s and then 4 s after each failure, and it succeeded
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    let gaps: Vec<u64> = runs.windows(2).map(|w| (w[1].at - w[0].at).as_secs()).collect();
    assert_eq!(gaps, [1 + 2, 1 + 4], "job time plus the retry delay");
    assert_eq!((summary.retried, summary.succeeded), (2, 1));
    assert_eq!(queue.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_keeps_a_long_job_hidden_from_other_workers() {
    // GIVEN one job that takes 30 s, with a 4 s visibility timeout
    let queue = MemoryQueue::new(Duration::from_secs(4), 5);
    queue.send(job("long.csv"));
    let runs = Arc::new(Mutex::new(Vec::new()));
    let busy = ScriptedJobs::new("busy", Duration::from_secs(30), &runs);
    let idle = ScriptedJobs::new("idle", Duration::from_secs(1), &runs);
    let mut patient = settings();
    patient.empty_polls_before_exit = 40;
    // WHEN a second worker polls the whole time
    let (_t1, stop1) = shutdown_channel();
    let (_t2, stop2) = shutdown_channel();
    let settings = settings();
    let (first, second) = tokio::join!(drain(&queue, &busy, &settings, stop1), drain(&queue, &idle, &patient, stop2));
    // THEN it never gets the job
    assert_eq!((first.unwrap().succeeded, second.unwrap().succeeded), (1, 0));
    assert_eq!(runs.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn on_a_stop_signal_the_job_in_hand_gets_the_grace_period_then_its_message_goes_back_at_once() {
    // GIVEN a job that takes a minute and a long visibility timeout
    let queue = MemoryQueue::new(Duration::from_secs(300), 5);
    queue.send(job("long.csv"));
    let runs = Arc::new(Mutex::new(Vec::new()));
    let jobs = ScriptedJobs::new("one", Duration::from_secs(60), &runs);
    let (trigger, shutdown) = shutdown_channel();
    // WHEN the worker is asked to stop 10 s into the job
    let stopper = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        trigger.trigger();
    };
    let started = Instant::now();
    let settings = settings();
    let (summary, ()) = tokio::join!(drain(&queue, &jobs, &settings, shutdown), stopper);
    // THEN it waits the 5 s grace, abandons the job and hands its message back visible at once
    let summary = summary.unwrap();
    assert!(summary.stopped_by_signal);
    assert_eq!(summary.abandoned, 1);
    assert_eq!(started.elapsed().as_secs(), 15);
    assert_eq!(queue.hidden(), 0, "visible again at once");
    assert_eq!(queue.len(), 1);
}
