//! The worker binary: `worker` drains the job queue (the batch container's command);
//! `worker transform` runs a model over one file; `worker serve` answers online requests.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use aws_config::BehaviorVersion;
use clap::{Parser, Subcommand};
use shared::config::process_environment;
use shared::logging::{self, LogFormat};
use tracing::Instrument;
use worker::completions::{CompletionEvents, EventBridgeCompletions, NoCompletionEvents};
use worker::config::{WorkerConfig, parse_delimiter};
use worker::drain::{DrainSettings, drain};
use worker::engine::{CsvOptions, TableFormat, TransformOptions, default_threads};
use worker::job::{JobRunner, JobSettings};
use worker::local_transform::{self, TransformRequest};
use worker::models::{ModelCache, ModelFiles};
use worker::s3::{S3Store, s3_client};
use worker::serve::AppState;
use worker::serve::config::ServeSettings;
use worker::serve::metrics::Metrics;
use worker::serve::registry::{Registry, RepositorySource, ServeSource};
use worker::shutdown;
use worker::sqs::SqsWorkQueue;
use worker::transfer::Transfers;

#[derive(Parser)]
#[command(version, about = "sluice worker: runs an ONNX model over data files")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Drain the job queue named by QUEUE_URL, then exit (the default).
    Drain,
    /// Run a model over one file (local path or s3://bucket/key) and write its predictions.
    Transform {
        /// The ONNX model file (its sidecar `<model>.json` is read if present); with
        /// --model-repository, a model of the repository: NAME (its latest version) or NAME@VERSION.
        #[arg(long)]
        model: String,
        /// A model repository, s3://bucket/prefix/ or a folder, laid out <name>/<version>/model.onnx.
        #[arg(long)]
        model_repository: Option<String>,
        /// The input: .csv, .tsv, .jsonl or .ndjson (optionally .gz), .parquet, or images.
        #[arg(long)]
        input: String,
        /// Where to write the predictions.
        #[arg(long)]
        output: String,
        /// The predictions' format: csv, jsonl or parquet [default: the output's extension, or
        /// else the input's format].
        #[arg(long, value_parser = ["csv", "jsonl", "parquet"])]
        output_format: Option<String>,
        /// Rows per row group of a Parquet output.
        #[arg(long, default_value_t = worker::engine::DEFAULT_ROW_GROUP_ROWS)]
        row_group_rows: usize,
        /// Where to write rejected rows [default: <output>.errors.csv].
        #[arg(long)]
        errors: Option<String>,
        /// Rows per model run (rounded up to a multiple of 16).
        #[arg(long, default_value_t = 4096)]
        batch_size: usize,
        /// The share of bad rows above which the file fails.
        #[arg(long, default_value_t = 0.1)]
        max_bad_row_ratio: f64,
        /// Threads running the model [default: one per core].
        #[arg(long)]
        threads: Option<usize>,
        /// CSV input has no header row (columns are then named by position).
        #[arg(long)]
        no_header: bool,
        /// Delimiter of .csv input: one character, or `tab`.
        #[arg(long, default_value = ",")]
        delimiter: String,
        /// Images with more pixels (width x height) are refused before they are decoded.
        #[arg(long, default_value_t = worker::engine::image::decode::DEFAULT_MAX_PIXELS)]
        max_image_pixels: u64,
    },
    /// Say whether a model will run, before deploying it: load it as a job would, print the
    /// columns feeding its input and those its outputs become, and run it on a few synthetic rows.
    CheckModel {
        /// The ONNX model file, or with --model-repository a model of it: NAME or NAME@VERSION.
        #[arg(long)]
        model: String,
        /// A model repository, s3://bucket/prefix/ or a folder.
        #[arg(long)]
        model_repository: Option<String>,
    },
    /// Serve every model of a repository online: TF Serving REST, KServe v2 and TorchServe
    /// endpoints (settings from the environment; these flags override them).
    Serve {
        /// The model repository, s3://bucket/prefix/ or a folder [env: MODEL_REPOSITORY].
        #[arg(long)]
        model_repository: Option<String>,
        /// Instead of a repository, one model file, served under --name.
        #[arg(long, conflicts_with = "model_repository", requires = "name")]
        model: Option<String>,
        /// The name to serve --model under.
        #[arg(long, requires = "model")]
        name: Option<String>,
        /// The port [env: PORT, default 8080].
        #[arg(long)]
        port: Option<u16>,
        /// The gRPC port, 0 for none [env: GRPC_PORT, default 8001].
        #[arg(long)]
        grpc_port: Option<u16>,
        /// The address to listen on [env: BIND, default 127.0.0.1].
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
    },
}

