//! What a model run gives: each output's values for the rows, row-major.

/// The predictions for one mini-batch, output by output, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputValues {
    Int(Vec<i64>),
    Text(Vec<String>),
    Float(Vec<f32>),
}

impl OutputValues {
    /// Appends `other`'s values (of the same type).
    pub fn append(&mut self, other: OutputValues) {
        match (self, other) {
            (OutputValues::Int(v), OutputValues::Int(mut o)) => v.append(&mut o),
            (OutputValues::Text(v), OutputValues::Text(mut o)) => v.append(&mut o),
            (OutputValues::Float(v), OutputValues::Float(mut o)) => v.append(&mut o),
            _ => {}
        }
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        match self {
            OutputValues::Int(v) => v.truncate(len),
            OutputValues::Text(v) => v.truncate(len),
            OutputValues::Float(v) => v.truncate(len),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            OutputValues::Int(v) => v.len(),
            OutputValues::Text(v) => v.len(),
            OutputValues::Float(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values of `rows` rows from row `start`, `width` values a row.
    pub fn rows(&self, start: usize, rows: usize, width: usize) -> OutputValues {
        let range = start * width..(start + rows) * width;
        match self {
            OutputValues::Int(v) => OutputValues::Int(v[range].to_vec()),
            OutputValues::Text(v) => OutputValues::Text(v[range].to_vec()),
            OutputValues::Float(v) => OutputValues::Float(v[range].to_vec()),
        }
    }
}
