//! TF Serving's gRPC API: `PredictionService.Predict` (inputs and outputs as `TensorProto`s,
//! numbers in their typed `*_val` fields or `tensor_content`) and `ModelService.GetModelStatus`.
//! An image model takes one `DT_STRING` input of encoded images and answers `classes` and
//! `probabilities`, `[images, k]`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use super::proto::tensorflow::serving::model_service_server::ModelService;
use super::proto::tensorflow::serving::model_spec::VersionChoice;
use super::proto::tensorflow::serving::model_version_status::State;
use super::proto::tensorflow::serving::prediction_service_server::PredictionService;
use super::proto::tensorflow::serving::{
    ErrorCode, GetModelStatusRequest, GetModelStatusResponse, ModelSpec, ModelVersionStatus, PredictRequest,
    PredictResponse, StatusProto,
};
use super::proto::tensorflow::tensor_shape_proto::Dim;
use super::proto::tensorflow::{DataType, TensorProto, TensorShapeProto};
use crate::engine::batch::Batch;
use crate::engine::{Element, OutputValues};
use crate::serve::AppState;
use crate::serve::error::{Protocol, ServeError};
use crate::serve::images::classify;
use crate::serve::registry::{ServedModel, Slot};
use crate::serve::tensors::{
    Features, RowForm, add_column, bare_rows, output_bytes, raw_floats, rows_of_shape, text_value, typed_from_columns,
};

const PROTOCOL: Protocol = Protocol::TfServingGrpc;

pub struct Prediction {
    pub state: Arc<AppState>,
}

/// The model and version a `ModelSpec` names.
fn named(spec: Option<&ModelSpec>) -> Result<(String, Option<u64>), ServeError> {
    let spec = spec.ok_or_else(|| ServeError::BadRequest("the request has no model_spec".into()))?;
    let version = match &spec.version_choice {
        None => None,
        Some(VersionChoice::Version(v)) if *v > 0 => Some(*v as u64),
        Some(VersionChoice::Version(v)) => return Err(ServeError::NotFound(format!("{v} is not a model version"))),
        Some(VersionChoice::VersionLabel(label)) => {
            return Err(ServeError::BadRequest(format!(
                "version labels ({label:?}) are not served: give a version number"
            )));
        }
    };
    Ok((spec.name.clone(), version))
}

#[tonic::async_trait]
impl PredictionService for Prediction {
    async fn predict(&self, request: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let request = request.into_inner();
        let state = &self.state;
        let name = request.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        state.answer_grpc(PROTOCOL, &name, predict(state, request)).await
    }
}

#[tonic::async_trait]
impl ModelService for Prediction {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        let request = request.into_inner();
        let state = &self.state;
        let name = request.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        state
            .answer_grpc(PROTOCOL, &name, async {
                let (name, version) = named(request.model_spec.as_ref())?;
                let models = state.registry.snapshot();
                let versions = models
                    .get(&name)
                    .ok_or_else(|| ServeError::NotFound(format!("Could not find any versions of model {name}")))?;
                let model_version_status: Vec<ModelVersionStatus> = versions
                    .iter()
                    .filter(|(v, _)| version.is_none_or(|wanted| **v == wanted))
                    .map(|(v, slot)| {
                        let (state, error_code, error_message) = match slot {
                            Slot::Ready(_) => (State::Available, ErrorCode::Ok, String::new()),
                            Slot::Failed { reason, .. } => (State::End, ErrorCode::Unknown, reason.clone()),
                        };
                        ModelVersionStatus {
                            version: *v as i64,
                            state: state as i32,
                            status: Some(StatusProto { error_code: error_code as i32, error_message }),
                        }
                    })
                    .collect();
                if model_version_status.is_empty() {
                    return Err(ServeError::NotFound(format!(
                        "Could not find version {} of model {name}",
                        version.unwrap_or_default()
                    )));
                }
                Ok(GetModelStatusResponse { model_version_status })
            })
            .await
    }
}

fn shape_of(tensor: &TensorProto) -> Vec<i64> {
    tensor.tensor_shape.as_ref().map(|s| s.dim.iter().map(|d| d.size).collect()).unwrap_or_default()
}

/// The KServe name of a TensorFlow numeric type, for the shared conversions.
fn datatype_name(dtype: i32) -> Option<&'static str> {
    Some(match DataType::try_from(dtype).ok()? {
        DataType::DtFloat => "FP32",
        DataType::DtDouble => "FP64",
        DataType::DtInt32 => "INT32",
        DataType::DtInt64 => "INT64",
        DataType::DtInt16 => "INT16",
        DataType::DtInt8 => "INT8",
        DataType::DtUint8 => "UINT8",
        DataType::DtUint32 => "UINT32",
        DataType::DtUint64 => "UINT64",
        DataType::DtHalf => "FP16",
        DataType::DtBool => "BOOL",
        _ => return None,
    })
}

