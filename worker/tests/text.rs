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
fn check_model_describes_each_kind_of_text_model() {
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
    for (folder, lines) in [
        (
            "bert_tiny_topics",
            &[
                "a text classifier: texts of up to 64 tokens (longer ones truncated), 3 labels (markets, sports, weather), each on its own (sigmoid: multi-label)",
                "\"probabilities\" (3 values) -> columns probabilities_markets, probabilities_sports, probabilities_weather",
            ][..],
        ),
        (
            "bert_tiny_reranker",
            &[
                "a cross-encoder: pairs of texts of up to 64 tokens (longer ones truncated), one score a row (sigmoid)",
                "  fed from columns: text, text_pair",
            ],
        ),
        (
            "bert_tiny_ner",
            &["a token classifier: texts of up to 64 tokens", "\"entities\" (a JSON array a row) -> columns entities"],
        ),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["check-model", "--model", &repo(&format!("models/text/{folder}")).display().to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{text}");
        for line in lines {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}

/// A folder's expected answers (`models/text_heads.py`: transformers' pipelines and
/// sentence-transformers' CrossEncoder), by column name.
fn expected_table(folder: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let path = repo(&format!("models/text/{folder}/expected.csv"));
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(str::to_owned).collect();
    (header, csv_rows(&repo(&format!("models/text/{folder}/expected.csv"))))
}

/// An entity's group, word, start and end.
type Span = (String, String, u64, u64);

/// Entities' spans, and their scores.
fn entities(json: &serde_json::Value) -> (Vec<Span>, Vec<f64>) {
    let list = json.as_array().unwrap_or_else(|| panic!("entities are an array: {json}"));
    let spans = list
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap().to_owned();
            (text("entity_group"), text("word"), e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap())
        })
        .collect();
    (spans, list.iter().map(|e| e["score"].as_f64().unwrap()).collect())
}

/// `got` (the output's columns after the id) equal to the Python libraries' answers: labels and
/// entity spans exactly, numbers within 1e-5.
fn assert_answers(folder: &str, got: &[Vec<String>], want: &[Vec<String>]) {
    assert_eq!(got.len(), want.len(), "{folder}: rows");
    for (row, (g, w)) in got.iter().zip(want).enumerate() {
        let at = format!("{folder} row {}", row + 1);
        assert_eq!(g.len(), w.len() - 1, "{at}");
        for (a, b) in g.iter().zip(&w[1..]) {
            match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(a), Ok(b)) => assert!((a - b).abs() <= 1e-5, "{at}: {a} where Python says {b}"),
                _ if b.starts_with('[') => {
                    let (a, b) = (serde_json::from_str(a).unwrap(), serde_json::from_str(b).unwrap());
                    let ((spans_a, scores_a), (spans_b, scores_b)) = (entities(&a), entities(&b));
                    assert_eq!(spans_a, spans_b, "{at}");
                    assert!(scores_a.iter().zip(&scores_b).all(|(a, b)| (a - b).abs() <= 1e-5), "{at}: {a} vs {b}");
                }
                _ => assert_eq!(a, b, "{at}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn classifiers_cross_encoders_and_token_classifiers_answer_as_the_python_pipelines() {
    let dir = scratch("heads");
    // Rows, and rows longer than the 64 tokens the models read (as `tokenizers` counts them).
    for (folder, rows, truncated) in [
        ("bert_tiny_topic", 49, 1),
        ("bert_tiny_topics", 39, 1),
        ("bert_tiny_reranker", 53, 3),
        ("bert_tiny_ner", 49, 1),
    ] {
        // GIVEN the folder as optimum / sentence-transformers leave it, and its texts (pairs for
        // the cross-encoder), the hard ones and one truncated among them
        let output = dir.join(format!("{folder}.csv"));
        let texts = repo(&format!("models/text/{folder}/texts.csv"));
        // WHEN worker transform runs it
        let run = transform(&repo(&format!("models/text/{folder}")), &texts, &output).await.unwrap();
        // THEN each row's answer is the pipeline's: the label and each class's probability
        // (softmax, or sigmoid for multi-label), the cross-encoder's sigmoid score, the entities
        // grouped as aggregation_strategy="simple" groups them
        assert_eq!((run.summary.rows_in, run.summary.bad_rows), (rows, 0), "{folder}");
        // AND the rows cut to the model's maximum are counted
        assert_eq!(run.summary.truncated, truncated, "{folder}");
        let (header, want) = expected_table(folder);
        let got = csv_rows(&output);
        let mut reader = csv::Reader::from_path(&output).unwrap();
        let got_header: Vec<&str> = reader.headers().unwrap().iter().collect::<Vec<_>>();
        assert_eq!(got_header, header[1..], "{folder}");
        assert_answers(folder, &got, &want);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn entities_are_json_arrays_and_pairs_come_from_the_columns_configured() {
    // GIVEN the token classifier's texts as JSON Lines
    let dir = scratch("entities");
    let input = dir.join("texts.jsonl");
    let texts = csv_rows(&repo("models/text/bert_tiny_ner/texts.csv"));
    let lines: Vec<String> = texts.iter().map(|r| serde_json::json!({"id": r[0], "text": r[1]}).to_string()).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    // WHEN its entities are written as JSON Lines
    let output = dir.join("out.jsonl");
    transform(&repo("models/text/bert_tiny_ner"), &input, &output).await.unwrap();
    // THEN each line's `entities` is an array of objects, not a string
    let (_, want) = expected_table("bert_tiny_ner");
    let got: Vec<Vec<String>> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|row| vec![row["entities"].to_string()])
        .collect();
    assert_answers("bert_tiny_ner jsonl", &got, &want);
    // AND a cross-encoder whose sluice.json names its two columns reads the pairs from them,
    // passing the id through
    let folder = dir.join("reranker");
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(repo("models/text/bert_tiny_reranker")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, folder.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(folder.join("sluice.json"), r#"{"features": ["query", "passage"], "passthrough": ["id"]}"#).unwrap();
    let pairs = csv_rows(&repo("models/text/bert_tiny_reranker/texts.csv"));
    let mut writer = csv::Writer::from_path(dir.join("pairs.csv")).unwrap();
    writer.write_record(["passage", "id", "query"]).unwrap();
    for row in &pairs {
        writer.write_record([&row[2], &row[0], &row[1]]).unwrap();
    }
    writer.flush().unwrap();
    let output = dir.join("scores.csv");
    transform(&folder, &dir.join("pairs.csv"), &output).await.unwrap();
    let (_, want) = expected_table("bert_tiny_reranker");
    let got = csv_rows(&output);
    assert_eq!(
        got.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        want.iter().map(|r| r[0].clone()).collect::<Vec<_>>()
    );
    assert_answers("reranker from query, passage", &got.iter().map(|r| r[1..].to_vec()).collect::<Vec<_>>(), &want);
    std::fs::remove_dir_all(&dir).unwrap();
}
