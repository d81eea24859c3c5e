//! An ONNX model loaded once and run on mini-batches of rows (or of images).
//!
//! A table model must take one 2-D float input `[batch, features]` with a fixed feature count.
//! Each output becomes one or more output columns: a label (integer or string, 1-D), or scores /
//! values (float, 1-D or `[batch, width]`). An image model (its configuration has an `image`
//! section) takes one 4-D float input whose shape that section declares, and its first float
//! output, whatever its rank, holds the class scores.
//!
//! The model configuration (which columns are features, which pass through, the class names) is
//! the sidecar `<model>.json` when there is one, else the JSON of the model's own metadata entry
//! [`METADATA_KEY`]. Class names come from that configuration, else from the classifier itself
//! (`classlabels_strings` or `classlabels_ints` of an `ai.onnx.ml` classifier node).
//!
//! A text model (a transformer's folder) is loaded and run by [`texts`].

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::batch::Batch;
use super::image::{Classifier, ImageConfig, ImageModel, Labels, Preprocessor};
use super::model_config::{ModelConfig, ModelConfigError};
use super::ops;
pub use super::outputs::OutputValues;
use super::text::TextEncoder;
pub use texts::TEXT_COLUMNS;

mod texts;

/// The metadata entry (`metadata_props`) of an ONNX model that may hold its configuration.
pub const METADATA_KEY: &str = "sluice";

/// Whether `node` is an ONNX-ML classifier, which declares its class labels.
fn is_classifier(node: &pb::NodeProto) -> bool {
    node.domain == "ai.onnx.ml"
        && ["LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier"].contains(&node.op_type.as_str())
}

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
    /// The name of the model's one input.
    pub input_name: String,
    /// Input values per row (per image: channels x height x width).
    pub n_features: usize,
    /// One row's input shape, the batch dimension left out: `[features]`, or an image's.
    pub input_shape: Vec<usize>,
    /// How images become the input and scores become classes, for an image model.
    pub image: Option<ImageModel>,
    /// For a model of several inputs (as skl2onnx exports a `ColumnTransformer`), or of one input
    /// that is not float: its inputs, each `[batch, 1]` and fed from the column of its name.
    /// Empty for a model of one input `[batch, features]`.
    pub column_inputs: Vec<ColumnInput>,
    /// The element type of that one input: float32, or float64 for a model exported from float64
    /// data (it is fed values parsed as float64 and computes in double).
    pub matrix: ColumnType,
    pub outputs: Vec<OutputSpec>,
    /// The configuration in force: the sidecar's, the model's embedded one, or the default.
    pub config: ModelConfig,
    /// The operators the graph uses, `domain:op` for other domains than ONNX's own, sorted.
    pub operators: Vec<String>,
    /// Whether the model says what a missing value (NaN) means: it imputes them, or its trees
    /// route them; then an empty input value is NaN rather than a bad row.
    pub handles_missing: bool,
    /// Hex SHA-256 of the model file, for the report.
    pub sha256: String,
    /// How texts become the inputs and the output embeddings, for a text encoder (its one column
    /// input is the text).
    pub text: Option<TextEncoder>,
}

/// One output of the model and the columns it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    pub kind: OutputKind,
    /// Column names in the output file.
    pub columns: Vec<String>,
    /// 1 for `[batch]`, 2 for `[batch, width]`.
    pub rank: usize,
    /// What the ONNX model itself outputs here (a classifier's string labels are run as the
    /// integers 0, 1, … and named back: see [`number_string_labels`]).
    pub element: Element,
    /// Written as one list named `name` where the format has lists (a JSON array, a Parquet
    /// `fixed_size_list<float32>`: an embedding, as vector stores load it); CSV has its
    /// `columns` either way. A list of text is a JSON array as text (a token classifier's
    /// entities): as it is in JSON, a string in CSV and Parquet.
    pub list: bool,
}

/// A model input fed from one column of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInput {
    pub name: String,
    pub kind: ColumnType,
}

/// What a column holds, as its model input declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// float32.
    Float,
    /// float64, parsed as such.
    Double,
    /// int64: whole numbers.
    Int64,
    /// string: the text as it is.
    Text,
}

