//! Categorical encoders, as scikit-learn's encoders export them inside a `ColumnTransformer`:
//! `OneHotEncoder` (string or integer categories) and `LabelEncoder` (a map from strings,
//! integers or floats to strings, integers or floats; `OrdinalEncoder` becomes one).

use std::collections::HashMap;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity, expand,
};

use super::row_op::tensor_attribute;

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("OneHotEncoder", one_hot_encoder);
    register.insert("LabelEncoder", label_encoder);
}

/// A key or value of a `LabelEncoder`: floats by their bits (NaN made one), so they hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    Text(String),
    Int(i64),
    Float(u32),
}

impl Item {
    fn float(value: f32) -> Self {
        Self::Float(if value.is_nan() { f32::NAN.to_bits() } else { (value + 0.0).to_bits() })
    }
}

/// Each input value mapped through `keys -> values`, or to `default` when it is no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelEncoder {
    map: HashMap<Item, Item>,
    default: Item,
    input: DatumType,
    output: DatumType,
}

/// A list attribute `<prefix>_strings`, `_int64s` or `_floats` (or `_tensor`) as items.
fn items(node: &NodeProto, prefix: &str) -> TractResult<Option<(Vec<Item>, DatumType)>> {
    if let Some(v) = node.get_attr_opt_vec::<String>(&format!("{prefix}_strings"))?.filter(|v| !v.is_empty()) {
        return Ok(Some((v.into_iter().map(Item::Text).collect(), String::datum_type())));
    }
    if let Some(v) = node.get_attr_opt_vec::<i64>(&format!("{prefix}_int64s"))?.filter(|v| !v.is_empty()) {
        return Ok(Some((v.into_iter().map(Item::Int).collect(), i64::datum_type())));
    }
    if let Some(v) = node.get_attr_opt_vec::<f32>(&format!("{prefix}_floats"))?.filter(|v| !v.is_empty()) {
        return Ok(Some((v.into_iter().map(Item::float).collect(), f32::datum_type())));
    }
    match tensor_attribute(node, &format!("{prefix}_tensor"))? {
        Some(tensor) => Ok(Some((tensor_items(&tensor)?, tensor.datum_type()))),
        None => Ok(None),
    }
}

/// A tensor's values as items: text, any integer type as i64, any float type as f32.
fn tensor_items(tensor: &Tensor) -> TractResult<Vec<Item>> {
    let dt = tensor.datum_type();
    Ok(if dt == String::datum_type() {
        tensor.try_as_plain_ram()?.as_slice::<String>()?.iter().cloned().map(Item::Text).collect()
    } else if dt.is_integer() {
        tensor.cast_to::<i64>()?.try_as_plain_ram()?.as_slice::<i64>()?.iter().copied().map(Item::Int).collect()
    } else if dt.is_float() {
        tensor.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.iter().copied().map(Item::float).collect()
    } else {
        bail!("LabelEncoder: {dt:?} keys or values are not supported")
    })
}

fn label_encoder(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let (keys, input) = items(node, "keys")?.ok_or_else(|| format_err!("LabelEncoder has no keys"))?;
    let (values, output) = items(node, "values")?.ok_or_else(|| format_err!("LabelEncoder has no values"))?;
    ensure!(keys.len() == values.len(), "LabelEncoder has {} keys and {} values", keys.len(), values.len());
    let default = match output {
        dt if dt.is_integer() => Item::Int(node.get_attr_opt::<i64>("default_int64")?.unwrap_or(-1)),
        dt if dt == String::datum_type() => {
            Item::Text(node.get_attr_opt::<String>("default_string")?.unwrap_or_else(|| "_Unused".into()))
        }
        _ => Item::float(node.get_attr_opt::<f32>("default_float")?.unwrap_or(-0.0)),
    };
    let default = match tensor_attribute(node, "default_tensor")? {
        Some(tensor) => tensor_items(&tensor)?.into_iter().next().unwrap_or(default),
        None => default,
    };
    let map = keys.into_iter().zip(values).collect();
    Ok((expand(LabelEncoder { map, default, input, output }), vec![]))
}

impl Expansion for LabelEncoder {
    fn name(&self) -> StaticName {
        "LabelEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.output)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        // tract types an integer that came from a Cast to int64 as a symbolic dimension (TDim),
        // as in IsolationForest's leaf indices: made int64 again for the keys.
        if fact.datum_type == TDim::datum_type() && self.input.is_integer() {
            let cast = tract_onnx::tract_core::ops::cast::cast(i64::datum_type());
            let inputs = model.wire_node(format!("{prefix}.as_int64"), cast, inputs)?;
            return model.wire_node(prefix, self.clone(), &inputs);
        }
        let kind = |dt: DatumType| (dt == String::datum_type(), dt.is_integer(), dt.is_float());
        ensure!(
            kind(fact.datum_type) == kind(self.input),
            "LabelEncoder: its keys are {:?}, its input {:?}",
            self.input,
            fact.datum_type
        );
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for LabelEncoder {
    fn name(&self) -> StaticName {
        "LabelEncoder".into()
    }

    op_as_typed_op!();
}

impl EvalOp for LabelEncoder {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let mapped: Vec<&Item> =
            tensor_items(&input)?.iter().map(|key| self.map.get(key).unwrap_or(&self.default)).collect::<Vec<_>>();
        let shape = input.shape();
        let tensor = match &self.default {
            Item::Text(_) => {
                let v: Vec<String> =
                    mapped.iter().map(|i| if let Item::Text(t) = i { t.clone() } else { String::new() }).collect();
                tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into()
            }
            Item::Int(_) => {
                let v: Vec<i64> = mapped.iter().map(|i| if let Item::Int(n) = i { *n } else { 0 }).collect();
                Tensor::from_shape(shape, &v)?
            }
            Item::Float(_) => {
                let v: Vec<f32> = mapped
                    .iter()
                    .map(|i| if let Item::Float(bits) = i { f32::from_bits(*bits) } else { 0.0 })
                    .collect();
                Tensor::from_shape(shape, &v)?
            }
        };
        Ok(tvec![tensor.into_tvalue()])
    }
}

impl TypedOp for LabelEncoder {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec![self.output.fact(inputs[0].shape.clone())])
    }

    as_op!();
}

