//! Support vector machines: `SVMClassifier` and `SVMRegressor`, as scikit-learn's SVC, NuSVC,
//! SVR, NuSVR and OneClassSVM export them (libsvm's support vectors and kernels), or a linear
//! model in liblinear's form (no support vectors).
//!
//! As onnxruntime computes them: kernels in f32, each pair of classes' decision value summed in
//! f64; the label by the pairs' votes (the first class with the most), probabilities by Platt's
//! sigmoids coupled with libsvm's iterative method, a binary model's second score derived.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::InferenceOp;

use super::labels::Labels;
use super::post_transform::{PostTransform, logistic, probit};
use super::row_op::{Output, RowKernel, Width, floats, inference_op, matrix, text};

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("SVMClassifier", classifier);
    register.insert("SVMRegressor", regressor);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kernel {
    Linear,
    /// `(gamma x·v + coef0)^degree`
    Poly {
        gamma: f32,
        coef0: f32,
        degree: f32,
    },
    /// `exp(-gamma |x - v|²)`
    Rbf {
        gamma: f32,
    },
    /// `tanh(gamma x·v + coef0)`
    Sigmoid {
        gamma: f32,
        coef0: f32,
    },
}

impl Kernel {
    fn parse(node: &NodeProto) -> TractResult<Self> {
        let params = floats(node, "kernel_params")?.unwrap_or_default();
        let param = |i: usize| params.get(i).copied().unwrap_or(0.0);
        let (gamma, coef0, degree) = (param(0), param(1), param(2));
        Ok(match text(node, "kernel_type", "LINEAR")? {
            "LINEAR" => Self::Linear,
            "POLY" => Self::Poly { gamma, coef0, degree },
            "RBF" => Self::Rbf { gamma },
            "SIGMOID" => Self::Sigmoid { gamma, coef0 },
            other => bail!("kernel_type {other:?} is not one of LINEAR, POLY, RBF, SIGMOID"),
        })
    }

    /// The kernel of a row `x` with a vector `v`; `bias` is added to a linear kernel's product.
    fn apply(self, x: &[f32], v: &[f32], bias: f32) -> f32 {
        let dot = || x.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
        match self {
            Self::Linear => dot() + bias,
            Self::Poly { gamma, coef0, degree } => {
                let base = gamma * dot() + coef0;
                match degree {
                    2.0 => base * base,
                    3.0 => base * base * base,
                    _ => base.powf(degree),
                }
            }
            Self::Rbf { gamma } => (-gamma * x.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()).exp(),
            Self::Sigmoid { gamma, coef0 } => (gamma * dot() + coef0).tanh(),
        }
    }
}

/// A classifier's support vectors: those of each class, one after the other.
#[derive(Debug, Clone, PartialEq)]
struct Support {
    /// `[vectors, features]`
    vectors: Vec<f32>,
    per_class: Vec<usize>,
    starts: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
struct SvmClassifier {
    kernel: Kernel,
    labels: Labels,
    /// libsvm: `[classes - 1, vectors]` dual coefficients; liblinear: `[classes, features]`.
    coefficients: Vec<f32>,
    rho: Vec<f32>,
    /// Platt scaling per pair of classes, when the model was trained for probabilities.
    prob_a: Vec<f32>,
    prob_b: Vec<f32>,
    support: Option<Support>,
    features: usize,
    post_transform: PostTransform,
    all_positive: bool,
}

fn classifier(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_ints")?;
    let classes = labels.len();
    let coefficients = floats(node, "coefficients")?.unwrap_or_default();
    let rho = floats(node, "rho")?.unwrap_or_default();
    let prob_a = floats(node, "prob_a")?.unwrap_or_default();
    let prob_b = floats(node, "prob_b")?.unwrap_or_default();
    ensure!(!coefficients.is_empty(), "attribute coefficients is empty");
    ensure!(prob_a.len() == prob_b.len(), "prob_a and prob_b differ in length");
    let per_class: Vec<usize> = node
        .get_attr_opt_vec::<i64>("vectors_per_class")?
        .unwrap_or_default()
        .into_iter()
        .map(|n| usize::try_from(n).map_err(|_| format_err!("vectors_per_class holds {n}")))
        .collect::<TractResult<_>>()?;
    let n_vectors: usize = per_class.iter().sum();
    let pairs = classes * (classes - 1) / 2;
    let (support, features) = if n_vectors > 0 {
        let vectors = floats(node, "support_vectors")?.unwrap_or_default();
        ensure!(per_class.len() == classes, "vectors_per_class has {} classes, the labels {classes}", per_class.len());
        ensure!(vectors.len() % n_vectors == 0, "{} support vector values for {n_vectors} vectors", vectors.len());
        ensure!(coefficients.len() >= (classes - 1) * n_vectors, "too few coefficients for the support vectors");
        ensure!(rho.len() >= pairs, "rho has {} values for {pairs} pairs of classes", rho.len());
        ensure!(prob_a.is_empty() || prob_a.len() >= pairs, "prob_a has {} values for {pairs} pairs", prob_a.len());
        let starts = per_class.iter().scan(0, |start, &n| Some(std::mem::replace(start, *start + n))).collect();
        let features = vectors.len() / n_vectors;
        (Some(Support { vectors, per_class, starts }), features)
    } else {
        ensure!(coefficients.len() % classes == 0, "{} coefficients for {classes} classes", coefficients.len());
        ensure!(!rho.is_empty(), "attribute rho is empty");
        (None, coefficients.len() / classes)
    };
    let kernel = if support.is_some() { Kernel::parse(node)? } else { Kernel::Linear };
    inference_op(SvmClassifier {
        kernel,
        all_positive: coefficients.iter().all(|&c| c >= 0.0),
        labels,
        coefficients,
        rho,
        prob_a,
        prob_b,
        support,
        features,
        post_transform: PostTransform::parse(text(node, "post_transform", "NONE")?)?,
    })
}

impl SvmClassifier {
    fn pairs(&self) -> usize {
        let classes = self.labels.len();
        classes * (classes - 1) / 2
    }

