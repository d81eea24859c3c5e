//! The worker: drains the job queue, running an ONNX model over each input file.
//!
//! - [`engine`]: the transform itself, free of AWS.
//! - [`models`]: loading a model and its sidecar configuration once.
//! - [`storage`]: S3 streaming in and atomic streaming out.
//! - [`job`]: one job, from input to report.
//! - [`drain`]: the queue loop with heartbeat and graceful stop.
//! - [`local_transform`]: `worker transform`, one file from the command line.

pub mod config;
pub mod drain;
pub mod engine;
pub mod job;
pub mod local_transform;
pub mod models;
pub mod shutdown;
pub mod storage;
