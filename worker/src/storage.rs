//! S3 at the edge of the worker: whole small objects (models), streamed inputs, and outputs
//! that appear only when complete.
//!
//! Inputs stream through a bounded channel into a blocking [`ChannelReader`]; outputs leave a
//! blocking [`PartWriter`] in parts through another bounded channel to [`S3Storage::upload`].
//! An output smaller than one part is a single `PutObject`; a larger one is a multipart upload
//! completed at the end. A writer dropped without [`PartWriter::finish`] leaves nothing behind.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use shared::{InputObject, S3Uri};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Size of each multipart part; S3 wants at least 5 MiB for all but the last.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Chunks of input in flight between the download and the parser.
const INPUT_CHUNKS_IN_FLIGHT: usize = 16;
/// Parts in flight between the writer and the upload.
const PARTS_IN_FLIGHT: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{uri} does not exist")]
    NotFound { uri: String },
    #[error("access to {uri} is denied ({message}); check the worker's IAM role")]
    AccessDenied { uri: String, message: String },
    #[error("{uri} has changed since the upload event (another version replaced it)")]
    Changed { uri: String },
    #[error("S3 request for {uri} failed: {source}")]
    Request {
        uri: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the upload of {uri} was abandoned before it finished")]
    Abandoned { uri: String },
}

impl StorageError {
    /// Whether trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Request { .. })
    }

    fn from_sdk<E>(uri: impl Into<String>, error: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let uri = uri.into();
        let status = match &error {
            SdkError::ServiceError(_) => error.raw_response().map(|r| r.status().as_u16()),
            _ => None,
        };
        match (status, error.code()) {
            (Some(404), _) | (_, Some("NoSuchKey" | "NotFound" | "NoSuchBucket")) => StorageError::NotFound { uri },
            (Some(403), _) | (_, Some("AccessDenied")) => {
                StorageError::AccessDenied { uri, message: error.message().unwrap_or("403").to_owned() }
            }
            (Some(412), _) | (_, Some("PreconditionFailed")) => StorageError::Changed { uri },
            _ => StorageError::Request { uri, source: Box::new(error) },
        }
    }
}

/// An S3 client for `sdk`; path-style addressing when an endpoint override (a local stand-in)
/// is set, since such servers do not serve buckets by host name.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut s3 = aws_sdk_s3::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        s3 = s3.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}

/// The worker's S3 access.
#[derive(Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    /// Aborts of abandoned multipart uploads still under way.
    cleanups: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// What a finished upload wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    pub parts: usize,
}

/// What a [`PartWriter`] sends to [`S3Storage::upload`].
pub enum OutputPart {
    Data(Bytes),
    Finish,
}

