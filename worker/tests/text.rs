//! Text encoders in sentence-transformers' layout (`models/text/`, made by
//! `models/text_models.py`): each folder run by `worker transform` as it is, its embeddings
//! compared with onnxruntime's (within 1e-5) from CSV, JSON Lines and Parquet; broken folders
//! and bad texts say what is wrong.

use std::path::{Path, PathBuf};

use worker::engine::{CsvOptions, TransformOptions};
use worker::local_transform::{TransformRequest, TransformRun, run as transform_command};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-text-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn transform(model: &Path, input: &Path, output: &Path) -> anyhow::Result<TransformRun> {
    transform_command(TransformRequest {
        model: model.display().to_string(),
        model_repository: None,
        input: input.display().to_string(),
        output: output.display().to_string(),
        errors: None,
        options: TransformOptions { batch_size: 20, threads: 2, ..Default::default() },
        csv: CsvOptions::default(),
    })
    .await
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect()
}

/// onnxruntime's embeddings of a folder's texts, by row.
fn expected(folder: &str) -> Vec<Vec<f32>> {
    let rows = csv_rows(&repo(&format!("models/text/{folder}/expected.csv")));
    rows.iter().map(|r| r[1..].iter().map(|v| v.parse().unwrap()).collect()).collect()
}

