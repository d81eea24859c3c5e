//! One job: stream the input through the model into staged outputs, make them visible only if
//! the input is still the object the event announced, write the report, announce it.
//!
//! Every job ends as one [`JobOutcome`]:
//! - `Reported`: the file succeeded, or failed for a reason in the file itself (the uploader's to
//!   fix); the report says which. The message can go.
//! - `Superseded`: the key was uploaded again (or deleted) since this event; the newer upload's
//!   own job covers it, and nothing was written.
//! - `ShardDone`: one shard of a big file is staged ([`crate::shard`]); the file's report comes
//!   with its last shard.
//! - `Retry`: not finished, for a reason that may pass (a network or service failure) or that
//!   only the operator can fix (permissions, KMS, the deployment's model). The message stays,
//!   comes back for another try, and after the queue's `maxReceiveCount` it waits in the
//!   dead-letter queue, with an alarm, to be redriven once fixed.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use shared::keys::OutputKeys;
use shared::metrics::{MetricRecord, Unit};
use shared::report::{JobReport, JobStatus, ModelInfo, ReportOutputs, RowCounts, SplitReport};
use shared::shards::Split;
use shared::{JobMessage, ModelSource, S3Uri};

use crate::completions::CompletionEvents;
use crate::config::WorkerConfig;
use crate::engine::{
    CsvOptions, DataFormat, FileKind, TableFormat, TransformError, TransformOptions, TransformSummary, transform,
    transform_parquet,
};
use crate::models::{ModelCache, ModelLoadError};
use crate::ranged::RangedObject;
use crate::repository::{ModelRepository, ResolveError, ResolvedModel};
use crate::retry::retry;
use crate::store::{ObjectStore, StoreError};
use crate::transfer::{ChannelReader, InputSpec, ObjectState, Staged, Transfers, UploadError, input_channel};

/// Runs one job to its outcome.
pub trait JobHandler: Send + Sync {
    fn run(&self, job: &JobMessage, attempt: u32) -> impl Future<Output = JobOutcome> + Send;
}

/// How a job ended; see the module documentation.
#[derive(Debug)]
pub enum JobOutcome {
    Reported(Box<JobReport>),
    Superseded(String),
    ShardDone(String),
    Retry { cause: RetryCause, reason: String },
}

/// Who can make a job that has to be tried again succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// Time: a network, throttling or service failure.
    Transient,
    /// The operator: a permission, a KMS key, the deployment's model.
    Operator,
}

/// The job's settings, from the worker's.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    pub transform: TransformOptions,
    pub csv: CsvOptions,
    pub max_input_bytes: u64,
    pub metrics_namespace: String,
    /// How long a worker's claim to put a file's completion event holds: after it, the worker
    /// is taken to have stopped and the event is put again (the queue's visibility timeout,
    /// after which SQS hands a stopped worker's message to another).
    pub announcement_timeout: std::time::Duration,
}

impl From<&WorkerConfig> for JobSettings {
    fn from(config: &WorkerConfig) -> Self {
        Self {
            transform: config.transform,
            csv: config.csv,
            max_input_bytes: config.max_input_bytes,
            metrics_namespace: config.metrics_namespace.clone(),
            announcement_timeout: config.visibility_timeout,
        }
    }
}

/// What the worker needs to run jobs.
pub struct JobRunner<S: ObjectStore, E> {
    pub transfers: Transfers<S>,
    pub models: ModelCache<S>,
    pub events: E,
    pub settings: JobSettings,
    pub worker_id: String,
}

/// Why a job did not get to its outputs.
pub(crate) enum Stop<S: ObjectStore> {
    /// The file's own fault: it gets a failed report (and its errors file, when it has one).
    File {
        reason: String,
        summary: Box<TransformSummary>,
        errors: Option<Staged<S>>,
    },
    Unfinished(Unfinished),
}

/// A job that ends without a report.
pub(crate) enum Unfinished {
    Superseded(String),
    Retry(RetryCause, String),
}

impl<S: ObjectStore> From<Unfinished> for Stop<S> {
    fn from(unfinished: Unfinished) -> Self {
        Stop::Unfinished(unfinished)
    }
}

