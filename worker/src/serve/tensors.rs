//! What the protocols share of tensors: the rows a request gives and how it gave them, the
//! outputs' element types and shapes. A model takes one input `[batch, features]`; a request may
//! give a row as a list of features or, for a one-feature model, as a bare number (TF Serving's
//! `"instances": [1.0, 2.0, 5.0]`), and a one-wide output then comes back as bare numbers too.

use bytes::Bytes;
use serde_json::{Map, Value};

pub use super::rows::{RowForm, bare_rows};
use crate::engine::batch::Batch;
use crate::engine::formats::values::push_json_value;
use crate::engine::{Element, Model, OutputSpec, OutputValues};

/// Feature rows from a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `rows * n_features`, row-major.
    pub values: Vec<f32>,
    pub rows: usize,
    pub form: RowForm,
}

/// The rows of a float model's one input, named `name`, of shape `shape` in a request of
/// `inputs` inputs: `[rows, features]`, or `[rows]` for a one-feature model.
pub fn feature_rows(
    model: &Model,
    model_name: &str,
    inputs: usize,
    name: &str,
    shape: &[i64],
) -> Result<(usize, RowForm), String> {
    if inputs != 1 {
        return Err(format!("the request has {inputs} inputs; model {model_name} takes one, {:?}", model.input_name));
    }
    if name != model.input_name {
        return Err(format!("unexpected input {name:?}: model {model_name} takes one input, {:?}", model.input_name));
    }
    rows_of_shape(model, name, shape)
}

/// The rows of a float model's input of shape `shape`: `[rows, features]`, or `[rows]` for a
/// one-feature model.
pub fn rows_of_shape(model: &Model, name: &str, shape: &[i64]) -> Result<(usize, RowForm), String> {
    let n = model.n_features;
    match shape[..] {
        [rows, features] if rows > 0 && features as usize == n => Ok((rows as usize, RowForm::Vector)),
        [rows] if rows > 0 && n == 1 => Ok((rows as usize, RowForm::Scalar)),
        _ => Err(format!(
            "input {name:?} has shape {shape:?}; the model takes [rows, {n}]{}",
            if n == 1 { " or [rows]" } else { "" }
        )),
    }
}

/// What a JSON value is, for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Adds input `name` of a model of typed columns, of shape `[rows]` or `[rows, 1]` and holding
/// `values`, to `columns` (what [`typed_from_columns`] reads): an input the model does not take,
/// a wrong shape or a count that is not the shape's are refused.
pub fn add_column(
    model: &Model,
    model_name: &str,
    columns: &mut Map<String, Value>,
    name: &str,
    shape: &[i64],
    values: Vec<Value>,
) -> Result<(), String> {
    if !model.column_inputs.iter().any(|i| i.name == name) {
        let names: Vec<&str> = model.column_inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(format!("unexpected input {name:?}: model {model_name} takes {names:?}"));
    }
    let rows = match shape[..] {
        [rows] | [rows, 1] if rows > 0 => rows as usize,
        _ => return Err(format!("input {name:?} has shape {shape:?}; each input is [rows, 1]")),
    };
    if values.len() != rows {
        return Err(format!("input {name:?} has shape {shape:?} but holds {} values", values.len()));
    }
    columns.insert(name.to_owned(), Value::Array(values));
    Ok(())
}

/// A text element of input `input` as JSON.
pub fn text_value(bytes: &[u8], input: &str) -> Result<Value, String> {
    std::str::from_utf8(bytes)
        .map(|text| Value::String(text.to_owned()))
        .map_err(|_| format!("an element of input {input:?} is not UTF-8 text"))
}

/// A binary tensor of a column as JSON values: `BYTES` elements as text, numbers as numbers.
pub fn raw_column(datatype: &str, data: Bytes, input: &str) -> Result<Vec<Value>, String> {
    if datatype == "BYTES" {
        return raw_elements(data, input)?.iter().map(|bytes| text_value(bytes, input)).collect();
    }
    let element = element_size(datatype).ok_or_else(|| format!("datatype {datatype} is not BYTES or a number type"))?;
    if !data.len().is_multiple_of(element) {
        return Err(format!("input {input:?}: {} bytes are not whole {datatype} values", data.len()));
    }
    Ok(data.chunks_exact(element).map(|b| number_value(datatype, b)).collect())
}

