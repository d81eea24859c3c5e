//! Operators that only move features around, wired as tract's own gather and concatenation so
//! its optimiser sees through them: `ArrayFeatureExtractor` (columns by index),
//! `FeatureVectorizer` (inputs side by side) and `ZipMap`, which wraps class probabilities into
//! a map per row; the engine answers from the probabilities themselves, so models exported with
//! scikit-learn's default `ZipMap` run as they are.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Gather, TypedConcat};
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity, expand,
};

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("ArrayFeatureExtractor", |_, _| Ok((expand(ArrayFeatureExtractor), vec![])));
    register.insert("FeatureVectorizer", feature_vectorizer);
    register.insert("ZipMap", |_, _| Ok((expand(ZipMap), vec![])));
}

/// `Z[..., j] = X[..., Y[j]]` for the indices `Y` flattened, as onnxruntime has it: a 1-D `X`
/// gives `[1, len(Y)]`. The indices may be computed by the model (a classifier's argmax picking
/// its class labels, neighbours' labels).
#[derive(Debug, Clone, PartialEq)]
struct ArrayFeatureExtractor;

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            s.equals(&outputs[0].rank, rank.max(2) as i64)?;
            for axis in 0..rank.saturating_sub(1) {
                s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
            }
            Ok(())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank();
        let index_shape = model.outlet_fact(inputs[1])?.shape.to_tvec();
        let mut indices = inputs[1];
        if index_shape.len() != 1 {
            let volume = index_shape.iter().product::<TDim>();
            let flatten = AxisOp::Reshape(0, index_shape, tvec![volume]);
            indices = model.wire_node(format!("{prefix}.flatten"), flatten, &[indices])?[0];
        }
        let gathered = model.wire_node(prefix, Gather::new(rank - 1), &[inputs[0], indices])?;
        if rank == 1 {
            return model.wire_node(format!("{prefix}.add_batch_axis"), AxisOp::Add(0), &gathered);
        }
        Ok(gathered)
    }
}

/// The inputs, each cast to f32 and cut or padded to its `inputdimensions`, side by side.
#[derive(Debug, Clone, PartialEq)]
struct FeatureVectorizer {
    dimensions: Vec<usize>,
}

fn feature_vectorizer(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let dimensions = node.get_attr_opt_vec::<i64>("inputdimensions")?.unwrap_or_default();
    let dimensions = dimensions
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format_err!("inputdimensions holds {d}")))
        .collect::<TractResult<Vec<_>>>()?;
    Ok((expand(FeatureVectorizer { dimensions }), vec![]))
}

impl Expansion for FeatureVectorizer {
    fn name(&self) -> StaticName {
        "FeatureVectorizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.dimensions.len())?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.dimensions.iter().sum::<usize>().to_dim())?;
        for input in inputs {
            s.equals(&input.rank, 2)?;
        }
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut parts = tvec![];
        for (i, (&input, &dimension)) in inputs.iter().zip(&self.dimensions).enumerate() {
            let fact = model.outlet_fact(input)?.clone();
            let width = fact.shape[1].to_usize().ok();
            ensure!(
                width == Some(dimension),
                "FeatureVectorizer: input {i} has {} columns, inputdimensions says {dimension}",
                fact.shape[1]
            );
            let part = if fact.datum_type == f32::datum_type() {
                input
            } else {
                model.wire_node(format!("{prefix}.cast_{i}"), cast(f32::datum_type()), &[input])?[0]
            };
            parts.push(part);
        }
        model.wire_node(prefix, TypedConcat { axis: 1 }, &parts)
    }
}

/// Passes its input through: the `[N, classes]` probabilities it would wrap in maps.
#[derive(Debug, Clone, PartialEq)]
struct ZipMap;

impl Expansion for ZipMap {
    fn name(&self) -> StaticName {
        "ZipMap".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, _prefix: &str, _model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        Ok(tvec![inputs[0]])
    }
}
