//! What template.yaml watches: every way work can stall has an alarm or a notification on the
//! alarm topic, and the dashboard plots metrics the binaries really write; and how the optional
//! online endpoint is put together. (cfn-lint, `sam
//! validate` and checkov check the template's form in `make lint`; these check its meaning.)

use std::collections::BTreeSet;

use saphyr::Yaml;
use sluice_e2e::template::{get, template};

fn text(node: &Yaml<'_>) -> String {
    node.as_str().map(str::to_owned).unwrap_or_else(|| format!("{node:?}"))
}

/// The resource a `!Ref` or `!GetAtt` names.
fn target(node: &Yaml<'_>) -> String {
    match node {
        Yaml::Tagged(tag, inner) if tag.suffix == "Ref" => text(inner),
        Yaml::Tagged(tag, inner) if tag.suffix == "GetAtt" => {
            text(inner).split('.').next().unwrap_or_default().to_owned()
        }
        other => text(other),
    }
}

#[test]
fn every_alarm_tells_the_alarm_topic() {
    let template = template();
    let resources = get(&template, &["Resources"]).as_mapping().unwrap();
    let alarms: Vec<(String, &Yaml<'_>)> = resources
        .iter()
        .filter(|(_, r)| r.as_mapping_get("Type").and_then(Yaml::as_str) == Some("AWS::CloudWatch::Alarm"))
        .map(|(name, r)| (text(name), r))
        .collect();
    assert!(alarms.len() >= 3, "the two dead-letter queues and the queue age: {alarms:?}");
    for (name, alarm) in alarms {
        let actions = get(alarm, &["Properties", "AlarmActions"]).as_vec().unwrap();
        assert_eq!(actions.iter().map(target).collect::<Vec<_>>(), ["AlarmTopic"], "{name}");
    }
}

#[test]
fn jobs_waiting_too_long_raise_an_alarm() {
    // Jobs that no worker takes never reach a dead-letter queue: their age is what tells.
    let template = template();
    let alarm = get(&template, &["Resources", "JobQueueAgeAlarm", "Properties"]);
    assert_eq!(text(get(alarm, &["MetricName"])), "ApproximateAgeOfOldestMessage");
    assert_eq!(target(get(alarm, &["Dimensions"]).as_vec().unwrap()[0].as_mapping_get("Value").unwrap()), "JobQueue");
    assert_eq!(target(get(alarm, &["Threshold"])), "MaxJobWaitSeconds", "the threshold is a parameter");
}

#[test]
fn bad_upload_records_raise_an_alarm_on_the_metric_the_trigger_writes() {
    let template = template();
    let alarm = get(&template, &["Resources", "BadUploadEventAlarm", "Properties"]);
    let metric = text(get(alarm, &["MetricName"]));
    assert!(lambda_trigger::metrics::NAMES.contains(&metric.as_str()), "{metric}");
    assert_eq!(metric, "BadRecords");
}

#[test]
fn staged_shards_expire_and_the_trigger_gets_the_shard_size() {
    let template = template();
    let rules = get(&template, &["Resources", "OutputBucket", "Properties", "LifecycleConfiguration", "Rules"]);
    let staging = rules
        .as_vec()
        .unwrap()
        .iter()
        .find(|rule| text(get(rule, &["Id"])) == "ExpireShardStaging")
        .expect("a rule for the shards' staging prefix");
    assert!(text(get(staging, &["Prefix"])).contains(shared::shards::STAGING_FOLDER.split('/').next().unwrap()));
    assert!(get(staging, &["ExpirationInDays"]).as_integer().is_some());
    let variables = get(&template, &["Resources", "TriggerFunction", "Properties", "Environment", "Variables"]);
    assert_eq!(target(get(variables, &["SHARD_BYTES"])), "ShardBytes");
}

#[test]
fn worker_tasks_that_stop_abnormally_are_told_to_the_alarm_topic() {
    let template = template();
    let rule = get(&template, &["Resources", "WorkerStoppedAbnormallyRule", "Properties"]);
    let pattern = get(rule, &["EventPattern"]);
    assert_eq!(text(&get(pattern, &["source"]).as_vec().unwrap()[0]), "aws.ecs");
    assert_eq!(text(&get(pattern, &["detail-type"]).as_vec().unwrap()[0]), "ECS Task State Change");
    let detail = get(pattern, &["detail"]);
    assert_eq!(target(&get(detail, &["clusterArn"]).as_vec().unwrap()[0]), "WorkerCluster");
    assert_eq!(text(&get(detail, &["lastStatus"]).as_vec().unwrap()[0]), "STOPPED");
    // Either it never started, or its container exited with a code other than 0.
    let either = get(detail, &["$or"]).as_vec().unwrap();
    assert_eq!(text(&get(&either[0], &["stopCode"]).as_vec().unwrap()[0]), "TaskFailedToStart");
    let exit = &get(&either[1], &["containers", "exitCode"]).as_vec().unwrap()[0];
    assert_eq!(exit.as_mapping_get("anything-but").and_then(Yaml::as_integer), Some(0));
    let targets = get(rule, &["Targets"]).as_vec().unwrap();
    assert_eq!(target(get(&targets[0], &["Arn"])), "AlarmTopic");
    // AND the topic lets this rule publish
    let statements = get(&template, &["Resources", "AlarmTopicPolicy", "Properties", "PolicyDocument", "Statement"]);
    let allowed = statements.as_vec().unwrap().iter().any(|s| {
        s.as_mapping_get("Principal").and_then(|p| p.as_mapping_get("Service")).map(text).as_deref()
            == Some("events.amazonaws.com")
            && target(get(s, &["Condition", "ArnEquals", "aws:SourceArn"])) == "WorkerStoppedAbnormallyRule"
    });
    assert!(allowed, "AlarmTopicPolicy admits events.amazonaws.com for WorkerStoppedAbnormallyRule");
}

/// The dashboard's body, with the number placeholders filled so that it parses as JSON.
fn dashboard() -> serde_json::Value {
    let template = template();
    let body = get(&template, &["Resources", "Dashboard", "Properties", "DashboardBody"]);
    let Yaml::Tagged(tag, inner) = body else { panic!("DashboardBody is a !Sub") };
    assert_eq!(tag.suffix, "Sub");
    let text = text(&inner.as_vec().expect("!Sub [body, variables]")[0]);
    serde_json::from_str(&text.replace("${MaxJobWaitSeconds}", "0")).expect("the dashboard body is JSON")
}

#[test]
fn the_dashboard_plots_only_metrics_the_binaries_write_and_shows_every_alarm() {
    let dashboard = dashboard();
    let widgets = dashboard["widgets"].as_array().unwrap();
    // Metrics rows are [namespace, name, dimensions..., {options}], "." repeating the row above's
    // value and "..." repeating the whole row above.
    let mut ours = BTreeSet::new();
    for widget in widgets {
        let mut previous: Vec<serde_json::Value> = Vec::new();
        for row in widget["properties"]["metrics"].as_array().into_iter().flatten() {
            let row = row.as_array().unwrap();
            let row: Vec<serde_json::Value> = if row[0] == "..." {
                previous.clone()
            } else {
                row.iter().enumerate().map(|(i, v)| if v == "." { previous[i].clone() } else { v.clone() }).collect()
            };
            if row[0] == "${Namespace}" {
                ours.insert(row[1].as_str().unwrap().to_owned());
            }
            previous = row;
        }
    }
    let written: BTreeSet<String> =
        worker::metrics::NAMES.iter().chain(lambda_trigger::metrics::NAMES).map(|n| (*n).to_owned()).collect();
    let unknown: Vec<_> = ours.difference(&written).collect();
    assert!(unknown.is_empty(), "the dashboard plots metrics nothing writes: {unknown:?}");
    for needed in [
        "FilesSucceeded",
        "FilesFailed",
        "RowsIn",
        "RowsOut",
        "RowsBad",
        "RowsPerSecond",
        "UploadToStartSeconds",
        "WorkersActive",
    ] {
        assert!(ours.contains(needed), "the dashboard shows {needed}");
    }
    let alarms =
        widgets.iter().find(|w| w["type"] == "alarm").expect("an alarm widget")["properties"]["alarms"].to_string();
    for alarm in ["DeadLetterQueueAlarm", "TriggerDeadLetterQueueAlarm", "JobQueueAgeAlarm"] {
        assert!(alarms.contains(alarm), "the dashboard shows {alarm}");
    }
}

#[test]
fn the_online_endpoint_is_off_by_default_and_reachable_only_through_its_load_balancer() {
    let template = template();
    assert_eq!(text(get(&template, &["Parameters", "OnlineEndpoint", "Default"])), "false");
    let resources = get(&template, &["Resources"]).as_mapping().unwrap();
    let online: Vec<(String, &Yaml<'_>)> =
        resources.iter().map(|(name, r)| (text(name), r)).filter(|(name, _)| name.starts_with("Online")).collect();
    assert!(online.len() >= 10, "{:?}", online.iter().map(|(n, _)| n).collect::<Vec<_>>());
    for (name, resource) in &online {
        let condition = resource.as_mapping_get("Condition").map(text).unwrap_or_default();
        assert!(condition.starts_with("ServeOnline"), "{name} exists only with the endpoint on: {condition:?}");
    }
    // The load balancer checks TorchServe's /ping, which answers 200 once every model is loaded.
    let group = get(&template, &["Resources", "OnlineTargetGroup", "Properties"]);
    assert_eq!(text(get(group, &["HealthCheckPath"])), "/ping");
    // The tasks' group admits nothing itself; its one ingress rule is from the load balancer's group.
    let tasks = get(&template, &["Resources", "OnlineTaskSecurityGroup", "Properties"]);
    assert!(tasks.as_mapping_get("SecurityGroupIngress").is_none());
    let ingress: Vec<&Yaml<'_>> = resources
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.as_mapping_get("Type").and_then(Yaml::as_str) == Some("AWS::EC2::SecurityGroupIngress"))
        .filter(|r| target(get(r, &["Properties", "GroupId"])) == "OnlineTaskSecurityGroup")
        .collect();
    assert_eq!(ingress.len(), 2, "HTTP, and gRPC with a certificate");
    for rule in ingress {
        assert_eq!(target(get(rule, &["Properties", "SourceSecurityGroupId"])), "OnlineLoadBalancerSecurityGroup");
    }
}

#[test]
fn grpc_is_deployed_only_with_a_certificate_behind_https() {
    let template = template();
    let resources = get(&template, &["Resources"]).as_mapping().unwrap();
    let grpc: Vec<String> = resources.iter().map(|(name, _)| text(name)).filter(|name| name.contains("Grpc")).collect();
    assert_eq!(grpc.len(), 3, "{grpc:?}");
    for name in &grpc {
        let condition = text(get(&template, &["Resources", name, "Condition"]));
        assert_eq!(condition, "ServeOnlineWithHttps", "{name} exists only with CertificateArn");
    }
    // An ALB forwards gRPC to a target group of protocol version GRPC, health-checked by grpc.health.v1.
    let group = get(&template, &["Resources", "OnlineGrpcTargetGroup", "Properties"]);
    assert_eq!(text(get(group, &["ProtocolVersion"])), "GRPC");
    assert_eq!(text(get(group, &["HealthCheckPath"])), "/grpc.health.v1.Health/Check");
    assert_eq!(text(get(group, &["Matcher", "GrpcCode"])), "0");
    // From the HTTPS listener only: its rule picks gRPC calls by their content type.
    let rule = get(&template, &["Resources", "OnlineGrpcListenerRule", "Properties"]);
    assert_eq!(target(get(rule, &["ListenerArn"])), "OnlineHttpsListener");
    assert_eq!(text(get(rule, &["Conditions"]).as_vec().unwrap()[0].as_mapping_get("Field").unwrap()), "http-header");
    // The tasks listen for gRPC on the port the target group uses.
    let port = get(&template, &["Mappings", "Timing", "Online", "GrpcPort"]).as_integer().unwrap();
    assert_eq!(port, 8001);
}

#[test]
fn an_online_task_drains_before_it_is_killed() {
    // The load balancer stops sending, then SIGTERM, then the grace, all before ECS's SIGKILL.
    let template = template();
    let timing = get(&template, &["Mappings", "Timing", "Online"]);
    let seconds = |name: &str| get(timing, &[name]).as_integer().unwrap();
    assert!(seconds("ShutdownGraceSeconds") < seconds("StopTimeoutSeconds"));
    assert!(seconds("StopTimeoutSeconds") <= 120, "Fargate's largest stop timeout");
    assert!(seconds("DeregistrationDelaySeconds") > 0);
}

#[test]
fn an_internet_facing_endpoint_needs_keys_by_rule() {
    let template = template();
    // Keys are the default, and a rule, not a comment, refuses an internet-facing endpoint without.
    assert_eq!(text(get(&template, &["Parameters", "OnlineApiKeys", "Default"])), "required");
    assert_eq!(text(get(&template, &["Parameters", "OnlineRepositoryApi", "Default"])), "false");
    let rule = get(&template, &["Rules", "OnlineInternetFacingNeedsKeys"]);
    let condition = format!("{:?}", get(rule, &["RuleCondition"]));
    assert!(condition.contains("internet-facing") && condition.contains("OnlineScheme"), "{condition}");
    let assertion = format!("{:?}", get(rule, &["Assertions"]).as_vec().unwrap()[0]);
    assert!(assertion.contains("OnlineApiKeys") && assertion.contains("required"), "{assertion}");
}

#[test]
fn the_keys_live_in_secrets_the_stack_creates_and_only_ecs_reads() {
    let template = template();
    for (secret, variable, output) in [
        ("OnlineApiKeysSecret", "API_KEYS", "OnlineApiKeyCommand"),
        ("OnlineRepositoryApiKeysSecret", "REPOSITORY_API_KEYS", "OnlineRepositoryApiKeyCommand"),
    ] {
        // GIVEN a secret generated by the stack
        let resource = get(&template, &["Resources", secret]);
        assert_eq!(text(get(resource, &["Type"])), "AWS::SecretsManager::Secret");
        assert!(get(resource, &["Properties", "GenerateSecretString", "PasswordLength"]).as_integer().unwrap() >= 32);
        // THEN the online container gets it as a secret variable, not as plain environment
        let containers = get(&template, &["Resources", "OnlineTaskDefinition", "Properties", "ContainerDefinitions"]);
        let secrets = format!("{:?}", get(&containers.as_vec().unwrap()[0], &["Secrets"]));
        assert!(secrets.contains(variable) && secrets.contains(secret), "{variable} from {secret}: {secrets}");
        // AND only the task execution role (ECS, at task start) may read it
        let readers: Vec<String> = get(&template, &["Resources"])
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, r)| format!("{r:?}").contains("secretsmanager:GetSecretValue"))
            .map(|(name, _)| text(name))
            .collect();
        assert_eq!(readers, ["TaskExecutionRole"]);
        // AND the outputs say how to read the key
        let command = format!("{:?}", get(&template, &["Outputs", output, "Value"]));
        assert!(command.contains("aws secretsmanager get-secret-value") && command.contains(secret), "{command}");
    }
}

