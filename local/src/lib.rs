//! sluice on one machine: moto's server as the AWS stand-in (real AWS wire protocol), a Lambda
//! Runtime API emulator that runs the trigger binary, and a Fargate emulator that runs the worker
//! binary for each ECS task the trigger starts.
//!
//! - [`moto`]: start and stop moto's server.
//! - [`aws`]: SDK configuration and clients for moto, and the environment children need.
//! - [`iam`]: the programs' IAM users, with template.yaml's role policies.
//! - [`provision`]: create what template.yaml declares (buckets, queues, cluster, task definition).
//! - [`environment`]: the trigger's and the worker's environment, defined once.
//! - [`events`]: S3 events in AWS's format, and a bucket watcher that produces them.
//! - [`lambda`]: the Runtime API emulator and synchronous / S3-style asynchronous invocation.
//! - [`fargate`]: worker processes for ECS tasks.
//! - [`pipeline`]: all of it wired together, for the `sluice-local` binary and end-to-end tests.
//! - [`binaries`], [`repo`], [`process`]: finding binaries and tools, managing child processes.

pub mod aws;
pub mod binaries;
pub mod environment;
pub mod events;
pub mod fargate;
pub mod iam;
pub mod lambda;
pub mod moto;
pub mod pipeline;
pub mod process;
pub mod provision;
pub mod repo;

pub use environment::{TriggerModels, TriggerSettings, WorkerSettings};
pub use events::{S3EventSource, s3_object_created_event, s3_test_event};
pub use fargate::{FargateEmulator, FargateOptions, FinishedWorker, RunningWorker, WorkerCommand};
pub use lambda::{AsyncInvocation, AsyncOutcome, DeadLetterQueue, FunctionConfig, FunctionError, LambdaFunction};
pub use moto::MotoServer;
pub use pipeline::{LocalModels, LocalPipeline, PipelineOptions};
pub use process::{EnvMap, Signal};
pub use provision::{Stack, StackSettings};
