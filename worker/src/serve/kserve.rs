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
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{Protocol, ServeError, body};
use super::images::{classify, from_base64};
use super::registry::{ServedModel, Slot};
use super::tensors::{Features, RowForm, bare_rows, datatype, feature, label_value, typed_from_columns};
use super::{AppState, ModelPath};
use crate::engine::batch::Batch;
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

pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Response {
    state
        .answer(PROTOCOL, &path.name, async {
            infer_with(&state, &path.name, path.version_number()?, &headers, request).await
        })
        .await
}

fn metadata_of(state: &AppState, name: &str, version: Option<u64>) -> Result<Response, ServeError> {
    let model = state.registry.get(name, version)?;
    let loaded = &model.loaded.model;
    let versions: Vec<String> = state
        .registry
        .versions(name)
        .into_iter()
        .flat_map(|v| v.iter().filter(|(_, slot)| matches!(slot, Slot::Ready(_))).map(|(v, _)| v.to_string()))
        .collect();
    if let Some(image) = &loaded.image {
        let k = image.classifier.k;
        return Ok(Json(json!({
            "name": model.name,
            "versions": versions,
            "platform": "onnx_onnxv1",
            "inputs": [{ "name": loaded.input_name, "datatype": "BYTES", "shape": [-1] }],
            "outputs": [
                { "name": "classes", "datatype": "BYTES", "shape": [-1, k] },
                { "name": "probabilities", "datatype": "FP32", "shape": [-1, k] },
            ],
        }))
        .into_response());
    }
    let outputs: Vec<Value> = loaded
        .outputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = if spec.rank == 1 { vec![-1] } else { vec![-1, spec.width() as i64] };
            json!({ "name": spec.name, "datatype": datatype(spec.element), "shape": shape })
        })
        .collect();
    let inputs: Vec<Value> = if loaded.column_inputs.is_empty() {
        vec![json!({ "name": loaded.input_name, "datatype": "FP32", "shape": [-1, loaded.n_features] })]
    } else {
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
                json!({ "name": input.name, "datatype": datatype, "shape": [-1, 1] })
            })
            .collect()
    };
    Ok(Json(json!({
        "name": model.name,
        "versions": versions,
        "platform": "onnx_onnxv1",
        "inputs": inputs,
        "outputs": outputs,
    }))
    .into_response())
}

