//! The model repository: `<root>/<name>/<version>/model.onnx`, `<root>` an S3 prefix or a local
//! folder (see [`shared::models`]). Which model file a job runs, resolved when the job starts: a
//! named model at its pinned or latest version, or else the deployment's default.

use std::collections::{BTreeMap, BTreeSet};

use shared::ModelRequest;
use shared::location::Location;
use shared::models::{MODEL_FILE, parse_model_path};

use crate::models::{ModelFiles, ModelLoadError};
use crate::store::ObjectStore;

/// The exact model a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The model file.
    pub uri: String,
    /// Its name and version, when it came from a repository.
    pub name: Option<String>,
    pub version: Option<u64>,
}

impl ResolvedModel {
    pub fn file(uri: impl Into<String>) -> Self {
        Self { uri: uri.into(), name: None, version: None }
    }
}

/// Every model of a repository, with its versions.
pub type Catalog = BTreeMap<String, BTreeSet<u64>>;

/// A model's own settings in the repository, beside its versions (`worker serve`'s version
/// policy).
pub const MODEL_SETTINGS: &str = "config.json";

/// Why no model could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The input names no model of the repository, and there is no default: the uploader's to fix.
    #[error("{}; the repository has: {}", what_was_asked(.requested), describe(.available))]
    NoModel { requested: Option<ModelRequest>, available: Catalog },
    /// The input names a model at a version it does not have: the uploader's to fix.
    #[error("model {name} has no version {version}; it has {}", versions(.available))]
    NoVersion { name: String, version: u64, available: BTreeSet<u64> },
    /// The deployment's default model is not in the repository: the operator's to fix.
    #[error("the default model {default} is not in the repository ({}); the repository has: {}", .root, describe(.available))]
    NoDefault { default: ModelRequest, root: String, available: Catalog },
    #[error("the model repository {root} is not a valid location: {reason}")]
    BadRoot { root: String, reason: String },
    /// Reading the repository failed.
    #[error("cannot read the model repository: {0}")]
    Storage(#[from] ModelLoadError),
}

impl ResolveError {
    /// Whether the input itself is at fault (it names a model or version that is not there).
    pub fn is_the_inputs(&self) -> bool {
        matches!(self, ResolveError::NoModel { .. } | ResolveError::NoVersion { .. })
    }
}

fn what_was_asked(requested: &Option<ModelRequest>) -> String {
    match requested {
        Some(request) => {
            format!("the input's folder {request} names no model of the repository, and there is no default model")
        }
        None => "the input's key names no model (its first folder is the model's name) and there is no default model"
            .to_owned(),
    }
}

