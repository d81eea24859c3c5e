//! The trigger's settings, from the function's environment.

use shared::ModelRequest;
use shared::config::{ConfigError, EnvVar, Environment};
use shared::location::Location;

pub const QUEUE_URL: EnvVar = EnvVar::required("QUEUE_URL", "the URL of the job queue");
pub const OUTPUT_BUCKET: EnvVar = EnvVar::required("OUTPUT_BUCKET", "the name of the output bucket");
pub const OUTPUT_PREFIX: EnvVar = EnvVar::optional("OUTPUT_PREFIX", "a key prefix for outputs, e.g. results/", "");
pub const REPORTS_PREFIX: EnvVar = EnvVar::optional(
    "REPORTS_PREFIX",
    "a prefix under OUTPUT_PREFIX for reports and errors files, e.g. _reports/ (so that the output prefix holds predictions only); empty: beside the predictions",
    "",
);
pub const INPUT_PREFIX: EnvVar =
    EnvVar::optional("INPUT_PREFIX", "the key prefix of input files; other keys are ignored", "");
pub const MODEL_URI: EnvVar = EnvVar::optional(
    "MODEL_URI",
    "s3://bucket/key of the one ONNX model every input runs (set it or MODEL_REPOSITORY, not both)",
    "",
);
pub const MODEL_REPOSITORY: EnvVar = EnvVar::optional(
    "MODEL_REPOSITORY",
    "s3://bucket/prefix/ of the model repository (<name>/<version>/model.onnx); set it or MODEL_URI, not both",
    "",
);
pub const DEFAULT_MODEL: EnvVar = EnvVar::optional(
    "DEFAULT_MODEL",
    "NAME or NAME@VERSION of the repository's model for inputs whose key names none (only with MODEL_REPOSITORY)",
    "",
);
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
pub const WORKER_CAPACITY: EnvVar =
    EnvVar::optional("WORKER_CAPACITY", "where worker tasks run: FARGATE, FARGATE_SPOT or EC2", "FARGATE");
pub const WORKER_CAPACITY_PROVIDER: EnvVar = EnvVar::optional(
    "WORKER_CAPACITY_PROVIDER",
    "the name of the cluster's EC2 capacity provider (set when, and only when, WORKER_CAPACITY is EC2)",
    "",
);
pub const WORKER_INSTANCE_TYPE: EnvVar = EnvVar::optional(
    "WORKER_INSTANCE_TYPE",
    "an EC2 instance type such as m6i.large that worker tasks must run on (only with WORKER_CAPACITY EC2)",
    "",
);

pub const SHARD_BYTES: EnvVar = EnvVar::optional(
    "SHARD_BYTES",
    "files larger than this many bytes (CSV, TSV, JSON Lines, Parquet) are split into shards of this size that workers process at once; 0 turns splitting off",
    "268435456",
);

pub const METRICS_NAMESPACE: EnvVar = EnvVar::optional(
    "METRICS_NAMESPACE",
    "the CloudWatch namespace of the metrics written to the log (embedded metric format)",
    shared::metrics::DEFAULT_NAMESPACE,
);

/// Every variable the trigger reads.
pub const VARS: &[EnvVar] = &[
    QUEUE_URL,
    OUTPUT_BUCKET,
    OUTPUT_PREFIX,
    REPORTS_PREFIX,
    INPUT_PREFIX,
    MODEL_URI,
    MODEL_REPOSITORY,
    DEFAULT_MODEL,
    ECS_CLUSTER,
    WORKER_TASK_DEFINITION,
    WORKER_SUBNETS,
    WORKER_SECURITY_GROUPS,
    WORKER_ASSIGN_PUBLIC_IP,
    MAX_WORKERS,
    WORKER_CAPACITY,
    WORKER_CAPACITY_PROVIDER,
    WORKER_INSTANCE_TYPE,
    SHARD_BYTES,
    METRICS_NAMESPACE,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerConfig {
    pub queue_url: String,
    pub metrics_namespace: String,
    pub jobs: JobSettings,
    pub fleet: FleetSettings,
}

/// What goes into every job message, and which keys are jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub input_prefix: String,
    pub output_bucket: String,
    pub output_prefix: String,
    /// Reports and errors files go under `<output_prefix><reports_prefix>`; empty: beside.
    pub reports_prefix: String,
    pub models: Models,
    /// Files above this size are split into shards of it; 0: never.
    pub shard_bytes: u64,
}