fn ready_of(state: &AppState, name: &str, version: Option<u64>) -> Result<Response, ServeError> {
    // Not ready (a model that failed to load) is an error status for the client to see.
    let model = state.registry.get(name, version)?;
    Ok(Json(json!({ "name": model.name, "ready": true })).into_response())
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
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
    headers: &HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, ServeError> {
    let model = state.registry.get(name, version)?;
    let body = body(request, state.settings.max_body_bytes)?;
    // With binary tensors, the JSON header comes first and its length is in a header.
    let (header, mut binary) = match headers.get(HEADER_LENGTH) {
        Some(length) => {
            let length: usize =
                length.to_str().ok().and_then(|l| l.trim().parse().ok()).filter(|&l| l <= body.len()).ok_or_else(
                    || ServeError::BadRequest(format!("{HEADER_LENGTH} is not a length within the body")),
                )?;
            (body.slice(..length), body.slice(length..))
        }
        None => (body.clone(), Bytes::new()),
    };
    let request: InferRequest = serde_json::from_slice(&header)
        .map_err(|e| ServeError::BadRequest(format!("the body is not a v2 inference request: {e}")))?;
    if model.loaded.model.image.is_some() {
        let images = encoded_images(&request, &mut binary)?;
        let top = classify(state, model, images).await?;
        return Ok(image_answer(model, &request, &top));
    }
    if !model.loaded.model.column_inputs.is_empty() {
        let columns = typed_columns(model, &request, &mut binary)?;
        let wanted = wanted_outputs(model, &request)?;
        let rows = columns.rows;
        let outputs = model.batcher.infer_columns(columns).await?;
        return Ok(answer(model, &request, &wanted, rows, RowForm::Vector, &outputs));
    }
    let Features { values, rows, form } = features(model, &request, &mut binary)?;
    // The outputs asked for are checked before the model runs.
    let wanted = wanted_outputs(model, &request)?;
    let outputs = model.batcher.infer(values, rows).await?;
    Ok(answer(model, &request, &wanted, rows, form, &outputs))
}

/// The rows of the request's one input.
fn features(model: &ServedModel, request: &InferRequest, binary: &mut Bytes) -> Result<Features, ServeError> {
    let loaded = &model.loaded.model;
    let bad = ServeError::BadRequest;
    let [input] = &request.inputs[..] else {
        return Err(bad(format!(
            "the request has {} inputs; model {} takes one, {:?}",
            request.inputs.len(),
            model.name,
            loaded.input_name
        )));
    };
    if input.name != loaded.input_name {
        return Err(bad(format!(
            "unexpected input {:?}: model {} takes one input, {:?}",
            input.name, model.name, loaded.input_name
        )));
    }
    let n = loaded.n_features;
    let (rows, form) = match input.shape[..] {
        [rows, features] if rows > 0 && features as usize == n => (rows as usize, RowForm::Vector),
        [rows] if rows > 0 && n == 1 => (rows as usize, RowForm::Scalar),
        _ => {
            return Err(bad(format!(
                "input {:?} has shape {:?}; the model takes [rows, {n}]{}",
                input.name,
                input.shape,
                if n == 1 { " or [rows]" } else { "" }
            )));
        }
    };
    let count = rows * n;
    let values = match input.parameters.get("binary_data_size").and_then(Value::as_u64) {
        Some(size) => binary_values(&input.datatype, size as usize, count, binary)?,
        None => {
            let data = input.data.as_ref().ok_or_else(|| bad(format!("input {:?} has no \"data\"", input.name)))?;
            json_values(&input.datatype, data, count)?
        }
    };
    Ok(Features { values, rows, form })
}

/// Element sizes of the numeric datatypes.
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
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
    let data = binary.split_to(size);
    let values: Vec<f32> = data
        .chunks_exact(element)
        .map(|b| match datatype {
            "BOOL" | "UINT8" => f32::from(b[0]),
            "INT8" => f32::from(b[0] as i8),
            "INT16" => f32::from(i16::from_le_bytes([b[0], b[1]])),
            "UINT16" => f32::from(u16::from_le_bytes([b[0], b[1]])),
            "FP16" => half_to_f32(u16::from_le_bytes([b[0], b[1]])),
            "INT32" => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
            "UINT32" => u32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
            "FP32" => f32::from_le_bytes(b.try_into().expect("4 bytes")),
            "INT64" => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            "UINT64" => u64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            _ => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        })
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("value {i} of the input is not a finite number")));
    }
    Ok(values)
}

/// An IEEE half-precision float.
fn half_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f32::from(bits & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f32.powi(-24),
        31 => f32::INFINITY,
        _ => (1.0 + fraction / 1024.0) * 2f32.powi(exponent - 15),
    }
}

