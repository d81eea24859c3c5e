//! `LinearRegressor`: `y = x · coefficientsᵀ + intercepts`, a row at a time. tract's own wires a
//! matrix product whose shape checks fail when the features come out of a concatenation, as
//! scikit-learn's `PolynomialFeatures` exports them; the row loop has no such case.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::InferenceOp;

use super::post_transform::{PostTransform, probit};
use super::row_op::{Output, RowKernel, Width, floats, inference_op, matrix, text};

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("LinearRegressor", linear_regressor);
}

#[derive(Debug, Clone, PartialEq)]
struct LinearRegressor {
    /// `[targets, features]`, row-major.
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    targets: usize,
    post_transform: PostTransform,
}

fn linear_regressor(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let targets = node.get_attr_opt::<i64>("targets")?.unwrap_or(1);
    ensure!(targets >= 1, "targets is {targets}");
    let targets = targets as usize;
    let coefficients = floats(node, "coefficients")?.unwrap_or_default();
    ensure!(
        !coefficients.is_empty() && coefficients.len() % targets == 0,
        "{} coefficients for {targets} targets",
        coefficients.len()
    );
    let intercepts = floats(node, "intercepts")?.unwrap_or_else(|| vec![0.0; targets]);
    ensure!(intercepts.len() == targets, "{} intercepts for {targets} targets", intercepts.len());
    let post_transform = PostTransform::parse(text(node, "post_transform", "NONE")?)?;
    inference_op(LinearRegressor { coefficients, intercepts, targets, post_transform })
}

impl RowKernel for LinearRegressor {
    fn name(&self) -> &'static str {
        "LinearRegressor"
    }

    fn input_width(&self) -> Option<usize> {
        Some(self.coefficients.len() / self.targets)
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::floats(Width::Fixed(self.targets))]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let mut y = Vec::with_capacity(rows * self.targets);
        for row in x.chunks_exact(width) {
            let start = y.len();
            for (weights, intercept) in self.coefficients.chunks_exact(width).zip(&self.intercepts) {
                y.push(row.iter().zip(weights).map(|(a, b)| a * b).sum::<f32>() + intercept);
            }
            let scores = &mut y[start..];
            if self.targets >= 2 {
                self.post_transform.apply(scores);
            } else if self.post_transform == PostTransform::Probit {
                scores[0] = probit(scores[0]);
            }
        }
        Ok(tvec![matrix(y, rows, self.targets)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_is_a_dot_product_plus_its_intercept() {
        let kernel = LinearRegressor {
            coefficients: vec![1.0, 2.0, -1.0, 0.5],
            intercepts: vec![10.0, 0.0],
            targets: 2,
            post_transform: PostTransform::None,
        };
        let y = kernel.run(&[1.0, 1.0, 2.0, 4.0], 2, 2).unwrap();
        assert_eq!(y[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(), [13.0, -0.5, 20.0, 0.0]);
    }
}
