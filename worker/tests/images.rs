//! Image models on the committed models and images, checked against onnxruntime's top k for the
//! same images preprocessed the same way with Pillow (`models/reference/images.json`, from
//! `make models`).

use std::path::PathBuf;

use serde_json::Value;
use worker::engine::image::ImageError;
use worker::engine::{CsvOptions, FileKind, Model, TransformError, TransformOptions, TransformSummary, transform};
use worker::models::{LoadedModel, load_model};
use worker::s3::S3Store;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A model of the example repository, loaded as the worker loads it (labels file included).
fn load(name: &str) -> LoadedModel {
    let path = repo(&format!("models/repository/{name}/1/model.onnx"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(load_model::<S3Store>(None, path.to_str().unwrap())).unwrap()
}

struct Run {
    output: String,
    errors: String,
    result: Result<TransformSummary, TransformError>,
}

fn run(model: &Model, name: &str, input: &[u8], options: TransformOptions) -> Run {
    let kind = FileKind::from_name(name, None, CsvOptions::default()).unwrap();
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    let result = transform(input, kind, &mut output, &mut errors, model, &options, &mut |_| {});
    Run { output: String::from_utf8(output).unwrap(), errors: String::from_utf8(errors).unwrap(), result }
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(repo("models/reference/images.json")).unwrap()).unwrap()
}

/// Same classes in the same order, probabilities within `tolerance`.
fn assert_same_top_k(actual: &Value, expected: &Value, tolerance: f64, what: &str) {
    let (actual, expected) = (actual.as_array().unwrap(), expected.as_array().unwrap());
    let classes = |v: &[Value]| v.iter().map(|p| p["class"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(classes(actual), classes(expected), "{what}");
    for (a, e) in actual.iter().zip(expected) {
        let (a, e) = (a["probability"].as_f64().unwrap(), e["probability"].as_f64().unwrap());
        assert!((a - e).abs() <= tolerance, "{what}: probability {a} against onnxruntime's {e}");
    }
}

#[test]
fn squeezenet_agrees_with_onnxruntime_on_every_test_image() {
    // GIVEN SqueezeNet 1.1 (seeded random weights), and onnxruntime's top 5 for JPEG, PNG, WebP,
    // an EXIF-rotated JPEG and a small grey PNG, preprocessed with Pillow as its configuration says
    let model = load("squeezenet");
    let reference = reference();
    for (name, expected) in reference["squeezenet"].as_object().unwrap() {
        let bytes = std::fs::read(repo(&format!("tests/data/images/{name}"))).unwrap();
        // WHEN sluice classifies the image as a batch job
        let run = run(&model.model, name, &bytes, TransformOptions::default());
        // THEN its top 5 are onnxruntime's, probabilities within 1e-4 where the decoded pixels
        // are the same bytes (PNG, WebP). JPEG decoders differ: the image crate's and Pillow's
        // libjpeg-turbo give pixels up to 3 levels apart (IDCT and chroma upsampling), which
        // this model turns into differences of up to 2e-3.
        let summary = run.result.unwrap();
        assert_eq!((summary.rows_in, summary.rows_out), (1, 1));
        assert!(run.output.ends_with("]\n"), "{}", run.output);
        let actual: Value = serde_json::from_str(&run.output).unwrap();
        let tolerance = if name.ends_with(".jpg") { 5e-3 } else { 1e-4 };
        assert_same_top_k(&actual, expected, tolerance, name);
    }
}

#[test]
fn the_digits_example_classifies_its_held_out_images() {
    let model = load("digits");
    let reference = reference();
    let mut right = 0;
    for (name, expected) in reference["digits"].as_object().unwrap() {
        let bytes = std::fs::read(repo(&format!("examples/data/digits/{name}"))).unwrap();
        let run = run(&model.model, name, &bytes, TransformOptions::default());
        let actual: Value = serde_json::from_str(&run.output).unwrap();
        assert_same_top_k(&actual, expected, 1e-5, name);
        // The file name ends in the digit it shows.
        right += usize::from(actual[0]["class"] == name.trim_end_matches(".png").rsplit('-').next().unwrap());
    }
    assert_eq!(right, 12);
}

#[test]
fn an_archive_gives_one_line_per_image_in_archive_order_on_any_number_of_threads() {
    // GIVEN the example archive of 100 digits
    let model = load("digits");
    let archive = std::fs::read(repo("examples/data/digits.tar.gz")).unwrap();
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
    for entry in tar.entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    // WHEN it is transformed on one thread and on four
    let one = run(&model.model, "digits.tar.gz", &archive, TransformOptions { threads: 1, ..Default::default() });
    let four = run(&model.model, "digits.tar.gz", &archive, TransformOptions { threads: 4, ..Default::default() });
    // THEN each line names its image, in archive order, and the outputs are identical
    assert_eq!(one.output, four.output);
    let summary = one.result.unwrap();
    assert_eq!((summary.rows_in, summary.rows_out, summary.bad_rows), (100, 100, 0));
    let lines: Vec<Value> = one.output.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["image"].as_str().unwrap()).collect::<Vec<_>>(), names);
    let right = lines
        .iter()
        .filter(|l| {
            let digit = l["image"].as_str().unwrap().trim_end_matches(".png").rsplit('-').next().unwrap().to_owned();
            l["predictions"][0]["class"] == digit
        })
        .count();
    assert!(right >= 95, "{right} of 100 right");
    assert_eq!(lines[0]["predictions"].as_array().unwrap().len(), 3, "the digits model answers its top 3");
}

fn tar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, &bytes[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

fn test_image(name: &str) -> Vec<u8> {
    std::fs::read(repo(&format!("tests/data/images/{name}"))).unwrap()
}

#[test]
fn bad_members_of_an_archive_go_to_the_errors_file_within_the_ratio() {
    // GIVEN an archive of three good images, a truncated one, a text file and macOS litter
    let model = load("digits");
    let example = reference()["digits"].as_object().unwrap().keys().next().unwrap().clone();
    let digit = std::fs::read(repo(&format!("examples/data/digits/{example}"))).unwrap();
    let archive = tar_of(&[
        ("a/1.png", digit.clone()),
        ("a/._1.png", b"\x00\x05\x16\x07".to_vec()),
        ("a/broken.jpg", test_image("truncated.jpg")),
        ("a/2.png", digit.clone()),
        ("a/notes.txt", b"hello".to_vec()),
        ("a/3.png", digit),
    ]);
    // WHEN it is transformed with a bad-row ratio that allows them
    let lenient = TransformOptions { max_bad_row_ratio: 0.5, ..Default::default() };
    let run1 = run(&model.model, "batch.tar", &archive, lenient);
    // THEN the good ones have their lines, and the errors file says which and why
    let summary = run1.result.unwrap();
    assert_eq!((summary.rows_in, summary.rows_out, summary.bad_rows), (5, 3, 2));
    let images: Vec<String> = run1
        .output
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["image"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(images, ["a/1.png", "a/2.png", "a/3.png"]);
    let errors: Vec<&str> = run1.errors.lines().collect();
    assert_eq!(errors[0], "image,reason,path");
    assert!(
        errors[1].starts_with("2,the image cannot be decoded") && errors[1].ends_with(",a/broken.jpg"),
        "{}",
        errors[1]
    );
    assert_eq!(errors[2], r#"4,"not an image: sluice reads JPEG, PNG and WebP",a/notes.txt"#);
    // AND with the default ratio (10%) the archive fails, naming the first bad image
    let strict = run(&model.model, "batch.tar", &archive, TransformOptions::default());
    let err = strict.result.unwrap_err().to_string();
    assert!(err.starts_with("2 of 5 rows are bad"), "{err}");
}

#[test]
fn a_bad_image_fails_with_a_reason_a_person_can_act_on() {
    let model = load("digits");
    let cases: [(&str, Vec<u8>, ImageError); 3] = [
        ("x.jpg", test_image("truncated.jpg"), ImageError::Corrupt(String::new())),
        ("x.jpg", test_image("not-an-image.jpg"), ImageError::NotAnImage),
        ("x.png", test_image("unsupported.gif"), ImageError::Unsupported("GIF".into())),
    ];
    for (name, bytes, expected) in cases {
        let result = run(&model.model, name, &bytes, TransformOptions::default()).result;
        match (result, &expected) {
            (Err(TransformError::Image(ImageError::Corrupt(_))), ImageError::Corrupt(_)) => {}
            (Err(TransformError::Image(actual)), expected) => assert_eq!(&actual, expected),
            (other, _) => panic!("{name}: {other:?}"),
        }
    }
    // More pixels than the limit: refused before decoding, with the setting named.
    let tight = TransformOptions { max_image_pixels: 10_000, ..Default::default() };
    let err = run(&model.model, "x.jpg", &test_image("china.jpg"), tight).result.unwrap_err();
    assert_eq!(err.to_string(), "the image is 640x427, 273280 pixels, more than the limit of 10000 (MAX_IMAGE_PIXELS)");
    assert!(err.is_permanent());
    // An empty archive, and a file that is not one.
    let err = run(&model.model, "x.tar", &tar_of(&[]), TransformOptions::default()).result.unwrap_err();
    assert_eq!(err.to_string(), "the archive holds no images");
    let err = run(&model.model, "x.tar.gz", b"not gzip", TransformOptions::default()).result.unwrap_err();
    assert!(err.is_permanent(), "{err}");
}

#[test]
fn images_and_rows_do_not_mix() {
    let digits = load("digits");
    let err = run(&digits.model, "data.csv", b"a\n1\n", TransformOptions::default()).result.unwrap_err();
    assert!(err.to_string().starts_with("the model takes images"), "{err}");
    let iris = load("iris");
    let err = run(&iris.model, "x.png", &test_image("small-grey.png"), TransformOptions::default()).result.unwrap_err();
    assert!(err.to_string().starts_with("the model takes rows of features, not images"), "{err}");
}

#[test]
fn a_model_whose_input_does_not_match_the_declared_preprocessing_is_refused() {
    let bytes = std::fs::read(repo("models/repository/digits/1/model.onnx")).unwrap();
    let config = |json: &str| Some(worker::engine::ModelConfig::from_json(json.as_bytes()).unwrap());
    let err = Model::load(&bytes, config(r#"{"image": {"width": 8, "height": 8}}"#)).err().unwrap().to_string();
    assert_eq!(
        err,
        "the model is not supported: its input \"image\" is [N, 1, 8, 8], but the configuration's image section (rgb, 8x8, nchw) makes [N, 3, 8, 8]"
    );
    let err =
        Model::load(&bytes, config(r#"{"image": {"width": 8, "height": 8, "color": "gray", "labels": ["a", "b"]}}"#))
            .err()
            .unwrap()
            .to_string();
    assert!(
        err.ends_with("the configuration names 2 labels, but the model's output \"logits\" scores 10 classes"),
        "{err}"
    );
}

#[tokio::test]
async fn worker_transform_classifies_an_image_and_an_archive_for_a_model_author() {
    use worker::local_transform::{TransformRequest, run as transform_command};
    let dir = std::env::temp_dir().join(format!("sluice-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let request = |input: &str, output: &std::path::Path| TransformRequest {
        model: "squeezenet".into(),
        model_repository: Some(repo("models/repository").display().to_string()),
        input: repo(input).display().to_string(),
        output: output.display().to_string(),
        errors: None,
        options: TransformOptions::default(),
        csv: CsvOptions::default(),
    };
    // An image: its top 5, as the batch job writes it
    let out = dir.join("flower.json");
    let done = transform_command(request("tests/data/images/flower.webp", &out)).await.unwrap();
    assert_eq!((done.summary.rows_in, done.summary.rows_out), (1, 1));
    let top: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_same_top_k(&top, &reference()["squeezenet"]["flower.webp"], 1e-4, "flower.webp");
    // A broken one: an error that says why, and no output
    let out = dir.join("broken.json");
    let Err(err) = transform_command(request("tests/data/images/truncated.jpg", &out)).await else {
        panic!("a truncated JPEG was classified");
    };
    assert!(err.to_string().contains("the JPEG is truncated"), "{err}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
