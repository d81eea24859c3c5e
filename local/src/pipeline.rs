//! The whole pipeline on one machine, wired as in AWS: moto holds the buckets, queues and ECS
//! cluster; uploads to the input bucket become S3 events that invoke the trigger binary under the
//! Lambda Runtime API emulator (asynchronously, with retries and a dead-letter queue); the
//! trigger's `RunTask` calls start worker processes through the Fargate emulator.
//!
//! Used by the `sluice-local` binary and by end-to-end tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use crate::environment::{EnvMap, TriggerModels, TriggerSettings};
use crate::events::S3EventSource;
use crate::fargate::{FargateEmulator, FargateOptions, FinishedWorker, WorkerCommand};
use crate::iam::{Program, Revoked, Substitutions};
use crate::lambda::{AsyncInvocation, DeadLetterQueue, FunctionConfig, LambdaFunction};
use crate::moto::MotoServer;
use crate::provision::{Stack, StackSettings, ensure_bucket};

/// Suffixes of what the worker writes beside each input (SageMaker Batch Transform's layout).
pub use shared::keys::{
    DATA_SUFFIX as OUTPUT_SUFFIX, ERRORS_SUFFIX, PARQUET_DATA_SUFFIX as PARQUET_OUTPUT_SUFFIX, REPORT_SUFFIX,
};

/// How to set the pipeline up.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// moto's port; a free one when `None`.
    pub moto_port: Option<u16>,
    /// The models: one file for every input, or a repository.
    pub models: LocalModels,
    /// The bucket the models are uploaded to.
    pub model_bucket: String,
    pub stack: StackSettings,
    /// Trigger settings other than the model URI.
    pub input_prefix: String,
    pub output_prefix: String,
    /// Reports and errors files go under `<output_prefix><reports_prefix>` (`REPORTS_PREFIX`).
    pub reports_prefix: String,
    pub max_workers: u32,
    /// Files above this size are split into shards of it; 0: never.
    pub shard_bytes: u64,
    pub trigger_rust_log: String,
    /// The trigger's time-out per invocation.
    pub trigger_timeout: Duration,
    /// Variables that replace the trigger's (to give it a setting that fails, say).
    pub trigger_env_overrides: EnvMap,
    /// How often the trigger's reconciliation runs, as the template's `rate(5 minutes)`
    /// schedule does in AWS; `None`: only when a test asks for it.
    pub reconcile_every: Option<Duration>,
    /// The trigger binary; the workspace's `lambda-trigger` when `None`.
    pub trigger_binary: Option<PathBuf>,
    /// The worker binary; the workspace's `worker` when `None`.
    pub worker_binary: Option<PathBuf>,
    pub fargate: FargateOptions,
    /// Statements left out of the programs' role policies (to show what fails without them).
    pub revoked: Vec<Revoked>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            moto_port: None,
            models: LocalModels::File(crate::repo::in_repo("models/iris_logreg.onnx")),
            model_bucket: "sluice-models".to_owned(),
            stack: StackSettings::default(),
            input_prefix: String::new(),
            output_prefix: String::new(),
            reports_prefix: String::new(),
            max_workers: 2,
            shard_bytes: shared::shards::DEFAULT_SHARD_BYTES,
            trigger_rust_log: "info".to_owned(),
            trigger_timeout: Duration::from_secs(30),
            trigger_env_overrides: EnvMap::new(),
            reconcile_every: Some(Duration::from_secs(10)),
            trigger_binary: None,
            worker_binary: None,
            fargate: FargateOptions::default(),
            revoked: Vec::new(),
        }
    }
}

/// The models of a local pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalModels {
    /// One ONNX model for every input (`MODEL_URI` = `s3://<bucket>/<file name>`); its sidecar
    /// `<model>.json` goes along when present.
    File(PathBuf),
    /// A folder laid out as a model repository (`<name>/<version>/model.onnx`), uploaded to
    /// `s3://<bucket>/repository/` (`MODEL_REPOSITORY`), and the default model, if any.
    Repository { folder: PathBuf, default: Option<String> },
}

