//! Runs a Lambda function binary locally the way Lambda runs a `provided.al2023` function: a
//! Runtime API server on 127.0.0.1 hands it events, and the function's environment holds only
//! what its configuration declares plus the standard `AWS_LAMBDA_*` variables.
//!
//! Like a function with reserved concurrency 1, one invocation runs at a time. As in Lambda, a
//! crash (`Runtime.ExitError`) or a time-out (`Sandbox.Timedout`) is a function error, and the
//! next invocation starts a fresh process (a cold start).
//!
//! [`LambdaFunction::invoke_async_like_s3`] mimics the asynchronous invocation S3 uses: retries
//! on function errors, then the event goes to the function's dead-letter queue.

mod runtime_api;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_sqs::types::MessageAttributeValue;
use serde_json::Value;
use tokio::process::Child;
use tokio::sync::Mutex;
use tokio::time::{Instant, sleep, sleep_until};

use crate::process;
use crate::process::{EnvMap, OutputTail};
use runtime_api::{InvocationResult, RuntimeApi};

/// An error the function reported (or that Lambda reports for it), with Lambda's two fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FunctionError {
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub error_message: String,
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.error_message)
    }
}

impl std::error::Error for FunctionError {}

/// How a function is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    /// The function's executable (its `bootstrap`).
    pub binary: PathBuf,
    /// Arguments for the executable (none for a real function).
    pub args: Vec<String>,
    /// `AWS_LAMBDA_FUNCTION_NAME`, also the log prefix.
    pub name: String,
    /// The function's configured environment.
    pub env: EnvMap,
    /// How long one invocation may run.
    pub timeout: Duration,
    /// Retries after a failed asynchronous invocation (Lambda: 0 to 2, default 2).
    pub async_retries: u32,
    /// Pause before each retry (Lambda waits about 1 and then 2 minutes; locally short).
    pub async_retry_delay: Duration,
}

impl FunctionConfig {
    /// A function named after the binary's file name, 30 s time-out, 2 quick async retries.
    pub fn new(binary: impl Into<PathBuf>, env: EnvMap) -> Self {
        let binary = binary.into();
        let name =
            binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "function".to_owned());
        Self {
            binary,
            args: Vec::new(),
            name,
            env,
            timeout: Duration::from_secs(30),
            async_retries: 2,
            async_retry_delay: Duration::from_millis(200),
        }
    }
}

/// Where failed asynchronous events go (the function's `DeadLetterConfig`).
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

/// What became of an asynchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum AsyncOutcome {
    /// An attempt succeeded with this response.
    Succeeded(Value),
    /// Every attempt failed; the event was sent to the dead-letter queue as this message.
    SentToDeadLetterQueue { message_id: String, error: FunctionError },
    /// Every attempt failed and there is no dead-letter queue: the event is lost (as in Lambda).
    Discarded { error: FunctionError },
}

/// The record of one asynchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncInvocation {
    /// Attempts made (1 plus retries).
    pub attempts: u32,
    pub outcome: AsyncOutcome,
}

impl AsyncInvocation {
    /// Whether the function handled the event (on the first try or a retry).
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, AsyncOutcome::Succeeded(_))
    }
}

/// Lines of the function's output kept for [`LambdaFunction::output`].
const FUNCTION_OUTPUT_LINES: usize = 5_000;

/// A function binary running under the local Runtime API; killed when dropped.
#[derive(Debug)]
pub struct LambdaFunction {
    config: FunctionConfig,
    function_arn: String,
    /// Held for the whole of an invocation: one at a time, like reserved concurrency 1.
    sandbox: Mutex<Option<Sandbox>>,
    /// The last lines the function printed, over all its sandboxes (its log stream).
    output: OutputTail,
}

/// One execution environment: a Runtime API server and the process polling it. A crashed or
/// timed-out sandbox is thrown away whole, so a stale long-poll of a dead process can never
/// swallow the next event.
#[derive(Debug)]
struct Sandbox {
    api: RuntimeApi,
    child: Child,
}

