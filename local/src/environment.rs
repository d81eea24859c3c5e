//! The environment each component is given, the way template.yaml sets it in AWS: the worker's
//! container environment (in the task definition) and the trigger function's. Locally both also
//! get the variables that point their SDK at moto.
//!
//! The names come from the binaries' own declarations (`worker::config`, `lambda_trigger::config`),
//! and, as the template does, every variable a binary reads is set, optional ones included: the
//! tests below fail when a binary reads a variable the harness does not set.

use std::time::Duration;

use lambda_trigger::config as trigger;
use shared::config::EnvVar;
use worker::config as worker;

pub use crate::process::EnvMap;

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
    /// The pause before a handed-back job's next try, doubling per try (`RETRY_DELAY_SECONDS`).
    pub retry_delay_seconds: u32,
    /// Whether finished files are announced on EventBridge (`COMPLETION_EVENTS`).
    pub completion_events: bool,
    /// The predictions' format (`OUTPUT_FORMAT`): `input`, `csv`, `jsonl` or `parquet`.
    pub output_format: String,
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
            retry_delay_seconds: 1,
            completion_events: true,
            output_format: "input".to_owned(),
            rust_log: "info".to_owned(),
        }
    }
}

/// Where the trigger says the models are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerModels {
    /// `s3://bucket/key` of the one model (`MODEL_URI`).
    File(String),
    /// `s3://bucket/prefix/` of the repository (`MODEL_REPOSITORY`) and the default model
    /// (`DEFAULT_MODEL`).
    Repository { root: String, default: Option<String> },
}

/// The trigger's tunables (everything in its environment that does not come from the stack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSettings {
    pub models: TriggerModels,
    /// Only keys under this prefix are jobs (`INPUT_PREFIX`).
    pub input_prefix: String,
    /// Prefix of output keys in the output bucket (`OUTPUT_PREFIX`).
    pub output_prefix: String,
    /// Where reports and errors files go under it (`REPORTS_PREFIX`); empty: beside.
    pub reports_prefix: String,
    /// The most worker tasks to run at once (`MAX_WORKERS`).
    pub max_workers: u32,
    /// Files above this size are split into shards of it (`SHARD_BYTES`); 0: never.
    pub shard_bytes: u64,
    /// The function's log filter (`RUST_LOG`).
    pub rust_log: String,
}

impl TriggerSettings {
    /// Settings for the model at `model_uri` with no prefixes, at most two workers, and `info` logs.
    pub fn new(model_uri: impl Into<String>) -> Self {
        Self {
            models: TriggerModels::File(model_uri.into()),
            input_prefix: String::new(),
            output_prefix: String::new(),
            reports_prefix: String::new(),
            max_workers: 2,
            shard_bytes: shared::shards::DEFAULT_SHARD_BYTES,
            rust_log: "info".to_owned(),
        }
    }
}

/// The namespace of local metrics (the template uses `sluice/<stack name>`).
pub const METRICS_NAMESPACE: &str = "sluice/local";
/// The variable both binaries read for their log filter, besides their declared settings.
pub const RUST_LOG: &str = "RUST_LOG";

/// The worker container's environment: queue, tunables, and the moto variables for `endpoint`.
pub fn worker_environment(
    endpoint: &str,
    queue_url: &str,
    visibility_timeout: Duration,
    settings: &WorkerSettings,
) -> EnvMap {
    let env = crate::aws::moto_env(endpoint);
    let vars = [
        (worker::QUEUE_URL, queue_url.to_owned()),
        (worker::POLL_WAIT_SECONDS, settings.poll_wait_seconds.to_string()),
        (worker::EMPTY_POLLS_BEFORE_EXIT, settings.empty_polls_before_exit.to_string()),
        (worker::BATCH_SIZE, settings.batch_size.to_string()),
        (worker::MAX_BAD_ROW_RATIO, settings.max_bad_row_ratio.to_string()),
        (worker::VISIBILITY_TIMEOUT_SECONDS, visibility_timeout.as_secs().to_string()),
        (worker::SHUTDOWN_GRACE_SECONDS, settings.shutdown_grace_seconds.to_string()),
        (worker::RETRY_DELAY_SECONDS, settings.retry_delay_seconds.to_string()),
        (worker::COMPLETION_EVENTS, settings.completion_events.to_string()),
        (worker::METRICS_NAMESPACE, METRICS_NAMESPACE.to_owned()),
        (worker::OUTPUT_FORMAT, settings.output_format.clone()),
    ];
    complete(env, vars, worker::VARS, &settings.rust_log)
}

/// `env` with `vars` set, every other variable of `declared` at its default (as the template
/// writes them out), and the log filter.
fn complete(
    mut env: EnvMap,
    vars: impl IntoIterator<Item = (EnvVar, String)>,
    declared: &[EnvVar],
    rust_log: &str,
) -> EnvMap {
    env.extend(vars.into_iter().map(|(var, value)| (var.name.to_owned(), value)));
    for var in declared {
        if let Some(default) = var.default {
            env.entry(var.name.to_owned()).or_insert_with(|| default.to_owned());
        }
    }
    env.insert(RUST_LOG.to_owned(), rust_log.to_owned());
    env
}

