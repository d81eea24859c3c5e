//! Reading rows into mini-batches: CSV (header or not, any delimiter) and JSON Lines.

use std::collections::VecDeque;
use std::io::{BufRead, Read};

use csv::{ByteRecord, ReaderBuilder, WriterBuilder};
use serde_json::Value;

use super::TransformError;
use super::batch::{BadRow, Batch};
use super::columns::{ColumnPlan, positional_names};
use super::model::{ColumnType, Model};

/// Where rows come from.
pub trait RowSource: Send {
    /// The resolved columns.
    fn plan(&self) -> &ColumnPlan;
    /// Whether the input named its columns (a header row, or JSON field names).
    fn named(&self) -> bool;
    /// The pass-through columns' types, when the input has types (Parquet); text has none.
    fn typed_fields(&self) -> Option<&[std::sync::Arc<arrow_schema::Field>]> {
        None
    }
    /// Reads rows into `batch` until it holds `capacity` good rows or the input ends; returns
    /// whether more input may follow.
    fn fill(&mut self, batch: &mut Batch, capacity: usize) -> Result<bool, TransformError>;
}

/// A feature value: a finite number. With `missing` (the model handles missing values) an empty field or `NaN`
/// is NaN, as pandas reads it; without, it is a bad row.
fn parse_feature(field: &[u8], missing: bool) -> Result<f32, String> {
    // The usual case, a short plain decimal, then any number fast_float2 reads from the bytes.
    if let Some(value) = parse_short_decimal(field) {
        return Ok(value);
    }
    if let Ok(value) = fast_float2::parse::<f32, _>(field)
        && value.is_finite()
    {
        return Ok(value);
    }
    // Spaces around it, or not a finite number: std's parser, and a reason for the errors file.
    let text = std::str::from_utf8(field).map_err(|_| "is not UTF-8 text".to_owned())?.trim();
    if missing && (text.is_empty() || text.eq_ignore_ascii_case("nan")) {
        return Ok(f32::NAN);
    }
    if text.is_empty() {
        return Err("is empty".into());
    }
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(format!("is {text:?}, which is not allowed as a feature")),
        Err(_) => Err(format!("is {text:?}, not a number")),
    }
}

/// A JSON value (absent: `None`) of a column of `kind`. A number read as text, or text read
/// as a number, goes through its text, as in CSV; with `missing`, absent and `null` are missing.
pub fn push_json_value(
    kind: ColumnType,
    value: Option<&Value>,
    missing: bool,
    batch: &mut Batch,
) -> Result<(), String> {
    match (value, kind) {
        (None | Some(Value::Null), _) if missing => push_typed(kind, b"", true, batch),
        (None, _) => Err("is missing".to_owned()),
        (Some(Value::Number(n)), ColumnType::Float) => match n.as_f64().map(|v| v as f32) {
            Some(v) if v.is_finite() => {
                batch.features.push(v);
                Ok(())
            }
            _ => Err(format!("is {n}, which is not allowed as a feature")),
        },
        (Some(Value::Number(n)), kind) => push_typed(kind, n.to_string().as_bytes(), false, batch),
        (Some(Value::String(s)), kind) => push_typed(kind, s.as_bytes(), missing, batch),
        (Some(other), ColumnType::Text) => Err(format!("is {other}, not text")),
        (Some(other), _) => Err(format!("is {other}, not a number")),
    }
}

/// A value of a column input that is not float32: float64, int64 or text.
pub fn push_typed(kind: ColumnType, field: &[u8], missing: bool, batch: &mut Batch) -> Result<(), String> {
    let text = std::str::from_utf8(field).map_err(|_| "is not UTF-8 text".to_owned())?;
    match kind {
        ColumnType::Text => batch.text.push(field),
        ColumnType::Float => batch.features.push(parse_feature(field, missing)?),
        ColumnType::Double => {
            let text = text.trim();
            let value = match text.parse::<f64>() {
                _ if missing && (text.is_empty() || text.eq_ignore_ascii_case("nan")) => f64::NAN,
                Ok(value) if value.is_finite() => value,
                Ok(_) => return Err(format!("is {text:?}, which is not allowed as a feature")),
                Err(_) if text.is_empty() => return Err("is empty".into()),
                Err(_) => return Err(format!("is {text:?}, not a number")),
            };
            batch.doubles.push(value);
        }
        ColumnType::Int64 => {
            let text = text.trim();
            let value = match text.parse::<i64>() {
                Ok(value) => value,
                // A whole number written as a float (pandas writes integer columns with NaN so).
                Err(_) => match text.parse::<f64>() {
                    Ok(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => v as i64,
                    _ if text.is_empty() => return Err("is empty".into()),
                    _ => return Err(format!("is {text:?}, not a whole number")),
                },
            };
            batch.integers.push(value);
        }
    }
    Ok(())
}

/// Powers of ten that are exact in f32.
const POWERS_OF_TEN: [f32; 8] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];