/// Where the models come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Models {
    /// One model for every input.
    File(String),
    /// A model repository: each input's key names its model (see [`shared::models`]).
    Repository { root: String, default: Option<ModelRequest> },
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
    pub capacity: Capacity,
}

/// The kind of capacity worker tasks run on: what `RunTask` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// On-demand Fargate (`launchType` FARGATE).
    Fargate,
    /// Fargate Spot: up to 70% cheaper, may be reclaimed with a SIGTERM, which the worker handles.
    FargateSpot,
    /// EC2 instances of the cluster's own capacity provider, optionally of one instance type.
    Ec2 { capacity_provider: String, instance_type: Option<String> },
}

impl TriggerConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<Self, ConfigError> {
        let models = models(env)?;
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
        let capacity = capacity(env)?;
        if assign_public_ip && matches!(capacity, Capacity::Ec2 { .. }) {
            // ECS rejects the RunTask: tasks on EC2 reach the internet through a NAT gateway or
            // VPC endpoints, never through a public IP of their own.
            return Err(ConfigError::invalid(
                &WORKER_ASSIGN_PUBLIC_IP,
                "is ENABLED, but ECS gives public IPs only to Fargate tasks and WORKER_CAPACITY is EC2",
            ));
        }
        Ok(Self {
            queue_url: env.string(&QUEUE_URL)?,
            metrics_namespace: env.string(&METRICS_NAMESPACE)?,
            jobs: JobSettings {
                input_prefix: env.string(&INPUT_PREFIX)?,
                output_bucket: env.string(&OUTPUT_BUCKET)?,
                output_prefix: env.string(&OUTPUT_PREFIX)?,
                reports_prefix: reports_prefix(env)?,
                models,
                shard_bytes: env.parse(&SHARD_BYTES)?,
            },
            fleet: FleetSettings {
                cluster: env.string(&ECS_CLUSTER)?,
                task_definition: env.string(&WORKER_TASK_DEFINITION)?,
                subnets,
                security_groups: env.list(&WORKER_SECURITY_GROUPS)?,
                assign_public_ip,
                max_workers: env.parse_in(&MAX_WORKERS, 1..=1000)?,
                capacity,
            },
        })
    }
}

fn models<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<Models, ConfigError> {
    let (uri, repository, default) =
        (env.string(&MODEL_URI)?, env.string(&MODEL_REPOSITORY)?, env.string(&DEFAULT_MODEL)?);
    let s3 = |var: &EnvVar, value: &str| match Location::parse(value) {
        Ok(Location::S3(_)) => Ok(()),
        Ok(Location::Local(_)) => Err(ConfigError::invalid(var, format!("is {value:?}, not an s3:// URI"))),
        Err(e) => Err(ConfigError::invalid(var, e.to_string())),
    };
    match (uri.is_empty(), repository.is_empty()) {
        (false, true) => {
            s3(&MODEL_URI, &uri)?;
            if !default.is_empty() {
                return Err(ConfigError::invalid(
                    &DEFAULT_MODEL,
                    format!("is {default:?}, but it needs MODEL_REPOSITORY"),
                ));
            }
            Ok(Models::File(uri))
        }
        (true, false) => {
            // A prefix: `s3://bucket/` or `s3://bucket/prefix/`.
            let root = if repository.ends_with('/') { repository } else { format!("{repository}/") };
            let probe = format!("{root}x");
            s3(&MODEL_REPOSITORY, &probe)
                .map_err(|_| ConfigError::invalid(&MODEL_REPOSITORY, format!("is {root:?}")))?;
            let default = Some(default)
                .filter(|d| !d.is_empty())
                .map(|d| ModelRequest::parse(&d).map_err(|e| ConfigError::invalid(&DEFAULT_MODEL, e.to_string())))
                .transpose()?;
            Ok(Models::Repository { root, default })
        }
        (false, false) => Err(ConfigError::invalid(&MODEL_REPOSITORY, "is set, and so is MODEL_URI: set one of them")),
        (true, true) => Err(ConfigError::invalid(&MODEL_REPOSITORY, "is not set, nor is MODEL_URI: set one of them")),
    }
}

