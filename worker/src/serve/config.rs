//! The server's settings, from the environment (the ECS service's task definition), which the
//! `worker serve` flags override.

use std::net::IpAddr;
use std::time::Duration;

use shared::config::{ConfigError, EnvVar, Environment};

use crate::engine::default_threads;

use super::auth::{AccessPolicy, ApiKeys};
use super::batcher::BatchSettings;

pub const MODEL_REPOSITORY: EnvVar =
    EnvVar::optional("MODEL_REPOSITORY", "s3://bucket/prefix/ or a folder of the models to serve", "");
pub const PORT: EnvVar = EnvVar::optional("PORT", "the TCP port to listen on, from 1 to 65535", "8080");
pub const GRPC_PORT: EnvVar = EnvVar::optional(
    "GRPC_PORT",
    "the TCP port of the gRPC services (KServe v2, TF Serving, health), from 1 to 65535, or 0 for none",
    "8001",
);
pub const BIND: EnvVar =
    EnvVar::optional("BIND", "the IP address to listen on, e.g. 127.0.0.1 or 0.0.0.0", "127.0.0.1");
pub const MAX_BATCH_ROWS: EnvVar =
    EnvVar::optional("MAX_BATCH_ROWS", "the most rows one model run takes, from 1 to 65536", "256");
pub const MAX_BATCH_DELAY_MICROS: EnvVar = EnvVar::optional(
    "MAX_BATCH_DELAY_MICROS",
    "microseconds a request waits for others to batch with while the model is free, from 0 to 1000000",
    "0",
);
pub const QUEUE_CAPACITY: EnvVar = EnvVar::optional(
    "QUEUE_CAPACITY",
    "requests that may wait for one model, from 1 to 100000; more are answered 503",
    "512",
);
pub const MAX_BODY_BYTES: EnvVar = EnvVar::optional(
    "MAX_BODY_BYTES",
    "the largest request body in bytes, from 1024 to 1073741824; larger ones are answered 413",
    "16777216",
);
pub const MAX_RESPONSE_BYTES: EnvVar = EnvVar::optional(
    "MAX_RESPONSE_BYTES",
    "the largest answer in bytes, from 1024 to 1073741824; a request whose answer could be larger is refused (413) before the model runs",
    "134217728",
);
pub const MAX_BYTES_IN_FLIGHT: EnvVar = EnvVar::optional(
    "MAX_BYTES_IN_FLIGHT",
    "bytes all requests may hold at once (bodies, their rows, outputs and answers), at least MAX_BODY_BYTES; over it requests are answered 503",
    "268435456",
);
pub const REQUEST_TIMEOUT_SECONDS: EnvVar = EnvVar::optional(
    "REQUEST_TIMEOUT_SECONDS",
    "seconds a request may take, body included, from 1 to 3600; slower ones are answered 408",
    "30",
);
pub const SHUTDOWN_GRACE_SECONDS: EnvVar = EnvVar::optional(
    "SHUTDOWN_GRACE_SECONDS",
    "seconds to finish requests in flight after SIGTERM, from 0 to 600 (below the task's stop timeout)",
    "25",
);
pub const MODEL_POLL_SECONDS: EnvVar = EnvVar::optional(
    "MODEL_POLL_SECONDS",
    "seconds between looks at the model repository for new or removed versions, from 0 (never) to 86400",
    "30",
);
pub const MAX_BATCH_TOKENS: EnvVar = EnvVar::optional(
    "MAX_BATCH_TOKENS",
    "tokens a text model's requests may hold at once (a text counts its bytes plus 4, at most the model's maximum length); over it requests are answered 503, a request over it alone 413",
    "16384",
);
pub const INFERENCE_THREADS: EnvVar = EnvVar::optional(
    "INFERENCE_THREADS",
    "batches of one model run at once, from 1 to 256, or 0 for one per core",
    "0",
);

pub const API_KEYS: EnvVar = EnvVar::optional(
    "API_KEYS",
    "the API keys inference needs, separated by commas or new lines, at least 16 characters each (in AWS, the stack's secret)",
    "",
);
pub const API_KEYS_FILE: EnvVar =
    EnvVar::optional("API_KEYS_FILE", "a file of API keys for inference, one a line (instead of API_KEYS)", "");
pub const REPOSITORY_API_KEYS: EnvVar = EnvVar::optional(
    "REPOSITORY_API_KEYS",
    "the keys the repository API (index, load, unload) needs, separated by commas or new lines; empty: the repository API is off",
    "",
);
pub const REPOSITORY_API_KEYS_FILE: EnvVar = EnvVar::optional(
    "REPOSITORY_API_KEYS_FILE",
    "a file of keys for the repository API, one a line (instead of REPOSITORY_API_KEYS)",
    "",
);
pub const ALLOW_UNAUTHENTICATED: EnvVar = EnvVar::optional(
    "ALLOW_UNAUTHENTICATED",
    "true to serve inference with no API key, on a network that lets no stranger in; false (API_KEYS or API_KEYS_FILE needed)",
    "false",
);