/// A plain decimal of at most 7 digits (`5.1`, `-0.25`, `42`, `.5`), or `None` for anything
/// else. Its digits as an integer and the power of ten to divide by are both exact in f32, so
/// the one division rounds correctly (Clinger's fast path): the same value as any correct parser.
fn parse_short_decimal(field: &[u8]) -> Option<f32> {
    let (negative, digits) = match field {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, field),
    };
    let (mut mantissa, mut count, mut point) = (0u32, 0usize, None);
    for &byte in digits {
        match byte {
            b'0'..=b'9' if count < POWERS_OF_TEN.len() - 1 => {
                mantissa = mantissa * 10 + u32::from(byte - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(count),
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let value = mantissa as f32 / POWERS_OF_TEN[count - point.unwrap_or(count)];
    Some(if negative { -value } else { value })
}

pub struct CsvSource<R: Read> {
    reader: csv::Reader<LineIndex<R>>,
    record: ByteRecord,
    /// Without a header, the first row was read to count the columns and is still to be used.
    first_row: Option<ByteRecord>,
    plan: ColumnPlan,
    named: bool,
    delimiter: u8,
}

impl<R: Read + Send> CsvSource<R> {
    pub fn open(input: R, delimiter: u8, has_header: bool, model: &Model) -> Result<Self, TransformError> {
        let mut reader = csv_reader(LineIndex::new(input), delimiter);
        let mut first = ByteRecord::new();
        if !reader.read_byte_record(&mut first)? {
            return Err(TransformError::Empty);
        }
        let plan = csv_plan(&first, has_header, model)?;
        let first_row = (!has_header).then_some(first);
        Ok(Self { reader, record: ByteRecord::new(), first_row, plan, named: has_header, delimiter })
    }

    /// The rows of a later shard: the columns come from the file's first row, `first` (its
    /// header, or a row that counts the columns and is the first shard's to read).
    pub fn open_after(
        first: &[u8],
        input: R,
        delimiter: u8,
        has_header: bool,
        model: &Model,
    ) -> Result<Self, TransformError> {
        let mut record = ByteRecord::new();
        if !csv_reader(first, delimiter).read_byte_record(&mut record)? {
            return Err(TransformError::Empty);
        }
        let plan = csv_plan(&record, has_header, model)?;
        let reader = csv_reader(LineIndex::new(input), delimiter);
        Ok(Self { reader, record: ByteRecord::new(), first_row: None, plan, named: has_header, delimiter })
    }
}

fn csv_reader<R: Read>(input: R, delimiter: u8) -> csv::Reader<R> {
    ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(input)
}

/// The columns, from the file's first record: its header, or a row that counts them.
fn csv_plan(first: &ByteRecord, has_header: bool, model: &Model) -> Result<ColumnPlan, TransformError> {
    let names = if has_header { header_names(first)? } else { positional_names(first.len()) };
    ColumnPlan::new(names, has_header, model)
}

/// Tells the line a CSV record starts on, as a person counts lines. The csv crate's own count
/// is one short after a CRLF line end: a record ends at the `\r`, and the next one starts at the
/// `\n`, before it is counted. This reader sits under the csv reader and notes where the line
/// breaks are in what it has read and not yet been asked about (a buffer's worth at most).
struct LineIndex<R> {
    inner: R,
    /// Bytes passed on so far.
    read: u64,
    /// The offsets of the line breaks read and not yet counted.
    breaks: VecDeque<u64>,
    /// The line breaks before the last offset asked about.
    counted: u64,
}

impl<R> LineIndex<R> {
    fn new(inner: R) -> Self {
        Self { inner, read: 0, breaks: VecDeque::new(), counted: 0 }
    }

    /// The line of the record starting at `byte` (asked in increasing order): 1 plus the line
    /// breaks at or before it, so that a record starting at the `\n` of a CRLF, or at blank
    /// lines the csv reader passes over, is on the line after them.
    fn line_at(&mut self, byte: u64) -> u64 {
        while self.breaks.front().is_some_and(|&at| at <= byte) {
            self.breaks.pop_front();
            self.counted += 1;
        }
        self.counted + 1
    }
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let start = self.read;
        self.breaks.extend(buf[..n].iter().enumerate().filter(|&(_, &b)| b == b'\n').map(|(i, _)| start + i as u64));
        self.read += n as u64;
        Ok(n)
    }
}

/// Adds a CSV row to the batch, or records why it cannot be used.
fn take_csv_row<R>(plan: &ColumnPlan, delimiter: u8, lines: &mut LineIndex<R>, record: &ByteRecord, batch: &mut Batch) {
    batch.rows_read += 1;
    if let Err(reason) = push_csv_row(plan, record, batch) {
        let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
        batch.bad.push(BadRow { line, reason, raw: raw_csv_row(delimiter, record) });
    }
}

fn push_csv_row(plan: &ColumnPlan, record: &ByteRecord, batch: &mut Batch) -> Result<(), String> {
    if record.len() != plan.names.len() {
        return Err(format!("expected {} fields, found {}", plan.names.len(), record.len()));
    }
    let mark = batch.mark();
    for (k, &i) in plan.features.iter().enumerate() {
        let pushed = match plan.kinds.get(k) {
            None | Some(ColumnType::Float) => parse_feature(&record[i], plan.missing).map(|v| batch.features.push(v)),
            Some(&kind) => push_typed(kind, &record[i], plan.missing, batch),
        };
        if let Err(problem) = pushed {
            batch.undo(mark);
            return Err(format!("column {:?} {problem}", plan.names[i]));
        }
    }
    for &i in &plan.passthrough {
        batch.passthrough.push(&record[i]);
    }
    batch.rows += 1;
    Ok(())
}

/// The row as it was, re-quoted, for the errors file.
fn raw_csv_row(delimiter: u8, record: &ByteRecord) -> String {
    let mut raw =
        WriterBuilder::new().delimiter(delimiter).terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    let _ = raw.write_byte_record(record);
    let bytes = raw.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).trim_end_matches('\n').to_owned()
}

impl<R: Read + Send> RowSource for CsvSource<R> {
    fn plan(&self) -> &ColumnPlan {
        &self.plan
    }

    fn named(&self) -> bool {
        self.named
    }

    fn fill(&mut self, batch: &mut Batch, capacity: usize) -> Result<bool, TransformError> {
        if let Some(first) = self.first_row.take() {
            take_csv_row(&self.plan, self.delimiter, self.reader.get_mut(), &first, batch);
        }
        let mut more = true;
        while more && batch.rows < capacity {
            more = self.reader.read_byte_record(&mut self.record)?;
            if more {
                take_csv_row(&self.plan, self.delimiter, self.reader.get_mut(), &self.record, batch);
            }
        }
        // Forget the line breaks before the next record, so that they stay a batch's worth.
        let next = self.reader.position().byte();
        self.reader.get_mut().line_at(next);
        Ok(more)
    }
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

/// JSON Lines: every line an object (features by field name) or every line an array (by
/// position), as the first line shows.
pub struct JsonLinesSource<R: BufRead> {
    input: R,
    line: Vec<u8>,
    line_number: u64,
    first_row: Option<(u64, Value, Vec<u8>)>,
    objects: bool,
    plan: ColumnPlan,
}

impl<R: BufRead + Send> JsonLinesSource<R> {
    pub fn open(mut input: R, model: &Model) -> Result<Self, TransformError> {
        let mut line = Vec::new();
        let mut line_number = 0;
        let (value, text) = loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                return Err(TransformError::Empty);
            }
            line_number += 1;
            let text = trim_line(&line);
            if !text.iter().all(u8::is_ascii_whitespace) {
                break (first_value(text, line_number)?, text.to_vec());
            }
        };
        let mut source = Self::with_first(input, &value, model)?;
        (source.line_number, source.first_row) = (line_number, Some((line_number, value, text)));
        Ok(source)
    }

    /// The rows of a later shard: the file's first row, `first`, says whether lines are objects
    /// or arrays, and names the columns.
    pub fn open_after(first: &[u8], input: R, model: &Model) -> Result<Self, TransformError> {
        Self::with_first(input, &first_value(trim_line(first), 1)?, model)
    }

    fn with_first(input: R, first: &Value, model: &Model) -> Result<Self, TransformError> {
        let (names, objects) = match first {
            Value::Object(map) => (map.keys().cloned().collect(), true),
            Value::Array(items) => (positional_names(items.len()), false),
            _ => unreachable!("first_value takes objects and arrays only"),
        };
        let plan = ColumnPlan::new(names, objects, model)?;
        Ok(Self { input, line: Vec::new(), line_number: 0, first_row: None, objects, plan })
    }

    fn field<'v>(&self, value: &'v Value, column: usize) -> Option<&'v Value> {
        match value {
            Value::Object(map) if self.objects => map.get(&self.plan.names[column]),
            Value::Array(items) if !self.objects => items.get(column),
            _ => None,
        }
    }

    fn push(&self, value: &Value, batch: &mut Batch) -> Result<(), String> {
        match value {
            Value::Object(_) if self.objects => {}
            Value::Array(items) if !self.objects && items.len() == self.plan.names.len() => {}
            Value::Array(items) if !self.objects => {
                return Err(format!("expected {} values, found {}", self.plan.names.len(), items.len()));
            }
            _ => return Err(format!("not a JSON {}", if self.objects { "object" } else { "array" })),
        }
        let mark = batch.mark();
        for (k, &i) in self.plan.features.iter().enumerate() {
            let kind = self.plan.kinds.get(k).copied().unwrap_or(ColumnType::Float);
            if let Err(problem) = push_json_value(kind, self.field(value, i), self.plan.missing, batch) {
                batch.undo(mark);
                return Err(format!("field {:?} {problem}", self.plan.names[i]));
            }
        }
        for &i in &self.plan.passthrough {
            let field = self.field(value, i).unwrap_or(&Value::Null);
            batch.passthrough.push_with(|out| serde_json::to_writer(out, field).expect("JSON values serialise"));
        }
        batch.rows += 1;
        Ok(())
    }

    fn take(&self, line: u64, parsed: Result<Value, String>, raw: &[u8], batch: &mut Batch) {
        batch.rows_read += 1;
        let result = parsed.and_then(|value| self.push(&value, batch));
        if let Err(reason) = result {
            batch.bad.push(BadRow { line, reason, raw: String::from_utf8_lossy(raw).into_owned() });
        }
    }
}

