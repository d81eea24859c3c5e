//! Feature preprocessing, as scikit-learn pipelines export it: `Scaler` (StandardScaler,
//! MinMaxScaler, RobustScaler, MaxAbsScaler), `Imputer` (SimpleImputer), `Normalizer` and
//! `Binarizer`. Each maps a row to a row of the same width, with onnxruntime's formulas.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::InferenceOp;

use super::row_op::{Output, RowKernel, Width, floats, inference_op, matrix, text};

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("Scaler", scaler);
    register.insert("Imputer", imputer);
    register.insert("Normalizer", normalizer);
    register.insert("Binarizer", binarizer);
}

/// A per-feature parameter: one value for every feature, or one per feature.
#[derive(Debug, Clone, PartialEq)]
struct PerFeature(Vec<f32>);

impl PerFeature {
    fn input_width(&self) -> Option<usize> {
        (self.0.len() > 1).then_some(self.0.len())
    }

    /// The value for each of `width` features.
    fn expand(&self, width: usize) -> Vec<f32> {
        match self.0[..] {
            [one] => vec![one; width],
            _ => self.0.clone(),
        }
    }
}

fn per_feature(node: &NodeProto, name: &str, default: Option<f32>) -> TractResult<PerFeature> {
    match (floats(node, name)?, default) {
        (Some(values), _) if !values.is_empty() => Ok(PerFeature(values)),
        (_, Some(default)) => Ok(PerFeature(vec![default])),
        _ => bail!("attribute {name} is missing"),
    }
}

fn same_width(widths: [Option<usize>; 2]) -> TractResult<Option<usize>> {
    match widths {
        [Some(a), Some(b)] if a != b => bail!("its per-feature attributes have {a} and {b} values"),
        [a, b] => Ok(a.or(b)),
    }
}

/// y = (x - offset) * scale.
#[derive(Debug, Clone, PartialEq)]
struct Scaler {
    offset: PerFeature,
    scale: PerFeature,
    width: Option<usize>,
}

fn scaler(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset = per_feature(node, "offset", Some(0.0))?;
    let scale = per_feature(node, "scale", Some(1.0))?;
    let width = same_width([offset.input_width(), scale.input_width()])?;
    inference_op(Scaler { offset, scale, width })
}

impl RowKernel for Scaler {
    fn name(&self) -> &'static str {
        "Scaler"
    }

    fn input_width(&self) -> Option<usize> {
        self.width
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::floats(Width::Input)]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let (offset, scale) = (self.offset.expand(width), self.scale.expand(width));
        let mut y = x.to_vec();
        for row in y.chunks_exact_mut(width) {
            for ((v, o), s) in row.iter_mut().zip(&offset).zip(&scale) {
                *v = (*v - o) * s;
            }
        }
        Ok(tvec![matrix(y, rows, width)?])
    }
}

/// Replaces `replaced_value_float` (NaN by default: missing values) with the imputed values.
#[derive(Debug, Clone, PartialEq)]
struct Imputer {
    imputed: PerFeature,
    replaced: f32,
}

fn imputer(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    ensure!(
        node.get_attr_opt_vec::<i64>("imputed_value_int64s")?.is_none_or(|v| v.is_empty()),
        "attribute imputed_value_int64s (integer imputation) is not supported; impute floats"
    );
    let imputed = per_feature(node, "imputed_value_floats", None)?;
    let replaced = node.get_attr_opt::<f32>("replaced_value_float")?.unwrap_or(0.0);
    inference_op(Imputer { imputed, replaced })
}

impl RowKernel for Imputer {
    fn name(&self) -> &'static str {
        "Imputer"
    }

    fn input_width(&self) -> Option<usize> {
        self.imputed.input_width()
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::floats(Width::Input)]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let imputed = self.imputed.expand(width);
        let replace = |v: f32| if self.replaced.is_nan() { v.is_nan() } else { v == self.replaced };
        let mut y = x.to_vec();
        for row in y.chunks_exact_mut(width) {
            for (v, &with) in row.iter_mut().zip(&imputed) {
                if replace(*v) {
                    *v = with;
                }
            }
        }
        Ok(tvec![matrix(y, rows, width)?])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Norm {
    Max,
    L1,
    L2,
}

