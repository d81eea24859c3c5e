//! The worker binary: `worker` drains the job queue (the container's command);
//! `worker transform` runs a model over a local file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use aws_config::BehaviorVersion;
use clap::{Parser, Subcommand};
use shared::config::process_environment;
use worker::config::WorkerConfig;
use worker::drain::{WorkQueue, drain};
use worker::engine::{TransformOptions, transform_csv};
use worker::job::JobRunner;
use worker::models::{ModelCache, load_model};
use worker::shutdown;
use worker::storage::S3Storage;

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
    /// Run a model over a local CSV file.
    Transform {
        /// The ONNX model; its sidecar configuration `<model>.json` is read if present.
        #[arg(long)]
        model: PathBuf,
        /// The input CSV file (with a header row).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the predictions.
        #[arg(long)]
        output: PathBuf,
        /// Where to write rejected rows [default: <output>.errors.csv].
        #[arg(long)]
        errors: Option<PathBuf>,
        /// Rows per model run.
        #[arg(long, default_value_t = TransformOptions::default().batch_size)]
        batch_size: usize,
        /// The share of bad rows above which the file fails.
        #[arg(long, default_value_t = TransformOptions::default().max_bad_row_ratio)]
        max_bad_row_ratio: f64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Drain) {
            Command::Drain => run_queue().await,
            Command::Transform { model, input, output, errors, batch_size, max_bad_row_ratio } => {
                let options = TransformOptions { batch_size, max_bad_row_ratio };
                run_transform(model, input, output, errors, options).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_queue() -> anyhow::Result<()> {
    let config = WorkerConfig::from_env(&process_environment())?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        // Local stand-ins serve buckets by path, not by host name.
        s3 = s3.force_path_style(true);
    }
    let storage = S3Storage::new(aws_sdk_s3::Client::from_conf(s3.build()));
    let queue = WorkQueue::new(aws_sdk_sqs::Client::new(&sdk), &config.queue_url);
    let worker_id = format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()), std::process::id());
    tracing::info!(%worker_id, queue = %config.queue_url, "worker started");
    let runner = JobRunner { models: ModelCache::new(storage.clone()), storage, config, worker_id };
    let shutdown = shutdown::on_signals().context("cannot listen for stop signals")?;
    let summary = drain(&queue, &runner, shutdown).await?;
    tracing::info!(?summary, "worker finished");
    Ok(())
}

async fn run_transform(
    model: PathBuf,
    input: PathBuf,
    output: PathBuf,
    errors: Option<PathBuf>,
    options: TransformOptions,
) -> anyhow::Result<()> {
    let loaded = load_model(None, &model.to_string_lossy()).await?;
    let errors = errors.unwrap_or_else(|| with_suffix(&output, ".errors.csv"));
    let started = Instant::now();
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let reader = std::fs::File::open(&input).with_context(|| format!("cannot open {}", input.display()))?;
        // Written beside the destination and renamed at the end, so a partial output never shows.
        let partial = with_suffix(&output, ".partial");
        let partial_errors = with_suffix(&errors, ".partial");
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?,
        );
        let mut err = std::io::BufWriter::new(
            std::fs::File::create(&partial_errors)
                .with_context(|| format!("cannot create {}", partial_errors.display()))?,
        );
        let result =
            transform_csv(std::io::BufReader::new(reader), &mut out, &mut err, &loaded.model, &loaded.config, &options);
        drop((out, err));
        let summary = match result {
            Ok(summary) => summary,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                let _ = std::fs::remove_file(&partial_errors);
                return Err(e).with_context(|| format!("{} failed", input.display()));
            }
        };
        std::fs::rename(&partial, &output)?;
        if summary.bad_rows > 0 {
            std::fs::rename(&partial_errors, &errors)?;
        } else {
            std::fs::remove_file(&partial_errors)?;
        }
        Ok(summary)
    })
    .await??;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} rows in, {} out, {} bad, {:.1} s, {:.0} rows/s",
        summary.rows_in,
        summary.rows_out,
        summary.bad_rows,
        seconds,
        summary.rows_in as f64 / seconds.max(1e-9)
    );
    Ok(())
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}