impl ColumnType {
    /// The name of an ONNX element type, as the errors show it.
    fn name_of(elem_type: i32) -> String {
        use pb::tensor_proto::DataType;
        match DataType::try_from(elem_type) {
            Ok(DataType::Float) => Self::Float.name().into(),
            Ok(DataType::Double) => Self::Double.name().into(),
            Ok(DataType::Int64) => Self::Int64.name().into(),
            Ok(DataType::String) => Self::Text.name().into(),
            Ok(other) => other.as_str_name().to_ascii_lowercase(),
            Err(_) => format!("element type {elem_type}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Float => "float32",
            Self::Double => "float64",
            Self::Int64 => "int64",
            Self::Text => "string",
        }
    }
}

/// The element type of a model output, as the model declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    Int64,
    String,
    Float32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// One label a row; integer labels are written as class names when there are names.
    Label { classes: Option<Classes> },
    /// `width` floats a row (class probabilities, regression values).
    Values { width: usize },
}

/// A classifier's class names, and the integer labels they stand for.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    pub names: Vec<String>,
    /// `(label, index into names)`, sorted by label.
    by_label: Vec<(i64, usize)>,
}

impl Classes {
    /// Names for labels `0..names.len()`, or for `labels` when the model declares its own.
    fn new(names: Vec<String>, labels: Option<&[i64]>) -> Self {
        let mut by_label: Vec<(i64, usize)> = match labels {
            Some(labels) => labels.iter().copied().zip(0..).collect(),
            None => (0..).zip(0..names.len()).collect(),
        };
        by_label.sort_unstable();
        Self { names, by_label }
    }

    /// The integer labels, in order.
    pub fn labels(&self) -> impl Iterator<Item = i64> + '_ {
        self.by_label.iter().map(|&(label, _)| label)
    }

    /// Whether the names are the integer labels themselves (a classifier of integer classes
    /// with no names configured): such labels are written as integers where types are kept.
    pub fn are_integers(&self) -> bool {
        self.by_label.iter().all(|&(label, i)| self.names[i] == label.to_string())
    }

    /// The index of the name of integer label `label`.
    pub fn index_of(&self, label: i64) -> Option<usize> {
        self.by_label.binary_search_by_key(&label, |&(l, _)| l).ok().map(|i| self.by_label[i].1)
    }
}

/// The labels a classifier node declares.
#[derive(Debug, Clone, PartialEq)]
enum DeclaredLabels {
    Names(Vec<String>),
    Integers(Vec<i64>),
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model is not a valid ONNX file: {0}")]
    Unreadable(String),
    #[error("the model is not supported: {0}")]
    Unsupported(String),
    #[error("the model failed on a batch of {rows} rows: {message}")]
    Inference { rows: usize, message: String },
    #[error("its metadata entry {METADATA_KEY:?}: {0}")]
    EmbeddedConfig(ModelConfigError),
}

