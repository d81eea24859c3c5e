//! Predictions as Parquet: pass-through columns first, keeping their Arrow types (from a Parquet
//! input) or as strings (from text), then each output's columns, typed: labels as strings (class
//! names) or int64, probabilities and values as float32. Snappy-compressed row groups of a set
//! size, with statistics, as every reader expects.

use std::io::Write;
use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::TransformError;
use crate::batch::Batch;
use crate::columns::ColumnPlan;
use crate::model::{Element, Model, OutputKind, OutputValues};

/// The output table's columns, and how rows become them.
pub struct ParquetLayout {
    schema: SchemaRef,
    /// Pass-through fields that are JSON text (from JSON Lines): strings are unquoted.
    json_fields: bool,
}

impl ParquetLayout {
    /// `typed`: the pass-through columns' fields when the input is typed (Parquet); otherwise
    /// they are strings named as the input names them.
    pub fn new(plan: &ColumnPlan, typed: Option<&[Arc<Field>]>, json_fields: bool, model: &Model) -> Self {
        let mut fields: Vec<Arc<Field>> = match typed {
            Some(fields) => fields.to_vec(),
            None => plan.passthrough_names().map(|name| Arc::new(Field::new(name, DataType::Utf8, true))).collect(),
        };
        for spec in &model.outputs {
            let data_type = match (&spec.kind, spec.element) {
                (_, Element::String) => DataType::Utf8,
                (OutputKind::Label { classes: Some(classes) }, _) if !classes.are_integers() => DataType::Utf8,
                (OutputKind::Label { .. }, _) => DataType::Int64,
                (OutputKind::Values { .. }, _) => DataType::Float32,
            };
            // A float list is a fixed-size list; a text one (entities, JSON) a string.
            if spec.list && spec.element == Element::Float32 {
                let item = Arc::new(Field::new("item", data_type, false));
                fields.push(Arc::new(Field::new(&spec.name, DataType::FixedSizeList(item, spec.width() as i32), true)));
                continue;
            }
            fields.extend(spec.columns.iter().map(|name| Arc::new(Field::new(name, data_type.clone(), true))));
        }
        Self { schema: Arc::new(Schema::new(fields)), json_fields }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows of `batch` with their predictions, as one record batch.
    pub fn encode(
        &self,
        batch: &Batch,
        predictions: &[OutputValues],
        model: &Model,
    ) -> Result<RecordBatch, TransformError> {
        let rows = batch.rows;
        let mut columns: Vec<ArrayRef> = match &batch.columns {
            Some(typed) => typed.columns().to_vec(),
            None => {
                let n_pass = batch.passthrough.len().checked_div(rows).unwrap_or(0);
                (0..n_pass)
                    .map(|j| {
                        let cells =
                            (0..rows).map(|r| text_cell(batch.passthrough.get(r * n_pass + j), self.json_fields));
                        Arc::new(cells.collect::<StringArray>()) as ArrayRef
                    })
                    .collect()
            }
        };
        for (spec, values) in model.outputs.iter().zip(predictions) {
            let width = spec.width();
            if let (true, OutputValues::Float(values)) = (spec.list, values) {
                let item = Arc::new(Field::new("item", DataType::Float32, false));
                let flat = Float32Array::from_iter_values(values[..rows * width].iter().copied());
                let list = FixedSizeListArray::try_new(item, width as i32, Arc::new(flat), None)
                    .map_err(|e| TransformError::Columns(format!("the output {:?} cannot be built: {e}", spec.name)))?;
                columns.push(Arc::new(list));
                continue;
            }
            for c in 0..width {
                let column: ArrayRef = match values {
                    OutputValues::Float(values) => {
                        Arc::new(Float32Array::from_iter_values((0..rows).map(|r| values[r * width + c])))
                    }
                    OutputValues::Text(values) => {
                        Arc::new((0..rows).map(|r| Some(values[r * width + c].as_str())).collect::<StringArray>())
                    }
                    OutputValues::Int(values) => match &spec.kind {
                        OutputKind::Label { classes: Some(classes) } if !classes.are_integers() => Arc::new(
                            (0..rows)
                                .map(|r| {
                                    let label = values[r * width + c];
                                    Some(match classes.index_of(label) {
                                        Some(i) => std::borrow::Cow::Borrowed(classes.names[i].as_str()),
                                        None => std::borrow::Cow::Owned(label.to_string()),
                                    })
                                })
                                .collect::<StringArray>(),
                        ),
                        _ => Arc::new(Int64Array::from_iter_values((0..rows).map(|r| values[r * width + c]))),
                    },
                };
                columns.push(column);
            }
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| TransformError::Columns(format!("the output table cannot be built: {e}")))
    }
}

/// A pass-through field of a text input as a string cell: JSON strings unquoted, JSON `null`
/// as null.
fn text_cell(field: &[u8], json: bool) -> Option<String> {
    if !json {
        return Some(String::from_utf8_lossy(field).into_owned());
    }
    match serde_json::from_slice::<serde_json::Value>(field) {
        Ok(serde_json::Value::Null) => None,
        Ok(serde_json::Value::String(text)) => Some(text),
        _ => Some(String::from_utf8_lossy(field).into_owned()),
    }
}

/// Writes record batches as one Parquet file.
pub struct ParquetWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(output: W, schema: SchemaRef, row_group_rows: usize) -> Result<Self, TransformError> {
        // Dictionaries for text (labels and categories repeat), not for numbers: ids and
        // probabilities are nearly all distinct, and building a dictionary only to drop it costs
        // a hash of every value.
        let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Dictionary(..));
        let properties = schema
            .fields()
            .iter()
            .filter(|field| text(field.data_type()))
            .fold(WriterProperties::builder().set_dictionary_enabled(false), |builder, field| {
                builder.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true)
            })
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .build();
        let writer = ArrowWriter::try_new(output, schema, Some(properties)).map_err(write_error)?;
        Ok(Self { writer })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), TransformError> {
        self.writer.write(batch).map_err(write_error)
    }

    /// Writes the last row group and the footer.
    pub fn finish(self) -> Result<W, TransformError> {
        self.writer.into_inner().map_err(write_error)
    }
}

/// The writer's failures are the output's (its I/O), or a bug.
fn write_error(error: parquet::errors::ParquetError) -> TransformError {
    match error {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
            Ok(io) => TransformError::Io(*io),
            Err(other) => TransformError::Io(std::io::Error::other(other)),
        },
        other => TransformError::Io(std::io::Error::other(other)),
    }
}
