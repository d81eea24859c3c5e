//! The source of a table's rows, whatever its format.

use crate::TransformError;
use crate::batch::Batch;
use crate::columns::ColumnPlan;

/// Where rows come from.
pub trait RowSource: Send {
    /// The resolved columns.
    fn plan(&self) -> &ColumnPlan;
    /// Whether the input named its columns (a header row, or JSON field names).
    fn named(&self) -> bool;
    /// The pass-through columns' types, when the input has types (Parquet); text has none.
    fn typed_fields(&self) -> Option<&[std::sync::Arc<arrow_schema::Field>]> {
        None
    }
    /// Reads rows into `batch` until it holds `capacity` good rows or the input ends; returns
    /// whether more input may follow.
    fn fill(&mut self, batch: &mut Batch, capacity: usize) -> Result<bool, TransformError>;
}