fn versions(versions: &BTreeSet<u64>) -> String {
    versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// `iris (versions 1, 2), half_plus_two (version 1)`, or `no model`.
pub fn describe(catalog: &Catalog) -> String {
    if catalog.is_empty() {
        return "no model".to_owned();
    }
    catalog
        .iter()
        .map(|(name, v)| format!("{name} (version{} {})", if v.len() == 1 { "" } else { "s" }, versions(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A model repository at `root`.
pub struct ModelRepository<'a, S: ObjectStore> {
    files: &'a ModelFiles<S>,
    root: Location,
    root_text: String,
}

impl<'a, S: ObjectStore> ModelRepository<'a, S> {
    pub fn new(files: &'a ModelFiles<S>, root: &str) -> Result<Self, ResolveError> {
        let bad = |reason: &str| ResolveError::BadRoot { root: root.to_owned(), reason: reason.to_owned() };
        // The root is a prefix (`s3://bucket/` or `s3://bucket/prefix/`) or a folder.
        let location = match root.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("the bucket name is empty"));
                }
                let mut key = prefix.to_owned();
                if !key.is_empty() && !key.ends_with('/') {
                    key.push('/');
                }
                Location::S3(shared::S3Uri { bucket: bucket.to_owned(), key })
            }
            None if root.contains("://") => return Err(bad("only s3:// URIs and folders are supported")),
            None if root.trim().is_empty() => return Err(bad("it is empty")),
            None => Location::Local(root.into()),
        };
        Ok(Self { files, root_text: root.to_owned(), root: location })
    }

    /// The URI of a model version's file.
    pub fn model_uri(&self, name: &str, version: u64) -> String {
        match &self.root {
            Location::S3(uri) => format!("s3://{}/{}{name}/{version}/{MODEL_FILE}", uri.bucket, uri.key),
            Location::Local(path) => path.join(name).join(version.to_string()).join(MODEL_FILE).display().to_string(),
        }
    }

    /// The store an s3:// repository is read through.
    fn storage(&self) -> Result<&crate::transfer::Transfers<S>, ResolveError> {
        self.files.storage().ok_or_else(|| ResolveError::BadRoot {
            root: self.root_text.clone(),
            reason: "reading an s3:// repository needs AWS access".into(),
        })
    }

    /// The bytes of a model's own settings, `<root>/<name>/config.json`, if it has them.
    pub async fn model_settings(&self, name: &str) -> Result<Option<Vec<u8>>, ResolveError> {
        match &self.root {
            Location::S3(root) => {
                let storage = self.storage()?;
                let uri =
                    shared::S3Uri { bucket: root.bucket.clone(), key: format!("{}{name}/{MODEL_SETTINGS}", root.key) };
                match storage.read_all(&uri).await {
                    Ok(bytes) => Ok(Some(bytes.to_vec())),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(ModelLoadError::Storage(e).into()),
                }
            }
            Location::Local(root) => {
                let path = root.join(name).join(MODEL_SETTINGS);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(ModelLoadError::Local { path: path.display().to_string(), source }.into()),
                }
            }
        }
    }

    /// The models under `name/` (or all of them when `name` is `None`) with their versions.
    pub async fn catalog(&self, name: Option<&str>) -> Result<Catalog, ResolveError> {
        let mut catalog = Catalog::new();
        match &self.root {
            Location::S3(root) => {
                let storage = self.storage()?;
                let prefix = match name {
                    Some(name) => format!("{}{name}/", root.key),
                    None => root.key.clone(),
                };
                let listed = storage.list(&root.bucket, &prefix).await.map_err(ModelLoadError::Storage)?;
                for object in listed {
                    if let Some((model, version)) = object.key.strip_prefix(&root.key).and_then(parse_model_path) {
                        catalog.entry(model.to_owned()).or_default().insert(version);
                    }
                }
            }
            Location::Local(root) => {
                let names = match name {
                    Some(name) => vec![name.to_owned()],
                    None => read_dir_names(root).await?,
                };
                for model in names {
                    for version in read_dir_names(&root.join(&model)).await? {
                        let relative = format!("{model}/{version}/{MODEL_FILE}");
                        if let Some((model, version)) = parse_model_path(&relative)
                            && tokio::fs::try_exists(root.join(&relative)).await.unwrap_or(false)
                        {
                            catalog.entry(model.to_owned()).or_default().insert(version);
                        }
                    }
                }
            }
        }
        Ok(catalog)
    }

    /// The model the input asked for if the repository has one of that name, else `default`.
    pub async fn resolve(
        &self,
        requested: Option<&ModelRequest>,
        default: Option<&ModelRequest>,
    ) -> Result<ResolvedModel, ResolveError> {
        if let Some(request) = requested {
            let catalog = self.catalog(Some(&request.name)).await?;
            if let Some(versions) = catalog.get(&request.name) {
                return self.pick(request, versions);
            }
        }
        let Some(default) = default else {
            return Err(ResolveError::NoModel { requested: requested.cloned(), available: self.catalog(None).await? });
        };
        let catalog = self.catalog(Some(&default.name)).await?;
        match catalog.get(&default.name).map(|versions| self.pick(default, versions)) {
            Some(Ok(resolved)) => Ok(resolved),
            Some(Err(_)) | None => Err(ResolveError::NoDefault {
                default: default.clone(),
                root: self.root_text.clone(),
                available: self.catalog(None).await?,
            }),
        }
    }

    fn pick(&self, request: &ModelRequest, versions: &BTreeSet<u64>) -> Result<ResolvedModel, ResolveError> {
        let version = match request.version {
            Some(version) if versions.contains(&version) => version,
            Some(version) => {
                return Err(ResolveError::NoVersion {
                    name: request.name.clone(),
                    version,
                    available: versions.clone(),
                });
            }
            None => *versions.last().expect("a catalogued model has a version"),
        };
        Ok(ResolvedModel {
            uri: self.model_uri(&request.name, version),
            name: Some(request.name.clone()),
            version: Some(version),
        })
    }
}

/// The names of the entries of a folder (none when it does not exist).
async fn read_dir_names(path: &std::path::Path) -> Result<Vec<String>, ResolveError> {
    let local = |source| ResolveError::Storage(ModelLoadError::Local { path: path.display().to_string(), source });
    let mut entries = match tokio::fs::read_dir(path).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(local(e)),
    };
    let mut names = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(local)? {
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}
