//! Image models online: encoded images in (however the protocol carries them: a request body, a
//! multipart field, base64 in JSON, KServe `BYTES`), the top k classes out. Decoding and
//! preprocessing run off the async threads; the model runs in the model's batcher, so images of
//! concurrent requests share model runs.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::AppState;
use super::error::ServeError;
use super::registry::ServedModel;
use super::tensors::json_f32;
use crate::engine::image::{ImageModel, Prediction};

/// The model's image side, or a 400 for a model that takes rows.
pub fn image_model(model: &ServedModel) -> Result<&ImageModel, ServeError> {
    model
        .loaded
        .model
        .image
        .as_ref()
        .ok_or_else(|| ServeError::BadRequest(format!("model {} takes rows of features, not images", model.name)))
}

/// The most images one request may carry: the model's input for each is a few hundred KB of
/// floats (SqueezeNet's: 600 KB).
pub const MAX_IMAGES_PER_REQUEST: usize = 32;

/// The top k of each of `images`, in order. An image that cannot be used fails the request (400)
/// with its reason. Memory stays bounded: at most [`MAX_IMAGES_PER_REQUEST`] images a request,
/// and a few requests per model at a time between decoding and answer.
pub async fn classify(
    state: &AppState,
    model: &ServedModel,
    images: Vec<Bytes>,
) -> Result<Vec<Vec<Prediction>>, ServeError> {
    let image = image_model(model)?;
    if images.is_empty() {
        return Err(ServeError::BadRequest("the request has no images".into()));
    }
    if images.len() > MAX_IMAGES_PER_REQUEST {
        return Err(ServeError::BadRequest(format!(
            "the request has {} images; send at most {MAX_IMAGES_PER_REQUEST} a request",
            images.len()
        )));
    }
    let _turn = model.images_in_flight.acquire().await.map_err(|_| ServeError::Overloaded("stopping".into()))?;
    let count = images.len();
    let max_pixels = state.settings.max_image_pixels;
    let loaded = Arc::clone(&model.loaded);
    let features = tokio::task::spawn_blocking(move || -> Result<Vec<f32>, ServeError> {
        let Some(image) = &loaded.model.image else { return Ok(Vec::new()) };
        let mut values = Vec::with_capacity(count * image.preprocess.values_per_image());
        for (index, bytes) in images.iter().enumerate() {
            image.preprocess.run(bytes, max_pixels, &mut values).map_err(|e| {
                ServeError::BadRequest(if count == 1 { e.to_string() } else { format!("image {index}: {e}") })
            })?;
        }
        Ok(values)
    })
    .await
    .map_err(|e| ServeError::Internal(format!("preprocessing stopped: {e}")))??;
    let outputs = model.batcher.infer(features, count).await?;
    Ok((0..count).map(|index| image.top_k(&outputs, index)).collect())
}

/// `[{"class": …, "probability": …}, …]`.
pub fn predictions_json(image: &ImageModel, top: &[Prediction]) -> Value {
    Value::Array(
        top.iter()
            .map(|p| json!({ "class": image.classifier.labels[p.index], "probability": json_f32(p.probability) }))
            .collect(),
    )
}

/// Base64 (standard alphabet, padding optional) as JSON carries image bytes.
pub fn from_base64(text: &str, what: &str) -> Result<Bytes, ServeError> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(text.trim())
        .map(Bytes::from)
        .map_err(|e| ServeError::BadRequest(format!("{what} is not base64: {e}")))
}
