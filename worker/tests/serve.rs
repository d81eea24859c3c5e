//! `worker serve` over plain HTTP/1.1, as curl sends it: the three protocols' requests,
//! answers and errors, dynamic batching, the body limit, metrics, and a graceful stop. The
//! server runs in the test's process on a free port of 127.0.0.1, with the example repository.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{MemoryStore, repo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use worker::models::ModelFiles;
use worker::serve::AppState;
use worker::serve::batcher::{BatchObserver, BatchSettings, Batcher, InferError};
use worker::serve::config::ServeSettings;
use worker::serve::metrics::Metrics;
use worker::serve::registry::{Registry, RegistryObserver, RepositorySource, ServeSource};
use worker::shutdown::{ShutdownTrigger, shutdown_channel};

/// A server on a free port; stops when the trigger fires (or is dropped with the test).
struct Server {
    address: std::net::SocketAddr,
    stop: ShutdownTrigger,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn settings() -> ServeSettings {
    // Open on purpose: these tests are about the protocols (the keys: tests/serve_clients.rs).
    let lookup = shared::config::environment_of(&[("ALLOW_UNAUTHENTICATED", "true")]);
    let mut settings = ServeSettings::from_env(&lookup).unwrap();
    settings.batch.max_delay = Duration::from_millis(2);
    settings
}

async fn start_with(source: ServeSource, settings: ServeSettings) -> Server {
    start_observed(source, settings, |metrics| Arc::new(Arc::clone(metrics))).await
}

/// A server whose registry reports to `observer` (made from the server's metrics).
async fn start_observed(
    source: ServeSource,
    settings: ServeSettings,
    observer: impl FnOnce(&Arc<Metrics>) -> Arc<dyn RegistryObserver>,
) -> Server {
    let files: ModelFiles<MemoryStore> = ModelFiles::new(None);
    let metrics = Metrics::new();
    let registry =
        Registry::start(RepositorySource::new(files, source), settings.batch, observer(&metrics)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, shutdown) = shutdown_channel();
    let state = Arc::new(AppState::new(registry, metrics, settings));
    let done = tokio::spawn(worker::serve::run(listener, state, shutdown));
    Server { address, stop, done }
}

async fn start() -> Server {
    start_with(ServeSource::Repository(repo("models/repository").display().to_string()), settings()).await
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {} {:?} {}", self.status, self.headers, String::from_utf8_lossy(&self.body))
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection, as curl sends it.
async fn http(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n", server.address);
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked") {
        body = unchunk(&body);
    }
    Answer { status, headers, body }
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

async fn post_json(server: &Server, path: &str, body: &Value) -> Answer {
    http(server, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes()).await
}

/// iris rows: the first, one from the middle and the last (one of each class).
const IRIS: [[f32; 4]; 3] = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [5.9, 3.0, 5.1, 1.8]];

#[tokio::test]
async fn tf_serving_half_plus_two_answers_as_documented() {
    let server = start().await;
    let answer = post_json(&server, "/v1/models/half_plus_two:predict", &json!({"instances": [1.0, 2.0, 5.0]})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"predictions": [2.5, 3.0, 4.5]}));
    // Columnar, and a pinned version.
    let answer =
        post_json(&server, "/v1/models/half_plus_two/versions/1:predict", &json!({"inputs": [1.0, 2.0]})).await;
    assert_eq!(answer.json(), json!({"outputs": [2.5, 3.0]}));
    // Rows given as lists come back as lists.
    let answer = post_json(&server, "/v1/models/half_plus_two:predict", &json!({"instances": [[1.0], [3.0]]})).await;
    assert_eq!(answer.json(), json!({"predictions": [[2.5], [3.5]]}));
}

#[tokio::test]
async fn tf_serving_rows_and_columns_name_every_output() {
    let server = start().await;
    let answer = post_json(&server, "/v1/models/iris/versions/1:predict", &json!({"instances": IRIS})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let predictions = answer.json()["predictions"].clone();
    let labels: Vec<i64> = predictions.as_array().unwrap().iter().map(|p| p["label"].as_i64().unwrap()).collect();
    assert_eq!(labels, [0, 1, 2]);
    // Same as the batch pipeline's onnxruntime reference for row 1 (id 1).
    let p = &predictions[0]["probabilities"];
    assert!((p[0].as_f64().unwrap() - 0.98165685).abs() < 1e-6, "{p}");
    // Named inputs in the rows, and the columnar form.
    let named: Vec<Value> = IRIS.iter().map(|row| json!({"features": row})).collect();
    let rows = post_json(&server, "/v1/models/iris/versions/1:predict", &json!({"instances": named})).await.json();
    assert_eq!(rows["predictions"], predictions);
    let columns =
        post_json(&server, "/v1/models/iris/versions/1:predict", &json!({"inputs": {"features": IRIS}})).await.json();
    assert_eq!(columns["outputs"]["label"], json!([0, 1, 2]));
    assert_eq!(columns["outputs"]["probabilities"][0], predictions[0]["probabilities"]);
}

#[tokio::test]
async fn tf_serving_status_metadata_and_errors() {
    let server = start().await;
    let status = http(&server, "GET", "/v1/models/iris", &[], b"").await.json();
    let versions: Vec<&str> =
        status["model_version_status"].as_array().unwrap().iter().map(|s| s["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1", "2"]);
    assert_eq!(status["model_version_status"][1]["state"], "AVAILABLE");
    let one = http(&server, "GET", "/v1/models/iris/versions/2", &[], b"").await.json();
    assert_eq!(one["model_version_status"].as_array().unwrap().len(), 1);
    let metadata = http(&server, "GET", "/v1/models/iris/metadata", &[], b"").await.json();
    assert_eq!(metadata["model_spec"], json!({"name": "iris", "signature_name": "", "version": "2"}));
    let signature = &metadata["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(signature["inputs"]["features"]["tensor_shape"]["dim"][1]["size"], "4");
    assert_eq!(signature["outputs"]["label"]["dtype"], "DT_INT64");
    for (method, path, body, status, fragment) in [
        ("POST", "/v1/models/absent:predict", "{\"instances\": [1]}", 404, "\"absent\" is not served"),
        ("POST", "/v1/models/iris/versions/9:predict", "{\"instances\": [1]}", 404, "has no version 9"),
        ("GET", "/v1/models/absent", "", 404, "Could not find any versions of model absent"),
        ("POST", "/v1/models/iris:predict", "{\"instances\": [[1, 2, 3]]}", 400, "has 3 features; the model takes 4"),
        (
            "POST",
            "/v1/models/iris:predict",
            "{\"instances\": [[1, 2, 3, \"x\"]]}",
            400,
            "feature 3 of instance 0 is a string",
        ),
        ("POST", "/v1/models/iris:predict", "{\"instances\": ", 400, "not valid JSON"),
        ("POST", "/v1/models/iris:predict", "{\"rows\": []}", 400, "neither \"instances\" nor \"inputs\""),
        ("POST", "/v1/models/iris:predict", "{\"instances\": []}", 400, "\"instances\" is empty"),
        ("POST", "/v1/models/iris:classify", "{}", 400, "use :predict"),
        ("POST", "/v1/models/iris/versions/1:explain", "{}", 404, "no such method \"explain\""),
        ("POST", "/v1/models/iris/versions/one:predict", "{}", 404, "\"one\" is not a model version"),
        ("GET", "/v1/models/iris/versions/0/metadata", "", 404, "\"0\" is not a model version"),
        (
            "POST",
            "/v1/models/iris:predict",
            "{\"instances\": [{\"x\": [1, 2, 3, 4]}]}",
            400,
            "the model has one input, \"features\"",
        ),
    ] {
        let answer = http(&server, method, path, &[], body.as_bytes()).await;
        assert_eq!(answer.status, status, "{method} {path} {body}");
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(fragment), "{method} {path}: {error}");
    }
}

#[tokio::test]
async fn kserve_v2_health_metadata_and_inference() {
    let server = start().await;
    assert_eq!(http(&server, "GET", "/v2/health/live", &[], b"").await.json(), json!({"live": true}));
    assert_eq!(http(&server, "GET", "/v2/health/ready", &[], b"").await.json(), json!({"ready": true}));
    assert_eq!(http(&server, "GET", "/v2", &[], b"").await.json()["extensions"], json!(["binary_tensor_data"]));
    let metadata = http(&server, "GET", "/v2/models/iris", &[], b"").await.json();
    assert_eq!(metadata["versions"], json!(["1", "2"]));
    assert_eq!(metadata["inputs"], json!([{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]));
    assert_eq!(http(&server, "GET", "/v2/models/iris/versions/1/ready", &[], b"").await.status, 200);
    assert_eq!(http(&server, "GET", "/v2/models/absent/ready", &[], b"").await.status, 404);
    let request = json!({
        "id": "r1",
        "inputs": [{"name": "features", "shape": [3, 4], "datatype": "FP32", "data": IRIS}],
        "outputs": [{"name": "label"}],
    });
    let answer = post_json(&server, "/v2/models/iris/versions/1/infer", &request).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(
        answer.json(),
        json!({"model_name": "iris", "model_version": "1", "id": "r1",
               "outputs": [{"name": "label", "datatype": "INT64", "shape": [3], "data": [0, 1, 2]}]})
    );
    // half_plus_two with a one-dimensional input answers one-dimensional.
    let request = json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 5.0]}]});
    let answer = post_json(&server, "/v2/models/half_plus_two/infer", &request).await.json();
    assert_eq!(answer["outputs"][0], json!({"name": "y", "datatype": "FP32", "shape": [3], "data": [2.5, 3.0, 4.5]}));
    for (body, fragment) in [
        (
            json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
            "has shape [1, 3]",
        ),
        (
            json!({"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            "needs 8 values",
        ),
        (
            json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}),
            "not a number type",
        ),
        (
            json!({"inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            "unexpected input \"nope\"",
        ),
        (
            json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}),
            "has no output \"nope\"",
        ),
        (json!({"inputs": []}), "has 0 inputs"),
    ] {
        let answer = post_json(&server, "/v2/models/iris/infer", &body).await;
        assert_eq!(answer.status, 400, "{body}");
        assert!(answer.json()["error"].as_str().unwrap().contains(fragment), "{}", answer.json());
    }
}

