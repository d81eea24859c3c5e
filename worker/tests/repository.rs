//! The model repository: which model a job runs (by the key's folder, its pinned or latest
//! version, the default), what the report says about it, a broken model beside good ones, and
//! the cache of loaded models under a memory budget.

mod support;

use std::time::Duration;

use chrono::Utc;
use shared::{InputObject, JobMessage, JobReport, JobStatus, ModelRequest, ModelSource, OutputLocation};
use support::{MemoryStore, RecordedEvents, repo};
use worker::engine::{CsvOptions, TransformOptions};
use worker::job::{JobHandler, JobOutcome, JobRunner, JobSettings, RetryCause};
use worker::models::{MEMORY_PER_FILE_BYTE, ModelCache, ModelFiles};
use worker::repository::{ModelRepository, ResolveError};
use worker::retry::Backoff;
use worker::transfer::Transfers;

const ROOT: &str = "s3://models/repo/";

fn model_bytes(file: &str) -> Vec<u8> {
    std::fs::read(repo(&format!("models/{file}"))).unwrap()
}

/// Puts a model version into the repository, with its sidecar when the example has one.
fn publish(store: &MemoryStore, name: &str, version: u64, file: &str) {
    store.put_object("models", &format!("repo/{name}/{version}/model.onnx"), model_bytes(file));
    if let Ok(sidecar) = std::fs::read(repo(&format!("models/{file}.json"))) {
        store.put_object("models", &format!("repo/{name}/{version}/model.onnx.json"), sidecar);
    }
}

/// A store with iris at versions 1 (logistic regression) and 2 (MLP) and half_plus_two at 1.
fn setup(budget: u64) -> (MemoryStore, JobRunner<MemoryStore, RecordedEvents>) {
    let store = MemoryStore::with_buckets(&["in", "out", "models"]);
    publish(&store, "iris", 1, "iris_logreg.onnx");
    publish(&store, "iris", 2, "iris_mlp.onnx");
    publish(&store, "half_plus_two", 1, "half_plus_two.onnx");
    let quick = Backoff { attempts: 3, first: Duration::from_millis(5), max: Duration::from_millis(20) };
    let transfers = Transfers::with_retry(store.clone(), quick);
    let runner = JobRunner {
        models: ModelCache::new(transfers.clone(), budget),
        transfers,
        events: RecordedEvents::default(),
        settings: JobSettings {
            transform: TransformOptions { batch_size: 64, max_bad_row_ratio: 0.1, threads: 1, ..Default::default() },
            csv: CsvOptions { has_header: true, delimiter: b',' },
            max_input_bytes: 1 << 30,
            metrics_namespace: "sluice-test".into(),
            announcement_timeout: Duration::from_secs(30),
        },
        worker_id: "worker-1".into(),
    };
    (store, runner)
}

/// Uploads `data` as `key` and returns its job, routed by the key with `default`.
fn upload(store: &MemoryStore, key: &str, data: Vec<u8>, default: Option<&str>) -> JobMessage {
    let size = data.len() as u64;
    let etag = store.put_object("in", key, data);
    let model = ModelSource::Repository {
        root: ROOT.into(),
        requested: ModelRequest::from_key(key, ""),
        default: default.map(|d| ModelRequest::parse(d).unwrap()),
    };
    JobMessage::new(
        InputObject { bucket: "in".into(), key: key.into(), size, etag, version_id: None },
        OutputLocation { bucket: "out".into(), prefix: String::new(), reports: String::new() },
        model,
        Utc::now(),
    )
}

fn iris() -> Vec<u8> {
    std::fs::read(repo("examples/data/iris.csv")).unwrap()
}

async fn report_of(runner: &JobRunner<MemoryStore, RecordedEvents>, job: &JobMessage) -> JobReport {
    match runner.run(job, 1).await {
        JobOutcome::Reported(report) => *report,
        other => panic!("expected a report, got {other:?}"),
    }
}

