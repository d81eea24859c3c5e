//! Emulates Fargate for tasks started through moto's ECS API: every task of the cluster that
//! wants to run gets a local process (the worker binary) with that task's container environment
//! (task definition merged with the `RunTask` overrides) and the credentials of its task role,
//! and when the process exits the task is stopped with "Essential container in task exited", as
//! ECS does.
//!
//! Like ECS, stopping a task from outside (`StopTask`) sends SIGTERM to its process and SIGKILL
//! after the stop timeout. moto's `lastStatus` advances on every describe, so the emulator only
//! looks at which tasks are listed with desired status `RUNNING`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_ecs::types::{DesiredStatus, Task};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use crate::iam::AccessKey;
use crate::process::EnvMap;
use crate::process::{self, OutputTail, Signal};

/// Lines of a worker's output kept for tests and error messages: a worker logs a few lines a
/// job, so this holds whole runs of hundreds of files.
const WORKER_OUTPUT_LINES: usize = 20_000;

/// What to run for each task: the worker binary, or a stand-in in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl WorkerCommand {
    /// `program` without arguments (what a container's entry point is).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self { program: program.into(), args: Vec::new() }
    }

    /// `program` with `args`.
    pub fn with_args(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { program: program.into(), args: args.into_iter().map(Into::into).collect() }
    }
}

/// The emulator's timing, cores and task roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FargateOptions {
    /// How often the cluster's tasks are listed.
    pub poll_interval: Duration,
    /// Between SIGTERM and SIGKILL when a task is stopped from outside (ECS: `stopTimeout`, 30 s).
    pub stop_timeout: Duration,
    /// Hold each task to this many cores of its own (with `taskset`), as a Fargate task has its
    /// vCPUs: task n gets cores n*k to n*k+k-1, counted round the machine's. `None`: no limit.
    pub task_cpus: Option<usize>,
    /// Task role ARN -> the key a task with that role runs with, as ECS hands a task its role's
    /// credentials. A task whose role is not here gets none, and its AWS calls fail.
    pub task_role_credentials: BTreeMap<String, AccessKey>,
}

impl Default for FargateOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(300),
            stop_timeout: Duration::from_secs(30),
            task_cpus: None,
            task_role_credentials: BTreeMap::new(),
        }
    }
}

/// The cores of the `slot`th task with `per_task` cores each, on a machine of `cores`.
pub fn task_cores(slot: usize, per_task: usize, cores: usize) -> Vec<usize> {
    (0..per_task).map(|i| (slot * per_task + i) % cores.max(1)).collect()
}

/// A worker process that is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningWorker {
    pub task_arn: String,
    pub pid: u32,
}

/// A worker process that has ended (or could not start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedWorker {
    pub task_arn: String,
    /// The exit code, when the process exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    /// The reason given to `StopTask`.
    pub stopped_reason: String,
    pub ran_for: Duration,
    /// What the process printed (its last lines, if it printed very many).
    pub output: String,
}

impl FinishedWorker {
    /// Whether the process exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

#[derive(Debug)]
enum WorkerState {
    Running {
        pid: u32,
        control: mpsc::UnboundedSender<Signal>,
        /// Set once the task was stopped from outside and SIGTERM sent.
        stop_requested: bool,
        output: OutputTail,
    },
    Finished(FinishedWorker),
}

#[derive(Debug, Default)]
struct State {
    /// Task ARNs already handled (started, or failed to start).
    seen: HashSet<String>,
    /// In start order.
    workers: Vec<(String, WorkerState)>,
    /// Worker processes spawned.
    started: usize,
    /// The most worker processes that ran at the same time.
    most_running: usize,
    /// Completed poll cycles.
    polls: u64,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    ecs: aws_sdk_ecs::Client,
    cluster: String,
    command: WorkerCommand,
    options: FargateOptions,
    state: Mutex<State>,
    /// Task definition ARN -> what the emulator needs of it.
    task_definitions: tokio::sync::Mutex<HashMap<String, TaskDefinition>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running emulator; stops (and kills every worker process) when dropped.
#[derive(Debug)]
pub struct FargateEmulator {
    shared: Arc<Shared>,
    poller: JoinHandle<()>,
}

impl FargateEmulator {
    /// Runs `worker_binary` for the tasks of `cluster`, with default timing.
    pub fn start(ecs: aws_sdk_ecs::Client, cluster: impl Into<String>, worker_binary: impl Into<PathBuf>) -> Self {
        Self::start_with(ecs, cluster, WorkerCommand::new(worker_binary), FargateOptions::default())
    }

