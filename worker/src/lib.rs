//! The worker: drains the job queue, running an ONNX model over each input file.
//!
//! - [`engine`]: the transform itself, free of AWS: the `engine` crate, re-exported.
//! - Ports and their AWS adapters: [`queue`] ([`sqs`]), [`store`] ([`s3`]), [`completions`]
//!   (EventBridge).
//! - [`transfer`]: streaming over the store: resumed, verified downloads and staged uploads.
//! - [`models`]: model files and a cache of loaded models within a memory budget.
//! - [`repository`]: the model repository, and which model a job runs.
//! - [`job`]: one job, from input to report, ending as one [`job::JobOutcome`].
//! - [`shard`]: one shard of a big file, and the assembly of the file's output from its shards.
//! - [`drain`]: the queue loop with heartbeat, retries and graceful stop.
//! - [`local_transform`]: `worker transform`, one file from the command line.
//! - [`serve`]: `worker serve`, online inference over TF Serving, KServe v2 and TorchServe.
//! - [`metrics`], [`retry`], [`shutdown`], [`config`]: what the rest shares.

pub mod allocator;
pub mod check_model;
pub mod completions;
pub mod concatenate;
pub mod config;
pub mod drain;
pub use engine;
pub mod job;
pub mod local_transform;
pub mod metrics;
pub mod models;
pub mod queue;
pub mod ranged;
pub mod repository;
pub mod retry;
pub mod s3;
pub mod serve;
pub mod shard;
pub mod shutdown;
pub mod sqs;
pub mod store;
pub mod transfer;
