//! The models a server serves: every version of every model of the repository (or one model
//! file under a name), each loaded once at start-up with its batcher. A model that cannot be
//! loaded is kept with the reason, reported by the status endpoints, and does not stop the
//! others.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::models::{LoadedModel, ModelFiles};
use crate::repository::{ModelRepository, ResolveError};
use crate::store::ObjectStore;

use super::batcher::{BatchObserver, BatchSettings, Batcher};

/// What to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeSource {
    /// Every model of the repository at this root (`s3://bucket/prefix/` or a folder).
    Repository(String),
    /// One model file, served as `name` version 1.
    File { uri: String, name: String },
}

/// One version of a served model.
pub enum Slot {
    Ready(Arc<ServedModel>),
    /// It could not be loaded, for this reason.
    Failed(String),
}

/// A loaded model and its batcher.
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    pub loaded: Arc<LoadedModel>,
    pub batcher: Batcher,
    /// An image model's requests being decoded or run: their pixels as floats are far larger
    /// than their bodies, so only so many hold them at once (the rest wait their turn).
    pub images_in_flight: tokio::sync::Semaphore,
}

/// Image requests in flight per model run that may go at once (see `ServedModel::images_in_flight`).
pub const IMAGE_REQUESTS_PER_RUN: usize = 2;

/// Why a request names no servable model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("model {0:?} is not served here")]
    NoModel(String),
    #[error("model {name:?} has no version {version}")]
    NoVersion { name: String, version: u64 },
    #[error("model {name:?} version {version} could not be loaded: {reason}")]
    Unavailable { name: String, version: u64, reason: String },
}

/// Every served model, by name and version.
#[derive(Default)]
pub struct Registry {
    models: BTreeMap<String, BTreeMap<u64, Slot>>,
}

impl Registry {
    /// Loads every model of `source`. Fails only when the source itself cannot be read.
    pub async fn load<S: ObjectStore>(
        source: &ServeSource,
        files: &ModelFiles<S>,
        settings: BatchSettings,
        observer: &dyn Fn(&str, u64) -> Arc<dyn BatchObserver>,
    ) -> Result<Self, ResolveError> {
        let wanted: Vec<(String, u64, String)> = match source {
            ServeSource::File { uri, name } => vec![(name.clone(), 1, uri.clone())],
            ServeSource::Repository(root) => {
                let repository = ModelRepository::new(files, root)?;
                let catalog = repository.catalog(None).await?;
                catalog
                    .iter()
                    .flat_map(|(name, versions)| versions.iter().map(move |v| (name.clone(), *v)))
                    .map(|(name, version)| {
                        let uri = repository.model_uri(&name, version);
                        (name, version, uri)
                    })
                    .collect()
            }
        };
        let mut registry = Registry::default();
        for (name, version, uri) in wanted {
            let slot = match load_one(files, &uri).await {
                Ok(loaded) => {
                    tracing::info!(model = %name, version, uri = %uri, sha256 = %loaded.model.sha256, "model ready");
                    let batcher = Batcher::start(Arc::clone(&loaded), settings, observer(&name, version));
                    let images_in_flight =
                        tokio::sync::Semaphore::new(IMAGE_REQUESTS_PER_RUN * settings.parallel.max(1));
                    Slot::Ready(Arc::new(ServedModel {
                        name: name.clone(),
                        version,
                        loaded,
                        batcher,
                        images_in_flight,
                    }))
                }
                Err(reason) => {
                    tracing::error!(model = %name, version, uri = %uri, %reason, "model cannot be served");
                    Slot::Failed(reason)
                }
            };
            registry.models.entry(name).or_default().insert(version, slot);
        }
        Ok(registry)
    }

    /// The model `name` at `version`, or at its latest version that loaded.
    pub fn get(&self, name: &str, version: Option<u64>) -> Result<&Arc<ServedModel>, LookupError> {
        let versions = self.models.get(name).ok_or_else(|| LookupError::NoModel(name.to_owned()))?;
        let (version, slot) = match version {
            Some(version) => (
                version,
                versions.get(&version).ok_or_else(|| LookupError::NoVersion { name: name.to_owned(), version })?,
            ),
            None => {
                // The latest that is ready, else the latest with its reason.
                let ready = versions.iter().rev().find(|(_, slot)| matches!(slot, Slot::Ready(_)));
                let (version, slot) =
                    ready.or_else(|| versions.iter().next_back()).expect("a served model has a version");
                (*version, slot)
            }
        };
        match slot {
            Slot::Ready(model) => Ok(model),
            Slot::Failed(reason) => {
                Err(LookupError::Unavailable { name: name.to_owned(), version, reason: reason.clone() })
            }
        }
    }

    /// The versions of `name`, if it is served.
    pub fn versions(&self, name: &str) -> Option<&BTreeMap<u64, Slot>> {
        self.models.get(name)
    }

    /// Every model, by name.
    pub fn models(&self) -> &BTreeMap<String, BTreeMap<u64, Slot>> {
        &self.models
    }

    /// Whether there is a model to serve and every model's latest version loaded (what a load
    /// balancer's health check asks).
    pub fn healthy(&self) -> bool {
        !self.models.is_empty()
            && self.models.values().all(|versions| matches!(versions.values().next_back(), Some(Slot::Ready(_))))
    }
}

async fn load_one<S: ObjectStore>(files: &ModelFiles<S>, uri: &str) -> Result<Arc<LoadedModel>, String> {
    let file = files.stat(uri).await.map_err(|e| e.to_string())?;
    files.load(file).await.map(Arc::new).map_err(|e| e.to_string())
}
