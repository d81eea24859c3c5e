//! KServe v2's gRPC service (`inference.GRPCInferenceService`, as Triton serves it): health,
//! metadata, `ModelInfer` with typed `contents` or `raw_input_contents`, answered in
//! `raw_output_contents` (as Triton answers), and the repository RPCs.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use super::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use super::proto::inference::model_infer_request::InferInputTensor;
use super::proto::inference::model_infer_response::InferOutputTensor;
use super::proto::inference::model_metadata_response::TensorMetadata;
use super::proto::inference::repository_index_response::ModelIndex;
use super::proto::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, RepositoryIndexRequest, RepositoryIndexResponse, RepositoryModelLoadRequest,
    RepositoryModelLoadResponse, RepositoryModelUnloadRequest, RepositoryModelUnloadResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use super::version_of;
use crate::engine::batch::Batch;
use crate::serve::AppState;
use crate::serve::error::{Protocol, ServeError};
use crate::serve::images::classify;
use crate::serve::kserve::{input_metadata, output_metadata};
use crate::serve::registry::{ServedModel, Slot};
use crate::serve::tensors::{
    Features, RowForm, add_column, binary_answer, feature_rows, raw_column, raw_elements, raw_floats, text_value,
    typed_from_columns,
};

const PROTOCOL: Protocol = Protocol::KServeGrpc;

pub struct Inference {
    pub state: Arc<AppState>,
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: self.state.registry.healthy() }))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = version_of(&request.version)
            .ok()
            .is_some_and(|version| self.state.registry.get(&request.name, version).is_ok());
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "sluice".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_repository".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let state = &self.state;
        state
            .answer_grpc(PROTOCOL, &request.name, async {
                let model = state.registry.get(&request.name, version_of(&request.version)?)?;
                let versions = state
                    .registry
                    .snapshot()
                    .get(&request.name)
                    .into_iter()
                    .flat_map(|v| v.iter().filter(|(_, s)| matches!(s, Slot::Ready(_))).map(|(v, _)| v.to_string()))
                    .collect();
                let tensors = |all: Vec<(String, &'static str, Vec<i64>)>| {
                    all.into_iter()
                        .map(|(name, datatype, shape)| TensorMetadata { name, datatype: datatype.into(), shape })
                        .collect()
                };
                Ok(ModelMetadataResponse {
                    name: model.name.clone(),
                    versions,
                    platform: "onnx_onnxv1".into(),
                    inputs: tensors(input_metadata(&model)),
                    outputs: tensors(output_metadata(&model)),
                })
            })
            .await
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let request = request.into_inner();
        let state = &self.state;
        state.answer_grpc(PROTOCOL, &request.model_name.clone(), infer(state, request)).await
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let ready_only = request.into_inner().ready;
        let mut models = Vec::new();
        for (name, versions) in self.state.registry.snapshot().iter() {
            for (version, slot) in versions {
                let (state, reason) = match slot {
                    Slot::Ready(_) => ("READY", String::new()),
                    Slot::Failed { reason, .. } => ("UNAVAILABLE", reason.clone()),
                };
                if !ready_only || state == "READY" {
                    models.push(ModelIndex {
                        name: name.clone(),
                        version: version.to_string(),
                        state: state.into(),
                        reason,
                    });
                }
            }
        }
        if !ready_only {
            for name in self.state.registry.unloaded() {
                models.push(ModelIndex {
                    name,
                    version: String::new(),
                    state: "UNAVAILABLE".into(),
                    reason: "unloaded".into(),
                });
            }
        }
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let name = request.into_inner().model_name;
        let state = &self.state;
        state
            .answer_grpc(PROTOCOL, &name, async {
                state.registry.load_model(&name).await?;
                Ok(RepositoryModelLoadResponse {})
            })
            .await
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let name = request.into_inner().model_name;
        let state = &self.state;
        state
            .answer_grpc(PROTOCOL, &name, async {
                state.registry.unload_model(&name).await?;
                Ok(RepositoryModelUnloadResponse {})
            })
            .await
    }
}

