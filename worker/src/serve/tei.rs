//! Hugging Face text-embeddings-inference's routes, each for the one model of its kind this
//! server serves (TEI serves one model):
//! - `POST /embed`, a text encoder: `inputs` a string or a list, `normalize` (default true); the
//!   answer one array of floats a text;
//! - `POST /predict`, a text classifier (or a cross-encoder, given pairs): `inputs` a text, a
//!   pair `[a, b]`, or a list of them; the answer every label with its score, best first (a list
//!   of those for a list);
//! - `POST /rerank`, a cross-encoder: `query` and `texts`; the answer `{index, score}` (and
//!   `text` with `return_text`) a text, best first.
//!
//! `truncate` (default false): a text longer than the model reads is a 413, as TEI answers.
//! Errors in TEI's shape (`{"error", "error_type"}`), so TEI's clients
//! (`huggingface_hub.InferenceClient`'s `feature_extraction`, `text_classification`; LangChain's
//! `HuggingFaceEndpointEmbeddings`) work as against TEI.
//!
//! <https://huggingface.github.io/text-embeddings-inference/>

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use serde::Deserialize;

use super::AppState;
use super::error::{Protocol, ServeError};
use super::json_answer::{json_response, write_f32, write_text};
use super::openai::{embed_texts, run_texts};
use super::registry::{ServedModel, Slot};
use crate::engine::OutputValues;
use crate::engine::text::pooling::normalize;
use crate::engine::text::{Head, TextEncoder, TextRow};

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
    state.answer(PROTOCOL, "", run_embed(&state, request)).await
}

async fn run_embed(state: &AppState, request: Request) -> Result<Response, ServeError> {
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
    let model = the_model(state, Kind::Encoder)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    inputs: PredictInputs,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    truncate: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
}

