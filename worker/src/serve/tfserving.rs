//! TensorFlow Serving's REST API: `POST /v1/models/{name}[/versions/{v}]:predict` with
//! `instances` (rows) or `inputs` (columns), answering `predictions` or `outputs`; the model
//! status `GET /v1/models/{name}[/versions/{v}]` and its `…/metadata`. An image model takes
//! images as TF Serving carries binary data, base64 in an object: `{"instances": [{"b64": …}]}`
//! (or `[{"<input>": {"b64": …}}]`), and answers each one's top k.
//!
//! <https://www.tensorflow.org/tfx/serving/api_rest>

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::budget::Held;
use super::error::{Protocol, ServeError};
use super::images::{classify, from_base64, predictions_json};
use super::json_answer::{json_response, row_bound, write_row, write_text};
use super::json_rows::{TfRows, tf_predict};
use super::registry::{ServedModel, Slot};
use super::tensors::{Features, RowForm, datatype, output_bytes};
use super::{AppState, ModelPath};
use crate::engine::{ColumnType, OutputValues};

const PROTOCOL: Protocol = Protocol::TfServing;

/// `GET /v1/models/{name}[/versions/{v}]`.
pub async fn status(State(state): State<Arc<AppState>>, Path(path): Path<ModelPath>) -> Response {
    state.answer(PROTOCOL, &path.name, async { status_of(&state, &path.name, path.version_number()?) }).await
}

/// `GET /v1/models/{name}[/versions/{v}]/metadata`.
pub async fn metadata(State(state): State<Arc<AppState>>, Path(path): Path<ModelPath>) -> Response {
    state.answer(PROTOCOL, &path.name, async { metadata_of(&state, &path.name, path.version_number()?) }).await
}

/// `POST /v1/models/{name}[/versions/{v}]:predict`: the verb rides on the last segment.
pub async fn predict(
    State(state): State<Arc<AppState>>,
    Path(mut path): Path<ModelPath>,
    request: Request,
) -> Response {
    let last = path.version.as_mut().unwrap_or(&mut path.name);
    let verb = match last.find(':') {
        Some(colon) => {
            let verb = last[colon + 1..].to_owned();
            last.truncate(colon);
            verb
        }
        None => String::new(),
    };
    state
        .answer(PROTOCOL, &path.name, async {
            check_verb(&verb)?;
            predict_with(&state, &path.name, path.version_number()?, request).await
        })
        .await
}

fn check_verb(verb: &str) -> Result<(), ServeError> {
    match verb {
        "predict" => Ok(()),
        "classify" | "regress" => Err(ServeError::BadRequest(format!(
            ":{verb} needs a tf.Example signature, which an ONNX model does not have; use :predict"
        ))),
        _ => Err(ServeError::NotFound(format!("no such method {verb:?}: use POST .../v1/models/NAME:predict"))),
    }
}

async fn predict_with(
    state: &AppState,
    name: &str,
    version: Option<u64>,
    request: Request,
) -> Result<Response, ServeError> {
    let model = &state.registry.get(name, version)?;
    let (body, mut held) = state.read_body(request).await?;
    let loaded = &model.loaded.model;
    let (rows, columnar) = tf_predict(&body, loaded).map_err(ServeError::BadRequest)?;
    drop(body);
    let (outputs, rows, form) = match rows {
        TfRows::Json(items) => return images(state, model, items, columnar).await,
        TfRows::Columns(columns) => {
            let rows = columns.rows;
            let bound = reserve(state, model, &mut held, rows, RowForm::Vector, 0)?;
            (model.batcher.infer_columns(columns).await?, rows, (RowForm::Vector, bound))
        }
        TfRows::Features(Features { values, rows, form }) => {
            let bound = reserve(state, model, &mut held, rows, form, values.len() * 4)?;
            (model.batcher.infer(values, rows).await?, rows, (form, bound))
        }
    };
    let (form, bound) = form;
    let answer = write_answer(model, &outputs, rows, form, columnar, bound);
    drop(outputs);
    if answer.len() > state.settings.max_response_bytes {
        return Err(ServeError::AnswerTooLarge { rows, bound: answer.len(), limit: state.settings.max_response_bytes });
    }
    Ok(held.until_sent(json_response(answer)))
}

/// Refuses an answer that could pass the limit, and takes the budget for the request's input
/// (`input_bytes`, already read), its outputs and its answer; returns the answer's bound.
fn reserve(
    state: &AppState,
    model: &ServedModel,
    held: &mut Held,
    rows: usize,
    form: RowForm,
    input_bytes: usize,
) -> Result<usize, ServeError> {
    let specs = &model.loaded.model.outputs;
    let bound = rows * row_bound(specs, form) + 32;
    state.check_answer(bound, rows)?;
    state.budget.grow(held, input_bytes + output_bytes(specs, rows) + bound)?;
    Ok(bound)
}

/// An image model's request: `instances` (or `inputs`) of `{"b64": …}` images.
async fn images(state: &AppState, model: &ServedModel, items: Value, columnar: bool) -> Result<Response, ServeError> {
    let Some(image) = &model.loaded.model.image else {
        return Err(ServeError::Internal("not an image model".into()));
    };
    let items = match items {
        Value::Array(items) => items,
        one @ Value::Object(_) if columnar => vec![one],
        _ => {
            return Err(ServeError::BadRequest(
                "send the images as {\"instances\": [{\"b64\": \"<the file in base64>\"}, ...]}".into(),
            ));
        }
    };
    let images = items.iter().enumerate().map(|(i, item)| b64_image(item, i)).collect::<Result<Vec<_>, _>>()?;
    drop(items);
    let predictions: Vec<Value> =
        classify(state, model, images).await?.iter().map(|top| predictions_json(image, top)).collect();
    let key = if columnar { "outputs" } else { "predictions" };
    Ok(Json(json!({ key: predictions })).into_response())
}