fn capacity<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<Capacity, ConfigError> {
    let provider = env.string(&WORKER_CAPACITY_PROVIDER)?;
    let instance_type = env.string(&WORKER_INSTANCE_TYPE)?;
    let kind = env.string(&WORKER_CAPACITY)?;
    if kind != "EC2" {
        // Settings that would be silently ignored are a mistake worth stopping for.
        for (var, value) in [(&WORKER_CAPACITY_PROVIDER, &provider), (&WORKER_INSTANCE_TYPE, &instance_type)] {
            if !value.is_empty() {
                return Err(ConfigError::invalid(
                    var,
                    format!("is {value:?}, but WORKER_CAPACITY is {kind:?}, not EC2"),
                ));
            }
        }
    }
    match kind.as_str() {
        "FARGATE" => Ok(Capacity::Fargate),
        "FARGATE_SPOT" => Ok(Capacity::FargateSpot),
        "EC2" => {
            if provider.is_empty() {
                return Err(ConfigError::invalid(&WORKER_CAPACITY_PROVIDER, "is not set, but WORKER_CAPACITY is EC2"));
            }
            // The type goes into a cluster query expression: only what instance type names hold.
            let valid_type = |t: &str| {
                t.split_once('.').is_some_and(|(family, size)| !family.is_empty() && !size.is_empty())
                    && t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            };
            if !instance_type.is_empty() && !valid_type(&instance_type) {
                return Err(ConfigError::invalid(&WORKER_INSTANCE_TYPE, format!("is {instance_type:?}")));
            }
            Ok(Capacity::Ec2 {
                capacity_provider: provider,
                instance_type: Some(instance_type).filter(|t| !t.is_empty()),
            })
        }
        other => Err(ConfigError::invalid(&WORKER_CAPACITY, format!("is {other:?}"))),
    }
}