#[tokio::test]
async fn the_first_folder_names_the_model_at_its_latest_or_pinned_version() {
    let (store, runner) = setup(1 << 30);
    // GIVEN files under iris/, iris@1/ and half_plus_two/
    let latest = report_of(&runner, &upload(&store, "iris/a.csv", iris(), None)).await;
    let pinned = report_of(&runner, &upload(&store, "iris@1/a.csv", iris(), None)).await;
    let half = report_of(&runner, &upload(&store, "half_plus_two/x.csv", b"x\n1.0\n2.0\n5.0\n".to_vec(), None)).await;
    // THEN each ran its model, and the report names it exactly: name, version, file, SHA-256
    assert_eq!((latest.model.name.as_deref(), latest.model.version), (Some("iris"), Some(2)));
    assert_eq!(latest.model.uri, "s3://models/repo/iris/2/model.onnx");
    assert_eq!((pinned.model.name.as_deref(), pinned.model.version), (Some("iris"), Some(1)));
    assert_ne!(latest.model.sha256, pinned.model.sha256);
    assert_eq!((half.model.name.as_deref(), half.model.version), (Some("half_plus_two"), Some(1)));
    let out = String::from_utf8(store.object("out", "half_plus_two/x.csv.out").unwrap().to_vec()).unwrap();
    assert_eq!(out, "y\n2.5\n3.0\n4.5\n");
    // AND the MLP (iris v2) and the logistic regression (v1) gave their own probabilities
    let v2 = store.object("out", "iris/a.csv.out").unwrap();
    let v1 = store.object("out", "iris@1/a.csv.out").unwrap();
    assert_ne!(v1, v2);
    assert!(v1.starts_with(b"id,label,probabilities_setosa"));
}

#[tokio::test]
async fn a_key_that_names_no_model_uses_the_default_or_fails_listing_the_models() {
    let (store, runner) = setup(1 << 30);
    // WITH a default, a file at the root or under a folder that is no model runs the default
    for key in ["a.csv", "daily/a.csv", "not a model/a.csv"] {
        let report = report_of(&runner, &upload(&store, key, iris(), Some("iris@1"))).await;
        assert_eq!(report.status, JobStatus::Succeeded, "{key}");
        assert_eq!((report.model.name.as_deref(), report.model.version), (Some("iris"), Some(1)), "{key}");
    }
    // WITHOUT one, the report fails with the models the repository has
    let report = report_of(&runner, &upload(&store, "daily/b.csv", iris(), None)).await;
    assert_eq!(report.status, JobStatus::Failed);
    let reason = report.reason.unwrap();
    assert!(reason.contains("daily names no model"), "{reason}");
    assert!(reason.contains("half_plus_two (version 1), iris (versions 1, 2)"), "{reason}");
    // AND a version the model does not have is the input's fault too
    let report = report_of(&runner, &upload(&store, "iris@9/a.csv", iris(), Some("iris"))).await;
    assert_eq!(report.status, JobStatus::Failed);
    assert!(report.reason.unwrap().contains("model iris has no version 9; it has 1, 2"));
}

#[tokio::test]
async fn a_default_model_that_is_not_there_is_for_the_operator() {
    let (store, runner) = setup(1 << 30);
    let outcome = runner.run(&upload(&store, "a.csv", iris(), Some("irises")), 1).await;
    let JobOutcome::Retry { cause, reason } = outcome else { panic!("{outcome:?}") };
    assert_eq!(cause, RetryCause::Operator);
    assert!(reason.contains("the default model irises is not in the repository"), "{reason}");
}

#[tokio::test]
async fn a_new_version_uploaded_between_two_files_is_used_by_the_second() {
    let (store, runner) = setup(1 << 30);
    let first = report_of(&runner, &upload(&store, "iris/1.csv", iris(), None)).await;
    // WHEN version 3 lands (the forest), with nothing restarted
    publish(&store, "iris", 3, "iris_forest.onnx");
    let second = report_of(&runner, &upload(&store, "iris/2.csv", iris(), None)).await;
    // THEN the first file's report says 2, the second's 3, each with its file's SHA-256
    assert_eq!((first.model.version, second.model.version), (Some(2), Some(3)));
    assert_ne!(first.model.sha256, second.model.sha256);
    // AND a file replaced in place is loaded again
    publish(&store, "iris", 3, "iris_logreg.onnx");
    let third = report_of(&runner, &upload(&store, "iris/3.csv", iris(), None)).await;
    assert_eq!(third.model.version, Some(3));
    assert_eq!(third.model.sha256, first_sha_of(&store, "iris", 3));
}

