//! An ONNX model loaded once and run on mini-batches of rows.
//!
//! The model must take one 2-D float input `[batch, features]` with a fixed feature count. Each
//! output becomes one or more output columns: a label (integer or string, 1-D), or scores /
//! values (float, 1-D or `[batch, width]`).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::dims;

type Plan = Arc<TypedRunnableModel>;

/// Model runs hold a multiple of this many rows, and start at a multiple of it. tract's
/// vectorised kernels give a row's floats last-bit differences depending on its place within a
/// register-sized group and on whether it is left over after the last full group; keeping runs
/// aligned (batch sizes are rounded up, the last run is padded) keeps every row in the same place
/// whatever the batch size, so predictions are identical for any batch size.
pub const RUN_ROW_MULTIPLE: usize = 16;

/// A model ready to run: the optimised plan and what its inputs and outputs look like.
pub struct Model {
    plan: Plan,
    pub n_features: usize,
    pub outputs: Vec<OutputSpec>,
    /// Hex SHA-256 of the model file, for the report.
    pub sha256: String,
}

/// One output of the model and the columns it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    pub kind: OutputKind,
    /// Column names in the output file.
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// One label a row; integers are mapped to class names when the configuration has them.
    Label { classes: Option<Vec<String>> },
    /// `width` floats a row (class probabilities, regression values).
    Values { width: usize },
}

/// The predictions for one mini-batch, output by output, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputValues {
    Int(Vec<i64>),
    Text(Vec<String>),
    Float(Vec<f32>),
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model is not a valid ONNX file: {0}")]
    Unreadable(String),
    #[error("the model is not supported: {0}")]
    Unsupported(String),
    #[error("the model failed on a batch of {rows} rows: {message}")]
    Inference { rows: usize, message: String },
}

