//! Streaming over the object store, for the queue mode and `worker transform` alike.
//!
//! - **In**: [`Transfers::open_input`] reads an object into a bounded channel that a blocking
//!   [`ChannelReader`] drains. A download that breaks is resumed where it stopped (a `Range`
//!   request, or the part again for an object uploaded in parts), and the bytes are checked
//!   against the ETag where it is an MD5: the whole object's for a single upload, each part's
//!   for a multipart one (the ETag is then the MD5 of the parts' MD5s, `-N`).
//! - **Out**: [`Transfers::upload`] gives a blocking [`PartWriter`] whose parts go up as they are
//!   written. Finishing the writer *stages* the upload ([`Staged`]): every byte is in the store
//!   but nothing is visible yet. [`Staged::commit`] makes it appear (a single `PutObject` for
//!   outputs under one part, `CompleteMultipartUpload` otherwise); dropping it, or the writer,
//!   aborts. The job decides between the two only after checking its input is still the same.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use shared::S3Uri;
use shared::aws_error::{AwsError, AwsErrorKind};
use shared::shards::Assembled;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::retry::{Backoff, retry};
use crate::store::{GetRequest, ListedObject, ObjectBody, ObjectStore, StoreError};

/// Size of each multipart part; S3 wants at least 5 MiB for all but the last.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Chunks of input in flight between the download and the parser.
const INPUT_CHUNKS_IN_FLIGHT: usize = 16;
/// Bytes read from the store at a time.
const READ_CHUNK: usize = 64 * 1024;
/// What a ranged read asks for past the range it needs, a request at a time.
pub const WINDOW: u64 = 1024 * 1024;
/// Parts in flight between the writer and the upload.
const PARTS_IN_FLIGHT: usize = 1;

/// The object store with retries, resumed downloads and staged uploads.
#[derive(Clone)]
pub struct Transfers<S> {
    store: S,
    retry: Backoff,
    /// Aborts of abandoned multipart uploads still under way.
    cleanups: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// An object compared with the version a job read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectState {
    Unchanged,
    Replaced,
    Deleted,
}

/// The input object a job reads: the version its upload event announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub uri: S3Uri,
    /// Read it only while it has this ETag; a newer upload of the same key then fails the read
    /// with `PreconditionFailed`.
    pub etag: Option<String>,
    pub version_id: Option<String>,
}

impl<S: ObjectStore> Transfers<S> {
    pub fn new(store: S) -> Self {
        Self::with_retry(store, Backoff::CALLS)
    }

    pub fn with_retry(store: S, retry: Backoff) -> Self {
        Self { store, retry, cleanups: Arc::default() }
    }

    /// How calls are retried.
    pub fn retry_policy(&self) -> &Backoff {
        &self.retry
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// A whole (small) object, such as a model.
    pub async fn read_all(&self, uri: &S3Uri) -> Result<Bytes, StoreError> {
        retry(&self.retry, || async {
            let mut object = self.store.get(&GetRequest::whole(uri.clone())).await?;
            let mut bytes = Vec::with_capacity(usize::try_from(object.length).unwrap_or(0));
            object.body.read_to_end(&mut bytes).await.map_err(|e| broken_download(uri, e))?;
            Ok(Bytes::from(bytes))
        })
        .await
    }

    /// The objects under `prefix`.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        retry(&self.retry, || self.store.list(bucket, prefix)).await
    }

