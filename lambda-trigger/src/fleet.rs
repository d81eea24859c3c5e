//! The worker fleet: how many workers run, starting more, and the rule for how many are wanted.

use std::future::Future;

use aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, DesiredStatus, LaunchType, NetworkConfiguration,
    PlacementConstraint, PlacementConstraintType, Task, TaskStopCode,
};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use shared::aws_error::{AwsError, AwsErrorKind};

use crate::config::{Capacity, FleetSettings};
use crate::queue::{Backlog, JobQueue, QueueError};

/// What tasks started by the trigger say in `startedBy`.
pub const STARTED_BY: &str = "sluice-trigger";

/// The pause after one worker failed; it doubles with each further failure in a row.
pub const BACKOFF_FIRST: Duration = Duration::minutes(1);
/// The longest pause. ECS forgets stopped tasks after about an hour, so longer could not be kept.
pub const BACKOFF_MAX: Duration = Duration::minutes(60);

/// What the trigger needs from the place workers run.
pub trait WorkerFleet {
    /// Identifiers of the worker tasks that are running or about to (pending).
    fn active_workers(&self) -> impl Future<Output = Result<Vec<String>, FleetError>> + Send;
    /// Starts one worker; `client_token` makes the request idempotent.
    fn start_worker(&self, client_token: &str) -> impl Future<Output = Result<String, FleetError>> + Send;
    /// Worker tasks that stopped recently (ECS remembers them for about an hour), in any order.
    fn recent_stops(&self) -> impl Future<Output = Result<Vec<StoppedWorker>, FleetError>> + Send;
}

/// A worker task that has stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedWorker {
    pub task: String,
    pub stopped_at: DateTime<Utc>,
    /// Why it failed: it could not start, or it exited with a non-zero code. `None` for a
    /// worker that ended normally (the queue was empty, or it handed its job back on SIGTERM).
    pub failure: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Request(#[source] AwsError),
    #[error("ECS did not start a worker: {0}")]
    NotStarted(String),
}

/// What [`ensure_workers`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerPlan {
    pub backlog: Backlog,
    pub active: usize,
    pub wanted: usize,
    pub started: Vec<String>,
    /// Set when workers are wanted but none is started because the last ones failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_off: Option<Backoff>,
}

/// Workers failed in a row; no new one is started before `until`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Backoff {
    pub failures_in_a_row: u32,
    pub until: DateTime<Utc>,
    pub last_failure: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("could not count the jobs: {0}")]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// Starts workers when there is work and fewer workers run than wanted: one per job, waiting or
/// in hand (a busy worker is not free for the next job), at least one, at most `max_workers`.
///
/// When the last workers failed (a wrong image, a bad setting), starting more would only fail
/// again: the pause after `n` failures in a row is [`BACKOFF_FIRST`] doubled `n - 1` times, at
/// most [`BACKOFF_MAX`]. The jobs wait meanwhile, and the queue-age alarm tells someone.
///
/// Concurrent invocations that see the same fleet in the same minute compute the same client
/// tokens, so ECS starts each missing worker once rather than once per invocation.
pub async fn ensure_workers(
    queue: &impl JobQueue,
    fleet: &impl WorkerFleet,
    settings: &FleetSettings,
    just_enqueued: usize,
    now: DateTime<Utc>,
) -> Result<WorkerPlan, ReconcileError> {
    let backlog = queue.backlog().await?;
    let jobs = backlog.total().max(just_enqueued as u64);
    let mut plan = WorkerPlan { backlog, ..WorkerPlan::default() };
    if jobs == 0 {
        return Ok(plan);
    }
    let mut active = fleet.active_workers().await?;
    active.sort();
    plan.active = active.len();
    plan.wanted = usize::try_from(jobs).unwrap_or(usize::MAX).clamp(1, settings.max_workers);
    if plan.active >= plan.wanted {
        return Ok(plan);
    }
    if let Some(backoff) = start_backoff(&fleet.recent_stops().await?, now) {
        plan.backing_off = Some(backoff);
        return Ok(plan);
    }
    for slot in plan.active..plan.wanted {
        let token = client_token(settings, slot, &active, now);
        plan.started.push(fleet.start_worker(&token).await?);
    }
    Ok(plan)
}

