//! Which input column feeds which model input, and which pass through to the output.

use super::TransformError;
use super::model::{ColumnType, Model};
use super::model_config::{ColumnRef, Passthrough};

/// Input columns resolved against the file's header (or positions, without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// The input's column names: the header, or `0`, `1`, … without one.
    pub names: Vec<String>,
    pub features: Vec<usize>,
    pub passthrough: Vec<usize>,
    /// Whether an empty value is a missing one (NaN), the model handling those.
    pub missing: bool,
    /// For a model of column inputs: what each feature column holds (else every one is float).
    pub kinds: Vec<ColumnType>,
}

impl ColumnPlan {
    /// `named` says whether `names` came from the file (a header row or JSON field names).
    pub fn new(names: Vec<String>, named: bool, model: &Model) -> Result<Self, TransformError> {
        let plan = Self::resolve(names, named, model)?;
        plan.check_width(plan.features.len(), model)?;
        Ok(plan)
    }

    /// The columns resolved, without checking that the features are as many as the model
    /// takes (a Parquet column may hold a whole vector of them: see [`Self::check_width`]).
    pub fn resolve(names: Vec<String>, named: bool, model: &Model) -> Result<Self, TransformError> {
        let config = &model.config;
        let resolve = |col: &ColumnRef| -> Result<usize, TransformError> {
            match col {
                ColumnRef::Position(i) if *i < names.len() => Ok(*i),
                ColumnRef::Position(_) => Err(TransformError::Columns(format!(
                    "the model configuration names {col}, but rows have {} columns",
                    names.len()
                ))),
                ColumnRef::Name(_) if !named => Err(TransformError::Columns(format!(
                    "the model configuration names {col}, but the file has no header: name columns by 0-based position"
                ))),
                ColumnRef::Name(name) => names.iter().position(|h| h == name).ok_or_else(|| {
                    TransformError::Columns(format!(
                        "the model configuration names {col}, which the input's columns {names:?} lack"
                    ))
                }),
            }
        };
        let passthrough = match &config.passthrough {
            Passthrough::All(_) => (0..names.len()).collect(),
            Passthrough::Columns(cols) => cols.iter().map(resolve).collect::<Result<Vec<_>, _>>()?,
        };
        let features = match &config.features {
            Some(cols) => cols.iter().map(resolve).collect::<Result<Vec<_>, _>>()?,
            // A model of several inputs is fed from the columns of their names.
            None if !model.column_inputs.is_empty() => model
                .column_inputs
                .iter()
                .map(|input| resolve(&ColumnRef::Name(input.name.clone())))
                .collect::<Result<Vec<_>, _>>()?,
            None if matches!(config.passthrough, Passthrough::All(_)) => (0..names.len()).collect(),
            None => (0..names.len()).filter(|i| !passthrough.contains(i)).collect(),
        };
        let kinds = model.feature_kinds();
        Ok(Self { names, features, passthrough, missing: model.handles_missing, kinds })
    }

    /// Checks that the feature columns, `width` values a row in all, are what the model takes.
    pub fn check_width(&self, width: usize, model: &Model) -> Result<(), TransformError> {
        if width == model.n_features {
            return Ok(());
        }
        let columns = self.features.iter().map(|&i| self.names[i].as_str()).collect::<Vec<_>>().join(", ");
        let (takes, count) = (model.n_features, self.features.len());
        Err(TransformError::Columns(if width == count {
            format!(
                "the model takes {takes} features but {count} columns are features ({columns}); name the feature columns in the model configuration (<model>.json)"
            )
        } else {
            format!("the model takes {takes} features a row but the feature columns ({columns}) hold {width}")
        }))
    }

    /// Output names of the pass-through columns.
    pub fn passthrough_names(&self) -> impl Iterator<Item = &str> {
        self.passthrough.iter().map(|&i| self.names[i].as_str())
    }
}

/// `0`, `1`, … for inputs without names.
pub fn positional_names(count: usize) -> Vec<String> {
    (0..count).map(|i| i.to_string()).collect()
}