/// Numbers from `"data"`, flat or nested, row-major.
fn json_values(datatype: &str, data: &Value, count: usize) -> Result<Vec<f32>, ServeError> {
    if element_size(datatype).is_none() {
        return Err(ServeError::BadRequest(format!("datatype {datatype} is not a number type")));
    }
    let mut values = Vec::with_capacity(count);
    let mut pending = vec![data];
    // Depth-first, in order: nested lists flatten row-major.
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items.iter().rev()),
            value => {
                let index = values.len();
                values.push(feature(value, &|| format!("value {index} of the input")).map_err(ServeError::BadRequest)?);
            }
        }
    }
    if values.len() != count {
        return Err(ServeError::BadRequest(format!(
            "the input's shape needs {count} values; \"data\" has {}",
            values.len()
        )));
    }
    Ok(values)
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
            binary_elements(binary.split_to(size as usize), &input.name)?
        }
        None => match &input.data {
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

/// The elements of a binary BYTES tensor: each its length (4 bytes, little-endian), then its
/// bytes. The shape is the client's word: the data bounds what is allocated.
fn binary_elements(mut data: Bytes, input: &str) -> Result<Vec<Bytes>, ServeError> {
    let mut elements = Vec::new();
    while data.len() >= 4 {
        let length = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if length > data.len() - 4 {
            return Err(ServeError::BadRequest(format!("input {input:?}: an element's length runs past its data")));
        }
        let _ = data.split_to(4);
        elements.push(data.split_to(length));
    }
    Ok(elements)
}

/// For a model of column inputs: the request's tensors by name, `[rows, 1]` or `[rows]` each
/// (BYTES for text, numbers for the others), JSON or binary, as the rows' typed columns.
fn typed_columns(model: &ServedModel, request: &InferRequest, binary: &mut Bytes) -> Result<Batch, ServeError> {
    let loaded = &model.loaded.model;
    let bad = ServeError::BadRequest;
    let mut columns = Map::new();
    for input in &request.inputs {
        if !loaded.column_inputs.iter().any(|i| i.name == input.name) {
            let names: Vec<&str> = loaded.column_inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(bad(format!("unexpected input {:?}: model {} takes {names:?}", input.name, model.name)));
        }
        let rows = match input.shape[..] {
            [rows] | [rows, 1] if rows > 0 => rows as usize,
            _ => {
                return Err(bad(format!(
                    "input {:?} has shape {:?}; each input is [rows, 1]",
                    input.name, input.shape
                )));
            }
        };
        let values: Vec<Value> = match input.parameters.get("binary_data_size").and_then(Value::as_u64) {
            Some(size) if size as usize > binary.len() => {
                return Err(bad(format!(
                    "binary_data_size is {size}, but {} bytes are left in the body",
                    binary.len()
                )));
            }
            Some(size) if input.datatype == "BYTES" => binary_elements(binary.split_to(size as usize), &input.name)?
                .into_iter()
                .map(|bytes| match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => Ok(Value::String(text)),
                    Err(_) => Err(bad(format!("an element of input {:?} is not UTF-8 text", input.name))),
                })
                .collect::<Result<_, _>>()?,
            Some(size) => {
                let element = element_size(&input.datatype)
                    .ok_or_else(|| bad(format!("datatype {} is not BYTES or a number type", input.datatype)))?;
                if size as usize != rows * element {
                    return Err(bad(format!(
                        "binary_data_size is {size}, but {rows} {} values take {}",
                        input.datatype,
                        rows * element
                    )));
                }
                binary.split_to(size as usize).chunks_exact(element).map(|b| number_value(&input.datatype, b)).collect()
            }
            None => {
                let data = input.data.as_ref().ok_or_else(|| bad(format!("input {:?} has no \"data\"", input.name)))?;
                match data {
                    Value::Array(items) => items
                        .iter()
                        .flat_map(|item| match item {
                            Value::Array(inner) => inner.clone(),
                            other => vec![other.clone()],
                        })
                        .collect(),
                    other => vec![other.clone()],
                }
            }
        };
        if values.len() != rows {
            return Err(bad(format!(
                "input {:?} has shape {:?} but holds {} values",
                input.name,
                input.shape,
                values.len()
            )));
        }
        columns.insert(input.name.clone(), Value::Array(values));
    }
    typed_from_columns(&columns, loaded).map_err(bad)
}

