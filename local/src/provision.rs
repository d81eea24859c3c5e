//! Creates in moto what template.yaml declares in AWS: the input and output buckets, the job
//! queue with its redrive policy and dead-letter queue, the trigger's dead-letter queue, the ECS
//! cluster and the worker's Fargate task definition (naming the worker's task role), and the
//! programs' IAM users with their roles' policies ([`Stack::create_identities`],
//! [`crate::iam`]); and finds the default VPC's subnets and security group, which moto's
//! `RunTask` needs for Fargate's awsvpc networking.
//!
//! The EC2 look-up uses the venv's AWS CLI: the workspace has no EC2 SDK crate and adding one
//! would cost minutes of build for two read-only calls.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::SdkConfig;
use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, KeyValuePair, NetworkMode};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::environment::{EnvMap, TriggerSettings, TriggerTargets, WorkerSettings};
use crate::iam::{AccessKey, Program, Revoked, Substitutions, Template};

/// The stack's name in the template's ARNs (`${AWS::StackName}`): the task family is
/// `<stack>-worker`, as the template names it.
pub const STACK_NAME: &str = "sluice";

/// Names and tunables of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSettings {
    pub input_bucket: String,
    pub output_bucket: String,
    pub queue_name: String,
    pub dead_letter_queue_name: String,
    /// Receives of a job message before SQS moves it to the dead-letter queue.
    pub max_receive_count: u32,
    /// The job queue's visibility timeout (whole seconds); tests use short ones.
    pub visibility_timeout: Duration,
    /// Where Lambda's asynchronous invocation puts events the trigger failed on.
    pub trigger_dead_letter_queue_name: String,
    /// A queue that an EventBridge rule fills with the workers' completion events, so that the
    /// local run and the tests can see them (in AWS, users route them wherever they like).
    pub completion_events_queue_name: String,
    pub cluster_name: String,
    pub task_family: String,
    pub container_name: String,
    /// Recorded in the task definition; the Fargate emulator runs the worker binary instead.
    pub container_image: String,
    /// The worker tunables that go into the task definition's environment.
    pub worker: WorkerSettings,
}

impl Default for StackSettings {
    fn default() -> Self {
        Self {
            input_bucket: "sluice-input".to_owned(),
            output_bucket: "sluice-output".to_owned(),
            queue_name: "sluice-jobs".to_owned(),
            dead_letter_queue_name: "sluice-jobs-dlq".to_owned(),
            max_receive_count: 5,
            visibility_timeout: Duration::from_secs(30),
            trigger_dead_letter_queue_name: "sluice-trigger-dlq".to_owned(),
            completion_events_queue_name: "sluice-completion-events".to_owned(),
            cluster_name: "sluice".to_owned(),
            task_family: format!("{STACK_NAME}-worker"),
            container_name: "worker".to_owned(),
            container_image: "sluice-worker:local".to_owned(),
            worker: WorkerSettings::default(),
        }
    }
}

/// What was provisioned, with everything the components and tests need to address it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// The moto endpoint the stack lives in.
    pub endpoint: String,
    pub input_bucket: String,
    pub output_bucket: String,
    pub queue_url: String,
    pub queue_arn: String,
    pub dead_letter_queue_url: String,
    pub dead_letter_queue_arn: String,
    pub trigger_dead_letter_queue_url: String,
    pub trigger_dead_letter_queue_arn: String,
    /// Receives every completion event the workers put on the default event bus.
    pub completion_events_queue_url: String,
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
    pub cluster_name: String,
    pub cluster_arn: String,
    pub task_family: String,
    pub container_name: String,
    pub container_image: String,
    /// The latest registered revision of the worker's task definition.
    pub task_definition_arn: String,
    /// The container environment of that revision.
    pub worker_environment: EnvMap,
    pub vpc_id: String,
    /// The default VPC's default subnets (one per availability zone).
    pub subnets: Vec<String>,
    /// The default VPC's `default` security group.
    pub security_group: String,
    /// Each program's access key (its role's IAM user), once [`Stack::create_identities`] ran.
    pub credentials: BTreeMap<Program, AccessKey>,
}

/// The default VPC's network pieces in moto's EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNetwork {
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub security_group: String,
}

