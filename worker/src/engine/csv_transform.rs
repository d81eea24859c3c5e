//! CSV in, predictions out, one pass, in bounded memory.
//!
//! Rows are read into one reused record, parsed into a mini-batch of features, run through the
//! model when the batch is full, and written out in input order. A row that cannot be used goes
//! to the errors stream with its line number and reason; the others are processed.

use std::io::{self, Read, Write};

use csv::{ByteRecord, ReaderBuilder, Writer, WriterBuilder};
use shared::report::{REPORTED_ROW_ERRORS, RowError};

use super::model::{Model, ModelError, OutputKind, OutputValues, RUN_ROW_MULTIPLE};
use super::model_config::{ColumnRef, ModelConfig};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformOptions {
    /// Rows per model run (rounded up to a multiple of 16).
    pub batch_size: usize,
    /// Above this share of bad rows the whole file fails.
    pub max_bad_row_ratio: f64,
}

impl Default for TransformOptions {
    fn default() -> Self {
        Self { batch_size: 1024, max_bad_row_ratio: 0.1 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformSummary {
    pub rows_in: u64,
    pub rows_out: u64,
    pub bad_rows: u64,
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
    #[error("the header row is not UTF-8 text; is the file a CSV file?")]
    NotText,
    #[error("the file has a header row but no data rows")]
    NoDataRows,
    #[error("the file's columns do not fit the model: {0}")]
    Columns(String),
    #[error("{} of {} rows are bad, more than the allowed {:.1}%; the first: {}", summary.bad_rows, summary.rows_in, limit * 100.0, first_error(summary))]
    TooManyBadRows { summary: TransformSummary, limit: f64 },
    #[error("the CSV file cannot be read at line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
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

/// Which input field goes where.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ColumnPlan {
    names: Vec<String>,
    features: Vec<usize>,
    passthrough: Vec<usize>,
}

impl ColumnPlan {
    fn new(header: Vec<String>, config: &ModelConfig, n_features: usize) -> Result<Self, TransformError> {
        let resolve = |col: &ColumnRef| -> Result<usize, TransformError> {
            match col {
                ColumnRef::Position(i) if *i < header.len() => Ok(*i),
                ColumnRef::Name(name) => header.iter().position(|h| h == name).ok_or_else(|| {
                    TransformError::Columns(format!(
                        "the model configuration names {col}, which the header {header:?} lacks"
                    ))
                }),
                ColumnRef::Position(_) => Err(TransformError::Columns(format!(
                    "the model configuration names {col}, but rows have {} columns",
                    header.len()
                ))),
            }
        };
        let passthrough = config.passthrough.iter().map(resolve).collect::<Result<Vec<_>, _>>()?;
        let features = match &config.features {
            Some(cols) => cols.iter().map(resolve).collect::<Result<Vec<_>, _>>()?,
            None => (0..header.len()).filter(|i| !passthrough.contains(i)).collect(),
        };
        if features.len() != n_features {
            return Err(TransformError::Columns(format!(
                "the model takes {n_features} features but {} columns are features ({}); name the feature columns in the model configuration (<model>.json)",
                features.len(),
                features.iter().map(|&i| header[i].as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Self { names: header, features, passthrough })
    }
}

/// Rows parsed and waiting for the model.
struct Batch {
    features: Vec<f32>,
    passthrough: Vec<ByteRecord>,
    rows: usize,
}

impl Batch {
    fn new(batch_size: usize, n_features: usize) -> Self {
        Self {
            features: Vec::with_capacity(batch_size * n_features),
            passthrough: vec![ByteRecord::new(); batch_size],
            rows: 0,
        }
    }

    /// Adds a row, or says why it cannot be used (the batch is unchanged then).
    fn push(&mut self, record: &ByteRecord, plan: &ColumnPlan) -> Result<(), String> {
        if record.len() != plan.names.len() {
            return Err(format!("expected {} fields, found {}", plan.names.len(), record.len()));
        }
        let start = self.features.len();
        for &i in &plan.features {
            match parse_feature(&record[i]) {
                Ok(value) => self.features.push(value),
                Err(problem) => {
                    self.features.truncate(start);
                    return Err(format!("column {:?} {problem}", plan.names[i]));
                }
            }
        }
        let kept = &mut self.passthrough[self.rows];
        kept.clear();
        for &i in &plan.passthrough {
            kept.push_field(&record[i]);
        }
        self.rows += 1;
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.rows == self.passthrough.len()
    }

    fn clear(&mut self) {
        self.features.clear();
        self.rows = 0;
    }
}

fn parse_feature(field: &[u8]) -> Result<f32, String> {
    let text = std::str::from_utf8(field).map_err(|_| "is not UTF-8 text".to_owned())?.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(format!("is {text:?}, which is not allowed as a feature")),
        Err(_) => Err(format!("is {text:?}, not a number")),
    }
}

/// Writes prediction rows: the pass-through fields, then each output's columns.
struct PredictionWriter<W: Write> {
    csv: Writer<W>,
    number: String,
}

impl<W: Write> PredictionWriter<W> {
    fn write_batch(&mut self, batch: &Batch, model: &Model) -> Result<(), TransformError> {
        let outputs = model.predict(&batch.features, batch.rows)?;
        for row in 0..batch.rows {
            for field in &batch.passthrough[row] {
                self.csv.write_field(field)?;
            }
            for (spec, values) in model.outputs.iter().zip(&outputs) {
                let width = spec.width();
                for col in row * width..(row + 1) * width {
                    match (values, &spec.kind) {
                        (OutputValues::Int(v), OutputKind::Label { classes: Some(names) }) => {
                            match usize::try_from(v[col]).ok().and_then(|i| names.get(i)) {
                                Some(name) => self.csv.write_field(name)?,
                                None => self.csv.write_field(itoa::Buffer::new().format(v[col]))?,
                            }
                        }
                        (OutputValues::Int(v), _) => self.csv.write_field(itoa::Buffer::new().format(v[col]))?,
                        (OutputValues::Text(v), _) => self.csv.write_field(&v[col])?,
                        (OutputValues::Float(v), _) => {
                            self.number.clear();
                            self.number.push_str(ryu::Buffer::new().format(v[col]));
                            self.csv.write_field(&self.number)?;
                        }
                    }
                }
            }
            self.csv.write_record(None::<&[u8]>)?;
        }
        Ok(())
    }
}

/// Bad rows: `line,reason,row`, the header written with the first one.
struct ErrorWriter<E: Write> {
    csv: Writer<E>,
    first: Vec<RowError>,
    count: u64,
}

impl<E: Write> ErrorWriter<E> {
    fn write(&mut self, line: u64, reason: String, record: &ByteRecord) -> Result<(), TransformError> {
        if self.count == 0 {
            self.csv.write_record(["line", "reason", "row"])?;
        }
        self.count += 1;
        // The row as it was, re-quoted: one field of the errors file.
        let mut raw = WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
        raw.write_byte_record(record)?;
        let raw = raw.into_inner().map_err(|e| io::Error::other(e.to_string()))?;
        let row = String::from_utf8_lossy(&raw);
        self.csv.write_record([itoa::Buffer::new().format(line), reason.as_str(), row.trim_end_matches('\n')])?;
        if self.first.len() < REPORTED_ROW_ERRORS {
            self.first.push(RowError { line, reason });
        }
        Ok(())
    }
}

/// Runs `model` over the CSV `input` (with a header row), writing predictions to `output` and
/// rejected rows to `errors`. Nothing is written to `errors` when every row is good.
pub fn transform_csv(
    input: impl Read,
    output: impl Write,
    errors: impl Write,
    model: &Model,
    config: &ModelConfig,
    options: &TransformOptions,
) -> Result<TransformSummary, TransformError> {
    let mut reader = ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut record = ByteRecord::new();
    if !reader.read_byte_record(&mut record)? {
        return Err(TransformError::Empty);
    }
    let header = header_names(&record)?;
    let plan = ColumnPlan::new(header, config, model.n_features)?;

    let mut predictions = PredictionWriter { csv: WriterBuilder::new().from_writer(output), number: String::new() };
    let header_out: Vec<&str> =
        plan.passthrough.iter().map(|&i| plan.names[i].as_str()).chain(model.column_names()).collect();
    predictions.csv.write_record(&header_out)?;
    let mut errors = ErrorWriter { csv: WriterBuilder::new().from_writer(errors), first: Vec::new(), count: 0 };

    let batch_size = options.batch_size.max(1).next_multiple_of(RUN_ROW_MULTIPLE);
    let mut batch = Batch::new(batch_size, model.n_features);
    let mut summary = TransformSummary::default();
    while reader.read_byte_record(&mut record)? {
        summary.rows_in += 1;
        let line = record.position().map_or(summary.rows_in + 1, csv::Position::line);
        if let Err(reason) = batch.push(&record, &plan) {
            errors.write(line, reason, &record)?;
            continue;
        }
        if batch.is_full() {
            predictions.write_batch(&batch, model)?;
            summary.rows_out += batch.rows as u64;
            batch.clear();
        }
    }
    if batch.rows > 0 {
        predictions.write_batch(&batch, model)?;
        summary.rows_out += batch.rows as u64;
    }
    predictions.csv.flush()?;
    errors.csv.flush()?;

    summary.bad_rows = errors.count;
    summary.first_errors = errors.first;
    if summary.rows_in == 0 {
        return Err(TransformError::NoDataRows);
    }
    if summary.bad_rows as f64 > options.max_bad_row_ratio * summary.rows_in as f64 {
        summary.rows_out = 0;
        return Err(TransformError::TooManyBadRows { summary, limit: options.max_bad_row_ratio });
    }
    Ok(summary)
}

fn first_error(summary: &TransformSummary) -> String {
    summary.first_errors.first().map(|e| format!("line {}: {}", e.line, e.reason)).unwrap_or_default()
}

fn header_names(record: &ByteRecord) -> Result<Vec<String>, TransformError> {
    record
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let field = if i == 0 { field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field) } else { field };
            match std::str::from_utf8(field) {
                Ok(name) if !name.contains('\0') => Ok(name.trim().to_owned()),
                _ => Err(TransformError::NotText),
            }
        })
        .collect()
}
