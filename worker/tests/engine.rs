//! The transform engine on the committed models, checked against onnxruntime's outputs.

use std::path::PathBuf;

use worker::engine::{Model, ModelConfig, TransformError, TransformOptions, TransformSummary, transform_csv};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn load(name: &str) -> (Model, ModelConfig) {
    let bytes = std::fs::read(repo(&format!("models/{name}.onnx"))).unwrap();
    let config = match std::fs::read(repo(&format!("models/{name}.onnx.json"))) {
        Ok(json) => ModelConfig::from_json(&json).unwrap(),
        Err(_) => ModelConfig::default(),
    };
    (Model::load(&bytes, config.classes.as_deref()).unwrap(), config)
}

struct Run {
    output: String,
    errors: String,
    result: Result<TransformSummary, TransformError>,
}

fn run(model: &(Model, ModelConfig), input: &[u8], options: TransformOptions) -> Run {
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    let result = transform_csv(input, &mut output, &mut errors, &model.0, &model.1, &options);
    Run { output: String::from_utf8(output).unwrap(), errors: String::from_utf8(errors).unwrap(), result }
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
        (b"id,a,b,c,d\n1,2,3,4,5\n", "header"),
        (b"id,sepal_length,sepal_width,petal_length\n1,2,3,4\n", "lacks"),
    ];
    for (input, expected) in cases {
        let err = run(&iris, input, TransformOptions::default()).result.unwrap_err();
        assert!(err.to_string().contains(expected), "{input:?}: {err}");
    }
    let err = run(&load("half_plus_two"), b"x,y\n1,2\n", TransformOptions::default()).result.unwrap_err();
    assert!(err.to_string().contains("takes 1 features but 2 columns"), "{err}");
}
