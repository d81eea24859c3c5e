//! KServe's v2 inference protocol (the Open Inference Protocol, which Triton speaks): health,
//! server and model metadata, readiness, and `POST /v2/models/{name}[/versions/{v}]/infer`, with
//! the binary tensor data extension that Triton's clients use by default (tensors after the JSON
//! header, `Inference-Header-Content-Length` giving its length). An image model takes one
//! `BYTES` input of encoded images (binary, or base64 strings in JSON) and answers two outputs:
//! `classes` (`BYTES`, the top k labels) and `probabilities` (`FP32`), both `[images, k]`.
//!
//! <https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol>

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::budget::Held;
use super::error::{Protocol, ServeError};
use super::images::{classify, from_base64};
use super::json_answer::{element_bound, json_response, text_len, write_elements, write_text};
use super::json_rows::flat_numbers;
use super::registry::{ServedModel, Slot};
use super::tensors::{
    Features, RowForm, add_column, bare_rows, binary_answer, datatype, element_size, feature_rows, output_bytes,
    raw_column, raw_elements, raw_floats, typed_from_columns,
};
use super::{AppState, ModelPath};
use crate::engine::batch::Batch;
use crate::engine::image::Prediction;
use crate::engine::{ColumnType, Element, OutputValues};

const PROTOCOL: Protocol = Protocol::KServe;
/// The header that gives the length of the JSON part of a body with binary tensors.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

