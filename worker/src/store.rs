//! The object store port: what the worker needs from S3, call by call. The S3 adapter is
//! [`crate::s3::S3Store`]; tests use an in-memory one. Streaming in and out, retries and
//! verification are built on top of these calls in [`crate::transfer`].

use std::future::Future;

use bytes::Bytes;
use shared::S3Uri;
use shared::aws_error::AwsError;
use tokio::io::AsyncRead;

/// A failed store call, with the service's error code and what it was about.
pub type StoreError = AwsError;

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequest {
    pub uri: S3Uri,
    /// Read only while the object has this ETag (`If-Match`).
    pub if_match: Option<String>,
    pub version_id: Option<String>,
    /// Read one part of an object uploaded in parts (1-based).
    pub part_number: Option<u32>,
    /// Skip this many bytes (a `Range` request), to resume a broken download or read a shard.
    pub range_start: u64,
    /// Stop before this byte (the end of a `Range`); `None`: read to the end.
    pub range_end: Option<u64>,
}

impl GetRequest {
    pub fn whole(uri: S3Uri) -> Self {
        Self { uri, if_match: None, version_id: None, part_number: None, range_start: 0, range_end: None }
    }
}

/// An object being read.
pub struct ObjectBody {
    pub body: Box<dyn AsyncRead + Send + Unpin>,
    /// The bytes this response holds (a part, or what is left after `range_start`).
    pub length: u64,
    pub etag: Option<String>,
    /// How many parts the object was uploaded in, when a part was asked for.
    pub parts_count: Option<u32>,
    /// Whether the ETag is an MD5 of the content (not so under SSE-KMS or SSE-C).
    pub etag_is_md5: bool,
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

/// The store, call by call.
pub trait ObjectStore: Clone + Send + Sync + 'static {
    fn get(&self, request: &GetRequest) -> impl Future<Output = Result<ObjectBody, StoreError>> + Send;
    /// The objects of `bucket` whose keys start with `prefix` (all of them, page after page).
    fn list(&self, bucket: &str, prefix: &str) -> impl Future<Output = Result<Vec<ListedObject>, StoreError>> + Send;
    /// The object's current ETag, or a `PreconditionFailed` error when `if_match` no longer holds.
    fn head(&self, uri: &S3Uri, if_match: Option<&str>) -> impl Future<Output = Result<String, StoreError>> + Send;
    fn put(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Creates the object only if there is none (`If-None-Match: *`): `false` when one was
    /// there. Of writers racing for the same key, exactly one gets `true`.
    fn put_if_absent(
        &self,
        uri: &S3Uri,
        body: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Deleting what is not there succeeds.
    fn delete(&self, uri: &S3Uri) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Starts a multipart upload; returns its id.
    fn create_multipart(
        &self,
        uri: &S3Uri,
        content_type: &str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
    /// Uploads part `number` (1-based); returns its ETag.
    fn upload_part(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
    /// Makes the object appear from the parts, `(number, etag)` in order.
    fn complete_multipart(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn abort_multipart(&self, uri: &S3Uri, upload_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Uploads part `number` as a copy of bytes `[range.0, range.1)` of `source`, inside the
    /// store (`UploadPartCopy`); returns its ETag.
    fn copy_part(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        number: i32,
        source: &S3Uri,
        range: (u64, u64),
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
}