/// Every variable `worker serve` reads.
pub const VARS: &[EnvVar] = &[
    MODEL_REPOSITORY,
    PORT,
    GRPC_PORT,
    BIND,
    MAX_BATCH_ROWS,
    MAX_BATCH_DELAY_MICROS,
    QUEUE_CAPACITY,
    MAX_BODY_BYTES,
    MAX_RESPONSE_BYTES,
    MAX_BYTES_IN_FLIGHT,
    REQUEST_TIMEOUT_SECONDS,
    SHUTDOWN_GRACE_SECONDS,
    MAX_BATCH_TOKENS,
    INFERENCE_THREADS,
    MODEL_POLL_SECONDS,
    crate::config::MAX_IMAGE_PIXELS,
    API_KEYS,
    API_KEYS_FILE,
    REPOSITORY_API_KEYS,
    REPOSITORY_API_KEYS_FILE,
    ALLOW_UNAUTHENTICATED,
];

#[derive(Debug, Clone, PartialEq)]
pub struct ServeSettings {
    pub model_repository: Option<String>,
    pub bind: IpAddr,
    pub port: u16,
    /// The gRPC port; 0 for no gRPC.
    pub grpc_port: u16,
    pub batch: BatchSettings,
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
    pub max_bytes_in_flight: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How often the repository is looked at for changes; zero for never.
    pub model_poll: Duration,
    /// Images with more pixels are refused (400) before they are decoded.
    pub max_image_pixels: u64,
    /// Who may call the server ([`super::auth`]).
    pub access: AccessPolicy,
}

impl ServeSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<Self, ConfigError> {
        let threads = match env.parse_in(&INFERENCE_THREADS, 0..=256usize)? {
            0 => default_threads(),
            n => n,
        };
        let repository = env.string(&MODEL_REPOSITORY)?;
        let max_body_bytes = env.parse_in(&MAX_BODY_BYTES, 1024..=1 << 30)?;
        Ok(Self {
            model_repository: Some(repository).filter(|r| !r.is_empty()),
            bind: env.parse(&BIND)?,
            port: env.parse_in(&PORT, 1..=65535)?,
            grpc_port: env.parse(&GRPC_PORT)?,
            batch: BatchSettings {
                max_batch_rows: env.parse_in(&MAX_BATCH_ROWS, 1..=65536)?,
                max_delay: Duration::from_micros(env.parse_in(&MAX_BATCH_DELAY_MICROS, 0..=1_000_000)?),
                queue_capacity: env.parse_in(&QUEUE_CAPACITY, 1..=100_000)?,
                parallel: threads,
                max_batch_tokens: env.parse_in(&MAX_BATCH_TOKENS, 1..=1 << 24)?,
            },
            max_body_bytes,
            max_response_bytes: env.parse_in(&MAX_RESPONSE_BYTES, 1024..=1 << 30)?,
            max_bytes_in_flight: env.parse_in(&MAX_BYTES_IN_FLIGHT, max_body_bytes..=1 << 40)?,
            request_timeout: Duration::from_secs(env.parse_in(&REQUEST_TIMEOUT_SECONDS, 1..=3600)?),
            shutdown_grace: Duration::from_secs(env.parse_in(&SHUTDOWN_GRACE_SECONDS, 0..=600)?),
            model_poll: Duration::from_secs(env.parse_in(&MODEL_POLL_SECONDS, 0..=86_400)?),
            max_image_pixels: env.parse_in(&crate::config::MAX_IMAGE_PIXELS, 1..=u64::MAX)?,
            access: access_from_env(env)?,
        })
    }
}

/// The keys from `keys` or `file` (not both); `None` when neither is set.
fn keys_from_env<F: Fn(&str) -> Option<String>>(
    env: &Environment<F>,
    keys: &EnvVar,
    file: &EnvVar,
) -> Result<Option<ApiKeys>, ConfigError> {
    // The problem never quotes the value: it is a secret.
    match (env.string(keys)?, env.string(file)?) {
        (text, path) if !text.trim().is_empty() && !path.is_empty() => {
            Err(ConfigError::invalid(file, format!("is set as well as {}: give the keys one way", keys.name)))
        }
        (text, _) if !text.trim().is_empty() => {
            ApiKeys::parse(&text).map(Some).map_err(|e| ConfigError::invalid(keys, e))
        }
        (_, path) if !path.is_empty() => {
            ApiKeys::from_file(std::path::Path::new(&path)).map(Some).map_err(|e| ConfigError::invalid(file, e))
        }
        _ => Ok(None),
    }
}

