//! The output side of a table's transform, whatever its format: each batch encoded on a
//! worker thread (CSV or JSON Lines bytes, or a Parquet record batch), then written in order.

use std::io::Write;

use arrow_array::RecordBatch;

use super::kind::{DataFormat, TableFormat};
use super::parquet::{ParquetLayout, ParquetWriter};
use super::source::RowSource;
use super::text_sink::OutputLayout;
use crate::batch::Batch;
use crate::model::{Model, OutputValues};
use crate::{TransformError, TransformOptions};

/// How batches become output.
pub(crate) enum Encoder {
    Text(OutputLayout),
    Parquet(ParquetLayout),
}

/// One batch's output.
pub(crate) enum Encoded {
    Text(Vec<u8>),
    Table(RecordBatch),
    /// No good rows.
    Nothing,
}

impl Encoded {
    /// Its size, to allocate the next batch's text at once.
    pub(crate) fn size(&self) -> usize {
        match self {
            Encoded::Text(bytes) => bytes.len(),
            Encoded::Table(_) | Encoded::Nothing => 0,
        }
    }
}

/// Where encoded batches are written.
pub(crate) enum Writer<W: Write + Send> {
    Text(W),
    Parquet(Box<ParquetWriter<W>>),
}

impl Encoder {
    /// The output of rows read from `input` by `source`: in `options.output_format`, or in the
    /// input's format. Text keeps CSV's delimiter and header; Parquet keeps typed columns' types.
    pub(crate) fn new(input: DataFormat, source: &dyn RowSource, model: &Model, options: &TransformOptions) -> Self {
        let plan = source.plan();
        match input.output(options.output_format) {
            TableFormat::Parquet => {
                Encoder::Parquet(ParquetLayout::new(plan, source.typed_fields(), input == DataFormat::JsonLines, model))
            }
            TableFormat::Csv => {
                let (format, named) = match input {
                    DataFormat::Csv { .. } => (input, source.named()),
                    _ => (DataFormat::Csv { delimiter: b',', has_header: true }, true),
                };
                Encoder::Text(OutputLayout::new(format, plan, named, model))
            }
            TableFormat::JsonLines => {
                Encoder::Text(OutputLayout::new(DataFormat::JsonLines, plan, source.named(), model))
            }
        }
    }

    /// The writer of this output to `output`; `first` says whether it starts the file (and so
    /// writes CSV's header row).
    pub(crate) fn writer<W: Write + Send>(
        &self,
        mut output: W,
        first: bool,
        options: &TransformOptions,
    ) -> Result<Writer<W>, TransformError> {
        match self {
            Encoder::Text(layout) => {
                if first {
                    output.write_all(&layout.header()?)?;
                }
                Ok(Writer::Text(output))
            }
            Encoder::Parquet(layout) => Ok(Writer::Parquet(Box::new(ParquetWriter::new(
                output,
                layout.schema().clone(),
                options.row_group_rows,
            )?))),
        }
    }

    /// Encodes the good rows of `batch` with their predictions; `capacity` is a guess of the
    /// text's size.
    pub(crate) fn encode(
        &self,
        batch: &Batch,
        predictions: &[OutputValues],
        model: &Model,
        capacity: usize,
    ) -> Result<Encoded, TransformError> {
        match self {
            Encoder::Text(layout) => {
                let mut bytes = Vec::with_capacity(capacity);
                if batch.rows > 0 {
                    layout.format(batch, predictions, model, &mut bytes)?;
                }
                Ok(Encoded::Text(bytes))
            }
            Encoder::Parquet(layout) => Ok(Encoded::Table(layout.encode(batch, predictions, model)?)),
        }
    }
}

impl<W: Write + Send> Writer<W> {
    pub(crate) fn write(&mut self, encoded: &Encoded) -> Result<(), TransformError> {
        match (self, encoded) {
            (_, Encoded::Nothing) => Ok(()),
            (Writer::Text(output), Encoded::Text(bytes)) => Ok(output.write_all(bytes)?),
            (Writer::Parquet(writer), Encoded::Table(table)) if table.num_rows() > 0 => writer.write(table),
            (Writer::Parquet(_), Encoded::Table(_)) => Ok(()),
            _ => Err(TransformError::Io(std::io::Error::other("a batch went to another format's writer"))),
        }
    }

    /// Ends the output (Parquet's footer) and flushes it.
    pub(crate) fn finish(self) -> Result<(), TransformError> {
        let mut output = match self {
            Writer::Text(output) => output,
            Writer::Parquet(writer) => writer.finish()?,
        };
        Ok(output.flush()?)
    }
}
