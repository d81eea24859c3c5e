//! Time of a dense layer (`max(x · W + b, 0)`) run by tract's kernels and by sluice's row loop,
//! for layer sizes around the ones the engine hands to the row loop (`engine::ops::small_dense`).
//!
//!     cargo run --release --example dense_layers -p worker
//!
//! Each figure is the fastest of 5 rounds of 100 runs on 4,096 rows (the default batch), in
//! nanoseconds per row. Pin it to one core (`taskset -c 0`) for steadier figures.

use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math;
use worker::engine::model::clear_upper_vector_state;
use worker::engine::ops::small_dense::{replace_dense_layers_where, replace_small_dense_layers};

const ROWS: usize = 4096;

fn layer(k: usize, n: usize) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let rows = model.sym("N");
    let x = model.add_source("x", f32::fact(&[rows.to_dim(), k.to_dim()]))?;
    let values: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let w = model.add_const("w", Tensor::from_shape(&[k, n], &values)?)?;
    let y = model.wire_node("product", EinSum::new("mk,kn->mn".parse()?, f32::datum_type()), &[x, w])?;
    let b = model.add_const("b", Tensor::from_shape(&[1, n], &values[..n])?)?;
    let y = model.wire_node("bias", math::add(), &[y[0], b])?;
    let zero = model.add_const("zero", tensor2(&[[0f32]]))?;
    let y = model.wire_node("relu", math::max(), &[y[0], zero])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

/// Nanoseconds a row for `model` on `input`.
fn time(model: TypedModel, input: &Tensor) -> TractResult<f64> {
    let plan = model.into_optimized()?.into_runnable()?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..100 {
            plan.run(tvec!(input.clone().into_tvalue()))?;
            clear_upper_vector_state();
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best / 100.0 / ROWS as f64 * 1e9)
}

fn main() -> TractResult<()> {
    println!(
        "{:>8} {:>8} {:>12} {:>12} {:>8}  engine uses",
        "features", "outputs", "tract ns/row", "loop ns/row", "speedup"
    );
    for (k, n) in [(4, 3), (8, 3), (4, 4), (4, 8), (8, 8), (16, 16), (64, 16), (128, 8), (256, 4), (4, 32)] {
        let values: Vec<f32> = (0..ROWS * k).map(|i| (i % 13) as f32 * 0.2).collect();
        let input = Tensor::from_shape(&[ROWS, k], &values)?;
        let tract = time(layer(k, n)?, &input)?;
        let row_loop = if n <= 16 {
            let mut model = layer(k, n)?;
            replace_dense_layers_where(&mut model, |_, _| true)?;
            let ours = time(model, &input)?;
            format!("{ours:12.1} {:7.1}x", tract / ours)
        } else {
            format!("{:>12} {:>8}", "-", "-")
        };
        let uses = if replace_small_dense_layers(&mut layer(k, n)?)? == 1 { "row loop" } else { "tract" };
        println!("{k:>8} {n:>8} {tract:12.1} {row_loop}  {uses}");
    }
    Ok(())
}