/// A numeric tensor's values as floats: from `tensor_content`, or its typed `*_val` field.
fn tensor_floats(name: &str, tensor: &TensorProto) -> Result<Vec<f32>, ServeError> {
    let bad = ServeError::BadRequest;
    let datatype = datatype_name(tensor.dtype)
        .ok_or_else(|| bad(format!("input {name:?} is not of a number type ({})", tensor.dtype)))?;
    let values: Vec<f32> = if !tensor.tensor_content.is_empty() {
        return raw_floats(datatype, &tensor.tensor_content).map_err(bad);
    } else {
        match datatype {
            "FP32" => tensor.float_val.clone(),
            "FP64" => tensor.double_val.iter().map(|&v| v as f32).collect(),
            "INT64" => tensor.int64_val.iter().map(|&v| v as f32).collect(),
            "UINT32" => tensor.uint32_val.iter().map(|&v| v as f32).collect(),
            "UINT64" => tensor.uint64_val.iter().map(|&v| v as f32).collect(),
            "BOOL" => tensor.bool_val.iter().map(|&v| f32::from(u8::from(v))).collect(),
            "FP16" => tensor.half_val.iter().map(|&v| crate::serve::tensors::half_to_f32(v as u16)).collect(),
            _ => tensor.int_val.iter().map(|&v| v as f32).collect(),
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("value {i} of input {name:?} is not a finite number")));
    }
    Ok(values)
}

