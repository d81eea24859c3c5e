//! `worker check-model`: says before deploying whether a model will run, and how a file feeds
//! it. The model is loaded exactly as a job loads it, then run on a few synthetic rows.

use std::fmt::Write;
use std::time::Instant;

use crate::engine::batch::Batch;
use crate::engine::text::{Activation, Head};
use crate::engine::{ColumnInput, ColumnRef, ColumnType, Model, OutputKind, Passthrough};

/// Synthetic rows: every feature 0, then 1, then -1, then 0.5.
const SYNTHETIC: [f32; 4] = [0.0, 1.0, -1.0, 0.5];

/// What a person reads about a model that loaded: its operators, the columns feeding its input,
/// the columns its outputs become, and the outcome of a run on synthetic rows; and whether that
/// run succeeded.
pub fn describe(model: &Model, uri: &str) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(out, "model {uri} (sha256 {}…)", &model.sha256[..12]);
    let _ = writeln!(out, "operators: {}", model.operators.join(", "));
    let shape = model.input_shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
    if let Some(encoder) = &model.text {
        let layout = &encoder.layout;
        let texts = match encoder.pairs {
            true => "pairs of texts",
            false => "texts",
        };
        let max = layout.max_length;
        let what = match &encoder.head {
            Head::Embed(_) => format!(
                "a text encoder: {texts} of up to {max} tokens (longer ones truncated), {} pooling{}, {} dimensions",
                layout.pooling.name(),
                if layout.normalize { ", normalised" } else { "" },
                encoder.width
            ),
            Head::Classify { labels, activation } => format!(
                "a text classifier: {texts} of up to {max} tokens (longer ones truncated), {} labels ({}), {}",
                labels.len(),
                labels.join(", "),
                match activation {
                    Activation::Softmax => "one a text (softmax)",
                    Activation::Sigmoid => "each on its own (sigmoid: multi-label)",
                    Activation::Identity => "values as they are (regression)",
                }
            ),
            Head::Score { activation } => format!(
                "a {}: {texts} of up to {max} tokens (longer ones truncated), one score a row ({})",
                if encoder.pairs { "cross-encoder" } else { "text regression" },
                activation.name()
            ),
            Head::Entities { labels } => format!(
                "a token classifier: texts of up to {max} tokens (longer ones truncated), entities of the labels {}, grouped (simple)",
                labels.join(", ")
            ),
        };
        let _ = writeln!(out, "{what}");
        let _ = writeln!(
            out,
            "inputs, from the tokenizer: {}",
            encoder.feeds.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(out, "the text inputs, fed from the columns of their names:");
        for input in &model.column_inputs {
            let _ = writeln!(out, "  {:?}: string", input.name);
        }
    } else if !model.column_inputs.is_empty() {
        let _ = writeln!(out, "inputs, each [N, 1] and fed from the column of its name:");
        for input in &model.column_inputs {
            let _ = writeln!(out, "  {:?}: {}", input.name, input.kind.name());
        }
    } else {
        let _ = writeln!(out, "input {:?}: float32 [N, {shape}]", model.input_name);
    }
    if model.image.is_some() {
        let _ = writeln!(out, "  fed from images (.jpg, .png, .webp, or a .tar of them), preprocessed as configured");
    } else {
        let feeds = match &model.config.features {
            Some(columns) => columns.iter().map(column).collect::<Vec<_>>().join(", "),
            None if !model.column_inputs.is_empty() => {
                model.column_inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            }
            None => format!("the file's {} columns that are not passed through, in file order", model.n_features),
        };
        let _ = writeln!(out, "  fed from columns: {feeds}");
        let passthrough = match &model.config.passthrough {
            Passthrough::All(_) => "every column".to_owned(),
            Passthrough::Columns(columns) if columns.is_empty() => "none".to_owned(),
            Passthrough::Columns(columns) => columns.iter().map(column).collect::<Vec<_>>().join(", "),
        };
        let _ = writeln!(out, "  passed through to the output: {passthrough}");
        let text = |i: &ColumnInput| i.kind == ColumnType::Text;
        if model.column_inputs.iter().any(text) {
            let _ = writeln!(out, "  a text column's empty value is an empty text; text must be UTF-8");
        }
        if model.column_inputs.is_empty() || !model.column_inputs.iter().all(text) {
            let _ = writeln!(
                out,
                "  an empty number or NaN is {}",
                if model.handles_missing {
                    "a missing value (the model imputes or routes them)"
                } else {
                    "a bad row (the model does not handle missing values)"
                }
            );
        }
    }
    let _ = writeln!(out, "outputs:");
    for spec in &model.outputs {
        let what = match &spec.kind {
            OutputKind::Label { classes: Some(classes) } => format!("label, one of {}", classes.names.join(", ")),
            OutputKind::Label { classes: None } if spec.list => "a JSON array a row".to_owned(),
            OutputKind::Label { classes: None } => "label".to_owned(),
            OutputKind::Values { width } => format!("{width} value{}", if *width == 1 { "" } else { "s" }),
        };
        let _ = writeln!(out, "  {:?} ({what}) -> columns {}", spec.name, spec.columns.join(", "));
    }
    let outcome = run_synthetic(model);
    let texts = model.column_inputs.iter().any(|i| i.kind == ColumnType::Text);
    let runs = outcome.is_ok() || texts;
    let outcome = match outcome {
        Ok(line) => line,
        Err(error) if texts => format!(
            "loads; synthetic rows, whose text columns are empty, were refused (a category the model was not \
             fitted on is refused, or read as zeros, as exported): {error}\n"
        ),
        Err(error) => format!("does not run: {error}\n"),
    };
    out.push_str(&outcome);
    (out, runs)
}

fn column(column: &ColumnRef) -> String {
    match column {
        ColumnRef::Name(name) => name.clone(),
        ColumnRef::Position(i) => format!("#{i}"),
    }
}

/// Runs the model on the synthetic rows and says how it went. A text column gets the empty
/// string, which an encoder fitted without it refuses: its categories are not known here.
fn run_synthetic(model: &Model) -> Result<String, String> {
    let rows = SYNTHETIC.len();
    let mut batch = Batch { rows, ..Batch::default() };
    for &value in &SYNTHETIC {
        match model.column_inputs.is_empty() {
            true => batch.features.extend(std::iter::repeat_n(value, model.n_features)),
            false => {
                for input in &model.column_inputs {
                    match input.kind {
                        ColumnType::Float => batch.features.push(value),
                        ColumnType::Double => batch.doubles.push(f64::from(value)),
                        ColumnType::Int64 => batch.integers.push(value as i64),
                        ColumnType::Text => batch.text.push(b""),
                    }
                }
            }
        }
    }
    let started = Instant::now();
    let what = match model.text.is_some() {
        true => "empty texts".to_owned(),
        false => format!("rows (every feature {})", SYNTHETIC.map(|v| v.to_string()).join(", then ")),
    };
    match model.predict_batch(&batch) {
        Ok(_) => Ok(format!("runs: {rows} synthetic {what} in {:.1} ms\n", started.elapsed().as_secs_f64() * 1e3)),
        Err(error) => Err(error.to_string()),
    }
}
