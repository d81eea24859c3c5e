//! One error type for every endpoint, answered in the shape of the protocol asked: `{"error":
//! "…"}` for TF Serving and KServe v2, `{"code", "type", "message"}` for TorchServe.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::batcher::InferError;
use super::registry::{LookupError, RepositoryError};

/// The protocol a request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    TfServing,
    KServe,
    TorchServe,
    /// KServe v2 over gRPC.
    KServeGrpc,
    /// TF Serving's gRPC API.
    TfServingGrpc,
    /// OpenAI's embeddings API.
    OpenAi,
    /// Hugging Face text-embeddings-inference's API.
    Tei,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::TfServing => "tfserving",
            Protocol::KServe => "kserve",
            Protocol::TorchServe => "torchserve",
            Protocol::KServeGrpc => "kserve-grpc",
            Protocol::TfServingGrpc => "tfserving-grpc",
            Protocol::OpenAi => "openai",
            Protocol::Tei => "tei",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// A text longer than the model reads, where the client asked not to truncate (413).
    #[error("{0}")]
    TooLong(String),
    #[error(
        "the request needs about {needed} bytes in flight, more than the server's whole budget of {budget} \
         (MAX_BYTES_IN_FLIGHT): send fewer rows a request"
    )]
    OverBudget { needed: usize, budget: usize },
    #[error(
        "the answer to {rows} rows could take {bound} bytes, more than the limit of {limit} \
         (MAX_RESPONSE_BYTES): send fewer rows a request"
    )]
    AnswerTooLarge { rows: usize, bound: usize, limit: usize },
    #[error("{0}")]
    Internal(String),
    /// No API key, or a wrong one (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Something this server does not allow, whatever the key (403).
    #[error("{0}")]
    Forbidden(String),
}

impl ServeError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServeError::Overloaded(_) | ServeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::TooLarge(_)
            | ServeError::TooLong(_)
            | ServeError::OverBudget { .. }
            | ServeError::AnswerTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServeError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// TorchServe's exception names.
    /// text-embeddings-inference's `error_type`.
    fn tei_type(&self) -> &'static str {
        match self {
            ServeError::Overloaded(_) => "Overloaded",
            ServeError::Unavailable(_) | ServeError::Internal(_) => "Backend",
            ServeError::Unauthorized(_) | ServeError::Forbidden(_) => "Unauthorized",
            _ => "Validation",
        }
    }

    /// OpenAI's error `type` and `code`.
    fn openai_type(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ServeError::NotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ServeError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            ServeError::Overloaded(_) | ServeError::Unavailable(_) | ServeError::Internal(_) => ("server_error", None),
            _ => ("invalid_request_error", None),
        }
    }

    fn torchserve_type(&self) -> &'static str {
        match self {
            ServeError::NotFound(_) => "ModelNotFoundException",
            ServeError::BadRequest(_) => "BadRequestException",
            ServeError::Overloaded(_) => "ServiceUnavailableException",
            ServeError::Unavailable(_) => "ModelUnavailableException",
            ServeError::TooLarge(_)
            | ServeError::TooLong(_)
            | ServeError::OverBudget { .. }
            | ServeError::AnswerTooLarge { .. } => "RequestEntityTooLargeException",
            ServeError::Internal(_) => "InternalServerException",
            ServeError::Unauthorized(_) => "InvalidKeyException",
            ServeError::Forbidden(_) => "ForbiddenException",
        }
    }

    /// The error as `protocol` answers it.
    pub fn into_response_for(self, protocol: Protocol) -> Response {
        let status = self.status();
        let body = match protocol {
            Protocol::TfServing | Protocol::KServe | Protocol::KServeGrpc | Protocol::TfServingGrpc => {
                json!({ "error": self.to_string() })
            }
            Protocol::TorchServe => {
                json!({ "code": status.as_u16(), "type": self.torchserve_type(), "message": self.to_string() })
            }
            Protocol::OpenAi => {
                let (kind, code) = self.openai_type();
                json!({ "error": { "message": self.to_string(), "type": kind, "param": null, "code": code } })
            }
            Protocol::Tei => json!({ "error": self.to_string(), "error_type": self.tei_type() }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, ServeError::Overloaded(_)) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<LookupError> for ServeError {
    fn from(error: LookupError) -> Self {
        match error {
            LookupError::Unavailable { .. } => ServeError::Unavailable(error.to_string()),
            _ => ServeError::NotFound(error.to_string()),
        }
    }
}

impl From<RepositoryError> for ServeError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Unreadable(_) => ServeError::Unavailable(error.to_string()),
            RepositoryError::NoModel(_) => ServeError::NotFound(error.to_string()),
            RepositoryError::NothingLoaded { .. } | RepositoryError::BadSettings { .. } => {
                ServeError::BadRequest(error.to_string())
            }
        }
    }
}

impl From<InferError> for ServeError {
    fn from(error: InferError) -> Self {
        match error {
            InferError::Overloaded(_) | InferError::Stopped | InferError::TokensBusy { .. } => {
                ServeError::Overloaded(error.to_string())
            }
            InferError::TooManyTokens { .. } => ServeError::TooLong(error.to_string()),
            InferError::Model(_) => ServeError::Internal(error.to_string()),
        }
    }
}

/// The request body, or why it could not be read (413 past the body limit).
pub fn body(result: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ServeError> {
    result.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServeError::TooLarge(limit),
        _ => ServeError::BadRequest(format!("the request body cannot be read: {rejection}")),
    })
}
