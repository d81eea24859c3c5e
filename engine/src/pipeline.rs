//! The transform of a table as a pipeline over the task's cores ([`ordered_map`]): one thread
//! parses rows into mini-batches, `threads` threads run the model and format the results, and the
//! calling thread writes them out in input order. Memory stays bounded by the batch size
//! whatever the file size. Images go to [`super::image`].

use std::io::{BufRead, Read, Write};
use std::sync::Arc;

use shared::report::{REPORTED_ROW_ERRORS, RowError};

use super::batch::{BadRow, Batch};
use super::encode::{Encoded, Encoder};
use super::format::{DataFormat, FileKind, TableFormat, open_text};
use super::image_transform;
use super::model::{Model, RUN_ROW_MULTIPLE};
use super::parallel::ordered_map;
use super::parquet::{ParquetSource, RangeRead};
use super::sources::{CsvSource, JsonLinesSource, RowSource};
use super::{TransformError, TransformOptions, TransformSummary};

/// A batch's output, ready to write.
struct Formatted {
    encoded: Encoded,
    rows_read: u64,
    rows_out: usize,
    bad: Vec<BadRow>,
}

/// Which part of a file a transform reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Portion<'a> {
    /// The whole file: a file with no rows, or too many bad ones, fails.
    Whole,
    /// A shard of it ([`super::shard`]): the whole file's checks are made once all shards are
    /// done. The first shard is read as a file is; a later one is told the file's first row
    /// (`first_row`, from [`super::shard::first_row_line`]) for its columns, writes no header,
    /// and numbers its lines from 1.
    Shard { first_row: Option<&'a [u8]> },
}

