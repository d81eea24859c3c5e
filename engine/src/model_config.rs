//! The model configuration a model author puts next to the model (`<model>.json`): for a table
//! model, which input columns are features, which pass through to the output, and the names of
//! the classes; for an image model, its `image` section ([`ImageConfig`]).

use serde::Deserialize;

use super::image::ImageConfig;

/// A column by its header name or its 0-based position.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ColumnRef {
    Position(usize),
    Name(String),
}

/// Which input columns reach the output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Passthrough {
    All(AllColumns),
    Columns(Vec<ColumnRef>),
}

/// The keyword `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AllColumns {
    #[serde(rename = "all")]
    All,
}

impl Default for Passthrough {
    fn default() -> Self {
        Passthrough::Columns(Vec::new())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The columns fed to the model, in the model's order. Absent: every column that does not
    /// pass through.
    #[serde(default)]
    pub features: Option<Vec<ColumnRef>>,
    /// Columns copied to the output ahead of the predictions: a list (an id, say), or `"all"`
    /// for every input column (SageMaker's `JoinSource=Input`).
    #[serde(default)]
    pub passthrough: Passthrough,
    /// Names of the classes a classifier's integer labels stand for, in label order.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Makes the model an image model: how images become its input, and its scores classes.
    #[serde(default)]
    pub image: Option<ImageConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    #[error(
        "the model configuration is not valid: {0} (expected {{\"features\": [...], \"passthrough\": [...], \"classes\": [...]}}, or {{\"image\": {{...}}}} for an image model)"
    )]
    Json(#[source] serde_json::Error),
    #[error("the model configuration is not valid: {0}")]
    Invalid(String),
}

impl ModelConfig {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelConfigError> {
        let config: Self = serde_json::from_slice(bytes).map_err(ModelConfigError::Json)?;
        if let Some(image) = &config.image {
            image.check().map_err(ModelConfigError::Invalid)?;
            if config.features.is_some() || config.passthrough != Passthrough::default() || config.classes.is_some() {
                return Err(ModelConfigError::Invalid(
                    "an image model's configuration has no features, passthrough or classes (its class names are image.labels)".into(),
                ));
            }
        }
        Ok(config)
    }
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnRef::Position(i) => write!(f, "column {i}"),
            ColumnRef::Name(name) => write!(f, "column {name:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_positions() {
        let config =
            ModelConfig::from_json(br#"{"features": ["a", 2], "passthrough": ["id"], "classes": ["x", "y"]}"#).unwrap();
        assert_eq!(config.features, Some(vec![ColumnRef::Name("a".into()), ColumnRef::Position(2)]));
        assert_eq!(config.passthrough, Passthrough::Columns(vec![ColumnRef::Name("id".into())]));
        assert_eq!(config.classes.as_deref(), Some(&["x".to_owned(), "y".to_owned()][..]));
    }

    #[test]
    fn all_passes_every_column_through() {
        let config = ModelConfig::from_json(br#"{"passthrough": "all"}"#).unwrap();
        assert_eq!(config.passthrough, Passthrough::All(AllColumns::All));
        assert!(ModelConfig::from_json(br#"{"passthrough": "some"}"#).is_err());
    }

    #[test]
    fn everything_is_optional() {
        assert_eq!(ModelConfig::from_json(b"{}").unwrap(), ModelConfig::default());
    }

    #[test]
    fn an_image_section_is_checked_and_stands_alone() {
        let config = ModelConfig::from_json(br#"{"image": {"width": 8, "height": 8, "color": "gray"}}"#).unwrap();
        assert_eq!(config.image.unwrap().channels(), 1);
        let err = ModelConfig::from_json(br#"{"image": {"width": 8, "height": 8, "top_k": 0}}"#).unwrap_err();
        assert!(err.to_string().contains("top_k must be at least 1"), "{err}");
        let err = ModelConfig::from_json(br#"{"features": ["a"], "image": {"width": 8, "height": 8}}"#).unwrap_err();
        assert!(err.to_string().contains("no features, passthrough or classes"), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_json_are_rejected_clearly() {
        let err = ModelConfig::from_json(br#"{"feature": ["a"]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `feature`"), "{err}");
        assert!(ModelConfig::from_json(b"{").is_err());
    }
}
