//! The transform engine on the committed models, checked against onnxruntime's outputs.

use std::path::PathBuf;

use std::io::Write;

use proptest::prelude::*;
use worker::engine::{
    CsvOptions, FileKind, Model, ModelConfig, TransformError, TransformOptions, TransformSummary, transform,
};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A committed model, with its sidecar configuration when it has one.
fn load(name: &str) -> Model {
    let sidecar = std::fs::read(repo(&format!("models/{name}.onnx.json"))).ok();
    load_with(name, sidecar.map(|json| ModelConfig::from_json(&json).unwrap()))
}

fn load_with(name: &str, config: Option<ModelConfig>) -> Model {
    let bytes = std::fs::read(repo(&format!("models/{name}.onnx"))).unwrap();
    Model::load(&bytes, config).unwrap()
}

struct Run {
    output: String,
    errors: String,
    result: Result<TransformSummary, TransformError>,
}

fn run(model: &Model, input: &[u8], options: TransformOptions) -> Run {
    run_named(model, "data.csv", CsvOptions::default(), input, options)
}

fn run_named(model: &Model, name: &str, csv: CsvOptions, input: &[u8], options: TransformOptions) -> Run {
    let kind = FileKind::from_name(name, None, csv).unwrap();
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    let result = transform(input, kind, &mut output, &mut errors, model, &options, &mut |_| {});
    Run { output: String::from_utf8(output).unwrap(), errors: String::from_utf8(errors).unwrap(), result }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn rows(csv: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(csv.as_bytes()).records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect()
}

fn check_against_reference(name: &str) {
    // GIVEN the iris data and onnxruntime's predictions for it
    let model = load(name);
    let input = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    let reference = std::fs::read_to_string(repo(&format!("models/reference/{name}.csv"))).unwrap();
    // WHEN the engine runs the model over the file
    let run = run(&model, &input, TransformOptions::default());
    let summary = run.result.unwrap();
    // THEN every row comes out, labels equal and probabilities within 1e-5
    assert_eq!((summary.rows_in, summary.rows_out, summary.bad_rows), (150, 150, 0));
    assert!(run.output.starts_with("id,label,probabilities_setosa,probabilities_versicolor,probabilities_virginica\n"));
    let classes = ["setosa", "versicolor", "virginica"];
    let (got, want) = (rows(&run.output), rows(&reference));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g[0], w[0], "ids in input order");
        assert_eq!(g[1], classes[w[1].parse::<usize>().unwrap()], "label of id {}", w[0]);
        for col in 2..5 {
            let (a, b): (f64, f64) = (g[col].parse().unwrap(), w[col].parse().unwrap());
            assert!((a - b).abs() <= 1e-5, "id {} column {col}: {a} vs onnxruntime {b}", w[0]);
        }
    }
}

#[test]
fn logistic_regression_matches_onnxruntime() {
    check_against_reference("iris_logreg");
}

#[test]
fn random_forest_matches_onnxruntime() {
    check_against_reference("iris_forest");
}

#[test]
fn mlp_matches_onnxruntime() {
    check_against_reference("iris_mlp");
}

#[test]
fn a_model_names_its_own_classes_and_carries_its_own_configuration() {
    // GIVEN a classifier trained on class names, with its configuration in its ONNX metadata
    // and no sidecar
    let model = load("iris_named");
    assert!(!repo("models/iris_named.onnx.json").exists());
    let input = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    // WHEN it runs over iris
    let run = run(&model, &input, TransformOptions::default());
    assert_eq!(run.result.unwrap().rows_out, 150);
    // THEN the id passes through (the embedded configuration), the labels and the probability
    // columns carry the classifier's own names, and the values are onnxruntime's
    let reference = std::fs::read_to_string(repo("models/reference/iris_named.csv")).unwrap();
    let header = reference.lines().next().unwrap();
    assert_eq!(header, "id,label,probabilities_setosa,probabilities_versicolor,probabilities_virginica");
    assert!(run.output.starts_with(&format!("{header}\n")), "{}", &run.output[..200]);
    for (g, w) in rows(&run.output).iter().zip(&rows(&reference)) {
        assert_eq!(g[..2], w[..2], "id and label");
        for col in 2..5 {
            let (a, b): (f64, f64) = (g[col].parse().unwrap(), w[col].parse().unwrap());
            assert!((a - b).abs() <= 1e-5, "id {} column {col}: {a} vs onnxruntime {b}", w[0]);
        }
    }
}