impl Model {
    /// Parses, checks and optimises a model. `sidecar` is the configuration found next to it;
    /// without one, the model's own metadata entry [`METADATA_KEY`] is read, if it has one.
    pub fn load(bytes: &[u8], sidecar: Option<ModelConfig>) -> Result<Self, ModelError> {
        let onnx = ops::onnx();
        let mut proto =
            onnx.proto_model_for_read(&mut &bytes[..]).map_err(|e| ModelError::Unreadable(format!("{e:#}")))?;
        let config = match sidecar {
            Some(config) => config,
            None => embedded_config(&proto)?.unwrap_or_default(),
        };
        let graph = proto.graph.as_mut().ok_or_else(|| ModelError::Unreadable("it has no graph".into()))?;
        unsupported_operator(graph, &onnx)?;
        let column_inputs = match &config.image {
            None => column_inputs(graph)?,
            Some(_) => vec![],
        };
        let (input_name, input_shape) = match &config.image {
            None if !column_inputs.is_empty() => (column_inputs[0].name.clone(), vec![column_inputs.len()]),
            None => feature_count(graph).map(|(name, n)| (name, vec![n]))?,
            Some(image) => image_input(graph, image)?,
        };
        let n_features = input_shape.iter().product();
        let matrix =
            if column_inputs.is_empty() && config.image.is_none() { matrix_type(graph) } else { ColumnType::Float };
        let operators = operators(graph);
        let handles_missing = handles_missing(graph);
        let declared = declared_labels(graph)?;
        let string_labels = matches!(declared, Some(DeclaredLabels::Names(_)));
        number_string_labels(graph);
        let graph_outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        let classes = class_names(config.classes.as_deref(), declared.as_ref())?;

        let model = onnx.model_for_proto_model(&proto).map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        // An image model runs one image at a time (images run in parallel, not in batches), so its
        // batch dimension is 1 and tract plans its convolutions for a concrete shape.
        let batch: TDim = if config.image.is_some() { 1.into() } else { model.sym("N").into() };
        let cannot_run = |e: TractError| ModelError::Unsupported(format!("tract cannot run it: {e:#}"));
        let mut shape: TVec<TDim> = tvec![batch];
        shape.extend(input_shape.iter().map(|&d| d.to_dim()));
        let model = if column_inputs.is_empty() {
            let datum_type = if matrix == ColumnType::Double { f64::datum_type() } else { f32::datum_type() };
            model.with_input_fact(0, datum_type.fact(shape).into())
        } else {
            let rows: TDim = model.sym("N").into();
            column_inputs.iter().enumerate().try_fold(model, |model, (i, input)| {
                let datum_type = match input.kind {
                    ColumnType::Float => f32::datum_type(),
                    ColumnType::Double => f64::datum_type(),
                    ColumnType::Int64 => i64::datum_type(),
                    ColumnType::Text => String::datum_type(),
                };
                model.with_input_fact(i, datum_type.fact([rows.clone(), 1.to_dim()]).into())
            })
        };
        let mut typed = model.and_then(|m| m.into_typed()).and_then(|m| m.into_decluttered()).map_err(cannot_run)?;
        ops::replace_kernels(&mut typed, true).map_err(cannot_run)?;
        let mut typed = typed.into_optimized().map_err(cannot_run)?;
        ops::replace_kernels(&mut typed, false).map_err(cannot_run)?;

        let outputs = graph_outputs
            .iter()
            .enumerate()
            .map(|(ix, name)| {
                let fact = typed.output_fact(ix).map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
                output_spec(name, fact, classes.as_ref(), string_labels, config.image.is_some())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plan = typed.into_runnable().map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        let image = config.image.as_ref().map(|image| image_model(image, &outputs)).transpose()?;
        Ok(Self {
            plan,
            input_name,
            n_features,
            input_shape,
            image,
            column_inputs,
            matrix,
            outputs,
            config,
            operators,
            handles_missing,
            sha256: hex::encode(Sha256::digest(bytes)),
            text: None,
        })
    }

    /// Every output column name, in order.
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().flat_map(|o| o.columns.iter().map(String::as_str))
    }

    /// Runs one mini-batch: `features` holds `rows * n_features` values, row-major.
    pub fn predict(&self, features: &[f32], rows: usize) -> Result<Vec<OutputValues>, ModelError> {
        if !self.column_inputs.is_empty() {
            let message = format!(
                "the model takes {} typed inputs ({}), not one matrix of floats",
                self.column_inputs.len(),
                self.column_inputs
                    .iter()
                    .map(|i| format!("{} {}", i.name, i.kind.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Err(ModelError::Inference { rows, message });
        }
        if features.len() != rows * self.n_features {
            let message = format!("{} input values for {rows} rows of {}", features.len(), self.n_features);
            return Err(ModelError::Inference { rows, message });
        }
        if self.matrix == ColumnType::Double {
            // Values that came as float32 (the online protocols' rows): widened, exactly.
            let doubles: Vec<f64> = features.iter().map(|&v| f64::from(v)).collect();
            return self.run(&doubles, rows);
        }
        if self.image.is_none() || rows <= 1 {
            return self.run(features, rows);
        }
        // An image model's plan takes one image.
        let mut images = features.chunks_exact(self.n_features);
        let mut outputs = self.run(images.next().unwrap_or_default(), 1)?;
        for image in images {
            for (all, one) in outputs.iter_mut().zip(self.run(image, 1)?) {
                all.append(one);
            }
        }
        Ok(outputs)
    }

    /// Runs the model on a batch's rows: its features, or for a model of column inputs the
    /// batch's columns of each type.
    pub fn predict_batch(&self, batch: &Batch) -> Result<Vec<OutputValues>, ModelError> {
        self.predict_batch_counted(batch).map(|(outputs, _)| outputs)
    }

    /// [`Self::predict_batch`], and how many of the rows' texts were longer than a text model
    /// reads and cut to its maximum (0 for other models).
    pub fn predict_batch_counted(&self, batch: &Batch) -> Result<(Vec<OutputValues>, usize), ModelError> {
        if let Some(encoder) = &self.text {
            return self.run_texts(encoder, batch);
        }
        self.predict_rows(batch).map(|outputs| (outputs, 0))
    }

    fn predict_rows(&self, batch: &Batch) -> Result<Vec<OutputValues>, ModelError> {
        if self.column_inputs.is_empty() && self.matrix == ColumnType::Double && batch.features.is_empty() {
            // Parsed as float64 from the file (see `feature_kinds`).
            if batch.doubles.len() != batch.rows * self.n_features {
                let message =
                    format!("{} input values for {} rows of {}", batch.doubles.len(), batch.rows, self.n_features);
                return Err(ModelError::Inference { rows: batch.rows, message });
            }
            return self.run(&batch.doubles, batch.rows);
        }
        if self.column_inputs.is_empty() {
            return self.predict(&batch.features, batch.rows);
        }
        let rows = batch.rows;
        let failed = |e: TractError| ModelError::Inference { rows, message: format!("{e:#}") };
        let count = |kind| self.column_inputs.iter().filter(|i| i.kind == kind).count();
        let (floats, doubles) = (count(ColumnType::Float), count(ColumnType::Double));
        let (integers, texts) = (count(ColumnType::Int64), count(ColumnType::Text));
        // Each kind's columns are row-major in their own buffer; j is an input's place among them.
        let mut seen = [0usize; 4];
        let mut inputs = tvec![];
        for input in &self.column_inputs {
            let j = seen[input.kind as usize];
            seen[input.kind as usize] += 1;
            let tensor = match input.kind {
                ColumnType::Float => {
                    let column: Vec<f32> = (0..rows).map(|r| batch.features[r * floats + j]).collect();
                    Tensor::from_shape(&[rows, 1], &column)
                }
                ColumnType::Double => {
                    let column: Vec<f64> = (0..rows).map(|r| batch.doubles[r * doubles + j]).collect();
                    Tensor::from_shape(&[rows, 1], &column)
                }
                ColumnType::Int64 => {
                    let column: Vec<i64> = (0..rows).map(|r| batch.integers[r * integers + j]).collect();
                    Tensor::from_shape(&[rows, 1], &column)
                }
                ColumnType::Text => {
                    let column: Vec<String> = (0..rows)
                        .map(|r| String::from_utf8_lossy(batch.text.get(r * texts + j)).into_owned())
                        .collect();
                    tract_ndarray::Array2::from_shape_vec((rows, 1), column).map(Tensor::from).map_err(TractError::from)
                }
            }
            .map_err(failed)?;
            inputs.push(tensor.into_tvalue());
        }
        self.run_inputs(inputs, rows)
    }

    /// What each feature column is parsed as: the column inputs' types, float64 for every
    /// feature of a float64 matrix, or (empty) float32 for every feature.
    pub fn feature_kinds(&self) -> Vec<ColumnType> {
        match self.matrix {
            ColumnType::Double if self.column_inputs.is_empty() => vec![ColumnType::Double; self.n_features],
            _ => self.column_inputs.iter().map(|input| input.kind).collect(),
        }
    }

    /// One run of the plan.
    fn run<T: Datum + Copy + Default>(&self, features: &[T], rows: usize) -> Result<Vec<OutputValues>, ModelError> {
        let failed = |e: TractError| ModelError::Inference { rows, message: format!("{e:#}") };
        // Table runs are padded (see RUN_ROW_MULTIPLE); an image model's plan takes one image.
        let multiple = if self.image.is_some() { 1 } else { RUN_ROW_MULTIPLE };
        let padded_rows = rows.div_ceil(multiple) * multiple;
        let shape = |rows| [&[rows], &self.input_shape[..]].concat();
        let input = if padded_rows == rows {
            Tensor::from_shape(&shape(rows), features)
        } else {
            let mut padded = Vec::with_capacity(padded_rows * self.n_features);
            padded.extend_from_slice(features);
            padded.resize(padded_rows * self.n_features, T::default());
            Tensor::from_shape(&shape(padded_rows), &padded)
        }
        .map_err(failed)?;
        self.run_inputs(tvec!(input.into()), rows)
    }

    /// Runs the plan on its inputs, and keeps the first `rows` rows of each output.
    fn run_inputs(&self, inputs: TVec<TValue>, rows: usize) -> Result<Vec<OutputValues>, ModelError> {
        let failed = |e: TractError| ModelError::Inference { rows, message: format!("{e:#}") };
        let results = self.run_plan(inputs).map_err(failed)?;
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

impl Model {
    /// One run of the plan, as it answers.
    fn run_plan(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut state = self.plan.spawn()?;
        state.run_plan_with_eval(inputs, |context, op_state, node, inputs| {
            let outputs = tract_onnx::tract_core::plan::eval(context, op_state, node, inputs);
            clear_upper_vector_state();
            outputs
        })
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

/// Marks the upper halves of the vector registers clean (`vzeroupper`), where the CPU has AVX.
///
/// tract's AVX and AVX-512 matrix kernels return without doing so. Until something does, every
/// SSE instruction that follows on this thread (all scalar float code of a default x86-64
/// build: the ops after a matrix product, softmax, formatting) waits on the registers' stale
/// upper halves; measured on an AVX-512 Xeon, a softmax loop ran 4x slower. So this runs after
/// each op of a model run.
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX, which is all `vzeroupper` needs; it only zeroes the upper
        // halves of the vector registers, which hold nothing across this call.
        unsafe { std::arch::x86_64::_mm256_zeroupper() }
    }
}

/// The model's one input (initializers listed as inputs aside) and its declared dimensions.
fn single_input<'g>(
    graph: &'g pb::GraphProto,
    feeds: &str,
) -> Result<(&'g pb::ValueInfoProto, Vec<pb::tensor_shape_proto::Dimension>), ModelError> {
    use pb::type_proto::Value as Type;
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|i| !initializers.contains(&i.name.as_str())).collect();
    let [input] = inputs[..] else {
        return Err(ModelError::Unsupported(format!("it has {} inputs; sluice feeds one {feeds} input", inputs.len())));
    };
    match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Type::TensorType(tensor)) => Ok((input, tensor.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default())),
        _ => Err(ModelError::Unsupported(format!("input {:?} is not a tensor", input.name))),
    }
}

/// The inputs of a model fed column by column: one of several inputs, or one `[batch, 1]` input
/// that is not float; empty for a model of one float input, or of one float64 matrix
/// `[batch, features]`. Each must be `[batch, 1]`.
fn column_inputs(graph: &pb::GraphProto) -> Result<Vec<ColumnInput>, ModelError> {
    use pb::tensor_proto::DataType;
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as Type;
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|i| !initializers.contains(&i.name.as_str())).collect();
    let tensor = |input: &pb::ValueInfoProto| match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Type::TensorType(tensor)) => Some(tensor.clone()),
        _ => None,
    };
    let one_matrix = match inputs[..] {
        [input] => tensor(input).is_some_and(|t| {
            let width = t.shape.as_ref().and_then(|s| s.dim.get(1)).and_then(|d| d.value.as_ref());
            t.elem_type == DataType::Float as i32
                || (t.elem_type == DataType::Double as i32 && !matches!(width, Some(Value::DimValue(1))))
        }),
        _ => false,
    };
    if one_matrix || inputs.is_empty() {
        return Ok(vec![]);
    }
    let several = inputs.len() > 1;
    inputs
        .iter()
        .map(|input| {
            let unsupported = |why: String| ModelError::Unsupported(format!("input {:?} {why}", input.name));
            let tensor = tensor(input).ok_or_else(|| unsupported("is not a tensor".into()))?;
            let kind = match DataType::try_from(tensor.elem_type) {
                Ok(DataType::Float) => ColumnType::Float,
                Ok(DataType::Double) => ColumnType::Double,
                Ok(DataType::Int64) => ColumnType::Int64,
                Ok(DataType::String) => ColumnType::Text,
                _ => {
                    return Err(unsupported(format!(
                        "has element type {}, not float, int64 or string",
                        tensor.elem_type
                    )));
                }
            };
            let dims = tensor.shape.map(|s| s.dim).unwrap_or_default();
            match dims.get(1).and_then(|d| d.value.as_ref()) {
                Some(Value::DimValue(1)) if dims.len() == 2 => {}
                _ if several => {
                    return Err(unsupported(
                        "must be [batch, 1]: a model of several inputs is fed one column per input".into(),
                    ));
                }
                _ => {
                    return Err(unsupported(format!(
                        "is {} of shape {}: sluice feeds a model's one input as [batch, features] of float or double, or as [batch, 1] of int64 or string",
                        ColumnType::name_of(tensor.elem_type),
                        shape_text(&dims)
                    )));
                }
            }
            Ok(ColumnInput { name: input.name.clone(), kind })
        })
        .collect()
}

