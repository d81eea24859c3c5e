//! The environment each component is given, defined once for the local run and the tests, the
//! way template.yaml sets it in AWS: the worker's container environment (in the task definition)
//! and the trigger function's environment. Locally both also get the variables that point their
//! SDK at moto.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::provision::Stack;

/// Environment variables, sorted by name.
pub type EnvMap = BTreeMap<String, String>;

/// The worker's tunables (everything in its environment that does not come from the stack).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// Rows per model run (`BATCH_SIZE`).
    pub batch_size: u32,
    /// Consecutive empty polls after which the worker exits (`EMPTY_POLLS_BEFORE_EXIT`).
    pub empty_polls_before_exit: u32,
    /// Long-poll wait, 0 to 20 s (`POLL_WAIT_SECONDS`); short locally so workers exit soon.
    pub poll_wait_seconds: u32,
    /// Share of bad rows that fails a whole file (`MAX_BAD_ROW_RATIO`).
    pub max_bad_row_ratio: f64,
    /// How long the worker may finish its job after SIGTERM (`SHUTDOWN_GRACE_SECONDS`).
    pub shutdown_grace_seconds: u32,
    /// The worker's log filter (`RUST_LOG`).
    pub rust_log: String,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            empty_polls_before_exit: 2,
            poll_wait_seconds: 1,
            max_bad_row_ratio: 0.1,
            shutdown_grace_seconds: 10,
            rust_log: "info".to_owned(),
        }
    }
}

/// The trigger's tunables (everything in its environment that does not come from the stack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSettings {
    /// `s3://bucket/key` of the ONNX model (`MODEL_URI`).
    pub model_uri: String,
    /// Only keys under this prefix are jobs (`INPUT_PREFIX`).
    pub input_prefix: String,
    /// Prefix of output keys in the output bucket (`OUTPUT_PREFIX`).
    pub output_prefix: String,
    /// The most worker tasks to run at once (`MAX_WORKERS`).
    pub max_workers: u32,
    /// The function's log filter (`RUST_LOG`).
    pub rust_log: String,
}

impl TriggerSettings {
    /// Settings for `model_uri` with no prefixes, at most two workers, and `info` logs.
    pub fn new(model_uri: impl Into<String>) -> Self {
        Self {
            model_uri: model_uri.into(),
            input_prefix: String::new(),
            output_prefix: String::new(),
            max_workers: 2,
            rust_log: "info".to_owned(),
        }
    }
}

/// The worker container's environment: queue, tunables, and the moto variables for `endpoint`.
pub fn worker_environment(
    endpoint: &str,
    queue_url: &str,
    visibility_timeout: Duration,
    settings: &WorkerSettings,
) -> EnvMap {
    let mut env = crate::aws::moto_env(endpoint);
    let vars = [
        ("QUEUE_URL", queue_url.to_owned()),
        ("BATCH_SIZE", settings.batch_size.to_string()),
        ("EMPTY_POLLS_BEFORE_EXIT", settings.empty_polls_before_exit.to_string()),
        ("POLL_WAIT_SECONDS", settings.poll_wait_seconds.to_string()),
        ("MAX_BAD_ROW_RATIO", settings.max_bad_row_ratio.to_string()),
        ("VISIBILITY_TIMEOUT_SECONDS", visibility_timeout.as_secs().to_string()),
        ("SHUTDOWN_GRACE_SECONDS", settings.shutdown_grace_seconds.to_string()),
        ("RUST_LOG", settings.rust_log.clone()),
    ];
    env.extend(vars.into_iter().map(|(name, value)| (name.to_owned(), value)));
    env
}

/// The trigger function's environment: where jobs go, how workers are started, and the moto
/// variables for the stack's endpoint.
pub fn trigger_environment(stack: &Stack, settings: &TriggerSettings) -> EnvMap {
    let mut env = crate::aws::moto_env(&stack.endpoint);
    let vars = [
        ("QUEUE_URL", stack.queue_url.clone()),
        ("OUTPUT_BUCKET", stack.output_bucket.clone()),
        ("OUTPUT_PREFIX", settings.output_prefix.clone()),
        ("INPUT_PREFIX", settings.input_prefix.clone()),
        ("MODEL_URI", settings.model_uri.clone()),
        ("ECS_CLUSTER", stack.cluster_name.clone()),
        ("WORKER_TASK_DEFINITION", stack.task_definition_arn.clone()),
        ("WORKER_SUBNETS", stack.subnets.join(",")),
        ("WORKER_SECURITY_GROUPS", stack.security_group.clone()),
        ("WORKER_ASSIGN_PUBLIC_IP", "ENABLED".to_owned()),
        ("MAX_WORKERS", settings.max_workers.to_string()),
        ("RUST_LOG", settings.rust_log.clone()),
    ];
    env.extend(vars.into_iter().map(|(name, value)| (name.to_owned(), value)));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_environment_holds_queue_tunables_and_moto() {
        // GIVEN default tunables and a 5 s visibility timeout
        let settings = WorkerSettings::default();
        // WHEN the environment is built
        let env = worker_environment(
            "http://127.0.0.1:4566",
            "http://127.0.0.1:4566/123456789012/sluice-jobs",
            Duration::from_secs(5),
            &settings,
        );
        // THEN every variable the worker reads is there, with the moto ones
        for name in [
            "QUEUE_URL",
            "BATCH_SIZE",
            "EMPTY_POLLS_BEFORE_EXIT",
            "POLL_WAIT_SECONDS",
            "MAX_BAD_ROW_RATIO",
            "VISIBILITY_TIMEOUT_SECONDS",
            "SHUTDOWN_GRACE_SECONDS",
            "RUST_LOG",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
        ] {
            assert!(env.contains_key(name), "{name} missing from {env:?}");
        }
        assert_eq!(env["VISIBILITY_TIMEOUT_SECONDS"], "5");
        assert_eq!(env["MAX_BAD_ROW_RATIO"], "0.1");
    }
}
