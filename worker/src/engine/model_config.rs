//! The model configuration a model author puts next to the model (`<model>.json`): which input
//! columns are features, which pass through to the output, and the names of the classes.

use serde::Deserialize;

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the model configuration is not valid: {0} (expected {{\"features\": [...], \"passthrough\": [...], \"classes\": [...]}})"
)]
pub struct ModelConfigError(#[source] serde_json::Error);

impl ModelConfig {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelConfigError> {
        serde_json::from_slice(bytes).map_err(ModelConfigError)
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
    fn unknown_fields_and_bad_json_are_rejected_clearly() {
        let err = ModelConfig::from_json(br#"{"feature": ["a"]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `feature`"), "{err}");
        assert!(ModelConfig::from_json(b"{").is_err());
    }
}
