//! Parquet, the data lake's format (arrow-rs): rows in from any file pyarrow, polars, DuckDB or
//! Spark write ([`source`]), predictions out as typed columns ([`sink`]).
//!
//! A Parquet file is read by byte ranges ([`RangeRead`]): its footer, then for each row group
//! only the column chunks the model and the pass-through columns need. Memory holds one row
//! group's needed chunks and one batch, whatever the file's size.

mod preview;
mod ranges;
pub mod sink;
pub mod source;

pub use preview::preview;
pub use ranges::RangeRead;
pub use sink::{ParquetLayout, ParquetWriter};
pub use source::ParquetSource;
