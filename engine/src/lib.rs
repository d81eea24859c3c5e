//! The transform engine: an ONNX model over a stream of rows, free of AWS (a crate of its own,
//! so the compiler keeps that boundary). The batch side (`worker`'s jobs) and the online side
//! (`worker serve`) both use it.
//!
//! - [`formats`]: which format a file is in (CSV, TSV, JSON Lines, Parquet; gzip or not), each
//!   table format's source of rows and sink of predictions, and which one a file gets.
//! - [`model`]: loading a model once and running it on mini-batches; [`outputs`], what a run gives.
//! - [`model_config`]: the optional configuration that maps input columns to the model.
//! - [`ops`]: every operator the engine adds to tract: the ONNX-ML operators of scikit-learn,
//!   XGBoost and LightGBM exports, and faster kernels in place of some of tract's.
//! - [`columns`]: input columns resolved against the model; [`rejects`]: the errors file.
//! - [`pipeline`]: parse, infer and write overlapped on the task's cores ([`parallel`]), in
//!   input order.
//! - [`image`]: image models, from an image's bytes to the top k classes; [`image_transform`],
//!   an image or an archive of them as a batch job.

pub mod batch;
pub mod columns;
pub mod formats;
pub mod image;
pub mod image_transform;
pub mod model;
pub mod model_config;
pub mod ops;
pub mod outputs;
pub mod parallel;
pub mod pipeline;
pub mod rejects;
pub mod shard;
pub mod text;

use std::io;

pub use formats::parquet::RangeRead;
pub use formats::{CsvOptions, DataFormat, FileKind, TableFormat, UnsupportedFile};
pub use model::{
    ColumnInput, ColumnType, Element, METADATA_KEY, Model, ModelError, OutputKind, OutputSpec, OutputValues,
};
pub use model_config::{ColumnRef, ModelConfig, Passthrough};
pub use pipeline::{Portion, transform, transform_parquet, transform_parquet_shard, transform_shard};
pub use rejects::{PARQUET_ROW_ERROR_HEADER, ROW_ERROR_HEADER, check_whole_file};
use shared::report::RowError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformOptions {
    /// Rows per model run (rounded up to a multiple of 16).
    pub batch_size: usize,
    /// Above this share of bad rows the whole file fails.
    pub max_bad_row_ratio: f64,
    /// Threads running the model (besides the reading and the writing thread).
    pub threads: usize,
    /// Images with more pixels are refused before they are decoded.
    pub max_image_pixels: u64,
    /// The format of a table's predictions (`None`: the input's own).
    pub output_format: Option<TableFormat>,
    /// Rows per row group of a Parquet output.
    pub row_group_rows: usize,
}

/// Rows per row group of Parquet outputs, unless configured: polars' default, a few MB of
/// predictions a group, which readers can skip and fetch with one ranged GET a column.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 256 * 1024;

impl Default for TransformOptions {
    fn default() -> Self {
        Self {
            batch_size: 4096,
            max_bad_row_ratio: 0.1,
            threads: default_threads(),
            max_image_pixels: image::decode::DEFAULT_MAX_PIXELS,
            output_format: None,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// The cores this process may use (a Fargate task's vCPUs).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformSummary {
    pub rows_in: u64,
    pub rows_out: u64,
    pub bad_rows: u64,
    /// Rows whose text was longer than the text model reads, and cut to its maximum.
    pub truncated: u64,
    pub first_errors: Vec<RowError>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// Reading the input or writing an output failed; the caller knows whether that was the
    /// storage (transient) or the data.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("the file is empty")]
    Empty,
    #[error("the first row is not UTF-8 text; is the file really CSV or JSON Lines?")]
    NotText,
    #[error("the file has no data rows")]
    NoDataRows,
    #[error("the archive holds no images")]
    NoImages,
    #[error("{0}")]
    WrongInput(String),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("the file's columns do not fit the model: {0}")]
    Columns(String),
    #[error("{} of {} rows are bad, more than the allowed {:.1}%; the first: {}", summary.bad_rows, summary.rows_in, limit * 100.0, first_error(summary))]
    TooManyBadRows { summary: TransformSummary, limit: f64 },
    #[error("the file cannot be read as Parquet: {0}")]
    Parquet(String),
    #[error("the file cannot be read at line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl TransformError {
    /// Whether the failure lies in the data or the model (retrying cannot help), rather than in
    /// reading or writing.
    pub fn is_permanent(&self) -> bool {
        match self {
            // Decompression and decoding errors surface as I/O errors of these kinds.
            TransformError::Io(e) => matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput),
            _ => true,
        }
    }
}

impl From<csv::Error> for TransformError {
    fn from(error: csv::Error) -> Self {
        let line = error.position().map_or(0, csv::Position::line);
        match error.into_kind() {
            csv::ErrorKind::Io(io) => TransformError::Io(io),
            other => TransformError::Malformed { line, message: format!("{other:?}") },
        }
    }
}

fn first_error(summary: &TransformSummary) -> String {
    summary.first_errors.first().map(|e| format!("line {}: {}", e.line, e.reason)).unwrap_or_default()
}
