//! A plain row loop in place of tract's matrix product for small dense layers.
//!
//! Tabular models multiply each row of a few features by a small constant weight matrix: 4x8 then
//! 8x3 in the iris MLP. tract runs every matrix product through its general kernels, whose tiles
//! are made for large matrices; for a layer of 4 to 16 outputs it ends up spending several times
//! the work of the products (with AVX-512, a 64-row tile holding the 8 outputs of one row). A loop
//! over the rows with the outputs in registers measured 1.3-10 times faster there (the table in
//! `bench/RESULTS.md`); with 3 outputs or fewer tract's tiles fit and it is as fast or faster
//! (`cargo run --release --example dense_layers -p worker` measures both).
//! [`replace_small_dense_layers`] swaps each product of an f32 `[rows, k]` input by constant `[k,
//! n]` (or `[n, k]`) weights with `n` in [`OUTPUTS`] and `k` up to [`MAX_FEATURES`] for
//! [`RowDense`], which also takes in the bias added next and a ReLU after that, when the model has
//! them. It runs on the decluttered model, before tract's own optimisation, which then leaves it
//! alone.
//!
//! Every row is computed on its own, the same way wherever it falls in a batch. The sums differ
//! from tract's in the last bits (tract's kernels use fused multiply-adds); the tests check them
//! against tract's within 1e-5 relative.

use std::ops::RangeInclusive;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Max};

/// Output counts the row loop takes: fewer fit tract's tiles; more, and tract's kernels win.
pub const OUTPUTS: RangeInclusive<usize> = 4..=16;
/// Layers over more features than this keep tract's kernels.
pub const MAX_FEATURES: usize = 128;

/// Replaces each small dense layer (a matrix product by constant weights, with the bias and
/// ReLU that follow it) by one [`RowDense`]; returns how many it replaced.
pub fn replace_small_dense_layers(model: &mut TypedModel) -> TractResult<usize> {
    replace_dense_layers_where(model, |k, n| k <= MAX_FEATURES && OUTPUTS.contains(&n))
}