/// The template's model and output parameters as this pipeline sets them: `ModelBucket`, and
/// `ModelKey` (one model) or `ModelPrefix` (a repository), `OutputPrefix`, and `OneModel`.
fn model_substitutions(options: &PipelineOptions, model_uri: &str) -> Substitutions {
    let key = model_uri.strip_prefix("s3://").and_then(|rest| rest.split_once('/')).map_or("", |(_, key)| key);
    let one_model = matches!(options.models, LocalModels::File(_));
    Substitutions::default()
        .value("ModelBucket", &options.model_bucket)
        .value("ModelKey", if one_model { key } else { "" })
        .value("ModelPrefix", if one_model { "" } else { key })
        .value("OutputPrefix", &options.output_prefix)
        .condition("OneModel", one_model)
}

/// Where the repository goes in the model bucket.
pub const REPOSITORY_PREFIX: &str = "repository/";

/// One S3 event handed to the trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The object key (decoded).
    pub key: String,
    pub event: Value,
    pub invocation: AsyncInvocation,
}

impl Delivery {
    /// Whether the trigger handled the event (on some attempt).
    pub fn succeeded(&self) -> bool {
        self.invocation.succeeded()
    }
}

/// Messages in a queue, by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// What one drain (deliver events, wait for the queue and the workers) did.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainReport {
    pub elapsed: Duration,
    pub deliveries: Vec<Delivery>,
    /// Workers started since the pipeline started.
    pub workers_started: usize,
    /// Messages in the job queue's dead-letter queue.
    pub dead_lettered_jobs: u64,
    /// Events in the trigger's dead-letter queue.
    pub dead_lettered_events: u64,
}

/// The objects the worker wrote for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSet {
    /// The output key without suffix: `<prefix>path/data.csv`.
    pub base_key: String,
    pub output_key: Option<String>,
    pub report_key: Option<String>,
    pub errors_key: Option<String>,
}

/// The running local pipeline. Everything it started stops when it is dropped; [`Self::shutdown`]
/// does it in order and waits.
#[derive(Debug)]
pub struct LocalPipeline {
    pub config: SdkConfig,
    pub stack: Stack,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ecs: aws_sdk_ecs::Client,
    /// `s3://…` of the one model file, or of the model repository's root.
    pub model_uri: String,
    /// The prefix of output keys (`OUTPUT_PREFIX`), and where reports and errors files go
    /// under it (`REPORTS_PREFIX`).
    pub output_prefix: String,
    pub reports_prefix: String,
    trigger_dead_letter_queue: DeadLetterQueue,
    events: S3EventSource,
    /// Completion events received from their queue so far.
    completion_events: Mutex<Vec<Value>>,
    // Field order is drop order: processes that talk to moto go before moto.
    schedule: Option<JoinHandle<()>>,
    fargate: FargateEmulator,
    trigger: Arc<LambdaFunction>,
    moto: MotoServer,
}

