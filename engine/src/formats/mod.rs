//! Data formats: which one a file is in, opening it (gzip included), and each table format's
//! source of rows and sink of predictions, chosen here and nowhere else: the pipeline runs a
//! [`RowSource`] into an `Encoder` whatever the formats are.
//!
//! - [`csv`], [`json_lines`]: text rows ([`values`]: text as features); [`text_sink`]: text out.
//! - [`parquet`]: Parquet in (by byte ranges) and out.
//! - `encode`: the output, in the format chosen for it.
//!
//! Tables (CSV, TSV, JSON Lines, Parquet) and images (JPEG, PNG, WebP; or a tar archive of them) are told
//! apart by the file name.

pub mod csv;
pub(crate) mod encode;
pub mod json_lines;
mod kind;
pub mod parquet;
mod source;
pub mod text_sink;
pub mod values;

use std::io::BufRead;
use std::ops::Range;
use std::sync::Arc;

pub use self::kind::{CsvOptions, DataFormat, FileKind, TableFormat, UnsupportedFile, open_text};
pub use self::source::RowSource;

use self::csv::CsvSource;
use self::json_lines::JsonLinesSource;
use self::parquet::{ParquetSource, RangeRead};
use crate::TransformError;
use crate::model::Model;

/// The rows of a text table (CSV or JSON Lines); `first_row`, the file's first row, for a later
/// shard of it.
pub(crate) fn text_source<'a>(
    text: impl BufRead + Send + 'a,
    format: DataFormat,
    model: &Model,
    first_row: Option<&[u8]>,
) -> Result<Box<dyn RowSource + 'a>, TransformError> {
    Ok(match (format, first_row) {
        (DataFormat::Csv { delimiter, has_header }, None) => {
            Box::new(CsvSource::open(text, delimiter, has_header, model)?)
        }
        (DataFormat::Csv { delimiter, has_header }, Some(first)) => {
            Box::new(CsvSource::open_after(first, text, delimiter, has_header, model)?)
        }
        (DataFormat::JsonLines, None) => Box::new(JsonLinesSource::open(text, model)?),
        (DataFormat::JsonLines, Some(first)) => Box::new(JsonLinesSource::open_after(first, text, model)?),
        (DataFormat::Image | DataFormat::ImageArchive, _) => {
            return Err(TransformError::WrongInput(
                "the model takes rows of features, not images (its configuration has no \"image\" section)".into(),
            ));
        }
        (DataFormat::Parquet, _) => {
            return Err(TransformError::WrongInput("a Parquet file is read by byte ranges, not as a stream".into()));
        }
    })
}

/// The rows of a Parquet file, read by byte ranges: all of them, or a shard's (the row groups
/// that start in `shard`).
pub(crate) fn parquet_source(
    file: Arc<dyn RangeRead>,
    model: &Model,
    shard: Option<Range<u64>>,
) -> Result<Box<dyn RowSource>, TransformError> {
    let mut source = ParquetSource::open(file, model)?;
    if let Some(bytes) = shard {
        source.keep_row_groups_starting_in(bytes)?;
    }
    Ok(Box::new(source))
}