async fn infer(state: &AppState, request: ModelInferRequest) -> Result<ModelInferResponse, ServeError> {
    let model = &state.registry.get(&request.model_name, version_of(&request.model_version)?)?;
    let mut held = state.budget.empty();
    state.budget.grow(&mut held, request.encoded_len())?;
    let loaded = &model.loaded.model;
    if let Some(image) = &loaded.image {
        let images = encoded_images(&request)?;
        let top = classify(state, model, images).await?;
        let (names, probabilities) = crate::serve::kserve::image_outputs(image, &top);
        let k = top.first().map_or(0, Vec::len) as i64;
        let shape = vec![top.len() as i64, k];
        let mut classes = Vec::new();
        for name in &names {
            classes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            classes.extend_from_slice(name.as_bytes());
        }
        let probabilities: Vec<u8> = probabilities.iter().flat_map(|p| p.to_le_bytes()).collect();
        return Ok(ModelInferResponse {
            model_name: model.name.clone(),
            model_version: model.version.to_string(),
            id: request.id,
            parameters: Default::default(),
            outputs: vec![
                InferOutputTensor {
                    name: "classes".into(),
                    datatype: "BYTES".into(),
                    shape: shape.clone(),
                    ..Default::default()
                },
                InferOutputTensor {
                    name: "probabilities".into(),
                    datatype: "FP32".into(),
                    shape,
                    ..Default::default()
                },
            ],
            raw_output_contents: vec![classes.into(), probabilities.into()],
        });
    }
    let wanted = wanted_outputs(model, &request)?;
    let (outputs, rows, form) = if loaded.column_inputs.is_empty() {
        let Features { values, rows, form } = features(model, &request)?;
        reserve(state, model, &mut held, &wanted, rows, values.len() * 4)?;
        (model.batcher.infer(values, rows).await?, rows, form)
    } else {
        let columns = typed_columns(model, &request)?;
        let rows = columns.rows;
        reserve(state, model, &mut held, &wanted, rows, 0)?;
        (model.batcher.infer_columns(columns).await?, rows, RowForm::Vector)
    };
    let specs = &loaded.outputs;
    let mut described = Vec::with_capacity(wanted.len());
    let mut raw = Vec::with_capacity(wanted.len());
    for &index in &wanted {
        let (shape, datatype, data) = binary_answer(&specs[index], &outputs[index], rows, form);
        described.push(InferOutputTensor {
            name: specs[index].name.clone(),
            datatype: datatype.into(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        raw.push(Bytes::from(data));
    }
    Ok(ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version.to_string(),
        id: request.id,
        parameters: Default::default(),
        outputs: described,
        raw_output_contents: raw,
    })
}

/// Refuses an answer over the limit before the model runs; takes the budget for the rows, the
/// outputs and the answer.
fn reserve(
    state: &AppState,
    model: &ServedModel,
    held: &mut crate::serve::budget::Held,
    wanted: &[usize],
    rows: usize,
    input_bytes: usize,
) -> Result<(), ServeError> {
    let specs = &model.loaded.model.outputs;
    let bound: usize = wanted
        .iter()
        .map(|&i| {
            let spec = &specs[i];
            let element = match spec.element {
                crate::engine::Element::Float32 => 4,
                crate::engine::Element::Int64 => 8,
                crate::engine::Element::String => crate::serve::json_answer::element_bound(spec) + 4,
            };
            rows * spec.width() * element + 64
        })
        .sum::<usize>()
        + 256;
    state.check_answer(bound, rows)?;
    state.budget.grow(held, input_bytes + crate::serve::tensors::output_bytes(specs, rows) + bound)
}

/// The outputs asked for (all by default), by index.
fn wanted_outputs(model: &ServedModel, request: &ModelInferRequest) -> Result<Vec<usize>, ServeError> {
    let specs = &model.loaded.model.outputs;
    if request.outputs.is_empty() {
        return Ok((0..specs.len()).collect());
    }
    request
        .outputs
        .iter()
        .map(|output| {
            specs.iter().position(|s| s.name == output.name).ok_or_else(|| {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                ServeError::BadRequest(format!(
                    "model {} has no output {:?}; it has {names:?}",
                    model.name, output.name
                ))
            })
        })
        .collect()
}

/// Input `index`'s raw bytes, when the request sends its tensors raw.
fn raw_input(request: &ModelInferRequest, index: usize) -> Result<Option<&Bytes>, ServeError> {
    if request.raw_input_contents.is_empty() {
        return Ok(None);
    }
    if request.raw_input_contents.len() != request.inputs.len() {
        return Err(ServeError::BadRequest(format!(
            "the request has {} inputs but {} raw_input_contents",
            request.inputs.len(),
            request.raw_input_contents.len()
        )));
    }
    Ok(Some(&request.raw_input_contents[index]))
}

/// The numbers of a typed tensor, as floats.
fn typed_floats(input: &InferInputTensor) -> Result<Vec<f32>, ServeError> {
    let empty = InferTensorContents::default();
    let c = input.contents.as_ref().unwrap_or(&empty);
    let values: Vec<f32> = match input.datatype.as_str() {
        "FP32" => c.fp32_contents.clone(),
        "FP64" => c.fp64_contents.iter().map(|&v| v as f32).collect(),
        "INT8" | "INT16" | "INT32" => c.int_contents.iter().map(|&v| v as f32).collect(),
        "INT64" => c.int64_contents.iter().map(|&v| v as f32).collect(),
        "UINT8" | "UINT16" | "UINT32" => c.uint_contents.iter().map(|&v| v as f32).collect(),
        "UINT64" => c.uint64_contents.iter().map(|&v| v as f32).collect(),
        "BOOL" => c.bool_contents.iter().map(|&v| f32::from(u8::from(v))).collect(),
        other => return Err(ServeError::BadRequest(format!("datatype {other} is not a number type"))),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ServeError::BadRequest(format!("value {i} of input {:?} is not a finite number", input.name)));
    }
    Ok(values)
}

/// The rows of the request's one input.
fn features(model: &ServedModel, request: &ModelInferRequest) -> Result<Features, ServeError> {
    let loaded = &model.loaded.model;
    let bad = ServeError::BadRequest;
    let (name, shape) = request.inputs.first().map_or(("", &[][..]), |i| (i.name.as_str(), &i.shape[..]));
    let (rows, form) = feature_rows(loaded, &model.name, request.inputs.len(), name, shape).map_err(bad)?;
    let input = &request.inputs[0];
    let n = loaded.n_features;
    let values = match raw_input(request, 0)? {
        Some(raw) => raw_floats(&input.datatype, raw).map_err(bad)?,
        None => typed_floats(input)?,
    };
    if values.len() != rows * n {
        return Err(bad(format!("input {:?}'s shape needs {} values; it has {}", input.name, rows * n, values.len())));
    }
    Ok(Features { values, rows, form })
}

/// The encoded images of an image model's request: its one `BYTES` input.
fn encoded_images(request: &ModelInferRequest) -> Result<Vec<Bytes>, ServeError> {
    let bad = ServeError::BadRequest;
    let [input] = &request.inputs[..] else {
        return Err(bad(format!(
            "the request has {} inputs; an image model takes one, of BYTES",
            request.inputs.len()
        )));
    };
    if input.datatype != "BYTES" {
        return Err(bad(format!(
            "input {:?} is {}; an image model takes BYTES, each an encoded image",
            input.name, input.datatype
        )));
    }
    let images = match raw_input(request, 0)? {
        Some(raw) => raw_elements(raw.clone(), &input.name).map_err(bad)?,
        None => input.contents.as_ref().map(|c| c.bytes_contents.clone()).unwrap_or_default(),
    };
    let count: i64 = input.shape.iter().product();
    if images.len() as i64 != count {
        return Err(bad(format!(
            "input {:?} has shape {:?} but holds {} images",
            input.name,
            input.shape,
            images.len()
        )));
    }
    Ok(images)
}

/// For a model of column inputs: each tensor by name, `[rows, 1]` or `[rows]`, as typed columns.
fn typed_columns(model: &ServedModel, request: &ModelInferRequest) -> Result<Batch, ServeError> {
    let loaded = &model.loaded.model;
    let bad = ServeError::BadRequest;
    let mut columns = Map::new();
    for (index, input) in request.inputs.iter().enumerate() {
        let values: Vec<Value> = match raw_input(request, index)? {
            Some(raw) => raw_column(&input.datatype, raw.clone(), &input.name).map_err(bad)?,
            None => {
                let c = input.contents.clone().unwrap_or_default();
                match input.datatype.as_str() {
                    "BYTES" => c
                        .bytes_contents
                        .iter()
                        .map(|b| text_value(b, &input.name))
                        .collect::<Result<_, _>>()
                        .map_err(bad)?,
                    "FP32" => c.fp32_contents.into_iter().map(Value::from).collect(),
                    "FP64" => c.fp64_contents.into_iter().map(Value::from).collect(),
                    "INT8" | "INT16" | "INT32" => c.int_contents.into_iter().map(Value::from).collect(),
                    "INT64" => c.int64_contents.into_iter().map(Value::from).collect(),
                    "UINT8" | "UINT16" | "UINT32" => c.uint_contents.into_iter().map(Value::from).collect(),
                    "UINT64" => c.uint64_contents.into_iter().map(Value::from).collect(),
                    "BOOL" => c.bool_contents.into_iter().map(|b| Value::from(u8::from(b))).collect(),
                    other => return Err(bad(format!("datatype {other} is not BYTES or a number type"))),
                }
            }
        };
        add_column(loaded, &model.name, &mut columns, &input.name, &input.shape, values).map_err(bad)?;
    }
    typed_from_columns(&columns, loaded).map_err(bad)
}