/// The pause before starting workers again, when the most recent ones failed.
pub fn start_backoff(stops: &[StoppedWorker], now: DateTime<Utc>) -> Option<Backoff> {
    let mut stops: Vec<&StoppedWorker> = stops.iter().collect();
    stops.sort_by_key(|s| std::cmp::Reverse(s.stopped_at));
    let failures: Vec<&StoppedWorker> = stops.iter().take_while(|s| s.failure.is_some()).copied().collect();
    let newest = failures.first()?;
    let doublings = u32::try_from(failures.len() - 1).unwrap_or(u32::MAX).min(16);
    let pause = (BACKOFF_FIRST * 2i32.pow(doublings)).min(BACKOFF_MAX);
    let until = newest.stopped_at + pause;
    (now < until).then(|| Backoff {
        failures_in_a_row: failures.len() as u32,
        until,
        last_failure: format!("{}: {}", newest.task, newest.failure.as_deref().unwrap_or_default()),
    })
}

/// An idempotency token for starting the worker in `slot`, given the fleet as observed.
pub fn client_token(settings: &FleetSettings, slot: usize, active: &[String], now: DateTime<Utc>) -> String {
    let mut hash = Sha256::new();
    hash.update(settings.cluster.as_bytes());
    hash.update([0]);
    hash.update(settings.task_definition.as_bytes());
    hash.update([0]);
    hash.update(slot.to_le_bytes());
    for task in active {
        hash.update(task.as_bytes());
        hash.update([0]);
    }
    hash.update((now.timestamp() / 60).to_le_bytes());
    // ECS allows up to 64 characters.
    hex::encode(hash.finalize())
}

/// The task definition's family: what `ListTasks` filters by.
pub fn task_family(task_definition: &str) -> &str {
    let name = task_definition.rsplit_once('/').map_or(task_definition, |(_, name)| name);
    name.split_once(':').map_or(name, |(family, _)| family)
}

/// The `RunTask` request that starts one worker on the configured capacity: kept apart from
/// sending it so that its shape can be checked without a network.
pub fn run_task_request(
    client: &aws_sdk_ecs::Client,
    settings: &FleetSettings,
    client_token: &str,
) -> Result<RunTaskFluentBuilder, FleetError> {
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(settings.subnets.clone()))
        .set_security_groups(Some(settings.security_groups.clone()).filter(|g| !g.is_empty()))
        .assign_public_ip(if settings.assign_public_ip { AssignPublicIp::Enabled } else { AssignPublicIp::Disabled })
        .build()
        .map_err(|e| FleetError::Request(AwsError::other("ECS", "RunTask", AwsErrorKind::Request, e)))?;
    let request = client
        .run_task()
        .cluster(&settings.cluster)
        .task_definition(&settings.task_definition)
        .count(1)
        .started_by(STARTED_BY)
        .client_token(client_token)
        .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(vpc).build());
    // A launch type and a capacity provider strategy exclude each other in RunTask.
    let request = match &settings.capacity {
        Capacity::Fargate => request.launch_type(LaunchType::Fargate),
        Capacity::FargateSpot => request.capacity_provider_strategy(strategy("FARGATE_SPOT")?),
        Capacity::Ec2 { capacity_provider, instance_type } => {
            let request = request.capacity_provider_strategy(strategy(capacity_provider)?);
            match instance_type {
                Some(instance_type) => request.placement_constraints(
                    PlacementConstraint::builder()
                        .r#type(PlacementConstraintType::MemberOf)
                        .expression(format!("attribute:ecs.instance-type == {instance_type}"))
                        .build(),
                ),
                None => request,
            }
        }
    };
    Ok(request)
}

fn strategy(capacity_provider: &str) -> Result<CapacityProviderStrategyItem, FleetError> {
    CapacityProviderStrategyItem::builder()
        .capacity_provider(capacity_provider)
        .weight(1)
        .build()
        .map_err(|e| FleetError::Request(AwsError::other("ECS", "RunTask", AwsErrorKind::Request, e)))
}

/// Worker tasks on ECS (Fargate, Fargate Spot, or EC2 through a capacity provider).
pub struct EcsWorkerFleet {
    client: aws_sdk_ecs::Client,
    settings: FleetSettings,
}