impl<S: ObjectStore> Stop<S> {
    pub(crate) fn file(reason: impl Into<String>) -> Self {
        Stop::File { reason: reason.into(), summary: Box::default(), errors: None }
    }
}

/// A transform whose outputs are staged, not yet visible.
struct Transformed<S: ObjectStore> {
    summary: TransformSummary,
    data: Staged<S>,
    errors: Option<Staged<S>>,
}

/// A published job: its status, reason, rows and outputs.
type Published = (JobStatus, Option<String>, TransformSummary, ReportOutputs);

/// A file's failure, with what was learnt before it.
type FileFailure<S> = (String, TransformSummary, Option<Staged<S>>);

impl<S: ObjectStore, E: CompletionEvents> JobHandler for JobRunner<S, E> {
    async fn run(&self, job: &JobMessage, attempt: u32) -> JobOutcome {
        let result = match &job.split {
            Some(Split::Shard(shard)) => crate::shard::run(self, job, *shard, attempt).await,
            Some(Split::Whole { reason }) => {
                let not_split = SplitReport::NotSplit { reason: reason.clone() };
                self.complete(job, attempt, Some(not_split)).await.map(MessageEnd::Reported)
            }
            None => self.complete(job, attempt, None).await.map(MessageEnd::Reported),
        };
        match result {
            // An event that could not be put is put on the message's next try: never lost.
            Ok(MessageEnd::Reported(report)) if !self.announce(job, &report).await => JobOutcome::Retry {
                cause: RetryCause::Transient,
                reason: "the file is done but its completion event could not be put".into(),
            },
            Ok(MessageEnd::Reported(report)) => JobOutcome::Reported(Box::new(report)),
            Ok(MessageEnd::Announced(report)) => JobOutcome::Reported(Box::new(report)),
            Ok(MessageEnd::Done(what)) => JobOutcome::ShardDone(what),
            Err(Unfinished::Superseded(reason)) => JobOutcome::Superseded(reason),
            Err(Unfinished::Retry(cause, reason)) => JobOutcome::Retry { cause, reason },
        }
    }
}

/// How a message of a (possibly split) file ended, when it did.
pub(crate) enum MessageEnd {
    /// The file's report, to announce.
    Reported(JobReport),
    /// The file's report, announced already.
    Announced(JobReport),
    /// This shard's part is done; another message reports the file.
    Done(String),
}

