//! The worker fleet: how many workers run, starting more, and the rule for how many are wanted.

use std::future::Future;

use aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, DesiredStatus, LaunchType, NetworkConfiguration,
    PlacementConstraint, PlacementConstraintType,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::{Capacity, FleetSettings};
use crate::queue::{JobQueue, QueueError};

/// What tasks started by the trigger say in `startedBy`.
pub const STARTED_BY: &str = "sluice-trigger";

/// What the trigger needs from the place workers run.
pub trait WorkerFleet {
    /// Identifiers of the worker tasks that are running or about to (pending).
    fn active_workers(&self) -> impl Future<Output = Result<Vec<String>, FleetError>> + Send;
    /// Starts one worker; `client_token` makes the request idempotent.
    fn start_worker(&self, client_token: &str) -> impl Future<Output = Result<String, FleetError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("the ECS request failed: {0}")]
    Request(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("ECS did not start a worker: {0}")]
    NotStarted(String),
}

/// What [`ensure_workers`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerPlan {
    pub waiting_jobs: u64,
    pub active: usize,
    pub wanted: usize,
    pub started: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("could not count waiting jobs: {0}")]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// Starts workers when jobs wait and fewer workers run than wanted: one per waiting job, at
/// least one, at most `max_workers`.
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
    let waiting_jobs = queue.waiting_jobs().await?.max(just_enqueued as u64);
    let mut plan = WorkerPlan { waiting_jobs, ..WorkerPlan::default() };
    if waiting_jobs == 0 {
        return Ok(plan);
    }
    let mut active = fleet.active_workers().await?;
    active.sort();
    plan.active = active.len();
    plan.wanted = usize::try_from(waiting_jobs).unwrap_or(usize::MAX).clamp(1, settings.max_workers);
    for slot in plan.active..plan.wanted {
        let token = client_token(settings, slot, &active, now);
        plan.started.push(fleet.start_worker(&token).await?);
    }
    Ok(plan)
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
        .map_err(|e| FleetError::Request(e.into()))?;
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
        .map_err(|e| FleetError::Request(e.into()))
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
            tasks.extend(page.map_err(|e| FleetError::Request(e.into()))?.task_arns.unwrap_or_default());
        }
        Ok(tasks)
    }

    async fn start_worker(&self, client_token: &str) -> Result<String, FleetError> {
        let response = run_task_request(&self.client, &self.settings, client_token)?
            .send()
            .await
            .map_err(|e| FleetError::Request(e.into()))?;
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
}
