//! Tensors as the protocols write them in JSON: request values into feature rows, model outputs
//! into values. A model takes one input `[batch, features]`; a request may give a row as a list
//! of features or, for a one-feature model, as a bare number (TF Serving's `"instances": [1.0,
//! 2.0, 5.0]`), and a one-wide output then comes back as bare numbers too.

use serde_json::{Map, Value};

use crate::engine::batch::Batch;
use crate::engine::sources::push_json_value;
use crate::engine::{Element, Model, OutputKind, OutputSpec, OutputValues};

/// How a request gave each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowForm {
    /// A number: the one feature of a one-feature model.
    Scalar,
    /// A list of the features.
    Vector,
}

/// Feature rows from a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `rows * n_features`, row-major.
    pub values: Vec<f32>,
    pub rows: usize,
    pub form: RowForm,
}

/// A JSON number as a finite f32 feature.
pub fn feature(value: &Value, what: &dyn Fn() -> String) -> Result<f32, String> {
    match value.as_f64() {
        Some(number) if (number as f32).is_finite() => Ok(number as f32),
        Some(_) => Err(format!("{} is not a finite 32-bit float", what())),
        None => Err(format!("{} is {}, not a number", what(), kind_of(value))),
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

/// Rows given as TF Serving's `instances`: a list of rows, each a list of the features, a bare
/// number for a one-feature model, or an object naming the model's input.
pub fn from_instances(instances: &Value, model: &Model) -> Result<Features, String> {
    let Value::Array(items) = instances else {
        return Err(format!("\"instances\" is {}, not a list", kind_of(instances)));
    };
    if items.is_empty() {
        return Err("\"instances\" is empty".into());
    }
    let mut features =
        Features { values: Vec::with_capacity(items.len() * model.n_features), rows: 0, form: RowForm::Vector };
    for (index, item) in items.iter().enumerate() {
        let item = match item {
            Value::Object(fields) => named_input(fields, model, &|| format!("instance {index}"))?,
            other => other,
        };
        let form = push_row(&mut features.values, item, model, &|| format!("instance {index}"))?;
        if index > 0 && form != features.form {
            return Err(format!("instance {index} is not written like instance 0 (a number, or a list of features)"));
        }
        features.form = form;
        features.rows += 1;
    }
    Ok(features)
}

/// For a model of column inputs: rows given as objects naming each input (TF Serving's
/// `instances`), a value or a one-value list each.
pub fn typed_from_instances(instances: &Value, model: &Model) -> Result<Batch, String> {
    let Value::Array(items) = instances else {
        return Err(format!("\"instances\" is {}, not a list", kind_of(instances)));
    };
    if items.is_empty() {
        return Err("\"instances\" is empty".into());
    }
    let mut batch = Batch::default();
    for (index, item) in items.iter().enumerate() {
        let Value::Object(fields) = item else {
            return Err(format!(
                "instance {index} is {}; the model takes an object naming {}",
                kind_of(item),
                input_names(model)
            ));
        };
        for input in &model.column_inputs {
            let value = fields.get(&input.name).map(one_value);
            push_json_value(input.kind, value, model.handles_missing, &mut batch)
                .map_err(|problem| format!("input {:?} of instance {index} {problem}", input.name))?;
        }
        batch.rows += 1;
    }
    Ok(batch)
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
fn one_value(value: &Value) -> &Value {
    match value {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    }
}

fn input_names(model: &Model) -> String {
    model.column_inputs.iter().map(|i| format!("{:?} ({})", i.name, i.kind.name())).collect::<Vec<_>>().join(", ")
}

/// Rows given as TF Serving's columnar `inputs`: the input tensor, or an object naming it.
pub fn from_columns(inputs: &Value, model: &Model) -> Result<Features, String> {
    let tensor = match inputs {
        Value::Object(fields) => named_input(fields, model, &|| "\"inputs\"".to_owned())?,
        other => other,
    };
    let Value::Array(rows) = tensor else {
        return Err(format!("\"inputs\" is {}, not a list of rows", kind_of(tensor)));
    };
    if rows.is_empty() {
        return Err("\"inputs\" has no rows".into());
    }
    let mut features =
        Features { values: Vec::with_capacity(rows.len() * model.n_features), rows: 0, form: RowForm::Vector };
    for (index, row) in rows.iter().enumerate() {
        let form = push_row(&mut features.values, row, model, &|| format!("row {index} of \"inputs\""))?;
        if index > 0 && form != features.form {
            return Err(format!("row {index} of \"inputs\" is not written like row 0"));
        }
        features.form = form;
        features.rows += 1;
    }
    Ok(features)
}

/// The value an object gives for the model's input.
fn named_input<'a>(
    fields: &'a Map<String, Value>,
    model: &Model,
    what: &dyn Fn() -> String,
) -> Result<&'a Value, String> {
    match (fields.len(), fields.get(&model.input_name)) {
        (1, Some(value)) => Ok(value),
        _ => Err(format!(
            "{} names {:?}; the model has one input, {:?}",
            what(),
            fields.keys().collect::<Vec<_>>(),
            model.input_name
        )),
    }
}

/// Appends one row: a list of the model's features, or a number for a one-feature model.
fn push_row(values: &mut Vec<f32>, row: &Value, model: &Model, what: &dyn Fn() -> String) -> Result<RowForm, String> {
    let n = model.n_features;
    match row {
        Value::Array(items) if items.len() == n => {
            for (i, item) in items.iter().enumerate() {
                values.push(feature(item, &|| format!("feature {i} of {}", what()))?);
            }
            Ok(RowForm::Vector)
        }
        Value::Array(items) => Err(format!("{} has {} features; the model takes {n}", what(), items.len())),
        Value::Number(_) if n == 1 => {
            values.push(feature(row, what)?);
            Ok(RowForm::Scalar)
        }
        other => Err(format!("{} is {}; the model takes rows of {n} numbers", what(), kind_of(other))),
    }
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

/// A label as the model itself outputs it: its integer, or the class name of a classifier
/// whose labels are strings.
pub fn label_value(spec: &OutputSpec, values: &OutputValues, index: usize) -> Value {
    match values {
        OutputValues::Text(labels) => Value::String(labels[index].clone()),
        OutputValues::Int(labels) => match (&spec.kind, spec.element) {
            (OutputKind::Label { classes: Some(classes) }, Element::String) => classes
                .index_of(labels[index])
                .map_or_else(|| Value::from(labels[index]), |i| Value::String(classes.names[i].clone())),
            _ => Value::from(labels[index]),
        },
        OutputValues::Float(v) => json_f32(v[index]),
    }
}

/// Whether an output's rows come back as bare values: a `[batch]` output, or a one-wide output
/// of a request that gave its rows as bare numbers.
pub fn bare_rows(spec: &OutputSpec, form: RowForm) -> bool {
    spec.rank == 1 || (spec.width() == 1 && form == RowForm::Scalar)
}

/// Row `row` of one output, as JSON.
pub fn row_value(spec: &OutputSpec, values: &OutputValues, row: usize, form: RowForm) -> Value {
    let width = spec.width();
    if bare_rows(spec, form) {
        return label_value(spec, values, row * width);
    }
    Value::Array((row * width..(row + 1) * width).map(|i| label_value(spec, values, i)).collect())
}

/// The protocols' name for an output's element type.
pub fn datatype(element: Element) -> &'static str {
    match element {
        Element::Int64 => "INT64",
        Element::String => "BYTES",
        Element::Float32 => "FP32",
    }
}
