//! Rows from a JSON request, read straight into the model's input: the parser hands each number
//! to the feature buffer as it reads it, and a model of typed columns gets one row at a time. A
//! request of 800,000 rows so costs its floats (16 bytes a row of four), not a tree of JSON
//! values (about 80 bytes a number, and a copy of the body in strings).
//!
//! The seeds here stop the parse at the first value the model cannot take, and leave the
//! request's own reason (which instance, which feature, what it is) in a [`Problem`].

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::tensors::{Features, RowForm, kind_of};
use crate::engine::batch::Batch;
use crate::engine::formats::values::push_json_value;
use crate::engine::{ColumnType, Model};

/// The reason a parse was stopped, when a seed stopped it.
#[derive(Default)]
pub struct Problem(RefCell<Option<String>>);

impl Problem {
    /// Keeps the first reason and stops the parse.
    fn stop<E: de::Error>(&self, reason: String) -> E {
        self.0.borrow_mut().get_or_insert(reason);
        E::custom("the request cannot be used")
    }

    /// Why the parse failed: the request's own reason, else what is wrong with its JSON.
    pub fn reason(self, error: serde_json::Error) -> String {
        self.0.into_inner().unwrap_or_else(|| format!("the body is not valid JSON: {error}"))
    }
}

/// What the rows of a TF Serving request were read into.
pub enum TfRows {
    /// A model of one float input.
    Features(Features),
    /// A model of typed columns.
    Columns(Batch),
    /// An image model's `instances` or `inputs`, as given (base64 images: the body's size).
    Json(Value),
}

/// A TF Serving predict body, `{"instances": …}` (rows) or `{"inputs": …}` (columns): the rows,
/// and whether they came as columns. Other members (`signature_name`) are passed over.
pub fn tf_predict(body: &[u8], model: &Model) -> Result<(TfRows, bool), String> {
    let problem = Problem::default();
    let mut parser = serde_json::Deserializer::from_slice(body);
    let parsed = PredictSeed { model, problem: &problem }
        .deserialize(&mut parser)
        .and_then(|parsed| parser.end().map(|()| parsed));
    parsed.map_err(|e| problem.reason(e))
}

struct PredictSeed<'a> {
    model: &'a Model,
    problem: &'a Problem,
}