async fn predict(state: &AppState, request: PredictRequest) -> Result<PredictResponse, ServeError> {
    let bad = ServeError::BadRequest;
    let (name, version) = named(request.model_spec.as_ref())?;
    let model = &state.registry.get(&name, version)?;
    let mut held = state.budget.empty();
    state.budget.grow(&mut held, request.encoded_len())?;
    let loaded = &model.loaded.model;
    let model_spec = Some(ModelSpec {
        name: model.name.clone(),
        version_choice: Some(VersionChoice::Version(model.version as i64)),
        signature_name: "serving_default".into(),
    });
    if let Some(image) = &loaded.image {
        let [(_, tensor)] = &request.inputs.iter().collect::<Vec<_>>()[..] else {
            return Err(bad("an image model takes one input: DT_STRING, each an encoded image".into()));
        };
        if tensor.dtype != DataType::DtString as i32 {
            return Err(bad("an image model takes one input: DT_STRING, each an encoded image".into()));
        }
        let images: Vec<Bytes> = tensor.string_val.clone();
        let top = classify(state, model, images).await?;
        let (names, probabilities) = crate::serve::kserve::image_outputs(image, &top);
        let shape = [top.len(), top.first().map_or(0, Vec::len)];
        let outputs = HashMap::from([
            (
                "classes".to_owned(),
                TensorProto {
                    dtype: DataType::DtString as i32,
                    tensor_shape: Some(shape_proto(&shape)),
                    string_val: names.into_iter().map(Bytes::from).collect(),
                    ..Default::default()
                },
            ),
            (
                "probabilities".to_owned(),
                TensorProto {
                    dtype: DataType::DtFloat as i32,
                    tensor_shape: Some(shape_proto(&shape)),
                    float_val: probabilities,
                    ..Default::default()
                },
            ),
        ]);
        return Ok(PredictResponse { model_spec, outputs });
    }
    let specs = &loaded.outputs;
    let wanted: Vec<usize> = if request.output_filter.is_empty() {
        (0..specs.len()).collect()
    } else {
        request
            .output_filter
            .iter()
            .map(|name| {
                specs.iter().position(|s| s.name == *name).ok_or_else(|| {
                    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    bad(format!(
                        "output_filter names {name:?}, which model {} does not have; it has {names:?}",
                        model.name
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let (outputs, rows, form) = if loaded.column_inputs.is_empty() {
        let Features { values, rows, form } = features(model, &request)?;
        reserve(state, model, &mut held, rows, values.len() * 4)?;
        (model.batcher.infer(values, rows).await?, rows, form)
    } else {
        let columns = typed_columns(model, &request)?;
        let rows = columns.rows;
        reserve(state, model, &mut held, rows, 0)?;
        (model.batcher.infer_columns(columns).await?, rows, RowForm::Vector)
    };
    let outputs = wanted
        .into_iter()
        .map(|index| (specs[index].name.clone(), output_tensor(&specs[index], &outputs[index], rows, form)))
        .collect();
    Ok(PredictResponse { model_spec, outputs })
}

fn reserve(
    state: &AppState,
    model: &ServedModel,
    held: &mut crate::serve::budget::Held,
    rows: usize,
    input_bytes: usize,
) -> Result<(), ServeError> {
    let specs = &model.loaded.model.outputs;
    let bound: usize = specs
        .iter()
        .map(|spec| rows * spec.width() * (crate::serve::json_answer::element_bound(spec) + 4) + 64)
        .sum::<usize>()
        + 256;
    state.check_answer(bound, rows)?;
    state.budget.grow(held, input_bytes + output_bytes(specs, rows) + bound)
}

fn shape_proto(dims: &[usize]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims.iter().map(|&size| Dim { size: size as i64, name: String::new() }).collect(),
        unknown_rank: false,
    }
}

/// One output as TF Serving answers it: a `TensorProto` with its values in the typed field.
fn output_tensor(spec: &crate::engine::OutputSpec, values: &OutputValues, rows: usize, form: RowForm) -> TensorProto {
    let width = spec.width();
    let shape = if bare_rows(spec, form) { vec![rows] } else { vec![rows, width] };
    let count = rows * width;
    let mut tensor = TensorProto { tensor_shape: Some(shape_proto(&shape)), ..Default::default() };
    match (spec.element, values) {
        (Element::Float32, OutputValues::Float(v)) => {
            tensor.dtype = DataType::DtFloat as i32;
            tensor.float_val = v[..count].to_vec();
        }
        (Element::Int64, OutputValues::Int(v)) => {
            tensor.dtype = DataType::DtInt64 as i32;
            tensor.int64_val = v[..count].to_vec();
        }
        _ => {
            tensor.dtype = DataType::DtString as i32;
            tensor.string_val = (0..count)
                .map(|i| {
                    let mut text = Vec::new();
                    crate::serve::json_answer::element_bytes(spec, values, i, &mut text);
                    Bytes::from(text)
                })
                .collect();
        }
    }
    tensor
}

/// A float model's rows: its one input, `[rows, features]` (or `[rows]` for one feature).
fn features(model: &ServedModel, request: &PredictRequest) -> Result<Features, ServeError> {
    let loaded = &model.loaded.model;
    let bad = ServeError::BadRequest;
    let (name, tensor) = match (request.inputs.len(), request.inputs.get(&loaded.input_name)) {
        (1, Some(tensor)) => (&loaded.input_name, tensor),
        (1, None) => request.inputs.iter().next().expect("one input"),
        _ => {
            let names: Vec<&String> = request.inputs.keys().collect();
            return Err(bad(format!(
                "the request's inputs are {names:?}; the model has one input, {:?}",
                loaded.input_name
            )));
        }
    };
    let n = loaded.n_features;
    let (rows, form) = rows_of_shape(loaded, name, &shape_of(tensor)).map_err(bad)?;
    let values = tensor_floats(name, tensor)?;
    if values.len() != rows * n {
        return Err(bad(format!("input {name:?}'s shape needs {} values; it has {}", rows * n, values.len())));
    }
    Ok(Features { values, rows, form })
}

/// A model of typed columns' inputs, each by name, `[rows]` or `[rows, 1]`.
fn typed_columns(model: &ServedModel, request: &PredictRequest) -> Result<Batch, ServeError> {
    let bad = ServeError::BadRequest;
    let mut columns = Map::new();
    for (name, tensor) in &request.inputs {
        let values: Vec<Value> = if tensor.dtype == DataType::DtString as i32 {
            tensor.string_val.iter().map(|b| text_value(b, name)).collect::<Result<_, _>>().map_err(bad)?
        } else if tensor.dtype == DataType::DtInt64 as i32 && tensor.tensor_content.is_empty() {
            tensor.int64_val.iter().map(|&v| Value::from(v)).collect()
        } else if tensor.dtype == DataType::DtDouble as i32 && tensor.tensor_content.is_empty() {
            tensor.double_val.iter().map(|&v| Value::from(v)).collect()
        } else {
            tensor_floats(name, tensor)?.into_iter().map(Value::from).collect()
        };
        add_column(&model.loaded.model, &model.name, &mut columns, name, &shape_of(tensor), values).map_err(bad)?;
    }
    typed_from_columns(&columns, &model.loaded.model).map_err(bad)
}