impl Stack {
    /// Creates the stack in moto (the endpoint is `config`'s `endpoint_url`). Creating what
    /// already exists is fine, so provisioning twice against one moto works; the task definition
    /// then gets a new revision.
    pub async fn provision(config: &SdkConfig, settings: &StackSettings) -> Result<Self> {
        let endpoint = config
            .endpoint_url()
            .context("the SDK configuration has no endpoint_url: provisioning is meant for moto")?
            .to_owned();
        let s3 = crate::aws::s3_client(config);
        let sqs = crate::aws::sqs_client(config);
        let ecs = crate::aws::ecs_client(config);

        ensure_bucket(&s3, &settings.input_bucket).await?;
        ensure_bucket(&s3, &settings.output_bucket).await?;

        let (dead_letter_queue_url, dead_letter_queue_arn) =
            create_queue(&sqs, &settings.dead_letter_queue_name, &[]).await?;
        let visibility_secs = settings.visibility_timeout.as_secs();
        let redrive_policy = serde_json::json!({
            "deadLetterTargetArn": dead_letter_queue_arn,
            "maxReceiveCount": settings.max_receive_count.to_string(),
        })
        .to_string();
        let (queue_url, queue_arn) = create_queue(
            &sqs,
            &settings.queue_name,
            &[
                (QueueAttributeName::VisibilityTimeout, visibility_secs.to_string()),
                (QueueAttributeName::RedrivePolicy, redrive_policy),
            ],
        )
        .await?;
        let (trigger_dead_letter_queue_url, trigger_dead_letter_queue_arn) =
            create_queue(&sqs, &settings.trigger_dead_letter_queue_name, &[]).await?;
        let (completion_events_queue_url, completion_events_queue_arn) =
            create_queue(&sqs, &settings.completion_events_queue_name, &[]).await?;
        route_completion_events(config, &completion_events_queue_arn).await?;

        let cluster = ecs
            .create_cluster()
            .cluster_name(&settings.cluster_name)
            .send()
            .await
            .with_context(|| format!("cannot create ECS cluster {}", settings.cluster_name))?;
        let cluster_arn = cluster
            .cluster()
            .and_then(|c| c.cluster_arn())
            .context("CreateCluster returned no cluster ARN")?
            .to_owned();

        let network = default_network(&endpoint).await?;

        let mut stack = Self {
            worker_environment: crate::environment::worker_environment(
                &endpoint,
                &queue_url,
                settings.visibility_timeout,
                &settings.worker,
            ),
            endpoint,
            input_bucket: settings.input_bucket.clone(),
            output_bucket: settings.output_bucket.clone(),
            queue_url,
            queue_arn,
            dead_letter_queue_url,
            dead_letter_queue_arn,
            trigger_dead_letter_queue_url,
            trigger_dead_letter_queue_arn,
            completion_events_queue_url,
            visibility_timeout: Duration::from_secs(visibility_secs),
            max_receive_count: settings.max_receive_count,
            cluster_name: settings.cluster_name.clone(),
            cluster_arn,
            task_family: settings.task_family.clone(),
            container_name: settings.container_name.clone(),
            container_image: settings.container_image.clone(),
            task_definition_arn: String::new(),
            vpc_id: network.vpc_id,
            subnets: network.subnets,
            security_group: network.security_group,
            credentials: BTreeMap::new(),
        };
        let environment = stack.worker_environment.clone();
        stack.register_worker_task_definition(&ecs, &environment).await?;
        tracing::info!(
            queue = %stack.queue_url,
            task_definition = %stack.task_definition_arn,
            subnets = %stack.subnets.join(","),
            security_group = %stack.security_group,
            "stack provisioned"
        );
        Ok(stack)
    }