/// [`replace_small_dense_layers`] for the layers of `k` features and `n` outputs that `take`
/// says (`n` at most 16), for comparing the two ways on any size.
pub fn replace_dense_layers_where(model: &mut TypedModel, take: impl Fn(usize, usize) -> bool) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some(mut layer) = dense_product(model, id)? else { continue };
        if !(take(layer.k, layer.n) && layer.n <= *OUTPUTS.end()) {
            continue;
        }
        // The outlet whose value the layer's op will produce: the product's, or the bias sum's,
        // or the ReLU's.
        let mut last = OutletId::new(id, 0);
        if let Some((next, bias)) = sole_successor_with_constant::<Add>(model, last)?
            && bias.len() == layer.n
        {
            layer.bias = Some(Arc::new(tensor1(&bias)));
            last = OutletId::new(next, 0);
        }
        if let Some((next, zero)) = sole_successor_with_constant::<Max>(model, last)?
            && zero == [0.0]
        {
            layer.relu = true;
            last = OutletId::new(next, 0);
        }
        let input = model.node(id).inputs[0];
        let mut patch = TypedModelPatch::new(format!("small dense layer {}", model.node(id).name));
        let tap = patch.tap_model(model, input)?;
        let wire = patch.wire_node(format!("{}.row_dense", model.node(id).name), layer, &[tap])?;
        patch.shunt_outside(model, last, wire[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The layer node `id` computes, if it is a product of an f32 `[rows, k]` input by constant
/// `[k, n]` or `[n, k]` weights.
fn dense_product(model: &TypedModel, id: usize) -> TractResult<Option<RowDense>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else { return Ok(None) };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let (input, weights) = (model.outlet_fact(node.inputs[0])?, model.outlet_fact(node.inputs[1])?);
    let Some(konst) = weights.konst.as_ref() else { return Ok(None) };
    if input.datum_type != f32::datum_type() || konst.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    // "ab,bc->ac" (weights k x n) or "ab,cb->ac" (n x k), whatever the letters.
    let (inputs, outputs) = einsum.axes.to_strs();
    let chars = |s: &str| s.chars().collect::<Vec<_>>();
    let (x, w, y) = (chars(&inputs[0]), chars(&inputs[1]), chars(&outputs[0]));
    let &[row, k_axis] = x.as_slice() else { return Ok(None) };
    let &[out_row, n_axis] = y.as_slice() else { return Ok(None) };
    if row != out_row || k_axis == n_axis || row == k_axis || row == n_axis {
        return Ok(None);
    }
    let shape = konst.shape();
    let (k, n, transposed) = match *w.as_slice() {
        [a, b] if (a, b) == (k_axis, n_axis) => (shape[0], shape[1], false),
        [a, b] if (a, b) == (n_axis, k_axis) => (shape[1], shape[0], true),
        _ => return Ok(None),
    };
    if k == 0 || n == 0 || input.shape[1].to_usize().ok() != Some(k) {
        return Ok(None);
    }
    let weights = konst.try_as_plain_ram()?.as_slice::<f32>()?;
    // Stored k-major: row i holds the weights of feature i for each of the n outputs.
    let weights: Vec<f32> = if transposed {
        (0..k).flat_map(|i| (0..n).map(move |j| weights[j * k + i])).collect()
    } else {
        weights.to_vec()
    };
    let weights = Arc::new(Tensor::from_shape(&[k, n], &weights)?);
    Ok(Some(RowDense { k, n, weights, bias: None, relu: false }))
}

/// The single node `outlet` feeds, when it is the binary op `B` of that outlet and a constant
/// (in either order), `outlet` is not a model output, and the result has the outlet's shape;
/// with the constant's values.
fn sole_successor_with_constant<B: BinMiniOp>(
    model: &TypedModel,
    outlet: OutletId,
) -> TractResult<Option<(usize, Vec<f32>)>> {
    let successors = &model.node(outlet.node).outputs[outlet.slot].successors;
    if successors.len() != 1 || model.outputs.contains(&outlet) {
        return Ok(None);
    }
    let next = model.node(successors[0].node);
    if !next.op_as::<TypedBinOp>().is_some_and(|bin| bin.0.is::<B>() && bin.1.is_none()) {
        return Ok(None);
    }
    let Some(&other) = next.inputs.iter().find(|&&input| input != outlet) else { return Ok(None) };
    let Some(konst) = model.outlet_fact(other)?.konst.as_ref() else { return Ok(None) };
    let same_shape = model.outlet_fact(OutletId::new(next.id, 0))?.shape == model.outlet_fact(outlet)?.shape;
    // A constant broadcast along the rows: shape [n], [1, n] or [1, 1].
    let along_rows = konst.rank() <= 2 && konst.shape().iter().rev().skip(1).all(|&d| d == 1);
    if !same_shape || !along_rows || konst.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    Ok(Some((next.id, konst.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())))
}

/// `y = x · W (+ bias) (then max(y, 0))`, row by row: `[rows, k]` in, `[rows, n]` out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowDense {
    k: usize,
    n: usize,
    /// `[k, n]`: row `i` holds feature `i`'s weight for each output.
    weights: Arc<Tensor>,
    /// `[n]`, added to the products' sums.
    bias: Option<Arc<Tensor>>,
    relu: bool,
}

impl Op for RowDense {
    fn name(&self) -> StaticName {
        "RowDense".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowDense {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(input.rank() == 2 && input.shape()[1] == self.k, "RowDense: input of shape {:?}", input.shape());
        let rows = input.shape()[0];
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let weights = self.weights.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = match &self.bias {
            Some(bias) => Some(bias.try_as_plain_ram()?.as_slice::<f32>()?),
            None => None,
        };
        ensure!(weights.len() == self.k * self.n && bias.is_none_or(|bias| bias.len() == self.n));
        let mut y = vec![0f32; rows * self.n];
        // One loop for each width, so a row's sums stay in registers.
        macro_rules! by_width {
            ($($n:literal)*) => {
                match self.n {
                    $($n => dense_rows::<$n>(x, self.k, weights, bias, self.relu, &mut y),)*
                    n => bail!("RowDense: {n} outputs"),
                }
            };
        }
        by_width!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        Ok(tvec!(tract_ndarray::Array2::from_shape_vec((rows, self.n), y)?.into_tvalue()))
    }
}

/// `y = x · W (+ bias) (then max(y, 0))` for the rows of `x` (`k` features each) and `N` outputs;
/// `weights` holds `k * N` values, `bias` `N`.
fn dense_rows<const N: usize>(x: &[f32], k: usize, weights: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let weights = weights.as_chunks::<N>().0;
    let bias = bias.and_then(|bias| bias.as_chunks::<N>().0.first());
    for (x, y) in x.chunks_exact(k).zip(y.as_chunks_mut::<N>().0) {
        let mut acc = [0f32; N];
        for (&xi, w) in x.iter().zip(weights) {
            for j in 0..N {
                acc[j] += xi * w[j];
            }
        }
        if let Some(bias) = bias {
            for j in 0..N {
                acc[j] += bias[j];
            }
        }
        if relu {
            for a in &mut acc {
                *a = a.max(0.0);
            }
        }
        *y = acc;
    }
}

impl TypedOp for RowDense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact([inputs[0].shape[0].clone(), self.n.to_dim()])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::math;

