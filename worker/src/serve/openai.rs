//! OpenAI's embeddings API, `POST /v1/embeddings`, for text encoders: `input` a string or a list
//! of them, `encoding_format` `float` or `base64` (little-endian float32, what the `openai`
//! Python client asks for by default), `dimensions` when it is the model's own; `usage` counts the
//! tokens the model read. Errors come in OpenAI's shape (`{"error": {"message", "type", "param",
//! "code"}}`), so the `openai` client, and LangChain's and LlamaIndex's OpenAI embeddings pointed
//! at this server with `base_url`, work as they do against OpenAI.
//!
//! <https://platform.openai.com/docs/api-reference/embeddings>

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;

use super::AppState;
use super::error::{Protocol, ServeError};
use super::json_answer::{json_response, write_f32};
use super::registry::ServedModel;
use crate::engine::OutputValues;
use crate::engine::batch::Batch;
use crate::engine::text::{Head, TextRow};

const PROTOCOL: Protocol = Protocol::OpenAi;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// OpenAI's end-user id: accepted, unused.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Anything else, token ids among them (what OpenAI's own tokenizer makes): this server
    /// tokenizes text itself.
    Other(serde_json::Value),
}

/// `POST /v1/embeddings`.
/// (The model is named in the body, so the request is counted without a model label.)
pub async fn embeddings(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.answer(PROTOCOL, "", embed(&state, request)).await
}

async fn embed(state: &AppState, request: Request) -> Result<Response, ServeError> {
    let (body, _held) = state.read_body(request).await?;
    let request: EmbeddingsRequest = serde_json::from_slice(&body)
        .map_err(|e| ServeError::BadRequest(format!("the body is not an embeddings request: {e}")))?;
    let texts = match request.input {
        Input::One(text) => vec![text],
        Input::Many(texts) if texts.is_empty() => {
            return Err(ServeError::BadRequest("input is an empty list: send at least one text".into()));
        }
        Input::Many(texts) => texts,
        Input::Other(value) => {
            let numbers =
                |v: &serde_json::Value| v.as_array().is_some_and(|a| a.iter().any(|x| x.is_number() || x.is_array()));
            let advice = match numbers(&value) {
                true => {
                    ": token ids (tiktoken's) mean nothing to this server, which tokenizes text with the model's own tokenizer (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))"
                }
                false => "",
            };
            return Err(ServeError::BadRequest(format!("input must be a string or a list of strings{advice}")));
        }
    };
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ServeError::BadRequest(format!("encoding_format {other:?} is not float or base64")));
        }
    };
    let model = state.registry.get(&request.model, None)?;
    let Some(encoder) = model.loaded.model.text.as_ref().filter(|e| matches!(e.head, Head::Embed(_))) else {
        return Err(ServeError::BadRequest(format!(
            "the model {} is not a text encoder: /v1/embeddings takes sentence-transformers folders",
            request.model
        )));
    };
    let width = encoder.width;
    if let Some(dimensions) = request.dimensions
        && dimensions != width
    {
        return Err(ServeError::BadRequest(format!(
            "the model {} makes embeddings of {width} dimensions, not {dimensions}",
            request.model
        )));
    }
    let bound = texts.len() * (width * if base64 { 6 } else { 16 } + 64) + 256;
    let (values, tokens) = embed_texts(state, &model, &texts, bound, None).await?;
    let mut out = Vec::with_capacity(bound);
    out.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (index, embedding) in values.chunks(width).enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"object\":\"embedding\",\"index\":{index},\"embedding\":").as_bytes());
        if base64 {
            let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.push(b'"');
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes());
            out.push(b'"');
        } else {
            out.push(b'[');
            for (i, &value) in embedding.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_f32(&mut out, value);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"model\":");
    out.extend_from_slice(&serde_json::to_vec(&request.model).expect("strings serialise"));
    out.extend_from_slice(format!(",\"usage\":{{\"prompt_tokens\":{tokens},\"total_tokens\":{tokens}}}}}").as_bytes());
    Ok(json_response(out))
}

/// Runs `texts` through a text encoder's batcher: the embeddings, row-major, and the tokens read.
/// `limit`, when given, refuses a text longer than it (rather than truncating it).
pub(super) async fn embed_texts(
    state: &AppState,
    model: &ServedModel,
    texts: &[String],
    bound: usize,
    limit: Option<usize>,
) -> Result<(Vec<f32>, usize), ServeError> {
    let rows: Vec<TextRow> = texts.iter().map(|t| (t.as_str(), None)).collect();
    let (outputs, tokens) = run_texts(state, model, &rows, bound, limit).await?;
    match outputs.into_iter().next() {
        Some(OutputValues::Float(values)) => Ok((values, tokens)),
        _ => Err(ServeError::Internal("the encoder answered no embeddings".into())),
    }
}

/// Runs texts (or pairs of texts) through a text model's batcher: its outputs, and the tokens
/// read. `limit`, when given, refuses a text longer than it (rather than truncating it).
pub(super) async fn run_texts(
    state: &AppState,
    model: &ServedModel,
    rows: &[TextRow<'_>],
    bound: usize,
    limit: Option<usize>,
) -> Result<(Vec<OutputValues>, usize), ServeError> {
    let encoder = model.loaded.model.text.as_ref().ok_or_else(|| ServeError::Internal("not a text model".into()))?;
    let mut tokens = 0;
    let mut batch = Batch::default();
    for &(text, pair) in rows {
        let encoding = encoder.encode((text, pair)).map_err(ServeError::BadRequest)?;
        if let Some(limit) = limit
            && !encoding.get_overflowing().is_empty()
        {
            return Err(ServeError::TooLong(format!(
                "Input validation error: `inputs` must have at most {limit} tokens; set truncate to true to cut longer ones"
            )));
        }
        tokens += encoding.get_attention_mask().iter().sum::<u32>() as usize;
        batch.text.push(text.as_bytes());
        if let Some(pair) = pair {
            batch.text.push(pair.as_bytes());
        }
    }
    batch.rows = rows.len();
    batch.rows_read = rows.len() as u64;
    state.check_answer(bound, rows.len())?;
    Ok((model.batcher.infer_columns(batch).await?, tokens))
}
