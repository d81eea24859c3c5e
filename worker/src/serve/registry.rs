//! The models a server serves, kept current while it serves: every model of the repository (or
//! one model file under a name), each of the versions its version policy picks loaded with its
//! batcher.
//!
//! [`Registry::refresh`] compares the repository with what is served: a new version is loaded
//! beside the others and takes the traffic for "latest" only once loaded; a version the
//! repository no longer has leaves the table, and one the policy no longer picks leaves once the
//! versions it picks are ready; a version that left is unloaded when its last request in flight
//! has finished (requests hold their version). A version that cannot be loaded is kept with its
//! reason (status endpoints, metrics, log), the others serve on, and it is tried again when its
//! file changes. The table is swapped whole: a request sees one state of it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;

use crate::models::{LoadedModel, ModelFiles};
use crate::repository::ModelRepository;
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
#[derive(Clone)]
pub enum Slot {
    Ready(Arc<ServedModel>),
    /// It could not be loaded, for this reason; `fingerprint` is its file's when it was tried.
    Failed {
        reason: String,
        fingerprint: Option<String>,
    },
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

/// Which versions of a model are served, as Triton's `version_policy` writes it, in the model's
/// `config.json`: `{"latest": {"num_versions": N}}` (the default, with 1), `{"all": {}}` or
/// `{"specific": {"versions": [1, 3]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VersionPolicy {
    Latest { num_versions: usize },
    All {},
    Specific { versions: Vec<u64> },
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest { num_versions: 1 }
    }
}

impl VersionPolicy {
    /// The versions of `offered` to serve.
    pub fn select(&self, offered: &BTreeSet<u64>) -> BTreeSet<u64> {
        match self {
            VersionPolicy::Latest { num_versions } => offered.iter().rev().take(*num_versions).copied().collect(),
            VersionPolicy::All {} => offered.clone(),
            VersionPolicy::Specific { versions } => versions.iter().filter(|v| offered.contains(v)).copied().collect(),
        }
    }
}

/// A model's `config.json`: what `worker serve` reads of it.
#[derive(Debug, Default, Deserialize)]
struct ModelSettings {
    #[serde(default)]
    version_policy: VersionPolicy,
}

/// A model as the repository offers it now.
pub struct Offer {
    /// Its policy, or why its `config.json` cannot be used (what is served of it then stays).
    pub policy: Result<VersionPolicy, String>,
    /// Each version's file.
    pub versions: BTreeMap<u64, String>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the models come from: the port the registry reads through.
pub trait ModelSource: Send + Sync + 'static {
    /// Every model offered now, by name.
    fn offered(&self) -> BoxFuture<'_, Result<BTreeMap<String, Offer>, String>>;
    /// What changes when the file at `uri` is replaced.
    fn fingerprint<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<String, String>>;
    /// The model at `uri`, read and prepared to run.
    fn load<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<LoadedModel, String>>;
}

/// The repository (or one file), in a folder or S3.
pub struct RepositorySource<S: ObjectStore> {
    files: ModelFiles<S>,
    source: ServeSource,
}

impl<S: ObjectStore> RepositorySource<S> {
    pub fn new(files: ModelFiles<S>, source: ServeSource) -> Self {
        Self { files, source }
    }

    async fn list(&self) -> Result<BTreeMap<String, Offer>, String> {
        let root = match &self.source {
            ServeSource::File { uri, name } => {
                let offer = Offer { policy: Ok(VersionPolicy::All {}), versions: BTreeMap::from([(1, uri.clone())]) };
                return Ok(BTreeMap::from([(name.clone(), offer)]));
            }
            ServeSource::Repository(root) => root,
        };
        let repository = ModelRepository::new(&self.files, root).map_err(|e| e.to_string())?;
        let mut offered = BTreeMap::new();
        for (name, versions) in repository.catalog(None).await.map_err(|e| e.to_string())? {
            let policy = match repository.model_settings(&name).await {
                Ok(None) => Ok(VersionPolicy::default()),
                Ok(Some(bytes)) => {
                    serde_json::from_slice::<ModelSettings>(&bytes).map(|settings| settings.version_policy).map_err(
                        |e| format!("{name}/{} is not a model's settings: {e}", crate::repository::MODEL_SETTINGS),
                    )
                }
                Err(e) => Err(e.to_string()),
            };
            let versions = versions.iter().map(|&v| (v, repository.model_uri(&name, v))).collect();
            offered.insert(name, Offer { policy, versions });
        }
        Ok(offered)
    }
}