impl LocalPipeline {
    /// Starts moto, provisions the stack, uploads the model, and starts the trigger, the Fargate
    /// emulator and the event source.
    pub async fn start(options: PipelineOptions) -> Result<Self> {
        // Fail on missing files before starting anything.
        let trigger_binary = match &options.trigger_binary {
            Some(path) => path.clone(),
            None => crate::binaries::workspace_binary("lambda-trigger")?,
        };
        let worker_binary = match &options.worker_binary {
            Some(path) => path.clone(),
            None => crate::binaries::workspace_binary("worker")?,
        };
        match &options.models {
            LocalModels::File(model) if !model.is_file() => bail!(
                "the model {} does not exist (pass --model, or generate the example models with make models)",
                model.display()
            ),
            LocalModels::Repository { folder, .. } if !folder.is_dir() => {
                bail!("the model repository {} is not a folder", folder.display())
            }
            _ => {}
        }

        let moto = MotoServer::start(options.moto_port).await?;
        let config = crate::aws::sdk_config(&moto.endpoint()).await;
        let s3 = crate::aws::s3_client(&config);
        let sqs = crate::aws::sqs_client(&config);
        let ecs = crate::aws::ecs_client(&config);
        let mut stack = Stack::provision(&config, &options.stack).await?;
        ensure_bucket(&s3, &options.model_bucket).await?;
        let (model_uri, models) = match &options.models {
            LocalModels::File(model) => {
                let uri = upload_model(&s3, &options.model_bucket, model).await?;
                (uri.clone(), TriggerModels::File(uri))
            }
            LocalModels::Repository { folder, default } => {
                upload_folder(&s3, &options.model_bucket, REPOSITORY_PREFIX, folder).await?;
                let root = format!("s3://{}/{REPOSITORY_PREFIX}", options.model_bucket);
                (root.clone(), TriggerModels::Repository { root, default: default.clone() })
            }
        };
        let model_settings = model_substitutions(&options, &model_uri);
        stack.create_identities(model_settings, &options.revoked).await?;
        let trigger_key = stack.credentials_of(Program::Trigger)?.clone();
        let worker_key = stack.credentials_of(Program::Worker)?.clone();
        // Lambda sends the events the function failed on to its dead-letter queue with the
        // function's role.
        let trigger_sqs = crate::aws::sqs_client(&crate::aws::sdk_config_as(&stack.endpoint, &trigger_key).await);

        let trigger_settings = TriggerSettings {
            models,
            input_prefix: options.input_prefix.clone(),
            output_prefix: options.output_prefix.clone(),
            reports_prefix: options.reports_prefix.clone(),
            max_workers: options.max_workers,
            shard_bytes: options.shard_bytes,
            rust_log: options.trigger_rust_log.clone(),
        };
        let mut environment = stack.trigger_environment(&trigger_settings);
        environment.extend(options.trigger_env_overrides.clone());
        let mut function = FunctionConfig::new(trigger_binary, environment);
        function.timeout = options.trigger_timeout;
        let trigger = Arc::new(LambdaFunction::start_with(function).await?);
        let mut fargate_options = options.fargate.clone();
        fargate_options.task_role_credentials.insert(Program::Worker.role_arn(), worker_key);
        let fargate = FargateEmulator::start_with(
            ecs.clone(),
            stack.cluster_name.clone(),
            WorkerCommand::new(worker_binary),
            fargate_options,
        );
        let mut events = S3EventSource::new(s3.clone(), stack.input_bucket.clone());
        if !options.input_prefix.is_empty() {
            events = events.with_prefix(options.input_prefix.clone());
        }
        events.prime().await?;
        let trigger_dead_letter_queue =
            DeadLetterQueue { sqs: trigger_sqs, queue_url: stack.trigger_dead_letter_queue_url.clone() };
        let schedule = options.reconcile_every.map(|period| {
            tokio::spawn(reconcile_on_schedule(Arc::clone(&trigger), trigger_dead_letter_queue.clone(), period))
        });
        Ok(Self {
            config,
            stack,
            s3,
            sqs,
            ecs,
            model_uri,
            output_prefix: options.output_prefix.clone(),
            reports_prefix: options.reports_prefix.clone(),
            trigger_dead_letter_queue,
            events,
            completion_events: Mutex::default(),
            schedule,
            fargate,
            trigger,
            moto,
        })
    }

    /// moto's endpoint URL.
    pub fn endpoint(&self) -> String {
        self.moto.endpoint()
    }

    pub fn moto(&self) -> &MotoServer {
        &self.moto
    }

    pub fn trigger(&self) -> &LambdaFunction {
        &self.trigger
    }

    /// The trigger's dead-letter queue, written to with the trigger's role as Lambda does.
    pub fn trigger_dead_letter_queue(&self) -> &DeadLetterQueue {
        &self.trigger_dead_letter_queue
    }

    pub fn fargate(&self) -> &FargateEmulator {
        &self.fargate
    }

