//! Plain row-by-row loops in place of two of tract's ops, where rows are short.
//!
//! A classifier ends with a softmax and an argmax over its handful of classes. tract runs both
//! with kernels made for long vectors and sets them up again for every row: on the 3-class iris
//! models that took over 1,000 instructions a row each, more than all the rest of the model. Once
//! tract has optimised a model, [`replace_narrow_row_ops`] swaps each softmax and argmax over the
//! last axis of an f32 tensor at most [`MAX_WIDTH`] wide for the loops below, which compute the
//! same thing in the same order: argmax exactly, softmax within 1e-6 of tract's (the tests check
//! both; the softmax uses the standard library's `exp`, tract its own approximation). A final
//! cast of integer labels to tract's symbolic dimension type `TDim`, which some classifiers end
//! with, becomes a cast to i64.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::{Cast, cast};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, Softmax, SoftmaxKind};

/// Rows wider than this keep tract's vectorised kernels.
pub const MAX_WIDTH: usize = 64;

/// Replaces the softmax and argmax nodes over short last axes, and a final cast of integer
/// labels to `TDim` by one to i64; returns how many it replaced.
pub fn replace_narrow_row_ops(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(&input) = node.inputs.first() else { continue };
        let fact = model.outlet_fact(input)?;
        if let Some(to_dim) = node.op_as::<Cast>()
            && to_dim.to == TDim::datum_type()
            && fact.datum_type.is_integer()
            && node.outputs.iter().all(|output| output.successors.is_empty())
        {
            // Integer labels that tract casts to its symbolic dimension type (an expression
            // tree on the heap for every value) as the model's last step: plain i64 instead. The
            // type of an output changes, which a patch may not do, so the node is changed in place.
            let shape = model.outlet_fact(OutletId::new(id, 0))?.shape.clone();
            model.node_mut(id).op = Box::new(cast(i64::datum_type()));
            model.set_outlet_fact(OutletId::new(id, 0), i64::fact(shape))?;
            replaced += 1;
            continue;
        }
        let last = fact.rank().checked_sub(1);
        let narrow = fact.datum_type == f32::datum_type()
            && fact.shape.last().and_then(|d| d.to_usize().ok()).is_some_and(|w| (1..=MAX_WIDTH).contains(&w));
        if !narrow {
            continue;
        }
        let op: Option<Box<dyn TypedOp>> = if let Some(softmax) = node.op_as::<Softmax>() {
            let plain = softmax.kind == SoftmaxKind::Softmax && softmax.quant_output_dt.is_none();
            (plain && softmax.axes.as_slice() == last.as_slice()).then(|| Box::new(RowSoftmax) as _)
        } else if let Some(reduce) = node.op_as::<Reduce>() {
            match reduce.reducer {
                Reducer::ArgMax(take_last) if reduce.axes.as_slice() == last.as_slice() => {
                    Some(Box::new(RowArgMax { take_last }))
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some(op) = op {
            let inputs = node.inputs.clone();
            TypedModelPatch::replace_single_op(model, model.node(id), &inputs, op)?.apply(model)?;
            replaced += 1;
        }
    }
    Ok(replaced)
}

/// Softmax over the last axis: `exp(x - max)`, summed in order, then scaled by the sum's inverse.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RowSoftmax;

impl Op for RowSoftmax {
    fn name(&self) -> StaticName {
        "RowSoftmax".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut tensor = args_1!(inputs).into_tensor();
        let width = row_width(&tensor)?;
        for row in tensor.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?.chunks_exact_mut(width) {
            let max = row.iter().fold(f32::NEG_INFINITY, |max, &x| if x > max { x } else { max });
            let mut sum = 0f32;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            let scale = sum.recip();
            row.iter_mut().for_each(|x| *x *= scale);
        }
        Ok(tvec!(tensor.into_tvalue()))
    }
}

impl TypedOp for RowSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

/// The position of the largest value of the last axis (kept, with length 1), as i64: the first
/// such position, or the last when `take_last`; NaN never wins.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RowArgMax {
    take_last: bool,
}

impl Op for RowArgMax {
    fn name(&self) -> StaticName {
        "RowArgMax".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowArgMax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let width = row_width(&input)?;
        let winners: Vec<i64> = input
            .try_as_plain_ram()?
            .as_slice::<f32>()?
            .chunks_exact(width)
            .map(|row| {
                let (mut best, mut best_value) = (0, f32::MIN);
                for (i, &x) in row.iter().enumerate() {
                    if x > best_value || (self.take_last && x == best_value) {
                        (best, best_value) = (i, x);
                    }
                }
                best as i64
            })
            .collect();
        let mut shape = input.shape().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = 1;
        }
        Ok(tvec!(Tensor::from_shape(&shape, &winners)?.into_tvalue()))
    }
}