impl<'de> DeserializeSeed<'de> for PredictSeed<'_> {
    type Value = (TfRows, bool);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PredictSeed<'_> {
    type Value = (TfRows, bool);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with \"instances\" or \"inputs\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let columnar = match key.as_ref() {
                "instances" => false,
                "inputs" => true,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if found.is_some() {
                return Err(self.problem.stop("give \"instances\" or \"inputs\", not both".into()));
            }
            let model = self.model;
            let rows = if model.image.is_some() {
                TfRows::Json(map.next_value()?)
            } else if model.column_inputs.is_empty() {
                let whose = if columnar { Whose::InputsRow } else { Whose::Instance };
                TfRows::Features(map.next_value_seed(NamedRows { model, whose, problem: self.problem })?)
            } else if columnar {
                // Each input's column, by name: at most the body's size in values.
                let inputs: Value = map.next_value()?;
                let Value::Object(inputs) = inputs else {
                    return Err(self.problem.stop("\"inputs\" must name each of the model's inputs".into()));
                };
                TfRows::Columns(super::tensors::typed_from_columns(&inputs, model).map_err(|r| self.problem.stop(r))?)
            } else {
                TfRows::Columns(map.next_value_seed(TypedInstances { model, problem: self.problem })?)
            };
            found = Some((rows, columnar));
        }
        found.ok_or_else(|| self.problem.stop("the body has neither \"instances\" nor \"inputs\"".into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.problem.stop("the body is not a JSON object with \"instances\" or \"inputs\"".into()))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.problem.stop("the body is not a JSON object with \"instances\" or \"inputs\"".into()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.problem.stop("the body is not a JSON object with \"instances\" or \"inputs\"".into()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.visit_f64(0.0)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.visit_f64(0.0)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.visit_f64(0.0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_f64(0.0)
    }
}

/// Which list of rows a message is about.
#[derive(Clone, Copy)]
enum Whose {
    /// `instances`: each row is "instance i".
    Instance,
    /// Columnar `inputs`: "row i of \"inputs\"".
    InputsRow,
}

impl Whose {
    fn row(self, index: usize) -> String {
        match self {
            Whose::Instance => format!("instance {index}"),
            Whose::InputsRow => format!("row {index} of \"inputs\""),
        }
    }
}

/// A float model's rows: a list of rows, or (columnar `inputs`) an object naming the model's
/// one input with the list as its value.
struct NamedRows<'a> {
    model: &'a Model,
    whose: Whose,
    problem: &'a Problem,
}

impl<'de> DeserializeSeed<'de> for NamedRows<'_> {
    type Value = Features;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Features, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NamedRows<'_> {
    type Value = Features;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Features, A::Error> {
        let n = self.model.n_features;
        let mut features = Features { values: Vec::new(), rows: 0, form: RowForm::Vector };
        loop {
            let index = features.rows;
            let place = Place { whose: self.whose, index, problem: self.problem };
            let named = matches!(self.whose, Whose::Instance);
            let row = Row { model: self.model, values: &mut features.values, place, named };
            let Some(form) = seq.next_element_seed(row)? else { break };
            if index > 0 && form != features.form {
                return Err(self.problem.stop(match self.whose {
                    Whose::Instance => {
                        format!("instance {index} is not written like instance 0 (a number, or a list of features)")
                    }
                    Whose::InputsRow => format!("row {index} of \"inputs\" is not written like row 0"),
                }));
            }
            features.form = form;
            features.rows += 1;
        }
        debug_assert_eq!(features.values.len(), features.rows * n);
        if features.rows == 0 {
            return Err(self.problem.stop(match self.whose {
                Whose::Instance => "\"instances\" is empty".into(),
                Whose::InputsRow => "\"inputs\" has no rows".into(),
            }));
        }
        Ok(features)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Features, A::Error> {
        if let Whose::Instance = self.whose {
            return Err(self.problem.stop("\"instances\" is an object, not a list".into()));
        }
        let name = &self.model.input_name;
        let mut rows = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != *name || rows.is_some() {
                return Err(self.problem.stop(format!("\"inputs\" names {key:?}; the model has one input, {name:?}")));
            }
            rows = Some(map.next_value_seed(NamedRows { whose: Whose::InputsRow, ..self })?);
        }
        rows.ok_or_else(|| self.problem.stop(format!("\"inputs\" names nothing; the model has one input, {name:?}")))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Features, E> {
        Err(self.not_a_list("a string"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Features, E> {
        Err(self.not_a_list("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Features, E> {
        Err(self.not_a_list("a number"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Features, E> {
        Err(self.not_a_list("a number"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Features, E> {
        Err(self.not_a_list("a boolean"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Features, E> {
        Err(self.not_a_list("null"))
    }
}

impl NamedRows<'_> {
    fn not_a_list<E: de::Error>(&self, kind: &str) -> E {
        self.problem.stop(match self.whose {
            Whose::Instance => format!("\"instances\" is {kind}, not a list"),
            Whose::InputsRow => format!("\"inputs\" is {kind}, not a list of rows"),
        })
    }
}

/// Which row a message is about.
#[derive(Clone, Copy)]
struct Place<'a> {
    whose: Whose,
    index: usize,
    problem: &'a Problem,
}

impl Place<'_> {
    fn what(&self) -> String {
        self.whose.row(self.index)
    }
}

/// One row of a float model, appended to `values`: a list of the model's features, a bare
/// number for a one-feature model, or (an instance) an object naming the model's input.
struct Row<'a> {
    model: &'a Model,
    values: &'a mut Vec<f32>,
    place: Place<'a>,
    /// Whether the row may be an object naming the input (an instance, not inside one).
    named: bool,
}

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = RowForm;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RowForm, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Row<'_> {
    fn not_a_row<E: de::Error>(&self, kind: &str) -> E {
        let n = self.model.n_features;
        self.place.problem.stop(format!("{} is {kind}; the model takes rows of {n} numbers", self.place.what()))
    }

    fn scalar<E: de::Error>(self, number: f64) -> Result<RowForm, E> {
        if self.model.n_features != 1 {
            return Err(self.not_a_row("a number"));
        }
        let place = self.place;
        let value = finite(number)
            .ok_or_else(|| place.problem.stop(format!("{} is not a finite 32-bit float", place.what())))?;
        self.values.push(value);
        Ok(RowForm::Scalar)
    }
}

/// A JSON number as a finite f32 feature.
fn finite(number: f64) -> Option<f32> {
    Some(number as f32).filter(|v| v.is_finite())
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = RowForm;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row of features")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RowForm, A::Error> {
        let n = self.model.n_features;
        let start = self.values.len();
        let mut count = 0;
        loop {
            let more = if count < n {
                seq.next_element_seed(Feature { values: &mut *self.values, index: count, place: self.place })?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                break;
            }
            count += 1;
        }
        if count != n {
            self.values.truncate(start);
            let what = self.place.what();
            return Err(self.place.problem.stop(format!("{what} has {count} features; the model takes {n}")));
        }
        Ok(RowForm::Vector)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowForm, A::Error> {
        if !self.named {
            return Err(self.not_a_row("an object"));
        }
        let (name, place) = (&self.model.input_name, self.place);
        let mut form = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != *name || form.is_some() {
                let what = place.what();
                return Err(place.problem.stop(format!("{what} names {key:?}; the model has one input, {name:?}")));
            }
            let inner = Row { model: self.model, values: &mut *self.values, place, named: false };
            form = Some(map.next_value_seed(inner)?);
        }
        let what = place.what();
        form.ok_or_else(|| place.problem.stop(format!("{what} names nothing; the model has one input, {name:?}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RowForm, E> {
        self.scalar(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RowForm, E> {
        self.scalar(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RowForm, E> {
        self.scalar(v as f64)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RowForm, E> {
        Err(self.not_a_row("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RowForm, E> {
        Err(self.not_a_row("a boolean"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RowForm, E> {
        Err(self.not_a_row("null"))
    }
}

/// One feature of a row.
struct Feature<'a> {
    values: &'a mut Vec<f32>,
    index: usize,
    place: Place<'a>,
}

impl Feature<'_> {
    fn push<E: de::Error>(self, number: f64) -> Result<(), E> {
        match finite(number) {
            Some(value) => {
                self.values.push(value);
                Ok(())
            }
            None => {
                let (index, what) = (self.index, self.place.what());
                Err(self.place.problem.stop(format!("feature {index} of {what} is not a finite 32-bit float")))
            }
        }
    }

    fn not_a_number<E: de::Error>(&self, kind: &str) -> E {
        let (index, what) = (self.index, self.place.what());
        self.place.problem.stop(format!("feature {index} of {what} is {kind}, not a number"))
    }
}

impl<'de> DeserializeSeed<'de> for Feature<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Feature<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(v as f64)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_a_number("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_a_number("a boolean"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_a_number("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_a_number("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_a_number("an object"))
    }
}

/// A model of typed columns' `instances`: objects naming each input, read one at a time.
struct TypedInstances<'a> {
    model: &'a Model,
    problem: &'a Problem,
}

impl<'de> DeserializeSeed<'de> for TypedInstances<'_> {
    type Value = Batch;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Batch, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TypedInstances<'_> {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of instances")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
        let model = self.model;
        let mut batch = Batch::default();
        while let Some(item) = seq.next_element::<Value>()? {
            let index = batch.rows;
            // A model of one text input (a text model) takes bare strings too.
            if let (Value::String(text), [input]) = (&item, &model.column_inputs[..])
                && input.kind == ColumnType::Text
            {
                batch.text.push(text.as_bytes());
                batch.rows += 1;
                continue;
            }
            let Value::Object(fields) = item else {
                return Err(self.problem.stop(format!(
                    "instance {index} is {}; the model takes an object naming {}",
                    kind_of(&item),
                    super::tensors::input_names(model)
                )));
            };
            for input in &model.column_inputs {
                let value = fields.get(&input.name).map(super::tensors::one_value);
                push_json_value(input.kind, value, model.handles_missing, &mut batch).map_err(|problem| {
                    self.problem.stop(format!("input {:?} of instance {index} {problem}", input.name))
                })?;
            }
            batch.rows += 1;
        }
        if batch.rows == 0 {
            return Err(self.problem.stop("\"instances\" is empty".into()));
        }
        Ok(batch)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Batch, A::Error> {
        Err(self.problem.stop("\"instances\" is an object, not a list".into()))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Batch, E> {
        Err(self.problem.stop("\"instances\" is a string, not a list".into()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Batch, E> {
        Err(self.problem.stop("\"instances\" is a number, not a list".into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Batch, E> {
        self.visit_f64(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Batch, E> {
        self.visit_f64(v as f64)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Batch, E> {
        Err(self.problem.stop("\"instances\" is a boolean, not a list".into()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Batch, E> {
        Err(self.problem.stop("\"instances\" is null, not a list".into()))
    }
}

/// KServe's `data`: numbers, flat or nested row-major, straight into floats. At most `count`
/// are taken; the caller checks there were exactly `count`.
pub fn flat_numbers(data: &str, count: usize) -> Result<Vec<f32>, String> {
    let problem = Problem::default();
    let mut values = Vec::new();
    let mut parser = serde_json::Deserializer::from_str(data);
    Flat { values: &mut values, count, problem: &problem }.deserialize(&mut parser).map_err(|e| problem.reason(e))?;
    if values.len() != count {
        return Err(format!("the input's shape needs {count} values; \"data\" has {}", values.len()));
    }
    Ok(values)
}

struct Flat<'a> {
    values: &'a mut Vec<f32>,
    count: usize,
    problem: &'a Problem,
}

impl Flat<'_> {
    fn push<E: de::Error>(self, number: f64) -> Result<(), E> {
        let index = self.values.len();
        if index >= self.count {
            return Err(self.problem.stop(format!("the input's shape needs {} values; \"data\" has more", self.count)));
        }
        let value = finite(number)
            .ok_or_else(|| self.problem.stop(format!("value {index} of the input is not a finite 32-bit float")))?;
        self.values.push(value);
        Ok(())
    }

    fn not_a_number<E: de::Error>(&self, kind: &str) -> E {
        self.problem.stop(format!("value {} of the input is {kind}, not a number", self.values.len()))
    }
}

impl<'de> DeserializeSeed<'de> for Flat<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flat<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Flat { values: &mut *self.values, count: self.count, problem: self.problem })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(v as f64)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_a_number("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_a_number("a boolean"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_a_number("null"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_a_number("an object"))
    }
}