fn first_sha_of(store: &MemoryStore, name: &str, version: u64) -> Option<String> {
    use sha2::Digest;
    let bytes = store.object("models", &format!("repo/{name}/{version}/model.onnx")).unwrap();
    Some(hex::encode(sha2::Sha256::digest(&bytes)))
}

#[tokio::test]
async fn a_broken_model_is_reported_and_the_others_keep_working() {
    let (store, runner) = setup(1 << 30);
    store.put_object("models", "repo/broken/1/model.onnx", "not an ONNX file");
    store.put_object("models", "repo/badconfig/1/model.onnx", model_bytes("iris_logreg.onnx"));
    store.put_object("models", "repo/badconfig/1/model.onnx.json", r#"{"features": 3}"#);
    for (key, expected) in
        [("broken/a.csv", "not a valid ONNX file"), ("badconfig/a.csv", "configuration is not valid")]
    {
        let outcome = runner.run(&upload(&store, key, iris(), None), 1).await;
        let JobOutcome::Retry { cause, reason } = outcome else { panic!("{outcome:?}") };
        assert_eq!(cause, RetryCause::Operator, "{key}");
        assert!(reason.contains(expected) && reason.contains("repo/"), "{key}: {reason}");
    }
    let report = report_of(&runner, &upload(&store, "iris/a.csv", iris(), None)).await;
    assert_eq!(report.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn the_cache_keeps_models_within_its_budget_least_recently_used_out() {
    // GIVEN a budget that holds the MLP and the logistic regression but not also half_plus_two
    let (store, runner) = setup(0);
    let size = |file| model_bytes(file).len() as u64 * MEMORY_PER_FILE_BYTE;
    let budget = size("iris_mlp.onnx") + size("iris_logreg.onnx");
    let cache = ModelCache::new(runner.transfers.clone(), budget);
    let (v1, v2, half) = (
        "s3://models/repo/iris/1/model.onnx",
        "s3://models/repo/iris/2/model.onnx",
        "s3://models/repo/half_plus_two/1/model.onnx",
    );
    let loads = |uri: &str| {
        let key = uri.trim_start_matches("s3://models/");
        store.calls().iter().filter(|c| **c == format!("GetObject {key}")).count()
    };
    // WHEN jobs alternate between the two iris versions, then use half_plus_two, then v2 again
    for uri in [v1, v2, v1, v2] {
        cache.get(uri).await.unwrap();
    }
    assert_eq!((loads(v1), loads(v2)), (1, 1), "both fit: each loaded once");
    cache.get(half).await.unwrap();
    // THEN the least recently used (v1) was unloaded to make room, and v2 is still there
    assert_eq!(cache.cached().await, [half, v2]);
    cache.get(v2).await.unwrap();
    assert_eq!(loads(v2), 1);
    cache.get(v1).await.unwrap();
    assert_eq!(loads(v1), 2, "loaded again after its eviction");
    // AND a model larger than the budget is still served (it alone stays)
    let tiny = ModelCache::new(runner.transfers.clone(), 1);
    tiny.get(v2).await.unwrap();
    tiny.get(v1).await.unwrap();
    assert_eq!(tiny.cached().await, [v1]);
}

#[tokio::test]
async fn a_local_folder_is_a_repository_too() {
    let files: ModelFiles<MemoryStore> = ModelFiles::new(None);
    let root = repo("models/repository").display().to_string();
    let repository = ModelRepository::new(&files, &root).unwrap();
    let catalog = repository.catalog(None).await.unwrap();
    assert!(catalog["iris"].len() >= 2 && catalog.contains_key("half_plus_two"), "{catalog:?}");
    let resolved = repository.resolve(Some(&ModelRequest::latest("half_plus_two")), None).await.unwrap();
    assert_eq!(resolved.version, Some(1));
    assert!(resolved.uri.ends_with("half_plus_two/1/model.onnx"));
    let missing = repository.resolve(Some(&ModelRequest::latest("nope")), None).await.unwrap_err();
    assert!(matches!(missing, ResolveError::NoModel { .. }), "{missing}");
    assert!(ModelRepository::new(&files, "s3:///x").is_err());
}