    pub async fn put(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> Result<(), StoreError> {
        retry(&self.retry, || self.store.put(uri, body.clone(), content_type)).await
    }

    pub async fn delete(&self, uri: &S3Uri) -> Result<(), StoreError> {
        retry(&self.retry, || self.store.delete(uri)).await
    }

    /// Creates `uri` unless it exists; `true` when this call created it.
    pub async fn put_if_absent(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> Result<bool, StoreError> {
        retry(&self.retry, || self.store.put_if_absent(uri, body.clone(), content_type)).await
    }

    /// A small JSON object, or `None` when there is none.
    pub async fn read_json<T: serde::de::DeserializeOwned>(&self, uri: &S3Uri) -> Result<Option<T>, StoreError> {
        match self.read_all(uri).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                AwsError::other("S3", "GetObject", AwsErrorKind::Response, format!("not the JSON expected: {e}"))
                    .on(uri.to_string())
            }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes `[start, end)` of an object, into memory (a few MiB at most).
    pub async fn read_range(&self, uri: &S3Uri, range: (u64, u64)) -> Result<Bytes, StoreError> {
        self.read_input_range(&InputSpec { uri: uri.clone(), etag: None, version_id: None }, range).await
    }

    /// Bytes `[start, end)` of the input's version (its ETag, or version id, when known).
    pub async fn read_input_range(&self, input: &InputSpec, (start, end): (u64, u64)) -> Result<Bytes, StoreError> {
        let uri = &input.uri;
        retry(&self.retry, || async {
            let request = GetRequest {
                if_match: input.etag.clone(),
                version_id: input.version_id.clone(),
                range_start: start,
                range_end: Some(end),
                ..GetRequest::whole(uri.clone())
            };
            let mut object = self.store.get(&request).await?;
            let mut bytes = Vec::with_capacity((end - start) as usize);
            object.body.read_to_end(&mut bytes).await.map_err(|e| broken_download(uri, e))?;
            if bytes.len() as u64 != end - start {
                let short = format!("read {} of bytes {start}-{end}", bytes.len());
                return Err(AwsError::other("S3", "GetObject", AwsErrorKind::Network, short).on(uri.to_string()));
            }
            Ok(Bytes::from(bytes))
        })
        .await
    }

    /// Reads bytes of `input` from `from` into `sink`, a window at a time (a `Range` request
    /// each, pinned to the input's ETag): first up to `first_end`, then [`WINDOW`] bytes more at
    /// a time while the reader still reads and the object, of `size` bytes, has more. A shard
    /// so reads its range and only as much past it as its last row needs. There is no whole
    /// object to check the bytes against. The sink is ended (or failed) when this returns.
    pub async fn pump_range(
        &self,
        input: &InputSpec,
        from: u64,
        first_end: u64,
        size: u64,
        sink: InputSender,
    ) -> Result<Downloaded, StoreError> {
        let (mut start, mut end, mut bytes) = (from, first_end.min(size), 0);
        let result = loop {
            if start >= end || sink.is_closed() {
                break Ok(());
            }
            let request = GetRequest {
                uri: input.uri.clone(),
                if_match: input.etag.clone(),
                version_id: input.version_id.clone(),
                part_number: None,
                range_start: start,
                range_end: Some(end),
            };
            let first = match retry(&self.retry, || self.store.get(&request)).await {
                Ok(first) => first,
                Err(error) => break Err(error),
            };
            let source = Source {
                transfers: self.clone(),
                input: input.clone(),
                parts: None,
                check: false,
                from: start,
                to: Some(end),
            };
            match source.copy(first, &sink).await {
                Ok(read) => bytes += read.bytes,
                Err(error) => break Err(error),
            }
            (start, end) = (end, (end + WINDOW).min(size));
        };
        let last = match &result {
            Ok(()) => Chunk::End,
            Err(error) => Chunk::Failed(io::Error::other(error.to_string())),
        };
        let _ = sink.send(last).await;
        result.map(|()| Downloaded { bytes, verified: false })
    }

    pub async fn create_multipart(&self, uri: &S3Uri, content_type: &str) -> Result<String, StoreError> {
        retry(&self.retry, || self.store.create_multipart(uri, content_type)).await
    }

    pub async fn upload_part(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        retry(&self.retry, || self.store.upload_part(uri, upload_id, number, body.clone())).await
    }

    pub async fn copy_part(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        number: i32,
        source: &S3Uri,
        range: (u64, u64),
    ) -> Result<String, StoreError> {
        retry(&self.retry, || self.store.copy_part(uri, upload_id, number, source, range)).await
    }

    pub async fn complete_multipart(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<(), StoreError> {
        retry(&self.retry, || self.store.complete_multipart(uri, upload_id, parts)).await
    }

    /// Aborts an unfinished upload now (or, failing that, leaves it to the bucket's lifecycle
    /// rule).
    pub async fn abort_multipart(&self, uri: &S3Uri, upload_id: &str) {
        match retry(&self.retry, || self.store.abort_multipart(uri, upload_id)).await {
            Ok(()) => tracing::info!(output = %uri, "aborted an unfinished multipart upload"),
            Err(error) => tracing::warn!(output = %uri, %error,
                "could not abort an unfinished multipart upload; the bucket's lifecycle rule will"),
        }
    }

    /// Whether the object still has `etag`.
    pub async fn object_state(&self, uri: &S3Uri, etag: &str) -> Result<ObjectState, StoreError> {
        match retry(&self.retry, || self.store.head(uri, Some(etag))).await {
            Ok(_) => Ok(ObjectState::Unchanged),
            Err(e) if e.is_precondition_failed() => Ok(ObjectState::Replaced),
            Err(e) if e.is_not_found() => Ok(ObjectState::Deleted),
            Err(e) => Err(e),
        }
    }

    /// Starts reading `input`; the first request's error (missing, denied, replaced) comes here.
    pub async fn open_input(&self, input: &InputSpec) -> Result<Download<S>, StoreError> {
        // An ETag ending in -N names an object uploaded in N parts: read it part by part, which
        // gives each part's bytes to check.
        let multipart =
            input.etag.as_deref().is_some_and(|e| e.rsplit_once('-').is_some_and(|(_, n)| n.parse::<u32>().is_ok()));
        let request = GetRequest {
            uri: input.uri.clone(),
            if_match: input.etag.clone(),
            version_id: input.version_id.clone(),
            part_number: multipart.then_some(1),
            range_start: 0,
            range_end: None,
        };
        let first = retry(&self.retry, || self.store.get(&request)).await?;
        // A store that ignores the part number answers with the whole object and no part count:
        // then the part boundaries, and so the ETag's parts, are unknown.
        let parts = if multipart { first.parts_count } else { None };
        let check = first.etag_is_md5 && input.etag.is_some() && (parts.is_some() || !multipart);
        if !check {
            tracing::debug!(input = %input.uri, "the ETag is not an MD5 of known parts: the download is not checked against it");
        }
        Ok(Download {
            source: Source { transfers: self.clone(), input: input.clone(), parts, check, from: 0, to: None },
            first,
        })
    }

    /// An output streamed to `uri` as it is written; see the module documentation.
    pub fn upload(&self, uri: S3Uri, content_type: &'static str) -> (PartWriter, PendingUpload<S>) {
        let (tx, rx) = mpsc::channel(PARTS_IN_FLIGHT);
        let writer = PartWriter { parts: tx, buffer: Vec::with_capacity(PART_SIZE), part_size: PART_SIZE };
        let task = tokio::spawn(stage(self.clone(), uri, content_type, rx));
        (writer, PendingUpload { task: Some(task), transfers: self.clone() })
    }

    /// Waits for the aborts of abandoned uploads (before the process exits), including those
    /// that abandoned uploads start while this waits.
    pub async fn finish_cleanups(&self) {
        loop {
            let handles: Vec<_> = std::mem::take(&mut *self.cleanups.lock().unwrap_or_else(|e| e.into_inner()));
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                let _ = handle.await;
            }
        }
    }

    fn track_cleanup(&self, handle: JoinHandle<()>) {
        self.cleanups.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
    }

    fn abort_later(&self, uri: S3Uri, upload_id: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let transfers = self.clone();
        let handle = runtime.spawn(async move { transfers.abort_multipart(&uri, &upload_id).await });
        self.track_cleanup(handle);
    }
}

fn broken_download(uri: &S3Uri, error: io::Error) -> StoreError {
    AwsError::other("S3", "GetObject", AwsErrorKind::Network, error).on(uri.to_string())
}

/// An input being read; [`Download::pump`] moves it into the engine's reader.
pub struct Download<S> {
    source: Source<S>,
    /// The first response, already under way.
    first: ObjectBody,
}

/// Where and how a download reads.
struct Source<S> {
    transfers: Transfers<S>,
    input: InputSpec,
    /// Read part by part, this many parts; `None`: read whole.
    parts: Option<u32>,
    /// Check the bytes against the ETag.
    check: bool,
    /// The bytes read, `[from, to)` (not by parts); `to` `None`: to the end.
    from: u64,
    to: Option<u64>,
}

/// What a finished download read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    pub bytes: u64,
    /// Whether the bytes were checked against the ETag.
    pub verified: bool,
}

impl<S: ObjectStore> Download<S> {
    /// Copies the object into `sink`, resuming after breaks and checking it against its ETag.
    /// On failure the reader sees an error too, so the engine stops.
    pub async fn pump(self, sink: InputSender) -> Result<Downloaded, StoreError> {
        let result = self.source.copy(self.first, &sink).await;
        let last = match &result {
            Ok(_) => Chunk::End,
            Err(error) => Chunk::Failed(io::Error::other(error.to_string())),
        };
        let _ = sink.send(last).await;
        result
    }
}

impl<S: ObjectStore> Source<S> {
    async fn copy(&self, first: ObjectBody, sink: &InputSender) -> Result<Downloaded, StoreError> {
        let mut part_digests = Vec::new();
        let mut total = 0u64;
        let mut body = Some(first);
        for part in 1..=self.parts.unwrap_or(1) {
            let (bytes, digest) = match self.copy_part(part, body.take(), sink).await? {
                Some(done) => done,
                // The engine stopped reading (it failed, or has what it needs): nothing to check.
                None => return Ok(Downloaded { bytes: total, verified: false }),
            };
            total += bytes;
            part_digests.push(digest);
        }
        let verified = self.check && self.verify(&part_digests)?;
        Ok(Downloaded { bytes: total, verified })
    }

