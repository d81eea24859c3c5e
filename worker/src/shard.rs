//! One shard of a big file ([`shared::shards`]): its rows through the model into staged objects;
//! then, from whichever shard finds every shard done, the file's one output.
//!
//! - **Stage.** The shard reads its byte range (every request pinned to the input's ETag),
//!   keeps the rows that start in it ([`crate::engine::shard`]; for Parquet, the row groups that
//!   do, read by ranged GETs), and writes its predictions and rejected rows to objects of its own
//!   under the staging prefix. Then it records what it did
//!   (`done/<index>.json`). A shard redelivered after a crash does the same again, overwriting
//!   its own objects with the same bytes; the others' finished work is untouched.
//! - **Assemble.** The shard that sees all shards done builds the output as an open multipart
//!   upload: each staged output copied inside S3 (`UploadPartCopy`), the few MiB around a small
//!   one uploaded again so that every part but the last has S3's minimum of 5 MiB. A Parquet
//!   output is the shards' row-group bytes so copied, between the magic bytes and a new footer
//!   ([`crate::engine::formats::parquet::join`]). The errors file is rewritten with whole-file
//!   line (or row) numbers. The bad-row limit is checked on the whole.
//! - **Decide once.** The outcome (the report and the uploads to complete) is written as the
//!   file's claim with `If-None-Match: *`: of assemblers racing, one wins, the others abort their
//!   uploads. Whoever reads the claim carries it out (idempotently), so one that dies after
//!   writing it leaves nothing undone. A shard that finds the file cannot be split claims it
//!   whole and runs it as one job.

use crate::models::LoadedModel;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use shared::report::{JobReport, JobStatus, ModelInfo, ReportOutputs, RowError, ShardReport, SplitReport};
use shared::shards::{Announcing, Assembled, Claim, Shard, ShardDone, Staging};
use shared::{JobMessage, S3Uri};

use crate::completions::CompletionEvents;
use crate::concatenate::{Source, concatenate};
use crate::engine::formats::parquet::join::{MAGIC, join, read_footer};
use crate::engine::shard::{OwnedRows, Unsplittable, append_errors, first_row_line, read_from};
use crate::engine::{
    DataFormat, FileKind, PARQUET_ROW_ERROR_HEADER, ROW_ERROR_HEADER, RangeRead, TableFormat, TransformError,
    TransformSummary, check_whole_file, transform_parquet_shard, transform_shard,
};
use crate::job::{
    JobRunner, MessageEnd, RetryCause, Stop, Unfinished, access_or_transient, input_failure, input_kind, input_uri,
    model_failure, output_failure, output_uri, row_counts, upload_failure,
};
use crate::ranged::RangedObject;
use crate::store::{ObjectStore, StoreError};
use crate::transfer::{ChannelReader, InputSpec, ObjectState, Transfers, WINDOW, input_channel};

const STAGED_TYPE: &str = "application/octet-stream";

/// Why a shard did not stage its part.
enum ShardStop {
    /// The file cannot be split: it runs whole.
    Unsplittable(String),
    /// The file's own fault: the file fails.
    File(String),
    Unfinished(Unfinished),
}

impl From<Unfinished> for ShardStop {
    fn from(unfinished: Unfinished) -> Self {
        ShardStop::Unfinished(unfinished)
    }
}

impl<S: ObjectStore> From<Stop<S>> for ShardStop {
    fn from(stop: Stop<S>) -> Self {
        match stop {
            Stop::File { reason, .. } => ShardStop::File(reason),
            Stop::Unfinished(unfinished) => ShardStop::Unfinished(unfinished),
        }
    }
}

