//! Writing prediction rows: pass-through fields first, then each output's columns, in the
//! input's own format (CSV stays CSV with its delimiter, JSON objects stay objects, arrays stay
//! arrays).
//!
//! Rows are appended straight to a byte buffer: what goes between the cells of a row is worked
//! out once per file, class names are encoded once, and only pass-through fields and text labels
//! are checked for characters that need quoting or escaping.

use std::io::{self, Write};

use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;

use super::kind::DataFormat;
use crate::TransformError;
use crate::batch::Batch;
use crate::columns::ColumnPlan;
use crate::model::{Model, OutputKind, OutputValues};

/// How output rows are laid out.
pub struct OutputLayout {
    encoding: Encoding,
    /// Pass-through names then model column names.
    names: Vec<String>,
    /// Whether the output starts with a header row (CSV whose input had one).
    header: bool,
    /// What goes before each cell of a row: nothing or the delimiter for CSV; `{"name":` or
    /// `,"name":` for JSON objects; `[` or `,` for JSON arrays.
    prefixes: Vec<Vec<u8>>,
    /// What ends a row.
    row_end: &'static [u8],
    /// For each model output that is a label with class names: the names, encoded.
    class_cells: Vec<Option<Vec<Vec<u8>>>>,
}

#[derive(Clone, Copy)]
enum Encoding {
    Csv { delimiter: u8 },
    Json,
}