    /// One part (the whole object when not multipart): its length and MD5, or `None` when the
    /// reader went away.
    async fn copy_part(
        &self,
        part: u32,
        mut body: Option<ObjectBody>,
        sink: &InputSender,
    ) -> Result<Option<(u64, [u8; 16])>, StoreError> {
        let uri = &self.input.uri;
        let by_parts = self.parts.is_some();
        let mut hasher = Md5::new();
        // Bytes of this part already passed on, and bytes of the current response to skip
        // (a part read again from its start after a break).
        let (mut sent, mut skip) = (0u64, 0u64);
        let mut failures = 0;
        let mut buffer = BytesMut::new();
        loop {
            let object = match body.take() {
                Some(object) => object,
                None => {
                    let request = GetRequest {
                        uri: uri.clone(),
                        if_match: self.input.etag.clone(),
                        version_id: self.input.version_id.clone(),
                        part_number: by_parts.then_some(part),
                        // A whole object resumes where it broke; a part starts again.
                        range_start: if by_parts { 0 } else { self.from + sent },
                        range_end: self.to,
                    };
                    if by_parts {
                        hasher = Md5::new();
                        skip = sent;
                    }
                    retry(&self.transfers.retry, || self.transfers.store.get(&request)).await?
                }
            };
            let expected_end = if by_parts { object.length } else { sent + object.length };
            let mut reader = object.body;
            let mut position = if by_parts { 0 } else { sent };
            let broke = loop {
                buffer.reserve(READ_CHUNK);
                match reader.read_buf(&mut buffer).await {
                    Ok(0) if position < expected_end => {
                        break io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the body ended at byte {position} of {expected_end}"),
                        );
                    }
                    Ok(0) => return Ok(Some((sent, hasher.finalize().into()))),
                    Ok(n) => {
                        let chunk = buffer.split().freeze();
                        hasher.update(&chunk);
                        position += n as u64;
                        // Skip what an earlier response of this part already passed on.
                        let fresh = if skip > 0 {
                            let skipped = skip.min(n as u64);
                            skip -= skipped;
                            chunk.slice(skipped as usize..)
                        } else {
                            chunk
                        };
                        if !fresh.is_empty() {
                            sent += fresh.len() as u64;
                            if sink.send(Chunk::Data(fresh)).await.is_err() {
                                return Ok(None);
                            }
                        }
                    }
                    Err(error) => break error,
                }
            };
            failures += 1;
            let error = broken_download(uri, broke);
            if failures >= self.transfers.retry.attempts {
                return Err(error);
            }
            let pause = self.transfers.retry.delay(failures);
            tracing::warn!(%error, part, resume_at = sent, retry_in_ms = pause.as_millis() as u64,
                "the download broke; resuming");
            tokio::time::sleep(pause).await;
        }
    }

