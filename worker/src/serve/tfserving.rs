//! TensorFlow Serving's REST API: `POST /v1/models/{name}[/versions/{v}]:predict` with
//! `instances` (rows) or `inputs` (columns), answering `predictions` or `outputs`; the model
//! status `GET /v1/models/{name}[/versions/{v}]` and its `…/metadata`. An image model takes
//! images as TF Serving carries binary data, base64 in an object: `{"instances": [{"b64": …}]}`
//! (or `[{"<input>": {"b64": …}}]`), and answers each one's top k.
//!
//! <https://www.tensorflow.org/tfx/serving/api_rest>

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::error::{Protocol, ServeError, body, json_body};
use super::images::{classify, from_base64, predictions_json};
use super::registry::{ServedModel, Slot};
use super::tensors::{
    Features, RowForm, datatype, from_columns, from_instances, row_value, typed_from_columns, typed_from_instances,
};
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
    request: Result<Bytes, BytesRejection>,
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
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, ServeError> {
    let model = state.registry.get(name, version)?;
    let request = json_body(&body(request, state.settings.max_body_bytes)?)?;
    let Value::Object(request) = request else {
        return Err(ServeError::BadRequest("the body is not a JSON object with \"instances\" or \"inputs\"".into()));
    };
    let loaded = &model.loaded.model;
    if let Some(image) = &loaded.image {
        let (items, columnar) = match (request.get("instances"), request.get("inputs")) {
            (Some(Value::Array(items)), None) => (items.iter().collect::<Vec<_>>(), false),
            (None, Some(Value::Array(items))) => (items.iter().collect(), true),
            (None, Some(one @ Value::Object(_))) => (vec![one], true),
            _ => {
                return Err(ServeError::BadRequest(
                    "send the images as {\"instances\": [{\"b64\": \"<the file in base64>\"}, ...]}".into(),
                ));
            }
        };
        let images = items.iter().enumerate().map(|(i, item)| b64_image(item, i)).collect::<Result<Vec<_>, _>>()?;
        let predictions: Vec<Value> =
            classify(state, model, images).await?.iter().map(|top| predictions_json(image, top)).collect();
        let key = if columnar { "outputs" } else { "predictions" };
        return Ok(Json(json!({ key: predictions })).into_response());
    }
    if !loaded.column_inputs.is_empty() {
        let (columns, columnar) = match (request.get("instances"), request.get("inputs")) {
            (Some(instances), None) => (typed_from_instances(instances, loaded), false),
            (None, Some(Value::Object(inputs))) => (typed_from_columns(inputs, loaded), true),
            (None, Some(_)) => {
                return Err(ServeError::BadRequest("\"inputs\" must name each of the model's inputs".into()));
            }
            (Some(_), Some(_)) => {
                return Err(ServeError::BadRequest("give \"instances\" or \"inputs\", not both".into()));
            }
            (None, None) => {
                return Err(ServeError::BadRequest("the body has neither \"instances\" nor \"inputs\"".into()));
            }
        };
        let columns = columns.map_err(ServeError::BadRequest)?;
        let rows = columns.rows;
        let outputs = model.batcher.infer_columns(columns).await?;
        return Ok(Json(if columnar {
            columns_answer(model, &outputs, rows, RowForm::Vector)
        } else {
            rows_answer(model, &outputs, rows, RowForm::Vector)
        })
        .into_response());
    }
    let (features, columnar) = match (request.get("instances"), request.get("inputs")) {
        (Some(instances), None) => (from_instances(instances, loaded), false),
        (None, Some(inputs)) => (from_columns(inputs, loaded), true),
        (Some(_), Some(_)) => return Err(ServeError::BadRequest("give \"instances\" or \"inputs\", not both".into())),
        (None, None) => return Err(ServeError::BadRequest("the body has neither \"instances\" nor \"inputs\"".into())),
    };
    let Features { values, rows, form } = features.map_err(ServeError::BadRequest)?;
    let outputs = model.batcher.infer(values, rows).await?;
    Ok(Json(if columnar {
        columns_answer(model, &outputs, rows, form)
    } else {
        rows_answer(model, &outputs, rows, form)
    })
    .into_response())
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

/// `{"predictions": [...]}`: per row, the one output's value, or an object of every output's.
fn rows_answer(model: &ServedModel, outputs: &[OutputValues], rows: usize, form: RowForm) -> Value {
    let specs = &model.loaded.model.outputs;
    let predictions: Vec<Value> = (0..rows)
        .map(|row| match specs.len() {
            1 => row_value(&specs[0], &outputs[0], row, form),
            _ => Value::Object(
                specs
                    .iter()
                    .zip(outputs)
                    .map(|(spec, values)| (spec.name.clone(), row_value(spec, values, row, form)))
                    .collect(),
            ),
        })
        .collect();
    json!({ "predictions": predictions })
}

/// `{"outputs": ...}`: the one output's rows, or an object of every output's.
fn columns_answer(model: &ServedModel, outputs: &[OutputValues], rows: usize, form: RowForm) -> Value {
    let specs = &model.loaded.model.outputs;
    let column =
        |spec, values| -> Value { Value::Array((0..rows).map(|row| row_value(spec, values, row, form)).collect()) };
    let outputs: Value = match specs.len() {
        1 => column(&specs[0], &outputs[0]),
        _ => Value::Object(
            specs.iter().zip(outputs).map(|(spec, values)| (spec.name.clone(), column(spec, values))).collect(),
        ),
    };
    json!({ "outputs": outputs })
}

/// `GetModelStatusResponse`: every version's state, or one's.
fn status_of(state: &AppState, name: &str, version: Option<u64>) -> Result<Response, ServeError> {
    let versions = state
        .registry
        .versions(name)
        .ok_or_else(|| ServeError::NotFound(format!("Could not find any versions of model {name}")))?;
    let statuses: Vec<Value> = versions
        .iter()
        .filter(|(v, _)| version.is_none_or(|wanted| **v == wanted))
        .map(|(v, slot)| match slot {
            Slot::Ready(_) => json!({
                "version": v.to_string(), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}
            }),
            Slot::Failed(reason) => json!({
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
    let model = state.registry.get(name, version)?;
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
