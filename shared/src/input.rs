//! The input object of a job, as the S3 event described it: what the job message names and the
//! report describes.

use serde::{Deserialize, Serialize};

/// The object that triggered the job, as the S3 event described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputObject {
    pub bucket: String,
    /// The decoded key (the event carries it form-urlencoded).
    pub key: String,
    pub size: u64,
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}