#[test]
fn the_buckets_refuse_plain_http_and_public_access() {
    let template = template();
    for bucket in ["InputBucket", "OutputBucket"] {
        let block = get(&template, &["Resources", bucket, "Properties", "PublicAccessBlockConfiguration"]);
        for setting in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
            assert_eq!(get(block, &[setting]).as_bool(), Some(true), "{bucket} {setting}");
        }
        // A bucket policy denies every S3 action on the bucket and its objects without TLS.
        let policy = get(&template, &["Resources"])
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(_, r)| r)
            .find(|r| {
                r.as_mapping_get("Type").and_then(Yaml::as_str) == Some("AWS::S3::BucketPolicy")
                    && target(get(r, &["Properties", "Bucket"])) == bucket
            })
            .unwrap_or_else(|| panic!("{bucket} has a bucket policy"));
        let statements = get(policy, &["Properties", "PolicyDocument", "Statement"]).as_vec().unwrap();
        let deny_plain_http = statements.iter().find(|s| {
            text(get(s, &["Effect"])) == "Deny"
                && s.as_mapping_get("Condition")
                    .and_then(|c| c.as_mapping_get("Bool"))
                    .and_then(|b| b.as_mapping_get("aws:SecureTransport"))
                    .map(text)
                    .as_deref()
                    == Some("false")
        });
        let statement = deny_plain_http.unwrap_or_else(|| panic!("{bucket} denies requests without TLS"));
        assert_eq!(text(get(statement, &["Action"])), "s3:*");
        let resources = format!("{:?}", get(statement, &["Resource"]));
        assert!(resources.contains(&format!("{bucket}.Arn")) && resources.contains("/*"), "{resources}");
    }
}
