//! A plain loop in place of tract's max pool, for the image models' common case: NCHW f32, no
//! padding, no dilation, a fixed shape (SqueezeNet's 3x3 stride-2 pools).
//!
//! tract's loop takes each window's maximum along one chain of dependent comparisons: on
//! SqueezeNet its three pools took 12% of each image's time, waiting on that chain. This one
//! gathers one tap of every window of a row side by side and takes the maxima across windows,
//! which the compiler vectorises, and gives the same values.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{OptMaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Replaces every max pool the loop below can run; returns how many it replaced.
pub fn replace_max_pools(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<OptMaxPool>() else { continue };
        let Some(&input) = node.inputs.first() else { continue };
        let input_fact = model.outlet_fact(input)?;
        let output_fact = model.outlet_fact(OutletId::new(id, 0))?;
        let (Some(input_shape), Some(output_shape)) = (input_fact.shape.as_concrete(), output_fact.shape.as_concrete())
        else {
            continue;
        };
        let spec = &pool.pool_spec;
        let no_padding = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|&p| p == 0),
            PaddingSpec::ExplicitOnnxPool(before, after, ceil) => !ceil && before.iter().chain(after).all(|&p| p == 0),
            _ => false,
        };
        let plain = pool.with_index_outputs.is_none()
            && spec.data_format == DataFormat::NCHW
            && input_fact.datum_type == f32::datum_type()
            && input_shape.len() == 4
            && output_shape.len() == 4
            && spec.kernel_shape.len() == 2
            && spec.dilations.as_ref().is_none_or(|d| d.iter().all(|&d| d == 1))
            && no_padding;
        if !plain {
            continue;
        }
        let strides = spec.strides.clone().unwrap_or_else(|| tvec![1, 1]);
        let op = PlainMaxPool {
            kernel: (spec.kernel_shape[0], spec.kernel_shape[1]),
            stride: (strides[0], strides[1]),
            input: [input_shape[0], input_shape[1], input_shape[2], input_shape[3]],
            output: [output_shape[0], output_shape[1], output_shape[2], output_shape[3]],
        };
        let inputs = node.inputs.clone();
        TypedModelPatch::replace_single_op(model, model.node(id), &inputs, op)?.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// Max pool over `[n, c, h, w]`, without padding.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct PlainMaxPool {
    kernel: (usize, usize),
    stride: (usize, usize),
    input: [usize; 4],
    output: [usize; 4],
}

impl Op for PlainMaxPool {
    fn name(&self) -> StaticName {
        "PlainMaxPool".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PlainMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(input.shape() == self.input, "max pool input {:?}, planned for {:?}", input.shape(), self.input);
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<f32>()?;
        let [_, _, h, w] = self.input;
        let [_, _, oh, ow] = self.output;
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        ensure!((oh - 1) * sh + kh <= h && (ow - 1) * sw + kw <= w, "max pool window out of bounds");
        let mut output = Tensor::zero::<f32>(&self.output)?;
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let out = plain.as_slice_mut::<f32>()?;
            // One tap of every window of a row, side by side: the maxima then run across windows
            // (independent, vectorised) rather than along one window's chain. With stride 2 the
            // row is split once into its even and odd columns, and each tap is a slice of one.
            let mut taps = vec![0f32; ow];
            let (mut even, mut odd) = (vec![0f32; w.div_ceil(2)], vec![0f32; w / 2]);
            for (plane, out_plane) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
                for (oy, out_row) in out_plane.chunks_exact_mut(ow).enumerate() {
                    out_row.fill(f32::NEG_INFINITY);
                    for ky in 0..kh {
                        let row = &plane[(oy * sh + ky) * w..][..w];
                        if sw == 2 {
                            for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
                                (*e, *o) = (pair[0], pair[1]);
                            }
                            if w % 2 == 1 {
                                even[w / 2] = row[w - 1];
                            }
                        }
                        for kx in 0..kw {
                            let tap: &[f32] = if sw == 2 {
                                let phase = if kx % 2 == 0 { &even } else { &odd };
                                &phase[kx / 2..][..ow]
                            } else {
                                for (ox, tap) in taps.iter_mut().enumerate() {
                                    *tap = row[ox * sw + kx];
                                }
                                &taps
                            };
                            for (o, &v) in out_row.iter_mut().zip(tap) {
                                *o = if v > *o { v } else { *o };
                            }
                        }
                    }
                }
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for PlainMaxPool {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.output)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_loop_gives_tracts_values() {
        // A 1x2x7x9 map through a 3x3 stride-2 pool: the plain loop against tract's own.
        let values: Vec<f32> = (0..126).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let input = Tensor::from_shape(&[1, 2, 7, 9], &values).unwrap();
        let pool = PlainMaxPool { kernel: (3, 3), stride: (2, 2), input: [1, 2, 7, 9], output: [1, 2, 3, 4] };
        let ours = pool.eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue())).unwrap();
        let expected: Vec<f32> = (0..2)
            .flat_map(|c| {
                let values = &values;
                (0..3).flat_map(move |oy| {
                    (0..4).map(move |ox| {
                        (0..9)
                            .map(|k| values[c * 63 + (oy * 2 + k / 3) * 9 + ox * 2 + k % 3])
                            .fold(f32::NEG_INFINITY, f32::max)
                    })
                })
            })
            .collect();
        assert_eq!(ours[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(), &expected[..]);
    }
}