pub async fn live() -> Response {
    Json(json!({ "live": true })).into_response()
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.registry.healthy();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

pub async fn server_metadata() -> Response {
    Json(json!({
        "name": "sluice",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
    .into_response()
}

pub async fn model_metadata(State(state): State<Arc<AppState>>, Path(path): Path<ModelPath>) -> Response {
    state.answer(PROTOCOL, &path.name, async { metadata_of(&state, &path.name, path.version_number()?) }).await
}

pub async fn model_ready(State(state): State<Arc<AppState>>, Path(path): Path<ModelPath>) -> Response {
    state.answer(PROTOCOL, &path.name, async { ready_of(&state, &path.name, path.version_number()?) }).await
}

pub async fn infer(State(state): State<Arc<AppState>>, Path(path): Path<ModelPath>, request: Request) -> Response {
    state
        .answer(PROTOCOL, &path.name, async { infer_with(&state, &path.name, path.version_number()?, request).await })
        .await
}

/// `POST /v2/repository/index`: every model version and its state (`READY`, or `UNAVAILABLE`
/// with the reason), and the models unloaded on request.
pub async fn repository_index(State(state): State<Arc<AppState>>) -> Response {
    let mut index: Vec<Value> = Vec::new();
    for (name, versions) in state.registry.snapshot().iter() {
        for (version, slot) in versions {
            let (ready, reason) = match slot {
                Slot::Ready(_) => ("READY", String::new()),
                Slot::Failed { reason, .. } => ("UNAVAILABLE", reason.clone()),
            };
            index.push(json!({ "name": name, "version": version.to_string(), "state": ready, "reason": reason }));
        }
    }
    for name in state.registry.unloaded() {
        index.push(json!({ "name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded" }));
    }
    Json(Value::Array(index)).into_response()
}

/// `POST /v2/repository/models/{name}/load`: (re)loads the model from the repository now.
pub async fn repository_load(State(state): State<Arc<AppState>>, Path(path): Path<ModelPath>) -> Response {
    state
        .answer(PROTOCOL, &path.name, async {
            state.registry.load_model(&path.name).await.map_err(ServeError::from)?;
            Ok(Json(json!({})).into_response())
        })
        .await
}

/// `POST /v2/repository/models/{name}/unload`: stops serving the model (requests in flight
/// finish) until it is loaded again.
pub async fn repository_unload(State(state): State<Arc<AppState>>, Path(path): Path<ModelPath>) -> Response {
    state
        .answer(PROTOCOL, &path.name, async {
            state.registry.unload_model(&path.name).await?;
            Ok(Json(json!({})).into_response())
        })
        .await
}

/// The model's inputs as KServe describes them: name, datatype, shape.
pub fn input_metadata(model: &ServedModel) -> Vec<(String, &'static str, Vec<i64>)> {
    let loaded = &model.loaded.model;
    if loaded.image.is_some() {
        return vec![(loaded.input_name.clone(), "BYTES", vec![-1])];
    }
    if loaded.column_inputs.is_empty() {
        let datatype = if loaded.matrix == ColumnType::Double { "FP64" } else { "FP32" };
        return vec![(loaded.input_name.clone(), datatype, vec![-1, loaded.n_features as i64])];
    }
    loaded
        .column_inputs
        .iter()
        .map(|input| {
            let datatype = match input.kind {
                ColumnType::Float => "FP32",
                ColumnType::Double => "FP64",
                ColumnType::Int64 => "INT64",
                ColumnType::Text => "BYTES",
            };
            (input.name.clone(), datatype, vec![-1, 1])
        })
        .collect()
}

/// The model's outputs as KServe describes them: an image model's `classes` and
/// `probabilities` (`[images, k]`), else the model's own.
pub fn output_metadata(model: &ServedModel) -> Vec<(String, &'static str, Vec<i64>)> {
    let loaded = &model.loaded.model;
    if let Some(image) = &loaded.image {
        let k = image.classifier.k as i64;
        return vec![("classes".into(), "BYTES", vec![-1, k]), ("probabilities".into(), "FP32", vec![-1, k])];
    }
    loaded
        .outputs
        .iter()
        .map(|spec| {
            let shape = if spec.rank == 1 { vec![-1] } else { vec![-1, spec.width() as i64] };
            (spec.name.clone(), datatype(spec.element), shape)
        })
        .collect()
}

fn metadata_of(state: &AppState, name: &str, version: Option<u64>) -> Result<Response, ServeError> {
    let model = &state.registry.get(name, version)?;
    let versions: Vec<String> = state
        .registry
        .snapshot()
        .get(name)
        .into_iter()
        .flat_map(|v| v.iter().filter(|(_, slot)| matches!(slot, Slot::Ready(_))).map(|(v, _)| v.to_string()))
        .collect();
    let tensors = |all: Vec<(String, &'static str, Vec<i64>)>| -> Vec<Value> {
        all.into_iter()
            .map(|(name, datatype, shape)| json!({ "name": name, "datatype": datatype, "shape": shape }))
            .collect()
    };
    Ok(Json(json!({
        "name": model.name,
        "versions": versions,
        "platform": "onnx_onnxv1",
        "inputs": tensors(input_metadata(model)),
        "outputs": tensors(output_metadata(model)),
    }))
    .into_response())
}

fn ready_of(state: &AppState, name: &str, version: Option<u64>) -> Result<Response, ServeError> {
    // Not ready (a model that failed to load) is an error status for the client to see.
    let model = &state.registry.get(name, version)?;
    Ok(Json(json!({ "name": model.name, "ready": true })).into_response())
}

/// A v2 inference request. Each input's `data` stays the body's text until it is read straight
/// into the model's input.
#[derive(Debug, Deserialize)]
struct InferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow)]
    inputs: Vec<RequestInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
struct RequestInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

impl RequestInput<'_> {
    /// `data` as JSON values (for the few values of images and typed columns).
    fn data_value(&self) -> Result<Option<Value>, ServeError> {
        self.data
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()
            .map_err(|e| ServeError::BadRequest(format!("input {:?}'s \"data\" is not JSON: {e}", self.name)))
    }
}

#[derive(Debug, Deserialize)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

async fn infer_with(
    state: &AppState,
    name: &str,
    version: Option<u64>,
    request: Request,
) -> Result<Response, ServeError> {
    let model = &state.registry.get(name, version)?;
    let header_length = request.headers().get(HEADER_LENGTH).cloned();
    let (body, mut held) = state.read_body(request).await?;
    // With binary tensors, the JSON header comes first and its length is in a header.
    let (header, mut binary) = match header_length {
        Some(length) => {
            let length: usize =
                length.to_str().ok().and_then(|l| l.trim().parse().ok()).filter(|&l| l <= body.len()).ok_or_else(
                    || ServeError::BadRequest(format!("{HEADER_LENGTH} is not a length within the body")),
                )?;
            (body.slice(..length), body.slice(length..))
        }
        None => (body.clone(), Bytes::new()),
    };
    drop(body);
    let request: InferRequest = serde_json::from_slice(&header)
        .map_err(|e| ServeError::BadRequest(format!("the body is not a v2 inference request: {e}")))?;
    if model.loaded.model.image.is_some() {
        let images = encoded_images(&request, &mut binary)?;
        let top = classify(state, model, images).await?;
        return Ok(image_answer(model, &request, &top));
    }
    // The outputs asked for are checked before the model runs.
    let wanted = wanted_outputs(model, &request)?;
    let (outputs, rows, form) = if model.loaded.model.column_inputs.is_empty() {
        let Features { values, rows, form } = features(model, &request, &mut binary)?;
        reserve(state, model, &mut held, &wanted, rows, values.len() * 4)?;
        (model.batcher.infer(values, rows).await?, rows, form)
    } else {
        let columns = typed_columns(model, &request, &mut binary)?;
        let rows = columns.rows;
        reserve(state, model, &mut held, &wanted, rows, 0)?;
        (model.batcher.infer_columns(columns).await?, rows, RowForm::Vector)
    };
    drop(binary);
    Ok(held.until_sent(answer(model, &request, &wanted, rows, form, &outputs)))
}

/// Refuses an answer that could pass the limit, and takes the budget for the request's input
/// (`input_bytes`, already read), its outputs and its answer.
fn reserve(
    state: &AppState,
    model: &ServedModel,
    held: &mut Held,
    wanted: &[(usize, bool)],
    rows: usize,
    input_bytes: usize,
) -> Result<(), ServeError> {
    let specs = &model.loaded.model.outputs;
    let values: usize = wanted
        .iter()
        .map(|&(index, binary)| {
            let spec = &specs[index];
            let per_element = match (binary, spec.element) {
                (true, Element::Float32) => 4,
                (true, Element::Int64) => 8,
                (true, Element::String) => element_bound(spec) + 4,
                (false, _) => element_bound(spec) + 1,
            };
            rows * spec.width() * per_element + text_len(&spec.name) + 96
        })
        .sum();
    let bound = values + text_len(&model.name) + 128;
    state.check_answer(bound, rows)?;
    state.budget.grow(held, input_bytes + output_bytes(specs, rows) + bound)
}

/// The rows of the request's one input.
fn features(model: &ServedModel, request: &InferRequest, binary: &mut Bytes) -> Result<Features, ServeError> {
    let loaded = &model.loaded.model;
    let bad = ServeError::BadRequest;
    let (name, shape) = request.inputs.first().map_or(("", &[][..]), |i| (i.name.as_str(), &i.shape[..]));
    let (rows, form) = feature_rows(loaded, &model.name, request.inputs.len(), name, shape).map_err(bad)?;
    let input = &request.inputs[0];
    let n = loaded.n_features;
    let count = rows * n;
    let values = match input.parameters.get("binary_data_size").and_then(Value::as_u64) {
        Some(size) => binary_values(&input.datatype, size as usize, count, binary)?,
        None => {
            let data = input.data.ok_or_else(|| bad(format!("input {:?} has no \"data\"", input.name)))?;
            if element_size(&input.datatype).is_none() {
                return Err(bad(format!("datatype {} is not a number type", input.datatype)));
            }
            flat_numbers(data.get(), count).map_err(bad)?
        }
    };
    Ok(Features { values, rows, form })
}

/// Numbers from the binary part of the body: little-endian, row-major.
fn binary_values(datatype: &str, size: usize, count: usize, binary: &mut Bytes) -> Result<Vec<f32>, ServeError> {
    let bad = ServeError::BadRequest;
    let element = element_size(datatype).ok_or_else(|| bad(format!("datatype {datatype} is not a number type")))?;
    if size != count * element || size > binary.len() {
        return Err(bad(format!(
            "binary_data_size is {size}, but {count} {datatype} values take {} bytes and {} are left in the body",
            count * element,
            binary.len()
        )));
    }
    raw_floats(datatype, &binary.split_to(size)).map_err(bad)
}

/// The outputs asked for (all by default): each one's index, and whether it goes as binary.
fn wanted_outputs(model: &ServedModel, request: &InferRequest) -> Result<Vec<(usize, bool)>, ServeError> {
    let specs = &model.loaded.model.outputs;
    let all_binary = request.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    Ok(match &request.outputs {
        None => (0..specs.len()).map(|i| (i, all_binary)).collect(),
        Some(asked) => asked
            .iter()
            .map(|output| {
                let index = specs.iter().position(|s| s.name == output.name).ok_or_else(|| {
                    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    ServeError::BadRequest(format!(
                        "model {} has no output {:?}; it has {names:?}",
                        model.name, output.name
                    ))
                })?;
                let binary = output.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all_binary);
                Ok((index, binary))
            })
            .collect::<Result<_, ServeError>>()?,
    })
}

