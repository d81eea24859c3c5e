//! TorchServe's (and MXNet Model Server's) inference API: `GET /ping` and `POST
//! /predictions/{name}[/{version}]`. The payload is the body, or the multipart field `data` (or
//! `body`) as TorchServe's handlers read it (`curl -F "data=@kitten.jpg"`).
//!
//! For a table model the payload is rows of features as JSON (one object or list, or a list of
//! them) or CSV with a header; the answer names its columns as the batch outputs do (pass-through
//! columns, the label as the class name, one probability per class), as JSON, or as CSV for a CSV
//! request. For an image model it is an image, and the answer its top k classes.
//!
//! <https://pytorch.org/serve/inference_api.html>

use std::io::Cursor;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::budget::Held;
use super::error::{Protocol, ServeError};
use super::images::{classify, predictions_json};
use super::json_answer;
use super::registry::ServedModel;
use super::tensors::{RowForm, output_bytes};
use super::{AppState, ModelPath};
use crate::engine::batch::Batch;
use crate::engine::formats::RowSource;
use crate::engine::formats::csv::CsvSource;
use crate::engine::formats::json_lines::JsonLinesSource;
use crate::engine::formats::text_sink::OutputLayout;
use crate::engine::{DataFormat, Model, TransformError};

const PROTOCOL: Protocol = Protocol::TorchServe;

/// Healthy once every model is loaded.
pub async fn ping(State(state): State<Arc<AppState>>) -> Response {
    if state.registry.healthy() {
        Json(json!({ "status": "Healthy" })).into_response()
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "status": "Unhealthy" }))).into_response()
    }
}

pub async fn predict(State(state): State<Arc<AppState>>, Path(path): Path<ModelPath>, request: Request) -> Response {
    state
        .answer(PROTOCOL, &path.name, async { predict_with(&state, &path.name, path.version_number()?, request).await })
        .await
}

/// How the request gave its rows, and so how the answer gives its own.
enum Shape {
    /// One JSON object or list: one object or list back.
    One,
    /// A JSON list of rows: a list back.
    Many,
    Csv,
}

async fn predict_with(
    state: &AppState,
    name: &str,
    version: Option<u64>,
    request: Request,
) -> Result<Response, ServeError> {
    let model = &state.registry.get(name, version)?;
    let (content_type, body, mut held) = payload(state, request).await?;
    if let Some(image) = &model.loaded.model.image {
        if body.is_empty() {
            return Err(ServeError::BadRequest(
                "the body is empty: send the image as the body, or as multipart field \"data\"".into(),
            ));
        }
        let top = classify(state, model, vec![body]).await?;
        return Ok(Json(predictions_json(image, &top[0])).into_response());
    }
    let csv = content_type.as_ref().is_some_and(|t| t.starts_with("text/csv") || t.starts_with("application/csv"));
    let plain = content_type.is_some_and(|t| t.starts_with("text/plain"));
    let (shape, lines) = match (csv, plain) {
        (true, _) => (Shape::Csv, body.to_vec()),
        (_, true) => (Shape::One, plain_text_row(&model.loaded.model, &body)?),
        _ => json_rows(&body)?,
    };
    let format = if csv { DataFormat::Csv { delimiter: b',', has_header: true } } else { DataFormat::JsonLines };
    let (mut batch, layout) = parse(model, format, lines)?;
    // The rows as read, their outputs and the answer (about as large as the rows' text again).
    let specs = &model.loaded.model.outputs;
    let answer_bound = body.len() + batch.rows * json_answer::row_bound(specs, RowForm::Vector) * 2;
    state.check_answer(answer_bound, batch.rows)?;
    state.budget.grow(&mut held, body.len() + output_bytes(specs, batch.rows) + answer_bound)?;
    drop(body);
    // The features go to the model; the answer needs only the batch's other columns.
    let outputs = if model.loaded.model.column_inputs.is_empty() {
        model.batcher.infer(std::mem::take(&mut batch.features), batch.rows).await?
    } else {
        model.batcher.infer_columns(batch.take_inputs()).await?
    };
    let mut text = layout.header().map_err(|e| ServeError::Internal(e.to_string()))?;
    layout.format(&batch, &outputs, &model.loaded.model, &mut text).map_err(|e| ServeError::Internal(e.to_string()))?;
    drop((batch, outputs));
    let response = match shape {
        Shape::Csv => {
            let mut response = text.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
            response
        }
        // The rows come back as JSON Lines, one object each: as JSON, the one, or a list of them.
        Shape::One => {
            while text.last() == Some(&b'\n') {
                text.pop();
            }
            json_answer::json_response(text)
        }
        Shape::Many => {
            while text.last() == Some(&b'\n') {
                text.pop();
            }
            let mut list = Vec::with_capacity(text.len() + 2);
            list.push(b'[');
            list.extend(text.iter().map(|&b| if b == b'\n' { b',' } else { b }));
            list.push(b']');
            json_answer::json_response(list)
        }
    };
    Ok(held.until_sent(response))
}