/// One text, one pair, or a list of either (a two-string list is a pair for a model of pairs,
/// two texts otherwise).
#[derive(Deserialize)]
#[serde(untagged)]
enum PredictInputs {
    One(String),
    Many(Vec<Sequence>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Sequence {
    Text(String),
    Pair(String, String),
}

/// `POST /predict`.
pub async fn predict(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.answer(PROTOCOL, "", run_predict(&state, request)).await
}

async fn run_predict(state: &AppState, request: Request) -> Result<Response, ServeError> {
    let (body, _held) = state.read_body(request).await?;
    let request: PredictRequest = serde_json::from_slice(&body)
        .map_err(|e| ServeError::BadRequest(format!("the body is not a predict request: {e}")))?;
    check_options(request.raw_scores, request.truncation_direction.as_deref())?;
    let model = the_model(state, Kind::Classifier)?;
    let encoder = encoder(&model);
    let pairs = encoder.pairs;
    let (rows, batch): (Vec<(String, Option<String>)>, bool) = match request.inputs {
        PredictInputs::One(text) if !pairs => (vec![(text, None)], false),
        PredictInputs::Many(list) if list.is_empty() => {
            return Err(ServeError::BadRequest("inputs is an empty list".into()));
        }
        PredictInputs::Many(list)
            if pairs && list.len() == 2 && list.iter().all(|s| matches!(s, Sequence::Text(_))) =>
        {
            let mut texts = list.into_iter().map(|s| match s {
                Sequence::Text(text) => text,
                Sequence::Pair(..) => unreachable!("checked above"),
            });
            (vec![(texts.next().unwrap_or_default(), texts.next())], false)
        }
        PredictInputs::Many(list) => {
            let rows = list
                .into_iter()
                .map(|sequence| match (sequence, pairs) {
                    (Sequence::Text(text), false) => Ok((text, None)),
                    (Sequence::Pair(a, b), true) => Ok((a, Some(b))),
                    (_, true) => Err(ServeError::BadRequest(
                        "this model scores pairs of texts: inputs are [text, text_pair] or a list of them".into(),
                    )),
                    (_, false) => Err(ServeError::BadRequest("this model classifies single texts, not pairs".into())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (rows, true)
        }
        PredictInputs::One(_) => {
            return Err(ServeError::BadRequest(
                "this model scores pairs of texts: inputs are [text, text_pair] or a list of them".into(),
            ));
        }
    };
    let labels: Vec<String> = match &encoder.head {
        Head::Classify { labels, .. } => labels.clone(),
        _ => vec!["LABEL_0".into()],
    };
    let bound = rows.len() * labels.iter().map(|l| l.len() * 2 + 40).sum::<usize>() + 16;
    let scores = scores(state, &model, &rows, bound, request.truncate).await?;
    let mut out = Vec::with_capacity(bound);
    if batch {
        out.push(b'[');
    }
    for (row, scores) in scores.chunks(labels.len()).enumerate() {
        if row > 0 {
            out.push(b',');
        }
        let mut order: Vec<usize> = (0..labels.len()).collect();
        // Best first; equals keep the labels' order (a stable sort, as TEI's).
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        out.push(b'[');
        for (i, &label) in order.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"{\"label\":" } else { b",{\"label\":" });
            write_text(&mut out, &labels[label]);
            out.extend_from_slice(b",\"score\":");
            write_f32(&mut out, scores[label]);
            out.push(b'}');
        }
        out.push(b']');
    }
    if batch {
        out.push(b']');
    }
    Ok(json_response(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankRequest {
    query: String,
    texts: Vec<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    #[serde(default)]
    truncate: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
}

/// `POST /rerank`.
pub async fn rerank(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.answer(PROTOCOL, "", run_rerank(&state, request)).await
}

async fn run_rerank(state: &AppState, request: Request) -> Result<Response, ServeError> {
    let (body, _held) = state.read_body(request).await?;
    let request: RerankRequest = serde_json::from_slice(&body)
        .map_err(|e| ServeError::BadRequest(format!("the body is not a rerank request: {e}")))?;
    check_options(request.raw_scores, request.truncation_direction.as_deref())?;
    if request.texts.is_empty() {
        return Err(ServeError::BadRequest("texts is an empty list".into()));
    }
    let model = the_model(state, Kind::Reranker)?;
    let rows: Vec<(String, Option<String>)> =
        request.texts.iter().map(|text| (request.query.clone(), Some(text.clone()))).collect();
    let texts_bytes: usize = if request.return_text { request.texts.iter().map(|t| t.len() * 6 + 12).sum() } else { 0 };
    let bound = request.texts.len() * 48 + texts_bytes + 16;
    let scores = scores(state, &model, &rows, bound, request.truncate).await?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut out = Vec::with_capacity(bound);
    out.push(b'[');
    for (i, &index) in order.iter().enumerate() {
        out.extend_from_slice(format!("{}{{\"index\":{index},\"score\":", if i == 0 { "" } else { "," }).as_bytes());
        write_f32(&mut out, scores[index]);
        if request.return_text {
            out.extend_from_slice(b",\"text\":");
            write_text(&mut out, &request.texts[index]);
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(json_response(out))
}

/// Refuses what sluice does not do: raw logits (the model's activation is part of its answer),
/// truncation from the left.
fn check_options(raw_scores: bool, direction: Option<&str>) -> Result<(), ServeError> {
    if raw_scores {
        return Err(ServeError::BadRequest(
            "raw_scores: sluice answers the scores after the model's activation (sigmoid or softmax), not raw logits"
                .into(),
        ));
    }
    match direction {
        Some(direction) if !direction.eq_ignore_ascii_case("right") => {
            Err(ServeError::BadRequest(format!("truncation_direction {direction:?}: only right is supported")))
        }
        _ => Ok(()),
    }
}

/// Runs `rows` through the model: its scores (probabilities), one per label a row.
async fn scores(
    state: &AppState,
    model: &ServedModel,
    rows: &[(String, Option<String>)],
    bound: usize,
    truncate: bool,
) -> Result<Vec<f32>, ServeError> {
    let limit = (!truncate).then_some(encoder(model).layout.max_length);
    let rows: Vec<TextRow> = rows.iter().map(|(a, b)| (a.as_str(), b.as_deref())).collect();
    let (outputs, _) = run_texts(state, model, &rows, bound, limit).await?;
    // A classifier answers its labels and then their probabilities; a cross-encoder its scores.
    match outputs.into_iter().last() {
        Some(OutputValues::Float(scores)) => Ok(scores),
        _ => Err(ServeError::Internal("the model answered no scores".into())),
    }
}

fn encoder(model: &ServedModel) -> &TextEncoder {
    model.loaded.model.text.as_ref().expect("a text model")
}

/// The kinds of text model TEI's routes serve.
#[derive(Clone, Copy)]
enum Kind {
    Encoder,
    Classifier,
    Reranker,
}

impl Kind {
    fn fits(self, encoder: &TextEncoder) -> bool {
        match (self, &encoder.head) {
            (Kind::Encoder, Head::Embed(_)) => true,
            (Kind::Classifier, Head::Classify { .. } | Head::Score { .. }) => true,
            (Kind::Reranker, Head::Score { .. }) => encoder.pairs,
            _ => false,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Encoder => "text encoder",
            Kind::Classifier => "text classifier",
            Kind::Reranker => "cross-encoder",
        }
    }
}

/// The one model of `kind` served (TEI serves one model), at its latest version.
fn the_model(state: &AppState, kind: Kind) -> Result<Arc<ServedModel>, ServeError> {
    let models = state.registry.snapshot();
    let fitting: Vec<&String> = models
        .iter()
        .filter(|(_, versions)| {
            versions.values().any(|slot| {
                matches!(slot, Slot::Ready(model) if model.loaded.model.text.as_ref().is_some_and(|e| kind.fits(e)))
            })
        })
        .map(|(name, _)| name)
        .collect();
    let what = kind.name();
    match fitting[..] {
        [name] => Ok(state.registry.get(name, None)?),
        [] => Err(ServeError::NotFound(format!("this server serves no {what}"))),
        _ => Err(ServeError::BadRequest(format!(
            "this server serves several of them ({}): TEI's routes serve one {what}; name the model with the TF Serving or KServe routes",
            fitting.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}