impl Model {
    /// Parses, checks and optimises a model. `classes` names the labels of a classifier.
    pub fn load(bytes: &[u8], classes: Option<&[String]>) -> Result<Self, ModelError> {
        let onnx = tract_onnx::onnx();
        let proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(|e| ModelError::Unreadable(format!("{e:#}")))?;
        let graph = proto.graph.as_ref().ok_or_else(|| ModelError::Unreadable("it has no graph".into()))?;
        let n_features = feature_count(graph)?;

        let model = onnx.model_for_proto_model(&proto).map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        let batch = model.sym("N");
        let typed = model
            .with_input_fact(0, f32::fact(dims!(batch, n_features)).into())
            .and_then(|m| m.into_optimized())
            .map_err(|e| ModelError::Unsupported(format!("tract cannot run it: {e:#}")))?;

        let outputs = graph
            .output
            .iter()
            .enumerate()
            .map(|(ix, info)| {
                let fact = typed.output_fact(ix).map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
                output_spec(&info.name, fact, classes)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plan = typed.into_runnable().map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        Ok(Self { plan, n_features, outputs, sha256: hex::encode(Sha256::digest(bytes)) })
    }

    /// Every output column name, in order.
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().flat_map(|o| o.columns.iter().map(String::as_str))
    }

    /// Runs one mini-batch: `features` holds `rows * n_features` values, row-major.
    pub fn predict(&self, features: &[f32], rows: usize) -> Result<Vec<OutputValues>, ModelError> {
        let failed = |e: TractError| ModelError::Inference { rows, message: format!("{e:#}") };
        let padded_rows = rows.div_ceil(RUN_ROW_MULTIPLE) * RUN_ROW_MULTIPLE;
        let input = if padded_rows == rows {
            Tensor::from_shape(&[rows, self.n_features], features)
        } else {
            let mut padded = Vec::with_capacity(padded_rows * self.n_features);
            padded.extend_from_slice(features);
            padded.resize(padded_rows * self.n_features, 0.0);
            Tensor::from_shape(&[padded_rows, self.n_features], &padded)
        }
        .map_err(failed)?;
        let results = self.plan.run(tvec!(input.into())).map_err(failed)?;
        results
            .iter()
            .zip(&self.outputs)
            .map(|(tensor, spec)| {
                let mut values = tensor_values(tensor).map_err(failed)?;
                let expected = rows * spec.width();
                values.truncate(expected);
                if values.len() != expected {
                    return Err(ModelError::Inference {
                        rows,
                        message: format!("output {:?} has {} values, expected {expected}", spec.name, values.len()),
                    });
                }
                Ok(values)
            })
            .collect()
    }
}

impl OutputSpec {
    pub fn width(&self) -> usize {
        match self.kind {
            OutputKind::Label { .. } => 1,
            OutputKind::Values { width } => width,
        }
    }
}

impl OutputValues {
    fn truncate(&mut self, len: usize) {
        match self {
            OutputValues::Int(v) => v.truncate(len),
            OutputValues::Text(v) => v.truncate(len),
            OutputValues::Float(v) => v.truncate(len),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            OutputValues::Int(v) => v.len(),
            OutputValues::Text(v) => v.len(),
            OutputValues::Float(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The fixed second dimension of the model's single 2-D input.
fn feature_count(graph: &pb::GraphProto) -> Result<usize, ModelError> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as Type;
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|i| !initializers.contains(&i.name.as_str())).collect();
    let [input] = inputs[..] else {
        return Err(ModelError::Unsupported(format!(
            "it has {} inputs; sluice feeds one [batch, features] input",
            inputs.len()
        )));
    };
    let dims = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Type::TensorType(tensor)) => tensor.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default(),
        _ => {
            return Err(ModelError::Unsupported(format!("input {:?} is not a tensor", input.name)));
        }
    };
    match dims.get(1).and_then(|d| d.value.as_ref()) {
        Some(Value::DimValue(n)) if dims.len() == 2 && *n > 0 => Ok(*n as usize),
        _ => Err(ModelError::Unsupported(format!(
            "input {:?} must be 2-D [batch, features] with a fixed number of features",
            input.name
        ))),
    }
}

fn output_spec(name: &str, fact: &TypedFact, classes: Option<&[String]>) -> Result<OutputSpec, ModelError> {
    let unsupported = |why: &str| ModelError::Unsupported(format!("output {name:?} {why}"));
    let rank = fact.rank();
    let width = match rank {
        1 => 1,
        2 => fact.shape[1]
            .to_i64()
            .ok()
            .and_then(|w| usize::try_from(w).ok())
            .ok_or_else(|| unsupported("has no fixed width"))?,
        _ => {
            return Err(unsupported(&format!("has rank {rank}; outputs must be [batch] or [batch, width]")));
        }
    };
    let dt = fact.datum_type;
    let is_label = rank == 1 && (dt.is_integer() || dt == DatumType::TDim || dt == DatumType::String);
    if is_label {
        let classes = classes.map(<[String]>::to_vec);
        return Ok(OutputSpec {
            name: name.to_owned(),
            kind: OutputKind::Label { classes },
            columns: vec![name.to_owned()],
        });
    }
    if !(dt.is_float() || dt.is_integer() || dt == DatumType::TDim) {
        return Err(unsupported(&format!("has type {dt:?}")));
    }
    let columns = match classes {
        _ if width == 1 => vec![name.to_owned()],
        Some(classes) if classes.len() == width => classes.iter().map(|c| format!("{name}_{c}")).collect(),
        _ => (0..width).map(|i| format!("{name}_{i}")).collect(),
    };
    Ok(OutputSpec { name: name.to_owned(), kind: OutputKind::Values { width }, columns })
}

fn tensor_values(tensor: &Tensor) -> TractResult<OutputValues> {
    let dt = tensor.datum_type();
    Ok(if dt == DatumType::String {
        OutputValues::Text(tensor.try_as_plain_ram()?.as_slice::<String>()?.to_vec())
    } else if dt.is_integer() || dt == DatumType::TDim {
        OutputValues::Int(tensor.cast_to::<i64>()?.try_as_plain_ram()?.as_slice::<i64>()?.to_vec())
    } else {
        OutputValues::Float(tensor.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    })
}
