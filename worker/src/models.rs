//! Loading models (and their sidecar configuration, if any) once, from S3 or a local path.

use std::sync::Arc;

use shared::location::Location;
use tokio::sync::Mutex;

use crate::engine::model_config::ModelConfigError;
use crate::engine::{Model, ModelConfig, ModelError};
use crate::store::{ObjectStore, StoreError};
use crate::transfer::Transfers;

/// The sidecar configuration is `<model>.json`.
pub const SIDECAR_SUFFIX: &str = ".json";

/// A model ready to serve (with the configuration that maps columns to it: `model.config`).
pub struct LoadedModel {
    pub uri: String,
    pub model: Model,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error("model location: {0}")]
    Location(#[from] shared::location::LocationError),
    #[error("cannot read the model: {0}")]
    Storage(#[from] StoreError),
    #[error("the model {uri} does not exist")]
    Missing { uri: String },
    #[error("cannot read local model file {path}: {source}")]
    Local { path: String, source: std::io::Error },
    #[error("{uri}: {source}")]
    Config { uri: String, source: ModelConfigError },
    #[error("{uri}: {source}")]
    Model { uri: String, source: ModelError },
}

impl ModelLoadError {
    /// Whether loading again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, ModelLoadError::Storage(e) if e.is_retryable())
    }
}

/// Reads a model and its optional sidecar, and prepares the model to run.
pub async fn load_model<S: ObjectStore>(
    storage: Option<&Transfers<S>>,
    uri: &str,
) -> Result<LoadedModel, ModelLoadError> {
    let location = Location::parse(uri)?;
    let sidecar = location.with_suffix(SIDECAR_SUFFIX);
    let (bytes, config_bytes) = match (&location, &sidecar, storage) {
        (Location::S3(model), Location::S3(sidecar), Some(storage)) => {
            // Listing the model's own key shows whether the sidecar (`<key>.json`) is there: a
            // worker may list that and nothing else of the model bucket, so a missing sidecar is
            // never mistaken for a refused one.
            let present = storage.list(&model.bucket, &model.key).await?;
            if !present.contains(&model.key) {
                return Err(ModelLoadError::Missing { uri: uri.to_owned() });
            }
            let config =
                if present.contains(&sidecar.key) { Some(storage.read_all(sidecar).await?.to_vec()) } else { None };
            (storage.read_all(model).await?.to_vec(), config)
        }
        (Location::Local(path), Location::Local(sidecar), _) => {
            let local = |source| ModelLoadError::Local { path: path.display().to_string(), source };
            let bytes = tokio::fs::read(path).await.map_err(local)?;
            let config = match tokio::fs::read(sidecar).await {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(local(e)),
            };
            (bytes, config)
        }
        _ => {
            return Err(ModelLoadError::Local {
                path: uri.to_owned(),
                source: std::io::Error::other("reading s3:// models needs AWS access"),
            });
        }
    };
    let config = config_bytes
        .map(|bytes| ModelConfig::from_json(&bytes))
        .transpose()
        .map_err(|source| ModelLoadError::Config { uri: sidecar.to_string(), source })?;
    // Optimising a model is CPU work: keep it off the async threads.
    let model = tokio::task::spawn_blocking(move || Model::load(&bytes, config))
        .await
        .map_err(|e| ModelLoadError::Model { uri: uri.to_owned(), source: ModelError::Unsupported(e.to_string()) })?
        .map_err(|source| ModelLoadError::Model { uri: uri.to_owned(), source })?;
    Ok(LoadedModel { uri: uri.to_owned(), model })
}

/// Keeps the last model loaded: jobs name their model, and in steady state they all name the
/// same one, so it is loaded once per worker.
pub struct ModelCache<S> {
    storage: Transfers<S>,
    current: Mutex<Option<Arc<LoadedModel>>>,
}

impl<S: ObjectStore> ModelCache<S> {
    pub fn new(storage: Transfers<S>) -> Self {
        Self { storage, current: Mutex::new(None) }
    }

    pub async fn get(&self, uri: &str) -> Result<Arc<LoadedModel>, ModelLoadError> {
        let mut current = self.current.lock().await;
        if let Some(model) = current.as_ref().filter(|m| m.uri == uri) {
            return Ok(model.clone());
        }
        tracing::info!(model = uri, "loading model");
        let loaded = Arc::new(load_model(Some(&self.storage), uri).await?);
        tracing::info!(model = uri, sha256 = %loaded.model.sha256, features = loaded.model.n_features,
            outputs = ?loaded.model.column_names().collect::<Vec<_>>(), "model ready");
        *current = Some(loaded.clone());
        Ok(loaded)
    }
}
