//! Rows from a Parquet file: the footer first, then one row group at a time, fetching only the
//! column chunks the model and the pass-through columns need. Features come by column name as
//! for CSV, from numeric and boolean columns or from a list column holding a whole feature
//! vector; a typed model's string and integer inputs read their columns directly.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;

use super::RangeRead;
use super::ranges::File;
use crate::TransformError;
use crate::batch::{BadRow, Batch};
use crate::columns::ColumnPlan;
use crate::formats::source::RowSource;
use crate::model::{ColumnType, Model};
use crate::shard::Unsplittable;

/// What a feature column gives the model.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// One value of a model input's kind.
    One(ColumnType),
    /// A whole feature vector (a list column): `width` float32 values.
    Vector { width: usize },
}

struct FeatureColumn {
    /// Its place among the columns read.
    position: usize,
    want: Want,
}

pub struct ParquetSource {
    file: File,
    metadata: ArrowReaderMetadata,
    plan: ColumnPlan,
    features: Vec<FeatureColumn>,
    /// The pass-through columns' places among the columns read, and their fields.
    passthrough: Vec<usize>,
    passthrough_schema: SchemaRef,
    /// The top-level columns read, in file order.
    roots: Vec<usize>,
    row_groups: Vec<usize>,
    next_row_group: usize,
    reader: Option<ParquetRecordBatchReader>,
    /// Rows read before the current batch (rows are numbered from 1 in the errors file).
    rows_before: u64,
}

impl ParquetSource {
    /// Reads the footer of `file` and resolves its columns against `model`.
    pub fn open(file: Arc<dyn RangeRead>, model: &Model) -> Result<Self, TransformError> {
        let file = File::new(file);
        let size = file.size();
        if size < 12 {
            return Err(TransformError::Parquet(format!("it is {size} bytes long, too short to be Parquet")));
        }
        let magic = file.read(size - 4..size).map_err(|e| read_error(&file, e))?;
        if &magic[..] != b"PAR1" {
            return Err(TransformError::Parquet(
                "it does not end with Parquet's magic bytes \"PAR1\": it is not a Parquet file, or it is truncated"
                    .into(),
            ));
        }
        let unreadable_footer =
            |e| read_error(&file, format!("its footer cannot be read, so the file is damaged or incomplete ({e})"));
        let metadata = ParquetMetaDataReader::new()
            .with_prefetch_hint(Some(64 * 1024))
            .parse_and_finish(&file)
            .map_err(unreadable_footer)?;
        let metadata =
            ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new()).map_err(unreadable_footer)?;
        let schema = Arc::clone(metadata.schema());
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        let plan = ColumnPlan::resolve(names, true, model)?;

