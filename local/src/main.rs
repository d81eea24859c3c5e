//! `sluice-local`: runs the whole pipeline on this machine against moto, uploads example data,
//! prints the outputs, and (unless `--once`) keeps processing files a person uploads until Ctrl-C.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use shared::report::SplitReport;
use shared::{JobReport, JobStatus};
use sluice_local::FargateOptions;
use sluice_local::iam::Program;
use sluice_local::pipeline::{DrainReport, LocalModels, LocalPipeline, OutputSet, PipelineOptions};
use sluice_local::repo::in_repo;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "sluice-local", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the pipeline, process the example data, print the outputs (the default).
    Run(RunArgs),
    /// List each action template.yaml grants the trigger, the worker and the online task with how
    /// often the tests used it (moto's IAM decisions in target/iam-audit); fails when a granted
    /// action went unused with no reason on record, so the policies stay least-privilege.
    IamCoverage {
        /// The folder of moto's decision files.
        #[arg(long, default_value = sluice_local::moto::IAM_AUDIT_DIR)]
        audit: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// moto's port on 127.0.0.1.
    #[arg(long, default_value_t = 4566)]
    port: u16,
    /// A folder laid out as a model repository, <name>/<version>/model.onnx (default:
    /// models/repository, with iris at versions 1 and 2, half_plus_two and diabetes).
    #[arg(long, conflicts_with = "model")]
    model_repository: Option<PathBuf>,
    /// The repository's model for files whose key names none: NAME or NAME@VERSION.
    #[arg(long, default_value = "iris", conflicts_with = "model")]
    default_model: String,
    /// One ONNX model for every file, instead of a repository.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Files to upload, as FILE (to the bucket's root: the default model) or FILE=KEY (the key's
    /// first folder names the model: iris/day1.csv, iris@1/day1.csv). Default: the examples.
    #[arg(long, num_args = 1..)]
    data: Vec<String>,
    /// Exit after printing the first outputs instead of waiting for more uploads.
    #[arg(long)]
    once: bool,
    /// Most worker tasks at once.
    #[arg(long, default_value_t = 2)]
    max_workers: u32,
    /// Files larger than this many bytes are split into shards of it that the workers process
    /// at once (the trigger's SHARD_BYTES); 0 turns splitting off.
    #[arg(long, default_value_t = shared::shards::DEFAULT_SHARD_BYTES)]
    shard_bytes: u64,
    /// Hold each worker task to this many cores of its own, as a Fargate task has its vCPUs.
    #[arg(long)]
    task_cpus: Option<usize>,
    /// Seconds to wait for the pipeline to finish the uploaded files.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// The trigger binary (default: lambda-trigger next to this executable).
    #[arg(long, env = "SLUICE_TRIGGER_BINARY")]
    trigger_binary: Option<PathBuf>,
    /// The worker binary (default: worker next to this executable).
    #[arg(long, env = "SLUICE_WORKER_BINARY")]
    worker_binary: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run(args)) => run(args).await,
        Some(Command::IamCoverage { audit }) => iam_coverage(&in_repo(audit)),
        None => run(cli.run).await,
    };
    if let Err(err) = result {
        eprintln!("sluice-local: {err:#}");
        std::process::exit(1);
    }
}

fn iam_coverage(audit: &std::path::Path) -> Result<()> {
    use sluice_local::iam;
    let template = iam::Template::load()?;
    let decisions = iam::read_decisions(audit)?;
    let grants = iam::coverage(&template, &decisions)?;
    println!("{:<16} {:<32} {:>8}  note", "role", "action", "allowed");
    for grant in &grants {
        let note = match (grant.used, grant.not_exercised) {
            (0, Some(why)) => format!("not exercised locally: {why}"),
            (0, None) => "UNUSED: no test needed it".to_owned(),
            _ => String::new(),
        };
        println!("{:<16} {:<32} {:>8}  {note}", grant.program.to_string(), grant.action, grant.used);
    }
    let denied = decisions.iter().filter(|d| !d.allowed).count();
    println!("{} decisions read from {}, {denied} of them denials", decisions.len(), audit.display());
    iam::check_coverage(&grants)
}