    /// Registers a new revision of the worker's task definition (Fargate, awsvpc, 1 vCPU, 2 GiB,
    /// one essential container) with `environment`, and makes it the stack's current one.
    pub async fn register_worker_task_definition(
        &mut self,
        ecs: &aws_sdk_ecs::Client,
        environment: &EnvMap,
    ) -> Result<String> {
        let container = ContainerDefinition::builder()
            .name(&self.container_name)
            .image(&self.container_image)
            .essential(true)
            // moto rejects container definitions without `memory`.
            .memory(2048)
            .set_environment(Some(
                environment
                    .iter()
                    .map(|(name, value)| KeyValuePair::builder().name(name).value(value).build())
                    .collect(),
            ))
            .build();
        let registered = ecs
            .register_task_definition()
            .family(&self.task_family)
            // The Fargate emulator hands the task this role's key, as ECS hands it the role's
            // credentials.
            .task_role_arn(Program::Worker.role_arn())
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("1024")
            .memory("2048")
            .container_definitions(container)
            .send()
            .await
            .with_context(|| format!("cannot register task definition {}", self.task_family))?;
        let arn = registered
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .context("RegisterTaskDefinition returned no ARN")?
            .to_owned();
        self.task_definition_arn.clone_from(&arn);
        self.worker_environment = environment.clone();
        Ok(arn)
    }

    /// What the template's references stand for in this stack; `models` adds the model and
    /// output settings (`ModelBucket`, `ModelPrefix`, `ModelKey`, `OutputPrefix`, `OneModel`).
    pub fn substitutions(&self, models: Substitutions) -> Substitutions {
        let account = crate::aws::ACCOUNT_ID;
        let region = crate::aws::REGION;
        let log_group = |name: &str| format!("arn:aws:logs:{region}:{account}:log-group:/sluice/{STACK_NAME}/{name}:*");
        models
            .value("AWS::Partition", "aws")
            .value("AWS::Region", region)
            .value("AWS::AccountId", account)
            .value("AWS::StackName", STACK_NAME)
            .value("WorkerCluster", &self.cluster_name)
            .value("WorkerCluster.Arn", &self.cluster_arn)
            .value("JobQueue.Arn", &self.queue_arn)
            .value("TriggerDeadLetterQueue.Arn", &self.trigger_dead_letter_queue_arn)
            .value("InputBucket.Arn", format!("arn:aws:s3:::{}", self.input_bucket))
            .value("OutputBucket.Arn", format!("arn:aws:s3:::{}", self.output_bucket))
            .value("TriggerLogGroup.Arn", log_group("trigger"))
            .value("WorkerLogGroup.Arn", log_group("worker"))
            .value("WorkerTaskRole", Program::Worker.user())
            .value("WorkerTaskRole.Arn", Program::Worker.role_arn())
            .value("TaskExecutionRole.Arn", format!("arn:aws:iam::{account}:role/{STACK_NAME}-task-execution"))
            .value("KmsKeyArn", "")
            .condition("HasKmsKey", false)
            .condition(
                "PutsCompletionEvents",
                self.worker_environment.get(worker::config::COMPLETION_EVENTS.name).is_none_or(|v| v == "true"),
            )
    }

    /// Creates each program's IAM user in moto with its role's policies from template.yaml (less
    /// `revoked` statements), and keeps their keys in [`Stack::credentials`].
    pub async fn create_identities(&mut self, models: Substitutions, revoked: &[Revoked]) -> Result<()> {
        let template = Template::load()?;
        let substitutions = self.substitutions(models);
        let mut policies = BTreeMap::new();
        for program in Program::ALL {
            policies.insert(program, template.policies(program, &substitutions, revoked)?);
        }
        self.credentials = crate::iam::create_users(&self.endpoint, &policies).await?;
        Ok(())
    }

    /// The access key of `program`'s role.
    pub fn credentials_of(&self, program: Program) -> Result<&AccessKey> {
        self.credentials.get(&program).with_context(|| format!("the stack has no IAM user for {program} yet"))
    }

    /// The trigger function's environment for this stack (see [`crate::environment`]), with its
    /// role's credentials.
    pub fn trigger_environment(&self, settings: &TriggerSettings) -> EnvMap {
        let targets = TriggerTargets {
            endpoint: &self.endpoint,
            queue_url: &self.queue_url,
            output_bucket: &self.output_bucket,
            cluster: &self.cluster_name,
            task_definition: &self.task_definition_arn,
            subnets: &self.subnets,
            security_group: &self.security_group,
        };
        let mut env = crate::environment::trigger_environment(&targets, settings);
        if let Some(key) = self.credentials.get(&Program::Trigger) {
            env.extend(crate::aws::credentials_env(key));
        }
        env
    }
}

