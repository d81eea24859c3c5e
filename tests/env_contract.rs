//! The contract between `template.yaml` and the binaries: the environment the template gives each
//! program is exactly what that program reads, so the two cannot drift apart unnoticed.
//!
//! The rule, for the trigger function, the worker container and the online (`worker serve`)
//! container alike:
//! - the template sets every variable of the binary's `VARS`, optional ones included, so that a
//!   deployed function or task definition shows its whole configuration and a default changed in
//!   code does not silently change running deployments;
//! - besides those it sets only `RUST_LOG` (read by the log set-up, not by `VARS`);
//! - a required variable never gets an empty value (an empty literal, `!Ref AWS::NoValue`, or
//!   either of those in a branch of `!If`); values from parameters are the parameters' business.

use std::collections::BTreeSet;

use saphyr::{LoadableYamlNode, Yaml};
use shared::config::EnvVar;
use sluice_e2e::template::{get, template};

/// Variables the template sets on top of `VARS`.
const EXTRA: &[&str] = &["RUST_LOG"];

fn text(node: &Yaml<'_>) -> Option<String> {
    node.as_str().map(str::to_owned)
}

/// Whether `value` may come out empty or absent once CloudFormation resolves it.
fn can_be_empty(value: &Yaml<'_>) -> bool {
    match value {
        Yaml::Tagged(tag, inner) => match tag.suffix.as_str() {
            "If" => inner.as_vec().is_some_and(|branches| branches.iter().skip(1).any(can_be_empty)),
            "Ref" => inner.as_str() == Some("AWS::NoValue"),
            _ => false,
        },
        Yaml::Mapping(map) => map.iter().any(|(k, v)| match k.as_str() {
            Some("Fn::If") => v.as_vec().is_some_and(|branches| branches.iter().skip(1).any(can_be_empty)),
            Some("Ref") => v.as_str() == Some("AWS::NoValue"),
            _ => false,
        }),
        Yaml::Value(_) | Yaml::Representation(..) => value.as_str().is_some_and(|s| s.trim().is_empty()),
        _ => value.is_null(),
    }
}

