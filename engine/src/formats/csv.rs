//! CSV (and TSV): rows into mini-batches, header or not, any delimiter, lines counted as a
//! person counts them.

use std::collections::VecDeque;
use std::io::Read;

use csv::{ByteRecord, ReaderBuilder, WriterBuilder};

use super::source::RowSource;
use super::values::{parse_feature, push_typed};
use crate::TransformError;
use crate::batch::{BadRow, Batch};
use crate::columns::{ColumnPlan, positional_names};
use crate::model::{ColumnType, Model};

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