    /// Scores a row gets: one per class, or one per pair of classes for libsvm without
    /// probabilities (two for two classes).
    fn width(&self) -> usize {
        match self.support {
            Some(_) if self.prob_a.is_empty() => self.pairs().max(2),
            _ => self.labels.len(),
        }
    }
}

impl RowKernel for SvmClassifier {
    fn name(&self) -> &'static str {
        "SVMClassifier"
    }

    fn input_width(&self) -> Option<usize> {
        Some(self.features)
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::labels(self.labels.datum_type()), Output::floats(Width::Fixed(self.width()))]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let classes = self.labels.len();
        let out_width = self.width();
        let mut scores = vec![0f32; rows * out_width];
        let mut labels = Vec::with_capacity(rows);
        let mut kernels = Vec::new();
        let mut pair_scores = vec![0f32; self.pairs()];
        let mut votes = vec![0usize; classes];
        for (row, out) in x.chunks_exact(width).zip(scores.chunks_exact_mut(out_width)) {
            let Some(support) = &self.support else {
                // liblinear: one score per class, rho[0] added to each.
                for (score, weights) in out.iter_mut().zip(self.coefficients.chunks_exact(width)) {
                    *score = Kernel::Linear.apply(row, weights, self.rho[0]);
                }
                let (best, &max) =
                    out.iter().enumerate().fold((0, &out[0]), |m, (i, s)| if *s > *m.1 { (i, s) } else { m });
                labels.push(if classes == 2 { self.binary_label(max, best) } else { best });
                self.post_transform.apply(out);
                continue;
            };
            kernels.clear();
            kernels.extend(support.vectors.chunks_exact(width).map(|v| self.kernel.apply(row, v, 0.0)));
            votes.fill(0);
            let n_vectors = kernels.len();
            let mut pair = 0;
            for i in 0..classes {
                for j in i + 1..classes {
                    let (si, sj) = (support.starts[i], support.starts[j]);
                    let mut sum = 0f64;
                    for m in 0..support.per_class[i] {
                        sum += f64::from(self.coefficients[n_vectors * (j - 1) + si + m] * kernels[si + m]);
                    }
                    for m in 0..support.per_class[j] {
                        sum += f64::from(self.coefficients[n_vectors * i + sj + m] * kernels[sj + m]);
                    }
                    sum += f64::from(self.rho[pair]);
                    pair_scores[pair] = sum as f32;
                    votes[if sum > 0.0 { i } else { j }] += 1;
                    pair += 1;
                }
            }
            // The first class with the most votes.
            let best = votes.iter().enumerate().fold(0, |b, (i, &v)| if v > votes[b] { i } else { b });
            labels.push(best);
            if self.prob_a.is_empty() {
                self.decision_scores(&pair_scores, out);
            } else {
                self.probabilities(&pair_scores, out);
                self.post_transform.apply(out);
            }
        }
        Ok(tvec![self.labels.tensor(&labels)?, matrix(scores, rows, out_width)?])
    }
}

impl SvmClassifier {
    /// A two-class liblinear model's label: by its highest score's sign (or 0.5 when every
    /// weight is positive), else the class of the highest score.
    fn binary_label(&self, max: f32, best: usize) -> usize {
        if (self.all_positive && max >= 0.5) || (!self.all_positive && max > 0.0) { 1 } else { best }
    }

    /// The pairs' decision values, transformed; one pair's value gets its opposite beside it.
    fn decision_scores(&self, pair_scores: &[f32], out: &mut [f32]) {
        if let [s] = *pair_scores {
            out.copy_from_slice(&match self.post_transform {
                PostTransform::Probit => [probit(s), 0.0],
                PostTransform::None => [-s, s],
                _ => [1.0 - s, s],
            });
        } else {
            out.copy_from_slice(pair_scores);
            self.post_transform.apply(out);
        }
    }

