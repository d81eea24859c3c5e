//! `worker transform`: a model over one file, local or in S3, for model authors trying a model
//! before they deploy it. Same engine and options as the queue mode; outputs appear only when
//! complete (a local file is written beside its destination and renamed; S3 as in queue mode).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::location::Location;

use crate::engine::{
    CsvOptions, DataFormat, FileKind, TableFormat, TransformOptions, TransformSummary, transform, transform_parquet,
};
use crate::models::{LoadedModel, ModelFiles, load_model};
use crate::ranged::RangedObject;
use crate::repository::{ModelRepository, ResolvedModel};
use crate::s3::S3Store;
use crate::transfer::{InputSpec, PartWriter, PendingUpload, Transfers, input_channel};

pub struct TransformRequest {
    /// A model file, or with `model_repository` a model of it: `NAME` or `NAME@VERSION`.
    pub model: String,
    /// A model repository (`s3://bucket/prefix/` or a folder).
    pub model_repository: Option<String>,
    pub input: String,
    pub output: String,
    /// Default: `<output>.errors.csv`.
    pub errors: Option<String>,
    pub options: TransformOptions,
    pub csv: CsvOptions,
}

/// What a run did, for the summary line.
pub struct TransformRun {
    pub summary: TransformSummary,
    pub elapsed: Duration,
    /// The model that ran, as resolved.
    pub model: ResolvedModel,
    pub model_sha256: String,
}

impl TransformRun {
    pub fn summary_line(&self) -> String {
        let seconds = self.elapsed.as_secs_f64();
        let truncated = match self.summary.truncated {
            0 => String::new(),
            n => format!(" ({n} texts truncated to the model's maximum length)"),
        };
        format!(
            "{} rows in, {} out, {} bad{truncated}, {seconds:.2} s, {:.0} rows/s",
            self.summary.rows_in,
            self.summary.rows_out,
            self.summary.bad_rows,
            self.summary.rows_in as f64 / seconds.max(1e-9)
        )
    }

    /// Which model ran: `model iris version 2 (…/iris/2/model.onnx, sha256 …)`, or its file.
    pub fn model_line(&self) -> String {
        let short = &self.model_sha256[..self.model_sha256.len().min(12)];
        match (&self.model.name, self.model.version) {
            (Some(name), Some(version)) => {
                format!("model {name} version {version} ({}, sha256 {short}…)", self.model.uri)
            }
            _ => format!("model {} (sha256 {short}…)", self.model.uri),
        }
    }
}

/// Where an output goes while it is being written.
enum Sink {
    Local { partial: PathBuf, destination: PathBuf, file: BufWriter<File> },
    S3 { writer: PartWriter, upload: PendingUpload<S3Store> },
}

impl Sink {
    async fn open(location: &str, storage: Option<&Transfers<S3Store>>) -> Result<Self> {
        match Location::parse(location)? {
            Location::Local(destination) => {
                let mut partial = destination.clone().into_os_string();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                let file = File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
                Ok(Sink::Local { partial, destination, file: BufWriter::with_capacity(1 << 20, file) })
            }
            Location::S3(uri) => {
                let (writer, upload) = storage.context("S3 access is needed")?.upload(uri, "application/octet-stream");
                Ok(Sink::S3 { writer, upload })
            }
        }
    }

    fn writer(&mut self) -> &mut (dyn Write + Send) {
        match self {
            Sink::Local { file, .. } => file,
            Sink::S3 { writer, .. } => writer,
        }
    }

    /// Makes the output visible (`keep`) or removes every trace of it.
    async fn close(self, keep: bool) -> Result<()> {
        match self {
            Sink::Local { partial, destination, file } => {
                let flushed = file.into_inner().map_err(|e| e.into_error());
                if keep {
                    flushed?.sync_all()?;
                    std::fs::rename(&partial, &destination)
                        .with_context(|| format!("cannot move the output to {}", destination.display()))?;
                } else {
                    drop(flushed);
                    let _ = std::fs::remove_file(&partial);
                }
                Ok(())
            }
            Sink::S3 { writer, upload } => {
                if !keep {
                    // Dropping the writer abandons the upload; whatever was uploaded is aborted.
                    drop(writer);
                    let _ = upload.staged().await;
                    return Ok(());
                }
                let finished = tokio::task::spawn_blocking(move || writer.finish()).await?;
                // The upload's own error explains a writer that could not finish.
                let staged = upload.staged().await?;
                finished?;
                staged.commit().await?;
                Ok(())
            }
        }
    }
}

