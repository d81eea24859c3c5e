//! `worker serve`: online inference from the same models as the batch pipeline, speaking the
//! protocols existing clients use: TensorFlow Serving's REST API ([`tfserving`]), KServe's v2 /
//! Open Inference Protocol ([`kserve`], as Triton's clients speak it) and TorchServe's
//! ([`torchserve`]), with `GET /metrics` in the Prometheus text format; and over gRPC, on a port
//! of its own, KServe v2 and TF Serving ([`grpc`]).
//!
//! - [`registry`]: the models the repository's version policies pick, each with its
//!   [`batcher`], kept in line with the repository while serving ([`watch_repository`]).
//! - [`batcher`]: concurrent requests for a model run together, off the async threads.
//! - [`tensors`]: what the protocols share of tensors: rows in, element types, shapes.
//! - [`json_rows`]: JSON rows read straight into the model's input.
//! - [`json_answer`]: answers written straight from the model's outputs.
//! - [`budget`]: the bytes in flight, server-wide: over it a request is refused at once.
//! - [`images`]: images in, however a protocol carries them, and the top k classes out.
//! - [`error`]: one error type, answered in each protocol's own shape.
//! - [`auth`]: API keys for inference and for the repository API; health checks stay open.
//!
//! Cross-cutting limits are layers: the API keys (401), the body limit (413), the request
//! time-out (408). The server
//! stops on the injected shutdown: it accepts nothing new and finishes what is in flight within
//! the grace period.

pub mod auth;
pub mod batcher;
pub mod budget;
pub mod config;
pub mod error;
pub mod grpc;
pub mod images;
pub mod json_answer;
pub mod json_rows;
pub mod kserve;
pub mod metrics;
pub mod openai;
pub mod registry;
pub mod rows;
pub mod tei;
pub mod tensors;
pub mod tfserving;
pub mod torchserve;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower_http::timeout::TimeoutLayer;

use crate::shutdown::Shutdown;
use budget::{Budget, Held};
use config::ServeSettings;
use error::{Protocol, ServeError};
use metrics::Metrics;
use registry::Registry;

/// What the handlers share.
pub struct AppState {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub settings: ServeSettings,
    pub budget: Budget,
}

impl AppState {
    pub fn new(registry: Registry, metrics: Arc<Metrics>, settings: ServeSettings) -> Self {
        let budget = Budget::new(settings.max_bytes_in_flight, metrics.bytes_in_flight());
        Self { registry, metrics, settings, budget }
    }

    /// The request's body, with its share of the budget: taken for the length its headers give
    /// before a byte is read (refused at once when it does not fit), or for the body limit when
    /// they give none.
    pub async fn read_body(&self, request: Request) -> Result<(bytes::Bytes, Held), ServeError> {
        let limit = self.settings.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(ServeError::TooLarge(limit));
        }
        let mut held = self.budget.empty();
        self.budget.grow(&mut held, declared.unwrap_or(limit))?;
        let body = error::body(bytes::Bytes::from_request(request, &()).await, limit)?;
        held.shrink_to(body.len());
        Ok((body, held))
    }

    /// Refuses an answer that could be larger than the limit, before the model runs.
    pub fn check_answer(&self, bound: usize, rows: usize) -> Result<(), ServeError> {
        let limit = self.settings.max_response_bytes;
        if bound > limit {
            return Err(ServeError::AnswerTooLarge { rows, bound, limit });
        }
        Ok(())
    }

    /// Runs a handler's work, answers its error in `protocol`'s shape, and counts the request.
    pub async fn answer(
        &self,
        protocol: Protocol,
        model: &str,
        work: impl Future<Output = Result<Response, ServeError>>,
    ) -> Response {
        let started = Instant::now();
        let response = match work.await {
            Ok(response) => response,
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::warn!(protocol = protocol.label(), model, %error, "request failed");
                }
                error.into_response_for(protocol)
            }
        };
        self.count(protocol, model, response.status().as_u16(), started.elapsed());
        response
    }

    /// Counts an answered request. Only models the server has get a label of their own: a client
    /// cannot grow the metrics.
    pub fn count(&self, protocol: Protocol, model: &str, status: u16, elapsed: std::time::Duration) {
        let label = if self.registry.serves(model) { model } else { "" };
        self.metrics.request(protocol, label, status, elapsed);
    }
}

