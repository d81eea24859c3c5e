//! The transform engine: an ONNX model over a stream of rows, free of AWS.
//!
//! - [`model`]: loading a model once and running it on mini-batches.
//! - [`model_config`]: the optional sidecar that maps input columns to the model.
//! - [`csv_transform`]: CSV in, predictions out, bad rows to an errors stream.

pub mod csv_transform;
pub mod model;
pub mod model_config;

pub use csv_transform::{TransformError, TransformOptions, TransformSummary, transform_csv};
pub use model::{Model, ModelError};
pub use model_config::{ColumnRef, ModelConfig};