/// The model `--model` (with `--model-repository`) names, as found and loaded.
pub async fn resolve_model(
    model: &str,
    repository: Option<&str>,
    storage: Option<&Transfers<S3Store>>,
) -> Result<(ResolvedModel, LoadedModel)> {
    let resolved = match repository {
        None => ResolvedModel::file(model.to_owned()),
        Some(root) => {
            let wanted = shared::ModelRequest::parse(model)
                .with_context(|| format!("--model {model:?} with --model-repository"))?;
            let files = ModelFiles::new(storage.cloned());
            ModelRepository::new(&files, root)?.resolve(Some(&wanted), None).await?
        }
    };
    let loaded = load_model(storage, &resolved.uri).await?;
    Ok((resolved, loaded))
}

/// Runs the request; the progress bar shows on a terminal only.
pub async fn run(request: TransformRequest) -> Result<TransformRun> {
    let uses_s3 = [&request.model, &request.input, &request.output].iter().any(|u| u.starts_with("s3://"))
        || [&request.errors, &request.model_repository]
            .iter()
            .any(|u| u.as_deref().is_some_and(|u| u.starts_with("s3://")));
    let storage = if uses_s3 { Some(Transfers::new(S3Store::from_environment().await)) } else { None };
    let (resolved, loaded) =
        resolve_model(&request.model, request.model_repository.as_deref(), storage.as_ref()).await?;
    let model_sha256 = loaded.model.sha256.clone();
    let kind = FileKind::from_name(&request.input, None, request.csv)?;
    let errors_location = request.errors.clone().unwrap_or_else(|| format!("{}.errors.csv", request.output));

    let input = open_input(&request.input, kind, storage.as_ref()).await?;
    let mut output = Sink::open(&request.output, storage.as_ref()).await?;
    let mut errors = Sink::open(&errors_location, storage.as_ref()).await?;

    let started = Instant::now();
    let mut options = request.options;
    // The output's name tells its format, unless OUTPUT_FORMAT did.
    options.output_format = options.output_format.or_else(|| TableFormat::parse(&request.output));
    let (result, output, errors) = tokio::task::spawn_blocking(move || {
        let progress = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        progress.set_style(
            ProgressStyle::with_template("{spinner} {human_pos} rows, {per_sec}, {elapsed}").expect("valid template"),
        );
        let mut report = |rows: u64| progress.set_position(rows);
        let model = &loaded.model;
        let result = match input {
            Input::Stream(input) => {
                transform(input, kind, output.writer(), errors.writer(), model, &options, &mut report)
            }
            Input::Ranges(file) => {
                transform_parquet(file, output.writer(), errors.writer(), model, &options, &mut report)
            }
        };
        progress.finish_and_clear();
        (result, output, errors)
    })
    .await?;
    let elapsed = started.elapsed();
    let bad_rows = match &result {
        Ok(summary) => summary.bad_rows,
        Err(crate::engine::TransformError::TooManyBadRows { summary, .. }) => summary.bad_rows,
        Err(_) => 0,
    };
    errors.close(bad_rows > 0).await?;
    output.close(result.is_ok()).await?;
    match result {
        Ok(summary) => Ok(TransformRun { summary, elapsed, model: resolved, model_sha256 }),
        Err(error) if bad_rows > 0 => bail!("{}: {error} (rejected rows are in {errors_location})", request.input),
        Err(error) => bail!("{}: {error}", request.input),
    }
}

/// The input, as the engine reads its format.
enum Input {
    Stream(Box<dyn Read + Send>),
    /// A Parquet file, read by byte ranges.
    Ranges(std::sync::Arc<dyn crate::engine::RangeRead>),
}

async fn open_input(location: &str, kind: FileKind, storage: Option<&Transfers<S3Store>>) -> Result<Input> {
    let parquet = kind.format == DataFormat::Parquet;
    match Location::parse(location)? {
        Location::Local(path) => {
            let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            Ok(if parquet { Input::Ranges(std::sync::Arc::new(file)) } else { Input::Stream(Box::new(file)) })
        }
        Location::S3(uri) if parquet => {
            let storage = storage.context("S3 access is needed")?;
            let listed = storage.list(&uri.bucket, &uri.key).await?;
            let object =
                listed.into_iter().find(|o| o.key == uri.key).with_context(|| format!("{uri} does not exist"))?;
            let input = InputSpec { uri, etag: Some(object.etag), version_id: None };
            Ok(Input::Ranges(std::sync::Arc::new(RangedObject::new(storage.clone(), input, object.size))))
        }
        Location::S3(uri) => {
            let storage = storage.context("S3 access is needed")?;
            let download = storage.open_input(&InputSpec { uri, etag: None, version_id: None }).await?;
            let (chunks, reader) = input_channel();
            // A failed download reaches the reader as an error, which ends the transform with it.
            tokio::spawn(download.pump(chunks));
            Ok(Input::Stream(Box::new(reader)))
        }
    }
}