impl EcsWorkerFleet {
    pub fn new(client: aws_sdk_ecs::Client, settings: FleetSettings) -> Self {
        Self { client, settings }
    }
}

impl WorkerFleet for EcsWorkerFleet {
    async fn active_workers(&self) -> Result<Vec<String>, FleetError> {
        // RUNNING as the desired status covers tasks still PROVISIONING or PENDING.
        let mut pages = self
            .client
            .list_tasks()
            .cluster(&self.settings.cluster)
            .family(task_family(&self.settings.task_definition))
            .desired_status(DesiredStatus::Running)
            .into_paginator()
            .send();
        let mut tasks = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| FleetError::Request(AwsError::from_sdk("ECS", "ListTasks", e)))?;
            tasks.extend(page.task_arns.unwrap_or_default());
        }
        Ok(tasks)
    }

    async fn start_worker(&self, client_token: &str) -> Result<String, FleetError> {
        let response = run_task_request(&self.client, &self.settings, client_token)?
            .send()
            .await
            .map_err(|e| FleetError::Request(AwsError::from_sdk("ECS", "RunTask", e)))?;
        if let Some(task) = response.tasks().first() {
            return Ok(task.task_arn().unwrap_or_default().to_owned());
        }
        let reason = response
            .failures()
            .first()
            .map(|f| format!("{} ({})", f.reason().unwrap_or("no reason given"), f.detail().unwrap_or("")))
            .unwrap_or_else(|| "RunTask returned neither a task nor a failure".into());
        Err(FleetError::NotStarted(reason))
    }

    async fn recent_stops(&self) -> Result<Vec<StoppedWorker>, FleetError> {
        // The newest hundred are plenty to see the last few in a row.
        let listed = self
            .client
            .list_tasks()
            .cluster(&self.settings.cluster)
            .family(task_family(&self.settings.task_definition))
            .desired_status(DesiredStatus::Stopped)
            .send()
            .await
            .map_err(|e| FleetError::Request(AwsError::from_sdk("ECS", "ListTasks", e)))?;
        let arns = listed.task_arns.unwrap_or_default();
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let described = self
            .client
            .describe_tasks()
            .cluster(&self.settings.cluster)
            .set_tasks(Some(arns))
            .send()
            .await
            .map_err(|e| FleetError::Request(AwsError::from_sdk("ECS", "DescribeTasks", e)))?;
        Ok(described.tasks().iter().filter_map(stopped_worker).collect())
    }
}

