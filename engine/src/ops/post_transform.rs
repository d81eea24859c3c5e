//! The `post_transform` of ONNX-ML classifiers and regressors: what turns raw scores into
//! probabilities. The formulas are onnxruntime's (a logistic that never overflows, its
//! approximation of the inverse error function for probit, softmax dividing by the sum).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    /// The string attribute of the classic operators.
    pub fn parse(name: &str) -> TractResult<Self> {
        Ok(match name {
            "NONE" => Self::None,
            "SOFTMAX" => Self::Softmax,
            "LOGISTIC" => Self::Logistic,
            "SOFTMAX_ZERO" => Self::SoftmaxZero,
            "PROBIT" => Self::Probit,
            other => bail!("post_transform {other:?} is not one of NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO, PROBIT"),
        })
    }

    /// The integer attribute of `TreeEnsemble` (ai.onnx.ml opset 5).
    pub fn from_code(code: i64) -> TractResult<Self> {
        Ok(match code {
            0 => Self::None,
            1 => Self::Softmax,
            2 => Self::Logistic,
            3 => Self::SoftmaxZero,
            4 => Self::Probit,
            other => bail!("post_transform {other} is not one of 0 (NONE) to 4 (PROBIT)"),
        })
    }

    /// Applies the transform to one row's scores, as onnxruntime does to two or more of them.
    pub fn apply(self, scores: &mut [f32]) {
        match self {
            Self::None => {}
            Self::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
            Self::Probit => scores.iter_mut().for_each(|s| *s = probit(*s)),
            Self::Softmax => softmax(scores),
            Self::SoftmaxZero => softmax_zero(scores),
        }
    }
}

pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

pub fn probit(p: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * p - 1.0)
}

/// The inverse error function, by the closed-form approximation onnxruntime uses (a = 0.147).
fn erf_inv(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let ln = ((1.0 - x) * (1.0 + x)).ln();
    // onnxruntime's constant is 3.14159, not π: kept so probits agree to the last bit.
    #[allow(clippy::approx_constant)]
    let pi = 3.14159f32;
    let a = 2.0 / (pi * 0.147) + 0.5 * ln;
    let b = ln / 0.147;
    sign * (-a + (a * a - b).sqrt()).sqrt()
}

pub fn softmax(scores: &mut [f32]) {
    let max = scores.iter().fold(-f32::MAX, |m, &s| if s > m { s } else { m });
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

/// Softmax over the non-zero scores; a zero stays (nearly) zero.
pub fn softmax_zero(scores: &mut [f32]) {
    let max = scores.iter().fold(-f32::MAX, |m, &s| if s > m { s } else { m });
    let exp_neg_max = (-max).exp();
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        if s.abs() > 1e-7 {
            *s = (*s - max).exp();
            sum += *s;
        } else {
            *s *= exp_neg_max;
        }
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_is_symmetric_and_never_overflows() {
        assert_eq!(logistic(0.0), 0.5);
        assert!((logistic(2.0) + logistic(-2.0) - 1.0).abs() < 1e-7);
        assert_eq!((logistic(1e4), logistic(-1e4)), (1.0, 0.0));
    }

    #[test]
    fn probit_inverts_the_normal_distribution_function_closely() {
        // Φ(1) = 0.841344746, Φ(-0.5) = 0.308537539
        assert!((probit(0.841_344_7) - 1.0).abs() < 2e-3, "{}", probit(0.841_344_7));
        assert!((probit(0.308_537_5) + 0.5).abs() < 2e-3, "{}", probit(0.308_537_5));
        assert_eq!(probit(0.5), 0.0);
    }

    #[test]
    fn softmax_zero_leaves_zero_scores_out_of_the_sum() {
        let mut scores = [0.0, 1.0, 1.0];
        softmax_zero(&mut scores);
        assert_eq!(scores, [0.0, 0.5, 0.5]);
        let mut scores = [0.0, 1.0, 1.0];
        PostTransform::Softmax.apply(&mut scores);
        let e = (-1f32).exp();
        assert!((scores[0] - e / (e + 2.0)).abs() < 1e-7, "{scores:?}");
    }
}