        let mut roots: Vec<usize> = plan.features.iter().chain(&plan.passthrough).copied().collect();
        roots.sort_unstable();
        roots.dedup();
        let position = |column: usize| roots.binary_search(&column).expect("every column read is a root");
        let wants = plan
            .features
            .iter()
            .enumerate()
            .map(|(k, &column)| want(schema.field(column), plan.kinds.get(k).copied(), model))
            .collect::<Result<Vec<_>, _>>()?;
        let wants = vector_widths(&plan, wants, model)?;
        let width = wants.iter().map(|w| if let Want::Vector { width } = w { *width } else { 1 }).sum();
        plan.check_width(width, model)?;
        let features = plan
            .features
            .iter()
            .zip(wants)
            .map(|(&column, want)| FeatureColumn { position: position(column), want })
            .collect();
        let passthrough = plan.passthrough.iter().map(|&column| position(column)).collect();
        let passthrough_schema = Arc::new(Schema::new(
            plan.passthrough.iter().map(|&c| Arc::clone(&schema.fields()[c])).collect::<Vec<_>>(),
        ));
        let row_groups = (0..metadata.metadata().num_row_groups()).collect();
        Ok(Self {
            file,
            metadata,
            plan,
            features,
            passthrough,
            passthrough_schema,
            roots,
            row_groups,
            next_row_group: 0,
            reader: None,
            rows_before: 0,
        })
    }

    /// Keeps only the row groups whose first byte is in `bytes`, a shard's range: each row
    /// group of the file so belongs to one shard, as Spark splits Parquet. A file of fewer than
    /// two row groups cannot be split.
    pub fn keep_row_groups_starting_in(&mut self, bytes: Range<u64>) -> Result<(), TransformError> {
        let metadata = self.metadata.metadata();
        if metadata.num_row_groups() < 2 {
            return Err(TransformError::Io(Unsplittable::OneRowGroup.into_io()));
        }
        let starts_in = |index: &usize| {
            let columns = metadata.row_group(*index).columns();
            columns.iter().map(|chunk| chunk.byte_range().0).min().is_some_and(|first| bytes.contains(&first))
        };
        self.row_groups.retain(starts_in);
        Ok(())
    }

    /// The pass-through columns' fields: the output keeps their types.
    pub fn passthrough_fields(&self) -> &[Arc<Field>] {
        self.passthrough_schema.fields()
    }

    /// Opens the next row group to read, its column chunks fetched; `None` after the last.
    fn open_row_group(&mut self, batch_size: usize) -> Result<Option<ParquetRecordBatchReader>, TransformError> {
        let Some(&index) = self.row_groups.get(self.next_row_group) else { return Ok(None) };
        self.next_row_group += 1;
        let parquet_schema = self.metadata.metadata().file_metadata().schema_descr();
        let wanted: Vec<bool> = (0..parquet_schema.num_columns())
            .map(|leaf| self.roots.binary_search(&parquet_schema.get_column_root_idx(leaf)).is_ok())
            .collect();
        let unreadable = |e| read_error(&self.file, format!("row group {index} cannot be read ({e})"));
        let fetched =
            self.file.fetch(self.metadata.metadata().row_group(index), |leaf| wanted[leaf]).map_err(unreadable)?;
        let projection = ProjectionMask::roots(parquet_schema, self.roots.iter().copied());
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(fetched, self.metadata.clone())
            .with_projection(projection)
            .with_row_groups(vec![index])
            .with_batch_size(batch_size)
            .build()
            .map_err(unreadable)?;
        Ok(Some(reader))
    }

    /// Adds the rows of `read` (the projected columns) to `batch`.
    fn take(&mut self, read: &RecordBatch, batch: &mut Batch) -> Result<(), TransformError> {
        let feeds = self
            .features
            .iter()
            .map(|column| Feed::new(read.column(column.position), column.want))
            .collect::<Result<Vec<_>, ArrowError>>()
            .map_err(|e| TransformError::Parquet(e.to_string()))?;
        let rows = read.num_rows();
        if transpose_floats(&feeds, rows, batch) {
            // Every row good: the columns went straight into the rows.
            batch.rows_read += rows as u64;
            batch.rows += rows;
            self.rows_before += rows as u64;
            batch.columns = Some(self.passthrough_columns(read, None)?);
            return Ok(());
        }
        let mut good = Vec::with_capacity(rows);
        for row in 0..rows {
            batch.rows_read += 1;
            let mark = batch.mark();
            let pushed = feeds.iter().zip(&self.plan.features).try_for_each(|(feed, &column)| {
                feed.push(row, self.plan.missing, batch)
                    .map_err(|problem| format!("column {:?} {problem}", self.plan.names[column]))
            });
            good.push(pushed.is_ok());
            match pushed {
                Ok(()) => batch.rows += 1,
                Err(reason) => {
                    batch.undo(mark);
                    let line = self.rows_before + row as u64 + 1;
                    batch.bad.push(BadRow { line, reason, raw: row_text(read, row) });
                }
            }
        }
        self.rows_before += rows as u64;
        let good = (good.len() > batch.rows).then(|| BooleanArray::from(good));
        batch.columns = Some(self.passthrough_columns(read, good.as_ref())?);
        Ok(())
    }

    /// The pass-through columns of `read`, of the `good` rows only when some were bad.
    fn passthrough_columns(
        &self,
        read: &RecordBatch,
        good: Option<&BooleanArray>,
    ) -> Result<RecordBatch, TransformError> {
        let columns: Vec<ArrayRef> = self.passthrough.iter().map(|&p| Arc::clone(read.column(p))).collect();
        let passthrough = RecordBatch::try_new_with_options(
            Arc::clone(&self.passthrough_schema),
            columns,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(read.num_rows())),
        )
        .map_err(|e| TransformError::Parquet(e.to_string()))?;
        match good {
            Some(good) => arrow_select::filter::filter_record_batch(&passthrough, good)
                .map_err(|e| TransformError::Parquet(e.to_string())),
            None => Ok(passthrough),
        }
    }
}

impl RowSource for ParquetSource {
    fn plan(&self) -> &ColumnPlan {
        &self.plan
    }

    fn named(&self) -> bool {
        true
    }

    fn typed_fields(&self) -> Option<&[Arc<Field>]> {
        Some(self.passthrough_fields())
    }

    /// Reads one record batch of up to `capacity` rows.
    fn fill(&mut self, batch: &mut Batch, capacity: usize) -> Result<bool, TransformError> {
        loop {
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => match self.open_row_group(capacity)? {
                    Some(reader) => self.reader.insert(reader),
                    None => return Ok(false),
                },
            };
            match reader.next() {
                Some(Ok(read)) => {
                    self.take(&read, batch)?;
                    return Ok(true);
                }
                Some(Err(error)) => {
                    let row_group = self.row_groups[self.next_row_group - 1];
                    return Err(read_error(&self.file, format!("row group {row_group} cannot be read ({error})")));
                }
                None => self.reader = None,
            }
        }
    }
}