/// Each row divided by its maximum, its sum of absolute values or its Euclidean length (left as
/// it is when that is 0).
#[derive(Debug, Clone, PartialEq)]
struct Normalizer {
    norm: Norm,
}

fn normalizer(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let norm = match text(node, "norm", "MAX")? {
        "MAX" => Norm::Max,
        "L1" => Norm::L1,
        "L2" => Norm::L2,
        other => bail!("norm {other:?} is not one of MAX, L1, L2"),
    };
    inference_op(Normalizer { norm })
}

impl RowKernel for Normalizer {
    fn name(&self) -> &'static str {
        "Normalizer"
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::floats(Width::Input)]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let mut y = x.to_vec();
        for row in y.chunks_exact_mut(width) {
            let divisor = match self.norm {
                Norm::Max => row.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                Norm::L1 => row.iter().map(|v| v.abs()).sum(),
                Norm::L2 => row.iter().map(|v| v * v).sum::<f32>().sqrt(),
            };
            if divisor != 0.0 {
                row.iter_mut().for_each(|v| *v /= divisor);
            }
        }
        Ok(tvec![matrix(y, rows, width)?])
    }
}

/// 1 where the value is above the threshold, else 0.
#[derive(Debug, Clone, PartialEq)]
struct Binarizer {
    threshold: f32,
}

fn binarizer(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    inference_op(Binarizer { threshold: node.get_attr_opt::<f32>("threshold")?.unwrap_or(0.0) })
}

impl RowKernel for Binarizer {
    fn name(&self) -> &'static str {
        "Binarizer"
    }

    fn elementwise(&self) -> bool {
        true
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::floats(Width::Input)]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let y = x.iter().map(|&v| if v > self.threshold { 1.0 } else { 0.0 }).collect();
        Ok(tvec![matrix(y, rows, width)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kernel: &impl RowKernel, x: &[f32], width: usize) -> Vec<f32> {
        let out = kernel.run(x, x.len() / width, width).unwrap();
        out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn scaler_subtracts_then_multiplies_per_feature_or_for_all() {
        let scaler = Scaler { offset: PerFeature(vec![1.0, 2.0]), scale: PerFeature(vec![0.5]), width: Some(2) };
        assert_eq!(run(&scaler, &[3.0, 4.0, 1.0, 0.0], 2), [1.0, 1.0, 0.0, -1.0]);
    }

    #[test]
    fn imputer_replaces_missing_values_or_a_chosen_one() {
        let nan = Imputer { imputed: PerFeature(vec![7.0, 8.0]), replaced: f32::NAN };
        assert_eq!(run(&nan, &[f32::NAN, 1.0, 0.0, f32::NAN], 2), [7.0, 1.0, 0.0, 8.0]);
        let zero = Imputer { imputed: PerFeature(vec![9.0]), replaced: 0.0 };
        assert_eq!(run(&zero, &[0.0, 1.0], 2), [9.0, 1.0]);
    }

    #[test]
    fn normalizer_divides_by_the_norm_and_leaves_zero_rows() {
        assert_eq!(run(&Normalizer { norm: Norm::L1 }, &[1.0, -3.0, 0.0, 0.0], 2), [0.25, -0.75, 0.0, 0.0]);
        assert_eq!(run(&Normalizer { norm: Norm::L2 }, &[3.0, 4.0], 2), [0.6, 0.8]);
        assert_eq!(run(&Normalizer { norm: Norm::Max }, &[2.0, 4.0], 2), [0.5, 1.0]);
    }

    #[test]
    fn binarizer_is_strictly_above_the_threshold() {
        assert_eq!(run(&Binarizer { threshold: 0.5 }, &[0.5, 0.6], 2), [0.0, 1.0]);
    }
}