/// A stopped task as the back-off sees it; `None` while it has no stop time.
pub fn stopped_worker(task: &Task) -> Option<StoppedWorker> {
    let stopped_at = task.stopped_at()?;
    let stopped_at = DateTime::from_timestamp(stopped_at.secs(), stopped_at.subsec_nanos())?;
    let reason = task.stopped_reason().unwrap_or("no reason given");
    let failure = if task.stop_code() == Some(&TaskStopCode::TaskFailedToStart) {
        Some(format!("failed to start: {reason}"))
    } else {
        task.containers()
            .iter()
            .find_map(|c| c.exit_code().filter(|&code| code != 0).map(|code| (code, c.reason())))
            .map(|(code, container_reason)| match container_reason {
                Some(detail) => format!("exited with code {code}: {detail}"),
                None => format!("exited with code {code} ({reason})"),
            })
    };
    Some(StoppedWorker { task: task.task_arn().unwrap_or_default().to_owned(), stopped_at, failure })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FleetSettings {
        FleetSettings {
            cluster: "sluice".into(),
            task_definition: "sluice-worker".into(),
            subnets: vec!["subnet-1".into()],
            security_groups: vec![],
            assign_public_ip: false,
            max_workers: 3,
            capacity: Capacity::Fargate,
        }
    }

    /// A client that is never used to send: only to build requests.
    fn offline_client() -> aws_sdk_ecs::Client {
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .build();
        aws_sdk_ecs::Client::from_conf(config)
    }

    fn request_for(capacity: Capacity) -> aws_sdk_ecs::operation::run_task::builders::RunTaskInputBuilder {
        let settings = FleetSettings { capacity, ..settings() };
        run_task_request(&offline_client(), &settings, "token-1").unwrap().as_input().clone()
    }

    fn strategies(input: &aws_sdk_ecs::operation::run_task::builders::RunTaskInputBuilder) -> Vec<(String, i32)> {
        let items = input.get_capacity_provider_strategy().clone().unwrap_or_default();
        items.into_iter().map(|item| (item.capacity_provider, item.weight)).collect()
    }

    #[test]
    fn every_request_names_the_task_network_and_token() {
        for capacity in [
            Capacity::Fargate,
            Capacity::FargateSpot,
            Capacity::Ec2 { capacity_provider: "ec2".into(), instance_type: None },
        ] {
            let input = request_for(capacity);
            assert_eq!(input.get_cluster().as_deref(), Some("sluice"));
            assert_eq!(input.get_task_definition().as_deref(), Some("sluice-worker"));
            assert_eq!(*input.get_count(), Some(1));
            assert_eq!(input.get_started_by().as_deref(), Some(STARTED_BY));
            assert_eq!(input.get_client_token().as_deref(), Some("token-1"));
            let vpc = input.get_network_configuration().as_ref().and_then(|n| n.awsvpc_configuration()).unwrap();
            assert_eq!(vpc.subnets(), ["subnet-1"]);
            assert_eq!(vpc.assign_public_ip(), Some(&AssignPublicIp::Disabled));
        }
    }

    #[test]
    fn fargate_is_a_launch_type() {
        let input = request_for(Capacity::Fargate);
        assert_eq!(input.get_launch_type(), &Some(LaunchType::Fargate));
        assert!(input.get_capacity_provider_strategy().is_none());
        assert!(input.get_placement_constraints().is_none());
    }

    #[test]
    fn fargate_spot_is_a_capacity_provider_strategy_without_launch_type() {
        let input = request_for(Capacity::FargateSpot);
        assert_eq!(input.get_launch_type(), &None);
        assert_eq!(strategies(&input), [("FARGATE_SPOT".to_owned(), 1)]);
        assert!(input.get_placement_constraints().is_none());
    }

    #[test]
    fn ec2_uses_the_capacity_provider_and_pins_the_instance_type() {
        // GIVEN EC2 capacity with an instance type
        let capacity =
            Capacity::Ec2 { capacity_provider: "sluice-ec2".into(), instance_type: Some("g5.xlarge".into()) };
        // WHEN the request is built
        let input = request_for(capacity);
        // THEN it names the capacity provider, no launch type, and a memberOf constraint on the type
        assert_eq!(input.get_launch_type(), &None);
        assert_eq!(strategies(&input), [("sluice-ec2".to_owned(), 1)]);
        let constraints = input.get_placement_constraints().clone().unwrap();
        assert_eq!(constraints.len(), 1);
        assert_eq!(constraints[0].r#type(), Some(&PlacementConstraintType::MemberOf));
        assert_eq!(constraints[0].expression(), Some("attribute:ecs.instance-type == g5.xlarge"));
    }

    #[test]
    fn ec2_without_an_instance_type_has_no_constraint() {
        let input = request_for(Capacity::Ec2 { capacity_provider: "sluice-ec2".into(), instance_type: None });
        assert_eq!(strategies(&input), [("sluice-ec2".to_owned(), 1)]);
        assert!(input.get_placement_constraints().is_none());
    }

    #[test]
    fn family_comes_from_any_form_of_task_definition() {
        assert_eq!(task_family("sluice-worker"), "sluice-worker");
        assert_eq!(task_family("sluice-worker:7"), "sluice-worker");
        assert_eq!(task_family("arn:aws:ecs:us-east-1:123456789012:task-definition/sluice-worker:7"), "sluice-worker");
    }

    #[test]
    fn tokens_agree_for_the_same_view_and_differ_otherwise() {
        let now: DateTime<Utc> = "2026-11-21T08:00:10Z".parse().unwrap();
        let later_same_minute: DateTime<Utc> = "2026-11-21T08:00:50Z".parse().unwrap();
        let next_minute: DateTime<Utc> = "2026-11-21T08:01:00Z".parse().unwrap();
        let s = settings();
        let token = client_token(&s, 0, &[], now);
        assert_eq!(token.len(), 64);
        assert_eq!(token, client_token(&s, 0, &[], later_same_minute));
        assert_ne!(token, client_token(&s, 1, &[], now));
        assert_ne!(token, client_token(&s, 0, &["arn:task/1".into()], now));
        assert_ne!(token, client_token(&s, 0, &[], next_minute));
    }

    fn stop(minutes_ago: i64, failure: Option<&str>, now: DateTime<Utc>) -> StoppedWorker {
        StoppedWorker {
            task: format!("task/{minutes_ago}"),
            stopped_at: now - Duration::minutes(minutes_ago),
            failure: failure.map(str::to_owned),
        }
    }

    #[test]
    fn no_backoff_after_a_normal_stop_or_with_no_history() {
        let now: DateTime<Utc> = "2026-11-21T08:00:00Z".parse().unwrap();
        assert_eq!(start_backoff(&[], now), None);
        // The newest worker ended well; older failures no longer count.
        let stops = [stop(1, None, now), stop(2, Some("exited with code 1"), now)];
        assert_eq!(start_backoff(&stops, now), None);
    }

    #[test]
    fn each_failure_in_a_row_doubles_the_pause_up_to_the_maximum() {
        let now: DateTime<Utc> = "2026-11-21T08:00:00Z".parse().unwrap();
        // One failure just now: wait a minute.
        let one = start_backoff(&[stop(0, Some("CannotPullContainerError"), now)], now).unwrap();
        assert_eq!((one.failures_in_a_row, one.until), (1, now + BACKOFF_FIRST));
        assert!(one.last_failure.contains("CannotPullContainerError"), "{one:?}");
        // Three in a row, the newest 3 minutes ago: a 4-minute pause, 1 minute left.
        let three: Vec<_> = [3, 8, 14].iter().map(|&m| stop(m, Some("exited with code 1"), now)).collect();
        let backoff = start_backoff(&three, now).unwrap();
        assert_eq!(backoff.until, now + Duration::minutes(1));
        // ... and none once the pause is over.
        assert_eq!(start_backoff(&three, now + Duration::minutes(2)), None);
        // Twelve in a row never wait more than the maximum.
        let many: Vec<_> = (0..12).map(|m| stop(m * 5, Some("exited with code 2"), now)).collect();
        assert_eq!(start_backoff(&many, now).unwrap().until, now + BACKOFF_MAX);
    }

    #[test]
    fn a_stopped_task_is_a_failure_when_it_did_not_start_or_exited_non_zero() {
        use aws_sdk_ecs::primitives::DateTime as EcsTime;
        use aws_sdk_ecs::types::Container;
        let task = |stop_code: Option<TaskStopCode>, exit_code: Option<i32>| {
            Task::builder()
                .task_arn("arn:aws:ecs:us-east-1:123456789012:task/sluice/abc")
                .stopped_at(EcsTime::from_secs(1_795_000_000))
                .set_stop_code(stop_code)
                .stopped_reason("Essential container in task exited")
                .containers(Container::builder().name("worker").set_exit_code(exit_code).build())
                .build()
        };
        let pull = Task::builder()
            .stopped_at(EcsTime::from_secs(1_795_000_000))
            .stop_code(TaskStopCode::TaskFailedToStart)
            .stopped_reason("CannotPullContainerError: pull image manifest has been retried 5 time(s)")
            .build();
        assert!(stopped_worker(&pull).unwrap().failure.unwrap().contains("CannotPullContainerError"));
        let crashed = stopped_worker(&task(Some(TaskStopCode::EssentialContainerExited), Some(1))).unwrap();
        assert!(crashed.failure.unwrap().starts_with("exited with code 1"));
        assert_eq!(stopped_worker(&task(Some(TaskStopCode::EssentialContainerExited), Some(0))).unwrap().failure, None);
        assert_eq!(stopped_worker(&task(Some(TaskStopCode::SpotInterruption), Some(0))).unwrap().failure, None);
        // Without a stop time (moto's tasks have none) the task cannot be placed in a row.
        assert_eq!(stopped_worker(&Task::builder().stop_code(TaskStopCode::TaskFailedToStart).build()), None);
    }
}