/// A failure reading the file: the storage's, when a read failed, or else the file's.
fn read_error(file: &File, error: impl std::fmt::Display) -> TransformError {
    match file.take_failure() {
        Some(io) => TransformError::Io(io),
        None => TransformError::Parquet(error.to_string()),
    }
}

/// What column `field` gives a model input of `kind` (`None`: a plain float feature), or why
/// it cannot.
fn want(field: &Field, kind: Option<ColumnType>, model: &Model) -> Result<Want, TransformError> {
    let data_type = field.data_type();
    let numeric = |t: &DataType| t.is_numeric() || matches!(t, DataType::Boolean);
    let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let fits = match kind.unwrap_or(ColumnType::Float) {
        ColumnType::Float | ColumnType::Double => numeric(data_type),
        ColumnType::Int64 => data_type.is_integer() || matches!(data_type, DataType::Boolean),
        ColumnType::Text => match data_type {
            DataType::Dictionary(_, values) => text(values),
            other => text(other),
        },
    };
    if fits {
        return Ok(Want::One(kind.unwrap_or(ColumnType::Float)));
    }
    match data_type {
        DataType::FixedSizeList(item, width) if kind.is_none() && numeric(item.data_type()) => {
            Ok(Want::Vector { width: *width as usize })
        }
        // Its width is the features the other columns leave: see `vector_widths`.
        DataType::List(item) | DataType::LargeList(item) if kind.is_none() && numeric(item.data_type()) => {
            Ok(Want::Vector { width: 0 })
        }
        _ => {
            let takes = match kind {
                Some(kind) => format!("the model's input {:?} takes {}", field.name(), kind.name()),
                None if model.column_inputs.is_empty() => {
                    "the model takes numbers (or a list of them) as features".to_owned()
                }
                None => "the model takes typed inputs".to_owned(),
            };
            Err(TransformError::Columns(format!("column {:?} is of type {data_type}; {takes}", field.name())))
        }
    }
}

/// Gives a variable-length list column the width the other feature columns leave.
fn vector_widths(plan: &ColumnPlan, mut wants: Vec<Want>, model: &Model) -> Result<Vec<Want>, TransformError> {
    let open: Vec<usize> = (0..wants.len()).filter(|&k| matches!(wants[k], Want::Vector { width: 0 })).collect();
    let fixed: usize = wants.iter().map(|w| if let Want::Vector { width } = w { *width } else { 1 }).sum();
    match open[..] {
        [] => {}
        [k] if model.n_features > fixed => wants[k] = Want::Vector { width: model.n_features - fixed },
        _ => {
            let names: Vec<&str> = open.iter().map(|&k| plan.names[plan.features[k]].as_str()).collect();
            return Err(TransformError::Columns(format!(
                "the list columns {names:?} leave no room to tell their lengths: the model takes {} features; name the feature columns in the model configuration (<model>.json)",
                model.n_features
            )));
        }
    }
    Ok(wants)
}

/// One batch's feature column, cast to what the model takes.
enum Feed {
    Floats(Float32Array),
    Doubles(Float64Array),
    Integers(Int64Array),
    Text(StringArray),
    Vectors { list: ArrayRef, values: Float32Array, width: usize },
}

impl Feed {
    fn new(column: &ArrayRef, want: Want) -> Result<Self, ArrowError> {
        let cast = |to: &DataType| arrow_cast::cast(column.as_ref(), to);
        Ok(match want {
            Want::One(ColumnType::Float) => {
                Feed::Floats(cast(&DataType::Float32)?.as_primitive::<Float32Type>().clone())
            }
            Want::One(ColumnType::Double) => {
                Feed::Doubles(cast(&DataType::Float64)?.as_primitive::<Float64Type>().clone())
            }
            Want::One(ColumnType::Int64) => Feed::Integers(cast(&DataType::Int64)?.as_primitive::<Int64Type>().clone()),
            Want::One(ColumnType::Text) => Feed::Text(cast(&DataType::Utf8)?.as_string::<i32>().clone()),
            Want::Vector { width } => {
                let values = match column.data_type() {
                    DataType::List(_) => column.as_list::<i32>().values(),
                    DataType::LargeList(_) => column.as_list::<i64>().values(),
                    _ => column.as_fixed_size_list().values(),
                };
                let values =
                    arrow_cast::cast(values.as_ref(), &DataType::Float32)?.as_primitive::<Float32Type>().clone();
                Feed::Vectors { list: Arc::clone(column), values, width }
            }
        })
    }