/// The length of the last axis of a row-major tensor, whose rows are then consecutive slices.
fn row_width(tensor: &Tensor) -> TractResult<usize> {
    ensure!(tensor.strides() == &*Tensor::natural_strides(tensor.shape()), "rows are not contiguous");
    match tensor.shape().last() {
        Some(&width) if width > 0 => Ok(width),
        _ => bail!("no rows of width 1 or more in a tensor of shape {:?}", tensor.shape()),
    }
}

impl TypedOp for RowArgMax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.to_tvec();
        if let Some(last) = shape.last_mut() {
            *last = 1.to_dim();
        }
        Ok(tvec!(i64::fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of every awkward kind: ties, NaN, infinities, one column, equal values.
    fn awkward_rows(width: usize) -> Tensor {
        let specials = [0.0, 1.0, 1.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN, 3.5, -0.0, 1e-30];
        let rows = 200;
        let values: Vec<f32> =
            (0..rows * width)
                .map(|i| {
                    if i % 3 == 0 {
                        specials[(i * 7 / 3) % specials.len()]
                    } else {
                        ((i * 37 % 101) as f32 - 50.0) / 7.0
                    }
                })
                .collect();
        Tensor::from_shape(&[rows, width], &values).unwrap()
    }

    fn eval(op: &dyn TypedOp, input: &Tensor) -> Tensor {
        op.eval_out_of_plan(tvec!(input.clone().into_tvalue())).unwrap().unwrap().remove(0).into_tensor()
    }

    #[test]
    fn argmax_picks_exactly_what_tracts_reduce_picks() {
        for width in 1..=6 {
            let input = awkward_rows(width);
            for take_last in [false, true] {
                let ours = eval(&RowArgMax { take_last }, &input);
                let tracts = eval(&Reduce::new(tvec!(1), Reducer::ArgMax(take_last)), &input);
                assert_eq!(ours, tracts, "width {width}, take_last {take_last}");
            }
        }
    }

    #[test]
    fn softmax_agrees_with_tracts_within_float_rounding() {
        for width in 1..=6 {
            let input = awkward_rows(width);
            let ours = eval(&RowSoftmax, &input);
            let tracts = eval(&Softmax { axes: tvec!(1), ..Softmax::default() }, &input);
            let ours = ours.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
            let tracts = tracts.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
            for (i, (a, b)) in ours.iter().zip(&tracts).enumerate() {
                let close = (a - b).abs() <= 1e-6 || (a.is_nan() && b.is_nan());
                assert!(close, "width {width}, value {i}: {a} vs tract's {b}");
            }
        }
    }

    #[test]
    fn classifier_heads_are_replaced_and_wide_rows_are_left_alone() {
        let classifier_head = |width: usize| {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([8, width])).unwrap();
            let p = model.wire_node("softmax", Softmax { axes: tvec!(1), ..Softmax::default() }, &[x]).unwrap();
            let l = model.wire_node("argmax", Reduce::new(tvec!(1), Reducer::ArgMax(false)), &p).unwrap();
            model.select_output_outlets(&[p[0], l[0]]).unwrap();
            model
        };
        assert_eq!(replace_narrow_row_ops(&mut classifier_head(3)).unwrap(), 2);
        assert_eq!(replace_narrow_row_ops(&mut classifier_head(MAX_WIDTH + 1)).unwrap(), 0);
    }

    #[test]
    fn a_final_cast_of_labels_to_tdim_becomes_one_to_i64() {
        let labels_cast_to_dim = |used_later: bool| {
            let mut model = TypedModel::default();
            let x = model.add_source("x", i32::fact([4])).unwrap();
            let mut out = model.wire_node("cast", cast(TDim::datum_type()), &[x]).unwrap();
            if used_later {
                out = model.wire_node("again", cast(i64::datum_type()), &out).unwrap();
            }
            model.select_output_outlets(&out).unwrap();
            model
        };
        let mut model = labels_cast_to_dim(false);
        assert_eq!(replace_narrow_row_ops(&mut model).unwrap(), 1);
        assert_eq!(model.output_fact(0).unwrap().datum_type, i64::datum_type());
        let plan = model.into_runnable().unwrap();
        let labels = plan.run(tvec!(tensor1(&[2i32, 0, 1, 7]).into_tvalue())).unwrap().remove(0).into_tensor();
        assert_eq!(labels, tensor1(&[2i64, 0, 1, 7]));
        // A cast whose values go on to another op is left as it is.
        assert_eq!(replace_narrow_row_ops(&mut labels_cast_to_dim(true)).unwrap(), 0);
    }
}