impl S3Storage {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self { client, cleanups: Arc::default() }
    }

    /// S3 as the environment configures it (credentials, region, `AWS_ENDPOINT_URL`).
    pub async fn from_environment() -> Self {
        Self::new(s3_client(&aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await))
    }

    /// A whole (small) object, such as a model.
    pub async fn read_all(&self, uri: &S3Uri) -> Result<Vec<u8>, StorageError> {
        let response = self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(uri.to_string(), e))?;
        let body = response
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Request { uri: uri.to_string(), source: e.into() })?;
        Ok(body.into_bytes().to_vec())
    }

    /// A whole object, or `None` when it does not exist.
    pub async fn read_optional(&self, uri: &S3Uri) -> Result<Option<Vec<u8>>, StorageError> {
        match self.read_all(uri).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens an object for streaming.
    pub async fn open(&self, uri: &S3Uri) -> Result<ByteStream, StorageError> {
        let response = self.client.get_object().bucket(&uri.bucket).key(&uri.key).send().await;
        Ok(response.map_err(|e| StorageError::from_sdk(uri.to_string(), e))?.body)
    }

    /// Opens the exact object version the event announced.
    pub async fn open_input(&self, input: &InputObject) -> Result<ByteStream, StorageError> {
        let uri = format!("s3://{}/{}", input.bucket, input.key);
        let request = self.client.get_object().bucket(&input.bucket).key(&input.key);
        let request = match &input.version_id {
            Some(version) => request.version_id(version),
            None => request.if_match(&input.etag),
        };
        Ok(request.send().await.map_err(|e| StorageError::from_sdk(uri, e))?.body)
    }

    /// Copies `body` into `sink` chunk by chunk; the reader sees an error if the download fails.
    pub async fn pump(
        uri: &str,
        mut body: ByteStream,
        sink: mpsc::Sender<io::Result<Bytes>>,
    ) -> Result<u64, StorageError> {
        let mut total = 0u64;
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    total += chunk.len() as u64;
                    if sink.send(Ok(chunk)).await.is_err() {
                        // The parser stopped early (it failed or was cancelled): nothing more to do.
                        return Ok(total);
                    }
                }
                Ok(None) => return Ok(total),
                Err(e) => {
                    let message = format!("download of {uri} failed: {e}");
                    let _ = sink.send(Err(io::Error::other(message))).await;
                    return Err(StorageError::Request { uri: uri.to_owned(), source: e.into() });
                }
            }
        }
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(format!("s3://{bucket}/{key}"), e))?;
        Ok(())
    }

    /// Deletes an object if it is there (deleting what is not there succeeds).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(format!("s3://{bucket}/{key}"), e))?;
        Ok(())
    }

    /// Writes what a [`PartWriter`] produces to `s3://bucket/key`, and only if it finishes.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        mut parts: mpsc::Receiver<OutputPart>,
    ) -> Result<Uploaded, StorageError> {
        let uri = format!("s3://{bucket}/{key}");
        let abandoned = || StorageError::Abandoned { uri: uri.clone() };
        let first = match parts.recv().await.ok_or_else(abandoned)? {
            OutputPart::Finish => Bytes::new(),
            OutputPart::Data(data) => data,
        };
        let second = match parts.recv().await.ok_or_else(abandoned)? {
            OutputPart::Finish => None,
            OutputPart::Data(data) => Some(data),
        };
        let Some(second) = second else {
            let bytes = first.len() as u64;
            self.put(bucket, key, first.to_vec(), content_type).await?;
            return Ok(Uploaded { bytes, parts: 1 });
        };

        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(&uri, e))?;
        let upload_id = created
            .upload_id
            .ok_or_else(|| StorageError::Request { uri: uri.clone(), source: "S3 returned no upload id".into() })?;
        let mut guard = AbortOnDrop {
            storage: self.clone(),
            bucket: bucket.into(),
            key: key.into(),
            upload_id: Some(upload_id.clone()),
        };

        let mut completed = Vec::new();
        let mut bytes = 0u64;
        let mut next = Some(first);
        let mut after = Some(second);
        loop {
            let Some(data) = next.take() else { break };
            let number = completed.len() as i32 + 1;
            bytes += data.len() as u64;
            let part = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| StorageError::from_sdk(&uri, e))?;
            completed.push(CompletedPart::builder().part_number(number).set_e_tag(part.e_tag).build());
            next = match after.take() {
                Some(data) => Some(data),
                None => match parts.recv().await.ok_or_else(abandoned)? {
                    OutputPart::Data(data) => Some(data),
                    OutputPart::Finish => None,
                },
            };
        }
        let parts = completed.len();
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(&uri, e))?;
        guard.upload_id = None;
        Ok(Uploaded { bytes, parts })
    }

    /// Waits for the aborts of abandoned uploads (before the process exits).
    pub async fn finish_cleanups(&self) {
        let handles: Vec<_> = std::mem::take(&mut *self.cleanups.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            let _ = handle.await;
        }
    }
}

/// Aborts a multipart upload that was not completed, however the upload ended.
struct AbortOnDrop {
    storage: S3Storage,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, bucket, key) = (self.storage.client.clone(), self.bucket.clone(), self.key.clone());
        let handle = runtime.spawn(async move {
            let result = client.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&upload_id).send().await;
            match result {
                Ok(_) => tracing::info!(%bucket, %key, "aborted unfinished multipart upload"),
                Err(e) => tracing::warn!(%bucket, %key, error = %e, "could not abort unfinished multipart upload; the bucket's lifecycle rule will"),
            }
        });
        self.storage.cleanups.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
    }
}

/// The blocking side of a streamed input.
pub struct ChannelReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

/// A channel for streaming an input into a [`ChannelReader`].
pub fn input_channel() -> (mpsc::Sender<io::Result<Bytes>>, ChannelReader) {
    let (tx, rx) = mpsc::channel(INPUT_CHUNKS_IN_FLIGHT);
    (tx, ChannelReader { chunks: rx, current: Bytes::new() })
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The blocking side of a streamed output: cuts what is written into parts.
pub struct PartWriter {
    parts: mpsc::Sender<OutputPart>,
    buffer: Vec<u8>,
    part_size: usize,
}

/// A channel from a [`PartWriter`] to [`S3Storage::upload`].
pub fn output_channel(part_size: usize) -> (PartWriter, mpsc::Receiver<OutputPart>) {
    let (tx, rx) = mpsc::channel(PARTS_IN_FLIGHT);
    (PartWriter { parts: tx, buffer: Vec::with_capacity(part_size), part_size }, rx)
}

impl PartWriter {
    fn send(&self, part: OutputPart) -> io::Result<()> {
        self.parts
            .blocking_send(part)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped before the output was complete"))
    }

    /// Sends what is left and marks the output complete.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer);
            self.send(OutputPart::Data(last.into()))?;
        }
        self.send(OutputPart::Finish)
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == self.part_size {
            let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
            self.send(OutputPart::Data(full.into()))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
