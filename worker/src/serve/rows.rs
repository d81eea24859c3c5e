//! How a request gave its rows, and so how its answer gives them back: a one-feature model's rows
//! may come as bare numbers (TF Serving's `"instances": [1.0, 2.0, 5.0]`), and a one-wide output
//! then comes back as bare numbers too. Shared by the tensors a request becomes and the JSON an
//! answer is written as.

use crate::engine::OutputSpec;

/// How a request gave each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowForm {
    /// A number: the one feature of a one-feature model.
    Scalar,
    /// A list of the features.
    Vector,
}

/// Whether an output's rows come back as bare values: a `[batch]` output, or a one-wide output
/// of a request that gave its rows as bare numbers.
pub fn bare_rows(spec: &OutputSpec, form: RowForm) -> bool {
    spec.rank == 1 || (spec.width() == 1 && form == RowForm::Scalar)
}
