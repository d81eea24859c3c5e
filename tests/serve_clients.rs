//! `worker serve`, the real binary, driven by the clients people use: Triton's official Python
//! client over KServe v2, and curl with the requests of examples/serve/requests.sh (which `make
//! serve` prints and the README quotes), each answer checked as printed. The server runs as
//! deployed: inference needs an API key, the repository API a key of its own, and each client
//! is checked without a key, with a wrong one and with the right one.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sluice_e2e::repo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The server's inference keys (two, as during a rotation) and its repository API's key.
const API_KEY: &str = "sluice-test-key-0123456789";
const NEXT_API_KEY: &str = "sluice-next-key-9876543210";
const REPOSITORY_API_KEY: &str = "sluice-admin-key-0123456789";

/// `worker serve` on free ports of 127.0.0.1 (HTTP and gRPC); killed when dropped.
struct Served {
    child: Child,
    port: u16,
    grpc_port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn serve(args: &[&str]) -> Served {
    let worker = sluice_local::binaries::workspace_binary("worker").unwrap();
    // A free port may be taken by another test's server before this one binds it: then the
    // server exits, and it is started again on other ports.
    for _ in 0..3 {
        let port = sluice_local::moto::free_port().unwrap();
        let grpc_port = sluice_local::moto::free_port().unwrap();
        let mut child = Command::new(&worker)
            .arg("serve")
            .args(args)
            .args(["--port", &port.to_string(), "--grpc-port", &grpc_port.to_string()])
            .env("RUST_LOG", "warn")
            .env("API_KEYS", format!("{API_KEY},{NEXT_API_KEY}"))
            .env("REPOSITORY_API_KEYS", REPOSITORY_API_KEY)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                eprintln!("worker serve exited before it was ready ({status}): trying other ports");
                break;
            }
            if get(port, "/v2/health/ready").await == Some(200) {
                return Served { child, port, grpc_port };
            }
            assert!(tokio::time::Instant::now() < deadline, "worker serve was not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("worker serve did not start on three pairs of free ports");
}

/// The status of a GET with the API key, or `None` when nothing answers.
async fn get(port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

/// Runs a client check of tests/clients against a server of the example repository and one of
/// the zoo's ColumnTransformer as "wine", on `port` (HTTP or gRPC) of each.
async fn client_check(script: &str, port: fn(&Served) -> u16, passed: &str) {
    let python = repo(".tools/tritonclient/bin/python");
    assert!(python.exists(), "{} is missing: run `make setup`", python.display());
    let served = serve(&["--model-repository", &repo("models/repository").display().to_string()]).await;
    let typed = repo("models/zoo/column_transformer_int_categories_ignore_unknown.onnx").display().to_string();
    let typed = serve(&["--model", &typed, "--name", "wine"]).await;
    let output = Command::new(python)
        .arg(repo("tests/clients").join(script))
        .arg(format!("127.0.0.1:{}", port(&served)))
        .arg(repo(""))
        .arg(format!("127.0.0.1:{}", port(&typed)))
        .env("SLUICE_API_KEY", NEXT_API_KEY)
        .env("SLUICE_REPOSITORY_API_KEY", REPOSITORY_API_KEY)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(passed), "{stdout}");
}

#[tokio::test]
async fn tritons_python_client_speaks_kserve_v2_with_the_server() {
    client_check("tritonclient_check.py", |s| s.port, "tritonclient: all checks passed").await;
}

#[tokio::test]
async fn grpc_clients_speak_kserve_v2_and_tf_serving_with_the_server() {
    client_check("grpc_check.py", |s| s.grpc_port, "grpc: all checks passed").await;
}

#[tokio::test]
async fn the_grpc_example_prints_what_it_says() {
    let python = repo(".tools/tritonclient/bin/python");
    let served = serve(&["--model-repository", &repo("models/repository").display().to_string()]).await;
    let script = repo("examples/serve/grpc_client.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(format!("127.0.0.1:{}", served.grpc_port))
        .env("SLUICE_API_KEY", API_KEY)
        .env("SLUICE_REPOSITORY_API_KEY", REPOSITORY_API_KEY)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(script).unwrap();
    let promised: Vec<&str> =
        text.lines().skip_while(|l| *l != "# prints:").skip(1).filter_map(|l| l.strip_prefix("# ")).collect();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed.lines().collect::<Vec<_>>(), promised);
}

/// The requests of examples/serve/requests.sh with the answers printed under them.
fn examples() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(repo("examples/serve/requests.sh")).unwrap();
    let mut examples: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("curl ") {
            examples.push((line.to_owned(), Vec::new()));
        } else if let (Some(answer), Some((_, answers))) = (line.strip_prefix("# => "), examples.last_mut()) {
            answers.push(answer.to_owned());
        }
    }
    examples
}