impl LambdaFunction {
    /// Starts `binary` with `env` (see [`FunctionConfig::new`] for the other settings).
    pub async fn start(binary: impl Into<PathBuf>, env: EnvMap) -> Result<Self> {
        Self::start_with(FunctionConfig::new(binary, env)).await
    }

    /// Starts the Runtime API and the function process.
    pub async fn start_with(config: FunctionConfig) -> Result<Self> {
        if !config.binary.is_file() {
            bail!("the function binary {} does not exist", config.binary.display());
        }
        let function_arn =
            format!("arn:aws:lambda:{}:{}:function:{}", crate::aws::REGION, crate::aws::ACCOUNT_ID, config.name);
        let output = OutputTail::keeping(FUNCTION_OUTPUT_LINES);
        let sandbox = Sandbox::start(&config, &function_arn, &output).await?;
        Ok(Self { config, function_arn, sandbox: Mutex::new(Some(sandbox)), output })
    }

    /// The last lines the function printed (up to 5,000), as its log stream holds them.
    pub fn output(&self) -> String {
        self.output.text()
    }

    /// The function's ARN, as the runtime sees it in `Lambda-Runtime-Invoked-Function-Arn`.
    pub fn function_arn(&self) -> &str {
        &self.function_arn
    }

    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Invokes the function synchronously (`RequestResponse`) and waits for its result. The inner
    /// `Err` is the function's error, including a crash (`Runtime.ExitError`), a failed start-up
    /// (what the function posted to `init/error`) and a time-out (`Sandbox.Timedout`); the outer
    /// one means the harness itself failed.
    pub async fn invoke(&self, payload: Value) -> Result<Result<Value, FunctionError>> {
        let body = serde_json::to_vec(&payload).context("cannot serialise the payload")?;
        let mut slot = self.sandbox.lock().await;
        let reusable = match slot.as_mut() {
            Some(sandbox) => match sandbox.child.try_wait().context("cannot check on the function process")? {
                None => true,
                Some(status) => {
                    tracing::warn!(function = %self.config.name, %status, "function process had exited; starting a new one");
                    false
                }
            },
            None => false,
        };
        if !reusable {
            if let Some(dead) = slot.take() {
                dead.stop().await;
            }
            *slot = Some(Sandbox::start(&self.config, &self.function_arn, &self.output).await?);
        }
        let Some(sandbox) = slot.as_mut() else {
            bail!("no sandbox for {}", self.config.name);
        };
        let (request_id, mut result) = sandbox.api.enqueue(body.into(), self.config.timeout);
        let deadline = Instant::now() + self.config.timeout;
        let failure = loop {
            tokio::select! {
                answer = &mut result => {
                    return match answer {
                        Ok(InvocationResult::Response(body)) => Ok(Ok(parse_response(&body))),
                        Ok(InvocationResult::Error(error)) => Ok(Err(error)),
                        Err(_) => bail!("the Runtime API dropped invocation {request_id}"),
                    };
                }
                () = sleep(Duration::from_millis(50)) => {
                    let Some(status) = sandbox.child.try_wait().context("cannot check on the function process")? else {
                        continue;
                    };
                    tracing::warn!(function = %self.config.name, %status, "function process exited during an invocation");
                    break sandbox.api.take_init_error().unwrap_or_else(|| FunctionError {
                        error_type: "Runtime.ExitError".to_owned(),
                        error_message: format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
                    });
                }
                () = sleep_until(deadline) => {
                    tracing::warn!(function = %self.config.name, "invocation timed out; stopping the function process");
                    break FunctionError {
                        error_type: "Sandbox.Timedout".to_owned(),
                        error_message: format!(
                            "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                            self.config.timeout.as_secs_f64()
                        ),
                    };
                }
            }
        };
        // The sandbox is spent: the next invocation gets a fresh one.
        if let Some(spent) = slot.take() {
            spent.stop().await;
        }
        Ok(Err(failure))
    }

