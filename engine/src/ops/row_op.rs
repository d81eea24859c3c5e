//! The shape of most ONNX-ML operators: `[N, F]` rows in, a few outputs of fixed width out, each
//! row on its own. A [`RowKernel`] says what its outputs are and computes them from f32 rows;
//! [`RowOp`] makes it a tract operator (shape inference for the loader, a typed op for the plan)
//! and casts an integer or double input to f32 first, as the ONNX-ML operators are specified for
//! float inputs.

use std::fmt;

use tract_onnx::data_resolver::MmapDataResolver;
use tract_onnx::pb::{NodeProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tensor::load_tensor;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, check_input_arity, expand,
};

/// How wide one output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// One value a row: `[N]` (labels).
    Label,
    /// As wide as the input: `[N, F]`.
    Input,
    /// `[N, w]`.
    Fixed(usize),
}

/// One output of a kernel: its element type and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub datum_type: DatumType,
    pub width: Width,
}

impl Output {
    pub fn floats(width: Width) -> Self {
        Self { datum_type: f32::datum_type(), width }
    }

    pub fn labels(datum_type: DatumType) -> Self {
        Self { datum_type, width: Width::Label }
    }
}

/// A row-wise computation from `[N, F]` f32 to its outputs.
pub trait RowKernel: fmt::Debug + Clone + PartialEq + Send + Sync + 'static {
    /// The ONNX op type, for plans and errors.
    fn name(&self) -> &'static str;

    /// The features a row must have, when the operator fixes it.
    fn input_width(&self) -> Option<usize> {
        None
    }

    /// Whether the kernel works value by value, on an input of any rank (its last axis taken as
    /// the row) with an output of the same shape.
    fn elementwise(&self) -> bool {
        false
    }

    fn outputs(&self) -> TVec<Output>;

    /// The outputs for `rows` rows of `width` values, row-major, in the order of [`Self::outputs`].
    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>>;
}

/// A [`RowKernel`] as a tract operator.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOp<K: RowKernel>(pub K);

// tract compares ops for equality to merge identical nodes; a kernel's floats (thresholds,
// weights) are never NaN where two ops would be compared, so equality is an equivalence here.
impl<K: RowKernel> Eq for RowOp<K> {}

/// The loader's form of a kernel, for an op builder to return.
pub fn inference_op<K: RowKernel>(kernel: K) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(RowOp(kernel)), vec![]))
}

impl<K: RowKernel> Expansion for RowOp<K> {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.0.outputs().len())
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        let specs = self.0.outputs();
        ensure!(outputs.len() <= specs.len(), "{} has {} outputs, not {}", self.0.name(), specs.len(), outputs.len());
        if self.0.elementwise() {
            s.equals(&outputs[0].datum_type, f32::datum_type())?;
            return s.equals(&outputs[0].shape, &inputs[0].shape);
        }
        s.equals(&inputs[0].rank, 2)?;
        if let Some(width) = self.0.input_width() {
            s.equals(&inputs[0].shape[1], width.to_dim())?;
        }
        for (output, spec) in outputs.iter().zip(specs) {
            s.equals(&output.datum_type, spec.datum_type)?;
            s.equals(&output.shape[0], &inputs[0].shape[0])?;
            match spec.width {
                Width::Label => s.equals(&output.rank, 1)?,
                Width::Input => {
                    s.equals(&output.rank, 2)?;
                    s.equals(&output.shape[1], &inputs[0].shape[1])?;
                }
                Width::Fixed(width) => {
                    s.equals(&output.rank, 2)?;
                    s.equals(&output.shape[1], width.to_dim())?;
                }
            }
        }
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        if model.outlet_fact(x)?.datum_type != f32::datum_type() {
            x = model.wire_node(format!("{prefix}.to_f32"), cast(f32::datum_type()), &[x])?[0];
        }
        model.wire_node(prefix, self.clone(), &[x])
    }
}

impl<K: RowKernel> Op for RowOp<K> {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    op_as_typed_op!();
}

impl<K: RowKernel> EvalOp for RowOp<K> {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        if self.0.elementwise() {
            let width = input.shape().last().copied().unwrap_or(1).max(1);
            let plain = input.try_as_plain_ram()?;
            let x = plain.as_slice::<f32>()?;
            let mut output = self.0.run(x, x.len() / width, width)?.remove(0);
            output.set_shape(input.shape())?;
            return Ok(tvec![output.into_tvalue()]);
        }
        let &[rows, width] = input.shape() else {
            bail!("{} takes [rows, features], not {:?}", self.0.name(), input.shape());
        };
        if let Some(expected) = self.0.input_width() {
            ensure!(width == expected, "{} takes {expected} features a row, not {width}", self.0.name());
        }
        let plain = input.try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        Ok(self.0.run(x, rows, width)?.into_iter().map(Tensor::into_tvalue).collect())
    }
}

impl<K: RowKernel> TypedOp for RowOp<K> {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if self.0.elementwise() {
            return Ok(tvec![f32::fact(inputs[0].shape.clone())]);
        }
        let (rows, width) = (inputs[0].shape[0].clone(), inputs[0].shape[1].clone());
        Ok(self
            .0
            .outputs()
            .into_iter()
            .map(|spec| match spec.width {
                Width::Label => spec.datum_type.fact([rows.clone()]),
                Width::Input => spec.datum_type.fact([rows.clone(), width.clone()]),
                Width::Fixed(w) => spec.datum_type.fact([rows.clone(), w.to_dim()]),
            })
            .collect())
    }

    as_op!();
}

/// An attribute's floats: its float list, or its tensor (`TreeEnsemble`'s attributes are
/// tensors), or, as newer converters write the classic ones, the double tensor `<name>_as_tensor`.
pub fn floats(node: &NodeProto, name: &str) -> TractResult<Option<Vec<f32>>> {
    let is_tensor = |name: &str| node.attribute.iter().any(|a| a.name == name && a.t.is_some());
    let tensor_name = if is_tensor(name) { name.to_owned() } else { format!("{name}_as_tensor") };
    if !is_tensor(&tensor_name) {
        return node.get_attr_opt_vec::<f32>(name);
    }
    let Some(tensor) = tensor_attribute(node, &tensor_name)? else { return Ok(None) };
    let values = tensor.cast_to::<f32>()?;
    Ok(Some(values.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
}

/// A tensor attribute, loaded.
pub fn tensor_attribute(node: &NodeProto, name: &str) -> TractResult<Option<Tensor>> {
    node.get_attr_opt::<&TensorProto>(name)?.map(|proto| load_tensor(&MmapDataResolver, proto, None)).transpose()
}

/// A string attribute, or its default.
pub fn text<'a>(node: &'a NodeProto, name: &str, default: &'a str) -> TractResult<&'a str> {
    Ok(node.get_attr_opt::<&str>(name)?.unwrap_or(default))
}

/// Rows of `width` f32s as a `[rows, width]` tensor.
pub fn matrix(values: Vec<f32>, rows: usize, width: usize) -> TractResult<Tensor> {
    tract_ndarray::Array2::from_shape_vec((rows, width), values).map(Tensor::from).map_err(Into::into)
}