impl<S: ObjectStore, E: CompletionEvents> JobRunner<S, E> {
    /// Transforms the whole file, publishes and reports.
    pub(crate) async fn complete(
        &self,
        job: &JobMessage,
        attempt: u32,
        split: Option<SplitReport>,
    ) -> Result<JobReport, Unfinished> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut model = ModelInfo { uri: job.model.to_string(), name: None, version: None, sha256: None };
        let result = match self.transform(job, &mut model).await {
            Ok(done) => Ok(done),
            Err(Stop::File { reason, summary, errors }) => Err((reason, *summary, errors)),
            Err(Stop::Unfinished(unfinished)) => return Err(unfinished),
        };
        let (status, reason, summary, outputs) = self.publish(job, result).await?;
        let report = JobReport {
            status,
            reason,
            input: job.input.clone(),
            outputs,
            rows: row_counts(&summary),
            model,
            started_at,
            finished_at: Utc::now(),
            duration_seconds: clock.elapsed().as_secs_f64(),
            worker_id: self.worker_id.clone(),
            attempt,
            first_errors: summary.first_errors,
            split,
        };
        self.write_report(job, &report).await?;
        Ok(report)
    }

    pub(crate) async fn write_report(&self, job: &JobMessage, report: &JobReport) -> Result<(), Unfinished> {
        let body = serde_json::to_vec_pretty(report).expect("a report always serialises");
        let report_uri = output_uri(job, &self.output_keys(job).report);
        self.transfers.put(&report_uri, body.into(), "application/json").await.map_err(output_failure)
    }

    /// Runs the model over the input into staged outputs.
    async fn transform(&self, job: &JobMessage, info: &mut ModelInfo) -> Result<Transformed<S>, Stop<S>> {
        let kind = input_kind(job, &self.settings).map_err(Stop::file)?;
        let resolved = self.resolve(&job.model).await?;
        (info.uri, info.name, info.version) = (resolved.uri.clone(), resolved.name.clone(), resolved.version);
        let model = self.models.get(&resolved.uri).await.map_err(|e| Stop::from(model_failure(e)))?;
        info.sha256 = Some(model.model.sha256.clone());
        let input = InputSpec {
            uri: input_uri(job),
            etag: Some(job.input.etag.clone()),
            version_id: job.input.version_id.clone(),
        };
        let keys = self.output_keys(job);
        let content_type = match kind.format {
            DataFormat::ImageArchive => "application/x-ndjson",
            DataFormat::Image => "application/json",
            table => table.output(self.settings.transform.output_format).content_type(),
        };
        let (mut data_writer, data_upload) = self.transfers.upload(output_uri(job, &keys.data), content_type);
        let (mut errors_writer, errors_upload) = self.transfers.upload(output_uri(job, &keys.errors), "text/csv");
        // A stream (a download, pumped into the engine), or a Parquet file read by ranged GETs.
        let (download, engine_input) = if kind.format == DataFormat::Parquet {
            let object = RangedObject::new(self.transfers.clone(), input.clone(), job.input.size);
            (None, EngineInput::Ranges(object))
        } else {
            let download = self.transfers.open_input(&input).await.map_err(|e| input_failure(&input.uri, e))?;
            let (chunks, reader) = input_channel();
            (Some((download, chunks)), EngineInput::Stream(reader))
        };
        let ranged = match &engine_input {
            EngineInput::Ranges(object) => Some(object.clone()),
            EngineInput::Stream(_) => None,
        };
        let options = self.settings.transform;
        let engine_model = Arc::clone(&model);
        let engine = tokio::task::spawn_blocking(move || {
            let (model, progress) = (&engine_model.model, &mut |_| {});
            let result = match engine_input {
                EngineInput::Stream(reader) => {
                    transform(reader, kind, &mut data_writer, &mut errors_writer, model, &options, progress)
                }
                EngineInput::Ranges(file) => {
                    transform_parquet(Arc::new(file), &mut data_writer, &mut errors_writer, model, &options, progress)
                }
            };
            // An output is finished (staged) only when complete; a dropped writer abandons it.
            let keep_errors = match &result {
                Ok(summary) => summary.bad_rows > 0,
                Err(error) => matches!(error, TransformError::TooManyBadRows { .. }),
            };
            let errors_finished = if keep_errors { errors_writer.finish() } else { Ok(()) };
            let data_finished = if result.is_ok() { data_writer.finish() } else { Ok(()) };
            (result, data_finished.and(errors_finished))
        });
        let download = async move {
            match download {
                Some((download, chunks)) => download.pump(chunks).await.map(Some),
                None => Ok(None),
            }
        };
        let (downloaded, engine, data, errors) =
            tokio::join!(download, engine, data_upload.staged(), errors_upload.staged());

        // A failed download (or ranged read) explains whatever the engine saw after it.
        let downloaded = downloaded.map_err(|e| input_failure(&input.uri, e))?;
        if let Some(failure) = ranged.as_ref().and_then(RangedObject::take_failure) {
            return Err(input_failure(&input.uri, failure));
        }
        let (result, _finished) = engine.map_err(|join| {
            Stop::from(Unfinished::Retry(RetryCause::Transient, format!("the transform stopped unexpectedly: {join}")))
        })?;
        match result {
            Ok(summary) => {
                let data = data.map_err(|e| Stop::from(upload_failure(e)))?;
                let errors =
                    if summary.bad_rows > 0 { Some(errors.map_err(|e| Stop::from(upload_failure(e)))?) } else { None };
                tracing::info!(
                    rows_in = summary.rows_in,
                    rows_out = summary.rows_out,
                    bad_rows = summary.bad_rows,
                    bytes = downloaded.as_ref().map(|d| d.bytes),
                    bytes_fetched = ranged.as_ref().map(RangedObject::bytes_read),
                    verified_against_etag = downloaded.as_ref().map(|d| d.verified),
                    "transform complete"
                );
                Ok(Transformed { summary, data, errors })
            }
            Err(error) if error.is_permanent() => {
                let summary = match &error {
                    TransformError::TooManyBadRows { summary, .. } => Box::new(summary.clone()),
                    _ => Box::default(),
                };
                Err(Stop::File { reason: format!("{}: {error}", input.uri), summary, errors: errors.ok() })
            }
            // An I/O error the download does not explain: an upload failed.
            Err(error) => Err(Stop::from(
                [data.err(), errors.err()]
                    .into_iter()
                    .flatten()
                    .find(|e| !matches!(e, UploadError::Abandoned))
                    .map(upload_failure)
                    .unwrap_or_else(|| {
                        Unfinished::Retry(RetryCause::Transient, format!("reading or writing failed: {error}"))
                    }),
            )),
        }
    }

    /// The exact model the job runs: the latest version is resolved now, and recorded.
    pub(crate) async fn resolve(&self, source: &ModelSource) -> Result<ResolvedModel, Stop<S>> {
        match source {
            ModelSource::File { uri } => Ok(ResolvedModel::file(uri.clone())),
            ModelSource::Repository { root, requested, default } => {
                let repository = ModelRepository::new(self.models.files(), root).map_err(resolve_failure)?;
                let resolved =
                    repository.resolve(requested.as_ref(), default.as_ref()).await.map_err(resolve_failure)?;
                tracing::info!(model = resolved.name.as_deref().unwrap_or(""), version = resolved.version,
                    uri = %resolved.uri, "model resolved");
                Ok(resolved)
            }
        }
    }

    /// Makes the outputs visible, unless the input changed meanwhile; removes earlier outputs
    /// of this key that the new report would contradict.
    async fn publish(
        &self,
        job: &JobMessage,
        result: Result<Transformed<S>, FileFailure<S>>,
    ) -> Result<Published, Unfinished> {
        let input = input_uri(job);
        // The outputs must describe the object the bucket holds now. A job for an older version
        // that ends after a newer one's must not overwrite its outputs: checked here, the last
        // moment before anything becomes visible (and the report is written last of all).
        let state = self.transfers.object_state(&input, &job.input.etag).await;
        let (status, reason, summary, data, errors) = match (state, result) {
            (Err(error), _) => return Err(access_or_transient(error, "the input bucket")),
            (Ok(ObjectState::Replaced), _) => {
                return Err(Unfinished::Superseded(format!("{input} was replaced while it was processed")));
            }
            // Nothing to describe any more: whatever was made of it is dropped (and aborted).
            (Ok(ObjectState::Deleted), Ok(_)) => {
                let reason = format!("{input} was deleted while it was processed");
                (JobStatus::Failed, Some(reason), TransformSummary::default(), None, None)
            }
            (Ok(_), Ok(done)) => (JobStatus::Succeeded, None, done.summary, Some(done.data), done.errors),
            (Ok(_), Err((reason, summary, errors))) => (JobStatus::Failed, Some(reason), summary, None, errors),
        };
        let keys = self.output_keys(job);
        let (data_uri, errors_uri) = (output_uri(job, &keys.data), output_uri(job, &keys.errors));
        let mut outputs = ReportOutputs::default();
        match data {
            Some(data) => {
                data.commit().await.map_err(output_failure)?;
                outputs.data = Some(data_uri.to_string());
            }
            None => self.transfers.delete(&data_uri).await.map_err(output_failure)?,
        }
        match errors {
            Some(errors) => {
                errors.commit().await.map_err(output_failure)?;
                outputs.errors = Some(errors_uri.to_string());
            }
            None => self.transfers.delete(&errors_uri).await.map_err(output_failure)?,
        }
        Ok((status, reason, summary, outputs))
    }

    /// The keys of the job's outputs: a Parquet output's name ends `.parquet`, so that readers
    /// that pick files by extension (DuckDB's and polars' globs) find it.
    pub(crate) fn output_keys(&self, job: &JobMessage) -> OutputKeys {
        let keys = job.output_keys();
        if let Ok(kind) = FileKind::from_name(&job.input.key, None, self.settings.csv)
            && !kind.format.is_image()
            && kind.format.output(self.settings.transform.output_format) == TableFormat::Parquet
        {
            return keys.with_parquet_data();
        }
        keys
    }

    /// Puts the completion event; a failure is logged and counted, the file stays done. `true`
    /// when it was put.
    pub(crate) async fn announce(&self, job: &JobMessage, report: &JobReport) -> bool {
        let event_id = job.event_id();
        let put = retry(self.transfers.retry_policy(), || self.events.file_finished(report, &event_id)).await;
        if let Err(error) = &put {
            tracing::error!(%error, "could not put the completion event");
            MetricRecord::new(&self.settings.metrics_namespace)
                .metric("CompletionEventFailures", Unit::Count, 1.0)
                .emit();
        }
        put.is_ok()
    }
}