async fn run(args: RunArgs) -> Result<()> {
    let started = Instant::now();
    // From the start: a signal that stops the harness stops everything it started.
    let mut stop = StopSignals::new()?;
    let models = match &args.model {
        Some(model) => LocalModels::File(model.clone()),
        None => LocalModels::Repository {
            folder: args.model_repository.clone().unwrap_or_else(|| in_repo("models/repository")),
            default: Some(args.default_model.clone()),
        },
    };
    let options = PipelineOptions {
        moto_port: Some(args.port),
        models,
        max_workers: args.max_workers,
        shard_bytes: args.shard_bytes,
        fargate: FargateOptions { task_cpus: args.task_cpus, ..FargateOptions::default() },
        trigger_binary: args.trigger_binary.clone(),
        worker_binary: args.worker_binary.clone(),
        ..PipelineOptions::default()
    };
    let data: Vec<(PathBuf, Option<String>)> = if !args.data.is_empty() {
        args.data
            .iter()
            .map(|arg| match arg.split_once('=') {
                Some((file, key)) => (PathBuf::from(file), Some(key.to_owned())),
                None => (PathBuf::from(arg), None),
            })
            .collect()
    } else if args.model.is_some() {
        vec![(in_repo("examples/data/iris.csv"), None)]
    } else {
        // One file per model of the example repository, and one for the default model.
        [
            ("examples/data/iris.csv", "iris/iris.csv"),
            ("examples/data/iris.csv", "iris@1/iris.csv"),
            ("examples/data/iris.parquet", "iris/iris.parquet"),
            ("examples/data/half_plus_two.csv", "half_plus_two/half_plus_two.csv"),
            ("examples/data/diabetes.csv", "diabetes/diabetes.csv"),
            ("examples/data/digits/0344-6.png", "digits/0344-6.png"),
            ("examples/data/digits.tar.gz", "digits/digits.tar.gz"),
            ("tests/data/images/china.jpg", "squeezenet/china.jpg"),
        ]
        .into_iter()
        .map(|(file, key)| (in_repo(file), Some(key.to_owned())))
        .collect()
    };
    for (file, _) in &data {
        if !file.is_file() {
            anyhow::bail!("the data file {} does not exist", file.display());
        }
    }

    // Dropping a half-started pipeline stops what it had started.
    let mut pipeline = tokio::select! {
        pipeline = LocalPipeline::start(options) => pipeline?,
        signal = stop.recv() => {
            eprintln!("\n{signal}: stopped while starting");
            return Ok(());
        }
    };
    let ready = started.elapsed();
    let outcome = tokio::select! {
        result = process_and_watch(&mut pipeline, &args, &data, ready) => result,
        signal = stop.recv() => {
            eprintln!("\n{signal}: stopping…");
            Ok(())
        }
    };
    pipeline.shutdown().await;
    outcome
}

/// The signals that stop the harness (Ctrl-C, `kill`, a closed terminal, Ctrl-\): each stops
/// moto, the trigger and the workers with it, instead of leaving them running.
struct StopSignals {
    /// SIGINT, SIGTERM, SIGHUP and SIGQUIT.
    signals: [tokio::signal::unix::Signal; 4],
}

impl StopSignals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind| signal(kind).context("cannot listen for the signals that stop the harness");
        Ok(Self {
            signals: [
                listen(SignalKind::interrupt())?,
                listen(SignalKind::terminate())?,
                listen(SignalKind::hangup())?,
                listen(SignalKind::quit())?,
            ],
        })
    }

    /// The name of the next signal to arrive.
    async fn recv(&mut self) -> &'static str {
        let [interrupt, terminate, hangup, quit] = &mut self.signals;
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
            _ = hangup.recv() => "SIGHUP",
            _ = quit.recv() => "SIGQUIT",
        }
    }
}