impl<R: BufRead + Send> RowSource for JsonLinesSource<R> {
    fn plan(&self) -> &ColumnPlan {
        &self.plan
    }

    fn named(&self) -> bool {
        self.objects
    }

    fn fill(&mut self, batch: &mut Batch, capacity: usize) -> Result<bool, TransformError> {
        if let Some((line, value, raw)) = self.first_row.take() {
            self.take(line, Ok(value), &raw, batch);
        }
        while batch.rows < capacity {
            let mut line = std::mem::take(&mut self.line);
            line.clear();
            if self.input.read_until(b'\n', &mut line)? == 0 {
                return Ok(false);
            }
            self.line_number += 1;
            let text = trim_line(&line);
            if !text.iter().all(u8::is_ascii_whitespace) {
                let parsed = serde_json::from_slice::<Value>(text).map_err(|e| format!("not valid JSON: {e}"));
                self.take(self.line_number, parsed, text, batch);
            }
            self.line = line;
        }
        Ok(true)
    }
}

/// The file's first row of JSON Lines (line `line_number`): an object or an array.
fn first_value(text: &[u8], line_number: u64) -> Result<Value, TransformError> {
    let text = if line_number == 1 { text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text) } else { text };
    match serde_json::from_slice::<Value>(text) {
        Ok(value @ (Value::Object(_) | Value::Array(_))) => Ok(value),
        Ok(_) => Err(TransformError::Columns(format!("line {line_number} is neither a JSON object nor an array"))),
        Err(_) if std::str::from_utf8(text).is_err() => Err(TransformError::NotText),
        Err(e) => Err(TransformError::Malformed { line: line_number, message: format!("not JSON: {e}") }),
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_decimals_and_what_is_left_to_the_full_parsers() {
        for (text, value) in
            [("5.1", 5.1), ("-0.25", -0.25), ("42", 42.0), (".5", 0.5), ("7.", 7.0), ("9999999", 9_999_999.0)]
        {
            assert_eq!(parse_short_decimal(text.as_bytes()), Some(value), "{text}");
        }
        assert_eq!(parse_short_decimal(b"-0.0").map(f32::to_bits), Some((-0.0f32).to_bits()));
        for text in ["", "-", ".", "+1", "1e3", "1.2.3", " 1", "12345678", "0.00000001", "nan", "1,5"] {
            assert_eq!(parse_short_decimal(text.as_bytes()), None, "{text:?}");
        }
        assert_eq!(parse_feature(b"12345678.9", false), Ok(12_345_679.0));
        assert_eq!(parse_feature(b" 1e-3 ", false), Ok(0.001));
        assert_eq!(parse_feature(b"", false), Err("is empty".into()));
        assert!(parse_feature(b"", true).unwrap().is_nan());
        assert!(parse_feature(b"NaN", true).unwrap().is_nan());
        assert_eq!(parse_feature(b"nan", false), Err("is \"nan\", which is not allowed as a feature".into()));
    }

    proptest! {
        /// Whatever the digits and wherever the point, the same f32 as the standard library's parser.
        #[test]
        fn short_decimals_parse_as_std_does(negative: bool, digits in "[0-9]{1,7}", point in 0usize..=7) {
            let point = point.min(digits.len());
            let text = format!("{}{}.{}", if negative { "-" } else { "" }, &digits[..point], &digits[point..]);
            let expected: f32 = text.parse().unwrap();
            prop_assert_eq!(parse_short_decimal(text.as_bytes()).map(f32::to_bits), Some(expected.to_bits()), "{}", text);
        }
    }
}