#[test]
fn a_sidecar_overrides_the_configuration_in_the_model() {
    // GIVEN the self-describing model, and a sidecar that passes every column through and
    // renames the classes
    let config = r#"{"passthrough": "all", "features": [1, 2, 3, 4], "classes": ["a", "b", "c"]}"#;
    let model = load_with("iris_named", Some(ModelConfig::from_json(config.as_bytes()).unwrap()));
    // WHEN a row goes through
    let input = "id,sepal_length,sepal_width,petal_length,petal_width\n7,5.1,3.5,1.4,0.2\n";
    let run = run(&model, input.as_bytes(), TransformOptions::default());
    run.result.unwrap();
    // THEN the sidecar decides the columns and names the classes, labels included
    let header = run.output.lines().next().unwrap();
    assert_eq!(
        header,
        "id,sepal_length,sepal_width,petal_length,petal_width,label,probabilities_a,probabilities_b,probabilities_c"
    );
    assert!(run.output.lines().nth(1).unwrap().starts_with("7,5.1,3.5,1.4,0.2,a,"), "{}", run.output);
}

#[test]
fn half_plus_two_uses_every_column_as_a_feature() {
    let run = run(&load("half_plus_two"), b"x\n1.0\n2.0\n5.0\n", TransformOptions::default());
    run.result.unwrap();
    assert_eq!(run.output, "y\n2.5\n3.0\n4.5\n");
}

#[test]
fn output_is_the_same_whatever_the_batch_size() {
    let input = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    for name in ["iris_mlp", "iris_logreg", "iris_forest"] {
        let model = load(name);
        let with = |batch_size| run(&model, &input, TransformOptions { batch_size, ..Default::default() }).output;
        let whole = with(1024);
        let differing: Vec<usize> =
            [1, 2, 3, 5, 7, 8, 12, 16, 17, 24, 100, 149, 150].into_iter().filter(|&b| with(b) != whole).collect();
        assert!(differing.is_empty(), "{name}: batch sizes giving other bytes: {differing:?}");
    }
}

#[test]
fn crlf_quotes_bom_and_a_missing_final_newline_all_parse() {
    let model = load("iris_logreg");
    let plain = "id,sepal_length,sepal_width,petal_length,petal_width\n1,5.1,3.5,1.4,0.2\n\"a, b\",6.3,3.3,6.0,2.5\n";
    let expected = run(&model, plain.as_bytes(), TransformOptions::default()).output;
    let variants = [
        plain.replace('\n', "\r\n"),
        plain.trim_end().to_owned(),
        format!("\u{feff}{plain}"),
        plain.replace("5.1", "\"5.1\"").replace("petal_width", "\"petal_width\""),
        plain.replace(",6.3,", ", 6.3 ,"),
    ];
    for variant in variants {
        let got = run(&model, variant.as_bytes(), TransformOptions::default());
        assert_eq!(got.result.unwrap().rows_out, 2, "{variant:?}");
        assert_eq!(got.output, expected, "{variant:?}");
    }
    assert!(expected.contains("\"a, b\",setosa") || expected.contains("\"a, b\",virginica"), "{expected}");
}

#[test]
fn bad_rows_go_to_the_errors_stream_with_line_and_reason() {
    // GIVEN a file with each kind of bad row among good ones
    let input = "id,sepal_length,sepal_width,petal_length,petal_width\n\
                 1,5.1,3.5,1.4,0.2\n\
                 2,5.1,3.5,1.4\n\
                 3,5.1,abc,1.4,0.2\n\
                 4,5.1,,1.4,0.2\n\
                 5,NaN,3.5,1.4,0.2\n\
                 6,4.9,3.0,1.4,0.2\n";
    // WHEN transformed with a tolerant limit
    let run =
        run(&load("iris_logreg"), input.as_bytes(), TransformOptions { max_bad_row_ratio: 0.9, ..Default::default() });
    let summary = run.result.unwrap();
    // THEN good rows are predicted and each bad one is reported by line
    assert_eq!((summary.rows_in, summary.rows_out, summary.bad_rows), (6, 2, 4));
    let ids: Vec<String> = rows(&run.output).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, ["1", "6"]);
    let errors = rows(&run.errors);
    let lines: Vec<&str> = errors.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(lines, ["3", "4", "5", "6"]);
    assert!(errors[0][1].contains("expected 5 fields, found 4"), "{:?}", errors[0]);
    assert!(errors[1][1].contains("\"sepal_width\"") && errors[1][1].contains("not a number"), "{:?}", errors[1]);
    assert!(errors[2][1].contains("is empty"), "{:?}", errors[2]);
    assert!(errors[3][1].contains("NaN"), "{:?}", errors[3]);
    assert_eq!(errors[1][2], "3,5.1,abc,1.4,0.2", "the raw row");
    assert_eq!(summary.first_errors[0].line, 3);
}