/// The bytes of an instance `{"b64": …}`, or `{"<input name>": {"b64": …}}`.
fn b64_image(item: &Value, index: usize) -> Result<bytes::Bytes, ServeError> {
    fn b64(value: &Value) -> Option<&str> {
        value.get("b64").and_then(Value::as_str)
    }
    let text = match item {
        Value::Object(fields) if fields.contains_key("b64") => b64(item),
        Value::Object(fields) if fields.len() == 1 => fields.values().next().and_then(b64),
        _ => None,
    };
    match text {
        Some(text) => from_base64(text, &format!("instance {index}'s \"b64\"")),
        None => Err(ServeError::BadRequest(format!(
            "instance {index} is not an image: send {{\"b64\": \"<the file in base64>\"}}"
        ))),
    }
}

/// `{"predictions": [...]}` (per row, the one output's value, or an object of every output's), or
/// `{"outputs": ...}` (the one output's rows, or an object of every output's).
fn write_answer(
    model: &ServedModel,
    outputs: &[OutputValues],
    rows: usize,
    form: RowForm,
    columnar: bool,
    bound: usize,
) -> Vec<u8> {
    let specs = &model.loaded.model.outputs;
    let named = specs.len() > 1;
    let mut out = Vec::with_capacity(bound);
    if columnar {
        out.extend_from_slice(b"{\"outputs\":");
        if named {
            out.push(b'{');
        }
        for (i, (spec, values)) in specs.iter().zip(outputs).enumerate() {
            if named {
                if i > 0 {
                    out.push(b',');
                }
                write_text(&mut out, &spec.name);
                out.push(b':');
            }
            out.push(b'[');
            for row in 0..rows {
                if row > 0 {
                    out.push(b',');
                }
                write_row(&mut out, spec, values, row, form);
            }
            out.push(b']');
        }
        if named {
            out.push(b'}');
        }
    } else {
        out.extend_from_slice(b"{\"predictions\":[");
        for row in 0..rows {
            if row > 0 {
                out.push(b',');
            }
            if !named {
                write_row(&mut out, &specs[0], &outputs[0], row, form);
                continue;
            }
            out.push(b'{');
            for (i, (spec, values)) in specs.iter().zip(outputs).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_text(&mut out, &spec.name);
                out.push(b':');
                write_row(&mut out, spec, values, row, form);
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    out.push(b'}');
    out
}

/// `GetModelStatusResponse`: every version's state, or one's.
fn status_of(state: &AppState, name: &str, version: Option<u64>) -> Result<Response, ServeError> {
    let models = state.registry.snapshot();
    let versions =
        models.get(name).ok_or_else(|| ServeError::NotFound(format!("Could not find any versions of model {name}")))?;
    let statuses: Vec<Value> = versions
        .iter()
        .filter(|(v, _)| version.is_none_or(|wanted| **v == wanted))
        .map(|(v, slot)| match slot {
            Slot::Ready(_) => json!({
                "version": v.to_string(), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}
            }),
            Slot::Failed { reason, .. } => json!({
                "version": v.to_string(), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": reason}
            }),
        })
        .collect();
    if statuses.is_empty() {
        return Err(ServeError::NotFound(format!(
            "Could not find version {} of model {name}",
            version.unwrap_or_default()
        )));
    }
    Ok(Json(json!({ "model_version_status": statuses })).into_response())
}

/// `GetModelMetadataResponse`: the `serving_default` signature of the model's input and outputs.
fn metadata_of(state: &AppState, name: &str, version: Option<u64>) -> Result<Response, ServeError> {
    let model = &state.registry.get(name, version)?;
    let loaded = &model.loaded.model;
    let tensor = |name: &str, element, dims: &[i64]| {
        json!({
            "dtype": match datatype(element) { "INT64" => "DT_INT64", "BYTES" => "DT_STRING", _ => "DT_FLOAT" },
            "tensor_shape": {
                "dim": dims.iter().map(|d| json!({"size": d.to_string(), "name": ""})).collect::<Vec<_>>(),
                "unknown_rank": false,
            },
            "name": name,
        })
    };
    let mut inputs = Map::new();
    inputs.insert(
        loaded.input_name.clone(),
        tensor(&loaded.input_name, crate::engine::Element::Float32, &[-1, loaded.n_features as i64]),
    );
    if !loaded.column_inputs.is_empty() {
        inputs.clear();
        for input in &loaded.column_inputs {
            let mut spec = tensor(&input.name, crate::engine::Element::Float32, &[-1, 1]);
            spec["dtype"] = json!(match input.kind {
                ColumnType::Float => "DT_FLOAT",
                ColumnType::Double => "DT_DOUBLE",
                ColumnType::Int64 => "DT_INT64",
                ColumnType::Text => "DT_STRING",
            });
            inputs.insert(input.name.clone(), spec);
        }
    }
    let outputs: Map<String, Value> = loaded
        .outputs
        .iter()
        .map(|spec| {
            let dims: Vec<i64> = if spec.rank == 1 { vec![-1] } else { vec![-1, spec.width() as i64] };
            (spec.name.clone(), tensor(&spec.name, spec.element, &dims))
        })
        .collect();
    Ok(Json(json!({
        "model_spec": { "name": model.name, "signature_name": "", "version": model.version.to_string() },
        "metadata": { "signature_def": { "signature_def": { "serving_default": {
            "inputs": inputs, "outputs": outputs, "method_name": "tensorflow/serving/predict"
        }}}}
    }))
    .into_response())
}
