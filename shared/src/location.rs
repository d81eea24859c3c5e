//! Where models and data live: an `s3://bucket/key` URI or a local path.

use std::fmt;
use std::path::PathBuf;

/// A parsed `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

/// A model or data location as users write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3(S3Uri),
    Local(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[error("{uri:?} is not a valid location: {reason} (expected s3://bucket/key or a local path)")]
pub struct LocationError {
    pub uri: String,
    pub reason: &'static str,
}

impl Location {
    pub fn parse(uri: &str) -> Result<Self, LocationError> {
        let err = |reason| LocationError { uri: uri.to_owned(), reason };
        if uri.trim().is_empty() {
            return Err(err("it is empty"));
        }
        match uri.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').ok_or_else(|| err("it has no key after the bucket"))?;
                if bucket.is_empty() {
                    return Err(err("the bucket name is empty"));
                }
                if key.is_empty() {
                    return Err(err("the key is empty"));
                }
                Ok(Location::S3(S3Uri { bucket: bucket.to_owned(), key: key.to_owned() }))
            }
            None if uri.contains("://") => Err(err("only s3:// URIs are supported")),
            None => Ok(Location::Local(PathBuf::from(uri))),
        }
    }

    /// The location of a file beside this one, named by appending `suffix` (the model's sidecar
    /// configuration is `<model>.json`).
    pub fn with_suffix(&self, suffix: &str) -> Location {
        match self {
            Location::S3(s3) => Location::S3(S3Uri { bucket: s3.bucket.clone(), key: format!("{}{suffix}", s3.key) }),
            Location::Local(path) => {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                Location::Local(name.into())
            }
        }
    }

    /// The file `name` in the same folder (or under the same key prefix) as this one.
    pub fn sibling(&self, name: &str) -> Location {
        match self {
            Location::S3(s3) => {
                let folder = s3.key.rsplit_once('/').map_or("", |(folder, _)| folder);
                let key = if folder.is_empty() { name.to_owned() } else { format!("{folder}/{name}") };
                Location::S3(S3Uri { bucket: s3.bucket.clone(), key })
            }
            Location::Local(path) => Location::Local(path.with_file_name(name)),
        }
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3(s3) => s3.fmt(f),
            Location::Local(path) => path.display().fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_uris_with_nested_keys() {
        let loc = Location::parse("s3://models/team/iris.onnx").unwrap();
        assert_eq!(loc, Location::S3(S3Uri { bucket: "models".into(), key: "team/iris.onnx".into() }));
        assert_eq!(loc.to_string(), "s3://models/team/iris.onnx");
    }

    #[test]
    fn anything_else_is_a_local_path() {
        assert_eq!(Location::parse("models/iris.onnx").unwrap(), Location::Local("models/iris.onnx".into()));
    }

    #[test]
    fn rejects_incomplete_and_foreign_uris() {
        for bad in ["", "s3://", "s3://bucket", "s3://bucket/", "s3:///key", "https://x/y"] {
            assert!(Location::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sidecar_names_append_the_suffix() {
        let s3 = Location::parse("s3://m/iris.onnx").unwrap();
        assert_eq!(s3.with_suffix(".json").to_string(), "s3://m/iris.onnx.json");
        let local = Location::parse("models/iris.onnx").unwrap();
        assert_eq!(local.with_suffix(".json").to_string(), "models/iris.onnx.json");
        assert_eq!(s3.sibling("labels.txt").to_string(), "s3://m/labels.txt");
        assert_eq!(local.sibling("labels.txt").to_string(), "models/labels.txt");
        let nested = Location::parse("s3://m/repo/cats/1/model.onnx").unwrap();
        assert_eq!(nested.sibling("labels.txt").to_string(), "s3://m/repo/cats/1/labels.txt");
    }
}