/// What the engine reads: a download pumped into it as a stream, or a Parquet file that it reads
/// by ranged GETs.
enum EngineInput<S: ObjectStore> {
    Stream(ChannelReader),
    Ranges(RangedObject<S>),
}

pub(crate) fn input_uri(job: &JobMessage) -> S3Uri {
    S3Uri { bucket: job.input.bucket.clone(), key: job.input.key.clone() }
}

pub(crate) fn output_uri(job: &JobMessage, key: &str) -> S3Uri {
    S3Uri { bucket: job.output.bucket.clone(), key: key.to_owned() }
}

/// Reading the input failed.
pub(crate) fn input_failure<S: ObjectStore>(input: &S3Uri, error: StoreError) -> Stop<S> {
    if error.is_precondition_failed() {
        Unfinished::Superseded(format!("{input} was replaced since its upload event")).into()
    } else if error.is_not_found() {
        Stop::file(format!("{input} no longer exists ({error})"))
    } else if error.is_kms() || error.is_access_denied() || error.is_retryable() {
        access_or_transient(error, "the input bucket").into()
    } else {
        Stop::file(error.to_string())
    }
}

/// Writing an output or the report failed.
pub(crate) fn output_failure(error: StoreError) -> Unfinished {
    if error.is_not_found() {
        Unfinished::Retry(RetryCause::Operator, format!("{error}; check the output bucket"))
    } else {
        access_or_transient(error, "the output bucket")
    }
}

