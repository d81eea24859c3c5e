//! AWS errors as a person needs to read them: which call failed, and the service's own error code
//! and message (`AccessDenied`, `NoSuchBucket`, `SlowDown`), or what broke on the way when the
//! service never answered. The SDK's own `Display` says only "service error".

use std::error::Error;
use std::fmt;

#[cfg(feature = "aws")]
use aws_smithy_runtime_api::client::result::SdkError;
#[cfg(feature = "aws")]
use aws_smithy_runtime_api::http::Response;
#[cfg(feature = "aws")]
use aws_smithy_types::body::SdkBody;
#[cfg(feature = "aws")]
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

type BoxError = Box<dyn Error + Send + Sync>;

/// How a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// The service answered with an error (it has a code, usually a message and a status).
    Service,
    /// No answer in time.
    Timeout,
    /// The request could not be sent or the connection broke (DNS, TCP, TLS).
    Network,
    /// An answer came that could not be read.
    Response,
    /// The request could not even be built (a bug or a bad setting; retrying does not help).
    Request,
}

/// One failed AWS call. (Boxed inside: errors travel in `Result`s, and should be small there.)
#[derive(Debug)]
pub struct AwsError(Box<Details>);

#[derive(Debug)]
struct Details {
    service: &'static str,
    operation: &'static str,
    /// What the call was about (`s3://bucket/key`, a queue URL), when it helps to say.
    resource: Option<String>,
    kind: AwsErrorKind,
    /// The service's error code, e.g. `AccessDenied`.
    code: Option<String>,
    message: Option<String>,
    /// The HTTP status of the answer, if one came.
    status: Option<u16>,
    source: BoxError,
}

/// Error codes that mean "slow down" or "try again" whatever their HTTP status.
const RETRYABLE_CODES: &[&str] = &[
    "BandwidthLimitExceeded",
    "InternalError",
    "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServerException",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
];

impl AwsError {
    /// Describes a failed call of `service`'s `operation`, keeping the SDK error as the source.
    #[cfg(feature = "aws")]
    pub fn from_sdk<E>(service: &'static str, operation: &'static str, error: SdkError<E, Response<SdkBody>>) -> Self
    where
        E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    {
        let kind = match &error {
            SdkError::ServiceError(_) => AwsErrorKind::Service,
            SdkError::TimeoutError(_) => AwsErrorKind::Timeout,
            SdkError::DispatchFailure(_) => AwsErrorKind::Network,
            SdkError::ResponseError(_) => AwsErrorKind::Response,
            _ => AwsErrorKind::Request,
        };
        Self(Box::new(Details {
            service,
            operation,
            resource: None,
            kind,
            code: error.code().map(str::to_owned),
            message: error.message().map(str::to_owned),
            status: error.raw_response().map(|r| r.status().as_u16()),
            source: Box::new(error),
        }))
    }

    /// A failure that did not come from the SDK's call itself, such as a download that broke
    /// after its response started.
    pub fn other(
        service: &'static str,
        operation: &'static str,
        kind: AwsErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        Self(Box::new(Details {
            service,
            operation,
            resource: None,
            kind,
            code: None,
            message: None,
            status: None,
            source: source.into(),
        }))
    }

    /// A service error with this code and status (for fakes and tests).
    pub fn service(service: &'static str, operation: &'static str, code: &str, message: &str, status: u16) -> Self {
        Self(Box::new(Details {
            service,
            operation,
            resource: None,
            kind: AwsErrorKind::Service,
            code: Some(code.to_owned()),
            message: Some(message.to_owned()),
            status: Some(status),
            source: format!("{code}: {message}").into(),
        }))
    }

    /// Names what the call was about in the message.
    pub fn on(mut self, resource: impl Into<String>) -> Self {
        self.0.resource = Some(resource.into());
        self
    }

    pub fn kind(&self) -> AwsErrorKind {
        self.0.kind
    }

    /// The service's error code, e.g. `AccessDenied`.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// The HTTP status of the answer, if one came.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// Whether the same call may succeed later: throttling, server errors, time-outs and
    /// network failures.
    pub fn is_retryable(&self) -> bool {
        match self.0.kind {
            AwsErrorKind::Service => {
                self.0.status.is_some_and(|s| s >= 500 || s == 429)
                    || self.0.code.as_deref().is_some_and(|c| RETRYABLE_CODES.contains(&c))
            }
            AwsErrorKind::Timeout | AwsErrorKind::Network | AwsErrorKind::Response => true,
            AwsErrorKind::Request => false,
        }
    }

    /// Permissions refused the call: an IAM policy, a bucket policy or a KMS key policy.
    pub fn is_access_denied(&self) -> bool {
        self.0.status == Some(403)
            || self
                .0
                .code
                .as_deref()
                .is_some_and(|c| matches!(c, "AccessDenied" | "AccessDeniedException" | "Forbidden"))
    }

    /// KMS refused to decrypt or encrypt (a disabled or missing key, a missing grant).
    pub fn is_kms(&self) -> bool {
        self.0.code.as_deref().is_some_and(|c| c.starts_with("KMS.") || c.starts_with("KMS"))
            || (self.is_access_denied() && self.0.message.as_deref().is_some_and(|m| m.contains("KMS")))
    }

