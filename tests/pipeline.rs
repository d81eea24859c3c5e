//! End to end: the real `lambda-trigger` and `worker` binaries against moto, through the local
//! Lambda Runtime API and Fargate emulators (see `local/`).

use std::time::Duration;

use serde_json::Value;
use shared::JobStatus;
use sluice_e2e::*;
use sluice_local::iam::Program;
use sluice_local::{LocalModels, PipelineOptions, Signal};

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
        .envs(sluice_local::aws::credentials_env(pipeline.stack.credentials_of(Program::Worker).unwrap()))
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

/// The rows of a reference output, by id: (label, values).
fn reference(model: &str) -> Vec<Vec<String>> {
    csv_rows(&std::fs::read(repo(&format!("models/reference/{model}.csv"))).unwrap())
}

/// Whether `got` (an output's rows) matches onnxruntime's `want`: labels exactly (by class name
/// for iris), values within 1e-5.
fn assert_matches_reference(got: &[Vec<String>], want: &[Vec<String>], what: &str) {
    let classes = ["setosa", "versicolor", "virginica"];
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        for (col, (a, b)) in g.iter().zip(w).enumerate() {
            match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(a), Ok(b)) if col > 1 || w.len() == 2 => {
                    assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{what} id {} column {col}: {a} vs {b}", w[0])
                }
                _ if col == 1 && w.len() == 5 => {
                    assert_eq!(a, classes[b.parse::<usize>().unwrap()], "{what} label of id {}", w[0])
                }
                _ => assert_eq!(a, b, "{what} id {} column {col}", w[0]),
            }
        }
    }
}

#[tokio::test]
async fn a_model_repository_runs_each_file_with_the_model_its_folder_names() {
    // GIVEN the example repository (iris at versions 1 and 2, half_plus_two, diabetes) with iris@1
    // as the default model
    let options = PipelineOptions {
        models: LocalModels::Repository { folder: repo("models/repository"), default: Some("iris@1".into()) },
        ..quick_options()
    };
    let mut pipeline = start(options).await;
    let iris = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    // WHEN files go under each model's folder, a pinned version's, no folder and a folder that
    // names no model
    let files = [
        ("iris/a.csv", iris.clone()),
        ("iris@1/a.csv", iris.clone()),
        ("half_plus_two/x.csv", std::fs::read(repo("examples/data/half_plus_two.csv")).unwrap()),
        ("diabetes/d.csv", std::fs::read(repo("examples/data/diabetes.csv")).unwrap()),
        ("root.csv", iris.clone()),
        ("daily/b.csv", iris.clone()),
    ];
    for (key, body) in &files {
        pipeline.put_input(key, body.clone()).await.unwrap();
    }
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN each ran the model (and version) it named, or the default, as the reports record
    let expected = [
        ("iris/a.csv", "iris", 2, "iris_mlp"),
        ("iris@1/a.csv", "iris", 1, "iris_logreg"),
        ("half_plus_two/x.csv", "half_plus_two", 1, "half_plus_two"),
        ("diabetes/d.csv", "diabetes", 1, "diabetes_linreg"),
        ("root.csv", "iris", 1, "iris_logreg"),
        ("daily/b.csv", "iris", 1, "iris_logreg"),
    ];
    for (key, name, version, reference_name) in expected {
        let report = report(&pipeline, key).await;
        assert_eq!(report.status, JobStatus::Succeeded, "{key}: {:?}", report.reason);
        assert_eq!((report.model.name.as_deref(), report.model.version), (Some(name), Some(version)), "{key}");
        assert_eq!(report.model.uri, format!("s3://sluice-models/repository/{name}/{version}/model.onnx"));
        let out = object(&pipeline, &format!("{key}.out")).await.unwrap();
        let got = if name == "half_plus_two" {
            // The reference holds the input beside the output: x,y.
            csv_rows(&out)
                .into_iter()
                .zip(reference(reference_name))
                .map(|(y, r)| vec![r[0].clone(), y[0].clone()])
                .collect()
        } else {
            csv_rows(&out)
        };
        assert_matches_reference(&got, &reference(reference_name), key);
    }
    // AND a new version put into the repository is used by the next file, with no redeploy
    let forest = std::fs::read(repo("models/iris_forest.onnx")).unwrap();
    let sidecar = std::fs::read(repo("models/iris_forest.onnx.json")).unwrap();
    for (key, body) in [("repository/iris/3/model.onnx", forest), ("repository/iris/3/model.onnx.json", sidecar)] {
        pipeline.s3.put_object().bucket("sluice-models").key(key).body(body.into()).send().await.unwrap();
    }
    pipeline.put_input("iris/c.csv", iris).await.unwrap();
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    let report = report(&pipeline, "iris/c.csv").await;
    assert_eq!(report.model.version, Some(3));
    assert_matches_reference(
        &csv_rows(&object(&pipeline, "iris/c.csv.out").await.unwrap()),
        &reference("iris_forest"),
        "v3",
    );
    pipeline.shutdown().await;
}

