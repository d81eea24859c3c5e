//! `ReduceLogSumExp` as onnxruntime computes it: `max + log(sum(exp(x - max)))`. tract's
//! `log(sum(exp(x)))` overflows or underflows to infinities for the joint log-likelihoods of a
//! naive Bayes classifier (a few hundred below zero), which skl2onnx normalises with it.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, ShapeFactoid, Solver, TensorProxy, check_output_arity, expand,
};

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("ReduceLogSumExp", reduce_log_sum_exp);
}

/// Over `axes` (an attribute up to opset 17, a constant input from 18; every axis when there
/// are none, unless `noop_with_empty_axes`), keeping them as 1s when `keep_dims`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduceLogSumExp {
    axes: Option<Vec<i64>>,
    keep_dims: bool,
    noop_with_empty_axes: bool,
}

fn reduce_log_sum_exp(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let axes = node.get_attr_opt_vec::<i64>("axes")?;
    let keep_dims = node.get_attr_opt::<i64>("keepdims")?.unwrap_or(1) != 0;
    let noop_with_empty_axes = node.get_attr_opt::<i64>("noop_with_empty_axes")?.unwrap_or(0) != 0;
    Ok((expand(ReduceLogSumExp { axes, keep_dims, noop_with_empty_axes }), vec![]))
}

impl ReduceLogSumExp {
    /// The axes reduced, given the constant axes input, if any.
    fn axes(&self, rank: usize, input: Option<&[i64]>) -> TractResult<Vec<usize>> {
        let axes = input.or(self.axes.as_deref()).unwrap_or(&[]);
        if axes.is_empty() {
            return Ok(if self.noop_with_empty_axes { vec![] } else { (0..rank).collect() });
        }
        let mut axes = axes
            .iter()
            .map(|&axis| {
                let resolved = if axis < 0 { axis + rank as i64 } else { axis };
                ensure!((0..rank as i64).contains(&resolved), "ReduceLogSumExp: axis {axis} of rank {rank}");
                Ok(resolved as usize)
            })
            .collect::<TractResult<Vec<_>>>()?;
        axes.sort_unstable();
        axes.dedup();
        Ok(axes)
    }

    fn output_shape(&self, shape: &[TDim], axes: &[usize]) -> Vec<TDim> {
        shape
            .iter()
            .enumerate()
            .filter_map(|(axis, dim)| match axes.contains(&axis) {
                true if self.keep_dims => Some(1.to_dim()),
                true => None,
                false => Some(dim.clone()),
            })
            .collect()
    }
}

impl Expansion for ReduceLogSumExp {
    fn name(&self) -> StaticName {
        "ReduceLogSumExp".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        match inputs.len() {
            1 => s.given(&inputs[0].shape, move |s, shape| {
                let axes = self.axes(shape.len(), None)?;
                s.equals(&outputs[0].shape, ShapeFactoid::from(self.output_shape(&shape, &axes)))
            }),
            2 => s.given_2(&inputs[0].shape, &inputs[1].value, move |s, shape, axes| {
                let axes = axes.cast_to::<i64>()?;
                let axes = self.axes(shape.len(), Some(axes.try_as_plain_ram()?.as_slice::<i64>()?))?;
                s.equals(&outputs[0].shape, ShapeFactoid::from(self.output_shape(&shape, &axes)))
            }),
            n => bail!("ReduceLogSumExp takes 1 or 2 inputs, not {n}"),
        }
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank();
        let axes = match inputs.get(1) {
            None => self.axes(rank, None)?,
            Some(&axes) => {
                let Some(axes) = model.outlet_fact(axes)?.konst.clone() else {
                    bail!("ReduceLogSumExp: its axes must be a constant (an initializer)")
                };
                let axes = axes.cast_to::<i64>()?;
                self.axes(rank, Some(axes.try_as_plain_ram()?.as_slice::<i64>()?))?
            }
        };
        if axes.is_empty() {
            return Ok(tvec![inputs[0]]);
        }
        let inputs = &inputs[..1];
        let reduce = |reducer| Reduce::new(axes.iter().copied().collect(), reducer);
        let max = model.wire_node(format!("{prefix}.max"), reduce(Reducer::Max), inputs)?;
        let shifted = model.wire_node(format!("{prefix}.shifted"), math::sub(), &[inputs[0], max[0]])?;
        let exp = model.wire_node(format!("{prefix}.exp"), math::exp(), &shifted)?;
        let sum = model.wire_node(format!("{prefix}.sum"), reduce(Reducer::Sum), &exp)?;
        let log = model.wire_node(format!("{prefix}.log"), math::ln(), &sum)?;
        let mut out = model.wire_node(format!("{prefix}.plus_max"), math::add(), &[log[0], max[0]])?;
        if !self.keep_dims {
            for &axis in axes.iter().rev() {
                out = model.wire_node(format!("{prefix}.rm{axis}"), AxisOp::Rm(axis), &out)?;
            }
        }
        Ok(out)
    }
}
