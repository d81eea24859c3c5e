//! The trigger's settings, from the function's environment.

use shared::config::{ConfigError, EnvVar, Environment};
use shared::location::Location;

pub const QUEUE_URL: EnvVar = EnvVar::required("QUEUE_URL", "the URL of the job queue");
pub const OUTPUT_BUCKET: EnvVar = EnvVar::required("OUTPUT_BUCKET", "the name of the output bucket");
pub const OUTPUT_PREFIX: EnvVar = EnvVar::optional("OUTPUT_PREFIX", "a key prefix for outputs, e.g. results/", "");
pub const INPUT_PREFIX: EnvVar =
    EnvVar::optional("INPUT_PREFIX", "the key prefix of input files; other keys are ignored", "");
pub const MODEL_URI: EnvVar = EnvVar::required("MODEL_URI", "s3://bucket/key of the ONNX model");
pub const ECS_CLUSTER: EnvVar = EnvVar::required("ECS_CLUSTER", "the name or ARN of the ECS cluster");
pub const WORKER_TASK_DEFINITION: EnvVar =
    EnvVar::required("WORKER_TASK_DEFINITION", "the worker's task definition (family, family:revision or ARN)");
pub const WORKER_SUBNETS: EnvVar =
    EnvVar::required("WORKER_SUBNETS", "comma-separated subnet ids for the worker tasks");
pub const WORKER_SECURITY_GROUPS: EnvVar =
    EnvVar::optional("WORKER_SECURITY_GROUPS", "comma-separated security group ids for the worker tasks", "");
pub const WORKER_ASSIGN_PUBLIC_IP: EnvVar =
    EnvVar::optional("WORKER_ASSIGN_PUBLIC_IP", "ENABLED or DISABLED", "DISABLED");
pub const MAX_WORKERS: EnvVar =
    EnvVar::optional("MAX_WORKERS", "the most worker tasks to run at once, from 1 to 1000", "2");

/// Every variable the trigger reads.
pub const VARS: &[EnvVar] = &[
    QUEUE_URL,
    OUTPUT_BUCKET,
    OUTPUT_PREFIX,
    INPUT_PREFIX,
    MODEL_URI,
    ECS_CLUSTER,
    WORKER_TASK_DEFINITION,
    WORKER_SUBNETS,
    WORKER_SECURITY_GROUPS,
    WORKER_ASSIGN_PUBLIC_IP,
    MAX_WORKERS,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerConfig {
    pub queue_url: String,
    pub jobs: JobSettings,
    pub fleet: FleetSettings,
}

/// What goes into every job message, and which keys are jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub input_prefix: String,
    pub output_bucket: String,
    pub output_prefix: String,
    pub model_uri: String,
}

/// Where and how worker tasks are started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub cluster: String,
    pub task_definition: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
    pub max_workers: usize,
}

impl TriggerConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<Self, ConfigError> {
        let model_uri = env.string(&MODEL_URI)?;
        Location::parse(&model_uri).map_err(|e| ConfigError::invalid(&MODEL_URI, e.to_string()))?;
        let subnets = env.list(&WORKER_SUBNETS)?;
        if subnets.is_empty() {
            return Err(ConfigError::invalid(&WORKER_SUBNETS, "lists no subnet"));
        }
        let assign_public_ip = match env.string(&WORKER_ASSIGN_PUBLIC_IP)?.as_str() {
            "ENABLED" => true,
            "DISABLED" => false,
            other => {
                return Err(ConfigError::invalid(&WORKER_ASSIGN_PUBLIC_IP, format!("is {other:?}")));
            }
        };
        Ok(Self {
            queue_url: env.string(&QUEUE_URL)?,
            jobs: JobSettings {
                input_prefix: env.string(&INPUT_PREFIX)?,
                output_bucket: env.string(&OUTPUT_BUCKET)?,
                output_prefix: env.string(&OUTPUT_PREFIX)?,
                model_uri,
            },
            fleet: FleetSettings {
                cluster: env.string(&ECS_CLUSTER)?,
                task_definition: env.string(&WORKER_TASK_DEFINITION)?,
                subnets,
                security_groups: env.list(&WORKER_SECURITY_GROUPS)?,
                assign_public_ip,
                max_workers: env.parse_in(&MAX_WORKERS, 1..=1000)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Environment<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Environment::from_fn(move |name: &str| map.get(name).cloned())
    }

    const COMPLETE: &[(&str, &str)] = &[
        ("QUEUE_URL", "http://127.0.0.1:4566/123456789012/sluice-jobs"),
        ("OUTPUT_BUCKET", "out"),
        ("MODEL_URI", "s3://models/iris.onnx"),
        ("ECS_CLUSTER", "sluice"),
        ("WORKER_TASK_DEFINITION", "sluice-worker"),
        ("WORKER_SUBNETS", "subnet-1,subnet-2"),
    ];

    #[test]
    fn reads_a_complete_environment_with_defaults() {
        let config = TriggerConfig::from_env(&env(COMPLETE)).unwrap();
        assert_eq!(config.fleet.subnets, vec!["subnet-1", "subnet-2"]);
        assert_eq!(config.fleet.max_workers, 2);
        assert!(!config.fleet.assign_public_ip);
        assert_eq!(config.jobs.output_prefix, "");
    }

    #[test]
    fn each_required_variable_is_named_when_missing() {
        for missing in VARS.iter().filter(|v| v.is_required()) {
            let pairs: Vec<_> = COMPLETE.iter().copied().filter(|(k, _)| *k != missing.name).collect();
            let err = TriggerConfig::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(err.name, missing.name);
        }
    }

    #[test]
    fn rejects_invalid_values_with_the_variable_name() {
        for (name, value) in [
            ("MAX_WORKERS", "0"),
            ("MAX_WORKERS", "many"),
            ("WORKER_ASSIGN_PUBLIC_IP", "yes"),
            ("MODEL_URI", "s3://bucket-only"),
            ("WORKER_SUBNETS", " , "),
        ] {
            let mut pairs: Vec<_> = COMPLETE.iter().copied().filter(|(k, _)| *k != name).collect();
            pairs.push((name, value));
            let err = TriggerConfig::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
    }
}