#[test]
fn too_many_bad_rows_fail_the_file() {
    let input = "x\n1\nfoo\nbar\n";
    let run = run(
        &load("half_plus_two"),
        input.as_bytes(),
        TransformOptions { max_bad_row_ratio: 0.5, ..Default::default() },
    );
    let err = run.result.unwrap_err();
    assert!(matches!(&err, TransformError::TooManyBadRows { summary, .. } if summary.bad_rows == 2), "{err}");
    assert!(err.to_string().contains("2 of 3 rows are bad"), "{err}");
    assert!(err.to_string().contains("line 3"), "{err}");
}

#[test]
fn files_that_cannot_be_transformed_say_why() {
    let iris = load("iris_logreg");
    let cases: [(&[u8], &str); 5] = [
        (b"", "empty"),
        (b"id,sepal_length,sepal_width,petal_length,petal_width\n", "no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\xfe", "not UTF-8 text"),
        (b"id,a,b,c,d\n1,2,3,4,5\n", "lack"),
        (b"id,sepal_length,sepal_width,petal_length\n1,2,3,4\n", "lack"),
    ];
    for (input, expected) in cases {
        let err = run(&iris, input, TransformOptions::default()).result.unwrap_err();
        assert!(err.to_string().contains(expected), "{input:?}: {err}");
    }
    let err = run(&load("half_plus_two"), b"x,y\n1,2\n", TransformOptions::default()).result.unwrap_err();
    assert!(err.to_string().contains("takes 1 features but 2 columns"), "{err}");
}

#[test]
fn any_thread_count_gives_the_same_output_in_input_order() {
    let model = load("iris_mlp");
    let input = iris_repeated(20);
    let one = run(&model, &input, TransformOptions { threads: 1, batch_size: 32, ..Default::default() });
    for threads in [2, 3, 8] {
        let many = run(&model, &input, TransformOptions { threads, batch_size: 32, ..Default::default() });
        assert_eq!(many.output, one.output, "{threads} threads");
    }
    assert_eq!(one.result.unwrap().rows_out, 3000);
}

/// The iris rows `times` times over, with fresh ids.
fn iris_repeated(times: usize) -> Vec<u8> {
    let iris = std::fs::read_to_string(repo("examples/data/iris.csv")).unwrap();
    let mut lines = iris.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    let rows: Vec<&str> = lines.map(|l| l.split_once(',').unwrap().1).collect();
    for i in 0..times * rows.len() {
        out.push_str(&format!("{},{}\n", i + 1, rows[i % rows.len()]));
    }
    out.into_bytes()
}

#[test]
fn gzip_input_gives_the_same_output_as_plain() {
    let model = load("iris_logreg");
    let plain = std::fs::read(repo("examples/data/iris.csv")).unwrap();
    let expected = run(&model, &plain, TransformOptions::default()).output;
    let gz = run_named(&model, "iris.csv.gz", CsvOptions::default(), &gzip(&plain), TransformOptions::default());
    assert_eq!(gz.output, expected);
    // Compressed data under a plain name is recognised by its magic bytes.
    assert_eq!(run(&model, &gzip(&plain), TransformOptions::default()).output, expected);
    // A .gz that is not gzip says so.
    let err = run_named(&model, "iris.csv.gz", CsvOptions::default(), &plain, TransformOptions::default())
        .result
        .unwrap_err();
    assert!(err.to_string().contains("not gzip"), "{err}");
    assert!(err.is_permanent());
}

#[test]
fn tsv_and_headerless_csv_are_read_by_configuration() {
    let model = load("half_plus_two");
    let tsv = run_named(&model, "x.tsv", CsvOptions::default(), b"x\tignored\n1\t\n", TransformOptions::default());
    // Two columns, one feature: the model configuration must say which; without one it fails.
    assert!(tsv.result.is_err());
    let no_header = CsvOptions { has_header: false, delimiter: b';' };
    let run = run_named(&model, "x.csv", no_header, b"1.0\n2.0\n5.0\n", TransformOptions::default());
    assert_eq!(run.result.unwrap().rows_in, 3, "every line is data");
    assert_eq!(run.output, "2.5\n3.0\n4.5\n", "no header out either");
}