/// Runs `model` over `input` (its columns mapped by `model.config`; or an image, or an archive of
/// images, for an image model), writing predictions to `output` and rejected rows or images to
/// `errors` (nothing at all when every one is good). `progress` hears the rows read so far.
pub fn transform(
    input: impl Read + Send,
    kind: FileKind,
    output: impl Write + Send,
    errors: impl Write,
    model: &Model,
    options: &TransformOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<TransformSummary, TransformError> {
    match (kind.format, &model.image) {
        (DataFormat::Image, Some(image)) => {
            return image_transform::transform_one(input, output, model, image, options);
        }
        (DataFormat::ImageArchive, Some(image)) => {
            return image_transform::transform_archive(
                input, kind.gzip, output, errors, model, image, options, progress,
            );
        }
        (_, Some(_)) => {
            return Err(TransformError::WrongInput(
                "the model takes images: upload .jpg, .jpeg, .png or .webp files, or a .tar or .tar.gz of them".into(),
            ));
        }
        (DataFormat::Parquet, None) => {
            return Err(TransformError::WrongInput("a Parquet file is read by byte ranges, not as a stream".into()));
        }
        // A table model: an image is refused where the rows' source is chosen, below.
        (_, None) => {}
    }
    let text = open_text(input, kind.gzip)?;
    let source = text_source(text, kind.format, model, None)?;
    transform_table(source, kind.format, (output, errors), model, options, Portion::Whole, progress)
}

/// Runs a table model over a Parquet file, read by byte ranges (see [`crate::parquet`]).
pub fn transform_parquet(
    file: Arc<dyn RangeRead>,
    output: impl Write + Send,
    errors: impl Write,
    model: &Model,
    options: &TransformOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<TransformSummary, TransformError> {
    if model.image.is_some() {
        return Err(TransformError::WrongInput(
            "the model takes images: upload .jpg, .jpeg, .png or .webp files, or a .tar or .tar.gz of them".into(),
        ));
    }
    let source = Box::new(ParquetSource::open(file, model)?);
    transform_table(source, DataFormat::Parquet, (output, errors), model, options, Portion::Whole, progress)
}

/// Runs a table model over the rows of one shard of a file (uncompressed text: a compressed file
/// is never split); see [`Portion::Shard`].
pub fn transform_shard(
    rows: impl Read + Send,
    format: DataFormat,
    output: impl Write + Send,
    errors: impl Write,
    model: &Model,
    options: &TransformOptions,
    first_row: Option<&[u8]>,
) -> Result<TransformSummary, TransformError> {
    if model.image.is_some() || format.is_image() {
        return Err(TransformError::WrongInput("only tables are split into shards".into()));
    }
    if format.output(options.output_format) == TableFormat::Parquet {
        return Err(TransformError::WrongInput(
            "a Parquet output is not yet assembled from shards: the trigger sends such files whole when its OUTPUT_FORMAT is parquet too".into(),
        ));
    }
    let text = std::io::BufReader::with_capacity(256 * 1024, rows);
    let source = text_source(text, format, model, first_row)?;
    transform_table(source, format, (output, errors), model, options, Portion::Shard { first_row }, &mut |_| {})
}

/// The rows of a text table (CSV or JSON Lines); `first_row` for a later shard.
fn text_source<'a>(
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

/// Runs the model over the rows of `source`, in input order, into the output chosen for them.
fn transform_table(
    mut source: Box<dyn RowSource + '_>,
    format: DataFormat,
    (output, errors): (impl Write + Send, impl Write),
    model: &Model,
    options: &TransformOptions,
    portion: Portion<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<TransformSummary, TransformError> {
    let starts_file = !matches!(portion, Portion::Shard { first_row: Some(_) });
    let encoder = Encoder::new(format, source.as_ref(), model, options);
    let mut output = encoder.writer(output, starts_file, options)?;
    let header = if format == DataFormat::Parquet { PARQUET_ROW_ERROR_HEADER } else { ROW_ERROR_HEADER };

    let batch_size = options.batch_size.max(1).next_multiple_of(RUN_ROW_MULTIPLE);
    let mut errors = ErrorWriter::new(errors, header);
    let mut summary = TransformSummary::default();

    ordered_map(
        options.threads,
        |emit| {
            loop {
                let mut batch = Batch::default();
                batch.features.reserve(batch_size * model.n_features);
                let more = source.fill(&mut batch, batch_size)?;
                if batch.rows_read > 0 && !emit(batch) {
                    break;
                }
                if !more {
                    break;
                }
            }
            Ok(())
        },
        // The last batch's output size, to allocate the next one's at once.
        |last_size: &mut usize, batch| {
            let formatted = run_batch(batch, model, &encoder, *last_size + *last_size / 8)?;
            *last_size = formatted.encoded.size();
            Ok(formatted)
        },
        |batch| {
            output.write(&batch.encoded)?;
            for bad in &batch.bad {
                errors.write(bad)?;
            }
            summary.rows_in += batch.rows_read;
            summary.rows_out += batch.rows_out as u64;
            progress(summary.rows_in);
            Ok(())
        },
    )?;
    output.finish()?;
    errors.finish(summary, options, portion == Portion::Whole)
}

fn run_batch(batch: Batch, model: &Model, encoder: &Encoder, capacity: usize) -> Result<Formatted, TransformError> {
    let predictions = if batch.rows > 0 { model.predict_batch(&batch)? } else { Vec::new() };
    let encoded = if batch.rows > 0 || matches!(encoder, Encoder::Text(_)) {
        encoder.encode(&batch, &predictions, model, capacity)?
    } else {
        Encoded::Text(Vec::new())
    };
    Ok(Formatted { encoded, rows_read: batch.rows_read, rows_out: batch.rows, bad: batch.bad })
}

/// The errors file's header for text tables: the line a bad row starts on, why, and the row.
pub const ROW_ERROR_HEADER: [&str; 3] = ["line", "reason", "row"];

/// The errors file's header for Parquet: the row's number (from 1), why, and its values.
pub const PARQUET_ROW_ERROR_HEADER: [&str; 3] = ["row", "reason", "values"];

/// Bad rows (or images): `line,reason,row`, the header written with the first one.
pub(super) struct ErrorWriter<E: Write> {
    header: [&'static str; 3],
    csv: csv::Writer<E>,
    first: Vec<RowError>,
    count: u64,
}

impl<E: Write> ErrorWriter<E> {
    pub(super) fn new(errors: E, header: [&'static str; 3]) -> Self {
        Self { header, csv: csv::Writer::from_writer(errors), first: Vec::new(), count: 0 }
    }

    pub(super) fn write(&mut self, bad: &BadRow) -> Result<(), TransformError> {
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
    pub(super) fn finish(
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
