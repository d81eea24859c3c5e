//! In-memory fakes of the worker's ports, with the rules of the real services that the tests
//! rely on: SQS's visibility timeouts, receive counts and redrive to a dead-letter queue; S3's
//! ETags (MD5, and MD5 of MD5s for multipart), conditional reads, parts and multipart uploads.
//! Time is tokio's, so tests can run with paused time.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use md5::{Digest, Md5};
use shared::aws_error::AwsError;
use shared::{InputObject, JobMessage, OutputLocation};
use shared::{JobReport, S3Uri};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use worker::completions::CompletionEvents;
use worker::engine::{CsvOptions, TransformOptions};
use worker::job::{JobRunner, JobSettings};
use worker::models::ModelCache;
use worker::queue::{Delivery, QueueError, WorkQueue};
use worker::retry::Backoff;
use worker::store::{GetRequest, ListedObject, ObjectBody, ObjectStore, StoreError};
use worker::transfer::Transfers;

// ---------------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------------

/// An SQS queue with a redrive policy.
#[derive(Clone)]
pub struct MemoryQueue {
    state: Arc<Mutex<QueueState>>,
}

struct QueueState {
    messages: Vec<Message>,
    dead_letters: Vec<String>,
    max_receive_count: u32,
    visibility_timeout: Duration,
    next_receipt: u64,
}

#[derive(Debug, Clone)]
struct Message {
    id: String,
    body: String,
    receives: u32,
    visible_at: Instant,
    receipt: Option<String>,
}

impl MemoryQueue {
    pub fn new(visibility_timeout: Duration, max_receive_count: u32) -> Self {
        Self {
            state: Arc::new(Mutex::new(QueueState {
                messages: Vec::new(),
                dead_letters: Vec::new(),
                max_receive_count,
                visibility_timeout,
                next_receipt: 0,
            })),
        }
    }

    pub fn send(&self, body: impl Into<String>) {
        let mut state = self.state.lock().unwrap();
        let id = format!("message-{}", state.messages.len() + state.dead_letters.len() + 1);
        state.messages.push(Message { id, body: body.into(), receives: 0, visible_at: Instant::now(), receipt: None });
    }

    /// Bodies in the dead-letter queue.
    pub fn dead_letters(&self) -> Vec<String> {
        self.state.lock().unwrap().dead_letters.clone()
    }

    /// Messages still on the queue (visible or not).
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().messages.len()
    }

    /// Messages hidden now (received, or handed back with a delay).
    pub fn hidden(&self) -> usize {
        let now = Instant::now();
        self.state.lock().unwrap().messages.iter().filter(|m| m.visible_at > now).count()
    }

    /// When the message with `body` becomes visible next.
    pub fn visible_at(&self, body: &str) -> Option<Instant> {
        self.state.lock().unwrap().messages.iter().find(|m| m.body == body).map(|m| m.visible_at)
    }
}