#[tokio::test]
async fn exported_tree_svm_and_column_transformer_models_run_in_the_queue_mode_as_onnxruntime() {
    // GIVEN the example repository, and four models of the zoo added to it as users export them:
    // a LightGBM binary classifier, XGBoost with missing values, an SVM with probabilities and a
    // ColumnTransformer over string, int64 and float columns
    let options = PipelineOptions {
        models: LocalModels::Repository { folder: repo("models/repository"), default: Some("iris@1".into()) },
        ..quick_options()
    };
    let mut pipeline = start(options).await;
    let zoo = [
        ("lightgbm_binary", 1e-5),
        ("xgboost_diabetes_missing", 1e-5),
        ("svc_rbf_iris_probabilities", 1e-4),
        ("column_transformer_int_categories_ignore_unknown", 1e-5),
    ];
    for (name, _) in zoo {
        for (file, key) in [("onnx", "model.onnx"), ("onnx.json", "model.onnx.json")] {
            let body = std::fs::read(repo(&format!("models/zoo/{name}.{file}"))).unwrap();
            let key = format!("repository/{name}/1/{key}");
            pipeline.s3.put_object().bucket("sluice-models").key(key).body(body.into()).send().await.unwrap();
        }
    }
    // WHEN each model's rows are uploaded under its folder
    for (name, _) in zoo {
        let rows = std::fs::read(repo(&format!("models/zoo/{name}.csv"))).unwrap();
        pipeline.put_input(&format!("{name}/rows.csv"), rows).await.unwrap();
    }
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN every row has onnxruntime's label and values
    for (name, tolerance) in zoo {
        let key = format!("{name}/rows.csv");
        let report = report(&pipeline, &key).await;
        assert_eq!(report.status, JobStatus::Succeeded, "{key}: {:?}", report.reason);
        let got = csv_rows(&object(&pipeline, &format!("{key}.out")).await.unwrap());
        let want = csv_rows(&std::fs::read(repo(&format!("models/zoo/{name}.expected.csv"))).unwrap());
        assert_eq!(got.len(), want.len(), "{key}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.len(), w.len(), "{key} id {}", w[0]);
            for (a, b) in g.iter().zip(w) {
                let same = a == b
                    || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if (x - y).abs() <= tolerance * y.abs().max(1.0));
                assert!(same, "{key} id {}: {a} where onnxruntime says {b}", w[0]);
            }
        }
    }
    pipeline.shutdown().await;
}