fn access_from_env<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<AccessPolicy, ConfigError> {
    let inference = keys_from_env(env, &API_KEYS, &API_KEYS_FILE)?;
    let repository = keys_from_env(env, &REPOSITORY_API_KEYS, &REPOSITORY_API_KEYS_FILE)?;
    let open: bool = env.parse(&ALLOW_UNAUTHENTICATED)?;
    match (&inference, open) {
        (None, false) => Err(ConfigError::invalid(
            &API_KEYS,
            "no API key is set: inference needs keys (API_KEYS or API_KEYS_FILE), or ALLOW_UNAUTHENTICATED=true on a \
             network that lets no stranger in",
        )),
        (Some(_), true) => {
            Err(ConfigError::invalid(&ALLOW_UNAUTHENTICATED, "is true but API keys are set too: keep one of the two"))
        }
        _ => Ok(AccessPolicy { inference, repository }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::environment_of as env;

    #[test]
    fn defaults_listen_on_loopback_and_batch_briefly() {
        let settings = ServeSettings::from_env(&env(&[("ALLOW_UNAUTHENTICATED", "true")])).unwrap();
        assert_eq!((settings.bind.to_string(), settings.port, settings.grpc_port), ("127.0.0.1".into(), 8080, 8001));
        assert_eq!(settings.batch.max_batch_rows, 256);
        assert_eq!(settings.batch.max_delay, Duration::ZERO);
        assert_eq!(settings.model_repository, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("PORT", "0"),
            ("GRPC_PORT", "70000"),
            ("BIND", "localhost:80"),
            ("MAX_BATCH_ROWS", "0"),
            ("MAX_BATCH_DELAY_MICROS", "soon"),
            ("QUEUE_CAPACITY", "0"),
            ("MAX_BODY_BYTES", "10"),
            ("MAX_RESPONSE_BYTES", "-1"),
            ("MAX_BYTES_IN_FLIGHT", "1024"),
            ("REQUEST_TIMEOUT_SECONDS", "0"),
            ("INFERENCE_THREADS", "999"),
            ("MODEL_POLL_SECONDS", "soon"),
            ("API_KEYS", "short"),
            ("REPOSITORY_API_KEYS", "short"),
            ("API_KEYS_FILE", "/nonexistent/keys"),
        ] {
            // (a valid key first, which the variable under test may replace)
            let pairs = [("API_KEYS", "k-0123456789abcdef"), (name, value)];
            assert_eq!(ServeSettings::from_env(&env(&pairs)).unwrap_err().name, name, "{name}={value}");
        }
    }

    #[test]
    fn the_server_is_closed_unless_opened_on_purpose() {
        // GIVEN no key: refused, naming API_KEYS
        let err = ServeSettings::from_env(&env(&[])).unwrap_err();
        assert_eq!(err.name, "API_KEYS");
        // keys: inference needs them, the repository API is off
        let settings = ServeSettings::from_env(&env(&[("API_KEYS", "k-0123456789abcdef,k-fedcba9876543210")])).unwrap();
        assert_eq!(settings.access.inference.as_ref().map(|k| k.len()), Some(2));
        assert_eq!(settings.access.repository, None);
        // both ways at once is a mistake
        let both = env(&[("API_KEYS", "k-0123456789abcdef"), ("ALLOW_UNAUTHENTICATED", "true")]);
        assert_eq!(ServeSettings::from_env(&both).unwrap_err().name, "ALLOW_UNAUTHENTICATED");
        // the error never quotes a key
        let err = ServeSettings::from_env(&env(&[("API_KEYS", "k-0123456789abcdef,abc123")])).unwrap_err();
        assert!(!err.problem.contains("abc123"), "{err:?}");
    }

    #[test]
    fn keys_come_from_a_file_one_a_line() {
        let path = std::env::temp_dir().join(format!("sluice-keys-{}", std::process::id()));
        std::fs::write(&path, "k-0123456789abcdef\nadmin-0123456789abcdef\n").unwrap();
        let path_text = path.display().to_string();
        let pairs = [("API_KEYS_FILE", path_text.as_str()), ("REPOSITORY_API_KEYS_FILE", path_text.as_str())];
        let settings = ServeSettings::from_env(&env(&pairs)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(settings.access.inference.as_ref().map(|k| k.len()), Some(2));
        assert!(settings.access.repository.is_some());
    }
}