    /// Invokes the function the way S3 does (`Event` invocation type): on a function error it
    /// retries up to `async_retries` times after `async_retry_delay`, and when every attempt
    /// failed it sends the event to `dead_letter_queue` (body: the event; message attributes
    /// `RequestID`, `ErrorCode`, `ErrorMessage`, as Lambda does).
    pub async fn invoke_async_like_s3(
        &self,
        payload: Value,
        dead_letter_queue: Option<&DeadLetterQueue>,
    ) -> Result<AsyncInvocation> {
        let mut attempts = 0;
        let error = loop {
            attempts += 1;
            match self.invoke(payload.clone()).await? {
                Ok(response) => {
                    return Ok(AsyncInvocation { attempts, outcome: AsyncOutcome::Succeeded(response) });
                }
                Err(error) if attempts <= self.config.async_retries => {
                    tracing::warn!(function = %self.config.name, attempt = attempts, "asynchronous invocation failed, retrying: {error}");
                    sleep(self.config.async_retry_delay).await;
                }
                Err(error) => break error,
            }
        };
        let Some(queue) = dead_letter_queue else {
            tracing::error!(function = %self.config.name, attempts, "asynchronous invocation failed; no dead-letter queue, the event is dropped: {error}");
            return Ok(AsyncInvocation { attempts, outcome: AsyncOutcome::Discarded { error } });
        };
        let body = serde_json::to_string(&payload).context("cannot serialise the event")?;
        let sent = queue
            .sqs
            .send_message()
            .queue_url(&queue.queue_url)
            .message_body(body)
            .message_attributes("RequestID", string_attribute(&uuid::Uuid::new_v4().to_string())?)
            .message_attributes("ErrorCode", number_attribute("200")?)
            .message_attributes("ErrorMessage", string_attribute(&error.to_string())?)
            .send()
            .await
            .with_context(|| format!("cannot send the failed event to {}", queue.queue_url))?;
        tracing::error!(function = %self.config.name, attempts, "asynchronous invocation failed; event sent to the dead-letter queue: {error}");
        Ok(AsyncInvocation {
            attempts,
            outcome: AsyncOutcome::SentToDeadLetterQueue {
                message_id: sent.message_id().unwrap_or_default().to_owned(),
                error,
            },
        })
    }

    /// Stops the function process and the Runtime API, waiting until the process has exited.
    pub async fn stop(self) {
        if let Some(sandbox) = self.sandbox.lock().await.take() {
            sandbox.stop().await;
        }
    }
}

impl Drop for LambdaFunction {
    fn drop(&mut self) {
        if let Some(sandbox) = self.sandbox.get_mut().as_mut() {
            sandbox.kill_now();
        }
    }
}

impl Sandbox {
    async fn start(config: &FunctionConfig, function_arn: &str, output: &OutputTail) -> Result<Self> {
        let api = RuntimeApi::start(function_arn.to_owned()).await?;
        let mut env = config.env.clone();
        let lambda_vars = [
            ("AWS_LAMBDA_RUNTIME_API", api.address().to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", config.name.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", config.name)),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "local".to_owned()),
        ];
        env.extend(lambda_vars.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let mut command = process::new_group_command(&config.binary);
        command.args(&config.args);
        process::set_clean_env(&mut command, &env);
        let mut child =
            command.spawn().with_context(|| format!("cannot start the function binary {}", config.binary.display()))?;
        process::forward_output(&mut child, &config.name, Some(output));
        tracing::info!(function = %config.name, runtime_api = %api.address(), "function process started");
        Ok(Self { api, child })
    }

    fn kill_now(&mut self) {
        if let Some(pid) = self.child.id() {
            process::signal_process_group(pid, process::Signal::Kill);
        }
        let _ = self.child.start_kill();
    }

    async fn stop(mut self) {
        self.kill_now();
        let _ = self.child.wait().await;
    }
}

fn parse_response(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .context("cannot build a message attribute")
}

fn number_attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(value)
        .build()
        .context("cannot build a message attribute")
}