async fn process_and_watch(
    pipeline: &mut LocalPipeline,
    args: &RunArgs,
    data: &[(PathBuf, Option<String>)],
    ready: Duration,
) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let mut printed: HashMap<String, String> = HashMap::new();
    println!(
        "moto enforces IAM: the trigger runs as {}, each worker as {}, with template.yaml's {} and {} policies",
        Program::Trigger.user(),
        Program::Worker.user(),
        Program::Trigger.role(),
        Program::Worker.role()
    );
    for (file, key) in data {
        let key = pipeline.upload_file(file, key.as_deref()).await?;
        println!("uploaded {} to s3://{}/{key}", file.display(), pipeline.stack.input_bucket);
    }
    let report = pipeline.wait_until_drained(timeout).await?;
    print_new_outputs(pipeline, &mut printed).await?;
    let mut announced = print_new_events(pipeline, 0).await?;
    print_summary(&report, data.len(), Some(ready));
    if args.once {
        return Ok(());
    }

    let endpoint = pipeline.endpoint();
    println!();
    println!("The pipeline keeps running. Upload another file with:");
    println!("  aws --endpoint-url {endpoint} s3 cp FILE s3://{}/", pipeline.stack.input_bucket);
    println!("List the outputs with:");
    println!("  aws --endpoint-url {endpoint} s3 ls s3://{}/ --recursive", pipeline.stack.output_bucket);
    println!(
        "(the AWS CLI needs the local administrator's key and a region: AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1;\n the trigger and the workers run with their roles' keys, moto enforcing template.yaml's policies)"
    );
    println!("Press Ctrl-C to stop.");
    loop {
        let delivered = pipeline.deliver_new_uploads().await?;
        if delivered.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        for delivery in &delivered {
            println!("new upload: {}", delivery.key);
        }
        let mut report = match pipeline.wait_until_drained(timeout).await {
            Ok(report) => report,
            Err(err) => {
                eprintln!("sluice-local: {err:#}");
                continue;
            }
        };
        let count = delivered.len() + report.deliveries.len();
        report.deliveries.splice(0..0, delivered);
        print_new_outputs(pipeline, &mut printed).await?;
        announced = print_new_events(pipeline, announced).await?;
        print_summary(&report, count, None);
    }
}

/// Prints output sets that are new or whose report changed since the last call.
async fn print_new_outputs(pipeline: &LocalPipeline, printed: &mut HashMap<String, String>) -> Result<()> {
    let outputs = pipeline.outputs().await?;
    if outputs.is_empty() {
        println!("\n(no outputs in s3://{}/ yet)", pipeline.stack.output_bucket);
    }
    for set in outputs {
        let report_text = match &set.report_key {
            Some(key) => pipeline.read_output(key).await?,
            None => String::new(),
        };
        if printed.get(&set.base_key) == Some(&report_text) {
            continue;
        }
        print_output_set(pipeline, &set, &report_text).await?;
        printed.insert(set.base_key.clone(), report_text);
    }
    Ok(())
}

async fn print_output_set(pipeline: &LocalPipeline, set: &OutputSet, report_text: &str) -> Result<()> {
    let bucket = &pipeline.stack.output_bucket;
    println!();
    match &set.output_key {
        Some(key) if key.ends_with(".parquet") => {
            println!("== s3://{bucket}/{key} (Parquet; its first rows)");
            let (lines, rows) = pipeline.read_parquet_head(key, 4).await?;
            for line in &lines {
                println!("   {line}");
            }
            if rows + 1 > lines.len() as u64 {
                println!("   … ({rows} rows)");
            }
        }
        Some(key) => {
            println!("== s3://{bucket}/{key}");
            let head = pipeline.read_output_head(key, 64 * 1024).await?;
            let lines: Vec<&str> = head.lines().collect();
            for line in lines.iter().take(5) {
                println!("   {line}");
            }
            let rows = serde_json::from_str::<JobReport>(report_text).map(|r| r.rows.output).unwrap_or(0);
            if lines.len() > 5 || rows > 5 {
                println!("   … ({rows} rows)");
            }
        }
        None => println!("== s3://{bucket}/{} (no output written)", set.base_key),
    }
    if let Some(key) = &set.report_key {
        println!("-- s3://{bucket}/{key}");
        match serde_json::from_str::<JobReport>(report_text) {
            Ok(report) => {
                for line in report_lines(&report) {
                    println!("   {line}");
                }
            }
            Err(_) => println!("   {report_text}"),
        }
    }
    if let Some(key) = &set.errors_key {
        println!("-- s3://{bucket}/{key}");
        let text = pipeline.read_output_head(key, 64 * 1024).await?;
        for line in text.lines().take(5) {
            println!("   {line}");
        }
    }
    Ok(())
}

