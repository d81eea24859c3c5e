//! `worker serve`'s gRPC side, on its own port (`GRPC_PORT`, 8001 as Triton's): KServe v2's
//! `inference.GRPCInferenceService` ([`kserve`]), TF Serving's `PredictionService.Predict` and
//! `ModelService.GetModelStatus` ([`tfserving`]), and the standard `grpc.health.v1.Health`. The
//! same models, batcher, budget, limits and metrics as the HTTP side; errors are gRPC status
//! codes: `INVALID_ARGUMENT` (400), `NOT_FOUND` (404), `RESOURCE_EXHAUSTED` (413: a message or
//! answer over a limit), `UNAVAILABLE` (503: overloaded, or a model that could not be loaded),
//! `UNAUTHENTICATED` (401: no API key in the `authorization` metadata, or a wrong one),
//! `PERMISSION_DENIED` (403: the repository API is off).

pub mod kserve;
pub mod tfserving;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::AppState;
use super::error::{Protocol, ServeError};
use crate::shutdown::Shutdown;

/// The messages, generated from `worker/proto/` at build time.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    pub mod inference {
        tonic::include_proto!("inference");
    }
    pub mod tensorflow {
        tonic::include_proto!("tensorflow");
        pub mod serving {
            tonic::include_proto!("tensorflow.serving");
        }
    }
}

impl From<ServeError> for Status {
    fn from(error: ServeError) -> Self {
        let code = match &error {
            ServeError::BadRequest(_) | ServeError::TooLong(_) => Code::InvalidArgument,
            ServeError::NotFound(_) => Code::NotFound,
            ServeError::TooLarge(_) | ServeError::OverBudget { .. } | ServeError::AnswerTooLarge { .. } => {
                Code::ResourceExhausted
            }
            ServeError::Overloaded(_) | ServeError::Unavailable(_) => Code::Unavailable,
            ServeError::Internal(_) => Code::Internal,
            ServeError::Unauthorized(_) => Code::Unauthenticated,
            ServeError::Forbidden(_) => Code::PermissionDenied,
        };
        Status::new(code, error.to_string())
    }
}

/// The HTTP status a gRPC code stands for, for the request metrics (one `code` label for both).
fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument => 400,
        Code::NotFound => 404,
        Code::ResourceExhausted => 413,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 408,
        Code::Unimplemented => 501,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        _ => 500,
    }
}

impl AppState {
    /// Runs a gRPC handler's work, turns its error into a status, and counts the request.
    pub async fn answer_grpc<T>(
        &self,
        protocol: Protocol,
        model: &str,
        work: impl Future<Output = Result<T, ServeError>>,
    ) -> Result<tonic::Response<T>, Status> {
        let started = Instant::now();
        let result = work.await.map(tonic::Response::new).map_err(|error| {
            if error.status().is_server_error() {
                tracing::warn!(protocol = protocol.label(), model, %error, "request failed");
            }
            Status::from(error)
        });
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.count(protocol, model, http_status(code), started.elapsed());
        result
    }
}

/// The version a gRPC request names: empty for the latest, else a positive integer.
pub fn version_of(text: &str) -> Result<Option<u64>, ServeError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .map(Some)
        .ok_or_else(|| ServeError::NotFound(format!("{text:?} is not a model version (a positive integer)")))
}

/// Serves gRPC on `listener` until `shutdown`, then lets calls in flight finish for the grace
/// period. The health service says `SERVING` while the registry is healthy.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let grace = state.settings.shutdown_grace;
    let limit = state.settings.max_body_bytes;
    let answer_limit = state.settings.max_response_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    let watched = Arc::clone(&state);
    let stopping = shutdown.clone();
    let reporter = tokio::spawn(async move {
        loop {
            let status = if watched.registry.healthy() {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = stopping.wait() => {
                    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                    return;
                }
            }
        }
    });
    let inference =
        proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(kserve::Inference {
            state: Arc::clone(&state),
        })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(answer_limit);
    let prediction =
        proto::tensorflow::serving::prediction_service_server::PredictionServiceServer::new(tfserving::Prediction {
            state: Arc::clone(&state),
        })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(answer_limit);
    let status = proto::tensorflow::serving::model_service_server::ModelServiceServer::new(tfserving::Prediction {
        state: Arc::clone(&state),
    });
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stopping = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .timeout(state.settings.request_timeout)
        .layer(super::auth::GrpcAuthLayer { state: Arc::clone(&state) })
        .add_service(health_service)
        .add_service(inference)
        .add_service(prediction)
        .add_service(status)
        .serve_with_incoming_shutdown(incoming, async move { stopping.wait().await });
    let result = tokio::select! {
        result = server => result,
        () = async { shutdown.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "gRPC calls still in flight at the end of the grace period: stopping");
            Ok(())
        }
    };
    reporter.abort();
    result
}
