//! The errors file of rejected rows (or images), and the whole file's verdict on them.

use std::io::Write;

use shared::report::{REPORTED_ROW_ERRORS, RowError};

use super::batch::BadRow;
use super::{TransformError, TransformOptions, TransformSummary};

/// The errors file's header for text tables: the line a bad row starts on, why, and the row.
pub const ROW_ERROR_HEADER: [&str; 3] = ["line", "reason", "row"];

/// The errors file's header for Parquet: the row's number (from 1), why, and its values.
pub const PARQUET_ROW_ERROR_HEADER: [&str; 3] = ["row", "reason", "values"];

/// Bad rows (or images): `line,reason,row`, the header written with the first one.
pub(crate) struct ErrorWriter<E: Write> {
    header: [&'static str; 3],
    csv: csv::Writer<E>,
    first: Vec<RowError>,
    count: u64,
}

impl<E: Write> ErrorWriter<E> {
    pub(crate) fn new(errors: E, header: [&'static str; 3]) -> Self {
        Self { header, csv: csv::Writer::from_writer(errors), first: Vec::new(), count: 0 }
    }

    pub(crate) fn write(&mut self, bad: &BadRow) -> Result<(), TransformError> {
        if self.count == 0 {
            self.csv.write_record(self.header)?;
        }
        self.count += 1;
        self.csv.write_record([itoa::Buffer::new().format(bad.line), bad.reason.as_str(), bad.raw.as_str()])?;
        if self.first.len() < REPORTED_ROW_ERRORS {
            self.first.push(RowError { line: bad.line, reason: bad.reason.clone() });
        }
        Ok(())
    }

    /// Completes `summary` with the bad rows, and (for a whole file) fails it when there are
    /// none at all or too many bad ones.
    pub(crate) fn finish(
        mut self,
        mut summary: TransformSummary,
        options: &TransformOptions,
        whole_file: bool,
    ) -> Result<TransformSummary, TransformError> {
        self.csv.flush()?;
        summary.bad_rows = self.count;
        summary.first_errors = self.first;
        if whole_file { check_whole_file(summary, options.max_bad_row_ratio) } else { Ok(summary) }
    }
}

/// A whole file fails when it has no rows at all, or more bad ones than `max_bad_row_ratio`.
pub fn check_whole_file(
    mut summary: TransformSummary,
    max_bad_row_ratio: f64,
) -> Result<TransformSummary, TransformError> {
    if summary.rows_in == 0 {
        return Err(TransformError::NoDataRows);
    }
    if summary.bad_rows as f64 > max_bad_row_ratio * summary.rows_in as f64 {
        summary.rows_out = 0;
        return Err(TransformError::TooManyBadRows { summary, limit: max_bad_row_ratio });
    }
    Ok(summary)
}