/// A shape as the errors show it: `[N, 4]`.
fn shape_text(dims: &[pb::tensor_shape_proto::Dimension]) -> String {
    use pb::tensor_shape_proto::dimension::Value;
    let dims: Vec<String> = dims
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(n)) => n.to_string(),
            Some(Value::DimParam(name)) => name.clone(),
            None => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The element type of a model's one matrix input: float64 for a model exported from float64
/// data, float32 otherwise.
fn matrix_type(graph: &pb::GraphProto) -> ColumnType {
    use pb::type_proto::Value as Type;
    match single_input(graph, "[batch, features]").ok().and_then(|(input, _)| input.r#type.as_ref()?.value.as_ref()) {
        Some(Type::TensorType(t)) if t.elem_type == pb::tensor_proto::DataType::Double as i32 => ColumnType::Double,
        _ => ColumnType::Float,
    }
}

/// The name and the fixed second dimension of the model's single 2-D input.
fn feature_count(graph: &pb::GraphProto) -> Result<(String, usize), ModelError> {
    use pb::tensor_shape_proto::dimension::Value;
    let (input, dims) = single_input(graph, "[batch, features]")?;
    match dims.get(1).and_then(|d| d.value.as_ref()) {
        Some(Value::DimValue(n)) if dims.len() == 2 && *n > 0 => Ok((input.name.clone(), *n as usize)),
        _ => Err(ModelError::Unsupported(format!(
            "input {:?} must be 2-D [batch, features] with a fixed number of features",
            input.name
        ))),
    }
}