impl<S: ObjectStore> ModelSource for RepositorySource<S> {
    fn offered(&self) -> BoxFuture<'_, Result<BTreeMap<String, Offer>, String>> {
        Box::pin(self.list())
    }

    fn fingerprint<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.files.stat(uri).await.map(|file| file.fingerprint).map_err(|e| e.to_string()) })
    }

    fn load<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<LoadedModel, String>> {
        Box::pin(async move {
            let file = self.files.stat(uri).await.map_err(|e| e.to_string())?;
            self.files.load(file).await.map_err(|e| e.to_string())
        })
    }
}

/// What the registry reports: each model's batches, and each load.
pub trait RegistryObserver: Send + Sync + 'static {
    fn batches(&self, name: &str, version: u64) -> Arc<dyn BatchObserver>;
    fn loaded(&self, name: &str, version: u64, outcome: Result<(), &str>);
}

/// Every served model, by name and version.
pub type Models = BTreeMap<String, BTreeMap<u64, Slot>>;

/// What a refresh changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub loaded: Vec<(String, u64)>,
    pub failed: Vec<(String, u64)>,
    pub unloaded: Vec<(String, u64)>,
    /// Models whose settings cannot be used, with the reason (what is served of them stays).
    pub refused: Vec<(String, String)>,
}

/// Why a repository call could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepositoryError {
    #[error("the model repository cannot be read: {0}")]
    Unreadable(String),
    #[error("model {0:?} is not in the repository")]
    NoModel(String),
    #[error("{reason}")]
    BadSettings { name: String, reason: String },
    #[error("model {name:?} has no version that loads: {reasons}")]
    NothingLoaded { name: String, reasons: String },
}

/// The served models, kept current by [`Registry::refresh`].
pub struct Registry {
    models: RwLock<Arc<Models>>,
    source: Box<dyn ModelSource>,
    batch: BatchSettings,
    observer: Arc<dyn RegistryObserver>,
    /// Models unloaded through the repository API: not loaded again until asked.
    unloaded: Mutex<BTreeSet<String>>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Loads what `source` offers. Fails only when the source itself cannot be read.
    pub async fn start(
        source: impl ModelSource,
        batch: BatchSettings,
        observer: Arc<dyn RegistryObserver>,
    ) -> Result<Self, RepositoryError> {
        let registry = Self {
            models: RwLock::default(),
            source: Box::new(source),
            batch,
            observer,
            unloaded: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        };
        registry.refresh().await?;
        Ok(registry)
    }

    /// The table as it is now.
    pub fn snapshot(&self) -> Arc<Models> {
        Arc::clone(&self.models.read().expect("the table's lock is never poisoned"))
    }

