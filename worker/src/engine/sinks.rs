//! Writing prediction rows: pass-through fields first, then each output's columns, in the
//! input's own format (CSV stays CSV with its delimiter, JSON objects stay objects, arrays stay
//! arrays).

use std::io::{self, Write};

use super::batch::Batch;
use super::columns::ColumnPlan;
use super::format::DataFormat;
use super::model::{Model, OutputKind, OutputValues};

/// How output rows are laid out.
pub struct OutputLayout {
    style: Style,
    /// Pass-through names then model column names.
    names: Vec<String>,
    /// Whether the output starts with a header row (CSV whose input had one).
    header: bool,
}

enum Style {
    Csv { delimiter: u8 },
    JsonObjects { keys: Vec<Vec<u8>> },
    JsonArrays,
}

/// One output cell, borrowed from the batch or the predictions.
enum Cell<'a> {
    /// A CSV field, or a JSON value as JSON text.
    Passthrough(&'a [u8]),
    Text(&'a str),
    Int(i64),
    Float(f32),
}

impl OutputLayout {
    pub fn new(format: DataFormat, plan: &ColumnPlan, named: bool, model: &Model) -> Self {
        let names: Vec<String> = plan.passthrough_names().chain(model.column_names()).map(str::to_owned).collect();
        let style = match format {
            DataFormat::Csv { delimiter, .. } => Style::Csv { delimiter },
            DataFormat::JsonLines if named => Style::JsonObjects {
                keys: names.iter().map(|n| serde_json::to_vec(n).expect("strings serialise")).collect(),
            },
            DataFormat::JsonLines => Style::JsonArrays,
        };
        let header = named && matches!(style, Style::Csv { .. });
        Self { style, names, header }
    }

    /// The header row, for CSV inputs that had one.
    pub fn header(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if let (true, Style::Csv { delimiter }) = (self.header, &self.style) {
            let mut csv = csv::WriterBuilder::new().delimiter(*delimiter).from_writer(&mut out);
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
    ) -> io::Result<()> {
        let n_pass = batch.passthrough.len().checked_div(batch.rows).unwrap_or(0);
        let mut csv = match self.style {
            Style::Csv { delimiter } => Some(csv::WriterBuilder::new().delimiter(delimiter).from_writer(Vec::new())),
            _ => None,
        };
        let mut number = ryu::Buffer::new();
        let mut integer = itoa::Buffer::new();
        for row in 0..batch.rows {
            let passthrough = (0..n_pass).map(|c| Cell::Passthrough(batch.passthrough.get(row * n_pass + c)));
            let predicted = model.outputs.iter().zip(predictions).flat_map(|(spec, values)| {
                let width = spec.width();
                (row * width..(row + 1) * width).map(move |i| match (values, &spec.kind) {
                    (OutputValues::Int(v), OutputKind::Label { classes: Some(names) }) => {
                        match usize::try_from(v[i]).ok().and_then(|c| names.get(c)) {
                            Some(name) => Cell::Text(name),
                            None => Cell::Int(v[i]),
                        }
                    }
                    (OutputValues::Int(v), _) => Cell::Int(v[i]),
                    (OutputValues::Text(v), _) => Cell::Text(&v[i]),
                    (OutputValues::Float(v), _) => Cell::Float(v[i]),
                })
            });
            let cells = passthrough.chain(predicted);
            match (&self.style, csv.as_mut()) {
                (Style::Csv { .. }, Some(csv)) => {
                    for cell in cells {
                        match cell {
                            Cell::Passthrough(bytes) => csv.write_field(bytes)?,
                            Cell::Text(text) => csv.write_field(text)?,
                            Cell::Int(v) => csv.write_field(integer.format(v))?,
                            Cell::Float(v) => csv.write_field(number.format(v))?,
                        }
                    }
                    csv.write_record(None::<&[u8]>)?;
                }
                (Style::JsonObjects { keys }, _) => {
                    out.push(b'{');
                    for (i, (cell, key)) in cells.zip(keys).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(key);
                        out.push(b':');
                        write_json(out, cell, &mut number, &mut integer)?;
                    }
                    out.extend_from_slice(b"}\n");
                }
                _ => {
                    out.push(b'[');
                    for (i, cell) in cells.enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_json(out, cell, &mut number, &mut integer)?;
                    }
                    out.extend_from_slice(b"]\n");
                }
            }
        }
        if let Some(csv) = csv {
            out.extend_from_slice(&csv.into_inner().map_err(|e| io::Error::other(e.to_string()))?);
        }
        Ok(())
    }
}

fn write_json(
    out: &mut Vec<u8>,
    cell: Cell<'_>,
    number: &mut ryu::Buffer,
    integer: &mut itoa::Buffer,
) -> io::Result<()> {
    match cell {
        Cell::Passthrough(json) => out.extend_from_slice(json),
        Cell::Text(text) => serde_json::to_writer(&mut *out, text)?,
        Cell::Int(v) => out.extend_from_slice(integer.format(v).as_bytes()),
        Cell::Float(v) if v.is_finite() => out.extend_from_slice(number.format(v).as_bytes()),
        // JSON has no NaN or infinity.
        Cell::Float(_) => out.write_all(b"null")?,
    }
    Ok(())
}