/// The name and per-image shape of an image model's input, which must be the 4-D input the
/// configuration's `image` section makes (dimensions the model leaves open are set by it).
fn image_input(graph: &pb::GraphProto, image: &ImageConfig) -> Result<(String, Vec<usize>), ModelError> {
    use pb::tensor_shape_proto::dimension::Value;
    let expected = image.input_shape();
    let (input, dims) = single_input(graph, "image")?;
    let shown = |dims: Vec<String>| format!("[N, {}]", dims.join(", "));
    let declared = shown(
        dims.iter()
            .skip(1)
            .map(|d| match &d.value {
                Some(Value::DimValue(n)) => n.to_string(),
                Some(Value::DimParam(name)) => name.clone(),
                None => "?".into(),
            })
            .collect(),
    );
    let fits = dims.len() == 4
        && dims[1..].iter().zip(expected).all(|(d, want)| match d.value {
            Some(Value::DimValue(n)) => n == want as i64,
            _ => true,
        });
    if !fits {
        let layout = format!("{:?}", image.layout).to_lowercase();
        let color = format!("{:?}", image.color).to_lowercase();
        return Err(ModelError::Unsupported(format!(
            "its input {:?} is {declared}{}, but the configuration's image section ({color}, {}x{}, {layout}) makes {}",
            input.name,
            if dims.len() == 4 { "" } else { " (not 4-D)" },
            image.width,
            image.height,
            shown(expected.iter().map(usize::to_string).collect()),
        )));
    }
    Ok((input.name.clone(), expected.to_vec()))
}

