//! Model files (and their sidecar configurations), read from S3 or a local path, and a cache of
//! loaded models, least recently used first out, within a memory budget.
//!
//! A model is cached by its file's identity (URI and ETag, or size and modification time): a
//! file replaced in place is loaded again by the next job that uses it, with nothing to restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use shared::S3Uri;
use shared::location::Location;
use shared::models::MODEL_FILE;
use tokio::sync::Mutex;

use crate::engine::image::config::parse_labels;
use crate::engine::image::{ImageConfig, Labels};
use crate::engine::model_config::ModelConfigError;
use crate::engine::text::TextFolder;
use crate::engine::{Model, ModelConfig, ModelError};
use crate::store::{ObjectStore, StoreError};
use crate::transfer::Transfers;

/// The sidecar configuration is `<model>.json`.
pub const SIDECAR_SUFFIX: &str = ".json";

/// A loaded model takes about this many times its file's size in memory (tract's optimised plan
/// holds the weights again, packed for its kernels); the cache budgets with it.
pub const MEMORY_PER_FILE_BYTE: u64 = 2;

/// A model ready to serve (with the configuration that maps columns to it: `model.config`).
pub struct LoadedModel {
    pub file: ModelFile,
    pub model: Model,
}

impl LoadedModel {
    pub fn uri(&self) -> &str {
        &self.file.uri
    }
}

/// A model file as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    pub uri: String,
    /// What changes when the file is replaced: its ETag in S3, its size and modification time
    /// on disk.
    pub fingerprint: String,
    pub size: u64,
    pub has_sidecar: bool,
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
    // The message carries the cause (not also a `source`, which error chains would print twice).
    #[error("{uri}: {error}")]
    Config { uri: String, error: ModelConfigError },
    #[error("{uri}: {error}")]
    Model { uri: String, error: ModelError },
}

impl ModelLoadError {
    /// Whether loading again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, ModelLoadError::Storage(e) if e.is_retryable())
    }
}

/// Where model files are read from: S3 through `storage` (when given), local paths from disk.
pub struct ModelFiles<S: ObjectStore> {
    storage: Option<Transfers<S>>,
}

impl<S: ObjectStore> ModelFiles<S> {
    pub fn new(storage: Option<Transfers<S>>) -> Self {
        Self { storage }
    }

    pub fn storage(&self) -> Option<&Transfers<S>> {
        self.storage.as_ref()
    }

    fn s3(&self, uri: &str) -> Result<&Transfers<S>, ModelLoadError> {
        self.storage.as_ref().ok_or_else(|| ModelLoadError::Local {
            path: uri.to_owned(),
            source: std::io::Error::other("reading s3:// models needs AWS access"),
        })
    }

    /// The file at `uri` as it is now, or [`ModelLoadError::Missing`].
    pub async fn stat(&self, uri: &str) -> Result<ModelFile, ModelLoadError> {
        let missing = || ModelLoadError::Missing { uri: uri.to_owned() };
        match Location::parse(uri)? {
            Location::S3(model) => {
                // Listing the model's own key gives its ETag and shows whether the sidecar
                // (`<key>.json`) is there: the worker may list under the models' prefix and need
                // not tell a missing sidecar from a refused one.
                let listed = self.s3(uri)?.list(&model.bucket, &model.key).await?;
                let file = listed.iter().find(|o| o.key == model.key).ok_or_else(missing)?;
                let sidecar = format!("{}{SIDECAR_SUFFIX}", model.key);
                Ok(ModelFile {
                    uri: uri.to_owned(),
                    fingerprint: file.etag.clone(),
                    size: file.size,
                    has_sidecar: listed.iter().any(|o| o.key == sidecar),
                })
            }
            Location::Local(path) => {
                let local = |source| ModelLoadError::Local { path: path.display().to_string(), source };
                let metadata = match tokio::fs::metadata(&path).await {
                    Ok(metadata) => metadata,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(local(e)),
                };
                let modified = metadata.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
                let mut sidecar = path.clone().into_os_string();
                sidecar.push(SIDECAR_SUFFIX);
                Ok(ModelFile {
                    uri: uri.to_owned(),
                    fingerprint: format!("{}-{}", metadata.len(), modified.map_or(0, |d| d.as_nanos())),
                    size: metadata.len(),
                    has_sidecar: tokio::fs::try_exists(&sidecar).await.map_err(local)?,
                })
            }
        }
    }