/// The encoded images of an image model's request: its one `BYTES` input, `[n]` or `[n, 1]`.
fn encoded_images(request: &InferRequest, binary: &mut Bytes) -> Result<Vec<Bytes>, ServeError> {
    let bad = ServeError::BadRequest;
    let [input] = &request.inputs[..] else {
        return Err(bad(format!(
            "the request has {} inputs; an image model takes one, of BYTES",
            request.inputs.len()
        )));
    };
    let count = match (input.datatype.as_str(), &input.shape[..]) {
        ("BYTES", [n] | [n, 1]) if *n > 0 => *n as usize,
        _ => {
            return Err(bad(format!(
                "input {:?} is {} {:?}; an image model takes BYTES of shape [images] or [images, 1], each an encoded image",
                input.name, input.datatype, input.shape
            )));
        }
    };
    let images = match input.parameters.get("binary_data_size").and_then(Value::as_u64) {
        Some(size) => {
            if size as usize > binary.len() {
                return Err(bad(format!(
                    "binary_data_size is {size}, but {} bytes are left in the body",
                    binary.len()
                )));
            }
            raw_elements(binary.split_to(size as usize), &input.name).map_err(ServeError::BadRequest)?
        }
        None => match &input.data_value()? {
            Some(Value::Array(items)) => items
                .iter()
                .flat_map(|item| match item {
                    Value::Array(inner) => inner.iter().collect::<Vec<_>>(),
                    other => vec![other],
                })
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(text) => from_base64(text, &format!("element {i} of input {:?}", input.name)),
                    _ => Err(bad(format!("element {i} of input {:?} is not a base64 string", input.name))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(bad(format!("input {:?} has no \"data\"", input.name))),
        },
    };
    if images.len() != count {
        return Err(bad(format!(
            "input {:?} has shape {:?} but holds {} images",
            input.name,
            input.shape,
            images.len()
        )));
    }
    Ok(images)
}

/// For a model of column inputs: the request's tensors by name, `[rows, 1]` or `[rows]` each
/// (BYTES for text, numbers for the others), JSON or binary, as the rows' typed columns.
fn typed_columns(model: &ServedModel, request: &InferRequest, binary: &mut Bytes) -> Result<Batch, ServeError> {
    let loaded = &model.loaded.model;
    let bad = ServeError::BadRequest;
    let mut columns = Map::new();
    for input in &request.inputs {
        let values: Vec<Value> = match input.parameters.get("binary_data_size").and_then(Value::as_u64) {
            Some(size) if size as usize > binary.len() => {
                return Err(bad(format!(
                    "binary_data_size is {size}, but {} bytes are left in the body",
                    binary.len()
                )));
            }
            Some(size) => raw_column(&input.datatype, binary.split_to(size as usize), &input.name).map_err(bad)?,
            None => match input.data_value()?.ok_or_else(|| bad(format!("input {:?} has no \"data\"", input.name)))? {
                Value::Array(items) => items
                    .into_iter()
                    .flat_map(|item| match item {
                        Value::Array(inner) => inner,
                        other => vec![other],
                    })
                    .collect(),
                other => vec![other],
            },
        };
        add_column(loaded, &model.name, &mut columns, &input.name, &input.shape, values).map_err(bad)?;
    }
    typed_from_columns(&columns, loaded).map_err(bad)
}

/// An image model's top k of each image, flat: the class names and their probabilities.
pub fn image_outputs(image: &crate::engine::image::ImageModel, top: &[Vec<Prediction>]) -> (Vec<String>, Vec<f32>) {
    let names = top.iter().flatten().map(|p| image.classifier.labels[p.index].clone()).collect();
    let probabilities = top.iter().flatten().map(|p| p.probability).collect();
    (names, probabilities)
}

/// An image model's answer: `classes` and `probabilities`, `[images, k]`.
fn image_answer(model: &ServedModel, request: &InferRequest, top: &[Vec<Prediction>]) -> Response {
    let Some(image) = &model.loaded.model.image else {
        return ServeError::Internal("not an image model".into()).into_response_for(PROTOCOL);
    };
    let k = top.first().map_or(0, Vec::len);
    let (names, probabilities) = image_outputs(image, top);
    let probabilities: Vec<Value> = probabilities.into_iter().map(super::tensors::json_f32).collect();
    let mut response = json!({
        "model_name": model.name,
        "model_version": model.version.to_string(),
        "outputs": [
            { "name": "classes", "datatype": "BYTES", "shape": [top.len(), k], "data": names },
            { "name": "probabilities", "datatype": "FP32", "shape": [top.len(), k], "data": probabilities },
        ],
    });
    if let Some(id) = &request.id {
        response["id"] = json!(id);
    }
    Json(response).into_response()
}

/// The response: the `wanted` outputs, each as JSON or binary, written straight from the
/// model's outputs.
fn answer(
    model: &ServedModel,
    request: &InferRequest,
    wanted: &[(usize, bool)],
    rows: usize,
    form: RowForm,
    outputs: &[OutputValues],
) -> Response {
    let specs = &model.loaded.model.outputs;
    let mut tail = Vec::new();
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"model_name\":");
    write_text(&mut out, &model.name);
    out.extend_from_slice(b",\"model_version\":");
    write_text(&mut out, &model.version.to_string());
    if let Some(id) = &request.id {
        out.extend_from_slice(b",\"id\":");
        write_text(&mut out, id);
    }
    out.extend_from_slice(b",\"outputs\":[");
    for (n, &(index, binary)) in wanted.iter().enumerate() {
        let (spec, values) = (&specs[index], &outputs[index]);
        let width = spec.width();
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_text(&mut out, &spec.name);
        out.extend_from_slice(b",\"datatype\":\"");
        out.extend_from_slice(datatype(spec.element).as_bytes());
        out.extend_from_slice(b"\",\"shape\":");
        if bare_rows(spec, form) {
            out.extend_from_slice(format!("[{rows}]").as_bytes());
        } else {
            out.extend_from_slice(format!("[{rows},{width}]").as_bytes());
        }
        if binary {
            let (_, _, data) = binary_answer(spec, values, rows, form);
            out.extend_from_slice(format!(",\"parameters\":{{\"binary_data_size\":{}}}}}", data.len()).as_bytes());
            tail.extend_from_slice(&data);
        } else {
            out.extend_from_slice(b",\"data\":");
            write_elements(&mut out, spec, values, 0, rows * width);
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"]}");
    if tail.is_empty() {
        return json_response(out);
    }
    let header_length = out.len();
    out.append(&mut tail);
    let mut response = out.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(HEADER_LENGTH, HeaderValue::from(header_length));
    response
}