fn assert_close(folder: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{folder}: rows");
    for (row, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{folder} row {}", row + 1);
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= 1e-5, "{folder} row {}: {a} where onnxruntime says {b}", row + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_folder_runs_as_the_hub_ships_it_and_gives_onnxruntimes_embeddings() {
    let dir = scratch("csv");
    for folder in ["bert_tiny_mean", "bert_tiny_cls"] {
        // GIVEN the folder and its texts: sentences, then empty, a space, quotes, tabs, a line
        // break, accents, CJK, emoji and 3,000 words (truncated to max_seq_length)
        let output = dir.join(format!("{folder}.csv"));
        let texts = repo(&format!("models/text/{folder}/texts.csv"));
        // WHEN worker transform embeds them
        let run = transform(&repo(&format!("models/text/{folder}")), &texts, &output).await.unwrap();
        // THEN every text has its embedding, in order: onnxruntime's, pooled and normalised as
        // the folder's modules say
        assert_eq!((run.summary.rows_in, run.summary.bad_rows), (49, 0), "{folder}");
        let rows = csv_rows(&output);
        // bert_tiny_cls's sluice.json passes the id through.
        let skip = usize::from(folder == "bert_tiny_cls");
        if skip == 1 {
            assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>()[..3], ["1", "2", "3"]);
        }
        let got: Vec<Vec<f32>> = rows.iter().map(|r| r[skip..].iter().map(|v| v.parse().unwrap()).collect()).collect();
        assert_eq!(got[0].len(), 32);
        assert_close(folder, &got, &expected(folder));
    }
    let norms: Vec<f32> =
        expected("bert_tiny_mean").iter().map(|e| e.iter().map(|v| v * v).sum::<f32>().sqrt()).collect();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "mean pooling is normalised: {norms:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_and_parquet_hold_each_embedding_as_one_list() {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    // GIVEN the texts as JSON Lines objects
    let dir = scratch("lists");
    let texts = csv_rows(&repo("models/text/bert_tiny_mean/texts.csv"));
    let input = dir.join("texts.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|r| serde_json::json!({"id": r[0].parse::<u32>().unwrap(), "text": r[1]}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let model = repo("models/text/bert_tiny_mean");
    let want = expected("bert_tiny_mean");
    // WHEN they are embedded into JSON Lines
    let output = dir.join("out.jsonl");
    transform(&model, &input, &output).await.unwrap();
    // THEN each line has an `embedding` array
    let got: Vec<Vec<f32>> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|row| row["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    assert_close("jsonl", &got, &want);
    // AND into Parquet, a fixed_size_list<float32> column, as vector stores load it
    let output = dir.join("out.parquet");
    transform(&model, &input, &output).await.unwrap();
    let file = bytes::Bytes::from(std::fs::read(&output).unwrap());
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut got = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch.column_by_name("embedding").unwrap().as_fixed_size_list();
        assert_eq!(column.value_length(), 32);
        for row in 0..column.len() {
            got.push(column.value(row).as_primitive::<Float32Type>().values().to_vec());
        }
    }
    assert_close("parquet", &got, &want);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_folders_and_bad_texts_say_what_is_wrong() {
    let dir = scratch("broken");
    let good = repo("models/text/bert_tiny_mean");
    let texts = repo("models/text/bert_tiny_mean/texts.csv");
    let copy = |name: &str, skip: &str| {
        let folder = dir.join(name);
        std::fs::create_dir_all(folder.join("1_Pooling")).unwrap();
        for file in
            ["model.onnx", "tokenizer.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"]
        {
            if file != skip {
                std::fs::copy(good.join(file), folder.join(file)).unwrap();
            }
        }
        folder
    };
    let failure = |result: anyhow::Result<TransformRun>| format!("{:#}", result.err().expect("a failure"));
    // GIVEN a folder without its tokenizer
    let folder = copy("no_tokenizer", "tokenizer.json");
    let error = failure(transform(&folder, &texts, &dir.join("a.csv")).await);
    assert!(error.contains("no tokenizer.json"), "{error}");
    // AND one whose tokenizer does not load
    let folder = copy("bad_tokenizer", "");
    std::fs::write(folder.join("tokenizer.json"), "{\"version\": \"1.0\", \"model\": 3}").unwrap();
    let error = failure(transform(&folder, &texts, &dir.join("b.csv")).await);
    assert!(error.contains("tokenizer.json does not load"), "{error}");
    // AND one whose ONNX is a table model, without the inputs and outputs of an encoder
    let folder = copy("table_model", "model.onnx");
    std::fs::copy(repo("models/iris_logreg.onnx"), folder.join("model.onnx")).unwrap();
    let error = failure(transform(&folder, &texts, &dir.join("c.csv")).await);
    assert!(error.contains("a text encoder takes input_ids"), "{error}");
    // AND one whose pooling configuration turns on no mode
    let folder = copy("no_pooling", "1_Pooling/config.json");
    std::fs::write(folder.join("1_Pooling/config.json"), "{\"word_embedding_dimension\": 32}").unwrap();
    let error = failure(transform(&folder, &texts, &dir.join("d.csv")).await);
    assert!(error.contains("1_Pooling/config.json") && error.contains("no pooling mode"), "{error}");
    // WHEN texts come without a text column, or as null
    let input = dir.join("no_text.csv");
    std::fs::write(&input, "id,body\n1,hello\n").unwrap();
    let error = failure(transform(&good, &input, &dir.join("e.csv")).await);
    assert!(error.contains("\"text\"") && error.contains("body"), "{error}");
    let input = dir.join("nulls.jsonl");
    let mut lines: Vec<&str> = vec!["{\"text\": \"hello\"}", "{\"text\": null}", "{\"text\": 3}", "{\"text\": \"\"}"];
    lines.extend(std::iter::repeat_n("{\"text\": \"more\"}", 8));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = dir.join("nulls.out.jsonl");
    let run = transform(&good, &input, &output).await.unwrap();
    // THEN a null is a bad row with its line; a number is its text, an empty text is embedded
    assert_eq!((run.summary.rows_out, run.summary.bad_rows), (11, 1));
    let errors = std::fs::read_to_string(dir.join("nulls.out.jsonl.errors.csv")).unwrap();
    assert!(errors.contains("\n2,") && errors.contains("is null, not text"), "{errors}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_model_describes_a_text_encoder() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["check-model", "--model", &repo("models/text/bert_tiny_cls").display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    for line in [
        "a text encoder: texts of up to 48 tokens (longer ones truncated), cls pooling, 32 dimensions",
        "inputs, from the tokenizer: input_ids, attention_mask, token_type_ids",
        "  fed from columns: text",
        "  passed through to the output: id",
        "runs: 4 synthetic empty texts",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}