    /// Compares what was read with the ETag: `Ok(true)` when it matches.
    fn verify(&self, part_digests: &[[u8; 16]]) -> Result<bool, StoreError> {
        let expected = self.input.etag.as_deref().unwrap_or_default().trim_matches('"');
        let actual = if self.parts.is_some() {
            let mut combined = Md5::new();
            for digest in part_digests {
                combined.update(digest);
            }
            format!("{}-{}", hex::encode(combined.finalize()), part_digests.len())
        } else {
            hex::encode(part_digests[0])
        };
        if actual == expected {
            Ok(true)
        } else {
            let problem =
                format!("the downloaded bytes do not match the object's ETag: read {actual}, expected {expected}");
            Err(AwsError::other("S3", "GetObject", AwsErrorKind::Response, problem).on(self.input.uri.to_string()))
        }
    }
}

/// What travels from a download to its [`ChannelReader`].
pub enum Chunk {
    Data(Bytes),
    /// The whole object was read.
    End,
    Failed(io::Error),
}

/// The sending side of a streamed input.
pub type InputSender = mpsc::Sender<Chunk>;

/// The blocking side of a streamed input. It ends only on [`Chunk::End`]: a download dropped
/// half-way (its job given up) is an error to the reader, never a short file.
pub struct ChannelReader {
    chunks: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

/// A channel for streaming an input into a [`ChannelReader`].
pub fn input_channel() -> (InputSender, ChannelReader) {
    let (tx, rx) = mpsc::channel(INPUT_CHUNKS_IN_FLIGHT);
    (tx, ChannelReader { chunks: rx, current: Bytes::new(), ended: false })
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.chunks.blocking_recv() {
                Some(Chunk::Data(chunk)) => self.current = chunk,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the download stopped before the end of the input",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// What a [`PartWriter`] sends to the upload.
enum OutputPart {
    Data(Bytes),
    Finish,
}

/// The blocking side of a streamed output: cuts what is written into parts.
pub struct PartWriter {
    parts: mpsc::Sender<OutputPart>,
    buffer: Vec<u8>,
    part_size: usize,
}

impl PartWriter {
    fn send(&self, part: OutputPart) -> io::Result<()> {
        self.parts
            .blocking_send(part)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped before the output was complete"))
    }

    /// Sends what is left and marks the output complete (staged, not yet visible).
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

/// An upload under way; [`PendingUpload::staged`] waits until its writer finished. Dropped
/// before that (its job given up), it stops the upload, which aborts what was uploaded.
pub struct PendingUpload<S: ObjectStore> {
    task: Option<JoinHandle<Result<Staged<S>, UploadError>>>,
    transfers: Transfers<S>,
}

/// Why an output was not staged.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Its writer was dropped before it finished: the output was not wanted.
    #[error("the output was abandoned before it was complete")]
    Abandoned,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<S: ObjectStore> PendingUpload<S> {
    pub async fn staged(mut self) -> Result<Staged<S>, UploadError> {
        // Awaited in place: if this future is dropped half-way, `self` still holds the task,
        // and dropping it stops the upload.
        let result = self.task.as_mut().expect("staged once").await;
        self.task = None;
        match result {
            Ok(result) => result,
            Err(join) => {
                Err(UploadError::Store(AwsError::other("S3", "UploadPart", AwsErrorKind::Request, join.to_string())))
            }
        }
    }
}

impl<S: ObjectStore> Drop for PendingUpload<S> {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        task.abort();
        // Cancelling drops the upload's state, which starts the abort of what it uploaded (or
        // drops the staged output, which does the same); the process waits for both.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.transfers.track_cleanup(runtime.spawn(async move {
                let _ = task.await;
            }));
        }
    }
}