#[tokio::test]
async fn kserve_v2_binary_tensors_in_and_out() {
    let server = start().await;
    // The inputs as Triton's client sends them by default: binary after the JSON header.
    let tensor: Vec<u8> = IRIS.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "features", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": tensor.len()}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&tensor);
    let length = header.len().to_string();
    let answer = http(
        &server,
        "POST",
        "/v2/models/iris/versions/1/infer",
        &[("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", &length)],
        &body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let json_length: usize = answer.header("inference-header-content-length").unwrap().parse().unwrap();
    let description: Value = serde_json::from_slice(&answer.body[..json_length]).unwrap();
    let outputs = description["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["parameters"]["binary_data_size"], 24, "3 int64 labels");
    assert_eq!(outputs[1]["parameters"]["binary_data_size"], 36, "3 x 3 float probabilities");
    let tail = &answer.body[json_length..];
    let labels: Vec<i64> = tail[..24].chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(labels, [0, 1, 2]);
    let first = f32::from_le_bytes(tail[24..28].try_into().unwrap());
    assert!((first - 0.981_656_85).abs() < 1e-6, "{first}");
}

#[tokio::test]
async fn torchserve_rows_as_json_or_csv_answer_as_the_batch_outputs_do() {
    let server = start().await;
    assert_eq!(http(&server, "GET", "/ping", &[], b"").await.json(), json!({"status": "Healthy"}));
    let row = json!({"id": 1, "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2});
    let one = post_json(&server, "/predictions/iris/1", &row).await;
    assert_eq!(one.status, 200, "{:?}", one.json());
    let one = one.json();
    assert_eq!(one["id"], 1);
    assert_eq!(one["label"], "setosa");
    assert_eq!(one["probabilities_setosa"], json!(0.98165685));
    let many = post_json(&server, "/predictions/iris/1", &json!([row, row])).await.json();
    assert_eq!(many, json!([one, one]));
    let csv = "id,sepal_length,sepal_width,petal_length,petal_width\n1,5.1,3.5,1.4,0.2\n2,6.4,3.2,4.5,1.5\n";
    let answer = http(&server, "POST", "/predictions/iris/1", &[("Content-Type", "text/csv")], csv.as_bytes()).await;
    assert_eq!(answer.header("content-type"), Some("text/csv"));
    let text = String::from_utf8(answer.body).unwrap();
    let expected = std::fs::read_to_string(repo("models/reference/iris_logreg.csv")).unwrap();
    assert!(
        text.starts_with("id,label,probabilities_setosa,probabilities_versicolor,probabilities_virginica\n1,setosa,")
    );
    let first_reference: f64 = expected.lines().nth(1).unwrap().split(',').nth(2).unwrap().parse().unwrap();
    let first: f64 = text.lines().nth(1).unwrap().split(',').nth(2).unwrap().parse().unwrap();
    assert!((first - first_reference).abs() < 1e-6, "{first} vs onnxruntime's {first_reference}");
    // Errors in TorchServe's shape.
    let missing = post_json(&server, "/predictions/absent", &row).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["type"], "ModelNotFoundException");
    let bad = post_json(&server, "/predictions/iris", &json!({"id": 1, "sepal_length": "long"})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], 400);
    assert!(bad.json()["message"].as_str().unwrap().contains("columns do not fit"), "{}", bad.json());
    let bad_value = post_json(
        &server,
        "/predictions/iris",
        &json!([row, {"id": 2, "sepal_length": "x", "sepal_width": 1, "petal_length": 1, "petal_width": 1}]),
    )
    .await;
    assert_eq!(bad_value.status, 400);
    assert!(
        bad_value.json()["message"].as_str().unwrap().contains("1 of 2 rows cannot be used"),
        "{}",
        bad_value.json()
    );
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_answered_as_one_by_one() {
    let mut settings = settings();
    settings.batch.max_delay = Duration::from_millis(20);
    settings.batch.parallel = 1;
    let server = start_with(ServeSource::Repository(repo("models/repository").display().to_string()), settings).await;
    // GIVEN each iris row's answer on its own
    let rows: Vec<Vec<f32>> = (0..24).map(|i| IRIS[i % 3].iter().map(|v| v + (i as f32) * 0.01).collect()).collect();
    let mut alone = Vec::new();
    for row in &rows {
        alone.push(post_json(&server, "/v1/models/iris:predict", &json!({"instances": [row]})).await.json());
    }
    // WHEN they are sent all at once, over TF Serving and KServe alike
    let together = futures_join(rows.iter().map(|row| {
        let server = &server;
        async move { post_json(server, "/v1/models/iris:predict", &json!({"instances": [row]})).await.json() }
    }))
    .await;
    // THEN every answer is the same as alone, to the bit
    assert_eq!(together, alone);
    // AND batches of more than one request ran
    let metrics = String::from_utf8(http(&server, "GET", "/metrics", &[], b"").await.body).unwrap();
    let (sum, count) = histogram(&metrics, "sluice_batch_requests", "model=\"iris\",version=\"2\"");
    assert!(sum > count, "some batches held several requests: {sum} requests in {count} batches\n{metrics}");
    assert!(
        metrics.contains("sluice_requests_total{model=\"iris\",protocol=\"tfserving\",code=\"200\"} 48"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_request_duration_seconds_bucket"), "{metrics}");
}

/// Runs the futures concurrently on this task and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs = Vec::new();
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => {
                        *result = Some(output);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    outputs.extend(results.into_iter().map(Option::unwrap));
    outputs
}

/// The `_sum` and `_count` of a histogram series.
fn histogram(metrics: &str, name: &str, labels: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        let prefix = format!("{name}_{suffix}{{{labels}}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

/// Records each batch, and holds the first one until released.
struct HoldFirst {
    started: tokio::sync::mpsc::UnboundedSender<(usize, usize)>,
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl BatchObserver for HoldFirst {
    fn batch_ran(&self, requests: usize, rows: usize) {
        let _ = self.started.send((requests, rows));
        if let Some(release) = self.release.lock().unwrap().take() {
            let _ = release.recv();
        }
    }
}

/// Polls `future` once (a request's first poll sends it to the batcher).
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) {
    std::future::poll_fn(|cx| {
        assert!(std::pin::Pin::new(&mut *future).poll(cx).is_pending(), "answered before its batch ran");
        std::task::Poll::Ready(())
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn requests_that_arrive_while_the_model_is_busy_run_together_next() {
    let files: ModelFiles<MemoryStore> = ModelFiles::new(None);
    let uri = repo("models/iris_logreg.onnx").display().to_string();
    let loaded = Arc::new(files.load(files.stat(&uri).await.unwrap()).await.unwrap());
    let (started, mut batches) = tokio::sync::mpsc::unbounded_channel();
    let (release, held) = std::sync::mpsc::channel();
    let observer = Arc::new(HoldFirst { started, release: std::sync::Mutex::new(Some(held)) });
    let settings = BatchSettings {
        max_batch_rows: 256,
        max_delay: Duration::ZERO,
        queue_capacity: 16,
        parallel: 1,
        max_batch_tokens: 16384,
    };
    let batcher = Batcher::start(loaded, settings, observer);
    // GIVEN a lone request on an idle model: it runs at once, alone (no delay to wait out), and is held
    let mut first = Box::pin(batcher.infer(IRIS[0].to_vec(), 1));
    poll_once(&mut first).await;
    assert_eq!(batches.recv().await, Some((1, 1)));
    // WHEN one request comes while it runs, and is taken into the next batch
    let mut rest: Vec<_> = (0..3).map(|i| Box::pin(batcher.infer(IRIS[i].to_vec(), 1))).collect();
    poll_once(&mut rest[0]).await;
    while batcher.waiting() > 0 {
        tokio::task::yield_now().await;
    }
    // AND two more come after that, still while the first batch runs
    poll_once(&mut rest[1]).await;
    poll_once(&mut rest[2]).await;
    release.send(()).unwrap();
    // THEN all three run together as the next batch, and everyone is answered
    assert_eq!(batches.recv().await, Some((3, 3)));
    assert!(first.await.is_ok());
    for answer in rest {
        assert!(answer.await.is_ok());
    }
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_with_retry_after() {
    // The batcher: with room for two waiting requests, a third sent before any is taken is refused.
    let files: ModelFiles<MemoryStore> = ModelFiles::new(None);
    let uri = repo("models/iris_logreg.onnx").display().to_string();
    let loaded = Arc::new(files.load(files.stat(&uri).await.unwrap()).await.unwrap());
    let settings = BatchSettings {
        max_batch_rows: 16,
        max_delay: Duration::ZERO,
        queue_capacity: 2,
        parallel: 1,
        max_batch_tokens: 16384,
    };
    let batcher = Batcher::start(loaded, settings, Metrics::new().batch_observer("iris", 1));
    let row = IRIS[0].to_vec();
    let answers = futures_join((0..3).map(|_| batcher.infer(row.clone(), 1))).await;
    assert!(answers[0].is_ok() && answers[1].is_ok());
    assert_eq!(answers[2], Err(InferError::Overloaded(2)));
    // The server answers that with 503 and Retry-After, in each protocol's shape.
    let error = worker::serve::error::ServeError::from(InferError::Overloaded(2));
    let response = error.into_response_for(worker::serve::error::Protocol::TorchServe);
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let mut settings = settings();
    settings.max_body_bytes = 1024;
    let server = start_with(ServeSource::Repository(repo("models/repository").display().to_string()), settings).await;
    let big = json!({"instances": vec![[5.1, 3.5, 1.4, 0.2]; 100]});
    let answer = post_json(&server, "/v1/models/iris:predict", &big).await;
    assert_eq!(answer.status, 413);
    assert!(answer.json()["error"].as_str().unwrap().contains("larger than the limit of 1024 bytes"));
    let answer = post_json(&server, "/predictions/iris", &big).await;
    assert_eq!((answer.status, answer.json()["type"].clone()), (413, json!("RequestEntityTooLargeException")));
}

/// The bytes the server's requests hold now, from `GET /metrics`.
async fn bytes_in_flight(server: &Server) -> u64 {
    let metrics = http(server, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8(metrics.body).unwrap();
    text.lines().find_map(|l| l.strip_prefix("sluice_bytes_in_flight ")).unwrap().parse().unwrap()
}

/// A request's head, its body to come later: the server takes the body's share on the head.
async fn head_only(server: &Server, path: &str, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// One iris row padded with spaces to `length` bytes.
fn padded_row(length: usize) -> Vec<u8> {
    let mut body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#.to_vec();
    body.resize(length, b' ');
    body
}

#[tokio::test]
async fn a_request_over_the_byte_budget_is_refused_at_once_while_others_are_answered() {
    let mut settings = settings();
    settings.max_body_bytes = 200 * 1024;
    settings.max_bytes_in_flight = 300 * 1024;
    let server = start_with(ServeSource::Repository(repo("models/repository").display().to_string()), settings).await;
    // GIVEN a request whose body is still coming, holding 200 KB of the 300 KB budget
    let mut first = head_only(&server, "/v1/models/iris:predict", 200 * 1024).await;
    while bytes_in_flight(&server).await < 200 * 1024 {
        tokio::task::yield_now().await;
    }
    // WHEN another needs 150 KB: it is refused at once (its body unread), with Retry-After
    let mut second = head_only(&server, "/v1/models/iris:predict", 150 * 1024).await;
    let refused = read_answer(&mut second).await;
    assert_eq!((refused.status, refused.header("retry-after")), (503, Some("1")), "{:?}", refused.json());
    assert!(refused.json()["error"].as_str().unwrap().contains("MAX_BYTES_IN_FLIGHT"));
    let refused = post_json(
        &server,
        "/v2/models/iris/infer",
        &json!({"inputs": [{
        "name": "features", "shape": [1, 4], "datatype": "FP32", "data": vec![0.5; 40_000]}]}),
    )
    .await;
    assert_eq!(refused.status, 503, "the KServe route too");
    // THEN a request that fits is answered meanwhile, and so is the first once its body comes
    let small = post_json(&server, "/v1/models/iris:predict", &json!({"instances": [IRIS[0]]})).await;
    assert_eq!(small.status, 200);
    first.write_all(&padded_row(200 * 1024)).await.unwrap();
    let answered = read_answer(&mut first).await;
    assert_eq!(answered.status, 200, "{:?}", answered.json());
    assert_eq!(answered.json()["predictions"].as_array().unwrap().len(), 1);
    // AND everything is given back once the answers are sent
    assert_eq!(bytes_in_flight(&server).await, 0);
    // A request that needs more than the whole budget could never be served: 413, not 503.
    let rows = vec![json!([5.1, 3.5, 1.4, 0.2]); 2500];
    let too_big = post_json(&server, "/v1/models/iris:predict", &json!({"instances": rows})).await;
    assert_eq!(too_big.status, 413, "{:?}", too_big.json());
    assert!(too_big.json()["error"].as_str().unwrap().contains("whole budget"), "{:?}", too_big.json());
}

#[tokio::test]
async fn an_answer_that_could_pass_the_limit_is_refused_before_the_model_runs() {
    let mut settings = settings();
    settings.max_response_bytes = 4096;
    let server = start_with(ServeSource::Repository(repo("models/repository").display().to_string()), settings).await;
    let runs = || async {
        let metrics = String::from_utf8(http(&server, "GET", "/metrics", &[], b"").await.body).unwrap();
        histogram(&metrics, "sluice_batch_rows", "model=\"iris\",version=\"2\"").1
    };
    let rows = vec![IRIS[0]; 100];
    for (path, body) in [
        ("/v1/models/iris:predict", json!({"instances": rows})),
        ("/v1/models/iris:predict", json!({"inputs": rows})),
        (
            "/v2/models/iris/infer",
            json!({"inputs": [{"name": "features", "shape": [100, 4], "datatype": "FP32", "data": rows}]}),
        ),
    ] {
        let answer = post_json(&server, path, &body).await;
        assert_eq!(answer.status, 413, "{path}: {:?}", answer.json());
        assert!(answer.json()["error"].as_str().unwrap().contains("MAX_RESPONSE_BYTES"), "{:?}", answer.json());
    }
    let row = json!({"id": 1, "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2});
    let torchserve = post_json(&server, "/predictions/iris", &json!(vec![row; 100])).await;
    assert_eq!(torchserve.status, 413, "{:?}", torchserve.json());
    assert_eq!(runs().await, 0.0, "the model never ran");
    // Fewer rows are answered.
    let answer = post_json(&server, "/v1/models/iris:predict", &json!({"instances": vec![IRIS[0]; 10]})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(runs().await, 1.0);
}

#[tokio::test]
async fn a_request_whose_body_stops_coming_is_answered_408_while_others_are_served() {
    let mut settings = settings();
    settings.request_timeout = Duration::from_millis(500);
    let server = start_with(ServeSource::Repository(repo("models/repository").display().to_string()), settings).await;
    let mut slow = TcpStream::connect(server.address).await.unwrap();
    let head = "POST /v1/models/iris:predict HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n{\"instances\"";
    slow.write_all(head.as_bytes()).await.unwrap();
    // While that request hangs, another is answered.
    let answer = post_json(&server, "/v1/models/half_plus_two:predict", &json!({"instances": [1.0]})).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"predictions": [2.5]})));
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut slow)).await;
    assert_eq!(answer.expect("an answer before the client gives up").status, 408);
}

#[tokio::test]
async fn a_model_that_cannot_load_is_reported_and_the_others_serve() {
    let root = std::env::temp_dir().join(format!("sluice-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (path, source) in
        [("iris/1/model.onnx", "models/iris_logreg.onnx"), ("iris/1/model.onnx.json", "models/iris_logreg.onnx.json")]
    {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        std::fs::copy(repo(source), root.join(path)).unwrap();
    }
    std::fs::create_dir_all(root.join("broken/1")).unwrap();
    std::fs::write(root.join("broken/1/model.onnx"), "not a model").unwrap();
    let server = start_with(ServeSource::Repository(root.display().to_string()), settings()).await;
    let status = http(&server, "GET", "/v1/models/broken", &[], b"").await.json();
    assert_eq!(status["model_version_status"][0]["state"], "END");
    assert!(
        status["model_version_status"][0]["status"]["error_message"]
            .as_str()
            .unwrap()
            .contains("not a valid ONNX file")
    );
    let answer = post_json(&server, "/v2/models/broken/infer", &json!({"inputs": []})).await;
    assert_eq!(answer.status, 503);
    assert!(answer.json()["error"].as_str().unwrap().contains("could not be loaded"));
    assert_eq!(http(&server, "GET", "/v2/models/broken/ready", &[], b"").await.status, 503);
    assert_eq!(http(&server, "GET", "/ping", &[], b"").await.status, 500, "not every model is loaded");
    let answer = post_json(&server, "/v1/models/iris:predict", &json!({"instances": [IRIS[0]]})).await;
    assert_eq!(answer.status, 200);
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn on_shutdown_a_request_in_flight_finishes_and_the_server_stops() {
    let server = start().await;
    // GIVEN a request whose body is half sent
    let body = json!({"instances": [1.0, 2.0, 5.0]}).to_string();
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let head = format!(
        "POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    // Wait until the server has the request: its counter of open requests is not observable,
    // so a second, complete request on another connection proves the server read the first's head.
    assert_eq!(http(&server, "GET", "/v2/health/live", &[], b"").await.status, 200);
    // WHEN the server is asked to stop
    server.stop.trigger();
    // THEN the rest of the body is still read and answered
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"predictions": [2.5, 3.0, 4.5]}));
    // AND the server stops, and accepts no new connection
    tokio::time::timeout(Duration::from_secs(10), server.done).await.expect("stopped in time").unwrap().unwrap();
    assert!(TcpStream::connect(server.address).await.is_err());
}

fn image_file(path: &str) -> Vec<u8> {
    std::fs::read(repo(path)).unwrap()
}

/// onnxruntime's top 5 for a test image (`make models`).
fn squeezenet_reference(name: &str) -> Value {
    let reference: Value = serde_json::from_slice(&image_file("models/reference/images.json")).unwrap();
    reference["squeezenet"][name].clone()
}

fn assert_top_k(actual: &Value, expected: &Value) {
    let (actual, expected) = (actual.as_array().unwrap(), expected.as_array().unwrap());
    assert_eq!(actual.len(), expected.len(), "{actual:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(a["class"], e["class"]);
        let (a, e) = (a["probability"].as_f64().unwrap(), e["probability"].as_f64().unwrap());
        assert!((a - e).abs() < 1e-4, "{a} against onnxruntime's {e}");
    }
}

fn multipart(field: &str, file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "------------------------d74496d66958873e";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn torchserve_classifies_an_image_sent_as_the_body_or_as_multipart_data() {
    // GIVEN SqueezeNet served, and a PNG whose top 5 onnxruntime computed
    let server = start().await;
    let png = image_file("tests/data/images/flower.png");
    let expected = squeezenet_reference("flower.png");
    // WHEN it is posted as the body (curl --data-binary @flower.png)
    let answer = http(&server, "POST", "/predictions/squeezenet", &[("Content-Type", "image/png")], &png).await;
    // THEN the answer is its top 5, as onnxruntime ranks them
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_top_k(&answer.json(), &expected);
    // AND as multipart field "data" (curl -F "data=@flower.png"), the same
    let (content_type, body) = multipart("data", "flower.png", &png);
    let answer = http(&server, "POST", "/predictions/squeezenet/1", &[("Content-Type", &content_type)], &body).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_top_k(&answer.json(), &expected);
    // AND a multipart body without that field, or something that is no image, is a 400 that says so
    let (content_type, body) = multipart("file", "flower.png", &png);
    let answer = http(&server, "POST", "/predictions/squeezenet", &[("Content-Type", &content_type)], &body).await;
    assert_eq!(answer.status, 400);
    assert!(answer.json()["message"].as_str().unwrap().contains("no field \"data\""), "{:?}", answer.json());
    let answer = http(&server, "POST", "/predictions/squeezenet", &[], b"id,x\n1,2\n").await;
    assert_eq!((answer.status, answer.json()["type"].as_str()), (400, Some("BadRequestException")));
    assert_eq!(answer.json()["message"], "not an image: sluice reads JPEG, PNG and WebP");
    let truncated = image_file("tests/data/images/truncated.jpg");
    let answer = http(&server, "POST", "/predictions/squeezenet", &[], &truncated).await;
    assert_eq!(answer.status, 400);
    server.stop.trigger();
}

#[tokio::test]
async fn tf_serving_and_kserve_take_images_as_base64() {
    use base64::Engine;
    let server = start().await;
    let encode = |path: &str| base64::engine::general_purpose::STANDARD.encode(image_file(path));
    let (png, webp) = (encode("tests/data/images/flower.png"), encode("tests/data/images/flower.webp"));
    // TF Serving: instances of {"b64": ...}, and {"<input>": {"b64": ...}}
    let request = json!({"instances": [{"b64": png}, {"image_bytes": {"b64": webp}}]});
    let answer = post_json(&server, "/v1/models/squeezenet:predict", &request).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let predictions = answer.json()["predictions"].clone();
    assert_top_k(&predictions[0], &squeezenet_reference("flower.png"));
    assert_top_k(&predictions[1], &squeezenet_reference("flower.webp"));
    let answer = post_json(&server, "/v1/models/squeezenet:predict", &json!({"instances": [[1.0, 2.0]]})).await;
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("send {\"b64\""), "{:?}", answer.json());
    // More images than a request may carry: refused before any is decoded
    let many: Vec<Value> = (0..33).map(|_| json!({"b64": png})).collect();
    let answer = post_json(&server, "/v1/models/squeezenet:predict", &json!({"instances": many})).await;
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("at most 32"), "{:?}", answer.json());
    // KServe v2: a BYTES input of base64 strings; classes and probabilities back
    let request = json!({"inputs": [{"name": "data_0", "shape": [1], "datatype": "BYTES", "data": [png]}]});
    let answer = post_json(&server, "/v2/models/squeezenet/infer", &request).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let outputs = answer.json()["outputs"].clone();
    assert_eq!(outputs[0]["name"], "classes");
    assert_eq!(outputs[0]["shape"], json!([1, 5]));
    let expected = squeezenet_reference("flower.png");
    let actual: Vec<Value> =
        (0..5).map(|i| json!({"class": outputs[0]["data"][i], "probability": outputs[1]["data"][i]})).collect();
    assert_top_k(&Value::Array(actual), &expected);
    // AND a model that takes rows says so when sent an image
    let answer = http(&server, "POST", "/predictions/iris", &[], &image_file("tests/data/images/small-grey.png")).await;
    assert_eq!(answer.status, 400);
    server.stop.trigger();
}

#[tokio::test]
async fn an_image_over_the_pixel_limit_is_refused_before_it_is_decoded() {
    let mut settings = settings();
    settings.max_image_pixels = 10_000;
    let server = start_with(ServeSource::Repository(repo("models/repository").display().to_string()), settings).await;
    let answer =
        http(&server, "POST", "/predictions/squeezenet", &[], &image_file("tests/data/images/china.jpg")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json()["message"],
        "the image is 640x427, 273280 pixels, more than the limit of 10000 (MAX_IMAGE_PIXELS)"
    );
    server.stop.trigger();
}

#[tokio::test]
async fn a_model_of_typed_columns_is_served_by_every_protocol() {
    // GIVEN a ColumnTransformer over a string, an int64 and a float column, and onnxruntime's
    // answers for its first two held-out rows
    let uri = repo("models/zoo/column_transformer_int_categories_ignore_unknown.onnx").display().to_string();
    let server = start_with(ServeSource::File { uri, name: "wine".into() }, settings()).await;
    let expected: Vec<Vec<String>> =
        csv::Reader::from_path(repo("models/zoo/column_transformer_int_categories_ignore_unknown.expected.csv"))
            .unwrap()
            .records()
            .take(2)
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
    let assert_row = |label: &Value, probabilities: &Value, row: usize| {
        assert_eq!(label.as_i64().unwrap().to_string(), expected[row][1], "label of row {row}");
        for (k, p) in probabilities.as_array().unwrap().iter().enumerate() {
            let want: f64 = expected[row][2 + k].parse().unwrap();
            assert!((p.as_f64().unwrap() - want).abs() < 1e-5, "row {row} probability {k}: {p} vs {want}");
        }
    };
    // WHEN rows are sent as TF Serving instances (a category it never saw in row 1)
    let instances = json!({"instances": [
        {"colour": "deep", "grade": 1, "alcohol": 12.77},
        {"colour": ["medium"], "grade": [1], "alcohol": [11.84]},
    ]});
    let answer = post_json(&server, "/v1/models/wine:predict", &instances).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    // THEN each row gets onnxruntime's label and probabilities
    let predictions = answer.json()["predictions"].clone();
    for row in 0..2 {
        assert_row(&predictions[row]["output_label"], &predictions[row]["output_probability"], row);
    }
    // WHEN the same rows come as TF Serving's columns, and as KServe v2 tensors (BYTES for text)
    let columns = json!({"inputs": {"colour": ["deep", "medium"], "grade": [[1], [1]], "alcohol": [12.77, 11.84]}});
    let outputs = post_json(&server, "/v1/models/wine:predict", &columns).await.json()["outputs"].clone();
    let kserve = json!({"inputs": [
        {"name": "colour", "datatype": "BYTES", "shape": [2, 1], "data": ["deep", "medium"]},
        {"name": "grade", "datatype": "INT64", "shape": [2, 1], "data": [1, 1]},
        {"name": "alcohol", "datatype": "FP32", "shape": [2, 1], "data": [12.77, 11.84]},
    ]});
    let answer = post_json(&server, "/v2/models/wine/infer", &kserve).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let kserve_outputs = answer.json()["outputs"].clone();
    // THEN the answers are the same
    for row in 0..2 {
        assert_row(&outputs["output_label"][row], &outputs["output_probability"][row], row);
        let probabilities: Vec<Value> = kserve_outputs[1]["data"].as_array().unwrap()[row * 3..row * 3 + 3].to_vec();
        assert_row(&kserve_outputs[0]["data"][row], &Value::Array(probabilities), row);
    }
    // AND TorchServe takes them as CSV with a header, the id passed through as configured
    let csv = b"id,colour,grade,alcohol\n1,deep,1,12.77\n2,medium,1,11.84\n";
    let answer = http(&server, "POST", "/predictions/wine", &[("Content-Type", "text/csv")], csv).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let text = String::from_utf8(answer.body).unwrap();
    let header = "id,output_label,output_probability_0,output_probability_1,output_probability_2";
    assert!(text.starts_with(&format!("{header}\n1,{},", expected[0][1])), "{text}");
    // AND metadata lists the typed inputs, a bad value is a 400 naming the input
    let metadata = http(&server, "GET", "/v2/models/wine", &[], b"").await.json();
    assert_eq!(metadata["inputs"][0], json!({"name": "colour", "datatype": "BYTES", "shape": [-1, 1]}));
    assert_eq!(metadata["inputs"][1]["datatype"], "INT64");
    let bad = json!({"instances": [{"colour": "deep", "grade": "two", "alcohol": 12.0}]});
    let answer = post_json(&server, "/v1/models/wine:predict", &bad).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("input \"grade\" of instance 0 is \"two\", not a whole number"),
        "{:?}",
        answer.json()
    );
    let missing = json!({"instances": [{"colour": "deep", "alcohol": 12.0}]});
    assert_eq!(post_json(&server, "/v1/models/wine:predict", &missing).await.status, 400);
}

/// A copy of the example repository's `iris` versions `versions`, in a folder of its own.
fn iris_repository(versions: &[u64]) -> tempfile_dir::TempDir {
    let dir = tempfile_dir::TempDir::new();
    for &version in versions {
        // The example has versions 1 and 2: later versions are copies of them.
        add_iris_version(&dir, (version - 1) % 2 + 1, version);
    }
    dir
}

/// Copies the example repository's iris version `from` in as version `version`.
fn add_iris_version(dir: &tempfile_dir::TempDir, from: u64, version: u64) {
    let source = repo("models/repository/iris").join(from.to_string());
    let target = dir.path().join("iris").join(version.to_string());
    std::fs::create_dir_all(&target).unwrap();
    for file in ["model.onnx.json", "model.onnx"] {
        std::fs::copy(source.join(file), target.join(file)).unwrap();
    }
}

/// Temporary folders, removed when dropped.
mod tempfile_dir {
    pub struct TempDir(std::path::PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = std::env::temp_dir().join(format!("sluice-serve-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The versions of iris and their states, from TF Serving's status endpoint.
async fn iris_versions(server: &Server) -> Vec<(String, String)> {
    let status = http(server, "GET", "/v1/models/iris", &[], b"").await.json();
    status["model_version_status"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|v| (v["version"].as_str().unwrap().to_owned(), v["state"].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (polling the status endpoint) until iris has exactly `expected`.
async fn until_iris_versions(server: &Server, expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> = expected.iter().map(|(v, s)| (v.to_string(), s.to_string())).collect();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while iris_versions(server).await != expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "iris's versions stayed {:?}, not {expected:?}", iris_versions(server).await);
}

/// The version a KServe inference of iris's latest version is answered by.
async fn latest_iris(server: &Server) -> (u16, Value) {
    let request = json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": IRIS[0]}]});
    let answer = post_json(server, "/v2/models/iris/infer", &request).await;
    (answer.status, answer.json()["model_version"].clone())
}

/// Reports to the server's metrics, and holds version 1's first batch until released.
struct HoldVersionOne {
    metrics: Arc<Metrics>,
    held: Arc<HoldFirst>,
}

impl RegistryObserver for HoldVersionOne {
    fn batches(&self, name: &str, version: u64) -> Arc<dyn BatchObserver> {
        if version == 1 {
            Arc::clone(&self.held) as Arc<dyn BatchObserver>
        } else {
            self.metrics.batch_observer(name, version)
        }
    }

    fn loaded(&self, name: &str, version: u64, outcome: Result<(), &str>) {
        RegistryObserver::loaded(&self.metrics, name, version, outcome);
    }
}

#[tokio::test]
async fn versions_added_to_the_repository_are_served_without_a_restart() {
    let dir = iris_repository(&[1]);
    let mut settings = settings();
    settings.model_poll = Duration::from_millis(50);
    let (started, mut batches) = tokio::sync::mpsc::unbounded_channel();
    let (release, hold) = std::sync::mpsc::channel();
    let held = Arc::new(HoldFirst { started, release: std::sync::Mutex::new(Some(hold)) });
    let server = start_observed(ServeSource::Repository(dir.path().display().to_string()), settings, |metrics| {
        Arc::new(HoldVersionOne { metrics: Arc::clone(metrics), held })
    })
    .await;
    let server = Arc::new(server);
    assert_eq!(iris_versions(&server).await, [("1".into(), "AVAILABLE".into())]);
    // GIVEN a request on version 1 whose model run is held
    let in_flight = tokio::spawn({
        let server = Arc::clone(&server);
        async move {
            let request = json!({"inputs": [{"name": "features", "shape": [3, 4], "datatype": "FP32", "data": IRIS}]});
            post_json(&server, "/v2/models/iris/versions/1/infer", &request).await
        }
    });
    assert_eq!(batches.recv().await, Some((1, 3)), "the request's batch runs and is held");
    // WHEN version 2 is added to the repository
    add_iris_version(&dir, 2, 2);
    // THEN it is served, and version 1 (the policy keeps the latest only) leaves the table
    until_iris_versions(&server, &[("2", "AVAILABLE")]).await;
    assert_eq!(latest_iris(&server).await, (200, json!("2")));
    // AND the request on version 1 still finishes on version 1
    release.send(()).unwrap();
    let answered = in_flight.await.unwrap();
    assert_eq!((answered.status, answered.json()["model_version"].clone()), (200, json!("1")));
    // WHEN a broken version 3 comes
    std::fs::create_dir_all(dir.path().join("iris/3")).unwrap();
    std::fs::write(dir.path().join("iris/3/model.onnx"), b"not a model").unwrap();
    // THEN it is reported, version 2 serves on, and the server stays healthy
    until_iris_versions(&server, &[("2", "AVAILABLE"), ("3", "END")]).await;
    assert_eq!(latest_iris(&server).await, (200, json!("2")));
    assert_eq!(http(&server, "GET", "/v2/health/ready", &[], b"").await.status, 200);
    let status = http(&server, "GET", "/v1/models/iris/versions/3", &[], b"").await.json();
    let reason = status["model_version_status"][0]["status"]["error_message"].as_str().unwrap().to_owned();
    assert!(reason.contains("model.onnx"), "{reason}");
    let metrics = String::from_utf8(http(&server, "GET", "/metrics", &[], b"").await.body).unwrap();
    assert!(metrics.contains(r#"sluice_model_loads_total{model="iris",version="3",outcome="failed"} 1"#), "{metrics}");
    // WHEN version 3 is fixed: it is loaded, and version 2 leaves
    add_iris_version(&dir, 2, 3);
    until_iris_versions(&server, &[("3", "AVAILABLE")]).await;
    assert_eq!(latest_iris(&server).await, (200, json!("3")));
    // AND a version removed from the repository is no longer served: the latest left, 2, is again
    std::fs::remove_dir_all(dir.path().join("iris/3")).unwrap();
    until_iris_versions(&server, &[("2", "AVAILABLE")]).await;
    assert_eq!(latest_iris(&server).await, (200, json!("2")));
}

#[tokio::test]
async fn a_version_policy_picks_the_versions_served() {
    let dir = iris_repository(&[1, 2, 3]);
    std::fs::write(dir.path().join("iris/config.json"), r#"{"version_policy": {"specific": {"versions": [1, 3]}}}"#)
        .unwrap();
    let server = start_with(ServeSource::Repository(dir.path().display().to_string()), settings()).await;
    assert_eq!(iris_versions(&server).await, [("1".into(), "AVAILABLE".into()), ("3".into(), "AVAILABLE".into())]);
    std::fs::write(dir.path().join("iris/config.json"), r#"{"version_policy": {"latest": 2}}"#).unwrap();
    // A broken policy is refused with its reason, and what is served stays.
    let load = http(&server, "POST", "/v2/repository/models/iris/load", &[], b"").await;
    assert_eq!(load.status, 400, "{:?}", load.json());
    assert!(load.json()["error"].as_str().unwrap().contains("iris/config.json"), "{:?}", load.json());
    assert_eq!(iris_versions(&server).await.len(), 2);
    // A good one is followed at the next look.
    std::fs::write(dir.path().join("iris/config.json"), r#"{"version_policy": {"latest": {"num_versions": 1}}}"#)
        .unwrap();
    let load = http(&server, "POST", "/v2/repository/models/iris/load", &[], b"").await;
    assert_eq!(load.status, 200, "{:?}", load.json());
    assert_eq!(iris_versions(&server).await, [("3".into(), "AVAILABLE".into())]);
}

#[tokio::test]
async fn models_are_loaded_and_unloaded_through_the_repository_api() {
    let server = start().await;
    let index = http(&server, "POST", "/v2/repository/index", &[], b"").await.json();
    assert!(
        index.as_array().unwrap().contains(&json!({"name": "iris", "version": "2", "state": "READY", "reason": ""}))
    );
    // Unloaded: not served, and listed as such
    let unload = http(&server, "POST", "/v2/repository/models/iris/unload", &[], b"").await;
    assert_eq!(unload.status, 200);
    assert_eq!(http(&server, "GET", "/v2/models/iris/ready", &[], b"").await.status, 404);
    assert_eq!(latest_iris(&server).await.0, 404);
    let index = http(&server, "POST", "/v2/repository/index", &[], b"").await.json();
    assert!(
        index
            .as_array()
            .unwrap()
            .contains(&json!({"name": "iris", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}))
    );
    // Loaded again
    let load = http(&server, "POST", "/v2/repository/models/iris/load", &[], b"").await;
    assert_eq!(load.status, 200, "{:?}", load.json());
    assert_eq!(http(&server, "GET", "/v2/models/iris/ready", &[], b"").await.status, 200);
    assert_eq!(latest_iris(&server).await, (200, json!("2")));
    // A model the repository does not have
    let missing = http(&server, "POST", "/v2/repository/models/wine/load", &[], b"").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("not in the repository"));
    assert_eq!(http(&server, "POST", "/v2/repository/models/wine/unload", &[], b"").await.status, 404);
}

#[tokio::test]
async fn without_a_valid_key_each_protocol_answers_401_in_its_own_shape_and_health_stays_open() {
    // GIVEN a server with two inference keys (a rotation) and no repository API
    let lookup = shared::config::environment_of(&[("API_KEYS", "key-one-0123456789,key-two-0123456789")]);
    let mut settings = ServeSettings::from_env(&lookup).unwrap();
    settings.batch.max_delay = Duration::from_millis(2);
    let server = start_with(ServeSource::Repository(repo("models/repository").display().to_string()), settings).await;
    let body = json!({"instances": [1.0]}).to_string();
    let row = json!({"id": 1, "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2});
    let kserve = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).to_string();
    let json_header = ("Content-Type", "application/json");
    // THEN health checks answer without a key
    for path in ["/ping", "/v2/health/live", "/v2/health/ready"] {
        assert_eq!(http(&server, "GET", path, &[], b"").await.status, 200, "{path}");
    }
    // AND without a key each protocol refuses in its own error shape, asking for a Bearer key
    let tf = http(&server, "POST", "/v1/models/half_plus_two:predict", &[json_header], body.as_bytes()).await;
    assert_eq!((tf.status, tf.header("www-authenticate")), (401, Some("Bearer")));
    assert!(tf.json()["error"].as_str().unwrap().contains("needs an API key"), "{:?}", tf.json());
    let ks = http(&server, "POST", "/v2/models/half_plus_two/infer", &[json_header], kserve.as_bytes()).await;
    assert_eq!(ks.status, 401);
    assert!(ks.json()["error"].is_string(), "{:?}", ks.json());
    let ts = http(&server, "POST", "/predictions/iris/1", &[json_header], row.to_string().as_bytes()).await;
    assert_eq!(
        (ts.status, ts.json()["code"].as_u64(), ts.json()["type"].as_str()),
        (401, Some(401), Some("InvalidKeyException"))
    );
    assert_eq!(http(&server, "GET", "/metrics", &[], b"").await.status, 401);
    // AND a wrong key is refused, and either key of the rotation is taken, as Bearer or x-api-key
    let wrong = [json_header, ("Authorization", "Bearer key-one-012345678X")];
    assert_eq!(http(&server, "POST", "/v1/models/half_plus_two:predict", &wrong, body.as_bytes()).await.status, 401);
    for key in [("Authorization", "Bearer key-one-0123456789"), ("x-api-key", "key-two-0123456789")] {
        let answer =
            http(&server, "POST", "/v1/models/half_plus_two:predict", &[json_header, key], body.as_bytes()).await;
        assert_eq!((answer.status, answer.json()), (200, json!({"predictions": [2.5]})), "{key:?}");
    }
    // AND the repository API is off, whichever key
    let unload =
        http(&server, "POST", "/v2/repository/models/iris/unload", &[("x-api-key", "key-one-0123456789")], b"").await;
    assert_eq!(unload.status, 403);
    assert!(unload.json()["error"].as_str().unwrap().contains("REPOSITORY_API_KEYS"), "{:?}", unload.json());
    // AND each refusal is counted by protocol and reason
    let metrics = http(&server, "GET", "/metrics", &[("x-api-key", "key-one-0123456789")], b"").await;
    let text = String::from_utf8(metrics.body).unwrap();
    for line in [
        r#"sluice_unauthorized_requests_total{protocol="tfserving",reason="no_key"} 1"#,
        r#"sluice_unauthorized_requests_total{protocol="tfserving",reason="wrong_key"} 1"#,
        r#"sluice_unauthorized_requests_total{protocol="kserve",reason="no_key"} 1"#,
        r#"sluice_unauthorized_requests_total{protocol="torchserve",reason="no_key"} 2"#,
        r#"sluice_unauthorized_requests_total{protocol="kserve",reason="repository_off"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn the_repository_api_takes_only_its_own_keys() {
    // GIVEN a server with an inference key and a repository API key
    let lookup = shared::config::environment_of(&[
        ("API_KEYS", "key-one-0123456789"),
        ("REPOSITORY_API_KEYS", "admin-key-0123456789"),
    ]);
    let server = start_with(
        ServeSource::Repository(repo("models/repository").display().to_string()),
        ServeSettings::from_env(&lookup).unwrap(),
    )
    .await;
    let inference = ("x-api-key", "key-one-0123456789");
    let admin = ("Authorization", "Bearer admin-key-0123456789");
    // THEN the inference key cannot unload a model, and the repository key cannot infer
    let refused = http(&server, "POST", "/v2/repository/models/half_plus_two/unload", &[inference], b"").await;
    assert_eq!(refused.status, 401);
    let body = json!({"instances": [1.0]}).to_string();
    let predict = "/v1/models/half_plus_two:predict";
    assert_eq!(http(&server, "POST", predict, &[admin], body.as_bytes()).await.status, 401);
    // AND the repository key unloads and loads it, which inference sees
    let unloaded = http(&server, "POST", "/v2/repository/models/half_plus_two/unload", &[admin], b"").await;
    assert_eq!(unloaded.status, 200, "{:?}", String::from_utf8_lossy(&unloaded.body));
    assert_eq!(http(&server, "POST", predict, &[inference], body.as_bytes()).await.status, 404);
    assert_eq!(http(&server, "POST", "/v2/repository/models/half_plus_two/load", &[admin], b"").await.status, 200);
    assert_eq!(http(&server, "POST", predict, &[inference], body.as_bytes()).await.status, 200);
}

#[tokio::test]
async fn a_model_exported_from_float64_data_is_served_in_double() {
    // GIVEN a logistic regression exported from float64 arrays (its input is double [N, 4]), and
    // onnxruntime's answers for its first two held-out rows
    let uri = repo("models/zoo/logreg_iris_double.onnx").display().to_string();
    let server = start_with(ServeSource::File { uri, name: "iris64".into() }, settings()).await;
    let read = |path: &str| -> Vec<Vec<String>> {
        csv::Reader::from_path(repo(path))
            .unwrap()
            .records()
            .take(2)
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    };
    let (inputs, expected) =
        (read("models/zoo/logreg_iris_double.csv"), read("models/zoo/logreg_iris_double.expected.csv"));
    let features = |row: usize| -> Vec<f64> { inputs[row][1..].iter().map(|v| v.parse().unwrap()).collect() };
    // WHEN its metadata is asked for, THEN it says FP64
    let metadata = http(&server, "GET", "/v2/models/iris64", &[], b"").await.json();
    assert_eq!(metadata["inputs"][0]["datatype"], "FP64", "{metadata}");
    // WHEN the rows come as TF Serving instances and as KServe v2 FP64 tensors
    let tf = post_json(&server, "/v1/models/iris64:predict", &json!({"instances": [features(0), features(1)]})).await;
    assert_eq!(tf.status, 200, "{:?}", tf.json());
    let data: Vec<f64> = features(0).into_iter().chain(features(1)).collect();
    let kserve = json!({"inputs": [{"name": "X", "datatype": "FP64", "shape": [2, 4], "data": data}]});
    let kserve = post_json(&server, "/v2/models/iris64/infer", &kserve).await;
    assert_eq!(kserve.status, 200, "{:?}", kserve.json());
    // THEN both answer onnxruntime's labels and probabilities
    let (tf, kserve) = (tf.json(), kserve.json());
    for row in 0..2 {
        assert_eq!(tf["predictions"][row]["label"].to_string(), expected[row][1]);
        assert_eq!(kserve["outputs"][0]["data"][row].to_string(), expected[row][1]);
        for k in 0..3 {
            let want: f64 = expected[row][2 + k].parse().unwrap();
            let got = tf["predictions"][row]["probabilities"][k].as_f64().unwrap();
            assert!((got - want).abs() < 1e-6, "row {row} probability {k}: {got} vs {want}");
            let got = kserve["outputs"][1]["data"][row * 3 + k].as_f64().unwrap();
            assert!((got - want).abs() < 1e-6, "row {row} probability {k}: {got} vs {want}");
        }
    }
    server.stop.trigger();
}

#[tokio::test(flavor = "current_thread")]
async fn a_text_models_requests_hold_their_tokens_until_answered() {
    // GIVEN a text classifier (64 tokens at most a text) whose requests may hold 100 tokens
    let files: ModelFiles<MemoryStore> = ModelFiles::new(None);
    let uri = repo("models/text/bert_tiny_topic/model.onnx").display().to_string();
    let loaded = Arc::new(files.load(files.stat(&uri).await.unwrap()).await.unwrap());
    let settings = BatchSettings {
        max_batch_rows: 256,
        max_delay: Duration::ZERO,
        queue_capacity: 16,
        parallel: 1,
        max_batch_tokens: 100,
    };
    let batcher = Batcher::start(loaded, settings, Metrics::new().batch_observer("topic", 1));
    let texts = |texts: &[&str]| {
        let mut batch = worker::engine::batch::Batch::default();
        for text in texts {
            batch.text.push(text.as_bytes());
        }
        batch.rows = texts.len();
        batch.rows_read = texts.len() as u64;
        batch
    };
    let long = "goal ".repeat(30);
    // WHEN one request brings two long texts (64 tokens each, at most): more than it may ever hold
    let answer = batcher.infer_columns(texts(&[&long, &long])).await;
    // THEN it is refused at once, and the server says 413
    assert_eq!(answer, Err(InferError::TooManyTokens { tokens: 128, limit: 100 }));
    let error = worker::serve::error::ServeError::from(answer.unwrap_err());
    assert_eq!(error.into_response_for(worker::serve::error::Protocol::Tei).status(), 413);
    // WHEN one long text waits for its answer, holding its 64 tokens
    let mut first = Box::pin(batcher.infer_columns(texts(&[&long])));
    poll_once(&mut first).await;
    // THEN another long one does not fit beside it: 503, try again
    let answer = batcher.infer_columns(texts(&[&long])).await;
    assert_eq!(answer, Err(InferError::TokensBusy { held: 64, limit: 100 }));
    let error = worker::serve::error::ServeError::from(answer.unwrap_err());
    assert_eq!(error.into_response_for(worker::serve::error::Protocol::OpenAi).status(), 503);
    // AND a short one (8 tokens at most) does
    assert!(batcher.infer_columns(texts(&["rain"])).await.is_ok());
    // AND once the first is answered, its tokens are given back
    assert!(first.await.is_ok());
    assert!(batcher.infer_columns(texts(&[&long])).await.is_ok());
}