/// The image side of an image model: its preprocessing, and its scores output read as classes.
fn image_model(image: &ImageConfig, outputs: &[OutputSpec]) -> Result<ImageModel, ModelError> {
    let (scores_output, spec) = outputs
        .iter()
        .enumerate()
        .find(|(_, o)| o.element == Element::Float32 && matches!(o.kind, OutputKind::Values { .. }))
        .ok_or_else(|| ModelError::Unsupported("an image model needs a float output of class scores".into()))?;
    let width = spec.width();
    let labels = match &image.labels {
        None => (0..width).map(|i| i.to_string()).collect(),
        Some(Labels::List(labels)) => labels.clone(),
        Some(Labels::File(name)) => {
            return Err(ModelError::Unsupported(format!("its labels file {name:?} was not read with the model")));
        }
    };
    if labels.len() != width {
        return Err(ModelError::Unsupported(format!(
            "the configuration names {} labels, but the model's output {:?} scores {width} classes",
            labels.len(),
            spec.name
        )));
    }
    Ok(ImageModel {
        preprocess: Preprocessor::new(image.clone()),
        classifier: Classifier::new(labels, image.scores, image.top_k),
        scores_output,
    })
}

fn operators(graph: &pb::GraphProto) -> Vec<String> {
    let mut operators: Vec<String> = graph
        .node
        .iter()
        .map(|n| {
            if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            }
        })
        .collect();
    operators.sort_unstable();
    operators.dedup();
    operators
}

/// The first node whose operator neither tract nor the engine implements, named with its domain.
fn unsupported_operator(graph: &pb::GraphProto, onnx: &tract_onnx::Onnx) -> Result<(), ModelError> {
    match graph.node.iter().find(|n| !onnx.op_register.0.contains_key(&n.op_type)) {
        None => Ok(()),
        Some(node) => Err(ModelError::Unsupported(format!(
            "operator {} ({}) of node {:?} is not supported",
            node.op_type,
            if node.domain.is_empty() { "ai.onnx" } else { &node.domain },
            node.name
        ))),
    }
}

