//! moto's server, provisioning and the S3 event source, against a real moto.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use sluice_local::events::S3EventSource;
use sluice_local::{MotoServer, Stack, StackSettings, TriggerSettings};

async fn moto() -> MotoServer {
    MotoServer::start(None).await.expect("moto starts")
}

fn short_settings() -> StackSettings {
    StackSettings { visibility_timeout: Duration::from_secs(5), max_receive_count: 3, ..StackSettings::default() }
}

#[tokio::test]
async fn moto_starts_on_a_free_port_refuses_a_taken_one_and_stops() {
    // GIVEN a running moto
    let moto = moto().await;
    let port = moto.port();
    assert_eq!(moto.endpoint(), format!("http://127.0.0.1:{port}"));

    // WHEN another is started on the same port
    let err = MotoServer::start(Some(port)).await.expect_err("the port is taken");
    // THEN the error says so
    assert!(format!("{err:#}").contains("already in use"), "{err:#}");

    // WHEN moto is stopped
    moto.stop().await;
    // THEN nothing listens on its port any more
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn provisioning_creates_what_the_template_declares() {
    // GIVEN moto
    let moto = moto().await;
    let config = sluice_local::aws::sdk_config(&moto.endpoint()).await;
    let settings = short_settings();

    // WHEN the stack is provisioned (twice: it must be idempotent)
    Stack::provision(&config, &settings).await.expect("first provisioning");
    let stack = Stack::provision(&config, &settings).await.expect("second provisioning");

    // THEN both buckets exist
    let s3 = sluice_local::aws::s3_client(&config);
    for bucket in [&stack.input_bucket, &stack.output_bucket] {
        s3.head_bucket().bucket(bucket).send().await.expect("bucket exists");
    }
    assert_eq!((stack.input_bucket.as_str(), stack.output_bucket.as_str()), ("sluice-input", "sluice-output"));

    // AND the job queue redrives to the dead-letter queue with the visibility timeout asked for
    let sqs = sluice_local::aws::sqs_client(&config);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&stack.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes");
    let attributes = attributes.attributes().expect("attributes");
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "5");
    let redrive: serde_json::Value =
        serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).expect("redrive policy is JSON");
    assert_eq!(redrive["deadLetterTargetArn"], stack.dead_letter_queue_arn.as_str());
    assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), "3");
    assert!(stack.dead_letter_queue_arn.ends_with(":sluice-jobs-dlq"));
    assert!(stack.queue_url.ends_with("/sluice-jobs"));
    sqs.get_queue_attributes()
        .queue_url(&stack.trigger_dead_letter_queue_url)
        .send()
        .await
        .expect("the trigger's dead-letter queue exists");

    // AND the cluster and the Fargate task definition exist, with the worker's environment
    let ecs = sluice_local::aws::ecs_client(&config);
    let clusters = ecs.describe_clusters().clusters("sluice").send().await.expect("clusters");
    assert_eq!(clusters.clusters().len(), 1);
    let definition = ecs
        .describe_task_definition()
        .task_definition(&stack.task_definition_arn)
        .send()
        .await
        .expect("task definition");
    let definition = definition.task_definition().expect("task definition");
    assert_eq!(definition.family(), Some("sluice-worker"));
    assert_eq!(definition.revision(), 2, "provisioned twice");
    assert_eq!(definition.network_mode().map(|m| m.as_str()), Some("awsvpc"));
    assert_eq!(definition.cpu(), Some("1024"));
    assert_eq!(definition.memory(), Some("2048"));
    let container = &definition.container_definitions()[0];
    assert_eq!(container.name(), Some("worker"));
    let env: HashMap<&str, &str> =
        container.environment().iter().filter_map(|kv| Some((kv.name()?, kv.value()?))).collect();
    assert_eq!(env["QUEUE_URL"], stack.queue_url);
    assert_eq!(env["VISIBILITY_TIMEOUT_SECONDS"], "5");
    assert_eq!(env["AWS_ENDPOINT_URL"], moto.endpoint());
    for name in [
        "BATCH_SIZE",
        "EMPTY_POLLS_BEFORE_EXIT",
        "POLL_WAIT_SECONDS",
        "MAX_BAD_ROW_RATIO",
        "SHUTDOWN_GRACE_SECONDS",
        "RUST_LOG",
    ] {
        assert!(env.contains_key(name), "{name} missing");
    }

    // AND the default VPC's subnets and security group were found
    assert!(!stack.subnets.is_empty());
    assert!(stack.subnets.iter().all(|s| s.starts_with("subnet-")));
    assert!(stack.security_group.starts_with("sg-"));

    // AND the trigger's environment names all of it
    let trigger_env = stack.trigger_environment(&TriggerSettings::new("s3://sluice-models/iris_logreg.onnx"));
    assert_eq!(trigger_env["QUEUE_URL"], stack.queue_url);
    assert_eq!(trigger_env["OUTPUT_BUCKET"], "sluice-output");
    assert_eq!(trigger_env["ECS_CLUSTER"], "sluice");
    assert_eq!(trigger_env["WORKER_TASK_DEFINITION"], stack.task_definition_arn);
    assert_eq!(trigger_env["WORKER_SUBNETS"], stack.subnets.join(","));
    assert_eq!(trigger_env["WORKER_SECURITY_GROUPS"], stack.security_group);
    assert_eq!(trigger_env["WORKER_ASSIGN_PUBLIC_IP"], "ENABLED");
    assert_eq!(trigger_env["MODEL_URI"], "s3://sluice-models/iris_logreg.onnx");
    for name in ["OUTPUT_PREFIX", "INPUT_PREFIX", "MAX_WORKERS", "RUST_LOG", "AWS_ENDPOINT_URL", "AWS_REGION"] {
        assert!(trigger_env.contains_key(name), "{name} missing");
    }
}

#[tokio::test]
async fn event_source_reports_new_and_changed_objects_once() {
    // GIVEN moto with an input bucket holding one object before the source starts
    let moto = moto().await;
    let config = sluice_local::aws::sdk_config(&moto.endpoint()).await;
    let s3 = sluice_local::aws::s3_client(&config);
    sluice_local::provision::ensure_bucket(&s3, "watched").await.expect("bucket");
    let put = |key: &'static str, body: &'static str| {
        let s3 = s3.clone();
        async move {
            s3.put_object().bucket("watched").key(key).body(body.as_bytes().to_vec().into()).send().await.expect("put");
        }
    };
    put("old.csv", "a\n").await;
    let mut source = S3EventSource::new(s3.clone(), "watched");
    assert_eq!(source.prime().await.expect("prime"), 1);

    // WHEN a file with a space in its name is uploaded
    put("in/my data.csv", "x,y\n1,2\n").await;
    let events = source.poll().await.expect("poll");
    // THEN exactly one event comes, with the key encoded as S3 does and the object's size and ETag
    assert_eq!(events.len(), 1, "{events:?}");
    let object = &events[0]["Records"][0]["s3"]["object"];
    assert_eq!(object["key"], "in/my+data.csv");
    assert_eq!(object["size"], 8);
    assert!(!object["eTag"].as_str().expect("eTag").contains('"'));
    assert_eq!(events[0]["Records"][0]["eventName"], "ObjectCreated:Put");

    // AND polling again reports nothing
    assert!(source.poll().await.expect("poll").is_empty());

    // WHEN the object is overwritten with other content
    put("in/my data.csv", "x,y\n3,4\n5,6\n").await;
    // THEN it is reported again
    assert_eq!(source.poll().await.expect("poll").len(), 1);
}