    /// The model `name` at `version`, or at its latest version that loaded. The request holds
    /// it: an unloaded version lives until its last request is answered.
    pub fn get(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedModel>, LookupError> {
        let models = self.snapshot();
        let versions = models.get(name).ok_or_else(|| LookupError::NoModel(name.to_owned()))?;
        let (version, slot) = match version {
            Some(version) => (
                version,
                versions.get(&version).ok_or_else(|| LookupError::NoVersion { name: name.to_owned(), version })?,
            ),
            None => {
                // The latest that is ready, else the latest with its reason.
                let ready = versions.iter().rev().find(|(_, slot)| matches!(slot, Slot::Ready(_)));
                let (version, slot) = ready
                    .or_else(|| versions.iter().next_back())
                    .ok_or_else(|| LookupError::NoModel(name.to_owned()))?;
                (*version, slot)
            }
        };
        match slot {
            Slot::Ready(model) => Ok(Arc::clone(model)),
            Slot::Failed { reason, .. } => {
                Err(LookupError::Unavailable { name: name.to_owned(), version, reason: reason.clone() })
            }
        }
    }

    /// Whether `name` is served.
    pub fn serves(&self, name: &str) -> bool {
        self.snapshot().contains_key(name)
    }

    /// Whether there is a model to serve and every model has a version that loaded (what a load
    /// balancer's health check asks: a broken new version leaves the older one serving).
    pub fn healthy(&self) -> bool {
        let models = self.snapshot();
        !models.is_empty()
            && models.values().all(|versions| versions.values().any(|slot| matches!(slot, Slot::Ready(_))))
    }

    /// Brings every model (but those unloaded through the API) in line with the repository.
    pub async fn refresh(&self) -> Result<Changes, RepositoryError> {
        self.update(None).await
    }

    /// Loads `name` (again) from the repository, as its policy says; a model unloaded through
    /// the API is served again.
    pub async fn load_model(&self, name: &str) -> Result<Changes, RepositoryError> {
        self.unloaded.lock().expect("never poisoned").remove(name);
        let changes = self.update(Some(name)).await?;
        if let Some((_, reason)) = changes.refused.first() {
            return Err(RepositoryError::BadSettings { name: name.to_owned(), reason: reason.clone() });
        }
        let models = self.snapshot();
        let versions = models.get(name).ok_or_else(|| RepositoryError::NoModel(name.to_owned()))?;
        if !versions.values().any(|slot| matches!(slot, Slot::Ready(_))) {
            let reasons = versions
                .iter()
                .filter_map(|(v, slot)| match slot {
                    Slot::Failed { reason, .. } => Some(format!("version {v}: {reason}")),
                    Slot::Ready(_) => None,
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(RepositoryError::NothingLoaded { name: name.to_owned(), reasons });
        }
        Ok(changes)
    }

    /// Stops serving `name` until it is loaded again; requests in flight finish.
    pub async fn unload_model(&self, name: &str) -> Result<Changes, LookupError> {
        let _turn = self.refreshing.lock().await;
        let mut models = (*self.snapshot()).clone();
        let versions = models.remove(name).ok_or_else(|| LookupError::NoModel(name.to_owned()))?;
        self.unloaded.lock().expect("never poisoned").insert(name.to_owned());
        *self.models.write().expect("never poisoned") = Arc::new(models);
        let unloaded: Vec<(String, u64)> = versions.keys().map(|&v| (name.to_owned(), v)).collect();
        for (name, version) in &unloaded {
            tracing::info!(model = %name, version, "model unloaded on request");
        }
        Ok(Changes { unloaded, ..Changes::default() })
    }

    /// The models unloaded through the API.
    pub fn unloaded(&self) -> BTreeSet<String> {
        self.unloaded.lock().expect("never poisoned").clone()
    }

    /// Brings `only` (or every model) in line with the repository. Loading happens beside the
    /// table, which is swapped when all is loaded.
    async fn update(&self, only: Option<&str>) -> Result<Changes, RepositoryError> {
        let _turn = self.refreshing.lock().await;
        let offered = self.source.offered().await.map_err(RepositoryError::Unreadable)?;
        let skipped = self.unloaded();
        let current = self.snapshot();
        let mut next: Models = (*current).clone();
        let mut changes = Changes::default();
        let in_scope = |name: &str| only.is_none_or(|only| only == name) && (only.is_some() || !skipped.contains(name));
        // Models the repository no longer has.
        for (name, versions) in current.iter().filter(|(name, _)| in_scope(name) && !offered.contains_key(*name)) {
            next.remove(name);
            changes.unloaded.extend(versions.keys().map(|&v| (name.clone(), v)));
        }
        for (name, offer) in offered.iter().filter(|(name, _)| in_scope(name)) {
            let policy = match &offer.policy {
                Ok(policy) => policy,
                Err(reason) => {
                    tracing::error!(model = %name, %reason, "the model's settings cannot be used: what is served of it stays");
                    changes.refused.push((name.clone(), reason.clone()));
                    continue;
                }
            };
            let wanted = policy.select(&offer.versions.keys().copied().collect());
            let slots = next.entry(name.clone()).or_default();
            for &version in &wanted {
                let uri = &offer.versions[&version];
                let tried = match slots.get(&version) {
                    Some(Slot::Ready(_)) => continue,
                    Some(Slot::Failed { fingerprint, .. }) => fingerprint.clone(),
                    None => None,
                };
                let fingerprint = self.source.fingerprint(uri).await.ok();
                if tried.is_some() && tried == fingerprint {
                    continue;
                }
                let slot = self.load_one(name, version, uri, fingerprint).await;
                match slot {
                    Slot::Ready(_) => changes.loaded.push((name.clone(), version)),
                    Slot::Failed { .. } => changes.failed.push((name.clone(), version)),
                }
                slots.insert(version, slot);
            }
            // What is no longer wanted leaves: a version gone from the repository at once, one the
            // policy no longer picks once every version it picks is ready (a broken new version
            // leaves the one before it serving).
            let all_ready = wanted.iter().all(|v| matches!(slots.get(v), Some(Slot::Ready(_))));
            let dropped: Vec<u64> = slots
                .iter()
                .filter(|(v, slot)| {
                    !wanted.contains(v)
                        && (all_ready || !offer.versions.contains_key(v) || matches!(slot, Slot::Failed { .. }))
                })
                .map(|(v, _)| *v)
                .collect();
            for version in dropped {
                slots.remove(&version);
                changes.unloaded.push((name.clone(), version));
            }
            if slots.is_empty() {
                next.remove(name);
            }
        }
        for (name, version) in &changes.unloaded {
            tracing::info!(model = %name, version, "model unloaded: it finishes the requests it has");
        }
        *self.models.write().expect("never poisoned") = Arc::new(next);
        Ok(changes)
    }

    async fn load_one(&self, name: &str, version: u64, uri: &str, fingerprint: Option<String>) -> Slot {
        match self.source.load(uri).await {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                tracing::info!(model = %name, version, uri = %uri, sha256 = %loaded.model.sha256, "model ready");
                self.observer.loaded(name, version, Ok(()));
                let batcher = Batcher::start(Arc::clone(&loaded), self.batch, self.observer.batches(name, version));
                let images_in_flight = tokio::sync::Semaphore::new(IMAGE_REQUESTS_PER_RUN * self.batch.parallel.max(1));
                Slot::Ready(Arc::new(ServedModel { name: name.to_owned(), version, loaded, batcher, images_in_flight }))
            }
            Err(reason) => {
                tracing::error!(model = %name, version, uri = %uri, %reason, "model cannot be served");
                self.observer.loaded(name, version, Err(&reason));
                Slot::Failed { reason, fingerprint }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_policies_pick_as_tf_serving_and_triton_do() {
        let offered: BTreeSet<u64> = [1, 2, 5].into();
        let pick = |json: &str| serde_json::from_str::<VersionPolicy>(json).unwrap().select(&offered);
        assert_eq!(VersionPolicy::default().select(&offered), [5].into());
        assert_eq!(pick(r#"{"latest": {"num_versions": 2}}"#), [2, 5].into());
        assert_eq!(pick(r#"{"all": {}}"#), offered);
        assert_eq!(pick(r#"{"specific": {"versions": [1, 3]}}"#), [1].into());
        assert!(serde_json::from_str::<VersionPolicy>(r#"{"latest": 2}"#).is_err());
        assert!(serde_json::from_str::<ModelSettings>(r#"{"version_policy": {"newest": {}}}"#).is_err());
    }
}