impl OutputLayout {
    pub fn new(format: DataFormat, plan: &ColumnPlan, named: bool, model: &Model) -> Self {
        let csv = matches!(format, DataFormat::Csv { .. });
        // A list output is one JSON field (an array), or its columns in CSV.
        let outputs = model.outputs.iter().flat_map(|spec| match spec.list && !csv {
            true => std::slice::from_ref(&spec.name),
            false => spec.columns.as_slice(),
        });
        let names: Vec<String> = plan.passthrough_names().map(str::to_owned).chain(outputs.cloned()).collect();
        let (encoding, prefixes, row_end): (_, Vec<Vec<u8>>, &[u8]) = match format {
            DataFormat::Csv { delimiter, .. } => {
                let prefixes = (0..names.len()).map(|i| if i == 0 { vec![] } else { vec![delimiter] }).collect();
                (Encoding::Csv { delimiter }, prefixes, b"\n")
            }
            // JSON Lines (images have layouts of their own).
            _ if named => {
                let prefixes = names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let mut prefix = vec![if i == 0 { b'{' } else { b',' }];
                        serde_json::to_writer(&mut prefix, name).expect("strings serialise");
                        prefix.push(b':');
                        prefix
                    })
                    .collect();
                (Encoding::Json, prefixes, b"}\n")
            }
            _ => {
                let prefixes = (0..names.len()).map(|i| vec![if i == 0 { b'[' } else { b',' }]).collect();
                (Encoding::Json, prefixes, b"]\n")
            }
        };
        let class_cells = model
            .outputs
            .iter()
            .map(|spec| match &spec.kind {
                OutputKind::Label { classes: Some(classes) } => Some(
                    classes
                        .names
                        .iter()
                        .map(|name| {
                            let mut cell = Vec::new();
                            write_text(&mut cell, encoding, name);
                            cell
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        let header = named && matches!(encoding, Encoding::Csv { .. });
        Self { encoding, names, header, prefixes, row_end, class_cells }
    }

    /// The header row, for CSV inputs that had one.
    pub fn header(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if let (true, Encoding::Csv { delimiter }) = (self.header, self.encoding) {
            let mut csv = csv::WriterBuilder::new().delimiter(delimiter).from_writer(&mut out);
            csv.write_record(&self.names)?;
            csv.flush()?;
        }
        Ok(out)
    }

    /// Appends the output rows of `batch` to `out`.
    pub fn format(
        &self,
        batch: &Batch,
        predictions: &[OutputValues],
        model: &Model,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        let typed = batch.columns.as_ref().map(TypedCells::new).transpose()?;
        let mut scratch = Vec::new();
        let n_pass = batch.passthrough.len().checked_div(batch.rows).unwrap_or(0);
        let mut number = zmij::Buffer::new();
        let mut integer = itoa::Buffer::new();
        for row in 0..batch.rows {
            let mut prefixes = self.prefixes.iter();
            let mut cell = |out: &mut Vec<u8>| match prefixes.next().map(Vec::as_slice) {
                Some(&[byte]) => out.push(byte),
                Some(bytes) => out.extend_from_slice(bytes),
                None => {}
            };
            if let Some(typed) = &typed {
                for column in 0..typed.columns.len() {
                    cell(out);
                    typed.write(column, row, self.encoding, &mut scratch, out);
                }
            }
            for field in (row * n_pass..(row + 1) * n_pass).map(|i| batch.passthrough.get(i)) {
                cell(out);
                match self.encoding {
                    Encoding::Csv { delimiter } => write_csv_field(out, delimiter, field),
                    // JSON pass-through fields are JSON text already.
                    Encoding::Json => out.extend_from_slice(field),
                }
            }
            for ((spec, values), class_cells) in model.outputs.iter().zip(predictions).zip(&self.class_cells) {
                let width = spec.width();
                let range = row * width..(row + 1) * width;
                let json = matches!(self.encoding, Encoding::Json);
                match values {
                    OutputValues::Float(values) if spec.list && json => {
                        cell(out);
                        for (i, &value) in values[range].iter().enumerate() {
                            out.push(if i == 0 { b'[' } else { b',' });
                            write_json_float(out, &mut number, value);
                        }
                        out.push(b']');
                    }
                    OutputValues::Float(values) => {
                        for &value in &values[range] {
                            cell(out);
                            match self.encoding {
                                Encoding::Json => write_json_float(out, &mut number, value),
                                _ => out.extend_from_slice(number.format(value).as_bytes()),
                            }
                        }
                    }
                    OutputValues::Int(values) => {
                        for &value in &values[range] {
                            cell(out);
                            let name = match (&spec.kind, class_cells) {
                                (OutputKind::Label { classes: Some(classes) }, Some(cells)) => {
                                    classes.index_of(value).and_then(|i| cells.get(i))
                                }
                                _ => None,
                            };
                            match name {
                                Some(name) => out.extend_from_slice(name),
                                None => out.extend_from_slice(integer.format(value).as_bytes()),
                            }
                        }
                    }
                    // A list of text is a JSON array already (a token classifier's entities).
                    OutputValues::Text(values) if spec.list && json => {
                        cell(out);
                        out.extend_from_slice(values[row].as_bytes());
                    }
                    OutputValues::Text(values) => {
                        for value in &values[range] {
                            cell(out);
                            write_text(out, self.encoding, value);
                        }
                    }
                }
            }
            out.extend_from_slice(self.row_end);
        }
        Ok(())
    }
}

/// A float as JSON: its shortest text, or `null` (JSON has no NaN or infinity).
fn write_json_float(out: &mut Vec<u8>, number: &mut zmij::Buffer, value: f32) {
    match value.is_finite() {
        true => out.extend_from_slice(number.format(value).as_bytes()),
        false => out.extend_from_slice(b"null"),
    }
}

/// Typed pass-through columns (from Parquet) as text cells: CSV as arrow prints them (an empty
/// cell for null); JSON numbers and booleans as themselves, everything else as strings.
struct TypedCells<'a> {
    columns: Vec<(&'a dyn Array, ArrayFormatter<'a>, JsonAs)>,
}

#[derive(Clone, Copy, PartialEq)]
enum JsonAs {
    Number,
    Float,
    Text,
}

impl<'a> TypedCells<'a> {
    fn new(columns: &'a RecordBatch) -> Result<Self, TransformError> {
        let columns = columns
            .columns()
            .iter()
            .zip(columns.schema_ref().fields())
            .map(|(array, field)| {
                let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()).map_err(|e| {
                    TransformError::Columns(format!("column {:?} cannot be written as text: {e}", field.name()))
                })?;
                let json = match array.data_type() {
                    DataType::Float16 | DataType::Float32 | DataType::Float64 => JsonAs::Float,
                    t if t.is_integer() || matches!(t, DataType::Boolean) => JsonAs::Number,
                    _ => JsonAs::Text,
                };
                Ok((array.as_ref(), formatter, json))
            })
            .collect::<Result<_, TransformError>>()?;
        Ok(Self { columns })
    }

    fn write(&self, column: usize, row: usize, encoding: Encoding, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
        let (array, formatter, json) = &self.columns[column];
        scratch.clear();
        let _ = write!(scratch, "{}", formatter.value(row));
        match encoding {
            Encoding::Csv { delimiter } => write_csv_field(out, delimiter, scratch),
            Encoding::Json if array.is_null(row) => out.extend_from_slice(b"null"),
            // JSON has no NaN or infinity.
            Encoding::Json if *json == JsonAs::Float && !scratch.last().is_some_and(u8::is_ascii_digit) => {
                out.extend_from_slice(b"null")
            }
            Encoding::Json if *json != JsonAs::Text => out.extend_from_slice(scratch),
            Encoding::Json => {
                serde_json::to_writer(out, &*String::from_utf8_lossy(scratch)).expect("strings serialise")
            }
        }
    }
}

fn write_text(out: &mut Vec<u8>, encoding: Encoding, text: &str) {
    match encoding {
        Encoding::Csv { delimiter } => write_csv_field(out, delimiter, text.as_bytes()),
        Encoding::Json => serde_json::to_writer(out, text).expect("strings serialise"),
    }
}

/// A CSV field as the `csv` crate writes it: quoted, with quotes doubled, when it holds the
/// delimiter, a quote or a line break; as it is otherwise.
fn write_csv_field(out: &mut Vec<u8>, delimiter: u8, field: &[u8]) {
    if !field.iter().any(|&b| b == delimiter || matches!(b, b'"' | b'\n' | b'\r')) {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for part in field.split_inclusive(|&b| b == b'"') {
        out.extend_from_slice(part);
        if part.ends_with(b"\"") {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_exactly_as_the_csv_crate_quotes_them() {
        let fields: [&[u8]; 9] =
            [b"plain", b"", b"a,b", b"say \"hi\"", b"\"", b"two\nlines", b"cr\r", b"tab\there", b" spaced "];
        for delimiter in [b',', b'\t', b';'] {
            let mut ours = Vec::new();
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    ours.push(delimiter);
                }
                write_csv_field(&mut ours, delimiter, field);
            }
            ours.push(b'\n');
            let mut theirs = csv::WriterBuilder::new().delimiter(delimiter).from_writer(Vec::new());
            theirs.write_record(fields).unwrap();
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs.into_inner().unwrap()));
        }
    }
}