/// A `text/plain` body as the one row of a text model: the text is its text column.
fn plain_text_row(model: &Model, body: &[u8]) -> Result<Vec<u8>, ServeError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ServeError::BadRequest("the text/plain body is not UTF-8".into()))?;
    match (&model.text, &model.column_inputs[..]) {
        (Some(_), [input]) => {
            let mut row = serde_json::to_vec(&serde_json::json!({ input.name.as_str(): text }))
                .map_err(|e| ServeError::Internal(e.to_string()))?;
            row.push(b'\n');
            Ok(row)
        }
        (Some(_), inputs) => Err(ServeError::BadRequest(format!(
            "the model reads {} texts a row: send JSON naming {}",
            inputs.len(),
            inputs.iter().map(|i| format!("{:?}", i.name)).collect::<Vec<_>>().join(" and ")
        ))),
        (None, _) => {
            Err(ServeError::BadRequest("text/plain is for text models: send this model's rows as JSON or CSV".into()))
        }
    }
}

/// The request's payload and its content type: the body, or the multipart field `data` (or
/// `body`); with the request's share of the budget for it.
async fn payload(state: &AppState, request: Request) -> Result<(Option<String>, Bytes, Held), ServeError> {
    let limit = state.settings.max_body_bytes;
    let content_type = |headers: &HeaderMap| {
        headers.get(header::CONTENT_TYPE).and_then(|t| t.to_str().ok()).map(|t| t.to_ascii_lowercase())
    };
    let request_type = content_type(request.headers());
    if !request_type.as_deref().is_some_and(|t| t.starts_with("multipart/form-data")) {
        let (body, held) = state.read_body(request).await?;
        return Ok((request_type, body, held));
    }
    // A multipart body is read as it comes: its share is the body limit.
    let mut held = state.budget.empty();
    state.budget.grow(&mut held, limit)?;
    let multipart_error = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServeError::TooLarge(limit),
        _ => ServeError::BadRequest(format!("the multipart body cannot be read: {}", e.body_text())),
    };
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ServeError::BadRequest(format!("the multipart body cannot be read: {}", e.body_text())))?;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if matches!(field.name(), Some("data" | "body")) {
            let field_type = field.content_type().map(|t| t.to_ascii_lowercase());
            let bytes = field.bytes().await.map_err(multipart_error)?;
            held.shrink_to(bytes.len());
            return Ok((field_type, bytes, held));
        }
    }
    Err(ServeError::BadRequest("the multipart body has no field \"data\" (curl -F \"data=@kitten.jpg\" ...)".into()))
}

/// A JSON body as JSON Lines: one object or list (one row), or a list of objects or lists. The
/// rows are copied as their text, never built as JSON values.
fn json_rows(body: &[u8]) -> Result<(Shape, Vec<u8>), ServeError> {
    let not_json = |e: serde_json::Error| {
        ServeError::BadRequest(format!("the body is not valid JSON (send CSV as Content-Type text/csv): {e}"))
    };
    let whole: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
    let starts = |raw: &RawValue, with: &[u8]| raw.get().as_bytes().first().is_some_and(|b| with.contains(b));
    let many = match whole.get().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(whole.get()).map_err(not_json)?;
            Some(items).filter(|items| !items.is_empty() && items.iter().all(|item| starts(item, b"{[")))
        }
        Some(b'{') => None,
        _ => {
            let value: Value = serde_json::from_str(whole.get()).map_err(not_json)?;
            return Err(ServeError::BadRequest(format!(
                "the body is {}; send a row (an object of features, or a list of them), or a list of rows",
                super::tensors::kind_of(&value)
            )));
        }
    };
    let (shape, rows) = match many {
        Some(items) => (Shape::Many, items),
        None => (Shape::One, vec![whole]),
    };
    let mut lines = Vec::with_capacity(body.len() + rows.len());
    for row in rows {
        // A line break inside a JSON value is only ever white space.
        lines.extend(row.get().bytes().map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
        lines.push(b'\n');
    }
    Ok((shape, lines))
}

/// The rows, read as the batch engine reads a file; any bad row fails the request with its reason.
fn parse(model: &ServedModel, format: DataFormat, text: Vec<u8>) -> Result<(Batch, OutputLayout), ServeError> {
    let loaded = &model.loaded.model;
    let rejected = |e: TransformError| ServeError::BadRequest(e.to_string());
    let mut source: Box<dyn RowSource> = match format {
        DataFormat::Csv { delimiter, has_header } => {
            Box::new(CsvSource::open(Cursor::new(text), delimiter, has_header, loaded).map_err(rejected)?)
        }
        _ => Box::new(JsonLinesSource::open(Cursor::new(text), loaded).map_err(rejected)?),
    };
    let mut batch = Batch::default();
    while source.fill(&mut batch, usize::MAX).map_err(rejected)? {}
    if let Some(bad) = batch.bad.first() {
        let rows = if format == DataFormat::JsonLines { "row" } else { "line" };
        return Err(ServeError::BadRequest(format!(
            "{} of {} rows cannot be used; the first, {rows} {}: {}",
            batch.bad.len(),
            batch.rows_read,
            bad.line,
            bad.reason
        )));
    }
    if batch.rows == 0 {
        return Err(ServeError::BadRequest("the body has no rows".into()));
    }
    let layout = OutputLayout::new(format, source.plan(), source.named(), loaded);
    Ok((batch, layout))
}