#[test]
fn passthrough_all_joins_every_input_column_to_the_predictions() {
    let model = load_with("half_plus_two", Some(ModelConfig::from_json(br#"{"passthrough": "all"}"#).unwrap()));
    let run = run(&model, b"x\n1\n2\n", TransformOptions::default());
    run.result.unwrap();
    assert_eq!(run.output, "x,y\n1,2.5\n2,3.0\n");
}

#[test]
fn json_lines_objects_in_objects_out() {
    // GIVEN iris rows as JSON objects, with a string feature and extra fields
    let input =
        br#"{"id": "a", "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, "note": "x"}
{"id": "b", "sepal_length": "6.3", "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5, "note": null}

{"id": "c", "sepal_length": 5.1}
not json
{"id": "d", "sepal_length": 5.1, "sepal_width": true, "petal_length": 1.4, "petal_width": 0.2}
"#;
    // WHEN transformed with the iris model's configuration
    let run = run_named(
        &load("iris_logreg"),
        "x.jsonl",
        CsvOptions::default(),
        input,
        TransformOptions { max_bad_row_ratio: 1.0, ..Default::default() },
    );
    let summary = run.result.unwrap();
    // THEN good lines become objects with the id and the predictions, bad ones are reported by line
    assert_eq!((summary.rows_in, summary.rows_out, summary.bad_rows), (5, 2, 3));
    let lines: Vec<serde_json::Value> = run.output.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["label"], "setosa");
    assert_eq!(lines[1]["label"], "virginica");
    assert!(lines[0]["probabilities_setosa"].as_f64().unwrap() > 0.9);
    let keys: Vec<&String> = lines[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "label", "probabilities_setosa", "probabilities_versicolor", "probabilities_virginica"]);
    let errors = rows(&run.errors);
    assert_eq!(errors.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["4", "5", "6"]);
    assert!(errors[0][1].contains("\"sepal_width\" is missing"), "{:?}", errors[0]);
    assert!(errors[1][1].contains("not valid JSON"), "{:?}", errors[1]);
    assert!(errors[2][1].contains("not a number"), "{:?}", errors[2]);
}

#[test]
fn json_lines_arrays_in_arrays_out() {
    let run = run_named(
        &load("half_plus_two"),
        "x.ndjson",
        CsvOptions::default(),
        b"[1]\n[2.0]\n[5]\n",
        TransformOptions::default(),
    );
    run.result.unwrap();
    assert_eq!(run.output, "[2.5]\n[3.0]\n[4.5]\n");
}

#[test]
fn a_regression_model_writes_its_value_column() {
    let model = load("diabetes_linreg");
    let input = std::fs::read(repo("examples/data/diabetes.csv")).unwrap();
    let run = run(&model, &input, TransformOptions::default());
    assert_eq!(run.result.unwrap().rows_out, 100);
    let reference = rows(&std::fs::read_to_string(repo("models/reference/diabetes_linreg.csv")).unwrap());
    let got = rows(&run.output);
    assert!(run.output.starts_with("id,variable\n"));
    for (g, w) in got.iter().zip(&reference) {
        assert_eq!(g[0], w[0]);
        let (a, b): (f64, f64) = (g[1].parse().unwrap(), w[1].parse().unwrap());
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "id {}: {a} vs {b}", w[0]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the batch size and thread count, and wherever bad rows fall, the output is the
    /// same bytes and every row is accounted for.
    #[test]
    fn batch_size_threads_and_bad_rows_never_change_the_result(
        batch_size in 1usize..300,
        threads in 1usize..4,
        bad_every in 2usize..50,
    ) {
        let model = load("iris_mlp");
        let mut input = String::from("id,sepal_length,sepal_width,petal_length,petal_width\n");
        for i in 0..400 {
            if i % bad_every == 0 {
                input.push_str(&format!("{i},oops,1,2,3\n"));
            } else {
                input.push_str(&format!("{i},{}.{},3.0,{}.5,{}.2\n", 4 + i % 4, i % 10, 1 + i % 5, i % 3));
            }
        }
        let options = |batch_size, threads| TransformOptions { batch_size, threads, max_bad_row_ratio: 1.0, ..Default::default() };
        let reference = run(&model, input.as_bytes(), options(1024, 1));
        let other = run(&model, input.as_bytes(), options(batch_size, threads));
        prop_assert_eq!(&other.output, &reference.output);
        prop_assert_eq!(&other.errors, &reference.errors);
        let summary = other.result.unwrap();
        prop_assert_eq!(summary.rows_in, 400);
        prop_assert_eq!(summary.rows_out + summary.bad_rows, 400);
    }
}
