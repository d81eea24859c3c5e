//! The Lambda Runtime API (2018-06-01) as a small HTTP server on 127.0.0.1: the function's
//! runtime client long-polls `invocation/next` for events and posts each result to
//! `invocation/{id}/response` or `invocation/{id}/error`; start-up failures go to `init/error`.
//!
//! One event is handed out at a time, in order. An invocation nobody waits for any more is
//! skipped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::FunctionError;

/// What the function answered for one invocation.
#[derive(Debug)]
pub(crate) enum InvocationResult {
    /// The body of `invocation/{id}/response`.
    Response(Bytes),
    /// The parsed body of `invocation/{id}/error`.
    Error(FunctionError),
}

/// An event waiting to be handed to the function.
#[derive(Debug)]
pub(crate) struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline: SystemTime,
}

#[derive(Debug)]
struct ApiState {
    function_arn: String,
    queue_sender: mpsc::UnboundedSender<Invocation>,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<InvocationResult>>>,
    init_error: Mutex<Option<FunctionError>>,
}

/// The running Runtime API server; it stops when dropped.
#[derive(Debug)]
pub(crate) struct RuntimeApi {
    address: SocketAddr,
    state: Arc<ApiState>,
    server: JoinHandle<()>,
}

impl RuntimeApi {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start(function_arn: String) -> Result<Self> {
        let (queue_sender, queue) = mpsc::unbounded_channel();
        let state = Arc::new(ApiState {
            function_arn,
            queue_sender,
            queue: tokio::sync::Mutex::new(queue),
            waiting: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("cannot listen on 127.0.0.1 for the Lambda Runtime API")?;
        let address = listener.local_addr().context("cannot read the Runtime API's address")?;
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route("/2018-06-01/runtime/invocation/{request_id}/response", post(invocation_response))
            .route("/2018-06-01/runtime/invocation/{request_id}/error", post(invocation_error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            // Lambda's payload limit for synchronous invocations (axum's default is 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(6 * 1024 * 1024))
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!("the Lambda Runtime API server stopped: {err}");
            }
        });
        Ok(Self { address, state, server })
    }

    /// `127.0.0.1:PORT`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Queues an invocation; the receiver gets the function's result.
    pub fn enqueue(&self, payload: Bytes, timeout: Duration) -> (String, oneshot::Receiver<InvocationResult>) {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (sender, receiver) = oneshot::channel();
        lock(&self.state.waiting).insert(request_id.clone(), sender);
        let invocation = Invocation { request_id: request_id.clone(), payload, deadline: SystemTime::now() + timeout };
        // The receiver lives in `state`, which `self` keeps alive, so sending cannot fail.
        let _ = self.state.queue_sender.send(invocation);
        (request_id, receiver)
    }

    /// The error the function reported to `init/error`, if any, clearing it.
    pub fn take_init_error(&self) -> Option<FunctionError> {
        lock(&self.state.init_error).take()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Locks a std mutex, recovering from a poisoned one (the data stays consistent: every critical
/// section is a single insert or remove).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn next_invocation(State(state): State<Arc<ApiState>>) -> Response {
    let mut queue = state.queue.lock().await;
    loop {
        let Some(invocation) = queue.recv().await else {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "the invocation queue closed",
            );
        };
        let still_wanted = {
            let mut waiting = lock(&state.waiting);
            let wanted = waiting.get(&invocation.request_id).is_some_and(|sender| !sender.is_closed());
            if !wanted {
                waiting.remove(&invocation.request_id);
            }
            wanted
        };
        if !still_wanted {
            continue; // the caller stopped waiting while the event was queued
        }
        tracing::debug!(request_id = %invocation.request_id, "handing out an invocation");
        let deadline_ms = invocation.deadline.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
        let mut headers = HeaderMap::new();
        insert_header(&mut headers, "lambda-runtime-aws-request-id", &invocation.request_id);
        insert_header(&mut headers, "lambda-runtime-deadline-ms", &deadline_ms.to_string());
        insert_header(&mut headers, "lambda-runtime-invoked-function-arn", &state.function_arn);
        insert_header(&mut headers, "lambda-runtime-trace-id", &trace_id());
        insert_header(&mut headers, "content-type", "application/json");
        return (StatusCode::OK, headers, invocation.payload).into_response();
    }
}

async fn invocation_response(
    State(state): State<Arc<ApiState>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> Response {
    deliver(&state, &request_id, InvocationResult::Response(body))
}

async fn invocation_error(
    State(state): State<Arc<ApiState>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error = parse_function_error(&headers, &body);
    deliver(&state, &request_id, InvocationResult::Error(error))
}

async fn init_error(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let error = parse_function_error(&headers, &body);
    tracing::warn!(error_type = %error.error_type, "the function failed to initialise: {}", error.error_message);
    *lock(&state.init_error) = Some(error);
    accepted()
}

fn deliver(state: &ApiState, request_id: &str, result: InvocationResult) -> Response {
    let Some(sender) = lock(&state.waiting).remove(request_id) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            &format!("no invocation {request_id} is waiting for a result"),
        );
    };
    // The caller may have stopped waiting in the meantime; the result is then dropped, as Lambda does.
    let _ = sender.send(result);
    accepted()
}

/// Reads `{"errorType": …, "errorMessage": …}`, falling back to the
/// `Lambda-Runtime-Function-Error-Type` header and the raw body.
fn parse_function_error(headers: &HeaderMap, body: &[u8]) -> FunctionError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(str::to_owned);
    let header_type =
        headers.get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    FunctionError {
        error_type: field("errorType").or(header_type).unwrap_or_else(|| "Unhandled".to_owned()),
        error_message: field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    }
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
}

fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "errorType": error_type, "errorMessage": message }))).into_response()
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// An X-Ray trace header: `Root=1-<epoch hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
fn trace_id() -> String {
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{epoch:08x}-{};Parent={};Sampled=0", &random[..24], &random[16..])
}