/// The categories, by their value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Categories {
    Strings(HashMap<String, usize>),
    Ints(HashMap<i64, usize>),
}

/// One more axis than the input, as long as the categories: 1 where the value is that category.
/// A value of no category gives zeros when `zeros` is set (scikit-learn's
/// `handle_unknown="ignore"`), else the run fails, as in onnxruntime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneHotEncoder {
    categories: Categories,
    count: usize,
    zeros: bool,
}

fn one_hot_encoder(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let strings = node.get_attr_opt_vec::<String>("cats_strings")?.filter(|v| !v.is_empty());
    let ints = node.get_attr_opt_vec::<i64>("cats_int64s")?.filter(|v| !v.is_empty());
    let (categories, count) = match (strings, ints) {
        (Some(strings), None) => {
            let count = strings.len();
            (Categories::Strings(strings.into_iter().enumerate().map(|(i, s)| (s, i)).collect()), count)
        }
        (None, Some(ints)) => (Categories::Ints(ints.iter().enumerate().map(|(i, &v)| (v, i)).collect()), ints.len()),
        _ => bail!("OneHotEncoder needs exactly one of cats_strings and cats_int64s"),
    };
    let zeros = node.get_attr_opt::<i64>("zeros")?.unwrap_or(1) != 0;
    Ok((expand(OneHotEncoder { categories, count, zeros }), vec![]))
}

impl Expansion for OneHotEncoder {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        let count = self.count;
        s.given(&inputs[0].rank, move |s, rank| {
            s.equals(&outputs[0].rank, rank + 1)?;
            let rank = rank as usize;
            for axis in 0..rank {
                s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
            }
            s.equals(&outputs[0].shape[rank], count.to_dim())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for OneHotEncoder {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
    }

    op_as_typed_op!();
}

impl EvalOp for OneHotEncoder {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let mut shape: TVec<usize> = input.shape().into();
        shape.push(self.count);
        let mut output = Tensor::zero::<f32>(&shape)?;
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let out = plain.as_slice_mut::<f32>()?;
            let mut set = |i: usize, category: Option<usize>, shown: &dyn Fn() -> String| -> TractResult<()> {
                match category {
                    Some(c) => out[i * self.count + c] = 1.0,
                    None if self.zeros => {}
                    None => bail!(
                        "OneHotEncoder: {} is not one of the categories it was fitted on (export with \
                         handle_unknown=\"ignore\" to encode unknown categories as zeros)",
                        shown()
                    ),
                }
                Ok(())
            };
            match &self.categories {
                Categories::Strings(categories) => {
                    let plain = input.try_as_plain_ram()?;
                    for (i, value) in plain.as_slice::<String>()?.iter().enumerate() {
                        set(i, categories.get(value).copied(), &|| format!("{value:?}"))?;
                    }
                }
                Categories::Ints(categories) => {
                    let values = input.cast_to::<i64>()?;
                    for (i, &value) in values.try_as_plain_ram()?.as_slice::<i64>()?.iter().enumerate() {
                        set(i, categories.get(&value).copied(), &|| value.to_string())?;
                    }
                }
            }
        }
        Ok(tvec![output.into_tvalue()])
    }
}

impl TypedOp for OneHotEncoder {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.to_tvec();
        shape.push(self.count.to_dim());
        Ok(tvec![f32::fact(shape)])
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder(zeros: bool) -> OneHotEncoder {
        let categories = Categories::Strings([("large".to_owned(), 0), ("small".to_owned(), 1)].into_iter().collect());
        OneHotEncoder { categories, count: 2, zeros }
    }

    fn run(op: &OneHotEncoder, values: &[&str]) -> TractResult<Vec<f32>> {
        let input = tensor1(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>());
        let out = op.eval(&EvalContext::out_of_plan(), tvec![input.into_tvalue()])?;
        Ok(out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    #[test]
    fn each_value_lights_its_category() {
        assert_eq!(run(&encoder(true), &["small", "large"]).unwrap(), [0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn an_unknown_category_is_zeros_or_an_error_as_exported() {
        assert_eq!(run(&encoder(true), &["medium"]).unwrap(), [0.0, 0.0]);
        let err = run(&encoder(false), &["medium"]).unwrap_err().to_string();
        assert!(err.contains("\"medium\" is not one of the categories"), "{err}");
    }
}
