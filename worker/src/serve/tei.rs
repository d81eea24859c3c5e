//! Hugging Face text-embeddings-inference's `POST /embed`, for the text encoder this server
//! serves: `inputs` a string or a list, `normalize` (default true), `truncate` (default false: a
//! text longer than the model reads is a 413, as TEI answers); the answer one array of floats a
//! text. Errors in TEI's shape (`{"error", "error_type"}`), so TEI's clients
//! (`huggingface_hub.InferenceClient.feature_extraction`, LangChain's
//! `HuggingFaceEndpointEmbeddings`) work as against TEI.
//!
//! <https://huggingface.github.io/text-embeddings-inference/>

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use serde::Deserialize;

use super::AppState;
use super::error::{Protocol, ServeError};
use super::json_answer::{json_response, write_f32};
use super::openai::embed_texts;
use super::registry::{ServedModel, Slot};
use crate::engine::text::pooling::normalize;

const PROTOCOL: Protocol = Protocol::Tei;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest {
    inputs: Inputs,
    #[serde(default = "yes")]
    normalize: bool,
    #[serde(default)]
    truncate: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Many(Vec<String>),
}

/// `POST /embed`.
pub async fn embed(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.answer(PROTOCOL, "", run(&state, request)).await
}

async fn run(state: &AppState, request: Request) -> Result<Response, ServeError> {
    let (body, _held) = state.read_body(request).await?;
    let request: EmbedRequest = serde_json::from_slice(&body)
        .map_err(|e| ServeError::BadRequest(format!("the body is not an embed request: {e}")))?;
    if let Some(direction) = request.truncation_direction.as_deref()
        && !direction.eq_ignore_ascii_case("right")
    {
        return Err(ServeError::BadRequest(format!("truncation_direction {direction:?}: only right is supported")));
    }
    let texts = match request.inputs {
        Inputs::One(text) => vec![text],
        Inputs::Many(texts) if texts.is_empty() => {
            return Err(ServeError::BadRequest("inputs is an empty list".into()));
        }
        Inputs::Many(texts) => texts,
    };
    let model = the_text_encoder(state)?;
    let encoder = model.loaded.model.text.as_ref().expect("a text encoder");
    let (width, max_length) = (encoder.width, encoder.layout.max_length);
    let bound = texts.len() * (width * 16 + 8) + 16;
    let limit = (!request.truncate).then_some(max_length);
    let (mut values, _) = embed_texts(state, &model, &texts, bound, limit).await?;
    if request.normalize {
        values.chunks_mut(width).for_each(normalize);
    }
    let mut out = Vec::with_capacity(bound);
    out.push(b'[');
    for (row, embedding) in values.chunks(width).enumerate() {
        out.extend_from_slice(if row == 0 { b"[" } else { b",[" });
        for (i, &value) in embedding.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_f32(&mut out, value);
        }
        out.push(b']');
    }
    out.push(b']');
    Ok(json_response(out))
}

/// The one text encoder served (TEI serves one model), at its latest version.
fn the_text_encoder(state: &AppState) -> Result<Arc<ServedModel>, ServeError> {
    let models = state.registry.snapshot();
    let encoders: Vec<&String> = models
        .iter()
        .filter(|(_, versions)| {
            versions.values().any(|slot| matches!(slot, Slot::Ready(model) if model.loaded.model.text.is_some()))
        })
        .map(|(name, _)| name)
        .collect();
    match encoders[..] {
        [name] => Ok(state.registry.get(name, None)?),
        [] => Err(ServeError::NotFound("this server serves no text encoder".into())),
        _ => Err(ServeError::BadRequest(format!(
            "this server serves several text encoders ({}): name one with POST /v1/embeddings",
            encoders.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}