/// Every byte of an output is in the store, not yet visible; dropped, it is aborted.
pub struct Staged<S: ObjectStore> {
    transfers: Transfers<S>,
    uri: S3Uri,
    content_type: &'static str,
    state: Option<StagedState>,
}

enum StagedState {
    /// Under one part: kept here and put whole on commit.
    Single(Bytes),
    Multipart {
        upload_id: String,
        parts: Vec<(i32, String)>,
        bytes: u64,
    },
}

/// What a committed upload wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    pub parts: usize,
}

impl<S: ObjectStore> Staged<S> {
    pub fn uri(&self) -> &S3Uri {
        &self.uri
    }

    /// Makes the output visible.
    pub async fn commit(mut self) -> Result<Uploaded, StoreError> {
        let transfers = self.transfers.clone();
        match self.state.take() {
            Some(StagedState::Single(body)) => {
                let bytes = body.len() as u64;
                transfers.put(&self.uri, body, self.content_type).await?;
                Ok(Uploaded { bytes, parts: 1 })
            }
            Some(StagedState::Multipart { upload_id, parts, bytes }) => {
                let result =
                    retry(&transfers.retry, || transfers.store.complete_multipart(&self.uri, &upload_id, &parts)).await;
                if result.is_err() {
                    // Dropping self aborts it.
                    self.state = Some(StagedState::Multipart { upload_id, parts: parts.clone(), bytes });
                }
                result.map(|()| Uploaded { bytes, parts: parts.len() })
            }
            None => Ok(Uploaded { bytes: 0, parts: 0 }),
        }
    }
}