/// For a model of column inputs: each input's values over the rows, by name (TF Serving's
/// columnar `inputs`, KServe's tensors); every input must have as many rows.
pub fn typed_from_columns(columns: &Map<String, Value>, model: &Model) -> Result<Batch, String> {
    let lists = model
        .column_inputs
        .iter()
        .map(|input| match columns.get(&input.name) {
            Some(Value::Array(values)) => Ok(values),
            Some(other) => Err(format!("input {:?} is {}, not a list of its rows", input.name, kind_of(other))),
            None => Err(format!("input {:?} is missing; the model takes {}", input.name, input_names(model))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows = lists.first().map_or(0, |l| l.len());
    if rows == 0 {
        return Err("the inputs have no rows".into());
    }
    if let Some((input, list)) = model.column_inputs.iter().zip(&lists).find(|(_, l)| l.len() != rows) {
        return Err(format!(
            "input {:?} has {} rows, input {:?} {rows}",
            input.name,
            list.len(),
            model.column_inputs[0].name
        ));
    }
    let mut batch = Batch { rows, ..Batch::default() };
    for row in 0..rows {
        for (input, list) in model.column_inputs.iter().zip(&lists) {
            push_json_value(input.kind, Some(one_value(&list[row])), model.handles_missing, &mut batch)
                .map_err(|problem| format!("row {row} of input {:?} {problem}", input.name))?;
        }
    }
    Ok(batch)
}

/// A row's value of a `[batch, 1]` input: the value, or a list holding it.
pub fn one_value(value: &Value) -> &Value {
    match value {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    }
}

pub fn input_names(model: &Model) -> String {
    model.column_inputs.iter().map(|i| format!("{:?} ({})", i.name, i.kind.name())).collect::<Vec<_>>().join(", ")
}

/// A float as JSON: the shortest decimal that reads back as the same f32 (as the batch outputs
/// write it), `null` where JSON has no number for it.
pub fn json_f32(value: f32) -> Value {
    if !value.is_finite() {
        return Value::Null;
    }
    let mut buffer = zmij::Buffer::new();
    let shortest: f64 = buffer.format(value).parse().expect("zmij writes a float");
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

/// The bytes the model's outputs for `rows` rows take.
pub fn output_bytes(specs: &[OutputSpec], rows: usize) -> usize {
    let per_row: usize = specs
        .iter()
        .map(|spec| {
            spec.width()
                * match spec.element {
                    Element::Float32 => 4,
                    Element::Int64 => 8,
                    Element::String => 32,
                }
        })
        .sum();
    rows * per_row
}

/// The protocols' name for an output's element type.
pub fn datatype(element: Element) -> &'static str {
    match element {
        Element::Int64 => "INT64",
        Element::String => "BYTES",
        Element::Float32 => "FP32",
    }
}

/// Element sizes of the numeric datatypes.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// Numbers of `datatype`, little-endian and row-major as binary tensors carry them, as floats.
pub fn raw_floats(datatype: &str, data: &[u8]) -> Result<Vec<f32>, String> {
    let element = element_size(datatype).ok_or_else(|| format!("datatype {datatype} is not a number type"))?;
    if !data.len().is_multiple_of(element) {
        return Err(format!("{} bytes are not whole {datatype} values", data.len()));
    }
    let values: Vec<f32> = data
        .chunks_exact(element)
        .map(|b| match datatype {
            "BOOL" | "UINT8" => f32::from(b[0]),
            "INT8" => f32::from(b[0] as i8),
            "INT16" => f32::from(i16::from_le_bytes([b[0], b[1]])),
            "UINT16" => f32::from(u16::from_le_bytes([b[0], b[1]])),
            "FP16" => half_to_f32(u16::from_le_bytes([b[0], b[1]])),
            "INT32" => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
            "UINT32" => u32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
            "FP32" => f32::from_le_bytes(b.try_into().expect("4 bytes")),
            "INT64" => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            "UINT64" => u64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            _ => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        })
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!("value {i} of the input is not a finite number"));
    }
    Ok(values)
}

/// An IEEE half-precision float.
pub fn half_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f32::from(bits & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f32.powi(-24),
        31 => f32::INFINITY,
        _ => (1.0 + fraction / 1024.0) * 2f32.powi(exponent - 15),
    }
}

/// The elements of a binary BYTES tensor: each its length (4 bytes, little-endian), then its
/// bytes. The shape is the client's word: the data bounds what is allocated.
pub fn raw_elements(mut data: Bytes, input: &str) -> Result<Vec<Bytes>, String> {
    let mut elements = Vec::new();
    while data.len() >= 4 {
        let length = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if length > data.len() - 4 {
            return Err(format!("input {input:?}: an element's length runs past its data"));
        }
        let _ = data.split_to(4);
        elements.push(data.split_to(length));
    }
    Ok(elements)
}

/// A little-endian number of `datatype` as JSON.
pub fn number_value(datatype: &str, b: &[u8]) -> Value {
    match datatype {
        "BOOL" | "UINT8" => Value::from(b[0]),
        "INT8" => Value::from(b[0] as i8),
        "INT16" => Value::from(i16::from_le_bytes([b[0], b[1]])),
        "UINT16" => Value::from(u16::from_le_bytes([b[0], b[1]])),
        "FP16" => Value::from(half_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        "INT32" => Value::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))),
        "UINT32" => Value::from(u32::from_le_bytes(b.try_into().expect("4 bytes"))),
        "FP32" => Value::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        "INT64" => Value::from(i64::from_le_bytes(b.try_into().expect("8 bytes"))),
        "UINT64" => Value::from(u64::from_le_bytes(b.try_into().expect("8 bytes"))),
        _ => Value::from(f64::from_le_bytes(b.try_into().expect("8 bytes"))),
    }
}

/// One output as a binary tensor: its shape, datatype and bytes (little-endian numbers; for
/// `BYTES`, each element's length in 4 bytes then its bytes), as KServe's binary extension and
/// its gRPC `raw_output_contents` carry it.
pub fn binary_answer(
    spec: &OutputSpec,
    values: &OutputValues,
    rows: usize,
    form: RowForm,
) -> (Vec<usize>, &'static str, Vec<u8>) {
    let width = spec.width();
    let shape = if bare_rows(spec, form) { vec![rows] } else { vec![rows, width] };
    let count = rows * width;
    let data = match (spec.element, values) {
        (Element::Float32, OutputValues::Float(v)) => v[..count].iter().flat_map(|x| x.to_le_bytes()).collect(),
        (Element::Int64, OutputValues::Int(v)) => v[..count].iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => {
            let mut data = Vec::new();
            for i in 0..count {
                let at = data.len();
                data.extend_from_slice(&[0; 4]);
                super::json_answer::element_bytes(spec, values, i, &mut data);
                let length = (data.len() - at - 4) as u32;
                data[at..at + 4].copy_from_slice(&length.to_le_bytes());
            }
            data
        }
    };
    (shape, datatype(spec.element), data)
}