    /// Pushes row `row`'s value(s), or says what is wrong with them.
    fn push(&self, row: usize, missing: bool, batch: &mut Batch) -> Result<(), String> {
        match self {
            Feed::Floats(values) => {
                let value = if values.is_null(row) { None } else { Some(values.value(row)) };
                batch.features.push(feature(value, missing)?);
            }
            Feed::Doubles(values) => {
                let value = match values.is_null(row) {
                    true if missing => f64::NAN,
                    true => return Err("is null".into()),
                    false => values.value(row),
                };
                if !(value.is_finite() || missing && value.is_nan()) {
                    return Err(format!("is {value}, which is not allowed as a feature"));
                }
                batch.doubles.push(value);
            }
            Feed::Integers(values) if values.is_null(row) => return Err("is null".into()),
            Feed::Integers(values) => batch.integers.push(values.value(row)),
            Feed::Text(values) if values.is_null(row) && !missing => return Err("is null".into()),
            Feed::Text(values) => batch.text.push(if values.is_null(row) { b"" } else { values.value(row).as_bytes() }),
            Feed::Vectors { list, values, width } => {
                let (start, end) = match list.data_type() {
                    _ if list.is_null(row) && missing => {
                        batch.features.extend(std::iter::repeat_n(f32::NAN, *width));
                        return Ok(());
                    }
                    _ if list.is_null(row) => return Err("is null".into()),
                    DataType::List(_) => {
                        let offsets = list.as_list::<i32>().value_offsets();
                        (offsets[row] as usize, offsets[row + 1] as usize)
                    }
                    DataType::LargeList(_) => {
                        let offsets = list.as_list::<i64>().value_offsets();
                        (offsets[row] as usize, offsets[row + 1] as usize)
                    }
                    _ => {
                        let list = list.as_fixed_size_list();
                        let start = list.value_offset_at(row);
                        (start, start + list.value_length() as usize)
                    }
                };
                if end - start != *width {
                    return Err(format!("holds {} values; the model takes {width}", end - start));
                }
                for i in start..end {
                    let value = if values.is_null(i) { None } else { Some(values.value(i)) };
                    batch.features.push(feature(value, missing).map_err(|e| format!("item {} {e}", i - start))?);
                }
            }
        }
        Ok(())
    }
}

/// The usual case, fast: float features with no nulls and only finite values, written column
/// by column into the rows. `false` (and nothing written) when any column is of another kind,
/// has a null, or holds a value that is not finite: the rows are then read one by one.
fn transpose_floats(feeds: &[Feed], rows: usize, batch: &mut Batch) -> bool {
    let columns: Option<Vec<&[f32]>> = feeds
        .iter()
        .map(|feed| match feed {
            Feed::Floats(values) if values.null_count() == 0 => Some(&values.values()[..]),
            _ => None,
        })
        .collect();
    let Some(columns) = columns else { return false };
    if columns.iter().any(|column| column.iter().any(|v| !v.is_finite())) {
        return false;
    }
    let n = columns.len();
    let start = batch.features.len();
    batch.features.resize(start + rows * n, 0.0);
    let rows_out = &mut batch.features[start..];
    for (j, column) in columns.iter().enumerate() {
        for (row, &value) in rows_out.chunks_exact_mut(n).zip(column.iter()) {
            row[j] = value;
        }
    }
    true
}

/// A float feature: null (and NaN) is a missing value when the model takes them.
fn feature(value: Option<f32>, missing: bool) -> Result<f32, String> {
    match value {
        Some(v) if v.is_finite() => Ok(v),
        None | Some(_) if missing && value.is_none_or(f32::is_nan) => Ok(f32::NAN),
        None => Err("is null".into()),
        Some(v) => Err(format!("is {v}, which is not allowed as a feature")),
    }
}

/// A bad row as the errors file shows it: its columns as a JSON object of their printed values.
fn row_text(read: &RecordBatch, row: usize) -> String {
    let options = FormatOptions::default();
    let object: serde_json::Map<String, serde_json::Value> = read
        .schema_ref()
        .fields()
        .iter()
        .zip(read.columns())
        .map(|(field, column)| {
            let value = match ArrayFormatter::try_new(column.as_ref(), &options) {
                _ if column.is_null(row) => serde_json::Value::Null,
                Ok(formatter) => serde_json::Value::String(formatter.value(row).to_string()),
                Err(_) => serde_json::Value::String(format!("({})", column.data_type())),
            };
            (field.name().clone(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

impl From<ParquetError> for TransformError {
    fn from(error: ParquetError) -> Self {
        TransformError::Parquet(error.to_string())
    }
}
