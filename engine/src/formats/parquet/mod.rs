//! Parquet, the data lake's format (arrow-rs): rows in from any file pyarrow, polars, DuckDB or
//! Spark write ([`source`]), predictions out as typed columns ([`sink`]).
//!
//! A Parquet file is read by byte ranges ([`RangeRead`]): its footer, then for each row group
//! only the column chunks the model and the pass-through columns need. Memory holds one row
//! group's needed chunks and one batch, whatever the file's size.
//!
//! A big file is split by row groups: a shard reads those whose first byte is in its byte range
//! ([`ParquetSource::keep_row_groups_starting_in`]), and the shards' Parquet outputs are joined
//! into one file without re-encoding a row ([`join`]).

pub mod join;
mod preview;
mod ranges;
pub mod sink;
pub mod source;

pub use preview::preview;
pub use ranges::RangeRead;
pub use sink::{ParquetLayout, ParquetWriter};
pub use source::ParquetSource;