impl WorkQueue for MemoryQueue {
    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            {
                let now = Instant::now();
                let mut state = self.state.lock().unwrap();
                // As SQS does: a message received maxReceiveCount times moves to the dead-letter
                // queue instead of being received again.
                let max = state.max_receive_count;
                let (spent, kept): (Vec<Message>, Vec<Message>) =
                    state.messages.drain(..).partition(|m| m.visible_at <= now && m.receives >= max);
                state.messages = kept;
                state.dead_letters.extend(spent.into_iter().map(|m| m.body));
                state.next_receipt += 1;
                let receipt = format!("receipt-{}", state.next_receipt);
                let visibility = state.visibility_timeout;
                if let Some(message) = state.messages.iter_mut().find(|m| m.visible_at <= now) {
                    message.receives += 1;
                    message.visible_at = now + visibility;
                    message.receipt = Some(receipt.clone());
                    return Ok(Some(Delivery {
                        message_id: message.id.clone(),
                        body: message.body.clone(),
                        receipt,
                        attempt: message.receives,
                    }));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        // As SQS: a stale receipt handle "succeeds" and deletes nothing.
        self.state.lock().unwrap().messages.retain(|m| m.receipt.as_deref() != Some(receipt));
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        match state.messages.iter_mut().find(|m| m.receipt.as_deref() == Some(receipt)) {
            Some(message) => {
                message.visible_at = now + timeout;
                Ok(())
            }
            None => Err(AwsError::service(
                "SQS",
                "ChangeMessageVisibility",
                "ReceiptHandleIsInvalid",
                "The receipt handle is not valid",
                400,
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

/// S3, in memory.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<StoreState>>,
}

#[derive(Default)]
struct StoreState {
    buckets: Vec<String>,
    objects: BTreeMap<(String, String), Object>,
    uploads: HashMap<String, (S3Uri, BTreeMap<i32, Bytes>)>,
    next_upload: u64,
    faults: Vec<Fault>,
    /// "Operation key" of every call, in order.
    calls: Vec<String>,
}

#[derive(Clone)]
struct Object {
    data: Bytes,
    etag: String,
    /// Part lengths of an object uploaded in parts.
    parts: Vec<usize>,
    /// Encrypted with KMS: the ETag is not an MD5.
    kms: bool,
}

/// Something that goes wrong, for the test that asks for it.
#[derive(Clone)]
pub enum Fault {
    /// Calls of `operation` on keys containing `key` fail with `error`, `times` times (or always).
    Refuse { operation: &'static str, key: String, error: fn() -> AwsError, times: Option<u32> },
    /// Downloads of `key` break after `after` bytes, `times` times.
    BreakDownload { key: String, after: usize, times: u32 },
    /// Once a download of `key` has started, the key is uploaded again with `data`.
    ReplaceAfterGet { key: String, data: Bytes },
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn multipart_etag(parts: &[&[u8]]) -> String {
    let mut combined = Md5::new();
    for part in parts {
        combined.update(Md5::digest(part));
    }
    format!("{}-{}", hex::encode(combined.finalize()), parts.len())
}

fn uri(bucket: &str, key: &str) -> S3Uri {
    S3Uri { bucket: bucket.into(), key: key.into() }
}

impl MemoryStore {
    pub fn with_buckets(buckets: &[&str]) -> Self {
        let store = Self::default();
        store.state.lock().unwrap().buckets = buckets.iter().map(|b| (*b).to_owned()).collect();
        store
    }

    /// Puts an object as one upload; returns its ETag.
    pub fn put_object(&self, bucket: &str, key: &str, data: impl Into<Bytes>) -> String {
        let data = data.into();
        let etag = md5_hex(&data);
        let object = Object { data, etag: etag.clone(), parts: Vec::new(), kms: false };
        self.state.lock().unwrap().objects.insert((bucket.into(), key.into()), object);
        etag
    }

    /// Puts an object as a multipart upload of `part_size` parts; returns its `-N` ETag.
    pub fn put_multipart_object(&self, bucket: &str, key: &str, data: impl Into<Bytes>, part_size: usize) -> String {
        let data = data.into();
        let chunks: Vec<&[u8]> = data.chunks(part_size).collect();
        let etag = multipart_etag(&chunks);
        let parts = chunks.iter().map(|c| c.len()).collect();
        let object = Object { data: data.clone(), etag: etag.clone(), parts, kms: false };
        self.state.lock().unwrap().objects.insert((bucket.into(), key.into()), object);
        etag
    }

    /// Replaces an object's bytes but keeps its ETag, as a corruption would look.
    pub fn corrupt(&self, bucket: &str, key: &str, data: impl Into<Bytes>) {
        let mut state = self.state.lock().unwrap();
        let object = state.objects.get_mut(&(bucket.into(), key.into())).expect("the object exists");
        object.data = data.into();
    }

    /// Marks an object as encrypted with SSE-KMS (its ETag is then no MD5).
    pub fn mark_kms(&self, bucket: &str, key: &str, etag: &str) {
        let mut state = self.state.lock().unwrap();
        let object = state.objects.get_mut(&(bucket.into(), key.into())).expect("the object exists");
        object.kms = true;
        object.etag = etag.into();
    }

    pub fn object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.state.lock().unwrap().objects.get(&(bucket.into(), key.into())).map(|o| o.data.clone())
    }

    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.state.lock().unwrap().objects.keys().filter(|(b, _)| b == bucket).map(|(_, k)| k.clone()).collect()
    }

    pub fn open_uploads(&self) -> usize {
        self.state.lock().unwrap().uploads.len()
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Records the call and returns the error an injected fault asks for.
    fn check(&self, operation: &'static str, uri: &S3Uri) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("{operation} {}", uri.key));
        for fault in &mut state.faults {
            if let Fault::Refuse { operation: op, key, error, times } = fault
                && *op == operation
                && uri.key.contains(key.as_str())
                && times.is_none_or(|t| t > 0)
            {
                if let Some(t) = times {
                    *t -= 1;
                }
                return Err(error().on(uri.to_string()));
            }
        }
        if !state.buckets.contains(&uri.bucket) {
            return Err(AwsError::service("S3", operation, "NoSuchBucket", "The specified bucket does not exist", 404)
                .on(uri.to_string()));
        }
        Ok(())
    }

    fn missing(operation: &'static str, uri: &S3Uri) -> StoreError {
        AwsError::service("S3", operation, "NoSuchKey", "The specified key does not exist.", 404).on(uri.to_string())
    }

    fn precondition(operation: &'static str, uri: &S3Uri) -> StoreError {
        AwsError::service(
            "S3",
            operation,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            412,
        )
        .on(uri.to_string())
    }
}

impl ObjectStore for MemoryStore {
    async fn get(&self, request: &GetRequest) -> Result<ObjectBody, StoreError> {
        let uri = &request.uri;
        self.check("GetObject", uri)?;
        let mut state = self.state.lock().unwrap();
        let object = state
            .objects
            .get(&(uri.bucket.clone(), uri.key.clone()))
            .cloned()
            .ok_or_else(|| Self::missing("GetObject", uri))?;
        if request.if_match.as_deref().is_some_and(|e| e.trim_matches('"') != object.etag) {
            return Err(Self::precondition("GetObject", uri));
        }
        let (mut data, parts_count) = match request.part_number {
            Some(number) if !object.parts.is_empty() => {
                let start: usize = object.parts[..number as usize - 1].iter().sum();
                let end = start + object.parts[number as usize - 1];
                (object.data.slice(start..end), Some(object.parts.len() as u32))
            }
            _ => (object.data.clone(), None),
        };
        let end = request.range_end.map_or(data.len(), |end| (end as usize).min(data.len()));
        data = data.slice((request.range_start as usize).min(end)..end);
        let mut break_after = None;
        let mut replacement = None;
        for fault in &mut state.faults {
            match fault {
                Fault::BreakDownload { key, after, times } if uri.key.contains(key.as_str()) && *times > 0 => {
                    *times -= 1;
                    break_after = Some(*after);
                }
                Fault::ReplaceAfterGet { key, data } if uri.key == *key => replacement = Some(data.clone()),
                _ => {}
            }
        }
        if let Some(new) = replacement {
            state.faults.retain(|f| !matches!(f, Fault::ReplaceAfterGet { key, .. } if uri.key == *key));
            let etag = md5_hex(&new);
            state.objects.insert(
                (uri.bucket.clone(), uri.key.clone()),
                Object { data: new, etag, parts: Vec::new(), kms: false },
            );
        }
        Ok(ObjectBody {
            length: data.len() as u64,
            etag: Some(object.etag.clone()),
            parts_count,
            etag_is_md5: !object.kms,
            body: Box::new(Body { data, position: 0, break_after }),
        })
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        self.check("ListObjectsV2", &uri(bucket, prefix))?;
        let state = self.state.lock().unwrap();
        Ok(state
            .objects
            .iter()
            .filter(|((b, k), _)| b == bucket && k.starts_with(prefix))
            .map(|((_, key), object)| ListedObject {
                key: key.clone(),
                etag: object.etag.clone(),
                size: object.data.len() as u64,
            })
            .collect())
    }

    async fn head(&self, uri: &S3Uri, if_match: Option<&str>) -> Result<String, StoreError> {
        self.check("HeadObject", uri)?;
        let state = self.state.lock().unwrap();
        let object = state
            .objects
            .get(&(uri.bucket.clone(), uri.key.clone()))
            .ok_or_else(|| Self::missing("HeadObject", uri))?;
        if if_match.is_some_and(|e| e.trim_matches('"') != object.etag) {
            return Err(Self::precondition("HeadObject", uri));
        }
        Ok(object.etag.clone())
    }

    async fn put(&self, uri: &S3Uri, body: Bytes, _content_type: &str) -> Result<(), StoreError> {
        self.check("PutObject", uri)?;
        self.put_object(&uri.bucket, &uri.key, body);
        Ok(())
    }

    async fn put_if_absent(&self, uri: &S3Uri, body: Bytes, _content_type: &str) -> Result<bool, StoreError> {
        self.check("PutObject", uri)?;
        let mut state = self.state.lock().unwrap();
        let key = (uri.bucket.clone(), uri.key.clone());
        if state.objects.contains_key(&key) {
            return Ok(false);
        }
        let etag = md5_hex(&body);
        state.objects.insert(key, Object { data: body, etag, parts: Vec::new(), kms: false });
        Ok(true)
    }

    async fn delete(&self, uri: &S3Uri) -> Result<(), StoreError> {
        self.check("DeleteObject", uri)?;
        self.state.lock().unwrap().objects.remove(&(uri.bucket.clone(), uri.key.clone()));
        Ok(())
    }

    async fn create_multipart(&self, uri: &S3Uri, _content_type: &str) -> Result<String, StoreError> {
        self.check("CreateMultipartUpload", uri)?;
        let mut state = self.state.lock().unwrap();
        state.next_upload += 1;
        let id = format!("upload-{}", state.next_upload);
        state.uploads.insert(id.clone(), (uri.clone(), BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(&self, uri: &S3Uri, upload_id: &str, number: i32, body: Bytes) -> Result<String, StoreError> {
        self.check("UploadPart", uri)?;
        let mut state = self.state.lock().unwrap();
        let (_, parts) = state.uploads.get_mut(upload_id).ok_or_else(|| {
            AwsError::service("S3", "UploadPart", "NoSuchUpload", "The specified upload does not exist", 404)
        })?;
        let etag = md5_hex(&body);
        parts.insert(number, body);
        Ok(etag)
    }

    async fn complete_multipart(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<(), StoreError> {
        self.check("CompleteMultipartUpload", uri)?;
        let mut state = self.state.lock().unwrap();
        let (_, uploaded) = state.uploads.remove(upload_id).ok_or_else(|| {
            AwsError::service(
                "S3",
                "CompleteMultipartUpload",
                "NoSuchUpload",
                "The specified upload does not exist",
                404,
            )
        })?;
        let chunks: Vec<Bytes> = parts.iter().map(|(n, _)| uploaded[n].clone()).collect();
        // As S3 (and moto) insist: every part but the last at least 5 MiB.
        if chunks.iter().rev().skip(1).any(|c| c.len() < 5 * 1024 * 1024) {
            return Err(AwsError::service(
                "S3",
                "CompleteMultipartUpload",
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
                400,
            )
            .on(uri.to_string()));
        }
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_ref()).collect();
        let etag = multipart_etag(&refs);
        let data: Bytes = chunks.concat().into();
        let object = Object { data, etag, parts: refs.iter().map(|c| c.len()).collect(), kms: false };
        state.objects.insert((uri.bucket.clone(), uri.key.clone()), object);
        Ok(())
    }

    async fn copy_part(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        number: i32,
        source: &S3Uri,
        (start, end): (u64, u64),
    ) -> Result<String, StoreError> {
        self.check("UploadPartCopy", uri)?;
        let mut state = self.state.lock().unwrap();
        let data = state
            .objects
            .get(&(source.bucket.clone(), source.key.clone()))
            .map(|o| o.data.clone())
            .ok_or_else(|| Self::missing("UploadPartCopy", source))?;
        let (_, parts) = state.uploads.get_mut(upload_id).ok_or_else(|| {
            AwsError::service("S3", "UploadPartCopy", "NoSuchUpload", "The specified upload does not exist", 404)
        })?;
        let body = data.slice(start as usize..end as usize);
        let etag = md5_hex(&body);
        parts.insert(number, body);
        Ok(etag)
    }

    async fn abort_multipart(&self, uri: &S3Uri, upload_id: &str) -> Result<(), StoreError> {
        self.check("AbortMultipartUpload", uri)?;
        self.state.lock().unwrap().uploads.remove(upload_id);
        Ok(())
    }
}

/// An object's body; it fails after `break_after` bytes when asked to.
struct Body {
    data: Bytes,
    position: usize,
    break_after: Option<usize>,
}

impl AsyncRead for Body {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let limit = self.break_after.unwrap_or(usize::MAX);
        if self.position >= limit && self.position < self.data.len() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")));
        }
        // Small reads, as a network gives them.
        let end = self.data.len().min(limit).min(self.position + 16 * 1024);
        let n = (end - self.position).min(buf.remaining());
        let start = self.position;
        buf.put_slice(&self.data[start..start + n]);
        self.position += n;
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// Completion events
// ---------------------------------------------------------------------------------------------

/// Keeps the reports it is told about, and their event ids; refuses the next `.2` puts.
#[derive(Clone, Default)]
pub struct RecordedEvents(pub Arc<Mutex<Vec<JobReport>>>, pub Arc<Mutex<Vec<String>>>, pub Arc<Mutex<u32>>);

impl RecordedEvents {
    pub fn ids(&self) -> Vec<String> {
        self.1.lock().unwrap().clone()
    }

    /// The next `count` puts fail, as EventBridge does when it throttles.
    pub fn refuse(&self, count: u32) {
        *self.2.lock().unwrap() = count;
    }
}

impl CompletionEvents for RecordedEvents {
    async fn file_finished(&self, report: &JobReport, event_id: &str) -> Result<(), AwsError> {
        {
            let mut refused = self.2.lock().unwrap();
            if *refused > 0 {
                *refused -= 1;
                return Err(AwsError::service("EventBridge", "PutEvents", "ThrottlingException", "Rate exceeded", 400));
            }
        }
        self.0.lock().unwrap().push(report.clone());
        self.1.lock().unwrap().push(event_id.to_owned());
        Ok(())
    }
}

pub fn repo(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

pub fn s3(bucket: &str, key: &str) -> S3Uri {
    uri(bucket, key)
}

pub const MODEL: &str = "iris/model.onnx";

// ---------------------------------------------------------------------------------------------
// A job runner over the store, with the iris model
// ---------------------------------------------------------------------------------------------

/// A store with the buckets, the iris model and its sidecar, and a runner over it.
pub fn setup() -> (MemoryStore, JobRunner<MemoryStore, RecordedEvents>, RecordedEvents) {
    let store = MemoryStore::with_buckets(&["in", "out", "models"]);
    store.put_object("models", MODEL, std::fs::read(repo("models/iris_logreg.onnx")).unwrap());
    store.put_object("models", &format!("{MODEL}.json"), std::fs::read(repo("models/iris_logreg.onnx.json")).unwrap());
    let events = RecordedEvents::default();
    let runner = runner_on(&store, &events, "worker-1");
    (store, runner, events)
}

/// A runner, as worker `worker_id`, over `store`, announcing to `events`.
pub fn runner_on(
    store: &MemoryStore,
    events: &RecordedEvents,
    worker_id: &str,
) -> JobRunner<MemoryStore, RecordedEvents> {
    let quick = Backoff { attempts: 4, first: Duration::from_millis(5), max: Duration::from_millis(20) };
    let transfers = Transfers::with_retry(store.clone(), quick);
    JobRunner {
        models: ModelCache::new(transfers.clone(), 1 << 30),
        transfers,
        events: events.clone(),
        settings: JobSettings {
            transform: TransformOptions { batch_size: 256, max_bad_row_ratio: 0.1, threads: 2, ..Default::default() },
            csv: CsvOptions { has_header: true, delimiter: b',' },
            max_input_bytes: 1 << 30,
            metrics_namespace: "sluice-test".into(),
            announcement_timeout: Duration::from_secs(30),
        },
        worker_id: worker_id.into(),
    }
}

pub fn iris() -> Vec<u8> {
    std::fs::read(repo("examples/data/iris.csv")).unwrap()
}

/// iris.csv's rows over and over, with fresh ids.
pub fn iris_like(rows: usize) -> Vec<u8> {
    let text = String::from_utf8(iris()).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    let samples: Vec<&str> = lines.map(|l| l.split_once(',').unwrap().1).collect();
    for i in 0..rows {
        out.push_str(&format!("{},{}\n", i + 1, samples[i % samples.len()]));
    }
    out.into_bytes()
}

pub fn job_for(key: &str, etag: &str, size: usize) -> JobMessage {
    JobMessage::new(
        InputObject { bucket: "in".into(), key: key.into(), size: size as u64, etag: etag.into(), version_id: None },
        OutputLocation { bucket: "out".into(), prefix: String::new(), reports: String::new() },
        format!("s3://models/{MODEL}"),
        Utc::now(),
    )
}

/// Puts `data` under `key` in the input bucket and returns the job its upload event gives.
pub fn upload(store: &MemoryStore, key: &str, data: Vec<u8>) -> JobMessage {
    let size = data.len();
    let etag = store.put_object("in", key, data);
    job_for(key, &etag, size)
}