    /// Reads and prepares the model of `file`.
    pub async fn load(&self, file: ModelFile) -> Result<LoadedModel, ModelLoadError> {
        let location = Location::parse(&file.uri)?;
        if let Location::Local(dir) = &location
            && dir.is_dir()
        {
            return Self::load_text_folder(file, dir.clone()).await;
        }
        let sidecar = location.with_suffix(SIDECAR_SUFFIX);
        let (bytes, config_bytes) = match (&location, &sidecar) {
            (Location::S3(model), Location::S3(sidecar)) => {
                let storage = self.s3(&file.uri)?;
                let config = if file.has_sidecar { Some(storage.read_all(sidecar).await?.to_vec()) } else { None };
                (storage.read_all(model).await?.to_vec(), config)
            }
            (Location::Local(path), Location::Local(sidecar)) => {
                let local = |source| ModelLoadError::Local { path: path.display().to_string(), source };
                let bytes = tokio::fs::read(path).await.map_err(local)?;
                let config = if file.has_sidecar { Some(tokio::fs::read(sidecar).await.map_err(local)?) } else { None };
                (bytes, config)
            }
            _ => unreachable!("a location and its sidecar are of one kind"),
        };
        let mut config = config_bytes
            .map(|bytes| ModelConfig::from_json(&bytes))
            .transpose()
            .map_err(|error| ModelLoadError::Config { uri: sidecar.to_string(), error })?;
        if let Some(image) = config.as_mut().and_then(|c| c.image.as_mut()) {
            self.read_labels(&location, image).await?;
        }
        let text_files = self.text_files(&location).await?;
        // Optimising a model is CPU work: keep it off the async threads.
        let uri = file.uri.clone();
        let folder_name = location.sibling("").to_string();
        let model = tokio::task::spawn_blocking(move || match text_files {
            None => Model::load(&bytes, config),
            Some(files) => {
                let read = |name: &str| Ok(files.get(name).cloned());
                let mut folder = TextFolder::from_files(bytes, &folder_name, &read)
                    .map_err(|e| ModelError::Unsupported(e.to_string()))?;
                // The repository's sidecar (`model.onnx.json`) before the folder's sluice.json.
                folder.config = config.or(folder.config);
                Model::load_text(folder)
            }
        })
        .await
        .map_err(|e| ModelLoadError::Model { uri: uri.clone(), error: ModelError::Unsupported(e.to_string()) })?
        .map_err(|error| ModelLoadError::Model { uri, error })?;
        Ok(LoadedModel { file, model })
    }
}

impl<S: ObjectStore> ModelFiles<S> {
    /// When `model` is a text encoder's `model.onnx` (a `tokenizer.json` beside it): the JSON
    /// files of its folder and of its modules' folders, by their paths in it.
    async fn text_files(&self, model: &Location) -> Result<Option<HashMap<String, Vec<u8>>>, ModelLoadError> {
        let mut files = HashMap::new();
        let json = |name: &str| name.ends_with(".json") && name.matches('/').count() <= 1;
        match model {
            Location::S3(uri) => {
                // A model at the bucket's root is not looked at as a folder (that would list the bucket).
                let Some(folder) = uri.key.strip_suffix(MODEL_FILE).filter(|f| f.ends_with('/')) else {
                    return Ok(None);
                };
                let storage = self.s3(&model.to_string())?;
                let listed = storage.list(&uri.bucket, folder).await?;
                if !listed.iter().any(|o| o.key.strip_prefix(folder) == Some("tokenizer.json")) {
                    return Ok(None);
                }
                for object in listed.iter().filter(|o| json(&o.key[folder.len()..])) {
                    let file = S3Uri { bucket: uri.bucket.clone(), key: object.key.clone() };
                    files.insert(object.key[folder.len()..].to_owned(), storage.read_all(&file).await?.to_vec());
                }
            }
            Location::Local(path) => {
                let Some(folder) = path.parent().filter(|_| path.file_name().is_some_and(|n| n == MODEL_FILE)) else {
                    return Ok(None);
                };
                if !folder.join("tokenizer.json").is_file() {
                    return Ok(None);
                }
                let local = |source| ModelLoadError::Local { path: folder.display().to_string(), source };
                let mut pending = vec![(folder.to_path_buf(), String::new())];
                while let Some((dir, relative)) = pending.pop() {
                    for entry in std::fs::read_dir(&dir).map_err(local)? {
                        let entry = entry.map_err(local)?;
                        let name = format!("{relative}{}", entry.file_name().to_string_lossy());
                        if entry.file_type().map_err(local)?.is_dir() && relative.is_empty() {
                            pending.push((entry.path(), format!("{name}/")));
                        } else if json(&name) {
                            files.insert(name, tokio::fs::read(entry.path()).await.map_err(local)?);
                        }
                    }
                }
            }
        }
        Ok(Some(files))
    }