    /// Runs `command` for the tasks of `cluster`. Must be called within a tokio runtime.
    pub fn start_with(
        ecs: aws_sdk_ecs::Client,
        cluster: impl Into<String>,
        command: WorkerCommand,
        options: FargateOptions,
    ) -> Self {
        let shared = Arc::new(Shared {
            ecs,
            cluster: cluster.into(),
            command,
            options,
            state: Mutex::new(State::default()),
            task_definitions: tokio::sync::Mutex::new(HashMap::new()),
        });
        let poller = tokio::spawn(poll_forever(Arc::clone(&shared)));
        Self { shared, poller }
    }

    /// How many worker processes were started so far.
    pub fn started_count(&self) -> usize {
        self.shared.state().started
    }

    /// The worker processes running now.
    pub fn running(&self) -> Vec<RunningWorker> {
        self.shared
            .state()
            .workers
            .iter()
            .filter_map(|(task_arn, worker)| match worker {
                WorkerState::Running { pid, .. } => Some(RunningWorker { task_arn: task_arn.clone(), pid: *pid }),
                WorkerState::Finished(_) => None,
            })
            .collect()
    }

    /// The most worker processes that ran at the same time so far.
    pub fn most_running(&self) -> usize {
        self.shared.state().most_running
    }

    /// What a worker printed so far (running or finished).
    pub fn output_of(&self, task_arn: &str) -> Option<String> {
        self.shared.state().workers.iter().find(|(arn, _)| arn == task_arn).map(|(_, worker)| match worker {
            WorkerState::Running { output, .. } => output.text(),
            WorkerState::Finished(finished) => finished.output.clone(),
        })
    }

    /// The workers that ended, in start order.
    pub fn finished(&self) -> Vec<FinishedWorker> {
        self.shared
            .state()
            .workers
            .iter()
            .filter_map(|(_, worker)| match worker {
                WorkerState::Finished(finished) => Some(finished.clone()),
                WorkerState::Running { .. } => None,
            })
            .collect()
    }

    /// The last error from listing or describing tasks, if the latest attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.shared.state().last_error.clone()
    }

    /// Sends `signal` to the worker process of `task_arn` (SIGTERM: a Spot reclaim; SIGKILL: a crash).
    pub fn kill(&self, task_arn: &str, signal: Signal) -> Result<()> {
        let state = self.shared.state();
        match state.workers.iter().find(|(arn, _)| arn == task_arn) {
            Some((_, WorkerState::Running { control, .. })) => {
                control.send(signal).map_err(|_| anyhow::anyhow!("the worker of {task_arn} has just exited"))
            }
            Some((_, WorkerState::Finished(_))) => {
                bail!("the worker of {task_arn} has already exited")
            }
            None => bail!("no worker was started for task {task_arn}"),
        }
    }