    /// Class probabilities from the pairs' decision values: Platt's sigmoid per pair, then
    /// libsvm's pairwise coupling.
    fn probabilities(&self, pair_scores: &[f32], out: &mut [f32]) {
        let k = self.labels.len();
        let mut r = vec![0f32; k * k];
        let mut pair = 0;
        for i in 0..k {
            for j in i + 1..k {
                let p =
                    (1.0 - logistic(pair_scores[pair] * self.prob_a[pair] + self.prob_b[pair])).clamp(1e-7, 1.0 - 1e-7);
                r[i * k + j] = p;
                r[j * k + i] = 1.0 - p;
                pair += 1;
            }
        }
        couple(k, &r, out);
    }
}

/// libsvm's `multiclass_probability`: the class probabilities `p` whose pairwise ratios best fit
/// `r[i][j]` (the probability of i over j), by at most 100 rounds of its fixed-point method.
fn couple(k: usize, r: &[f32], p: &mut [f32]) {
    let mut q = vec![0f32; k * k];
    let mut qp = vec![0f32; k];
    for i in 0..k {
        p[i] = 1.0 / k as f32;
        for j in 0..i {
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = q[j * k + i];
        }
        for j in i + 1..k {
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = -r[j * k + i] * r[i * k + j];
        }
    }
    let eps = 0.005 / k as f32;
    for _ in 0..100 {
        let mut pqp = 0.0;
        for i in 0..k {
            qp[i] = (0..k).map(|j| q[i * k + j] * p[j]).sum();
            pqp += p[i] * qp[i];
        }
        let max_error = qp.iter().map(|v| (v - pqp).abs()).fold(0.0, f32::max);
        if max_error < eps {
            break;
        }
        for i in 0..k {
            let diff = (-qp[i] + pqp) / q[i * k + i];
            p[i] += diff;
            pqp = (pqp + diff * (diff * q[i * k + i] + 2.0 * qp[i])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[i * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct SvmRegressor {
    kernel: Kernel,
    /// With support vectors: one dual coefficient per vector; without: the linear weights.
    coefficients: Vec<f32>,
    support_vectors: Vec<f32>,
    rho: f32,
    features: usize,
    one_class: bool,
    post_transform: PostTransform,
}

fn regressor(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let coefficients = floats(node, "coefficients")?.unwrap_or_default();
    let support_vectors = floats(node, "support_vectors")?.unwrap_or_default();
    let n_supports = node.get_attr_opt::<i64>("n_supports")?.unwrap_or(0);
    ensure!(!coefficients.is_empty(), "attribute coefficients is empty");
    let (kernel, features) = if n_supports > 0 {
        let n = n_supports as usize;
        ensure!(support_vectors.len() % n == 0, "{} support vector values for {n} vectors", support_vectors.len());
        ensure!(coefficients.len() >= n, "{} coefficients for {n} support vectors", coefficients.len());
        (Kernel::parse(node)?, support_vectors.len() / n)
    } else {
        (Kernel::Linear, coefficients.len())
    };
    inference_op(SvmRegressor {
        kernel,
        features,
        coefficients,
        support_vectors,
        rho: floats(node, "rho")?.unwrap_or_default().first().copied().unwrap_or(0.0),
        one_class: node.get_attr_opt::<i64>("one_class")?.unwrap_or(0) != 0,
        post_transform: PostTransform::parse(text(node, "post_transform", "NONE")?)?,
    })
}

impl RowKernel for SvmRegressor {
    fn name(&self) -> &'static str {
        "SVMRegressor"
    }

    fn input_width(&self) -> Option<usize> {
        Some(self.features)
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::floats(Width::Fixed(1))]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let mut y = Vec::with_capacity(rows);
        for row in x.chunks_exact(width) {
            let mut score = if self.support_vectors.is_empty() {
                Kernel::Linear.apply(row, &self.coefficients, self.rho)
            } else {
                let sum: f32 = self
                    .support_vectors
                    .chunks_exact(width)
                    .zip(&self.coefficients)
                    .map(|(v, c)| c * self.kernel.apply(row, v, 0.0))
                    .sum();
                sum + self.rho
            };
            if self.one_class {
                score = if score > 0.0 { 1.0 } else { -1.0 };
            }
            if self.post_transform == PostTransform::Probit {
                score = probit(score);
            }
            y.push(score);
        }
        Ok(tvec![matrix(y, rows, 1)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coupling_two_classes_gives_the_pair_probability() {
        let mut p = [0.0; 2];
        couple(2, &[0.0, 0.8, 0.2, 0.0], &mut p);
        assert!((p[0] - 0.8).abs() < 1e-3 && (p[1] - 0.2).abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn kernels_are_libsvms() {
        let (x, v) = ([1.0, 2.0], [3.0, -1.0]);
        assert_eq!(Kernel::Linear.apply(&x, &v, 0.5), 1.5);
        assert_eq!(Kernel::Poly { gamma: 2.0, coef0: 1.0, degree: 2.0 }.apply(&x, &v, 0.0), 9.0);
        assert!((Kernel::Rbf { gamma: 0.1 }.apply(&x, &v, 0.0) - (-1.3f32).exp()).abs() < 1e-7);
    }
}
