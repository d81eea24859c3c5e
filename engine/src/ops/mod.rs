//! Every operator the engine adds to tract, in one place.
//!
//! Two kinds:
//! - **ONNX-ML operators tract lacks** (or runs slowly, or answers differently from onnxruntime),
//!   registered with tract's ONNX loader by [`onnx`]: what scikit-learn, XGBoost and LightGBM
//!   exports are made of. Each follows the ONNX-ML specification, and onnxruntime where it is the
//!   de facto standard (binary classifiers' scores and labels, NaN in trees, probit).
//!   - [`trees`]: `TreeEnsembleClassifier`, `TreeEnsembleRegressor`, `TreeEnsemble`.
//!   - [`scalers`]: `Scaler`, `Imputer`, `Normalizer`, `Binarizer`.
//!   - [`features`]: `ArrayFeatureExtractor`, `FeatureVectorizer`, `ZipMap`.
//!   - [`encoders`]: `OneHotEncoder`, `LabelEncoder`: categories to numbers.
//!   - [`linear`]: `LinearRegressor` (tract's `LinearClassifier` stays).
//!   - [`svm`]: `SVMClassifier`, `SVMRegressor`.
//!   - [`log_sum_exp`]: `ReduceLogSumExp`, computed stably as onnxruntime does (naive Bayes).
//! - **Text operators tract lacks**, for scikit-learn's text vectorizers, by [`onnx`] too: [`text`]'s
//!   `StringNormalizer`, `Tokenizer` (onnxruntime's `com.microsoft` domain) and `TfIdfVectorizer`.
//! - **Replacements of tract's own kernels** after it has optimised a model, by [`replace_kernels`]:
//!   [`small_dense`] (dense layers of a few units), [`row_ops`] (softmax and argmax over a handful
//!   of classes), [`max_pool`] (the image models' pools).
//!
//! The ONNX-ML operators share [`row_op`]: each is a kernel from `[N, F]` f32 rows to a few
//! outputs, and [`post_transform`]: the score transforms of classifiers and regressors.

pub mod encoders;
pub mod features;
pub mod labels;
pub mod linear;
pub mod log_sum_exp;
pub mod max_pool;
pub mod post_transform;
pub mod row_op;
pub mod row_ops;
pub mod scalers;
pub mod small_dense;
pub mod svm;
pub mod text;
pub mod trees;

use tract_onnx::prelude::*;

/// The ONNX-ML operators the engine supplies (the op types of the `ai.onnx.ml` domain).
pub const ML_OPERATORS: &[&str] = &[
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
    "TreeEnsemble",
    "Scaler",
    "Imputer",
    "Normalizer",
    "Binarizer",
    "ArrayFeatureExtractor",
    "FeatureVectorizer",
    "ZipMap",
    "OneHotEncoder",
    "LabelEncoder",
    "LinearRegressor",
    "SVMClassifier",
    "SVMRegressor",
];

/// tract's ONNX loader with the engine's ONNX-ML and text operators registered in place of tract's.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    let register = &mut onnx.op_register;
    trees::register(register);
    scalers::register(register);
    features::register(register);
    encoders::register(register);
    linear::register(register);
    log_sum_exp::register(register);
    svm::register(register);
    text::register(register);
    onnx
}

/// Swaps tract's kernels for the engine's where those are faster, once tract has optimised the
/// model: dense layers of a few units before optimisation (`before_optimising`), then softmax,
/// argmax and max pools.
pub fn replace_kernels(model: &mut TypedModel, before_optimising: bool) -> TractResult<()> {
    if before_optimising {
        small_dense::replace_small_dense_layers(model)?;
    } else {
        row_ops::replace_narrow_row_ops(model)?;
        max_pool::replace_max_pools(model)?;
    }
    Ok(())
}