    /// Waits until no worker runs and two full polls of the cluster found nothing new to start.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut quiet_since: Option<(u64, usize)> = None;
        loop {
            let (running, polls, started, last_error) = {
                let state = self.shared.state();
                let running = state
                    .workers
                    .iter()
                    .filter(|(_, w)| matches!(w, WorkerState::Running { .. }))
                    .map(|(arn, _)| arn.clone())
                    .collect::<Vec<_>>();
                (running, state.polls, state.workers.len(), state.last_error.clone())
            };
            if running.is_empty() {
                match quiet_since {
                    Some((polls_then, started_then)) if started_then == started => {
                        if polls >= polls_then + 2 {
                            return Ok(());
                        }
                    }
                    _ => quiet_since = Some((polls, started)),
                }
            } else {
                quiet_since = None;
            }
            if Instant::now() >= deadline {
                let mut message = format!("the Fargate emulator was not idle after {timeout:?}");
                if !running.is_empty() {
                    message.push_str(&format!("; still running: {}", running.join(", ")));
                }
                if let Some(error) = last_error {
                    message.push_str(&format!("; last ECS error: {error}"));
                }
                bail!(message);
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops polling, kills every running worker (its ECS task is then stopped) and waits for them.
    pub async fn shutdown(self) {
        self.poller.abort();
        let controls: Vec<_> = self
            .shared
            .state()
            .workers
            .iter()
            .filter_map(|(_, w)| match w {
                WorkerState::Running { control, .. } => Some(control.clone()),
                WorkerState::Finished(_) => None,
            })
            .collect();
        for control in controls {
            let _ = control.send(Signal::Kill);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.running().is_empty() && Instant::now() < deadline {
            sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FargateEmulator {
    fn drop(&mut self) {
        self.poller.abort();
        // The supervisors may never run again (the runtime may be shutting down): kill the
        // process groups here; each Child's kill_on_drop covers the rest.
        for (_, worker) in &self.shared.state().workers {
            if let WorkerState::Running { pid, .. } = worker {
                process::signal_process_group(*pid, Signal::Kill);
            }
        }
    }
}

async fn poll_forever(shared: Arc<Shared>) {
    loop {
        match poll_once(&shared).await {
            Ok(()) => {
                let mut state = shared.state();
                state.polls += 1;
                state.last_error = None;
            }
            Err(err) => {
                tracing::warn!(cluster = %shared.cluster, "Fargate emulator: {err:#}");
                shared.state().last_error = Some(format!("{err:#}"));
            }
        }
        sleep(shared.options.poll_interval).await;
    }
}

async fn poll_once(shared: &Arc<Shared>) -> Result<()> {
    let wanted = list_running_tasks(shared).await?;
    let wanted_set: HashSet<&String> = wanted.iter().collect();

    // Tasks stopped from outside: SIGTERM now, SIGKILL after the stop timeout.
    {
        let mut state = shared.state();
        for (task_arn, worker) in &mut state.workers {
            if let WorkerState::Running { control, stop_requested, .. } = worker
                && !*stop_requested
                && !wanted_set.contains(task_arn)
            {
                *stop_requested = true;
                tracing::info!(task = %task_arn, "task was stopped: sending SIGTERM to its worker");
                let _ = control.send(Signal::Term);
                let control = control.clone();
                let stop_timeout = shared.options.stop_timeout;
                tokio::spawn(async move {
                    sleep(stop_timeout).await;
                    let _ = control.send(Signal::Kill);
                });
            }
        }
    }

    let new: Vec<String> = {
        let state = shared.state();
        wanted.into_iter().filter(|arn| !state.seen.contains(arn)).collect()
    };
    if new.is_empty() {
        return Ok(());
    }
    for chunk in new.chunks(100) {
        let described = shared
            .ecs
            .describe_tasks()
            .cluster(&shared.cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .context("DescribeTasks failed")?;
        for task in described.tasks() {
            let Some(task_arn) = task.task_arn() else {
                continue;
            };
            shared.state().seen.insert(task_arn.to_owned());
            match container_environment(shared, task).await {
                Ok(env) => start_worker(shared, task_arn, &env).await,
                Err(err) => {
                    let reason = format!("CannotStartContainerError: {err:#}");
                    tracing::error!(task = %task_arn, "{reason}");
                    record_failure(shared, task_arn, reason).await;
                }
            }
        }
    }
    Ok(())
}

async fn list_running_tasks(shared: &Shared) -> Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut next_token = None;
    loop {
        let page = shared
            .ecs
            .list_tasks()
            .cluster(&shared.cluster)
            .desired_status(DesiredStatus::Running)
            .set_next_token(next_token)
            .send()
            .await
            .context("ListTasks failed")?;
        arns.extend(page.task_arns().iter().cloned());
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(arns),
        }
    }
}

/// Of a task definition: its task role, and its essential containers' names and environments.
type TaskDefinition = (Option<String>, Vec<(String, EnvMap)>);

/// The essential container's environment: the task definition's, overlaid with the task's
/// container overrides, with the credentials of the task's role.
async fn container_environment(shared: &Shared, task: &Task) -> Result<EnvMap> {
    let definition_arn = task.task_definition_arn().context("the task has no task definition ARN")?;
    let (task_role, containers) = {
        let mut cache = shared.task_definitions.lock().await;
        if let Some(containers) = cache.get(definition_arn) {
            containers.clone()
        } else {
            let described = shared
                .ecs
                .describe_task_definition()
                .task_definition(definition_arn)
                .send()
                .await
                .with_context(|| format!("DescribeTaskDefinition {definition_arn} failed"))?;
            let definition =
                described.task_definition().with_context(|| format!("no task definition {definition_arn}"))?;
            let containers: Vec<(String, EnvMap)> = definition
                .container_definitions()
                .iter()
                .filter(|c| c.essential().unwrap_or(true))
                .map(|c| {
                    let env = c
                        .environment()
                        .iter()
                        .filter_map(|kv| Some((kv.name()?.to_owned(), kv.value().unwrap_or_default().to_owned())))
                        .collect();
                    (c.name().unwrap_or_default().to_owned(), env)
                })
                .collect();
            let role = definition.task_role_arn().map(str::to_owned);
            cache.insert(definition_arn.to_owned(), (role.clone(), containers.clone()));
            (role, containers)
        }
    };
    let Some((container_name, mut env)) = containers.into_iter().next() else {
        bail!("task definition {definition_arn} has no essential container");
    };
    if let Some(overrides) = task.overrides() {
        for container in overrides.container_overrides() {
            if container.name().is_none_or(|name| name == container_name) {
                for kv in container.environment() {
                    if let Some(name) = kv.name() {
                        env.insert(name.to_owned(), kv.value().unwrap_or_default().to_owned());
                    }
                }
            }
        }
    }
    if let Some(key) = task_role.and_then(|role| shared.options.task_role_credentials.get(&role)) {
        env.extend(crate::aws::credentials_env(key));
    }
    Ok(env)
}

async fn start_worker(shared: &Arc<Shared>, task_arn: &str, env: &EnvMap) {
    let mut command = match shared.options.task_cpus {
        Some(per_task) => {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let slot = shared.state().started;
            let list: Vec<String> = task_cores(slot, per_task, cores).iter().map(ToString::to_string).collect();
            let mut command = process::new_group_command("taskset");
            command.args(["-c", &list.join(",")]).arg(&shared.command.program);
            command
        }
        None => process::new_group_command(&shared.command.program),
    };
    command.args(&shared.command.args);
    process::set_clean_env(&mut command, env);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let reason = format!("CannotStartContainerError: cannot start {}: {err}", shared.command.program.display());
            tracing::error!(task = %task_arn, "{reason}");
            record_failure(shared, task_arn, reason).await;
            return;
        }
    };
    let short_id = task_arn.rsplit('/').next().unwrap_or(task_arn);
    let short_id = &short_id[..short_id.len().min(8)];
    let output = OutputTail::keeping(WORKER_OUTPUT_LINES);
    process::forward_output(&mut child, &format!("worker {short_id}"), Some(&output));
    let pid = child.id().unwrap_or_default();
    let (control, control_receiver) = mpsc::unbounded_channel();
    let mut state = shared.state();
    state.started += 1;
    let running = output.clone();
    state.workers.push((task_arn.to_owned(), WorkerState::Running { pid, control, stop_requested: false, output }));
    let now_running = state.workers.iter().filter(|(_, w)| matches!(w, WorkerState::Running { .. })).count();
    state.most_running = state.most_running.max(now_running);
    drop(state);
    tracing::info!(task = %task_arn, pid, "worker process started");
    tokio::spawn(supervise(Arc::clone(shared), task_arn.to_owned(), child, control_receiver, running));
}

/// Waits for the worker to exit, passing on signals meanwhile, then records the exit and stops
/// the ECS task.
async fn supervise(
    shared: Arc<Shared>,
    task_arn: String,
    mut child: Child,
    mut control: mpsc::UnboundedReceiver<Signal>,
    output: OutputTail,
) {
    let started = Instant::now();
    let pid = child.id();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = control.recv() => match signal {
                Signal::Kill => {
                    if let Some(pid) = pid {
                        process::signal_process_group(pid, Signal::Kill);
                    }
                    let _ = child.start_kill();
                }
                // ECS sends SIGTERM to the container's main process only.
                Signal::Term => {
                    if let Some(pid) = pid {
                        process::signal_process(pid, Signal::Term);
                    }
                }
                // A frozen container freezes whole.
                Signal::Stop | Signal::Continue => {
                    if let Some(pid) = pid {
                        process::signal_process_group(pid, signal);
                    }
                }
            },
        }
    };
    let (exit_code, signal, reason) = match &status {
        Ok(status) => describe_exit(*status),
        Err(err) => (None, None, format!("Essential container in task exited (status unknown: {err})")),
    };
    tracing::info!(task = %task_arn, "worker process ended: {reason}");
    // Leftover children of the worker die with it, as they would with its container.
    if let Some(pid) = pid {
        process::signal_process_group(pid, Signal::Kill);
    }
    let finished = FinishedWorker {
        task_arn: task_arn.clone(),
        exit_code,
        signal,
        stopped_reason: reason.clone(),
        ran_for: started.elapsed(),
        output: output.text(),
    };
    set_finished(&shared, &task_arn, finished);
    stop_task(&shared, &task_arn, &reason).await;
}

fn describe_exit(status: ExitStatus) -> (Option<i32>, Option<i32>, String) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), None, format!("Essential container in task exited (exit code {code})")),
        (None, Some(signal)) => (
            None,
            Some(signal),
            format!("Essential container in task exited (killed by signal {signal}, exit code {})", 128 + signal),
        ),
        (None, None) => (None, None, "Essential container in task exited".to_owned()),
    }
}