fn main() -> ExitCode {
    logging::init(LogFormat::detect());
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Drain);
    // The queue mode's last word goes to its log (CloudWatch); a person at `worker transform`
    // reads one plain line.
    let in_a_log = matches!(command, Command::Drain | Command::Serve { .. });
    let result = runtime.block_on(async {
        match command {
            Command::Drain => run_queue().await,
            Command::Serve { model_repository, model, name, port, grpc_port, bind } => {
                run_server(model_repository, model.zip(name), (port, grpc_port), bind).await
            }
            Command::CheckModel { model, model_repository } => check_model(model, model_repository).await,
            Command::Transform {
                model,
                model_repository,
                input,
                output,
                output_format,
                row_group_rows,
                errors,
                batch_size,
                max_bad_row_ratio,
                threads,
                no_header,
                delimiter,
                max_image_pixels,
            } => {
                let delimiter = parse_delimiter(&delimiter)
                    .with_context(|| format!("--delimiter {delimiter:?}: expected one ASCII character or tab"))?;
                let options = TransformOptions {
                    batch_size,
                    max_bad_row_ratio,
                    threads: threads.filter(|&n| n > 0).unwrap_or_else(default_threads),
                    max_image_pixels,
                    output_format: output_format.as_deref().and_then(TableFormat::parse),
                    row_group_rows: row_group_rows.max(1),
                };
                let csv = CsvOptions { has_header: !no_header, delimiter };
                let request = TransformRequest { model, model_repository, input, output, errors, options, csv };
                let run = local_transform::run(request).await?;
                println!("{}", run.model_line());
                println!("{}", run.summary_line());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if in_a_log => {
            tracing::error!("worker: {error:#}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check_model(model: String, repository: Option<String>) -> anyhow::Result<()> {
    let uses_s3 = model.starts_with("s3://") || repository.as_deref().is_some_and(|r| r.starts_with("s3://"));
    let storage = if uses_s3 { Some(Transfers::new(S3Store::from_environment().await)) } else { None };
    let (resolved, loaded) = local_transform::resolve_model(&model, repository.as_deref(), storage.as_ref())
        .await
        .map_err(|error| anyhow::anyhow!("does not run: {error}"))?;
    let (report, runs) = worker::check_model::describe(&loaded.model, &resolved.uri);
    print!("{report}");
    anyhow::ensure!(runs, "the model loads but failed on synthetic rows");
    Ok(())
}

async fn run_queue() -> anyhow::Result<()> {
    let config = WorkerConfig::from_env(&process_environment())?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let worker_id = format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()), std::process::id());
    let span = tracing::info_span!("worker", worker_id = %worker_id);
    async {
        tracing::info!(queue = %config.queue_url, "worker started");
        let summary = if config.completion_events {
            serve_queue(&config, &sdk, worker_id, EventBridgeCompletions::new(aws_sdk_eventbridge::Client::new(&sdk)))
                .await?
        } else {
            serve_queue(&config, &sdk, worker_id, NoCompletionEvents).await?
        };
        tracing::info!(?summary, "worker finished");
        Ok(())
    }
    .instrument(span)
    .await
}

async fn serve_queue(
    config: &WorkerConfig,
    sdk: &aws_config::SdkConfig,
    worker_id: String,
    events: impl CompletionEvents,
) -> anyhow::Result<worker::drain::DrainSummary> {
    let transfers = Transfers::new(S3Store::new(s3_client(sdk)));
    let queue = SqsWorkQueue::new(aws_sdk_sqs::Client::new(sdk), &config.queue_url);
    let runner = JobRunner {
        models: ModelCache::new(transfers.clone(), config.model_cache_bytes),
        transfers: transfers.clone(),
        events,
        settings: JobSettings::from(config),
        worker_id,
    };
    let shutdown = shutdown::on_signals().context("cannot listen for stop signals")?;
    let summary = drain(&queue, &runner, &DrainSettings::from(config), shutdown).await;
    // Aborts of abandoned uploads finish before the process exits, whatever happened.
    transfers.finish_cleanups().await;
    Ok(summary?)
}

async fn run_server(
    repository: Option<String>,
    file: Option<(String, String)>,
    (port, grpc_port): (Option<u16>, Option<u16>),
    bind: Option<std::net::IpAddr>,
) -> anyhow::Result<()> {
    worker::allocator::give_memory_back();
    let mut settings = ServeSettings::from_env(&process_environment())?;
    settings.port = port.unwrap_or(settings.port);
    settings.grpc_port = grpc_port.unwrap_or(settings.grpc_port);
    settings.bind = bind.unwrap_or(settings.bind);
    let source = match (file, repository.or_else(|| settings.model_repository.clone())) {
        (Some((uri, name)), _) => {
            anyhow::ensure!(shared::models::is_model_name(&name), "--name {name:?} is not a model name");
            ServeSource::File { uri, name }
        }
        (None, Some(root)) => ServeSource::Repository(root),
        (None, None) => {
            anyhow::bail!("nothing to serve: give --model-repository (or MODEL_REPOSITORY), or --model and --name")
        }
    };
    let on_s3 = match &source {
        ServeSource::File { uri, .. } | ServeSource::Repository(uri) => uri.starts_with("s3://"),
    };
    let storage = if on_s3 { Some(Transfers::new(S3Store::from_environment().await)) } else { None };
    let metrics = Metrics::new();
    let models = RepositorySource::new(ModelFiles::new(storage), source);
    let registry = Registry::start(models, settings.batch, Arc::new(Arc::clone(&metrics))).await?;
    let listener = tokio::net::TcpListener::bind((settings.bind, settings.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", settings.bind, settings.port))?;
    let models: Vec<String> = registry
        .snapshot()
        .iter()
        .flat_map(|(name, versions)| versions.keys().map(move |v| format!("{name}@{v}")))
        .collect();
    let grpc = match settings.grpc_port {
        0 => None,
        port => Some(
            tokio::net::TcpListener::bind((settings.bind, port))
                .await
                .with_context(|| format!("cannot listen for gRPC on {}:{port}", settings.bind))?,
        ),
    };
    let grpc_address = grpc.as_ref().map(|l| l.local_addr()).transpose()?;
    let access = &settings.access;
    tracing::info!(
        address = %listener.local_addr()?,
        grpc = ?grpc_address,
        models = ?models,
        healthy = registry.healthy(),
        api_keys = access.inference.as_ref().map_or(0, |keys| keys.len()),
        repository_api = if access.repository.is_some() { "on" } else if access.inference.is_none() { "open" } else { "off" },
        "serving"
    );
    if access.inference.is_none() {
        tracing::warn!("serving with no API key (ALLOW_UNAUTHENTICATED): anyone who reaches this port may call it");
    }
    let shutdown = shutdown::on_signals().context("cannot listen for stop signals")?;
    let state = Arc::new(AppState::new(registry, metrics, settings));
    let grpc = async {
        match grpc {
            Some(listener) => worker::serve::grpc::run(listener, Arc::clone(&state), shutdown.clone()).await,
            None => Ok(()),
        }
    };
    let (http, grpc) = tokio::join!(worker::serve::run(listener, Arc::clone(&state), shutdown.clone()), grpc);
    http?;
    grpc.context("the gRPC server failed")?;
    tracing::info!("server stopped");
    Ok(())
}
