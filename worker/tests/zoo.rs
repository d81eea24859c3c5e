//! The model zoo (`models/zoo/`, made by `models/zoo.py`): every tabular model family the
//! README lists, exported as its users export it, run by `worker transform` over its held-out
//! rows and compared with onnxruntime's outputs: labels equal, numbers within 1e-5 (relative,
//! or absolute below 1).
//!
//! One explained exception: an SVM's probabilities come from libsvm's pairwise coupling, an
//! iteration that stops once within 0.005 / classes of its fixed point, so the last-bit
//! differences of kernel sums (onnxruntime sums them in its matrix product's order) can end it
//! at a different step: within 1e-4.

use std::path::PathBuf;

use serde_json::Value;
use worker::engine::{CsvOptions, TransformOptions};
use worker::local_transform::{TransformRequest, run as transform_command};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect()
}

/// The differences between sluice's output and onnxruntime's for one model, if any.
fn differences(name: &str, got: &[Vec<String>], want: &[Vec<String>], tolerance: f64) -> Vec<String> {
    let mut problems = Vec::new();
    if got.len() != want.len() {
        return vec![format!("{name}: {} rows out, onnxruntime {}", got.len(), want.len())];
    }
    for (g, w) in got.iter().zip(want) {
        if g.len() != w.len() {
            problems.push(format!("{name} id {}: {} columns, onnxruntime {}", w[0], g.len(), w.len()));
            continue;
        }
        for (col, (a, b)) in g.iter().zip(w).enumerate() {
            let same = match (a.parse::<f64>(), b.parse::<f64>()) {
                // A label that reads as a number must still be the same label.
                _ if a == b => true,
                (Ok(x), Ok(y)) => (x - y).abs() <= tolerance * y.abs().max(1.0) || (x.is_nan() && y.is_nan()),
                _ => false,
            };
            if !same {
                problems.push(format!("{name} id {} column {col}: {a} where onnxruntime says {b}", w[0]));
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread")]
async fn every_model_of_the_zoo_gives_onnxruntimes_answers() {
    // GIVEN the zoo's models, inputs and onnxruntime's outputs
    let manifest: Value = serde_json::from_slice(&std::fs::read(repo("models/zoo/zoo.json")).unwrap()).unwrap();
    let models = manifest.as_array().unwrap();
    assert!(models.len() >= 30, "the zoo has {} models", models.len());
    let dir = std::env::temp_dir().join(format!("sluice-zoo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut problems = Vec::new();
    for entry in models {
        let name = entry["name"].as_str().unwrap();
        let output = dir.join(format!("{name}.out"));
        // WHEN worker transform runs the model over its rows
        let request = TransformRequest {
            model: repo(&format!("models/zoo/{name}.onnx")).display().to_string(),
            model_repository: None,
            input: repo(&format!("models/zoo/{name}.csv")).display().to_string(),
            output: output.display().to_string(),
            errors: None,
            options: TransformOptions { batch_size: 32, threads: 2, ..Default::default() },
            csv: CsvOptions::default(),
        };
        match transform_command(request).await {
            Err(err) => problems.push(format!("{name}: {err:#}")),
            // THEN every row comes out, with onnxruntime's labels and numbers
            Ok(run) => {
                let want = rows(&repo(&format!("models/zoo/{name}.expected.csv")));
                if run.summary.bad_rows != 0 {
                    problems.push(format!("{name}: {} bad rows", run.summary.bad_rows));
                }
                let tolerance = if entry["family"] == "SVM" { 1e-4 } else { 1e-5 };
                problems.extend(differences(name, &rows(&output), &want, tolerance).into_iter().take(5));
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn a_model_that_cannot_run_is_refused_with_the_operator_named() {
    // GIVEN a model that takes maps, not tables
    let bytes = std::fs::read(repo("models/zoo/refused/dict_vectorizer.onnx")).unwrap();
    // WHEN loaded as a job loads it
    let Err(err) = worker::engine::Model::load(&bytes, None) else { panic!("a DictVectorizer loaded") };
    // THEN the error names the operator and its domain
    let err = err.to_string();
    assert!(err.contains("operator DictVectorizer (ai.onnx.ml) of node"), "{err}");
}

#[test]
fn check_model_shows_how_a_file_feeds_the_model_and_runs_it() {
    let check = |model: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["check-model", "--model", &repo(model).display().to_string()])
            .output()
            .unwrap()
    };
    // GIVEN a LightGBM classifier that routes missing values: it runs, its columns are listed
    let out = check("models/zoo/lightgbm_binary.onnx");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    for line in [
        "operators: Cast, Identity, Mul, ai.onnx.ml:TreeEnsembleClassifier\n",
        "  fed from columns: x0, x1,",
        "  passed through to the output: id\n",
        "  an empty number or NaN is a missing value (the model imputes or routes them)\n",
        "  \"label\" (label, one of 0, 1) -> columns label\n",
        "  \"probabilities\" (2 values) -> columns probabilities_0, probabilities_1\n",
        "runs: 4 synthetic rows",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    // GIVEN a model the engine cannot run: refused, naming the operator, with a failing status
    let out = check("models/zoo/refused/dict_vectorizer.onnx");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(err.contains("does not run") && err.contains("operator DictVectorizer (ai.onnx.ml)"), "{err}");
}

/// Runs a zoo model over `input` (CSV) with the engine, as a job does.
fn transform_text(
    name: &str,
    input: &str,
) -> (Result<worker::engine::TransformSummary, worker::engine::TransformError>, String, String) {
    transform_file(name, "data.csv", input)
}

/// Runs a zoo model over `input`, a file named `file_name`, with the engine.
fn transform_file(
    name: &str,
    file_name: &str,
    input: &str,
) -> (Result<worker::engine::TransformSummary, worker::engine::TransformError>, String, String) {
    let bytes = std::fs::read(repo(&format!("models/zoo/{name}.onnx"))).unwrap();
    let sidecar = std::fs::read(repo(&format!("models/zoo/{name}.onnx.json"))).unwrap();
    let model =
        worker::engine::Model::load(&bytes, Some(worker::engine::ModelConfig::from_json(&sidecar).unwrap())).unwrap();
    let kind = worker::engine::FileKind::from_name(file_name, None, CsvOptions::default()).unwrap();
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    let options = TransformOptions { max_bad_row_ratio: 0.5, ..Default::default() };
    let result =
        worker::engine::transform(input.as_bytes(), kind, &mut output, &mut errors, &model, &options, &mut |_| {});
    (result, String::from_utf8(output).unwrap(), String::from_utf8(errors).unwrap())
}

#[test]
fn typed_columns_are_checked_row_by_row_and_unknown_categories_behave_as_exported() {
    // GIVEN a ColumnTransformer over a string, an int64 and a float column, exported with
    // handle_unknown="ignore", and rows with a category it never saw, a bad integer and a bad float
    let input = "id,colour,grade,alcohol\n1,deep,1,12.77\n2,purple,9,13.1\n3,deep,x,12.0\n4,pale,1,strong\n";
    // WHEN it runs
    let (result, output, errors) = transform_text("column_transformer_int_categories_ignore_unknown", input);
    // THEN unknown categories are zeros (the rows run), and the bad values are bad rows with reasons
    let summary = result.unwrap();
    assert_eq!((summary.rows_in, summary.rows_out, summary.bad_rows), (4, 2, 2));
    assert!(output.lines().nth(2).unwrap().starts_with("2,"), "{output}");
    assert!(errors.contains("4,\"column \"\"grade\"\" is \"\"x\"\", not a whole number\""), "{errors}");
    assert!(errors.contains("5,\"column \"\"alcohol\"\" is \"\"strong\"\", not a number\""), "{errors}");

    // GIVEN the same kind of model exported with handle_unknown="error", and a category it never saw
    let input = "id,colour,alcohol\n1,deep,12.77\n2,purple,13.1\n";
    let (result, _, _) = transform_text("column_transformer_strings_numbers", input);
    // THEN the file fails, naming the category and the export option that would take it
    let err = result.unwrap_err().to_string();
    assert!(err.contains("\"purple\" is not one of the categories it was fitted on"), "{err}");
    assert!(err.contains("handle_unknown=\"ignore\""), "{err}");
}

#[test]
fn a_float64_model_reads_json_lines_as_float64_and_names_what_is_wrong() {
    // GIVEN a logistic regression exported from float64 data, and its rows as JSON Lines
    let rows = rows(&repo("models/zoo/logreg_iris_double.csv"));
    let input: String = rows
        .iter()
        .map(|r| {
            format!("{{\"id\": {}, \"x0\": {}, \"x1\": {}, \"x2\": {}, \"x3\": {}}}\n", r[0], r[1], r[2], r[3], r[4])
        })
        .collect();
    // WHEN it runs
    let (result, output, _) = transform_file("logreg_iris_double", "data.jsonl", &input);
    // THEN the answers are onnxruntime's
    assert_eq!(result.unwrap().rows_out, rows.len() as u64);
    let want = rows_of_csv(&std::fs::read_to_string(repo("models/zoo/logreg_iris_double.expected.csv")).unwrap());
    let got: Vec<Vec<String>> = output
        .lines()
        .map(|line| {
            let object: Value = serde_json::from_str(line).unwrap();
            object.as_object().unwrap().values().map(|v| v.to_string().trim_matches('"').to_owned()).collect()
        })
        .collect();
    assert_eq!(differences("logreg_iris_double", &got, &want, 1e-6), Vec::<String>::new());

    // GIVEN a CSV file whose columns are not the model's; THEN the error names the columns
    let (result, _, _) = transform_text("logreg_iris_double", "id,a,b\n1,2,3\n");
    let err = result.unwrap_err().to_string();
    assert!(err.contains("names column \"x0\", which the input's columns [\"id\", \"a\", \"b\"] lack"), "{err}");
}

fn rows_of_csv(text: &str) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect()
}

/// A tensor of a node test, as `models/zoo.py` writes it.
fn node_test_tensor(spec: &Value) -> tract_onnx::prelude::Tensor {
    use tract_onnx::prelude::*;
    let shape: Vec<usize> = spec["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data = spec["data"].as_array().unwrap();
    let numbers = || {
        data.iter().map(|v| {
            v.as_f64().unwrap_or_else(|| match v.as_str() {
                Some("NaN") => f64::NAN,
                Some("Infinity") => f64::INFINITY,
                Some("-Infinity") => f64::NEG_INFINITY,
                _ => panic!("{v}"),
            })
        })
    };
    match spec["dtype"].as_str().unwrap() {
        "object" => {
            let strings: Vec<String> = data.iter().map(|v| v.as_str().unwrap().to_owned()).collect();
            tract_ndarray::ArrayD::from_shape_vec(shape, strings).unwrap().into()
        }
        "int64" => Tensor::from_shape(&shape, &numbers().map(|v| v as i64).collect::<Vec<_>>()).unwrap(),
        "int32" => Tensor::from_shape(&shape, &numbers().map(|v| v as i32).collect::<Vec<_>>()).unwrap(),
        "float64" => Tensor::from_shape(&shape, &numbers().collect::<Vec<_>>()).unwrap(),
        _ => Tensor::from_shape(&shape, &numbers().map(|v| v as f32).collect::<Vec<_>>()).unwrap(),
    }
}

#[test]
fn the_onnx_projects_own_node_tests_of_the_engines_operators_pass() {
    use tract_onnx::prelude::*;
    // GIVEN the onnx package's node tests of the operators the engine supplies: the ai.onnx.ml
    // ones, StringNormalizer, TfIdfVectorizer and ReduceLogSumExp (models/zoo/onnx_node_tests)
    let folder = repo("models/zoo/onnx_node_tests");
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".onnx").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "{names:?}");
    for name in names {
        let case: Value = serde_json::from_slice(&std::fs::read(folder.join(format!("{name}.json"))).unwrap()).unwrap();
        let inputs: TVec<TValue> =
            case["inputs"].as_array().unwrap().iter().map(|spec| node_test_tensor(spec).into_tvalue()).collect();
        // WHEN tract runs the model with the engine's operators, its inputs' facts those of the data
        // (a reduction's `axes`, an input of the test's model, a constant as exporters write it)
        let mut model = worker::engine::ops::onnx().model_for_path(folder.join(format!("{name}.onnx"))).unwrap();
        let specs = case["inputs"].as_array().unwrap();
        for (i, (input, spec)) in inputs.iter().zip(specs).enumerate() {
            let fact = match spec["name"].as_str() {
                Some("axes") => InferenceFact::from(input.clone().into_tensor()),
                _ => InferenceFact::from(TypedFact::shape_and_dt_of(input)),
            };
            model = model.with_input_fact(i, fact).unwrap();
        }
        let plan = model.into_optimized().and_then(|m| m.into_runnable()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let outputs = plan.run(inputs).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        // THEN every output is the expected one
        for (got, want) in outputs.iter().zip(case["outputs"].as_array().unwrap()) {
            let want = node_test_tensor(want);
            assert_eq!(got.shape(), want.shape(), "{name}");
            if want.datum_type() == String::datum_type() {
                assert_eq!(
                    got.try_as_plain_ram().unwrap().as_slice::<String>().unwrap(),
                    want.try_as_plain_ram().unwrap().as_slice::<String>().unwrap(),
                    "{name}"
                );
                continue;
            }
            let (got, want) = (got.cast_to::<f64>().unwrap(), want.cast_to::<f64>().unwrap());
            let (got, want) = (
                got.try_as_plain_ram().unwrap().as_slice::<f64>().unwrap().to_vec(),
                want.try_as_plain_ram().unwrap().as_slice::<f64>().unwrap().to_vec(),
            );
            for (a, b) in got.iter().zip(&want) {
                let same = (a - b).abs() <= 1e-5 * b.abs().max(1.0) || (a.is_nan() && b.is_nan()) || a == b;
                assert!(same, "{name}: {got:?} where onnx expects {want:?}");
            }
        }
    }
}