async fn record_failure(shared: &Shared, task_arn: &str, reason: String) {
    let finished = FinishedWorker {
        task_arn: task_arn.to_owned(),
        exit_code: None,
        signal: None,
        stopped_reason: reason.clone(),
        ran_for: Duration::ZERO,
        output: String::new(),
    };
    shared.state().workers.push((task_arn.to_owned(), WorkerState::Finished(finished)));
    stop_task(shared, task_arn, &reason).await;
}

fn set_finished(shared: &Shared, task_arn: &str, finished: FinishedWorker) {
    let mut state = shared.state();
    if let Some((_, worker)) = state.workers.iter_mut().find(|(arn, _)| arn == task_arn) {
        *worker = WorkerState::Finished(finished);
    }
}

async fn stop_task(shared: &Shared, task_arn: &str, reason: &str) {
    let result = shared.ecs.stop_task().cluster(&shared.cluster).task(task_arn).reason(reason).send().await;
    if let Err(err) = result {
        tracing::warn!(task = %task_arn, "cannot stop the ECS task: {}", aws_sdk_ecs::error::DisplayErrorContext(err));
    }
}

#[cfg(test)]
mod tests {
    use super::task_cores;

    #[test]
    fn tasks_get_cores_of_their_own_round_the_machine() {
        assert_eq!(task_cores(0, 1, 2), [0]);
        assert_eq!(task_cores(1, 1, 2), [1]);
        assert_eq!(task_cores(2, 1, 2), [0], "a third task shares, as a third task on two cores must");
        assert_eq!(task_cores(1, 2, 4), [2, 3]);
    }
}