/// The rule name that sends the workers' completion events to the local events queue.
pub const COMPLETION_EVENTS_RULE: &str = "sluice-completion-events";

/// A rule on the default event bus that sends every event whose source is sluice's to `queue_arn`.
async fn route_completion_events(config: &SdkConfig, queue_arn: &str) -> Result<()> {
    let events = aws_sdk_eventbridge::Client::new(config);
    let pattern = serde_json::json!({ "source": [worker::completions::SOURCE] }).to_string();
    events
        .put_rule()
        .name(COMPLETION_EVENTS_RULE)
        .event_pattern(pattern)
        .send()
        .await
        .context("cannot create the completion events rule")?;
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("local-queue")
        .arn(queue_arn)
        .build()
        .context("cannot describe the completion events target")?;
    events
        .put_targets()
        .rule(COMPLETION_EVENTS_RULE)
        .targets(target)
        .send()
        .await
        .context("cannot route completion events to their queue")?;
    Ok(())
}

/// Creates `bucket` unless this account already has it.
pub async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<()> {
    match s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(err) if matches!(err.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot create bucket {bucket}")),
    }
}

/// Creates a queue (or finds it with the same attributes) and returns its URL and ARN.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<(String, String)> {
    let mut request = sqs.create_queue().queue_name(name);
    for (attribute, value) in attributes {
        request = request.attributes(attribute.clone(), value);
    }
    let created = request.send().await.with_context(|| format!("cannot create queue {name}"))?;
    let url = created.queue_url().with_context(|| format!("CreateQueue {name} returned no URL"))?.to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("cannot read the ARN of queue {name}"))?;
    let arn = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .with_context(|| format!("GetQueueAttributes for {name} returned no QueueArn"))?
        .clone();
    Ok((url, arn))
}

/// Finds the default VPC's default subnets and its `default` security group in moto's EC2,
/// with the venv's AWS CLI.
pub async fn default_network(endpoint: &str) -> Result<DefaultNetwork> {
    let subnets_text = aws_cli(
        endpoint,
        &[
            "ec2",
            "describe-subnets",
            "--filters",
            "Name=default-for-az,Values=true",
            "--query",
            "Subnets[].[SubnetId,VpcId]",
            "--output",
            "text",
        ],
    )
    .await?;
    let mut subnets = Vec::new();
    let mut vpc_id = None;
    for line in subnets_text.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(subnet), Some(vpc)) = (fields.next(), fields.next()) {
            subnets.push(subnet.to_owned());
            vpc_id.get_or_insert_with(|| vpc.to_owned());
        }
    }
    let Some(vpc_id) = vpc_id else {
        bail!("moto's EC2 has no default subnets (describe-subnets printed {subnets_text:?})");
    };
    let group_text = aws_cli(
        endpoint,
        &[
            "ec2",
            "describe-security-groups",
            "--filters",
            "Name=group-name,Values=default",
            &format!("Name=vpc-id,Values={vpc_id}"),
            "--query",
            "SecurityGroups[0].GroupId",
            "--output",
            "text",
        ],
    )
    .await?;
    let security_group = group_text.trim();
    if !security_group.starts_with("sg-") {
        bail!("moto's EC2 has no default security group in {vpc_id} (describe-security-groups printed {group_text:?})");
    }
    Ok(DefaultNetwork { vpc_id, subnets, security_group: security_group.to_owned() })
}

/// Runs the venv's `aws --endpoint-url ENDPOINT ARGS…` as the administrator and returns its
/// stdout.
pub async fn aws_cli(endpoint: &str, args: &[&str]) -> Result<String> {
    let aws = crate::repo::venv_tool("aws")?;
    let mut command = tokio::process::Command::new(&aws);
    let mut env = crate::aws::moto_env(endpoint);
    env.extend(crate::aws::credentials_env(&crate::iam::AccessKey::admin()));
    crate::process::set_clean_env(&mut command, &env);
    let output = command
        .arg("--endpoint-url")
        .arg(endpoint)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {}", aws.display()))?;
    if !output.status.success() {
        bail!(
            "`aws {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("`aws {}` printed non-UTF-8", args.join(" ")))
}