/// Checks one program's environment, as (name, value) pairs, against its `VARS`.
fn check(program: &str, set: &[(String, &Yaml<'_>)], vars: &[EnvVar]) {
    let names: BTreeSet<&str> = set.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.len(), set.len(), "{program}: a variable is set twice in template.yaml");
    let expected: BTreeSet<&str> = vars.iter().map(|v| v.name).chain(EXTRA.iter().copied()).collect();
    let unread: Vec<_> = names.difference(&expected).collect();
    let unset: Vec<_> = expected.difference(&names).collect();
    assert!(
        unread.is_empty() && unset.is_empty(),
        "{program}: template.yaml sets {unread:?}, which the program does not read, and misses {unset:?}, which it does"
    );
    for var in vars.iter().filter(|v| v.is_required()) {
        let (_, value) = set.iter().find(|(name, _)| name == var.name).expect("checked above");
        assert!(!can_be_empty(value), "{program}: required {} may be empty in template.yaml: {value:?}", var.name);
    }
}

#[test]
fn the_trigger_function_gets_exactly_the_variables_it_reads() {
    let template = template();
    let variables = get(&template, &["Resources", "TriggerFunction", "Properties", "Environment", "Variables"]);
    let set: Vec<(String, &Yaml<'_>)> = variables
        .as_mapping()
        .expect("Variables is a mapping")
        .iter()
        .map(|(name, value)| (text(name).expect("variable names are strings"), value))
        .collect();
    check("lambda-trigger", &set, lambda_trigger::config::VARS);
}

/// The environment of `container` in the task definition `resource`, as (name, value) pairs.
fn container_environment<'a>(
    template: &'a Yaml<'static>,
    resource: &str,
    container: &str,
) -> Vec<(String, &'a Yaml<'static>)> {
    let containers = get(template, &["Resources", resource, "Properties", "ContainerDefinitions"]);
    let found = containers
        .as_vec()
        .expect("ContainerDefinitions is a list")
        .iter()
        .find(|c| c.as_mapping_get("Name").and_then(text).as_deref() == Some(container))
        .unwrap_or_else(|| panic!("{resource} has a container named {container}"));
    let environment = get(found, &["Environment"]).as_vec().expect("Environment is a list");
    let mut set: Vec<(String, &'a Yaml<'static>)> = environment
        .iter()
        .map(|pair| (text(get(pair, &["Name"])).expect("Name is a string"), get(pair, &["Value"])))
        .collect();
    // Secrets (`Name`, `ValueFrom`) are variables too, ECS reads them from Secrets Manager; an
    // item may be an `!If [condition, secret, !Ref AWS::NoValue]`.
    for item in found.as_mapping_get("Secrets").and_then(Yaml::as_vec).into_iter().flatten() {
        let secret = match item {
            Yaml::Tagged(tag, inner) if tag.suffix == "If" => &inner.as_vec().expect("!If is a list")[1],
            other => other,
        };
        set.push((text(get(secret, &["Name"])).expect("Name is a string"), get(secret, &["ValueFrom"])));
    }
    set
}

#[test]
fn the_worker_container_gets_exactly_the_variables_it_reads() {
    let template = template();
    check("worker", &container_environment(&template, "WorkerTaskDefinition", "worker"), worker::config::VARS);
}

#[test]
fn the_online_container_gets_exactly_the_variables_worker_serve_reads() {
    let template = template();
    let set = container_environment(&template, "OnlineTaskDefinition", "serve");
    check("worker serve", &set, worker::serve::config::VARS);
    // AND it listens where the load balancer sends requests, on every address of the task
    let value = |name: &str| set.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap();
    assert_eq!(value("BIND").as_str(), Some("0.0.0.0"));
    let port = get(&template, &["Resources", "OnlineTargetGroup", "Properties", "Port"]);
    assert_eq!(value("PORT"), port, "PORT and the target group's port are one value");
}

#[test]
fn the_check_catches_what_it_is_for() {
    // GIVEN an environment like the template's, as YAML with CloudFormation tags
    let yaml = "A: !Ref Queue\nB: ''\nC: !If [Cond, !Ref X, '']\nD: !Sub 's3://${B}/${K}'\nE: !Ref AWS::NoValue\n";
    let doc = Yaml::load_from_str(yaml).unwrap().into_iter().next().unwrap();
    let value = |key: &str| doc.as_mapping_get(key).unwrap().clone();
    // THEN literal empties, empty branches and NoValue count as possibly empty, references do not
    assert!(!can_be_empty(&value("A")));
    assert!(can_be_empty(&value("B")));
    assert!(can_be_empty(&value("C")));
    assert!(!can_be_empty(&value("D")));
    assert!(can_be_empty(&value("E")));
    // AND a missing, an unread and an empty required variable each fail the check
    const VARS: &[EnvVar] = &[EnvVar::required("A", "a"), EnvVar::optional("B", "b", "")];
    let pairs = |names: &[&str]| -> Vec<(String, Yaml<'static>)> {
        names.iter().map(|n| ((*n).to_owned(), value(if *n == "RUST_LOG" { "D" } else { n }).clone())).collect()
    };
    let run = |names: &[&str]| {
        let owned = pairs(names);
        let set: Vec<(String, &Yaml<'_>)> = owned.iter().map(|(n, v)| (n.clone(), v)).collect();
        std::panic::catch_unwind(|| check("example", &set, VARS)).is_ok()
    };
    assert!(run(&["A", "B", "RUST_LOG"]));
    assert!(!run(&["A", "RUST_LOG"]), "B is read but not set");
    assert!(!run(&["A", "B", "C", "RUST_LOG"]), "C is set but not read");
    const EMPTY_REQUIRED: &[EnvVar] = &[EnvVar::required("B", "b")];
    let owned = pairs(&["B", "RUST_LOG"]);
    let set: Vec<(String, &Yaml<'_>)> = owned.iter().map(|(n, v)| (n.clone(), v)).collect();
    assert!(std::panic::catch_unwind(|| check("example", &set, EMPTY_REQUIRED)).is_err(), "B is required but empty");
}
