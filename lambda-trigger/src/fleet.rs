//! The worker fleet: how many workers run, starting more, and the rule for how many are wanted.

use std::future::Future;

use aws_sdk_ecs::types::{AssignPublicIp, AwsVpcConfiguration, DesiredStatus, LaunchType, NetworkConfiguration};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::FleetSettings;
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

/// Worker tasks on ECS (Fargate).
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
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.settings.subnets.clone()))
            .set_security_groups(Some(self.settings.security_groups.clone()).filter(|g| !g.is_empty()))
            .assign_public_ip(if self.settings.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| FleetError::Request(e.into()))?;
        let response = self
            .client
            .run_task()
            .cluster(&self.settings.cluster)
            .task_definition(&self.settings.task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by(STARTED_BY)
            .client_token(client_token)
            .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(vpc).build())
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
        }
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
