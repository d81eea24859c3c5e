//! Who may call the server. Closed by default, as the model servers we are measured against are:
//!
//! - **Inference** (every protocol, metadata and `/metrics` included) needs one of the API keys
//!   (`API_KEYS` / `API_KEYS_FILE`; in AWS a Secrets Manager secret), sent as
//!   `Authorization: Bearer <key>` (what OpenAI-style and TEI clients send) or `x-api-key: <key>`,
//!   over HTTP and as gRPC metadata alike.
//! - **The repository API** (index, load, unload) is off unless `REPOSITORY_API_KEYS` (or its
//!   file) is set, and then needs one of those keys, never an inference key: Triton's restricted
//!   API idea.
//! - **Health checks** (`/v2/health/live`, `/v2/health/ready`, `/ping`, gRPC `ServerLive`,
//!   `ServerReady` and `grpc.health.v1`) stay open for load balancers.
//!
//! Keys are held as SHA-256 digests and compared in constant time with every key, so neither the
//! timing nor a memory dump tells a key; a key is never logged. Several keys at once let a key be
//! rotated with no gap: add the new one, move the clients, remove the old one.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{Protocol, ServeError};

/// A set of API keys, kept as digests.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

/// The shortest key accepted: a short key can be guessed, whatever the comparison.
pub const MIN_KEY_LENGTH: usize = 16;

impl ApiKeys {
    /// Keys separated by commas, whitespace or new lines (a secret's value, or a file with one key
    /// a line). Refuses a set with no key or with a key shorter than [`MIN_KEY_LENGTH`], naming
    /// which one by its position, never by its text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let keys: Vec<&str> = text.split(|c: char| c == ',' || c.is_whitespace()).filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return Err("no key is given".to_owned());
        }
        if let Some(position) = keys.iter().position(|k| k.len() < MIN_KEY_LENGTH) {
            return Err(format!("key {} of {} is shorter than {MIN_KEY_LENGTH} characters", position + 1, keys.len()));
        }
        Ok(Self { digests: keys.iter().map(|k| digest(k)).collect() })
    }

    /// The keys in `path` (see [`ApiKeys::parse`]).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `presented` is one of the keys. Every key is compared, each in constant time.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        self.digests.iter().fold(false, |found, key| found | constant_time_eq(key, &presented))
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Read through black_box so the compiler cannot turn the fold into an early exit.
    std::hint::black_box(difference) == 0
}

/// Who may do what on this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The inference keys; `None` only when the server was started open on purpose
    /// (`ALLOW_UNAUTHENTICATED`).
    pub inference: Option<ApiKeys>,
    /// The repository API's keys; `None`: the repository API is off.
    pub repository: Option<ApiKeys>,
}

impl AccessPolicy {
    /// A server open to anyone, with the repository API on: for tests of other things.
    pub fn open() -> Self {
        Self { inference: None, repository: None }
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health checks: open.
    Health,
    Inference,
    Repository,
}

impl Access {
    /// The access an HTTP path needs.
    pub fn of_http_path(path: &str) -> Self {
        match path {
            "/v2/health/live" | "/v2/health/ready" | "/ping" => Access::Health,
            _ if path.starts_with("/v2/repository/") => Access::Repository,
            _ => Access::Inference,
        }
    }

    /// The access a gRPC method (`/package.Service/Method`) needs.
    pub fn of_grpc_path(path: &str) -> Self {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        match (service, method) {
            ("grpc.health.v1.Health", _) => Access::Health,
            ("inference.GRPCInferenceService", "ServerLive" | "ServerReady") => Access::Health,
            ("inference.GRPCInferenceService", "RepositoryIndex" | "RepositoryModelLoad" | "RepositoryModelUnload") => {
                Access::Repository
            }
            _ => Access::Inference,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this request needs an API key, sent as Authorization: Bearer <key> or x-api-key: <key>")]
    NoKey,
    #[error("the API key is not valid for this request")]
    WrongKey,
    #[error(
        "the repository API (index, load, unload) is off on this server: start it with REPOSITORY_API_KEYS to use it"
    )]
    RepositoryOff,
}

impl Denied {
    /// The metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::NoKey => "no_key",
            Denied::WrongKey => "wrong_key",
            Denied::RepositoryOff => "repository_off",
        }
    }
}

impl AccessPolicy {
    /// Whether a request for `access` with `headers` may go on.
    pub fn check(&self, access: Access, headers: &HeaderMap) -> Result<(), Denied> {
        let keys = match access {
            Access::Health => return Ok(()),
            Access::Inference => match &self.inference {
                Some(keys) => keys,
                None => return Ok(()),
            },
            Access::Repository => match (&self.repository, &self.inference) {
                (Some(keys), _) => keys,
                // A server started open on purpose keeps its repository API, as before keys.
                (None, None) => return Ok(()),
                (None, Some(_)) => return Err(Denied::RepositoryOff),
            },
        };
        let presented = presented_key(headers).ok_or(Denied::NoKey)?;
        if keys.accepts(presented) { Ok(()) } else { Err(Denied::WrongKey) }
    }
}

/// The key a request carries: `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, key) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
    });
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)).filter(|k| !k.is_empty())
}

/// The protocol an HTTP path speaks, for the shape of its error.
fn protocol_of(path: &str) -> Protocol {
    if path == "/v1/embeddings" {
        Protocol::OpenAi
    } else if ["/embed", "/predict", "/rerank"].contains(&path) {
        Protocol::Tei
    } else if path.starts_with("/v1/") {
        Protocol::TfServing
    } else if path.starts_with("/v2") {
        Protocol::KServe
    } else {
        Protocol::TorchServe
    }
}