    /// Uploads a local file to the input bucket under `key` (default: the file name).
    pub async fn upload_file(&self, path: &Path, key: Option<&str>) -> Result<String> {
        let key = match key {
            Some(key) => key.to_owned(),
            None => file_name(path)?,
        };
        let body = ByteStream::from_path(path).await.with_context(|| format!("cannot read {}", path.display()))?;
        self.s3
            .put_object()
            .bucket(&self.stack.input_bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot upload {} to s3://{}/{key}", path.display(), self.stack.input_bucket))?;
        Ok(key)
    }

    /// Puts `body` into the input bucket under `key`.
    pub async fn put_input(&self, key: &str, body: impl Into<Vec<u8>>) -> Result<()> {
        self.s3
            .put_object()
            .bucket(&self.stack.input_bucket)
            .key(key)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .with_context(|| format!("cannot put s3://{}/{key}", self.stack.input_bucket))?;
        Ok(())
    }

    /// Looks for new or changed objects in the input bucket and invokes the trigger for each,
    /// the way S3 would (asynchronously, retries, then the trigger's dead-letter queue).
    pub async fn deliver_new_uploads(&mut self) -> Result<Vec<Delivery>> {
        let mut deliveries = Vec::new();
        for event in self.events.poll().await? {
            let key =
                crate::events::decode_key(event["Records"][0]["s3"]["object"]["key"].as_str().unwrap_or_default());
            tracing::info!(key = %key, "delivering an S3 event to the trigger");
            let invocation =
                self.trigger.invoke_async_like_s3(event.clone(), Some(&self.trigger_dead_letter_queue)).await?;
            deliveries.push(Delivery { key, event, invocation });
        }
        Ok(deliveries)
    }

    /// Messages in the job queue.
    pub async fn queue_depth(&self) -> Result<QueueDepth> {
        queue_depth(&self.sqs, &self.stack.queue_url).await
    }

    /// Messages in the job queue's dead-letter queue.
    pub async fn dead_lettered_jobs(&self) -> Result<u64> {
        Ok(queue_depth(&self.sqs, &self.stack.dead_letter_queue_url).await?.total())
    }

    /// Events in the trigger's dead-letter queue.
    pub async fn dead_lettered_events(&self) -> Result<u64> {
        Ok(queue_depth(&self.sqs, &self.stack.trigger_dead_letter_queue_url).await?.total())
    }

    /// Delivers events for new uploads and waits until the job queue is empty, no worker runs and
    /// no new worker is about to start. Fails after `timeout` with what is still going on.
    pub async fn wait_until_drained(&mut self, timeout: Duration) -> Result<DrainReport> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut deliveries = Vec::new();
        loop {
            let delivered = self.deliver_new_uploads().await?;
            let quiet = delivered.is_empty();
            deliveries.extend(delivered);
            let depth = self.queue_depth().await?;
            if quiet && depth.total() == 0 && self.fargate.running().is_empty() {
                // A task the trigger started may not have been picked up yet: wait for two quiet
                // polls of the cluster, then look at the queue again.
                let remaining = deadline.saturating_duration_since(Instant::now());
                self.fargate.wait_idle(remaining.max(Duration::from_secs(2))).await?;
                if self.queue_depth().await?.total() == 0 && self.fargate.running().is_empty() {
                    return Ok(DrainReport {
                        elapsed: started.elapsed(),
                        deliveries,
                        workers_started: self.fargate.started_count(),
                        dead_lettered_jobs: self.dead_lettered_jobs().await?,
                        dead_lettered_events: self.dead_lettered_events().await?,
                    });
                }
            }
            if Instant::now() >= deadline {
                bail!(self.stall_report(timeout, depth).await);
            }
            sleep(Duration::from_millis(250)).await;
        }
    }

    /// The key of the report of `input_key`.
    pub fn report_key(&self, input_key: &str) -> String {
        format!("{}{}{input_key}{REPORT_SUFFIX}", self.output_prefix, self.reports_prefix)
    }

    /// The key of the errors file of `input_key`.
    pub fn errors_key(&self, input_key: &str) -> String {
        format!("{}{}{input_key}{ERRORS_SUFFIX}", self.output_prefix, self.reports_prefix)
    }

    /// Every output set in the output bucket, by key.
    pub async fn outputs(&self) -> Result<Vec<OutputSet>> {
        let mut sets: std::collections::BTreeMap<String, OutputSet> = std::collections::BTreeMap::new();
        for key in list_keys(&self.s3, &self.stack.output_bucket).await? {
            // Reports and errors files may sit under a prefix of their own.
            let reports = format!("{}{}", self.output_prefix, self.reports_prefix);
            let apart = |base: &str| match base.strip_prefix(&reports) {
                Some(input) if !self.reports_prefix.is_empty() => format!("{}{input}", self.output_prefix),
                _ => base.to_owned(),
            };
            let (base, kind) = if let Some(base) = key.strip_suffix(REPORT_SUFFIX) {
                (apart(base), 1)
            } else if let Some(base) = key.strip_suffix(ERRORS_SUFFIX) {
                (apart(base), 2)
            } else if let Some(base) =
                key.strip_suffix(PARQUET_OUTPUT_SUFFIX).or_else(|| key.strip_suffix(OUTPUT_SUFFIX))
            {
                (base.to_owned(), 0)
            } else {
                continue;
            };
            let set = sets.entry(base.clone()).or_insert_with(|| OutputSet {
                base_key: base.clone(),
                output_key: None,
                report_key: None,
                errors_key: None,
            });
            let slot = match kind {
                0 => &mut set.output_key,
                1 => &mut set.report_key,
                _ => &mut set.errors_key,
            };
            *slot = Some(key.clone());
        }
        Ok(sets.into_values().collect())
    }