/// One shard's message, to its end; see the module documentation.
pub(crate) async fn run<S: ObjectStore, E: CompletionEvents>(
    runner: &JobRunner<S, E>,
    job: &JobMessage,
    shard: Shard,
    attempt: u32,
) -> Result<MessageEnd, Unfinished> {
    let file = File { runner, job, staging: Staging::for_job(job), shard, attempt };
    // Decided already: this message is late, or repeated.
    if let Some(claim) = file.claim().await? {
        return file.follow(claim).await;
    }
    let started_at = Utc::now();
    let clock = Instant::now();
    let staged = match file.stage().await {
        Ok(staged) => staged,
        Err(ShardStop::Unsplittable(reason)) => {
            tracing::warn!(%reason, "the file cannot be split: running it whole");
            return file.decide(Claim::Whole { shard: shard.index, reason }).await;
        }
        Err(ShardStop::File(reason)) => {
            // Failed before any shard's part was known: the report names the split, not the parts.
            let split = SplitReport::Shards {
                count: shard.count,
                shards: Vec::new(),
                worker_seconds: 0.0,
                assembly_seconds: 0.0,
            };
            let report = file.report(JobStatus::Failed, Some(reason), TransformSummary::default(), split, started_at);
            return file.decide(Claim::Publish { report: Box::new(report), data: None, errors: None }).await;
        }
        Err(ShardStop::Unfinished(Unfinished::Superseded(reason))) => {
            // The file was uploaded again: what the other shards of this version staged is not
            // needed either.
            file.clean_up().await;
            return Err(Unfinished::Superseded(reason));
        }
        Err(ShardStop::Unfinished(unfinished)) => return Err(unfinished),
    };
    let done = ShardDone {
        shard,
        model: staged.model,
        lines: staged.lines,
        rows: row_counts(&staged.summary),
        first_errors: staged.summary.first_errors,
        output_bytes: staged.output_bytes,
        errors_bytes: staged.errors_bytes,
        started_at,
        seconds: clock.elapsed().as_secs_f64(),
        worker_id: runner.worker_id.clone(),
        attempt,
    };
    let body = serde_json::to_vec(&done).expect("a shard's record serialises");
    file.transfers()
        .put(&file.at(file.staging.done(shard.index)), body.into(), "application/json")
        .await
        .map_err(output_failure)?;
    tracing::info!(
        shard = shard.index,
        rows = done.rows.input,
        lines = done.lines,
        seconds = done.seconds,
        "shard staged"
    );
    // A decision taken meanwhile makes this shard's work unneeded.
    if let Some(claim) = file.claim().await? {
        return file.follow(claim).await;
    }
    let Some(finished) = file.finished_shards().await? else {
        return Ok(MessageEnd::Done(format!(
            "shard {} of {} staged; the last shard to finish assembles the file",
            shard.index + 1,
            shard.count
        )));
    };
    file.assemble(finished).await
}

/// What a shard's engine reads.
enum ShardInput<S: ObjectStore> {
    /// Text, streamed from the shard's range: CSV (`csv`) or JSON Lines; a shard after the first
    /// is told the file's first row.
    Lines { reader: ChannelReader, csv: bool, first_row: Option<Vec<u8>> },
    /// A Parquet file, read by ranged GETs.
    RowGroups(RangedObject<S>),
}

/// A staged shard.
struct Staged {
    model: ModelInfo,
    summary: TransformSummary,
    lines: u64,
    output_bytes: u64,
    errors_bytes: u64,
}

/// The file a shard belongs to, from that shard's message.
struct File<'a, S: ObjectStore, E> {
    runner: &'a JobRunner<S, E>,
    job: &'a JobMessage,
    staging: Staging,
    shard: Shard,
    attempt: u32,
}