/// The model a route names: `{name}`, and `{version}` on the `…/versions/{version}` routes, so
/// one handler serves a route with and without the version.
#[derive(Debug, serde::Deserialize)]
pub struct ModelPath {
    pub name: String,
    /// As the path gives it (TF Serving's verb may still ride on it: `2:predict`).
    pub version: Option<String>,
}

impl ModelPath {
    /// The version asked for, if any; anything but a positive integer names no version (404).
    pub fn version_number(&self) -> Result<Option<u64>, ServeError> {
        let Some(text) = self.version.as_deref() else { return Ok(None) };
        text.parse::<u64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Some)
            .ok_or_else(|| ServeError::NotFound(format!("{text:?} is not a model version (a positive integer)")))
    }
}

/// Every route of the three protocols, with the body limit and the time-out.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.settings.max_body_bytes;
    let timeout = state.settings.request_timeout;
    Router::new()
        // TensorFlow Serving: the verb rides on the last segment (`iris:predict`).
        .route("/v1/models/{name}", get(tfserving::status).post(tfserving::predict))
        .route("/v1/models/{name}/metadata", get(tfserving::metadata))
        .route("/v1/models/{name}/versions/{version}", get(tfserving::status).post(tfserving::predict))
        .route("/v1/models/{name}/versions/{version}/metadata", get(tfserving::metadata))
        // KServe v2.
        .route("/v2", get(kserve::server_metadata))
        .route("/v2/health/live", get(kserve::live))
        .route("/v2/health/ready", get(kserve::ready))
        .route("/v2/models/{name}", get(kserve::model_metadata))
        .route("/v2/models/{name}/ready", get(kserve::model_ready))
        .route("/v2/models/{name}/infer", post(kserve::infer))
        .route("/v2/models/{name}/versions/{version}", get(kserve::model_metadata))
        .route("/v2/models/{name}/versions/{version}/ready", get(kserve::model_ready))
        .route("/v2/models/{name}/versions/{version}/infer", post(kserve::infer))
        .route("/v2/repository/index", post(kserve::repository_index))
        .route("/v2/repository/models/{name}/load", post(kserve::repository_load))
        .route("/v2/repository/models/{name}/unload", post(kserve::repository_unload))
        // TorchServe.
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embed", post(tei::embed))
        .route("/predict", post(tei::predict))
        .route("/rerank", post(tei::rerank))
        .route("/ping", get(torchserve::ping))
        .route("/predictions/{name}", post(torchserve::predict))
        .route("/predictions/{name}/{version}", post(torchserve::predict))
        .route("/metrics", get(prometheus))
        .layer(DefaultBodyLimit::max(limit))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth::require_key))
        .with_state(state)
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// Looks at the repository every `MODEL_POLL_SECONDS` and brings the served models in line,
/// until `shutdown`.
pub async fn watch_repository(state: Arc<AppState>, shutdown: Shutdown) {
    let every = state.settings.model_poll;
    if every.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.wait() => return,
        }
        match state.registry.refresh().await {
            Ok(changes) if changes != registry::Changes::default() => {
                tracing::info!(loaded = ?changes.loaded, failed = ?changes.failed, unloaded = ?changes.unloaded, "the model repository changed");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "serving the models loaded before"),
        }
    }
}

/// Serves on `listener` until `shutdown`, then lets requests in flight finish for the grace
/// period. The repository is watched meanwhile.
pub async fn run(listener: TcpListener, state: Arc<AppState>, shutdown: Shutdown) -> std::io::Result<()> {
    let grace = state.settings.shutdown_grace;
    let watcher = tokio::spawn(watch_repository(Arc::clone(&state), shutdown.clone()));
    let _stop_watching = AbortOnDrop(watcher);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let stopping = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move { stopping.wait().await });
    tokio::select! {
        result = server => result,
        () = async { shutdown.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "requests still in flight at the end of the grace period: stopping");
            Ok(())
        }
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
