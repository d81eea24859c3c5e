//! Models in a repository, as model servers lay them out (TF Serving's base path, Triton's model
//! repository): `<root>/<name>/<version>/model.onnx`, its configuration `model.onnx.json` beside
//! it (or embedded), `<version>` a positive integer, the highest the latest.
//!
//! The routing rule, in one sentence: **the first folder of an input's key (after the input
//! prefix) names its model, `<name>` for the latest version or `<name>@<version>` for that one;
//! a key whose first folder names no model of the repository uses the default model.**

use std::fmt;

use serde::{Deserialize, Serialize};

/// The file name of a model in its version folder.
pub const MODEL_FILE: &str = "model.onnx";
/// The file name of its sidecar configuration.
pub const SIDECAR_FILE: &str = "model.onnx.json";

/// A model asked for by name, at a version or at the latest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRequest {
    pub name: String,
    /// `None`: the latest (highest) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Why text is not `name` or `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a model: expected NAME or NAME@VERSION, NAME of letters, digits, '_', '-' and '.', VERSION a positive integer"
)]
pub struct ModelRequestError {
    pub text: String,
}

impl ModelRequest {
    pub fn latest(name: impl Into<String>) -> Self {
        Self { name: name.into(), version: None }
    }

    /// Parses `name` or `name@version`.
    pub fn parse(text: &str) -> Result<Self, ModelRequestError> {
        let bad = || ModelRequestError { text: text.to_owned() };
        let (name, version) = match text.split_once('@') {
            Some((name, version)) => {
                let version: u64 = version.parse().map_err(|_| bad())?;
                (name, Some(Some(version).filter(|&v| v > 0).ok_or_else(bad)?))
            }
            None => (text, None),
        };
        if !is_model_name(name) {
            return Err(bad());
        }
        Ok(Self { name: name.to_owned(), version })
    }

    /// The model an input key names by its first folder (after `input_prefix`), if that folder
    /// reads as one. Whether the repository has it is for the worker to see.
    pub fn from_key(key: &str, input_prefix: &str) -> Option<Self> {
        let rest = key.strip_prefix(input_prefix)?;
        let (folder, _) = rest.split_once('/')?;
        Self::parse(folder).ok()
    }
}

/// Letters, digits, `_`, `-` and `.`, not starting with `.`: a folder name that means the same
/// in S3 and on every file system.
pub fn is_model_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl fmt::Display for ModelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(version) => write!(f, "{}@{version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Where one version of a model lives, relative to the repository root.
pub fn version_folder(name: &str, version: u64) -> String {
    format!("{name}/{version}/")
}

/// The model's name and version that a path relative to the repository root is the model
/// file of (`iris/3/model.onnx` → `("iris", 3)`).
pub fn parse_model_path(relative: &str) -> Option<(&str, u64)> {
    let mut parts = relative.split('/');
    let (name, version, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || file != MODEL_FILE || !is_model_name(name) {
        return None;
    }
    let version: u64 = version.parse().ok().filter(|&v| v > 0)?;
    Some((name, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_pinned_versions_parse() {
        assert_eq!(ModelRequest::parse("iris").unwrap(), ModelRequest::latest("iris"));
        assert_eq!(ModelRequest::parse("iris@2").unwrap(), ModelRequest { name: "iris".into(), version: Some(2) });
        assert_eq!(ModelRequest::parse("half_plus_two").unwrap().to_string(), "half_plus_two");
        assert_eq!(ModelRequest::parse("iris-v.2@10").unwrap().to_string(), "iris-v.2@10");
        for bad in ["", "@2", "iris@", "iris@0", "iris@-1", "iris@two", "my model", ".hidden", "a/b", "iris@2@3"] {
            assert!(ModelRequest::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_first_folder_after_the_input_prefix_names_the_model() {
        let route = |key, prefix| ModelRequest::from_key(key, prefix).map(|r| r.to_string());
        assert_eq!(route("iris/day1.csv", ""), Some("iris".into()));
        assert_eq!(route("iris@1/2026/day1.csv", ""), Some("iris@1".into()));
        assert_eq!(route("incoming/iris/day1.csv", "incoming/"), Some("iris".into()));
        // No folder, or a folder that cannot be a model: the default model's.
        assert_eq!(route("day1.csv", ""), None);
        assert_eq!(route("incoming/day1.csv", "incoming/"), None);
        assert_eq!(route("my data/day1.csv", ""), None);
        assert_eq!(route("iris@latest/day1.csv", ""), None);
    }

    #[test]
    fn model_paths_give_name_and_version() {
        assert_eq!(parse_model_path("iris/3/model.onnx"), Some(("iris", 3)));
        assert_eq!(parse_model_path("iris/3/model.onnx.json"), None);
        assert_eq!(parse_model_path("iris/0/model.onnx"), None);
        assert_eq!(parse_model_path("iris/latest/model.onnx"), None);
        assert_eq!(parse_model_path("iris/3/sub/model.onnx"), None);
        assert_eq!(parse_model_path("model.onnx"), None);
        assert_eq!(version_folder("iris", 3), "iris/3/");
    }
}