/// A report in a few lines: what happened, which model did it, and how a big file was split.
fn report_lines(report: &JobReport) -> Vec<String> {
    let rows = report.rows;
    let what = match (report.status, &report.reason) {
        (JobStatus::Succeeded, _) => {
            format!("succeeded: {} rows in, {} out, {} bad", rows.input, rows.output, rows.bad)
        }
        (JobStatus::Failed, reason) => format!("failed: {}", reason.as_deref().unwrap_or("no reason given")),
    };
    let model = &report.model;
    let sha = model.sha256.as_deref().map(|s| format!(", sha256 {}…", &s[..s.len().min(12)])).unwrap_or_default();
    let which = match (&model.name, model.version) {
        (Some(name), Some(version)) => format!("model {name} version {version} ({}{sha})", model.uri),
        _ => format!("model {}{sha}", model.uri),
    };
    let mut lines = vec![what, which];
    match &report.split {
        Some(SplitReport::Shards { count, shards, assembly_seconds, .. }) => {
            let workers: std::collections::BTreeSet<&str> = shards.iter().map(|s| s.worker_id.as_str()).collect();
            lines.push(format!(
                "split into {count} shards, processed by {} worker(s) in {:.1} s, assembled in {assembly_seconds:.1} s",
                workers.len(),
                report.duration_seconds
            ));
        }
        Some(SplitReport::NotSplit { reason }) => lines.push(format!("not split: {reason}")),
        None => {}
    }
    lines
}

/// Prints the completion events after the first `seen`; returns how many there are now.
async fn print_new_events(pipeline: &LocalPipeline, seen: usize) -> Result<usize> {
    let events = pipeline.completion_events().await?;
    if events.len() > seen {
        println!();
    }
    for event in events.iter().skip(seen) {
        let input = &event["detail"]["input"];
        println!(
            "event on the default bus: {} s3://{}/{}",
            event["detail-type"].as_str().unwrap_or("?"),
            input["bucket"].as_str().unwrap_or("?"),
            input["key"].as_str().unwrap_or("?")
        );
    }
    Ok(events.len())
}

fn print_summary(report: &DrainReport, files: usize, ready: Option<Duration>) {
    println!();
    let failed_events = report.deliveries.iter().filter(|d| !d.succeeded()).count();
    let mut line = format!("summary: {files} file(s) uploaded, processed in {:.1} s", report.elapsed.as_secs_f64());
    if let Some(ready) = ready {
        line.push_str(&format!(" (after {:.1} s to start moto and provision)", ready.as_secs_f64()));
    }
    line.push_str(&format!("; {} worker task(s) started so far", report.workers_started));
    if failed_events > 0 {
        line.push_str(&format!("; {failed_events} event(s) the trigger failed on"));
    }
    if report.dead_lettered_events > 0 {
        line.push_str(&format!("; {} event(s) in the trigger's dead-letter queue", report.dead_lettered_events));
    }
    if report.dead_lettered_jobs > 0 {
        line.push_str(&format!("; {} job(s) in the dead-letter queue", report.dead_lettered_jobs));
    }
    println!("{line}");
}