    /// The object, bucket or resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.0.status == Some(404)
            || self.0.code.as_deref().is_some_and(|c| {
                matches!(c, "NoSuchKey" | "NotFound" | "NoSuchBucket" | "NoSuchUpload" | "ResourceNotFoundException")
            })
    }

    /// A condition of the request (`If-Match`) no longer holds.
    pub fn is_precondition_failed(&self) -> bool {
        self.0.status == Some(412) || self.0.code.as_deref() == Some("PreconditionFailed")
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.0.service, self.0.operation)?;
        if let Some(resource) = &self.0.resource {
            write!(f, "{resource} ")?;
        }
        f.write_str("failed: ")?;
        match (self.0.kind, &self.0.code) {
            (AwsErrorKind::Service, Some(code)) => {
                f.write_str(code)?;
                if let Some(message) = self.0.message.as_deref().filter(|m| !m.is_empty()) {
                    write!(f, ": {message}")?;
                }
            }
            (kind, _) => {
                let what = match kind {
                    AwsErrorKind::Service => "error answer without a code",
                    AwsErrorKind::Timeout => "timed out",
                    AwsErrorKind::Network => "could not reach the service",
                    AwsErrorKind::Response => "unreadable answer",
                    AwsErrorKind::Request => "could not build the request",
                };
                write!(f, "{what}: {}", error_chain(self.0.source.as_ref()))?;
            }
        }
        if let Some(status) = self.0.status {
            write!(f, " (HTTP {status})")?;
        }
        Ok(())
    }
}

impl Error for AwsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.0.source.as_ref())
    }
}

/// An error and its causes on one line, `outer: cause: root cause`, skipping causes whose text
/// the previous one already holds.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let line = cause.to_string();
        if !line.is_empty() && !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;
    use aws_smithy_types::error::ErrorMetadata;

    /// A service error as the SDK would return it for an operation.
    #[derive(Debug)]
    struct FakeOperationError(ErrorMetadata);

    impl fmt::Display for FakeOperationError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("unhandled error")
        }
    }

    impl Error for FakeOperationError {}

    impl ProvideErrorMetadata for FakeOperationError {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    fn service_error(code: &str, message: &str, status: u16) -> SdkError<FakeOperationError, Response<SdkBody>> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let response = Response::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(FakeOperationError(meta), response)
    }

    #[test]
    fn a_service_error_shows_its_code_message_and_status() {
        // GIVEN what the SDK returns for a refused GetObject (its Display says "service error")
        let sdk = service_error("AccessDenied", "Access Denied", 403);
        assert_eq!(sdk.to_string(), "service error");
        // WHEN it is described
        let error = AwsError::from_sdk("S3", "GetObject", sdk);
        // THEN the service's code and message are there
        assert_eq!(error.to_string(), "S3 GetObject failed: AccessDenied: Access Denied (HTTP 403)");
        assert!(error.is_access_denied() && !error.is_retryable() && !error.is_kms());
        let error = error.on("s3://in/a.csv");
        assert_eq!(error.to_string(), "S3 GetObject s3://in/a.csv failed: AccessDenied: Access Denied (HTTP 403)");
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        let slow =
            AwsError::from_sdk("S3", "UploadPart", service_error("SlowDown", "Please reduce your request rate.", 503));
        assert!(slow.is_retryable());
        assert!(slow.to_string().contains("SlowDown: Please reduce your request rate. (HTTP 503)"), "{slow}");
        let throttled =
            AwsError::from_sdk("SQS", "SendMessageBatch", service_error("ThrottlingException", "Rate exceeded", 400));
        assert!(throttled.is_retryable());
        let missing = AwsError::from_sdk(
            "S3",
            "GetObject",
            service_error("NoSuchBucket", "The specified bucket does not exist", 404),
        );
        assert!(missing.is_not_found() && !missing.is_retryable());
    }

    #[test]
    fn kms_refusals_are_told_apart() {
        let disabled =
            AwsError::from_sdk("S3", "GetObject", service_error("KMS.DisabledException", "key is disabled", 400));
        assert!(disabled.is_kms());
        let grant = AwsError::from_sdk(
            "S3",
            "GetObject",
            service_error("AccessDenied", "User is not authorized to perform: kms:Decrypt (KMS key policy)", 403),
        );
        assert!(grant.is_kms() && grant.is_access_denied());
    }

    #[test]
    fn a_broken_connection_shows_its_cause() {
        let sdk: SdkError<FakeOperationError, Response<SdkBody>> =
            SdkError::dispatch_failure(aws_smithy_runtime_api::client::result::ConnectorError::io(
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer").into(),
            ));
        let error = AwsError::from_sdk("SQS", "ReceiveMessage", sdk);
        assert!(error.is_retryable());
        assert!(error.to_string().starts_with("SQS ReceiveMessage failed: could not reach the service: "), "{error}");
        assert!(error.to_string().contains("connection reset by peer"), "{error}");
    }

    #[test]
    fn the_chain_skips_repeated_causes() {
        let inner = std::io::Error::other("stalled: no bytes for 20 s");
        let outer = AwsError::other("S3", "GetObject", AwsErrorKind::Network, inner);
        assert_eq!(outer.to_string(), "S3 GetObject failed: could not reach the service: stalled: no bytes for 20 s");
    }
}