/// `REPORTS_PREFIX`: empty, or a relative prefix that ends with `/`.
fn reports_prefix<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<String, ConfigError> {
    let prefix = env.string(&REPORTS_PREFIX)?;
    if prefix.is_empty() || (prefix.ends_with('/') && !prefix.starts_with('/')) {
        Ok(prefix)
    } else {
        Err(ConfigError::invalid(&REPORTS_PREFIX, format!("is {prefix:?}; it must end with / and not start with one")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::environment_of as env;

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
        assert_eq!(config.fleet.capacity, Capacity::Fargate);
        assert_eq!(config.jobs.output_prefix, "");
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs: Vec<_> =
            COMPLETE.iter().copied().filter(|(k, _)| !extra.iter().any(|(name, _)| name == k)).collect();
        pairs.extend_from_slice(extra);
        pairs
    }

    #[test]
    fn reads_each_kind_of_capacity() {
        for (pairs, want) in [
            (with(&[("WORKER_CAPACITY", "FARGATE")]), Capacity::Fargate),
            (with(&[("WORKER_CAPACITY", "FARGATE_SPOT")]), Capacity::FargateSpot),
            (
                with(&[("WORKER_CAPACITY", "EC2"), ("WORKER_CAPACITY_PROVIDER", "sluice-ec2")]),
                Capacity::Ec2 { capacity_provider: "sluice-ec2".into(), instance_type: None },
            ),
            (
                with(&[
                    ("WORKER_CAPACITY", "EC2"),
                    ("WORKER_CAPACITY_PROVIDER", "sluice-ec2"),
                    ("WORKER_INSTANCE_TYPE", "inf2.xlarge"),
                ]),
                Capacity::Ec2 { capacity_provider: "sluice-ec2".into(), instance_type: Some("inf2.xlarge".into()) },
            ),
            // What the template sets when the capacity is not EC2: empty counts as unset.
            (
                with(&[
                    ("WORKER_CAPACITY", "FARGATE_SPOT"),
                    ("WORKER_CAPACITY_PROVIDER", ""),
                    ("WORKER_INSTANCE_TYPE", ""),
                ]),
                Capacity::FargateSpot,
            ),
        ] {
            assert_eq!(TriggerConfig::from_env(&env(&pairs)).unwrap().fleet.capacity, want, "{pairs:?}");
        }
    }

    #[test]
    fn inconsistent_capacity_settings_name_the_variable_at_fault() {
        for (extra, name) in [
            (&[("WORKER_CAPACITY", "fargate")][..], "WORKER_CAPACITY"),
            (&[("WORKER_CAPACITY", "EC2")][..], "WORKER_CAPACITY_PROVIDER"),
            (
                &[("WORKER_CAPACITY", "FARGATE"), ("WORKER_CAPACITY_PROVIDER", "sluice-ec2")][..],
                "WORKER_CAPACITY_PROVIDER",
            ),
            (&[("WORKER_INSTANCE_TYPE", "m6i.large")][..], "WORKER_INSTANCE_TYPE"),
            (
                &[("WORKER_CAPACITY", "EC2"), ("WORKER_CAPACITY_PROVIDER", "p"), ("WORKER_INSTANCE_TYPE", "m6i")][..],
                "WORKER_INSTANCE_TYPE",
            ),
            (
                &[
                    ("WORKER_CAPACITY", "EC2"),
                    ("WORKER_CAPACITY_PROVIDER", "p"),
                    ("WORKER_INSTANCE_TYPE", "m6i.large\" || true"),
                ][..],
                "WORKER_INSTANCE_TYPE",
            ),
            (
                &[
                    ("WORKER_CAPACITY", "EC2"),
                    ("WORKER_CAPACITY_PROVIDER", "p"),
                    ("WORKER_ASSIGN_PUBLIC_IP", "ENABLED"),
                ][..],
                "WORKER_ASSIGN_PUBLIC_IP",
            ),
        ] {
            let err = TriggerConfig::from_env(&env(&with(extra))).unwrap_err();
            assert_eq!(err.name, name, "{extra:?}: {err}");
        }
    }

    #[test]
    fn a_model_file_or_a_repository_with_an_optional_default() {
        let config = TriggerConfig::from_env(&env(COMPLETE)).unwrap();
        assert_eq!(config.jobs.models, Models::File("s3://models/iris.onnx".into()));
        let repository =
            with(&[("MODEL_URI", ""), ("MODEL_REPOSITORY", "s3://models/repo"), ("DEFAULT_MODEL", "iris@2")]);
        let config = TriggerConfig::from_env(&env(&repository)).unwrap();
        assert_eq!(
            config.jobs.models,
            Models::Repository { root: "s3://models/repo/".into(), default: ModelRequest::parse("iris@2").ok() }
        );
        let bucket_root = with(&[("MODEL_URI", ""), ("MODEL_REPOSITORY", "s3://models/")]);
        let config = TriggerConfig::from_env(&env(&bucket_root)).unwrap();
        assert_eq!(config.jobs.models, Models::Repository { root: "s3://models/".into(), default: None });
        for (extra, name) in [
            (&[("MODEL_REPOSITORY", "s3://models/repo/")][..], "MODEL_REPOSITORY"),
            (&[("MODEL_URI", "")][..], "MODEL_REPOSITORY"),
            (&[("DEFAULT_MODEL", "iris")][..], "DEFAULT_MODEL"),
            (
                &[("MODEL_URI", ""), ("MODEL_REPOSITORY", "s3://models/"), ("DEFAULT_MODEL", "iris@x")][..],
                "DEFAULT_MODEL",
            ),
            (&[("MODEL_URI", ""), ("MODEL_REPOSITORY", "/local/models")][..], "MODEL_REPOSITORY"),
            (&[("MODEL_URI", "models/iris.onnx")][..], "MODEL_URI"),
        ] {
            let err = TriggerConfig::from_env(&env(&with(extra))).unwrap_err();
            assert_eq!(err.name, name, "{extra:?}: {err}");
        }
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
    fn reports_apart() {
        let config = TriggerConfig::from_env(&env(COMPLETE)).unwrap();
        assert_eq!(config.jobs.reports_prefix, "");
        let config = TriggerConfig::from_env(&env(&with(&[("REPORTS_PREFIX", "_reports/")]))).unwrap();
        assert_eq!(config.jobs.reports_prefix, "_reports/");
    }

    #[test]
    fn rejects_invalid_values_with_the_variable_name() {
        for (name, value) in [
            ("MAX_WORKERS", "0"),
            ("MAX_WORKERS", "many"),
            ("WORKER_ASSIGN_PUBLIC_IP", "yes"),
            ("MODEL_URI", "s3://bucket-only"),
            ("WORKER_SUBNETS", " , "),
            ("REPORTS_PREFIX", "_reports"),
            ("REPORTS_PREFIX", "/reports/"),
        ] {
            let mut pairs: Vec<_> = COMPLETE.iter().copied().filter(|(k, _)| *k != name).collect();
            pairs.push((name, value));
            let err = TriggerConfig::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
    }
}
