//! Categorical encoders: `OneHotEncoder` (string or integer categories, as scikit-learn's
//! `OneHotEncoder` exports them inside a `ColumnTransformer`).

use std::collections::HashMap;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity, expand,
};

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("OneHotEncoder", one_hot_encoder);
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