/// A little-endian number of `datatype` as JSON.
fn number_value(datatype: &str, b: &[u8]) -> Value {
    match datatype {
        "BOOL" | "UINT8" => Value::from(b[0]),
        "INT8" => Value::from(b[0] as i8),
        "INT16" => Value::from(i16::from_le_bytes([b[0], b[1]])),
        "UINT16" => Value::from(u16::from_le_bytes([b[0], b[1]])),
        "FP16" => Value::from(half_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        "INT32" => Value::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))),
        "UINT32" => Value::from(u32::from_le_bytes(b.try_into().expect("4 bytes"))),
        "FP32" => Value::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        "INT64" => Value::from(i64::from_le_bytes(b.try_into().expect("8 bytes"))),
        "UINT64" => Value::from(u64::from_le_bytes(b.try_into().expect("8 bytes"))),
        _ => Value::from(f64::from_le_bytes(b.try_into().expect("8 bytes"))),
    }
}

/// An image model's answer: `classes` and `probabilities`, `[images, k]`.
fn image_answer(
    model: &ServedModel,
    request: &InferRequest,
    top: &[Vec<crate::engine::image::Prediction>],
) -> Response {
    let Some(image) = &model.loaded.model.image else {
        return ServeError::Internal("not an image model".into()).into_response_for(PROTOCOL);
    };
    let k = top.first().map_or(0, Vec::len);
    let classes: Vec<Value> = top.iter().flatten().map(|p| json!(image.classifier.labels[p.index])).collect();
    let probabilities: Vec<Value> = top.iter().flatten().map(|p| super::tensors::json_f32(p.probability)).collect();
    let mut response = json!({
        "model_name": model.name,
        "model_version": model.version.to_string(),
        "outputs": [
            { "name": "classes", "datatype": "BYTES", "shape": [top.len(), k], "data": classes },
            { "name": "probabilities", "datatype": "FP32", "shape": [top.len(), k], "data": probabilities },
        ],
    });
    if let Some(id) = &request.id {
        response["id"] = json!(id);
    }
    Json(response).into_response()
}

/// The response: the `wanted` outputs, each as JSON or binary.
fn answer(
    model: &ServedModel,
    request: &InferRequest,
    wanted: &[(usize, bool)],
    rows: usize,
    form: RowForm,
    outputs: &[OutputValues],
) -> Response {
    let specs = &model.loaded.model.outputs;
    let mut tail = BytesMut::new();
    let mut described = Vec::with_capacity(wanted.len());
    for &(index, binary) in wanted {
        let (spec, values) = (&specs[index], &outputs[index]);
        let width = spec.width();
        let shape: Vec<usize> = if bare_rows(spec, form) { vec![rows] } else { vec![rows, width] };
        let mut output = Map::new();
        output.insert("name".into(), json!(spec.name));
        output.insert("datatype".into(), json!(datatype(spec.element)));
        output.insert("shape".into(), json!(shape));
        if binary {
            let start = tail.len();
            for i in 0..rows * width {
                match (spec.element, values) {
                    (Element::Float32, OutputValues::Float(v)) => tail.put_f32_le(v[i]),
                    (Element::Int64, OutputValues::Int(v)) => tail.put_i64_le(v[i]),
                    _ => {
                        // BYTES: each element's length (4 bytes) then its bytes.
                        let text = match label_value(spec, values, i) {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        tail.put_u32_le(text.len() as u32);
                        tail.put_slice(text.as_bytes());
                    }
                }
            }
            output.insert("parameters".into(), json!({ "binary_data_size": tail.len() - start }));
        } else {
            output
                .insert("data".into(), Value::Array((0..rows * width).map(|i| label_value(spec, values, i)).collect()));
        }
        described.push(Value::Object(output));
    }
    let mut response = json!({
        "model_name": model.name,
        "model_version": model.version.to_string(),
        "outputs": described,
    });
    if let Some(id) = &request.id {
        response["id"] = json!(id);
    }
    if tail.is_empty() {
        return Json(response).into_response();
    }
    let header = serde_json::to_vec(&response).expect("a response serialises");
    let header_length = header.len();
    let mut body = BytesMut::with_capacity(header_length + tail.len());
    body.put_slice(&header);
    body.put(tail);
    let mut response = body.freeze().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(HEADER_LENGTH, HeaderValue::from(header_length));
    response
}