impl<S: ObjectStore> Staged<S> {
    /// The staged bytes as an open multipart upload that any worker can complete (an output
    /// under one part is uploaded as its only part). From here on the caller owns the upload:
    /// it is not aborted on drop.
    pub async fn into_assembled(mut self) -> Result<Assembled, StoreError> {
        match self.state.take() {
            None => Ok(Assembled::Empty),
            Some(StagedState::Single(body)) if body.is_empty() => Ok(Assembled::Empty),
            Some(StagedState::Single(body)) => {
                let upload_id = self.transfers.create_multipart(&self.uri, self.content_type).await?;
                match self.transfers.upload_part(&self.uri, &upload_id, 1, body).await {
                    Ok(etag) => Ok(Assembled::Parts { upload_id, parts: vec![(1, etag)] }),
                    Err(error) => {
                        self.transfers.abort_multipart(&self.uri, &upload_id).await;
                        Err(error)
                    }
                }
            }
            Some(StagedState::Multipart { upload_id, parts, .. }) => Ok(Assembled::Parts { upload_id, parts }),
        }
    }
}

impl<S: ObjectStore> Drop for Staged<S> {
    fn drop(&mut self) {
        if let Some(StagedState::Multipart { upload_id, .. }) = self.state.take() {
            self.transfers.abort_later(self.uri.clone(), upload_id);
        }
    }
}

/// Aborts a multipart upload that never got staged, however the staging ended.
struct AbortUnlessStaged<S: ObjectStore> {
    transfers: Transfers<S>,
    uri: S3Uri,
    upload_id: Option<String>,
}

impl<S: ObjectStore> Drop for AbortUnlessStaged<S> {
    fn drop(&mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            self.transfers.abort_later(self.uri.clone(), upload_id);
        }
    }
}

/// Receives the parts of one output and uploads them, up to the point of completing it.
async fn stage<S: ObjectStore>(
    transfers: Transfers<S>,
    uri: S3Uri,
    content_type: &'static str,
    mut parts: mpsc::Receiver<OutputPart>,
) -> Result<Staged<S>, UploadError> {
    let staged = |state| Staged { transfers: transfers.clone(), uri: uri.clone(), content_type, state: Some(state) };
    let first = match parts.recv().await.ok_or(UploadError::Abandoned)? {
        OutputPart::Finish => return Ok(staged(StagedState::Single(Bytes::new()))),
        OutputPart::Data(data) => data,
    };
    let second = match parts.recv().await.ok_or(UploadError::Abandoned)? {
        OutputPart::Finish => return Ok(staged(StagedState::Single(first))),
        OutputPart::Data(data) => data,
    };

    let upload_id = retry(&transfers.retry, || transfers.store.create_multipart(&uri, content_type)).await?;
    let mut guard =
        AbortUnlessStaged { transfers: transfers.clone(), uri: uri.clone(), upload_id: Some(upload_id.clone()) };
    let mut uploaded = Vec::new();
    let mut bytes = 0u64;
    let mut next = Some(first);
    let mut after = Some(second);
    while let Some(data) = next.take() {
        let number = uploaded.len() as i32 + 1;
        bytes += data.len() as u64;
        let etag =
            retry(&transfers.retry, || transfers.store.upload_part(&uri, &upload_id, number, data.clone())).await?;
        uploaded.push((number, etag));
        next = match after.take() {
            Some(data) => Some(data),
            None => match parts.recv().await.ok_or(UploadError::Abandoned)? {
                OutputPart::Data(data) => Some(data),
                OutputPart::Finish => None,
            },
        };
    }
    guard.upload_id = None;
    Ok(staged(StagedState::Multipart { upload_id, parts: uploaded, bytes }))
}
