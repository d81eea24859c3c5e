//! The Fargate emulator against moto's ECS: tasks started with `RunTask` (Fargate, awsvpc) become
//! local processes with the task's environment, and end as stopped tasks.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType, NetworkConfiguration,
    TaskOverride,
};
use sluice_local::{FargateEmulator, FargateOptions, MotoServer, Signal, Stack, StackSettings, WorkerCommand};

struct Fixture {
    moto: MotoServer,
    stack: Stack,
    ecs: aws_sdk_ecs::Client,
}

async fn fixture() -> Fixture {
    let moto = MotoServer::start(None).await.expect("moto starts");
    let config = sluice_local::aws::sdk_config(&moto.endpoint()).await;
    let stack = Stack::provision(&config, &StackSettings::default()).await.expect("stack");
    let ecs = sluice_local::aws::ecs_client(&config);
    Fixture { moto, stack, ecs }
}

fn fast() -> FargateOptions {
    FargateOptions {
        poll_interval: Duration::from_millis(100),
        stop_timeout: Duration::from_secs(2),
        ..FargateOptions::default()
    }
}

/// Starts one task the way the trigger does, with `env` as container overrides.
async fn run_task(fixture: &Fixture, env: &[(&str, &str)]) -> String {
    let network = AwsVpcConfiguration::builder()
        .set_subnets(Some(fixture.stack.subnets.clone()))
        .security_groups(&fixture.stack.security_group)
        .assign_public_ip(AssignPublicIp::Enabled)
        .build()
        .expect("awsvpc configuration");
    let overrides = ContainerOverride::builder()
        .name(&fixture.stack.container_name)
        .set_environment(Some(
            env.iter().map(|(name, value)| KeyValuePair::builder().name(*name).value(*value).build()).collect(),
        ))
        .build();
    let started = fixture
        .ecs
        .run_task()
        .cluster(&fixture.stack.cluster_name)
        .task_definition(&fixture.stack.task_definition_arn)
        .launch_type(LaunchType::Fargate)
        .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
        .overrides(TaskOverride::builder().container_overrides(overrides).build())
        .started_by("sluice-local-test")
        .count(1)
        .send()
        .await
        .expect("moto accepts RunTask with Fargate and the default VPC's network");
    assert!(started.failures().is_empty(), "{:?}", started.failures());
    started.tasks()[0].task_arn().expect("task ARN").to_owned()
}

async fn stopped_reason(fixture: &Fixture, task_arn: &str) -> (String, String) {
    let described = fixture
        .ecs
        .describe_tasks()
        .cluster(&fixture.stack.cluster_name)
        .tasks(task_arn)
        .send()
        .await
        .expect("describe");
    let task = &described.tasks()[0];
    (task.desired_status().unwrap_or_default().to_owned(), task.stopped_reason().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_task_runs_the_worker_with_its_environment_and_stops_when_it_exits() {
    // GIVEN the stack and the emulator running a shell that dumps its environment and exits 3
    let fixture = fixture().await;
    let dump = std::env::temp_dir().join(format!("sluice-fargate-{}.env", uuid::Uuid::new_v4()));
    let emulator = FargateEmulator::start_with(
        fixture.ecs.clone(),
        fixture.stack.cluster_name.clone(),
        WorkerCommand::with_args("/bin/sh", ["-c", r#"env > "$ENV_DUMP"; exit "$EXIT_WITH""#]),
        fast(),
    );

    // WHEN a task is started through ECS with overrides
    let dump_path = dump.to_string_lossy().into_owned();
    let task_arn = run_task(&fixture, &[("ENV_DUMP", &dump_path), ("EXIT_WITH", "3"), ("RUST_LOG", "debug")]).await;
    emulator.wait_idle(Duration::from_secs(20)).await.expect("the worker ends");

    // THEN one process ran with the task definition's environment plus the overrides
    assert_eq!(emulator.started_count(), 1);
    let env_text = std::fs::read_to_string(&dump).expect("the worker wrote its environment");
    let _ = std::fs::remove_file(&dump);
    let env: HashMap<&str, &str> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(env["QUEUE_URL"], fixture.stack.queue_url);
    assert_eq!(env["AWS_ENDPOINT_URL"], fixture.moto.endpoint());
    assert_eq!(env["RUST_LOG"], "debug", "overrides win over the task definition");
    assert_eq!(env["EXIT_WITH"], "3");
    assert!(!env.contains_key("CARGO"), "the developer's environment leaked in");

    // AND its exit was recorded and the task stopped with the exit code in the reason
    let finished = emulator.finished();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].task_arn, task_arn);
    assert_eq!(finished[0].exit_code, Some(3));
    assert!(!finished[0].succeeded());
    let (desired, reason) = stopped_reason(&fixture, &task_arn).await;
    assert_eq!(desired, "STOPPED");
    assert_eq!(reason, "Essential container in task exited (exit code 3)");

    emulator.shutdown().await;
    fixture.moto.stop().await;
}

#[tokio::test]
async fn workers_can_be_terminated_killed_or_stopped_through_ecs() {
    // GIVEN the emulator running a shell that exits 7 on SIGTERM and otherwise runs forever
    let fixture = fixture().await;
    let emulator = FargateEmulator::start_with(
        fixture.ecs.clone(),
        fixture.stack.cluster_name.clone(),
        WorkerCommand::with_args("/bin/sh", ["-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"]),
        fast(),
    );
    let terminated = run_task(&fixture, &[]).await;
    let killed = run_task(&fixture, &[]).await;
    let stopped = run_task(&fixture, &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while emulator.running().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "three workers should start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(emulator.running().iter().all(|w| w.pid > 0));

    // WHEN one gets SIGTERM, one SIGKILL, and one's task is stopped through ECS
    emulator.kill(&terminated, Signal::Term).expect("signal sent");
    emulator.kill(&killed, Signal::Kill).expect("signal sent");
    fixture
        .ecs
        .stop_task()
        .cluster(&fixture.stack.cluster_name)
        .task(&stopped)
        .reason("scale-in")
        .send()
        .await
        .expect("stop task");
    emulator.wait_idle(Duration::from_secs(20)).await.expect("all end");

    // THEN each ended the way its signal says
    let by_task: HashMap<String, _> = emulator.finished().into_iter().map(|w| (w.task_arn.clone(), w)).collect();
    assert_eq!(by_task[&terminated].exit_code, Some(7));
    assert_eq!(by_task[&killed].signal, Some(9));
    assert_eq!(by_task[&stopped].exit_code, Some(7), "ECS's StopTask sends SIGTERM first");
    let (_, reason) = stopped_reason(&fixture, &killed).await;
    assert!(reason.contains("signal 9"), "{reason}");
    // AND signalling a finished worker is an error, not a panic
    assert!(emulator.kill(&killed, Signal::Kill).is_err());
    assert!(emulator.kill("arn:aws:ecs:nowhere", Signal::Term).is_err());

    emulator.shutdown().await;
    fixture.moto.stop().await;
}