    /// An output object's content as text.
    pub async fn read_output(&self, key: &str) -> Result<String> {
        self.read_output_range(key, None).await
    }

    /// The first `rows` rows of a Parquet output as CSV lines (after its header), and how many
    /// rows it holds: its footer and first row group, read by ranged GETs.
    pub async fn read_parquet_head(&self, key: &str, rows: usize) -> Result<(Vec<String>, u64)> {
        let head = self.s3.head_object().bucket(&self.stack.output_bucket).key(key).send().await;
        let size = head.with_context(|| format!("cannot find s3://{}/{key}", self.stack.output_bucket))?;
        let object = OutputObject {
            s3: self.s3.clone(),
            bucket: self.stack.output_bucket.clone(),
            key: key.to_owned(),
            size: size.content_length().unwrap_or(0).max(0) as u64,
            runtime: tokio::runtime::Handle::current(),
        };
        let preview =
            tokio::task::spawn_blocking(move || worker::engine::formats::parquet::preview(Arc::new(object), rows));
        preview.await?.with_context(|| format!("cannot read s3://{}/{key} as Parquet", self.stack.output_bucket))
    }

    /// The first `bytes` of an output object (or less), as text: enough to show its first lines
    /// however big it is.
    pub async fn read_output_head(&self, key: &str, bytes: u64) -> Result<String> {
        self.read_output_range(key, Some(format!("bytes=0-{}", bytes.saturating_sub(1)))).await
    }

    async fn read_output_range(&self, key: &str, range: Option<String>) -> Result<String> {
        let object = self
            .s3
            .get_object()
            .bucket(&self.stack.output_bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .with_context(|| format!("cannot get s3://{}/{key}", self.stack.output_bucket))?;
        let bytes = object
            .body
            .collect()
            .await
            .with_context(|| format!("cannot read s3://{}/{key}", self.stack.output_bucket))?
            .into_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// An output set's report, parsed.
    pub async fn read_report(&self, set: &OutputSet) -> Result<Option<Value>> {
        let Some(key) = &set.report_key else {
            return Ok(None);
        };
        let text = self.read_output(key).await?;
        let report = serde_json::from_str(&text).with_context(|| format!("the report {key} is not JSON"))?;
        Ok(Some(report))
    }

    /// Every completion event the workers have put on the event bus so far, oldest first.
    pub async fn completion_events(&self) -> Result<Vec<Value>> {
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.stack.completion_events_queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .context("cannot receive completion events")?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let event = serde_json::from_str(message.body().unwrap_or_default())
                    .context("a completion event is not JSON")?;
                self.completion_events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
                if let Some(receipt) = message.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.stack.completion_events_queue_url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                        .context("cannot delete a completion event")?;
                }
            }
        }
        Ok(self.completion_events.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Stops the schedule, the workers, the trigger and moto, in that order.
    pub async fn shutdown(self) {
        let Self { schedule, fargate, trigger, moto, .. } = self;
        if let Some(schedule) = schedule {
            schedule.abort();
            let _ = schedule.await;
        }
        fargate.shutdown().await;
        if let Ok(trigger) = Arc::try_unwrap(trigger) {
            trigger.stop().await;
        }
        moto.stop().await;
    }

    async fn stall_report(&self, timeout: Duration, depth: QueueDepth) -> String {
        let running = self.fargate.running();
        let finished = self.fargate.finished();
        let mut message = format!(
            "the pipeline did not drain within {} s: job queue holds {} visible, {} in flight; \
             {} worker(s) running, {} started in all",
            timeout.as_secs(),
            depth.visible,
            depth.in_flight,
            running.len(),
            self.fargate.started_count()
        );
        if running.is_empty() && depth.total() > 0 {
            message.push_str("; no worker is running although jobs wait (did the trigger call RunTask? see its log)");
        }
        let failed: Vec<&FinishedWorker> = finished.iter().filter(|w| !w.succeeded()).collect();
        if !failed.is_empty() {
            let reasons: Vec<&str> = failed.iter().map(|w| w.stopped_reason.as_str()).collect();
            message.push_str(&format!("; failed workers: {}", reasons.join("; ")));
        }
        if let Ok(count) = self.dead_lettered_jobs().await
            && count > 0
        {
            message.push_str(&format!("; {count} job(s) in the dead-letter queue"));
        }
        if let Some(error) = self.fargate.last_error() {
            message.push_str(&format!("; ECS: {error}"));
        }
        message
    }
}

/// The EventBridge event of the template's `Reconcile` schedule.
pub fn scheduled_event() -> Value {
    serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": crate::aws::ACCOUNT_ID,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": crate::aws::REGION,
        "resources": [format!("arn:aws:events:{}:{}:rule/sluice-reconcile", crate::aws::REGION, crate::aws::ACCOUNT_ID)],
        "detail": {},
    })
}