    /// A text encoder's folder on disk ([`crate::engine::text::folder`]).
    async fn load_text_folder(file: ModelFile, dir: std::path::PathBuf) -> Result<LoadedModel, ModelLoadError> {
        let uri = file.uri.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let folder = TextFolder::read(&dir).map_err(|e| ModelError::Unsupported(e.to_string()))?;
            Model::load_text(folder)
        })
        .await
        .map_err(|e| ModelLoadError::Model { uri: uri.clone(), error: ModelError::Unsupported(e.to_string()) })?;
        let model = loaded.map_err(|error| ModelLoadError::Model { uri, error })?;
        Ok(LoadedModel { file, model })
    }

    /// Replaces an image model's labels file (`"labels": "labels.txt"`) by the labels it holds.
    async fn read_labels(&self, model: &Location, image: &mut ImageConfig) -> Result<(), ModelLoadError> {
        let Some(Labels::File(name)) = &image.labels else { return Ok(()) };
        let location = model.sibling(name);
        let bytes = match &location {
            Location::S3(uri) => match self.s3(&location.to_string())?.read_all(uri).await {
                Ok(bytes) => bytes.to_vec(),
                Err(e) if e.status() == Some(404) => return Err(ModelLoadError::Missing { uri: location.to_string() }),
                Err(e) => return Err(e.into()),
            },
            Location::Local(path) => tokio::fs::read(path).await.map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => ModelLoadError::Missing { uri: location.to_string() },
                _ => ModelLoadError::Local { path: path.display().to_string(), source },
            })?,
        };
        let text = String::from_utf8(bytes).map_err(|_| ModelLoadError::Config {
            uri: location.to_string(),
            error: ModelConfigError::Invalid("the labels file is not UTF-8 text".into()),
        })?;
        image.labels = Some(Labels::List(parse_labels(&text)));
        Ok(())
    }
}

/// Reads a model and its optional sidecar, and prepares the model to run (no cache).
pub async fn load_model<S: ObjectStore>(
    storage: Option<&Transfers<S>>,
    uri: &str,
) -> Result<LoadedModel, ModelLoadError> {
    let files = ModelFiles::new(storage.cloned());
    let file = files.stat(uri).await?;
    files.load(file).await
}

/// Loaded models, least recently used first out once their estimated memory passes `budget`
/// (the model in use always stays, however large).
pub struct ModelCache<S: ObjectStore> {
    files: ModelFiles<S>,
    budget: u64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    models: Vec<Entry>,
    clock: u64,
}

struct Entry {
    model: Arc<LoadedModel>,
    weight: u64,
    last_used: u64,
}

impl<S: ObjectStore> ModelCache<S> {
    /// A cache of at most about `budget` bytes of models.
    pub fn new(storage: Transfers<S>, budget: u64) -> Self {
        Self::with_files(ModelFiles::new(Some(storage)), budget)
    }

    pub fn with_files(files: ModelFiles<S>, budget: u64) -> Self {
        Self { files, budget, entries: Mutex::default() }
    }

    pub fn files(&self) -> &ModelFiles<S> {
        &self.files
    }

    /// The model at `uri` as the file is now: from the cache, or loaded (and cached).
    pub async fn get(&self, uri: &str) -> Result<Arc<LoadedModel>, ModelLoadError> {
        let file = self.files.stat(uri).await?;
        let mut entries = self.entries.lock().await;
        entries.clock += 1;
        let now = entries.clock;
        if let Some(entry) = entries.models.iter_mut().find(|e| e.model.file == file) {
            entry.last_used = now;
            return Ok(Arc::clone(&entry.model));
        }
        // A file replaced in place: its old model goes.
        entries.models.retain(|e| e.model.file.uri != file.uri);
        tracing::info!(model = uri, bytes = file.size, "loading model");
        let loaded = Arc::new(self.files.load(file).await?);
        tracing::info!(model = uri, sha256 = %loaded.model.sha256, features = loaded.model.n_features,
            outputs = ?loaded.model.column_names().collect::<Vec<_>>(), "model ready");
        let weight = loaded.file.size.saturating_mul(MEMORY_PER_FILE_BYTE);
        entries.models.push(Entry { model: Arc::clone(&loaded), weight, last_used: now });
        self.evict(&mut entries, now);
        Ok(loaded)
    }

    fn evict(&self, entries: &mut Entries, keep: u64) {
        loop {
            let total: u64 = entries.models.iter().map(|e| e.weight).sum();
            if total <= self.budget {
                return;
            }
            let Some(oldest) = entries
                .models
                .iter()
                .enumerate()
                .filter(|(_, e)| e.last_used != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                return;
            };
            let evicted = entries.models.remove(oldest);
            tracing::info!(
                model = evicted.model.uri(),
                budget_bytes = self.budget,
                "model cache full: unloaded the least recently used model"
            );
        }
    }

    /// The URIs of the cached models, most recently used first.
    pub async fn cached(&self) -> Vec<String> {
        let entries = self.entries.lock().await;
        let mut models: Vec<&Entry> = entries.models.iter().collect();
        models.sort_by_key(|e| std::cmp::Reverse(e.last_used));
        models.iter().map(|e| e.model.uri().to_owned()).collect()
    }
}