/// Whether the graph imputes missing values or routes them through its trees.
fn handles_missing(graph: &pb::GraphProto) -> bool {
    graph.node.iter().any(|node| {
        node.op_type == "Imputer"
            || node
                .attribute
                .iter()
                .any(|a| a.name == "nodes_missing_value_tracks_true" && a.ints.iter().any(|&v| v != 0))
    })
}

/// The configuration the model carries in its metadata, if any.
fn embedded_config(proto: &pb::ModelProto) -> Result<Option<ModelConfig>, ModelError> {
    proto
        .metadata_props
        .iter()
        .find(|entry| entry.key == METADATA_KEY)
        .map(|entry| ModelConfig::from_json(entry.value.as_bytes()).map_err(ModelError::EmbeddedConfig))
        .transpose()
}

/// The class labels of the model's classifier node, if it has one that declares them.
fn declared_labels(graph: &pb::GraphProto) -> Result<Option<DeclaredLabels>, ModelError> {
    let classifiers: Vec<&pb::NodeProto> = graph.node.iter().filter(|n| is_classifier(n)).collect();
    let [classifier] = classifiers[..] else { return Ok(None) };
    for attribute in &classifier.attribute {
        match attribute.name.as_str() {
            "classlabels_strings" if !attribute.strings.is_empty() => {
                let names: Result<Vec<String>, _> =
                    attribute.strings.iter().map(|s| String::from_utf8(s.clone())).collect();
                let names = names.map_err(|_| {
                    ModelError::Unsupported(format!("{} has class labels that are not UTF-8", classifier.op_type))
                })?;
                return Ok(Some(DeclaredLabels::Names(names)));
            }
            "classlabels_ints" | "classlabels_int64s" if !attribute.ints.is_empty() => {
                return Ok(Some(DeclaredLabels::Integers(attribute.ints.clone())));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// tract cannot run a classifier whose labels are strings, so it gets the labels 0, 1, … in their
/// place (its label output becomes int64), and the names it declared (see [`declared_labels`])
/// turn those integers back into names when rows are written.
fn number_string_labels(graph: &mut pb::GraphProto) {
    use pb::attribute_proto::AttributeType;
    use pb::type_proto::Value as Type;
    let mut label_outputs = Vec::new();
    for node in graph.node.iter_mut().filter(|n| is_classifier(n)) {
        let integers = if node.op_type == "TreeEnsembleClassifier" { "classlabels_int64s" } else { "classlabels_ints" };
        for attribute in node.attribute.iter_mut().filter(|a| a.name == "classlabels_strings" && !a.strings.is_empty())
        {
            attribute.name = integers.to_owned();
            attribute.r#type = AttributeType::Ints as i32;
            attribute.ints = (0..attribute.strings.len() as i64).collect();
            attribute.strings.clear();
            label_outputs.extend(node.output.first().cloned());
        }
    }
    for output in graph.output.iter_mut().filter(|o| label_outputs.contains(&o.name)) {
        if let Some(Type::TensorType(tensor)) = output.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            tensor.elem_type = pb::tensor_proto::DataType::Int64 as i32;
        }
    }
}

/// The configuration's class names (for the model's integer labels, when it declares them), or
/// the names the model declares.
fn class_names(
    configured: Option<&[String]>,
    declared: Option<&DeclaredLabels>,
) -> Result<Option<Classes>, ModelError> {
    let declared_count = match declared {
        Some(DeclaredLabels::Names(names)) => names.len(),
        Some(DeclaredLabels::Integers(labels)) => labels.len(),
        None => 0,
    };
    Ok(match (configured, declared) {
        (Some(names), Some(_)) if names.len() != declared_count => {
            return Err(ModelError::Unsupported(format!(
                "the configuration names {} classes, but the model's classifier has {declared_count}",
                names.len()
            )));
        }
        (Some(names), Some(DeclaredLabels::Integers(labels))) => Some(Classes::new(names.to_vec(), Some(labels))),
        (Some(names), _) => Some(Classes::new(names.to_vec(), None)),
        (None, Some(DeclaredLabels::Names(names))) => Some(Classes::new(names.clone(), None)),
        (None, Some(DeclaredLabels::Integers(labels))) => {
            Some(Classes::new(labels.iter().map(i64::to_string).collect(), Some(labels)))
        }
        (None, None) => None,
    })
}

fn output_spec(
    name: &str,
    fact: &TypedFact,
    classes: Option<&Classes>,
    string_labels: bool,
    flatten: bool,
) -> Result<OutputSpec, ModelError> {
    let unsupported = |why: &str| ModelError::Unsupported(format!("output {name:?} {why}"));
    let rank = fact.rank();
    let fixed = |dims: &[TDim]| {
        dims.iter()
            .map(|d| d.to_i64().ok().and_then(|w| usize::try_from(w).ok()))
            .product::<Option<usize>>()
            .ok_or_else(|| unsupported("has no fixed width"))
    };
    let width = match rank {
        1 => 1,
        2 => fixed(&fact.shape[1..])?,
        // An image classifier's scores may keep spatial dimensions of 1 ([N, 1000, 1, 1]).
        _ if flatten => fixed(&fact.shape[1..])?,
        _ => {
            return Err(unsupported(&format!("has rank {rank}; outputs must be [batch] or [batch, width]")));
        }
    };
    let dt = fact.datum_type;
    let is_label = rank == 1 && (dt.is_integer() || dt == DatumType::TDim || dt == DatumType::String);
    if is_label {
        let element = if string_labels || dt == DatumType::String { Element::String } else { Element::Int64 };
        return Ok(OutputSpec {
            name: name.to_owned(),
            kind: OutputKind::Label { classes: classes.cloned() },
            columns: vec![name.to_owned()],
            rank,
            element,
            list: false,
        });
    }
    if !(dt.is_float() || dt.is_integer() || dt == DatumType::TDim) {
        return Err(unsupported(&format!("has type {dt:?}")));
    }
    let columns = match classes {
        _ if width == 1 => vec![name.to_owned()],
        Some(classes) if classes.names.len() == width => classes.names.iter().map(|c| format!("{name}_{c}")).collect(),
        _ => (0..width).map(|i| format!("{name}_{i}")).collect(),
    };
    let element = if dt.is_float() { Element::Float32 } else { Element::Int64 };
    Ok(OutputSpec { name: name.to_owned(), kind: OutputKind::Values { width }, columns, rank, element, list: false })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn configured_names_stand_for_the_labels_the_model_declares() {
        // A classifier whose integer labels are 10, 30 and 20, named by the configuration in
        // that order.
        let declared = DeclaredLabels::Integers(vec![10, 30, 20]);
        let classes = class_names(Some(&names(&["ten", "thirty", "twenty"])), Some(&declared)).unwrap().unwrap();
        let name = |label| classes.index_of(label).map(|i| classes.names[i].as_str());
        assert_eq!((name(10), name(20), name(30), name(0)), (Some("ten"), Some("twenty"), Some("thirty"), None));
    }

    #[test]
    fn without_declared_labels_configured_names_are_indexed_from_zero() {
        let classes = class_names(Some(&names(&["a", "b"])), None).unwrap().unwrap();
        assert_eq!((classes.index_of(0), classes.index_of(1), classes.index_of(2)), (Some(0), Some(1), None));
    }

    #[test]
    fn without_configured_names_the_models_own_are_used() {
        let declared = DeclaredLabels::Names(names(&["cat", "dog"]));
        assert_eq!(class_names(None, Some(&declared)).unwrap().unwrap().names, names(&["cat", "dog"]));
        let declared = DeclaredLabels::Integers(vec![3, 7]);
        let classes = class_names(None, Some(&declared)).unwrap().unwrap();
        assert_eq!((classes.names.clone(), classes.index_of(7)), (names(&["3", "7"]), Some(1)));
        assert_eq!(class_names(None, None).unwrap(), None);
    }

    #[test]
    fn an_embedded_configuration_is_read_and_a_broken_one_is_named() {
        let with = |value: &str| pb::ModelProto {
            metadata_props: vec![pb::StringStringEntryProto { key: METADATA_KEY.into(), value: value.into() }],
            ..Default::default()
        };
        let config = embedded_config(&with(r#"{"passthrough": ["id"]}"#)).unwrap().unwrap();
        assert_eq!(config.passthrough, crate::Passthrough::Columns(vec![crate::ColumnRef::Name("id".into())]));
        assert_eq!(embedded_config(&pb::ModelProto::default()).unwrap(), None);
        let err = embedded_config(&with(r#"{"feature": []}"#)).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "its metadata entry \"sluice\": the model configuration is not valid: unknown field `feature`"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_configuration_naming_the_wrong_number_of_classes_is_refused() {
        let declared = DeclaredLabels::Integers(vec![0, 1, 2]);
        let err = class_names(Some(&names(&["a", "b"])), Some(&declared)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the model is not supported: the configuration names 2 classes, but the model's classifier has 3"
        );
    }
}
