//! The trigger: turns S3 upload notifications into job messages and makes sure workers run.
//!
//! - [`config`]: the function's settings.
//! - [`jobs`]: which event records are jobs, and the job message for each.
//! - [`queue`]: the job queue port, with the SQS adapter and batching with retries.
//! - [`fleet`]: the worker fleet port, with the ECS adapter and [`fleet::ensure_workers`].
//! - [`handler`]: one invocation, from event to summary.
//! - [`metrics`]: what an invocation did, as CloudWatch metrics in the log.

pub mod config;
pub mod fleet;
pub mod handler;
pub mod jobs;
pub mod metrics;
pub mod queue;

pub use config::TriggerConfig;
pub use handler::{InvocationSummary, TriggerError, handle};