    /// Deterministic values in [-2, 2), with some exact zeros (which the ReLU must keep).
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if i % 11 == 0 { 0.0 } else { ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 }
            })
            .collect()
    }

    /// `x · W (+ b) (ReLU)` as tract builds a dense layer, for `[rows, k]` inputs; `layout` is
    /// the product's einsum expression ("mk,kn->mn" or "mk,nk->mn").
    fn layer(k: usize, n: usize, layout: &str, bias: bool, relu: bool) -> TypedModel {
        let mut model = TypedModel::default();
        let rows = model.sym("N");
        let x = model.add_source("x", f32::fact(&[rows.to_dim(), k.to_dim()])).unwrap();
        let shape = if layout == "mk,kn->mn" { [k, n] } else { [n, k] };
        let w = model.add_const("w", Tensor::from_shape(&shape, &values(k * n, 7)).unwrap()).unwrap();
        let product = EinSum::new(layout.parse().unwrap(), f32::datum_type());
        let mut y = model.wire_node("product", product, &[x, w]).unwrap();
        if bias {
            let b = model.add_const("b", Tensor::from_shape(&[1, n], &values(n, 11)).unwrap()).unwrap();
            y = model.wire_node("bias", math::add(), &[y[0], b]).unwrap();
        }
        if relu {
            let zero = model.add_const("zero", tensor2(&[[0f32]])).unwrap();
            y = model.wire_node("relu", math::max(), &[y[0], zero]).unwrap();
        }
        model.select_output_outlets(&y).unwrap();
        model
    }

    fn run(model: TypedModel, input: &Tensor) -> Vec<f32> {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let output = plan.run(tvec!(input.clone().into_tvalue())).unwrap().remove(0).into_tensor();
        output.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn small_layers_give_tracts_results_in_every_layout() {
        for (k, n) in [(4, 8), (1, 4), (10, 5), (3, 16), (128, 9)] {
            for layout in ["mk,kn->mn", "mk,nk->mn"] {
                for (bias, relu) in [(false, false), (true, false), (true, true), (false, true)] {
                    let case = format!("k {k}, n {n}, {layout}, bias {bias}, relu {relu}");
                    let rows = 37;
                    let input = Tensor::from_shape(&[rows, k], &values(rows * k, 3)).unwrap();
                    let mut ours = layer(k, n, layout, bias, relu);
                    assert_eq!(replace_small_dense_layers(&mut ours).unwrap(), 1, "{case}");
                    // The bias and the ReLU are taken into the one op.
                    let dense = ours.nodes().iter().find_map(|node| node.op_as::<RowDense>()).unwrap();
                    assert_eq!((dense.bias.is_some(), dense.relu), (bias, relu), "{case}");
                    let (ours, tracts) = (run(ours, &input), run(layer(k, n, layout, bias, relu), &input));
                    assert_eq!(ours.len(), rows * n, "{case}");
                    for (i, (a, b)) in ours.iter().zip(&tracts).enumerate() {
                        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{case}, value {i}: {a} vs tract's {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn large_layers_products_of_two_inputs_and_shared_sums_are_left_to_tract() {
        // Too few outputs, too many outputs, too many features: tract's kernels.
        for (k, n) in [(8, 3), (4, 17), (129, 8)] {
            assert_eq!(replace_small_dense_layers(&mut layer(k, n, "mk,kn->mn", true, true)).unwrap(), 0, "{k}x{n}");
        }

        // Weights that are an input, not a constant.
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([8, 4])).unwrap();
        let w = model.add_source("w", f32::fact([4, 8])).unwrap();
        let product = EinSum::new("mk,kn->mn".parse().unwrap(), f32::datum_type());
        let y = model.wire_node("product", product, &[x, w]).unwrap();
        model.select_output_outlets(&y).unwrap();
        assert_eq!(replace_small_dense_layers(&mut model).unwrap(), 0);

        // A product that is also an output of the model keeps its value: the bias is not taken in.
        let mut model = layer(4, 8, "mk,kn->mn", true, false);
        let product = OutletId::new(model.node_by_name("product").unwrap().id, 0);
        let mut outputs = model.output_outlets().unwrap().to_vec();
        outputs.push(product);
        model.select_output_outlets(&outputs).unwrap();
        assert_eq!(replace_small_dense_layers(&mut model).unwrap(), 1);
        let dense = model.nodes().iter().find_map(|node| node.op_as::<RowDense>()).unwrap();
        assert!(dense.bias.is_none());
    }
}
