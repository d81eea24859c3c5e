//! What the trigger and the worker agree on.
//!
//! - [`job`]: the versioned job message that travels on the queue.
//! - [`keys`]: decoding keys from S3 events and naming the outputs of an input.
//! - [`location`]: `s3://bucket/key` URIs and local paths for models and data.
//! - [`config`]: reading and validating settings from the environment.
//! - [`report`]: the report written beside every output.
//! - [`aws_error`]: AWS errors with the service's code and message.
//! - [`logging`]: text logs on a terminal, JSON lines elsewhere.
//! - [`metrics`]: CloudWatch embedded-metric-format records.
//! - [`models`]: the model repository's layout and the routing of inputs to models.
//! - [`shards`]: big files in byte-range shards, and what their workers leave each other;
//!   [`split`], what a job message says of them; [`input`], the object a job reads.

pub mod aws_error;
pub mod config;
pub mod input;
pub mod job;
pub mod keys;
pub mod location;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod report;
pub mod shards;
pub mod split;

pub use job::{InputObject, JobMessage, JobMessageError, ModelSource, OutputLocation};
pub use keys::{KeyDecodeError, OutputKeys, decode_event_key};
pub use location::{Location, S3Uri};
pub use models::ModelRequest;
pub use report::{JobReport, JobStatus, RowCounts, RowError};
