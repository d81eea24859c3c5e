//! The first rows of a Parquet file as CSV lines, for people to look at (`make local` prints
//! its outputs so). Reads the footer and the first row group only.

use std::sync::Arc;

use arrow_cast::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::RangeRead;
use super::ranges::File;
use crate::TransformError;

/// A file's header line and up to `rows` rows, comma-separated, and how many rows it holds.
pub fn preview(file: Arc<dyn RangeRead>, rows: usize) -> Result<(Vec<String>, u64), TransformError> {
    let file = File::new(file);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.clone())?;
    let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let mut lines = vec![builder.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(",")];
    let Some(first) = builder.metadata().row_groups().first() else { return Ok((lines, total)) };
    let fetched = file.fetch(first, |_| true)?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
        fetched,
        parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(Arc::clone(builder.metadata()), Default::default())?,
    )
    .with_row_groups(vec![0])
    .with_batch_size(rows.max(1))
    .build()?;
    if let Some(batch) = reader.into_iter().next() {
        let batch = batch.map_err(|e| TransformError::Parquet(e.to_string()))?;
        let options = FormatOptions::default();
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransformError::Parquet(e.to_string()))?;
        for row in 0..batch.num_rows().min(rows) {
            lines.push(formatters.iter().map(|f| f.value(row).to_string()).collect::<Vec<_>>().join(","));
        }
    }
    Ok((lines, total))
}