#[tokio::test]
async fn images_and_archives_of_images_are_classified_by_the_model_their_folder_names() {
    // GIVEN the example repository, with SqueezeNet (its labels in labels.txt beside it) and the
    // digits classifier
    let options = PipelineOptions {
        models: LocalModels::Repository { folder: repo("models/repository"), default: Some("iris@1".into()) },
        ..quick_options()
    };
    let mut pipeline = start(options).await;
    // WHEN a photograph, the digits archive, an archive with a bad member and a broken JPEG are uploaded
    let digit = std::fs::read(repo("examples/data/digits/0344-6.png")).unwrap();
    let mut mixed = tar::Builder::new(Vec::new());
    for (path, bytes) in [("a.png", digit.clone()), ("b.jpg", b"not an image".to_vec()), ("c.png", digit)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        mixed.append_data(&mut header, path, &bytes[..]).unwrap();
    }
    let files = [
        ("squeezenet/flower.png", std::fs::read(repo("tests/data/images/flower.png")).unwrap()),
        ("digits/batch.tar.gz", std::fs::read(repo("examples/data/digits.tar.gz")).unwrap()),
        ("digits/mixed.tar", mixed.into_inner().unwrap()),
        ("squeezenet/broken.jpg", std::fs::read(repo("tests/data/images/truncated.jpg")).unwrap()),
    ];
    for (key, body) in &files {
        pipeline.put_input(key, body.clone()).await.unwrap();
    }
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN the photograph's .out is its top 5, as onnxruntime ranks them
    let reference: Value =
        serde_json::from_slice(&std::fs::read(repo("models/reference/images.json")).unwrap()).unwrap();
    let report_of_flower = report(&pipeline, "squeezenet/flower.png").await;
    assert_eq!(report_of_flower.status, JobStatus::Succeeded, "{:?}", report_of_flower.reason);
    assert_eq!((report_of_flower.model.name.as_deref(), report_of_flower.rows.input), (Some("squeezenet"), 1));
    let top: Value = serde_json::from_slice(&object(&pipeline, "squeezenet/flower.png.out").await.unwrap()).unwrap();
    let classes = |v: &Value| v.as_array().unwrap().iter().map(|p| p["class"].clone()).collect::<Vec<_>>();
    assert_eq!(classes(&top), classes(&reference["squeezenet"]["flower.png"]));
    // AND the archive's .out has a line per image, in archive order
    let out = String::from_utf8(object(&pipeline, "digits/batch.tar.gz.out").await.unwrap()).unwrap();
    assert_eq!(out.lines().count(), 100);
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(first["image"].as_str().unwrap().starts_with("digits/"), "{first}");
    assert_eq!(report(&pipeline, "digits/batch.tar.gz").await.rows.output, 100);
    // AND a bad member goes to the errors file; 1 of 3 is more than the default 10%, so the
    // archive fails, its report naming the share and the first bad image
    let mixed = report(&pipeline, "digits/mixed.tar").await;
    assert_eq!(mixed.status, JobStatus::Failed);
    assert!(mixed.reason.as_deref().unwrap().contains("1 of 3 rows are bad"), "{:?}", mixed.reason);
    let errors = String::from_utf8(object(&pipeline, "digits/mixed.tar.errors.csv").await.unwrap()).unwrap();
    assert!(errors.contains("2,\"not an image: sluice reads JPEG, PNG and WebP\",b.jpg"), "{errors}");
    // AND the broken JPEG gets a failed report that says what is wrong, and no output
    let broken = report(&pipeline, "squeezenet/broken.jpg").await;
    assert_eq!(broken.status, JobStatus::Failed);
    assert!(
        broken
            .reason
            .as_deref()
            .unwrap()
            .ends_with("the image cannot be decoded: the JPEG is truncated: its last scan has no end-of-image marker"),
        "{:?}",
        broken.reason
    );
    assert!(object(&pipeline, "squeezenet/broken.jpg.out").await.is_none());
    pipeline.shutdown().await;
}

/// The processes descended from `pid`, from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            // pid (comm) state ppid ...: the command may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(child, _)| *child));
        i += 1;
    }
    found.split_off(1)
}

/// Whether `pid` is still a running (not a dead, unreaped) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[tokio::test]
async fn make_local_stopped_with_sigterm_stops_everything_it_started() {
    use tokio::io::AsyncBufReadExt;
    // GIVEN `make local`'s program running: moto, the trigger and the workers under it
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let binary = sluice_local::binaries::workspace_binary("sluice-local").unwrap();
    let mut harness = tokio::process::Command::new(binary)
        .args(["run", "--port", &port.to_string(), "--model"])
        .arg(repo("models/iris_logreg.onnx"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = harness.id().unwrap();
    let mut lines = tokio::io::BufReader::new(harness.stdout.take().unwrap()).lines();
    let waiting = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("The pipeline keeps running") {
                return;
            }
        }
        panic!("sluice-local ended before it was ready");
    });
    waiting.await.expect("sluice-local is ready within 180 s");
    let started = descendants(pid);
    assert!(!started.is_empty(), "moto at least runs under the harness");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok(), "moto answers");
    // WHEN it gets SIGTERM, as `kill` or a CI runner's time-out sends it
    assert!(sluice_local::process::signal_process(pid, Signal::Term));
    let status = tokio::time::timeout(Duration::from_secs(60), harness.wait()).await.expect("it stops").unwrap();
    // THEN it stops cleanly, and with it every process it started: moto no longer answers
    assert!(status.success(), "{status}");
    let left: Vec<u32> = started.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still running after the harness stopped: {left:?}");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "moto still answers");
}