/// A refusal only the operator can lift, or a failure that may pass.
pub(crate) fn access_or_transient(error: StoreError, place: &str) -> Unfinished {
    if error.is_kms() {
        Unfinished::Retry(
            RetryCause::Operator,
            format!("{error}; check the KMS key of {place} and the worker's grant on it"),
        )
    } else if error.is_access_denied() {
        Unfinished::Retry(RetryCause::Operator, format!("{error}; check the worker's permissions on {place}"))
    } else {
        Unfinished::Retry(RetryCause::Transient, error.to_string())
    }
}

pub(crate) fn upload_failure(error: UploadError) -> Unfinished {
    match error {
        UploadError::Store(error) => output_failure(error),
        UploadError::Abandoned => Unfinished::Retry(RetryCause::Transient, error.to_string()),
    }
}

/// No model could be chosen: the input's fault when it names a model or version that is not
/// there, the operator's when the deployment's default or the repository itself is wrong.
pub(crate) fn resolve_failure<S: ObjectStore>(error: ResolveError) -> Stop<S> {
    match error {
        error if error.is_the_inputs() => Stop::file(error.to_string()),
        ResolveError::Storage(error) => model_failure(error).into(),
        error => Unfinished::Retry(RetryCause::Operator, error.to_string()).into(),
    }
}

/// Loading the deployment's model failed: only the operator can fix that, unless it may pass.
pub(crate) fn model_failure(error: ModelLoadError) -> Unfinished {
    let cause = if error.is_transient() { RetryCause::Transient } else { RetryCause::Operator };
    Unfinished::Retry(cause, error.to_string())
}

/// The input's format, or why the job cannot be attempted at all, judged from the message.
pub(crate) fn input_kind(job: &JobMessage, settings: &JobSettings) -> Result<FileKind, String> {
    let uri = input_uri(job);
    let kind = FileKind::from_name(&job.input.key, None, settings.csv).map_err(|e| format!("{uri}: {e}"))?;
    if job.input.size > settings.max_input_bytes {
        return Err(format!(
            "{uri} is {} bytes, larger than the limit of {} bytes (MAX_INPUT_BYTES)",
            job.input.size, settings.max_input_bytes
        ));
    }
    Ok(kind)
}

/// A run's row counts, as its report states them.
pub(crate) fn row_counts(summary: &TransformSummary) -> RowCounts {
    RowCounts { input: summary.rows_in, output: summary.rows_out, bad: summary.bad_rows, truncated: summary.truncated }
}
