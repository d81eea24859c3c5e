//! Text encoders end to end: a sentence-transformers folder as a version of the model repository
//! in S3 (moto), files of texts through the trigger and the workers, embeddings compared with
//! onnxruntime's (models/text/, made by models/text_models.py).

use std::path::Path;
use std::time::Duration;

use shared::JobStatus;
use sluice_e2e::*;
use sluice_local::{LocalModels, PipelineOptions};

const DRAIN: Duration = Duration::from_secs(180);

/// A model repository holding `models/text/bert_tiny_mean` as `embedder` version 1, its sidecar
/// passing the id through.
fn repository(root: &Path) {
    let source = repo("models/text/bert_tiny_mean");
    let version = root.join("embedder/1");
    std::fs::create_dir_all(version.join("1_Pooling")).unwrap();
    for file in [
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(source.join(file), version.join(file)).unwrap();
    }
    std::fs::write(version.join("model.onnx.json"), r#"{"passthrough": ["id"]}"#).unwrap();
}

#[tokio::test]
async fn a_text_encoder_from_the_repository_embeds_files_through_the_queue() {
    // GIVEN the encoder's folder as a repository version, the default model
    let root = std::env::temp_dir().join(format!("sluice-text-repository-{}", std::process::id()));
    repository(&root);
    let options = PipelineOptions {
        models: LocalModels::Repository { folder: root.clone(), default: Some("embedder@1".into()) },
        ..quick_options()
    };
    let mut pipeline = start(options).await;
    // WHEN its texts are uploaded as CSV, and as JSON Lines under the model's folder
    let texts = std::fs::read(repo("models/text/bert_tiny_mean/texts.csv")).unwrap();
    let rows = csv_rows(&texts);
    let jsonl: String = rows
        .iter()
        .map(|r| format!("{}\n", serde_json::json!({"id": r[0].parse::<u32>().unwrap(), "text": r[1]})))
        .collect();
    pipeline.put_input("docs/texts.csv", texts.clone()).await.unwrap();
    pipeline.put_input("embedder/texts.jsonl", jsonl).await.unwrap();
    pipeline.wait_until_drained(DRAIN).await.unwrap();
    // THEN both ran the encoder, and each row's embedding is onnxruntime's, after its id
    let expected: Vec<Vec<f32>> = csv_rows(&std::fs::read(repo("models/text/bert_tiny_mean/expected.csv")).unwrap())
        .iter()
        .map(|r| r[1..].iter().map(|v| v.parse().unwrap()).collect())
        .collect();
    let close = |key: &str, got: Vec<(String, Vec<f32>)>| {
        assert_eq!(got.len(), expected.len(), "{key}");
        for (row, ((id, g), w)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(id, &(row + 1).to_string(), "{key}");
            assert_eq!(g.len(), 32, "{key}");
            assert!(g.iter().zip(w).all(|(a, b)| (a - b).abs() <= 1e-5), "{key} row {}: {g:?} vs {w:?}", row + 1);
        }
    };
    for key in ["docs/texts.csv", "embedder/texts.jsonl"] {
        let report = report(&pipeline, key).await;
        assert_eq!(report.status, JobStatus::Succeeded, "{key}: {:?}", report.reason);
        assert_eq!((report.model.name.as_deref(), report.model.version), (Some("embedder"), Some(1)));
        assert_eq!(report.rows.output, 49);
        // The 3,000-word text was cut to the 48 tokens the encoder reads, and the report says so.
        assert_eq!(report.rows.truncated, 1);
    }
    let csv = csv_rows(&object(&pipeline, "docs/texts.csv.out").await.expect("the CSV output"));
    close(
        "csv",
        csv.into_iter().map(|r| (r[0].clone(), r[1..].iter().map(|v| v.parse().unwrap()).collect())).collect(),
    );
    let jsonl =
        String::from_utf8(object(&pipeline, "embedder/texts.jsonl.out").await.expect("the JSON Lines output")).unwrap();
    let objects: Vec<(String, Vec<f32>)> = jsonl
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|o| {
            let embedding = o["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            (o["id"].to_string(), embedding)
        })
        .collect();
    close("jsonl", objects);
    pipeline.shutdown().await;
    std::fs::remove_dir_all(&root).unwrap();
}