/// Invokes the trigger with the scheduled event every `period`, as EventBridge does.
async fn reconcile_on_schedule(trigger: Arc<LambdaFunction>, dead_letters: DeadLetterQueue, period: Duration) {
    loop {
        sleep(period).await;
        match trigger.invoke_async_like_s3(scheduled_event(), Some(&dead_letters)).await {
            Ok(invocation) if invocation.succeeded() => {}
            Ok(invocation) => tracing::warn!(?invocation, "the scheduled reconciliation failed"),
            Err(err) => tracing::warn!("cannot invoke the scheduled reconciliation: {err:#}"),
        }
    }
}

/// Uploads every file under `folder` to `s3://<bucket>/<prefix><path relative to folder>`.
async fn upload_folder(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str, folder: &Path) -> Result<()> {
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&dir).await.with_context(|| format!("cannot read {}", dir.display()))?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if entry.file_type().await?.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(folder).expect("under the folder").to_string_lossy().replace('\\', "/");
            let key = format!("{prefix}{relative}");
            let body = ByteStream::from_path(&path).await.with_context(|| format!("cannot read {}", path.display()))?;
            s3.put_object()
                .bucket(bucket)
                .key(&key)
                .body(body)
                .send()
                .await
                .with_context(|| format!("cannot upload {} to s3://{bucket}/{key}", path.display()))?;
        }
    }
    Ok(())
}

/// Uploads the model (and its sidecar `<model>.json`, if any) and returns the model's URI.
async fn upload_model(s3: &aws_sdk_s3::Client, bucket: &str, model: &Path) -> Result<String> {
    let name = file_name(model)?;
    let mut files = vec![(model.to_path_buf(), name.clone())];
    let mut sidecar = model.as_os_str().to_owned();
    sidecar.push(".json");
    let sidecar = PathBuf::from(sidecar);
    if sidecar.is_file() {
        files.push((sidecar, format!("{name}.json")));
    }
    for (path, key) in files {
        let body = ByteStream::from_path(&path).await.with_context(|| format!("cannot read {}", path.display()))?;
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot upload {} to s3://{bucket}/{key}", path.display()))?;
    }
    Ok(format!("s3://{bucket}/{name}"))
}

async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<QueueDepth> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .with_context(|| format!("cannot read the attributes of {queue_url}"))?;
    let count = |name: QueueAttributeName| {
        attributes.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    Ok(QueueDepth {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

/// Every key in `bucket`.
pub async fn list_keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(continuation.take())
            .send()
            .await
            .with_context(|| format!("cannot list bucket {bucket}"))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        match page.next_continuation_token() {
            Some(token) if page.is_truncated() == Some(true) => continuation = Some(token.to_owned()),
            _ => return Ok(keys),
        }
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name", path.display()))
}

/// An output object read by ranged GETs, for the engine's Parquet reader (on a blocking thread).
struct OutputObject {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    size: u64,
    runtime: tokio::runtime::Handle,
}

impl worker::engine::RangeRead for OutputObject {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, range: std::ops::Range<u64>) -> std::io::Result<bytes::Bytes> {
        self.runtime.block_on(async {
            let request = self.s3.get_object().bucket(&self.bucket).key(&self.key);
            let object =
                request
                    .range(format!("bytes={}-{}", range.start, range.end.saturating_sub(1)))
                    .send()
                    .await
                    .map_err(|e| std::io::Error::other(shared::aws_error::AwsError::from_sdk("S3", "GetObject", e)))?;
            let body = object.body.collect().await.map_err(std::io::Error::other)?;
            Ok(body.into_bytes())
        })
    }
}
