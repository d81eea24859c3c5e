//! The transform of a table as a pipeline over the task's cores ([`ordered_map`]): one thread
//! parses rows into mini-batches, `threads` threads run the model and format the results, and the
//! calling thread writes them out in input order. Memory stays bounded by the batch size
//! whatever the file size. Images go to [`super::image`].

use std::io::{Read, Write};
use std::ops::Range;
use std::sync::Arc;

use super::batch::{BadRow, Batch};
use super::formats::encode::{Encoded, Encoder};
use super::formats::parquet::RangeRead;
use super::formats::{DataFormat, FileKind, RowSource, open_text, parquet_source, text_source};
use super::image_transform;
use super::model::{Model, RUN_ROW_MULTIPLE};
use super::parallel::ordered_map;
use super::rejects::{ErrorWriter, PARQUET_ROW_ERROR_HEADER, ROW_ERROR_HEADER};
use super::{TransformError, TransformOptions, TransformSummary};

/// A batch's output, ready to write.
struct Formatted {
    encoded: Encoded,
    rows_read: u64,
    rows_out: usize,
    bad: Vec<BadRow>,
    /// Texts cut to the model's maximum length.
    truncated: usize,
}

/// Which part of a file a transform reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Portion {
    /// The whole file: a file with no rows, or too many bad ones, fails.
    Whole,
    /// A shard of it ([`super::shard`]): the whole file's checks are made once all shards are
    /// done. Only the `first` shard writes a CSV header; every shard numbers its rows from 1.
    Shard { first: bool },
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
        (_, Some(_)) => return Err(takes_images()),
        // A table model: an image (or Parquet, read by ranges) is refused where the rows' source
        // is chosen, below.
        (_, None) => {}
    }
    let text = open_text(input, kind.gzip)?;
    let source = text_source(text, kind.format, model, None)?;
    transform_table(source, kind.format, (output, errors), model, options, Portion::Whole, progress)
}

/// Runs a table model over a Parquet file, read by byte ranges (see [`crate::formats::parquet`]).
pub fn transform_parquet(
    file: Arc<dyn RangeRead>,
    output: impl Write + Send,
    errors: impl Write,
    model: &Model,
    options: &TransformOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<TransformSummary, TransformError> {
    if model.image.is_some() {
        return Err(takes_images());
    }
    let source = parquet_source(file, model, None)?;
    transform_table(source, DataFormat::Parquet, (output, errors), model, options, Portion::Whole, progress)
}

/// Runs a table model over one shard of a Parquet file: the row groups whose first byte is in
/// `bytes` (a file of one row group cannot be split: an [`super::shard::Unsplittable`] error).
#[allow(clippy::too_many_arguments)]
pub fn transform_parquet_shard(
    file: Arc<dyn RangeRead>,
    bytes: Range<u64>,
    first: bool,
    output: impl Write + Send,
    errors: impl Write,
    model: &Model,
    options: &TransformOptions,
) -> Result<TransformSummary, TransformError> {
    if model.image.is_some() {
        return Err(takes_images());
    }
    let source = parquet_source(file, model, Some(bytes))?;
    let portion = Portion::Shard { first };
    transform_table(source, DataFormat::Parquet, (output, errors), model, options, portion, &mut |_| {})
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
    let text = std::io::BufReader::with_capacity(256 * 1024, rows);
    let source = text_source(text, format, model, first_row)?;
    let portion = Portion::Shard { first: first_row.is_none() };
    transform_table(source, format, (output, errors), model, options, portion, &mut |_| {})
}

fn takes_images() -> TransformError {
    TransformError::WrongInput(
        "the model takes images: upload .jpg, .jpeg, .png or .webp files, or a .tar or .tar.gz of them".into(),
    )
}

/// Runs the model over the rows of `source`, in input order, into the output chosen for them.
fn transform_table(
    mut source: Box<dyn RowSource + '_>,
    format: DataFormat,
    (output, errors): (impl Write + Send, impl Write),
    model: &Model,
    options: &TransformOptions,
    portion: Portion,
    progress: &mut dyn FnMut(u64),
) -> Result<TransformSummary, TransformError> {
    let starts_file = !matches!(portion, Portion::Shard { first: false });
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
            summary.truncated += batch.truncated as u64;
            progress(summary.rows_in);
            Ok(())
        },
    )?;
    output.finish()?;
    errors.finish(summary, options, portion == Portion::Whole)
}

fn run_batch(batch: Batch, model: &Model, encoder: &Encoder, capacity: usize) -> Result<Formatted, TransformError> {
    // A batch of bad rows only has nothing to write, in any format.
    let (encoded, truncated) = if batch.rows > 0 {
        let (outputs, truncated) = model.predict_batch_counted(&batch)?;
        (encoder.encode(&batch, &outputs, model, capacity)?, truncated)
    } else {
        (Encoded::Nothing, 0)
    };
    Ok(Formatted { encoded, rows_read: batch.rows_read, rows_out: batch.rows, bad: batch.bad, truncated })
}