impl From<Denied> for ServeError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::RepositoryOff => ServeError::Forbidden(denied.to_string()),
            Denied::NoKey | Denied::WrongKey => ServeError::Unauthorized(denied.to_string()),
        }
    }
}

/// The HTTP side's check, as a middleware over every route.
pub async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let access = Access::of_http_path(path);
    match state.settings.access.check(access, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let protocol = protocol_of(path);
            state.metrics.unauthorized(protocol, denied.reason());
            // At debug: strangers knocking must not fill the logs (and their bill); the metric counts them.
            tracing::debug!(protocol = protocol.label(), path, reason = denied.reason(), "request refused");
            let mut response = ServeError::from(denied).into_response_for(protocol);
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// The gRPC side's check: a tower layer over every service, which sees the method's path.
#[derive(Clone)]
pub struct GrpcAuthLayer {
    pub state: Arc<AppState>,
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth { inner, state: Arc::clone(&self.state) }
    }
}

#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        match self.state.settings.access.check(Access::of_grpc_path(path), request.headers()) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(denied) => {
                let protocol =
                    if path.starts_with("/tensorflow.") { Protocol::TfServingGrpc } else { Protocol::KServeGrpc };
                self.state.metrics.unauthorized(protocol, denied.reason());
                tracing::debug!(protocol = protocol.label(), path, reason = denied.reason(), "call refused");
                let status = tonic::Status::from(ServeError::from(denied));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k-0123456789abcdef";
    const NEW_KEY: &str = "k-fedcba9876543210";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn policy(repository: Option<&str>) -> AccessPolicy {
        AccessPolicy {
            inference: Some(ApiKeys::parse(&format!("{KEY},{NEW_KEY}")).unwrap()),
            repository: repository.map(|k| ApiKeys::parse(k).unwrap()),
        }
    }

    #[test]
    fn keys_parse_from_a_secret_or_a_file_and_refuse_short_or_none() {
        assert_eq!(ApiKeys::parse(&format!(" {KEY}\n{NEW_KEY}\n")).unwrap().len(), 2);
        assert_eq!(ApiKeys::parse(&format!("{KEY}, {NEW_KEY}")).unwrap().len(), 2);
        assert_eq!(ApiKeys::parse(" \n").unwrap_err(), "no key is given");
        let err = ApiKeys::parse(&format!("{KEY},abc123")).unwrap_err();
        assert!(err.contains("key 2 of 2") && !err.contains("abc123"), "{err}");
        assert!(!format!("{:?}", ApiKeys::parse(KEY).unwrap()).contains(KEY));
    }

    #[test]
    fn bearer_and_x_api_key_carry_a_key_and_either_key_of_a_rotation_works() {
        let policy = policy(None);
        for h in [
            headers(&[("authorization", &format!("Bearer {KEY}"))]),
            headers(&[("authorization", &format!("bearer {NEW_KEY}"))]),
            headers(&[("x-api-key", KEY)]),
        ] {
            assert_eq!(policy.check(Access::Inference, &h), Ok(()), "{h:?}");
        }
        assert_eq!(policy.check(Access::Inference, &HeaderMap::new()), Err(Denied::NoKey));
        assert_eq!(policy.check(Access::Inference, &headers(&[("authorization", KEY)])), Err(Denied::NoKey));
        assert_eq!(
            policy.check(Access::Inference, &headers(&[("x-api-key", "k-0123456789abcdeX")])),
            Err(Denied::WrongKey)
        );
        assert_eq!(policy.check(Access::Health, &HeaderMap::new()), Ok(()));
    }

    #[test]
    fn the_repository_api_is_off_without_its_keys_and_never_takes_an_inference_key() {
        let bearer = headers(&[("authorization", &format!("Bearer {KEY}"))]);
        assert_eq!(policy(None).check(Access::Repository, &bearer), Err(Denied::RepositoryOff));
        let admin = "admin-0123456789abcdef";
        let with_repository = policy(Some(admin));
        assert_eq!(with_repository.check(Access::Repository, &bearer), Err(Denied::WrongKey));
        assert_eq!(with_repository.check(Access::Repository, &headers(&[("x-api-key", admin)])), Ok(()));
        // and the repository key is no inference key
        assert_eq!(with_repository.check(Access::Inference, &headers(&[("x-api-key", admin)])), Err(Denied::WrongKey));
    }

    #[test]
    fn paths_need_what_they_do() {
        assert_eq!(Access::of_http_path("/v2/health/ready"), Access::Health);
        assert_eq!(Access::of_http_path("/ping"), Access::Health);
        assert_eq!(Access::of_http_path("/metrics"), Access::Inference);
        assert_eq!(Access::of_http_path("/v2/models/iris/ready"), Access::Inference);
        assert_eq!(Access::of_http_path("/v2/repository/models/iris/unload"), Access::Repository);
        assert_eq!(Access::of_grpc_path("/grpc.health.v1.Health/Check"), Access::Health);
        assert_eq!(Access::of_grpc_path("/inference.GRPCInferenceService/ServerReady"), Access::Health);
        assert_eq!(Access::of_grpc_path("/inference.GRPCInferenceService/ModelInfer"), Access::Inference);
        assert_eq!(Access::of_grpc_path("/inference.GRPCInferenceService/RepositoryModelUnload"), Access::Repository);
        assert_eq!(Access::of_grpc_path("/tensorflow.serving.PredictionService/Predict"), Access::Inference);
    }
}