impl<S: ObjectStore, E: CompletionEvents> File<'_, S, E> {
    fn transfers(&self) -> &Transfers<S> {
        &self.runner.transfers
    }

    fn at(&self, key: String) -> S3Uri {
        S3Uri { bucket: self.staging.bucket.clone(), key }
    }

    fn input(&self) -> InputSpec {
        InputSpec {
            uri: input_uri(self.job),
            etag: Some(self.job.input.etag.clone()),
            version_id: self.job.input.version_id.clone(),
        }
    }

    async fn claim(&self) -> Result<Option<Claim>, Unfinished> {
        self.transfers().read_json(&self.at(self.staging.claim())).await.map_err(output_failure)
    }

    /// Writes `claim` unless the file has one, then carries out whichever is the file's.
    async fn decide(&self, claim: Claim) -> Result<MessageEnd, Unfinished> {
        let body = serde_json::to_vec(&claim).expect("a claim serialises");
        let won = self
            .transfers()
            .put_if_absent(&self.at(self.staging.claim()), body.into(), "application/json")
            .await
            .map_err(output_failure)?;
        if won {
            return self.follow(claim).await;
        }
        // Another shard decided first: what this one prepared is not needed.
        if let Claim::Publish { data, errors, .. } = claim {
            let keys = self.runner.output_keys(self.job);
            self.abandon(&keys.data, data).await;
            self.abandon(&keys.errors, errors).await;
        }
        match self.claim().await? {
            Some(theirs) => self.follow(theirs).await,
            None => Err(Unfinished::Retry(RetryCause::Transient, "the file's claim vanished".into())),
        }
    }

    /// Carries out the file's decision.
    async fn follow(&self, claim: Claim) -> Result<MessageEnd, Unfinished> {
        match claim {
            Claim::Whole { shard, reason } if shard == self.shard.index => {
                let not_split = SplitReport::NotSplit { reason: format!("the file cannot be split: {reason}") };
                let report = self.runner.complete(self.job, self.attempt, Some(not_split)).await?;
                self.clean_up().await;
                Ok(MessageEnd::Reported(report))
            }
            Claim::Whole { shard, .. } => {
                self.drop_own().await;
                Ok(MessageEnd::Done(format!("the file runs whole, in the message of shard {}", shard + 1)))
            }
            Claim::Publish { report, data, errors } => {
                let announced = self.publish(&report, data, errors).await?;
                self.drop_own().await;
                Ok(if announced {
                    MessageEnd::Announced(*report)
                } else {
                    MessageEnd::Done("the file was published from another shard's message".into())
                })
            }
        }
    }

    /// Makes the claim's outputs visible and writes its report (again, if a worker died after
    /// doing so); puts the completion event unless its marker says it was put. `true` when this
    /// call put it. The marker is written after the event: a worker that dies between the two
    /// leaves the event to be put again (same event id), never lost.
    async fn publish(
        &self,
        report: &JobReport,
        data: Option<Assembled>,
        errors: Option<Assembled>,
    ) -> Result<bool, Unfinished> {
        let announced = self.at(self.staging.announced());
        match self.transfers().store().head(&announced, None).await {
            Ok(_) => return Ok(false),
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(output_failure(error)),
        }
        // A late message must not publish an older version of the key over a newer one's outputs.
        let input = input_uri(self.job);
        let keys = self.runner.output_keys(self.job);
        match self.transfers().object_state(&input, &self.job.input.etag).await {
            Ok(ObjectState::Replaced) => {
                self.abandon(&keys.data, data).await;
                self.abandon(&keys.errors, errors).await;
                self.clean_up().await;
                return Err(Unfinished::Superseded(format!("{input} was replaced before its output was published")));
            }
            Ok(_) => {}
            Err(error) => return Err(access_or_transient(error, "the input bucket")),
        }
        self.complete(&keys.data, data).await?;
        self.complete(&keys.errors, errors).await?;
        self.runner.write_report(self.job, report).await?;
        if !self.put_event(report, &announced).await? {
            // Another worker put it, and recorded it, meanwhile.
            return Ok(false);
        }
        self.transfers().put(&announced, Bytes::new(), "text/plain").await.map_err(output_failure)?;
        self.clean_up().await;
        Ok(true)
    }

    /// Puts the file's completion event, once a claim to do so is this worker's: one worker
    /// puts it while others wait, and a claim older than the announcement timeout is a stopped
    /// worker's, taken over (its event may then be put twice, under the same event id). `false`
    /// when another worker put it and recorded that it did (at `announced`) meanwhile.
    async fn put_event(&self, report: &JobReport, announced: &S3Uri) -> Result<bool, Unfinished> {
        let uri = self.at(self.staging.announcing());
        let now = Utc::now();
        let claim = Announcing { worker_id: self.runner.worker_id.clone(), since: now };
        let body = Bytes::from(serde_json::to_vec(&claim).expect("a claim serialises"));
        let transfers = self.transfers();
        let recorded = || async {
            match transfers.store().head(announced, None).await {
                Ok(_) => Ok(true),
                Err(error) if error.is_not_found() => Ok(false),
                Err(error) => Err(output_failure(error)),
            }
        };
        if transfers.put_if_absent(&uri, body.clone(), "application/json").await.map_err(output_failure)? {
            // A claim is removed only once its event is recorded (or could not be put): a claim
            // this worker could make may follow another's that was recorded.
            if recorded().await? {
                let _ = transfers.delete(&uri).await;
                return Ok(false);
            }
        } else {
            let theirs: Option<Announcing> = transfers.read_json(&uri).await.map_err(output_failure)?;
            if recorded().await? {
                return Ok(false);
            }
            let timeout = chrono::Duration::from_std(self.runner.settings.announcement_timeout).unwrap_or_default();
            if let Some(theirs) = theirs
                && theirs.worker_id != claim.worker_id
                && now - theirs.since < timeout
            {
                return Err(Unfinished::Retry(
                    RetryCause::Transient,
                    format!("{} is putting the file's completion event", theirs.worker_id),
                ));
            }
            transfers.put(&uri, body, "application/json").await.map_err(output_failure)?;
        }
        if self.runner.announce(self.job, report).await {
            Ok(true)
        } else {
            // Another try of some message puts it.
            let _ = transfers.delete(&uri).await;
            Err(Unfinished::Retry(RetryCause::Transient, "the completion event could not be put".into()))
        }
    }

    /// Completes an assembled output (a completed one again: S3 answers `NoSuchUpload` once
    /// it is, and the object is there), or removes an earlier output the report would contradict.
    async fn complete(&self, key: &str, assembled: Option<Assembled>) -> Result<(), Unfinished> {
        let uri = output_uri(self.job, key);
        let transfers = self.transfers();
        let result = match assembled {
            None => transfers.delete(&uri).await,
            Some(Assembled::Empty) => transfers.put(&uri, Bytes::new(), "text/plain").await,
            Some(Assembled::Parts { upload_id, parts }) => {
                match transfers.complete_multipart(&uri, &upload_id, &parts).await {
                    Err(error) if error.is_not_found() && transfers.store().head(&uri, None).await.is_ok() => Ok(()),
                    other => other,
                }
            }
        };
        result.map_err(output_failure)
    }

    async fn abandon(&self, key: &str, assembled: Option<Assembled>) {
        if let Some(Assembled::Parts { upload_id, .. }) = assembled {
            self.transfers().abort_multipart(&output_uri(self.job, key), &upload_id).await;
        }
    }

    /// Removes this shard's staged objects.
    async fn drop_own(&self) {
        let index = self.shard.index;
        for key in [self.staging.output(index), self.staging.errors(index), self.staging.done(index)] {
            if let Err(error) = self.transfers().delete(&self.at(key)).await {
                tracing::warn!(%error, "could not remove a staged object; the lifecycle rule will");
            }
        }
    }

    /// Removes the staged objects (the claim to put the event among them, once its marker is
    /// there), keeping the claim (late messages read it) and the announcement's marker; the
    /// lifecycle rule removes those.
    async fn clean_up(&self) {
        let keep = [self.staging.claim(), self.staging.announced()];
        let listed = match self.transfers().list(&self.staging.bucket, &self.staging.prefix).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "could not list the staged objects; the lifecycle rule removes them");
                return;
            }
        };
        for object in listed.into_iter().filter(|o| !keep.contains(&o.key)) {
            if let Err(error) = self.transfers().delete(&self.at(object.key)).await {
                tracing::warn!(%error, "could not remove a staged object; the lifecycle rule will");
            }
        }
    }

    /// The model every shard of the file runs: the first shard to resolve it records it.
    /// The pin holds the model's bytes (their SHA-256), not only its URI: a model replaced in
    /// place while the file runs fails the file rather than letting its shards run two models.
    async fn pinned_model(&self) -> Result<(ModelInfo, Arc<LoadedModel>), ShardStop> {
        let uri = self.at(self.staging.model());
        let pinned: Option<ModelInfo> = self.transfers().read_json(&uri).await.map_err(output_failure)?;
        let pinned = match pinned {
            Some(info) => info,
            None => {
                let resolved = self.runner.resolve(&self.job.model).await?;
                let model =
                    self.runner.models.get(&resolved.uri).await.map_err(|e| ShardStop::from(model_failure(e)))?;
                let info = ModelInfo {
                    uri: resolved.uri,
                    name: resolved.name,
                    version: resolved.version,
                    sha256: Some(model.model.sha256.clone()),
                };
                let body = serde_json::to_vec(&info).expect("model info serialises");
                if self
                    .transfers()
                    .put_if_absent(&uri, body.into(), "application/json")
                    .await
                    .map_err(output_failure)?
                {
                    return Ok((info, model));
                }
                let pinned = self.transfers().read_json(&uri).await.map_err(output_failure)?;
                pinned.ok_or_else(|| Unfinished::Retry(RetryCause::Transient, "the pinned model vanished".into()))?
            }
        };
        let model = self.runner.models.get(&pinned.uri).await.map_err(|e| ShardStop::from(model_failure(e)))?;
        match &pinned.sha256 {
            Some(sha256) if *sha256 != model.model.sha256 => Err(ShardStop::File(format!(
                "the model {} was replaced while the file was processed (sha256 {}… when the file started, {}… now), and every part of a file runs one model: upload the file again to run it with the new model",
                pinned.uri,
                &sha256[..sha256.len().min(12)],
                &model.model.sha256[..model.model.sha256.len().min(12)]
            ))),
            _ => Ok((pinned, model)),
        }
    }

    /// Runs the shard's rows into its staged objects: the lines that start in its range (text),
    /// or the row groups that do (Parquet, read by ranged GETs).
    async fn stage(&self) -> Result<Staged, ShardStop> {
        let (job, shard) = (self.job, self.shard);
        let kind = input_kind(job, &self.runner.settings).map_err(ShardStop::File)?;
        // For text: whether it is CSV (JSON Lines otherwise).
        let csv = match kind {
            FileKind { gzip: true, .. } => return Err(ShardStop::Unsplittable(Unsplittable::Gzip.to_string())),
            FileKind { format: DataFormat::Csv { .. }, .. } => Some(true),
            FileKind { format: DataFormat::JsonLines, .. } => Some(false),
            FileKind { format: DataFormat::Parquet, .. } => None,
            _ => return Err(ShardStop::Unsplittable("only tables are split".into())),
        };
        let (info, model) = self.pinned_model().await?;
        let input = self.input();
        let (engine_input, chunks) = match csv {
            Some(csv) => {
                let first_row = match shard.index {
                    0 => None,
                    _ => Some(self.first_row(&input, !csv).await?),
                };
                let (chunks, reader) = input_channel();
                (ShardInput::Lines { reader, csv, first_row }, Some(chunks))
            }
            None => {
                let object = RangedObject::new(self.transfers().clone(), input.clone(), job.input.size);
                (ShardInput::RowGroups(object), None)
            }
        };
        let ranged = match &engine_input {
            ShardInput::RowGroups(object) => Some(object.clone()),
            ShardInput::Lines { .. } => None,
        };

        let (mut data_writer, data_upload) =
            self.transfers().upload(self.at(self.staging.output(shard.index)), STAGED_TYPE);
        let (mut errors_writer, errors_upload) =
            self.transfers().upload(self.at(self.staging.errors(shard.index)), "text/csv");
        let options = self.runner.settings.transform;
        let engine_model = Arc::clone(&model);
        let engine = tokio::task::spawn_blocking(move || {
            let (model, data, errors) = (&engine_model.model, &mut data_writer, &mut errors_writer);
            // The lines the shard owned; for Parquet, its rows.
            let (result, lines) = match engine_input {
                ShardInput::Lines { reader, csv, first_row } => {
                    let (rows, lines) = OwnedRows::new(reader, shard.start, shard.end, csv);
                    let result =
                        transform_shard(rows, kind.format, data, errors, model, &options, first_row.as_deref());
                    (result, Some(lines.get()))
                }
                ShardInput::RowGroups(object) => {
                    let (file, bytes) = (Arc::new(object), shard.start..shard.end);
                    (transform_parquet_shard(file, bytes, shard.index == 0, data, errors, model, &options), None)
                }
            };
            let result = result.and_then(|summary| {
                let errors_finished = if summary.bad_rows > 0 { errors_writer.finish() } else { Ok(()) };
                data_writer.finish().and(errors_finished).map_err(TransformError::Io)?;
                Ok(summary)
            });
            (result, lines)
        });
        // Text: the range, and a window past it for its last row (more, if that row needs it).
        let download = async {
            match chunks {
                Some(chunks) => {
                    let from = read_from(shard.start);
                    self.transfers().pump_range(&input, from, shard.end + WINDOW, job.input.size, chunks).await?;
                    Ok(())
                }
                None => Ok(()),
            }
        };
        let (downloaded, engine, data, errors) =
            tokio::join!(download, engine, data_upload.staged(), errors_upload.staged());
        downloaded.map_err(|e| input_failure::<S>(&input.uri, e))?;
        if let Some(failure) = ranged.as_ref().and_then(RangedObject::take_failure) {
            return Err(input_failure::<S>(&input.uri, failure).into());
        }
        let (result, lines) = engine.map_err(|join| {
            Unfinished::Retry(RetryCause::Transient, format!("the transform stopped unexpectedly: {join}"))
        })?;
        let summary = match result {
            Ok(summary) => summary,
            Err(TransformError::Io(error)) if Unsplittable::from_io(&error).is_some() => {
                return Err(ShardStop::Unsplittable(error.to_string()));
            }
            Err(error) if error.is_permanent() => {
                return Err(ShardStop::File(format!(
                    "{} (shard {} of {}, bytes {}-{}): {error}",
                    input.uri,
                    shard.index + 1,
                    shard.count,
                    shard.start,
                    shard.end
                )));
            }
            Err(error) => {
                let upload = [data.err(), errors.err()].into_iter().flatten().next();
                return Err(ShardStop::Unfinished(upload.map(upload_failure).unwrap_or_else(|| {
                    Unfinished::Retry(RetryCause::Transient, format!("reading or writing failed: {error}"))
                })));
            }
        };
        let data = data.map_err(upload_failure)?;
        let output_bytes = data.commit().await.map_err(output_failure)?.bytes;
        let errors_bytes = match summary.bad_rows {
            0 => 0,
            _ => errors.map_err(upload_failure)?.commit().await.map_err(output_failure)?.bytes,
        };
        let model = ModelInfo { sha256: Some(model.model.sha256.clone()), ..info };
        let lines = lines.unwrap_or(summary.rows_in);
        Ok(Staged { model, summary, lines, output_bytes, errors_bytes })
    }

    /// The file's first row, from its start.
    async fn first_row(&self, input: &InputSpec, json_lines: bool) -> Result<Vec<u8>, ShardStop> {
        let (chunks, reader) = input_channel();
        let read = tokio::task::spawn_blocking(move || first_row_line(std::io::BufReader::new(reader), json_lines));
        let download = self.transfers().pump_range(input, 0, 64 * 1024, self.job.input.size, chunks);
        let (downloaded, read) = tokio::join!(download, read);
        let read = read.map_err(|join| Unfinished::Retry(RetryCause::Transient, join.to_string()))?;
        match read {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(ShardStop::File(format!("{}: the file has no data rows", input.uri))),
            Err(error) if Unsplittable::from_io(&error).is_some() => Err(ShardStop::Unsplittable(error.to_string())),
            Err(error) => {
                downloaded.map_err(|e| input_failure::<S>(&input.uri, e))?;
                Err(Unfinished::Retry(RetryCause::Transient, format!("reading the file's first row failed: {error}"))
                    .into())
            }
        }
    }

    /// The shards' records, in order, once every shard has one.
    async fn finished_shards(&self) -> Result<Option<Vec<ShardDone>>, Unfinished> {
        let listed =
            self.transfers().list(&self.staging.bucket, &self.staging.done_prefix()).await.map_err(output_failure)?;
        if listed.len() < self.shard.count as usize {
            return Ok(None);
        }
        let mut done = Vec::with_capacity(listed.len());
        for index in 0..self.shard.count {
            match self.transfers().read_json::<ShardDone>(&self.at(self.staging.done(index))).await {
                Ok(Some(record)) => done.push(record),
                // Removed by a publication meanwhile: the claim says what happened.
                Ok(None) => return Ok(None),
                Err(error) => return Err(output_failure(error)),
            }
        }
        Ok(Some(done))
    }

    /// Builds the file's outcome from every shard's part, and decides it.
    async fn assemble(&self, shards: Vec<ShardDone>) -> Result<MessageEnd, Unfinished> {
        let clock = Instant::now();
        let input = input_uri(self.job);
        let started_at = shards.iter().map(|s| s.started_at).min().unwrap_or_else(Utc::now);
        // Whole-file line numbers: each shard's lines follow the earlier shards'.
        let lines_before: Vec<u64> = shards
            .iter()
            .scan(0, |total, shard| {
                let before = *total;
                *total += shard.lines;
                Some(before)
            })
            .collect();
        let mut summary = TransformSummary::default();
        for (shard, before) in shards.iter().zip(&lines_before) {
            summary.rows_in += shard.rows.input;
            summary.rows_out += shard.rows.output;
            summary.bad_rows += shard.rows.bad;
            summary.truncated += shard.rows.truncated;
            let room = shared::report::REPORTED_ROW_ERRORS.saturating_sub(summary.first_errors.len());
            summary.first_errors.extend(
                shard
                    .first_errors
                    .iter()
                    .take(room)
                    .map(|e| RowError { line: e.line + before, reason: e.reason.clone() }),
            );
        }
        let verdict = check_whole_file(summary.clone(), self.runner.settings.transform.max_bad_row_ratio);
        let keys = self.runner.output_keys(self.job);
        let (status, reason, summary, data, errors) =
            match self.transfers().object_state(&input, &self.job.input.etag).await {
                Err(error) => return Err(access_or_transient(error, "the input bucket")),
                Ok(ObjectState::Replaced) => {
                    self.clean_up().await;
                    return Err(Unfinished::Superseded(format!("{input} was replaced while it was processed")));
                }
                Ok(ObjectState::Deleted) => {
                    let reason = format!("{input} was deleted while it was processed");
                    (JobStatus::Failed, Some(reason), TransformSummary::default(), None, None)
                }
                Ok(ObjectState::Unchanged) => match verdict {
                    Ok(summary) => {
                        let data = self.assemble_data(&shards).await?;
                        let errors = match summary.bad_rows {
                            0 => None,
                            _ => Some(self.assemble_errors(&shards, &lines_before).await?),
                        };
                        (JobStatus::Succeeded, None, summary, Some(data), errors)
                    }
                    Err(error) => {
                        let summary = match &error {
                            TransformError::TooManyBadRows { summary, .. } => summary.clone(),
                            _ => TransformSummary::default(),
                        };
                        let errors = match summary.bad_rows {
                            0 => None,
                            _ => Some(self.assemble_errors(&shards, &lines_before).await?),
                        };
                        (JobStatus::Failed, Some(format!("{input}: {error}")), summary, None, errors)
                    }
                },
            };
        let split = SplitReport::Shards {
            count: self.shard.count,
            shards: shards
                .iter()
                .map(|s| ShardReport {
                    index: s.shard.index,
                    start: s.shard.start,
                    end: s.shard.end,
                    rows: s.rows.input,
                    seconds: s.seconds,
                    worker_id: s.worker_id.clone(),
                    attempt: s.attempt,
                })
                .collect(),
            worker_seconds: shards.iter().map(|s| s.seconds).sum(),
            assembly_seconds: clock.elapsed().as_secs_f64(),
        };
        let mut report = self.report(status, reason, summary, split, started_at);
        report.model = shards[0].model.clone();
        report.outputs = ReportOutputs {
            data: data.is_some().then(|| output_uri(self.job, &keys.data).to_string()),
            errors: errors.is_some().then(|| output_uri(self.job, &keys.errors).to_string()),
        };
        self.decide(Claim::Publish { report: Box::new(report), data, errors }).await
    }

    /// The file's report.
    fn report(
        &self,
        status: JobStatus,
        reason: Option<String>,
        summary: TransformSummary,
        split: SplitReport,
        started_at: DateTime<Utc>,
    ) -> JobReport {
        let finished_at = Utc::now();
        JobReport {
            status,
            reason,
            input: self.job.input.clone(),
            outputs: ReportOutputs::default(),
            rows: row_counts(&summary),
            model: ModelInfo { uri: self.job.model.to_string(), name: None, version: None, sha256: None },
            started_at,
            finished_at,
            duration_seconds: (finished_at - started_at).num_milliseconds().max(0) as f64 / 1000.0,
            worker_id: self.runner.worker_id.clone(),
            attempt: self.attempt,
            first_errors: summary.first_errors,
            split: Some(split),
        }
    }

    /// The input's format, and the output's.
    fn formats(&self) -> Result<(DataFormat, TableFormat), Unfinished> {
        let kind = input_kind(self.job, &self.runner.settings)
            .map_err(|reason| Unfinished::Retry(RetryCause::Operator, reason))?;
        Ok((kind.format, kind.format.output(self.runner.settings.transform.output_format)))
    }

    /// The shards' outputs, in order, as one open multipart upload of the output key: text
    /// outputs one after the other, Parquet outputs' row groups under a new footer.
    async fn assemble_data(&self, shards: &[ShardDone]) -> Result<Assembled, Unfinished> {
        let (_, format) = self.formats()?;
        let staged = |s: &ShardDone| self.at(self.staging.output(s.shard.index));
        let sources = match format {
            TableFormat::Parquet => self.joined_parquet(shards).await?,
            _ => shards.iter().map(|s| Source::object(staged(s), s.output_bytes)).collect(),
        };
        let dest = output_uri(self.job, &self.runner.output_keys(self.job).data);
        concatenate(self.transfers(), &dest, format.content_type(), &sources).await.map_err(output_failure)
    }

    /// The shards' Parquet outputs as one file ([`engine::formats::parquet::join`]): the magic,
    /// each one's row groups where they are in S3, and the new footer.
    async fn joined_parquet(&self, shards: &[ShardDone]) -> Result<Vec<Source>, Unfinished> {
        let mut footers = Vec::with_capacity(shards.len());
        for shard in shards {
            let spec = InputSpec { uri: self.at(self.staging.output(shard.shard.index)), etag: None, version_id: None };
            let object = RangedObject::new(self.transfers().clone(), spec, shard.output_bytes);
            let file: Arc<dyn RangeRead> = Arc::new(object.clone());
            let read = tokio::task::spawn_blocking(move || read_footer(file))
                .await
                .map_err(|join| Unfinished::Retry(RetryCause::Transient, join.to_string()))?;
            match read {
                Ok(footer) => footers.push(footer),
                Err(error) => {
                    return Err(match object.take_failure() {
                        Some(failure) => output_failure(failure),
                        None => Unfinished::Retry(
                            RetryCause::Transient,
                            format!("shard {}'s staged output: {error}", shard.shard.index + 1),
                        ),
                    });
                }
            }
        }
        let joined = join(&footers).map_err(|error| {
            Unfinished::Retry(RetryCause::Transient, format!("joining the shards' outputs: {error}"))
        })?;
        let parts = shards
            .iter()
            .zip(joined.rows)
            .map(|(s, rows)| Source::Object(self.at(self.staging.output(s.shard.index)), rows));
        Ok(std::iter::once(Source::Bytes(Bytes::from_static(MAGIC)))
            .chain(parts)
            .chain([Source::Bytes(joined.footer)])
            .collect())
    }

    /// The shards' errors files as one, with whole-file line numbers.
    async fn assemble_errors(&self, shards: &[ShardDone], lines_before: &[u64]) -> Result<Assembled, Unfinished> {
        let uri = output_uri(self.job, &self.runner.output_keys(self.job).errors);
        let (writer, upload) = self.transfers().upload(uri, "text/csv");
        let (sources_tx, mut sources_rx) = tokio::sync::mpsc::channel(1);
        let header = match self.formats()?.0 {
            DataFormat::Parquet => PARQUET_ROW_ERROR_HEADER,
            _ => ROW_ERROR_HEADER,
        };
        let rewrite = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut out = csv::Writer::from_writer(writer);
            out.write_record(header)?;
            while let Some((reader, before)) = sources_rx.blocking_recv() {
                append_errors(reader, before, &mut out)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.finish()
        });
        let feed = async {
            for (shard, &before) in shards.iter().zip(lines_before).filter(|(s, _)| s.errors_bytes > 0) {
                let uri = self.at(self.staging.errors(shard.shard.index));
                let spec = InputSpec { uri, etag: None, version_id: None };
                let download = self.transfers().open_input(&spec).await?;
                let (chunks, reader) = input_channel();
                if sources_tx.send((reader, before)).await.is_err() {
                    break;
                }
                download.pump(chunks).await?;
            }
            drop(sources_tx);
            Ok::<(), StoreError>(())
        };
        let (fed, rewritten, staged) = tokio::join!(feed, rewrite, upload.staged());
        fed.map_err(output_failure)?;
        let transient =
            |e: String| Unfinished::Retry(RetryCause::Transient, format!("assembling the errors file: {e}"));
        rewritten.map_err(|e| transient(e.to_string()))?.map_err(|e| transient(e.to_string()))?;
        staged.map_err(upload_failure)?.into_assembled().await.map_err(output_failure)
    }
}
