//! JSON Lines: every line an object (features by field name) or every line an array (by
//! position).

use std::io::BufRead;

use serde_json::Value;

use super::source::RowSource;
use super::values::push_json_value;
use crate::TransformError;
use crate::batch::{BadRow, Batch};
use crate::columns::{ColumnPlan, positional_names};
use crate::model::{ColumnType, Model};

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