/// Where the trigger sends jobs and starts workers: the stack's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerTargets<'a> {
    pub endpoint: &'a str,
    pub queue_url: &'a str,
    pub output_bucket: &'a str,
    pub cluster: &'a str,
    pub task_definition: &'a str,
    pub subnets: &'a [String],
    pub security_group: &'a str,
}

/// The trigger function's environment: where jobs go, how workers are started, and the moto
/// variables for the stack's endpoint.
pub fn trigger_environment(targets: &TriggerTargets<'_>, settings: &TriggerSettings) -> EnvMap {
    let env = crate::aws::moto_env(targets.endpoint);
    let vars = [
        (trigger::QUEUE_URL, targets.queue_url.to_owned()),
        (trigger::OUTPUT_BUCKET, targets.output_bucket.to_owned()),
        (trigger::OUTPUT_PREFIX, settings.output_prefix.clone()),
        (trigger::REPORTS_PREFIX, settings.reports_prefix.clone()),
        (trigger::INPUT_PREFIX, settings.input_prefix.clone()),
        (
            trigger::MODEL_URI,
            match &settings.models {
                TriggerModels::File(uri) => uri.clone(),
                TriggerModels::Repository { .. } => String::new(),
            },
        ),
        (
            trigger::MODEL_REPOSITORY,
            match &settings.models {
                TriggerModels::File(_) => String::new(),
                TriggerModels::Repository { root, .. } => root.clone(),
            },
        ),
        (
            trigger::DEFAULT_MODEL,
            match &settings.models {
                TriggerModels::Repository { default: Some(default), .. } => default.clone(),
                _ => String::new(),
            },
        ),
        (trigger::ECS_CLUSTER, targets.cluster.to_owned()),
        (trigger::WORKER_TASK_DEFINITION, targets.task_definition.to_owned()),
        (trigger::WORKER_SUBNETS, targets.subnets.join(",")),
        (trigger::WORKER_SECURITY_GROUPS, targets.security_group.to_owned()),
        (trigger::WORKER_ASSIGN_PUBLIC_IP, "ENABLED".to_owned()),
        (trigger::MAX_WORKERS, settings.max_workers.to_string()),
        (trigger::SHARD_BYTES, settings.shard_bytes.to_string()),
        (trigger::METRICS_NAMESPACE, METRICS_NAMESPACE.to_owned()),
    ];
    complete(env, vars, trigger::VARS, &settings.rust_log)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The names in `env` that are not moto's.
    fn program_vars(env: &EnvMap) -> BTreeSet<&str> {
        let moto = crate::aws::moto_env("http://127.0.0.1:4566");
        env.keys().map(String::as_str).filter(|name| !moto.contains_key(*name)).collect()
    }

    fn declared(vars: &[EnvVar]) -> BTreeSet<&str> {
        vars.iter().map(|v| v.name).chain([RUST_LOG]).collect()
    }

    #[test]
    fn the_worker_gets_every_variable_it_reads_and_no_other() {
        // GIVEN default tunables and a 5 s visibility timeout
        let env = worker_environment(
            "http://127.0.0.1:4566",
            "http://127.0.0.1:4566/123456789012/sluice-jobs",
            Duration::from_secs(5),
            &WorkerSettings::default(),
        );
        // THEN the worker's declared variables are exactly the ones set, besides moto's
        assert_eq!(program_vars(&env), declared(worker::VARS));
        assert_eq!(env["VISIBILITY_TIMEOUT_SECONDS"], "5");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:4566");
        // AND the worker accepts them
        let lookup = shared::config::Environment::from_fn(|name: &str| env.get(name).cloned());
        worker::WorkerConfig::from_env(&lookup).unwrap();
    }

    #[test]
    fn the_trigger_gets_every_variable_it_reads_and_no_other() {
        let subnets = vec!["subnet-1".to_owned(), "subnet-2".to_owned()];
        let targets = TriggerTargets {
            endpoint: "http://127.0.0.1:4566",
            queue_url: "http://127.0.0.1:4566/123456789012/sluice-jobs",
            output_bucket: "sluice-output",
            cluster: "sluice",
            task_definition: "arn:aws:ecs:us-east-1:123456789012:task-definition/sluice-worker:1",
            subnets: &subnets,
            security_group: "sg-1",
        };
        let env = trigger_environment(&targets, &TriggerSettings::new("s3://models/iris.onnx"));
        assert_eq!(program_vars(&env), declared(trigger::VARS));
        assert_eq!(env["WORKER_SUBNETS"], "subnet-1,subnet-2");
        let lookup = shared::config::Environment::from_fn(|name: &str| env.get(name).cloned());
        lambda_trigger::TriggerConfig::from_env(&lookup).unwrap();
    }
}