#[tokio::test]
async fn the_curl_examples_answer_as_printed() {
    let curl = Path::new("/usr/bin/curl");
    assert!(curl.exists(), "curl is needed for this test (apt-get install curl)");
    let served = serve(&["--model-repository", &repo("models/repository").display().to_string()]).await;
    let examples = examples();
    assert!(examples.len() >= 8, "{examples:?}");
    for (command, answer) in &examples {
        let command = command.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", served.port));
        let output = Command::new("bash")
            .args(["-c", &command])
            .env("SLUICE_API_KEY", API_KEY)
            .current_dir(repo(""))
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{command}: {output:?}");
        let got = String::from_utf8(output.stdout).unwrap();
        if answer.is_empty() {
            // /metrics: its counts depend on what ran before; it must be the text format.
            assert!(got.contains("# TYPE sluice_requests counter"), "{got}");
            // the request without a key before it was counted, by its reason
            assert!(
                got.contains(r#"sluice_unauthorized_requests_total{protocol="tfserving",reason="no_key"} 1"#),
                "{got}"
            );
            continue;
        }
        assert_eq!(got.trim_end(), answer.join("\n"), "{command}");
    }
    // AND the README shows the same requests
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    for (command, _) in examples.iter().take(3) {
        assert!(readme.contains(command.as_str()), "README.md lacks {command}");
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let mut served =
        serve(&["--model", &repo("models/half_plus_two.onnx").display().to_string(), "--name", "hp2"]).await;
    assert_eq!(get(served.port, "/v1/models/hp2").await, Some(200));
    let pid = served.child.id().unwrap();
    assert!(sluice_local::process::signal_process(pid, sluice_local::Signal::Term));
    let status = tokio::time::timeout(Duration::from_secs(30), served.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(get(served.port, "/ping").await, None, "nothing listens any more");
}

#[tokio::test]
async fn openais_python_client_gets_embeddings_from_a_text_encoder() {
    // GIVEN the server with a sentence-transformers folder as "embedder"
    let python = repo(".tools/openai/bin/python");
    assert!(python.exists(), "{} is missing: run `make setup`", python.display());
    let folder = repo("models/text/bert_tiny_mean").display().to_string();
    let served = serve(&["--model", &folder, "--name", "embedder"]).await;
    let texts: Vec<String> =
        sluice_e2e::csv_rows(&std::fs::read(repo("models/text/bert_tiny_mean/texts.csv")).unwrap())
            .into_iter()
            .map(|r| r[1].clone())
            .collect();
    let texts_file = std::env::temp_dir().join(format!("sluice-openai-texts-{}.json", std::process::id()));
    std::fs::write(&texts_file, serde_json::to_vec(&texts).unwrap()).unwrap();
    // WHEN OpenAI's client asks for their embeddings, as base64 (its default) and as floats
    let output = Command::new(python)
        .arg(repo("tests/clients/openai_check.py"))
        .arg(format!("127.0.0.1:{}", served.port))
        .arg("embedder")
        .arg(&texts_file)
        .env("SLUICE_API_KEY", API_KEY)
        .output()
        .await
        .unwrap();
    std::fs::remove_file(&texts_file).unwrap();
    assert!(output.status.success(), "openai_check.py failed: {}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // THEN both are onnxruntime's embeddings, in order
    let expected: Vec<Vec<f64>> =
        sluice_e2e::csv_rows(&std::fs::read(repo("models/text/bert_tiny_mean/expected.csv")).unwrap())
            .iter()
            .map(|r| r[1..].iter().map(|v| v.parse().unwrap()).collect())
            .collect();
    for form in ["base64", "float"] {
        let got = answer[form].as_array().unwrap();
        assert_eq!(got.len(), expected.len(), "{form}");
        for (row, (g, w)) in got.iter().zip(&expected).enumerate() {
            let g: Vec<f64> = g.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(g.len(), 32);
            assert!(g.iter().zip(w).all(|(a, b)| (a - b).abs() <= 1e-5), "{form} row {}: {g:?} vs {w:?}", row + 1);
        }
    }
    // (One text alone runs unpadded: the same numbers within float rounding.)
    let single = answer["single"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap());
    assert!(single.zip(&expected[0]).all(|(a, b)| (a - b).abs() <= 1e-5), "{}", answer["single"]);
    // AND usage counts the tokens read (two special tokens a text at least), and errors come in
    // OpenAI's shape, so the client raises its own exceptions
    let usage = answer["usage"].as_array().unwrap();
    assert!(usage[0].as_u64().unwrap() >= 2 * expected.len() as u64 && usage[0] == usage[1], "{usage:?}");
    assert_eq!(answer["errors"]["wrong_key"], serde_json::json!([401, "invalid_api_key"]));
    assert_eq!(answer["errors"]["unknown_model"], serde_json::json!([404, "model_not_found"]));
    let token_ids = answer["errors"]["token_ids"].to_string();
    assert!(token_ids.contains("400") && token_ids.contains("token ids"), "{token_ids}");
}

/// A POST of `body` with curl (as a TEI user sends one), with `key`: the status and the body.
async fn curl_post(port: u16, path: &str, body: &str, key: &str) -> (u16, serde_json::Value) {
    curl(port, path, "application/json", body, key).await
}

/// A POST of `body` as `content_type` with curl, with `key`: the status and the body as JSON.
async fn curl(port: u16, path: &str, content_type: &str, body: &str, key: &str) -> (u16, serde_json::Value) {
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {key}")])
        .args(["-H", &format!("Content-Type: {content_type}"), "--data-binary", body])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let (answer, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(answer).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn teis_embed_route_answers_as_text_embeddings_inference_does() {
    // GIVEN the server with a text encoder, which truncates texts at 48 tokens
    let folder = repo("models/text/bert_tiny_mean").display().to_string();
    let served = serve(&["--model", &folder, "--name", "embedder"]).await;
    let rows = sluice_e2e::csv_rows(&std::fs::read(repo("models/text/bert_tiny_mean/texts.csv")).unwrap());
    let expected: Vec<Vec<f64>> =
        sluice_e2e::csv_rows(&std::fs::read(repo("models/text/bert_tiny_mean/expected.csv")).unwrap())
            .iter()
            .map(|r| r[1..].iter().map(|v| v.parse().unwrap()).collect())
            .collect();
    // WHEN TEI's /embed is asked for two texts, as TEI's clients ask
    let body = serde_json::json!({"inputs": [rows[0][1], rows[1][1]]}).to_string();
    let (status, answer) = curl_post(served.port, "/embed", &body, API_KEY).await;
    // THEN it answers one array a text: the embeddings (normalised, as asked by default)
    assert_eq!(status, 200, "{answer}");
    let got = answer.as_array().unwrap();
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(&expected) {
        let g: Vec<f64> = g.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(g.iter().zip(w).all(|(a, b)| (a - b).abs() <= 1e-5), "{g:?} vs {w:?}");
    }
    let (status, one) =
        curl_post(served.port, "/embed", &serde_json::json!({"inputs": rows[0][1]}).to_string(), API_KEY).await;
    assert_eq!((status, one.as_array().map(Vec::len)), (200, Some(1)));
    // AND a text longer than the model reads is a 413 unless truncate is set, in TEI's shape
    let long = &rows.last().unwrap()[1];
    let (status, error) =
        curl_post(served.port, "/embed", &serde_json::json!({"inputs": long}).to_string(), API_KEY).await;
    assert_eq!((status, error["error_type"].as_str()), (413, Some("Validation")), "{error}");
    let truncated = serde_json::json!({"inputs": long, "truncate": true}).to_string();
    assert_eq!(curl_post(served.port, "/embed", &truncated, API_KEY).await.0, 200);
    // AND a request without the key is refused
    let (status, error) = curl_post(served.port, "/embed", &body, "wrong-key-0123456789").await;
    assert_eq!((status, error["error_type"].as_str()), (401, Some("Unauthorized")), "{error}");
}

/// A folder's texts and the Python libraries' answers (`models/text_heads.py`), by row.
fn text_rows(folder: &str, file: &str) -> Vec<Vec<String>> {
    sluice_e2e::csv_rows(&std::fs::read(repo(&format!("models/text/{folder}/{file}"))).unwrap())
}

#[tokio::test]
async fn teis_predict_and_rerank_routes_answer_as_text_embeddings_inference_does() {
    // GIVEN the server with a topic classifier, and another with a cross-encoder
    let classifier =
        serve(&["--model", &repo("models/text/bert_tiny_topic").display().to_string(), "--name", "topic"]).await;
    let reranker =
        serve(&["--model", &repo("models/text/bert_tiny_reranker").display().to_string(), "--name", "reranker"]).await;
    let texts = text_rows("bert_tiny_topic", "texts.csv");
    let expected = text_rows("bert_tiny_topic", "expected.csv");
    let labels = ["markets", "sports", "weather"];
    // WHEN /predict is asked for two texts
    let body = serde_json::json!({"inputs": [texts[0][1], texts[1][1]]}).to_string();
    let (status, answer) = curl_post(classifier.port, "/predict", &body, API_KEY).await;
    // THEN each text has every label with its probability, best first: transformers' pipeline's
    assert_eq!(status, 200, "{answer}");
    for (row, got) in answer.as_array().unwrap().iter().enumerate() {
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0]["label"].as_str(), Some(expected[row][1].as_str()), "the pipeline's label first");
        let scores: Vec<f64> = got.iter().map(|g| g["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
        for g in got {
            let at = labels.iter().position(|l| g["label"] == *l).unwrap();
            let want: f64 = expected[row][2 + at].parse().unwrap();
            assert!((g["score"].as_f64().unwrap() - want).abs() <= 1e-5, "{g} vs {want}");
        }
    }
    // AND one text gets one list; a pair, which a classifier does not take, is a 400
    let (status, one) =
        curl_post(classifier.port, "/predict", &serde_json::json!({"inputs": texts[2][1]}).to_string(), API_KEY).await;
    assert_eq!((status, one[0]["label"].as_str()), (200, Some(expected[2][1].as_str())), "{one}");
    let pairs = serde_json::json!({"inputs": [["a", "b"]]}).to_string();
    assert_eq!(curl_post(classifier.port, "/predict", &pairs, API_KEY).await.0, 400);
    // WHEN /rerank is asked to rank the passages asked with one query
    let pairs = text_rows("bert_tiny_reranker", "texts.csv");
    let scores = text_rows("bert_tiny_reranker", "expected.csv");
    let asked: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i][1] == "currency").collect();
    assert!(asked.len() >= 3, "the texts ask one query of several passages");
    let texts: Vec<&str> = asked.iter().map(|&i| pairs[i][2].as_str()).collect();
    let body = serde_json::json!({"query": "currency", "texts": texts, "return_text": true}).to_string();
    let (status, answer) = curl_post(reranker.port, "/rerank", &body, API_KEY).await;
    // THEN each passage has the CrossEncoder's score, best first, with its index and text
    assert_eq!(status, 200, "{answer}");
    let ranked = answer.as_array().unwrap();
    assert_eq!(ranked.len(), texts.len());
    let got: Vec<f64> = ranked.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(got.windows(2).all(|w| w[0] >= w[1]), "best first: {got:?}");
    for r in ranked {
        let index = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["text"].as_str(), Some(texts[index]));
        let want: f64 = scores[asked[index]][1].parse().unwrap();
        assert!((r["score"].as_f64().unwrap() - want).abs() <= 1e-5, "{r} vs {want}");
    }
    // AND /predict takes the cross-encoder's pairs too, and a passage longer than the model
    // reads is a 413 unless truncate is set
    let long = &pairs.last().unwrap()[2];
    let body = serde_json::json!({"inputs": ["currency", long]}).to_string();
    let (status, error) = curl_post(reranker.port, "/predict", &body, API_KEY).await;
    assert_eq!((status, error["error_type"].as_str()), (413, Some("Validation")), "{error}");
    let body = serde_json::json!({"inputs": ["currency", long], "truncate": true}).to_string();
    let (status, answer) = curl_post(reranker.port, "/predict", &body, API_KEY).await;
    assert_eq!((status, answer.as_array().map(Vec::len)), (200, Some(1)), "{answer}");
    // AND the classifier's server has no cross-encoder to rerank with, in TEI's error shape
    let body = serde_json::json!({"query": "currency", "texts": ["bonds"]}).to_string();
    let (status, error) = curl_post(classifier.port, "/rerank", &body, API_KEY).await;
    assert_eq!(status, 404, "{error}");
    assert!(error["error"].as_str().unwrap().contains("no cross-encoder"), "{error}");
}

/// A POST of `body` as `content_type` with curl and the key: the status and the body as JSON.
async fn curl_post_as(port: u16, path: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
    curl(port, path, content_type, body, API_KEY).await
}

#[tokio::test]
async fn text_models_answer_tf_serving_kserve_and_torchserve_requests() {
    // GIVEN the server with a topic classifier and a token classifier
    let dir = std::env::temp_dir().join(format!("sluice-text-repository-{}", std::process::id()));
    for (name, folder) in [("topic", "bert_tiny_topic"), ("ner", "bert_tiny_ner")] {
        let version = dir.join(name).join("1");
        std::fs::create_dir_all(&version).unwrap();
        for entry in std::fs::read_dir(repo(&format!("models/text/{folder}"))).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, version.join(path.file_name().unwrap())).unwrap();
        }
    }
    let served = serve(&["--model-repository", &dir.display().to_string()]).await;
    let texts = text_rows("bert_tiny_topic", "texts.csv");
    let expected = text_rows("bert_tiny_topic", "expected.csv");
    // WHEN TF Serving's predict gets bare strings
    let body = serde_json::json!({"instances": [texts[0][1], texts[1][1]]}).to_string();
    let (status, answer) = curl_post_as(served.port, "/v1/models/topic:predict", "application/json", &body).await;
    // THEN each has the pipeline's label and probabilities
    assert_eq!(status, 200, "{answer}");
    for (row, prediction) in answer["predictions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(prediction["label"].as_str(), Some(expected[row][1].as_str()), "{prediction}");
        let got = prediction["probabilities"].as_array().unwrap();
        for (g, w) in got.iter().zip(&expected[row][2..]) {
            assert!((g.as_f64().unwrap() - w.parse::<f64>().unwrap()).abs() <= 1e-5, "{g} vs {w}");
        }
    }
    // AND KServe v2 takes the text as a BYTES tensor, and answers the labels as BYTES
    let body =
        serde_json::json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[2][1]]}]});
    let (status, answer) =
        curl_post_as(served.port, "/v2/models/topic/infer", "application/json", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let label = answer["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "label").unwrap();
    assert_eq!((label["datatype"].as_str(), label["data"][0].as_str()), (Some("BYTES"), Some(expected[2][1].as_str())));
    // AND TorchServe takes one text as text/plain, and a token classifier answers its entities
    // as JSON (a JSON string in KServe's BYTES)
    let ner_texts = text_rows("bert_tiny_ner", "texts.csv");
    let ner_expected = text_rows("bert_tiny_ner", "expected.csv");
    let (status, answer) = curl_post_as(served.port, "/predictions/ner", "text/plain", &ner_texts[0][1]).await;
    assert_eq!(status, 200, "{answer}");
    let want: serde_json::Value = serde_json::from_str(&ner_expected[0][1]).unwrap();
    let spans = |list: &serde_json::Value| -> Vec<(String, u64, u64)> {
        let list = list.as_array().unwrap_or_else(|| panic!("a list of entities: {list}"));
        list.iter()
            .map(|e| (e["word"].as_str().unwrap().to_owned(), e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap()))
            .collect()
    };
    assert!(!spans(&want).is_empty());
    assert_eq!(spans(&answer["entities"]), spans(&want));
    let body =
        serde_json::json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [ner_texts[0][1]]}]});
    let (status, answer) =
        curl_post_as(served.port, "/v2/models/ner/infer", "application/json", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let json: serde_json::Value = serde_json::from_str(answer["outputs"][0]["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(spans(&json), spans(&want));
    drop(served);
    std::fs::remove_dir_all(&dir).unwrap();
}
