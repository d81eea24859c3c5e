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
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {key}")])
        .args(["-H", "Content-Type: application/json", "-d", body])
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
